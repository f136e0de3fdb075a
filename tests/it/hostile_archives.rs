//! Hostile images read by `inspect`, `merge` and `build` on a base image:
//! edited and symlinked blobs in OCI layouts, decompression bombs,
//! archives that are not tars, merge members that would land outside the
//! extraction directory, and a tampered base layer under `--stream`. The
//! images are built by the binary itself, then edited.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use nixlayer::tar::{Header, Kind, TarWriter};

use crate::util::{self, nixlayer, run};

const MARKER: &str = "BASE-LAYER-MARKER";

/// A Nix-free image: one file whose text repeats `MARKER`.
fn base_manifest(dir: &Path) -> PathBuf {
    util::write(
        dir,
        "base.toml",
        &format!(
            r#"
name = "nixlayer-test/hostile-base"
tag = "b"
[closure]
roots = []
[config]
Env = ["BASE=1"]
[[customisation.files]]
path = "/etc/base.txt"
text = "{}"
"#,
            MARKER.repeat(100)
        ),
    )
}

/// An image on `base` with a file of its own.
fn top_manifest(dir: &Path, base: &Path) -> PathBuf {
    util::write(
        dir,
        "top.toml",
        &format!(
            r#"
name = "nixlayer-test/hostile-top"
tag = "t"
[base]
image = "{}"
[closure]
roots = []
[[customisation.files]]
path = "/etc/top.txt"
text = "top"
"#,
            base.display()
        ),
    )
}

fn build(manifest: &Path, out: &Path, format: &str) {
    run(
        nixlayer()
            .arg("build")
            .arg(manifest)
            .args(["--format", format, "-o"])
            .arg(out),
        0,
    );
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &Value) -> PathBuf {
    let hex = digest.as_str().unwrap().strip_prefix("sha256:").unwrap();
    layout.join("blobs/sha256").join(hex)
}

/// The config and first layer blobs of an OCI layout.
fn config_and_layer(layout: &Path) -> (PathBuf, PathBuf) {
    let index = json(&layout.join("index.json"));
    let manifest = json(&blob(layout, &index["manifests"][0]["digest"]));
    (
        blob(layout, &manifest["config"]["digest"]),
        blob(layout, &manifest["layers"][0]["digest"]),
    )
}

fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let mut out = bytes.to_vec();
    let mut found = false;
    for i in 0..out.len().saturating_sub(from.len() - 1) {
        if &out[i..i + from.len()] == from.as_bytes() {
            out[i..i + from.len()].copy_from_slice(to.as_bytes());
            found = true;
        }
    }
    assert!(found, "`{from}` not found");
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// An OCI layout whose config blob was edited (same name, other bytes):
/// `inspect` and a build on it fail naming the blob, and write nothing.
/// (The old reader printed the edited config and built on it.)
#[test]
fn edited_oci_config_blob_is_refused_by_inspect_and_build() {
    let tmp = util::temp_dir();
    let layout = tmp.path().join("base-oci");
    build(&base_manifest(tmp.path()), &layout, "oci-layout");
    let (config, _) = config_and_layer(&layout);
    let edited = replace(&std::fs::read(&config).unwrap(), "BASE=1", "EVIL=1");
    std::fs::write(&config, edited).unwrap();
    let name = config.file_name().unwrap().to_str().unwrap().to_owned();

    let out = run(nixlayer().arg("inspect").arg(&layout), 1);
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    assert!(out.stdout.is_empty());

    let image = tmp.path().join("top.tar");
    let out = run(
        nixlayer()
            .arg("build")
            .arg(top_manifest(tmp.path(), &layout))
            .arg("-o")
            .arg(&image),
        1,
    );
    assert!(stderr(&out).contains(&name), "{}", stderr(&out));
    assert!(!image.exists());
}

