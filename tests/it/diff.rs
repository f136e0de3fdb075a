//! `nixlayer diff`: two versions of the embedded example that differ in one
//! store path, compared as manifests (under both strategies) and as the
//! archives and layouts built from them.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::util::{self, nixlayer, run};

const GREETING: &str = "7nfhipmb7k7l7rfafbnansncz9730ygj-example-greeting-1.0";
const NEW_GREETING: &str = "0000000000000000000000000000000a-example-greeting-1.0";

/// A copy of fixtures/example in `dir`, with a manifest of `strategy`;
/// `changed` replaces the greeting's file and renames its store path.
fn example(dir: &Path, strategy: &str, changed: bool) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let status = Command::new("cp")
        .arg("-a")
        .arg(util::repo().join("fixtures/example/store"))
        .arg(util::repo().join("fixtures/example/graph.json"))
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("chmod")
        .arg("-R")
        .arg("u+w")
        .arg(dir)
        .status()
        .unwrap();
    assert!(status.success());
    if changed {
        let store = dir.join("store/nix/store");
        std::fs::rename(store.join(GREETING), store.join(NEW_GREETING)).unwrap();
        std::fs::write(
            store.join(NEW_GREETING).join("share/greeting.txt"),
            "Hi there, again!\n",
        )
        .unwrap();
        let graph = std::fs::read_to_string(dir.join("graph.json")).unwrap();
        std::fs::write(
            dir.join("graph.json"),
            graph.replace(GREETING, NEW_GREETING),
        )
        .unwrap();
    }
    util::write(
        dir,
        "image.toml",
        &format!(
            r#"name = "nixlayer-test/diff"
tag = "1"
created = "2024-01-01T00:00:00Z"

[store]
root = "store"

[closure]
roots = ["/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3"]
source = {{ graph = "graph.json" }}

[layering]
strategy = "{strategy}"

[config]
Cmd = ["/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3/bin/hello"]
"#
        ),
    )
}

fn diff_json(old: &Path, new: &Path) -> Value {
    let out = run(nixlayer().arg("diff").arg(old).arg(new).arg("--json"), 0);
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ids(doc: &Value, key: &str) -> Vec<String> {
    doc["layers"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["diff_id"].as_str().unwrap().to_owned())
        .collect()
}

fn build(manifest: &Path, out: &Path, extra: &[&str]) {
    run(
        nixlayer()
            .arg("build")
            .arg(manifest)
            .arg("-o")
            .arg(out)
            .args(extra),
        0,
    );
}

/// One changed store path: exactly that path is reported, one layer (the
/// path's) is added and one dropped, and the push bytes are that layer,
/// the config and the manifest — under `auto` and `popularity`.
#[test]
fn manifests_differing_in_one_path() {
    for strategy in ["auto", "popularity"] {
        let tmp = util::temp_dir();
        let old = example(&tmp.path().join("old"), strategy, false);
        let new = example(&tmp.path().join("new"), strategy, true);
        let doc = diff_json(&old, &new);
        let paths = &doc["store_paths"];
        assert_eq!(paths["added"], serde_json::json!([]), "{strategy}: {doc}");
        assert_eq!(paths["removed"], serde_json::json!([]), "{strategy}: {doc}");
        assert_eq!(
            paths["changed"],
            serde_json::json!([{"old": format!("/nix/store/{GREETING}"), "new": format!("/nix/store/{NEW_GREETING}")}]),
            "{strategy}: {doc}"
        );
        let added = doc["layers"]["added"].as_array().unwrap();
        assert_eq!(added.len(), 1, "{strategy}: {doc}");
        assert_eq!(
            added[0]["store_paths"],
            serde_json::json!([format!("/nix/store/{NEW_GREETING}")])
        );
        assert_eq!(ids(&doc, "dropped").len(), 1, "{strategy}: {doc}");
        assert_eq!(ids(&doc, "kept").len(), 2, "{strategy}: {doc}");
        let bytes = &doc["bytes"];
        let layer = added[0]["size"].as_u64().unwrap();
        assert!(layer >= 1024, "{strategy}: {doc}");
        assert_eq!(bytes["layers"].as_u64(), Some(layer));
        assert_eq!(
            bytes["push"].as_u64().unwrap(),
            layer + bytes["config"].as_u64().unwrap() + bytes["manifest"].as_u64().unwrap()
        );

        // The table names the path too.
        let out = run(nixlayer().arg("diff").arg(&old).arg(&new), 0);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.contains(&format!(
                "~ /nix/store/{GREETING} -> /nix/store/{NEW_GREETING}"
            )),
            "{text}"
        );
        assert!(text.contains("1 added, 1 dropped"), "{text}");
    }
}

