//! The one pass over the store's bytes: each measured layer through the one
//! layer writer ([`BlobWriter`]) into any [`ImageSink`], then the config
//! and the image manifest. A sink that takes blobs gets each layer
//! compressed on its own, unchanged layers skipped through the layer
//! cache; a docker-archive gets uncompressed members it compresses as one
//! stream.

use std::io::{self, Write};

use super::{
    reference, BlobCounts, BuildSettings, BuildSummary, Error, LayerContent, LayerSummary,
    MeasuredLayer, PreparedImage, Reporter,
};
use crate::codec::{BlobWriter, CompressOptions, Compression, WrittenBlob};
use crate::layer::cache::{BlobRecord, LayerRecord as CacheRecord, Stamps};
use crate::layer::{self, ahead, LayerOptions};
use crate::nix::StorePath;
use crate::oci::{self, Descriptor, Digest, LayerDigest};
use crate::sink::{ImageEntry, ImageSink, LayerForm, Platform};
use crate::store::Store as _;

fn count(counts: &mut BlobCounts, new: bool) {
    if new {
        counts.written += 1;
    } else {
        counts.existing += 1;
    }
}

/// The summary of `layer` from the layer cache, when the cache knows its
/// blob in this compression and `sink` already holds that blob: then
/// nothing of the layer needs reading. Store paths are immutable, so the
/// layer's content key (with the store's `stamps` of its paths) stands for
/// its bytes.
fn cached_layer<S: ImageSink>(
    settings: &BuildSettings,
    layer: &MeasuredLayer,
    stamps: Option<&Stamps>,
    cache_name: &str,
    media_type: &str,
    sink: &S,
) -> Option<LayerSummary> {
    let record = settings.cache.as_ref()?.get_stamped(&layer.key, stamps?)?;
    let tar = record.tar?;
    let blob = record.blobs.get(cache_name)?;
    (tar.size == layer.size && sink.has_blob(&blob.digest)).then(|| LayerSummary {
        diff_id: tar.digest,
        size: tar.size,
        paths: layer.store_paths().len(),
        digest: blob.digest,
        blob_size: blob.size,
        media_type: media_type.to_owned(),
    })
}

/// The stamps of each store layer's paths, taken before any of its bytes
/// are read (`None` for other layers, or when the store cannot stamp);
/// with `content`, of every entry (see [`Stamps::of_content`]).
fn layer_stamps(
    settings: &BuildSettings,
    image: &PreparedImage,
    content: bool,
) -> Vec<Option<Stamps>> {
    image
        .layers
        .iter()
        .map(|layer| match &layer.content {
            // The walk that measured the layer stamped it already.
            LayerContent::Store(_) if content && layer.measured_stamps.is_some() => {
                layer.measured_stamps.clone()
            }
            LayerContent::Store(paths) if content => Stamps::of_content(&settings.store, paths),
            LayerContent::Store(paths) => Stamps::of(&settings.store, paths),
            LayerContent::Customisation(_) | LayerContent::Base(..) => None,
        })
        .collect()
}

/// The diff_id the layer cache holds for `layer` under `stamps`, when its
/// size is the measured one.
fn cached_diff_id(
    settings: &BuildSettings,
    layer: &MeasuredLayer,
    stamps: Option<&Stamps>,
) -> Option<Digest> {
    let tar = settings
        .cache
        .as_ref()?
        .get_stamped(&layer.key, stamps?)?
        .tar?;
    (tar.size == layer.size).then_some(tar.digest)
}

/// Fails with [`layer::Error::Modified`] unless the stamps of `paths`
/// that each walk in `walks` saw while reading the layer (the stream's,
/// and the helper's that hashed it) are `before`: the check that lets a
/// diff_id taken from the cache, or hashed by another thread, stand for
/// bytes just streamed. A walk's stamp takes each file's metadata after
/// the file was read, so an edit before the end of either read shows.
fn check_unchanged(
    settings: &BuildSettings,
    paths: &[StorePath],
    before: &Stamps,
    walks: &[&layer::WalkedStamps],
) -> Result<(), Error> {
    let Err(changed) = walks
        .iter()
        .try_for_each(|walked| before.check_walked(&settings.store, paths, walked))
    else {
        return Ok(());
    };
    let path = settings.store.location(
        changed
            .map_or(settings.store.dir().as_str(), StorePath::as_str)
            .as_bytes(),
    );
    Err(layer::Error::Modified { path }.into())
}

