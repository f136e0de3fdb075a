//! `merge` with OCI archives and layouts as inputs and outputs: two
//! nixlayer-built layouts and a docker-archive merged into an OCI layout
//! and an OCI archive (skopeo reads every tag, docker runs one copied out
//! of the layout), OCI inputs merged into a docker-archive that docker
//! loads with every tag, a multi-platform index kept whole in OCI outputs
//! and picked by `--platform` for a docker-archive, and bad inputs (a
//! corrupt blob, a dangling reference, one tag for two images) refused
//! leaving nothing.
//!
//! The images are the embedded example's closure (no Nix needed), each
//! with its own `LANG` so every image has its own config and the three
//! store layers are shared:
//!
//! ```text
//!   a (layout, gzip) ─┐
//!   b (layout, gzip) ─┼─ app ── site ── greeting   (shared)
//!   c (docker-archive)┘
//! ```

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::multi_platform::{arm_store, ARM_PATH};
use crate::util::{self, docker, docker_ready, docker_run, nixlayer, run, tool};

const APP: &str = "/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3";

/// A manifest of the example closure named `name:tag` whose program
/// prints `LANG=lang`; with `arm` a second, arm64 platform.
pub(crate) fn example(dir: &Path, name: &str, tag: &str, lang: &str, arm: bool) -> PathBuf {
    let fixtures = util::repo().join("fixtures/example");
    let mut text = format!(
        r#"
name = "{name}"
tag = "{tag}"
architecture = "amd64"
created = "2024-01-01T00:00:00Z"
[store]
root = "{store}"
[closure]
roots = ["{APP}"]
source = {{ graph = "{graph}" }}
[config]
Cmd = ["{APP}/bin/hello"]
Env = ["LANG={lang}"]
"#,
        store = fixtures.join("store").display(),
        graph = fixtures.join("graph.json").display(),
    );
    if arm {
        let (root, graph) = arm_store(dir);
        text += &format!(
            r#"
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
            root = root.display()
        );
    }
    util::write(
        dir,
        &format!("{}-{tag}.toml", name.replace('/', "_")),
        &text,
    )
}

fn build(manifest: &Path, args: &[&str], out: &Path) {
    run(
        nixlayer()
            .arg("build")
            .arg(manifest)
            .args(args)
            .arg("-o")
            .arg(out),
        0,
    );
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).expect("JSON")
}

