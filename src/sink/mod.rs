//! Where the image goes: a docker-archive written to a file (through a
//! temporary file renamed into place) or streamed to stdout, an OCI image
//! layout directory, or an OCI layout in a tar; compressed or not (by
//! [`crate::codec`]); or pushed to a registry ([`registry`]).

pub mod docker_archive;
pub mod oci_archive;
pub mod oci_layout;
mod output;
pub mod registry;
mod spool;

use std::io::Write;
use std::path::PathBuf;

use crate::codec::CompressOptions;
use crate::oci::{Descriptor, Digest};

pub use output::{layout_would_overwrite, would_overwrite, OutputError, OutputFile};
pub use spool::{Spooled, SpooledBlob};

/// Why an output could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file of the output could not be read or written.
    #[error("failed to write `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The target directory holds something other than an OCI layout.
    #[error("`{}` is not empty and not an OCI image layout (it has no `oci-layout` file)", path.display())]
    NotALayout {
        /// The directory.
        path: PathBuf,
    },
    /// The output is something an image is never written to.
    #[error("`{}` {reason}", path.display())]
    Refused {
        /// The output path.
        path: PathBuf,
        /// What it is and why it is refused.
        reason: String,
    },
    /// An existing layout file is not JSON.
    #[error("`{}` is not valid JSON", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// An existing layout file has the wrong shape.
    #[error("`{}` is malformed: {what}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: &'static str,
    },
    /// A sink was given more images than it can name.
    #[error("{what}")]
    Unsupported {
        /// What was asked.
        what: String,
    },
    /// A blob could not be pushed to a registry.
    #[error(transparent)]
    Registry(Box<registry::Error>),
}

/// How a sink stores layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LayerForm {
    /// Each layer its own content-addressed blob, compressed on its own
    /// with these options (OCI layouts and archives, registries).
    Blobs(CompressOptions),
    /// Each layer an uncompressed tar member whose size the sink writes
    /// before its bytes (a docker-archive, compressed as a whole if at
    /// all): the size comes from measuring, the member's name from the
    /// layer's content key, since the diff_id is known only at its end.
    Members,
}

/// The platform an image manifest is for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Platform {
    /// `os`, e.g. `linux`.
    pub os: String,
    /// `architecture` in GOARCH spelling, e.g. `amd64`.
    pub architecture: String,
    /// CPU `variant`, e.g. `v8` (arm); `None` leaves it out.
    pub variant: Option<String>,
}

impl Platform {
    /// The index entry's `platform` object.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let mut p = serde_json::json!({ "os": self.os, "architecture": self.architecture });
        if let (Some(v), Some(obj)) = (&self.variant, p.as_object_mut()) {
            obj.insert("variant".into(), v.clone().into());
        }
        p
    }

    /// The sort key of index entries: os, architecture, variant, so an
    /// index's bytes do not depend on the order platforms were built in.
    fn key(&self) -> (&str, &str, &str) {
        (
            &self.os,
            &self.architecture,
            self.variant.as_deref().unwrap_or(""),
        )
    }
}

/// Annotations beyond the image manifests' own, for the sinks that name
/// what was put: OCI layouts and archives, registries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OutputAnnotations {
    /// Of the image index over several platforms (`[index.annotations]`,
    /// `--annotation index:KEY=VALUE`); part of the index's digest. A
    /// single-platform output has no index and no place for them.
    pub index: std::collections::BTreeMap<String, String>,
    /// Of the `index.json` entry naming the image in a layout or archive
    /// (not content-addressed, one per tag): the keys that depend on the
    /// tag or only describe it, such as `org.opencontainers.image.version`
    /// and `created`. `ref.name` and `io.containerd.image.name` are always
    /// the tag's and are not taken from here. A registry has no such
    /// entry.
    pub descriptor: std::collections::BTreeMap<String, String>,
}

