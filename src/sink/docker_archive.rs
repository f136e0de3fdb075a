//! The docker-archive format (`docker load`, `podman load`, skopeo
//! `docker-archive:`): layer members, then the config, then `manifest.json`.
//!
//! Written in one pass: a layer member's size is known from measuring, its
//! diff_id only once its bytes have streamed through, so members are named
//! by a *content key* known up front (see [`layer_member`]) and the config
//! and `manifest.json`, which need the diff_ids, come last. `docker load`
//! and skopeo read `manifest.json` first whatever its position.

use std::io::{self, Write};

use crate::oci::Digest;
use crate::tar::{Header, Kind, TarWriter};

/// The member name of a layer whose content is identified by `key`
/// (`<hex>/layer.tar`, the usual docker-archive shape).
#[must_use]
pub fn layer_member(key: &Digest) -> String {
    format!("{}/layer.tar", key.hex())
}

/// Writes a docker-archive to `W`.
pub struct DockerArchiveWriter<W: Write + Send> {
    tar: TarWriter<W>,
    mtime: u64,
    layers: Vec<String>,
}

/// What the finished archive holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchiveSummary {
    /// sha256 of the config, the docker image id.
    pub config_digest: Digest,
    /// Bytes written.
    pub bytes: u64,
}

impl<W: Write + Send> DockerArchiveWriter<W> {
    /// Starts an archive; every member gets `mtime`.
    pub fn new(out: W, mtime: u64) -> Self {
        Self {
            tar: TarWriter::new(out),
            mtime,
            layers: Vec::new(),
        }
    }

    fn member_header(&self, name: &str, size: u64) -> Header {
        Header::archive_member(name, Kind::Regular, size, self.mtime)
    }

    /// Starts a layer member of `size` bytes; its bytes follow through
    /// [`DockerArchiveWriter::body`].
    ///
    /// # Errors
    /// When writing fails.
    pub fn start_layer(&mut self, member: String, size: u64) -> io::Result<()> {
        let header = self.member_header(&member, size);
        self.tar.start_entry(&header)?;
        self.layers.push(member);
        Ok(())
    }

    /// Where the current layer's bytes go.
    pub fn body(&mut self) -> &mut impl Write {
        &mut self.tar
    }

    /// Ends the current layer member.
    ///
    /// # Errors
    /// When writing fails or the layer was shorter than announced.
    pub fn end_layer(&mut self) -> io::Result<()> {
        self.tar.end_entry()
    }

    /// Writes the config and `manifest.json` naming `repo_tags`, then the trailer.
    ///
    /// # Errors
    /// When writing fails.
    pub fn finish(
        mut self,
        config: &[u8],
        repo_tags: &[String],
    ) -> io::Result<(W, ArchiveSummary)> {
        let config_digest = Digest::of(config);
        let config_member = format!("{}.json", config_digest.hex());
        let header = self.member_header(&config_member, config.len() as u64);
        self.tar.append(&header, config)?;
        let manifest = crate::oci::docker_manifest_json(&config_member, repo_tags, &self.layers);
        let header = self.member_header("manifest.json", manifest.len() as u64);
        self.tar.append(&header, &manifest)?;
        // Counted, not hashed: nothing needs the archive's own digest, and a
        // second sha256 over every byte would cost as much as the layers' own.
        let bytes = self.tar.bytes_written();
        let out = self.tar.finish()?;
        Ok((
            out,
            ArchiveSummary {
                config_digest,
                bytes: crate::tar::archive_len(bytes),
            },
        ))
    }
}
