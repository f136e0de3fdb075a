//! gzip on all cores whose bytes never depend on the thread count: a
//! series of gzip members (RFC 1952 §2.2: "a gzip file consists of a
//! series of members"), one per [`GZIP_MEMBER`] bytes of input, each
//! compressed on its own by libdeflate.
//!
//! Why members and libdeflate: libdeflate deflates about 1.4 × faster
//! than zlib-rs at the same level for a slightly smaller output (measured
//! on a 267 MB tar of store paths, level 6: 2.9 s CPU for 97.2 MB against
//! zlib-rs' 4.1 s for 99.7 MB in pigz's 128 KiB blocks with preset
//! dictionaries). It compresses a whole buffer at once, with no streaming
//! and no preset dictionary, so a stream is cut into pieces and each piece
//! becomes a whole member; at 1 MiB a piece loses little to the lost
//! window (4 MiB pieces saved 0.12 % of the output and held four times the
//! memory per piece in flight). Every gunzip, Go's `compress/gzip` (docker,
//! containerd, podman, skopeo, crane), pigz, Python's `gzip` and flate2's
//! `MultiGzDecoder` read all the members; a reader that stops after the
//! first (flate2's `GzDecoder` alone) sees only the first MiB.
//!
//! A member's bytes depend only on its input and the level: the cut
//! points are fixed offsets of the input (not where the caller's writes
//! happen to end), libdeflate keeps no state from one buffer to the next,
//! and the members are written in input order. The header is libdeflate's:
//! no name, mtime 0, XFL by level, OS 255 (unknown).
//!
//! The scheduling is written here (a bounded queue of pieces on a few
//! worker threads, written out in order as they finish) because no crate
//! does this job: `gzp` compresses plain gzip through flate2 (zlib's
//! speed), its libdeflate formats (BGZF, Mgzip) add an extra header field
//! to every member and BGZF caps members at 64 KiB, and its parallel
//! writer takes the destination onto a thread of its own (`Send +
//! 'static`), which a borrowed destination (a hasher over a spool file)
//! is not. The compression itself is libdeflate's.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Bytes of input per gzip member (the last may be shorter). Part of the
/// output format: changing it changes every gzip digest, and
/// [`GZIP_FORMAT`] with it.
pub const GZIP_MEMBER: usize = 1 << 20;

/// What the gzip bytes depend on besides the input and the level: the
/// compressor, its version and the member size. The layer cache files
/// compressed digests under it (with the level), so a digest written by
/// another gzip format is never taken for this one's. Change it whenever
/// the golden gzip digests (`compress::tests::compressed_bytes_are_pinned`)
/// change.
pub const GZIP_FORMAT: &str = "gzip-members-1MiB-libdeflate-1.26";

/// A piece compressed: its input buffer back for reuse, and the member.
struct Done {
    data: Vec<u8>,
    member: Vec<u8>,
}

struct Job {
    data: Vec<u8>,
    reply: SyncSender<io::Result<Done>>,
}

