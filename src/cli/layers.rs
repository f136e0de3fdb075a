//! `nixlayer layers`: the layer plan of a manifest, as a table, as
//! nixpkgs' JSON, or as an HTML page ([`html`]) (SPEC §3, §6). Reads the
//! closure like `build`, but no store file.

mod html;

use std::io::Write as _;

use nixlayer::closure::ClosureGraph;
use nixlayer::manifest::{Layering, LoadedManifest};
use nixlayer::ops::{self, settings};
use nixlayer::plan::LayerPlan;
use nixlayer::sink::{OutputError, OutputFile};

use super::args::LayersArgs;
use super::printer::Printer;
use super::{printer, BoxError};

/// Runs `nixlayer layers`.
pub(super) fn run(args: &LayersArgs, printer: Printer) -> Result<(), BoxError> {
    let loaded = platform(
        LoadedManifest::load(&args.manifest)?,
        args.platform.as_deref(),
    )?;
    // The settings of a build of the same manifest: the plan is the build's.
    let command =
        super::planning_settings(&loaded, settings::Overrides::default(), &args.registry)?;
    if let Some(path) = &args.html {
        let inputs = super::build_inputs(&args.manifest, &command.settings);
        super::refuse_overwriting_inputs("--html", path, &inputs, false)?;
    }
    let (closure, plan) = ops::plan(&command.settings).map_err(|e| locate(&loaded, e))?;
    if let Some(path) = &args.html {
        super::refuse_output_in_closure("--html", path, &command.settings, &closure)?;
        let settings = &command.settings;
        let reference = match &settings.tag {
            Some(tag) => format!("{}:{tag}", settings.name),
            None => settings.name.clone(),
        };
        let mut out = OutputFile::create(path)?;
        out.write_all(html::render(&reference, &closure, &plan).as_bytes())
            .map_err(|source| OutputError::Commit {
                path: path.clone(),
                source,
            })?;
        out.commit()?;
        printer.info(&format!(
            "wrote the plan ({} store layer{}) → {}",
            plan.layers.len(),
            super::plural(plan.layers.len()),
            path.display()
        ));
        return Ok(());
    }
    let text = if args.json {
        json(&plan)
    } else {
        let mut text = table(&closure, &plan);
        text.push('\n');
        text.push_str(&matches(&loaded.layering()?));
        text
    };
    // Data for scripts: the printer's stdout, which ends it with a newline.
    printer.data(text.as_bytes())?;
    Ok(())
}

/// The manifest of the platform `--platform` names (a usage error when the
/// manifest does not describe it); without it the manifest itself, whose
/// top-level platform is planned, as `diff` compares it.
fn platform(loaded: LoadedManifest, wanted: Option<&str>) -> Result<LoadedManifest, BoxError> {
    let Some(wanted) = super::platform_option(wanted)? else {
        return Ok(loaded);
    };
    let manifests = loaded.platform_manifests(settings::host_architecture())?;
    Ok(super::the_platform(manifests, &wanted)?)
}

/// A planning error that is the pipeline's fault, pointed at the
/// pipeline's place in the manifest; other errors unchanged.
pub(super) fn locate(loaded: &LoadedManifest, err: ops::Error) -> BoxError {
    use nixlayer::closure;
    use nixlayer::layer;
    match (&err, loaded.layering()) {
        (ops::Error::Plan(e), Ok(Layering::Pipeline(p))) if e.is_pipeline() => {
            loaded.error_at(p.span(), e.to_string(), None).into()
        }
        (ops::Error::EntryCollision { path, field, .. }, _) => {
            match loaded.entry_span(field, path) {
                Some(span) => loaded
                    .error_at(
                        span,
                        err.to_string(),
                        Some(if loaded.manifest.customisation.contents.is_empty() {
                            format!("give `{path}` another path, or drop the entries inside it")
                        } else {
                            format!(
                                "give it another path, or leave it out of `contents`; `customisation.on_collision = \"first\"` keeps what `contents` puts at `{path}`"
                            )
                        }),
                    )
                    .into(),
                None => err.into(),
            }
        }
        // Errors about a `contents` store path point at its entry, as the
        // manifest's own errors do. A collision names the later one.
        (
            ops::Error::Layer(
                layer::Error::NotADirectory { path } | layer::Error::Collision { second: path, .. },
            ),
            _,
        ) => match loaded.contents_span(path) {
            Some(span) => loaded.error_at(span, err.to_string(), None).into(),
            None => err.into(),
        },
        // A store path registered without its whole closure: at
        // `include_nix_db`.
        (ops::Error::NixDbIncomplete { .. }, _) => match &loaded.manifest.closure.include_nix_db {
            Some(on) => loaded.error_at(on.span(), err.to_string(), None).into(),
            None => err.into(),
        },
        // A base image that leaves no layer for the store: at `max_layers`.
        (ops::Error::Budget { .. }, _) => match &loaded.manifest.max_layers {
            Some(max) => loaded.error_at(max.span(), err.to_string(), None).into(),
            None => err.into(),
        },
        // A permission rule that matches nothing points at its `path`.
        (ops::Error::Layer(layer::Error::UnmatchedRule { pattern }), _) => {
            match loaded.permission_span(pattern) {
                Some(span) => loaded.error_at(span, err.to_string(), None).into(),
                None => err.into(),
            }
        }
        // A `contents` path is a root of the closure too; one that is not
        // in the closure file is pointed at where it was given.
        (ops::Error::Closure(closure::Error::MissingRoot { root, .. }), _) => {
            let given = loaded
                .manifest
                .closure
                .roots
                .iter()
                .find(|r| r.get_ref().trim_end_matches('/') == root.as_str())
                .map(toml::Spanned::span)
                .or_else(|| loaded.contents_span(root.as_str()));
            match given {
                Some(span) => loaded.error_at(span, err.to_string(), None).into(),
                None => err.into(),
            }
        }
        _ => err.into(),
    }
}

