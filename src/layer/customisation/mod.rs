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
//! Only the merge (`merge`) reads the store, through a
//! [`Store`](crate::store::Store); the tree and its writer here hold no
//! store, only its directory. `files` with a `source` are the user's files
//! and are read from the filesystem.
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
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::{copy_file, CopyError, Error, Owner, PermissionRule, Permissions, READ_BUFFER};
use crate::nix::StoreDir;
use crate::oci::{HashCountWriter, LayerDigest};
use crate::tar::{self, Header, Kind, TarWriter};

mod merge;
mod script;

pub use script::MAX_BYTES as SCRIPT_MAX_BYTES;

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

/// What a [`CustomisationTree`] holds at a path, to tell what an entry
/// added there would replace.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Occupant {
    /// A directory: merged from `contents`, or the parent of another entry.
    Directory,
    /// The link `contents` made to this store file (or the store link it
    /// copied).
    ContentsLink(String),
    /// Another file or symlink.
    Other,
}

/// Directories a tree read from disk never contributes: the container
/// runtime mounts its own there.
const RUNTIME_DIRS: [&[u8]; 3] = [b"proc", b"sys", b"dev"];

/// The entries of a customisation layer, sorted component-wise.
#[derive(Clone, Debug)]
pub struct CustomisationTree {
    /// The store directory, which only store layers may fill.
    store_dir: StoreDir,
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

impl CustomisationTree {
    /// An empty tree for images whose store directory is `store_dir`, owned by `store_owner`.
    #[must_use]
    pub fn new(store_dir: StoreDir, store_owner: Owner) -> Self {
        Self {
            store_dir,
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

    /// What is at `path`: `None` for nothing, `Some(true)` for a
    /// directory, `Some(false)` for a file or symlink.
    #[must_use]
    pub fn is_dir(&self, path: &str) -> Option<bool> {
        let comps = split(path).ok()?;
        self.entries
            .get(&comps)
            .map(|e| e.kind == EntryKind::Directory)
    }

    /// What is at `path`, if anything.
    #[must_use]
    pub fn occupant(&self, path: &str) -> Option<Occupant> {
        let comps = split(path).ok()?;
        let e = self.entries.get(&comps)?;
        Some(match (&e.kind, &e.origin) {
            (EntryKind::Directory, _) => Occupant::Directory,
            (_, Some(origin)) => Occupant::ContentsLink(origin.clone()),
            (_, None) => Occupant::Other,
        })
    }

    /// The mode of the directory at `path`, if the tree has one there.
    #[must_use]
    pub fn dir_mode(&self, path: &str) -> Option<u32> {
        let comps = split(path).ok()?;
        self.entries
            .get(&comps)
            .filter(|e| e.kind == EntryKind::Directory)
            .map(|e| e.mode)
    }

    /// A rule of `permissions` that matches no entry of this tree although
    /// only this tree can hold what it matches: its leading components
    /// without glob characters part ways with the store directory's (and
    /// base-image layers are never rewritten), as in `/etc/pasword`,
    /// `/home/usr/**` or `/nix/var/nix/**`. A rule that could match inside
    /// the store directory (`/**`, `/nix/store/*-app/**`) is not judged:
    /// store layers come from the layer cache without being read again.
    #[must_use]
    pub fn unmatched_rule<'p>(&self, permissions: &'p Permissions) -> Option<&'p PermissionRule> {
        let store = self.store_comps();
        permissions.rules().iter().find(|rule| {
            let fixed: Vec<&[u8]> = rule
                .pattern
                .split('/')
                .filter(|c| !c.is_empty())
                .map(str::as_bytes)
                .take_while(|c| !c.iter().any(|b| matches!(b, b'*' | b'?')))
                .collect();
            let parts_ways = fixed.iter().zip(&store).any(|(a, b)| *a != b.as_slice());
            // `/` itself is an entry of no layer written here (store
            // layers start at `/nix/`, this tree at its children).
            (parts_ways || rule.pattern == "/")
                && !self.entries.keys().any(|comps| {
                    let mut path = Vec::new();
                    for c in comps {
                        path.push(b'/');
                        path.extend_from_slice(c);
                    }
                    rule.matches(&path)
                })
        })
    }

    fn store_comps(&self) -> Vec<Vec<u8>> {
        split(self.store_dir.as_str()).unwrap_or_default()
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
            // A `source` file is the user's, not store content: read from
            // the filesystem, here and in `write`, never through a store.
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
                    // The user's file (`source`), not store content.
                    let reader = File::open(file).map_err(|source| Error::Io {
                        path: file.clone(),
                        source,
                    })?;
                    copy_file(reader, || file.clone(), header.size, &mut tar, &mut buf).map_err(
                        |e| match e {
                            CopyError::Read(error) => error,
                            CopyError::Write(source) => write_err(source),
                        },
                    )?;
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

/// What the customisation tree holds at one path, for readers that look
/// inside the image (the architecture guard).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeNode<'a> {
    /// A directory.
    Directory,
    /// A regular file and its bytes.
    File(&'a FileData),
    /// A symlink to this target, raw.
    Symlink(&'a [u8]),
}

impl CustomisationTree {
    /// The entry at the absolute path `comps` (one component each), not
    /// following a symlink there; `None` when the tree has nothing there.
    #[must_use]
    pub fn lookup(&self, comps: &[Vec<u8>]) -> Option<TreeNode<'_>> {
        self.entries.get(comps).map(|e| match &e.kind {
            EntryKind::Directory => TreeNode::Directory,
            EntryKind::File { data, .. } => TreeNode::File(data),
            EntryKind::Symlink(target) => TreeNode::Symlink(target),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_entries_parents_and_the_store() {
        let owner = Owner {
            uid: 1000,
            gid: 1000,
            uname: "u".into(),
            gname: "u".into(),
        };
        let mut tree = CustomisationTree::new(StoreDir::default(), owner.clone());
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
