//! Image content (SPEC §4, §5): the customisation layer, permission rules,
//! `[owner]`, the Nix database, base images, `created` vs `mtime`,
//! `include_store_paths = false`, and the errors of these sections.
//! Real tools throughout: `nix-build`, `nix-store`, docker, GNU tar, gzip, zstd.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::{self, docker, docker_ready, docker_run, nixlayer, run};

fn build(manifest: &Path, out: &Path) {
    run(nixlayer().arg("build").arg(manifest).arg("-o").arg(out), 0);
}

/// A member of a tar file, read with GNU tar.
fn tar_member(archive: &Path, member: &str) -> Vec<u8> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg(member)
        .output()
        .expect("run tar");
    assert!(out.status.success(), "tar -xOf {member}");
    out.stdout
}

/// The docker-archive's `manifest.json` entry and config.
fn read_image(archive: &Path) -> (Value, Value) {
    let manifest: Value = serde_json::from_slice(&tar_member(archive, "manifest.json")).unwrap();
    let entry = manifest[0].clone();
    let config: Value =
        serde_json::from_slice(&tar_member(archive, entry["Config"].as_str().unwrap())).unwrap();
    (entry, config)
}

fn layer_members(entry: &Value) -> Vec<String> {
    entry["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

fn diff_ids(config: &Value) -> Vec<String> {
    config["rootfs"]["diff_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap().to_owned())
        .collect()
}

/// Every entry name of every layer of `archive`, as GNU tar lists them.
fn all_entry_names(archive: &Path) -> Vec<String> {
    let (entry, _) = read_image(archive);
    let mut names = Vec::new();
    for member in layer_members(&entry) {
        let layer = tar_member(archive, &member);
        let mut list = Command::new("tar")
            .args(["-t", "-P", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(list.stdin.as_mut().unwrap(), &layer).unwrap();
        drop(list.stdin.take());
        let out = list.wait_with_output().unwrap();
        assert!(out.status.success());
        names.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned),
        );
    }
    names
}

/// Unpacks every layer of `archive`, bottom first, into `root` (what a
/// container runtime does, minus whiteouts, which nixlayer never writes).
fn unpack(archive: &Path, root: &Path) {
    let (entry, _) = read_image(archive);
    std::fs::create_dir_all(root).unwrap();
    for member in layer_members(&entry) {
        let layer = tar_member(archive, &member);
        // Absolute names made relative to `root`; `S`: link targets untouched.
        let mut x = Command::new("tar")
            .args(["-x", "-P", "--transform", "s|^/||S", "-C"])
            .arg(root)
            .arg("-f")
            .arg("-")
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        std::io::Write::write_all(x.stdin.as_mut().unwrap(), &layer).unwrap();
        drop(x.stdin.take());
        assert!(x.wait().unwrap().success(), "unpack {member}");
    }
}

fn quoted_list(paths: &[String]) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| format!("\"{p}\"")).collect();
    format!("[{}]", quoted.join(", "))
}

/// The closure of the Debian python fixture, from the host store.
///
/// ```text
/// python3-minimal ─► python3.11-minimal ─► libpython3.11-minimal ─► libc6
///                            ├──────────► libexpat1 ──────────────► libc6
///                            └──────────► zlib1g ─────────────────► libc6
/// ```
fn python_closure() -> Option<(PathBuf, Vec<String>)> {
    let python = util::nix_fixture("debian-python")?;
    let out = util::nix("nix-store", &["-qR", python.to_str().unwrap()]);
    let mut closure: Vec<String> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    closure.sort();
    Some((python, closure))
}

/// The python image: the whole closure merged into `/`, owned by uid 1000
/// with the Nix database, and permission rules on the customisation layer
/// and, with `store_rule`, on a store layer (which may change a file's
/// executable bit, so its NAR hash: not for the `nix-store --verify` test).
fn python_manifest(dir: &Path, python: &Path, closure: &[String], store_rule: bool) -> PathBuf {
    let store_rule = if store_rule {
        "[[customisation.permissions]]\npath = \"/nix/store/*-deb-python3-minimal/usr/share/**\"\nuid = 4242\nfile_mode = \"0640\"\n"
    } else {
        ""
    };
    util::write(
        dir,
        "image.toml",
        &format!(
            r#"
name = "nixlayer-test/python"
tag = "content"
mtime = "2024-01-01T00:00:00Z"

[closure]
roots = ["{python}"]
include_nix_db = true

[owner]
uid = 1000
gid = 1000
uname = "user"
gname = "user"

[customisation]
contents = {contents}

[[customisation.dirs]]
path = "/tmp"
mode = "1777"

[[customisation.dirs]]
path = "/srv/data"

[[customisation.files]]
path = "/etc/passwd"
text = "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/sh\n"

[[customisation.permissions]]
path = "/srv/**"
uid = 1000
gid = 100
dir_mode = "0750"

{store_rule}
"#,
            python = python.display(),
            contents = quoted_list(closure),
        ),
    )
}

/// A dynamically linked program (Debian's python3 with glibc) runs from
/// store paths merged into `/` with merged-/usr links; as uid 1000 it can
/// write the store and the Nix database; permission rules show in `stat`.
#[test]
fn python_from_debian_closure_runs_as_root_and_as_the_owner() {
    let Some((python, closure)) = python_closure() else {
        return;
    };
    if !docker_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let manifest = python_manifest(tmp.path(), &python, &closure, true);
    let archive = tmp.path().join("python.tar");
    build(&manifest, &archive);
    let image = "nixlayer-test/python:content";
    docker(&["load", "-i", archive.to_str().unwrap()]);
    let run_py = |user: &str, code: &str| {
        docker(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--user",
            user,
            image,
            "/usr/bin/python3",
            "-c",
            code,
        ])
    };
    assert_eq!(run_py("0:0", "print(6*7)"), "42\n");

    // Single-user Nix as the owner: the store and the database are writable.
    let writes = r#"
import os
open("/nix/store/created-by-user", "w").write("x")
with open("/nix/var/nix/db/db.sqlite", "r+b") as db:
    head = db.read(16)
    db.seek(0)
    db.write(head)
open("/nix/var/nix/db/journal-test", "w").write("x")
print(head[:15].decode(), os.getuid())
"#;
    assert_eq!(run_py("1000:1000", writes), "SQLite format 3 1000\n");

    let stats = r#"
import os, glob
def show(p):
    s = os.lstat(p)
    print(p.split("/")[-1], oct(s.st_mode & 0o7777), s.st_uid, s.st_gid)
show("/srv")
show("/srv/data")
show("/tmp")
show("/nix/store")
show(glob.glob("/nix/store/*-deb-python3-minimal/usr/share/python3/py3versions.py")[0])
show(glob.glob("/nix/store/*-deb-python3-minimal/usr/bin/py3compile")[0])
"#;
    assert_eq!(
        run_py("0:0", stats),
        // `/srv/**` is what is below `/srv`, not `/srv` itself.
        "srv 0o755 0 0\n\
         data 0o750 1000 100\n\
         tmp 0o1777 0 0\n\
         store 0o755 1000 1000\n\
         py3versions.py 0o640 4242 1000\n\
         py3compile 0o555 1000 1000\n"
    );
    let _ = Command::new("docker").args(["rmi", "-f", image]).output();
}

