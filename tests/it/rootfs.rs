//! `--format rootfs` (issue 13): one tar of the merged filesystem. A base
//! image built by nixlayer gets a hand-made layer that deletes a file
//! (`.wh.` whiteout) and empties a directory (opaque marker); an image on
//! it exported as a rootfs has neither, nor any whiteout, lists every path
//! once in order, is the same bytes twice, and `docker import` runs it.

use std::path::Path;
use std::process::Command;

use nixlayer::oci::Digest;
use nixlayer::tar::{Header, Kind, TarWriter};
use serde_json::Value;

use crate::util::{self, docker, docker_ready, nixlayer, run};

fn build(manifest: &Path, out: &Path, extra: &[&str]) {
    run(
        nixlayer()
            .arg("build")
            .arg(manifest)
            .args(extra)
            .arg("-o")
            .arg(out),
        0,
    );
}

/// A layer tar: `etc/.wh.gone.txt`, `opt/d/` made opaque with a new file.
fn whiteout_layer() -> Vec<u8> {
    let mut tar = TarWriter::new(Vec::new());
    let entry = |name: &str, kind: Kind, data: &[u8]| Header {
        name: name.as_bytes().to_vec(),
        mode: if kind == Kind::Directory {
            0o755
        } else {
            0o644
        },
        kind,
        uid: 0,
        gid: 0,
        uname: String::new(),
        gname: String::new(),
        mtime: 1,
        size: data.len() as u64,
    };
    for (name, kind, data) in [
        ("etc/", Kind::Directory, &b""[..]),
        ("etc/.wh.gone.txt", Kind::Regular, b""),
        ("opt/", Kind::Directory, b""),
        ("opt/d/", Kind::Directory, b""),
        ("opt/d/.wh..wh..opq", Kind::Regular, b""),
        ("opt/d/new.txt", Kind::Regular, b"new\n"),
    ] {
        tar.append(&entry(name, kind, data), data).unwrap();
    }
    tar.finish().unwrap()
}

/// `base` (a docker-archive) with `layer` on top, as a new docker-archive
/// at `out`, unpacked and repacked with GNU tar.
fn add_layer(base: &Path, layer: &[u8], out: &Path) {
    let dir = util::temp_dir();
    util::tool(
        "tar",
        &[
            "-xf",
            base.to_str().unwrap(),
            "-C",
            dir.path().to_str().unwrap(),
        ],
    );
    let manifest_path = dir.path().join("manifest.json");
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let config_name = manifest[0]["Config"].as_str().unwrap().to_owned();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(&config_name)).unwrap()).unwrap();
    let diff_id = Digest::of(layer);
    let member = format!("{}/layer.tar", diff_id.hex());
    std::fs::create_dir_all(dir.path().join(diff_id.hex())).unwrap();
    std::fs::write(dir.path().join(&member), layer).unwrap();
    config["rootfs"]["diff_ids"]
        .as_array_mut()
        .unwrap()
        .push(Value::String(diff_id.prefixed()));
    config["history"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"created": "1970-01-01T00:00:01Z", "comment": "whiteouts"}));
    let config_bytes = serde_json::to_vec(&config).unwrap();
    let new_config = format!("{}.json", Digest::of(&config_bytes).hex());
    std::fs::remove_file(dir.path().join(&config_name)).unwrap();
    std::fs::write(dir.path().join(&new_config), &config_bytes).unwrap();
    manifest[0]["Config"] = Value::String(new_config);
    manifest[0]["Layers"]
        .as_array_mut()
        .unwrap()
        .push(Value::String(member));
    manifest[0]["RepoTags"] = serde_json::json!(["nixlayer-test/whiteout-base:b"]);
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    util::tool(
        "tar",
        &[
            "-cf",
            out.to_str().unwrap(),
            "-C",
            dir.path().to_str().unwrap(),
            ".",
        ],
    );
}

/// `tar -tvf` of `archive`, one line per entry.
fn listing(archive: &Path) -> Vec<String> {
    String::from_utf8(util::tool(
        "tar",
        &["--numeric-owner", "-tvf", archive.to_str().unwrap()],
    ))
    .unwrap()
    .lines()
    .map(str::to_owned)
    .collect()
}

