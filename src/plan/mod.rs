//! A [`ClosureGraph`] and a layering pipeline → a [`LayerPlan`].
//!
//! This reproduces nixpkgs' `flatten_references_graph` (reference §C):
//! excluded paths are dropped, the rest becomes a graph whose vertices are
//! sorted by narSize, the pipeline runs on it,
//! and the result is flattened into layers. For the same graph, exclusions
//! and pipeline, the layers and their order equal nixpkgs' output (SPEC §3,
//! tested against `fixtures/golden/layering/`).
//!
//! Invariants: every path of the (non-excluded) closure is in exactly one
//! layer, no layer is empty, the same input always gives the same plan.
//!
//! Every DSL operation of nixpkgs is supported, plus `reorder`; besides a
//! pipeline, a plan can come from nixpkgs' newer auto-layer algorithm
//! ([`Pipeline::auto`], reference §C.6).

mod auto;
mod dsl;
mod eval;
mod graph;
mod limit;
mod popularity;
mod split_paths;
mod subcomponent;

#[cfg(test)]
mod golden;

use crate::closure::ClosureGraph;
use crate::nix::StorePath;

use self::dsl::Step;
use self::graph::LayerGraph;

pub use self::dsl::OPERATIONS as PIPELINE_OPERATIONS;

/// The store paths of each store layer, bottom first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerPlan {
    /// Layers in image order; paths in the order they are written.
    pub layers: Vec<Vec<StorePath>>,
}

/// How to plan the store layers: a parsed layering pipeline (the nixpkgs
/// `layeringPipeline` DSL) or the auto-layer strategy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pipeline {
    kind: Kind,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    /// DSL steps, run on the layering graph.
    Steps(Vec<Step>),
    /// nixpkgs' `dockerAutoLayer` with this many layers at most.
    Auto(usize),
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The pipeline is not a list of steps, or a step is not
    /// `[operation, argument…]`.
    #[error("invalid layering pipeline: {0}")]
    Pipeline(String),
    /// A step names an operation the DSL does not have.
    #[error(
        "layering pipeline step {step}: unknown operation `{op}`; valid operations: {valid}",
        valid = dsl::OPERATIONS.join(", ")
    )]
    UnknownOperation {
        /// The top-level step, counted from 1 (a step nested in `over`,
        /// `map` or `pipe` reports the step holding it).
        step: usize,
        /// The name it gave.
        op: String,
    },
    /// A step's arguments are wrong.
    #[error("layering pipeline step {step}: `{op}` takes {takes}, got {found}")]
    Arguments {
        /// The top-level step, counted from 1 (a step nested in `over`,
        /// `map` or `pipe` reports the step holding it).
        step: usize,
        /// The operation.
        op: &'static str,
        /// What it takes.
        takes: &'static str,
        /// What it got.
        found: String,
    },
    /// A step got a value it cannot work on, e.g. `limit_layers` before
    /// `popularity_contest` made a list.
    #[error("layering pipeline step {step}: `{op}` needs {needs}, got {found}")]
    Input {
        /// The top-level step, counted from 1 (a step nested in `over`,
        /// `map` or `pipe` reports the step holding it).
        step: usize,
        /// The operation.
        op: &'static str,
        /// What it works on.
        needs: &'static str,
        /// What it got.
        found: &'static str,
    },
    /// `over` names a key the dict does not have, e.g. `common` after a
    /// `split_paths` whose split-off paths share nothing with the rest
    /// (nixpkgs fails with a `KeyError`).
    #[error(
        "layering pipeline step {step}: `over` found no `{key}` in the dict; it has {}",
        keys(present)
    )]
    MissingKey {
        /// The top-level step, counted from 1.
        step: usize,
        /// The key asked for.
        key: &'static str,
        /// The keys the dict has, in order.
        present: Vec<&'static str>,
    },
    /// The auto-layer strategy was given no layer at all.
    #[error("the auto layering strategy needs a budget of at least one store layer")]
    NoLayers,
    /// The references form a cycle, so popularity is undefined (nixpkgs'
    /// recursion would not end).
    #[error("the closure has a reference cycle through `{path}`")]
    Cycle {
        /// A path on the cycle.
        path: StorePath,
    },
    /// A path appears twice in the graph.
    #[error("`{path}` appears twice in the closure graph")]
    DuplicatePath {
        /// The path.
        path: StorePath,
    },
    /// A reference names a path that is not in the graph.
    #[error("`{referrer}` references `{reference}`, which is not in the closure graph")]
    UnknownReference {
        /// The path holding the reference.
        referrer: StorePath,
        /// The missing path.
        reference: StorePath,
    },
}