/// One multithreaded zstd compression at a time (see
/// [`layer_compression`]). A wide layer started while another compresses
/// reads and hashes its first bytes, then waits here.
#[derive(Default)]
struct WideGate {
    busy: std::sync::Mutex<bool>,
    freed: std::sync::Condvar,
}

impl WideGate {
    fn enter(&self) -> WideTurn<'_> {
        let mut busy = self
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        while *busy {
            busy = self
                .freed
                .wait(busy)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *busy = true;
        WideTurn(self)
    }
}

/// A wide layer's turn, until dropped.
struct WideTurn<'g>(&'g WideGate);

impl Drop for WideTurn<'_> {
    fn drop(&mut self) {
        *self
            .0
            .busy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
        self.0.freed.notify_one();
    }
}

/// A layer's blob writer, made at its first byte once its gate lets it.
struct GatedBlob<'g, W: Write> {
    /// Declared before `turn`: dropped first, so a failed layer frees its
    /// compressor before the next wide layer starts one.
    blob: Option<BlobWriter<W>>,
    turn: Option<WideTurn<'g>>,
    dest: Option<W>,
    compress: CompressOptions,
    gate: Option<&'g WideGate>,
}

impl<W: Write> GatedBlob<'_, W> {
    fn ready(&mut self) -> io::Result<&mut BlobWriter<W>> {
        if self.blob.is_none() {
            if let (Some(gate), None) = (self.gate, &self.turn) {
                self.turn = Some(gate.enter());
            }
            let dest = self
                .dest
                .take()
                .ok_or_else(|| io::Error::other("the blob writer failed"))?;
            self.blob = Some(BlobWriter::layer(dest, &self.compress)?);
        }
        self.blob
            .as_mut()
            .ok_or_else(|| io::Error::other("the blob writer failed"))
    }
}

impl<W: Write> Write for GatedBlob<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ready()?.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.ready()?.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.blob {
            Some(blob) => blob.flush(),
            None => Ok(()),
        }
    }
}

/// Tells the reporter of each write's bytes (uncompressed) as they pass.
pub(super) struct Progress<'a, W> {
    pub(super) inner: W,
    pub(super) index: usize,
    pub(super) reporter: &'a dyn Reporter,
}

impl<W: Write> Write for Progress<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.reporter.on_bytes(self.index, n as u64);
        Ok(n)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.reporter.on_bytes(self.index, buf.len() as u64);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl PreparedImage {
    /// The one layer writer: layer `index`'s tar → compressor (when
    /// `compress` says so) → blob hasher → `dest`, its bytes reported as
    /// they pass. Returns `dest` and the diff_id, blob digest, sizes and
    /// media type.
    ///
    /// # Errors
    /// When the store cannot be read, `dest` cannot be written, or the
    /// store changed since measuring.
    pub fn write_layer_blob<W: Write + Send>(
        &self,
        settings: &BuildSettings,
        index: usize,
        compress: &CompressOptions,
        dest: W,
        reporter: &dyn Reporter,
    ) -> Result<(W, WrittenBlob), Error> {
        self.write_gated_blob(settings, index, compress, dest, reporter, None)
    }

    /// [`PreparedImage::write_layer_blob`], compressing only once `gate`
    /// (if any) lets it: the layer's first bytes are read and hashed
    /// meanwhile.
    fn write_gated_blob<W: Write + Send>(
        &self,
        settings: &BuildSettings,
        index: usize,
        compress: &CompressOptions,
        dest: W,
        reporter: &dyn Reporter,
        gate: Option<&WideGate>,
    ) -> Result<(W, WrittenBlob), Error> {
        if let LayerContent::Base(base, i) = &self.layers[index].content {
            // A base layer already stored as this output stores layers
            // goes in as it is (see `BaseImage::stored_blob`).
            if let Some((digest, _)) = base.stored_blob(*i, compress.codec) {
                let mut dest = dest;
                let size = base.copy_stored_blob(*i, &mut dest)?;
                let layer = &base.layers[*i];
                reporter.on_bytes(index, layer.size);
                let blob = WrittenBlob {
                    tar: LayerDigest {
                        diff_id: layer.diff_id,
                        size: layer.size,
                    },
                    digest,
                    size,
                    media_type: compress.codec.layer_media_type(),
                };
                return Ok((dest, blob));
            }
        }
        let mut blob = GatedBlob {
            blob: None,
            turn: None,
            dest: Some(dest),
            compress: *compress,
            gate,
        };
        if gate.is_none() {
            blob.ready().map_err(Error::Write)?;
        }
        let mut progress = Progress {
            inner: blob,
            index,
            reporter,
        };
        let tar = self.write_layer(settings, index, &mut progress)?;
        let mut blob = progress.inner;
        blob.ready().map_err(Error::Write)?;
        let result = match blob.blob.take() {
            Some(writer) => writer.finish_layer(tar).map_err(Error::Write),
            None => Err(Error::Write(io::Error::other("the blob writer failed"))),
        };
        // The compressor is finished (its context back in the pool) before
        // the next wide layer may take it.
        drop(blob);
        result
    }

    /// [`PreparedImage::write_layer_blob`] for store layer `index`,
    /// uncompressed, whose diff_id `diff_id` gives once its bytes are
    /// written (from what the stream's walks saw of each store path):
    /// streamed without hashing.
    fn stream_store_blob<W: Write + Send>(
        &self,
        settings: &BuildSettings,
        index: usize,
        dest: W,
        reporter: &dyn Reporter,
        diff_id: impl FnOnce(&layer::WalkedStamps) -> Result<Digest, Error>,
    ) -> Result<(W, WrittenBlob), Error> {
        let layer = &self.layers[index];
        let mut progress = Progress {
            inner: BlobWriter::layer(dest, &CompressOptions::NONE).map_err(Error::Write)?,
            index,
            reporter,
        };
        let (size, walked) = layer::stream_store_layer_walked(
            &settings.layer_options(),
            layer.store_paths(),
            layer.size,
            &mut progress,
        )?;
        let tar = LayerDigest {
            diff_id: diff_id(&walked)?,
            size,
        };
        progress.inner.finish_layer(tar).map_err(Error::Write)
    }
}

