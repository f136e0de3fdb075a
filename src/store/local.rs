//! The store on this machine's disk: `store.dir` under `store.root`.
//!
//! [`StoreLocation::entries`](super::Store::entries) walks a store path
//! lazily: each directory's listing is read and sorted on its own when the
//! walk enters it, which gives the order of nixpkgs' streamer (it sorts
//! `[path, *path.rglob("*")]` as pathlib paths, i.e. by their list of
//! components: a depth-first pre-order with siblings in code-point order).
//! So the walk never holds more than the listings of the directories on the
//! current path from the store path down, and one open handle per such
//! directory: memory is bounded by one directory's width times the depth,
//! not by the size of the closure.
//!
//! The walk keeps each directory on its path open and looks its children
//! up relative to it, one component each (`openat`, `statx`, `readlinkat`,
//! all with `O_NOFOLLOW`/`AT_SYMLINK_NOFOLLOW`), and lists it by reading
//! its handle (`getdents64`): no entry is looked up by its full path, which
//! the kernel would resolve component by component every time, and a
//! symlink is never followed, not even one swapped in for a file or a
//! directory after the listing named it. A device, fifo or socket is an
//! error (no NAR can hold one). Unlike pathlib's `rglob`, which silently
//! skips a directory it may not read, a listing error is an error rather
//! than files left out.
//!
//! A walk also computes the store path's content stamp (see
//! [`StoreLocation::stamp`]) from the metadata it reads anyway, so the
//! walk that measures a layer stamps it too, and a walk that reads the
//! files stamps each after its bytes were read ([`Store::walked_stamp`]).
//!
//! Names are bytes. Python reads them as `str` through the filesystem
//! encoding, UTF-8 wherever nixpkgs runs the streamer (UTF-8 mode, or a
//! UTF-8 locale), with `surrogateescape`; [`super::python_order`] compares
//! them as such.
//!
//! Hand-written rather than on `walkdir`: a `walkdir` walk (no link
//! following, root links not followed, `sort_by` python order of the file
//! names) gives the same tar bytes, but measured on a 60,000-entry tree it
//! was slower: 232 ms against 194 ms to list and size a layer, 719 against
//! 677 ms to write it (median of 5, release). Its sort recomputes each name
//! from the entry's full path at every comparison, and it holds a full path
//! per unvisited sibling where this walk holds the name alone. It also
//! hides its listing stack, which the memory-bound test inspects, and
//! yields a directory before reading it, where this walk fails on the
//! unreadable directory itself. (Those figures are from the walk by full
//! paths; the walk by handles is faster again.)

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::{self, File, Metadata};
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::vec;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir, Statx, StatxFlags, CWD};
use sha2::{Digest as _, Sha256};

use super::{python_order, Entry, EntryKind, Error, Store};
use crate::nix::{StoreDir, StorePath};

/// Where the store lives on this machine: the local store.
#[derive(Clone, Debug)]
pub struct StoreLocation {
    /// The logical store directory (`store.dir`), e.g. `/nix/store`.
    pub dir: StoreDir,
    /// The filesystem root the store is read from (`store.root`), `/` for the live store.
    pub root: PathBuf,
}

impl StoreLocation {
    /// Where `path` is on this machine's filesystem.
    #[must_use]
    pub fn disk_path(&self, path: &str) -> PathBuf {
        self.disk(path.as_bytes())
    }

    /// The root with symlinks and `..` resolved, so that one store named
    /// two ways (`./store`, `/abs/store`) is one store; a root that cannot
    /// be resolved keeps its spelling.
    fn canonical_root(&self) -> PathBuf {
        fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone())
    }

    /// Where the logical path `name` is on disk (a directory's `/` dropped).
    fn disk(&self, name: &[u8]) -> PathBuf {
        let mut relative = name.strip_suffix(b"/").unwrap_or(name);
        while let Some(rest) = relative.strip_prefix(b"/") {
            relative = rest;
        }
        self.root.join(OsStr::from_bytes(relative))
    }
}

impl Store for StoreLocation {
    type Entries<'a> = LocalEntries;
    type Reader<'a> = LocalFile;

    fn dir(&self) -> &StoreDir {
        &self.dir
    }

