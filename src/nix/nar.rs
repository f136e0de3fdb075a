//! A streaming reader of NAR archives (Nix's `nix-archive-1`), for NARs
//! from a binary cache: hostile bytes.
//!
//! A NAR is a sequence of strings, each its length (u64, little endian),
//! its bytes and zero padding to a multiple of 8:
//!
//! ```text
//! "nix-archive-1" node
//! node = "(" "type" ( "regular" ["executable" ""] "contents" <bytes>
//!                   | "symlink" "target" <target>
//!                   | "directory" { "entry" "(" "name" <name> "node" node ")" } ) ")"
//! ```
//!
//! [`NarReader::next`] yields the entries in archive order (a depth-first
//! pre-order, siblings by byte order of their names) with the offset of a
//! file's contents in the archive, so a NAR kept on disk can later be read
//! at that offset. A regular file's contents are skipped unless read
//! through [`NarReader::contents`] first.
//!
//! Everything Nix's own parser refuses is refused, and a little more:
//! names must be non-empty, without `/` or NUL, not `.` or `..`, and
//! strictly increasing within a directory (sorted, unique); padding must be
//! zero; names, symlink targets and tokens are bounded ([`MAX_NAME`],
//! [`MAX_TARGET`]) and so is the depth ([`MAX_DEPTH`]); nothing may follow
//! the root node. The parser holds one frame per open directory and reads
//! each byte once, so any input ends (in an error or the end) without a
//! panic, in time linear in its length.
//!
//! [`NarWriter`] writes the grammar: the bytes of a store path's NAR, or
//! only their count.
//!
//! Hand-written: the crates that read and write NARs are GPL (nix-compat) or UTF-8
//! paths only (nix-nar), and store names are bytes.

use std::io::{self, Read};

mod writer;

pub use writer::{NarNode, NarWriter};

/// The longest name of a directory entry (Linux's `NAME_MAX`).
pub const MAX_NAME: usize = 255;
/// The longest symlink target (Linux's `PATH_MAX` less the NUL).
pub const MAX_TARGET: usize = 4095;
/// The deepest directory nesting accepted.
pub const MAX_DEPTH: usize = 1024;
/// The longest keyword of the grammar (`nix-archive-1`, `executable`).
const MAX_TOKEN: usize = 16;

/// What an entry of a NAR is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NarKind {
    /// A directory; its entries follow.
    Directory,
    /// A regular file.
    Regular {
        /// Whether it is executable.
        executable: bool,
        /// Its length.
        size: u64,
        /// Where its contents start in the NAR.
        offset: u64,
    },
    /// A symlink.
    Symlink {
        /// Its target, raw bytes.
        target: Vec<u8>,
    },
}

/// One entry of a NAR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarEntry {
    /// Its path below the root, components joined by `/`; empty for the root.
    pub path: Vec<u8>,
    /// What it is.
    pub kind: NarKind,
}

