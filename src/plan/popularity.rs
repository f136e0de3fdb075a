//! `popularity_contest`: a graph → one single-vertex graph per path, most
//! popular first (reference §C.4, nixpkgs' `closure-graph.py` scoring).
//!
//! nixpkgs defines the score recursively: each entry p of a set adds 1 to
//! p and `v + 1` to every q with score `v` in the map of p's children, the
//! roots being the top set. Its memoised score maps take O(N²) memory. The
//! same numbers come from path counts: with `W(x)` the number of distinct
//! paths from any root to `x` (`W(root) = 1`, `W(x) = Σ W(parents)`),
//!
//! ```text
//! pop(q) = Σ W(x) over every x that is q or an ancestor of q
//! ```
//!
//! (by induction on the recursion, an entry p gives q the number of paths
//! from p to any vertex that is q or reaches q). Ancestor sets are bitsets
//! filled in topological order, a block of ancestor positions at a time so
//! memory stays O(N · block). The tests check this against a direct port of
//! the recursion.
//!
//! Scores are exact: they count paths through the DAG, outgrow 64 bits on
//! deep lattices and 128 on large random DAGs. W is computed with
//! [`BigNat`]. Every score is a sum of distinct W(x), so at most `Σ W(x)`:
//! when that total fits in a `u128` the sums are `u128`, otherwise they run
//! on limbs as wide as the total, so they never overflow or allocate.

use std::cmp::Ordering;

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
    let scores = scores(graph, &topo);
    let mut order: Vec<usize> = (0..graph.len()).collect();
    // Highest score first; equal scores by ascending key (nixpkgs sorts each
    // score group by key and reverses twice).
    order.sort_by(|&a, &b| scores.cmp(b, a).then_with(|| keys[a].cmp(&keys[b])));
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

/// Scores of a graph's vertices (by position), each `limbs` little-endian
/// `u64` words.
struct Scores {
    limbs: usize,
    words: Vec<u64>,
}

impl Scores {
    /// The limbs of vertex `v`'s score.
    fn get(&self, v: usize) -> &[u64] {
        &self.words[v * self.limbs..(v + 1) * self.limbs]
    }

    /// Compares two scores: same width, so most significant limb first.
    fn cmp(&self, a: usize, b: usize) -> Ordering {
        self.get(a).iter().rev().cmp(self.get(b).iter().rev())
    }
}

/// The popularity of every vertex of `graph`; `topo` is a topological order.
fn scores(graph: &Graph, topo: &[usize]) -> Scores {
    scores_in_blocks(graph, topo, BLOCK_BITS)
}

/// [`scores`], `block` ancestor positions at a time.
fn scores_in_blocks(graph: &Graph, topo: &[usize], block: usize) -> Scores {
    let n = graph.len();

    // W(x): paths from any root to x. A vertex still at zero when its turn
    // comes has no parent, so it is a root.
    let mut paths_to = vec![BigNat::default(); n];
    let mut total = BigNat::default();
    for &v in topo {
        if paths_to[v].0.is_empty() {
            paths_to[v] = BigNat(vec![1]);
        }
        let w = paths_to[v].clone();
        for &s in graph.successors(v) {
            paths_to[s].add_assign(&w);
        }
        total.add_assign(&w);
    }
    // W by topological position, the order the ancestor bits use.
    let weights: Vec<&[u64]> = topo.iter().map(|&v| paths_to[v].0.as_slice()).collect();

    // Every score is a sum of distinct W(x), so at most `total`: that many
    // limbs hold every score and every partial sum.
    if total.0.len() <= 2 {
        let weights: Vec<u128> = weights
            .iter()
            .map(|w| {
                w.iter()
                    .rev()
                    .fold(0, |acc, &l| (acc << 64) | u128::from(l))
            })
            .collect();
        let mut popularity = vec![0u128; n];
        let mut table: Vec<u128> = Vec::new();
        let mut table_start = usize::MAX;
        for_each_ancestry(graph, topo, block, |v, ancestry| {
            if ancestry.start != table_start {
                table_start = ancestry.start;
                // Σ W over each subset of each 8 positions of the block.
                // Cannot wrap: every entry is at most `total`.
                let weights = &weights[table_start..];
                table.clear();
                table.resize(ancestry.bits.len() * 8 * 256, 0);
                for m in 1..table.len() {
                    let (byte, subset) = (m / 256, m % 256);
                    if subset != 0 {
                        let x = byte * 8 + subset.trailing_zeros() as usize;
                        let w = weights.get(x).copied().unwrap_or(0);
                        table[m] = table[m & !(subset & subset.wrapping_neg())].wrapping_add(w);
                    }
                }
            }
            let mut sum = popularity[v];
            for_each_byte(ancestry.bits, |at| sum = sum.wrapping_add(table[at]));
            popularity[v] = sum;
        });
        Scores {
            limbs: 2,
            words: popularity
                .into_iter()
                .flat_map(|p| [p as u64, (p >> 64) as u64])
                .collect(),
        }
    } else {
        let limbs = total.0.len();
        let mut words = vec![0u64; n * limbs];
        // The table takes 256 × limbs bytes per position of a block: at
        // most TABLE_BYTES, in narrower blocks when the limbs are many.
        let block = block.min((TABLE_BYTES / (256 * limbs) / 64).max(1) * 64);
        let mut table: Vec<u64> = Vec::new();
        let mut table_start = usize::MAX;
        for_each_ancestry(graph, topo, block, |v, ancestry| {
            if ancestry.start != table_start {
                table_start = ancestry.start;
                let weights = &weights[table_start..];
                table.clear();
                table.resize(ancestry.bits.len() * 8 * 256 * limbs, 0);
                for m in 1..table.len() / limbs {
                    let (byte, subset) = (m / 256, m % 256);
                    if subset != 0 {
                        let x = byte * 8 + subset.trailing_zeros() as usize;
                        let from = m & !(subset & subset.wrapping_neg());
                        table.copy_within(from * limbs..(from + 1) * limbs, m * limbs);
                        if let Some(w) = weights.get(x) {
                            add_limbs(&mut table[m * limbs..(m + 1) * limbs], w);
                        }
                    }
                }
            }
            let sum = &mut words[v * limbs..(v + 1) * limbs];
            for_each_byte(ancestry.bits, |at| {
                add_limbs(sum, &table[at * limbs..(at + 1) * limbs]);
            });
        });
        Scores { limbs, words }
    }
}