/// Which nixpkgs behaviour the plan reproduces, for the table's last line
/// (the JSON stays exactly nixpkgs' output).
fn matches(layering: &Layering) -> String {
    let what = match layering {
        Layering::Auto => {
            "auto-layer: nixpkgs' current default (streamLayeredImage with layeringPipeline unset, PR #355189)"
        }
        Layering::Popularity => {
            "popularity: nixpkgs' default before PR #355189 ([[\"popularity_contest\"], [\"limit_layers\", N]])"
        }
        Layering::Pipeline(_) => "pipeline: nixpkgs' layeringPipeline DSL as given",
        // `Layering` is non-exhaustive; a new strategy names itself in
        // its own arm when it is added.
        _ => "a nixlayer strategy",
    };
    format!("layering: {what}")
}

/// nixpkgs' output: `json.dumps(layers, sort_keys=True, indent=2,
/// separators=(",", ": "))`, to be printed with a newline. Store paths are
/// ASCII, so Python's `\u` escaping never applies.
fn json(plan: &LayerPlan) -> String {
    let layers: Vec<Vec<&str>> = plan
        .layers
        .iter()
        .map(|l| l.iter().map(|p| p.as_str()).collect())
        .collect();
    serde_json::to_string_pretty(&layers).unwrap_or_else(|_| "[]".to_owned())
}

/// One row per store path: the layer number, path count and bytes (Σ
/// narSize) on each layer's first row, then a total, without the last
/// line's newline (the printer ends it).
///
/// Sums are `u128`: narSize comes from an untrusted closure file, and a few
/// sizes near 2^64 would wrap a `u64` (or panic in a debug build).
fn table(closure: &ClosureGraph, plan: &LayerPlan) -> String {
    let sizes: Vec<u128> = plan
        .layers
        .iter()
        .map(|l| {
            l.iter()
                .filter_map(|p| closure.get(p.as_str()))
                .map(|info| u128::from(info.nar_size))
                .sum()
        })
        .collect();
    let width = sizes
        .iter()
        .map(|s| s.to_string().len())
        .max()
        .unwrap_or(0)
        .max("bytes".len());
    let mut text = format!(
        "{:>5}  {:>5}  {:>width$}  path\n",
        "layer", "paths", "bytes"
    );
    for (i, (layer, size)) in plan.layers.iter().zip(&sizes).enumerate() {
        for (j, path) in layer.iter().enumerate() {
            if j == 0 {
                text.push_str(&format!(
                    "{:>5}  {:>5}  {size:>width$}  {path}\n",
                    i + 1,
                    layer.len()
                ));
            } else {
                text.push_str(&format!("{:>5}  {:>5}  {:>width$}  {path}\n", "", "", ""));
            }
        }
    }
    let paths: usize = plan.layers.iter().map(Vec::len).sum();
    // At most 2^64 paths of 2^64 bytes each: u128 cannot overflow here,
    // but saturate rather than trust that.
    let total: u128 = sizes.iter().fold(0, |sum, s| sum.saturating_add(*s));
    text.push_str(&format!(
        "{} store layer{}, {paths} path{}, {total} bytes ({})",
        plan.layers.len(),
        if plan.layers.len() == 1 { "" } else { "s" },
        if paths == 1 { "" } else { "s" },
        printer::bytes(u64::try_from(total).unwrap_or(u64::MAX)),
    ));
    text
}