/// Why a NAR was refused.
#[derive(Debug, thiserror::Error)]
pub enum NarError {
    /// Reading failed, or the archive ended early.
    #[error("reading the NAR failed at byte {offset}")]
    Io {
        /// Bytes read before.
        offset: u64,
        /// The cause (`UnexpectedEof` for a truncated NAR).
        #[source]
        source: io::Error,
    },
    /// Not a valid NAR.
    #[error("invalid NAR at byte {offset}: {reason}")]
    Invalid {
        /// Where the offending string starts.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
}

/// A directory being read: its path and the last name seen in it.
struct Frame {
    path: Vec<u8>,
    last: Option<Vec<u8>>,
}

/// A pull parser over a NAR.
pub struct NarReader<R> {
    inner: R,
    offset: u64,
    /// Open directories, outermost first.
    stack: Vec<Frame>,
    /// Bytes of the current file's contents not read yet, then its padding
    /// and the `)` closing its node still to be read.
    pending: Option<u64>,
    started: bool,
    done: bool,
    /// How contents not read are skipped: by seeking when `inner` can.
    skip: Option<fn(&mut R, u64) -> io::Result<()>>,
}

impl<R: Read + io::Seek> NarReader<R> {
    /// A reader that seeks over the contents it is not asked for, rather
    /// than reading them: for a NAR in a file, only its structure is read.
    pub fn seekable(inner: R) -> Self {
        let mut reader = Self::new(inner);
        reader.skip = Some(|inner, n| {
            let n = i64::try_from(n).map_err(|_| io::Error::other("contents too large"))?;
            inner.seek_relative(n)
        });
        reader
    }
}

impl<R: Read> NarReader<R> {
    /// A reader of the NAR that `inner` gives.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            offset: 0,
            stack: Vec::new(),
            pending: None,
            started: false,
            done: false,
            skip: None,
        }
    }

    /// Bytes consumed so far.
    #[must_use]
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The reader, once the archive has been read.
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn invalid<T>(&self, at: u64, reason: impl Into<String>) -> Result<T, NarError> {
        Err(NarError::Invalid {
            offset: at,
            reason: reason.into(),
        })
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), NarError> {
        self.inner.read_exact(buf).map_err(|source| NarError::Io {
            offset: self.offset,
            source,
        })?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn read_u64(&mut self) -> Result<u64, NarError> {
        let mut word = [0; 8];
        self.read_exact(&mut word)?;
        Ok(u64::from_le_bytes(word))
    }

    /// Reads and checks the zero padding after `len` bytes.
    fn padding(&mut self, len: u64) -> Result<(), NarError> {
        let pad = (8 - len % 8) % 8;
        let mut zeros = [0; 8];
        let at = self.offset;
        self.read_exact(&mut zeros[..pad as usize])?;
        if zeros.iter().any(|&b| b != 0) {
            return self.invalid(at, "non-zero padding");
        }
        Ok(())
    }

    /// A string of at most `max` bytes.
    fn string(&mut self, max: usize, what: &str) -> Result<Vec<u8>, NarError> {
        let at = self.offset;
        let len = self.read_u64()?;
        if len > max as u64 {
            return self.invalid(at, format!("{what} of {len} bytes (at most {max})"));
        }
        let mut bytes = vec![0; len as usize];
        self.read_exact(&mut bytes)?;
        self.padding(len)?;
        Ok(bytes)
    }

    fn token(&mut self) -> Result<(u64, Vec<u8>), NarError> {
        let at = self.offset;
        Ok((at, self.string(MAX_TOKEN, "keyword")?))
    }

    fn expect(&mut self, word: &str) -> Result<(), NarError> {
        let (at, got) = self.token()?;
        if got != word.as_bytes() {
            return self.invalid(
                at,
                format!(
                    "expected `{word}`, found `{}`",
                    String::from_utf8_lossy(&got)
                ),
            );
        }
        Ok(())
    }

    /// Reads a node's start (`(` `type` …) at `path`, up to its contents,
    /// target or first directory entry.
    fn node(&mut self, path: Vec<u8>) -> Result<NarEntry, NarError> {
        self.expect("(")?;
        self.expect("type")?;
        let (at, kind) = self.token()?;
        match kind.as_slice() {
            b"regular" => {
                let (at, mut word) = self.token()?;
                let executable = word == b"executable";
                if executable {
                    self.expect("")?;
                    let next = self.token()?;
                    word = next.1;
                }
                if word != b"contents" {
                    return self.invalid(at, "expected `executable` or `contents`");
                }
                let size = self.read_u64()?;
                self.pending = Some(size);
                Ok(NarEntry {
                    path,
                    kind: NarKind::Regular {
                        executable,
                        size,
                        offset: self.offset,
                    },
                })
            }
            b"symlink" => {
                self.expect("target")?;
                let at = self.offset;
                let target = self.string(MAX_TARGET, "symlink target")?;
                if target.is_empty() || target.contains(&0) {
                    return self.invalid(at, "empty symlink target or NUL in it");
                }
                self.expect(")")?;
                self.close_entry()?;
                Ok(NarEntry {
                    path,
                    kind: NarKind::Symlink { target },
                })
            }
            b"directory" => {
                if self.stack.len() >= MAX_DEPTH {
                    return self.invalid(at, format!("directories nested deeper than {MAX_DEPTH}"));
                }
                self.stack.push(Frame {
                    path: path.clone(),
                    last: None,
                });
                Ok(NarEntry {
                    path,
                    kind: NarKind::Directory,
                })
            }
            _ => self.invalid(
                at,
                format!("unknown type `{}`", String::from_utf8_lossy(&kind)),
            ),
        }
    }

    /// After a node's `)`: the `)` of the directory entry holding it, or
    /// the end of the archive after the root.
    fn close_entry(&mut self) -> Result<(), NarError> {
        if self.stack.is_empty() {
            self.done = true;
            let mut byte = [0];
            let at = self.offset;
            match self.inner.read(&mut byte) {
                Ok(0) => Ok(()),
                Ok(_) => self.invalid(at, "bytes after the end of the archive"),
                Err(source) => Err(NarError::Io { offset: at, source }),
            }
        } else {
            self.expect(")")
        }
    }

    /// The rest of the current file's contents, padding and node end.
    fn finish_file(&mut self) -> Result<(), NarError> {
        if let Some(left) = self.pending.take() {
            if let Some(skip) = self.skip {
                // A seek past the end shows as an early end at the next read.
                skip(&mut self.inner, left).map_err(|source| NarError::Io {
                    offset: self.offset,
                    source,
                })?;
                self.offset += left;
                let pad_from = self.offset;
                self.padding(pad_from)?;
                self.expect(")")?;
                return self.close_entry();
            }
            let skipped =
                io::copy(&mut (&mut self.inner).take(left), &mut io::sink()).map_err(|source| {
                    NarError::Io {
                        offset: self.offset,
                        source,
                    }
                })?;
            self.offset += skipped;
            if skipped < left {
                return Err(NarError::Io {
                    offset: self.offset,
                    source: io::ErrorKind::UnexpectedEof.into(),
                });
            }
            // The padding depends on the whole size, i.e. the offset.
            let pad_from = self.offset;
            self.padding(pad_from)?;
            self.expect(")")?;
            self.close_entry()?;
        }
        Ok(())
    }

    /// The contents of the regular file [`NarReader::next`] just returned
    /// (what was not read of them yet). Reading past the file gives EOF.
    pub fn contents(&mut self) -> Contents<'_, R> {
        Contents { nar: self }
    }

    /// The next entry, `None` at the end of the archive.
    ///
    /// # Errors
    /// [`NarError`] when reading fails or the archive is invalid; the
    /// reader should not be used after an error.
    #[allow(clippy::should_implement_trait)] // fallible, borrows contents: not an Iterator
    pub fn next(&mut self) -> Result<Option<NarEntry>, NarError> {
        if !self.started {
            self.started = true;
            self.expect("nix-archive-1")?;
            return self.node(Vec::new()).map(Some);
        }
        self.finish_file()?;
        while !self.done {
            let Some(frame) = self.stack.last() else {
                break;
            };
            let dir_path = frame.path.clone();
            let (at, word) = self.token()?;
            match word.as_slice() {
                b")" => {
                    self.stack.pop();
                    self.close_entry()?;
                }
                b"entry" => {
                    self.expect("(")?;
                    self.expect("name")?;
                    let at = self.offset;
                    let name = self.string(MAX_NAME, "name")?;
                    if name.is_empty()
                        || name == b"."
                        || name == b".."
                        || name.contains(&b'/')
                        || name.contains(&0)
                    {
                        return self
                            .invalid(at, format!("bad name `{}`", String::from_utf8_lossy(&name)));
                    }
                    let frame = self.stack.last_mut().expect("a directory is open");
                    if frame.last.as_ref().is_some_and(|last| *last >= name) {
                        return self.invalid(
                            at,
                            format!(
                                "name `{}` out of order or repeated",
                                String::from_utf8_lossy(&name)
                            ),
                        );
                    }
                    frame.last = Some(name.clone());
                    self.expect("node")?;
                    let mut path = dir_path;
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(&name);
                    return self.node(path).map(Some);
                }
                _ => return self.invalid(at, "expected `entry` or `)`"),
            }
        }
        Ok(None)
    }
}