/// A blob that is a symlink to a file outside the layout (with the right
/// bytes, so only the link is wrong), or a `blobs` directory that is a
/// symlink, is refused. (The old reader followed both.)
#[test]
fn symlinks_out_of_an_oci_layout_are_refused() {
    let tmp = util::temp_dir();
    let layout = tmp.path().join("base-oci");
    build(&base_manifest(tmp.path()), &layout, "oci-layout");
    let (config, layer) = config_and_layer(&layout);
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    for blob in [&config, &layer] {
        let moved = outside.join(blob.file_name().unwrap());
        std::fs::rename(blob, &moved).unwrap();
        std::os::unix::fs::symlink(&moved, blob).unwrap();
        let out = run(nixlayer().arg("inspect").arg(&layout), 1);
        let text = stderr(&out);
        assert!(text.contains("symbolic link"), "{text}");
        assert!(
            text.contains(blob.file_name().unwrap().to_str().unwrap()),
            "{text}"
        );
        std::fs::remove_file(blob).unwrap();
        std::fs::rename(&moved, blob).unwrap();
    }
    run(nixlayer().arg("inspect").arg(&layout), 0);

    let blobs = layout.join("blobs");
    let moved = outside.join("blobs");
    std::fs::rename(&blobs, &moved).unwrap();
    std::os::unix::fs::symlink(&moved, &blobs).unwrap();
    let out = run(nixlayer().arg("inspect").arg(&layout), 1);
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
    let out = run(
        nixlayer()
            .arg("build")
            .arg(top_manifest(tmp.path(), &layout))
            .arg("-o")
            .arg(tmp.path().join("top.tar")),
        1,
    );
    assert!(stderr(&out).contains("symbolic link"), "{}", stderr(&out));
}

/// gzip of 8 MiB of zeros, compressed once and streamed in chunks.
fn gzip_zeros() -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..8 {
        gz.write_all(&chunk).unwrap();
    }
    gz.finish().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A ustar header for a regular member `name` of `size` (octal) bytes.
fn tar_header(name: &str, size: &str) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b[100..107].copy_from_slice(b"0000644");
    b[124..124 + size.len()].copy_from_slice(size.as_bytes());
    b[156] = b'0';
    b[257..263].copy_from_slice(b"ustar\0");
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    b
}

/// Runs nixlayer under a 128 MiB file-size limit (`ulimit -f`): spooling
/// more than that kills it with SIGXFSZ instead of filling the disk.
fn nixlayer_with_file_limit(args: &[&std::ffi::OsStr]) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let out = Command::new("bash")
        .arg("-c")
        .arg("ulimit -f 131072 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_nixlayer"))
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    (out, start.elapsed())
}

/// Compressed archives that expand to 16 GiB: bare zeros, a first block
/// that is not a tar header, and a tar member of 8 GiB of zeros. Each
/// fails in moments, having spooled (far) less than 128 MiB, for
/// `inspect`, `merge` and a build on it. (The old reader decompressed the
/// whole stream into a temporary file first.)
#[test]
fn compressed_bombs_fail_fast_within_a_file_size_limit() {
    let tmp = util::temp_dir();
    let zeros = gzip_zeros();
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "zeros.tar.gz",
            Vec::new(),
            "neither `manifest.json` nor `index.json`",
        ),
        (
            "text.tar.gz",
            gzip(&b"this is not a tar archive, just text. ".repeat(20)),
            "not a valid tar archive",
        ),
        (
            "member.tar.gz",
            gzip(&tar_header("layer.tar", "77777777777")),
            "neither a layer",
        ),
    ];
    for (name, head, expected) in cases {
        let path = tmp.path().join(name);
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        f.write_all(&head).unwrap();
        // 2048 gzip members of 8 MiB each: 16 GiB from a few tens of MiB.
        for _ in 0..2048 {
            f.write_all(&zeros).unwrap();
        }
        f.flush().unwrap();
        drop(f);
        let merged = tmp.path().join("merged.tar");
        let top = top_manifest(tmp.path(), &path);
        let top_out = tmp.path().join("top.tar");
        for args in [
            vec![std::ffi::OsStr::new("inspect"), path.as_os_str()],
            vec![
                "merge".as_ref(),
                path.as_os_str(),
                "-o".as_ref(),
                merged.as_os_str(),
            ],
            vec![
                "build".as_ref(),
                top.as_os_str(),
                "-o".as_ref(),
                top_out.as_os_str(),
            ],
        ] {
            let (out, took) = nixlayer_with_file_limit(&args);
            let text = stderr(&out);
            assert_eq!(out.status.code(), Some(1), "{name} {args:?}: {text}");
            // An 8 GiB member is refused at its header when it cannot fit
            // in the free temporary space, before any byte of it is read;
            // with room for it, at its first bytes, which are no layer's.
            let refused_at_header =
                name == "member.tar.gz" && text.contains("would take the archive past");
            assert!(
                text.contains(expected) || refused_at_header,
                "{name} {args:?}: {text}"
            );
            assert!(text.contains(name), "{name} {args:?}: {text}");
            assert!(took < Duration::from_secs(20), "{name} took {took:?}");
            assert!(!merged.exists() && !top_out.exists());
        }
    }
}

