//! The per-call sandbox: one fresh wasmtime `Store` per call.
//!
//! Its data carries who is calling ([`Identity`]), the task the call runs
//! inside (if any), the call's deadline and cancellation flag, the module's
//! memory limit, and a WASI context that exposes only what the manifest
//! grants. Host functions read identity from here; nothing the guest passes
//! can change it. A store is dropped after every call, trap or not.

mod limiter;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

pub use limiter::MemoryLimiter;

use crate::error::CallError;
use crate::host::Core;
use crate::identity::Identity;

/// The guest path at which a module's private data directory is preopened.
pub const DATA_DIR_GUEST_PATH: &str = "/data";

/// The task a call runs inside.
#[derive(Debug, Clone)]
pub struct TaskScope {
    pub task_id: String,
    /// The last stored checkpoint, for `context.checkpoint`.
    pub checkpoint: Option<String>,
    /// Whether this call is the task's own run (which may pause for a
    /// confirmation), rather than a blocking call made from it.
    pub is_run: bool,
}

/// Why a running call was stopped by the host (raised from the epoch callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Interrupt {
    #[error("deadline exceeded")]
    Deadline,
    #[error("cancelled")]
    Cancelled,
}

/// What a fresh store is built from.
#[derive(Clone)]
pub struct SandboxSpec<'a> {
    /// The host the call runs in, for host functions that need its services.
    pub core: Arc<Core>,
    pub identity: Arc<Identity>,
    pub task: Option<TaskScope>,
    pub memory_bytes: u64,
    pub deadline: Duration,
    /// Preopened at [`DATA_DIR_GUEST_PATH`] when set.
    pub data_dir: Option<&'a Path>,
    /// Set to stop the call at the next epoch tick.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// The data of one call's store.
pub struct SandboxState {
    core: Arc<Core>,
    identity: Arc<Identity>,
    task: Option<TaskScope>,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    deadline: Duration,
    /// When the call is stopped; pushed back while the call waits for a user.
    deadline_at: Instant,
    cancel: Option<Arc<AtomicBool>>,
    log_records: u32,
    log_bytes: u64,
    log_muted: bool,
}

impl SandboxState {
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub(crate) fn identity_arc(&self) -> &Arc<Identity> {
        &self.identity
    }

    pub(crate) fn core(&self) -> &Arc<Core> {
        &self.core
    }

    pub(crate) fn cancel_flag(&self) -> Option<&Arc<AtomicBool>> {
        self.cancel.as_ref()
    }

    /// Whether the call was cancelled through the host's API.
    pub fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
    }

    /// Pushes the deadline back by `d`: time spent waiting for a user does
    /// not count against the call.
    pub(crate) fn extend_deadline(&mut self, d: Duration) {
        self.deadline_at += d;
    }

    /// What is left of the call's deadline.
    pub(crate) fn time_left(&self) -> Duration {
        self.deadline_at.saturating_duration_since(Instant::now())
    }

    pub fn task(&self) -> Option<&TaskScope> {
        self.task.as_ref()
    }

    /// Counts one more log record of `bytes` and returns the call's totals.
    pub(crate) fn count_log_record(&mut self, bytes: u64) -> (u32, u64) {
        self.log_records = self.log_records.saturating_add(1);
        self.log_bytes = self.log_bytes.saturating_add(bytes);
        (self.log_records, self.log_bytes)
    }

    pub(crate) fn log_muted(&self) -> bool {
        self.log_muted
    }

    pub(crate) fn mute_log(&mut self) {
        self.log_muted = true;
    }

    pub fn memory_exceeded(&self) -> bool {
        self.limiter.exceeded()
    }
}

impl WasiView for SandboxState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Builds the store for one call.
///
/// The WASI context denies by default: no arguments, no environment, no
/// inherited stdio, no network, no files; the module's data directory is
/// preopened only when the spec carries one (the manifest's `filesystem`
/// grant). Deadline and cancellation are checked at every epoch tick, where
/// the guest also yields to the async scheduler.
pub fn new_store(
    engine: &wasmtime::Engine,
    spec: SandboxSpec<'_>,
) -> Result<Store<SandboxState>, CallError> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    if let Some(dir) = spec.data_dir {
        wasi.preopened_dir(dir, DATA_DIR_GUEST_PATH, FsPerms::ReadWrite)
            .map_err(|e| {
                tracing::error!(dir = %dir.display(), error = %e, "cannot open a module's data directory");
                CallError::Internal("cannot open the module's data directory; see the host's log".into())
            })?;
    }
    let state = SandboxState {
        core: spec.core,
        identity: spec.identity,
        task: spec.task,
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limiter: MemoryLimiter::new(spec.memory_bytes),
        deadline: spec.deadline,
        deadline_at: Instant::now() + spec.deadline,
        cancel: spec.cancel,
        log_records: 0,
        log_bytes: 0,
        log_muted: false,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        let state = ctx.data();
        if state.cancelled() {
            return Err(Interrupt::Cancelled.into());
        }
        if Instant::now() >= state.deadline_at {
            return Err(Interrupt::Deadline.into());
        }
        Ok(UpdateDeadline::Yield(1))
    });
    Ok(store)
}

/// Turns the failure of a call into the caller's error, using what the store
/// saw (memory limit) and what the epoch callback raised.
pub fn classify_failure(module: &str, err: wasmtime::Error, state: &SandboxState) -> CallError {
    if state.memory_exceeded() {
        return CallError::MemoryLimit {
            module: module.to_owned(),
            limit_bytes: state.limiter.limit(),
        };
    }
    match err.downcast_ref::<Interrupt>() {
        Some(Interrupt::Deadline) => CallError::Deadline {
            module: module.to_owned(),
            deadline_ms: u64::try_from(state.deadline.as_millis()).unwrap_or(u64::MAX),
        },
        Some(Interrupt::Cancelled) => CallError::Cancelled {
            module: module.to_owned(),
        },
        None => CallError::Trap {
            module: module.to_owned(),
            message: trap_message(&err),
        },
    }
}

/// A one-line description of a trap: its code and the innermost guest frame.
fn trap_message(err: &wasmtime::Error) -> String {
    let mut message = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => err.to_string(),
    };
    if let Some(bt) = err.downcast_ref::<wasmtime::WasmBacktrace>()
        && let Some(frame) = bt.frames().first()
        && let Some(name) = frame.func_name()
    {
        message.push_str(" in ");
        message.push_str(name);
    }
    message
}
