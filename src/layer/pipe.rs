//! Overlaps producing a layer's bytes, hashing them and writing them out.
//!
//! Reading the store, hashing its bytes and pushing them into a pipe or a
//! file each take about as long; done on one thread they add up. The layer
//! writer fills fixed-size chunks on the calling thread, a scoped thread
//! hashes them (the diff_id) and another writes them to the output, in
//! order. A few chunks circulate between the three, so memory stays bounded
//! and the output bytes are exactly those of a single-threaded write.

use std::io::{self, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

use sha2::{Digest as _, Sha256};

use crate::oci::Digest;

/// Bytes per chunk: large enough that a write costs few syscalls.
const CHUNK: usize = 1 << 20;
/// Full chunks that may wait for the hasher, and hashed ones for the writer.
const DEPTH: usize = 3;
/// Chunks one pipeline may have out at once; past that the producer waits
/// for the writer to hand one back, which bounds memory.
const IN_FLIGHT: usize = 2 * DEPTH + 2;

/// Chunks all pipelines together may have out before each is held to
/// [`OWN`]: one pipeline alone gets its [`IN_FLIGHT`], but two at once
/// (layers compressed side by side, whose compressor is the slower stage
/// and would only have full chunks waiting for it) share a few less.
const SHARED: usize = IN_FLIGHT + 2;
/// Chunks a pipeline may always take, whatever the others hold.
const OWN: usize = DEPTH;
/// Chunks taken by the pipelines running now.
static OUT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Chunks kept between layers. A fresh 1 MiB buffer is a fresh mapping
/// whose every page faults on first touch; a layer after another reuses
/// the buffers instead (an image has up to ~100 layers). A pooled buffer
/// may hold an earlier layer's bytes, but only the part a producer filled
/// since taking it is ever sent, so it cannot affect any output.
static POOL: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// `chunk` at its full length, ready to be filled: a buffer is zeroed once
/// when new, and after a short last chunk only its tail is.
fn full_length(mut chunk: Vec<u8>) -> Vec<u8> {
    if chunk.len() < CHUNK {
        chunk.resize(CHUNK, 0);
    }
    chunk
}

fn take_chunk() -> Vec<u8> {
    full_length(
        POOL.lock()
            .ok()
            .and_then(|mut pool| pool.pop())
            .unwrap_or_else(|| Vec::with_capacity(CHUNK)),
    )
}

fn give_chunk(chunk: Vec<u8>) {
    if let Ok(mut pool) = POOL.lock() {
        if pool.len() < IN_FLIGHT {
            pool.push(chunk);
        }
    }
}

/// The producing side: a `Write` that hands full chunks to the writer
/// thread, and can read a file straight into its chunk
/// ([`super::ReadInto`]).
pub(crate) struct ChunkSender {
    /// Always [`CHUNK`] bytes long; the first `filled` are the data.
    chunk: Vec<u8>,
    filled: usize,
    full: SyncSender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
    /// Chunks taken for this pipeline so far (at most [`IN_FLIGHT`]).
    taken: usize,
}

fn writer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the output writer stopped")
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        let next = match self.free.try_recv() {
            Ok(chunk) => chunk,
            Err(_)
                if self.taken < IN_FLIGHT
                    && (self.taken < OWN || OUT.load(Ordering::Relaxed) < SHARED) =>
            {
                self.taken += 1;
                OUT.fetch_add(1, Ordering::Relaxed);
                take_chunk()
            }
            // Enough chunks out: wait for the writer to return one.
            Err(_) => self.free.recv().map_err(|_| writer_gone())?,
        };
        let mut full = std::mem::replace(&mut self.chunk, full_length(next));
        full.truncate(self.filled);
        self.filled = 0;
        self.full.send(full).map_err(|_| writer_gone())
    }
}

impl Drop for ChunkSender {
    /// Returns its buffers to the pool (a memory cache, nothing to flush).
    fn drop(&mut self) {
        OUT.fetch_sub(self.taken, Ordering::Relaxed);
        give_chunk(std::mem::take(&mut self.chunk));
        for chunk in self.free.try_iter() {
            give_chunk(chunk);
        }
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = buf.len().min(CHUNK - self.filled);
        self.chunk[self.filled..self.filled + n].copy_from_slice(&buf[..n]);
        self.filled += n;
        if self.filled == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.filled > 0 {
            self.send()?;
        }
        Ok(())
    }
}

