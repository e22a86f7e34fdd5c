//! Running tasks on this host: recovery at start, the claimer that fills
//! free slots from the store, the lease keeper, and one run from its claim
//! to its final state.
//!
//! Tasks are data in the store, shared with any other host on it; this is
//! what runs them here. Every state change goes through the store's
//! compare-and-set transitions, and every write of a run carries its lease,
//! so racing cancel/complete/progress never lose or double a final state,
//! and a run whose task another host took writes nothing.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::FutureExt;

use super::policy;
use super::service::{
    MAX_FAILURE_MESSAGE_BYTES, Returned, Running, TaskRun, TaskService, identity_of, task_ref,
};
use super::service::{run_status_event, status_event};
use super::store::{
    Announced, Announcement, Claimed, HostId, Lease, LeaseState, Outcome, Recovery, Status,
    TaskStoreError,
};
use super::waits::Waits;
use crate::cancel::CancelToken;
use crate::error::CallError;
use crate::events::{EventKind, Subject};
use crate::text::truncate;

/// How long a task that found no free instance slot waits before it is
/// claimable again.
pub const BUSY_RETRY: Duration = Duration::from_millis(100);

/// How long the claimer waits after a failed claim (the store is down).
const CLAIM_RETRY: Duration = Duration::from_secs(1);

impl TaskService {
    /// Recovers what this host's previous run left (its leases: none of its
    /// runs lives) and what other hosts' lapsed leases left, then starts the
    /// claimer and the lease keeper. Call once, after the modules are
    /// configured.
    pub async fn start(self: &Arc<Self>) -> Result<Recovery, TaskStoreError> {
        let mut recovery = Recovery::default();
        loop {
            let page = self.recover_page(Some(&self.host)).await?;
            let more = page.is_full_page();
            recovery.extend(page);
            if !more {
                break;
            }
        }
        tokio::spawn(claim_loop(Arc::downgrade(self), self.claims.clone()));
        tokio::spawn(expiry_loop(Arc::downgrade(self), self.waits.clone()));
        if let Some(announced) = self.store.announcements() {
            tokio::spawn(announce_loop(Arc::downgrade(self), announced));
        }
        let queued = self
            .to_announce
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(queued) = queued {
            tokio::spawn(send_loop(self.store.clone(), self.host.clone(), queued));
        }
        tokio::spawn(lease_loop(Arc::downgrade(self), self.lease));
        Ok(recovery)
    }

    /// Notes that `module` may have pending tasks, and wakes the claimer.
    pub(super) fn wake(&self, module: &str) {
        self.scheduler.mark(module);
        self.claims.notify_one();
    }

    /// Wakes the claimer: a slot may be free.
    pub(super) fn pump(&self) {
        self.claims.notify_one();
    }

    /// One claim for the free slots; whether every module got what it
    /// wanted (so more may be pending).
    async fn claim_once(self: &Arc<Self>) -> Result<bool, TaskStoreError> {
        let wants = self.scheduler.wants();
        if wants.is_empty() {
            return Ok(false);
        }
        let claimed = self.store.claim(&self.host, &wants, self.lease).await?;
        self.scheduler.claimed(&wants, &claimed);
        let wanted: u32 = wants.iter().map(|w| w.max).sum();
        let full = claimed.len() >= usize::try_from(wanted).unwrap_or(usize::MAX);
        for c in claimed {
            let service = self.clone();
            tokio::spawn(async move {
                let module = c.row.module.clone();
                service.run_one(c).await;
                service.scheduler.done(&module);
                service.pump();
            });
        }
        Ok(full)
    }

