//! `request-confirmation`: a running task pauses in `waiting-confirmation`
//! until its user answers through the host's API, the wait times out, or the
//! task is cancelled.
//!
//! The question and the answer are rows in the store, so an answer given
//! through another host of a shared store counts, and a resumable task that
//! asks again after a restart gets the answer it was given before. One write
//! closes a wait: an answer and a timeout racing have one outcome.
//!
//! A wait costs a row, not an instance: a resumable task that is still
//! waiting after [`TaskOptions::waiting_grace`](super::TaskOptions) (or at
//! once, when the waits here already hold their share of instances) is
//! *parked*: the store keeps its question without a lease, its run ends and
//! its instance is dropped. The answer, or the question's expiry, makes it
//! pending again, and its next run — from its checkpoint, as after a
//! restart — gets that outcome from the same `request-confirmation`. A task
//! that is not resumable keeps its instance while it waits, within the cap.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::policy;
use super::scheduler::Scheduler;
use super::service::status_event;
use super::service::{TaskScope, TaskService, store_err, task_ref};
use super::store::{Announcement, Answered, Asked, Lease, Status, StoredAnswer, TaskStoreError};
use crate::cancel::{CancelToken, Deadline};
use crate::db::now_ms;
use crate::error::SdkError;
use crate::events::EventKind;
use crate::identity::Principal;
use crate::ui::Surface;

/// How a confirmation ended for the task that asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Confirmed {
    Answered(StoredAnswer),
    TimedOut,
    /// The task was parked: its run ends now, and the answer runs it again.
    Parked,
}

/// What a user answers to a confirmation.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfirmationAnswer {
    /// The id of the button pressed.
    pub button: String,
    /// Picked choices: `{ "<choices name>": ["<choice id>", ...] }`.
    #[serde(default = "empty_object")]
    pub values: serde_json::Value,
    /// When given, the `asked_at` of the question being answered: an answer
    /// to an older question (the task asked again since) is refused.
    #[serde(default, skip_serializing)]
    pub asked_at: Option<i64>,
}

impl ConfirmationAnswer {
    /// Pressing `button`, with nothing picked.
    pub fn press(button: impl Into<String>) -> Self {
        ConfirmationAnswer {
            button: button.into(),
            values: empty_object(),
            asked_at: None,
        }
    }
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(Default::default())
}

/// Largest answer accepted.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024;

/// The longest pause between tries to park a wait that the store did not
/// park (the first is under a second, each next one twice as long).
const PARK_RETRY_MAX: Duration = Duration::from_secs(60);

/// A running slot given up for a wait; taken back when dropped, also when
/// the wait is abandoned (the guest's store dropped).
struct SlotLent<'a> {
    scheduler: &'a Scheduler,
    module: &'a str,
}

impl<'a> SlotLent<'a> {
    fn new(scheduler: &'a Scheduler, module: &'a str) -> Self {
        scheduler.park(module);
        SlotLent { scheduler, module }
    }
}

impl Drop for SlotLent<'_> {
    fn drop(&mut self) {
        self.scheduler.unpark(self.module);
    }
}

