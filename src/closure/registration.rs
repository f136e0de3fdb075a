//! The registration format: the `registration` file of nixpkgs'
//! `closureInfo` and the output of `nix-store --dump-db`, the two inputs
//! `nix-store --load-db` accepts.
//!
//! Per path, one value a line:
//!
//! ```text
//! /nix/store/…-golden-libc-2.40      store path
//! ab97bf…4bd10                        NAR hash: bare base16 (dump-db) or sha256:<nix32> (closureInfo)
//! 71256                               NAR size
//! /nix/store/…-golden-libc-2.40.drv   deriver, empty in closureInfo
//! 1                                   number of references
//! /nix/store/…-golden-libc-2.40       that many references
//! ```

use std::path::Path;

use super::{malformed, Error, Interner, PathInfo};
use crate::nix::{NarHash, StoreDir, StorePath};

/// Parses a whole registration file; `file` names it in errors.
pub(super) fn parse(bytes: &[u8], file: &Path, dir: &StoreDir) -> Result<Vec<PathInfo>, Error> {
    let mut lines = Lines::new(bytes, file);
    let mut paths = Vec::new();
    let interner = Interner::default();
    let store_path = |text: &str, file: &Path, line: usize| {
        interner
            .parse(dir, text)
            .map_err(|e| malformed(file, line, e.to_string()))
    };
    while let Some((start, text)) = lines.next()? {
        if text.is_empty() {
            if lines.rest_is_blank() {
                break; // tolerate blank lines at the very end, as `load-db` does
            }
            return Err(malformed(
                file,
                start,
                "expected a store path, found an empty line",
            ));
        }
        let path = store_path(text, file, start)?;
        let mut expect = |what: &str| lines.expect(what, &path, start);

        let (n, text) = expect("its NAR hash")?;
        let nar_hash = NarHash::parse(text).map_err(|e| malformed(file, n, e.to_string()))?;

        let (n, text) = expect("its NAR size")?;
        let nar_size = text.parse::<u64>().map_err(|_| {
            malformed(
                file,
                n,
                format!("`{text}` is not a NAR size (a decimal number of bytes)"),
            )
        })?;

        let (n, text) = expect("its deriver (or an empty line)")?;
        if !text.is_empty() {
            // Checked, not kept: no need to remember it.
            StorePath::parse(dir, text).map_err(|e| malformed(file, n, e.to_string()))?;
        }

        let (n, text) = expect("its number of references")?;
        let count = text
            .parse::<usize>()
            .map_err(|_| malformed(file, n, format!("`{text}` is not a number of references")))?;

        // No `with_capacity(count)`: the count is input, not a promise.
        let mut references = Vec::new();
        for _ in 0..count {
            let (n, text) = lines.expect("a reference", &path, start)?;
            references.push(store_path(text, file, n)?);
        }
        paths.push(PathInfo {
            path,
            nar_hash: Some(nar_hash),
            nar_size,
            references,
        });
    }
    Ok(paths)
}

/// The lines of a file, numbered from 1, each checked to be UTF-8.
struct Lines<'a> {
    rest: std::slice::Split<'a, u8, fn(&u8) -> bool>,
    /// Lines in the file: a final `\n` ends the last line, it does not start an empty one.
    total: usize,
    number: usize,
    file: &'a Path,
}

impl<'a> Lines<'a> {
    fn new(bytes: &'a [u8], file: &'a Path) -> Self {
        let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let is_newline: fn(&u8) -> bool = |&b| b == b'\n';
        let total = if bytes.is_empty() {
            0
        } else {
            body.iter().filter(|&&b| b == b'\n').count() + 1
        };
        let rest = if bytes.is_empty() { &[][..] } else { body };
        Self {
            // `split` yields one empty piece for an empty slice; `total`
            // bounds the iteration so that piece is never read.
            rest: rest.split(is_newline),
            total,
            number: 0,
            file,
        }
    }

    fn next(&mut self) -> Result<Option<(usize, &'a str)>, Error> {
        if self.number == self.total {
            return Ok(None);
        }
        let Some(bytes) = self.rest.next() else {
            return Ok(None);
        };
        self.number += 1;
        let text = std::str::from_utf8(bytes)
            .map_err(|_| malformed(self.file, self.number, "the line is not UTF-8 text"))?;
        Ok(Some((self.number, text)))
    }

    /// The next line, or an error at the last line saying the file ends
    /// inside the entry of `path` (which started at line `start`).
    fn expect(
        &mut self,
        what: &str,
        path: &StorePath,
        start: usize,
    ) -> Result<(usize, &'a str), Error> {
        self.next()?.ok_or_else(|| {
            malformed(
                self.file,
                self.total.max(1),
                format!(
                    "the file ends inside the entry of `{path}` (from line {start}): expected {what}"
                ),
            )
        })
    }