/// The diff of built images agrees with the diff of their manifests: an
/// uncompressed OCI layout in every byte count, a gzip docker-archive and a
/// zstd OCI archive in paths and layers.
#[test]
fn built_images_agree_with_manifests() {
    let tmp = util::temp_dir();
    let old = example(&tmp.path().join("old"), "auto", false);
    let new = example(&tmp.path().join("new"), "auto", true);
    let planned = diff_json(&old, &new);

    let (old_layout, new_layout) = (tmp.path().join("old-layout"), tmp.path().join("new-layout"));
    build(&old, &old_layout, &["--format", "oci-layout"]);
    build(&new, &new_layout, &["--format", "oci-layout"]);
    assert_eq!(diff_json(&old_layout, &new_layout), planned);

    let (old_tar, new_tar) = (tmp.path().join("old.tar.gz"), tmp.path().join("new.tar.gz"));
    build(&old, &old_tar, &["--compression", "gzip"]);
    build(&new, &new_tar, &["--compression", "gzip"]);
    let (old_oci, new_oci) = (tmp.path().join("old.oci"), tmp.path().join("new.oci"));
    build(
        &old,
        &old_oci,
        &["--format", "oci-archive", "--compression", "zstd"],
    );
    build(
        &new,
        &new_oci,
        &["--format", "oci-archive", "--compression", "zstd"],
    );
    // Mixed kinds on either side, too.
    for (a, b) in [
        (&old_tar, &new_tar),
        (&old_oci, &new_oci),
        (&old, &new_oci),
        (&old_tar, &new),
    ] {
        let doc = diff_json(a, b);
        assert_eq!(
            doc["store_paths"],
            planned["store_paths"],
            "{}",
            a.display()
        );
        for key in ["kept", "added", "dropped"] {
            assert_eq!(ids(&doc, key), ids(&planned, key), "{key}: {}", a.display());
        }
    }
    // A zstd OCI archive pushes its compressed layer.
    let doc = diff_json(&old_oci, &new_oci);
    assert!(doc["bytes"]["layers"].as_u64() < planned["bytes"]["layers"].as_u64());
}

/// The same image stored plain and with gzip layers: nothing changed in
/// content (every layer kept by diff_id), but a registry holding the plain
/// one has none of the gzip blobs, so the update pushes all of them. It
/// used to say the layers cost 0 B to push.
#[test]
fn the_same_image_in_another_compression_pushes_its_blobs() {
    let tmp = util::temp_dir();
    let manifest = example(&tmp.path().join("m"), "auto", false);
    let (plain, gzip) = (tmp.path().join("plain"), tmp.path().join("gzip"));
    build(&manifest, &plain, &["--format", "oci-layout"]);
    build(
        &manifest,
        &gzip,
        &["--format", "oci-layout", "--compression", "gzip"],
    );
    let doc = diff_json(&plain, &gzip);
    let kept = doc["layers"]["kept"].as_array().unwrap();
    assert_eq!(kept.len(), 3, "{doc}");
    assert_eq!(ids(&doc, "added"), Vec::<String>::new());
    assert_eq!(doc["layers"]["kept_other_blob"], doc["layers"]["kept"]);
    let gzip_bytes: u64 = kept.iter().map(|l| l["size"].as_u64().unwrap()).sum();
    assert!(gzip_bytes > 0);
    assert_eq!(doc["bytes"]["layers"].as_u64(), Some(gzip_bytes), "{doc}");
    let text =
        String::from_utf8(run(nixlayer().arg("diff").arg(&plain).arg(&gzip), 0).stdout).unwrap();
    assert!(
        text.contains("layers: 3 kept (3 of them stored another way, pushed again), 0 added"),
        "{text}"
    );
    assert_eq!(text.matches("\n  * ").count(), 3, "{text}");
    assert!(!text.contains("(0 B layers"), "{text}");
    // The plain layout against its manifest (plain tars) pushes nothing;
    // nor does the gzip one against a manifest whose `[output]` is gzip
    // (its layers compressed as that output stores them).
    let doc = diff_json(&manifest, &plain);
    assert_eq!(doc["bytes"]["push"], 0, "{doc}");
    assert_eq!(doc["layers"]["kept_other_blob"], serde_json::json!([]));
    let text = std::fs::read_to_string(&manifest).unwrap();
    let gzip_manifest = util::write(
        &tmp.path().join("m"),
        "gzip.toml",
        &format!("{text}\n[output]\nformat = \"oci-layout\"\ncompression = \"gzip\"\n"),
    );
    for (old, new) in [(&gzip_manifest, &gzip), (&gzip, &gzip_manifest)] {
        let doc = diff_json(old, new);
        assert_eq!(doc["bytes"]["push"], 0, "{doc}");
        assert_eq!(doc["layers"]["kept_other_blob"], serde_json::json!([]));
    }
    let doc = diff_json(&plain, &gzip_manifest);
    assert_eq!(doc["bytes"]["layers"].as_u64(), Some(gzip_bytes), "{doc}");
}

