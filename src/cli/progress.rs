//! Progress on a terminal while layers are written (and, for `push`,
//! uploaded meanwhile): layers done of all, tar bytes written of all, the
//! rate and the time, drawn by indicatif on stderr; a push adds the
//! compressed bytes uploaded of those queued and the upload rate, redrawn
//! while the last uploads finish. The line is cut at the terminal's width
//! (on every redraw, so a resized terminal too): a line that wrapped would
//! take several rows, which indicatif must move the cursor up over to
//! redraw, and a terminal narrowed meanwhile re-wraps them and leaves
//! debris. Nothing at all when stderr is not a terminal or under
//! `--quiet`, so logs and scripts see only the summary line; stdout
//! (`--json`, `--stream`) is never touched.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use nixlayer::nix::StorePath;
use nixlayer::oci::Digest;
use nixlayer::ops::Reporter;
use nixlayer::sink::registry::UploadMeter;
use nixlayer::store::binary_cache::NarMeter;

/// How often the upload figures are redrawn when nothing else moves.
const TICK: Duration = Duration::from_millis(200);

/// `uploaded 1.5 MiB/4.0 MiB (750 KiB/s)`: bytes sent of those queued,
/// and the mean rate since the uploads started.
pub(crate) fn upload_text(sent: u64, queued: u64, elapsed: Duration) -> String {
    format!(
        "uploaded {}/{} ({}/s)",
        HumanBytes(sent.min(queued)),
        HumanBytes(queued),
        HumanBytes(mean_rate(sent, elapsed))
    )
}

/// Bytes per second over `elapsed` (0 before any time has passed).
fn mean_rate(bytes: u64, elapsed: Duration) -> u64 {
    let secs = elapsed.as_secs_f64();
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    if secs > 0.0 {
        (bytes as f64 / secs) as u64
    } else {
        0
    }
}

/// What the bar shows, kept apart from drawing so it can be tested.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct State {
    /// Each layer's tar size, as measured before the build.
    sizes: Vec<u64>,
    /// Bytes of each layer's tar written so far.
    written: Vec<u64>,
    /// Bytes that really passed (a cached layer's do not), for the rate.
    streamed: u64,
    /// Layers done (written, or taken from the layer cache).
    pub(crate) done: usize,
}

