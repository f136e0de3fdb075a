//! SBOMs: `nixlayer sbom`, `build --sbom` and `push --sbom`, checked by
//! the real validators from PyPI (`spdx-tools`' `pyspdxtools` and
//! `cyclonedx-python-lib`'s JSON schema validation), installed by
//! `scripts/test` in a venv (`target/sbom-validators`, or
//! `NIXLAYER_SBOM_VALIDATORS`); the attachments are read back from OCI
//! layouts and archives, and from a registry of the test's own (Debian's
//! `docker-registry` 2.8: no referrers API, so the referrers tag), directly
//! or through a proxy that answers as a registry with the referrers API.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::push::{fresh_registry, json};
use crate::util::{self, nixlayer, run};

const FORMATS: [&str; 2] = ["spdx-json", "cyclonedx-json"];

/// The validators' venv: `NIXLAYER_SBOM_VALIDATORS`, else
/// `target/sbom-validators`; `None` (skip) when it is missing outside CI.
fn validators() -> Option<PathBuf> {
    let venv = std::env::var_os("NIXLAYER_SBOM_VALIDATORS").map_or_else(
        || util::repo().join("target/sbom-validators"),
        PathBuf::from,
    );
    let ready = venv.join("bin/pyspdxtools").is_file()
        && Command::new(venv.join("bin/python"))
            .args(["-c", "import cyclonedx.validation.json, jsonschema"])
            .output()
            .is_ok_and(|o| o.status.success());
    if !ready {
        assert!(
            !util::under_ci(),
            "the SBOM validators are required under CI: scripts/test installs them in `{}`",
            venv.display()
        );
        eprintln!("skipped: no SBOM validators in `{}`", venv.display());
        return None;
    }
    Some(venv)
}

/// Validates the SBOM `bytes` in `format` with the real validator.
fn validate(venv: &Path, format: &str, bytes: &[u8]) {
    let dir = util::temp_dir();
    let file = dir.path().join("sbom.json");
    std::fs::write(&file, bytes).unwrap();
    let out = match format {
        "spdx-json" => Command::new(venv.join("bin/pyspdxtools"))
            .arg("-i")
            .arg(&file)
            .output(),
        _ => Command::new(venv.join("bin/python"))
            .arg("-c")
            .arg(
                "import sys\n\
                 from cyclonedx.schema import SchemaVersion\n\
                 from cyclonedx.validation.json import JsonStrictValidator\n\
                 e = JsonStrictValidator(SchemaVersion.V1_6).validate_str(open(sys.argv[1]).read())\n\
                 print(e or '')\n\
                 sys.exit(1 if e else 0)\n",
            )
            .arg(&file)
            .output(),
    }
    .expect("run the validator");
    assert!(
        out.status.success(),
        "{format} SBOM is invalid:\n{}{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(bytes)
    );
}

/// `nixlayer sbom MANIFEST --format FORMAT`: its stdout.
fn sbom(manifest: &Path, format: &str, extra: &[&str]) -> Vec<u8> {
    run(
        nixlayer()
            .arg("sbom")
            .arg(manifest)
            .args(["--format", format])
            .args(extra),
        0,
    )
    .stdout
}

/// A manifest for `root` whose closure comes from `source` (a TOML value;
/// empty: the local store).
fn manifest_for(dir: &Path, name: &str, root: &Path, source: &str, extra: &str) -> PathBuf {
    let root = root.display();
    let source = if source.is_empty() {
        String::new()
    } else {
        format!("source = {source}")
    };
    util::write(
        dir,
        name,
        &format!(
            r#"name = "nixlayer-test/sbom"
tag = "it"
created = "2024-02-03T04:05:06Z"
{extra}
[closure]
roots = ["{root}"]
{source}
"#
        ),
    )
}

fn closure_of(root: &Path) -> Vec<String> {
    let mut paths: Vec<String> =
        String::from_utf8(util::nix("nix-store", &["-qR", root.to_str().unwrap()]))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
    paths.sort();
    paths
}

