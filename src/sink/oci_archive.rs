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
use std::fs::File;
use std::io::{self, BufWriter, Seek, Write};
use std::path::PathBuf;

use super::{BlobSink, Error};
use crate::oci;
use crate::oci::{CountWriter, Digest};
use crate::tar::{Header, Kind, TarWriter};

/// Writes an OCI archive to `W`.
pub struct OciArchiveWriter<W: Write> {
    tar: TarWriter<CountWriter<W>>,
    mtime: u64,
    stored: BTreeSet<Digest>,
}

/// A spooled blob.
pub struct SpooledBlob {
    file: BufWriter<File>,
}

impl Write for SpooledBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

fn archive_err(source: io::Error) -> Error {
    Error::Io {
        path: PathBuf::from("<oci-archive>"),
        source,
    }
}

impl<W: Write> OciArchiveWriter<W> {
    /// Starts an archive; every member gets `mtime`.
    ///
    /// # Errors
    /// When writing fails.
    pub fn new(out: W, mtime: u64) -> io::Result<Self> {
        let mut w = Self {
            tar: TarWriter::new(CountWriter::new(out)),
            mtime,
            stored: BTreeSet::new(),
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

    fn blob_header(&self, digest: &Digest, size: u64) -> Header {
        self.header(
            &format!("blobs/sha256/{}", digest.hex()),
            Kind::Regular,
            size,
        )
    }

    /// Writes `index.json` and the trailer; returns the writer, the
    /// archive's digest and its length.
    ///
    /// # Errors
    /// When writing fails.
    pub fn finish(mut self, index_json: &[u8]) -> io::Result<(W, u64)> {
        let header = self.header("index.json", Kind::Regular, index_json.len() as u64);
        self.tar.append(&header, index_json)?;
        self.tar.finish()?.finish()
    }
}

impl<W: Write> BlobSink for OciArchiveWriter<W> {
    type Blob = SpooledBlob;

    fn start_blob(&mut self) -> Result<SpooledBlob, Error> {
        let file = tempfile::tempfile().map_err(|source| Error::Io {
            path: std::env::temp_dir(),
            source,
        })?;
        Ok(SpooledBlob {
            file: BufWriter::with_capacity(1 << 20, file),
        })
    }

    fn commit_blob(
        &mut self,
        blob: SpooledBlob,
        digest: &Digest,
        size: u64,
    ) -> Result<bool, Error> {
        if !self.stored.insert(*digest) {
            return Ok(false);
        }
        let mut file = blob
            .file
            .into_inner()
            .map_err(|e| archive_err(e.into_error()))?;
        file.rewind().map_err(archive_err)?;
        let header = self.blob_header(digest, size);
        self.tar.start_entry(&header).map_err(archive_err)?;
        let copied = io::copy(&mut file, &mut self.tar).map_err(archive_err)?;
        if copied != size {
            return Err(archive_err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("spooled blob {digest} has {copied} bytes, not {size}"),
            )));
        }
        self.tar.end_entry().map_err(archive_err)?;
        Ok(true)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_in_order_and_blobs_once() {
        let mut w = OciArchiveWriter::new(Vec::new(), 1).unwrap();
        let mut blob = w.start_blob().unwrap();
        blob.write_all(b"layer").unwrap();
        assert!(w.commit_blob(blob, &Digest::of(b"layer"), 5).unwrap());
        assert!(!w.put_blob(b"layer").unwrap().1);
        assert!(w.put_blob(b"config").unwrap().1);
        let (bytes, len) = w.finish(b"{}").unwrap();
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
        assert_eq!(names.len(), 6);
        assert_eq!(names[5], "index.json");
    }
}
