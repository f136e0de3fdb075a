//! Closure sources → one [`ClosureGraph`].
//!
//! Every source (SPEC §2) yields the same type: the store paths of a closure
//! with their NAR hash, NAR size and references. The graph is sorted by
//! path, references are sorted and deduplicated, every reference is a node
//! of the graph (a dangling reference is an error naming its input), and
//! references form no cycle other than a path referring to itself.
//!
//! One submodule per format turns its input into a list of [`PathInfo`];
//! [`ClosureGraph::new`] checks the invariants above and [`read_closure`]
//! then keeps the closure of the roots:
//!
//! - [`Source::NixStore`]: `nix_store` runs `nix-store` and parses `--dump-db`;
//! - [`Source::Registration`]: `registration` (closureInfo, `--dump-db`);
//! - [`Source::Graph`]: `graph_json` (exportReferencesGraph, structured attrs);
//! - [`Source::PathInfo`]: `path_info` (`nix path-info --json --recursive`);
//! - [`Source::Dot`]: `dot` (`nix-store --query --graph`), sized by
//!   [`Store::nar_size`](crate::store::Store::nar_size);
//! - [`Source::BinaryCache`]: the signed narinfos of a binary cache
//!   ([`BinaryCache::closure`]), read through [`read_closure_in`].

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::nix::{NarHash, StoreDir, StorePath, StorePathError};
use crate::store::binary_cache::CacheError;
use crate::store::{AnyStore, BinaryCache, Store as _};

/// The local store, which [`read_closure`] asks (`nix-store`, DOT sizes).
#[doc(no_inline)]
pub use crate::store::StoreLocation;

/// The largest closure file (registration, graph JSON, path-info JSON,
/// DOT) read: a closure of 100 000 paths is well under 100 MiB in any of
/// them.
pub const CLOSURE_FILE_LIMIT: u64 = 1 << 30;

mod dot;
mod graph_json;
mod json;
mod nix_store;
mod path_info;
mod registration;

pub use nix_store::NixStoreError;

/// One store path of a closure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathInfo {
    /// The store path.
    pub path: StorePath,
    /// sha256 of its NAR serialisation; `None` when the source does not carry it (DOT).
    pub nar_hash: Option<NarHash>,
    /// Size of its NAR serialisation in bytes.
    pub nar_size: u64,
    /// The store paths it references, sorted, the path itself included when it refers to itself.
    pub references: Vec<StorePath>,
}

impl From<&crate::nix::narinfo::NarInfo> for PathInfo {
    /// A binary cache's view of a store path: its (verified) narinfo.
    fn from(info: &crate::nix::narinfo::NarInfo) -> Self {
        Self {
            path: info.store_path.clone(),
            nar_hash: Some(info.nar_hash),
            nar_size: info.nar_size,
            references: info.references.clone(),
        }
    }
}

/// A closure: store paths sorted by path, each reference a node of the graph.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClosureGraph {
    paths: Vec<PathInfo>,
}

/// Where the reference graph comes from (`closure.source`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// Ask the local store with `nix-store`.
    NixStore,
    /// A `registration` file (closureInfo, `nix-store --dump-db`).
    Registration(PathBuf),
    /// exportReferencesGraph JSON (`__structuredAttrs`).
    Graph(PathBuf),
    /// `nix path-info --json --recursive` output.
    PathInfo(PathBuf),
    /// `nix-store --query --graph` output.
    Dot(PathBuf),
    /// The narinfos of the binary cache the build reads
    /// ([`AnyStore::BinaryCache`]): each signed, its `References` followed.
    BinaryCache,
}

