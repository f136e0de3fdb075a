//! The size of a store path's NAR serialisation (Nix's `narSize`), computed
//! from its entries alone: kinds, sizes, names and link targets, never file
//! contents. The DOT closure source needs it because `nix-store --query
//! --graph` prints no sizes.
//!
//! The NAR grammar is [`NarWriter`]'s; its counter takes the entries as a
//! store yields them (sizes do not depend on the order of siblings).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use crate::nix::nar::{NarNode, NarWriter};

use super::{Entry, EntryKind, Error};

/// The NAR size of the store path whose entries (the store path first) are `entries`.
pub(super) fn size(entries: impl Iterator<Item = Result<Entry, Error>>) -> Result<u64, Error> {
    let mut nar = NarWriter::counter();
    for entry in entries {
        let entry = entry?;
        let node = match &entry.kind {
            EntryKind::Directory => NarNode::Directory,
            EntryKind::Symlink { target } => NarNode::Symlink { target },
            &EntryKind::Regular { size, executable } => NarNode::Regular { executable, size },
        };
        // Only a walk that is no store's (an entry outside the store path)
        // is refused.
        nar.entry(&entry.name, node).map_err(|source| Error::Io {
            path: PathBuf::from(OsStr::from_bytes(&entry.name)),
            source,
        })?;
    }
    let (_, size) = nar.finish().map_err(|source| Error::Io {
        path: PathBuf::new(),
        source,
    })?;
    Ok(size)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io;
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::super::local::fixture::{local, store_path};
    use super::super::Store;
    use super::*;

    const P: &str = "/nix/store/00000000000000000000000000000000-p";

    /// The numbers are what `nix-store --dump | wc -c` prints.
    #[test]
    fn sizes_match_nix() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        let disk = store.disk_path(P);
        fs::create_dir_all(disk.parent().unwrap()).unwrap();
        let nar_size = || store.nar_size(&store_path(P)).unwrap();

        // A symlink to a 66-byte target: the golden-symlink store path,
        // whose narSize Nix reports as 184.
        symlink(
            format!("/nix/store/{}-golden-app-0.1/bin/app", "x".repeat(32)),
            &disk,
        )
        .unwrap();
        assert_eq!(nar_size(), 184);
        fs::remove_file(&disk).unwrap();

        // A 5-byte file: 24 ("nix-archive-1") + 16 ("(") + 16 + 16 ("type"
        // "regular") + 16 ("contents") + 8 + 8 (5 bytes padded) + 16 (")").
        fs::write(&disk, b"hello").unwrap();
        assert_eq!(nar_size(), 120);
        fs::set_permissions(&disk, fs::Permissions::from_mode(0o755)).unwrap();
        // "executable" (10 bytes) and "".
        assert_eq!(nar_size(), 152);
        fs::remove_file(&disk).unwrap();

        // An empty directory and one with an empty file named `a`.
        fs::create_dir(&disk).unwrap();
        assert_eq!(nar_size(), 96);
        fs::write(disk.join("a"), b"").unwrap();
        // "(" "type" "regular" "contents", 0 bytes, ")".
        let node = 4 * 16 + 8 + 16;
        // "entry" "(" "name" "a" "node" … ")".
        let entry = 6 * 16 + node;
        assert_eq!(nar_size(), 96 + entry);
        assert_eq!(96 + entry, 280);

        // Nested: `d/` holding a 9-byte file `long-name` (16 bytes padded).
        fs::create_dir(disk.join("d")).unwrap();
        fs::write(disk.join("d/long-name"), b"123456789").unwrap();
        let file = 4 * 16 + 8 + 16 + 16;
        // "(" "type" "directory" ")", then "entry" "(" "name" "long-name" "node" … ")".
        let dir_node = 3 * 16 + 24 + (5 * 16 + 24 + file);
        assert_eq!(nar_size(), 280 + 6 * 16 + dir_node);
        assert_eq!(280 + 6 * 16 + dir_node, 656);
    }

    #[test]
    fn missing_paths_and_sockets_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let store = local(dir.path());
        match store.nar_size(&store_path(P)) {
            Err(Error::Io { path, source }) => {
                assert_eq!(path, store.disk_path(P));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected Io, got {other:?}"),
        }
        let disk = store.disk_path(P);
        fs::create_dir_all(&disk).unwrap();
        let _socket = std::os::unix::net::UnixListener::bind(disk.join("sock")).unwrap();
        match store.nar_size(&store_path(P)) {
            Err(Error::Unsupported { path }) => assert_eq!(path, disk.join("sock")),
            other => panic!("expected Unsupported, got {other:?}"),
        }
    }
}
