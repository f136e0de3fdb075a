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
//!
//! With `chroot = true` the script runs inside the staging directory as
//! its root instead, as real root in a private mount namespace, the
//! closure's store paths bound read-only on mount points that are removed
//! again before the listing; see [`run_in_chroot`] for why.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use super::{CustomisationTree, EntryKind, FileData, RUNTIME_DIRS};
use crate::layer::{Error, Owner};

/// The most file bytes the script's tree may hold (they are kept in memory
/// until the layer is written).
pub const MAX_BYTES: u64 = 256 << 20;

/// Gives the bytes of the listed regular file at this relative path.
type FileReader<'a> = dyn FnMut(&[u8]) -> Result<Vec<u8>, Error> + 'a;

/// The most of the script's stderr an error quotes.
const STDERR_TAIL: usize = 2048;

/// What `fakeroot` runs (under umask 022, as Nix builders do, so what the
/// script makes has the same modes whatever the build's umask): the owners and modes of the tree, the user's
/// script, then the listing (`%y` type, `%m` mode, `%U`/`%G` ids, `%P`
/// path, `%l` link target, NUL-separated, so any name survives).
const DRIVER: &str = "set -e\numask 022\n. \"$1\"\nsh -e \"$2\"\nfind . -mindepth 1 -printf '%y\\0%m\\0%U\\0%G\\0%P\\0%l\\0' > \"$3\"\n";

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

/// Runs `command` as [`Command::output`] does, but in a process group of
/// its own that is killed once the command itself has ended, and with its
/// output in files under `work` rather than pipes. A script's background
/// job (`daemon &`, `sleep 600 &`) would otherwise hold the pipes, and so
/// the build, until it ended, and could go on changing the tree after the
/// listing; Nix likewise kills whatever a builder leaves running. A job
/// that leaves the group (`setsid`) is out of reach, as it would be of a
/// process group under Nix without its sandbox.
fn output_killing_leftovers(command: &mut Command, work: &Path) -> std::io::Result<Output> {
    use std::os::unix::process::CommandExt as _;
    let out_path = work.join("stdout");
    let err_path = work.join("stderr");
    let mut child = command
        .stdout(fs::File::create(&out_path)?)
        .stderr(fs::File::create(&err_path)?)
        .process_group(0)
        .spawn()?;
    let pid = libc::pid_t::try_from(child.id()).map_err(std::io::Error::other)?;
    // Wait for the exit without reaping (`WNOWAIT`): the leader stays a
    // zombie, so its pid (the group's id) cannot be reused while the
    // group is killed.
    // SAFETY: `info` is a plain C struct that `waitid` fills; the call
    // touches no other memory.
    let waited = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::waitid(
            libc::P_PID,
            libc::id_t::try_from(pid).unwrap_or_default(),
            &raw mut info,
            libc::WEXITED | libc::WNOWAIT,
        )
    };
    if waited == 0 {
        // SAFETY: `kill` only sends a signal; a group already gone is ESRCH.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let status = child.wait()?;
    Ok(Output {
        status,
        stdout: fs::read(&out_path)?,
        stderr: fs::read(&err_path)?,
    })
}

/// The error for a command that failed: its status and its stderr's end.
fn failed(what: &str, output: &std::process::Output) -> Error {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let start = stderr.len().saturating_sub(STDERR_TAIL);
    let start = (start..=stderr.len())
        .find(|&i| stderr.is_char_boundary(i))
        .unwrap_or(stderr.len());
    script_error(format!(
        "{what} failed ({}): {}",
        output.status,
        stderr[start..].trim()
    ))
}

