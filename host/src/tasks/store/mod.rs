//! The durable task store: the persistence contract of background tasks
//! (`interface tasks` and `interface background-tasks`).
//!
//! [`TaskStore`] is what the task runtime talks to; [`sqlite::SqliteTaskStore`] is the
//! default implementation, and a PostgreSQL store can implement the same trait
//! without touching the runtime. Whatever the backend, the contract is:
//!
//! - dedup of active work by `task_key` is enforced by the database (a unique
//!   constraint), never by read-then-write;
//! - quotas are checked in the same transaction as the insert they guard;
//! - every status change is a compare-and-set, so racing transitions have one
//!   winner and a task is never finished twice;
//! - every read is scoped to a module and organization (and optionally one
//!   user); a task outside the scope is indistinguishable from a missing one;
//! - a write is acknowledged only after its transaction committed.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

mod schema;
pub mod sqlite;

#[cfg(test)]
mod tests;

pub use crate::db::SqliteOptions;
pub use schema::{MIGRATION_LIST, MIGRATIONS, OWNER, apply_schema};

/// Most rows one lookup (`by_key`, `by_key_prefix`, `by_user`) returns: the
/// WIT contract caps `list-user-tasks` and `get-tasks-by-key-prefix` at 500,
/// which bounds the work one guest call can make the host do.
pub const MAX_LOOKUP_LIMIT: u32 = 500;

/// Most rows one page of [`TaskStore::list`] holds (`background-tasks.list`
/// takes 1..=200).
pub const MAX_PAGE_LIMIT: u32 = 200;

/// The failure message of a task that was active, and not resumable, when the
/// host stopped.
pub const HOST_RESTARTED: &str = "host restarted";

