//! What the types cannot say: the checks run after parsing, and the typed
//! values the later stages use.
//!
//! Every accessor of [`LoadedManifest`] here checks its own keys and points
//! at the offending value's line; [`LoadedManifest::validate`] runs them all
//! and [`LoadedManifest::load`] calls it, so a loaded manifest's accessors
//! only fail if the manifest was changed after loading.

use std::path::PathBuf;

use toml::Spanned;

use super::hints::{nearest, SOURCE_FORMS};
use super::{Error, LoadedManifest, SourceSpec};
use crate::codec::Compression;

/// The layer budget when `max_layers` is not set (nixpkgs' `maxLayers` default).
pub const DEFAULT_MAX_LAYERS: u32 = 100;

/// The store directory when `store.dir` is not set.
pub const DEFAULT_STORE_DIR: &str = "/nix/store";

/// The table keys of `closure.source`, in SPEC §2 order.
pub(super) const SOURCE_KEYS: [&str; 5] =
    ["registration", "graph", "path_info", "dot", "binary_cache"];

/// The `[config]` keys: the OCI image config's, plus docker's `OnBuild` and
/// `Shell`, which docker and podman honour. A misspelt key would otherwise
/// be copied into the config and silently ignored by every runtime.
pub(super) const CONFIG_KEYS: [&str; 16] = [
    "User",
    "ExposedPorts",
    "Env",
    "Entrypoint",
    "Cmd",
    "Volumes",
    "WorkingDir",
    "Labels",
    "StopSignal",
    "ArgsEscaped",
    "Memory",
    "MemorySwap",
    "CpuShares",
    "Healthcheck",
    "OnBuild",
    "Shell",
];

/// Where the closure's references come from (`closure.source`, SPEC §2),
/// with file paths resolved against the manifest's directory.
///
/// It mirrors `closure::Source` without importing it, because the manifest
/// stage comes first and never depends on a later one (STYLE 1).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClosureSource {
    /// Ask the local store with `nix-store` (the default).
    NixStore,
    /// A `registration` file (closureInfo, `nix-store --dump-db`).
    Registration(PathBuf),
    /// exportReferencesGraph JSON.
    Graph(PathBuf),
    /// `nix path-info --json --recursive` output.
    PathInfo(PathBuf),
    /// `nix-store --query --graph` output.
    Dot(PathBuf),
}

/// `[output] format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum OutputFormat {
    /// A `docker load` archive (the default).
    DockerArchive,
    /// An OCI image layout directory.
    OciLayout,
    /// An OCI image layout in a tar.
    OciArchive,
    /// One tar of the merged filesystem, no image metadata (for `docker
    /// import`, `machinectl import-tar`, WSL, a microVM root).
    Rootfs,
}

impl OutputFormat {
    /// Every format, in SPEC order.
    pub const ALL: [Self; 4] = [
        Self::DockerArchive,
        Self::OciLayout,
        Self::OciArchive,
        Self::Rootfs,
    ];

    /// The manifest / CLI spelling.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::DockerArchive => "docker-archive",
            Self::OciLayout => "oci-layout",
            Self::OciArchive => "oci-archive",
            Self::Rootfs => "rootfs",
        }
    }

    /// The format spelt `name`, if any.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// How the store layers are planned (`[layering]`, SPEC §3).
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Layering {
    /// `strategy = "popularity"`: popularity contest, then `limit_layers`
    /// to the budget: nixpkgs' default from PR #122608 until PR #355189.
    Popularity,
    /// `strategy = "auto"` or nothing: nixpkgs' auto-layer algorithm
    /// (reference §C.6) within the same budget: current nixpkgs' default
    /// (`layeringPipeline` unset, PR #355189).
    Auto,
    /// `pipeline = […]`: the nixpkgs DSL, verbatim, with its span so the
    /// plan's errors can point at it through [`LoadedManifest::error_at`].
    Pipeline(Spanned<serde_json::Value>),
}

/// The valid values of a string key, for messages.
fn one_of(values: &[&str]) -> String {
    let quoted: Vec<String> = values.iter().map(|v| format!("`{v}`")).collect();
    quoted.join(" | ")
}

