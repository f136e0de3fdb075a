//! `popularity_contest`: a graph → one single-vertex graph per path, most
//! popular first (reference §C.4, nixpkgs' `closure-graph.py` scoring).
//!
//! nixpkgs defines the score recursively: every root scores 1, and a path
//! inherits `v + 1` for each score `v` it has in the subtree of each of its
//! referrers. Its memoised score maps take O(N²) memory. The same numbers
//! come from path counts: with `W(x)` the number of distinct paths from any
//! root to `x` (`W(root) = 1`, `W(x) = Σ W(parents)`),
//!
//! ```text
//! pop(q) = Σ W(x) over every x that is q or an ancestor of q
//! ```
//!
//! (each root-to-x path followed by any x-to-q path is one of the paths the
//! recursion counts). Ancestor sets are bitsets filled in topological order,
//! a block of ancestors at a time so memory stays O(N · block). The tests
//! check this against a direct port of the recursion.
//!
//! Scores are exact: they count paths through the DAG and outgrow 64 bits on
//! deep lattices, so they are `u128`, and on overflow the whole computation
//! runs again with [`BigNat`].

use std::cmp::Ordering;
use std::convert::Infallible;

use super::graph::{Graph, LayerGraph};
use super::Error;

/// `popularity_contest`: every vertex of `graph` as a one-vertex graph, by
/// popularity descending, ties ascending by [`tie_key`].
///
/// # Errors
/// When `graph` has a reference cycle (nixpkgs' recursion would not end).
pub(super) fn popularity_contest(graph: &Graph, base: &LayerGraph) -> Result<Vec<Graph>, Error> {
    let order = popularity_order(graph, base)?;
    Ok(order
        .into_iter()
        .map(|v| Graph::single(graph.vertices()[v]))
        .collect())
}

/// Positions of `graph`'s vertices in popularity order.
fn popularity_order(graph: &Graph, base: &LayerGraph) -> Result<Vec<usize>, Error> {
    let topo = graph.topological_order().map_err(|v| Error::Cycle {
        path: base.path(graph.vertices()[v]).clone(),
    })?;
    let keys: Vec<String> = graph
        .vertices()
        .iter()
        .map(|&id| tie_key(base.path(id).as_str()))
        .collect();
    let mut order: Vec<usize> = (0..graph.len()).collect();
    match scores::<u128>(graph, &topo) {
        Ok(scores) => sort_by_popularity(&mut order, &scores, &keys),
        Err(Overflow) => match scores::<BigNat>(graph, &topo) {
            Ok(scores) => sort_by_popularity(&mut order, &scores, &keys),
            Err(never) => match never {},
        },
    }
    Ok(order)
}

/// nixpkgs' tie-break key (`package_name` in `closure-graph.py`): split the
/// path on `-`, move the first piece (`/nix/store/<hash>`) to the end,
/// rejoin with `-`. Compared by code point, which for UTF-8 is byte order.
fn tie_key(path: &str) -> String {
    match path.split_once('-') {
        Some((first, rest)) => format!("{rest}-{first}"),
        None => path.to_owned(),
    }
}

/// Highest score first; equal scores by ascending key (nixpkgs sorts each
/// score group by key and reverses twice).
fn sort_by_popularity<T: Ord>(order: &mut [usize], scores: &[T], keys: &[String]) {
    order.sort_by(|&a, &b| match scores[b].cmp(&scores[a]) {
        Ordering::Equal => keys[a].cmp(&keys[b]),
        other => other,
    });
}