/// The CycloneDX components' store paths and SHA-256 hashes.
fn cdx_hashes(doc: &Value) -> Vec<(String, String)> {
    doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["bom-ref"].as_str().unwrap().to_owned(),
                c["hashes"][0]["content"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// `nix-store --query --hash` of `path`, in hex.
fn nix_hash_hex(path: &str) -> String {
    let text = String::from_utf8(util::nix("nix-store", &["--query", "--hash", path])).unwrap();
    let nix32 = text.trim().strip_prefix("sha256:").unwrap().to_owned();
    let hex = util::nix("nix", &["hash", "to-base16", "--type", "sha256", &nix32]);
    String::from_utf8(hex).unwrap().trim().to_owned()
}

/// The SBOMs of the python closure (Debian's python3 in the store) and of
/// the hello fixture validate in both formats; one package per store path,
/// each with the narHash Nix records, and the reference graph.
///
/// ```text
/// python3-minimal ─► python3.11-minimal ─► libpython3.11-minimal ─► libc6
///                            ├──────────► libexpat1 ──────────────► libc6
///                            └──────────► zlib1g ─────────────────► libc6
/// ```
#[test]
fn sboms_of_the_python_and_hello_closures_validate() {
    let Some(venv) = validators() else { return };
    let (Some(python), Some(hello)) = (
        util::nix_fixture("debian-python"),
        util::nix_fixture("hello"),
    ) else {
        return;
    };
    let dir = util::temp_dir();
    for (name, root) in [("python", &python), ("hello", &hello)] {
        let m = manifest_for(dir.path(), &format!("{name}.toml"), root, "", "");
        let closure = closure_of(root);
        for format in FORMATS {
            let bytes = sbom(&m, format, &[]);
            validate(&venv, format, &bytes);
            assert_eq!(bytes, sbom(&m, format, &[]), "the same bytes every time");
            let doc: Value = serde_json::from_slice(&bytes).unwrap();
            if format == "cyclonedx-json" {
                let hashes = cdx_hashes(&doc);
                let paths: Vec<&str> = hashes.iter().map(|(p, _)| p.as_str()).collect();
                assert_eq!(paths, closure, "{name}: one component per store path");
                for (path, hash) in &hashes {
                    assert_eq!(*hash, nix_hash_hex(path), "{path}");
                }
                let deps = doc["dependencies"].as_array().unwrap();
                assert_eq!(deps[0]["dependsOn"][0], root.to_str().unwrap());
            } else {
                // The image and one package per store path.
                assert_eq!(doc["packages"].as_array().unwrap().len(), closure.len() + 1);
            }
        }
    }
    // python3.11-minimal depends on libexpat1 and zlib1g.
    let m = manifest_for(dir.path(), "python.toml", &python, "", "");
    let doc: Value = serde_json::from_slice(&sbom(&m, "cyclonedx-json", &[])).unwrap();
    let deps = doc["dependencies"].as_array().unwrap();
    let minimal = deps
        .iter()
        .find(|d| {
            d["ref"]
                .as_str()
                .unwrap()
                .ends_with("-deb-python3.11-minimal")
        })
        .unwrap();
    let paths: Vec<&str> = minimal["dependsOn"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_str().unwrap())
        .collect();
    assert!(paths.is_sorted(), "sorted by store path: {paths:?}");
    let mut names: Vec<&str> = paths.iter().map(|p| &p[44..]).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "deb-libc6",
            "deb-libexpat1",
            "deb-libpython3.11-minimal",
            "deb-zlib1g"
        ]
    );
}

/// Every closure source gives the same SBOM bytes: the local store, a
/// DOT graph (no hashes: computed from the store by serialising each path
/// as a NAR) and a signed binary cache (`nix copy`, no local store read).
#[test]
fn every_closure_source_gives_the_same_sbom() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let dir = util::temp_dir();
    let root = hello.to_str().unwrap();
    let dot = dir.path().join("closure.dot");
    std::fs::write(&dot, util::nix("nix-store", &["--query", "--graph", root])).unwrap();
    let (secret, public) = crate::binary_cache::keypair(dir.path(), "sbom-test-1");
    let store_path =
        nixlayer::nix::StorePath::parse(&nixlayer::nix::StoreDir::default(), root).unwrap();
    crate::binary_cache::nix_copy(
        &dir.path().join("cache"),
        "xz",
        Some(&secret),
        &[store_path],
    );
    std::fs::create_dir(dir.path().join("empty-root")).unwrap();
    let local = manifest_for(dir.path(), "local.toml", &hello, "", "");
    let from_dot = manifest_for(
        dir.path(),
        "dot.toml",
        &hello,
        r#"{ dot = "closure.dot" }"#,
        "",
    );
    let from_cache = manifest_for(
        dir.path(),
        "cache.toml",
        &hello,
        &format!(
            "{{ binary_cache = \"file://{}\" }}\ntrusted_public_keys = [\"{public}\"]",
            dir.path().join("cache").display()
        ),
        "[store]\nroot = \"empty-root\"",
    );
    for format in FORMATS {
        let expected = sbom(&local, format, &[]);
        assert_eq!(sbom(&from_dot, format, &[]), expected, "DOT, {format}");
        let mut cache_run = nixlayer();
        cache_run
            .env("XDG_CACHE_HOME", dir.path().join("xdg"))
            .arg("sbom")
            .arg(&from_cache)
            .args(["--format", format]);
        assert_eq!(
            run(&mut cache_run, 0).stdout,
            expected,
            "binary cache, {format}"
        );
    }
}

