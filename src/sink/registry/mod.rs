//! Pushing an image to a registry over the OCI distribution API, with a
//! small blocking HTTP client (ureq, no async runtime).
//!
//! [`RegistrySink`] is an [`ImageSink`]: each layer blob is spooled to a
//! temporary file while it is compressed and hashed (a large one is also
//! sent in chunks as it is spooled, see the private `stream` module), then queued for
//! upload threads (the build goes on meanwhile; see `Uploads`), uploaded unless
//! the registry already has it (`HEAD /v2/<name>/blobs/<digest>`): in
//! chunks (`POST …/blobs/uploads/`, `PATCH`es, `PUT <location>?digest=…`),
//! resumed or restarted after a failed chunk, or monolithic (one `PUT`)
//! when the registry refuses chunks. [`RegistrySink::has_blob`] asks the registry, so a
//! layer the layer cache knows and the registry holds is never read. Small
//! blobs (config, manifest) stay in memory; the config is uploaded when
//! its manifest is put, and [`ImageSink::finish`] PUTs the manifest with
//! exactly the bytes that were hashed.
//!
//! Auth: anonymous; basic (`USER:PASS` from the command line, the
//! environment or `~/.docker/config.json`); bearer tokens
//! (`WWW-Authenticate: Bearer realm=…,service=…,scope=…`). Credentials go
//! only to the registry's own origin (see [`client`]). Transient failures
//! (5xx, 429, connection errors) are retried [`ATTEMPTS`] times; every
//! request has a deadline ([`Timeouts`]), and one that passes is final.
//!
//! The distribution client itself is [`crate::registry`]: references,
//! credentials, auth and HTTP.

pub mod homes;
mod stream;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use tempfile::TempDir;

use super::spool::Spooled;
use super::{ImageEntry, ImageSink, LayerForm, SpooledBlob};
use crate::cleanup::Pending;
use crate::codec::CompressOptions;
use crate::oci::{Descriptor, Digest};
use client::Body;
// The distribution client lives below the stages (a base-image pull uses
// it too); a push names it from here as before.
pub use crate::registry::{
    client, credentials, reference, Client, ClientOptions, Credentials, Error, Reference, Timeouts,
    UploadMeter, ATTEMPTS,
};
pub use stream::LayerBlob;
use stream::{Evidence, Streaming};

/// What a push did with the blobs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushCounts {
    /// Blobs uploaded.
    pub uploaded: usize,
    /// Blobs the registry already had.
    pub existing: usize,
    /// Bytes uploaded.
    pub bytes_uploaded: u64,
    /// Blobs mounted from another repository of the registry, not uploaded.
    pub mounted: usize,
    /// The image index pushed as the tags, when several platforms were.
    pub index: Option<Digest>,
    /// Artifacts (SBOMs) the registry lists in its referrers API (it
    /// answered their PUT with `OCI-Subject`).
    pub referrers_api: usize,
    /// Artifacts listed instead in a referrers tag (`sha256-<hex>` of
    /// their subject), for registries without the referrers API.
    pub referrers_tagged: usize,
}

/// How many blobs upload at once unless `ClientOptions::jobs` says.
pub const DEFAULT_JOBS: usize = 4;

/// A layer waiting for a worker.
struct Job {
    digest: Digest,
    spooled: Spooled,
    size: u64,
    /// The session a large layer was streamed into as it was written.
    stream: Option<Streaming>,
}

/// Bytes of spooled blobs that may wait for an upload worker (one larger
/// blob waits alone): the disk the spool takes stays bounded, while the
/// many small layers of an image queue without holding up the build
/// (it waited for a free place after every few of them, and its
/// compressors with it).
const QUEUE_BYTES: u64 = 256 << 20;

/// The write buffer of a layer's spool file. Compressed layers arrive in
/// large writes (a gzip member, a zstd block), which pass it by; several
/// layers are written at once, some waiting, written, for their commit,
/// and a larger buffer would only hold memory meanwhile.
const SPOOL_BUFFER: usize = 64 << 10;

