//! The tree of one NAR, from the NAR itself or its `.ls` listing: each
//! entry's kind and, for a file, where its contents are in the NAR.
//!
//! A NAR orders siblings by bytes; layers by [`python_order`]. The two
//! agree for UTF-8 names, and the index re-sorts when they do not, so a
//! layer from a cache has the order of one from a local store.

use std::collections::HashMap;
use std::io::Read;

use crate::nix::listing::ListingNode;
use crate::nix::nar::{NarError, NarKind, NarReader};
use crate::nix::StorePath;
use crate::store::{python_order, Entry, EntryKind};

/// One entry: its path below the store path, kind and contents offset.
#[derive(Debug)]
struct Node {
    rel: Vec<u8>,
    kind: EntryKind,
    offset: u64,
    children: Vec<usize>,
}

/// A NAR's entries, in layer order, looked up by path.
#[derive(Debug)]
pub(super) struct NarIndex {
    nodes: Vec<Node>,
    /// Node indices in layer order.
    order: Vec<usize>,
    by_rel: HashMap<Vec<u8>, usize>,
}

/// A regular file's place in the NAR.
pub(super) struct FileAt {
    pub(super) offset: u64,
    pub(super) size: u64,
}

impl NarIndex {
    /// Reads the whole NAR from `nar` (every byte, so a caller hashing
    /// what it reads sees all of it).
    pub(super) fn read(nar: impl Read) -> Result<Self, NarError> {
        Self::from_reader(NarReader::new(nar))
    }

    fn from_reader<R: Read>(mut reader: NarReader<R>) -> Result<Self, NarError> {
        let mut nodes = Vec::new();
        while let Some(entry) = reader.next()? {
            let (kind, offset) = match entry.kind {
                NarKind::Directory => (EntryKind::Directory, 0),
                NarKind::Regular {
                    executable,
                    size,
                    offset,
                } => (EntryKind::Regular { size, executable }, offset),
                NarKind::Symlink { target } => (EntryKind::Symlink { target }, 0),
            };
            nodes.push(Node {
                rel: entry.path,
                kind,
                offset,
                children: Vec::new(),
            });
        }
        Ok(Self::build(nodes))
    }

    /// The tree a listing describes (offsets as given, else 0).
    pub(super) fn from_listing(root: &ListingNode) -> Self {
        let mut nodes = Vec::new();
        let mut todo = vec![(Vec::new(), root)];
        while let Some((rel, node)) = todo.pop() {
            let (kind, offset) = match node {
                ListingNode::Directory { entries } => {
                    for (name, child) in entries.iter().rev() {
                        let mut path = rel.clone();
                        if !path.is_empty() {
                            path.push(b'/');
                        }
                        path.extend_from_slice(name.as_bytes());
                        todo.push((path, child));
                    }
                    (EntryKind::Directory, 0)
                }
                ListingNode::Regular {
                    size,
                    executable,
                    nar_offset,
                } => (
                    EntryKind::Regular {
                        size: *size,
                        executable: *executable,
                    },
                    nar_offset.unwrap_or(0),
                ),
                ListingNode::Symlink { target } => (
                    EntryKind::Symlink {
                        target: target.as_bytes().to_vec(),
                    },
                    0,
                ),
            };
            nodes.push(Node {
                rel,
                kind,
                offset,
                children: Vec::new(),
            });
        }
        Self::build(nodes)
    }

