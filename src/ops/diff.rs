//! `diff`: what changes between two images — store paths added, removed
//! and changed, layers kept, added and dropped, and the bytes an update
//! pushes and pulls. Either side is a manifest (planned and its layers
//! hashed, through the layer cache when it knows them) or an image read by
//! [`crate::archive`] (docker-archive, OCI archive, OCI layout).
//!
//! Layers are matched by diff_id (the sha256 of the uncompressed tar), so a
//! manifest and the archive built from it agree on what content changed
//! whatever the compression; the bytes to push count blobs by their digest
//! (what a registry stores), so a layer of the same content stored another
//! way (plain, gzip, zstd) is pushed again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{json, Value};

use crate::archive::{self, ImageArchive};
use crate::oci::{self, Descriptor, Digest};

use super::{BuildSettings, Error};

/// One layer of an image, as `diff` compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffLayer {
    /// sha256 of the uncompressed tar: what identifies the layer.
    pub diff_id: Digest,
    /// sha256 of the stored blob (the diff_id for an uncompressed layer).
    pub digest: Digest,
    /// Bytes of the stored blob: what a registry transfers.
    pub blob_size: u64,
    /// The store paths it holds (from the plan, or the config's history).
    pub store_paths: Vec<String>,
}

/// An image reduced to what `diff` compares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffImage {
    /// The layers, bottom first.
    pub layers: Vec<DiffLayer>,
    /// Bytes of the image config.
    pub config_size: u64,
    /// Bytes of the OCI image manifest (as a registry holds it).
    pub manifest_size: u64,
    /// The image config, to tell which of its settings changed.
    pub config: Value,
    /// Its digest: a registry holding the old image has an unchanged one.
    pub config_digest: Digest,
    /// The manifest's digest, likewise.
    pub manifest_digest: Digest,
}