/// A change of config alone is named (`config.Env`), and an image
/// against itself (or its manifest) changes nothing and sends nothing: the
/// registry already holds its config and manifest.
#[test]
fn config_changes_are_named_and_an_unchanged_image_sends_nothing() {
    let tmp = util::temp_dir();
    let old = example(&tmp.path().join("old"), "auto", false);
    let text = std::fs::read_to_string(&old).unwrap();
    let env = util::write(
        &tmp.path().join("old"),
        "env.toml",
        &format!("{text}Env = [\"GREETING=hi\"]\n"),
    );
    let doc = diff_json(&old, &env);
    assert_eq!(
        doc["config"]["changed"],
        serde_json::json!(["config.Env"]),
        "{doc}"
    );
    assert!(doc["bytes"]["config"].as_u64().unwrap() > 0, "{doc}");
    assert_eq!(doc["bytes"]["layers"], 0, "{doc}");
    let out = run(nixlayer().arg("diff").arg(&old).arg(&env), 0);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("config: config.Env changed"), "{table}");

    let layout = tmp.path().join("layout");
    build(&old, &layout, &["--format", "oci-layout"]);
    for (a, b) in [(&old, &old), (&old, &layout), (&layout, &layout)] {
        let doc = diff_json(a, b);
        assert_eq!(doc["config"]["changed"], serde_json::json!([]), "{doc}");
        assert_eq!(doc["bytes"]["push"], 0, "{}: {doc}", b.display());
    }
    let out = run(nixlayer().arg("diff").arg(&layout).arg(&old), 0);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("config: no setting changed\nupdate pushes 0 B"),
        "{table}"
    );
}

/// A multi-platform side: `--platform` picks its image (a manifest's and
/// an index's alike, docker's `linux/` spelling too); without it an index
/// is refused with the way out (it only said "holds 2 images").
#[test]
fn platform_picks_the_image_of_a_multi_platform_side() {
    let tmp = util::temp_dir();
    let two = crate::merge_oci::example(tmp.path(), "nixlayer-test/diff-multi", "1", "a", true);
    let layout = tmp.path().join("layout");
    build(&two, &layout, &["--format", "oci-layout"]);
    let out = run(nixlayer().arg("diff").arg(&two).arg(&layout), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds 2 images") && stderr.contains("--platform"),
        "{stderr}"
    );
    for platform in ["arm64", "linux/arm64/v8", "amd64"] {
        let out = run(
            nixlayer()
                .arg("diff")
                .arg(&two)
                .arg(&layout)
                .args(["--json", "--platform", platform]),
            0,
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["bytes"]["push"], 0, "{platform}: {doc}");
    }
    // A side with no image of that platform is an error, not a guess.
    let arm = tmp.path().join("arm.tar");
    build(&two, &arm, &["--platform", "arm64"]);
    let out = run(
        nixlayer()
            .arg("diff")
            .arg(&arm)
            .arg(&layout)
            .args(["--json", "--platform", "amd64"]),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds 0 images of platform `amd64`"),
        "{stderr}"
    );
}

/// Unreadable sides fail with one error naming the input.
#[test]
fn bad_inputs_are_named() {
    let tmp = util::temp_dir();
    let junk = util::write(tmp.path(), "junk.tar", "not an image");
    let old = example(&tmp.path().join("old"), "auto", false);
    let out = run(nixlayer().arg("diff").arg(&old).arg(&junk), 1);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("junk.tar"), "{err}");
    assert!(out.stdout.is_empty());
}