    /// `local?root=ROOT`, the root resolved (`canonical_root`)
    /// and percent-encoded as in a Nix store URL: the same store directory
    /// under another root may hold other bytes.
    fn identity(&self) -> String {
        let mut id = "local?root=".to_owned();
        for &b in self.canonical_root().as_os_str().as_bytes() {
            if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
                id.push(char::from(b));
            } else {
                id.push_str(&format!("%{b:02X}"));
            }
        }
        id
    }

    fn entries(&self, path: &StorePath) -> LocalEntries {
        LocalEntries::new(self, path, false, true)
    }

    /// A walk that opens each regular file as it yields it (one lookup in
    /// its open directory), for [`Store::open_entry`] to hand over; with
    /// `stamp`, one more `statx` of each file once it was read.
    fn entries_to_read(&self, path: &StorePath, stamp: bool) -> LocalEntries {
        LocalEntries::new(self, path, true, stamp)
    }

    fn open_entry(&self, entries: &mut LocalEntries, name: &[u8]) -> Result<LocalFile, Error> {
        match entries.take_opened() {
            Some(file) => Ok(file),
            None => self.open(name),
        }
    }

    fn walked_stamp(&self, entries: &LocalEntries) -> Option<Vec<u8>> {
        entries.stamp()
    }

    fn entry(&self, name: &[u8]) -> Result<Option<Entry>, Error> {
        let disk = self.disk(name);
        let meta = match fs::symlink_metadata(&disk) {
            Ok(meta) => meta,
            // Under a store path that is one file (`writeScript`), `x/bin`
            // is ENOTDIR: absent too, not a read failure.
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None)
            }
            Err(source) => return Err(Error::Io { path: disk, source }),
        };
        let kind = kind_of(&meta, &disk)?;
        let mut name = name.strip_suffix(b"/").unwrap_or(name).to_vec();
        if kind == EntryKind::Directory {
            name.push(b'/');
        }
        Ok(Some(Entry { name, kind }))
    }

    fn read_dir(&self, name: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let names = read_sorted(&self.disk(name))?;
        Ok(names.into_iter().map(OsString::into_vec).collect())
    }

    fn open(&self, name: &[u8]) -> Result<LocalFile, Error> {
        let disk = self.disk(name);
        File::open(&disk)
            .map(|file| LocalFile(Arc::new(file)))
            .map_err(|source| Error::Io { path: disk, source })
    }

    fn location(&self, name: &[u8]) -> PathBuf {
        self.disk(name)
    }

    /// For a path of the machine's own Nix store (`/nix/store` under the
    /// root `/`) that its database registers: that registration and the
    /// store path's top entry (see the `registered` module), without a walk.
    ///
    /// Otherwise sha256 of where the store path is (the resolved root) and
    /// of the file-system metadata of every entry of it: sizes, modes,
    /// inodes, modification and change times. A store under `store.root`
    /// (a fixture, a CI cache) is only as immutable as its owner keeps it;
    /// an edit in place changes the change time even when it keeps the size
    /// and the modification time, and a moved store has another root.
    /// Reading the metadata costs what measuring a layer costs already,
    /// not a read of the bytes.
    fn stamp(&self, path: &StorePath) -> Result<Vec<u8>, Error> {
        let root = self.canonical_root();
        if root == Path::new("/") && self.dir == StoreDir::default() {
            let db = Path::new(super::registered::NIX_DB);
            let disk = self.disk_path(path.as_str());
            if let Some(stamp) = super::registered::stamp(db, &disk, path.as_str()) {
                return Ok(stamp);
            }
        }
        self.content_stamp(path)
    }

    /// The metadata of every entry of `path` (see [`StoreLocation::stamp`]),
    /// never the registration alone: the stamp a walk of it computes.
    fn content_stamp(&self, path: &StorePath) -> Result<Vec<u8>, Error> {
        let mut walk = self.entries(path);
        for entry in walk.by_ref() {
            entry?;
        }
        walk.stamp().ok_or_else(|| Error::Io {
            path: self.disk_path(path.as_str()),
            source: io::Error::other("the walk could not stamp every entry"),
        })
    }
}

/// The part of a stamp before the metadata: what it is, where the store
/// is (the resolved root) and which store path.
fn stamp_prefix(root: &Path, path: &StorePath) -> Sha256 {
    let mut hash = Sha256::new();
    hash.update(b"nixlayer local store stamp v1\0");
    hash.update(root.as_os_str().as_bytes());
    hash.update(b"\0");
    hash.update(path.as_str().as_bytes());
    hash.update(b"\0");
    hash
}

/// What a stamp records of one entry: mode, size, inode, device,
/// modification and change times, as `lstat` (std's `symlink_metadata`)
/// gives them.
fn stamp_fields(stx: &Statx) -> [u64; 8] {
    [
        u64::from(stx.stx_mode),
        stx.stx_size,
        stx.stx_ino,
        rustix::fs::makedev(stx.stx_dev_major, stx.stx_dev_minor),
        stx.stx_mtime.tv_sec.cast_unsigned(),
        u64::from(stx.stx_mtime.tv_nsec),
        stx.stx_ctime.tv_sec.cast_unsigned(),
        u64::from(stx.stx_ctime.tv_nsec),
    ]
}

/// What the walk asks `statx` for: the fields of [`stamp_fields`] and the type.
const STATX_MASK: StatxFlags = StatxFlags::BASIC_STATS;

/// `statx` of the open file `fd` itself (no path lookup).
fn statx_fd(fd: impl AsFd) -> rustix::io::Result<Statx> {
    rustix::fs::statx(fd, c"", AtFlags::EMPTY_PATH, STATX_MASK)
}

/// Opens directory `name` in `dir`, never through a symlink.
fn open_dir(dir: impl AsFd, name: impl rustix::path::Arg) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// Opens regular file `name` in `dir` to read it, never through a symlink;
/// non-blocking and without a controlling terminal, so that something
/// swapped in for the file since it was listed (a fifo, a device) cannot
/// block or take over the walk before `statx` of the handle refuses it.
fn open_file(dir: impl AsFd, name: impl rustix::path::Arg) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// A directory whose entries are being walked.
struct Level {
    /// The directory, open: its children are looked up relative to it, one
    /// path component each, never by their full path.
    dir: OwnedFd,
    /// Its path on disk, for messages.
    disk: PathBuf,
    /// Its name, ending in `/`.
    name: Vec<u8>,
    /// The children not yet yielded, sorted, with their type as listed.
    children: vec::IntoIter<(CString, FileType)>,
}

/// A file of the local store, opened by the walk that yielded it
/// ([`Store::entries_to_read`]) or by name ([`Store::open`]).
#[derive(Debug)]
pub struct LocalFile(Arc<File>);

