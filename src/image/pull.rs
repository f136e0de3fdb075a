//! Base images from a registry (`[base] image = "docker://HOST/NAME:TAG@sha256:…"`):
//! nixpkgs' `pullImage` without Nix.
//!
//! The digest is required, so a build names exactly one image whatever the
//! tag points to later. The image is fetched once into an OCI layout under
//! `$XDG_CACHE_HOME/nixlayer/images/sha256-<hex>-<os>-<arch>[-<variant>]`
//! (the digest asked for, and the platform an index is resolved to),
//! which the ordinary base-image reader ([`super::base`]) then opens: a
//! build from the cache never touches the network, and every byte it uses
//! is checked against its digest again there.
//!
//! A pull verifies each manifest against the digest it was asked by (and
//! the registry's `Docker-Content-Digest`), and each blob as it streams in.
//! A multi-platform index is resolved to the image's own
//! `architecture`/`os`/`variant`. Everything is written in a temporary
//! directory beside the cache entry (registered with
//! [`crate::cleanup::Pending`]) and renamed into place only when complete,
//! so a failed or interrupted pull leaves nothing behind.

use std::fs::{self, File};
use std::io::{self, BufWriter, Read as _};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::cleanup::Pending;
use crate::oci::{Digest, INDEX_MEDIA_TYPE};
use crate::registry::{self, Client, ClientOptions, Credentials, Reference};

pub use crate::registry::reference::{parse_pinned, SCHEME};

/// The docker v2 manifest list, docker's name for an index.
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The docker v2 image manifest.
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The most blobs (config and layers) one manifest may list.
const MAX_LAYERS: usize = 1000;

/// Why a base image could not be pulled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The registry refused or misbehaved.
    #[error("failed to pull base image `{reference}`")]
    Registry {
        /// The reference, as the manifest gives it.
        reference: String,
        /// The cause.
        #[source]
        source: Box<registry::Error>,
    },
    /// What the registry sent is not a usable image.
    #[error("failed to pull base image `{reference}`: {message}")]
    Invalid {
        /// The reference.
        reference: String,
        /// What is wrong.
        message: String,
    },
    /// The cache could not be written.
    #[error("failed to pull base image `{reference}` into `{}`", path.display())]
    Io {
        /// The reference.
        reference: String,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// The platform an index is resolved to: the image's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    /// `amd64`, `arm64`, …
    pub architecture: String,
    /// `linux`, …
    pub os: String,
    /// `v8`, `v7`, … when the image names one.
    pub variant: Option<String>,
}

/// A registry base image: where it is and where its layout is cached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullSpec {
    /// The text of the reference, for messages.
    pub text: String,
    /// Registry, repository and tag.
    pub reference: Reference,
    /// The digest asked for: of an image manifest or an index.
    pub digest: Digest,
    /// The platform an index is resolved to.
    pub platform: Platform,
    /// The cache directory (`…/nixlayer/images`).
    pub cache: PathBuf,
    /// How to reach the registry (TLS, credentials, deadlines), as the
    /// caller resolved them for its host with push's own code; `None`:
    /// HTTPS with the system's trust and docker's `config.json`
    /// credentials. A pull asks for a `pull` token only, whatever these say.
    pub options: Option<ClientOptions>,
}

impl PullSpec {
    /// Where the image's OCI layout is (once pulled): named by the digest
    /// asked for and the platform, since an index's digest names a
    /// different image on each platform.
    #[must_use]
    pub fn layout(&self) -> PathBuf {
        let p = &self.platform;
        let mut name = format!(
            "sha256-{}-{}-{}",
            self.digest.hex(),
            name_part(&p.os),
            name_part(&p.architecture)
        );
        if let Some(v) = &p.variant {
            name = format!("{name}-{}", name_part(v));
        }
        self.cache.join(name)
    }

    /// Makes sure the layout is in the cache, pulling it when it is not;
    /// returns its path. The registry is reached as [`PullSpec::options`]
    /// say; without them credentials come from docker's `config.json`
    /// (`$DOCKER_CONFIG`, else `~/.docker`), helpers included.
    ///
    /// # Errors
    /// When the registry cannot be reached or refuses, sends bytes that are
    /// not the digests', or the cache cannot be written.
    pub fn ensure(&self) -> Result<PathBuf, Error> {
        let layout = self.layout();
        if layout.join("index.json").is_file() {
            self.check_cached(&layout)?;
            return Ok(layout);
        }
        let options = match &self.options {
            Some(options) => options.clone(),
            None => ClientOptions {
                credentials: Credentials::from_config_files(
                    &crate::registry::credentials::credential_files(),
                    &self.reference.host,
                    &self.reference.repository,
                )
                .map_err(|e| self.registry_error(e))?,
                ..ClientOptions::default()
            },
        };
        let client = Client::new(
            &self.reference,
            ClientOptions {
                pull_only: true,
                ..options
            },
        );
        self.pull(&client)?;
        Ok(layout)
    }