    fn rest_is_blank(&mut self) -> bool {
        self.rest.clone().all(<[u8]>::is_empty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIBC: &str = "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-golden-libc-2.40";
    const ZLIB: &str = "/nix/store/9az7arzpsrg8vxgkwyfbv54489kxk1gy-golden-zlib-1.3";
    const HEX: &str = "ab97bfccab9119c2bc266ab80a80101c949307974230a331c7dc3175ace4bd10";

    /// `nix-store --dump-db` as nix 2.8 prints it for libc and zlib.
    fn dump_db() -> String {
        format!(
            "{LIBC}\n{HEX}\n71256\n/nix/store/8m4sk0v28m83g5i58y36alvw1fqis3ki-golden-libc-2.40.drv\n1\n{LIBC}\n\
             {ZLIB}\na15cffd509610044f0cd48746c21e53aeb811ae3c3ffc0093b97758419ad8ae2\n2208\n\
             /nix/store/1a6xx136m254wm9lx9byb4nik2swii5s-golden-zlib-1.3.drv\n2\n{ZLIB}\n{LIBC}\n"
        )
    }

    fn run(text: &str) -> Result<Vec<PathInfo>, Error> {
        parse(text.as_bytes(), Path::new("reg"), &StoreDir::default())
    }

    #[track_caller]
    fn malformed_at(text: &str, want: usize) -> String {
        crate::closure::tests::expect_malformed_at(run(text), want)
    }

    #[test]
    fn parses_dump_db() {
        let paths = run(&dump_db()).unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!(paths[0].path.as_str(), LIBC);
        assert_eq!(paths[0].nar_size, 71256);
        assert_eq!(paths[0].nar_hash, Some(NarHash::parse(HEX).unwrap()));
        assert_eq!(paths[0].references.len(), 1);
        assert_eq!(paths[1].references[1].as_str(), LIBC);
    }

    #[test]
    fn parses_closure_info_with_nix32_hash_and_empty_deriver() {
        let nix32 = NarHash::parse(HEX).unwrap().to_nix32();
        let text = format!("{LIBC}\n{nix32}\n71256\n\n0\n");
        let paths = run(&text).unwrap();
        assert_eq!(paths[0].nar_hash, Some(NarHash::parse(HEX).unwrap()));
        assert!(paths[0].references.is_empty());
        // Without a final newline, and with trailing blank lines.
        assert_eq!(run(&format!("{LIBC}\n{nix32}\n71256\n\n0")).unwrap(), paths);
        assert_eq!(
            run(&format!("{LIBC}\n{nix32}\n71256\n\n0\n\n\n")).unwrap(),
            paths
        );
    }

    #[test]
    fn empty_input_is_an_empty_list() {
        assert!(run("").unwrap().is_empty());
        assert!(run("\n").unwrap().is_empty());
    }

    #[test]
    fn truncated_input_fails_at_its_last_line() {
        let text = dump_db();
        let lines: Vec<&str> = text.lines().collect();
        // Cut after every line that leaves an entry incomplete.
        for keep in (1..lines.len()).filter(|&k| k != 6) {
            let cut = lines[..keep].join("\n") + "\n";
            let message = malformed_at(&cut, keep);
            assert!(message.contains("ends inside the entry"), "{message}");
        }
    }

    #[test]
    fn bad_values_fail_at_their_line() {
        let good = dump_db();
        let replace = |line: usize, with: &str| {
            let mut lines: Vec<&str> = good.lines().collect();
            lines[line - 1] = with;
            lines.join("\n") + "\n"
        };
        malformed_at(&replace(1, "/usr/lib/libc.so"), 1);
        malformed_at(&replace(1, "/nix/store/short-name"), 1);
        malformed_at(&replace(2, "md5:abc"), 2);
        malformed_at(&replace(3, "-5"), 3);
        malformed_at(&replace(3, "12 kB"), 3);
        malformed_at(
            &replace(4, "/other/store/8m4sk0v28m83g5i58y36alvw1fqis3ki-x.drv"),
            4,
        );
        malformed_at(&replace(5, "one"), 5);
        malformed_at(
            &replace(6, "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-golden libc"),
            6,
        );
        malformed_at(&replace(7, ""), 7);
        // More references announced than listed: the next entry's hash is read as one.
        malformed_at(&replace(5, "2"), 8);
    }

    #[test]
    fn a_path_outside_the_store_dir_names_the_line() {
        let text = dump_db();
        let err = parse(
            text.as_bytes(),
            Path::new("reg"),
            &StoreDir::new("/gnu/store").unwrap(),
        )
        .unwrap_err();
        assert!(matches!(err, Error::Malformed { line: 1, .. }), "{err}");
        assert!(err.to_string().starts_with("reg:1: "), "{err}");
    }

    #[test]
    fn non_utf8_fails_at_its_line() {
        let mut bytes = dump_db().into_bytes();
        bytes.splice(0..0, format!("{LIBC}\n{HEX}\n1\n\n0\n").bytes());
        bytes[LIBC.len() + 1 + HEX.len() + 1] = 0xff; // the NAR size line
        let err = parse(&bytes, Path::new("reg"), &StoreDir::default()).unwrap_err();
        assert!(matches!(err, Error::Malformed { line: 3, .. }), "{err}");
    }

    proptest! {
        #[test]
        fn never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, Path::new("reg"), &StoreDir::default());
        }

        #[test]
        fn never_panics_on_mangled_dump_db(
            cut in 0usize..600,
            at in 0usize..600,
            junk in "[0-9a-z/\n -]{0,12}",
        ) {
            let mut text = dump_db();
            let at = at.min(text.len());
            text.insert_str(at, &junk);
            text.truncate(cut.min(text.len()));
            let _ = run(&text);
        }
    }

    /// A reference count far beyond the file is an error at the file's
    /// end, not an allocation or a loop of that size.
    #[test]
    fn a_huge_reference_count_ends_at_the_end_of_the_file() {
        let text = format!("{LIBC}\n{HEX}\n1\n\n{}\n{LIBC}\n", usize::MAX);
        assert!(run(&text).is_err());
        let text = format!("{LIBC}\n{HEX}\n1\n\n99999999999999999999999\n");
        assert!(run(&text).is_err());
    }
}
