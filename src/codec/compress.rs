//! Compression on all cores whose bytes never depend on the thread count.
//!
//! - **gzip**: pigz's scheme, written here. The input is cut into fixed
//!   [`GZIP_BLOCK`]-byte blocks; each is deflated on its own (in parallel)
//!   with the previous block's last 32 KiB as preset dictionary and ends
//!   with a sync flush, so the raw deflate pieces concatenate into one
//!   stream; the last piece ends the stream. One gzip member (header, the
//!   pieces, CRC-32 and length), which every gunzip reads. A block's bytes
//!   depend only on its data, its dictionary and the level, never on which
//!   thread compressed it or how many there are. Backend: flate2 on
//!   `zlib-rs` (pinned; a C zlib would give other bytes, which the golden
//!   tests catch).
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

use std::collections::VecDeque;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Crc, FlushCompress, Status};

use super::Compression;

/// zstd's multithreaded job size (see [`Compressor::new`]).
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// Bytes of input per gzip block (pigz's default). Part of the output
/// format: changing it changes every gzip digest.
pub const GZIP_BLOCK: usize = 128 * 1024;

/// deflate's window: the dictionary a block inherits from its predecessor.
const DICT: usize = 32 * 1024;

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
    /// Parallel deterministic gzip.
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
/// Contexts are kept between frames ([`IDLE_ZSTD`]): an OCI image
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

/// A block compressed: its raw deflate bytes and the CRC of its input.
struct Piece {
    deflated: Vec<u8>,
    crc: Crc,
}

struct Job {
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
    reply: SyncSender<io::Result<Piece>>,
}

