//! [`PgTaskStore`]: the task store on a PostgreSQL database, for several
//! hosts sharing one queue.
//!
//! Writes go through the host's group-commit writer ([`crate::pg::writer`]),
//! each a compare-and-set statement or a few; submissions and ends of runs
//! queued together run as one set-based write ([`grouped`]); claims take
//! pending rows with `FOR UPDATE SKIP LOCKED`, so racing hosts never wait
//! for each other's rows nor take the same one; lease times are the
//! database's clock (`modhost_now()`). Reads run on the pool, one statement
//! per scope shape, so a task outside the scope costs what a missing one
//! costs.

/// The end of a statement whose data-modifying CTE `done` ended tasks
/// (`RETURNING id, module, organization_id, user_id`): their owners'
/// counters go down, and it answers the ids (NULL for none).
macro_rules! uncounting_done {
    () => {
        ", ended AS (SELECT array_agg(id) AS ids, array_agg(module) AS m, \
         array_agg(organization_id) AS o, array_agg(user_id) AS u FROM done) \
         SELECT ended.ids FROM ended, LATERAL modhost_count_many(ended.m, ended.o, ended.u, -1)"
    };
}

mod grouped;
mod schema;
mod statement;

use statement::{exec, fence, select};

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::ClientWrapper;
use futures::future::BoxFuture as Boxed;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

pub use schema::MIGRATIONS;

use super::{
    Announced, Announcement, Answered, Asked, BoxFuture, Claimed, Cursor, HOST_RESTARTED, HostId,
    LEASE_EXPIRED, Lease, LeaseState, ListClauses, ListValue, MAX_LOOKUP_LIMIT, MAX_PAGE_LIMIT,
    NewTask, OWNER, OrgScope, Outcome, Owner, ProgressResult, ProgressUpdate, RECOVERY_PAGE,
    Recovery, Scope, StoredAnswer, Submitted, TaskFilter, TaskPage, TaskRow, TaskStore,
    TaskStoreError, Want, prefix_successor, validate_task_id,
};
use crate::db::now_ms;
use crate::pg::{Aborts, PgDatabase, PgError, PgWriteError};

/// The task store on a PostgreSQL database shared with other hosts (and
/// with this host's other stores on it).
pub struct PgTaskStore {
    db: Arc<PgDatabase>,
    /// What the hosts announce, from `LISTEN modhost_pending` and
    /// `LISTEN modhost_tasks`.
    announced: tokio::sync::broadcast::Sender<Announced>,
}

/// Announcements a slow host may fall behind by before it misses some (and
/// then looks at every module).
const ANNOUNCED: usize = 1024;

/// The longest payload PostgreSQL's NOTIFY takes is 8,000 bytes.
const MAX_NOTIFY_BYTES: usize = 7900;

/// How long opening a store waits for its listener.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the listener waits before connecting again.
const RELISTEN_AFTER: Duration = Duration::from_secs(1);

impl std::fmt::Debug for PgTaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgTaskStore")
            .field("url", &self.db.url())
            .finish_non_exhaustive()
    }
}

impl From<PgWriteError> for TaskStoreError {
    fn from(e: PgWriteError) -> Self {
        match e {
            PgWriteError::Sql(e) if e.code() == Some(&SqlState::DISK_FULL) => {
                TaskStoreError::Full(e)
            }
            PgWriteError::Sql(e) => TaskStoreError::Backend(e),
            PgWriteError::Connection(m) => TaskStoreError::Backend(Arc::new(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                m,
            ))),
            PgWriteError::Uncertain(m) => TaskStoreError::Uncertain(m),
            PgWriteError::Closed => TaskStoreError::Closed,
        }
    }
}

impl From<tokio_postgres::Error> for TaskStoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        PgWriteError::from(e).into()
    }
}

impl Aborts for TaskStoreError {
    fn aborts(&self) -> bool {
        matches!(self, TaskStoreError::Backend(_))
    }
}

fn open_error(url: &str, e: PgError) -> TaskStoreError {
    TaskStoreError::Open {
        path: url.to_owned(),
        source: Arc::new(e),
    }
}

impl PgTaskStore {
    /// The store on `db`, migrating its tables first.
    pub async fn on(db: Arc<PgDatabase>) -> Result<Self, TaskStoreError> {
        db.migrate(OWNER, MIGRATIONS)
            .await
            .map_err(|e| open_error(db.url(), e))?;
        let (announced, _) = tokio::sync::broadcast::channel(ANNOUNCED);
        let (listening, listened) = tokio::sync::oneshot::channel();
        tokio::spawn(listen(Arc::downgrade(&db), announced.clone(), listening));
        // A store hears announcements from the moment it is open; a
        // listener that cannot connect yet keeps trying in the background
        // (renewals and polls cover the meantime).
        if tokio::time::timeout(LISTEN_TIMEOUT, listened)
            .await
            .is_err()
        {
            tracing::warn!("not listening for other hosts' announcements yet");
        }
        Ok(PgTaskStore { db, announced })
    }

