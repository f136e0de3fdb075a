//! The ops tier: drives the stages for what the library does, and is what
//! the command line calls. It reads the manifest's resolved values, never
//! the command line.
//!
//! - [`settings`]: a loaded manifest, [`settings::Overrides`] and an
//!   [`settings::Environment`] → [`BuildSettings`] and the output's form.
//! - Build: [`prepare`] reads the closure, plans and measures the layers
//!   (metadata only); [`build`] then makes the one pass over the store's
//!   bytes into any [`ImageSink`](crate::sink::ImageSink) (a docker-archive,
//!   an OCI layout or archive, a registry), each layer through the one
//!   layer writer ([`PreparedImage::write_layer_blob`]).
//! - [`push`]: a build into a registry.
//! - [`merge`]: many images (docker-archives, OCI archives and layouts)
//!   into one docker-archive, OCI archive or OCI layout.
//! - [`diff`]: what changes between two images.
//! - [`sbom`]: a build's SPDX or CycloneDX SBOM, attached to the image
//!   manifest as an OCI 1.1 artifact when [`BuildSettings::sbom`] asks.
//!
//! Progress goes to a [`Reporter`]; the library never prints.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use crate::closure::{self, ClosureGraph, Source};
use crate::image::base::{self as base_image, BaseImage};
use crate::image::{self, nix_db, ConfigSpec};
use crate::layer::cache::{LayerCache, Stamps};
use crate::layer::customisation::{CustomisationTree, FileData, OnCollision};
use crate::layer::{self, LayerOptions, Owner, Permissions};
use crate::nix::StorePath;
use crate::oci::{Digest, LayerDigest};
use crate::plan::{self, LayerPlan, Pipeline};
use crate::sink;
use crate::store::binary_cache::CacheError;
use crate::store::{AnyStore, Store as _};

mod accounts;
pub mod arch;
pub mod diff;
pub mod merge;
pub mod push;
pub mod rootfs;
pub mod sbom;
pub mod settings;
mod write;

pub use write::{build, build_platforms};

/// Everything a build needs, resolved: no defaults left, no clock or
/// environment to read. Made by [`BuildSettings::new`] (or
/// [`settings::resolve_build`]), then changed field by field.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BuildSettings {
    /// Image name, already lowercased (`registry/repo`).
    pub name: String,
    /// Tag; `None` derives it from the config digest.
    pub tag: Option<String>,
    /// What the image config says.
    pub config: ConfigSpec,
    /// Where store path content comes from: the local store or a binary
    /// cache ([`AnyStore`]).
    pub store: AnyStore,
    /// Closure roots.
    pub roots: Vec<StorePath>,
    /// Where references come from.
    pub source: Source,
    /// Paths left out of the layers (their dependencies stay).
    pub exclude: Vec<StorePath>,
    /// The layering pipeline.
    pub pipeline: Pipeline,
    /// Owner of store-layer entries.
    pub owner: Owner,
    /// mtime of every layer entry.
    pub mtime: u64,
    /// Where layer digests are remembered between builds (`None`: no cache).
    pub cache: Option<LayerCache<AnyStore>>,
    /// The customisation layer, permissions, the Nix database and the base image.
    pub content: ContentSettings,
    /// Annotations of the OCI image manifest (`[annotations]`,
    /// `[platforms.annotations]`, `--annotation`).
    pub annotations: std::collections::BTreeMap<String, String>,
    /// SBOMs attached to the image manifest (OCI outputs and push only).
    pub sbom: Vec<crate::sbom::SbomFormat>,
    /// Annotations of the image index of a multi-platform output
    /// (`[index.annotations]`, `--annotation index:…`).
    pub index_annotations: std::collections::BTreeMap<String, String>,
}

/// What the image holds beyond the store layers (SPEC §4, §5).
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ContentSettings {
    /// `customisation.contents`: store paths merged into `/`.
    pub contents: Vec<StorePath>,
    /// `customisation.on_collision`.
    pub on_collision: OnCollision,
    /// `customisation.files`, in order.
    pub files: Vec<AddedFile>,
    /// `customisation.dirs`: path and mode.
    pub dirs: Vec<(String, u32)>,
    /// `customisation.symlinks`: path and target.
    pub symlinks: Vec<(String, String)>,
    /// `customisation.permissions`, applied to every layer.
    pub permissions: Permissions,
    /// `closure.include_store_paths`: false puts no store path in the image.
    pub include_store_paths: bool,
    /// `closure.include_nix_db`.
    pub include_nix_db: bool,
    /// `base.image`: for a registry image, where its layout is cached.
    pub base: Option<PathBuf>,
    /// A registry base image, pulled into `base` unless already there.
    pub base_pull: Option<crate::image::pull::PullSpec>,
    /// `customisation.run`: a script run over the tree as fake root, last.
    pub run: Option<String>,
    /// `customisation.chroot`: the script runs inside the image root.
    pub chroot: bool,
    /// `[[users]]` and `[[groups]]`, checked; `None`: no account files.
    pub accounts: Option<crate::manifest::Accounts>,
    /// Take a base image for another platform than the image's (the first
    /// image of the archive) instead of refusing it: `--no-arch-check`.
    pub base_any_platform: bool,
    /// `max_layers` when the store layers use the default pipeline, whose
    /// limit must then leave room for the base image's layers too (nixpkgs
    /// checks no budget for a custom pipeline).
    pub default_budget: Option<u32>,
}

