//! Parity with nixpkgs: every case of `fixtures/golden/layering/` (layers
//! printed by `flatten_references_graph` for a graph, pipeline and
//! exclusions). The layering graph is built straight from the
//! exportReferencesGraph JSON, so these tests need no closure parser.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::graph::LayerGraph;
use super::{plan_graph, Pipeline};
use crate::nix::{StoreDir, StorePath};

/// The case names (`GRAPH--CASE`) every graph has.
const CASES: &[&str] = &[
    "default99",
    "exclude-root",
    "limit1",
    "limit10",
    "nested",
    "popularity-all",
    "remove-map",
    "reverse",
    "split-children",
    "split-every",
    "split2",
    "subin",
    "subout",
];

const GRAPHS: &[&str] = &["teststore", "debian-python", "synthetic1000", "lattice70"];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/golden/layering")
}

fn read_json(path: &Path) -> Json {
    let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn store_path(value: &Json) -> StorePath {
    StorePath::parse(&StoreDir::default(), value.as_str().unwrap()).unwrap()
}

/// One exportReferencesGraph entry: path, narSize, references.
struct Entry {
    path: StorePath,
    nar_size: u64,
    references: Vec<StorePath>,
}

fn read_graph(path: &Path) -> Vec<Entry> {
    read_json(path)
        .as_array()
        .unwrap()
        .iter()
        .map(|node| Entry {
            path: store_path(&node["path"]),
            nar_size: node["narSize"].as_u64().unwrap(),
            references: node["references"]
                .as_array()
                .unwrap()
                .iter()
                .map(store_path)
                .collect(),
        })
        .collect()
}

#[test]
fn golden_cases() {
    let mut graphs: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
    let mut cases: Vec<PathBuf> = fs::read_dir(dir().join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let mut checked: Vec<String> = Vec::new();
    for case_path in &cases {
        let name = case_path.file_stem().unwrap().to_str().unwrap();
        let case = read_json(case_path);
        let graph_file = case["graph"].as_str().unwrap();
        let entries = graphs
            .entry(graph_file.to_owned())
            .or_insert_with(|| read_graph(&dir().join(graph_file)));
        let exclude: Vec<StorePath> = case["exclude_paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(store_path)
            .collect();
        let base = LayerGraph::new(
            entries.iter().map(|e| (&e.path, e.nar_size, &e.references)),
            &exclude,
        )
        .unwrap();
        let pipeline = Pipeline::parse(&case["pipeline"]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let result = plan_graph(&base, &pipeline);
        if let Some(error) = case.get("expected_error") {
            assert!(result.is_err(), "{name}: expected {error}");
            checked.push(name.to_owned());
            continue;
        }
        let plan = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        let layers: Vec<Vec<&str>> = plan
            .layers
            .iter()
            .map(|l| l.iter().map(StorePath::as_str).collect())
            .collect();
        let expected: Vec<Vec<String>> = serde_json::from_value(case["expected"].clone()).unwrap();
        assert_eq!(layers, expected, "{name}");
        checked.push(name.to_owned());
    }
    // Every graph with every case, so a lost fixture fails too.
    let mut wanted: Vec<String> = GRAPHS
        .iter()
        .flat_map(|g| CASES.iter().map(move |c| format!("{g}--{c}")))
        .collect();
    wanted.sort();
    assert_eq!(checked, wanted);
}
