//! The fast paths of `build` keep the bytes: layers hashed ahead on a
//! helper thread, diff_ids reused from the layer cache without hashing
//! (and never once the store changed), and OCI blobs compressed several at
//! once: every output is the same whatever the thread count and whether
//! the cache was cold or warm.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use nixlayer::archive::ImageArchive;
use nixlayer::oci::Digest;

use crate::util::{self, nixlayer, run};

/// A copy of the example's store (three store paths) under `dir`, and a
/// manifest building it with two store layers and a customisation layer.
fn example_copy(dir: &Path) -> (PathBuf, PathBuf) {
    let repo = util::repo();
    let store = dir.join("store");
    let status = Command::new("cp")
        .arg("-a")
        .arg(repo.join("fixtures/example/store"))
        .arg(&store)
        .status()
        .expect("cp");
    assert!(status.success());
    let manifest = util::write(
        dir,
        "image.toml",
        &format!(
            r#"name = "nixlayer-test/throughput"
tag = "1"
created = "2024-01-01T00:00:00Z"
max_layers = 3

{closure}
[[customisation.files]]
path = "/etc/motd"
text = "hello"
"#,
            closure = crate::support::example_closure(&store),
        ),
    );
    (store, manifest)
}

/// `nixlayer build MANIFEST ARGS… -o OUT` with the layer cache under `xdg`.
fn build(manifest: &Path, xdg: &Path, out: &Path, args: &[&str]) {
    run(
        nixlayer()
            .env("XDG_CACHE_HOME", xdg)
            .arg("build")
            .arg(manifest)
            .args(args)
            .arg("-o")
            .arg(out),
        0,
    );
}

/// Changes the first byte of `file` (the same size) and puts its
/// modification time back: only the change time (and the bytes) tell.
fn edit_in_place(file: &Path) {
    let mtime = std::fs::metadata(file).unwrap().modified().unwrap();
    let mut bytes = std::fs::read(file).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(file, &bytes).unwrap();
    std::fs::File::options()
        .write(true)
        .open(file)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

/// Each layer's diff_id as the image's config says, and the sha256 of the
/// layer's bytes as they are in the archive.
fn diff_ids_said_and_found(archive: &Path) -> Vec<(Digest, Digest)> {
    let archive = ImageArchive::open(archive).expect("open the archive");
    let image = &archive.images()[0];
    image
        .layers
        .iter()
        .map(|layer| {
            let mut bytes = Vec::new();
            archive
                .open_layer(layer)
                .expect("open a layer")
                .read_to_end(&mut bytes)
                .expect("read a layer");
            (layer.diff_id.expect("a diff_id"), Digest::of(&bytes))
        })
        .collect()
}

/// The layer cache's records (`{"tar": …, "blobs": …}`), by entry name.
fn cache_records(xdg: &Path) -> BTreeMap<String, serde_json::Value> {
    let dir = xdg.join("nixlayer/layers");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return BTreeMap::new();
    };
    entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let text = std::fs::read(&p).unwrap();
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                serde_json::from_slice(&text).unwrap(),
            )
        })
        .collect()
}

