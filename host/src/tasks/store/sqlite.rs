//! [`SqliteTaskStore`]: the task store on one SQLite file in WAL mode.
//!
//! Writes go through the file's single group-commit writer ([`crate::db::writer`]); each is a
//! compare-and-set statement (`UPDATE ... WHERE id = ? AND <expected state>`),
//! so the database, not a prior read, decides who wins a race. Reads run on a
//! small pool of read-only connections beside the writer, always through one
//! statement per scope shape, so a task outside the scope costs the same as a
//! missing one.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{
    Answered, Asked, BoxFuture, Claimed, Cursor, HOST_RESTARTED, HostId, LEASE_EXPIRED, Lease,
    LeaseState, ListClauses, ListValue, MAX_LOOKUP_LIMIT, MAX_PAGE_LIMIT, MIGRATION_LIST, NewTask,
    OrgScope, Outcome, Owner, ProgressResult, ProgressUpdate, QuotaReached, RECOVERY_PAGE,
    Recovery, Scope, StoredAnswer, Submitted, TaskFilter, TaskPage, TaskRow, TaskStore,
    TaskStoreError, Want, prefix_successor, validate_task_id,
};
use crate::db::{SqliteFile, SqliteOptions, WriteConn, WriteError, now_ms};

/// The SQLite task store, on a [`SqliteFile`] it may share with other
/// stores (the audit trail): one writer, one group commit for all.
pub struct SqliteTaskStore {
    pub(super) file: Arc<SqliteFile>,
}

impl std::fmt::Debug for SqliteTaskStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteTaskStore").finish_non_exhaustive()
    }
}

impl SqliteTaskStore {
    /// Opens the store on the database at `path`, whose task tables
    /// ([`apply_schema`]) already exist.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<Self, TaskStoreError> {
        let file = SqliteFile::open(path, options).map_err(|e| open_error(path, e))?;
        Self::on(Arc::new(file))
    }

    /// The store on an open file, whose task tables already exist.
    pub fn on(file: Arc<SqliteFile>) -> Result<Self, TaskStoreError> {
        let has_schema = file
            .has_table("tasks")
            .map_err(|e| open_error(file.path(), e))?;
        if !has_schema {
            return Err(TaskStoreError::SchemaMissing);
        }
        Ok(SqliteTaskStore { file })
    }

    /// A store on a new database file in the system's temporary directory,
    /// with the schema applied; the file is removed when the store drops.
    /// For tests and benchmarks.
    pub fn open_fresh_for_tests(options: SqliteOptions) -> Result<Self, TaskStoreError> {
        let file = SqliteFile::open_scratch(options, &[MIGRATION_LIST])
            .map_err(|e| open_error(Path::new("(scratch)"), e))?;
        Self::on(Arc::new(file))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Transactions the writer has committed; each holds one batch of writes.
    pub fn commits(&self) -> u64 {
        self.file.writer.commits()
    }

    /// Runs `f` on a read connection when polled. Reads are short indexed
    /// queries (tens of microseconds), answered on the polling thread:
    /// handing each to a blocking thread would cost more than the read.
    fn read<'a, T: Send + 'a>(
        &'a self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'a,
    ) -> BoxFuture<'a, Result<T, TaskStoreError>> {
        Box::pin(async move {
            self.file
                .readers
                .with(|conn| f(conn).map_err(TaskStoreError::from))
        })
    }

    fn write<T, F>(&self, work: F) -> BoxFuture<'_, Result<T, TaskStoreError>>
    where
        T: Send + 'static,
        F: FnOnce(&WriteConn<'_>) -> Result<T, TaskStoreError> + Send + 'static,
    {
        Box::pin(self.file.writer.run(work))
    }
}

impl From<rusqlite::Error> for TaskStoreError {
    fn from(e: rusqlite::Error) -> Self {
        WriteError::from(e).into()
    }
}

impl From<WriteError> for TaskStoreError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Sql(e) => TaskStoreError::Backend(e),
            WriteError::Full(e) => TaskStoreError::Full(e),
            WriteError::Uncertain(e) => TaskStoreError::Uncertain(e.to_string()),
            WriteError::Closed => TaskStoreError::Closed,
            WriteError::Internal(m) => TaskStoreError::Internal(m),
        }
    }
}

fn open_error(path: &Path, e: impl std::error::Error + Send + Sync + 'static) -> TaskStoreError {
    TaskStoreError::Open {
        path: path.display().to_string(),
        source: Arc::new(e),
    }
}

