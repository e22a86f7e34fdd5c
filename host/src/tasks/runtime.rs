//! The task runtime: submission, scheduling, running tasks in fresh
//! instances, the blocking pool, progress, confirmation and cancellation.
//!
//! Tasks are data in the store; this runtime is what runs them on this host.
//! Every state change goes through the store's compare-and-set transitions,
//! so racing cancel/complete/progress never lose or double a final state.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, oneshot};

use super::events::{EventBus, EventKind, TaskRef};
use super::policy;
use super::store::{
    NewTask, Outcome, Quota, Recovery, SqliteOptions, SqliteTaskStore, Status, StoredAnswer,
    Submitted, TaskRow, TaskStore, TaskStoreError,
};
use crate::error::{CallError, SdkError};
use crate::host::{Core, HostOptions, check_args, instantiate_or_trap};
use crate::identity::{Identity, OrgId, Principal, Role, UserId};
use crate::sandbox::{self, SandboxSpec, TaskScope};
use crate::store::now_ms;

/// Longest failure message stored with a task: a guest's error text is its
/// own to choose, the host's storage is not.
pub const MAX_FAILURE_MESSAGE_BYTES: usize = 4096;

/// How long a task that found no free instance slot waits before it is
/// queued again.
pub const BUSY_RETRY: Duration = Duration::from_millis(100);

/// How the caller of `run-background` wants the task run.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub task_key: Option<String>,
    pub title: Option<String>,
    pub resumable: bool,
}

/// A task running on this host.
#[derive(Debug)]
pub(crate) struct Running {
    pub cancel: Arc<AtomicBool>,
    /// Woken on cancel, so waits inside host calls end at once.
    pub wake: Arc<Notify>,
    /// The waiting `request-confirmation`, if any.
    pub answer: Option<oneshot::Sender<StoredAnswer>>,
}

#[derive(Debug, Default)]
struct Queues {
    by_module: BTreeMap<String, VecDeque<String>>,
    running_by_module: HashMap<String, u32>,
    running: u32,
    /// The module served last, so the next pick starts after it (round robin).
    last: Option<String>,
}

/// Runtime state shared by every task.
pub struct TaskRuntime {
    pub(crate) store: Arc<dyn TaskStore>,
    pub(crate) events: EventBus,
    pub(crate) running: Mutex<HashMap<String, Running>>,
    queues: Mutex<Queues>,
    max_running: u32,
    blocking: Arc<Semaphore>,
    blocking_threads: u32,
    pub(crate) subprocesses: super::subprocess::Subprocesses,
}

impl TaskRuntime {
    pub(crate) fn open(options: &HostOptions) -> Result<Self, TaskStoreError> {
        let store = SqliteTaskStore::open(
            &options.db_path,
            SqliteOptions {
                durability: options.durability,
                ..SqliteOptions::default()
            },
        )?;
        Ok(TaskRuntime {
            store: Arc::new(store),
            events: EventBus::new(),
            running: Mutex::default(),
            queues: Mutex::default(),
            max_running: options.max_running_tasks.max(1),
            blocking: Arc::new(Semaphore::new(
                usize::try_from(options.blocking_threads.max(1)).unwrap_or(1),
            )),
            blocking_threads: options.blocking_threads.max(1),
            subprocesses: Default::default(),
        })
    }

    pub(crate) fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) fn task_ref(row: &TaskRow) -> TaskRef {
    TaskRef {
        task_id: row.id.clone(),
        module: row.module.clone(),
        organization_id: row.organization_id.clone(),
        user_id: row.user_id.clone(),
    }
}

pub(crate) fn store_err(e: TaskStoreError) -> SdkError {
    tracing::error!(error = %e, "task store failed");
    SdkError::Internal("the task store failed; see the host's log".into())
}

