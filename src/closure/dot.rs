//! `nix-store --query --graph` output, a Graphviz digraph:
//!
//! ```text
//! digraph G {
//! "<hash>-zlib" [label = "zlib", shape = box, style = filled, fillcolor = "#ff0000"];
//! "<hash>-libc" -> "<hash>-zlib" [color = "red"];
//! …
//! }
//! ```
//!
//! What differs from the other sources:
//!
//! - node ids are base names (`<hash>-<name>`); absolute paths are accepted too;
//! - an edge points from a *reference* to its *referrer*, the reverse of
//!   the other sources' `references` lists;
//! - Nix omits self-references, so a graph read from DOT has none: compare
//!   it with another source's graph modulo self-references;
//! - there are no hashes ([`PathInfo::nar_hash`] is `None`) and no sizes, so
//!   the NAR size of each path is computed from the store
//!   ([`Store::nar_size`]: on disk, from metadata alone).
//!
//! The tokenizer is hand-written (see `reference/crates.md`): it reads the
//! DOT subset an edited or generated graph plausibly uses (quoted and bare
//! ids, attribute lists, `node`/`edge`/`graph` attribute statements, edge
//! chains, comments) and rejects the rest (subgraphs, undirected edges,
//! ports, HTML strings) with the line. Every node an edge names must have
//! its own node statement, as Nix always prints one: an edge to an
//! undeclared node means the file was cut or edited.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

use super::{malformed, Error, PathInfo};
use crate::nix::{StoreDir, StorePath};
use crate::store::Store;

/// Parses the graph and sizes every node from `store`; `file` names it in errors.
pub(super) fn parse(bytes: &[u8], file: &Path, store: &impl Store) -> Result<Vec<PathInfo>, Error> {
    parse_graph(bytes, file, store.dir())?
        .into_iter()
        .map(|(path, references)| {
            let nar_size = store.nar_size(&path).map_err(|source| Error::NarSize {
                disk_path: store.location(path.as_str().as_bytes()),
                path: path.clone(),
                source,
            })?;
            Ok(PathInfo {
                path,
                nar_hash: None,
                nar_size,
                references,
            })
        })
        .collect()
}

/// The nodes of the graph with their references, sorted; no disk access.
fn parse_graph(
    bytes: &[u8],
    file: &Path,
    dir: &StoreDir,
) -> Result<BTreeMap<StorePath, Vec<StorePath>>, Error> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        malformed(file, line, "the file is not UTF-8 text")
    })?;
    let mut parser = Parser {
        lexer: Lexer::new(text, file),
        peeked: None,
        dir,
        nodes: BTreeMap::new(),
        edges: Vec::new(),
    };
    parser.graph()?;
    let Parser {
        mut nodes, edges, ..
    } = parser;
    for (reference, referrer, line) in edges {
        for end in [&reference, &referrer] {
            if !nodes.contains_key(end) {
                return Err(malformed(
                    file,
                    line,
                    format!(
                        "the edge names `{}`, which has no node statement",
                        end.base_name()
                    ),
                ));
            }
        }
        if let Some(refs) = nodes.get_mut(&referrer) {
            refs.push(reference);
        }
    }
    Ok(nodes)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok<'a> {
    /// An id, with whether it was quoted (keywords are only keywords bare).
    Id(Cow<'a, str>, bool),
    Arrow,
    LBrace,
    RBrace,
    LBracket,
    RBracket,
    Equals,
    Semicolon,
    Comma,
}

impl Tok<'_> {
    fn is_keyword(&self, word: &str) -> bool {
        matches!(self, Tok::Id(id, false) if id.eq_ignore_ascii_case(word))
    }

    fn describe(&self) -> String {
        match self {
            Tok::Id(id, true) => format!("\"{id}\""),
            Tok::Id(id, false) => format!("`{id}`"),
            Tok::Arrow => "`->`".into(),
            Tok::LBrace => "`{`".into(),
            Tok::RBrace => "`}`".into(),
            Tok::LBracket => "`[`".into(),
            Tok::RBracket => "`]`".into(),
            Tok::Equals => "`=`".into(),
            Tok::Semicolon => "`;`".into(),
            Tok::Comma => "`,`".into(),
        }
    }
}

