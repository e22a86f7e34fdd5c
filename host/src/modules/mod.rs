//! Loading modules: manifest, optional build, compile (cached), link against
//! the `modhost:sdk` world, and `describe`; and [`invoke`], the one path by
//! which any export of a module is called.
//!
//! A module is a directory holding `module.toml` and the component it names.
//! Loading checks everything that can be checked without a user: the manifest,
//! that the component's imports are all provided by this host and its exports
//! match the world, and that `describe` lists well-formed names.

mod build;
pub mod guest_tools;
pub mod invoke;
pub mod wasm_target;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;
use wasmtime::component::{Component, InstancePre};

pub use build::{BuildError, run_build};

use crate::identity::OrgId;
use crate::manifest::{self, LoadEnv, Manifest, ManifestError};
use crate::network::ModuleNetwork;
use crate::sandbox::SandboxState;
use crate::subprocess::ModuleSubprocess;
use crate::tasks::ModuleTasks;
use crate::wit::bindings::ModulePre;

/// Longest component file accepted: far above any real module, small enough
/// that a mistaken path (a disk image, say) is refused before it is read whole.
pub const MAX_COMPONENT_BYTES: u64 = 256 * 1024 * 1024;
/// Longest name of an action, task or blocking function.
pub const MAX_ENTRY_NAME_BYTES: usize = 128;
/// Most entries a module may describe, per kind.
pub const MAX_ENTRIES: usize = 1024;

/// Why a module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("cannot read component {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}")]
    Compile(String),
    /// An import this host does not provide, or an export of the wrong shape.
    #[error("component does not match the modhost:sdk/module world: {0}")]
    World(String),
    #[error("describe failed: {0}")]
    Describe(String),
    #[error(
        "describe listed an invalid {kind} name {name:?}: names are 1..={MAX_ENTRY_NAME_BYTES} bytes of a-z, 0-9, `.`, `_`, `-`"
    )]
    BadEntryName { kind: &'static str, name: String },
    #[error("describe listed the {kind} `{name}` twice")]
    DuplicateEntry { kind: &'static str, name: String },
    #[error("describe listed more than {MAX_ENTRIES} {kind} entries")]
    TooManyEntries { kind: &'static str },
    #[error("a module named `{0}` is already loaded")]
    Duplicate(String),
    #[error("cannot create data directory {path}: {reason}")]
    DataDir { path: String, reason: String },
}

/// One thing a module offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub name: String,
    pub description: String,
}

/// What `describe` returned, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Description {
    pub actions: Vec<Entry>,
    pub tasks: Vec<Entry>,
    pub blocking: Vec<Entry>,
}

impl Description {
    pub fn has_action(&self, name: &str) -> bool {
        self.actions.iter().any(|e| e.name == name)
    }

    pub fn has_task(&self, name: &str) -> bool {
        self.tasks.iter().any(|e| e.name == name)
    }

    pub fn has_blocking(&self, name: &str) -> bool {
        self.blocking.iter().any(|e| e.name == name)
    }
}

/// Whether `name` is a valid action, task or function name.
pub fn valid_entry_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_ENTRY_NAME_BYTES
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
}

/// A module ready to be called.
pub struct LoadedModule {
    pub manifest: Manifest,
    /// The module's directory.
    pub dir: PathBuf,
    /// Its data directory, holding one private directory per organization
    /// ([`OrgId::data_dir_in`]); created when the manifest grants it.
    pub data_dir: PathBuf,
    pub description: Description,
    pub component: Component,
    /// Whether the compiled component came from the on-disk cache.
    pub cache_hit: bool,
    /// What its calls carry into the task service.
    pub tasks: Arc<ModuleTasks>,
    /// What its calls carry into the subprocess service.
    pub subprocess: Arc<ModuleSubprocess>,
    /// What its calls carry into the network room: its grant, and its
    /// requests open now, host-wide.
    pub network: Arc<ModuleNetwork>,
    /// The organization the host learns this module for
    /// ([`crate::host::Learning`]).
    pub learning: Option<OrgId>,
    pre: ModulePre<SandboxState>,
}

impl std::fmt::Debug for LoadedModule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModule")
            .field("name", &self.name())
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl LoadedModule {
    pub fn name(&self) -> &str {
        self.manifest.name.as_ref()
    }

    pub(crate) fn pre(&self) -> &ModulePre<SandboxState> {
        &self.pre
    }

    /// The data directory of `org` to preopen, created on first use, if the
    /// manifest grants one or the host learns the module for `org`.
    pub fn granted_data_dir(&self, org: &OrgId) -> std::io::Result<Option<PathBuf>> {
        if !self.manifest.policy.filesystem.data && !self.learns_for(org) {
            return Ok(None);
        }
        org.ensure_data_dir_in(&self.data_dir).map(Some)
    }

    /// Whether the host learns this module for `org`'s calls.
    pub fn learns_for(&self, org: &OrgId) -> bool {
        self.learning.as_ref() == Some(org)
    }

    /// Whether a call of `org` may launch children: the manifest grants a
    /// program, or the host learns the module for `org` (and so may grant
    /// one).
    pub fn may_launch(&self, org: &OrgId) -> bool {
        !self.manifest.policy.subprocess.is_empty() || self.learns_for(org)
    }
}

