//! `nixlayer push` against a real registry (Debian's `docker-registry` on
//! 127.0.0.1:5000, anonymous, started by `scripts/test`): skopeo sees the
//! digest and layers `build --json` reports, docker runs the pulled image,
//! and pushing again uploads only what the registry lacks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::{self, docker_ready, docker_run, nixlayer, run, tool};

pub const REGISTRY: &str = "127.0.0.1:5000";

/// Whether the test registry answers `GET /v2/`; under CI its absence fails
/// the test, elsewhere the test is skipped.
pub fn registry_ready() -> bool {
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
pub fn manifest(dir: &Path, name: &str, hello: &Path, cmd: &str) -> PathBuf {
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

pub fn json(bytes: &[u8]) -> serde_json::Value {
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

pub fn blobs(summary: &serde_json::Value) -> (u64, u64) {
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
    let mounted = pushed["blobs"]["mounted"].as_u64().unwrap();
    // Three layers and the config. Earlier runs may have left some in this
    // repository, and other tests sharing the layer cache and registry may
    // have pushed them to another repository, from which they are mounted.
    assert_eq!(uploaded + existing + mounted, 4, "{pushed}");

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
fn several_tags_in_one_push_and_the_digest_to_pin() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() || !util::require_tool("skopeo") {
        return;
    }
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""tags""#);
    let repo = format!("{REGISTRY}/nixlayer-test/tags");
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(format!("{repo}:a"))
            .args(["--tag", "b", "--tag", "c", "--tag", "a", "--json"]),
        0,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("pushed {repo}:a, :b, :c (")),
        "{stderr}"
    );
    let pushed = json(&out.stdout);
    let digest = pushed["manifest_digest"].as_str().unwrap().to_owned();
    assert_eq!(pushed["reference"], format!("{repo}:a"));
    assert_eq!(pushed["tags"], serde_json::json!(["a", "b", "c"]));
    assert_eq!(pushed["pushed"], format!("{repo}@{digest}"));
    // Every tag, and the pinned name, is the same manifest.
    for name in [
        format!("{repo}:a"),
        format!("{repo}:b"),
        format!("{repo}:c"),
        format!("{repo}@{digest}"),
    ] {
        let inspect = json(&tool(
            "skopeo",
            &["inspect", "--tls-verify=false", &format!("docker://{name}")],
        ));
        assert_eq!(inspect["Digest"], digest.as_str(), "{name}");
    }

    // Without `--json`, stdout is the pinned name alone; `--tag` without
    // a tag in REF pushes only the tags given.
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(&repo)
            .args(["--tag", "d"]),
        0,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{repo}@{digest}\n")
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("pushed {repo}:d (")), "{stderr}");

    // skopeo's `docker://` before the reference, as a pipeline moving
    // from `skopeo copy` has it: the same push, the same pinned name.
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(format!("docker://{repo}:e")),
        0,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{repo}@{digest}\n")
    );

    // A bad tag is a usage error, before anything is built or sent.
    for bad in ["", "-x", "a/b", "x@y", &"t".repeat(129)] {
        let out = run(
            nixlayer()
                .arg("push")
                .arg(&m)
                .arg("127.0.0.1:9/nixlayer-test/tags")
                .arg(format!("--tag={bad}")),
            2,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("--tag"), "{bad}: {stderr}");
    }
}

