//! `[customisation] run`: a shell script over the customisation tree as
//! fake root (nixpkgs' `fakeRootCommands`), its `chown`/`chmod` results
//! becoming the layer's owners and modes.
//!
//! Why Debian's `fakeroot` and not a user namespace: in a user namespace
//! only the ids mapped into it can own files, so `chown 1000:1000` fails
//! unless the host grants a subuid range; `fakeroot` records any owner
//! and answers `stat` with it, needs no privilege, and is one package.
//! It works through `LD_PRELOAD`, so the script's tools must be
//! dynamically linked: the host's `/bin/sh` and coreutils are.
//!
//! The tree is written to a staging directory (modes and owners applied
//! inside the fakeroot session before the script runs), the script runs
//! there as `sh -e` with that directory as its working directory (paths
//! in it are relative: `mkdir -p data`), and GNU `find`, in the same
//! session, lists what is there with the faked owners and modes. That
//! listing becomes a new tree: sorted as every tree is, every entry at the
//! build's `mtime`, file bytes held in memory (the layer is small by
//! design; past [`MAX_BYTES`] it is an error). Nothing at or below the
//! store directory, and no `/proc`, `/sys` or `/dev`, can come back: the
//! tree refuses the first, the second are dropped. The script runs as the
//! user who runs the build, unconfined: it is the manifest author's code,
//! like a Makefile's.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::{CustomisationTree, EntryKind, FileData, RUNTIME_DIRS};
use crate::layer::{Error, Owner};

/// The most file bytes the script's tree may hold (they are kept in memory
/// until the layer is written).
pub const MAX_BYTES: u64 = 256 << 20;

/// The most of the script's stderr an error quotes.
const STDERR_TAIL: usize = 2048;

/// What `fakeroot` runs: the owners and modes of the tree, the user's
/// script, then the listing (`%y` type, `%m` mode, `%U`/`%G` ids, `%P`
/// path, `%l` link target, NUL-separated, so any name survives).
const DRIVER: &str = "set -e\n. \"$1\"\nsh -e \"$2\"\nfind . -mindepth 1 -printf '%y\\0%m\\0%U\\0%G\\0%P\\0%l\\0' > \"$3\"\n";

fn script_error(message: String) -> Error {
    Error::Script { message }
}