/// The image index over several manifests, one per platform, sorted by
/// platform (then digest) for deterministic bytes.
#[must_use]
pub fn platform_index(manifests: &[(Descriptor, Platform)]) -> Vec<u8> {
    annotated_platform_index(manifests, &std::collections::BTreeMap::new())
}

/// [`platform_index`] with `annotations` on the index (none gives
/// exactly [`platform_index`]'s bytes).
#[must_use]
pub fn annotated_platform_index(
    manifests: &[(Descriptor, Platform)],
    annotations: &std::collections::BTreeMap<String, String>,
) -> Vec<u8> {
    let mut sorted: Vec<&(Descriptor, Platform)> = manifests.iter().collect();
    sorted.sort_by(|a, b| {
        a.1.key()
            .cmp(&b.1.key())
            .then_with(|| a.0.digest.hex().cmp(&b.0.digest.hex()))
    });
    let entries = sorted
        .iter()
        .map(|(desc, p)| {
            let mut extra = serde_json::Map::new();
            extra.insert("platform".into(), p.to_json());
            desc.to_json(extra)
        })
        .collect();
    if annotations.is_empty() {
        return crate::oci::index_json(entries);
    }
    crate::oci::canonical_json(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::INDEX_MEDIA_TYPE,
        "manifests": entries,
        "annotations": annotations,
    }))
}

/// One image of an output, handed to [`ImageSink::put_manifest`] once its
/// layers and config are stored.
#[derive(Clone, Debug)]
pub struct ImageEntry<'a> {
    /// Where it runs.
    pub platform: &'a Platform,
    /// The config blob, already stored with [`ImageSink::put_blob`].
    pub config: &'a Descriptor,
    /// The layers as stored, bottom first.
    pub layers: &'a [Descriptor],
    /// The OCI image manifest, canonical JSON.
    pub manifest: &'a [u8],
}

/// An OCI 1.1 artifact that refers to an image manifest (an SBOM): its
/// one blob, its artifact manifest (whose `config` is the empty blob
/// `{}`), the manifest it refers to, and what the referrer's index entry
/// carries.
#[derive(Clone, Debug)]
pub struct Referrer<'a> {
    /// The artifact's media type (`artifactType`).
    pub artifact_type: &'a str,
    /// The artifact's one blob (the SBOM).
    pub blob: &'a [u8],
    /// The empty config blob, `{}`.
    pub config: &'a [u8],
    /// The artifact manifest, canonical JSON, naming `blob`, `config` and `subject`.
    pub manifest: &'a [u8],
    /// The image manifest it refers to.
    pub subject: &'a Descriptor,
    /// The artifact manifest's annotations, copied into index entries as
    /// the referrers API does.
    pub annotations: &'a std::collections::BTreeMap<String, String>,
}

impl Referrer<'_> {
    /// The artifact manifest's descriptor.
    #[must_use]
    pub fn descriptor(&self) -> Descriptor {
        Descriptor {
            media_type: crate::oci::MANIFEST_MEDIA_TYPE.to_owned(),
            digest: Digest::of(self.manifest),
            size: self.manifest.len() as u64,
        }
    }

    /// Its entry in an index (a layout's `index.json`, a referrers list):
    /// the descriptor with `artifactType` and the annotations, no ref name.
    #[must_use]
    pub fn index_entry(&self) -> serde_json::Value {
        let mut extra = serde_json::Map::new();
        extra.insert("artifactType".into(), self.artifact_type.into());
        if !self.annotations.is_empty() {
            extra.insert(
                "annotations".into(),
                serde_json::to_value(self.annotations).unwrap_or_default(),
            );
        }
        self.descriptor().to_json(extra)
    }
}

/// Where an image goes: a docker-archive, an OCI layout or archive, a
/// registry. A build stores each layer (streamed into
/// [`ImageSink::start_layer`]'s writer, then [`ImageSink::commit_layer`]),
/// then the config ([`ImageSink::put_blob`]), then the image manifest
/// ([`ImageSink::put_manifest`]; a multi-platform build puts several), and
/// [`ImageSink::finish`] names them: one manifest by its reference, several
/// by an index. Sinks never compress layers themselves and never read the
/// store: they take bytes.
pub trait ImageSink {
    /// A layer being written.
    type Blob: Write + Send;
    /// What [`ImageSink::finish`] hands back (the writer of a stream,
    /// a registry's upload counts).
    type Output;

