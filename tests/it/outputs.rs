//! Output formats and compression end to end: OCI layouts and archives
//! through skopeo into docker, compressed docker-archives through
//! `docker load`, gzip/zstd checked by the real `gzip`, `pigz` and `zstd`,
//! byte-identical output whatever the thread count, `merge`, `inspect`,
//! and rebuilds of a layout that write only the changed blobs.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{self, docker, docker_ready, docker_run, nixlayer, run, tool};

/// The `hello` fixture's manifest, as in `build.rs`.
///
/// ```text
/// hello-app-1.0 ──► busybox-static-1.35
///       └─────────► greeting-1.0
/// ```
fn hello_manifest(dir: &Path, hello: &Path, name: &str, cmd: &str) -> PathBuf {
    let hello = hello.display();
    util::write(
        dir,
        &format!("{}.toml", name.replace(['/', ':'], "_")),
        &format!(
            r#"
name = "{name}"
tag = "it"

[closure]
roots = ["{hello}"]

[config]
Entrypoint = ["{hello}/bin/hello"]
Cmd = ["{cmd}"]
"#
        ),
    )
}

fn build_json(manifest: &Path, args: &[&str]) -> Value {
    build_json_in(nixlayer(), manifest, args)
}

fn build_json_in(mut cmd: std::process::Command, manifest: &Path, args: &[&str]) -> Value {
    let out = run(cmd.arg("build").arg(manifest).args(args).arg("--json"), 0);
    serde_json::from_slice(&out.stdout).expect("build --json prints JSON")
}

fn digests(summary: &Value) -> Vec<String> {
    summary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn oci_layouts_run_in_docker_through_skopeo_for_gzip_and_zstd() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("skopeo") || !docker_ready() {
        return;
    }
    let tmp = util::temp_dir();
    for codec in ["gzip", "zstd"] {
        let name = format!("nixlayer-test/oci-{codec}");
        let manifest = hello_manifest(tmp.path(), &hello, &name, codec);
        let layout = tmp.path().join(format!("layout-{codec}"));
        let layout_arg = layout.to_str().unwrap();
        let summary = build_json(
            &manifest,
            &[
                "--format",
                "oci-layout",
                "--compression",
                codec,
                "-o",
                layout_arg,
            ],
        );
        assert_eq!(summary["reference"], format!("{name}:it"));
        assert_eq!(summary["format"], "oci-layout");
        for layer in summary["layers"].as_array().unwrap() {
            assert_eq!(
                layer["media_type"],
                format!("application/vnd.oci.image.layer.v1.tar+{codec}")
            );
            assert_ne!(layer["digest"], layer["diff_id"]);
        }
        let source = format!("oci:{layout_arg}:it");
        let dest = format!("docker-daemon:{name}:it");
        let direct = Command::new("skopeo")
            .args(["copy", "--quiet", &source, &dest])
            .output()
            .unwrap();
        if !direct.status.success() {
            // skopeo 1.9 (Debian 12) cannot express zstd layers in the
            // docker format the daemon takes ("zstd compression is not
            // supported for docker images"): let skopeo decompress our
            // zstd blobs (checking their digests) into a gzip layout, and
            // load that; docker checks every layer against its diff_id.
            let stderr = String::from_utf8_lossy(&direct.stderr);
            assert!(
                codec == "zstd" && stderr.contains("zstd compression is not supported"),
                "skopeo copy {source} {dest}: {stderr}"
            );
            let regz = tmp.path().join("regzipped");
            let regz_source = format!("oci:{}:it", regz.display());
            tool(
                "skopeo",
                &[
                    "copy",
                    "--quiet",
                    "--dest-compress",
                    "--dest-compress-format",
                    "gzip",
                    &source,
                    &regz_source,
                ],
            );
            tool("skopeo", &["copy", "--quiet", &regz_source, &dest]);
        }
        assert_eq!(
            docker_run(&format!("{name}:it")),
            format!("hello from nixlayer\nargs: {codec}\n")
        );

        // The same image as an OCI archive: skopeo sees the same layers.
        let archive = tmp.path().join(format!("oci-{codec}.tar"));
        let archive_arg = archive.to_str().unwrap();
        let summary2 = build_json(
            &manifest,
            &[
                "--format",
                "oci-archive",
                "--compression",
                codec,
                "-o",
                archive_arg,
            ],
        );
        assert_eq!(digests(&summary), digests(&summary2));
        let inspected: Value = serde_json::from_slice(&tool(
            "skopeo",
            &["inspect", &format!("oci-archive:{archive_arg}")],
        ))
        .unwrap();
        let layers: Vec<String> = inspected["Layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(layers, digests(&summary));
        assert_eq!(inspected["Digest"], summary["manifest_digest"]);
    }
}

#[test]
fn gzip_docker_archive_loads_and_zstd_archive_is_valid() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    if !util::require_tool("pigz") || !util::require_tool("zstd") || !util::require_tool("skopeo") {
        return;
    }
    let tmp = util::temp_dir();
    let manifest = hello_manifest(tmp.path(), &hello, "nixlayer-test/gz", "gz");
    let plain = run(nixlayer().arg("build").arg(&manifest).arg("--stream"), 0).stdout;

    // gzip: one valid gzip stream holding exactly the uncompressed archive.
    let gz = tmp.path().join("image.tar.gz");
    run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args(["--compression", "gzip", "-o"])
            .arg(&gz),
        0,
    );
    let gz_arg = gz.to_str().unwrap();
    tool("gzip", &["-t", gz_arg]);
    assert!(tool("pigz", &["-dc", gz_arg]) == plain, "pigz -d differs");
    assert!(tool("gzip", &["-dc", gz_arg]) == plain, "gzip -d differs");

    // zstd: the zstd tool decompresses it to the same archive, which
    // skopeo reads (docker 20.10 cannot load a zstd-compressed archive).
    let zst = tmp.path().join("image.tar.zst");
    run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args(["--compression", "zstd", "-o"])
            .arg(&zst),
        0,
    );
    let unzst = tool("zstd", &["-dc", zst.to_str().unwrap()]);
    assert!(unzst == plain, "zstd -d differs");
    let decompressed = tmp.path().join("from-zstd.tar");
    std::fs::write(&decompressed, &unzst).unwrap();
    let inspected: Value = serde_json::from_slice(&tool(
        "skopeo",
        &[
            "inspect",
            &format!("docker-archive:{}", decompressed.display()),
        ],
    ))
    .unwrap();
    assert_eq!(inspected["Layers"].as_array().unwrap().len(), 3);
    assert!(inspected["Layers"][0]
        .as_str()
        .unwrap()
        .starts_with("sha256:"));

    if docker_ready() {
        let loaded = docker(&["load", "-i", gz_arg]);
        assert!(loaded.contains("nixlayer-test/gz:it"), "{loaded}");
        assert_eq!(
            docker_run("nixlayer-test/gz:it"),
            "hello from nixlayer\nargs: gz\n"
        );
    }
}

