//! [`Host`]: what an embedder holds. The modules it loaded, the engine they
//! run on, the task runtime, and the calls into them.
//!
//! Every call gets a fresh sandbox whose identity is built here from the
//! caller's [`Principal`] and request: a module never supplies it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::engine::{EngineError, EngineOptions, HostEngine};
use crate::error::{CallError, SdkError};
use crate::identity::{Identity, Principal, RequestMeta};
use crate::manifest::LoadEnv;
use crate::modules::{self, Description, LoadedModule, ModuleError};
use crate::sandbox::{self, SandboxSpec, SandboxState};
use crate::store::{Db, Durability, StoreError};
use crate::tasks::runtime::{SubmitOptions, TaskRuntime};
use crate::tasks::store::{AuditFilter, AuditRecord, TaskStoreError};
use crate::tasks::subprocess::SubprocessOptions;
use crate::ui::ActionOutput;

/// Largest JSON argument accepted for a call.
pub const MAX_ARGS_BYTES: usize = 1024 * 1024;

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
    /// Threads of the blocking pool (`run-blocking`); more callers than this
    /// at once get `limit-exceeded`.
    pub blocking_threads: u32,
    /// How children of `run-subprocess` are confined and capped.
    pub subprocess: SubprocessOptions,
}

impl HostOptions {
    /// Defaults for a host keeping its state in `state_dir`: pooling
    /// allocator, component cache in `state_dir/cache`, database
    /// `state_dir/modhost.db` with `synchronous=FULL`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        HostOptions {
            engine: EngineOptions {
                cache_dir: Some(state_dir.join("cache")),
                ..EngineOptions::default()
            },
            load_env: LoadEnv::host_default(),
            db_path: state_dir.join("modhost.db"),
            durability: Durability::Full,
            max_running_tasks: 256,
            blocking_threads: 16,
            subprocess: SubprocessOptions::default(),
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
    Store(#[from] StoreError),
    #[error(transparent)]
    Tasks(#[from] TaskStoreError),
}

/// A module directory that failed to load, and why.
#[derive(Debug)]
pub struct LoadFailure {
    pub dir: PathBuf,
    pub error: ModuleError,
}

/// What every call and every task shares.
pub struct Core {
    pub(crate) engine: HostEngine,
    pub(crate) options: HostOptions,
    pub(crate) db: Db,
    modules: RwLock<BTreeMap<String, Arc<LoadedModule>>>,
    pub(crate) tasks: TaskRuntime,
}

/// The modules, the engine they run on, and the task runtime. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    core: Arc<Core>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("state_dir", &self.core.options.state_dir)
            .field("modules", &self.module_names())
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Opens the database (migrating it) and builds the engine. Modules are
    /// loaded next; call [`Host::start_tasks`] once they are, to recover
    /// tasks a previous run left and start the scheduler.
    pub fn new(options: HostOptions) -> Result<Self, StartError> {
        let db = Db::open(&options.db_path, options.durability)?;
        let tasks = TaskRuntime::open(&options)?;
        Ok(Host {
            core: Arc::new(Core {
                engine: HostEngine::new(&options.engine)?,
                options,
                db,
                modules: RwLock::new(BTreeMap::new()),
                tasks,
            }),
        })
    }

    pub fn engine(&self) -> &HostEngine {
        &self.core.engine
    }

    pub fn options(&self) -> &HostOptions {
        &self.core.options
    }

    /// The database, shared with the token store.
    pub fn db(&self) -> &Db {
        &self.core.db
    }

    /// Loads the module in `dir` (running its `[build]` command first when
    /// `build` is set) and makes it callable.
    pub async fn load_module(
        &self,
        dir: &Path,
        build: bool,
    ) -> Result<Arc<LoadedModule>, ModuleError> {
        let core = &self.core;
        let mut env = core.options.load_env.clone();
        env.sandbox_roots.push(core.options.state_dir.clone());
        env.sandbox_roots.push(dir.to_path_buf());
        // Compiling is CPU-bound and happens once per module at load time
        // (later loads hit the cache), so it runs inline.
        let linked = modules::link(&core.engine, dir, &env, build)?;
        let name = linked.manifest.name.to_string();
        if core.module(&name).is_some() {
            return Err(ModuleError::Duplicate(name));
        }
        let data_dir = core.options.state_dir.join("data").join(&name);
        // Children of `run-subprocess` run inside the data directory, so a
        // subprocess grant needs one even without `[filesystem] data`.
        let policy = &linked.manifest.policy;
        if policy.filesystem.data || !policy.subprocess.is_empty() {
            std::fs::create_dir_all(&data_dir).map_err(|e| ModuleError::DataDir {
                path: data_dir.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let description = core.describe(&linked, &name, &data_dir).await?;
        let module = LoadedModule::new(linked, dir.to_path_buf(), data_dir, description);
        let mut map = core.modules.write().expect("module map lock poisoned");
        if map.contains_key(&name) {
            return Err(ModuleError::Duplicate(name));
        }
        map.insert(name, module.clone());
        Ok(module)
    }

    /// Loads every subdirectory of `dir` that holds a `module.toml`, in name
    /// order. Returns the failures; the modules that loaded are callable.
    pub async fn load_dir(
        &self,
        dir: &Path,
        build: bool,
    ) -> Result<Vec<LoadFailure>, std::io::Error> {
        let dirs = modules::module_dirs(dir)?;
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
        self.core.module(name)
    }

    pub fn modules(&self) -> Vec<Arc<LoadedModule>> {
        self.core
            .modules
            .read()
            .expect("module map lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub fn module_names(&self) -> Vec<String> {
        self.core
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
        let core = &self.core;
        let m = core
            .module(module)
            .ok_or_else(|| CallError::UnknownModule(module.to_owned()))?;
        if !m.description.has_action(action) {
            return Err(CallError::UnknownEntry {
                module: module.to_owned(),
                kind: "action",
                name: action.to_owned(),
            });
        }
        check_args(args_json)?;
        let (action, args_json) = (action.to_owned(), args_json.to_owned());
        let identity = Arc::new(Identity::new(module, principal.clone(), request));
        let limits = &m.manifest.policy.limits;
        let mut store = sandbox::new_store(
            core.engine.engine(),
            SandboxSpec {
                core: core.clone(),
                identity: identity.clone(),
                task: None,
                memory_bytes: limits.memory_bytes,
                deadline: limits.call_deadline,
                data_dir: m.granted_data_dir(),
                cancel: None,
            },
        )?;
        let result = async {
            let instance = m.pre().instantiate_async(&mut store).await?;
            instance
                .call_handle_action(&mut store, &action, &args_json)
                .await
        }
        .await;
        let outcome = match result {
            Ok(Ok(r)) => ActionOutput::from_wit(r).map_err(|e| CallError::Guest {
                module: module.to_owned(),
                error: SdkError::Internal(format!("module returned an invalid result: {e}")),
            }),
            Ok(Err(e)) => Err(CallError::Guest {
                module: module.to_owned(),
                error: e.into(),
            }),
            Err(e) => Err(instantiate_or_trap(module, e, &store)),
        };
        if let Err(e) = &outcome {
            tracing::info!(module, action = %action, user_id = %identity.user_id(),
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
        let identity = Arc::new(Identity::new(module, principal.clone(), request));
        self.core
            .run_blocking(identity, None, None, function, args_json)
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
        if self.core.module(module).is_none() {
            return Err(SdkError::NotFound);
        }
        let identity = Identity::new(module, principal.clone(), request);
        self.core
            .submit_task(&identity, task, args_json, options)
            .await
    }

    /// Recovers the tasks a previous run left (interrupted, or queued again
    /// when resumable) and starts running pending tasks. Call once, after
    /// the modules are loaded.
    pub async fn start_tasks(&self) -> Result<crate::tasks::store::Recovery, TaskStoreError> {
        self.core.start_tasks().await
    }

    /// The task runtime: cancel, answer confirmations, read tasks, watch events.
    pub fn tasks(&self) -> crate::tasks::api::Tasks<'_> {
        crate::tasks::api::Tasks::new(&self.core)
    }

    /// The subprocess audit trail, newest first: every `run-subprocess`
    /// decision of every module, for the operator. Principals read their
    /// organization's share through [`Tasks::subprocess_audit`].
    ///
    /// [`Tasks::subprocess_audit`]: crate::tasks::api::Tasks::subprocess_audit
    pub fn subprocess_audit(
        &self,
        filter: &AuditFilter,
        limit: u32,
    ) -> Result<Vec<AuditRecord>, TaskStoreError> {
        self.core.tasks.store.subprocess_audit(filter, limit)
    }
}

impl Core {
    pub(crate) fn module(&self, name: &str) -> Option<Arc<LoadedModule>> {
        self.modules
            .read()
            .expect("module map lock poisoned")
            .get(name)
            .cloned()
    }

    async fn describe(
        self: &Arc<Self>,
        linked: &modules::Linked,
        name: &str,
        data_dir: &Path,
    ) -> Result<Description, ModuleError> {
        let limits = &linked.manifest.policy.limits;
        let mut store = sandbox::new_store(
            self.engine.engine(),
            SandboxSpec {
                core: self.clone(),
                identity: Arc::new(Identity::loader(name)),
                task: None,
                memory_bytes: limits.memory_bytes,
                deadline: limits.call_deadline,
                data_dir: linked.manifest.policy.filesystem.data.then_some(data_dir),
                cancel: None,
            },
        )
        .map_err(|e| ModuleError::Describe(e.to_string()))?;
        let result = async {
            let instance = linked.pre.instantiate_async(&mut store).await?;
            instance.call_describe(&mut store).await
        }
        .await;
        match result {
            Ok(d) => Description::from_wit(d),
            Err(e) => Err(ModuleError::Describe(
                sandbox::classify_failure(name, e, store.data()).to_string(),
            )),
        }
    }
}

/// A failure before the guest ran (pool exhausted) is `Busy`; anything else
/// is classified by what the store saw.
pub(crate) fn instantiate_or_trap(
    module: &str,
    e: wasmtime::Error,
    store: &wasmtime::Store<SandboxState>,
) -> CallError {
    if e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>()
        .is_some()
    {
        return CallError::Busy(format!("no free instance slot for module `{module}`"));
    }
    sandbox::classify_failure(module, e, store.data())
}

/// Arguments must be JSON and of bounded size before a module sees them.
pub fn check_args(args_json: &str) -> Result<(), CallError> {
    if args_json.len() > MAX_ARGS_BYTES {
        return Err(CallError::InvalidInput(format!(
            "arguments are {} bytes; the limit is {MAX_ARGS_BYTES}",
            args_json.len()
        )));
    }
    serde_json::from_str::<serde::de::IgnoredAny>(args_json)
        .map_err(|e| CallError::InvalidInput(format!("arguments are not JSON: {e}")))?;
    Ok(())
}
