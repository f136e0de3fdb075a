//! The NAR writer: the one place that writes the grammar (see the
//! [module](super) documentation) — for a store path's `narHash` (its
//! bytes through sha256) and its `narSize` (only counted, without reading a
//! file's contents).
//!
//! Entries are given as a store walk yields them: the root first, then
//! depth first, every directory before what is in it, each entry named by
//! its path (the path of its directory, `/`, its name; a `/` at the end is
//! ignored). The writer opens and closes the directories around them, so
//! a caller never writes a token itself.

use std::io::{self, Write};

/// What the next entry of a NAR is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NarNode<'a> {
    /// A directory; its entries follow.
    Directory,
    /// A regular file, whose `size` bytes of contents are written next,
    /// through the writer's [`Write`] (unless it [only counts](NarWriter::counter)).
    Regular {
        /// Whether it is executable.
        executable: bool,
        /// Its length.
        size: u64,
    },
    /// A symlink.
    Symlink {
        /// Its target, raw bytes.
        target: &'a [u8],
    },
}

/// An open directory: its path and the last name written in it.
struct Dir {
    path: Vec<u8>,
    last: Option<Vec<u8>>,
}

/// Writes a NAR entry by entry ([`NarWriter::entry`]).
pub struct NarWriter<W> {
    out: W,
    /// Bytes of the NAR so far.
    written: u64,
    /// Open directories, outermost first.
    open: Vec<Dir>,
    /// The regular file being written: its size and the contents still due.
    file: Option<(u64, u64)>,
    started: bool,
    /// Contents are counted, not written, and siblings may come in any
    /// order: for a size, which does not depend on either.
    counting: bool,
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

fn lossy(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    String::from_utf8_lossy(bytes)
}

impl NarWriter<io::Sink> {
    /// A writer that only counts: a regular file's contents are taken as
    /// written (none are given), and siblings may come in any order (a
    /// store's walk order: the size is the same). [`NarWriter::finish`]
    /// gives the NAR's size.
    #[must_use]
    pub fn counter() -> Self {
        let mut writer = Self::new(io::sink());
        writer.counting = true;
        writer
    }
}

impl<W: Write> NarWriter<W> {
    /// A writer of one NAR into `out`. Siblings must come in the NAR's
    /// order (by the bytes of their names).
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            open: Vec::new(),
            file: None,
            started: false,
            counting: false,
        }
    }

    /// Writes the next entry, at `path` (see the module documentation);
    /// a regular file's contents follow through [`Write`].
    ///
    /// # Errors
    /// When writing fails; [`io::ErrorKind::InvalidInput`] when `path` is
    /// not a name inside an open directory (outside the root, below a
    /// directory not given, `.`, `..`, NUL), when a sibling comes out of
    /// order or twice, or when the previous file's contents fell short.
    pub fn entry(&mut self, path: &[u8], node: NarNode<'_>) -> io::Result<()> {
        self.end_file()?;
        let path = path.strip_suffix(b"/").unwrap_or(path);
        if !self.started {
            self.start()?;
            return self.node(path, node);
        }
        // Close the directories that do not hold `path`.
        let name = loop {
            let Some(dir) = self.open.last() else {
                return Err(invalid(format!(
                    "`{}` is not inside the NAR's root",
                    lossy(path)
                )));
            };
            let inside = path
                .strip_prefix(dir.path.as_slice())
                .and_then(|rest| rest.strip_prefix(b"/"));
            if let Some(name) = inside {
                break name;
            }
            self.end_directory()?;
        };
        if name.is_empty() || name == b"." || name == b".." || name.contains(&0) {
            return Err(invalid(format!("`{}` has no valid name", lossy(path))));
        }
        if name.contains(&b'/') {
            return Err(invalid(format!(
                "`{}` comes before its directory",
                lossy(path)
            )));
        }
        if !self.counting {
            let dir = self.open.last_mut().expect("found above");
            if dir.last.as_deref().is_some_and(|last| last >= name) {
                return Err(invalid(format!(
                    "`{}` is out of order or repeated",
                    lossy(path)
                )));
            }
            dir.last = Some(name.to_vec());
        }
        self.begin_entry(name)?;
        self.node(path, node)
    }

    /// Ends the NAR: closes what is open and gives back the output and the
    /// NAR's length in bytes.
    ///
    /// # Errors
    /// When writing fails; [`io::ErrorKind::InvalidInput`] when no entry
    /// was written or the last file's contents fell short.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        if !self.started {
            return Err(invalid("a NAR needs a root entry".to_owned()));
        }
        self.end_file()?;
        while !self.open.is_empty() {
            self.end_directory()?;
        }
        Ok((self.out, self.written))
    }

    // The grammar, step by step. The steps are `pub(super)` for the
    // reader's tests, which write NARs no walk yields (bad names, siblings
    // out of order) to see them refused.

    fn bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Zero padding after `len` bytes, to a multiple of 8.
    fn pad(&mut self, len: u64) -> io::Result<()> {
        let pad = (8 - len % 8) % 8;
        self.bytes(&[0; 8][..pad as usize])
    }

    /// A string: its length (u64, little endian), its bytes, padding.
    fn string(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.bytes(&(bytes.len() as u64).to_le_bytes())?;
        self.bytes(bytes)?;
        self.pad(bytes.len() as u64)
    }

    fn strings(&mut self, tokens: &[&str]) -> io::Result<()> {
        tokens.iter().try_for_each(|t| self.string(t.as_bytes()))
    }

    /// The archive's magic.
    pub(super) fn start(&mut self) -> io::Result<()> {
        self.started = true;
        self.string(b"nix-archive-1")
    }

    /// A directory entry up to its node.
    pub(super) fn begin_entry(&mut self, name: &[u8]) -> io::Result<()> {
        self.strings(&["entry", "(", "name"])?;
        self.string(name)?;
        self.strings(&["node"])
    }

    /// A node at `path`: a symlink whole, a file up to its contents, a
    /// directory up to its first entry.
    pub(super) fn node(&mut self, path: &[u8], node: NarNode<'_>) -> io::Result<()> {
        self.strings(&["(", "type"])?;
        match node {
            NarNode::Directory => {
                self.strings(&["directory"])?;
                self.open.push(Dir {
                    path: path.to_vec(),
                    last: None,
                });
                Ok(())
            }
            NarNode::Symlink { target } => {
                self.strings(&["symlink", "target"])?;
                self.string(target)?;
                self.end_node()
            }
            NarNode::Regular { executable, size } => {
                self.strings(&["regular"])?;
                if executable {
                    self.strings(&["executable", ""])?;
                }
                self.strings(&["contents"])?;
                self.bytes(&size.to_le_bytes())?;
                let due = if self.counting {
                    self.written += size;
                    0
                } else {
                    size
                };
                self.file = Some((size, due));
                Ok(())
            }
        }
    }

    /// After a file's contents: their padding and the end of its node.
    pub(super) fn end_file(&mut self) -> io::Result<()> {
        let Some((size, due)) = self.file.take() else {
            return Ok(());
        };
        if due > 0 {
            return Err(invalid(format!(
                "a file's contents ended {due} of {size} bytes short"
            )));
        }
        self.pad(size)?;
        self.end_node()
    }

    /// The end of the innermost open directory's node.
    pub(super) fn end_directory(&mut self) -> io::Result<()> {
        self.open.pop();
        self.end_node()
    }

    /// A node's `)`, then that of the directory entry holding it, if any.
    fn end_node(&mut self) -> io::Result<()> {
        self.strings(&[")"])?;
        if self.open.is_empty() {
            Ok(())
        } else {
            self.strings(&[")"])
        }
    }
}