/// A store of our own under `store.root` whose names use every odd
/// character a store path may have, read through a DOT graph: valid SPDX
/// IDs and purls, and NAR hashes computed from the content that equal
/// `nix-store --dump | sha256sum` of the same trees.
///
/// ```text
/// g++_odd?=-1.0+x ──► -1.0 (a name Nix splits into "" and "1.0")
///        └──────────► hello- (no version)
/// ```
#[test]
fn odd_store_path_names_give_valid_sboms() {
    let Some(venv) = validators() else { return };
    if !util::require_tool("nix-store") {
        return;
    }
    let dir = util::temp_dir();
    let names = [
        "0123456789abcdfghijklmnpqrsvwxyz-g++_odd?=-1.0+x",
        "1123456789abcdfghijklmnpqrsvwxyz--1.0",
        "2123456789abcdfghijklmnpqrsvwxyz-hello-",
    ];
    let store = dir.path().join("root/nix/store");
    for (i, name) in names.iter().enumerate() {
        let p = store.join(name);
        std::fs::create_dir_all(p.join("bin")).unwrap();
        std::fs::write(p.join("bin/x"), format!("#!/bin/sh\necho {i}\n")).unwrap();
        std::fs::write(p.join("README"), "odd\n").unwrap();
        std::os::unix::fs::symlink("bin/x", p.join("link")).unwrap();
        let mut perms = std::fs::metadata(p.join("bin/x")).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(p.join("bin/x"), perms).unwrap();
    }
    let node = |n: &str| format!("\"{n}\" [label = \"x\"];\n");
    let dot = format!(
        "digraph G {{\n{}{}{}\"{}\" -> \"{}\";\n\"{}\" -> \"{}\";\n}}\n",
        node(names[0]),
        node(names[1]),
        node(names[2]),
        names[1],
        names[0],
        names[2],
        names[0]
    );
    std::fs::write(dir.path().join("odd.dot"), dot).unwrap();
    let m = manifest_for(
        dir.path(),
        "odd.toml",
        Path::new(&format!("/nix/store/{}", names[0])),
        r#"{ dot = "odd.dot" }"#,
        "[store]\nroot = \"root\"",
    );
    for format in FORMATS {
        validate(&venv, format, &sbom(&m, format, &[]));
    }
    let doc: Value = serde_json::from_slice(&sbom(&m, "cyclonedx-json", &[])).unwrap();
    for (path, hash) in cdx_hashes(&doc) {
        let disk = dir.path().join("root").join(path.trim_start_matches('/'));
        let nar = util::nix("nix-store", &["--dump", disk.to_str().unwrap()]);
        assert_eq!(hash, nixlayer::oci::Digest::of(&nar).hex(), "{path}");
    }
    let purls: Vec<&str> = doc["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["purl"].as_str().unwrap())
        .collect();
    assert_eq!(
        purls,
        [
            "pkg:nix/g%2B%2B_odd%3F%3D@1.0%2Bx?store_path_hash=0123456789abcdfghijklmnpqrsvwxyz",
            "pkg:nix/-1.0?store_path_hash=1123456789abcdfghijklmnpqrsvwxyz",
            "pkg:nix/hello-?store_path_hash=2123456789abcdfghijklmnpqrsvwxyz",
        ]
    );
}

/// The example manifest (committed store, no Nix) with an arm64 platform
/// of the same closure beside the default amd64 one.
fn two_platforms(dir: &Path) -> PathBuf {
    let example = util::repo().join("fixtures/example");
    let text = std::fs::read_to_string(util::repo().join("manifests/example.toml")).unwrap();
    let text = text
        .replace(
            "\"../fixtures/example/",
            &format!("\"{}/", example.display()),
        )
        .replace("\"fixtures/example/", &format!("\"{}/", example.display()));
    let roots = text
        .lines()
        .find(|l| l.trim_start().starts_with("roots"))
        .unwrap()
        .to_owned();
    util::write(
        dir,
        "multi.toml",
        &format!(
            "{text}\n[[platforms]]\narchitecture = \"arm64\"\n[platforms.closure]\n{roots}\nsource = {{ graph = \"{ex}/graph.json\" }}\n[platforms.store]\nroot = \"{ex}/store\"\n",
            ex = example.display()
        ),
    )
}

/// The index entries of a layout's `index.json` that are artifacts.
fn referrers(index: &Value) -> Vec<Value> {
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m.get("artifactType").is_some())
        .cloned()
        .collect()
}

