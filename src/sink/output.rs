//! Output files that never exist half-written: bytes go to a temporary file
//! in the target's directory (so the rename cannot cross filesystems) and
//! the file is renamed into place only once complete. Dropped unfinished,
//! the temporary file is removed.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Large writes keep the syscall count low when streaming gigabytes.
const BUFFER: usize = 1 << 20;

/// Why an output file could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OutputError {
    /// Its temporary file could not be created.
    #[error("failed to create `{}`", path.display())]
    Create {
        /// The output file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// It could not be completed and renamed into place.
    #[error("failed to write `{}`", path.display())]
    Commit {
        /// The output file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The error without `tempfile`'s ` at path "…"` suffix, which names the
/// temporary file, a name the user never chose.
fn os_cause(e: io::Error) -> io::Error {
    let text = e.to_string();
    match text.split_once(" at path \"") {
        Some((cause, _)) => match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), cause.to_owned()),
        },
        None => e,
    }
}

/// A file being written; [`OutputFile::commit`] puts it in place.
pub struct OutputFile {
    target: PathBuf,
    writer: BufWriter<NamedTempFile>,
}

impl OutputFile {
    /// Starts writing `target`.
    ///
    /// # Errors
    /// When the temporary file cannot be created next to `target`.
    pub fn create(target: &Path) -> Result<Self, OutputError> {
        Self::create_io(target).map_err(|e| OutputError::Create {
            path: target.to_owned(),
            source: os_cause(e),
        })
    }

    fn create_io(target: &Path) -> io::Result<Self> {
        let dir = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // A missing or unreadable directory, reported as the OS says it.
        std::fs::metadata(dir)?;
        let temp = tempfile::Builder::new()
            .prefix(".nixlayer-")
            .suffix(".tmp")
            .tempfile_in(dir)?;
        Ok(Self {
            target: target.to_owned(),
            writer: BufWriter::with_capacity(BUFFER, temp),
        })
    }

    /// The final path.
    #[must_use]
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes, syncs and renames the file into place.
    ///
    /// # Errors
    /// When flushing, syncing or renaming fails; the temporary file is then removed.
    pub fn commit(self) -> Result<File, OutputError> {
        let path = self.target.clone();
        self.commit_io().map_err(|e| OutputError::Commit {
            path,
            source: os_cause(e),
        })
    }

    fn commit_io(self) -> io::Result<File> {
        let temp = self
            .writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        temp.as_file().sync_all()?;
        // Temp files are created 0600; an image is not secret, so give it
        // the mode an ordinary new file gets (0644 under the usual umask).
        set_default_mode(temp.as_file())?;
        temp.persist(&self.target).map_err(|e| e.error)
    }
}

#[cfg(unix)]
fn set_default_mode(file: &File) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
}

#[cfg(not(unix))]
fn set_default_mode(_: &File) -> io::Result<()> {
    Ok(())
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writer.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appears_only_when_committed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("image.tar");
        let mut out = OutputFile::create(&target).unwrap();
        out.write_all(b"bytes").unwrap();
        assert!(!target.exists());
        out.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"bytes");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("image.tar");
        let mut out = OutputFile::create(&target).unwrap();
        out.write_all(b"partial").unwrap();
        drop(out);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
