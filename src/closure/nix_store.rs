//! The live store (`closure.source = "nix-store"`, the default): asks
//! `nix-store` for the closure of the roots, then for its registration
//! (`--dump-db`, which prints path, narHash, narSize and references of all
//! paths in one call) and parses that with the registration parser. The
//! machine's own store (`/nix/store` under `/`) is read from its database
//! instead, the same rows without starting a process (`read_database`),
//! whenever that database can be read.
//!
//! Two calls, in order:
//!
//! 1. `nix-store --query --requisites ROOTS`; when it fails,
//!    `nix-store --check-validity --print-invalid ROOTS`, so that a root
//!    that is not in the store is reported by name rather than through
//!    whatever `--query` prints about it;
//! 2. `nix-store --dump-db PATHS…`, in batches that stay far below the
//!    kernel's argument size limit.
//!
//! When `store.root` is not `/`, each call gets `--store local?root=ROOT`
//! (and `&store=DIR` when `store.dir` is not `/nix/store`): a chroot store,
//! whose database must already exist, since Nix would otherwise create an
//! empty one there.

use std::ffi::{OsStr, OsString};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use super::{registration, ClosureGraph, Error, PathInfo};
use crate::nix::{NarHash, StoreDir, StorePath};
use crate::store::StoreLocation;

/// Paths per `--dump-db` call: about 100 bytes each, so a batch is ~100 kB
/// of arguments, far from Linux's 2 MB limit.
const BATCH: usize = 1000;

/// Why running `nix-store` did not give an answer; the source of [`Error::NixStore`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NixStoreError {
    /// `nix-store` is not on `PATH`: Nix is not installed, or not in this environment.
    #[error("`nix-store` was not found on PATH")]
    NotFound,
    /// It could not be started for another reason.
    #[error("`nix-store` could not be started")]
    Spawn(#[source] std::io::Error),
    /// It ran and failed.
    #[error("`nix-store` failed ({status}): {stderr}")]
    Failed {
        /// Its exit status.
        status: ExitStatus,
        /// What it printed on stderr, trimmed.
        stderr: String,
    },
    /// Some roots are not valid paths of the store.
    #[error("not valid in the store: {}", list(.0))]
    InvalidRoots(Vec<String>),
    /// The chroot store has no Nix database.
    #[error("`{}` does not exist: `store.root` does not hold a Nix store", .0.display())]
    NoDatabase(PathBuf),
    /// It printed something that is not UTF-8 text.
    #[error("it printed output that is not UTF-8 text")]
    NotUtf8,
}

impl NixStoreError {
    /// What the user can do about it, for the CLI's `hint:` line.
    #[must_use]
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Self::NotFound => Some(
                "install Nix, or read the closure from a file: `closure.source = { graph = \"…\" }` \
                 (or `registration`, `path_info`, `dot`)",
            ),
            Self::InvalidRoots(_) => Some(
                "build or substitute the roots first (`nix-build`, `nix-store --realise`), \
                 or check `store.root` and `store.dir`",
            ),
            Self::NoDatabase(_) => {
                Some("`store.root` must be the root of a store, e.g. one made by `nix copy --to local?root=…`")
            }
            Self::Spawn(_) | Self::Failed { .. } | Self::NotUtf8 => None,
        }
    }
}

