//! Serde readers shared by the JSON sources (`graph_json`, `path_info`).
//!
//! Store paths and hashes are validated *while* serde_json reads them,
//! through seeds that carry the store directory, rather than afterwards: a
//! value rejected inside the deserializer gets serde_json's line number, so
//! every error names `file:line` as SPEC §2 asks.

use std::fmt;
use std::io;
use std::path::Path;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{malformed, Error, Interner, PathInfo};
use crate::nix::{NarHash, StoreDir, StorePath};

/// Runs `seed` over the whole of `input` (trailing data is an error),
/// reading it as it goes: the paths read are kept, the text is not.
pub(super) fn parse<'de, S: DeserializeSeed<'de>>(
    input: impl io::Read,
    file: &Path,
    seed: S,
) -> Result<S::Value, Error> {
    let mut de = serde_json::Deserializer::from_reader(input);
    seed.deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value))
        .map_err(|e| {
            if e.is_io() {
                return Error::Io {
                    path: file.to_owned(),
                    source: e.into(),
                };
            }
            // serde_json appends the position to its message; the line goes
            // into `Malformed` instead, so drop it from the text.
            let text = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            let message = text.strip_suffix(&position).unwrap_or(&text);
            malformed(file, e.line().max(1), message)
        })
}

/// How store paths are spelled in a document.
#[derive(Clone, Copy)]
pub(super) struct Paths<'a> {
    /// The store directory every path must be in.
    pub(super) dir: &'a StoreDir,
    /// Whether base names (`<hash>-<name>`) are accepted besides absolute paths.
    pub(super) base_names: bool,
    /// The paths read so far, shared by the path and its referrers.
    pub(super) interner: &'a Interner,
}

impl Paths<'_> {
    fn parse<E: de::Error>(self, text: &str) -> Result<StorePath, E> {
        if self.base_names && !text.starts_with('/') {
            StorePath::from_base_name(self.dir, text).map(|p| self.interner.intern(p))
        } else {
            self.interner.parse(self.dir, text)
        }
        .map_err(E::custom)
    }
}

/// One store path.
pub(super) struct PathSeed<'a>(pub(super) Paths<'a>);

impl<'de> DeserializeSeed<'de> for PathSeed<'_> {
    type Value = StorePath;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<StorePath, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for PathSeed<'_> {
    type Value = StorePath;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a store path")
    }
    fn visit_str<E: de::Error>(self, text: &str) -> Result<StorePath, E> {
        self.0.parse(text)
    }
}

/// A list of store paths.
struct PathListSeed<'a>(Paths<'a>);

impl<'de> DeserializeSeed<'de> for PathListSeed<'_> {
    type Value = Vec<StorePath>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for PathListSeed<'_> {
    type Value = Vec<StorePath>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of store paths")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut paths = Vec::new();
        while let Some(p) = seq.next_element_seed(PathSeed(self.0))? {
            paths.push(p);
        }
        Ok(paths)
    }
}

/// A NAR hash in any spelling [`NarHash::parse`] accepts.
struct Hash(NarHash);

impl<'de> de::Deserialize<'de> for Hash {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Hash;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sha256 hash")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Hash, E> {
                NarHash::parse(text).map(Hash).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

/// One path's entry: `{path, narHash, narSize, references, …}`, other keys
/// ignored. In path-info's object form the path is the entry's key and a
/// `null` entry means the path is not valid.
pub(super) struct EntrySeed<'a> {
    pub(super) paths: Paths<'a>,
    /// The key the entry sits under, in the object form.
    pub(super) key: Option<&'a StorePath>,
}

impl<'de> DeserializeSeed<'de> for EntrySeed<'_> {
    type Value = PathInfo;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<PathInfo, D::Error> {
        d.deserialize_any(self)
    }
}

/// An entry's key, matched as serde_json reads it: no `String` per key
/// (a 10,000-path closure has 50,000 keys).
enum Field {
    Path,
    NarHash,
    NarSize,
    References,
    Valid,
    Other,
}

impl<'de> de::Deserialize<'de> for Field {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Field, E> {
                Ok(match key {
                    "path" => Field::Path,
                    "narHash" => Field::NarHash,
                    "narSize" => Field::NarSize,
                    "references" => Field::References,
                    "valid" => Field::Valid,
                    _ => Field::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

fn set<T, E: de::Error>(slot: &mut Option<T>, key: &'static str, value: T) -> Result<(), E> {
    if slot.replace(value).is_some() {
        return Err(E::duplicate_field(key));
    }
    Ok(())
}

impl<'de> Visitor<'de> for EntrySeed<'_> {
    type Value = PathInfo;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object with `path`, `narHash`, `narSize` and `references`")
    }

    fn visit_unit<E: de::Error>(self) -> Result<PathInfo, E> {
        match self.key {
            Some(key) => Err(E::custom(format_args!("`{key}` is not valid in the store"))),
            None => Err(E::invalid_type(de::Unexpected::Unit, &self)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PathInfo, A::Error> {
        let (mut path, mut nar_hash, mut nar_size, mut references, mut valid) =
            (None, None, None, None, None);
        while let Some(key) = map.next_key::<Field>()? {
            match key {
                Field::Path => set(
                    &mut path,
                    "path",
                    map.next_value_seed(PathSeed(self.paths))?,
                )?,
                Field::NarHash => set(&mut nar_hash, "narHash", map.next_value::<Hash>()?.0)?,
                Field::NarSize => set(&mut nar_size, "narSize", map.next_value::<u64>()?)?,
                Field::References => set(
                    &mut references,
                    "references",
                    map.next_value_seed(PathListSeed(self.paths))?,
                )?,
                // Old path-info marks a path it could not find with `"valid": false`.
                Field::Valid => set(&mut valid, "valid", map.next_value::<bool>()?)?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let path = match (path, self.key) {
            (Some(p), Some(key)) if p != *key => {
                return Err(de::Error::custom(format_args!(
                    "the entry under `{key}` says its path is `{p}`"
                )))
            }
            (Some(p), _) => p,
            (None, Some(key)) => key.clone(),
            (None, None) => return Err(de::Error::missing_field("path")),
        };
        if valid == Some(false) {
            return Err(de::Error::custom(format_args!(
                "`{path}` is not valid in the store"
            )));
        }
        Ok(PathInfo {
            nar_hash: Some(nar_hash.ok_or_else(|| de::Error::missing_field("narHash"))?),
            nar_size: nar_size.ok_or_else(|| de::Error::missing_field("narSize"))?,
            references: references.ok_or_else(|| de::Error::missing_field("references"))?,
            path,
        })
    }
}

/// A list of entries.
pub(super) struct EntryListSeed<'a>(pub(super) Paths<'a>);

impl<'de> DeserializeSeed<'de> for EntryListSeed<'_> {
    type Value = Vec<PathInfo>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EntryListSeed<'_> {
    type Value = Vec<PathInfo>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of path entries")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        let seed = || EntrySeed {
            paths: self.0,
            key: None,
        };
        while let Some(entry) = seq.next_element_seed(seed())? {
            entries.push(entry);
        }
        Ok(entries)
    }
}
