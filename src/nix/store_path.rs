//! Store paths: `STORE_DIR/<32 nixbase32 chars>-<name>`, validated the way
//! Nix validates them, inside a store directory that need not be `/nix/store`.

use std::fmt;
use std::sync::Arc;

use super::base32;

/// The store directory every store path must live in (`store.dir`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct StoreDir(String);

impl StoreDir {
    /// A store directory: absolute, no trailing slash (one is removed), no `.`/`..`.
    ///
    /// # Errors
    /// When the directory is relative or has `.`/`..` or empty components.
    pub fn new(dir: &str) -> Result<Self, StorePathError> {
        let trimmed = if dir.len() > 1 {
            dir.trim_end_matches('/')
        } else {
            dir
        };
        let ok = trimmed.starts_with('/')
            && trimmed.len() > 1
            && trimmed[1..]
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if ok {
            Ok(Self(trimmed.to_owned()))
        } else {
            Err(StorePathError {
                path: dir.to_owned(),
                reason: "a store directory must be an absolute path such as `/nix/store`",
            })
        }
    }

    /// The directory as text, e.g. `/nix/store`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for StoreDir {
    fn default() -> Self {
        Self("/nix/store".to_owned())
    }
}

impl fmt::Display for StoreDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A valid store path, absolute. Ordered by its text, as Nix orders them.
///
/// Cloning is cheap and shares the text: the closure graph, the plan, the
/// layers and the SBOM all hold the same store paths (a path appears once
/// as a node and again in every referrer's references), and an owned
/// `String` per copy made planning memory grow by about a kilobyte per
/// path (issue 15). The base name's offset is not stored but found again
/// (the last `/`): it keeps the type two words, and a base name is at most
/// 211 bytes to scan.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StorePath {
    path: Arc<str>,
}

/// Why a text is not a store path.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{path}` is not a valid store path: {reason}")]
pub struct StorePathError {
    /// The text that was read.
    pub path: String,
    /// What rule it breaks.
    pub reason: &'static str,
}

/// Nix's limit on a store path's base name.
const MAX_BASE_NAME: usize = 211;
const HASH_LEN: usize = 32;

impl StorePath {
    /// Parses an absolute store path that must live directly in `dir`.
    ///
    /// # Errors
    /// When `path` is outside `dir`, names something inside a store path,
    /// or its hash or name breaks Nix's rules.
    pub fn parse(dir: &StoreDir, path: &str) -> Result<Self, StorePathError> {
        let err = |reason| StorePathError {
            path: path.to_owned(),
            reason,
        };
        let rest = path
            .strip_prefix(dir.as_str())
            .and_then(|r| r.strip_prefix('/'))
            .ok_or_else(|| err("it is not inside the store directory"))?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(err("it names a file inside a store path, not a store path"));
        }
        Self::check_base_name(rest).map_err(err)?;
        Ok(Self::join(dir, rest))
    }

    /// Parses a base name (`<hash>-<name>`, as DOT files and newer path-info use) in `dir`.
    ///
    /// # Errors
    /// As [`StorePath::parse`].
    pub fn from_base_name(dir: &StoreDir, base: &str) -> Result<Self, StorePathError> {
        Self::check_base_name(base).map_err(|reason| StorePathError {
            path: base.to_owned(),
            reason,
        })?;
        Ok(Self::join(dir, base))
    }

    /// `dir/base`, one allocation of the exact size.
    fn join(dir: &StoreDir, base: &str) -> Self {
        let mut path = String::with_capacity(dir.as_str().len() + 1 + base.len());
        path.push_str(dir.as_str());
        path.push('/');
        path.push_str(base);
        Self { path: path.into() }
    }

    fn check_base_name(base: &str) -> Result<(), &'static str> {
        if base.len() > MAX_BASE_NAME {
            return Err("its base name is longer than 211 characters");
        }
        let hash = base
            .get(..HASH_LEN)
            .ok_or("its base name is shorter than a 32-character hash")?;
        if base32::decode(hash.as_bytes(), 20).is_none() {
            return Err("its hash is not 32 nixbase32 characters");
        }
        let name = base[HASH_LEN..]
            .strip_prefix('-')
            .ok_or("its hash is not followed by `-`")?;
        if name.is_empty() {
            return Err("its name is empty");
        }
        if name == "." || name == ".." {
            return Err("its name is `.` or `..`");
        }
        if !name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"+-._?=".contains(&c))
        {
            return Err("its name has a character outside `A-Za-z0-9+-._?=`");
        }
        Ok(())
    }

    /// The absolute path, e.g. `/nix/store/<hash>-hello-2.12`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.path
    }

    /// `<hash>-<name>`.
    #[must_use]
    pub fn base_name(&self) -> &str {
        // A store path's base name has no `/`, and the store directory
        // is absolute: the last `/` is the one before the base name.
        let base = self.path.rfind('/').map_or(0, |slash| slash + 1);
        &self.path[base..]
    }

    /// The 32-character hash part.
    #[must_use]
    pub fn hash_part(&self) -> &str {
        &self.base_name()[..HASH_LEN]
    }

    /// The name after the hash, e.g. `hello-2.12`.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.base_name()[HASH_LEN + 1..]
    }
}

