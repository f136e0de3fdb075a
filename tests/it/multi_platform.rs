//! `[[platforms]]`: a two-platform image (amd64 from the real `hello`
//! closure, arm64 from a small store made here with an arm64 ELF header)
//! written as one image index to an OCI layout and pushed to the loopback
//! registry; skopeo sees the index and copies it intact, docker runs the
//! amd64 image pulled by the index's tag, docker-archive asks for
//! `--platform`.

use std::path::{Path, PathBuf};

use crate::push::{json, registry_ready, REGISTRY};
use crate::util::{self, docker_ready, docker_run, nixlayer, run, tool};

pub(crate) const ARM_PATH: &str = "/nix/store/0123456789abcdfghijklmnpqrsvwxyz-arm-hello-1.0";

/// The first 64 bytes of an ELF64 little-endian executable for aarch64
/// (`e_machine` 183): enough for anything that reads the header.
fn arm64_elf() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    h[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h[18..20].copy_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    h[20..24].copy_from_slice(&1u32.to_le_bytes()); // EV_CURRENT
    h[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    h
}

/// A store root holding one arm64 store path, and its `graph.json`.
pub(crate) fn arm_store(dir: &Path) -> (PathBuf, PathBuf) {
    let root = dir.join("arm-root");
    let out = root.join(ARM_PATH.trim_start_matches('/'));
    std::fs::create_dir_all(out.join("bin")).unwrap();
    std::fs::write(out.join("bin/hello"), arm64_elf()).unwrap();
    let graph = dir.join("arm-graph.json");
    let doc = serde_json::json!([{
        "path": ARM_PATH,
        "narHash": "sha256:1qlamlcq8xcp7c4w1zy3wcd83srswlhnqx28rpq4803117azyp51",
        "narSize": 400,
        "references": [],
        "closureSize": 400,
    }]);
    std::fs::write(&graph, serde_json::to_vec(&doc).unwrap()).unwrap();
    (root, graph)
}

pub(crate) fn manifest(dir: &Path, hello: &Path, tag: &str, shared: &str) -> PathBuf {
    let (root, graph) = arm_store(dir);
    let hello = hello.display();
    util::write(
        dir,
        "image.toml",
        &format!(
            r#"
name = "nixlayer-test/multi"
tag = "{tag}"
architecture = "amd64"
[closure]
roots = ["{hello}"]
[config]
Entrypoint = ["{hello}/bin/hello"]
Cmd = ["multi"]
[[customisation.files]]
path = "/etc/shared"
text = "{shared}\n"

[[platforms]]
architecture = "arm64"
variant = "v8"
[platforms.closure]
roots = ["{ARM_PATH}"]
source = {{ graph = "{graph}" }}
[platforms.store]
root = "{root}"
"#,
            graph = graph.display(),
            root = root.display(),
        ),
    )
}

/// The platforms of an index, as `arch[/variant]`, in its order.
fn platforms(index: &serde_json::Value) -> Vec<String> {
    index["manifests"]
        .as_array()
        .expect("manifests")
        .iter()
        .map(|m| {
            let p = &m["platform"];
            match p["variant"].as_str() {
                Some(v) => format!("{}/{v}", p["architecture"].as_str().unwrap()),
                None => p["architecture"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

#[test]
fn a_two_platform_index_in_a_layout_is_deterministic_and_copies_intact() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("skopeo") {
        return;
    }
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), &hello, "m1", "on every platform");
    let build = |out: &Path| {
        run(
            nixlayer()
                .arg("build")
                .arg(&m)
                .args(["--format", "oci-layout", "--compression", "gzip", "-o"])
                .arg(out),
            0,
        )
    };
    let layout = tmp.path().join("layout");
    let out = build(&layout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("2 platforms: amd64 sha256:"), "{stderr}");
    let raw = tool(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:m1", layout.display())],
    );
    let index = json(&raw);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(platforms(&index), ["amd64", "arm64/v8"]);

    // Both manifests share the customisation layer, stored once.
    let layers = |i: usize| -> Vec<String> {
        let digest = index["manifests"][i]["digest"].as_str().unwrap();
        let bytes = std::fs::read(layout.join("blobs/sha256").join(&digest[7..])).unwrap();
        json(&bytes)["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["digest"].as_str().unwrap().to_owned())
            .collect()
    };
    let (amd, arm) = (layers(0), layers(1));
    assert_eq!(amd.last(), arm.last(), "the shared customisation layer");
    let mut distinct: Vec<&String> = amd.iter().chain(&arm).collect();
    distinct.sort();
    distinct.dedup();
    // Distinct layers, two configs, two manifests, one index.
    let blobs = std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .count();
    assert_eq!(blobs, distinct.len() + 5);

    // Same inputs, same bytes.
    let again = tmp.path().join("again");
    build(&again);
    assert_eq!(
        std::fs::read(layout.join("index.json")).unwrap(),
        std::fs::read(again.join("index.json")).unwrap()
    );

    // `skopeo copy --all` keeps the index byte for byte.
    let copy = tmp.path().join("copy");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--all",
            &format!("oci:{}:m1", layout.display()),
            &format!("oci:{}:m1", copy.display()),
        ],
    );
    let copied = tool(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:m1", copy.display())],
    );
    assert_eq!(copied, raw);

    // `inspect` shows both images and the index naming them.
    let index_digest = format!("sha256:{}", nixlayer::oci::Digest::of(&raw).hex());
    let shown = json(&run(nixlayer().arg("inspect").arg(&layout).arg("--json"), 0).stdout);
    let images = shown["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for (image, arch) in images.iter().zip(["amd64", "arm64"]) {
        assert_eq!(image["index_digest"], index_digest.as_str());
        assert_eq!(image["config"]["architecture"], arch);
    }
    let text = String::from_utf8_lossy(&run(nixlayer().arg("inspect").arg(&layout), 0).stdout)
        .into_owned();
    assert!(
        text.contains(&format!("index     {index_digest}")),
        "{text}"
    );
    assert!(text.contains("platform  linux/arm64/v8"), "{text}");

    // An OCI archive holds the same index.
    let archive = tmp.path().join("multi.tar");
    run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--format", "oci-archive", "--compression", "gzip", "-o"])
            .arg(&archive),
        0,
    );
    let in_archive = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}:m1", archive.display()),
        ],
    );
    assert_eq!(in_archive, raw);
}