impl State {
    pub(crate) fn new(sizes: Vec<u64>) -> Self {
        let written = vec![0; sizes.len()];
        Self {
            sizes,
            written,
            streamed: 0,
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
            self.streamed = self.streamed.saturating_add(bytes);
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

/// The bar's graphic, in characters between its brackets.
const BAR: usize = 20;

/// `[=========>          ]`: `position` of `total`.
fn bar(position: u64, total: u64) -> String {
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let filled = if total == 0 {
        BAR
    } else {
        ((position as f64 / total as f64) * BAR as f64) as usize
    }
    .min(BAR);
    let head = usize::from(filled < BAR && position > 0);
    format!(
        "[{}{}{}]",
        "=".repeat(filled),
        ">".repeat(head),
        " ".repeat(BAR - filled - head)
    )
}

/// `2s`, `1m 05s`: whole seconds, so the line does not flicker.
fn seconds(d: Duration) -> String {
    let s = d.as_secs();
    if s < 60 {
        format!("{s}s")
    } else {
        format!("{}m {:02}s", s / 60, s % 60)
    }
}

impl State {
    /// The whole line: `layers 2/5 [====>     ] 1.50 MiB/4.00 MiB
    /// 750.00 KiB/s 2s`, the most telling first (the terminal cuts the
    /// end): a push's `uploads` figures come right after the layers, so
    /// an 80-column terminal still shows them. The rate is of the bytes
    /// really written since the start (a layer from the cache counts in
    /// the position, not in the rate).
    pub(crate) fn line(
        &self,
        uploading: bool,
        elapsed: Duration,
        nars: Option<&NarMeter>,
        uploads: Option<&str>,
    ) -> String {
        let rate = mean_rate(self.streamed, elapsed);
        // NARs fetched before any layer is written (an OCI output or a
        // push fetches them all first): the only thing moving then.
        let fetched = match nars {
            Some(m) if m.nars() > 0 && self.streamed == 0 => fetched_text(m),
            _ => String::new(),
        };
        let uploads = uploads.map(|u| format!("; {u}")).unwrap_or_default();
        format!(
            "{}{fetched}{uploads} {} {}/{} {}/s {}",
            self.message(uploading),
            bar(self.position(), self.total()),
            HumanBytes(self.position()),
            HumanBytes(self.total()),
            HumanBytes(rate),
            seconds(elapsed)
        )
    }
}

/// `, fetched 12 NARs (45.20 MiB)`.
fn fetched_text(m: &NarMeter) -> String {
    let n = m.nars();
    format!(
        ", fetched {n} NAR{} ({})",
        if n == 1 { "" } else { "s" },
        HumanBytes(m.bytes())
    )
}

/// The uploads of a push, as the bar shows them.
struct Uploads {
    meter: Arc<UploadMeter>,
    started: Instant,
}

impl Uploads {
    fn text(&self) -> String {
        upload_text(
            self.meter.sent(),
            self.meter.queued(),
            self.started.elapsed(),
        )
    }
}

/// What the bar's message and the ticker share.
struct Shared {
    state: Mutex<State>,
    uploads: Mutex<Option<Uploads>>,
    /// A push: uploads go on after the last layer is written.
    uploading: bool,
    started: Instant,
    /// A binary cache's downloads.
    nars: Option<Arc<NarMeter>>,
}

impl Shared {
    fn message(&self) -> String {
        let elapsed = self.started.elapsed();
        let nars = self.nars.as_deref();
        match &*lock(&self.uploads) {
            // The upload figures say what goes on after the last layer.
            Some(u) => lock(&self.state).line(false, elapsed, nars, Some(&u.text())),
            None => lock(&self.state).line(self.uploading, elapsed, nars, None),
        }
    }
}

/// Calls `draw` every [`TICK`] on a thread of its own until stopped.
struct Ticker {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl Ticker {
    fn start(draw: impl Fn() + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                // Woken early by `stop`, so a build never waits a tick.
                std::thread::park_timeout(TICK);
                draw();
            }
        });
        Self { stop, handle }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.thread().unpark();
        let _ = self.handle.join();
    }
}

/// A terminal line while the image is planned: walking and measuring a
/// large closure takes a while, and from a binary cache every NAR may be
/// downloaded (a cache without `.ls` listings) before the layers can even
/// be measured, and programs are read (their NARs) for the architecture
/// check. Drawn after a second, or once a NAR arrived; never for a plan
/// made at once.
pub(crate) struct Planning {
    ticker: Option<(ProgressBar, Ticker)>,
}

impl Planning {
    /// Watches `nars` (a binary cache's downloads) too when stderr is a
    /// terminal and not `quiet`.
    pub(crate) fn start(nars: Option<Arc<NarMeter>>, quiet: bool) -> Self {
        let enabled = !quiet && std::io::stderr().is_terminal();
        let ticker = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            if let Ok(style) = ProgressStyle::with_template("{wide_msg}") {
                bar.set_style(style);
            }
            let (shown, started) = (bar.clone(), Instant::now());
            let ticker = Ticker::start(move || {
                let elapsed = started.elapsed();
                let fetched = match nars.as_deref().map_or(0, NarMeter::nars) {
                    0 if elapsed < Duration::from_secs(1) => return,
                    0 => String::new(),
                    _ => nars.as_deref().map(fetched_text).unwrap_or_default(),
                };
                shown.set_message(format!("planning{fetched} {}", seconds(elapsed)));
            });
            (bar, ticker)
        });
        Self { ticker }
    }
}

impl Planning {
    /// Removes the line, before anything else is printed.
    pub(crate) fn clear(&mut self) {
        if let Some((bar, ticker)) = self.ticker.take() {
            ticker.stop();
            bar.finish_and_clear();
        }
    }
}

