//! The auto-layer strategy: a closure → at most `budget` layers (reference
//! §C.6, nixpkgs' `auto-layer.py`, the `dockerAutoLayer` default of newer
//! nixpkgs).
//!
//! Each path is attributed a set of *primary* paths, which identifies its
//! layer. Primaries are taken largest narSize first; a new primary `P`
//! takes itself and its dependencies, except that a dependency keeps a
//! primary that is itself a dependency of `P`, and loses the primaries
//! that depend on `P`. The first primary that would make more distinct
//! sets than the budget ends the search, and the previous attribution
//! stands. Paths with the same set form one layer, paths sorted by (name,
//! hash); layers are ordered by the narSize of their closure.
//!
//! As nixpkgs does, excluded paths take part in everything (they have
//! users, can be primaries, count towards the budget and closure sizes)
//! and are only dropped from the final layers, empty layers with them.
//!
//! nixpkgs breaks ties between layers of equal closure size by Python's
//! set order, which depends on the hash seed; here they are ordered by
//! their sorted path lists, so the plan is the same on every run.

use std::collections::{HashMap, HashSet};

use crate::nix::StorePath;

use super::Error;

/// Plans the layers of the closure `nodes` (`(path, narSize, references)`,
/// self-references allowed, every reference a node), leaving out the
/// `exclude` paths, in at most `budget` layers.
///
/// # Errors
/// When `budget` is 0, a path appears twice, or a reference is not a node.
pub(super) fn auto_layers<'a, I>(
    nodes: I,
    exclude: &[StorePath],
    budget: usize,
) -> Result<Vec<Vec<StorePath>>, Error>
where
    I: IntoIterator<Item = (&'a StorePath, u64, &'a [StorePath])>,
{
    if budget == 0 {
        return Err(Error::NoLayers);
    }
    let nodes: Vec<(&StorePath, u64, &[StorePath])> = nodes.into_iter().collect();
    let mut ids: HashMap<&StorePath, usize> = HashMap::with_capacity(nodes.len());
    for (id, (path, ..)) in nodes.iter().enumerate() {
        if ids.insert(path, id).is_some() {
            return Err(Error::DuplicatePath {
                path: (*path).clone(),
            });
        }
    }
    let n = nodes.len();
    let mut references: Vec<Vec<usize>> = Vec::with_capacity(n);
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (id, (path, _, refs)) in nodes.iter().enumerate() {
        let mut targets = Vec::with_capacity(refs.len());
        for r in *refs {
            let Some(&target) = ids.get(r) else {
                return Err(Error::UnknownReference {
                    referrer: (*path).clone(),
                    reference: r.clone(),
                });
            };
            targets.push(target);
            users[target].push(id);
        }
        references.push(targets);
    }
    let sizes: Vec<u64> = nodes.iter().map(|(_, size, _)| *size).collect();

    let split = attribute(&sizes, &references, &users, budget, DEPENDENCY_BITS);

    // One layer per distinct set, in order of first appearance for now.
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut group_of: HashMap<usize, usize> = HashMap::new();
    for (node, &set) in split.iter().enumerate() {
        let g = *group_of.entry(set).or_insert_with(|| {
            groups.push(Vec::new());
            groups.len() - 1
        });
        groups[g].push(node);
    }
    // nixpkgs' `path_key`: the path split at its first `-` into hash and
    // name, compared by (name, hash); split once per path, not per
    // comparison.
    let keys: Vec<(&str, &str)> = nodes
        .iter()
        .map(|(path, ..)| {
            let (hash, name) = path.as_str().split_once('-').unwrap_or((path.as_str(), ""));
            (name, hash)
        })
        .collect();
    for paths in &mut groups {
        paths.sort_by(|&a, &b| keys[a].cmp(&keys[b]));
    }
    let closure_sizes = closure_sizes(&groups, &references, &sizes);
    let mut layers: Vec<(u128, Vec<&str>, Vec<usize>)> = groups
        .into_iter()
        .zip(closure_sizes)
        .map(|(paths, closure_size)| {
            let mut sorted: Vec<&str> = paths.iter().map(|&id| nodes[id].0.as_str()).collect();
            sorted.sort_unstable();
            (closure_size, sorted, paths)
        })
        .collect();
    // Dependencies first: a layer's closure includes its dependencies'.
    layers.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));

    let excluded: HashSet<&StorePath> = exclude.iter().collect();
    Ok(layers
        .into_iter()
        .map(|(_, _, paths)| {
            paths
                .into_iter()
                .map(|id| nodes[id].0)
                .filter(|p| !excluded.contains(p))
                .cloned()
                .collect::<Vec<_>>()
        })
        .filter(|layer| !layer.is_empty())
        .collect())
}

