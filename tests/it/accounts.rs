//! `[[users]]` and `[[groups]]` (issue 13): the account files and homes in
//! the customisation layer, `config.User` by name, run by docker; collisions
//! with `[customisation]` follow `on_collision`.

use std::collections::BTreeMap;
use std::path::Path;

use crate::support;
use crate::util::{self, docker, docker_ready, nixlayer, run};

/// The account files of the top (customisation) layer of a docker-archive,
/// read with GNU tar.
fn layer_file_texts(archive: &Path) -> BTreeMap<&'static str, String> {
    let layer = support::top_layer(archive);
    [
        "/etc/passwd",
        "/etc/group",
        "/etc/shadow",
        "/etc/nsswitch.conf",
    ]
    .into_iter()
    .map(|name| (name, support::layer_file(&layer, name)))
    .collect()
}

fn build(manifest: &Path, out: &Path) {
    run(nixlayer().arg("build").arg(manifest).arg("-o").arg(out), 0);
}

/// A manifest: a static busybox as the entry point (`sh -c SCRIPT`), the
/// app user, `/tmp` 1777, and `extra` appended.
fn manifest(dir: &Path, busybox: &Path, script: &str, extra: &str) -> std::path::PathBuf {
    util::write(
        dir,
        "image.toml",
        &format!(
            r#"
name = "nixlayer-test/accounts"
tag = "t"
[closure]
roots = ["{busybox}"]
[config]
User = "app"
Entrypoint = ["{busybox}/bin/busybox", "sh", "-c", "{script}"]
[[users]]
name = "app"
uid = 1000
groups = ["staff"]
[[groups]]
name = "staff"
gid = 50
[[customisation.dirs]]
path = "/tmp"
mode = "1777"
{extra}
"#,
            busybox = busybox.display()
        ),
    )
}

/// docker runs the image as `app` (resolved from the image's
/// `/etc/passwd`); the name resolves both ways, its home is its own, and
/// `/tmp` is sticky and world-writable. busybox has no `getent`, so the
/// lookup is `id -un` (getpwuid) and `id app` (getpwnam) through the
/// image's files.
#[test]
fn an_image_with_users_runs_as_the_named_user() {
    let Some(busybox) = util::nix_fixture("busybox") else {
        return;
    };
    if !docker_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let b = format!("{}/bin/busybox", busybox.display());
    let script = format!(
        "{b} id -un; {b} id; {b} id app; {b} grep ^app: /etc/passwd; {b} stat -c '%a %U' /tmp /home/app; {b} touch /tmp/x /home/app/y && {b} echo writable"
    );
    let m = manifest(tmp.path(), &busybox, &script, "");
    let archive = tmp.path().join("image.tar");
    build(&m, &archive);
    // Built twice, the same bytes.
    let again = tmp.path().join("again.tar");
    build(&m, &again);
    assert_eq!(
        std::fs::read(&archive).unwrap(),
        std::fs::read(&again).unwrap()
    );

    docker(&["load", "-i", archive.to_str().unwrap()]);
    let config = docker(&[
        "image",
        "inspect",
        "-f",
        "{{.Config.User}}",
        "nixlayer-test/accounts:t",
    ]);
    let out = util::docker_run("nixlayer-test/accounts:t");
    assert_eq!(config.trim(), "app", "the name stays in config.User");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "app",
            // docker sets the supplementary groups from /etc/group itself.
            "uid=1000(app) gid=1000(app) groups=50(staff),1000(app)",
            "uid=1000(app) gid=1000(app) groups=1000(app),50(staff)",
            "app:x:1000:1000::/home/app:/bin/sh",
            "1777 root",
            "700 app",
            "writable",
        ],
        "{out}"
    );
}

