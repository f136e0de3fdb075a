//! `[customisation] run` (issue 13): a script over the customisation tree
//! as fake root (Debian's `fakeroot`): its owners and modes in the layer
//! and in a running container, no `/proc`/`/sys`/`/dev`, the same bytes
//! twice; a missing `fakeroot`, a failing script and a write into the
//! store are errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support;
use crate::util::{self, docker, docker_ready, nixlayer, run};

const SCRIPT: &str =
    "mkdir -p data && chown 1000:1000 data && chmod 0700 data && ln -s /data srv\n\
echo hi > data/f && chmod 0640 data/f\n\
mkdir -p proc/1 sys dev && touch dev/null\n\
chmod 0600 etc/motd\n";

fn manifest(dir: &Path, roots: &str, script: &str, extra: &str) -> PathBuf {
    util::write(
        dir,
        "image.toml",
        &format!(
            "name = \"nixlayer-test/script\"\ntag = \"t\"\n[closure]\nroots = [{roots}]\n{extra}\n\
             [customisation]\nrun = '''\n{script}'''\n\
             [[customisation.files]]\npath = \"/etc/motd\"\ntext = \"hello\\n\"\n"
        ),
    )
}

/// The busybox fixture, when `tool` (which the test needs too) is on
/// PATH; `None` (skip) outside CI when either is missing.
fn busybox_and(tool: &str) -> Option<PathBuf> {
    if !util::require_tool(tool) {
        return None;
    }
    util::nix_fixture("busybox")
}

/// `tar -tv` of the top layer of a docker-archive.
fn top_layer_listing(archive: &Path) -> String {
    support::layer_listing(&support::top_layer(archive))
}

/// Builds `m` into `dir/image.tar` and again into `dir/again.tar`, each
/// with its own cache (so the script really runs twice), and asserts the
/// same bytes; the first archive.
fn built_twice(m: &Path, dir: &Path) -> PathBuf {
    let build = |name: &str, cache: &str| {
        let archive = dir.join(name);
        run(
            nixlayer()
                .env("XDG_CACHE_HOME", dir.join(cache))
                .arg("build")
                .arg(m)
                .arg("-o")
                .arg(&archive),
            0,
        );
        archive
    };
    let archive = build("image.tar", "cache-one");
    let again = build("again.tar", "cache-two");
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&again).unwrap(),
        "two runs, the same bytes"
    );
    archive
}

/// What both scripts make, in the top layer's listing: owners and modes
/// of `/data`, `/data/f`, `/etc/motd`, the `/srv` link; nothing under
/// `absent`; every entry at the build's mtime (the default, 1970-01-01
/// 00:00:01).
fn assert_the_scripts_tree(listing: &str, absent: &[&str]) {
    let entry = |name: &str| support::listed(listing, name);
    assert!(
        entry("/data/").starts_with("drwx------ 1000/1000 "),
        "{listing}"
    );
    assert!(entry("/data/f").starts_with("-rw-r----- 0/0 "), "{listing}");
    assert!(
        entry("/etc/motd").starts_with("-rw------- 0/0 "),
        "{listing}"
    );
    assert!(entry("/srv").ends_with("/srv -> /data"), "{listing}");
    for absent in absent {
        assert!(
            !listing.contains(&format!(" {absent}/")),
            "{absent}:\n{listing}"
        );
    }
    assert!(
        listing.lines().all(|l| l.contains(" 1970-01-01 00:00 ")),
        "{listing}"
    );
}

#[test]
fn a_script_sets_owners_and_modes_as_fake_root() {
    let Some(busybox) = busybox_and("fakeroot") else {
        return;
    };
    let tmp = util::temp_dir();
    let b = format!("{}/bin/busybox", busybox.display());
    let extra = format!(
        "[config]\nEntrypoint = [\"{b}\", \"sh\", \"-c\", \"{b} stat -c '%a %u:%g %n' /data /data/f /etc/motd; {b} readlink /srv\"]"
    );
    let m = manifest(
        tmp.path(),
        &format!("\"{}\"", busybox.display()),
        SCRIPT,
        &extra,
    );
    let archive = built_twice(&m, tmp.path());

    let listing = top_layer_listing(&archive);
    assert_the_scripts_tree(&listing, &["/proc", "/sys", "/dev"]);
    assert!(
        support::listed(&listing, "/srv").starts_with("lrwxrwxrwx 0/0 "),
        "{listing}"
    );

    if !docker_ready() {
        return;
    }
    docker(&["load", "-i", archive.to_str().unwrap()]);
    let out = util::docker_run("nixlayer-test/script:t");
    assert_eq!(
        out,
        "700 1000:1000 /data\n640 0:0 /data/f\n600 0:0 /etc/motd\n/data\n"
    );
}

