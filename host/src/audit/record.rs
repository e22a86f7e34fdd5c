//! The record every deciding room writes, what each capability adds to it,
//! and the store the trail is kept in, with what both databases share: the
//! capped columns of an insert, the query, the reading of a row.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::db::WriteError;
use crate::error::SdkError;
use crate::identity::{Identity, Principal, Role};

/// The audit trail's name in `schema_versions`, on either database.
pub const OWNER: &str = "audit";

/// A boxed, sendable future: what the dyn-compatible [`AuditStore`]
/// returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Where the trail is kept. A write resolves once it is durable.
pub trait AuditStore: Send + Sync + 'static {
    /// Records a decision.
    fn record(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), AuditError>>;

    /// Completes the record of an allowed subprocess launch with how the
    /// child ended; false when there is no such open record.
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
    #[error("the database has no audit table; apply its migrations first")]
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

    /// Whether trying the same write again may succeed: the database
    /// failed, not the record (a record the schema refuses, a constraint
    /// violated, is refused again).
    pub fn is_transient(&self) -> bool {
        !self.is_constraint()
            && matches!(
                self,
                AuditError::Backend(_)
                    | AuditError::Write(
                        WriteError::Sql(_) | WriteError::Full(_) | WriteError::Uncertain(_)
                    )
                    | AuditError::Postgres(
                        crate::pg::PgWriteError::Sql(_)
                            | crate::pg::PgWriteError::Connection(_)
                            | crate::pg::PgWriteError::Uncertain(_)
                    )
            )
    }

    /// Whether the schema refused the record: a constraint it violates.
    fn is_constraint(&self) -> bool {
        let sqlite = |e: &rusqlite::Error| {
            e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
        };
        match self {
            AuditError::Backend(e) | AuditError::Write(WriteError::Sql(e)) => sqlite(e),
            AuditError::Postgres(crate::pg::PgWriteError::Sql(e)) => {
                e.code().is_some_and(|code| code.code().starts_with("23"))
            }
            _ => false,
        }
    }

    /// What a guest or an API caller is told when the trail failed: the
    /// cause stays in the host's log.
    pub fn to_sdk(&self) -> SdkError {
        tracing::error!(error = %self, "the audit trail failed");
        if self.is_disk_full() {
            return SdkError::LimitExceeded(
                "the host's storage is full, so the audit trail cannot be written; try again later"
                    .into(),
            );
        }
        SdkError::Internal("the audit trail failed; see the host's log".into())
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

/// The most rows one audit query returns.
pub const MAX_AUDIT_LIMIT: u32 = 500;

/// The longest stored text field (a subject, a reason, an argument list);
/// longer ones are cut and marked, so a guest cannot grow the trail by
/// megabytes per call.
pub const MAX_AUDIT_TEXT_BYTES: usize = 16 * 1024;

/// The reason on the record of what a module was allowed only because the
/// host learns it (`modhost serve --learn`): its manifest does not grant it.
pub const LEARNED: &str =
    "not granted by the manifest: allowed while the host learns this module (serve --learn)";

/// The most refusals of one capability (file operations, outbound
/// requests) one call puts on the trail: a guest can ask for refusals as
/// fast as it loops.
pub const MAX_RECORDED_REFUSALS: u32 = 64;

/// Which capability a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    /// `tasks.run-subprocess`.
    Subprocess,
    /// `wasi:http/outgoing-handler`.
    Http,
    /// `wasi:filesystem` inside the module's data directory.
    Filesystem,
    /// A task submitted (`run-background`, or an embedder's submit).
    Task,
    /// A confirmation a task asked for, answered.
    Confirmation,
}