#[test]
fn compressed_bytes_do_not_depend_on_threads_or_runs() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let manifest = hello_manifest(tmp.path(), &hello, "nixlayer-test/threads", "t");
    for (format, codec) in [
        ("docker-archive", "gzip"),
        ("docker-archive", "zstd"),
        ("oci-archive", "gzip"),
        ("oci-archive", "zstd"),
    ] {
        let build = |threads: Option<&str>| {
            let mut cmd = nixlayer();
            cmd.arg("build").arg(&manifest).args([
                "--stream",
                "--format",
                format,
                "--compression",
                codec,
            ]);
            if let Some(t) = threads {
                cmd.args(["--threads", t]);
            }
            run(&mut cmd, 0).stdout
        };
        let one = build(Some("1"));
        let all = build(None);
        let again = build(None);
        let four = build(Some("4"));
        assert!(one.len() > 100_000, "{format} {codec}: {}", one.len());
        assert!(one == all, "{format} {codec}: 1 thread vs all differ");
        assert!(all == again, "{format} {codec}: two runs differ");
        assert!(one == four, "{format} {codec}: 1 vs 4 threads differ");
    }
}

/// A cold zstd OCI layout whose layers are larger than one compression
/// job, so that several are compressed with every worker one after the
/// other (each waiting for the previous one's turn) beside one-job layers
/// on one worker: the blobs are those of one thread, whatever the count.
#[test]
fn zstd_layout_blobs_do_not_depend_on_threads() {
    let Some(python) = util::nix_fixture("debian-python") else {
        return;
    };
    let tmp = util::temp_dir();
    let manifest = hello_manifest(tmp.path(), &python, "nixlayer-test/zstd-layout", "z");
    let build = |threads: &str| {
        let out = tmp.path().join(format!("layout-{threads}"));
        run(
            nixlayer()
                .arg("build")
                .arg(&manifest)
                .args(["--format", "oci-layout", "--compression", "zstd"])
                .args(["--threads", threads, "-q", "-o"])
                .arg(&out)
                // Cold: every layer compressed, none from the cache.
                .env(
                    "XDG_CACHE_HOME",
                    tmp.path().join(format!("cache-{threads}")),
                ),
            0,
        );
        let mut blobs: Vec<(String, u64)> = std::fs::read_dir(out.join("blobs/sha256"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().into_string().unwrap(),
                    e.metadata().unwrap().len(),
                )
            })
            .collect();
        blobs.sort();
        (blobs, std::fs::read(out.join("index.json")).unwrap())
    };
    let one = build("1");
    let wide = one.0.iter().filter(|(_, size)| *size > 1 << 20).count();
    assert!(wide >= 2, "{:?}", one.0);
    assert!(one == build("2"), "1 vs 2 threads differ");
    assert!(one == build("4"), "1 vs 4 threads differ");
}

