//! `interface tasks`: background and blocking work, subprocesses, progress,
//! confirmation and lookups.
//!
//! The durable task runtime and the subprocess gate are not part of this
//! host build yet: every call is refused with a typed error that says so,
//! never a trap, so modules written against the full contract load and run
//! their other paths today.

use crate::bindings::{tasks, types, ui};
use crate::error::{HostError, SdkError};
use crate::sandbox::SandboxState;

fn unavailable(what: &str) -> HostError {
    HostError::Sdk(SdkError::Internal(format!(
        "{what} is not available in this host version"
    )))
}

impl tasks::Host for SandboxState {
    async fn run_background(
        &mut self,
        _task: String,
        _args_json: String,
        _options: tasks::BackgroundOptions,
    ) -> Result<String, HostError> {
        Err(unavailable("run-background"))
    }

    async fn run_blocking(
        &mut self,
        _function: String,
        _args_json: String,
    ) -> Result<String, HostError> {
        Err(unavailable("run-blocking"))
    }

    async fn run_subprocess(
        &mut self,
        _request: tasks::SubprocessRequest,
    ) -> Result<tasks::SubprocessOutput, HostError> {
        Err(unavailable("run-subprocess"))
    }

    async fn update_progress(
        &mut self,
        _task_id: String,
        _progress: f64,
        _label: Option<String>,
        _checkpoint_json: Option<String>,
    ) -> Result<(), HostError> {
        Err(unavailable("update-progress"))
    }

    async fn emit_progress(
        &mut self,
        _task_id: String,
        _progress: Option<f64>,
        _label: Option<String>,
    ) -> Result<(), HostError> {
        Err(unavailable("emit-progress"))
    }

    async fn request_confirmation(
        &mut self,
        _surface: ui::Surface,
        _timeout_ms: Option<u64>,
    ) -> Result<tasks::ConfirmationOutcome, HostError> {
        Err(unavailable("request-confirmation"))
    }

    async fn list_user_tasks(
        &mut self,
        _user_id: Option<String>,
        _organization_id: Option<String>,
        _limit: u32,
    ) -> Result<Vec<types::TaskSummary>, HostError> {
        Err(unavailable("list-user-tasks"))
    }

    async fn get_tasks_by_key(
        &mut self,
        _key: String,
    ) -> Result<Vec<types::TaskSummary>, HostError> {
        Err(unavailable("get-tasks-by-key"))
    }

    async fn get_tasks_by_key_prefix(
        &mut self,
        _prefix: String,
        _limit: u32,
    ) -> Result<Vec<types::TaskSummary>, HostError> {
        Err(unavailable("get-tasks-by-key-prefix"))
    }
}