fn list(paths: &[String]) -> String {
    paths
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Reads the closure of `roots` from the store at `store`: from the
/// machine's Nix database directly when it can (see [`read_database`]),
/// else through `nix-store`.
pub(super) fn read(store: &StoreLocation, roots: &[StorePath]) -> Result<ClosureGraph, Error> {
    if let Some(graph) = read_database(Path::new(NIX_DB), store, roots) {
        return graph;
    }
    read_with(OsStr::new("nix-store"), store, roots)
}

/// The machine's Nix database, for the store `/nix/store` under `/`.
const NIX_DB: &str = "/nix/var/nix/db/db.sqlite";

/// Variables that make `nix-store` use another store or database than
/// [`NIX_DB`] describes: with any of them set, `nix-store` is asked.
const NIX_STORE_VARIABLES: [&str; 4] =
    ["NIX_REMOTE", "NIX_STATE_DIR", "NIX_STORE_DIR", "NIX_STORE"];

/// The closure of `roots` read from database `db` itself, as `nix-store
/// --query --requisites` and `--dump-db` would give it, without starting
/// `nix-store` (two processes, a sixth of a re-push): the live store only
/// (`store.root` `/`, `store.dir` `/nix/store`, no variable moving
/// either), in one read transaction of a read-only connection. `None` when
/// the database cannot be read so (another schema, a lock held past the
/// timeout, a path without a NAR size) or a root is not valid: then
/// `nix-store` is asked, and reports what is wrong.
fn read_database(
    db: &Path,
    store: &StoreLocation,
    roots: &[StorePath],
) -> Option<Result<ClosureGraph, Error>> {
    use rusqlite::{OpenFlags, OptionalExtension as _};
    let live = std::fs::canonicalize(&store.root).ok()? == Path::new("/")
        && store.dir == StoreDir::default();
    if !live
        || NIX_STORE_VARIABLES
            .iter()
            .any(|v| std::env::var_os(v).is_some())
    {
        return None;
    }
    let conn = rusqlite::Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(std::time::Duration::from_millis(500))
        .ok()?;
    // One snapshot for every query, as Nix's own readers take.
    let snapshot = conn.unchecked_transaction().ok()?;
    let mut by_path = snapshot
        .prepare("SELECT id FROM ValidPaths WHERE path = ?1")
        .ok()?;
    let mut row = snapshot
        .prepare("SELECT path, hash, narSize FROM ValidPaths WHERE id = ?1")
        .ok()?;
    let mut refs = snapshot
        .prepare("SELECT reference FROM Refs WHERE referrer = ?1")
        .ok()?;
    let mut todo: Vec<i64> = Vec::with_capacity(roots.len());
    for root in roots {
        let id: Option<i64> = by_path
            .query_row([root.as_str()], |r| r.get(0))
            .optional()
            .ok()?;
        todo.push(id?);
    }
    // id → (path, NAR hash, NAR size, reference ids).
    let mut seen: std::collections::BTreeMap<i64, (String, String, i64, Vec<i64>)> =
        std::collections::BTreeMap::new();
    while let Some(id) = todo.pop() {
        if seen.contains_key(&id) {
            continue;
        }
        let (path, hash, size): (String, String, Option<i64>) = row
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .ok()?;
        let references: Vec<i64> = refs
            .query_map([id], |r| r.get(0))
            .ok()?
            .collect::<Result<_, _>>()
            .ok()?;
        todo.extend(references.iter().filter(|r| !seen.contains_key(r)));
        seen.insert(id, (path, hash, size?, references));
    }
    let mut infos = Vec::with_capacity(seen.len());
    let interner = super::Interner::default();
    for (path, hash, size, references) in seen.values() {
        let parse = |text: &str| interner.parse(&store.dir, text).ok();
        infos.push(PathInfo {
            path: parse(path)?,
            nar_hash: Some(NarHash::parse(hash).ok()?),
            nar_size: u64::try_from(*size).ok()?,
            references: references
                .iter()
                .map(|r| seen.get(r).and_then(|(p, ..)| parse(p)))
                .collect::<Option<_>>()?,
        });
    }
    Some(
        ClosureGraph::checked(infos, "the Nix database")
            .and_then(|(g, edges)| g.into_closure(&edges, roots, "the Nix store")),
    )
}

/// [`read`] with the program to run, so tests can name a missing one.
fn read_with(
    program: &OsStr,
    store: &StoreLocation,
    roots: &[StorePath],
) -> Result<ClosureGraph, Error> {
    if roots.is_empty() {
        return Ok(ClosureGraph::default());
    }
    let nix_store = NixStore::new(program, store)?;
    let root_args: Vec<&str> = roots.iter().map(StorePath::as_str).collect();

    // The roots are usually valid: their validity is asked only when the
    // query fails, to name the invalid ones (each `nix-store` costs tens of
    // milliseconds, a sixth of a re-push).
    let requisites = match nix_store.run(&["--query", "--requisites"], &root_args) {
        Ok(out) => out,
        Err(failed) => {
            let invalid = nix_store.run(&["--check-validity", "--print-invalid"], &root_args)?;
            let invalid: Vec<String> = invalid.lines().map(str::to_owned).collect();
            if invalid.is_empty() {
                return Err(failed);
            }
            return Err(nix_store.error(
                &["--check-validity", "--print-invalid"],
                &root_args,
                NixStoreError::InvalidRoots(invalid),
            ));
        }
    };
    let paths: Vec<&str> = requisites.lines().filter(|l| !l.is_empty()).collect();
    let mut dump = String::new();
    for batch in paths.chunks(BATCH) {
        dump.push_str(&nix_store.run(&["--dump-db"], batch)?);
    }

    let file = Path::new("nix-store --dump-db");
    let infos = registration::parse(dump.as_bytes(), file, &store.dir)?;
    let (graph, edges) = ClosureGraph::checked(infos, "`nix-store --dump-db`")?;
    graph.into_closure(&edges, roots, "the Nix store")
}

struct NixStore<'a> {
    program: &'a OsStr,
    /// `--store URI` when the store is not the machine's own.
    store_args: Vec<String>,
}

