//! Where the bytes of store paths come from.
//!
//! Everything that reads store *content* (the store layers, the
//! customisation layer's `contents` merge, the NAR size of a DOT closure)
//! asks a [`Store`] instead of the filesystem. The store on this machine's
//! disk ([`StoreLocation`], `store.dir` under `store.root`) is the first
//! implementation; a binary cache serving NARs can be another without any
//! layer writer changing.
//!
//! A store answers two questions:
//!
//! - *what are the entries of this store path*: [`Store::entries`] yields
//!   them lazily in the order layers need them, a depth-first pre-order with
//!   siblings in [`python_order`] (the order of nixpkgs' streamer), each with
//!   its kind, executable bit, size and symlink target ([`Entry`]);
//! - *give me this file's bytes*: [`Store::open`] returns a reader for a
//!   regular file the walk yielded.
//!
//! The customisation merge follows symlinks from one store path into
//! another, so a store also looks entries up by name ([`Store::entry`],
//! [`Store::read_dir`]). For caches of what was made from a store path,
//! [`Store::identity`] names where the content comes from and
//! [`Store::stamp`] changes whenever a store path's content may have
//! changed; [`Store::location`] says where an entry is, for messages.
//!
//! Names are bytes: the absolute logical path (`/nix/store/<hash>-<name>/bin/x`),
//! a directory's with a `/` at the end, exactly as in a layer's tar.
//!
//! # Example: a store in memory
//!
//! A store need not be a directory on disk. Here one lives in a map, and the
//! layer built from it is the layer built from the same tree on disk.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::io::ErrorKind;
//! use std::path::PathBuf;
//! use nixlayer::layer::{self, LayerOptions, Owner, Permissions};
//! use nixlayer::nix::{StoreDir, StorePath};
//! use nixlayer::store::{self, Entry, Store, StoreLocation};
//!
//! struct MemoryStore {
//!     dir: StoreDir,
//!     /// Each store path's entries, in layer order.
//!     paths: BTreeMap<String, Vec<Entry>>,
//!     /// The bytes of each regular file, by name.
//!     files: BTreeMap<Vec<u8>, Vec<u8>>,
//! }
//!
//! impl MemoryStore {
//!     /// Adds the directory `path` holding `files` (name, bytes, executable).
//!     fn add(&mut self, path: &str, files: &[(&str, &[u8], bool)]) {
//!         let mut entries = vec![Entry::directory(format!("{path}/").into_bytes())];
//!         for (name, bytes, executable) in files {
//!             let name = format!("{path}/{name}").into_bytes();
//!             self.files.insert(name.clone(), bytes.to_vec());
//!             entries.push(Entry::regular(name, bytes.len() as u64, *executable));
//!         }
//!         // Siblings in Python's order (one level here, so a plain sort).
//!         entries.sort_by(|a, b| store::python_order(&a.name, &b.name));
//!         self.paths.insert(path.to_owned(), entries);
//!     }
//!
//!     fn all(&self) -> impl Iterator<Item = &Entry> {
//!         self.paths.values().flatten()
//!     }
//!
//!     fn not_found(&self, name: &[u8]) -> store::Error {
//!         store::Error::Io { path: self.location(name), source: ErrorKind::NotFound.into() }
//!     }
//! }
//!
//! fn without_slash(name: &[u8]) -> &[u8] {
//!     name.strip_suffix(b"/").unwrap_or(name)
//! }
//!
//! impl Store for MemoryStore {
//!     type Entries<'a> = std::vec::IntoIter<Result<Entry, store::Error>>;
//!     type Reader<'a> = &'a [u8];
//!
//!     fn dir(&self) -> &StoreDir {
//!         &self.dir
//!     }
//!     fn identity(&self) -> String {
//!         "memory".to_owned()
//!     }
//!     fn entries(&self, path: &StorePath) -> Self::Entries<'_> {
//!         match self.paths.get(path.as_str()) {
//!             Some(entries) => entries.iter().cloned().map(Ok).collect::<Vec<_>>().into_iter(),
//!             None => vec![Err(self.not_found(path.as_str().as_bytes()))].into_iter(),
//!         }
//!     }
//!     fn entry(&self, name: &[u8]) -> Result<Option<Entry>, store::Error> {
//!         Ok(self.all().find(|e| without_slash(&e.name) == name).cloned())
//!     }
//!     fn read_dir(&self, name: &[u8]) -> Result<Vec<Vec<u8>>, store::Error> {
//!         let dir = [name, b"/"].concat();
//!         let children = self.all().filter_map(|e| {
//!             let rest = without_slash(e.name.strip_prefix(dir.as_slice())?);
//!             (!rest.is_empty() && !rest.contains(&b'/')).then(|| rest.to_vec())
//!         });
//!         Ok(children.collect())
//!     }
//!     fn open(&self, name: &[u8]) -> Result<&[u8], store::Error> {
//!         self.files.get(name).map(Vec::as_slice).ok_or_else(|| self.not_found(name))
//!     }
//!     fn location(&self, name: &[u8]) -> PathBuf {
//!         PathBuf::from(format!("memory:{}", String::from_utf8_lossy(name)))
//!     }
//!     fn stamp(&self, path: &StorePath) -> Result<Vec<u8>, store::Error> {
//!         // Nothing changes this map once it is built: the name will do.
//!         Ok(path.as_str().as_bytes().to_vec())
//!     }
//! }
//!
//! let app = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-app";
//! let files: &[(&str, &[u8], bool)] =
//!     &[("run", b"#!/bin/sh\necho hi\n", true), ("README", b"hi\n", false)];
//! let mut memory = MemoryStore {
//!     dir: StoreDir::default(),
//!     paths: BTreeMap::new(),
//!     files: BTreeMap::new(),
//! };
//! memory.add(app, files);
//! let paths = [StorePath::parse(&StoreDir::default(), app)?];
//!
//! // A layer written through the library from any store: measured, then written.
//! fn layer<S: Store>(store: S, paths: &[StorePath]) -> Result<nixlayer::oci::LayerDigest, layer::Error> {
//!     let opts = LayerOptions {
//!         store,
//!         owner: Owner::default(),
//!         mtime: 1,
//!         permissions: Permissions::default(),
//!     };
//!     let size = layer::measure_store_layer(&opts, paths)?;
//!     layer::write_store_layer(&opts, paths, size, std::io::sink())
//! }
//! let from_memory = layer(&memory, &paths)?;
//! assert_eq!(from_memory, layer(&memory, &paths)?, "the same bytes every time");
//!
//! // The same tree on disk, modes as a umask leaves them, gives the same layer.
//! let root = tempfile::tempdir()?;
//! let disk = StoreLocation { dir: StoreDir::default(), root: root.path().to_owned() };
//! std::fs::create_dir_all(disk.disk_path(app))?;
//! for (name, bytes, executable) in files {
//!     use std::os::unix::fs::PermissionsExt;
//!     let file = disk.disk_path(app).join(name);
//!     std::fs::write(&file, bytes)?;
//!     let mode = if *executable { 0o750 } else { 0o640 };
//!     std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))?;
//! }
//! assert_eq!(from_memory, layer(disk, &paths)?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::cmp::Ordering;
use std::io::Read;
use std::path::PathBuf;
use std::str;