#[test]
fn script_failures_are_clear_errors() {
    if !util::require_tool("fakeroot") {
        return;
    }
    let tmp = util::temp_dir();
    for (script, says) in [
        ("echo oops >&2\nexit 3\n", "oops"),
        ("mkdir -p nix/store/x\n", "inside the store directory"),
        ("mkfifo fifo\n", "fifo"),
    ] {
        let m = manifest(tmp.path(), "", script, "");
        let stderr = support::failed_build(&mut nixlayer(), &m, &tmp.path().join("x.tar"));
        assert!(stderr.contains(says), "{script}: {stderr}");
    }
    // Without `fakeroot` on PATH: the package to install is named.
    let m = manifest(tmp.path(), "", "true\n", "");
    let stderr = support::failed_build(
        nixlayer().env("PATH", "/nonexistent"),
        &m,
        &tmp.path().join("x.tar"),
    );
    assert!(stderr.contains("Debian package `fakeroot`"), "{stderr}");
}

/// The issue's script with absolute paths, run inside the image root by a
/// store path's shell (the static busybox, which fakeroot cannot reach).
const CHROOT_SCRIPT: &str =
    "mkdir -p /data && chown 1000:1000 /data && chmod 0700 /data && ln -s /data /srv\n\
echo hi > /data/f && chmod 0640 /data/f\n\
chmod 0600 /etc/motd\n\
mkdir -p /proc/1 /sys /dev && echo x > /dev/null\n\
test \"$(cat /etc/motd)\" = hello\n";

fn chroot_manifest(dir: &Path, busybox: &Path, closure_extra: &str) -> PathBuf {
    let b = format!("{}/bin/busybox", busybox.display());
    util::write(
        dir,
        "image.toml",
        &format!(
            "name = \"nixlayer-test/chroot\"\ntag = \"t\"\n[closure]\nroots = [\"{}\"]\n{closure_extra}\n\
             [config]\nEntrypoint = [\"{b}\", \"sh\", \"-c\", \"{b} stat -c '%a %u:%g %n' /data /data/f /etc/motd; {b} readlink /srv; {b} ls /\"]\n\
             [customisation]\nchroot = true\nrun = '''\n{CHROOT_SCRIPT}\
             # the store is there, read-only\n\
             test -x {b}\nif touch {}/x; then exit 9; fi\n'''\n\
             [[customisation.files]]\npath = \"/etc/motd\"\ntext = \"hello\\n\"\n",
            busybox.display(),
            busybox.display(),
        ),
    )
}

/// Every layer's `tar -tv` listing, joined.
fn all_layers_listing(archive: &Path) -> String {
    support::archive_layers(archive)
        .iter()
        .map(|layer| support::layer_listing(layer))
        .collect()
}

#[test]
fn a_chroot_script_uses_absolute_paths_and_a_store_shell() {
    let Some(busybox) = busybox_and("unshare") else {
        return;
    };
    let busybox = std::fs::canonicalize(busybox).unwrap();
    let tmp = util::temp_dir();
    let m = chroot_manifest(tmp.path(), &busybox, "");
    let archive = built_twice(&m, tmp.path());

    let listing = top_layer_listing(&archive);
    assert_the_scripts_tree(&listing, &["/proc", "/sys", "/dev", "/nix"]);

    // With `include_store_paths = false`, no store path (nor the mount
    // points the chroot bound them on) reaches any layer.
    let m = chroot_manifest(tmp.path(), &busybox, "include_store_paths = false");
    let bare = tmp.path().join("bare.tar");
    run(nixlayer().arg("build").arg(&m).arg("-o").arg(&bare), 0);
    let listing = all_layers_listing(&bare);
    assert!(listing.contains(" /data/"), "{listing}");
    assert!(!listing.contains("/nix"), "{listing}");

    if !docker_ready() {
        return;
    }
    docker(&["load", "-i", archive.to_str().unwrap()]);
    let out = util::docker_run("nixlayer-test/chroot:t");
    assert!(
        out.starts_with("700 1000:1000 /data\n640 0:0 /data/f\n600 0:0 /etc/motd\n/data\n"),
        "{out}"
    );
}