fn blob(layout: &Path, digest: &str) -> Vec<u8> {
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// `build --sbom` into an OCI layout: each SBOM is an OCI 1.1 artifact
/// (`artifactType`, the empty config, the SBOM as its one layer, the image
/// manifest as `subject`) listed in `index.json` without a ref name; its
/// bytes are `nixlayer sbom`'s. skopeo still copies the image by its tag,
/// `inspect` still shows one image, and a rebuild lists each artifact once.
#[test]
fn build_attaches_sboms_to_an_oci_layout() {
    let dir = util::temp_dir();
    let example = util::repo().join("manifests/example.toml");
    let layout = dir.path().join("oci");
    let build = || {
        let out = run(
            nixlayer()
                .arg("build")
                .arg(&example)
                .args(["--format", "oci-layout", "-o"])
                .arg(&layout)
                .args(["--sbom", "spdx-json", "--sbom", "cyclonedx-json", "--json"]),
            0,
        );
        json(&out.stdout)
    };
    let summary = build();
    let manifest_digest = summary["manifest_digest"].as_str().unwrap().to_owned();
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let found = referrers(&index);
    assert_eq!(found.len(), 2, "{index}");
    for (entry, format) in found.iter().zip(FORMATS) {
        assert!(entry
            .get("annotations")
            .unwrap()
            .get("org.opencontainers.image.ref.name")
            .is_none());
        let artifact: Value =
            serde_json::from_slice(&blob(&layout, entry["digest"].as_str().unwrap())).unwrap();
        assert_eq!(artifact["artifactType"], entry["artifactType"]);
        assert_eq!(artifact["subject"]["digest"], manifest_digest.as_str());
        assert_eq!(
            artifact["config"]["mediaType"],
            "application/vnd.oci.empty.v1+json"
        );
        assert_eq!(
            blob(&layout, artifact["config"]["digest"].as_str().unwrap()),
            b"{}"
        );
        let sbom_bytes = blob(&layout, artifact["layers"][0]["digest"].as_str().unwrap());
        assert_eq!(sbom_bytes, sbom(&example, format, &[]), "{format}");
        let listed = summary["sboms"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["artifact_manifest"] == entry["digest"]);
        assert!(listed, "{summary}");
    }
    // A rebuild keeps one entry per artifact.
    build();
    let again: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(referrers(&again), found);
    // The image is still the one image of the layout.
    let inspected = json(&run(nixlayer().arg("inspect").arg(&layout).arg("--json"), 0).stdout);
    assert_eq!(inspected["images"].as_array().unwrap().len(), 1);
    if util::require_tool("skopeo") {
        let dest = dir.path().join("copy");
        util::tool(
            "skopeo",
            &[
                "copy",
                &format!("oci:{}:0.3", layout.display()),
                &format!("oci:{}:0.3", dest.display()),
            ],
        );
    }
}

/// `merge` of a layout with SBOMs attached: into an OCI layout or archive
/// the artifacts come along whole (their manifests, the empty config and
/// the SBOM blobs; `index.json` named blobs that were never copied), and
/// into a docker-archive they are left out (it was refused, the SBOM taken
/// for an untagged multi-platform index). The summary counts images only.
#[test]
fn merge_carries_sboms_into_oci_and_leaves_them_out_of_docker() {
    let dir = util::temp_dir();
    let example = util::repo().join("manifests/example.toml");
    let layout = dir.path().join("oci");
    run(
        nixlayer()
            .arg("build")
            .arg(&example)
            .args(["--format", "oci-layout", "-o"])
            .arg(&layout)
            .args(["--sbom", "spdx-json", "--sbom", "cyclonedx-json"]),
        0,
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let found = referrers(&index);
    assert_eq!(found.len(), 2, "{index}");

    let merged = dir.path().join("merged");
    let out = run(
        nixlayer()
            .args(["merge", "--json", "--format", "oci-layout", "-o"])
            .arg(&merged)
            .arg(&layout),
        0,
    );
    assert_eq!(
        json(&out.stdout)["images"],
        1,
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let again: Value =
        serde_json::from_slice(&std::fs::read(merged.join("index.json")).unwrap()).unwrap();
    assert_eq!(referrers(&again), found);
    for entry in &found {
        let artifact: Value =
            serde_json::from_slice(&blob(&merged, entry["digest"].as_str().unwrap())).unwrap();
        assert_eq!(
            blob(&merged, artifact["config"]["digest"].as_str().unwrap()),
            b"{}"
        );
        let digest = artifact["layers"][0]["digest"].as_str().unwrap();
        assert_eq!(blob(&merged, digest), blob(&layout, digest));
    }
    // The merged layout reads back whole.
    run(nixlayer().arg("inspect").arg(&merged), 0);

    let archive = dir.path().join("merged.tar");
    run(
        nixlayer().args(["merge", "-o"]).arg(&archive).arg(&layout),
        0,
    );
    let inspected = json(&run(nixlayer().arg("inspect").arg(&archive).arg("--json"), 0).stdout);
    assert_eq!(
        inspected["images"].as_array().unwrap().len(),
        1,
        "{inspected}"
    );
}

/// A multi-platform OCI archive gets one SBOM per platform image, each
/// naming its platform's manifest; `nixlayer sbom` asks which platform.
#[test]
fn each_platform_image_gets_its_sbom() {
    let dir = util::temp_dir();
    let m = two_platforms(dir.path());
    let archive = dir.path().join("multi.tar");
    run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args([
                "--format",
                "oci-archive",
                "--no-arch-check",
                "--sbom",
                "cyclonedx-json",
                "-o",
            ])
            .arg(&archive),
        0,
    );
    let unpacked = dir.path().join("unpacked");
    std::fs::create_dir(&unpacked).unwrap();
    util::tool(
        "tar",
        &[
            "-xf",
            archive.to_str().unwrap(),
            "-C",
            unpacked.to_str().unwrap(),
        ],
    );
    let index: Value =
        serde_json::from_slice(&std::fs::read(unpacked.join("index.json")).unwrap()).unwrap();
    let found = referrers(&index);
    assert_eq!(found.len(), 2, "{index}");
    let image_index: Value = serde_json::from_slice(&blob(
        &unpacked,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let mut platform_manifests: Vec<&str> = image_index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["digest"].as_str().unwrap())
        .collect();
    let mut subjects: Vec<String> = found
        .iter()
        .map(|e| {
            let a: Value =
                serde_json::from_slice(&blob(&unpacked, e["digest"].as_str().unwrap())).unwrap();
            a["subject"]["digest"].as_str().unwrap().to_owned()
        })
        .collect();
    platform_manifests.sort_unstable();
    subjects.sort();
    assert_eq!(subjects, platform_manifests);
    // Without `--platform` there is no one image to describe.
    let out = run(
        nixlayer()
            .arg("sbom")
            .arg(&m)
            .args(["--format", "spdx-json"]),
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--platform"));
    let arm: Value =
        serde_json::from_slice(&sbom(&m, "cyclonedx-json", &["--platform", "arm64"])).unwrap();
    assert_eq!(
        arm["metadata"]["component"]["properties"][0]["value"],
        "linux/arm64"
    );
}

/// A multi-platform OCI layout built with `--sbom` says, as a
/// single-platform one does, which SBOM it attached to which image
/// manifest: one line per platform, naming it. It used to print none.
#[test]
fn a_multi_platform_build_reports_each_attached_sbom() {
    let dir = util::temp_dir();
    let m = two_platforms(dir.path());
    let layout = dir.path().join("layout");
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args([
                "--format",
                "oci-layout",
                "--no-arch-check",
                "--sbom",
                "spdx-json",
                "-o",
            ])
            .arg(&layout),
        0,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let image_index: Value = serde_json::from_slice(&blob(
        &layout,
        index["manifests"][0]["digest"].as_str().unwrap(),
    ))
    .unwrap();
    let platforms = image_index["manifests"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    for p in platforms {
        let line = format!(
            "to {} ({})\n",
            p["digest"].as_str().unwrap(),
            p["platform"]["architecture"].as_str().unwrap()
        );
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("attached the spdx-json SBOM (sha256:")
                    && format!("{l}\n").ends_with(&line)),
            "no `attached … {line}` in {stderr}"
        );
    }
    assert_eq!(stderr.matches("attached the").count(), 2, "{stderr}");
}

/// The example's SBOMs are pinned: the whole path from the manifest and
/// its graph file to the bytes (a change must be deliberate; the tool's
/// version is part of them).
#[test]
fn the_example_sboms_have_golden_digests() {
    let example = util::repo().join("manifests/example.toml");
    let digest = |f| nixlayer::oci::Digest::of(&sbom(&example, f, &[])).hex();
    assert_eq!(
        digest("spdx-json"),
        "445c9897b7cd20197dc2d98f2339a5d56addc58cf7c29ad3f97a6ea3e74e670c"
    );
    assert_eq!(
        digest("cyclonedx-json"),
        "0d51cba242a90a2ab305d39fef5224e50eab7adc9a3d2c4f4d4fac8d04a80b89"
    );
    if let Some(venv) = validators() {
        for format in FORMATS {
            validate(&venv, format, &sbom(&example, format, &[]));
        }
    }
}

/// A docker-archive has no place for an artifact: its SBOM is written
/// beside it; a streamed one has nowhere to put it (a usage error).
#[test]
fn a_docker_archive_gets_its_sbom_beside_it() {
    let dir = util::temp_dir();
    let example = util::repo().join("manifests/example.toml");
    let tar = dir.path().join("image.tar");
    run(
        nixlayer()
            .arg("build")
            .arg(&example)
            .arg("-o")
            .arg(&tar)
            .args(["--sbom", "cyclonedx-json", "--tag", "other/name:7"]),
        0,
    );
    let beside = std::fs::read(dir.path().join("image.tar.cdx.json")).unwrap();
    assert_eq!(
        beside,
        sbom(&example, "cyclonedx-json", &["--tag", "other/name:7"])
    );
    let doc: Value = serde_json::from_slice(&beside).unwrap();
    assert_eq!(doc["metadata"]["component"]["name"], "other/name");
    assert_eq!(doc["metadata"]["component"]["version"], "7");
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&example)
            .args(["--stream", "--sbom", "spdx-json"])
            .stdout(std::process::Stdio::piped()),
        2,
    );
    assert!(out.stdout.is_empty());
    // `-o` for `nixlayer sbom` writes the same bytes.
    let file = dir.path().join("x.spdx.json");
    run(
        nixlayer()
            .arg("sbom")
            .arg(&example)
            .args(["--format", "spdx-json", "-o"])
            .arg(&file),
        0,
    );
    assert_eq!(
        std::fs::read(&file).unwrap(),
        sbom(&example, "spdx-json", &[])
    );
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// GETs `/v2/REPO/manifests/REF` from `registry` (`host:port`): status and body.
fn get_manifest(registry: &str, repo: &str, reference: &str) -> (u16, Vec<u8>) {
    let mut resp = agent()
        .get(format!("http://{registry}/v2/{repo}/manifests/{reference}"))
        .header(
            "Accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json",
        )
        .call()
        .unwrap();
    let status = resp.status().as_u16();
    let mut body = Vec::new();
    resp.body_mut().as_reader().read_to_end(&mut body).unwrap();
    (status, body)
}

fn push_sbom(m: &Path, reference: &str) -> Value {
    json(
        &run(
            nixlayer().arg("push").arg(m).arg(reference).args([
                "--sbom",
                "spdx-json",
                "--sbom",
                "cyclonedx-json",
                "--json",
                "--no-cache",
            ]),
            0,
        )
        .stdout,
    )
}

/// `push --sbom` to Debian's registry, which has no referrers API: each
/// artifact is PUT by digest and listed in the referrers tag
/// `sha256-<manifest hex>`; a second push lists each once; the SBOM blob is
/// what `nixlayer sbom` prints.
#[test]
fn push_lists_sboms_in_the_referrers_tag_without_a_referrers_api() {
    if !util::require_tool("docker-registry") {
        return;
    }
    let registry = fresh_registry();
    let host = format!("127.0.0.1:{}", registry.port);
    let example = util::repo().join("manifests/example.toml");
    let summary = push_sbom(&example, &format!("{host}/sbom/example:1"));
    assert_eq!(summary["referrers"]["tagged"], 2, "{summary}");
    assert_eq!(summary["referrers"]["api"], 0);
    let subject = summary["manifest_digest"].as_str().unwrap();
    let tag = subject.replace("sha256:", "sha256-");
    let (status, body) = get_manifest(&host, "sbom/example", &tag);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let index: Value = serde_json::from_slice(&body).unwrap();
    let entries = index["manifests"].as_array().unwrap().clone();
    assert_eq!(entries.len(), 2);
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["artifactType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["application/spdx+json", "application/vnd.cyclonedx+json"]
    );
    for (entry, format) in entries.iter().zip(FORMATS) {
        let (status, body) = get_manifest(&host, "sbom/example", entry["digest"].as_str().unwrap());
        assert_eq!(status, 200);
        let artifact: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(artifact["subject"]["digest"], subject);
        let layer = artifact["layers"][0]["digest"].as_str().unwrap();
        let mut resp = agent()
            .get(format!("http://{host}/v2/sbom/example/blobs/{layer}"))
            .call()
            .unwrap();
        let mut bytes = Vec::new();
        resp.body_mut().as_reader().read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, sbom(&example, format, &[]), "{format}");
    }
    // Again: the same artifacts, listed once each.
    push_sbom(&example, &format!("{host}/sbom/example:1"));
    let (_, body) = get_manifest(&host, "sbom/example", &tag);
    let again: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(again["manifests"].as_array().unwrap(), &entries);
    // What a user runs to find them.
    if util::require_tool("skopeo") {
        let raw = util::tool(
            "skopeo",
            &[
                "inspect",
                "--raw",
                "--tls-verify=false",
                &format!("docker://{host}/sbom/example:{tag}"),
            ],
        );
        let seen: Value = serde_json::from_slice(&raw).unwrap();
        assert_eq!(seen["manifests"], again["manifests"]);
    }
}

/// A multi-platform push lists each platform's SBOM in the referrers tag
/// of that platform's manifest.
#[test]
fn a_multi_platform_push_attaches_an_sbom_to_each_platform() {
    if !util::require_tool("docker-registry") {
        return;
    }
    let registry = fresh_registry();
    let host = format!("127.0.0.1:{}", registry.port);
    let dir = util::temp_dir();
    let m = two_platforms(dir.path());
    let summary = json(
        &run(
            nixlayer()
                .arg("push")
                .arg(&m)
                .arg(format!("{host}/sbom/multi:1"))
                .args([
                    "--sbom",
                    "spdx-json",
                    "--json",
                    "--no-cache",
                    "--no-arch-check",
                ]),
            0,
        )
        .stdout,
    );
    assert_eq!(summary["referrers"]["tagged"], 2, "{summary}");
    let platforms = summary["platforms"].as_array().unwrap();
    assert_eq!(platforms.len(), 2);
    for p in platforms {
        let subject = p["manifest_digest"].as_str().unwrap();
        let (status, body) =
            get_manifest(&host, "sbom/multi", &subject.replace("sha256:", "sha256-"));
        assert_eq!(status, 200);
        let index: Value = serde_json::from_slice(&body).unwrap();
        let entries = index["manifests"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["digest"], p["sboms"][0]["artifact_manifest"]);
    }
}

/// A proxy in front of `upstream` that answers every PUT of a manifest by
/// digest with `OCI-Subject`, as a registry with the referrers API does;
/// it counts requests for referrers tags. Bounded: 200 connections, two
/// minutes, stopped on drop.
struct SubjectProxy {
    port: u16,
    stop: Arc<AtomicBool>,
    tag_requests: Arc<std::sync::atomic::AtomicUsize>,
    accept: Option<thread::JoinHandle<()>>,
}

impl Drop for SubjectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn read_head(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..i]).into_owned();
            return Some((head, buf[i + 4..].to_vec()));
        }
        if buf.len() > 64 << 10 {
            return None;
        }
        let n = conn.read(&mut chunk).ok()?;
        // A TLS handshake (the client tries HTTPS first on loopback): closed.
        if n == 0 || (buf.is_empty() && chunk[0] == 0x16) {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn subject_proxy(upstream: u16) -> SubjectProxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(AtomicBool::new(false));
    let tag_requests = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let accept = {
        let (stop, tag_requests) = (stop.clone(), tag_requests.clone());
        thread::spawn(move || {
            let born = Instant::now();
            let mut accepted = 0;
            while !stop.load(Ordering::Relaxed) && accepted < 200 && born.elapsed().as_secs() < 120
            {
                let Ok((conn, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(5));
                    continue;
                };
                accepted += 1;
                let tag_requests = tag_requests.clone();
                thread::spawn(move || relay(conn, upstream, &tag_requests));
            }
        })
    };
    SubjectProxy {
        port,
        stop,
        tag_requests,
        accept: Some(accept),
    }
}

