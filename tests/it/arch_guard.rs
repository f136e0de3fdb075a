//! The architecture guard: an entrypoint or root program built for another
//! machine than the image platform fails the build (one error, exit 1, no
//! output), or warns with `--no-arch-check`. The arm64 programs are ELF
//! headers made here, in a store root with a graph file as
//! fixtures/example has.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::util::{self, nixlayer, run};

const APP: &str = "/nix/store/11111111111111111111111111111111-armapp-1.0";

/// The 64-byte header of an arm64 (EM_AARCH64, 64-bit LE) executable.
fn arm64_elf() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // ELFCLASS64
    h[5] = 1; // ELFDATA2LSB
    h[6] = 1; // EV_CURRENT
    h[16] = 2; // ET_EXEC
    h[18..20].copy_from_slice(&183u16.to_le_bytes());
    h
}

/// A store root holding `armapp-1.0` (`bin/app`, the arm64 header, and
/// `bin/run`, a script whose interpreter is `bin/app`) and its graph.
/// Returns the manifest.
fn fixture(dir: &Path, top: &str, extra: &str) -> PathBuf {
    let bin = dir.join(format!("store{APP}/bin"));
    std::fs::create_dir_all(&bin).unwrap();
    let exec = |name: &str, bytes: &[u8]| {
        let path = bin.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o555)).unwrap();
    };
    exec("app", &arm64_elf());
    exec("run", format!("#!{APP}/bin/app -x\n").as_bytes());
    util::write(
        dir,
        "graph.json",
        &format!(
            r#"[{{"path":"{APP}","narHash":"sha256:{zeros}","narSize":1000,"closureSize":1000,"references":[]}}]"#,
            zeros = "0".repeat(52)
        ),
    );
    util::write(
        dir,
        "image.toml",
        &format!(
            r#"name = "nixlayer-test/arch"
tag = "t"
{top}

[store]
root = "{root}"

[closure]
roots = ["{APP}"]
source = {{ graph = "{graph}" }}

[[customisation.symlinks]]
path = "/usr/bin/entry"
target = "../..{APP}/bin/run"
{extra}
"#,
            root = dir.join("store").display(),
            graph = dir.join("graph.json").display(),
        ),
    )
}

#[test]
fn an_arm64_entrypoint_on_an_amd64_image_fails_with_one_error() {
    let tmp = util::temp_dir();
    let manifest = fixture(
        tmp.path(),
        "architecture = \"amd64\"",
        "[config]\nEntrypoint = [\"/usr/bin/entry\"]\n",
    );
    let out = tmp.path().join("image.tar");
    let failed = run(
        nixlayer().arg("build").arg(&manifest).arg("-o").arg(&out),
        1,
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    for part in [
        "`/usr/bin/entry`",
        &format!("`{APP}/bin/app`"),
        "AArch64 (64-bit LE)",
        "linux/amd64",
        "x86-64",
        "--no-arch-check",
        "(and 2 more programs)",
    ] {
        assert!(stderr.contains(part), "{part}: {stderr}");
    }
    assert!(!out.exists(), "no output file");
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        3,
        "nothing left beside the inputs"
    );

    // The flag turns it into warnings, one per program.
    let warned = run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .arg("--no-arch-check")
            .arg("-o")
            .arg(&out),
        0,
    );
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert_eq!(stderr.matches("warning: ").count(), 3, "{stderr}");
    assert!(out.exists());
}

/// An entrypoint that is itself one of the root's `bin/` programs is
/// reported once: the error used to count it again as "1 more program",
/// and `--no-arch-check` warned twice about the same file.
#[test]
fn an_entrypoint_in_the_roots_bin_is_reported_once() {
    let tmp = util::temp_dir();
    let manifest = fixture(
        tmp.path(),
        "architecture = \"amd64\"",
        &format!("[config]\nEntrypoint = [\"{APP}/bin/app\"]\n"),
    );
    let out = tmp.path().join("image.tar");
    let failed = run(
        nixlayer().arg("build").arg(&manifest).arg("-o").arg(&out),
        1,
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    // `bin/app` (the entrypoint) and `bin/run` (its script): two programs.
    assert!(stderr.contains("(and 1 more program)"), "{stderr}");
    let warned = run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .arg("--no-arch-check")
            .arg("-o")
            .arg(&out),
        0,
    );
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert_eq!(stderr.matches("warning: ").count(), 2, "{stderr}");
    assert_eq!(
        stderr
            .matches(&format!("warning: `{APP}/bin/app` is"))
            .count(),
        1,
        "{stderr}"
    );
}

#[test]
fn an_arm64_image_of_arm64_programs_builds_and_host_files_are_never_read() {
    let tmp = util::temp_dir();
    // `/bin/sh` is not in the image: the host's (an x86-64 program here)
    // must not be looked at, nor the host's `/usr/bin/entry` chain.
    let manifest = fixture(
        tmp.path(),
        "architecture = \"arm64\"",
        "[config]\nEntrypoint = [\"/bin/sh\"]\n",
    );
    let out = tmp.path().join("image.tar");
    let built = run(
        nixlayer().arg("build").arg(&manifest).arg("-o").arg(&out),
        0,
    );
    assert!(
        !String::from_utf8_lossy(&built.stderr).contains("ELF"),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    assert!(out.exists());
}

#[test]
fn push_refuses_before_anything_reaches_the_registry() {
    use crate::push::{registry_ready, REGISTRY};
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let manifest = fixture(
        tmp.path(),
        "architecture = \"amd64\"",
        &format!("[config]\nCmd = [\"{APP}/bin/app\"]\n"),
    );
    let tag = format!("p{}", std::process::id());
    let reference = format!("{REGISTRY}/nixlayer-test/arch:{tag}");
    let failed = run(nixlayer().arg("push").arg(&manifest).arg(&reference), 1);
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("AArch64") && stderr.contains("linux/amd64"),
        "{stderr}"
    );
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let status = agent
        .get(format!(
            "http://{REGISTRY}/v2/nixlayer-test/arch/manifests/{tag}"
        ))
        .header("Accept", "application/vnd.oci.image.manifest.v1+json")
        .call()
        .unwrap()
        .status()
        .as_u16();
    assert_eq!(status, 404, "no manifest pushed");
}