/// What `unshare --mount` runs, as real root in a private mount namespace
/// (so no mount is seen outside it, and all go when it exits): each store
/// path bound read-only on its mount point, then the script under
/// `chroot`, after the tree's owners and modes are set with the host's
/// shell (`preamble.sh` beside the root). Arguments: the staging root, the shell, the script, the
/// chroot's PATH, then pairs of (on disk, in the image). Nothing is
/// mounted on `/proc`, `/sys` or `/dev`. The script runs without
/// `CAP_SYS_ADMIN` (and module, raw I/O, boot, ptrace) in its bounding
/// set, so it cannot remount a store path writable or unmount it and
/// write through, while `chown`, `chmod` and `mknod` stay real.
const CHROOT_DRIVER: &str = "set -e\numask 022\nstage=$1 shell=$2 script=$3 inner_path=$4\nshift 4\n(cd \"$stage\" && sh -e ../preamble.sh)\nfor tool in mount:mount chroot:coreutils setpriv:util-linux; do\n  command -v ${tool%%:*} >/dev/null || { echo \"\\`${tool%%:*}\\` is not installed: install the Debian package \\`${tool#*:}\\`\" >&2; exit 127; }\ndone\nchroot_bin=$(command -v chroot) setpriv_bin=$(command -v setpriv)\nwhile [ $# -gt 0 ]; do\n  mount --bind \"$1\" \"$stage$2\"\n  mount -o remount,bind,ro \"$stage$2\"\n  shift 2\ndone\nexec env -i PATH=\"$inner_path\" HOME=/ LC_ALL=C \"$setpriv_bin\" --bounding-set -sys_admin,-sys_module,-sys_rawio,-sys_boot,-sys_ptrace -- \"$chroot_bin\" \"$stage\" \"$shell\" -ec \"$script\"\n";

/// Runs the staged preamble (owners, modes) and then `script.sh` inside
/// `stage` as its root, with every store path of `visible` bound
/// read-only at its store location. Returns the mount-point directories it
/// made, parents first, for the caller to remove.
///
/// Why real root and not fakeroot, proot or a user namespace: the shell
/// here is a store path's, typically static (busybox), which fakeroot's
/// `LD_PRELOAD` cannot reach; proot's fake root records no owner; and a
/// user namespace can only `chown` to the ids mapped into it (the whole
/// range needs a subuid grant and `newuidmap`, and still cannot give
/// every id). As root, in a private mount namespace, `chown` and `chmod`
/// are real and are read back as they are. Without root this is refused
/// with an error saying so rather than giving a layer with other owners.
fn run_in_chroot(
    temp: &Path,
    stage: &Path,
    visible: &[(String, PathBuf)],
) -> Result<Vec<PathBuf>, Error> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(script_error(
            "`[customisation] chroot = true` needs the build to run as root: the script's `chown` must be real (a store path's static shell escapes fakeroot, and a user namespace can own files only by its mapped ids); run the build as root (in CI or a container), or drop `chroot` and use relative paths".to_owned(),
        ));
    }
    // The mount points: real directories in the stage, none of them
    // through a symlink (which would put the mount elsewhere).
    let mut created = Vec::new();
    let mut mounts = Vec::new();
    for (path, disk) in visible {
        if !disk.is_dir() {
            return Err(script_error(format!(
                "`[customisation] chroot = true` needs the store paths on disk, and `{path}` is not at `{}` (a binary cache store cannot be bound into the chroot)",
                disk.display()
            )));
        }
        let mut at = stage.to_path_buf();
        for comp in Path::new(path).components().skip(1) {
            at.push(comp);
            match fs::symlink_metadata(&at) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => {
                    return Err(script_error(format!(
                        "the tree has `/{}`, which is not a directory, where the chroot binds the store path `{path}`",
                        at.strip_prefix(stage).unwrap_or(&at).display()
                    )))
                }
                Err(_) => {
                    fs::create_dir(&at).map_err(io_at(&at))?;
                    created.push(at.clone());
                }
            }
        }
        mounts.push((disk.clone(), path.clone()));
    }

    // The shell: the image's `/bin/sh` when it has one (through the
    // stage, so a symlink into the store counts), else the first store
    // path's `bin/sh`.
    let shell = if fs::symlink_metadata(stage.join("bin/sh")).is_ok() {
        "/bin/sh".to_owned()
    } else if let Some((path, _)) = visible
        .iter()
        .find(|(_, disk)| disk.join("bin/sh").exists())
    {
        format!("{path}/bin/sh")
    } else {
        return Err(script_error(
            "`[customisation] chroot = true` needs a shell: the image has no `/bin/sh` and no store path of the closure has `bin/sh` (add busybox or bash to the closure)".to_owned(),
        ));
    };
    let mut inner_path = "/bin:/usr/bin:/sbin:/usr/sbin".to_owned();
    for (path, disk) in visible {
        if disk.join("bin").is_dir() {
            inner_path.push(':');
            inner_path.push_str(path);
            inner_path.push_str("/bin");
        }
    }

    let script = fs::read(temp.join("script.sh")).map_err(io_at(temp))?;
    let mut command = Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            CHROOT_DRIVER,
            "sh",
        ])
        .arg(stage)
        .arg(&shell)
        .arg(std::ffi::OsStr::from_bytes(&script))
        .arg(&inner_path);
    for (disk, path) in &mounts {
        command.arg(disk).arg(path);
    }
    command
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()),
        )
        .env("LC_ALL", "C")
        .current_dir(stage)
        .stdin(Stdio::null());
    let output = output_killing_leftovers(&mut command, temp)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                script_error(
                    "`unshare` is not installed; `[customisation] chroot = true` needs it: install the Debian package `util-linux` (apt-get install util-linux)".to_owned(),
                )
            } else {
                script_error(format!("could not start `unshare`: {e}"))
            }
        })?;
    if !output.status.success() {
        return Err(failed("the `[customisation] run` script (chroot)", &output));
    }
    Ok(created)
}