impl Core {
    /// Validates and stores a new task, then queues it. The id is returned
    /// only once the row is committed.
    pub(crate) async fn submit_task(
        self: &Arc<Self>,
        identity: &Identity,
        task: &str,
        args_json: &str,
        options: SubmitOptions,
    ) -> Result<String, SdkError> {
        if identity.is_loader() {
            return Err(SdkError::denied(
                "a module cannot start tasks while it is being loaded",
            ));
        }
        let m = self.module(&identity.module).ok_or(SdkError::NotFound)?;
        if !m.description.has_task(task) {
            return Err(SdkError::invalid(format!(
                "module `{}` has no task `{}`",
                identity.module,
                crate::log::truncate(task, 128)
            )));
        }
        check_args(args_json).map_err(|e| SdkError::invalid(e.to_string()))?;
        if let Some(k) = &options.task_key {
            policy::task_key(k)?;
        }
        if let Some(t) = &options.title {
            policy::short_text("title", t, policy::MAX_TITLE_BYTES)?;
        }
        let grant = &m.manifest.policy.tasks;
        let id = uuid::Uuid::now_v7().to_string();
        let submitted = self
            .tasks
            .store
            .submit(NewTask {
                id: id.clone(),
                module: identity.module.clone(),
                task_name: task.to_owned(),
                task_key: options.task_key,
                title: options.title,
                args_json: args_json.to_owned(),
                resumable: options.resumable,
                user_id: identity.user_id().to_string(),
                organization_id: identity.organization_id().to_string(),
                role: identity.principal.role.as_str().to_owned(),
                request_id: identity.request_id.clone(),
                session_id: identity.session_id.clone(),
                created_at: now_ms(),
                limits: Quota {
                    max_active_per_user: grant.max_active_per_user,
                    max_active_per_module: grant.max_active_per_module,
                },
            })
            .await
            .map_err(store_err)?;
        match submitted {
            Submitted::Created(id) => {
                self.tasks.events.send(
                    TaskRef {
                        task_id: id.clone(),
                        module: identity.module.clone(),
                        organization_id: identity.organization_id().to_string(),
                        user_id: identity.user_id().to_string(),
                    },
                    EventKind::Status {
                        status: Status::Pending.as_str().to_owned(),
                    },
                );
                self.enqueue(&identity.module, id.clone());
                Ok(id)
            }
            Submitted::Existing(id) => Ok(id),
            Submitted::LimitExceeded(reason) => Err(SdkError::LimitExceeded(reason)),
        }
    }

    /// Recovers what a previous run left and queues every pending task.
    pub(crate) async fn start_tasks(self: &Arc<Self>) -> Result<Recovery, TaskStoreError> {
        let recovery = self.tasks.store.recover(now_ms()).await?;
        if recovery.interrupted > 0 || !recovery.resumed.is_empty() {
            tracing::info!(
                interrupted = recovery.interrupted,
                resumed = recovery.resumed.len(),
                "recovered tasks of the previous run"
            );
        }
        let pending = self.tasks.store.pending(u32::MAX)?;
        for row in pending {
            self.enqueue(&row.module, row.id);
        }
        Ok(recovery)
    }

    /// Gives back the running slot of a task of `module` while it waits for
    /// a user: a parked task holds an instance, not a CPU, and must not keep
    /// other work from running. The slot is taken back when the guard drops.
    pub(crate) fn park_slot(self: &Arc<Self>, module: &str) -> ParkedSlot {
        {
            let mut q = self.tasks.queues.lock().unwrap_or_else(|p| p.into_inner());
            q.running = q.running.saturating_sub(1);
            if let Some(n) = q.running_by_module.get_mut(module) {
                *n = n.saturating_sub(1);
            }
        }
        self.pump();
        ParkedSlot {
            core: self.clone(),
            module: module.to_owned(),
        }
    }

    fn enqueue(self: &Arc<Self>, module: &str, id: String) {
        {
            let mut q = self.tasks.queues.lock().unwrap_or_else(|p| p.into_inner());
            q.by_module
                .entry(module.to_owned())
                .or_default()
                .push_back(id);
        }
        self.pump();
    }

