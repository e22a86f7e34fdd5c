//! Running tasks on this host: recovery at start, the pump that starts what
//! the scheduler picks, and one run from `pending` to its final state.
//!
//! Tasks are data in the store; this is what runs them here. Every state
//! change goes through the store's compare-and-set transitions, so racing
//! cancel/complete/progress never lose or double a final state.

use std::sync::Arc;
use std::time::Duration;

use super::policy;
use super::service::status_event;
use super::service::{
    MAX_FAILURE_MESSAGE_BYTES, Returned, Running, TaskRun, TaskService, identity_of, task_ref,
};
use super::store::{Outcome, Recovery, Status, TaskStoreError};
use crate::cancel::CancelToken;
use crate::db::now_ms;
use crate::error::CallError;
use crate::text::truncate;

/// How long a task that found no free instance slot waits before it is
/// queued again.
pub const BUSY_RETRY: Duration = Duration::from_millis(100);

impl TaskService {
    /// Recovers what a previous run left and queues every pending task.
    /// Call once, after the modules are configured.
    pub async fn start(self: &Arc<Self>) -> Result<Recovery, TaskStoreError> {
        let recovery = self.store.recover(now_ms()).await?;
        if recovery.interrupted > 0 || !recovery.resumed.is_empty() {
            tracing::info!(
                interrupted = recovery.interrupted,
                resumed = recovery.resumed.len(),
                "recovered tasks of the previous run"
            );
        }
        for row in self.store.pending(u32::MAX)? {
            self.scheduler.enqueue(&row.module, row.id);
        }
        self.pump();
        Ok(recovery)
    }

    pub(super) fn enqueue(self: &Arc<Self>, module: &str, id: String) {
        self.scheduler.enqueue(module, id);
        self.pump();
    }

    /// Starts what the scheduler lets start now.
    pub(super) fn pump(self: &Arc<Self>) {
        while let Some((module, id)) = self.scheduler.next() {
            let service = self.clone();
            tokio::spawn(async move {
                service.run_one(&id).await;
                service.scheduler.done(&module);
                service.pump();
            });
        }
    }

    /// One run: `start` (pending → running), `run-task` through the runner,
    /// then `finish`.
    async fn run_one(self: &Arc<Self>, id: &str) {
        // Registered before `start`, so a cancel racing with the start finds
        // the token to cancel.
        let cancel = CancelToken::new();
        {
            let mut running = self.running();
            if running.contains_key(id) {
                return; // queued twice; the run under way is the one
            }
            running.insert(
                id.to_owned(),
                Running {
                    cancel: cancel.clone(),
                    answer: None,
                },
            );
        }
        let row = match self.store.start(id).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                // Cancelled (or taken) before it started.
                self.running().remove(id);
                return;
            }
            Err(e) => {
                self.running().remove(id);
                tracing::error!(task_id = id, error = %e, "cannot start task");
                return;
            }
        };
        let tref = task_ref(&row);
        self.events
            .send(tref.clone(), status_event(Status::Running));
        let outcome = match identity_of(&row) {
            Err(message) => Some(Outcome::Failed {
                kind: "internal".into(),
                message,
            }),
            Ok(identity) => {
                let run = TaskRun {
                    row: row.clone(),
                    identity: Arc::new(identity),
                    cancel,
                };
                outcome_of(self.runner.clone().run_task(self.clone(), run).await)
            }
        };
        let Some(outcome) = outcome else {
            // No instance slot: undo the start and try again later rather
            // than fail a task for the host's own load.
            self.running().remove(id);
            match self.store.release(id).await {
                Ok(true) => {
                    self.events.send(tref, status_event(Status::Pending));
                    let (service, module, id) = (self.clone(), row.module, id.to_owned());
                    tokio::spawn(async move {
                        tokio::time::sleep(BUSY_RETRY).await;
                        service.enqueue(&module, id);
                    });
                }
                Ok(false) => {}
                Err(e) => tracing::error!(task_id = id, error = %e, "cannot requeue a task"),
            }
            return;
        };
        let final_status = outcome.status();
        let applied = match self.store.finish(id, outcome).await {
            Ok(applied) => applied,
            Err(e) => {
                tracing::error!(task_id = id, error = %e, "cannot record the end of a task");
                false
            }
        };
        self.running().remove(id);
        self.events.forget(id);
        if applied {
            self.events.send(tref, status_event(final_status));
        }
    }
}

/// What a run's result means for its task; `None` when it never started for
/// want of an instance slot (the task is run again later).
fn outcome_of(returned: Returned) -> Option<Outcome> {
    Some(match returned {
        Ok(Ok(json)) => match policy::json_text("task result", &json, policy::MAX_RESULT_BYTES) {
            Ok(_) => Outcome::Completed { result_json: json },
            Err(e) => Outcome::Failed {
                kind: "invalid-result".into(),
                message: e.to_string(),
            },
        },
        Ok(Err(e)) => Outcome::Failed {
            kind: "error".into(),
            message: truncate(&e.to_string(), MAX_FAILURE_MESSAGE_BYTES).to_owned(),
        },
        Err(CallError::Busy(_)) => return None,
        Err(CallError::Cancelled { .. }) => Outcome::Cancelled { by: None },
        Err(CallError::Deadline { deadline_ms, .. }) => Outcome::Failed {
            kind: "deadline".into(),
            message: format!("ran past its {deadline_ms} ms deadline"),
        },
        Err(CallError::MemoryLimit { limit_bytes, .. }) => Outcome::Failed {
            kind: "memory".into(),
            message: format!("exceeded its memory limit of {limit_bytes} bytes"),
        },
        Err(e @ CallError::Internal(_)) => Outcome::Failed {
            kind: "internal".into(),
            message: e.to_string(),
        },
        Err(other) => Outcome::Failed {
            kind: "trap".into(),
            message: other.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::SdkError;

    #[test]
    fn a_run_without_an_instance_slot_leaves_the_task_to_run_later() {
        assert_eq!(outcome_of(Err(CallError::Busy("full".into()))), None);
    }

    #[test]
    fn a_guest_error_fails_the_task_with_its_message_bounded() {
        let long = "x".repeat(2 * MAX_FAILURE_MESSAGE_BYTES);
        let Some(Outcome::Failed { kind, message }) = outcome_of(Ok(Err(SdkError::invalid(long))))
        else {
            panic!("not failed")
        };
        assert_eq!(kind, "error");
        assert_eq!(message.len(), MAX_FAILURE_MESSAGE_BYTES);
    }

    #[test]
    fn a_result_that_is_not_json_fails_the_task() {
        assert!(matches!(
            outcome_of(Ok(Ok("{".into()))),
            Some(Outcome::Failed { kind, .. }) if kind == "invalid-result"
        ));
    }
}