/// The unpacked image is a valid Nix store for the real `nix-store`: every
/// path's contents match the registered narHash, and the registered closure
/// equals the host's.
#[test]
fn nix_db_passes_nix_store_verify_and_lists_the_host_closure() {
    let Some((python, closure)) = python_closure() else {
        return;
    };
    let tmp = util::temp_dir();
    let manifest = python_manifest(tmp.path(), &python, &closure, false);
    let archive = tmp.path().join("python.tar");
    build(&manifest, &archive);
    let root = tmp.path().join("root");
    unpack(&archive, &root);
    assert_eq!(
        std::fs::read_to_string(root.join("nix/var/nix/db/schema")).unwrap(),
        "10"
    );
    let gcroot = root
        .join("nix/var/nix/gcroots/docker")
        .join(python.file_name().unwrap());
    assert_eq!(std::fs::read_link(gcroot).unwrap(), python);

    let store = format!("local?root={}", root.display());
    util::nix(
        "nix-store",
        &["--store", &store, "--verify", "--check-contents"],
    );
    let listed = util::nix(
        "nix-store",
        &["--store", &store, "-qR", python.to_str().unwrap()],
    );
    let mut listed: Vec<String> = String::from_utf8(listed)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    assert_eq!(listed, closure);
    // The unpacked store is read-only as Nix leaves it; let the temp dir go.
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&root)
        .status();
}

