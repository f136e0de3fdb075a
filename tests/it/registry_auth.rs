//! `push` to Debian's real `docker-registry` with `auth: token` (a token
//! issuer the test runs: `token_issuer.py`, python3-jwt) and with TLS from a
//! CA the test makes (openssl): the distribution token flow, identity
//! tokens, credential helpers, certificates.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::push::{json, manifest};
use crate::support::{self, Spawned};
use crate::util::{self, nixlayer, run, tool};

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Whether python3 with jwt and cryptography (Debian's python3-jwt and
/// python3-cryptography) is there; under CI its absence fails the test.
fn python_jwt() -> bool {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import jwt, cryptography"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok || !util::under_ci(),
        "python3-jwt and python3-cryptography are required under CI"
    );
    if !ok {
        eprintln!("skipped: no python3-jwt");
    }
    ok
}

/// The token issuer on a free port, its key in `dir`.
fn token_issuer(dir: &Path, expires_in: i32) -> Spawned {
    support::self_signed(dir, "nixlayer test token issuer");
    let mut child = Command::new("/usr/bin/python3")
        .arg(util::repo().join("tests/it/token_issuer.py"))
        .args([
            s(dir),
            "nixlayer-test-registry",
            "nixlayer-test-issuer",
            &expires_in.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the token issuer");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line.trim().parse().expect("the issuer's port");
    Spawned { child, port }
}

/// A token-auth registry and its issuer.
struct TokenSetup {
    issuer: Spawned,
    registry: Spawned,
    issuer_dir: PathBuf,
}

fn token_setup(dir: &Path, expires_in: i32) -> TokenSetup {
    let issuer_dir = dir.join("issuer");
    let issuer = token_issuer(&issuer_dir, expires_in);
    let extra = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: nixlayer-test-registry\n    \
         issuer: nixlayer-test-issuer\n    rootcertbundle: {}\n",
        issuer.port,
        issuer_dir.join("cert.pem").display()
    );
    let reg_dir = dir.join("registry");
    std::fs::create_dir_all(&reg_dir).unwrap();
    let registry = support::docker_registry(&reg_dir, &extra, "http", 401, None);
    TokenSetup {
        issuer,
        registry,
        issuer_dir,
    }
}

/// What a token-auth test starts with: the hello fixture, a temporary
/// directory, a [`token_setup`] in it (tokens for 300 s) and its
/// registry's `host:port`; `None` (skip) when the registry, openssl,
/// python3-jwt or one of `tools` is missing outside CI.
fn token_test(tools: &[&str]) -> Option<(PathBuf, tempfile::TempDir, TokenSetup, String)> {
    let hello = util::nix_fixture("hello")?;
    let found = ["docker-registry", "openssl"]
        .iter()
        .chain(tools)
        .all(|t| util::require_tool(t));
    if !found || !python_jwt() {
        return None;
    }
    let tmp = util::temp_dir();
    let setup = token_setup(tmp.path(), 300);
    let host = format!("127.0.0.1:{}", setup.registry.port);
    Some((hello, tmp, setup, host))
}

impl TokenSetup {
    /// The issuer's log since the last call (which it empties).
    fn requests(&self) -> Vec<serde_json::Value> {
        let path = self.issuer_dir.join("requests.log");
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let _ = std::fs::remove_file(&path);
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// Everything a command printed.
fn shown(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_no_secret(out: &Output) {
    let text = shown(out);
    for secret in ["wonderland", "refresh-s3cret", "d29uZGVybGFuZ", "eyJ"] {
        assert!(!text.contains(secret), "`{secret}` shown:\n{text}");
    }
}

fn push(m: &Path, reference: &str, config_dir: &Path) -> Command {
    let mut cmd = nixlayer();
    cmd.arg("push")
        .arg(m)
        .arg(reference)
        .arg("--json")
        .env("DOCKER_CONFIG", config_dir)
        // Records of where blobs went stay per config: a push to one
        // repository would otherwise mount from another (one more token).
        .env("XDG_CACHE_HOME", config_dir.join("cache"))
        .env_remove("NIXLAYER_REGISTRY_USER")
        .env_remove("NIXLAYER_REGISTRY_PASSWORD");
    cmd
}

fn docker_config(dir: &Path, name: &str, doc: &serde_json::Value) -> PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("config.json"), doc.to_string()).unwrap();
    d
}

#[test]
fn token_auth_with_a_real_registry_and_issuer() {
    let Some((hello, tmp, setup, host)) = token_test(&["skopeo"]) else {
        return;
    };
    let m = manifest(tmp.path(), "image.toml", &hello, r#""token""#);
    let reference = format!("{host}/nixlayer-test/token:t1");
    let none = tmp.path().join("no-config");

    // Anonymous: the issuer grants pull only, and the registry refuses the
    // upload.
    let out = run(&mut push(&m, &reference, &none), 1);
    assert!(
        shown(&out).contains(
            "authentication failed: the registry answered 401 to anonymous access (`pull,push` on `nixlayer-test/token`)"
        ),
        "{}",
        shown(&out)
    );
    let anonymous = setup.requests();
    assert!(
        anonymous
            .iter()
            .all(|r| r["auth"] == "" && r["method"] == "GET"),
        "{anonymous:?}"
    );

    // A wrong password: the issuer's 401, no secret shown.
    let out = run(
        push(&m, &reference, &none).args(["--creds", "alice:wrong-wonderland"]),
        1,
    );
    assert!(
        shown(&out).contains("authentication failed"),
        "{}",
        shown(&out)
    );
    assert_no_secret(&out);
    setup.requests();

    // With credentials: one token for the whole push (cached for its
    // scope), asked for with basic auth, for push and pull on the
    // repository and the registry's service.
    let out = run(
        push(&m, &reference, &none).args(["--creds", "alice:wonderland"]),
        0,
    );
    assert_no_secret(&out);
    let pushed = json(&out.stdout);
    let asked = setup.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["auth"], "Basic");
    assert_eq!(asked[0]["service"], "nixlayer-test-registry");
    assert_eq!(
        asked[0]["scopes"],
        serde_json::json!(["repository:nixlayer-test/token:pull,push"])
    );

    // skopeo pulls it through the same token flow, with the same digest.
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--tls-verify=false",
            "--creds",
            "alice:wonderland",
            &format!("docker://{reference}"),
        ],
    ));
    assert_eq!(inspect["Digest"], pushed["manifest_digest"]);
    setup.requests();

    // An identity token from docker's config: the OAuth2 refresh-token
    // POST, never basic auth; the pushed digest is the same.
    let cfg = docker_config(
        tmp.path(),
        "identity",
        &serde_json::json!({"auths": {host.clone(): {
            "auth": "PHRva2VuPjo=", // `<token>:`, as docker writes it
            "identitytoken": "refresh-s3cret-1"
        }}}),
    );
    let out = run(&mut push(&m, &reference, &cfg), 0);
    assert_no_secret(&out);
    assert_eq!(
        json(&out.stdout)["manifest_digest"],
        pushed["manifest_digest"]
    );
    let asked = setup.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["method"], "POST");
    assert_eq!(asked[0]["grant_type"], "refresh_token");
    assert_eq!(asked[0]["ok"], true);
    assert_eq!(asked[0]["auth"], "");

    // A refresh token the issuer does not know: its 401, nothing shown.
    let cfg = docker_config(
        tmp.path(),
        "bad-identity",
        &serde_json::json!({"auths": {host.clone(): {"identitytoken": "refresh-s3cret-bad"}}}),
    );
    let out = run(&mut push(&m, &reference, &cfg), 1);
    assert!(shown(&out).contains("401"), "{}", shown(&out));
    assert_no_secret(&out);
    setup.requests();
    drop(setup.issuer);
}

