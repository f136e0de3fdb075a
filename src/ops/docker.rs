//! The docker-archive writers: the image in one pass over the store, the
//! whole stream compressed when asked (as nixpkgs' `buildLayeredImage` does).

use std::io::Write;

use super::{reference, BuildSettings, BuildSummary, Error, LayerSummary, PreparedImage, Reporter};
use crate::codec::{CompressOptions, Compressor};
use crate::oci;
use crate::oci::{CountWriter, Digest};
use crate::sink::docker_archive::{layer_member, DockerArchiveWriter};

/// Writes `image` as a docker-archive to `out` in one pass over the store.
///
/// # Errors
/// When a store file cannot be read or `out` cannot be written.
pub fn write_docker_archive<W: Write + Send>(
    settings: &BuildSettings,
    image: &PreparedImage,
    out: W,
    reporter: &dyn Reporter,
) -> Result<(W, BuildSummary), Error> {
    let mut archive = DockerArchiveWriter::new(out, settings.mtime);
    let mut layers = Vec::with_capacity(image.layers.len());
    for (index, layer) in image.layers.iter().enumerate() {
        reporter.on_layer_start(index, image.layers.len(), layer.store_paths(), layer.size);
        archive
            .start_layer(layer_member(&layer.key), layer.size)
            .map_err(Error::Write)?;
        let digest = image.write_layer(settings, index, archive.body())?;
        archive.end_layer().map_err(Error::Write)?;
        reporter.on_layer_done(index, &digest.diff_id);
        layers.push(LayerSummary {
            diff_id: digest.diff_id,
            size: digest.size,
            paths: layer.store_paths().len(),
            digest: digest.diff_id,
            blob_size: digest.size,
            media_type: oci::LAYER_MEDIA_TYPE.to_owned(),
        });
    }
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    let config = image.config_json(settings, &diff_ids);
    let config_digest = Digest::of(&config);
    let reference = reference(settings, &config_digest);
    let (out, archive_summary) = archive
        .finish(&config, std::slice::from_ref(&reference))
        .map_err(Error::Write)?;
    Ok((
        out,
        BuildSummary {
            reference,
            config_digest,
            layers,
            bytes: archive_summary.bytes,
            manifest_digest: None,
            blobs: None,
        },
    ))
}

/// Writes `image` as a docker-archive compressed as a whole (as nixpkgs'
/// `buildLayeredImage` does) to `out`; `bytes` in the summary counts the
/// compressed bytes.
///
/// # Errors
/// When a store file cannot be read or `out` cannot be written.
pub fn write_compressed_docker_archive<W: Write + Send>(
    settings: &BuildSettings,
    image: &PreparedImage,
    compress: &CompressOptions,
    out: W,
    reporter: &dyn Reporter,
) -> Result<(W, BuildSummary), Error> {
    let counted = Compressor::new(CountWriter::new(out), compress).map_err(Error::Write)?;
    let (compressor, mut summary) = write_docker_archive(settings, image, counted, reporter)?;
    let (out, bytes) = compressor
        .finish()
        .and_then(CountWriter::finish)
        .map_err(Error::Write)?;
    summary.bytes = bytes;
    Ok((out, summary))
}