/// Every column of `tasks`, in the order [`task_row`] reads them.
macro_rules! columns {
    () => {
        "id, module, task_name, task_key, title, status, progress, label, checkpoint_json, \
         args_json, result_json, failure_kind, failure_message, resumable, user_id, \
         organization_id, role, request_id, session_id, created_at, updated_at, started_at, \
         finished_at, attempts, confirm_surface_json, confirm_asked_at, confirm_expires_at, \
         confirm_answer_json, confirm_answered_by, confirm_answered_at, confirm_consumed, \
         lease_owner"
    };
}

/// The columns of [`columns!`] for lookups and lists: the same positions,
/// with the heavy ones (args, checkpoint, result, confirmation) not loaded,
/// so a page of 500 summaries costs what 500 small rows cost whatever the
/// tasks carry.
macro_rules! summary_columns {
    () => {
        "id, module, task_name, task_key, title, status, progress, label, NULL, \
         '', NULL, failure_kind, substr(failure_message, 1, 1024), resumable, user_id, \
         organization_id, role, request_id, session_id, created_at, updated_at, started_at, \
         finished_at, attempts, NULL, NULL, NULL, \
         NULL, NULL, NULL, 0, lease_owner"
    };
}

/// "The task is active" (pending, running or waiting-confirmation), as the
/// schema's `CHECK` guarantees, spelled exactly as in the partial indexes'
/// `WHERE` so SQLite uses them. A constant `IN` list of three statuses would
/// build a temporary b-tree on every execution.
macro_rules! active {
    () => {
        "finished_at IS NULL"
    };
}

/// The statements of the reads and the submission, named so tests can check
/// their query plans. Every `LIMIT ?` is written `LIMIT ? + 0`: a bare
/// parameter makes SQLite plan the statement a second time once the value is
/// bound, which doubles the cost of a short lookup. Lookups whose index is in id order walk it directly and
/// stop at the limit; key ranges are not in id order, so they sort only the
/// (id, rowid) pairs of the covering index and fetch just the rows returned.
pub(super) mod sql {
    /// Active-task counters of the submitter, of the module in the
    /// organization, and of the organization.
    pub const ACTIVE_COUNTS: &str = "SELECT \
        COALESCE((SELECT active FROM task_active_per_user \
                  WHERE module = ?1 AND organization_id = ?2 AND user_id = ?3), 0), \
        COALESCE((SELECT active FROM task_active_per_module_org \
                  WHERE module = ?1 AND organization_id = ?2), 0), \
        COALESCE((SELECT active FROM task_active_per_org WHERE organization_id = ?2), 0)";

    /// Inserts a pending task unless the active-key index already holds its
    /// key (then nothing happens); any other conflict is an error.
    pub const INSERT: &str = concat!(
        "INSERT INTO tasks (id, module, task_name, task_key, title, status, args_json, \
         resumable, user_id, organization_id, role, request_id, session_id, created_at, \
         updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13) \
         ON CONFLICT (module, organization_id, task_key) \
         WHERE task_key IS NOT NULL AND ",
        active!(),
        " DO NOTHING"
    );

    /// The active task holding a key.
    pub const ACTIVE_WITH_KEY: &str = concat!(
        "SELECT id FROM tasks INDEXED BY tasks_active_key \
         WHERE module = ?1 AND organization_id = ?2 AND task_key = ?3 \
         AND task_key IS NOT NULL AND ",
        active!()
    );

    pub const GET: &str = concat!(
        "SELECT ",
        columns!(),
        " FROM tasks WHERE id = ?1 AND module = ?2 AND organization_id = ?3 \
         AND (?4 IS NULL OR user_id = ?4)"
    );

    pub const GET_UNSCOPED: &str = concat!("SELECT ", columns!(), " FROM tasks WHERE id = ?1");

