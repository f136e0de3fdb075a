//! A large layer uploaded while it is still being written.
//!
//! A blob's digest is known only once its last byte is compressed, and a
//! small blob is best asked about (`HEAD`) before it is sent. A large one
//! is sent as it is spooled instead: an upload session is opened at once,
//! each chunk of the spool file goes out in a `PATCH` as soon as the
//! compressor has written it, and the digest comes with the closing `PUT`.
//! Without this, the last large layer of an image (a `popularity` plan
//! puts half the closure in its last layer) was uploaded only after it was
//! compressed, with the cores idle meanwhile.
//!
//! Only when the registry has lacked every layer of the push asked about
//! so far (at least one): a registry holding some (a re-push with a cold
//! layer cache) may hold the large one too, and is asked first. Layers are
//! written several at a time, the largest first, so a large layer usually
//! starts before any other is asked about: it is then spooled, and its
//! stream starts at the first chunk written once a smaller layer has
//! been found missing (the chunks spooled meanwhile go first).
//!
//! The streamed session is an optimisation, never the only way: when it
//! fails in any way (a dropped connection, a refused chunk, a lost
//! session), it is abandoned and the spooled blob is uploaded as any other
//! (with its resumes and retries). When the registry turns out to hold the
//! blob already (`HEAD`, or a mount) the session is cancelled: at most the
//! chunks sent so far were sent for nothing.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::client::Session;
use super::{lock, Asked, Client};
use crate::oci::Digest;
use crate::sink::SpooledBlob;

/// A layer of at least this many chunks of tar bytes (64 MiB with the
/// default 16 MiB chunk) is streamed: it compresses long enough for the
/// upload to overlap, and its blob is likely new to the registry.
pub(super) const STREAM_FROM_CHUNKS: u64 = 4;

/// What the upload's description says in errors.
const WHAT: &str = "layer blob (uploaded as it is written)";

/// What the push has learnt so far of whether the registry holds this
/// image's layers, shared with the layers being written.
#[derive(Debug, Default)]
pub(super) struct Evidence {
    /// Layers asked about and found missing (queued for upload).
    missing: AtomicUsize,
    /// Whether any blob asked about was there (or mounted).
    found: AtomicBool,
}

impl Evidence {
    /// A layer was asked about and found missing.
    pub(super) fn missing(&self) {
        self.missing.fetch_add(1, Ordering::Relaxed);
    }

    /// A blob asked about was there, or mounted.
    pub(super) fn found(&self) {
        self.found.store(true, Ordering::Relaxed);
    }

    /// Whether the registry has lacked every layer asked about so far, at
    /// least one (`None`: none asked about yet).
    pub(super) fn lacks_image(&self) -> Option<bool> {
        if self.found.load(Ordering::Relaxed) {
            Some(false)
        } else if self.missing.load(Ordering::Relaxed) > 0 {
            Some(true)
        } else {
            None
        }
    }
}

/// A layer blob being written into the registry sink: spooled, and for a
/// large layer streamed too.
#[derive(Debug)]
pub struct LayerBlob {
    pub(super) spool: SpooledBlob,
    /// Bytes written into `spool` (some may still be in its buffer).
    written: u64,
    pub(super) stream: Option<Streaming>,
    /// A large layer that may yet be streamed: once a chunk is in its
    /// spool file and the registry is known to lack the image (see the
    /// module doc).
    candidate: bool,
    asked: Arc<Asked>,
    evidence: Arc<Evidence>,
}

impl LayerBlob {
    /// A layer spooled into `spool`, streamed at once with `stream`, or
    /// later if a `candidate`.
    pub(super) fn new(
        spool: SpooledBlob,
        stream: Option<Streaming>,
        candidate: bool,
        asked: &Arc<Asked>,
        evidence: &Arc<Evidence>,
    ) -> Self {
        Self {
            spool,
            written: 0,
            stream,
            candidate,
            asked: Arc::clone(asked),
            evidence: Arc::clone(evidence),
        }
    }

    /// Starts streaming a candidate when a chunk is in the file and the
    /// registry lacks the image; gives it up when the registry holds some
    /// of the image (or refused chunks); else asks again at the next write.
    fn decide(&mut self, in_file: u64) {
        let client = &self.asked.client;
        if !self.candidate || in_file < client.chunk_size() {
            return;
        }
        match self.evidence.lacks_image() {
            None => {}
            Some(true) if client.chunks_allowed() => {
                let mut stream = Streaming::start(client, self.spool.path().to_owned());
                stream.spooled(in_file);
                self.stream = Some(stream);
                self.candidate = false;
            }
            Some(_) => self.candidate = false,
        }
    }

