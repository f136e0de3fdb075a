//! A [`ClosureGraph`] and a layering pipeline → a [`LayerPlan`].
//!
//! Invariants: every path of the (non-excluded) closure is in exactly one
//! layer, no layer is empty, the same input always gives the same plan.

use crate::closure::ClosureGraph;
use crate::nix::StorePath;

/// The store paths of each store layer, bottom first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerPlan {
    /// Layers in image order; paths in the order they are written.
    pub layers: Vec<Vec<StorePath>>,
}

/// A parsed layering pipeline (the nixpkgs `layeringPipeline` DSL).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    steps: Vec<serde_json::Value>,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline is malformed.
    #[error("invalid layering pipeline: {0}")]
    Pipeline(String),
}

impl Pipeline {
    /// `[["popularity_contest"], ["limit_layers", budget]]`, the default.
    #[must_use]
    pub fn popularity(budget: usize) -> Self {
        Self {
            steps: vec![
                serde_json::json!(["popularity_contest"]),
                serde_json::json!(["limit_layers", budget]),
            ],
        }
    }

    /// Parses the pipeline as nixpkgs' JSON (or the same shape from TOML).
    ///
    /// # Errors
    /// On an unknown operation or wrong arguments.
    pub fn parse(value: &serde_json::Value) -> Result<Self, Error> {
        let _ = value;
        todo!("pipeline parsing")
    }
}

/// Plans the store layers of `graph` without the `exclude` paths.
///
/// # Errors
/// When the pipeline fails on this graph.
pub fn plan_layers(
    graph: &ClosureGraph,
    exclude: &[StorePath],
    pipeline: &Pipeline,
) -> Result<LayerPlan, Error> {
    let _ = (graph, exclude, pipeline);
    todo!("layering")
}
