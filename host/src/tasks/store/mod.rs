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
use std::time::Duration;

use serde::{Deserialize, Serialize};

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod postgres;
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

/// The failure message of a task that was running, and not resumable, when
/// its host stopped and started again.
pub const HOST_RESTARTED: &str = "host restarted";

/// The failure message of a task that was running, and not resumable, on a
/// host that stopped renewing its lease (it died, hung or lost the store).
pub const LEASE_EXPIRED: &str = "the host running the task stopped renewing its lease";

/// A boxed, sendable future: what every method of the dyn-compatible
/// [`TaskStore`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Persistence of background tasks, shared by every host that runs them.
///
/// Every method is async: a store may batch writes (group commit) or wait
/// on a database server. A write resolves only once its effect is durable;
/// it is queued when its future is first polled and, once queued, commits
/// even if the future is then dropped.
///
/// Many hosts may share one store. A host *claims* pending tasks
/// ([`TaskStore::claim`]), which stamps a [`Lease`] that the host renews
/// while it runs them ([`TaskStore::renew`]); a task whose lease ran out is
/// recovered by whichever host calls [`TaskStore::recover_expired`]. Every
/// write of a claimed task's run carries its lease, and a lease that is no
/// longer the task's current one is refused with
/// [`TaskStoreError::LeaseLost`] (fencing): a host that lost a task can
/// neither finish nor change it after another host took it. Lease times are
/// the store's clock, never a host's, so hosts need not agree on the time.
pub trait TaskStore: Send + Sync + 'static {
    /// Stores a new `pending` task, unless an active task of the same module
    /// and organization has the same key (its id is returned) or a quota is
    /// reached.
    fn submit(&self, task: NewTask) -> BoxFuture<'_, Result<Submitted, TaskStoreError>>;

    /// Claims pending tasks for `host`, oldest first, at most `want.max` of
    /// each wanted module: each becomes `running` (an attempt counted,
    /// `started_at` stamped) under a new lease that lasts `lease` unless
    /// renewed. Racing claims of several hosts never hand out one task twice.
    /// Returns whole rows (args and checkpoint included).
    fn claim<'a>(
        &'a self,
        host: &'a HostId,
        wants: &'a [Want],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, TaskStoreError>>;

    /// Extends each of `host`'s `leases` by `lease` from now. Answers one
    /// [`LeaseState`] per lease, in order: a task that is final, taken over
    /// or recovered is [`LeaseState::Lost`], and its run should stop.
    fn renew<'a>(
        &'a self,
        host: &'a HostId,
        leases: &'a [Lease],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<LeaseState>, TaskStoreError>>;

    /// Recovers claimed tasks whose lease ran out, and, with `restarted`,
    /// every lease of that host (it restarted, so none of its runs lives):
    /// a resumable task goes back to `pending` with its checkpoint and
    /// confirmation kept; any other becomes `interrupted`. `pending` tasks
    /// stay pending. Each recovered task's lease version moves on, so its
    /// old lease is refused from then on. A task [parked](TaskStore::park)
    /// on a question that expired unanswered goes back to `pending` too,
    /// to hear of the timeout when its run asks again. One write recovers
    /// at most [`RECOVERY_PAGE`] tasks of each kind: while the answer is a
    /// full page ([`Recovery::is_full_page`]), call again.
    fn recover_expired<'a>(
        &'a self,
        restarted: Option<&'a HostId>,
    ) -> BoxFuture<'a, Result<Recovery, TaskStoreError>>;

    /// Any active status -> the outcome's final status. `false` if the task
    /// is missing or already final: of racing finishes exactly one wins.
    /// With a lease (a run's own end), refused with
    /// [`TaskStoreError::LeaseLost`] if it is not the current one; without
    /// (a user's cancel), whoever runs the task.
    fn finish<'a>(
        &'a self,
        id: &'a str,
        lease: Option<&'a Lease>,
        outcome: Outcome,
    ) -> BoxFuture<'a, Result<bool, TaskStoreError>>;

    /// `running` → `pending`, undoing a claim whose run never began (no
    /// instance could be had), so the task is run later instead of failing;
    /// the lease is lost. False if the task is not running under this lease
    /// (e.g. it was cancelled).
    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, TaskStoreError>>;

    /// Stores progress (and, when given, a label and a checkpoint) of an
    /// active task that `owner` owns, in one transaction; with a lease (the
    /// task's own run), only while it is the current one.
    fn update_progress<'a>(
        &'a self,
        id: &'a str,
        owner: &'a Owner,
        lease: Option<&'a Lease>,
        update: ProgressUpdate,
    ) -> BoxFuture<'a, Result<ProgressResult, TaskStoreError>>;

    /// `running -> waiting-confirmation` with a new confirmation holding
    /// `surface_json`, unless the last confirmation's outcome has not reached
    /// the task yet (it asks again after a restart or a park): then an
    /// answered, unconsumed confirmation's answer, or a parked wait's
    /// timeout, is returned and nothing changes.
    fn ask_confirmation<'a>(
        &'a self,
        lease: &'a Lease,
        surface_json: &'a str,
        asked_at: i64,
        expires_at: Option<i64>,
    ) -> BoxFuture<'a, Result<Asked, TaskStoreError>>;

    /// A task waiting under `lease` for a confirmation not yet answered
    /// gives up its lease (the version moves on) and waits unclaimed: it
    /// costs a row, not a host's instance. Renewals, recoveries and fenced
    /// writes of the old lease no longer reach it; an answer or the
    /// question's expiry makes it `pending` again, and its next run's ask
    /// gets that outcome. `false` (nothing changed) if an answer was
    /// recorded first, or the task is no longer waiting; refused with
    /// [`TaskStoreError::LeaseLost`] if the lease is not the current one.
    fn park<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, TaskStoreError>>;

    /// Records the answer of an open confirmation: the task is active, the
    /// confirmation is unanswered, `answer.answered_at` is before its
    /// expiry and, when `asked_at` is given, it is that question (in the
    /// same write, so a question asked again in between is not answered).
    /// Any host may record it; the host running the task learns of it at its
    /// next renewal ([`LeaseState::Held`]`{ answered: true }`) if not sooner.
    /// A [parked](TaskStore::park) task becomes `pending` in the same write
    /// ([`Answered::Resumed`]), for any host to claim.
    fn answer_confirmation<'a>(
        &'a self,
        id: &'a str,
        answer: StoredAnswer,
        asked_at: Option<i64>,
    ) -> BoxFuture<'a, Result<Answered, TaskStoreError>>;

    /// Marks the current answer, or a parked wait's timeout, as delivered to
    /// the task, so the next ask opens a new confirmation. `false` if there
    /// is neither.
    fn consume_answer<'a>(
        &'a self,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, TaskStoreError>>;

    /// Ends the wait for a confirmation in one transaction: no answer is
    /// accepted from `now` on, an answer already recorded is consumed and
    /// returned, and a `waiting-confirmation` task is `running` again. So an
    /// answer and a timeout racing each other have exactly one outcome.
    fn close_confirmation<'a>(
        &'a self,
        lease: &'a Lease,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<StoredAnswer>, TaskStoreError>>;

    /// One task, if visible in `scope`.
    fn get<'a>(
        &'a self,
        id: &'a str,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Option<TaskRow>, TaskStoreError>>;

    /// One task, whoever owns it. Host-internal: never answer a guest with it.
    fn get_unscoped<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskRow>, TaskStoreError>>;

    /// Tasks in `scope` whose key equals `key`, newest first, at most `limit`
    /// (capped at [`MAX_LOOKUP_LIMIT`]).
    ///
    /// Lookups and lists return *summary rows*: the heavy fields are not
    /// loaded (`args_json` is empty; `checkpoint_json`, `result_json` and
    /// `confirmation` are `None`; `failure_message` is cut to 1,024 bytes).
    /// [`TaskStore::get`] returns the whole row.
    fn by_key<'a>(
        &'a self,
        scope: &'a Scope,
        key: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>>;

    /// Tasks in `scope` whose key starts with `prefix` (every character is
    /// literal), newest first, at most `limit` (capped at
    /// [`MAX_LOOKUP_LIMIT`]).
    fn by_key_prefix<'a>(
        &'a self,
        scope: &'a Scope,
        prefix: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>>;

    /// Tasks in `scope` (of `scope.user_id`, or of the whole organization),
    /// newest first, at most `limit` (capped at [`MAX_LOOKUP_LIMIT`]).
    fn by_user<'a>(
        &'a self,
        scope: &'a Scope,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>>;

    /// One page of tasks in `scope` matching every field of `filter`, newest
    /// first, `limit` clamped to 1..=[`MAX_PAGE_LIMIT`]. Pages continue after
    /// `cursor` and stay stable while new tasks arrive.
    fn list<'a>(
        &'a self,
        scope: &'a Scope,
        filter: &'a TaskFilter,
        cursor: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<TaskPage, TaskStoreError>>;

    /// [`TaskStore::list`] for a principal outside the sandbox: the same
    /// page, across the modules of an organization unless `scope` names one.
    fn list_org<'a>(
        &'a self,
        scope: &'a OrgScope,
        filter: &'a TaskFilter,
        cursor: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<TaskPage, TaskStoreError>>;

    /// Deletes at most `limit` finished tasks whose `finished_at` is before
    /// `finished_before` (ms since the epoch), oldest first, in one write;
    /// returns how many. An active task is never deleted. Retention calls it
    /// until it deletes fewer than `limit` ([`crate::retention`]).
    fn prune(&self, finished_before: i64, limit: u32)
    -> BoxFuture<'_, Result<u64, TaskStoreError>>;

    /// What the store announces to every host on it: new pending tasks
    /// (as they are committed, whoever submitted them) and what hosts
    /// [`TaskStore::announce`]; `None` for a store that announces nothing
    /// (one host alone, or hosts that find others' work by polling and
    /// renewing). An announcement may be lost or doubled: it only hastens
    /// what a claim or a renewal would do anyway.
    fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<Announced>> {
        None
    }

    /// Tells every host on the store (itself included) `what`, from `host`.
    /// Nothing for a store that announces nothing.
    fn announce<'a>(
        &'a self,
        host: &'a HostId,
        what: &'a Announcement,
    ) -> BoxFuture<'a, Result<(), TaskStoreError>> {
        let _ = (host, what);
        Box::pin(async { Ok(()) })
    }
}

