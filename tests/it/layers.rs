//! `nixlayer layers`: the plan of the example and of real `nix-build`
//! closures as a table and as nixpkgs' JSON, the auto strategy within its
//! budget, and malformed pipelines reported at the manifest's line.

use std::collections::BTreeSet;
use std::path::Path;

use crate::util::{self, nixlayer, run};

/// `nixlayer layers MANIFEST [--json]`, exit 0, stdout.
fn layers(manifest: &Path, json: bool) -> String {
    let mut cmd = nixlayer();
    cmd.arg("layers").arg(manifest);
    if json {
        cmd.arg("--json");
    }
    String::from_utf8(run(&mut cmd, 0).stdout).unwrap()
}

fn parse_json(text: &str) -> Vec<Vec<String>> {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The example's closure (`fixtures/example/graph.json`):
///
/// ```text
/// example-app-0.3 ──► example-site-2.1 ──► example-greeting-1.0
///        └─► itself (bin/hello names its own etc/hello.conf)
/// ```
#[test]
fn the_example_as_a_table_and_as_json() {
    let manifest = util::repo().join("manifests/example.toml");
    let json = layers(&manifest, true);
    // nixpkgs: json.dumps(indent=2, separators=(",", ": ")), then a newline.
    assert_eq!(
        json,
        "[\n  [\n    \"/nix/store/7nfhipmb7k7l7rfafbnansncz9730ygj-example-greeting-1.0\"\n  ],\n  [\n    \"/nix/store/2jwagnlndazr95zyyns02ih462kl82h1-example-site-2.1\"\n  ],\n  [\n    \"/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3\"\n  ]\n]\n"
    );
    let table = layers(&manifest, false);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines[0], "layer  paths  bytes  path");
    assert_eq!(
        lines[1],
        "    1      1    488  /nix/store/7nfhipmb7k7l7rfafbnansncz9730ygj-example-greeting-1.0"
    );
    assert_eq!(lines.len(), 6, "{table}");
    assert_eq!(lines[4], "3 store layers, 3 paths, 5096 bytes (5.0 KiB)");
    // No `[layering]`: current nixpkgs' default, and the table says so.
    assert_eq!(
        lines[5],
        "layering: auto-layer: nixpkgs' current default (streamLayeredImage with layeringPipeline unset, PR #355189)"
    );
}

/// Without `[layering]` the plan is the auto strategy's (nixpkgs PR
/// #355189), `strategy = "popularity"` gives the earlier default, and the
/// table names which one it followed.
#[test]
fn the_default_is_auto_and_popularity_is_one_line_away() {
    let Some(root) = util::nix_fixture("golden") else {
        return;
    };
    let tmp = util::temp_dir();
    let plan = |layering: &str| {
        let m = manifest(tmp.path(), &root, layering);
        (layers(&m, true), layers(&m, false))
    };
    let (default_json, default_table) = plan("");
    let (auto_json, _) = plan("[layering]\nstrategy = \"auto\"");
    let (popularity_json, popularity_table) = plan("[layering]\nstrategy = \"popularity\"");
    assert_eq!(default_json, auto_json);
    assert_ne!(
        default_json, popularity_json,
        "the fixture must tell the strategies apart"
    );
    assert!(default_table.ends_with("PR #355189)\n"), "{default_table}");
    assert!(
        popularity_table
            .lines()
            .last()
            .unwrap()
            .starts_with("layering: popularity: nixpkgs' default before PR #355189"),
        "{popularity_table}"
    );
}

/// A manifest for the root `root` of a real closure (read with `nix-store`).
fn manifest(dir: &Path, root: &Path, layering: &str) -> std::path::PathBuf {
    util::write(
        dir,
        "image.toml",
        &format!(
            "name = \"nixlayer-test/layers\"\nmax_layers = 3\n[closure]\nroots = [\"{}\"]\n{layering}\n",
            root.display()
        ),
    )
}

/// The closure of `root` by `nix-store`, and each path's narSize.
fn real_closure(root: &Path) -> (BTreeSet<String>, std::collections::BTreeMap<String, u64>) {
    let root = root.display().to_string();
    let paths: BTreeSet<String> = String::from_utf8(util::nix("nix-store", &["-qR", &root]))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let sizes = paths
        .iter()
        .map(|p| {
            let size = String::from_utf8(util::nix("nix-store", &["-q", "--size", p])).unwrap();
            (p.clone(), size.trim().parse().unwrap())
        })
        .collect();
    (paths, sizes)
}