/// The score of every vertex (by position), or `T::Overflow`.
fn scores<T: Count>(graph: &Graph, topo: &[usize]) -> Result<Vec<T>, T::Overflow> {
    let n = graph.len();

    // W(x): paths from any root to x. A vertex still at zero when its turn
    // comes has no parent, so it is a root.
    let mut paths_to = vec![T::zero(); n];
    for &v in topo {
        if paths_to[v].is_zero() {
            paths_to[v] = T::one();
        }
        let w = paths_to[v].clone();
        for &s in graph.successors(v) {
            paths_to[s].add_assign(&w)?;
        }
    }

    let mut position = vec![0; n];
    for (p, &v) in topo.iter().enumerate() {
        position[v] = p;
    }

    // pop(q) = Σ W(x) over x ∈ {q} ∪ ancestors(q). Bits are topological
    // positions; a block covers positions [start, start + width), and only
    // rows at or after `start` can hold them (ancestors come first).
    let mut popularity = vec![T::zero(); n];
    let mut start = 0;
    while start < n {
        let width = (n - start).min(BLOCK_BITS);
        let words = width.div_ceil(64);
        let mut bits = vec![0u64; (n - start) * words];
        for p in start..n {
            let row = (p - start) * words;
            if p - start < width {
                bits[row + (p - start) / 64] |= 1 << ((p - start) % 64);
            }
            // Every parent came earlier, so this row is complete.
            let v = topo[p];
            for (w, &word) in bits[row..row + words].iter().enumerate() {
                let mut word = word;
                while word != 0 {
                    let bit = w * 64 + word.trailing_zeros() as usize;
                    popularity[v].add_assign(&paths_to[topo[start + bit]])?;
                    word &= word - 1;
                }
            }
            let (done, later) = bits.split_at_mut(row + words);
            let own = &done[row..];
            for &s in graph.successors(v) {
                // position[s] > p: a successor comes later.
                let at = (position[s] - start) * words - (row + words);
                for (dst, src) in later[at..at + words].iter_mut().zip(own) {
                    *dst |= *src;
                }
            }
        }
        start += width;
    }
    Ok(popularity)
}

/// Ancestor positions per block: 2048 bits is 256 bytes a row, so a
/// 100 000-path closure needs 25 MB at a time, not 1.25 GB.
const BLOCK_BITS: usize = 2048;

/// A score type: exact natural numbers with addition.
trait Count: Clone + Ord {
    /// Why an addition failed.
    type Overflow;
    fn zero() -> Self;
    fn one() -> Self;
    fn is_zero(&self) -> bool;
    fn add_assign(&mut self, other: &Self) -> Result<(), Self::Overflow>;
}

/// A `u128` sum did not fit.
#[derive(Debug)]
struct Overflow;

impl Count for u128 {
    type Overflow = Overflow;
    fn zero() -> Self {
        0
    }
    fn one() -> Self {
        1
    }
    fn is_zero(&self) -> bool {
        *self == 0
    }
    fn add_assign(&mut self, other: &Self) -> Result<(), Overflow> {
        *self = self.checked_add(*other).ok_or(Overflow)?;
        Ok(())
    }
}

/// A natural number of any size: little-endian `u64` limbs, no zero limb
/// at the top (so zero is no limbs and longer means larger).
///
/// Hand-written rather than a bigint crate: scores only ever need `+` and
/// comparison, this runs only when a graph outgrows `u128` (a path count
/// above 3.4 × 10³⁸), and a crate would add dependencies for 30 lines.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct BigNat(Vec<u64>);

impl Ord for BigNat {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .len()
            .cmp(&other.0.len())
            .then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }
}