/// What a host tells the others through the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Announcement {
    /// A module has new pending tasks.
    Pending { module: String },
    /// A confirmation of the task was answered: the host running it hands
    /// the run the answer.
    Answered { task_id: String },
    /// The task was cancelled: the host running it stops the run.
    Cancelled { task_id: String },
    /// A task event, for the subscribers of every host.
    Event {
        subject: crate::events::Subject,
        event: crate::events::EventKind,
    },
}

/// An [`Announcement`] and the host it came from (`None`: the store).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Announced {
    pub host: Option<HostId>,
    #[serde(flatten)]
    pub what: Announcement,
}

/// The name a host holds leases under: the same across restarts of one
/// host (so a restarted host recovers its own runs at once), different for
/// every host sharing a store. 1 to 128 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostId(String);

/// The host id of a host alone on its store (the embedded SQLite default).
pub const LOCAL_HOST: &str = "local";

/// Longest [`HostId`].
pub const MAX_HOST_ID_BYTES: usize = 128;

/// A host id that is empty, too long or not printable ASCII.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("host id {0:?} must be 1 to 128 printable ASCII characters")]
pub struct InvalidHostId(pub String);

impl HostId {
    pub fn new(id: impl Into<String>) -> Result<Self, InvalidHostId> {
        let id = id.into();
        let printable = id.bytes().all(|b| b.is_ascii_graphic());
        if id.is_empty() || id.len() > MAX_HOST_ID_BYTES || !printable {
            return Err(InvalidHostId(id));
        }
        Ok(HostId(id))
    }

