//! Reading an input file whole, bounded: the manifest and the closure
//! files are untrusted and read into memory, so a path naming `/dev/zero`,
//! a FIFO nobody writes to, or a runaway file must end with an error naming
//! it rather than grow without bound or hang.
//!
//! A module of its own, below every stage: the manifest and the closure
//! sources both read untrusted files whole, and neither may import the other.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

/// The bytes of `path`, at most `limit` of them.
///
/// A FIFO is opened without waiting for a writer (so one that has none
/// reads as empty), and a file, device or pipe with more than `limit`
/// bytes is an error of kind [`io::ErrorKind::FileTooLarge`] as soon as
/// the limit is passed.
///
/// # Errors
/// When `path` cannot be opened or read, is a directory, or holds more
/// than `limit` bytes.
pub fn read_bounded(path: &Path, limit: u64) -> io::Result<Vec<u8>> {
    let mut file = open_bounded(path, limit)?;
    // The file's size when it has one: read into a buffer that size rather
    // than one doubled as it fills (up to twice the file).
    let mut bytes = Vec::with_capacity(file.size);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// `path` opened to be read piece by piece, as [`read_bounded`] reads it:
/// for a parser that need not hold the whole file (a closure file is about
/// 570 bytes a store path, more than the graph read from it).
///
/// # Errors
/// As [`read_bounded`]; reading fails with [`io::ErrorKind::FileTooLarge`]
/// once more than `limit` bytes were read.
pub fn open_bounded(path: &Path, limit: u64) -> io::Result<Bounded> {
    // O_NONBLOCK only for `open`: opening a FIFO for reading otherwise
    // blocks until some process opens it for writing.
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = file.metadata()?;
    if meta.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "it is a directory, not a file",
        ));
    }
    if meta.is_file() && meta.len() > limit {
        return Err(too_large(limit));
    }
    clear_nonblocking(&file)?;
    Ok(Bounded {
        size: if meta.is_file() {
            usize::try_from(meta.len()).unwrap_or(0)
        } else {
            0
        },
        file: file.take(limit.saturating_add(1)),
        limit,
    })
}

/// An input file opened by [`open_bounded`]: an error once it has given
/// more than its limit.
#[derive(Debug)]
pub struct Bounded {
    /// Reads at most one byte past the limit, to tell the limit was passed.
    file: io::Take<File>,
    limit: u64,
    /// The size of a regular file when opened (at most `limit`), else 0.
    size: usize,
}

impl io::Read for Bounded {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if self.file.limit() == 0 {
            return Err(too_large(self.limit));
        }
        Ok(n)
    }
}

fn too_large(limit: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::FileTooLarge,
        format!("it holds more than {} MiB, the limit", limit >> 20),
    )
}

/// `path` opened for reading without waiting for a FIFO's writer (one
/// that has none reads as empty), then back to blocking reads: for an
/// input read piece by piece and unbounded (an image archive), which
/// `-o`'s or a test's FIFO must not hang.
///
/// # Errors
/// When `path` cannot be opened.
pub fn open_without_waiting(path: &Path) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    clear_nonblocking(&file)?;
    Ok(file)
}

/// Back to blocking reads, so a pipe whose writer is slow is waited for
/// rather than read as `WouldBlock`.
pub fn clear_nonblocking(file: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function's caller owns, with
    // F_GETFL / F_SETFL, which take no pointers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_files_are_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        assert_eq!(read_bounded(&path, 3).unwrap(), b"abc");
        assert_eq!(
            read_bounded(&path, 2).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
        assert_eq!(
            read_bounded(dir.path(), 2).unwrap_err().kind(),
            io::ErrorKind::IsADirectory
        );
    }

    #[test]
    fn files_read_piece_by_piece_stop_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let mut text = String::new();
        open_bounded(&path, 3)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "abc");
        assert_eq!(
            open_bounded(&path, 2).unwrap_err().kind(),
            io::ErrorKind::FileTooLarge
        );
        let mut zero = open_bounded(Path::new("/dev/zero"), 10).unwrap();
        let mut buf = [1u8; 8];
        zero.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0; 8]);
        let err = io::copy(&mut zero, &mut io::sink()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn a_file_is_read_into_a_buffer_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'x'; 100_000]).unwrap();
        let bytes = read_bounded(&path, 1 << 20).unwrap();
        assert_eq!(bytes.len(), 100_000);
        assert!(bytes.capacity() < 100_000 + 4096, "{}", bytes.capacity());
    }

    #[test]
    fn endless_devices_stop_at_the_limit() {
        let err = read_bounded(Path::new("/dev/zero"), 1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::FileTooLarge);
    }

    #[test]
    fn a_fifo_without_a_writer_reads_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(read_bounded(&fifo, 100).unwrap(), b"");
    }
}