/// An extra member: name, kind, data.
type Extra<'a> = (&'a str, Kind, &'a [u8]);

/// Members of a docker-archive built by the binary, plus `extra`.
fn archive_with(base: &Path, extra: &[Extra<'_>], out: &Path) {
    let archive = nixlayer::archive::ImageArchive::open(base).unwrap();
    let mut w = TarWriter::new(Vec::new());
    for (name, kind, data) in extra {
        w.append(
            &Header::archive_member(name, kind.clone(), data.len() as u64, 1),
            data,
        )
        .unwrap();
    }
    for member in archive.members().unwrap() {
        let name = member.name.clone();
        match &member.kind {
            nixlayer::tar::MemberKind::Directory => {
                w.append(&Header::archive_member(&name, Kind::Directory, 0, 1), &[])
                    .unwrap();
            }
            _ => {
                let (mut r, size) = archive.open_location(&name).unwrap();
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut r, &mut data).unwrap();
                assert_eq!(data.len() as u64, size);
                w.append(
                    &Header::archive_member(&name, Kind::Regular, size, 1),
                    &data,
                )
                .unwrap();
            }
        }
    }
    std::fs::write(out, w.finish().unwrap()).unwrap();
}

/// `merge` refuses inputs with `../x`, `/abs`, or a member under a
/// symbolic link an earlier member (of the same or an earlier input) made,
/// naming the input and the member, and writes no output. (The old merge
/// copied them into its output.)
#[test]
fn merge_refuses_members_that_would_land_outside() {
    let tmp = util::temp_dir();
    let base = tmp.path().join("base.tar");
    build(&base_manifest(tmp.path()), &base, "docker-archive");
    let link = Kind::Symlink(b"/etc".to_vec());
    let cases: Vec<(&str, Vec<Extra<'_>>, &str)> = vec![
        (
            "dotdot.tar",
            vec![("../x", Kind::Regular, b"x")],
            "a `..` component",
        ),
        (
            "absolute.tar",
            vec![("/abs", Kind::Regular, b"x")],
            "an absolute name",
        ),
        (
            "through-link.tar",
            vec![
                ("etc", link.clone(), b""),
                ("etc/passwd", Kind::Regular, b"x"),
            ],
            "symbolic link `etc`",
        ),
    ];
    for (name, extra, expected) in cases {
        let evil = tmp.path().join(name);
        archive_with(&base, &extra, &evil);
        let merged = tmp.path().join("merged.tar");
        let out = run(
            nixlayer()
                .arg("merge")
                .arg(&base)
                .arg(&evil)
                .arg("-o")
                .arg(&merged),
            1,
        );
        let text = stderr(&out);
        assert!(text.contains(expected), "{name}: {text}");
        assert!(text.contains(name), "{name}: {text}");
        assert!(!merged.exists(), "{name}: output written");
    }
    // Across inputs: the link in the first, the member under it in the second.
    let first = tmp.path().join("first.tar");
    archive_with(&base, &[("lib", link, b"")], &first);
    let second = tmp.path().join("second.tar");
    archive_with(&base, &[("lib/x", Kind::Regular, b"x")], &second);
    let merged = tmp.path().join("merged.tar");
    let out = run(
        nixlayer()
            .arg("merge")
            .arg(&first)
            .arg(&second)
            .arg("-o")
            .arg(&merged),
        1,
    );
    assert!(
        stderr(&out).contains("symbolic link `lib`"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("second.tar"), "{}", stderr(&out));
    assert!(!merged.exists());
    // Nothing left behind next to the output either.
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("merged") || n.contains(".tmp"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// `build --stream` on a base docker-archive whose layer was edited in
/// place: the build fails and stdout holds no byte of that layer (no
/// marker text, edited or not). (The old build streamed the layer and only
/// then found the diff_id wrong.)
#[test]
fn stream_emits_no_byte_of_a_tampered_base_layer() {
    let tmp = util::temp_dir();
    let base = tmp.path().join("base.tar");
    build(&base_manifest(tmp.path()), &base, "docker-archive");
    let edited = replace(&std::fs::read(&base).unwrap(), MARKER, "EVIL-LAYER-MARKER");
    std::fs::write(&base, edited).unwrap();
    let out = run(
        nixlayer()
            .arg("build")
            .arg(top_manifest(tmp.path(), &base))
            .arg("--stream"),
        1,
    );
    assert!(stderr(&out).contains("diff_id"), "{}", stderr(&out));
    assert!(!contains(&out.stdout, "EVIL-LAYER-MARKER"));
    assert!(!contains(&out.stdout, "LAYER-MARKER"));
}

/// A docker-archive whose uncompressed layer was edited in place: `inspect`
/// and `merge` refuse it (the layer's sha256 is no longer its diff_id) and
/// merge writes no output. (Both accepted it before.)
#[test]
fn edited_docker_archive_layer_is_refused_by_inspect_and_merge() {
    let tmp = util::temp_dir();
    let base = tmp.path().join("base.tar");
    build(&base_manifest(tmp.path()), &base, "docker-archive");
    let edited = replace(&std::fs::read(&base).unwrap(), MARKER, "EVIL-LAYER-MARKER");
    std::fs::write(&base, edited).unwrap();
    let out = run(nixlayer().arg("inspect").arg(&base), 1);
    assert!(stderr(&out).contains("diff_id"), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let merged = tmp.path().join("merged.tar");
    let out = run(nixlayer().arg("merge").arg(&base).arg("-o").arg(&merged), 1);
    let text = stderr(&out);
    assert!(text.contains("layer.tar"), "{text}");
    assert!(text.contains("does not match its digest"), "{text}");
    assert!(!merged.exists());
}

/// A base image of one platform, its file saying which.
fn platform_base(dir: &Path, arch: &str) -> PathBuf {
    let manifest = util::write(
        dir,
        &format!("base-{arch}.toml"),
        &format!(
            r#"
name = "nixlayer-test/platform-base-{arch}"
tag = "b"
architecture = "{arch}"
[closure]
roots = []
[[customisation.files]]
path = "/etc/arch"
text = "{arch}"
"#
        ),
    );
    let out = dir.join(format!("base-{arch}.tar"));
    build(&manifest, &out, "docker-archive");
    out
}

/// A base archive holding an arm64 and an amd64 image (as `docker save`
/// of both, or a merge, makes it): each platform's build gets its own
/// base layer, a platform it lacks is an error listing what it has, and
/// an image of one other platform is refused. (The old reader took the
/// first image whatever the platform: the amd64 image got arm64's base.)
#[test]
fn base_image_is_chosen_by_platform() {
    let tmp = util::temp_dir();
    let arm = platform_base(tmp.path(), "arm64");
    let amd = platform_base(tmp.path(), "amd64");
    let both = tmp.path().join("both.tar");
    run(
        nixlayer()
            .arg("merge")
            .arg(&arm)
            .arg(&amd)
            .arg("-o")
            .arg(&both),
        0,
    );
    let first_diff_id = |archive: &Path| {
        let out = run(nixlayer().args(["inspect", "--json"]).arg(archive), 0);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let images = v["images"].as_array().unwrap();
        images
            .iter()
            .map(|i| i["layers"][0]["diff_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    let top = |arch: &str, base: &Path| {
        let text = std::fs::read_to_string(top_manifest(tmp.path(), base)).unwrap();
        let text = text.replace(
            "tag = \"t\"",
            &format!("tag = \"t\"\narchitecture = \"{arch}\""),
        );
        util::write(tmp.path(), &format!("top-{arch}.toml"), &text)
    };
    for (arch, base) in [("amd64", &amd), ("arm64", &arm)] {
        let out = tmp.path().join(format!("top-{arch}.tar"));
        build(&top(arch, &both), &out, "docker-archive");
        assert_eq!(first_diff_id(&out), first_diff_id(base), "{arch}");
    }
    let out = tmp.path().join("none.tar");
    let failed = run(
        nixlayer()
            .arg("build")
            .arg(top("s390x", &both))
            .arg("-o")
            .arg(&out),
        1,
    );
    let text = stderr(&failed);
    assert!(
        text.contains("no image for linux/s390x") && text.contains("linux/arm64, linux/amd64"),
        "{text}"
    );
    assert!(!out.exists());
    let failed = run(
        nixlayer()
            .arg("build")
            .arg(top("amd64", &arm))
            .arg("-o")
            .arg(&out),
        1,
    );
    let text = stderr(&failed);
    assert!(
        text.contains("for linux/arm64, not for linux/amd64"),
        "{text}"
    );
    assert!(!out.exists());
    // `--no-arch-check` takes it anyway, as it does a foreign entrypoint.
    run(
        nixlayer()
            .arg("build")
            .arg(top("amd64", &arm))
            .arg("--no-arch-check")
            .arg("-o")
            .arg(&out),
        0,
    );
    assert_eq!(first_diff_id(&out), first_diff_id(&arm));
}

/// Escape sequences in hostile input (an archive's tag, a closure file's
/// store path) are shown escaped by `inspect` and in errors, never sent
/// to the terminal raw (where they could retitle, clear or rewrite it).
#[test]
fn escape_sequences_from_inputs_never_reach_the_terminal() {
    let tmp = util::temp_dir();
    let base = tmp.path().join("base.tar");
    build(&base_manifest(tmp.path()), &base, "docker-archive");
    let tag = "nixlayer-test/hostile-base:b";
    // As JSON spells them in `manifest.json`: ESC ] 0;x BEL (retitle),
    // ESC [2J (clear).
    let evil = r"\u001b]0;x\u0007:\u001b[2J";
    let archive = std::fs::read(&base).unwrap();
    // Same length, so the tar stays valid: pad the tag out.
    let evil = format!("{evil}{}", "x".repeat(tag.len() - evil.len()));
    std::fs::write(&base, replace(&archive, tag, &evil)).unwrap();
    let out = run(nixlayer().arg("inspect").arg(&base), 0);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains(r"\u{1b}]0;x\u{7}:\u{1b}[2Jxx"), "{text}");

    let registration = util::write(
        tmp.path(),
        "registration",
        "/nix/store/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa-a\u{1b}[2J\n",
    );
    let manifest = util::write(
        tmp.path(),
        "image.toml",
        &format!(
            "name = \"x\"\n[closure]\nroots = []\nsource = {{ registration = \"{}\" }}\n",
            registration.display()
        ),
    );
    let out = run(nixlayer().arg("layers").arg(&manifest), 1);
    let text = stderr(&out);
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(text.contains(r"-a\u{1b}[2J"), "{text}");
}
