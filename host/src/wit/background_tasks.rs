//! `interface background-tasks`: the read model of tasks: filtered,
//! cursor-paginated lists and the full view of one task.
//!
//! Scoped like `tasks`: the caller's module and organization, and the
//! caller's own tasks unless the manifest grants `read = "organization"`; a
//! task that is not visible is `not-found`, exactly like a missing one.

use super::bindings::{HostError, background_tasks as bt, convert_error, types};
use super::tasks::{not_now, summary};
use crate::identity::Identity;
use crate::sandbox::SandboxState;
use crate::tasks::TasksCtx;
use crate::tasks::store::{Status, TaskFilter, TaskRow};

/// What `background-tasks` sees of a call.
pub struct ReadView<'a> {
    pub identity: &'a Identity,
    pub tasks: Option<&'a TasksCtx>,
}

impl ReadView<'_> {
    /// The projection `background-tasks` is linked with.
    pub fn of(s: &mut SandboxState) -> ReadView<'_> {
        ReadView {
            identity: &s.identity,
            tasks: s.tasks.as_ref(),
        }
    }
}

impl types::Host for ReadView<'_> {
    fn convert_error(&mut self, err: HostError) -> wasmtime::Result<types::Error> {
        convert_error(err)
    }
}

fn status_of(s: types::TaskStatus) -> Status {
    use types::TaskStatus as T;
    match s {
        T::Pending => Status::Pending,
        T::Running => Status::Running,
        T::WaitingConfirmation => Status::WaitingConfirmation,
        T::Completed => Status::Completed,
        T::Failed => Status::Failed,
        T::Cancelled => Status::Cancelled,
        T::Interrupted => Status::Interrupted,
    }
}

/// The WIT view of a stored task.
pub(crate) fn view(row: &TaskRow) -> bt::TaskView {
    let confirmation = row.confirmation.as_ref().and_then(|c| {
        if c.answer.is_some() || row.status != Status::WaitingConfirmation {
            return None;
        }
        let surface: crate::ui::Surface = serde_json::from_str(&c.surface_json).ok()?;
        Some(bt::PendingConfirmation {
            surface: surface.to_wit(),
            asked_at: u64::try_from(c.asked_at).unwrap_or(0),
            expires_at: c.expires_at.and_then(|e| u64::try_from(e).ok()),
        })
    });
    bt::TaskView {
        summary: summary(row),
        args: row.args_json.clone(),
        resumable: row.resumable,
        checkpoint: row.checkpoint_json.clone(),
        result: row.result_json.clone(),
        failure: row.failure_kind.as_ref().map(|kind| bt::TaskFailure {
            kind: kind.clone(),
            message: row.failure_message.clone().unwrap_or_default(),
        }),
        started_at: row.started_at.and_then(|t| u64::try_from(t).ok()),
        finished_at: row.finished_at.and_then(|t| u64::try_from(t).ok()),
        attempts: row.attempts,
        confirmation,
    }
}

impl bt::Host for ReadView<'_> {
    async fn list(
        &mut self,
        filter: bt::TaskFilter,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<bt::TaskPage, HostError> {
        let ctx = self.tasks.ok_or_else(not_now)?;
        let store_filter = TaskFilter {
            statuses: filter.statuses.into_iter().map(status_of).collect(),
            // Empty fields do not filter, as the contract says.
            task_name: filter.task_name.filter(|n| !n.is_empty()),
            key_prefix: filter.key_prefix.filter(|p| !p.is_empty()),
            created_after: filter.created_after.and_then(|t| i64::try_from(t).ok()),
            created_before: filter.created_before.and_then(|t| i64::try_from(t).ok()),
        };
        let page = ctx
            .service
            .read_list(
                &ctx.module,
                self.identity,
                filter.user_id.filter(|u| !u.is_empty()),
                &store_filter,
                cursor.as_deref(),
                limit,
            )
            .await?;
        Ok(bt::TaskPage {
            tasks: page.tasks.iter().map(summary).collect(),
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        })
    }

    async fn get(&mut self, id: String) -> Result<bt::TaskView, HostError> {
        let ctx = self.tasks.ok_or_else(not_now)?;
        let row = ctx
            .service
            .read_get(&ctx.module, self.identity, &id)
            .await?;
        Ok(view(&row))
    }
}
