//! Identifiers an SBOM needs from a store path name, whatever its bytes:
//! SPDX element IDs, package URLs (purls) and content-derived UUIDs.

use crate::oci::Digest;

/// An SPDX element ID for a store path: `SPDXRef-` then only what SPDX
/// allows (letters, digits, `.` and `-`). The 32-character nixbase32 hash
/// makes it unique; the name after it is kept readable, every other
/// character (`+`, `_`, `?`, `=` in a store path name, anything in text
/// that is not one) becoming `-`.
#[must_use]
pub fn spdx_id(hash_part: &str, name: &str) -> String {
    let mut id = String::from("SPDXRef-Package-");
    id.extend(hash_part.chars().chain(['-']).chain(name.chars()).map(|c| {
        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            c
        } else {
            '-'
        }
    }));
    id
}

/// `text` percent-encoded for a purl component: every byte but the
/// unreserved `A-Z a-z 0-9 . - _ ~` as `%XX` (so `+` is `%2B`, `?` `%3F`),
/// as the purl specification asks of names, versions and qualifier values.
#[must_use]
pub fn purl_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"._-~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The purl of a store path: `pkg:nix/NAME@VERSION` (no `@` without a
/// version), as sbomnix writes them, so scanners matching `pkg:nix` names
/// and versions see the same. One qualifier is added,
/// `store_path_hash=<nixbase32 hash>`: two store paths of one name and
/// version (another build, another output's dependencies) stay told apart,
/// and a purl leads back to its store path; consumers that match on name
/// and version ignore qualifiers, as the purl spec lets them.
#[must_use]
pub fn purl(name: &str, version: &str, hash_part: &str) -> String {
    let mut purl = format!("pkg:nix/{}", purl_encode(name));
    if !version.is_empty() {
        purl.push('@');
        purl.push_str(&purl_encode(version));
    }
    purl.push_str("?store_path_hash=");
    purl.push_str(&purl_encode(hash_part));
    purl
}

/// A UUID named by `bytes` (a document's content): the first 16 bytes of
/// their sha256, with the RFC 4122 variant and version 5 bits set. Not
/// RFC 4122's SHA-1 version 5 (no SHA-1 here, and no namespace to name),
/// but the same idea — the same content, the same UUID — and in the form
/// validators accept: CycloneDX's schema allows versions 1 to 5 only.
#[must_use]
pub fn content_uuid(bytes: &[u8]) -> String {
    let digest = Digest::of(bytes).hex();
    let mut hex: Vec<u8> = digest.as_bytes()[..32].to_vec();
    hex[12] = b'5';
    // The variant: the top two bits of byte 8 are `10` (8, 9, a or b).
    let nibble = u8::from_str_radix(&digest[16..17], 16).unwrap_or(0);
    hex[16] = b"89ab"[usize::from(nibble & 3)];
    let h = String::from_utf8(hex).unwrap_or_default();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::{parse_drv_name, StoreDir, StorePath};

    fn valid_spdx_id(id: &str) -> bool {
        id.strip_prefix("SPDXRef-").is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        })
    }

    /// A purl as the spec's grammar has it: `pkg:` type `/` name, then an
    /// optional `@version` and `?qualifiers`, every component made of
    /// unreserved characters and `%XX` escapes only.
    fn valid_purl(purl: &str) -> bool {
        let Some(rest) = purl.strip_prefix("pkg:nix/") else {
            return false;
        };
        let (main, qualifiers) = rest.split_once('?').unwrap_or((rest, ""));
        let (name, version) = main.split_once('@').unwrap_or((main, ""));
        let component = |s: &str| {
            let b = s.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' {
                    if !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                        && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
                    {
                        return false;
                    }
                    i += 3;
                } else if b[i].is_ascii_alphanumeric() || b"._-~".contains(&b[i]) {
                    i += 1;
                } else {
                    return false;
                }
            }
            true
        };
        !name.is_empty()
            && component(name)
            && component(version)
            && qualifiers.split('&').filter(|q| !q.is_empty()).all(|q| {
                q.split_once('=')
                    .is_some_and(|(k, v)| k == "store_path_hash" && component(v))
            })
    }

    #[test]
    fn odd_names_give_valid_ids_and_purls() {
        let id = spdx_id("0123456789abcdfghijklmnpqrsvwxyz", "g++_x?=1-2.0");
        assert_eq!(
            id,
            "SPDXRef-Package-0123456789abcdfghijklmnpqrsvwxyz-g---x--1-2.0"
        );
        assert_eq!(
            purl("g++", "1?=2", "0123"),
            "pkg:nix/g%2B%2B@1%3F%3D2?store_path_hash=0123"
        );
        assert_eq!(
            purl("hello-", "", "ab"),
            "pkg:nix/hello-?store_path_hash=ab"
        );
        assert!(valid_purl(&purl("é/@:", "1 2", "x")));
    }

    #[test]
    fn uuids_are_version_5_and_stable() {
        let a = content_uuid(b"a");
        assert_eq!(a, content_uuid(b"a"));
        assert_ne!(a, content_uuid(b"b"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "5");
        assert!("89ab".contains(&a[19..20]), "{a}");
    }

    proptest::proptest! {
        /// Any store path name gives a valid SPDX ID and purl.
        #[test]
        fn any_store_path_name_gives_valid_ids(name in "[A-Za-z0-9+._?=-]{1,60}") {
            proptest::prop_assume!(name != "." && name != "..");
            let base = format!("0123456789abcdfghijklmnpqrsvwxyz-{name}");
            let path = StorePath::from_base_name(&StoreDir::default(), &base).unwrap();
            let (n, v) = parse_drv_name(path.name());
            let n = if n.is_empty() { path.name() } else { n };
            let v = if n == path.name() { "" } else { v };
            proptest::prop_assert!(valid_spdx_id(&spdx_id(path.hash_part(), path.name())));
            let p = purl(n, v, path.hash_part());
            proptest::prop_assert!(valid_purl(&p), "{}", p);
        }

        /// Any text at all (not only what a store path allows) never panics
        /// and still gives a valid SPDX ID and purl.
        #[test]
        fn any_text_gives_valid_ids(name in "\\PC{1,40}", version in "\\PC{0,20}") {
            proptest::prop_assert!(valid_spdx_id(&spdx_id("h", &name)));
            let p = purl(&name, &version, "h");
            proptest::prop_assert!(valid_purl(&p), "{}", p);
        }
    }
}
