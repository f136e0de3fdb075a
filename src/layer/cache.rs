//! A cache of what writing a layer produced, keyed by the layer's content
//! key (see `build`): store paths are immutable, so a layer with the same
//! paths, owner, mtime and format has the same bytes, and its diff_id and
//! compressed blob digests can be reused without reading the store again.
//!
//! One small JSON file per layer under the cache directory (by default
//! `$XDG_CACHE_HOME/nixlayer/layers`), written to a temporary file and
//! renamed, so concurrent builds never see half an entry. A missing or
//! unreadable entry is a cache miss, never an error: the cache only saves work.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::Digest;

/// What one stored form of a layer (uncompressed, or compressed one way) is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRecord {
    /// sha256 of the stored bytes, `sha256:<hex>`.
    #[serde(with = "digest_text")]
    pub digest: Digest,
    /// Their size.
    pub size: u64,
}

/// Everything known about one layer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRecord {
    /// The uncompressed tar (its digest is the diff_id).
    pub tar: Option<BlobRecord>,
    /// Compressed forms, by compression name and level (e.g. `gzip-6`).
    pub blobs: BTreeMap<String, BlobRecord>,
}

/// The cache directory.
#[derive(Clone, Debug)]
pub struct LayerCache {
    dir: PathBuf,
}

impl LayerCache {
    /// A cache in `dir` (created on first write).
    #[must_use]
    pub fn new(dir: PathBuf) -> Self {
        Self { dir }
    }

    /// Where the cache lives.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn entry(&self, key: &Digest) -> PathBuf {
        self.dir.join(format!("{}.json", key.hex()))
    }

    /// The record for `key`, if one was stored and is readable.
    #[must_use]
    pub fn get(&self, key: &Digest) -> Option<LayerRecord> {
        let bytes = std::fs::read(self.entry(key)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Merges `record` into the entry for `key`.
    ///
    /// # Errors
    /// When the directory or the entry cannot be written; callers may ignore
    /// it, as a failed write only costs a later rebuild.
    pub fn put(&self, key: &Digest, record: &LayerRecord) -> std::io::Result<()> {
        let mut merged = self.get(key).unwrap_or_default();
        if record.tar.is_some() {
            merged.tar = record.tar;
        }
        merged
            .blobs
            .extend(record.blobs.iter().map(|(k, v)| (k.clone(), *v)));
        std::fs::create_dir_all(&self.dir)?;
        let mut temp = tempfile::NamedTempFile::new_in(&self.dir)?;
        let value = serde_json::to_value(&merged).map_err(std::io::Error::other)?;
        temp.write_all(&crate::image::canonical_json(&value))?;
        temp.persist(self.entry(key)).map_err(|e| e.error)?;
        Ok(())
    }
}

mod digest_text {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    use crate::layer::Digest;

    pub(super) fn serialize<S: Serializer>(d: &Digest, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&d.prefixed())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Digest, D::Error> {
        let text = String::deserialize(d)?;
        let hex = text
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64)
            .ok_or_else(|| D::Error::custom("not a sha256 digest"))?;
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(D::Error::custom)?;
        }
        Ok(Digest(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_merges_and_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LayerCache::new(dir.path().join("layers"));
        let key = Digest::of(b"key");
        assert_eq!(cache.get(&key), None);
        let tar = BlobRecord {
            digest: Digest::of(b"tar"),
            size: 10240,
        };
        cache
            .put(
                &key,
                &LayerRecord {
                    tar: Some(tar),
                    blobs: BTreeMap::new(),
                },
            )
            .unwrap();
        let gz = BlobRecord {
            digest: Digest::of(b"gz"),
            size: 99,
        };
        cache
            .put(
                &key,
                &LayerRecord {
                    tar: None,
                    blobs: [("gzip-6".to_owned(), gz)].into(),
                },
            )
            .unwrap();
        let got = cache.get(&key).unwrap();
        assert_eq!(got.tar, Some(tar));
        assert_eq!(got.blobs["gzip-6"], gz);
        // A damaged entry is a miss, not an error.
        std::fs::write(cache.entry(&key), b"{").unwrap();
        assert_eq!(cache.get(&key), None);
    }
}
