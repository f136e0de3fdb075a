//! The layering DSL: its JSON shape (reference §C.2), the values steps pass
//! to each other, and nixpkgs' final flattening (§C.1 step 4).
//!
//! A pipeline is a list of steps `[operation, argument…]`; the data
//! argument is left out and comes from the previous step, starting with the
//! whole layering graph. A value is a graph, a list of values (nixpkgs'
//! lists and lazy iterators alike: every element is consumed in the end) or
//! a dict with the keys `main` / `common` / `rest` in order.

use serde_json::Value as Json;

use super::graph::{Graph, LayerGraph};
use super::limit::limit_layers;
use super::popularity::popularity_contest;
use super::Error;

/// Every operation of the DSL (nixpkgs' `pipe.py` table plus `reorder`).
pub(super) const OPERATIONS: &[&str] = &[
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

/// One parsed step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// `["popularity_contest"]`.
    PopularityContest,
    /// `["limit_layers", n]`; `n` is ≥ 1 once parsed, but
    /// [`Pipeline::popularity`](super::Pipeline::popularity) can hold 0, which
    /// fails when run.
    LimitLayers(usize),
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
        .map(|(i, step)| parse_step(i + 1, step))
        .collect()
}

/// Parses step number `step` (1-based).
fn parse_step(step: usize, value: &Json) -> Result<Step, Error> {
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
    match op.as_str() {
        "popularity_contest" => match args {
            [] => Ok(Step::PopularityContest),
            _ => Err(arguments(step, "popularity_contest", "no arguments", args)),
        },
        "limit_layers" => match args {
            // nixpkgs asserts `max_count > 0`.
            [Json::Number(n)] => n
                .as_u64()
                .filter(|&n| n > 0)
                .and_then(|n| usize::try_from(n).ok())
                .map(Step::LimitLayers)
                .ok_or_else(|| arguments(step, "limit_layers", LIMIT_LAYERS_TAKES, args)),
            _ => Err(arguments(step, "limit_layers", LIMIT_LAYERS_TAKES, args)),
        },
        other => Err(match OPERATIONS.iter().find(|&&known| known == other) {
            Some(known) => Error::Unsupported { step, op: known },
            None => Error::UnknownOperation {
                step,
                op: other.to_owned(),
            },
        }),
    }
}

fn arguments(step: usize, op: &'static str, takes: &'static str, args: &[Json]) -> Error {
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
        takes,
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
    #[allow(
        dead_code,
        reason = "made by split_paths and subcomponent_*, which are not supported yet"
    )]
    Dict(Vec<(Key, Value)>),
}

/// A dict key of a pipeline value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(
    dead_code,
    reason = "made by split_paths and subcomponent_*, which are not supported yet"
)]
pub(super) enum Key {
    /// The split-off paths.
    Main,
    /// What the split-off paths share with the rest.
    Common,
    /// Everything else.
    Rest,
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

/// Runs `steps` on the whole of `base`.
pub(super) fn run(steps: &[Step], base: &LayerGraph) -> Result<Value, Error> {
    let mut value = Value::Graph(Graph::whole(base));
    for (i, step) in steps.iter().enumerate() {
        value = apply(i + 1, step, value, base)?;
    }
    Ok(value)
}

/// Runs step number `index` on `value`.
fn apply(index: usize, step: &Step, value: Value, base: &LayerGraph) -> Result<Value, Error> {
    match (step, value) {
        (Step::PopularityContest, Value::Graph(graph)) => Ok(Value::List(
            popularity_contest(&graph, base)?
                .into_iter()
                .map(Value::Graph)
                .collect(),
        )),
        (Step::PopularityContest, other) => Err(Error::Input {
            step: index,
            op: "popularity_contest",
            needs: "a graph",
            found: other.kind(),
        }),
        (&Step::LimitLayers(n), Value::List(items)) => {
            limit_layers(index, n, items).map(Value::List)
        }
        (Step::LimitLayers(_), other) => Err(Error::Input {
            step: index,
            op: "limit_layers",
            needs: "a list of graphs",
            found: other.kind(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn parses_the_default() {
        let steps = parse(&json!([["popularity_contest"], ["limit_layers", 99]])).unwrap();
        assert_eq!(steps, [Step::PopularityContest, Step::LimitLayers(99)]);
        assert_eq!(parse(&json!([])).unwrap(), []);
    }

    #[test]
    fn other_operations_are_not_supported_yet() {
        for op in OPERATIONS {
            if ["popularity_contest", "limit_layers"].contains(op) {
                continue;
            }
            let err = parse(&json!([["popularity_contest"], [op, "x"]])).unwrap_err();
            assert!(
                matches!(err, Error::Unsupported { step: 2, op: o } if o == *op),
                "{err}"
            );
            assert!(err
                .to_string()
                .contains(&format!("`{op}` is not supported yet")));
        }
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
        let err = apply(1, &Step::PopularityContest, Value::List(Vec::new()), &base).unwrap_err();
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
            &base,
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
    }
}
