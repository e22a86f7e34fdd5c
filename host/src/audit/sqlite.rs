//! [`SqliteAuditStore`]: the audit trail in the host's SQLite file, beside
//! the tasks and on the same group-commit writer, with its own migrations
//! ([`OWNER`]).

use std::sync::Arc;

use rusqlite::{Connection, Row, params};

use super::record::{
    AuditEnd, AuditEntry, AuditError, AuditFilter, AuditRecord, AuditStore, BoxFuture, OWNER,
    Stored, record_of, select_sql,
};
use crate::db::migrate::Migrations;
use crate::db::{SqliteFile, WriteConn};

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
    // One trail for every capability: the subprocess records move into
    // `audit`, their program as the subject and the rest as the
    // subprocess's detail. A list cut at the cap (no longer JSON) is kept
    // as one item, as the host reads it. Record ids, times and ends stay.
    "CREATE TABLE audit (
        id TEXT PRIMARY KEY NOT NULL,
        at INTEGER NOT NULL,
        capability TEXT NOT NULL CHECK (capability IN ('subprocess', 'http', 'filesystem',
            'task', 'confirmation')),
        module TEXT NOT NULL,
        user_id TEXT NOT NULL,
        organization_id TEXT NOT NULL,
        request_id TEXT NOT NULL,
        task_id TEXT,
        subject TEXT NOT NULL,
        decision TEXT NOT NULL CHECK (decision IN ('allowed', 'denied', 'invalid', 'limited')),
        reason TEXT,
        detail_json TEXT NOT NULL CHECK (json_valid(detail_json)),
        end_json TEXT CHECK (end_json IS NULL OR (decision = 'allowed' AND json_valid(end_json)))
    ) STRICT;

    CREATE INDEX audit_by_module ON audit (organization_id, module, id);
    CREATE INDEX audit_by_user ON audit (organization_id, user_id, id);
    CREATE INDEX audit_by_capability ON audit (organization_id, capability, id);
    CREATE INDEX audit_by_at ON audit (at);

    INSERT INTO audit (id, at, capability, module, user_id, organization_id, request_id, task_id,
        subject, decision, reason, detail_json, end_json)
    SELECT id, at, 'subprocess', module, user_id, organization_id, request_id, task_id, program,
        decision, reason,
        json_object('path', path,
            'args', CASE WHEN json_valid(args_json) THEN json(args_json)
                ELSE json_array(args_json) END,
            'cwd', cwd,
            'env_names', CASE WHEN json_valid(env_json) THEN json(env_json)
                ELSE json_array(env_json) END,
            'confined', json(CASE confined WHEN 1 THEN 'true' ELSE 'false' END)),
        CASE WHEN ended IS NULL THEN NULL ELSE json_object('ended', ended,
            'exit_code', exit_code, 'signal', signal, 'failure', failure,
            'duration_ms', coalesce(duration_ms, 0), 'stdout_bytes', coalesce(stdout_bytes, 0),
            'stderr_bytes', coalesce(stderr_bytes, 0), 'finished_at', coalesce(finished_at, 0))
        END
    FROM subprocess_audit;

    DROP TABLE subprocess_audit;

    CREATE TRIGGER audit_decision_is_fixed BEFORE UPDATE OF id, at, capability, module, user_id,
        organization_id, request_id, task_id, subject, decision, reason, detail_json ON audit
    BEGIN
        SELECT RAISE(ABORT, 'an audit decision cannot change');
    END;

    CREATE TRIGGER audit_is_kept_a_day BEFORE DELETE ON audit
    WHEN OLD.at > CAST(unixepoch('subsec') * 1000 AS INTEGER) - 86400000
    BEGIN
        SELECT RAISE(ABORT, 'audit records are kept for at least a day');
    END;",
    // An admin reads the whole organization's trail, newest first, along
    // this index instead of sorting it.
    "CREATE INDEX audit_by_org ON audit (organization_id, id);",
];

/// [`MIGRATIONS`] under their owner.
pub const MIGRATION_LIST: Migrations<'static> = Migrations::new(OWNER, MIGRATIONS);

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
        if !file.has_table("audit")? {
            return Err(AuditError::SchemaMissing);
        }
        Ok(SqliteAuditStore { file })
    }
}

