//! The layering DSL: its JSON shape (reference §C.2), the values steps pass
//! to each other, and nixpkgs' final flattening (§C.1 step 4).
//!
//! A pipeline is a list of steps `[operation, argument…]`; the data
//! argument is left out and comes from the previous step, starting with the
//! whole layering graph. A value is a graph, a list of values (nixpkgs'
//! lists and lazy iterators alike: every element is consumed in the end) or
//! a dict with the keys `main` / `common` / `rest` in order.

use serde_json::Value as Json;

use std::collections::HashMap;

use super::graph::{Direction, Graph, LayerGraph};
use super::limit::limit_layers;
use super::popularity::popularity_contest;
use super::split_paths::{split_paths, split_positions};
use super::subcomponent::subcomponent;
use super::Error;

/// Every operation of the DSL (nixpkgs' `pipe.py` table plus `reorder`),
/// listed once where the manifest's schema needs it too.
pub(super) const OPERATIONS: &[&str] = &crate::manifest::PIPELINE_OPERATIONS;

/// What `limit_layers` takes, for error messages.
pub(super) const LIMIT_LAYERS_TAKES: &str = "one whole number ≥ 1 (the most layers to make)";

/// How deeply `over`, `map` and `pipe` may nest: far beyond any real
/// pipeline, and low enough that recursion cannot exhaust the stack.
const MAX_DEPTH: usize = 64;

/// One parsed step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// `["subcomponent_in", [paths…]]`.
    SubcomponentIn(Vec<String>),
    /// `["subcomponent_out", [paths…]]`.
    SubcomponentOut(Vec<String>),
    /// `["split_paths", [path or {children_of = …}, …]]`.
    SplitPaths(Vec<PathSpec>),
    /// `["popularity_contest"]`.
    PopularityContest,
    /// `["limit_layers", n]`; `n` is ≥ 1 once parsed, but
    /// [`Pipeline::popularity`](super::Pipeline::popularity) can hold 0, which
    /// fails when run.
    LimitLayers(usize),
    /// `["split_every", k]`, `k` ≥ 1.
    SplitEvery(usize),
    /// `["flatten"]`.
    Flatten,
    /// `["over", key, step]`.
    Over(Key, Box<Step>),
    /// `["map", step]`.
    Map(Box<Step>),
    /// `["reverse"]`.
    Reverse,
    /// `["remove_paths", path or [paths…]]`.
    RemovePaths(Vec<String>),
    /// `["pipe", [steps…]]`.
    Pipe(Vec<Step>),
    /// `["reorder", [keys…]]`.
    Reorder(Vec<Key>),
}

/// One entry of `split_paths`' list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PathSpec {
    /// A store path.
    Path(String),
    /// `{ children_of = path or [paths…] }`: their direct references.
    ChildrenOf(Vec<String>),
}

/// What each operation takes, for error messages.
fn takes(op: &str) -> &'static str {
    match op {
        "subcomponent_in" | "subcomponent_out" => "one list of store paths",
        "split_paths" => {
            "one list whose items are store paths or `{ children_of = PATH }` / \
             `{ children_of = [PATHS] }` tables"
        }
        "limit_layers" => LIMIT_LAYERS_TAKES,
        "split_every" => "one whole number ≥ 1 (the paths per layer)",
        "over" => {
            "a key (`main`, `common` or `rest`) and one step, \
             e.g. `[\"over\", \"rest\", [\"popularity_contest\"]]`"
        }
        "map" => "one step, e.g. `[\"map\", [\"remove_paths\", PATH]]`",
        "remove_paths" => "a store path or a list of store paths",
        "pipe" => "one list of steps, e.g. `[\"pipe\", [[\"popularity_contest\"]]]`",
        "reorder" => "one list of keys (`main`, `common`, `rest`)",
        _ => "no arguments",
    }
}

