//! A cache of what writing a layer produced, keyed by the layer's content
//! key (see `build`): store paths are immutable, so a layer with the same
//! paths, owner, mtime and format has the same bytes, and its diff_id and
//! compressed blob digests can be reused without reading the store again.
//!
//! The content key names store paths, not where they were read from, and a
//! store under `store.root` (a fixture, a CI cache) is only as immutable as
//! its owner keeps it. So an entry is filed under the content key, the
//! store's [`Store::identity`] and the [`Store::stamp`] of each of the
//! layer's store paths (for the local store, the file-system metadata of
//! every entry, or for the machine's own Nix store the path's registration
//! in the Nix database): an edited or moved store is a miss. The cache asks the
//! store, never the disk, so it serves any store the layers are read from.
//!
//! Stamps are taken once per build, before a layer's bytes are read, and
//! an entry is filed under those ([`LayerCache::put_stamped`]): a store
//! path edited while it was read has other stamps by the next lookup. A
//! docker-archive build streams a layer whose diff_id it found here
//! without hashing it, and checks afterwards that the stamps are still
//! the ones it looked the entry up with (see [`Stamps`] for what a stamp
//! does and does not see); the cache directory itself is trusted like the
//! store.
//!
//! One small JSON file per layer under the cache directory (by default
//! `$XDG_CACHE_HOME/nixlayer/layers`), written to a temporary file and
//! renamed, so concurrent builds never see half an entry. A missing or
//! unreadable entry is a cache miss, never an error: the cache only saves work.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::cleanup::Pending;
use crate::nix::StorePath;
use crate::oci::Digest;
use crate::store::{Store, StoreLocation};

/// What one stored form of a layer (uncompressed, or compressed one way) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// sha256 of the stored bytes, `sha256:<hex>`.
    #[serde(with = "digest_text")]
    pub digest: Digest,
    /// Their size.
    pub size: u64,
}

/// Everything known about one layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The uncompressed tar (its digest is the diff_id).
    pub tar: Option<BlobRecord>,
    /// Compressed forms, by compression name and level (e.g. `gzip-6`).
    pub blobs: BTreeMap<String, BlobRecord>,
}

/// The cache directory, for layers read from one store.
#[derive(Clone, Debug)]
pub struct LayerCache<S = StoreLocation> {
    dir: PathBuf,
    /// Where the layers' store paths are read from: it names itself and
    /// stamps their content for every entry's name.
    store: S,
    /// `store.identity()`, asked once.
    identity: String,
}

impl<S: Store> LayerCache<S> {
    /// A cache in `dir` (created on first write) for layers whose store
    /// paths are read from `store`.
    #[must_use]
    pub fn new(dir: PathBuf, store: S) -> Self {
        let identity = store.identity();
        Self {
            dir,
            store,
            identity,
        }
    }

    /// Where the cache lives.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stamps of `paths` in this cache's store (see [`Stamps`]).
    #[must_use]
    pub fn stamps(&self, paths: &[StorePath]) -> Option<Stamps> {
        Stamps::of(&self.store, paths)
    }

    /// The entry of the layer with content key `key` holding `paths`;
    /// `None` when the store cannot stamp one of them (then nothing is
    /// cached).
    fn entry(&self, key: &Digest, paths: &[StorePath]) -> Option<PathBuf> {
        Some(self.entry_stamped(key, &self.stamps(paths)?))
    }

    fn entry_stamped(&self, key: &Digest, stamps: &Stamps) -> PathBuf {
        let mut hash = Sha256::new();
        hash.update(b"nixlayer layer cache v3\0");
        hash.update(self.identity.as_bytes());
        hash.update(b"\0");
        hash.update(key.hex().as_bytes());
        hash.update(b"\0");
        for stamp in &stamps.stamps {
            // Length first: stamps are opaque bytes, any of them may occur.
            hash.update((stamp.len() as u64).to_le_bytes());
            hash.update(stamp);
        }
        let name = Digest(hash.finalize().into());
        self.dir.join(format!("{}.json", name.hex()))
    }