/// A boxed, sendable future: what the write methods of the dyn-compatible
/// [`TaskStore`] return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Persistence of background tasks.
///
/// Writes are async because a store may batch them (group commit); each
/// resolves only once its effect is durable. Reads are synchronous, short,
/// indexed queries. A write is queued when its future is first polled; once
/// queued, it commits even if the future is then dropped.
pub trait TaskStore: Send + Sync + 'static {
    /// Stores a new `pending` task, unless an active task of the same module
    /// and organization has the same key (its id is returned) or a quota is
    /// reached.
    fn submit(&self, task: NewTask) -> BoxFuture<'_, Result<Submitted, TaskStoreError>>;

    /// `pending -> running`: counts an attempt and stamps `started_at` (the
    /// latest attempt's start). `None` if the task is not pending (for
    /// example, cancelled before it started).
    fn start(&self, id: &str) -> BoxFuture<'_, Result<Option<TaskRow>, TaskStoreError>>;

    /// Any active status -> the outcome's final status. `false` if the task
    /// is missing or already final: of racing finishes exactly one wins.
    fn finish(&self, id: &str, outcome: Outcome) -> BoxFuture<'_, Result<bool, TaskStoreError>>;

    /// `running` → `pending`, undoing a [`TaskStore::start`] whose run never
    /// began (no instance could be had), so the task is run later instead of
    /// failing. False if the task is not running (e.g. it was cancelled).
    fn release(&self, id: &str) -> BoxFuture<'_, Result<bool, TaskStoreError>>;

    /// Stores progress (and, when given, a label and a checkpoint) of an
    /// active task that `owner` owns, in one transaction.
    fn update_progress(
        &self,
        id: &str,
        owner: &Owner,
        update: ProgressUpdate,
    ) -> BoxFuture<'_, Result<ProgressResult, TaskStoreError>>;

    /// `running -> waiting-confirmation` with a new confirmation holding
    /// `surface_json`, unless an answered, unconsumed confirmation exists: then
    /// that answer is returned and nothing changes.
    fn ask_confirmation(
        &self,
        id: &str,
        surface_json: &str,
        asked_at: i64,
        expires_at: Option<i64>,
    ) -> BoxFuture<'_, Result<Asked, TaskStoreError>>;

    /// Records the answer of an open confirmation: the task is active, the
    /// confirmation is unanswered, `answer.answered_at` is before its
    /// expiry and, when `asked_at` is given, it is that question (in the
    /// same write, so a question asked again in between is not answered).
    fn answer_confirmation(
        &self,
        id: &str,
        answer: StoredAnswer,
        asked_at: Option<i64>,
    ) -> BoxFuture<'_, Result<Answered, TaskStoreError>>;

    /// Marks the current answer as delivered to the task, so the next ask
    /// opens a new confirmation. `false` if there is no unconsumed answer.
    fn consume_answer(&self, id: &str) -> BoxFuture<'_, Result<bool, TaskStoreError>>;

    /// Ends the wait for a confirmation in one transaction: no answer is
    /// accepted from `now` on, an answer already recorded is consumed and
    /// returned, and a `waiting-confirmation` task is `running` again. So an
    /// answer and a timeout racing each other have exactly one outcome.
    fn close_confirmation(
        &self,
        id: &str,
        now: i64,
    ) -> BoxFuture<'_, Result<Option<StoredAnswer>, TaskStoreError>>;

    /// `waiting-confirmation -> running` (answered or timed out). `false` if
    /// the task was not waiting.
    fn resume_after_confirmation(&self, id: &str) -> BoxFuture<'_, Result<bool, TaskStoreError>>;

    /// Run once at host start, before anything else writes: active tasks that
    /// are not resumable become `interrupted` ([`HOST_RESTARTED`]); resumable
    /// `running`/`waiting-confirmation` tasks go back to `pending` with their
    /// checkpoint and confirmation kept. `pending` tasks stay pending.
    fn recover(&self, now: i64) -> BoxFuture<'_, Result<Recovery, TaskStoreError>>;

    /// One task, if visible in `scope`.
    fn get(&self, id: &str, scope: &Scope) -> Result<Option<TaskRow>, TaskStoreError>;

    /// One task, whoever owns it. Host-internal: never answer a guest with it.
    fn get_unscoped(&self, id: &str) -> Result<Option<TaskRow>, TaskStoreError>;

    /// Tasks in `scope` whose key equals `key`, newest first, at most `limit`
    /// (capped at [`MAX_LOOKUP_LIMIT`]).
    ///
    /// Lookups, lists and [`TaskStore::pending`] return *summary rows*: the
    /// heavy fields are not loaded (`args_json` is empty; `checkpoint_json`,
    /// `result_json` and `confirmation` are `None`; `failure_message` is cut
    /// to 1,024 bytes). [`TaskStore::get`] returns the whole row.
    fn by_key(&self, scope: &Scope, key: &str, limit: u32) -> Result<Vec<TaskRow>, TaskStoreError>;

    /// Tasks in `scope` whose key starts with `prefix` (every character is
    /// literal), newest first, at most `limit` (capped at
    /// [`MAX_LOOKUP_LIMIT`]).
    fn by_key_prefix(
        &self,
        scope: &Scope,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<TaskRow>, TaskStoreError>;

    /// Tasks in `scope` (of `scope.user_id`, or of the whole organization),
    /// newest first, at most `limit` (capped at [`MAX_LOOKUP_LIMIT`]).
    fn by_user(&self, scope: &Scope, limit: u32) -> Result<Vec<TaskRow>, TaskStoreError>;

    /// One page of tasks in `scope` matching every field of `filter`, newest
    /// first, `limit` clamped to 1..=[`MAX_PAGE_LIMIT`]. Pages continue after
    /// `cursor` and stay stable while new tasks arrive.
    fn list(
        &self,
        scope: &Scope,
        filter: &TaskFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<TaskPage, TaskStoreError>;

    /// [`TaskStore::list`] for a principal outside the sandbox: the same
    /// page, across the modules of an organization unless `scope` names one.
    fn list_org(
        &self,
        scope: &OrgScope,
        filter: &TaskFilter,
        cursor: Option<&Cursor>,
        limit: u32,
    ) -> Result<TaskPage, TaskStoreError>;

    /// Pending tasks of every module, oldest first: what the scheduler picks
    /// up after a restart.
    fn pending(&self, limit: u32) -> Result<Vec<TaskRow>, TaskStoreError>;

    /// Deletes at most `limit` finished tasks whose `finished_at` is before
    /// `finished_before` (ms since the epoch), oldest first, in one write;
    /// returns how many. An active task is never deleted. Retention calls it
    /// until it deletes fewer than `limit` ([`crate::retention`]).
    fn prune(&self, finished_before: i64, limit: u32)
    -> BoxFuture<'_, Result<u64, TaskStoreError>>;
}

/// The life of a background task (WIT `task-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pending,
    Running,
    WaitingConfirmation,
    Completed,
    Failed,
    Cancelled,
    Interrupted,
}

impl Status {
    /// Every status, active ones first.
    pub const ALL: [Status; 7] = [
        Status::Pending,
        Status::Running,
        Status::WaitingConfirmation,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
        Status::Interrupted,
    ];

