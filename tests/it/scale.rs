//! Scale (issue 15): a 10,000-path closure 10,000 references deep is
//! planned and built with the main thread's stack at 512 KiB and every other's at 256 KiB, and the scale
//! benchmark's generator (`fixtures/scale/generate.py`) writes the NAR
//! hashes and sizes Nix computes for its store.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::util::{self, nixlayer, run};

/// Paths in the chain.
const CHAIN: usize = 10_000;

/// A valid store path for `i`: its hash part is `i` in nixbase32 digits.
fn store_path(i: usize) -> String {
    const DIGITS: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut hash = [b'0'; 32];
    let mut n = i;
    for c in hash.iter_mut().rev() {
        *c = DIGITS[n % 32];
        n /= 32;
    }
    format!(
        "/nix/store/{}-chain-{i}",
        std::str::from_utf8(&hash).unwrap()
    )
}

/// Writes the chain under `dir`: `store/` (each path one small file) and
/// `graph.json` (path `i` references `i + 1`, the last path, as every
/// path references libc, and some themselves).
fn write_chain(dir: &Path) {
    let mut graph = String::from("[\n");
    for i in 0..CHAIN {
        let path = store_path(i);
        let mut references = Vec::new();
        if i + 1 < CHAIN {
            references.push(store_path(i + 1));
        }
        if i + 2 < CHAIN {
            references.push(store_path(CHAIN - 1));
        }
        if i % 3 == 0 {
            references.push(path.clone());
        }
        let references: Vec<String> = references.iter().map(|r| format!("\"{r}\"")).collect();
        let _ = writeln!(
            graph,
            "{{\"path\": \"{path}\", \"narHash\": \"sha256:{hash}\", \"narSize\": {size}, \"references\": [{refs}]}}{comma}",
            hash = "0".repeat(52),
            size = 200 + i % 7 * 1000,
            refs = references.join(", "),
            comma = if i + 1 < CHAIN { "," } else { "" },
        );
        let on_disk = dir.join("store").join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&on_disk).unwrap();
        std::fs::write(on_disk.join("file"), format!("{i}\n")).unwrap();
    }
    graph.push_str("]\n");
    util::write(dir, "graph.json", &graph);
}

/// A manifest of the chain with `layering` as given and the Nix database
/// in the image.
fn write_manifest(dir: &Path, layering: &str) -> std::path::PathBuf {
    util::write(
        dir,
        "image.toml",
        &format!(
            "name = \"scale/chain\"\ntag = \"1\"\n\
             [store]\nroot = \"store\"\n\
             [closure]\nroots = [\"{root}\"]\nsource = {{ graph = \"graph.json\" }}\ninclude_nix_db = true\n\
             [layering]\n{layering}\n",
            root = store_path(0)
        ),
    )
}

/// `nixlayer ARGS…` with the main thread's stack limited to 512 KiB
/// (`ulimit -s`) and every other thread's to 256 KiB (`RUST_MIN_STACK`): a
/// recursion one frame per path of the chain needs megabytes. (The main
/// thread gets more: a debug build's clap parser alone takes about 300 KiB
/// of it, whatever the graph.)
fn small_stack(args: &[&str]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -s 512 && exec \"$0\" \"$@\"")
        .arg(nixlayer().get_program())
        .args(args)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .env("RUST_MIN_STACK", "262144")
        .env_remove("SOURCE_DATE_EPOCH")
        // A private layer cache: this image is of no use to other tests.
        .env(
            "XDG_CACHE_HOME",
            util::repo().join("target/test-cache/scale"),
        );
    cmd
}

