//! Resolves a manifest, the command-line overrides and the environment into
//! library settings. This is the only place that reads the clock and the
//! environment (`SOURCE_DATE_EPOCH`, the host architecture).

use std::path::PathBuf;

use crate::build::{BuildSettings, ContentSettings, CustomFile};
use crate::closure::Source;
use crate::image::ConfigSpec;
use crate::layer::customisation::{FileData, OnCollision};
use crate::layer::{Owner, Permissions};
use crate::manifest::{
    ClosureSource, Compression, CustomFileContent, Error, Layering, LoadedManifest, OutputFormat,
};
use crate::nix::{StoreDir, StorePath};
use crate::plan::Pipeline;
use crate::sink::compress::{Codec, CompressOptions};
use crate::store::StoreLocation;

use super::args::BuildArgs;

/// Values from outside the manifest that a build may depend on.
#[derive(Clone, Debug)]
pub struct Environment {
    /// The current time, used for `"now"`.
    pub now: jiff::Timestamp,
    /// `SOURCE_DATE_EPOCH`, when set.
    pub source_date_epoch: Option<String>,
    /// The layer cache directory: `$XDG_CACHE_HOME/nixlayer/layers`, else
    /// `$HOME/.cache/nixlayer/layers`; `None` when neither is set.
    pub cache_dir: Option<PathBuf>,
}

impl Environment {
    /// Reads the clock and the environment.
    #[must_use]
    pub fn capture() -> Self {
        Self {
            now: jiff::Timestamp::now(),
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
            cache_dir: std::env::var_os("XDG_CACHE_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .filter(|d| !d.is_empty())
                        .map(|h| PathBuf::from(h).join(".cache"))
                })
                .map(|d| d.join("nixlayer").join("layers")),
        }
    }
}

impl Environment {
    /// `SOURCE_DATE_EPOCH` in seconds, else nixpkgs' default time (one
    /// second after the epoch): the member times of archives nixlayer
    /// writes without a manifest (`merge`).
    ///
    /// # Errors
    /// When `SOURCE_DATE_EPOCH` is not a number of seconds.
    pub fn source_date_epoch_or_default(&self) -> Result<u64, Error> {
        match &self.source_date_epoch {
            Some(epoch) => epoch.trim().parse::<u64>().map_err(|_| Error::Invalid {
                path: PathBuf::from("SOURCE_DATE_EPOCH"),
                line: 1,
                column: 1,
                message: format!("`{epoch}` is not a number of seconds since the epoch"),
                hint: None,
            }),
            None => Ok(1),
        }
    }
}

/// A resolved `build` command.
#[derive(Debug)]
pub struct BuildCommand {
    /// What to build.
    pub settings: BuildSettings,
    /// Where to write it; `None` for stdout.
    pub output: Option<PathBuf>,
    /// Warnings to show before building.
    pub warnings: Vec<String>,
    /// The output format.
    pub format: OutputFormat,
    /// How the output is compressed.
    pub compress: CompressOptions,
    /// Print the summary as JSON on stdout.
    pub json: bool,
}

/// nixpkgs' default for both timestamps: one second after the epoch, so
/// tools that treat 0 as "unset" still show a date.
pub(super) const DEFAULT_TIME: &str = "1970-01-01T00:00:01Z";