use crate::nix::{StoreDir, StorePath};

mod any;
pub mod binary_cache;
mod local;
mod nar;
mod registered;

pub use any::{AnyEntries, AnyReader, AnyStore};
pub use binary_cache::{BinaryCache, CacheOptions};
pub use local::{LocalEntries, LocalFile, StoreLocation};

#[cfg(test)]
pub(crate) use local::fixture;

/// A source of store path content: the local store, a binary cache, a
/// store in memory.
///
/// The layer writers call [`Store::entries`] and [`Store::open`] on the
/// thread that produces a layer's bytes, once per entry: implementations
/// should do no work per entry beyond what the entry needs.
pub trait Store {
    /// The entries of one store path, in layer order (see [`Store::entries`]).
    type Entries<'a>: Iterator<Item = Result<Entry, Error>>
    where
        Self: 'a;

    /// The bytes of one regular file.
    type Reader<'a>: Read
    where
        Self: 'a;

    /// The logical store directory, e.g. `/nix/store`.
    fn dir(&self) -> &StoreDir;

    /// Where the content comes from, as text for cache keys: two stores with
    /// one identity give the same entries and bytes for a store path.
    fn identity(&self) -> String;

    /// The store path and everything under it, read lazily: a depth-first
    /// pre-order, siblings in [`python_order`]. A store path that is a
    /// file or a symlink is one entry. Hard links are regular files (NARs
    /// have no links). Callers stop at the first error.
    fn entries<'a>(&'a self, path: &StorePath) -> Self::Entries<'a>;

    /// The entry at `name` (an absolute logical path inside the store, no
    /// `/` at the end) without following a symlink there; `None` when
    /// nothing is there.
    ///
    /// # Errors
    /// When the store cannot be read there, or holds something no store
    /// can hold ([`Error::Unsupported`]).
    fn entry(&self, name: &[u8]) -> Result<Option<Entry>, Error>;

    /// The names (one component each) in directory `name`, in [`python_order`].
    ///
    /// # Errors
    /// When the directory cannot be listed.
    fn read_dir(&self, name: &[u8]) -> Result<Vec<Vec<u8>>, Error>;

    /// The bytes of the regular file `name`, as [`Store::entries`] named it.
    /// The reader gives exactly the entry's size unless the store changed.
    ///
    /// # Errors
    /// When the file cannot be opened.
    fn open(&self, name: &[u8]) -> Result<Self::Reader<'_>, Error>;

    /// Where `name` is, to name it in messages (on disk: its file).
    fn location(&self, name: &[u8]) -> PathBuf;

    /// [`Store::entries`] for a caller that reads each regular file the
    /// walk yields (through [`Store::open_entry`], before asking for the
    /// next entry): the local store opens each file as it yields it, and
    /// with `stamp` takes its metadata once it has been read, for
    /// [`Store::walked_stamp`]. By default the entries.
    fn entries_to_read<'a>(&'a self, path: &StorePath, stamp: bool) -> Self::Entries<'a> {
        let _ = stamp;
        self.entries(path)
    }

    /// The bytes of the regular file `name` that `entries` yielded last:
    /// the file that walk opened, if it did, else [`Store::open`].
    ///
    /// # Errors
    /// When the file cannot be opened.
    fn open_entry<'a>(
        &'a self,
        entries: &mut Self::Entries<'a>,
        name: &[u8],
    ) -> Result<Self::Reader<'a>, Error> {
        let _ = entries;
        self.open(name)
    }

    /// Once `entries` (of one store path) has ended without an error, the
    /// [`Store::content_stamp`] of that path as the walk saw it: equal to
    /// one taken before, it says that nothing the walk listed, and no file
    /// read through [`Store::open_entry`], changed since (a file's metadata
    /// is taken after it was read). `None` when the store's walks do not
    /// stamp (the default): take [`Store::content_stamp`] afresh instead.
    fn walked_stamp<'a>(&'a self, entries: &Self::Entries<'a>) -> Option<Vec<u8>> {
        let _ = entries;
        None
    }

    /// Opaque bytes that change whenever the content of `path` may have
    /// changed: with equal [`Store::identity`] and equal stamps, a store
    /// path has the same entries and bytes, so what was made from it (a
    /// layer's digests) can be reused without reading it. The local store
    /// hashes the file-system metadata of every entry (for the machine's
    /// own Nix store, the path's registration in its database); a binary
    /// cache can give the path's `NarHash`.
    ///
    /// # Errors
    /// When the store path cannot be described; then nothing about its
    /// content may be assumed.
    fn stamp(&self, path: &StorePath) -> Result<Vec<u8>, Error>;

    /// Like [`Store::stamp`], but covering every entry of `path` even where
    /// the store's word for it would do (the local store's registration
    /// stamp covers only the path's top entry): for a caller about to read
    /// the path's bytes anyway, who must notice an edit anywhere inside it
    /// (a diff_id not hashed from the bytes streamed). By default the stamp.
    ///
    /// # Errors
    /// As [`Store::stamp`].
    fn content_stamp(&self, path: &StorePath) -> Result<Vec<u8>, Error> {
        self.stamp(path)
    }

    /// The size of the NAR serialisation of `path` (Nix's `narSize`). By
    /// default computed from [`Store::entries`]; a binary cache knows it
    /// from its `.narinfo`.
    ///
    /// # Errors
    /// As [`Store::entries`].
    fn nar_size(&self, path: &StorePath) -> Result<u64, Error> {
        nar::size(self.entries(path))
    }
}