impl CustomisationTree {
    /// Runs `script` over this tree as fake root in a staging directory
    /// under `work`, and returns the tree it leaves.
    ///
    /// # Errors
    /// When `fakeroot` is missing, the script fails (its stderr's end is
    /// quoted), it makes a device, fifo or socket, writes into the store
    /// directory, or leaves more than [`MAX_BYTES`] of files.
    ///
    /// With `chroot` (the closure's store paths: where each is in the
    /// image, where it is on disk) the script runs inside the staging
    /// directory as its root instead, as real root (see the module docs).
    ///
    /// With `cache` (a directory), the result is filed there under a key of
    /// the script, this tree (every entry, file bytes included), the store
    /// paths it sees, where they are on disk and `seen_stamp` (what the
    /// caller knows of those paths' content: the store's stamps, so an
    /// edited fixture store is a miss), and a rebuild with the same key
    /// takes it from there without running the script: like a Nix
    /// derivation, the script is taken to depend on nothing else. A
    /// missing, unreadable or malformed entry is a miss, never an error.
    pub fn run_script(
        &self,
        script: &str,
        work: &Path,
        chroot: Option<&[(String, PathBuf)]>,
        seen_stamp: &[u8],
        cache: Option<&Path>,
    ) -> Result<Self, Error> {
        let (names, groups) = self.owner_names();
        let Some(cache) = cache else {
            return self.execute_script(script, work, chroot, None, &names, &groups);
        };
        let key = self.script_key(script, chroot, seen_stamp)?;
        let entry = cache.join(&key);
        if let Some(tree) = self.cached_tree(&entry, &names, &groups) {
            return Ok(tree);
        }
        let mut record = fs::create_dir_all(cache)
            .ok()
            .and_then(|()| tempfile::NamedTempFile::new_in(cache).ok());
        let tree = self.execute_script(script, work, chroot, record.as_mut(), &names, &groups)?;
        if let Some(file) = record {
            // A failed write only loses the saving.
            let _ = file.persist(&entry);
        }
        Ok(tree)
    }

    /// The user and group names the tree's owners carry, by id.
    fn owner_names(&self) -> (BTreeMap<u64, String>, BTreeMap<u64, String>) {
        let mut names: BTreeMap<u64, String> = BTreeMap::from([(0, "root".to_owned())]);
        let mut groups: BTreeMap<u64, String> = BTreeMap::from([(0, "root".to_owned())]);
        for entry in self.entries.values() {
            if !entry.owner.uname.is_empty() {
                names.insert(entry.owner.uid, entry.owner.uname.clone());
            }
            if !entry.owner.gname.is_empty() {
                groups.insert(entry.owner.gid, entry.owner.gname.clone());
            }
        }
        (names, groups)
    }