    /// Connects to the database at `url` and migrates the task tables.
    pub async fn connect(url: &str) -> Result<Self, TaskStoreError> {
        let db = PgDatabase::connect(url)
            .await
            .map_err(|e| open_error(&crate::pg::redacted(url), e))?;
        Self::on(Arc::new(db)).await
    }

    /// The database the store is on.
    pub fn database(&self) -> &Arc<PgDatabase> {
        &self.db
    }

    fn write<T: Send + 'static>(
        &self,
        work: crate::pg::writer::Work<T, TaskStoreError>,
    ) -> BoxFuture<'_, Result<T, TaskStoreError>> {
        Box::pin(self.db.writer.run(work))
    }

    async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, TaskStoreError> {
        let client = self.db.reader().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }
}

/// Every column of `tasks`, in the order [`task_row`] reads them, each
/// after `$t` (a table name and a dot, where a join makes names ambiguous).
macro_rules! columns_of {
    ($t:literal) => {
        concat!(
            $t,
            "id, ",
            $t,
            "module, ",
            $t,
            "task_name, ",
            $t,
            "task_key, ",
            $t,
            "title, ",
            $t,
            "status, ",
            $t,
            "progress, ",
            $t,
            "label, ",
            $t,
            "checkpoint_json, ",
            $t,
            "args_json, ",
            $t,
            "result_json, ",
            $t,
            "failure_kind, ",
            $t,
            "failure_message, ",
            $t,
            "resumable, ",
            $t,
            "user_id, ",
            $t,
            "organization_id, ",
            $t,
            "role, ",
            $t,
            "request_id, ",
            $t,
            "session_id, ",
            $t,
            "created_at, ",
            $t,
            "updated_at, ",
            $t,
            "started_at, ",
            $t,
            "finished_at, ",
            $t,
            "attempts, ",
            $t,
            "confirm_surface_json, ",
            $t,
            "confirm_asked_at, ",
            $t,
            "confirm_expires_at, ",
            $t,
            "confirm_answer_json, ",
            $t,
            "confirm_answered_by, ",
            $t,
            "confirm_answered_at, ",
            $t,
            "confirm_consumed, ",
            $t,
            "lease_owner"
        )
    };
}

/// [`columns_of!`] without a table name.
macro_rules! columns {
    () => {
        columns_of!("")
    };
}

/// [`columns!`] for lookups and lists: the heavy ones not loaded.
macro_rules! summary_columns {
    () => {
        "id, module, task_name, task_key, title, status, progress, label, NULL::TEXT, \
         ''::TEXT, NULL::TEXT, failure_kind, left(failure_message, 1024), resumable, user_id, \
         organization_id, role, request_id, session_id, created_at, updated_at, started_at, \
         finished_at, attempts, NULL::TEXT, NULL::BIGINT, NULL::BIGINT, \
         NULL::TEXT, NULL::TEXT, NULL::BIGINT, FALSE, lease_owner"
    };
}

/// The column after [`columns!`] in a claim's `RETURNING`.
const LEASE_VERSION: usize = 32;

mod sql {
    /// The picked rows are a materialized CTE: a subquery in `IN` may be
    /// run more than once, and with `SKIP LOCKED` each run picks others.
    pub const CLAIM: &str = concat!(
        "WITH picked AS MATERIALIZED (SELECT id FROM tasks \
         WHERE module = $1 AND status = 'pending' ORDER BY id LIMIT $2 \
         FOR UPDATE SKIP LOCKED) \
         UPDATE tasks SET status = 'running', attempts = attempts + 1, \
         started_at = now.ms, updated_at = now.ms, lease_owner = $3, \
         lease_expires_at = now.ms + $4, lease_version = lease_version + 1 \
         FROM picked, (SELECT modhost_now() AS ms) AS now \
         WHERE tasks.id = picked.id AND tasks.status = 'pending' RETURNING ",
        columns_of!("tasks."),
        ", tasks.lease_version"
    );

    pub const RENEW: &str = "UPDATE tasks t SET lease_expires_at = modhost_now() + $4 \
        FROM unnest($1::TEXT[], $2::BIGINT[]) AS l(id, version) \
        WHERE t.id = l.id AND t.lease_owner = $3 AND t.lease_version = l.version \
        AND t.finished_at IS NULL \
        RETURNING t.id, (t.status = 'waiting-confirmation' \
        AND t.confirm_answer_json IS NOT NULL AND NOT t.confirm_consumed)";

    /// The claimed tasks to recover, locked: lease run out, or held by the
    /// restarted host `$1`; `resumable = $2`; a page of them (`$limit`).
    macro_rules! recoverable {
        ($limit:literal) => {
            concat!(
                "WITH picked AS MATERIALIZED (SELECT id FROM tasks \
                 WHERE (lease_expires_at <= modhost_now() OR lease_owner = $1) \
                 AND resumable = $2 LIMIT ",
                $limit,
                " FOR UPDATE SKIP LOCKED)"
            )
        };
    }