    /// Appends the nodes, in NAR order, to `out` (see [`NarIndex::decode`]):
    /// per node its path's length and bytes, a kind byte (0 directory,
    /// 1 file, 2 executable file, 3 symlink), then a file's size and
    /// offset or a symlink target's length and bytes; integers little-endian.
    pub(super) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.nodes.len() as u64).to_le_bytes());
        for node in &self.nodes {
            out.extend_from_slice(&(node.rel.len() as u64).to_le_bytes());
            out.extend_from_slice(&node.rel);
            match &node.kind {
                EntryKind::Directory => out.push(0),
                EntryKind::Regular { size, executable } => {
                    out.push(if *executable { 2 } else { 1 });
                    out.extend_from_slice(&size.to_le_bytes());
                    out.extend_from_slice(&node.offset.to_le_bytes());
                }
                EntryKind::Symlink { target } => {
                    out.push(3);
                    out.extend_from_slice(&(target.len() as u64).to_le_bytes());
                    out.extend_from_slice(target);
                }
            }
        }
    }

    /// The index [`NarIndex::encode`] wrote at the start of `bytes`, of a
    /// NAR of `nar_size` bytes; `None` for anything else: a length past the
    /// end, an unknown kind, a first node that is not the root, a file
    /// past the NAR's end, bytes left over. Never panics, and allocates no
    /// more than `bytes` can hold.
    pub(super) fn decode(mut bytes: &[u8], nar_size: u64) -> Option<Self> {
        fn take<'b>(bytes: &mut &'b [u8], n: u64) -> Option<&'b [u8]> {
            let n = usize::try_from(n).ok()?;
            if n > bytes.len() {
                return None;
            }
            let (head, rest) = bytes.split_at(n);
            *bytes = rest;
            Some(head)
        }
        fn u64_of(bytes: &mut &[u8]) -> Option<u64> {
            Some(u64::from_le_bytes(take(bytes, 8)?.try_into().ok()?))
        }
        let count = u64_of(&mut bytes)?;
        // A node takes at least 9 bytes: no count larger than that allows.
        if count == 0 || count > bytes.len() as u64 / 9 {
            return None;
        }
        let mut nodes = Vec::with_capacity(usize::try_from(count).ok()?);
        for i in 0..count {
            let len = u64_of(&mut bytes)?;
            let rel = take(&mut bytes, len)?.to_vec();
            // The root first and only first.
            if (i == 0) != rel.is_empty() {
                return None;
            }
            let (kind, offset) = match take(&mut bytes, 1)?[0] {
                0 => (EntryKind::Directory, 0),
                k @ (1 | 2) => {
                    let size = u64_of(&mut bytes)?;
                    let offset = u64_of(&mut bytes)?;
                    if offset.checked_add(size)? > nar_size {
                        return None;
                    }
                    let kind = EntryKind::Regular {
                        size,
                        executable: k == 2,
                    };
                    (kind, offset)
                }
                3 => {
                    let len = u64_of(&mut bytes)?;
                    let target = take(&mut bytes, len)?.to_vec();
                    (EntryKind::Symlink { target }, 0)
                }
                _ => return None,
            };
            nodes.push(Node {
                rel,
                kind,
                offset,
                children: Vec::new(),
            });
        }
        bytes.is_empty().then(|| Self::build(nodes))
    }

    /// Links `nodes` (a pre-order, parents first) and orders them.
    fn build(mut nodes: Vec<Node>) -> Self {
        let by_rel: HashMap<Vec<u8>, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (n.rel.clone(), i))
            .collect();
        for i in 1..nodes.len() {
            let parent = match nodes[i].rel.iter().rposition(|&b| b == b'/') {
                Some(slash) => by_rel.get(&nodes[i].rel[..slash]).copied(),
                None => Some(0),
            };
            if let Some(p) = parent {
                nodes[p].children.push(i);
            }
        }
        for i in 0..nodes.len() {
            let mut children = std::mem::take(&mut nodes[i].children);
            children.sort_by(|&a, &b| python_order(base(&nodes[a].rel), base(&nodes[b].rel)));
            nodes[i].children = children;
        }
        let mut order = Vec::with_capacity(nodes.len());
        let mut stack = if nodes.is_empty() { vec![] } else { vec![0] };
        while let Some(i) = stack.pop() {
            order.push(i);
            stack.extend(nodes[i].children.iter().rev());
        }
        Self {
            nodes,
            order,
            by_rel,
        }
    }

    fn entry_of(&self, path: &StorePath, i: usize) -> Entry {
        let node = &self.nodes[i];
        let mut name = path.as_str().as_bytes().to_vec();
        if !node.rel.is_empty() {
            name.push(b'/');
            name.extend_from_slice(&node.rel);
        }
        if node.kind == EntryKind::Directory {
            name.push(b'/');
        }
        Entry {
            name,
            kind: node.kind.clone(),
        }
    }

    /// Every entry, in layer order, named under `path`.
    pub(super) fn entries(&self, path: &StorePath) -> Vec<Entry> {
        self.order.iter().map(|&i| self.entry_of(path, i)).collect()
    }

    /// The entry at `rel` (no `/` at the end).
    pub(super) fn entry(&self, path: &StorePath, rel: &[u8]) -> Option<Entry> {
        self.by_rel.get(rel).map(|&i| self.entry_of(path, i))
    }

    /// The names in the directory at `rel`, in layer order; `None` when
    /// there is no directory there.
    pub(super) fn read_dir(&self, rel: &[u8]) -> Option<Vec<Vec<u8>>> {
        let node = &self.nodes[*self.by_rel.get(rel)?];
        (node.kind == EntryKind::Directory).then(|| {
            node.children
                .iter()
                .map(|&c| base(&self.nodes[c].rel).to_vec())
                .collect()
        })
    }

    /// Where the regular file at `rel` is.
    pub(super) fn file(&self, rel: &[u8]) -> Option<FileAt> {
        let node = &self.nodes[*self.by_rel.get(rel)?];
        match node.kind {
            EntryKind::Regular { size, .. } => Some(FileAt {
                offset: node.offset,
                size,
            }),
            _ => None,
        }
    }
}

