//! The layering graph, built the way nixpkgs' `flatten_references_graph`
//! builds its igraph (reference §C.1), and the graph values the pipeline
//! passes around.
//!
//! [`LayerGraph`] is the whole closure after exclusions: it names every
//! vertex. A [`Graph`] is what a pipeline step sees as "a graph": some of
//! those vertices, in vertex-index order, with the edges among them. Every
//! DSL operation keeps vertex sets disjoint (no operation copies a vertex),
//! so a vertex id always means the same store path.
//!
//! Hand-written rather than on petgraph: the layers and their order are
//! nixpkgs' output, which follows igraph's vertex order and its
//! `induced_subgraph` / `subcomponent` orders exactly. A [`Graph`] is a sorted vertex list over
//! one shared [`LayerGraph`], so an induced subgraph keeps the ids and the
//! index order that igraph renumbers to; petgraph's `Graph` renumbers
//! differently on removal (the last node takes the removed one's index) and
//! its neighbour lists run newest edge first, so every operation would need
//! re-sorting to match, for no code saved.

use std::collections::{HashMap, HashSet};

use crate::nix::StorePath;

use super::Error;

/// The closure as nixpkgs' igraph holds it: vertices sorted by narSize
/// ascending, edges referrer → reference without self-loops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct LayerGraph {
    /// Vertex names, by vertex id.
    paths: Vec<StorePath>,
    /// References of each vertex, as vertex ids, ascending (so by target
    /// narSize, as nixpkgs orders each node's edges).
    references: Vec<Vec<usize>>,
}

impl LayerGraph {
    /// Builds the graph from `(path, narSize, references)` in input order
    /// (path order for a [`ClosureGraph`](crate::closure::ClosureGraph)).
    ///
    /// As nixpkgs does, excluded paths are dropped first and removed from
    /// every reference list; what they referenced stays and may become a
    /// root. Excluded paths absent from the graph are ignored.
    ///
    /// # Errors
    /// When a path appears twice or a reference names no path of the input
    /// (a [`ClosureGraph`](crate::closure::ClosureGraph) rules both out).
    pub(super) fn new<'a, I, R>(nodes: I, exclude: &[StorePath]) -> Result<Self, Error>
    where
        I: IntoIterator<Item = (&'a StorePath, u64, R)>,
        R: IntoIterator<Item = &'a StorePath>,
    {
        let exclude: HashSet<&StorePath> = exclude.iter().collect();
        let excluded = |p: &StorePath| exclude.contains(p);
        let mut kept: Vec<(&StorePath, u64, R)> =
            nodes.into_iter().filter(|(p, ..)| !excluded(p)).collect();
        // nixpkgs: `sorted(graph, key=lambda n: n["narSize"])`, a stable
        // sort, so equal sizes keep the input order.
        kept.sort_by_key(|(_, size, _)| *size);

        let mut ids: HashMap<&StorePath, usize> = HashMap::with_capacity(kept.len());
        for (id, (path, ..)) in kept.iter().enumerate() {
            if ids.insert(path, id).is_some() {
                return Err(Error::DuplicatePath {
                    path: (*path).clone(),
                });
            }
        }

        let mut paths = Vec::with_capacity(kept.len());
        let mut references = Vec::with_capacity(kept.len());
        for (id, (path, _, refs)) in kept.into_iter().enumerate() {
            let mut targets = Vec::new();
            for reference in refs {
                if excluded(reference) {
                    continue;
                }
                let Some(&target) = ids.get(reference) else {
                    return Err(Error::UnknownReference {
                        referrer: path.clone(),
                        reference: reference.clone(),
                    });
                };
                // nixpkgs adds no edge for a self-reference.
                if target != id {
                    targets.push(target);
                }
            }
            targets.sort_unstable();
            targets.dedup();
            paths.push(path.clone());
            references.push(targets);
        }
        Ok(Self { paths, references })
    }

    /// Number of vertices.
    pub(super) fn len(&self) -> usize {
        self.paths.len()
    }

    /// The store path of vertex `id`.
    pub(super) fn path(&self, id: usize) -> &StorePath {
        &self.paths[id]
    }
}

/// Which way [`Graph::reachable`] follows edges.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Direction {
    /// Referrer → reference: what a vertex depends on.
    Out,
    /// Reference → referrer: what depends on a vertex.
    In,
}

