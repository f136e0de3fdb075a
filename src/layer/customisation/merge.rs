//! `customisation.contents`: store paths merged into `/` with symlinkJoin
//! semantics. The only part of the customisation layer that reads the
//! store, and it does so through a [`Store`]: lookups, listings and, to
//! tell two colliding files apart, their bytes.

use std::io::{self, Read};

use super::{join, CustomisationTree, Entry, EntryKind, OnCollision, RUNTIME_DIRS};
use crate::layer::{Error, Owner};
use crate::nix::StorePath;
use crate::store::{self, Store};

/// Symlink hops followed before a link is taken as a plain link; Linux's own
/// limit (`MAXSYMLINKS`).
const MAX_HOPS: usize = 40;

/// Bytes compared at a time when two store files might be equal.
const COMPARE_CHUNK: usize = 64 * 1024;

impl CustomisationTree {
    /// Merges each store path of `contents` (a directory in `store`) into
    /// `/`, as nixpkgs' symlinkJoin does: directories become real
    /// directories, files become symlinks to their place in the store,
    /// symlinks are copied with their own target (`lndir`), and a symlink
    /// resolving to a directory inside the store is merged as that
    /// directory. Top-level `proc`, `sys` and `dev` are skipped.
    ///
    /// # Errors
    /// When a store path cannot be read or is not a directory, or two
    /// different files meet at one path under [`OnCollision::Error`].
    pub fn merge_contents<S: Store>(
        &mut self,
        store: &S,
        contents: &[StorePath],
        on_collision: OnCollision,
    ) -> Result<(), Error> {
        for path in contents {
            let dir = self
                .resolve_store_dir(store, path.as_str().as_bytes())?
                .ok_or_else(|| Error::NotADirectory {
                    path: path.as_str().to_owned(),
                })?;
            self.merge_dir(store, &[], &dir, on_collision, &mut vec![dir.clone()])?;
        }
        Ok(())
    }

    /// Follows `logical` (an absolute path inside the store) through
    /// symlinks; the directory it ends at when that is inside the store.
    fn resolve_store_dir<S: Store>(
        &self,
        store: &S,
        logical: &[u8],
    ) -> Result<Option<Vec<u8>>, Error> {
        let store_dir = self.store_dir.as_str().as_bytes();
        let mut current = logical.to_vec();
        for _ in 0..MAX_HOPS {
            let Some(norm) = normalise(&current) else {
                return Ok(None);
            };
            if !(norm.starts_with(store_dir) && norm.get(store_dir.len()) == Some(&b'/')) {
                return Ok(None);
            }
            // Nothing there: a dangling link is linked as it is.
            let Some(entry) = store.entry(&norm)? else {
                return Ok(None);
            };
            let target = match entry.kind {
                store::EntryKind::Directory => return Ok(Some(norm)),
                store::EntryKind::Regular { .. } => return Ok(None),
                store::EntryKind::Symlink { target } => target,
            };
            current = if target.starts_with(b"/") {
                target
            } else {
                let parent = norm
                    .iter()
                    .rposition(|&b| b == b'/')
                    .map_or(&norm[..], |i| &norm[..i]);
                [parent, b"/", &target].concat()
            };
        }
        Ok(None)
    }