    pub const BY_KEY: &str = concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tasks INDEXED BY tasks_by_key \
         WHERE module = ?1 AND organization_id = ?2 AND task_key = ?3 \
         AND (?4 IS NULL OR user_id = ?4) ORDER BY id DESC LIMIT ?5 + 0"
    );

    /// A bounded key range: `?3 <= key < ?6`.
    pub const BY_KEY_RANGE: &str = concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tasks WHERE rowid IN (SELECT rowid FROM tasks INDEXED BY tasks_by_key \
         WHERE module = ?1 AND organization_id = ?2 AND task_key >= ?3 AND task_key < ?6 \
         AND (?4 IS NULL OR user_id = ?4) ORDER BY id DESC LIMIT ?5 + 0) \
         ORDER BY id DESC"
    );

    /// A key range with no upper bound (the prefix has no successor); `?6`
    /// is always NULL.
    pub const BY_KEY_FROM: &str = concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tasks WHERE rowid IN (SELECT rowid FROM tasks INDEXED BY tasks_by_key \
         WHERE module = ?1 AND organization_id = ?2 AND task_key >= ?3 \
         AND (?4 IS NULL OR user_id = ?4) AND ?6 IS NULL ORDER BY id DESC LIMIT ?5 + 0) \
         ORDER BY id DESC"
    );

    pub const BY_USER: &str = concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tasks INDEXED BY tasks_by_user \
         WHERE module = ?1 AND organization_id = ?2 AND user_id = ?3 \
         ORDER BY id DESC LIMIT ?4 + 0"
    );

    /// Every user's tasks; `?3` is always NULL.
    pub const BY_ORG: &str = concat!(
        "SELECT ",
        summary_columns!(),
        " FROM tasks INDEXED BY tasks_by_org \
         WHERE module = ?1 AND organization_id = ?2 AND ?3 IS NULL \
         ORDER BY id DESC LIMIT ?4 + 0"
    );

    /// The oldest finished tasks finished before `?1`, at most `?2`: a walk
    /// of the finish-time index that stops at the limit.
    pub const PRUNE: &str = "DELETE FROM tasks WHERE rowid IN (SELECT rowid FROM tasks \
        INDEXED BY tasks_finished WHERE finished_at IS NOT NULL AND finished_at < ?1 \
        ORDER BY finished_at LIMIT ?2 + 0)";

    /// Claims the oldest `?2` pending tasks of module `?1` for host `?4`
    /// until `?5`: a walk of the pending index that stops at the limit.
    pub const CLAIM: &str = concat!(
        "UPDATE tasks SET status = 'running', attempts = attempts + 1, started_at = ?3, \
         updated_at = ?3, lease_owner = ?4, lease_expires_at = ?5, \
         lease_version = lease_version + 1 \
         WHERE rowid IN (SELECT rowid FROM tasks INDEXED BY tasks_pending \
         WHERE module = ?1 AND status = 'pending' ORDER BY id LIMIT ?2 + 0) \
         RETURNING ",
        columns!(),
        ", lease_version"
    );

    /// Extends lease `?3` of task `?1` held by `?2` until `?4`; returns
    /// whether an undelivered answer waits.
    pub const RENEW: &str = concat!(
        "UPDATE tasks SET lease_expires_at = ?4 \
         WHERE id = ?1 AND lease_owner = ?2 AND lease_version = ?3 AND ",
        active!(),
        " RETURNING status = 'waiting-confirmation' AND confirm_answer_json IS NOT NULL \
         AND confirm_consumed = 0"
    );

    /// The claimed tasks to recover: lease run out by `?1`, or held by the
    /// restarted host `?2`.
    /// The claimed tasks to recover (lease run out, or held by the
    /// restarted host `?2`: two disjoint sets) with `resumable = $r`, a page
    /// of them (`?5`).
    macro_rules! recoverable {
        ($r:literal) => {
            concat!(
                "rowid IN (SELECT rowid FROM (SELECT rowid FROM tasks INDEXED BY tasks_lease_expiry \
                 WHERE lease_expires_at IS NOT NULL AND lease_expires_at <= ?1 AND resumable = ",
                $r,
                " UNION ALL SELECT rowid FROM tasks INDEXED BY tasks_lease_owner \
                 WHERE lease_owner IS NOT NULL AND lease_owner = ?2 \
                 AND lease_expires_at > ?1 AND resumable = ",
                $r,
                ") LIMIT ?5)"
            )
        };
    }

    pub const RECOVER_INTERRUPT: &str = concat!(
        "UPDATE tasks SET status = 'interrupted', failure_kind = 'interrupted', \
         failure_message = CASE WHEN lease_owner = ?2 THEN ?3 ELSE ?4 END, \
         finished_at = ?1, updated_at = ?1, lease_owner = NULL, lease_expires_at = NULL, \
         lease_version = lease_version + 1 WHERE ",
        recoverable!("0"),
        " RETURNING id"
    );

    /// Parked tasks whose question expired unanswered by `?1` go back to
    /// pending, the timeout kept for their next run; bound with the
    /// interrupt's parameters, `?2` to `?4` unused.
    pub const RECOVER_TIMED_OUT: &str = "UPDATE tasks SET status = 'pending', \
        confirm_timed_out = 1, updated_at = ?1 \
        WHERE rowid IN (SELECT rowid FROM tasks INDEXED BY tasks_parked \
        WHERE status = 'waiting-confirmation' AND lease_owner IS NULL \
        AND confirm_expires_at <= ?1 AND confirm_answer_json IS NULL LIMIT ?5) RETURNING id";

    /// Bound with the interrupt's parameters, `?3` and `?4` unused.
    pub const RECOVER_RESUME: &str = concat!(
        "UPDATE tasks SET status = 'pending', updated_at = ?1, lease_owner = NULL, \
         lease_expires_at = NULL, lease_version = lease_version + 1 WHERE ",
        recoverable!("1"),
        " RETURNING id"
    );
}

