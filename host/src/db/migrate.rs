//! Schema migrations per owner of tables.
//!
//! The host's tables, the task store's and the audit trail's each have their
//! own ordered list and their own version, one row per owner in
//! `schema_versions`. Appending a migration to one owner's list runs exactly
//! that migration on an existing database; no other owner's version moves.
//!
//! Databases made before this table existed kept one `PRAGMA user_version`
//! for every owner, the lists concatenated in [`LEGACY_ORDER`]; the first
//! [`apply`] on such a database records how far each owner had got.

use rusqlite::{Connection, OptionalExtension, params};

/// How the single `user_version` counter of earlier databases was made up:
/// each owner's migrations, in this order, counted together.
pub const LEGACY_ORDER: &[(&str, usize)] = &[("host", 1), ("tasks", 1), ("audit", 1)];

/// `user_version` once `schema_versions` holds the versions: more
/// migrations than a single-counter host knows, so such a host refuses the
/// database.
pub const LEGACY_SENTINEL: i64 = 1_000_000;

/// One owner's migrations, in order. A released migration is never edited,
/// only appended to.
#[derive(Debug, Clone, Copy)]
pub struct Migrations<'a> {
    pub owner: &'a str,
    pub steps: &'a [&'a str],
}

impl<'a> Migrations<'a> {
    pub const fn new(owner: &'a str, steps: &'a [&'a str]) -> Self {
        Migrations { owner, steps }
    }
}

/// Why a database could not be brought to this host's schema.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("database migration {version} of `{owner}` failed: {source}")]
    Failed {
        owner: String,
        version: usize,
        source: rusqlite::Error,
    },
    #[error(
        "database has `{owner}` schema version {version}, newer than this host understands ({known} migrations)"
    )]
    TooNew {
        owner: String,
        version: usize,
        known: usize,
    },
    #[error("database error while migrating: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// Runs the migrations of `m.owner` that have not run on this database yet,
/// each in its own write transaction with its version. The version is read
/// again inside that transaction, so two processes opening one database
/// never run a step twice.
pub fn apply(conn: &Connection, m: &Migrations<'_>) -> Result<(), MigrateError> {
    ensure_versions_table(conn)?;
    let done = version(conn, m.owner)?;
    if done > m.steps.len() {
        return Err(MigrateError::TooNew {
            owner: m.owner.to_owned(),
            version: done,
            known: m.steps.len(),
        });
    }
    for (i, sql) in m.steps.iter().enumerate().skip(done) {
        let n = i + 1;
        in_write_transaction(conn, || {
            if version(conn, m.owner)? >= n {
                return Ok(());
            }
            conn.execute_batch(sql)?;
            set_version(conn, m.owner, n)
        })
        .map_err(|source| MigrateError::Failed {
            owner: m.owner.to_owned(),
            version: n,
            source,
        })?;
    }
    Ok(())
}

/// Runs `work` in a transaction that takes the write lock at once
/// (`BEGIN IMMEDIATE`), committed if it succeeds.
fn in_write_transaction(
    conn: &Connection,
    work: impl FnOnce() -> rusqlite::Result<()>,
) -> rusqlite::Result<()> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match work() {
        Ok(()) => conn.execute_batch("COMMIT"),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

/// How many of `owner`'s migrations ran on this database (0 for none).
pub fn version(conn: &Connection, owner: &str) -> rusqlite::Result<usize> {
    if !has_versions_table(conn)? {
        return Ok(0);
    }
    let v: Option<i64> = conn
        .query_row(
            "SELECT version FROM schema_versions WHERE owner = ?1",
            [owner],
            |r| r.get(0),
        )
        .optional()?;
    Ok(v.and_then(|v| usize::try_from(v).ok()).unwrap_or(0))
}

fn has_versions_table(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'schema_versions')",
        [],
        |r| r.get(0),
    )
}