/// An image built on a base, against that base: the base's layers are
/// kept with the base's store paths, none of which is removed, and only
/// the top's own layer is added — whether the new side is the manifest or
/// the image built from it, plain or gzip. Its base layers' history names
/// the base's members, so the base's paths were all reported removed.
#[test]
fn an_image_on_a_base_keeps_the_base_paths() {
    let tmp = util::temp_dir();
    let manifest = example(&tmp.path().join("m"), "auto", false);
    for (base, extra, output) in [
        ("base.tar", &[][..], ""),
        (
            "base-gz",
            &["--format", "oci-layout", "--compression", "gzip"][..],
            "[output]\nformat = \"oci-layout\"\ncompression = \"gzip\"\n",
        ),
    ] {
        let base = tmp.path().join(base);
        build(&manifest, &base, extra);
        let top = util::write(
            tmp.path(),
            "top.toml",
            &format!(
                r#"name = "nixlayer-test/diff-top"
tag = "1"
created = "2024-01-01T00:00:00Z"
[base]
image = "{}"
[closure]
roots = []
[[customisation.files]]
path = "/etc/top.txt"
text = "top\n"
{output}"#,
                base.display()
            ),
        );
        let built = tmp.path().join("top-built");
        let _ = std::fs::remove_dir_all(&built);
        let _ = std::fs::remove_file(&built);
        build(&top, &built, extra);
        let base_doc = diff_json(&manifest, &base);
        let base_layers = base_doc["layers"]["kept"].as_array().unwrap().clone();
        assert_eq!(base_layers.len(), 3, "{base_doc}");
        for (old, new) in [(&base, &top), (&base, &built), (&built, &base)] {
            let doc = diff_json(old, new);
            let paths = &doc["store_paths"];
            let none = serde_json::json!([]);
            let what = format!("{} -> {}: {doc}", old.display(), new.display());
            assert_eq!(paths["removed"], none, "{what}");
            assert_eq!(paths["added"], none, "{what}");
            assert_eq!(paths["changed"], none, "{what}");
            // The base's layers, each with its path, blobs and all.
            assert_eq!(
                doc["layers"]["kept"],
                serde_json::json!(base_layers),
                "{what}"
            );
            assert_eq!(doc["layers"]["kept_other_blob"], none, "{what}");
            let moved = if new == &base { "dropped" } else { "added" };
            let top_layer = doc["layers"][moved].as_array().unwrap();
            assert_eq!(top_layer.len(), 1, "{what}");
            assert_eq!(top_layer[0]["store_paths"], none, "{what}");
        }
        let out = run(nixlayer().arg("diff").arg(&base).arg(&built), 0);
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            text.starts_with("store paths: 0 added, 0 removed, 0 changed\nlayers: 3 kept, 1 added"),
            "{text}"
        );
        assert_eq!(text.matches(" 1 path\n").count(), 3, "{text}");
    }
}

