//! The TOML manifest (`image.toml`, SPEC §1) → a typed [`Manifest`].
//!
//! Unknown keys and wrong types are errors with the file, line and column,
//! and for an unknown key the nearest valid one. Values keep their spans so
//! later checks (a root outside `store.dir`, a bad timestamp) can point at
//! the line too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

mod accounts;
mod config;
mod content;
mod diagnose;
mod hints;
mod platforms;
mod resolved;
mod schema;

pub use content::{
    BaseSection, BaseSource, CustomFile, CustomFileContent, Customisation, CustomisationSection,
    DirSection, FileSection, ModeSpec, PermissionOverride, PermissionSection, SymlinkSection,
};

pub use accounts::{Accounts, GroupAccount, GroupSection, UserAccount, UserSection};
pub use platforms::{PlatformName, PlatformSection};
pub use schema::json_schema;

use crate::input::read_bounded;

/// `created` / `mtime`: a string, or a TOML date-time as its RFC 3339
/// text, since TOML has a type for exactly this and users write it. The
/// text is checked later like any string, so a local date-time or a bare
/// date (no offset: not a point in time) is refused at its line there.
fn time_text<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Spanned<String>>, D::Error> {
    struct TimeText(String);

    impl<'de> Deserialize<'de> for TimeText {
        fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            struct Text;
            impl<'de> serde::de::Visitor<'de> for Text {
                type Value = TimeText;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a string or a date-time")
                }
                fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TimeText, E> {
                    Ok(TimeText(v.to_owned()))
                }
                // toml hands a date-time over as a one-key table only its
                // own `Datetime` reads.
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    map: A,
                ) -> Result<TimeText, A::Error> {
                    let datetime = toml::value::Datetime::deserialize(
                        serde::de::value::MapAccessDeserializer::new(map),
                    )?;
                    Ok(TimeText(datetime.to_string()))
                }
            }
            deserializer.deserialize_any(Text)
        }
    }

    let value = Option::<Spanned<TimeText>>::deserialize(deserializer)?;
    Ok(value.map(|v| {
        let span = v.span();
        Spanned::new(span, v.into_inner().0)
    }))
}

/// The largest manifest read: hand-written TOML is kilobytes.
pub const MANIFEST_LIMIT: u64 = 16 << 20;

pub use resolved::{
    BinaryCacheSource, ClosureSource, Layering, OutputFormat, DEFAULT_MAX_LAYERS,
    DEFAULT_NAR_CACHE_MAX_BYTES, DEFAULT_STORE_DIR,
};

/// A parsed manifest.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Image name (lowercased into the reference).
    pub name: Spanned<String>,
    /// Tag; default derived from the content.
    pub tag: Option<Spanned<String>>,
    /// GOARCH spelling; default the host's.
    pub architecture: Option<Spanned<String>>,
    /// Default `linux`.
    pub os: Option<Spanned<String>>,
    /// CPU variant (arm).
    pub variant: Option<Spanned<String>>,
    /// RFC 3339 or `now`; image metadata only. A TOML date-time
    /// (`created = 2024-01-01T00:00:00Z`, unquoted) is taken as its text.
    #[serde(default, deserialize_with = "time_text")]
    pub created: Option<Spanned<String>>,
    /// RFC 3339 or `now`; timestamp of every file in every layer; a TOML
    /// date-time as for `created`.
    #[serde(default, deserialize_with = "time_text")]
    pub mtime: Option<Spanned<String>>,
    /// Total layer budget.
    pub max_layers: Option<Spanned<u32>>,
    /// `[store]`.
    #[serde(default)]
    pub store: StoreSection,
    /// `[closure]`.
    pub closure: ClosureSection,
    /// `[config]`: OCI config keys, verbatim.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    /// `[owner]`.
    #[serde(default)]
    pub owner: OwnerSection,
    /// `[layering]`.
    #[serde(default)]
    pub layering: LayeringSection,
    /// `[output]`.
    #[serde(default)]
    pub output: OutputSection,
    /// `[customisation]`.
    #[serde(default)]
    pub customisation: CustomisationSection,
    /// `[base]`.
    pub base: Option<BaseSection>,
    /// `[[users]]`: accounts in `/etc/passwd`.
    #[serde(default)]
    pub users: Vec<UserSection>,
    /// `[[groups]]`: groups in `/etc/group`.
    #[serde(default)]
    pub groups: Vec<GroupSection>,
    /// `[[platforms]]`: further platforms of a multi-platform image.
    #[serde(default)]
    pub platforms: Vec<PlatformSection>,
    /// `[annotations]`: string annotations of the OCI image manifest.
    #[serde(default)]
    pub annotations: BTreeMap<Spanned<String>, Spanned<String>>,
    /// `[index]`: the image index of a multi-platform output.
    #[serde(default)]
    pub index: IndexSection,
}

/// `[index]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexSection {
    /// `[index.annotations]`: annotations of the image index over several
    /// platforms.
    #[serde(default)]
    pub annotations: BTreeMap<Spanned<String>, Spanned<String>>,
}

/// `[store]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    /// Store directory, default `/nix/store`.
    pub dir: Option<Spanned<String>>,
    /// Filesystem root the store is read from, default `/`; relative to the manifest.
    pub root: Option<Spanned<PathBuf>>,
}