/// The primary-path attribution: for each node, the id of its set of
/// primaries (interned, so equal sets have equal ids).
fn attribute(
    sizes: &[u64],
    references: &[Vec<usize>],
    users: &[Vec<usize>],
    budget: usize,
    max_bits: usize,
) -> Vec<usize> {
    let n = sizes.len();
    // Interned sets of primaries (sorted node ids); set 0 is the empty set.
    let mut sets: Vec<Vec<usize>> = vec![Vec::new()];
    let mut interned: HashMap<Vec<usize>, usize> = HashMap::from([(Vec::new(), 0)]);
    let mut members: Vec<usize> = vec![n];
    let mut distinct = usize::from(n > 0);
    let mut split: Vec<usize> = vec![0; n];

    // nixpkgs sorts ascending by narSize (stable) and pops from the end:
    // largest first, and among equal sizes the later node (the greater
    // path, as closures are sorted by path) first.
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&id| sizes[id]);

    // Per old set, its new set under the current primary; NONE when not
    // worked out yet.
    const NONE: usize = usize::MAX;
    let mut memo: Vec<usize> = Vec::new();
    let mut is_dep = vec![false; n];
    let mut is_user = vec![false; n];
    // Only primaries are in sets, so "p depends on P" is only asked of
    // earlier primaries: their dependencies, kept as bitsets while they
    // fit in DEPENDENCY_BITS bytes, answer it without walking everything
    // that depends on P (in a 5,000-deep chain, most of the closure).
    let words = n.div_ceil(64);
    let mut dependency_bits: Vec<u64> = Vec::new();
    let mut row_of: Vec<usize> = vec![NONE; n];
    let mut keep_bits = true;
    for &primary in order.iter().rev() {
        let deps = reach(primary, references, &mut is_dep);
        keep_bits &= (dependency_bits.len() + words) * 8 <= max_bits;
        let dependents = if keep_bits {
            let row = dependency_bits.len() / words.max(1);
            dependency_bits.resize(dependency_bits.len() + words, 0);
            for &d in &deps {
                dependency_bits[row * words + d / 64] |= 1 << (d % 64);
            }
            row_of[primary] = row;
            Vec::new()
        } else {
            reach(primary, users, &mut is_user)
        };
        // Whether earlier primary `p` depends on P.
        let depends_on_primary = |p: usize| match row_of[p] {
            row if keep_bits && row != NONE => {
                dependency_bits[row * words + primary / 64] & (1 << (primary % 64)) != 0
            }
            _ => is_user[p],
        };

        // A dependency's new set depends only on its old set (and on P),
        // so each distinct old set is worked out and interned once per
        // primary, not once per dependency: a primary over a 10,000-path
        // closure has thousands of dependencies but only as many old sets
        // as there are layers so far.
        let mut changes: Vec<(usize, usize)> = Vec::with_capacity(deps.len() + 1);
        changes.push((
            primary,
            intern(&mut sets, &mut interned, &mut members, vec![primary]),
        ));
        memo.resize(sets.len(), NONE);
        let mut memoised: Vec<usize> = Vec::new();
        for &d in &deps {
            let old = split[d];
            if memo[old] == NONE {
                let mut set: Vec<usize> = sets[old]
                    .iter()
                    .copied()
                    .filter(|&p| !depends_on_primary(p))
                    .collect();
                // A dependency stays with a primary that P itself depends on.
                if !set.iter().any(|&p| is_dep[p]) {
                    if let Err(at) = set.binary_search(&primary) {
                        set.insert(at, primary);
                    }
                }
                memo[old] = intern(&mut sets, &mut interned, &mut members, set);
                memoised.push(old);
            }
            changes.push((d, memo[old]));
        }
        for old in memoised {
            memo[old] = NONE;
        }

        // Apply, counting distinct sets; undo if over budget.
        let mut undo: Vec<(usize, usize)> = Vec::with_capacity(changes.len());
        for (node, id) in changes {
            let old = split[node];
            undo.push((node, old));
            move_node(&mut split, &mut members, &mut distinct, node, id);
        }
        for &d in &deps {
            is_dep[d] = false;
        }
        for &u in &dependents {
            is_user[u] = false;
        }
        if distinct > budget {
            for (node, old) in undo.into_iter().rev() {
                move_node(&mut split, &mut members, &mut distinct, node, old);
            }
            break;
        }
    }
    split
}

/// The most bytes of primaries' dependency bitsets [`attribute`] keeps;
/// past them it walks the dependents of each primary instead.
const DEPENDENCY_BITS: usize = 8 << 20;