/// What the upload workers share with the sink.
#[derive(Default)]
struct Progress {
    /// Blobs queued or uploading.
    outstanding: usize,
    /// Bytes of the blobs queued, not yet taken by a worker.
    waiting: u64,
    /// The first upload that failed; later jobs are dropped unsent.
    error: Option<Error>,
    uploaded: usize,
    bytes: u64,
}

type Shared = Arc<(Mutex<Progress>, Condvar)>;

/// Layers upload on `jobs` worker threads while the build goes on: a
/// committed layer is queued (the queue holds at most [`QUEUE_BYTES`] of
/// spooled blobs; the build waits while it is full), so besides the
/// layers being written at most `jobs` blobs being uploaded and that
/// many bytes of waiting ones are spooled at once.
struct Uploads {
    sender: Option<Sender<Job>>,
    /// Worker threads: uploads at once (`--jobs`).
    jobs: usize,
    workers: Vec<JoinHandle<()>>,
    shared: Shared,
}

impl std::fmt::Debug for Uploads {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploads")
            .field("workers", &self.workers.len())
            .finish_non_exhaustive()
    }
}

impl Uploads {
    fn start(client: &Arc<Client>, jobs: usize) -> Self {
        let (sender, receiver) = std::sync::mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        let shared: Shared = Arc::default();
        let workers = (0..jobs)
            .map(|_| {
                let (client, receiver, shared) = (
                    Arc::clone(client),
                    Arc::clone(&receiver),
                    Arc::clone(&shared),
                );
                std::thread::spawn(move || work(&client, &receiver, &shared))
            })
            .collect();
        Self {
            sender: Some(sender),
            jobs,
            workers,
            shared,
        }
    }

    /// The first failure so far, taken.
    fn failed(&self) -> Option<Error> {
        lock(&self.shared.0).error.take()
    }

