//! `interface tasks`: background and blocking work, progress, confirmation
//! and lookups, with the caller's sandbox identity enforced on every call.
//!
//! Identity comes from the sandbox, never from arguments: a task id a guest
//! passes is looked up inside the caller's module and organization, so
//! another module's task is indistinguishable from a missing one. The checks
//! on values live in [`policy`]; the runtime in [`runtime`]; persistence in
//! [`store`]; the subprocess gate and its confined children in
//! [`subprocess`].

pub mod api;
pub mod events;
pub mod policy;
pub mod runtime;
pub mod store;
pub mod subprocess;

use std::time::Instant;

use tokio::sync::oneshot;

use crate::bindings::{tasks, types, ui as wit_ui};
use crate::error::{HostError, SdkError};
use crate::manifest::ReadScope;
use crate::sandbox::{Interrupt, SandboxState};
use crate::store::now_ms;
use events::EventKind;
use runtime::{SubmitOptions, confirmation_timeout, store_err, task_ref};
use store::{Asked, Owner, ProgressResult, ProgressUpdate, Scope, Status, StoredAnswer, TaskRow};

/// The WIT summary of a stored task.
pub(crate) fn summary(row: &TaskRow) -> types::TaskSummary {
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

pub(crate) fn wit_status(s: Status) -> types::TaskStatus {
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

pub(crate) fn wit_answer(a: &StoredAnswer) -> Result<wit_ui::Answer, SdkError> {
    let parsed: api::ConfirmationAnswer = serde_json::from_str(&a.answer_json)
        .map_err(|e| SdkError::Internal(format!("stored answer is corrupt: {e}")))?;
    Ok(wit_ui::Answer {
        button: parsed.button,
        values: parsed.values.to_string(),
        answered_by: a.answered_by.clone(),
        answered_at: u64::try_from(a.answered_at).unwrap_or(0),
    })
}

impl SandboxState {
    /// A cancelled task stops at its next host call.
    fn check_cancelled(&self) -> Result<(), HostError> {
        if self.cancelled() {
            return Err(HostError::Trap(Interrupt::Cancelled.into()));
        }
        Ok(())
    }

    /// The caller's module and organization: what a task id is checked against.
    fn owner(&self) -> Owner {
        let id = self.identity();
        Owner {
            module: id.module.clone(),
            organization_id: id.organization_id().to_string(),
        }
    }

    fn org_scope(&self) -> Scope {
        let id = self.identity();
        Scope {
            module: id.module.clone(),
            organization_id: id.organization_id().to_string(),
            user_id: None,
        }
    }

    fn read_scope(&self) -> ReadScope {
        self.core()
            .module(&self.identity().module)
            .map(|m| m.manifest.policy.tasks.read)
            .unwrap_or(ReadScope::Own)
    }
}

impl tasks::Host for SandboxState {
    async fn run_background(
        &mut self,
        task: String,
        args_json: String,
        options: tasks::BackgroundOptions,
    ) -> Result<String, HostError> {
        self.check_cancelled()?;
        let core = self.core().clone();
        let options = SubmitOptions {
            task_key: options.task_key,
            title: options.title,
            resumable: options.resumable,
        };
        Ok(core
            .submit_task(self.identity(), &task, &args_json, options)
            .await?)
    }

    async fn run_blocking(
        &mut self,
        function: String,
        args_json: String,
    ) -> Result<String, HostError> {
        self.check_cancelled()?;
        let core = self.core().clone();
        let identity = self.identity_arc().clone();
        let task = self.task().cloned();
        let cancel = self.cancel_flag().cloned();
        Ok(core
            .run_blocking(identity, task, cancel, &function, &args_json)
            .await?)
    }

    async fn run_subprocess(
        &mut self,
        request: tasks::SubprocessRequest,
    ) -> Result<tasks::SubprocessOutput, HostError> {
        self.check_cancelled()?;
        let core = self.core().clone();
        let identity = self.identity_arc().clone();
        let task_id = self.task().map(|t| t.task_id.clone());
        let wake = task_id
            .as_ref()
            .and_then(|id| core.tasks.running().get(id).map(|r| r.wake.clone()));
        let caller = subprocess::Caller {
            identity: &identity,
            task_id: task_id.as_deref(),
            cancel: self.cancel_flag().cloned(),
            wake,
            time_left: self.time_left(),
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
        let finished = core.run_subprocess(caller, request).await?;
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
        let id = policy::task_id(&task_id)?;
        let progress = policy::progress(progress)?;
        if let Some(l) = &label {
            policy::short_text("label", l, policy::MAX_LABEL_BYTES)?;
        }
        if let Some(c) = &checkpoint_json {
            policy::json_text("checkpoint", c, policy::MAX_CHECKPOINT_BYTES)?;
        }
        let core = self.core().clone();
        let update = ProgressUpdate {
            progress,
            label: label.clone(),
            checkpoint_json,
        };
        match core
            .tasks
            .store
            .update_progress(&id, &self.owner(), update)
            .await
            .map_err(store_err)?
        {
            ProgressResult::Updated(row) => {
                core.tasks.events.send(
                    task_ref(&row),
                    EventKind::Progress {
                        progress,
                        label,
                        persisted: true,
                    },
                );
                Ok(())
            }
            ProgressResult::NotFound => Err(SdkError::NotFound.into()),
            ProgressResult::NotActive => {
                Err(SdkError::invalid("the task is no longer active").into())
            }
        }
    }

    async fn emit_progress(
        &mut self,
        task_id: String,
        progress: Option<f64>,
        label: Option<String>,
    ) -> Result<(), HostError> {
        self.check_cancelled()?;
        let id = policy::task_id(&task_id)?;
        let progress = progress.map(policy::progress).transpose()?;
        if let Some(l) = &label {
            policy::short_text("label", l, policy::MAX_LABEL_BYTES)?;
        }
        let core = self.core().clone();
        let row = core
            .tasks
            .store
            .get(&id, &self.org_scope())
            .map_err(store_err)?
            .ok_or(SdkError::NotFound)?;
        if !row.status.is_active() {
            return Err(SdkError::invalid("the task is no longer active").into());
        }
        core.tasks
            .events
            .emit_progress(task_ref(&row), progress.unwrap_or(row.progress), label);
        Ok(())
    }

    async fn request_confirmation(
        &mut self,
        surface: wit_ui::Surface,
        timeout_ms: Option<u64>,
    ) -> Result<tasks::ConfirmationOutcome, HostError> {
        self.check_cancelled()?;
        let Some(task_id) = self.task().filter(|t| t.is_run).map(|t| t.task_id.clone()) else {
            return Err(SdkError::invalid(
                "request-confirmation is only available in a background task's own run",
            )
            .into());
        };
        let timeout = confirmation_timeout(timeout_ms)?;
        let surface =
            crate::ui::Surface::from_wit(surface).map_err(|e| SdkError::invalid(e.to_string()))?;
        let surface_json =
            serde_json::to_string(&surface).map_err(|e| SdkError::Internal(e.to_string()))?;
        let core = self.core().clone();
        let store = &core.tasks.store;
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        let wake = {
            let running = core.tasks.running();
            let r = running
                .get(&task_id)
                .ok_or_else(|| SdkError::invalid("the task is not running on this host"))?;
            r.wake.clone()
        };
        // Armed before asking, so a cancel between the ask and the wait is
        // not lost.
        let cancelled = wake.notified();
        tokio::pin!(cancelled);
        cancelled.as_mut().enable();
        // An answer kept from before a restart counts only for the same
        // question; a stale one is discarded and the new question asked.
        let mut rx = None;
        for _ in 0..2 {
            // A fresh channel per question, so an answer to a stale one can
            // never be taken for this one.
            let (tx, fresh) = oneshot::channel();
            if let Some(r) = core.tasks.running().get_mut(&task_id) {
                r.answer = Some(tx);
            }
            rx = Some(fresh);
            match store
                .ask_confirmation(&task_id, &surface_json, now, Some(expires))
                .await
                .map_err(store_err)?
            {
                Asked::AlreadyAnswered(answer) => {
                    let same = store
                        .get_unscoped(&task_id)
                        .map_err(store_err)?
                        .and_then(|r| r.confirmation)
                        .is_some_and(|c| c.surface_json == surface_json);
                    store.consume_answer(&task_id).await.map_err(store_err)?;
                    if same {
                        return Ok(tasks::ConfirmationOutcome::Answered(wit_answer(&answer)?));
                    }
                }
                Asked::NotActive => {
                    self.check_cancelled()?;
                    return Err(SdkError::invalid("the task is no longer active").into());
                }
                Asked::Waiting => break,
            }
        }
        let row = store.get_unscoped(&task_id).map_err(store_err)?;
        if let Some(row) = &row {
            core.tasks.events.send(
                task_ref(row),
                EventKind::Status {
                    status: Status::WaitingConfirmation.as_str().to_owned(),
                },
            );
            core.tasks
                .events
                .send(task_ref(row), EventKind::Confirmation { surface });
        }
        let paused = Instant::now();
        let _slot = core.park_slot(&self.identity().module);
        let outcome = if self.cancelled() {
            None
        } else {
            let rx = rx.ok_or_else(|| SdkError::Internal("no confirmation channel".into()))?;
            tokio::select! {
                answer = rx => answer.ok(),
                () = tokio::time::sleep(timeout) => None,
                () = &mut cancelled => None,
            }
        };
        self.extend_deadline(paused.elapsed());
        self.check_cancelled()?;
        // One write decides: the answer recorded by then (through this host,
        // or another host of a shared store) or none; later answers are
        // refused, so the user is never told "answered" for a timed-out wait.
        let answer = store
            .close_confirmation(&task_id, now_ms())
            .await
            .map_err(store_err)?
            .or(outcome);
        if let Some(row) = &row {
            core.tasks.events.send(
                task_ref(row),
                EventKind::Status {
                    status: Status::Running.as_str().to_owned(),
                },
            );
        }
        match answer {
            Some(a) => Ok(tasks::ConfirmationOutcome::Answered(wit_answer(&a)?)),
            None => Ok(tasks::ConfirmationOutcome::TimedOut),
        }
    }

    async fn list_user_tasks(
        &mut self,
        user_id: Option<String>,
        organization_id: Option<String>,
        limit: u32,
    ) -> Result<Vec<types::TaskSummary>, HostError> {
        let me = self.identity();
        let org = organization_id.unwrap_or_else(|| me.organization_id().to_string());
        let user = user_id.unwrap_or_else(|| me.user_id().to_string());
        // Another organization is never visible; another user only with a grant.
        if org != me.organization_id().as_str()
            || (user != me.user_id().as_str() && self.read_scope() == ReadScope::Own)
        {
            return Ok(Vec::new());
        }
        let scope = Scope {
            module: me.module.clone(),
            organization_id: org,
            user_id: Some(user),
        };
        let limit = policy::limit(limit, 50, policy::MAX_LOOKUP_LIMIT);
        let rows = self
            .core()
            .tasks
            .store
            .by_user(&scope, limit)
            .map_err(store_err)?;
        Ok(rows.iter().map(summary).collect())
    }

    async fn get_tasks_by_key(
        &mut self,
        key: String,
    ) -> Result<Vec<types::TaskSummary>, HostError> {
        policy::task_key(&key)?;
        let rows = self
            .core()
            .tasks
            .store
            .by_key(&self.org_scope(), &key, policy::MAX_LOOKUP_LIMIT)
            .map_err(store_err)?;
        Ok(rows.iter().map(summary).collect())
    }

    async fn get_tasks_by_key_prefix(
        &mut self,
        prefix: String,
        limit: u32,
    ) -> Result<Vec<types::TaskSummary>, HostError> {
        policy::key_prefix(&prefix)?;
        let limit = policy::limit(limit, 50, policy::MAX_LOOKUP_LIMIT);
        let rows = self
            .core()
            .tasks
            .store
            .by_key_prefix(&self.org_scope(), &prefix, limit)
            .map_err(store_err)?;
        Ok(rows.iter().map(summary).collect())
    }
}
