//! Compression on all cores whose bytes never depend on the thread count.
//!
//! - **gzip**: a series of gzip members compressed by libdeflate in
//!   parallel, one per fixed-size piece of the input: see [`super::gzip`].
//! - **zstd**: libzstd's own multithreading, always with at least one
//!   worker: its single-threaded mode (0 workers) writes other bytes than
//!   its multithreaded mode, whose output is the same for 1 or N workers
//!   (zstd's maintainers in facebook/zstd#2238). The one exception
//!   (facebook/zstd#2327: a stream whose *first* call is `ZSTD_e_end`
//!   with a large output buffer is cut into a worker-dependent number of
//!   jobs) never applies here: input only ever arrives through `write`
//!   (`ZSTD_e_continue`) before `finish`, and no layer or archive is empty.
//!   An OCI build relies on it: a small layer written beside another gets
//!   one worker, a large one all of them.
//!
//! [`Compressor`] wraps any [`Write`] and is finished by consuming it.

use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::sync::Mutex;

use super::gzip::GzipWriter;
use super::Compression;

/// zstd's multithreaded job size (see [`Compressor::new`]).
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// How to compress: algorithm, level and worker threads. The threads never
/// change the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompressOptions {
    /// The algorithm.
    pub codec: Compression,
    /// Its level, within [`Compression::levels`].
    pub level: i32,
    /// Worker threads.
    pub threads: NonZeroUsize,
}

impl CompressOptions {
    /// No compression.
    pub const NONE: Self = Self {
        codec: Compression::None,
        level: 0,
        threads: NonZeroUsize::MIN,
    };

    /// `codec` at its default level on `threads` threads.
    #[must_use]
    pub fn new(codec: Compression, threads: NonZeroUsize) -> Self {
        Self {
            codec,
            level: codec.default_level(),
            threads,
        }
    }
}

/// A writer compressing into `W`.
pub enum Compressor<W: Write> {
    /// Passes bytes through.
    None(W),
    /// Parallel deterministic gzip (see [`super::gzip`]).
    Gzip(GzipWriter<W>),
    /// zstd, multithreaded with ≥ 1 worker.
    Zstd(ZstdWriter<W>),
}

impl<W: Write> Compressor<W> {
    /// Starts compressing into `inner`.
    ///
    /// # Errors
    /// When the compression is not one this crate writes (xz), the level
    /// is out of range, or the zstd context cannot be set up.
    pub fn new(inner: W, options: &CompressOptions) -> io::Result<Self> {
        if !options.codec.is_writable() {
            return Err(not_written(options.codec));
        }
        if !options.codec.levels().contains(&options.level) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} level {} is out of range",
                    options.codec.name(),
                    options.level
                ),
            ));
        }
        Ok(match options.codec {
            Compression::None => Self::None(inner),
            Compression::Gzip => Self::Gzip(GzipWriter::new(inner, options.level, options.threads)),
            Compression::Zstd => Self::Zstd(ZstdWriter::new(inner, options)?),
            Compression::Xz => return Err(not_written(options.codec)),
        })
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        match self {
            Self::None(w) => w,
            Self::Gzip(g) => g.get_ref(),
            Self::Zstd(z) => z.get_ref(),
        }
    }

    /// The inner writer, mutably; bytes written to it bypass the compressor.
    pub fn get_mut(&mut self) -> &mut W {
        match self {
            Self::None(w) => w,
            Self::Gzip(g) => g.get_mut(),
            Self::Zstd(z) => z.get_mut(),
        }
    }

    /// Ends the compressed stream, flushes, and returns the inner writer.
    ///
    /// # Errors
    /// When compressing or writing fails.
    pub fn finish(self) -> io::Result<W> {
        let mut inner = match self {
            Self::None(w) => w,
            Self::Gzip(g) => g.finish()?,
            Self::Zstd(z) => z.finish()?,
        };
        inner.flush()?;
        Ok(inner)
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::None(w) => w.write(buf),
            Self::Gzip(g) => g.write(buf),
            Self::Zstd(z) => z.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        // Only the inner writer: flushing a compressor mid-stream would add
        // bytes that depend on when the caller flushed.
        self.get_mut().flush()
    }
}

