//! The local cache of verified NARs: `<dir>/<narHash as nix32>.nar`.
//!
//! A NAR is written to a temporary file in the same directory and renamed
//! into place only after its hash and size were checked, so the directory
//! never holds a partial or unverified NAR under a final name, and two
//! builds filling it at once each rename a complete, identical file. Readers
//! keep their file open, so an eviction by another build (unlink) never
//! pulls a NAR from under a build reading it.
//!
//! Bounded by a size: after each insert, the least recently used NARs (by
//! mtime, refreshed on each use) go until the total fits, never one this
//! process holds. Temporary files older than a day (a build killed mid-
//! download) go too.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use crate::nix::NarHash;

/// Prefix of temporary files.
const TEMP_PREFIX: &str = ".tmp-";

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

    /// Counts a NAR of `len` bytes just inserted; evicts when over budget.
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

    /// Where the NAR of `hash` is kept.
    pub(super) fn path(&self, hash: &NarHash) -> PathBuf {
        let nix32 = hash.to_nix32();
        let name = nix32.strip_prefix("sha256:").unwrap_or(&nix32);
        self.dir.join(format!("{name}.nar"))
    }

    /// The cached NAR of `hash`, marked used; `None` when absent.
    pub(super) fn open(&self, hash: &NarHash) -> io::Result<Option<File>> {
        match File::open(self.path(hash)) {
            Ok(file) => {
                // LRU-ish: a failure to touch only makes eviction less exact.
                let _ = file.set_modified(SystemTime::now());
                Ok(Some(file))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A new temporary file in the cache directory (created if needed).
    pub(super) fn temp(&self) -> io::Result<tempfile::NamedTempFile> {
        fs::create_dir_all(&self.dir)?;
        tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)
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
    pub(super) fn insert(&self, temp: tempfile::NamedTempFile, hash: &NarHash) -> io::Result<File> {
        temp.persist(self.path(hash)).map_err(|e| e.error)
    }

    /// Removes the least recently used NARs until the total is at most
    /// `max`, keeping `keep`; stale temporary files go too. The total left.
    fn evict(&self, keep: &HashSet<PathBuf>, max: u64) -> io::Result<u64> {
        let mut nars = Vec::new();
        let mut total = 0u64;
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
            if !meta.is_file() || !name.ends_with(".nar") {
                continue;
            }
            total += meta.len();
            nars.push((mtime, meta.len(), entry.path()));
        }
        nars.sort();
        for (_, len, path) in nars {
            if total <= max {
                break;
            }
            if keep.contains(&path) {
                continue;
            }
            match fs::remove_file(&path) {
                Ok(()) => total -= len,
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= len,
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn evicts_least_recently_used_but_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = NarCache::new(dir.path().to_owned(), 25);
        let hash = |i: u8| NarHash([i; 32]);
        for i in 0..4u8 {
            let mut t = cache.temp().unwrap();
            t.write_all(&[i; 10]).unwrap();
            let file = cache.insert(t, &hash(i)).unwrap();
            let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + u64::from(i));
            file.set_modified(when).unwrap();
        }
        let keep: HashSet<PathBuf> = [cache.path(&hash(0))].into();
        cache.added(10, &keep).unwrap();
        let left: Vec<bool> = (0..4).map(|i| cache.path(&hash(i)).exists()).collect();
        assert_eq!(left, [true, false, false, true]);
        // Counted from then on: 10 more bytes (30) go over again.
        let mut t = cache.temp().unwrap();
        t.write_all(&[9; 10]).unwrap();
        cache.insert(t, &hash(9)).unwrap();
        cache.added(10, &keep).unwrap();
        assert!(!cache.path(&hash(3)).exists(), "the oldest not kept went");
        assert!(cache.open(&hash(9)).unwrap().is_some());
        assert!(cache.open(&hash(1)).unwrap().is_none());
    }
}