    /// How layers are to be written into this sink.
    fn layer_form(&self) -> LayerForm;

    /// Starts a layer whose tar has `size` bytes and whose content the
    /// key `key` identifies (see [`LayerForm::Members`]).
    ///
    /// # Errors
    /// When its temporary storage cannot be created or the output written.
    fn start_layer(&mut self, key: &Digest, size: u64) -> Result<Self::Blob, Error>;

    /// Stores the layer written into `blob`, whose stored bytes have
    /// `digest` and `size`; returns whether it was new (a blob already
    /// stored is not written again).
    ///
    /// # Errors
    /// When it cannot be stored.
    fn commit_layer(&mut self, blob: Self::Blob, digest: &Digest, size: u64)
        -> Result<bool, Error>;

    /// Whether several layers may be written at once: blobs started before
    /// the previous ones are committed, each written on its own thread
    /// (commits still come in layer order). Sinks whose blobs are files of
    /// their own say yes; a docker-archive, one stream, cannot.
    fn concurrent_layers(&self) -> bool {
        false
    }

    /// Makes a written layer's bytes durable before it is committed, on
    /// the thread that wrote it (see [`ImageSink::concurrent_layers`]), so
    /// the commits, one at a time and in order, do not wait for the disk.
    /// By default nothing.
    ///
    /// # Errors
    /// When the blob cannot be flushed or synced.
    fn seal_layer(blob: &mut Self::Blob) -> Result<(), Error>
    where
        Self: Sized,
    {
        let _ = blob;
        Ok(())
    }

    /// [`ImageSink::seal_layer`], told the digest of the blob written (a
    /// registry asks there whether it holds it, rather than in the
    /// commit). By default `seal_layer`.
    ///
    /// # Errors
    /// As [`ImageSink::seal_layer`].
    fn seal_layer_as(blob: &mut Self::Blob, digest: &Digest) -> Result<(), Error>
    where
        Self: Sized,
    {
        let _ = digest;
        Self::seal_layer(blob)
    }

    /// Whether the blob `digest` is already stored, so a layer known (from
    /// the layer cache) to have that blob need not be read again.
    fn has_blob(&self, digest: &Digest) -> bool {
        let _ = digest;
        false
    }

    /// Stores a small blob held in memory (a config); returns its digest
    /// and whether it was new.
    ///
    /// # Errors
    /// When it cannot be stored.
    fn put_blob(&mut self, bytes: &[u8]) -> Result<(Digest, bool), Error>;