    /// One run: `run-task` through the runner, then `finish` under the
    /// claim's lease.
    async fn run_one(self: &Arc<Self>, claimed: Claimed) {
        let Claimed { row, lease } = claimed;
        let id = row.id.clone();
        let cancel = CancelToken::new();
        let stale = self.running().insert(
            id.clone(),
            Running {
                cancel: cancel.clone(),
                lease: lease.clone(),
                answer: None,
            },
        );
        // A run of an older claim of this task still here lost its lease
        // (the task was recovered while this host could not renew): stop it.
        if let Some(stale) = stale {
            stale.cancel.cancel();
        }
        let tref = task_ref(&row);
        self.publish(tref.clone(), run_status_event(Status::Running, &self.host));
        let ended = match identity_of(&row) {
            Err(message) => Ended::Finished(Outcome::Failed {
                kind: "internal".into(),
                message,
            }),
            Ok(identity) => {
                let run = TaskRun {
                    row: row.clone(),
                    lease: lease.clone(),
                    identity: Arc::new(identity),
                    cancel,
                };
                // A panic in the run fails the task rather than leave it
                // running (and renewed) forever.
                let returned = AssertUnwindSafe(self.runner.clone().run_task(self.clone(), run))
                    .catch_unwind()
                    .await
                    .unwrap_or_else(|_| Err(CallError::Internal("the run panicked".into())));
                ended_by(returned)
            }
        };
        let outcome = match ended {
            Ended::Finished(outcome) => outcome,
            Ended::Parked => {
                // The store holds the question and no lease: the answer or
                // the question's expiry makes the task pending again.
                self.forget_run(&lease);
                self.events.forget(&id);
                return;
            }
            Ended::NoSlot => {
                self.requeue(&row.module, &lease, tref).await;
                return;
            }
        };
        let final_status = outcome.status();
        let applied = match self.finish_retrying(&lease, outcome).await {
            Ok(applied) => applied,
            Err(TaskStoreError::LeaseLost { .. }) => {
                tracing::warn!(
                    task_id = id,
                    "the task's lease was lost while it ran; another host has it"
                );
                false
            }
            Err(e) => {
                tracing::error!(task_id = id, error = %e, "cannot record the end of a task");
                false
            }
        };
        self.forget_run(&lease);
        self.events.forget(&id);
        if applied {
            self.publish(tref, run_status_event(final_status, &self.host));
        }
    }

    /// Undoes the claim of a run that found no instance slot, and tries
    /// again later rather than fail a task for the host's own load; until
    /// then the module is not claimed here (its oldest task is this one).
    async fn requeue(self: &Arc<Self>, module: &str, lease: &Lease, tref: Subject) {
        self.forget_run(lease);
        self.scheduler.unmark(module);
        match self.store.release(lease).await {
            Ok(true) => {
                self.publish(tref, status_event(Status::Pending));
                let (service, module) = (self.clone(), module.to_owned());
                tokio::spawn(async move {
                    tokio::time::sleep(BUSY_RETRY).await;
                    service.wake(&module);
                });
            }
            Ok(false) => {}
            Err(e) => {
                tracing::error!(task_id = lease.task_id, error = %e, "cannot requeue a task");
            }
        }
    }

    /// Records a run's end under its lease, trying again while the store
    /// fails (a retry of a finish that did commit finds the task final,
    /// `false`), so a finished run is not left to recovery as long as its
    /// lease lasts.
    async fn finish_retrying(
        &self,
        lease: &Lease,
        outcome: Outcome,
    ) -> Result<bool, TaskStoreError> {
        self.retrying(&lease.task_id, "the end of a task", || {
            self.store
                .finish(&lease.task_id, Some(lease), outcome.clone())
        })
        .await
    }

