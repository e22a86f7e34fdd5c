//! The embedded SQLite database: one file, WAL, schema migrations.
//!
//! Durability is `synchronous=FULL` by default: a row the host acknowledged
//! survives a power cut. `NORMAL` trades the last transactions before a power
//! cut (never corruption) for ~2x write throughput; see [`Durability`].

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::Connection;

/// Schema migrations, applied in order; `PRAGMA user_version` records how
/// many ran. A released migration is never edited, only appended to.
const MIGRATIONS: &[&str] = &[
    // 1: bearer tokens, stored as SHA-256 of the secret.
    "CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        secret_sha256 BLOB NOT NULL UNIQUE,
        user_id TEXT NOT NULL,
        organization_id TEXT NOT NULL,
        role TEXT NOT NULL CHECK (role IN ('viewer', 'member', 'admin')),
        label TEXT NOT NULL DEFAULT '',
        created_at INTEGER NOT NULL,
        revoked_at INTEGER
    ) STRICT;",
];

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every commit is on disk before it is acknowledged.
    #[default]
    Full,
    /// `synchronous=NORMAL`: in WAL mode, safe against a crash of the host
    /// process; a power cut may lose the last commits.
    Normal,
}

impl Durability {
    /// The value of SQLite's `synchronous` pragma for this durability.
    pub fn synchronous(self) -> &'static str {
        match self {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        }
    }
}

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("database migration {version} failed: {source}")]
    Migrate {
        version: usize,
        source: rusqlite::Error,
    },
    #[error("database {version} is newer than this host understands ({known} migrations)")]
    TooNew { version: usize, known: usize },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
}

/// A shared handle on the database file.
#[derive(Clone)]
pub struct Db {
    conn: Arc<Mutex<Connection>>,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, StoreError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(parent);
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::setup(conn, durability)
    }

    /// A private in-memory database, for tests and `modhost call`.
    pub fn in_memory() -> Result<Self, StoreError> {
        Self::setup(Connection::open_in_memory()?, Durability::Full)
    }

    fn setup(conn: Connection, durability: Durability) -> Result<Self, StoreError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", durability.synchronous())?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The connection, for one short statement or transaction.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Every migration of the database: the host's own, then the task store's.
fn all_migrations() -> Vec<&'static str> {
    MIGRATIONS
        .iter()
        .chain(crate::tasks::store::MIGRATIONS)
        .copied()
        .collect()
}

fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let migrations = all_migrations();
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let version = usize::try_from(version).unwrap_or(0);
    if version > migrations.len() {
        return Err(StoreError::TooNew {
            version,
            known: migrations.len(),
        });
    }
    for (i, sql) in migrations.iter().enumerate().skip(version) {
        let n = i + 1;
        let run = || -> rusqlite::Result<()> {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", i64::try_from(n).unwrap_or(i64::MAX))?;
            tx.commit()
        };
        run().map_err(|source| StoreError::Migrate { version: n, source })?;
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reopening_a_database_does_not_rerun_migrations() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.db");
        drop(Db::open(&path, Durability::Full).unwrap());
        let db = Db::open(&path, Durability::Full).unwrap();
        let v: i64 = db
            .lock()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(usize::try_from(v).unwrap(), all_migrations().len());
    }
}