/// Writes `image` into `sink`: each layer (from the layer cache when the
/// sink already holds its blob), the config, the image manifest; then
/// names it by its reference. `bytes` in the summary counts the output
/// when it is one stream, else the image's blobs.
///
/// # Errors
/// When a store file cannot be read or the sink fails.
pub fn build<S: ImageSink>(
    settings: &BuildSettings,
    image: &PreparedImage,
    mut sink: S,
    reporter: &dyn Reporter,
) -> Result<(BuildSummary, S::Output), Error> {
    let (mut summary, counts) = write_image(settings, image, &mut sink, reporter)?;
    sink.set_annotations(&super::output_annotations(settings));
    let (output, stream_bytes) = sink.finish(&summary.reference)?;
    if let Some(bytes) = stream_bytes {
        summary.bytes = bytes;
    }
    summary.blobs = summary.blobs.map(|_| counts);
    Ok((summary, output))
}

/// Writes each of `images` (one per platform, each with its own settings)
/// into `sink` and names them together by one image index, tagged by the
/// first image's reference. Layers the platforms share are stored (or
/// uploaded) once: the sink finds them already there. Returns each
/// platform's summary, in the order given. `reporter` sees the layers of
/// all the images numbered one after another (the second image's first
/// layer follows the first image's last), so one progress bar covers them.
///
/// # Errors
/// When a store file cannot be read or the sink fails, or the sink cannot
/// name several images (a docker-archive).
pub fn build_platforms<S: ImageSink>(
    images: &[(&BuildSettings, &PreparedImage)],
    mut sink: S,
    reporter: &dyn Reporter,
) -> Result<(Vec<BuildSummary>, S::Output), Error> {
    let mut summaries = Vec::with_capacity(images.len());
    let total = images.iter().map(|(_, image)| image.layers.len()).sum();
    let mut before = 0;
    for (settings, image) in images {
        let shifted = Shifted {
            inner: reporter,
            before,
            total,
        };
        let (mut summary, counts) = write_image(settings, image, &mut sink, &shifted)?;
        summary.blobs = summary.blobs.map(|_| counts);
        summaries.push(summary);
        before += image.layers.len();
    }
    let reference = summaries
        .first()
        .map(|s| s.reference.clone())
        .unwrap_or_default();
    if let Some((settings, _)) = images.first() {
        sink.set_annotations(&super::output_annotations(settings));
    }
    let (output, _) = sink.finish(&reference)?;
    Ok((summaries, output))
}

/// One image's layer numbers as those of all the images of an index:
/// layer `index` of this image is layer `before + index` of `total`.
struct Shifted<'a> {
    inner: &'a dyn Reporter,
    before: usize,
    total: usize,
}

