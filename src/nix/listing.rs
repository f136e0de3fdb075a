//! NAR listings (`<hash>.ls`): the JSON a binary cache may keep beside each
//! narinfo (`write-nar-listing=true`), giving a NAR's tree without its bytes:
//!
//! ```json
//! {"version":1,"root":{"type":"directory","entries":{
//!   "bin":{"type":"directory","entries":{
//!     "hello":{"type":"regular","size":237,"executable":true,"narOffset":400}}},
//!   "lib":{"type":"symlink","target":"../x"}}}}
//! ```
//!
//! A listing is not signed: it only predicts sizes (see the binary cache
//! store), and the bytes of a layer always come from a verified NAR.
//! The same names and bounds as a NAR are enforced ([`super::nar`]), and the
//! text is capped before it is parsed.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::nar::{MAX_DEPTH, MAX_NAME, MAX_TARGET};

/// The most bytes of a listing that are read.
pub const MAX_LISTING: u64 = 64 << 20;

/// One node of a listing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ListingNode {
    /// A directory and its entries by name.
    Directory {
        /// Entries by name (JSON keys: UTF-8 names only).
        #[serde(default)]
        entries: BTreeMap<String, ListingNode>,
    },
    /// A regular file.
    Regular {
        /// Its length.
        #[serde(default)]
        size: u64,
        /// Whether it is executable.
        #[serde(default)]
        executable: bool,
        /// Where its contents start in the NAR.
        #[serde(rename = "narOffset", default)]
        nar_offset: Option<u64>,
    },
    /// A symlink.
    Symlink {
        /// Its target.
        target: String,
    },
}

#[derive(Deserialize)]
struct Document {
    version: u64,
    root: ListingNode,
}

/// Why a listing was refused.
#[derive(Debug, thiserror::Error)]
pub enum ListingError {
    /// Larger than [`MAX_LISTING`].
    #[error("larger than {MAX_LISTING} bytes")]
    TooLarge,
    /// Not the JSON of a listing.
    #[error("not a NAR listing: {0}")]
    Json(#[from] serde_json::Error),
    /// A version other than 1.
    #[error("listing version {0} (only 1 is known)")]
    Version(u64),
    /// A name, target or depth a NAR cannot hold.
    #[error("{0}")]
    Invalid(String),
}

/// Parses a listing and checks its names, targets and depth.
///
/// # Errors
/// [`ListingError`] when it is too large, malformed, or holds what no NAR can.
pub fn parse(bytes: &[u8]) -> Result<ListingNode, ListingError> {
    if bytes.len() as u64 > MAX_LISTING {
        return Err(ListingError::TooLarge);
    }
    // serde_json's own recursion limit (128) bounds the nesting of what it
    // reads; deeper listings are refused there, before our check.
    let doc: Document = serde_json::from_slice(bytes)?;
    if doc.version != 1 {
        return Err(ListingError::Version(doc.version));
    }
    check(&doc.root, 0)?;
    Ok(doc.root)
}

fn check(node: &ListingNode, depth: usize) -> Result<(), ListingError> {
    match node {
        ListingNode::Directory { entries } => {
            if depth >= MAX_DEPTH {
                return Err(ListingError::Invalid("directories nested too deep".into()));
            }
            for (name, child) in entries {
                if name.is_empty()
                    || name == "."
                    || name == ".."
                    || name.len() > MAX_NAME
                    || name.contains(['/', '\0'])
                {
                    return Err(ListingError::Invalid(format!("bad name `{name}`")));
                }
                check(child, depth + 1)?;
            }
            Ok(())
        }
        ListingNode::Symlink { target } => {
            if target.is_empty() || target.len() > MAX_TARGET || target.contains('\0') {
                return Err(ListingError::Invalid("bad symlink target".into()));
            }
            Ok(())
        }
        ListingNode::Regular { .. } => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Written by Nix 2.8 `nix copy --to file://…?write-nar-listing=true`.
    const HELLO: &str = r#"{"version":1,"root":{"type":"directory","entries":{"bin":{"type":"directory","entries":{"hello":{"type":"regular","size":237,"executable":true,"narOffset":400}}},"deps":{"type":"regular","size":121,"narOffset":856}}}}"#;

    #[test]
    fn parses_nix_listings() {
        let root = parse(HELLO.as_bytes()).unwrap();
        let ListingNode::Directory { entries } = root else {
            panic!()
        };
        assert_eq!(
            entries["deps"],
            ListingNode::Regular {
                size: 121,
                executable: false,
                nar_offset: Some(856)
            }
        );
        assert!(parse(br#"{"version":1,"root":{"type":"symlink","target":"x"}}"#).is_ok());
    }

    #[test]
    fn refuses_bad_listings() {
        for text in [
            r#"{"version":2,"root":{"type":"directory"}}"#,
            r#"{"version":1,"root":{"type":"fifo"}}"#,
            r#"{"version":1,"root":{"type":"directory","entries":{"..":{"type":"directory"}}}}"#,
            r#"{"version":1,"root":{"type":"directory","entries":{"a/b":{"type":"directory"}}}}"#,
            r#"{"version":1,"root":{"type":"symlink","target":""}}"#,
            r#"{"version":1}"#,
            "[]",
        ] {
            assert!(parse(text.as_bytes()).is_err(), "{text}");
        }
    }

    proptest! {
        #[test]
        fn listing_parsing_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
        }

        #[test]
        fn listing_like_json_never_panics(text in r#"\{"version":1,"root":[{}\[\]":,a-z0-9 ]{0,120}"#) {
            let _ = parse(text.as_bytes());
        }
    }
}