/// Writes `docker-credential-test` into `dir`: it logs its argument and
/// stdin to `dir/helper.log` and answers alice's credentials.
fn credential_helper(dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join("docker-credential-test");
    let log = dir.join("helper.log");
    std::fs::write(
        &path,
        format!(
            "#!/bin/sh\nread -r server\necho \"$1 $server\" >> {}\n\
             printf '{{\"ServerURL\":\"%s\",\"Username\":\"alice\",\"Secret\":\"wonderland\"}}' \"$server\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A realm whose tokens the registry finds expired (their `exp` two
/// minutes past, beyond distribution's minute of leeway): the error says
/// the token was called invalid, not only that access was refused.
#[test]
fn a_token_the_registry_calls_invalid_is_said_so() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !["docker-registry", "openssl"]
        .iter()
        .all(|t| util::require_tool(t))
        || !python_jwt()
    {
        return;
    }
    let tmp = util::temp_dir();
    let setup = token_setup(tmp.path(), -120);
    let host = format!("127.0.0.1:{}", setup.registry.port);
    let m = manifest(tmp.path(), "image.toml", &hello, r#""expired""#);
    let out = run(
        push(
            &m,
            &format!("{host}/nixlayer-test/expired:1"),
            &tmp.path().join("none"),
        )
        .args(["--creds", "alice:wonderland"]),
        1,
    );
    assert_no_secret(&out);
    assert!(
        shown(&out).contains("the registry answered 401 to the token its realm gave user `alice` (`pull,push` on `nixlayer-test/expired`)")
            && shown(&out).contains("the registry calls the token invalid: expired, or its clock and the token realm's apart?"),
        "{}",
        shown(&out)
    );
    drop(setup.issuer);
}

#[test]
fn credential_helpers_named_by_cred_helpers_and_creds_store() {
    let Some((hello, tmp, setup, host)) = token_test(&[]) else {
        return;
    };
    let m = manifest(tmp.path(), "image.toml", &hello, r#""helper""#);
    let bin = tmp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    credential_helper(&bin);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let configs = [
        (
            "cred-helpers",
            // `auths` holds a wrong password: the helper wins, as in docker.
            serde_json::json!({"credHelpers": {host.clone(): "test"},
                               "auths": {host.clone(): {"auth": "YWxpY2U6d3Jvbmc="}}}),
        ),
        ("creds-store", serde_json::json!({"credsStore": "test"})),
    ];
    for (name, doc) in configs {
        let cfg = docker_config(tmp.path(), name, &doc);
        let reference = format!("{host}/nixlayer-test/{name}:h1");
        let out = run(push(&m, &reference, &cfg).env("PATH", &path), 0);
        assert_no_secret(&out);
        let asked = setup.requests();
        assert_eq!(asked.len(), 1, "{name}: {asked:?}");
        assert_eq!(asked[0]["user"], "alice", "{name}");
        let log = std::fs::read_to_string(bin.join("helper.log")).unwrap();
        assert_eq!(log, format!("get {host}\n"), "{name}");
        std::fs::remove_file(bin.join("helper.log")).unwrap();
    }

    // A helper that is not on PATH: an error naming it and the registry
    // it was asked about (a `credsStore` serves every registry).
    let cfg = docker_config(
        tmp.path(),
        "missing",
        &serde_json::json!({"credHelpers": {host.clone(): "nixlayer-missing"}}),
    );
    let out = run(&mut push(&m, &format!("{host}/nixlayer-test/x:1"), &cfg), 1);
    assert!(
        shown(&out).contains(&format!(
            "credential helper `docker-credential-nixlayer-missing` for `{host}`: cannot run it"
        )),
        "{}",
        shown(&out)
    );
    // One that fails saying why on stdout only, as docker's helpers do:
    // named with the registry, its stdout (maybe the secret) not shown.
    use std::os::unix::fs::PermissionsExt as _;
    let failing = bin.join("docker-credential-failing");
    std::fs::write(
        &failing,
        "#!/bin/sh
echo 'wonderland: keychain locked'
exit 1
",
    )
    .unwrap();
    std::fs::set_permissions(&failing, std::fs::Permissions::from_mode(0o755)).unwrap();
    let cfg = docker_config(
        tmp.path(),
        "failing",
        &serde_json::json!({"credsStore": "failing"}),
    );
    let out = run(
        push(&m, &format!("{host}/nixlayer-test/x:1"), &cfg).env("PATH", &path),
        1,
    );
    assert_no_secret(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "credential helper `docker-credential-failing` for `{host}`: `get` failed (exit status: 1) with nothing on stderr"
        )) && stderr.lines().count() == 1,
        "{stderr}"
    );
}

#[test]
fn tls_registry_with_a_test_ca() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("docker-registry")
        || !util::require_tool("openssl")
        || !util::require_tool("skopeo")
    {
        return;
    }
    let tmp = util::temp_dir();
    let (registry, ca) = support::tls_registry(tmp.path(), "registry");
    let host = format!("127.0.0.1:{}", registry.port);
    let m = manifest(tmp.path(), "image.toml", &hello, r#""tls""#);
    let reference = format!("{host}/nixlayer-test/tls:s1");
    let none = tmp.path().join("no-config");
    let empty_certs_d = tmp.path().join("certs.d-empty");

    // Without the CA: a certificate error naming the ways to trust it,
    // and no fall back to plain HTTP although the host is loopback.
    let out = run(
        push(&m, &reference, &none)
            .env("NIXLAYER_CERTS_D", &empty_certs_d)
            .env_remove("SSL_CERT_FILE"),
        1,
    );
    let text = shown(&out);
    assert!(
        text.contains("TLS failed") && text.contains("--ca-file") && text.contains(&host),
        "{text}"
    );
    assert!(!text.contains("http://"), "{text}");

    // `--insecure` (as skopeo's `--tls-verify=false` would be given): plain
    // HTTP to the TLS port, which the error says, with the way to trust
    // the CA (before: the registry's bare 400 "Client sent an HTTP request
    // to an HTTPS server").
    let out = run(push(&m, &reference, &none).arg("--insecure"), 1);
    let text = shown(&out);
    assert!(
        text.contains(&format!("{host}: TLS failed: it speaks HTTPS only, and was sent plain HTTP; drop `--insecure` if given"))
            && text.contains("--ca-file"),
        "{text}"
    );

    // With it: `--ca-file`, `SSL_CERT_FILE`, docker's certs.d.
    let certs_d = tmp.path().join("certs.d");
    std::fs::create_dir_all(certs_d.join(&host)).unwrap();
    std::fs::copy(&ca, certs_d.join(&host).join("ca.crt")).unwrap();
    type Way<'a> = (&'a str, Vec<(&'a str, &'a Path)>, Vec<&'a str>);
    let ways: [Way; 3] = [
        ("ca-file", vec![], vec!["--ca-file", s(&ca)]),
        ("ssl-cert-file", vec![("SSL_CERT_FILE", &ca)], vec![]),
        ("certs-d", vec![("NIXLAYER_CERTS_D", &certs_d)], vec![]),
    ];
    let mut digests = Vec::new();
    for (name, env, args) in ways {
        let mut cmd = push(&m, &reference, &none);
        cmd.env("NIXLAYER_CERTS_D", &empty_certs_d)
            .env_remove("SSL_CERT_FILE")
            .args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = run(&mut cmd, 0);
        let pushed = json(&out.stdout);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(&format!("pushed {reference}")),
            "{name}"
        );
        digests.push(pushed["manifest_digest"].clone());
    }
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "{digests:?}");

    // skopeo, trusting the same CA, sees that digest.
    let inspect = json(&tool(
        "skopeo",
        &[
            "inspect",
            "--cert-dir",
            s(&certs_d.join(&host)),
            &format!("docker://{reference}"),
        ],
    ));
    assert_eq!(inspect["Digest"], digests[0]);

    // A base image on that registry: `build` and `layers` pull it with
    // `--ca-file` (and fail without it, never over plain HTTP).
    let m = on_base(
        tmp.path(),
        &format!(
            "docker://{host}/nixlayer-test/tls@{}",
            digests[0].as_str().unwrap()
        ),
    );
    for sub in ["build", "layers"] {
        let out = run(
            pulling(sub, &m, tmp.path(), &format!("{sub}-untrusted"))
                .env("NIXLAYER_CERTS_D", &empty_certs_d)
                .env_remove("SSL_CERT_FILE"),
            1,
        );
        let text = shown(&out);
        assert!(
            text.contains("TLS failed") && text.contains("--ca-file"),
            "{sub}: {text}"
        );
        run(
            pulling(sub, &m, tmp.path(), &format!("{sub}-trusted"))
                .env("NIXLAYER_CERTS_D", &empty_certs_d)
                .env_remove("SSL_CERT_FILE")
                .args(["--ca-file", s(&ca)]),
            0,
        );
    }

    // A CA file that holds no certificate is an error naming it.
    let junk = util::write(tmp.path(), "junk.pem", "not a certificate\n");
    let out = run(push(&m, &reference, &none).args(["--ca-file", s(&junk)]), 1);
    assert!(shown(&out).contains("junk.pem"), "{}", shown(&out));
    // The file is what is wrong, not the registry's certificate: no advice
    // to trust a CA with the very flag that failed.
    for file in [junk, tmp.path().join("missing.pem")] {
        let out = run(push(&m, &reference, &none).args(["--ca-file", s(&file)]), 1);
        let text = shown(&out);
        assert!(
            text.contains(&format!("{host}: cannot set up TLS"))
                && text.contains(s(&file))
                && !text.contains("TLS failed")
                && !text.contains("trust its CA"),
            "{text}"
        );
    }
}