    /// The record for the layer with content key `key` holding `paths`, if
    /// one was stored for this store and these stamps, and is readable.
    #[must_use]
    pub fn get(&self, key: &Digest, paths: &[StorePath]) -> Option<LayerRecord> {
        self.read(&self.entry(key, paths)?)
    }

    /// [`LayerCache::get`] with the layer's stamps taken already (by
    /// [`LayerCache::stamps`], before any of its bytes were read).
    #[must_use]
    pub fn get_stamped(&self, key: &Digest, stamps: &Stamps) -> Option<LayerRecord> {
        self.read(&self.entry_stamped(key, stamps))
    }

    fn read(&self, entry: &Path) -> Option<LayerRecord> {
        let bytes = std::fs::read(entry).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Merges `record` into the entry for `key` and `paths`.
    ///
    /// # Errors
    /// When the directory or the entry cannot be written; callers may ignore
    /// it, as a failed write only costs a later rebuild.
    pub fn put(
        &self,
        key: &Digest,
        paths: &[StorePath],
        record: &LayerRecord,
    ) -> std::io::Result<()> {
        match self.stamps(paths) {
            Some(stamps) => self.put_stamped(key, &stamps, record),
            // The store cannot be described: do not file what cannot be found.
            None => Ok(()),
        }
    }

    /// [`LayerCache::put`] under stamps taken *before* the bytes the record
    /// describes were read: a store path edited while it was read then has
    /// other stamps by the next lookup, which misses, instead of a digest
    /// of mixed content being filed under the new stamps.
    ///
    /// # Errors
    /// As [`LayerCache::put`].
    pub fn put_stamped(
        &self,
        key: &Digest,
        stamps: &Stamps,
        record: &LayerRecord,
    ) -> std::io::Result<()> {
        let entry = self.entry_stamped(key, stamps);
        let mut merged = self.read(&entry).unwrap_or_default();
        if record.tar.is_some() {
            merged.tar = record.tar;
        }
        merged
            .blobs
            .extend(record.blobs.iter().map(|(k, v)| (k.clone(), *v)));
        std::fs::create_dir_all(&self.dir)?;
        // Removed by a signal too; unregistered once renamed into place.
        let (mut temp, pending) =
            Pending::create(|| tempfile::NamedTempFile::new_in(&self.dir), |t| t.path())?;
        let value = serde_json::to_value(&merged).map_err(std::io::Error::other)?;
        temp.write_all(&crate::oci::canonical_json(&value))?;
        pending.publish(|| temp.persist(entry).map_err(|e| e.error))?;
        Ok(())
    }
}

/// The [`Store::stamp`] of each store path of a layer, in layer order: the
/// store's word that their content has not changed while the stamps stay
/// equal. For the local store a stamp covers the resolved store root and,
/// for every entry under the path, its mode, size, inode, device,
/// modification time and change time (nanoseconds); see
/// `StoreLocation::stamp`. The change time is the part an edit cannot keep
/// without root (setting the clock, or writing the disk under the file
/// system): any `write`, `truncate`, `chmod`, `rename` or `touch` moves it,
/// and a replaced file has another inode. What it cannot see: an edit within
/// the same tick of the file system's timestamp clock as the change before
/// the stamp was taken, on a kernel without fine-grained timestamps, and
/// bytes changed under the file system (a raw block device, a corrupt
/// disk). A layer's diff_id taken from the cache (or hashed ahead by another
/// thread) is used only while the stamps before its hash and after its
/// bytes were written are equal.
///
/// Two kinds: [`Stamps::of`] takes the store's word where it has one (the
/// live Nix store's registration, without a walk), enough to reuse a blob
/// no byte of which is read; [`Stamps::of_content`] covers every entry,
/// for a diff_id that will stand for bytes read from the store but not
/// hashed ([`Store::content_stamp`]). Where the two kinds differ (the live
/// store) so do their bytes, so an entry filed under one is not found under
/// the other; elsewhere they are the same stamps and share entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stamps {
    stamps: Vec<Vec<u8>>,
    content: bool,
}

