//! The customisation layer: everything of the image that is not a whole
//! store path (SPEC §4, reference §B.3).
//!
//! A [`CustomisationTree`] is an in-memory, component-wise sorted list of
//! entries, built in the order SPEC §4 gives: `contents` merged into `/`
//! with symlinkJoin semantics ([`CustomisationTree::merge_contents`]: real
//! directories, links to files, symlinks copied with their target as
//! `lndir` does), then
//! `files`, `dirs` and `symlinks`, then whatever later stages add (the Nix
//! database). The tree is small (links and a few files), so holding it is
//! cheap; file bytes from disk are read only while writing.
//!
//! Differences from nixpkgs, on purpose:
//! - names are absolute (`/etc/passwd`) like the store layers', not GNU tar's
//!   `./etc/passwd`; every parent directory has its own entry;
//! - every entry gets the build's `mtime`, not `SOURCE_DATE_EPOCH`;
//! - a collision of two different files is an error (symlinkJoin's `lndir`
//!   silently keeps the first) unless `on_collision = "first"`;
//! - a tree read from disk never contributes `/proc`, `/sys` or `/dev`
//!   (nixpkgs' proot-based builds smuggled those in, reference §F);
//! - nothing can be written inside the store directory: store paths enter
//!   the image only as whole store layers.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{BufWriter, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::tar::{self, Header, Kind, TarWriter};
use super::{
    copy_file, CopyError, Error, HashCountWriter, LayerDigest, Owner, Permissions, READ_BUFFER,
};
use crate::closure::StoreLocation;
use crate::nix::StorePath;

/// Headers and small files are coalesced before they reach the output.
const WRITE_BUFFER: usize = 64 * 1024;

/// What to do when two `contents` paths hold different files at one path.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnCollision {
    /// Fail, naming both store paths (the default).
    #[default]
    Error,
    /// Keep the first one, like symlinkJoin.
    First,
}

/// The bytes of a customisation file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FileData {
    /// Given inline (`text`, or generated, like the Nix database).
    Inline(Vec<u8>),
    /// Read from this file on disk when the layer is written (`source`).
    Disk(PathBuf),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum EntryKind {
    Directory,
    File { data: FileData, size: u64 },
    Symlink(Vec<u8>),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    kind: EntryKind,
    mode: u32,
    owner: Owner,
    /// For links made by `merge_contents`: the store file they point to,
    /// to name it in a collision.
    origin: Option<String>,
}

/// Symlink hops followed before a link is taken as a plain link; Linux's own
/// limit (`MAXSYMLINKS`).
const MAX_HOPS: usize = 40;

/// Directories a tree read from disk never contributes: the container
/// runtime mounts its own there.
const RUNTIME_DIRS: [&[u8]; 3] = [b"proc", b"sys", b"dev"];

/// The entries of a customisation layer, sorted component-wise.
#[derive(Clone, Debug)]
pub struct CustomisationTree {
    store: StoreLocation,
    /// Owner of the store directory and its ancestors, which store layers
    /// write too: an implicit `/nix/` here must not take them back from it.
    store_owner: Owner,
    entries: BTreeMap<Vec<Vec<u8>>, Entry>,
}

/// Splits an absolute path into components, rejecting `..` and relative paths.
fn split(path: &str) -> Result<Vec<Vec<u8>>, Error> {
    let invalid = |reason: &'static str| Error::InvalidPath {
        path: path.to_owned(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(invalid("it is not absolute"));
    }
    let mut comps = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(invalid("`..` could escape `/`")),
            c => comps.push(c.as_bytes().to_vec()),
        }
    }
    Ok(comps)
}

fn join(comps: &[Vec<u8>]) -> String {
    let mut s = String::new();
    for c in comps {
        s.push('/');
        s.push_str(&String::from_utf8_lossy(c));
    }
    if s.is_empty() {
        s.push('/');
    }
    s
}

/// Lexically normalises an absolute path; `None` when `..` leaves `/`.
fn normalise(path: &[u8]) -> Option<Vec<u8>> {
    let mut out: Vec<&[u8]> = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    let mut s = Vec::new();
    for c in out {
        s.push(b'/');
        s.extend_from_slice(c);
    }
    Some(s)
}

