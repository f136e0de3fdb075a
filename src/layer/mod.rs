//! Store paths → deterministic layer tars.
//!
//! A store layer is byte-compatible with nixpkgs' `stream_layered_image.py`
//! (SPEC §4), so its diff_id equals the one nixpkgs computes for the same
//! paths and options. A layer is first *measured* from metadata alone (its
//! exact tar size, needed before the bytes in the enclosing archive), then
//! *written* in one pass that hashes as it goes.
//!
//! Plan first, write second: the private `tree` module walks the store and yields sorted
//! entries (names, kinds, canonical modes, sizes, link targets) and the
//! encoder in [`tar`] turns them into bytes without touching the filesystem.
//! Memory is bounded whatever the closure size: the walk is lazy and holds
//! only the listings of the directories on its current path (one per level
//! of depth), and writing adds a fixed read buffer and write buffer.

pub mod cache;
pub mod customisation;
pub mod hash;
pub mod permissions;
mod pipe;
pub mod tar;
mod tree;

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::closure::StoreLocation;
use crate::nix::StorePath;

pub use hash::{CountWriter, Digest, HashCountWriter};
pub use permissions::{PermissionRule, Permissions};
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
    /// `[[customisation.permissions]]` rules, applied to every entry; with
    /// none the layer is byte-identical to nixpkgs'.
    pub permissions: Permissions,
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
        /// changed, the store path being written when that showed.
        path: PathBuf,
        /// Size when measured (of the file, or of the layer).
        expected: u64,
        /// Size when written (for an overflowing layer, the least it would take).
        found: u64,
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

/// Read size for file contents: few syscalls for big files, and a fixed
/// amount of memory however large the file.
const READ_BUFFER: usize = 256 * 1024;

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

