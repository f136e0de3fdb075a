//! Store paths → deterministic layer tars.
//!
//! A store layer is byte-compatible with nixpkgs' `stream_layered_image.py`
//! (SPEC §4), so its diff_id equals the one nixpkgs computes for the same
//! paths and options. A layer is first *measured* from metadata alone (its
//! exact tar size, needed before the bytes in the enclosing archive), then
//! *written* in one pass that hashes as it goes. Memory stays bounded by the
//! width of one directory, whatever the closure size.

pub mod hash;
pub mod tar;
mod tree;

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::closure::StoreLocation;
use crate::nix::StorePath;

pub use hash::{Digest, HashCountWriter};
use tar::{Header, Kind, TarWriter};
use tree::{FileEntry, FileTree};

/// Owner of every store-layer entry (`[owner]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    /// Numeric user id.
    pub uid: u64,
    /// Numeric group id.
    pub gid: u64,
    /// User name.
    pub uname: String,
    /// Group name.
    pub gname: String,
}

impl Default for Owner {
    fn default() -> Self {
        Self {
            uid: 0,
            gid: 0,
            uname: "root".to_owned(),
            gname: "root".to_owned(),
        }
    }
}

/// What every store layer of one build shares.
#[derive(Clone, Debug)]
pub struct LayerOptions {
    /// Where the store paths are read from.
    pub store: StoreLocation,
    /// Owner written into every entry.
    pub owner: Owner,
    /// mtime (seconds since the epoch) of every entry.
    pub mtime: u64,
}

/// The result of writing a layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerDigest {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// Why a layer could not be measured or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file system call on a store file failed.
    #[error("failed to read `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing the layer's bytes failed.
    #[error("failed to write the layer {}", describe_layer(first.as_ref()))]
    Write {
        /// The layer's first path (`None` for a layer without store paths).
        first: Option<StorePath>,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A store path holds something other than a directory, regular file or
    /// symlink, which no store can hold.
    #[error("`{}` is not a directory, regular file or symlink", path.display())]
    Unsupported {
        /// The file.
        path: PathBuf,
    },
    /// The store changed between measuring and writing.
    #[error("`{}` changed while the image was built (expected {expected} bytes, found {found})", path.display())]
    Changed {
        /// The file whose size changed; for a layer whose total size
        /// changed, the file or store path where that was noticed.
        path: PathBuf,
        /// Size when measured (of the file, or of the layer).
        expected: u64,
        /// Size when written (for an overflowing layer, the least it would take).
        found: u64,
    },
}

fn describe_layer(first: Option<&StorePath>) -> String {
    match first {
        Some(path) => format!("starting with `{path}`"),
        None => "without store paths".to_owned(),
    }
}

/// Read size for file contents: few syscalls for big files, and a fixed
/// amount of memory however large the file.
const READ_BUFFER: usize = 256 * 1024;
/// Headers and small files are coalesced before they reach `out` (maybe a
/// pipe, or the outer tar and its hasher); big reads pass straight through.
const WRITE_BUFFER: usize = 64 * 1024;

/// A header with the layer's owner and mtime, which nixpkgs' `apply_filters`
/// writes into every entry; the rest is filled per entry.
fn owned_header(opts: &LayerOptions) -> Header {
    Header {
        name: Vec::new(),
        kind: Kind::Directory,
        mode: 0,
        uid: opts.owner.uid,
        gid: opts.owner.gid,
        uname: opts.owner.uname.clone(),
        gname: opts.owner.gname.clone(),
        mtime: opts.mtime,
        size: 0,
    }
}

/// The two entries every store layer starts with: `/nix/` and `/nix/store/`,
/// mode 0755 (nixpkgs PR #282886, so an unprivileged owner may write the
/// store). nixpkgs hard-codes these names whatever its `store_dir`; so do we.
fn prefix_headers(opts: &LayerOptions) -> [Header; 2] {
    let dir = |name: &[u8]| Header {
        name: name.to_vec(),
        mode: 0o755,
        ..owned_header(opts)
    };
    [dir(b"/nix/"), dir(b"/nix/store/")]
}

/// Moves `entry` into `header`, returning where its bytes are on disk.
fn fill_header(header: &mut Header, entry: FileEntry) -> PathBuf {
    header.name = entry.name;
    header.kind = entry.kind;
    header.mode = entry.mode;
    header.size = entry.size;
    entry.disk
}

