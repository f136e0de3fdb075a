//! Hashing layers ahead of the one being streamed, on an otherwise idle core.
//!
//! A docker-archive names its layers by content key and needs their
//! diff_ids only at the end (the config), so a layer's hash need not be
//! taken while its bytes stream. One thread streams the layers in order;
//! this helper takes layers from the *other end* of the image, reads them
//! and hashes them. When the streaming thread reaches a layer the helper
//! has taken, it streams it without hashing ([`super::stream_store_layer`])
//! and collects the diff_id from the helper; every other layer it hashes
//! itself as it streams. The two meet somewhere in the middle, wherever
//! their speeds put the meeting point, so neither waits for the other
//! except at the one layer they may share at the end. Each layer is hashed
//! exactly once, whichever thread does it.
//!
//! The helper reads a layer at another time than the streaming thread, so
//! the bytes hashed and the bytes streamed are one and the same only if the
//! store did not change in between: the caller compares the layer's
//! [`super::cache::Stamps`] from before the helper started with those after
//! the layer streamed (see `ops::write`).
//!
//! Which thread hashes a layer depends on timing; the bytes never do: the
//! helper writes nothing, and the streamed bytes are the layer's tar either
//! way.

use std::sync::{Condvar, Mutex, MutexGuard};

use super::{hash_store_layer_walked, Error, LayerOptions, WalkedStamps};
use crate::nix::StorePath;
use crate::oci::LayerDigest;
use crate::store::Store;

/// A layer the helper may hash: its store paths and measured tar size.
pub type Job<'a> = Option<(&'a [StorePath], u64)>;

/// The handle the streaming thread uses; see the module docs.
pub struct Ahead {
    state: Mutex<State>,
    /// Signalled when a result is stored or the streaming thread stops.
    changed: Condvar,
}

struct State {
    /// The streaming thread's next layer: the helper takes none before it.
    next: usize,
    /// Layers the helper took.
    taken: Vec<bool>,
    /// What the helper found, per layer it took.
    results: Vec<Option<Result<(LayerDigest, WalkedStamps), Error>>>,
    /// Set when the streaming thread is done (or failed): take nothing more.
    stop: bool,
}

impl Ahead {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock is a bug elsewhere; the state is
        // plain data, still consistent, so carry on with it.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Called by the streaming thread when it reaches layer `index`: true
    /// when the helper took it (stream it without hashing, then
    /// [`Ahead::result`]), false when it is the streaming thread's to hash
    /// (the helper will not take it any more).
    #[must_use]
    pub fn claim(&self, index: usize) -> bool {
        let mut state = self.lock();
        if state.taken.get(index).copied().unwrap_or(false) {
            return true;
        }
        state.next = state.next.max(index + 1);
        false
    }

    /// The diff_id the helper found for layer `index`, which it took
    /// ([`Ahead::claim`] said so); waits for it.
    ///
    /// # Errors
    /// What hashing the layer failed with (a store file unreadable or changed).
    pub fn result(&self, index: usize) -> Result<LayerDigest, Error> {
        self.result_walked(index).map(|(digest, _)| digest)
    }

