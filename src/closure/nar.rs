//! The size of a path's NAR serialisation (Nix's `narSize`), computed from
//! metadata alone: `lstat`, `readdir` and `readlink`, never file contents.
//! The DOT source needs it because `nix-store --query --graph` prints no sizes.
//!
//! A NAR is a sequence of strings, each written as its length (u64, little
//! endian) then its bytes, zero-padded to a multiple of 8:
//!
//! ```text
//! "nix-archive-1" node
//! node      = "(" "type" ( "regular" ["executable" ""] "contents" <bytes>
//!                        | "symlink" "target" <target>
//!                        | "directory" { "entry" "(" "name" <name> "node" node ")" } ) ")"
//! ```
//!
//! Directory entries come sorted by name, but sizes do not depend on order.
//! A file is executable when its owner-execute bit is set, as in Nix.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Bytes a NAR string of `len` bytes takes: length word plus padded bytes.
fn string(len: u64) -> u64 {
    8 + len.div_ceil(8) * 8
}

/// Size of the fixed tokens, e.g. `str("(") + str("type")`.
fn strings(tokens: &[&str]) -> u64 {
    tokens.iter().map(|t| string(t.len() as u64)).sum()
}

/// The NAR size of the file, symlink or directory tree at `path`.
///
/// # Errors
/// When metadata cannot be read, or a file is neither a regular file, a
/// symlink nor a directory (Nix cannot serialise those either).
pub fn nar_size(path: &Path) -> io::Result<u64> {
    Ok(strings(&["nix-archive-1"]) + node_size(path)?)
}

fn node_size(path: &Path) -> io::Result<u64> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| with_path(e, path))?;
    let kind = meta.file_type();
    let body = if kind.is_file() {
        let executable = meta.permissions().mode() & 0o100 != 0;
        let flag = if executable {
            strings(&["executable", ""])
        } else {
            0
        };
        strings(&["regular", "contents"]) + flag + string(meta.len())
    } else if kind.is_symlink() {
        let target = std::fs::read_link(path).map_err(|e| with_path(e, path))?;
        strings(&["symlink", "target"]) + string(target.as_os_str().len() as u64)
    } else if kind.is_dir() {
        let mut total = strings(&["directory"]);
        for entry in std::fs::read_dir(path).map_err(|e| with_path(e, path))? {
            let entry = entry.map_err(|e| with_path(e, path))?;
            let name = entry.file_name();
            total += strings(&["entry", "(", "name", "node", ")"])
                + string(name.as_bytes().len() as u64)
                + node_size(&entry.path())?;
        }
        total
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "`{}` is not a regular file, symlink or directory, which a NAR cannot hold",
                path.display()
            ),
        ));
    };
    Ok(strings(&["(", "type", ")"]) + body)
}

/// io errors from `std::fs` do not say which file; the caller reports the
/// store path, and this keeps the file inside it.
fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("`{}`: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn sizes_match_nix() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();

        // A symlink to a 66-byte target: the golden-symlink store path,
        // whose narSize Nix reports as 184.
        let link = root.join("link");
        symlink(
            format!("/nix/store/{}-golden-app-0.1/bin/app", "x".repeat(32)),
            &link,
        )
        .unwrap();
        assert_eq!(nar_size(&link).unwrap(), 184);

        // A 5-byte file: 24 ("nix-archive-1") + 16 ("(") + 16 + 16 ("type"
        // "regular") + 16 ("contents") + 8 + 8 (5 bytes padded) + 16 (")").
        // This and the numbers below are what `nix-store --dump | wc -c` prints.
        let file = root.join("file");
        std::fs::write(&file, b"hello").unwrap();
        assert_eq!(nar_size(&file).unwrap(), 120);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o755)).unwrap();
        // "executable" (10 bytes) and "".
        assert_eq!(nar_size(&file).unwrap(), 152);

        // An empty directory and one with an empty file named `a`.
        let d = root.join("d");
        std::fs::create_dir(&d).unwrap();
        assert_eq!(nar_size(&d).unwrap(), 96);
        std::fs::write(d.join("a"), b"").unwrap();
        // "(" "type" "regular" "contents", 0 bytes, ")".
        let node = 4 * 16 + 8 + 16;
        // "entry" "(" "name" "a" "node" … ")".
        let entry = 6 * 16 + node;
        assert_eq!(nar_size(&d).unwrap(), 96 + entry);
        assert_eq!(96 + entry, 280);
    }

    #[test]
    fn missing_paths_and_sockets_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let err = nar_size(&dir.path().join("absent")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(err.to_string().contains("absent"), "{err}");

        let _socket = std::os::unix::net::UnixListener::bind(dir.path().join("sock")).unwrap();
        let err = nar_size(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("sock"), "{err}");
    }
}