    /// [`LOCAL_HOST`].
    pub fn local() -> Self {
        HostId(LOCAL_HOST.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for HostId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for HostId {
    type Error = InvalidHostId;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        HostId::new(s)
    }
}

impl From<HostId> for String {
    fn from(h: HostId) -> String {
        h.0
    }
}

/// A claim of one task: the version that every write of its run carries.
/// Each claim, release and recovery of a task moves the version on, so an
/// older lease never matches again.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Lease {
    pub task_id: String,
    pub version: i64,
}

/// How many pending tasks of one module a host can start now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    pub module: String,
    pub max: u32,
}

/// A task claimed by [`TaskStore::claim`]: its whole row, now `running`,
/// and the lease its run writes under.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub row: TaskRow,
    pub lease: Lease,
}

/// What [`TaskStore::renew`] found of one lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaseState {
    /// Still the task's, now extended; `answered` when the task waits for a
    /// confirmation whose answer is recorded and not yet delivered.
    Held { answered: bool },
    /// The task is final, or no longer under this lease (recovered or
    /// claimed again): its run must stop without writing.
    Lost,
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

/// Which of a [`Quota`]'s limits a submission reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaReached {
    User,
    Module,
    Org,
}

impl Quota {
    /// What the submitter of a task of `module` is told when `reached`.
    pub fn refusal(&self, reached: QuotaReached, module: &str) -> String {
        match reached {
            QuotaReached::User => format!(
                "[tasks] max-active-per-user: at most {} active tasks per user of module `{module}`",
                self.max_active_per_user
            ),
            QuotaReached::Module => format!(
                "[tasks] max-active-per-module: at most {} active tasks of module `{module}` per organization",
                self.max_active_per_module
            ),
            QuotaReached::Org => format!(
                "max-active-tasks-per-org: at most {} active tasks per organization over all modules (a host setting)",
                self.max_active_per_org
            ),
        }
    }
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

impl ProgressUpdate {
    /// Refuses a progress outside 0..=1 (the runtime clamps; a store
    /// refuses rather than store it).
    pub fn check(&self) -> Result<(), TaskStoreError> {
        if (0.0..=1.0).contains(&self.progress) {
            return Ok(());
        }
        Err(TaskStoreError::InvalidInput(format!(
            "progress {} is not within 0..=1",
            self.progress
        )))
    }
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
    /// asks again after a restart or a park): its answer. The status did
    /// not change.
    AlreadyAnswered(StoredAnswer),
    /// An earlier confirmation expired unanswered while the task was parked,
    /// and its run has not heard of it yet. The status did not change.
    AlreadyTimedOut,
    /// The task is missing or not running.
    NotActive,
}

/// What [`TaskStore::answer_confirmation`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answered {
    Recorded,
    /// Recorded, and the task, which waited [parked](TaskStore::park), is
    /// `pending` again: its next run gets the answer.
    Resumed,
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
    /// The host whose lease the task runs under, while claimed.
    pub host: Option<String>,
}