/// The contents of one regular file of a NAR ([`NarReader::contents`]).
pub struct Contents<'a, R> {
    nar: &'a mut NarReader<R>,
}

impl<R: Read> Read for Contents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(left) = self.nar.pending else {
            return Ok(0);
        };
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        if want == 0 {
            return Ok(0);
        }
        let n = self.nar.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.nar.offset += n as u64;
        self.nar.pending = Some(left - n as u64);
        Ok(n)
    }
}

/// Writes a NAR of a tree given whole, names as they are (test helper):
/// on [`NarWriter`]'s steps, without its checks, so that the tests can
/// write what no store yields.
#[cfg(test)]
pub(crate) mod write {
    use std::io::Write;

    use super::{NarNode, NarWriter};

    /// A NAR node to serialise.
    #[derive(Debug, Clone)]
    pub(crate) enum Node {
        File(bool, Vec<u8>),
        Link(Vec<u8>),
        Dir(Vec<(Vec<u8>, Node)>),
    }

    fn node(out: &mut NarWriter<&mut Vec<u8>>, n: &Node) {
        match n {
            Node::File(executable, contents) => {
                let size = contents.len() as u64;
                let executable = *executable;
                out.node(b"", NarNode::Regular { executable, size })
                    .unwrap();
                out.write_all(contents).unwrap();
                out.end_file().unwrap();
            }
            Node::Link(target) => out.node(b"", NarNode::Symlink { target }).unwrap(),
            Node::Dir(entries) => {
                out.node(b"", NarNode::Directory).unwrap();
                for (name, child) in entries {
                    out.begin_entry(name).unwrap();
                    node(out, child);
                }
                out.end_directory().unwrap();
            }
        }
    }

