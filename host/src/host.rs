//! [`Host`]: what an embedder holds, and the composition root of the rooms.
//!
//! It opens the database and the stores on it, builds the engine, the task
//! service and the subprocess service, loads modules (configuring each
//! service with the module's own grant), and calls into them. It is also
//! the [`TaskRunner`] the task service starts runs through: every call,
//! whoever makes it, goes through one path ([`invoke`]) in a fresh sandbox
//! whose identity is built here from the caller's [`Principal`] and request,
//! never supplied by a module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::audit::{
    self, AuditError, AuditFilter, AuditRecord, AuditStore, AuditTrail, PgAuditStore,
    SqliteAuditStore,
};
use crate::cancel::CancelToken;
use crate::data_quota::{DataQuotaOptions, DataUsage, Full, WriteGuard};
use crate::db::{Db, DbError, Durability, SqliteFile, SqliteOptions};
use crate::engine::{EngineError, EngineOptions, HostEngine};
use crate::error::{CallError, SdkError};
use crate::identity::{Identity, OrgId, Principal, RequestMeta};
use crate::manifest::LoadEnv;
use crate::modules::invoke::{Answer, Export, invoke};
use crate::modules::{self, Description, LoadedModule, ModuleError};
use crate::network::{ModuleNetwork, NetworkCtx, NetworkOptions, TlsRootsError};
use crate::pg::PgDatabase;
use crate::retention::{self, Pruned, RetentionError, RetentionOptions};
use crate::sandbox::CallSpec;
use crate::share::{Refused, Share, Shares};
use crate::subprocess::{ModuleSubprocess, SubprocessCtx, SubprocessOptions, SubprocessService};
use crate::tasks::api::Tasks;
use crate::tasks::store::postgres::PgTaskStore;
use crate::tasks::store::sqlite::SqliteTaskStore;
use crate::tasks::store::{self, Recovery, TaskStore, TaskStoreError};
use crate::tasks::{
    BlockingCall, CallerStops, Returned, RunFuture, SubmitOptions, TaskOptions, TaskRun,
    TaskRunner, TaskScope, TaskService, TasksCtx, policy,
};
use crate::ui::ActionOutput;

/// Largest JSON argument accepted for a call.
pub const MAX_ARGS_BYTES: usize = policy::MAX_ARGS_BYTES;

/// What a call stopped from outside is given on top of a child's SIGTERM
/// grace to end by itself: longer than reaping the tree (1 s) and reading
/// what is left in its pipes (0.5 s), so the child's own path finishes and
/// is audited.
pub const STOP_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// How a [`Host`] is set up.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where the host keeps its state: module data directories under
    /// `data/<module>`, compiled components under `cache/`.
    pub state_dir: PathBuf,
    /// The SQLite database file.
    pub db_path: PathBuf,
    pub durability: Durability,
    pub engine: EngineOptions,
    /// Where programs granted to modules are looked up, and which directories
    /// they may never come from.
    pub load_env: LoadEnv,
    /// Background tasks running at once, over all modules.
    pub max_running_tasks: u32,
    /// Threads of the blocking pool (`run-blocking`), of which one module
    /// holds at most half; more callers than that at once get
    /// `limit-exceeded`.
    pub blocking_threads: u32,
    /// Active tasks one organization may have over all modules
    /// ([`crate::tasks::service::DEFAULT_MAX_ACTIVE_PER_ORG`] by default);
    /// each module's `[tasks]` quotas count within one organization too.
    pub max_active_tasks_per_org: u32,
    /// The name this host claims tasks under ([`store::LOCAL_HOST`] by
    /// default): keep it across restarts, and unique among the hosts that
    /// share one store, so a restarted host recovers its own runs at once
    /// and never another's.
    pub host_id: store::HostId,
    /// Where the tasks live: the embedded SQLite file at `db_path`
    /// (default), or a PostgreSQL database shared with other hosts
    /// ([`Host::open`]), which then also holds the tokens and the audit
    /// trail.
    pub task_store: TaskStoreLocation,
    /// How long a claimed task's lease lasts unless renewed (30 s): how long
    /// the tasks of a host that died wait before another host takes them.
    pub task_lease: std::time::Duration,
    /// How often the host looks for pending tasks nothing announced (2 s).
    pub claim_poll: std::time::Duration,
    /// How long a resumable task waiting for a confirmation keeps its
    /// instance (10 s): an answer within it goes on in place; past it the
    /// task waits as a row, and the answer runs it again from its
    /// checkpoint, where `request-confirmation` returns the answer.
    pub waiting_grace: std::time::Duration,
    /// Instances tasks waiting for a confirmation may hold at once (256):
    /// past it a resumable task gives its instance up at once, and one that
    /// is not resumable is refused with `limit-exceeded`.
    pub max_waiting_instances: u32,
    /// How long finished tasks and audit records are kept
    /// (30 and 90 days by default; see [`crate::retention`]).
    pub retention: RetentionOptions,
    /// The quota of each (module, organization) data directory whose
    /// manifest names none (1 GiB by default), and how long a measurement
    /// is reused; see [`crate::data_quota`] and [`Host`].
    pub data_quota: DataQuotaOptions,
    /// How children of `run-subprocess` are confined and capped.
    pub subprocess: SubprocessOptions,
    /// How outbound requests are made: the TLS roots beside Mozilla's.
    pub network: NetworkOptions,
    /// The module the host learns, if any (`None` by default): see
    /// [`Learning`].
    pub learn: Option<Learning>,
}