impl AuditStore for SqliteAuditStore {
    fn record(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), AuditError>> {
        Box::pin(self.file.writer.run(move |conn| insert(conn, &entry)))
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
const PRUNE_SQL: &str = "DELETE FROM audit WHERE rowid IN (SELECT rowid \
    FROM audit INDEXED BY audit_by_at WHERE at < ?1 ORDER BY at LIMIT ?2 + 0)";

/// A record written again (a retry after a commit whose outcome was
/// uncertain) is the one already there: the second write does nothing.
const INSERT_SQL: &str = "INSERT INTO audit (id, at, capability, module, user_id, \
    organization_id, request_id, task_id, subject, decision, reason, detail_json) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) ON CONFLICT (id) DO NOTHING";

fn insert(conn: &WriteConn<'_>, e: &AuditEntry) -> Result<(), AuditError> {
    let s = Stored::of(e);
    conn.prepare(INSERT_SQL)?.execute(params![
        e.id,
        e.at,
        s.capability,
        e.module,
        e.user_id,
        e.organization_id,
        e.request_id,
        e.task_id,
        s.subject,
        s.decision,
        s.reason,
        s.detail_json,
    ])?;
    Ok(())
}

fn finish(conn: &WriteConn<'_>, id: &str, e: &AuditEnd) -> Result<bool, AuditError> {
    let changed = conn
        .prepare(
            "UPDATE audit SET end_json = ?2 WHERE id = ?1 AND capability = 'subprocess' \
             AND decision = 'allowed' AND end_json IS NULL",
        )?
        .execute(params![id, e.stored()])?;
    Ok(changed == 1)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{MAX_AUDIT_LIMIT, decided_at};
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
            .map(|r| r.entry.at)
            .collect();
        ats.sort_unstable();
        ats
    }

    #[tokio::test]
    async fn a_record_written_again_is_kept_once_and_a_constraint_is_not_retried() {
        let trail = trail();
        let entry = decided_at(now_ms());
        // As a retry after a commit whose outcome was uncertain writes it.
        trail.record(entry.clone()).await.unwrap();
        trail.record(entry).await.unwrap();
        assert_eq!(ats(&trail).await.len(), 1);
        let failure = |code| {
            AuditError::Backend(Arc::new(rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(code),
                None,
            )))
        };
        assert!(!failure(rusqlite::ffi::SQLITE_CONSTRAINT).is_transient());
        assert!(failure(rusqlite::ffi::SQLITE_BUSY).is_transient());
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
        assert!(plan.contains("audit_by_at"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    #[test]
    fn an_admins_query_walks_the_organization_index_without_sorting() {
        let conn = Connection::open_in_memory().unwrap();
        crate::db::migrate::apply(&conn, &MIGRATION_LIST).unwrap();
        let filter = AuditFilter {
            organization_id: Some("acme".into()),
            ..AuditFilter::default()
        };
        let plan = plan_of(&conn, &filter);
        assert!(plan.contains("audit_by_org"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "{plan}");
    }

    /// The query plan of `filter`'s statement.
    fn plan_of(conn: &Connection, filter: &AuditFilter) -> String {
        let (sql, texts, limit) = select_sql(filter, 10, |n| format!("?{n}"), " + 0");
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
        plan.join("; ")
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
        let plan = plan_of(&conn, &filter);
        assert!(plan.contains("audit_by_user"), "{plan}");
        assert!(!plan.contains("SCAN audit "), "{plan}");
    }

    #[test]
    fn the_subprocess_records_move_into_the_one_trail_with_their_ends() {
        let conn = Connection::open_in_memory().unwrap();
        let before = Migrations::new(OWNER, &MIGRATIONS[..3]);
        crate::db::migrate::apply(&conn, &before).unwrap();
        conn.execute_batch(
            "INSERT INTO subprocess_audit (id, at, module, user_id, organization_id, request_id, \
             task_id, program, path, args_json, cwd, env_json, decision, reason, confined, ended, \
             exit_code, duration_ms, stdout_bytes, stderr_bytes, finished_at) VALUES \
             ('01', 1, 'git-stats', 'alice', 'acme', 'r1', 't1', 'git', '/usr/bin/git', \
              '[\"log\",\"-n\"]', 'repo', '[\"HOME\"]', 'allowed', NULL, 1, 'exited', 0, 12, \
              40, 0, 13), \
             ('02', 2, 'git-stats', 'bob', 'acme', 'r2', NULL, 'curl', NULL, '[\"a…[cut]', NULL, \
              '[]', 'denied', 'not granted', 0, NULL, NULL, NULL, NULL, NULL, NULL);",
        )
        .unwrap();
        crate::db::migrate::apply(&conn, &MIGRATION_LIST).unwrap();
        let records = select(&conn, &AuditFilter::default(), 10).unwrap();
        assert_eq!(records.len(), 2);
        let (denied, allowed) = (&records[0], &records[1]);
        assert_eq!(allowed.entry.subject, "git");
        assert_eq!(allowed.entry.task_id.as_deref(), Some("t1"));
        assert_eq!(
            allowed.entry.detail,
            crate::audit::Detail::Subprocess(crate::audit::SubprocessDetail {
                path: Some("/usr/bin/git".into()),
                args: vec!["log".into(), "-n".into()],
                cwd: Some("repo".into()),
                env_names: vec!["HOME".into()],
                confined: true,
            })
        );
        let end = allowed.end.as_ref().unwrap();
        assert_eq!(
            (end.exit_code, end.duration_ms, end.finished_at),
            (Some(0), 12, 13)
        );
        assert_eq!(denied.entry.reason.as_deref(), Some("not granted"));
        let crate::audit::Detail::Subprocess(d) = &denied.entry.detail else {
            unreachable!()
        };
        assert_eq!(
            d.args,
            ["[\"a…[cut]"],
            "a cut list stays readable as one item"
        );
        assert!(denied.end.is_none());
        let old: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'subprocess_audit'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(old, 0);
    }

    #[tokio::test]
    async fn a_decision_cannot_change_once_written() {
        let trail = trail();
        let entry = decided_at(crate::db::now_ms());
        trail.record(entry.clone()).await.unwrap();
        let err = trail
            .file
            .writer
            .run(move |conn| {
                conn.prepare("UPDATE audit SET decision = 'allowed' WHERE id = ?1")?
                    .execute(params![entry.id])?;
                Ok::<_, AuditError>(())
            })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("cannot change"), "{err}");
    }
}