#[test]
fn a_rootfs_applies_whiteouts_and_imports_with_docker() {
    let Some(busybox) = util::nix_fixture("busybox") else {
        return;
    };
    let tmp = util::temp_dir();
    let base_manifest = util::write(
        tmp.path(),
        "base.toml",
        &format!(
            r#"
name = "nixlayer-test/rootfs-base"
tag = "b"
[closure]
roots = ["{busybox}"]
[[customisation.files]]
path = "/etc/keep.txt"
text = "keep\n"
[[customisation.files]]
path = "/etc/gone.txt"
text = "gone\n"
[[customisation.files]]
path = "/opt/d/old.txt"
text = "old\n"
"#,
            busybox = busybox.display()
        ),
    );
    let base = tmp.path().join("base.tar");
    build(&base_manifest, &base, &[]);
    let mid = tmp.path().join("mid.tar");
    add_layer(&base, &whiteout_layer(), &mid);

    let top = util::write(
        tmp.path(),
        "top.toml",
        r#"
name = "nixlayer-test/rootfs"
tag = "t"
[base]
image = "mid.tar"
[closure]
roots = []
[[customisation.files]]
path = "/etc/top.txt"
text = "top\n"
mode = "0600"
[[customisation.permissions]]
path = "/etc/top.txt"
uid = 1000
gid = 1000
"#,
    );
    let rootfs = tmp.path().join("rootfs.tar");
    build(&top, &rootfs, &["--format", "rootfs"]);
    let again = tmp.path().join("again.tar");
    build(&top, &again, &["--format", "rootfs"]);
    assert_eq!(
        std::fs::read(&rootfs).unwrap(),
        std::fs::read(&again).unwrap(),
        "the same bytes twice"
    );

    let lines = listing(&rootfs);
    let names: Vec<&str> = lines
        .iter()
        // mode owner size date time name [-> target]; no name has a space.
        .map(|l| l.split_whitespace().nth(5).unwrap_or(""))
        .collect();
    let text = lines.join("\n");
    for name in [
        "etc/keep.txt",
        "etc/top.txt",
        "opt/d/new.txt",
        "etc/",
        "nix/store/",
    ] {
        assert!(names.contains(&name), "{name} missing:\n{text}");
    }
    assert!(
        names
            .iter()
            .any(|n| n.ends_with("busybox-static-1.35/bin/busybox")),
        "{text}"
    );
    for gone in ["etc/gone.txt", "opt/d/old.txt"] {
        assert!(!names.contains(&gone), "{gone} not deleted:\n{text}");
    }
    assert!(
        !text.contains(".wh."),
        "a whiteout reached the rootfs:\n{text}"
    );
    let top_line = lines.iter().find(|l| l.ends_with(" etc/top.txt")).unwrap();
    assert!(top_line.starts_with("-rw------- 1000/1000 "), "{top_line}");
    // Each path once, parents first, siblings in order.
    let mut sorted: Vec<Vec<&str>> = names
        .iter()
        .map(|n| n.trim_end_matches('/').split('/').collect())
        .collect();
    let unsorted = sorted.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, unsorted, "{text}");

    if !docker_ready() {
        return;
    }
    let image = "nixlayer-test/rootfs-import:t";
    docker(&["import", rootfs.to_str().unwrap(), image]);
    let bb = format!("{}/bin/busybox", busybox.display());
    let out = Command::new("docker")
        .args(["run", "--rm", "--network", "none", image, &bb, "sh", "-c"])
        // docker adds /etc/hosts and the like: only the `.txt` files count.
        .arg(format!(
            "{bb} ls /etc | {bb} grep 'txt$'; {bb} ls /opt/d; {bb} cat /opt/d/new.txt /etc/keep.txt"
        ))
        .output()
        .unwrap();
    let _ = docker(&["rmi", "-f", image]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout, "keep.txt\ntop.txt\nnew.txt\nnew\nkeep\n",
        "the merged tree"
    );
}

