//! `nix path-info --json --recursive` output, in both shapes Nix has
//! printed: a list of objects with a `path` key (Nix ≤ 2.18), and an object
//! keyed by store path (Nix ≥ 2.19), where a path that is not valid maps
//! to `null`. Hashes are `sha256:<nix32>` (old), SRI (2.4+) or hex;
//! references and keys are absolute paths or base names (newer schemas).

use std::fmt;
use std::io::Read;
use std::path::Path;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use super::json::{self, EntryListSeed, EntrySeed, PathSeed, Paths};
use super::{Error, Interner, PathInfo};
use crate::nix::StoreDir;

/// Parses either shape; `file` names it in errors.
pub(super) fn parse(input: impl Read, file: &Path, dir: &StoreDir) -> Result<Vec<PathInfo>, Error> {
    let interner = Interner::default();
    let paths = Paths {
        dir,
        interner: &interner,
        base_names: true,
    };
    json::parse(input, file, AnyShape(paths))
}

struct AnyShape<'a>(Paths<'a>);

impl<'de> DeserializeSeed<'de> for AnyShape<'_> {
    type Value = Vec<PathInfo>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for AnyShape<'_> {
    type Value = Vec<PathInfo>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of path entries or an object keyed by store path")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        EntryListSeed(self.0).visit_seq(seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key_seed(PathSeed(self.0))? {
            entries.push(map.next_value_seed(EntrySeed {
                paths: self.0,
                key: Some(&key),
            })?);
        }
        Ok(entries)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::Error;
    use crate::nix::NarHash;

    const LIBC: &str = "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-golden-libc-2.40";
    const ZLIB: &str = "/nix/store/9az7arzpsrg8vxgkwyfbv54489kxk1gy-golden-zlib-1.3";
    const LIBC_SRI: &str = "sha256-q5e/zKuRGcK8Jmq4CoAQHJSTB5dCMKMxx9wxdazkvRA=";
    const ZLIB_SRI: &str = "sha256-oVz/1QlhAETwzUh0bCHlOuuBGuPD/8AJO5d1hBmtiuI=";

    fn run(text: &str) -> Result<Vec<PathInfo>, Error> {
        parse(
            text.as_bytes(),
            Path::new("info.json"),
            &StoreDir::default(),
        )
    }

    #[track_caller]
    fn malformed_at(text: &str, want: usize) -> String {
        crate::closure::tests::expect_malformed_at(run(text), want)
    }

    /// nix 2.8's array form (as printed by this machine's `nix path-info`).
    fn array_form() -> String {
        format!(
            r#"[{{"path":"{ZLIB}","narHash":"{ZLIB_SRI}","narSize":2208,"references":["{ZLIB}","{LIBC}"],"deriver":"/nix/store/1a6xx136m254wm9lx9byb4nik2swii5s-golden-zlib-1.3.drv","registrationTime":1795772767,"ultimate":true}},
{{"path":"{LIBC}","narHash":"{LIBC_SRI}","narSize":71256,"references":["{LIBC}"],"registrationTime":1795772767,"ultimate":true}}]"#
        )
    }

    #[test]
    fn array_and_object_forms_agree() {
        let from_array = run(&array_form()).unwrap();
        assert_eq!(from_array.len(), 2);
        assert_eq!(
            from_array[1].nar_hash,
            Some(NarHash::parse(LIBC_SRI).unwrap())
        );

        // The object form with base-name references, nix32 and hex hashes.
        let zlib_nix32 = NarHash::parse(ZLIB_SRI).unwrap().to_nix32();
        let libc_hex = NarHash::parse(LIBC_SRI).unwrap().to_base16();
        let (zlib_base, libc_base) = (&ZLIB[11..], &LIBC[11..]);
        let object = format!(
            r#"{{
  "{ZLIB}": {{"narHash": "{zlib_nix32}", "narSize": 2208, "references": ["{zlib_base}", "{libc_base}"]}},
  "{libc_base}": {{"narHash": "{libc_hex}", "narSize": 71256, "references": ["{LIBC}"], "ca": null}}
}}"#
        );
        assert_eq!(run(&object).unwrap(), from_array);
    }

    #[test]
    fn invalid_paths_are_errors() {
        let m = malformed_at(&format!("{{\n\"{LIBC}\": null\n}}"), 2);
        assert!(m.contains("not valid"), "{m}");
        let m = malformed_at(
            &format!("[\n{{\"path\": \"{LIBC}\", \"valid\": false}}\n]"),
            2,
        );
        assert!(m.contains("not valid"), "{m}");
    }

    #[test]
    fn bad_values_fail_at_their_line() {
        let good = array_form();
        // A key outside the store, a key that disagrees with its entry's path.
        malformed_at(&format!("{{\n\n\"/usr/{}\": null}}", &LIBC[11..]), 3);
        malformed_at(
            &format!("{{\"{LIBC}\":\n{{\"path\":\"{ZLIB}\",\"narHash\":\"{LIBC_SRI}\",\"narSize\":1,\"references\":[]}}}}"),
            2,
        );
        // Second line: a bad reference, a bad hash, a missing size.
        malformed_at(
            &good.replacen(&format!("[\"{LIBC}\"]"), "[\"glibc\"]", 1),
            2,
        );
        malformed_at(&good.replacen(LIBC_SRI, "sha256-short", 1), 2);
        malformed_at(&good.replacen("\"narSize\":71256,", "", 1), 2);
        malformed_at(
            &good.replacen("\"narSize\":2208,", "\"narSize\":2.5,", 1),
            1,
        );
        malformed_at(&good[..good.len() - 3], 2);
        malformed_at("\"a string\"", 1);
        malformed_at("{\"x\": 1}", 1);
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
                let mut text = array_form();
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