/// A graph value of the pipeline: vertices of a [`LayerGraph`] in
/// vertex-index order, and the edges among them.
///
/// Each graph owns its edges rather than deriving them from the
/// [`LayerGraph`], because nixpkgs' operations may hand on a graph whose
/// edges were cut (`split_paths` deletes edges before inducing subgraphs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Graph {
    /// [`LayerGraph`] ids, in this graph's vertex-index order.
    vertices: Vec<usize>,
    /// Successors of each vertex, as positions in `vertices`.
    successors: Vec<Vec<usize>>,
}

impl Graph {
    /// The whole layering graph, as the pipeline starts with it.
    pub(super) fn whole(base: &LayerGraph) -> Self {
        Self {
            vertices: (0..base.len()).collect(),
            successors: base.references.clone(),
        }
    }

    /// A one-vertex graph (`popularity_contest` yields these).
    pub(super) fn single(id: usize) -> Self {
        Self {
            vertices: vec![id],
            successors: vec![Vec::new()],
        }
    }

    /// [`LayerGraph`] ids of the vertices, in vertex-index order.
    pub(super) fn vertices(&self) -> &[usize] {
        &self.vertices
    }

    /// Successors of the vertex at position `v`, as positions.
    pub(super) fn successors(&self, v: usize) -> &[usize] {
        &self.successors[v]
    }

    /// Number of vertices.
    pub(super) fn len(&self) -> usize {
        self.vertices.len()
    }

    /// igraph's `a + b` (disjoint union): `other`'s vertices after ours, in
    /// their order, with their edges.
    pub(super) fn append(&mut self, other: Self) {
        let offset = self.vertices.len();
        self.vertices.extend(other.vertices);
        self.successors.extend(
            other
                .successors
                .into_iter()
                .map(|s| s.into_iter().map(|v| v + offset).collect()),
        );
    }

    /// The positions of the [`LayerGraph`] ids `ids` that are vertices of
    /// this graph, in the order given; the others are skipped (nixpkgs
    /// ignores names a graph does not have).
    pub(super) fn positions_of(&self, ids: impl IntoIterator<Item = usize>) -> Vec<usize> {
        let position: HashMap<usize, usize> = self
            .vertices
            .iter()
            .enumerate()
            .map(|(p, &id)| (id, p))
            .collect();
        ids.into_iter()
            .filter_map(|id| position.get(&id).copied())
            .collect()
    }

    /// How many edges point at each vertex.
    pub(super) fn in_degrees(&self) -> Vec<usize> {
        let mut in_degree = vec![0usize; self.len()];
        for succ in &self.successors {
            for &s in succ {
                in_degree[s] += 1;
            }
        }
        in_degree
    }

    /// Every vertex reachable from `starts` (themselves included), following
    /// edges forwards ([`Direction::Out`], igraph `mode="out"`: dependencies)
    /// or backwards ([`Direction::In`]: dependents), as a mask by position.
    pub(super) fn reachable(&self, starts: &[usize], direction: Direction) -> Vec<bool> {
        let predecessors;
        let next: &[Vec<usize>] = match direction {
            Direction::Out => &self.successors,
            Direction::In => {
                let mut pred = vec![Vec::new(); self.len()];
                for (v, succ) in self.successors.iter().enumerate() {
                    for &s in succ {
                        pred[s].push(v);
                    }
                }
                predecessors = pred;
                &predecessors
            }
        };
        let mut seen = vec![false; self.len()];
        let mut todo: Vec<usize> = Vec::new();
        for &s in starts {
            if !seen[s] {
                seen[s] = true;
                todo.push(s);
            }
        }
        while let Some(v) = todo.pop() {
            for &s in &next[v] {
                if !seen[s] {
                    seen[s] = true;
                    todo.push(s);
                }
            }
        }
        seen
    }

