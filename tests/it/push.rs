//! `nixlayer push` against a real registry (Debian's `docker-registry` on
//! 127.0.0.1:5000, anonymous, started by `scripts/test`): skopeo sees the
//! digest and layers `build --json` reports, docker runs the pulled image,
//! and pushing again uploads only what the registry lacks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::{self, docker_ready, docker_run, nixlayer, run, tool};

const REGISTRY: &str = "127.0.0.1:5000";

/// Whether the test registry answers `GET /v2/`; under CI its absence fails
/// the test, elsewhere the test is skipped.
fn registry_ready() -> bool {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let ok = agent
        .get(format!("http://{REGISTRY}/v2/"))
        .call()
        .is_ok_and(|r| r.status().as_u16() == 200);
    assert!(
        ok || !util::under_ci(),
        "a registry on {REGISTRY} is required under CI (scripts/test starts one)"
    );
    if !ok {
        eprintln!("skipped: no registry on {REGISTRY}");
    }
    ok
}

/// The `hello` fixture's manifest (as in `build`), with `cmd` as its `Cmd`.
fn manifest(dir: &Path, name: &str, hello: &Path, cmd: &str) -> PathBuf {
    let hello = hello.display();
    util::write(
        dir,
        name,
        &format!(
            r#"
name = "nixlayer-test/hello"
tag = "it"
[closure]
roots = ["{hello}"]
[config]
Entrypoint = ["{hello}/bin/hello"]
Cmd = [{cmd}]
"#
        ),
    )
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("JSON on stdout")
}

/// `push --json` to `reference`: the summary.
fn push(manifest: &Path, reference: &str) -> serde_json::Value {
    let out = run(
        nixlayer()
            .arg("push")
            .arg(manifest)
            .arg(reference)
            .arg("--json"),
        0,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("pushed {reference}")),
        "summary line: {stderr}"
    );
    json(&out.stdout)
}

fn blobs(summary: &serde_json::Value) -> (u64, u64) {
    (
        summary["blobs"]["uploaded"].as_u64().unwrap(),
        summary["blobs"]["existing"].as_u64().unwrap(),
    )
}

#[test]
fn push_to_a_real_registry_then_pull_and_run() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() || !util::require_tool("skopeo") || !docker_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""from", "docker""#);
    let reference = format!("{REGISTRY}/nixlayer-test/hello:t1");

    // What an OCI layout build with the same compression says.
    let built = json(
        &run(
            nixlayer()
                .arg("build")
                .arg(&m)
                .args(["--format", "oci-layout", "--compression", "gzip", "-o"])
                .arg(tmp.path().join("layout"))
                .arg("--json"),
            0,
        )
        .stdout,
    );
    let pushed = push(&m, &reference);
    assert_eq!(pushed["manifest_digest"], built["manifest_digest"]);
    assert_eq!(pushed["layers"], built["layers"]);
    let (uploaded, existing) = blobs(&pushed);
    // Three layers and the config; earlier runs may have left some.
    assert_eq!(uploaded + existing, 4, "{pushed}");

    // skopeo sees the same digest and layers.
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://{reference}"),
        ],
    ));
    assert_eq!(inspect["Digest"], built["manifest_digest"]);
    let layers: Vec<&serde_json::Value> = built["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["digest"])
        .collect();
    let seen: Vec<&serde_json::Value> = inspect["Layers"].as_array().unwrap().iter().collect();
    assert_eq!(seen, layers);

    // Pulled into docker, it runs.
    let local = "nixlayer-test/pushed:t1";
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
    assert_eq!(
        docker_run(local),
        "hello from nixlayer\nargs: from docker\n"
    );

    // Again: the registry has everything.
    let again = push(&m, &reference);
    assert_eq!(blobs(&again), (0, 4), "{again}");
    assert_eq!(again["manifest_digest"], built["manifest_digest"]);

    // Another tag whose config differs (a Cmd unique to this run) shares
    // every layer: only its config is uploaded.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let other = manifest(
        tmp.path(),
        "other.toml",
        &hello,
        &format!(r#""run", "{nonce}""#),
    );
    let t2 = push(&other, &format!("{REGISTRY}/nixlayer-test/hello:t2"));
    assert_eq!(blobs(&t2), (1, 3), "{t2}");
    assert_eq!(t2["layers"], built["layers"]);
    assert_ne!(t2["manifest_digest"], built["manifest_digest"]);
}

#[test]
fn push_errors_name_the_registry_and_bad_references() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""x""#);

    // No registry host in the reference: a usage error.
    let out = run(nixlayer().arg("push").arg(&m).arg("nixlayer-test/hello"), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("registry host"), "{stderr}");

    // Nothing listens on port 9: the error names the URL.
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg("127.0.0.1:9/nixlayer-test/hello:x"),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("http://127.0.0.1:9/v2/"), "{stderr}");
}
