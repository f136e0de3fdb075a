//! The layering DSL's syntax and values: its JSON shape (reference §C.2),
//! parsed into [`Step`]s, and the [`Value`]s steps pass to each other,
//! with nixpkgs' final flattening (§C.1 step 4).
//!
//! A pipeline is a list of steps `[operation, argument…]`; the data
//! argument is left out and comes from the previous step, starting with the
//! whole layering graph. A value is a graph, a list of values (nixpkgs'
//! lists and lazy iterators alike: every element is consumed in the end) or
//! a dict with the keys `main` / `common` / `rest` in order.
//!
//! This file knows no operation's behaviour: the operations (`limit.rs`,
//! `split_paths.rs`, `subcomponent.rs`, `popularity.rs`) take and give the
//! values defined here, and `eval.rs` runs the steps by calling them, so
//! the imports run one way: eval → operations → dsl → graph.

use serde_json::Value as Json;

use super::graph::Graph;
use super::Error;

/// Every operation of the DSL (nixpkgs' `pipe.py` table plus `reorder`):
/// the list the parser names in its errors, and the manifest's schema
/// offers (as [`crate::plan::PIPELINE_OPERATIONS`]).
pub const OPERATIONS: &[&str] = &[
    "subcomponent_in",
    "subcomponent_out",
    "split_paths",
    "popularity_contest",
    "limit_layers",
    "split_every",
    "flatten",
    "over",
    "map",
    "reverse",
    "remove_paths",
    "pipe",
    "reorder",
];

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

#[cfg(test)]
pub(in crate::plan) mod tests {
    use serde_json::json;

    use super::*;
    use crate::plan::graph::LayerGraph;

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

    /// A pipeline value that is a dict of graphs, as its keys and each
    /// graph's vertex names.
    pub(in crate::plan) fn dict_names<'a>(
        base: &'a LayerGraph,
        value: &Value,
    ) -> Vec<(Key, Vec<&'a str>)> {
        let Value::Dict(entries) = value else {
            panic!("not a dict: {value:?}")
        };
        entries
            .iter()
            .map(|(k, v)| {
                let Value::Graph(g) = v else { panic!() };
                let names = g
                    .vertices()
                    .iter()
                    .map(|&id| base.path(id).name())
                    .collect();
                (*k, names)
            })
            .collect()
    }
}
