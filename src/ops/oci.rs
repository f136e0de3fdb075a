//! The OCI writers: each layer compressed on its own into a blob of a
//! layout directory or an OCI archive, unchanged layers skipped through the
//! layer cache.

use std::io::Write;

use super::{
    reference, BlobCounts, BuildSettings, BuildSummary, Error, LayerSummary, MeasuredLayer,
    PreparedImage, Reporter,
};
use crate::codec::{CompressOptions, Compression, Compressor};
use crate::layer::cache::{BlobRecord, LayerRecord as CacheRecord};
use crate::oci;
use crate::oci::{CountWriter, Digest, HashCountWriter};
use crate::sink::oci_archive::OciArchiveWriter;
use crate::sink::oci_layout::OciLayout;
use crate::sink::BlobSink;

/// The OCI blobs of an image: what [`write_oci_blobs`] stored.
struct OciImage {
    summary: BuildSummary,
    /// The `index.json` entry naming the manifest.
    entry: serde_json::Value,
    tag: String,
}

fn count(counts: &mut BlobCounts, new: bool) {
    if new {
        counts.written += 1;
    } else {
        counts.existing += 1;
    }
}

/// The summary of `layer` from the layer cache, when the cache knows its
/// blob in this compression and `blobs` already holds that blob: then
/// nothing of the layer needs reading. Store paths are immutable, so the
/// layer's content key stands for its bytes.
fn cached_layer<S: BlobSink>(
    settings: &BuildSettings,
    layer: &MeasuredLayer,
    cache_name: &str,
    media_type: &str,
    blobs: &S,
) -> Option<LayerSummary> {
    let record = settings
        .cache
        .as_ref()?
        .get(&layer.key, layer.store_paths())?;
    let tar = record.tar?;
    let blob = record.blobs.get(cache_name)?;
    (tar.size == layer.size && blobs.has_blob(&blob.digest)).then(|| LayerSummary {
        diff_id: tar.digest,
        size: tar.size,
        paths: layer.store_paths().len(),
        digest: blob.digest,
        blob_size: blob.size,
        media_type: media_type.to_owned(),
    })
}

/// Streams each layer through diff_id hasher → compressor → blob hasher →
/// `blobs`, then stores the config and the manifest.
fn write_oci_blobs<S: BlobSink>(
    settings: &BuildSettings,
    image: &PreparedImage,
    compress: &CompressOptions,
    blobs: &mut S,
    reporter: &dyn Reporter,
) -> Result<OciImage, Error> {
    let media_type = compress.codec.layer_media_type().to_owned();
    let mut counts = BlobCounts::default();
    let cache_name = format!("{}-{}", compress.codec.name(), compress.level);
    let mut layers = Vec::with_capacity(image.layers.len());
    for (index, layer) in image.layers.iter().enumerate() {
        if let Some(summary) = cached_layer(settings, layer, &cache_name, &media_type, blobs) {
            counts.existing += 1;
            counts.layers_cached += 1;
            reporter.on_layer_done(index, &summary.diff_id);
            layers.push(summary);
            continue;
        }
        reporter.on_layer_start(index, image.layers.len(), layer.store_paths(), layer.size);
        let blob = blobs.start_blob()?;
        let (digest, blob, blob_digest, blob_size) = if compress.codec == Compression::None {
            // The blob is the layer tar: its digest is the diff_id, already
            // hashed once on the way; hashing it again would double the cost.
            let mut counted = CountWriter::new(blob);
            let digest = image.write_layer(settings, index, &mut counted)?;
            let (blob, size) = counted.finish().map_err(Error::Write)?;
            (digest, blob, digest.diff_id, size)
        } else {
            let mut compressor =
                Compressor::new(HashCountWriter::new(blob), compress).map_err(Error::Write)?;
            let digest = image.write_layer(settings, index, &mut compressor)?;
            let (blob, blob_digest, blob_size) = compressor
                .finish()
                .and_then(HashCountWriter::finish)
                .map_err(Error::Write)?;
            (digest, blob, blob_digest, blob_size)
        };
        if blobs.commit_blob(blob, &blob_digest, blob_size)? {
            counts.written += 1;
        } else {
            counts.existing += 1;
        }
        reporter.on_layer_done(index, &digest.diff_id);
        if let Some(cache) = &settings.cache {
            let record = CacheRecord {
                tar: Some(BlobRecord {
                    digest: digest.diff_id,
                    size: digest.size,
                }),
                blobs: [(
                    cache_name.clone(),
                    BlobRecord {
                        digest: blob_digest,
                        size: blob_size,
                    },
                )]
                .into(),
            };
            // A cache that cannot be written only costs a later rebuild.
            let _ = cache.put(&layer.key, layer.store_paths(), &record);
        }
        layers.push(LayerSummary {
            diff_id: digest.diff_id,
            size: digest.size,
            paths: layer.store_paths().len(),
            digest: blob_digest,
            blob_size,
            media_type: media_type.clone(),
        });
    }
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    let config = image.config_json(settings, &diff_ids);
    let (config_digest, new) = blobs.put_blob(&config)?;
    count(&mut counts, new);
    let config_desc = oci::Descriptor {
        media_type: oci::CONFIG_MEDIA_TYPE.to_owned(),
        digest: config_digest,
        size: config.len() as u64,
    };
    let layer_descs: Vec<oci::Descriptor> = layers
        .iter()
        .map(|l| oci::Descriptor {
            media_type: l.media_type.clone(),
            digest: l.digest,
            size: l.blob_size,
        })
        .collect();
    let manifest = oci::manifest_json(&config_desc, &layer_descs);
    let (manifest_digest, new) = blobs.put_blob(&manifest)?;
    count(&mut counts, new);
    let manifest_desc = oci::Descriptor {
        media_type: oci::MANIFEST_MEDIA_TYPE.to_owned(),
        digest: manifest_digest,
        size: manifest.len() as u64,
    };
    let reference = reference(settings, &config_digest);
    let tag = reference
        .rsplit_once(':')
        .map_or("latest", |(_, t)| t)
        .to_owned();
    let entry = oci::index_entry(
        &manifest_desc,
        &reference,
        &tag,
        &settings.config.os,
        &settings.config.architecture,
    );
    let bytes =
        layers.iter().map(|l| l.blob_size).sum::<u64>() + config_desc.size + manifest_desc.size;
    Ok(OciImage {
        summary: BuildSummary {
            reference,
            config_digest,
            layers,
            bytes,
            manifest_digest: Some(manifest_digest),
            blobs: Some(counts),
        },
        entry,
        tag,
    })
}

