//! [`TaskService`]: the task capability of one host, below the WIT rooms.
//!
//! Submission, lookups, progress and the read model here; running tasks in
//! `run.rs`, confirmations in `confirm.rs`, the blocking pool in
//! `blocking.rs`. Nothing here knows wasmtime: the upward needs (a task's
//! run, a blocking call, each in a fresh instance of its module, and
//! whether the host's own limits admit a new task) go through the
//! [`TaskRunner`] the host plugs in; it reports how the call went, and the
//! service decides what that means for the task. Every call
//! names the module it comes from by its own [`ModuleTasks`], configured
//! once at load.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;

use tokio::sync::{Notify, mpsc, oneshot};

use super::policy;
use super::scheduler::Scheduler;
use super::store::{
    Announcement, Cursor, HostId, Lease, NewTask, Owner, ProgressResult, ProgressUpdate, Quota,
    Scope, Status, StoredAnswer, Submitted, TaskFilter, TaskPage, TaskRow, TaskStore,
    TaskStoreError,
};
use super::waits::Waits;
use crate::audit::{AuditEntry, AuditTrail, Detail, TaskDetail};
use crate::cancel::CancelToken;
use crate::db::now_ms;
use crate::error::{CallError, SdkError};
use crate::events::{EventHub, EventKind, Subject};
use crate::identity::{Identity, OrgId, Principal, Role, UserId};
use crate::manifest::{ReadScope, TasksGrant};
use crate::share::Shares;
use crate::text::{MAX_QUOTED_NAME_BYTES, escape_controls, truncate};

/// Longest failure message stored with a task: a guest's error text is its
/// own to choose, the host's storage is not.
pub const MAX_FAILURE_MESSAGE_BYTES: usize = 4096;

/// Announcements that may wait for the store before new ones are dropped.
const ANNOUNCE_QUEUE: usize = 4096;

/// Rows a lookup returns when the guest asks for 0.
pub const DEFAULT_LOOKUP_LIMIT: u32 = 50;

/// Active tasks one organization may have over all modules unless the
/// operator says otherwise: each module's own quota is per organization, so
/// without this an organization could hold every module's quota at once;
/// 10,000 rows stay cheap for the scheduler and the dashboard's lists.
pub const DEFAULT_MAX_ACTIVE_PER_ORG: u32 = 10_000;

/// How long a claimed task's lease lasts unless renewed (every third of
/// it): how long the tasks of a host that died wait before another host
/// takes them over.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// The shortest lease `serve --task-lease` takes: a host renews every third
/// of it, and a shorter lease leaves a renewal too little time to reach a
/// busy database before another host takes the task.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// How often a host looks for pending tasks when nothing told it of any
/// (another host's submissions, where the store does not announce them).
pub const DEFAULT_CLAIM_POLL: Duration = Duration::from_secs(2);

/// How long a resumable task waiting for a confirmation keeps its instance
/// before it gives it up: an answer within it goes on in place, a user who
/// takes longer costs the host a row, not an instance.
pub const DEFAULT_WAITING_GRACE: Duration = Duration::from_secs(10);

/// Instances that tasks waiting for a confirmation may hold at once on one
/// host: a quarter of the default pool of 1,000, so waits never starve new
/// work of instances.
pub const DEFAULT_MAX_WAITING_INSTANCES: u32 = 256;

