//! `nixlayer build` end to end: real closures from `nix-build`, loaded and
//! run by the real docker; reproducibility across environments.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::util::{self, docker, docker_ready, docker_run, nixlayer, run};

/// A manifest for the `hello` fixture: a shell script run by a static busybox.
///
/// ```text
/// hello-app-1.0 ──► busybox-static-1.35
///       └─────────► greeting-1.0
/// ```
fn hello_manifest(dir: &Path, hello: &Path, extra: &str) -> PathBuf {
    let hello = hello.display();
    util::write(
        dir,
        "image.toml",
        &format!(
            r#"
name = "nixlayer-test/hello"
tag = "it"
{extra}
[closure]
roots = ["{hello}"]

[config]
Entrypoint = ["{hello}/bin/hello"]
Cmd = ["from", "docker"]
"#
        ),
    )
}

#[test]
fn image_from_a_real_closure_loads_and_runs_in_docker() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !docker_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let manifest = hello_manifest(tmp.path(), &hello, "");

    // -o FILE, then `docker load -i`.
    let archive = tmp.path().join("hello.tar");
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .arg("-o")
            .arg(&archive),
        0,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("nixlayer-test/hello:it"),
        "summary line: {stderr}"
    );
    let loaded = docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("nixlayer-test/hello:it"), "{loaded}");
    assert_eq!(
        docker_run("nixlayer-test/hello:it"),
        "hello from nixlayer\nargs: from docker\n"
    );

    // --stream | docker load, with --tag overriding the manifest.
    let mut build = nixlayer()
        .arg("build")
        .arg(&manifest)
        .args(["--stream", "--tag", "nixlayer-test/streamed:s1"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let load = Command::new("docker")
        .arg("load")
        .stdin(build.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(build.wait().unwrap().success());
    assert!(
        load.status.success(),
        "{}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert_eq!(
        docker_run("nixlayer-test/streamed:s1"),
        "hello from nixlayer\nargs: from docker\n"
    );
}

#[test]
fn stream_and_file_give_the_same_bytes() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let manifest = hello_manifest(tmp.path(), &hello, "");
    let archive = tmp.path().join("a.tar");
    run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .arg("-o")
            .arg(&archive),
        0,
    );
    let streamed = run(nixlayer().arg("build").arg(&manifest).arg("--stream"), 0).stdout;
    assert_eq!(std::fs::read(&archive).unwrap(), streamed);
}

#[test]
fn same_manifest_same_bytes_under_another_umask_tz_locale_and_cwd() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let manifest = hello_manifest(tmp.path(), &hello, "");
    let first = run(nixlayer().arg("build").arg(&manifest).arg("--stream"), 0).stdout;

    let elsewhere = util::temp_dir();
    let second = run(
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask 077; exec {} build {} --stream",
                env!("CARGO_BIN_EXE_nixlayer"),
                manifest.display()
            ))
            .current_dir(elsewhere.path())
            .env("TZ", "Pacific/Chatham")
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "de_DE.UTF-8")
            .env("NIX_CONFIG", util::NIX_CONFIG),
        0,
    )
    .stdout;
    assert!(first.len() > 10240);
    assert_eq!(first, second, "two builds of one manifest differ");
}

/// The embedded example builds from committed store paths without Nix,
/// and its bytes never drift: a change here changes every user's digests.
#[test]
fn example_manifest_builds_without_nix_and_is_pinned() {
    let tmp = util::temp_dir();
    let out = tmp.path().join("example.tar");
    let manifest = util::repo().join("manifests/example.toml");
    run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .arg("-o")
            .arg(&out)
            .env("PATH", "/nonexistent"),
        0,
    );
    let bytes = std::fs::read(&out).unwrap();
    let digest = nixlayer::oci::Digest::of(&bytes);
    assert_eq!(
        digest.hex(),
        EXAMPLE_ARCHIVE_SHA256,
        "the example archive changed"
    );
}

/// The embedded example is a real image: loaded by docker and run with no
/// network, its program reads its config from its own store path, follows
/// it to the greeting through a symlink in another layer, and prints where
/// everything came from (the output the README shows).
#[test]
fn example_image_runs_in_docker_without_network() {
    if !docker_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let out = tmp.path().join("example.tar");
    // A tag of this process's own: other test runs share the daemon.
    let tag = format!("nixlayer-test/example:it-{}", std::process::id());
    run(
        nixlayer()
            .arg("build")
            .arg(util::repo().join("manifests/example.toml"))
            .args(["--tag", &tag, "-o"])
            .arg(&out)
            .env("PATH", "/nonexistent"),
        0,
    );
    let loaded = docker(&["load", "-i", out.to_str().unwrap()]);
    assert!(loaded.contains(&tag), "{loaded}");
    assert_eq!(docker_run(&tag), EXAMPLE_OUTPUT);
}

/// What `docker run --rm nixlayer/example:0.3` prints (README, "The two
/// commands").
const EXAMPLE_OUTPUT: &str = "\
Hello from a Nix closure.

argv:     /nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3/bin/hello
config:   /nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3/etc/hello.conf
greeting: /nix/store/2jwagnlndazr95zyyns02ih462kl82h1-example-site-2.1/share/www/greeting.txt
  -> /nix/store/7nfhipmb7k7l7rfafbnansncz9730ygj-example-greeting-1.0/share/greeting.txt
LANG:     C.UTF-8
";

/// The committed example store and graph are exactly what its program's
/// source and `fixtures/example/regenerate` make (same gcc: the binary is
/// byte-for-byte reproducible), so the source in the repository is the
/// source of the binary in the image.
#[test]
fn example_fixture_is_what_regenerate_makes() {
    if !util::require_tool("gcc") || !util::require_tool("python3") {
        return;
    }
    let out = run(
        Command::new(util::repo().join("fixtures/example/regenerate")).arg("--check"),
        0,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "fixtures/example is up to date\n"
    );
}

const EXAMPLE_ARCHIVE_SHA256: &str =
    "9c18dba7c606079119036bac1cff58462dfe879f4a905cc7d755d4157b15fbca";