/// `(ref.name, io.containerd.image.name)` of each `index.json` entry.
fn names(index: &Value) -> Vec<(String, String)> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let a = &m["annotations"];
            (
                a["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
                a["io.containerd.image.name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

fn merge(inputs: &[&Path], args: &[&str], out: &Path, code: i32) -> String {
    let output = run(
        nixlayer()
            .arg("merge")
            .args(inputs)
            .args(args)
            .arg("-o")
            .arg(out),
        code,
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Every file under `dir`, relative, sorted.
fn files(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

/// Three images: layouts `a` (tags 1 and latest) and `b`, docker-archive `c`.
fn three_inputs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let (a, b, c) = (dir.join("a"), dir.join("b"), dir.join("c.tar"));
    let gzip = ["--format", "oci-layout", "--compression", "gzip"];
    build(
        &example(dir, "nixlayer-test/merge-oci-a", "1", "a", false),
        &gzip,
        &a,
    );
    build(
        &example(dir, "nixlayer-test/merge-oci-a", "latest", "a", false),
        &gzip,
        &a,
    );
    build(
        &example(dir, "nixlayer-test/merge-oci-b", "2", "b", false),
        &gzip,
        &b,
    );
    build(
        &example(dir, "nixlayer-test/merge-oci-c", "3", "c", false),
        &[],
        &c,
    );
    (a, b, c)
}

#[test]
fn two_layouts_and_a_docker_archive_merge_into_a_layout_and_an_archive() {
    if !util::require_tool("skopeo") {
        return;
    }
    let tmp = util::temp_dir();
    let (a, b, c) = three_inputs(tmp.path());
    let layout = tmp.path().join("merged");
    let stderr = merge(&[&a, &b, &c], &["--format", "oci-layout"], &layout, 0);
    assert!(stderr.contains("merged 4 images"), "{stderr}");
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    let expected: Vec<(String, String)> = [
        ("1", "nixlayer-test/merge-oci-a:1"),
        ("latest", "nixlayer-test/merge-oci-a:latest"),
        ("2", "nixlayer-test/merge-oci-b:2"),
        ("3", "nixlayer-test/merge-oci-c:3"),
    ]
    .iter()
    .map(|(t, n)| ((*t).to_owned(), (*n).to_owned()))
    .collect();
    assert_eq!(names(&index), expected);
    // The layouts' entries are copied as they are: same manifest digests.
    let a_index = json(&std::fs::read(a.join("index.json")).unwrap());
    assert_eq!(index["manifests"][0], a_index["manifests"][0]);
    assert_eq!(index["manifests"][1], a_index["manifests"][1]);

    // a and b share their gzip store layers; c's are plain tars. Blobs:
    // 3 gzip + 3 plain layers, 3 configs, 3 manifests, each once.
    let blobs = files(&layout.join("blobs/sha256"));
    assert_eq!(blobs.len(), 12, "{blobs:?}");
    assert_eq!(files(&layout).len(), 14, "plus oci-layout and index.json");

    for (tag, lang) in [("1", "a"), ("latest", "a"), ("2", "b"), ("3", "c")] {
        let inspected = json(&tool(
            "skopeo",
            &[
                "inspect",
                "--config",
                &format!("oci:{}:{tag}", layout.display()),
            ],
        ));
        assert_eq!(
            inspected["config"]["Env"][0],
            format!("LANG={lang}"),
            "{tag}"
        );
    }

    // An OCI archive of the same: every tag, and the same bytes again.
    let archive = tmp.path().join("merged.tar");
    merge(&[&a, &b, &c], &["--format", "oci-archive"], &archive, 0);
    let again = tmp.path().join("again.tar");
    merge(&[&a, &b, &c], &["--format", "oci-archive"], &again, 0);
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&again).unwrap()
    );
    let shown = json(&run(nixlayer().arg("inspect").arg(&archive).arg("--json"), 0).stdout);
    let tags: Vec<(&str, &str)> = shown["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["tags"][0].as_str().unwrap(),
                i["ref_name"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        tags,
        [
            ("nixlayer-test/merge-oci-a:1", "1"),
            ("nixlayer-test/merge-oci-a:latest", "latest"),
            ("nixlayer-test/merge-oci-b:2", "2"),
            ("nixlayer-test/merge-oci-c:3", "3")
        ]
    );
    let raw = tool(
        "skopeo",
        &[
            "inspect",
            "--raw",
            &format!("oci-archive:{}:2", archive.display()),
        ],
    );
    let b_index = json(&std::fs::read(b.join("index.json")).unwrap());
    assert_eq!(
        b_index["manifests"][0]["digest"].as_str().unwrap(),
        format!("sha256:{}", nixlayer::oci::Digest::of(&raw).hex())
    );

    if docker_ready() {
        let image = "nixlayer-test/merge-oci-copied:3";
        tool(
            "skopeo",
            &[
                "copy",
                "--quiet",
                &format!("oci:{}:3", layout.display()),
                &format!("docker-daemon:{image}"),
            ],
        );
        let out = docker_run(image);
        assert!(out.contains("LANG:     c"), "{out}");
    }
}

#[test]
fn oci_inputs_merge_into_a_docker_archive_that_loads_every_tag() {
    let tmp = util::temp_dir();
    let (a, _, c) = three_inputs(tmp.path());
    let b_archive = tmp.path().join("b.oci.tar");
    build(
        &example(tmp.path(), "nixlayer-test/merge-oci-b", "2", "b", false),
        &["--format", "oci-archive", "--compression", "zstd"],
        &b_archive,
    );
    let out = tmp.path().join("merged.tar");
    let stderr = merge(&[&a, &b_archive, &c], &[], &out, 0);
    assert!(stderr.contains("merged 3 images"), "{stderr}");
    let shown = json(&run(nixlayer().arg("inspect").arg(&out).arg("--json"), 0).stdout);
    assert_eq!(shown["format"], "docker-archive");
    let tags: Vec<Vec<&str>> = shown["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            i["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
                .collect()
        })
        .collect();
    assert_eq!(
        tags,
        [
            vec![
                "nixlayer-test/merge-oci-a:1",
                "nixlayer-test/merge-oci-a:latest"
            ],
            vec!["nixlayer-test/merge-oci-b:2"],
            vec!["nixlayer-test/merge-oci-c:3"],
        ]
    );
    // The store layers, decompressed, are one member each.
    let members = String::from_utf8(tool("tar", &["-tf", out.to_str().unwrap()])).unwrap();
    assert_eq!(
        members
            .lines()
            .filter(|m| m.ends_with("/layer.tar"))
            .count(),
        3,
        "{members}"
    );
    if docker_ready() {
        let loaded = docker(&["load", "-i", out.to_str().unwrap()]);
        for tag in [
            "nixlayer-test/merge-oci-a:1",
            "nixlayer-test/merge-oci-a:latest",
            "nixlayer-test/merge-oci-b:2",
            "nixlayer-test/merge-oci-c:3",
        ] {
            assert!(loaded.contains(tag), "{tag}: {loaded}");
        }
        let out = docker_run("nixlayer-test/merge-oci-b:2");
        assert!(out.contains("LANG:     b"), "{out}");
        let _ = std::process::Command::new("docker")
            .args([
                "rmi",
                "-f",
                "nixlayer-test/merge-oci-a:1",
                "nixlayer-test/merge-oci-a:latest",
                "nixlayer-test/merge-oci-c:3",
            ])
            .output();
    }
}

#[test]
fn a_multi_platform_index_stays_whole_in_oci_and_needs_platform_for_docker() {
    let tmp = util::temp_dir();
    let multi = tmp.path().join("multi");
    build(
        &example(tmp.path(), "nixlayer-test/merge-oci-multi", "m", "m", true),
        &["--format", "oci-layout", "--no-arch-check"],
        &multi,
    );
    let c = tmp.path().join("c.tar");
    build(
        &example(tmp.path(), "nixlayer-test/merge-oci-c", "3", "c", false),
        &[],
        &c,
    );
    let source = json(&std::fs::read(multi.join("index.json")).unwrap());

    // OCI outputs keep the index, byte for byte.
    let layout = tmp.path().join("merged");
    merge(&[&multi, &c], &["--format", "oci-layout"], &layout, 0);
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    assert_eq!(index["manifests"][0], source["manifests"][0]);
    assert_eq!(
        index["manifests"][0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    let shown = json(&run(nixlayer().arg("inspect").arg(&layout).arg("--json"), 0).stdout);
    assert_eq!(shown["images"].as_array().unwrap().len(), 3);

    // A docker-archive needs one image per tag.
    let docker_out = tmp.path().join("d.tar");
    let stderr = merge(&[&multi, &c], &[], &docker_out, 1);
    assert!(
        stderr.contains("multi-platform image index `m` (amd64, arm64/v8)")
            && stderr.contains("--platform"),
        "{stderr}"
    );
    assert!(!docker_out.exists());
    let stderr = merge(&[&multi], &["--platform", "riscv64"], &docker_out, 1);
    assert!(stderr.contains("has no `riscv64` image"), "{stderr}");
    assert!(!docker_out.exists());
    merge(&[&multi, &c], &["--platform", "amd64"], &docker_out, 0);
    let shown = json(&run(nixlayer().arg("inspect").arg(&docker_out).arg("--json"), 0).stdout);
    let images = shown["images"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    assert_eq!(images[0]["tags"][0], "nixlayer-test/merge-oci-multi:m");
    assert_eq!(images[0]["config"]["architecture"], "amd64");

    // `--platform` on an OCI output keeps that platform's manifest only.
    let one = tmp.path().join("one");
    merge(
        &[&multi],
        &["--format", "oci-layout", "--platform", "arm64"],
        &one,
        0,
    );
    let index = json(&std::fs::read(one.join("index.json")).unwrap());
    assert_eq!(
        index["manifests"][0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(index["manifests"][0]["platform"]["architecture"], "arm64");
    assert_eq!(names(&index)[0].0, "m");
}

#[test]
fn bad_inputs_are_clear_errors_and_leave_nothing() {
    let tmp = util::temp_dir();
    let (a, b, c) = three_inputs(tmp.path());
    let leaves_nothing =
        |inputs: &[&Path], wanted: &str| refused_leaving_nothing(tmp.path(), inputs, &[wanted]);

    // A layer blob of `a` (the first copy, the one read) with one byte
    // flipped.
    let layer = store_layer(&a);
    let blob = a.join("blobs/sha256").join(&layer);
    let mid = std::fs::metadata(&blob).unwrap().len() / 2;
    flip(&blob, mid);
    leaves_nothing(&[&a, &b, &c], &layer);
    flip(&blob, mid);

    // `index.json` naming a manifest that is not there.
    let dangling = tmp.path().join("dangling");
    std::fs::create_dir_all(dangling.join("blobs/sha256")).unwrap();
    std::fs::write(
        dangling.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let missing = nixlayer::oci::Digest::of(b"nothing");
    std::fs::write(
        dangling.join("index.json"),
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": missing.prefixed(),
                "size": 7,
                "annotations": { "org.opencontainers.image.ref.name": "x" },
            }],
        }))
        .unwrap(),
    )
    .unwrap();
    leaves_nothing(&[&a, &dangling], &missing.hex());

    // One reference for two different images.
    let other = tmp.path().join("other.tar");
    build(
        &example(tmp.path(), "nixlayer-test/merge-oci-c", "3", "other", false),
        &[],
        &other,
    );
    leaves_nothing(
        &[&a, &c, &other],
        "`nixlayer-test/merge-oci-c:3` names two different images",
    );
}

/// Two docker-archives holding different images under one tag: the
/// docker-archive merge (nixpkgs' member-level path) refuses them as the
/// other outputs do, leaving nothing, instead of an archive whose `docker
/// load` silently untags the first image. The same image twice merges.
#[test]
fn one_tag_for_two_images_is_refused_in_a_docker_archive_merge_too() {
    let tmp = util::temp_dir();
    let (a, b) = (tmp.path().join("a.tar"), tmp.path().join("b.tar"));
    let name = "nixlayer-test/merge-conflict";
    build(&example(tmp.path(), name, "1", "a", false), &[], &a);
    build(&example(tmp.path(), name, "1", "b", false), &[], &b);
    let out = tmp.path().join("out.tar");
    for args in [
        &[][..],
        &["--format", "docker-archive"],
        &["--format", "oci-archive"],
    ] {
        let stderr = merge(&[&a, &b], args, &out, 1);
        assert!(
            stderr.contains(&format!("`{name}:1` names two different images")),
            "{args:?}: {stderr}"
        );
        assert!(
            stderr.contains("a.tar") && stderr.contains("b.tar"),
            "{stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(!out.exists(), "{args:?}");
        assert_eq!(
            files(tmp.path())
                .iter()
                .filter(|f| f.contains(".nixlayer"))
                .count(),
            0
        );
    }
    merge(&[&a, &a], &[], &out, 0);
    let manifest = tool("tar", &["-xOf", out.to_str().unwrap(), "manifest.json"]);
    assert_eq!(json(&manifest).as_array().unwrap().len(), 2);
}

/// One image (one config) as a plain docker-archive and as a gzip layout:
/// a docker-archive merge keeps one copy, an OCI merge (one manifest per
/// tag) is refused saying it is one image stored two ways rather than
/// "two different images".
#[test]
fn one_image_in_two_compressions_is_named_as_such() {
    let tmp = util::temp_dir();
    let name = "nixlayer-test/merge-two-ways";
    let manifest = example(tmp.path(), name, "1", "a", false);
    let (plain, gzip) = (tmp.path().join("plain.tar"), tmp.path().join("gzip"));
    build(&manifest, &[], &plain);
    build(
        &manifest,
        &["--format", "oci-layout", "--compression", "gzip"],
        &gzip,
    );
    let out = tmp.path().join("out.tar");
    merge(&[&plain, &gzip], &[], &out, 0);
    let manifest = tool("tar", &["-xOf", out.to_str().unwrap(), "manifest.json"]);
    assert_eq!(json(&manifest).as_array().unwrap().len(), 1);
    let layout = tmp.path().join("out");
    let stderr = merge(&[&plain, &gzip], &["--format", "oci-layout"], &layout, 1);
    assert!(
        stderr.contains(&format!("`{name}:1` names one image (config sha256:"))
            && stderr.contains("stored two ways")
            && stderr.contains("merge into a docker-archive"),
        "{stderr}"
    );
    assert!(!layout.exists());
}

/// Merges `inputs` into each output format in `dir`, which must fail
/// saying every one of `wanted` and leave no output and no temporary file.
fn refused_leaving_nothing(dir: &Path, inputs: &[&Path], wanted: &[&str]) {
    for (out, format) in [
        (dir.join("o-layout"), "oci-layout"),
        (dir.join("o.tar"), "oci-archive"),
        (dir.join("d-out.tar"), "docker-archive"),
    ] {
        let stderr = merge(inputs, &["--format", format], &out, 1);
        for wanted in wanted {
            assert!(stderr.contains(wanted), "{format}: {wanted}: {stderr}");
        }
        assert!(!out.exists(), "{format}: {}", out.display());
        let left: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".nixlayer-"))
            .collect();
        assert!(left.is_empty(), "{format}: {left:?}");
    }
}

/// The hex digest of the third layer (a store layer) of a layout's first
/// image.
fn store_layer(layout: &Path) -> String {
    let index = json(&std::fs::read(layout.join("index.json")).unwrap());
    let manifest = &index["manifests"][0]["digest"].as_str().unwrap()[7..];
    let manifest = json(&std::fs::read(layout.join("blobs/sha256").join(manifest)).unwrap());
    manifest["layers"][2]["digest"].as_str().unwrap()[7..].to_owned()
}

/// Flips one byte of `path` at `at` (the same length: a tar stays a tar).
fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[usize::try_from(at).unwrap()] ^= 0x55;
    std::fs::write(path, bytes).unwrap();
}

/// A later input's copy of a layer an earlier input already supplied is
/// not written, but it is read and checked: with one byte of it flipped,
/// the merge into each format fails naming that input and the blob, and
/// leaves nothing. (Before, the copy went unread and the merge succeeded.)
#[test]
fn a_corrupt_copy_of_a_shared_layer_in_a_later_input_is_refused() {
    let tmp = util::temp_dir();
    let (a, b, c) = three_inputs(tmp.path());
    let d = tmp.path().join("d.tar");
    build(
        &example(tmp.path(), "nixlayer-test/merge-oci-d", "4", "d", false),
        &[],
        &d,
    );
    let refused = |inputs: &[&Path], corrupt: &Path, blob: &str| {
        let named = format!("`{}` is malformed: ", corrupt.display());
        refused_leaving_nothing(tmp.path(), inputs, &[&named, blob]);
    };

    // Layouts: `b`'s copy of a store layer blob `a` holds too.
    let layer = store_layer(&a);
    assert_eq!(store_layer(&b), layer, "a store layer both layouts hold");
    let blob = b.join("blobs/sha256").join(&layer);
    let mid = std::fs::metadata(&blob).unwrap().len() / 2;
    flip(&blob, mid);
    refused(&[&a, &b], &b, &layer);
    flip(&blob, mid);
    merge(&[&a, &b], &[], &tmp.path().join("fine.tar"), 0);
    // A copy of `a` itself (one config: one image of a docker-archive).
    let again = tmp.path().join("a-again");
    tool("cp", &["-r", a.to_str().unwrap(), again.to_str().unwrap()]);
    flip(&again.join("blobs/sha256").join(&layer), mid);
    refused(&[&a, &again], &again, &layer);

    // docker-archives (merged member by member into a docker-archive,
    // image by image into OCI): `d`'s copy of a store layer member.
    let listing = |archive: &Path| {
        String::from_utf8(tool("tar", &["-tvRf", archive.to_str().unwrap()])).unwrap()
    };
    let in_c = listing(&c);
    // `block N: -r--r--r-- 0/0 SIZE DATE TIME NAME`: the member's data
    // starts after its header block.
    let (block, size, member) = listing(&d)
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let name = *fields.last()?;
            let block: u64 = fields.get(1)?.trim_end_matches(':').parse().ok()?;
            let size: u64 = fields.get(4)?.parse().ok()?;
            (name.ends_with("/layer.tar") && in_c.contains(name))
                .then(|| (block, size, name.to_owned()))
        })
        .next()
        .expect("a layer member both docker-archives hold");
    let at = (block + 1) * 512 + size / 2;
    flip(&d, at);
    refused(&[&c, &d], &d, &member);
    flip(&d, at);
    merge(&[&c, &d], &[], &tmp.path().join("fine-docker.tar"), 0);
}