/// Why a closure could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading an input file failed.
    #[error("failed to read `{}`", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An input file is malformed at a line.
    #[error("{}:{line}: {message}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong there.
        message: String,
    },
    /// A root is not in the graph or the store.
    #[error("root `{root}` is not in the closure read from {input}")]
    MissingRoot {
        /// The root.
        root: StorePath,
        /// The input it was looked up in.
        input: String,
    },
    /// A reference names a path the graph does not have.
    #[error(
        "`{referrer}` references `{reference}`, which is not in the closure read from {input}"
    )]
    DanglingReference {
        /// The path holding the reference.
        referrer: StorePath,
        /// The missing path.
        reference: String,
        /// The input.
        input: String,
    },
    /// One path is listed twice with different hashes, sizes or references.
    #[error(
        "`{path}` is listed more than once in {input}, with different hashes, sizes or references"
    )]
    ConflictingEntries {
        /// The path listed twice.
        path: StorePath,
        /// The input.
        input: String,
    },
    /// References form a cycle through more than one path, which no Nix
    /// store can hold: the input is corrupt or was edited by hand.
    #[error("reference cycle in {input}: {}", Cycle(cycle))]
    ReferenceCycle {
        /// The paths of the cycle, each referencing the next, the last referencing the first.
        cycle: Vec<StorePath>,
        /// The input.
        input: String,
    },
    /// The NAR size of a path could not be computed from the store (DOT files carry no sizes).
    #[error("failed to compute the NAR size of `{path}` from `{}`", disk_path.display())]
    NarSize {
        /// The store path.
        path: StorePath,
        /// Where it was read on this machine.
        disk_path: PathBuf,
        /// The cause.
        #[source]
        source: crate::store::Error,
    },
    /// A binary cache could not give the closure (the error names the
    /// store path and the URL).
    #[error(transparent)]
    BinaryCache(#[from] CacheError),
    /// A source that needs another kind of store than the build reads.
    #[error("closure source {source_name} cannot read {store}")]
    WrongStore {
        /// The source, e.g. `nix-store`.
        source_name: &'static str,
        /// The store, e.g. `a binary cache`.
        store: &'static str,
    },
    /// Running `nix-store` failed.
    #[error("`{command}` failed")]
    NixStore {
        /// The command line.
        command: String,
        /// What it printed or why it did not run, usually a [`NixStoreError`].
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Displays a cycle as `a` → `b` → `a`.
struct Cycle<'a>(&'a [StorePath]);

impl fmt::Display for Cycle<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in self.0 {
            write!(f, "`{p}` → ")?;
        }
        match self.0.first() {
            Some(first) => write!(f, "`{first}`"),
            None => Ok(()),
        }
    }
}

/// How errors name a graph built by [`ClosureGraph::new`].
const GIVEN_PATHS: &str = "the given paths";

impl ClosureGraph {
    /// Builds a graph from path entries in any order: sorts paths and
    /// references, merges entries listed twice when they are identical.
    ///
    /// # Errors
    /// [`Error::ConflictingEntries`] when one path has two different entries,
    /// [`Error::DanglingReference`] when a reference is not an entry,
    /// [`Error::ReferenceCycle`] when references form a cycle other than a
    /// self-reference.
    pub fn new(paths: Vec<PathInfo>) -> Result<Self, Error> {
        Self::from_input(paths, GIVEN_PATHS)
    }

    /// [`ClosureGraph::new`], naming `input` in errors.
    fn from_input(paths: Vec<PathInfo>, input: &str) -> Result<Self, Error> {
        Ok(Self::checked(paths, input)?.0)
    }

    /// [`ClosureGraph::from_input`], and the references as indices into
    /// the paths, worked out once for the checks and the walk from the
    /// roots (a reference is found by binary search: 100,000 of them in a
    /// 10,000-path closure).
    fn checked(mut paths: Vec<PathInfo>, input: &str) -> Result<(Self, Edges), Error> {
        for info in &mut paths {
            info.references.sort();
            info.references.dedup();
            // A parser's list grew by doubling; the graph keeps it to the end.
            info.references.shrink_to_fit();
        }
        // Sorting puts the entries of one path side by side, so each is
        // compared with the one before it, and the copies are dropped in
        // place (no second list of every entry).
        paths.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(pair) = paths
            .windows(2)
            .find(|pair| pair[0].path == pair[1].path && pair[0] != pair[1])
        {
            return Err(Error::ConflictingEntries {
                path: pair[1].path.clone(),
                input: input.to_owned(),
            });
        }
        paths.dedup_by(|a, b| a.path == b.path);
        // The parser's list grew by doubling too.
        paths.shrink_to_fit();
        let mut graph = Self { paths };
        let edges = graph.edge_indices(input)?;
        check_acyclic(&graph.paths, &edges, input)?;
        graph.share_references(&edges);
        Ok((graph, edges))
    }

    /// Each reference made the very store path of the node it names, its
    /// text shared: a source that parsed each reference on its own (DOT,
    /// narinfos, a caller's entries) no longer holds a copy per referrer.
    fn share_references(&mut self, edges: &Edges) {
        for (i, targets) in edges.iter().enumerate() {
            for (k, &j) in targets.iter().enumerate() {
                let node = self.paths[j].path.clone();
                self.paths[i].references[k] = node;
            }
        }
    }