impl<'a> NixStore<'a> {
    fn new(program: &'a OsStr, store: &StoreLocation) -> Result<Self, Error> {
        let own_dir = store.dir == StoreDir::default();
        let own_root = store.root == Path::new("/");
        let mut store_args = Vec::new();
        if !own_root || !own_dir {
            let mut uri = String::from("local");
            let mut sep = '?';
            if !own_root {
                let db = store.disk_path("/nix/var/nix/db/db.sqlite");
                if !db.exists() {
                    let command = format!("{} --store local?root=…", program.to_string_lossy());
                    return Err(Error::NixStore {
                        command,
                        source: Box::new(NixStoreError::NoDatabase(db)),
                    });
                }
                let _ = write!(
                    uri,
                    "{sep}root={}",
                    percent_encode(&store.root.to_string_lossy())
                );
                sep = '&';
            }
            if !own_dir {
                let _ = write!(uri, "{sep}store={}", percent_encode(store.dir.as_str()));
            }
            store_args = vec!["--store".to_owned(), uri];
        }
        Ok(Self {
            program,
            store_args,
        })
    }

    /// The command as shown in errors; long path lists are abbreviated.
    fn command_line(&self, args: &[&str], paths: &[&str]) -> String {
        let mut line = self.program.to_string_lossy().into_owned();
        for a in self
            .store_args
            .iter()
            .map(String::as_str)
            .chain(args.iter().copied())
        {
            line.push(' ');
            line.push_str(a);
        }
        match paths {
            [] => {}
            [one] => {
                line.push(' ');
                line.push_str(one);
            }
            many => {
                let _ = write!(line, " <{} paths>", many.len());
            }
        }
        line
    }

    fn error(&self, args: &[&str], paths: &[&str], cause: NixStoreError) -> Error {
        Error::NixStore {
            command: self.command_line(args, paths),
            source: Box::new(cause),
        }
    }

    fn run(&self, args: &[&str], paths: &[&str]) -> Result<String, Error> {
        let mut cmd = Command::new(self.program);
        cmd.args(&self.store_args)
            .args(args)
            .args(paths.iter().map(OsString::from))
            .stdin(Stdio::null());
        let out = cmd.output().map_err(|e| {
            let cause = if e.kind() == std::io::ErrorKind::NotFound {
                NixStoreError::NotFound
            } else {
                NixStoreError::Spawn(e)
            };
            self.error(args, paths, cause)
        })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr).trim().to_owned();
            return Err(self.error(
                args,
                paths,
                NixStoreError::Failed {
                    status: out.status,
                    stderr,
                },
            ));
        }
        String::from_utf8(out.stdout).map_err(|_| self.error(args, paths, NixStoreError::NotUtf8))
    }
}