/// Every path of the closure exactly once, no empty layer.
fn assert_partition(layers: &[Vec<String>], closure: &BTreeSet<String>) {
    let mut seen = BTreeSet::new();
    for layer in layers {
        assert!(!layer.is_empty());
        for p in layer {
            assert!(seen.insert(p.clone()), "{p} twice");
        }
    }
    assert_eq!(&seen, closure);
}

/// The golden store of `fixtures/golden/tar/store.nix`: six paths, more
/// than the budget of two store layers (`max_layers = 3`).
#[test]
fn a_real_closure_within_budget_under_both_strategies() {
    let Some(root) = util::nix_fixture("golden") else {
        return;
    };
    let (closure, sizes) = real_closure(&root);
    assert!(closure.len() > 2);
    let tmp = util::temp_dir();
    for layering in [
        "",
        "[layering]\nstrategy = \"popularity\"",
        "[layering]\nstrategy = \"auto\"",
    ] {
        let m = manifest(tmp.path(), &root, layering);
        let plan = parse_json(&layers(&m, true));
        assert!(plan.len() <= 2, "{layering}: {plan:?}");
        assert_partition(&plan, &closure);
        // Deterministic.
        assert_eq!(parse_json(&layers(&m, true)), plan);

        // The table shows the same layers, each with Σ narSize.
        let table = layers(&m, false);
        let mut rows = table.lines().skip(1);
        for (i, layer) in plan.iter().enumerate() {
            let bytes: u64 = layer.iter().map(|p| sizes[p]).sum();
            for (j, path) in layer.iter().enumerate() {
                let row: Vec<&str> = rows.next().unwrap().split_whitespace().collect();
                if j == 0 {
                    assert_eq!(
                        row,
                        [
                            &(i + 1).to_string(),
                            &layer.len().to_string(),
                            &bytes.to_string(),
                            path.as_str()
                        ]
                    );
                } else {
                    assert_eq!(row, [path.as_str()]);
                }
            }
        }
        let total: u64 = sizes.values().sum();
        assert!(
            rows.next()
                .unwrap()
                .contains(&format!("{} paths, {total} bytes", closure.len())),
            "{table}"
        );
    }
}

/// The default layering of the `hello` fixture: the same plan as the
/// explicit nixpkgs default pipeline.
///
/// ```text
/// hello-app-1.0 ──► busybox-static-1.35
///       └─────────► greeting-1.0
/// ```
#[test]
fn the_default_is_the_popularity_pipeline() {
    let Some(root) = util::nix_fixture("hello") else {
        return;
    };
    let (closure, _) = real_closure(&root);
    let tmp = util::temp_dir();
    let default = parse_json(&layers(&manifest(tmp.path(), &root, ""), true));
    let explicit = parse_json(&layers(
        &manifest(
            tmp.path(),
            &root,
            "[layering]\npipeline = [[\"popularity_contest\"], [\"limit_layers\", 2]]",
        ),
        true,
    ));
    assert_eq!(default, explicit);
    assert_partition(&default, &closure);
    // The root is the least popular: in the last, merged layer.
    assert!(default
        .last()
        .unwrap()
        .contains(&root.display().to_string()));
}

/// The example manifest with `pipeline` as its last line (line 18).
fn with_pipeline(pipeline: &str) -> String {
    let store = util::repo().join("fixtures/example/store");
    let graph = util::repo().join("fixtures/example/graph.json");
    format!(
        "name = \"x\"\n[store]\nroot = \"{}\"\n[closure]\nroots = [\"/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3\"]\nsource = {{ graph = \"{}\" }}\n[layering]\npipeline = {pipeline}\n",
        store.display(),
        graph.display()
    )
}

