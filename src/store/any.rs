//! [`AnyStore`]: the store a build reads, chosen at run time.
//!
//! A build reads either the local store or a binary cache, which the
//! manifest decides; the layer writers are generic over [`Store`], so an
//! enum that forwards each call keeps one build path for both instead of a
//! generic parameter threaded through every setting.

use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::Arc;

use super::binary_cache::{CacheError, NarFile};
use super::{BinaryCache, Entry, Error, LocalEntries, LocalFile, Store, StoreLocation};
use crate::nix::{StoreDir, StorePath};

/// The local store or a binary cache.
#[derive(Clone, Debug)]
pub enum AnyStore {
    /// The store on this machine's disk.
    Local(StoreLocation),
    /// A binary cache; NARs are fetched and verified on first use.
    BinaryCache(Arc<BinaryCache>),
    /// A binary cache seen through [`BinaryCache::listed`]: entries from
    /// its `.ls` listings where it has them, to measure layers before
    /// their NARs arrive. Made by [`AnyStore::for_measuring`].
    Listed(Arc<BinaryCache>),
}

impl From<StoreLocation> for AnyStore {
    fn from(location: StoreLocation) -> Self {
        Self::Local(location)
    }
}

impl From<BinaryCache> for AnyStore {
    fn from(cache: BinaryCache) -> Self {
        Self::BinaryCache(Arc::new(cache))
    }
}

impl AnyStore {
    /// The store to measure layers through: a binary cache's `.ls`
    /// listings (nothing downloaded but a small JSON per path, each
    /// checked against its NAR when that arrives), else the store itself.
    #[must_use]
    pub fn for_measuring(&self) -> Self {
        match self {
            Self::BinaryCache(cache) | Self::Listed(cache) => Self::Listed(Arc::clone(cache)),
            Self::Local(_) => self.clone(),
        }
    }

    /// The local store, if this is it (`nix-store` and `store.root` need it).
    #[must_use]
    pub fn local(&self) -> Option<&StoreLocation> {
        match self {
            Self::Local(location) => Some(location),
            Self::BinaryCache(_) | Self::Listed(_) => None,
        }
    }

    /// The binary cache, if this is one.
    #[must_use]
    pub fn binary_cache(&self) -> Option<&BinaryCache> {
        match self {
            Self::BinaryCache(cache) | Self::Listed(cache) => Some(cache),
            Self::Local(_) => None,
        }
    }

    /// Makes every NAR of `paths` local, in parallel, before layers are
    /// written (a binary cache; nothing to do for the local store). A
    /// writer that needs sizes up front and has no listings, or any writer
    /// that wants its downloads concurrent, calls it first.
    ///
    /// # Errors
    /// The first NAR that cannot be fetched or verified.
    pub fn prefetch(&self, paths: &[StorePath]) -> Result<(), CacheError> {
        match self.binary_cache() {
            Some(cache) => cache.fetch_all(paths),
            None => Ok(()),
        }
    }
}

/// [`AnyStore`]'s entries: either store's walk.
pub enum AnyEntries {
    /// The local store's lazy walk (boxed: it holds its stamp's hasher).
    Local(Box<LocalEntries>),
    /// A cached NAR's index (or a listing's).
    Cache(std::vec::IntoIter<Result<Entry, Error>>),
}

impl Iterator for AnyEntries {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Self::Local(entries) => entries.next(),
            Self::Cache(entries) => entries.next(),
        }
    }
}

/// [`AnyStore`]'s file reader.
#[derive(Debug)]
pub enum AnyReader {
    /// A file of the local store.
    Local(LocalFile),
    /// A file inside a verified NAR.
    Cache(NarFile),
}

impl Read for AnyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Local(file) => file.read(buf),
            Self::Cache(file) => file.read(buf),
        }
    }
}

/// Calls `$call` on the store inside `$store`: the local store, the cache,
/// or the cache's listed view.
macro_rules! each {
    ($store:expr, $s:ident => $call:expr) => {
        match $store {
            AnyStore::Local($s) => $call,
            AnyStore::BinaryCache(cache) => {
                let $s = &**cache;
                $call
            }
            AnyStore::Listed(cache) => {
                let $s = cache.listed();
                $call
            }
        }
    };
}

