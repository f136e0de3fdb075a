//! `nixlayer init`: the manifest it prints for a real `nix-build` closure
//! builds as is, loads in docker and runs its one program; bad roots are
//! refused with the path named.

use crate::util::{self, docker, docker_ready, docker_run, nixlayer, run};

/// `hello-app-1.0` (see `fixtures/nix/default.nix`):
///
/// ```text
/// hello-app-1.0 ──► busybox-static-1.35
///       └─────────► greeting-1.0
/// ```
///
/// Its `bin/` has one executable, `hello`, so `init` makes it the entry point.
#[test]
fn init_manifest_builds_loads_and_runs_in_docker() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !docker_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let out = run(nixlayer().arg("init").arg(&hello), 0);
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("\nname = \"hello-app\"\n"), "{text}");
    assert!(
        text.contains(&format!("Entrypoint = [\"{}/bin/hello\"]", hello.display())),
        "{text}"
    );
    let manifest = util::write(tmp.path(), "image.toml", &text);

    let archive = tmp.path().join("hello.tar");
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .arg("-o")
            .arg(&archive)
            .arg("--json"),
        0,
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reference = summary["reference"].as_str().unwrap().to_owned();
    assert!(reference.starts_with("hello-app:"), "{reference}");
    // Three store paths, each in a layer of its own (no customisation: no
    // customisation layer).
    assert_eq!(summary["layers"].as_array().unwrap().len(), 3, "{summary}");

    let loaded = docker(&["load", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains(&reference), "{loaded}");
    assert_eq!(docker_run(&reference), "hello from nixlayer\nargs: \n");

    // The same roots, the same manifest, the same image.
    let again = run(nixlayer().arg("init").arg(&hello), 0).stdout;
    assert_eq!(again, text.as_bytes());
    let second = tmp.path().join("again.tar");
    run(
        nixlayer()
            .arg("build")
            .arg(util::write(tmp.path(), "again.toml", &text))
            .arg("-o")
            .arg(&second),
        0,
    );
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&second).unwrap()
    );
}

/// Runs `init` with `args`, expecting exit `code`, no stdout and a one-line
/// error naming `names`.
fn init_fails(args: &[&str], code: i32, names: &str) -> String {
    let out = run(nixlayer().arg("init").args(args), code);
    assert!(out.stdout.is_empty());
    let stderr = String::from_utf8(out.stderr).unwrap();
    let first = stderr.lines().next().unwrap_or_default();
    assert!(first.starts_with("error: "), "{stderr}");
    assert!(first.contains(names), "`{names}` not in: {stderr}");
    stderr
}

/// `nixlayer init ./result`: the out-link `nix build` leaves (here a
/// chain of them, relative and absolute) names the store path it leads to,
/// as for `nix-store -qR ./result`; it used to be refused as "not inside
/// the store directory". A link leading out of the store still is.
#[test]
fn init_follows_out_links_to_their_store_path() {
    let tmp = util::temp_dir();
    let dir = tmp.path().join("store");
    let root = dir.join("00000000000000000000000000000000-tool-1.0");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::os::unix::fs::symlink(
        "../store/00000000000000000000000000000000-tool-1.0",
        work.join("result"),
    )
    .unwrap();
    std::os::unix::fs::symlink("result", work.join("result-2")).unwrap();
    std::os::unix::fs::symlink(work.join("result-2"), work.join("abs")).unwrap();
    let dir_arg = dir.to_str().unwrap();
    let direct = run(
        nixlayer().args(["init", "--store-dir", dir_arg]).arg(&root),
        0,
    )
    .stdout;
    for link in ["./result", "result-2", "abs"] {
        let out = run(
            nixlayer()
                .args(["init", "--store-dir", dir_arg, link])
                .current_dir(&work),
            0,
        );
        assert_eq!(out.stdout, direct, "{link}");
    }
    std::os::unix::fs::symlink("/usr/bin", work.join("elsewhere")).unwrap();
    let out = run(
        nixlayer()
            .args(["init", "--store-dir", dir_arg, "elsewhere"])
            .current_dir(&work),
        2,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("`elsewhere` is not a valid store path"),
        "{stderr}"
    );
}

#[test]
fn init_refuses_what_is_not_a_store_path_on_disk() {
    // Not store paths: usage errors (2), like any malformed argument.
    init_fails(
        &["/usr/bin/env"],
        2,
        "`/usr/bin/env` is not a valid store path",
    );
    init_fails(&["hello"], 2, "`hello` is not a valid store path");
    init_fails(
        &["/nix/store/0000000000000000000000000000000e-x"],
        2,
        "`/nix/store/0000000000000000000000000000000e-x` is not a valid store path",
    );
    init_fails(
        &["/nix/store/00000000000000000000000000000000-x/bin/x"],
        2,
        "inside a store path",
    );
    init_fails(&["--store-dir", "store", "/x"], 2, "`--store-dir`");
    // Valid store paths that are not there: a failure (1), with a hint.
    let missing = "/nix/store/00000000000000000000000000000000-missing-1.0";
    let stderr = init_fails(
        &[missing],
        1,
        &format!("store path `{missing}` does not exist"),
    );
    assert!(stderr.contains("hint: "), "{stderr}");
    // In another store directory, checked there.
    let tmp = util::temp_dir();
    let dir = tmp.path().join("store");
    let root = dir.join("00000000000000000000000000000000-tool-1.0");
    std::fs::create_dir_all(&root).unwrap();
    let dir = dir.to_str().unwrap();
    let out = run(nixlayer().args(["init", "--store-dir", dir]).arg(&root), 0);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!(
            "[store]\n# The store directory the paths live in.\ndir = \"{dir}\""
        )),
        "{text}"
    );
    assert!(
        text.contains("# Entrypoint = ["),
        "no `bin/`: only a hint\n{text}"
    );
    init_fails(
        &[
            "--store-dir",
            dir,
            &format!("{dir}/00000000000000000000000000000000-gone"),
        ],
        1,
        "does not exist",
    );
    // No root at all: clap's usage error.
    run(nixlayer().arg("init"), 2);
}
