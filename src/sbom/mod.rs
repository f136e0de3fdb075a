//! A software bill of materials of an image, from its closure: SPDX 2.3
//! JSON or CycloneDX 1.6 JSON.
//!
//! Stage after [`crate::closure`]: a [`ClosureGraph`] (and the store, for
//! sources without NAR hashes) → [`Package`]s → a document. Every store
//! path in the image is one package:
//!
//! - name and version split as Nix's `builtins.parseDrvName` does
//!   ([`crate::nix::parse_drv_name`]);
//! - its NAR hash (`narHash`, sha256 of the store path's NAR
//!   serialisation) as its checksum, in hex; a source without one (DOT
//!   files) has it computed from the store content ([`nar_hash`]), so
//!   every package carries one;
//! - a `pkg:nix/NAME@VERSION` purl ([`ids::purl`]);
//! - its references as dependencies (SPDX `DEPENDS_ON`, CycloneDX
//!   `dependencies`), self-references left out.
//!
//! The image is the described root: SPDX `DOCUMENT DESCRIBES` the image
//! package, which `CONTAINS` every store path and `DEPENDS_ON` the roots;
//! CycloneDX's `metadata.component` is the image, depending on the roots.
//!
//! The bytes are deterministic: packages sorted by store path, the
//! timestamp the image's `created`, the SPDX `documentNamespace` and the
//! CycloneDX `serialNumber` a UUID derived from the rest of the document
//! ([`ids::content_uuid`]), everything through [`canonical_json`]. No
//! image digest is in it, so `nixlayer sbom` (which builds no layer) and
//! the SBOM attached to a built image are the same bytes; the attachment
//! names the image manifest as its `subject`.

pub mod ids;
mod nar_hash;

use std::path::PathBuf;

use serde_json::{json, Map, Value};

use crate::closure::ClosureGraph;
use crate::nix::{parse_drv_name, NarHash, StorePath};
use crate::oci::canonical_json;
use crate::store::Store;

pub use nar_hash::nar_hash;

/// The SBOM formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SbomFormat {
    /// SPDX 2.3, JSON.
    SpdxJson,
    /// CycloneDX 1.6, JSON.
    CycloneDxJson,
}

impl SbomFormat {
    /// Every format, in the order names list them.
    pub const ALL: [Self; 2] = [Self::SpdxJson, Self::CycloneDxJson];

    /// The format named `name` (`spdx-json`, `cyclonedx-json`).
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// Its name on the command line.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::SpdxJson => "spdx-json",
            Self::CycloneDxJson => "cyclonedx-json",
        }
    }

    /// Its media type: the `artifactType` of the OCI artifact holding it
    /// and its layer's media type.
    #[must_use]
    pub fn media_type(self) -> &'static str {
        match self {
            Self::SpdxJson => "application/spdx+json",
            Self::CycloneDxJson => "application/vnd.cyclonedx+json",
        }
    }

    /// The file name suffix of an SBOM written beside an output.
    #[must_use]
    pub fn extension(self) -> &'static str {
        match self {
            Self::SpdxJson => ".spdx.json",
            Self::CycloneDxJson => ".cdx.json",
        }
    }
}

/// Why an SBOM could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A store path's content could not be read to compute its NAR hash.
    #[error("failed to compute the NAR hash of `{path}` for the SBOM")]
    Store {
        /// The store path.
        path: StorePath,
        /// The cause.
        #[source]
        source: crate::store::Error,
    },
    /// A file changed size while it was read.
    #[error("`{}` changed while its NAR hash was computed: {expected} bytes expected, {found} read", path.display())]
    Changed {
        /// The file.
        path: PathBuf,
        /// The size its entry announced.
        expected: u64,
        /// The bytes read.
        found: u64,
    },
    /// `created` is not an RFC 3339 time.
    #[error("`created = \"{created}\"` is not an RFC 3339 time")]
    Created {
        /// The text.
        created: String,
    },
}

