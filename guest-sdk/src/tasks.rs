//! Work off the hot path: the WIT `tasks` interface (`wit/tasks.wit`).
//!
//! [`run_background`] starts a detached task, [`run_blocking`] runs a
//! blocking function and waits for it, [`run_subprocess`] runs a granted
//! program. Every call acts as the caller's identity.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::__bindings::modhost::sdk::{tasks as wit, types};
use crate::error::host;
use crate::ui::{Answer, Surface};
use crate::{Result, TaskId, Timestamp};

/// Options of [`run_background`]. The default has no key, no title and is
/// not resumable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackgroundOptions {
    key: Option<String>,
    title: Option<String>,
    resumable: bool,
}

impl BackgroundOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Deduplicates active work: while a task with this key is active, the
    /// same key returns that task's id and starts nothing.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// A title for task cards.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }

    /// Run the task again from its last checkpoint after a host restart.
    pub fn resumable(mut self, resumable: bool) -> Self {
        self.resumable = resumable;
        self
    }
}

/// Starts `task` with `args` as a background task and returns its id. See
/// `tasks.run-background` in the WIT.
pub fn run_background<A: Serialize + ?Sized>(
    task: &str,
    args: &A,
    options: BackgroundOptions,
) -> Result<TaskId> {
    let args = serde_json::to_string(args)?;
    let options = wit::BackgroundOptions {
        task_key: options.key,
        title: options.title,
        resumable: options.resumable,
    };
    host(wit::run_background(task, &args, &options)).map(TaskId::from)
}

/// Runs the blocking function `function` and returns its result. See
/// `tasks.run-blocking`.
pub fn run_blocking<A: Serialize + ?Sized, R: DeserializeOwned>(
    function: &str,
    args: &A,
) -> Result<R> {
    let args = serde_json::to_string(args)?;
    let out = host(wit::run_blocking(function, &args))?;
    Ok(serde_json::from_str(&out)?)
}

/// A program to run through [`run_subprocess`]: arguments are tokens, never
/// a shell string. Everything here is checked against the manifest's grants.
#[derive(Debug, Clone)]
pub struct Command {
    request: wit::SubprocessRequest,
}

impl Command {
    /// `program` is the name the manifest grants, such as `git`.
    pub fn new(program: impl Into<String>) -> Self {
        Command {
            request: wit::SubprocessRequest {
                program: program.into(),
                args: Vec::new(),
                cwd: None,
                env: Vec::new(),
                stdin: None,
                timeout_ms: None,
                max_output_bytes: None,
            },
        }
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.request.args.push(arg.into());
        self
    }

    pub fn args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.request.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Working directory, relative to the module's data directory.
    pub fn cwd(mut self, dir: impl Into<String>) -> Self {
        self.request.cwd = Some(dir.into());
        self
    }

    pub fn env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.env.push((name.into(), value.into()));
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.request.stdin = Some(bytes.into());
        self
    }

    /// Kill the child after this long (rounded up to whole milliseconds).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let ms = timeout.as_nanos().div_ceil(1_000_000);
        self.request.timeout_ms = Some(u64::try_from(ms).unwrap_or(u64::MAX));
        self
    }

    /// Cap on each of stdout and stderr.
    pub fn max_output_bytes(mut self, bytes: u64) -> Self {
        self.request.max_output_bytes = Some(bytes);
        self
    }

    /// Same as [`run_subprocess`]`(self)`.
    pub fn run(self) -> Result<Output> {
        run_subprocess(self)
    }
}

/// How a child process ended (WIT `exit-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    TimedOut,
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }

    pub fn code(self) -> Option<i32> {
        match self {
            ExitStatus::Code(c) => Some(c),
            _ => None,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exit code {c}"),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
            ExitStatus::TimedOut => f.write_str("timed out"),
        }
    }
}