/// `[output] level` belongs to `[output] compression`: a push (gzip unless
/// `--compression` says otherwise) of a manifest whose output is zstd level
/// 15 pushes gzip at its default level, as without the `[output]` section;
/// before, the zstd level was taken for gzip and the push failed with "gzip
/// level 15 is out of range" at the manifest's line. `build --compression`
/// likewise.
#[test]
fn a_manifests_level_for_another_codec_is_not_applied_to_a_push() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let plain = manifest(tmp.path(), "plain.toml", &hello, r#""level""#);
    let zstd = tmp.path().join("zstd.toml");
    let text = std::fs::read_to_string(&plain).unwrap();
    std::fs::write(
        &zstd,
        format!("{text}[output]\ncompression = \"zstd\"\nlevel = 15\n"),
    )
    .unwrap();
    let repo = format!("{REGISTRY}/nixlayer-test/manifest-level");
    let pushed = push(&zstd, &format!("{repo}:zstd"));
    assert_eq!(pushed["compression"], "gzip");
    let expected = push(&plain, &format!("{repo}:plain"));
    assert_eq!(pushed["manifest_digest"], expected["manifest_digest"]);
    // A build's `--compression gzip` over that manifest: gzip level 6 too.
    let layout = |m: &Path, dir: &str| {
        json(
            &run(
                nixlayer()
                    .arg("build")
                    .arg(m)
                    .args([
                        "--format",
                        "oci-layout",
                        "--compression",
                        "gzip",
                        "--json",
                        "-o",
                    ])
                    .arg(tmp.path().join(dir)),
                0,
            )
            .stdout,
        )["manifest_digest"]
            .clone()
    };
    assert_eq!(layout(&zstd, "z"), layout(&plain, "p"));
    // The manifest's level still applies to its own codec, and a bad one
    // there is still an error at its line.
    std::fs::write(
        &zstd,
        format!("{text}[output]\ncompression = \"zstd\"\nlevel = 25\n"),
    )
    .unwrap();
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&zstd)
            .args(["--format", "oci-layout", "-o"])
            .arg(tmp.path().join("bad")),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("zstd level 25 is out of range"), "{stderr}");
}

#[test]
fn push_errors_name_the_registry_and_bad_references() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""x""#);

    // A bad reference (without a host it names Docker Hub, where a
    // repository is lowercase too): a usage error.
    let out = run(nixlayer().arg("push").arg(&m).arg("Nixlayer-Test/hello"), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("lowercase"), "{stderr}");

    // Names docker refuses: a `..` part (a path segment of every URL), a
    // part starting with `-`, a port that is not one. A usage error
    // before anything is built, never the registry's late 301 or 404.
    for bad in [
        "127.0.0.1:5000/nixlayer-test/../hello:x",
        "127.0.0.1:5000/nixlayer-test/-hello:x",
        "127.0.0.1:port/nixlayer-test/hello:x",
    ] {
        let out = run(nixlayer().arg("push").arg(&m).arg(bad), 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("`{bad}` is not a registry reference")),
            "{stderr}"
        );
    }

    // A URL (scheme and all) is refused as one, not as a host `http`
    // whose port is not a number.
    for url in [
        "http://127.0.0.1:5000/nixlayer-test/hello:x",
        "https://127.0.0.1:5000/nixlayer-test/hello:x",
    ] {
        let out = run(nixlayer().arg("push").arg(&m).arg(url), 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "`{url}` is not a registry reference: a reference has no scheme"
            )) && !stderr.contains("registry port must"),
            "{stderr}"
        );
    }

    // A password before the host, as in a URL: refused, and never shown.
    for with_password in [
        "bob:s3cret-pw@127.0.0.1:5000/nixlayer-test/hello:x",
        "https://bob:s3cret-pw@127.0.0.1:5000/nixlayer-test/hello:x",
    ] {
        let out = run(nixlayer().arg("push").arg(&m).arg(with_password), 2);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("<redacted>@127.0.0.1:5000/nixlayer-test/hello:x")
                && stderr.contains("credentials do not go in a reference")
                && !stderr.contains("s3cret"),
            "{stderr}"
        );
    }

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
    assert!(
        stderr.contains("push to `127.0.0.1:9/nixlayer-test/hello:x` failed"),
        "{stderr}"
    );

    // A Docker Hub short name: the error names the image as resolved
    // (the API host alone does not say which image). A proxy on a closed
    // loopback port keeps the request on this machine.
    let mut cmd = nixlayer();
    cmd.arg("push").arg(&m).arg("alpine:3");
    for var in ["HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"] {
        cmd.env(var, "http://127.0.0.1:9");
    }
    for var in ["NO_PROXY", "no_proxy"] {
        cmd.env_remove(var);
    }
    let out = run(&mut cmd, 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("push to `docker.io/library/alpine:3` failed")
            && stderr.contains("https://registry-1.docker.io/v2/"),
        "{stderr}"
    );
    // The refused connection is the proxy's, and the error says so.
    assert!(
        stderr.contains("failed through the proxy 127.0.0.1:9 (from `HTTPS_PROXY`"),
        "{stderr}"
    );
}