impl Capability {
    pub const ALL: [Capability; 5] = [
        Capability::Subprocess,
        Capability::Http,
        Capability::Filesystem,
        Capability::Task,
        Capability::Confirmation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Capability::Subprocess => "subprocess",
            Capability::Http => "http",
            Capability::Filesystem => "filesystem",
            Capability::Task => "task",
            Capability::Confirmation => "confirmation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Capability::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// What the host decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Done (or an attempt was made).
    Allowed,
    /// Not granted (`permission-denied`), or not safe to do here.
    Denied,
    /// Malformed (`invalid-input`).
    Invalid,
    /// A cap or quota was reached (`limit-exceeded`).
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

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allowed" => Decision::Allowed,
            "denied" => Decision::Denied,
            "invalid" => Decision::Invalid,
            "limited" => Decision::Limited,
            _ => return None,
        })
    }

    /// The decision an SDK error stands for, and its words.
    pub fn of_refusal(error: &SdkError) -> (Decision, String) {
        match error {
            SdkError::PermissionDenied(r) => (Decision::Denied, r.clone()),
            SdkError::InvalidInput(r) => (Decision::Invalid, r.clone()),
            SdkError::LimitExceeded(r) => (Decision::Limited, r.clone()),
            other => (Decision::Denied, other.to_string()),
        }
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
}

/// One decision, written when it is made (for a subprocess, before anything
/// is launched).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// A UUIDv7: records sort by time.
    pub id: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub module: String,
    pub user_id: String,
    pub organization_id: String,
    pub request_id: String,
    /// The task the call ran in, if any.
    pub task_id: Option<String>,
    /// What was asked for, as its capability names it: a program, a URL
    /// without its query, a path in the data directory, the name of the
    /// task submitted or whose confirmation was answered.
    pub subject: String,
    pub decision: Decision,
    pub reason: Option<String>,
    /// The capability and what only it records.
    #[serde(flatten)]
    pub detail: Detail,
}

impl AuditEntry {
    /// A decision about `subject` made now for `identity`'s call.
    pub fn new(
        identity: &Identity,
        task_id: Option<&str>,
        subject: impl Into<String>,
        detail: Detail,
    ) -> Self {
        AuditEntry {
            id: uuid::Uuid::now_v7().to_string(),
            at: crate::db::now_ms(),
            module: identity.module.clone(),
            user_id: identity.user_id().to_string(),
            organization_id: identity.organization_id().to_string(),
            request_id: identity.request_id.clone(),
            task_id: task_id.map(str::to_owned),
            subject: subject.into(),
            decision: Decision::Allowed,
            reason: None,
            detail,
        }
    }

    /// The same entry, refused with `error`'s decision and words.
    pub fn refused(mut self, error: &SdkError) -> Self {
        let (decision, reason) = Decision::of_refusal(error);
        self.decision = decision;
        self.reason = Some(reason);
        self
    }

    pub fn capability(&self) -> Capability {
        self.detail.capability()
    }
}

/// What one capability records beside the columns every record has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "capability", content = "detail", rename_all = "kebab-case")]
pub enum Detail {
    Subprocess(SubprocessDetail),
    Http(HttpDetail),
    Filesystem(FilesystemDetail),
    Task(TaskDetail),
    Confirmation(ConfirmationDetail),
}

impl Detail {
    pub fn capability(&self) -> Capability {
        match self {
            Detail::Subprocess(_) => Capability::Subprocess,
            Detail::Http(_) => Capability::Http,
            Detail::Filesystem(_) => Capability::Filesystem,
            Detail::Task(_) => Capability::Task,
            Detail::Confirmation(_) => Capability::Confirmation,
        }
    }

    /// The detail as stored: JSON of the capability's fields, each list
    /// and text cut to [`MAX_AUDIT_TEXT_BYTES`].
    pub(super) fn stored(&self) -> String {
        let json = match self {
            Detail::Subprocess(d) => serde_json::to_string(&SubprocessDetail {
                path: d.path.clone().map(capped),
                args: capped_list(&d.args),
                cwd: d.cwd.clone().map(capped),
                env_names: capped_list(&d.env_names),
                confined: d.confined,
            }),
            Detail::Http(d) => serde_json::to_string(&HttpDetail {
                method: capped(d.method.clone()),
                status: d.status,
                failure: d.failure.clone().map(capped),
            }),
            Detail::Filesystem(d) => serde_json::to_string(d),
            Detail::Task(d) => serde_json::to_string(&TaskDetail {
                task_key: d.task_key.clone().map(capped),
                created: d.created.clone(),
                existing: d.existing,
            }),
            Detail::Confirmation(d) => serde_json::to_string(&ConfirmationDetail {
                answer: capped(d.answer.clone()),
            }),
        };
        json.unwrap_or_else(|_| "{}".to_owned())
    }