    /// igraph's `induced_subgraph`: the vertices whose `keep` is set, in
    /// this graph's index order, with the edges among them.
    ///
    /// igraph keeps the relative vertex order whichever implementation it
    /// picks (its "create from scratch" variant sorts the vertex ids first
    /// to agree with "copy and delete"), so nixpkgs' layers list a
    /// subgraph's paths in the parent's index order. `graph - vertices`
    /// (delete) is the same with the mask inverted.
    pub(super) fn induced(&self, keep: &[bool]) -> Self {
        let mut new_position = vec![usize::MAX; self.len()];
        let mut vertices = Vec::new();
        for (p, &id) in self.vertices.iter().enumerate() {
            if keep[p] {
                new_position[p] = vertices.len();
                vertices.push(id);
            }
        }
        let successors = (0..self.len())
            .filter(|&p| keep[p])
            .map(|p| {
                self.successors[p]
                    .iter()
                    .filter(|&&s| keep[s])
                    .map(|&s| new_position[s])
                    .collect()
            })
            .collect();
        Self {
            vertices,
            successors,
        }
    }

    /// The induced subgraph of positions `start..end` (a `split_every`
    /// slice), without a mask over the whole graph.
    pub(super) fn induced_range(&self, start: usize, end: usize) -> Self {
        let end = end.min(self.len());
        let start = start.min(end);
        Self {
            vertices: self.vertices[start..end].to_vec(),
            successors: self.successors[start..end]
                .iter()
                .map(|succ| {
                    succ.iter()
                        .filter(|&&s| (start..end).contains(&s))
                        .map(|&s| s - start)
                        .collect()
                })
                .collect(),
        }
    }

    /// Deletes every edge pointing at a vertex whose `targets` is set
    /// (igraph `delete_edges(_target_in=…)`).
    pub(super) fn delete_edges_into(&mut self, targets: &[bool]) {
        for succ in &mut self.successors {
            succ.retain(|&s| !targets[s]);
        }
    }

    /// Positions in a topological order (every vertex before its
    /// successors; roots first, in index order), or on a cycle the position
    /// of one vertex that lies on it.
    pub(super) fn topological_order(&self) -> Result<Vec<usize>, usize> {
        let n = self.len();
        let mut in_degree = vec![0usize; n];
        for succ in &self.successors {
            for &s in succ {
                in_degree[s] += 1;
            }
        }
        let mut order: Vec<usize> = (0..n).filter(|&v| in_degree[v] == 0).collect();
        let mut next = 0;
        while let Some(&v) = order.get(next) {
            next += 1;
            for &s in &self.successors[v] {
                in_degree[s] -= 1;
                if in_degree[s] == 0 {
                    order.push(s);
                }
            }
        }
        if order.len() == n {
            return Ok(order);
        }
        // Every vertex left has a predecessor that is also left, so walking
        // back through those must come round to a cycle within n steps.
        let mut left_predecessor = vec![None; n];
        for (v, succ) in self.successors.iter().enumerate() {
            if in_degree[v] > 0 {
                for &s in succ {
                    if in_degree[s] > 0 {
                        left_predecessor[s] = Some(v);
                    }
                }
            }
        }
        let mut v = (0..n).find(|&v| in_degree[v] > 0).unwrap_or(0);
        for _ in 0..n {
            match left_predecessor[v] {
                Some(p) => v = p,
                None => break,
            }
        }
        Err(v)
    }
}

#[cfg(test)]
pub(in crate::plan) mod tests {
    use super::*;
    use crate::nix::{base32, StoreDir};

    /// A valid store path named `name`, with a hash derived from `seed`.
    pub(in crate::plan) fn store_path(seed: u64, name: &str) -> StorePath {
        let mut hash = [0u8; 20];
        hash[..8].copy_from_slice(&seed.to_le_bytes());
        let text = format!("/nix/store/{}-{name}", base32::encode(&hash));
        StorePath::parse(&StoreDir::default(), &text).unwrap()
    }

    /// A graph from `(name, narSize, references by index)`.
    pub(in crate::plan) fn layer_graph(
        nodes: &[(&str, u64, &[usize])],
        exclude: &[usize],
    ) -> (LayerGraph, Vec<StorePath>) {
        let paths: Vec<StorePath> = nodes
            .iter()
            .enumerate()
            .map(|(i, (name, ..))| store_path(i as u64, name))
            .collect();
        let refs: Vec<Vec<&StorePath>> = nodes
            .iter()
            .map(|(_, _, r)| r.iter().map(|&i| &paths[i]).collect())
            .collect();
        let exclude: Vec<StorePath> = exclude.iter().map(|&i| paths[i].clone()).collect();
        let graph = LayerGraph::new(
            paths
                .iter()
                .zip(nodes)
                .zip(&refs)
                .map(|((p, (_, size, _)), r)| (p, *size, r.iter().copied())),
            &exclude,
        )
        .unwrap();
        (graph, paths)
    }