    /// Answers the ids it interrupted, in one array (NULL for none).
    pub const RECOVER_INTERRUPT: &str = concat!(
        recoverable!("$5"),
        ", done AS (UPDATE tasks SET status = 'interrupted', failure_kind = 'interrupted', \
         failure_message = CASE WHEN lease_owner = $1 THEN $3 ELSE $4 END, \
         finished_at = now.ms, updated_at = now.ms, lease_owner = NULL, \
         lease_expires_at = NULL, lease_version = lease_version + 1 \
         FROM picked, (SELECT modhost_now() AS ms) AS now \
         WHERE tasks.id = picked.id AND finished_at IS NULL AND lease_owner IS NOT NULL \
         RETURNING tasks.id, tasks.module, tasks.organization_id, tasks.user_id)",
        uncounting_done!()
    );

    /// Answers the ids it made pending again, each announced at commit.
    pub const RECOVER_RESUME: &str = concat!(
        recoverable!("$3"),
        ", resumed AS (UPDATE tasks SET status = 'pending', updated_at = modhost_now(), \
         lease_owner = NULL, lease_expires_at = NULL, lease_version = lease_version + 1 \
         FROM picked \
         WHERE tasks.id = picked.id AND finished_at IS NULL AND lease_owner IS NOT NULL \
         RETURNING tasks.id, tasks.module) \
         SELECT r.id, pg_notify('modhost_pending', r.module) FROM resumed AS r"
    );

    /// Parked tasks whose question expired unanswered go back to pending,
    /// the timeout kept for their next run, each announced at commit; a
    /// page of them (`$1`).
    pub const RECOVER_TIMED_OUT: &str = "WITH picked AS MATERIALIZED (SELECT id FROM tasks \
        WHERE status = 'waiting-confirmation' AND lease_owner IS NULL \
        AND confirm_expires_at <= modhost_now() AND confirm_answer_json IS NULL \
        LIMIT $1 FOR UPDATE SKIP LOCKED), \
        woken AS (UPDATE tasks SET status = 'pending', confirm_timed_out = TRUE, \
        updated_at = modhost_now() FROM picked \
        WHERE tasks.id = picked.id AND tasks.status = 'waiting-confirmation' \
        AND tasks.lease_owner IS NULL AND tasks.confirm_answer_json IS NULL \
        RETURNING tasks.id, tasks.module) \
        SELECT w.id, pg_notify('modhost_pending', w.module) FROM woken AS w";

    /// A waiting, unanswered task under lease `$2` gives its lease up.
    pub const PARK: &str = "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL, \
        lease_version = lease_version + 1, updated_at = modhost_now() \
        WHERE id = $1 AND lease_version = $2 AND status = 'waiting-confirmation' \
        AND confirm_answer_json IS NULL";

    pub const TIMED_OUT: &str = "SELECT 1 FROM tasks WHERE id = $1 AND lease_version = $2 \
        AND finished_at IS NULL AND confirm_timed_out";

    pub const RELEASE: &str = "UPDATE tasks SET status = 'pending', \
        attempts = greatest(attempts - 1, 0), started_at = NULL, updated_at = modhost_now(), \
        lease_owner = NULL, lease_expires_at = NULL, lease_version = lease_version + 1 \
        WHERE id = $1 AND status = 'running' AND lease_version = $2";

    pub const PROGRESS: &str = concat!(
        "UPDATE tasks SET progress = $4, label = COALESCE($5, label), \
         checkpoint_json = COALESCE($6, checkpoint_json), updated_at = modhost_now() \
         WHERE id = $1 AND module = $2 AND organization_id = $3 \
         AND ($7::BIGINT IS NULL OR lease_version = $7) AND finished_at IS NULL RETURNING ",
        columns!()
    );

    pub const OWNED: &str = "SELECT EXISTS (SELECT 1 FROM tasks \
        WHERE id = $1 AND module = $2 AND organization_id = $3)";

    pub const ANSWERED: &str = "SELECT confirm_answer_json, confirm_answered_by, \
        confirm_answered_at FROM tasks WHERE id = $1 AND lease_version = $2 \
        AND finished_at IS NULL AND confirm_answer_json IS NOT NULL AND NOT confirm_consumed \
        FOR UPDATE";

    pub const ASK: &str = "UPDATE tasks SET status = 'waiting-confirmation', updated_at = $3, \
        confirm_surface_json = $4, confirm_asked_at = $3, confirm_expires_at = $5, \
        confirm_answer_json = NULL, confirm_answered_by = NULL, confirm_answered_at = NULL, \
        confirm_consumed = FALSE, confirm_timed_out = FALSE \
        WHERE id = $1 AND lease_version = $2 AND status = 'running'";

