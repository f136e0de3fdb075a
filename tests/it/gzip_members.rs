//! gzip is written as a series of 1 MiB members (see `codec::gzip`): an
//! image whose layers and archive span several members has the expected
//! number of them, nixlayer reads all of them back (`inspect`), and
//! docker runs it from `docker load` of a gzip docker-archive and from a
//! `docker pull` of a push to the real registry.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use crate::push::{json, registry_ready, REGISTRY};
use crate::util::{self, docker, docker_ready, docker_run, nixlayer, run};

/// Input bytes per member: `codec::GZIP_MEMBER`.
const MEMBER: u64 = 1 << 20;

/// The members of a whole gzip stream, each decoded on its own (flate2's
/// `GzDecoder` stops at the end of one), and the bytes they hold.
fn members(mut bytes: &[u8]) -> (u64, u64) {
    let (mut count, mut total) = (0, 0);
    while !bytes.is_empty() {
        let mut one = flate2::bufread::GzDecoder::new(bytes);
        let mut out = Vec::new();
        one.read_to_end(&mut out).expect("a whole gzip member");
        let rest = one.into_inner();
        assert!(rest.len() < bytes.len(), "a member of no bytes");
        bytes = rest;
        count += 1;
        total += out.len() as u64;
    }
    (count, total)
}

/// busybox runs `sha256sum` of debian-libc's `libc.so.6`, its own layer
/// of about 4.5 MB (five members).
pub fn manifest(dir: &Path, busybox: &Path, libc: &Path) -> (PathBuf, String) {
    let file = libc.join("lib/x86_64-linux-gnu/libc.so.6");
    let expected = String::from_utf8(util::tool("sha256sum", &[file.to_str().unwrap()])).unwrap();
    let m = util::write(
        dir,
        "image.toml",
        &format!(
            r#"
name = "nixlayer-test/gzip-members"
tag = "t"
[closure]
roots = ["{busybox}", "{libc}"]
[config]
Entrypoint = ["{busybox}/bin/busybox", "sh", "-c", "sha256sum {file}"]
"#,
            busybox = busybox.display(),
            libc = libc.display(),
            file = file.display(),
        ),
    );
    (m, expected)
}

#[test]
fn multi_member_gzip_is_read_whole_and_runs_from_docker_load_and_a_registry_pull() {
    let (Some(busybox), Some(libc)) = (
        util::nix_fixture("busybox"),
        util::nix_fixture("debian-libc"),
    ) else {
        return;
    };
    if !docker_ready() || !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let (m, expected) = manifest(tmp.path(), &busybox, &libc);

    // A gzip docker-archive (the stream compressed as a whole): one
    // member per MiB of the archive, more than two.
    let archive = tmp.path().join("image.tar.gz");
    run(
        nixlayer()
            .arg("build")
            .arg(&m)
            .args(["--compression", "gzip", "-o"])
            .arg(&archive),
        0,
    );
    let (count, tar_len) = members(&std::fs::read(&archive).unwrap());
    assert!(count > 2, "{count} members");
    assert_eq!(count, tar_len.div_ceil(MEMBER), "{tar_len} bytes");
    // nixlayer reads every member: both store layers are listed.
    let inspect = json(&run(nixlayer().arg("inspect").arg(&archive).arg("--json"), 0).stdout);
    assert_eq!(
        inspect["images"][0]["layers"].as_array().map(Vec::len),
        Some(2),
        "{inspect}"
    );
    let loaded = docker(&["load", "-q", "-i", archive.to_str().unwrap()]);
    assert!(loaded.contains("nixlayer-test/gzip-members:t"), "{loaded}");
    assert_eq!(docker_run("nixlayer-test/gzip-members:t"), expected);

    // Each OCI layer blob is its own stream: the large layer has one
    // member per MiB of its tar.
    let layout = tmp.path().join("layout");
    let built = crate::support::gzip_layout(&m, &layout);
    let mut most = 0;
    for layer in built["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        let blob = layout.join("blobs/sha256").join(&digest["sha256:".len()..]);
        let (count, tar_len) = members(&std::fs::read(blob).unwrap());
        assert_eq!(tar_len, layer["uncompressed_size"].as_u64().unwrap());
        assert_eq!(count, tar_len.div_ceil(MEMBER), "{layer}");
        most = most.max(count);
    }
    assert!(most > 2, "{built}");

    // Pushed (a repository of its own) and pulled by docker itself.
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let reference = format!("{REGISTRY}/nixlayer-test/gzip-members-{nonce}:t");
    // A private layer cache: its records of where blobs went would
    // otherwise offer this repository to other tests' pushes as a mount
    // source.
    let pushed = push_with_cache(&m, &reference, &tmp.path().join("xdg"));
    assert_eq!(pushed["manifest_digest"], built["manifest_digest"]);
    docker(&["pull", "-q", &reference]);
    assert_eq!(docker_run(&reference), expected);
}

/// `push --json` of `m` to `reference` with the layer cache in `xdg`.
fn push_with_cache(m: &Path, reference: &str, xdg: &Path) -> serde_json::Value {
    json(
        &run(
            nixlayer()
                .env("XDG_CACHE_HOME", xdg)
                .arg("push")
                .arg(m)
                .arg(reference)
                .args(["--compression", "gzip", "--json"]),
            0,
        )
        .stdout,
    )
}

/// The layer cache files a compressed digest under the compressor's
/// format: an entry written by the former gzip (filed as `gzip-6`, here
/// holding another blob the registry has, as a digest of other bytes
/// would be) is not reused, and a warm push writes the cold push's bytes.
#[test]
fn a_cached_digest_of_an_older_gzip_format_is_not_reused() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !registry_ready() {
        return;
    }
    let tmp = util::temp_dir();
    let xdg = tmp.path().join("xdg");
    let m = crate::push::manifest(tmp.path(), "image.toml", &hello, r#""old", "format""#);
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let reference = format!("{REGISTRY}/nixlayer-test/gzip-format-{nonce}:t");
    let cold = push_with_cache(&m, &reference, &xdg);
    let first = &cold["layers"][0];
    let (digest, size) = (first["digest"].clone(), first["size"].clone());

    // Every entry as the former compressor left it: only `gzip-6`.
    let mut edited = 0;
    for entry in std::fs::read_dir(xdg.join("nixlayer/layers")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let mut record = json(&std::fs::read(&path).unwrap());
        record["blobs"] = serde_json::json!({ "gzip-6": { "digest": digest, "size": size } });
        std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();
        edited += 1;
    }
    assert!(edited > 0, "no layer cache entries in {}", xdg.display());

    let warm = push_with_cache(&m, &reference, &xdg);
    assert_eq!(warm["manifest_digest"], cold["manifest_digest"], "{warm}");
    assert_eq!(warm["layers"], cold["layers"]);
    assert_eq!(warm["blobs"]["layers_cached"], 0, "{warm}");
    // The entries now hold this format's digests, which are reused.
    let again = push_with_cache(&m, &reference, &xdg);
    assert_eq!(again["manifest_digest"], cold["manifest_digest"]);
    assert!(
        again["blobs"]["layers_cached"].as_u64() > Some(0),
        "{again}"
    );
}