    /// The stored (and WIT) spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Running => "running",
            Status::WaitingConfirmation => "waiting-confirmation",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Interrupted => "interrupted",
        }
    }

    /// Whether the task may still change: pending, running or waiting.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Status::Pending | Status::Running | Status::WaitingConfirmation
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status spelling that is not one of [`Status::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown task status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for Status {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Active-task limits, checked at submission in the transaction of the
/// insert. Every count is within one organization: one organization's tasks
/// never use up another's quota.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Active tasks one user may have in one module and organization
    /// (`[tasks] max-active-per-user`).
    pub max_active_per_user: u32,
    /// Active tasks one module may have in one organization
    /// (`[tasks] max-active-per-module`).
    pub max_active_per_module: u32,
    /// Active tasks one organization may have over all modules (the host's
    /// setting, [`crate::tasks::TaskOptions::max_active_per_org`]).
    pub max_active_per_org: u32,
}

/// A task to store, as the runtime built it from a validated submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewTask {
    /// A UUIDv7 in canonical form, so ids sort by creation time.
    pub id: String,
    pub module: String,
    pub task_name: String,
    pub task_key: Option<String>,
    pub title: Option<String>,
    pub args_json: String,
    pub resumable: bool,
    pub user_id: String,
    pub organization_id: String,
    pub role: String,
    pub request_id: String,
    pub session_id: Option<String>,
    pub created_at: i64,
    pub limits: Quota,
}

/// What [`TaskStore::submit`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Submitted {
    /// The task was stored; its id.
    Created(String),
    /// An active task with the same key in the same module and organization
    /// exists; its id. Nothing was stored.
    Existing(String),
    /// A quota is reached; the reason names the limit. Nothing was stored.
    LimitExceeded(String),
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// `run-task` returned a result.
    Completed { result_json: String },
    /// `run-task` returned an error, trapped or ran out of time; `kind` is
    /// `error`, `trap` or `deadline`.
    Failed { kind: String, message: String },
    /// Cancelled through the host's API, by this user when known.
    Cancelled { by: Option<String> },
    /// Stopped by the host.
    Interrupted { message: String },
}

impl Outcome {
    /// The final status this outcome leads to.
    pub fn status(&self) -> Status {
        match self {
            Outcome::Completed { .. } => Status::Completed,
            Outcome::Failed { .. } => Status::Failed,
            Outcome::Cancelled { .. } => Status::Cancelled,
            Outcome::Interrupted { .. } => Status::Interrupted,
        }
    }
}

/// Who owns a task: the module and the organization it runs in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub module: String,
    pub organization_id: String,
}

/// What a read may see: one module in one organization, and one user's tasks
/// or (`user_id: None`) every user's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub module: String,
    pub organization_id: String,
    pub user_id: Option<String>,
}

/// What a principal's read may see: one organization, one user's tasks or
/// (`user_id: None`) every user's, of one module or (`module: None`) all.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OrgScope {
    pub organization_id: String,
    pub user_id: Option<String>,
    pub module: Option<String>,
}

impl From<&Scope> for OrgScope {
    fn from(s: &Scope) -> Self {
        OrgScope {
            organization_id: s.organization_id.clone(),
            user_id: s.user_id.clone(),
            module: Some(s.module.clone()),
        }
    }
}

/// A progress write. The caller has already clamped `progress` to 0..=1 and
/// checked the sizes of `label` and `checkpoint_json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgressUpdate {
    pub progress: f64,
    /// Replaces the stored label when given.
    pub label: Option<String>,
    /// Replaces the stored checkpoint when given.
    pub checkpoint_json: Option<String>,
}

/// What [`TaskStore::update_progress`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ProgressResult {
    /// Stored; the task as it is now.
    Updated(Box<TaskRow>),
    /// No such task for this owner (missing, or another module's or
    /// organization's: the two are not told apart).
    NotFound,
    /// The task is the owner's but already final.
    NotActive,
}

/// An answer to a confirmation, with who gave it and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredAnswer {
    pub answer_json: String,
    pub answered_by: String,
    pub answered_at: i64,
}

/// The current confirmation of a task (one per task; a new ask replaces a
/// consumed one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationRow {
    pub surface_json: String,
    pub asked_at: i64,
    pub expires_at: Option<i64>,
    pub answer: Option<StoredAnswer>,
    /// Whether the answer was delivered to the task.
    pub consumed: bool,
}

/// What [`TaskStore::ask_confirmation`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Asked {
    /// The task now waits in `waiting-confirmation`.
    Waiting,
    /// An earlier confirmation was answered and not yet consumed (the task
    /// asks again after a restart): its answer. The status did not change.
    AlreadyAnswered(StoredAnswer),
    /// The task is missing or not running.
    NotActive,
}

/// What [`TaskStore::answer_confirmation`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answered {
    Recorded,
    /// The task exists but has no open confirmation (none asked, already
    /// answered, expired, or the task is final).
    NotWaiting,
    /// The task waits for the answer to another question than the one
    /// answered (it asked again since).
    OtherQuestion,
    NotFound,
}