    /// Stores an image manifest; returns its descriptor and whether it
    /// was new.
    ///
    /// # Errors
    /// When it cannot be stored.
    fn put_manifest(&mut self, image: &ImageEntry<'_>) -> Result<(Descriptor, bool), Error>;

    /// Stores an artifact referring to an image manifest put before (an
    /// SBOM): its blobs and manifest, listed so that it can be found from
    /// the image (a layout's `index.json` entry without a ref name, a
    /// registry's referrers API or referrers tag). Returns the artifact
    /// manifest's descriptor.
    ///
    /// # Errors
    /// When it cannot be stored, or the sink has no place for it (a
    /// docker-archive).
    fn put_referrer(&mut self, referrer: &Referrer<'_>) -> Result<Descriptor, Error> {
        let _ = referrer;
        Err(Error::Unsupported {
            what: "this output has no place for an artifact referring to the image (an SBOM); use an OCI output".to_owned(),
        })
    }

    /// Sets the annotations of the index and of the `index.json` entry
    /// that [`ImageSink::finish`] writes; sinks without them ignore them
    /// (a docker-archive has no place for annotations).
    fn set_annotations(&mut self, annotations: &OutputAnnotations) {
        let _ = annotations;
    }

    /// Names what was put `reference` (`name:tag`) and completes the
    /// output; returns [`ImageSink::Output`] and, for an output that is one
    /// stream, its bytes as written.
    ///
    /// # Errors
    /// When nothing or more than the sink can name was put, or it cannot be
    /// written.
    fn finish(self, reference: &str) -> Result<(Self::Output, Option<u64>), Error>;
}

/// The tag of `name:tag`.
#[must_use]
pub fn tag_of(reference: &str) -> &str {
    reference.rsplit_once(':').map_or("latest", |(_, t)| t)
}

/// What an OCI layout or archive lists in `index.json` when it is
/// finished: the image manifests put (with their platforms), the artifacts
/// referring to them (SBOMs) and the annotations of the entry naming them.
/// The two outputs differ only in where blobs and `index.json` go.
#[derive(Debug, Default)]
struct PendingIndex {
    manifests: Vec<(Descriptor, Platform)>,
    /// `index.json` entries of the artifacts, listed without a ref name.
    referrers: Vec<serde_json::Value>,
    annotations: OutputAnnotations,
}

impl PendingIndex {
    /// Notes the image manifest of `image`, stored as `digest`; its descriptor.
    fn add_manifest(&mut self, image: &ImageEntry<'_>, digest: Digest) -> Descriptor {
        let desc = Descriptor {
            media_type: crate::oci::MANIFEST_MEDIA_TYPE.to_owned(),
            digest,
            size: image.manifest.len() as u64,
        };
        self.manifests.push((desc.clone(), image.platform.clone()));
        desc
    }

    /// Notes an artifact whose blobs and manifest are stored; its
    /// manifest's descriptor.
    fn add_referrer(&mut self, referrer: &Referrer<'_>) -> Descriptor {
        self.referrers.push(referrer.index_entry());
        referrer.descriptor()
    }

    /// The entry naming the manifests `reference` ([`tagged_entry`]).
    fn entry(
        &self,
        reference: &str,
        put_blob: impl FnOnce(&[u8]) -> Result<(Digest, bool), Error>,
    ) -> Result<serde_json::Value, Error> {
        tagged_entry(&self.manifests, reference, &self.annotations, put_blob)
    }
}

/// The `index.json` entry naming `manifests` `reference`: the manifest
/// itself when there is one; for several (one per platform), an image
/// index (with `annotations.index`) stored with `put_blob`, each of its
/// entries carrying its platform. The entry carries
/// `annotations.descriptor`, then the tag's ref name and containerd name.
///
/// # Errors
/// When no manifest was put, or the index cannot be stored.
fn tagged_entry(
    manifests: &[(Descriptor, Platform)],
    reference: &str,
    annotations: &OutputAnnotations,
    put_blob: impl FnOnce(&[u8]) -> Result<(Digest, bool), Error>,
) -> Result<serde_json::Value, Error> {
    let tag = tag_of(reference);
    let mut named: serde_json::Map<String, serde_json::Value> = annotations
        .descriptor
        .iter()
        .map(|(k, v)| (k.clone(), v.clone().into()))
        .collect();
    named.insert(crate::oci::REF_NAME.into(), tag.into());
    named.insert(crate::oci::CONTAINERD_NAME.into(), reference.into());
    match manifests {
        [] => Err(Error::Unsupported {
            what: "no image manifest was written, so there is nothing to name".to_owned(),
        }),
        [(desc, p)] => {
            let mut entry = crate::oci::index_entry(desc, reference, tag, &p.os, &p.architecture);
            if let Some(obj) = entry.as_object_mut() {
                obj.insert("annotations".into(), named.into());
                // With its variant (`arm/v7`), as the config and an index
                // of several platforms say it.
                obj.insert("platform".into(), p.to_json());
            }
            Ok(entry)
        }
        several => {
            let index = annotated_platform_index(several, &annotations.index);
            let (digest, _) = put_blob(&index)?;
            let desc = Descriptor {
                media_type: crate::oci::INDEX_MEDIA_TYPE.to_owned(),
                digest,
                size: index.len() as u64,
            };
            let mut extra = serde_json::Map::new();
            extra.insert("annotations".into(), named.into());
            Ok(desc.to_json(extra))
        }
    }
}

#[cfg(test)]
mod platform_tests {
    use super::*;

