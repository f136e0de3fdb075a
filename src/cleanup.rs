//! What a build leaves if it is stopped by a signal: nothing. Every
//! temporary file or directory an output is made in is registered here
//! while it exists; on SIGINT, SIGTERM or SIGHUP the handler thread
//! ([`install_signal_handlers`]) removes them all, then dies of the same
//! signal, so the shell reports the usual status (130 for Ctrl-C, 143 for
//! SIGTERM, 129 for SIGHUP) and a script sees the interruption.
//!
//! Destructors do not run when a signal ends the process, so `tempfile`'s
//! own clean-up cannot help here. Publishing (the rename that moves a
//! temporary file into place) holds the registry ([`Pending::publish`]), so
//! the handler either removes a path before it is published or knows it is
//! no longer temporary: it never removes a finished output.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Registered temporary paths by registration number.
static PENDING: Mutex<BTreeMap<u64, PathBuf>> = Mutex::new(BTreeMap::new());
static NEXT: AtomicU64 = AtomicU64::new(0);

fn registry() -> MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    // A panic elsewhere while holding it leaves a usable map.
    PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A temporary path removed if a signal ends the process before it is
/// published or dropped.
#[derive(Debug)]
pub struct Pending {
    id: u64,
}

impl Pending {
    /// Registers `path` (a file or a directory).
    #[must_use]
    pub fn new(path: &Path) -> Self {
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        registry().insert(id, path.to_owned());
        Self { id }
    }

    /// Creates a temporary path with `create` and registers it (`path_of`
    /// names it) with the registry held throughout, so a signal arriving
    /// meanwhile waits and then finds the path registered: there is no
    /// moment when it exists unregistered.
    ///
    /// # Errors
    /// `create`'s error; nothing is registered then.
    pub fn create<T>(
        create: impl FnOnce() -> io::Result<T>,
        path_of: impl FnOnce(&T) -> &Path,
    ) -> io::Result<(T, Self)> {
        let mut pending = registry();
        let value = create()?;
        let id = NEXT.fetch_add(1, Ordering::Relaxed);
        pending.insert(id, path_of(&value).to_owned());
        Ok((value, Self { id }))
    }

    /// Runs `publish` (the rename that puts the path in its final place)
    /// with the registry held, and unregisters the path when it succeeded,
    /// so that a signal arriving meanwhile waits for it and then leaves
    /// the published output alone.
    ///
    /// # Errors
    /// `publish`'s error; the path then stays registered until dropped.
    pub fn publish<T>(&self, publish: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
        let mut pending = registry();
        let value = publish()?;
        pending.remove(&self.id);
        Ok(value)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        registry().remove(&self.id);
    }
}

/// Whether `path` is registered now (for tests of the modules that
/// register their temporary paths).
#[cfg(test)]
pub(crate) fn is_pending(path: &Path) -> bool {
    registry().values().any(|p| p == path)
}

/// Removes every registered path; the registry stays locked in the returned
/// guard so nothing is published afterwards.
fn remove_all() -> MutexGuard<'static, BTreeMap<u64, PathBuf>> {
    let pending = registry();
    remove_paths(pending.values());
    pending
}

fn remove_paths<'a>(paths: impl Iterator<Item = &'a PathBuf>) {
    for path in paths {
        // Best effort: a path may already be gone (its owner dropped it).
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => {
                // Other threads go on writing while this one removes: a
                // file made in the directory after it was listed makes
                // the last `rmdir` fail, so list and remove again. Once
                // the directory is gone, their writes fail instead.
                for _ in 0..100 {
                    if std::fs::remove_dir_all(path).is_ok()
                        || std::fs::symlink_metadata(path).is_err()
                    {
                        break;
                    }
                }
            }
            Ok(_) => {
                let _ = std::fs::remove_file(path);
            }
            Err(_) => {}
        }
    }
}

/// Starts a thread that, on SIGINT, SIGTERM or SIGHUP, removes every
/// registered temporary path and ends the process by that signal. Call it
/// once, early in `main`.
///
/// # Errors
/// When the handlers cannot be installed.
#[cfg(unix)]
pub fn install_signal_handlers() -> io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])?;
    std::thread::Builder::new()
        .name("nixlayer-signals".to_owned())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                let _held = remove_all();
                // Die of the signal itself (the default action), so the
                // parent sees what happened; exit 128+N if that fails.
                let _ = signal_hook::low_level::emulate_default_handler(signal);
                std::process::exit(128 + signal);
            }
        })?;
    Ok(())
}

/// Signals are a Unix matter; elsewhere nothing is installed.
#[cfg(not(unix))]
pub fn install_signal_handlers() -> io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_what_is_pending_and_nothing_published() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        std::fs::write(&a, "temp").unwrap();
        std::fs::create_dir_all(b.join("sub")).unwrap();
        std::fs::write(&c, "done").unwrap();
        let pa = Pending::new(&a);
        let pb = Pending::new(&b);
        let pc = Pending::new(&c);
        pc.publish(|| Ok(())).unwrap();
        // Only this test's paths: other tests' outputs are pending too.
        remove_paths(registry().values().filter(|p| p.starts_with(dir.path())));
        assert!(!a.exists() && !b.exists());
        assert!(c.exists());
        drop((pa, pb, pc));
        assert!(!registry().values().any(|p| p.starts_with(dir.path())));
    }
}
