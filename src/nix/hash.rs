//! NAR hashes (always sha256) in every spelling the closure sources use:
//! `sha256:<nixbase32>` (exportReferencesGraph, path-info), `sha256:<hex>`
//! or bare hex (`nix-store --dump-db`), SRI `sha256-<base64>` (newer path-info).

use std::fmt;

use base64::Engine as _;

use super::base32;

/// The sha256 of a store path's NAR serialisation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NarHash(pub [u8; 32]);

/// Why a hash string was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{text}` is not a sha256 hash (expected `sha256:<nixbase32>`, `sha256:<hex>` or `sha256-<base64>`)")]
pub struct HashParseError {
    /// The text that was read.
    pub text: String,
}

impl NarHash {
    /// Parses any of the spellings above.
    ///
    /// # Errors
    /// When the algorithm is not sha256 or the digest is malformed.
    pub fn parse(text: &str) -> Result<Self, HashParseError> {
        let err = || HashParseError {
            text: text.to_owned(),
        };
        let digest = if let Some(sri) = text.strip_prefix("sha256-") {
            base64::engine::general_purpose::STANDARD
                .decode(sri)
                .map_err(|_| err())?
        } else {
            let body = text.strip_prefix("sha256:").unwrap_or(text);
            match body.len() {
                64 => decode_hex(body).ok_or_else(err)?,
                52 => base32::decode(body.as_bytes(), 32).ok_or_else(err)?,
                _ => return Err(err()),
            }
        };
        let bytes: [u8; 32] = digest.try_into().map_err(|_| err())?;
        Ok(Self(bytes))
    }

    /// `sha256:<nixbase32>`, the spelling of exportReferencesGraph and path-info.
    #[must_use]
    pub fn to_nix32(&self) -> String {
        format!("sha256:{}", base32::encode(&self.0))
    }

    /// `sha256:<hex>`, the spelling of the Nix database's `ValidPaths.hash`.
    #[must_use]
    pub fn to_base16(&self) -> String {
        let mut s = String::with_capacity(71);
        s.push_str("sha256:");
        for b in self.0 {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    bytes
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
                return None;
            }
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

impl fmt::Display for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_nix32())
    }
}

impl fmt::Debug for NarHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarHash({})", self.to_nix32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    const NIX32: &str = "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
    const SRI: &str = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    #[test]
    fn every_spelling_gives_the_same_hash() {
        let a = NarHash::parse(HEX).unwrap();
        assert_eq!(NarHash::parse(&format!("sha256:{HEX}")).unwrap(), a);
        assert_eq!(NarHash::parse(NIX32).unwrap(), a);
        assert_eq!(NarHash::parse(SRI).unwrap(), a);
        assert_eq!(a.to_nix32(), NIX32);
        assert_eq!(a.to_base16(), format!("sha256:{HEX}"));
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "sha256:",
            "md5:abc",
            "sha256-!!",
            &HEX[1..],
            "sha256:zz",
        ] {
            assert!(NarHash::parse(bad).is_err(), "{bad}");
        }
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_fails_cleanly(text in "(sha256[:-])?[0-9a-zA-Z+/=\u{e9}]{0,80}") {
            if let Ok(hash) = NarHash::parse(&text) {
                // A parsed hash round-trips through every spelling.
                proptest::prop_assert_eq!(NarHash::parse(&hash.to_nix32()), Ok(hash));
                proptest::prop_assert_eq!(NarHash::parse(&hash.to_base16()), Ok(hash));
            }
        }

        #[test]
        fn any_string_fails_cleanly(text in "\\PC{0,100}") {
            let _ = NarHash::parse(&text);
        }
    }
}