impl Stamps {
    /// The stamps of `paths` in `store`; `None` when one cannot be taken
    /// (then nothing may be assumed about their content).
    #[must_use]
    pub fn of<S: Store>(store: &S, paths: &[StorePath]) -> Option<Self> {
        Self::take(store, paths, false)
    }

    /// The content stamps of `paths` in `store` (every entry's metadata).
    #[must_use]
    pub fn of_content<S: Store>(store: &S, paths: &[StorePath]) -> Option<Self> {
        Self::take(store, paths, true)
    }

    /// Content stamps the walks that measured a layer's paths took
    /// ([`Store::walked_stamp`]), in layer order; `None` unless every path
    /// has one.
    pub(crate) fn from_walks(walked: &[Option<Vec<u8>>]) -> Option<Self> {
        walked
            .iter()
            .cloned()
            .collect::<Option<Vec<_>>>()
            .map(|stamps| Self {
                stamps,
                content: true,
            })
    }

    fn take<S: Store>(store: &S, paths: &[StorePath], content: bool) -> Option<Self> {
        paths
            .iter()
            .map(|path| Self::stamp(store, path, content).ok())
            .collect::<Option<Vec<_>>>()
            .map(|stamps| Self { stamps, content })
    }

    fn stamp<S: Store>(
        store: &S,
        path: &StorePath,
        content: bool,
    ) -> Result<Vec<u8>, crate::store::Error> {
        if content {
            store.content_stamp(path)
        } else {
            store.stamp(path)
        }
    }

    /// Whether the store's stamps of `paths` (the paths these stamps were
    /// taken of, in order) are still these.
    ///
    /// # Errors
    /// The first path whose stamp differs or cannot be taken now (`None`
    /// when the stamps were taken of other paths, which no caller does).
    pub fn check<'p, S: Store>(
        &self,
        store: &S,
        paths: &'p [StorePath],
    ) -> Result<(), Option<&'p StorePath>> {
        if paths.len() != self.stamps.len() {
            return Err(paths.first());
        }
        match paths.iter().zip(&self.stamps).find(|(path, before)| {
            Self::stamp(store, path, self.content).ok().as_ref() != Some(*before)
        }) {
            Some((path, _)) => Err(Some(path)),
            None => Ok(()),
        }
    }
}

impl Stamps {
    /// [`Stamps::check`] against the stamps walks that read the layer took
    /// ([`Store::walked_stamp`], each file's metadata taken after it was
    /// read), in layer order: no second walk. A path without one, or any
    /// path when these are not content stamps, is stamped afresh.
    ///
    /// # Errors
    /// As [`Stamps::check`].
    pub(crate) fn check_walked<'p, S: Store>(
        &self,
        store: &S,
        paths: &'p [StorePath],
        walked: &[Option<Vec<u8>>],
    ) -> Result<(), Option<&'p StorePath>> {
        if paths.len() != self.stamps.len() || walked.len() != paths.len() {
            return Err(paths.first());
        }
        for ((path, before), seen) in paths.iter().zip(&self.stamps).zip(walked) {
            let now = match seen {
                Some(seen) if self.content => Some(seen.clone()),
                _ => Self::stamp(store, path, self.content).ok(),
            };
            if now.as_ref() != Some(before) {
                return Err(Some(path));
            }
        }
        Ok(())
    }
}

mod digest_text {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use crate::oci::Digest;