#[test]
fn chroot_failures_are_clear_errors() {
    let Some(busybox) = busybox_and("unshare") else {
        return;
    };
    let busybox = std::fs::canonicalize(busybox).unwrap();
    let tmp = util::temp_dir();
    let out_path = tmp.path().join("x.tar");
    let build = |m: &Path| support::failed_build(&mut nixlayer(), m, &out_path);
    let write = |roots: &str, custom: &str| {
        util::write(
            tmp.path(),
            "image.toml",
            &format!(
                "name = \"nixlayer-test/chroot\"\n[closure]\nroots = [{roots}]\n[customisation]\n{custom}\n"
            ),
        )
    };
    let with_busybox = format!("\"{}\"", busybox.display());

    // Writing into the store directory (beside the read-only store paths).
    let m = write(
        &with_busybox,
        "chroot = true\nrun = 'mkdir -p /nix/store/x'",
    );
    let stderr = build(&m);
    assert!(stderr.contains("inside the store directory"), "{stderr}");
    // A store path is read-only.
    let m = write(
        &with_busybox,
        &format!("chroot = true\nrun = 'touch {}/x'", busybox.display()),
    );
    let stderr = build(&m);
    assert!(stderr.contains("Read-only file system"), "{stderr}");
    // No shell anywhere.
    let m = write("", "chroot = true\nrun = 'true'");
    let stderr = build(&m);
    assert!(stderr.contains("needs a shell"), "{stderr}");
    // `chroot` without a script.
    let m = write("", "chroot = true");
    let stderr = build(&m);
    assert!(stderr.contains("no `customisation.run`"), "{stderr}");
    // Without `unshare` on PATH: the package to install is named (no
    // roots, so no `nix-store` is needed first; a `/bin/sh` of the tree's).
    let m = write(
        "",
        "chroot = true\nrun = 'true'\n[[customisation.files]]\npath = \"/bin/sh\"\ntext = \"\"",
    );
    let stderr = support::failed_build(nixlayer().env("PATH", "/nonexistent"), &m, &out_path);
    assert!(stderr.contains("Debian package `util-linux`"), "{stderr}");

    // Not root: refused, saying why, rather than other owners.
    if unsafe_is_root() {
        use std::os::unix::fs::PermissionsExt as _;
        use std::os::unix::process::CommandExt as _;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        // A copy the other user can reach: the checkout (and the binary in
        // its target/) may sit below a directory only root may enter.
        let binary = tmp.path().join("nixlayer");
        std::fs::copy(env!("CARGO_BIN_EXE_nixlayer"), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = run(
            Command::new(&binary)
                .env("TZ", "UTC")
                .env("LC_ALL", "C")
                .env("NIX_CONFIG", util::NIX_CONFIG)
                .uid(65534)
                .gid(65534)
                .env("XDG_CACHE_HOME", tmp.path().join("cache"))
                .env("TMPDIR", tmp.path())
                .arg("build")
                .arg(&m)
                .arg("-o")
                .arg(&out_path),
            1,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("needs the build to run as root"),
            "{stderr}"
        );
    }
}

/// Whether the tests run as root (as in CI), by the owner of a new file.
fn unsafe_is_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    let tmp = util::temp_dir();
    std::fs::metadata(tmp.path()).unwrap().uid() == 0
}

