//! `interface tasks`: background and blocking work, subprocesses, progress,
//! confirmation and lookups.
//!
//! Thin: each function checks the call was not cancelled, converts its WIT
//! arguments, and asks the task service (or, for `run-subprocess`, the
//! subprocess service) with the identity of this call's sandbox. The
//! capability contexts are `None` where the call may not use them, and a
//! call then gets `permission-denied`.

use super::bindings::{HostError, convert_error, tasks, types, ui as wit_ui};
use crate::cancel::{CancelToken, Deadline};
use crate::error::SdkError;
use crate::identity::Identity;
use crate::sandbox::{Interrupt, SandboxState};
use crate::subprocess::{self, SubprocessCtx};
use crate::tasks::api::ConfirmationAnswer;
use crate::tasks::store::{Status, StoredAnswer, TaskRow};
use crate::tasks::{CallerStops, Confirmed, SubmitOptions, TaskScope, TasksCtx};
use crate::ui::Surface;

/// What `tasks` sees of a call.
pub struct TasksView<'a> {
    pub identity: &'a std::sync::Arc<Identity>,
    pub task: Option<&'a TaskScope>,
    pub cancel: Option<&'a CancelToken>,
    pub deadline: &'a Deadline,
    pub tasks: Option<&'a TasksCtx>,
    pub subprocess: Option<&'a SubprocessCtx>,
    /// Children of this call running now (see `SandboxState::stop_signal`).
    pub children: &'a std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl TasksView<'_> {
    /// The projection `tasks` is linked with.
    pub fn of(s: &mut SandboxState) -> TasksView<'_> {
        TasksView {
            identity: &s.identity,
            task: s.task.as_ref(),
            cancel: s.cancel.as_ref(),
            deadline: &s.deadline,
            tasks: s.tasks.as_ref(),
            subprocess: s.subprocess.as_ref(),
            children: &s.children,
        }
    }

    /// A cancelled call, or one past its deadline, stops at its next host
    /// call.
    fn check_cancelled(&self) -> Result<(), HostError> {
        if self.cancel.is_some_and(CancelToken::is_cancelled) {
            return Err(HostError::Trap(Interrupt::Cancelled.into()));
        }
        if self.deadline.passed() {
            return Err(HostError::Trap(Interrupt::Deadline.into()));
        }
        Ok(())
    }

    fn tasks(&self) -> Result<&TasksCtx, SdkError> {
        self.tasks.ok_or_else(not_now)
    }
}

/// What a call without the capability hears: only `describe` runs so.
pub(super) fn not_now() -> SdkError {
    SdkError::denied("tasks are not available while the module is being loaded")
}

impl types::Host for TasksView<'_> {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<types::Error> {
        convert_error(err)
    }
}