impl Read for LocalFile {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// The entries of one store path on disk, in layer order, read lazily.
///
/// The walk holds each directory on its current path open and looks every
/// child up relative to it (`openat`, `statx`, `readlinkat` with one
/// component, never following a symlink), and lists a directory by reading
/// its handle. As it goes it hashes every entry's metadata into the store
/// path's content stamp ([`Store::walked_stamp`]): a directory's after its
/// listing was read, a file's, when the walk reads files, after the caller
/// has read it; so a stamp equal to an earlier one says that nothing the
/// walk listed or the caller read changed in between.
pub struct LocalEntries {
    /// The store path's own name and disk path, until it is yielded.
    start: Option<(Vec<u8>, PathBuf)>,
    /// The open directories on the path to the next entry, outermost first.
    stack: Vec<Level>,
    walk: Walk,
}

/// What a walk keeps besides its directories.
struct Walk {
    /// Whether regular files are opened as they are yielded (a walk whose
    /// caller reads them); else they are only looked at.
    read: bool,
    /// The file yielded last, opened, whose metadata is still to be stamped.
    opened: Option<Arc<File>>,
    /// The stamp so far (`stamp_prefix`, then every entry's metadata);
    /// `None` once something kept it from covering every entry.
    stamp: Option<Sha256>,
    /// The stamp, once the walk has ended.
    finished: Option<Vec<u8>>,
    /// Reused for reading directory listings.
    listing: Vec<u8>,
}

impl LocalEntries {
    fn new(store: &StoreLocation, path: &StorePath, read: bool, stamp: bool) -> Self {
        Self {
            start: Some((
                path.as_str().as_bytes().to_vec(),
                store.disk_path(path.as_str()),
            )),
            stack: Vec::new(),
            walk: Walk {
                read,
                opened: None,
                stamp: stamp.then(|| stamp_prefix(&store.canonical_root(), path)),
                finished: None,
                listing: Vec::with_capacity(LISTING_BUFFER),
            },
        }
    }

    /// Directory levels and names the walk holds right now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> (usize, usize) {
        let names = self.stack.iter().map(|l| l.children.len()).sum();
        (self.stack.len(), names)
    }

    /// The content stamp of the store path as this walk saw it, once it
    /// has ended; see [`Store::walked_stamp`].
    #[must_use]
    pub fn stamp(&self) -> Option<Vec<u8>> {
        self.walk.finished.clone()
    }

    /// The file the walk yielded last, when it opened it (a reading walk).
    fn take_opened(&self) -> Option<LocalFile> {
        self.walk.opened.as_ref().map(|f| LocalFile(Arc::clone(f)))
    }

    /// The walk stops at its first error: the stamp covers no more.
    fn failed(&mut self, e: Error) -> Option<Result<Entry, Error>> {
        self.walk.stamp = None;
        self.stack.clear();
        Some(Err(e))
    }
}

impl Walk {
    fn hash(&mut self, bytes: &[u8]) {
        if let Some(stamp) = &mut self.stamp {
            stamp.update(bytes);
        }
    }

    fn hash_meta(&mut self, stx: &Statx) {
        for field in stamp_fields(stx) {
            self.hash(&field.to_le_bytes());
        }
    }

    /// Stamps the file yielded last, now that its reader is done with it.
    fn stamp_opened(&mut self) {
        if let Some(file) = self.opened.take() {
            if self.stamp.is_none() {
                return;
            }
            match statx_fd(&*file) {
                Ok(stx) => self.hash_meta(&stx),
                // Its metadata is unknown: the stamp cannot vouch for it.
                Err(_) => self.stamp = None,
            }
        }
    }

    /// The entry `child` (of type `listed` in its directory's listing) in
    /// `parent`, or at the disk path `child` when there is no parent;
    /// `disk` names it in errors. A directory comes with its level, listed.
    fn visit(
        &mut self,
        parent: Option<&OwnedFd>,
        child: &CStr,
        listed: FileType,
        name: Vec<u8>,
        disk: &dyn Fn() -> PathBuf,
    ) -> Result<(Entry, Option<Level>), Error> {
        let at = parent.map_or(CWD, AsFd::as_fd);
        let io = |e: rustix::io::Errno| Error::Io {
            path: disk(),
            source: e.into(),
        };
        // The listing's type says what to open; a look at the entry itself
        // settles it when the listing does not say, or the entry was
        // replaced by something else since.
        let mut kind = listed;
        for _ in 0..2 {
            match kind {
                FileType::Directory => match open_dir(at, child) {
                    Ok(dir) => return self.dir(dir, name, disk),
                    Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => {}
                    Err(e) => return Err(io(e)),
                },
                FileType::RegularFile if self.read => match open_file(at, child) {
                    Ok(fd) => {
                        let stx = statx_fd(&fd).map_err(io)?;
                        return match FileType::from_raw_mode(stx.stx_mode.into()) {
                            FileType::RegularFile => {
                                self.opened = Some(Arc::new(File::from(fd)));
                                Ok((regular(name, &stx), None))
                            }
                            FileType::Directory => self.dir(fd, name, disk),
                            _ => Err(Error::Unsupported { path: disk() }),
                        };
                    }
                    Err(rustix::io::Errno::LOOP | rustix::io::Errno::NXIO) => {}
                    Err(e) => return Err(io(e)),
                },
                _ => {}
            }
            let stx =
                rustix::fs::statx(at, child, AtFlags::SYMLINK_NOFOLLOW, STATX_MASK).map_err(io)?;
            let found = FileType::from_raw_mode(stx.stx_mode.into());
            match found {
                FileType::RegularFile if !self.read => {
                    self.hash_meta(&stx);
                    return Ok((regular(name, &stx), None));
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(at, child, Vec::new()).map_err(io)?;
                    self.hash_meta(&stx);
                    let kind = EntryKind::Symlink {
                        target: target.into_bytes(),
                    };
                    return Ok((Entry { name, kind }, None));
                }
                FileType::Directory | FileType::RegularFile if found != kind => kind = found,
                // Devices, fifos and sockets cannot be in a NAR, hence in
                // a store; nor can an entry that keeps changing its kind
                // be read (and it is not tried forever).
                _ => return Err(Error::Unsupported { path: disk() }),
            }
        }
        Err(Error::Unsupported { path: disk() })
    }