fn set_version(conn: &Connection, owner: &str, version: usize) -> rusqlite::Result<()> {
    // Written inside the caller's transaction.
    conn.execute(
        "INSERT INTO schema_versions (owner, version) VALUES (?1, ?2) \
         ON CONFLICT (owner) DO UPDATE SET version = excluded.version",
        params![owner, i64::try_from(version).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

/// Creates `schema_versions` once; on a database of the single-counter
/// layout, records each owner's share of its `user_version` in the same
/// transaction, and moves `user_version` to [`LEGACY_SENTINEL`] so a host
/// of the single-counter layout refuses the database instead of running on
/// a schema it does not know.
fn ensure_versions_table(conn: &Connection) -> Result<(), MigrateError> {
    if has_versions_table(conn)? {
        return Ok(());
    }
    let mut outcome = Ok(());
    in_write_transaction(conn, || {
        // Another process may have created it since the check above.
        if has_versions_table(conn)? {
            return Ok(());
        }
        let legacy: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let legacy = usize::try_from(legacy).unwrap_or(0);
        let known: usize = LEGACY_ORDER.iter().map(|(_, n)| n).sum();
        if legacy > known {
            outcome = Err(MigrateError::TooNew {
                owner: "the single-counter layout".to_owned(),
                version: legacy,
                known,
            });
            return Ok(());
        }
        conn.execute_batch(
            "CREATE TABLE schema_versions (
                owner TEXT PRIMARY KEY NOT NULL,
                version INTEGER NOT NULL CHECK (version >= 0)
            ) STRICT;",
        )?;
        for (owner, done) in legacy_versions(legacy) {
            set_version(conn, owner, done)?;
        }
        conn.pragma_update(None, "user_version", LEGACY_SENTINEL)
    })?;
    outcome
}

/// Each owner's version in a database whose single counter stood at `total`.
fn legacy_versions(total: usize) -> Vec<(&'static str, usize)> {
    let mut left = total;
    let mut out = Vec::new();
    for &(owner, count) in LEGACY_ORDER {
        let done = left.min(count);
        if done > 0 {
            out.push((owner, done));
        }
        left -= done;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[&str] = &["CREATE TABLE a1 (x INTEGER) STRICT;"];
    const A2: &[&str] = &[
        "CREATE TABLE a1 (x INTEGER) STRICT;",
        "CREATE TABLE a2 (x INTEGER) STRICT;",
    ];
    const B: &[&str] = &["CREATE TABLE b1 (x INTEGER) STRICT;"];

    #[test]
    fn each_owner_runs_its_migrations_once_with_its_own_version() {
        let conn = Connection::open_in_memory().unwrap();
        for _ in 0..2 {
            apply(&conn, &Migrations::new("a", A)).unwrap();
            apply(&conn, &Migrations::new("b", B)).unwrap();
        }
        assert_eq!(version(&conn, "a").unwrap(), 1);
        assert_eq!(version(&conn, "b").unwrap(), 1);
    }

    #[test]
    fn a_migration_appended_to_one_owner_runs_alone_on_an_existing_database() {
        let conn = Connection::open_in_memory().unwrap();
        apply(&conn, &Migrations::new("a", A)).unwrap();
        apply(&conn, &Migrations::new("b", B)).unwrap();
        apply(&conn, &Migrations::new("a", A2)).unwrap();
        apply(&conn, &Migrations::new("b", B)).unwrap();
        assert_eq!(version(&conn, "a").unwrap(), 2);
        assert_eq!(version(&conn, "b").unwrap(), 1);
        conn.execute("INSERT INTO a2 (x) VALUES (1)", []).unwrap();
    }

    #[test]
    fn a_database_newer_than_the_host_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        apply(&conn, &Migrations::new("a", A2)).unwrap();
        assert!(matches!(
            apply(&conn, &Migrations::new("a", A)),
            Err(MigrateError::TooNew {
                version: 2,
                known: 1,
                ..
            })
        ));
    }

    #[test]
    fn a_single_counter_database_keeps_each_owners_share() {
        assert_eq!(legacy_versions(0), vec![]);
        assert_eq!(legacy_versions(1), vec![("host", 1)]);
        assert_eq!(legacy_versions(2), vec![("host", 1), ("tasks", 1)]);
        assert_eq!(
            legacy_versions(3),
            vec![("host", 1), ("tasks", 1), ("audit", 1)]
        );
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        assert_eq!(version(&conn, "tasks").unwrap(), 0, "nothing recorded yet");
        apply(&conn, &Migrations::new("host", &["SELECT 1;"])).unwrap();
        assert_eq!(version(&conn, "host").unwrap(), 1);
        assert_eq!(version(&conn, "tasks").unwrap(), 1);
        assert_eq!(version(&conn, "audit").unwrap(), 0);
        let counter: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(
            counter, LEGACY_SENTINEL,
            "a single-counter host must refuse it"
        );
    }

    #[test]
    fn a_single_counter_database_newer_than_its_layout_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", 4).unwrap();
        assert!(matches!(
            apply(&conn, &Migrations::new("host", &["SELECT 1;"])),
            Err(MigrateError::TooNew {
                version: 4,
                known: 3,
                ..
            })
        ));
    }
}