    pub(super) fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.prefixed())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(d)?;
        Digest::parse(&text).ok_or_else(|| D::Error::custom("not a sha256 digest"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixture::local;

    /// The live store (`store.root = "/"`); these tests stamp no path of it.
    fn live() -> StoreLocation {
        local(Path::new("/"))
    }

    fn record(tar: Option<BlobRecord>, blobs: &[(&str, BlobRecord)]) -> LayerRecord {
        LayerRecord {
            tar,
            blobs: blobs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        }
    }

    #[test]
    fn stores_merges_and_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(dir.path().join("layers"), live());
        let key = Digest::of(b"key");
        assert_eq!(cache.get(&key, &[]), None);
        let tar = BlobRecord {
            digest: Digest::of(b"tar"),
            size: 10240,
        };
        cache.put(&key, &[], &record(Some(tar), &[])).unwrap();
        let gz = BlobRecord {
            digest: Digest::of(b"gz"),
            size: 99,
        };
        cache
            .put(&key, &[], &record(None, &[("gzip-6", gz)]))
            .unwrap();
        let got = cache.get(&key, &[]).unwrap();
        assert_eq!(got.tar, Some(tar));
        assert_eq!(got.blobs["gzip-6"], gz);
        // A damaged entry is a miss, not an error.
        let entry = cache.entry(&key, &[]).unwrap();
        std::fs::write(&entry, b"{").unwrap();
        assert_eq!(cache.get(&key, &[]), None);
    }

    /// A digest of the right byte length made of multi-byte characters used
    /// to panic on slicing; any damaged entry is a miss.
    #[test]
    fn corrupt_entries_are_misses_not_panics() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(dir.path().to_path_buf(), live());
        let key = Digest::of(b"key");
        let entry = cache.entry(&key, &[]).unwrap();
        let good = "0".repeat(64);
        for digest in [
            "é".repeat(32),
            format!("{}é", "0".repeat(62)),
            format!("0{}", "é".repeat(31)) + "0",
            "g".repeat(64),
            "0".repeat(63),
            "+0".repeat(32),
        ] {
            let text =
                format!("{{\"blobs\":{{}},\"tar\":{{\"digest\":\"sha256:{digest}\",\"size\":1}}}}");
            std::fs::write(&entry, text).unwrap();
            assert_eq!(cache.get(&key, &[]), None, "{digest}");
        }
        let text =
            format!("{{\"blobs\":{{}},\"tar\":{{\"digest\":\"sha256:{good}\",\"size\":1}}}}");
        std::fs::write(&entry, text).unwrap();
        assert_eq!(
            cache.get(&key, &[]).unwrap().tar.unwrap().digest,
            Digest([0; 32])
        );
    }

    proptest::proptest! {
        #[test]
        fn any_entry_bytes_are_a_record_or_a_miss(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let dir = tempfile::tempdir().unwrap();
            let cache = LayerCache::new(dir.path().to_path_buf(), live());
            let key = Digest::of(b"key");
            std::fs::write(cache.entry(&key, &[]).unwrap(), &bytes).unwrap();
            let _ = cache.get(&key, &[]);
        }
    }

    /// The same content key under another store root, or after a file of
    /// the store changed, is another entry.
    #[test]
    fn entries_depend_on_the_store_root_and_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let make_store = |name: &str| {
            let root = dir.path().join(name);
            let out = root.join("nix/store/00000000000000000000000000000000-a");
            std::fs::create_dir_all(out.join("bin")).unwrap();
            std::fs::write(out.join("bin/a"), b"one").unwrap();
            root
        };
        let (root_a, root_b) = (make_store("a"), make_store("b"));
        let path = StorePath::parse(
            &crate::nix::StoreDir::default(),
            "/nix/store/00000000000000000000000000000000-a",
        )
        .unwrap();
        let paths = [path];
        let cache_dir = dir.path().join("cache");
        let in_a = LayerCache::new(cache_dir.clone(), local(&root_a));
        let in_b = LayerCache::new(cache_dir.clone(), local(&root_b));
        let key = Digest::of(b"layer");
        let tar = BlobRecord {
            digest: Digest::of(b"tar"),
            size: 2048,
        };
        in_a.put(&key, &paths, &record(Some(tar), &[])).unwrap();
        assert_eq!(in_a.get(&key, &paths).unwrap().tar, Some(tar));
        // Another root: a miss, though the store paths are named the same.
        assert_eq!(in_b.get(&key, &paths), None);
        // The same root spelt differently: a hit.
        let spelt = LayerCache::new(cache_dir, local(&root_a.join("nix/..")));
        assert_eq!(spelt.get(&key, &paths).unwrap().tar, Some(tar));

        // An edit in place (same size, even the same mtime) is a miss.
        let file = root_a.join("nix/store/00000000000000000000000000000000-a/bin/a");
        crate::store::fixture::edit_keeping_mtime(&file, b"two");
        assert_eq!(in_a.get(&key, &paths), None);

        // A store path that cannot be read: nothing cached, no error.
        std::fs::remove_dir_all(root_a.join("nix")).unwrap();
        assert_eq!(in_a.get(&key, &paths), None);
        in_a.put(&key, &paths, &record(Some(tar), &[])).unwrap();
        assert_eq!(in_a.get(&key, &paths), None);
    }

    /// Stamps taken before a layer is read tell an edit in place (same
    /// size, mtime put back) and a replaced file, naming the path.
    #[test]
    fn stamps_check_names_the_edited_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let names = [
            "/nix/store/00000000000000000000000000000000-a",
            "/nix/store/11111111111111111111111111111111-b",
        ];
        let paths: Vec<StorePath> = names
            .iter()
            .map(|n| {
                let disk = dir.path().join(&n[1..]);
                std::fs::create_dir_all(&disk).unwrap();
                std::fs::write(disk.join("f"), b"one").unwrap();
                StorePath::parse(&crate::nix::StoreDir::default(), n).unwrap()
            })
            .collect();
        let stamps = Stamps::of(&store, &paths).unwrap();
        assert_eq!(stamps.check(&store, &paths), Ok(()));
        let file = dir.path().join(&names[1][1..]).join("f");
        crate::store::fixture::edit_keeping_mtime(&file, b"two");
        assert_eq!(stamps.check(&store, &paths), Err(Some(&paths[1])));
        // Stamps of other paths are never taken for these.
        assert_eq!(stamps.check(&store, &paths[..1]), Err(Some(&paths[0])));
    }

    /// Stamps from the walk that measured the paths are the content
    /// stamps; checked against what a later walk saw (no walk of its own),
    /// or, where a walk saw nothing, against a fresh stamp.
    #[test]
    fn walked_stamps_are_checked_without_a_walk() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let name = "/nix/store/00000000000000000000000000000000-a";
        let disk = dir.path().join(&name[1..]);
        std::fs::create_dir_all(&disk).unwrap();
        std::fs::write(disk.join("f"), b"one").unwrap();
        let paths = [StorePath::parse(&crate::nix::StoreDir::default(), name).unwrap()];
        let walked = vec![Some(store.content_stamp(&paths[0]).unwrap())];
        let before = Stamps::from_walks(&walked).unwrap();
        assert_eq!(Some(&before), Stamps::of_content(&store, &paths).as_ref());
        assert_eq!(Stamps::from_walks(&[None]), None);
        assert_eq!(before.check_walked(&store, &paths, &walked), Ok(()));
        let other = vec![Some(b"another stamp".to_vec())];
        assert_eq!(
            before.check_walked(&store, &paths, &other),
            Err(Some(&paths[0]))
        );
        // Nothing walked: the store is stamped now, and still the same.
        assert_eq!(before.check_walked(&store, &paths, &[None]), Ok(()));
        std::fs::remove_file(disk.join("f")).unwrap();
        assert_eq!(
            before.check_walked(&store, &paths, &[None]),
            Err(Some(&paths[0]))
        );
        assert_eq!(
            before.check_walked(&store, &paths, &[]),
            Err(Some(&paths[0]))
        );
    }
}