/// Lists the member names of a tar through GNU tar.
fn tar_members(archive: &Path) -> Vec<String> {
    String::from_utf8(tool("tar", &["-tf", archive.to_str().unwrap()]))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn merge_loads_both_tags_and_stores_a_shared_layer_once() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    // Same closure, other configs: three shared layers, two configs.
    let a = hello_manifest(tmp.path(), &hello, "nixlayer-test/merge-a", "a");
    let b = hello_manifest(tmp.path(), &hello, "nixlayer-test/merge-b", "b");
    let a_tar = tmp.path().join("a.tar.zst");
    let b_tar = tmp.path().join("b.tar");
    run(
        nixlayer()
            .arg("build")
            .arg(&a)
            .args(["--compression", "zstd", "-o"])
            .arg(&a_tar),
        0,
    );
    run(nixlayer().arg("build").arg(&b).arg("-o").arg(&b_tar), 0);
    let merged = tmp.path().join("merged.tar");
    let out = run(
        nixlayer()
            .arg("merge")
            .arg(&a_tar)
            .arg(&b_tar)
            .arg("-o")
            .arg(&merged),
        0,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("merged 2 images"), "{stderr}");

    // Like the last input: uncompressed.
    let members = tar_members(&merged);
    let layers = members.iter().filter(|m| m.ends_with("/layer.tar")).count();
    assert_eq!(layers, 3, "{members:?}");
    assert_eq!(members.iter().filter(|m| m.ends_with(".json")).count(), 3);
    let inspected: Value = serde_json::from_slice(
        &run(nixlayer().arg("inspect").arg(&merged).arg("--json"), 0).stdout,
    )
    .unwrap();
    let tags: Vec<&str> = inspected["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["tags"][0].as_str().unwrap())
        .collect();
    assert_eq!(
        tags,
        ["nixlayer-test/merge-a:it", "nixlayer-test/merge-b:it"]
    );

    if docker_ready() {
        let loaded = docker(&["load", "-i", merged.to_str().unwrap()]);
        assert!(loaded.contains("nixlayer-test/merge-a:it"), "{loaded}");
        assert!(loaded.contains("nixlayer-test/merge-b:it"), "{loaded}");
        assert_eq!(
            docker_run("nixlayer-test/merge-a:it"),
            "hello from nixlayer\nargs: a\n"
        );
        assert_eq!(
            docker_run("nixlayer-test/merge-b:it"),
            "hello from nixlayer\nargs: b\n"
        );
    }
}

pub(crate) const APP: &str = "cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3";
/// The app after "a change": another hash, another file content.
const APP2: &str = "cbs3bw4azcdb0askdsxda760jy7w9ymz-example-app-0.3";

/// Copies the committed example store and graph into `dir`, with the app
/// path named `app`, and returns the manifest.
pub(crate) fn example_copy(dir: &Path, app: &str) -> PathBuf {
    let src = util::repo().join("fixtures/example");
    let store = dir.join("store/nix/store");
    std::fs::create_dir_all(&store).unwrap();
    tool(
        "cp",
        &[
            "-a",
            "--",
            src.join("store/nix/store/.").to_str().unwrap(),
            store.to_str().unwrap(),
        ],
    );
    if app != APP {
        std::fs::rename(store.join(APP), store.join(app)).unwrap();
        let conf = store.join(app).join("etc/hello.conf");
        let mut text = std::fs::read_to_string(&conf).unwrap();
        text.push_str("# changed\n");
        tool(
            "chmod",
            &[
                "u+w",
                conf.to_str().unwrap(),
                conf.parent().unwrap().to_str().unwrap(),
            ],
        );
        std::fs::write(&conf, text).unwrap();
    }
    let graph = std::fs::read_to_string(src.join("graph.json"))
        .unwrap()
        .replace(APP, app);
    util::write(dir, "graph.json", &graph);
    util::write(
        dir,
        "image.toml",
        &format!(
            r#"
name = "nixlayer-test/rebuild"
tag = "it"
[store]
root = "store"
[closure]
roots = ["/nix/store/{app}"]
source = {{ graph = "graph.json" }}
[config]
Cmd = ["/nix/store/{app}/bin/hello"]
"#
        ),
    )
}

/// Inode and mtime of every blob of a layout.
fn blob_stats(layout: &Path) -> BTreeMap<String, (u64, i64, i64)> {
    std::fs::read_dir(layout.join("blobs/sha256"))
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            (
                e.file_name().into_string().unwrap(),
                (m.ino(), m.mtime(), m.mtime_nsec()),
            )
        })
        .collect()
}

