//! Store paths → deterministic layer tars.
//!
//! A store layer is byte-compatible with nixpkgs' `stream_layered_image.py`
//! (SPEC §4), so its diff_id equals the one nixpkgs computes for the same
//! paths and options. A layer is first *measured* from metadata alone (its
//! exact tar size, needed before the bytes in the enclosing archive), then
//! *written* in one pass that hashes as it goes ([`write_store_layer`]), or
//! that does not when its diff_id is known ([`stream_store_layer`]), or only
//! *hashed* ([`hash_store_layer`], for the thread in [`ahead`] that hashes
//! layers ahead of the one being streamed).
//!
//! Plan first, write second: a [`Store`] yields each store path's entries
//! in layer order (names, kinds, canonical modes, sizes, link targets) and
//! the encoder in [`crate::tar`] turns them into bytes; this module applies the
//! owner, mtime and permission rules between the two, and never touches
//! the filesystem for store content. Memory is bounded whatever the
//! closure size: the local store's walk is lazy and holds only the listings
//! of the directories on its current path (one per level of depth), and
//! writing adds a fixed read buffer and write buffer.

pub mod ahead;
pub mod cache;
pub mod customisation;
pub mod permissions;
mod pipe;

use std::io::{self, Read, Write};
use std::path::PathBuf;

use crate::nix::StorePath;
use crate::oci::LayerDigest;
use crate::store::{self, EntryKind, Store, StoreLocation};

use crate::tar::{self, Header, Kind, TarWriter};
pub use permissions::{PermissionRule, Permissions};

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
pub struct LayerOptions<S = StoreLocation> {
    /// Where the store paths are read from: the local store, or any [`Store`].
    pub store: S,
    /// Owner written into every entry.
    pub owner: Owner,
    /// mtime (seconds since the epoch) of every entry.
    pub mtime: u64,
    /// `[[customisation.permissions]]` rules, applied to every entry; with
    /// none the layer is byte-identical to nixpkgs'.
    pub permissions: Permissions,
}

/// Why a layer could not be measured or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading a store file (through its [`Store`]) or a customisation `source` file failed.
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
        /// changed, the store path being written when that showed.
        path: PathBuf,
        /// Size when measured (of the file, or of the layer).
        expected: u64,
        /// Size when written (for an overflowing layer, the least it would take).
        found: u64,
    },
    /// A store path's [`Store::stamp`] (its files' metadata) differs from
    /// before its layer's diff_id was taken (from the layer cache, or by
    /// the thread hashing ahead) to after the layer's bytes were written:
    /// those bytes may not be the ones the diff_id names, so the image is
    /// refused rather than written with a wrong diff_id.
    #[error("`{}` changed while the image was built (its files' metadata differs from when its layer's digest was taken); build again", path.display())]
    Modified {
        /// Where the store path is.
        path: PathBuf,
    },
    /// Two `contents` store paths hold different files at one image path.
    #[error("`{first}` and `{second}` collide at `{path}` in `customisation.contents`")]
    Collision {
        /// The image path.
        path: String,
        /// What was there first (a store file).
        first: String,
        /// What came second.
        second: String,
    },
    /// A `contents` store path is not a directory, so it cannot be merged into `/`.
    #[error("`{path}` in `customisation.contents` is not a directory")]
    NotADirectory {
        /// The store path.
        path: String,
    },
    /// A `[[customisation.permissions]]` rule that can only match entries
    /// of the customisation layer (its fixed start is outside the store
    /// directory) matches none: a typo that would leave owners and modes
    /// silently unchanged.
    #[error("permission rule `{pattern}` matches no entry of the image (outside the store directory only the customisation layer's entries can match, none is at that path, and `/` itself is in no layer)")]
    UnmatchedRule {
        /// The rule's pattern.
        pattern: String,
    },
    /// The `[customisation] run` script could not run or failed.
    #[error("{message}")]
    Script {
        /// What happened.
        message: String,
    },
    /// A customisation path cannot be used.
    #[error("customisation path `{path}` is invalid: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why.
        reason: &'static str,
    },
}

