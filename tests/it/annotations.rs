//! `[annotations]` and `--annotation`: the OCI image manifest carries them,
//! sorted, in canonical JSON; bad ones are located errors.

use std::path::{Path, PathBuf};

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

[store]
root = "{root}"

[closure]
roots = ["/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3"]
source = {{ graph = "{graph}" }}
{extra}"#,
            root = repo.join("fixtures/example/store").display(),
            graph = repo.join("fixtures/example/graph.json").display(),
        ),
    )
}

/// The image manifest's bytes in an OCI layout.
fn image_manifest(layout: &Path) -> Vec<u8> {
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let digest = index["manifests"][0]["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    std::fs::read(layout.join("blobs/sha256").join(hex)).unwrap()
}

#[test]
fn annotations_from_the_manifest_and_flags_are_in_the_image_manifest() {
    let tmp = util::temp_dir();
    let manifest = example(
        tmp.path(),
        "\n[annotations]\n\"org.opencontainers.image.source\" = \"https://example.com/app\"\nb = \"1\"\n",
    );
    let layout = tmp.path().join("layout");
    run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args(["--format", "oci-layout", "-o"])
            .arg(&layout)
            .args(["--annotation", "org.opencontainers.image.revision=abc=1"])
            .args(["--annotation", "b=2"]),
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
    run(
        nixlayer()
            .arg("build")
            .arg(&plain)
            .args(["--format", "oci-layout", "-o"])
            .arg(&layout),
        0,
    );
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

#[test]
fn push_writes_the_annotations_to_the_registry() {
    use crate::push::{registry_ready, REGISTRY};
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let manifest = example(
        tmp.path(),
        "\n[annotations]\n\"org.opencontainers.image.source\" = \"https://example.com/app\"\n",
    );
    let reference = format!("{REGISTRY}/nixlayer-test/annotations:a1");
    run(
        nixlayer()
            .arg("push")
            .arg(&manifest)
            .arg(&reference)
            .args(["--annotation", "org.opencontainers.image.version=1.0"]),
        0,
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(std::time::Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(format!(
            "http://{REGISTRY}/v2/nixlayer-test/annotations/manifests/a1"
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .unwrap();
    let body = response.body_mut().read_to_vec().unwrap();
    let value: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        value["annotations"],
        json!({
            "org.opencontainers.image.source": "https://example.com/app",
            "org.opencontainers.image.version": "1.0",
        })
    );
}
