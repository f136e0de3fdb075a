//! `nixlayer diff OLD NEW`: what an update from one image to another
//! changes and moves, as a table or as JSON ([`nixlayer::ops::diff`]).

use std::path::Path;

use nixlayer::manifest::{LoadedManifest, PlatformName};
use nixlayer::ops::diff::{self, DiffImage, DiffLayer, ImageDiff};
use nixlayer::ops::settings;

use super::args::DiffArgs;
use super::printer::{self, Printer};
use super::BoxError;

/// Runs `nixlayer diff`.
pub(super) fn run(args: &DiffArgs, printer: Printer) -> Result<(), BoxError> {
    let platform = super::platform_option(args.platform.as_deref())?;
    let old = read(&args.old, platform.as_ref(), printer)?;
    let new = read(&args.new, platform.as_ref(), printer)?;
    let d = diff::diff(&old, &new);
    if args.json {
        printer.data(&nixlayer::oci::canonical_json(&d.to_json()))?;
    } else {
        printer.data(table(&d).as_bytes())?;
    }
    Ok(())
}

/// One side: a manifest (by its `.toml` name) planned like `build`, else
/// an image archive or layout.
fn read(
    path: &Path,
    platform: Option<&PlatformName>,
    printer: Printer,
) -> Result<DiffImage, BoxError> {
    if path.extension().is_some_and(|e| e == "toml") {
        let mut loaded = LoadedManifest::load(path)?;
        if loaded.is_multi_platform() || platform.is_some() {
            // One platform's manifest: `--platform`'s, else the default
            // (top-level) one, as a build for the host names it.
            let all = loaded.platform_manifests(settings::host_architecture())?;
            let names: Vec<String> = all.iter().map(|(n, _)| n.to_string()).collect();
            let found = match platform {
                Some(wanted) => all.into_iter().find(|(n, _)| {
                    n.architecture == wanted.architecture
                        && (wanted.variant.is_none() || n.is_same_platform(wanted))
                }),
                None => all.into_iter().next(),
            };
            let Some((_, one)) = found else {
                return Err(super::UsageError(format!(
                    "--platform `{}` is not in `{}`, which describes {}",
                    platform.map(ToString::to_string).unwrap_or_default(),
                    path.display(),
                    names.join(", ")
                ))
                .into());
            };
            loaded = one;
        }
        let command = settings::resolve_build(
            &loaded,
            &settings::Overrides::default(),
            &settings::Environment::capture(),
        )?;
        for w in &command.warnings {
            printer.warn(w);
        }
        // Layers as the manifest's output stores them: compressed one by
        // one in an OCI output; a docker-archive holds them plain (its
        // compression is of the whole file).
        let oci = matches!(
            command.format,
            nixlayer::manifest::OutputFormat::OciLayout
                | nixlayer::manifest::OutputFormat::OciArchive
        );
        Ok(
            diff::from_settings_stored(&command.settings, oci.then_some(&command.compress))
                .map_err(|e| super::layers::locate(&loaded, e))?,
        )
    } else {
        Ok(diff::from_archive(path, platform)?)
    }
}

fn short(layer: &DiffLayer) -> String {
    layer.diff_id.hex()[..12].to_owned()
}

/// The human view: paths, then layers, then bytes.
fn table(d: &ImageDiff) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "store paths: {} added, {} removed, {} changed\n",
        d.added.len(),
        d.removed.len(),
        d.changed.len()
    ));
    for p in &d.added {
        out.push_str(&format!("  + {p}\n"));
    }
    for p in &d.removed {
        out.push_str(&format!("  - {p}\n"));
    }
    for c in &d.changed {
        out.push_str(&format!("  ~ {} -> {}\n", c.old, c.new));
    }
    let reblobbed = if d.kept_reblobbed.is_empty() {
        String::new()
    } else {
        format!(
            " ({} of them stored another way, pushed again)",
            d.kept_reblobbed.len()
        )
    };
    out.push_str(&format!(
        "layers: {} kept{reblobbed}, {} added, {} dropped\n",
        d.kept.len(),
        d.added_layers.len(),
        d.dropped_layers.len()
    ));
    for (mark, layers) in [
        ("=", &d.kept),
        ("+", &d.added_layers),
        ("-", &d.dropped_layers),
    ] {
        for l in layers {
            // `*`: same content (diff_id) in a blob the old image lacks.
            let mark = if mark == "=" && d.kept_reblobbed.contains(l) {
                "*"
            } else {
                mark
            };
            out.push_str(&format!(
                "  {mark} {}  {:>10}  {} path{}\n",
                short(l),
                printer::bytes(l.blob_size),
                l.store_paths.len(),
                super::plural(l.store_paths.len())
            ));
        }
    }
    if d.config_changed.is_empty() {
        out.push_str("config: no setting changed\n");
    } else {
        out.push_str(&format!(
            "config: {} changed\n",
            d.config_changed.join(", ")
        ));
    }
    out.push_str(&format!(
        "update pushes {} ({} layers + {} config + {} manifest); a client with the old image pulls the same",
        printer::bytes(d.push_bytes()),
        printer::bytes(d.layer_bytes()),
        printer::bytes(d.config_size),
        printer::bytes(d.manifest_size)
    ));
    out
}
