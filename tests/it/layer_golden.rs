//! Store layers byte-compatible with nixpkgs: every diff_id that
//! `stream_layered_image.py` computed for the golden store paths
//! (`fixtures/golden/tar/`) is reproduced, and measuring predicts the size.
//!
//! The store paths (built by `fixtures/golden/tar/store.nix`):
//!
//! ```text
//!   golden-all ──> golden-app-0.1 ──> golden-zlib-1.3 ──> golden-libc-2.40
//!     │   │             └──────────────────────────────────────^
//!     │   └──> golden-single-file.conf (a file) ──> app
//!     └──────> golden-symlink (a symlink) ──> app/bin/app
//! ```

use std::path::PathBuf;

use nixlayer::closure::StoreLocation;
use nixlayer::layer::{self, LayerOptions, Owner, Permissions};
use nixlayer::nix::{StoreDir, StorePath};
use serde_json::Value;

use crate::util;

#[test]
fn store_layers_reproduce_nixpkgs_diff_ids() {
    if util::nix_fixture("golden").is_none() {
        return;
    }
    let text = std::fs::read_to_string(util::repo().join("fixtures/golden/tar/digests.json"))
        .expect("read digests.json");
    let golden: Value = serde_json::from_str(&text).expect("parse digests.json");
    let dir = StoreDir::default();
    let store = StoreLocation {
        dir: dir.clone(),
        root: PathBuf::from("/"),
    };
    let mut checked = 0;
    for case in golden["cases"].as_array().expect("cases") {
        let owner = &case["owner"];
        let mtime: jiff::Timestamp = owner["mtime"].as_str().unwrap().parse().unwrap();
        let opts = LayerOptions {
            store: store.clone(),
            owner: Owner {
                uid: owner["uid"].as_u64().unwrap(),
                gid: owner["gid"].as_u64().unwrap(),
                uname: owner["uname"].as_str().unwrap().to_owned(),
                gname: owner["gname"].as_str().unwrap().to_owned(),
            },
            mtime: u64::try_from(mtime.as_second()).unwrap(),
            permissions: Permissions::default(),
        };
        for layer in case["layers"].as_array().expect("layers") {
            let paths: Vec<StorePath> = layer["paths"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| StorePath::parse(&dir, p.as_str().unwrap()).unwrap())
                .collect();
            let size = layer::measure_store_layer(&opts, &paths).expect("measure");
            let mut bytes = Vec::new();
            let digest = layer::write_store_layer(&opts, &paths, size, &mut bytes).expect("write");
            assert_eq!(digest.size, size, "{} {paths:?}", case["plan"]);
            assert_eq!(bytes.len() as u64, size);
            assert_eq!(
                digest.diff_id.prefixed(),
                layer["diff_id"].as_str().unwrap(),
                "plan {} owner {owner} paths {paths:?}",
                case["plan"],
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 14, "every golden layer was checked");
}
