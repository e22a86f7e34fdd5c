//! A task store that fails when told: the host's store with faults
//! injected method by method, for tests of what the runtime does when its
//! store fails in the middle of a task's life.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use modhost::{Host, HostOptions};

use modhost::tasks::store::{
    Announced, Announcement, Answered, Asked, BoxFuture, Claimed, Cursor, HostId, Lease,
    LeaseState, NewTask, OrgScope, Outcome, Owner, ProgressResult, ProgressUpdate, Recovery, Scope,
    StoredAnswer, Submitted, TaskFilter, TaskPage, TaskRow, TaskStore, TaskStoreError, Want,
};

/// A host on `state` with the test defaults, whose embedded task store
/// fails as told.
pub fn faulty_host(state: &Path) -> (Host, Arc<FaultyStore>) {
    let mut options = HostOptions::new(state);
    options.engine.cache_dir = Some(crate::COMPONENT_CACHE_DIR.into());
    options.engine.max_instances = 64;
    let mut faulty = None;
    let host = Host::new_with_task_store_layer(options, |inner| {
        let store = Arc::new(FaultyStore::new(inner));
        faulty = Some(Arc::clone(&store));
        store
    })
    .expect("starting a host");
    (host, faulty.expect("the store layered"))
}

/// How an injected fault fails a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The call does nothing and fails as a broken database does
    /// ([`TaskStoreError::Backend`]).
    Fails,
    /// The call takes effect, then fails as a commit whose connection broke
    /// does ([`TaskStoreError::Uncertain`]).
    Uncertain,
}

/// `inner` with faults injected: [`FaultyStore::inject`] makes the next
/// calls of a method fail.
pub struct FaultyStore {
    inner: Arc<dyn TaskStore>,
    faults: Mutex<HashMap<&'static str, Armed>>,
}

/// The fault the next calls of a method get.
struct Armed {
    fault: Fault,
    times: u32,
    /// The method whose first call arms it (none: armed).
    after: Option<&'static str>,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn TaskStore>) -> Self {
        FaultyStore {
            inner,
            faults: Mutex::new(HashMap::new()),
        }
    }

    /// Makes the next `times` calls of `method` (a [`TaskStore`] method's
    /// name) fail with `fault`.
    pub fn inject(&self, method: &'static str, fault: Fault, times: u32) {
        self.arm(method, fault, times, None);
    }

    /// [`FaultyStore::inject`], from the first call of `trigger` on.
    pub fn inject_after(
        &self,
        trigger: &'static str,
        method: &'static str,
        fault: Fault,
        times: u32,
    ) {
        self.arm(method, fault, times, Some(trigger));
    }

    fn arm(&self, method: &'static str, fault: Fault, times: u32, after: Option<&'static str>) {
        let armed = Armed {
            fault,
            times,
            after,
        };
        self.faults.lock().expect("faults").insert(method, armed);
    }

    /// The calls of `method` still to fail.
    pub fn pending(&self, method: &'static str) -> u32 {
        self.faults
            .lock()
            .expect("faults")
            .get(method)
            .map_or(0, |a| a.times)
    }

    fn take(&self, method: &'static str) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("faults");
        for armed in faults.values_mut() {
            if armed.after == Some(method) {
                armed.after = None;
            }
        }
        let armed = faults.get_mut(method)?;
        if armed.times == 0 || armed.after.is_some() {
            return None;
        }
        armed.times -= 1;
        Some(armed.fault)
    }

    /// `call` (not started yet) run or failed as injected for `method`.
    fn faulty<'a, T: Send + 'a>(
        &'a self,
        method: &'static str,
        call: BoxFuture<'a, Result<T, TaskStoreError>>,
    ) -> BoxFuture<'a, Result<T, TaskStoreError>> {
        Box::pin(async move {
            match self.take(method) {
                None => call.await,
                Some(Fault::Fails) => Err(TaskStoreError::Backend(Arc::new(
                    std::io::Error::other(format!("injected fault in {method}")),
                ))),
                Some(Fault::Uncertain) => {
                    call.await?;
                    Err(TaskStoreError::Uncertain(format!(
                        "injected fault after {method}"
                    )))
                }
            }
        })
    }
}