/// `merge --json` prints what the summary line says, as one line of
/// canonical JSON on stdout (as `build --json` does): formats, compression
/// (a docker-archive output's only), tags, counts, bytes, the output.
#[test]
fn merge_json_prints_the_summary() {
    let tmp = util::temp_dir();
    let (a, b, c) = three_inputs(tmp.path());
    let summary = |inputs: &[&Path], args: &[&str], out: &Path| {
        let output = run(
            nixlayer()
                .arg("merge")
                .args(inputs)
                .args(args)
                .arg("--json")
                .arg("-o")
                .arg(out),
            0,
        );
        let doc = json(&output.stdout);
        let mut canonical = serde_json::to_vec(&doc).unwrap();
        canonical.push(b'\n');
        assert_eq!(output.stdout, canonical, "one line of canonical JSON");
        (doc, String::from_utf8_lossy(&output.stderr).into_owned())
    };
    let counts = |doc: &Value| {
        format!(
            "{} {}{} written, {} shared",
            doc["written"],
            doc["unit"].as_str().unwrap(),
            if doc["written"] == 1 { "" } else { "s" },
            doc["shared"]
        )
    };

    let out = tmp.path().join("merged.tar");
    let (doc, stderr) = summary(&[&a, &b, &c], &["--compression", "zstd"], &out);
    assert_eq!(doc["format"], "docker-archive");
    assert_eq!(doc["compression"], "zstd");
    assert_eq!(doc["images"], 3);
    assert_eq!(
        doc["tags"],
        serde_json::json!([
            "nixlayer-test/merge-oci-a:1",
            "nixlayer-test/merge-oci-a:latest",
            "nixlayer-test/merge-oci-b:2",
            "nixlayer-test/merge-oci-c:3",
        ])
    );
    assert_eq!(doc["unit"], "blob");
    assert!(stderr.contains(&counts(&doc)), "{doc} vs {stderr}");
    assert_eq!(doc["bytes"], std::fs::metadata(&out).unwrap().len());
    assert_eq!(doc["output"], out.display().to_string());

    let layout = tmp.path().join("merged-layout");
    let (doc, stderr) = summary(&[&a, &b], &["--format", "oci-layout"], &layout);
    assert_eq!(doc["format"], "oci-layout");
    assert_eq!(doc["compression"], Value::Null, "blobs kept as stored");
    assert_eq!(doc["images"], 3);
    assert!(doc["shared"].as_u64().unwrap() > 0, "{doc}");
    assert!(stderr.contains(&counts(&doc)), "{doc} vs {stderr}");

    // docker-archives into one: member by member.
    let again = tmp.path().join("c-again.tar");
    std::fs::copy(&c, &again).unwrap();
    let (doc, stderr) = summary(&[&c, &again], &[], &tmp.path().join("cc.tar"));
    assert_eq!(doc["unit"], "member");
    assert_eq!(doc["compression"], "none");
    assert!(stderr.contains(&counts(&doc)), "{doc} vs {stderr}");
}