impl<S: Store + ?Sized> Store for &S {
    type Entries<'a>
        = S::Entries<'a>
    where
        Self: 'a;
    type Reader<'a>
        = S::Reader<'a>
    where
        Self: 'a;

    fn dir(&self) -> &StoreDir {
        (**self).dir()
    }
    fn identity(&self) -> String {
        (**self).identity()
    }
    fn entries<'a>(&'a self, path: &StorePath) -> Self::Entries<'a> {
        (**self).entries(path)
    }
    fn entry(&self, name: &[u8]) -> Result<Option<Entry>, Error> {
        (**self).entry(name)
    }
    fn read_dir(&self, name: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        (**self).read_dir(name)
    }
    fn open(&self, name: &[u8]) -> Result<Self::Reader<'_>, Error> {
        (**self).open(name)
    }
    fn location(&self, name: &[u8]) -> PathBuf {
        (**self).location(name)
    }
    fn entries_to_read<'a>(&'a self, path: &StorePath, stamp: bool) -> Self::Entries<'a> {
        (**self).entries_to_read(path, stamp)
    }
    fn open_entry<'a>(
        &'a self,
        entries: &mut Self::Entries<'a>,
        name: &[u8],
    ) -> Result<Self::Reader<'a>, Error> {
        (**self).open_entry(entries, name)
    }
    fn walked_stamp<'a>(&'a self, entries: &Self::Entries<'a>) -> Option<Vec<u8>> {
        (**self).walked_stamp(entries)
    }
    fn stamp(&self, path: &StorePath) -> Result<Vec<u8>, Error> {
        (**self).stamp(path)
    }
    fn content_stamp(&self, path: &StorePath) -> Result<Vec<u8>, Error> {
        (**self).content_stamp(path)
    }
    fn nar_size(&self, path: &StorePath) -> Result<u64, Error> {
        (**self).nar_size(path)
    }
}