/// Percent-encodes what a store URI's query may not hold verbatim (Nix
/// decodes query values).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::closure::tests::sp;

    fn store() -> StoreLocation {
        StoreLocation {
            dir: StoreDir::default(),
            root: PathBuf::from("/"),
        }
    }

    fn cause(err: &Error) -> &NixStoreError {
        let Error::NixStore { source, .. } = err else {
            panic!("expected Error::NixStore, got {err:?}")
        };
        source.downcast_ref().expect("a NixStoreError")
    }

    /// The database gives what `nix-store` gives, for closures of the
    /// machine's store; a root it does not list is left to `nix-store`.
    #[test]
    fn the_database_gives_what_nix_store_gives() {
        let db = Path::new(NIX_DB);
        let recent: Vec<String> =
            rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .ok()
                .and_then(|c| {
                    let mut q = c
                        .prepare("SELECT path FROM ValidPaths ORDER BY id DESC LIMIT 40")
                        .ok()?;
                    let rows = q.query_map([], |r| r.get(0)).ok()?;
                    rows.collect::<Result<Vec<String>, _>>().ok()
                })
                .unwrap_or_default();
        let roots: Vec<StorePath> = recent
            .iter()
            .filter(|p| Path::new(p).exists())
            .filter_map(|p| StorePath::parse(&StoreDir::default(), p).ok())
            .take(3)
            .collect();
        if roots.is_empty()
            || NIX_STORE_VARIABLES
                .iter()
                .any(|v| std::env::var_os(v).is_some())
        {
            assert!(std::env::var_os("CI").is_none(), "CI has a Nix store");
            return;
        }
        let from_db = read_database(db, &store(), &roots).expect("read").unwrap();
        let from_tool = read_with(OsStr::new("nix-store"), &store(), &roots).unwrap();
        assert_eq!(from_db, from_tool);
        assert!(from_db.paths.len() >= roots.len());
        // Not valid: left to nix-store, which names it.
        assert!(read_database(db, &store(), &[sp('a', "a")]).is_none());
        // Another root or store directory: never the database.
        let chroot = StoreLocation {
            dir: StoreDir::default(),
            root: PathBuf::from("/tmp"),
        };
        assert!(read_database(db, &chroot, &roots).is_none());
    }

    #[test]
    fn a_missing_program_is_not_found() {
        let program = OsStr::new("nixlayer-test-no-such-program");
        let err = read_with(program, &store(), &[sp('a', "a")]).unwrap_err();
        assert!(matches!(cause(&err), NixStoreError::NotFound), "{err:?}");
        assert!(cause(&err).hint().is_some_and(|h| h.contains("graph")));
        let Error::NixStore { command, .. } = &err else {
            unreachable!()
        };
        assert!(command.contains("--check-validity"), "{command}");
    }

    #[test]
    fn a_failing_program_reports_its_stderr() {
        // `false` ignores its arguments and fails; stands in for a nix-store error.
        let err = read_with(OsStr::new("false"), &store(), &[sp('a', "a")]).unwrap_err();
        assert!(
            matches!(cause(&err), NixStoreError::Failed { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn a_chroot_store_without_a_database_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let store = StoreLocation {
            dir: StoreDir::default(),
            root: root.path().to_owned(),
        };
        let err = read_with(OsStr::new("false"), &store, &[sp('a', "a")]).unwrap_err();
        assert!(
            matches!(cause(&err), NixStoreError::NoDatabase(_)),
            "{err:?}"
        );
        assert!(!root.path().join("nix").exists());
    }

    #[test]
    fn no_roots_is_an_empty_closure() {
        let g = read_with(OsStr::new("false"), &store(), &[]).unwrap();
        assert!(g.is_empty());
    }

    #[test]
    fn store_uris() {
        let mut loc = StoreLocation {
            dir: StoreDir::new("/gnu/store").unwrap(),
            root: PathBuf::from("/"),
        };
        let n = NixStore::new(OsStr::new("nix-store"), &loc).unwrap();
        assert_eq!(n.store_args, ["--store", "local?store=/gnu/store"]);
        assert_eq!(
            n.command_line(&["--dump-db"], &["a", "b"]),
            "nix-store --store local?store=/gnu/store --dump-db <2 paths>"
        );

        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("nix/var/nix/db");
        std::fs::create_dir_all(&db).unwrap();
        std::fs::write(db.join("db.sqlite"), b"").unwrap();
        loc.root = root.path().to_owned();
        loc.dir = StoreDir::default();
        let n = NixStore::new(OsStr::new("nix-store"), &loc).unwrap();
        assert_eq!(
            n.store_args[1],
            format!("local?root={}", percent_encode(&loc.root.to_string_lossy()))
        );
        assert_eq!(percent_encode("/a b&c=d/é"), "/a%20b%26c%3Dd/%C3%A9");
    }
}
