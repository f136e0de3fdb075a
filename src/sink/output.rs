//! Output files that never exist half-written, and that never replace what
//! is not a file.
//!
//! What `-o PATH` does depends on what `PATH` is (decided once, here, for
//! `build -o`, `merge -o` and `layers --html`):
//!
//! - nothing yet: bytes go to a temporary file in its directory (so the
//!   rename cannot cross filesystems), renamed to `PATH` once complete;
//! - a regular file: the same, replacing it atomically;
//! - a symbolic link to a regular file: the file it resolves to is replaced
//!   the same way, in the file's own directory; the link stays a link (as a
//!   shell's `>` or `cp` write through it). A dangling link is refused, as
//!   `cp` refuses it: where it points was never meant as an output;
//! - a character device or a FIFO (`/dev/null`, `/dev/stdout`,
//!   `/proc/self/fd/1`, a named pipe), directly or through links: opened
//!   and written in place, like `tar -f /dev/stdout` or a shell's `>`. It
//!   is never renamed over: doing so (as root) would replace the device
//!   node. A terminal is refused, as `--stream` refuses one;
//! - a directory or a block device: refused (an image over a disk is never
//!   what was meant).
//!
//! Files are created with mode 0666 less the umask, like any new file.
//! Every temporary file is registered with [`crate::cleanup`], so a signal
//! removes it too; dropped unfinished, it is removed at once.

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use tempfile::TempPath;

use crate::cleanup::Pending;

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
    /// It is something an image is never written to.
    #[error("`{}` {reason}", path.display())]
    Refused {
        /// The output path.
        path: PathBuf,
        /// What it is and why it is refused.
        reason: String,
    },
}

/// A write error named by the path the user gave, not by the temporary
/// file the bytes were going to.
#[derive(Debug, thiserror::Error)]
#[error("failed to write `{}`", path.display())]
struct WriteError {
    path: PathBuf,
    #[source]
    source: io::Error,
}

/// `e`, naming `path`; its kind is kept (a broken pipe stays one).
pub(crate) fn naming(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(
        e.kind(),
        WriteError {
            path: path.to_owned(),
            source: e,
        },
    )
}

/// The error without `tempfile`'s ` at path "…"` suffix, which names the
/// temporary file, a name the user never chose.
pub(super) fn os_cause(e: io::Error) -> io::Error {
    let text = e.to_string();
    match text.split_once(" at path \"") {
        Some((cause, _)) => match e.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(e.kind(), cause.to_owned()),
        },
        None => e,
    }
}

/// A temporary file beside its destination: mode 0666 less the umask,
/// removed when dropped or when a signal ends the process, and named in
/// write errors by the path the user knows (`shown`).
pub(crate) struct Staged {
    writer: BufWriter<File>,
    temp: TempPath,
    pending: Pending,
    shown: PathBuf,
    /// Nothing was written since the last [`Staged::sync`]: publishing
    /// need not sync again. A second `fsync` of a clean file still sends
    /// the disk a cache flush, and a layout commits its ~100 layer blobs,
    /// each synced as it was sealed, on the thread that starts the next
    /// layers.
    synced: bool,
}

/// Syncs `file`'s data and metadata to the disk.
fn sync_file(file: &File) -> io::Result<()> {
    #[cfg(test)]
    tests::SYNCS.with(|n| n.set(n.get() + 1));
    file.sync_all()
}

impl Staged {
    /// A new temporary file in `dir`.
    pub(crate) fn new_in(dir: &Path, shown: &Path) -> io::Result<Self> {
        Self::with_buffer(dir, shown, BUFFER)
    }