#[test]
fn a_layout_rebuild_after_one_path_changed_writes_only_the_changed_blobs() {
    let tmp = util::temp_dir();
    let layout = tmp.path().join("layout");
    let layout_arg = layout.to_str().unwrap().to_owned();
    let args = [
        "--format",
        "oci-layout",
        "--compression",
        "gzip",
        "-o",
        &layout_arg,
    ];

    // A layer cache of this test's own, so the first build is cold.
    let cache = tmp.path().join("cache");
    let build = |manifest: &Path| {
        let mut cmd = nixlayer();
        cmd.env("XDG_CACHE_HOME", &cache);
        build_json_in(cmd, manifest, &args)
    };

    let first_dir = tmp.path().join("v1");
    let first = build(&example_copy(&first_dir, APP));
    assert_eq!(first["blobs"]["written"], 5, "{first}");
    assert_eq!(first["blobs"]["layers_cached"], 0, "{first}");
    let before = blob_stats(&layout);
    assert_eq!(before.len(), 5);

    // The same build again: nothing written, and no layer even read: the
    // layer cache knows their blobs, which the layout has.
    let same = build(&first_dir.join("image.toml"));
    assert_eq!(same["blobs"]["written"], 0, "{same}");
    assert_eq!(same["blobs"]["layers_cached"], 3, "{same}");
    assert_eq!(digests(&same), digests(&first));
    assert_eq!(same["manifest_digest"], first["manifest_digest"]);
    assert_eq!(blob_stats(&layout), before);

    // The app changed: its layer, the config and the manifest are new;
    // the two other layers are kept as they were (same inode and mtime).
    let second_dir = tmp.path().join("v2");
    let second = build(&example_copy(&second_dir, APP2));
    assert_eq!(second["blobs"]["written"], 3, "{second}");
    assert_eq!(second["blobs"]["existing"], 2, "{second}");
    // The store is another copy (another `store.root`), and the layer
    // cache is per store: every layer was read again (issue 9), and the
    // unchanged ones were found in the layout.
    assert_eq!(second["blobs"]["layers_cached"], 0, "{second}");
    let after = blob_stats(&layout);
    assert_eq!(after.len(), 8);
    for (name, stat) in &before {
        assert_eq!(after.get(name), Some(stat), "blob {name} was rewritten");
    }
    let (d1, d2) = (digests(&first), digests(&second));
    assert_eq!(d1[..2], d2[..2]);
    assert_ne!(d1[2], d2[2]);

    // index.json names the tag once, now the new manifest.
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0]["digest"], second["manifest_digest"]);
    assert_eq!(
        manifests[0]["annotations"]["org.opencontainers.image.ref.name"],
        "it"
    );
    // No temporary file left anywhere in the layout.
    let names: Vec<String> = after.keys().cloned().collect();
    assert!(names.iter().all(|n| n.len() == 64), "{names:?}");
}

/// A layout tells its images apart by tag (`oci:DIR:it`): building
/// `other:it` into a layout holding `first:it` is refused, the layout
/// left as it was (it replaced `first:it` silently), while rebuilding
/// `first:it` and adding `first:two` still work.
#[test]
fn a_tag_of_another_name_in_a_layout_is_refused() {
    let Some(hello) = util::nix_fixture("hello") else {
        return;
    };
    let tmp = util::temp_dir();
    let first = hello_manifest(tmp.path(), &hello, "nixlayer-test/first", "one");
    let other = hello_manifest(tmp.path(), &hello, "nixlayer-test/other", "two");
    let layout = tmp.path().join("layout");
    let built = build_json(
        &first,
        &["--format", "oci-layout", "-o", layout.to_str().unwrap()],
    );
    let index = std::fs::read(layout.join("index.json")).unwrap();
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&other)
            .args(["--format", "oci-layout", "-o"])
            .arg(&layout),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("index.json` already names `nixlayer-test/first:it` by the tag `it`")
            && stderr.contains("`nixlayer-test/other:it` would replace it"),
        "{stderr}"
    );
    assert_eq!(std::fs::read(layout.join("index.json")).unwrap(), index);
    let seen: Value = serde_json::from_slice(&tool(
        "skopeo",
        &["inspect", &format!("oci:{}:it", layout.display())],
    ))
    .unwrap();
    assert_eq!(seen["Digest"], built["manifest_digest"], "{built}");
    build_json(
        &first,
        &["--format", "oci-layout", "-o", layout.to_str().unwrap()],
    );
    build_json(
        &other,
        &[
            "--tag",
            "nixlayer-test/other:two",
            "--format",
            "oci-layout",
            "-o",
            layout.to_str().unwrap(),
        ],
    );
}