impl super::ReadInto for ChunkSender {
    /// Reads into the chunk itself: the file's bytes are copied once, from
    /// the page cache into the chunk the writer thread writes out.
    fn read_into(
        &mut self,
        file: &mut dyn io::Read,
        max: usize,
        _scratch: &mut [u8],
    ) -> io::Result<io::Result<usize>> {
        let max = max.min(CHUNK - self.filled);
        match file.read(&mut self.chunk[self.filled..self.filled + max]) {
            Ok(n) => {
                self.filled += n;
                if self.filled == CHUNK {
                    self.send()?;
                }
                Ok(Ok(n))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

/// Runs `produce` with a [`ChunkSender`] on this thread while a second
/// thread hashes what it sends and a third writes it to `out`: reading the
/// store, hashing and writing each take one pass over the bytes, and
/// overlapped they cost little more than the slowest of them. `produce`
/// must flush its sender before returning for the last chunk to go out.
/// Returns its result with the sha256 (`None` when `hash` is false: the
/// layer's diff_id is known already, and no hasher thread runs) and the
/// length of everything sent. An error from `out` wins over the producer's
/// resulting "writer stopped".
pub(crate) fn pipelined<W, T, E>(
    out: W,
    hash: bool,
    produce: impl FnOnce(ChunkSender) -> Result<T, E>,
    write_err: impl Fn(io::Error) -> E,
) -> Result<(T, Option<Digest>, u64), E>
where
    W: Write + Send,
{
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<Vec<u8>>(DEPTH);
        let (free_tx, free_rx): (Sender<Vec<u8>>, _) = channel();
        // Without hashing, the writer takes the producer's chunks directly.
        let (hasher, to_write) = if hash {
            let (hashed_tx, hashed_rx) = sync_channel::<Vec<u8>>(DEPTH);
            let hasher = scope.spawn(move || {
                let mut sha = Sha256::new();
                for chunk in full_rx {
                    sha.update(&chunk);
                    if hashed_tx.send(chunk).is_err() {
                        // The writer stopped; its error is the one to report.
                        break;
                    }
                }
                Digest(sha.finalize().into())
            });
            (Some(hasher), hashed_rx)
        } else {
            (None, full_rx)
        };
        let writer = scope.spawn(move || -> io::Result<u64> {
            let mut out = out;
            let mut count = 0u64;
            for chunk in to_write {
                out.write_all(&chunk)?;
                count += chunk.len() as u64;
                // The producer may be done; then the chunk goes to the pool.
                if let Err(returned) = free_tx.send(chunk) {
                    give_chunk(returned.0);
                }
            }
            out.flush()?;
            Ok(count)
        });
        OUT.fetch_add(1, Ordering::Relaxed);
        let sender = ChunkSender {
            chunk: take_chunk(),
            filled: 0,
            full: full_tx,
            free: free_rx,
            taken: 1,
        };
        let produced = produce(sender);
        // `produce` consumed the sender, closing the channel: the hasher,
        // then the writer, finish once everything sent has passed.
        let hashed = hasher.map(|h| h.join()).transpose();
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the output writer panicked")));
        match (produced, written, hashed) {
            (_, Err(e), _) => Err(write_err(e)),
            (Err(e), Ok(_), _) => Err(e),
            (Ok(_), Ok(_), Err(_)) => Err(write_err(io::Error::other("the hasher panicked"))),
            (Ok(t), Ok(count), Ok(digest)) => Ok((t, digest, count)),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_everything_in_order() {
        let data: Vec<u8> = (0..5 * CHUNK + 17).map(|i| (i % 251) as u8).collect();
        let mut out = Vec::new();
        let (n, digest, count) = pipelined(
            &mut out,
            true,
            |mut sender| {
                for piece in data.chunks(4099) {
                    sender.write_all(piece)?;
                }
                sender.flush()?;
                Ok::<_, io::Error>(data.len())
            },
            |e| e,
        )
        .unwrap();
        assert_eq!(n, data.len());
        assert_eq!(count, data.len() as u64);
        assert_eq!(digest, Some(Digest::of(&data)));
        assert_eq!(out, data);
        // Unhashed: the same bytes, no digest.
        let mut again = Vec::new();
        let ((), digest, count) = pipelined(
            &mut again,
            false,
            |mut sender| {
                sender.write_all(&data)?;
                sender.flush()
            },
            |e| e,
        )
        .unwrap();
        assert_eq!(
            (digest, count, again == data),
            (None, data.len() as u64, true)
        );
    }

    struct Failing;
    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::new(io::ErrorKind::BrokenPipe, "reader left"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_outputs_error_is_reported() {
        let err = pipelined(
            Failing,
            true,
            |mut sender| {
                for _ in 0..100 {
                    sender.write_all(&[0; CHUNK])?;
                }
                sender.flush()
            },
            |e| e,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "reader left");
    }
}
