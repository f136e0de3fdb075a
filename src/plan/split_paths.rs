//! `split_paths`: a graph → `{main?, common?, rest?}` (reference §C.3,
//! nixpkgs' `split_paths.py`).
//!
//! The split paths are the named paths plus, for `{ children_of = … }`, the
//! direct references of the named paths. With `S` the split paths and their
//! dependencies, and `R` what the root still reaches once every edge into a
//! split path is cut: `common = S ∩ R`, `main = S − R`, `rest = R − S`.
//! Several roots get a fake `__root__` above them, which never appears in
//! a result; empty results are left out; keys come in the order main,
//! common, rest. The results are induced from the graph with the edges
//! cut, as nixpkgs does, so later steps see those edges gone.

use super::dsl::{Key, PathSpec, Value};
use super::graph::{Direction, Graph};

/// The positions in `graph` that `specs` name, in spec order (duplicates
/// possible); names not in the graph are ignored, as nixpkgs does.
pub(super) fn split_positions(
    graph: &Graph,
    specs: &[PathSpec],
    id_of: &dyn Fn(&str) -> Option<usize>,
) -> Vec<usize> {
    let mut positions = Vec::new();
    for spec in specs {
        match spec {
            PathSpec::Path(path) => positions.extend(graph.positions_of(id_of(path))),
            PathSpec::ChildrenOf(parents) => {
                for v in graph.positions_of(parents.iter().filter_map(|p| id_of(p))) {
                    positions.extend_from_slice(graph.successors(v));
                }
            }
        }
    }
    positions
}