/// A docker-archive whose layer members are gzip (docker loads them):
/// each blob is its gzip bytes, not the tar the diff_id names, so against
/// the plain archive its layers are stored another way and pushed. Its
/// digests were taken to be the diff_ids: "3 kept", nothing to push.
#[test]
fn gzip_members_of_a_docker_archive_are_other_blobs() {
    let tmp = util::temp_dir();
    let manifest = example(&tmp.path().join("m"), "auto", false);
    let plain = tmp.path().join("plain.tar");
    build(&manifest, &plain, &[]);
    let tree = tmp.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    util::tool(
        "tar",
        &["-xf", plain.to_str().unwrap(), "-C", tree.to_str().unwrap()],
    );
    let manifest_json: Value =
        serde_json::from_slice(&std::fs::read(tree.join("manifest.json")).unwrap()).unwrap();
    let members: Vec<&str> = manifest_json[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(members.len(), 3);
    let (mut gzip_digests, mut tar_bytes) = (Vec::new(), 0);
    for member in &members {
        let path = tree.join(member);
        tar_bytes += std::fs::metadata(&path).unwrap().len();
        let gz = util::tool("gzip", &["-n", "-c", path.to_str().unwrap()]);
        std::fs::write(&path, gz).unwrap();
        let sum = util::tool("sha256sum", &[path.to_str().unwrap()]);
        let hex = String::from_utf8(sum).unwrap()[..64].to_owned();
        gzip_digests.push(format!("sha256:{hex}"));
    }
    let gzipped = tmp.path().join("gzipped.tar");
    util::tool(
        "tar",
        &[
            "-cf",
            gzipped.to_str().unwrap(),
            "-C",
            tree.to_str().unwrap(),
            ".",
        ],
    );
    let doc = diff_json(&plain, &gzipped);
    let kept: Vec<&str> = doc["layers"]["kept_other_blob"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap())
        .collect();
    assert_eq!(kept, gzip_digests, "{doc}");
    assert!(doc["bytes"]["layers"].as_u64().unwrap() > 0, "{doc}");
    // The other way round, the plain tars are the blobs pushed.
    let doc = diff_json(&gzipped, &plain);
    assert_eq!(ids(&doc, "kept_other_blob").len(), 3, "{doc}");
    assert_eq!(doc["bytes"]["layers"], tar_bytes, "{doc}");
}

/// One image of a layout holding several tags is named as `PATH:NAME`
/// (its `ref.name`, or the full name), as skopeo's `oci:PATH:NAME`; the
/// layout alone is refused with its names, not with `--platform` (the
/// images are of one platform, so that hint led nowhere). A file whose
/// name has a `:` is still itself.
#[test]
fn one_image_of_several_tags_is_named() {
    let tmp = util::temp_dir();
    let manifest = example(&tmp.path().join("old"), "auto", false);
    let changed = example(&tmp.path().join("new"), "auto", true);
    let layout = tmp.path().join("layout");
    build(&manifest, &layout, &["--format", "oci-layout"]);
    build(
        &changed,
        &layout,
        &["--format", "oci-layout", "--tag", "nixlayer-test/diff:2"],
    );
    let planned = diff_json(&manifest, &changed);
    let side = |name: &str| PathBuf::from(format!("{}:{name}", layout.display()));
    for (old, new) in [("1", "2"), ("nixlayer-test/diff:1", "nixlayer-test/diff:2")] {
        let doc = diff_json(&side(old), &side(new));
        assert_eq!(doc["store_paths"], planned["store_paths"], "{doc}");
        assert_eq!(doc["bytes"], planned["bytes"], "{doc}");
    }
    let out = run(nixlayer().arg("diff").arg(&layout).arg(&changed), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("holds 2 images")
            && stderr.contains(&format!("as `{}:NAME`, of `1`, `2`", layout.display()))
            && !stderr.contains("--platform"),
        "{stderr}"
    );
    let out = run(nixlayer().arg("diff").arg(side("3")).arg(&changed), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("holds 0 images named `3`"), "{stderr}");
    // A manifest names no image; a file with a `:` in its name is itself.
    let out = run(
        nixlayer()
            .arg("diff")
            .arg(format!("{}:1", manifest.display()))
            .arg(&changed),
        2,
    );
    assert!(out.stdout.is_empty());
    let colon = tmp.path().join("a:1.tar");
    build(&manifest, &colon, &[]);
    assert_eq!(diff_json(&colon, &manifest)["bytes"]["push"], 0);
}

/// A store path from a hostile archive's history (ESC ] 0;x BEL retitles
/// a terminal, ESC [2J clears it) is printed escaped by the table, as
/// `inspect` and errors print it; it reached the terminal raw.
#[test]
fn escape_sequences_in_history_never_reach_the_terminal() {
    let tmp = util::temp_dir();
    let manifest = example(&tmp.path().join("m"), "auto", false);
    let plain = tmp.path().join("plain.tar");
    build(&manifest, &plain, &[]);
    let evil = edit_config(&plain, &tmp.path().join("evil"), |config| {
        config["history"][0]["comment"] =
            Value::from("store paths: ['/nix/store/aaa-x\u{1b}]0;x\u{7}\u{1b}[2J']");
    });
    let out = run(nixlayer().arg("diff").arg(&evil).arg(&plain), 0);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        !text.contains('\u{1b}') && !text.contains('\u{7}'),
        "{text:?}"
    );
    assert!(text.contains(r"aaa-x\u{1b}]0;x\u{7}\u{1b}[2J"), "{text}");
}

