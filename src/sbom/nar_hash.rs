//! The NAR hash (Nix's `narHash`) of a store path computed from its
//! content, read through the [`Store`] seam: for closure sources that carry
//! none (DOT files). The NAR is never held: its bytes stream through
//! sha256.
//!
//! A NAR lists a directory's entries sorted by the bytes of their names;
//! a store yields them in Python's order (code points, with undecodable
//! bytes as surrogates), which differs for names that are not UTF-8. So the
//! entries of one store path are collected (names and kinds, never file
//! bytes) and sorted component by component before they are serialised.

use std::io::{self, Read};

use crate::nix::nar::{NarNode, NarWriter};
use crate::nix::{NarHash, StorePath};
use crate::oci::HashCountWriter;
use crate::store::{Entry, EntryKind, Store};

use super::Error;

fn without_slash(name: &[u8]) -> &[u8] {
    name.strip_suffix(b"/").unwrap_or(name)
}

/// The sha256 of the NAR serialisation of `path` in `store`.
///
/// # Errors
/// When the store cannot be read, or a file's length is not the one its
/// entry announced (the store changed while it was read).
pub fn nar_hash<S: Store>(store: &S, path: &StorePath) -> Result<NarHash, Error> {
    let store_err = |source| Error::Store {
        path: path.clone(),
        source,
    };
    let mut entries: Vec<Entry> = store
        .entries(path)
        .collect::<Result<_, _>>()
        .map_err(store_err)?;
    // Component-wise byte order is the NAR's pre-order: a directory before
    // its entries, siblings by the bytes of their names.
    entries.sort_by(|a, b| {
        without_slash(&a.name)
            .split(|&c| c == b'/')
            .cmp(without_slash(&b.name).split(|&c| c == b'/'))
    });
    let io_err = |source: io::Error| Error::Store {
        path: path.clone(),
        source: crate::store::Error::Io {
            path: store.location(path.as_str().as_bytes()),
            source,
        },
    };
    let mut nar = NarWriter::new(HashCountWriter::new(io::sink()));
    for entry in &entries {
        let node = match &entry.kind {
            EntryKind::Directory => NarNode::Directory,
            EntryKind::Symlink { target } => NarNode::Symlink { target },
            &EntryKind::Regular { size, executable } => NarNode::Regular { executable, size },
        };
        nar.entry(&entry.name, node).map_err(io_err)?;
        if let NarNode::Regular { size, .. } = node {
            let reader = store.open(&entry.name).map_err(store_err)?;
            let copied = io::copy(&mut reader.take(size), &mut nar).map_err(io_err)?;
            if copied != size {
                return Err(Error::Changed {
                    path: store.location(&entry.name),
                    expected: size,
                    found: copied,
                });
            }
        }
    }
    let (hasher, _) = nar.finish().map_err(io_err)?;
    let (_, digest, _) = hasher.finish().map_err(io_err)?;
    NarHash::parse(&digest.hex()).map_err(|_| {
        io_err(io::Error::new(
            io::ErrorKind::InvalidData,
            "sha256 is not 32 bytes",
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;
    use crate::store::fixture::{local, store_path};

    const P: &str = "/nix/store/00000000000000000000000000000000-p";

    /// The hashes are what `nix-store --dump DIR | sha256sum` prints for
    /// the same trees (Nix 2.x, see `tests/it/sbom.rs` for the live check).
    #[test]
    fn hashes_match_nix_store_dump() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let disk = store.disk_path(P);
        fs::create_dir_all(disk.parent().unwrap()).unwrap();
        let hash = || {
            let h = nar_hash(&store, &store_path(P)).unwrap();
            h.to_base16()["sha256:".len()..].to_owned()
        };
        fs::write(&disk, b"hello").unwrap();
        let file = hash();
        fs::remove_file(&disk).unwrap();
        fs::create_dir_all(disk.join("b/c")).unwrap();
        fs::write(disk.join("a"), b"x").unwrap();
        fs::write(disk.join("b/c/d"), b"123456789").unwrap();
        fs::set_permissions(disk.join("b/c/d"), fs::Permissions::from_mode(0o755)).unwrap();
        symlink("../a", disk.join("b/l")).unwrap();
        fs::write(disk.join("z"), b"").unwrap();
        let tree = hash();
        assert_eq!(file.len(), 64);
        assert_ne!(file, tree);
        // Pinned from `nix-store --dump` of these trees.
        assert_eq!(
            file,
            "0a430879c266f8b57f4092a0f935cf3facd48bbccde5760d4748ca405171e969"
        );
        assert_eq!(tree, TREE_HASH);
    }

    /// Names that are not UTF-8 sort differently in Python's order (the
    /// store's walk: `\xff` as a surrogate, before U+E000) and in the
    /// NAR's byte order (after it): the hash follows the bytes.
    #[test]
    fn names_sort_by_bytes_as_in_a_nar() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let disk = store.disk_path(P);
        fs::create_dir_all(&disk).unwrap();
        let name = |b: &[u8]| disk.join(OsStr::from_bytes(b));
        fs::write(name(b"\xff"), b"a").unwrap();
        fs::write(name("\u{e000}".as_bytes()), b"b").unwrap();
        fs::write(name(b"plain"), b"c").unwrap();
        fs::create_dir(name("é".as_bytes())).unwrap();
        fs::write(name("é/x".as_bytes()), b"d").unwrap();
        let hash = nar_hash(&store, &store_path(P)).unwrap().to_base16();
        // `nix-store --dump` of the same tree.
        assert_eq!(
            hash,
            "sha256:2f90ea9b6eb1784bfaa2d95382d41e9d95070ef437bc199d428b45e13918ab27"
        );
    }

    const TREE_HASH: &str = "d6be4c64648fe6140b3b46d8dd75a05ab759c9225a403fba2ccf817bc1373179";
}
