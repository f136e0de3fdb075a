//! `nixlayer sbom`: the SBOM of the image a manifest describes, read from
//! its closure and layer plan alone (no layer is built), and the SBOMs
//! `build --sbom` writes beside a docker-archive or rootfs file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use nixlayer::manifest::LoadedManifest;
use nixlayer::ops::{self, settings};
use nixlayer::sbom::SbomFormat;
use nixlayer::sink::{OutputError, OutputFile};

use super::args::SbomArgs;
use super::printer::Printer;
use super::{layers, BoxError, UsageError};

/// The formats `--sbom` names, each once, in one order whatever the
/// order of the flags (SPDX first), so an output's bytes do not depend on it.
pub(super) fn formats(names: &[String]) -> Vec<SbomFormat> {
    let mut out: Vec<SbomFormat> = names
        .iter()
        .filter_map(|n| SbomFormat::from_name(n))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Runs `nixlayer sbom`.
pub(super) fn run(args: &SbomArgs, printer: Printer) -> Result<(), BoxError> {
    let format = SbomFormat::from_name(&args.format)
        .ok_or_else(|| UsageError(format!("unknown SBOM format `{}`", args.format)))?;
    let loaded = LoadedManifest::load(&args.manifest)?;
    let loaded = one_platform(&loaded, args.platform.as_deref())?;
    let mut overrides = settings::Overrides::default();
    overrides.tag.clone_from(&args.tag);
    let command = super::planning_settings(&loaded, overrides, &args.registry)?;
    if let Some(path) = &args.output {
        let inputs = super::build_inputs(&args.manifest, &command.settings);
        super::refuse_overwriting_inputs("-o", path, &inputs, false)?;
    }
    let settings = &command.settings;
    let (closure, plan) = ops::plan(settings).map_err(|e| layers::locate(&loaded, e))?;
    if let Some(path) = &args.output {
        super::refuse_output_in_closure("-o", path, settings, &closure)?;
    }
    let docs = ops::sbom::write_sboms(settings, &closure, &plan, &[format])?;
    let Some((_, bytes)) = docs.first() else {
        return Ok(());
    };
    match &args.output {
        Some(path) => {
            write_file(path, bytes)?;
            printer.info(&format!(
                "wrote the {} SBOM of {} ({} store path{}) → {}",
                format.name(),
                settings.name,
                plan.layers.iter().map(Vec::len).sum::<usize>(),
                super::plural(plan.layers.iter().map(Vec::len).sum::<usize>()),
                path.display()
            ));
        }
        None => {
            // The document's own bytes (it ends in a newline), as attached.
            let mut out = std::io::stdout().lock();
            out.write_all(bytes)?;
            out.flush()?;
        }
    }
    Ok(())
}

/// The manifest of the one platform an SBOM describes: the manifest
/// itself, or of a manifest with `[[platforms]]` the one `--platform`
/// names (a usage error without it).
fn one_platform(loaded: &LoadedManifest, wanted: Option<&str>) -> Result<LoadedManifest, BoxError> {
    let wanted = super::platform_option(wanted)?;
    if !loaded.is_multi_platform() && wanted.is_none() {
        return Ok(loaded.clone());
    }
    let manifests = loaded.platform_manifests(settings::host_architecture())?;
    let names: Vec<String> = manifests.iter().map(|(n, _)| n.to_string()).collect();
    let Some(wanted) = wanted else {
        return Err(UsageError(format!(
            "the manifest describes {} platforms ({}), one SBOM each: choose one with `--platform ARCH[/VARIANT]` (`build --sbom` attaches one to every platform's image)",
            names.len(),
            names.join(", ")
        ))
        .into());
    };
    Ok(super::the_platform(manifests, &wanted)?)
}

/// Writes `bytes` to `path` through a temporary file renamed into place.
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), BoxError> {
    let mut out = OutputFile::create(path)?;
    out.write_all(bytes).map_err(|source| OutputError::Commit {
        path: path.to_owned(),
        source,
    })?;
    out.commit()?;
    Ok(())
}

/// Where `build --sbom FORMAT` puts the SBOM of a docker-archive or
/// rootfs file `output`: beside it, `OUTPUT.spdx.json` or `OUTPUT.cdx.json`.
pub(super) fn beside_path(output: &Path, format: SbomFormat) -> PathBuf {
    let mut name = output.as_os_str().to_owned();
    name.push(format.extension());
    PathBuf::from(name)
}

/// `build --sbom` for a docker-archive or rootfs file: each SBOM written
/// beside the image ([`beside_path`]) through `opened`, the files opened
/// (so checked: not a directory, not an input) before the image was
/// written; the paths.
pub(super) fn write_beside(
    opened: Vec<(SbomFormat, PathBuf, OutputFile)>,
    settings: &ops::BuildSettings,
    image: &ops::PreparedImage,
) -> Result<Vec<PathBuf>, BoxError> {
    let formats: Vec<SbomFormat> = opened.iter().map(|(f, _, _)| *f).collect();
    let mut docs: std::collections::BTreeMap<SbomFormat, Vec<u8>> =
        ops::sbom::write_sboms(settings, &image.closure, &image.plan, &formats)?
            .into_iter()
            .collect();
    let mut written = Vec::with_capacity(opened.len());
    for (format, path, mut out) in opened {
        let bytes = docs.remove(&format).unwrap_or_default();
        out.write_all(&bytes)
            .map_err(|source| OutputError::Commit {
                path: path.clone(),
                source,
            })?;
        out.commit()?;
        written.push(path);
    }
    Ok(written)
}
