//! [`PgAuditStore`]: the audit trail in the PostgreSQL database the hosts
//! share, so an operator reads every host's decisions in one place. The
//! same rules as the SQLite trail ([`super::sqlite`]): a decision never
//! changes, a record is kept at least a day, text is cut to
//! [`super::MAX_AUDIT_TEXT_BYTES`].

use std::sync::Arc;

use tokio_postgres::Row;

use super::record::{
    AuditEnd, AuditEntry, AuditError, AuditFilter, AuditRecord, AuditStore, BoxFuture, OWNER,
    Stored, record_of, select_sql,
};
use crate::pg::{Aborts, PgDatabase, PgError};

/// The trail's migrations on PostgreSQL, owner [`OWNER`].
pub const PG_MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE subprocess_audit (
    id TEXT COLLATE "C" PRIMARY KEY,
    at BIGINT NOT NULL,
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
    decision TEXT NOT NULL CHECK (decision IN ('allowed', 'denied', 'invalid', 'limited')),
    reason TEXT,
    confined BOOLEAN NOT NULL,
    ended TEXT CHECK (ended IS NULL OR ended IN ('exited', 'signalled', 'timed-out',
        'cancelled', 'failed')),
    exit_code INTEGER,
    signal INTEGER,
    failure TEXT,
    duration_ms BIGINT,
    stdout_bytes BIGINT,
    stderr_bytes BIGINT,
    finished_at BIGINT,
    CHECK (ended IS NULL OR decision = 'allowed')
);
CREATE INDEX subprocess_audit_by_org ON subprocess_audit (organization_id, module, id);
CREATE INDEX subprocess_audit_by_user ON subprocess_audit (organization_id, user_id, id);
CREATE INDEX subprocess_audit_by_at ON subprocess_audit (at);

CREATE FUNCTION modhost_audit_guard() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.at, NEW.module, NEW.user_id, NEW.organization_id, NEW.request_id,
            NEW.task_id, NEW.program, NEW.path, NEW.args_json, NEW.cwd, NEW.env_json,
            NEW.decision, NEW.reason, NEW.confined) IS DISTINCT FROM
           (OLD.id, OLD.at, OLD.module, OLD.user_id, OLD.organization_id, OLD.request_id,
            OLD.task_id, OLD.program, OLD.path, OLD.args_json, OLD.cwd, OLD.env_json,
            OLD.decision, OLD.reason, OLD.confined) THEN
            RAISE EXCEPTION 'an audit decision cannot change';
        END IF;
        RETURN NEW;
    END IF;
    IF OLD.at > (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT - 86400000 THEN
        RAISE EXCEPTION 'audit records are kept for at least a day';
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER subprocess_audit_guard BEFORE UPDATE OR DELETE ON subprocess_audit
    FOR EACH ROW EXECUTE FUNCTION modhost_audit_guard();
"#,
    // One trail for every capability, as on SQLite (its migration 4).
    r#"
CREATE TABLE audit (
    id TEXT COLLATE "C" PRIMARY KEY,
    at BIGINT NOT NULL,
    capability TEXT NOT NULL CHECK (capability IN ('subprocess', 'http', 'filesystem', 'task',
        'confirmation')),
    module TEXT NOT NULL,
    user_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    request_id TEXT NOT NULL,
    task_id TEXT,
    subject TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('allowed', 'denied', 'invalid', 'limited')),
    reason TEXT,
    detail_json TEXT NOT NULL,
    end_json TEXT,
    CHECK (end_json IS NULL OR decision = 'allowed')
);
CREATE INDEX audit_by_module ON audit (organization_id, module, id);
CREATE INDEX audit_by_user ON audit (organization_id, user_id, id);
CREATE INDEX audit_by_capability ON audit (organization_id, capability, id);
CREATE INDEX audit_by_at ON audit (at);

INSERT INTO audit (id, at, capability, module, user_id, organization_id, request_id, task_id,
    subject, decision, reason, detail_json, end_json)
SELECT id, at, 'subprocess', module, user_id, organization_id, request_id, task_id, program,
    decision, reason,
    json_build_object('path', path,
        'args', CASE WHEN args_json LIKE '%…[cut]' THEN json_build_array(args_json)
            ELSE args_json::json END,
        'cwd', cwd,
        'env_names', CASE WHEN env_json LIKE '%…[cut]' THEN json_build_array(env_json)
            ELSE env_json::json END,
        'confined', confined)::text,
    CASE WHEN ended IS NULL THEN NULL ELSE json_build_object('ended', ended,
        'exit_code', exit_code, 'signal', signal, 'failure', failure,
        'duration_ms', coalesce(duration_ms, 0), 'stdout_bytes', coalesce(stdout_bytes, 0),
        'stderr_bytes', coalesce(stderr_bytes, 0), 'finished_at', coalesce(finished_at, 0))::text
    END
FROM subprocess_audit;

DROP TABLE subprocess_audit;
DROP FUNCTION modhost_audit_guard();

