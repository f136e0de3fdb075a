//! The docker-archive format (`docker load`, `podman load`, skopeo
//! `docker-archive:`): layer members, then the config, then `manifest.json`.
//!
//! Written in one pass: a layer member's size is known from measuring, its
//! diff_id only once its bytes have streamed through, so members are named
//! by a *content key* known up front (see [`layer_member`]) and the config
//! and `manifest.json`, which need the diff_ids, come last. `docker load`
//! and skopeo read `manifest.json` first whatever its position.

use std::io::{self, Write};
use std::path::PathBuf;

use super::{Error, ImageEntry, ImageSink, LayerForm};
use crate::codec::{BlobWriter, CompressOptions};
use crate::oci::{Descriptor, Digest};
use crate::tar::{Header, Kind, TarWriter};

/// The member name of a layer whose content is identified by `key`
/// (`<hex>/layer.tar`, the usual docker-archive shape).
#[must_use]
pub fn layer_member(key: &Digest) -> String {
    format!("{}/layer.tar", key.hex())
}

/// Writes a docker-archive to `W`, compressed as a whole when asked (as
/// nixpkgs' `buildLayeredImage` does).
pub struct DockerArchiveWriter<W: Write + Send> {
    /// `None` while a layer member is being written (it is in the
    /// [`LayerMember`]).
    tar: Option<TarWriter<BlobWriter<W>>>,
    mtime: u64,
    /// Layer members since the last manifest.
    layers: Vec<String>,
    /// Per image put: its config member and layer members.
    images: Vec<(String, Vec<String>)>,
}

/// A layer member being written: the archive's stream, lent out until
/// [`ImageSink::commit_layer`] takes it back.
pub struct LayerMember<W: Write + Send>(TarWriter<BlobWriter<W>>);

impl<W: Write + Send> Write for LayerMember<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

fn archive_err(source: io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("<docker-archive>"),
        source,
    }
}

impl<W: Write + Send> DockerArchiveWriter<W> {
    /// Starts an archive compressed with `compress` as a whole; every
    /// member gets `mtime`.
    ///
    /// # Errors
    /// When the compressor cannot be set up.
    pub fn new(out: W, mtime: u64, compress: &CompressOptions) -> io::Result<Self> {
        Ok(Self {
            tar: Some(TarWriter::new(BlobWriter::stream(out, compress)?)),
            mtime,
            layers: Vec::new(),
            images: Vec::new(),
        })
    }

    fn member_header(&self, name: &str, size: u64) -> Header {
        Header::archive_member(name, Kind::Regular, size, self.mtime)
    }

    /// Adds the layer member of `key` written earlier (a layer two images
    /// share) to the image being put, without writing it again.
    pub fn reuse_layer(&mut self, key: &Digest) {
        self.layers.push(layer_member(key));
    }

    /// Records an image whose config `config` was put with
    /// [`ImageSink::put_blob`] (or earlier), over the layers started since
    /// the last image, as `merge` does (no OCI manifest needed).
    pub fn add_image(&mut self, config: &Digest) {
        let config = format!("{}.json", config.hex());
        self.images.push((config, std::mem::take(&mut self.layers)));
    }

    /// Writes `manifest.json`, an entry per image with its own `RepoTags`
    /// (`tags[i]` for the `i`th image; an empty list leaves it untagged),
    /// then the trailer; returns the writer and the bytes written.
    ///
    /// # Errors
    /// When writing fails, or a layer is still being written.
    pub fn finish_tagged(mut self, tags: &[Vec<String>]) -> Result<(W, u64), Error> {
        let mut entries = Vec::new();
        for (i, (config, layers)) in self.images.iter().enumerate() {
            let repo_tags = tags.get(i).map_or(&[][..], Vec::as_slice);
            let json = crate::oci::docker_manifest_json(config, repo_tags, layers);
            if let Ok(serde_json::Value::Array(entry)) = serde_json::from_slice(&json) {
                entries.extend(entry);
            }
        }
        let manifest = crate::oci::canonical_json(&serde_json::Value::Array(entries));
        let header = self.member_header("manifest.json", manifest.len() as u64);
        let mut tar = self.tar.take().ok_or_else(|| Error::Unsupported {
            what: "a docker-archive ended inside a layer".to_owned(),
        })?;
        tar.append(&header, &manifest).map_err(archive_err)?;
        tar.finish()
            .and_then(BlobWriter::finish_stream)
            .map_err(archive_err)
    }

    fn tar(&mut self) -> Result<&mut TarWriter<BlobWriter<W>>, Error> {
        self.tar.as_mut().ok_or_else(|| Error::Unsupported {
            what: "a docker-archive writes one layer at a time".to_owned(),
        })
    }
}

impl<W: Write + Send> ImageSink for DockerArchiveWriter<W> {
    type Blob = LayerMember<W>;
    type Output = W;

    fn layer_form(&self) -> LayerForm {
        LayerForm::Members
    }