/// Relays one request (`Connection: close` both ways); a manifest PUT by
/// digest gets `OCI-Subject` in its answer.
fn relay(mut client: TcpStream, upstream: u16, tag_requests: &std::sync::atomic::AtomicUsize) {
    client.set_nonblocking(false).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let Some((head, rest)) = read_head(&mut client) else {
        return;
    };
    let first = head.lines().next().unwrap_or("").to_owned();
    let target = first.split(' ').nth(1).unwrap_or("");
    if target.contains("/manifests/sha256-") {
        tag_requests.fetch_add(1, Ordering::Relaxed);
    }
    let by_digest = first.starts_with("PUT ") && target.contains("/manifests/sha256:");
    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    up.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut out = String::new();
    for line in head.lines() {
        let lower = line.to_ascii_lowercase();
        if !lower.starts_with("connection:") && !lower.starts_with("keep-alive:") {
            out += line;
            out += "\r\n";
        }
    }
    out += "Connection: close\r\n\r\n";
    if up.write_all(out.as_bytes()).is_err() || up.write_all(&rest).is_err() {
        return;
    }
    let pump = {
        let (mut from, mut to) = (client.try_clone().unwrap(), up.try_clone().unwrap());
        thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
        })
    };
    if let Some((answer, rest)) = read_head(&mut up) {
        let mut out = String::new();
        for line in answer.lines() {
            if !line.to_ascii_lowercase().starts_with("connection:") {
                out += line;
                out += "\r\n";
            }
        }
        if by_digest {
            out += "OCI-Subject: sha256:0000000000000000000000000000000000000000000000000000000000000000\r\n";
        }
        out += "Connection: close\r\n\r\n";
        let _ = client.write_all(out.as_bytes());
        let _ = client.write_all(&rest);
        let _ = std::io::copy(&mut up, &mut client);
    }
    let _ = client.shutdown(Shutdown::Both);
    let _ = up.shutdown(Shutdown::Both);
    let _ = pump.join();
}

