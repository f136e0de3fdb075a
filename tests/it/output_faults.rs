//! Where outputs go when the target is not an ordinary new file, and what
//! a failed, interrupted or concurrent build leaves: devices, FIFOs and
//! symlinks are written through and never replaced; an output naming an
//! input is refused; the umask is honoured; SIGINT/SIGTERM leave no
//! temporary file and no new layout; concurrent builds into one layout
//! keep every tag; a closed pipe is reported with status 141; write
//! errors name the user's path. The real binary on real files throughout.

use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::outputs::{example_copy, APP};
use crate::util::{self, nixlayer, run, tool};

fn example() -> PathBuf {
    util::repo().join("manifests/example.toml")
}

/// The example image as `--stream` writes it.
fn streamed() -> Vec<u8> {
    run(nixlayer().arg("build").arg(example()).arg("--stream"), 0).stdout
}

/// The entries of `dir` (recursively) named `.nixlayer-*`: temporary files
/// and staging directories.
fn debris(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(".nixlayer-")
        {
            found.push(path.clone());
        }
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(debris(&path));
        }
    }
    found
}

/// A manifest whose only layer holds `size` bytes of `big.bin` (sparse):
/// slow enough to interrupt, or to fill a pipe.
fn big_manifest(dir: &Path, size: u64) -> PathBuf {
    let big = std::fs::File::create(dir.join("big.bin")).unwrap();
    big.set_len(size).unwrap();
    util::write(
        dir,
        "big.toml",
        r#"
name = "nixlayer-test/big"
tag = "big"
[closure]
roots = []
[[customisation.files]]
path = "/big"
source = "big.bin"
"#,
    )
}

#[test]
fn dev_null_and_dev_stdout_are_written_in_place_never_replaced() {
    let tmp = util::temp_dir();
    let before = std::fs::metadata("/dev/null").unwrap();
    run(
        nixlayer()
            .arg("build")
            .arg(example())
            .args(["-o", "/dev/null"]),
        0,
    );
    let after = std::fs::metadata("/dev/null").unwrap();
    assert!(after.file_type().is_char_device());
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&before),
        std::os::unix::fs::MetadataExt::ino(&after)
    );
    assert!(debris(Path::new("/dev")).is_empty());

    // /dev/stdout and /proc/self/fd/1 (links to the pipe): the image goes
    // to the pipe, byte for byte what --stream writes.
    let expected = streamed();
    for target in ["/dev/stdout", "/proc/self/fd/1"] {
        let out = run(
            nixlayer()
                .arg("build")
                .arg(example())
                .args(["-o", target])
                .current_dir(tmp.path()),
            0,
        );
        assert!(out.stdout == expected, "{target}: other bytes");
    }
    assert!(std::fs::symlink_metadata("/dev/stdout")
        .unwrap()
        .file_type()
        .is_symlink());

    // /dev/full: the error names it, and it stays a device.
    let out = run(
        nixlayer()
            .arg("build")
            .arg(example())
            .args(["-o", "/dev/full"]),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`/dev/full`"), "{stderr}");
    assert!(stderr.contains("No space left"), "{stderr}");
    assert!(std::fs::metadata("/dev/full")
        .unwrap()
        .file_type()
        .is_char_device());

    // merge and layers --html too.
    let image = tmp.path().join("a.tar");
    std::fs::write(&image, &expected).unwrap();
    run(
        nixlayer()
            .arg("merge")
            .arg(&image)
            .args(["-o", "/dev/null"]),
        0,
    );
    run(
        nixlayer()
            .arg("layers")
            .arg(example())
            .args(["--html", "/dev/null"]),
        0,
    );
    assert!(std::fs::metadata("/dev/null")
        .unwrap()
        .file_type()
        .is_char_device());
}