    /// Starts queued tasks while there is room: global and per-module
    /// limits, modules served round robin so a busy one cannot starve others.
    fn pump(self: &Arc<Self>) {
        loop {
            let next = {
                let mut q = self.tasks.queues.lock().unwrap_or_else(|p| p.into_inner());
                if q.running >= self.tasks.max_running {
                    return;
                }
                let modules: Vec<String> = q.by_module.keys().cloned().collect();
                let start = q
                    .last
                    .as_ref()
                    .and_then(|l| modules.iter().position(|m| m > l))
                    .unwrap_or(0);
                let mut pick = None;
                for i in 0..modules.len() {
                    let name = &modules[(start + i) % modules.len()];
                    let Some(m) = self.module(name) else { continue };
                    // While other modules wait, no module may hold more than half
                    // the host's slots, so tasks parked in confirmations cannot
                    // starve them; alone, a module may use its whole grant.
                    let others_waiting = q
                        .by_module
                        .iter()
                        .any(|(other, queue)| other != name && !queue.is_empty());
                    let mut cap = m.manifest.policy.tasks.max_concurrent;
                    if others_waiting {
                        cap = cap.min((self.tasks.max_running / 2).max(1));
                    }
                    if q.running_by_module.get(name).copied().unwrap_or(0) >= cap {
                        continue;
                    }
                    if let Some(id) = q.by_module.get_mut(name).and_then(VecDeque::pop_front) {
                        pick = Some((name.clone(), id));
                        break;
                    }
                }
                q.by_module.retain(|_, v| !v.is_empty());
                let Some((module, id)) = pick else { return };
                q.running += 1;
                *q.running_by_module.entry(module.clone()).or_default() += 1;
                q.last = Some(module.clone());
                (module, id)
            };
            let core = self.clone();
            tokio::spawn(async move {
                let (module, id) = next;
                core.clone().run_task(&module, &id).await;
                {
                    let mut q = core.tasks.queues.lock().unwrap_or_else(|p| p.into_inner());
                    q.running = q.running.saturating_sub(1);
                    if let Some(n) = q.running_by_module.get_mut(&module) {
                        *n = n.saturating_sub(1);
                    }
                }
                core.pump();
            });
        }
    }