    /// The directory `dir` (named `name`) listed, as an entry and a level.
    /// Its metadata is stamped once the listing is read, so a stamp that
    /// did not change says the listing did not either.
    fn dir(
        &mut self,
        dir: OwnedFd,
        mut name: Vec<u8>,
        disk: &dyn Fn() -> PathBuf,
    ) -> Result<(Entry, Option<Level>), Error> {
        let io = |e: rustix::io::Errno| Error::Io {
            path: disk(),
            source: e.into(),
        };
        let children = list(&dir, &mut self.listing).map_err(io)?;
        let stx = statx_fd(&dir).map_err(io)?;
        self.hash_meta(&stx);
        name.push(b'/');
        let level = Level {
            dir,
            disk: disk(),
            name: name.clone(),
            children: children.into_iter(),
        };
        Ok((Entry::directory(name), Some(level)))
    }
}

/// A regular file's entry from its `statx`.
fn regular(name: Vec<u8>, stx: &Statx) -> Entry {
    Entry::regular(name, stx.stx_size, stx.stx_mode & 0o100 != 0)
}

/// Bytes of the buffer directory listings are read with (`getdents64`).
const LISTING_BUFFER: usize = 32 * 1024;
/// The most it grows to when one entry does not fit.
const MAX_LISTING_BUFFER: usize = 1 << 20;

/// The names in the open directory `dir`, with their types as listed, in
/// Python's order; `buf` is the reused listing buffer.
fn list(dir: &OwnedFd, buf: &mut Vec<u8>) -> rustix::io::Result<Vec<(CString, FileType)>> {
    let mut names = Vec::new();
    loop {
        let room = buf.capacity();
        let mut listing = RawDir::new(dir, buf.spare_capacity_mut());
        let grow = loop {
            match listing.next() {
                None => break false,
                // An entry larger than the whole buffer: a larger buffer,
                // and the listing goes on where it stopped (up to a bound,
                // past which no name can be: an error, never a loop).
                Some(Err(rustix::io::Errno::INVAL)) if room < MAX_LISTING_BUFFER => break true,
                Some(Err(e)) => return Err(e),
                Some(Ok(entry)) => {
                    let child = entry.file_name();
                    if child != c"." && child != c".." {
                        names.push((child.to_owned(), entry.file_type()));
                    }
                }
            }
        };
        if !grow {
            break;
        }
        buf.reserve(buf.capacity() * 2);
    }
    names.sort_unstable_by(|(a, _), (b, _)| python_order(a.to_bytes(), b.to_bytes()));
    Ok(names)
}

impl Iterator for LocalEntries {
    type Item = Result<Entry, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        self.walk.stamp_opened();
        if let Some((name, disk)) = self.start.take() {
            // A symlink is one entry, a file one entry, a directory the
            // start of a walk. Its name is the logical path; it is looked
            // up by its disk path, the last component not followed.
            let Ok(child) = CString::new(disk.as_os_str().as_bytes()) else {
                let source = io::Error::from(io::ErrorKind::InvalidInput);
                return self.failed(Error::Io { path: disk, source });
            };
            let at = || disk.clone();
            return match self.walk.visit(None, &child, FileType::Unknown, name, &at) {
                Ok((entry, level)) => {
                    self.stack.extend(level);
                    Some(Ok(entry))
                }
                Err(e) => self.failed(e),
            };
        }
        while let Some(level) = self.stack.last_mut() {
            let Some((child, listed)) = level.children.next() else {
                self.stack.pop();
                self.walk.hash(b"\x01");
                continue;
            };
            let level = &*level;
            let mut name = Vec::with_capacity(level.name.len() + child.as_bytes().len());
            name.extend_from_slice(&level.name);
            name.extend_from_slice(child.as_bytes());
            // The stamp's order: a child's name, then its metadata.
            self.walk.hash(child.as_bytes());
            self.walk.hash(b"\0");
            let disk = || level.disk.join(OsStr::from_bytes(child.as_bytes()));
            return match self
                .walk
                .visit(Some(&level.dir), &child, listed, name, &disk)
            {
                Ok((entry, level)) => {
                    self.stack.extend(level);
                    Some(Ok(entry))
                }
                Err(e) => self.failed(e),
            };
        }
        if self.walk.finished.is_none() {
            if let Some(stamp) = self.walk.stamp.take() {
                self.walk.finished = Some(stamp.finalize().to_vec());
            }
        }
        None
    }
}