/// A task of a SQLite row (of [`columns!`] or [`summary_columns!`]).
fn task_row(r: &Row<'_>) -> rusqlite::Result<TaskRow> {
    super::task_row(r)
}

/// The answer in columns `first..first + 3` (json, by, at), if any.
fn stored_answer(r: &Row<'_>, first: usize) -> rusqlite::Result<Option<StoredAnswer>> {
    super::stored_answer(r, first)
}

/// The column after [`columns!`] in a claim's `RETURNING`: the new lease
/// version.
const LEASE_VERSION: usize = 32;

/// Stores `t` unless its key is active or a quota is reached, in the
/// writer's transaction: the counters read here cannot change before the
/// insert, and the active-key index decides dedup.
fn submit(conn: &WriteConn<'_>, t: &NewTask) -> Result<Submitted, TaskStoreError> {
    let (per_user, per_module, per_org): (i64, i64, i64) = conn
        .prepare(sql::ACTIVE_COUNTS)?
        .query_row(params![t.module, t.organization_id, t.user_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let reached = if per_user >= i64::from(t.limits.max_active_per_user) {
        Some(QuotaReached::User)
    } else if per_module >= i64::from(t.limits.max_active_per_module) {
        Some(QuotaReached::Module)
    } else if per_org >= i64::from(t.limits.max_active_per_org) {
        Some(QuotaReached::Org)
    } else {
        None
    };
    let refusal = reached.map(|r| t.limits.refusal(r, &t.module));
    if let Some(reason) = refusal {
        // A key that is already active starts nothing, so needs no quota.
        if let Some(key) = &t.task_key
            && let Some(id) = active_with_key(conn, t, key)?
        {
            return Ok(Submitted::Existing(id));
        }
        return Ok(Submitted::LimitExceeded(reason));
    }
    let inserted = conn.prepare(sql::INSERT)?.execute(params![
        t.id,
        t.module,
        t.task_name,
        t.task_key,
        t.title,
        t.args_json,
        t.resumable,
        t.user_id,
        t.organization_id,
        t.role,
        t.request_id,
        t.session_id,
        t.created_at
    ])?;
    if inserted == 1 {
        return Ok(Submitted::Created(t.id.clone()));
    }
    // Only the active-key index turns the insert into a no-op (a duplicate id
    // is an error), so an active task holds the key.
    let holder = match &t.task_key {
        Some(key) => active_with_key(conn, t, key)?,
        None => None,
    };
    holder.map(Submitted::Existing).ok_or_else(|| {
        TaskStoreError::Internal("a submission was ignored without an active key holder".into())
    })
}

fn active_with_key(
    conn: &WriteConn<'_>,
    t: &NewTask,
    key: &str,
) -> Result<Option<String>, TaskStoreError> {
    Ok(conn
        .prepare(sql::ACTIVE_WITH_KEY)?
        .query_row(params![t.module, t.organization_id, key], |r| r.get(0))
        .optional()?)
}

/// The row `id` as the writer's transaction sees it, right after changing it.
/// (A separate read is cheaper than `RETURNING`, which builds a temporary
/// b-tree on every execution.)
fn written_row(conn: &WriteConn<'_>, id: &str) -> Result<TaskRow, TaskStoreError> {
    Ok(conn
        .prepare(sql::GET_UNSCOPED)?
        .query_row(params![id], task_row)?)
}

fn lookup_limit(limit: u32) -> i64 {
    i64::from(limit.min(MAX_LOOKUP_LIMIT))
}

/// Why a fenced write (one that names `lease`) changed nothing: the lease
/// is no longer the active task's ([`TaskStoreError::LeaseLost`]), or the
/// task is final or missing (`Ok`: the write's own "not applied" answer).
fn fence(conn: &WriteConn<'_>, lease: &Lease) -> Result<(), TaskStoreError> {
    let current: Option<i64> = conn
        .prepare(concat!(
            "SELECT lease_version FROM tasks WHERE id = ?1 AND ",
            active!()
        ))?
        .query_row(params![lease.task_id], |r| r.get(0))
        .optional()?;
    match current {
        Some(v) if v != lease.version => Err(TaskStoreError::LeaseLost {
            task_id: lease.task_id.clone(),
        }),
        _ => Ok(()),
    }
}

/// The version of `lease`, or NULL for an unfenced write.
fn version(lease: Option<&Lease>) -> Option<i64> {
    lease.map(|l| l.version)
}

/// `now + lease` in ms since the epoch.
fn expiry(now: i64, lease: Duration) -> i64 {
    now.saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX))
}