/// Calls `f(256 × i + j)` for the `i`-th byte of `bits` when that byte is
/// `j`, not zero: the index of its subset's sum in a table of 256 sums per
/// byte. The sums of a vertex's ancestry are then one addition per busy
/// byte rather than one per ancestor (the Four Russians' trick): on a
/// 10,000-path closure 5,000 deep, ancestries hold millions of bits.
fn for_each_byte(bits: &[u64], mut f: impl FnMut(usize)) {
    for (w, &word) in bits.iter().enumerate() {
        let mut word = word;
        let mut byte = w * 8;
        while word != 0 {
            let subset = (word & 0xff) as usize;
            if subset != 0 {
                f(byte * 256 + subset);
            }
            word >>= 8;
            byte += 1;
        }
    }
}

/// The largest sum table of a block (see [`for_each_byte`]).
const TABLE_BYTES: usize = 8 << 20;

/// Some of the topological positions of a vertex and its ancestors.
struct Ancestry<'a> {
    /// The position of bit 0.
    start: usize,
    bits: &'a [u64],
}

/// Calls `f(v, ancestry)` for every vertex `v` once per block of positions,
/// so `v` and each of its ancestors are in exactly one call's `ancestry`.
fn for_each_ancestry<F>(graph: &Graph, topo: &[usize], block: usize, mut f: F)
where
    F: FnMut(usize, Ancestry<'_>),
{
    let n = topo.len();
    let mut position = vec![0; n];
    for (p, &v) in topo.iter().enumerate() {
        position[v] = p;
    }
    // A block covers positions [start, start + width); only rows at or
    // after `start` can hold them (ancestors come first).
    let mut start = 0;
    while start < n {
        let width = (n - start).min(block.max(1));
        let row_words = width.div_ceil(64);
        let mut bits = vec![0u64; (n - start) * row_words];
        for p in start..n {
            let row = (p - start) * row_words;
            if p - start < width {
                bits[row + (p - start) / 64] |= 1 << ((p - start) % 64);
            }
            // Every parent came earlier, so this row is complete.
            let v = topo[p];
            f(
                v,
                Ancestry {
                    start,
                    bits: &bits[row..row + row_words],
                },
            );
            let (done, later) = bits.split_at_mut(row + row_words);
            let own = &done[row..];
            for &s in graph.successors(v) {
                // position[s] > p: a successor comes later.
                let at = (position[s] - start) * row_words - (row + row_words);
                for (dst, src) in later[at..at + row_words].iter_mut().zip(own) {
                    *dst |= *src;
                }
            }
        }
        start += width;
    }
}

/// `sum += x`, `x` no wider than `sum`. The carry out of the top limb is
/// always zero: sums never exceed the total the width was chosen for.
fn add_limbs(sum: &mut [u64], x: &[u64]) {
    let mut carry = false;
    for (s, &x) in sum.iter_mut().zip(x) {
        let (a, c1) = s.overflowing_add(x);
        let (b, c2) = a.overflowing_add(u64::from(carry));
        *s = b;
        carry = c1 || c2;
    }
    if carry {
        for s in sum.iter_mut().skip(x.len()) {
            let (a, c) = s.overflowing_add(1);
            *s = a;
            if !c {
                break;
            }
        }
    }
}

/// Ancestor positions per block: 2048 bits is 256 bytes a row, so a
/// 100 000-path closure needs 25 MB at a time, not 1.25 GB.
const BLOCK_BITS: usize = 2048;

/// A natural number of any size: little-endian `u64` limbs, no zero limb
/// at the top (so zero is no limbs and longer means larger).
///
/// Hand-written rather than a bigint crate: path counts only need `+` and
/// comparison, and a crate (num-bigint pulls in num-integer and num-traits)
/// would add dependencies for 30 lines.
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

impl BigNat {
    fn add_assign(&mut self, other: &Self) {
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

    /// The scores as [`BigNat`]s.
    fn fast_scores(graph: &Graph) -> Vec<BigNat> {
        fast_scores_in_blocks(graph, BLOCK_BITS)
    }

    fn fast_scores_in_blocks(graph: &Graph, block: usize) -> Vec<BigNat> {
        let scores = scores_in_blocks(graph, &graph.topological_order().unwrap(), block);
        (0..graph.len())
            .map(|v| {
                let mut limbs = scores.get(v).to_vec();
                while limbs.last() == Some(&0) {
                    limbs.pop();
                }
                BigNat(limbs)
            })
            .collect()
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
                popularity
                    .entry(p)
                    .or_default()
                    .add_assign(&BigNat(vec![1]));
                let sub = match memo.get(&p) {
                    Some(sub) => sub.clone(),
                    None => {
                        let sub = contest(graph, graph.successors(p), memo);
                        memo.insert(p, sub.clone());
                        sub
                    }
                };
                for (q, mut v) in sub {
                    v.add_assign(&BigNat(vec![1]));
                    popularity.entry(q).or_default().add_assign(&v);
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
        assert_eq!(fast_scores(&graph), [1, 2, 3, 4, 5, 9, 2].map(big));
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
        // ids by size: r1, lib, r2. Each root gives lib 1 + 1 (as A → B
        // gives B 2 upstream), and W(r1) + W(r2) + W(lib) = 1 + 1 + 2.
        assert_eq!(fast_scores(&graph), [1, 4, 1].map(big));
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
    fn scores_past_128_bits_are_exact() {
        // 140 levels: W reaches 2¹³⁹, sums past 2¹⁴⁰.
        let (base, graph) = lattice(140);
        let fast = fast_scores(&graph);
        assert_eq!(fast, naive_scores(&graph));
        assert!(fast.iter().any(|s| s.0.len() == 3));
        // The deepest level is the most popular.
        let order = popularity_contest(&graph, &base).unwrap();
        assert!(base.path(order[0].vertices()[0]).name().starts_with("l139"));
    }

    #[test]
    fn scores_past_64_bits_are_exact() {
        let (_, graph) = lattice(70);
        let fast = fast_scores(&graph);
        assert_eq!(fast, naive_scores(&graph));
        assert!(fast.iter().any(|s| s.0.len() == 2));
    }

    #[test]
    fn a_random_closure_past_128_bits() {
        // 1500 paths, each referencing up to 12 earlier ones: the path counts
        // need several limbs, and several blocks give the same sums.
        let nodes = crate::plan::tests::generated_closure(1500, 9);
        let (_, graph) = crate::plan::tests::build(&nodes);
        let naive = naive_scores(&graph);
        assert!(naive.iter().any(|s| s.0.len() > 2));
        assert_eq!(fast_scores(&graph), naive);
        assert_eq!(fast_scores_in_blocks(&graph, 64), naive);
        assert_eq!(fast_scores_in_blocks(&graph, 100), naive);
    }

    #[test]
    fn limb_addition_carries() {
        let mut sum = [u64::MAX, u64::MAX, 0];
        add_limbs(&mut sum, &[1, 0, 0]);
        assert_eq!(sum, [0, 0, 1]);
        add_limbs(&mut sum, &[u64::MAX, 1, 2]);
        assert_eq!(sum, [u64::MAX, 1, 3]);
    }

    #[test]
    fn bignat_addition_and_order() {
        let mut x = big(u128::from(u64::MAX));
        x.add_assign(&big(1));
        assert_eq!(x, big(1 << 64));
        let mut y = big(u128::MAX);
        y.add_assign(&big(u128::MAX));
        assert_eq!(y.0, [u64::MAX - 1, u64::MAX, 1]);
        assert!(y > big(u128::MAX));
        assert!(big(0) < big(1));
        assert!(big(1 << 64) > big(u128::from(u64::MAX)));
        assert_eq!(big(0), BigNat::default());
    }

    proptest! {
        #[test]
        fn bignat_matches_u128(a in any::<u128>(), b in any::<u128>()) {
            let mut x = big(a >> 1);
            x.add_assign(&big(b >> 1));
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
            let naive = naive_scores(&graph);
            prop_assert_eq!(&fast_scores(&graph), &naive);
            // Several ancestor blocks give the same sums.
            prop_assert_eq!(&fast_scores_in_blocks(&graph, 5), &naive);
            let keys: Vec<String> = graph.vertices().iter().map(|&id| tie_key(base.path(id).as_str())).collect();
            prop_assert_eq!(popularity_order(&graph, &base).unwrap(), naive_order(&naive, &keys));
        }
    }
}