    /// The references of each path as indices into `paths`.
    ///
    /// # Errors
    /// [`Error::DanglingReference`] for the first reference (in path
    /// order) that is not a node.
    fn edge_indices(&self, input: &str) -> Result<Edges, Error> {
        let index = Index::new(&self.paths);
        self.paths
            .iter()
            .map(|info| {
                info.references
                    .iter()
                    .map(|r| {
                        index.find(r).ok_or_else(|| Error::DanglingReference {
                            referrer: info.path.clone(),
                            reference: r.to_string(),
                            input: input.to_owned(),
                        })
                    })
                    .collect()
            })
            .collect()
    }

    /// The sub-graph of the paths reachable from `roots`, roots included.
    ///
    /// # Errors
    /// [`Error::MissingRoot`] when a root is not in the graph.
    pub fn closure_of(&self, roots: &[StorePath]) -> Result<Self, Error> {
        let input = "the graph";
        let keep = reachable(
            &self.edge_indices(input)?,
            &self.root_indices(roots, input)?,
        );
        Ok(Self {
            paths: self
                .paths
                .iter()
                .zip(keep)
                .filter(|&(_, keep)| keep)
                .map(|(info, _)| info.clone())
                .collect(),
        })
    }

    /// [`ClosureGraph::closure_of`] of a graph read from `input`, whose
    /// `edges` [`ClosureGraph::checked`] gave: the kept entries are moved,
    /// not copied.
    fn into_closure(
        mut self,
        edges: &Edges,
        roots: &[StorePath],
        input: &str,
    ) -> Result<Self, Error> {
        let mut keep = reachable(edges, &self.root_indices(roots, input)?).into_iter();
        self.paths.retain(|_| keep.next().unwrap_or(false));
        self.paths.shrink_to_fit();
        Ok(self)
    }

    fn root_indices(&self, roots: &[StorePath], input: &str) -> Result<Vec<usize>, Error> {
        let index = Index::new(&self.paths);
        roots
            .iter()
            .map(|root| {
                index.find(root).ok_or_else(|| Error::MissingRoot {
                    root: root.clone(),
                    input: input.to_owned(),
                })
            })
            .collect()
    }

    /// The store paths, sorted.
    #[must_use]
    pub fn paths(&self) -> &[PathInfo] {
        &self.paths
    }

    /// The entries, sorted by path.
    #[must_use]
    pub fn into_paths(self) -> Vec<PathInfo> {
        self.paths
    }

    /// The entry for `path`.
    #[must_use]
    pub fn get(&self, path: &str) -> Option<&PathInfo> {
        self.paths
            .binary_search_by(|p| p.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.paths[i])
    }

    /// Number of store paths.
    #[must_use]
    pub fn len(&self) -> usize {
        self.paths.len()
    }

    /// Whether the graph has no path.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// The references of each path of a [`ClosureGraph`], as indices into its paths.
type Edges = Vec<Vec<usize>>;

/// Finds store paths in a closure's sorted paths by the first 8 bytes of
/// their hash part, as a `u64`: a binary search of those numbers, then a
/// comparison of whole paths, instead of a binary search comparing whole
/// paths (whose shared store directory every comparison reads again).
struct Index<'a> {
    paths: &'a [PathInfo],
    /// The key of each path; `None` when the keys are not in the paths'
    /// order (paths of different store directories, which only a caller
    /// of [`ClosureGraph::new`] can mix), and lookups compare whole paths.
    keys: Option<Vec<u64>>,
}

impl<'a> Index<'a> {
    fn new(paths: &'a [PathInfo]) -> Self {
        let keys: Vec<u64> = paths.iter().map(|p| Self::key(&p.path)).collect();
        let sorted = keys.windows(2).all(|w| w[0] <= w[1]);
        Self {
            paths,
            keys: sorted.then_some(keys),
        }
    }

    fn key(path: &StorePath) -> u64 {
        // A valid store path's hash part is 32 characters.
        let mut key = [0u8; 8];
        for (k, b) in key.iter_mut().zip(path.hash_part().bytes()) {
            *k = b;
        }
        u64::from_be_bytes(key)
    }

    fn find(&self, path: &StorePath) -> Option<usize> {
        let Some(keys) = &self.keys else {
            return self.paths.binary_search_by(|p| p.path.cmp(path)).ok();
        };
        // With the keys in the paths' order, the paths sharing a key are
        // side by side, and sorted: a binary search among them too, as
        // many paths may share a key (hashes made up by hand or by an
        // attacker, `0000…`), which a scan would make quadratic.
        let key = Self::key(path);
        let first = keys.partition_point(|&k| k < key);
        let end = first + keys[first..].partition_point(|&k| k == key);
        self.paths[first..end]
            .binary_search_by(|p| p.path.cmp(path))
            .ok()
            .map(|i| first + i)
    }
}