/// Every strategy, and pipeline steps that walk the graph, plan the
/// 10,000-deep chain on a small stack, and `build` writes its image.
#[test]
fn a_10000_path_chain_plans_and_builds_on_a_small_stack() {
    let dir = util::temp_dir();
    let root = store_path(0);
    let middle = store_path(CHAIN / 2);
    write_chain(dir.path());
    for (layering, layers) in [
        ("strategy = \"auto\"", None),
        ("strategy = \"popularity\"", Some(99)),
        (
            &*format!(
                "pipeline = [[\"subcomponent_in\", [\"{middle}\"]], [\"over\", \"main\", [\"popularity_contest\"]], \
                 [\"over\", \"rest\", [\"split_paths\", [\"{root}\"]]], [\"flatten\"], [\"limit_layers\", 40]]"
            ),
            Some(40),
        ),
    ] {
        let manifest = write_manifest(dir.path(), layering);
        let manifest = manifest.to_str().unwrap();
        let out = run(&mut small_stack(&["layers", manifest, "--json"]), 0);
        let plan: Vec<Vec<String>> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            plan.iter().map(Vec::len).sum::<usize>(),
            CHAIN,
            "{layering}"
        );
        if let Some(n) = layers {
            assert_eq!(plan.len(), n, "{layering}");
        }
        assert!(plan.len() <= 99, "{layering}: {} layers", plan.len());
    }
    // The last manifest written: build it, Nix database and all.
    let manifest = dir.path().join("image.toml");
    let image = dir.path().join("image.tar");
    run(
        &mut small_stack(&[
            "build",
            "-q",
            manifest.to_str().unwrap(),
            "-o",
            image.to_str().unwrap(),
        ]),
        0,
    );
    let out = run(nixlayer().arg("inspect").arg(&image).arg("--json"), 0);
    let inspect: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // 40 store layers and the customisation layer (the Nix database).
    assert_eq!(
        inspect["images"][0]["layers"].as_array().map(Vec::len),
        Some(41),
        "{inspect}"
    );
}

/// The generator's graph gives each path the NAR hash and size of what it
/// wrote (checked with Nix's own `nix-hash` and `nix-store --dump` on a few
/// paths), a deep chain, and a manifest that builds.
#[test]
fn the_scale_generator_writes_what_nix_hashes() {
    if !util::require_tool("python3") || !util::require_tool("nix-hash") {
        return;
    }
    let dir = util::temp_dir();
    let out = dir.path().join("scale");
    run(
        Command::new("python3")
            .arg(util::repo().join("fixtures/scale/generate.py"))
            .arg(&out)
            .args(["--scale", "0.01", "--bytes", "3000000"]),
        0,
    );
    let graph: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("graph.json")).unwrap()).unwrap();
    assert_eq!(graph.len(), 100);
    for entry in graph.iter().step_by(33) {
        let path = entry["path"].as_str().unwrap();
        let on_disk = out.join("store").join(path.trim_start_matches('/'));
        let hash = util::tool(
            "nix-hash",
            &["--type", "sha256", "--base32", on_disk.to_str().unwrap()],
        );
        assert_eq!(
            entry["narHash"].as_str().unwrap(),
            format!("sha256:{}", String::from_utf8_lossy(&hash).trim()),
            "{path}"
        );
        let nar = util::tool("nix-store", &["--dump", on_disk.to_str().unwrap()]);
        assert_eq!(entry["narSize"].as_u64(), Some(nar.len() as u64), "{path}");
    }
    // Path 0 is the root; 0 → 1 → … → 50 is a chain.
    let references = |i: usize| -> Vec<String> {
        let entry = graph
            .iter()
            .find(|e| {
                e["path"]
                    .as_str()
                    .unwrap()
                    .ends_with(&format!("-scale-{i}"))
            })
            .unwrap();
        serde_json::from_value(entry["references"].clone()).unwrap()
    };
    for i in 0..50 {
        assert!(
            references(i)
                .iter()
                .any(|r| r.ends_with(&format!("-scale-{}", i + 1))),
            "{i}"
        );
    }
    let image = dir.path().join("image.tar");
    run(
        nixlayer()
            .arg("build")
            .arg("-q")
            .arg(out.join("image.toml"))
            .arg("-o")
            .arg(&image),
        0,
    );
    let paths = String::from_utf8(
        run(
            nixlayer()
                .arg("layers")
                .arg(out.join("image.toml"))
                .arg("--json"),
            0,
        )
        .stdout,
    )
    .unwrap();
    let plan: Vec<Vec<String>> = serde_json::from_str(&paths).unwrap();
    assert_eq!(plan.iter().map(Vec::len).sum::<usize>(), 100);
}