fn not_written(codec: Compression) -> io::Error {
    io::Error::new(
        io::ErrorKind::Unsupported,
        format!("{} is read, never written", codec.name()),
    )
}

/// A zstd frame being written: libzstd's multithreaded streaming
/// context (through the `zstd` crate's writer) into `W`.
///
/// Contexts are kept between frames (a small pool of idle contexts): an OCI image
/// compresses each of its ~100 layers as a frame of its own, and a fresh
/// multithreaded context per layer would start its worker threads and
/// allocate (and fault in) its buffers and match tables every time. A
/// context's output depends only on its parameters and the frame's input,
/// never on the frames it compressed before (libzstd's contract; the tests
/// pin it), so reuse changes no byte.
pub struct ZstdWriter<W: Write> {
    stream: zstd::stream::zio::Writer<W, ZstdEncoder>,
    setup: ZstdSetup,
}

type ZstdEncoder = zstd::stream::raw::Encoder<'static>;

/// What zstd's bytes depend on besides the input and the level: the job
/// size and libzstd's version (pinned by the bundled `zstd-sys`, but a
/// new one may cut blocks differently). The layer cache files zstd digests
/// under it, as under [`super::GZIP_FORMAT`] for gzip.
#[must_use]
pub fn zstd_format() -> String {
    format!(
        "zstd-jobs-{}MiB-libzstd-{}",
        ZSTD_JOB_SIZE >> 20,
        zstd::zstd_safe::version_string()
    )
}

/// Input bytes per zstd compression job: an input no longer than this is
/// compressed by one worker however many there are.
pub const ZSTD_JOB: u64 = ZSTD_JOB_SIZE as u64;

/// What a zstd context is set up for: level and workers.
#[derive(Clone, Copy, PartialEq, Eq)]
struct ZstdSetup {
    level: i32,
    workers: u32,
}

/// Idle zstd contexts, the most recently used last. Each holds its worker
/// threads (asleep) and its buffers. An OCI build uses at most one
/// multithreaded context and two single-worker ones at a time (see
/// `ops::write`), so three are kept.
static IDLE_ZSTD: Mutex<Vec<(ZstdSetup, ZstdEncoder)>> = Mutex::new(Vec::new());
const MAX_IDLE_ZSTD: usize = 3;

/// Bytes libzstd hands back per call: a few calls per compression job.
const ZSTD_OUT_BUFFER: usize = 256 * 1024;

impl ZstdSetup {
    /// A new context: checksummed frames, multithreaded, pinned job size.
    fn encoder(self) -> io::Result<ZstdEncoder> {
        use zstd::stream::raw::CParameter;
        let mut enc = ZstdEncoder::new(self.level)?;
        enc.set_parameter(CParameter::ChecksumFlag(true))?;
        // Never 0: see the module doc.
        enc.set_parameter(CParameter::NbWorkers(self.workers))?;
        // Pinned, as it changes the bytes. libzstd's default (4 × the
        // window, 8 MiB at level 3) measured slower here with two workers
        // and 80+ MiB resident; 2 MiB jobs kept both cores busy at ~35 MiB
        // for 0.3 % more output.
        enc.set_parameter(CParameter::JobSize(ZSTD_JOB_SIZE))?;
        Ok(enc)
    }

    /// An idle context set up like this one, else a new one.
    fn take(self) -> io::Result<ZstdEncoder> {
        let idle = IDLE_ZSTD.lock().ok().and_then(|mut idle| {
            let at = idle.iter().rposition(|(setup, _)| *setup == self)?;
            Some(idle.remove(at).1)
        });
        match idle {
            Some(mut enc) => {
                // A finished frame leaves the context ready for the next;
                // resetting the session makes sure, keeping parameters.
                zstd::stream::raw::Operation::reinit(&mut enc)?;
                Ok(enc)
            }
            None => self.encoder(),
        }
    }