fn io_at(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// `bytes` as one single-quoted shell word.
fn quote(bytes: &[u8]) -> Vec<u8> {
    let mut out = vec![b'\''];
    for &b in bytes {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

impl CustomisationTree {
    /// Runs `script` over this tree as fake root in a staging directory
    /// under `work`, and returns the tree it leaves.
    ///
    /// # Errors
    /// When `fakeroot` is missing, the script fails (its stderr's end is
    /// quoted), it makes a device, fifo or socket, writes into the store
    /// directory, or leaves more than [`MAX_BYTES`] of files.
    pub fn run_script(&self, script: &str, work: &Path) -> Result<Self, Error> {
        let temp = tempfile::Builder::new()
            .prefix(".nixlayer-run-")
            .tempdir_in(work)
            .map_err(io_at(work))?;
        let _pending = crate::cleanup::Pending::new(temp.path());
        let stage = temp.path().join("root");
        fs::create_dir(&stage).map_err(io_at(&stage))?;

        // The tree on disk; owners and modes as commands for the session.
        let mut preamble = b"set -e\n".to_vec();
        let mut names: BTreeMap<u64, String> = BTreeMap::from([(0, "root".to_owned())]);
        let mut groups: BTreeMap<u64, String> = BTreeMap::from([(0, "root".to_owned())]);
        for (comps, entry) in &self.entries {
            let rel: PathBuf = comps
                .iter()
                .map(|c| std::ffi::OsStr::from_bytes(c))
                .collect();
            let path = stage.join(&rel);
            match &entry.kind {
                EntryKind::Directory => fs::create_dir_all(&path).map_err(io_at(&path))?,
                EntryKind::File { data, .. } => match data {
                    FileData::Inline(bytes) => fs::write(&path, bytes).map_err(io_at(&path))?,
                    FileData::Disk(file) => {
                        fs::copy(file, &path).map_err(io_at(file))?;
                    }
                },
                EntryKind::Symlink(target) => {
                    symlink(std::ffi::OsStr::from_bytes(target), &path).map_err(io_at(&path))?;
                }
            }
            let word = quote(rel.as_os_str().as_bytes());
            if !entry.owner.uname.is_empty() {
                names.insert(entry.owner.uid, entry.owner.uname.clone());
            }
            if !entry.owner.gname.is_empty() {
                groups.insert(entry.owner.gid, entry.owner.gname.clone());
            }
            if entry.owner.uid != 0 || entry.owner.gid != 0 {
                preamble.extend_from_slice(
                    format!("chown -h {}:{} ", entry.owner.uid, entry.owner.gid).as_bytes(),
                );
                preamble.extend_from_slice(&word);
                preamble.push(b'\n');
            }
            if !matches!(entry.kind, EntryKind::Symlink(_)) {
                preamble.extend_from_slice(format!("chmod {:o} ", entry.mode).as_bytes());
                preamble.extend_from_slice(&word);
                preamble.push(b'\n');
            }
        }
        let files = [
            ("driver.sh", DRIVER.as_bytes()),
            ("preamble.sh", &preamble[..]),
            ("script.sh", script.as_bytes()),
        ];
        for (name, bytes) in files {
            let path = temp.path().join(name);
            fs::write(&path, bytes).map_err(io_at(&path))?;
        }
        let list = temp.path().join("list");

        let output = Command::new("fakeroot")
            .arg("--")
            .arg("sh")
            .arg(temp.path().join("driver.sh"))
            .arg(temp.path().join("preamble.sh"))
            .arg(temp.path().join("script.sh"))
            .arg(&list)
            .current_dir(&stage)
            // Only the build's PATH (where `fakeroot` and the script's
            // tools are): the rest of its environment must not change the layer.
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("LC_ALL", "C")
            .env("HOME", &stage)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    script_error(
                        "`fakeroot` is not installed; `[customisation] run` needs it: install the Debian package `fakeroot` (apt-get install fakeroot)".to_owned(),
                    )
                } else {
                    script_error(format!("could not start `fakeroot`: {e}"))
                }
            })?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let start = stderr.len().saturating_sub(STDERR_TAIL);
            let start = (start..=stderr.len())
                .find(|&i| stderr.is_char_boundary(i))
                .unwrap_or(stderr.len());
            return Err(script_error(format!(
                "the `[customisation] run` script failed ({}): {}",
                output.status,
                stderr[start..].trim()
            )));
        }
        let listing = fs::read(&list).map_err(io_at(&list))?;
        self.tree_of_listing(&stage, &listing, &names, &groups)
    }

    /// The tree `find -printf` listed in `stage`.
    fn tree_of_listing(
        &self,
        stage: &Path,
        listing: &[u8],
        names: &BTreeMap<u64, String>,
        groups: &BTreeMap<u64, String>,
    ) -> Result<Self, Error> {
        let mut tree = Self::new(self.store_dir.clone(), self.store_owner.clone());
        let fields: Vec<&[u8]> = listing.split(|&b| b == 0).collect();
        let mut bytes: u64 = 0;
        let bad = || script_error("the listing of the script's tree is malformed".to_owned());
        let number = |field: &[u8], radix: u32| {
            std::str::from_utf8(field)
                .ok()
                .and_then(|s| u64::from_str_radix(s, radix).ok())
        };
        for record in fields.chunks_exact(6) {
            let [kind, mode, uid, gid, rel, target] = record else {
                return Err(bad());
            };
            let first = rel.split(|&b| b == b'/').next().unwrap_or_default();
            if RUNTIME_DIRS.contains(&first) {
                continue; // the runtime mounts its own (nixpkgs #251995)
            }
            let mode = number(mode, 8).ok_or_else(bad)?;
            let owner = {
                let uid = number(uid, 10).ok_or_else(bad)?;
                let gid = number(gid, 10).ok_or_else(bad)?;
                Owner {
                    uid,
                    gid,
                    uname: names.get(&uid).cloned().unwrap_or_default(),
                    gname: groups.get(&gid).cloned().unwrap_or_default(),
                }
            };
            let name = format!("/{}", String::from_utf8_lossy(rel));
            if String::from_utf8(rel.to_vec()).is_err() {
                return Err(script_error(format!(
                    "the script made `{name}`, whose name is not UTF-8"
                )));
            }
            let mode = u32::try_from(mode & 0o7777).unwrap_or(0o644);
            match *kind {
                b"d" => tree.add_dir(&name, mode, &owner)?,
                b"f" => {
                    let path = stage.join(std::ffi::OsStr::from_bytes(rel));
                    let data = fs::read(&path).map_err(io_at(&path))?;
                    bytes = bytes.saturating_add(data.len() as u64);
                    if bytes > MAX_BYTES {
                        return Err(script_error(format!(
                            "the script's tree holds more than {} MiB of files",
                            MAX_BYTES >> 20
                        )));
                    }
                    tree.add_file(&name, FileData::Inline(data), mode, &owner)?;
                }
                b"l" => tree.add_symlink(&name, &String::from_utf8_lossy(target), &owner)?,
                other => {
                    return Err(script_error(format!(
                        "the script made `{name}` of type `{}` (a device, fifo or socket), which a layer here cannot hold",
                        String::from_utf8_lossy(other)
                    )))
                }
            }
        }
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_survives_any_name() {
        assert_eq!(quote(b"a b"), b"'a b'");
        assert_eq!(quote(b"it's"), b"'it'\\''s'");
        // Through a real shell: the word comes back unchanged.
        let name = b"x'y $z \"w\"\n";
        let out = Command::new("sh")
            .arg("-c")
            .arg(std::ffi::OsStr::from_bytes(
                &[b"printf %s ".as_slice(), &quote(name)].concat(),
            ))
            .output()
            .unwrap();
        assert_eq!(out.stdout, name);
    }
}