/// A `docker-registry` of its own (with htpasswd auth, or none) on a free
/// loopback port, stopped on drop.
pub struct AuthRegistry {
    _server: crate::support::Spawned,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl AuthRegistry {
    /// Where the registry keeps its blobs and repositories.
    pub fn storage(&self) -> PathBuf {
        self.dir.path().join("data/docker/registry/v2")
    }
}

/// Starts an [`AuthRegistry`] with user `nixlayer`, password `pass`.
fn auth_registry() -> AuthRegistry {
    own_registry(true)
}

/// Starts an empty, anonymous registry of its own: every blob pushed to
/// it is uploaded.
pub fn fresh_registry() -> AuthRegistry {
    own_registry(false)
}

fn own_registry(auth: bool) -> AuthRegistry {
    let dir = util::temp_dir();
    // bcrypt (cost 4, so each request stays fast) of `pass`.
    util::write(
        dir.path(),
        "htpasswd",
        "nixlayer:$2b$04$uqi/VbwQs4JgeFGmX72o9uHq1edt3U53IBNexmezwKRW7uOMThdiq\n",
    );
    let extra = if auth {
        format!(
            "auth:\n  htpasswd:\n    realm: nixlayer-test\n    path: {}/htpasswd\n",
            dir.path().display()
        )
    } else {
        String::new()
    };
    let server = crate::support::docker_registry(
        dir.path(),
        &extra,
        "http",
        if auth { 401 } else { 200 },
        None,
    );
    AuthRegistry {
        port: server.port,
        _server: server,
        dir,
    }
}

#[test]
fn push_with_basic_auth_from_creds_and_docker_config() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("docker-registry") {
        return;
    }
    let registry = auth_registry();
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""auth""#);
    let host = format!("127.0.0.1:{}", registry.port);
    let reference = format!("{host}/nixlayer-test/auth:a1");
    let no_config = tmp.path().join("no-docker-config");

    // Anonymous: refused, and the error says how to give credentials.
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(&reference)
            .env("DOCKER_CONFIG", &no_config),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--password-stdin"), "{stderr}");

    // A wrong password: the error names the URL, and says the
    // credentials were refused (the registry's 401 alone says
    // `authentication required`, as if none were sent).
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(&reference)
            .args(["--creds", "nixlayer:wrong"])
            .env("DOCKER_CONFIG", &no_config),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("http://{host}/v2/: authentication failed: the registry answered 401 to the credentials of user `nixlayer`: a wrong password")),
        "{stderr}"
    );

    // --creds.
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(&reference)
            .args(["--creds", "nixlayer:pass", "--json"])
            .env("DOCKER_CONFIG", &no_config),
        0,
    );
    assert_eq!(blobs(&json(&out.stdout)), (4, 0));

    // `auths.<host>.auth` of a docker config.json: all there already.
    let docker_config = tmp.path().join("docker");
    std::fs::create_dir_all(&docker_config).unwrap();
    util::write(
        &docker_config,
        "config.json",
        &format!(r#"{{"auths":{{"{host}":{{"auth":"bml4bGF5ZXI6cGFzcw=="}}}}}}"#),
    );
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(&reference)
            .arg("--json")
            .env("DOCKER_CONFIG", &docker_config),
        0,
    );
    assert_eq!(blobs(&json(&out.stdout)), (0, 4));

    // An identity token (for a bearer-token registry) is no password: the
    // error says that is what was found, not that nothing was.
    let identity = tmp.path().join("identity");
    std::fs::create_dir_all(&identity).unwrap();
    util::write(
        &identity,
        "config.json",
        &format!(r#"{{"auths":{{"{host}":{{"identitytoken":"id-s3cret"}}}}}}"#),
    );
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(&reference)
            .env("DOCKER_CONFIG", &identity),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "the registry wants a user and password (the credentials found are an identity token"
        ) && !stderr.contains("s3cret"),
        "{stderr}"
    );
}

