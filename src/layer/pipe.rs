//! Overlaps producing a layer's bytes with writing them out.
//!
//! Reading the store and hashing its bytes take about as long as pushing
//! them into a pipe or a file; done on one thread they add up. The layer
//! writer fills fixed-size chunks (and hashes them) on the calling thread,
//! while a scoped thread writes full chunks to the output in order. A few
//! chunks circulate between the two, so memory stays bounded and the output
//! bytes are exactly those of a single-threaded write.

use std::io::{self, Write};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};

/// Bytes per chunk: large enough that a write costs few syscalls.
const CHUNK: usize = 1 << 20;
/// Full chunks that may wait for the writer.
const DEPTH: usize = 3;

/// The producing side: a `Write` that hands full chunks to the writer thread.
pub(crate) struct ChunkSender {
    chunk: Vec<u8>,
    full: SyncSender<Vec<u8>>,
    free: Receiver<Vec<u8>>,
}

fn writer_gone() -> io::Error {
    io::Error::new(io::ErrorKind::BrokenPipe, "the output writer stopped")
}

impl ChunkSender {
    fn send(&mut self) -> io::Result<()> {
        let next = self
            .free
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let full = std::mem::replace(&mut self.chunk, next);
        self.full.send(full).map_err(|_| writer_gone())
    }
}

impl Write for ChunkSender {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.chunk.len();
        let n = buf.len().min(room);
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.chunk.is_empty() {
            self.send()?;
        }
        Ok(())
    }
}

/// Runs `produce` with a [`ChunkSender`] on this thread while another writes
/// what it sends to `out`. `produce` must flush its sender before returning
/// for the last chunk to go out. An error from `out` wins over the
/// producer's resulting "writer stopped" error.
pub(crate) fn pipelined<W, T, E>(
    out: W,
    produce: impl FnOnce(ChunkSender) -> Result<T, E>,
    write_err: impl Fn(io::Error) -> E,
) -> Result<T, E>
where
    W: Write + Send,
{
    std::thread::scope(|scope| {
        let (full_tx, full_rx) = sync_channel::<Vec<u8>>(DEPTH);
        let (free_tx, free_rx): (Sender<Vec<u8>>, _) = channel();
        let writer = scope.spawn(move || -> io::Result<()> {
            let mut out = out;
            for mut chunk in full_rx {
                out.write_all(&chunk)?;
                chunk.clear();
                // The producer may be gone already; then the chunk is dropped.
                let _ = free_tx.send(chunk);
            }
            out.flush()
        });
        let sender = ChunkSender {
            chunk: Vec::with_capacity(CHUNK),
            full: full_tx,
            free: free_rx,
        };
        let produced = produce(sender);
        // `produce` consumed the sender, closing the channel: the writer
        // finishes once it has written everything sent.
        let written = writer
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the output writer panicked")));
        match (produced, written) {
            (_, Err(e)) => Err(write_err(e)),
            (produced, Ok(())) => produced,
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
        let n = pipelined(
            &mut out,
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
        assert_eq!(out, data);
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