fn describe_layer(first: Option<&StorePath>) -> String {
    match first {
        Some(path) => format!("starting with `{path}`"),
        None => "without store paths".to_owned(),
    }
}

/// A store's failure is a layer's, naming the same file.
impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::Io { path, source } => Self::Io { path, source },
            store::Error::Unsupported { path } => Self::Unsupported { path },
        }
    }
}

/// The output of a layer's tar, which can take a file's bytes by reading
/// them itself: the pipelined sender reads them straight into the chunk it
/// sends (one copy fewer), anything else through the caller's buffer.
pub(crate) trait ReadInto: Write {
    /// Reads at most `max` bytes of `file` into this output and returns how
    /// many (0 at the file's end); `Ok(Err(_))` when reading failed,
    /// `Err(_)` when writing did.
    ///
    /// # Errors
    /// When the output cannot be written.
    fn read_into(
        &mut self,
        file: &mut dyn Read,
        max: usize,
        scratch: &mut [u8],
    ) -> io::Result<io::Result<usize>> {
        let max = max.min(scratch.len());
        match file.read(&mut scratch[..max]) {
            Ok(n) => {
                self.write_all(&scratch[..n])?;
                Ok(Ok(n))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

impl<W: Write> ReadInto for crate::oci::HashCountWriter<W> {}
impl<W: Write> ReadInto for &mut crate::oci::HashCountWriter<W> {}
impl ReadInto for Vec<u8> {}

/// Read size for file contents: few syscalls for big files, and a fixed
/// amount of memory however large the file.
const READ_BUFFER: usize = 256 * 1024;

/// A header with the layer's owner and mtime, which nixpkgs' `apply_filters`
/// writes into every entry; the rest is filled per entry.
fn owned_header<S>(opts: &LayerOptions<S>) -> Header {
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

/// The entries every store layer starts with: the store directory and each
/// of its ancestors, mode 0755 (nixpkgs PR #282886, so an unprivileged owner
/// may write the store). For `/nix/store` these are nixpkgs' `/nix/` and
/// `/nix/store/`; nixpkgs writes those names even for another `store_dir`,
/// which leaves that store's own directories unowned, so we follow the
/// store directory instead.
fn prefix_headers<S: Store>(opts: &LayerOptions<S>) -> Vec<Header> {
    let store = opts.store.dir().as_str();
    store
        .match_indices('/')
        .skip(1)
        .map(|(i, _)| &store[..i])
        .chain([store])
        .map(|dir| {
            let mut header = Header {
                name: format!("{dir}/").into_bytes(),
                mode: 0o755,
                ..owned_header(opts)
            };
            opts.permissions.apply(&mut header);
            header
        })
        .collect()
}

/// Moves `entry` into `header` (the name, and a symlink's target, are moved,
/// not copied). Owner fields are reset to the layer's and the permission
/// rules applied, since a rule may have changed them for the previous entry.
fn fill_header<S>(header: &mut Header, entry: store::Entry, opts: &LayerOptions<S>) {
    header.mode = entry.mode();
    header.size = entry.size();
    header.name = entry.name;
    header.kind = match entry.kind {
        EntryKind::Directory => Kind::Directory,
        EntryKind::Regular { .. } => Kind::Regular,
        EntryKind::Symlink { target } => Kind::Symlink(target),
    };
    if !opts.permissions.is_empty() {
        header.uid = opts.owner.uid;
        header.gid = opts.owner.gid;
        header.uname.clone_from(&opts.owner.uname);
        header.gname.clone_from(&opts.owner.gname);
        opts.permissions.apply(header);
    }
}

/// The exact size of the tar of a store layer holding `paths`, from metadata.
///
/// Only the store's entries are asked for (on disk: `lstat`, `readdir` and
/// `readlink`); nothing is read or encoded. The local store's walk holds
/// one directory listing per level of depth, never the whole layer.
///
/// # Errors
/// When a store path or a file under it cannot be read, or holds a file
/// type no store can hold.
pub fn measure_store_layer<S: Store>(
    opts: &LayerOptions<S>,
    paths: &[StorePath],
) -> Result<u64, Error> {
    measure_and_stamp(opts, paths).map(|(size, _)| size)
}

/// What the walks over a layer's store paths saw: each path's
/// [`Store::walked_stamp`], in layer order (`None` where the store's walks
/// do not stamp).
pub(crate) type WalkedStamps = Vec<Option<Vec<u8>>>;

/// [`measure_store_layer`], and the content stamp of each store path from
/// the same walk: one pass over the metadata gives both the size and the
/// stamps taken before any byte of the layer is read.
///
/// # Errors
/// As [`measure_store_layer`].
pub(crate) fn measure_and_stamp<S: Store>(
    opts: &LayerOptions<S>,
    paths: &[StorePath],
) -> Result<(u64, WalkedStamps), Error> {
    let mut entries: u64 = prefix_headers(opts).iter().map(tar::entry_len).sum();
    let mut header = owned_header(opts);
    let mut stamps = Vec::with_capacity(paths.len());
    for path in paths {
        let mut walk = opts.store.entries(path);
        for entry in walk.by_ref() {
            fill_header(&mut header, entry?, opts);
            entries += tar::entry_len(&header);
        }
        stamps.push(opts.store.walked_stamp(&walk));
    }
    Ok((tar::archive_len(entries), stamps))
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
pub fn write_store_layer<S: Store, W: Write + Send>(
    opts: &LayerOptions<S>,
    paths: &[StorePath],
    expected_size: u64,
    out: W,
) -> Result<LayerDigest, Error> {
    let (diff_id, size, _) = pipelined_store_layer(opts, paths, expected_size, out, true)?;
    Ok(LayerDigest {
        diff_id: diff_id.unwrap_or(crate::oci::Digest([0; 32])),
        size,
    })
}

/// [`write_store_layer`] without hashing, for a layer whose diff_id is
/// known already (from the layer cache, or hashed ahead by
/// [`hash_store_layer`]): reading the store and writing `out` overlap on
/// two threads, and no core is spent on SHA-256. Returns the bytes written.
///
/// The caller vouches that the bytes are those the known diff_id was
/// computed from: it compares the store's [`Store::stamp`]s from before
/// that hash with the stamps after this write (see `ops::write`).
///
/// # Errors
/// As [`write_store_layer`].
pub fn stream_store_layer<S: Store, W: Write + Send>(
    opts: &LayerOptions<S>,
    paths: &[StorePath],
    expected_size: u64,
    out: W,
) -> Result<u64, Error> {
    stream_store_layer_walked(opts, paths, expected_size, out).map(|(size, _)| size)
}

/// [`stream_store_layer`], and what its walks saw of each store path
/// ([`Store::walked_stamp`], each file's metadata taken after it was
/// read): the stamps to compare with those from before the diff_id.
///
/// # Errors
/// As [`write_store_layer`].
pub(crate) fn stream_store_layer_walked<S: Store, W: Write + Send>(
    opts: &LayerOptions<S>,
    paths: &[StorePath],
    expected_size: u64,
    out: W,
) -> Result<(u64, WalkedStamps), Error> {
    let (_, size, stamps) = pipelined_store_layer(opts, paths, expected_size, out, false)?;
    Ok((size, stamps))
}

fn pipelined_store_layer<S: Store, W: Write + Send>(
    opts: &LayerOptions<S>,
    paths: &[StorePath],
    expected_size: u64,
    out: W,
    hash: bool,
) -> Result<(Option<crate::oci::Digest>, u64, WalkedStamps), Error> {
    let write_err = |source| Error::Write {
        first: paths.first().cloned(),
        source,
    };
    let (stamps, diff_id, size) = pipe::pipelined(
        out,
        hash,
        // Bytes hashed as they are written vouch for themselves; bytes
        // streamed under a diff_id taken elsewhere need the walk's stamps.
        |sender| write_store_tar(opts, paths, expected_size, sender, !hash),
        write_err,
    )?;
    Ok((diff_id, size, stamps))
}

/// The diff_id of the store layer holding `paths`, which must be
/// `expected_size` bytes (from [`measure_store_layer`]), by reading and
/// hashing its tar on the calling thread and writing it nowhere: a helper
/// thread hashes layers ahead of the one being streamed this way, so the
/// streaming thread need not (see `ops::write`).
///
/// # Errors
/// As [`write_store_layer`].
pub fn hash_store_layer<S: Store>(
    opts: &LayerOptions<S>,
    paths: &[StorePath],
    expected_size: u64,
) -> Result<LayerDigest, Error> {
    hash_store_layer_walked(opts, paths, expected_size).map(|(digest, _)| digest)
}

/// [`hash_store_layer`], and what its walks saw of each store path (see
/// [`stream_store_layer_walked`]).
///
/// # Errors
/// As [`write_store_layer`].
pub(crate) fn hash_store_layer_walked<S: Store>(
    opts: &LayerOptions<S>,
    paths: &[StorePath],
    expected_size: u64,
) -> Result<(LayerDigest, WalkedStamps), Error> {
    let mut hasher = crate::oci::HashCountWriter::new(io::sink());
    let stamps = write_store_tar(opts, paths, expected_size, &mut hasher, true)?;
    let (_, diff_id, size) = hasher.finish().map_err(|source| Error::Write {
        first: paths.first().cloned(),
        source,
    })?;
    Ok((LayerDigest { diff_id, size }, stamps))
}

/// The body of [`write_store_layer`], producing into the pipelined sender
/// (or a hasher) on the calling thread: the store is only ever read from
/// here. Returns what the walks saw of each store path, when `stamp` asks
/// for it (a diff_id hashed from the bytes written needs no stamps).
fn write_store_tar<S: Store, W: ReadInto>(
    opts: &LayerOptions<S>,
    paths: &[StorePath],
    expected_size: u64,
    out: W,
    stamp: bool,
) -> Result<WalkedStamps, Error> {
    let write_err = |source| Error::Write {
        first: paths.first().cloned(),
        source,
    };
    let mut tar = TarWriter::new(out);
    for header in prefix_headers(opts) {
        tar.append(&header, &[]).map_err(write_err)?;
    }
    // Which file changed is unknowable from a total; name the store path
    // being written when the difference shows.
    let noticed_in = |path: Option<&StorePath>| {
        let path = path.map_or(opts.store.dir().as_str(), StorePath::as_str);
        opts.store.location(path.as_bytes())
    };
    let mut header = owned_header(opts);
    let mut buf = vec![0; READ_BUFFER];
    let mut stamps = Vec::with_capacity(paths.len());
    for path in paths {
        // Each file is read before the walk goes on, as `entries_to_read` wants.
        let mut walk = opts.store.entries_to_read(path, stamp);
        while let Some(entry) = walk.next() {
            fill_header(&mut header, entry?, opts);
            let at_least = tar::archive_len(tar.bytes_written() + tar::entry_len(&header));
            if at_least > expected_size {
                return Err(Error::Changed {
                    path: noticed_in(Some(path)),
                    expected: expected_size,
                    found: at_least,
                });
            }
            tar.start_entry(&header).map_err(write_err)?;
            if header.kind == Kind::Regular {
                let file = opts.store.open_entry(&mut walk, &header.name)?;
                let at = || opts.store.location(&header.name);
                copy_file(file, at, header.size, &mut tar, &mut buf).map_err(|e| match e {
                    CopyError::Read(error) => error,
                    CopyError::Write(source) => write_err(source),
                })?;
            }
            tar.end_entry().map_err(write_err)?;
        }
        stamps.push(opts.store.walked_stamp(&walk));
    }
    let found = tar::archive_len(tar.bytes_written());
    if found != expected_size {
        return Err(Error::Changed {
            path: noticed_in(paths.last()),
            expected: expected_size,
            found,
        });
    }
    let mut sender = tar.finish().map_err(write_err)?;
    sender.flush().map_err(write_err)?;
    Ok(stamps)
}

enum CopyError {
    Read(Error),
    Write(io::Error),
}

/// Bytes read past a file's announced end to say by how much it grew; past
/// them the error says "at least".
const GROWTH_COUNTED: u64 = 64 * READ_BUFFER as u64;

/// Copies the `size` bytes of `file` into the open entry, reading with
/// `buf`; `at` names the file in errors (computed only for one). Like
/// Python's `copyfileobj`, a shorter file is an error; unlike it, so is a
/// longer one (its header would be wrong).
fn copy_file<W: ReadInto>(
    mut file: impl Read,
    at: impl Fn() -> PathBuf,
    size: u64,
    tar: &mut TarWriter<W>,
    buf: &mut [u8],
) -> Result<(), CopyError> {
    let read_err = |source| CopyError::Read(Error::Io { path: at(), source });
    let changed = |found| {
        CopyError::Read(Error::Changed {
            path: at(),
            expected: size,
            found,
        })
    };
    let mut remaining = size;
    while remaining > 0 {
        let want = usize::try_from(remaining).map_or(READ_BUFFER, |r| r.min(READ_BUFFER));
        let read = tar
            .write_through(want, |out, max| out.read_into(&mut file, max, buf))
            .map_err(CopyError::Write)?;
        match read {
            Ok(0) => return Err(changed(size - remaining)),
            Ok(n) => remaining -= n as u64,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
    // One more read must see the end, or the file grew after it was listed;
    // then count how much it grew (up to a bound) to say its size now.
    let mut probe = [0; 1];
    loop {
        match file.read(&mut probe) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                let more =
                    io::copy(&mut file.by_ref().take(GROWTH_COUNTED), &mut io::sink()).unwrap_or(0);
                return Err(changed(size + n as u64 + more));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::nix::StoreDir;
    use crate::oci::Digest;
    use crate::store::fixture::{build_tree, put, store_path, LINK, SINGLE, TREE};
    use tar::RECORD;

    fn opts(root: &Path) -> LayerOptions {
        LayerOptions {
            store: StoreLocation {
                dir: StoreDir::default(),
                root: root.to_owned(),
            },
            owner: Owner {
                uid: 1000,
                gid: 100,
                uname: "user".to_owned(),
                gname: "users".to_owned(),
            },
            mtime: 1_700_000_000,
            permissions: Permissions::default(),
        }
    }

    fn write<S: Store>(
        opts: &LayerOptions<S>,
        paths: &[StorePath],
    ) -> Result<(Vec<u8>, LayerDigest), Error> {
        let size = measure_store_layer(opts, paths)?;
        let mut bytes = Vec::new();
        let digest = write_store_layer(opts, paths, size, &mut bytes)?;
        assert_eq!(digest.size, size);
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(digest.diff_id, Digest::of(&bytes));
        Ok((bytes, digest))
    }

    /// Sort, hard links, symlinks (not followed), a file and a symlink as
    /// store paths, undecodable names, long names and links, a chroot store:
    /// byte for byte what nixpkgs' algorithm gives under CPython.
    #[test]
    fn layer_matches_python_reference() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let paths = [store_path(TREE), store_path(SINGLE), store_path(LINK)];
        let (bytes, _) = write(&opts(dir.path()), &paths).unwrap();
        let expected = include_bytes!("../../fixtures/tar/layer.tar");
        if let Some(at) = bytes.iter().zip(expected).position(|(a, b)| a != b) {
            panic!(
                "first difference at byte {at}: {:?}",
                String::from_utf8_lossy(&bytes[at - at % 512..][..512])
            );
        }
        assert_eq!(bytes.len(), expected.len());
    }

    /// The layer writer takes any store, a borrowed one too, and reads it
    /// only through the trait: the same layer from a borrowed local store.
    #[test]
    fn any_store_gives_the_same_layer() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let owned = opts(dir.path());
        let borrowed = LayerOptions {
            store: &owned.store,
            owner: owned.owner.clone(),
            mtime: owned.mtime,
            permissions: owned.permissions.clone(),
        };
        let paths = [store_path(TREE), store_path(SINGLE), store_path(LINK)];
        assert_eq!(
            write(&owned, &paths).unwrap(),
            write(&borrowed, &paths).unwrap()
        );
    }

    #[test]
    fn a_symlink_store_path_is_one_entry_after_the_store_directories() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        // A layer of just these, starting with /nix/ and /nix/store/.
        let (bytes, _) = write(&opts(dir.path()), &[store_path(LINK)]).unwrap();
        assert_eq!(&bytes[..6], b"/nix/\0");
        assert_eq!(&bytes[512..524], b"/nix/store/\0");
        assert_eq!(&bytes[1024..1024 + LINK.len()], LINK.as_bytes());
        assert_eq!(bytes.len() as u64, RECORD);
    }

    #[test]
    fn another_store_dir_gets_its_own_directories() {
        let mut o = opts(Path::new("/"));
        o.store.dir = crate::nix::StoreDir::new("/opt/pkgs/store").unwrap();
        let names: Vec<Vec<u8>> = prefix_headers(&o).into_iter().map(|h| h.name).collect();
        assert_eq!(names, [&b"/opt/"[..], b"/opt/pkgs/", b"/opt/pkgs/store/"]);
    }

    #[test]
    fn growing_file_between_measure_and_write_is_changed() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let o = opts(dir.path());
        let paths = [store_path(TREE)];
        let size = measure_store_layer(&o, &paths).unwrap();
        fs::write(o.store.disk_path(TREE).join("a/b/c"), vec![b'x'; 20_000]).unwrap();
        let mut out = Vec::new();
        match write_store_layer(&o, &paths, size, &mut out) {
            Err(Error::Changed {
                path,
                expected,
                found,
            }) => {
                assert_eq!(path, o.store.disk_path(TREE));
                assert_eq!(expected, size);
                assert!(found > size);
            }
            other => panic!("expected Changed, got {other:?}"),
        }
        assert!(out.len() as u64 <= size, "never more than announced");
    }

    #[test]
    fn shrunk_layer_is_changed() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let o = opts(dir.path());
        let paths = [store_path(TREE)];
        let size = measure_store_layer(&o, &paths).unwrap();
        fs::remove_file(o.store.disk_path(TREE).join("big")).unwrap();
        let err = write_store_layer(&o, &paths, size, io::sink()).unwrap_err();
        assert!(
            matches!(err, Error::Changed { ref path, expected, found }
                if *path == o.store.disk_path(TREE) && expected == size && found < size),
            "{err:?}"
        );
    }

    #[test]
    fn file_size_differing_from_its_header_is_changed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        fs::write(&file, b"12345").unwrap();
        let mut buf = [0; 2];
        let mut tar = TarWriter::new(Vec::new());
        let header = |size| Header {
            size,
            kind: Kind::Regular,
            ..owned_header(&opts(dir.path()))
        };
        for (declared, found) in [(9, 5), (3, 5)] {
            tar.start_entry(&header(declared)).unwrap();
            let reader = fs::File::open(&file).unwrap();
            match copy_file(reader, || file.clone(), declared, &mut tar, &mut buf) {
                Err(CopyError::Read(Error::Changed {
                    path,
                    expected,
                    found: f,
                })) => {
                    assert_eq!((path, expected, f), (file.clone(), declared, found));
                }
                _ => panic!("expected Changed for a header of {declared} bytes"),
            }
            tar = TarWriter::new(Vec::new());
        }
    }

    /// The store's errors become the layer's, naming the same file.
    #[test]
    fn odd_store_content_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        match measure_store_layer(&o, &[store_path(SINGLE)]) {
            Err(Error::Io { path, .. }) => assert_eq!(path, o.store.disk_path(SINGLE)),
            other => panic!("expected Io, got {other:?}"),
        }
        let socket = o.store.disk_path(TREE).join("socket");
        fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        match measure_store_layer(&o, &[store_path(TREE)]) {
            Err(Error::Unsupported { path }) => assert_eq!(path, socket),
            other => panic!("expected Unsupported, got {other:?}"),
        }
        put(&o.store.disk_path(SINGLE), b"x");
        let mut unreadable = o.clone();
        unreadable.store.root = dir.path().join("elsewhere");
        let err = write_store_layer(&unreadable, &[store_path(SINGLE)], RECORD, io::sink());
        assert!(matches!(err, Err(Error::Io { .. })), "{err:?}");
    }

    #[test]
    fn empty_layer_is_the_two_store_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, _) = write(&opts(dir.path()), &[]).unwrap();
        assert_eq!(bytes.len() as u64, RECORD);
        assert!(bytes[1024..].iter().all(|&b| b == 0));
    }
}