impl Drop for Planning {
    fn drop(&mut self) {
        self.clear();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A [`Reporter`] drawing a progress bar; silent when `enabled` is false.
pub(crate) struct Progress {
    shared: Arc<Shared>,
    bar: Option<ProgressBar>,
    /// Redraws the line every [`TICK`] until told to stop.
    ticker: Mutex<Option<Ticker>>,
    cleared: AtomicBool,
}

impl Progress {
    /// A bar for layers of `sizes` when stderr is a terminal and not
    /// `quiet`; else a reporter that draws nothing.
    /// `nars`: a binary cache's downloads, shown until the first layer
    /// bytes.
    pub(crate) fn new(
        sizes: Vec<u64>,
        quiet: bool,
        uploading: bool,
        nars: Option<Arc<NarMeter>>,
    ) -> Self {
        let enabled = !quiet && std::io::stderr().is_terminal();
        Self::with(sizes, enabled, uploading, nars)
    }

    fn with(sizes: Vec<u64>, enabled: bool, uploading: bool, nars: Option<Arc<NarMeter>>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(sizes)),
            uploads: Mutex::new(None),
            uploading,
            started: Instant::now(),
            nars,
        });
        let bar = enabled.then(|| {
            let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(5));
            // The whole line is the message, which `wide_msg` cuts at the
            // terminal's width as it is at each redraw. A template of a
            // literal key: it always parses.
            if let Ok(style) = ProgressStyle::with_template("{wide_msg}") {
                bar.set_style(style);
            }
            bar.set_message(shared.message());
            bar
        });
        // The ticker draws: a write only counts its bytes (a build makes
        // many), and the time and rates move between writes.
        let ticker = bar.clone().map(|bar| {
            let shared = Arc::clone(&shared);
            Ticker::start(move || bar.set_message(shared.message()))
        });
        Self {
            shared,
            bar,
            ticker: Mutex::new(ticker),
            cleared: AtomicBool::new(false),
        }
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        change(&mut lock(&self.shared.state));
    }

    /// Removes the bar, before the summary line is printed. A push's bar
    /// is drawn once more first, with the upload figures at the end.
    pub(crate) fn clear(&self) {
        if self.cleared.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(ticker) = lock(&self.ticker).take() {
            ticker.stop();
        }
        if let Some(bar) = &self.bar {
            // A push's line is drawn once more (past the rate limit), with
            // the upload figures at the end, before it goes.
            if lock(&self.shared.uploads).is_some() {
                bar.abandon_with_message(self.shared.message());
            }
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
        if let Some(bar) = &self.bar {
            bar.set_message(self.shared.message());
        }
    }

    fn on_layer_start(&self, _index: usize, _total: usize, _paths: &[StorePath], _bytes: u64) {}

    /// Shows the upload figures from now on (the last uploads finish
    /// after the last layer is written). A second call is a push started
    /// over (a blob the registry had recorded was gone): its layers are
    /// written again, so they count from none again.
    fn on_uploads(&self, meter: Arc<UploadMeter>) {
        if self.bar.is_none() {
            return;
        }
        let again = lock(&self.shared.uploads)
            .replace(Uploads {
                meter,
                started: Instant::now(),
            })
            .is_some();
        if again {
            let mut state = lock(&self.shared.state);
            *state = State::new(std::mem::take(&mut state.sizes));
        }
    }
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
        let p = Progress::with(vec![10, 20], false, true, None);
        assert!(p.bar.is_none());
        p.on_bytes(0, 10);
        p.on_layer_done(0, &Digest::of(b""));
        let s = p.shared.state.lock().unwrap().clone();
        assert_eq!((s.position(), s.done), (10, 1));
        // No bar: no upload figures, no ticker.
        p.on_uploads(Arc::default());
        assert!(p.shared.uploads.lock().unwrap().is_none());
        assert!(p.ticker.lock().unwrap().is_none());
    }

    /// The whole line, the bar's graphic included; the rate counts only
    /// the bytes written (not a cached layer's, which only move the
    /// position: a warm build showed GiB/s before).
    #[test]
    fn the_line_says_layers_bytes_rate_and_time() {
        let mut s = State::new(vec![3 << 20, 1 << 20]);
        assert_eq!(
            s.line(false, Duration::ZERO, None, None),
            "layers 0/2 [                    ] 0 B/4.00 MiB 0 B/s 0s"
        );
        s.on_layer_done(0);
        s.on_bytes(1, 512 << 10);
        assert_eq!(
            s.line(false, Duration::from_secs(2), None, None),
            "layers 1/2 [=================>  ] 3.50 MiB/4.00 MiB 256.00 KiB/s 2s"
        );
        s.on_layer_done(1);
        assert_eq!(
            s.line(true, Duration::from_secs(65), None, None),
            "layers 2/2, finishing uploads [====================] 4.00 MiB/4.00 MiB 7.88 KiB/s 1m 05s"
        );
        // A push: the upload figures before the bar.
        assert_eq!(
            s.line(false, Duration::from_secs(1), None, Some("uploaded 1 B/2 B (1 B/s)")),
            "layers 2/2; uploaded 1 B/2 B (1 B/s) [====================] 4.00 MiB/4.00 MiB 512.00 KiB/s 1s"
        );
        // Nothing to write at all: a full bar, never a division by zero.
        assert_eq!(bar(0, 0), format!("[{}]", "=".repeat(BAR)));
        assert_eq!(bar(1, 3), format!("[======>{}]", " ".repeat(13)));
    }

    /// A push started over (a blob the registry had recorded was gone)
    /// writes its layers again: they count from none again, instead of
    /// the bar showing every layer done while the second pass runs.
    #[test]
    fn a_push_started_over_counts_from_none() {
        let p = Progress::with(vec![10, 20], true, true, None);
        p.on_uploads(Arc::default());
        p.on_bytes(0, 10);
        p.on_layer_done(0, &Digest::of(b""));
        p.on_bytes(1, 5);
        p.on_uploads(Arc::default());
        let s = p.shared.state.lock().unwrap().clone();
        assert_eq!((s.position(), s.done, s.total()), (0, 0, 30));
        p.clear();
    }

    #[test]
    fn upload_figures() {
        assert_eq!(
            upload_text(3 << 20, 4 << 20, Duration::from_secs(2)),
            "uploaded 3.00 MiB/4.00 MiB (1.50 MiB/s)"
        );
        // Nothing yet, no time yet, or more sent than queued (a blob sent
        // before it is counted queued): never a division by zero or more
        // than all.
        assert_eq!(
            upload_text(0, 0, Duration::ZERO),
            "uploaded 0 B/0 B (0 B/s)"
        );
        assert_eq!(
            upload_text(10, 5, Duration::from_secs(1)),
            "uploaded 5 B/5 B (10 B/s)"
        );
    }
}