    /// The detail of a stored record of `capability`.
    pub(super) fn load(capability: Capability, json: &str) -> Result<Self, serde_json::Error> {
        fn from<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, serde_json::Error> {
            serde_json::from_str(json)
        }
        Ok(match capability {
            Capability::Subprocess => Detail::Subprocess(from(json)?),
            Capability::Http => Detail::Http(from(json)?),
            Capability::Filesystem => Detail::Filesystem(from(json)?),
            Capability::Task => Detail::Task(from(json)?),
            Capability::Confirmation => Detail::Confirmation(from(json)?),
        })
    }
}

/// A `run-subprocess` call. The subject is the program as requested.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubprocessDetail {
    /// The absolute path it resolved to, when granted.
    pub path: Option<String>,
    pub args: Vec<String>,
    pub cwd: Option<String>,
    /// Names of the variables the request set; values are not kept (they
    /// may be secrets).
    pub env_names: Vec<String>,
    /// Whether the child ran under Landlock.
    pub confined: bool,
}

/// An outbound HTTP request. The subject is its URL without the query
/// (which may carry secrets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpDetail {
    pub method: String,
    /// The response's status, when one arrived.
    pub status: Option<u16>,
    /// Why an allowed request failed on the way (a timeout, a reset).
    pub failure: Option<String>,
}

/// A file operation refused inside the module's data directory. The
/// subject is the path as the guest named it, relative to the directory
/// it opened it from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilesystemDetail {
    /// The `wasi:filesystem` operation, `open-at`, `unlink-file-at`, ….
    pub operation: String,
    /// The `wasi:filesystem` error code the guest received; empty when the
    /// operation succeeded (a use learning allowed).
    pub error: String,
}

/// A task submitted. The subject is the task's name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskDetail {
    pub task_key: Option<String>,
    /// The task the submission resolved to, when allowed.
    pub created: Option<String>,
    /// Whether the key was already held by an active task, which the
    /// submission returned instead of a new one.
    pub existing: bool,
}

/// A confirmation answered. The subject is the name of the task that
/// asked, the record's task its id, and the user the one who answered.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfirmationDetail {
    /// The button chosen.
    pub answer: String,
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

impl AuditEnd {
    /// The end as stored, its failure cut to [`MAX_AUDIT_TEXT_BYTES`].
    pub(super) fn stored(&self) -> String {
        let mut end = self.clone();
        end.failure = end.failure.map(capped);
        serde_json::to_string(&end).unwrap_or_else(|_| "{}".to_owned())
    }
}

/// A stored record: the decision, and the end once there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub end: Option<AuditEnd>,
}

/// Which records [`AuditStore::query`] returns; every given field must
/// match.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFilter {
    pub organization_id: Option<String>,
    pub module: Option<String>,
    pub user_id: Option<String>,
    pub capability: Option<Capability>,
    pub decision: Option<Decision>,
    /// Only records older than this id (the last of the previous page).
    pub before: Option<String>,
}

impl AuditFilter {
    /// The filter as `by` may use it: an admin reads the whole
    /// organization's trail, anyone else only the records of their own
    /// calls. Whatever the filter says, the organization (and, for a
    /// non-admin, the user) is the principal's.
    pub fn scoped_to(mut self, by: &Principal) -> Result<Self, SdkError> {
        self.organization_id = Some(by.organization_id.as_str().to_owned());
        if by.role != Role::Admin {
            self.user_id = Some(by.user_id.as_str().to_owned());
        }
        if let Some(before) = &self.before {
            self.before = Some(crate::identity::canonical_uuid("audit record id", before)?);
        }
        Ok(self)
    }
}

