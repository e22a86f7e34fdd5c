//! The task runtime as the host's own API (HTTP, CLI, embedders): watch
//! events, read, cancel, answer confirmations.
//!
//! The caller here is a [`Principal`], not a module. A principal sees the
//! tasks of its organization that it started; an admin sees all of its
//! organization's. A task of another organization is `not-found`, exactly
//! like a missing one.

use std::sync::Arc;

pub use super::confirm::{ConfirmationAnswer, MAX_ANSWER_BYTES};
use super::policy;
use super::service::status_event;
use super::service::{TaskService, parse_cursor, store_err, task_ref};
use super::store::{Announcement, OrgScope, Outcome, Status, TaskFilter, TaskPage, TaskRow};
use crate::audit::{AuditEntry, ConfirmationDetail, Detail};
use crate::error::SdkError;
use crate::events::Subscription;
use crate::identity::{Identity, Principal, RequestMeta, Role};

/// Rows a page holds when the caller asks for 0.
pub const DEFAULT_PAGE_LIMIT: u32 = 50;

/// The task runtime, seen from outside the sandbox.
#[derive(Clone, Copy)]
pub struct Tasks<'a> {
    service: &'a Arc<TaskService>,
}

impl std::fmt::Debug for Tasks<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks").finish_non_exhaustive()
    }
}

impl<'a> Tasks<'a> {
    pub fn new(service: &'a Arc<TaskService>) -> Self {
        Tasks { service }
    }

    /// Every event of this host from now on (filter by subject).
    pub fn subscribe(self) -> Subscription {
        self.service.events.subscribe()
    }

    /// A task the principal may see: its own, or any of its organization's
    /// for an admin. Seeing a task is what reading, cancelling and answering
    /// it take; anything else is `not-found`, like a missing task.
    pub async fn get(self, id: &str, by: &Principal) -> Result<TaskRow, SdkError> {
        let id = policy::task_id(id)?;
        let row = self
            .service
            .store
            .get_unscoped(&id)
            .await
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

    /// Tasks of `module` the principal may see, newest first: its own, or
    /// its organization's for an admin.
    pub async fn list(
        self,
        by: &Principal,
        module: &str,
        filter: &TaskFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<TaskPage, SdkError> {
        let whole = by.role == Role::Admin;
        self.list_across(by, Some(module), whole, filter, cursor, limit)
            .await
    }

    /// The principal's tasks across modules (or of `module`), newest first;
    /// with `organization`, every user's of its organization, which only an
    /// admin may ask for.
    pub async fn list_across(
        self,
        by: &Principal,
        module: Option<&str>,
        organization: bool,
        filter: &TaskFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<TaskPage, SdkError> {
        if organization && by.role != Role::Admin {
            return Err(SdkError::denied(
                "only an admin of the organization may list the organization's tasks",
            ));
        }
        let cursor = parse_cursor(cursor)?;
        let scope = OrgScope {
            organization_id: by.organization_id.to_string(),
            user_id: (!organization).then(|| by.user_id.to_string()),
            module: module.map(str::to_owned),
        };
        let limit = policy::limit(limit, DEFAULT_PAGE_LIMIT, policy::MAX_PAGE_LIMIT);
        self.service
            .store
            .list_org(&scope, filter, cursor.as_ref(), limit)
            .await
            .map_err(store_err)
    }

    /// Cancels a task: a pending one never starts, a running one is stopped
    /// at its next epoch tick or host call. Refuses a finished task.
    pub async fn cancel(self, id: &str, by: &Principal) -> Result<(), SdkError> {
        let row = self.get(id, by).await?;
        // Unfenced: a user's cancel stops the task whichever host runs it
        // (that host's next renewal finds it lost, if no event tells it
        // sooner).
        let applied = self
            .service
            .store
            .finish(
                &row.id,
                None,
                Outcome::Cancelled {
                    by: Some(by.user_id.to_string()),
                },
            )
            .await
            .map_err(store_err)?;
        let here = match self.service.running().get(&row.id) {
            Some(r) => {
                r.cancel.cancel();
                true
            }
            None => false,
        };
        if !applied {
            return Err(SdkError::invalid("the task has already finished"));
        }
        if !here {
            self.service.announce(Announcement::Cancelled {
                task_id: row.id.clone(),
            });
        }
        self.service
            .publish(task_ref(&row), status_event(Status::Cancelled));
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
        let row = self.get(id, by).await?;
        let identity = Identity::new(row.module.clone(), by.clone(), RequestMeta::fresh());
        let entry = AuditEntry::new(
            &identity,
            Some(&row.id),
            row.task_name.clone(),
            Detail::Confirmation(ConfirmationDetail {
                answer: crate::text::truncate(&answer.button, policy::MAX_TASK_KEY_BYTES)
                    .to_owned(),
            }),
        );
        let answered = self.service.answer(&row, answer, by).await;
        match &answered {
            Ok(()) => self.service.audit.record_or_log(entry).await,
            Err(e) => self.service.audit_refusal(entry, e).await,
        }
        answered
    }

    /// Waits until the task is final and returns it (for embedders and tests).
    pub async fn wait(self, id: &str, by: &Principal) -> Result<TaskRow, SdkError> {
        let mut events = self.subscribe();
        loop {
            let row = self.get(id, by).await?;
            if !row.status.is_active() {
                return Ok(row);
            }
            // Missed events only mean reading the row again.
            match tokio::time::timeout(std::time::Duration::from_millis(200), events.recv()).await {
                Ok(Ok(None)) => return Err(SdkError::Internal("host stopped".into())),
                _ => continue,
            }
        }
    }
}