/// `layers` and `build` both fail with exit 1, one error naming
/// `image.toml:8` and containing `says`, no panic.
fn fails(pipeline: &str, says: &[&str]) {
    let tmp = util::temp_dir();
    let m = util::write(tmp.path(), "image.toml", &with_pipeline(pipeline));
    for args in [vec!["layers"], vec!["build", "-o"]] {
        let mut cmd = nixlayer();
        cmd.arg(args[0]).arg(&m);
        if args.len() > 1 {
            cmd.arg(args[1]).arg(tmp.path().join("out.tar"));
        }
        let out = run(&mut cmd, 1);
        let stderr = String::from_utf8(out.stderr).unwrap();
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{stderr}");
        assert!(first.contains("image.toml:8:12: "), "{stderr}");
        for s in says {
            assert!(first.contains(s), "should say `{s}`:\n{stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty());
        assert!(!tmp.path().join("out.tar").exists());
    }
}

#[test]
fn malformed_pipelines_name_the_manifest_line() {
    // An unknown operation lists the valid ones.
    fails(
        r#"[["popularity"]]"#,
        &[
            "unknown operation `popularity`",
            "subcomponent_in",
            "reorder",
        ],
    );
    // Wrong arguments say which operation and what it takes.
    fails(
        r#"[["split_every", "3"]]"#,
        &["`split_every` takes one whole number ≥ 1", "got `\"3\"`"],
    );
    fails(
        r#"[["over", "main"]]"#,
        &["`over` takes a key (`main`, `common` or `rest`) and one step"],
    );
    fails(
        r#"[["popularity_contest"], ["limit_layers", 0]]"#,
        &["step 2", "`limit_layers`", "got `0`"],
    );
    // At run time: `over` a key the dict lacks names the keys present.
    fails(
        r#"[["split_paths", ["/nix/store/7nfhipmb7k7l7rfafbnansncz9730ygj-example-greeting-1.0"]], ["over", "common", ["popularity_contest"]]]"#,
        &["`over` found no `common`", "it has `main`, `rest`"],
    );
    // A step given the wrong kind of value.
    fails(
        r#"[["limit_layers", 2]]"#,
        &["`limit_layers` needs a list of graphs, got a graph"],
    );
    fails(
        r#"[["popularity_contest", 1]]"#,
        &["`popularity_contest` takes no arguments"],
    );
}

/// `--html FILE`: one self-contained page, a row per layer holding every
/// store path of the example's plan; written atomically, same bytes twice.
#[test]
fn the_example_as_an_html_page() {
    let manifest = util::repo().join("manifests/example.toml");
    let tmp = util::temp_dir();
    let page = tmp.path().join("plan.html");
    let out = run(
        nixlayer()
            .arg("layers")
            .arg(&manifest)
            .arg("--html")
            .arg(&page),
        0,
    );
    assert!(out.stdout.is_empty(), "the page goes to the file only");
    let html = std::fs::read_to_string(&page).unwrap();
    assert!(html.starts_with("<!doctype html>"), "{html}");
    assert!(html.trim_end().ends_with("</html>"));
    for path in parse_json(&layers(&manifest, true)).concat() {
        assert_eq!(html.matches(&format!("<li>{path}<")).count(), 1, "{path}");
    }
    assert_eq!(html.matches("<tr id=\"layer-").count(), 3);
    assert!(html.contains("<title>Layer plan of nixlayer/example:0.3</title>"));
    // Self-contained: no script, no link, no URL of any kind.
    for external in ["http:", "https:", "//", "<script", "<link", "src=", "url("] {
        assert!(!html.contains(external), "`{external}` in the page");
    }
    // Nothing but the page is left in the directory, and it is stable.
    let files: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert_eq!(files.len(), 1);
    run(
        nixlayer()
            .arg("layers")
            .arg(&manifest)
            .arg("--html")
            .arg(&page),
        0,
    );
    assert_eq!(std::fs::read_to_string(&page).unwrap(), html);
    // `--json` and `--html` are two outputs: a usage error together.
    run(
        nixlayer()
            .arg("layers")
            .arg(&manifest)
            .args(["--json", "--html"])
            .arg(&page),
        2,
    );
    // A directory that does not exist: exit 1, the file named.
    let out = run(
        nixlayer()
            .arg("layers")
            .arg(&manifest)
            .arg("--html")
            .arg(tmp.path().join("missing/plan.html")),
        1,
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("plan.html"));
}

/// narSize comes from an untrusted file: totals past 2^64 are exact, not
/// wrapped (nor a panic).
#[test]
fn byte_totals_do_not_wrap_at_2_64() {
    let tmp = util::temp_dir();
    let text = std::fs::read_to_string(util::repo().join("fixtures/example/graph.json")).unwrap();
    let mut graph: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Every path but the app gets the largest narSize; the total is exact.
    let mut rest = 0u128;
    for info in graph.as_array_mut().unwrap() {
        if info["path"].as_str().unwrap().ends_with("-example-app-0.3") {
            rest += u128::from(info["narSize"].as_u64().unwrap());
        } else {
            info["narSize"] = serde_json::json!(u64::MAX);
        }
    }
    let graph = graph.to_string();
    util::write(tmp.path(), "graph.json", &graph);
    let manifest = util::write(
        tmp.path(),
        "image.toml",
        "name = \"x\"\n[closure]\nroots = [\"/nix/store/cbs3bw4azcdb0askdsxda760jy7w9ymr-example-app-0.3\"]\nsource = { graph = \"graph.json\" }\n",
    );
    let table = layers(&manifest, false);
    let total = u128::from(u64::MAX) * 2 + rest;
    let last = table.lines().rev().nth(1).unwrap();
    assert!(
        last.starts_with(&format!("3 store layers, 3 paths, {total} bytes")),
        "{table}"
    );
}

/// A store under `dir` with `count` one-file store paths, none referring
/// to another, described by an exportReferencesGraph file.
fn flat_store(dir: &Path, count: usize) {
    const NIX32: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let mut graph = Vec::new();
    for i in 0..count {
        // `i` in base 32, nix32 digits: a distinct valid hash per path.
        let mut hash = [b'0'; 32];
        let mut n = i;
        for digit in hash.iter_mut().rev() {
            *digit = NIX32[n % 32];
            n /= 32;
        }
        let hash = String::from_utf8(hash.to_vec()).unwrap();
        let path = format!("/nix/store/{hash}-p{i}");
        let disk = dir.join(&path[1..]);
        std::fs::create_dir_all(&disk).unwrap();
        std::fs::write(disk.join("f"), i.to_string()).unwrap();
        graph.push(serde_json::json!({
            "path": path,
            "narHash": format!("sha256:{}", "1".repeat(52)),
            "narSize": 1000 + i,
            "references": [],
        }));
    }
    std::fs::write(dir.join("graph.json"), serde_json::to_vec(&graph).unwrap()).unwrap();
}

/// A pipeline is not held to `max_layers` (as in nixpkgs), so one layer
/// per path can pass docker's 125: the build says so (docker would only
/// say "max depth exceeded" at `docker load`); at 125 it says nothing.
#[test]
fn more_layers_than_docker_loads_is_a_warning() {
    let tmp = util::temp_dir();
    flat_store(tmp.path(), 126);
    for (limit, warns) in [("", true), (", [\"limit_layers\", 125]", false)] {
        let manifest = util::write(
            tmp.path(),
            "image.toml",
            &format!(
                "name = \"nixlayer-test/deep\"\ntag = \"t\"\n[store]\nroot = \".\"\n\
                 [closure]\nroots = []\nsource = {{ graph = \"graph.json\" }}\n\
                 [layering]\npipeline = [[\"popularity_contest\"]{limit}]\n"
            ),
        );
        let out = run(
            nixlayer()
                .arg("build")
                .arg(&manifest)
                .arg("-o")
                .arg(tmp.path().join("deep.tar")),
            0,
        );
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(
            stderr.contains("docker refuses more than 125"),
            warns,
            "{limit}: {stderr}"
        );
    }
}

/// `layers --platform` plans one platform of a `[[platforms]]` manifest
/// (here the arm64 one, whose closure is the greeting alone); without it
/// the top-level platform, as before. `layers` had no `--platform`, so no
/// other platform's plan could be seen.
#[test]
fn platform_picks_the_plan_of_one_platform() {
    let tmp = util::temp_dir();
    let store = util::repo().join("fixtures/example/store");
    let graph = util::repo().join("fixtures/example/graph.json");
    let manifest = util::write(
        tmp.path(),
        "image.toml",
        &format!(
            "name = \"x\"\narchitecture = \"amd64\"\n{}\n[[platforms]]\narchitecture = \"arm64\"\n[platforms.closure]\nroots = [\"/nix/store/7nfhipmb7k7l7rfafbnansncz9730ygj-example-greeting-1.0\"]\nsource = {{ graph = \"{}\" }}\n[platforms.store]\nroot = \"{}\"\n",
            crate::support::example_closure(&store),
            graph.display(),
            store.display()
        ),
    );
    let plan = |platform: Option<&str>| {
        let mut cmd = nixlayer();
        cmd.arg("layers").arg(&manifest).arg("--json");
        if let Some(p) = platform {
            cmd.args(["--platform", p]);
        }
        parse_json(&String::from_utf8(run(&mut cmd, 0).stdout).unwrap())
    };
    assert_eq!(plan(None).len(), 3);
    assert_eq!(plan(Some("amd64")), plan(None));
    let arm = plan(Some("linux/arm64/v8"));
    assert_eq!(
        arm,
        vec![vec![
            "/nix/store/7nfhipmb7k7l7rfafbnansncz9730ygj-example-greeting-1.0".to_owned()
        ]]
    );
    let out = run(
        nixlayer()
            .arg("layers")
            .arg(&manifest)
            .args(["--platform", "riscv64"]),
        2,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("amd64, arm64"), "{stderr}");
}