#[test]
fn push_with_credentials_from_podman_logins_auth_file() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("docker-registry") {
        return;
    }
    let registry = auth_registry();
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""podman""#);
    let host = format!("127.0.0.1:{}", registry.port);
    let reference = format!("{host}/nixlayer-test/podman:p1");
    // What `podman login` writes (docker's format), where it writes it:
    // `$XDG_RUNTIME_DIR/containers/auth.json`, or `REGISTRY_AUTH_FILE`.
    let run_dir = tmp.path().join("run");
    std::fs::create_dir_all(run_dir.join("containers")).unwrap();
    let auth = util::write(
        &run_dir.join("containers"),
        "auth.json",
        &format!(r#"{{"auths":{{"{host}":{{"auth":"bml4bGF5ZXI6cGFzcw=="}}}}}}"#),
    );
    let push = |env: &[(&str, &Path)]| {
        let mut cmd = nixlayer();
        cmd.arg("push")
            .arg(&m)
            .arg(&reference)
            .arg("--json")
            .env("DOCKER_CONFIG", tmp.path().join("no-docker-config"))
            .env("HOME", tmp.path())
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("NIXLAYER_REGISTRY_USER")
            .env_remove("NIXLAYER_REGISTRY_PASSWORD");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    };
    run(&mut push(&[("XDG_RUNTIME_DIR", &run_dir)]), 0);
    run(&mut push(&[("REGISTRY_AUTH_FILE", &auth)]), 0);
    // Without it: anonymous, refused, and the hint names both logins.
    let out = run(&mut push(&[]), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("podman login"), "{stderr}");
}