struct Lexer<'a> {
    text: &'a str,
    pos: usize,
    line: usize,
    file: &'a Path,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str, file: &'a Path) -> Self {
        Self {
            text,
            pos: 0,
            line: 1,
            file,
        }
    }

    fn peek_byte(&self, ahead: usize) -> Option<u8> {
        self.text.as_bytes().get(self.pos + ahead).copied()
    }

    /// Advances over `n` bytes, counting newlines.
    fn bump(&mut self, n: usize) {
        let end = (self.pos + n).min(self.text.len());
        self.line += self.text.as_bytes()[self.pos..end]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.pos = end;
    }

    fn error(&self, line: usize, message: impl Into<String>) -> Error {
        malformed(self.file, line, message)
    }

    /// The line an error at the end of the file is reported at: the last line.
    fn last_line(&self) -> usize {
        let body = self.text.strip_suffix('\n').unwrap_or(self.text);
        1 + body.bytes().filter(|&b| b == b'\n').count()
    }

    fn skip_blank_and_comments(&mut self) -> Result<(), Error> {
        loop {
            match (self.peek_byte(0), self.peek_byte(1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.bump(1),
                (Some(b'/'), Some(b'/')) | (Some(b'#'), _) => {
                    let len = self.text[self.pos..]
                        .find('\n')
                        .unwrap_or(self.text.len() - self.pos);
                    self.bump(len);
                }
                (Some(b'/'), Some(b'*')) => {
                    let start = self.line;
                    let Some(len) = self.text[self.pos + 2..].find("*/") else {
                        return Err(self.error(start, "unterminated `/*` comment"));
                    };
                    self.bump(len + 4);
                }
                _ => return Ok(()),
            }
        }
    }

    fn next(&mut self) -> Result<Option<(usize, Tok<'a>)>, Error> {
        self.skip_blank_and_comments()?;
        let line = self.line;
        let Some(b) = self.peek_byte(0) else {
            return Ok(None);
        };
        let single = match b {
            b'{' => Some(Tok::LBrace),
            b'}' => Some(Tok::RBrace),
            b'[' => Some(Tok::LBracket),
            b']' => Some(Tok::RBracket),
            b'=' => Some(Tok::Equals),
            b';' => Some(Tok::Semicolon),
            b',' => Some(Tok::Comma),
            _ => None,
        };
        if let Some(tok) = single {
            self.bump(1);
            return Ok(Some((line, tok)));
        }
        match b {
            b'-' if self.peek_byte(1) == Some(b'>') => {
                self.bump(2);
                Ok(Some((line, Tok::Arrow)))
            }
            b'-' if self.peek_byte(1) == Some(b'-') => Err(self.error(
                line,
                "undirected edge `--`: `nix-store --query --graph` prints a digraph with `->`",
            )),
            b'"' => self.quoted(line).map(Some),
            b if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b >= 0x80 => {
                let len = self.text[self.pos..]
                    .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '.' || !c.is_ascii()))
                    .unwrap_or(self.text.len() - self.pos);
                let id = &self.text[self.pos..self.pos + len];
                self.bump(len);
                Ok(Some((line, Tok::Id(Cow::Borrowed(id), false))))
            }
            _ => {
                let c = self.text[self.pos..].chars().next().unwrap_or('?');
                Err(self.error(line, format!("unexpected character `{c}`")))
            }
        }
    }

    /// A double-quoted id: `\"` is a quote, `\` before a newline continues
    /// the line, any other backslash stays (DOT's rules).
    fn quoted(&mut self, line: usize) -> Result<(usize, Tok<'a>), Error> {
        let body_start = self.pos + 1;
        let bytes = self.text.as_bytes();
        let mut i = body_start;
        let mut plain = true;
        loop {
            match bytes.get(i) {
                None => return Err(self.error(line, "unterminated quoted string")),
                Some(b'"') => break,
                Some(b'\\') if matches!(bytes.get(i + 1), Some(b'"' | b'\n')) => {
                    plain = false;
                    i += 2;
                }
                Some(_) => i += 1,
            }
        }
        let raw = &self.text[body_start..i];
        let id = if plain {
            Cow::Borrowed(raw)
        } else {
            Cow::Owned(raw.replace("\\\"", "\"").replace("\\\n", ""))
        };
        self.bump(i + 1 - self.pos);
        Ok((line, Tok::Id(id, true)))
    }
}

struct Parser<'a> {
    lexer: Lexer<'a>,
    peeked: Option<Option<(usize, Tok<'a>)>>,
    dir: &'a StoreDir,
    /// Declared nodes and the references collected for them.
    nodes: BTreeMap<StorePath, Vec<StorePath>>,
    /// (reference, referrer, line) for every edge.
    edges: Vec<(StorePath, StorePath, usize)>,
}

