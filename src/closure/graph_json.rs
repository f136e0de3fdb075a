//! exportReferencesGraph JSON: with `__structuredAttrs`, Nix writes the
//! closure of `exportReferencesGraph.<name>` into `.attrs.json` under
//! `<name>` as a list of `{path, narHash, narSize, references, closureSize}`
//! (hashes `sha256:<nix32>`, paths absolute). nixpkgs' streamLayeredImage
//! reads exactly this list; this module reads the list, not the whole
//! `.attrs.json` around it.

use std::io::Read;
use std::path::Path;

use super::json::{self, EntryListSeed, Paths};
use super::{Error, Interner, PathInfo};
use crate::nix::StoreDir;

/// Parses the list; `file` names it in errors.
pub(super) fn parse(input: impl Read, file: &Path, dir: &StoreDir) -> Result<Vec<PathInfo>, Error> {
    let interner = Interner::default();
    let paths = Paths {
        dir,
        interner: &interner,
        base_names: false,
    };
    json::parse(input, file, EntryListSeed(paths))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::NarHash;

    const LIBC: &str = "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-golden-libc-2.40";
    const ZLIB: &str = "/nix/store/9az7arzpsrg8vxgkwyfbv54489kxk1gy-golden-zlib-1.3";
    const LIBC_HASH: &str = "sha256:045xwjn7acfwqwqs6c22jw3r750w2200mf3a4syc46cimg6bz5xb";
    const ZLIB_HASH: &str = "sha256:1qlamlcq8xcp7c4w1zy3wcd83srswlhnqx28rpq4803117azyp51";

    /// Pretty-printed, one key a line, as `jq .graph` prints the build's `.attrs.json`.
    fn graph() -> String {
        format!(
            r#"[
  {{
    "closureSize": 73464,
    "narHash": "{ZLIB_HASH}",
    "narSize": 2208,
    "path": "{ZLIB}",
    "references": [
      "{ZLIB}",
      "{LIBC}"
    ]
  }},
  {{
    "closureSize": 71256,
    "narHash": "{LIBC_HASH}",
    "narSize": 71256,
    "path": "{LIBC}",
    "references": [
      "{LIBC}"
    ]
  }}
]
"#
        )
    }

    fn run(text: &str) -> Result<Vec<PathInfo>, Error> {
        parse(
            text.as_bytes(),
            Path::new("graph.json"),
            &StoreDir::default(),
        )
    }

    #[track_caller]
    fn malformed_at(text: &str, want: usize) -> String {
        match run(text) {
            Err(Error::Malformed {
                line,
                message,
                path,
            }) => {
                assert_eq!(line, want, "{message}");
                assert_eq!(path, Path::new("graph.json"));
                message
            }
            other => panic!("expected Malformed at line {want}, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_graph_list() {
        let paths = run(&graph()).unwrap();
        assert_eq!(paths.len(), 2);
        assert_eq!(paths[0].path.as_str(), ZLIB);
        assert_eq!(paths[0].nar_size, 2208);
        assert_eq!(paths[0].nar_hash, Some(NarHash::parse(ZLIB_HASH).unwrap()));
        assert_eq!(paths[0].references.len(), 2);
        assert!(run("[]").unwrap().is_empty());
    }

    #[test]
    fn extra_keys_and_sri_hashes_are_accepted() {
        let sri = NarHash::parse(LIBC_HASH).unwrap();
        let b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(sri.0)
        };
        let text = format!(
            r#"[{{"path":"{LIBC}","narHash":"sha256-{b64}","narSize":1,"references":[],"deriver":null,"signatures":[]}}]"#
        );
        assert_eq!(run(&text).unwrap()[0].nar_hash, Some(sri));
    }

    #[test]
    fn bad_values_fail_at_their_line() {
        let good = graph();
        let edit = |from: &str, to: &str| good.replacen(from, to, 1);
        // A path outside the store directory.
        let m = malformed_at(
            &edit(&format!(r#""path": "{ZLIB}""#), r#""path": "/usr/lib""#),
            6,
        );
        assert!(m.contains("not inside the store directory"), "{m}");
        // A bad reference, a bad hash, a negative size, a string size.
        malformed_at(
            &edit(&format!("\"{LIBC}\"\n    ]"), "\"/nix/store/x\"\n    ]"),
            9,
        );
        malformed_at(&edit(ZLIB_HASH, "md5:00"), 4);
        malformed_at(&edit("2208", "-1"), 5);
        malformed_at(&edit("2208", "\"2208\""), 5);
        // A missing field: reported where the entry ends.
        let m = malformed_at(&edit("\"narSize\": 2208,", ""), 11);
        assert!(m.contains("narSize"), "{m}");
        malformed_at(
            &edit("\"narSize\": 2208,", "\"narSize\": 2208, \"narSize\": 1,"),
            5,
        );
        // Syntax errors, truncation, trailing data and the wrong shape.
        // A missing comma: serde_json reports the line that lacks it.
        malformed_at(
            &edit("\"closureSize\": 71256,", "\"closureSize\": 71256"),
            14,
        );
        // Cut inside the last reference (line 18): reported where the file ends.
        malformed_at(&good[..good.len() - 40], 18);
        malformed_at(&format!("{good}[]"), 22);
        malformed_at(r#"{"graph": []}"#, 1);
        malformed_at("[1]", 1);
        malformed_at("", 1);
        malformed_at("[\n\n\"\u{0}\"]", 3);
    }

    #[test]
    fn valid_false_is_an_error() {
        let text = format!(r#"[{{"path":"{LIBC}","valid":false}}]"#);
        let m = malformed_at(&text, 1);
        assert!(m.contains("not valid"), "{m}");
    }

    /// Never panics, never loops: any bytes, a mangled valid file, and
    /// nesting deep enough to overflow a recursive parser's stack.
    mod untrusted {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_bytes_fail_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
                let _ = parse(&bytes[..], Path::new("in.json"), &StoreDir::default());
            }

            #[test]
            fn json_like_text_fails_cleanly(text in r#"[\[\]{}",:0-9a-z/ \n.-]{0,200}"#) {
                let _ = run(&text);
            }

            #[test]
            fn a_mangled_file_fails_cleanly(
                cut in 0usize..2000,
                at in 0usize..2000,
                junk in r#"[\[\]{}",:0-9a-z/ \n\u{e9}-]{0,10}"#,
            ) {
                let mut text = graph();
                let at = at.min(text.len());
                if text.is_char_boundary(at) {
                    text.insert_str(at, &junk);
                }
                let mut cut = cut.min(text.len());
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
                let _ = run(&text);
            }
        }

        #[test]
        fn deep_nesting_is_an_error_not_a_stack_overflow() {
            for open in ["[", "{\"a\":", "[{\"path\":"] {
                let text = open.repeat(100_000);
                assert!(run(&text).is_err());
            }
        }
    }
}