impl TaskStore for FaultyStore {
    fn submit(&self, task: NewTask) -> BoxFuture<'_, Result<Submitted, TaskStoreError>> {
        self.faulty("submit", self.inner.submit(task))
    }

    fn claim<'a>(
        &'a self,
        host: &'a HostId,
        wants: &'a [Want],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<Claimed>, TaskStoreError>> {
        self.faulty("claim", self.inner.claim(host, wants, lease))
    }

    fn renew<'a>(
        &'a self,
        host: &'a HostId,
        leases: &'a [Lease],
        lease: Duration,
    ) -> BoxFuture<'a, Result<Vec<LeaseState>, TaskStoreError>> {
        self.faulty("renew", self.inner.renew(host, leases, lease))
    }

    fn recover_expired<'a>(
        &'a self,
        restarted: Option<&'a HostId>,
    ) -> BoxFuture<'a, Result<Recovery, TaskStoreError>> {
        self.faulty("recover_expired", self.inner.recover_expired(restarted))
    }

    fn finish<'a>(
        &'a self,
        id: &'a str,
        lease: Option<&'a Lease>,
        outcome: Outcome,
    ) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        self.faulty("finish", self.inner.finish(id, lease, outcome))
    }

    fn release<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        self.faulty("release", self.inner.release(lease))
    }

    fn update_progress<'a>(
        &'a self,
        id: &'a str,
        owner: &'a Owner,
        lease: Option<&'a Lease>,
        update: ProgressUpdate,
    ) -> BoxFuture<'a, Result<ProgressResult, TaskStoreError>> {
        self.faulty(
            "update_progress",
            self.inner.update_progress(id, owner, lease, update),
        )
    }

    fn ask_confirmation<'a>(
        &'a self,
        lease: &'a Lease,
        surface_json: &'a str,
        asked_at: i64,
        expires_at: Option<i64>,
    ) -> BoxFuture<'a, Result<Asked, TaskStoreError>> {
        self.faulty(
            "ask_confirmation",
            self.inner
                .ask_confirmation(lease, surface_json, asked_at, expires_at),
        )
    }

    fn park<'a>(&'a self, lease: &'a Lease) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        self.faulty("park", self.inner.park(lease))
    }

    fn answer_confirmation<'a>(
        &'a self,
        id: &'a str,
        answer: StoredAnswer,
        asked_at: Option<i64>,
    ) -> BoxFuture<'a, Result<Answered, TaskStoreError>> {
        self.faulty(
            "answer_confirmation",
            self.inner.answer_confirmation(id, answer, asked_at),
        )
    }

    fn consume_answer<'a>(
        &'a self,
        lease: &'a Lease,
    ) -> BoxFuture<'a, Result<bool, TaskStoreError>> {
        self.faulty("consume_answer", self.inner.consume_answer(lease))
    }

    fn close_confirmation<'a>(
        &'a self,
        lease: &'a Lease,
        now: i64,
    ) -> BoxFuture<'a, Result<Option<StoredAnswer>, TaskStoreError>> {
        self.faulty(
            "close_confirmation",
            self.inner.close_confirmation(lease, now),
        )
    }

    fn get<'a>(
        &'a self,
        id: &'a str,
        scope: &'a Scope,
    ) -> BoxFuture<'a, Result<Option<TaskRow>, TaskStoreError>> {
        self.faulty("get", self.inner.get(id, scope))
    }

    fn get_unscoped<'a>(
        &'a self,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<TaskRow>, TaskStoreError>> {
        self.faulty("get_unscoped", self.inner.get_unscoped(id))
    }

    fn by_key<'a>(
        &'a self,
        scope: &'a Scope,
        key: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>> {
        self.faulty("by_key", self.inner.by_key(scope, key, limit))
    }

    fn by_key_prefix<'a>(
        &'a self,
        scope: &'a Scope,
        prefix: &'a str,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>> {
        self.faulty(
            "by_key_prefix",
            self.inner.by_key_prefix(scope, prefix, limit),
        )
    }

    fn by_user<'a>(
        &'a self,
        scope: &'a Scope,
        limit: u32,
    ) -> BoxFuture<'a, Result<Vec<TaskRow>, TaskStoreError>> {
        self.faulty("by_user", self.inner.by_user(scope, limit))
    }

    fn list<'a>(
        &'a self,
        scope: &'a Scope,
        filter: &'a TaskFilter,
        cursor: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<TaskPage, TaskStoreError>> {
        self.faulty("list", self.inner.list(scope, filter, cursor, limit))
    }

    fn list_org<'a>(
        &'a self,
        scope: &'a OrgScope,
        filter: &'a TaskFilter,
        cursor: Option<&'a Cursor>,
        limit: u32,
    ) -> BoxFuture<'a, Result<TaskPage, TaskStoreError>> {
        self.faulty(
            "list_org",
            self.inner.list_org(scope, filter, cursor, limit),
        )
    }

    fn prune(
        &self,
        finished_before: i64,
        limit: u32,
    ) -> BoxFuture<'_, Result<u64, TaskStoreError>> {
        self.faulty("prune", self.inner.prune(finished_before, limit))
    }

    fn announcements(&self) -> Option<tokio::sync::broadcast::Receiver<Announced>> {
        self.inner.announcements()
    }

    fn announce<'a>(
        &'a self,
        host: &'a HostId,
        what: &'a Announcement,
    ) -> BoxFuture<'a, Result<(), TaskStoreError>> {
        self.faulty("announce", self.inner.announce(host, what))
    }
}