/// The exact size of the tar of a store layer holding `paths`, from metadata.
///
/// Only `lstat`, `readdir` and `readlink` are called; nothing is read or
/// encoded. The walk holds one directory listing per level of depth, never
/// the whole layer.
///
/// # Errors
/// When a store path or a file under it cannot be read, or holds a file
/// type no store can hold.
pub fn measure_store_layer(opts: &LayerOptions, paths: &[StorePath]) -> Result<u64, Error> {
    let mut entries: u64 = prefix_headers(opts).iter().map(tar::entry_len).sum();
    let mut header = owned_header(opts);
    for entry in FileTree::new(&opts.store, paths) {
        fill_header(&mut header, entry?);
        entries += tar::entry_len(&header);
    }
    Ok(tar::archive_len(entries))
}

/// Writes the tar of a store layer holding `paths` to `out`, which must take
/// exactly `expected_size` bytes (from [`measure_store_layer`]).
///
/// One pass: each file is read once, and its bytes are hashed on the way
/// out. Never writes more than `expected_size` bytes: an entry that would
/// overflow stops the layer before its header is written.
///
/// # Errors
/// When reading the store or writing `out` fails, or the store changed since
/// measuring ([`Error::Changed`]: a file's size differs from its header, or
/// the layer's from `expected_size`).
pub fn write_store_layer<W: Write>(
    opts: &LayerOptions,
    paths: &[StorePath],
    expected_size: u64,
    out: W,
) -> Result<LayerDigest, Error> {
    let write_err = |source| Error::Write {
        first: paths.first().cloned(),
        source,
    };
    let sink = HashCountWriter::new(BufWriter::with_capacity(WRITE_BUFFER, out));
    let mut tar = TarWriter::new(sink);
    for header in prefix_headers(opts) {
        tar.append(&header, &[]).map_err(write_err)?;
    }
    let mut header = owned_header(opts);
    let mut buf = vec![0; READ_BUFFER];
    for entry in FileTree::new(&opts.store, paths) {
        let disk = fill_header(&mut header, entry?);
        let at_least = tar::archive_len(tar.bytes_written() + tar::entry_len(&header));
        if at_least > expected_size {
            return Err(Error::Changed {
                path: disk,
                expected: expected_size,
                found: at_least,
            });
        }
        tar.start_entry(&header).map_err(write_err)?;
        if header.kind == Kind::Regular {
            copy_file(&disk, header.size, &mut tar, &mut buf).map_err(|e| match e {
                CopyError::Read(error) => error,
                CopyError::Write(source) => write_err(source),
            })?;
        }
        tar.end_entry().map_err(write_err)?;
    }
    let found = tar::archive_len(tar.bytes_written());
    if found != expected_size {
        let path = paths.last().map_or_else(
            || opts.store.disk_path(opts.store.dir.as_str()),
            |last| opts.store.disk_path(last.as_str()),
        );
        return Err(Error::Changed {
            path,
            expected: expected_size,
            found,
        });
    }
    let sink = tar.finish().map_err(write_err)?;
    let (buffered, diff_id, size) = sink.finish().map_err(write_err)?;
    buffered
        .into_inner()
        .map_err(|e| write_err(e.into_error()))?;
    Ok(LayerDigest { diff_id, size })
}

enum CopyError {
    Read(Error),
    Write(io::Error),
}

/// Copies the `size` bytes of file `disk` into the open entry, reading with
/// `buf`. Like Python's `copyfileobj`, a shorter file is an error; unlike
/// it, so is a longer one (its header would be wrong).
fn copy_file<W: Write>(
    disk: &Path,
    size: u64,
    tar: &mut TarWriter<W>,
    buf: &mut [u8],
) -> Result<(), CopyError> {
    let read_err = |source| {
        CopyError::Read(Error::Io {
            path: disk.to_owned(),
            source,
        })
    };
    let changed = |found| {
        CopyError::Read(Error::Changed {
            path: disk.to_owned(),
            expected: size,
            found,
        })
    };
    let mut file = File::open(disk).map_err(read_err)?;
    let mut remaining = size;
    while remaining > 0 {
        let want = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        match file.read(&mut buf[..want]) {
            Ok(0) => return Err(changed(size - remaining)),
            Ok(n) => {
                tar.write_all(&buf[..n]).map_err(CopyError::Write)?;
                remaining -= n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
    // One more read must see the end, or the file grew after its lstat.
    loop {
        match file.read(&mut buf[..1]) {
            Ok(0) => return Ok(()),
            Ok(_) => {
                let now = file.metadata().map_or(0, |m| m.len());
                return Err(changed(now.max(size + 1)));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
}