/// What a finished child produced (WIT `subprocess-output`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration: Duration,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// Stdout as text, invalid UTF-8 replaced.
    pub fn stdout_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stdout)
    }

    /// Stderr as text, invalid UTF-8 replaced.
    pub fn stderr_lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.stderr)
    }
}

/// Runs a granted program and waits for it. See `tasks.run-subprocess`.
pub fn run_subprocess(command: Command) -> Result<Output> {
    let out = host(wit::run_subprocess(&command.request))?;
    Ok(Output {
        status: match out.status {
            wit::ExitStatus::Code(c) => ExitStatus::Code(c),
            wit::ExitStatus::Signal(s) => ExitStatus::Signal(s),
            wit::ExitStatus::TimedOut => ExitStatus::TimedOut,
        },
        stdout: out.stdout,
        stderr: out.stderr,
        stdout_truncated: out.stdout_truncated,
        stderr_truncated: out.stderr_truncated,
        duration: Duration::from_millis(out.duration_ms),
    })
}

/// Stores progress (0.0..=1.0), an optional label and an optional checkpoint
/// of `task`, and notifies watchers. See `tasks.update-progress`; without a
/// checkpoint, [`set_progress`] avoids naming a checkpoint type.
pub fn update_progress<C: Serialize + ?Sized>(
    task: &TaskId,
    progress: f64,
    label: Option<&str>,
    checkpoint: Option<&C>,
) -> Result<()> {
    let checkpoint = checkpoint.map(serde_json::to_string).transpose()?;
    host(wit::update_progress(
        task.as_str(),
        progress,
        label,
        checkpoint.as_deref(),
    ))
}

/// [`update_progress`] without a checkpoint.
pub fn set_progress(task: &TaskId, progress: f64, label: Option<&str>) -> Result<()> {
    update_progress::<()>(task, progress, label, None)
}

/// Notifies watchers without storing anything. See `tasks.emit-progress`.
pub fn emit_progress(task: &TaskId, progress: Option<f64>, label: Option<&str>) -> Result<()> {
    host(wit::emit_progress(task.as_str(), progress, label))
}

/// How a confirmation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Confirmation {
    Answered(Answer),
    TimedOut,
}

/// Pauses the current background task until the user answers `surface` or
/// `timeout` passes. See `tasks.request-confirmation`.
pub fn request_confirmation(surface: Surface, timeout: Option<Duration>) -> Result<Confirmation> {
    let timeout_ms = timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    match host(wit::request_confirmation(&surface.into_wit(), timeout_ms))? {
        wit::ConfirmationOutcome::Answered(a) => Ok(Confirmation::Answered(Answer::from_wit(a))),
        wit::ConfirmationOutcome::TimedOut => Ok(Confirmation::TimedOut),
    }
}

/// The life of a background task (WIT `task-status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TaskStatus {
    Pending,
    Running,
    WaitingConfirmation,
    Completed,
    Failed,
    Cancelled,
    Interrupted,
}

impl TaskStatus {
    /// Pending, running or waiting for a confirmation.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            TaskStatus::Pending | TaskStatus::Running | TaskStatus::WaitingConfirmation
        )
    }

    /// Completed, failed, cancelled or interrupted.
    pub fn is_final(self) -> bool {
        !self.is_active()
    }

    pub(crate) fn from_wit(s: types::TaskStatus) -> Self {
        match s {
            types::TaskStatus::Pending => TaskStatus::Pending,
            types::TaskStatus::Running => TaskStatus::Running,
            types::TaskStatus::WaitingConfirmation => TaskStatus::WaitingConfirmation,
            types::TaskStatus::Completed => TaskStatus::Completed,
            types::TaskStatus::Failed => TaskStatus::Failed,
            types::TaskStatus::Cancelled => TaskStatus::Cancelled,
            types::TaskStatus::Interrupted => TaskStatus::Interrupted,
        }
    }

    pub(crate) fn into_wit(self) -> types::TaskStatus {
        match self {
            TaskStatus::Pending => types::TaskStatus::Pending,
            TaskStatus::Running => types::TaskStatus::Running,
            TaskStatus::WaitingConfirmation => types::TaskStatus::WaitingConfirmation,
            TaskStatus::Completed => types::TaskStatus::Completed,
            TaskStatus::Failed => types::TaskStatus::Failed,
            TaskStatus::Cancelled => types::TaskStatus::Cancelled,
            TaskStatus::Interrupted => types::TaskStatus::Interrupted,
        }
    }
}