/// Worker threads compressing pieces, each with its own libdeflate
/// compressor; the results come back in submission order through one
/// reply channel per piece.
struct Pool {
    jobs: Option<mpsc::Sender<Job>>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    fn new(threads: usize, level: libdeflater::CompressionLvl) -> Self {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..threads)
            .map(|_| {
                let rx = Arc::clone(&rx);
                std::thread::spawn(move || {
                    let mut compressor = libdeflater::Compressor::new(level);
                    // libdeflate's room for a full piece, once per worker;
                    // a member leaves in a buffer of its own size.
                    let mut out = vec![0; compressor.gzip_compress_bound(GZIP_MEMBER)];
                    loop {
                        // A poisoned lock means another worker panicked:
                        // stop, and the writer sees the closed channel.
                        let job = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => return,
                        };
                        let Ok(job) = job else { return };
                        let done = compress_member(&mut compressor, job.data, &mut out);
                        // One message on a channel of one: never blocks.
                        let _ = job.reply.send(done);
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

/// Compresses `data` as one whole gzip member, in `out` (at least the
/// gzip bound of [`GZIP_MEMBER`] bytes long) and then a buffer of the
/// member's own size: members waiting to be written hold no more memory
/// than their bytes.
fn compress_member(
    compressor: &mut libdeflater::Compressor,
    data: Vec<u8>,
    out: &mut [u8],
) -> io::Result<Done> {
    let len = compressor
        .gzip_compress(&data, out)
        .map_err(|e| io::Error::other(format!("gzip: {e:?}")))?;
    Ok(Done {
        data,
        member: out[..len].to_vec(),
    })
}

/// gzip on `threads` threads as a series of members (see the module doc).
pub struct GzipWriter<W: Write> {
    inner: W,
    /// The input of the member being filled, up to [`GZIP_MEMBER`] bytes.
    piece: Vec<u8>,
    /// Inline compression when one thread is allowed (no pool, same
    /// bytes), with its output buffer.
    inline: Option<(libdeflater::Compressor, Vec<u8>)>,
    pool: Option<Pool>,
    pending: VecDeque<Receiver<io::Result<Done>>>,
    max_pending: usize,
    /// Input buffers of pieces written out, for the next pieces.
    spare: Vec<Vec<u8>>,
    /// Members handed on so far: an empty input still gets one.
    members: u64,
}

impl<W: Write> GzipWriter<W> {
    /// Starts a gzip stream into `inner` at `level` (1–9, libdeflate's
    /// levels of the same number).
    pub fn new(inner: W, level: i32, threads: NonZeroUsize) -> Self {
        let level = libdeflater::CompressionLvl::new(level.clamp(1, 9))
            .unwrap_or_else(|_| libdeflater::CompressionLvl::default());
        let threads = threads.get();
        let pool = (threads > 1).then(|| Pool::new(threads, level));
        let inline = pool.is_none().then(|| {
            let mut compressor = libdeflater::Compressor::new(level);
            let out = vec![0; compressor.gzip_compress_bound(GZIP_MEMBER)];
            (compressor, out)
        });
        Self {
            inner,
            piece: Vec::with_capacity(GZIP_MEMBER),
            inline,
            pool,
            pending: VecDeque::new(),
            // Every worker busy and one piece waiting for the first free
            // one, while the next is filled; bounded, so memory stays
            // small (two threads: about 6 MiB of input and output).
            max_pending: threads + 1,
            spare: Vec::new(),
            members: 0,
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

    /// Writes a member out and keeps its input buffer.
    fn put(&mut self, done: Done) -> io::Result<()> {
        let Done { mut data, member } = done;
        self.inner.write_all(&member)?;
        data.clear();
        self.spare.push(data);
        Ok(())
    }

    fn receive(rx: &Receiver<io::Result<Done>>) -> io::Result<Done> {
        rx.recv()
            .map_err(|_| io::Error::other("a gzip worker thread stopped"))?
    }

    /// Writes out, in order, the members already compressed, without
    /// waiting: the destination gets each member as soon as the ones
    /// before it are out.
    fn put_ready(&mut self) -> io::Result<()> {
        while let Some(rx) = self.pending.front() {
            let done = match rx.try_recv() {
                Ok(done) => done?,
                Err(TryRecvError::Empty) => return Ok(()),
                Err(TryRecvError::Disconnected) => {
                    return Err(io::Error::other("a gzip worker thread stopped"))
                }
            };
            self.pending.pop_front();
            self.put(done)?;
        }
        Ok(())
    }

    /// Hands the current piece to a worker (or compresses it inline).
    fn submit(&mut self) -> io::Result<()> {
        self.members += 1;
        if let Some((compressor, out)) = &mut self.inline {
            // Compressed straight from the piece, which is then refilled.
            let len = compressor
                .gzip_compress(&self.piece, out)
                .map_err(|e| io::Error::other(format!("gzip: {e:?}")))?;
            self.inner.write_all(&out[..len])?;
            self.piece.clear();
            return Ok(());
        }
        let next = self
            .spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(GZIP_MEMBER));
        let data = std::mem::replace(&mut self.piece, next);
        while self.pending.len() >= self.max_pending {
            if let Some(rx) = self.pending.pop_front() {
                let done = Self::receive(&rx)?;
                self.put(done)?;
            }
        }
        let (reply, rx) = mpsc::sync_channel(1);
        let sent = self
            .pool
            .as_ref()
            .and_then(|p| p.jobs.as_ref())
            .is_some_and(|jobs| jobs.send(Job { data, reply }).is_ok());
        if !sent {
            return Err(io::Error::other("the gzip worker threads stopped"));
        }
        self.pending.push_back(rx);
        self.put_ready()
    }

    /// Compresses what is left, writes every member out and returns the
    /// inner writer.
    ///
    /// # Errors
    /// When compressing or writing fails.
    pub fn finish(mut self) -> io::Result<W> {
        // A last short piece, or the one member of an empty input (gzip
        // has no empty stream).
        if !self.piece.is_empty() || self.members == 0 {
            self.submit()?;
        }
        while let Some(rx) = self.pending.pop_front() {
            let done = Self::receive(&rx)?;
            self.put(done)?;
        }
        self.inner.flush()?;
        self.pool = None;
        Ok(self.inner)
    }
}

impl<W: Write> Write for GzipWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = GZIP_MEMBER - self.piece.len();
        let n = room.min(buf.len());
        self.piece.extend_from_slice(&buf[..n]);
        if self.piece.len() == GZIP_MEMBER {
            self.submit()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Only the inner writer: cutting a member here would make the
        // bytes depend on when the caller flushed.
        self.inner.flush()
    }
}

/// Counts the gzip members of `bytes` (a whole stream) by decoding them
/// one at a time: for tests that check how a stream was cut.
///
/// # Errors
/// When a member does not decode.
#[cfg(test)]
pub(crate) fn count_members(mut bytes: &[u8]) -> io::Result<usize> {
    let mut count = 0;
    while !bytes.is_empty() {
        // `GzDecoder` stops at the end of one member and leaves the rest.
        let mut one = flate2::bufread::GzDecoder::new(bytes);
        io::copy(&mut one, &mut io::sink())?;
        let rest = one.into_inner();
        if rest.len() == bytes.len() {
            return Err(io::Error::other("a member consumed nothing"));
        }
        bytes = rest;
        count += 1;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    /// 2.5 MiB + a bit of compressible but not trivial bytes: three members.
    fn sample() -> Vec<u8> {
        let mut out = Vec::with_capacity(2_700_000);
        let mut x: u32 = 54321;
        let mut i = 0u64;
        while out.len() < GZIP_MEMBER * 5 / 2 + 999 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
            let word =
                ["nix", "store", "layer", "/lib/", "gzip", "\n", "1"][(x >> 16) as usize % 7];
            out.extend_from_slice(word.as_bytes());
            if x.is_multiple_of(3) {
                out.extend_from_slice(i.to_string().as_bytes());
            }
            i += 1;
        }
        out
    }

    fn gzip(data: &[u8], level: i32, threads: usize, chunk: usize) -> Vec<u8> {
        let mut w = GzipWriter::new(Vec::new(), level, NonZeroUsize::new(threads).unwrap());
        // Odd-sized writes: member boundaries must not depend on them.
        for c in data.chunks(chunk) {
            w.write_all(c).unwrap();
        }
        w.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    #[test]
    fn bytes_do_not_depend_on_threads_or_writes_and_round_trip() {
        let data = sample();
        let one = gzip(&data, 6, 1, 7001);
        for (threads, chunk) in [(2, 7001), (3, 1 << 20), (4, 65536), (8, 3)] {
            let other = gzip(&data, 6, threads, chunk);
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
    fn one_member_per_piece_and_one_for_nothing() {
        for (len, members) in [
            (0, 1),
            (1, 1),
            (GZIP_MEMBER - 1, 1),
            (GZIP_MEMBER, 1),
            (GZIP_MEMBER + 1, 2),
            (3 * GZIP_MEMBER, 3),
            (3 * GZIP_MEMBER + 5, 4),
        ] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let a = gzip(&data, 6, 1, 100_000);
            assert!(a == gzip(&data, 6, 4, 100_000), "{len}");
            assert_eq!(count_members(&a).unwrap(), members, "{len}");
            assert_eq!(gunzip(&a), data, "{len}");
        }
    }

    /// Every level round-trips, and the levels differ.
    #[test]
    fn levels_one_to_nine() {
        let data = &sample()[..300_000];
        let sizes: Vec<usize> = (1..=9).map(|l| gzip(data, l, 2, 4096).len()).collect();
        for level in 1..=9 {
            assert_eq!(gunzip(&gzip(data, level, 2, 4096)), data, "level {level}");
        }
        assert!(sizes[8] < sizes[0], "{sizes:?}");
    }

    /// An error from the destination surfaces, with the pool running.
    #[test]
    fn a_failing_destination_is_an_error() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("disk full"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let data = sample();
        let mut w = GzipWriter::new(Full, 6, NonZeroUsize::new(2).unwrap());
        let written = w.write_all(&data);
        assert!(written.is_err() || w.finish().is_err());
    }
}