/// The kind of the entry `meta` describes (from `lstat`, so a symlink is
/// never followed). A hard link is just a regular file here: NARs have no
/// links, and nixpkgs turns tarfile's hard-link entries back into full copies.
fn kind_of(meta: &Metadata, disk: &Path) -> Result<EntryKind, Error> {
    let file_type = meta.file_type();
    if file_type.is_dir() {
        Ok(EntryKind::Directory)
    } else if file_type.is_file() {
        Ok(EntryKind::Regular {
            size: meta.len(),
            executable: meta.mode() & 0o100 != 0,
        })
    } else if file_type.is_symlink() {
        let target = fs::read_link(disk).map_err(|source| Error::Io {
            path: disk.to_owned(),
            source,
        })?;
        Ok(EntryKind::Symlink {
            target: target.into_os_string().into_vec(),
        })
    } else {
        // Devices, fifos and sockets cannot be in a NAR, hence in a store.
        Err(Error::Unsupported {
            path: disk.to_owned(),
        })
    }
}

/// The names in directory `disk`, in Python's order.
fn read_sorted(disk: &Path) -> Result<Vec<OsString>, Error> {
    let err = |source| Error::Io {
        path: disk.to_owned(),
        source,
    };
    let mut names = fs::read_dir(disk)
        .map_err(err)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    names.sort_unstable_by(|a, b| python_order(a.as_bytes(), b.as_bytes()));
    Ok(names)
}

/// A store tree on disk for tests, here and in the layer writers'.
#[cfg(test)]
pub(crate) mod fixture {
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;

    use super::StoreLocation;
    use crate::nix::{StoreDir, StorePath};

    pub(crate) const TREE: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-tree";
    pub(crate) const SINGLE: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-single.conf";
    pub(crate) const LINK: &str = "/nix/store/00000000000000000000000000000000-link";

    pub(crate) fn store_path(path: &str) -> StorePath {
        StorePath::parse(&StoreDir::default(), path).unwrap()
    }

    pub(crate) fn local(root: &Path) -> StoreLocation {
        StoreLocation {
            dir: StoreDir::default(),
            root: root.to_owned(),
        }
    }

    pub(crate) fn put(path: &Path, content: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    /// Rewrites `file` with `content` and puts its mtime back: an edit in
    /// place that only the inode's change time (and the bytes) can tell.
    pub(crate) fn edit_keeping_mtime(file: &Path, content: &[u8]) {
        let mtime = fs::metadata(file).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(file, content).unwrap();
        fs::File::options()
            .write(true)
            .open(file)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }

    /// The twin of `build_tree` in `fixtures/tar/generate.py`, left with
    /// this process's umask modes: the canonical-mode rule must give the
    /// bytes Python read from a tree chmod-ed like a real store.
    ///
    /// ```text
    /// TREE/ .dotfile  a/{b/c, b-c, b.c}  big  bin/exe  d…d/e…e/deep.txt  empty
    ///       names/{é, \x80, \xff, U+E000, 😀}
    ///       share/{data, hard=data, hard2=data, empty-dir/, dirlink -> ../bin,
    ///              long-link -> /t…t, bin-link -> \xfe-target}
    /// SINGLE (a file)   LINK -> TREE/bin
    /// ```
    pub(crate) fn build_tree(root: &Path) {
        let store = local(root);
        let t = store.disk_path(TREE);
        put(&t.join("a/b/c"), b"c\n");
        put(&t.join("a/b-c"), b"b-c\n");
        put(&t.join("a/b.c"), b"b.c\n");
        put(&t.join(".dotfile"), b".hidden\n");
        put(&t.join("bin/exe"), b"#!/bin/sh\necho hi\n");
        fs::set_permissions(t.join("bin/exe"), fs::Permissions::from_mode(0o750)).unwrap();
        put(&t.join("share/data"), b"data\n");
        fs::hard_link(t.join("share/data"), t.join("share/hard")).unwrap();
        fs::hard_link(t.join("share/data"), t.join("share/hard2")).unwrap();
        fs::create_dir(t.join("share/empty-dir")).unwrap();
        symlink("../bin", t.join("share/dirlink")).unwrap();
        symlink(format!("/{}", "t".repeat(150)), t.join("share/long-link")).unwrap();
        symlink(OsStr::from_bytes(b"\xfe-target"), t.join("share/bin-link")).unwrap();
        for name in [
            &b"\xc3\xa9"[..],
            b"\x80",
            b"\xff",
            b"\xee\x80\x80",
            b"\xf0\x9f\x98\x80",
        ] {
            let content = [name, b"\n"].concat();
            put(&t.join("names").join(OsStr::from_bytes(name)), &content);
        }
        let deep = format!("{}/{}/deep.txt", "d".repeat(120), "e".repeat(120));
        put(&t.join(deep), b"deep\n");
        put(&t.join("empty"), b"");
        let big: Vec<u8> = (0..70000).map(|i| ((i * 7 + 3) % 251) as u8).collect();
        put(&t.join("big"), &big);
        put(&store.disk_path(SINGLE), b"single\n");
        symlink(format!("{TREE}/bin"), store.disk_path(LINK)).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::fixture::*;
    use super::*;

    fn entries(store: &StoreLocation, path: &str) -> Vec<Entry> {
        store
            .entries(&store_path(path))
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn siblings_sort_by_component_then_code_point() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let names: Vec<Vec<u8>> = entries(&local(dir.path()), TREE)
            .into_iter()
            .map(|e| e.name)
            .collect();
        let rel: Vec<&[u8]> = names.iter().map(|n| &n[TREE.len()..]).collect();
        let pos = |n: &[u8]| rel.iter().position(|r| *r == n).unwrap();
        assert_eq!(rel[0], b"/");
        // Component-wise, not string order: `a/b/c` before `a/b-c`.
        assert!(pos(b"/a/b/") < pos(b"/a/b/c"));
        assert!(pos(b"/a/b/c") < pos(b"/a/b-c"));
        assert!(pos(b"/a/b-c") < pos(b"/a/b.c"));
        assert!(pos(b"/.dotfile") < pos(b"/a/"));
        // Code points of surrogate-escaped names, not bytes.
        let order: Vec<usize> = [
            &b"/names/\xc3\xa9"[..],
            b"/names/\x80",
            b"/names/\xff",
            b"/names/\xee\x80\x80",
            b"/names/\xf0\x9f\x98\x80",
        ]
        .iter()
        .map(|n| pos(n))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        // A symlinked directory is listed, not followed.
        assert!(!rel.iter().any(|r| r.starts_with(b"/share/dirlink/")));
    }

    #[test]
    fn hard_links_are_full_files_with_canonical_modes() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let entries = entries(&local(dir.path()), TREE);
        for name in ["data", "hard", "hard2"] {
            let full = format!("{TREE}/share/{name}");
            let e = entries.iter().find(|e| e.name == full.as_bytes()).unwrap();
            assert_eq!(
                (&e.kind, e.mode()),
                (
                    &EntryKind::Regular {
                        size: 5,
                        executable: false
                    },
                    0o444
                )
            );
        }
        let exe = format!("{TREE}/bin/exe");
        let e = entries.iter().find(|e| e.name == exe.as_bytes()).unwrap();
        assert_eq!(e.mode(), 0o555, "0750 on disk is executable");
    }

    #[test]
    fn single_file_and_symlink_store_paths_are_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let store = local(dir.path());
        let single = entries(&store, SINGLE);
        assert_eq!(
            single,
            [Entry::regular(SINGLE.as_bytes().to_vec(), 7, false)]
        );
        let link = entries(&store, LINK);
        assert_eq!(
            link,
            [Entry::symlink(
                LINK.as_bytes().to_vec(),
                format!("{TREE}/bin").into_bytes()
            )],
            "a symlink to a directory is not followed"
        );
        assert_eq!(link[0].mode(), 0o777);
    }