impl Reporter for Shifted<'_> {
    fn on_layer_start(&self, index: usize, _total: usize, paths: &[StorePath], bytes: u64) {
        self.inner
            .on_layer_start(self.before + index, self.total, paths, bytes);
    }

    fn on_bytes(&self, index: usize, bytes: u64) {
        self.inner.on_bytes(self.before + index, bytes);
    }

    fn on_layer_done(&self, index: usize, diff_id: &Digest) {
        self.inner.on_layer_done(self.before + index, diff_id);
    }

    fn on_uploads(&self, meter: std::sync::Arc<crate::sink::registry::UploadMeter>) {
        self.inner.on_uploads(meter);
    }
}

/// Writes `image`'s layers, config and manifest into `sink` without naming
/// them; the summary's `bytes` counts the image's blobs.
fn write_image<S: ImageSink>(
    settings: &BuildSettings,
    image: &PreparedImage,
    sink: &mut S,
    reporter: &dyn Reporter,
) -> Result<(BuildSummary, BlobCounts), Error> {
    let form = sink.layer_form();
    // Members are the tars themselves; the sink compresses its stream.
    let (compress, oci_output) = match form {
        LayerForm::Blobs(compress) => (compress, true),
        LayerForm::Members => (CompressOptions::NONE, false),
    };
    let media_type = compress.codec.layer_media_type();
    let mut counts = BlobCounts::default();
    let cache_name = crate::codec::stored_form(&compress);
    // Taken once, before any byte of a layer is read: the cache files what
    // it learns under them, and a diff_id not hashed from the streamed
    // bytes themselves is checked against them after streaming.
    // A docker-archive streams layers whose diff_id came from the cache
    // or the helper thread, not from the bytes streamed: their stamps
    // must cover every entry, not just the live store's registration
    // (which lets OCI outputs and pushes skip layers without reading them).
    // A binary cache's stamps are its signed NarHashes (nothing read).
    let stamps = if settings.cache.is_some() || !oci_output {
        layer_stamps(settings, image, !oci_output)
    } else {
        vec![None; image.layers.len()]
    };
    let cached: Vec<Option<LayerSummary>> = image
        .layers
        .iter()
        .zip(&stamps)
        .map(|(layer, stamps)| {
            oci_output
                .then(|| {
                    cached_layer(
                        settings,
                        layer,
                        stamps.as_ref(),
                        &cache_name,
                        media_type,
                        &*sink,
                    )
                })
                .flatten()
        })
        .collect();
    if oci_output {
        // Blobs need no sizes up front, so a binary cache's NARs of every
        // layer still to write are fetched now, in parallel; a
        // docker-archive fetches each as its layer is written (its sizes
        // came from the listings, or everything was fetched to measure).
        let paths: Vec<StorePath> = image
            .layers
            .iter()
            .zip(&cached)
            .filter(|(_, cached)| cached.is_none())
            .flat_map(|(layer, _)| layer.store_paths().iter().cloned())
            .collect();
        settings.store.prefetch(&paths)?;
    }
    let layers = if oci_output {
        write_blobs(
            settings,
            image,
            sink,
            reporter,
            &compress,
            &cache_name,
            &stamps,
            cached,
            &mut counts,
        )?
    } else {
        write_members(settings, image, sink, reporter, &stamps, &mut counts)?
    };
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    let config = image.config_json(settings, &diff_ids);
    let (config_digest, new) = sink.put_blob(&config)?;
    count(&mut counts, new);
    let config_desc = Descriptor {
        media_type: oci::CONFIG_MEDIA_TYPE.to_owned(),
        digest: config_digest,
        size: config.len() as u64,
    };
    let layer_descs: Vec<Descriptor> = layers
        .iter()
        .map(|l| Descriptor {
            media_type: l.media_type.clone(),
            digest: l.digest,
            size: l.blob_size,
        })
        .collect();
    let manifest = oci::annotated_manifest_json(&config_desc, &layer_descs, &settings.annotations);
    let platform = Platform {
        os: settings.config.os.clone(),
        architecture: settings.config.architecture.clone(),
        variant: settings.config.variant.clone(),
    };
    let (manifest_desc, new) = sink.put_manifest(&ImageEntry {
        platform: &platform,
        config: &config_desc,
        layers: &layer_descs,
        manifest: &manifest,
    })?;
    count(&mut counts, new);
    let sboms = if settings.sbom.is_empty() {
        Vec::new()
    } else {
        let docs = super::sbom::write_sboms(settings, &image.closure, &image.plan, &settings.sbom)?;
        super::sbom::attach(sink, &docs, &manifest_desc, &settings.config.created)?
    };
    let reference = reference(settings, &config_digest);
    let bytes =
        layers.iter().map(|l| l.blob_size).sum::<u64>() + config_desc.size + manifest_desc.size;
    Ok((
        BuildSummary {
            reference,
            config_digest,
            layers,
            bytes,
            manifest_digest: oci_output.then_some(manifest_desc.digest),
            blobs: oci_output.then_some(counts),
            sboms,
        },
        counts,
    ))
}