/// The embedded example's store, usable without Nix.
fn example(dir: &Path, extra_top: &str, extra: &str) -> PathBuf {
    let repo = util::repo();
    util::write(
        dir,
        "image.toml",
        &format!(
            r#"
name = "nixlayer-test/content"
tag = "t"
{extra_top}

{closure}{extra}
"#,
            closure = crate::support::example_closure(&repo.join("fixtures/example/store")),
        ),
    )
}

#[test]
fn created_now_with_fixed_mtime_changes_only_the_config() {
    let tmp = util::temp_dir();
    let manifest = example(
        tmp.path(),
        "created = \"now\"\nmtime = \"2024-01-01T00:00:00Z\"",
        "[[customisation.files]]\npath = \"/etc/motd\"\ntext = \"hi\\n\"\n",
    );
    let (a, b) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
    let first = run(nixlayer().arg("build").arg(&manifest).arg("-o").arg(&a), 0);
    assert!(
        !String::from_utf8_lossy(&first.stderr).contains("every layer digest changes"),
        "no warning with a fixed mtime"
    );
    std::thread::sleep(std::time::Duration::from_millis(1100));
    build(&manifest, &b);
    let ((_, ca), (_, cb)) = (read_image(&a), read_image(&b));
    assert_ne!(ca["created"], cb["created"]);
    assert_eq!(diff_ids(&ca), diff_ids(&cb));
    assert_eq!(
        diff_ids(&ca).len(),
        4,
        "three store layers and the customisation layer"
    );
}

#[test]
fn without_store_paths_no_store_entry_in_any_layer() {
    let tmp = util::temp_dir();
    let manifest = example(
        tmp.path(),
        "",
        r#"include_store_paths = false
include_nix_db = true

[customisation]
contents = ["/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3"]

[[customisation.symlinks]]
path = "/bin/serve"
target = "/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3/bin/hello"
"#,
    );
    let archive = tmp.path().join("image.tar");
    build(&manifest, &archive);
    let names = all_entry_names(&archive);
    assert!(names.iter().any(|n| n == "/bin/serve"), "{names:?}");
    assert!(names.iter().any(|n| n == "/etc/hello.conf"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "/nix/var/nix/db/db.sqlite"),
        "{names:?}"
    );
    let store: Vec<&String> = names
        .iter()
        .filter(|n| {
            n.trim_start_matches("./")
                .trim_start_matches('/')
                .starts_with("nix/store")
        })
        .collect();
    assert!(store.is_empty(), "store entries: {store:?}");
}

