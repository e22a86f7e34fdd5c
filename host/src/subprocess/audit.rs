//! The subprocess audit trail: what every `run-subprocess` call asked, what
//! the gate decided and why, and how the child ended. It is how an operator
//! learns what a module really does, so denials are kept as carefully as
//! launches.
//!
//! [`AuditStore`] is the room's own store; [`SqliteAuditStore`] keeps the
//! trail in the host's SQLite file, beside the tasks and on the same
//! group-commit writer, with its own migrations ([`OWNER`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use rusqlite::{Connection, Row, params};
use serde::{Deserialize, Serialize};

use crate::db::migrate::Migrations;
use crate::db::{SqliteFile, WriteConn, WriteError};

/// The audit trail's name in `schema_versions`.
pub const OWNER: &str = "audit";

/// The audit trail's migrations, in order. Released entries are never
/// edited; changes are appended.
pub const MIGRATIONS: &[&str] = &[
    // The subprocess audit trail: one row per `run-subprocess` decision,
    // completed with the outcome once the child has ended. Rows are never
    // deleted (until migration 3's retention) or re-owned.
    "CREATE TABLE subprocess_audit (
        id TEXT PRIMARY KEY NOT NULL,
        at INTEGER NOT NULL,
        module TEXT NOT NULL,
        user_id TEXT NOT NULL,
        organization_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        task_id TEXT,
        program TEXT NOT NULL,
        path TEXT,
        args_json TEXT NOT NULL,
        cwd TEXT,
        env_json TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision = 'allowed' OR decision = 'denied'
            OR decision = 'invalid' OR decision = 'limited'),
        reason TEXT,
        confined INTEGER NOT NULL CHECK (confined IN (0, 1)),
        ended TEXT CHECK (ended IS NULL OR ended = 'exited' OR ended = 'signalled'
            OR ended = 'timed-out' OR ended = 'cancelled' OR ended = 'failed'),
        exit_code INTEGER,
        signal INTEGER,
        failure TEXT,
        duration_ms INTEGER,
        stdout_bytes INTEGER,
        stderr_bytes INTEGER,
        finished_at INTEGER,
        CHECK (ended IS NULL OR decision = 'allowed')
    ) STRICT;

    CREATE INDEX subprocess_audit_by_org ON subprocess_audit (organization_id, module, id);

    CREATE TRIGGER subprocess_audit_decision_is_fixed BEFORE UPDATE OF id, at, module, user_id,
        organization_id, request_id, task_id, program, path, args_json, cwd, env_json, decision,
        reason, confined ON subprocess_audit
    BEGIN
        SELECT RAISE(ABORT, 'an audit decision cannot change');
    END;

    CREATE TRIGGER subprocess_audit_is_kept BEFORE DELETE ON subprocess_audit
    BEGIN
        SELECT RAISE(ABORT, 'audit records are kept');
    END;",
    // A member reads the records of their own calls: by organization and
    // user, newest first, without scanning the organization's.
    "CREATE INDEX subprocess_audit_by_user ON subprocess_audit (organization_id, user_id, id);",
    // Retention: records older than the operator's period are deleted,
    // oldest first along this index. A record younger than a day is still
    // never deleted (longer than any child runs, so a launch keeps its
    // record until its end is written), whatever deletes it.
    "DROP TRIGGER subprocess_audit_is_kept;

    CREATE INDEX subprocess_audit_by_at ON subprocess_audit (at);

    CREATE TRIGGER subprocess_audit_is_kept_a_day BEFORE DELETE ON subprocess_audit
    WHEN OLD.at > CAST(unixepoch('subsec') * 1000 AS INTEGER) - 86400000
    BEGIN
        SELECT RAISE(ABORT, 'audit records are kept for at least a day');
    END;",
];

/// [`MIGRATIONS`] under their owner.
pub const MIGRATION_LIST: Migrations<'static> = Migrations::new(OWNER, MIGRATIONS);

