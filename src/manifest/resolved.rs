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
use crate::nix::narinfo::PublicKey;

/// Go's `GOARCH` words (go/build's `knownArch`), the image-spec's
/// `architecture` values.
pub(super) const GOARCH: [&str; 24] = [
    "386",
    "amd64",
    "amd64p32",
    "arm",
    "armbe",
    "arm64",
    "arm64be",
    "loong64",
    "mips",
    "mipsle",
    "mips64",
    "mips64le",
    "mips64p32",
    "mips64p32le",
    "ppc",
    "ppc64",
    "ppc64le",
    "riscv",
    "riscv64",
    "s390",
    "s390x",
    "sparc",
    "sparc64",
    "wasm",
];

/// Go's `GOOS` words (go/build's `knownOS`), the image-spec's `os` values.
pub(super) const GOOS: [&str; 18] = [
    "aix",
    "android",
    "darwin",
    "dragonfly",
    "freebsd",
    "hurd",
    "illumos",
    "ios",
    "js",
    "linux",
    "nacl",
    "netbsd",
    "openbsd",
    "plan9",
    "solaris",
    "wasip1",
    "windows",
    "zos",
];

/// The hint for an architecture spelled as Nix systems, `uname -m` or
/// Debian spell it (or Go's word in other case).
fn arch_alias(word: &str) -> Option<&'static str> {
    Some(match word.to_ascii_lowercase().as_str() {
        "x86_64" | "x86-64" | "x64" | "amd64" => "write `amd64` (Go's spelling of x86_64)",
        "aarch64" | "arm64" | "armv8" | "armv8l" => "write `arm64` (Go's spelling of aarch64)",
        "i386" | "i486" | "i586" | "i686" | "x86" | "386" => "write `386` (Go's spelling of x86)",
        "armv7l" | "armv7" | "armhf" | "armv7a" => "write `arm` with `variant = \"v7\"`",
        "armv6l" | "armv6" | "armel" => "write `arm` with `variant = \"v6\"`",
        "powerpc64le" | "ppc64el" => "write `ppc64le`",
        "powerpc64" => "write `ppc64`",
        "loongarch64" => "write `loong64`",
        _ => return None,
    })
}

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
    /// A Nix binary cache: the closure from its narinfos, the content from
    /// its NARs; no local store is read.
    BinaryCache(BinaryCacheSource),
}

/// The NAR cache bound when `closure.nar_cache_max_bytes` is not set: 10 GiB.
pub const DEFAULT_NAR_CACHE_MAX_BYTES: u64 = 10 << 30;