/// The trail as the rooms that decide write it and principals read it.
#[derive(Clone)]
pub struct AuditTrail {
    store: Arc<dyn AuditStore>,
    /// Places for records written off their caller's path.
    backlog: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for AuditTrail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditTrail").finish_non_exhaustive()
    }
}

impl AuditTrail {
    pub fn new(store: Arc<dyn AuditStore>) -> Self {
        AuditTrail {
            store,
            backlog: Arc::new(tokio::sync::Semaphore::new(MAX_BACKLOG)),
        }
    }

    pub fn store(&self) -> &Arc<dyn AuditStore> {
        &self.store
    }

    /// Records `entry` once it is durable.
    pub async fn record(&self, entry: AuditEntry) -> Result<(), AuditError> {
        self.store.record(entry).await
    }

    /// Records `entry`, trying a few times while the database fails; a
    /// record that cannot be written is logged with all it holds, so it is
    /// not lost from sight. For decisions already acted on, where the
    /// caller's answer must not wait on the trail's failure.
    pub async fn record_or_log(&self, entry: AuditEntry) {
        let mut wait = std::time::Duration::from_millis(50);
        for attempt in 1..=RECORD_ATTEMPTS {
            match self.store.record(entry.clone()).await {
                Ok(()) => return,
                Err(e) if e.is_transient() && attempt < RECORD_ATTEMPTS => {
                    tracing::warn!(error = %e, audit_id = %entry.id, "cannot record an audit decision; trying again");
                    tokio::time::sleep(wait).await;
                    wait *= 4;
                }
                Err(e) => {
                    log_unrecorded(&entry, &e.to_string());
                    return;
                }
            }
        }
    }

    /// Records `entry` off the caller's path, as [`Self::record_or_log`]
    /// does: for what was allowed and done already, where waiting for the
    /// commit would only slow the caller. A crash within a commit of the
    /// act loses the record; everything else reaches the trail or the log.
    /// While [`MAX_BACKLOG`] records wait (the database stalls), more are
    /// logged in full instead of piling up.
    pub fn record_later(&self, entry: AuditEntry) {
        let place = self.backlog.clone().try_acquire_owned();
        match (place, tokio::runtime::Handle::try_current()) {
            (Ok(place), Ok(runtime)) => {
                let trail = self.clone();
                runtime.spawn(async move {
                    trail.record_or_log(entry).await;
                    drop(place);
                });
            }
            _ => log_unrecorded(&entry, "the trail's backlog is full"),
        }
    }

    /// Waits, at most `grace`, until every record written off its caller's
    /// path is on the trail (or in the log); whether they all were. A
    /// stopping host calls it last, so what was done before the stop keeps
    /// its record.
    pub async fn settled(&self, grace: std::time::Duration) -> bool {
        let all = u32::try_from(MAX_BACKLOG).unwrap_or(u32::MAX);
        match tokio::time::timeout(grace, self.backlog.acquire_many(all)).await {
            Ok(Ok(_)) => true,
            _ => {
                let waiting = MAX_BACKLOG - self.backlog.available_permits();
                tracing::warn!(waiting, "stopping with audit records not yet written");
                false
            }
        }
    }

    /// The whole trail, newest first, for the operator.
    pub async fn query(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        self.store.query(filter, limit).await
    }