impl PartialOrd for BigNat {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Count for BigNat {
    type Overflow = Infallible;
    fn zero() -> Self {
        Self(Vec::new())
    }
    fn one() -> Self {
        Self(vec![1])
    }
    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }
    fn add_assign(&mut self, other: &Self) -> Result<(), Infallible> {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        let mut carry = false;
        for (i, limb) in self.0.iter_mut().enumerate() {
            if i >= other.0.len() && !carry {
                break;
            }
            let rhs = other.0.get(i).copied().unwrap_or(0);
            let (sum, c1) = limb.overflowing_add(rhs);
            let (sum, c2) = sum.overflowing_add(u64::from(carry));
            *limb = sum;
            carry = c1 || c2;
        }
        if carry {
            self.0.push(1);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;

    use super::*;
    use crate::plan::graph::tests::layer_graph;

    impl BigNat {
        fn from_u128(x: u128) -> Self {
            let mut limbs = vec![x as u64, (x >> 64) as u64];
            while limbs.last() == Some(&0) {
                limbs.pop();
            }
            Self(limbs)
        }
    }

    fn big(x: u128) -> BigNat {
        BigNat::from_u128(x)
    }

    /// A direct port of nixpkgs' recursion (§C.4): for each entry p of a
    /// set, add 1 to p, then `v + 1` to every q of p's children's map.
    fn naive_scores(graph: &Graph) -> Vec<BigNat> {
        fn contest(
            graph: &Graph,
            entries: &[usize],
            memo: &mut HashMap<usize, BTreeMap<usize, BigNat>>,
        ) -> BTreeMap<usize, BigNat> {
            let mut popularity: BTreeMap<usize, BigNat> = BTreeMap::new();
            for &p in entries {
                let _ = popularity.entry(p).or_default().add_assign(&BigNat::one());
                let sub = match memo.get(&p) {
                    Some(sub) => sub.clone(),
                    None => {
                        let sub = contest(graph, graph.successors(p), memo);
                        memo.insert(p, sub.clone());
                        sub
                    }
                };
                for (q, mut v) in sub {
                    let _ = v.add_assign(&BigNat::one());
                    let _ = popularity.entry(q).or_default().add_assign(&v);
                }
            }
            popularity
        }
        let mut referenced = vec![false; graph.len()];
        for v in 0..graph.len() {
            for &s in graph.successors(v) {
                referenced[s] = true;
            }
        }
        let roots: Vec<usize> = (0..graph.len()).filter(|&v| !referenced[v]).collect();
        let scores = contest(graph, &roots, &mut HashMap::new());
        (0..graph.len())
            .map(|v| scores.get(&v).cloned().unwrap_or_default())
            .collect()
    }

    /// nixpkgs' `order_by_popularity`, literally: group by score, sort the
    /// scores ascending, sort each group by key, append it reversed, and
    /// reverse the whole list.
    fn naive_order(scores: &[BigNat], keys: &[String]) -> Vec<usize> {
        let mut groups: BTreeMap<&BigNat, Vec<usize>> = BTreeMap::new();
        for (v, s) in scores.iter().enumerate() {
            groups.entry(s).or_default().push(v);
        }
        let mut flat = Vec::new();
        for (_, mut group) in groups {
            group.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
            flat.extend(group.into_iter().rev());
        }
        flat.reverse();
        flat
    }

    #[test]
    fn upstream_example() {
        // A → B, A → G, B → C, B → E, C → D, C → E, D → F, E → F
        // nixpkgs: A1, B2, C3, D4, E5, F9, G2.
        let nodes: &[(&str, u64, &[usize])] = &[
            ("A", 1, &[1, 6]),
            ("B", 1, &[2, 4]),
            ("C", 1, &[3, 4]),
            ("D", 1, &[5]),
            ("E", 1, &[5]),
            ("F", 1, &[]),
            ("G", 1, &[]),
        ];
        let (base, _) = layer_graph(nodes, &[]);
        let graph = Graph::whole(&base);
        let topo = graph.topological_order().unwrap();
        assert_eq!(
            scores::<u128>(&graph, &topo).unwrap(),
            [1, 2, 3, 4, 5, 9, 2]
        );
        let names: Vec<&str> = popularity_contest(&graph, &base)
            .unwrap()
            .iter()
            .map(|g| base.path(g.vertices()[0]).name())
            .collect();
        // B and G tie at 2: B first by name.
        assert_eq!(names, ["F", "E", "D", "C", "B", "G", "A"]);
    }

    #[test]
    fn tie_key_moves_the_hash_to_the_end() {
        assert_eq!(
            tie_key("/nix/store/abc-hello-2.12"),
            "hello-2.12-/nix/store/abc"
        );
        assert_eq!(tie_key("/nix/store/abc-x-"), "x--/nix/store/abc");
        assert_eq!(tie_key("nodash"), "nodash");
        // By name first, so `a-z` beats `b` whatever the hashes.
        assert!(tie_key("/nix/store/zzz-a-z") < tie_key("/nix/store/aaa-b"));
    }

    #[test]
    fn several_roots_and_self_references() {
        //  r1 ──► lib ◄── r2,  lib ──► lib (self-reference, no edge)
        let (base, _) = layer_graph(&[("r1", 1, &[1]), ("lib", 2, &[1]), ("r2", 3, &[1])], &[]);
        let graph = Graph::whole(&base);
        let topo = graph.topological_order().unwrap();
        // ids by size: r1, lib, r2. Each root gives lib 1 + 1 (as A → B
        // gives B 2 upstream), and W(r1) + W(r2) + W(lib) = 1 + 1 + 2.
        assert_eq!(scores::<u128>(&graph, &topo).unwrap(), [1, 4, 1]);
    }

    #[test]
    fn a_cycle_is_an_error() {
        let (base, _) = layer_graph(&[("a", 1, &[1]), ("b", 2, &[0])], &[]);
        let err = popularity_contest(&Graph::whole(&base), &base).unwrap_err();
        assert!(matches!(err, Error::Cycle { .. }), "{err}");
    }

    /// A 2-wide lattice `depth` levels deep: both vertices of a level
    /// reference both of the level below. W doubles every level.
    fn lattice(depth: usize) -> (LayerGraph, Graph) {
        let names: Vec<String> = (0..depth)
            .flat_map(|l| [format!("l{l:03}-a"), format!("l{l:03}-b")])
            .collect();
        let refs: Vec<Vec<usize>> = (0..depth)
            .flat_map(|l| {
                let below = if l + 1 < depth {
                    vec![2 * l + 2, 2 * l + 3]
                } else {
                    vec![]
                };
                [below.clone(), below]
            })
            .collect();
        let nodes: Vec<(&str, u64, &[usize])> = names
            .iter()
            .zip(&refs)
            .map(|(n, r)| (n.as_str(), 1, r.as_slice()))
            .collect();
        let (base, _) = layer_graph(&nodes, &[]);
        let graph = Graph::whole(&base);
        (base, graph)
    }

    #[test]
    fn scores_past_u128_fall_back_to_bignat() {
        // 140 levels: W reaches 2¹³⁹, sums past 2¹²⁸.
        let (base, graph) = lattice(140);
        let topo = graph.topological_order().unwrap();
        assert!(scores::<u128>(&graph, &topo).is_err());
        let Ok(fast) = scores::<BigNat>(&graph, &topo);
        assert_eq!(fast, naive_scores(&graph));
        assert!(fast.iter().any(|s| s.0.len() > 2));
        // The deepest level is the most popular.
        let order = popularity_contest(&graph, &base).unwrap();
        assert!(base.path(order[0].vertices()[0]).name().starts_with("l139"));
    }

    #[test]
    fn u128_and_bignat_agree() {
        let (_, graph) = lattice(70);
        let topo = graph.topological_order().unwrap();
        let small = scores::<u128>(&graph, &topo).unwrap();
        let Ok(large) = scores::<BigNat>(&graph, &topo);
        let small: Vec<BigNat> = small.into_iter().map(big).collect();
        assert_eq!(small, large);
        // Beyond 64 bits, as nixpkgs' Python ints.
        assert!(large.iter().any(|s| s.0.len() == 2));
    }

    #[test]
    fn bignat_addition_and_order() {
        let mut x = big(u128::from(u64::MAX));
        let _ = x.add_assign(&big(1));
        assert_eq!(x, big(1 << 64));
        let mut y = big(u128::MAX);
        let _ = y.add_assign(&big(u128::MAX));
        assert_eq!(y.0, [u64::MAX - 1, u64::MAX, 1]);
        assert!(y > big(u128::MAX));
        assert!(big(0) < big(1));
        assert!(big(1 << 64) > big(u128::from(u64::MAX)));
        assert_eq!(big(0), BigNat::zero());
    }

    proptest! {
        #[test]
        fn bignat_matches_u128(a in any::<u128>(), b in any::<u128>()) {
            let mut x = big(a >> 1);
            let _ = x.add_assign(&big(b >> 1));
            prop_assert_eq!(x.clone(), big((a >> 1) + (b >> 1)));
            prop_assert_eq!(big(a).cmp(&big(b)), a.cmp(&b));
        }

        /// Random DAGs with several roots, diamonds and self-references:
        /// the path-count identity equals nixpkgs' recursion, and so does
        /// the order.
        #[test]
        fn fast_scores_equal_the_recursion(
            nodes in crate::plan::tests::dag_strategy(24),
        ) {
            let (base, graph) = crate::plan::tests::build(&nodes);
            let topo = graph.topological_order().unwrap();
            let naive = naive_scores(&graph);
            let fast: Vec<BigNat> = scores::<u128>(&graph, &topo).unwrap().into_iter().map(big).collect();
            prop_assert_eq!(&fast, &naive);
            let keys: Vec<String> = graph.vertices().iter().map(|&id| tie_key(base.path(id).as_str())).collect();
            prop_assert_eq!(popularity_order(&graph, &base).unwrap(), naive_order(&naive, &keys));
        }
    }
}