    fn start_layer(&mut self, key: &Digest, size: u64) -> Result<LayerMember<W>, Error> {
        let member = layer_member(key);
        let header = self.member_header(&member, size);
        let mut tar = self.tar.take().ok_or_else(|| Error::Unsupported {
            what: "a docker-archive writes one layer at a time".to_owned(),
        })?;
        // On an error the archive is unusable anyway: the stream stays out.
        tar.start_entry(&header).map_err(archive_err)?;
        self.layers.push(member);
        Ok(LayerMember(tar))
    }

    fn commit_layer(
        &mut self,
        blob: LayerMember<W>,
        _digest: &Digest,
        _size: u64,
    ) -> Result<bool, Error> {
        let mut tar = blob.0;
        // Fails when the layer was shorter than announced.
        tar.end_entry().map_err(archive_err)?;
        self.tar = Some(tar);
        Ok(true)
    }

    /// Writes the config member (`<hex>.json`).
    fn put_blob(&mut self, config: &[u8]) -> Result<(Digest, bool), Error> {
        let digest = Digest::of(config);
        let member = format!("{}.json", digest.hex());
        let header = self.member_header(&member, config.len() as u64);
        self.tar()?.append(&header, config).map_err(archive_err)?;
        Ok((digest, true))
    }

    /// Records the image for `manifest.json` (a docker-archive holds no
    /// OCI manifest).
    fn put_manifest(&mut self, image: &ImageEntry<'_>) -> Result<(Descriptor, bool), Error> {
        let config = format!("{}.json", image.config.digest.hex());
        self.images.push((config, std::mem::take(&mut self.layers)));
        let desc = Descriptor {
            media_type: crate::oci::MANIFEST_MEDIA_TYPE.to_owned(),
            digest: Digest::of(image.manifest),
            size: image.manifest.len() as u64,
        };
        Ok((desc, false))
    }

    /// Writes `manifest.json`, an entry per image, each tagged
    /// `reference`, then the trailer.
    fn finish(mut self, reference: &str) -> Result<(W, Option<u64>), Error> {
        let repo_tags = [reference.to_owned()];
        let mut entries = Vec::new();
        for (config, layers) in &self.images {
            let json = crate::oci::docker_manifest_json(config, &repo_tags, layers);
            if let Ok(serde_json::Value::Array(entry)) = serde_json::from_slice(&json) {
                entries.extend(entry);
            }
        }
        let manifest = crate::oci::canonical_json(&serde_json::Value::Array(entries));
        let header = self.member_header("manifest.json", manifest.len() as u64);
        let tar = self.tar.take().ok_or_else(|| Error::Unsupported {
            what: "a docker-archive ended inside a layer".to_owned(),
        })?;
        let mut tar = tar;
        tar.append(&header, &manifest).map_err(archive_err)?;
        let (out, bytes) = tar
            .finish()
            .and_then(BlobWriter::finish_stream)
            .map_err(archive_err)?;
        Ok((out, Some(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci::Descriptor;
    use crate::sink::Platform;

    #[test]
    fn two_images_make_two_manifest_entries_and_members_are_sized_first() {
        let mut w = DockerArchiveWriter::new(Vec::new(), 1, &CompressOptions::NONE).unwrap();
        let platform = Platform::default();
        for (n, body) in [(1u8, &b"layer one"[..]), (2, b"layer two")] {
            let key = Digest::of(&[n]);
            let mut member = w.start_layer(&key, body.len() as u64).unwrap();
            member.write_all(body).unwrap();
            w.commit_layer(member, &Digest::of(body), body.len() as u64)
                .unwrap();
            let config = format!("{{\"n\":{n}}}");
            let (digest, _) = w.put_blob(config.as_bytes()).unwrap();
            let config = Descriptor {
                media_type: crate::oci::CONFIG_MEDIA_TYPE.into(),
                digest,
                size: config.len() as u64,
            };
            w.put_manifest(&ImageEntry {
                platform: &platform,
                config: &config,
                layers: &[],
                manifest: b"{}",
            })
            .unwrap();
        }
        let (bytes, len) = w.finish("x:y").unwrap();
        assert_eq!(len, Some(bytes.len() as u64));
        let at = bytes
            .windows(b"manifest.json".len())
            .position(|w| w == b"manifest.json")
            .unwrap();
        let body = &bytes[at - at % 512 + 512..];
        let end = body.iter().position(|&b| b == 0).unwrap();
        let manifest: serde_json::Value = serde_json::from_slice(&body[..end]).unwrap();
        let entries = manifest.as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(
            entries[0]["Layers"],
            serde_json::json!([layer_member(&Digest::of(&[1]))])
        );
        assert_eq!(
            entries[1]["Layers"],
            serde_json::json!([layer_member(&Digest::of(&[2]))])
        );
        assert_eq!(entries[1]["RepoTags"], serde_json::json!(["x:y"]));
    }

    #[test]
    fn a_layer_shorter_than_announced_fails() {
        let mut w = DockerArchiveWriter::new(Vec::new(), 1, &CompressOptions::NONE).unwrap();
        let mut member = w.start_layer(&Digest::of(b"k"), 10).unwrap();
        member.write_all(b"short").unwrap();
        assert!(w.commit_layer(member, &Digest::of(b"short"), 5).is_err());
    }
}
