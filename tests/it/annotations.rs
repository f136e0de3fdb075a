//! `[annotations]` and `--annotation`: the OCI image manifest carries them,
//! sorted, in canonical JSON; bad ones are located errors.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

use crate::util::{self, nixlayer, run};

/// The embedded example with `extra` appended.
fn example(dir: &Path, extra: &str) -> PathBuf {
    let repo = util::repo();
    util::write(
        dir,
        "image.toml",
        &format!(
            r#"name = "nixlayer-test/annotations"
tag = "t"

{closure}{extra}"#,
            closure = crate::support::example_closure(&repo.join("fixtures/example/store")),
        ),
    )
}

/// `nixlayer build MANIFEST --format oci-layout -o LAYOUT ARGS…`, which
/// must exit with `code`.
fn build_layout(manifest: &Path, layout: &Path, args: &[&str], code: i32) -> Output {
    run(
        nixlayer()
            .arg("build")
            .arg(manifest)
            .args(["--format", "oci-layout", "-o"])
            .arg(layout)
            .args(args),
        code,
    )
}

/// The `index.json` entries of a layout.
fn index_entries(layout: &Path) -> Vec<Value> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    index["manifests"].as_array().unwrap().clone()
}

/// The bytes of blob `digest` (`sha256:…`) of a layout.
fn blob_bytes(layout: &Path, digest: &Value) -> Vec<u8> {
    let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

/// The blob `digest` (`sha256:…`) of a layout, parsed.
fn blob(layout: &Path, digest: &Value) -> Value {
    serde_json::from_slice(&blob_bytes(layout, digest)).unwrap()
}

/// The image manifest's bytes in an OCI layout.
fn image_manifest(layout: &Path) -> Vec<u8> {
    blob_bytes(layout, &index_entries(layout)[0]["digest"])
}

/// `nixlayer push MANIFEST REFERENCE ARGS…` to the shared registry, then
/// the manifest it pushed (`repository:tag` there), asked for as `accept`.
fn pushed(manifest: &Path, name: &str, args: &[&str], accept: &str) -> Value {
    use crate::push::REGISTRY;
    let (repository, tag) = name.split_once(':').unwrap();
    run(
        nixlayer()
            .arg("push")
            .arg(manifest)
            .arg(format!("{REGISTRY}/{name}"))
            .args(args),
        0,
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{REGISTRY}/v2/{repository}/manifests/{tag}"))
        .header("Accept", accept)
        .call()
        .unwrap();
    serde_json::from_slice(&response.body_mut().read_to_vec().unwrap()).unwrap()
}

#[test]
fn annotations_from_the_manifest_and_flags_are_in_the_image_manifest() {
    let tmp = util::temp_dir();
    let manifest = example(
        tmp.path(),
        "\n[annotations]\n\"org.opencontainers.image.source\" = \"https://example.com/app\"\nb = \"1\"\n",
    );
    let layout = tmp.path().join("layout");
    build_layout(
        &manifest,
        &layout,
        &[
            "--annotation",
            "org.opencontainers.image.revision=abc=1",
            "--annotation",
            "b=2",
        ],
        0,
    );
    let bytes = image_manifest(&layout);
    let value: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        value["annotations"],
        json!({
            "b": "2",
            "org.opencontainers.image.revision": "abc=1",
            "org.opencontainers.image.source": "https://example.com/app",
        })
    );
    assert_eq!(serde_json::to_vec(&value).unwrap(), bytes, "canonical JSON");

    // Without any, the manifest has no `annotations` key at all.
    let plain = example(tmp.path(), "");
    let layout = tmp.path().join("plain");
    build_layout(&plain, &layout, &[], 0);
    let value: Value = serde_json::from_slice(&image_manifest(&layout)).unwrap();
    assert!(value.get("annotations").is_none(), "{value}");
}

#[test]
fn bad_annotations_are_located_errors() {
    let tmp = util::temp_dir();
    for (extra, line, words) in [
        ("\n[annotations]\nkey = 5\n", 12, "annotations"),
        ("\n[annotations]\n\"\" = \"a\"\n", 12, "must not be empty"),
    ] {
        let manifest = example(tmp.path(), extra);
        let out = tmp.path().join("image.tar");
        let failed = run(
            nixlayer().arg("build").arg(&manifest).arg("-o").arg(&out),
            1,
        );
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(
            stderr.contains(&format!("image.toml:{line}:")) && stderr.contains(words),
            "{extra}: {stderr}"
        );
        assert!(!out.exists());
    }
    let manifest = example(tmp.path(), "");
    let failed = run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args(["--annotation", "=x", "-o"])
            .arg(tmp.path().join("x.tar")),
        2,
    );
    assert!(
        String::from_utf8_lossy(&failed.stderr).contains("--annotation"),
        "{}",
        String::from_utf8_lossy(&failed.stderr)
    );
}