/// Which nodes `starts` reach along `edges`, starts included: one walk
/// with an explicit stack (a chain of 10,000 references deep must not
/// recurse), sharing its marks across the starts so each node is visited
/// once.
fn reachable(edges: &Edges, starts: &[usize]) -> Vec<bool> {
    let mut seen = vec![false; edges.len()];
    let mut todo = Vec::new();
    for &start in starts {
        if !seen[start] {
            seen[start] = true;
            todo.push(start);
        }
        while let Some(node) = todo.pop() {
            for &next in &edges[node] {
                if !seen[next] {
                    seen[next] = true;
                    todo.push(next);
                }
            }
        }
    }
    seen
}

/// Depth-first search with an explicit stack, so a long chain of
/// references cannot overflow the call stack.
///
/// Hand-written rather than petgraph's: its searches that see back edges
/// (`depth_first_search`, `is_cyclic_directed`, `tarjan_scc`) recurse, so
/// a 200,000-path chain overflows the stack, and its iterative `toposort`
/// names one node of a cycle where the error must name the whole cycle,
/// and the same cycle as before (it is output).
fn check_acyclic(paths: &[PathInfo], edges: &Edges, input: &str) -> Result<(), Error> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark = vec![Mark::New; paths.len()];
    // (node, how many of its edges were followed)
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for start in 0..paths.len() {
        if mark[start] != Mark::New {
            continue;
        }
        mark[start] = Mark::Open;
        stack.push((start, 0));
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            let Some(&target) = edges[node].get(*next) else {
                mark[node] = Mark::Done;
                stack.pop();
                continue;
            };
            *next += 1;
            if target == node {
                continue; // self-references are normal in Nix
            }
            match mark[target] {
                Mark::New => {
                    mark[target] = Mark::Open;
                    stack.push((target, 0));
                }
                Mark::Open => {
                    let from = stack.iter().position(|&(n, _)| n == target).unwrap_or(0);
                    let cycle = stack[from..]
                        .iter()
                        .map(|&(n, _)| paths[n].path.clone())
                        .collect();
                    return Err(Error::ReferenceCycle {
                        cycle,
                        input: input.to_owned(),
                    });
                }
                Mark::Done => {}
            }
        }
    }
    Ok(())
}

/// Reads the closure of `roots` from `source`. With an empty `roots`, a
/// file source gives its whole graph and [`Source::NixStore`] an empty one.
///
/// # Errors
/// When the source cannot be read, is malformed, or lacks a root or a
/// reference; see [`Error`].
pub fn read_closure(
    source: &Source,
    store: &StoreLocation,
    roots: &[StorePath],
) -> Result<ClosureGraph, Error> {
    read_closure_in(source, &AnyStore::Local(store.clone()), roots)
}

/// [`read_closure`] from the store the build reads: [`Source::NixStore`]
/// needs the local store, [`Source::BinaryCache`] a binary cache; file
/// sources take the store's directory, and DOT its NAR sizes.
///
/// # Errors
/// As [`read_closure`]; [`Error::BinaryCache`] naming the path and URL;
/// [`Error::WrongStore`] for a source the store cannot serve.
pub fn read_closure_in(
    source: &Source,
    store: &AnyStore,
    roots: &[StorePath],
) -> Result<ClosureGraph, Error> {
    let dir = store.dir();
    let (file, paths) = match source {
        Source::NixStore => match store.local() {
            Some(location) => return nix_store::read(location, roots),
            None => {
                return Err(Error::WrongStore {
                    source_name: "`nix-store`",
                    store: "a binary cache",
                })
            }
        },
        Source::BinaryCache => match store.binary_cache() {
            Some(cache) => return from_binary_cache(cache, roots),
            None => {
                return Err(Error::WrongStore {
                    source_name: "`binary_cache`",
                    store: "the local store",
                })
            }
        },
        Source::Registration(file) => (file, registration::parse(&read(file)?, file, dir)?),
        Source::Graph(file) => (file, graph_json::parse(open(file)?, file, dir)?),
        Source::PathInfo(file) => (file, path_info::parse(open(file)?, file, dir)?),
        Source::Dot(file) => (file, dot::parse(&read(file)?, file, store)?),
    };
    let input = format!("`{}`", file.display());
    let (graph, edges) = ClosureGraph::checked(paths, &input)?;
    if roots.is_empty() {
        Ok(graph)
    } else {
        graph.into_closure(&edges, roots, &input)
    }
}