    /// Keeps `enc`, whose last frame was finished, for the next frame.
    fn give_back(self, enc: ZstdEncoder) {
        if let Ok(mut idle) = IDLE_ZSTD.lock() {
            idle.push((self, enc));
            if idle.len() > MAX_IDLE_ZSTD {
                idle.remove(0);
            }
        }
    }
}

impl<W: Write> ZstdWriter<W> {
    fn new(inner: W, options: &CompressOptions) -> io::Result<Self> {
        let setup = ZstdSetup {
            level: options.level,
            workers: u32::try_from(options.threads.get()).unwrap_or(u32::MAX),
        };
        Ok(Self {
            stream: zstd::stream::zio::Writer::new_with_capacity(
                inner,
                setup.take()?,
                ZSTD_OUT_BUFFER,
            ),
            setup,
        })
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        self.stream.writer()
    }

    /// The inner writer, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        self.stream.writer_mut()
    }

    /// Ends the frame and returns the inner writer; the context is kept
    /// for the next frame. A writer dropped unfinished drops its context.
    ///
    /// # Errors
    /// When compressing or writing fails.
    pub fn finish(mut self) -> io::Result<W> {
        self.stream.finish()?;
        let (inner, enc) = self.stream.into_inner();
        self.setup.give_back(enc);
        Ok(inner)
    }
}