/// The entries every store layer starts with: the store directory and each
/// of its ancestors, mode 0755 (nixpkgs PR #282886, so an unprivileged owner
/// may write the store). For `/nix/store` these are nixpkgs' `/nix/` and
/// `/nix/store/`; nixpkgs writes those names even for another `store_dir`,
/// which leaves that store's own directories unowned, so we follow the
/// store directory instead.
fn prefix_headers(opts: &LayerOptions) -> Vec<Header> {
    let store = opts.store.dir.as_str();
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

/// Moves `entry` into `header`, returning where its bytes are on disk.
/// Owner fields are reset to the layer's and the permission rules applied,
/// since a rule may have changed them for the previous entry.
fn fill_header(header: &mut Header, entry: FileEntry, opts: &LayerOptions) -> PathBuf {
    header.name = entry.name;
    header.kind = entry.kind;
    header.mode = entry.mode;
    header.size = entry.size;
    if !opts.permissions.is_empty() {
        header.uid = opts.owner.uid;
        header.gid = opts.owner.gid;
        header.uname.clone_from(&opts.owner.uname);
        header.gname.clone_from(&opts.owner.gname);
        opts.permissions.apply(header);
    }
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
        fill_header(&mut header, entry?, opts);
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
pub fn write_store_layer<W: Write + Send>(
    opts: &LayerOptions,
    paths: &[StorePath],
    expected_size: u64,
    out: W,
) -> Result<LayerDigest, Error> {
    let write_err = |source| Error::Write {
        first: paths.first().cloned(),
        source,
    };
    let ((), diff_id, size) = pipe::pipelined(
        out,
        |sender| write_store_tar(opts, paths, expected_size, sender),
        write_err,
    )?;
    Ok(LayerDigest { diff_id, size })
}

/// The body of [`write_store_layer`], producing into the pipelined sender.
fn write_store_tar(
    opts: &LayerOptions,
    paths: &[StorePath],
    expected_size: u64,
    out: pipe::ChunkSender,
) -> Result<(), Error> {
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
        let path = path.map_or(opts.store.dir.as_str(), StorePath::as_str);
        opts.store.disk_path(path)
    };
    let mut header = owned_header(opts);
    let mut buf = vec![0; READ_BUFFER];
    let mut walk = FileTree::new(&opts.store, paths);
    while let Some(entry) = walk.next() {
        let disk = fill_header(&mut header, entry?, opts);
        let at_least = tar::archive_len(tar.bytes_written() + tar::entry_len(&header));
        if at_least > expected_size {
            return Err(Error::Changed {
                path: noticed_in(walk.current()),
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
        return Err(Error::Changed {
            path: noticed_in(paths.last()),
            expected: expected_size,
            found,
        });
    }
    let mut sender = tar.finish().map_err(write_err)?;
    sender.flush().map_err(write_err)
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
    let mut probe = [0; 1];
    loop {
        match file.read(&mut probe) {
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

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;
    use crate::nix::StoreDir;

    const TREE: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-tree";
    const SINGLE: &str = "/nix/store/zyxwvsrqpnmlkjihgfdcba9876543210-single.conf";
    const LINK: &str = "/nix/store/00000000000000000000000000000000-link";

    fn store_path(path: &str) -> StorePath {
        StorePath::parse(&StoreDir::default(), path).unwrap()
    }

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

    fn put(path: &Path, content: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
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
    fn build_tree(root: &Path) {
        let t = opts(root).store.disk_path(TREE);
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
        put(&opts(root).store.disk_path(SINGLE), b"single\n");
        symlink(format!("{TREE}/bin"), opts(root).store.disk_path(LINK)).unwrap();
    }

    fn write(opts: &LayerOptions, paths: &[StorePath]) -> Result<(Vec<u8>, LayerDigest), Error> {
        let size = measure_store_layer(opts, paths)?;
        let mut bytes = Vec::new();
        let digest = write_store_layer(opts, paths, size, &mut bytes)?;
        assert_eq!(digest.size, size);
        assert_eq!(bytes.len() as u64, size);
        assert_eq!(digest.diff_id, Digest::of(&bytes));
        Ok((bytes, digest))
    }

    fn names(opts: &LayerOptions, paths: &[StorePath]) -> Vec<Vec<u8>> {
        FileTree::new(&opts.store, paths)
            .map(|e| e.unwrap().name)
            .collect()
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

    #[test]
    fn siblings_sort_by_component_then_code_point() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let o = opts(dir.path());
        let names = names(&o, &[store_path(TREE)]);
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
    fn python_order_uses_surrogate_code_points() {
        use std::cmp::Ordering::Less;
        assert_eq!(tree::python_order(b"b", b"b-c"), Less);
        assert_eq!(tree::python_order("é".as_bytes(), b"\x80"), Less);
        assert_eq!(tree::python_order(b"\xff", "\u{e000}".as_bytes()), Less);
        assert_eq!(tree::python_order(b"a\xff", b"a\xff\x00"), Less);
    }

    #[test]
    fn hard_links_are_written_as_full_files() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let o = opts(dir.path());
        let entries: Vec<FileEntry> = FileTree::new(&o.store, &[store_path(TREE)])
            .map(Result::unwrap)
            .collect();
        for name in ["data", "hard", "hard2"] {
            let full = format!("{TREE}/share/{name}");
            let e = entries.iter().find(|e| e.name == full.as_bytes()).unwrap();
            assert_eq!((&e.kind, e.size, e.mode), (&Kind::Regular, 5, 0o444));
        }
    }

    #[test]
    fn single_file_and_symlink_store_paths_are_one_entry() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let o = opts(dir.path());
        let single = FileTree::new(&o.store, &[store_path(SINGLE)])
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        assert_eq!(single.len(), 1);
        assert_eq!(
            (single[0].name.as_slice(), single[0].size),
            (SINGLE.as_bytes(), 7)
        );
        let link = FileTree::new(&o.store, &[store_path(LINK)])
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        assert_eq!(link.len(), 1, "a symlink to a directory is not followed");
        assert_eq!(
            link[0].kind,
            Kind::Symlink(format!("{TREE}/bin").into_bytes())
        );
        assert_eq!(link[0].mode, 0o777);
        // A layer of just these, starting with /nix/ and /nix/store/.
        let (bytes, _) = write(&o, &[store_path(LINK)]).unwrap();
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
    fn canonical_modes() {
        use tree::canonical_mode;
        assert_eq!(canonical_mode(&Kind::Regular, 0o100_644), 0o444);
        assert_eq!(canonical_mode(&Kind::Regular, 0o100_700), 0o555);
        assert_eq!(canonical_mode(&Kind::Regular, 0o100_070), 0o444);
        assert_eq!(canonical_mode(&Kind::Directory, 0o040_700), 0o555);
        assert_eq!(canonical_mode(&Kind::Symlink(Vec::new()), 0o120_755), 0o777);
    }

    use tar::RECORD;

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
            match copy_file(&file, declared, &mut tar, &mut buf) {
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
    }

    #[test]
    fn empty_layer_is_the_two_store_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, _) = write(&opts(dir.path()), &[]).unwrap();
        assert_eq!(bytes.len() as u64, RECORD);
        assert!(bytes[1024..].iter().all(|&b| b == 0));
    }

    /// Memory is bounded by design: the walk keeps only the unvisited
    /// siblings of each directory on the current path. Here, 2 directories
    /// of 300 files each: while inside the second, the first's listing is
    /// gone, and never more than one listing per level is held.
    #[test]
    fn walk_holds_only_the_listings_on_the_current_path() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let t = o.store.disk_path(TREE);
        for sub in ["x", "y"] {
            for i in 0..300 {
                put(&t.join(sub).join(format!("{i:03}")), b"");
            }
        }
        let paths = [store_path(TREE)];
        let mut walk = FileTree::new(&o.store, &paths);
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