/// The cache's record of a layer's tar, and of its blob when compressed on
/// its own (`cache_name`).
fn cache_record(blob: &WrittenBlob, cache_name: Option<&str>) -> CacheRecord {
    CacheRecord {
        tar: Some(BlobRecord {
            digest: blob.tar.diff_id,
            size: blob.tar.size,
        }),
        blobs: cache_name
            .map(|name| {
                (
                    name.to_owned(),
                    BlobRecord {
                        digest: blob.digest,
                        size: blob.size,
                    },
                )
            })
            .into_iter()
            .collect(),
    }
}

fn summary_of(blob: &WrittenBlob, layer: &MeasuredLayer) -> LayerSummary {
    LayerSummary {
        diff_id: blob.tar.diff_id,
        size: blob.tar.size,
        paths: layer.store_paths().len(),
        digest: blob.digest,
        blob_size: blob.size,
        media_type: blob.media_type.to_owned(),
    }
}

/// The layers of a sink that takes blobs, each compressed on its own;
/// those `cached` (known and already in the sink) are not read. When the
/// sink takes several blobs at once and more than one thread is allowed,
/// up to that many layers are compressed at the same time, each on a
/// thread of its own with the compressor's full thread count (a layer's
/// bytes never depend on it), and committed in layer order: small layers,
/// which one compressor cannot spread over several cores, then keep every
/// core busy, and a large one does not hold up the small ones after it
/// (they wait, written, for their turn to be committed). A layer's slot is
/// free once it is compressed: syncing its blob to the disk (waiting, not
/// working) overlaps the next layer's compression.
#[allow(clippy::too_many_arguments)]
fn write_blobs<S: ImageSink>(
    settings: &BuildSettings,
    image: &PreparedImage,
    sink: &mut S,
    reporter: &dyn Reporter,
    compress: &CompressOptions,
    cache_name: &str,
    stamps: &[Option<Stamps>],
    cached: Vec<Option<LayerSummary>>,
    counts: &mut BlobCounts,
) -> Result<Vec<LayerSummary>, Error> {
    let at_once = if sink.concurrent_layers() {
        compress.threads.get().min(MAX_LAYERS_AT_ONCE)
    } else {
        1
    };
    let total = image.layers.len();
    let mut layers = Vec::with_capacity(total);
    let mut cached: std::collections::VecDeque<Option<LayerSummary>> = cached.into();
    // Written layers waiting for the ones before them to be committed.
    let mut written = std::collections::BTreeMap::new();
    let mut to_write: Vec<usize> = (0..total).filter(|&i| cached[i].is_none()).collect();
    // The largest layer starts first (the others in order): the smaller
    // ones then fill the cores around it and end soon after it, instead
    // of it compressing alone at the end (a `popularity` plan puts half
    // the closure in its last layer). Commits still come in layer order.
    if at_once > 1 {
        if let Some(largest) = (0..to_write.len()).max_by_key(|&i| image.layers[to_write[i]].size) {
            to_write[..=largest].rotate_right(1);
        }
    }
    let mut to_start = to_write.into_iter().peekable();
    let gate = WideGate::default();
    std::thread::scope(|scope| -> Result<Vec<LayerSummary>, Error> {
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        // Layers being compressed, and compressed ones being synced.
        let mut running = 0;
        let mut sealing = 0;
        loop {
            while may_start(at_once, running, sealing, written.len()) {
                let Some(index) = to_start.next() else {
                    break;
                };
                let layer = &image.layers[index];
                let (own, wide) = layer_compression(compress, at_once, layer.size);
                let gate = wide.then_some(&gate);
                reporter.on_layer_start(index, total, layer.store_paths(), layer.size);
                let dest = sink.start_layer(&layer.key, layer.size)?;
                let done = done_tx.clone();
                scope.spawn(move || {
                    // The receivers are gone only when the build failed already.
                    let compressed = std::cell::Cell::new(false);
                    let body = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let result =
                            image.write_gated_blob(settings, index, &own, dest, reporter, gate);
                        let _ = done.send((index, None));
                        compressed.set(true);
                        result.and_then(|(mut dest, blob)| {
                            S::seal_layer_as(&mut dest, &blob.digest)?;
                            Ok((dest, blob))
                        })
                    }));
                    // A panic is the layer's error, not a build that waits
                    // for it forever.
                    let result = body.unwrap_or_else(|_| {
                        Err(Error::Write(io::Error::other("a layer writer panicked")))
                    });
                    if !compressed.get() {
                        let _ = done.send((index, None));
                    }
                    let _ = done.send((index, Some(result)));
                });
                running += 1;
            }
            // Commit, in layer order, whatever is ready.
            while let Some(next) = cached.front() {
                let index = layers.len();
                if let Some(summary) = next {
                    counts.existing += 1;
                    counts.layers_cached += 1;
                    reporter.on_layer_done(index, &summary.diff_id);
                } else {
                    let Some(result) = written.remove(&index) else {
                        break;
                    };
                    let (dest, blob): (S::Blob, WrittenBlob) = result?;
                    let layer = &image.layers[index];
                    count(counts, sink.commit_layer(dest, &blob.digest, blob.size)?);
                    reporter.on_layer_done(index, &blob.tar.diff_id);
                    if let (Some(cache), Some(stamps)) = (&settings.cache, &stamps[index]) {
                        // A cache that cannot be written only costs a later rebuild.
                        let record = cache_record(&blob, Some(cache_name));
                        let _ = cache.put_stamped(&layer.key, stamps, &record);
                    }
                    cached[0] = Some(summary_of(&blob, layer));
                }
                if let Some(Some(summary)) = cached.pop_front() {
                    layers.push(summary);
                }
            }
            if running == 0 && sealing == 0 {
                if to_start.peek().is_none() {
                    break;
                }
                // Layers written while the oldest was still being written
                // filled the waiting room; committing them made room again.
                continue;
            }
            let (index, result) = done_rx
                .recv()
                .map_err(|_| Error::Write(io::Error::other("a layer writer stopped")))?;
            match result {
                // Compressed (or failed): its slot is free.
                None => {
                    running -= 1;
                    sealing += 1;
                }
                Some(result) => {
                    sealing -= 1;
                    written.insert(index, result);
                }
            }
        }
        if layers.len() == total {
            Ok(layers)
        } else {
            Err(Error::Write(io::Error::other("a layer was never written")))
        }
    })
}