/// A copy of docker-archive `plain` as `{out}.tar` with its config edited
/// by `edit`, the config named otherwise than by its digest (tools may), so
/// no name is to match.
fn edit_config(plain: &Path, out: &Path, edit: impl FnOnce(&mut Value)) -> PathBuf {
    let tree = out.with_extension("d");
    std::fs::create_dir(&tree).unwrap();
    util::tool(
        "tar",
        &["-xf", plain.to_str().unwrap(), "-C", tree.to_str().unwrap()],
    );
    let mut list: Value =
        serde_json::from_slice(&std::fs::read(tree.join("manifest.json")).unwrap()).unwrap();
    let config_name = list[0]["Config"].as_str().unwrap().to_owned();
    let mut config: Value =
        serde_json::from_slice(&std::fs::read(tree.join(&config_name)).unwrap()).unwrap();
    edit(&mut config);
    std::fs::remove_file(tree.join(&config_name)).unwrap();
    std::fs::write(tree.join("config.json"), config.to_string()).unwrap();
    list[0]["Config"] = Value::from("config.json");
    std::fs::write(tree.join("manifest.json"), list.to_string()).unwrap();
    let archive = out.with_extension("tar");
    util::tool(
        "tar",
        &[
            "-cf",
            archive.to_str().unwrap(),
            "-C",
            tree.to_str().unwrap(),
            ".",
        ],
    );
    archive
}

/// An image whose history lacks an entry (a tool appended a layer without
/// one) says nothing of which layer an entry is: its layers list no paths
/// (each then takes the other side's by diff_id), rather than each the
/// next layer's paths, which made a diff against itself report changes.
#[test]
fn a_history_shorter_than_the_layers_names_no_paths() {
    let tmp = util::temp_dir();
    let manifest = example(&tmp.path().join("m"), "auto", false);
    let plain = tmp.path().join("plain.tar");
    build(&manifest, &plain, &[]);
    let short = edit_config(&plain, &tmp.path().join("short"), |config| {
        config["history"].as_array_mut().unwrap().remove(0);
    });
    let doc = diff_json(&short, &short);
    for layer in doc["layers"]["kept"].as_array().unwrap() {
        assert_eq!(layer["store_paths"], serde_json::json!([]), "{doc}");
    }
    let same = diff_json(&plain, &plain);
    for (old, new) in [(&plain, &short), (&short, &plain)] {
        let doc = diff_json(old, new);
        assert_eq!(doc["store_paths"], same["store_paths"], "{doc}");
        assert_eq!(doc["layers"]["kept"], same["layers"]["kept"], "{doc}");
    }
}

/// `inspect`'s first line tells the file's compression from its layers':
/// a zstd layout said "compression none" (a directory has none), and a
/// gzip docker-archive of plain layers said only "compression gzip".
#[test]
fn inspect_names_the_layers_compression_apart() {
    let tmp = util::temp_dir();
    let manifest = example(&tmp.path().join("m"), "auto", false);
    let cases = [
        (
            "zstd-layout",
            &["--format", "oci-layout", "--compression", "zstd"][..],
            "oci-layout, layers zstd\n",
        ),
        (
            "gzip.oci",
            &["--format", "oci-archive", "--compression", "gzip"][..],
            "oci-archive, compression none, layers gzip\n",
        ),
        (
            "image.tar.gz",
            &["--compression", "gzip"][..],
            "docker-archive, compression gzip, layers uncompressed\n",
        ),
    ];
    for (name, extra, header) in cases {
        let out = tmp.path().join(name);
        build(&manifest, &out, extra);
        let text = String::from_utf8(run(nixlayer().arg("inspect").arg(&out), 0).stdout).unwrap();
        assert!(
            text.starts_with(&format!("{}: {header}", out.display())),
            "{text}"
        );
    }
}