/// Through a registry that has the referrers API (answers `OCI-Subject`),
/// the artifacts are PUT by digest and no referrers tag is read or made.
#[test]
fn push_uses_the_referrers_api_when_the_registry_has_it() {
    if !util::require_tool("docker-registry") {
        return;
    }
    let registry = fresh_registry();
    let proxy = subject_proxy(registry.port);
    let example = util::repo().join("manifests/example.toml");
    let summary = push_sbom(&example, &format!("127.0.0.1:{}/sbom/api:1", proxy.port));
    assert_eq!(summary["referrers"]["api"], 2, "{summary}");
    assert_eq!(summary["referrers"]["tagged"], 0);
    assert_eq!(proxy.tag_requests.load(Ordering::Relaxed), 0);
    let host = format!("127.0.0.1:{}", registry.port);
    let tag = summary["manifest_digest"]
        .as_str()
        .unwrap()
        .replace("sha256:", "sha256-");
    assert_eq!(get_manifest(&host, "sbom/api", &tag).0, 404);
    for s in summary["sboms"].as_array().unwrap() {
        let digest = s["artifact_manifest"].as_str().unwrap();
        assert_eq!(get_manifest(&host, "sbom/api", digest).0, 200);
    }
}

/// A referrers tag holding something else than an index is not replaced,
/// and the push fails before its tag is PUT.
#[test]
fn a_referrers_tag_that_is_no_index_is_not_replaced() {
    if !util::require_tool("docker-registry") {
        return;
    }
    let registry = fresh_registry();
    let host = format!("127.0.0.1:{}", registry.port);
    let example = util::repo().join("manifests/example.toml");
    // Push once without SBOMs, then put the image manifest itself at its
    // referrers tag (an image manifest, not an index).
    let first = json(
        &run(
            nixlayer()
                .arg("push")
                .arg(&example)
                .arg(format!("{host}/sbom/hostile:1"))
                .args(["--json", "--no-cache"]),
            0,
        )
        .stdout,
    );
    let digest = first["manifest_digest"].as_str().unwrap();
    let (_, manifest) = get_manifest(&host, "sbom/hostile", digest);
    let tag = digest.replace("sha256:", "sha256-");
    let put = agent()
        .put(format!("http://{host}/v2/sbom/hostile/manifests/{tag}"))
        .header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
        .send(&manifest[..])
        .unwrap();
    assert_eq!(put.status().as_u16(), 201);
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&example)
            .arg(format!("{host}/sbom/hostile:2"))
            .args(["--sbom", "spdx-json", "--no-cache"]),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&tag) && stderr.contains("not an OCI image index"),
        "{stderr}"
    );
    assert_eq!(get_manifest(&host, "sbom/hostile", &tag).1, manifest);
    // The SBOM failed before any tag moved: `:2` was never pushed.
    assert_eq!(get_manifest(&host, "sbom/hostile", "2").0, 404);
}