/// `[closure]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClosureSection {
    /// Their closure goes into the image.
    #[serde(default)]
    pub roots: Vec<Spanned<String>>,
    /// Where references come from.
    pub source: Option<Spanned<SourceSpec>>,
    /// Paths dropped before layering.
    #[serde(default)]
    pub exclude: Vec<Spanned<String>>,
    /// Default true; false: no store path enters the image.
    pub include_store_paths: Option<bool>,
    /// Default false; true: the Nix database of SPEC §5 (spanned: an
    /// error found while building, a partial closure, points at it).
    pub include_nix_db: Option<Spanned<bool>>,
    /// A binary cache's signing keys (`name:base64`, Nix's format).
    #[serde(default)]
    pub trusted_public_keys: Vec<Spanned<String>>,
    /// Default true: a binary cache's paths must be signed by a trusted key.
    pub require_signatures: Option<Spanned<bool>>,
    /// Credentials for an HTTP binary cache; default `~/.netrc`, as Nix.
    pub netrc_file: Option<Spanned<PathBuf>>,
    /// The most bytes the verified NAR cache keeps; default 10 GiB.
    pub nar_cache_max_bytes: Option<Spanned<u64>>,
}

/// `closure.source`: `"nix-store"` or a one-key table naming a file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SourceSpec {
    /// `"nix-store"`.
    Named(String),
    /// `{ registration = "…" }` and the like.
    File(BTreeMap<String, PathBuf>),
}

/// `[owner]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnerSection {
    /// Default 0. A tar header and the kernel hold 32-bit ids, so a
    /// larger one is an error at its line rather than a wrapped id.
    pub uid: Option<u32>,
    /// Default 0; 32 bits like `uid`.
    pub gid: Option<u32>,
    /// Default `root`.
    pub uname: Option<String>,
    /// Default `root`.
    pub gname: Option<String>,
}

/// `[layering]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayeringSection {
    /// The nixpkgs pipeline DSL, verbatim.
    pub pipeline: Option<Spanned<serde_json::Value>>,
    /// `auto` (default) or `popularity`.
    pub strategy: Option<Spanned<String>>,
}

/// `[output]`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSection {
    /// `docker-archive` (default).
    pub format: Option<Spanned<String>>,
    /// `none` (default).
    pub compression: Option<Spanned<String>>,
    /// Compression level.
    pub level: Option<Spanned<i32>>,
}

/// Why a manifest could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file could not be read.
    #[error("failed to read manifest `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid manifest at a place.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// A suggestion, e.g. the nearest valid key.
        hint: Option<String>,
    },
    /// A command-line flag overriding the manifest has a bad value: a
    /// usage error, named by its flag rather than a place in a file.
    #[error("`{flag}`: {message}")]
    Flag {
        /// The flag, e.g. `--level`.
        flag: String,
        /// What is wrong.
        message: String,
        /// A suggestion.
        hint: Option<String>,
    },
    /// An environment variable the build reads has a bad value.
    #[error("environment variable `{variable}`: {message}")]
    Environment {
        /// The variable, e.g. `SOURCE_DATE_EPOCH`.
        variable: String,
        /// What is wrong.
        message: String,
        /// A suggestion.
        hint: Option<String>,
    },
}

impl Error {
    /// Whether this is a usage error (a bad flag: exit code 2).
    #[must_use]
    pub fn is_usage(&self) -> bool {
        matches!(self, Self::Flag { .. })
    }

    /// The suggestion, if any.
    #[must_use]
    pub fn hint(&self) -> Option<&str> {
        match self {
            Self::Invalid { hint, .. }
            | Self::Flag { hint, .. }
            | Self::Environment { hint, .. } => hint.as_deref(),
            Self::Io { .. } => None,
        }
    }
}

/// A manifest and where it came from, so later checks can cite file:line.
#[derive(Clone, Debug)]
pub struct LoadedManifest {
    /// The parsed manifest.
    pub manifest: Manifest,
    /// The file.
    pub path: PathBuf,
    /// Its text, to turn spans into lines.
    pub text: String,
}

impl LoadedManifest {
    /// Reads, parses and validates `path` (see [`LoadedManifest::validate`]).
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read; [`Error::Invalid`], with
    /// the line and column, when it is not a valid manifest.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let bytes = read_bounded(path, MANIFEST_LIMIT).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(err) => {
                // Point at the first bad byte, counted in the valid prefix.
                let at = err.utf8_error().valid_up_to();
                let prefix = String::from_utf8_lossy(&err.as_bytes()[..at]).into_owned();
                return Err(diagnose::invalid_at(
                    path,
                    &prefix,
                    at,
                    "the manifest is not valid UTF-8".to_owned(),
                    None,
                ));
            }
        };
        Self::from_text(path.to_path_buf(), text)
    }

    /// Parses and validates `text` as if read from `path`; `path` names the
    /// file in errors and anchors relative paths.
    ///
    /// # Errors
    /// [`Error::Invalid`] when `text` is not a valid manifest.
    pub fn from_text(path: PathBuf, text: String) -> Result<Self, Error> {
        let manifest = match toml::from_str::<Manifest>(&text) {
            Ok(manifest) => manifest,
            Err(err) => return Err(diagnose::from_toml(&path, &text, &err)),
        };
        let loaded = Self {
            manifest,
            path,
            text,
        };
        loaded.validate()?;
        Ok(loaded)
    }

    /// An [`Error::Invalid`] at `span` of the manifest text, for checks
    /// made after loading (a root outside `store.dir`, a bad timestamp).
    /// Any span is accepted: one past the end points at the end.
    #[must_use]
    pub fn error_at(
        &self,
        span: std::ops::Range<usize>,
        message: String,
        hint: Option<String>,
    ) -> Error {
        diagnose::invalid_at(&self.path, &self.text, span.start, message, hint)
    }

    /// 1-based line and column (in characters) of byte `offset` of the
    /// manifest text; an offset past the end gives the end.
    #[must_use]
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        diagnose::line_col(&self.text, offset)
    }

    /// A path from the manifest, relative to the manifest's directory.
    #[must_use]
    pub fn resolve(&self, path: &Path) -> PathBuf {
        self.path
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join(path)
    }
}

#[cfg(test)]
mod tests;