/// How the host runs tasks. Defaults: 256 tasks running at once over all
/// modules, 16 blocking threads, [`DEFAULT_MAX_ACTIVE_PER_ORG`] active
/// tasks per organization, host id [`super::store::LOCAL_HOST`], leases of
/// [`DEFAULT_LEASE`], a poll every [`DEFAULT_CLAIM_POLL`], waits that keep
/// their instance for [`DEFAULT_WAITING_GRACE`], at most
/// [`DEFAULT_MAX_WAITING_INSTANCES`] of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOptions {
    /// Background tasks running at once, over all modules.
    pub max_running: u32,
    /// Threads of the blocking pool (`run-blocking`), of which one module
    /// holds at most half; more callers than that at once get
    /// `limit-exceeded`.
    pub blocking_threads: u32,
    /// Active (pending, running, waiting) tasks one organization may have
    /// over all modules; a submission past it gets `limit-exceeded`.
    pub max_active_per_org: u32,
    /// The name this host claims tasks under: the same across its restarts,
    /// unique among the hosts sharing its store.
    pub host: HostId,
    /// How long a claim lasts unless renewed.
    pub lease: Duration,
    /// How often to look for pending tasks unannounced.
    pub claim_poll: Duration,
    /// How long a resumable task waiting for a confirmation keeps its
    /// instance; past it the task waits as a row in the store, and the
    /// answer runs it again from its checkpoint.
    pub waiting_grace: Duration,
    /// Instances tasks waiting for a confirmation may hold at once. Past
    /// it a resumable task gives its instance up at once, and one that is
    /// not resumable is refused (`limit-exceeded`).
    pub max_waiting_instances: u32,
}

impl Default for TaskOptions {
    fn default() -> Self {
        TaskOptions {
            max_running: 256,
            blocking_threads: 16,
            max_active_per_org: DEFAULT_MAX_ACTIVE_PER_ORG,
            host: HostId::local(),
            lease: DEFAULT_LEASE,
            claim_poll: DEFAULT_CLAIM_POLL,
            waiting_grace: DEFAULT_WAITING_GRACE,
            max_waiting_instances: DEFAULT_MAX_WAITING_INSTANCES,
        }
    }
}

/// How the caller of `run-background` wants the task run.
#[derive(Debug, Clone, Default)]
pub struct SubmitOptions {
    pub task_key: Option<String>,
    pub title: Option<String>,
    pub resumable: bool,
}

/// The task a call runs inside.
#[derive(Debug, Clone)]
pub struct TaskScope {
    /// The claim the task runs under; the task's own writes carry it.
    pub lease: Lease,
    /// The last stored checkpoint, for `context.checkpoint`.
    pub checkpoint: Option<String>,
    /// Whether this call is the task's own run (which may pause for a
    /// confirmation), rather than a blocking call made from it.
    pub is_run: bool,
    /// Whether the task may be run again from its checkpoint, so a wait for
    /// a confirmation may give up its instance.
    pub resumable: bool,
}

impl TaskScope {
    pub fn task_id(&self) -> &str {
        &self.lease.task_id
    }
}

/// What the task service knows of one module: what it offers and what its
/// manifest grants. Built once when the module loads.
#[derive(Debug, Clone)]
pub struct ModuleTasks {
    pub name: String,
    /// Its background tasks, as `describe` listed them.
    pub tasks: BTreeSet<String>,
    /// Its blocking functions.
    pub blocking: BTreeSet<String>,
    pub grant: TasksGrant,
}

impl ModuleTasks {
    /// Refuses a `name` that is not among `names` (the module's tasks or
    /// blocking functions), quoting it bounded.
    pub(super) fn offers(
        &self,
        names: &BTreeSet<String>,
        kind: &str,
        name: &str,
    ) -> Result<(), SdkError> {
        if names.contains(name) {
            return Ok(());
        }
        Err(SdkError::invalid(format!(
            "module `{}` has no {kind} `{}`",
            self.name,
            escape_controls(truncate(name, MAX_QUOTED_NAME_BYTES))
        )))
    }
}

/// What a call may use of `interface tasks` and `background-tasks`: the
/// service, and its own module's facts.
#[derive(Debug, Clone)]
pub struct TasksCtx {
    pub service: Arc<TaskService>,
    pub module: Arc<ModuleTasks>,
}

/// A boxed, sendable future that owns what it needs.
pub type RunFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a call into a module returned: the guest's own answer (a JSON
/// result or its typed error), or why it produced none.
pub type Returned = Result<Result<String, SdkError>, CallError>;