/// A base image built by nixlayer (the hello closure plus a file), and an
/// image on it with a file of its own: plain, gzip and zstd bases give the
/// same image, which runs with files of both and the merged Env.
#[test]
fn image_on_a_base_runs_with_files_of_both_and_merged_env() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let busybox = util::nix_fixture("busybox").unwrap();
    let tmp = util::temp_dir();
    let base_manifest = util::write(
        tmp.path(),
        "base.toml",
        &format!(
            r#"
name = "nixlayer-test/base"
tag = "b"
[closure]
roots = ["{hello}"]
[config]
Env = ["A=base", "PATH=/bin", "KEEP=1"]
Cmd = ["ignored"]
[[customisation.files]]
path = "/etc/base.txt"
text = "from the base\n"
"#,
            hello = hello.display()
        ),
    );
    let base = tmp.path().join("base.tar");
    build(&base_manifest, &base);
    for (tool, ext) in [("gzip", "gz"), ("zstd", "zst")] {
        if !util::require_tool(tool) {
            return;
        }
        let out = Command::new(tool)
            .args(["-c", "-q"])
            .arg(&base)
            .output()
            .unwrap();
        assert!(out.status.success());
        std::fs::write(tmp.path().join(format!("base.tar.{ext}")), out.stdout).unwrap();
    }
    let top = |name: &str, base_file: &str, max_layers: &str| {
        util::write(
            tmp.path(),
            name,
            &format!(
                r#"
name = "nixlayer-test/on-base"
tag = "t"
{max_layers}
[base]
image = "{base_file}"
[closure]
roots = []
[config]
Env = ["B=top", "A=top"]
Entrypoint = ["{busybox}/bin/cat", "/etc/base.txt", "/etc/top.txt"]
[[customisation.files]]
path = "/etc/top.txt"
text = "from the top\n"
"#,
                busybox = busybox.display()
            ),
        )
    };
    let mut archives = Vec::new();
    for base_file in ["base.tar", "base.tar.gz", "base.tar.zst"] {
        let manifest = top(&format!("top-{base_file}.toml"), base_file, "");
        let archive = tmp.path().join(format!("top-{base_file}"));
        build(&manifest, &archive);
        archives.push(std::fs::read(&archive).unwrap());
    }
    assert_eq!(archives[0], archives[1], "gzip base");
    assert_eq!(archives[0], archives[2], "zstd base");

    let top_archive = tmp.path().join("top-base.tar");
    let ((_, base_config), (_, top_config)) = (read_image(&base), read_image(&top_archive));
    let (base_ids, top_ids) = (diff_ids(&base_config), diff_ids(&top_config));
    assert_eq!(top_ids.len(), base_ids.len() + 1);
    assert_eq!(
        top_ids[..base_ids.len()],
        base_ids[..],
        "base layers unchanged"
    );
    assert_eq!(
        top_config["config"]["Env"],
        serde_json::json!(["A=top", "PATH=/bin", "KEEP=1", "B=top"])
    );
    assert!(
        top_config["config"].get("Cmd").is_none(),
        "only Env is inherited"
    );

    // The base's 4 layers and the customisation layer leave no store layer.
    let over = top("over.toml", "base.tar", "max_layers = 5");
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&over)
            .arg("-o")
            .arg(tmp.path().join("over.tar")),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("use 5 layers") && stderr.contains("at least 1 layer is required"),
        "{stderr}"
    );
    // At `max_layers`' line (it named no line).
    let line = std::fs::read_to_string(&over)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("max_layers"))
        .unwrap()
        + 1;
    let at = format!("{}:{line}:", over.display());
    assert!(stderr.contains(&at), "{stderr:?} should point at {at}");
    assert!(!tmp.path().join("over.tar").exists());

    if !docker_ready() {
        return;
    }
    docker(&["load", "-i", top_archive.to_str().unwrap()]);
    assert_eq!(
        docker_run("nixlayer-test/on-base:t"),
        "from the base\nfrom the top\n"
    );
}

/// Runs `build` expecting exit 1 and no output; the first stderr line.
fn fails(dir: &Path, manifest: &Path) -> String {
    let out_file = dir.join("out.tar");
    let out = run(
        nixlayer()
            .arg("build")
            .arg(manifest)
            .arg("-o")
            .arg(&out_file),
        1,
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!out_file.exists(), "no output on failure");
    let left: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".nixlayer"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
    stderr.lines().next().unwrap_or_default().to_owned()
}

#[test]
fn bad_customisation_values_are_one_located_error() {
    let tmp = util::temp_dir();
    let cases = [
        (
            "[[customisation.files]]\npath = \"/../etc/passwd\"\ntext = \"x\"\n",
            "escapes `/`",
        ),
        (
            "[[customisation.files]]\npath = \"/etc/app.json\"\nsource = \"missing.json\"\n",
            "missing.json",
        ),
        (
            "[[customisation.dirs]]\npath = \"/tmp\"\nmode = \"rwxrwxrwt\"\n",
            "is not an octal mode",
        ),
        (
            "[[customisation.symlinks]]\npath = \"/nix/store/x\"\ntarget = \"/\"\n",
            "inside the store directory",
        ),
    ];
    for (section, says) in cases {
        let manifest = example(tmp.path(), "", section);
        let first = fails(tmp.path(), &manifest);
        let text = std::fs::read_to_string(&manifest).unwrap();
        // The line of the offending value, counted in the written manifest.
        let line = text
            .lines()
            .position(|l| {
                l.contains("/../etc")
                    || l.contains("missing.json")
                    || l.contains("rwxrwxrwt")
                    || l.contains("/nix/store/x")
            })
            .unwrap()
            + 1;
        let at = format!("{}:{line}:", manifest.display());
        assert!(first.contains(&at), "{first:?} should point at {at}");
        assert!(first.contains(says), "{first:?} should say {says:?}");
    }
}