/// podman's `auth.json` keyed by repository or namespace
/// (containers-auth.json(5)): the most specific key for the repository
/// pushed to wins over the registry's (here a wrong password), and a key
/// for another namespace is not used. Only the registry key used to be
/// read, so the push failed with the wrong password.
#[test]
fn push_uses_podmans_per_repository_credentials() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("docker-registry") {
        return;
    }
    let registry = auth_registry();
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""podman-ns""#);
    let host = format!("127.0.0.1:{}", registry.port);
    // `bml4bGF5ZXI6cGFzcw==` is `nixlayer:pass`, `bml4bGF5ZXI6d3Jvbmc=`
    // `nixlayer:wrong`.
    let push = |name: &str, keys: &[(&str, &str)]| {
        let entries: Vec<String> = keys
            .iter()
            .map(|(k, auth)| format!(r#""{k}":{{"auth":"{auth}"}}"#))
            .collect();
        let auth = util::write(
            tmp.path(),
            &format!("{name}.json"),
            &format!(r#"{{"auths":{{{}}}}}"#, entries.join(",")),
        );
        let mut cmd = nixlayer();
        cmd.arg("push")
            .arg(&m)
            .arg(format!("{host}/nixlayer-test/ns/podman:p1"))
            .arg("--json")
            .env("DOCKER_CONFIG", tmp.path().join("no-docker-config"))
            .env("REGISTRY_AUTH_FILE", &auth)
            .env_remove("NIXLAYER_REGISTRY_USER")
            .env_remove("NIXLAYER_REGISTRY_PASSWORD");
        cmd
    };
    let (right, wrong) = ("bml4bGF5ZXI6cGFzcw==", "bml4bGF5ZXI6d3Jvbmc=");
    for key in [
        "nixlayer-test/ns/podman",
        "nixlayer-test/ns",
        "nixlayer-test",
    ] {
        let scoped = format!("{host}/{key}");
        run(&mut push("scoped", &[(&scoped, right), (&host, wrong)]), 0);
    }
    // The repository's key beats its namespace's.
    let (repo, ns) = (
        format!("{host}/nixlayer-test/ns/podman"),
        format!("{host}/nixlayer-test/ns"),
    );
    run(&mut push("both", &[(&ns, wrong), (&repo, right)]), 0);
    // Another namespace's key is not the registry's: the wrong one is used.
    let other = format!("{host}/nixlayer-test/other");
    let out = run(&mut push("other", &[(&other, right), (&host, wrong)]), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("401"), "{stderr}");
}

#[test]
fn push_with_a_password_from_stdin_or_the_environment() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("docker-registry") {
        return;
    }
    let registry = auth_registry();
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""stdin""#);
    let reference = format!("127.0.0.1:{}/nixlayer-test/auth:s1", registry.port);
    let push = || {
        let mut cmd = nixlayer();
        cmd.arg("push")
            .arg(&m)
            .arg(&reference)
            .arg("--json")
            .env("DOCKER_CONFIG", tmp.path().join("no-docker-config"))
            .env_remove("NIXLAYER_REGISTRY_USER")
            .env_remove("NIXLAYER_REGISTRY_PASSWORD");
        cmd
    };

    // `--username` and `--password-stdin`, as `docker login` (its newline
    // is not part of the password).
    let pw = util::write(tmp.path(), "pw", "pass\n");
    let out = run(
        push()
            .args(["--username", "nixlayer", "--password-stdin"])
            .stdin(std::fs::File::open(&pw).unwrap()),
        0,
    );
    assert_eq!(blobs(&json(&out.stdout)), (4, 0));

    // The environment: all there already.
    let out = run(
        push()
            .env("NIXLAYER_REGISTRY_USER", "nixlayer")
            .env("NIXLAYER_REGISTRY_PASSWORD", "pass"),
        0,
    );
    assert_eq!(blobs(&json(&out.stdout)), (0, 4));

    // A wrong password from stdin: refused, and never shown.
    let wrong = util::write(tmp.path(), "wrong", "wr0ng-s3cret\r\n");
    let out = run(
        push()
            .args(["--username", "nixlayer", "--password-stdin"])
            .stdin(std::fs::File::open(&wrong).unwrap()),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("401") && !stderr.contains("wr0ng"),
        "{stderr}"
    );
}

#[test]
fn a_blob_pushed_to_one_repository_is_mounted_into_another() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() || !util::require_tool("docker-registry") || !util::require_tool("skopeo")
    {
        return;
    }
    let registry = fresh_registry();
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""mounts""#);
    let push_to = |repo: &str, cache: &Path| {
        let reference = format!("127.0.0.1:{}/{repo}:1", registry.port);
        let out = run(
            nixlayer()
                .arg("push")
                .arg(&m)
                .arg(&reference)
                .arg("--json")
                .env("XDG_CACHE_HOME", cache),
            0,
        );
        (
            json(&out.stdout),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let cache = tmp.path().join("cache");
    let (a, _) = push_to("team/a", &cache);
    assert_eq!(blobs(&a), (4, 0), "{a}");
    assert_eq!(a["blobs"]["mounted"], 0);
    // The same image to another repository: every blob mounted from the
    // first, none uploaded.
    let (b, stderr) = push_to("team/b", &cache);
    assert_eq!(blobs(&b), (0, 0), "{b}");
    assert_eq!(b["blobs"]["mounted"], 4, "{b}");
    assert_eq!(b["blobs"]["bytes_uploaded"], 0);
    // The layers the layer cache knew were mounted unread.
    assert_eq!(b["blobs"]["layers_cached"], 3, "{b}");
    assert!(
        stderr.contains("4 mounted from another repository"),
        "{stderr}"
    );
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            &format!("docker://127.0.0.1:{}/team/b:1", registry.port),
        ],
    ));
    assert_eq!(inspect["Digest"], b["manifest_digest"]);
    // Without the record (another cache), the blobs are uploaded.
    let (c, _) = push_to("team/c", &tmp.path().join("other-cache"));
    assert_eq!(blobs(&c), (4, 0), "{c}");
    assert_eq!(c["blobs"]["mounted"], 0);
}

/// Runs `nixlayer ARGS` with stdout and stderr on a terminal 200 columns
/// wide (the line is cut at the terminal's width); what the terminal saw.
fn on_a_terminal(args: &str) -> String {
    let mut cmd = nixlayer();
    cmd.args(args.split_whitespace());
    let t = crate::progress::on_terminal(&cmd, 200, true, None).expect("python3");
    assert_eq!(t.code, Some(0), "{}", t.screen);
    t.screen
}