/// `-o -` is stdout, as for `tar -f -` and `curl -o -`: `build -o -` is
/// `build --stream`, and `merge`, `layers --html` and `sbom` write stdout;
/// no file named `-` appears. `--json` is refused (exit 2, nothing built)
/// when the image goes to stdout, by `-o -`, `/dev/stdout` or the file
/// stdout is redirected to: the summary used to land after the image in a
/// pipe, or over its first bytes in a file.
#[test]
fn dash_is_stdout_and_json_never_shares_stdout_with_the_image() {
    let tmp = util::temp_dir();
    let expected = streamed();
    let dash = |args: &[&str]| {
        let out = run(nixlayer().args(args).current_dir(tmp.path()), 0);
        assert!(!tmp.path().join("-").exists(), "{args:?} wrote a file `-`");
        out.stdout
    };
    let manifest = example();
    let manifest = manifest.to_str().unwrap();
    assert!(
        dash(&["build", manifest, "-o", "-"]) == expected,
        "other bytes"
    );
    let image = tmp.path().join("a.tar");
    std::fs::write(&image, &expected).unwrap();
    let merged = dash(&["merge", image.to_str().unwrap(), "-o", "-"]);
    let merged_file = tmp.path().join("merged.tar");
    run(
        nixlayer()
            .arg("merge")
            .arg(&image)
            .arg("-o")
            .arg(&merged_file),
        0,
    );
    assert!(
        merged == std::fs::read(&merged_file).unwrap(),
        "merge: other bytes"
    );
    let html = dash(&["layers", manifest, "--html", "-"]);
    assert!(html.starts_with(b"<!doctype html>"));
    let spdx = dash(&["sbom", manifest, "--format", "spdx-json", "-o", "-"]);
    serde_json::from_slice::<Value>(&spdx).expect("SPDX JSON on stdout");

    // `--json` with the image on stdout: a usage error before any work.
    for (command, target) in [("build", "-"), ("build", "/dev/stdout"), ("merge", "-")] {
        let input = if command == "build" {
            manifest
        } else {
            image.to_str().unwrap()
        };
        let out = run(
            nixlayer()
                .args([command, input, "-o", target, "--json"])
                .current_dir(tmp.path()),
            2,
        );
        assert!(out.stdout.is_empty(), "{command} -o {target}: wrote stdout");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.starts_with("error: `--json`"), "{stderr}");
        // It names the `-o` given (`merge -o -` used to say `/dev/stdout`).
        assert!(stderr.contains(&format!("`-o {target}`")), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
    }
    // Stdout redirected to the output file itself.
    let out_file = tmp.path().join("out.tar");
    let redirected = std::fs::File::create(&out_file).unwrap();
    let out = run(
        nixlayer()
            .args(["build", manifest, "--json", "-o"])
            .arg(&out_file)
            .stdout(redirected),
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("`--json`"));
    assert_eq!(std::fs::metadata(&out_file).unwrap().len(), 0);
    // Another file: `--json` as before.
    let other = tmp.path().join("other.tar");
    let out = run(
        nixlayer()
            .args(["build", manifest, "--json", "-o"])
            .arg(&other),
        0,
    );
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["reference"], "nixlayer/example:0.3");
}

/// `--stream` onto a full disk (stdout is `/dev/full`): exit 1, and the
/// error says stdout could not be written; it used to name only the store
/// path whose layer was being written, as if that path were the problem.
#[test]
fn a_stream_write_error_names_stdout() {
    for format in ["docker-archive", "rootfs", "oci-archive"] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let out = run(
            nixlayer()
                .arg("build")
                .arg(example())
                .args(["--stream", "--format", format])
                .stdout(full),
            1,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("failed to write the image to stdout"),
            "{format}: {stderr}"
        );
        assert!(stderr.contains("No space left"), "{format}: {stderr}");
    }
}

#[test]
fn a_fifo_gets_the_image_when_read_and_stays_a_fifo() {
    let tmp = util::temp_dir();
    let fifo = tmp.path().join("image.fifo");
    tool("mkfifo", &[fifo.to_str().unwrap()]);
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read(fifo).unwrap())
    };
    let out = nixlayer()
        .arg("build")
        .arg(example())
        .arg("-o")
        .arg(&fifo)
        .output()
        .unwrap();
    // Had the build not opened the FIFO (but renamed a file over it), the
    // reader would wait forever: fail without joining it (the test binary
    // exits all the same).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !reader.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        reader.is_finished(),
        "the build never wrote into the FIFO: {out:?}"
    );
    let bytes = reader.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(bytes == streamed(), "the FIFO got other bytes");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());
    assert!(debris(tmp.path()).is_empty());
}