impl Store for AnyStore {
    type Entries<'a> = AnyEntries;
    type Reader<'a> = AnyReader;

    fn dir(&self) -> &StoreDir {
        match self {
            Self::Local(location) => location.dir(),
            Self::BinaryCache(cache) | Self::Listed(cache) => cache.dir(),
        }
    }
    fn identity(&self) -> String {
        each!(self, s => s.identity())
    }
    fn entries(&self, path: &StorePath) -> AnyEntries {
        match self {
            Self::Local(location) => AnyEntries::Local(Box::new(location.entries(path))),
            Self::BinaryCache(cache) => AnyEntries::Cache(cache.entries(path)),
            Self::Listed(cache) => AnyEntries::Cache(cache.listed().entries(path)),
        }
    }
    fn entry(&self, name: &[u8]) -> Result<Option<Entry>, Error> {
        each!(self, s => s.entry(name))
    }
    fn read_dir(&self, name: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        each!(self, s => s.read_dir(name))
    }
    fn open(&self, name: &[u8]) -> Result<AnyReader, Error> {
        match self {
            Self::Local(location) => location.open(name).map(AnyReader::Local),
            Self::BinaryCache(cache) | Self::Listed(cache) => {
                cache.open(name).map(AnyReader::Cache)
            }
        }
    }
    fn location(&self, name: &[u8]) -> PathBuf {
        each!(self, s => s.location(name))
    }
    fn entries_to_read(&self, path: &StorePath, stamp: bool) -> AnyEntries {
        match self {
            Self::Local(location) => {
                AnyEntries::Local(Box::new(location.entries_to_read(path, stamp)))
            }
            Self::BinaryCache(_) | Self::Listed(_) => self.entries(path),
        }
    }
    fn open_entry(&self, entries: &mut AnyEntries, name: &[u8]) -> Result<AnyReader, Error> {
        match (self, entries) {
            (Self::Local(location), AnyEntries::Local(entries)) => {
                location.open_entry(entries, name).map(AnyReader::Local)
            }
            _ => self.open(name),
        }
    }
    fn walked_stamp(&self, entries: &AnyEntries) -> Option<Vec<u8>> {
        match (self, entries) {
            (Self::Local(location), AnyEntries::Local(entries)) => location.walked_stamp(entries),
            _ => None,
        }
    }
    fn stamp(&self, path: &StorePath) -> Result<Vec<u8>, Error> {
        each!(self, s => s.stamp(path))
    }
    fn content_stamp(&self, path: &StorePath) -> Result<Vec<u8>, Error> {
        each!(self, s => s.content_stamp(path))
    }
    fn nar_size(&self, path: &StorePath) -> Result<u64, Error> {
        each!(self, s => s.nar_size(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The enum gives what the local store gives, entry for entry and byte
    /// for byte, with the same identity (so layer-cache keys do not move).
    #[test]
    fn local_variant_forwards() {
        let root = tempfile::tempdir().unwrap();
        let location = StoreLocation {
            dir: StoreDir::default(),
            root: root.path().to_owned(),
        };
        let app = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-app";
        std::fs::create_dir_all(location.disk_path(app).join("bin")).unwrap();
        std::fs::write(location.disk_path(app).join("bin/x"), b"hello").unwrap();
        let path = StorePath::parse(&StoreDir::default(), app).unwrap();
        let any = AnyStore::from(location.clone());
        let local: Vec<Entry> = location.entries(&path).map(Result::unwrap).collect();
        let forwarded: Vec<Entry> = any.entries(&path).map(Result::unwrap).collect();
        assert_eq!(local, forwarded);
        assert_eq!(any.identity(), location.identity());
        assert_eq!(any.for_measuring().identity(), location.identity());
        assert_eq!(any.stamp(&path).unwrap(), location.stamp(&path).unwrap());
        let mut bytes = Vec::new();
        any.open(format!("{app}/bin/x").as_bytes())
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes, b"hello");
        assert!(any.binary_cache().is_none());
        assert!(any.prefetch(std::slice::from_ref(&path)).is_ok());
    }
}
