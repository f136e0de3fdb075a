//! A cheap [`Store::stamp`](super::Store::stamp) for the machine's own Nix
//! store: the row the Nix database (`/nix/var/nix/db/db.sqlite`) keeps for
//! a valid store path — its id, `narHash`, `narSize` and registration time
//! — and the file-system metadata of the store path's top entry, instead
//! of the metadata of every entry below it (some 14,000 `lstat`s for a
//! 160-path closure, a third of a re-push).
//!
//! Why that is enough for this store: Nix registers a path once its
//! content is final (canonicalised: read-only, mtime 1) and never changes
//! it while it is valid; deleting it drops the row, and making it again
//! gives a new row (id and registration time) and a new top entry (inode,
//! change time). So equal stamps mean the bytes Nix registered under that
//! `narHash`. Editing files inside a registered path behind Nix's back (as
//! root, through its read-only modes) is store corruption that Nix itself
//! finds only with `nix-store --verify --check-contents`; it is not seen
//! here either, and a layer cached before it stays the layer of the
//! registered content. Stores under another `store.root` (fixtures, CI
//! caches, which their owners may edit) keep the full metadata stamp.
//!
//! The database is only read (a read-only connection, one per process and
//! database, with a short busy timeout); any failure to open or query it,
//! or a path it does not list, gives no stamp here, and the caller falls
//! back to the full metadata stamp.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};
use sha2::{Digest as _, Sha256};

/// Where the machine's Nix database is, for the store `/nix/store`.
pub(super) const NIX_DB: &str = "/nix/var/nix/db/db.sqlite";

/// How long a query waits for a writer holding the database.
const BUSY: Duration = Duration::from_millis(500);

/// Open connections by database file; `None`: it could not be opened (not
/// tried again in this process).
static DATABASES: Mutex<Vec<(PathBuf, Option<Connection>)>> = Mutex::new(Vec::new());

/// What the database says of one valid path.
#[derive(Debug, PartialEq, Eq)]
struct Row {
    id: i64,
    nar_hash: String,
    registered: i64,
    nar_size: Option<i64>,
}

fn open(db: &Path) -> Option<Connection> {
    let conn = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    conn.busy_timeout(BUSY).ok()?;
    Some(conn)
}

/// The row of `path` in database `db`, if it lists it.
fn row(db: &Path, path: &str) -> Option<Row> {
    let mut dbs = DATABASES
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let index = match dbs.iter().position(|(p, _)| p == db) {
        Some(i) => i,
        None => {
            dbs.push((db.to_owned(), open(db)));
            dbs.len() - 1
        }
    };
    let conn = dbs[index].1.as_ref()?;
    let mut query = conn
        .prepare_cached(
            "SELECT id, hash, registrationTime, narSize FROM ValidPaths WHERE path = ?1",
        )
        .ok()?;
    query
        .query_row([path], |r| {
            Ok(Row {
                id: r.get(0)?,
                nar_hash: r.get(1)?,
                registered: r.get(2)?,
                nar_size: r.get(3)?,
            })
        })
        .optional()
        .ok()
        .flatten()
}

/// The stamp of store path `path` (its logical name), on disk at `disk`,
/// from database `db`: `None` when the database cannot be read or does not
/// list the path, or nothing is at `disk`.
pub(super) fn stamp(db: &Path, disk: &Path, path: &str) -> Option<Vec<u8>> {
    let row = row(db, path)?;
    let meta = std::fs::symlink_metadata(disk).ok()?;
    let mut hash = Sha256::new();
    hash.update(b"nixlayer registered store path stamp v1\0");
    hash.update(db.as_os_str().as_bytes());
    hash.update(b"\0");
    hash.update(path.as_bytes());
    hash.update(b"\0");
    hash.update(row.nar_hash.as_bytes());
    hash.update(b"\0");
    for field in [
        row.id,
        row.registered,
        row.nar_size.unwrap_or(-1),
        i64::from(meta.mode()),
        meta.ino().cast_signed(),
        meta.dev().cast_signed(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
    ] {
        hash.update(field.to_le_bytes());
    }
    Some(hash.finalize().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PATH: &str = "/nix/store/00000000000000000000000000000000-a";

    /// A database with Nix's `ValidPaths` table listing `PATH`, and the
    /// path on disk with a file two levels down.
    fn setup(dir: &Path) -> (PathBuf, PathBuf) {
        let db = dir.join("db.sqlite");
        let conn = Connection::open(&db).unwrap();
        conn.execute_batch(
            "CREATE TABLE ValidPaths (id integer primary key autoincrement not null, \
             path text unique not null, hash text not null, registrationTime integer not null, \
             deriver text, narSize integer, ultimate integer, sigs text, ca text);",
        )
        .unwrap();
        conn.execute(
            "INSERT INTO ValidPaths (path, hash, registrationTime, narSize) VALUES (?1, 'sha256:aa', 100, 4096)",
            [PATH],
        )
        .unwrap();
        let disk = dir.join("store/00000000000000000000000000000000-a");
        std::fs::create_dir_all(disk.join("lib/deep")).unwrap();
        std::fs::write(disk.join("lib/deep/file"), b"one").unwrap();
        (db, disk)
    }

    #[test]
    fn a_registered_path_is_stamped_by_its_row_and_top_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (db, disk) = setup(dir.path());
        let first = stamp(&db, &disk, PATH).unwrap();
        assert_eq!(stamp(&db, &disk, PATH), Some(first.clone()));
        // Not listed, or not on disk: no stamp (the caller stats instead).
        assert_eq!(
            stamp(&db, &disk, "/nix/store/11111111111111111111111111111111-b"),
            None
        );
        assert_eq!(stamp(&db, &dir.path().join("gone"), PATH), None);
        assert_eq!(stamp(&dir.path().join("no.sqlite"), &disk, PATH), None);

        // Nothing below the top entry is looked at: Nix never changes a
        // valid path's content.
        std::fs::write(disk.join("lib/deep/file"), b"two").unwrap();
        assert_eq!(stamp(&db, &disk, PATH), Some(first.clone()));

        // Registered again (deleted and made anew): another stamp.
        let conn = Connection::open(&db).unwrap();
        conn.execute("UPDATE ValidPaths SET registrationTime = 200", [])
            .unwrap();
        let again = stamp(&db, &disk, PATH).unwrap();
        assert_ne!(again, first);
        // The top entry replaced behind the database's back: another stamp.
        std::fs::remove_dir_all(&disk).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        std::fs::create_dir_all(disk.join("lib/deep")).unwrap();
        assert_ne!(stamp(&db, &disk, PATH).unwrap(), again);
        // Unregistered: none.
        conn.execute("DELETE FROM ValidPaths", []).unwrap();
        assert_eq!(stamp(&db, &disk, PATH), None);
    }

    #[test]
    fn a_database_that_is_not_nix_s_gives_no_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("other.sqlite");
        std::fs::write(&db, b"not a database at all").unwrap();
        assert_eq!(stamp(&db, dir.path(), PATH), None);
        let db = dir.path().join("empty.sqlite");
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE t (x);")
            .unwrap();
        assert_eq!(stamp(&db, dir.path(), PATH), None);
    }
}