/// Why an image could not be read for `diff`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// A manifest could not be planned or its layers hashed.
    #[error(transparent)]
    Build(#[from] Error),
    /// An archive or layout could not be read.
    #[error(transparent)]
    Archive(#[from] archive::Error),
    /// The archive holds no image, or several (of `platform`, named
    /// `reference`).
    #[error("`{}` holds {count} images{}{}; `diff` compares exactly one on each side{hint}", path.display(), platform.as_ref().map(|p| format!(" of platform `{p}`")).unwrap_or_default(), reference.as_ref().map(|r| format!(" named `{r}`")).unwrap_or_default())]
    ImageCount {
        /// The archive.
        path: std::path::PathBuf,
        /// How many images it holds (of `platform`, named `reference`).
        count: usize,
        /// The platform asked for.
        platform: Option<String>,
        /// The name asked for (`PATH:REF`).
        reference: Option<String>,
        /// The way to choose one, as ` (…)`, or nothing.
        hint: String,
    },
    /// A layer has no diff_id in the config.
    #[error("`{}`: layer {index} has no diff_id in the image config", path.display())]
    NoDiffId {
        /// The archive.
        path: std::path::PathBuf,
        /// 0-based layer index.
        index: usize,
    },
}

/// The image a manifest's settings build: planned like `build`, each layer
/// hashed once (the layer cache gives the diff_id of a layer it knows, so
/// only new layers are read). Sizes are those of uncompressed layers, as a
/// docker-archive or an uncompressed OCI output stores them.
///
/// # Errors
/// When the closure cannot be read, planning fails or a layer cannot be read.
pub fn from_settings(settings: &BuildSettings) -> Result<DiffImage, Error> {
    from_settings_stored(settings, None)
}

/// [`from_settings`], each layer's blob as an OCI output compressed with
/// `compress` stores it (digest and size; through the layer cache when it
/// knows that blob, else compressed here): what a registry would hold of
/// an image built and pushed from these settings. `None` (or no
/// compression): the uncompressed tars.
///
/// # Errors
/// As [`from_settings`], and when a layer cannot be compressed.
pub fn from_settings_stored(
    settings: &BuildSettings,
    compress: Option<&crate::codec::CompressOptions>,
) -> Result<DiffImage, Error> {
    use crate::codec::{BlobWriter, Compression};
    let compress = compress.filter(|c| c.codec != Compression::None);
    let stored_name = compress.map(crate::codec::stored_form);
    let image = super::prepare(settings)?;
    let mut layers = Vec::with_capacity(image.layers.len());
    for (index, layer) in image.layers.iter().enumerate() {
        let record = settings
            .cache
            .as_ref()
            .and_then(|c| c.get(&layer.key, layer.store_paths()));
        let cached = record
            .as_ref()
            .and_then(|r| r.tar)
            .filter(|t| t.size == layer.size);
        let cached_blob = match (&stored_name, &record) {
            (Some(name), Some(r)) => r.blobs.get(name).copied(),
            _ => None,
        };
        // A base layer stored as the output stores layers goes in as it
        // is (`BaseImage::stored_blob`): its digest, no compressing.
        let kept_blob = match (&layer.content, compress) {
            (super::LayerContent::Base(base, i), Some(c)) => base
                .stored_blob(*i, c.codec)
                .map(|blob| (base.layers[*i].diff_id, blob)),
            _ => None,
        };
        let (tar, blob) = match (kept_blob, compress, cached, cached_blob) {
            (Some((diff_id, blob)), ..) => (
                oci::LayerDigest {
                    diff_id,
                    size: layer.size,
                },
                Some(blob),
            ),
            (None, None, Some(tar), _) => (
                oci::LayerDigest {
                    diff_id: tar.digest,
                    size: tar.size,
                },
                None,
            ),
            (None, Some(_), Some(tar), Some(blob)) => (
                oci::LayerDigest {
                    diff_id: tar.digest,
                    size: tar.size,
                },
                Some((blob.digest, blob.size)),
            ),
            (None, None, None, _) => (image.write_layer(settings, index, std::io::sink())?, None),
            (None, Some(options), _, _) => {
                let mut writer =
                    BlobWriter::layer(std::io::sink(), options).map_err(Error::Write)?;
                let tar = image.write_layer(settings, index, &mut writer)?;
                let (_, written) = writer.finish_layer(tar).map_err(Error::Write)?;
                (tar, Some((written.digest, written.size)))
            }
        };
        let (digest, blob_size) = blob.unwrap_or((tar.diff_id, tar.size));
        // A base layer's paths are those the base's own history lists:
        // the built image's history names the base's member instead, but
        // a diff against the base must not call them removed.
        let store_paths = match &layer.content {
            super::LayerContent::Base(base, i) => base.layers[*i].store_paths.clone(),
            _ => layer
                .store_paths()
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
        };
        layers.push(DiffLayer {
            diff_id: tar.diff_id,
            digest,
            blob_size,
            store_paths,
        });
    }
    let media_type = compress
        .map_or(Compression::None, |c| c.codec)
        .layer_media_type();
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    let config = image.config_json(settings, &diff_ids);
    let manifest = oci::manifest_json(
        &Descriptor {
            media_type: oci::CONFIG_MEDIA_TYPE.to_owned(),
            digest: Digest::of(&config),
            size: config.len() as u64,
        },
        &layers
            .iter()
            .map(|l| Descriptor {
                media_type: media_type.to_owned(),
                digest: l.digest,
                size: l.blob_size,
            })
            .collect::<Vec<_>>(),
    );
    Ok(DiffImage {
        layers,
        config_size: config.len() as u64,
        manifest_size: manifest.len() as u64,
        config: serde_json::from_slice(&config).unwrap_or(Value::Null),
        config_digest: Digest::of(&config),
        manifest_digest: Digest::of(&manifest),
    })
}

/// The one image of a docker-archive (any compression), OCI archive or OCI
/// layout. Store paths per layer come from the config's history comments
/// (`store paths: ['…']`, as nixlayer and nixpkgs write them); a layer
/// without one lists none.
///
/// # Errors
/// When the path cannot be read as an image, holds other than one image,
/// or a layer has no diff_id.
pub fn from_archive(
    path: &Path,
    platform: Option<&crate::manifest::PlatformName>,
) -> Result<DiffImage, DiffError> {
    from_archive_named(path, None, platform)
}

/// The names an image of `archive` goes by: its docker `RepoTags` or OCI
/// `ref.name`, and the full reference containerd records
/// (`io.containerd.image.name`) on its descriptor or its `index.json`
/// entry's.
fn image_names(archive: &ImageArchive, image: &archive::Image) -> Vec<String> {
    let full = |descriptor: Option<&Value>| {
        descriptor?
            .get("annotations")?
            .get(oci::CONTAINERD_NAME)?
            .as_str()
            .map(str::to_owned)
    };
    let mut names = image.tags.clone();
    let entry = archive.entries().get(image.entry).map(|e| &e.descriptor);
    for name in [full(image.descriptor.as_ref()), full(entry)]
        .into_iter()
        .flatten()
    {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// [`from_archive`], of the images named `reference` (a docker `RepoTags`
/// entry, an OCI `ref.name` or containerd image name, exactly) when given:
/// one image of an archive or layout holding several tags.
///
/// # Errors
/// As [`from_archive`]; also when no image, or several, go by `reference`.
pub fn from_archive_named(
    path: &Path,
    reference: Option<&str>,
    platform: Option<&crate::manifest::PlatformName>,
) -> Result<DiffImage, DiffError> {
    from_image_archive(&ImageArchive::open(path)?, reference, platform)
}

/// [`from_archive_named`] of an archive already open (one read from
/// stdin, as `-`); errors name it by [`ImageArchive::path`].
///
/// # Errors
/// As [`from_archive_named`].
pub fn from_image_archive(
    archive: &ImageArchive,
    reference: Option<&str>,
    platform: Option<&crate::manifest::PlatformName>,
) -> Result<DiffImage, DiffError> {
    let path = archive.path();
    let platform_of = |i: &archive::Image| {
        let config = i.config_value().unwrap_or(Value::Null);
        crate::manifest::PlatformName {
            architecture: config["architecture"].as_str().unwrap_or("").to_owned(),
            variant: config["variant"].as_str().map(str::to_owned),
        }
    };
    // Of several images, the one of `platform` (without a variant, any of
    // the architecture's, as a pull picks) and of the name given.
    let fits = |i: &&archive::Image| {
        let platform_fits = platform.is_none_or(|wanted| {
            let name = platform_of(i);
            name.architecture == wanted.architecture
                && (wanted.variant.is_none() || name.is_same_platform(wanted))
        });
        platform_fits && reference.is_none_or(|r| image_names(archive, i).iter().any(|n| n == r))
    };
    let chosen: Vec<&archive::Image> = archive.images().iter().filter(fits).collect();
    let [image] = chosen[..] else {
        // The ways out that would tell the images apart.
        let mut ways = Vec::new();
        let platforms: BTreeSet<String> =
            chosen.iter().map(|i| platform_of(i).to_string()).collect();
        if platform.is_none() && platforms.len() > 1 {
            ways.push("with `--platform ARCH[/VARIANT]`".to_owned());
        }
        let all: Vec<String> = archive
            .images()
            .iter()
            .flat_map(|i| image_names(archive, i))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        // Names tell images apart unless they all go by the same ones (the
        // platforms of one index); a name that matched none is answered
        // with those there are.
        let named: BTreeSet<Vec<String>> = chosen.iter().map(|i| image_names(archive, i)).collect();
        let names_help = if reference.is_some() {
            chosen.is_empty()
        } else {
            named.len() > 1
        };
        if names_help && !all.is_empty() {
            // A few names make the point; a hostile archive may hold
            // thousands.
            const SHOWN: usize = 5;
            let mut names: Vec<String> = all
                .iter()
                .take(SHOWN)
                .map(|n| format!("`{}`", n.escape_debug()))
                .collect();
            if all.len() > SHOWN {
                names.push(format!("{} more", all.len() - SHOWN));
            }
            ways.push(format!(
                "as `{}:NAME`, of {}",
                path.display(),
                names.join(", ")
            ));
        }
        return Err(DiffError::ImageCount {
            path: path.to_owned(),
            count: chosen.len(),
            platform: platform.map(ToString::to_string),
            reference: reference.map(str::to_owned),
            hint: if ways.is_empty() {
                String::new()
            } else {
                format!(" (choose one {})", ways.join(", or "))
            },
        });
    };
    let config = image.config_value().unwrap_or(Value::Null);
    let mut history = crate::image::history_store_paths(&config, image.layers.len());
    let mut layers = Vec::with_capacity(image.layers.len());
    for (index, layer) in image.layers.iter().enumerate() {
        let diff_id = layer.diff_id.ok_or_else(|| DiffError::NoDiffId {
            path: path.to_owned(),
            index,
        })?;
        // A docker-archive records no digest: a plain tar's is its
        // diff_id, but a compressed member's (docker loads gzip members)
        // is that of its bytes, which are read for it.
        let digest = match layer.digest {
            Some(digest) => digest,
            None if layer.media_type == crate::codec::Compression::None.layer_media_type() => {
                diff_id
            }
            None => archive.verify_blob(layer)?.digest,
        };
        layers.push(DiffLayer {
            diff_id,
            digest,
            blob_size: layer.size,
            store_paths: std::mem::take(&mut history[index]),
        });
    }
    let config_size = image.config.len() as u64;
    // A docker-archive has no OCI manifest: count the one a push would make.
    let manifest = oci::manifest_json(
        &Descriptor {
            media_type: oci::CONFIG_MEDIA_TYPE.to_owned(),
            digest: image.config_digest,
            size: config_size,
        },
        &image
            .layers
            .iter()
            .zip(&layers)
            .map(|(l, d)| Descriptor {
                media_type: l.media_type.clone(),
                digest: d.digest,
                size: d.blob_size,
            })
            .collect::<Vec<_>>(),
    );
    Ok(DiffImage {
        layers,
        config_size,
        manifest_size: manifest.len() as u64,
        config_digest: image.config_digest,
        manifest_digest: Digest::of(&manifest),
        config,
    })
}

/// A store path whose name stayed and whose hash changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangedPath {
    /// The old store path.
    pub old: String,
    /// The new store path.
    pub new: String,
}

/// What changes from one image to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDiff {
    /// Store paths only the new image has (by name).
    pub added: Vec<String>,
    /// Store paths only the old image has (by name).
    pub removed: Vec<String>,
    /// Store paths of the same name and another hash.
    pub changed: Vec<ChangedPath>,
    /// Layers in both (by diff_id), in the new image's order.
    pub kept: Vec<DiffLayer>,
    /// Of `kept`, those whose new blob the old image does not have (by
    /// digest): the same content stored another way (another compression),
    /// which a registry holding the old image does not hold.
    pub kept_reblobbed: Vec<DiffLayer>,
    /// Layers only the new image has.
    pub added_layers: Vec<DiffLayer>,
    /// Layers only the old image has.
    pub dropped_layers: Vec<DiffLayer>,
    /// The new image's config size; 0 when the config is unchanged (a
    /// registry holding the old image has it).
    pub config_size: u64,
    /// The new image's manifest size; 0 when it is unchanged.
    pub manifest_size: u64,
    /// The config settings that differ, as `KEY` or `config.KEY` (the
    /// runtime settings: `config.Env`, `config.Cmd`, …), sorted. `rootfs`
    /// and `history` are left out: they follow the layers.
    pub config_changed: Vec<String>,
}

impl ImageDiff {
    /// Bytes of the layer blobs the old image lacks (by digest): the added
    /// layers' and the kept layers' stored another way.
    #[must_use]
    pub fn layer_bytes(&self) -> u64 {
        self.added_layers
            .iter()
            .chain(&self.kept_reblobbed)
            .map(|l| l.blob_size)
            .sum()
    }

    /// Bytes an update sends to a registry that holds the old image: the
    /// new layers' blobs, the config and the manifest. A client that holds
    /// the old image pulls the same bytes.
    #[must_use]
    pub fn push_bytes(&self) -> u64 {
        self.layer_bytes() + self.config_size + self.manifest_size
    }

    /// As JSON (canonicalise with [`oci::canonical_json`]).
    #[must_use]
    pub fn to_json(&self) -> Value {
        let layer = |l: &DiffLayer| {
            json!({
                "diff_id": l.diff_id.prefixed(),
                "digest": l.digest.prefixed(),
                "size": l.blob_size,
                "store_paths": l.store_paths,
            })
        };
        json!({
            "store_paths": {
                "added": self.added,
                "removed": self.removed,
                "changed": self.changed.iter().map(|c| json!({"old": c.old, "new": c.new})).collect::<Vec<_>>(),
            },
            "layers": {
                "kept": self.kept.iter().map(layer).collect::<Vec<_>>(),
                "kept_other_blob": self.kept_reblobbed.iter().map(layer).collect::<Vec<_>>(),
                "added": self.added_layers.iter().map(layer).collect::<Vec<_>>(),
                "dropped": self.dropped_layers.iter().map(layer).collect::<Vec<_>>(),
            },
            "config": { "changed": self.config_changed },
            "bytes": {
                "layers": self.layer_bytes(),
                "config": self.config_size,
                "manifest": self.manifest_size,
                "push": self.push_bytes(),
                "pull": self.push_bytes(),
            },
        })
    }
}

/// The name of a store path: what follows `<hash>-` in its base name.
fn path_name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    base.split_once('-').map_or(base, |(_, name)| name)
}

