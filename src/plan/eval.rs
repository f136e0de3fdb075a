//! Runs a parsed layering pipeline: the interpreter that hands each step's
//! [`Value`] to the operation the next [`Step`] names (reference §C.2).
//!
//! The syntax and the values live in `dsl.rs`, apart from this file, so the
//! operations can use the values without importing the interpreter that
//! calls them.

use std::collections::HashMap;

use super::dsl::{Step, Value};
use super::graph::{Direction, Graph, LayerGraph};
use super::limit::limit_layers;
use super::popularity::popularity_contest;
use super::split_paths::{split_paths, split_positions};
use super::subcomponent::subcomponent;
use super::Error;

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
    use super::*;
    use crate::plan::dsl::{parse, Key};
    use crate::plan::graph::tests::{layer_graph, UPSTREAM};

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
