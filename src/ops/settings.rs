//! Resolves a manifest, overrides (what a command line or a library caller
//! changes) and the environment into library settings. The clock and the
//! environment are read only by [`Environment::capture`], so a caller that
//! builds an [`Environment`] itself gets the same bytes every time.

use std::path::PathBuf;

use super::{AddedFile, BuildSettings, ContentSettings};
use crate::closure::Source;
use crate::codec::{CompressOptions, Compression};
use crate::image::pull::{self, PullSpec};
use crate::image::ConfigSpec;
use crate::layer::cache::LayerCache;
use crate::layer::customisation::{FileData, OnCollision};
use crate::layer::{Owner, PermissionRule, Permissions};
use crate::manifest::{BaseSource, BinaryCacheSource, DEFAULT_NAR_CACHE_MAX_BYTES};
use crate::manifest::{
    ClosureSource, CustomFileContent, Error, Layering, LoadedManifest, OutputFormat,
    PermissionOverride,
};
use crate::nix::narinfo::PublicKey;
use crate::nix::{StoreDir, StorePath};
use crate::plan::Pipeline;
use crate::store::binary_cache::{Auth, CacheError};
use crate::store::{AnyStore, BinaryCache, CacheOptions, StoreLocation};

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
    /// What a build from a binary cache reads from the environment.
    pub binary_cache: CacheEnvironment,
}

/// nixlayer's cache directory, `$XDG_CACHE_HOME/nixlayer`, else
/// `$HOME/.cache/nixlayer`; `None` when neither is set. The one place that
/// reads where caches go: layers, verified NARs and pulled images live in
/// folders of it.
#[must_use]
pub fn nixlayer_cache_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })
        .map(|d| d.join("nixlayer"))
}

/// What a build from a binary cache takes from the environment.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct CacheEnvironment {
    /// The verified NAR cache: `$XDG_CACHE_HOME/nixlayer/nar`, else
    /// `$HOME/.cache/nixlayer/nar`; `None` when neither is set.
    pub nar_cache_dir: Option<PathBuf>,
    /// `$HOME/.netrc`, the netrc file when the manifest names none (as Nix);
    /// a bearer token from `NIXLAYER_CACHE_TOKEN`. `Debug` hides the token.
    pub auth: Auth,
}

impl CacheEnvironment {
    /// Reads `XDG_CACHE_HOME`, `HOME` and `NIXLAYER_CACHE_TOKEN`.
    #[must_use]
    pub fn capture() -> Self {
        Self {
            nar_cache_dir: nixlayer_cache_home().map(|d| d.join("nar")),
            auth: Auth {
                netrc_file: std::env::var_os("HOME")
                    .filter(|h| !h.is_empty())
                    .map(|h| PathBuf::from(h).join(".netrc")),
                bearer_token: std::env::var("NIXLAYER_CACHE_TOKEN")
                    .ok()
                    .filter(|t| !t.is_empty()),
            },
        }
    }
}

/// A binary cache to open: its URL and how to trust and reach it (the
/// manifest's `[closure]` keys, or `nixlayer init`'s flags).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CacheRequest {
    /// `file://`, `http://` or `https://`.
    pub url: String,
    /// Keys one of which must sign every path.
    pub keys: Vec<PublicKey>,
    /// Refuse the cache when `keys` is empty.
    pub require_signatures: bool,
    /// A netrc file instead of the environment's `~/.netrc`.
    pub netrc_file: Option<PathBuf>,
    /// The NAR cache's bound.
    pub nar_cache_max_bytes: u64,
}

impl CacheRequest {
    /// A request for `url` signed by `keys`, everything else the default.
    #[must_use]
    pub fn new(url: String, keys: Vec<PublicKey>) -> Self {
        Self {
            url,
            keys,
            require_signatures: true,
            netrc_file: None,
            nar_cache_max_bytes: DEFAULT_NAR_CACHE_MAX_BYTES,
        }
    }