/// One entry of a store path.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// The absolute logical path, with a `/` after a directory.
    pub name: Vec<u8>,
    /// What it is.
    pub kind: EntryKind,
}

/// What an entry is: the three things a NAR (hence a store) can hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory; its entries follow it.
    Directory,
    /// A regular file.
    Regular {
        /// Its length in bytes.
        size: u64,
        /// Whether the owner may execute it (the only mode bit a NAR keeps).
        executable: bool,
    },
    /// A symlink, never followed.
    Symlink {
        /// Its target, raw.
        target: Vec<u8>,
    },
}

impl Entry {
    /// A directory entry; `name` ends in `/`.
    #[must_use]
    pub fn directory(name: Vec<u8>) -> Self {
        Self {
            name,
            kind: EntryKind::Directory,
        }
    }

    /// A regular file of `size` bytes.
    #[must_use]
    pub fn regular(name: Vec<u8>, size: u64, executable: bool) -> Self {
        Self {
            name,
            kind: EntryKind::Regular { size, executable },
        }
    }

    /// A symlink to `target`.
    #[must_use]
    pub fn symlink(name: Vec<u8>, target: Vec<u8>) -> Self {
        Self {
            name,
            kind: EntryKind::Symlink { target },
        }
    }

    /// Bytes of a regular file, 0 otherwise.
    #[must_use]
    pub fn size(&self) -> u64 {
        match self.kind {
            EntryKind::Regular { size, .. } => size,
            EntryKind::Directory | EntryKind::Symlink { .. } => 0,
        }
    }