/// A row of every column of `tasks` in the backends' shared order (`id,
/// module, task_name, task_key, title, status, progress, label,
/// checkpoint_json, args_json, result_json, failure_kind, failure_message,
/// resumable, user_id, organization_id, role, request_id, session_id,
/// created_at, updated_at, started_at, finished_at, attempts,
/// confirm_surface_json, confirm_asked_at, confirm_expires_at,
/// confirm_answer_json, confirm_answered_by, confirm_answered_at,
/// confirm_consumed, lease_owner`) as a task.
pub fn task_row<R: crate::columns::Columns>(r: &R) -> Result<TaskRow, R::Error> {
    let status = r.required_text(5)?;
    let status: Status = status.parse().map_err(|_| r.corrupt(5, "a task status"))?;
    let attempts = u32::try_from(r.required_int(23)?).map_err(|_| r.corrupt(23, "a count"))?;
    let confirmation = match r.text(24)? {
        None => None,
        Some(surface_json) => Some(ConfirmationRow {
            surface_json,
            asked_at: r.required_int(25)?,
            expires_at: r.int(26)?,
            answer: stored_answer(r, 27)?,
            consumed: r.flag(30)?,
        }),
    };
    Ok(TaskRow {
        id: r.required_text(0)?,
        module: r.required_text(1)?,
        task_name: r.required_text(2)?,
        task_key: r.text(3)?,
        title: r.text(4)?,
        status,
        progress: r.real(6)?,
        label: r.text(7)?,
        checkpoint_json: r.text(8)?,
        args_json: r.required_text(9)?,
        result_json: r.text(10)?,
        failure_kind: r.text(11)?,
        failure_message: r.text(12)?,
        resumable: r.flag(13)?,
        user_id: r.required_text(14)?,
        organization_id: r.required_text(15)?,
        role: r.required_text(16)?,
        request_id: r.required_text(17)?,
        session_id: r.text(18)?,
        created_at: r.required_int(19)?,
        updated_at: r.required_int(20)?,
        started_at: r.int(21)?,
        finished_at: r.int(22)?,
        attempts,
        confirmation,
        host: r.text(31)?,
    })
}