/// The last component of a relative path.
fn base(rel: &[u8]) -> &[u8] {
    rel.rsplit(|&b| b == b'/').next().unwrap_or(rel)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::nar::write::{nar, Node as N};
    use crate::nix::StoreDir;

    #[test]
    fn layer_order_for_non_utf8_names() {
        // NAR order is by byte: \x80 < \xc3\xa9 (é); Python's puts é first.
        let root = N::Dir(vec![
            (b"\x80".to_vec(), N::File(false, b"x".to_vec())),
            (
                "é".as_bytes().to_vec(),
                N::Dir(vec![(b"f".to_vec(), N::Link(b"t".to_vec()))]),
            ),
        ]);
        let index = NarIndex::read(nar(&root).as_slice()).unwrap();
        let path = StorePath::parse(
            &StoreDir::default(),
            "/nix/store/00000000000000000000000000000000-p",
        )
        .unwrap();
        let names: Vec<Vec<u8>> = index
            .entries(&path)
            .into_iter()
            .map(|e| e.name[path.as_str().len()..].to_vec())
            .collect();
        assert_eq!(
            names,
            [
                b"/".to_vec(),
                "/é/".as_bytes().to_vec(),
                "/é/f".as_bytes().to_vec(),
                b"/\x80".to_vec()
            ]
        );
        assert_eq!(
            index.read_dir(b""),
            Some(vec!["é".as_bytes().to_vec(), b"\x80".to_vec()])
        );
        assert!(index.file(b"\x80").is_some());
        assert!(index.file("é".as_bytes()).is_none());
    }

    /// Writes `node` at `disk` as a store would hold it.
    fn materialise(disk: &std::path::Path, node: &N) {
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::fs::PermissionsExt;
        match node {
            N::File(executable, contents) => {
                std::fs::write(disk, contents).unwrap();
                let mode = if *executable { 0o555 } else { 0o444 };
                std::fs::set_permissions(disk, std::fs::Permissions::from_mode(mode)).unwrap();
            }
            N::Link(target) => {
                std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(target), disk).unwrap();
            }
            N::Dir(entries) => {
                std::fs::create_dir(disk).unwrap();
                for (name, child) in entries {
                    materialise(&disk.join(std::ffi::OsStr::from_bytes(name)), child);
                }
            }
        }
    }

    fn arb_name() -> impl proptest::strategy::Strategy<Value = Vec<u8>> {
        use proptest::prelude::*;
        // ASCII, multi-byte UTF-8 and bytes that are no UTF-8.
        let byte = prop_oneof![
            b'a'..=b'c',
            Just(b'.'),
            Just(0xc3),
            Just(0xa9),
            Just(0x80),
            Just(0xff)
        ];
        proptest::collection::vec(byte, 1..4)
            .prop_filter("not . or ..", |n| n != b"." && n != b"..")
    }

    fn arb_tree() -> impl proptest::strategy::Strategy<Value = N> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..5))
                .prop_map(|(x, c)| N::File(x, c)),
            Just(N::Link(b"t".to_vec())),
        ];
        leaf.prop_recursive(3, 20, 4, |inner| {
            // NAR order: siblings by bytes (a BTreeMap of byte names).
            proptest::collection::btree_map(arb_name(), inner, 0..4)
                .prop_map(|m| N::Dir(m.into_iter().collect()))
        })
    }

    proptest::proptest! {
        /// A NAR's entries are the local store's entries of the same tree:
        /// same order (Python's, for any bytes), kinds and sizes.
        #[test]
        fn nar_entries_equal_the_local_walk(tree in arb_tree()) {
            use crate::store::Store as _;
            let root = tempfile::tempdir().unwrap();
            let store = crate::store::local::fixture::local(root.path());
            let path = "/nix/store/00000000000000000000000000000000-p";
            std::fs::create_dir_all(store.disk_path("/nix/store")).unwrap();
            materialise(&store.disk_path(path), &tree);
            let path = StorePath::parse(&StoreDir::default(), path).unwrap();
            let from_disk: Vec<Entry> = store.entries(&path).map(Result::unwrap).collect();
            let index = NarIndex::read(nar(&tree).as_slice()).unwrap();
            proptest::prop_assert_eq!(index.entries(&path), from_disk);
        }
    }
}