impl CustomisationTree {
    /// An empty tree for images whose store is `store`, owned by `store_owner`.
    #[must_use]
    pub fn new(store: StoreLocation, store_owner: Owner) -> Self {
        Self {
            store,
            store_owner,
            entries: BTreeMap::new(),
        }
    }

    /// Whether the tree has no entry (then the image needs no customisation layer).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The absolute names of the entries, in layer order (directories end in `/`).
    #[must_use]
    pub fn names(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(k, e)| {
                let mut name = join(k);
                if e.kind == EntryKind::Directory {
                    name.push('/');
                }
                name
            })
            .collect()
    }

    fn store_comps(&self) -> Vec<Vec<u8>> {
        split(self.store.dir.as_str()).unwrap_or_default()
    }

    /// Rejects explicit entries at or inside the store directory.
    fn check_outside_store(&self, path: &str, comps: &[Vec<u8>]) -> Result<(), Error> {
        if comps.starts_with(&self.store_comps()) {
            return Err(Error::InvalidPath {
                path: path.to_owned(),
                reason: "it is inside the store directory, which only store layers fill",
            });
        }
        Ok(())
    }

    /// Creates the missing parents of `comps` as directories (0755): the
    /// store directory's ancestors owned like the store layers write them,
    /// others by root. A parent that is not a directory is an error.
    fn ensure_parents(&mut self, path: &str, comps: &[Vec<u8>]) -> Result<(), Error> {
        let store = self.store_comps();
        for depth in 1..comps.len() {
            let parent = &comps[..depth];
            match self.entries.get(parent) {
                Some(e) if e.kind == EntryKind::Directory => {}
                Some(_) => {
                    return Err(Error::InvalidPath {
                        path: path.to_owned(),
                        reason: "a parent of it is not a directory",
                    })
                }
                None => {
                    let owner = if store.starts_with(parent) {
                        self.store_owner.clone()
                    } else {
                        Owner::default()
                    };
                    self.entries.insert(
                        parent.to_vec(),
                        Entry {
                            kind: EntryKind::Directory,
                            mode: 0o755,
                            owner,
                            origin: None,
                        },
                    );
                }
            }
        }
        Ok(())
    }

    /// Merges each store path of `contents` (a directory) into `/`, as
    /// nixpkgs' symlinkJoin does: directories become real directories, files
    /// become symlinks to their place in the store, symlinks are copied with
    /// their own target (`lndir`), and a symlink resolving to a directory
    /// inside the store is merged as that directory. Top-level `proc`, `sys`
    /// and `dev` are skipped.
    ///
    /// # Errors
    /// When a store path cannot be read or is not a directory, or two
    /// different files meet at one path under [`OnCollision::Error`].
    pub fn merge_contents(
        &mut self,
        contents: &[StorePath],
        on_collision: OnCollision,
    ) -> Result<(), Error> {
        for path in contents {
            let dir = self
                .resolve_store_dir(path.as_str().as_bytes())?
                .ok_or_else(|| Error::NotADirectory {
                    path: path.as_str().to_owned(),
                })?;
            self.merge_dir(&[], &dir, on_collision, &mut vec![dir.clone()])?;
        }
        Ok(())
    }

    /// Where the logical path `logical` is on this machine.
    fn disk(&self, logical: &[u8]) -> PathBuf {
        let relative = logical.strip_prefix(b"/").unwrap_or(logical);
        self.store.root.join(OsStr::from_bytes(relative))
    }

    /// Follows `logical` (an absolute path inside the store) through
    /// symlinks; the directory it ends at when that is inside the store.
    fn resolve_store_dir(&self, logical: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let store = self.store.dir.as_str().as_bytes();
        let mut current = logical.to_vec();
        for _ in 0..MAX_HOPS {
            let Some(norm) = normalise(&current) else {
                return Ok(None);
            };
            if !(norm.starts_with(store) && norm.get(store.len()) == Some(&b'/')) {
                return Ok(None);
            }
            let disk = self.disk(&norm);
            let meta = match fs::symlink_metadata(&disk) {
                Ok(meta) => meta,
                // A dangling link is linked as it is.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(source) => return Err(Error::Io { path: disk, source }),
            };
            if meta.is_dir() {
                return Ok(Some(norm));
            }
            if !meta.file_type().is_symlink() {
                return Ok(None);
            }
            let target = fs::read_link(&disk).map_err(|source| Error::Io {
                path: disk.clone(),
                source,
            })?;
            let target = target.as_os_str().as_bytes();
            current = if target.starts_with(b"/") {
                target.to_vec()
            } else {
                let parent = norm
                    .iter()
                    .rposition(|&b| b == b'/')
                    .map_or(&norm[..], |i| &norm[..i]);
                [parent, b"/", target].concat()
            };
        }
        Ok(None)
    }

    /// Merges directory `source` at `dest`; `stack` holds the source
    /// directories being merged, outermost first, so that a symlink back
    /// to one of them is kept as a link instead of merged without end.
    fn merge_dir(
        &mut self,
        dest: &[Vec<u8>],
        source: &[u8],
        on_collision: OnCollision,
        stack: &mut Vec<Vec<u8>>,
    ) -> Result<(), Error> {
        let disk = self.disk(source);
        let io = |source| Error::Io {
            path: disk.clone(),
            source,
        };
        let mut names: Vec<Vec<u8>> = fs::read_dir(&disk)
            .map_err(io)?
            .map(|e| e.map(|e| e.file_name().as_bytes().to_vec()))
            .collect::<Result<_, _>>()
            .map_err(io)?;
        names.sort();
        for name in names {
            if dest.is_empty() && RUNTIME_DIRS.contains(&name.as_slice()) {
                continue;
            }
            let child = [source, b"/", &name].concat();
            let mut to: Vec<Vec<u8>> = dest.to_vec();
            to.push(name);
            let child_disk = self.disk(&child);
            let meta = fs::symlink_metadata(&child_disk).map_err(|source| Error::Io {
                path: child_disk.clone(),
                source,
            })?;
            let dir = if meta.is_dir() {
                Some(child.clone())
            } else if meta.file_type().is_symlink() {
                let inside = |dir: &[u8], of: &[u8]| {
                    of == dir || (of.starts_with(dir) && of.get(dir.len()) == Some(&b'/'))
                };
                self.resolve_store_dir(&child)?
                    .filter(|dir| !stack.iter().any(|open| inside(dir, open)))
            } else {
                None
            };
            match dir {
                Some(dir) => {
                    if self.merge_into_dir(&to, &child, on_collision)? {
                        stack.push(dir.clone());
                        let merged = self.merge_dir(&to, &dir, on_collision, stack);
                        stack.pop();
                        merged?;
                    }
                }
                None => {
                    // lndir's rule: a symlink is copied with its own target,
                    // so a relative link resolves in the merged root (Debian's
                    // `python3 -> python3.11` across packages); a file is
                    // linked to its place in the store.
                    let target = if meta.file_type().is_symlink() {
                        fs::read_link(&child_disk)
                            .map_err(|source| Error::Io {
                                path: child_disk.clone(),
                                source,
                            })?
                            .into_os_string()
                            .into_vec()
                    } else {
                        child.clone()
                    };
                    self.link(&to, &child, target, on_collision)?;
                }
            }
        }
        Ok(())
    }

    /// Makes `to` a directory for merging; `false` when it is kept as
    /// something else (`on_collision = "first"`).
    fn merge_into_dir(
        &mut self,
        to: &[Vec<u8>],
        source: &[u8],
        on_collision: OnCollision,
    ) -> Result<bool, Error> {
        match self.entries.get(to) {
            None => {
                self.entries.insert(
                    to.to_vec(),
                    Entry {
                        kind: EntryKind::Directory,
                        mode: 0o755,
                        owner: Owner::default(),
                        origin: None,
                    },
                );
                Ok(true)
            }
            Some(e) if e.kind == EntryKind::Directory => Ok(true),
            Some(e) => match on_collision {
                OnCollision::First => Ok(false),
                OnCollision::Error => Err(Error::Collision {
                    path: join(to),
                    first: e.origin.clone().unwrap_or_default(),
                    second: String::from_utf8_lossy(source).into_owned(),
                }),
            },
        }
    }

    fn link(
        &mut self,
        to: &[Vec<u8>],
        source: &[u8],
        target: Vec<u8>,
        on_collision: OnCollision,
    ) -> Result<(), Error> {
        let source_text = String::from_utf8_lossy(source).into_owned();
        if let Some(existing) = self.entries.get(to) {
            let same = match (&existing.kind, &existing.origin) {
                (EntryKind::Symlink(_), Some(first)) => self.same_file(first.as_bytes(), source)?,
                _ => false,
            };
            if same || on_collision == OnCollision::First {
                return Ok(());
            }
            return Err(Error::Collision {
                path: join(to),
                first: existing
                    .origin
                    .clone()
                    .unwrap_or_else(|| "a directory".to_owned()),
                second: source_text,
            });
        }
        self.entries.insert(
            to.to_vec(),
            Entry {
                kind: EntryKind::Symlink(target),
                mode: 0o777,
                owner: Owner::default(),
                origin: Some(source_text),
            },
        );
        Ok(())
    }

    /// Whether two store files are interchangeable: one file, links with
    /// one target, or files with the same bytes (as buildEnv tolerates).
    fn same_file(&self, a: &[u8], b: &[u8]) -> Result<bool, Error> {
        if a == b {
            return Ok(true);
        }
        let (da, db) = (self.disk(a), self.disk(b));
        let meta = |p: &PathBuf| {
            fs::symlink_metadata(p).map_err(|source| Error::Io {
                path: p.clone(),
                source,
            })
        };
        let (ma, mb) = (meta(&da)?, meta(&db)?);
        if ma.file_type().is_symlink() && mb.file_type().is_symlink() {
            return Ok(fs::read_link(&da).ok() == fs::read_link(&db).ok());
        }
        if ma.is_file() && mb.is_file() && ma.len() == mb.len() && ma.mode() == mb.mode() {
            let read = |p: &PathBuf| {
                fs::read(p).map_err(|source| Error::Io {
                    path: p.clone(),
                    source,
                })
            };
            return Ok(read(&da)? == read(&db)?);
        }
        Ok(false)
    }

    fn put(&mut self, path: &str, kind: EntryKind, mode: u32, owner: &Owner) -> Result<(), Error> {
        let comps = split(path)?;
        if comps.is_empty() {
            return Err(Error::InvalidPath {
                path: path.to_owned(),
                reason: "it is `/` itself",
            });
        }
        self.check_outside_store(path, &comps)?;
        self.ensure_parents(path, &comps)?;
        if kind != EntryKind::Directory {
            // A file or link replacing a directory drops what was below it.
            let below: Vec<Vec<Vec<u8>>> = self
                .entries
                .range(comps.clone()..)
                .take_while(|(k, _)| k.starts_with(&comps))
                .map(|(k, _)| k.clone())
                .collect();
            for k in below {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(
            comps,
            Entry {
                kind,
                mode,
                owner: owner.clone(),
                origin: None,
            },
        );
        Ok(())
    }

    /// Adds the file `path` with `data` and `mode`, replacing what is there.
    ///
    /// # Errors
    /// When `path` is not absolute, has `..`, is inside the store or under a
    /// non-directory, or a [`FileData::Disk`] file cannot be read.
    pub fn add_file(
        &mut self,
        path: &str,
        data: FileData,
        mode: u32,
        owner: &Owner,
    ) -> Result<(), Error> {
        let size = match &data {
            FileData::Inline(bytes) => bytes.len() as u64,
            FileData::Disk(file) => {
                let meta = fs::metadata(file).map_err(|source| Error::Io {
                    path: file.clone(),
                    source,
                })?;
                if !meta.is_file() {
                    return Err(Error::Unsupported { path: file.clone() });
                }
                meta.len()
            }
        };
        self.put(path, EntryKind::File { data, size }, mode, owner)
    }

    /// Adds the directory `path` with `mode`; an existing directory keeps
    /// its entries and takes the mode.
    ///
    /// # Errors
    /// As [`CustomisationTree::add_file`].
    pub fn add_dir(&mut self, path: &str, mode: u32, owner: &Owner) -> Result<(), Error> {
        self.put(path, EntryKind::Directory, mode, owner)
    }

    /// Adds the symlink `path` → `target`.
    ///
    /// # Errors
    /// As [`CustomisationTree::add_file`].
    pub fn add_symlink(&mut self, path: &str, target: &str, owner: &Owner) -> Result<(), Error> {
        self.put(
            path,
            EntryKind::Symlink(target.as_bytes().to_vec()),
            0o777,
            owner,
        )
    }

    /// The headers of the layer, in order, with the data of regular files.
    fn headers<'a>(
        &'a self,
        mtime: u64,
        permissions: &'a Permissions,
    ) -> impl Iterator<Item = (Header, Option<&'a FileData>)> + 'a {
        self.entries.iter().map(move |(comps, e)| {
            // Raw bytes: names from directory listings need not be UTF-8
            // (`join` is lossy, for messages only).
            let mut name = Vec::new();
            for c in comps {
                name.push(b'/');
                name.extend_from_slice(c);
            }
            let (kind, size, data) = match &e.kind {
                EntryKind::Directory => {
                    name.push(b'/');
                    (Kind::Directory, 0, None)
                }
                EntryKind::File { data, size } => (Kind::Regular, *size, Some(data)),
                EntryKind::Symlink(target) => (Kind::Symlink(target.clone()), 0, None),
            };
            let mut header = Header {
                name,
                kind,
                mode: e.mode,
                uid: e.owner.uid,
                gid: e.owner.gid,
                uname: e.owner.uname.clone(),
                gname: e.owner.gname.clone(),
                mtime,
                size,
            };
            permissions.apply(&mut header);
            (header, data)
        })
    }

    /// The exact size of the layer's tar.
    #[must_use]
    pub fn measure(&self, mtime: u64, permissions: &Permissions) -> u64 {
        tar::archive_len(
            self.headers(mtime, permissions)
                .map(|(h, _)| tar::entry_len(&h))
                .sum(),
        )
    }

    /// Writes the layer's tar to `out`, every entry with `mtime` and the
    /// permission rules applied.
    ///
    /// # Errors
    /// When a source file cannot be read or changed size, or `out` fails.
    pub fn write<W: Write>(
        &self,
        mtime: u64,
        permissions: &Permissions,
        out: W,
    ) -> Result<LayerDigest, Error> {
        let write_err = |source| Error::Write {
            first: None,
            source,
        };
        let sink = HashCountWriter::new(BufWriter::with_capacity(WRITE_BUFFER, out));
        let mut tar = TarWriter::new(sink);
        let mut buf = Vec::new();
        for (header, data) in self.headers(mtime, permissions) {
            match data {
                Some(FileData::Disk(file)) => {
                    if buf.is_empty() {
                        buf = vec![0; READ_BUFFER];
                    }
                    tar.start_entry(&header).map_err(write_err)?;
                    copy_file(file, header.size, &mut tar, &mut buf).map_err(|e| match e {
                        CopyError::Read(error) => error,
                        CopyError::Write(source) => write_err(source),
                    })?;
                    tar.end_entry().map_err(write_err)?;
                }
                Some(FileData::Inline(bytes)) => tar.append(&header, bytes).map_err(write_err)?,
                None => tar.append(&header, &[]).map_err(write_err)?,
            }
        }
        let sink = tar.finish().map_err(write_err)?;
        let (buffered, diff_id, size) = sink.finish().map_err(write_err)?;
        buffered
            .into_inner()
            .map_err(|e| write_err(e.into_error()))?;
        Ok(LayerDigest { diff_id, size })
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::*;
    use crate::nix::StoreDir;

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

    fn store(root: &Path) -> StoreLocation {
        StoreLocation {
            dir: StoreDir::default(),
            root: root.to_owned(),
        }
    }

    fn put(root: &Path, path: &str, content: &str) {
        let file = root.join(path.trim_start_matches('/'));
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, content).unwrap();
    }

    fn sp(path: &str) -> StorePath {
        StorePath::parse(&StoreDir::default(), path).unwrap()
    }

    /// ```text
    /// A/ bin/hello  lib -> share/lib  share/lib/x.so  dev/null  proc/x  etc/motd  rel -> bin/hello
    /// B/ bin/other  etc/motd (different)  share/lib/y.so
    /// ```
    fn fixture(root: &Path) {
        put(root, &format!("{A}/bin/hello"), "hello");
        put(root, &format!("{A}/share/lib/x.so"), "x");
        put(root, &format!("{A}/dev/null"), "");
        put(root, &format!("{A}/proc/x"), "");
        put(root, &format!("{A}/etc/motd"), "a");
        symlink("share/lib", root.join(&A[1..]).join("lib")).unwrap();
        symlink("bin/hello", root.join(&A[1..]).join("rel")).unwrap();
        put(root, &format!("{B}/bin/other"), "other");
        put(root, &format!("{B}/etc/motd"), "b");
        put(root, &format!("{B}/share/lib/y.so"), "y");
    }

    #[test]
    fn contents_merge_like_symlink_join() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let mut tree = CustomisationTree::new(store(dir.path()), Owner::default());
        tree.merge_contents(&[sp(A), sp(B)], OnCollision::First)
            .unwrap();
        let names = tree.names();
        assert_eq!(
            names,
            [
                "/bin/",
                "/bin/hello",
                "/bin/other",
                "/etc/",
                "/etc/motd",
                "/lib/",
                "/lib/x.so",
                "/rel",
                "/share/",
                "/share/lib/",
                "/share/lib/x.so",
                "/share/lib/y.so",
            ]
        );
        let link = |path: &str| match &tree.entries[&split(path).unwrap()].kind {
            EntryKind::Symlink(t) => String::from_utf8(t.clone()).unwrap(),
            other => panic!("{path} is {other:?}"),
        };
        assert_eq!(link("/bin/hello"), format!("{A}/bin/hello"));
        assert_eq!(link("/lib/x.so"), format!("{A}/share/lib/x.so"));
        assert_eq!(link("/etc/motd"), format!("{A}/etc/motd"), "first wins");
        assert_eq!(link("/rel"), "bin/hello", "symlinks keep their target");
    }

    #[test]
    fn a_symlink_back_to_a_merged_directory_stays_a_link() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), &format!("{A}/share/x"), "x");
        symlink("..", dir.path().join(&A[1..]).join("share/up")).unwrap();
        symlink(A, dir.path().join(&A[1..]).join("share/self")).unwrap();
        let mut tree = CustomisationTree::new(store(dir.path()), Owner::default());
        tree.merge_contents(&[sp(A)], OnCollision::Error).unwrap();
        assert_eq!(
            tree.names(),
            ["/share/", "/share/self", "/share/up", "/share/x"]
        );
    }

    #[test]
    fn collisions_name_both_files_and_equal_files_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let mut tree = CustomisationTree::new(store(dir.path()), Owner::default());
        match tree.merge_contents(&[sp(A), sp(B)], OnCollision::Error) {
            Err(Error::Collision {
                path,
                first,
                second,
            }) => {
                assert_eq!(path, "/etc/motd");
                assert_eq!(first, format!("{A}/etc/motd"));
                assert_eq!(second, format!("{B}/etc/motd"));
            }
            other => panic!("expected a collision, got {other:?}"),
        }
        put(dir.path(), &format!("{B}/etc/motd"), "a");
        let mut tree = CustomisationTree::new(store(dir.path()), Owner::default());
        tree.merge_contents(&[sp(A), sp(B)], OnCollision::Error)
            .unwrap();
    }

    #[test]
    fn explicit_entries_parents_and_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let owner = Owner {
            uid: 1000,
            gid: 1000,
            uname: "u".into(),
            gname: "u".into(),
        };
        let mut tree = CustomisationTree::new(store(dir.path()), owner.clone());
        tree.add_file(
            "/nix/var/nix/db/schema",
            FileData::Inline(b"10".to_vec()),
            0o644,
            &owner,
        )
        .unwrap();
        tree.add_dir("/tmp", 0o1777, &Owner::default()).unwrap();
        assert_eq!(
            tree.entries[&split("/nix").unwrap()].owner.uid,
            1000,
            "the store's ancestors keep the store layers' owner"
        );
        assert_eq!(tree.entries[&split("/nix/var").unwrap()].owner.uid, 0);
        assert!(matches!(
            tree.add_file("/nix/store/x", FileData::Inline(Vec::new()), 0o644, &owner),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            tree.add_dir("/../x", 0o755, &owner),
            Err(Error::InvalidPath { .. })
        ));
        assert!(matches!(
            tree.add_dir("/tmp/x/y", 0o755, &owner)
                .and(tree.add_symlink("/tmp/x", "/", &owner))
                .and(tree.add_file("/tmp/x/z", FileData::Inline(Vec::new()), 0o644, &owner)),
            Err(Error::InvalidPath { .. })
        ));

        let perms = Permissions::default();
        let size = tree.measure(7, &perms);
        let mut bytes = Vec::new();
        let digest = tree.write(7, &perms, &mut bytes).unwrap();
        assert_eq!((digest.size, bytes.len() as u64), (size, size));
        assert_eq!(&bytes[..5], b"/nix/");
    }
}
