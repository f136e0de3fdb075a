//! A binary cache's metadata: `<hash>.narinfo`, `nix-cache-info`, and the
//! ed25519 signatures over a narinfo's fingerprint.
//!
//! Both files are `Key: value` lines. Like Nix, unknown keys are ignored (a
//! newer cache may add some); unlike Nix, a key given twice is an error
//! rather than "the last one wins", so a cache cannot slip a second
//! `NarHash` past a reader that looks at the first. The text comes from the
//! network, so it is capped ([`MAX_NARINFO`]) before it is parsed.
//!
//! A signature (`Sig: <key name>:<base64 of 64 bytes>`) signs the
//! fingerprint `1;<store path>;<narHash as sha256:nix32>;<narSize>;<references
//! as full paths, sorted, comma-separated>` (Nix's `ValidPathInfo::fingerprint`).
//! Trusted keys are written `<name>:<base64 of 32 bytes>` as in `nix.conf`'s
//! `trusted-public-keys`. Verification uses `ed25519-dalek`'s strict check.

use std::collections::BTreeSet;
use std::fmt;

use base64::Engine as _;

use super::{NarHash, StoreDir, StorePath};

/// The most bytes of a narinfo (or `nix-cache-info`) that are read: a
/// narinfo with a thousand references is about 70 KiB.
pub const MAX_NARINFO: u64 = 1 << 20;

/// How a NAR file is compressed (`Compression:`; Nix's default is bzip2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// `none`: the file is the NAR.
    None,
    /// `xz`.
    Xz,
    /// `zstd`.
    Zstd,
    /// `bzip2`, also when the field is absent.
    Bzip2,
    /// `gzip` (`nix copy --to '…?compression=gzip'`).
    Gzip,
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Xz => "xz",
            Self::Zstd => "zstd",
            Self::Bzip2 => "bzip2",
            Self::Gzip => "gzip",
        })
    }
}

impl Compression {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "none" | "" => Some(Self::None),
            "xz" => Some(Self::Xz),
            "zstd" => Some(Self::Zstd),
            "bzip2" => Some(Self::Bzip2),
            "gzip" => Some(Self::Gzip),
            _ => None,
        }
    }
}

/// One store path's entry in a binary cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NarInfo {
    /// `StorePath`.
    pub store_path: StorePath,
    /// `URL`: where the (compressed) NAR is, relative to the cache.
    pub url: String,
    /// `Compression`.
    pub compression: Compression,
    /// `FileHash`: sha256 of the file at `url`, when given.
    pub file_hash: Option<NarHash>,
    /// `FileSize`: bytes of the file at `url`, when given.
    pub file_size: Option<u64>,
    /// `NarHash`.
    pub nar_hash: NarHash,
    /// `NarSize`.
    pub nar_size: u64,
    /// `References`, as store paths, sorted and unique.
    pub references: Vec<StorePath>,
    /// `Deriver`: the base name of the `.drv`, when given.
    pub deriver: Option<String>,
    /// `Sig` lines, raw (`<key name>:<base64>`).
    pub sigs: Vec<String>,
    /// `CA`, raw, when given.
    pub ca: Option<String>,
}

/// Why a narinfo or `nix-cache-info` was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    /// Larger than [`MAX_NARINFO`].
    #[error("larger than {MAX_NARINFO} bytes")]
    TooLarge,
    /// Not UTF-8.
    #[error("not UTF-8 text")]
    NotText,
    /// A line without `: `.
    #[error("line {line}: expected `Key: value`")]
    Syntax {
        /// 1-based.
        line: usize,
    },
    /// A key given twice.
    #[error("line {line}: `{key}` given twice")]
    Duplicate {
        /// 1-based.
        line: usize,
        /// The key.
        key: String,
    },
    /// A required key absent.
    #[error("no `{0}` field")]
    Missing(&'static str),
    /// A value that is not what its key needs.
    #[error("line {line}: bad `{key}`: {reason}")]
    Value {
        /// 1-based.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

/// The `Key: value` lines of `text`, each with its 1-based line number;
/// a duplicate known key is an error.
fn fields<'a>(
    text: &'a [u8],
    known: &[&str],
) -> Result<Vec<(usize, &'a str, &'a str)>, ParseError> {
    if text.len() as u64 > MAX_NARINFO {
        return Err(ParseError::TooLarge);
    }
    let text = std::str::from_utf8(text).map_err(|_| ParseError::NotText)?;
    let mut out: Vec<(usize, &str, &str)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        if line.is_empty() {
            continue;
        }
        // Nix splits at the first `: `; a value may be empty (`References: `).
        let (key, value) = match line.split_once(": ") {
            Some(kv) => kv,
            None => match line.strip_suffix(':') {
                Some(key) => (key, ""),
                None => return Err(ParseError::Syntax { line: line_no }),
            },
        };
        if !known.contains(&key) {
            continue; // as Nix: a field this reader does not know is ignored
        }
        // `Sig` may repeat: one line per signature.
        if key != "Sig" && out.iter().any(|(_, k, _)| *k == key) {
            return Err(ParseError::Duplicate {
                line: line_no,
                key: key.to_owned(),
            });
        }
        out.push((line_no, key, value));
    }
    Ok(out)
}