/// The final columns an outcome writes: status, result, failure kind and
/// message.
pub(super) fn outcome_columns(
    outcome: Outcome,
) -> (&'static str, Option<String>, Option<String>, Option<String>) {
    let status = outcome.status().as_str();
    let (result, kind, message) = match outcome {
        Outcome::Completed { result_json } => (Some(result_json), None, None),
        Outcome::Failed { kind, message } => (None, Some(kind), Some(message)),
        Outcome::Cancelled { by } => (
            None,
            Some("cancelled".to_owned()),
            Some(match by {
                Some(by) => format!("cancelled by {by}"),
                None => "cancelled".to_owned(),
            }),
        ),
        Outcome::Interrupted { message } => (None, Some("interrupted".to_owned()), Some(message)),
    };
    (status, result, kind, message)
}

impl TaskStore for SqliteTaskStore {
    fn submit(&self, task: NewTask) -> BoxFuture<'_, Result<Submitted, TaskStoreError>> {
        if let Err(e) = validate_task_id(&task.id) {
            return Box::pin(async move { Err(e) });
        }
        self.write(move |conn| submit(conn, &task))
    }

    fn claim<'a>(
        &'a self,
        host: &'a HostId,
        wants: &'a [Want],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, TaskStoreError>> {
        let host = host.as_str().to_owned();
        let wants: Vec<Want> = wants.iter().filter(|w| w.max > 0).cloned().collect();
        self.write(move |conn| {
            let now = now_ms();
            let mut claimed = Vec::new();
            for want in &wants {
                let mut statement = conn.prepare(sql::CLAIM)?;
                let rows = statement.query_map(
                    params![
                        want.module,
                        i64::from(want.max),
                        now,
                        host,
                        expiry(now, lease)
                    ],
                    |r| {
                        let row = task_row(r)?;
                        let lease = Lease {
                            task_id: row.id.clone(),
                            version: r.get(LEASE_VERSION)?,
                        };
                        Ok(Claimed { row, lease })
                    },
                )?;
                for row in rows {
                    claimed.push(row?);
                }
            }
            claimed.sort_by(|a, b| a.row.id.cmp(&b.row.id));
            Ok(claimed)
        })
    }

    fn renew<'a>(
        &'a self,
        host: &'a HostId,
        leases: &'a [Lease],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<LeaseState>, TaskStoreError>> {
        let host = host.as_str().to_owned();
        let leases = leases.to_vec();
        self.write(move |conn| {
            let until = expiry(now_ms(), lease);
            let mut statement = conn.prepare(sql::RENEW)?;
            leases
                .iter()
                .map(|l| {
                    let answered: Option<bool> = statement
                        .query_row(params![l.task_id, host, l.version, until], |r| r.get(0))
                        .optional()?;
                    Ok(match answered {
                        Some(answered) => LeaseState::Held { answered },
                        None => LeaseState::Lost,
                    })
                })
                .collect()
        })
    }

    fn recover_expired<'a>(
        &'a self,
        restarted: Option<&'a HostId>,
    ) -> BoxFuture<'a, Result<Recovery, TaskStoreError>> {
        let restarted = restarted.map(|h| h.as_str().to_owned());
        self.write(move |conn| {
            let now = now_ms();
            let page = params![now, restarted, HOST_RESTARTED, LEASE_EXPIRED, RECOVERY_PAGE];
            let ids = |sql| -> rusqlite::Result<Vec<String>> {
                let mut ids: Vec<String> = conn
                    .prepare(sql)?
                    .query_map(page, |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<_>>()?;
                ids.sort();
                Ok(ids)
            };
            Ok(Recovery {
                interrupted: ids(sql::RECOVER_INTERRUPT)?,
                resumed: ids(sql::RECOVER_RESUME)?,
                timed_out: ids(sql::RECOVER_TIMED_OUT)?,
            })
        })
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        let lease = lease.clone();
        self.write(move |conn| {
            let changed = conn
                .prepare(
                    "UPDATE tasks SET status = 'pending', attempts = max(attempts - 1, 0), \
                     started_at = NULL, updated_at = ?3, lease_owner = NULL, \
                     lease_expires_at = NULL, lease_version = lease_version + 1 \
                     WHERE id = ?1 AND status = 'running' AND lease_version = ?2",
                )?
                .execute(params![lease.task_id, lease.version, now_ms()])?;
            if changed == 0 {
                fence(conn, &lease)?;
            }
            Ok(changed == 1)
        })
    }

    fn finish<'a>(
        &'a self,
        id: &'a str,
        lease: Option<&'a Lease>,
        outcome: Outcome,
    ) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        let id = id.to_owned();
        let lease = lease.cloned();
        self.write(move |conn| {
            let now = now_ms();
            let (status, result, kind, message) = outcome_columns(outcome);
            let changed = conn
                .prepare(concat!(
                    "UPDATE tasks SET status = ?2, result_json = ?3, failure_kind = ?4, \
                     failure_message = ?5, finished_at = ?6, updated_at = ?6, \
                     progress = CASE WHEN ?2 = 'completed' THEN 1.0 ELSE progress END, \
                     lease_owner = NULL, lease_expires_at = NULL \
                     WHERE id = ?1 AND (?7 IS NULL OR lease_version = ?7) AND ",
                    active!()
                ))?
                .execute(params![
                    id,
                    status,
                    result,
                    kind,
                    message,
                    now,
                    version(lease.as_ref())
                ])?;
            if changed == 0
                && let Some(lease) = &lease
            {
                fence(conn, lease)?;
            }
            Ok(changed == 1)
        })
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
        self.write(move |conn| {
            let now = now_ms();
            let changed = conn
                .prepare(concat!(
                    "UPDATE tasks SET progress = ?4, label = COALESCE(?5, label), \
                     checkpoint_json = COALESCE(?6, checkpoint_json), updated_at = ?7 \
                     WHERE id = ?1 AND module = ?2 AND organization_id = ?3 \
                     AND (?8 IS NULL OR lease_version = ?8) AND ",
                    active!()
                ))?
                .execute(params![
                    id,
                    owner.module,
                    owner.organization_id,
                    update.progress,
                    update.label,
                    update.checkpoint_json,
                    now,
                    version(lease.as_ref())
                ])?;
            if changed == 1 {
                return Ok(ProgressResult::Updated(Box::new(written_row(conn, &id)?)));
            }
            let owned: bool = conn
                .prepare(
                    "SELECT EXISTS (SELECT 1 FROM tasks \
                     WHERE id = ?1 AND module = ?2 AND organization_id = ?3)",
                )?
                .query_row(params![id, owner.module, owner.organization_id], |r| {
                    r.get(0)
                })?;
            if !owned {
                return Ok(ProgressResult::NotFound);
            }
            if let Some(lease) = &lease {
                fence(conn, lease)?;
            }
            Ok(ProgressResult::NotActive)
        })
    }

    fn ask_confirmation<'a>(
        &'a self,
        lease: &'a Lease,
        surface_json: &'a str,
        asked_at: i64,
        expires_at: Option<i64>,
    ) -> BoxFuture<'a, Result<Asked, TaskStoreError>> {
        let lease = lease.clone();
        let surface_json = surface_json.to_owned();
        self.write(move |conn| {
            // An answer given before a restart, not yet delivered, is the
            // answer to the repeated ask.
            let answered = conn
                .prepare(concat!(
                    "SELECT confirm_answer_json, confirm_answered_by, confirm_answered_at \
                     FROM tasks WHERE id = ?1 AND lease_version = ?2 AND ",
                    active!(),
                    " AND confirm_answer_json IS NOT NULL AND confirm_consumed = 0"
                ))?
                .query_row(params![lease.task_id, lease.version], |r| {
                    stored_answer(r, 0)
                })
                .optional()?
                .flatten();
            if let Some(answer) = answered {
                return Ok(Asked::AlreadyAnswered(answer));
            }
            // So is a parked wait's timeout.
            let timed_out = conn
                .prepare(concat!(
                    "SELECT 1 FROM tasks WHERE id = ?1 AND lease_version = ?2 AND ",
                    active!(),
                    " AND confirm_timed_out = 1"
                ))?
                .exists(params![lease.task_id, lease.version])?;
            if timed_out {
                return Ok(Asked::AlreadyTimedOut);
            }
            let changed = conn
                .prepare(
                    "UPDATE tasks SET status = 'waiting-confirmation', updated_at = ?3, \
                     confirm_surface_json = ?4, confirm_asked_at = ?3, confirm_expires_at = ?5, \
                     confirm_answer_json = NULL, confirm_answered_by = NULL, \
                     confirm_answered_at = NULL, confirm_consumed = 0, confirm_timed_out = 0 \
                     WHERE id = ?1 AND lease_version = ?2 AND status = 'running'",
                )?
                .execute(params![
                    lease.task_id,
                    lease.version,
                    asked_at,
                    surface_json,
                    expires_at
                ])?;
            if changed == 1 {
                return Ok(Asked::Waiting);
            }
            fence(conn, &lease)?;
            Ok(Asked::NotActive)
        })
    }

    fn park<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        let lease = lease.clone();
        self.write(move |conn| {
            let changed = conn
                .prepare(
                    "UPDATE tasks SET lease_owner = NULL, lease_expires_at = NULL, \
                     lease_version = lease_version + 1, updated_at = ?3 \
                     WHERE id = ?1 AND lease_version = ?2 AND status = 'waiting-confirmation' \
                     AND confirm_answer_json IS NULL",
                )?
                .execute(params![lease.task_id, lease.version, now_ms()])?;
            if changed == 0 {
                fence(conn, &lease)?;
            }
            Ok(changed == 1)
        })
    }

    fn answer_confirmation<'a>(
        &'a self,
        id: &'a str,
        answer: StoredAnswer,
        asked_at: Option<i64>,
    ) -> BoxFuture<'a, Result<Answered, TaskStoreError>> {
        let id = id.to_owned();
        self.write(move |conn| {
            let parked: Option<bool> = conn
                .prepare(
                    "SELECT status = 'waiting-confirmation' AND lease_owner IS NULL \
                     FROM tasks WHERE id = ?1",
                )?
                .query_row(params![id], |r| r.get(0))
                .optional()?;
            let changed = conn
                .prepare(concat!(
                    "UPDATE tasks SET confirm_answer_json = ?2, confirm_answered_by = ?3, \
                     confirm_answered_at = ?4, updated_at = ?5, \
                     status = CASE WHEN status = 'waiting-confirmation' AND lease_owner IS NULL \
                     THEN 'pending' ELSE status END \
                     WHERE id = ?1 AND ",
                    active!(),
                    " AND confirm_surface_json IS NOT NULL AND confirm_answer_json IS NULL \
                     AND confirm_timed_out = 0 \
                     AND (confirm_expires_at IS NULL OR (?4 < confirm_expires_at AND ?5 < confirm_expires_at)) \
                     AND (?6 IS NULL OR confirm_asked_at = ?6)"
                ))?
                .execute(params![
                    id,
                    answer.answer_json,
                    answer.answered_by,
                    answer.answered_at,
                    now_ms(),
                    asked_at
                ])?;
            if changed == 1 {
                return Ok(if parked == Some(true) {
                    Answered::Resumed
                } else {
                    Answered::Recorded
                });
            }
            if let Some(asked) = asked_at {
                let current: Option<i64> = conn
                    .prepare("SELECT confirm_asked_at FROM tasks WHERE id = ?1")?
                    .query_row(params![id], |r| r.get(0))
                    .optional()?
                    .flatten();
                if current.is_some_and(|c| c != asked) {
                    return Ok(Answered::OtherQuestion);
                }
            }
            let exists: bool = conn
                .prepare("SELECT EXISTS (SELECT 1 FROM tasks WHERE id = ?1)")?
                .query_row(params![id], |r| r.get(0))?;
            Ok(if exists {
                Answered::NotWaiting
            } else {
                Answered::NotFound
            })
        })
    }

    fn consume_answer<'a>(
        &'a self,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        let lease = lease.clone();
        self.write(move |conn| {
            let changed = conn
                .prepare(
                    "UPDATE tasks SET confirm_consumed = confirm_answer_json IS NOT NULL, \
                     confirm_timed_out = 0, updated_at = ?3 \
                     WHERE id = ?1 AND lease_version = ?2 \
                     AND (confirm_answer_json IS NOT NULL AND confirm_consumed = 0 \
                     OR confirm_timed_out = 1)",
                )?
                .execute(params![lease.task_id, lease.version, now_ms()])?;
            if changed == 0 {
                fence(conn, &lease)?;
            }
            Ok(changed == 1)
        })
    }

    fn close_confirmation<'a>(
        &'a self,
        lease: &'a Lease,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<StoredAnswer>, TaskStoreError>> {
        let lease = lease.clone();
        self.write(move |conn| {
            fence(conn, &lease)?;
            let id = &lease.task_id;
            conn.prepare(
                "UPDATE tasks SET confirm_expires_at = min(coalesce(confirm_expires_at, ?2), ?2) \
                 WHERE id = ?1 AND confirm_surface_json IS NOT NULL AND confirm_answer_json IS NULL",
            )?
            .execute(params![id, now])?;
            let answer = conn
                .prepare(
                    "SELECT confirm_answer_json, confirm_answered_by, confirm_answered_at \
                     FROM tasks WHERE id = ?1 AND confirm_consumed = 0",
                )?
                .query_row(params![id], |r| stored_answer(r, 0))
                .optional()?
                .flatten();
            conn.prepare(
                "UPDATE tasks SET confirm_consumed = 1 \
                 WHERE id = ?1 AND confirm_answer_json IS NOT NULL AND confirm_consumed = 0",
            )?
            .execute(params![id])?;
            conn.prepare(
                "UPDATE tasks SET status = 'running', updated_at = ?2 \
                 WHERE id = ?1 AND status = 'waiting-confirmation'",
            )?
            .execute(params![id, now])?;
            Ok(answer)
        })
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Option<TaskRow>, TaskStoreError>> {
        // One statement whatever the outcome: a foreign task costs what a
        // missing one costs.
        self.read(move |conn| {
            conn.prepare_cached(sql::GET)?
                .query_row(
                    params![id, scope.module, scope.organization_id, scope.user_id],
                    task_row,
                )
                .optional()
        })
    }

    fn get_unscoped<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskRow>, TaskStoreError>> {
        self.read(move |conn| {
            conn.prepare_cached(sql::GET_UNSCOPED)?
                .query_row(params![id], task_row)
                .optional()
        })
    }

    fn by_key<'a>(
        &'a self,
        scope: &'a Scope,
        key: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>> {
        self.read(move |conn| {
            conn.prepare_cached(sql::BY_KEY)?
                .query_map(
                    params![
                        scope.module,
                        scope.organization_id,
                        key,
                        scope.user_id,
                        lookup_limit(limit)
                    ],
                    task_row,
                )?
                .collect()
        })
    }

    fn by_key_prefix<'a>(
        &'a self,
        scope: &'a Scope,
        prefix: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>> {
        // An index range, never LIKE/GLOB: every character of the prefix is
        // literal. The subquery reads only the covering index and sorts row
        // ids; the few rows returned are fetched afterwards.
        let upper = prefix_successor(prefix);
        let sql = if upper.is_some() {
            sql::BY_KEY_RANGE
        } else {
            sql::BY_KEY_FROM
        };
        self.read(move |conn| {
            conn.prepare_cached(sql)?
                .query_map(
                    params![
                        scope.module,
                        scope.organization_id,
                        prefix,
                        scope.user_id,
                        lookup_limit(limit),
                        upper
                    ],
                    task_row,
                )?
                .collect()
        })
    }

    fn by_user<'a>(
        &'a self,
        scope: &'a Scope,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>> {
        let sql = if scope.user_id.is_some() {
            sql::BY_USER
        } else {
            sql::BY_ORG
        };
        self.read(move |conn| {
            conn.prepare_cached(sql)?
                .query_map(
                    params![
                        scope.module,
                        scope.organization_id,
                        scope.user_id,
                        lookup_limit(limit)
                    ],
                    task_row,
                )?
                .collect()
        })
    }

    fn list<'a>(
        &'a self,
        scope: &'a Scope,
        filter: &'a TaskFilter,
        cursor: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<TaskPage, TaskStoreError>> {
        Box::pin(async move { self.page(&OrgScope::from(scope), filter, cursor, limit) })
    }

    fn list_org<'a>(
        &'a self,
        scope: &'a OrgScope,
        filter: &'a TaskFilter,
        cursor: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<TaskPage, TaskStoreError>> {
        Box::pin(async move { self.page(scope, filter, cursor, limit) })
    }

    fn prune(
        &self,
        finished_before: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, TaskStoreError>> {
        self.write(move |conn| {
            let deleted = conn
                .prepare(sql::PRUNE)?
                .execute(params![finished_before, i64::from(limit)])?;
            Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
        })
    }
}

