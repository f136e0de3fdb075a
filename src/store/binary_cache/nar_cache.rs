//! The local cache of verified NARs: `<dir>/<narHash as nix32>.nar`, each
//! with its index, `<dir>/<narHash as nix32>.idx`.
//!
//! A NAR is written to a temporary file in the same directory and renamed
//! into place only after its hash and size were checked, so the directory
//! never holds a partial or unverified NAR under a final name, and two
//! builds filling it at once each rename a complete, identical file. Readers
//! keep their file open, so an eviction by another build (unlink) never
//! pulls a NAR from under a build reading it.
//!
//! # What a use trusts
//!
//! Once verified, a NAR's index (its entries and where each file's bytes
//! are) is kept beside it with the NAR's [`Stamp`] (size, inode, device, mode,
//! modification and change times, in nanoseconds) taken right after the
//! rename, and the index's own sha256. A later use takes the index only
//! while the NAR's stamp is still that one; any write to the NAR (a flipped
//! byte, an edit in place, `touch`, a copy or a replacement) moves its
//! change time or its inode, and then the NAR is read and hashed again
//! against the narinfo's `NarHash` (and fetched anew when it differs). So
//! a warm build reads no NAR twice, and what it trusts is what the local
//! store's and the layer cache's stamps trust: that nothing rewrote the
//! bytes under the file system (a raw disk write or a corrupt disk) or set
//! the clock back. A damaged, truncated or foreign index file is ignored
//! (its checksum, format version or NAR no longer match) and written anew.
//!
//! Bounded by a size: after each insert, the least recently used NARs (by
//! the modification time of their index, refreshed on each use; the NAR
//! itself is never touched, its stamp must hold) go until the total fits,
//! never one this process holds, and when the cache is dropped (the build
//! is over) until the total fits, whatever it held. Temporary files older
//! than a day (a build killed mid-download) go too.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use sha2::{Digest as _, Sha256};

use super::index::NarIndex;
use crate::cleanup::Pending;
use crate::nix::NarHash;

/// Prefix of temporary files.
const TEMP_PREFIX: &str = ".tmp-";

/// The first bytes of an index file: what it is and its format version
/// (a format change bumps the version; an older or newer file is ignored,
/// and written anew on the next use).
const INDEX_MAGIC: &[u8] = b"nixlayer NAR index v1\n";

/// What an index file records of its NAR's metadata: size, inode, device,
/// modification and change times (seconds and nanoseconds), mode. Equal
/// stamps mean no write reached the file in between (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp([u64; 8]);

impl Stamp {
    /// The stamp of `file` now.
    pub(super) fn of(file: &File) -> io::Result<Self> {
        let m = file.metadata()?;
        Ok(Self([
            m.size(),
            m.ino(),
            m.dev(),
            m.mtime().cast_unsigned(),
            m.mtime_nsec().cast_unsigned(),
            m.ctime().cast_unsigned(),
            m.ctime_nsec().cast_unsigned(),
            u64::from(m.mode()),
        ]))
    }
}

/// The bytes of an index file: [`INDEX_MAGIC`], the NAR's hash and size,
/// its stamp, the index ([`NarIndex::encode`]), then the sha256 of all that.
pub(super) fn encode_index(
    hash: &NarHash,
    nar_size: u64,
    stamp: &Stamp,
    index: &NarIndex,
) -> Vec<u8> {
    let mut out = INDEX_MAGIC.to_vec();
    out.extend_from_slice(&hash.0);
    out.extend_from_slice(&nar_size.to_le_bytes());
    for field in stamp.0 {
        out.extend_from_slice(&field.to_le_bytes());
    }
    index.encode(&mut out);
    let sum = Sha256::digest(&out);
    out.extend_from_slice(&sum);
    out
}

