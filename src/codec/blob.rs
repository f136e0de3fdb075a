//! The one blob writer stack: bytes → compressor → blob hasher and
//! counter → destination. Every writer of image bytes goes through it: a
//! layer compressed on its own into an OCI blob, and a stream compressed as
//! a whole (a docker-archive, a merged archive). It knows no stage and no
//! output: the destination is any [`Write`].
//!
//! The uncompressed side (the diff_id) is hashed by the layer writer that
//! produces the tar, on its own thread; this writer takes that
//! [`LayerDigest`] at [`BlobWriter::finish_layer`] instead of hashing the
//! same bytes a second time.

use std::io::{self, Write};

use super::{CompressOptions, Compression, Compressor};
use crate::oci::{CountWriter, Digest, HashCountWriter, LayerDigest};

/// A blob as stored: the layer tar it holds and the stored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenBlob {
    /// sha256 and size of the uncompressed tar (the diff_id).
    pub tar: LayerDigest,
    /// sha256 of the stored bytes: the diff_id when uncompressed.
    pub digest: Digest,
    /// Size of the stored bytes.
    pub size: u64,
    /// The OCI media type of the stored bytes.
    pub media_type: &'static str,
}

enum Stack<W: Write> {
    /// An uncompressed layer blob: its digest is the diff_id, so it is
    /// only counted.
    Plain(CountWriter<W>),
    /// A compressed layer blob, hashed and counted.
    Hashed(Compressor<HashCountWriter<W>>),
    /// A whole stream, compressed (or not) and counted: nothing needs its
    /// digest, and a second sha256 over every byte would cost as much as
    /// the layers' own.
    Stream(Compressor<CountWriter<W>>),
}

/// Writes a blob or a stream into `W`: see the module docs.
pub struct BlobWriter<W: Write> {
    stack: Stack<W>,
    codec: Compression,
}

impl<W: Write> BlobWriter<W> {
    /// A layer blob compressed with `compress` on its own.
    ///
    /// # Errors
    /// When the compressor cannot be set up (see [`Compressor::new`]).
    pub fn layer(dest: W, compress: &CompressOptions) -> io::Result<Self> {
        let stack = if compress.codec == Compression::None {
            Stack::Plain(CountWriter::new(dest))
        } else {
            Stack::Hashed(Compressor::new(HashCountWriter::new(dest), compress)?)
        };
        Ok(Self {
            stack,
            codec: compress.codec,
        })
    }

    /// A whole stream (an archive) compressed with `compress`.
    ///
    /// # Errors
    /// When the compressor cannot be set up (see [`Compressor::new`]).
    pub fn stream(dest: W, compress: &CompressOptions) -> io::Result<Self> {
        Ok(Self {
            stack: Stack::Stream(Compressor::new(CountWriter::new(dest), compress)?),
            codec: compress.codec,
        })
    }

    /// Ends a layer blob whose tar the layer writer measured as `tar`.
    ///
    /// # Errors
    /// When compressing or writing fails.
    pub fn finish_layer(self, tar: LayerDigest) -> io::Result<(W, WrittenBlob)> {
        let media_type = self.codec.layer_media_type();
        let (dest, digest, size) = match self.stack {
            Stack::Plain(counted) => {
                let (dest, size) = counted.finish()?;
                (dest, tar.diff_id, size)
            }
            Stack::Hashed(compressor) => compressor.finish()?.finish()?,
            Stack::Stream(compressor) => {
                let (dest, size) = compressor.finish()?.finish()?;
                (dest, tar.diff_id, size)
            }
        };
        Ok((
            dest,
            WrittenBlob {
                tar,
                digest,
                size,
                media_type,
            },
        ))
    }

    /// Ends a stream; returns the destination and the bytes it received.
    ///
    /// # Errors
    /// When compressing or writing fails.
    pub fn finish_stream(self) -> io::Result<(W, u64)> {
        match self.stack {
            Stack::Plain(counted) => counted.finish(),
            Stack::Hashed(compressor) => {
                let (dest, _, size) = compressor.finish()?.finish()?;
                Ok((dest, size))
            }
            Stack::Stream(compressor) => compressor.finish()?.finish(),
        }
    }
}

impl<W: Write> Write for BlobWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.stack {
            Stack::Plain(w) => w.write(buf),
            Stack::Hashed(w) => w.write(buf),
            Stack::Stream(w) => w.write(buf),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.stack {
            Stack::Plain(w) => w.write_all(buf),
            Stack::Hashed(w) => w.write_all(buf),
            Stack::Stream(w) => w.write_all(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.stack {
            Stack::Plain(w) => w.flush(),
            Stack::Hashed(w) => w.flush(),
            Stack::Stream(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    use super::*;

    fn options(codec: Compression) -> CompressOptions {
        CompressOptions {
            codec,
            level: codec.default_level(),
            threads: NonZeroUsize::MIN,
        }
    }

    #[test]
    fn a_plain_layer_is_its_tar_and_a_compressed_one_is_hashed() {
        let tar = LayerDigest {
            diff_id: Digest::of(b"tar bytes"),
            size: 9,
        };
        let mut w = BlobWriter::layer(Vec::new(), &options(Compression::None)).unwrap();
        w.write_all(b"tar bytes").unwrap();
        let (out, blob) = w.finish_layer(tar).unwrap();
        assert_eq!(out, b"tar bytes");
        assert_eq!((blob.digest, blob.size), (tar.diff_id, 9));
        assert_eq!(blob.media_type, Compression::None.layer_media_type());

        let mut w = BlobWriter::layer(Vec::new(), &options(Compression::Gzip)).unwrap();
        w.write_all(b"tar bytes").unwrap();
        let (out, blob) = w.finish_layer(tar).unwrap();
        assert_eq!(blob.digest, Digest::of(&out));
        assert_eq!(blob.size, out.len() as u64);
        assert_eq!(blob.tar, tar);
        assert_eq!(blob.media_type, Compression::Gzip.layer_media_type());
    }

    #[test]
    fn a_stream_is_counted_as_written() {
        let mut w = BlobWriter::stream(Vec::new(), &options(Compression::Zstd)).unwrap();
        w.write_all(&[7; 100_000]).unwrap();
        let (out, size) = w.finish_stream().unwrap();
        assert_eq!(size, out.len() as u64);
        assert!(size < 100_000);
    }
}