    /// Answers whether the task waited parked (it is pending now), and
    /// announces it at commit if so.
    /// Whether it waited parked is read off the row as it was, locked
    /// first; a question that a sweep timed out takes no answer, whatever
    /// the answering host's clock says.
    pub const ANSWER: &str = "WITH old AS (SELECT id, \
        status = 'waiting-confirmation' AND lease_owner IS NULL AS parked \
        FROM tasks WHERE id = $1 FOR UPDATE), \
        answered AS (UPDATE tasks AS t SET confirm_answer_json = $2, \
        confirm_answered_by = $3, confirm_answered_at = $4, updated_at = $5, \
        status = CASE WHEN o.parked THEN 'pending' ELSE t.status END \
        FROM old AS o WHERE t.id = o.id AND t.finished_at IS NULL \
        AND t.confirm_surface_json IS NOT NULL AND t.confirm_answer_json IS NULL \
        AND NOT t.confirm_timed_out AND (t.confirm_expires_at IS NULL \
        OR ($4 < t.confirm_expires_at AND $5 < t.confirm_expires_at)) \
        AND ($6::BIGINT IS NULL OR t.confirm_asked_at = $6) \
        RETURNING t.module, o.parked AS resumed) \
        SELECT a.resumed, (SELECT count(*) FROM (SELECT pg_notify('modhost_pending', a.module) \
        WHERE a.resumed) AS n) FROM answered AS a";

    pub const ASKED_AT: &str = "SELECT confirm_asked_at FROM tasks WHERE id = $1";

    pub const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM tasks WHERE id = $1)";

    pub const CONSUME: &str = "UPDATE tasks \
        SET confirm_consumed = confirm_answer_json IS NOT NULL, confirm_timed_out = FALSE, \
        updated_at = $3 WHERE id = $1 AND lease_version = $2 \
        AND (confirm_answer_json IS NOT NULL AND NOT confirm_consumed OR confirm_timed_out)";

    pub const CLOSE_EXPIRE: &str = "UPDATE tasks \
        SET confirm_expires_at = least(coalesce(confirm_expires_at, $2), $2) \
        WHERE id = $1 AND confirm_surface_json IS NOT NULL AND confirm_answer_json IS NULL";

    pub const CLOSE_TAKE: &str = "UPDATE tasks SET confirm_consumed = TRUE \
        WHERE id = $1 AND confirm_answer_json IS NOT NULL AND NOT confirm_consumed \
        RETURNING confirm_answer_json, confirm_answered_by, confirm_answered_at";

    pub const CLOSE_RESUME: &str = "UPDATE tasks SET status = 'running', updated_at = $2 \
        WHERE id = $1 AND status = 'waiting-confirmation'";

    pub const GET: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM tasks WHERE id = $1 AND module = $2 AND organization_id = $3 \
         AND ($4::TEXT IS NULL OR user_id = $4)"
    );

    pub const GET_UNSCOPED: &str = concat!("SELECT ", columns!(), " FROM tasks WHERE id = $1");

    pub const BY_KEY: &str = concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tasks WHERE module = $1 AND organization_id = $2 AND task_key = $3 \
         AND ($4::TEXT IS NULL OR user_id = $4) ORDER BY id DESC LIMIT $5"
    );

    /// `$3 <= key < $5`, or `$3 <= key` when `$5` is NULL, in the whole
    /// organization: the newest ids are picked from the key index alone,
    /// and only their rows are read.
    pub const BY_KEY_RANGE: &str = concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tasks WHERE id IN (SELECT id FROM tasks \
         WHERE module = $1 AND organization_id = $2 AND task_key >= $3 \
         AND ($5::TEXT IS NULL OR task_key < $5) AND task_key IS NOT NULL \
         ORDER BY id DESC LIMIT $4) ORDER BY id DESC"
    );

    /// The same range, of the user `$4` only.
    pub const BY_KEY_RANGE_OF_USER: &str = concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tasks WHERE module = $1 AND organization_id = $2 AND task_key >= $3 \
         AND ($6::TEXT IS NULL OR task_key < $6) AND user_id = $4 \
         ORDER BY id DESC LIMIT $5"
    );

    pub const BY_USER: &str = concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tasks WHERE module = $1 AND organization_id = $2 AND user_id = $3 \
         ORDER BY id DESC LIMIT $4"
    );

    pub const BY_ORG: &str = concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tasks WHERE module = $1 AND organization_id = $2 AND $3::TEXT IS NULL \
         ORDER BY id DESC LIMIT $4"
    );

    pub const PRUNE: &str = "WITH picked AS MATERIALIZED (SELECT id FROM tasks \
        WHERE finished_at IS NOT NULL AND finished_at < $1 ORDER BY finished_at LIMIT $2 \
        FOR UPDATE SKIP LOCKED) DELETE FROM tasks USING picked WHERE tasks.id = picked.id";
}