/// The answer stored in columns `first..first + 3` (json, by, at), if any.
pub fn stored_answer<R: crate::columns::Columns>(
    r: &R,
    first: usize,
) -> Result<Option<StoredAnswer>, R::Error> {
    Ok(
        match (r.text(first)?, r.text(first + 1)?, r.int(first + 2)?) {
            (Some(answer_json), Some(answered_by), Some(answered_at)) => Some(StoredAnswer {
                answer_json,
                answered_by,
                answered_at,
            }),
            _ => None,
        },
    )
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

impl TaskPage {
    /// The page of a listing that read `limit` rows plus one: the extra row
    /// (dropped) says another page exists, which continues after the last
    /// row kept.
    pub fn of(mut tasks: Vec<TaskRow>, limit: u32) -> Result<Self, TaskStoreError> {
        let page = usize::try_from(limit).unwrap_or(usize::MAX);
        if tasks.len() <= page {
            return Ok(TaskPage {
                tasks,
                next_cursor: None,
            });
        }
        tasks.truncate(page);
        let next_cursor = match tasks.last() {
            Some(last) => Some(Cursor::after_task(&last.id).map_err(|_| {
                TaskStoreError::Internal(format!("stored task id {:?} is not a uuid", last.id))
            })?),
            None => None,
        };
        Ok(TaskPage { tasks, next_cursor })
    }
}

/// A value bound in a listing's statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListValue {
    Text(String),
    Int(i64),
}

/// The conditions of one `list` call, whatever the backend: `sql` starts
/// with `organization_id = <first placeholder>` and ends with the last
/// condition; the last value is the number of rows to read (the page and
/// one more). Values are always bound, never spliced into the text: the text
/// depends only on which filter fields are present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListClauses {
    pub sql: String,
    pub values: Vec<ListValue>,
}