/// The closure of `roots` from the cache's verified narinfos (fetched
/// concurrently), checked like every other source's graph.
fn from_binary_cache(cache: &BinaryCache, roots: &[StorePath]) -> Result<ClosureGraph, Error> {
    let paths = cache
        .closure(roots)?
        .iter()
        .map(|info| PathInfo::from(&**info))
        .collect();
    ClosureGraph::from_input(paths, &format!("binary cache `{}`", cache.url()))
}

/// A closure file, whole: bounded, so `/dev/zero` or a FIFO ends.
fn read(file: &Path) -> Result<Vec<u8>, Error> {
    crate::input::read_bounded(file, CLOSURE_FILE_LIMIT).map_err(|source| Error::Io {
        path: file.to_owned(),
        source,
    })
}

/// The store paths one input has named so far, so that a path named again
/// (in every referrer's references, and as its own entry) shares the text
/// of the first [`StorePath`] read rather than holding a copy: in a closure
/// file each path is named about seven times, and those copies were most of
/// the memory a big closure took (issue 15). A text seen before is also not
/// validated again.
#[derive(Default)]
pub(crate) struct Interner {
    /// Store paths' `Borrow<str>` finds them by their text.
    seen: RefCell<HashSet<StorePath>>,
}

impl Interner {
    /// The store path `text` names (absolute, in `dir`), parsed and
    /// checked only the first time it is seen.
    pub(crate) fn parse(&self, dir: &StoreDir, text: &str) -> Result<StorePath, StorePathError> {
        if let Some(path) = self.seen.borrow().get(text) {
            return Ok(path.clone());
        }
        Ok(self.intern(StorePath::parse(dir, text)?))
    }

    /// `path`, or the equal store path seen before.
    pub(crate) fn intern(&self, path: StorePath) -> StorePath {
        let mut seen = self.seen.borrow_mut();
        if let Some(old) = seen.get(path.as_str()) {
            return old.clone();
        }
        seen.insert(path.clone());
        path
    }
}

/// A closure file to be read piece by piece (the JSON sources), bounded
/// as [`read`] is and buffered.
fn open(file: &Path) -> Result<std::io::BufReader<crate::input::Bounded>, Error> {
    crate::input::open_bounded(file, CLOSURE_FILE_LIMIT)
        .map(std::io::BufReader::new)
        .map_err(|source| Error::Io {
            path: file.to_owned(),
            source,
        })
}