impl LoadedManifest {
    /// Runs every check the types cannot express, so that each accessor
    /// below succeeds afterwards. [`LoadedManifest::load`] calls it.
    ///
    /// # Errors
    /// The invalid value that comes first in the file.
    pub fn validate(&self) -> Result<(), Error> {
        let errors = [
            self.store_dir().err(),
            self.max_layers().err(),
            self.closure_source().err(),
            self.check_config().err(),
            self.layering().err(),
            self.output_format().err(),
            self.compression().err(),
            self.customisation().err(),
            self.base_image().err(),
            self.accounts().err(),
        ];
        // Report the first problem in reading order, as a compiler would.
        let first = errors.into_iter().flatten().min_by_key(|e| match e {
            Error::Invalid { line, column, .. } => (*line, *column),
            // No check makes these; were one to, it would come first.
            Error::Io { .. } | Error::Flag { .. } | Error::Environment { .. } => (0, 0),
        });
        first.map_or(Ok(()), Err)
    }

    /// `store.dir`, default `/nix/store`, without a trailing slash.
    ///
    /// # Errors
    /// When it is not an absolute path below `/`.
    pub fn store_dir(&self) -> Result<&str, Error> {
        let Some(dir) = &self.manifest.store.dir else {
            return Ok(DEFAULT_STORE_DIR);
        };
        let trimmed = dir.get_ref().trim_end_matches('/');
        if !dir.get_ref().starts_with('/') || trimmed.is_empty() {
            return Err(self.error_at(
                dir.span(),
                format!(
                    "`store.dir` must be an absolute directory, found `{}`",
                    dir.get_ref()
                ),
                Some(format!("the usual value is `{DEFAULT_STORE_DIR}`")),
            ));
        }
        Ok(trimmed)
    }

    /// `store.root`, default `/`, resolved against the manifest's directory.
    #[must_use]
    pub fn store_root(&self) -> PathBuf {
        self.manifest
            .store
            .root
            .as_ref()
            .map_or_else(|| PathBuf::from("/"), |root| self.resolve(root.get_ref()))
    }

    /// `max_layers`, default [`DEFAULT_MAX_LAYERS`].
    ///
    /// # Errors
    /// When it is below 2: the customisation layer takes one, and a store
    /// layer needs at least one more.
    pub fn max_layers(&self) -> Result<u32, Error> {
        let Some(max) = &self.manifest.max_layers else {
            return Ok(DEFAULT_MAX_LAYERS);
        };
        if *max.get_ref() < 2 {
            return Err(self.error_at(
                max.span(),
                format!("`max_layers` must be at least 2, found {}", max.get_ref()),
                Some(
                    "one layer is the customisation layer; store paths need at least one more"
                        .to_owned(),
                ),
            ));
        }
        Ok(*max.get_ref())
    }