#[test]
fn contents_collision_names_both_store_paths_unless_first_wins() {
    let Some(a) = util::nix_fixture("motd-a") else {
        return;
    };
    let b = util::nix_fixture("motd-b").unwrap();
    let tmp = util::temp_dir();
    let manifest = |on_collision: &str| {
        util::write(
            tmp.path(),
            "image.toml",
            &format!(
                "name = \"x\"\n[closure]\nroots = []\n[customisation]\ncontents = [\"{}\", \"{}\"]\n{on_collision}",
                a.display(),
                b.display()
            ),
        )
    };
    let first = fails(tmp.path(), &manifest(""));
    assert!(
        first.contains(&format!("{}/etc/motd", a.display()))
            && first.contains(&format!("{}/etc/motd", b.display())),
        "{first}"
    );
    // At the manifest line and column of the later entry.
    let column = format!("contents = [\"{}\", ", a.display()).len() + 1;
    let at = format!("image.toml:5:{column}: ");
    assert!(first.contains(&at), "{first:?} should point at {at}");
    let archive = tmp.path().join("first.tar");
    build(&manifest("on_collision = \"first\"\n"), &archive);
    let root = tmp.path().join("root");
    unpack(&archive, &root);
    assert_eq!(
        std::fs::read_link(root.join("etc/motd")).unwrap(),
        a.join("etc/motd")
    );
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&root)
        .status();
}

/// A `files` or `symlinks` entry at a path `contents` fills (a link to a
/// store file, a merged directory) is an error at the entry's line naming
/// both; it used to replace it silently (a symlink over a merged directory
/// dropping all of it). A directory over a merged directory merges. With
/// `on_collision = "first"` the `contents` one is kept, as for accounts.
#[test]
fn an_entry_over_what_contents_puts_there_is_a_located_error() {
    const APP: &str = "/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3";
    let tmp = util::temp_dir();
    let cases = [
        (
            "[[customisation.files]]\npath = \"/etc/hello.conf\"\ntext = \"mine\"\n",
            "`/etc/hello.conf` in `customisation.files` would replace the link to",
            format!("`{APP}/etc/hello.conf`"),
        ),
        (
            "[[customisation.symlinks]]\npath = \"/bin\"\ntarget = \"/usr/bin\"\n",
            "`/bin` in `customisation.symlinks` would replace the directory there",
            "and everything in it".to_owned(),
        ),
    ];
    for (entry, says, names) in &cases {
        let extra = format!("[customisation]\ncontents = [\"{APP}\"]\n\n[[customisation.dirs]]\npath = \"/etc\"\n\n{entry}");
        let manifest = example(tmp.path(), "", &extra);
        let first = fails(tmp.path(), &manifest);
        let text = std::fs::read_to_string(&manifest).unwrap();
        let path_line = entry.lines().nth(1).unwrap();
        let line = text.lines().position(|l| l == path_line).unwrap() + 1;
        let at = format!("{}:{line}:8: ", manifest.display());
        assert!(first.contains(&at), "{first:?} should point at {at}");
        assert!(
            first.contains(says) && first.contains(names.as_str()),
            "{first}"
        );
    }
    // `on_collision = "first"`: the `contents` link stays.
    let (entry, _, _) = &cases[0];
    let extra =
        format!("[customisation]\non_collision = \"first\"\ncontents = [\"{APP}\"]\n\n{entry}");
    let manifest = example(tmp.path(), "", &extra);
    let archive = tmp.path().join("first.tar");
    build(&manifest, &archive);
    let root = tmp.path().join("root");
    unpack(&archive, &root);
    assert_eq!(
        std::fs::read_link(root.join("etc/hello.conf")).unwrap(),
        Path::new(APP).join("etc/hello.conf")
    );
    let _ = Command::new("chmod")
        .args(["-R", "u+w"])
        .arg(&root)
        .status();
}

/// A symlink or file entry at a directory another entry is in (`files`
/// `/srv/app/config`, then `symlinks` `/srv/app`) is an error at its line;
/// the symlink used to replace the directory, dropping the file silently.
#[test]
fn an_entry_over_the_directory_of_another_is_a_located_error() {
    let tmp = util::temp_dir();
    let extra = "[[customisation.files]]\npath = \"/srv/app/config\"\ntext = \"x\"\n\n\
                 [[customisation.symlinks]]\npath = \"/srv/app\"\ntarget = \"/etc\"\n";
    let manifest = example(tmp.path(), "", extra);
    let first = fails(tmp.path(), &manifest);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let line = text
        .lines()
        .position(|l| l == "path = \"/srv/app\"")
        .unwrap()
        + 1;
    let at = format!("{}:{line}:8: ", manifest.display());
    assert!(first.contains(&at), "{first:?} should point at {at}");
    assert!(
        first.contains("`/srv/app` in `customisation.symlinks` would replace the directory there"),
        "{first}"
    );
}