/// One run of a background task.
#[derive(Debug, Clone)]
pub struct TaskRun {
    pub row: TaskRow,
    /// The claim it runs under.
    pub lease: Lease,
    /// The submitter's, as stored with the task.
    pub identity: Arc<Identity>,
    pub cancel: CancelToken,
}

/// One blocking call.
#[derive(Debug, Clone)]
pub struct BlockingCall {
    pub identity: Arc<Identity>,
    /// The task the caller runs inside, if any (never its own run).
    pub task: Option<TaskScope>,
    pub cancel: Option<CancelToken>,
    pub function: String,
    pub args_json: String,
}

/// Runs module code for the task service.
pub trait TaskRunner: Send + Sync + 'static {
    /// `run-task` of the row's module in a fresh instance, with the
    /// submitter's identity plus the task, under the module's task deadline.
    /// `tasks` is the service the run's own host calls go to.
    fn run_task(self: Arc<Self>, tasks: Arc<TaskService>, run: TaskRun) -> RunFuture<Returned>;

    /// `call-blocking` of the caller's module in a fresh instance, under the
    /// module's blocking deadline. Called on a thread of the blocking pool.
    fn call_blocking(
        self: Arc<Self>,
        tasks: Arc<TaskService>,
        call: BlockingCall,
    ) -> RunFuture<Returned>;

    /// Whether `identity` may start new background work of its module now,
    /// as far as the host's other limits go (its data directory's quota);
    /// asked before a task is stored. `Err` is what the submitter is told.
    fn admit(self: Arc<Self>, identity: Arc<Identity>) -> RunFuture<Result<(), SdkError>>;
}

/// A task running on this host.
#[derive(Debug)]
pub(super) struct Running {
    pub cancel: CancelToken,
    pub lease: Lease,
    /// The waiting `request-confirmation`, if any.
    pub answer: Option<oneshot::Sender<StoredAnswer>>,
}

/// The task capability: the store, the event bus, the scheduler, the
/// blocking pool and the tasks running here.
pub struct TaskService {
    pub(super) store: Arc<dyn TaskStore>,
    pub(super) events: EventHub,
    pub(super) scheduler: Scheduler,
    pub(super) runner: Arc<dyn TaskRunner>,
    /// The blocking pool's threads, counted per module.
    pub(super) blocking: Arc<Shares>,
    /// [`TaskOptions::max_active_per_org`].
    max_active_per_org: u32,
    /// [`TaskOptions::host`].
    pub(super) host: HostId,
    /// [`TaskOptions::lease`].
    pub(super) lease: Duration,
    /// [`TaskOptions::claim_poll`].
    pub(super) claim_poll: Duration,
    /// Wakes the claimer.
    pub(super) claims: Arc<Notify>,
    /// Whether the store tells other hosts (so task events go to them too).
    shared: bool,
    /// Announcements on their way to the store, in order; sent by one task
    /// that [`TaskService::start`] starts.
    announcing: mpsc::Sender<Announcement>,
    pub(super) to_announce: Mutex<Option<mpsc::Receiver<Announcement>>>,
    running: Mutex<HashMap<String, Running>>,
    /// Waits for confirmations: the instances they hold, and when parked
    /// ones expire.
    pub(super) waits: Arc<Waits>,
    /// Where submissions and answers are recorded.
    pub(super) audit: AuditTrail,
}

impl std::fmt::Debug for TaskService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskService").finish_non_exhaustive()
    }
}

impl TaskService {
    pub fn new(
        store: Arc<dyn TaskStore>,
        runner: Arc<dyn TaskRunner>,
        options: TaskOptions,
        events: EventHub,
        audit: AuditTrail,
    ) -> Arc<Self> {
        let (announcing, to_announce) = mpsc::channel(ANNOUNCE_QUEUE);
        Arc::new(TaskService {
            shared: store.announcements().is_some(),
            announcing,
            to_announce: Mutex::new(Some(to_announce)),
            store,
            events,
            scheduler: Scheduler::new(options.max_running),
            runner,
            blocking: Shares::new(options.blocking_threads),
            max_active_per_org: options.max_active_per_org,
            host: options.host,
            lease: options.lease,
            claim_poll: options.claim_poll,
            claims: Arc::new(Notify::new()),
            running: Mutex::default(),
            waits: Arc::new(Waits::new(
                options.waiting_grace,
                options.max_waiting_instances,
            )),
            audit,
        })
    }

