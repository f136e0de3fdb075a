//! Progress on a terminal while layers are written (and, for `push`,
//! uploaded meanwhile): layers done of all, tar bytes written of all, and
//! the rate, drawn by indicatif on stderr. Nothing at all when stderr is not
//! a terminal or under `--quiet`, so logs and scripts see only the summary
//! line; stdout (`--json`, `--stream`) is never touched.

use std::io::IsTerminal as _;
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use nixlayer::nix::StorePath;
use nixlayer::oci::Digest;
use nixlayer::ops::Reporter;

/// What the bar shows, kept apart from drawing so it can be tested.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    /// Each layer's tar size, as measured before the build.
    sizes: Vec<u64>,
    /// Bytes of each layer's tar written so far.
    written: Vec<u64>,
    /// Layers done (written, or taken from the layer cache).
    pub(crate) done: usize,
}

impl State {
    pub(crate) fn new(sizes: Vec<u64>) -> Self {
        let written = vec![0; sizes.len()];
        Self {
            sizes,
            written,
            done: 0,
        }
    }

    /// All the layers' bytes.
    pub(crate) fn total(&self) -> u64 {
        self.sizes.iter().fold(0, |a, &b| a.saturating_add(b))
    }

    /// Bytes written (a cached layer counts whole), never past the total.
    pub(crate) fn position(&self) -> u64 {
        self.written
            .iter()
            .fold(0u64, |a, &b| a.saturating_add(b))
            .min(self.total())
    }

    pub(crate) fn on_bytes(&mut self, index: usize, bytes: u64) {
        // A layer's count stops at its measured size.
        if let (Some(w), Some(&size)) = (self.written.get_mut(index), self.sizes.get(index)) {
            *w = w.saturating_add(bytes).min(size);
        }
    }

    pub(crate) fn on_layer_done(&mut self, index: usize) {
        if let (Some(w), Some(&size)) = (self.written.get_mut(index), self.sizes.get(index)) {
            *w = size;
        }
        self.done = (self.done + 1).min(self.sizes.len());
    }

    /// `layers 2/5`, and what follows the last layer.
    pub(crate) fn message(&self, uploading: bool) -> String {
        let n = self.sizes.len();
        if uploading && self.done == n {
            format!("layers {n}/{n}, finishing uploads")
        } else {
            format!("layers {}/{n}", self.done)
        }
    }
}

/// A [`Reporter`] drawing a progress bar; silent when `enabled` is false.
pub(crate) struct Progress {
    state: Mutex<State>,
    bar: Option<ProgressBar>,
    /// A push: uploads go on after the last layer is written.
    uploading: bool,
}

impl Progress {
    /// A bar for layers of `sizes` when stderr is a terminal and not
    /// `quiet`; else a reporter that draws nothing.
    pub(crate) fn new(sizes: Vec<u64>, quiet: bool, uploading: bool) -> Self {
        let enabled = !quiet && std::io::stderr().is_terminal();
        Self::with(sizes, enabled, uploading)
    }

    fn with(sizes: Vec<u64>, enabled: bool, uploading: bool) -> Self {
        let state = State::new(sizes);
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(
                Some(state.total()),
                ProgressDrawTarget::stderr_with_hz(5),
            );
            // A template of literals only: it always parses.
            if let Ok(style) = ProgressStyle::with_template(
                "{msg:<32} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {elapsed}",
            ) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(state.message(uploading));
            bar
        });
        Self {
            state: Mutex::new(state),
            bar,
            uploading,
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(&mut state);
        if let Some(bar) = &self.bar {
            bar.set_position(state.position());
            bar.set_message(state.message(self.uploading));
        }
    }

    /// Removes the bar, before the summary line is printed.
    pub(crate) fn clear(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.clear();
    }
}

impl Reporter for Progress {
    fn on_bytes(&self, index: usize, bytes: u64) {
        self.update(|s| s.on_bytes(index, bytes));
    }

    fn on_layer_done(&self, index: usize, _diff_id: &Digest) {
        self.update(|s| s.on_layer_done(index));
    }

    fn on_layer_start(&self, _index: usize, _total: usize, _paths: &[StorePath], _bytes: u64) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_state_counts_layers_and_bytes() {
        let mut s = State::new(vec![100, 50, 10]);
        assert_eq!((s.total(), s.position(), s.done), (160, 0, 0));
        assert_eq!(s.message(false), "layers 0/3");
        // The first layer came from the layer cache: counted whole.
        s.on_layer_done(0);
        assert_eq!((s.position(), s.done), (100, 1));
        s.on_bytes(1, 20);
        s.on_bytes(1, 20);
        assert_eq!(s.position(), 140);
        s.on_layer_done(1);
        s.on_bytes(2, 10);
        s.on_layer_done(2);
        assert_eq!((s.position(), s.done), (160, 3));
        assert_eq!(s.message(true), "layers 3/3, finishing uploads");
        assert_eq!(s.message(false), "layers 3/3");
        // Out of range or past the end: ignored, never past the total.
        s.on_bytes(7, 5);
        s.on_bytes(2, u64::MAX);
        s.on_layer_done(9);
        assert_eq!((s.position(), s.done), (160, 3));
    }

    #[test]
    fn a_disabled_bar_draws_nothing_but_keeps_count() {
        let p = Progress::with(vec![10, 20], false, true);
        assert!(p.bar.is_none());
        p.on_bytes(0, 10);
        p.on_layer_done(0, &Digest::of(b""));
        let s = p.state.lock().unwrap().clone();
        assert_eq!((s.position(), s.done), (10, 1));
    }
}