/// Everything stored about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    pub id: String,
    pub module: String,
    pub task_name: String,
    pub task_key: Option<String>,
    pub title: Option<String>,
    pub status: Status,
    pub progress: f64,
    pub label: Option<String>,
    pub checkpoint_json: Option<String>,
    pub args_json: String,
    pub result_json: Option<String>,
    /// `error`, `trap`, `deadline`, `cancelled` or `interrupted`.
    pub failure_kind: Option<String>,
    pub failure_message: Option<String>,
    pub resumable: bool,
    pub user_id: String,
    pub organization_id: String,
    pub role: String,
    pub request_id: String,
    pub session_id: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempts: u32,
    pub confirmation: Option<ConfirmationRow>,
}

/// Which tasks [`TaskStore::list`] returns; every given field must match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFilter {
    /// Any of these statuses; empty means any status.
    pub statuses: Vec<Status>,
    pub task_name: Option<String>,
    /// Key starts with this; every character is literal.
    pub key_prefix: Option<String>,
    /// Created at or after.
    pub created_after: Option<i64>,
    /// Created strictly before.
    pub created_before: Option<i64>,
}

/// Where the next page of a listing starts: after the last task of the
/// previous page. It only narrows a query that is scoped anyway, so a forged
/// cursor reveals nothing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// Canonical id of the last task seen; the next page holds older ids.
    after: String,
}

/// A cursor string that no listing produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed cursor")]
pub struct CursorError;

/// Marks the cursor format, so it can change without old cursors being
/// misread.
const CURSOR_TAG: &str = "c1";

impl Cursor {
    /// The cursor that continues a listing after the task `id`.
    pub fn after_task(id: &str) -> Result<Self, CursorError> {
        let uuid = uuid::Uuid::try_parse(id).map_err(|_| CursorError)?;
        Ok(Cursor {
            after: uuid.hyphenated().to_string(),
        })
    }

    /// The id pages continue after.
    pub fn after_id(&self) -> &str {
        &self.after
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let simple: String = self.after.chars().filter(|c| *c != '-').collect();
        write!(f, "{CURSOR_TAG}{simple}")
    }
}

impl FromStr for Cursor {
    type Err = CursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix(CURSOR_TAG).ok_or(CursorError)?;
        if hex.len() != 32 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(CursorError);
        }
        Cursor::after_task(hex)
    }
}

/// One page of [`TaskStore::list`].
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    pub tasks: Vec<TaskRow>,
    /// Continues the listing; `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// What [`TaskStore::recover`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// Resumable tasks that were running or waiting, now pending again with
    /// checkpoint and confirmation kept, oldest first.
    pub resumed: Vec<TaskRow>,
    /// Active tasks that were not resumable, now `interrupted`.
    pub interrupted: u64,
    /// Tasks that were pending (never started) and stay pending.
    pub pending: u64,
}

/// Why the task store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TaskStoreError {
    /// The database could not be opened or set up.
    #[error("task database {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The database has no task tables: its migrations were not applied.
    #[error("the database has no task tables; apply the task store migrations first")]
    SchemaMissing,
    /// An argument the store refuses (the runtime should have caught it).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The database failed; the operation did not take effect.
    #[error("task database error: {0}")]
    Backend(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The store was shut down, or its writer stopped.
    #[error("the task store is closed")]
    Closed,
    /// A bug in the store; the operation did not take effect.
    #[error("task store internal error: {0}")]
    Internal(String),
}

/// Checks that `id` is a canonical (lowercase, hyphenated) UUIDv7: listing
/// order and cursors rely on ids sorting by creation time.
pub fn validate_task_id(id: &str) -> Result<(), TaskStoreError> {
    let canonical = uuid::Uuid::try_parse(id)
        .ok()
        .filter(|u| u.get_version_num() == 7 && u.hyphenated().to_string() == id);
    match canonical {
        Some(_) => Ok(()),
        None => Err(TaskStoreError::InvalidInput(format!(
            "task id {id:?} is not a canonical UUIDv7"
        ))),
    }
}

/// The smallest string greater than every string that starts with `prefix`,
/// in byte (= code point) order; `None` when no such string exists (empty
/// prefix, or only U+10FFFF). `key >= prefix AND key < successor` is the
/// index range of a prefix match, with no wildcard characters at all.
pub fn prefix_successor(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let mut next = u32::from(last) + 1;
        if next == 0xD800 {
            // Skip the surrogate gap: the next scalar value after U+D7FF.
            next = 0xE000;
        }
        if let Some(next) = char::from_u32(next) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}