impl<W: Write> Write for ZstdWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.stream.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.stream.writer_mut().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Digest;

    /// 1.5 MiB of compressible but not trivial bytes: enough for a dozen
    /// gzip blocks and several zstd jobs.
    fn sample() -> Vec<u8> {
        let mut out = Vec::with_capacity(1_600_000);
        let mut x: u32 = 12345;
        let mut i = 0u64;
        while out.len() < 1_572_864 + 777 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let word =
                ["nix", "store", "layer", "/bin/", "hello", "\n", "0"][(x >> 16) as usize % 7];
            out.extend_from_slice(word.as_bytes());
            if x.is_multiple_of(5) {
                out.extend_from_slice(i.to_string().as_bytes());
            }
            i += 1;
        }
        out
    }

    fn compress(data: &[u8], codec: Compression, level: i32, threads: usize) -> Vec<u8> {
        let options = CompressOptions {
            codec,
            level,
            threads: NonZeroUsize::new(threads).unwrap(),
        };
        let mut c = Compressor::new(Vec::new(), &options).unwrap();
        // Odd-sized writes: block boundaries must not depend on them.
        for chunk in data.chunks(7001) {
            c.write_all(chunk).unwrap();
        }
        c.finish().unwrap()
    }

    /// Less than one job, as most layers are: one worker or several, the
    /// same bytes.
    #[test]
    fn a_small_zstd_input_does_not_depend_on_threads() {
        let data = &sample()[..100_000];
        let one = compress(data, Compression::Zstd, 3, 1);
        assert!(one == compress(data, Compression::Zstd, 3, 2));
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }

    #[test]
    fn zstd_bytes_do_not_depend_on_threads_and_round_trip() {
        let data = sample();
        let one = compress(&data, Compression::Zstd, 3, 1);
        assert!(one == compress(&data, Compression::Zstd, 3, 4));
        assert_eq!(zstd::decode_all(&one[..]).unwrap(), data);
    }

    /// Golden digests: a backend change (a libdeflate or zstd upgrade) or
    /// a change of gzip member size changes every blob digest users have;
    /// this catches it. A gzip change must change `GZIP_FORMAT` too.
    #[test]
    fn compressed_bytes_are_pinned() {
        let data = sample();
        assert_eq!(
            Digest::of(&data).hex(),
            "1cfa2b0a0a35232ac7279a63b9557bb72d99253883d78d094dea5f4a9a86ef85"
        );
        assert_eq!(
            Digest::of(&compress(&data, Compression::Gzip, 6, 2)).hex(),
            "0ced08536783d44778f419531a961a77ed2b2971e95358e3d76bf13b9782e4a3"
        );
        assert_eq!(
            Digest::of(&compress(&data, Compression::Gzip, 9, 2)).hex(),
            "48c42ffa55c2c4cd4f8017fe38c1a528d07252b738d0253c6846a8752d04f2aa"
        );
        assert_eq!(
            Digest::of(&compress(&data, Compression::Zstd, 3, 2)).hex(),
            "141e94b1af0cf0024a39426889a6bb3919a67da8002b2e93ea55dc3518695d07"
        );
        assert_eq!(
            Digest::of(&compress(&data, Compression::Zstd, 19, 2)).hex(),
            "d30c5103d877c489bb975e5867363e2e3fa08f3da8b4c2a9797047170df032b2"
        );
    }

    /// Large enough for several zstd jobs, so the pinned job size shows.
    #[test]
    fn zstd_job_size_is_pinned() {
        let data: Vec<u8> = sample().repeat(4);
        let bytes = compress(&data, Compression::Zstd, 3, 2);
        assert_eq!(zstd::decode_all(&bytes[..]).unwrap(), data);
        assert_eq!(
            Digest::of(&bytes).hex(),
            "aa75a6fbb23705ba40c619a67a1143699314c0943cd39c37c1cb7ca3f32c7eb4"
        );
    }

    /// A context reused for a new frame writes the bytes a fresh one
    /// writes: what lets OCI builds keep contexts from layer to layer.
    #[test]
    fn a_reused_zstd_context_writes_what_a_fresh_one_writes() {
        let data = sample().repeat(2);
        let frame = |enc: ZstdEncoder, data: &[u8]| {
            let mut w = zstd::stream::zio::Writer::new(Vec::new(), enc);
            for chunk in data.chunks(100_003) {
                w.write_all(chunk).unwrap();
            }
            w.finish().unwrap();
            let (bytes, mut enc) = w.into_inner();
            zstd::stream::raw::Operation::reinit(&mut enc).unwrap();
            (bytes, enc)
        };
        for workers in [1, 2] {
            let setup = ZstdSetup { level: 3, workers };
            let (fresh, _) = frame(setup.encoder().unwrap(), &data);
            // Used before for other input, a large frame and a small one.
            let (_, used) = frame(setup.encoder().unwrap(), &data[1000..]);
            let (_, used) = frame(used, &data[..5000]);
            let (again, _) = frame(used, &data);
            assert!(fresh == again, "{workers} workers");
            // And through the pool, as every Compressor takes them.
            assert!(fresh == compress(&data, Compression::Zstd, 3, workers as usize));
            assert!(fresh == compress(&data, Compression::Zstd, 3, workers as usize));
        }
    }

    /// A finished frame hands its context to the next compressor of the
    /// same setup instead of freeing it (a level no other test uses, so
    /// that concurrent tests do not take it).
    #[test]
    fn a_finished_zstd_frame_leaves_its_context_for_the_next() {
        let setup = ZstdSetup {
            level: 11,
            workers: 3,
        };
        let idle = || {
            IDLE_ZSTD
                .lock()
                .unwrap()
                .iter()
                .filter(|(s, _)| *s == setup)
                .count()
        };
        let options = CompressOptions {
            codec: Compression::Zstd,
            level: 11,
            threads: NonZeroUsize::new(3).unwrap(),
        };
        // Other tests may push the context out of the pool (never put one
        // of this setup in): one of a few tries sees it kept.
        let kept = (0..5).any(|_| {
            let mut c = Compressor::new(Vec::new(), &options).unwrap();
            c.write_all(b"first frame").unwrap();
            assert_eq!(idle(), 0, "taken from the pool, or new");
            let bytes = c.finish().unwrap();
            assert_eq!(zstd::decode_all(&bytes[..]).unwrap(), b"first frame");
            idle() == 1
        });
        assert!(kept);
    }

    #[test]
    fn none_passes_bytes_through_and_levels_are_checked() {
        assert_eq!(compress(b"abc", Compression::None, 0, 3), b"abc");
        let bad = CompressOptions {
            codec: Compression::Gzip,
            level: 10,
            threads: NonZeroUsize::MIN,
        };
        assert!(Compressor::new(Vec::new(), &bad).is_err());
        let xz = CompressOptions {
            codec: Compression::Xz,
            level: 0,
            threads: NonZeroUsize::MIN,
        };
        assert!(Compressor::new(Vec::new(), &xz).is_err());
    }
}