/// One store path of the image, as the SBOM lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// The store path.
    pub path: StorePath,
    /// Its NAR hash.
    pub nar_hash: NarHash,
    /// Its NAR size.
    pub nar_size: u64,
    /// The store paths of the image it references, sorted, itself left out.
    pub references: Vec<StorePath>,
}

impl Package {
    /// Name and version (`parseDrvName`); a name that would be empty
    /// (`-1.0`) is the whole store path name, without a version.
    #[must_use]
    pub fn name_version(&self) -> (&str, &str) {
        match parse_drv_name(self.path.name()) {
            ("", _) => (self.path.name(), ""),
            split => split,
        }
    }

    /// The purl.
    #[must_use]
    pub fn purl(&self) -> String {
        let (name, version) = self.name_version();
        ids::purl(name, version, self.path.hash_part())
    }

    /// The SPDX element ID.
    #[must_use]
    pub fn spdx_id(&self) -> String {
        ids::spdx_id(self.path.hash_part(), self.path.name())
    }

    fn hex_hash(&self) -> String {
        let hex = self.nar_hash.to_base16();
        hex.strip_prefix("sha256:").unwrap_or(&hex).to_owned()
    }
}

/// The packages of the store paths `in_image` (the image's store paths)
/// of `closure`, sorted by path: references to paths outside the image
/// (excluded ones) are left out, and a path the source gave no NAR hash is
/// hashed from `store`.
///
/// # Errors
/// When a NAR hash must be computed and the store cannot be read.
pub fn packages<S: Store>(
    closure: &ClosureGraph,
    in_image: &[StorePath],
    store: &S,
) -> Result<Vec<Package>, Error> {
    let mut wanted: Vec<&StorePath> = in_image.iter().collect();
    wanted.sort();
    wanted.dedup();
    let mut out = Vec::with_capacity(wanted.len());
    for path in &wanted {
        let Some(info) = closure.get(path.as_str()) else {
            continue;
        };
        let nar_hash = match info.nar_hash {
            Some(h) => h,
            None => nar_hash(store, &info.path)?,
        };
        let references = info
            .references
            .iter()
            .filter(|r| *r != &info.path && wanted.binary_search(r).is_ok())
            .cloned()
            .collect();
        out.push(Package {
            path: info.path.clone(),
            nar_hash,
            nar_size: info.nar_size,
            references,
        });
    }
    Ok(out)
}

/// The image an SBOM describes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SbomImage {
    /// Its name (`registry/repo`).
    pub name: String,
    /// Its tag, when the manifest gives one (a derived tag needs the
    /// config digest, which the SBOM must not depend on).
    pub tag: Option<String>,
    /// `created`, RFC 3339.
    pub created: String,
    /// `os`.
    pub os: String,
    /// `architecture`.
    pub architecture: String,
    /// `variant`.
    pub variant: Option<String>,
    /// The roots (and `contents`) in the image, sorted.
    pub roots: Vec<StorePath>,
}

impl SbomImage {
    fn platform(&self) -> String {
        let mut p = format!("{}/{}", self.os, self.architecture);
        if let Some(v) = &self.variant {
            p.push('/');
            p.push_str(v);
        }
        p
    }

    fn timestamp(&self) -> Result<String, Error> {
        normalised_created(&self.created)
    }
}