/// Two inputs naming different images by one tag are refused before any
/// layer is read: with a layer of the first input corrupt (the first one a
/// merge would copy), every output format still fails with the clash, not
/// the corrupt layer, and leaves nothing. (Before, an OCI output copied
/// every layer of every input first — a minute for large inputs — and
/// here failed on the corrupt layer instead.) Layouts and docker-archives.
#[test]
fn a_tag_clash_is_refused_before_any_layer_is_read() {
    let tmp = util::temp_dir();
    let name = "nixlayer-test/merge-clash-early";
    let clash = format!("`{name}:1` names two different images");
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let layout = ["--format", "oci-layout"];
    build(&example(tmp.path(), name, "1", "a", false), &layout, &a);
    build(&example(tmp.path(), name, "1", "b", false), &layout, &b);
    let blob = a.join("blobs/sha256").join(store_layer(&a));
    flip(&blob, std::fs::metadata(&blob).unwrap().len() / 2);
    refused_leaving_nothing(tmp.path(), &[&a, &b], &[&clash]);

    let (c, d) = (tmp.path().join("c.tar"), tmp.path().join("d.tar"));
    build(&example(tmp.path(), name, "1", "c", false), &[], &c);
    build(&example(tmp.path(), name, "1", "d", false), &[], &d);
    // The data of the first layer member of `c`.
    let listing = String::from_utf8(tool("tar", &["-tvRf", c.to_str().unwrap()])).unwrap();
    let (block, size) = listing
        .lines()
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            let block: u64 = fields.get(1)?.trim_end_matches(':').parse().ok()?;
            let size: u64 = fields.get(4)?.parse().ok()?;
            fields
                .last()?
                .ends_with("/layer.tar")
                .then_some((block, size))
        })
        .next()
        .expect("a layer member");
    flip(&c, (block + 1) * 512 + size / 2);
    refused_leaving_nothing(tmp.path(), &[&c, &d], &[&clash]);
}