impl TaskService {
    /// Asks the task's user to confirm `surface` and waits for the answer.
    /// Only a task's own run may ask; while it waits, its running slot is
    /// free for other work and its deadline does not run. When `cancel` is
    /// cancelled, the wait ends with an error the caller turns into a stop.
    pub async fn request_confirmation(
        self: &Arc<Self>,
        module: &str,
        task: Option<&TaskScope>,
        cancel: Option<&CancelToken>,
        deadline: &Deadline,
        surface: Surface,
        timeout_ms: Option<u64>,
    ) -> Result<Confirmed, SdkError> {
        let Some(task) = task.filter(|t| t.is_run) else {
            return Err(SdkError::invalid(
                "request-confirmation is only available in a background task's own run",
            ));
        };
        let lease = task.lease.clone();
        let timeout = policy::confirmation_timeout(timeout_ms)?;
        let surface_json =
            serde_json::to_string(&surface).map_err(|e| SdkError::Internal(e.to_string()))?;
        let task_id = lease.task_id.clone();
        let stopped = || SdkError::invalid("the task was cancelled");
        let store = &self.store;
        let now = now_ms();
        let expires = now.saturating_add(i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX));
        let runs_here = self
            .running()
            .get(&task_id)
            .is_some_and(|r| r.lease == lease);
        if !runs_here {
            return Err(SdkError::invalid("the task is not running on this host"));
        }
        // A wait holds its instance within the cap; a resumable one over it
        // is parked at once, any other refused before its question is up.
        let held = self.waits.hold();
        if held.is_none() && !task.resumable {
            return Err(SdkError::LimitExceeded(format!(
                "at most {} tasks may wait for a confirmation holding an instance on this host; \
                 a resumable task waits without one",
                self.waits.max_held
            )));
        }
        let grace = task
            .resumable
            .then(|| held.as_ref().map_or(Duration::ZERO, |_| self.waits.grace));
        // An answer kept from before a restart counts only for the same
        // question; a stale one is discarded and the new question asked.
        let mut rx = None;
        for _ in 0..2 {
            // A fresh channel per question, so an answer to a stale one can
            // never be taken for this one.
            let (tx, fresh) = oneshot::channel();
            if let Some(r) = self.running().get_mut(&task_id)
                && r.lease == lease
            {
                r.answer = Some(tx);
            }
            rx = Some(fresh);
            let asked = match store
                .ask_confirmation(&lease, &surface_json, now, Some(expires))
                .await
            {
                Err(e @ TaskStoreError::Uncertain(_)) => {
                    // The question may be up with nobody waiting for its
                    // answer: taken down (the task running again) before
                    // the guest hears of the failure.
                    let closed = self
                        .retrying(&task_id, "closing an uncertain question", || {
                            store.close_confirmation(&lease, now_ms())
                        })
                        .await;
                    if let Err(e) = closed {
                        tracing::error!(task_id, error = %e, "an uncertain question stays asked");
                    }
                    return Err(store_err(e));
                }
                asked => asked.map_err(store_err)?,
            };
            let earlier = match asked {
                Asked::AlreadyAnswered(answer) => Confirmed::Answered(answer),
                Asked::AlreadyTimedOut => Confirmed::TimedOut,
                Asked::NotActive => {
                    if cancel.is_some_and(CancelToken::is_cancelled) {
                        return Err(stopped());
                    }
                    return Err(SdkError::invalid("the task is no longer active"));
                }
                Asked::Waiting => break,
            };
            // What the task was told before it ran again counts only for
            // the same question.
            let same = store
                .get_unscoped(&task_id)
                .await
                .map_err(store_err)?
                .and_then(|r| r.confirmation)
                .is_some_and(|c| c.surface_json == surface_json);
            store.consume_answer(&lease).await.map_err(store_err)?;
            if same {
                return Ok(earlier);
            }
        }
        // The question is up: from here on the task waits and its question
        // is closed, whatever the store does. A row that cannot be read
        // only costs the watchers its events.
        let row = self
            .retrying(&task_id, "reading an asked task", || {
                store.get_unscoped(&task_id)
            })
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(task_id, error = %e, "the question's events are not published");
                None
            });
        if let Some(row) = &row {
            self.publish(task_ref(row), status_event(Status::WaitingConfirmation));
            let asked_at = row.confirmation.as_ref().map_or(now, |c| c.asked_at);
            self.publish(
                task_ref(row),
                EventKind::ConfirmationAsked {
                    title: surface.title,
                    asked_at,
                },
            );
        }
        let paused = deadline.pause();
        let lent = SlotLent::new(&self.scheduler, module);
        self.pump();
        let outcome = if cancel.is_some_and(CancelToken::is_cancelled) {
            None
        } else {
            let mut rx = rx.ok_or_else(|| SdkError::Internal("no confirmation channel".into()))?;
            let timed_out = tokio::time::sleep(timeout);
            tokio::pin!(timed_out);
            let mut park_after = grace;
            let mut retry = PARK_RETRY_MAX / 128;
            loop {
                let cancelled = async {
                    match cancel {
                        Some(token) => token.cancelled().await,
                        None => std::future::pending().await,
                    }
                };
                let park = async {
                    match park_after {
                        Some(after) => tokio::time::sleep(after).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    answer = &mut rx => break answer.ok(),
                    () = &mut timed_out => break None,
                    () = cancelled => break None,
                    () = park => {}
                }
                if self.park(&lease, expires).await? {
                    drop(held);
                    return Ok(Confirmed::Parked);
                }
                // Answered first, or no longer waiting: what the wait
                // hears next tells which. Or the store failed: try again
                // later rather than hold the instance to the end.
                retry = (retry * 2).min(PARK_RETRY_MAX);
                park_after = Some(retry);
            }
        };
        drop(lent);
        drop(paused);
        drop(held);
        if cancel.is_some_and(CancelToken::is_cancelled) {
            return Err(stopped());
        }
        // One write decides: the answer recorded by then (through this host,
        // or another host of a shared store) or none; later answers are
        // refused, so the user is never told "answered" for a timed-out wait.
        // Retried while the store fails, so the task is not left waiting
        // with its guest gone on. A close that committed unseen took the
        // stored answer: a retry then finds it in the row.
        let uncertain = std::sync::atomic::AtomicBool::new(false);
        let taken = self
            .retrying(&task_id, "closing a question", || async {
                let closed = store.close_confirmation(&lease, now_ms()).await;
                if matches!(closed, Err(TaskStoreError::Uncertain(_))) {
                    uncertain.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                closed
            })
            .await
            .map_err(store_err)?;
        let taken = match taken {
            None if uncertain.load(std::sync::atomic::Ordering::Relaxed) => store
                .get_unscoped(&task_id)
                .await
                .map_err(store_err)?
                .and_then(|r| r.confirmation)
                .filter(|c| c.asked_at == now && c.consumed)
                .and_then(|c| c.answer),
            taken => taken,
        };
        let answer = taken.or(outcome);
        if let Some(row) = &row {
            let closed = match &answer {
                Some(a) => EventKind::ConfirmationAnswered {
                    button: serde_json::from_str::<ConfirmationAnswer>(&a.answer_json)
                        .map(|a| a.button)
                        .unwrap_or_default(),
                    answered_by: a.answered_by.clone(),
                },
                None => EventKind::ConfirmationTimedOut,
            };
            self.publish(task_ref(row), closed);
            self.publish(task_ref(row), status_event(Status::Running));
        }
        Ok(match answer {
            Some(a) => Confirmed::Answered(a),
            None => Confirmed::TimedOut,
        })
    }

    /// Parks the task waiting under `lease`: whether it now waits without
    /// its instance (its run must end). A store that fails leaves it
    /// waiting with its instance; a lost lease is the caller's error.
    async fn park(&self, lease: &Lease, expires: i64) -> Result<bool, SdkError> {
        let parked = match self.store.park(lease).await {
            Ok(parked) => parked,
            Err(e @ TaskStoreError::LeaseLost { .. }) => return Err(store_err(e)),
            // Parked or not, the run may end: if the lease was kept, this
            // host stops renewing it, and its expiry makes the task
            // pending again (it is resumable).
            Err(TaskStoreError::Uncertain(e)) => {
                tracing::warn!(task_id = lease.task_id, error = %e, "a waiting task may not be parked");
                true
            }
            Err(e) => {
                tracing::warn!(task_id = lease.task_id, error = %e, "a waiting task keeps its instance");
                false
            }
        };
        if parked {
            tracing::debug!(task_id = lease.task_id, "a task waits without its instance");
            self.forget_answer(lease);
            self.waits.expires_at(expires);
        }
        Ok(parked)
    }

    /// Drops the answer channel of the run under `lease`: a parked run
    /// hears no answer.
    fn forget_answer(&self, lease: &Lease) {
        if let Some(r) = self.running().get_mut(&lease.task_id)
            && r.lease == *lease
        {
            r.answer = None;
        }
    }

    /// Records `by`'s answer to the confirmation task `id` waits for, and
    /// resumes the task. The answer is stored with who and when before the
    /// task sees it.
    pub(super) async fn answer(
        &self,
        row: &super::store::TaskRow,
        answer: &ConfirmationAnswer,
        by: &Principal,
    ) -> Result<(), SdkError> {
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
        if let (Some(asked), Some(c)) = (answer.asked_at, &row.confirmation)
            && asked != c.asked_at
        {
            return Err(SdkError::invalid(format!(
                "the answer is for a question asked at {asked}, but the one waiting was asked at {}; answer that one",
                c.asked_at
            )));
        }
        if let Some(c) = &row.confirmation
            && let Ok(surface) = serde_json::from_str::<Surface>(&c.surface_json)
        {
            let buttons = surface.button_ids();
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
            .store
            .answer_confirmation(&row.id, stored.clone(), answer.asked_at)
            .await
            .map_err(store_err)?
        {
            Answered::Recorded => {}
            Answered::Resumed => {
                // Parked: no run hears it; the next run of the task asks
                // again and gets it.
                self.publish(
                    task_ref(row),
                    EventKind::ConfirmationAnswered {
                        button: answer.button.clone(),
                        answered_by: stored.answered_by.clone(),
                    },
                );
                self.publish(task_ref(row), status_event(Status::Pending));
                self.wake(&row.module);
                return Ok(());
            }
            Answered::NotWaiting => {
                return Err(SdkError::invalid(
                    "the task is not waiting for a confirmation",
                ));
            }
            Answered::OtherQuestion => {
                return Err(SdkError::invalid(
                    "the question was asked again since; answer the current one",
                ));
            }
            Answered::NotFound => return Err(SdkError::NotFound),
        }
        if !self.hand_over(&row.id, stored) {
            self.announce(Announcement::Answered {
                task_id: row.id.clone(),
            });
        }
        Ok(())
    }

    /// Hands a recorded answer to the run of task `id` waiting here, if any;
    /// whether one was.
    fn hand_over(&self, id: &str, answer: StoredAnswer) -> bool {
        let waiting = self.running().get_mut(id).and_then(|r| r.answer.take());
        match waiting {
            Some(tx) => {
                let _ = tx.send(answer);
                true
            }
            None => false,
        }
    }

    /// Hands the run waiting here the answer recorded for it, possibly
    /// through another host of the store (found at a lease renewal).
    pub(super) async fn deliver_answer(&self, lease: &Lease) {
        match self.store.get_unscoped(&lease.task_id).await {
            Ok(Some(row)) => {
                let answer = row
                    .confirmation
                    .filter(|c| !c.consumed)
                    .and_then(|c| c.answer);
                if let Some(answer) = answer {
                    self.hand_over(&row.id, answer);
                }
            }
            Ok(None) => {}
            Err(e) => tracing::error!(task_id = lease.task_id, error = %e, "cannot read an answer"),
        }
    }
}
