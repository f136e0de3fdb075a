//! An OCI image layout in one tar (skopeo's `oci-archive:`), written to any
//! [`Write`] with the Python-compatible [`TarWriter`], deterministically:
//! `oci-layout`, the `blobs/` directories, the blobs in the order they are
//! stored, then `index.json`.
//!
//! A tar header needs the member's size before its bytes, and a compressed
//! layer's size is only known once it is compressed, so each layer blob is
//! spooled to an anonymous temporary file first and then copied in: the
//! store is still read once, the spool adds a local write and read.

use std::collections::BTreeSet;
use std::io::{self, Write};
use std::path::PathBuf;

use super::{Error, ImageEntry, ImageSink, LayerForm, SpooledBlob};
use crate::codec::CompressOptions;
use crate::oci;
use crate::oci::{CountWriter, Descriptor, Digest};
use crate::tar::{Header, Kind, TarWriter};

/// Writes an OCI archive to `W`.
pub struct OciArchiveWriter<W: Write> {
    tar: TarWriter<CountWriter<W>>,
    mtime: u64,
    compress: CompressOptions,
    stored: BTreeSet<Digest>,
    /// What `index.json` will list.
    index: super::PendingIndex,
}

fn archive_err(source: io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("<oci-archive>"),
        source,
    }
}

impl<W: Write> OciArchiveWriter<W> {
    /// Starts an archive whose layers are compressed with `compress`;
    /// every member gets `mtime`.
    ///
    /// # Errors
    /// When writing fails.
    pub fn new(out: W, mtime: u64, compress: CompressOptions) -> io::Result<Self> {
        let mut w = Self {
            tar: TarWriter::new(CountWriter::new(out)),
            mtime,
            compress,
            stored: BTreeSet::new(),
            index: super::PendingIndex::default(),
        };
        w.tar.append(
            &w.header("oci-layout", Kind::Regular, oci::LAYOUT_FILE.len() as u64),
            oci::LAYOUT_FILE,
        )?;
        for dir in ["blobs/", "blobs/sha256/"] {
            w.tar.append(&w.header(dir, Kind::Directory, 0), &[])?;
        }
        Ok(w)
    }

    fn header(&self, name: &str, kind: Kind, size: u64) -> Header {
        Header::archive_member(name, kind, size, self.mtime)
    }

    /// Writes `index.json` holding `entries` (descriptors of manifests or
    /// indexes already put, annotations included), and the trailer, as
    /// `merge` does; returns the writer and the bytes written.
    ///
    /// # Errors
    /// When writing fails.
    pub fn finish_entries(mut self, entries: Vec<serde_json::Value>) -> Result<(W, u64), Error> {
        let index_json = oci::index_json(entries);
        let header = self.header("index.json", Kind::Regular, index_json.len() as u64);
        self.tar.append(&header, &index_json).map_err(archive_err)?;
        self.tar
            .finish()
            .and_then(CountWriter::finish)
            .map_err(archive_err)
    }

    fn blob_header(&self, digest: &Digest, size: u64) -> Header {
        self.header(
            &format!("blobs/sha256/{}", digest.hex()),
            Kind::Regular,
            size,
        )
    }
}

impl<W: Write> ImageSink for OciArchiveWriter<W> {
    type Blob = SpooledBlob;
    type Output = W;

    fn layer_form(&self) -> LayerForm {
        LayerForm::Blobs(self.compress)
    }

    /// Each blob is a temporary file of its own until committed.
    fn concurrent_layers(&self) -> bool {
        true
    }

    fn start_layer(&mut self, _key: &Digest, _size: u64) -> Result<SpooledBlob, Error> {
        SpooledBlob::new_in(&std::env::temp_dir())
    }

