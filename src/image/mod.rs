//! The image config and its history; the OCI manifest and index and the
//! docker `manifest.json` are vocabulary, in [`crate::oci`].
//!
//! Every JSON document is canonical, as [`crate::oci::canonical_json`]
//! writes it: keys sorted, no insignificant whitespace, so the same
//! inputs always give the same bytes and the same digests.

pub mod base;
pub mod nix_db;
pub mod pull;

use serde_json::{Map, Value};

use crate::oci::Digest;

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
    // Written into one string of the right size: a layer may hold
    // thousands of paths (issue 15), and the comment is kept to the end.
    let len = paths.iter().map(|p| p.as_ref().len() + 4).sum::<usize>();
    let mut comment = String::with_capacity("store paths: []".len() + len);
    comment.push_str("store paths: [");
    for (i, path) in paths.iter().enumerate() {
        if i > 0 {
            comment.push_str(", ");
        }
        comment.push('\'');
        comment.push_str(path.as_ref());
        comment.push('\'');
    }
    comment.push(']');
    comment
}

/// The store paths of a history comment `store paths: ['/nix/store/…', …]`
/// ([`store_layer_comment`], as nixlayer and nixpkgs write them); none for
/// any other comment, and none for a base layer's entry (which names the
/// base's archive member or blob, not a path).
/// Hand-written: the format is ours, a quoted list no parser crate reads.
#[must_use]
pub fn parse_store_layer_comment(comment: &str) -> Vec<String> {
    let Some(list) = comment
        .strip_prefix("store paths: [")
        .and_then(|rest| rest.strip_suffix(']'))
    else {
        return Vec::new();
    };
    list.split(", ")
        .filter_map(|item| item.strip_prefix('\'')?.strip_suffix('\''))
        .filter(|p| p.starts_with('/'))
        .map(str::to_owned)
        .collect()
}

/// The store paths of each of an image's `layers` layers, bottom first,
/// from its config's history comments ([`parse_store_layer_comment`]); the
/// entries that made no layer (`empty_layer`) are skipped, so entry `i` is
/// layer `i`'s. A history of another length than the layers (a tool that
/// appended a layer without an entry) says nothing of which layer an entry
/// is: then every layer lists none, rather than another layer's paths.
#[must_use]
pub fn history_store_paths(config: &Value, layers: usize) -> Vec<Vec<String>> {
    let entries: Vec<&Value> = config
        .get("history")
        .and_then(Value::as_array)
        .map(|h| {
            h.iter()
                .filter(|e| e.get("empty_layer").and_then(Value::as_bool) != Some(true))
                .collect()
        })
        .unwrap_or_default();
    if entries.len() != layers {
        return vec![Vec::new(); layers];
    }
    entries
        .into_iter()
        .map(|e| {
            e.get("comment")
                .and_then(Value::as_str)
                .map(parse_store_layer_comment)
                .unwrap_or_default()
        })
        .collect()
}

/// The image config JSON (OCI image config / docker image JSON).
#[must_use]
pub fn config_json(spec: &ConfigSpec, layers: &[ConfigLayer]) -> Vec<u8> {
    config_json_of(
        spec,
        layers.iter().map(|l| (&l.diff_id, l.comment.as_str())),
    )
}

