//! The task runtime as the host's own API (HTTP, CLI, embedders): watch
//! events, read, cancel, answer confirmations.
//!
//! The caller here is a [`Principal`], not a module. A principal sees the
//! tasks of its organization that it started; an admin sees all of its
//! organization's. A task of another organization is `not-found`, exactly
//! like a missing one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::events::{EventKind, TaskEvent};
use super::policy;
use super::runtime::{store_err, task_ref};
use super::store::{
    Answered, AuditFilter, AuditRecord, Cursor, Outcome, Scope, Status, StoredAnswer, TaskFilter,
    TaskPage, TaskRow,
};
use crate::error::SdkError;
use crate::host::Core;
use crate::identity::{Principal, Role};
use crate::store::now_ms;

/// What a user answers to a confirmation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationAnswer {
    /// The id of the button pressed.
    pub button: String,
    /// Picked choices: `{ "<choices name>": ["<choice id>", ...] }`.
    #[serde(default = "empty_object")]
    pub values: serde_json::Value,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Largest answer accepted.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// The task runtime, seen from outside the sandbox.
#[derive(Clone, Copy)]
pub struct Tasks<'a> {
    core: &'a Arc<Core>,
}

impl std::fmt::Debug for Tasks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").finish_non_exhaustive()
    }
}

impl<'a> Tasks<'a> {
    pub(crate) fn new(core: &'a Arc<Core>) -> Self {
        Tasks { core }
    }

    /// The subprocess audit trail as `by` may read it, newest first: an
    /// admin reads the whole organization's, anyone else only the records of
    /// their own calls. Whatever `filter` says, the organization (and, for
    /// a non-admin, the user) is the principal's.
    pub fn subprocess_audit(
        self,
        by: &Principal,
        mut filter: AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, SdkError> {
        filter.organization_id = Some(by.organization_id.as_str().to_owned());
        if by.role != Role::Admin {
            filter.user_id = Some(by.user_id.as_str().to_owned());
        }
        if let Some(before) = &filter.before {
            filter.before = Some(policy::task_id(before)?);
        }
        self.core
            .tasks
            .store
            .subprocess_audit(&filter, limit)
            .map_err(store_err)
    }

    /// Every task event of this host.
    pub fn subscribe(self) -> broadcast::Receiver<TaskEvent> {
        self.core.tasks.events.subscribe()
    }

    /// A task the principal may see: its own, or any of its organization's
    /// for an admin. Seeing a task is what reading, cancelling and answering
    /// it take; anything else is `not-found`, like a missing task.
    pub fn get(self, id: &str, by: &Principal) -> Result<TaskRow, SdkError> {
        let id = policy::task_id(id)?;
        let row = self
            .core
            .tasks
            .store
            .get_unscoped(&id)
            .map_err(store_err)?
            .ok_or(SdkError::NotFound)?;
        if row.organization_id != by.organization_id.as_str() {
            return Err(SdkError::NotFound);
        }
        let own = row.user_id == by.user_id.as_str();
        if !own && by.role != Role::Admin {
            return Err(SdkError::NotFound);
        }
        Ok(row)
    }

    /// Tasks of `module` the principal may see, newest first.
    pub fn list(
        self,
        by: &Principal,
        module: &str,
        filter: &TaskFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<TaskPage, SdkError> {
        let cursor = cursor
            .map(|c| {
                c.parse::<Cursor>()
                    .map_err(|e| SdkError::invalid(e.to_string()))
            })
            .transpose()?;
        let scope = Scope {
            module: module.to_owned(),
            organization_id: by.organization_id.to_string(),
            user_id: (by.role != Role::Admin).then(|| by.user_id.to_string()),
        };
        let limit = policy::limit(limit, 50, policy::MAX_PAGE_LIMIT);
        self.core
            .tasks
            .store
            .list(&scope, filter, cursor.as_ref(), limit)
            .map_err(store_err)
    }

    /// Cancels a task: a pending one never starts, a running one is stopped
    /// at its next epoch tick or host call. Refuses a finished task.
    pub async fn cancel(self, id: &str, by: &Principal) -> Result<(), SdkError> {
        let row = self.get(id, by)?;
        let applied = self
            .core
            .tasks
            .store
            .finish(
                &row.id,
                Outcome::Cancelled {
                    by: Some(by.user_id.to_string()),
                },
            )
            .await
            .map_err(store_err)?;
        if let Some(r) = self.core.tasks.running().get(&row.id) {
            r.cancel.store(true, Ordering::Relaxed);
            r.wake.notify_waiters();
        }
        if !applied {
            return Err(SdkError::invalid("the task has already finished"));
        }
        self.core.tasks.events.send(
            task_ref(&row),
            EventKind::Status {
                status: Status::Cancelled.as_str().to_owned(),
            },
        );
        Ok(())
    }

    /// Records the answer to the confirmation a task waits for, and resumes
    /// the task. Only the task's user or an admin of its organization may
    /// answer; the answer is stored with who and when before the task sees it.
    pub async fn answer_confirmation(
        self,
        id: &str,
        answer: &ConfirmationAnswer,
        by: &Principal,
    ) -> Result<(), SdkError> {
        let row = self.get(id, by)?;
        let answer_json =
            serde_json::to_string(answer).map_err(|e| SdkError::invalid(e.to_string()))?;
        if answer_json.len() > MAX_ANSWER_BYTES {
            return Err(SdkError::invalid(format!(
                "answer is over {MAX_ANSWER_BYTES} bytes"
            )));
        }
        if !answer.values.is_object() {
            return Err(SdkError::invalid("answer values must be a JSON object"));
        }
        if let Some(c) = &row.confirmation
            && let Ok(surface) = serde_json::from_str::<crate::ui::Surface>(&c.surface_json)
        {
            let buttons: Vec<&str> = surface
                .components
                .iter()
                .filter_map(|c| match c {
                    crate::ui::Component::Buttons { buttons } => {
                        Some(buttons.iter().map(|b| b.id.as_str()))
                    }
                    _ => None,
                })
                .flatten()
                .collect();
            if !buttons.is_empty() && !buttons.contains(&answer.button.as_str()) {
                return Err(SdkError::invalid(format!(
                    "the confirmation has no button `{}`",
                    answer.button
                )));
            }
        }
        let stored = StoredAnswer {
            answer_json,
            answered_by: by.user_id.to_string(),
            answered_at: now_ms(),
        };
        match self
            .core
            .tasks
            .store
            .answer_confirmation(&row.id, stored.clone())
            .await
            .map_err(store_err)?
        {
            Answered::Recorded => {}
            Answered::NotWaiting => {
                return Err(SdkError::invalid(
                    "the task is not waiting for a confirmation",
                ));
            }
            Answered::NotFound => return Err(SdkError::NotFound),
        }
        if let Some(tx) = self
            .core
            .tasks
            .running()
            .get_mut(&row.id)
            .and_then(|r| r.answer.take())
        {
            let _ = tx.send(stored);
        }
        Ok(())
    }

    /// Waits until the task is final and returns it (for embedders and tests).
    pub async fn wait(self, id: &str, by: &Principal) -> Result<TaskRow, SdkError> {
        let mut events = self.subscribe();
        loop {
            let row = self.get(id, by)?;
            if !row.status.is_active() {
                return Ok(row);
            }
            match tokio::time::timeout(std::time::Duration::from_millis(200), events.recv()).await {
                Ok(Err(broadcast::error::RecvError::Closed)) => {
                    return Err(SdkError::Internal("host stopped".into()));
                }
                _ => continue,
            }
        }
    }
}