    /// Opens the cache (reads its `nix-cache-info`) for paths of `store_dir`.
    ///
    /// # Errors
    /// When the cache cannot be opened (see [`BinaryCache::open`]), or no
    /// NAR cache directory is known (neither `XDG_CACHE_HOME` nor `HOME`).
    pub fn open(
        &self,
        store_dir: &StoreDir,
        env: &CacheEnvironment,
    ) -> Result<BinaryCache, CacheError> {
        let Some(nar_cache_dir) = env.nar_cache_dir.clone() else {
            return Err(CacheError::NarCache {
                dir: PathBuf::from("$XDG_CACHE_HOME/nixlayer/nar"),
                source: std::io::Error::other("neither XDG_CACHE_HOME nor HOME is set"),
            });
        };
        let mut options = CacheOptions::new(self.keys.clone(), nar_cache_dir);
        options.store_dir = store_dir.clone();
        options.require_signatures = self.require_signatures;
        options.nar_cache_max_bytes = self.nar_cache_max_bytes;
        options.auth = env.auth.clone();
        if let Some(netrc) = &self.netrc_file {
            options.auth.netrc_file = Some(netrc.clone());
        }
        BinaryCache::open(&self.url, options)
    }
}

/// An error and its causes on one line, as the command line prints them.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text += &format!(": {s}");
        source = s.source();
    }
    text
}

impl Environment {
    /// Reads the clock and the environment.
    #[must_use]
    pub fn capture() -> Self {
        Self {
            now: jiff::Timestamp::now(),
            source_date_epoch: std::env::var("SOURCE_DATE_EPOCH").ok(),
            cache_dir: nixlayer_cache_home().map(|d| d.join("layers")),
            binary_cache: CacheEnvironment::capture(),
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
        // Never negative: the variable is parsed unsigned.
        Ok(self
            .source_date_epoch()?
            .map_or(1, |t| t.seconds.unsigned_abs()))
    }

    /// `SOURCE_DATE_EPOCH` as a time, when set.
    ///
    /// # Errors
    /// When it is not a non-negative number of seconds (the reproducible
    /// builds definition) up to the end of year 9999; the error names the
    /// variable, not a manifest line.
    fn source_date_epoch(&self) -> Result<Option<Time>, Error> {
        let Some(epoch) = &self.source_date_epoch else {
            return Ok(None);
        };
        // Digits only, as `date +%s` writes them (the reproducible builds
        // definition): `u64`'s parse would also take a sign (`+5`).
        let digits = epoch.trim();
        (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| digits.parse::<u64>().ok())
            .flatten()
            .and_then(|seconds| Time::from_seconds(seconds, 0))
            .map(Some)
            .ok_or_else(|| Error::Environment {
                variable: "SOURCE_DATE_EPOCH".to_owned(),
                message: format!(
                    "`{epoch}` is not a number of seconds from 1970 to the end of 9999"
                ),
                hint: Some("write e.g. `SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)`".to_owned()),
            })
    }
}

/// What a caller changes of a manifest's values: each `Some` (or `true`)
/// wins over the manifest. Plain values, no command-line types: `build`,
/// `layers` and `push` fill it from their flags, a library user directly.
/// Bad values are reported as [`Error::Flag`] naming `--<field>`.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Overrides {
    /// `NAME[:TAG]` instead of the manifest's `name` and `tag`.
    pub tag: Option<String>,
    /// The output format's name (`docker-archive`, `oci-layout`, `oci-archive`).
    pub format: Option<String>,
    /// The compression's name (`none`, `gzip`, `zstd`).
    pub compression: Option<String>,
    /// The compression level.
    pub level: Option<i32>,
    /// Compression threads (default: every core the process may use).
    pub threads: Option<std::num::NonZeroUsize>,
    /// Neither read nor update the layer cache.
    pub no_cache: bool,
    /// `--annotation KEY=VALUE`, in order: over `[annotations]`.
    pub annotations: Vec<String>,
}

/// A resolved build: the settings and how the output is written.
#[derive(Debug)]
#[non_exhaustive]
pub struct ResolvedBuild {
    /// What to build.
    pub settings: BuildSettings,
    /// Warnings to show before building.
    pub warnings: Vec<String>,
    /// The output format.
    pub format: OutputFormat,
    /// How the output is compressed.
    pub compress: CompressOptions,
}

