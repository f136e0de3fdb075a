//! The one pass over the store's bytes: each measured layer through the one
//! layer writer ([`BlobWriter`]) into any [`ImageSink`], then the config
//! and the image manifest. A sink that takes blobs gets each layer
//! compressed on its own, unchanged layers skipped through the layer
//! cache; a docker-archive gets uncompressed members it compresses as one
//! stream.

use std::io::{self, Write};

use super::{
    reference, BlobCounts, BuildSettings, BuildSummary, Error, LayerSummary, MeasuredLayer,
    PreparedImage, Reporter,
};
use crate::codec::{BlobWriter, CompressOptions, WrittenBlob};
use crate::layer::cache::{BlobRecord, LayerRecord as CacheRecord};
use crate::nix::StorePath;
use crate::oci::{self, Descriptor, Digest};
use crate::sink::{ImageEntry, ImageSink, LayerForm, Platform};

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
/// layer's content key stands for its bytes.
fn cached_layer<S: ImageSink>(
    settings: &BuildSettings,
    layer: &MeasuredLayer,
    cache_name: &str,
    media_type: &str,
    sink: &S,
) -> Option<LayerSummary> {
    let record = settings
        .cache
        .as_ref()?
        .get(&layer.key, layer.store_paths())?;
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

/// Tells the reporter of each write's bytes (uncompressed) as they pass.
struct Progress<'a, W> {
    inner: W,
    index: usize,
    reporter: &'a dyn Reporter,
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
        let mut progress = Progress {
            inner: BlobWriter::layer(dest, compress).map_err(Error::Write)?,
            index,
            reporter,
        };
        let tar = self.write_layer(settings, index, &mut progress)?;
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
/// platform's summary, in the order given.
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
    for (settings, image) in images {
        let (mut summary, counts) = write_image(settings, image, &mut sink, reporter)?;
        summary.blobs = summary.blobs.map(|_| counts);
        summaries.push(summary);
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
    let cache_name = format!("{}-{}", compress.codec.name(), compress.level);
    let mut layers = Vec::with_capacity(image.layers.len());
    let cached: Vec<Option<LayerSummary>> = image
        .layers
        .iter()
        .map(|layer| {
            oci_output
                .then(|| cached_layer(settings, layer, &cache_name, media_type, &*sink))
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
    for ((index, layer), cached) in image.layers.iter().enumerate().zip(cached) {
        if let Some(summary) = cached {
            counts.existing += 1;
            counts.layers_cached += 1;
            reporter.on_layer_done(index, &summary.diff_id);
            layers.push(summary);
            continue;
        }
        reporter.on_layer_start(index, image.layers.len(), layer.store_paths(), layer.size);
        let dest = sink.start_layer(&layer.key, layer.size)?;
        let (dest, blob) = image.write_layer_blob(settings, index, &compress, dest, reporter)?;
        count(
            &mut counts,
            sink.commit_layer(dest, &blob.digest, blob.size)?,
        );
        reporter.on_layer_done(index, &blob.tar.diff_id);
        if let (true, Some(cache)) = (oci_output, &settings.cache) {
            let record = CacheRecord {
                tar: Some(BlobRecord {
                    digest: blob.tar.diff_id,
                    size: blob.tar.size,
                }),
                blobs: [(
                    cache_name.clone(),
                    BlobRecord {
                        digest: blob.digest,
                        size: blob.size,
                    },
                )]
                .into(),
            };
            // A cache that cannot be written only costs a later rebuild.
            let _ = cache.put(&layer.key, layer.store_paths(), &record);
        }
        layers.push(LayerSummary {
            diff_id: blob.tar.diff_id,
            size: blob.tar.size,
            paths: layer.store_paths().len(),
            digest: blob.digest,
            blob_size: blob.size,
            media_type: blob.media_type.to_owned(),
        });
    }
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
