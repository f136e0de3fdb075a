//! `limit_layers n`: a list of graphs → at most `n` graphs (reference §C.3).
//!
//! nixpkgs passes the first `n − 1` values through and then yields *one*
//! graph: the disjoint union of all remaining graphs, in order, starting
//! from an empty graph. With nothing remaining that graph is empty, and the
//! final flattening drops it.

use super::dsl::{Value, LIMIT_LAYERS_TAKES};
use super::graph::Graph;
use super::Error;

/// `limit_layers n` on `items`, as step number `step`.
///
/// # Errors
/// When `n` is 0 (nixpkgs asserts `n > 0`), or a value to merge is not a
/// graph (nixpkgs cannot add it to a graph).
pub(super) fn limit_layers(step: usize, n: usize, items: Vec<Value>) -> Result<Vec<Value>, Error> {
    let Some(keep) = n.checked_sub(1) else {
        return Err(Error::Arguments {
            step,
            op: "limit_layers",
            takes: LIMIT_LAYERS_TAKES,
            found: "`0`".to_owned(),
        });
    };
    let mut items = items.into_iter();
    // The first n − 1 values pass through whatever they are: nixpkgs
    // `take`s them without looking.
    let mut out: Vec<Value> = items.by_ref().take(keep).collect();
    let mut merged = Graph::default();
    for item in items {
        match item {
            Value::Graph(graph) => merged.append(graph),
            other => {
                return Err(Error::Input {
                    step,
                    op: "limit_layers",
                    needs: "graphs to merge",
                    found: other.kind(),
                })
            }
        }
    }
    out.push(Value::Graph(merged));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn singles(ids: &[usize]) -> Vec<Value> {
        ids.iter()
            .map(|&id| Value::Graph(Graph::single(id)))
            .collect()
    }

    fn layers(values: Vec<Value>) -> Vec<Vec<usize>> {
        Value::List(values).into_layers()
    }

    #[test]
    fn keeps_n_minus_one_and_merges_the_rest_in_order() {
        let out = limit_layers(1, 3, singles(&[5, 1, 4, 2, 3])).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(layers(out), [vec![5], vec![1], vec![4, 2, 3]]);
    }

    #[test]
    fn one_layer_merges_everything() {
        let out = limit_layers(1, 1, singles(&[2, 0, 1])).unwrap();
        assert_eq!(layers(out), [vec![2, 0, 1]]);
    }

    #[test]
    fn too_few_graphs_leave_an_empty_merge_that_flattening_drops() {
        let out = limit_layers(1, 10, singles(&[2, 0])).unwrap();
        assert_eq!(out.len(), 3);
        assert_eq!(layers(out), [vec![2], vec![0]]);
        assert_eq!(
            layers(limit_layers(1, 4, Vec::new()).unwrap()),
            Vec::<Vec<usize>>::new()
        );
    }

    #[test]
    fn zero_is_an_error() {
        let err = limit_layers(7, 0, singles(&[1])).unwrap_err();
        assert!(matches!(
            err,
            Error::Arguments {
                step: 7,
                op: "limit_layers",
                ..
            }
        ));
    }

    #[test]
    fn only_graphs_can_be_merged() {
        let nested = vec![Value::List(singles(&[1])), Value::List(singles(&[2]))];
        // The first passes through untouched…
        assert!(limit_layers(1, 2, nested[..1].to_vec()).is_ok());
        // …but a list among the merged ones is an error.
        let err = limit_layers(1, 2, nested).unwrap_err();
        assert!(matches!(
            err,
            Error::Input {
                found: "a list",
                ..
            }
        ));
    }
}