    /// `call` made again while the store fails (a database restarting, a
    /// connection lost while committing), backing off, for as long as a
    /// lease lasts: for what a run must not leave half done. Any other
    /// answer, or the last failure, is returned.
    pub(super) async fn retrying<T, F>(
        &self,
        task_id: &str,
        what: &str,
        mut call: impl FnMut() -> F,
    ) -> Result<T, TaskStoreError>
    where
        F: std::future::Future<Output = Result<T, TaskStoreError>>,
    {
        let mut wait = Duration::from_millis(100);
        let give_up = Instant::now() + self.lease;
        loop {
            match call().await {
                Err(
                    TaskStoreError::Backend(_)
                    | TaskStoreError::Full(_)
                    | TaskStoreError::Uncertain(_),
                ) if Instant::now() + wait < give_up => {
                    tracing::warn!(task_id, "retrying {what}");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }

    /// One page of a recovery ([`super::store::TaskStore::recover_expired`]),
    /// told of as soon as it is written; the claimer is woken for what
    /// became pending.
    async fn recover_page(
        self: &Arc<Self>,
        restarted: Option<&HostId>,
    ) -> Result<Recovery, TaskStoreError> {
        let page = self.store.recover_expired(restarted).await?;
        log_recovery(&page);
        self.publish_recovered(&page).await;
        if !page.resumed.is_empty() || !page.timed_out.is_empty() {
            self.scheduler.mark_all();
            self.pump();
        }
        Ok(page)
    }

    /// Recovers page after page until a page is not full, each bounded by
    /// `within`, so a connection that hangs cannot stall the caller.
    pub(super) async fn sweep(self: &Arc<Self>, within: Duration) {
        loop {
            match tokio::time::timeout(within, self.recover_page(None)).await {
                Err(_) => tracing::error!("recovering tasks of stopped hosts timed out"),
                Ok(Err(e)) => tracing::error!(error = %e, "cannot recover tasks of stopped hosts"),
                Ok(Ok(page)) if page.is_full_page() => continue,
                Ok(Ok(_)) => {}
            }
            return;
        }
    }

    /// Tells watchers (of every host) what a recovery made of its tasks:
    /// `pending` again, or `interrupted`; a parked task whose question
    /// expired, that it did.
    async fn publish_recovered(&self, recovery: &Recovery) {
        let changed = recovery
            .resumed
            .iter()
            .map(|id| (id, Status::Pending))
            .chain(
                recovery
                    .interrupted
                    .iter()
                    .map(|id| (id, Status::Interrupted)),
            )
            .map(|(id, status)| (id, status, false))
            .chain(
                recovery
                    .timed_out
                    .iter()
                    .map(|id| (id, Status::Pending, true)),
            );
        for (id, status, timed_out) in changed {
            match self.store.get_unscoped(id).await {
                Ok(Some(row)) => {
                    if timed_out {
                        self.publish(task_ref(&row), EventKind::ConfirmationTimedOut);
                    }
                    self.publish(task_ref(&row), status_event(status));
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(task_id = id, error = %e, "cannot tell of a recovery"),
            }
        }
    }

    /// Forgets the run under `lease`; a newer claim's run of the same task
    /// stays.
    fn forget_run(&self, lease: &Lease) {
        let mut running = self.running();
        if running
            .get(&lease.task_id)
            .is_some_and(|r| r.lease == *lease)
        {
            running.remove(&lease.task_id);
        }
    }

    /// Stops the run under `lease`, not a newer claim's.
    pub(super) fn cancel_run(&self, lease: &Lease) {
        if let Some(r) = self.running().get(&lease.task_id)
            && r.lease == *lease
        {
            r.cancel.cancel();
        }
    }

    /// Stops every run here: their leases ran out unrenewed, so other hosts
    /// may have taken their tasks (self-fencing; their writes would be
    /// refused anyway).
    fn cancel_all_runs(&self) {
        for r in self.running().values() {
            r.cancel.cancel();
        }
    }

    /// Renews the leases of every task running here, stops the runs whose
    /// task is lost (cancelled through another host, or taken over), and
    /// hands a waiting run the answer another host recorded.
    async fn renew_leases(self: &Arc<Self>) -> Result<(), TaskStoreError> {
        let leases: Vec<Lease> = self.running().values().map(|r| r.lease.clone()).collect();
        if leases.is_empty() {
            return Ok(());
        }
        let states = self.store.renew(&self.host, &leases, self.lease).await?;
        for (lease, state) in leases.iter().zip(states) {
            match state {
                LeaseState::Held { answered: false } => {}
                LeaseState::Held { answered: true } => self.deliver_answer(lease).await,
                LeaseState::Lost => self.cancel_run(lease),
            }
        }
        Ok(())
    }
}

fn log_recovery(recovery: &Recovery) {
    if !recovery.interrupted.is_empty() || !recovery.resumed.is_empty() {
        tracing::info!(
            interrupted = recovery.interrupted.len(),
            resumed = recovery.resumed.len(),
            "recovered tasks whose host stopped"
        );
    }
    if !recovery.timed_out.is_empty() {
        tracing::debug!(
            timed_out = recovery.timed_out.len(),
            "parked tasks whose question expired are pending again"
        );
    }
}

/// Claims pending tasks whenever a slot may be free or a task may be
/// pending, and on a slow poll for what other hosts submitted. Ends when the
/// service is dropped.
async fn claim_loop(service: Weak<TaskService>, claims: Arc<tokio::sync::Notify>) {
    loop {
        let Some(s) = service.upgrade() else { return };
        let poll = s.claim_poll;
        let more = match s.claim_once().await {
            Ok(more) => more,
            Err(e) => {
                tracing::error!(error = %e, "cannot claim tasks");
                drop(s);
                tokio::time::sleep(CLAIM_RETRY).await;
                continue;
            }
        };
        drop(s);
        if more {
            continue;
        }
        let polled = tokio::select! {
            () = claims.notified() => false,
            () = tokio::time::sleep(poll) => true,
        };
        if polled && let Some(s) = service.upgrade() {
            s.scheduler.mark_all();
        }
    }
}

/// Wakes the claimer for each module the store announces pending tasks of
/// (another host's submissions, recoveries). Ends when the service is
/// dropped or the store stops announcing.
async fn announce_loop(
    service: Weak<TaskService>,
    mut announced: tokio::sync::broadcast::Receiver<Announced>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let heard = match announced.recv().await {
            Ok(heard) => Some(heard),
            // Missed some: any module may have pending tasks (the rest
            // comes with the next renewal).
            Err(RecvError::Lagged(_)) => None,
            Err(RecvError::Closed) => return,
        };
        let Some(s) = service.upgrade() else { return };
        let Some(heard) = heard else {
            s.scheduler.mark_all();
            s.pump();
            continue;
        };
        if heard.host.as_ref() == Some(&s.host) {
            continue; // this host's own, done here already
        }
        match heard.what {
            Announcement::Pending { module } => s.wake(&module),
            Announcement::Answered { task_id } => {
                let lease = s.running().get(&task_id).map(|r| r.lease.clone());
                if let Some(lease) = lease {
                    s.deliver_answer(&lease).await;
                }
            }
            Announcement::Cancelled { task_id } => {
                if let Some(r) = s.running().get(&task_id) {
                    r.cancel.cancel();
                }
            }
            Announcement::Event { subject, event } => s.events.send(subject, event),
        }
    }
}

/// Sends this host's announcements to the store one after another, so the
/// other hosts hear them in the order they happened. Ends when the service
/// is dropped.
async fn send_loop(
    store: Arc<dyn super::store::TaskStore>,
    host: super::store::HostId,
    mut queued: tokio::sync::mpsc::Receiver<Announcement>,
) {
    while let Some(what) = queued.recv().await {
        if let Err(e) = store.announce(&host, &what).await {
            tracing::warn!(error = %e, "cannot tell the other hosts");
        }
    }
}

/// Sweeps the questions parked here as they expire (their tasks become
/// pending, to hear of the timeout); the lease keeper's recovery sweeps
/// those parked by other hosts or before a restart. Ends when the service
/// is dropped.
async fn expiry_loop(service: Weak<TaskService>, waits: Arc<Waits>) {
    loop {
        waits.next_expiry().await;
        let Some(s) = service.upgrade() else { return };
        s.sweep(SWEEP_WITHIN).await;
    }
}

/// How long one page of an expiry's sweep may take.
const SWEEP_WITHIN: Duration = Duration::from_secs(10);

/// Every third of a lease: renews this host's leases, then recovers tasks
/// whose lease ran out (another host died). Ends when the service is
/// dropped.
async fn lease_loop(service: Weak<TaskService>, lease: Duration) {
    let every = (lease / 3).max(Duration::from_millis(10));
    // When the leases were last renewed (taken before the renewal, so it
    // errs early): past a whole lease without one, other hosts may run this
    // host's tasks, so its own runs stop.
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let Some(s) = service.upgrade() else { return };
        let attempt = Instant::now();
        // Bounded, so a connection that hangs cannot stall the keeper.
        match tokio::time::timeout(every, s.renew_leases()).await {
            Ok(Ok(())) => renewed = attempt,
            Ok(Err(e)) => tracing::error!(error = %e, "cannot renew the leases of running tasks"),
            Err(_) => tracing::error!("renewing the leases of running tasks timed out"),
        }
        if renewed.elapsed() >= lease {
            tracing::error!("leases unrenewed for a whole lease: stopping this host's runs");
            s.cancel_all_runs();
            continue;
        }
        s.sweep(every).await;
    }
}

/// What the end of a run means for its task.
#[derive(Debug, PartialEq)]
enum Ended {
    /// This final state is recorded.
    Finished(Outcome),
    /// It never started for want of an instance slot: it runs later.
    NoSlot,
    /// It waits for a confirmation parked in the store: nothing to write.
    Parked,
}

/// What a run's result means for its task.
fn ended_by(returned: Returned) -> Ended {
    Ended::Finished(match returned {
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
        Err(CallError::Busy(_)) => return Ended::NoSlot,
        Err(CallError::Parked { .. }) => return Ended::Parked,
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
        assert_eq!(ended_by(Err(CallError::Busy("full".into()))), Ended::NoSlot);
    }

    #[test]
    fn a_run_parked_on_a_confirmation_leaves_the_task_to_the_store() {
        let parked = CallError::Parked { module: "m".into() };
        assert_eq!(ended_by(Err(parked)), Ended::Parked);
    }

    #[test]
    fn a_guest_error_fails_the_task_with_its_message_bounded() {
        let long = "x".repeat(2 * MAX_FAILURE_MESSAGE_BYTES);
        let Ended::Finished(Outcome::Failed { kind, message }) =
            ended_by(Ok(Err(SdkError::invalid(long))))
        else {
            panic!("not failed")
        };
        assert_eq!(kind, "error");
        assert_eq!(message.len(), MAX_FAILURE_MESSAGE_BYTES);
    }

    #[test]
    fn a_result_that_is_not_json_fails_the_task() {
        assert!(matches!(
            ended_by(Ok(Ok("{".into()))),
            Ended::Finished(Outcome::Failed { kind, .. }) if kind == "invalid-result"
        ));
    }
}
