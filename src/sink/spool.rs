//! A blob spooled to a temporary file, for the sinks that must know a
//! compressed blob's size or digest before they can store it: an OCI
//! archive (a tar header comes first) and a registry (the upload names the
//! digest). One type for both, registered with [`crate::cleanup`] so a
//! signal removes it, and removed when dropped.

use std::fs::File;
use std::io::{self, BufWriter, Seek as _, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

use super::Error;
use crate::cleanup::Pending;

/// Large writes: blobs are megabytes to gigabytes.
const BUFFER: usize = 1 << 20;

/// A blob being spooled.
#[derive(Debug)]
pub struct SpooledBlob {
    file: BufWriter<NamedTempFile>,
    _pending: Pending,
}

/// A spooled blob, complete: its file, rewound, at its path (both removed
/// when this is dropped).
#[derive(Debug)]
pub struct Spooled {
    /// The file, positioned at its start.
    pub file: File,
    temp: NamedTempFile,
    _pending: Pending,
}

impl Spooled {
    /// Where the file is.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.temp.path()
    }
}

impl SpooledBlob {
    /// A new spool file in `dir`.
    ///
    /// # Errors
    /// When it cannot be created; the error names `dir`.
    pub fn new_in(dir: &Path) -> Result<Self, Error> {
        Self::with_buffer_in(dir, BUFFER)
    }

    /// A new spool file in `dir`, writes gathered in a buffer of `buffer`
    /// bytes (a write at least that large goes straight to the file).
    ///
    /// # Errors
    /// When it cannot be created; the error names `dir`.
    pub fn with_buffer_in(dir: &Path, buffer: usize) -> Result<Self, Error> {
        let (temp, pending) = Pending::create(
            || {
                tempfile::Builder::new()
                    .prefix(".nixlayer-blob-")
                    .tempfile_in(dir)
            },
            |t| t.path(),
        )
        .map_err(|source| Error::Io {
            path: dir.to_owned(),
            source: super::output::os_cause(source),
        })?;
        Ok(Self {
            file: BufWriter::with_capacity(buffer, temp),
            _pending: pending,
        })
    }

    /// Where the file is.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.file.get_ref().path()
    }

    /// Bytes written but still in the buffer, not yet in the file.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.file.buffer().len()
    }

    /// Ends writing: flushes and rewinds the file.
    ///
    /// # Errors
    /// When flushing or seeking fails; the error names the file.
    pub fn finish(self) -> Result<Spooled, Error> {
        let path: PathBuf = self.file.get_ref().path().to_owned();
        let at = |source| Error::Io {
            path: path.clone(),
            source,
        };
        let temp = self.file.into_inner().map_err(|e| at(e.into_error()))?;
        let mut file = temp.reopen().map_err(at)?;
        file.rewind().map_err(at)?;
        Ok(Spooled {
            file,
            temp,
            _pending: self._pending,
        })
    }
}

impl Write for SpooledBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.file.write_all(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    #[test]
    fn a_spool_reads_back_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut blob = SpooledBlob::new_in(dir.path()).unwrap();
        blob.write_all(b"blob bytes").unwrap();
        let mut spooled = blob.finish().unwrap();
        assert!(spooled.path().starts_with(dir.path()));
        // A signal would remove it: destructors do not run then.
        assert!(crate::cleanup::is_pending(spooled.path()));
        let mut back = Vec::new();
        spooled.file.read_to_end(&mut back).unwrap();
        assert_eq!(back, b"blob bytes");
        let path = spooled.path().to_owned();
        drop(spooled);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(!crate::cleanup::is_pending(&path));
    }
}