/// The account files in the layer: root and nobody added, shadow locked,
/// nsswitch with `hosts: files dns`; a file of `[customisation]` at
/// `/etc/passwd` is an error, or kept with `on_collision = "first"`.
#[test]
fn account_files_and_collisions() {
    let Some(busybox) = util::nix_fixture("busybox") else {
        return;
    };
    let tmp = util::temp_dir();
    let m = manifest(tmp.path(), &busybox, "true", "");
    let archive = tmp.path().join("image.tar");
    build(&m, &archive);
    let files = layer_file_texts(&archive);
    assert_eq!(
        files["/etc/passwd"],
        "root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\n"
    );
    assert_eq!(
        files["/etc/group"],
        "root:x:0:\nstaff:x:50:app\napp:x:1000:\nnogroup:x:65534:\n"
    );
    assert_eq!(
        files["/etc/shadow"],
        "root:!:1::::::\napp:!:1::::::\nnobody:!:1::::::\n"
    );
    assert!(files["/etc/nsswitch.conf"].contains("hosts:     files dns\n"));

    let theirs = "[[customisation.files]]\npath = \"/etc/passwd\"\ntext = \"mine\\n\"\n";
    let m = manifest(tmp.path(), &busybox, "true", theirs);
    let stderr = support::failed_build(&mut nixlayer(), &m, &tmp.path().join("collide.tar"));
    assert!(
        stderr.contains("`/etc/passwd` comes from both") && stderr.contains("on_collision"),
        "{stderr}"
    );

    let m = manifest(
        tmp.path(),
        &busybox,
        "true",
        &format!("[customisation]\non_collision = \"first\"\n{theirs}"),
    );
    let first = tmp.path().join("first.tar");
    build(&m, &first);
    let files = layer_file_texts(&first);
    assert_eq!(files["/etc/passwd"], "mine\n");
    assert!(files["/etc/group"].contains("staff:x:50:app"));
}

/// `config.User` naming no account is an error at its line.
#[test]
fn a_user_no_account_defines_is_an_error_at_its_line() {
    let tmp = util::temp_dir();
    let m = util::write(
        tmp.path(),
        "image.toml",
        "name = \"x\"\n[closure]\nroots = []\n[config]\nUser = \"ghost\"\n[[users]]\nname = \"app\"\nuid = 1000\n",
    );
    let stderr = support::failed_build(&mut nixlayer(), &m, &tmp.path().join("x.tar"));
    assert!(
        stderr.contains("image.toml:5:") && stderr.contains("`ghost`"),
        "{stderr}"
    );
}

/// `config.User` naming a user or group in an image with no `/etc/passwd`
/// (or `/etc/group`) to resolve it is an error before any output: docker
/// refuses to start such an image ("unable to find user ghost: no matching
/// entries in passwd file"), and the build used to succeed silently. A
/// numeric id, an account file from `files`, a rootfs (no config) and a
/// `run` script (which may write the file) pass.
#[test]
fn a_named_user_without_a_passwd_file_is_an_error() {
    let tmp = util::temp_dir();
    let store = util::repo().join("fixtures/example/store");
    let manifest = |name: &str, user: &str, extra: &str| {
        util::write(
            tmp.path(),
            name,
            &format!(
                "name = \"x\"\n{}[config]\nUser = \"{user}\"\n{extra}",
                support::example_closure(&store)
            ),
        )
    };
    let out = tmp.path().join("x.tar");
    for (user, missing) in [("ghost", "user `ghost`"), ("0:staff", "group `staff`")] {
        let m = manifest("bad.toml", user, "");
        let stderr = support::failed_build(&mut nixlayer(), &m, &out);
        assert!(
            stderr.contains(missing) && stderr.contains("[[users]]"),
            "{user}: {stderr}"
        );
    }
    let passwd =
        "[[customisation.files]]\npath = \"/etc/passwd\"\ntext = \"ghost:x:5:5::/:/bin/sh\\n\"\n";
    let run_script = "[customisation]\nrun = \"mkdir -p etc\"\n";
    for (user, extra) in [("1000:1000", ""), ("ghost", passwd), ("ghost", run_script)] {
        let m = manifest("good.toml", user, extra);
        run(nixlayer().arg("build").arg(&m).arg("-o").arg(&out), 0);
    }
    let m = manifest("rootfs.toml", "ghost", "");
    run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--format", "rootfs", "-o"])
            .arg(tmp.path().join("rootfs.tar")),
        0,
    );
}