#[test]
fn a_symlink_output_writes_its_file_and_a_dangling_one_is_refused() {
    let tmp = util::temp_dir();
    let real = util::write(tmp.path(), "real.tar", "old");
    let link = tmp.path().join("link.tar");
    std::os::unix::fs::symlink("real.tar", &link).unwrap();
    run(
        nixlayer().arg("build").arg(example()).arg("-o").arg(&link),
        0,
    );
    assert!(std::fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(std::fs::read(&real).unwrap() == streamed());

    let dangling = tmp.path().join("dangling.tar");
    std::os::unix::fs::symlink("nowhere/x.tar", &dangling).unwrap();
    let out = run(
        nixlayer()
            .arg("build")
            .arg(example())
            .arg("-o")
            .arg(&dangling),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("dangling"), "{stderr}");
    assert!(std::fs::symlink_metadata(&dangling)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!tmp.path().join("nowhere").exists());

    // A layout through a link to a directory: the link stays.
    let dir = tmp.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    let dir_link = tmp.path().join("layout");
    std::os::unix::fs::symlink("dir", &dir_link).unwrap();
    run(
        nixlayer()
            .arg("build")
            .arg(example())
            .args(["--format", "oci-layout", "-o"])
            .arg(&dir_link),
        0,
    );
    assert!(std::fs::symlink_metadata(&dir_link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(dir.join("index.json").is_file());
    assert!(debris(tmp.path()).is_empty());
}

#[test]
fn an_output_naming_an_input_is_refused_and_the_input_kept() {
    let tmp = util::temp_dir();
    let manifest = example_copy(tmp.path(), APP);
    let text = std::fs::read(&manifest).unwrap();
    let alias = tmp.path().join("alias.toml");
    std::os::unix::fs::symlink("image.toml", &alias).unwrap();
    let graph = tmp.path().join("graph.json");
    let graph_text = std::fs::read(&graph).unwrap();
    let store_file = store_file(tmp.path());
    let store_text = std::fs::read(&store_file).unwrap();
    let via_dots = tmp.path().join("store/../image.toml");
    for (output, what) in [
        (&manifest, "the manifest"),
        (&alias, "the manifest"),
        (&via_dots, "the manifest"),
        (&graph, "the closure source"),
        (&store_file, APP),
    ] {
        let out = run(
            nixlayer().arg("build").arg(&manifest).arg("-o").arg(output),
            2,
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(what), "{}: {stderr}", output.display());
    }
    let out = run(
        nixlayer()
            .arg("layers")
            .arg(&manifest)
            .arg("--html")
            .arg(&alias),
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("--html"));
    assert_eq!(std::fs::read(&manifest).unwrap(), text);
    assert_eq!(std::fs::read(&graph).unwrap(), graph_text);
    assert_eq!(std::fs::read(&store_file).unwrap(), store_text);
    assert!(std::fs::symlink_metadata(&alias)
        .unwrap()
        .file_type()
        .is_symlink());

    // merge: an input as the output.
    let a = tmp.path().join("a.tar");
    run(nixlayer().arg("build").arg(&manifest).arg("-o").arg(&a), 0);
    let a_bytes = std::fs::read(&a).unwrap();
    let b = tmp.path().join("b.tar");
    std::fs::write(&b, &a_bytes).unwrap();
    let out = run(nixlayer().arg("merge").arg(&a).arg(&b).arg("-o").arg(&b), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("an input"));
    assert_eq!(std::fs::read(&b).unwrap(), a_bytes);
    assert!(debris(tmp.path()).is_empty());
}

/// The SBOM `build --sbom` writes beside a docker-archive (`OUT.cdx.json`)
/// is an output like `-o`: a link there to the manifest, or into a store
/// path of the closure, is refused (exit 2) and the input kept — the SBOM
/// used to be written over the manifest. One that cannot be written (a
/// directory) fails the build before the image is written, leaving nothing.
#[test]
fn an_sbom_beside_the_image_never_overwrites_an_input() {
    let tmp = util::temp_dir();
    let manifest = example_copy(tmp.path(), APP);
    let text = std::fs::read(&manifest).unwrap();
    let store_file = store_file(tmp.path());
    let store_text = std::fs::read(&store_file).unwrap();
    let out = tmp.path().join("out.tar");
    let sbom = tmp.path().join("out.tar.cdx.json");
    for (target, what) in [(&manifest, "the manifest"), (&store_file, APP)] {
        std::os::unix::fs::symlink(target, &sbom).unwrap();
        let failed = run(
            nixlayer()
                .arg("build")
                .arg(&manifest)
                .args(["--sbom", "cyclonedx-json", "-o"])
                .arg(&out),
            2,
        );
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(stderr.contains("`--sbom "), "{stderr}");
        assert!(stderr.contains(what), "{stderr}");
        assert!(!out.exists());
        std::fs::remove_file(&sbom).unwrap();
    }
    assert_eq!(std::fs::read(&manifest).unwrap(), text);
    assert_eq!(std::fs::read(&store_file).unwrap(), store_text);

    std::fs::create_dir(&sbom).unwrap();
    let failed = run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args(["--sbom", "cyclonedx-json", "-o"])
            .arg(&out),
        1,
    );
    assert!(String::from_utf8_lossy(&failed.stderr).contains("is a directory"));
    assert!(
        !out.exists(),
        "the image was written before the SBOM failed"
    );
    assert!(debris(tmp.path()).is_empty());
}

/// `layers --html` and `sbom -o` onto a file inside a store path of the
/// closure (through a link too) are refused (exit 2) as `build -o` is, and
/// the store file kept; both used to replace it.
#[test]
fn layers_html_and_sbom_never_write_into_the_closure() {
    let tmp = util::temp_dir();
    let manifest = example_copy(tmp.path(), APP);
    let store_file = store_file(tmp.path());
    let store_text = std::fs::read(&store_file).unwrap();
    let link = tmp.path().join("plan.html");
    std::os::unix::fs::symlink(&store_file, &link).unwrap();
    for target in [&store_file, &link] {
        for (args, flag) in [
            (&["layers", "--html"][..], "--html"),
            (&["sbom", "--format", "spdx-json", "-o"], "-o"),
        ] {
            let out = run(
                nixlayer()
                    .arg(args[0])
                    .arg(&manifest)
                    .args(&args[1..])
                    .arg(target),
                2,
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(stderr.contains(&format!("`{flag} ")), "{stderr}");
            assert!(stderr.contains(APP), "{stderr}");
        }
    }
    assert_eq!(std::fs::read(&store_file).unwrap(), store_text);
    assert!(debris(tmp.path()).is_empty());
}

/// `nixlayer` run by `sh` after `prelude` (a umask, a file size limit).
fn nixlayer_after(prelude: &str) -> Command {
    let template = nixlayer();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{prelude}; exec \"$0\" \"$@\""))
        .arg(template.get_program());
    for (key, value) in template.get_envs() {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    cmd
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn outputs_take_the_mode_of_a_new_file_under_the_umask() {
    let tmp = util::temp_dir();
    for (umask, file_mode, dir_mode) in [("077", 0o600, 0o700), ("022", 0o644, 0o755)] {
        let archive = tmp.path().join(format!("image-{umask}.tar"));
        run(
            nixlayer_after(&format!("umask {umask}"))
                .arg("build")
                .arg(example())
                .arg("-o")
                .arg(&archive),
            0,
        );
        assert_eq!(mode(&archive), file_mode, "umask {umask}");
        let html = tmp.path().join(format!("plan-{umask}.html"));
        run(
            nixlayer_after(&format!("umask {umask}"))
                .arg("layers")
                .arg(example())
                .arg("--html")
                .arg(&html),
            0,
        );
        assert_eq!(mode(&html), file_mode, "umask {umask}");
        let layout = tmp.path().join(format!("layout-{umask}"));
        run(
            nixlayer_after(&format!("umask {umask}"))
                .arg("build")
                .arg(example())
                .args(["--format", "oci-layout", "--no-cache", "-o"])
                .arg(&layout),
            0,
        );
        assert_eq!(mode(&layout), dir_mode, "umask {umask}");
        assert_eq!(mode(&layout.join("blobs/sha256")), dir_mode);
        assert_eq!(mode(&layout.join("index.json")), file_mode);
        assert_eq!(mode(&layout.join("oci-layout")), file_mode);
        for blob in std::fs::read_dir(layout.join("blobs/sha256")).unwrap() {
            assert_eq!(mode(&blob.unwrap().path()), file_mode, "umask {umask}");
        }
    }
}

#[test]
fn write_errors_name_the_output_not_a_temporary_file() {
    let tmp = util::temp_dir();
    // A file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) makes a write into
    // a regular file fail with EFBIG, as a full disk would; `sh` (dash or
    // bash in POSIX mode) counts `ulimit -f` in 512-byte blocks: 8 KiB.
    let limited = || nixlayer_after("trap '' XFSZ; ulimit -f 16");
    let archive = tmp.path().join("image.tar");
    let layout = tmp.path().join("layout");
    let image = tmp.path().join("a.tar");
    std::fs::write(&image, streamed()).unwrap();
    let merged = tmp.path().join("merged.tar");
    let html = tmp.path().join("plan.html");
    let cases: [(Command, &Path); 4] = [
        {
            let mut c = limited();
            c.arg("build").arg(example()).arg("-o").arg(&archive);
            (c, &archive)
        },
        {
            let mut c = limited();
            c.arg("build")
                .arg(example())
                .args(["--format", "oci-layout", "--no-cache", "-o"])
                .arg(&layout);
            (c, &layout)
        },
        {
            let mut c = limited();
            c.arg("merge").arg(&image).arg("-o").arg(&merged);
            (c, &merged)
        },
        {
            // The example's page is about 2 KiB: a 1 KiB limit.
            let mut c = nixlayer_after("trap '' XFSZ; ulimit -f 2");
            c.arg("layers").arg(example()).arg("--html").arg(&html);
            (c, &html)
        },
    ];
    for (mut cmd, output) in cases {
        let out = run(&mut cmd, 1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("`{}", output.display())),
            "{stderr}"
        );
        assert!(stderr.contains("File too large"), "{stderr}");
        assert!(!stderr.contains(".nixlayer-"), "{stderr}");
        assert!(!output.exists(), "{}", output.display());
    }
    assert!(debris(tmp.path()).is_empty(), "{:?}", debris(tmp.path()));

    // An output in a directory that does not exist: the error names the
    // output, not the staging directory an OCI layout would have had
    // (which it used to, as tempfile's ` at path "…/.nixlayer-….tmp"`).
    let missing = tmp.path().join("missing");
    let example = example();
    let in_missing = |name: &str| missing.join(name).to_str().unwrap().to_owned();
    for args in [
        vec![
            "build",
            example.to_str().unwrap(),
            "-o",
            &in_missing("a.tar"),
        ],
        vec![
            "build",
            example.to_str().unwrap(),
            "--format",
            "oci-layout",
            "-o",
            &in_missing("layout"),
        ],
        vec![
            "merge",
            image.to_str().unwrap(),
            "--format",
            "oci-layout",
            "-o",
            &in_missing("merged"),
        ],
        vec!["merge", image.to_str().unwrap(), "-o", &in_missing("m.tar")],
    ] {
        let out = run(nixlayer().args(&args), 1);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("`{}`", args[args.len() - 1])),
            "{stderr}"
        );
        assert!(stderr.contains("No such file or directory"), "{stderr}");
        assert!(!stderr.contains(".nixlayer-"), "{args:?}: {stderr}");
    }
    assert!(!missing.exists());
}