    /// The layer is written, its blob's digest `digest`: its bytes go into
    /// the file; the registry is asked about the blob here, on the layer's
    /// thread (its commit finds the answer, see `Asked`), which is also
    /// evidence for other large layers; and a stream (started now if the
    /// registry is known by now to lack the image) sends its last chunk at
    /// once, before the layer's turn to be committed (when its digest
    /// closes the session).
    pub(super) fn seal(&mut self, digest: &Digest) -> io::Result<()> {
        self.spool.flush()?;
        // A failed question is asked again at the commit, which reports it.
        match self.asked.head(digest) {
            Ok(true) => self.evidence.found(),
            Ok(false) => self.evidence.missing(),
            Err(_) => {}
        }
        if self.stream.is_none() {
            self.decide(self.written);
        }
        if let Some(stream) = &mut self.stream {
            stream.spooled(self.written);
            stream.end(self.written);
        }
        Ok(())
    }
}

impl Write for LayerBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.spool.write(buf)?;
        self.written += n as u64;
        let in_file = self.written - self.spool.buffered() as u64;
        match &mut self.stream {
            Some(stream) => stream.spooled(in_file),
            None => self.decide(in_file),
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.spool.flush()
    }
}

/// What the writer tells the streaming thread.
#[derive(Debug, Default)]
struct Feed {
    /// Bytes in the spool file (not in a buffer).
    spooled: u64,
    /// The blob's size, once the whole blob is in the file.
    end: Option<u64>,
    /// Stop: the blob is not needed (the registry has it) or the build
    /// failed.
    cancel: bool,
}

type Shared = Arc<(Mutex<Feed>, Condvar)>;

/// The thread sending a layer's chunks as they are spooled.
#[derive(Debug)]
pub(super) struct Streaming {
    feed: Shared,
    thread: Option<JoinHandle<Option<Session>>>,
    /// `feed.spooled` as last told (told again a chunk later).
    told: u64,
    chunk: u64,
}

impl Streaming {
    /// Starts streaming the spool file at `path` through `client`.
    pub(super) fn start(client: &Arc<Client>, path: PathBuf) -> Self {
        let feed: Shared = Arc::default();
        let chunk = client.chunk_size().max(1);
        let thread = {
            let (client, feed) = (Arc::clone(client), Arc::clone(&feed));
            std::thread::spawn(move || send(&client, &path, &feed, chunk))
        };
        Self {
            feed,
            thread: Some(thread),
            told: 0,
            chunk,
        }
    }

    /// `in_file` bytes are in the spool file: a chunk more wakes the
    /// thread.
    fn spooled(&mut self, in_file: u64) {
        if in_file >= self.told + self.chunk {
            self.told = in_file;
            let (feed, wake) = &*self.feed;
            lock(feed).spooled = in_file;
            wake.notify_all();
        }
    }

    /// The whole blob, `size` bytes, is in the spool file.
    pub(super) fn end(&self, size: u64) {
        let (feed, wake) = &*self.feed;
        lock(feed).end = Some(size);
        wake.notify_all();
    }

    /// Waits for the thread: the session holding every byte, or `None`
    /// when streaming failed or stopped (then the blob is uploaded from
    /// its spool file).
    pub(super) fn join(mut self) -> Option<Session> {
        self.thread.take().and_then(|t| t.join().ok().flatten())
    }
}

impl Drop for Streaming {
    /// Not joined: cancels, and the thread ends after the request in
    /// flight (within its deadline).
    fn drop(&mut self) {
        let (feed, wake) = &*self.feed;
        lock(feed).cancel = true;
        wake.notify_all();
    }
}

/// The streaming thread: a `PATCH` per chunk as it is spooled, the rest
/// once the blob is complete (resumed or restarted as any chunked upload,
/// see [`Client::send_chunks`]); the session holding every byte, or `None`
/// (cancelled, failed, or chunks refused: a session opened is abandoned).
fn send(client: &Client, path: &Path, feed: &Shared, chunk: u64) -> Option<Session> {
    let (state, wake) = &**feed;
    // Bytes counted on the meter as queued: each once, though a restarted
    // session sends them again.
    let mut queued = 0;
    let mut next = |offset: u64| {
        let mut f = lock(state);
        let len = loop {
            if f.cancel {
                return None;
            }
            if let Some(end) = f.end {
                break end.saturating_sub(offset).min(chunk);
            }
            if f.spooled >= offset + chunk {
                break chunk;
            }
            f = wake.wait(f).unwrap_or_else(PoisonError::into_inner);
        };
        drop(f);
        if offset + len > queued {
            client.meter().queue(offset + len - queued);
            queued = offset + len;
        }
        Some(len)
    };
    let sent = client.send_chunks(WHAT, path, &mut next);
    let complete = lock(state)
        .end
        .is_some_and(|end| matches!(&sent, Ok(Some(session)) if session.offset() == end));
    match sent {
        Ok(Some(session)) if complete => Some(session),
        Ok(Some(session)) => {
            client.cancel_session(&session, WHAT);
            None
        }
        Ok(None) | Err(_) => None,
    }
}
