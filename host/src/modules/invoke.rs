//! [`invoke`]: the one path by which an export of a module is called, for
//! `describe`, actions, task runs and blocking calls alike: a fresh store,
//! a fresh instance, the call under a watchdog, and its failure classified.
//!
//! The epoch callback stops a guest that runs past its deadline inside wasm;
//! a guest that waits inside a host call (a WASI sleep, a blocking read)
//! never reaches it, so the watchdog drops the call there when the deadline
//! passes or the call is cancelled: its instance, its running slot or its
//! blocking thread is free at once.

use super::{Description, Entry, MAX_ENTRIES, ModuleError, valid_entry_name};
use crate::error::{CallError, SdkError};
use crate::sandbox::{self, CallSpec, Interrupt, SandboxState};
use crate::text::{MAX_SHOWN_TEXT_BYTES, truncate};
use crate::wit::bindings::{self, ModulePre};

/// Which export a call runs, with its arguments.
#[derive(Debug, Clone, Copy)]
pub enum Export<'a> {
    Describe,
    Action { name: &'a str, args_json: &'a str },
    RunTask { name: &'a str, args_json: &'a str },
    Blocking { name: &'a str, args_json: &'a str },
}

/// What the export returned, before the caller reads it.
#[derive(Debug)]
pub enum Answer {
    Description(bindings::Description),
    Action(Result<bindings::ui::ActionResult, SdkError>),
    /// `run-task` and `call-blocking`: JSON, or the guest's typed error.
    Json(Result<String, SdkError>),
}

/// Calls `export` of the module `module` (named for errors) in a fresh
/// instance of `pre`, in a store built from `spec`.
pub async fn invoke(
    engine: &wasmtime::Engine,
    pre: &ModulePre<SandboxState>,
    module: &str,
    spec: CallSpec,
    export: Export<'_>,
) -> Result<Answer, CallError> {
    let mut store = sandbox::new_store(engine, spec)?;
    let stop = store.data().stop_signal();
    let call = async {
        let instance = pre.instantiate_async(&mut store).await?;
        Ok::<_, wasmtime::Error>(match export {
            Export::Describe => Answer::Description(instance.call_describe(&mut store).await?),
            Export::Action { name, args_json } => Answer::Action(
                instance
                    .call_handle_action(&mut store, name, &args_json.to_owned())
                    .await?
                    .map_err(SdkError::from),
            ),
            Export::RunTask { name, args_json } => Answer::Json(
                instance
                    .call_run_task(&mut store, name, &args_json.to_owned())
                    .await?
                    .map_err(SdkError::from),
            ),
            Export::Blocking { name, args_json } => Answer::Json(
                instance
                    .call_call_blocking(&mut store, name, &args_json.to_owned())
                    .await?
                    .map_err(SdkError::from),
            ),
        })
    };
    let result = tokio::select! {
        result = call => result.map_err(Stopped::Failed),
        why = stop => Err(Stopped::Outside(why)),
    };
    let result = result.map_err(|e| match e {
        Stopped::Failed(e) => instantiate_or_trap(module, e, &store),
        Stopped::Outside(why) => sandbox::interrupted(module, why, store.data()),
    });
    let failed = match &result {
        Err(e) => Some(e.to_string()),
        Ok(Answer::Action(Err(e)) | Answer::Json(Err(e))) => Some(e.to_string()),
        Ok(_) => None,
    };
    log_output(module, export, store.data(), failed.as_deref());
    result
}

/// Logs what the guest wrote to stdout and stderr during the call, under
/// the call's identity: as a warning when the call failed (it trapped, or
/// answered with an error, as an SDK does for an exception it caught).
fn log_output(module: &str, export: Export<'_>, state: &SandboxState, failed: Option<&str>) {
    let Some(output) = state.output().tail(sandbox::output::TAIL_BYTES) else {
        return;
    };
    let who = state.identity();
    let entry = match export {
        Export::Describe => "describe",
        Export::Action { name, .. }
        | Export::RunTask { name, .. }
        | Export::Blocking { name, .. } => name,
    };
    let task_id = state.task().map(|t| t.lease.task_id.as_str());
    match failed {
        None => tracing::info!(
            module, entry, user = %who.user_id(), organization = %who.organization_id(),
            request_id = %who.request_id, task_id, %output, "guest output"
        ),
        Some(e) => tracing::warn!(
            module, entry, user = %who.user_id(), organization = %who.organization_id(),
            request_id = %who.request_id, task_id, %output, error = %e, "guest output of a failed call"
        ),
    }
}

/// How a call ended without an answer.
enum Stopped {
    /// It trapped, or could not be instantiated.
    Failed(wasmtime::Error),
    /// The watchdog stopped it while it waited in a host call.
    Outside(Interrupt),
}

/// A failure before the guest ran (pool exhausted) is `Busy`; anything else
/// is classified by what the store saw.
fn instantiate_or_trap(
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

impl Description {
    /// Validates what the guest's `describe` returned.
    pub fn from_wit(d: bindings::Description) -> Result<Self, ModuleError> {
        Ok(Description {
            actions: entries("action", d.actions)?,
            tasks: entries("task", d.tasks)?,
            blocking: entries("blocking function", d.blocking)?,
        })
    }
}

fn entries(kind: &'static str, list: Vec<bindings::Entry>) -> Result<Vec<Entry>, ModuleError> {
    if list.len() > MAX_ENTRIES {
        return Err(ModuleError::TooManyEntries { kind });
    }
    let mut out: Vec<Entry> = Vec::with_capacity(list.len());
    for e in list {
        if !valid_entry_name(&e.name) {
            return Err(ModuleError::BadEntryName { kind, name: e.name });
        }
        if out.iter().any(|o| o.name == e.name) {
            return Err(ModuleError::DuplicateEntry { kind, name: e.name });
        }
        out.push(Entry {
            name: e.name,
            description: truncate(&e.description, MAX_SHOWN_TEXT_BYTES).to_owned(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_refuses_duplicate_names() {
        let d = bindings::Description {
            actions: vec![
                bindings::Entry {
                    name: "a".into(),
                    description: String::new(),
                },
                bindings::Entry {
                    name: "a".into(),
                    description: String::new(),
                },
            ],
            tasks: vec![],
            blocking: vec![],
        };
        assert!(matches!(
            Description::from_wit(d),
            Err(ModuleError::DuplicateEntry { .. })
        ));
    }
}