fn bad(line: usize, key: &str, reason: impl Into<String>) -> ParseError {
    ParseError::Value {
        line,
        key: key.to_owned(),
        reason: reason.into(),
    }
}

fn number(line: usize, key: &str, value: &str) -> Result<u64, ParseError> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad(line, key, format!("`{value}` is not a number")));
    }
    value
        .parse()
        .map_err(|_| bad(line, key, format!("`{value}` is too large")))
}

/// A sha256 written `sha256:<nixbase32>` (or hex), as Nix writes narinfo
/// hashes, or SRI `sha256-<base64>`, which Nix's parser takes too (found
/// by the QA round: a narinfo Nix reads was called malformed). The
/// fingerprint a `Sig` covers is nixbase32 whatever the spelling.
fn sha256(line: usize, key: &str, value: &str) -> Result<NarHash, ParseError> {
    if !value.starts_with("sha256:") && !value.starts_with("sha256-") {
        return Err(bad(line, key, format!("`{value}` is not `sha256:…`")));
    }
    NarHash::parse(value).map_err(|e| bad(line, key, e.to_string()))
}

impl NarInfo {
    /// Parses a narinfo of a cache whose store directory is `dir`.
    ///
    /// # Errors
    /// When it is too large, not text, has a duplicate or malformed field,
    /// or lacks `StorePath`, `URL`, `NarHash` or `NarSize`.
    pub fn parse(dir: &StoreDir, text: &[u8]) -> Result<Self, ParseError> {
        const KNOWN: &[&str] = &[
            "StorePath",
            "URL",
            "Compression",
            "FileHash",
            "FileSize",
            "NarHash",
            "NarSize",
            "References",
            "Deriver",
            "Sig",
            "CA",
        ];
        let mut store_path = None;
        let mut url = None;
        let mut compression = Compression::Bzip2;
        let (mut file_hash, mut file_size, mut nar_hash, mut nar_size) = (None, None, None, None);
        let mut references = BTreeSet::new();
        let mut deriver = None;
        let mut sigs = Vec::new();
        let mut ca = None;
        for (line, key, value) in fields(text, KNOWN)? {
            match key {
                "StorePath" => {
                    let path =
                        StorePath::parse(dir, value).map_err(|e| bad(line, key, e.to_string()))?;
                    store_path = Some(path);
                }
                "URL" => {
                    // Relative to the cache; never absolute, never up and out.
                    if value.is_empty()
                        || value.starts_with('/')
                        || value.contains("://")
                        || value.split('/').any(|c| c == ".." || c == ".")
                        || value
                            .bytes()
                            .any(|b| b.is_ascii_control() || b == b'?' || b == b'#' || b == b'\\')
                    {
                        return Err(bad(
                            line,
                            key,
                            format!("`{value}` is not a relative path in the cache"),
                        ));
                    }
                    url = Some(value.to_owned());
                }
                "Compression" => {
                    compression = Compression::parse(value).ok_or_else(|| {
                        bad(
                            line,
                            key,
                            format!("unknown compression `{value}` (known: xz, zstd, bzip2, gzip, none; `nix copy --to '…?compression=zstd'` writes one)"),
                        )
                    })?;
                }
                "FileHash" => file_hash = Some(sha256(line, key, value)?),
                "FileSize" => file_size = Some(number(line, key, value)?),
                "NarHash" => nar_hash = Some(sha256(line, key, value)?),
                "NarSize" => nar_size = Some(number(line, key, value)?),
                "References" => {
                    for base in value.split(' ').filter(|s| !s.is_empty()) {
                        let path = StorePath::from_base_name(dir, base)
                            .map_err(|e| bad(line, key, e.to_string()))?;
                        references.insert(path);
                    }
                }
                "Deriver" if !value.is_empty() && value != "unknown-deriver" => {
                    StorePath::from_base_name(dir, value)
                        .map_err(|e| bad(line, key, e.to_string()))?;
                    deriver = Some(value.to_owned());
                }
                "Sig" => sigs.push(value.to_owned()),
                "CA" => ca = Some(value.to_owned()),
                _ => {}
            }
        }
        let nar_size = nar_size.ok_or(ParseError::Missing("NarSize"))?;
        if nar_size == 0 {
            return Err(ParseError::Missing("NarSize"));
        }
        Ok(Self {
            store_path: store_path.ok_or(ParseError::Missing("StorePath"))?,
            url: url.ok_or(ParseError::Missing("URL"))?,
            compression,
            file_hash,
            file_size,
            nar_hash: nar_hash.ok_or(ParseError::Missing("NarHash"))?,
            nar_size,
            references: references.into_iter().collect(),
            deriver,
            sigs,
            ca,
        })
    }