/// `created` in the one form SPDX accepts, `YYYY-MM-DDThh:mm:ssZ` (whole
/// seconds, UTC); CycloneDX and OCI annotations take the same.
///
/// # Errors
/// When `created` is not an RFC 3339 time.
pub fn normalised_created(created: &str) -> Result<String, Error> {
    let t: jiff::Timestamp = created.parse().map_err(|_| Error::Created {
        created: created.to_owned(),
    })?;
    Ok(t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// The tool named in the documents; its version is part of the bytes.
const TOOL: &str = concat!("nixlayer-", env!("CARGO_PKG_VERSION"));

/// The SBOM of `image` holding `packages`, in `format`: canonical JSON and
/// a newline.
///
/// # Errors
/// When `created` is not an RFC 3339 time.
pub fn write_sbom(
    format: SbomFormat,
    image: &SbomImage,
    packages: &[Package],
) -> Result<Vec<u8>, Error> {
    let mut bytes = match format {
        SbomFormat::SpdxJson => spdx(image, packages)?,
        SbomFormat::CycloneDxJson => cyclonedx(image, packages)?,
    };
    bytes.push(b'\n');
    Ok(bytes)
}

/// The image package's SPDX ID.
const IMAGE_ID: &str = "SPDXRef-Image";

fn spdx(image: &SbomImage, packages: &[Package]) -> Result<Vec<u8>, Error> {
    let mut list = Vec::with_capacity(packages.len() + 1);
    let mut image_pkg = json!({
        "SPDXID": IMAGE_ID,
        "name": image.name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "primaryPackagePurpose": "CONTAINER",
        "comment": format!("OCI image for {}", image.platform()),
    });
    if let (Some(tag), Some(obj)) = (&image.tag, image_pkg.as_object_mut()) {
        obj.insert("versionInfo".into(), tag.clone().into());
    }
    list.push(image_pkg);
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT",
        "relationshipType": "DESCRIBES",
        "relatedSpdxElement": IMAGE_ID,
    })];
    for p in packages {
        let (name, version) = p.name_version();
        let mut pkg = json!({
            "SPDXID": p.spdx_id(),
            "name": name,
            "packageFileName": p.path.as_str(),
            "downloadLocation": "NOASSERTION",
            "filesAnalyzed": false,
            "checksums": [{ "algorithm": "SHA256", "checksumValue": p.hex_hash() }],
            "externalRefs": [{
                "referenceCategory": "PACKAGE-MANAGER",
                "referenceType": "purl",
                "referenceLocator": p.purl(),
            }],
        });
        if let (false, Some(obj)) = (version.is_empty(), pkg.as_object_mut()) {
            obj.insert("versionInfo".into(), version.into());
        }
        list.push(pkg);
        relationships.push(json!({
            "spdxElementId": IMAGE_ID,
            "relationshipType": "CONTAINS",
            "relatedSpdxElement": p.spdx_id(),
        }));
    }
    let by_path = |path: &StorePath| packages.binary_search_by(|p| p.path.cmp(path)).ok();
    for root in &image.roots {
        if let Some(i) = by_path(root) {
            relationships.push(json!({
                "spdxElementId": IMAGE_ID,
                "relationshipType": "DEPENDS_ON",
                "relatedSpdxElement": packages[i].spdx_id(),
            }));
        }
    }
    for p in packages {
        for r in &p.references {
            if let Some(i) = by_path(r) {
                relationships.push(json!({
                    "spdxElementId": p.spdx_id(),
                    "relationshipType": "DEPENDS_ON",
                    "relatedSpdxElement": packages[i].spdx_id(),
                }));
            }
        }
    }
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "name": image_reference(image),
        "creationInfo": {
            "created": image.timestamp()?,
            "creators": [format!("Tool: {TOOL}")],
        },
        "comment": "One package per store path of the image. A package's SHA256 checksum is its narHash: the sha256 of the store path's NAR serialisation, as Nix records it.",
        "packages": list,
        "relationships": relationships,
    });
    let uuid = ids::content_uuid(&canonical_json(&doc));
    if let Some(obj) = doc.as_object_mut() {
        // An absolute URI unique to this content (SPDX 2.3 §6.5); urn:uuid
        // needs no domain of ours.
        obj.insert(
            "documentNamespace".into(),
            format!("urn:uuid:{uuid}").into(),
        );
    }
    Ok(canonical_json(&doc))
}

fn image_reference(image: &SbomImage) -> String {
    match &image.tag {
        Some(tag) => format!("{}:{tag}", image.name),
        None => image.name.clone(),
    }
}

/// The CycloneDX `bom-ref` of the image; store paths (the other refs)
/// start with `/`, so they never collide with it.
const IMAGE_REF: &str = "image";