    /// The mode Nix gives every store object (`canonicalisePathMetaData`):
    /// files 0444, or 0555 when executable; directories 0555; symlinks
    /// 0777. For a real store this equals nixpkgs' `st_mode & 0o7777`; for
    /// a store tree read through `store.root` (say a git checkout under
    /// another umask) it keeps the layer identical to the one the real
    /// store would give.
    #[must_use]
    pub fn mode(&self) -> u32 {
        match self.kind {
            EntryKind::Directory => 0o555,
            EntryKind::Symlink { .. } => 0o777,
            EntryKind::Regular {
                executable: true, ..
            } => 0o555,
            EntryKind::Regular {
                executable: false, ..
            } => 0o444,
        }
    }
}

/// Why a store could not answer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading an entry failed.
    #[error("failed to read `{}`", path.display())]
    Io {
        /// Where the entry is ([`Store::location`]).
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The store holds something other than a directory, regular file or
    /// symlink, which no NAR, hence no store, can hold.
    #[error("`{}` is not a directory, regular file or symlink", path.display())]
    Unsupported {
        /// Where it is.
        path: PathBuf,
    },
}

/// Python's order of two names: by code point, where the names were read
/// with `surrogateescape` (each byte of an invalid UTF-8 sequence becomes
/// U+DC80..U+DCFF), as nixpkgs' streamer reads them through the filesystem
/// encoding (UTF-8 wherever it runs). For valid UTF-8 that is byte order;
/// otherwise compare the decoded code points, since e.g. the lone byte
/// `\x80` (U+DC80) sorts after `é` (U+00E9) although its byte is smaller.
///
/// Sorting each directory's names by it gives, walked depth first, the
/// order of pathlib paths sorted by their components.
#[must_use]
pub fn python_order(a: &[u8], b: &[u8]) -> Ordering {
    if str::from_utf8(a).is_ok() && str::from_utf8(b).is_ok() {
        return a.cmp(b);
    }
    fn code_points(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
        bytes.utf8_chunks().flat_map(|chunk| {
            let valid = chunk.valid().chars().map(u32::from);
            let invalid = chunk.invalid().iter().map(|&b| 0xDC00 | u32::from(b));
            valid.chain(invalid)
        })
    }
    code_points(a).cmp(code_points(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_order_uses_surrogate_code_points() {
        use std::cmp::Ordering::Less;
        assert_eq!(python_order(b"b", b"b-c"), Less);
        assert_eq!(python_order("é".as_bytes(), b"\x80"), Less);
        assert_eq!(python_order(b"\xff", "\u{e000}".as_bytes()), Less);
        assert_eq!(python_order(b"a\xff", b"a\xff\x00"), Less);
    }

    #[test]
    fn canonical_modes() {
        let file = |executable| Entry::regular(Vec::new(), 0, executable);
        assert_eq!(file(false).mode(), 0o444);
        assert_eq!(file(true).mode(), 0o555);
        assert_eq!(Entry::directory(b"/".to_vec()).mode(), 0o555);
        assert_eq!(Entry::symlink(Vec::new(), Vec::new()).mode(), 0o777);
    }
}
