//! The read model of background tasks: the WIT `background-tasks` interface
//! (`wit/background-tasks.wit`). Filtered, paginated listings and the full
//! view of one task, scoped like [`tasks`](crate::tasks).

use crate::__bindings::modhost::sdk::background_tasks as wit;
use crate::error::host;
use crate::tasks::{TaskStatus, TaskSummary};
use crate::ui::Surface;
use crate::{Result, TaskId, Timestamp};

/// Which tasks [`list`] returns. The default filters nothing (the caller's
/// own tasks of this module).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only tasks in one of these states (all when empty).
    pub statuses: Vec<TaskStatus>,
    pub task_name: Option<String>,
    pub key_prefix: Option<String>,
    /// Created at or after.
    pub created_after: Option<Timestamp>,
    /// Created before.
    pub created_before: Option<Timestamp>,
    /// Another user's tasks; needs a read grant.
    pub user_id: Option<String>,
}

impl TaskFilter {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn status(mut self, status: TaskStatus) -> Self {
        self.statuses.push(status);
        self
    }

    pub fn task_name(mut self, name: impl Into<String>) -> Self {
        self.task_name = Some(name.into());
        self
    }

    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = Some(prefix.into());
        self
    }

    pub fn created_after(mut self, at: Timestamp) -> Self {
        self.created_after = Some(at);
        self
    }

    pub fn created_before(mut self, at: Timestamp) -> Self {
        self.created_before = Some(at);
        self
    }

    pub fn user_id(mut self, user_id: impl Into<String>) -> Self {
        self.user_id = Some(user_id.into());
        self
    }
}

/// Where the next page of a listing starts. Opaque.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Cursor(String);

impl Cursor {
    /// Wraps a cursor received earlier, for example from a page's query.
    pub fn new(cursor: impl Into<String>) -> Self {
        Cursor(cursor.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskPage {
    pub tasks: Vec<TaskSummary>,
    /// `None` on the last page.
    pub next_cursor: Option<Cursor>,
}

/// Why a task failed, was cancelled or interrupted.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TaskFailure {
    /// `error`, `trap`, `deadline`, `cancelled` or `interrupted`.
    pub kind: String,
    pub message: String,
}

/// A confirmation the task is waiting for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PendingConfirmation {
    pub surface: Surface,
    pub asked_at: Timestamp,
    pub expires_at: Option<Timestamp>,
}

/// Everything stored about one task (WIT `task-view`). JSON payloads are
/// parsed; decode them with `serde_json::from_value`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskView {
    pub summary: TaskSummary,
    pub args: serde_json::Value,
    pub resumable: bool,
    pub checkpoint: Option<serde_json::Value>,
    pub result: Option<serde_json::Value>,
    pub failure: Option<TaskFailure>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    /// How many times the task was started.
    pub attempts: u32,
    pub confirmation: Option<PendingConfirmation>,
}

/// Lists tasks matching `filter`, `limit` (1..=200) per page. See
/// `background-tasks.list` in the WIT.
pub fn list(filter: TaskFilter, cursor: Option<Cursor>, limit: u32) -> Result<TaskPage> {
    let filter = wit::TaskFilter {
        statuses: filter
            .statuses
            .into_iter()
            .map(TaskStatus::into_wit)
            .collect(),
        task_name: filter.task_name,
        key_prefix: filter.key_prefix,
        created_after: filter.created_after.map(Timestamp::as_millis),
        created_before: filter.created_before.map(Timestamp::as_millis),
        user_id: filter.user_id,
    };
    let page = host(wit::list(
        &filter,
        cursor.as_ref().map(Cursor::as_str),
        limit,
    ))?;
    Ok(TaskPage {
        tasks: page.tasks.into_iter().map(TaskSummary::from_wit).collect(),
        next_cursor: page.next_cursor.map(Cursor),
    })
}

/// The full view of one task; a task the caller may not see is
/// [`Error::NotFound`](crate::Error). See `background-tasks.get`.
pub fn get(id: &TaskId) -> Result<TaskView> {
    let v = host(wit::get(id.as_str()))?;
    let ts = |ms: Option<u64>| ms.map(Timestamp::from_millis);
    Ok(TaskView {
        summary: TaskSummary::from_wit(v.summary),
        args: parse(v.args),
        resumable: v.resumable,
        checkpoint: v.checkpoint.map(parse),
        result: v.result.map(parse),
        failure: v.failure.map(|f| TaskFailure {
            kind: f.kind,
            message: f.message,
        }),
        started_at: ts(v.started_at),
        finished_at: ts(v.finished_at),
        attempts: v.attempts,
        confirmation: v.confirmation.map(|c| PendingConfirmation {
            surface: Surface::from_wit(c.surface),
            asked_at: Timestamp::from_millis(c.asked_at),
            expires_at: ts(c.expires_at),
        }),
    })
}

/// The host stores only valid JSON; anything else is kept as a string.
fn parse(json: String) -> serde_json::Value {
    serde_json::from_str(&json).unwrap_or(serde_json::Value::String(json))
}