/// `closure.source = { binary_cache = "URL" }` and the keys that go with it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BinaryCacheSource {
    /// `file:///dir`, `http://…` or `https://…`, without a trailing `/`.
    pub url: String,
    /// `closure.trusted_public_keys`, as written (each checked to be `name:base64`
    /// of an ed25519 key).
    pub trusted_public_keys: Vec<String>,
    /// `closure.require_signatures`, default true.
    pub require_signatures: bool,
    /// `closure.netrc_file` resolved against the manifest's directory;
    /// `None`: the default, `~/.netrc`, which the caller resolves.
    pub netrc_file: Option<PathBuf>,
    /// `closure.nar_cache_max_bytes`, default [`DEFAULT_NAR_CACHE_MAX_BYTES`].
    pub nar_cache_max_bytes: u64,
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
            self.platform_words().err(),
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

    /// `architecture` (top-level and each `[[platforms]]` entry's) and
    /// `os` are Go's words, as OCI image configs and indexes use them
    /// (image-spec `config.md`); anything else built an image that no
    /// runtime or registry matches to a platform (`aarch64` is no
    /// `arm64` to `docker pull --platform`). Nix's and uname's spellings
    /// get the GOARCH word as the hint.
    ///
    /// # Errors
    /// At the first value that is not a known `GOARCH` / `GOOS`.
    fn platform_words(&self) -> Result<(), Error> {
        let m = &self.manifest;
        let arches = m
            .architecture
            .iter()
            .chain(m.platforms.iter().map(|p| &p.architecture));
        for arch in arches {
            let word = arch.get_ref().as_str();
            if !GOARCH.contains(&word) {
                let hint = arch_alias(word)
                    .map(str::to_owned)
                    .or_else(|| nearest(word, &GOARCH).map(|w| format!("did you mean `{w}`?")))
                    .unwrap_or_else(|| {
                        "use Go's spelling (GOARCH), as OCI does: `amd64`, `arm64`, `arm`, `386`, `ppc64le`, `s390x`, `riscv64`, …".to_owned()
                    });
                return Err(self.error_at(
                    arch.span(),
                    format!("`{word}` is not an OCI architecture"),
                    Some(hint),
                ));
            }
        }
        if let Some(os) = &m.os {
            let word = os.get_ref().as_str();
            if !GOOS.contains(&word) {
                // A Linux distribution or a Nix system's kernel half is Linux.
                let linux = ["nixos", "gnu", "gnu/linux", "linux-gnu", "x86_64-linux"]
                    .contains(&word.to_ascii_lowercase().as_str());
                let hint = if linux {
                    "write `linux`".to_owned()
                } else {
                    nearest(word, &GOOS).map_or_else(
                        || "use Go's spelling (GOOS), as OCI does: `linux`, …".to_owned(),
                        |w| format!("did you mean `{w}`?"),
                    )
                };
                return Err(self.error_at(
                    os.span(),
                    format!("`{word}` is not an OCI operating system"),
                    Some(hint),
                ));
            }
        }
        Ok(())
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
    /// When it is not one of the forms of SPEC §2 or names an empty file;
    /// for a `binary_cache`, a bad URL, key or `netrc_file`;
    /// when a binary-cache key is set with another source.
    pub fn closure_source(&self) -> Result<ClosureSource, Error> {
        let source = self.closure_source_only()?;
        if !matches!(source, ClosureSource::BinaryCache(_)) {
            self.no_cache_keys()?;
        }
        Ok(source)
    }

    /// The keys that only a binary cache reads must not be set for another
    /// source, where they would silently do nothing.
    fn no_cache_keys(&self) -> Result<(), Error> {
        let closure = &self.manifest.closure;
        let spans = [
            (
                "trusted_public_keys",
                closure.trusted_public_keys.first().map(Spanned::span),
            ),
            (
                "require_signatures",
                closure.require_signatures.as_ref().map(Spanned::span),
            ),
            ("netrc_file", closure.netrc_file.as_ref().map(Spanned::span)),
            (
                "nar_cache_max_bytes",
                closure.nar_cache_max_bytes.as_ref().map(Spanned::span),
            ),
        ];
        let first = spans
            .into_iter()
            .filter_map(|(key, span)| Some((key, span?)))
            .min_by_key(|(_, span)| span.start);
        match first {
            Some((key, span)) => Err(self.error_at(
                span,
                format!("`closure.{key}` only applies to a binary cache source"),
                Some("set `source = { binary_cache = \"URL\" }`, or remove it".to_owned()),
            )),
            None => Ok(()),
        }
    }

    /// `closure.source` alone.
    fn closure_source_only(&self) -> Result<ClosureSource, Error> {
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
                let raw = file;
                let file = self.resolve(file);
                match key.as_str() {
                    "registration" => Ok(ClosureSource::Registration(file)),
                    "graph" => Ok(ClosureSource::Graph(file)),
                    "path_info" => Ok(ClosureSource::PathInfo(file)),
                    "dot" => Ok(ClosureSource::Dot(file)),
                    "binary_cache" => self.binary_cache_source(span, raw),
                    other => Err(self.error_at(
                        span,
                        format!("unknown closure source `{other}`"),
                        match nearest(other, &SOURCE_KEYS) {
                            Some(near) => Some(format!("did you mean `{near}`?")),
                            None => Some(SOURCE_FORMS.to_owned()),
                        },
                    )),
                }
            }
        }
    }

    /// `closure.source = { binary_cache = "URL" }` with its keys. Each bad
    /// value is an error at its line: a URL this tool cannot read (`s3://`
    /// says to use the bucket's HTTPS endpoint), a key that is not
    /// `name:base64` of an ed25519 key, no key while signatures are
    /// required, a `~` in `netrc_file`.
    fn binary_cache_source(
        &self,
        span: std::ops::Range<usize>,
        url: &std::path::Path,
    ) -> Result<ClosureSource, Error> {
        let closure = &self.manifest.closure;
        let url = url.to_string_lossy();
        if let Some(problem) = url_problem(&url) {
            return Err(self.error_at(
                span,
                format!("`closure.source.binary_cache`: {problem}"),
                Some("write e.g. `source = { binary_cache = \"https://cache.example.org\" }` or `\"file:///srv/cache\"`".to_owned()),
            ));
        }
        let mut keys = Vec::with_capacity(closure.trusted_public_keys.len());
        for key in &closure.trusted_public_keys {
            if let Err(e) = PublicKey::parse(key.get_ref()) {
                return Err(self.error_at(
                    key.span(),
                    format!("invalid value for `closure.trusted_public_keys`: {e}"),
                    Some(
                        "a key is `name:base64`, as `nix key convert-secret-to-public` prints it"
                            .to_owned(),
                    ),
                ));
            }
            keys.push(key.get_ref().clone());
        }
        let require_signatures = closure
            .require_signatures
            .as_ref()
            .is_none_or(|r| *r.get_ref());
        if keys.is_empty() && require_signatures {
            return Err(self.error_at(
                span,
                "a binary cache needs `closure.trusted_public_keys`: its paths must be signed".to_owned(),
                Some("add `trusted_public_keys = [\"NAME:BASE64\"]`, or `require_signatures = false` to accept unsigned paths".to_owned()),
            ));
        }
        let netrc_file = match &closure.netrc_file {
            Some(file) if file.get_ref().starts_with("~") => {
                return Err(self.error_at(
                    file.span(),
                    "`closure.netrc_file`: `~` is not expanded".to_owned(),
                    Some("give the path (relative to the manifest or absolute), or leave it out for `~/.netrc`".to_owned()),
                ))
            }
            Some(file) if file.get_ref().as_os_str().is_empty() => {
                return Err(self.error_at(file.span(), "`closure.netrc_file` names no file".to_owned(), None))
            }
            Some(file) => Some(self.resolve(file.get_ref())),
            None => None,
        };
        Ok(ClosureSource::BinaryCache(BinaryCacheSource {
            url: url.trim_end_matches('/').to_owned(),
            trusted_public_keys: keys,
            require_signatures,
            netrc_file,
            nar_cache_max_bytes: closure
                .nar_cache_max_bytes
                .as_ref()
                .map_or(DEFAULT_NAR_CACHE_MAX_BYTES, |m| *m.get_ref()),
        }))
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

/// Why `url` is not a binary-cache URL this tool reads, if it is not: the
/// store's own check, repeated here so the error points at the manifest
/// line (the store stage comes later and is not imported).
fn url_problem(url: &str) -> Option<&'static str> {
    if url.starts_with("s3://") {
        return Some("s3:// is not supported; use the bucket's HTTPS endpoint (https://<bucket>.s3.<region>.amazonaws.com, or your endpoint's), with credentials in a netrc file or NIXLAYER_CACHE_TOKEN");
    }
    if url.contains(['?', '#']) {
        return Some("URL parameters are not supported; give the bare cache URL");
    }
    if let Some(path) = url.strip_prefix("file://") {
        return (!path.starts_with('/'))
            .then_some("a file:// URL needs an absolute path (file:///dir)");
    }
    let Some(rest) = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
    else {
        return Some("expected a file://, http:// or https:// URL");
    };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Some("credentials in the URL are not accepted; put them in a netrc file");
    }
    if authority.is_empty() || url.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Some("no host, or spaces or control characters in the URL");
    }
    None
}