/// A layer tar of empty files named `names`, under directory `dir`.
fn markers_layer(dir: &str, names: &[&str]) -> Vec<u8> {
    let mut tar = TarWriter::new(Vec::new());
    let header = |name: String, kind: Kind| Header {
        name: name.into_bytes(),
        mode: 0o644,
        kind,
        uid: 0,
        gid: 0,
        uname: String::new(),
        gname: String::new(),
        mtime: 1,
        size: 0,
    };
    if !dir.is_empty() {
        tar.append(&header(format!("{dir}/"), Kind::Directory), b"")
            .unwrap();
    }
    for name in names {
        let path = if dir.is_empty() {
            (*name).to_owned()
        } else {
            format!("{dir}/{name}")
        };
        tar.append(&header(path, Kind::Regular), b"").unwrap();
    }
    tar.finish().unwrap()
}

/// Crafted layers whose whiteouts a runtime would apply outside their
/// directory: a whiteout of `..` (`etc/.wh...`), and whiteouts under a
/// directory that is a symlink below (`link -> etc`, then
/// `link/.wh.passwd`, which docker applies as `/etc/passwd`). Each is an
/// error naming the marker, with no output left; they used to be ignored,
/// leaving `etc/passwd` in the export.
#[test]
fn whiteouts_of_dot_dot_or_under_a_symlink_are_refused() {
    let tmp = util::temp_dir();
    let base_manifest = util::write(
        tmp.path(),
        "base.toml",
        r#"
name = "nixlayer-test/rootfs-marker-base"
tag = "b"
[closure]
roots = []
[[customisation.files]]
path = "/etc/passwd"
text = "root:x:0:0::/:/bin/sh\n"
[[customisation.symlinks]]
path = "/link"
target = "etc"
"#,
    );
    let base = tmp.path().join("base.tar");
    build(&base_manifest, &base, &[]);
    let top = util::write(
        tmp.path(),
        "top.toml",
        "name = \"nixlayer-test/rootfs-marker\"\ntag = \"t\"\n[base]\nimage = \"mid.tar\"\n[closure]\nroots = []\n",
    );
    for (dir, marker, says) in [
        ("etc", ".wh...", "whiteout `etc/.wh...` names `..`"),
        (
            "",
            "link/.wh.passwd",
            "whiteout `link/.wh.passwd` lies under `link`, which is a symbolic link",
        ),
        (
            "",
            "link/.wh..wh..opq",
            "whiteout `link/.wh..wh..opq` lies under `link`, which is a symbolic link",
        ),
    ] {
        let mid = tmp.path().join("mid.tar");
        add_layer(&base, &markers_layer(dir, &[marker]), &mid);
        let rootfs = tmp.path().join("rootfs.tar");
        let out = run(
            nixlayer()
                .arg("build")
                .arg(&top)
                .args(["--format", "rootfs", "-o"])
                .arg(&rootfs),
            1,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(says), "{says} not in {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(!rootfs.exists(), "no output for {marker}");
        let left: Vec<_> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".nixlayer"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
    // The same whiteout under the real directory applies.
    let mid = tmp.path().join("mid.tar");
    add_layer(&base, &markers_layer("etc", &[".wh.passwd"]), &mid);
    let rootfs = tmp.path().join("rootfs.tar");
    build(&top, &rootfs, &["--format", "rootfs"]);
    let text = listing(&rootfs).join("\n");
    assert!(!text.contains("etc/passwd"), "{text}");
    assert!(text.contains("link -> etc"), "{text}");
}

/// A rootfs is uncompressed: asking for compression is a usage error.
#[test]
fn a_compressed_rootfs_is_a_usage_error() {
    let tmp = util::temp_dir();
    let m = util::write(
        tmp.path(),
        "image.toml",
        "name = \"x\"\n[closure]\nroots = []\n[[customisation.files]]\npath = \"/a\"\ntext = \"a\"\n",
    );
    let out = run(
        nixlayer()
            .args(["build", "--format", "rootfs", "--compression", "gzip", "-o"])
            .arg(tmp.path().join("r.tar"))
            .arg(&m),
        2,
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("uncompressed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!tmp.path().join("r.tar").exists());
}