    /// Makes a loaded module's tasks runnable here: until then, this host
    /// claims none of them.
    pub fn configure(&self, module: &ModuleTasks) {
        self.scheduler
            .set_cap(&module.name, module.grant.max_concurrent);
        self.pump();
    }

    /// The name this host claims tasks under.
    pub fn host_id(&self) -> &HostId {
        &self.host
    }

    pub fn store(&self) -> &Arc<dyn TaskStore> {
        &self.store
    }

    pub fn events(&self) -> &EventHub {
        &self.events
    }

    /// Publishes a task event to this host's subscribers and, on a shared
    /// store, to every other host's.
    pub(super) fn publish(&self, subject: Subject, kind: EventKind) {
        if self.shared {
            let what = Announcement::Event {
                subject: subject.clone(),
                event: kind.clone(),
            };
            self.announce(what);
        }
        self.events.send(subject, kind);
    }

    /// Tells the other hosts of the store `what`, in the background and in
    /// order; when the queue is full it is dropped: an announcement only
    /// hastens what their renewals and polls would do.
    pub(super) fn announce(&self, what: Announcement) {
        if self.shared && self.announcing.try_send(what).is_err() {
            tracing::debug!("announcement queue full; one announcement dropped");
        }
    }

    pub(super) fn running(&self) -> MutexGuard<'_, HashMap<String, Running>> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Validates and stores a new task of `module` for `identity`, then
    /// wakes the claimer. The id is returned only once the row is committed;
    /// a refusal is on the audit trail by then, and a submission's record
    /// follows at the next commit. `within` is the task whose run submits
    /// it, which its record names.
    pub async fn submit(
        self: &Arc<Self>,
        module: &ModuleTasks,
        identity: &Identity,
        within: Option<&str>,
        task: &str,
        args_json: &str,
        options: SubmitOptions,
    ) -> Result<String, SdkError> {
        let entry = AuditEntry::new(
            identity,
            within,
            crate::text::truncate(task, policy::MAX_TASK_KEY_BYTES),
            Detail::Task(TaskDetail {
                task_key: options
                    .task_key
                    .as_deref()
                    .map(|k| crate::text::truncate(k, policy::MAX_TASK_KEY_BYTES).to_owned()),
                created: None,
                existing: false,
            }),
        );
        let admitted = async {
            module.offers(&module.tasks, "task", task)?;
            policy::args(args_json)?;
            if let Some(k) = &options.task_key {
                policy::task_key(k)?;
            }
            if let Some(t) = &options.title {
                policy::short_text("title", t, policy::MAX_TITLE_BYTES)?;
            }
            // Before the store: a refused task starts nothing, even one whose
            // key is held by an active task.
            self.runner.clone().admit(Arc::new(identity.clone())).await
        };
        if let Err(e) = admitted.await {
            self.audit_refusal(entry, &e).await;
            return Err(e);
        }
        let grant = &module.grant;
        let new = NewTask {
            id: uuid::Uuid::now_v7().to_string(),
            module: module.name.clone(),
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
                max_active_per_org: self.max_active_per_org,
            },
        };
        // Stored, recorded and announced on a task of its own: once the row
        // is written the trail and the claimer hear of it, even if the
        // caller is stopped meanwhile.
        let service = self.clone();
        let for_existing = entry.clone();
        let stored = tokio::spawn(async move {
            let task = Subject {
                task_id: Some(new.id.clone()),
                module: new.module.clone(),
                organization_id: new.organization_id.clone(),
                user_id: new.user_id.clone(),
            };
            let created = EventKind::TaskCreated {
                task_name: new.task_name.clone(),
                title: new.title.clone(),
            };
            let submitted = service.store.submit(new).await.map_err(store_err)?;
            match &submitted {
                // Off the submitter's path: the task's row already says who
                // submitted it, and a second commit per submit would halve
                // what a closed loop of submitters gets.
                Submitted::Created(id) => service.audit.record_later(made(entry, id, false)),
                // Recorded once it is known whether the submitter may see it.
                Submitted::Existing(_) => {}
                Submitted::LimitExceeded(reason) => {
                    let refusal = SdkError::LimitExceeded(reason.clone());
                    service.audit.record_or_log(entry.refused(&refusal)).await;
                }
            }
            if let Submitted::Created(_) = &submitted {
                let module = task.module.clone();
                service.publish(task.clone(), created);
                service.publish(task, status_event(Status::Pending));
                service.wake(&module);
            }
            Ok::<_, SdkError>(submitted)
        });
        let submitted = stored.await.map_err(|e| {
            tracing::error!(error = %e, "a task submission panicked");
            SdkError::Internal("the task could not be stored; see the host's log".into())
        })??;
        match submitted {
            Submitted::Created(id) => Ok(id),
            // Keys deduplicate across the organization's users; one who may
            // not read the others' tasks learns that the key is taken, not
            // whose task holds it.
            Submitted::Existing(id) => {
                let visible = self
                    .store
                    .get(&id, &read_scope(module, identity))
                    .await
                    .map_err(store_err)?;
                match visible {
                    Some(_) => {
                        self.audit.record_later(made(for_existing, &id, true));
                        Ok(id)
                    }
                    None => {
                        // Not the other user's task id: the record is the
                        // submitter's to read.
                        let refusal =
                            SdkError::invalid("the task key is held by another user's active task");
                        self.audit_refusal(for_existing, &refusal).await;
                        Err(refusal)
                    }
                }
            }
            Submitted::LimitExceeded(reason) => Err(SdkError::LimitExceeded(reason)),
        }
    }

    /// Records a refused submission or answer; an error that is the host's
    /// own (a store that failed) is no decision and is only logged where it
    /// happened.
    pub(super) async fn audit_refusal(&self, entry: AuditEntry, error: &SdkError) {
        if matches!(
            error,
            SdkError::PermissionDenied(_) | SdkError::InvalidInput(_) | SdkError::LimitExceeded(_)
        ) {
            self.audit.record_or_log(entry.refused(error)).await;
        }
    }

    /// Stores progress (and a label, a checkpoint) of an active task of the
    /// caller's module and organization, and tells watchers.
    pub async fn update_progress(
        &self,
        identity: &Identity,
        task: Option<&TaskScope>,
        task_id: &str,
        progress: f64,
        label: Option<String>,
        checkpoint_json: Option<String>,
    ) -> Result<(), SdkError> {
        let id = policy::task_id(task_id)?;
        let progress = policy::progress(progress)?;
        if let Some(l) = &label {
            policy::short_text("label", l, policy::MAX_LABEL_BYTES)?;
        }
        if let Some(c) = &checkpoint_json {
            policy::json_text("checkpoint", c, policy::MAX_CHECKPOINT_BYTES)?;
        }
        // Progress is the task's own: its run, or its user.
        if self
            .store
            .get(&id, &own_scope(identity))
            .await
            .map_err(store_err)?
            .is_none()
        {
            return Err(SdkError::NotFound);
        }
        // The task's own run writes under its claim (fenced); anyone else's
        // progress write (an action of the task's user) does not.
        let lease = task.map(|t| &t.lease).filter(|l| l.task_id == id);
        let owner = Owner {
            module: identity.module.clone(),
            organization_id: identity.organization_id().to_string(),
        };
        let update = ProgressUpdate {
            progress,
            label: label.clone(),
            checkpoint_json,
        };
        match self
            .store
            .update_progress(&id, &owner, lease, update)
            .await
            .map_err(store_err)?
        {
            ProgressResult::Updated(row) => {
                self.publish(
                    task_ref(&row),
                    EventKind::Progress {
                        progress,
                        label,
                        persisted: true,
                    },
                );
                Ok(())
            }
            ProgressResult::NotFound => Err(SdkError::NotFound),
            ProgressResult::NotActive => Err(SdkError::invalid("the task is no longer active")),
        }
    }

    /// Tells watchers of progress without storing it; without a value, the
    /// stored progress is sent again.
    pub async fn emit_progress(
        &self,
        identity: &Identity,
        task_id: &str,
        progress: Option<f64>,
        label: Option<String>,
    ) -> Result<(), SdkError> {
        let id = policy::task_id(task_id)?;
        let progress = progress.map(policy::progress).transpose()?;
        if let Some(l) = &label {
            policy::short_text("label", l, policy::MAX_LABEL_BYTES)?;
        }
        let row = self
            .store
            .get(&id, &own_scope(identity))
            .await
            .map_err(store_err)?
            .ok_or(SdkError::NotFound)?;
        if !row.status.is_active() {
            return Err(SdkError::invalid("the task is no longer active"));
        }
        self.events
            .emit_progress(task_ref(&row), progress.unwrap_or(row.progress), label);
        Ok(())
    }

    /// `list-user-tasks`: another organization is never visible, another
    /// user only with the manifest's `read = "organization"`.
    pub async fn user_tasks(
        &self,
        module: &ModuleTasks,
        identity: &Identity,
        user_id: Option<String>,
        organization_id: Option<String>,
        limit: u32,
    ) -> Result<Vec<TaskRow>, SdkError> {
        let org = organization_id.unwrap_or_else(|| identity.organization_id().to_string());
        let user = user_id.unwrap_or_else(|| identity.user_id().to_string());
        if !policy::may_read_tasks_of(module.grant.read, &identity.principal, &user, &org) {
            return Ok(Vec::new());
        }
        let scope = Scope {
            module: identity.module.clone(),
            organization_id: org,
            user_id: Some(user),
        };
        let limit = policy::limit(limit, DEFAULT_LOOKUP_LIMIT, policy::MAX_LOOKUP_LIMIT);
        self.store.by_user(&scope, limit).await.map_err(store_err)
    }

    /// `get-tasks-by-key`: the caller's module and organization, newest
    /// first; the caller's own tasks unless the manifest grants the
    /// organization.
    pub async fn by_key(
        &self,
        module: &ModuleTasks,
        identity: &Identity,
        key: &str,
    ) -> Result<Vec<TaskRow>, SdkError> {
        policy::task_key(key)?;
        self.store
            .by_key(&read_scope(module, identity), key, policy::MAX_LOOKUP_LIMIT)
            .await
            .map_err(store_err)
    }

    /// `get-tasks-by-key-prefix`: like [`TaskService::by_key`], every key
    /// starting with `prefix`.
    pub async fn by_key_prefix(
        &self,
        module: &ModuleTasks,
        identity: &Identity,
        prefix: &str,
        limit: u32,
    ) -> Result<Vec<TaskRow>, SdkError> {
        policy::key_prefix(prefix)?;
        let limit = policy::limit(limit, DEFAULT_LOOKUP_LIMIT, policy::MAX_LOOKUP_LIMIT);
        self.store
            .by_key_prefix(&read_scope(module, identity), prefix, limit)
            .await
            .map_err(store_err)
    }

    /// `background-tasks.list`: the caller's own tasks, or (with the
    /// manifest's `read = "organization"`) those of `user_id`.
    pub async fn read_list(
        &self,
        module: &ModuleTasks,
        identity: &Identity,
        user_id: Option<String>,
        filter: &TaskFilter,
        cursor: Option<&str>,
        limit: u32,
    ) -> Result<TaskPage, SdkError> {
        if !(1..=policy::MAX_PAGE_LIMIT).contains(&limit) {
            return Err(SdkError::invalid(format!(
                "limit must be 1..={}",
                policy::MAX_PAGE_LIMIT
            )));
        }
        let cursor = parse_cursor(cursor)?;
        if let Some(p) = &filter.key_prefix {
            policy::key_prefix(p)?;
        }
        let user = user_id.unwrap_or_else(|| identity.user_id().to_string());
        if user != identity.user_id().as_str() && module.grant.read != ReadScope::Organization {
            return Ok(TaskPage {
                tasks: Vec::new(),
                next_cursor: None,
            });
        }
        let scope = Scope {
            module: identity.module.clone(),
            organization_id: identity.organization_id().to_string(),
            user_id: Some(user),
        };
        self.store
            .list(&scope, filter, cursor.as_ref(), limit)
            .await
            .map_err(store_err)
    }

    /// `background-tasks.get`: args, results and checkpoints are the
    /// submitting user's, so another user's task is `not-found` unless the
    /// manifest grants the organization.
    pub async fn read_get(
        &self,
        module: &ModuleTasks,
        identity: &Identity,
        task_id: &str,
    ) -> Result<TaskRow, SdkError> {
        let id = policy::task_id(task_id)?;
        self.store
            .get(&id, &read_scope(module, identity))
            .await
            .map_err(store_err)?
            .ok_or(SdkError::NotFound)
    }
}