    pub(crate) fn nar(root: &Node) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut out = NarWriter::new(&mut bytes);
        out.start().unwrap();
        node(&mut out, root);
        drop(out);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::write::{nar, Node};
    use super::*;

    /// The entries of `bytes` read seeking over contents; as `all` when it
    /// reads none.
    fn all_seeking(bytes: &[u8]) -> Result<Vec<NarEntry>, NarError> {
        let mut r = NarReader::seekable(io::Cursor::new(bytes));
        let mut out = Vec::new();
        while let Some(e) = r.next()? {
            out.push(e);
        }
        Ok(out)
    }

    fn all(bytes: &[u8]) -> Result<Vec<(NarEntry, Vec<u8>)>, NarError> {
        let mut r = NarReader::new(bytes);
        let mut out = Vec::new();
        while let Some(e) = r.next()? {
            let mut contents = Vec::new();
            if matches!(e.kind, NarKind::Regular { .. }) && e.path != b"b/x" {
                r.contents()
                    .read_to_end(&mut contents)
                    .map_err(|source| NarError::Io { offset: 0, source })?;
            }
            out.push((e, contents));
        }
        Ok(out)
    }

    fn tree() -> Node {
        Node::Dir(vec![
            (b"a".to_vec(), Node::File(false, b"hello".to_vec())),
            (
                b"b".to_vec(),
                Node::Dir(vec![(b"x".to_vec(), Node::File(true, vec![7; 9]))]),
            ),
            (b"c".to_vec(), Node::Link(b"../a".to_vec())),
            (b"d".to_vec(), Node::Dir(vec![])),
        ])
    }

    #[test]
    fn reads_entries_with_offsets() {
        let bytes = nar(&tree());
        let entries = all(&bytes).unwrap();
        let paths: Vec<&[u8]> = entries.iter().map(|(e, _)| e.path.as_slice()).collect();
        assert_eq!(paths, [&b""[..], b"a", b"b", b"b/x", b"c", b"d"]);
        assert_eq!(entries[1].1, b"hello");
        match entries[3].0.kind {
            NarKind::Regular {
                executable: true,
                size: 9,
                offset,
            } => {
                assert_eq!(&bytes[offset as usize..offset as usize + 9], &[7; 9]);
            }
            ref k => panic!("{k:?}"),
        }
        // A single file and a single symlink.
        let file = all(&nar(&Node::File(false, b"x".to_vec()))).unwrap();
        assert_eq!(file.len(), 1);
        assert_eq!(file[0].1, b"x");
        assert_eq!(all(&nar(&Node::Link(b"/t".to_vec()))).unwrap().len(), 1);
    }