CREATE FUNCTION modhost_audit_guard() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' THEN
        IF (NEW.id, NEW.at, NEW.capability, NEW.module, NEW.user_id, NEW.organization_id,
            NEW.request_id, NEW.task_id, NEW.subject, NEW.decision, NEW.reason,
            NEW.detail_json) IS DISTINCT FROM
           (OLD.id, OLD.at, OLD.capability, OLD.module, OLD.user_id, OLD.organization_id,
            OLD.request_id, OLD.task_id, OLD.subject, OLD.decision, OLD.reason,
            OLD.detail_json) THEN
            RAISE EXCEPTION 'an audit decision cannot change';
        END IF;
        RETURN NEW;
    END IF;
    IF OLD.at > (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT - 86400000 THEN
        RAISE EXCEPTION 'audit records are kept for at least a day';
    END IF;
    RETURN OLD;
END $$;

CREATE TRIGGER audit_guard BEFORE UPDATE OR DELETE ON audit
    FOR EACH ROW EXECUTE FUNCTION modhost_audit_guard();
"#,
    // As SQLite's migration 5: an admin's reads without a sort.
    "CREATE INDEX audit_by_org ON audit (organization_id, id);",
];

/// The trail on a PostgreSQL database shared with other hosts.
pub struct PgAuditStore {
    db: Arc<PgDatabase>,
}

impl std::fmt::Debug for PgAuditStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgAuditStore").finish_non_exhaustive()
    }
}

impl Aborts for AuditError {
    fn aborts(&self) -> bool {
        matches!(self, AuditError::Postgres(_))
    }
}

impl PgAuditStore {
    /// The trail on `db`, migrating its table first.
    pub async fn on(db: Arc<PgDatabase>) -> Result<Self, PgError> {
        db.migrate(OWNER, PG_MIGRATIONS).await?;
        Ok(PgAuditStore { db })
    }
}

/// A record written again (a retry after a commit whose outcome was
/// uncertain) is the one already there: the second write does nothing.
const INSERT: &str = "INSERT INTO audit (id, at, capability, module, user_id, organization_id, \
    request_id, task_id, subject, decision, reason, detail_json) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT (id) DO NOTHING";

const FINISH: &str = "UPDATE audit SET end_json = $2 WHERE id = $1 \
    AND capability = 'subprocess' AND decision = 'allowed' AND end_json IS NULL";

const PRUNE: &str = "WITH picked AS MATERIALIZED (SELECT id FROM audit \
    WHERE at < $1 ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED) \
    DELETE FROM audit USING picked WHERE audit.id = picked.id";

impl AuditStore for PgAuditStore {
    fn record(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), AuditError>> {
        let e = Arc::new(entry);
        Box::pin(self.db.writer.run(Box::new(move |c| {
            let e = e.clone();
            Box::pin(async move {
                let s = Stored::of(&e);
                let statement = c.prepare_cached(INSERT).await?;
                c.execute(
                    &statement,
                    &[
                        &e.id,
                        &e.at,
                        &s.capability,
                        &e.module,
                        &e.user_id,
                        &e.organization_id,
                        &crate::pg::text(&e.request_id),
                        &e.task_id,
                        &crate::pg::text(&s.subject),
                        &s.decision,
                        &s.reason.as_deref().map(crate::pg::text),
                        &crate::pg::text(&s.detail_json),
                    ],
                )
                .await?;
                Ok(())
            })
        })))
    }

    fn record_end(&self, id: &str, end: AuditEnd) -> BoxFuture<'_, Result<bool, AuditError>> {
        let (id, end) = (
            Arc::new(id.to_owned()),
            Arc::new(crate::pg::text(&end.stored()).into_owned()),
        );
        Box::pin(self.db.writer.run(Box::new(move |c| {
            let (id, end) = (id.clone(), end.clone());
            Box::pin(async move {
                let statement = c.prepare_cached(FINISH).await?;
                let changed = c.execute(&statement, &[&*id, &*end]).await?;
                Ok(changed == 1)
            })
        })))
    }

    fn query<'a>(
        &'a self,
        filter: &'a AuditFilter,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<AuditRecord>, AuditError>> {
        Box::pin(async move {
            let (sql, texts, limit) = select_sql(filter, limit, |n| format!("${n}"), "");
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                texts.iter().map(|t| t as _).collect();
            params.push(&limit);
            let client = self.db.reader().await?;
            let statement = client.prepare_cached(&sql).await?;
            client
                .query(&statement, &params)
                .await?
                .iter()
                .map(record)
                .collect()
        })
    }

    fn prune(&self, before: i64, limit: u32) -> BoxFuture<'_, Result<u64, AuditError>> {
        let limit = i64::from(limit);
        Box::pin(self.db.writer.run(Box::new(move |c| {
            Box::pin(async move {
                let statement = c.prepare_cached(PRUNE).await?;
                Ok(c.execute(&statement, &[&before, &limit]).await?)
            })
        })))
    }
}

fn record(r: &Row) -> Result<AuditRecord, AuditError> {
    record_of(r).map_err(|e| match e {
        crate::columns::PgColumnError::Sql(e) => e.into(),
        crate::columns::PgColumnError::Bad(bad) => AuditError::Corrupt(bad.to_string()),
    })
}