/// Shorthand for [`Error::Malformed`].
fn malformed(file: &Path, line: usize, message: impl Into<String>) -> Error {
    Error::Malformed {
        path: file.to_owned(),
        line,
        message: message.into(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    /// Asserts `result` is [`Error::Malformed`] at line `want` and returns its
    /// message; shared by the parsers' tests.
    #[track_caller]
    pub(crate) fn expect_malformed_at<T: std::fmt::Debug>(
        result: Result<T, Error>,
        want: usize,
    ) -> String {
        match result {
            Err(Error::Malformed { line, message, .. }) => {
                assert_eq!(line, want, "{message}");
                message
            }
            other => panic!("expected Malformed at line {want}, got {other:?}"),
        }
    }

    use super::*;
    use crate::nix::StoreDir;

    /// A valid store path in `/nix/store` whose hash starts with `c` (so
    /// tests can order paths by the letter), named `name`.
    pub(crate) fn sp(c: char, name: &str) -> StorePath {
        let hash: String = std::iter::repeat_n(c, 32).collect();
        StorePath::parse(&StoreDir::default(), &format!("/nix/store/{hash}-{name}"))
            .expect("test store path")
    }

    pub(crate) fn info(path: &StorePath, refs: &[&StorePath]) -> PathInfo {
        PathInfo {
            path: path.clone(),
            nar_hash: None,
            nar_size: 8,
            references: refs.iter().map(|&r| r.clone()).collect(),
        }
    }

    //   a ──▶ b ──▶ c ◀─┐
    //   │           └───┘ (self-reference)
    //   └──▶ d
    //   e (unreachable from a)
    fn sample() -> (ClosureGraph, [StorePath; 5]) {
        let [a, b, c, d, e] = [
            sp('a', "a"),
            sp('b', "b"),
            sp('c', "c"),
            sp('d', "d"),
            sp('f', "e"),
        ];
        let graph = ClosureGraph::new(vec![
            info(&e, &[]),
            info(&c, &[&c]),
            info(&a, &[&d, &b, &d]),
            info(&b, &[&c]),
            info(&d, &[]),
        ])
        .unwrap();
        (graph, [a, b, c, d, e])
    }

    #[test]
    fn new_sorts_paths_and_references() {
        let (g, [a, b, c, d, _]) = sample();
        let order: Vec<&str> = g.paths().iter().map(|p| p.path.name()).collect();
        assert_eq!(order, ["a", "b", "c", "d", "e"]);
        assert_eq!(g.get(a.as_str()).unwrap().references, [b, d]);
        assert_eq!(
            g.get(c.as_str()).unwrap().references,
            std::slice::from_ref(&c)
        );
        assert_eq!(g.len(), 5);
        assert!(!g.is_empty());
    }

    /// Asserts every reference of `paths` holds the text of its node's
    /// store path itself, not a copy: one copy of each path however many
    /// referrers name it (issue 15).
    #[track_caller]
    fn assert_references_shared(paths: &[PathInfo]) {
        let mut refs = 0;
        for info in paths {
            for r in &info.references {
                let node = paths.iter().find(|p| p.path == *r).unwrap();
                assert!(std::ptr::eq(r.as_str(), node.path.as_str()), "{r}");
                refs += 1;
            }
        }
        assert!(refs >= 3, "{refs}");
    }

    #[test]
    fn references_share_their_nodes_text() {
        // Paths made apart, as DOT and narinfos give them: shared by the graph.
        let (g, _) = sample();
        assert_references_shared(g.paths());
        // Closure files: shared as they are parsed, whichever comes first.
        let [a, b, c] = [sp('a', "a"), sp('b', "b"), sp('c', "c")];
        let hash = "sha256:1qlamlcq8xcp7c4w1zy3wcd83srswlhnqx28rpq4803117azyp51";
        let entry = |p: &StorePath, refs: &[&StorePath]| {
            let refs: Vec<String> = refs.iter().map(|r| format!("\"{r}\"")).collect();
            format!(
                r#"{{"path":"{p}","narHash":"{hash}","narSize":8,"references":[{}]}}"#,
                refs.join(",")
            )
        };
        let json = format!(
            "[{},{},{}]",
            entry(&a, &[&b, &c]),
            entry(&b, &[&b, &c]),
            entry(&c, &[&c])
        );
        let dir = StoreDir::default();
        let file = Path::new("graph.json");
        assert_references_shared(&graph_json::parse(json.as_bytes(), file, &dir).unwrap());
        let json = json.replace("/nix/store/", "");
        assert_references_shared(&path_info::parse(json.as_bytes(), file, &dir).unwrap());
        let registration = format!(
            "{a}\n{hash}\n8\n\n2\n{b}\n{c}\n{b}\n{hash}\n8\n\n1\n{c}\n{c}\n{hash}\n8\n\n1\n{c}\n"
        );
        let parsed = registration::parse(registration.as_bytes(), file, &dir).unwrap();
        assert_references_shared(&parsed);
    }

    /// The most heap one call takes at once, counted for the calling thread
    /// only: tests run in parallel, so a process-wide count (dhat's, or
    /// the allocator's statistics) would mix theirs in. Hand-written for
    /// that reason; it counts what `alloc`/`realloc`/`dealloc` are asked.
    mod heap {
        use std::alloc::{GlobalAlloc, Layout, System};
        use std::cell::Cell;

        thread_local! {
            // `const` and without `Drop`: usable inside the allocator.
            static LIVE: Cell<isize> = const { Cell::new(0) };
            static PEAK: Cell<isize> = const { Cell::new(0) };
        }

        fn add(bytes: isize) {
            let _ = LIVE.try_with(|live| {
                let now = live.get() + bytes;
                live.set(now);
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
            });
        }

        fn size(layout: Layout) -> isize {
            isize::try_from(layout.size()).unwrap_or(isize::MAX)
        }

        struct Counting;

        // SAFETY: every call is passed on to `System` unchanged.
        unsafe impl GlobalAlloc for Counting {
            unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
                // SAFETY: the caller's contract, passed on.
                let p = unsafe { System.alloc(layout) };
                if !p.is_null() {
                    add(size(layout));
                }
                p
            }
            unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
                // SAFETY: as above.
                let p = unsafe { System.alloc_zeroed(layout) };
                if !p.is_null() {
                    add(size(layout));
                }
                p
            }
            unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
                // SAFETY: as above.
                unsafe { System.dealloc(p, layout) };
                add(-size(layout));
            }
            unsafe fn realloc(&self, p: *mut u8, layout: Layout, new: usize) -> *mut u8 {
                // SAFETY: as above.
                let q = unsafe { System.realloc(p, layout, new) };
                if !q.is_null() {
                    add(isize::try_from(new).unwrap_or(isize::MAX) - size(layout));
                }
                q
            }
        }

        #[global_allocator]
        static COUNTING: Counting = Counting;

        /// `f()`, and the most bytes it held at once beyond those live
        /// when it started (what it returns included).
        pub(super) fn peak<T>(f: impl FnOnce() -> T) -> (T, usize) {
            let start = LIVE.with(Cell::get);
            PEAK.with(|peak| peak.set(start));
            let value = f();
            let peak = PEAK.with(Cell::get) - start;
            (value, usize::try_from(peak).unwrap_or(0))
        }
    }

    /// A closure file of `n` paths shaped like fixtures/scale's (a chain
    /// half the closure deep, a libc everything references, a few far
    /// references, self-references), compact, as exportReferencesGraph.
    fn scale_graph(n: usize) -> (String, StorePath) {
        let dir = StoreDir::default();
        let names: Vec<StorePath> = (0..n)
            .map(|i| {
                let mut hash = [7u8; 20];
                hash[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let base = format!("{}-scale-{i}", crate::nix::base32::encode(&hash));
                StorePath::from_base_name(&dir, &base).unwrap()
            })
            .collect();
        let hash = "sha256:1qlamlcq8xcp7c4w1zy3wcd83srswlhnqx28rpq4803117azyp51";
        let mut text = String::from("[");
        for i in 0..n {
            let mut refs = vec![n - 1, i + 1 + (i * 7919) % (n - i)];
            if i < n / 2 {
                // The chain, and a referrer for each path of the other half.
                refs.extend([i + 1, i + n / 2]);
            }
            if i % 3 == 0 {
                refs.push(i);
            }
            refs.retain(|&r| r < n);
            let refs: Vec<String> = refs.iter().map(|&r| format!("\"{}\"", names[r])).collect();
            if i > 0 {
                text.push(',');
            }
            text.push_str(&format!(
                r#"{{"path":"{}","narHash":"{hash}","narSize":{},"references":[{}]}}"#,
                names[i],
                1000 + i,
                refs.join(",")
            ));
        }
        text.push(']');
        (text, names[0].clone())
    }

    /// Reading a big closure holds the graph, not the file and a copy of
    /// each path per referrer (issue 15: about 1.3 KB a path before, the
    /// file read whole and every reference a `String` of its own).
    #[test]
    fn reading_a_closure_file_holds_little_more_than_the_graph() {
        let n = 4000;
        let (text, root) = scale_graph(n);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("graph.json");
        std::fs::write(&file, &text).unwrap();
        let store = StoreLocation {
            dir: StoreDir::default(),
            root: dir.path().to_owned(),
        };
        let (graph, peak) =
            heap::peak(|| read_closure(&Source::Graph(file.clone()), &store, &[root]).unwrap());
        assert_eq!(graph.len(), n);
        let refs: usize = graph.paths().iter().map(|p| p.references.len()).sum();
        // What the graph itself needs: an entry, the path's text (about
        // 70 bytes with its counts), a reference each; on top, for a
        // while, the references as indices (the checks' edges). 1.21 MB
        // of 1.33 MB allowed when written; 4.05 MB before (the 1.4 MB
        // file whole, a text per reference, the entries twice).
        let graph_bytes =
            n * (std::mem::size_of::<PathInfo>() + 80) + refs * std::mem::size_of::<StorePath>();
        assert!(
            peak < graph_bytes * 3 / 2 && peak < text.len(),
            "peak {peak} bytes ({} a path) for a {}-byte file, a {graph_bytes}-byte graph",
            peak / n,
            text.len()
        );
    }

    #[test]
    fn identical_duplicates_merge_conflicting_ones_fail() {
        let [a, b] = [sp('a', "a"), sp('b', "b")];
        let g =
            ClosureGraph::new(vec![info(&a, &[&b]), info(&b, &[]), info(&a, &[&b, &b])]).unwrap();
        assert_eq!(g.len(), 2);

        let mut other = info(&a, &[&b]);
        other.nar_size = 9;
        let err = ClosureGraph::new(vec![info(&a, &[&b]), info(&b, &[]), other]).unwrap_err();
        assert!(
            matches!(err, Error::ConflictingEntries { ref path, .. } if *path == a),
            "{err}"
        );
    }

    #[test]
    fn dangling_reference_is_an_error() {
        let [a, b] = [sp('a', "a"), sp('b', "b")];
        let err = ClosureGraph::new(vec![info(&a, &[&b])]).unwrap_err();
        assert!(
            matches!(err, Error::DanglingReference { ref referrer, ref reference, .. }
                if *referrer == a && reference == b.as_str()),
            "{err}"
        );
    }

    #[test]
    fn cycles_other_than_self_references_are_errors() {
        let [a, b, c] = [sp('a', "a"), sp('b', "b"), sp('c', "c")];
        let err = ClosureGraph::new(vec![info(&a, &[&b, &a]), info(&b, &[&c]), info(&c, &[&a])])
            .unwrap_err();
        let Error::ReferenceCycle { cycle, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(cycle, &[a.clone(), b.clone(), c.clone()]);
        assert!(
            err.to_string()
                .contains(&format!("`{a}` → `{b}` → `{c}` → `{a}`")),
            "{err}"
        );
    }

    /// A graph of `paths` in one chain: each references the next.
    fn chain(paths: &[StorePath]) -> ClosureGraph {
        let infos = paths
            .iter()
            .enumerate()
            .map(|(i, p)| info(p, &paths.get(i + 1).into_iter().collect::<Vec<_>>()))
            .collect();
        ClosureGraph::new(infos).unwrap()
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let dir = StoreDir::default();
        let paths: Vec<StorePath> = (0..200_000u32)
            .map(|i| {
                let hash = crate::nix::base32::encode(&{
                    let mut h = [0u8; 20];
                    h[..4].copy_from_slice(&i.to_be_bytes());
                    h
                });
                StorePath::parse(&dir, &format!("/nix/store/{hash}-p")).unwrap()
            })
            .collect();
        let g = chain(&paths);
        assert_eq!(g.closure_of(&paths[..1]).unwrap().len(), 200_000);
    }

    /// Paths whose hash parts start alike (all `0000…`, as hand-made or
    /// hostile graphs have them) are told apart by the whole path, in
    /// logarithmic time: 20,000 of them in one chain, 10,000 deep.
    #[test]
    fn paths_sharing_a_hash_prefix_are_found() {
        let dir = StoreDir::default();
        let paths: Vec<StorePath> = (0..20_000u32)
            .map(|i| {
                let hash = format!("{:0>32}", crate::nix::base32::encode(&i.to_be_bytes()));
                StorePath::parse(&dir, &format!("/nix/store/{hash}-p")).unwrap()
            })
            .collect();
        let g = chain(&paths);
        assert_eq!(g.closure_of(&paths[10_000..=10_000]).unwrap().len(), 10_000);
    }

    /// Paths of two store directories (only [`ClosureGraph::new`] can mix
    /// them): path order is not hash order, and references are still found.
    #[test]
    fn paths_of_two_store_directories_are_found() {
        let other = StoreDir::new("/a/store").unwrap();
        let late = sp('z', "late");
        let early =
            StorePath::parse(&other, &format!("/a/store/{}-early", "0".repeat(32))).unwrap();
        let mid = sp('m', "mid");
        let g = ClosureGraph::new(vec![
            info(&late, &[&early]),
            info(&early, &[&mid]),
            info(&mid, &[]),
        ])
        .unwrap();
        assert_eq!(g.closure_of(std::slice::from_ref(&late)).unwrap().len(), 3);
        assert_eq!(g.closure_of(std::slice::from_ref(&early)).unwrap().len(), 2);
    }

    #[test]
    fn closure_of_keeps_what_roots_reach() {
        let (g, [a, b, c, d, e]) = sample();
        let sub = g.closure_of(std::slice::from_ref(&b)).unwrap();
        assert_eq!(
            sub.paths().iter().map(|p| &p.path).collect::<Vec<_>>(),
            [&b, &c]
        );
        let sub = g.closure_of(&[a.clone(), e.clone()]).unwrap();
        assert_eq!(sub.len(), 5);
        assert_eq!(g.closure_of(std::slice::from_ref(&d)).unwrap().len(), 1);
        assert_eq!(g.closure_of(&[]).unwrap().len(), 0);
    }

    #[test]
    fn closure_of_a_missing_root_is_an_error() {
        let (g, _) = sample();
        let z = sp('z', "z");
        let err = g.closure_of(std::slice::from_ref(&z)).unwrap_err();
        assert!(
            matches!(err, Error::MissingRoot { ref root, .. } if *root == z),
            "{err}"
        );
    }
}
