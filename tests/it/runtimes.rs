//! Runtimes besides docker accept what `build` writes: `podman load`
//! (in a private storage root) and containerd's `ctr images import` (a
//! containerd the test starts on a private root and socket). Loading only:
//! running a container needs privileges these machines lack.
//!
//! What they refuse, as the README says: a docker-archive compressed as a
//! whole is refused by `ctr images import` (any compression) and by podman
//! 4.3's `load` (gzip; zstd is read); both take it decompressed on stdin.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::push::{json, manifest};
use crate::util::{self, nixlayer, run};

/// Builds the `hello` image as `format` with `compression` into `dir`:
/// the archive and `build --json`'s summary.
fn built(dir: &Path, m: &Path, format: &str, compression: &str) -> (PathBuf, serde_json::Value) {
    let out = dir.join(format!("{format}-{compression}.tar"));
    let summary = json(
        &run(
            nixlayer()
                .arg("build")
                .arg(m)
                .args(["--format", format, "--compression", compression, "-o"])
                .arg(&out)
                .arg("--json"),
            0,
        )
        .stdout,
    );
    (out, summary)
}

fn output(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("run {cmd:?}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `sh -c script` (a pipe), asserting success; its output.
fn sh(script: &str) -> Output {
    let out = output(Command::new("sh").arg("-c").arg(script));
    assert!(out.status.success(), "{script}: {}", text(&out));
    out
}

#[test]
fn podman_loads_docker_and_oci_archives() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("podman") {
        return;
    }
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""podman""#);
    let root = tmp.path().join("podman");
    let podman = |args: &[&str]| {
        let mut cmd = Command::new("podman");
        cmd.arg("--root")
            .arg(root.join("root"))
            .arg("--runroot")
            .arg(root.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "none",
            ])
            .args(args);
        cmd
    };
    let accepted = [
        ("docker-archive", "none"),
        ("docker-archive", "zstd"),
        ("oci-archive", "none"),
        ("oci-archive", "gzip"),
        ("oci-archive", "zstd"),
    ];
    for (format, compression) in accepted {
        let (archive, summary) = built(tmp.path(), &m, format, compression);
        let out = output(&mut podman(&[
            "load",
            "-q",
            "-i",
            archive.to_str().unwrap(),
        ]));
        assert!(
            out.status.success(),
            "{format} {compression}: {}",
            text(&out)
        );
        // The image ID podman gives is the config digest `build` reports.
        let out = output(&mut podman(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "nixlayer-test/hello:it",
        ]));
        assert!(out.status.success(), "{}", text(&out));
        let id = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        let config = summary["config_digest"].as_str().unwrap();
        assert_eq!(format!("sha256:{id}"), config, "{format} {compression}");
        let rm = output(&mut podman(&["rmi", "-f", "nixlayer-test/hello:it"]));
        assert!(rm.status.success(), "{}", text(&rm));
    }

    // A gzip-compressed docker-archive: podman 4.3 refuses the file and
    // takes it decompressed.
    let (archive, _) = built(tmp.path(), &m, "docker-archive", "gzip");
    let out = output(&mut podman(&[
        "load",
        "-q",
        "-i",
        archive.to_str().unwrap(),
    ]));
    if !out.status.success() {
        assert!(text(&out).contains("invalid tar header"), "{}", text(&out));
        sh(&format!(
            "gzip -dc {} | podman --root {} --runroot {} --storage-driver vfs \
             --cgroup-manager cgroupfs --events-backend none load -q",
            archive.display(),
            root.join("root").display(),
            root.join("run").display()
        ));
    }
}

/// A containerd on a private root, state and socket, stopped on drop.
struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Containerd {
    fn start(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let d = dir.display();
        // No CRI plugin (it would want a CNI setup); nothing on TCP.
        let config = util::write(
            dir,
            "containerd.toml",
            &format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n\
                 [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
                 [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n"
            ),
        );
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start containerd");
        let containerd = Self {
            child,
            socket: dir.join("containerd.sock"),
        };
        for _ in 0..100 {
            if containerd.ctr(&["version"]).status.success() {
                return containerd;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "containerd did not answer on {}",
            containerd.socket.display()
        );
    }

    fn ctr(&self, args: &[&str]) -> Output {
        output(
            Command::new("ctr")
                .arg("--address")
                .arg(&self.socket)
                .args(["--namespace", "nixlayer-test"])
                .args(args),
        )
    }
}

#[test]
fn containerd_imports_docker_and_oci_archives() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("containerd") || !util::require_tool("ctr") {
        return;
    }
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""ctr""#);
    let containerd = Containerd::start(&tmp.path().join("containerd"));
    let accepted = [
        ("docker-archive", "none"),
        ("oci-archive", "none"),
        ("oci-archive", "gzip"),
        ("oci-archive", "zstd"),
    ];
    for (format, compression) in accepted {
        let (archive, summary) = built(tmp.path(), &m, format, compression);
        let out = containerd.ctr(&["images", "import", archive.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{format} {compression}: {}",
            text(&out)
        );
        // Imported, unpacked, complete; an OCI archive keeps its manifest.
        let out = containerd.ctr(&["images", "check"]);
        let listing = text(&out);
        let line = listing
            .lines()
            .find(|l| l.contains("nixlayer-test/hello:it"))
            .unwrap_or_else(|| panic!("{format} {compression}: {listing}"));
        assert!(line.contains("complete"), "{line}");
        if format == "oci-archive" {
            let digest = summary["manifest_digest"].as_str().unwrap();
            assert!(line.contains(digest), "{line}");
        }
        let names: Vec<String> =
            String::from_utf8_lossy(&containerd.ctr(&["images", "ls", "-q"]).stdout)
                .lines()
                .map(str::to_owned)
                .collect();
        // `--sync`: the content goes before the next import starts. Else
        // containerd's garbage collection, run after the removal, can
        // delete a blob the next import (the same layers) found present
        // and relied on: "content digest …: not found".
        let mut rm = vec!["images", "rm", "--sync"];
        rm.extend(names.iter().map(String::as_str));
        assert!(containerd.ctr(&rm).status.success());
    }

    // A docker-archive compressed as a whole: ctr reads only a plain tar,
    // and takes it decompressed on stdin.
    for (compression, tool) in [("gzip", "gzip"), ("zstd", "zstd")] {
        let (archive, _) = built(tmp.path(), &m, "docker-archive", compression);
        let out = containerd.ctr(&["images", "import", archive.to_str().unwrap()]);
        assert!(!out.status.success(), "ctr now reads {compression}");
        assert!(text(&out).contains("invalid tar header"), "{}", text(&out));
        if util::require_tool(tool) {
            sh(&format!(
                "{tool} -dc {} | ctr --address {} --namespace nixlayer-test images import -",
                archive.display(),
                containerd.socket.display()
            ));
        }
    }
}