/// A `contents` store path the closure lacks is an error at its line in
/// `contents`, as the manifest's own errors are; it named no line.
#[test]
fn a_contents_path_outside_the_closure_is_a_located_error() {
    let tmp = util::temp_dir();
    let missing = "/nix/store/00000000000000000000000000000000-missing";
    let extra = format!("[customisation]\ncontents = [\n  \"{missing}\",\n]\n");
    let manifest = example(tmp.path(), "", &extra);
    let first = fails(tmp.path(), &manifest);
    let text = std::fs::read_to_string(&manifest).unwrap();
    let line = text.lines().position(|l| l.contains(missing)).unwrap() + 1;
    let at = format!("{}:{line}:3: ", manifest.display());
    assert!(first.contains(&at), "{first:?} should point at {at}");
    assert!(first.contains(missing), "{first}");
}

/// A permission rule that can only match the customisation layer (its
/// fixed start is outside the store directory) and matches none of it is
/// an error naming the rule, not a silently unchanged owner; rules that
/// match, or could match inside the store, still build.
#[test]
fn a_permission_rule_that_matches_nothing_is_an_error() {
    let tmp = util::temp_dir();
    let typo = "[[customisation.files]]\npath = \"/etc/passwd\"\ntext = \"x\\n\"\n\
                [[customisation.permissions]]\npath = \"/etc/pasword\"\nuid = 1000\n";
    let manifest = example(tmp.path(), "", typo);
    let first = fails(tmp.path(), &manifest);
    assert!(
        first.contains("permission rule `/etc/pasword` matches no entry"),
        "{first}"
    );
    // At the rule's `path` (it named no line).
    let text = std::fs::read_to_string(&manifest).unwrap();
    let line = text.lines().position(|l| l.contains("pasword")).unwrap() + 1;
    let at = format!("{}:{line}:8: ", manifest.display());
    assert!(first.contains(&at), "{first:?} should point at {at}");
    let glob = "[[customisation.permissions]]\npath = \"/home/*/**\"\nmode = \"0700\"\n";
    let first = fails(tmp.path(), &example(tmp.path(), "", glob));
    assert!(first.contains("`/home/*/**`"), "{first}");
    let root = "[[customisation.permissions]]\npath = \"/\"\nmode = \"0700\"\n";
    let first = fails(tmp.path(), &example(tmp.path(), "", root));
    assert!(
        first.contains("permission rule `/` matches no entry"),
        "{first}"
    );

    let fine = "[[customisation.files]]\npath = \"/etc/passwd\"\ntext = \"x\\n\"\n\
                [[customisation.permissions]]\npath = \"/etc/passw?\"\nuid = 1000\n\
                [[customisation.permissions]]\npath = \"/**\"\nmode = \"0755\"\n\
                [[customisation.permissions]]\npath = \"/nix/store/*/**\"\nuid = 1\n";
    let manifest = example(tmp.path(), "", fine);
    run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .arg("-o")
            .arg(tmp.path().join("fine.tar")),
        0,
    );
}

/// The Nix database registers whole closures only: a path of the image
/// whose reference `exclude` left out is an error naming both, not a
/// database that silently drops the reference (`nix copy` from the
/// container would then lose it).
#[test]
fn nix_db_with_an_excluded_reference_is_an_error() {
    let tmp = util::temp_dir();
    let greeting = "/nix/store/7nfhipmb7k7l7rfafbnansncz9730ygj-example-greeting-1.0";
    let extra = format!("exclude = [\"{greeting}\"]\ninclude_nix_db = true\n");
    let manifest = example(tmp.path(), "", &extra);
    let first = fails(tmp.path(), &manifest);
    assert!(
        first.contains("`include_nix_db`")
            && first.contains("example-site-2.1` refers to")
            && first.contains(greeting),
        "{first}"
    );
    // At `include_nix_db = true` (it named no line).
    let text = std::fs::read_to_string(&manifest).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("include_nix_db"))
        .unwrap()
        + 1;
    let at = format!("{}:{line}:18: ", manifest.display());
    assert!(first.contains(&at), "{first:?} should point at {at}");
    // Without the exclusion the same database builds.
    let whole = example(tmp.path(), "", "include_nix_db = true\n");
    run(
        nixlayer()
            .arg("build")
            .arg(&whole)
            .arg("-o")
            .arg(tmp.path().join("whole.tar")),
        0,
    );
}