/// A regular file's contents, after its [`NarWriter::entry`]: no more than
/// its size.
impl<W: Write> Write for NarWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let due = match &self.file {
            Some((_, due)) if *due > 0 => *due,
            _ => return Err(invalid("contents beyond a file's size".to_owned())),
        };
        let want = usize::try_from(due).map_or(buf.len(), |due| due.min(buf.len()));
        let n = self.out.write(&buf[..want])?;
        self.written += n as u64;
        if let Some((_, due)) = &mut self.file {
            *due -= n as u64;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(size: u64) -> NarNode<'static> {
        NarNode::Regular {
            executable: false,
            size,
        }
    }

    /// The sizes `nix-store --dump | wc -c` prints: a 5-byte file, an
    /// empty directory.
    #[test]
    fn counts_what_it_writes() {
        let mut nar = NarWriter::new(Vec::new());
        nar.entry(b"/p", file(5)).unwrap();
        nar.write_all(b"hello").unwrap();
        let (bytes, len) = nar.finish().unwrap();
        assert_eq!((bytes.len(), len), (120, 120));
        let mut count = NarWriter::counter();
        count.entry(b"/p", file(5)).unwrap();
        assert_eq!(count.finish().unwrap().1, 120);
        let mut dir = NarWriter::new(Vec::new());
        dir.entry(b"/p/", NarNode::Directory).unwrap();
        assert_eq!(dir.finish().unwrap().1, 96);
    }

    #[test]
    fn refuses_what_is_no_nar() {
        let refused = |paths: &[&[u8]], counting: bool| {
            let mut nar = NarWriter::new(io::sink());
            nar.counting = counting;
            paths
                .iter()
                .try_for_each(|p| {
                    let node = if p.ends_with(b"/") {
                        NarNode::Directory
                    } else {
                        NarNode::Symlink { target: b"t" }
                    };
                    nar.entry(p, node)
                })
                .and_then(|()| nar.finish().map(drop))
                .map_err(|e| e.kind())
                .err()
        };
        let bad = Some(io::ErrorKind::InvalidInput);
        assert_eq!(refused(&[], false), bad, "no root");
        assert_eq!(
            refused(&[b"/r", b"/r/a"], false),
            bad,
            "root not a directory"
        );
        assert_eq!(refused(&[b"/r/", b"/s/a"], false), bad, "outside the root");
        assert_eq!(refused(&[b"/r/", b"/r/a/b"], false), bad, "no directory a");
        assert_eq!(refused(&[b"/r/", b"/r/b", b"/r/a"], false), bad, "order");
        assert_eq!(refused(&[b"/r/", b"/r/a", b"/r/a"], false), bad, "twice");
        assert_eq!(refused(&[b"/r/", b"/r/b", b"/r/a"], true), None, "counting");
        for name in [&b"/r/."[..], b"/r/..", b"/r/a\0", b"/r//"] {
            assert_eq!(refused(&[b"/r/", name], false), bad, "{name:?}");
        }
        // Contents short of the size, or beyond it.
        let mut nar = NarWriter::new(io::sink());
        nar.entry(b"/r", file(2)).unwrap();
        nar.write_all(b"x").unwrap();
        assert!(nar.write_all(b"yz").is_err());
        let mut nar = NarWriter::new(io::sink());
        nar.entry(b"/r", file(2)).unwrap();
        nar.write_all(b"x").unwrap();
        assert!(nar.finish().is_err());
    }
}