    /// [`Ahead::result`], and what the helper's walks saw of each store
    /// path (see [`super::stream_store_layer_walked`]): its bytes are the
    /// ones the stamps from before name only if these are those stamps.
    ///
    /// # Errors
    /// As [`Ahead::result`].
    pub(crate) fn result_walked(&self, index: usize) -> Result<(LayerDigest, WalkedStamps), Error> {
        let mut state = self.lock();
        loop {
            if let Some(result) = state.results.get_mut(index).and_then(Option::take) {
                return result;
            }
            if !state.taken.get(index).copied().unwrap_or(false) {
                // Not the helper's: a caller's bug, not a reason to wait forever.
                return Err(Error::Write {
                    first: None,
                    source: std::io::Error::other(format!("layer {index} was not hashed ahead")),
                });
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
    }

    /// The helper's next layer: the last one it may hash that neither
    /// thread has taken.
    fn take_next(&self, jobs: &[Job<'_>]) -> Option<usize> {
        let mut state = self.lock();
        if state.stop {
            return None;
        }
        let index = (state.next..jobs.len())
            .rev()
            .find(|&i| jobs[i].is_some() && !state.taken[i])?;
        state.taken[index] = true;
        Some(index)
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

/// Runs `stream` (the streaming thread's work, on this thread) while a
/// helper thread hashes the layers of `jobs` that `stream` has not reached,
/// last first. Returns what `stream` returns once the helper has stopped
/// (it takes no new layer after `stream` returns, and finishes the one it
/// is on).
pub fn with_hashing_ahead<S: Store + Sync, T>(
    opts: &LayerOptions<S>,
    jobs: &[Job<'_>],
    stream: impl FnOnce(&Ahead) -> T,
) -> T {
    let ahead = Ahead {
        state: Mutex::new(State {
            next: 0,
            taken: vec![false; jobs.len()],
            results: jobs.iter().map(|_| None).collect(),
            stop: false,
        }),
        changed: Condvar::new(),
    };
    std::thread::scope(|scope| {
        let ahead = &ahead;
        scope.spawn(move || {
            while let Some(index) = ahead.take_next(jobs) {
                let Some((paths, size)) = jobs[index] else {
                    continue;
                };
                let result = hash_store_layer_walked(opts, paths, size);
                ahead.lock().results[index] = Some(result);
                ahead.changed.notify_all();
            }
        });
        let out = stream(ahead);
        ahead.stop();
        out
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::layer::{measure_store_layer, write_store_layer, Owner, Permissions};
    use crate::nix::StoreDir;
    use crate::store::fixture::{build_tree, store_path, LINK, SINGLE, TREE};
    use crate::store::StoreLocation;

    fn opts(root: &Path) -> LayerOptions {
        LayerOptions {
            store: StoreLocation {
                dir: StoreDir::default(),
                root: root.to_owned(),
            },
            owner: Owner::default(),
            mtime: 1,
            permissions: Permissions::default(),
        }
    }

    /// Whichever thread hashes a layer, its digest is the one writing it
    /// gives; the helper takes layers from the end and never one the
    /// streaming thread claimed.
    #[test]
    fn the_helper_hashes_from_the_end_what_the_streamer_did_not_claim() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let o = opts(dir.path());
        let layers = [
            vec![store_path(TREE)],
            vec![store_path(SINGLE)],
            vec![store_path(LINK)],
            vec![store_path(TREE), store_path(LINK)],
        ];
        let sizes: Vec<u64> = layers
            .iter()
            .map(|p| measure_store_layer(&o, p).unwrap())
            .collect();
        let expected: Vec<LayerDigest> = layers
            .iter()
            .zip(&sizes)
            .map(|(p, &s)| write_store_layer(&o, p, s, std::io::sink()).unwrap())
            .collect();
        // Layer 1 is not the helper's to hash.
        let jobs: Vec<Job<'_>> = layers
            .iter()
            .zip(&sizes)
            .enumerate()
            .map(|(i, (p, &s))| (i != 1).then_some((p.as_slice(), s)))
            .collect();
        for _ in 0..20 {
            let got = with_hashing_ahead(&o, &jobs, |ahead| {
                (0..layers.len())
                    .map(|i| {
                        if ahead.claim(i) {
                            assert_ne!(i, 1, "the helper took a layer it may not hash");
                            ahead.result(i).unwrap()
                        } else {
                            write_store_layer(&o, &layers[i], sizes[i], std::io::sink()).unwrap()
                        }
                    })
                    .collect::<Vec<_>>()
            });
            assert_eq!(got, expected);
        }
    }

    /// A failure while hashing ahead is the streaming thread's error for
    /// that layer, not a hang or a panic.
    #[test]
    fn a_helper_error_reaches_the_streamer() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let paths = [store_path(SINGLE)];
        let jobs: Vec<Job<'_>> = vec![None, Some((&paths, 2048))];
        with_hashing_ahead(&o, &jobs, |ahead| {
            assert!(!ahead.claim(0));
            // Give the helper time to take layer 1 first.
            while !ahead.lock().taken[1] {
                std::thread::yield_now();
            }
            assert!(ahead.claim(1));
            assert!(matches!(ahead.result(1), Err(Error::Io { .. })));
        });
    }
}