/// The id of `set` (sorted node ids), added to `sets` (with no member
/// yet) when new.
fn intern(
    sets: &mut Vec<Vec<usize>>,
    interned: &mut HashMap<Vec<usize>, usize>,
    members: &mut Vec<usize>,
    set: Vec<usize>,
) -> usize {
    if let Some(&id) = interned.get(&set) {
        return id;
    }
    sets.push(set.clone());
    members.push(0);
    interned.insert(set, sets.len() - 1);
    sets.len() - 1
}

/// Moves `node` into set `to`, keeping the member counts and the number of
/// non-empty sets.
fn move_node(
    split: &mut [usize],
    members: &mut [usize],
    distinct: &mut usize,
    node: usize,
    to: usize,
) {
    let from = split[node];
    if from == to {
        return;
    }
    members[from] -= 1;
    if members[from] == 0 {
        *distinct -= 1;
    }
    if members[to] == 0 {
        *distinct += 1;
    }
    members[to] += 1;
    split[node] = to;
}

/// Everything reachable from `start` along `edges`, `start` excluded
/// (nixpkgs' `dependencies`), marked in `mark` and returned.
fn reach(start: usize, edges: &[Vec<usize>], mark: &mut [bool]) -> Vec<usize> {
    let mut found = Vec::new();
    let mut todo = vec![start];
    while let Some(v) = todo.pop() {
        for &next in &edges[v] {
            if next != start && !mark[next] {
                mark[next] = true;
                found.push(next);
                todo.push(next);
            }
        }
    }
    found
}

/// nixpkgs' `closureSize` of each layer: Σ narSize over the closure of
/// its paths, as a `u128`, so no sum of `u64` sizes can overflow.
///
/// One pass over the graph in topological order for up to 128 layers at
/// once (each node carries the set of layers that reach it, as the bits of
/// a `u128`), rather than one walk of the graph per layer: a hundred walks
/// over the 100,000 references of a 10,000-path closure add up.
fn closure_sizes(groups: &[Vec<usize>], references: &[Vec<usize>], sizes: &[u64]) -> Vec<u128> {
    let Some(topo) = referrers_first(references) else {
        // A cycle (no closure has one, but the input is not checked for
        // it here): a walk per layer, which any graph allows.
        return groups
            .iter()
            .map(|paths| closure_size(paths, references, sizes))
            .collect();
    };
    let mut totals = vec![0u128; groups.len()];
    let mut reached = vec![0u128; sizes.len()];
    for (chunk, groups) in groups.chunks(128).enumerate() {
        reached.fill(0);
        for (bit, paths) in groups.iter().enumerate() {
            for &p in paths {
                reached[p] |= 1 << bit;
            }
        }
        for &v in &topo {
            let by = reached[v];
            if by != 0 {
                for &next in &references[v] {
                    reached[next] |= by;
                }
            }
        }
        for (v, &by) in reached.iter().enumerate() {
            let mut bits = by;
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                totals[chunk * 128 + bit] += u128::from(sizes[v]);
                bits &= bits - 1;
            }
        }
    }
    totals
}

/// The nodes with every referrer before its references (Kahn's algorithm,
/// self-references ignored), or `None` when the references form a cycle.
fn referrers_first(references: &[Vec<usize>]) -> Option<Vec<usize>> {
    let mut in_degree = vec![0usize; references.len()];
    for (v, targets) in references.iter().enumerate() {
        for &t in targets {
            if t != v {
                in_degree[t] += 1;
            }
        }
    }
    let mut order: Vec<usize> = (0..references.len())
        .filter(|&v| in_degree[v] == 0)
        .collect();
    let mut next = 0;
    while let Some(&v) = order.get(next) {
        next += 1;
        for &t in &references[v] {
            if t != v {
                in_degree[t] -= 1;
                if in_degree[t] == 0 {
                    order.push(t);
                }
            }
        }
    }
    (order.len() == references.len()).then_some(order)
}