/// Parses a whole pipeline.
pub(super) fn parse(value: &Json) -> Result<Vec<Step>, Error> {
    let Json::Array(steps) = value else {
        return Err(Error::Pipeline(format!(
            "it must be a list of steps such as \
             `[[\"popularity_contest\"], [\"limit_layers\", 99]]`, not {}",
            kind(value)
        )));
    };
    steps
        .iter()
        .enumerate()
        .map(|(i, step)| parse_step(i + 1, step, 0))
        .collect()
}

/// Parses a step of top-level step number `step` (1-based), `depth` levels
/// inside `over` / `map` / `pipe`.
fn parse_step(step: usize, value: &Json, depth: usize) -> Result<Step, Error> {
    if depth > MAX_DEPTH {
        return Err(Error::Pipeline(format!(
            "step {step} nests `over`, `map` or `pipe` more than {MAX_DEPTH} levels deep"
        )));
    }
    let Json::Array(items) = value else {
        return Err(Error::Pipeline(format!(
            "step {step} must be a list `[operation, argument…]`, not {}",
            kind(value)
        )));
    };
    let Some((op, args)) = items.split_first() else {
        return Err(Error::Pipeline(format!(
            "step {step} is empty; it must start with an operation"
        )));
    };
    let Json::String(op) = op else {
        return Err(Error::Pipeline(format!(
            "step {step} must start with an operation name, not {}",
            kind(op)
        )));
    };
    let Some(&op) = OPERATIONS.iter().find(|&&known| known == op) else {
        return Err(Error::UnknownOperation {
            step,
            op: op.clone(),
        });
    };
    let wrong = || arguments(step, op, args);
    // A nested step (of `over`, `map`, `pipe`): its own errors when it is a
    // step at all, else the outer operation's.
    let nested = |value: &Json| match value {
        Json::Array(items) if matches!(items.first(), Some(Json::String(_))) => {
            parse_step(step, value, depth + 1)
        }
        _ => Err(wrong()),
    };
    Ok(match (op, args) {
        ("popularity_contest", []) => Step::PopularityContest,
        ("flatten", []) => Step::Flatten,
        ("reverse", []) => Step::Reverse,
        // nixpkgs asserts `max_count > 0`; `range(0, n, 0)` fails for 0.
        ("limit_layers", [n]) => Step::LimitLayers(positive(n).ok_or_else(wrong)?),
        ("split_every", [n]) => Step::SplitEvery(positive(n).ok_or_else(wrong)?),
        ("subcomponent_in", [Json::Array(paths)]) => {
            Step::SubcomponentIn(strings(paths).ok_or_else(wrong)?)
        }
        ("subcomponent_out", [Json::Array(paths)]) => {
            Step::SubcomponentOut(strings(paths).ok_or_else(wrong)?)
        }
        ("split_paths", [Json::Array(specs)]) => Step::SplitPaths(
            specs
                .iter()
                .map(path_spec)
                .collect::<Option<_>>()
                .ok_or_else(wrong)?,
        ),
        // nixpkgs accepts a single path as well as a list.
        ("remove_paths", [Json::String(path)]) => Step::RemovePaths(vec![path.clone()]),
        ("remove_paths", [Json::Array(paths)]) => {
            Step::RemovePaths(strings(paths).ok_or_else(wrong)?)
        }
        // Only the three keys a dict can have: nixpkgs would fail later,
        // with a bare KeyError, on any other.
        ("over", [Json::String(key), inner]) => {
            Step::Over(Key::parse(key).ok_or_else(wrong)?, Box::new(nested(inner)?))
        }
        ("map", [inner]) => Step::Map(Box::new(nested(inner)?)),
        ("pipe", [Json::Array(steps)]) => Step::Pipe(
            steps
                .iter()
                .map(|s| parse_step(step, s, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        ("reorder", [Json::Array(keys)]) => Step::Reorder(
            keys.iter()
                .map(|k| k.as_str().and_then(Key::parse))
                .collect::<Option<_>>()
                .ok_or_else(wrong)?,
        ),
        _ => return Err(wrong()),
    })
}

/// A whole number ≥ 1.
fn positive(value: &Json) -> Option<usize> {
    value
        .as_u64()
        .filter(|&n| n > 0)
        .and_then(|n| usize::try_from(n).ok())
}

/// Every item a string.
fn strings(items: &[Json]) -> Option<Vec<String>> {
    items
        .iter()
        .map(|i| i.as_str().map(str::to_owned))
        .collect()
}

/// A `split_paths` item: a path, or a table whose only key is `children_of`.
fn path_spec(value: &Json) -> Option<PathSpec> {
    match value {
        Json::String(path) => Some(PathSpec::Path(path.clone())),
        Json::Object(table) if table.len() == 1 => match table.get("children_of")? {
            Json::String(path) => Some(PathSpec::ChildrenOf(vec![path.clone()])),
            Json::Array(paths) => strings(paths).map(PathSpec::ChildrenOf),
            _ => None,
        },
        _ => None,
    }
}

fn arguments(step: usize, op: &'static str, args: &[Json]) -> Error {
    let found = if args.is_empty() {
        "no arguments".to_owned()
    } else {
        args.iter()
            .map(|a| format!("`{}`", show(a)))
            .collect::<Vec<_>>()
            .join(", ")
    };
    Error::Arguments {
        step,
        op,
        takes: takes(op),
        found,
    }
}

/// A JSON value for a message, cut short when long.
fn show(value: &Json) -> String {
    const MAX: usize = 60;
    let text = value.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

fn kind(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "an object",
    }
}

/// What a step gives the next one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Value {
    /// A graph of store paths.
    Graph(Graph),
    /// A list of values, in order.
    List(Vec<Value>),
    /// `split_paths` / `subcomponent_*` results: keys in order.
    Dict(Vec<(Key, Value)>),
}

/// A dict key of a pipeline value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Key {
    /// The split-off paths.
    Main,
    /// What the split-off paths share with the rest.
    Common,
    /// Everything else.
    Rest,
}

impl Key {
    /// The key spelt `name`.
    fn parse(name: &str) -> Option<Self> {
        match name {
            "main" => Some(Self::Main),
            "common" => Some(Self::Common),
            "rest" => Some(Self::Rest),
            _ => None,
        }
    }

    /// The DSL spelling.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Common => "common",
            Self::Rest => "rest",
        }
    }
}

