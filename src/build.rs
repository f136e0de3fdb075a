//! Drives the stages for one resolved build: closure → plan → measured
//! layers → archive. [`prepare`] does everything that reads metadata only;
//! [`write_docker_archive`] then makes the one pass over the store's bytes.

use std::io::Write;

use crate::closure::{self, ClosureGraph, Source, StoreLocation};
use crate::image::{self, ConfigSpec, LayerRecord};
use crate::layer::{self, Digest, LayerOptions, Owner};
use crate::nix::StorePath;
use crate::plan::{self, LayerPlan, Pipeline};
use crate::sink::docker_archive::{layer_member, DockerArchiveWriter};

/// Everything a build needs, resolved: no defaults left, no clock or
/// environment to read.
#[derive(Clone, Debug)]
pub struct BuildSettings {
    /// Image name, already lowercased (`registry/repo`).
    pub name: String,
    /// Tag; `None` derives it from the config digest.
    pub tag: Option<String>,
    /// What the image config says.
    pub config: ConfigSpec,
    /// Where the store is.
    pub store: StoreLocation,
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
}

/// What a layer holds.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum LayerContent {
    /// Whole store paths, in write order.
    Store(Vec<StorePath>),
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
}

impl MeasuredLayer {
    /// The store paths it holds (none for other layers).
    #[must_use]
    pub fn store_paths(&self) -> &[StorePath] {
        match &self.content {
            LayerContent::Store(paths) => paths,
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
    /// The store layers, measured.
    pub layers: Vec<MeasuredLayer>,
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
    /// Bytes of the whole archive.
    pub bytes: u64,
}

/// Progress of a build, for the CLI to show; the library never prints.
pub trait Reporter: Send + Sync {
    /// A layer of `bytes` bytes (0-based `index` of `total`) starts.
    fn on_layer_start(&self, index: usize, total: usize, paths: &[StorePath], bytes: u64) {
        let _ = (index, total, paths, bytes);
    }
    /// A layer is written.
    fn on_layer_done(&self, index: usize, diff_id: &Digest) {
        let _ = (index, diff_id);
    }
}

/// A reporter that reports nothing.
pub struct NoReporter;
impl Reporter for NoReporter {}

/// Identifies a store layer's bytes without reading them: store paths are
/// immutable, so the paths and the header options determine the content.
/// The version prefix changes whenever the layer format would.
fn layer_key(opts: &LayerOptions, paths: &[StorePath]) -> Digest {
    let mut text = format!(
        "nixlayer store layer v1\0{}\0{}\0{}\0{}\0{}\0{}\0",
        opts.store.dir,
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
    fn layer_options(&self) -> LayerOptions {
        LayerOptions {
            store: self.store.clone(),
            owner: self.owner.clone(),
            mtime: self.mtime,
        }
    }
}

/// Reads the closure and plans the store layers (what `nixlayer layers`
/// shows), reading no store file.
///
/// # Errors
/// When the closure cannot be read or planning fails.
pub fn plan(settings: &BuildSettings) -> Result<(ClosureGraph, LayerPlan), Error> {
    let closure = closure::read_closure(&settings.source, &settings.store, &settings.roots)?;
    let plan = plan::plan_layers(&closure, &settings.exclude, &settings.pipeline)?;
    Ok((closure, plan))
}

/// Reads the closure, plans and measures the layers: metadata only.
///
/// # Errors
/// When the closure cannot be read, planning fails or a store path cannot be read.
pub fn prepare(settings: &BuildSettings) -> Result<PreparedImage, Error> {
    let (closure, plan) = plan(settings)?;
    let opts = settings.layer_options();
    let layers = plan
        .layers
        .iter()
        .map(|paths| {
            Ok(MeasuredLayer {
                size: layer::measure_store_layer(&opts, paths)?,
                key: layer_key(&opts, paths),
                comment: image::store_layer_comment(paths),
                content: LayerContent::Store(paths.clone()),
            })
        })
        .collect::<Result<Vec<_>, layer::Error>>()?;
    Ok(PreparedImage {
        closure,
        plan,
        layers,
    })
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
    ) -> Result<layer::LayerDigest, Error> {
        let measured = &self.layers[index];
        match &measured.content {
            LayerContent::Store(paths) => Ok(layer::write_store_layer(
                &settings.layer_options(),
                paths,
                measured.size,
                out,
            )?),
        }
    }

    /// The image config for layers written with these diff_ids.
    #[must_use]
    pub fn config_json(&self, settings: &BuildSettings, diff_ids: &[Digest]) -> Vec<u8> {
        let records: Vec<LayerRecord> = self
            .layers
            .iter()
            .zip(diff_ids)
            .map(|(l, d)| LayerRecord {
                diff_id: *d,
                comment: l.comment.clone(),
            })
            .collect();
        image::config_json(&settings.config, &records)
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

/// Writes `image` as a docker-archive to `out` in one pass over the store.
///
/// # Errors
/// When a store file cannot be read or `out` cannot be written.
pub fn write_docker_archive<W: Write + Send>(
    settings: &BuildSettings,
    image: &PreparedImage,
    out: W,
    reporter: &dyn Reporter,
) -> Result<(W, BuildSummary), Error> {
    let mut archive = DockerArchiveWriter::new(out, settings.mtime);
    let mut layers = Vec::with_capacity(image.layers.len());
    for (index, layer) in image.layers.iter().enumerate() {
        reporter.on_layer_start(index, image.layers.len(), layer.store_paths(), layer.size);
        archive
            .start_layer(layer_member(&layer.key), layer.size)
            .map_err(Error::Write)?;
        let digest = image.write_layer(settings, index, archive.body())?;
        archive.end_layer().map_err(Error::Write)?;
        reporter.on_layer_done(index, &digest.diff_id);
        layers.push(LayerSummary {
            diff_id: digest.diff_id,
            size: digest.size,
            paths: layer.store_paths().len(),
        });
    }
    let diff_ids: Vec<Digest> = layers.iter().map(|l| l.diff_id).collect();
    let config = image.config_json(settings, &diff_ids);
    let config_digest = Digest::of(&config);
    let reference = reference(settings, &config_digest);
    let (out, archive_summary) = archive
        .finish(&config, std::slice::from_ref(&reference))
        .map_err(Error::Write)?;
    Ok((
        out,
        BuildSummary {
            reference,
            config_digest,
            layers,
            bytes: archive_summary.bytes,
        },
    ))
}