/// A module the host learns (`modhost serve --learn MODULE`), for a
/// development host of one organization. That organization's calls of the
/// module run with their requests *recorded instead of denied*: a
/// subprocess, a variable or a destination refused for want of a grant
/// widens the module's grant in memory by exactly what it needs (checked
/// as a manifest's grant is, and confining children as ever), and a data
/// directory is preopened even if the manifest grants none. Each is on
/// the audit trail as allowed, with [`crate::audit::LEARNED`] as its
/// reason, for `modhost manifest suggest`. Refused on a PostgreSQL store,
/// which other hosts and organizations share; calls of other
/// organizations run under the manifest's grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learning {
    pub module: String,
    pub organization: OrgId,
}

impl HostOptions {
    /// Defaults for a host keeping its state in `state_dir`: pooling
    /// allocator (1,000 instances), component cache in `state_dir/cache`,
    /// database `state_dir/modhost.db` with `synchronous=FULL`, programs
    /// looked up in `/usr/local/bin:/usr/bin:/bin`, 256 tasks running at
    /// once, 16 blocking threads, 10,000 active tasks per organization,
    /// finished tasks kept 30 days and audit records 90
    /// ([`RetentionOptions::default`]), data directories of at most 1 GiB
    /// per module and organization unless the manifest says otherwise, and
    /// children only where Landlock confines them
    /// ([`SubprocessOptions::default`]).
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        let tasks = TaskOptions::default();
        HostOptions {
            engine: EngineOptions {
                cache_dir: Some(state_dir.join("cache")),
                ..EngineOptions::default()
            },
            load_env: LoadEnv::host_default(),
            db_path: state_dir.join("modhost.db"),
            durability: Durability::Full,
            max_running_tasks: tasks.max_running,
            blocking_threads: tasks.blocking_threads,
            max_active_tasks_per_org: tasks.max_active_per_org,
            host_id: tasks.host,
            task_store: TaskStoreLocation::Embedded,
            task_lease: tasks.lease,
            claim_poll: tasks.claim_poll,
            waiting_grace: tasks.waiting_grace,
            max_waiting_instances: tasks.max_waiting_instances,
            retention: RetentionOptions::default(),
            data_quota: DataQuotaOptions::default(),
            subprocess: SubprocessOptions::default(),
            network: NetworkOptions::default(),
            learn: None,
            state_dir,
        }
    }
}

/// Why a host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Tasks(#[from] TaskStoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error(transparent)]
    TlsRoots(#[from] TlsRootsError),
    #[error(transparent)]
    Postgres(#[from] crate::pg::PgError),
    #[error(transparent)]
    Tokens(#[from] crate::auth::AuthError),
    /// A host on a shared store kept the embedded default host id.
    #[error(
        "a host on a shared PostgreSQL store needs a host id of its own (HostOptions::host_id, serve --host-id), not `local`"
    )]
    SharedHostId,
    /// Learning was asked of a host that serves other organizations.
    #[error(
        "learning module `{module}` for organization `{organization}` needs a host of that organization alone; live tokens name {}: revoke the others' tokens or use a state directory of its own",
        others.join(", ")
    )]
    LearningOthers {
        module: String,
        organization: OrgId,
        others: Vec<String>,
    },
    /// Learning was asked of a host on a shared store.
    #[error(
        "learning a module (serve --learn) is for a development host on its embedded SQLite: a PostgreSQL store is shared with other hosts and organizations"
    )]
    LearningShared,
    /// The host's own files would be readable by children.
    #[error(
        "{} lies under {}, which children may read: move the host's state (database, module data, compiled components) elsewhere",
        state.display(),
        read_path.display()
    )]
    StateReachable { state: PathBuf, read_path: PathBuf },
    #[error("cannot prepare the state directory {}: {source}", path.display())]
    State {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Owner-only permissions of the host's directories and database files.
const OWNER_ONLY_DIR: u32 = 0o700;
const OWNER_ONLY_FILE: u32 = 0o600;

/// Creates the state directory and the database file owner-only, and
/// refuses a state directory or database that a child could read: they
/// hold every module's data and every organization's tasks.
fn prepare_state(options: &HostOptions) -> Result<(), StartError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StartError::State { path, source }
    };
    // The component cache is left out: compiled code is no secret, and a
    // child cannot write where it may only read.
    let mut places = vec![options.state_dir.clone()];
    if let Some(dir) = options
        .db_path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        places.push(dir.to_path_buf());
    }
    for dir in &places {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::set_permissions(
        &options.state_dir,
        std::fs::Permissions::from_mode(OWNER_ONLY_DIR),
    )
    .map_err(io(&options.state_dir))?;
    for dir in &places {
        let state = dir.canonicalize().map_err(io(dir))?;
        for read in &options.subprocess.read_paths {
            let Ok(read_path) = read.canonicalize() else {
                continue;
            };
            if state.starts_with(&read_path) {
                return Err(StartError::StateReachable { state, read_path });
            }
        }
    }
    // Created owner-only before SQLite opens it: its journal files take the
    // database's permissions.
    let db = &options.db_path;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(OWNER_ONLY_FILE)
        .open(db)
        .map_err(io(db))?;
    for suffix in ["", "-wal", "-shm"] {
        let mut path = db.clone().into_os_string();
        path.push(suffix);
        let path = PathBuf::from(path);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(OWNER_ONLY_FILE))
                .map_err(io(&path))?;
        }
    }
    Ok(())
}