    /// Merges directory `source` at `dest`; `stack` holds the source
    /// directories being merged, outermost first, so that a symlink back
    /// to one of them is kept as a link instead of merged without end.
    fn merge_dir<S: Store>(
        &mut self,
        store: &S,
        dest: &[Vec<u8>],
        source: &[u8],
        on_collision: OnCollision,
        stack: &mut Vec<Vec<u8>>,
    ) -> Result<(), Error> {
        let mut names = store.read_dir(source)?;
        // Byte order, as before the store seam; the tree sorts itself, this
        // only decides which of two collisions is reported.
        names.sort();
        for name in names {
            if dest.is_empty() && RUNTIME_DIRS.contains(&name.as_slice()) {
                continue;
            }
            let child = [source, b"/", &name].concat();
            let mut to: Vec<Vec<u8>> = dest.to_vec();
            to.push(name);
            let entry = existing(store, &child)?;
            let dir = match &entry.kind {
                store::EntryKind::Directory => Some(child.clone()),
                store::EntryKind::Symlink { .. } => {
                    let inside = |dir: &[u8], of: &[u8]| {
                        of == dir || (of.starts_with(dir) && of.get(dir.len()) == Some(&b'/'))
                    };
                    self.resolve_store_dir(store, &child)?
                        .filter(|dir| !stack.iter().any(|open| inside(dir, open)))
                }
                store::EntryKind::Regular { .. } => None,
            };
            match dir {
                Some(dir) => {
                    if self.merge_into_dir(&to, &child, on_collision)? {
                        stack.push(dir.clone());
                        let merged = self.merge_dir(store, &to, &dir, on_collision, stack);
                        stack.pop();
                        merged?;
                    }
                }
                None => {
                    // lndir's rule: a symlink is copied with its own target,
                    // so a relative link resolves in the merged root (Debian's
                    // `python3 -> python3.11` across packages); a file is
                    // linked to its place in the store.
                    let target = match entry.kind {
                        store::EntryKind::Symlink { target } => target,
                        _ => child.clone(),
                    };
                    self.link(store, &to, &child, target, on_collision)?;
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

    fn link<S: Store>(
        &mut self,
        store: &S,
        to: &[Vec<u8>],
        source: &[u8],
        target: Vec<u8>,
        on_collision: OnCollision,
    ) -> Result<(), Error> {
        let source_text = String::from_utf8_lossy(source).into_owned();
        if let Some(existing) = self.entries.get(to) {
            let same = match (&existing.kind, &existing.origin) {
                (EntryKind::Symlink(_), Some(first)) => same_file(store, first.as_bytes(), source)?,
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
}

/// The entry at `name`, which a listing just named: gone is an error.
fn existing<S: Store>(store: &S, name: &[u8]) -> Result<store::Entry, Error> {
    store.entry(name)?.ok_or_else(|| Error::Io {
        path: store.location(name),
        source: io::Error::new(io::ErrorKind::NotFound, "it vanished while being merged"),
    })
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

/// Whether two store files are interchangeable: one file, links with one
/// target, or files with the same bytes and executable bit (as buildEnv
/// tolerates). The bytes are compared a chunk at a time.
fn same_file<S: Store>(store: &S, a: &[u8], b: &[u8]) -> Result<bool, Error> {
    if a == b {
        return Ok(true);
    }
    let (ea, eb) = (existing(store, a)?, existing(store, b)?);
    match (&ea.kind, &eb.kind) {
        (store::EntryKind::Symlink { target: ta }, store::EntryKind::Symlink { target: tb }) => {
            Ok(ta == tb)
        }
        (store::EntryKind::Regular { .. }, store::EntryKind::Regular { .. })
            if ea.size() == eb.size() && ea.mode() == eb.mode() =>
        {
            same_bytes(store, a, b)
        }
        _ => Ok(false),
    }
}

fn same_bytes<S: Store>(store: &S, a: &[u8], b: &[u8]) -> Result<bool, Error> {
    let (mut ra, mut rb) = (store.open(a)?, store.open(b)?);
    let (mut ba, mut bb) = (vec![0; COMPARE_CHUNK], vec![0; COMPARE_CHUNK]);
    loop {
        let na = fill(&mut ra, &mut ba).map_err(|source| Error::Io {
            path: store.location(a),
            source,
        })?;
        let nb = fill(&mut rb, &mut bb).map_err(|source| Error::Io {
            path: store.location(b),
            source,
        })?;
        if ba[..na] != bb[..nb] {
            return Ok(false);
        }
        if na < COMPARE_CHUNK {
            return Ok(true);
        }
    }
}

/// Reads into `buf` until it is full or the reader ends; the bytes read.
fn fill(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};
    use std::path::Path;

    use super::super::split;
    use super::*;
    use crate::nix::StoreDir;
    use crate::store::StoreLocation;

    const A: &str = "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a";
    const B: &str = "/nix/store/bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb-b";

    fn store(root: &Path) -> StoreLocation {
        StoreLocation {
            dir: StoreDir::default(),
            root: root.to_owned(),
        }
    }

    fn tree() -> CustomisationTree {
        CustomisationTree::new(StoreDir::default(), Owner::default())
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
        let mut tree = tree();
        tree.merge_contents(&store(dir.path()), &[sp(A), sp(B)], OnCollision::First)
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
        let mut tree = tree();
        tree.merge_contents(&store(dir.path()), &[sp(A)], OnCollision::Error)
            .unwrap();
        assert_eq!(
            tree.names(),
            ["/share/", "/share/self", "/share/up", "/share/x"]
        );
    }

    #[test]
    fn collisions_name_both_files_and_equal_files_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        fixture(dir.path());
        let store = store(dir.path());
        match tree().merge_contents(&store, &[sp(A), sp(B)], OnCollision::Error) {
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
        tree()
            .merge_contents(&store, &[sp(A), sp(B)], OnCollision::Error)
            .unwrap();
    }

    /// Equal bytes past one compared chunk, and a difference in the last
    /// chunk, or in the executable bit, is a collision.
    #[test]
    fn large_files_are_compared_to_the_last_byte() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path());
        let big = "z".repeat(3 * COMPARE_CHUNK + 5);
        for path in [A, B] {
            put(dir.path(), &format!("{path}/share/big"), &big);
        }
        let merged = |store: &StoreLocation| {
            tree().merge_contents(store, &[sp(A), sp(B)], OnCollision::Error)
        };
        merged(&store).unwrap();
        let mut other = big.clone();
        other.replace_range(other.len() - 1.., "y");
        put(dir.path(), &format!("{B}/share/big"), &other);
        assert!(matches!(merged(&store), Err(Error::Collision { .. })));
        put(dir.path(), &format!("{B}/share/big"), &big);
        let file = store.disk_path(&format!("{B}/share/big"));
        fs::set_permissions(file, fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(merged(&store), Err(Error::Collision { .. })));
    }

    #[test]
    fn contents_must_be_directories_and_readable() {
        let dir = tempfile::tempdir().unwrap();
        put(dir.path(), A, "a file");
        let store = store(dir.path());
        assert!(matches!(
            tree().merge_contents(&store, &[sp(A)], OnCollision::Error),
            Err(Error::NotADirectory { .. })
        ));
        assert!(matches!(
            tree().merge_contents(&store, &[sp(B)], OnCollision::Error),
            Err(Error::NotADirectory { .. })
        ));
    }
}