/// How a layer `size` bytes long is compressed when `at_once` layers may
/// be compressed at the same time, and whether it is a wide layer (one at
/// a time: see [`WideGate`]).
///
/// - gzip: a small layer gets one thread (it is a few blocks: more would
///   only hold more buffers), others all of them.
/// - zstd: a layer of one compression job gets one worker (a second would
///   never have a job); a larger one gets all of them, but only one such
///   layer is compressed at a time: each multithreaded context holds
///   ~20 MiB of buffers, and two would also run twice as many workers as
///   cores. Beside it, the next layer is read and hashed, and compressed
///   when it is small, which keeps the cores busy while the wide one
///   waits for its last job.
///
/// Worker counts never change the bytes (see `codec::compress`).
fn layer_compression(
    compress: &CompressOptions,
    at_once: usize,
    size: u64,
) -> (CompressOptions, bool) {
    let mut own = *compress;
    if compress.codec == Compression::Zstd {
        if size <= crate::codec::compress::ZSTD_JOB {
            own.threads = std::num::NonZeroUsize::MIN;
        }
    } else if at_once > 1 && size < SMALL_LAYER {
        own.threads = std::num::NonZeroUsize::MIN;
    }
    let wide = at_once > 1 && compress.codec == Compression::Zstd && own.threads.get() > 1;
    (own, wide)
}

/// Layers written at once into a sink that takes blobs: enough to keep two
/// or more cores busy with small layers, few enough that the blobs in
/// flight (each with its compressor's buffers) keep memory small.
const MAX_LAYERS_AT_ONCE: usize = 2;