#[test]
fn docker_archive_of_several_platforms_needs_platform() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), &hello, "m2", "on every platform");
    let out_path = tmp.path().join("image.tar");
    let out = run(nixlayer().arg("build").arg(&m).arg("-o").arg(&out_path), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("describes 2 platforms (amd64, arm64/v8)") && stderr.contains("--platform"),
        "{stderr}"
    );
    assert!(!out_path.exists(), "no output on a usage error");
    run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--platform", "arm64/v8", "-o"])
            .arg(&out_path),
        0,
    );
    assert!(out_path.exists());
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--platform", "riscv64", "-o"])
            .arg(tmp.path().join("other.tar")),
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in the manifest"));
}

/// `arm64` and `arm64/v8` are one platform to docker and containerd:
/// `--platform arm64` of `build` and `sbom` finds the manifest's `arm64/v8`,
/// `merge --platform arm64/v8` finds an index's plain `arm64` image, and a
/// manifest describing both is refused (a pull would pick either).
#[test]
fn arm64_and_arm64_v8_are_one_platform() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), &hello, "m3", "same");
    let out_path = tmp.path().join("image.tar");
    run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--platform", "arm64", "-o"])
            .arg(&out_path),
        0,
    );
    let config = crate::support::archive_config(&out_path);
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["variant"], "v8");
    run(
        nixlayer()
            .args(["sbom", "--format", "spdx-json", "--platform", "arm64"])
            .arg(&m),
        0,
    );
    // docker's spelling, `linux/ARCH[/VARIANT]`, names the same platform.
    let linux = tmp.path().join("linux.tar");
    run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--platform", "linux/arm64", "-o"])
            .arg(&linux),
        0,
    );
    assert_eq!(
        crate::support::archive_config(&linux)["architecture"],
        "arm64"
    );
    run(
        nixlayer()
            .args([
                "sbom",
                "--format",
                "spdx-json",
                "--platform",
                "linux/arm64/v8",
            ])
            .arg(&m),
        0,
    );

    // One platform into a layout: its `index.json` entry names the variant
    // its config has.
    let single = tmp.path().join("single");
    run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--platform", "arm64", "--format", "oci-layout", "-o"])
            .arg(&single),
        0,
    );
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(single.join("index.json")).unwrap()).unwrap();
    assert_eq!(platforms(&index), ["arm64/v8"], "{index}");

    // The same manifest with a plain `arm64` entry, as an OCI layout index.
    let text = std::fs::read_to_string(&m).unwrap();
    let plain = util::write(
        tmp.path(),
        "plain.toml",
        &text.replace("variant = \"v8\"\n", ""),
    );
    let layout = tmp.path().join("layout");
    run(
        nixlayer()
            .arg("build")
            .arg(&plain)
            .args(["--format", "oci-layout", "-o"])
            .arg(&layout),
        0,
    );
    let merged = tmp.path().join("merged.tar");
    run(
        nixlayer()
            .args(["merge", "--platform", "linux/arm64/v8", "-o"])
            .arg(&merged)
            .arg(&layout),
        0,
    );
    assert_eq!(
        crate::support::archive_config(&merged)["architecture"],
        "arm64"
    );

    // Both spellings in one manifest: refused at the second one's line.
    let both = util::write(
        tmp.path(),
        "both.toml",
        &format!(
            "{text}\n[[platforms]]\narchitecture = \"arm64\"\n[platforms.closure]\nroots = [\"{ARM_PATH}\"]\n"
        ),
    );
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&both)
            .args(["--format", "oci-layout", "-o"])
            .arg(tmp.path().join("both")),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("platform `arm64` is described twice (as `arm64/v8`"),
        "{stderr}"
    );
    assert!(!tmp.path().join("both").exists());
}

