//! SBOMs of a build ([`crate::sbom`]): the image's store paths (its layer
//! plan), its roots and its `created`, read from the settings; and their
//! attachment to the image manifest as OCI 1.1 artifacts.

use super::{BuildSettings, Error};
use crate::closure::ClosureGraph;
use crate::nix::StorePath;
use crate::oci::Descriptor;
use crate::plan::LayerPlan;
use crate::sbom::{self, Package, SbomFormat, SbomImage};
use crate::sink::{ImageSink, Referrer};

/// An SBOM attached to a built image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachedSbom {
    /// Its format.
    pub format: SbomFormat,
    /// The artifact manifest holding it.
    pub manifest: Descriptor,
    /// The SBOM blob.
    pub blob: Descriptor,
}

/// What the SBOM says of the image itself.
#[must_use]
pub fn sbom_image(settings: &BuildSettings) -> SbomImage {
    let mut roots: Vec<StorePath> = settings
        .roots
        .iter()
        .chain(&settings.content.contents)
        .cloned()
        .collect();
    roots.sort();
    roots.dedup();
    SbomImage {
        name: settings.name.clone(),
        tag: settings.tag.clone(),
        created: settings.config.created.clone(),
        os: settings.config.os.clone(),
        architecture: settings.config.architecture.clone(),
        variant: settings.config.variant.clone(),
        roots,
    }
}

/// The packages of the image's store paths: those of `plan` (what the
/// layers hold), from `closure`.
///
/// # Errors
/// When a store path without a NAR hash in its source cannot be read.
pub fn sbom_packages(
    settings: &BuildSettings,
    closure: &ClosureGraph,
    plan: &LayerPlan,
) -> Result<Vec<Package>, Error> {
    let in_image: Vec<StorePath> = plan.layers.iter().flatten().cloned().collect();
    Ok(sbom::packages(closure, &in_image, &settings.store)?)
}

/// The SBOM of the image in each of `formats`, in that order.
///
/// # Errors
/// As [`sbom_packages`], and when `created` is not a time.
pub fn write_sboms(
    settings: &BuildSettings,
    closure: &ClosureGraph,
    plan: &LayerPlan,
    formats: &[SbomFormat],
) -> Result<Vec<(SbomFormat, Vec<u8>)>, Error> {
    if formats.is_empty() {
        return Ok(Vec::new());
    }
    let packages = sbom_packages(settings, closure, plan)?;
    let image = sbom_image(settings);
    formats
        .iter()
        .map(|&f| Ok((f, sbom::write_sbom(f, &image, &packages)?)))
        .collect()
}

/// Attaches each of `sboms` to the image manifest `subject` in `sink`.
///
/// # Errors
/// When the sink cannot store them.
pub(super) fn attach<S: ImageSink>(
    sink: &mut S,
    sboms: &[(SbomFormat, Vec<u8>)],
    subject: &Descriptor,
    created: &str,
) -> Result<Vec<AttachedSbom>, Error> {
    let created = sbom::normalised_created(created)?;
    let annotations = std::collections::BTreeMap::from([(
        "org.opencontainers.image.created".to_owned(),
        created.clone(),
    )]);
    let mut attached = Vec::with_capacity(sboms.len());
    for (format, bytes) in sboms {
        let manifest = sbom::artifact_manifest(*format, bytes, subject, &created);
        let descriptor = sink.put_referrer(&Referrer {
            artifact_type: format.media_type(),
            blob: bytes,
            config: sbom::EMPTY_BLOB,
            manifest: &manifest,
            subject,
            annotations: &annotations,
        })?;
        attached.push(AttachedSbom {
            format: *format,
            manifest: descriptor,
            blob: Descriptor {
                media_type: format.media_type().to_owned(),
                digest: crate::oci::Digest::of(bytes),
                size: bytes.len() as u64,
            },
        });
    }
    Ok(attached)
}