/// A submission's record, allowed: the task it made, or the active one of
/// its key that it returned.
fn made(mut entry: AuditEntry, task_id: &str, existing: bool) -> AuditEntry {
    if let Detail::Task(d) = &mut entry.detail {
        d.created = Some(task_id.to_owned());
        d.existing = existing;
    }
    entry
}

/// What the caller may see of its module's tasks in its organization: its
/// own, or every user's where the manifest grants `read = "organization"`.
fn read_scope(module: &ModuleTasks, identity: &Identity) -> Scope {
    Scope {
        module: identity.module.clone(),
        organization_id: identity.organization_id().to_string(),
        user_id: (module.grant.read != ReadScope::Organization)
            .then(|| identity.user_id().to_string()),
    }
}

/// The caller's own tasks of its module in its organization.
fn own_scope(identity: &Identity) -> Scope {
    Scope {
        module: identity.module.clone(),
        organization_id: identity.organization_id().to_string(),
        user_id: Some(identity.user_id().to_string()),
    }
}

pub(super) fn parse_cursor(cursor: Option<&str>) -> Result<Option<Cursor>, SdkError> {
    cursor
        .map(|c| {
            c.parse::<Cursor>()
                .map_err(|e| SdkError::invalid(e.to_string()))
        })
        .transpose()
}