/// The host's architecture in GOARCH spelling, as image configs use.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Resolves `build` from its arguments, the loaded manifest and the environment.
///
/// # Errors
/// When a manifest value is invalid; the error points at its line.
pub fn resolve_build(
    args: &BuildArgs,
    loaded: &LoadedManifest,
    env: &Environment,
) -> Result<BuildCommand, Error> {
    let m = &loaded.manifest;
    let mut warnings = Vec::new();

    let (name, tag) = match &args.tag {
        Some(reference) => split_reference(reference),
        None => (
            m.name.get_ref().clone(),
            m.tag.as_ref().map(|t| t.get_ref().clone()),
        ),
    };
    let name = name.to_lowercase();
    if let Some(reason) = invalid_name(&name) {
        let message = format!("`{name}` is not a valid image name: {reason}");
        return Err(match &args.tag {
            Some(_) => Error::Invalid {
                path: PathBuf::from("--tag"),
                line: 1,
                column: 1,
                message,
                hint: None,
            },
            None => loaded.error_at(m.name.span(), message, None),
        });
    }
    if let Some(t) = &tag {
        if !valid_tag(t) {
            let message = format!("`{t}` is not a valid tag: use up to 128 of `A-Za-z0-9_.-`, not starting with `.` or `-`");
            return Err(match (&args.tag, &m.tag) {
                (None, Some(span)) => loaded.error_at(span.span(), message, None),
                _ => Error::Invalid {
                    path: PathBuf::from("--tag"),
                    line: 1,
                    column: 1,
                    message,
                    hint: None,
                },
            });
        }
    }

    let created = match &m.created {
        Some(c) => parse_time(loaded, c, env)?,
        None => match &env.source_date_epoch {
            Some(epoch) => epoch
                .trim()
                .parse::<i64>()
                .ok()
                .and_then(|s| jiff::Timestamp::from_second(s).ok())
                .ok_or_else(|| Error::Invalid {
                    path: PathBuf::from("SOURCE_DATE_EPOCH"),
                    line: 1,
                    column: 1,
                    message: format!("`{epoch}` is not a number of seconds since the epoch"),
                    hint: None,
                })?,
            None => DEFAULT_TIME.parse().unwrap_or(jiff::Timestamp::UNIX_EPOCH),
        },
    };
    let mtime_ts = match &m.mtime {
        Some(t) => parse_time(loaded, t, env)?,
        None => {
            if m.created.as_ref().is_some_and(|c| c.get_ref() == "now") {
                warnings.push(
                    "`created = \"now\"` without `mtime`: file times follow `created`, so every layer digest changes on every build; set `mtime` to keep layers reusable".to_owned(),
                );
            }
            created
        }
    };
    let mtime = u64::try_from(mtime_ts.as_second()).map_err(|_| {
        let span = m
            .mtime
            .as_ref()
            .or(m.created.as_ref())
            .map_or(0..0, toml::Spanned::span);
        loaded.error_at(
            span,
            format!("`{mtime_ts}` is before 1970: tar file times cannot be negative"),
            None,
        )
    })?;

    let max_layers = loaded.max_layers()?;
    let store_dir = match &m.store.dir {
        Some(d) => StoreDir::new(loaded.store_dir()?)
            .map_err(|e| loaded.error_at(d.span(), e.to_string(), None))?,
        None => StoreDir::default(),
    };
    let store_root = loaded.store_root();
    let parse_paths = |list: &[toml::Spanned<String>]| {
        list.iter()
            .map(|p| {
                StorePath::parse(&store_dir, p.get_ref()).map_err(|e| {
                    loaded.error_at(
                        p.span(),
                        e.to_string(),
                        Some(format!("`store.dir` is `{store_dir}`")),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let roots = parse_paths(&m.closure.roots)?;
    let exclude = parse_paths(&m.closure.exclude)?;
    let source = match loaded.closure_source()? {
        ClosureSource::Registration(p) => Source::Registration(p),
        ClosureSource::Graph(p) => Source::Graph(p),
        ClosureSource::PathInfo(p) => Source::PathInfo(p),
        ClosureSource::Dot(p) => Source::Dot(p),
        _ => Source::NixStore,
    };

    let mut default_budget = None;
    let pipeline = match loaded.layering()? {
        Layering::Pipeline(p) => Pipeline::parse(p.get_ref())
            .map_err(|e| loaded.error_at(p.span(), e.to_string(), None))?,
        // SPEC §3: the budget leaves one layer for the customisation layer;
        // `max_layers()` guarantees at least 2. A base image takes more,
        // which `build` subtracts once it has read the base.
        Layering::Auto => {
            default_budget = Some(max_layers);
            Pipeline::auto(max_layers.saturating_sub(1) as usize)
        }
        _ => {
            default_budget = Some(max_layers);
            Pipeline::popularity(max_layers.saturating_sub(1) as usize)
        }
    };
    let config: serde_json::Map<String, serde_json::Value> = m
        .config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();

    let owner = Owner {
        uid: m.owner.uid.unwrap_or(0),
        gid: m.owner.gid.unwrap_or(0),
        uname: m.owner.uname.clone().unwrap_or_else(|| "root".to_owned()),
        gname: m.owner.gname.clone().unwrap_or_else(|| "root".to_owned()),
    };

    let content = resolve_content(loaded, &store_dir, default_budget)?;

    let cache = if args.no_cache {
        None
    } else {
        env.cache_dir
            .clone()
            .map(crate::layer::cache::LayerCache::new)
    };
    let settings = BuildSettings {
        cache,
        name,
        tag,
        config: ConfigSpec {
            created: created.to_string(),
            architecture: m
                .architecture
                .as_ref()
                .map_or_else(|| host_architecture().to_owned(), |a| a.get_ref().clone()),
            os: m
                .os
                .as_ref()
                .map_or_else(|| "linux".to_owned(), |o| o.get_ref().clone()),
            variant: m.variant.as_ref().map(|v| v.get_ref().clone()),
            config,
        },
        store: StoreLocation {
            dir: store_dir,
            root: store_root,
        },
        roots,
        source,
        exclude,
        pipeline,
        owner,
        mtime,
        content,
    };
    let format = match &args.format {
        Some(name) => OutputFormat::from_name(name).ok_or_else(|| cli_error("--format", name))?,
        None => loaded.output_format()?,
    };
    let compression = match &args.compression {
        Some(name) => {
            Compression::from_name(name).ok_or_else(|| cli_error("--compression", name))?
        }
        None => loaded.compression()?,
    };
    let compress = resolve_compress(
        codec(compression),
        args.level,
        m.output.level.as_ref().map(|l| (l, loaded)),
        args.threads,
    )?;
    Ok(BuildCommand {
        settings,
        output: args.output.clone(),
        warnings,
        format,
        compress,
        json: args.json,
    })
}

/// The writer's codec for the manifest's compression.
#[must_use]
pub fn codec(compression: Compression) -> Codec {
    match compression {
        Compression::Gzip => Codec::Gzip,
        Compression::Zstd => Codec::Zstd,
        _ => Codec::None,
    }
}

fn cli_error(flag: &str, value: &str) -> Error {
    Error::Invalid {
        path: PathBuf::from(flag),
        line: 1,
        column: 1,
        message: format!("unknown value `{value}`"),
        hint: None,
    }
}

/// The compression settings from `--level` (first), `[output] level`, the
/// codec's default, and `--threads` (default: every core the process may
/// use).
///
/// # Errors
/// When the level is out of the codec's range; the error points at
/// `--level` or the manifest's line.
pub fn resolve_compress(
    codec: Codec,
    cli_level: Option<i32>,
    manifest_level: Option<(&toml::Spanned<i32>, &LoadedManifest)>,
    threads: Option<std::num::NonZeroUsize>,
) -> Result<CompressOptions, Error> {
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN)
    });
    let level = cli_level
        .or_else(|| manifest_level.map(|(l, _)| *l.get_ref()))
        .unwrap_or_else(|| codec.default_level());
    let levels = codec.levels();
    // A level means nothing without compression; ignore it there.
    if codec != Codec::None && !levels.contains(&level) {
        let message = format!(
            "{} level {level} is out of range {}-{}",
            codec.name(),
            levels.start(),
            levels.end()
        );
        return Err(match (cli_level, manifest_level) {
            (None, Some((span, loaded))) => loaded.error_at(span.span(), message, None),
            _ => Error::Invalid {
                path: PathBuf::from("--level"),
                line: 1,
                column: 1,
                message,
                hint: None,
            },
        });
    }
    Ok(CompressOptions {
        codec,
        level: if codec == Codec::None { 0 } else { level },
        threads,
    })
}

/// `[customisation]`, `[base]` and the closure's content switches.
fn resolve_content(
    loaded: &LoadedManifest,
    store_dir: &StoreDir,
    default_budget: Option<u32>,
) -> Result<ContentSettings, Error> {
    let m = &loaded.manifest;
    let custom = loaded.customisation()?;
    let contents = custom
        .contents
        .iter()
        .map(|p| {
            StorePath::parse(store_dir, p.get_ref()).map_err(|e| {
                loaded.error_at(
                    p.span(),
                    e.to_string(),
                    Some(format!("`store.dir` is `{store_dir}`")),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let files = custom
        .files
        .into_iter()
        .map(|f| CustomFile {
            path: f.path,
            data: match f.content {
                CustomFileContent::Text(text) => FileData::Inline(text.into_bytes()),
                CustomFileContent::Source(path) => FileData::Disk(path),
            },
            mode: f.mode,
        })
        .collect();
    Ok(ContentSettings {
        contents,
        on_collision: if custom.first_wins {
            OnCollision::First
        } else {
            OnCollision::Error
        },
        files,
        dirs: custom.dirs,
        symlinks: custom.symlinks,
        permissions: Permissions::new(custom.permissions),
        include_store_paths: m.closure.include_store_paths.unwrap_or(true),
        include_nix_db: m.closure.include_nix_db.unwrap_or(false),
        base: loaded.base_image()?,
        default_budget,
    })
}

fn parse_time(
    loaded: &LoadedManifest,
    value: &toml::Spanned<String>,
    env: &Environment,
) -> Result<jiff::Timestamp, Error> {
    let text = value.get_ref();
    if text == "now" {
        return Ok(env.now);
    }
    text.parse::<jiff::Timestamp>().map_err(|_| {
        loaded.error_at(
            value.span(),
            format!("`{text}` is not an RFC 3339 time"),
            Some(
                "write e.g. `1970-01-01T00:00:01Z`, `2024-05-01T12:00:00+02:00` or `now`"
                    .to_owned(),
            ),
        )
    })
}

/// `NAME[:TAG]`; a colon inside the registry host (`host:5000/x`) is not a tag.
fn split_reference(reference: &str) -> (String, Option<String>) {
    match reference.rfind(':') {
        Some(i) if !reference[i + 1..].contains('/') => (
            reference[..i].to_owned(),
            Some(reference[i + 1..].to_owned()),
        ),
        _ => (reference.to_owned(), None),
    }
}

/// Why `name` is not a docker/OCI repository name (after lowercasing).
pub(super) fn invalid_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.len() > 255 {
        return Some("it is longer than 255 characters");
    }
    let mut parts: Vec<&str> = name.split('/').collect();
    // A first part with `.` or `:` or `localhost` is a registry host (port allowed).
    if parts.len() > 1 && (parts[0].contains(['.', ':']) || parts[0] == "localhost") {
        let host = parts.remove(0);
        let (h, port) = host.split_once(':').unwrap_or((host, ""));
        if h.is_empty()
            || !h
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'.' || c == b'-')
            || !port.bytes().all(|c| c.is_ascii_digit())
        {
            return Some("its registry host is malformed");
        }
    }
    for part in parts {
        let ok = !part.is_empty()
            && part
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(&c))
            && part.as_bytes()[0].is_ascii_alphanumeric()
            && part.as_bytes()[part.len() - 1].is_ascii_alphanumeric();
        if !ok {
            return Some("each `/`-separated part must be lowercase letters and digits, joined by `.`, `_` or `-`");
        }
    }
    None
}

pub(super) fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
        && !tag.starts_with(['.', '-'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_tag_colon_only() {
        assert_eq!(split_reference("a/b:1"), ("a/b".into(), Some("1".into())));
        assert_eq!(split_reference("host:5000/b"), ("host:5000/b".into(), None));
        assert_eq!(
            split_reference("host:5000/b:t"),
            ("host:5000/b".into(), Some("t".into()))
        );
    }

    #[test]
    fn names_and_tags() {
        assert_eq!(invalid_name("registry.example.com/team/hello"), None);
        assert_eq!(invalid_name("localhost:5000/x"), None);
        assert_eq!(invalid_name("hello"), None);
        assert!(invalid_name("a//b").is_some());
        assert!(invalid_name("-a").is_some());
        assert!(invalid_name("a b").is_some());
        assert!(valid_tag("1.0_rc-1"));
        assert!(!valid_tag(".x"));
        assert!(!valid_tag("a:b"));
    }
}