/// The index in `bytes` when they are an intact index file of the NAR of
/// `hash` and `nar_size` whose stamp is `stamp`; `None` for anything else.
/// Never panics, whatever the bytes.
pub(super) fn decode_index(
    bytes: &[u8],
    hash: &NarHash,
    nar_size: u64,
    stamp: &Stamp,
) -> Option<NarIndex> {
    let (body, sum) = bytes.split_at_checked(bytes.len().checked_sub(32)?)?;
    if Sha256::digest(body).as_slice() != sum {
        return None;
    }
    let rest = body.strip_prefix(INDEX_MAGIC)?;
    let (recorded_hash, rest) = rest.split_at_checked(32)?;
    let (recorded_size, mut rest) = rest.split_at_checked(8)?;
    if recorded_hash != hash.0 || u64::from_le_bytes(recorded_size.try_into().ok()?) != nar_size {
        return None;
    }
    for field in stamp.0 {
        let (recorded, tail) = rest.split_at_checked(8)?;
        if u64::from_le_bytes(recorded.try_into().ok()?) != field {
            return None;
        }
        rest = tail;
    }
    NarIndex::decode(rest, nar_size)
}

/// A temporary file of the NAR cache, registered for removal on a signal
/// until it is renamed into place or dropped.
pub(super) struct Temp {
    file: tempfile::NamedTempFile,
    pending: Pending,
}

impl Temp {
    /// Renames it to `to`, unregistered once there.
    fn persist(self, to: PathBuf) -> io::Result<File> {
        let Self { file, pending } = self;
        pending.publish(|| file.persist(to).map_err(|e| e.error))
    }
}

impl std::ops::Deref for Temp {
    type Target = tempfile::NamedTempFile;
    fn deref(&self) -> &Self::Target {
        &self.file
    }
}

impl std::ops::DerefMut for Temp {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.file
    }
}

/// The NAR cache directory.
#[derive(Debug)]
pub(super) struct NarCache {
    pub(super) dir: PathBuf,
    pub(super) max_bytes: u64,
    /// The bytes the directory holds, as last counted plus what this
    /// process added since: the directory is listed once, then again only
    /// when this passes `max_bytes` (other builds' additions show then).
    total: Mutex<Option<u64>>,
}

impl NarCache {
    pub(super) fn new(dir: PathBuf, max_bytes: u64) -> Self {
        Self {
            dir,
            max_bytes,
            total: Mutex::new(None),
        }
    }

    /// Counts a NAR of `len` bytes (and its index) just inserted; evicts
    /// when over budget.
    pub(super) fn added(&self, len: u64, keep: &HashSet<PathBuf>) -> io::Result<()> {
        let mut total = self.total.lock().unwrap_or_else(PoisonError::into_inner);
        let now = match *total {
            Some(t) => t.saturating_add(len),
            None => self.evict(keep, u64::MAX)?,
        };
        *total = Some(if now > self.max_bytes {
            self.evict(keep, self.max_bytes)?
        } else {
            now
        });
        Ok(())
    }

    /// The build is over: evicts, this process's NARs included, until the
    /// total fits, when what this process counted is over the bound.
    /// (Those it held were kept while it read them; their readers keep
    /// their files open, so removing them now takes nothing from anyone.)
    pub(super) fn finish(&self) -> io::Result<()> {
        let mut total = self.total.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = *total {
            if t > self.max_bytes {
                *total = Some(self.evict(&HashSet::new(), self.max_bytes)?);
            }
        }
        Ok(())
    }

    /// Where the NAR of `hash` is kept.
    pub(super) fn path(&self, hash: &NarHash) -> PathBuf {
        self.dir.join(format!("{}.nar", Self::name(hash)))
    }

    /// Where the index of the NAR of `hash` is kept.
    pub(super) fn index_path(&self, hash: &NarHash) -> PathBuf {
        self.dir.join(format!("{}.idx", Self::name(hash)))
    }

    fn name(hash: &NarHash) -> String {
        let nix32 = hash.to_nix32();
        nix32.strip_prefix("sha256:").unwrap_or(&nix32).to_owned()
    }