/// A task of a PostgreSQL row.
fn task_row(r: &Row) -> Result<TaskRow, TaskStoreError> {
    Ok(super::task_row(r)?)
}

/// The answer in columns `first..first + 3` (json, by, at), if any.
fn stored_answer(r: &Row, first: usize) -> Result<Option<StoredAnswer>, TaskStoreError> {
    Ok(super::stored_answer(r, first)?)
}

impl From<crate::columns::PgColumnError> for TaskStoreError {
    fn from(e: crate::columns::PgColumnError) -> Self {
        match e {
            crate::columns::PgColumnError::Sql(e) => e.into(),
            crate::columns::PgColumnError::Bad(bad) => {
                TaskStoreError::Internal(format!("a stored task cannot be read: {bad}"))
            }
        }
    }
}

fn rows(found: Vec<Row>) -> Result<Vec<TaskRow>, TaskStoreError> {
    found.iter().map(task_row).collect()
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn limit(n: u32) -> i64 {
    i64::from(n.min(MAX_LOOKUP_LIMIT))
}

/// A boxed future of one write on the writer's connection.
fn work<T, F>(f: F) -> crate::pg::writer::Work<T, TaskStoreError>
where
    F: for<'c> Fn(&'c ClientWrapper) -> Boxed<'c, Result<T, TaskStoreError>>
        + Send
        + Sync
        + 'static,
{
    Box::new(f)
}