/// A boxed, sendable future: what the writes of the dyn-compatible
/// [`AuditStore`] return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the trail is kept. A write resolves once it is durable.
pub trait AuditStore: Send + Sync + 'static {
    /// Records a `run-subprocess` decision.
    fn record(&self, decision: AuditDecision) -> BoxFuture<'_, Result<(), AuditError>>;

    /// Completes the record of an allowed launch with how the child ended;
    /// false when there is no such open record.
    fn record_end(&self, id: &str, end: AuditEnd) -> BoxFuture<'_, Result<bool, AuditError>>;

    /// Records matching every field of `filter`, newest first, `limit`
    /// clamped to 1..=[`MAX_AUDIT_LIMIT`].
    fn query<'a>(
        &'a self,
        filter: &'a AuditFilter,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, AuditError>>;

    /// Deletes at most `limit` records decided before `before` (ms since the
    /// epoch), oldest first, in one write; returns how many. Retention calls
    /// it until it deletes fewer than `limit` ([`crate::retention`]). The
    /// default deletes nothing: a store that keeps its trail elsewhere keeps
    /// it by that place's own rules.
    fn prune(&self, before: i64, limit: u32) -> BoxFuture<'_, Result<u64, AuditError>> {
        let _ = (before, limit);
        Box::pin(async { Ok(0) })
    }
}

/// Why the trail could not be written or read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AuditError {
    /// The database has no audit table: its migrations were not applied.
    #[error("the database has no subprocess audit table; apply its migrations first")]
    SchemaMissing,
    #[error("audit database error: {0}")]
    Backend(Arc<rusqlite::Error>),
    #[error(transparent)]
    Write(#[from] WriteError),
    /// A stored record holds a value this host does not know.
    #[error("a stored audit record has a bad {0}")]
    Corrupt(String),
    /// The shared PostgreSQL database failed; nothing was written.
    #[error("audit database error: {0}")]
    Postgres(#[from] crate::pg::PgWriteError),
}

impl AuditError {
    /// Whether the database failed for want of disk space.
    pub fn is_disk_full(&self) -> bool {
        match self {
            AuditError::Backend(e) => crate::db::writer::is_disk_full(e),
            AuditError::Write(WriteError::Full(_)) => true,
            AuditError::Postgres(crate::pg::PgWriteError::Sql(e)) => {
                e.code() == Some(&tokio_postgres::error::SqlState::DISK_FULL)
            }
            _ => false,
        }
    }
}

impl From<tokio_postgres::Error> for AuditError {
    fn from(e: tokio_postgres::Error) -> Self {
        AuditError::Postgres(e.into())
    }
}

impl From<rusqlite::Error> for AuditError {
    fn from(e: rusqlite::Error) -> Self {
        AuditError::Backend(Arc::new(e))
    }
}

/// The trail in a SQLite file shared with the task store.
pub struct SqliteAuditStore {
    file: Arc<SqliteFile>,
}

impl std::fmt::Debug for SqliteAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteAuditStore").finish_non_exhaustive()
    }
}

impl SqliteAuditStore {
    /// The store on an open file whose audit table already exists.
    pub fn on(file: Arc<SqliteFile>) -> Result<Self, AuditError> {
        if !file.has_table("subprocess_audit")? {
            return Err(AuditError::SchemaMissing);
        }
        Ok(SqliteAuditStore { file })
    }
}

impl AuditStore for SqliteAuditStore {
    fn record(&self, decision: AuditDecision) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(self.file.writer.run(move |conn| insert(conn, &decision)))
    }

    fn record_end(&self, id: &str, end: AuditEnd) -> BoxFuture<'_, Result<bool, AuditError>> {
        let id = id.to_owned();
        Box::pin(self.file.writer.run(move |conn| finish(conn, &id, &end)))
    }

    fn query<'a>(
        &'a self,
        filter: &'a AuditFilter,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, AuditError>> {
        // A short indexed read, answered on the polling thread.
        Box::pin(async move { Ok(self.file.readers.with(|conn| select(conn, filter, limit))?) })
    }

    fn prune(&self, before: i64, limit: u32) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(self.file.writer.run(move |conn| {
            let deleted = conn
                .prepare(PRUNE_SQL)?
                .execute(params![before, i64::from(limit)])?;
            Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
        }))
    }
}

/// The oldest records decided before `?1`, at most `?2`: a walk of the
/// decision-time index that stops at the limit.
const PRUNE_SQL: &str = "DELETE FROM subprocess_audit WHERE rowid IN (SELECT rowid \
    FROM subprocess_audit INDEXED BY subprocess_audit_by_at WHERE at < ?1 \
    ORDER BY at LIMIT ?2 + 0)";

/// The most rows one audit query returns.
pub const MAX_AUDIT_LIMIT: u32 = 500;

/// The longest stored `args_json` or `reason`; longer ones are cut and
/// marked, so a guest cannot grow the trail by megabytes per call.
pub const MAX_AUDIT_TEXT_BYTES: usize = 16 * 1024;

