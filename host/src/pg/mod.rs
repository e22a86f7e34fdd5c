//! A PostgreSQL database shared by several hosts: a small pool of
//! connections for reads, one group-commit [`writer`] per host, and
//! migrations versioned per owner like the embedded SQLite file's
//! ([`crate::db::migrate`]).
//!
//! The client is `tokio-postgres`: it pipelines the queries issued at once
//! on one connection, which is what lets the writer send a whole batch of
//! writes in one round trip; `deadpool-postgres` keeps the read connections
//! and replaces broken ones. Neither needs a database at compile time.

pub mod writer;

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::{Client, NoTls};

pub use writer::{Aborts, PgWriteError, PgWriter};

/// Read connections of one host (the writer has its own).
const READERS: usize = 8;

/// How long to wait for the server when connecting.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// Not a `postgres://` URL or `key=value` connection string.
    #[error("database URL {url}: {reason}")]
    Url { url: String, reason: String },
    /// The server could not be reached or refused the connection.
    #[error("cannot connect to PostgreSQL at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A migration failed; the database is left at the version before it.
    #[error("migrating {owner} to version {version}: {source}")]
    Migrate {
        owner: String,
        version: usize,
        #[source]
        source: tokio_postgres::Error,
    },
    /// The database is at a version this host does not know (a newer host
    /// migrated it).
    #[error("{owner} is at schema version {found}, newer than this host's {known}")]
    Newer {
        owner: String,
        found: usize,
        known: usize,
    },
    #[error("database error: {0}")]
    Sql(#[from] tokio_postgres::Error),
    /// A connection could not be had, or a write failed.
    #[error(transparent)]
    Write(#[from] PgWriteError),
}

/// `text` as PostgreSQL's `TEXT` takes it: U+0000, which it refuses (and
/// SQLite keeps), becomes U+FFFD, so a guest's text with one in it is stored
/// rather than failing the write (and its batch).
pub fn text(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        std::borrow::Cow::Owned(text.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}

/// A URL with its password hidden, for messages and logs.
pub fn redacted(url: &str) -> String {
    match tokio_postgres::Config::from_str(url) {
        Ok(config) if config.get_password().is_some() => match url.split_once('@') {
            Some((before, after)) => match before.rsplit_once(':') {
                Some((user, _)) if user.contains("//") => format!("{user}:***@{after}"),
                _ => "(a connection string with a password)".to_owned(),
            },
            None => "(a connection string with a password)".to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// One host's connections to a PostgreSQL database.
pub struct PgDatabase {
    pool: Pool,
    pub writer: PgWriter,
    config: tokio_postgres::Config,
    url: String,
}

impl std::fmt::Debug for PgDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgDatabase")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl PgDatabase {
    /// Connects to the database at `url` (checking that it answers) and
    /// starts the writer. Migrations are the owners' to apply ([`migrate`]).
    pub async fn connect(url: &str) -> Result<Self, PgError> {
        let shown = redacted(url);
        let mut config = tokio_postgres::Config::from_str(url).map_err(|e| PgError::Url {
            url: shown.clone(),
            reason: e.to_string(),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("modhost");
        }
        // A connection that died silently (a restarted server, a dropped
        // NAT entry) is noticed in about a minute, not in TCP's hours: the
        // writer, the readers and the listener then connect again.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30))
            .keepalives_interval(Duration::from_secs(10))
            .keepalives_retries(3);
        let pool = |size| {
            let manager = Manager::from_config(
                config.clone(),
                NoTls,
                ManagerConfig {
                    recycling_method: RecyclingMethod::Fast,
                },
            );
            Pool::builder(manager)
                .max_size(size)
                .runtime(Runtime::Tokio1)
                .build()
                .map_err(|e| PgError::Url {
                    url: shown.clone(),
                    reason: e.to_string(),
                })
        };
        let (readers, writes) = (pool(READERS)?, pool(1)?);
        let connect = |source: Box<dyn std::error::Error + Send + Sync>| PgError::Connect {
            url: shown.clone(),
            source,
        };
        // Fail now, naming the URL, rather than at the first task.
        drop(readers.get().await.map_err(|e| connect(Box::new(e)))?);
        let writer = PgWriter::spawn(writes)
            .await
            .map_err(|e| connect(Box::new(e)))?;
        Ok(PgDatabase {
            pool: readers,
            writer,
            config,
            url: shown,
        })
    }

    /// The URL, password hidden.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A read connection; waits for a free one.
    pub async fn reader(&self) -> Result<deadpool_postgres::Object, PgWriteError> {
        self.pool
            .get()
            .await
            .map_err(|e| PgWriteError::Connection(e.to_string()))
    }

    /// A connection of its own, outside the pool (a listener).
    pub async fn dedicated(
        &self,
    ) -> Result<
        (
            Client,
            tokio_postgres::Connection<tokio_postgres::Socket, tokio_postgres::tls::NoTlsStream>,
        ),
        tokio_postgres::Error,
    > {
        self.config.connect(NoTls).await
    }

    /// Brings `owner`'s tables to the last of `migrations`, applied in
    /// order; hosts starting at once take
    /// turns (an advisory lock), so each migration runs once. The pending
    /// migrations run in one transaction: a failure leaves the database as
    /// it was.
    pub async fn migrate(&self, owner: &str, migrations: &[&str]) -> Result<(), PgError> {
        let mut client = self.config.connect(NoTls).await.map(|(client, conn)| {
            tokio::spawn(conn);
            client
        })?;
        let tx = client.transaction().await?;
        tx.batch_execute(writer::IDLE_TRANSACTION_LIMIT).await?;
        // Held until this transaction ends: one migrating host at a time,
        // so even the first `CREATE TABLE` never races another host's.
        tx.execute("SELECT pg_advisory_xact_lock(7305118257)", &[])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_versions (
                owner TEXT PRIMARY KEY,
                version INTEGER NOT NULL CHECK (version >= 0)
            )",
        )
        .await?;
        let found: i32 = tx
            .query_opt(
                "SELECT version FROM schema_versions WHERE owner = $1",
                &[&owner],
            )
            .await?
            .map_or(0, |r| r.get(0));
        let found = usize::try_from(found).unwrap_or(0);
        if found > migrations.len() {
            return Err(PgError::Newer {
                owner: owner.to_owned(),
                found,
                known: migrations.len(),
            });
        }
        for (i, sql) in migrations.iter().enumerate().skip(found) {
            let version = i + 1;
            let failed = |source| PgError::Migrate {
                owner: owner.to_owned(),
                version,
                source,
            };
            tx.batch_execute(sql).await.map_err(failed)?;
            let v = i32::try_from(version).unwrap_or(i32::MAX);
            tx.execute(
                "INSERT INTO schema_versions (owner, version) VALUES ($1, $2)
                 ON CONFLICT (owner) DO UPDATE SET version = EXCLUDED.version",
                &[&owner, &v],
            )
            .await
            .map_err(failed)?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_with_a_nul_is_stored_with_a_replacement_character() {
        assert_eq!(text("a\0b"), "a\u{FFFD}b");
        assert!(matches!(text("plain"), std::borrow::Cow::Borrowed("plain")));
    }

    #[test]
    fn a_url_is_shown_without_its_password() {
        assert_eq!(
            redacted("postgres://modhost:s3cret@db.example:5432/tasks"),
            "postgres://modhost:***@db.example:5432/tasks"
        );
        assert_eq!(
            redacted("postgres://modhost@db.example/tasks"),
            "postgres://modhost@db.example/tasks"
        );
        assert_eq!(
            redacted("host=db user=modhost password=s3cret"),
            "(a connection string with a password)"
        );
    }
}
