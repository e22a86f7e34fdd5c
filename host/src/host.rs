//! [`Host`]: what an embedder holds. The modules it loaded, the engine they
//! run on, and the calls into them.
//!
//! Every call gets a fresh sandbox whose identity is built here from the
//! caller's [`Principal`] and request: a module never supplies it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use crate::engine::{EngineError, EngineOptions, HostEngine};
use crate::error::CallError;
use crate::identity::{Identity, Principal, RequestMeta};
use crate::manifest::LoadEnv;
use crate::modules::{self, Description, LoadedModule, ModuleError};
use crate::sandbox::{self, SandboxSpec};
use crate::ui::ActionOutput;

/// Largest JSON argument accepted for a call.
pub const MAX_ARGS_BYTES: usize = 1024 * 1024;

/// How a [`Host`] is set up.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where the host keeps its state: module data directories under
    /// `data/<module>`, compiled components under `cache/`.
    pub state_dir: PathBuf,
    pub engine: EngineOptions,
    /// Where programs granted to modules are looked up, and which directories
    /// they may never come from.
    pub load_env: LoadEnv,
}

impl HostOptions {
    /// Defaults for a host keeping its state in `state_dir`: pooling
    /// allocator, component cache in `state_dir/cache`.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        let state_dir = state_dir.into();
        HostOptions {
            engine: EngineOptions {
                cache_dir: Some(state_dir.join("cache")),
                ..EngineOptions::default()
            },
            load_env: LoadEnv::host_default(),
            state_dir,
        }
    }
}

/// A module directory that failed to load, and why.
#[derive(Debug)]
pub struct LoadFailure {
    pub dir: PathBuf,
    pub error: ModuleError,
}

/// The modules and the engine they run on.
pub struct Host {
    engine: HostEngine,
    options: HostOptions,
    modules: RwLock<BTreeMap<String, Arc<LoadedModule>>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("state_dir", &self.options.state_dir)
            .field("modules", &self.module_names())
            .finish_non_exhaustive()
    }
}

impl Host {
    pub fn new(options: HostOptions) -> Result<Self, EngineError> {
        Ok(Host {
            engine: HostEngine::new(&options.engine)?,
            options,
            modules: RwLock::new(BTreeMap::new()),
        })
    }

    pub fn engine(&self) -> &HostEngine {
        &self.engine
    }

    pub fn options(&self) -> &HostOptions {
        &self.options
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
        let linked = modules::link(&self.engine, dir, &env, build)?;
        let name = linked.manifest.name.to_string();
        if self.module(&name).is_some() {
            return Err(ModuleError::Duplicate(name));
        }
        let data_dir = self.options.state_dir.join("data").join(&name);
        if linked.manifest.policy.filesystem.data {
            std::fs::create_dir_all(&data_dir).map_err(|e| ModuleError::DataDir {
                path: data_dir.display().to_string(),
                reason: e.to_string(),
            })?;
        }
        let description = self.describe(&linked, &name, &data_dir).await?;
        let module = LoadedModule::new(linked, dir.to_path_buf(), data_dir, description);
        let mut map = self.modules.write().expect("module map lock poisoned");
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
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.join("module.toml").is_file())
            .collect();
        dirs.sort();
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

    async fn describe(
        &self,
        linked: &modules::Linked,
        name: &str,
        data_dir: &Path,
    ) -> Result<Description, ModuleError> {
        let limits = &linked.manifest.policy.limits;
        let mut store = sandbox::new_store(
            self.engine.engine(),
            SandboxSpec {
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

    pub fn module(&self, name: &str) -> Option<Arc<LoadedModule>> {
        self.modules
            .read()
            .expect("module map lock poisoned")
            .get(name)
            .cloned()
    }

    pub fn modules(&self) -> Vec<Arc<LoadedModule>> {
        self.modules
            .read()
            .expect("module map lock poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub fn module_names(&self) -> Vec<String> {
        self.modules
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
        check_args(args_json)?;
        let (action, args_json) = (action.to_owned(), args_json.to_owned());
        let identity = Arc::new(Identity::new(module, principal.clone(), request));
        let limits = &m.manifest.policy.limits;
        let mut store = sandbox::new_store(
            self.engine.engine(),
            SandboxSpec {
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
                error: crate::SdkError::Internal(format!("module returned an invalid result: {e}")),
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
}

/// A failure before the guest ran (pool exhausted) is `Busy`; anything else
/// is classified by what the store saw.
fn instantiate_or_trap(
    module: &str,
    e: wasmtime::Error,
    store: &wasmtime::Store<sandbox::SandboxState>,
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