/// Why a directory of modules was not loaded at all.
#[derive(Debug, thiserror::Error)]
pub enum LoadDirError {
    #[error("cannot read modules directory {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "two module directories declare the module name `{name}`: {} and {}; rename one",
        first.display(),
        second.display()
    )]
    SameName {
        name: String,
        first: PathBuf,
        second: PathBuf,
    },
}

/// A module directory that failed to load, and why.
#[derive(Debug)]
pub struct LoadFailure {
    pub dir: PathBuf,
    pub error: ModuleError,
}

/// The modules, the engine they run on, and the services their calls
/// reach. Cheap to clone.
///
/// Data quota: while the data directory of a module for an organization is
/// at or over its quota (`[filesystem] max-mib`, or
/// [`HostOptions::data_quota`]), that module's calls for that organization
/// see `/data` read-only (reading and listing work; creating, writing,
/// renaming and deleting fail, as wasmtime-wasi offers no permission that
/// deletes without writing), and its new background tasks are refused with
/// `limit-exceeded` naming the quota, from the guest's `run-background` and
/// from [`Host::submit_task`] alike. Other organizations are not affected.
/// The size is checked when a call starts, so a call that started under the
/// quota may overshoot it by what it writes; children of `run-subprocess`
/// write to the same directory and are not stopped by the quota.
#[derive(Clone)]
pub struct Host {
    options: Arc<HostOptions>,
    db: Db,
    runner: Arc<Runner>,
    tasks: Arc<TaskService>,
    /// The audit trail: read here, pruned by retention.
    audit: AuditTrail,
    /// The bearer tokens: in `db`, or in the PostgreSQL database the hosts
    /// share.
    tokens: crate::auth::Tokens,
    /// Whether the pruning loop runs (started once, by `start_tasks`).
    pruning: Arc<std::sync::atomic::AtomicBool>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("state_dir", &self.options.state_dir)
            .field("modules", &self.module_names())
            .finish_non_exhaustive()
    }
}

/// What runs module code: the engine, the loaded modules, and the
/// subprocess service their calls reach. The task service reaches it as
/// its [`TaskRunner`]; it never holds the task service, so nothing here
/// keeps itself alive.
struct Runner {
    engine: HostEngine,
    modules: RwLock<BTreeMap<String, Arc<LoadedModule>>>,
    subprocess: Arc<SubprocessService>,
    /// Live instances per module: one module holds at most half the
    /// engine's, so its callers cannot take every organization's.
    instances: Arc<Shares>,
    /// The measured size of the data directories.
    data_usage: Arc<DataUsage>,
    /// The quota of a data directory whose manifest names none.
    default_data_max_bytes: u64,
    /// What outbound TLS trusts.
    tls: Arc<rustls::ClientConfig>,
    /// Where outbound requests are recorded.
    audit: AuditTrail,
}

/// Where a host keeps its tasks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TaskStoreLocation {
    /// The embedded SQLite database ([`HostOptions::db_path`]).
    #[default]
    Embedded,
    /// A PostgreSQL database (a `postgres://` URL), which several hosts may
    /// share: each claims pending tasks under its [`HostOptions::host_id`].
    Postgres(String),
}

impl Host {
    /// [`Host::new`], or, for [`TaskStoreLocation::Postgres`], the host on
    /// the PostgreSQL task store at that URL (connected and migrated first;
    /// an unreachable database fails here, naming the URL).
    pub async fn open(options: HostOptions) -> Result<Self, StartError> {
        let TaskStoreLocation::Postgres(url) = options.task_store.clone() else {
            return Self::new(options);
        };
        // A restarting host recovers every lease under its id at once: on a
        // shared store, the default id would take another host's live runs.
        if options.host_id.as_str() == store::LOCAL_HOST {
            return Err(StartError::SharedHostId);
        }
        if options.learn.is_some() {
            return Err(StartError::LearningShared);
        }
        let db = open_db(&options)?;
        let pg = Arc::new(PgDatabase::connect(&url).await?);
        let tasks = Arc::new(PgTaskStore::on(pg.clone()).await?);
        let tokens = crate::auth::Tokens::on_postgres(pg.clone()).await?;
        let audit = Arc::new(PgAuditStore::on(pg.clone()).await?);
        let mut host = Self::with_stores(options, db, tasks, audit)?;
        host.tokens = tokens;
        Ok(host)
    }