    /// Queues `job`, once the blobs waiting leave room for it (or a
    /// worker failed: the job is then dropped unsent).
    fn queue(&self, job: Job) -> Result<(), Error> {
        {
            let (mutex, taken) = &*self.shared;
            let mut p = lock(mutex);
            while p.waiting > 0 && p.waiting + job.size > QUEUE_BYTES && p.error.is_none() {
                p = taken
                    .wait(p)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            p.outstanding += 1;
            p.waiting += job.size;
        }
        let size = job.size;
        let sent = self.sender.as_ref().is_some_and(|s| s.send(job).is_ok());
        if !sent {
            let mut p = lock(&self.shared.0);
            p.outstanding -= 1;
            p.waiting -= size;
            return Err(Error::Io {
                what: "(upload queue)".to_owned(),
                path: PathBuf::from("(memory)"),
                source: std::io::Error::other("the upload workers stopped"),
            });
        }
        Ok(())
    }

    /// Waits until every queued blob is uploaded; the first failure, or
    /// the uploads' count and bytes.
    fn wait(&self) -> Result<(usize, u64), Error> {
        let (mutex, done) = &*self.shared;
        let mut p = lock(mutex);
        while p.outstanding > 0 {
            p = done
                .wait(p)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        match p.error.take() {
            Some(e) => Err(e),
            None => Ok((
                std::mem::take(&mut p.uploaded),
                std::mem::take(&mut p.bytes),
            )),
        }
    }
}

impl Drop for Uploads {
    /// Ends the workers: after a failure (or a build error) the jobs still
    /// queued are dropped unsent; an upload in flight ends within its
    /// deadline. Not joined, so an error is reported at once.
    fn drop(&mut self) {
        {
            let mut p = lock(&self.shared.0);
            if p.error.is_none() && p.outstanding > 0 {
                p.error = Some(Error::Io {
                    what: "(upload queue)".to_owned(),
                    path: PathBuf::from("(memory)"),
                    source: std::io::Error::other("the push was abandoned"),
                });
            }
        }
        self.sender = None;
        if lock(&self.shared.0).outstanding == 0 {
            for w in self.workers.drain(..) {
                let _ = w.join();
            }
        }
    }
}

/// An upload worker: takes jobs until the queue closes.
fn work(client: &Client, receiver: &Mutex<Receiver<Job>>, shared: &Shared) {
    loop {
        let mut job = match lock(receiver).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let skip = {
            let mut p = lock(&shared.0);
            p.waiting -= job.size;
            shared.1.notify_all();
            p.error.is_some()
        };
        let result = if skip {
            Ok(())
        } else {
            upload(client, &mut job)
        };
        drop(job.spooled); // removes the spooled copy
        let (mutex, done) = &**shared;
        let mut p = lock(mutex);
        match result {
            Ok(()) if !skip => {
                p.uploaded += 1;
                p.bytes += job.size;
            }
            Ok(()) => {}
            Err(e) => {
                p.error.get_or_insert(e);
            }
        }
        p.outstanding -= 1;
        done.notify_all();
    }
}

/// Uploads a queued layer: closes the session it was streamed into, or
/// (not streamed, or the stream or its close failed) uploads its spool
/// file, whose upload reports what is wrong if it fails too.
fn upload(client: &Client, job: &mut Job) -> Result<(), Error> {
    if let Some(stream) = job.stream.take() {
        if let Some(session) = stream.join() {
            let what = format!("blob {}", job.digest.prefixed());
            if client.close_session(&session, &job.digest, &what).is_ok() {
                return Ok(());
            }
        }
        // What the stream sent goes again.
        client.meter().queue(job.size);
    }
    client.upload(&job.digest, &Body::File(job.spooled.path(), job.size))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What the registry said of blobs (and what may be taken for present
/// without asking), shared by the sink and its layers' threads: a layer
/// asks about its blob on its own thread once written, so the commits,
/// one at a time, find the answer there instead of each waiting for a
/// `HEAD` (tens of milliseconds from a registry busy receiving).
#[derive(Debug)]
struct Asked {
    client: Arc<Client>,
    /// What HEAD said, so no blob is asked about twice.
    known: Mutex<BTreeMap<Digest, bool>>,
    /// Where blobs went, for cross-repository mounts (none: no mounts).
    homes: Option<homes::BlobHomes>,
    /// Our repository.
    repository: String,
    /// Whether a blob `homes` records in our repository is taken for
    /// present without a `HEAD` (see [`RegistrySink::with_homes`]).
    trust_homes: bool,
    /// The blobs taken for present on a record alone, checked when the
    /// registry refuses a manifest.
    assumed: Mutex<Vec<Digest>>,
}

impl Asked {
    /// Whether `homes` records `digest` in our repository, and such
    /// records are trusted.
    fn recorded_here(&self, digest: &Digest) -> bool {
        self.trust_homes
            && self
                .homes
                .as_ref()
                .is_some_and(|h| h.get(digest).contains(&self.repository))
    }

    /// Whether the registry holds `digest` in our repository: known, taken
    /// for present on its record, or asked (`HEAD`; not under the lock, so
    /// other threads' questions do not wait for this one).
    fn head(&self, digest: &Digest) -> Result<bool, Error> {
        if let Some(&have) = lock(&self.known).get(digest) {
            return Ok(have);
        }
        if self.recorded_here(digest) {
            lock(&self.known).insert(*digest, true);
            lock(&self.assumed).push(*digest);
            return Ok(true);
        }
        let have = self.client.has_blob(digest)?;
        // Another thread's answer for the same blob (rare) is the same.
        Ok(*lock(&self.known).entry(*digest).or_insert(have))
    }
}

/// An [`ImageSink`] that uploads to a registry: see the module docs.
#[derive(Debug)]
pub struct RegistrySink {
    client: Arc<Client>,
    uploads: Uploads,
    spool: TempDir,
    /// Removes the spool directory if a signal ends the process.
    _pending: Pending,
    compress: CompressOptions,
    /// The tags to push as (none: the tag of the reference
    /// [`ImageSink::finish`] is given).
    tags: Vec<String>,
    /// Small blobs (configs), kept until their manifest is put.
    small: BTreeMap<Digest, Vec<u8>>,
    /// The manifests put, with their platforms, for [`ImageSink::finish`].
    manifests: Vec<(Vec<u8>, super::Platform)>,
    /// What the registry said of blobs, shared with the layers' threads.
    asked: Arc<Asked>,
    counts: PushCounts,
    /// The blobs of the manifests put, recorded in `homes` once the
    /// registry accepted them.
    to_record: Vec<Digest>,
    /// Blobs [`ImageSink::has_blob`] found (existing, mounted): layers
    /// not read.
    unread: (AtomicUsize, AtomicUsize),
    /// Whether the registry lacked every layer asked about so far, shared
    /// with the large layers being written (see the `stream` module).
    evidence: Arc<Evidence>,
    /// Artifacts referring to an image manifest (SBOMs): manifest bytes,
    /// subject and index entry, PUT after the images.
    referrers: Vec<(Vec<u8>, Digest, serde_json::Value)>,
    /// Of the image index of several platforms (a registry has no
    /// `index.json` entry for the descriptor's).
    index_annotations: BTreeMap<String, String>,
}

fn sink_err(e: Error) -> super::Error {
    super::Error::Registry(Box::new(e))
}

impl RegistrySink {
    /// A sink uploading through `client` layers compressed with
    /// `compress`, pushed as each of `tags` (none: the tag of the reference
    /// [`ImageSink::finish`] is given), spooling blobs in a new temporary
    /// directory.
    ///
    /// # Errors
    /// When the temporary directory cannot be made.
    pub fn new(
        client: Client,
        compress: CompressOptions,
        tags: Vec<String>,
    ) -> Result<Self, Error> {
        let (spool, pending) = Pending::create(
            || tempfile::Builder::new().prefix("nixlayer-push").tempdir(),
            |d| d.path(),
        )
        .map_err(|source| Error::Io {
            what: "(spool directory)".to_owned(),
            path: std::env::temp_dir(),
            source,
        })?;
        let client = Arc::new(client);
        let jobs = if client.jobs() == 0 {
            DEFAULT_JOBS
        } else {
            client.jobs()
        };
        Ok(Self {
            uploads: Uploads::start(&client, jobs),
            spool,
            _pending: pending,
            compress,
            tags,
            small: BTreeMap::new(),
            manifests: Vec::new(),
            asked: Arc::new(Asked {
                client: Arc::clone(&client),
                known: Mutex::new(BTreeMap::new()),
                homes: None,
                repository: String::new(),
                trust_homes: false,
                assumed: Mutex::new(Vec::new()),
            }),
            counts: PushCounts::default(),
            to_record: Vec::new(),
            unread: (AtomicUsize::new(0), AtomicUsize::new(0)),
            evidence: Arc::default(),
            referrers: Vec::new(),
            index_annotations: BTreeMap::new(),
            client,
        })
    }

    /// Records in `homes` which repository (`repository`, ours) each blob
    /// went to, and mounts a missing blob from another repository there
    /// recorded instead of uploading it. With `trust`, a blob recorded in
    /// our repository is taken for present without a `HEAD` (a re-push
    /// then asks about none of the unchanged blobs): a registry checks
    /// that a manifest's blobs exist when it is put, and when one has gone
    /// the push fails with [`Error::Vanished`], for the caller to push
    /// again without `trust`.
    /// Called before any layer is started (it has no effect after).
    #[must_use]
    pub fn with_homes(mut self, homes: homes::BlobHomes, repository: &str, trust: bool) -> Self {
        if let Some(asked) = Arc::get_mut(&mut self.asked) {
            asked.homes = Some(homes);
            repository.clone_into(&mut asked.repository);
            asked.trust_homes = trust;
        }
        self
    }

    /// What the uploads have sent, for progress.
    #[must_use]
    pub fn meter(&self) -> Arc<client::UploadMeter> {
        Arc::clone(self.client.meter())
    }

    /// Mounts `digest` from a repository it was pushed to before, when the
    /// registry agrees: whether it did. At most three are asked.
    fn mount(&self, digest: &Digest) -> Result<bool, Error> {
        let Some(homes) = &self.asked.homes else {
            return Ok(false);
        };
        for from in homes
            .get(digest)
            .iter()
            .filter(|r| **r != self.asked.repository)
            .take(3)
        {
            if self.client.mount(digest, from)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Notes that the blobs of the manifests put are in our repository:
    /// called once the registry accepted them.
    fn record_homes(&self) {
        let Some(homes) = &self.asked.homes else {
            return;
        };
        for d in &self.to_record {
            // A record that cannot be written only costs an upload later.
            let _ = homes.put(d, &self.asked.repository);
        }
    }

    /// `refusal`, the registry's answer to a manifest, or
    /// [`Error::Vanished`] when a blob taken for present on its record
    /// alone is not there (a `HEAD` for each of them tells).
    fn check_assumed(&self, refusal: Error) -> Error {
        let assumed = std::mem::take(&mut *lock(&self.asked.assumed));
        // Only a refusal of the manifest itself (4xx) may mean a missing
        // blob; a timeout, a 5xx or an auth failure is reported as it is.
        if assumed.is_empty()
            || !matches!(
                refusal,
                Error::Status {
                    status: 400..=499,
                    ..
                }
            )
        {
            return refusal;
        }
        let missing: Vec<Digest> = assumed
            .into_iter()
            .filter(|d| !self.client.has_blob(d).unwrap_or(false))
            .collect();
        if missing.is_empty() {
            return refusal;
        }
        Error::Vanished {
            repository: self.asked.repository.clone(),
            missing,
            source: Box::new(refusal),
        }
    }

    fn head(&self, digest: &Digest) -> Result<bool, Error> {
        self.asked.head(digest)
    }

    /// Whether the registry holds `digest` in our repository (`HEAD`) or
    /// mounts it there from another one, counted as existing or mounted;
    /// either is evidence that it may hold this image's other layers.
    fn already_there(&mut self, digest: &Digest) -> Result<bool, Error> {
        if self.head(digest)? {
            self.counts.existing += 1;
        } else if self.mount(digest)? {
            self.counts.mounted += 1;
            lock(&self.asked.known).insert(*digest, true);
        } else {
            return Ok(false);
        }
        self.evidence.found();
        Ok(true)
    }

    fn push_blob(&mut self, digest: &Digest, body: &Body<'_>) -> Result<bool, Error> {
        if self.already_there(digest)? {
            return Ok(false);
        }
        self.client.upload(digest, body)?;
        lock(&self.asked.known).insert(*digest, true);
        self.counts.uploaded += 1;
        self.counts.bytes_uploaded += body.len();
        Ok(true)
    }
}

impl RegistrySink {
    /// PUTs each artifact manifest by digest. A registry that answers
    /// without `OCI-Subject` has no referrers API: the artifacts are then
    /// added to the referrers tag of their subject (the distribution
    /// spec's fallback, `sha256-<hex>`, an image index of referrers), read,
    /// changed and PUT once per subject.
    fn push_referrers(&self, counts: &mut PushCounts) -> Result<(), Error> {
        let mut tagged: BTreeMap<Digest, Vec<serde_json::Value>> = BTreeMap::new();
        for (manifest, subject, entry) in &self.referrers {
            if self.client.put_referrer_manifest(manifest)? {
                counts.referrers_api += 1;
            } else {
                tagged.entry(*subject).or_default().push(entry.clone());
            }
        }
        for (subject, entries) in tagged {
            let tag = referrers_tag(&subject);
            let existing = self.client.get_tagged_index(&tag)?;
            let index = merge_referrers(existing.as_deref(), &entries).map_err(|reason| {
                Error::ReferrersTag {
                    tag: tag.clone(),
                    reason,
                }
            })?;
            self.client
                .put_typed_manifest(&tag, &index, crate::oci::INDEX_MEDIA_TYPE)?;
            counts.referrers_tagged += entries.len();
        }
        Ok(())
    }
}

/// The referrers tag of manifest `subject` (OCI distribution 1.1,
/// "referrers tag schema"): `sha256-<hex>`.
#[must_use]
pub fn referrers_tag(subject: &Digest) -> String {
    format!("sha256-{}", subject.hex())
}

/// The referrers index `existing` (a referrers tag's bytes, untrusted;
/// `None`: no tag yet) with `entries` added: entries already listed (same
/// digest) are kept as they are, others keep their order, new ones follow
/// in the order given. Canonical JSON.
///
/// # Errors
/// When `existing` is not an image index (the tag holds something else,
/// which is not replaced).
pub fn merge_referrers(
    existing: Option<&[u8]>,
    entries: &[serde_json::Value],
) -> Result<Vec<u8>, &'static str> {
    let mut manifests: Vec<serde_json::Value> = match existing {
        None => Vec::new(),
        Some(bytes) => {
            let doc: serde_json::Value =
                serde_json::from_slice(bytes).map_err(|_| "is not JSON")?;
            if doc.get("mediaType").and_then(serde_json::Value::as_str)
                != Some(crate::oci::INDEX_MEDIA_TYPE)
            {
                return Err("is not an OCI image index");
            }
            match doc.get("manifests") {
                Some(serde_json::Value::Array(m)) => m.clone(),
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(_) => return Err("has a `manifests` that is not a list"),
            }
        }
    };
    for entry in entries {
        if !manifests
            .iter()
            .any(|m| m.get("digest").is_some() && m.get("digest") == entry.get("digest"))
        {
            manifests.push(entry.clone());
        }
    }
    Ok(crate::oci::index_json(manifests))
}

impl ImageSink for RegistrySink {
    type Blob = LayerBlob;
    type Output = PushCounts;

    fn layer_form(&self) -> LayerForm {
        LayerForm::Blobs(self.compress)
    }

    /// Several layers are written at once, each spooled to a file of its
    /// own (and a large one streamed) until committed in layer order.
    fn concurrent_layers(&self) -> bool {
        true
    }

    /// Runs on the layer's thread once it is compressed: the registry is
    /// asked about the blob there, and a streamed layer's last chunk need
    /// not wait for the layers before it to be committed.
    fn seal_layer_as(blob: &mut LayerBlob, digest: &Digest) -> Result<(), super::Error> {
        blob.seal(digest).map_err(|source| super::Error::Io {
            path: blob.spool.path().to_owned(),
            source,
        })
    }

    /// A spool file; a large layer (`size` tar bytes) is also streamed
    /// to the registry as it is written (see the `stream` module): at once
    /// when the registry is known to lack this image, else from its first
    /// chunk written after that is known.
    fn start_layer(&mut self, _key: &Digest, size: u64) -> Result<Self::Blob, super::Error> {
        let spool = SpooledBlob::with_buffer_in(self.spool.path(), SPOOL_BUFFER)?;
        let large = size >= stream::STREAM_FROM_CHUNKS.saturating_mul(self.client.chunk_size());
        // A stream is an upload beside the workers': none when uploads
        // are to go one at a time.
        let streamable = large && self.uploads.jobs > 1 && self.client.chunks_allowed();
        let lacks = self.evidence.lacks_image();
        let stream = (streamable && lacks == Some(true))
            .then(|| Streaming::start(&self.client, spool.path().to_owned()));
        let candidate = streamable && lacks.is_none();
        Ok(LayerBlob::new(
            spool,
            stream,
            candidate,
            &self.asked,
            &self.evidence,
        ))
    }

    fn commit_layer(
        &mut self,
        blob: Self::Blob,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, super::Error> {
        if let Some(e) = self.uploads.failed() {
            return Err(sink_err(e));
        }
        let LayerBlob { spool, stream, .. } = blob;
        let spooled = spool.finish()?;
        // A stream of a blob found here is cancelled when dropped.
        if self.already_there(digest).map_err(sink_err)? {
            return Ok(false);
        }
        // Queued: taken for present, so the same blob is not queued twice.
        lock(&self.asked.known).insert(*digest, true);
        self.evidence.missing();
        match &stream {
            // The whole blob is in the file now: its last chunk goes out
            // at once, before a worker takes the job to close it.
            Some(stream) => stream.end(size),
            // A stream counts its chunks as it sends them.
            None => self.client.meter().queue(size),
        }
        self.uploads
            .queue(Job {
                digest: *digest,
                spooled,
                size,
                stream,
            })
            .map_err(sink_err)?;
        Ok(true)
    }

    /// Whether the registry holds `digest` in our repository, or mounts
    /// it there from another one: then the layer (known to the layer
    /// cache) is not read at all. Counted as existing or mounted.
    fn has_blob(&self, digest: &Digest) -> bool {
        // An error here only means the layer is built; the upload then
        // reports what is wrong.
        if self.head(digest).unwrap_or(false) {
            self.unread.0.fetch_add(1, Ordering::Relaxed);
            self.evidence.found();
            return true;
        }
        if self.mount(digest).unwrap_or(false) {
            lock(&self.asked.known).insert(*digest, true);
            self.unread.1.fetch_add(1, Ordering::Relaxed);
            self.evidence.found();
            return true;
        }
        false
    }

    fn put_blob(&mut self, bytes: &[u8]) -> Result<(Digest, bool), super::Error> {
        let digest = Digest::of(bytes);
        self.small.insert(digest, bytes.to_vec());
        Ok((digest, true))
    }

    /// Uploads the image's config (when missing) and keeps the manifest
    /// for [`ImageSink::finish`], which PUTs it with exactly these bytes.
    fn set_annotations(&mut self, annotations: &super::OutputAnnotations) {
        self.index_annotations.clone_from(&annotations.index);
    }

    fn put_manifest(&mut self, image: &ImageEntry<'_>) -> Result<(Descriptor, bool), super::Error> {
        // Its layers first: a manifest is refused while a blob is missing.
        let (uploaded, bytes) = self.uploads.wait().map_err(sink_err)?;
        self.counts.uploaded += uploaded;
        self.counts.bytes_uploaded += bytes;
        let config = &image.config.digest;
        let bytes = self.small.get(config).cloned().ok_or_else(|| {
            sink_err(Error::Io {
                what: config.prefixed(),
                path: PathBuf::from("(memory)"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "blob was not built"),
            })
        })?;
        self.push_blob(config, &Body::Bytes(&bytes))
            .map_err(sink_err)?;
        self.to_record
            .extend(image.layers.iter().chain([image.config]).map(|d| d.digest));
        self.manifests
            .push((image.manifest.to_vec(), image.platform.clone()));
        let desc = Descriptor {
            media_type: crate::oci::MANIFEST_MEDIA_TYPE.to_owned(),
            digest: Digest::of(image.manifest),
            size: image.manifest.len() as u64,
        };
        Ok((desc, true))
    }

    /// Uploads the artifact's blobs now; its manifest is PUT by
    /// [`ImageSink::finish`], after the image it refers to.
    fn put_referrer(&mut self, referrer: &super::Referrer<'_>) -> Result<Descriptor, super::Error> {
        for blob in [referrer.config, referrer.blob] {
            self.push_blob(&Digest::of(blob), &Body::Bytes(blob))
                .map_err(sink_err)?;
        }
        self.referrers.push((
            referrer.manifest.to_vec(),
            referrer.subject.digest,
            referrer.index_entry(),
        ));
        Ok(referrer.descriptor())
    }

    /// PUTs the manifest as each tag, in order: the last step of a push.
    /// The same bytes every time, so every tag names the same digest.
    /// Several manifests (one per platform) are PUT by digest, then an
    /// image index over them as each tag.
    ///
    /// Artifacts referring to the images (SBOMs) go after the images'
    /// manifests are there by digest and before any tag moves: a push whose
    /// SBOM fails leaves the tags where they were.
    fn finish(self, reference: &str) -> Result<(PushCounts, Option<u64>), super::Error> {
        let tags = if self.tags.is_empty() {
            vec![super::tag_of(reference).to_owned()]
        } else {
            self.tags.clone()
        };
        let mut counts = self.counts;
        let mut index_digest = None;
        match self.manifests.as_slice() {
            [(manifest, _)] => {
                if !self.referrers.is_empty() {
                    self.client
                        .put_manifest(&Digest::of(manifest).prefixed(), manifest)
                        .map_err(|e| sink_err(self.check_assumed(e)))?;
                    self.push_referrers(&mut counts).map_err(sink_err)?;
                }
                for tag in &tags {
                    self.client
                        .put_manifest(tag, manifest)
                        .map_err(|e| sink_err(self.check_assumed(e)))?;
                }
            }
            several if !several.is_empty() => {
                // Each platform's manifest by its digest (an index may
                // only name manifests the registry holds), then the index
                // as every tag.
                let mut descs = Vec::with_capacity(several.len());
                for (manifest, platform) in several {
                    let digest = Digest::of(manifest);
                    self.client
                        .put_manifest(&digest.prefixed(), manifest)
                        .map_err(|e| sink_err(self.check_assumed(e)))?;
                    descs.push((
                        Descriptor {
                            media_type: crate::oci::MANIFEST_MEDIA_TYPE.to_owned(),
                            digest,
                            size: manifest.len() as u64,
                        },
                        platform.clone(),
                    ));
                }
                self.push_referrers(&mut counts).map_err(sink_err)?;
                let index = super::annotated_platform_index(&descs, &self.index_annotations);
                index_digest = Some(Digest::of(&index));
                for tag in &tags {
                    self.client
                        .put_typed_manifest(tag, &index, crate::oci::INDEX_MEDIA_TYPE)
                        .map_err(|e| sink_err(self.check_assumed(e)))?;
                }
            }
            _ => {
                return Err(super::Error::Unsupported {
                    what: "no image manifest was built, so there is nothing to push".to_owned(),
                })
            }
        }
        self.record_homes();
        counts.existing += self.unread.0.load(Ordering::Relaxed);
        counts.mounted += self.unread.1.load(Ordering::Relaxed);
        counts.index = index_digest;
        Ok((counts, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(byte: u8) -> serde_json::Value {
        serde_json::json!({
            "mediaType": crate::oci::MANIFEST_MEDIA_TYPE,
            "digest": Digest::of(&[byte]).prefixed(),
            "size": 1,
            "artifactType": "application/spdx+json",
        })
    }

    #[test]
    fn referrers_tags_keep_what_they_list_and_add_ours_once() {
        assert_eq!(
            referrers_tag(&Digest::of(b"")),
            "sha256-e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let first = merge_referrers(None, &[entry(1)]).unwrap();
        let again = merge_referrers(Some(&first), &[entry(1)]).unwrap();
        assert_eq!(first, again, "an entry already listed is not added twice");
        let both = merge_referrers(Some(&first), &[entry(2)]).unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&both).unwrap();
        let digests: Vec<&str> = doc["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["digest"].as_str().unwrap())
            .collect();
        assert_eq!(
            digests,
            [Digest::of(&[1]).prefixed(), Digest::of(&[2]).prefixed()]
        );
        assert_eq!(doc["mediaType"], crate::oci::INDEX_MEDIA_TYPE);
        for bad in [
            &b"[]"[..],
            b"{}",
            b"nope",
            br#"{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":5}"#,
        ] {
            assert!(merge_referrers(Some(bad), &[entry(1)]).is_err());
        }
    }

    proptest::proptest! {
        /// A referrers tag is the registry's (anyone's) bytes: any of them
        /// give an index or a refusal, never a panic.
        #[test]
        fn any_referrers_tag_merges_or_is_refused(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
            text in "[\\[\\]{}:,\" 0-9a-zA-Z.+/_-]{0,120}",
        ) {
            let _ = merge_referrers(Some(&bytes), &[entry(1)]);
            let prefixed = format!(r#"{{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{text}]}}"#);
            if let Ok(out) = merge_referrers(Some(prefixed.as_bytes()), &[entry(1)]) {
                let doc: serde_json::Value = serde_json::from_slice(&out).unwrap();
                proptest::prop_assert!(doc["manifests"].is_array());
            }
        }
    }

    #[test]
    fn the_spool_directory_is_removed_on_a_signal_too() {
        let target = Reference::parse("127.0.0.1:5000/x").unwrap();
        let options = ClientOptions {
            credentials: None,
            insecure: false,
            timeouts: Timeouts::default(),
            ca_file: None,
            chunk_size: 0,
            jobs: 0,
            pull_only: false,
        };
        let sink = RegistrySink::new(
            Client::new(&target, options),
            CompressOptions::NONE,
            Vec::new(),
        )
        .unwrap();
        let dir = sink.spool.path().to_owned();
        assert!(crate::cleanup::is_pending(&dir));
        drop(sink);
        assert!(!dir.exists());
        assert!(!crate::cleanup::is_pending(&dir));
    }
}