/// `--annotation LEVEL:KEY=VALUE` with a level other than `manifest` or
/// `index` (buildx's `manifest-descriptor`, a typo) is a usage error
/// naming it; it used to become part of the key (`idnex:k`) silently. A
/// key with a `:` after a reverse-domain prefix stays a key.
#[test]
fn an_unknown_annotation_level_is_refused() {
    let tmp = util::temp_dir();
    let manifest = example(tmp.path(), "");
    let out = tmp.path().join("x.tar");
    for flag in ["idnex:a.b=c", "manifest-descriptor:a.b=c"] {
        let failed = run(
            nixlayer()
                .arg("build")
                .arg(&manifest)
                .args(["--format", "oci-archive", "--annotation", flag, "-o"])
                .arg(&out),
            2,
        );
        let stderr = String::from_utf8_lossy(&failed.stderr);
        let level = flag.split(':').next().unwrap();
        assert!(
            stderr.contains(&format!("unknown level `{level}`")),
            "{stderr}"
        );
        assert!(!out.exists());
    }
    run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args([
                "--format",
                "oci-archive",
                "--annotation",
                "org.example:x=1",
                "-o",
            ])
            .arg(&out),
        0,
    );
}

#[test]
fn push_writes_the_annotations_to_the_registry() {
    use crate::push::registry_ready;
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let manifest = example(
        tmp.path(),
        "\n[annotations]\n\"org.opencontainers.image.source\" = \"https://example.com/app\"\n",
    );
    let value = pushed(
        &manifest,
        "nixlayer-test/annotations:a1",
        &["--annotation", "org.opencontainers.image.version=1.0"],
        "application/vnd.oci.image.manifest.v1+json",
    );
    assert_eq!(
        value["annotations"],
        json!({
            "org.opencontainers.image.source": "https://example.com/app",
            "org.opencontainers.image.version": "1.0",
        })
    );
}

/// `created` and the tag as `version` go on the `index.json` entry, which
/// is one per tag, never into the image manifest: two tags of one image
/// name one manifest digest.
#[test]
fn created_and_version_name_the_tag_in_index_json_not_the_manifest() {
    let tmp = util::temp_dir();
    let manifest = example(tmp.path(), "");
    let layout = tmp.path().join("layout");
    for tag in [
        "nixlayer-test/annotations:1.2",
        "nixlayer-test/annotations:latest",
    ] {
        build_layout(&manifest, &layout, &["--tag", tag], 0);
    }
    let entries = index_entries(&layout);
    assert_eq!(entries.len(), 2);
    assert_eq!(
        entries[0]["digest"], entries[1]["digest"],
        "one image, one digest"
    );
    assert_eq!(
        entries[0]["annotations"],
        json!({
            "io.containerd.image.name": "nixlayer-test/annotations:1.2",
            "org.opencontainers.image.created": "1970-01-01T00:00:01Z",
            "org.opencontainers.image.ref.name": "1.2",
            "org.opencontainers.image.version": "1.2",
        })
    );
    // `latest` is no version.
    assert_eq!(
        entries[1]["annotations"],
        json!({
            "io.containerd.image.name": "nixlayer-test/annotations:latest",
            "org.opencontainers.image.created": "1970-01-01T00:00:01Z",
            "org.opencontainers.image.ref.name": "latest",
        })
    );
    let image = blob(&layout, &entries[0]["digest"]);
    assert!(image.get("annotations").is_none(), "{image}");
}