impl Value {
    /// What the value is, for error messages.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Self::Graph(_) => "a graph",
            Self::List(_) => "a list",
            Self::Dict(_) => "a dict",
        }
    }

    /// nixpkgs' `flatten`: the graphs of the value in order, dict values in
    /// key order, lists element by element.
    pub(super) fn leaves(self, out: &mut Vec<Graph>) {
        match self {
            Self::Graph(g) => out.push(g),
            Self::List(items) => items.into_iter().for_each(|v| v.leaves(out)),
            Self::Dict(entries) => entries.into_iter().for_each(|(_, v)| v.leaves(out)),
        }
    }

    /// nixpkgs' final step: each graph → its vertices in index order,
    /// empty layers dropped.
    pub(super) fn into_layers(self) -> Vec<Vec<usize>> {
        let mut graphs = Vec::new();
        self.leaves(&mut graphs);
        graphs
            .into_iter()
            .filter(|g| g.len() > 0)
            .map(|g| g.vertices().to_vec())
            .collect()
    }
}

/// What every step can look up: the whole graph and its paths by name.
pub(super) struct Context<'a> {
    base: &'a LayerGraph,
    ids: HashMap<&'a str, usize>,
}

impl<'a> Context<'a> {
    pub(super) fn new(base: &'a LayerGraph) -> Self {
        Self {
            base,
            ids: (0..base.len())
                .map(|id| (base.path(id).as_str(), id))
                .collect(),
        }
    }

    /// The [`LayerGraph`] id of the path named `name`, if any.
    fn id_of(&self, name: &str) -> Option<usize> {
        self.ids.get(name).copied()
    }
}