    /// What a signature signs: `1;<path>;<narHash>;<narSize>;<refs>`.
    #[must_use]
    pub fn fingerprint(&self) -> String {
        let refs: Vec<&str> = self.references.iter().map(StorePath::as_str).collect();
        format!(
            "1;{};{};{};{}",
            self.store_path,
            self.nar_hash.to_nix32(),
            self.nar_size,
            refs.join(",")
        )
    }

    /// The name of a trusted key with a valid signature on this narinfo,
    /// or why there is none.
    ///
    /// # Errors
    /// [`SignatureError`] when no `Sig` is valid under any of `keys`.
    pub fn verify<'k>(&self, keys: &'k [PublicKey]) -> Result<&'k str, SignatureError> {
        if self.sigs.is_empty() {
            return Err(SignatureError::Unsigned);
        }
        let fingerprint = self.fingerprint();
        let mut untrusted = Vec::new();
        let mut invalid = false;
        for sig in &self.sigs {
            let Some((name, data)) = sig.split_once(':') else {
                invalid = true;
                continue;
            };
            let Some(key) = keys.iter().find(|k| k.name == name) else {
                untrusted.push(name.to_owned());
                continue;
            };
            let Some(signature) = base64::engine::general_purpose::STANDARD
                .decode(data)
                .ok()
                .and_then(|b| <[u8; 64]>::try_from(b).ok())
            else {
                invalid = true;
                continue;
            };
            let signature = ed25519_dalek::Signature::from_bytes(&signature);
            if key
                .key
                .verify_strict(fingerprint.as_bytes(), &signature)
                .is_ok()
            {
                return Ok(&key.name);
            }
            invalid = true;
        }
        if invalid {
            Err(SignatureError::Invalid)
        } else {
            Err(SignatureError::Untrusted(untrusted.join(", ")))
        }
    }
}

/// Why a narinfo's signatures were refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Sig` line at all.
    #[error("it is not signed")]
    Unsigned,
    /// Signed only by keys that are not trusted.
    #[error("it is signed only by untrusted keys ({0})")]
    Untrusted(String),
    /// A signature by a trusted key does not verify (or is malformed).
    #[error("its signature does not verify with the trusted key (tampered narinfo or wrong key)")]
    Invalid,
}

/// A trusted public key, `name:base64` as in `trusted-public-keys`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// The key's name, matched against a `Sig`'s.
    pub name: String,
    key: ed25519_dalek::VerifyingKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.key.as_bytes());
        write!(f, "{}:{b64}", self.name)
    }
}

/// Why a public key was not understood.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// Not `name:base64` of a 32-byte ed25519 point.
    #[error("`{text}` is not a public key (expected `name:<base64 of 32 bytes>`)")]
    Malformed {
        /// The text (a public key is no secret).
        text: String,
    },
    /// A secret key (`nix key generate-secret`'s 64 bytes) where a public
    /// one belongs: only its name is kept, so the secret never reaches an
    /// error message or a CI log.
    #[error(
        "`{name}:…` is a secret key, not a public key (give its public half, as `nix key convert-secret-to-public` prints it)"
    )]
    Secret {
        /// The key's name (empty when there was none).
        name: String,
    },
}

impl PublicKey {
    /// Parses `name:base64`.
    ///
    /// # Errors
    /// When the name is empty or the key is not 32 bytes of a valid point.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let (name, data) = text.split_once(':').unwrap_or(("", text));
        let decoded = base64::engine::general_purpose::STANDARD.decode(data.trim());
        if decoded.as_ref().is_ok_and(|b| b.len() == 64) {
            return Err(KeyError::Secret {
                name: name.chars().take(200).collect(),
            });
        }
        let err = || KeyError::Malformed {
            text: text.chars().take(200).collect(),
        };
        if name.is_empty() {
            return Err(err());
        }
        let bytes: [u8; 32] = decoded
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(err)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| err())?;
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }
}