/// `` `main`, `rest` `` or "no key" for [`Error::MissingKey`].
fn keys(present: &[&str]) -> String {
    if present.is_empty() {
        return "no key".to_owned();
    }
    present
        .iter()
        .map(|k| format!("`{k}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// Whether the pipeline itself is at fault (its shape, an operation,
    /// its arguments or the values its steps pass on), rather than the
    /// closure: such errors belong at the pipeline's place in the manifest.
    #[must_use]
    pub fn is_pipeline(&self) -> bool {
        matches!(
            self,
            Self::Pipeline(_)
                | Self::UnknownOperation { .. }
                | Self::Arguments { .. }
                | Self::Input { .. }
                | Self::MissingKey { .. }
        )
    }
}

impl Pipeline {
    /// `[["popularity_contest"], ["limit_layers", budget]]`, the default.
    ///
    /// A `budget` of 0 makes a pipeline that [`plan_layers`] rejects, as
    /// nixpkgs' `limit_layers` asserts a positive count.
    #[must_use]
    pub fn popularity(budget: usize) -> Self {
        Self {
            kind: Kind::Steps(vec![Step::PopularityContest, Step::LimitLayers(budget)]),
        }
    }

    /// nixpkgs' auto-layer algorithm (`dockerAutoLayer`, reference §C.6)
    /// with at most `budget` store layers, ties broken by path.
    ///
    /// A `budget` of 0 makes a strategy that [`plan_layers`] rejects.
    #[must_use]
    pub fn auto(budget: usize) -> Self {
        Self {
            kind: Kind::Auto(budget),
        }
    }

    /// The same default strategy with another layer budget (when a base
    /// image takes part of it); a custom pipeline is returned unchanged, as
    /// nixpkgs checks no budget for one.
    #[must_use]
    pub fn with_budget(&self, budget: usize) -> Self {
        match &self.kind {
            Kind::Auto(_) => Self::auto(budget),
            Kind::Steps(steps)
                if matches!(
                    steps.as_slice(),
                    [Step::PopularityContest, Step::LimitLayers(_)]
                ) =>
            {
                Self::popularity(budget)
            }
            Kind::Steps(_) => self.clone(),
        }
    }

    /// Parses the pipeline as nixpkgs' JSON (or the same shape from TOML),
    /// e.g. `[["popularity_contest"], ["limit_layers", 99]]`.
    ///
    /// # Errors
    /// When the value is not a list of `[operation, argument…]` steps, names
    /// an unknown operation, or has wrong arguments.
    pub fn parse(value: &serde_json::Value) -> Result<Self, Error> {
        Ok(Self {
            kind: Kind::Steps(dsl::parse(value)?),
        })
    }
}

/// Plans the store layers of `graph` without the `exclude` paths.
///
/// Excluded paths absent from the graph are ignored; what an excluded path
/// references stays in the plan.
///
/// # Errors
/// When the pipeline fails on this graph: a step gets a value it cannot
/// work on, `over` names a key the dict lacks, `limit_layers` or the
/// budget is 0, or the references form a cycle.
pub fn plan_layers(
    graph: &ClosureGraph,
    exclude: &[StorePath],
    pipeline: &Pipeline,
) -> Result<LayerPlan, Error> {
    if let Kind::Auto(budget) = pipeline.kind {
        let layers = auto::auto_layers(
            graph
                .paths()
                .iter()
                .map(|p| (&p.path, p.nar_size, p.references.as_slice())),
            exclude,
            budget,
        )?;
        return Ok(LayerPlan { layers });
    }
    let base = LayerGraph::new(
        graph
            .paths()
            .iter()
            .map(|p| (&p.path, p.nar_size, &p.references)),
        exclude,
    )?;
    plan_graph(&base, pipeline)
}

/// Runs `pipeline` on a built layering graph and names the layers.
fn plan_graph(base: &LayerGraph, pipeline: &Pipeline) -> Result<LayerPlan, Error> {
    let steps = match &pipeline.kind {
        Kind::Steps(steps) => steps.as_slice(),
        // `plan_layers` runs the auto strategy on the closure graph, before
        // any layering graph is built; a layering graph is planned in one
        // layer, as an empty pipeline would.
        Kind::Auto(_) => &[],
    };
    let layers = eval::run(steps, base)?.into_layers();
    Ok(LayerPlan {
        layers: layers
            .into_iter()
            .map(|ids| ids.into_iter().map(|id| base.path(id).clone()).collect())
            .collect(),
    })
}

#[cfg(test)]
pub(super) mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;
    use serde_json::{json, Value as Json};

    use super::graph::tests::layer_graph;
    use super::graph::Graph;
    use super::*;
    use crate::closure::PathInfo;

    /// A random DAG node: name, narSize, references (to earlier nodes,
    /// possibly itself).
    pub(super) type Node = (&'static str, u64, Vec<usize>);

    /// Names with dashes, repeated often, so popularity ties and the
    /// tie-break key get exercised.
    const NAMES: &[&str] = &["a", "b", "lib-1", "lib-2", "a-b", "z", "glibc-2.40"];

    /// Random DAGs of 1..=`max` nodes: several roots, diamonds, self-references,
    /// repeated narSizes.
    pub(super) fn dag_strategy(max: usize) -> impl Strategy<Value = Vec<Node>> {
        proptest::collection::vec(
            (
                proptest::sample::select(NAMES),
                0u64..4,
                proptest::collection::vec(any::<proptest::sample::Index>(), 0..4),
                any::<bool>(),
            ),
            1..=max,
        )
        .prop_map(|raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, (name, size, refs, self_ref))| {
                    let mut refs: Vec<usize> = if i == 0 {
                        Vec::new()
                    } else {
                        refs.iter().map(|r| r.index(i)).collect()
                    };
                    if self_ref {
                        refs.push(i);
                    }
                    (name, size, refs)
                })
                .collect()
        })
    }

    /// The layering graph of `nodes`, and the whole of it as a pipeline value.
    pub(super) fn build(nodes: &[Node]) -> (LayerGraph, Graph) {
        build_excluding(nodes, &[]).0
    }

    fn build_excluding(nodes: &[Node], exclude: &[usize]) -> ((LayerGraph, Graph), Vec<StorePath>) {
        let view: Vec<(&str, u64, &[usize])> = nodes
            .iter()
            .map(|(n, s, r)| (*n, *s, r.as_slice()))
            .collect();
        let (base, paths) = layer_graph(&view, exclude);
        let graph = Graph::whole(&base);
        ((base, graph), paths)
    }

    /// Every kept path exactly once, no empty layer.
    fn check_partition(plan: &LayerPlan, kept: &BTreeSet<&StorePath>) -> Result<(), TestCaseError> {
        let mut seen = BTreeSet::new();
        for layer in &plan.layers {
            prop_assert!(!layer.is_empty());
            for path in layer {
                prop_assert!(seen.insert(path), "{path} twice");
            }
        }
        prop_assert_eq!(&seen, kept);
        Ok(())
    }

    proptest! {
        #[test]
        fn default_pipeline_invariants(
            nodes in dag_strategy(40),
            budget in 1usize..12,
            exclude in proptest::collection::vec(any::<proptest::sample::Index>(), 0..3),
        ) {
            let exclude: Vec<usize> = exclude.iter().map(|i| i.index(nodes.len())).collect();
            let ((base, _), paths) = build_excluding(&nodes, &exclude);
            let pipeline = Pipeline::popularity(budget);
            let plan = plan_graph(&base, &pipeline).unwrap();
            let kept: BTreeSet<&StorePath> = paths
                .iter()
                .enumerate()
                .filter(|(i, _)| !exclude.contains(i))
                .map(|(_, p)| p)
                .collect();
            check_partition(&plan, &kept)?;
            prop_assert!(plan.layers.len() <= budget);
            prop_assert_eq!(plan.layers.len(), kept.len().min(budget));
            prop_assert_eq!(&plan_graph(&base, &pipeline).unwrap(), &plan);
            // The parsed DSL means the same as the built-in default.
            let parsed = Pipeline::parse(&json!([["popularity_contest"], ["limit_layers", budget]])).unwrap();
            prop_assert_eq!(&parsed, &pipeline);
        }

        #[test]
        fn parse_never_panics(value in json_strategy()) {
            if let Ok(pipeline) = Pipeline::parse(&value) {
                let nodes: Vec<Node> = vec![("a", 1, vec![1]), ("b", 2, vec![]), ("c", 0, vec![1])];
                let (base, _) = build(&nodes);
                let _ = plan_graph(&base, &pipeline);
            }
        }

        #[test]
        fn near_valid_pipelines_never_panic(
            steps in proptest::collection::vec(
                (proptest::sample::select(dsl::OPERATIONS), proptest::collection::vec(json_strategy(), 0..3)),
                0..5,
            ),
            nodes in dag_strategy(10),
        ) {
            let value = Json::Array(
                steps
                    .into_iter()
                    .map(|(op, args)| {
                        let mut step = vec![Json::from(op)];
                        step.extend(args);
                        Json::Array(step)
                    })
                    .collect(),
            );
            if let Ok(pipeline) = Pipeline::parse(&value) {
                let (base, _) = build(&nodes);
                if let Ok(plan) = plan_graph(&base, &pipeline) {
                    prop_assert!(plan.layers.iter().all(|l| !l.is_empty()));
                }
            }
        }
    }

    /// A random step that keeps every path (no `remove_paths`), naming
    /// paths by node index; nested up to `depth` levels.
    fn step_strategy(nodes: usize) -> impl Strategy<Value = Json> {
        let path = move || (0..nodes.max(1)).prop_map(|i| json!(format!("@{i}")));
        let paths = move || proptest::collection::vec(path(), 0..3);
        let key = proptest::sample::select(&["main", "common", "rest"][..]);
        let leaf = prop_oneof![
            Just(json!(["popularity_contest"])),
            (1usize..4).prop_map(|n| json!(["limit_layers", n])),
            (1usize..5).prop_map(|n| json!(["split_every", n])),
            Just(json!(["flatten"])),
            Just(json!(["reverse"])),
            paths().prop_map(|p| json!(["subcomponent_in", p])),
            paths().prop_map(|p| json!(["subcomponent_out", p])),
            (paths(), paths()).prop_map(|(mut p, c)| {
                p.push(json!({ "children_of": c }));
                json!(["split_paths", p])
            }),
            proptest::collection::vec(key.clone(), 0..3).prop_map(|k| json!(["reorder", k])),
        ];
        leaf.prop_recursive(2, 12, 3, move |inner| {
            prop_oneof![
                inner.clone().prop_map(|s| json!(["map", s])),
                (key.clone(), inner.clone()).prop_map(|(k, s)| json!(["over", k, s])),
                proptest::collection::vec(inner, 0..3).prop_map(|s| json!(["pipe", s])),
            ]
        })
    }

    /// `@i` in `value` → the store path of node `i`.
    fn name_paths(value: &Json, paths: &[StorePath]) -> Json {
        match value {
            Json::String(s) => match s.strip_prefix('@').and_then(|i| i.parse::<usize>().ok()) {
                Some(i) => json!(paths[i % paths.len()].as_str()),
                None => value.clone(),
            },
            Json::Array(items) => Json::Array(items.iter().map(|v| name_paths(v, paths)).collect()),
            other => other.clone(),
        }
    }

    proptest! {
        /// Random pipelines of path-keeping operations on random DAGs:
        /// when a pipeline runs (it may fail, e.g. `over` a missing key),
        /// every path is in exactly one layer, none is empty, and the same
        /// input gives the same plan.
        #[test]
        fn random_pipelines_keep_every_path_once(
            nodes in dag_strategy(25),
            steps in proptest::collection::vec(step_strategy(25), 0..5),
        ) {
            let ((base, _), paths) = build_excluding(&nodes, &[]);
            let pipeline = Pipeline::parse(&name_paths(&Json::Array(steps), &paths)).unwrap();
            if let Ok(plan) = plan_graph(&base, &pipeline) {
                let kept: BTreeSet<&StorePath> = paths.iter().collect();
                check_partition(&plan, &kept)?;
                prop_assert_eq!(plan_graph(&base, &pipeline).unwrap(), plan);
            }
        }

        /// The auto strategy through `plan_layers`, on a real `ClosureGraph`.
        #[test]
        fn auto_strategy_invariants(nodes in dag_strategy(30), budget in 1usize..10) {
            let (_, paths) = build_excluding(&nodes, &[]);
            let graph = ClosureGraph::new(
                nodes
                    .iter()
                    .zip(&paths)
                    .map(|((_, size, refs), path)| PathInfo {
                        path: path.clone(),
                        nar_hash: None,
                        nar_size: *size,
                        references: refs.iter().map(|&r| paths[r].clone()).collect(),
                    })
                    .collect(),
            )
            .unwrap();
            let plan = plan_layers(&graph, &[], &Pipeline::auto(budget)).unwrap();
            prop_assert!(plan.layers.len() <= budget);
            check_partition(&plan, &paths.iter().collect())?;
            prop_assert_eq!(plan_layers(&graph, &[], &Pipeline::auto(budget)).unwrap(), plan);
        }
    }

    /// Any JSON value, with operation names and small numbers likely.
    fn json_strategy() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            Just(Json::Null),
            any::<bool>().prop_map(Json::from),
            any::<i64>().prop_map(Json::from),
            any::<u64>().prop_map(Json::from),
            (-3i64..5).prop_map(Json::from),
            any::<f64>().prop_map(Json::from),
            "\\PC{0,12}".prop_map(Json::from),
            proptest::sample::select(dsl::OPERATIONS).prop_map(Json::from),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Json::Array),
                proptest::collection::btree_map("[a-z_]{0,8}", inner, 0..4)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A deterministic pseudo-random closure shaped like a real one: each
    /// path references up to 12 earlier ones, most often recent ones.
    pub(super) fn generated_closure(n: usize, seed: u64) -> Vec<Node> {
        let mut state = seed | 1;
        let mut next = move || {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        (0..n)
            .map(|i| {
                let mut refs = Vec::new();
                if i > 0 {
                    let count = next() % 13;
                    for _ in 0..count {
                        let back = (next() % (i as u64)) as usize;
                        // Half the references go to one of the 50 nearest paths.
                        let j = if next() % 2 == 0 {
                            i - 1 - back % i.min(50)
                        } else {
                            back
                        };
                        refs.push(j);
                    }
                    if next() % 8 == 0 {
                        refs.push(i);
                    }
                }
                (
                    NAMES[(next() % NAMES.len() as u64) as usize],
                    next() % 100_000,
                    refs,
                )
            })
            .collect()
    }

    #[test]
    fn a_3000_path_closure() {
        let nodes = generated_closure(3000, 42);
        let ((base, _), paths) = build_excluding(&nodes, &[]);
        for budget in [1, 99, 5000] {
            let plan = plan_graph(&base, &Pipeline::popularity(budget)).unwrap();
            let kept: BTreeSet<&StorePath> = paths.iter().collect();
            check_partition(&plan, &kept).unwrap();
            assert_eq!(plan.layers.len(), budget.min(3000));
            assert_eq!(
                plan_graph(&base, &Pipeline::popularity(budget)).unwrap(),
                plan
            );
        }
    }

    #[test]
    fn budget_zero_fails_when_run() {
        let (base, _) = build(&[("a", 1, vec![])]);
        let err = plan_graph(&base, &Pipeline::popularity(0)).unwrap_err();
        assert!(matches!(
            err,
            Error::Arguments {
                step: 2,
                op: "limit_layers",
                ..
            }
        ));
    }

    #[test]
    fn an_empty_graph_gives_no_layers() {
        let plan = plan_graph(&LayerGraph::default(), &Pipeline::popularity(10)).unwrap();
        assert!(plan.layers.is_empty());
    }

    #[test]
    fn an_empty_pipeline_gives_one_layer_in_nar_size_order() {
        // nixpkgs: `pipe([], graph)` is the graph, flattened to one layer.
        let ((base, _), paths) = build_excluding(
            &[("a", 3, vec![]), ("b", 1, vec![0]), ("c", 2, vec![])],
            &[],
        );
        let plan = plan_graph(&base, &Pipeline::parse(&json!([])).unwrap()).unwrap();
        assert_eq!(
            plan.layers,
            [vec![paths[1].clone(), paths[2].clone(), paths[0].clone()]]
        );
    }

    #[test]
    fn plan_layers_from_a_closure_graph() {
        // An empty ClosureGraph is all a test can build without a parser.
        let plan = plan_layers(&ClosureGraph::default(), &[], &Pipeline::popularity(3)).unwrap();
        assert_eq!(plan, LayerPlan::default());
    }
}