/// Σ narSize over the closure of `paths` (nixpkgs' `closureSize` of a
/// layer). A `u128`, so no sum of `u64` sizes can overflow.
fn closure_size(paths: &[usize], references: &[Vec<usize>], sizes: &[u64]) -> u128 {
    let mut seen = vec![false; sizes.len()];
    let mut todo: Vec<usize> = Vec::new();
    let mut total = 0u128;
    for &p in paths {
        if !seen[p] {
            seen[p] = true;
            todo.push(p);
        }
    }
    while let Some(v) = todo.pop() {
        total += u128::from(sizes[v]);
        for &next in &references[v] {
            if !seen[next] {
                seen[next] = true;
                todo.push(next);
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::plan::graph::tests::store_path;

    /// Runs the strategy on `(name, narSize, references by index)`, with
    /// path `i` hashed from `i`; layers as names.
    fn plan(nodes: &[(&str, u64, &[usize])], exclude: &[usize], budget: usize) -> Vec<Vec<String>> {
        let (paths, refs) = paths_and_refs(nodes);
        let exclude: Vec<StorePath> = exclude.iter().map(|&i| paths[i].clone()).collect();
        auto_layers(
            paths
                .iter()
                .zip(nodes)
                .zip(&refs)
                .map(|((p, n), r)| (p, n.1, r.as_slice())),
            &exclude,
            budget,
        )
        .unwrap()
        .into_iter()
        .map(|l| l.iter().map(|p| p.name().to_owned()).collect())
        .collect()
    }

    fn paths_and_refs(nodes: &[(&str, u64, &[usize])]) -> (Vec<StorePath>, Vec<Vec<StorePath>>) {
        let paths: Vec<StorePath> = nodes
            .iter()
            .enumerate()
            .map(|(i, (name, ..))| store_path(i as u64, name))
            .collect();
        let refs = nodes
            .iter()
            .map(|(_, _, r)| r.iter().map(|&i| paths[i].clone()).collect())
            .collect();
        (paths, refs)
    }

    /// The worked example of reference §C.6, limit 3:
    ///
    /// ```text
    /// cust(1) ──► app(100) ──► libA(50) ──► glibc(30)
    ///    │            └──────► libB(20) ──► glibc
    ///    └──────► tool(40) ───────────────► glibc
    /// ```
    ///
    /// app takes everything below it; libA then takes glibc; tool would
    /// make {tool} and {libA, tool}, five sets, so the search stops there.
    #[test]
    fn worked_example() {
        let nodes: &[(&str, u64, &[usize])] = &[
            ("app", 100, &[1, 2]),
            ("libA", 50, &[3]),
            ("libB", 20, &[3]),
            ("glibc", 30, &[]),
            ("tool", 40, &[3]),
            ("cust", 1, &[0, 4]),
        ];
        assert_eq!(
            plan(nodes, &[5], 3),
            [vec!["glibc", "libA"], vec!["app", "libB"], vec!["tool"]]
        );
        // cust is excluded but still counted: with it kept, the same
        // layers, cust with tool.
        assert_eq!(
            plan(nodes, &[], 3),
            [
                vec!["glibc", "libA"],
                vec!["app", "libB"],
                vec!["cust", "tool"]
            ]
        );
        // A larger budget lets tool in: glibc is shared by libA and tool
        // (closure sizes 30, 70, 80, 200); libB would make a sixth set.
        assert_eq!(
            plan(nodes, &[5], 5),
            [
                vec!["glibc"],
                vec!["tool"],
                vec!["libA"],
                vec!["app", "libB"]
            ]
        );
    }

    #[test]
    fn one_layer_holds_everything() {
        let nodes: &[(&str, u64, &[usize])] = &[("a", 3, &[1]), ("b", 2, &[]), ("c", 1, &[])];
        // a → {a} and b → {a}, c stays in {}: two sets, over budget.
        assert_eq!(plan(nodes, &[], 1), [vec!["a", "b", "c"]]);
        assert_eq!(plan(&[], &[], 1), Vec::<Vec<String>>::new());
    }

    #[test]
    fn equal_sizes_take_the_greater_path_first() {
        // Same size, no edges: the later node is the first primary, so
        // with budget 2 it gets its own layer.
        let nodes: &[(&str, u64, &[usize])] = &[("x", 5, &[]), ("y", 5, &[]), ("z", 5, &[])];
        let layers = plan(nodes, &[], 2);
        assert_eq!(layers, [vec!["z"], vec!["x", "y"]]);
    }

    #[test]
    fn equal_closure_sizes_are_ordered_by_path() {
        let nodes: &[(&str, u64, &[usize])] = &[("b", 5, &[]), ("a", 5, &[]), ("c", 5, &[])];
        let (paths, _) = paths_and_refs(nodes);
        let mut by_path: Vec<&StorePath> = paths.iter().collect();
        by_path.sort();
        let expected: Vec<Vec<String>> =
            by_path.iter().map(|p| vec![p.name().to_owned()]).collect();
        assert_eq!(plan(nodes, &[], 10), expected);
    }

    #[test]
    fn self_references_are_harmless() {
        let nodes: &[(&str, u64, &[usize])] = &[("a", 3, &[0, 1]), ("b", 2, &[1])];
        assert_eq!(plan(nodes, &[], 5), [vec!["b"], vec!["a"]]);
    }

    #[test]
    fn bad_input_is_an_error() {
        let a = store_path(1, "a");
        let b = store_path(2, "b");
        let refs = [b.clone()];
        assert!(matches!(
            auto_layers([(&a, 1, &refs[..])], &[], 3),
            Err(Error::UnknownReference { .. })
        ));
        assert!(matches!(
            auto_layers([(&a, 1, &[][..]), (&a, 1, &[][..])], &[], 3),
            Err(Error::DuplicatePath { .. })
        ));
        assert!(matches!(
            auto_layers([(&a, 1, &[][..])], &[], 0),
            Err(Error::NoLayers)
        ));
    }

    #[test]
    fn closure_sizes_of_a_cycle_fall_back_to_walks() {
        let references = vec![vec![1], vec![0, 2], vec![]];
        let sizes = [1, 10, 100];
        assert_eq!(
            closure_sizes(&[vec![0], vec![2]], &references, &sizes),
            [111, 100]
        );
    }

    proptest! {
        /// Primaries' dependency bitsets and walks of the dependents give
        /// the same attribution, and so do bitsets that run out half way.
        #[test]
        fn dependency_bits_and_walks_agree(
            nodes in crate::plan::tests::dag_strategy(60),
            budget in 1usize..12,
        ) {
            let n = nodes.len();
            let references: Vec<Vec<usize>> = nodes.iter().map(|(_, _, r)| r.clone()).collect();
            let mut users = vec![Vec::new(); n];
            for (v, targets) in references.iter().enumerate() {
                for &t in targets {
                    users[t].push(v);
                }
            }
            let sizes: Vec<u64> = nodes.iter().map(|(_, s, _)| *s).collect();
            let bits = attribute(&sizes, &references, &users, budget, DEPENDENCY_BITS);
            let walks = attribute(&sizes, &references, &users, budget, 0);
            let half = attribute(&sizes, &references, &users, budget, n.div_ceil(64) * 8 * 3);
            // Set ids are interned in the same order, so equal.
            prop_assert_eq!(&bits, &walks);
            prop_assert_eq!(&bits, &half);
        }

        /// The closure sizes of all layers in one pass are those of a walk
        /// per layer, for any partition of a random DAG into layers.
        #[test]
        fn closure_sizes_match_a_walk_per_layer(
            nodes in crate::plan::tests::dag_strategy(60),
            groups in 1usize..200,
            seed: u64,
        ) {
            let references: Vec<Vec<usize>> = nodes.iter().map(|(_, _, r)| r.clone()).collect();
            let sizes: Vec<u64> = nodes.iter().map(|(_, s, _)| *s).collect();
            // Node i in group (i * seed) mod groups; empty groups kept.
            let mut layers = vec![Vec::new(); groups];
            for i in 0..nodes.len() {
                let g = usize::try_from((i as u64).wrapping_mul(seed | 1) % groups as u64).unwrap();
                layers[g].push(i);
            }
            let want: Vec<u128> = layers
                .iter()
                .map(|paths| closure_size(paths, &references, &sizes))
                .collect();
            prop_assert_eq!(closure_sizes(&layers, &references, &sizes), want);
        }
    }

    proptest! {
        /// Random DAGs with several roots, diamonds and self-references:
        /// every kept path in exactly one layer, no empty layer, within
        /// budget, and the same plan twice.
        #[test]
        fn invariants(
            nodes in crate::plan::tests::dag_strategy(40),
            budget in 1usize..12,
            exclude in proptest::collection::vec(any::<proptest::sample::Index>(), 0..3),
        ) {
            let view: Vec<(&str, u64, &[usize])> =
                nodes.iter().map(|(n, s, r)| (*n, *s, r.as_slice())).collect();
            let (paths, refs) = paths_and_refs(&view);
            let exclude: Vec<StorePath> =
                exclude.iter().map(|i| paths[i.index(paths.len())].clone()).collect();
            let run = || auto_layers(
                paths.iter().zip(&view).zip(&refs).map(|((p, n), r)| (p, n.1, r.as_slice())),
                &exclude,
                budget,
            ).unwrap();
            let layers = run();
            prop_assert!(layers.len() <= budget);
            let mut seen = BTreeSet::new();
            for layer in &layers {
                prop_assert!(!layer.is_empty());
                for p in layer {
                    prop_assert!(seen.insert(p.clone()));
                }
            }
            let kept: BTreeSet<StorePath> =
                paths.iter().filter(|p| !exclude.contains(p)).cloned().collect();
            prop_assert_eq!(seen, kept);
            prop_assert_eq!(run(), layers);
        }
    }
}
