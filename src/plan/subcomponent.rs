//! `subcomponent_in` / `subcomponent_out`: a graph → `{main, rest}`
//! (reference §C.3, nixpkgs' `subcomponent.py`).
//!
//! `main` is the named paths that are in the graph plus everything that
//! reaches them (`in`: their dependents) or that they reach (`out`: their
//! dependencies); `rest` is the graph without those vertices. Both keys are
//! always present, possibly empty; both keep the graph's vertex order.

use super::dsl::{Key, Value};
use super::graph::{Direction, Graph};

/// `subcomponent_<direction>` of the vertices at `starts` (positions in
/// `graph`).
pub(super) fn subcomponent(graph: &Graph, starts: &[usize], direction: Direction) -> Value {
    let main = graph.reachable(starts, direction);
    let rest: Vec<bool> = main.iter().map(|&m| !m).collect();
    Value::Dict(vec![
        (Key::Main, Value::Graph(graph.induced(&main))),
        (Key::Rest, Value::Graph(graph.induced(&rest))),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::dsl::tests::dict_names as names;
    use crate::plan::graph::tests::layer_graph;
    use crate::plan::graph::LayerGraph;

    //   app(5) ──► lib(2) ──► libc(1)
    //   tool(4) ─────────────► libc
    //   doc(3)
    fn sample() -> (LayerGraph, Graph) {
        let (base, _) = layer_graph(
            &[
                ("app", 5, &[1]),
                ("lib", 2, &[2]),
                ("libc", 1, &[]),
                ("tool", 4, &[2]),
                ("doc", 3, &[]),
            ],
            &[],
        );
        // ids by size: libc 0, lib 1, doc 2, tool 3, app 4
        let graph = Graph::whole(&base);
        (base, graph)
    }

    #[test]
    fn out_takes_the_dependencies() {
        let (base, graph) = sample();
        let value = subcomponent(&graph, &[1], Direction::Out); // lib
        assert_eq!(
            names(&base, &value),
            [
                (Key::Main, vec!["libc", "lib"]),
                (Key::Rest, vec!["doc", "tool", "app"])
            ]
        );
    }

    #[test]
    fn in_takes_the_dependents_and_keeps_index_order() {
        let (base, graph) = sample();
        let value = subcomponent(&graph, &[0], Direction::In); // libc
        assert_eq!(
            names(&base, &value),
            [
                (Key::Main, vec!["libc", "lib", "tool", "app"]),
                (Key::Rest, vec!["doc"])
            ]
        );
        // The rest keeps its edges: app → lib survives removing libc.
        let value = subcomponent(&graph, &[3], Direction::In); // tool
        let Value::Dict(entries) = value else {
            panic!()
        };
        let Value::Graph(rest) = &entries[1].1 else {
            panic!()
        };
        assert_eq!(rest.vertices(), [0, 1, 2, 4]);
        assert_eq!(rest.successors(3), [1]);
    }

    #[test]
    fn no_match_gives_an_empty_main_and_the_whole_rest() {
        let (base, graph) = sample();
        let value = subcomponent(&graph, &[], Direction::Out);
        assert_eq!(
            names(&base, &value),
            [
                (Key::Main, vec![]),
                (Key::Rest, vec!["libc", "lib", "doc", "tool", "app"])
            ]
        );
    }
}