#[test]
fn a_pushed_index_copies_intact_and_its_amd64_image_runs() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() || !util::require_tool("skopeo") || !docker_ready() {
        return;
    }
    let tmp = util::temp_dir();
    // A shared layer new to the registry on every run.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let m = manifest(tmp.path(), &hello, "m3", &nonce.to_string());
    let reference = format!("{REGISTRY}/nixlayer-test/multi:m3");
    let out = run(
        nixlayer().arg("push").arg(&m).arg(&reference).arg("--json"),
        0,
    );
    let pushed = json(&out.stdout);
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    );
    let index = json(&raw);
    assert_eq!(
        index["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(platforms(&index), ["amd64", "arm64/v8"]);
    let pinned = pushed["pushed"].as_str().unwrap();
    let digest = format!("sha256:{}", sha256_hex(&raw));
    assert_eq!(pinned, format!("{REGISTRY}/nixlayer-test/multi@{digest}"));
    // Every blob once: the shared (new) layer is uploaded (or mounted from
    // a repository another test pushed to on the shared registry) for the
    // first platform and found for the second.
    let b = &pushed["blobs"];
    // The keys of a single-platform push's `blobs`.
    let mut keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "bytes_uploaded",
            "existing",
            "layers_cached",
            "mounted",
            "uploaded"
        ],
        "{pushed}"
    );
    let existing = b["existing"].as_u64().unwrap();
    assert!(existing >= 1, "{pushed}");
    let seen = b["uploaded"].as_u64().unwrap() + b["mounted"].as_u64().unwrap() + existing;
    let layers: usize = pushed["platforms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["layers"].as_array().unwrap().len())
        .sum();
    assert_eq!(seen as usize, layers + 2, "{pushed}");

    // `skopeo copy --all` to a layout keeps the index byte for byte.
    let copy = tmp.path().join("copy");
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--all",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("oci:{}:m3", copy.display()),
        ],
    );
    let copied = tool(
        "skopeo",
        &["inspect", "--raw", &format!("oci:{}:m3", copy.display())],
    );
    assert_eq!(copied, raw);

    // Pulled by the index's tag, docker gets the amd64 image, which runs.
    let local = "nixlayer-test/multi-pulled:m3";
    tool(
        "skopeo",
        &[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &format!("docker-daemon:{local}"),
        ],
    );
    assert_eq!(docker_run(local), "hello from nixlayer\nargs: multi\n");
}