/// A manifest whose only layers are those of the registry image `base`
/// (`docker://…@sha256:…`) and one file.
fn on_base(dir: &Path, base: &str) -> PathBuf {
    util::write(
        dir,
        "on-base.toml",
        &format!(
            r#"
name = "nixlayer-test/on-base"
tag = "t"
[base]
image = "{base}"
[closure]
roots = []
[[customisation.files]]
path = "/etc/top.txt"
text = "top\n"
"#
        ),
    )
}

/// `nixlayer SUBCOMMAND MANIFEST` (`build` writes `dir/out.tar`) with a
/// fresh image cache under `dir/cache-NAME`, no docker config and no
/// credentials in the environment.
fn pulling(sub: &str, m: &Path, dir: &Path, name: &str) -> Command {
    let mut cmd = nixlayer();
    cmd.arg(sub).arg(m);
    if sub == "build" {
        cmd.arg("-o").arg(dir.join(format!("{name}.tar")));
    }
    cmd.env("XDG_CACHE_HOME", dir.join(format!("cache-{name}")))
        .env("DOCKER_CONFIG", dir.join("no-config"))
        .env_remove("NIXLAYER_REGISTRY_USER")
        .env_remove("NIXLAYER_REGISTRY_PASSWORD");
    cmd
}

/// A `[base] image` from a token-auth registry is pulled with a token for
/// `pull` only, and `build` and `layers` take the registry's credentials
/// as `push` does: `--creds`, `--username` with `--password-stdin`, the
/// environment, docker's `config.json` (the issuer refuses anonymous pulls
/// of `nixlayer-test/private…`); `push` gives its own credentials to a
/// base on the same registry.
#[test]
fn a_base_image_is_pulled_for_pull_only_with_the_registry_options() {
    let Some((hello, tmp, setup, host)) = token_test(&[]) else {
        return;
    };
    let none = tmp.path().join("no-config");
    let base = manifest(tmp.path(), "image.toml", &hello, r#""base""#);
    let out = run(
        push(
            &base,
            &format!("{host}/nixlayer-test/private-base:1"),
            &none,
        )
        .args(["--creds", "alice:wonderland"]),
        0,
    );
    let digest = json(&out.stdout)["manifest_digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let base_layers = json(&out.stdout)["layers"].as_array().unwrap().len() as u64;
    let m = on_base(
        tmp.path(),
        &format!("docker://{host}/nixlayer-test/private-base@{digest}"),
    );
    setup.requests();
    let pull_only = serde_json::json!(["repository:nixlayer-test/private-base:pull"]);

    // Anonymous: refused by the registry, which the error says in one
    // line naming the repository and the access asked (not the
    // registry's bare `401: authentication required`).
    let out = run(&mut pulling("build", &m, tmp.path(), "anonymous"), 1);
    let refused = "the registry answered 401 to anonymous access (`pull` on `nixlayer-test/private-base`): give `--username USER`";
    assert!(
        shown(&out).contains("failed to pull base image")
            && shown(&out).lines().filter(|l| l.contains(refused)).count() == 1,
        "{}",
        shown(&out)
    );
    setup.requests();

    // `--creds`: the token is asked with basic auth, for pull only.
    let out = run(
        pulling("build", &m, tmp.path(), "creds").args(["--creds", "alice:wonderland"]),
        0,
    );
    assert_no_secret(&out);
    let asked = setup.requests();
    assert!(!asked.is_empty());
    for r in &asked {
        assert_eq!(r["auth"], "Basic", "{asked:?}");
        assert_eq!(r["ok"], true, "{asked:?}");
        assert_eq!(r["scopes"], pull_only, "{asked:?}");
    }

    // `layers` with `--username` and `--password-stdin`.
    let pw = util::write(tmp.path(), "pw", "wonderland\n");
    let out = run(
        pulling("layers", &m, tmp.path(), "stdin")
            .args(["--username", "alice", "--password-stdin"])
            .stdin(std::fs::File::open(&pw).unwrap()),
        0,
    );
    assert_no_secret(&out);
    let asked = setup.requests();
    assert!(asked
        .iter()
        .all(|r| r["auth"] == "Basic" && r["scopes"] == pull_only));

    // The environment, and docker's config.json.
    run(
        pulling("build", &m, tmp.path(), "env")
            .env("NIXLAYER_REGISTRY_USER", "alice")
            .env("NIXLAYER_REGISTRY_PASSWORD", "wonderland"),
        0,
    );
    let cfg = docker_config(
        tmp.path(),
        "auths",
        &serde_json::json!({"auths": {host.clone(): {"auth": "YWxpY2U6d29uZGVybGFuZA=="}}}),
    );
    run(
        pulling("build", &m, tmp.path(), "config").env("DOCKER_CONFIG", &cfg),
        0,
    );
    let asked = setup.requests();
    assert!(asked
        .iter()
        .all(|r| r["auth"] == "Basic" && r["scopes"] == pull_only));

    // A wrong password: the pull fails, and it is not shown.
    let out = run(
        pulling("build", &m, tmp.path(), "wrong").args(["--creds", "alice:wrong-wonderland"]),
        1,
    );
    assert_no_secret(&out);

    // `push` of an image on that base to the same registry: its
    // credentials reach the pull too.
    let out = run(
        push(&m, &format!("{host}/nixlayer-test/on-base:1"), &none)
            .env("XDG_CACHE_HOME", tmp.path().join("cache-push"))
            .args(["--creds", "alice:wonderland"]),
        0,
    );
    assert_no_secret(&out);
    // The base's layers are mounted from its repository, with a token
    // that names both repositories.
    let blobs = &json(&out.stdout)["blobs"];
    assert_eq!(blobs["mounted"].as_u64(), Some(base_layers), "{blobs}");
    // Seen to fail once in a loaded full run (not reproduced alone): the
    // requests the issuer logged are shown, to tell which token did it.
    let asked = setup.requests();
    assert!(
        asked.iter().any(|r| r["scopes"]
            == serde_json::json!([
                "repository:nixlayer-test/on-base:pull,push",
                "repository:nixlayer-test/private-base:pull"
            ])),
        "a token for the mount; the issuer was asked: {asked:?}"
    );
    drop(setup.issuer);
}
