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

/// A layer ready to write: its paths and exact tar size.
#[derive(Clone, Debug)]
pub struct MeasuredLayer {
    /// Store paths in write order.
    pub paths: Vec<StorePath>,
    /// Size of the layer tar in bytes.
    pub size: u64,
    /// Content key: identifies the layer's bytes before they are hashed.
    pub key: Digest,
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
        "nixlayer store layer v1\0{}\0{}\0{}\0{}\0{}\0",
        opts.owner.uid, opts.owner.gid, opts.owner.uname, opts.owner.gname, opts.mtime
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

/// Reads the closure, plans and measures the layers: metadata only.
///
/// # Errors
/// When the closure cannot be read, planning fails or a store path cannot be read.
pub fn prepare(settings: &BuildSettings) -> Result<PreparedImage, Error> {
    let closure = closure::read_closure(&settings.source, &settings.store, &settings.roots)?;
    let plan = plan::plan_layers(&closure, &settings.exclude, &settings.pipeline)?;
    let opts = settings.layer_options();
    let layers = plan
        .layers
        .iter()
        .map(|paths| {
            Ok(MeasuredLayer {
                size: layer::measure_store_layer(&opts, paths)?,
                key: layer_key(&opts, paths),
                paths: paths.clone(),
            })
        })
        .collect::<Result<Vec<_>, layer::Error>>()?;
    Ok(PreparedImage {
        closure,
        plan,
        layers,
    })
}

/// Writes `image` as a docker-archive to `out` in one pass over the store.
///
/// # Errors
/// When a store file cannot be read or `out` cannot be written.
pub fn write_docker_archive<W: Write>(
    settings: &BuildSettings,
    image: &PreparedImage,
    out: W,
    reporter: &dyn Reporter,
) -> Result<(W, BuildSummary), Error> {
    let opts = settings.layer_options();
    let mut archive = DockerArchiveWriter::new(out, settings.mtime);
    let mut records = Vec::with_capacity(image.layers.len());
    let mut layers = Vec::with_capacity(image.layers.len());
    for (index, layer) in image.layers.iter().enumerate() {
        reporter.on_layer_start(index, image.layers.len(), &layer.paths, layer.size);
        archive
            .start_layer(layer_member(&layer.key), layer.size)
            .map_err(Error::Write)?;
        let digest = layer::write_store_layer(&opts, &layer.paths, layer.size, archive.body())?;
        archive.end_layer().map_err(Error::Write)?;
        reporter.on_layer_done(index, &digest.diff_id);
        records.push(LayerRecord {
            diff_id: digest.diff_id,
            comment: image::store_layer_comment(&layer.paths),
        });
        layers.push(LayerSummary {
            diff_id: digest.diff_id,
            size: digest.size,
            paths: layer.paths.len(),
        });
    }
    let config = image::config_json(&settings.config, &records);
    let config_digest = Digest::of(&config);
    let tag = settings
        .tag
        .clone()
        .unwrap_or_else(|| config_digest.hex()[..32].to_owned());
    let reference = format!("{}:{tag}", settings.name);
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