    /// The cache key of running `script` over this tree: sha256 over
    /// length-prefixed fields, so no two inputs share an encoding.
    fn script_key(
        &self,
        script: &str,
        chroot: Option<&[(String, PathBuf)]>,
        seen_stamp: &[u8],
    ) -> Result<String, Error> {
        use sha2::Digest as _;
        let mut hash = sha2::Sha256::new();
        let mut field = |bytes: &[u8]| {
            hash.update((bytes.len() as u64).to_le_bytes());
            hash.update(bytes);
        };
        // v3: scripts run under umask 022 (before, the build's umask leaked
        // into the modes of what they made, and into cached results).
        field(b"nixlayer-script-v3");
        field(script.as_bytes());
        field(self.store_dir.as_str().as_bytes());
        let owner = |o: &Owner| format!("{}:{}:{}:{}", o.uid, o.gid, o.uname, o.gname);
        field(owner(&self.store_owner).as_bytes());
        match chroot {
            None => field(b"fakeroot"),
            Some(visible) => {
                field(b"chroot");
                field(&(visible.len() as u64).to_le_bytes());
                for (path, disk) in visible {
                    field(path.as_bytes());
                    field(disk.as_os_str().as_bytes());
                }
            }
        }
        field(seen_stamp);
        for (comps, entry) in &self.entries {
            field(&comps.join(&b'/'));
            field(format!("{:o}", entry.mode).as_bytes());
            field(owner(&entry.owner).as_bytes());
            match &entry.kind {
                EntryKind::Directory => field(b"d"),
                EntryKind::Symlink(target) => {
                    field(b"l");
                    field(target);
                }
                EntryKind::File { data, .. } => {
                    field(b"f");
                    match data {
                        FileData::Inline(bytes) => field(bytes),
                        FileData::Disk(file) => field(&fs::read(file).map_err(io_at(file))?),
                    }
                }
            }
        }
        Ok(hash.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The tree filed at `entry`, if it is there and well-formed: the
    /// listing, then each regular file's bytes in listing order, each
    /// part preceded by its length (8 bytes, little-endian). A format of
    /// our own: two length-prefixed runs of bytes need no crate.
    fn cached_tree(
        &self,
        entry: &Path,
        names: &BTreeMap<u64, String>,
        groups: &BTreeMap<u64, String>,
    ) -> Option<Self> {
        let bytes = fs::read(entry).ok()?;
        let mut rest: &[u8] = &bytes;
        let take = |rest: &mut &[u8]| -> Option<Vec<u8>> {
            let (len, tail) = rest.split_first_chunk::<8>()?;
            let len = usize::try_from(u64::from_le_bytes(*len)).ok()?;
            if tail.len() < len {
                return None;
            }
            let (part, tail) = tail.split_at(len);
            *rest = tail;
            Some(part.to_vec())
        };
        let listing = take(&mut rest)?;
        let mut read = |_: &[u8]| {
            take(&mut rest).ok_or_else(|| script_error("truncated cache entry".to_owned()))
        };
        let tree = self
            .tree_of_listing(&listing, names, groups, &mut read)
            .ok()?;
        rest.is_empty().then_some(tree)
    }

    /// Runs the script (see [`CustomisationTree::run_script`]), writing
    /// what the cache files to `record` when given.
    fn execute_script(
        &self,
        script: &str,
        work: &Path,
        chroot: Option<&[(String, PathBuf)]>,
        record: Option<&mut tempfile::NamedTempFile>,
        names: &BTreeMap<u64, String>,
        groups: &BTreeMap<u64, String>,
    ) -> Result<Self, Error> {
        let (temp, _pending) = crate::cleanup::Pending::create(
            || {
                tempfile::Builder::new()
                    .prefix(".nixlayer-run-")
                    .tempdir_in(work)
            },
            |d| d.path(),
        )
        .map_err(io_at(work))?;
        let stage = temp.path().join("root");
        fs::create_dir(&stage).map_err(io_at(&stage))?;

        // The tree on disk; owners and modes as commands for the session.
        let mut preamble = b"set -e\n".to_vec();
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

        if let Some(visible) = chroot {
            let created = run_in_chroot(temp.path(), &stage, visible)?;
            // The mount points go, deepest first; one the script filled
            // stays and the tree refuses it as inside the store directory.
            for dir in created.iter().rev() {
                let _ = fs::remove_dir(dir);
            }
            let output = Command::new("find")
                .args([".", "-mindepth", "1", "-printf"])
                .arg("%y\\0%m\\0%U\\0%G\\0%P\\0%l\\0")
                .current_dir(&stage)
                .env("LC_ALL", "C")
                .stdin(Stdio::null())
                .output()
                .map_err(|e| script_error(format!("could not start `find`: {e}")))?;
            if !output.status.success() {
                return Err(failed("find", &output));
            }
            return self.tree_from_stage(&stage, &output.stdout, names, groups, record);
        }

        let mut command = Command::new("fakeroot");
        command
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
            .stdin(Stdio::null());
        let output = output_killing_leftovers(&mut command, temp.path())
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
            return Err(failed("the `[customisation] run` script", &output));
        }
        let listing = fs::read(&list).map_err(io_at(&list))?;
        self.tree_from_stage(&stage, &listing, names, groups, record)
    }

    /// The tree `listing` names in `stage`, filed to `record` as
    /// [`CustomisationTree::cached_tree`] reads it back.
    fn tree_from_stage(
        &self,
        stage: &Path,
        listing: &[u8],
        names: &BTreeMap<u64, String>,
        groups: &BTreeMap<u64, String>,
        mut record: Option<&mut tempfile::NamedTempFile>,
    ) -> Result<Self, Error> {
        use std::io::Write as _;
        let put = |record: &mut Option<&mut tempfile::NamedTempFile>, part: &[u8]| {
            if let Some(file) = record {
                let len = (part.len() as u64).to_le_bytes();
                if file
                    .write_all(&len)
                    .and_then(|()| file.write_all(part))
                    .is_err()
                {
                    // An empty entry is a miss: no entry rather than half of one.
                    let _ = file.as_file().set_len(0);
                    *record = None;
                }
            }
        };
        put(&mut record, listing);
        let mut read = |rel: &[u8]| {
            let path = stage.join(std::ffi::OsStr::from_bytes(rel));
            let data = fs::read(&path).map_err(io_at(&path))?;
            put(&mut record, &data);
            Ok(data)
        };
        self.tree_of_listing(listing, names, groups, &mut read)
    }

    /// The tree `find -printf` listed in `stage`.
    fn tree_of_listing(
        &self,
        listing: &[u8],
        names: &BTreeMap<u64, String>,
        groups: &BTreeMap<u64, String>,
        read: &mut FileReader<'_>,
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
                    let data = read(rel)?;
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

    fn tree() -> CustomisationTree {
        CustomisationTree::new(
            crate::nix::StoreDir::new("/nix/store").unwrap(),
            Owner::default(),
        )
    }

    #[test]
    fn a_truncated_cache_entry_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path().join("e");
        let listing = b"f\x00644\x000\x000\x00a\x00\x00";
        let mut bytes = (listing.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(listing);
        bytes.extend_from_slice(&3u64.to_le_bytes());
        bytes.extend_from_slice(b"abc");
        fs::write(&entry, &bytes).unwrap();
        let (names, groups) = tree().owner_names();
        assert!(tree().cached_tree(&entry, &names, &groups).is_some());
        for len in 0..bytes.len() {
            fs::write(&entry, &bytes[..len]).unwrap();
            assert!(
                tree().cached_tree(&entry, &names, &groups).is_none(),
                "{len}"
            );
        }
        // Trailing bytes: not what was written either.
        fs::write(&entry, [&bytes[..], b"x"].concat()).unwrap();
        assert!(tree().cached_tree(&entry, &names, &groups).is_none());
    }

    proptest::proptest! {
        /// Whatever is in the cache directory, reading it never panics.
        #[test]
        fn any_cache_entry_is_read_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let dir = tempfile::tempdir().unwrap();
            let entry = dir.path().join("e");
            fs::write(&entry, &bytes).unwrap();
            let (names, groups) = tree().owner_names();
            let _ = tree().cached_tree(&entry, &names, &groups);
        }
    }

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