/// `split_paths` of the vertices at `split` (positions in `graph`).
pub(super) fn split_paths(graph: &Graph, split: &[usize]) -> Value {
    // nixpkgs: nothing matched, nothing to do.
    if split.is_empty() {
        return Value::Dict(vec![(Key::Rest, Value::Graph(graph.clone()))]);
    }
    let roots: Vec<usize> = graph
        .in_degrees()
        .iter()
        .enumerate()
        .filter(|(_, &d)| d == 0)
        .map(|(v, _)| v)
        .collect();
    let mut is_split = vec![false; graph.len()];
    for &v in split {
        is_split[v] = true;
    }
    // With exactly one root nixpkgs uses it; otherwise (several roots, or
    // none) it adds `__root__` with an edge to each root. That fake root
    // is never a split path, and cutting the edges into split paths cuts
    // its edges too, so what it reaches is what the non-split roots reach.
    let starts: Vec<usize> = match roots.as_slice() {
        [root] if is_split[*root] => {
            // The only root is split off: the whole graph is `main`.
            return Value::Dict(vec![(Key::Main, Value::Graph(graph.clone()))]);
        }
        [root] => vec![*root],
        _ => roots.into_iter().filter(|&r| !is_split[r]).collect(),
    };

    let split_off = graph.reachable(split, Direction::Out);
    let mut cut = graph.clone();
    cut.delete_edges_into(&is_split);
    let rest_with_common = cut.reachable(&starts, Direction::Out);

    let mask = |f: &dyn Fn(bool, bool) -> bool| -> Vec<bool> {
        split_off
            .iter()
            .zip(&rest_with_common)
            .map(|(&s, &r)| f(s, r))
            .collect()
    };
    let parts = [
        (Key::Main, mask(&|s, r| s && !r)),
        (Key::Common, mask(&|s, r| s && r)),
        (Key::Rest, mask(&|s, r| !s && r)),
    ];
    Value::Dict(
        parts
            .into_iter()
            .filter(|(_, keep)| keep.contains(&true))
            .map(|(key, keep)| (key, Value::Graph(cut.induced(&keep))))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::dsl::tests::dict_names as names;
    use crate::plan::graph::tests::{layer_graph, UPSTREAM};
    use crate::plan::graph::LayerGraph;

    /// The upstream test graph ([`UPSTREAM`]), whole.
    fn upstream() -> (LayerGraph, Graph, Vec<crate::nix::StorePath>) {
        let (base, paths) = layer_graph(UPSTREAM, &[]);
        let graph = Graph::whole(&base);
        (base, graph, paths)
    }

    fn by_name(graph: &Graph, base: &LayerGraph, name: &str) -> usize {
        (0..graph.len())
            .find(|&p| base.path(graph.vertices()[p]).name() == name)
            .unwrap()
    }

    #[test]
    fn several_roots_get_a_fake_root_that_never_shows() {
        let (base, graph, _) = upstream();
        let b = by_name(&graph, &base, "B");
        assert_eq!(
            names(&base, &split_paths(&graph, &[b])),
            [
                (Key::Main, vec!["B", "D", "E", "F", "G"]),
                (Key::Rest, vec!["Root1", "A", "C", "Root2", "Root3"]),
            ]
        );
    }

    #[test]
    fn shared_dependencies_are_common() {
        // Splitting A: C is also used by Root3; B by Root2 (and its deps).
        let (base, graph, _) = upstream();
        let a = by_name(&graph, &base, "A");
        assert_eq!(
            names(&base, &split_paths(&graph, &[a])),
            [
                (Key::Main, vec!["A"]),
                (Key::Common, vec!["B", "C", "D", "E", "F", "G"]),
                (Key::Rest, vec!["Root1", "Root2", "Root3"]),
            ]
        );
    }

    #[test]
    fn edges_into_split_paths_are_cut_in_the_results() {
        // Split A and B: A → B is cut, so inside `main` B has no referrer.
        let (base, graph, _) = upstream();
        let a = by_name(&graph, &base, "A");
        let b = by_name(&graph, &base, "B");
        let Value::Dict(entries) = split_paths(&graph, &[a, b]) else {
            panic!()
        };
        let Value::Graph(main) = &entries[0].1 else {
            panic!()
        };
        assert_eq!(entries[0].0, Key::Main);
        let main_b = by_name(main, &base, "B");
        assert!((0..main.len()).all(|v| !main.successors(v).contains(&main_b)));
    }

    #[test]
    fn the_single_root_split_off_is_all_main() {
        //   top ──► x ──► y
        let (base, _) = layer_graph(&[("top", 3, &[1]), ("x", 2, &[2]), ("y", 1, &[])], &[]);
        let graph = Graph::whole(&base);
        let top = by_name(&graph, &base, "top");
        assert_eq!(
            names(&base, &split_paths(&graph, &[top])),
            [(Key::Main, vec!["y", "x", "top"])]
        );
        // A single real root that is not split: no fake root, `rest` is it.
        let x = by_name(&graph, &base, "x");
        assert_eq!(
            names(&base, &split_paths(&graph, &[x])),
            [(Key::Main, vec!["y", "x"]), (Key::Rest, vec!["top"])]
        );
    }

    #[test]
    fn nothing_matched_is_all_rest() {
        let (base, graph, _) = upstream();
        let value = split_paths(&graph, &[]);
        assert_eq!(names(&base, &value)[0].0, Key::Rest);
        assert_eq!(names(&base, &value)[0].1.len(), 10);
    }

    #[test]
    fn children_of_names_the_direct_references() {
        let (base, graph, paths) = upstream();
        let id_of = |name: &str| (0..base.len()).find(|&id| base.path(id).as_str() == name);
        let specs = [PathSpec::ChildrenOf(vec![
            paths[0].as_str().to_owned(),
            "/nix/store/not-in-the-graph".to_owned(),
        ])];
        let split = split_positions(&graph, &specs, &id_of);
        // Root1's only child is A.
        assert_eq!(split, [by_name(&graph, &base, "A")]);
        let specs = [
            PathSpec::Path(paths[3].as_str().to_owned()),
            PathSpec::Path("/nix/store/x-missing".to_owned()),
        ];
        assert_eq!(
            split_positions(&graph, &specs, &id_of),
            [by_name(&graph, &base, "C")]
        );
    }
}