impl SqliteTaskStore {
    /// One page of [`TaskStore::list_org`].
    fn page(
        &self,
        scope: &OrgScope,
        filter: &TaskFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<TaskPage, TaskStoreError> {
        let limit = limit.clamp(1, MAX_PAGE_LIMIT);
        let query = ListQuery::new(scope, filter, cursor, limit);
        let tasks = self.file.readers.with(|conn| {
            conn.prepare_cached(&query.sql)?
                .query_map(rusqlite::params_from_iter(query.params.iter()), task_row)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        TaskPage::of(tasks, limit)
    }
}

/// The statement of one `list` call: a covering walk of the scope's index
/// for row ids, then only the rows of the page fetched.
pub(super) struct ListQuery {
    pub(super) sql: String,
    pub(super) params: Vec<rusqlite::types::Value>,
}

impl ListQuery {
    pub(super) fn new(
        scope: &OrgScope,
        filter: &TaskFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Self {
        use rusqlite::types::Value;
        let mark = |n: usize| format!("?{n}");
        let clauses = ListClauses::new(scope, filter, cursor, limit, mark);
        let sql = format!(
            concat!(
                "SELECT ",
                summary_columns!(),
                " FROM tasks WHERE rowid IN (SELECT rowid FROM tasks WHERE {} \
                 ORDER BY id DESC LIMIT {} + 0) ORDER BY id DESC"
            ),
            clauses.sql,
            clauses.limit_mark(mark)
        );
        let params = clauses
            .values
            .into_iter()
            .map(|v| match v {
                ListValue::Text(s) => Value::Text(s),
                ListValue::Int(i) => Value::Integer(i),
            })
            .collect();
        ListQuery { sql, params }
    }
}
