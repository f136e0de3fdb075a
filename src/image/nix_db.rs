//! The Nix database of an image (`include_nix_db`, SPEC §5): the
//! `/nix/var/nix/db/db.sqlite` that `nix-store --load-db` would write for
//! the image's store paths, with every registration time reset to `mtime`
//! as nixpkgs does since PR #289840 (reference §D).
//!
//! The bytes are reproducible: SQLite is the bundled one (its version pins
//! the file format details), rows go in sorted by path in one transaction,
//! ids follow that order, the page size and journal mode are fixed, and a
//! final `VACUUM` rewrites the file compactly in a canonical layout.

use std::path::PathBuf;

use rusqlite::Connection;

use crate::cleanup::Pending;
use crate::closure::PathInfo;
use crate::nix::StorePath;

/// The store schema version of Nix 2.x, written to `db/schema`.
pub const SCHEMA_VERSION: &str = "10";

/// The tables of schema version 10, as Nix 2.x creates them
/// (`src/libstore/schema.sql`); a file format, so kept as Nix spells it.
const SCHEMA: &str = "
create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer,
    sigs             text,
    ca               text
);

create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);

create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);

create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;

create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null,
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);

create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
";

/// Why the database could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A path has no narHash, which the database requires.
    #[error("`{path}` has no narHash, which the Nix database needs")]
    MissingHash {
        /// The path.
        path: StorePath,
    },
    /// SQLite failed.
    #[error("failed to write the Nix database")]
    Sqlite(#[source] rusqlite::Error),
    /// The scratch file could not be made or read.
    #[error("failed to write the Nix database in `{}`", path.display())]
    Io {
        /// The scratch file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The bytes of `db.sqlite` registering `paths` (sorted or not), each with
/// `registration_time`. References to paths not in `paths` are left out,
/// since the table's foreign keys forbid them.
///
/// # Errors
/// When a path has no narHash, or SQLite or the scratch directory fails.
pub fn nix_db(paths: &[&PathInfo], registration_time: u64) -> Result<Vec<u8>, Error> {
    let mut sorted: Vec<&PathInfo> = paths.to_vec();
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    sorted.dedup_by(|a, b| a.path == b.path);
    for p in &sorted {
        if p.nar_hash.is_none() {
            return Err(Error::MissingHash {
                path: p.path.clone(),
            });
        }
    }
    // Removed by a signal too (a destructor does not run then).
    let (scratch, _pending) = Pending::create(
        || tempfile::Builder::new().prefix("nixlayer-db-").tempdir(),
        |d| d.path(),
    )
    .map_err(|source| Error::Io {
        path: std::env::temp_dir(),
        source,
    })?;
    let file = scratch.path().join("db.sqlite");
    let sql = Error::Sqlite;
    {
        let mut db = Connection::open(&file).map_err(sql)?;
        // Fixed layout: Nix's own defaults need not hold for whoever reads
        // the bytes, only that they never vary.
        db.execute_batch("pragma page_size = 4096; pragma journal_mode = delete;")
            .map_err(sql)?;
        db.execute_batch(SCHEMA).map_err(sql)?;
        let time = i64::try_from(registration_time).unwrap_or(i64::MAX);
        let tx = db.transaction().map_err(sql)?;
        {
            let mut insert = tx
                .prepare(
                    "insert into ValidPaths (id, path, hash, registrationTime, narSize) \
                     values (?1, ?2, ?3, ?4, ?5)",
                )
                .map_err(sql)?;
            for (i, p) in sorted.iter().enumerate() {
                let hash = p.nar_hash.map(|h| h.to_base16()).unwrap_or_default();
                let size = i64::try_from(p.nar_size).unwrap_or(i64::MAX);
                insert
                    .execute(rusqlite::params![
                        i as i64 + 1,
                        p.path.as_str(),
                        hash,
                        time,
                        size
                    ])
                    .map_err(sql)?;
            }
            let mut refs = tx
                .prepare("insert into Refs (referrer, reference) values (?1, ?2)")
                .map_err(sql)?;
            let id_of = |path: &StorePath| {
                sorted
                    .binary_search_by(|p| p.path.cmp(path))
                    .ok()
                    .map(|i| i as i64 + 1)
            };
            for (i, p) in sorted.iter().enumerate() {
                let mut ids: Vec<i64> = p.references.iter().filter_map(id_of).collect();
                ids.sort_unstable();
                ids.dedup();
                for reference in ids {
                    refs.execute([i as i64 + 1, reference]).map_err(sql)?;
                }
            }
        }
        tx.commit().map_err(sql)?;
        db.execute_batch("vacuum;").map_err(sql)?;
        db.close().map_err(|(_, e)| sql(e))?;
    }
    std::fs::read(&file).map_err(|source| Error::Io { path: file, source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::{NarHash, StoreDir};

    fn info(name: &str, refs: &[&str]) -> PathInfo {
        let dir = StoreDir::default();
        let path = |n: &str| {
            StorePath::parse(&dir, &format!("/nix/store/{}-{n}", "a".repeat(32))).unwrap()
        };
        PathInfo {
            path: path(name),
            nar_hash: Some(NarHash([name.len() as u8; 32])),
            nar_size: 120,
            references: refs.iter().map(|r| path(r)).collect(),
        }
    }

    #[test]
    fn same_paths_same_bytes_in_any_order_and_registered() {
        let (a, b) = (info("app", &["app", "lib"]), info("lib", &[]));
        let first = nix_db(&[&a, &b], 1).unwrap();
        let second = nix_db(&[&b, &a], 1).unwrap();
        assert_eq!(first, second);
        assert_eq!(&first[..16], b"SQLite format 3\0");

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db.sqlite");
        std::fs::write(&file, &first).unwrap();
        let db = Connection::open(&file).unwrap();
        let rows: Vec<(String, String, i64, i64)> = db
            .prepare("select path, hash, registrationTime, narSize from ValidPaths order by id")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].0.ends_with("-app"));
        assert!(rows[0].1.starts_with("sha256:0303"));
        assert_eq!((rows[0].2, rows[0].3), (1, 120));
        let refs: i64 = db
            .query_row("select count(*) from Refs", [], |r| r.get(0))
            .unwrap();
        assert_eq!(refs, 2, "self-reference and lib");
    }

    #[test]
    fn a_path_without_hash_is_an_error() {
        let mut a = info("app", &[]);
        a.nar_hash = None;
        assert!(matches!(nix_db(&[&a], 1), Err(Error::MissingHash { .. })));
    }
}
