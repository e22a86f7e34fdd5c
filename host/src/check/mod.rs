//! `modhost check DIR`: a module validated before anyone runs it.
//!
//! Checks, in order: the manifest (schema, names, grants), the component
//! (it compiles; every import is provided by this host; every export matches
//! the `modhost:sdk/module` world), `describe`, and grants against imports:
//! a grant nothing uses, or an import nothing grants.

pub mod runtime;

use std::path::Path;

use serde::Serialize;
use wasmtime::component::types::ComponentItem;

use crate::manifest::{LoadEnv, Manifest};
use crate::{Host, HostOptions};

/// What `check` found. Errors make a module unusable; warnings do not.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CheckReport {
    pub module: Option<String>,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// What is worth knowing and needs no change.
    pub notes: Vec<String>,
    /// What the manifest allows, one sentence per grant.
    pub grants: Vec<String>,
    /// The component's imports, by interface name.
    pub imports: Vec<String>,
    pub actions: Vec<String>,
    pub tasks: Vec<String>,
    pub blocking: Vec<String>,
}

impl CheckReport {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Checks the module in `dir`. Never runs its build command.
pub async fn check_dir(dir: &Path, load_env: &LoadEnv) -> CheckReport {
    let mut report = CheckReport::default();
    let manifest = match crate::manifest::load_dir(dir, load_env) {
        Ok(m) => m,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    report.module = Some(manifest.name.to_string());
    if manifest.build.is_some() && !dir.join(&manifest.component).exists() {
        report.errors.push(format!(
            "the component {} is not there: the module is not built yet; `modhost build {dir}` or `modhost check --build {dir}` runs its [build] command",
            manifest.component.display(),
            dir = dir.display()
        ));
        return report;
    }
    report.grants = manifest.policy.in_plain_words();
    report.warnings.extend(manifest.warnings());
    let state = match tempfile::Builder::new().prefix("modhost-check-").tempdir() {
        Ok(d) => d,
        Err(e) => {
            report
                .errors
                .push(format!("cannot create a scratch directory: {e}"));
            return report;
        }
    };
    let mut options = HostOptions::new(state.path());
    options.engine.pooling = false;
    options.engine.cache_dir = None;
    options.load_env = load_env.clone();
    let host = match Host::new(options) {
        Ok(h) => h,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    match host.load_module(dir, false).await {
        Ok(m) => {
            report.imports = import_names(host.engine().engine(), &m.component);
            report.actions = m
                .description
                .actions
                .iter()
                .map(|e| e.name.clone())
                .collect();
            report.tasks = m.description.tasks.iter().map(|e| e.name.clone()).collect();
            report.blocking = m
                .description
                .blocking
                .iter()
                .map(|e| e.name.clone())
                .collect();
            let runtime = std::fs::read(dir.join(&manifest.component))
                .ok()
                .and_then(|bytes| runtime::runtime_of(&bytes));
            let found = grant_warnings(&manifest, &report.imports, runtime);
            report.warnings.extend(found.warnings);
            report.notes.extend(found.notes);
        }
        Err(e) => report.errors.push(e.to_string()),
    }
    report
}

/// The names of the instances a component imports.
pub fn import_names(
    engine: &wasmtime::Engine,
    component: &wasmtime::component::Component,
) -> Vec<String> {
    let ty = component.component_type();
    let mut names: Vec<String> = ty
        .imports(engine)
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_owned())
        .collect();
    names.sort();
    names
}

fn imports_any(imports: &[String], prefix: &str) -> bool {
    imports.iter().any(|i| i.starts_with(prefix))
}

/// What [`grant_warnings`] found.
#[derive(Debug, Default)]
pub struct GrantFindings {
    pub warnings: Vec<String>,
    pub notes: Vec<String>,
}

/// Grants nothing uses, and imports nothing grants. An import that the
/// component's language `runtime` always brings is a note, not a warning:
/// its author did not choose it.
pub fn grant_warnings(
    manifest: &Manifest,
    imports: &[String],
    runtime: Option<runtime::Runtime>,
) -> GrantFindings {
    let policy = &manifest.policy;
    let mut w = Vec::new();
    let mut notes = Vec::new();
    let uses_tasks = imports_any(imports, "modhost:sdk/tasks");
    if policy.filesystem.data && !imports_any(imports, "wasi:filesystem/preopens") {
        w.push("grant [filesystem] data is unused: the component does not import wasi:filesystem/preopens".to_owned());
    }
    if !policy.subprocess.is_empty() && !uses_tasks {
        w.push(
            "grant [subprocess] is unused: the component does not import modhost:sdk/tasks"
                .to_owned(),
        );
    }
    if !policy.subprocess.is_empty() {
        use crate::subprocess::confine::{landlock_abi, missing_protections};
        let abi = landlock_abi();
        let missing = missing_protections(abi, policy.subprocess.network);
        if !missing.is_empty() {
            w.push(format!(
                "this kernel cannot confine subprocess children (Landlock ABI {abi} lacks {}): they will be refused unless the host runs with --allow-unconfined-subprocesses",
                missing.join(", ")
            ));
        }
    }
    let uses_http = imports_any(imports, "wasi:http/outgoing-handler");
    let granted = !policy.network.allow.is_empty();
    if granted && !uses_http {
        w.push("grant [network] allow is unused: the component does not import wasi:http/outgoing-handler".to_owned());
    }
    if uses_http && !granted {
        match runtime {
            Some(runtime) => notes.push(format!(
                "the component imports wasi:http/outgoing-handler, as every {} module built for {} does; [network] allows no host, so every request will be refused",
                runtime.name(),
                runtime.http_world()
            )),
            None => w.push("the component imports wasi:http/outgoing-handler but [network] allows no host: every request will be refused".to_owned()),
        }
    }
    if imports_any(imports, "wasi:sockets/") {
        let why = if granted {
            "; [network] grants apply to wasi:http requests only"
        } else {
            ""
        };
        match runtime {
            Some(runtime::Runtime::CPython) => notes.push(format!(
                "the component imports wasi:sockets, as every {} module does; sockets stay closed, so every connection through them will be refused{why}",
                runtime::Runtime::CPython.name()
            )),
            Some(runtime::Runtime::StarlingMonkey) | None => w.push(format!("the component imports wasi:sockets, which this host keeps closed: every connection through them will be refused{why}")),
        }
    }
    GrantFindings { warnings: w, notes }
}