fn sha256_hex(bytes: &[u8]) -> String {
    nixlayer::oci::Digest::of(bytes).hex()
}

/// The summary line of a multi-platform push names every tag pushed and
/// the blobs mounted from another repository, as a single image's does;
/// it named only the first tag and left mounts out of its counts.
#[test]
fn a_pushed_index_summary_names_its_tags_and_mounts() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let m = manifest(tmp.path(), &hello, "s1", &nonce.to_string());
    let first = format!("{REGISTRY}/nixlayer-test/multi-summary-{nonce}");
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(format!("{first}:a"))
            .args(["--tag", "b"]),
        0,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "pushed {first}:a, :b (image index of amd64, arm64/v8)"
        )),
        "{stderr}"
    );
    // Into another repository of the same registry: its blobs are mounted.
    let second = format!("{REGISTRY}/nixlayer-test/multi-summary-{nonce}-2:a");
    let out = run(nixlayer().arg("push").arg(&m).arg(&second), 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("mounted from another repository"),
        "{stderr}"
    );
}

/// Records what a build reports: each layer's index, start and end.
#[derive(Default)]
struct Recorder {
    started: std::sync::Mutex<Vec<(usize, usize)>>,
    done: std::sync::Mutex<Vec<usize>>,
}

impl nixlayer::ops::Reporter for Recorder {
    fn on_layer_start(
        &self,
        index: usize,
        total: usize,
        _paths: &[nixlayer::nix::StorePath],
        _bytes: u64,
    ) {
        self.started.lock().unwrap().push((index, total));
    }

    fn on_layer_done(&self, index: usize, _diff_id: &nixlayer::oci::Digest) {
        self.done.lock().unwrap().push(index);
    }
}

/// `build_platforms` numbers the layers of all the platforms one after
/// another (the arm64 image's first layer follows the amd64 image's
/// last), so one progress bar of all their layers counts each once;
/// before, each image counted from 0 again and the CLI showed no progress
/// for a multi-platform build at all.
#[test]
fn the_platforms_layers_are_reported_numbered_in_sequence() {
    use nixlayer::manifest::LoadedManifest;
    use nixlayer::ops::settings::{self, Environment, Overrides};
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), &hello, "seq", "on every platform");
    let loaded = LoadedManifest::load(&m).unwrap();
    let env = Environment {
        now: jiff::Timestamp::UNIX_EPOCH,
        source_date_epoch: None,
        cache_dir: None,
        binary_cache: Default::default(),
    };
    let mut overrides = Overrides::default();
    overrides.format = Some("oci-archive".to_owned());
    let all = settings::resolve_platforms(&loaded, &overrides, &env).unwrap();
    let images: Vec<_> = all
        .iter()
        .map(|(_, c)| nixlayer::ops::prepare(&c.settings).unwrap())
        .collect();
    let pairs: Vec<_> = all.iter().map(|(_, c)| &c.settings).zip(&images).collect();
    let counts: Vec<usize> = images.iter().map(|i| i.layers.len()).collect();
    let total: usize = counts.iter().sum();
    let sink = nixlayer::sink::oci_archive::OciArchiveWriter::new(
        Vec::new(),
        all[0].1.settings.mtime,
        all[0].1.compress,
    )
    .unwrap();
    let recorder = Recorder::default();
    nixlayer::ops::build_platforms(&pairs, sink, &recorder).unwrap();
    let mut done = recorder.done.into_inner().unwrap();
    done.sort_unstable();
    assert_eq!(done, (0..total).collect::<Vec<_>>(), "layers {counts:?}");
    let started = recorder.started.into_inner().unwrap();
    assert!(
        started.iter().all(|&(i, t)| i < total && t == total),
        "{started:?}"
    );
}