/// A manifest whose `[base]` is on a registry is reached as `build`
/// reaches it: `diff` takes `--ca-file` (and the other registry flags,
/// the credentials of docker's `config.json`). It had none, so a base on
/// a registry with a private CA (or needing a login) could be built and
/// planned but not diffed.
#[test]
fn a_registry_base_is_reached_with_the_registry_flags() {
    if !util::require_tool("docker-registry") || !util::require_tool("openssl") {
        return;
    }
    let tmp = util::temp_dir();
    let (registry, ca) = crate::support::tls_registry(tmp.path(), "registry");
    let host = format!("127.0.0.1:{}", registry.port);
    let manifest = example(&tmp.path().join("m"), "auto", false);
    let empty_certs_d = tmp.path().join("certs.d-empty");
    let with_ca = |cmd: &mut Command| {
        cmd.env("NIXLAYER_CERTS_D", &empty_certs_d)
            .env("XDG_CACHE_HOME", tmp.path().join("cache"))
            .env_remove("SSL_CERT_FILE")
            .arg("--ca-file")
            .arg(&ca);
    };
    let mut push = nixlayer();
    push.arg("push")
        .arg(&manifest)
        .arg(format!("{host}/nixlayer-test/diff-base:1"))
        .arg("--json");
    with_ca(&mut push);
    let pushed: Value = serde_json::from_slice(&run(&mut push, 0).stdout).unwrap();
    let digest = pushed["manifest_digest"].as_str().unwrap();
    let top = util::write(
        tmp.path(),
        "top.toml",
        &format!(
            r#"name = "nixlayer-test/diff-top"
tag = "1"
created = "2024-01-01T00:00:00Z"
[base]
image = "docker://{host}/nixlayer-test/diff-base:1@{digest}"
[closure]
roots = []
[[customisation.files]]
path = "/etc/top.txt"
text = "top\n"
"#
        ),
    );
    let diff = || {
        let mut cmd = nixlayer();
        cmd.arg("diff").arg(&manifest).arg(&top).arg("--json");
        cmd
    };
    // Without the CA: a TLS failure naming the way to trust it.
    let out = run(
        diff()
            .env("NIXLAYER_CERTS_D", &empty_certs_d)
            .env("XDG_CACHE_HOME", tmp.path().join("cache-untrusted"))
            .env_remove("SSL_CERT_FILE"),
        1,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("TLS failed") && stderr.contains("--ca-file"),
        "{stderr}"
    );
    let mut cmd = diff();
    with_ca(&mut cmd);
    let doc: Value = serde_json::from_slice(&run(&mut cmd, 0).stdout).unwrap();
    assert_eq!(
        doc["store_paths"]["removed"],
        serde_json::json!([]),
        "{doc}"
    );
    assert_eq!(ids(&doc, "kept").len(), 3, "{doc}");
    assert_eq!(ids(&doc, "added").len(), 1, "{doc}");
}