impl Default for ContentSettings {
    fn default() -> Self {
        Self {
            contents: Vec::new(),
            on_collision: OnCollision::Error,
            files: Vec::new(),
            dirs: Vec::new(),
            symlinks: Vec::new(),
            permissions: Permissions::default(),
            include_store_paths: true,
            include_nix_db: false,
            base: None,
            base_pull: None,
            accounts: None,
            run: None,
            chroot: false,
            default_budget: None,
            base_any_platform: false,
        }
    }
}

/// A file the customisation layer adds: the manifest's checked
/// `[[customisation.files]]` entry (`manifest::CustomFile`) with its bytes
/// resolved to inline data or a file on disk.
#[derive(Clone, Debug)]
pub struct AddedFile {
    /// Absolute path in the image.
    pub path: String,
    /// Its bytes.
    pub data: FileData,
    /// Its mode.
    pub mode: u32,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The closure could not be read.
    #[error(transparent)]
    Closure(#[from] closure::Error),
    /// The layers could not be planned.
    #[error(transparent)]
    Plan(#[from] plan::Error),
    /// A layer could not be measured or written.
    #[error(transparent)]
    Layer(#[from] layer::Error),
    /// Writing the image failed.
    #[error("failed to write the image")]
    Write(#[source] std::io::Error),
    /// The base image could not be read.
    #[error(transparent)]
    Base(#[from] base_image::Error),
    /// A registry base image could not be pulled.
    #[error(transparent)]
    Pull(#[from] crate::image::pull::Error),
    /// The Nix database could not be made.
    #[error(transparent)]
    NixDb(#[from] nix_db::Error),
    /// An SBOM could not be made.
    #[error(transparent)]
    Sbom(#[from] crate::sbom::Error),
    /// Nothing would go into the image.
    #[error("the image would have no layer: `closure.roots`, `[customisation]` and `[base]` give nothing to put in it")]
    Empty,
    /// `include_nix_db` with a store path of the image whose reference is
    /// not in it (dropped by `closure.exclude` or `remove_paths`): Nix's
    /// database holds only whole closures, and registering the path
    /// without it would make `nix copy` and the garbage collector inside
    /// the container lose it.
    #[error("`include_nix_db`: `{path}` refers to `{reference}`, which is not in the image (left out by `closure.exclude` or the layering pipeline); the Nix database can only register whole closures: keep it in the image, or drop `include_nix_db`")]
    NixDbIncomplete {
        /// The registered path.
        path: String,
        /// Its reference that is missing.
        reference: String,
    },
    /// The base image leaves no layer for the store paths (nixpkgs' check, reference §B.2).
    #[error("the base image `{}` and the customisation layer use {used} layers, but only `max_layers = {max}` are allowed; at least 1 layer is required to store contents", base.display())]
    Budget {
        /// The base image.
        base: PathBuf,
        /// Layers used by the base image and the customisation layer.
        used: usize,
        /// `max_layers`.
        max: u32,
    },
    /// An output file or directory could not be written.
    #[error(transparent)]
    Sink(#[from] sink::Error),
    /// The registry could not be reached.
    #[error(transparent)]
    Registry(#[from] sink::registry::Error),
    /// A binary cache could not give a NAR (the error names the store
    /// path and the URL).
    #[error(transparent)]
    BinaryCache(#[from] CacheError),
    /// A `files`, `dirs` or `symlinks` entry at a path that `contents`
    /// already fills (or, for a file or symlink, a directory another entry
    /// is in): it would replace it, and all below it, silently.
    #[error("`{path}` in `customisation.{field}` would replace {existing}")]
    EntryCollision {
        /// The image path.
        path: String,
        /// `files`, `dirs` or `symlinks`.
        field: &'static str,
        /// What is there: the `contents` link, or the directory.
        existing: String,
    },
    /// `[[users]]` would write a path that `contents` or `files` gave.
    #[error("`{path}` comes from both `[customisation]` and the accounts (`[[users]]`, `[[groups]]`); set `customisation.on_collision = \"first\"` to keep the `[customisation]` one")]
    AccountCollision {
        /// The image path.
        path: String,
    },
}

/// What a layer holds.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum LayerContent {
    /// Whole store paths, in write order.
    Store(Vec<StorePath>),
    /// The customisation layer.
    Customisation(Arc<CustomisationTree>),
    /// Layer `.1` of a base image, copied unchanged.
    Base(Arc<BaseImage>, usize),
}

/// A layer ready to write: its content and exact tar size.
#[derive(Clone, Debug)]
pub struct MeasuredLayer {
    /// What it holds.
    pub content: LayerContent,
    /// Size of the uncompressed layer tar in bytes.
    pub size: u64,
    /// Content key: identifies the layer's bytes before they are hashed.
    pub key: Digest,
    /// The history comment of the image config.
    pub comment: String,
    /// The content stamps of a store layer's paths from the walk that
    /// measured it (before any of its bytes were read), when the store's
    /// walks stamp: the stamps a docker-archive's layers are checked
    /// against, without a walk of their own.
    measured_stamps: Option<Stamps>,
}

impl MeasuredLayer {
    /// The store paths it holds (none for other layers).
    #[must_use]
    pub fn store_paths(&self) -> &[StorePath] {
        match &self.content {
            LayerContent::Store(paths) => paths,
            LayerContent::Customisation(_) | LayerContent::Base(..) => &[],
        }
    }
}

/// The result of [`prepare`]: the closure, its plan and measured layers.
#[derive(Clone, Debug)]
pub struct PreparedImage {
    /// The closure read from the source.
    pub closure: ClosureGraph,
    /// The layer plan.
    pub plan: LayerPlan,
    /// The layers, measured: base, store, then customisation.
    pub layers: Vec<MeasuredLayer>,
    /// The base image, when there is one.
    pub base: Option<Arc<BaseImage>>,
}

/// The most layers docker's layer store stacks (moby's `maxLayerDepth`):
/// `docker load` of a deeper image fails with "max depth exceeded".
pub const DOCKER_MAX_LAYERS: usize = 125;

impl PreparedImage {
    /// A warning when the image has more layers than docker can load. A
    /// `[layering] pipeline` is not held to `max_layers` (nixpkgs ignores
    /// `maxLayers` when a `layeringPipeline` is given), so
    /// `[["popularity_contest"]]` on a large closure makes one layer per
    /// path; podman and containerd may take it, docker refuses it.
    #[must_use]
    pub fn depth_warning(&self) -> Option<String> {
        let total = self.layers.len();
        (total > DOCKER_MAX_LAYERS).then(|| {
            let store = self.plan.layers.len();
            format!(
                "the image has {total} layers ({store} store layers); docker refuses more than {DOCKER_MAX_LAYERS} (`docker load`: max depth exceeded): a `[layering] pipeline` is not held to `max_layers`, so end it with `[\"limit_layers\", N]`"
            )
        })
    }
}

/// One layer of a written image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerSummary {
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
    /// Its size.
    pub size: u64,
    /// How many store paths it holds.
    pub paths: usize,
    /// sha256 of the stored blob: the diff_id unless the layer is
    /// compressed on its own (OCI outputs).
    pub digest: Digest,
    /// Bytes of the stored blob.
    pub blob_size: u64,
    /// The blob's media type (OCI layer media types; docker-archive layers
    /// are plain tars).
    pub media_type: String,
}

/// How many blobs an OCI layout build wrote and how many it found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlobCounts {
    /// Blobs written.
    pub written: usize,
    /// Blobs that were already there and were kept.
    pub existing: usize,
    /// Layers whose blob was already there and known from the layer cache,
    /// so their store paths were not read at all.
    pub layers_cached: usize,
}

/// What a build produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSummary {
    /// `name:tag`.
    pub reference: String,
    /// sha256 of the config (the docker image id).
    pub config_digest: Digest,
    /// The layers, bottom first.
    pub layers: Vec<LayerSummary>,
    /// Bytes of the whole archive (compressed, as written), or of the
    /// image's blobs for a layout.
    pub bytes: u64,
    /// sha256 of the OCI image manifest (OCI outputs only): the digest a
    /// registry shows for the image.
    pub manifest_digest: Option<Digest>,
    /// Blobs written and kept (OCI outputs only).
    pub blobs: Option<BlobCounts>,
    /// The SBOMs attached to the image manifest (`BuildSettings::sbom`).
    pub sboms: Vec<sbom::AttachedSbom>,
}

/// Progress of a build, for the CLI to show; the library never prints.
pub trait Reporter: Send + Sync {
    /// A layer of `bytes` bytes (0-based `index` of `total`) starts.
    fn on_layer_start(&self, index: usize, total: usize, paths: &[StorePath], bytes: u64) {
        let _ = (index, total, paths, bytes);
    }
    /// `bytes` more bytes of layer `index`'s tar were written.
    fn on_bytes(&self, index: usize, bytes: u64) {
        let _ = (index, bytes);
    }
    /// A layer is written.
    fn on_layer_done(&self, index: usize, diff_id: &Digest) {
        let _ = (index, diff_id);
    }
    /// A push starts: `meter` counts the bytes of its uploads, which go on
    /// beside the build (on other threads) and after its last layer.
    fn on_uploads(&self, meter: Arc<sink::registry::UploadMeter>) {
        let _ = meter;
    }
}

/// A reporter that reports nothing.
pub struct NoReporter;
impl Reporter for NoReporter {}

/// Identifies a store layer's bytes without reading them: store paths are
/// immutable, so the paths and the header options determine the content.
/// The version prefix changes whenever the layer format would.
fn layer_key(opts: &LayerOptions<AnyStore>, paths: &[StorePath]) -> Digest {
    let mut text = String::new();
    if !opts.permissions.is_empty() {
        // Only then, so keys (and archive bytes) without rules stay as they were.
        text.push_str("permissions\0");
        text.push_str(&opts.permissions.key_text());
    }
    text += &format!(
        "nixlayer store layer v1\0{}\0{}\0{}\0{}\0{}\0{}\0",
        opts.store.dir(),
        opts.owner.uid,
        opts.owner.gid,
        opts.owner.uname,
        opts.owner.gname,
        opts.mtime
    );
    for p in paths {
        text.push_str(p.as_str());
        text.push('\0');
    }
    Digest::of(text.as_bytes())
}

impl BuildSettings {
    /// Settings for an image `name` (lowercase, `registry/repo`) with
    /// `config`, of the closure of `roots` in `store` whose references come
    /// from `source`, layered by `pipeline`. The rest starts as a manifest
    /// leaving it out would have it: no tag (derived from the config
    /// digest), nothing excluded, owner root, every file time 1 (1970-01-01
    /// 00:00:01), no layer cache, no customisation layer and no base image.
    #[must_use]
    pub fn new(
        name: String,
        config: ConfigSpec,
        store: impl Into<AnyStore>,
        roots: Vec<StorePath>,
        source: Source,
        pipeline: Pipeline,
    ) -> Self {
        Self {
            name,
            tag: None,
            config,
            store: store.into(),
            roots,
            source,
            exclude: Vec::new(),
            pipeline,
            owner: Owner::default(),
            mtime: 1,
            cache: None,
            content: ContentSettings::default(),
            annotations: std::collections::BTreeMap::new(),
            sbom: Vec::new(),
            index_annotations: std::collections::BTreeMap::new(),
        }
    }

    fn layer_options(&self) -> LayerOptions<AnyStore> {
        LayerOptions {
            store: self.store.clone(),
            owner: self.owner.clone(),
            mtime: self.mtime,
            permissions: self.content.permissions.clone(),
        }
    }

    /// [`BuildSettings::layer_options`] over the store that measures
    /// layers: a binary cache's `.ls` listings when it has them.
    fn measuring_options(&self) -> LayerOptions<AnyStore> {
        LayerOptions {
            store: self.store.for_measuring(),
            owner: self.owner.clone(),
            mtime: self.mtime,
            permissions: self.content.permissions.clone(),
        }
    }
}

/// Reads the closure and plans the store layers (what `nixlayer layers`
/// shows), reading no store file; a base image is opened to count its layers.
///
/// # Errors
/// When the closure or base image cannot be read, the base image leaves no
/// room for store layers, or planning fails.
pub fn plan(settings: &BuildSettings) -> Result<(ClosureGraph, LayerPlan), Error> {
    let base = open_base(settings)?;
    plan_with_base(settings, base.as_deref())
}

fn open_base(settings: &BuildSettings) -> Result<Option<Arc<BaseImage>>, Error> {
    if let Some(pull) = &settings.content.base_pull {
        pull.ensure()?;
    }
    let platform = base_image::Platform {
        os: &settings.config.os,
        architecture: &settings.config.architecture,
        variant: settings.config.variant.as_deref(),
    };
    Ok(match &settings.content.base {
        Some(path) if settings.content.base_any_platform => Some(Arc::new(BaseImage::open(path)?)),
        Some(path) => Some(Arc::new(BaseImage::open_for(path, &platform)?)),
        None => None,
    })
}

fn plan_with_base(
    settings: &BuildSettings,
    base: Option<&BaseImage>,
) -> Result<(ClosureGraph, LayerPlan), Error> {
    let content = &settings.content;
    let pipeline = match (content.default_budget, &content.base, base) {
        (Some(max), Some(base_path), Some(base)) => {
            // nixpkgs' usedLayers: the customisation layer and the base's.
            let used = 1 + base.layers.len();
            if used >= max as usize {
                return Err(Error::Budget {
                    base: base_path.clone(),
                    used,
                    max,
                });
            }
            settings.pipeline.with_budget(max as usize - used)
        }
        _ => settings.pipeline.clone(),
    };
    if !content.include_store_paths {
        // No store path enters the image: no closure, no store layer.
        return Ok((ClosureGraph::default(), LayerPlan::default()));
    }
    let mut roots = settings.roots.clone();
    for path in &content.contents {
        if !roots.contains(path) {
            roots.push(path.clone());
        }
    }
    let closure = closure::read_closure_in(&settings.source, &settings.store, &roots)?;
    let plan = plan::plan_layers(&closure, &settings.exclude, &pipeline)?;
    Ok((closure, plan))
}

/// Reads the closure, plans and measures the layers: metadata only, except
/// for the base image (decompressed when compressed) and the small
/// customisation layer, which is hashed to name it.
///
/// # Errors
/// When the closure or base image cannot be read, the base image leaves no
/// room for store layers, planning fails, a store path cannot be read, or
/// the customisation layer cannot be built.
pub fn prepare(settings: &BuildSettings) -> Result<PreparedImage, Error> {
    let base = open_base(settings)?;
    let (closure, plan) = plan_with_base(settings, base.as_deref())?;

    let mut layers = Vec::new();
    if let Some(base) = &base {
        for (index, layer) in base.layers.iter().enumerate() {
            layers.push(MeasuredLayer {
                size: layer.size,
                key: layer.diff_id,
                comment: image::store_layer_comment(&[&layer.member]),
                content: LayerContent::Base(Arc::clone(base), index),
                measured_stamps: None,
            });
        }
    }
    if let Some(cache) = settings.store.binary_cache() {
        // Sizes before bytes: a cache with `.ls` listings gives them from
        // the listings alone; without, every NAR is needed to measure, so
        // they are all fetched now, in parallel, rather than one by one.
        let paths: Vec<StorePath> = plan.layers.iter().flatten().cloned().collect();
        if paths.first().is_some_and(|p| !cache.has_listing(p)) {
            cache.fetch_all(&paths)?;
        }
    }
    let opts = settings.layer_options();
    let measuring = settings.measuring_options();
    // Metadata walks: beyond a few threads they only contend for the
    // same directory caches.
    let walkers = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
    let measured = measure_layers(&measuring, &plan.layers, walkers);
    for (paths, measured) in plan.layers.iter().zip(measured) {
        let (size, stamps) = measured?;
        layers.push(MeasuredLayer {
            size,
            key: layer_key(&opts, paths),
            comment: image::store_layer_comment(paths),
            content: LayerContent::Store(paths.clone()),
            // Only a walk of the store the bytes are read from stamps them.
            measured_stamps: settings
                .store
                .local()
                .and_then(|_| Stamps::from_walks(&stamps)),
        });
    }
    let tree = customisation_tree(settings, &closure, &plan)?;
    if !tree.is_empty() {
        // Small by design, so hashing it here (its file sources are read
        // twice) buys a member name that is its diff_id.
        let digest = tree.write(
            settings.mtime,
            &settings.content.permissions,
            std::io::sink(),
        )?;
        layers.push(MeasuredLayer {
            size: digest.size,
            key: digest.diff_id,
            comment: "customisation layer".to_owned(),
            content: LayerContent::Customisation(Arc::new(tree)),
            measured_stamps: None,
        });
    }
    if layers.is_empty() {
        // An image without layers loads nowhere useful; say so instead.
        return Err(Error::Empty);
    }
    Ok(PreparedImage {
        closure,
        plan,
        layers,
        base,
    })
}

/// Each of `layers` measured and stamped by a walk of its paths' metadata
/// ([`layer::measure_and_stamp`]), in order, on up to `threads` threads.
/// These walks are a build's only work before its first byte is read: on
/// one core, ~50 ms of a 2 s cold build of the bench closure, with every
/// other core idle. The layers with the most paths are walked first, so
/// that no thread is left walking a large one alone at the end; results,
/// and so the first error by layer order, do not depend on which thread
/// walked what.
fn measure_layers<S: crate::store::Store + Sync>(
    opts: &LayerOptions<S>,
    layers: &[Vec<StorePath>],
    threads: usize,
) -> Vec<Result<(u64, layer::WalkedStamps), layer::Error>> {
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(layers[i].len()));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::OnceLock<_>> = layers.iter().map(|_| Default::default()).collect();
    let walk = || {
        while let Some(&i) = order.get(next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) {
            let _ = results[i].set(layer::measure_and_stamp(opts, &layers[i]));
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..threads.min(layers.len()) {
            scope.spawn(walk);
        }
        walk();
    });
    results
        .into_iter()
        .zip(layers)
        .map(|(result, paths)| {
            // Every index was taken by one walker, which set it (a walker
            // that panicked made the scope panic).
            result.into_inner().unwrap_or_else(|| {
                Err(layer::Error::Io {
                    path: paths
                        .first()
                        .map_or_else(PathBuf::new, |p| PathBuf::from(p.as_str())),
                    source: std::io::Error::other("the layer was not measured"),
                })
            })
        })
        .collect()
}

/// Whether an entry of `customisation.{field}` at `path` leaves what the
/// tree has there (`on_collision = "first"`, as for the accounts); under
/// `"error"` replacing it is an error naming both. A directory over a
/// directory merges and replaces nothing.
fn keep_existing(
    tree: &CustomisationTree,
    content: &ContentSettings,
    path: &str,
    field: &'static str,
    is_dir: bool,
) -> Result<bool, Error> {
    use crate::layer::customisation::Occupant;
    let existing = match tree.occupant(path) {
        None => return Ok(false),
        Some(Occupant::Directory) if is_dir => return Ok(false),
        // Without `contents`, only another entry made it: no collision
        // with `contents` that `on_collision` could settle.
        Some(Occupant::Directory) if content.contents.is_empty() => {
            return Err(Error::EntryCollision {
                path: path.to_owned(),
                field,
                existing: "the directory there, which holds another entry of `[customisation]`"
                    .to_owned(),
            })
        }
        Some(Occupant::Directory) => {
            "the directory there (made by `customisation.contents`, or holding another entry) and everything in it".to_owned()
        }
        Some(Occupant::ContentsLink(origin)) => {
            format!("the link to `{origin}` that `customisation.contents` puts there")
        }
        Some(_) => "what `customisation.contents` puts there".to_owned(),
    };
    match content.on_collision {
        OnCollision::First => Ok(true),
        _ => Err(Error::EntryCollision {
            path: path.to_owned(),
            field,
            existing,
        }),
    }
}

/// The customisation layer's tree: `contents`, `files`, `dirs`, `symlinks`,
/// the accounts, the Nix database, then the `run` script over all of it (SPEC §4, §5).
fn customisation_tree(
    settings: &BuildSettings,
    closure: &ClosureGraph,
    plan: &LayerPlan,
) -> Result<CustomisationTree, Error> {
    let content = &settings.content;
    let root = Owner::default();
    let mut tree = CustomisationTree::new(settings.store.dir().clone(), settings.owner.clone());
    tree.merge_contents(&settings.store, &content.contents, content.on_collision)?;
    // The manifest gives each of these paths once; what is already there
    // came from `contents` or is the parent directory of an earlier entry.
    for file in &content.files {
        if keep_existing(&tree, content, &file.path, "files", false)? {
            continue;
        }
        tree.add_file(&file.path, file.data.clone(), file.mode, &root)?;
    }
    for (path, mode) in &content.dirs {
        if keep_existing(&tree, content, path, "dirs", true)? {
            continue;
        }
        tree.add_dir(path, *mode, &root)?;
    }
    for (path, target) in &content.symlinks {
        if keep_existing(&tree, content, path, "symlinks", false)? {
            continue;
        }
        tree.add_symlink(path, target, &root)?;
    }
    if let Some(accounts) = &content.accounts {
        accounts::add_accounts(&mut tree, accounts, content.on_collision)?;
    }
    if content.include_nix_db {
        add_nix_db(&mut tree, settings, closure, plan)?;
    }
    if let Some(script) = &content.run {
        // In chroot mode the script sees the whole closure at its store
        // locations (read-only), whether or not the image holds it.
        // Without store paths in the image the plan read no closure; the
        // script still sees the roots' closure (bound, never copied).
        let seen;
        let closure = if content.chroot && !content.include_store_paths {
            let mut roots = settings.roots.clone();
            for path in &content.contents {
                if !roots.contains(path) {
                    roots.push(path.clone());
                }
            }
            seen = closure::read_closure_in(&settings.source, &settings.store, &roots)?;
            &seen
        } else {
            closure
        };
        let visible: Option<Vec<(String, PathBuf)>> = content.chroot.then(|| {
            closure
                .paths()
                .iter()
                .map(|info| {
                    let path = info.path.as_str();
                    (path.to_owned(), settings.store.location(path.as_bytes()))
                })
                .collect()
        });
        // The script's result is cached beside the layers (see `run_script`).
        // A chroot script reads the store paths it sees, so their stamps
        // are part of the key: a store under `store.root` can be edited in
        // place, and a stale result would be a silently wrong layer.
        let cache = settings.cache.as_ref().map(|c| c.dir().join("scripts"));
        let mut seen_stamp = Vec::new();
        if cache.is_some() && content.chroot {
            for info in closure.paths() {
                let stamp = settings
                    .store
                    .stamp(&info.path)
                    .map_err(layer::Error::from)?;
                seen_stamp.extend_from_slice(&(stamp.len() as u64).to_le_bytes());
                seen_stamp.extend_from_slice(&stamp);
            }
        }
        tree = tree.run_script(
            script,
            &std::env::temp_dir(),
            visible.as_deref(),
            &seen_stamp,
            cache.as_deref(),
        )?;
    }
    if let Some(rule) = tree.unmatched_rule(&content.permissions) {
        return Err(layer::Error::UnmatchedRule {
            pattern: rule.pattern.clone(),
        }
        .into());
    }
    Ok(tree)
}

/// `/nix/var/nix` with the database of every store path in the image and a
/// gcroot per root, all owned by `[owner]` so Nix works as that user.
fn add_nix_db(
    tree: &mut CustomisationTree,
    settings: &BuildSettings,
    closure: &ClosureGraph,
    plan: &LayerPlan,
) -> Result<(), Error> {
    let owner = &settings.owner;
    let infos: Vec<&closure::PathInfo> = plan
        .layers
        .iter()
        .flatten()
        .filter_map(|p| closure.get(p.as_str()))
        .collect();
    let in_image: std::collections::HashSet<&str> =
        infos.iter().map(|info| info.path.as_str()).collect();
    for info in &infos {
        if let Some(reference) = info
            .references
            .iter()
            .find(|r| !in_image.contains(r.as_str()))
        {
            return Err(Error::NixDbIncomplete {
                path: info.path.as_str().to_owned(),
                reference: reference.as_str().to_owned(),
            });
        }
    }
    let db = nix_db::nix_db(&infos, settings.mtime)?;
    // The state directory sits next to the store directory (`/nix/var/nix`
    // for `/nix/store`), as Nix derives it.
    let store = settings.store.dir().as_str();
    let prefix = store.rsplit_once('/').map_or("", |(parent, _)| parent);
    let state = format!("{prefix}/var/nix");
    for dir in [
        format!("{prefix}/var"),
        state.clone(),
        format!("{state}/db"),
        format!("{state}/gcroots"),
        format!("{state}/gcroots/docker"),
    ] {
        tree.add_dir(&dir, 0o755, owner)?;
    }
    tree.add_file(
        &format!("{state}/db/db.sqlite"),
        FileData::Inline(db),
        0o644,
        owner,
    )?;
    tree.add_file(
        &format!("{state}/db/schema"),
        FileData::Inline(nix_db::SCHEMA_VERSION.as_bytes().to_vec()),
        0o644,
        owner,
    )?;
    if settings.content.include_store_paths {
        let mut roots: Vec<&StorePath> = settings
            .roots
            .iter()
            .chain(&settings.content.contents)
            .collect();
        roots.sort();
        roots.dedup();
        for root in roots {
            tree.add_symlink(
                &format!("{state}/gcroots/docker/{}", root.base_name()),
                root.as_str(),
                owner,
            )?;
        }
    }
    Ok(())
}

impl PreparedImage {
    /// Writes the uncompressed tar of layer `index` to `out`, which takes
    /// exactly `self.layers[index].size` bytes.
    ///
    /// # Errors
    /// When the store cannot be read, `out` cannot be written, or the store
    /// changed since measuring.
    pub fn write_layer<W: Write + Send>(
        &self,
        settings: &BuildSettings,
        index: usize,
        out: W,
    ) -> Result<LayerDigest, Error> {
        let measured = &self.layers[index];
        match &measured.content {
            LayerContent::Store(paths) => Ok(layer::write_store_layer(
                &settings.layer_options(),
                paths,
                measured.size,
                out,
            )?),
            LayerContent::Customisation(tree) => {
                let digest = tree.write(settings.mtime, &settings.content.permissions, out)?;
                if digest.diff_id != measured.key {
                    return Err(layer::Error::Changed {
                        path: PathBuf::from("customisation layer"),
                        expected: measured.size,
                        found: digest.size,
                    }
                    .into());
                }
                Ok(digest)
            }
            LayerContent::Base(base, index) => Ok(base.write_layer(*index, out)?),
        }
    }

    /// The image config for layers written with these diff_ids.
    #[must_use]
    pub fn config_json(&self, settings: &BuildSettings, diff_ids: &[Digest]) -> Vec<u8> {
        let records = || {
            diff_ids
                .iter()
                .zip(&self.layers)
                .map(|(d, l)| (d, l.comment.as_str()))
        };
        match &self.base {
            Some(base) => {
                // Only the base's Env is inherited, merged by nixpkgs' rule (§A.7).
                let mut spec = settings.config.clone();
                let own = spec
                    .config
                    .get("Env")
                    .and_then(serde_json::Value::as_array)
                    .map(|env| {
                        env.iter()
                            .filter_map(|e| e.as_str().map(str::to_owned))
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default();
                let merged = image::merge_env(&base.env, &own);
                if !merged.is_empty() {
                    spec.config.insert("Env".to_owned(), merged.into());
                }
                image::config_json_of(&spec, records())
            }
            None => image::config_json_of(&settings.config, records()),
        }
    }
}

/// What the sink names the image with besides the manifests' own
/// annotations: the index's (`[index.annotations]`), and on the
/// `index.json` entry of a layout or archive the standard keys known here
/// that must stay out of the image manifest — `created` (already in the
/// config, so in the manifest digest through it) and `version`, the tag
/// (one image pushed under several tags keeps one digest, so nothing
/// depending on the tag may enter it). `version` is left out for a tag
/// derived from the content or `latest`, which are no versions.
#[must_use]
pub fn output_annotations(settings: &BuildSettings) -> sink::OutputAnnotations {
    let mut descriptor = std::collections::BTreeMap::new();
    descriptor.insert(
        "org.opencontainers.image.created".to_owned(),
        settings.config.created.clone(),
    );
    if let Some(tag) = settings.tag.as_deref().filter(|t| *t != "latest") {
        descriptor.insert(
            "org.opencontainers.image.version".to_owned(),
            tag.to_owned(),
        );
    }
    sink::OutputAnnotations {
        index: settings.index_annotations.clone(),
        descriptor,
    }
}

/// `name:tag`, the tag derived from the config digest when not given.
#[must_use]
pub fn reference(settings: &BuildSettings, config_digest: &Digest) -> String {
    let tag = settings
        .tag
        .clone()
        .unwrap_or_else(|| config_digest.hex()[..32].to_owned());
    format!("{}:{tag}", settings.name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fixture::{build_tree, local, store_path, LINK, SINGLE, TREE};

    /// Layers measured on several threads get, layer by layer, the sizes,
    /// stamps and errors of one walk after another; the first error by
    /// layer order is the same whichever thread met it first.
    #[test]
    fn layers_measured_on_several_threads_are_those_measured_in_turn() {
        let dir = tempfile::tempdir().unwrap();
        build_tree(dir.path());
        let opts = LayerOptions {
            store: local(dir.path()),
            owner: Owner::default(),
            mtime: 1,
            permissions: Permissions::default(),
        };
        let gone = |name: &str| store_path(&format!("/nix/store/{}-{name}", "1".repeat(32)));
        let layers = vec![
            vec![store_path(TREE)],
            vec![store_path(SINGLE), store_path(LINK)],
            vec![gone("first-missing")],
            vec![store_path(LINK)],
            vec![store_path(SINGLE), gone("second-missing"), store_path(TREE)],
            vec![store_path(TREE), store_path(SINGLE), store_path(LINK)],
        ];
        let in_turn: Vec<String> = layers
            .iter()
            .map(|paths| format!("{:?}", layer::measure_and_stamp(&opts, paths)))
            .collect();
        assert!(in_turn[2].contains("first-missing"), "{}", in_turn[2]);
        assert!(in_turn[4].contains("second-missing"), "{}", in_turn[4]);
        for threads in [1, 2, 3, 16] {
            let measured: Vec<String> = measure_layers(&opts, &layers, threads)
                .iter()
                .map(|r| format!("{r:?}"))
                .collect();
            assert_eq!(measured, in_turn, "{threads} threads");
            let first_error = measure_layers(&opts, &layers, threads)
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .unwrap_err();
            assert!(first_error.to_string().contains("first-missing"));
        }
    }
}