/// nixpkgs' default for both timestamps: one second after the epoch, so
/// tools that treat 0 as "unset" still show a date.
pub const DEFAULT_TIME: &str = "1970-01-01T00:00:01Z";

/// The host's architecture in GOARCH spelling, as image configs use.
#[must_use]
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// Resolves a build from the loaded manifest, the overrides and the environment.
///
/// # Errors
/// When a manifest value is invalid (the error points at its line), an
/// override is ([`Error::Flag`]), or `SOURCE_DATE_EPOCH` is.
pub fn resolve_build(
    loaded: &LoadedManifest,
    args: &Overrides,
    env: &Environment,
) -> Result<ResolvedBuild, Error> {
    let m = &loaded.manifest;
    let mut warnings = Vec::new();

    let (name, tag) = match &args.tag {
        // A digest is what the build computes, not a name it can be given.
        Some(reference) if reference.contains('@') => {
            return Err(flag_error(
                "--tag",
                format!("`{reference}` names a digest: `--tag` takes NAME[:TAG], and the image's digest comes from its bytes (it is printed, and in `--json`)"),
            ))
        }
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
            Some(_) => flag_error("--tag", message),
            None => loaded.error_at(m.name.span(), message, None),
        });
    }
    if let Some(t) = &tag {
        if !valid_tag(t) {
            let message = format!("`{t}` is not a valid tag: use up to 128 of `A-Za-z0-9_.-`, not starting with `.` or `-`");
            return Err(match (&args.tag, &m.tag) {
                (None, Some(span)) => loaded.error_at(span.span(), message, None),
                _ => flag_error("--tag", message),
            });
        }
    }

    let created = match &m.created {
        Some(c) => parse_time(loaded, c, env)?,
        None => match env.source_date_epoch()? {
            Some(time) => time,
            None => Time::from_seconds(1, 0).ok_or_else(|| {
                loaded.error_at(0..0, format!("cannot represent {DEFAULT_TIME}"), None)
            })?,
        },
    };
    let mtime_time = match &m.mtime {
        Some(t) => parse_time(loaded, t, env)?,
        None => {
            if m.created.as_ref().is_some_and(|c| c.get_ref() == "now") {
                warnings.push(
                    "`created = \"now\"` without `mtime`: file times follow `created`, so every layer digest changes on every build; set `mtime` to keep layers reusable".to_owned(),
                );
            }
            created.clone()
        }
    };
    // The only way to a time before 1970 is a manifest value
    // (`SOURCE_DATE_EPOCH` is unsigned): point at it.
    let mtime = u64::try_from(mtime_time.seconds).map_err(|_| {
        let span = m
            .mtime
            .as_ref()
            .or(m.created.as_ref())
            .map_or(0..0, toml::Spanned::span);
        loaded.error_at(
            span,
            format!(
                "`{}` is before 1970: tar file times cannot be negative",
                mtime_time.text
            ),
            Some("set `mtime` to a time from 1970 on".to_owned()),
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
    let mut binary_cache = None;
    let source = match loaded.closure_source()? {
        ClosureSource::Registration(p) => Source::Registration(p),
        ClosureSource::Graph(p) => Source::Graph(p),
        ClosureSource::PathInfo(p) => Source::PathInfo(p),
        ClosureSource::Dot(p) => Source::Dot(p),
        ClosureSource::NixStore => Source::NixStore,
        ClosureSource::BinaryCache(spec) => {
            binary_cache = Some(spec);
            Source::BinaryCache
        }
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
        Layering::Popularity => {
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
        uid: m.owner.uid.map_or(0, u64::from),
        gid: m.owner.gid.map_or(0, u64::from),
        uname: m.owner.uname.clone().unwrap_or_else(|| "root".to_owned()),
        gname: m.owner.gname.clone().unwrap_or_else(|| "root".to_owned()),
    };

    let content = resolve_content(loaded, &store_dir, default_budget)?;

    let location = StoreLocation {
        dir: store_dir,
        root: store_root,
    };
    let store: AnyStore = match binary_cache {
        Some(spec) => open_binary_cache(loaded, &spec, &location.dir, &env.binary_cache)?.into(),
        None => location.into(),
    };
    let cache = if args.no_cache {
        None
    } else {
        env.cache_dir
            .clone()
            .map(|dir| LayerCache::new(dir, store.clone()))
    };
    let platform = image_platform(m);
    let config = ConfigSpec {
        created: created.text,
        architecture: platform.architecture,
        os: platform.os,
        variant: platform.variant,
        config,
    };
    let mut settings = BuildSettings::new(name, config, store, roots, source, pipeline);
    settings.tag = tag;
    settings.exclude = exclude;
    settings.owner = owner;
    settings.mtime = mtime;
    settings.cache = cache;
    settings.content = content;
    (settings.annotations, settings.index_annotations) = annotations(loaded, &args.annotations)?;
    let format = match &args.format {
        Some(name) => OutputFormat::from_name(name).ok_or_else(|| {
            unknown_flag_value("--format", name, &OutputFormat::ALL.map(OutputFormat::name))
        })?,
        None => loaded.output_format()?,
    };
    let compression = match &args.compression {
        Some(name) => Compression::from_name(name).ok_or_else(|| {
            unknown_flag_value(
                "--compression",
                name,
                &Compression::WRITABLE.map(Compression::name),
            )
        })?,
        None => loaded.compression()?,
    };
    // `[output] level` is a level of the manifest's `[output] compression`
    // when it names one: with another codec (`--compression`, or `push`,
    // which defaults to gzip) it would be a level on another scale, or an
    // error blaming the manifest's line for a codec it does not ask for.
    let manifest_level = if m.output.compression.is_none() || compression == loaded.compression()? {
        m.output.level.as_ref().map(|l| (l, loaded))
    } else {
        None
    };
    let compress = resolve_compress(compression, args.level, manifest_level, args.threads)?;
    Ok(ResolvedBuild {
        settings,
        warnings,
        format,
        compress,
    })
}

/// A bad flag value: a usage error named by the flag.
/// Opens the manifest's binary cache; a failure is an error at
/// `closure.source` that names the URL (and the store path, if any).
fn open_binary_cache(
    loaded: &LoadedManifest,
    spec: &BinaryCacheSource,
    store_dir: &StoreDir,
    env: &CacheEnvironment,
) -> Result<BinaryCache, Error> {
    let span = loaded
        .manifest
        .closure
        .source
        .as_ref()
        .map_or(0..0, toml::Spanned::span);
    let keys = spec
        .trusted_public_keys
        .iter()
        .map(|k| PublicKey::parse(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| loaded.error_at(span.clone(), e.to_string(), None))?;
    let mut request = CacheRequest::new(spec.url.clone(), keys);
    request.require_signatures = spec.require_signatures;
    request.netrc_file.clone_from(&spec.netrc_file);
    request.nar_cache_max_bytes = spec.nar_cache_max_bytes;
    request.open(store_dir, env).map_err(|e| {
        loaded.error_at(
            span,
            format!("cannot open the binary cache: {}", chain(&e)),
            None,
        )
    })
}

fn flag_error(flag: &str, message: String) -> Error {
    Error::Flag {
        flag: flag.to_owned(),
        message,
        hint: None,
    }
}

/// Annotations of the image manifest and of the image index.
type AnnotationMap = std::collections::BTreeMap<String, String>;

/// `[annotations]` (with the platform's `[platforms.annotations]` already
/// over them) and `[index.annotations]`, then each `--annotation
/// [LEVEL:]KEY=VALUE` over them: `LEVEL` is `manifest` (the default) or
/// `index`, buildx's spelling.
fn annotations(
    loaded: &LoadedManifest,
    flags: &[String],
) -> Result<(AnnotationMap, AnnotationMap), Error> {
    let table =
        |entries: &std::collections::BTreeMap<toml::Spanned<String>, toml::Spanned<String>>,
         name: &str|
         -> Result<AnnotationMap, Error> {
            let mut out = AnnotationMap::new();
            for (key, value) in entries {
                if key.get_ref().is_empty() {
                    return Err(loaded.error_at(
                        key.span(),
                        format!("`[{name}]` keys must not be empty"),
                        None,
                    ));
                }
                out.insert(key.get_ref().clone(), value.get_ref().clone());
            }
            Ok(out)
        };
    let m = &loaded.manifest;
    let mut manifest = table(&m.annotations, "annotations")?;
    let mut index = table(&m.index.annotations, "index.annotations")?;
    for flag in flags {
        let (target, text) = match flag.split_once(':') {
            Some(("index", rest)) => (&mut index, rest),
            Some(("manifest", rest)) => (&mut manifest, rest),
            // A word of letters and `-` before the first `:` (and before
            // any `=`) is a level: buildx's others (`manifest-descriptor`,
            // `index-descriptor`) or a typo (`idnex`) would otherwise
            // become part of the key, silently. Keys in reverse-domain
            // notation hold a `.` before any `:`.
            Some((level, rest))
                if rest.contains('=')
                    && !level.is_empty()
                    && level.bytes().all(|b| b.is_ascii_lowercase() || b == b'-') =>
            {
                return Err(Error::Flag {
                    flag: "--annotation".to_owned(),
                    message: format!("`{flag}`: unknown level `{level}`"),
                    hint: Some(
                        "the level is `manifest:` (the default) or `index:`; docker-archive and descriptor annotations are not written"
                            .to_owned(),
                    ),
                });
            }
            _ => (&mut manifest, flag.as_str()),
        };
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                target.insert(key.to_owned(), value.to_owned());
            }
            _ => {
                return Err(Error::Flag {
                    flag: "--annotation".to_owned(),
                    message: format!(
                        "`{flag}` is not `[manifest:|index:]KEY=VALUE` with a non-empty key"
                    ),
                    hint: Some(
                        "e.g. `--annotation org.opencontainers.image.revision=abc123`".to_owned(),
                    ),
                })
            }
        }
    }
    Ok((manifest, index))
}

fn unknown_flag_value(flag: &str, value: &str, valid: &[&str]) -> Error {
    let list: Vec<String> = valid.iter().map(|v| format!("`{v}`")).collect();
    Error::Flag {
        flag: flag.to_owned(),
        message: format!("unknown value `{value}`"),
        hint: Some(format!("`{flag}` is one of {}", list.join(", "))),
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
    codec: Compression,
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
    if codec != Compression::None && !levels.contains(&level) {
        let message = format!(
            "{} level {level} is out of range {}-{}",
            codec.name(),
            levels.start(),
            levels.end()
        );
        return Err(match (cli_level, manifest_level) {
            (None, Some((span, loaded))) => loaded.error_at(span.span(), message, None),
            _ => flag_error("--level", message),
        });
    }
    Ok(CompressOptions {
        codec,
        level: if codec == Compression::None { 0 } else { level },
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
        .map(|f| AddedFile {
            path: f.path,
            data: match f.content {
                CustomFileContent::Text(text) => FileData::Inline(text.into_bytes()),
                CustomFileContent::Source(path) => FileData::Disk(path),
            },
            mode: f.mode,
        })
        .collect();
    let (base, base_pull) = resolve_base(loaded)?;
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
        permissions: Permissions::new(
            custom
                .permissions
                .into_iter()
                .map(permission_rule)
                .collect(),
        ),
        include_store_paths: m.closure.include_store_paths.unwrap_or(true),
        include_nix_db: m
            .closure
            .include_nix_db
            .as_ref()
            .is_some_and(|on| *on.get_ref()),
        base,
        base_pull,
        accounts: loaded.accounts()?,
        run: custom.run,
        chroot: custom.chroot,
        default_budget,
        base_any_platform: false,
    })
}

/// The image's platform: the manifest's `architecture` (else this
/// machine's), `os` (else `linux`) and `variant`. The config names it, and
/// a pulled base index is resolved to it.
fn image_platform(m: &crate::manifest::Manifest) -> pull::Platform {
    pull::Platform {
        architecture: m
            .architecture
            .as_ref()
            .map_or_else(|| host_architecture().to_owned(), |a| a.get_ref().clone()),
        os: m
            .os
            .as_ref()
            .map_or_else(|| "linux".to_owned(), |o| o.get_ref().clone()),
        variant: m.variant.as_ref().map(|v| v.get_ref().clone()),
    }
}

/// `[base] image`: a path, or a registry image with where it is cached and
/// the platform an index resolves to (the image's own, as `[config]`'s
/// `architecture`/`os`/`variant` give it).
fn resolve_base(loaded: &LoadedManifest) -> Result<(Option<PathBuf>, Option<PullSpec>), Error> {
    let m = &loaded.manifest;
    match loaded.base_image()? {
        None => Ok((None, None)),
        Some(BaseSource::Path(path)) => Ok((Some(path), None)),
        Some(BaseSource::Registry {
            text,
            reference,
            digest,
        }) => {
            let Some(cache) = nixlayer_cache_home().map(|d| d.join("images")) else {
                let span = m.base.as_ref().map(|b| b.image.span()).unwrap_or_default();
                return Err(loaded.error_at(
                    span,
                    format!("no cache directory to pull `{text}` into"),
                    Some("set `XDG_CACHE_HOME` or `HOME`".to_owned()),
                ));
            };
            let spec = PullSpec {
                text,
                reference,
                digest,
                platform: image_platform(m),
                cache,
                options: None,
            };
            Ok((Some(spec.layout()), Some(spec)))
        }
    }
}

/// The layer stage's rule for a checked `[[customisation.permissions]]`
/// entry: the same fields, destructured so a field added to either side
/// must be handled here.
fn permission_rule(entry: PermissionOverride) -> PermissionRule {
    let PermissionOverride {
        pattern,
        uid,
        gid,
        uname,
        gname,
        mode,
        dir_mode,
        file_mode,
    } = entry;
    PermissionRule {
        pattern,
        uid,
        gid,
        uname,
        gname,
        mode,
        dir_mode,
        file_mode,
    }
}

/// A point in time as the image records it: seconds since the epoch (file
/// times) and its RFC 3339 text in UTC (the config's `created`).
///
/// Not a `jiff::Timestamp`: its range stops a day short of 9999-12-31 so
/// that any offset can be applied to it, yet `9999-12-31T23:59:59Z` is a
/// valid RFC 3339 time.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Time {
    seconds: i64,
    text: String,
}

/// 9999-12-31T23:59:59Z: the last second RFC 3339 can write.
const LAST_SECOND: i64 = 253_402_300_799;

impl Time {
    fn from_timestamp(ts: jiff::Timestamp) -> Self {
        Self {
            seconds: ts.as_second(),
            text: ts.to_string(),
        }
    }

    /// The time `seconds` (plus `nanos`) after the epoch, if RFC 3339 can
    /// write it.
    fn from_seconds(seconds: impl TryInto<i64>, nanos: i32) -> Option<Self> {
        let seconds: i64 = seconds.try_into().ok()?;
        if let Ok(ts) = jiff::Timestamp::new(seconds, nanos) {
            return Some(Self::from_timestamp(ts));
        }
        if !(0..=LAST_SECOND).contains(&seconds) {
            return None;
        }
        // Past `Timestamp::MAX`: build the UTC civil time by hand, which
        // `civil::DateTime` formats exactly as `Timestamp` would.
        let epoch = jiff::civil::date(1970, 1, 1);
        let day = epoch
            .checked_add(
                jiff::Span::new()
                    .try_days(seconds.div_euclid(86_400))
                    .ok()?,
            )
            .ok()?;
        let second_of_day = seconds.rem_euclid(86_400);
        let time = jiff::civil::Time::new(
            i8::try_from(second_of_day / 3600).ok()?,
            i8::try_from(second_of_day / 60 % 60).ok()?,
            i8::try_from(second_of_day % 60).ok()?,
            nanos,
        )
        .ok()?;
        Some(Self {
            seconds,
            text: format!("{}Z", jiff::civil::DateTime::from_parts(day, time)),
        })
    }

    /// An RFC 3339 time past `Timestamp::MAX` (the last day of 9999).
    fn parse_late(text: &str) -> Option<Self> {
        let pieces = jiff::fmt::temporal::Pieces::parse(text).ok()?;
        let offset = pieces.to_numeric_offset()?;
        let time = pieces.time()?;
        let days = pieces
            .date()
            .since(jiff::civil::date(1970, 1, 1))
            .ok()?
            .get_days();
        let seconds = i64::from(days) * 86_400
            + i64::from(time.hour()) * 3600
            + i64::from(time.minute()) * 60
            + i64::from(time.second())
            - i64::from(offset.seconds());
        Self::from_seconds(seconds, time.subsec_nanosecond())
    }
}

fn parse_time(
    loaded: &LoadedManifest,
    value: &toml::Spanned<String>,
    env: &Environment,
) -> Result<Time, Error> {
    let text = value.get_ref();
    if text == "now" {
        return Ok(Time::from_timestamp(env.now));
    }
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Ok(Time::from_timestamp(ts));
    }
    Time::parse_late(text).ok_or_else(|| {
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
#[must_use]
pub fn invalid_name(name: &str) -> Option<&'static str> {
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

/// Whether `tag` is a valid docker/OCI tag.
#[must_use]
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 128
        && tag
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
        && !tag.starts_with(['.', '-'])
}

/// Resolves every platform of a manifest (`[[platforms]]`, the top-level
/// one first) as [`resolve_build`] does the one of a single-platform
/// manifest; each platform's errors point at its own lines.
///
/// # Errors
/// As [`resolve_build`], and when two platforms are the same.
pub fn resolve_platforms(
    loaded: &LoadedManifest,
    args: &Overrides,
    env: &Environment,
) -> Result<Vec<(crate::manifest::PlatformName, ResolvedBuild)>, Error> {
    loaded
        .platform_manifests(host_architecture())?
        .into_iter()
        .map(|(name, one)| Ok((name, resolve_build(&one, args, env)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same parse as [`parse_time`], without a manifest to locate it.
    fn read_time(text: &str) -> Option<Time> {
        match text.parse::<jiff::Timestamp>() {
            Ok(ts) => Some(Time::from_timestamp(ts)),
            Err(_) => Time::parse_late(text),
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

        /// `created`/`mtime` text (any, and RFC 3339-shaped with any
        /// fields) and `SOURCE_DATE_EPOCH` seconds: a time or `None`, never
        /// a panic; a time's text reads back as the same time.
        #[test]
        fn times_parse_or_are_refused_and_round_trip(
            text in "\\PC{0,40}",
            shaped in "[+-]?[0-9]{4,6}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}([.,][0-9]{1,12})?([Zz]|[+-][0-9]{2}(:?[0-9]{2}(:?[0-9]{2})?)?)",
            seconds in proptest::prelude::any::<i64>(),
            near in -100_000_i64..=LAST_SECOND + 100_000,
            nanos in 0..1_000_000_000_i32,
        ) {
            for text in [text.as_str(), shaped.as_str()] {
                if let Some(t) = read_time(text) {
                    proptest::prop_assert!(t.seconds <= LAST_SECOND);
                    proptest::prop_assert_eq!(read_time(&t.text), Some(t));
                }
            }
            for seconds in [seconds, near] {
                if let Some(t) = Time::from_seconds(seconds, nanos) {
                    proptest::prop_assert_eq!(t.seconds, seconds);
                    proptest::prop_assert_eq!(read_time(&t.text), Some(t));
                }
            }
        }
    }

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
    fn times_reach_the_end_of_9999_and_no_further() {
        let last = Time::parse_late("9999-12-31T23:59:59Z").unwrap();
        assert_eq!(
            (last.seconds, last.text.as_str()),
            (LAST_SECOND, "9999-12-31T23:59:59Z")
        );
        let late = Time::parse_late("9999-12-31T22:59:59.5-01:00").unwrap();
        assert_eq!(late.text, "9999-12-31T23:59:59.5Z");
        assert_eq!(Time::parse_late("9999-12-31T23:59:59-01:00"), None);
        assert_eq!(Time::from_seconds(LAST_SECOND + 1, 0), None);
        assert_eq!(
            Time::from_seconds(-1_i64, 0).unwrap().text,
            "1969-12-31T23:59:59Z"
        );
        // Within jiff's range the text is jiff's, so digests stay as they were.
        for seconds in [0_i64, 1, 1_700_000_000, 253_402_000_000] {
            let ts = jiff::Timestamp::from_second(seconds).unwrap();
            assert_eq!(Time::from_seconds(seconds, 0).unwrap().text, ts.to_string());
        }
        assert_eq!(Time::from_seconds(u64::MAX, 0), None);
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