/// The stored layer digests of an OCI layout's one image.
fn layout_layer_digests(layout: &Path) -> Vec<String> {
    let doc: Value =
        serde_json::from_slice(&run(nixlayer().arg("inspect").arg(layout).arg("--json"), 0).stdout)
            .unwrap();
    doc["images"][0]["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["digest"].as_str().unwrap().to_owned())
        .collect()
}

/// An image built on a base whose layers another tool compressed (skopeo,
/// docker: Go's gzip, another zstd) keeps the base's blobs when its output
/// compresses layers the same way, as docker keeps a base's blobs: they
/// were recompressed, so every base layer got a new digest, which a push
/// uploaded again instead of mounting, and which every client holding the
/// base pulled again. `diff` says the same (no base layer pushed again).
#[test]
fn a_base_compressed_by_another_tool_keeps_its_blobs() {
    if !util::require_tool("skopeo") {
        return;
    }
    let tmp = util::temp_dir();
    let manifest = example(&tmp.path().join("m"), "auto", false);
    let plain = tmp.path().join("plain");
    build(&manifest, &plain, &["--format", "oci-layout"]);
    for codec in ["gzip", "zstd"] {
        let base = tmp.path().join(format!("base-{codec}"));
        util::tool(
            "skopeo",
            &[
                "copy",
                "-q",
                "--dest-compress",
                "--dest-compress-format",
                codec,
                &format!("oci:{}:1", plain.display()),
                &format!("oci:{}:1", base.display()),
            ],
        );
        let base_blobs = layout_layer_digests(&base);
        // Not what nixlayer makes of the same tars: the case at hand.
        let ours = tmp.path().join(format!("ours-{codec}"));
        build(
            &manifest,
            &ours,
            &["--format", "oci-layout", "--compression", codec],
        );
        assert_ne!(layout_layer_digests(&ours), base_blobs, "{codec}");
        let top = util::write(
            tmp.path(),
            &format!("top-{codec}.toml"),
            &format!(
                r#"name = "nixlayer-test/diff-top"
tag = "1"
created = "2024-01-01T00:00:00Z"
[base]
image = "{}"
[closure]
roots = []
[[customisation.files]]
path = "/etc/top.txt"
text = "top\n"
[output]
format = "oci-layout"
compression = "{codec}"
"#,
                base.display()
            ),
        );
        let built = tmp.path().join(format!("top-{codec}"));
        build(&top, &built, &[]);
        let top_blobs = layout_layer_digests(&built);
        assert_eq!(top_blobs[..3], base_blobs[..], "{codec}");
        // Read back whole by skopeo, every blob checked.
        util::tool(
            "skopeo",
            &[
                "copy",
                "-q",
                &format!("oci:{}:1", built.display()),
                &format!(
                    "oci:{}:1",
                    tmp.path().join(format!("copy-{codec}")).display()
                ),
            ],
        );
        for (old, new) in [(&base, &built), (&base, &top), (&top, &built)] {
            let doc = diff_json(old, new);
            assert_eq!(
                doc["layers"]["kept_other_blob"],
                serde_json::json!([]),
                "{codec}: {doc}"
            );
        }
        // Uncompressed, the tars are the blobs, whatever the base's.
        let plain_top = tmp.path().join(format!("top-{codec}-plain"));
        build(&top, &plain_top, &["--compression", "none"]);
        let plain_blobs = layout_layer_digests(&plain_top);
        assert_eq!(
            plain_blobs[..3],
            layout_layer_digests(&plain)[..],
            "{codec}"
        );
    }
}

/// Runs `cmd` with `bytes` written to its stdin through a pipe; asserts
/// its exit code.
fn run_piped(cmd: &mut Command, bytes: Vec<u8>, code: i32) -> std::process::Output {
    use std::io::Write as _;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // A reader that stops early closes the pipe: not a failure here.
    let writer = std::thread::spawn(move || drop(stdin.write_all(&bytes)));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `-` is an archive on stdin, as `docker load` and skopeo read it:
/// plain or compressed, through a pipe or redirected from a file, for
/// `inspect` and either side of `diff` (`-:NAME` picks one of its
/// images). It was a file named `-` ("failed to read `-`"), and a plain
/// archive through `/dev/stdin` was refused as read out of order.
#[test]
fn diff_and_inspect_read_an_archive_from_stdin() {
    let tmp = util::temp_dir();
    let manifest = example(&tmp.path().join("m"), "auto", false);
    let changed = example(&tmp.path().join("c"), "auto", true);
    let tar = tmp.path().join("image.tar");
    let gz = tmp.path().join("image.tar.gz");
    let new = tmp.path().join("new.tar");
    build(&manifest, &tar, &[]);
    build(&manifest, &gz, &["--compression", "gzip"]);
    build(&changed, &new, &[]);
    let inspect = |path: &Path| {
        let out = run(nixlayer().arg("inspect").arg(path).arg("--json"), 0);
        let mut doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["path"] = Value::Null;
        doc
    };
    for archive in [&tar, &gz] {
        let bytes = std::fs::read(archive).unwrap();
        let out = run_piped(
            nixlayer().args(["inspect", "-", "--json"]),
            bytes.clone(),
            0,
        );
        let mut doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(doc["path"], "-");
        doc["path"] = Value::Null;
        assert_eq!(doc, inspect(archive));
        // Redirected from the file: read in place.
        let out = run(
            nixlayer()
                .args(["inspect", "-", "--json"])
                .stdin(std::fs::File::open(archive).unwrap()),
            0,
        );
        let mut doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        doc["path"] = Value::Null;
        assert_eq!(doc, inspect(archive));
        // Either side of a diff.
        let out = run_piped(
            nixlayer().arg("diff").arg("-").arg(&new).arg("--json"),
            bytes.clone(),
            0,
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ids(&doc, "added").len(), 1, "{doc}");
        assert_eq!(ids(&doc, "dropped").len(), 1, "{doc}");
        let out = run_piped(
            nixlayer()
                .arg("diff")
                .arg("--json")
                .arg("--")
                .arg(&new)
                .arg("-:nixlayer-test/diff:1"),
            bytes,
            0,
        );
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ids(&doc, "added").len(), 1, "{doc}");
    }
    // Not an archive, nothing, or both sides: one clear error each.
    let out = run_piped(nixlayer().args(["inspect", "-"]), b"garbage\n".to_vec(), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`-` is not a valid tar"), "{stderr}");
    let out = run_piped(nixlayer().args(["inspect", "-"]), Vec::new(), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("`-` is not a docker-archive"), "{stderr}");
    let out = run_piped(nixlayer().args(["diff", "-", "-"]), Vec::new(), 2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not both"), "{stderr}");
    // The password would take the image's bytes.
    let out = run_piped(
        nixlayer()
            .args(["diff", "-", "--password-stdin", "--username", "u"])
            .arg(&new),
        std::fs::read(&tar).unwrap(),
        2,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot share stdin"), "{stderr}");
}