/// `[index.annotations]` and `--annotation index:…` on the index of a
/// multi-platform layout; `[platforms.annotations]` over `[annotations]`
/// on that platform's manifest only.
#[test]
fn index_and_platform_annotations_land_on_their_level() {
    let tmp = util::temp_dir();
    let manifest = crate::platform_config::manifest(
        tmp.path(),
        &format!(
            "Entrypoint = [\"{}/bin/hello\"]\n[platforms.annotations]\nshared = \"arm\"\nonly-arm = \"1\"\n\n[annotations]\nshared = \"all\"\n\n[index.annotations]\n\"org.opencontainers.image.description\" = \"two platforms\"\n",
            crate::multi_platform::ARM_PATH
        ),
    );
    let layout = tmp.path().join("layout");
    build_layout(
        &manifest,
        &layout,
        &[
            "--annotation",
            "index:org.opencontainers.image.revision=abc",
            "--annotation",
            "manifest:flag=m",
        ],
        0,
    );
    let entries = index_entries(&layout);
    assert_eq!(
        entries[0]["mediaType"],
        "application/vnd.oci.image.index.v1+json"
    );
    assert_eq!(
        entries[0]["annotations"]["org.opencontainers.image.version"],
        "p"
    );
    let index = blob(&layout, &entries[0]["digest"]);
    assert_eq!(
        index["annotations"],
        json!({
            "org.opencontainers.image.description": "two platforms",
            "org.opencontainers.image.revision": "abc",
        })
    );
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests[0]["platform"]["architecture"], "amd64");
    assert_eq!(
        blob(&layout, &manifests[0]["digest"])["annotations"],
        json!({ "flag": "m", "shared": "all" })
    );
    assert_eq!(
        blob(&layout, &manifests[1]["digest"])["annotations"],
        json!({ "flag": "m", "only-arm": "1", "shared": "arm" })
    );
}

#[test]
fn bad_index_annotations_are_located_errors() {
    let tmp = util::temp_dir();
    for (extra, at, words) in [
        (
            "\n[index.annotations]\n\"\" = \"a\"\n",
            "image.toml:12:",
            "`[index.annotations]` keys must not be empty",
        ),
        (
            "\n[index]\nannotation = {}\n",
            "image.toml:12:",
            "annotations",
        ),
    ] {
        let manifest = example(tmp.path(), extra);
        let out = tmp.path().join("layout");
        let failed = build_layout(&manifest, &out, &[], 1);
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(
            stderr.contains(at) && stderr.contains(words),
            "{extra}: {stderr}"
        );
        assert!(!out.exists());
    }
}

/// A pushed index carries `[index.annotations]`.
#[test]
fn push_writes_index_annotations_to_the_registry() {
    use crate::push::registry_ready;
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let manifest = crate::platform_config::manifest(
        tmp.path(),
        &format!(
            "Entrypoint = [\"{}/bin/hello\"]\n\n[index.annotations]\nwhere = \"registry\"\n",
            crate::multi_platform::ARM_PATH
        ),
    );
    let value = pushed(
        &manifest,
        "nixlayer-test/index-annotations:i1",
        &[],
        "application/vnd.oci.image.index.v1+json",
    );
    assert_eq!(value["annotations"], json!({ "where": "registry" }));
}

/// `--annotation` on a docker-archive or rootfs output is a usage error
/// naming the flag, the output and the outputs that keep it, and writes
/// nothing; the image used to be built with the annotation dropped
/// silently. The manifest's `[annotations]` (which may serve other
/// outputs) still build a docker-archive.
#[test]
fn an_annotation_flag_on_an_output_without_annotations_is_refused() {
    let tmp = util::temp_dir();
    let manifest = example(tmp.path(), "[annotations]\n\"org.example.a\" = \"1\"\n");
    for (format, out) in [("docker-archive", "x.tar"), ("rootfs", "root.tar")] {
        let out = tmp.path().join(out);
        let failed = run(
            nixlayer()
                .arg("build")
                .arg(&manifest)
                .args(["--format", format, "--annotation", "a.b=c", "-o"])
                .arg(&out),
            2,
        );
        let stderr = String::from_utf8_lossy(&failed.stderr);
        for needle in [
            "`--annotation a.b=c`",
            &format!("`{format}` has no place for annotations"),
            "oci-layout",
            "oci-archive",
            "nixlayer push",
        ] {
            assert!(stderr.contains(needle), "{needle} not in {stderr}");
        }
        assert!(!out.exists());
    }
    let out = tmp.path().join("x.tar");
    run(
        nixlayer().arg("build").arg(&manifest).arg("-o").arg(&out),
        0,
    );
    assert!(out.exists());
}

/// `--annotation index:…` on a build of one image (no image index) warns
/// that it is not written; it was dropped without a word. The manifest's
/// annotation still lands.
#[test]
fn an_index_annotation_flag_without_an_index_warns() {
    let tmp = util::temp_dir();
    let manifest = example(tmp.path(), "");
    let layout = tmp.path().join("layout");
    let out = build_layout(
        &manifest,
        &layout,
        &["--annotation", "index:a.b=c", "--annotation", "d.e=f"],
        0,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("warning: `--annotation index:a.b=c` is not written"),
        "{stderr}"
    );
    assert!(!stderr.contains("d.e=f"), "{stderr}");
    let manifest: Value = serde_json::from_slice(&image_manifest(&layout)).unwrap();
    assert_eq!(manifest["annotations"]["d.e"], "f");
}
