//! Shared test helpers: real Nix fixtures, tool checks, running the binary
//! and other tools, docker.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the tests run under CI, where a missing tool is a failure, not a skip.
pub fn under_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether `tool` is on PATH. Under CI a missing tool fails the test;
/// elsewhere the caller skips, with a note on stderr.
pub fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            !under_ci(),
            "`{tool}` is required under CI but was not found"
        );
        eprintln!("skipped: `{tool}` not found");
    }
    found
}

/// The NIX_CONFIG every Nix call of the tests uses: single-user, no sandbox,
/// no substituters (the machines reach no binary cache).
pub const NIX_CONFIG: &str =
    "build-users-group =\nsandbox = false\nsubstituters =\nexperimental-features = nix-command";

static NIX_BUILD: Mutex<()> = Mutex::new(());

/// Builds attribute `attr` of `fixtures/nix` with the real `nix-build` and
/// returns its output store path, or `None` (skip) when Nix is missing
/// outside CI. The out-link lives under `target/nix-fixtures/`, so the
/// store path stays a GC root.
pub fn nix_fixture(attr: &str) -> Option<PathBuf> {
    if !require_tool("nix-build") {
        return None;
    }
    let _guard = NIX_BUILD
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let link = repo().join("target/nix-fixtures").join(attr);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let out = Command::new("nix-build")
        .arg(repo().join("fixtures/nix"))
        .args(["-A", attr, "-o"])
        .arg(&link)
        .env("NIX_CONFIG", NIX_CONFIG)
        .output()
        .expect("run nix-build");
    assert!(
        out.status.success(),
        "nix-build -A {attr} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(PathBuf::from(String::from_utf8(out.stdout).unwrap().trim()))
}

/// Runs a Nix command with the tests' NIX_CONFIG and returns its stdout.
pub fn nix(program: &str, args: &[&str]) -> Vec<u8> {
    stdout_of(
        Command::new(program).env("NIX_CONFIG", NIX_CONFIG),
        program,
        args,
    )
}

/// Runs `program` with `args`, asserting success; its stdout.
pub fn tool(program: &str, args: &[&str]) -> Vec<u8> {
    stdout_of(&mut Command::new(program), program, args)
}

fn stdout_of(cmd: &mut Command, program: &str, args: &[&str]) -> Vec<u8> {
    let out = cmd
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether a docker daemon answers; under CI its absence fails the test.
pub fn docker_ready() -> bool {
    if !require_tool("docker") {
        return false;
    }
    let ok = Command::new("docker")
        .arg("info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok || !under_ci(), "the docker daemon is required under CI");
    if !ok {
        eprintln!("skipped: no docker daemon");
    }
    ok
}

/// Runs `docker` with `args`, asserting success; its stdout.
pub fn docker(args: &[&str]) -> String {
    String::from_utf8_lossy(&tool("docker", args)).into_owned()
}

/// Runs `image` once (no network), removes it and returns its stdout.
pub fn docker_run(image: &str) -> String {
    let out = docker(&["run", "--rm", "--network", "none", image]);
    let _ = Command::new("docker").args(["rmi", "-f", image]).output();
    out
}

/// A fresh temporary directory for one test.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("nixlayer-test-")
        .tempdir()
        .expect("create temp dir")
}

/// A `nixlayer` command with a fixed, neutral environment.
pub fn nixlayer() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixlayer"));
    cmd.env("TZ", "UTC")
        .env("LC_ALL", "C")
        .env_remove("SOURCE_DATE_EPOCH")
        // The tests' own layer cache, not the user's.
        .env("XDG_CACHE_HOME", repo().join("target/test-cache"))
        // Not the machine's `podman login` credentials (a file that does
        // not exist; a test that wants one sets its own).
        .env(
            "REGISTRY_AUTH_FILE",
            repo().join("target/no-registry-auth-file.json"),
        )
        .env("NIX_CONFIG", NIX_CONFIG);
    cmd
}

/// Runs `cmd`, asserting its exit code, and returns its output.
pub fn run(cmd: &mut Command, code: i32) -> Output {
    let out = cmd.output().expect("run command");
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Writes `text` to `dir/name` and returns the path.
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write file");
    path
}
