//! `nixlayer diff OLD NEW`: what an update from one image to another
//! changes and moves, as a table or as JSON ([`nixlayer::ops::diff`]).

use std::path::{Path, PathBuf};

use nixlayer::manifest::{LoadedManifest, PlatformName};
use nixlayer::ops::diff::{self, DiffImage, DiffLayer, ImageDiff};
use nixlayer::ops::settings;

use super::args::DiffArgs;
use super::printer::{self, Printer};
use super::BoxError;

/// Runs `nixlayer diff`.
pub(super) fn run(args: &DiffArgs, printer: Printer) -> Result<(), BoxError> {
    let platform = super::platform_option(args.platform.as_deref())?;
    let on_stdin = [&args.old, &args.new]
        .iter()
        .filter(|a| split_reference(a).0 == Path::new("-"))
        .count();
    if on_stdin == 2 {
        return Err(super::UsageError(
            "`-` (stdin) can be the old image or the new one, not both".to_owned(),
        )
        .into());
    }
    if on_stdin == 1 && args.registry.password_stdin {
        return Err(super::UsageError(
            "`--password-stdin` and an image on stdin (`-`) cannot share stdin: give the password in `NIXLAYER_REGISTRY_PASSWORD`".to_owned(),
        )
        .into());
    }
    // A manifest's registry base is reached as `build` reaches it (the
    // credentials, `--ca-file`, `--insecure`, the deadline): read once,
    // for both sides.
    let access = super::RegistryAccess::new(
        &args.registry,
        &super::PushEnv::capture(),
        None,
        &mut std::io::stdin().lock(),
    )?;
    let old = read(&args.old, platform.as_ref(), &access, printer)?;
    let new = read(&args.new, platform.as_ref(), &access, printer)?;
    let d = diff::diff(&old, &new);
    if args.json {
        printer.data(&nixlayer::oci::canonical_json(&d.to_json()))?;
    } else {
        // Store paths come from the archives' histories: hostile input,
        // whose escape sequences must not reach the terminal.
        printer.data(super::diagnostics::printable(&table(&d)).as_bytes())?;
    }
    Ok(())
}

/// One side: a manifest (by its `.toml` name) planned like `build`, else
/// an image archive or layout.
fn read(
    arg: &Path,
    platform: Option<&PlatformName>,
    access: &super::RegistryAccess,
    printer: Printer,
) -> Result<DiffImage, BoxError> {
    let (path, reference) = split_reference(arg);
    let path = path.as_path();
    if path == Path::new("-") {
        // An archive on stdin, as `docker load` and skopeo take `-`.
        let archive = nixlayer::archive::ImageArchive::open_stdin()?;
        return Ok(diff::from_image_archive(
            &archive,
            reference.as_deref(),
            platform,
        )?);
    }
    if path.extension().is_some_and(|e| e == "toml") {
        if reference.is_some() {
            return Err(super::UsageError(format!(
                "`{}`: a manifest describes one image (of each platform); `:NAME` picks one of an archive or layout",
                arg.display()
            ))
            .into());
        }
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
        let mut command = settings::resolve_build(
            &loaded,
            &settings::Overrides::default(),
            &settings::Environment::capture(),
        )?;
        access.reach_base(&mut command.settings)?;
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
        Ok(diff::from_archive_named(
            path,
            reference.as_deref(),
            platform,
        )?)
    }
}

/// `PATH:NAME`, one image of an archive or layout holding several tags
/// (as skopeo's `oci:PATH:NAME` and `docker-archive:PATH:NAME`): when
/// the argument is no file, the part before a `:` that is one is the path
/// and the rest the image's name. A file whose name has a `:` is itself.
fn split_reference(arg: &Path) -> (PathBuf, Option<String>) {
    let whole = (arg.to_owned(), None);
    if arg.symlink_metadata().is_ok() {
        return whole;
    }
    let Some(text) = arg.to_str() else {
        return whole;
    };
    // `-:NAME`: one image of the archive on stdin.
    if let Some(name) = text.strip_prefix("-:").filter(|n| !n.is_empty()) {
        return (PathBuf::from("-"), Some(name.to_owned()));
    }
    for (at, _) in text.match_indices(':') {
        let (path, name) = (&text[..at], &text[at + 1..]);
        if !path.is_empty() && !name.is_empty() && Path::new(path).symlink_metadata().is_ok() {
            return (PathBuf::from(path), Some(name.to_owned()));
        }
    }
    whole
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