/// A status event.
pub(super) fn status_event(status: Status) -> EventKind {
    EventKind::Status {
        status: status.as_str().to_owned(),
        host: None,
    }
}

/// A status event of a run on `host`.
pub(super) fn run_status_event(status: Status, host: &HostId) -> EventKind {
    EventKind::Status {
        status: status.as_str().to_owned(),
        host: Some(host.to_string()),
    }
}

pub(super) fn task_ref(row: &TaskRow) -> Subject {
    Subject {
        task_id: Some(row.id.clone()),
        module: row.module.clone(),
        organization_id: row.organization_id.clone(),
        user_id: row.user_id.clone(),
    }
}

/// A store failure as the caller sees it: logged here, never shown. A run
/// whose task another host took learns only that it is no longer active.
pub(crate) fn store_err(e: TaskStoreError) -> SdkError {
    if let TaskStoreError::LeaseLost { task_id } = &e {
        tracing::warn!(task_id, "a write of a run whose task another host took");
        return SdkError::invalid("the task is no longer active on this host");
    }
    tracing::error!(error = %e, "task store failed");
    match e {
        TaskStoreError::Full(_) => SdkError::LimitExceeded(
            "the host's storage is full, so nothing was stored; try again later".into(),
        ),
        TaskStoreError::Uncertain(_) => SdkError::Internal(
            "the task store failed while storing this and may not have kept it; \
             look before trying again"
                .into(),
        ),
        _ => SdkError::Internal("the task store failed; see the host's log".into()),
    }
}

/// The submitter's identity, as stored with the task.
pub(super) fn identity_of(row: &TaskRow) -> Result<Identity, String> {
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