    /// Checks that a cached layout holds what was asked for: the blob of
    /// the digest asked for, and an `index.json` naming it or (for an
    /// index) the manifest chosen from it. The base-image reader checks
    /// every other blob against the digests these lead to.
    fn check_cached(&self, layout: &Path) -> Result<(), Error> {
        let stale = |why: &str| {
            self.invalid(format!(
                "the cached copy `{}` {why}; remove that directory to pull again",
                layout.display()
            ))
        };
        let read = |path: PathBuf| -> Result<Vec<u8>, Error> {
            let mut bytes = Vec::new();
            File::open(&path)
                .and_then(|f| {
                    f.take(registry::client::MANIFEST_LIMIT)
                        .read_to_end(&mut bytes)
                })
                .map_err(|e| self.io(&path, e))?;
            Ok(bytes)
        };
        let asked = read(layout.join("blobs/sha256").join(self.digest.hex()))?;
        if Digest::of(&asked) != self.digest {
            return Err(stale("does not match its digest"));
        }
        let doc = self.json(&asked, "the cached manifest")?;
        let expected = if is_index(&doc, "") {
            self.choose(&doc)?.0
        } else {
            self.digest
        };
        let index = self.json(&read(layout.join("index.json"))?, "the cached index.json")?;
        let named = index
            .get("manifests")
            .and_then(|m| m.get(0))
            .and_then(|m| m.get("digest"))
            .and_then(Value::as_str)
            .and_then(Digest::parse);
        if named != Some(expected) {
            return Err(stale("names another image"));
        }
        Ok(())
    }