    /// Runs one task: `start` (pending → running), `run-task` in a fresh
    /// instance with the submitter's identity plus the task id, then `finish`.
    async fn run_task(self: Arc<Self>, module: &str, id: &str) {
        let store = &self.tasks.store;
        let Some(m) = self.module(module) else {
            tracing::warn!(
                task_id = id,
                module,
                "task's module is not loaded here; left pending"
            );
            return;
        };
        // Registered before `start`, so a cancel racing with the start finds
        // the flag to set.
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut running = self.tasks.running();
            if running.contains_key(id) {
                return; // queued twice; the run under way is the one
            }
            running.insert(
                id.to_owned(),
                Running {
                    cancel: cancel.clone(),
                    wake: Arc::new(Notify::new()),
                    answer: None,
                },
            );
        }
        let row = match store.start(id).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                // Cancelled (or taken) before it started.
                self.tasks.running().remove(id);
                return;
            }
            Err(e) => {
                self.tasks.running().remove(id);
                tracing::error!(task_id = id, error = %e, "cannot start task");
                return;
            }
        };
        let tref = task_ref(&row);
        self.tasks.events.send(
            tref.clone(),
            EventKind::Status {
                status: Status::Running.as_str().to_owned(),
            },
        );
        let Some(outcome) = self.execute(&m, &row, cancel).await else {
            // No instance slot: undo the start and try again later rather
            // than fail a task for the host's own load.
            self.tasks.running().remove(id);
            match store.release(id).await {
                Ok(true) => {
                    self.tasks.events.send(
                        tref,
                        EventKind::Status {
                            status: Status::Pending.as_str().to_owned(),
                        },
                    );
                    let (core, module, id) = (self.clone(), module.to_owned(), id.to_owned());
                    tokio::spawn(async move {
                        tokio::time::sleep(BUSY_RETRY).await;
                        core.enqueue(&module, id);
                    });
                }
                Ok(false) => {}
                Err(e) => tracing::error!(task_id = id, error = %e, "cannot requeue a task"),
            }
            return;
        };
        let final_status = outcome_status(&outcome);
        let applied = match store.finish(id, outcome).await {
            Ok(applied) => applied,
            Err(e) => {
                tracing::error!(task_id = id, error = %e, "cannot record the end of a task");
                false
            }
        };
        self.tasks.running().remove(id);
        self.tasks.events.forget(id);
        if applied {
            self.tasks.events.send(
                tref,
                EventKind::Status {
                    status: final_status.as_str().to_owned(),
                },
            );
        }
    }

    async fn execute(
        self: &Arc<Self>,
        m: &crate::modules::LoadedModule,
        row: &TaskRow,
        cancel: Arc<AtomicBool>,
    ) -> Option<Outcome> {
        let identity = match identity_of(row) {
            Ok(i) => Arc::new(i),
            Err(message) => {
                return Some(Outcome::Failed {
                    kind: "internal".into(),
                    message,
                });
            }
        };
        let limits = &m.manifest.policy.limits;
        let mut store = match sandbox::new_store(
            self.engine.engine(),
            SandboxSpec {
                core: self.clone(),
                identity,
                task: Some(TaskScope {
                    task_id: row.id.clone(),
                    checkpoint: row.checkpoint_json.clone(),
                    is_run: true,
                }),
                memory_bytes: limits.memory_bytes,
                deadline: limits.task_deadline,
                data_dir: m.granted_data_dir(),
                cancel: Some(cancel),
            },
        ) {
            Ok(s) => s,
            Err(e) => {
                return Some(Outcome::Failed {
                    kind: "internal".into(),
                    message: e.to_string(),
                });
            }
        };
        let result = async {
            let instance = m.pre().instantiate_async(&mut store).await?;
            instance
                .call_run_task(&mut store, &row.task_name, &row.args_json)
                .await
        }
        .await;
        Some(match result {
            Ok(Ok(json)) => match policy::json_text("task result", &json, policy::MAX_RESULT_BYTES)
            {
                Ok(_) => Outcome::Completed { result_json: json },
                Err(e) => Outcome::Failed {
                    kind: "invalid-result".into(),
                    message: e.to_string(),
                },
            },
            Ok(Err(e)) => Outcome::Failed {
                kind: "error".into(),
                message: crate::log::truncate(
                    &SdkError::from(e).to_string(),
                    MAX_FAILURE_MESSAGE_BYTES,
                )
                .to_owned(),
            },
            Err(e) => match instantiate_or_trap(m.name(), e, &store) {
                CallError::Busy(_) => return None,
                CallError::Cancelled { .. } => Outcome::Cancelled { by: None },
                CallError::Deadline { .. } => Outcome::Failed {
                    kind: "deadline".into(),
                    message: format!(
                        "ran past its {} ms deadline",
                        limits.task_deadline.as_millis()
                    ),
                },
                CallError::MemoryLimit { limit_bytes, .. } => Outcome::Failed {
                    kind: "memory".into(),
                    message: format!("exceeded its memory limit of {limit_bytes} bytes"),
                },
                other => Outcome::Failed {
                    kind: "trap".into(),
                    message: other.to_string(),
                },
            },
        })
    }

    /// Runs a blocking function in a fresh instance on the blocking pool
    /// (never on an async worker) and waits for it. The identity and task
    /// scope are the caller's.
    pub(crate) async fn run_blocking(
        self: &Arc<Self>,
        identity: Arc<Identity>,
        task: Option<TaskScope>,
        cancel: Option<Arc<AtomicBool>>,
        function: &str,
        args_json: &str,
    ) -> Result<String, SdkError> {
        let m = self.module(&identity.module).ok_or(SdkError::NotFound)?;
        if !m.description.has_blocking(function) {
            return Err(SdkError::invalid(format!(
                "module `{}` has no blocking function `{}`",
                identity.module,
                crate::log::truncate(function, 128)
            )));
        }
        check_args(args_json).map_err(|e| SdkError::invalid(e.to_string()))?;
        let permit = self
            .tasks
            .blocking
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                SdkError::LimitExceeded(format!(
                    "the blocking pool's {} threads are all busy",
                    self.tasks.blocking_threads
                ))
            })?;
        // A blocking call made from a task knows the task, but cannot pause
        // it: it holds a pool thread.
        let task = task.map(|t| TaskScope { is_run: false, ..t });
        let core = self.clone();
        let (function, args) = (function.to_owned(), args_json.to_owned());
        let handle = tokio::runtime::Handle::current();
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            handle.block_on(async move {
                let limits = &m.manifest.policy.limits;
                let mut store = sandbox::new_store(
                    core.engine.engine(),
                    SandboxSpec {
                        core: core.clone(),
                        identity,
                        task,
                        memory_bytes: limits.memory_bytes,
                        deadline: limits.blocking_deadline,
                        data_dir: m.granted_data_dir(),
                        cancel,
                    },
                )
                .map_err(|e| e.to_sdk())?;
                let result = async {
                    let instance = m.pre().instantiate_async(&mut store).await?;
                    instance
                        .call_call_blocking(&mut store, &function, &args)
                        .await
                }
                .await;
                match result {
                    Ok(Ok(json)) => {
                        policy::json_text("blocking result", &json, policy::MAX_RESULT_BYTES)
                            .map(|_| json.clone())
                            .map_err(|e| {
                                SdkError::Internal(format!(
                                    "module returned an invalid result: {e}"
                                ))
                            })
                    }
                    Ok(Err(e)) => Err(e.into()),
                    Err(e) => Err(instantiate_or_trap(m.name(), e, &store).to_sdk()),
                }
            })
        })
        .await;
        joined.unwrap_or_else(|e| {
            tracing::error!(error = %e, "blocking call panicked");
            Err(SdkError::Internal(
                "the blocking call failed; see the host's log".into(),
            ))
        })
    }
}