/// Worker threads deflating blocks; the results come back in submission
/// order through one reply channel per block.
struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, level: u32) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    loop {
                        // A poisoned lock means another worker panicked:
                        // stop, and the writer sees the closed channel.
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let piece = deflate_block(level, &job.dict, &job.data, job.last);
                        let _ = job.reply.send(piece);
                    }
                })
            })
            .collect();
        Self {
            jobs: Some(tx),
            workers,
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        // Closing the channel ends the workers; join them so no thread
        // outlives the writer.
        self.jobs = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// Deflates `data` as one piece of a raw deflate stream: preset
/// dictionary `dict`, ending with a sync flush (or the stream's end when
/// `last`), and the CRC-32 of `data`.
///
/// Each block gets a fresh deflater: a reused one (`Compress::reset`)
/// gave other bytes for the same block depending on which blocks that
/// worker had compressed before (seen with zlib-rs 0.6.8), which would make
/// the output depend on the thread count. A deflater costs a few hundred
/// KiB of allocation per 128 KiB block, small next to deflating it.
fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Piece> {
    let mut c = Compress::new(flate2::Compression::new(level), false);
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let start = c.total_in();
    loop {
        let consumed = usize::try_from(c.total_in() - start).unwrap_or(usize::MAX);
        if out.capacity() - out.len() < 64 {
            out.reserve(out.capacity().max(4096));
        }
        let status = c
            .compress_vec(&data[consumed.min(data.len())..], &mut out, flush)
            .map_err(io::Error::other)?;
        let consumed = usize::try_from(c.total_in() - start).unwrap_or(usize::MAX);
        let done = match status {
            Status::StreamEnd => true,
            // A flush is complete once all input is taken and the output
            // was not filled: zlib's contract for Z_SYNC_FLUSH.
            Status::Ok | Status::BufError => {
                !last && consumed >= data.len() && out.len() < out.capacity()
            }
        };
        if done {
            break;
        }
    }
    let mut crc = Crc::new();
    crc.update(data);
    Ok(Piece { deflated: out, crc })
}

/// gzip on `threads` threads, pigz-style (see the module doc).
pub struct GzipWriter<W: Write> {
    inner: W,
    level: u32,
    block: Vec<u8>,
    /// The last [`DICT`] bytes before `block`.
    dict: Vec<u8>,
    pool: Option<Pool>,
    pending: VecDeque<Receiver<io::Result<Piece>>>,
    max_pending: usize,
    crc: Crc,
    header_written: bool,
}

impl<W: Write> GzipWriter<W> {
    /// Starts a gzip stream into `inner` at `level` (1–9).
    pub fn new(inner: W, level: i32, threads: NonZeroUsize) -> Self {
        let level = u32::try_from(level.clamp(1, 9)).unwrap_or(6);
        let threads = threads.get();
        // One thread deflates inline: no pool, same bytes.
        let pool = (threads > 1).then(|| Pool::new(threads, level));
        Self {
            inner,
            level,
            block: Vec::with_capacity(GZIP_BLOCK),
            dict: Vec::new(),
            pool,
            pending: VecDeque::new(),
            // Enough blocks in flight to keep every worker busy while the
            // oldest is written out; bounded, so memory stays small.
            max_pending: threads * 2,
            crc: Crc::new(),
            header_written: false,
        }
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// The inner writer, mutably.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            // No name, no mtime (like `pigz -n -T`), XFL by level as gzip
            // sets it, OS = Unix.
            let xfl = match self.level {
                9 => 2,
                1 => 4,
                _ => 0,
            };
            self.inner
                .write_all(&[0x1f, 0x8b, 8, 0, 0, 0, 0, 0, xfl, 3])?;
            self.header_written = true;
        }
        Ok(())
    }

    fn put_piece(&mut self, piece: Piece) -> io::Result<()> {
        self.write_header()?;
        self.inner.write_all(&piece.deflated)?;
        self.crc.combine(&piece.crc);
        Ok(())
    }

    fn wait_oldest(&mut self) -> io::Result<()> {
        if let Some(rx) = self.pending.pop_front() {
            let piece = rx
                .recv()
                .map_err(|_| io::Error::other("a gzip worker thread stopped"))??;
            self.put_piece(piece)?;
        }
        Ok(())
    }

    /// Hands the current block to a worker (or deflates it inline).
    fn submit(&mut self, last: bool) -> io::Result<()> {
        let data = std::mem::replace(&mut self.block, Vec::with_capacity(GZIP_BLOCK));
        let dict = std::mem::take(&mut self.dict);
        // The next block's dictionary: the end of this block, preceded by
        // the end of the previous dictionary when this block is short.
        let mut next = Vec::with_capacity(DICT);
        if data.len() < DICT {
            let keep = (DICT - data.len()).min(dict.len());
            next.extend_from_slice(&dict[dict.len() - keep..]);
        }
        next.extend_from_slice(&data[data.len().saturating_sub(DICT)..]);
        self.dict = next;
        if self.pool.is_none() {
            let piece = deflate_block(self.level, &dict, &data, last)?;
            return self.put_piece(piece);
        }
        while self.pending.len() >= self.max_pending {
            self.wait_oldest()?;
        }
        let (reply, rx) = mpsc::sync_channel(1);
        let sent = self
            .pool
            .as_ref()
            .and_then(|p| p.jobs.as_ref())
            .is_some_and(|jobs| {
                jobs.send(Job {
                    data,
                    dict,
                    last,
                    reply,
                })
                .is_ok()
            });
        if !sent {
            return Err(io::Error::other("the gzip worker threads stopped"));
        }
        self.pending.push_back(rx);
        Ok(())
    }

    /// Compresses what is left, writes the trailer and returns the inner
    /// writer.
    ///
    /// # Errors
    /// When compressing or writing fails.
    pub fn finish(mut self) -> io::Result<W> {
        // The final piece carries the end-of-stream marker, whether or not
        // data is left: the bytes depend only on the input's length.
        self.submit(true)?;
        while !self.pending.is_empty() {
            self.wait_oldest()?;
        }
        self.write_header()?;
        let mut trailer = [0u8; 8];
        trailer[..4].copy_from_slice(&self.crc.sum().to_le_bytes());
        trailer[4..].copy_from_slice(&self.crc.amount().to_le_bytes());
        self.inner.write_all(&trailer)?;
        self.inner.flush()?;
        self.pool = None;
        Ok(self.inner)
    }
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = GZIP_BLOCK - self.block.len();
        let n = room.min(buf.len());
        self.block.extend_from_slice(&buf[..n]);
        if self.block.len() == GZIP_BLOCK {
            self.submit(false)?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

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

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn gzip_bytes_do_not_depend_on_threads_and_round_trip() {
        let data = sample();
        let one = compress(&data, Compression::Gzip, 6, 1);
        for threads in [2, 3, 4, 8] {
            let other = compress(&data, Compression::Gzip, 6, threads);
            assert!(
                one == other,
                "{threads} threads: {} vs {} bytes",
                one.len(),
                other.len()
            );
        }
        assert_eq!(gunzip(&one), data);
        assert!(one.len() < data.len() / 2);
    }

    #[test]
    fn gzip_of_empty_and_exact_block_multiples() {
        for len in [0, 1, DICT, GZIP_BLOCK, 2 * GZIP_BLOCK, 2 * GZIP_BLOCK + 1] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let a = compress(&data, Compression::Gzip, 6, 1);
            assert!(a == compress(&data, Compression::Gzip, 6, 4), "{len}");
            assert_eq!(gunzip(&a), data, "{len}");
        }
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

    /// Golden digests: a backend flip (flate2 picking a C zlib through
    /// feature unification, a zstd upgrade) or a change of block size
    /// changes every blob digest users have; this catches it.
    #[test]
    fn compressed_bytes_are_pinned() {
        let data = sample();
        assert_eq!(
            Digest::of(&data).hex(),
            "1cfa2b0a0a35232ac7279a63b9557bb72d99253883d78d094dea5f4a9a86ef85"
        );
        assert_eq!(
            Digest::of(&compress(&data, Compression::Gzip, 6, 2)).hex(),
            "ea0e310ac5c74e757215ebd55589040f0b5af7de0f1dce2a8f40a78d2479eb9e"
        );
        assert_eq!(
            Digest::of(&compress(&data, Compression::Gzip, 9, 2)).hex(),
            "a00724ccb7f0f47fa9b70a6f2f20cf50a9ea8a344d73d49c43f4598d42e487bb"
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