    #[test]
    fn lookups_reads_and_locations() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let store = local(dir.path());
        let bin = format!("{TREE}/bin");
        assert_eq!(
            store.entry(bin.as_bytes()).unwrap(),
            Some(Entry::directory(format!("{bin}/").into_bytes()))
        );
        assert_eq!(
            store.entry(format!("{TREE}/absent").as_bytes()).unwrap(),
            None
        );
        // Below a store path that is a single file: absent, not an error
        // (the architecture guard asks every root for its `bin/`).
        assert_eq!(
            store.entry(format!("{SINGLE}/bin").as_bytes()).unwrap(),
            None
        );
        assert_eq!(store.read_dir(bin.as_bytes()).unwrap(), [b"exe".to_vec()]);
        let mut bytes = Vec::new();
        store
            .open(format!("{bin}/exe").as_bytes())
            .unwrap()
            .read_to_end(&mut bytes)
            .unwrap();
        assert_eq!(bytes, b"#!/bin/sh\necho hi\n");
        assert_eq!(
            store.location(format!("{bin}/").as_bytes()),
            dir.path().join(&bin[1..])
        );
        assert_eq!(store.location(bin.as_bytes()), store.disk_path(&bin));
    }

    /// A stamp stays while nothing changes (also for the same store named
    /// another way), and changes when a file of the store path is edited in
    /// place, even keeping its size and modification time, and when the
    /// store moves: the layer cache's entries rest on that.
    #[test]
    fn stamps_change_with_an_edit_in_place_and_a_move() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("a");
        build_tree(&root);
        let store = local(&root);
        let tree = store_path(TREE);
        let first = store.stamp(&tree).unwrap();
        assert_eq!(store.stamp(&tree).unwrap(), first);
        assert_eq!(local(&root.join("nix/..")).stamp(&tree).unwrap(), first);
        assert_eq!(local(&root.join("nix/..")).identity(), store.identity());
        assert_ne!(store.stamp(&store_path(SINGLE)).unwrap(), first);
        // A symlink store path is stamped as a link: its target (absolute,
        // outside this root) is never followed.
        assert!(store.stamp(&store_path(LINK)).is_ok());

        let file = store.disk_path(TREE).join("a/b/c");
        edit_keeping_mtime(&file, b"C\n");
        let edited = store.stamp(&tree).unwrap();
        assert_ne!(edited, first);

        let moved = dir.path().join("b");
        fs::rename(&root, &moved).unwrap();
        let moved_store = local(&moved);
        assert_ne!(moved_store.stamp(&tree).unwrap(), edited);
        assert_ne!(moved_store.identity(), store.identity());
        // Where the store was, nothing is left to stamp: an error, no panic.
        assert!(matches!(store.stamp(&tree), Err(Error::Io { .. })));
    }

    /// The stamp as it was computed before the walk kept directory handles
    /// (std's `symlink_metadata` and `read_dir` by full path): the walk's
    /// stamps are the same bytes, so layer-cache entries filed by earlier
    /// builds are still found.
    fn reference_stamp(store: &StoreLocation, path: &str) -> Vec<u8> {
        fn fingerprint(disk: &Path, hash: &mut Sha256) {
            let meta = fs::symlink_metadata(disk).unwrap();
            for field in [
                meta.mode().into(),
                meta.len(),
                meta.ino(),
                meta.dev(),
                meta.mtime().cast_unsigned(),
                meta.mtime_nsec().cast_unsigned(),
                meta.ctime().cast_unsigned(),
                meta.ctime_nsec().cast_unsigned(),
            ] {
                hash.update(field.to_le_bytes());
            }
            if meta.is_dir() {
                for name in read_sorted(disk).unwrap() {
                    hash.update(name.as_bytes());
                    hash.update(b"\0");
                    fingerprint(&disk.join(&name), hash);
                }
                hash.update(b"\x01");
            }
        }
        let mut hash = stamp_prefix(&store.canonical_root(), &store_path(path));
        fingerprint(&store.disk_path(path), &mut hash);
        hash.finalize().to_vec()
    }

    /// Every walk stamps what it saw: a walk that only looks, one that
    /// reads each file, and `content_stamp` agree with each other and with
    /// the stamp of earlier versions, for a tree, a file and a symlink.
    #[test]
    fn walks_stamp_what_they_saw_as_before() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let store = local(dir.path());
        for path in [TREE, SINGLE, LINK] {
            let expected = reference_stamp(&store, path);
            assert_eq!(store.content_stamp(&store_path(path)).unwrap(), expected);
            let mut looked = store.entries(&store_path(path));
            assert_eq!(looked.stamp(), None, "no stamp before the walk ends");
            looked.by_ref().for_each(|e| drop(e.unwrap()));
            assert_eq!(store.walked_stamp(&looked), Some(expected.clone()));
            let mut read = store.entries_to_read(&store_path(path), true);
            while let Some(entry) = read.next() {
                let entry = entry.unwrap();
                if let EntryKind::Regular { size, .. } = entry.kind {
                    let mut bytes = Vec::new();
                    store
                        .open_entry(&mut read, &entry.name)
                        .unwrap()
                        .read_to_end(&mut bytes)
                        .unwrap();
                    assert_eq!(bytes.len() as u64, size);
                }
            }
            assert_eq!(read.stamp(), Some(expected), "{path}");
        }
    }

    /// A reading walk takes a file's metadata after its bytes were read:
    /// an edit in place while it is read (same size, mtime put back) gives
    /// another stamp, though it came after the walk looked at the file.
    #[test]
    fn a_file_edited_while_read_changes_the_walked_stamp() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let store = local(dir.path());
        let before = store.content_stamp(&store_path(TREE)).unwrap();
        let target = format!("{TREE}/a/b/c");
        let mut walk = store.entries_to_read(&store_path(TREE), true);
        while let Some(entry) = walk.next() {
            let entry = entry.unwrap();
            if entry.name == target.as_bytes() {
                let mut reader = store.open_entry(&mut walk, &entry.name).unwrap();
                let file = store.disk_path(&target);
                edit_keeping_mtime(&file, b"C\n");
                let mut bytes = Vec::new();
                reader.read_to_end(&mut bytes).unwrap();
            }
        }
        let walked = walk.stamp().unwrap();
        assert_ne!(walked, before, "the edit shows in the walk's stamp");
        assert_eq!(walked, store.content_stamp(&store_path(TREE)).unwrap());
    }

    /// The file a reading walk yields is the one it opened, never followed
    /// through a symlink: one swapped in for it (pointing out of the store)
    /// before the caller opens it is not read, nor is a swapped directory
    /// entered; each is read as the entry found when it was looked up.
    #[test]
    fn a_file_swapped_for_a_symlink_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let outside = dir.path().join("secret");
        fs::write(&outside, b"secret!\n").unwrap();
        let store = local(dir.path());
        let target = format!("{TREE}/a/b-c");
        let before = store.content_stamp(&store_path(TREE)).unwrap();
        let mut walk = store.entries_to_read(&store_path(TREE), true);
        let mut seen = None;
        while let Some(entry) = walk.next() {
            let entry = entry.unwrap();
            if entry.name == target.as_bytes() {
                let file = store.disk_path(&target);
                fs::remove_file(&file).unwrap();
                std::os::unix::fs::symlink(&outside, &file).unwrap();
                let mut bytes = Vec::new();
                store
                    .open_entry(&mut walk, &entry.name)
                    .unwrap()
                    .read_to_end(&mut bytes)
                    .unwrap();
                seen = Some(bytes);
            }
        }
        assert_eq!(seen.as_deref(), Some(&b"b-c\n"[..]));
        // The swap shows in the stamp (the file read was unlinked).
        assert_ne!(walk.stamp(), Some(before));
        // A later walk sees the symlink as a symlink, its target unread.
        let entries = entries(&store, TREE);
        let e = entries
            .iter()
            .find(|e| e.name == target.as_bytes())
            .unwrap();
        assert!(matches!(e.kind, EntryKind::Symlink { .. }), "{e:?}");
    }

    /// A store path deeper than a few hundred directories is walked, each
    /// level held open once, and stamped like any other.
    #[test]
    fn deep_directories_are_walked_with_one_handle_per_level() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let mut deep = store.disk_path(TREE);
        for _ in 0..300 {
            deep.push("d");
        }
        put(&deep.join("f"), b"deep\n");
        let names: Vec<Vec<u8>> = entries(&store, TREE).into_iter().map(|e| e.name).collect();
        assert_eq!(names.len(), 302);
        assert!(names[301].ends_with(b"/d/f"));
        assert_eq!(
            store.content_stamp(&store_path(TREE)).unwrap(),
            reference_stamp(&store, TREE)
        );
    }

    /// A path of the machine's Nix store that its database registers is
    /// stamped from that registration (no walk); under another root the
    /// same path is stamped by its metadata.
    #[test]
    fn the_live_store_is_stamped_from_its_database() {
        let db = Path::new(super::super::registered::NIX_DB);
        let registered =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()
                .and_then(|c| {
                    c.query_row("SELECT path FROM ValidPaths ORDER BY id LIMIT 1", [], |r| {
                        r.get::<_, String>(0)
                    })
                    .ok()
                });
        let Some(name) = registered.filter(|p| Path::new(p).exists()) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI has a Nix store with a database"
            );
            return;
        };
        let path = store_path(&name);
        let live = local(Path::new("/"));
        let disk = live.disk_path(&name);
        let from_db = super::super::registered::stamp(db, &disk, &name).unwrap();
        assert_eq!(live.stamp(&path).unwrap(), from_db);
        // The store seen through another spelling of `/` is the same store.
        assert_eq!(local(Path::new("/nix/..")).stamp(&path).unwrap(), from_db);
    }

    #[test]
    fn identity_names_the_root() {
        let id = |root: &str| local(Path::new(root)).identity();
        assert_eq!(id("/"), "local?root=/");
        assert_eq!(id("/tmp/a b"), "local?root=/tmp/a%20b");
        assert_ne!(id("/a"), id("/b"));
        let odd = StoreLocation {
            dir: StoreDir::default(),
            root: PathBuf::from(OsStr::from_bytes(b"/\xff")),
        };
        assert_eq!(odd.identity(), "local?root=/%FF");
    }

    #[test]
    fn odd_store_content_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        match store.entries(&store_path(SINGLE)).next() {
            Some(Err(Error::Io { path, source })) => {
                assert_eq!(path, store.disk_path(SINGLE));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        let socket = store.disk_path(TREE).join("socket");
        fs::create_dir_all(socket.parent().unwrap()).unwrap();
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let result: Result<Vec<_>, _> = store.entries(&store_path(TREE)).collect();
        match result {
            Err(Error::Unsupported { path }) => assert_eq!(path, socket),
            other => panic!("expected Unsupported, got {other:?}"),
        }
        let name = format!("{TREE}/socket");
        assert!(matches!(
            store.entry(name.as_bytes()),
            Err(Error::Unsupported { .. })
        ));
    }

    /// The components of an entry's name below the store path.
    fn components(name: &[u8]) -> Vec<&[u8]> {
        let name = name.strip_suffix(b"/").unwrap_or(name);
        name[TREE.len()..]
            .split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(24))]

        /// Whatever the names, the walk is the order of nixpkgs' sort of
        /// pathlib paths: by components, each in Python's order, and it
        /// yields every file once.
        #[test]
        fn walk_order_is_the_component_sort(
            files in proptest::collection::btree_set(
                proptest::collection::vec(
                    proptest::sample::select(vec![
                        &b"a"[..], b"b", b"-", b".", b"\xc3\xa9", b"\x80", b"\xff", b"\xee\x80\x80",
                    ]),
                    1..4,
                ),
                1..12,
            ),
            nested in proptest::collection::vec(0usize..3, 12),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let store = local(dir.path());
            let t = store.disk_path(TREE);
            fs::create_dir_all(&t).unwrap();
            let mut made = std::collections::BTreeSet::new();
            for (parts, depth) in files.iter().zip(nested) {
                // `depth` directories `d` above the file, so names repeat
                // at several levels.
                let mut path = t.clone();
                let mut logical: Vec<Vec<u8>> = Vec::new();
                for _ in 0..depth {
                    path.push("d");
                    logical.push(b"d".to_vec());
                }
                let name = parts.concat();
                if name == b"." || name == b".." || name == b"d" {
                    continue;
                }
                fs::create_dir_all(&path).unwrap();
                path.push(OsStr::from_bytes(&name));
                fs::write(&path, b"").unwrap();
                logical.push(name);
                made.insert(logical);
            }
            let names: Vec<Vec<u8>> = entries(&store, TREE).into_iter().map(|e| e.name).collect();
            for pair in names.windows(2) {
                let (a, b) = (components(&pair[0]), components(&pair[1]));
                let order = a
                    .iter()
                    .zip(&b)
                    .map(|(x, y)| python_order(x, y))
                    .find(|o| o.is_ne())
                    .unwrap_or(a.len().cmp(&b.len()));
                proptest::prop_assert_eq!(order, std::cmp::Ordering::Less);
            }
            let files: std::collections::BTreeSet<Vec<Vec<u8>>> = names
                .iter()
                .filter(|n| !n.ends_with(b"/"))
                .map(|n| components(n).into_iter().map(<[u8]>::to_vec).collect())
                .collect();
            proptest::prop_assert_eq!(files, made);
        }
    }

    /// Memory is bounded by design: the walk keeps only the unvisited
    /// siblings of each directory on the current path. Here, 2 directories
    /// of 300 files each: while inside the second, the first's listing is
    /// gone, and never more than one listing per level is held.
    #[test]
    fn walk_holds_only_the_listings_on_the_current_path() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let t = store.disk_path(TREE);
        for sub in ["x", "y"] {
            for i in 0..300 {
                put(&t.join(sub).join(format!("{i:03}")), b"");
            }
        }
        let mut walk = store.entries(&store_path(TREE));
        let mut peak = 0;
        while let Some(entry) = walk.next() {
            let entry = entry.unwrap();
            let (levels, held) = walk.held();
            assert!(levels <= 2, "one level per directory depth");
            if entry.name.starts_with(format!("{TREE}/y/").as_bytes()) {
                assert!(held <= 300, "x's listing was dropped");
            }
            peak = peak.max(held);
        }
        assert!(peak <= 301, "peak {peak}");
    }
}