/// The parts of loading that need no store: manifest, component, linking.
pub struct Linked {
    pub manifest: Manifest,
    pub component: Component,
    pub cache_hit: bool,
    pub(crate) pre: ModulePre<SandboxState>,
}

/// The subdirectories of `dir` that hold a module, in name order.
pub fn module_dirs(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join(manifest::MANIFEST_FILE).is_file())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Runs the `[build]` command of the module in `dir`, if its manifest has
/// one. Returns whether there was one to run.
pub fn build_module(dir: &Path, env: &LoadEnv) -> Result<bool, ModuleError> {
    let manifest = manifest::load_dir(dir, env)?;
    match &manifest.build {
        Some(spec) => {
            run_build(dir, spec)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// Reads the manifest and links its component against the world.
pub fn link(
    engine: &crate::engine::HostEngine,
    dir: &Path,
    env: &LoadEnv,
    build: bool,
) -> Result<Linked, ModuleError> {
    let manifest = manifest::load_dir(dir, env)?;
    if build && let Some(spec) = &manifest.build {
        run_build(dir, spec)?;
    }
    let path = dir.join(&manifest.component);
    let bytes = read_component(&path)?;
    let (component, cache_hit) = engine
        .compile(&bytes, &path.display().to_string())
        .map_err(|e| ModuleError::Compile(e.to_string()))?;
    let pre = link_component(engine, &component)?;
    Ok(Linked {
        manifest,
        component,
        cache_hit,
        pre,
    })
}

/// Links a compiled component against the host's world: every import must be
/// provided, every export present with the right type.
pub(crate) fn link_component(
    engine: &crate::engine::HostEngine,
    component: &Component,
) -> Result<ModulePre<SandboxState>, ModuleError> {
    let pre: InstancePre<SandboxState> = engine
        .linker()
        .instantiate_pre(component)
        .map_err(|e| ModuleError::World(with_import_hint(format!("{e:#}"))))?;
    ModulePre::new(pre).map_err(|e| ModuleError::World(format!("{e:#}")))
}

/// A link error, with what to do about an import this host leaves out on
/// purpose.
fn with_import_hint(error: String) -> String {
    if error.contains("`wasi:http/") {
        format!(
            "{error} (of wasi:http this host provides only `types` and `outgoing-handler`; a componentize-js build leaves the rest out with `-d fetch-event`)"
        )
    } else {
        error
    }
}

fn read_component(path: &Path) -> Result<Vec<u8>, ModuleError> {
    let err = |reason: String| ModuleError::Read {
        path: path.display().to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
    if meta.len() > MAX_COMPONENT_BYTES {
        return Err(err(format!(
            "{} bytes is over the {MAX_COMPONENT_BYTES}-byte limit",
            meta.len()
        )));
    }
    std::fs::read(path).map_err(|e| err(e.to_string()))
}

impl LoadedModule {
    #[expect(
        clippy::too_many_arguments,
        reason = "a loaded module's whole description"
    )]
    pub(crate) fn new(
        linked: Linked,
        dir: PathBuf,
        data_dir: PathBuf,
        description: Description,
        tasks: Arc<ModuleTasks>,
        subprocess: Arc<ModuleSubprocess>,
        network: Arc<ModuleNetwork>,
        learning: Option<OrgId>,
    ) -> Arc<Self> {
        Arc::new(LoadedModule {
            manifest: linked.manifest,
            dir,
            data_dir,
            description,
            component: linked.component,
            cache_hit: linked.cache_hit,
            tasks,
            subprocess,
            network,
            learning,
            pre: linked.pre,
        })
    }
}

/// What the task service needs of this module: its task and blocking
/// names and its `[tasks]` grant.
pub fn module_tasks(name: &str, description: &Description, manifest: &Manifest) -> ModuleTasks {
    let names = |entries: &[Entry]| entries.iter().map(|e| e.name.clone()).collect();
    ModuleTasks {
        name: name.to_owned(),
        tasks: names(&description.tasks),
        blocking: names(&description.blocking),
        grant: manifest.policy.tasks.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_lowercase_dotted_words() {
        assert!(valid_entry_name("reports.monthly"));
        assert!(valid_entry_name("a-b_c.9"));
        assert!(!valid_entry_name(""));
        assert!(!valid_entry_name("Greet"));
        assert!(!valid_entry_name("a b"));
        assert!(!valid_entry_name(&"a".repeat(MAX_ENTRY_NAME_BYTES + 1)));
    }
}
