//! The embedded SQLite database: one file, WAL, and what every store on it
//! shares.
//!
//! Each owner of tables migrates its own: the host's tokens here
//! ([`HOST_MIGRATIONS`]), the task store and the audit trail in
//! their rooms, each with its own version in `schema_versions`
//! ([`migrate`]). The group-commit [`writer`] and the [`readers`] pool are
//! opened once per file and shared by the stores on it.
//!
//! Durability is `synchronous=FULL` by default: a row the host acknowledged
//! survives a power cut. `NORMAL` trades the last transactions before a power
//! cut (never corruption) for ~2x write throughput; see [`Durability`].

pub mod migrate;
pub mod readers;
pub mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

pub use migrate::{MigrateError, Migrations};
pub use readers::ReadPool;
pub use writer::{WriteConn, WriteError, Writer};

/// How long a connection waits for a lock held by another connection (the
/// host's own `Db`, a backup, a second process) before failing.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Page cache of the writer, in KiB (SQLite's default is 2 MiB): index pages
/// of a large table stay cached between batches.
const WRITE_CACHE_KIB: i64 = 32 * 1024;

/// The owner name of the host's own tables in `schema_versions`.
pub const HOST_OWNER: &str = "host";

/// The host's own migrations (owner [`HOST_OWNER`]), applied in order. A
/// released migration is never edited, only appended to.
pub const HOST_MIGRATIONS: &[&str] = &[
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
pub enum DbError {
    #[error("database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error("cannot start the writer of database {path}: {source}")]
    Writer {
        path: String,
        source: std::io::Error,
    },
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
    /// Opens (creating if needed) the database at `path` and migrates the
    /// host's own tables. The stores on the file migrate theirs.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, DbError> {
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(parent);
        }
        let conn = Connection::open(path).map_err(|source| DbError::Open {
            path: path.display().to_string(),
            source,
        })?;
        Self::setup(conn, durability)
    }

    /// A private in-memory database, for tests and `modhost call`.
    pub fn in_memory() -> Result<Self, DbError> {
        Self::setup(Connection::open_in_memory()?, Durability::Full)
    }

    fn setup(conn: Connection, durability: Durability) -> Result<Self, DbError> {
        setup_connection(&conn, durability)?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate::apply(&conn, &Migrations::new(HOST_OWNER, HOST_MIGRATIONS))?;
        Ok(Db {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The connection, for one short statement or transaction.
    pub fn lock(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Tuning of the writer and readers of a [`SqliteFile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    /// `Full` (default): a write is on disk before it is acknowledged.
    pub durability: Durability,
    /// Read connections (default 4).
    pub readers: usize,
    /// Most writes one transaction groups (default 1024).
    pub max_batch: usize,
    /// Writes that may wait for the writer before callers wait too
    /// (default 4096).
    pub queue: usize,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            durability: Durability::Full,
            readers: 4,
            max_batch: 1024,
            queue: 4096,
        }
    }
}

/// The writer and the readers of one database file, shared by the stores
/// on it (tasks, audit), so all their writes share one group commit. Field
/// order is drop order: the writer finishes its queue before the readers
/// close and a scratch file is removed.
pub struct SqliteFile {
    pub writer: Writer,
    pub readers: ReadPool,
    path: PathBuf,
    _scratch: Option<ScratchFile>,
}

impl std::fmt::Debug for SqliteFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteFile")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteFile {
    /// Opens the writer and readers on an existing database file. Never
    /// creates the file: a store on a missing database is a configuration
    /// error, not an empty store.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, DbError> {
        Self::open_inner(path, options, None)
    }

    /// A new database file in the system's temporary directory with the
    /// given owners' migrations applied, removed when the file is dropped.
    /// For tests and benchmarks.
    pub fn open_scratch(
        options: SqliteOptions,
        schema: &[Migrations<'_>],
    ) -> Result<Self, DbError> {
        let path = std::env::temp_dir().join(format!(
            "modhost-scratch-{}.db",
            uuid::Uuid::new_v4().simple()
        ));
        let scratch = ScratchFile(path.clone());
        let conn = Connection::open(&path)?;
        for m in schema {
            migrate::apply(&conn, m)?;
        }
        drop(conn);
        Self::open_inner(&path, options, Some(scratch))
    }

    fn open_inner(
        path: &Path,
        options: SqliteOptions,
        scratch: Option<ScratchFile>,
    ) -> Result<Self, DbError> {
        let open = |source| DbError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open)?;
        setup_writer(&conn, options.durability).map_err(open)?;
        let readers = ReadPool::open(path, options.readers, BUSY_TIMEOUT).map_err(open)?;
        let writer = Writer::spawn(conn, options.max_batch, options.queue).map_err(|source| {
            DbError::Writer {
                path: path.display().to_string(),
                source,
            }
        })?;
        Ok(SqliteFile {
            writer,
            readers,
            path: path.to_owned(),
            _scratch: scratch,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file holds a table named `table`.
    pub fn has_table(&self, table: &str) -> rusqlite::Result<bool> {
        self.readers.with(|conn| {
            conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = ?1)",
                [table],
                |r| r.get(0),
            )
        })
    }
}

/// What every writing connection of the file has: WAL, the durability,
/// and a bounded wait for another connection's lock.
fn setup_connection(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", durability.synchronous())?;
    conn.busy_timeout(BUSY_TIMEOUT)
}

fn setup_writer(conn: &Connection, durability: Durability) -> rusqlite::Result<()> {
    setup_connection(conn, durability)?;
    conn.pragma_update(None, "cache_size", -WRITE_CACHE_KIB)?;
    // Savepoint journals and sorts stay in memory, never in temporary files.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(())
}

/// Removes a scratch database and its WAL files.
struct ScratchFile(PathBuf);

impl Drop for ScratchFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
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
        let v = migrate::version(&db.lock(), HOST_OWNER).unwrap();
        assert_eq!(v, HOST_MIGRATIONS.len());
    }
}