/// One task as the lookups return it (WIT `task-summary`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TaskSummary {
    pub id: TaskId,
    pub module: String,
    pub task_name: String,
    pub task_key: Option<String>,
    pub title: Option<String>,
    pub status: TaskStatus,
    /// Last stored progress, 0.0..=1.0.
    pub progress: f64,
    pub label: Option<String>,
    pub user_id: String,
    pub organization_id: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl TaskSummary {
    pub fn is_active(&self) -> bool {
        self.status.is_active()
    }

    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }

    pub(crate) fn from_wit(t: types::TaskSummary) -> Self {
        TaskSummary {
            id: TaskId::from(t.id),
            module: t.module,
            task_name: t.task_name,
            task_key: t.task_key,
            title: t.title,
            status: TaskStatus::from_wit(t.status),
            progress: t.progress,
            label: t.label,
            user_id: t.user_id,
            organization_id: t.organization_id,
            created_at: Timestamp::from_millis(t.created_at),
            updated_at: Timestamp::from_millis(t.updated_at),
        }
    }
}

fn summaries(
    r: std::result::Result<Vec<types::TaskSummary>, types::Error>,
) -> Result<Vec<TaskSummary>> {
    Ok(host(r)?.into_iter().map(TaskSummary::from_wit).collect())
}

/// The caller's tasks in this module, newest first. See
/// `tasks.list-user-tasks`.
pub fn list_user_tasks(limit: u32) -> Result<Vec<TaskSummary>> {
    summaries(wit::list_user_tasks(None, None, limit))
}

/// Tasks of another user (and optionally another organization); empty unless
/// the manifest grants wider reads. See `tasks.list-user-tasks`.
pub fn list_tasks_of(
    user_id: &str,
    organization_id: Option<&str>,
    limit: u32,
) -> Result<Vec<TaskSummary>> {
    summaries(wit::list_user_tasks(Some(user_id), organization_id, limit))
}

/// Tasks whose key equals `key`, newest first. See `tasks.get-tasks-by-key`.
pub fn get_tasks_by_key(key: &str) -> Result<Vec<TaskSummary>> {
    summaries(wit::get_tasks_by_key(key))
}

/// Tasks whose key starts with `prefix`, newest first. See
/// `tasks.get-tasks-by-key-prefix`.
pub fn get_tasks_by_key_prefix(prefix: &str, limit: u32) -> Result<Vec<TaskSummary>> {
    summaries(wit::get_tasks_by_key_prefix(prefix, limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_builder_collects_tokens() {
        let c = Command::new("git")
            .arg("log")
            .args(["--oneline", "-n", "3"])
            .env("LANG", "C")
            .timeout(Duration::from_micros(1500));
        assert_eq!(c.request.args, ["log", "--oneline", "-n", "3"]);
        assert_eq!(c.request.env, [("LANG".to_owned(), "C".to_owned())]);
        assert_eq!(c.request.timeout_ms, Some(2));
    }

    #[test]
    fn waiting_confirmation_is_active_and_cancelled_is_final() {
        assert!(TaskStatus::WaitingConfirmation.is_active());
        assert!(TaskStatus::Cancelled.is_final());
        assert_eq!(
            serde_json::to_string(&TaskStatus::WaitingConfirmation).unwrap(),
            "\"waiting-confirmation\""
        );
    }
}
