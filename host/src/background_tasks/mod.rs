//! `interface background-tasks`: the read model of tasks: filtered,
//! cursor-paginated lists and the full view of one task.
//!
//! Scoped like `tasks`: the caller's module and organization, and the
//! caller's own tasks unless the manifest grants `read = "organization"`; a
//! task that is not visible is `not-found`, exactly like a missing one.

use crate::bindings::background_tasks as bt;
use crate::error::{HostError, SdkError};
use crate::manifest::ReadScope;
use crate::sandbox::SandboxState;
use crate::tasks::runtime::store_err;
use crate::tasks::store::{Cursor, Scope, Status, TaskFilter, TaskRow};
use crate::tasks::{policy, summary};

fn status_of(s: crate::bindings::types::TaskStatus) -> Status {
    use crate::bindings::types::TaskStatus as T;
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

impl bt::Host for SandboxState {
    async fn list(
        &mut self,
        filter: bt::TaskFilter,
        cursor: Option<String>,
        limit: u32,
    ) -> Result<bt::TaskPage, HostError> {
        if !(1..=policy::MAX_PAGE_LIMIT).contains(&limit) {
            return Err(
                SdkError::invalid(format!("limit must be 1..={}", policy::MAX_PAGE_LIMIT)).into(),
            );
        }
        let cursor = cursor
            .map(|c| {
                c.parse::<Cursor>()
                    .map_err(|e| SdkError::invalid(e.to_string()))
            })
            .transpose()?;
        if let Some(p) = &filter.key_prefix {
            policy::key_prefix(p)?;
        }
        let me = self.identity();
        let user = filter
            .user_id
            .clone()
            .unwrap_or_else(|| me.user_id().to_string());
        let wide = self
            .core()
            .module(&me.module)
            .is_some_and(|m| m.manifest.policy.tasks.read == ReadScope::Organization);
        if user != me.user_id().as_str() && !wide {
            return Ok(bt::TaskPage {
                tasks: Vec::new(),
                next_cursor: None,
            });
        }
        let scope = Scope {
            module: me.module.clone(),
            organization_id: me.organization_id().to_string(),
            user_id: Some(user),
        };
        let store_filter = TaskFilter {
            statuses: filter.statuses.into_iter().map(status_of).collect(),
            task_name: filter.task_name,
            key_prefix: filter.key_prefix,
            created_after: filter.created_after.and_then(|t| i64::try_from(t).ok()),
            created_before: filter.created_before.and_then(|t| i64::try_from(t).ok()),
        };
        let page = self
            .core()
            .tasks
            .store
            .list(&scope, &store_filter, cursor.as_ref(), limit)
            .map_err(store_err)?;
        Ok(bt::TaskPage {
            tasks: page.tasks.iter().map(summary).collect(),
            next_cursor: page.next_cursor.map(|c| c.to_string()),
        })
    }

    async fn get(&mut self, id: String) -> Result<bt::TaskView, HostError> {
        let id = policy::task_id(&id)?;
        let me = self.identity();
        let wide = self
            .core()
            .module(&me.module)
            .is_some_and(|m| m.manifest.policy.tasks.read == ReadScope::Organization);
        // Args, results and checkpoints are the submitting user's: another
        // user's task is not-found unless the manifest grants the organization.
        let scope = Scope {
            module: me.module.clone(),
            organization_id: me.organization_id().to_string(),
            user_id: (!wide).then(|| me.user_id().to_string()),
        };
        let row = self
            .core()
            .tasks
            .store
            .get(&id, &scope)
            .map_err(store_err)?
            .ok_or(SdkError::NotFound)?;
        Ok(view(&row))
    }
}