impl tasks::Host for TasksView<'_> {
    async fn run_background(
        &mut self,
        task: String,
        args_json: String,
        options: tasks::BackgroundOptions,
    ) -> Result<String, HostError> {
        self.check_cancelled()?;
        let ctx = self.tasks()?;
        let options = SubmitOptions {
            task_key: options.task_key,
            title: options.title,
            resumable: options.resumable,
        };
        Ok(ctx
            .service
            .submit(
                &ctx.module,
                self.identity,
                self.task.map(|t| t.task_id()),
                &task,
                &args_json,
                options,
            )
            .await?)
    }

    async fn run_blocking(
        &mut self,
        function: String,
        args_json: String,
    ) -> Result<String, HostError> {
        self.check_cancelled()?;
        let ctx = self.tasks()?;
        Ok(ctx
            .service
            .run_blocking(
                &ctx.module,
                self.identity.clone(),
                self.task.cloned(),
                CallerStops {
                    cancel: self.cancel.cloned(),
                    deadline: Some(self.deadline.clone()),
                },
                &function,
                &args_json,
            )
            .await?)
    }

    async fn run_subprocess(
        &mut self,
        request: tasks::SubprocessRequest,
    ) -> Result<tasks::SubprocessOutput, HostError> {
        self.check_cancelled()?;
        let Some(ctx) = self.subprocess else {
            return Err(SdkError::denied(
                "a module cannot start programs while it is being loaded",
            )
            .into());
        };
        let caller = subprocess::Caller {
            identity: self.identity,
            task_id: self.task.map(|t| t.task_id()),
            cancel: self.cancel,
            time_left: self.deadline.time_left(),
            data_full: ctx.data_full,
            learning: ctx.learning,
        };
        let request = subprocess::gate::Request {
            program: request.program,
            args: request.args,
            cwd: request.cwd,
            env: request.env,
            stdin: request.stdin,
            timeout_ms: request.timeout_ms,
            max_output_bytes: request.max_output_bytes,
        };
        let finished = {
            let _running = Running::enter(self.children);
            ctx.service.run(&ctx.module, caller, request).await?
        };
        self.check_cancelled()?;
        let status = match finished.status {
            subprocess::Status::Code(c) => tasks::ExitStatus::Code(c),
            subprocess::Status::Signal(s) => tasks::ExitStatus::Signal(s),
            subprocess::Status::TimedOut | subprocess::Status::Cancelled => {
                tasks::ExitStatus::TimedOut
            }
        };
        Ok(tasks::SubprocessOutput {
            status,
            stdout: finished.stdout,
            stderr: finished.stderr,
            stdout_truncated: finished.stdout_truncated,
            stderr_truncated: finished.stderr_truncated,
            duration_ms: u64::try_from(finished.duration.as_millis()).unwrap_or(u64::MAX),
        })
    }

    async fn update_progress(
        &mut self,
        task_id: String,
        progress: f64,
        label: Option<String>,
        checkpoint_json: Option<String>,
    ) -> Result<(), HostError> {
        self.check_cancelled()?;
        let ctx = self.tasks()?;
        Ok(ctx
            .service
            .update_progress(
                self.identity,
                self.task,
                &task_id,
                progress,
                label,
                checkpoint_json,
            )
            .await?)
    }

    async fn emit_progress(
        &mut self,
        task_id: String,
        progress: Option<f64>,
        label: Option<String>,
    ) -> Result<(), HostError> {
        self.check_cancelled()?;
        let ctx = self.tasks()?;
        Ok(ctx
            .service
            .emit_progress(self.identity, &task_id, progress, label)
            .await?)
    }

    async fn request_confirmation(
        &mut self,
        surface: wit_ui::Surface,
        timeout_ms: Option<u64>,
    ) -> Result<tasks::ConfirmationOutcome, HostError> {
        self.check_cancelled()?;
        let ctx = self.tasks.ok_or_else(not_now)?;
        let surface = Surface::from_wit(surface).map_err(|e| SdkError::invalid(e.to_string()))?;
        let confirmed = ctx
            .service
            .request_confirmation(
                &ctx.module.name,
                self.task,
                self.cancel,
                self.deadline,
                surface,
                timeout_ms,
            )
            .await;
        // The run ends here, its instance dropped; the answer runs the task
        // again, and this call then returns it. (Its lease is gone, so a
        // cancel seen now is no longer this run's to record.)
        if matches!(confirmed, Ok(Confirmed::Parked)) {
            return Err(HostError::Trap(Interrupt::Parked.into()));
        }
        self.check_cancelled()?;
        Ok(match confirmed? {
            Confirmed::Answered(a) => tasks::ConfirmationOutcome::Answered(wit_answer(&a)?),
            Confirmed::TimedOut => tasks::ConfirmationOutcome::TimedOut,
            Confirmed::Parked => return Err(HostError::Trap(Interrupt::Parked.into())),
        })
    }

    async fn list_user_tasks(
        &mut self,
        user_id: Option<String>,
        organization_id: Option<String>,
        limit: u32,
    ) -> Result<Vec<types::TaskSummary>, HostError> {
        let ctx = self.tasks()?;
        let rows = ctx
            .service
            .user_tasks(&ctx.module, self.identity, user_id, organization_id, limit)
            .await?;
        Ok(rows.iter().map(summary).collect())
    }

    async fn get_tasks_by_key(
        &mut self,
        key: String,
    ) -> Result<Vec<types::TaskSummary>, HostError> {
        let ctx = self.tasks()?;
        let rows = ctx.service.by_key(&ctx.module, self.identity, &key).await?;
        Ok(rows.iter().map(summary).collect())
    }

    async fn get_tasks_by_key_prefix(
        &mut self,
        prefix: String,
        limit: u32,
    ) -> Result<Vec<types::TaskSummary>, HostError> {
        let ctx = self.tasks()?;
        let rows = ctx
            .service
            .by_key_prefix(&ctx.module, self.identity, &prefix, limit)
            .await?;
        Ok(rows.iter().map(summary).collect())
    }
}

/// The WIT summary of a stored task.
pub(super) fn summary(row: &TaskRow) -> types::TaskSummary {
    types::TaskSummary {
        id: row.id.clone(),
        module: row.module.clone(),
        task_name: row.task_name.clone(),
        task_key: row.task_key.clone(),
        title: row.title.clone(),
        status: wit_status(row.status),
        progress: row.progress,
        label: row.label.clone(),
        user_id: row.user_id.clone(),
        organization_id: row.organization_id.clone(),
        created_at: u64::try_from(row.created_at).unwrap_or(0),
        updated_at: u64::try_from(row.updated_at).unwrap_or(0),
    }
}

pub(super) fn wit_status(s: Status) -> types::TaskStatus {
    match s {
        Status::Pending => types::TaskStatus::Pending,
        Status::Running => types::TaskStatus::Running,
        Status::WaitingConfirmation => types::TaskStatus::WaitingConfirmation,
        Status::Completed => types::TaskStatus::Completed,
        Status::Failed => types::TaskStatus::Failed,
        Status::Cancelled => types::TaskStatus::Cancelled,
        Status::Interrupted => types::TaskStatus::Interrupted,
    }
}

fn wit_answer(a: &StoredAnswer) -> Result<wit_ui::Answer, SdkError> {
    let parsed: ConfirmationAnswer = serde_json::from_str(&a.answer_json)
        .map_err(|e| SdkError::Internal(format!("stored answer is corrupt: {e}")))?;
    Ok(wit_ui::Answer {
        button: parsed.button,
        values: parsed.values.to_string(),
        answered_by: a.answered_by.clone(),
        answered_at: u64::try_from(a.answered_at).unwrap_or(0),
    })
}

/// Counts a call's child as running until dropped (the call may be dropped
/// mid-way: a stop from outside).
struct Running(std::sync::Arc<std::sync::atomic::AtomicU32>);

impl Running {
    fn enter(children: &std::sync::Arc<std::sync::atomic::AtomicU32>) -> Self {
        children.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Running(children.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}