impl<'a> Parser<'a> {
    fn peek(&mut self) -> Result<Option<&(usize, Tok<'a>)>, Error> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next()?);
        }
        Ok(self.peeked.as_ref().and_then(Option::as_ref))
    }

    fn next(&mut self) -> Result<Option<(usize, Tok<'a>)>, Error> {
        match self.peeked.take() {
            Some(tok) => Ok(tok),
            None => self.lexer.next(),
        }
    }

    /// The next token, or an error at the last line naming what was `expected`.
    fn expect_any(&mut self, expected: &str) -> Result<(usize, Tok<'a>), Error> {
        self.next()?.ok_or_else(|| {
            self.lexer.error(
                self.lexer.last_line(),
                format!("the file ends where {expected} was expected"),
            )
        })
    }

    fn unexpected(&self, line: usize, tok: &Tok<'_>, expected: &str) -> Error {
        self.lexer.error(
            line,
            format!("expected {expected}, found {}", tok.describe()),
        )
    }

    fn expect(&mut self, want: &Tok<'_>, expected: &str) -> Result<(), Error> {
        let (line, tok) = self.expect_any(expected)?;
        if tok == *want {
            Ok(())
        } else {
            Err(self.unexpected(line, &tok, expected))
        }
    }

    fn id(&mut self, expected: &str) -> Result<(usize, Cow<'a, str>), Error> {
        match self.expect_any(expected)? {
            (line, Tok::Id(id, _)) => Ok((line, id)),
            (line, tok) => Err(self.unexpected(line, &tok, expected)),
        }
    }

    fn graph(&mut self) -> Result<(), Error> {
        let (mut line, mut tok) = self.expect_any("`digraph`")?;
        if tok.is_keyword("strict") {
            (line, tok) = self.expect_any("`digraph`")?;
        }
        if tok.is_keyword("graph") {
            return Err(self.lexer.error(
                line,
                "an undirected `graph`: `nix-store --query --graph` prints a `digraph`",
            ));
        }
        if !tok.is_keyword("digraph") {
            return Err(self.unexpected(line, &tok, "`digraph`"));
        }
        if let Some((_, Tok::Id(..))) = self.peek()? {
            self.next()?; // the graph's name
        }
        self.expect(&Tok::LBrace, "`{`")?;
        while self.statement()? {}
        if let Some((line, tok)) = self.next()? {
            return Err(self.unexpected(line, &tok, "the end of the file after `}`"));
        }
        Ok(())
    }

    /// One statement; `false` after the closing `}`.
    fn statement(&mut self) -> Result<bool, Error> {
        let (line, tok) = self.expect_any("a statement or `}`")?;
        let first = match tok {
            Tok::RBrace => return Ok(false),
            Tok::Semicolon => return Ok(true),
            Tok::Id(..) if ["node", "edge", "graph"].iter().any(|k| tok.is_keyword(k)) => {
                self.attributes(true)?;
                return Ok(true);
            }
            Tok::Id(..) if tok.is_keyword("subgraph") => {
                return Err(self.lexer.error(line, "subgraphs are not supported"));
            }
            Tok::LBrace => return Err(self.lexer.error(line, "subgraphs are not supported")),
            Tok::Id(id, _) => id,
            other => return Err(self.unexpected(line, &other, "a node id or `}`")),
        };
        match self.peek()? {
            Some((_, Tok::Equals)) => {
                self.next()?;
                self.id("a value after `=`")?; // a graph attribute, `rankdir = LR`
            }
            Some((_, Tok::Arrow)) => {
                let mut from = self.store_path(line, &first)?;
                while let Some((_, Tok::Arrow)) = self.peek()? {
                    self.next()?;
                    let (to_line, to) = self.id("a node id after `->`")?;
                    let to = self.store_path(to_line, &to)?;
                    self.edges.push((from, to.clone(), to_line));
                    from = to;
                }
                self.attributes(false)?;
            }
            _ => {
                let path = self.store_path(line, &first)?;
                self.nodes.entry(path).or_default();
                self.attributes(false)?;
            }
        }
        Ok(true)
    }

    /// Attribute lists `[k = v, …]…`, values ignored; `required` for
    /// `node`/`edge`/`graph` statements, which are nothing without one.
    fn attributes(&mut self, required: bool) -> Result<(), Error> {
        let mut seen = false;
        while let Some((_, Tok::LBracket)) = self.peek()? {
            self.next()?;
            seen = true;
            loop {
                let (line, tok) = self.expect_any("an attribute or `]`")?;
                match tok {
                    Tok::RBracket => break,
                    Tok::Comma | Tok::Semicolon => {}
                    Tok::Id(..) => {
                        self.expect(&Tok::Equals, "`=` after an attribute name")?;
                        self.id("an attribute value")?;
                    }
                    other => return Err(self.unexpected(line, &other, "an attribute or `]`")),
                }
            }
        }
        if required && !seen {
            let (line, tok) = self.expect_any("`[`")?;
            return Err(self.unexpected(line, &tok, "`[`"));
        }
        Ok(())
    }

    fn store_path(&self, line: usize, id: &str) -> Result<StorePath, Error> {
        let parsed = if id.starts_with('/') {
            StorePath::parse(self.dir, id)
        } else {
            StorePath::from_base_name(self.dir, id)
        };
        parsed.map_err(|e| self.lexer.error(line, e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreLocation;
    use proptest::prelude::*;

    const ALL: &str = "ly8amrqf4a1z621x1fqz2d7hrnqhfbcx-golden-all";
    const APP: &str = "x7hp08d3r10i8gpcf5k1xsi0s3w3j4ps-golden-app-0.1";
    const ZLIB: &str = "9az7arzpsrg8vxgkwyfbv54489kxk1gy-golden-zlib-1.3";
    const LIBC: &str = "9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-golden-libc-2.40";

    /// The shape of nix 2.8's output for part of the golden closure:
    /// all → app → zlib → libc, app → libc (edges printed reference → referrer).
    fn sample() -> String {
        format!(
            r##"digraph G {{
"{ALL}" [label = "golden-all", shape = box, style = filled, fillcolor = "#ff0000"];
"{APP}" -> "{ALL}" [color = "green"];
"{APP}" [label = "golden-app-0.1", shape = box, style = filled, fillcolor = "#ff0000"];
"{ZLIB}" -> "{APP}" [color = "burlywood"];
"{LIBC}" -> "{APP}" [color = "black"];
"{ZLIB}" [label = "golden-zlib-1.3", shape = box, style = filled, fillcolor = "#ff0000"];
"{LIBC}" -> "{ZLIB}" [color = "red"];
"{LIBC}" [label = "golden-libc-2.40", shape = box, style = filled, fillcolor = "#ff0000"];
}}
"##
        )
    }

    fn run(text: &str) -> Result<BTreeMap<StorePath, Vec<StorePath>>, Error> {
        parse_graph(text.as_bytes(), Path::new("g.dot"), &StoreDir::default())
    }

    fn p(base: &str) -> StorePath {
        StorePath::from_base_name(&StoreDir::default(), base).unwrap()
    }

    #[track_caller]
    fn malformed_at(text: &str, want: usize) -> String {
        crate::closure::tests::expect_malformed_at(run(text), want)
    }

    #[test]
    fn edges_point_from_reference_to_referrer() {
        let g = run(&sample()).unwrap();
        assert_eq!(g.len(), 4);
        assert_eq!(g[&p(ALL)], [p(APP)]);
        assert_eq!(g[&p(APP)], [p(ZLIB), p(LIBC)]);
        assert_eq!(g[&p(ZLIB)], [p(LIBC)]);
        assert!(g[&p(LIBC)].is_empty());
    }

    #[test]
    fn reads_the_wider_dot_subset() {
        let text = format!(
            "/* a comment\n over lines */ strict digraph \"closure\" {{\n\
             // line comment\n# preprocessor line\n\
             graph [rankdir = LR]; node [shape=box]; edge [color=red]\n\
             rankdir = LR\n\
             \"{ALL}\"; \"{APP}\"\n\"/nix/store/{LIBC}\" [label=\"a \\\"quoted\\\" label\"]\n\
             \"{LIBC}\" -> \"{APP}\" -> \"{ALL}\" [a=b; c=d] [e=f]\n\
             \"{LIBC}\" -> \"/nix/store/{LIBC}\"\n}}"
        );
        let g = run(&text).unwrap();
        assert_eq!(g[&p(ALL)], [p(APP)]);
        assert_eq!(g[&p(APP)], [p(LIBC)]);
        // An explicit self-edge is kept; Nix itself never prints one.
        assert_eq!(g[&p(LIBC)], [p(LIBC)]);
    }

    #[test]
    fn malformed_inputs_fail_at_their_line() {
        let good = sample();
        let on_line = |n: usize, with: &str| {
            let mut lines: Vec<&str> = good.lines().collect();
            lines[n - 1] = with;
            lines.join("\n") + "\n"
        };
        malformed_at("", 1);
        malformed_at("\n\ngraph G {}", 3);
        malformed_at("digraph G {\n\"a\" -- \"b\"\n}", 2);
        malformed_at("digraph G {\nsubgraph x {}\n}", 2);
        malformed_at("digraph G {\n{ a }\n}", 2);
        malformed_at("digraph G\n", 1);
        // Unterminated string and comment: reported where they start.
        malformed_at(&on_line(10, "\"open"), 10);
        malformed_at(&on_line(3, "/* open"), 3);
        // A node that is not a store path; one outside the store directory.
        let m = malformed_at(&on_line(2, "\"not-a-store-path\" [label = \"x\"];"), 2);
        assert!(m.contains("not a valid store path"), "{m}");
        malformed_at(&on_line(4, &format!("\"/usr/{LIBC}\";")), 4);
        // An edge to a node that has no node statement.
        let m = malformed_at(&on_line(7, ""), 5);
        assert!(m.contains("no node statement"), "{m}");
        // Attribute syntax.
        malformed_at(&on_line(2, &format!("\"{ALL}\" [label];")), 2);
        malformed_at(&on_line(2, &format!("\"{ALL}\" [label = ];")), 2);
        malformed_at(&on_line(2, &format!("\"{ALL}\" [label = \"x\"")), 3);
        malformed_at(&on_line(2, "node;"), 2);
        malformed_at(&on_line(2, &format!("\"{ALL}\" -> ;")), 2);
        malformed_at(&on_line(2, &format!("\"{ALL}\":port;")), 2);
        malformed_at(&on_line(2, &format!("<{ALL}>;")), 2);
        // Bare ids cannot hold `-`, so a bare base name is a syntax error.
        malformed_at(&on_line(2, &format!("{ALL};")), 2);
        // Truncated: no closing brace; trailing data after it.
        malformed_at(&good[..good.len() - 3], 9);
        malformed_at(&format!("{good}digraph"), 11);
        // Not UTF-8.
        let mut bytes = good.clone().into_bytes();
        bytes[good.find(APP).unwrap()] = 0xff;
        let err = parse_graph(&bytes, Path::new("g.dot"), &StoreDir::default()).unwrap_err();
        assert!(matches!(err, Error::Malformed { line: 3, .. }), "{err}");
    }

    #[test]
    fn sizes_come_from_disk() {
        let root = tempfile::tempdir().unwrap();
        let store = StoreLocation {
            dir: StoreDir::default(),
            root: root.path().to_owned(),
        };
        let text = format!("digraph G {{\n\"{LIBC}\";\n}}\n");
        let err = parse(text.as_bytes(), Path::new("g.dot"), &store).unwrap_err();
        assert!(
            matches!(err, Error::NarSize { ref path, .. } if *path == p(LIBC)),
            "{err}"
        );

        let disk = store.disk_path(p(LIBC).as_str());
        std::fs::create_dir_all(disk.parent().unwrap()).unwrap();
        std::fs::write(&disk, b"hello").unwrap();
        let paths = parse(text.as_bytes(), Path::new("g.dot"), &store).unwrap();
        assert_eq!(paths[0].nar_size, 120);
        assert_eq!(paths[0].nar_hash, None);
    }

    proptest! {
        #[test]
        fn never_panics_on_text(text in "[ -~\n\u{e9}]{0,300}") {
            let _ = run(&text);
        }

        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_graph(&bytes, Path::new("g.dot"), &StoreDir::default());
        }

        #[test]
        fn never_panics_on_mangled_graphs(
            cut in 0usize..1200,
            at in 0usize..1200,
            junk in r#"[-\[\]{}";=>/*#\\ a\n]{0,8}"#,
        ) {
            let mut text = sample();
            let at = at.min(text.len());
            text.insert_str(at, &junk);
            text.truncate(cut.min(text.len()));
            let _ = run(&text);
        }
    }

    /// Deep or endless-looking input ends with an error, without recursion
    /// running out of stack.
    #[test]
    fn deep_nesting_and_repetition_end_cleanly() {
        for body in [
            "{".repeat(100_000),
            "[".repeat(100_000),
            "\"a\" -> ".repeat(100_000),
            "[label = ".repeat(100_000),
            "/*".repeat(100_000),
        ] {
            assert!(run(&format!("digraph G {{\n{body}")).is_err());
        }
    }
}