    /// `closure.source`, default `nix-store`, file paths resolved against
    /// the manifest's directory.
    ///
    /// # Errors
    /// When it is not one of the forms of SPEC §2, names an empty file, or
    /// is a `binary_cache`, which is not supported yet.
    pub fn closure_source(&self) -> Result<ClosureSource, Error> {
        let Some(source) = &self.manifest.closure.source else {
            return Ok(ClosureSource::NixStore);
        };
        let span = source.span();
        match source.get_ref() {
            SourceSpec::Named(name) if name == "nix-store" => Ok(ClosureSource::NixStore),
            SourceSpec::Named(name) if SOURCE_KEYS.contains(&name.as_str()) => Err(self.error_at(
                span,
                format!("closure source `{name}` needs a file"),
                Some(format!("write `source = {{ {name} = \"FILE\" }}`")),
            )),
            SourceSpec::Named(name) => Err(self.error_at(
                span,
                format!("unknown closure source `{name}`"),
                Some(match nearest(name, &["nix-store"]) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => SOURCE_FORMS.to_owned(),
                }),
            )),
            SourceSpec::File(table) => {
                let mut entries = table.iter();
                let (Some((key, file)), None) = (entries.next(), entries.next()) else {
                    return Err(self.error_at(
                        span,
                        format!(
                            "`closure.source` must have exactly one key, found {}",
                            table.len()
                        ),
                        Some(SOURCE_FORMS.to_owned()),
                    ));
                };
                if file.as_os_str().is_empty() {
                    return Err(self.error_at(
                        span,
                        format!("`closure.source.{key}` names no file"),
                        None,
                    ));
                }
                let file = self.resolve(file);
                match key.as_str() {
                    "registration" => Ok(ClosureSource::Registration(file)),
                    "graph" => Ok(ClosureSource::Graph(file)),
                    "path_info" => Ok(ClosureSource::PathInfo(file)),
                    "dot" => Ok(ClosureSource::Dot(file)),
                    "binary_cache" => Err(self.error_at(
                        span,
                        "closure source `binary_cache` is not supported yet".to_owned(),
                        Some(
                            "use `nix copy` or `nix-store --realise`, then a local source"
                                .to_owned(),
                        ),
                    )),
                    other => Err(self.error_at(
                        span,
                        format!("unknown closure source `{other}`"),
                        match nearest(other, &SOURCE_KEYS[..4]) {
                            Some(near) => Some(format!("did you mean `{near}`?")),
                            None => Some(SOURCE_FORMS.to_owned()),
                        },
                    )),
                }
            }
        }
    }

    /// `[layering]`: a verbatim pipeline or a strategy, default auto (what
    /// current nixpkgs does when `layeringPipeline` is unset).
    ///
    /// # Errors
    /// When both `pipeline` and `strategy` are set, the strategy is
    /// unknown, or the pipeline is not an array.
    pub fn layering(&self) -> Result<Layering, Error> {
        let layering = &self.manifest.layering;
        match (&layering.pipeline, &layering.strategy) {
            (Some(pipeline), Some(strategy)) => {
                // Point at whichever comes second: that is the line that
                // contradicts the first.
                let span = if strategy.span().start > pipeline.span().start {
                    strategy.span()
                } else {
                    pipeline.span()
                };
                Err(self.error_at(
                    span,
                    "`layering.pipeline` and `layering.strategy` cannot both be set".to_owned(),
                    Some("keep one of them".to_owned()),
                ))
            }
            (Some(pipeline), None) => {
                if pipeline.get_ref().is_array() {
                    Ok(Layering::Pipeline(pipeline.clone()))
                } else {
                    Err(self.error_at(
                        pipeline.span(),
                        "`layering.pipeline` must be an array of operations".to_owned(),
                        Some(
                            "for example `pipeline = [[\"popularity_contest\"], [\"limit_layers\", 99]]`"
                                .to_owned(),
                        ),
                    ))
                }
            }
            (None, Some(strategy)) => match strategy.get_ref().as_str() {
                "popularity" => Ok(Layering::Popularity),
                "auto" => Ok(Layering::Auto),
                other => Err(self.unknown_value(
                    strategy.span(),
                    "layering.strategy",
                    other,
                    &["popularity", "auto"],
                )),
            },
            (None, None) => Ok(Layering::Auto),
        }
    }

    /// `[output] format`, default docker-archive.
    ///
    /// # Errors
    /// When it is unknown.
    pub fn output_format(&self) -> Result<OutputFormat, Error> {
        let Some(format) = &self.manifest.output.format else {
            return Ok(OutputFormat::DockerArchive);
        };
        let names = OutputFormat::ALL.map(OutputFormat::name);
        OutputFormat::from_name(format.get_ref()).ok_or_else(|| {
            self.unknown_value(format.span(), "output.format", format.get_ref(), &names)
        })
    }

    /// `[output] compression`, default none.
    ///
    /// # Errors
    /// When it is unknown or not implemented yet.
    pub fn compression(&self) -> Result<Compression, Error> {
        let Some(compression) = &self.manifest.output.compression else {
            return Ok(Compression::None);
        };
        let names = Compression::WRITABLE.map(Compression::name);
        match Compression::from_name(compression.get_ref()) {
            Some(c) => Ok(c),
            None => Err(self.unknown_value(
                compression.span(),
                "output.compression",
                compression.get_ref(),
                &names,
            )),
        }
    }

    fn unknown_value(
        &self,
        span: std::ops::Range<usize>,
        key: &str,
        value: &str,
        valid: &[&str],
    ) -> Error {
        let hint = match nearest(value, valid) {
            Some(near) => format!("did you mean `{near}`?"),
            None => format!("`{key}` is one of {}", one_of(valid)),
        };
        self.error_at(span, format!("unknown `{key}` value `{value}`"), Some(hint))
    }
}