/// Runs `steps` on the whole of `base`.
pub(super) fn run(steps: &[Step], base: &LayerGraph) -> Result<Value, Error> {
    let cx = Context::new(base);
    let mut value = Value::Graph(Graph::whole(base));
    for (i, step) in steps.iter().enumerate() {
        value = apply(i + 1, step, value, &cx)?;
    }
    Ok(value)
}

/// The error for `op` given a value it cannot work on.
fn input(index: usize, op: &'static str, needs: &'static str, found: &Value) -> Error {
    Error::Input {
        step: index,
        op,
        needs,
        found: found.kind(),
    }
}

/// Runs `step`, part of top-level step number `index`, on `value`.
fn apply(index: usize, step: &Step, value: Value, cx: &Context<'_>) -> Result<Value, Error> {
    let graph = |op: &'static str, value: Value| match value {
        Value::Graph(g) => Ok(g),
        other => Err(input(index, op, "a graph", &other)),
    };
    let named =
        |g: &Graph, paths: &[String]| g.positions_of(paths.iter().filter_map(|p| cx.id_of(p)));
    match step {
        Step::PopularityContest => {
            let g = graph("popularity_contest", value)?;
            Ok(Value::List(
                popularity_contest(&g, cx.base)?
                    .into_iter()
                    .map(Value::Graph)
                    .collect(),
            ))
        }
        &Step::LimitLayers(n) => match value {
            Value::List(items) => limit_layers(index, n, items).map(Value::List),
            other => Err(input(index, "limit_layers", "a list of graphs", &other)),
        },
        Step::SubcomponentIn(paths) => {
            let g = graph("subcomponent_in", value)?;
            Ok(subcomponent(&g, &named(&g, paths), Direction::In))
        }
        Step::SubcomponentOut(paths) => {
            let g = graph("subcomponent_out", value)?;
            Ok(subcomponent(&g, &named(&g, paths), Direction::Out))
        }
        Step::SplitPaths(specs) => {
            let g = graph("split_paths", value)?;
            let split = split_positions(&g, specs, &|p| cx.id_of(p));
            Ok(split_paths(&g, &split))
        }
        &Step::SplitEvery(k) => {
            // nixpkgs: `[induced_subgraph(vs[x:x + k]) for x in range(0, n, k)]`.
            let g = graph("split_every", value)?;
            Ok(Value::List(
                (0..g.len())
                    .step_by(k.max(1))
                    .map(|start| Value::Graph(g.induced_range(start, start.saturating_add(k))))
                    .collect(),
            ))
        }
        Step::RemovePaths(paths) => {
            let g = graph("remove_paths", value)?;
            let mut remove = vec![false; g.len()];
            for p in named(&g, paths) {
                remove[p] = true;
            }
            if remove.contains(&true) {
                let keep: Vec<bool> = remove.iter().map(|&r| !r).collect();
                Ok(Value::Graph(g.induced(&keep)))
            } else {
                Ok(Value::Graph(g))
            }
        }
        Step::Flatten => {
            // A graph flattens to itself, as the final flattening treats it.
            let mut graphs = Vec::new();
            value.leaves(&mut graphs);
            Ok(Value::List(graphs.into_iter().map(Value::Graph).collect()))
        }
        Step::Reverse => match value {
            Value::List(mut items) => {
                items.reverse();
                Ok(Value::List(items))
            }
            other => Err(input(index, "reverse", "a list", &other)),
        },
        Step::Map(inner) => match value {
            Value::List(items) => items
                .into_iter()
                .map(|item| apply(index, inner, item, cx))
                .collect::<Result<_, _>>()
                .map(Value::List),
            other => Err(input(index, "map", "a list", &other)),
        },
        Step::Over(key, inner) => match value {
            Value::Dict(mut entries) => {
                let Some(at) = entries.iter().position(|(k, _)| k == key) else {
                    return Err(Error::MissingKey {
                        step: index,
                        key: key.name(),
                        present: entries.iter().map(|(k, _)| k.name()).collect(),
                    });
                };
                let (k, v) = entries.remove(at);
                entries.insert(at, (k, apply(index, inner, v, cx)?));
                Ok(Value::Dict(entries))
            }
            other => Err(input(
                index,
                "over",
                "a dict (from split_paths or subcomponent_*)",
                &other,
            )),
        },
        Step::Pipe(steps) => steps
            .iter()
            .try_fold(value, |value, s| apply(index, s, value, cx)),
        Step::Reorder(keys) => match value {
            // The named keys in the given order (missing ones skipped),
            // then the others in their order; anything else unchanged.
            Value::Dict(mut entries) => {
                let mut ordered = Vec::with_capacity(entries.len());
                for key in keys {
                    if let Some(at) = entries.iter().position(|(k, _)| k == key) {
                        ordered.push(entries.remove(at));
                    }
                }
                ordered.extend(entries);
                Ok(Value::Dict(ordered))
            }
            other => Ok(other),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::graph::tests::{layer_graph, UPSTREAM};

    #[test]
    fn parses_the_default() {
        let steps = parse(&json!([["popularity_contest"], ["limit_layers", 99]])).unwrap();
        assert_eq!(steps, [Step::PopularityContest, Step::LimitLayers(99)]);
        assert_eq!(parse(&json!([])).unwrap(), []);
    }

    #[test]
    fn parses_every_operation() {
        let steps = parse(&json!([
            ["subcomponent_in", ["/nix/store/a-x"]],
            ["subcomponent_out", []],
            ["split_paths", ["/nix/store/a-x", {"children_of": "/nix/store/b-y"}, {"children_of": ["/nix/store/c-z"]}]],
            ["over", "main", ["pipe", [["popularity_contest"], ["reverse"]]]],
            ["reorder", ["rest", "main"]],
            ["flatten"],
            ["map", ["remove_paths", "/nix/store/a-x"]],
            ["map", ["remove_paths", ["/nix/store/a-x", "/nix/store/b-y"]]],
            ["map", ["split_every", 3]],
            ["flatten"],
            ["limit_layers", 5]
        ]))
        .unwrap();
        assert_eq!(steps.len(), 11);
        assert_eq!(
            steps[2],
            Step::SplitPaths(vec![
                PathSpec::Path("/nix/store/a-x".into()),
                PathSpec::ChildrenOf(vec!["/nix/store/b-y".into()]),
                PathSpec::ChildrenOf(vec!["/nix/store/c-z".into()]),
            ])
        );
        assert_eq!(
            steps[3],
            Step::Over(
                Key::Main,
                Box::new(Step::Pipe(vec![Step::PopularityContest, Step::Reverse]))
            )
        );
        assert_eq!(steps[4], Step::Reorder(vec![Key::Rest, Key::Main]));
        assert_eq!(
            steps[6],
            Step::Map(Box::new(Step::RemovePaths(vec!["/nix/store/a-x".into()])))
        );
    }

    #[test]
    fn nested_steps_report_their_own_errors() {
        // A well-formed inner step with bad arguments: its own operation.
        let err = parse(&json!([
            ["popularity_contest"],
            ["map", ["split_every", 0]]
        ]))
        .unwrap_err();
        assert!(
            matches!(
                err,
                Error::Arguments {
                    step: 2,
                    op: "split_every",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse(&json!([["pipe", [["limit_layers", 0]]]])).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Arguments {
                    step: 1,
                    op: "limit_layers",
                    ..
                }
            ),
            "{err}"
        );
        // Not a step at all (a list of steps where one step goes): the outer one.
        let err = parse(&json!([["over", "rest", [["popularity_contest"]]]])).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Arguments {
                    step: 1,
                    op: "over",
                    ..
                }
            ),
            "{err}"
        );
        let err = parse(&json!([["map", [["nope"]]]])).unwrap_err();
        assert!(matches!(err, Error::Arguments { op: "map", .. }), "{err}");
        let err = parse(&json!([["map", ["nope"]]])).unwrap_err();
        assert!(
            matches!(&err, Error::UnknownOperation { op, .. } if op == "nope"),
            "{err}"
        );
    }

    #[test]
    fn wrong_arguments_of_every_operation() {
        for bad in [
            json!(["subcomponent_in", "/nix/store/a-x"]),
            json!(["subcomponent_out", [1]]),
            json!(["subcomponent_out"]),
            json!(["split_paths", "/nix/store/a-x"]),
            json!(["split_paths", [{"children": "/nix/store/a-x"}]]),
            json!(["split_paths", [{"children_of": 3}]]),
            json!(["split_paths", [{"children_of": "/x", "other": 1}]]),
            json!(["split_every"]),
            json!(["split_every", 0]),
            json!(["split_every", "2"]),
            json!(["flatten", 1]),
            json!(["reverse", []]),
            json!(["over", "main"]),
            json!(["over", "mian", ["flatten"]]),
            json!(["over", 1, ["flatten"]]),
            json!(["over", "main", "flatten"]),
            json!(["map"]),
            json!(["map", ["flatten"], ["flatten"]]),
            json!(["remove_paths", 1]),
            json!(["remove_paths", ["/x", 2]]),
            json!(["pipe", ["flatten"]]),
            json!(["pipe"]),
            json!(["reorder", "main"]),
            json!(["reorder", ["main", "other"]]),
        ] {
            let op = bad[0].as_str().unwrap();
            let err = parse(&json!([bad])).unwrap_err();
            match &err {
                Error::Arguments {
                    step: 1,
                    op: o,
                    takes: t,
                    ..
                } => {
                    assert_eq!(*o, op, "{bad}");
                    assert_eq!(*t, takes(op));
                }
                // `["pipe", ["flatten"]]`: the string is not a step.
                Error::Pipeline(_) => assert_eq!(op, "pipe", "{bad}: {err}"),
                _ => panic!("{bad}: {err}"),
            }
            assert!(err.to_string().contains(op), "{err}");
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut step = json!(["flatten"]);
        for _ in 0..200 {
            step = json!(["map", step]);
        }
        assert!(matches!(parse(&json!([step])), Err(Error::Pipeline(_))));
    }

    #[test]
    fn unknown_operations_list_the_valid_ones() {
        let err = parse(&json!([["popularity"]])).unwrap_err();
        assert!(matches!(&err, Error::UnknownOperation { step: 1, op } if op == "popularity"));
        let text = err.to_string();
        for op in OPERATIONS {
            assert!(text.contains(op), "{text}");
        }
    }

    #[test]
    fn wrong_arguments_name_the_operation() {
        for bad in [
            json!([["limit_layers"]]),
            json!([["limit_layers", 0]]),
            json!([["limit_layers", -1]]),
            json!([["limit_layers", 2.5]]),
            json!([["limit_layers", "3"]]),
            json!([["limit_layers", 3, 4]]),
        ] {
            let err = parse(&bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    Error::Arguments {
                        step: 1,
                        op: "limit_layers",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        let err = parse(&json!([["popularity_contest", 1]])).unwrap_err();
        assert!(matches!(
            err,
            Error::Arguments {
                op: "popularity_contest",
                ..
            }
        ));
        assert_eq!(
            parse(&json!([["limit_layers", 0]]))
                .unwrap_err()
                .to_string(),
            "layering pipeline step 1: `limit_layers` takes one whole number ≥ 1 \
             (the most layers to make), got `0`"
        );
    }

    #[test]
    fn malformed_shapes() {
        for bad in [
            json!({"popularity_contest": []}),
            json!("popularity_contest"),
            json!(["popularity_contest"]),
            json!([[]]),
            json!([[1, 2]]),
            json!(null),
        ] {
            assert!(matches!(parse(&bad), Err(Error::Pipeline(_))), "{bad}");
        }
    }

    #[test]
    fn long_arguments_are_cut_short() {
        let err = parse(&json!([["limit_layers", "x".repeat(500)]])).unwrap_err();
        assert!(err.to_string().len() < 200, "{err}");
    }

    #[test]
    fn flatten_walks_dicts_and_lists_in_order_and_drops_empty_graphs() {
        let g = |ids: &[usize]| {
            let mut graph = Graph::default();
            for &id in ids {
                graph.append(Graph::single(id));
            }
            Value::Graph(graph)
        };
        let value = Value::List(vec![
            Value::Dict(vec![
                (Key::Main, g(&[3, 1])),
                (Key::Common, g(&[])),
                (Key::Rest, Value::List(vec![g(&[2]), g(&[0, 4])])),
            ]),
            g(&[]),
            g(&[5]),
        ]);
        assert_eq!(
            value.into_layers(),
            [vec![3, 1], vec![2], vec![0, 4], vec![5]]
        );
    }

    #[test]
    fn steps_check_their_input() {
        let base = LayerGraph::default();
        let cx = Context::new(&base);
        let err = apply(1, &Step::PopularityContest, Value::List(Vec::new()), &cx).unwrap_err();
        assert!(matches!(
            err,
            Error::Input {
                found: "a list",
                ..
            }
        ));
        let err = apply(
            2,
            &Step::LimitLayers(3),
            Value::Graph(Graph::default()),
            &cx,
        )
        .unwrap_err();
        assert!(matches!(
            err,
            Error::Input {
                step: 2,
                found: "a graph",
                ..
            }
        ));
        let dict = || Value::Dict(vec![(Key::Main, Value::Graph(Graph::default()))]);
        for (step, value) in [
            (Step::SplitEvery(2), dict()),
            (Step::RemovePaths(vec![]), Value::List(vec![])),
            (Step::SubcomponentIn(vec![]), dict()),
            (Step::SplitPaths(vec![]), Value::List(vec![])),
            (Step::Reverse, dict()),
            (Step::Reverse, Value::Graph(Graph::default())),
            (Step::Map(Box::new(Step::Flatten)), dict()),
            (
                Step::Over(Key::Main, Box::new(Step::Flatten)),
                Value::List(vec![]),
            ),
        ] {
            let err = apply(4, &step, value, &cx).unwrap_err();
            assert!(
                matches!(err, Error::Input { step: 4, .. }),
                "{step:?}: {err}"
            );
        }
    }

    /// Runs `pipeline` (with `$NAME` standing for the store path of node
    /// NAME) on the upstream graph; layers as names.
    fn run_upstream(pipeline: &str) -> Result<Vec<Vec<String>>, Error> {
        let (base, paths) = layer_graph(UPSTREAM, &[]);
        let mut text = pipeline.to_owned();
        // Longest names first, so `$Root1` is not read as `$R…`.
        let mut named: Vec<(usize, &str)> = UPSTREAM.iter().map(|n| n.0).enumerate().collect();
        named.sort_by_key(|(_, n)| std::cmp::Reverse(n.len()));
        for (i, name) in named {
            text = text.replace(&format!("${name}"), paths[i].as_str());
        }
        let steps = parse(&serde_json::from_str(&text).unwrap())?;
        let layers = run(&steps, &base)?.into_layers();
        Ok(layers
            .into_iter()
            .map(|l| {
                l.into_iter()
                    .map(|id| base.path(id).name().to_owned())
                    .collect()
            })
            .collect())
    }

    fn layers(names: &[&[&str]]) -> Vec<Vec<String>> {
        names
            .iter()
            .map(|l| l.iter().map(|&n| n.to_owned()).collect())
            .collect()
    }

    #[test]
    fn upstream_worked_example() {
        // F scores 2; D, E, G 1 each, by name. G is merged with the rest
        // graph (Root3 removed), G first, then the rest in index order.
        let got = run_upstream(
            r#"[["split_paths", ["$B"]],
                ["over", "main", ["pipe", [["subcomponent_in", ["$B"]], ["over", "rest", ["popularity_contest"]]]]],
                ["flatten"],
                ["map", ["remove_paths", "$Root3"]],
                ["limit_layers", 5]]"#,
        )
        .unwrap();
        assert_eq!(
            got,
            layers(&[
                &["B"],
                &["F"],
                &["D"],
                &["E"],
                &["G", "Root1", "A", "C", "Root2"]
            ])
        );
    }

    #[test]
    fn over_a_missing_key_names_the_key_and_the_keys_present() {
        // Splitting B shares nothing: no `common`.
        let err = run_upstream(r#"[["split_paths", ["$B"]], ["over", "common", ["flatten"]]]"#)
            .unwrap_err();
        assert!(
            matches!(&err, Error::MissingKey { step: 2, key: "common", present } if present == &["main", "rest"]),
            "{err}"
        );
        assert_eq!(
            err.to_string(),
            "layering pipeline step 2: `over` found no `common` in the dict; it has `main`, `rest`"
        );
    }

    #[test]
    fn reorder_flatten_and_reverse() {
        // subcomponent_out B: main = B's closure, rest = the others.
        let main_first = run_upstream(r#"[["subcomponent_out", ["$B"]], ["flatten"]]"#).unwrap();
        assert_eq!(
            main_first,
            layers(&[
                &["B", "D", "E", "F", "G"],
                &["Root1", "A", "C", "Root2", "Root3"]
            ])
        );
        let rest_first = run_upstream(
            r#"[["subcomponent_out", ["$B"]], ["reorder", ["rest", "common", "rest"]]]"#,
        )
        .unwrap();
        assert_eq!(rest_first, [main_first[1].clone(), main_first[0].clone()]);
        // The same with nixpkgs' workaround: flatten, reverse.
        let reversed =
            run_upstream(r#"[["subcomponent_out", ["$B"]], ["flatten"], ["reverse"]]"#).unwrap();
        assert_eq!(reversed, rest_first);
        // Keys not named keep their order after the named ones.
        let got = run_upstream(r#"[["split_paths", ["$A"]], ["reorder", ["rest"]]]"#).unwrap();
        assert_eq!(
            got,
            layers(&[
                &["Root1", "Root2", "Root3"],
                &["A"],
                &["B", "C", "D", "E", "F", "G"]
            ])
        );
        // Non-dicts pass through.
        let got = run_upstream(r#"[["split_every", 4], ["reorder", ["rest"]]]"#).unwrap();
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn split_every_cuts_the_index_order() {
        let got = run_upstream(r#"[["split_every", 4]]"#).unwrap();
        assert_eq!(
            got,
            layers(&[
                &["Root1", "A", "B", "C"],
                &["D", "E", "F", "G"],
                &["Root2", "Root3"]
            ])
        );
        let got = run_upstream(r#"[["split_every", 100]]"#).unwrap();
        assert_eq!(got.len(), 1);
    }

    #[test]
    fn remove_paths_takes_a_path_or_a_list_and_ignores_unknown_ones() {
        let got = run_upstream(
            r#"[["remove_paths", ["$A", "/nix/store/00000000000000000000000000000000-no"]]]"#,
        )
        .unwrap();
        assert_eq!(
            got,
            layers(&[&["Root1", "B", "C", "D", "E", "F", "G", "Root2", "Root3"]])
        );
        assert_eq!(run_upstream(r#"[["remove_paths", "$A"]]"#).unwrap(), got);
    }

    #[test]
    fn map_applies_to_every_element_and_pipe_nests() {
        let got = run_upstream(
            r#"[["split_every", 5], ["map", ["pipe", [["popularity_contest"], ["limit_layers", 2]]]]]"#,
        )
        .unwrap();
        // Two chunks of five, each ranked and cut to two layers.
        assert_eq!(got.len(), 4);
        assert_eq!(got.iter().map(Vec::len).sum::<usize>(), 10);
    }

    #[test]
    fn subcomponent_in_takes_the_dependents() {
        let got = run_upstream(r#"[["subcomponent_in", ["$C"]]]"#).unwrap();
        assert_eq!(
            got,
            layers(&[
                &["Root1", "A", "C", "Root3"],
                &["B", "D", "E", "F", "G", "Root2"]
            ])
        );
    }
}