    /// The cached NAR of `hash`; `None` when absent.
    pub(super) fn open(&self, hash: &NarHash) -> io::Result<Option<File>> {
        match File::open(self.path(hash)) {
            Ok(file) => Ok(Some(file)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The index of `file`, the cached NAR of `hash` and `nar_size`, when
    /// its index file is intact and the NAR's stamp is still the one it
    /// records (the NAR is then the bytes verified when the index was
    /// written); marked used. `None`: read and hash the NAR again.
    pub(super) fn index(&self, file: &File, hash: &NarHash, nar_size: u64) -> Option<NarIndex> {
        let stamp = Stamp::of(file).ok()?;
        let index_file = File::open(self.index_path(hash)).ok()?;
        // Bounded, though the file is this tool's own: an index entry
        // repeats its parents' names (a NAR entry holds its own name and
        // 100 bytes of framing), so only a deep tree of long names makes
        // an index more than a few times its NAR.
        let limit = nar_size.saturating_mul(64).saturating_add(1 << 16);
        let mut bytes = Vec::new();
        (&index_file).take(limit + 1).read_to_end(&mut bytes).ok()?;
        if bytes.len() as u64 > limit {
            return None;
        }
        let index = decode_index(&bytes, hash, nar_size, &stamp)?;
        // LRU-ish: a failure to touch only makes eviction less exact.
        let _ = index_file.set_modified(SystemTime::now());
        Some(index)
    }

    /// Records `index` as the index of `file`, the NAR of `hash` and
    /// `nar_size` whose bytes were just verified, under its stamp now. Best
    /// effort: without it the next use hashes the NAR again.
    pub(super) fn write_index(&self, file: &File, hash: &NarHash, nar_size: u64, index: &NarIndex) {
        let write = || -> io::Result<()> {
            let bytes = encode_index(hash, nar_size, &Stamp::of(file)?, index);
            let mut temp = self.temp()?;
            temp.write_all(&bytes)?;
            temp.persist(self.index_path(hash))?;
            Ok(())
        };
        let _ = write();
    }

    /// A new temporary file in the cache directory (created if needed),
    /// removed by a signal too ([`Pending`]): a build stopped mid-download
    /// leaves no partial NAR behind.
    pub(super) fn temp(&self) -> io::Result<Temp> {
        fs::create_dir_all(&self.dir)?;
        let (file, pending) = Pending::create(
            || {
                tempfile::Builder::new()
                    .prefix(TEMP_PREFIX)
                    .tempfile_in(&self.dir)
            },
            tempfile::NamedTempFile::path,
        )?;
        Ok(Temp { file, pending })
    }

    /// The bytes a NAR may take beside `temp` (a file in the cache): what
    /// its file system has free, less a reserve (1 GiB, or a twentieth of
    /// the file system when smaller); `None` when that cannot be told.
    /// So a narinfo declaring a NAR larger than that (a decompression
    /// bomb behind an unsigned narinfo) fails before a byte is written,
    /// rather than filling the disk.
    pub(super) fn room(temp: &File) -> Option<u64> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: fstatvfs writes into the zeroed struct we own, on a
        // descriptor we hold open.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstatvfs(temp.as_raw_fd(), &raw mut st) } != 0 {
            return None;
        }
        // u64 here; narrower or wider fields on other targets.
        #[allow(clippy::useless_conversion)]
        let (frsize, avail, total) = (
            u64::try_from(st.f_frsize).unwrap_or(1).max(1),
            u64::try_from(st.f_bavail).unwrap_or(0),
            u64::try_from(st.f_blocks).unwrap_or(0),
        );
        let reserve = (1u64 << 30).min(total.saturating_mul(frsize) / 20);
        Some(avail.saturating_mul(frsize).saturating_sub(reserve))
    }

    /// Renames the verified NAR `temp` into place.
    pub(super) fn insert(&self, temp: Temp, hash: &NarHash) -> io::Result<File> {
        temp.persist(self.path(hash))
    }

    /// Removes the least recently used NARs (with their indexes) until the
    /// total is at most `max`, keeping `keep`; stale temporary files and
    /// indexes without a NAR go too. The total left.
    fn evict(&self, keep: &HashSet<PathBuf>, max: u64) -> io::Result<u64> {
        struct Found {
            nar: Option<(SystemTime, u64)>,
            index: Option<(SystemTime, u64)>,
        }
        let mut found: HashMap<String, Found> = HashMap::new();
        let now = SystemTime::now();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(TEMP_PREFIX) {
                let age = now.duration_since(mtime).unwrap_or_default();
                if age > Duration::from_secs(24 * 3600) {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let seen = Some((mtime, meta.len()));
            if let Some(stem) = name.strip_suffix(".nar") {
                let f = found.entry(stem.to_owned()).or_insert(Found {
                    nar: None,
                    index: None,
                });
                f.nar = seen;
            } else if let Some(stem) = name.strip_suffix(".idx") {
                let f = found.entry(stem.to_owned()).or_insert(Found {
                    nar: None,
                    index: None,
                });
                f.index = seen;
            }
        }
        let mut total = 0u64;
        // (last use, bytes, stem): last use is the later of the NAR's
        // mtime (its download) and its index's (its last use).
        let mut nars = Vec::new();
        for (stem, f) in found {
            match f {
                Found {
                    nar: Some((nar_time, nar_len)),
                    index,
                } => {
                    let (index_time, index_len) = index.unwrap_or((SystemTime::UNIX_EPOCH, 0));
                    let len = nar_len + index_len;
                    total += len;
                    nars.push((nar_time.max(index_time), len, stem));
                }
                // An index whose NAR went (evicted by an older version, or
                // removed by hand) is of no use.
                Found {
                    nar: None,
                    index: Some(_),
                } => {
                    let _ = fs::remove_file(self.dir.join(format!("{stem}.idx")));
                }
                Found {
                    nar: None,
                    index: None,
                } => {}
            }
        }
        nars.sort();
        for (_, len, stem) in nars {
            if total <= max {
                break;
            }
            let nar = self.dir.join(format!("{stem}.nar"));
            if keep.contains(&nar) {
                continue;
            }
            match fs::remove_file(&nar) {
                Ok(()) => total -= len,
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= len,
                Err(e) => return Err(e),
            }
            let _ = fs::remove_file(self.dir.join(format!("{stem}.idx")));
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::nix::nar::write::{nar, Node as N};
    use crate::nix::{StoreDir, StorePath};

    fn tree() -> N {
        N::Dir(vec![
            (
                b"bin".to_vec(),
                N::Dir(vec![(b"x".to_vec(), N::File(true, b"#!".to_vec()))]),
            ),
            (b"lib".to_vec(), N::Link(b"bin".to_vec())),
            (b"share".to_vec(), N::File(false, vec![7; 300])),
        ])
    }

    fn store_path() -> StorePath {
        StorePath::parse(
            &StoreDir::default(),
            "/nix/store/00000000000000000000000000000000-p",
        )
        .unwrap()
    }

    fn stamp(i: u64) -> Stamp {
        Stamp([i, 2, 3, 4, 5, 6, 7, 0o100_444])
    }

    /// `bytes` put in `cache` as the NAR of `hash`, as a download does.
    fn put(cache: &NarCache, hash: &NarHash, bytes: &[u8]) -> File {
        let mut t = cache.temp().unwrap();
        t.write_all(bytes).unwrap();
        cache.insert(t, hash).unwrap()
    }

    /// The NAR `bytes` put in `cache` with its index written, as a
    /// verified download leaves it: the file and its size.
    fn put_indexed(cache: &NarCache, hash: &NarHash, bytes: &[u8]) -> (File, u64) {
        let size = bytes.len() as u64;
        let file = put(cache, hash, bytes);
        let index = NarIndex::read(bytes).unwrap();
        cache.write_index(&file, hash, size, &index);
        (file, size)
    }

    /// An index file gives back the index under the same NAR and stamp,
    /// and nothing under another stamp, hash or size, or once any byte of
    /// it changed or it was cut short.
    #[test]
    fn an_index_file_stands_only_for_its_nar_and_stamp() {
        let bytes = nar(&tree());
        let size = bytes.len() as u64;
        let index = NarIndex::read(bytes.as_slice()).unwrap();
        let hash = NarHash([9; 32]);
        let file = encode_index(&hash, size, &stamp(1), &index);
        let back = decode_index(&file, &hash, size, &stamp(1)).unwrap();
        assert_eq!(back.entries(&store_path()), index.entries(&store_path()));
        assert!(back.file(b"share").is_some_and(|f| f.size == 300));
        assert!(decode_index(&file, &hash, size, &stamp(2)).is_none());
        assert!(decode_index(&file, &NarHash([8; 32]), size, &stamp(1)).is_none());
        assert!(decode_index(&file, &hash, size + 1, &stamp(1)).is_none());
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(
                decode_index(&bad, &hash, size, &stamp(1)).is_none(),
                "byte {at}"
            );
            assert!(
                decode_index(&file[..at], &hash, size, &stamp(1)).is_none(),
                "cut at {at}"
            );
        }
        // Another format version is not read.
        let mut other = file[..file.len() - 32].to_vec();
        other[INDEX_MAGIC.len() - 2] = b'2';
        let sum = Sha256::digest(&other);
        other.extend_from_slice(&sum);
        assert!(decode_index(&other, &hash, size, &stamp(1)).is_none());
    }

    /// A NAR cache entry's index is written once verified and read back
    /// under the NAR's stamp; any write to the NAR (same size, mtime put
    /// back) moves the stamp and the index is no longer taken.
    #[test]
    fn a_write_to_the_nar_retires_its_index() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NarCache::new(dir.path().to_owned(), u64::MAX);
        let bytes = nar(&tree());
        let hash = NarHash([3; 32]);
        let (_, size) = put_indexed(&cache, &hash, &bytes);
        let opened = cache.open(&hash).unwrap().unwrap();
        assert!(cache.index(&opened, &hash, size).is_some());
        let mtime = opened.metadata().unwrap().modified().unwrap();
        let mut again = bytes.clone();
        let last = again.len() - 100;
        again[last] ^= 1;
        std::fs::write(cache.path(&hash), &again).unwrap();
        let writable = File::options()
            .append(true)
            .open(cache.path(&hash))
            .unwrap();
        writable.set_modified(mtime).unwrap();
        assert!(cache.index(&opened, &hash, size).is_none());
    }

    /// A deep tree of long names has an index larger than its NAR (each
    /// entry repeats its parents' names): still read back, not re-hashed
    /// on every use.
    #[test]
    fn a_deep_tree_keeps_its_index() {
        let mut tree = N::File(false, b"leaf".to_vec());
        for depth in 0..40u8 {
            tree = N::Dir(vec![(vec![b'a' + depth % 26; 100], tree)]);
        }
        let dir = tempfile::tempdir().unwrap();
        let cache = NarCache::new(dir.path().to_owned(), u64::MAX);
        let bytes = nar(&tree);
        let hash = NarHash([4; 32]);
        let (file, size) = put_indexed(&cache, &hash, &bytes);
        let index_len = std::fs::metadata(cache.index_path(&hash)).unwrap().len();
        assert!(index_len > 4 * size, "{index_len} vs {size}");
        assert!(cache.index(&file, &hash, size).is_some());
    }

    /// Bytes shaped like an index (a valid header and checksum around
    /// arbitrary or mutated nodes) or not at all: never a panic, and what
    /// decodes has every file inside the NAR.
    fn check_decoded(bytes: &[u8], size: u64) {
        if let Some(index) = NarIndex::decode(bytes, size) {
            for entry in index.entries(&store_path()) {
                let rel = entry.name[store_path().as_str().len()..].to_vec();
                let rel = rel.strip_prefix(b"/").unwrap_or(&rel);
                let rel = rel.strip_suffix(b"/").unwrap_or(rel);
                if let Some(f) = index.file(rel) {
                    assert!(f.offset + f.size <= size);
                }
                let _ = index.read_dir(rel);
            }
        }
    }

    proptest! {
        #[test]
        fn index_files_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let hash = NarHash([0; 32]);
            let _ = decode_index(&bytes, &hash, 1000, &stamp(1));
            check_decoded(&bytes, 1000);
        }

        #[test]
        fn mutated_indexes_never_panic(
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = nar(&tree());
            let size = bytes.len() as u64;
            let index = NarIndex::read(bytes.as_slice()).unwrap();
            let mut nodes = Vec::new();
            index.encode(&mut nodes);
            for (at, byte) in &edits {
                let i = at.index(nodes.len());
                nodes[i] = *byte;
            }
            check_decoded(&nodes, size);
            check_decoded(&nodes[..cut.index(nodes.len() + 1)], size);
            // The same behind a valid header and checksum.
            let hash = NarHash([1; 32]);
            let mut file = encode_index(&hash, size, &stamp(1), &index);
            file.truncate(file.len() - 32);
            let header = file.len() - {
                let mut own = Vec::new();
                index.encode(&mut own);
                own.len()
            };
            file.truncate(header);
            file.extend_from_slice(&nodes);
            let sum = Sha256::digest(&file);
            file.extend_from_slice(&sum);
            if let Some(back) = decode_index(&file, &hash, size, &stamp(1)) {
                check_decoded(&nodes, size);
                let _ = back.entries(&store_path());
            }
        }
    }

    #[test]
    fn evicts_least_recently_used_but_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NarCache::new(dir.path().to_owned(), 25);
        let hash = |i: u8| NarHash([i; 32]);
        for i in 0..4u8 {
            let file = put(&cache, &hash(i), &[i; 10]);
            let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + u64::from(i));
            file.set_modified(when).unwrap();
        }
        let keep: HashSet<PathBuf> = [cache.path(&hash(0))].into();
        cache.added(10, &keep).unwrap();
        let left: Vec<bool> = (0..4).map(|i| cache.path(&hash(i)).exists()).collect();
        assert_eq!(left, [true, false, false, true]);
        // Counted from then on: 10 more bytes (30) go over again.
        put(&cache, &hash(9), &[9; 10]);
        cache.added(10, &keep).unwrap();
        assert!(!cache.path(&hash(3)).exists(), "the oldest not kept went");
        assert!(cache.open(&hash(9)).unwrap().is_some());
        assert!(cache.open(&hash(1)).unwrap().is_none());
    }

    /// A temporary file is removed by a signal until it is in place (see
    /// `crate::cleanup`), and no longer once it is.
    #[test]
    fn temporary_files_are_registered_until_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NarCache::new(dir.path().to_owned(), u64::MAX);
        let t = cache.temp().unwrap();
        let at = t.path().to_owned();
        assert!(crate::cleanup::is_pending(&at));
        cache.insert(t, &NarHash([5; 32])).unwrap();
        assert!(!crate::cleanup::is_pending(&at));
        assert!(!crate::cleanup::is_pending(&cache.path(&NarHash([5; 32]))));
        let t = cache.temp().unwrap();
        let at = t.path().to_owned();
        drop(t);
        assert!(!crate::cleanup::is_pending(&at) && !at.exists());
    }

    /// A NAR goes with its index, an index without a NAR goes, the later
    /// of the two times is the NAR's last use, and once the build is over
    /// ([`NarCache::finish`]) the bound holds, kept NARs or not.
    #[test]
    fn indexes_go_with_their_nars_and_the_bound_holds_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NarCache::new(dir.path().to_owned(), 35);
        let hash = |i: u8| NarHash([i; 32]);
        let at = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + s);
        for i in 0..3u8 {
            put(&cache, &hash(i), &[i; 10])
                .set_modified(at(u64::from(i)))
                .unwrap();
            std::fs::write(cache.index_path(&hash(i)), [i; 5]).unwrap();
            let idx = File::options()
                .append(true)
                .open(cache.index_path(&hash(i)))
                .unwrap();
            // NAR 0 was used last (its index touched).
            idx.set_modified(at(if i == 0 { 10 } else { 0 })).unwrap();
        }
        std::fs::write(cache.index_path(&hash(7)), b"orphan").unwrap();
        let keep: HashSet<PathBuf> = (0..3).map(|i| cache.path(&hash(i))).collect();
        // 45 bytes, all kept: over the bound while the build runs.
        cache.added(15, &keep).unwrap();
        assert!(!cache.index_path(&hash(7)).exists(), "an orphan index went");
        assert!((0..3).all(|i| cache.path(&hash(i)).exists()));
        cache.finish().unwrap();
        let left: Vec<(bool, bool)> = (0..3)
            .map(|i| {
                (
                    cache.path(&hash(i)).exists(),
                    cache.index_path(&hash(i)).exists(),
                )
            })
            .collect();
        assert_eq!(left, [(true, true), (false, false), (true, true)]);
    }
}