/// What the gate decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// The child was launched (or an attempt was made).
    Allowed,
    /// Not granted (`permission-denied`), or no confinement available.
    Denied,
    /// Malformed (`invalid-input`).
    Invalid,
    /// A concurrency cap was reached (`limit-exceeded`).
    Limited,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allowed => "allowed",
            Decision::Denied => "denied",
            Decision::Invalid => "invalid",
            Decision::Limited => "limited",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allowed" => Decision::Allowed,
            "denied" => Decision::Denied,
            "invalid" => Decision::Invalid,
            "limited" => Decision::Limited,
            _ => return None,
        })
    }
}

/// How a launched child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ended {
    Exited,
    Signalled,
    TimedOut,
    Cancelled,
    /// It could not be started.
    Failed,
}

impl Ended {
    pub fn as_str(self) -> &'static str {
        match self {
            Ended::Exited => "exited",
            Ended::Signalled => "signalled",
            Ended::TimedOut => "timed-out",
            Ended::Cancelled => "cancelled",
            Ended::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "exited" => Ended::Exited,
            "signalled" => Ended::Signalled,
            "timed-out" => Ended::TimedOut,
            "cancelled" => Ended::Cancelled,
            "failed" => Ended::Failed,
            _ => return None,
        })
    }
}

/// One decision, written before anything is launched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditDecision {
    /// A UUIDv7: records sort by time.
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub module: String,
    pub user_id: String,
    pub organization_id: String,
    pub request_id: String,
    pub task_id: Option<String>,
    /// As requested.
    pub program: String,
    /// The absolute path it resolved to, when granted.
    pub path: Option<String>,
    pub args: Vec<String>,
    pub cwd: Option<String>,
    /// Names of the variables the request set; values are not kept (they
    /// may be secrets).
    pub env_names: Vec<String>,
    pub decision: Decision,
    pub reason: Option<String>,
    /// Whether the child ran under Landlock.
    pub confined: bool,
}

/// How a launched child ended, written when it has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEnd {
    pub ended: Ended,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Why it could not be started.
    pub failure: Option<String>,
    pub duration_ms: i64,
    /// Bytes the child wrote, including what was cut at the cap.
    pub stdout_bytes: i64,
    pub stderr_bytes: i64,
    pub finished_at: i64,
}

/// A stored record: the decision, and the end once there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    #[serde(flatten)]
    pub decision: AuditDecision,
    pub end: Option<AuditEnd>,
}

/// Which records [`AuditStore::query`] returns; every
/// given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    pub organization_id: Option<String>,
    pub module: Option<String>,
    pub user_id: Option<String>,
    pub decision: Option<Decision>,
    /// Only records older than this id (the last of the previous page).
    pub before: Option<String>,
}

/// `text` cut to [`MAX_AUDIT_TEXT_BYTES`] on a character boundary.
pub(super) fn capped(mut text: String) -> String {
    if text.len() > MAX_AUDIT_TEXT_BYTES {
        let mut end = MAX_AUDIT_TEXT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("…[cut]");
    }
    text
}

/// The decision's list columns as stored: JSON, cut to the cap.
pub(super) fn stored_lists(d: &AuditDecision) -> (String, String) {
    (
        capped(serde_json::to_string(&d.args).unwrap_or_default()),
        capped(serde_json::to_string(&d.env_names).unwrap_or_default()),
    )
}

fn insert(conn: &WriteConn<'_>, d: &AuditDecision) -> Result<(), AuditError> {
    let (args_json, env_json) = stored_lists(d);
    conn.prepare(
        "INSERT INTO subprocess_audit (id, at, module, user_id, organization_id, request_id, \
         task_id, program, path, args_json, cwd, env_json, decision, reason, confined) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
    )?
    .execute(params![
        d.id,
        d.at,
        d.module,
        d.user_id,
        d.organization_id,
        d.request_id,
        d.task_id,
        capped(d.program.clone()),
        d.path,
        args_json,
        d.cwd.clone().map(capped),
        env_json,
        d.decision.as_str(),
        d.reason.clone().map(capped),
        d.confined,
    ])?;
    Ok(())
}