    fn entry(byte: u8, arch: &str, variant: Option<&str>) -> (Descriptor, Platform) {
        (
            Descriptor {
                media_type: crate::oci::MANIFEST_MEDIA_TYPE.into(),
                digest: Digest::of(&[byte]),
                size: 1,
            },
            Platform {
                os: "linux".into(),
                architecture: arch.into(),
                variant: variant.map(str::to_owned),
            },
        )
    }

    /// One image's `index.json` entry names its platform's variant, as
    /// its config does (it was left out: `arm64` for an `arm64/v8` image).
    #[test]
    fn a_single_entry_keeps_its_variant() {
        let one = [entry(1, "arm", Some("v7"))];
        let named = tagged_entry(&one, "x:t", &OutputAnnotations::default(), |b| {
            Ok((Digest::of(b), true))
        })
        .unwrap();
        assert_eq!(
            named["platform"],
            serde_json::json!({"os": "linux", "architecture": "arm", "variant": "v7"})
        );
        let amd64 = [entry(1, "amd64", None)];
        let named = tagged_entry(&amd64, "x:t", &OutputAnnotations::default(), |b| {
            Ok((Digest::of(b), true))
        })
        .unwrap();
        assert_eq!(
            named["platform"],
            serde_json::json!({"os": "linux", "architecture": "amd64"})
        );
    }

    /// No index annotations, the bytes of before; with them, on the index
    /// only. The `index.json` entry gets the descriptor annotations, and
    /// the tag's names win over them.
    #[test]
    fn index_and_descriptor_annotations() {
        let two = [entry(1, "amd64", None), entry(2, "arm64", None)];
        let none = std::collections::BTreeMap::new();
        assert_eq!(annotated_platform_index(&two, &none), platform_index(&two));
        let mut annotations = OutputAnnotations::default();
        annotations.index.insert("k".into(), "v".into());
        annotations
            .descriptor
            .insert(crate::oci::REF_NAME.into(), "not the tag".into());
        annotations.descriptor.insert("d".into(), "1".into());
        let mut index = Vec::new();
        let named = tagged_entry(&two, "x:t", &annotations, |b| {
            index = b.to_vec();
            Ok((Digest::of(b), true))
        })
        .unwrap();
        let doc: serde_json::Value = serde_json::from_slice(&index).unwrap();
        assert_eq!(doc["annotations"], serde_json::json!({ "k": "v" }));
        assert_eq!(
            named["annotations"],
            serde_json::json!({ "d": "1", crate::oci::REF_NAME: "t", crate::oci::CONTAINERD_NAME: "x:t" })
        );
        let one = tagged_entry(&two[..1], "x:t", &annotations, |_| unreachable!()).unwrap();
        assert_eq!(one["annotations"], named["annotations"]);
    }

    #[test]
    fn an_index_is_sorted_by_platform_whatever_the_build_order() {
        let a = entry(1, "arm64", Some("v8"));
        let b = entry(2, "amd64", None);
        let c = entry(3, "arm", Some("v7"));
        let one = platform_index(&[a.clone(), b.clone(), c.clone()]);
        assert_eq!(one, platform_index(&[c, a, b]));
        let doc: serde_json::Value = serde_json::from_slice(&one).unwrap();
        let shown: Vec<String> = doc["manifests"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["platform"].to_string())
            .collect();
        assert_eq!(
            shown,
            [
                r#"{"architecture":"amd64","os":"linux"}"#,
                r#"{"architecture":"arm","os":"linux","variant":"v7"}"#,
                r#"{"architecture":"arm64","os":"linux","variant":"v8"}"#,
            ]
        );
    }
}