    /// The trail as `by` may read it ([`AuditFilter::scoped_to`]), newest
    /// first.
    pub async fn query_for(
        &self,
        by: &Principal,
        filter: AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, SdkError> {
        let filter = filter.scoped_to(by)?;
        self.store
            .query(&filter, limit)
            .await
            .map_err(|e| e.to_sdk())
    }
}

/// The most records waiting to be written off their callers' paths.
pub const MAX_BACKLOG: usize = 4096;

/// A record the trail could not take, in the host's log with what it holds.
fn log_unrecorded(entry: &AuditEntry, why: &str) {
    tracing::error!(
        error = why, audit_id = %entry.id, capability = entry.capability().as_str(),
        module = %entry.module, user = %entry.user_id,
        organization = %entry.organization_id,
        subject = %crate::text::recorded(&entry.subject),
        decision = entry.decision.as_str(),
        reason = entry.reason.as_deref().unwrap_or(""),
        "an audit decision could not be recorded"
    );
}

/// How often [`AuditTrail::record_or_log`] tries.
const RECORD_ATTEMPTS: u32 = 3;

/// `text` cut to [`MAX_AUDIT_TEXT_BYTES`] on a character boundary.
pub(crate) fn capped(mut text: String) -> String {
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

/// A list whose JSON is longer than [`MAX_AUDIT_TEXT_BYTES`] kept as one
/// item: its JSON, cut.
fn capped_list(list: &[String]) -> Vec<String> {
    let json = serde_json::to_string(list).unwrap_or_default();
    if json.len() > MAX_AUDIT_TEXT_BYTES {
        vec![capped(json)]
    } else {
        list.to_vec()
    }
}

/// The columns every query selects, in the order [`record_of`] reads.
const COLUMNS: &str = "id, at, capability, module, user_id, organization_id, request_id, \
    task_id, subject, decision, reason, detail_json, end_json";

/// The values of one insert that are stored otherwise than they are held.
pub(crate) struct Stored {
    pub capability: &'static str,
    pub subject: String,
    pub decision: &'static str,
    pub reason: Option<String>,
    pub detail_json: String,
}

impl Stored {
    pub(crate) fn of(e: &AuditEntry) -> Self {
        Stored {
            capability: e.capability().as_str(),
            subject: capped(e.subject.clone()),
            decision: e.decision.as_str(),
            reason: e.reason.clone().map(capped),
            detail_json: e.detail.stored(),
        }
    }
}

/// The statement of one query: only the filter's given fields, bound, so
/// the planner can use the index of the shape (organization and user,
/// module or capability) instead of scanning the trail.
/// `mark(n)` spells the `n`-th placeholder (`?n`, `$n`); `limit_tail` what
/// follows the limit's placeholder. Every value but the last (the limit) is
/// text.
pub(crate) fn select_sql(
    filter: &AuditFilter,
    limit: u32,
    mark: fn(usize) -> String,
    limit_tail: &str,
) -> (String, Vec<String>, i64) {
    let mut sql = format!("SELECT {COLUMNS} FROM audit WHERE TRUE");
    let mut params = Vec::new();
    let text = |v: &str| v.to_owned();
    for (column, value) in [
        (
            "organization_id = ",
            filter.organization_id.as_deref().map(text),
        ),
        ("module = ", filter.module.as_deref().map(text)),
        ("user_id = ", filter.user_id.as_deref().map(text)),
        ("capability = ", filter.capability.map(|c| text(c.as_str()))),
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

/// An audit record of a row of [`COLUMNS`], from either database.
pub(crate) fn record_of<R: crate::columns::Columns>(r: &R) -> Result<AuditRecord, R::Error> {
    let capability = r.required_text(2)?;
    let capability = Capability::parse(&capability).ok_or_else(|| r.corrupt(2, "a capability"))?;
    let decision = r.required_text(9)?;
    let detail = Detail::load(capability, &r.required_text(11)?)
        .map_err(|_| r.corrupt(11, "a capability's detail"))?;
    let end = r
        .text(12)?
        .map(|e| serde_json::from_str(&e).map_err(|_| r.corrupt(12, "how a child ended")))
        .transpose()?;
    Ok(AuditRecord {
        entry: AuditEntry {
            id: r.required_text(0)?,
            at: r.required_int(1)?,
            module: r.required_text(3)?,
            user_id: r.required_text(4)?,
            organization_id: r.required_text(5)?,
            request_id: r.required_text(6)?,
            task_id: r.text(7)?,
            subject: r.required_text(8)?,
            decision: Decision::parse(&decision).ok_or_else(|| r.corrupt(9, "a decision"))?,
            reason: r.text(10)?,
            detail,
        },
        end,
    })
}

/// A denied subprocess decision of user `alice` of `acme` made at `at`: a
/// fixture of the audit tests and the retention tests.
#[cfg(test)]
pub(crate) fn decided_at(at: i64) -> AuditEntry {
    AuditEntry {
        id: uuid::Uuid::now_v7().to_string(),
        at,
        module: "m".into(),
        user_id: "alice".into(),
        organization_id: "acme".into(),
        request_id: "r".into(),
        task_id: None,
        subject: "true".into(),
        decision: Decision::Denied,
        reason: Some("not granted".into()),
        detail: Detail::Subprocess(SubprocessDetail::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A trail whose writes take `delay`, kept in memory.
    struct Slow {
        delay: std::time::Duration,
        kept: std::sync::Mutex<Vec<AuditEntry>>,
    }

    impl AuditStore for Slow {
        fn record(&self, entry: AuditEntry) -> BoxFuture<'_, Result<(), AuditError>> {
            Box::pin(async move {
                tokio::time::sleep(self.delay).await;
                self.kept.lock().unwrap().push(entry);
                Ok(())
            })
        }

        fn record_end(&self, _: &str, _: AuditEnd) -> BoxFuture<'_, Result<bool, AuditError>> {
            Box::pin(async { Ok(false) })
        }

        fn query<'a>(
            &'a self,
            _: &'a AuditFilter,
            _: u32,
        ) -> BoxFuture<'a, Result<Vec<AuditRecord>, AuditError>> {
            Box::pin(async { Ok(Vec::new()) })
        }
    }

    #[tokio::test]
    async fn a_stopping_host_waits_for_the_records_written_after_their_acts() {
        let store = Arc::new(Slow {
            delay: std::time::Duration::from_millis(200),
            kept: std::sync::Mutex::default(),
        });
        let trail = AuditTrail::new(store.clone());
        for at in 0..3 {
            trail.record_later(decided_at(at));
        }
        assert!(
            store.kept.lock().unwrap().is_empty(),
            "written off the caller's path"
        );
        assert!(trail.settled(std::time::Duration::from_secs(5)).await);
        assert_eq!(store.kept.lock().unwrap().len(), 3);
        // Settling once does not close the trail.
        trail.record_later(decided_at(4));
        assert!(trail.settled(std::time::Duration::from_secs(5)).await);
        assert_eq!(store.kept.lock().unwrap().len(), 4);
    }

    #[test]
    fn a_record_reads_as_one_flat_object_naming_its_capability() {
        let record = AuditRecord {
            entry: decided_at(5),
            end: None,
        };
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["capability"], "subprocess");
        assert_eq!(json["subject"], "true");
        assert_eq!(json["decision"], "denied");
        assert_eq!(json["detail"]["confined"], false);
        let back: AuditRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);
    }

    #[test]
    fn a_huge_argument_list_is_stored_cut_as_valid_json() {
        let detail = Detail::Subprocess(SubprocessDetail {
            args: vec!["x".repeat(1024); 64],
            ..SubprocessDetail::default()
        });
        let stored = detail.stored();
        assert!(stored.len() < 2 * MAX_AUDIT_TEXT_BYTES, "{}", stored.len());
        let Detail::Subprocess(back) = Detail::load(Capability::Subprocess, &stored).unwrap()
        else {
            unreachable!()
        };
        assert_eq!(back.args.len(), 1);
        assert!(back.args[0].ends_with("…[cut]"));
    }

    #[test]
    fn every_capability_parses_back_from_its_name() {
        for c in Capability::ALL {
            assert_eq!(Capability::parse(c.as_str()), Some(c));
        }
        assert_eq!(Capability::parse("sockets"), None);
    }
}