    /// Opens the database (migrating the host's, the task store's and the
    /// audit trail's tables) and builds the engine, on the embedded SQLite
    /// store. Modules are loaded next; call [`Host::start_tasks`] once they
    /// are, to recover tasks a previous run left and start the scheduler.
    pub fn new(options: HostOptions) -> Result<Self, StartError> {
        Self::new_with_task_store_layer(options, |store| store)
    }

    /// [`Host::new`] with the embedded task store seen through `layer`: a
    /// store of the embedder's that calls it (to count or trace its calls,
    /// or, in tests, to fail some).
    pub fn new_with_task_store_layer(
        options: HostOptions,
        layer: impl FnOnce(Arc<dyn TaskStore>) -> Arc<dyn TaskStore>,
    ) -> Result<Self, StartError> {
        let db = open_db(&options)?;
        let file = open_store_file(&options, &db)?;
        let tasks = layer(Arc::new(SqliteTaskStore::on(file.clone())?));
        let audit = Arc::new(SqliteAuditStore::on(file)?);
        Self::with_stores(options, db, tasks, audit)
    }

    /// A host on stores of the embedder's choosing; `db` keeps the tokens.
    /// A host learning a module ([`HostOptions::learn`]) is refused when
    /// `db`'s live tokens name another organization; whether the stores are
    /// shared with other hosts is the embedder's to know.
    pub fn with_stores(
        options: HostOptions,
        db: Db,
        task_store: Arc<dyn TaskStore>,
        audit: Arc<dyn AuditStore>,
    ) -> Result<Self, StartError> {
        options.retention.validate()?;
        if let Some(learn) = &options.learn {
            let others: Vec<String> = crate::auth::live_organizations(&db)?
                .into_iter()
                .filter(|org| *org != learn.organization)
                .map(|org| org.to_string())
                .collect();
            if !others.is_empty() {
                return Err(StartError::LearningOthers {
                    module: learn.module.clone(),
                    organization: learn.organization.clone(),
                    others,
                });
            }
        }
        let audit = AuditTrail::new(audit);
        let events = crate::events::EventHub::new();
        let subprocess = Arc::new(SubprocessService::new(
            options.subprocess.clone(),
            options.load_env.path_var(),
            audit.clone(),
            events.clone(),
        ));
        let runner = Arc::new(Runner {
            engine: HostEngine::new(&options.engine)?,
            modules: RwLock::new(BTreeMap::new()),
            subprocess,
            instances: Shares::new(options.engine.max_instances),
            data_usage: Arc::new(DataUsage::new(
                options.data_quota.measure_every,
                options.data_quota.min_remeasure,
            )),
            default_data_max_bytes: options.data_quota.default_max_bytes,
            tls: crate::network::client_config(&options.network)?,
            audit: audit.clone(),
        });
        let tasks = TaskService::new(
            task_store,
            runner.clone(),
            TaskOptions {
                max_running: options.max_running_tasks,
                blocking_threads: options.blocking_threads,
                max_active_per_org: options.max_active_tasks_per_org,
                host: options.host_id.clone(),
                lease: options.task_lease,
                claim_poll: options.claim_poll,
                waiting_grace: options.waiting_grace,
                max_waiting_instances: options.max_waiting_instances,
            },
            events,
            audit.clone(),
        );
        Ok(Host {
            options: Arc::new(options),
            tokens: crate::auth::Tokens::new(db.clone()),
            db,
            runner,
            tasks,
            audit,
            pruning: Arc::default(),
        })
    }

    pub fn engine(&self) -> &HostEngine {
        &self.runner.engine
    }

    pub fn options(&self) -> &HostOptions {
        &self.options
    }

    /// The database, shared with the token store.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The bearer tokens that prove principals to this host (and, on a
    /// shared PostgreSQL, to every host on it).
    pub fn token_store(&self) -> &crate::auth::Tokens {
        &self.tokens
    }

