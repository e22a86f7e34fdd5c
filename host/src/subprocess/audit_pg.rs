//! [`PgAuditStore`]: the subprocess audit trail in the PostgreSQL database
//! the hosts share, so an operator reads every host's decisions in one
//! place. The same rules as the SQLite trail ([`super::audit`]): a
//! decision never changes, a record is kept at least a day, text is cut to
//! [`super::audit::MAX_AUDIT_TEXT_BYTES`].

use std::sync::Arc;

use tokio_postgres::Row;

use super::audit::{
    AuditDecision, AuditEnd, AuditError, AuditFilter, AuditRecord, AuditStore, BoxFuture, OWNER,
    capped, record_of, select_sql, stored_lists,
};
use crate::pg::{Aborts, PgDatabase, PgError};

/// The trail's migrations on PostgreSQL, owner [`OWNER`].
pub const PG_MIGRATIONS: &[&str] = &[r#"
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
"#];

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

const INSERT: &str = "INSERT INTO subprocess_audit (id, at, module, user_id, organization_id, \
    request_id, task_id, program, path, args_json, cwd, env_json, decision, reason, confined) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)";

const FINISH: &str = "UPDATE subprocess_audit SET ended = $2, exit_code = $3, signal = $4, \
    failure = $5, duration_ms = $6, stdout_bytes = $7, stderr_bytes = $8, finished_at = $9 \
    WHERE id = $1 AND decision = 'allowed' AND ended IS NULL";

const PRUNE: &str = "WITH picked AS MATERIALIZED (SELECT id FROM subprocess_audit \
    WHERE at < $1 ORDER BY at LIMIT $2 FOR UPDATE SKIP LOCKED) \
    DELETE FROM subprocess_audit USING picked WHERE subprocess_audit.id = picked.id";

impl AuditStore for PgAuditStore {
    fn record(&self, decision: AuditDecision) -> BoxFuture<'_, Result<(), AuditError>> {
        let d = Arc::new(decision);
        Box::pin(self.db.writer.run(Box::new(move |c| {
            let d = d.clone();
            Box::pin(async move {
                let (args_json, env_json) = stored_lists(&d);
                let statement = c.prepare_cached(INSERT).await?;
                c.execute(
                    &statement,
                    &[
                        &d.id,
                        &d.at,
                        &d.module,
                        &d.user_id,
                        &d.organization_id,
                        &crate::pg::text(&d.request_id),
                        &d.task_id,
                        &crate::pg::text(&capped(d.program.clone())),
                        &d.path.as_deref().map(crate::pg::text),
                        &args_json,
                        &d.cwd
                            .clone()
                            .map(|c| crate::pg::text(&capped(c)).into_owned()),
                        &env_json,
                        &d.decision.as_str(),
                        &d.reason
                            .clone()
                            .map(|r| crate::pg::text(&capped(r)).into_owned()),
                        &d.confined,
                    ],
                )
                .await?;
                Ok(())
            })
        })))
    }

    fn record_end(&self, id: &str, end: AuditEnd) -> BoxFuture<'_, Result<bool, AuditError>> {
        let (id, e) = (Arc::new(id.to_owned()), Arc::new(end));
        Box::pin(self.db.writer.run(Box::new(move |c| {
            let (id, e) = (id.clone(), e.clone());
            Box::pin(async move {
                let statement = c.prepare_cached(FINISH).await?;
                let changed = c
                    .execute(
                        &statement,
                        &[
                            &*id,
                            &e.ended.as_str(),
                            &e.exit_code,
                            &e.signal,
                            &e.failure
                                .clone()
                                .map(|f| crate::pg::text(&capped(f)).into_owned()),
                            &e.duration_ms,
                            &e.stdout_bytes,
                            &e.stderr_bytes,
                            &e.finished_at,
                        ],
                    )
                    .await?;
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