#[test]
fn progress_shows_on_a_terminal_only() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() || !util::require_tool("python3") {
        return;
    }
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""progress""#);
    let out = tmp.path().join("image.tar");
    let shown = on_a_terminal(&format!(
        "build {} -o {} --no-cache",
        m.display(),
        out.display()
    ));
    assert!(shown.contains("layers 0/3"), "{shown}");
    assert!(shown.contains("MiB"), "{shown}");
    assert!(shown.contains("built nixlayer-test/hello:it"), "{shown}");
    // Not a terminal: the summary line alone.
    let piped = run(nixlayer().arg("build").arg(&m).arg("-o").arg(&out), 0);
    let stderr = String::from_utf8_lossy(&piped.stderr);
    assert!(
        stderr.starts_with("built ") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let reference = format!("{REGISTRY}/nixlayer-test/progress:1");
    let shown = on_a_terminal(&format!("push {} {reference} --no-cache", m.display()));
    assert!(shown.contains("layers 0/3"), "{shown}");
    assert!(shown.contains(&format!("pushed {reference}")), "{shown}");
    // The bytes uploaded of those queued, and the rate: to a registry of
    // its own, every layer is uploaded, so at the end all are sent.
    if util::require_tool("docker-registry") {
        let registry = fresh_registry();
        let reference = format!("127.0.0.1:{}/nixlayer-test/progress:1", registry.port);
        let shown = on_a_terminal(&format!("push {} {reference} --no-cache", m.display()));
        let last = shown
            .rsplit("; uploaded ")
            .next()
            .filter(|_| shown.contains("; uploaded "))
            .unwrap_or_else(|| panic!("no upload figures: {shown}"));
        let (figures, _) = last.split_once(')').expect("uploaded A/B (R/s)");
        let (bytes, rate) = figures.split_once(" (").expect("uploaded A/B (R/s)");
        let (sent, queued) = bytes.split_once('/').expect("A/B");
        assert_eq!(sent, queued, "{shown}");
        assert_ne!(sent, "0 B", "{shown}");
        assert!(rate.ends_with("/s"), "{shown}");
        assert!(shown.contains(&format!("pushed {reference}")), "{shown}");
        // Not a terminal: no figures.
        let piped = run(
            nixlayer()
                .arg("push")
                .arg(&m)
                .arg(&reference)
                .arg("--no-cache"),
            0,
        );
        let stderr = String::from_utf8_lossy(&piped.stderr);
        assert!(
            stderr.lines().count() == 1 && !stderr.contains("; uploaded "),
            "{stderr}"
        );
    }
    // `--quiet`: nothing but the pinned name on stdout.
    let shown = on_a_terminal(&format!(
        "--quiet push {} {reference} --no-cache",
        m.display()
    ));
    assert!(!shown.contains("layers"), "{shown}");
    assert!(!shown.contains("uploaded"), "{shown}");
    let pinned = shown.trim();
    assert!(
        pinned.starts_with(&format!("{REGISTRY}/nixlayer-test/progress@sha256:"))
            && !pinned.contains('\n'),
        "{shown}"
    );
}

#[test]
fn an_empty_docker_config_variable_means_the_home_directorys() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), "image.toml", &hello, r#""cfg""#);
    // The directory the command runs in holds a `config.json` that is no
    // docker config (a project's own file); `DOCKER_CONFIG=` is empty, as
    // a CI system leaves an unset variable: docker then reads
    // `~/.docker/config.json` (none here), never `./config.json`.
    util::write(tmp.path(), "config.json", "{ not docker's");
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let reference = format!("{REGISTRY}/nixlayer-test/empty-docker-config:t");
    let out = run(
        nixlayer()
            .arg("push")
            .arg(&m)
            .arg(&reference)
            .current_dir(tmp.path())
            .env("DOCKER_CONFIG", "")
            .env("HOME", &home),
        0,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with(&format!(
            "{REGISTRY}/nixlayer-test/empty-docker-config@sha256:"
        )),
        "{stdout}"
    );
}