#[test]
fn a_script_runs_once_for_the_same_inputs() {
    if !util::require_tool("fakeroot") {
        return;
    }
    let tmp = util::temp_dir();
    // The script notes each run in a file outside the image.
    let counter = tmp.path().join("runs");
    let script = format!("echo run >> '{}'\nmkdir -p data\n", counter.display());
    let out_path = tmp.path().join("x.tar");
    let runs = || {
        std::fs::read_to_string(&counter)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let build = |m: &Path| {
        run(nixlayer().arg("build").arg(m).arg("-o").arg(&out_path), 0);
        std::fs::read(&out_path).unwrap()
    };

    let m = manifest(tmp.path(), "", &script, "");
    let first = build(&m);
    assert_eq!(runs(), 1);
    assert_eq!(build(&m), first, "a cached run gives the same bytes");
    assert_eq!(runs(), 1, "the same script and tree: not run again");

    // Another script text runs again.
    let m = manifest(tmp.path(), "", &format!("{script}# changed\n"), "");
    build(&m);
    assert_eq!(runs(), 2);
    // Another tree under the same script runs again.
    let m = util::write(
        tmp.path(),
        "image.toml",
        &std::fs::read_to_string(&m)
            .unwrap()
            .replace("text = \"hello\\n\"", "text = \"bye\\n\""),
    );
    build(&m);
    assert_eq!(runs(), 3);
}

/// A chroot script reads store paths, so its cached result is keyed by
/// their content too: a fixture store under `store.root` edited in place
/// runs the script again instead of reusing what it made before.
#[test]
fn a_chroot_script_runs_again_when_a_store_path_it_sees_changes() {
    let Some(busybox) = busybox_and("unshare") else {
        return;
    };
    let busybox = std::fs::canonicalize(busybox).unwrap();
    let tmp = util::temp_dir();
    let store = tmp.path().join("root/nix/store");
    std::fs::create_dir_all(&store).unwrap();
    let shell_path = busybox.to_str().unwrap().to_owned();
    let copied = store.join(busybox.file_name().unwrap());
    let status = Command::new("cp")
        .arg("-a")
        .arg(&busybox)
        .arg(&copied)
        .status()
        .unwrap();
    assert!(status.success());
    let data = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-data";
    let data_dir = store.join("0123456789abcdfghijklmnpqrsvwxyz-data");
    std::fs::create_dir(&data_dir).unwrap();
    std::fs::write(data_dir.join("msg"), "one\n").unwrap();
    // The graph's hashes and sizes only order layers here.
    let h = format!("sha256:{}", "0".repeat(52));
    util::write(
        tmp.path(),
        "graph.json",
        &format!(
            r#"[{{"path":"{shell_path}","narHash":"{h}","narSize":1,"references":[]}},{{"path":"{data}","narHash":"{h}","narSize":1,"references":["{shell_path}"]}}]"#
        ),
    );
    let m = util::write(
        tmp.path(),
        "image.toml",
        &format!(
            "name = \"nixlayer-test/chroot-inputs\"\ntag = \"t\"\n[store]\nroot = \"root\"\n\
             [closure]\nroots = [\"{data}\"]\nsource = {{ graph = \"graph.json\" }}\n\
             [customisation]\nchroot = true\nrun = '''\n\
             {shell_path}/bin/cat {data}/msg > /copy\n'''\n"
        ),
    );
    let cache = tmp.path().join("cache");
    let copy = |name: &str| {
        let archive = tmp.path().join(name);
        run(
            nixlayer()
                .env("XDG_CACHE_HOME", &cache)
                .arg("build")
                .arg(&m)
                .arg("-o")
                .arg(&archive),
            0,
        );
        support::layer_file(&support::top_layer(&archive), "/copy")
    };
    assert_eq!(copy("one.tar"), "one\n");
    // Edited in place, same size: the stamp changes, the result must too.
    std::fs::write(data_dir.join("msg"), "two\n").unwrap();
    assert_eq!(copy("two.tar"), "two\n", "a stale cached script result");
}

/// A job the script leaves in the background neither holds the build
/// until it ends (it kept the output pipes open) nor outlives it: it is
/// killed with the script's process group, as Nix kills a builder's.
#[test]
fn a_background_job_of_the_script_does_not_hold_the_build() {
    if !util::require_tool("fakeroot") {
        return;
    }
    let tmp = util::temp_dir();
    let marker = tmp.path().join("still-running");
    let script = format!("(sleep 8; touch '{}') &\ntouch x\n", marker.display());
    let m = manifest(tmp.path(), "", &script, "");
    let archive = tmp.path().join("image.tar");
    let started = std::time::Instant::now();
    run(
        nixlayer()
            .env("XDG_CACHE_HOME", tmp.path().join("cache"))
            .arg("build")
            .arg(&m)
            .arg("-o")
            .arg(&archive),
        0,
    );
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(7), "took {took:?}");
    let listing = top_layer_listing(&archive);
    assert!(
        support::listed(&listing, "/x").starts_with("-rw-r--r-- 0/0 "),
        "{listing}"
    );
    std::thread::sleep(std::time::Duration::from_secs(9).saturating_sub(took));
    assert!(!marker.exists(), "the background job outlived the build");
}

/// What the script makes has the same modes whatever the build's umask
/// (it runs under 022, as a Nix builder does): the same manifest built
/// under umask 077 gives the same bytes.
#[test]
fn a_scripts_new_files_do_not_follow_the_builds_umask() {
    if !util::require_tool("fakeroot") {
        return;
    }
    let tmp = util::temp_dir();
    let m = manifest(
        tmp.path(),
        "",
        "mkdir -p data/sub && echo hi > data/f\n",
        "",
    );
    let build = |umask: &str| {
        let archive = tmp.path().join(format!("image-{umask}.tar"));
        let template = nixlayer();
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("umask {umask}; exec \"$0\" \"$@\""))
            .arg(template.get_program());
        for (key, value) in template.get_envs() {
            if let Some(v) = value {
                cmd.env(key, v);
            }
        }
        cmd.env("XDG_CACHE_HOME", tmp.path().join(format!("cache-{umask}")))
            .arg("build")
            .arg(&m)
            .arg("-o")
            .arg(&archive);
        run(&mut cmd, 0);
        archive
    };
    let usual = build("022");
    let strict = build("077");
    let listing = top_layer_listing(&strict);
    assert!(
        support::listed(&listing, "/data/sub/").starts_with("drwxr-xr-x 0/0 "),
        "{listing}"
    );
    assert!(
        support::listed(&listing, "/data/f").starts_with("-rw-r--r-- 0/0 "),
        "{listing}"
    );
    assert!(
        std::fs::read(&usual).unwrap() == std::fs::read(&strict).unwrap(),
        "umask 077 changed the image"
    );
}