impl TaskStore for PgTaskStore {
    fn submit(&self, task: NewTask) -> BoxFuture<'_, Result<Submitted, TaskStoreError>> {
        if let Err(e) = validate_task_id(&task.id) {
            return Box::pin(async move { Err(e) });
        }
        Box::pin(self.db.writer.run_in::<grouped::Submits>(task))
    }

    fn claim<'a>(
        &'a self,
        host: &'a HostId,
        wants: &'a [Want],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, TaskStoreError>> {
        let host = host.as_str().to_owned();
        let wants: Arc<Vec<Want>> = Arc::new(wants.iter().filter(|w| w.max > 0).cloned().collect());
        let lease = millis(lease);
        self.write(work(move |c| {
            let (host, wants) = (host.clone(), wants.clone());
            Box::pin(async move {
                let mut claimed = Vec::new();
                for want in wants.iter() {
                    let max = i64::from(want.max);
                    for r in select(c, sql::CLAIM, &[&want.module, &max, &host, &lease]).await? {
                        let row = task_row(&r)?;
                        let lease = Lease {
                            task_id: row.id.clone(),
                            version: r.try_get(LEASE_VERSION)?,
                        };
                        claimed.push(Claimed { row, lease });
                    }
                }
                claimed.sort_by(|a, b| a.row.id.cmp(&b.row.id));
                Ok(claimed)
            })
        }))
    }

    fn renew<'a>(
        &'a self,
        host: &'a HostId,
        leases: &'a [Lease],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<LeaseState>, TaskStoreError>> {
        let host = host.as_str().to_owned();
        let leases = Arc::new(leases.to_vec());
        let lease = millis(lease);
        self.write(work(move |c| {
            let (host, leases) = (host.clone(), leases.clone());
            Box::pin(async move {
                let ids: Vec<&str> = leases.iter().map(|l| l.task_id.as_str()).collect();
                let versions: Vec<i64> = leases.iter().map(|l| l.version).collect();
                let held = select(c, sql::RENEW, &[&ids, &versions, &host, &lease]).await?;
                let mut answered = std::collections::HashMap::new();
                for r in &held {
                    answered.insert(r.try_get::<_, String>(0)?, r.try_get::<_, bool>(1)?);
                }
                Ok(leases
                    .iter()
                    .map(|l| match answered.get(&l.task_id) {
                        Some(&answered) => LeaseState::Held { answered },
                        None => LeaseState::Lost,
                    })
                    .collect())
            })
        }))
    }

    fn recover_expired<'a>(
        &'a self,
        restarted: Option<&'a HostId>,
    ) -> BoxFuture<'a, Result<Recovery, TaskStoreError>> {
        let restarted = restarted.map(|h| h.as_str().to_owned());
        self.write(work(move |c| {
            let restarted = restarted.clone();
            Box::pin(async move {
                let page = i64::from(RECOVERY_PAGE);
                let mut interrupted = match select(
                    c,
                    sql::RECOVER_INTERRUPT,
                    &[&restarted, &false, &HOST_RESTARTED, &LEASE_EXPIRED, &page],
                )
                .await?
                .first()
                {
                    Some(r) => r.try_get::<_, Option<Vec<String>>>(0)?.unwrap_or_default(),
                    None => Vec::new(),
                };
                interrupted.sort();
                let mut resumed = select(c, sql::RECOVER_RESUME, &[&restarted, &true, &page])
                    .await?
                    .iter()
                    .map(|r| r.try_get::<_, String>(0))
                    .collect::<Result<Vec<_>, _>>()?;
                resumed.sort();
                let mut timed_out = select(c, sql::RECOVER_TIMED_OUT, &[&page])
                    .await?
                    .iter()
                    .map(|r| r.try_get::<_, String>(0))
                    .collect::<Result<Vec<_>, _>>()?;
                timed_out.sort();
                Ok(Recovery {
                    resumed,
                    interrupted,
                    timed_out,
                })
            })
        }))
    }

    fn finish<'a>(
        &'a self,
        id: &'a str,
        lease: Option<&'a Lease>,
        outcome: Outcome,
    ) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        let (status, result, kind, message) = super::sqlite::outcome_columns(outcome);
        let finish = grouped::Finish {
            id: id.to_owned(),
            lease: lease.cloned(),
            status,
            result: result.map(|r| crate::pg::text(&r).into_owned()),
            kind,
            message: message.map(|m| crate::pg::text(&m).into_owned()),
        };
        Box::pin(self.db.writer.run_in::<grouped::Finishes>(Arc::new(finish)))
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        let lease = lease.clone();
        self.write(work(move |c| {
            let lease = lease.clone();
            Box::pin(async move {
                let changed = exec(c, sql::RELEASE, &[&lease.task_id, &lease.version]).await?;
                if changed == 0 {
                    fence(c, &lease).await?;
                }
                Ok(changed == 1)
            })
        }))
    }

    fn update_progress<'a>(
        &'a self,
        id: &'a str,
        owner: &'a Owner,
        lease: Option<&'a Lease>,
        update: ProgressUpdate,
    ) -> BoxFuture<'a, Result<ProgressResult, TaskStoreError>> {
        if let Err(e) = update.check() {
            return Box::pin(async move { Err(e) });
        }
        let id = id.to_owned();
        let owner = owner.clone();
        let lease = lease.cloned();
        let update = Arc::new(update);
        self.write(work(move |c| {
            let (id, owner, lease, update) =
                (id.clone(), owner.clone(), lease.clone(), update.clone());
            Box::pin(async move {
                let version = lease.as_ref().map(|l| l.version);
                let written = select(
                    c,
                    sql::PROGRESS,
                    &[
                        &id,
                        &owner.module,
                        &owner.organization_id,
                        &update.progress,
                        &update.label,
                        &update.checkpoint_json,
                        &version,
                    ],
                )
                .await?;
                if let Some(row) = written.first() {
                    return Ok(ProgressResult::Updated(Box::new(task_row(row)?)));
                }
                let owned: bool =
                    select(c, sql::OWNED, &[&id, &owner.module, &owner.organization_id])
                        .await?
                        .first()
                        .map(|r| r.try_get(0))
                        .transpose()?
                        .unwrap_or(false);
                if !owned {
                    return Ok(ProgressResult::NotFound);
                }
                if let Some(lease) = &lease {
                    fence(c, lease).await?;
                }
                Ok(ProgressResult::NotActive)
            })
        }))
    }

    fn ask_confirmation<'a>(
        &'a self,
        lease: &'a Lease,
        surface_json: &'a str,
        asked_at: i64,
        expires_at: Option<i64>,
    ) -> BoxFuture<'a, Result<Asked, TaskStoreError>> {
        let lease = lease.clone();
        let surface_json = Arc::new(surface_json.to_owned());
        self.write(work(move |c| {
            let (lease, surface_json) = (lease.clone(), surface_json.clone());
            Box::pin(async move {
                let answered = select(c, sql::ANSWERED, &[&lease.task_id, &lease.version]).await?;
                if let Some(r) = answered.first()
                    && let Some(answer) = stored_answer(r, 0)?
                {
                    return Ok(Asked::AlreadyAnswered(answer));
                }
                let timed_out =
                    select(c, sql::TIMED_OUT, &[&lease.task_id, &lease.version]).await?;
                if !timed_out.is_empty() {
                    return Ok(Asked::AlreadyTimedOut);
                }
                let changed = exec(
                    c,
                    sql::ASK,
                    &[
                        &lease.task_id,
                        &lease.version,
                        &asked_at,
                        &*surface_json,
                        &expires_at,
                    ],
                )
                .await?;
                if changed == 1 {
                    return Ok(Asked::Waiting);
                }
                fence(c, &lease).await?;
                Ok(Asked::NotActive)
            })
        }))
    }

    fn park<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        let lease = lease.clone();
        self.write(work(move |c| {
            let lease = lease.clone();
            Box::pin(async move {
                let changed = exec(c, sql::PARK, &[&lease.task_id, &lease.version]).await?;
                if changed == 0 {
                    fence(c, &lease).await?;
                }
                Ok(changed == 1)
            })
        }))
    }

    fn answer_confirmation<'a>(
        &'a self,
        id: &'a str,
        answer: StoredAnswer,
        asked_at: Option<i64>,
    ) -> BoxFuture<'a, Result<Answered, TaskStoreError>> {
        let id = id.to_owned();
        let answer = Arc::new(answer);
        self.write(work(move |c| {
            let (id, answer) = (id.clone(), answer.clone());
            Box::pin(async move {
                // When the write runs, not when it was queued: an answer
                // that waited behind a timeout's close is refused.
                let now = now_ms();
                let answered = select(
                    c,
                    sql::ANSWER,
                    &[
                        &id,
                        &answer.answer_json,
                        &answer.answered_by,
                        &answer.answered_at,
                        &now,
                        &asked_at,
                    ],
                )
                .await?;
                if let Some(r) = answered.first() {
                    return Ok(if r.try_get::<_, bool>(0)? {
                        Answered::Resumed
                    } else {
                        Answered::Recorded
                    });
                }
                if let Some(asked) = asked_at {
                    let current: Option<i64> = select(c, sql::ASKED_AT, &[&id])
                        .await?
                        .first()
                        .map(|r| r.try_get(0))
                        .transpose()?
                        .flatten();
                    if current.is_some_and(|c| c != asked) {
                        return Ok(Answered::OtherQuestion);
                    }
                }
                let exists: bool = select(c, sql::EXISTS, &[&id])
                    .await?
                    .first()
                    .map(|r| r.try_get(0))
                    .transpose()?
                    .unwrap_or(false);
                Ok(if exists {
                    Answered::NotWaiting
                } else {
                    Answered::NotFound
                })
            })
        }))
    }

    fn consume_answer<'a>(
        &'a self,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        let lease = lease.clone();
        self.write(work(move |c| {
            let lease = lease.clone();
            Box::pin(async move {
                let now = now_ms();
                let changed =
                    exec(c, sql::CONSUME, &[&lease.task_id, &lease.version, &now]).await?;
                if changed == 0 {
                    fence(c, &lease).await?;
                }
                Ok(changed == 1)
            })
        }))
    }

    fn close_confirmation<'a>(
        &'a self,
        lease: &'a Lease,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<StoredAnswer>, TaskStoreError>> {
        let lease = lease.clone();
        self.write(work(move |c| {
            let lease = lease.clone();
            Box::pin(async move {
                fence(c, &lease).await?;
                let id = &lease.task_id;
                exec(c, sql::CLOSE_EXPIRE, &[id, &now]).await?;
                let taken = select(c, sql::CLOSE_TAKE, &[id]).await?;
                exec(c, sql::CLOSE_RESUME, &[id, &now]).await?;
                match taken.first() {
                    Some(r) => stored_answer(r, 0),
                    None => Ok(None),
                }
            })
        }))
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Option<TaskRow>, TaskStoreError>> {
        Box::pin(async move {
            let found = self
                .query(
                    sql::GET,
                    &[&id, &scope.module, &scope.organization_id, &scope.user_id],
                )
                .await?;
            found.first().map(task_row).transpose()
        })
    }

    fn get_unscoped<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskRow>, TaskStoreError>> {
        Box::pin(async move {
            let found = self.query(sql::GET_UNSCOPED, &[&id]).await?;
            found.first().map(task_row).transpose()
        })
    }

    fn by_key<'a>(
        &'a self,
        scope: &'a Scope,
        key: &'a str,
        n: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>> {
        Box::pin(async move {
            rows(
                self.query(
                    sql::BY_KEY,
                    &[
                        &scope.module,
                        &scope.organization_id,
                        &key,
                        &scope.user_id,
                        &limit(n),
                    ],
                )
                .await?,
            )
        })
    }

    fn by_key_prefix<'a>(
        &'a self,
        scope: &'a Scope,
        prefix: &'a str,
        n: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>> {
        // A byte-order range (keys are `COLLATE "C"`), never LIKE: every
        // character of the prefix is literal.
        let upper = prefix_successor(prefix);
        Box::pin(async move {
            let (module, org, n) = (&scope.module, &scope.organization_id, limit(n));
            let found = match &scope.user_id {
                None => {
                    self.query(sql::BY_KEY_RANGE, &[module, org, &prefix, &n, &upper])
                        .await?
                }
                Some(user) => {
                    let params: [&(dyn ToSql + Sync); 6] = [module, org, &prefix, user, &n, &upper];
                    self.query(sql::BY_KEY_RANGE_OF_USER, &params).await?
                }
            };
            rows(found)
        })
    }

    fn by_user<'a>(
        &'a self,
        scope: &'a Scope,
        n: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>> {
        let sql = if scope.user_id.is_some() {
            sql::BY_USER
        } else {
            sql::BY_ORG
        };
        Box::pin(async move {
            rows(
                self.query(
                    sql,
                    &[
                        &scope.module,
                        &scope.organization_id,
                        &scope.user_id,
                        &limit(n),
                    ],
                )
                .await?,
            )
        })
    }

    fn list<'a>(
        &'a self,
        scope: &'a Scope,
        filter: &'a TaskFilter,
        cursor: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<TaskPage, TaskStoreError>> {
        Box::pin(async move {
            self.page(&OrgScope::from(scope), filter, cursor, limit)
                .await
        })
    }

    fn list_org<'a>(
        &'a self,
        scope: &'a OrgScope,
        filter: &'a TaskFilter,
        cursor: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<TaskPage, TaskStoreError>> {
        Box::pin(self.page(scope, filter, cursor, limit))
    }

    fn prune(
        &self,
        finished_before: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, TaskStoreError>> {
        let limit = i64::from(limit);
        self.write(work(move |c| {
            Box::pin(async move { exec(c, sql::PRUNE, &[&finished_before, &limit]).await })
        }))
    }

    fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<Announced>> {
        Some(self.announced.subscribe())
    }

    fn announce<'a>(
        &'a self,
        host: &'a HostId,
        what: &'a Announcement,
    ) -> BoxFuture<'a, Result<(), TaskStoreError>> {
        Box::pin(async move {
            let announced = Announced {
                host: Some(host.clone()),
                what: what.clone(),
            };
            let payload = serde_json::to_string(&announced)
                .map_err(|e| TaskStoreError::Internal(e.to_string()))?;
            if payload.len() > MAX_NOTIFY_BYTES {
                tracing::warn!(bytes = payload.len(), "an announcement too long to send");
                return Ok(());
            }
            let client = self.db.reader().await?;
            let statement = client
                .prepare_cached("SELECT pg_notify('modhost_tasks', $1)")
                .await?;
            client.execute(&statement, &[&payload]).await?;
            Ok(())
        })
    }
}