fn finish(conn: &WriteConn<'_>, id: &str, e: &AuditEnd) -> Result<bool, AuditError> {
    let changed = conn
        .prepare(
            "UPDATE subprocess_audit SET ended = ?2, exit_code = ?3, signal = ?4, failure = ?5, \
             duration_ms = ?6, stdout_bytes = ?7, stderr_bytes = ?8, finished_at = ?9 \
             WHERE id = ?1 AND decision = 'allowed' AND ended IS NULL",
        )?
        .execute(params![
            id,
            e.ended.as_str(),
            e.exit_code,
            e.signal,
            e.failure.clone().map(capped),
            e.duration_ms,
            e.stdout_bytes,
            e.stderr_bytes,
            e.finished_at,
        ])?;
    Ok(changed == 1)
}

/// The statement of one query: only the filter's given fields, bound, so
/// the planner can use the index of the shape (organization and user, or
/// organization and module) instead of scanning the trail.
/// `mark(n)` spells the `n`-th placeholder (`?n`, `$n`); `limit_tail` what
/// follows the limit's placeholder. Every value but the last (the limit) is
/// text.
pub(super) fn select_sql(
    filter: &AuditFilter,
    limit: u32,
    mark: fn(usize) -> String,
    limit_tail: &str,
) -> (String, Vec<String>, i64) {
    let mut sql = String::from(
        "SELECT id, at, module, user_id, organization_id, request_id, task_id, program, path, \
         args_json, cwd, env_json, decision, reason, confined, ended, exit_code, signal, failure, \
         duration_ms, stdout_bytes, stderr_bytes, finished_at FROM subprocess_audit WHERE TRUE",
    );
    let mut params = Vec::new();
    let text = |v: &str| v.to_owned();
    for (column, value) in [
        (
            "organization_id = ",
            filter.organization_id.as_deref().map(text),
        ),
        ("module = ", filter.module.as_deref().map(text)),
        ("user_id = ", filter.user_id.as_deref().map(text)),
        ("decision = ", filter.decision.map(|d| text(d.as_str()))),
        ("id < ", filter.before.as_deref().map(text)),
    ] {
        if let Some(value) = value {
            params.push(value);
            sql.push_str(&format!(" AND {column}{}", mark(params.len())));
        }
    }
    sql.push_str(&format!(
        " ORDER BY id DESC LIMIT {}{limit_tail}",
        mark(params.len() + 1)
    ));
    (sql, params, i64::from(limit.clamp(1, MAX_AUDIT_LIMIT)))
}

fn select(
    conn: &Connection,
    filter: &AuditFilter,
    limit: u32,
) -> rusqlite::Result<Vec<AuditRecord>> {
    use rusqlite::types::Value;
    let (sql, texts, limit) = select_sql(filter, limit, |n| format!("?{n}"), " + 0");
    let params = texts
        .into_iter()
        .map(Value::Text)
        .chain([Value::Integer(limit)]);
    conn.prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(params), record)?
        .collect()
}

fn record(r: &Row<'_>) -> rusqlite::Result<AuditRecord> {
    record_of(r)
}

/// An audit record of a row of the columns [`select_sql`] selects, from
/// either database.
pub(super) fn record_of<R: crate::columns::Columns>(r: &R) -> Result<AuditRecord, R::Error> {
    let small = |i: usize| -> Result<Option<i32>, R::Error> {
        r.int(i)?
            .map(|v| i32::try_from(v).map_err(|_| r.corrupt(i, "a 32-bit integer")))
            .transpose()
    };
    let end = match r.text(15)? {
        None => None,
        Some(e) => Some(AuditEnd {
            ended: Ended::parse(&e).ok_or_else(|| r.corrupt(15, "how a child ended"))?,
            exit_code: small(16)?,
            signal: small(17)?,
            failure: r.text(18)?,
            duration_ms: r.int(19)?.unwrap_or(0),
            stdout_bytes: r.int(20)?.unwrap_or(0),
            stderr_bytes: r.int(21)?.unwrap_or(0),
            finished_at: r.int(22)?.unwrap_or(0),
        }),
    };
    let args_json = r.required_text(9)?;
    let env_json = r.required_text(11)?;
    let decision = r.required_text(12)?;
    Ok(AuditRecord {
        decision: AuditDecision {
            id: r.required_text(0)?,
            at: r.required_int(1)?,
            module: r.required_text(2)?,
            user_id: r.required_text(3)?,
            organization_id: r.required_text(4)?,
            request_id: r.required_text(5)?,
            task_id: r.text(6)?,
            program: r.required_text(7)?,
            path: r.text(8)?,
            // A cut list is not JSON any more; keep it readable as one item.
            args: serde_json::from_str(&args_json).unwrap_or_else(|_| vec![args_json]),
            cwd: r.text(10)?,
            env_names: serde_json::from_str(&env_json).unwrap_or_else(|_| vec![env_json]),
            decision: Decision::parse(&decision).ok_or_else(|| r.corrupt(12, "a decision"))?,
            reason: r.text(13)?,
            confined: r.flag(14)?,
        },
        end,
    })
}