    /// Loads the module in `dir` (running its `[build]` command first when
    /// `build` is set) and makes it callable.
    pub async fn load_module(
        &self,
        dir: &Path,
        build: bool,
    ) -> Result<Arc<LoadedModule>, ModuleError> {
        let mut env = self.options.load_env.clone();
        env.sandbox_roots.push(self.options.state_dir.clone());
        env.sandbox_roots.push(dir.to_path_buf());
        // Compiling is CPU-bound and happens once per module at load time
        // (later loads hit the cache), so it runs inline.
        let linked = modules::link(&self.runner.engine, dir, &env, build)?;
        let name = linked.manifest.name.to_string();
        if self.module(&name).is_some() {
            return Err(ModuleError::Duplicate(name));
        }
        let data_dir = self.options.state_dir.join("data").join(&name);
        // Children of `run-subprocess` run inside the data directory, so a
        // subprocess grant needs one even without `[filesystem] data`.
        let learning = self
            .options
            .learn
            .as_ref()
            .filter(|l| l.module == name)
            .map(|l| l.organization.clone());
        let policy = &linked.manifest.policy;
        if policy.filesystem.data || !policy.subprocess.is_empty() || learning.is_some() {
            std::fs::create_dir_all(&data_dir).map_err(|e| ModuleError::DataDir {
                path: data_dir.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let description = self.describe(&linked, &name).await?;
        let tasks = Arc::new(modules::module_tasks(&name, &description, &linked.manifest));
        let mut subprocess = ModuleSubprocess::new(
            &name,
            linked.manifest.policy.subprocess.clone(),
            data_dir.clone(),
            self.options.state_dir.clone(),
        );
        let mut network = ModuleNetwork::new(
            &name,
            linked.manifest.policy.network.clone(),
            self.runner.tls.clone(),
        );
        if let Some(org) = &learning {
            tracing::warn!(module = %name, organization = %org, "learning: this module's requests for the organization are recorded instead of denied");
            subprocess = subprocess.learning(env.clone());
            network = network.learning();
        }
        let module = LoadedModule::new(
            linked,
            dir.to_path_buf(),
            data_dir,
            description,
            tasks,
            Arc::new(subprocess),
            Arc::new(network),
            learning,
        );
        let mut map = self
            .runner
            .modules
            .write()
            .expect("module map lock poisoned");
        if map.contains_key(&name) {
            return Err(ModuleError::Duplicate(name));
        }
        map.insert(name, module.clone());
        drop(map);
        // Runnable only once callable: a task started before the module is
        // in the map would find no module.
        self.tasks.configure(&module.tasks);
        Ok(module)
    }

    /// `describe` in a sandbox with no task and no subprocess context and
    /// no data directory: a module being loaded can start nothing and sees
    /// no organization's files.
    async fn describe(
        &self,
        linked: &modules::Linked,
        name: &str,
    ) -> Result<Description, ModuleError> {
        let limits = &linked.manifest.policy.limits;
        let spec = CallSpec {
            identity: Arc::new(Identity::loader(name)),
            task: None,
            memory_bytes: limits.memory_bytes,
            deadline: limits.call_deadline,
            data_dir: None,
            data_writable: false,
            cancel: None,
            tasks: None,
            subprocess: None,
            network: None,
            audit: None,
            learns_data: false,
            stop_grace: STOP_MARGIN,
        };
        let engine = self.runner.engine.engine();
        match invoke(engine, &linked.pre, name, spec, Export::Describe).await {
            Ok(Answer::Description(d)) => Description::from_wit(d),
            Ok(_) => Err(ModuleError::Describe("unexpected answer".into())),
            Err(e) => Err(ModuleError::Describe(e.to_string())),
        }
    }

    /// Loads every subdirectory of `dir` that holds a `module.toml`, in name
    /// order. Returns the failures; the modules that loaded are callable.
    /// Two directories that declare one module name load nothing: the first
    /// would otherwise own the other's route, data and tasks.
    pub async fn load_dir(
        &self,
        dir: &Path,
        build: bool,
    ) -> Result<Vec<LoadFailure>, LoadDirError> {
        let dirs = modules::module_dirs(dir).map_err(|source| LoadDirError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut named: BTreeMap<String, PathBuf> = BTreeMap::new();
        for d in &dirs {
            // A manifest that does not parse fails to load below, by itself.
            let Ok(manifest) = crate::manifest::load_dir(d, &self.options.load_env) else {
                continue;
            };
            let name = manifest.name.to_string();
            if let Some(first) = named.insert(name.clone(), d.clone()) {
                return Err(LoadDirError::SameName {
                    name,
                    first,
                    second: d.clone(),
                });
            }
        }
        let mut failures = Vec::new();
        for d in dirs {
            match self.load_module(&d, build).await {
                Ok(m) => {
                    tracing::info!(module = m.name(), dir = %d.display(), cached = m.cache_hit, "module loaded")
                }
                Err(error) => {
                    tracing::error!(dir = %d.display(), %error, "module not loaded");
                    failures.push(LoadFailure { dir: d, error });
                }
            }
        }
        Ok(failures)
    }

    pub fn module(&self, name: &str) -> Option<Arc<LoadedModule>> {
        self.runner.module(name)
    }

    pub fn modules(&self) -> Vec<Arc<LoadedModule>> {
        self.runner
            .modules
            .read()
            .expect("module map lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub fn module_names(&self) -> Vec<String> {
        self.runner
            .modules
            .read()
            .expect("module map lock poisoned")
            .keys()
            .cloned()
            .collect()
    }

    /// Runs `action` of `module` for `principal`, in a fresh sandbox.
    pub async fn call_action(
        &self,
        module: &str,
        action: &str,
        args_json: &str,
        principal: &Principal,
        request: RequestMeta,
    ) -> Result<ActionOutput, CallError> {
        let m = self
            .module(module)
            .ok_or_else(|| CallError::UnknownModule(module.to_owned()))?;
        if !m.description.has_action(action) {
            return Err(CallError::UnknownEntry {
                module: module.to_owned(),
                kind: "action",
                name: action.to_owned(),
            });
        }
        policy::args(args_json).map_err(|e| match e {
            SdkError::InvalidInput(reason) => CallError::InvalidInput(reason),
            other => CallError::InvalidInput(other.to_string()),
        })?;
        let identity = Arc::new(Identity::new(module, principal.clone(), request));
        let org = identity.organization_id();
        let data = self.runner.data_access(&m, org).await?;
        let children_room = self.runner.children_room(&m, org, data.as_ref()).await;
        let (spec, _written) = self.runner.spec(
            &m,
            identity.clone(),
            Call::Action,
            None,
            None,
            self.tasks.clone(),
            data,
            children_room,
        );
        let _instance = self.runner.instance(module)?;
        let export = Export::Action {
            name: action,
            args_json,
        };
        let engine = self.runner.engine.engine();
        let outcome = match invoke(engine, m.pre(), module, spec, export).await {
            Ok(Answer::Action(Ok(r))) => ActionOutput::from_wit(r).map_err(|e| CallError::Guest {
                module: module.to_owned(),
                error: SdkError::Internal(format!("module returned an invalid result: {e}")),
            }),
            Ok(Answer::Action(Err(error))) => Err(CallError::Guest {
                module: module.to_owned(),
                error,
            }),
            Ok(_) => Err(CallError::Internal("unexpected answer".into())),
            Err(e) => Err(e),
        };
        if let Err(e) = &outcome {
            tracing::info!(module, action, user_id = %identity.user_id(),
                organization_id = %identity.organization_id(), request_id = %identity.request_id,
                error = %e, "action failed");
        }
        outcome
    }

    /// Runs a blocking function of `module` for `principal` on the blocking
    /// pool, as `run-blocking` does for a guest.
    pub async fn call_blocking(
        &self,
        module: &str,
        function: &str,
        args_json: &str,
        principal: &Principal,
        request: RequestMeta,
    ) -> Result<String, SdkError> {
        let m = self.module(module).ok_or(SdkError::NotFound)?;
        let identity = Arc::new(Identity::new(module, principal.clone(), request));
        self.tasks
            .run_blocking(
                &m.tasks,
                identity,
                None,
                CallerStops::default(),
                function,
                args_json,
            )
            .await
    }

    /// Submits a background task of `module` for `principal`, as
    /// `run-background` does for a guest. Returns the task id once stored.
    pub async fn submit_task(
        &self,
        module: &str,
        task: &str,
        args_json: &str,
        options: SubmitOptions,
        principal: &Principal,
        request: RequestMeta,
    ) -> Result<String, SdkError> {
        let m = self.module(module).ok_or(SdkError::NotFound)?;
        let identity = Identity::new(module, principal.clone(), request);
        self.tasks
            .submit(&m.tasks, &identity, None, task, args_json, options)
            .await
    }

    /// Recovers the tasks a previous run left (interrupted, or queued again
    /// when resumable), starts running pending tasks, and starts deleting
    /// finished tasks and audit records past their retention (at once, then
    /// every `options.retention.every`). Call once, after the modules are
    /// loaded.
    pub async fn start_tasks(&self) -> Result<Recovery, TaskStoreError> {
        let recovery = self.tasks.start().await?;
        if !self.pruning.swap(true, std::sync::atomic::Ordering::SeqCst) {
            // Detached: the loop ends once the stores are dropped.
            drop(retention::spawn(
                self.tasks.store(),
                self.audit.store(),
                self.options.retention,
            ));
        }
        Ok(recovery)
    }

    /// Deletes the finished tasks and audit records past their retention
    /// now, in batches; what the periodic pass does, for an embedder that
    /// prunes on its own schedule.
    pub async fn prune(&self) -> Result<Pruned, RetentionError> {
        retention::prune_now(
            self.tasks.store().as_ref(),
            self.audit.store().as_ref(),
            &self.options.retention,
        )
        .await
    }

    /// The tasks as a principal sees them: cancel, answer confirmations,
    /// read tasks, watch events.
    pub fn tasks(&self) -> Tasks<'_> {
        Tasks::new(&self.tasks)
    }

    /// Every event of this host (tasks and subprocess decisions), unscoped:
    /// the HTTP stream filters it per principal.
    pub fn events(&self) -> &crate::events::EventHub {
        self.tasks.events()
    }

    /// The subprocess capability: what confines children here.
    pub fn subprocesses(&self) -> &SubprocessService {
        &self.runner.subprocess
    }

    /// The audit trail, newest first: every capability decision of every
    /// module (subprocesses, outbound HTTP, refused file operations, task
    /// submissions, confirmations answered), for the operator.
    pub async fn audit(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, AuditError> {
        self.audit.query(filter, limit).await
    }

    /// Waits, at most `grace`, for the audit records still being written
    /// off their callers' paths; call it when stopping.
    pub async fn settle_audit(&self, grace: std::time::Duration) -> bool {
        self.audit.settled(grace).await
    }

    /// The audit trail as `by` reads it, newest first: an admin the whole
    /// organization's, anyone else the records of their own calls.
    pub async fn audit_for(
        &self,
        by: &Principal,
        filter: AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, SdkError> {
        self.audit.query_for(by, filter, limit).await
    }
}

/// The organizations with live tokens in the SQLite file `options` name:
/// the one a development host may learn a module for, when there is one.
pub fn token_organizations(options: &HostOptions) -> Result<Vec<OrgId>, StartError> {
    Ok(crate::auth::live_organizations(&open_db(options)?)?)
}

/// Checks the options, prepares the state directory, and opens the host's
/// SQLite file (its own tables migrated).
fn open_db(options: &HostOptions) -> Result<Db, StartError> {
    options.retention.validate()?;
    prepare_state(options)?;
    Ok(Db::open(&options.db_path, options.durability)?)
}

/// The writer and readers of the host's SQLite file for the task store and
/// the audit trail, their tables migrated.
fn open_store_file(options: &HostOptions, db: &Db) -> Result<Arc<SqliteFile>, StartError> {
    {
        let conn = db.lock();
        store::apply_schema(&conn).map_err(DbError::from)?;
        crate::db::migrate::apply(&conn, &audit::MIGRATION_LIST).map_err(DbError::from)?;
    }
    Ok(Arc::new(SqliteFile::open(
        &options.db_path,
        SqliteOptions {
            durability: options.durability,
            ..SqliteOptions::default()
        },
    )?))
}

/// Which kind of call a store is built for: each has its own deadline.
#[derive(Debug, Clone, Copy)]
enum Call {
    Action,
    Task,
    Blocking,
}

/// A call whose export answers JSON: a task's run or a blocking function.
struct JsonCall {
    module: String,
    identity: Arc<Identity>,
    call: Call,
    task: Option<TaskScope>,
    cancel: Option<CancelToken>,
    name: String,
    args_json: String,
}

impl Runner {
    fn module(&self, name: &str) -> Option<Arc<LoadedModule>> {
        self.modules
            .read()
            .expect("module map lock poisoned")
            .get(name)
            .cloned()
    }

    /// An instance slot of `module` for one call; `Busy` when the module
    /// holds its share (a task then waits and is run again later).
    fn instance(&self, module: &str) -> Result<Share, CallError> {
        let total = self.instances.total();
        let share = (total / 2).max(1);
        self.instances.take(module, share).map_err(|refused| {
            CallError::Busy(match refused {
                Refused::Owner => format!(
                    "module `{module}` holds its share of instances: {share} of the host's {total}"
                ),
                Refused::Total => format!("no free instance slot for module `{module}`"),
            })
        })
    }

    /// The quota of each of `m`'s data directories.
    fn data_max_bytes(&self, m: &LoadedModule) -> u64 {
        m.manifest
            .policy
            .filesystem
            .max_bytes
            .unwrap_or(self.default_data_max_bytes)
    }

    /// Whether `m`'s data directory of `org` is full; `Ok` when the module
    /// has none.
    async fn data_room(&self, m: &LoadedModule, org: &OrgId) -> Result<(), Full> {
        if !m.manifest.policy.filesystem.data && !m.may_launch(org) {
            return Ok(());
        }
        let dir = org.data_dir_in(&m.data_dir);
        self.data_usage
            .check(&dir, self.data_max_bytes(m))
            .await
            .map(|_| ())
    }

    /// Whether `m`'s children may run for `org`: not while the data
    /// directory they work in is full. `true` for a module with no
    /// subprocess grant.
    /// `data` is what [`Runner::data_access`] found: a writable preopen is
    /// the same directory, under its quota.
    async fn children_room(
        &self,
        m: &LoadedModule,
        org: &OrgId,
        data: Option<&(PathBuf, bool)>,
    ) -> bool {
        if !m.may_launch(org) {
            return true;
        }
        if let Some((_, writable)) = data {
            return *writable;
        }
        match self.data_room(m, org).await {
            Ok(()) => true,
            Err(full) => {
                tracing::info!(module = m.name(), organization_id = %org, %full, "data directory full: the call's children are refused");
                false
            }
        }
    }

    /// The data directory a call of `m` for `org` preopens, if the manifest
    /// grants one, and whether the call may write to it (not while it is
    /// full).
    async fn data_access(
        &self,
        m: &LoadedModule,
        org: &OrgId,
    ) -> Result<Option<(PathBuf, bool)>, CallError> {
        let dir = m.granted_data_dir(org).map_err(|e| {
            tracing::error!(module = m.name(), error = %e, "cannot create an organization's data directory");
            CallError::Internal("cannot open the module's data directory; see the host's log".into())
        })?;
        let Some(dir) = dir else {
            return Ok(None);
        };
        let writable = match self.data_usage.check(&dir, self.data_max_bytes(m)).await {
            Ok(_) => true,
            Err(full) => {
                tracing::info!(module = m.name(), organization_id = %org, %full, "data directory full: the call sees it read-only");
                false
            }
        };
        Ok(Some((dir, writable)))
    }

    /// The store of one call of `m`: its limits, its data directory (from
    /// [`Runner::data_access`]), and the contexts of the capabilities it may
    /// use, each holding `m`'s own grant. The guard marks a writable data
    /// directory written when the call is over.
    #[expect(clippy::too_many_arguments, reason = "one call's whole description")]
    fn spec(
        &self,
        m: &LoadedModule,
        identity: Arc<Identity>,
        call: Call,
        task: Option<TaskScope>,
        cancel: Option<CancelToken>,
        tasks: Arc<TaskService>,
        data: Option<(PathBuf, bool)>,
        children_room: bool,
    ) -> (CallSpec, Option<WriteGuard>) {
        // Children write to the organization's directory too, with or
        // without a WASI preopen.
        let children_write = children_room && m.may_launch(identity.organization_id());
        let learning = m.learns_for(identity.organization_id());
        let learns_data = learning && !m.manifest.policy.filesystem.data;
        let written = data
            .as_ref()
            .filter(|(_, writable)| *writable)
            .map(|(dir, _)| dir.clone())
            .or_else(|| children_write.then(|| identity.organization_id().data_dir_in(&m.data_dir)))
            .map(|dir| WriteGuard::new(self.data_usage.clone(), dir));
        let data_writable = data.as_ref().is_some_and(|(_, writable)| *writable);
        let data_dir = data.map(|(dir, _)| dir);
        let limits = &m.manifest.policy.limits;
        let deadline = match call {
            Call::Action => limits.call_deadline,
            Call::Task => limits.task_deadline,
            Call::Blocking => limits.blocking_deadline,
        };
        let spec = CallSpec {
            identity,
            task,
            memory_bytes: limits.memory_bytes,
            deadline,
            data_dir,
            data_writable,
            cancel,
            tasks: Some(TasksCtx {
                service: tasks,
                module: m.tasks.clone(),
            }),
            subprocess: Some(SubprocessCtx {
                service: self.subprocess.clone(),
                module: m.subprocess.clone(),
                data_full: !children_room,
                learning,
            }),
            network: Some(NetworkCtx {
                module: m.network.clone(),
                audit: self.audit.clone(),
                learning,
            }),
            audit: Some(self.audit.clone()),
            learns_data,
            stop_grace: self.subprocess.options().kill_grace + STOP_MARGIN,
        };
        (spec, written)
    }

    async fn json_call(self: Arc<Self>, tasks: Arc<TaskService>, c: JsonCall) -> Returned {
        let m = self
            .module(&c.module)
            .ok_or_else(|| CallError::UnknownModule(c.module.clone()))?;
        let _instance = self.instance(&c.module)?;
        let org = c.identity.organization_id();
        let data = self.data_access(&m, org).await?;
        let children_room = self.children_room(&m, org, data.as_ref()).await;
        let (spec, _written) = self.spec(
            &m,
            c.identity,
            c.call,
            c.task,
            c.cancel,
            tasks,
            data,
            children_room,
        );
        let (name, args_json) = (c.name.as_str(), c.args_json.as_str());
        let export = match c.call {
            Call::Task => Export::RunTask { name, args_json },
            Call::Action | Call::Blocking => Export::Blocking { name, args_json },
        };
        match invoke(self.engine.engine(), m.pre(), &c.module, spec, export).await? {
            Answer::Json(json) => Ok(json),
            _ => Err(CallError::Internal("unexpected answer".into())),
        }
    }
}

impl TaskRunner for Runner {
    fn run_task(self: Arc<Self>, tasks: Arc<TaskService>, run: TaskRun) -> RunFuture<Returned> {
        let call = JsonCall {
            module: run.row.module,
            identity: run.identity,
            call: Call::Task,
            task: Some(TaskScope {
                lease: run.lease,
                checkpoint: run.row.checkpoint_json,
                is_run: true,
                resumable: run.row.resumable,
            }),
            cancel: Some(run.cancel),
            name: run.row.task_name,
            args_json: run.row.args_json,
        };
        Box::pin(self.json_call(tasks, call))
    }

    fn call_blocking(
        self: Arc<Self>,
        tasks: Arc<TaskService>,
        call: BlockingCall,
    ) -> RunFuture<Returned> {
        let call = JsonCall {
            module: call.identity.module.clone(),
            identity: call.identity,
            call: Call::Blocking,
            task: call.task,
            cancel: call.cancel,
            name: call.function,
            args_json: call.args_json,
        };
        Box::pin(self.json_call(tasks, call))
    }

    fn admit(self: Arc<Self>, identity: Arc<Identity>) -> RunFuture<Result<(), SdkError>> {
        Box::pin(async move {
            let Some(m) = self.module(&identity.module) else {
                return Ok(());
            };
            self.data_room(&m, identity.organization_id())
                .await
                .map_err(|full| {
                    let key = if m.manifest.policy.filesystem.max_bytes.is_some() {
                        "[filesystem] max-mib"
                    } else {
                        "the host's data quota (--data-max-mib)"
                    };
                    SdkError::LimitExceeded(format!(
                        "{key}: {full}; no new background task may start"
                    ))
                })
        })
    }
}