/// A docker-archive build files each store layer's diff_id in the cache;
/// the next build streams those layers without hashing them and writes the
/// same bytes; after a file of the store is edited in place (same size,
/// same mtime), the next build does not take the stale diff_id: every
/// diff_id in its config is the hash of the layer it names, and its bytes
/// are those of a build without the cache.
#[test]
fn a_warm_docker_archive_is_the_cold_one_and_a_store_edit_is_never_served_stale() {
    let tmp = util::temp_dir();
    let (store, manifest) = example_copy(tmp.path());
    let xdg = tmp.path().join("xdg");
    let (cold, warm) = (tmp.path().join("cold.tar"), tmp.path().join("warm.tar"));
    build(&manifest, &xdg, &cold, &[]);
    let records = cache_records(&xdg);
    let tars = records.values().filter(|r| r["tar"].is_object()).count();
    assert_eq!(tars, 2, "one diff_id per store layer filed: {records:?}");
    build(&manifest, &xdg, &warm, &[]);
    assert!(
        std::fs::read(&cold).unwrap() == std::fs::read(&warm).unwrap(),
        "the warm build differs from the cold one"
    );
    assert_eq!(
        cache_records(&xdg),
        records,
        "a warm build files nothing new"
    );

    // Same size, and the modification time put back: only the change time
    // (and the bytes) tell.
    let file = store
        .join("nix/store/7nfhipmb7k7l7rfafbnansncz9730ygj-example-greeting-1.0/share/greeting.txt");
    edit_in_place(&file);
    let edited = tmp.path().join("edited.tar");
    build(&manifest, &xdg, &edited, &[]);
    for (said, found) in diff_ids_said_and_found(&edited) {
        assert_eq!(
            said, found,
            "a layer's diff_id is not the hash of its bytes"
        );
    }
    let uncached = tmp.path().join("uncached.tar");
    build(&manifest, &xdg, &uncached, &["--no-cache"]);
    let edited = std::fs::read(&edited).unwrap();
    assert!(
        edited == std::fs::read(&uncached).unwrap(),
        "the build after the edit differs from one without the cache"
    );
    assert!(
        edited != std::fs::read(&cold).unwrap(),
        "the edit did not reach the image"
    );
}

/// Every regular file under `dir`, by relative path, with its bytes.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().to_owned();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// The same bytes whatever the thread count (layers hashed ahead or not,
/// OCI blobs compressed one or several at a time) and whether the layer
/// cache was empty or full: docker-archives, and OCI layouts with zstd and
/// gzip.
#[test]
fn outputs_do_not_depend_on_threads_or_the_cache() {
    let tmp = util::temp_dir();
    let (_, manifest) = example_copy(tmp.path());
    let mut n = 0;
    let mut fresh = |what: &str| {
        n += 1;
        tmp.path().join(format!("{what}-{n}"))
    };
    // Docker-archives: cold with 1, 2 and 4 threads, then warm.
    let xdg = fresh("xdg");
    let mut archives = Vec::new();
    for threads in ["1", "2", "4", "2"] {
        let cold_xdg = fresh("xdg");
        let out = fresh("archive.tar");
        build(&manifest, &cold_xdg, &out, &["--threads", threads]);
        archives.push(std::fs::read(&out).unwrap());
        let out = fresh("archive.tar");
        build(&manifest, &xdg, &out, &["--threads", threads]);
        archives.push(std::fs::read(&out).unwrap());
    }
    assert!(archives.len() == 8 && archives.iter().all(|a| *a == archives[0]));
    for codec in ["zstd", "gzip"] {
        let xdg = fresh("xdg");
        let mut layouts = Vec::new();
        for threads in ["1", "2", "3", "4"] {
            let out = fresh("layout");
            let args = [
                "--format",
                "oci-layout",
                "--compression",
                codec,
                "--threads",
                threads,
            ];
            build(&manifest, &fresh("xdg"), &out, &args);
            layouts.push(tree(&out));
            // Into a fresh layout with the shared cache too.
            let out = fresh("layout");
            build(&manifest, &xdg, &out, &args);
            layouts.push(tree(&out));
        }
        assert!(layouts[0].len() >= 6, "{codec}: {:?}", layouts[0].keys());
        for (i, layout) in layouts.iter().enumerate() {
            assert!(*layout == layouts[0], "{codec}: layout {i} differs");
        }
    }
}

/// An `exportReferencesGraph` entry (sizes and hash made up: only the
/// references matter for planning).
fn graph_entry(path: &str, references: &[String]) -> serde_json::Value {
    serde_json::json!({
        "path": path,
        "narHash": format!("sha256:{}", "0".repeat(52)),
        "narSize": 1200,
        "closureSize": 1200,
        "references": references,
    })
}