#[test]
fn inspect_reports_what_build_wrote() {
    let tmp = util::temp_dir();
    let manifest = util::repo().join("manifests/example.toml");
    for (format, codec, file) in [
        ("oci-archive", "zstd", "a.tar"),
        ("oci-layout", "gzip", "layout"),
        ("docker-archive", "gzip", "d.tar.gz"),
        ("docker-archive", "zstd", "d.tar.zst"),
    ] {
        let out = tmp.path().join(file);
        let summary = build_json(
            &manifest,
            &[
                "--format",
                format,
                "--compression",
                codec,
                "-o",
                out.to_str().unwrap(),
            ],
        );
        let inspected: Value = serde_json::from_slice(
            &run(nixlayer().arg("inspect").arg(&out).arg("--json"), 0).stdout,
        )
        .unwrap();
        assert_eq!(inspected["format"], format);
        let image = &inspected["images"][0];
        assert_eq!(image["config_digest"], summary["config_digest"]);
        let layers = image["layers"].as_array().unwrap();
        assert_eq!(layers.len(), 3);
        for (l, s) in layers.iter().zip(summary["layers"].as_array().unwrap()) {
            assert_eq!(l["diff_id"], s["diff_id"]);
            assert_eq!(l["digest"], s["digest"]);
            assert_eq!(l["size"], s["size"]);
            assert_eq!(l["media_type"], s["media_type"]);
        }
        if format == "docker-archive" {
            assert_eq!(inspected["compression"], codec);
            assert_eq!(image["tags"][0], "nixlayer/example:0.3");
        } else {
            // The full reference (`io.containerd.image.name`), as docker
            // shows it, and the ref name skopeo's `oci:DIR:TAG` takes.
            assert_eq!(image["tags"], serde_json::json!(["nixlayer/example:0.3"]));
            assert_eq!(image["ref_name"], "0.3");
            assert_eq!(image["manifest_digest"], summary["manifest_digest"]);
        }
        // The human form names the image as docker does (and an OCI
        // one's ref name), and every layer.
        let text = String::from_utf8(run(nixlayer().arg("inspect").arg(&out), 0).stdout).unwrap();
        if format == "docker-archive" {
            assert!(text.contains("image 1: nixlayer/example:0.3\n"), "{text}");
        } else {
            assert!(
                text.contains("image 1: nixlayer/example:0.3 (ref.name `0.3`)\n"),
                "{text}"
            );
        }
        assert!(text.matches("sha256:").count() >= 4, "{text}");
    }
}

#[test]
fn bad_inputs_and_usage_give_one_error() {
    let tmp = util::temp_dir();
    let junk = util::write(tmp.path(), "junk.tar", "not an archive");
    let out = run(nixlayer().arg("inspect").arg(&junk), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("junk.tar"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let merged = tmp.path().join("m.tar");
    run(nixlayer().arg("merge").arg(&junk).arg("-o").arg(&merged), 1);
    assert!(!merged.exists());

    // A layout needs a directory; a level must fit the codec.
    let manifest = util::repo().join("manifests/example.toml");
    run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args(["--format", "oci-layout", "--stream"]),
        2,
    );
    let out = run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args(["--compression", "gzip", "--level", "12", "-o"])
            .arg(tmp.path().join("x.tar")),
        // A bad flag value is a usage error (issue 9).
        2,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("level 12"));
    // A directory that is not a layout is never written into.
    let not_layout = tmp.path().join("docs");
    std::fs::create_dir(&not_layout).unwrap();
    util::write(&not_layout, "notes.txt", "keep me");
    run(
        nixlayer()
            .arg("build")
            .arg(&manifest)
            .args(["--format", "oci-layout", "-o"])
            .arg(&not_layout),
        1,
    );
    assert_eq!(std::fs::read_dir(&not_layout).unwrap().count(), 1);
}
