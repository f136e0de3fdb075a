//! The OCI vocabulary every stage shares: sha256 [`Digest`]s (and the one
//! parser of their `sha256:<hex>` text), the writers that hash and count
//! what passes, [`canonical_json`], media types, [`Descriptor`]s, and the
//! image manifest, image index and `oci-layout` file, written through
//! [`canonical_json`] (not `oci-spec`, whose maps serialise in a different
//! order on every run).
//!
//! Formats tier: this module imports no stage.

mod digest;
pub mod elf;
pub mod platform;

use serde_json::{json, Map, Value};

pub use digest::{CountWriter, Digest, HashCountWriter};

/// Serialises `value` canonically: object keys sorted by bytes, compact.
///
/// `serde_json::Map` is a `BTreeMap` as long as no crate in the build enables
/// serde_json's `preserve_order`; a unit test guards that.
#[must_use]
pub fn canonical_json(value: &Value) -> Vec<u8> {
    // Writing to a Vec cannot fail and a `Value` always serialises.
    serde_json::to_vec(value).unwrap_or_default()
}

/// `application/vnd.oci.image.manifest.v1+json`.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// `application/vnd.oci.image.index.v1+json`.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// `application/vnd.oci.image.config.v1+json`.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// `application/vnd.oci.image.layer.v1.tar`; compressed layers add `+gzip`
/// or `+zstd`.
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar";
/// The annotation naming an image in an OCI layout's `index.json` (the
/// `TAG` of skopeo's `oci:DIR:TAG`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The annotation containerd (and docker ≥ 25 loading an OCI archive)
/// names the image by: the full `name:tag`.
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The `oci-layout` file's contents.
pub const LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// A layer tar as written, uncompressed: what the image config records
/// (the diff_id) and what an archive member's header needs (the size).
/// Shared by every layer writer (store, customisation, base-image layers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerDigest {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Its size in bytes.
    pub size: u64,
}

/// An OCI content descriptor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    /// The media type of what it points at.
    pub media_type: String,
    /// sha256 of the bytes.
    pub digest: Digest,
    /// Length of the bytes.
    pub size: u64,
}

impl Descriptor {
    /// As JSON, with `extra` keys (annotations, platform) added.
    #[must_use]
    pub fn to_json(&self, extra: Map<String, Value>) -> Value {
        let mut obj = Map::new();
        obj.insert("mediaType".into(), self.media_type.clone().into());
        obj.insert("digest".into(), self.digest.prefixed().into());
        obj.insert("size".into(), self.size.into());
        obj.extend(extra);
        Value::Object(obj)
    }
}

/// The image manifest for a config and its layers, bottom first.
#[must_use]
pub fn manifest_json(config: &Descriptor, layers: &[Descriptor]) -> Vec<u8> {
    let layers: Vec<Value> = layers.iter().map(|l| l.to_json(Map::new())).collect();
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.to_json(Map::new()),
        "layers": layers,
    }))
}

/// [`manifest_json`] with `annotations` (sorted by key, as every map in
/// [`canonical_json`]); none gives exactly [`manifest_json`]'s bytes.
#[must_use]
pub fn annotated_manifest_json(
    config: &Descriptor,
    layers: &[Descriptor],
    annotations: &std::collections::BTreeMap<String, String>,
) -> Vec<u8> {
    if annotations.is_empty() {
        return manifest_json(config, layers);
    }
    let layers: Vec<Value> = layers.iter().map(|l| l.to_json(Map::new())).collect();
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": config.to_json(Map::new()),
        "layers": layers,
        "annotations": annotations,
    }))
}

/// The docker-archive `manifest.json` (docker's image spec, the one
/// non-OCI document here): one image with its tags and layer members.
#[must_use]
pub fn docker_manifest_json(
    config_member: &str,
    repo_tags: &[String],
    layer_members: &[String],
) -> Vec<u8> {
    canonical_json(&json!([{
        "Config": config_member,
        "RepoTags": repo_tags,
        "Layers": layer_members,
    }]))
}

/// The `index.json` entry of an image manifest named `tag` (and, for
/// containerd, `reference`), on `os`/`architecture`.
#[must_use]
pub fn index_entry(
    manifest: &Descriptor,
    reference: &str,
    tag: &str,
    os: &str,
    architecture: &str,
) -> Value {
    let mut extra = Map::new();
    extra.insert(
        "annotations".into(),
        json!({ REF_NAME: tag, CONTAINERD_NAME: reference }),
    );
    extra.insert(
        "platform".into(),
        json!({ "os": os, "architecture": architecture }),
    );
    manifest.to_json(extra)
}

/// The ref name (`org.opencontainers.image.ref.name`) of an index entry.
#[must_use]
pub fn entry_ref_name(entry: &Value) -> Option<&str> {
    entry.get("annotations")?.get(REF_NAME)?.as_str()
}

/// An image index holding `manifests`.
#[must_use]
pub fn index_json(manifests: Vec<Value>) -> Vec<u8> {
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": manifests,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_at_every_depth() {
        let v: Value =
            serde_json::from_str(r#"{"b":1,"a":{"z":[{"y":1,"x":2}],"c":"é"}}"#).unwrap();
        assert_eq!(
            String::from_utf8(canonical_json(&v)).unwrap(),
            r#"{"a":{"c":"é","z":[{"x":2,"y":1}]},"b":1}"#
        );
    }

    #[test]
    fn manifest_and_index_are_canonical() {
        let config = Descriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: Digest::of(b"c"),
            size: 1,
        };
        let layer = Descriptor {
            media_type: format!("{LAYER_MEDIA_TYPE}+gzip"),
            digest: Digest::of(b"l"),
            size: 2,
        };
        let m = manifest_json(&config, &[layer]);
        let text = String::from_utf8(m.clone()).unwrap();
        assert!(
            text.starts_with(r#"{"config":{"digest":"sha256:"#),
            "{text}"
        );
        assert!(text.contains(r#""mediaType":"application/vnd.oci.image.layer.v1.tar+gzip""#));
        let md = Descriptor {
            media_type: MANIFEST_MEDIA_TYPE.into(),
            digest: Digest::of(&m),
            size: m.len() as u64,
        };
        let entry = index_entry(&md, "a/b:1", "1", "linux", "amd64");
        assert_eq!(entry_ref_name(&entry), Some("1"));
        let index: Value = serde_json::from_slice(&index_json(vec![entry])).unwrap();
        assert_eq!(index["manifests"][0]["platform"]["os"], "linux");
        assert_eq!(
            index["manifests"][0]["annotations"][CONTAINERD_NAME],
            "a/b:1"
        );
    }
}