    /// A new temporary file in `dir`, writes of fewer than `buffer` bytes
    /// gathered (larger ones go straight to the file).
    pub(crate) fn with_buffer(dir: &Path, shown: &Path, buffer: usize) -> io::Result<Self> {
        let mut builder = tempfile::Builder::new();
        builder.prefix(".nixlayer-").suffix(".tmp");
        // Created with 0666 the kernel narrows by the umask: the mode of
        // any new file (tempfile's default, 0600, would ignore the umask).
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            builder.permissions(fs::Permissions::from_mode(0o666));
        }
        let (temp, pending) =
            Pending::create(|| builder.tempfile_in(dir), |t| t.path()).map_err(os_cause)?;
        let (file, temp) = temp.into_parts();
        Ok(Self {
            writer: BufWriter::with_capacity(buffer, file),
            temp,
            pending,
            shown: shown.to_owned(),
            synced: false,
        })
    }

    /// Flushes and syncs what was written so far, so that publishing it
    /// later finds nothing left to write to the disk.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        self.writer.flush().map_err(|e| naming(&self.shown, e))?;
        sync_file(self.writer.get_ref()).map_err(|e| naming(&self.shown, e))?;
        self.synced = true;
        Ok(())
    }

    /// Flushes what was written so far and asks the kernel to start
    /// writing bytes `from..to` of it to the disk, without waiting (Linux;
    /// a no-op elsewhere): a large file's final [`Staged::sync`] then
    /// waits only for its tail instead of for all of it, and the disk works
    /// while the rest is produced.
    pub(crate) fn start_writeback(&mut self, from: u64, to: u64) -> io::Result<()> {
        self.writer.flush().map_err(|e| naming(&self.shown, e))?;
        #[cfg(target_os = "linux")]
        if let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to.saturating_sub(from)))
        {
            use std::os::fd::AsRawFd as _;
            // SAFETY: a plain syscall on the descriptor this file owns; no
            // memory is passed.
            let rc = unsafe {
                libc::sync_file_range(
                    self.writer.get_ref().as_raw_fd(),
                    offset,
                    len,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            // Only a hint: the final sync reports any real write error.
            let _ = rc;
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (from, to);
        Ok(())
    }

    fn finish(self) -> io::Result<(File, TempPath, Pending)> {
        let file = self
            .writer
            .into_inner()
            .map_err(io::IntoInnerError::into_error)?;
        if !self.synced {
            sync_file(&file)?;
        }
        Ok((file, self.temp, self.pending))
    }

    /// Flushes, syncs and renames it to `dest`, replacing what is there.
    pub(crate) fn publish(self, dest: &Path) -> io::Result<File> {
        let (file, temp, pending) = self.finish()?;
        pending.publish(|| temp.persist(dest).map_err(|e| os_cause(e.error)))?;
        Ok(file)
    }

    /// Flushes, syncs and renames it to `dest` unless `dest` exists (then it
    /// is removed and `dest` kept as it is); whether it was put in place.
    /// Race-free: two writers of the same content-addressed blob leave one.
    pub(crate) fn publish_new(self, dest: &Path) -> io::Result<bool> {
        if dest.exists() {
            return Ok(false);
        }
        let (_, temp, pending) = self.finish()?;
        match pending.publish(|| temp.persist_noclobber(dest).map_err(|e| e.error)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(os_cause(e)),
        }
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.synced = false;
        self.writer.write(buf).map_err(|e| naming(&self.shown, e))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.synced = false;
        self.writer
            .write_all(buf)
            .map_err(|e| naming(&self.shown, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.writer.flush().map_err(|e| naming(&self.shown, e))
    }
}

/// Where an [`OutputFile`]'s bytes go.
enum Sink {
    /// A temporary file renamed to `dest` (the resolved target) on commit.
    Staged { staged: Staged, dest: PathBuf },
    /// A device or FIFO, written in place.
    InPlace(BufWriter<File>),
}

/// A file being written; [`OutputFile::commit`] puts it in place.
pub struct OutputFile {
    target: PathBuf,
    sink: Sink,
}

impl OutputFile {
    /// Starts writing `target` (see the module documentation for what
    /// each kind of target gets). Opening a FIFO waits for its reader.
    ///
    /// # Errors
    /// When `target` is refused, or the temporary file cannot be created
    /// next to it, or a device cannot be opened.
    pub fn create(target: &Path) -> Result<Self, OutputError> {
        let create = |source| OutputError::Create {
            path: target.to_owned(),
            source,
        };
        let refuse = |reason: &str| OutputError::Refused {
            path: target.to_owned(),
            reason: reason.to_owned(),
        };
        let sink = match fs::metadata(target) {
            Ok(m) if m.is_file() => {
                // Through any links, to the file itself: the links stay.
                let dest = fs::canonicalize(target).map_err(create)?;
                let dir = dest.parent().unwrap_or(Path::new("/"));
                let staged = Staged::new_in(dir, target).map_err(create)?;
                Sink::Staged { staged, dest }
            }
            Ok(m) if m.is_dir() => return Err(refuse("is a directory")),
            Ok(m) if is_block_device(&m) => {
                return Err(refuse(
                    "is a block device: refusing to write an image over it",
                ))
            }
            Ok(_) => Sink::InPlace(open_in_place(target).map_err(|e| match e {
                InPlaceError::Io(e) => create(e),
                InPlaceError::Refused(reason) => refuse(reason),
            })?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if let Ok(link) = fs::read_link(target) {
                    return Err(refuse(&format!(
                        "is a symbolic link to `{}`, which does not exist: refusing to write through a dangling link",
                        link.display()
                    )));
                }
                let dir = match target.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                // A missing or unreadable directory, reported as the OS says it.
                fs::metadata(dir).map_err(create)?;
                let staged = Staged::new_in(dir, target).map_err(create)?;
                Sink::Staged {
                    staged,
                    dest: target.to_owned(),
                }
            }
            Err(e) => return Err(create(e)),
        };
        Ok(Self {
            target: target.to_owned(),
            sink,
        })
    }

    /// The final path.
    #[must_use]
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Flushes, syncs and renames the file into place (a device or FIFO is
    /// only flushed).
    ///
    /// # Errors
    /// When flushing, syncing or renaming fails; the temporary file is then removed.
    pub fn commit(self) -> Result<File, OutputError> {
        let path = self.target;
        let result = match self.sink {
            Sink::Staged { staged, dest } => staged.publish(&dest),
            Sink::InPlace(writer) => writer.into_inner().map_err(io::IntoInnerError::into_error),
        };
        result.map_err(|source| OutputError::Commit {
            path,
            source: os_cause(source),
        })
    }
}

impl Write for OutputFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.sink {
            Sink::Staged { staged, .. } => staged.write(buf),
            Sink::InPlace(w) => w.write(buf).map_err(|e| naming(&self.target, e)),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match &mut self.sink {
            Sink::Staged { staged, .. } => staged.write_all(buf),
            Sink::InPlace(w) => w.write_all(buf).map_err(|e| naming(&self.target, e)),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.sink {
            Sink::Staged { staged, .. } => staged.flush(),
            Sink::InPlace(w) => w.flush().map_err(|e| naming(&self.target, e)),
        }
    }
}

enum InPlaceError {
    Io(io::Error),
    Refused(&'static str),
}

/// Opens a device or FIFO for writing, without creating or truncating
/// anything, and checks what was opened (the path may have changed since
/// it was looked at).
fn open_in_place(target: &Path) -> Result<BufWriter<File>, InPlaceError> {
    use std::io::IsTerminal as _;
    let mut options = fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.custom_flags(libc::O_NOCTTY);
    }
    let file = options.open(target).map_err(InPlaceError::Io)?;
    let meta = file.metadata().map_err(InPlaceError::Io)?;
    if meta.is_file() || meta.is_dir() || is_block_device(&meta) {
        return Err(InPlaceError::Refused(
            "changed while it was being opened: refusing to write it in place",
        ));
    }
    if file.is_terminal() {
        return Err(InPlaceError::Refused(
            "is a terminal: refusing to write an image to it",
        ));
    }
    Ok(BufWriter::with_capacity(BUFFER, file))
}

#[cfg(unix)]
fn is_block_device(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt as _;
    meta.file_type().is_block_device()
}

#[cfg(not(unix))]
fn is_block_device(_: &fs::Metadata) -> bool {
    false
}

/// Whether writing the file `output` would overwrite `input`: the same
/// file reached by any path (links, `..`, hard links), or, when `input` is
/// a directory (an OCI layout given as a base image), a file inside it. An
/// output that does not exist yet overwrites nothing.
#[must_use]
pub fn would_overwrite(output: &Path, input: &Path) -> bool {
    let (Ok(out), Ok(inp)) = (fs::metadata(output), fs::metadata(input)) else {
        return false;
    };
    if same_file(&out, &inp) {
        return true;
    }
    inp.is_dir()
        && match (fs::canonicalize(output), fs::canonicalize(input)) {
            (Ok(o), Ok(i)) => o.starts_with(i),
            _ => false,
        }
}

/// Whether writing the OCI layout directory `layout` would overwrite the
/// file `input`: it is one of the files a layout build writes
/// (`index.json`, `oci-layout`, a blob). A layout that is the base image
/// itself is fine: its blobs are never rewritten and its `index.json` is
/// replaced atomically once the build is complete, after the base was read.
#[must_use]
pub fn layout_would_overwrite(layout: &Path, input: &Path) -> bool {
    match (fs::canonicalize(layout), fs::canonicalize(input)) {
        (Ok(l), Ok(i)) => {
            i.starts_with(l.join("blobs")) || i == l.join("index.json") || i == l.join("oci-layout")
        }
        _ => false,
    }
}

#[cfg(unix)]
fn same_file(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    a.dev() == b.dev() && a.ino() == b.ino()
}

#[cfg(not(unix))]
fn same_file(_: &fs::Metadata, _: &fs::Metadata) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// `fsync`s of staged files on this thread.
        pub(super) static SYNCS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    fn syncs() -> usize {
        SYNCS.with(std::cell::Cell::get)
    }

    /// A staged file is synced once before it is published: when it was
    /// synced already and nothing written since, publishing does not sync
    /// it again; bytes written after a sync are synced when published.
    #[test]
    fn a_staged_file_is_synced_once_before_it_is_published() {
        let dir = tempfile::tempdir().unwrap();
        let publish = |pieces: &[&[u8]], sync_after: &[bool], name: &str| {
            let before = syncs();
            let mut staged = Staged::new_in(dir.path(), Path::new(name)).unwrap();
            for (piece, sync) in pieces.iter().zip(sync_after) {
                staged.write_all(piece).unwrap();
                if *sync {
                    staged.sync().unwrap();
                }
            }
            assert!(staged.publish_new(&dir.path().join(name)).unwrap());
            assert_eq!(
                std::fs::read(dir.path().join(name)).unwrap(),
                pieces.concat()
            );
            syncs() - before
        };
        assert_eq!(publish(&[b"sealed"], &[true], "a"), 1);
        assert_eq!(publish(&[b"plain"], &[false], "b"), 1);
        assert_eq!(
            publish(&[b"sealed, ", b"then more"], &[true, false], "c"),
            2
        );
        assert_eq!(publish(&[b"x", b"y"], &[true, true], "d"), 2);
    }

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

    #[cfg(unix)]
    #[test]
    fn a_link_to_a_file_stays_a_link_and_a_dangling_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.tar");
        std::fs::write(&real, "old").unwrap();
        let link = dir.path().join("link.tar");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let mut out = OutputFile::create(&link).unwrap();
        out.write_all(b"new").unwrap();
        out.commit().unwrap();
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read(&real).unwrap(), b"new");

        let dangling = dir.path().join("dangling.tar");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
        assert!(matches!(
            OutputFile::create(&dangling),
            Err(OutputError::Refused { .. })
        ));
        assert!(!dir.path().join("nowhere").exists());
    }

    #[cfg(unix)]
    #[test]
    fn dev_null_is_written_in_place() {
        use std::os::unix::fs::FileTypeExt as _;
        let mut out = OutputFile::create(Path::new("/dev/null")).unwrap();
        out.write_all(b"bytes").unwrap();
        out.commit().unwrap();
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(meta.file_type().is_char_device());
    }

    #[test]
    fn a_directory_is_refused_and_inputs_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            OutputFile::create(dir.path()),
            Err(OutputError::Refused { .. })
        ));
        let input = dir.path().join("image.toml");
        std::fs::write(&input, "x").unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let roundabout = sub.join("../image.toml");
        assert!(would_overwrite(&roundabout, &input));
        assert!(would_overwrite(&input, dir.path()));
        assert!(!would_overwrite(&dir.path().join("new.tar"), &input));
        assert!(!would_overwrite(&sub, &input));
        let index = dir.path().join("index.json");
        std::fs::write(&index, "{}").unwrap();
        assert!(layout_would_overwrite(dir.path(), &index));
        assert!(!layout_would_overwrite(dir.path(), &input));
        assert!(!layout_would_overwrite(dir.path(), dir.path()));
    }
}