/// Below this many tar bytes a gzip layer written beside another gets one
/// compressor thread: eight gzip members. (zstd decides by its job size,
/// [`crate::codec::compress::ZSTD_JOB`].)
const SMALL_LAYER: u64 = 8 << 20;

/// Written layers that may wait for an earlier, larger one to be
/// committed before no new layer is started. Each is a synced temporary
/// file and its small write buffer, so the room is wide: while a wide zstd
/// layer compresses, the one-job layers after it are written beside it one
/// by one, and the next wide layer must still start (read and hash its
/// first bytes, then wait for its turn) instead of waiting for the wide
/// one's commit and leaving a core idle through that layer's last jobs.
const MAX_WRITTEN_WAITING: usize = 32;

/// Whether [`write_blobs`] starts another layer, with `running` being
/// compressed, `sealing` compressed and being synced, and `waiting`
/// written but not yet committable: a free slot, fewer than twice as many
/// layers as slots compressing or syncing, and room to wait.
fn may_start(at_once: usize, running: usize, sealing: usize, waiting: usize) -> bool {
    running < at_once && running + sealing < 2 * at_once && waiting < MAX_WRITTEN_WAITING
}

/// How a docker-archive member's diff_id is had.
#[derive(Clone, Copy)]
enum DiffId {
    /// Hashed as its bytes stream.
    Streamed,
    /// From the layer cache.
    Cached(Digest),
    /// Hashed by the helper thread (see [`layer::ahead`]).
    Ahead,
}

/// The layers of a docker-archive, in order, as uncompressed members: a
/// store layer whose diff_id the cache knows streams without hashing, and
/// the others are hashed either as they stream or, on a helper thread,
/// ahead of the streaming. A diff_id not hashed from the streamed bytes
/// stands only if the store's stamps of the layer's paths are the same
/// after streaming as before the hash was taken (a binary cache's are the
/// signed NarHashes its NARs were checked against). From a binary cache
/// the helper gets (downloads, or finds in the NAR cache) the NARs of the
/// layers it takes, so both cores decompress and hash; a NAR both threads
/// want is got once ([`crate::store::BinaryCache`] makes the second wait).
fn write_members<S: ImageSink>(
    settings: &BuildSettings,
    image: &PreparedImage,
    sink: &mut S,
    reporter: &dyn Reporter,
    stamps: &[Option<Stamps>],
    counts: &mut BlobCounts,
) -> Result<Vec<LayerSummary>, Error> {
    let known: Vec<Option<Digest>> = image
        .layers
        .iter()
        .zip(stamps)
        .map(|(layer, stamps)| cached_diff_id(settings, layer, stamps.as_ref()))
        .collect();
    let jobs: Vec<ahead::Job<'_>> = image
        .layers
        .iter()
        .zip(stamps)
        .zip(&known)
        .map(|((layer, stamps), known)| {
            let LayerContent::Store(paths) = &layer.content else {
                return None;
            };
            (stamps.is_some() && known.is_none()).then_some((paths.as_slice(), layer.size))
        })
        .collect();
    if jobs.iter().all(Option::is_none) {
        return stream_members(
            settings, image, sink, reporter, stamps, &known, None, counts,
        );
    }
    let stream = |ahead: &ahead::Ahead| {
        stream_members(
            settings,
            image,
            sink,
            reporter,
            stamps,
            &known,
            Some(ahead),
            counts,
        )
    };
    fn opts<S: crate::store::Store>(settings: &BuildSettings, store: S) -> LayerOptions<S> {
        LayerOptions {
            store,
            owner: settings.owner.clone(),
            mtime: settings.mtime,
            permissions: settings.content.permissions.clone(),
        }
    }
    match settings.store.local() {
        Some(local) => ahead::with_hashing_ahead(&opts(settings, local), &jobs, stream),
        None => ahead::with_hashing_ahead(&opts(settings, &settings.store), &jobs, stream),
    }
}