/// Writes `image` into the OCI image layout at `dir`, each layer
/// compressed on its own, and names it by its tag in `index.json`. Blobs
/// already in the layout are kept, not rewritten. A new layout appears
/// only once complete; a failed build leaves none (see [`OciLayout`]).
///
/// # Errors
/// When a store file cannot be read or the layout cannot be written.
pub fn write_oci_layout(
    settings: &BuildSettings,
    image: &PreparedImage,
    compress: &CompressOptions,
    dir: &std::path::Path,
    reporter: &dyn Reporter,
) -> Result<BuildSummary, Error> {
    let mut layout = OciLayout::create(dir)?;
    let written = write_oci_blobs(settings, image, compress, &mut layout, reporter)?;
    layout.set_tag(&written.tag, written.entry)?;
    Ok(written.summary)
}

/// Writes `image` as an OCI archive (an OCI layout in a tar) to `out`.
/// `bytes` in the summary counts the archive.
///
/// # Errors
/// When a store file cannot be read or `out` cannot be written.
pub fn write_oci_archive<W: Write + Send>(
    settings: &BuildSettings,
    image: &PreparedImage,
    compress: &CompressOptions,
    out: W,
    reporter: &dyn Reporter,
) -> Result<(W, BuildSummary), Error> {
    let mut archive = OciArchiveWriter::new(out, settings.mtime).map_err(Error::Write)?;
    let written = write_oci_blobs(settings, image, compress, &mut archive, reporter)?;
    let (out, bytes) = archive
        .finish(&oci::index_json(vec![written.entry]))
        .map_err(Error::Write)?;
    let mut summary = written.summary;
    summary.bytes = bytes;
    Ok((out, summary))
}

/// Writes `image`'s blobs (layers, config, manifest) into any [`BlobSink`],
/// e.g. a registry ([`crate::sink::registry::RegistrySink`]); the summary
/// names the config and manifest digests the sink was given.
///
/// # Errors
/// When a store file cannot be read or the sink fails.
pub fn write_oci_blobs_to<S: BlobSink>(
    settings: &BuildSettings,
    image: &PreparedImage,
    compress: &CompressOptions,
    blobs: &mut S,
    reporter: &dyn Reporter,
) -> Result<BuildSummary, Error> {
    Ok(write_oci_blobs(settings, image, compress, blobs, reporter)?.summary)
}
