//! The image config and its history; the OCI manifest and index and the
//! docker `manifest.json` are vocabulary, in [`crate::oci`].
//!
//! Every JSON document goes through [`canonical_json`]: keys sorted, no
//! insignificant whitespace, so the same inputs always give the same bytes
//! and the same digests.

pub mod base;
pub mod nix_db;
pub mod pull;

use serde_json::{json, Map, Value};

use crate::oci::{canonical_json, Digest};

/// What the image config says beyond its layers.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigSpec {
    /// RFC 3339 creation time (metadata only).
    pub created: String,
    /// GOARCH spelling.
    pub architecture: String,
    /// Usually `linux`.
    pub os: String,
    /// CPU variant, e.g. `v7`.
    pub variant: Option<String>,
    /// The OCI runtime config (`Entrypoint`, `Env`, …), verbatim.
    pub config: Map<String, Value>,
}

/// One layer as the config records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigLayer {
    /// sha256 of the uncompressed layer tar.
    pub diff_id: Digest,
    /// The history comment, e.g. the store paths it holds.
    pub comment: String,
}

/// The history comment of a store layer, in nixpkgs' wording.
#[must_use]
pub fn store_layer_comment<S: AsRef<str>>(paths: &[S]) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| format!("'{}'", p.as_ref())).collect();
    format!("store paths: [{}]", quoted.join(", "))
}

/// The image config JSON (OCI image config / docker image JSON).
#[must_use]
pub fn config_json(spec: &ConfigSpec, layers: &[ConfigLayer]) -> Vec<u8> {
    let history: Vec<Value> = layers
        .iter()
        .map(|l| json!({ "created": spec.created, "created_by": "nixlayer", "comment": l.comment }))
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.prefixed()).collect();
    let mut doc = json!({
        "created": spec.created,
        "architecture": spec.architecture,
        "os": spec.os,
        "config": Value::Object(spec.config.clone()),
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
        "history": history,
    });
    if let (Some(variant), Some(obj)) = (&spec.variant, doc.as_object_mut()) {
        obj.insert("variant".to_owned(), Value::String(variant.clone()));
    }
    canonical_json(&doc)
}

/// Merges base and image `Env` lists by nixpkgs' rule: by variable name, at
/// the first position the name appeared, with the last value given.
#[must_use]
pub fn merge_env(base: &[String], own: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_owned();
    let mut order: Vec<String> = Vec::new();
    let mut values: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for entry in base.iter().chain(own) {
        let k = key(entry);
        if !values.contains_key(&k) {
            order.push(k.clone());
        }
        values.insert(k, entry.clone());
    }
    order
        .into_iter()
        .filter_map(|k| values.remove(&k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_records_layers_in_order() {
        let spec = ConfigSpec {
            created: "1970-01-01T00:00:01Z".into(),
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
            config: serde_json::from_str(r#"{"Cmd":["/bin/sh"]}"#).unwrap(),
        };
        let layers = [
            ConfigLayer {
                diff_id: Digest::of(b"a"),
                comment: store_layer_comment(&["/nix/store/a"]),
            },
            ConfigLayer {
                diff_id: Digest::of(b"b"),
                comment: "b".into(),
            },
        ];
        let doc: Value = serde_json::from_slice(&config_json(&spec, &layers)).unwrap();
        assert_eq!(doc["rootfs"]["diff_ids"][0], Digest::of(b"a").prefixed());
        assert_eq!(doc["rootfs"]["diff_ids"][1], Digest::of(b"b").prefixed());
        assert_eq!(
            doc["history"][0]["comment"],
            "store paths: ['/nix/store/a']"
        );
        assert_eq!(doc["config"]["Cmd"][0], "/bin/sh");
        assert!(doc.get("variant").is_none());
    }

    #[test]
    fn env_merges_by_name_first_position_last_value() {
        let base = ["PATH=/bin".to_owned(), "A=1".to_owned(), "LANG".to_owned()];
        let own = ["B=2".to_owned(), "PATH=/usr/bin".to_owned()];
        assert_eq!(
            merge_env(&base, &own),
            ["PATH=/usr/bin", "A=1", "LANG", "B=2"]
        );
    }
}