/// A store of twelve small store paths and a large one that comes first,
/// under a root referring to them all: thirteen store layers, the first
/// slow to compress.
fn many_layers(dir: &Path) -> PathBuf {
    const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    let store = dir.join("store");
    let mut graph = Vec::new();
    let mut leaves = Vec::new();
    for i in 0..12 {
        let c = &HASH[i..=i];
        let path = format!("/nix/store/{}-leaf-{i}", c.repeat(32));
        let disk = store.join(&path[1..]);
        std::fs::create_dir_all(&disk).unwrap();
        let data = if i == 0 {
            // About 1 MB of words and numbers: slow at zstd level 19.
            let mut out = Vec::new();
            let mut x: u32 = 1;
            while out.len() < 1_000_000 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let word = ["nix", "store", "layer", "/bin/", "\n"][(x >> 16) as usize % 5];
                out.extend_from_slice(word.as_bytes());
                out.extend_from_slice((x % 9973).to_string().as_bytes());
            }
            out
        } else {
            vec![b'x'; 1000]
        };
        std::fs::write(disk.join("data"), &data).unwrap();
        graph.push(graph_entry(&path, &[]));
        leaves.push(path);
    }
    let top = format!("/nix/store/{}-top", "z".repeat(32));
    std::fs::create_dir_all(store.join(&top[1..])).unwrap();
    std::fs::write(store.join(&top[1..]).join("t"), b"t").unwrap();
    graph.push(graph_entry(&top, &leaves));
    std::fs::write(dir.join("graph.json"), serde_json::to_vec(&graph).unwrap()).unwrap();
    util::write(
        dir,
        "many.toml",
        &format!(
            r#"name = "nixlayer-test/many-layers"
tag = "1"
[store]
root = "{store}"
[closure]
roots = ["{top}"]
source = {{ graph = "{graph}" }}
"#,
            store = store.display(),
            graph = dir.join("graph.json").display(),
        ),
    )
}

/// Layers written two at a time are committed in layer order even when
/// the first takes longer than several after it (which then wait, written,
/// for their turn): the layout is the one a single thread writes.
#[test]
fn a_slow_first_layer_does_not_lose_the_ones_written_after_it() {
    let tmp = util::temp_dir();
    let manifest = many_layers(tmp.path());
    let mut layouts = Vec::new();
    for threads in ["1", "2"] {
        let out = tmp.path().join(format!("layout-{threads}"));
        let args = [
            "--format",
            "oci-layout",
            "--compression",
            "zstd",
            "--level",
            "19",
            "--no-cache",
            "--threads",
            threads,
        ];
        build(&manifest, &tmp.path().join("xdg"), &out, &args);
        layouts.push(tree(&out));
    }
    // 13 layers, a config, a manifest, `index.json` and `oci-layout`.
    assert_eq!(layouts[0].len(), 17, "{:?}", layouts[0].keys());
    assert!(layouts[0] == layouts[1], "2 threads differ from 1");
}