fn cyclonedx(image: &SbomImage, packages: &[Package]) -> Result<Vec<u8>, Error> {
    let mut component = json!({
        "type": "container",
        "bom-ref": IMAGE_REF,
        "name": image.name,
        "properties": [
            { "name": "oci:platform", "value": image.platform() },
        ],
    });
    if let (Some(tag), Some(obj)) = (&image.tag, component.as_object_mut()) {
        obj.insert("version".into(), tag.clone().into());
    }
    let mut components = Vec::with_capacity(packages.len());
    let mut dependencies = Vec::with_capacity(packages.len() + 1);
    let roots: Vec<&str> = image
        .roots
        .iter()
        .filter(|r| packages.binary_search_by(|p| p.path.cmp(r)).is_ok())
        .map(StorePath::as_str)
        .collect();
    dependencies.push(json!({ "ref": IMAGE_REF, "dependsOn": roots }));
    for p in packages {
        let (name, version) = p.name_version();
        let mut c = json!({
            "type": "library",
            "bom-ref": p.path.as_str(),
            "name": name,
            "purl": p.purl(),
            "hashes": [{ "alg": "SHA-256", "content": p.hex_hash() }],
            "properties": [
                { "name": "nix:nar_hash", "value": p.nar_hash.to_nix32() },
                { "name": "nix:nar_size", "value": p.nar_size.to_string() },
                { "name": "nix:output_path", "value": p.path.as_str() },
            ],
        });
        if let (false, Some(obj)) = (version.is_empty(), c.as_object_mut()) {
            obj.insert("version".into(), version.into());
        }
        components.push(c);
        let refs: Vec<&str> = p.references.iter().map(StorePath::as_str).collect();
        dependencies.push(json!({ "ref": p.path.as_str(), "dependsOn": refs }));
    }
    let mut doc = json!({
        "$schema": "http://cyclonedx.org/schema/bom-1.6.schema.json",
        "bomFormat": "CycloneDX",
        "specVersion": "1.6",
        "version": 1,
        "metadata": {
            "timestamp": image.timestamp()?,
            "tools": { "components": [{
                "type": "application",
                "name": "nixlayer",
                "version": env!("CARGO_PKG_VERSION"),
            }] },
            "component": component,
        },
        "components": components,
        "dependencies": dependencies,
    });
    let uuid = ids::content_uuid(&canonical_json(&doc));
    if let Some(obj) = doc.as_object_mut() {
        obj.insert("serialNumber".into(), format!("urn:uuid:{uuid}").into());
    }
    Ok(canonical_json(&doc))
}

/// The OCI 1.1 artifact manifest attaching `sbom` (bytes in `format`) to
/// the image manifest `subject`: `artifactType` the format's media type,
/// the empty config (`application/vnd.oci.empty.v1+json`, `{}`), one
/// layer, the SBOM, and `created` as the `org.opencontainers.image.created`
/// annotation (what `oras discover` shows). Canonical JSON.
#[must_use]
pub fn artifact_manifest(
    format: SbomFormat,
    sbom: &[u8],
    subject: &crate::oci::Descriptor,
    created: &str,
) -> Vec<u8> {
    let layer = crate::oci::Descriptor {
        media_type: format.media_type().to_owned(),
        digest: crate::oci::Digest::of(sbom),
        size: sbom.len() as u64,
    };
    canonical_json(&json!({
        "schemaVersion": 2,
        "mediaType": crate::oci::MANIFEST_MEDIA_TYPE,
        "artifactType": format.media_type(),
        "config": empty_descriptor(),
        "layers": [layer.to_json(Map::new())],
        "subject": subject.to_json(Map::new()),
        "annotations": { "org.opencontainers.image.created": created },
    }))
}

/// The empty JSON blob an artifact's config points at.
pub const EMPTY_BLOB: &[u8] = b"{}";
/// Its media type.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";

fn empty_descriptor() -> Value {
    let d = crate::oci::Descriptor {
        media_type: EMPTY_MEDIA_TYPE.to_owned(),
        digest: crate::oci::Digest::of(EMPTY_BLOB),
        size: EMPTY_BLOB.len() as u64,
    };
    d.to_json(Map::new())
}

#[cfg(test)]
mod tests;