/// Waits until `dir` holds a `.nixlayer-*` entry (the build is writing),
/// then sends `signal`; returns how the build ended.
fn interrupt_when_writing(mut child: Child, dir: &Path, signal: i32) -> std::process::Output {
    let deadline = Instant::now() + Duration::from_secs(120);
    while debris(dir).is_empty() {
        if child.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let _ = child.kill();
            panic!(
                "the build ended or stalled before writing: {:?}",
                child.wait_with_output()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: kill(2) on our own child's pid; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    child.wait_with_output().unwrap()
}

fn spawn(cmd: &mut Command) -> Child {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn sigint_and_sigterm_mid_build_leave_no_temporary_file_and_no_new_layout() {
    let tmp = util::temp_dir();
    let manifest = big_manifest(tmp.path(), 64 << 20);
    let out_dir = tmp.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    for signal in [libc::SIGINT, libc::SIGTERM] {
        for format in ["docker-archive", "oci-layout"] {
            let target = out_dir.join(format!("{format}-{signal}"));
            let child = spawn(
                nixlayer()
                    .arg("build")
                    .arg(&manifest)
                    .args(["--no-cache", "--compression", "zstd", "--format", format])
                    .arg("-o")
                    .arg(&target),
            );
            let out = interrupt_when_writing(child, &out_dir, signal);
            assert_eq!(
                out.status.signal(),
                Some(signal),
                "{format}: {:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!target.exists(), "{format}: {} was left", target.display());
            assert_eq!(
                std::fs::read_dir(&out_dir).unwrap().count(),
                0,
                "{format}: {:?}",
                debris(&out_dir)
            );
        }
    }

    // An existing layout stays valid: its index as it was, no temporary
    // blob left.
    let layout = out_dir.join("layout");
    run(
        nixlayer()
            .arg("build")
            .arg(example())
            .args(["--format", "oci-layout", "-o"])
            .arg(&layout),
        0,
    );
    let index = std::fs::read(layout.join("index.json")).unwrap();
    let child = spawn(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args([
                "--no-cache",
                "--format",
                "oci-layout",
                "--compression",
                "zstd",
                "-o",
            ])
            .arg(&layout),
    );
    let out = interrupt_when_writing(child, &layout, libc::SIGINT);
    assert_eq!(out.status.signal(), Some(libc::SIGINT), "{out:?}");
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), index);
    assert!(debris(&out_dir).is_empty(), "{:?}", debris(&out_dir));
    let inspected: Value = serde_json::from_slice(
        &run(nixlayer().arg("inspect").arg(&layout).arg("--json"), 0).stdout,
    )
    .unwrap();
    assert_eq!(inspected["images"].as_array().unwrap().len(), 1);
}

#[test]
fn concurrent_builds_into_one_new_layout_keep_every_tag() {
    let tmp = util::temp_dir();
    for round in 0..3 {
        let layout = tmp.path().join(format!("layout-{round}"));
        let tags: Vec<String> = (0..6).map(|i| format!("t{i}")).collect();
        let children: Vec<Child> = tags
            .iter()
            .map(|tag| {
                nixlayer()
                    .arg("build")
                    .arg(example())
                    .args(["--format", "oci-layout", "--tag"])
                    .arg(format!("nixlayer-test/concurrent:{tag}"))
                    .arg("-o")
                    .arg(&layout)
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for child in children {
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let index: Value =
            serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
        let mut found: Vec<String> = index["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                m["annotations"]["org.opencontainers.image.ref.name"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        found.sort();
        assert_eq!(found, tags, "round {round}");
        assert!(debris(tmp.path()).is_empty(), "{:?}", debris(tmp.path()));
        assert_eq!(
            std::fs::read(layout.join("oci-layout")).unwrap(),
            br#"{"imageLayoutVersion":"1.0.0"}"#
        );
    }
}

#[test]
fn a_closed_pipe_is_reported_with_status_141() {
    let tmp = util::temp_dir();
    // Larger than any pipe buffer, so the build is still writing.
    let manifest = big_manifest(tmp.path(), 8 << 20);
    let mut child = nixlayer()
        .arg("build")
        .arg(&manifest)
        .args(["--no-cache", "--stream"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0; 100];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout); // like `| head -c 100`
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stdout was closed before the image was complete"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    // A FIFO whose reader stops early: the same, naming the FIFO.
    let fifo = tmp.path().join("image.fifo");
    tool("mkfifo", &[fifo.to_str().unwrap()]);
    let child = nixlayer()
        .arg("build")
        .arg(&manifest)
        .args(["--no-cache", "-o"])
        .arg(&fifo)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reader = std::fs::File::open(&fifo).unwrap();
    std::io::Read::read_exact(&mut reader, &mut first).unwrap();
    drop(reader);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(141), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "`{}` was closed before the image was complete",
            fifo.display()
        )),
        "{stderr}"
    );

    // Through `sh` and `head`, as a user would.
    let out = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" build \"$1\" --no-cache --stream | head -c 100 >/dev/null")
        .arg(nixlayer().get_program())
        .arg(&manifest)
        .env("XDG_CACHE_HOME", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("closed before the image was complete"),
        "{stderr}"
    );

    // `merge -o -` names stdout too, not the `/dev/stdout` it writes
    // through.
    let image = tmp.path().join("image.tar");
    run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args(["--no-cache", "-q", "-o"])
            .arg(&image),
        0,
    );
    let out = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" merge \"$1\" -o - | head -c 100 >/dev/null")
        .arg(nixlayer().get_program())
        .arg(&image)
        .env("XDG_CACHE_HOME", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("error: stdout was closed before the image was complete"),
        "{stderr}"
    );
}

/// A file of the closure in [`example_copy`]'s store copy under `dir`.
fn store_file(dir: &Path) -> PathBuf {
    dir.join("store/nix/store").join(APP).join("etc/hello.conf")
}