/// A manifest whose `[base]` is on a registry is pulled as `build` pulls
/// it: `sbom` takes `--ca-file` (and the other registry flags). It had
/// none (`--ca-file` was a usage error), so the SBOM of an image on a
/// base behind a private CA or a login could not be written.
#[test]
fn sbom_reaches_a_registry_base_with_the_registry_flags() {
    if !util::require_tool("docker-registry") || !util::require_tool("openssl") {
        return;
    }
    let tmp = util::temp_dir();
    let (registry, ca) = crate::support::tls_registry(tmp.path(), "registry");
    let host = format!("127.0.0.1:{}", registry.port);
    let empty_certs_d = tmp.path().join("certs.d-empty");
    let env = |cmd: &mut Command, cache: &str| {
        cmd.env("NIXLAYER_CERTS_D", &empty_certs_d)
            .env("XDG_CACHE_HOME", tmp.path().join(cache))
            .env_remove("SSL_CERT_FILE");
    };
    let base = util::write(
        tmp.path(),
        "base.toml",
        "name = \"nixlayer-test/sbom-base\"\ntag = \"1\"\ncreated = \"2024-01-01T00:00:00Z\"\n[closure]\nroots = []\n[[customisation.files]]\npath = \"/etc/base.txt\"\ntext = \"base\\n\"\n",
    );
    let mut push = nixlayer();
    push.arg("push")
        .arg(&base)
        .arg(format!("{host}/nixlayer-test/sbom-base:1"))
        .arg("--json")
        .arg("--ca-file")
        .arg(&ca);
    env(&mut push, "cache");
    let pushed: Value = serde_json::from_slice(&run(&mut push, 0).stdout).unwrap();
    let digest = pushed["manifest_digest"].as_str().unwrap();
    let store = util::repo().join("fixtures/example/store");
    let top = util::write(
        tmp.path(),
        "top.toml",
        &format!(
            "name = \"nixlayer-test/sbom-top\"\ntag = \"1\"\ncreated = \"2024-01-01T00:00:00Z\"\n[base]\nimage = \"docker://{host}/nixlayer-test/sbom-base:1@{digest}\"\n\n{}",
            crate::support::example_closure(&store)
        ),
    );
    // Without the CA: a TLS failure naming the way to trust it.
    let mut cmd = nixlayer();
    cmd.arg("sbom").arg(&top).args(["--format", "spdx-json"]);
    env(&mut cmd, "cache-untrusted");
    let out = run(&mut cmd, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TLS failed") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    let mut cmd = nixlayer();
    cmd.arg("sbom")
        .arg(&top)
        .args(["--format", "spdx-json", "--ca-file"])
        .arg(&ca);
    env(&mut cmd, "cache-sbom");
    let doc: Value = serde_json::from_slice(&run(&mut cmd, 0).stdout).unwrap();
    let text = doc.to_string();
    assert!(text.contains("example-app-0.3"), "{doc}");
}