/// [`config_json`] of each layer's diff_id and history comment, borrowed:
/// the comments name every store path of the image, so copying them into
/// [`ConfigLayer`]s and again into a JSON tree cost a copy each per path.
#[must_use]
pub fn config_json_of<'a>(
    spec: &ConfigSpec,
    layers: impl IntoIterator<Item = (&'a Digest, &'a str)>,
) -> Vec<u8> {
    use serde::Serialize;
    // Fields in the order of their names, as `canonical_json` sorts a
    // JSON object's keys: the same bytes as serialising the `Value`.
    #[derive(Serialize)]
    struct Config<'a> {
        architecture: &'a str,
        config: &'a Map<String, Value>,
        created: &'a str,
        history: Vec<History<'a>>,
        os: &'a str,
        rootfs: RootFs,
        #[serde(skip_serializing_if = "Option::is_none")]
        variant: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct History<'a> {
        comment: &'a str,
        created: &'a str,
        created_by: &'static str,
    }
    #[derive(Serialize)]
    struct RootFs {
        diff_ids: Vec<String>,
        r#type: &'static str,
    }
    let (diff_ids, history): (Vec<String>, Vec<History<'_>>) = layers
        .into_iter()
        .map(|(diff_id, comment)| {
            let history = History {
                comment,
                created: &spec.created,
                created_by: "nixlayer",
            };
            (diff_id.prefixed(), history)
        })
        .unzip();
    let size = history.iter().map(|h| h.comment.len() + 128).sum::<usize>() + 4096;
    let config = Config {
        architecture: &spec.architecture,
        config: &spec.config,
        created: &spec.created,
        history,
        os: &spec.os,
        rootfs: RootFs {
            diff_ids,
            r#type: "layers",
        },
        variant: spec.variant.as_deref(),
    };
    let mut out = Vec::with_capacity(size);
    // Writing to a Vec cannot fail, and these types always serialise.
    let _ = serde_json::to_writer(&mut out, &config);
    out
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

    /// The config written from borrowed layers is byte for byte the
    /// canonical JSON of the document as a `Value` (sorted keys).
    #[test]
    fn config_json_is_the_canonical_json_of_the_document() {
        for variant in [None, Some("v7".to_owned())] {
            let spec = ConfigSpec {
                created: "2024-01-01T00:00:00Z".into(),
                architecture: "arm".into(),
                os: "linux".into(),
                variant: variant.clone(),
                config: serde_json::from_str(
                    r#"{"Env":["A=\"b\"\n"],"Cmd":["/bin/sh"],"Labels":{"z":"1","a":"é"}}"#,
                )
                .unwrap(),
            };
            let layers = [
                ConfigLayer {
                    diff_id: Digest::of(b"a"),
                    comment: store_layer_comment(&["/nix/store/a", "/nix/store/b'\"\u{1}"]),
                },
                ConfigLayer {
                    diff_id: Digest::of(b"b"),
                    comment: "customisation layer".into(),
                },
            ];
            let history: Vec<Value> = layers
                .iter()
                .map(|l| serde_json::json!({ "created": spec.created, "created_by": "nixlayer", "comment": l.comment }))
                .collect();
            let diff_ids: Vec<String> = layers.iter().map(|l| l.diff_id.prefixed()).collect();
            let mut doc = serde_json::json!({
                "created": spec.created,
                "architecture": spec.architecture,
                "os": spec.os,
                "config": Value::Object(spec.config.clone()),
                "rootfs": { "type": "layers", "diff_ids": diff_ids },
                "history": history,
            });
            if let Some(v) = &variant {
                doc["variant"] = Value::String(v.clone());
            }
            let want = String::from_utf8(crate::oci::canonical_json(&doc)).unwrap();
            let got = String::from_utf8(config_json(&spec, &layers)).unwrap();
            assert_eq!(got, want);
        }
        assert_eq!(store_layer_comment::<&str>(&[]), "store paths: []");
        assert_eq!(
            store_layer_comment(&["/a", "/b"]),
            "store paths: ['/a', '/b']"
        );
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

    #[test]
    fn comments_parse() {
        assert_eq!(
            parse_store_layer_comment("store paths: ['/nix/store/a-x', '/nix/store/b-y']"),
            ["/nix/store/a-x", "/nix/store/b-y"]
        );
        assert!(parse_store_layer_comment("customisation layer").is_empty());
        assert!(parse_store_layer_comment("store paths: [").is_empty());
        assert!(parse_store_layer_comment("store paths: ['']").is_empty());
        // A base layer's entry names its member, not a store path.
        assert!(parse_store_layer_comment("store paths: ['abc/layer.tar']").is_empty());
    }

    /// Entries that made no layer are skipped; a history of another length
    /// than the layers, or not a list, gives none.
    #[test]
    fn history_paths_follow_the_layers() {
        let config = serde_json::json!({"history": [
            {"comment": "store paths: ['/nix/store/a-x']"},
            {"created_by": "ENV A=1", "empty_layer": true},
            {"comment": "customisation layer"},
            {"comment": "store paths: ['/nix/store/b-y']"},
        ]});
        assert_eq!(
            history_store_paths(&config, 3),
            [
                vec!["/nix/store/a-x".to_owned()],
                vec![],
                vec!["/nix/store/b-y".to_owned()]
            ]
        );
        // Entries for other than the layers name none of them.
        for layers in [2, 4] {
            assert_eq!(
                history_store_paths(&config, layers),
                vec![Vec::<String>::new(); layers]
            );
        }
        let none = serde_json::json!({"history": 1});
        assert_eq!(history_store_paths(&none, 1), [Vec::<String>::new()]);
    }

    proptest::proptest! {
        #[test]
        fn comment_parser_never_panics(s in ".*") {
            let _ = parse_store_layer_comment(&s);
        }
    }
}