#[allow(clippy::too_many_arguments)]
fn stream_members<S: ImageSink>(
    settings: &BuildSettings,
    image: &PreparedImage,
    sink: &mut S,
    reporter: &dyn Reporter,
    stamps: &[Option<Stamps>],
    known: &[Option<Digest>],
    ahead: Option<&ahead::Ahead>,
    counts: &mut BlobCounts,
) -> Result<Vec<LayerSummary>, Error> {
    let mut layers = Vec::with_capacity(image.layers.len());
    for (index, layer) in image.layers.iter().enumerate() {
        reporter.on_layer_start(index, image.layers.len(), layer.store_paths(), layer.size);
        let how = match known[index] {
            Some(diff_id) => DiffId::Cached(diff_id),
            None if ahead.is_some_and(|a| a.claim(index)) => DiffId::Ahead,
            None => DiffId::Streamed,
        };
        let dest = sink.start_layer(&layer.key, layer.size)?;
        let (dest, blob) = match (how, &stamps[index]) {
            (DiffId::Cached(diff_id), Some(before)) => {
                image.stream_store_blob(settings, index, dest, reporter, |walked| {
                    check_unchanged(settings, layer.store_paths(), before, &[walked])?;
                    Ok(diff_id)
                })?
            }
            (DiffId::Ahead, Some(before)) => {
                image.stream_store_blob(settings, index, dest, reporter, |walked| {
                    let (hashed, helper_walked) = ahead
                        .ok_or_else(|| Error::Write(io::Error::other("no helper thread")))?
                        .result_walked(index)?;
                    // The helper measured the same tar size, or failed; it
                    // and the stream each read the bytes the stamps from
                    // before name, or the check fails.
                    check_unchanged(
                        settings,
                        layer.store_paths(),
                        before,
                        &[walked, &helper_walked],
                    )?;
                    Ok(hashed.diff_id)
                })?
            }
            _ => image.write_layer_blob(settings, index, &CompressOptions::NONE, dest, reporter)?,
        };
        count(counts, sink.commit_layer(dest, &blob.digest, blob.size)?);
        reporter.on_layer_done(index, &blob.tar.diff_id);
        if let (Some(cache), Some(stamps), DiffId::Streamed | DiffId::Ahead) =
            (&settings.cache, &stamps[index], how)
        {
            // A cache that cannot be written only costs a later rebuild.
            let _ = cache.put_stamped(&layer.key, stamps, &cache_record(&blob, None));
        }
        layers.push(summary_of(&blob, layer));
    }
    Ok(layers)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    fn options(codec: Compression, threads: usize) -> CompressOptions {
        CompressOptions {
            threads: NonZeroUsize::new(threads).unwrap(),
            ..CompressOptions::new(codec, NonZeroUsize::MIN)
        }
    }

    /// zstd: one-job layers on one worker, larger ones on every worker,
    /// one at a time; gzip as before.
    #[test]
    fn one_zstd_layer_at_a_time_gets_every_worker() {
        let zstd = options(Compression::Zstd, 2);
        let job = crate::codec::compress::ZSTD_JOB;
        let how = |size| {
            let (o, wide) = layer_compression(&zstd, 2, size);
            (o.threads.get(), wide)
        };
        assert_eq!(how(job), (1, false));
        assert_eq!(how(job + 1), (2, true));
        // One thread allowed: nothing to wait for.
        let one = options(Compression::Zstd, 1);
        assert!(!layer_compression(&one, 1, 1 << 30).1);
        let gzip = options(Compression::Gzip, 2);
        let gzip_how = |size| {
            let (o, wide) = layer_compression(&gzip, 2, size);
            (o.threads.get(), wide)
        };
        assert_eq!(gzip_how(SMALL_LAYER - 1), (1, false));
        assert_eq!(gzip_how(SMALL_LAYER), (2, false));
    }

    /// A 7 MiB layer compresses with every worker, the five one-job
    /// layers after it are written beside it and wait for its commit; a
    /// large layer after them (the bench closure's layers 92-99, before
    /// the largest layer was started first) still starts, to read its first bytes and take its turn the moment the
    /// 7 MiB one is compressed. A full room, a full slot or too many blobs
    /// syncing still stop new layers.
    #[test]
    fn a_layer_starts_while_small_ones_wait_for_a_wide_ones_commit() {
        assert!(may_start(2, 1, 0, 5));
        assert!(may_start(2, 1, 1, 12));
        assert!(!may_start(2, 1, 0, MAX_WRITTEN_WAITING));
        assert!(!may_start(2, 2, 0, 0));
        assert!(!may_start(2, 1, 3, 0));
        assert!(!may_start(1, 1, 0, 0));
        assert!(may_start(1, 0, 1, 0));
    }

    /// A second wide layer waits for the first one's turn to end.
    #[test]
    fn the_wide_gate_lets_one_in_at_a_time() {
        let gate = WideGate::default();
        let inside = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _turn = gate.enter();
                        let n = inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(n, 0);
                        std::thread::yield_now();
                        inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    }
                });
            }
        });
    }
}