/// The same for the machine's own Nix store, whose layer-cache stamps can
/// rest on a path's registration in the Nix database (no walk): a
/// docker-archive, which streams cached diff_ids without hashing, still
/// stamps every entry, so a file edited inside a registered path (behind
/// Nix's back, same size and mtime) is never served under the stale
/// diff_id.
#[test]
fn an_edit_inside_a_registered_store_path_is_never_served_stale() {
    if !util::require_tool("nix-store") {
        return;
    }
    let tmp = util::temp_dir();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let src = tmp.path().join("nixlayer-edit-test");
    std::fs::create_dir_all(src.join("share")).unwrap();
    std::fs::write(src.join("share/msg"), format!("hello {nonce}\n")).unwrap();
    let added = util::tool("nix-store", &["--add", src.to_str().unwrap()]);
    let path = String::from_utf8(added).unwrap().trim().to_owned();
    // Removed however the test ends.
    struct Delete(String);
    impl Drop for Delete {
        fn drop(&mut self) {
            let _ = Command::new("nix-store")
                .args(["--delete", &self.0])
                .output();
        }
    }
    let _delete = Delete(path.clone());
    let manifest = util::write(
        tmp.path(),
        "image.toml",
        &format!(
            "name = \"nixlayer-test/live-edit\"\ntag = \"1\"\n[closure]\nroots = [\"{path}\"]\n\
             [[customisation.files]]\npath = \"/etc/motd\"\ntext = \"hello\"\n"
        ),
    );
    let xdg = tmp.path().join("xdg");
    let (cold, warm) = (tmp.path().join("cold.tar"), tmp.path().join("warm.tar"));
    build(&manifest, &xdg, &cold, &[]);
    build(&manifest, &xdg, &warm, &[]);
    assert!(std::fs::read(&cold).unwrap() == std::fs::read(&warm).unwrap());

    edit_in_place(&Path::new(&path).join("share/msg"));
    let edited = tmp.path().join("edited.tar");
    build(&manifest, &xdg, &edited, &[]);
    for (said, found) in diff_ids_said_and_found(&edited) {
        assert_eq!(
            said, found,
            "a layer's diff_id is not the hash of its bytes"
        );
    }
}

/// A store edited after the image was measured and before the layer's
/// bytes are read: the walk that measured the layer stamped it, the layer
/// cache knows a diff_id under those stamps, and the stream sees other
/// metadata for the edited file (taken after it was read). The build is
/// refused with `Modified` rather than the cached diff_id put over the
/// edited bytes. With an empty cache (layers hashed as they stream, or
/// ahead by the helper thread, whose walk must see the stamps from
/// before too) the build is refused the same way or its diff_ids are the
/// hashes of its bytes.
#[test]
fn an_edit_between_measuring_and_streaming_is_refused() {
    use nixlayer::manifest::LoadedManifest;
    use nixlayer::ops::settings::{self, Environment, Overrides};
    use nixlayer::ops::{self, NoReporter};
    use nixlayer::sink::docker_archive::DockerArchiveWriter;

    for warm in [true, false] {
        let tmp = util::temp_dir();
        let (store, manifest) = example_copy(tmp.path());
        let xdg = tmp.path().join("xdg");
        if warm {
            // Fills the layer cache with every store layer's diff_id.
            build(&manifest, &xdg, &tmp.path().join("cold.tar"), &[]);
        }
        let loaded = LoadedManifest::load(&manifest).unwrap();
        let env = Environment {
            now: jiff::Timestamp::UNIX_EPOCH,
            source_date_epoch: None,
            cache_dir: Some(xdg.join("nixlayer/layers")),
            binary_cache: Default::default(),
        };
        let mut overrides = Overrides::default();
        overrides.threads = std::num::NonZeroUsize::new(2);
        let resolved = settings::resolve_build(&loaded, &overrides, &env).unwrap();
        let image = ops::prepare(&resolved.settings).unwrap();
        let greeting = "nix/store/7nfhipmb7k7l7rfafbnansncz9730ygj-example-greeting-1.0";
        edit_in_place(&store.join(greeting).join("share/greeting.txt"));
        let sink =
            DockerArchiveWriter::new(Vec::new(), resolved.settings.mtime, &resolved.compress)
                .unwrap();
        match ops::build(&resolved.settings, &image, sink, &NoReporter) {
            Err(ops::Error::Layer(nixlayer::layer::Error::Modified { path })) => {
                assert_eq!(path, store.join(greeting));
            }
            Err(other) => panic!("expected Modified, got {other}"),
            Ok(_) if warm => panic!("an edit after the layer was measured and stamped went by"),
            Ok((_, bytes)) => {
                let out = tmp.path().join("edited.tar");
                std::fs::write(&out, bytes).unwrap();
                for (said, found) in diff_ids_said_and_found(&out) {
                    assert_eq!(said, found, "a diff_id is not the hash of its layer");
                }
            }
        }
    }
}