    /// The config and layer blobs of the image as pulled, from its cached
    /// layout: what a push to the same registry may mount from the base
    /// image's repository instead of uploading. Empty when the layout is
    /// not there or cannot be read (a hint only, never an error).
    #[must_use]
    pub fn blob_digests(&self) -> Vec<Digest> {
        let layout = self.layout();
        let read = |path: PathBuf| -> Option<Value> {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|f| {
                    f.take(registry::client::MANIFEST_LIMIT)
                        .read_to_end(&mut bytes)
                })
                .ok()?;
            serde_json::from_slice(&bytes).ok()
        };
        let Some(manifest) = read(layout.join("index.json"))
            .as_ref()
            .and_then(|index| {
                index
                    .get("manifests")?
                    .get(0)?
                    .get("digest")?
                    .as_str()
                    .map(str::to_owned)
            })
            .and_then(|d| Digest::parse(&d))
            .and_then(|d| read(layout.join("blobs/sha256").join(d.hex())))
        else {
            return Vec::new();
        };
        self.blobs_of(&manifest)
            .map(|blobs| blobs.into_iter().map(|(d, _)| d).collect())
            .unwrap_or_default()
    }

    fn registry_error(&self, source: registry::Error) -> Error {
        Error::Registry {
            reference: self.text.clone(),
            source: Box::new(source),
        }
    }

    fn invalid(&self, message: impl Into<String>) -> Error {
        Error::Invalid {
            reference: self.text.clone(),
            message: message.into(),
        }
    }

    fn io(&self, path: &Path, source: io::Error) -> Error {
        Error::Io {
            reference: self.text.clone(),
            path: path.to_owned(),
            source,
        }
    }

    /// Pulls into a temporary layout, then renames it into place.
    fn pull(&self, client: &Client) -> Result<(), Error> {
        fs::create_dir_all(&self.cache).map_err(|e| self.io(&self.cache, e))?;
        let (tmp, pending) = Pending::create(
            || {
                tempfile::Builder::new()
                    .prefix(".pull-")
                    .tempdir_in(&self.cache)
            },
            |d| d.path(),
        )
        .map_err(|e| self.io(&self.cache, e))?;
        let blobs = tmp.path().join("blobs").join("sha256");
        fs::create_dir_all(&blobs).map_err(|e| self.io(&blobs, e))?;

        let (bytes, media_type) = client
            .get_manifest(&self.digest)
            .map_err(|e| self.registry_error(e))?;
        let doc = self.json(&bytes, "the manifest")?;
        // The manifest the digest names is always written, so that a
        // cached copy can be checked against it (`check_cached`).
        let (manifest_digest, manifest, doc, media_type) = if is_index(&doc, &media_type) {
            self.write_blob(&blobs, &self.digest, &bytes)?;
            let (digest, entry_type) = self.choose(&doc)?;
            let (bytes, served_type) = client
                .get_manifest(&digest)
                .map_err(|e| self.registry_error(e))?;
            let doc = self.json(&bytes, "the platform's manifest")?;
            if is_index(&doc, &served_type) {
                return Err(self.invalid("the platform's entry is another index"));
            }
            let media_type = manifest_type(&doc, entry_type.as_deref().unwrap_or(&served_type));
            (digest, bytes, doc, media_type)
        } else {
            let media_type = manifest_type(&doc, &media_type);
            (self.digest, bytes, doc, media_type)
        };
        if media_type != crate::oci::MANIFEST_MEDIA_TYPE && media_type != DOCKER_MANIFEST {
            return Err(self.invalid(format!(
                "unsupported manifest media type `{}`",
                media_type.chars().take(100).collect::<String>()
            )));
        }
        self.write_blob(&blobs, &manifest_digest, &manifest)?;
        for (digest, size) in self.blobs_of(&doc)? {
            let path = blobs.join(digest.hex());
            if path.exists() {
                continue;
            }
            let file = File::create(&path).map_err(|e| self.io(&path, e))?;
            let mut out = BufWriter::new(file);
            client
                .get_blob(&digest, size, &mut out)
                .map_err(|e| self.registry_error(e))?;
            out.into_inner()
                .map_err(|e| self.io(&path, e.into_error()))?
                .sync_all()
                .map_err(|e| self.io(&path, e))?;
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": INDEX_MEDIA_TYPE,
            "manifests": [{
                "mediaType": media_type,
                "digest": manifest_digest.prefixed(),
                "size": manifest.len(),
            }],
        });
        let write = |name: &str, text: &[u8]| {
            let path = tmp.path().join(name);
            fs::write(&path, text).map_err(|e| self.io(&path, e))
        };
        write("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        // index.json last: its presence marks a complete layout.
        write("index.json", index.to_string().as_bytes())?;
        let layout = self.layout();
        let tmp_path = tmp.keep();
        match pending.publish(|| fs::rename(&tmp_path, &layout)) {
            Ok(()) => Ok(()),
            // Another build pulled the same digest meanwhile: theirs is as good.
            Err(_) if layout.join("index.json").is_file() => {
                let _ = fs::remove_dir_all(&tmp_path);
                Ok(())
            }
            Err(e) => {
                let _ = fs::remove_dir_all(&tmp_path);
                Err(self.io(&layout, e))
            }
        }
    }

    fn json(&self, bytes: &[u8], what: &str) -> Result<Value, Error> {
        serde_json::from_slice::<Value>(bytes)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| self.invalid(format!("{what} is not a JSON object")))
    }

    fn write_blob(&self, blobs: &Path, digest: &Digest, bytes: &[u8]) -> Result<(), Error> {
        let path = blobs.join(digest.hex());
        fs::write(&path, bytes).map_err(|e| self.io(&path, e))
    }

    /// The index entry for our platform: its digest and media type.
    fn choose(&self, index: &Value) -> Result<(Digest, Option<String>), Error> {
        let entries = index
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| self.invalid("the index has no `manifests` list"))?;
        let p = &self.platform;
        let field = |e: &Value, k: &str| {
            e.get("platform")
                .and_then(|pl| pl.get(k))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let wanted_variant =
            crate::oci::platform::comparable_variant(&p.architecture, p.variant.as_deref());
        let matching = |e: &&Value, with_variant: bool| {
            field(e, "architecture").as_deref() == Some(p.architecture.as_str())
                && field(e, "os").as_deref() == Some(p.os.as_str())
                && (!with_variant
                    || crate::oci::platform::comparable_variant(
                        &p.architecture,
                        field(e, "variant").as_deref(),
                    ) == wanted_variant)
        };
        // An exact match first; without a variant asked for, any variant
        // of the architecture (as docker picks `arm64/v8` for `arm64`).
        let chosen = entries
            .iter()
            .find(|e| matching(e, true))
            .or_else(|| {
                p.variant
                    .is_none()
                    .then(|| entries.iter().find(|e| matching(e, false)))
                    .flatten()
            })
            .ok_or_else(|| {
                let offered: Vec<String> = entries
                    .iter()
                    .take(20)
                    .map(|e| {
                        let mut s = format!(
                            "{}/{}",
                            field(e, "os").unwrap_or_default(),
                            field(e, "architecture").unwrap_or_default()
                        );
                        if let Some(v) = field(e, "variant") {
                            s = format!("{s}/{v}");
                        }
                        s.chars().take(60).collect()
                    })
                    .collect();
                let wanted = match &p.variant {
                    Some(v) => format!("{}/{}/{v}", p.os, p.architecture),
                    None => format!("{}/{}", p.os, p.architecture),
                };
                self.invalid(format!(
                    "the index has no image for {wanted} (the image's `os`/`architecture`/`variant`); it offers {}",
                    offered.join(", ")
                ))
            })?;
        let digest = chosen
            .get("digest")
            .and_then(Value::as_str)
            .and_then(Digest::parse)
            .ok_or_else(|| self.invalid("an index entry has no valid `digest`"))?;
        let media_type = chosen
            .get("mediaType")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok((digest, media_type))
    }

    /// The config and layers a manifest lists, with their sizes.
    fn blobs_of(&self, manifest: &Value) -> Result<Vec<(Digest, u64)>, Error> {
        let descriptor = |d: &Value| {
            let digest = d
                .get("digest")
                .and_then(Value::as_str)
                .and_then(Digest::parse);
            let size = d.get("size").and_then(Value::as_u64);
            digest.zip(size).ok_or_else(|| {
                self.invalid("a descriptor in the manifest lacks a valid `digest` or `size`")
            })
        };
        let config = manifest
            .get("config")
            .ok_or_else(|| self.invalid("the manifest has no `config`"))?;
        let layers = manifest
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| self.invalid("the manifest has no `layers` list"))?;
        if layers.len() > MAX_LAYERS {
            return Err(self.invalid(format!("the manifest lists more than {MAX_LAYERS} layers")));
        }
        std::iter::once(config)
            .chain(layers)
            .map(descriptor)
            .collect()
    }
}