/// A denied decision of user `alice` of `acme` made at `at`: a fixture of
/// the audit tests and the retention tests.
#[cfg(test)]
pub(crate) fn decided_at(at: i64) -> AuditDecision {
    AuditDecision {
        id: uuid::Uuid::now_v7().to_string(),
        at,
        module: "m".into(),
        user_id: "alice".into(),
        organization_id: "acme".into(),
        request_id: "r".into(),
        task_id: None,
        program: "true".into(),
        path: None,
        args: Vec::new(),
        cwd: None,
        env_names: Vec::new(),
        decision: Decision::Denied,
        reason: Some("not granted".into()),
        confined: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::{SqliteOptions, now_ms};

    const DAY_MS: i64 = 86_400_000;

    fn trail() -> SqliteAuditStore {
        let file = SqliteFile::open_scratch(SqliteOptions::default(), &[MIGRATION_LIST]).unwrap();
        SqliteAuditStore::on(Arc::new(file)).unwrap()
    }

    async fn ats(trail: &SqliteAuditStore) -> Vec<i64> {
        let mut ats: Vec<i64> = trail
            .query(&AuditFilter::default(), MAX_AUDIT_LIMIT)
            .await
            .unwrap()
            .iter()
            .map(|r| r.decision.at)
            .collect();
        ats.sort_unstable();
        ats
    }

    #[tokio::test]
    async fn pruning_deletes_records_before_the_cutoff_oldest_first_a_batch_at_a_time() {
        let trail = trail();
        let now = now_ms();
        let (old, kept) = (now - 100 * DAY_MS, now - 10 * DAY_MS);
        for at in [old, old + 1, old + 2, kept, now] {
            trail.record(decided_at(at)).await.unwrap();
        }
        let cutoff = now - 90 * DAY_MS;
        assert_eq!(trail.prune(cutoff, 2).await.unwrap(), 2);
        assert_eq!(
            ats(&trail).await,
            [old + 2, kept, now],
            "the oldest go first"
        );
        assert_eq!(trail.prune(cutoff, 2).await.unwrap(), 1);
        assert_eq!(trail.prune(cutoff, 2).await.unwrap(), 0);
        assert_eq!(ats(&trail).await, [kept, now]);
    }

    #[tokio::test]
    async fn the_schema_keeps_a_record_younger_than_a_day_whatever_deletes_it() {
        let trail = trail();
        let now = now_ms();
        trail.record(decided_at(now - DAY_MS / 2)).await.unwrap();
        let err = trail.prune(now + DAY_MS, 10).await.unwrap_err();
        assert!(err.to_string().contains("kept for at least a day"), "{err}");
        assert_eq!(ats(&trail).await.len(), 1);
    }

    #[test]
    fn pruning_walks_the_decision_time_index() {
        let conn = Connection::open_in_memory().unwrap();
        crate::db::migrate::apply(&conn, &MIGRATION_LIST).unwrap();
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {PRUNE_SQL}"))
            .unwrap()
            .query_map(params![0, 10], |r| r.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("subprocess_audit_by_at"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn a_members_query_reads_the_user_index_not_the_whole_trail() {
        let conn = Connection::open_in_memory().unwrap();
        crate::db::migrate::apply(&conn, &MIGRATION_LIST).unwrap();
        let filter = AuditFilter {
            organization_id: Some("acme".into()),
            user_id: Some("alice".into()),
            ..AuditFilter::default()
        };
        let (sql, texts, limit) = select_sql(&filter, 10, |n| format!("?{n}"), " + 0");
        let params = texts
            .into_iter()
            .map(rusqlite::types::Value::Text)
            .chain([rusqlite::types::Value::Integer(limit)]);
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map(rusqlite::params_from_iter(params), |r| {
                r.get::<_, String>(3)
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let plan = plan.join("; ");
        assert!(plan.contains("subprocess_audit_by_user"), "{plan}");
        assert!(!plan.contains("SCAN subprocess_audit "), "{plan}");
    }
}