/// The top-level config keys whose values differ, and of the runtime
/// `config` object each key as `config.KEY`; `rootfs` and `history` are
/// left out (the layer comparison covers them).
fn config_changes(old: &Value, new: &Value) -> Vec<String> {
    fn differing(old: &Value, new: &Value) -> BTreeSet<String> {
        let empty = serde_json::Map::new();
        let (o, n) = (
            old.as_object().unwrap_or(&empty),
            new.as_object().unwrap_or(&empty),
        );
        o.keys()
            .chain(n.keys())
            .filter(|k| o.get(*k) != n.get(*k))
            .cloned()
            .collect()
    }
    let mut out = Vec::new();
    for key in differing(old, new) {
        match key.as_str() {
            "rootfs" | "history" => {}
            "config" => {
                let runtime = differing(&old["config"], &new["config"]);
                if runtime.is_empty() {
                    // One side's `config` is not an object (or absent).
                    out.push(key);
                    continue;
                }
                out.extend(runtime.into_iter().map(|k| format!("config.{k}")));
            }
            _ => out.push(key),
        }
    }
    out
}

/// Compares `old` with `new`.
#[must_use]
pub fn diff(old: &DiffImage, new: &DiffImage) -> ImageDiff {
    // A layer is its diff_id: where one side lists no paths for it (an
    // image built on a base names the base's member in its history, not
    // the base's paths) and the other side does, they are the same paths.
    let known: BTreeMap<Digest, &Vec<String>> = old
        .layers
        .iter()
        .chain(&new.layers)
        .filter(|l| !l.store_paths.is_empty())
        .map(|l| (l.diff_id, &l.store_paths))
        .collect();
    let filled = |image: &DiffImage| -> Vec<DiffLayer> {
        image
            .layers
            .iter()
            .map(|l| match known.get(&l.diff_id) {
                Some(paths) if l.store_paths.is_empty() => DiffLayer {
                    store_paths: (*paths).clone(),
                    ..l.clone()
                },
                _ => l.clone(),
            })
            .collect()
    };
    let (old_layers, new_layers) = (filled(old), filled(new));
    let paths = |layers: &[DiffLayer]| -> BTreeSet<String> {
        layers
            .iter()
            .flat_map(|l| l.store_paths.iter().cloned())
            .collect()
    };
    let (old_paths, new_paths) = (paths(&old_layers), paths(&new_layers));
    // Group what differs by name; same-name pairs are changes, the rest
    // (a name with more versions on one side) added or removed.
    let mut by_name: BTreeMap<&str, (Vec<&String>, Vec<&String>)> = BTreeMap::new();
    for p in old_paths.difference(&new_paths) {
        by_name.entry(path_name(p)).or_default().0.push(p);
    }
    for p in new_paths.difference(&old_paths) {
        by_name.entry(path_name(p)).or_default().1.push(p);
    }
    let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    for (olds, news) in by_name.into_values() {
        let pairs = olds.len().min(news.len());
        for (o, n) in olds.iter().zip(&news) {
            changed.push(ChangedPath {
                old: (*o).clone(),
                new: (*n).clone(),
            });
        }
        removed.extend(olds[pairs..].iter().map(|p| (*p).clone()));
        added.extend(news[pairs..].iter().map(|p| (*p).clone()));
    }
    added.sort();
    removed.sort();

    let old_ids: BTreeSet<Digest> = old_layers.iter().map(|l| l.diff_id).collect();
    let new_ids: BTreeSet<Digest> = new_layers.iter().map(|l| l.diff_id).collect();
    let mut seen = BTreeSet::new();
    let (mut kept, mut added_layers) = (Vec::new(), Vec::new());
    for l in &new_layers {
        // A layer twice in one image is stored and sent once.
        if !seen.insert(l.diff_id) {
            continue;
        }
        if old_ids.contains(&l.diff_id) {
            kept.push(l.clone());
        } else {
            added_layers.push(l.clone());
        }
    }
    // A registry stores blobs by digest: a kept layer whose blob the old
    // image lacks (another compression) is sent again.
    let old_blobs: BTreeSet<Digest> = old_layers.iter().map(|l| l.digest).collect();
    let kept_reblobbed = kept
        .iter()
        .filter(|l| !old_blobs.contains(&l.digest))
        .cloned()
        .collect();
    let mut seen = BTreeSet::new();
    let dropped_layers = old_layers
        .iter()
        .filter(|l| !new_ids.contains(&l.diff_id) && seen.insert(l.diff_id))
        .cloned()
        .collect();
    ImageDiff {
        added,
        removed,
        changed,
        kept,
        kept_reblobbed,
        added_layers,
        dropped_layers,
        // What the registry already holds is not sent again.
        config_size: if old.config_digest == new.config_digest {
            0
        } else {
            new.config_size
        },
        manifest_size: if old.manifest_digest == new.manifest_digest {
            0
        } else {
            new.manifest_size
        },
        config_changed: config_changes(&old.config, &new.config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(n: u8, paths: &[&str]) -> DiffLayer {
        DiffLayer {
            diff_id: Digest([n; 32]),
            digest: Digest([n; 32]),
            blob_size: u64::from(n) * 100,
            store_paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    /// An image of `layers` with an empty config (digest 10, 10 bytes) and
    /// manifest (digest 20, 20 bytes).
    fn image(layers: Vec<DiffLayer>) -> DiffImage {
        DiffImage {
            layers,
            config_size: 10,
            manifest_size: 20,
            config: json!({}),
            config_digest: Digest([10; 32]),
            manifest_digest: Digest([20; 32]),
        }
    }

    #[test]
    fn one_changed_path() {
        let old = DiffImage {
            layers: vec![
                layer(1, &["/nix/store/aaa-lib-1"]),
                layer(2, &["/nix/store/bbb-app"]),
            ],
            config_size: 10,
            manifest_size: 20,
            config: json!({"config": {"Cmd": ["a"], "Env": ["X=1"]}, "created": "1"}),
            config_digest: Digest([10; 32]),
            manifest_digest: Digest([20; 32]),
        };
        let new = DiffImage {
            layers: vec![
                layer(1, &["/nix/store/aaa-lib-1"]),
                layer(3, &["/nix/store/ccc-app", "/nix/store/ddd-new"]),
            ],
            config_size: 11,
            manifest_size: 21,
            config: json!({"config": {"Cmd": ["b"], "Env": ["X=1"], "User": "1"}, "created": "1", "history": []}),
            config_digest: Digest([11; 32]),
            manifest_digest: Digest([21; 32]),
        };
        let d = diff(&old, &new);
        assert_eq!(d.added, ["/nix/store/ddd-new"]);
        assert!(d.removed.is_empty());
        assert_eq!(
            d.changed,
            [ChangedPath {
                old: "/nix/store/bbb-app".into(),
                new: "/nix/store/ccc-app".into()
            }]
        );
        assert_eq!(d.kept.len(), 1);
        assert_eq!(d.added_layers.len(), 1);
        assert_eq!(d.dropped_layers.len(), 1);
        assert_eq!(d.push_bytes(), 300 + 11 + 21);
        assert_eq!(d.config_changed, ["config.Cmd", "config.User"]);
        // Against itself: nothing changes and nothing is sent.
        let same = diff(&new, &new);
        assert!(same.config_changed.is_empty());
        assert_eq!(same.push_bytes(), 0);
    }

    /// The same layers stored another way (gzip blobs of the same tars)
    /// are kept by diff_id but pushed: the registry has not their digests.
    #[test]
    fn the_same_content_in_other_blobs_is_pushed() {
        let plain = image(vec![layer(1, &["/nix/store/aaa-lib-1"]), layer(2, &[])]);
        let mut gzip = plain.clone();
        gzip.layers[1].digest = Digest([9; 32]);
        gzip.layers[1].blob_size = 7;
        gzip.manifest_digest = Digest([21; 32]);
        let d = diff(&plain, &gzip);
        assert_eq!(d.kept.len(), 2);
        assert!(d.added_layers.is_empty() && d.dropped_layers.is_empty());
        assert_eq!(d.kept_reblobbed, [gzip.layers[1].clone()]);
        assert_eq!(d.layer_bytes(), 7);
        assert_eq!(d.push_bytes(), 7 + 20);
    }

    /// A layer one side lists no paths for (an image built on a base names
    /// the base's member) holds the paths the other side lists for it.
    #[test]
    fn a_layer_without_paths_takes_the_other_sides() {
        let base = image(vec![layer(1, &["/nix/store/aaa-lib-1"])]);
        let mut top = base.clone();
        top.layers = vec![layer(1, &[]), layer(2, &[])];
        for d in [diff(&base, &top), diff(&top, &base)] {
            assert!(d.removed.is_empty() && d.added.is_empty(), "{d:?}");
            assert_eq!(d.kept, [base.layers[0].clone()]);
        }
    }

    proptest::proptest! {
        #[test]
        fn path_name_never_panics(s in ".*") {
            let _ = path_name(&s);
        }
    }
}