/// A manifest's media type: its `mediaType`, else what the registry said
/// it is (without parameters), else, for a manifest that names none, OCI's.
fn manifest_type(doc: &Value, served: &str) -> String {
    let served = served.split(';').next().unwrap_or("").trim();
    doc.get("mediaType")
        .and_then(Value::as_str)
        .unwrap_or(if served.is_empty() {
            crate::oci::MANIFEST_MEDIA_TYPE
        } else {
            served
        })
        .to_owned()
}

/// Whether `doc` is an index (OCI) or manifest list (docker): by its
/// `mediaType`, else by the registry's word, else by its shape.
fn is_index(doc: &Value, served: &str) -> bool {
    let t = manifest_type(doc, served);
    t == INDEX_MEDIA_TYPE
        || t == DOCKER_LIST
        || (doc.get("mediaType").is_none()
            && doc.get("manifests").is_some()
            && doc.get("layers").is_none())
}

/// `text` as part of a file name: ASCII letters, digits and `.` kept,
/// anything else (a `/`, a `-` that would blur where parts end) as `_XX`
/// hex, so distinct platforms never share a name.
fn name_part(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references() {
        let (r, d) =
            parse_pinned(&format!("docker://127.0.0.1:5000/team/app:1@sha256:{HEX}")).unwrap();
        assert_eq!(r.host, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/app");
        assert_eq!(d.hex(), HEX);
        let (hub, _) = parse_pinned(&format!("docker://alpine@sha256:{HEX}")).unwrap();
        assert_eq!(hub.repository, "library/alpine");
        let (msg, hint) = parse_pinned("docker://alpine:3").unwrap_err();
        assert!(msg.contains("no digest"), "{msg}");
        assert!(hint.unwrap().contains("@sha256:"));
        assert!(parse_pinned("docker://alpine@sha256:12").is_err());
        assert!(parse_pinned(&format!("docker://@sha256:{HEX}")).is_err());
    }

    fn spec(arch: &str, variant: Option<&str>) -> PullSpec {
        PullSpec {
            text: "docker://x/y@sha256:..".to_owned(),
            reference: Reference::parse("x.io/y").unwrap(),
            digest: Digest::of(b""),
            platform: Platform {
                architecture: arch.to_owned(),
                os: "linux".to_owned(),
                variant: variant.map(str::to_owned),
            },
            cache: PathBuf::from("/nonexistent"),
            options: None,
        }
    }

    #[test]
    fn index_resolution() {
        let d = |b: &[u8]| Digest::of(b).prefixed();
        let index = json!({"manifests": [
            {"digest": d(b"a"), "platform": {"architecture": "amd64", "os": "linux"}},
            {"digest": d(b"b"), "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"digest": d(b"c"), "platform": {"architecture": "arm", "os": "linux", "variant": "v7"}},
        ]});
        let pick = |arch, variant| spec(arch, variant).choose(&index).map(|c| c.0);
        assert_eq!(pick("amd64", None).unwrap(), Digest::of(b"a"));
        assert_eq!(pick("arm64", None).unwrap(), Digest::of(b"b"));
        assert_eq!(pick("arm64", Some("v8")).unwrap(), Digest::of(b"b"));
        assert_eq!(pick("arm", Some("v7")).unwrap(), Digest::of(b"c"));
        let err = pick("arm", Some("v6")).unwrap_err().to_string();
        assert!(
            err.contains("linux/arm/v6") && err.contains("linux/amd64"),
            "{err}"
        );
        assert!(pick("s390x", None).is_err());
    }

    #[test]
    fn default_variants_match_as_dockers() {
        let d = |b: &[u8]| Digest::of(b).prefixed();
        // Indexes that leave arm64's and arm's variant out (ko, distroless
        // and many others do), and name amd64's `v1`.
        let index = json!({"manifests": [
            {"digest": d(b"a"), "platform": {"architecture": "amd64", "os": "linux", "variant": "v1"}},
            {"digest": d(b"b"), "platform": {"architecture": "arm64", "os": "linux"}},
            {"digest": d(b"c"), "platform": {"architecture": "arm", "os": "linux"}},
            {"digest": d(b"e"), "platform": {"architecture": "arm", "os": "linux", "variant": "v6"}},
        ]});
        let pick = |arch, variant| spec(arch, variant).choose(&index).map(|c| c.0);
        assert_eq!(pick("arm64", Some("v8")).unwrap(), Digest::of(b"b"));
        assert_eq!(pick("arm", Some("v7")).unwrap(), Digest::of(b"c"));
        assert_eq!(pick("arm", None).unwrap(), Digest::of(b"c"));
        assert_eq!(pick("arm", Some("v6")).unwrap(), Digest::of(b"e"));
        assert_eq!(pick("amd64", None).unwrap(), Digest::of(b"a"));
        assert!(pick("arm", Some("v5")).is_err());
        // An arm64 image without a variant finds an index's `arm64/v8`.
        let index = json!({"manifests": [
            {"digest": d(b"v8"), "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        ]});
        let pick = |arch, variant| spec(arch, variant).choose(&index).map(|c| c.0);
        assert_eq!(pick("arm64", None).unwrap(), Digest::of(b"v8"));
    }

    #[test]
    fn kinds_of_manifest() {
        let oci = "application/vnd.oci.image.manifest.v1+json";
        assert!(is_index(&json!({"mediaType": DOCKER_LIST}), oci));
        assert!(is_index(&json!({"manifests": []}), ""));
        assert!(is_index(
            &json!({}),
            "application/vnd.oci.image.index.v1+json; x=y"
        ));
        assert!(!is_index(&json!({"layers": [], "manifests": []}), ""));
        assert_eq!(manifest_type(&json!({"layers": []}), ""), oci);
        assert_eq!(
            manifest_type(&json!({}), &format!("{DOCKER_MANIFEST};q=1")),
            DOCKER_MANIFEST
        );
    }

    #[test]
    fn layouts_differ_by_platform() {
        let names: Vec<PathBuf> = [
            ("amd64", None),
            ("arm64", None),
            ("arm64", Some("v8")),
            ("arm64-v8", None),
            ("../x", None),
        ]
        .iter()
        .map(|(a, v)| spec(a, *v).layout())
        .collect();
        for (i, a) in names.iter().enumerate() {
            assert_eq!(a.parent(), Some(Path::new("/nonexistent")), "{a:?}");
            for b in &names[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(text in "\\PC{0,120}") {
            let _ = parse_pinned(&text);
            let _ = parse_pinned(&format!("docker://{text}"));
        }

        #[test]
        fn index_resolution_never_panics(text in "\\PC{0,200}") {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                let _ = spec("amd64", None).choose(&v);
                let _ = spec("amd64", None).blobs_of(&v);
                let _ = is_index(&v, &text);
            }
        }
    }
}
