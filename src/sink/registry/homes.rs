//! Where blobs went: for each registry host and blob digest, the
//! repositories a push put it in, so a later push of the same blob to
//! another repository of that registry can ask for a cross-repository
//! mount (`POST …/blobs/uploads/?mount=<digest>&from=<repo>`) instead of
//! uploading it.
//!
//! One small text file per host and blob (`<dir>/<sha256 of host>/<hex of
//! digest>`), a repository a line, written to a temporary file and renamed,
//! so concurrent pushes never see half a record. The records are hints:
//! a missing, unreadable or odd one is no record, never an error, and the
//! registry decides (a refused mount is an upload). Lines that are not
//! repository names are skipped, so nothing but a repository name reaches
//! the mount URL.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::cleanup::Pending;
use crate::oci::Digest;

/// The most of a record that is read.
const RECORD_LIMIT: u64 = 64 << 10;
/// The most repositories kept per blob (the latest first).
const KEPT: usize = 16;

/// The records of one registry host.
#[derive(Clone, Debug)]
pub struct BlobHomes {
    dir: PathBuf,
}

/// Whether `repo` is a repository name as a reference holds it: lowercase
/// letters, digits, `.`, `_`, `-` and `/`, no empty component.
fn is_repository(repo: &str) -> bool {
    !repo.is_empty()
        && repo.len() <= 255
        && !repo.split('/').any(str::is_empty)
        && repo
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b))
}

impl BlobHomes {
    /// The records of registry `host` under `root`.
    #[must_use]
    pub fn new(root: &Path, host: &str) -> Self {
        let name = Digest(Sha256::digest(host.to_ascii_lowercase().as_bytes()).into());
        Self {
            dir: root.join(name.hex()),
        }
    }

    fn file(&self, digest: &Digest) -> PathBuf {
        self.dir.join(digest.hex())
    }

    /// The repositories blob `digest` was pushed to, the latest first.
    #[must_use]
    pub fn get(&self, digest: &Digest) -> Vec<String> {
        use std::io::Read as _;
        let mut text = String::new();
        let read = std::fs::File::open(self.file(digest))
            .and_then(|f| f.take(RECORD_LIMIT).read_to_string(&mut text));
        if read.is_err() {
            return Vec::new();
        }
        parse(&text)
    }

    /// Notes that blob `digest` is in `repo` (first, as the latest).
    ///
    /// # Errors
    /// When the record cannot be written; callers may ignore it, as a
    /// missing record only costs an upload.
    pub fn put(&self, digest: &Digest, repo: &str) -> std::io::Result<()> {
        if !is_repository(repo) {
            return Ok(());
        }
        let mut repos = self.get(digest);
        if repos.first().is_some_and(|r| r == repo) {
            return Ok(());
        }
        repos.retain(|r| r != repo);
        repos.insert(0, repo.to_owned());
        repos.truncate(KEPT);
        std::fs::create_dir_all(&self.dir)?;
        let (mut temp, pending) =
            Pending::create(|| tempfile::NamedTempFile::new_in(&self.dir), |t| t.path())?;
        temp.write_all((repos.join("\n") + "\n").as_bytes())?;
        pending.publish(|| temp.persist(self.file(digest)).map_err(|e| e.error))?;
        Ok(())
    }
}

/// The repository names of a record, in order, without duplicates.
fn parse(text: &str) -> Vec<String> {
    let mut repos: Vec<String> = Vec::new();
    for line in text.lines().map(str::trim) {
        if is_repository(line) && !repos.iter().any(|r| r == line) {
            repos.push(line.to_owned());
        }
        if repos.len() == KEPT {
            break;
        }
    }
    repos
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_keep_the_latest_first_per_host() {
        let root = tempfile::tempdir().unwrap();
        let d = Digest::of(b"blob");
        let a = BlobHomes::new(root.path(), "Reg.example:5000");
        assert!(a.get(&d).is_empty());
        a.put(&d, "team/a").unwrap();
        a.put(&d, "team/b").unwrap();
        a.put(&d, "team/a").unwrap();
        assert_eq!(a.get(&d), ["team/a", "team/b"]);
        // Another host knows nothing of it; the host's case does not matter.
        assert!(BlobHomes::new(root.path(), "other:5000").get(&d).is_empty());
        assert_eq!(
            BlobHomes::new(root.path(), "reg.example:5000").get(&d),
            ["team/a", "team/b"]
        );
        // Not a repository name: never recorded.
        a.put(&d, "x?mount=1&from=y").unwrap();
        assert_eq!(a.get(&d), ["team/a", "team/b"]);
    }

    #[test]
    fn odd_records_give_only_repository_names() {
        assert_eq!(
            parse("team/a\n\nBAD\nx&from=y\n/abs\nteam/a\na//b\nteam/c\n"),
            ["team/a", "team/c"]
        );
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics_and_yields_repository_names(text in "\\PC{0,300}") {
            for r in parse(&text) {
                proptest::prop_assert!(is_repository(&r));
                proptest::prop_assert!(!r.contains(['?', '&', '#', '%', '@', ':']));
            }
        }
    }
}