/// `nix-cache-info`: the cache's store directory (`StoreDir`, required).
///
/// # Errors
/// When it is too large, not text, or has no `StoreDir` or a bad one.
pub fn parse_cache_info(text: &[u8]) -> Result<StoreDir, ParseError> {
    let fields = fields(text, &["StoreDir"])?;
    let (line, key, value) = fields.first().ok_or(ParseError::Missing("StoreDir"))?;
    StoreDir::new(value).map_err(|e| bad(*line, key, e.to_string()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Written by Nix 2.8 `nix copy --to file://…?secret-key=…` with the key below.
    const NARINFO: &str = "StorePath: /nix/store/99d852jigpx1za4vph0jaa5cg3bs51pn-hello-app-1.0
URL: nar/08vmahjc5bqk76jzdbkvi7y71g122p8pwzdlb5lrvhnkf70xsqq0.nar.zst
Compression: zstd
FileHash: sha256:08vmahjc5bqk76jzdbkvi7y71g122p8pwzdlb5lrvhnkf70xsqq0
FileSize: 338
NarHash: sha256:0p20p1bgs5880bhar4a273avhrvm4xbcz9kn39kw5rgi1igfcqkw
NarSize: 1032
References: 6dj55pjpgipb51j3l1pvwvnwjm31h50c-busybox-static-1.35 ghhbblxfkcp63fk5s077rm87xh2jx2gs-greeting-1.0
Deriver: 50vkm9q585s404v9glsv9sdgz01nb8c7-hello-app-1.0.drv
Sig: test-1:Tc8rq/e/xeUJGWkroZChyOragQ6B+XXeX92b7/gjMiSzqVGeWHWm2BmH+IV/LbF2c1PZWDvQa5AI3XZLKdA5DQ==
";
    const KEY: &str = "test-1:7kTP0iSKeWH1BOl03oZNbMQDyxuH5WBEAJL/5Waazrg=";

    fn parse(text: &str) -> Result<NarInfo, ParseError> {
        NarInfo::parse(&StoreDir::default(), text.as_bytes())
    }

    #[test]
    fn nix_narinfo_parses_and_verifies() {
        let info = parse(NARINFO).unwrap();
        assert_eq!(info.compression, Compression::Zstd);
        assert_eq!(info.nar_size, 1032);
        assert_eq!(info.file_size, Some(338));
        assert_eq!(info.references.len(), 2);
        assert_eq!(
            info.fingerprint(),
            "1;/nix/store/99d852jigpx1za4vph0jaa5cg3bs51pn-hello-app-1.0;\
             sha256:0p20p1bgs5880bhar4a273avhrvm4xbcz9kn39kw5rgi1igfcqkw;1032;\
             /nix/store/6dj55pjpgipb51j3l1pvwvnwjm31h50c-busybox-static-1.35,\
             /nix/store/ghhbblxfkcp63fk5s077rm87xh2jx2gs-greeting-1.0"
        );
        let key = PublicKey::parse(KEY).unwrap();
        assert_eq!(info.verify(std::slice::from_ref(&key)), Ok("test-1"));
        assert_eq!(format!("{key:?}"), KEY);
    }

    #[test]
    fn tampering_and_wrong_keys_fail() {
        let key = PublicKey::parse(KEY).unwrap();
        let tampered = parse(&NARINFO.replace("NarSize: 1032", "NarSize: 1040")).unwrap();
        assert_eq!(
            tampered.verify(std::slice::from_ref(&key)),
            Err(SignatureError::Invalid)
        );
        let dropped_ref =
            parse(&NARINFO.replace(" ghhbblxfkcp63fk5s077rm87xh2jx2gs-greeting-1.0", "")).unwrap();
        assert_eq!(
            dropped_ref.verify(std::slice::from_ref(&key)),
            Err(SignatureError::Invalid)
        );
        let other = PublicKey::parse("other:7kTP0iSKeWH1BOl03oZNbMQDyxuH5WBEAJL/5Waazrg=").unwrap();
        assert!(
            matches!(parse(NARINFO).unwrap().verify(&[other]), Err(SignatureError::Untrusted(n)) if n == "test-1")
        );
        let unsigned: String = NARINFO
            .lines()
            .filter(|l| !l.starts_with("Sig"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(
            parse(&unsigned).unwrap().verify(&[key]),
            Err(SignatureError::Unsigned)
        );
    }

    #[test]
    fn strict_fields() {
        assert!(matches!(
            parse(&format!(
                "{NARINFO}NarHash: sha256:0p20p1bgs5880bhar4a273avhrvm4xbcz9kn39kw5rgi1igfcqkw\n"
            )),
            Err(ParseError::Duplicate { line: 11, .. })
        ));
        let without = |key: &str| -> String {
            NARINFO
                .lines()
                .filter(|l| !l.starts_with(key))
                .map(|l| format!("{l}\n"))
                .collect()
        };
        assert_eq!(parse(&without("URL")), Err(ParseError::Missing("URL")));
        assert_eq!(
            parse(&without("NarHash")),
            Err(ParseError::Missing("NarHash"))
        );
        assert_eq!(
            parse(&without("Compression")).unwrap().compression,
            Compression::Bzip2
        );
        assert!(
            parse(&format!("{NARINFO}Future: thing\n")).is_ok(),
            "unknown fields are ignored"
        );
        // An SRI NarHash, as Nix's parser takes it: the same narinfo, its
        // signature still valid.
        let sri = NARINFO.replace(
            "NarHash: sha256:0p20p1bgs5880bhar4a273avhrvm4xbcz9kn39kw5rgi1igfcqkw",
            &format!(
                "NarHash: sha256-{}",
                base64::engine::general_purpose::STANDARD
                    .encode(parse(NARINFO).unwrap().nar_hash.0)
            ),
        );
        assert_ne!(sri, NARINFO);
        let info = parse(&sri).unwrap();
        assert_eq!(info, parse(NARINFO).unwrap());
        info.verify(&[PublicKey::parse(KEY).unwrap()]).unwrap();
        assert!(matches!(
            parse(&NARINFO.replace("zstd\n", "br\n")),
            Err(ParseError::Value { line: 3, .. })
        ));
        for url in ["/etc/passwd", "../x", "nar/../../x", "http://evil/x", "a?b"] {
            let text = NARINFO.replace(
                "nar/08vmahjc5bqk76jzdbkvi7y71g122p8pwzdlb5lrvhnkf70xsqq0.nar.zst",
                url,
            );
            assert!(
                matches!(parse(&text), Err(ParseError::Value { line: 2, .. })),
                "{url}"
            );
        }
        let big = "x".repeat(MAX_NARINFO as usize + 1);
        assert_eq!(parse(&big), Err(ParseError::TooLarge));
        assert_eq!(
            parse_cache_info(b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n").unwrap(),
            StoreDir::default()
        );
        assert_eq!(
            parse_cache_info(b"Priority: 40\n"),
            Err(ParseError::Missing("StoreDir"))
        );
        assert!(PublicKey::parse("nokey").is_err());
        assert!(PublicKey::parse(":7kTP0iSKeWH1BOl03oZNbMQDyxuH5WBEAJL/5Waazrg=").is_err());
        assert!(PublicKey::parse("k:AAAA").is_err());
    }

    /// A secret key pasted where a public key belongs (found by the QA
    /// round: the error echoed the whole secret into the log).
    #[test]
    fn a_secret_key_is_refused_without_echoing_it() {
        // `nix key generate-secret --key-name test-1`.
        let secret = "xyfT/k/xyt6OOAfje6bvXxwQDLf0Mq3Q1CnWbqN0NkGkTpI4cD/ciCs9oSjzgke5rQYpUHAKBDZph4OedOel9g==";
        for text in [
            format!("test-1:{secret}"),
            secret.to_owned(),
            format!(" test-1:{secret}\n"),
        ] {
            let message = PublicKey::parse(&text).unwrap_err().to_string();
            assert!(!message.contains(&secret[..20]), "{message}");
            assert!(message.contains("is a secret key"), "{message}");
        }
        let message = PublicKey::parse(&format!("test-1:{secret}"))
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("`test-1:…` is a secret key"),
            "{message}"
        );
    }

    proptest! {
        #[test]
        fn narinfo_parsing_never_panics(text in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = NarInfo::parse(&StoreDir::default(), &text);
            let _ = parse_cache_info(&text);
        }

        #[test]
        fn narinfo_like_text_never_panics(
            lines in proptest::collection::vec(
                ("(StorePath|URL|Compression|FileHash|FileSize|NarHash|NarSize|References|Deriver|Sig|CA|X)", "[ -~]{0,80}"),
                0..14,
            )
        ) {
            let text: String = lines.iter().map(|(k, v)| format!("{k}: {v}\n")).collect();
            if let Ok(info) = NarInfo::parse(&StoreDir::default(), text.as_bytes()) {
                let key = PublicKey::parse(KEY).unwrap();
                let _ = info.verify(&[key]);
                let _ = info.fingerprint();
            }
        }

        #[test]
        fn keys_never_panic(text in "\\PC{0,80}") {
            let _ = PublicKey::parse(&text);
        }
    }
}