    fn commit_layer(
        &mut self,
        blob: SpooledBlob,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, Error> {
        if !self.stored.insert(*digest) {
            return Ok(false);
        }
        let mut spooled = blob.finish()?;
        let header = self.blob_header(digest, size);
        self.tar.start_entry(&header).map_err(archive_err)?;
        let copied = io::copy(&mut spooled.file, &mut self.tar).map_err(archive_err)?;
        if copied != size {
            return Err(archive_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("spooled blob {digest} has {copied} bytes, not {size}"),
            )));
        }
        self.tar.end_entry().map_err(archive_err)?;
        Ok(true)
    }

    fn has_blob(&self, digest: &Digest) -> bool {
        self.stored.contains(digest)
    }

    fn put_blob(&mut self, bytes: &[u8]) -> Result<(Digest, bool), Error> {
        let digest = Digest::of(bytes);
        if !self.stored.insert(digest) {
            return Ok((digest, false));
        }
        let header = self.blob_header(&digest, bytes.len() as u64);
        self.tar.append(&header, bytes).map_err(archive_err)?;
        Ok((digest, true))
    }

    fn set_annotations(&mut self, annotations: &super::OutputAnnotations) {
        self.index.annotations = annotations.clone();
    }

    fn put_manifest(&mut self, image: &ImageEntry<'_>) -> Result<(Descriptor, bool), Error> {
        let (digest, new) = self.put_blob(image.manifest)?;
        Ok((self.index.add_manifest(image, digest), new))
    }

    /// Stores the artifact's blobs and manifest, listed in `index.json`
    /// without a ref name.
    fn put_referrer(&mut self, referrer: &super::Referrer<'_>) -> Result<Descriptor, Error> {
        for blob in [referrer.config, referrer.blob, referrer.manifest] {
            self.put_blob(blob)?;
        }
        Ok(self.index.add_referrer(referrer))
    }

    /// Writes `index.json`, naming the manifest (or, for several, an
    /// index of them) `reference`, then the referrers, and the trailer.
    fn finish(mut self, reference: &str) -> Result<(W, Option<u64>), Error> {
        let index = std::mem::take(&mut self.index);
        let entry = index.entry(reference, |b| self.put_blob(b))?;
        let mut entries = vec![entry];
        entries.extend(index.referrers);
        let index_json = oci::index_json(entries);
        let header = self.header("index.json", Kind::Regular, index_json.len() as u64);
        self.tar.append(&header, &index_json).map_err(archive_err)?;
        let (out, bytes) = self
            .tar
            .finish()
            .and_then(CountWriter::finish)
            .map_err(archive_err)?;
        Ok((out, Some(bytes)))
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    #[test]
    fn members_in_order_and_blobs_once() {
        let options = CompressOptions::new(crate::codec::Compression::None, NonZeroUsize::MIN);
        let mut w = OciArchiveWriter::new(Vec::new(), 1, options).unwrap();
        let key = Digest::of(b"key");
        let mut blob = w.start_layer(&key, 5).unwrap();
        blob.write_all(b"layer").unwrap();
        assert!(w.commit_layer(blob, &Digest::of(b"layer"), 5).unwrap());
        assert!(!w.put_blob(b"layer").unwrap().1);
        let (config, new) = w.put_blob(b"config").unwrap();
        assert!(new);
        let config = Descriptor {
            media_type: oci::CONFIG_MEDIA_TYPE.to_owned(),
            digest: config,
            size: 6,
        };
        let platform = crate::sink::Platform::default();
        let image = ImageEntry {
            platform: &platform,
            config: &config,
            layers: &[],
            manifest: b"{}",
        };
        assert!(w.put_manifest(&image).unwrap().1);
        let (bytes, len) = w.finish("x:y").unwrap();
        let len = len.unwrap();
        assert_eq!(len, bytes.len() as u64);
        assert_eq!(bytes.len() % 10240, 0);
        // Member names, in order, from the ustar name fields.
        let mut names = Vec::new();
        let mut at = 0;
        while at + 512 <= bytes.len() && bytes[at] != 0 {
            let name = &bytes[at..at + 100];
            let end = name.iter().position(|&b| b == 0).unwrap_or(100);
            names.push(String::from_utf8_lossy(&name[..end]).into_owned());
            let size = u64::from_str_radix(
                std::str::from_utf8(&bytes[at + 124..at + 135])
                    .unwrap()
                    .trim_matches('\0'),
                8,
            )
            .unwrap() as usize;
            at += 512 + size.div_ceil(512) * 512;
        }
        assert_eq!(names[..3], ["oci-layout", "blobs/", "blobs/sha256/"]);
        assert_eq!(names.len(), 7);
        assert_eq!(names[6], "index.json");
    }
}