/// A running slot given back by [`Core::park_slot`]; dropping it takes the
/// slot again (for a moment the host may run one task over its limit).
pub(crate) struct ParkedSlot {
    core: Arc<Core>,
    module: String,
}

impl Drop for ParkedSlot {
    fn drop(&mut self) {
        let mut q = self
            .core
            .tasks
            .queues
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        q.running += 1;
        *q.running_by_module.entry(self.module.clone()).or_default() += 1;
    }
}

fn outcome_status(o: &Outcome) -> Status {
    match o {
        Outcome::Completed { .. } => Status::Completed,
        Outcome::Failed { .. } => Status::Failed,
        Outcome::Cancelled { .. } => Status::Cancelled,
        Outcome::Interrupted { .. } => Status::Interrupted,
    }
}

/// The submitter's identity, as stored with the task.
pub(crate) fn identity_of(row: &TaskRow) -> Result<Identity, String> {
    let bad = |what: &str| format!("stored task {} has an invalid {what}", row.id);
    Ok(Identity {
        module: row.module.clone(),
        principal: Principal {
            user_id: UserId::try_from(row.user_id.clone()).map_err(|_| bad("user id"))?,
            organization_id: OrgId::try_from(row.organization_id.clone())
                .map_err(|_| bad("organization id"))?,
            role: row.role.parse::<Role>().map_err(|_| bad("role"))?,
        },
        request_id: row.request_id.clone(),
        session_id: row.session_id.clone(),
    })
}

/// How long a confirmation may wait, as asked by the guest.
pub(crate) fn confirmation_timeout(ms: Option<u64>) -> Result<Duration, SdkError> {
    match ms {
        None => Ok(Duration::from_millis(policy::MAX_CONFIRMATION_TIMEOUT_MS)),
        Some(0) => Err(SdkError::invalid("confirmation timeout must be positive")),
        Some(ms) if ms > policy::MAX_CONFIRMATION_TIMEOUT_MS => Err(SdkError::invalid(format!(
            "confirmation timeout of {ms} ms is over the limit of {} ms",
            policy::MAX_CONFIRMATION_TIMEOUT_MS
        ))),
        Some(ms) => Ok(Duration::from_millis(ms)),
    }
}