impl std::borrow::Borrow<str> for StorePath {
    /// A set or map of store paths is looked up by text (the derived
    /// `Hash`, `Eq` and `Ord` are those of the text).
    fn borrow(&self) -> &str {
        &self.path
    }
}

impl AsRef<str> for StorePath {
    fn as_ref(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.path)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P: &str = "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-golden-libc-2.40";

    #[test]
    fn parses_a_store_path() {
        let p = StorePath::parse(&StoreDir::default(), P).unwrap();
        assert_eq!(p.as_str(), P);
        assert_eq!(p.hash_part(), "9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8");
        assert_eq!(p.name(), "golden-libc-2.40");
        assert_eq!(p.base_name(), &P[11..]);
        let q = StorePath::from_base_name(&StoreDir::default(), &P[11..]).unwrap();
        assert_eq!(p, q);
    }

    /// A clone is the same text, not a copy: the graph, the plan and the
    /// layers hold many clones of each path (issue 15).
    #[test]
    fn clones_share_the_text() {
        let p = StorePath::parse(&StoreDir::default(), P).unwrap();
        let q = p.clone();
        assert_eq!(p, q);
        assert!(std::ptr::eq(p.as_str(), q.as_str()));
        assert_eq!(
            std::mem::size_of::<StorePath>(),
            2 * std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn other_store_dirs() {
        let dir = StoreDir::new("/opt/store/").unwrap();
        assert_eq!(dir.as_str(), "/opt/store");
        let p = StorePath::parse(&dir, &P.replace("/nix/store", "/opt/store")).unwrap();
        assert_eq!(p.name(), "golden-libc-2.40");
        assert_eq!(p.base_name(), &P[11..]);
        let root = StoreDir::new("/s").unwrap();
        let p = StorePath::from_base_name(&root, &P[11..]).unwrap();
        assert_eq!(
            (p.as_str(), p.base_name()),
            (&*format!("/s/{}", &P[11..]), &P[11..])
        );
        assert!(StorePath::parse(&dir, P).is_err());
        assert!(StoreDir::new("nix/store").is_err());
        assert!(StoreDir::new("/nix/../store").is_err());
    }

    #[test]
    fn rejects_invalid_paths() {
        let dir = StoreDir::default();
        for bad in [
            "/nix/store",
            "/nix/storefoo/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-a",
            "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-libc/lib",
            "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8",
            "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-",
            "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mbe-libc", // 'e' not nixbase32
            "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-a b",
            "/nix/store/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-..",
            "/nix/store/short-a",
            "relative/9l8wm1ybbhi3jnbpj97ljvbyh7xf0mb8-a",
        ] {
            assert!(StorePath::parse(&dir, bad).is_err(), "{bad}");
        }
        let long = format!("{}{}", &P[..44], "x".repeat(200));
        assert!(StorePath::parse(&dir, &long).is_err());
    }

    proptest! {
        #[test]
        fn valid_names_parse(hash in proptest::collection::vec(any::<u8>(), 20), name in "[A-Za-z0-9+_?=][A-Za-z0-9+._?=-]{0,60}") {
            let text = format!("/nix/store/{}-{name}", base32::encode(&hash));
            let p = StorePath::parse(&StoreDir::default(), &text).unwrap();
            prop_assert_eq!(p.as_str(), text.as_str());
            prop_assert_eq!(p.name(), name.as_str());
        }

        #[test]
        fn never_panics(text in "\\PC{0,80}") {
            let _ = StorePath::parse(&StoreDir::default(), &text);
        }

        #[test]
        fn store_shaped_text_never_panics(text in "/nix/store/[0-9a-z\u{e9}]{28,36}-?[A-Za-z0-9+._?=\u{e9}/-]{0,20}") {
            let _ = StorePath::parse(&StoreDir::default(), &text);
        }

        #[test]
        fn base_names_and_store_dirs_never_panic(base in "\\PC{0,80}", dir in "\\PC{0,40}") {
            let _ = StorePath::from_base_name(&StoreDir::default(), &base);
            if let Ok(dir) = StoreDir::new(&dir) {
                let _ = StorePath::from_base_name(&dir, &base);
                let _ = StorePath::parse(&dir, &base);
            }
        }
    }
}