/// A notification as an announcement: the store's own on `modhost_pending`
/// (the payload is the module), a host's on `modhost_tasks` (JSON).
fn announcement(channel: &str, payload: &str) -> Option<Announced> {
    match channel {
        "modhost_pending" => Some(Announced {
            host: None,
            what: Announcement::Pending {
                module: payload.to_owned(),
            },
        }),
        _ => serde_json::from_str(payload)
            .inspect_err(|e| tracing::warn!(error = %e, "an announcement that cannot be read"))
            .ok(),
    }
}

/// Forwards the `modhost_pending` and `modhost_tasks` notifications to
/// `announced`, on a connection of its own, connecting again whenever it is
/// lost; ends with the database handle. After a reconnection the hosts'
/// slow poll and renewals cover what was announced meanwhile.
async fn listen(
    db: std::sync::Weak<PgDatabase>,
    announced: tokio::sync::broadcast::Sender<Announced>,
    listening: tokio::sync::oneshot::Sender<()>,
) {
    let mut ready = Some(listening);
    use futures::StreamExt;
    loop {
        let Some(pg) = db.upgrade() else { return };
        let connected = pg.dedicated().await;
        drop(pg);
        match connected {
            Ok((client, mut connection)) => {
                let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
                let listening =
                    client.batch_execute("LISTEN modhost_pending; LISTEN modhost_tasks");
                let mut listening = std::pin::pin!(listening);
                let mut listened = false;
                loop {
                    tokio::select! {
                        done = &mut listening, if !listened => {
                            listened = true;
                            if let Err(e) = done {
                                tracing::warn!(error = %e, "cannot listen for new tasks");
                                break;
                            }
                            if let Some(tx) = ready.take() {
                                let _ = tx.send(());
                            }
                        }
                        message = messages.next() => match message {
                            Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                                if let Some(a) = announcement(n.channel(), n.payload()) {
                                    let _ = announced.send(a);
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => {
                                tracing::warn!(error = %e, "the listener's connection failed");
                                break;
                            }
                            None => break,
                        },
                        () = tokio::time::sleep(RELISTEN_AFTER) => {
                            if db.strong_count() == 0 {
                                return;
                            }
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect to listen for new tasks"),
        }
        tokio::time::sleep(RELISTEN_AFTER).await;
    }
}

impl PgTaskStore {
    /// One page of [`TaskStore::list_org`].
    async fn page(
        &self,
        scope: &OrgScope,
        filter: &TaskFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<TaskPage, TaskStoreError> {
        let limit = limit.clamp(1, MAX_PAGE_LIMIT);
        let mark = |n: usize| format!("${n}");
        let clauses = ListClauses::new(scope, filter, cursor, limit, mark);
        let sql = format!(
            concat!(
                "SELECT ",
                summary_columns!(),
                " FROM tasks WHERE {} ORDER BY id DESC LIMIT {}"
            ),
            clauses.sql,
            clauses.limit_mark(mark)
        );
        let params: Vec<&(dyn ToSql + Sync)> = clauses
            .values
            .iter()
            .map(|v| -> &(dyn ToSql + Sync) {
                match v {
                    ListValue::Text(s) => s,
                    ListValue::Int(i) => i,
                }
            })
            .collect();
        TaskPage::of(rows(self.query(&sql, &params).await?)?, limit)
    }
}