impl ListClauses {
    /// `mark(n)` spells the `n`-th (from 1) placeholder: `?n` or `$n`.
    pub fn new(
        scope: &OrgScope,
        filter: &TaskFilter,
        cursor: Option<&Cursor>,
        limit: u32,
        mark: fn(usize) -> String,
    ) -> Self {
        let mut sql = format!("organization_id = {}", mark(1));
        let mut values = vec![ListValue::Text(scope.organization_id.clone())];
        let mut push = |sql: &mut String, clause: &str, value: ListValue| {
            values.push(value);
            sql.push_str(&clause.replace('#', &mark(values.len())));
        };
        if let Some(module) = &scope.module {
            push(&mut sql, " AND module = #", ListValue::Text(module.clone()));
        }
        if let Some(user) = &scope.user_id {
            push(&mut sql, " AND user_id = #", ListValue::Text(user.clone()));
        }
        let mut statuses = filter.statuses.clone();
        statuses.sort_by_key(|s| s.as_str());
        statuses.dedup();
        if !statuses.is_empty() {
            // An OR chain, not IN: SQLite's IN builds a temporary b-tree per run.
            sql.push_str(" AND (");
            for (i, status) in statuses.iter().enumerate() {
                let term = if i == 0 {
                    "status = #"
                } else {
                    " OR status = #"
                };
                push(&mut sql, term, ListValue::Text(status.as_str().to_owned()));
            }
            sql.push(')');
        }
        if let Some(name) = &filter.task_name {
            push(
                &mut sql,
                " AND task_name = #",
                ListValue::Text(name.clone()),
            );
        }
        if let Some(prefix) = &filter.key_prefix {
            push(
                &mut sql,
                " AND task_key >= #",
                ListValue::Text(prefix.clone()),
            );
            if let Some(upper) = prefix_successor(prefix) {
                push(&mut sql, " AND task_key < #", ListValue::Text(upper));
            }
        }
        if let Some(after) = filter.created_after {
            push(&mut sql, " AND created_at >= #", ListValue::Int(after));
        }
        if let Some(before) = filter.created_before {
            push(&mut sql, " AND created_at < #", ListValue::Int(before));
        }
        if let Some(cursor) = cursor {
            push(
                &mut sql,
                " AND id < #",
                ListValue::Text(cursor.after_id().to_owned()),
            );
        }
        values.push(ListValue::Int(i64::from(limit) + 1));
        ListClauses { sql, values }
    }

    /// The placeholder of the row count, the last value.
    pub fn limit_mark(&self, mark: fn(usize) -> String) -> String {
        mark(self.values.len())
    }
}

/// Most tasks one write of a recovery takes: a recovery of more writes
/// page after page, so no transaction of it grows with the number of
/// lapsed leases.
pub const RECOVERY_PAGE: u32 = 256;

/// What [`TaskStore::recover_expired`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recovery {
    /// Ids of the resumable tasks that were running or waiting, now pending
    /// again with checkpoint and confirmation kept, oldest first.
    pub resumed: Vec<String>,
    /// Ids of the claimed tasks that were not resumable, now `interrupted`,
    /// oldest first.
    pub interrupted: Vec<String>,
    /// Ids of the parked tasks whose question expired unanswered, now
    /// pending again, oldest first.
    pub timed_out: Vec<String>,
}

impl Recovery {
    /// Whether this page of a recovery was whole, of either kind: more may
    /// be left, and [`TaskStore::recover_expired`] is called again.
    pub fn is_full_page(&self) -> bool {
        let page = usize::try_from(RECOVERY_PAGE).unwrap_or(usize::MAX);
        self.resumed.len() >= page || self.interrupted.len() >= page || self.timed_out.len() >= page
    }

    /// Adds what another page of a recovery did, keeping the order.
    pub fn extend(&mut self, page: Recovery) {
        self.resumed.extend(page.resumed);
        self.interrupted.extend(page.interrupted);
        self.timed_out.extend(page.timed_out);
        self.resumed.sort();
        self.interrupted.sort();
        self.timed_out.sort();
    }
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
    /// The database's disk is full; the operation did not take effect.
    #[error("the task database's disk is full: {0}")]
    Full(#[source] Arc<dyn std::error::Error + Send + Sync>),
    /// The store was shut down, or its writer stopped.
    #[error("the task store is closed")]
    Closed,
    /// The database connection broke while the write was committing: it
    /// may or may not have taken effect (read before writing it again).
    #[error("task database connection lost while committing: {0}")]
    Uncertain(String),
    /// A run's write under a lease that is no longer its task's: the task
    /// was recovered or claimed by another host. Nothing was written.
    #[error("task {task_id} is no longer under this host's lease")]
    LeaseLost { task_id: String },
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