    #[test]
    fn refuses_what_nix_refuses() {
        let bad = |root: Node| all(&nar(&root)).is_err();
        let dir = |names: &[&[u8]]| {
            Node::Dir(
                names
                    .iter()
                    .map(|n| (n.to_vec(), Node::File(false, Vec::new())))
                    .collect(),
            )
        };
        assert!(bad(dir(&[b"b", b"a"])), "unsorted");
        assert!(bad(dir(&[b"a", b"a"])), "duplicate");
        for name in [&b""[..], b".", b"..", b"a/b", b"a\0"] {
            assert!(bad(dir(&[name])), "{name:?}");
        }
        assert!(bad(dir(&[&[b'n'; MAX_NAME + 1]])));
        assert!(bad(Node::Link(vec![b'x'; MAX_TARGET + 1])));
        let mut deep = Node::Dir(vec![]);
        for _ in 0..=MAX_DEPTH {
            deep = Node::Dir(vec![(b"d".to_vec(), deep)]);
        }
        assert!(bad(deep));
        // Truncated anywhere, trailing bytes, non-zero padding.
        let bytes = nar(&tree());
        for cut in 0..bytes.len() {
            assert!(all(&bytes[..cut]).is_err(), "cut at {cut}");
            assert!(all_seeking(&bytes[..cut]).is_err(), "cut at {cut}, seeking");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(all(&extra).is_err());
        let mut padded = bytes.clone();
        // "nix-archive-1" is 13 bytes: its padding starts at 8 + 13.
        padded[21] = 1;
        assert!(all(&padded).is_err());
        // A bogus huge length is an error, not an allocation.
        let mut huge = Vec::new();
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(all(&huge).is_err());
    }

    fn arb_node() -> impl Strategy<Value = Node> {
        let leaf = prop_oneof![
            (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..20))
                .prop_map(|(x, c)| Node::File(x, c)),
            proptest::collection::vec(1u8..=255, 1..10).prop_map(Node::Link),
        ];
        leaf.prop_recursive(4, 24, 4, |inner| {
            proptest::collection::btree_map(
                proptest::collection::vec(b'a'..=b'e', 1..3),
                inner,
                0..4,
            )
            .prop_map(|m| Node::Dir(m.into_iter().collect()))
        })
    }

    proptest! {
        #[test]
        fn valid_nars_read_back(root in arb_node()) {
            let bytes = nar(&root);
            let read: Vec<NarEntry> = all(&bytes).unwrap().into_iter().map(|(e, _)| e).collect();
            prop_assert_eq!(read, all_seeking(&bytes).unwrap());
        }

        /// What the reader reads, the writer writes back to the byte, and
        /// its counter counts without the contents.
        #[test]
        fn valid_nars_write_back(root in arb_node()) {
            let bytes = nar(&root);
            let mut read = NarReader::new(bytes.as_slice());
            let mut write = NarWriter::new(Vec::new());
            let mut count = NarWriter::counter();
            while let Some(e) = read.next().unwrap() {
                let path = if e.path.is_empty() { b"/r".to_vec() } else { [&b"/r/"[..], &e.path].concat() };
                let node = match &e.kind {
                    NarKind::Directory => NarNode::Directory,
                    NarKind::Symlink { target } => NarNode::Symlink { target },
                    &NarKind::Regular { executable, size, .. } => NarNode::Regular { executable, size },
                };
                write.entry(&path, node).unwrap();
                count.entry(&path, node).unwrap();
                io::copy(&mut read.contents(), &mut write).unwrap();
            }
            let (out, len) = write.finish().unwrap();
            prop_assert_eq!(len, bytes.len() as u64);
            prop_assert_eq!(count.finish().unwrap().1, len);
            prop_assert!(out == bytes);
        }

        #[test]
        fn mutated_nars_never_panic(root in arb_node(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4), cut in any::<usize>()) {
            let mut bytes = nar(&root);
            for (at, b) in flips {
                let i = at % bytes.len();
                bytes[i] = b;
            }
            let cut = cut % (bytes.len() + 1);
            // Seeking over contents accepts exactly what reading them does.
            prop_assert_eq!(all(&bytes[..cut]).is_ok(), all_seeking(&bytes[..cut]).is_ok());
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let _ = all(&bytes);
            let _ = all_seeking(&bytes);
        }
    }
}