    /// The nodes of the upstream `pipe` test (reference §C.3 worked
    /// example), sizes giving index order Root1 A B C D E F G Root2 Root3:
    ///
    /// ```text
    /// Root1 ──► A ──► B ──► D
    ///           │     ├───► E ──► F
    ///           │     └───► G
    ///           └───► C
    /// Root2 ──► B     Root3 ──► C
    /// ```
    pub(in crate::plan) const UPSTREAM: &[(&str, u64, &[usize])] = &[
        ("Root1", 0, &[1]),
        ("A", 1, &[2, 3]),
        ("B", 2, &[4, 5, 7]),
        ("C", 3, &[]),
        ("D", 4, &[]),
        ("E", 5, &[6]),
        ("F", 6, &[]),
        ("G", 7, &[]),
        ("Root2", 8, &[2]),
        ("Root3", 9, &[3]),
    ];

    fn names(graph: &LayerGraph, paths: &[StorePath]) -> Vec<usize> {
        (0..graph.len())
            .map(|id| paths.iter().position(|p| p == graph.path(id)).unwrap())
            .collect()
    }

    #[test]
    fn vertices_sorted_by_nar_size_stably() {
        // 0(30) 1(10) 2(20) 3(10): sizes ascending, ties in input order.
        let (g, paths) = layer_graph(
            &[
                ("a", 30, &[]),
                ("b", 10, &[]),
                ("c", 20, &[]),
                ("d", 10, &[]),
            ],
            &[],
        );
        assert_eq!(names(&g, &paths), [1, 3, 2, 0]);
    }

    #[test]
    fn edges_drop_self_loops_and_follow_target_size() {
        //   a(5) ──► a, c(1), b(3)
        let (g, _) = layer_graph(&[("a", 5, &[0, 2, 1]), ("b", 3, &[]), ("c", 1, &[])], &[]);
        // ids: c=0, b=1, a=2
        assert_eq!(g.references, [vec![], Vec::<usize>::new(), vec![0, 1]]);
    }

    #[test]
    fn exclusion_drops_the_node_and_keeps_its_deps() {
        //   root ──► app ──► lib
        //   exclude app: lib stays (and becomes a root)
        let (g, paths) = layer_graph(
            &[("root", 1, &[1]), ("app", 2, &[2]), ("lib", 3, &[])],
            &[1],
        );
        assert_eq!(names(&g, &paths), [0, 2]);
        assert_eq!(g.references, [Vec::<usize>::new(), Vec::new()]);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        let a = store_path(1, "a");
        let b = store_path(2, "b");
        let dup = LayerGraph::new([(&a, 1, vec![]), (&a, 2, vec![])], &[]);
        assert!(matches!(dup, Err(Error::DuplicatePath { .. })));
        let dangling = LayerGraph::new([(&a, 1, vec![&b])], &[]);
        assert!(matches!(dangling, Err(Error::UnknownReference { .. })));
        // An excluded reference is not dangling.
        assert!(LayerGraph::new([(&a, 1, vec![&b])], std::slice::from_ref(&b)).is_ok());
    }

    #[test]
    fn topological_order_and_cycles() {
        let (g, _) = layer_graph(&[("a", 3, &[1]), ("b", 2, &[2]), ("c", 1, &[])], &[]);
        // ids: c=0, b=1, a=2; a → b → c
        assert_eq!(Graph::whole(&g).topological_order(), Ok(vec![2, 1, 0]));

        // d → (a → b → c → a): the cycle is reported at a, b or c, not d.
        let cyclic = Graph {
            vertices: vec![0, 1, 2, 3],
            successors: vec![vec![1], vec![2], vec![0], vec![0]],
        };
        let on_cycle = cyclic.topological_order().unwrap_err();
        assert!(on_cycle < 3, "{on_cycle}");
    }

    #[test]
    fn append_is_a_disjoint_union() {
        let mut a = Graph {
            vertices: vec![4, 2],
            successors: vec![vec![1], vec![]],
        };
        a.append(Graph {
            vertices: vec![0, 1],
            successors: vec![vec![1], vec![]],
        });
        assert_eq!(a.vertices(), [4, 2, 0, 1]);
        assert_eq!(a.successors(2), [3]);
    }
}
