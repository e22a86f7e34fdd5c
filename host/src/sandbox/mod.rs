//! The per-call sandbox: one fresh wasmtime `Store` per call.
//!
//! Its data ([`SandboxState`]) carries who is calling ([`Identity`]), the
//! task the call runs inside (if any), the call's deadline and cancel
//! token, the module's memory limit, a WASI context that exposes only what
//! the manifest grants, and one context per capability, each `None` where
//! the call may not use it: `describe` runs with neither tasks nor
//! subprocesses. Every WIT interface is linked with a projection onto its
//! own part (`wit/mod.rs`), so no host function reaches another
//! capability's state. Nothing the guest passes can change the identity. A
//! store is dropped after every call, trap or not.

mod limiter;
pub mod output;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::filesystem::WasiFilesystemCtxView;
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

pub use limiter::MemoryLimiter;
pub use output::GuestOutput;

use crate::audit::AuditTrail;
use crate::cancel::{CancelToken, Deadline};
use crate::error::CallError;
use crate::identity::Identity;
use crate::network::NetworkCtx;
use crate::subprocess::SubprocessCtx;
use crate::tasks::{TaskScope, TasksCtx};
use crate::wit::filesystem::{FilesystemView, FsRefusals};
use crate::wit::http::HttpRoom;

/// The guest path at which a module's private data directory is preopened.
pub const DATA_DIR_GUEST_PATH: &str = "/data";

/// Why a running call was stopped by the host (raised from the epoch callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Interrupt {
    #[error("deadline exceeded")]
    Deadline,
    #[error("cancelled")]
    Cancelled,
    /// The task's run waits for a confirmation without its instance: the
    /// store holds the question, and the answer runs the task again.
    #[error("parked to wait for a confirmation")]
    Parked,
}

/// What a fresh store is built from.
#[derive(Clone)]
pub struct CallSpec {
    pub identity: Arc<Identity>,
    pub task: Option<TaskScope>,
    pub memory_bytes: u64,
    pub deadline: Duration,
    /// Preopened at [`DATA_DIR_GUEST_PATH`] when set: the caller's
    /// organization's directory of the module.
    pub data_dir: Option<PathBuf>,
    /// Whether `data_dir` is preopened read-write; read-only otherwise (the
    /// directory is at its quota).
    pub data_writable: bool,
    /// Stops the call at the next epoch tick or host call.
    pub cancel: Option<CancelToken>,
    /// `interface tasks` and `background-tasks`; `None` refuses them.
    pub tasks: Option<TasksCtx>,
    /// `tasks.run-subprocess`; `None` refuses it.
    pub subprocess: Option<SubprocessCtx>,
    /// `wasi:http/outgoing-handler`; `None` refuses every request.
    pub network: Option<NetworkCtx>,
    /// Where refused file operations are recorded; `None` records none.
    pub audit: Option<AuditTrail>,
    /// The host learns the module for this call's organization and its
    /// manifest grants no data directory: the first path operation in the
    /// preopened one is recorded as what learning allowed.
    pub learns_data: bool,
    /// How long past its deadline or cancel a call waiting in a host call
    /// is left to end by itself (a child's SIGTERM grace) before it is
    /// dropped.
    pub stop_grace: Duration,
}

/// The most resources (streams, files, pollables, headers, requests) one
/// call may hold at once: they live on the host's heap, outside the
/// memory limit, so their number is what bounds them.
const MAX_RESOURCES: usize = 2048;

/// The in-memory size of one `wasi:http` header set: with
/// [`MAX_RESOURCES`], bounds the headers a call can pile up (64 MiB).
const MAX_FIELDS_BYTES: usize = 32 * 1024;

/// How often a stopped call looks whether its children have ended.
const CHILD_POLL: Duration = Duration::from_millis(10);

/// How much one call has logged, so a flood is muted (`interface log`).
#[derive(Debug, Default)]
pub struct LogBudget {
    pub records: u32,
    pub bytes: u64,
    pub muted: bool,
}

/// The data of one call's store. Each capability's part is reached only
/// through its interface's projection.
pub struct SandboxState {
    pub(crate) identity: Arc<Identity>,
    pub(crate) task: Option<TaskScope>,
    pub(crate) cancel: Option<CancelToken>,
    pub(crate) deadline: Deadline,
    pub(crate) tasks: Option<TasksCtx>,
    pub(crate) subprocess: Option<SubprocessCtx>,
    network: HttpRoom,
    http: WasiHttpCtx,
    /// Where refused file operations are recorded.
    files: FsRefusals,
    pub(crate) log: LogBudget,
    /// Children of `run-subprocess` running for this call now: a stop gives
    /// the grace only to a call that has one to end.
    pub(crate) children: Arc<AtomicU32>,
    stop_grace: Duration,
    /// What the guest wrote to stdout and stderr: the last of it.
    output: GuestOutput,
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
}

impl SandboxState {
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// Resolves when the call must stop from outside: its deadline passed
    /// or it was cancelled, and — while a child of the call runs — the stop
    /// grace is over (so a child being sent SIGTERM ends, is reaped and
    /// audited on its own path). A call waiting in any other host call (a
    /// sleep, a read) stops at once. Owns what it watches, so it can run
    /// beside the call that borrows the store.
    pub fn stop_signal(&self) -> impl std::future::Future<Output = Interrupt> + Send + 'static {
        let deadline = self.deadline.clone();
        let cancel = self.cancel.clone();
        let grace = self.stop_grace;
        let children = self.children.clone();
        async move {
            let cancelled = async {
                match &cancel {
                    Some(token) => token.cancelled().await,
                    None => std::future::pending().await,
                }
            };
            let why = tokio::select! {
                () = deadline.expired() => Interrupt::Deadline,
                () = cancelled => Interrupt::Cancelled,
            };
            let until = tokio::time::Instant::now() + grace;
            while children.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < until {
                tokio::time::sleep(CHILD_POLL).await;
            }
            why
        }
    }

    /// Whether the call was cancelled through the host's API.
    pub fn cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(CancelToken::is_cancelled)
    }

    pub fn task(&self) -> Option<&TaskScope> {
        self.task.as_ref()
    }

    pub fn memory_exceeded(&self) -> bool {
        self.limiter.exceeded()
    }

    /// What the guest wrote to stdout and stderr so far: the last of it.
    pub fn output(&self) -> &GuestOutput {
        &self.output
    }
}

impl SandboxState {
    /// `wasi:filesystem/types` sees the call's files and where their
    /// refusals go.
    pub(crate) fn filesystem_view(&mut self) -> FilesystemView<'_> {
        FilesystemView {
            inner: WasiFilesystemCtxView {
                ctx: self.wasi.filesystem(),
                table: &mut self.table,
            },
            refusals: &mut self.files,
        }
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

/// `wasi:http` sees the network room, its own context and the resource
/// table its bodies and streams share with `wasi:io`.
impl WasiHttpView for SandboxState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            hooks: &mut self.network,
            table: &mut self.table,
            ctx: &mut self.http,
        }
    }
}

/// Builds the store for one call.
///
/// Deny by default: the WASI context has no arguments, no environment, no
/// inherited stdio (stdout and stderr are kept as the call's
/// [`GuestOutput`]), no sockets and no files; outbound HTTP only as the
/// spec's network room allows (`crate::network`); the module's data directory is
/// preopened only when the spec carries one (the manifest's `filesystem`
/// grant), and read-write only when the spec says so; tasks and subprocesses are refused unless the spec carries their
/// context. Deadline and cancellation are checked at every epoch tick,
/// where the guest also yields to the async scheduler.
pub fn new_store(
    engine: &wasmtime::Engine,
    spec: CallSpec,
) -> Result<Store<SandboxState>, CallError> {
    let output = GuestOutput::default();
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(output.clone()).stderr(output.clone());
    wasi.allow_ip_name_lookup(false)
        .allow_tcp(false)
        .allow_udp(false)
        .socket_addr_check(|_, _| Box::pin(async { false }));
    if let Some(dir) = &spec.data_dir {
        let perms = if spec.data_writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(dir, DATA_DIR_GUEST_PATH, perms)
            .map_err(|e| {
                tracing::error!(dir = %dir.display(), error = %e, "cannot open a module's data directory");
                CallError::Internal("cannot open the module's data directory; see the host's log".into())
            })?;
    }
    let task_id = spec.task.as_ref().map(TaskScope::task_id);
    let network = HttpRoom::new(spec.network, spec.identity.clone(), task_id);
    let files = FsRefusals::new(
        spec.audit,
        spec.identity.clone(),
        task_id,
        spec.data_writable,
    )
    .learning_data(spec.learns_data);
    let state = SandboxState {
        identity: spec.identity,
        task: spec.task,
        cancel: spec.cancel,
        deadline: Deadline::after(spec.deadline),
        tasks: spec.tasks,
        subprocess: spec.subprocess,
        network,
        files,
        http: {
            let mut http = WasiHttpCtx::new();
            http.set_field_size_limit(MAX_FIELDS_BYTES);
            http
        },
        log: LogBudget::default(),
        children: Arc::default(),
        stop_grace: spec.stop_grace,
        output,
        wasi: wasi.build(),
        table: {
            let mut table = ResourceTable::new();
            table.set_max_capacity(MAX_RESOURCES);
            table
        },
        limiter: MemoryLimiter::new(spec.memory_bytes),
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        let state = ctx.data();
        if state.cancelled() {
            return Err(Interrupt::Cancelled.into());
        }
        if state.deadline.passed() {
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
            deadline_ms: u64::try_from(state.deadline.limit().as_millis()).unwrap_or(u64::MAX),
        },
        Some(Interrupt::Cancelled) => CallError::Cancelled {
            module: module.to_owned(),
        },
        Some(Interrupt::Parked) => CallError::Parked {
            module: module.to_owned(),
        },
        None => {
            let mut message = trap_message(&err);
            if let Some(said) = state.output.tail(output::QUOTED_TAIL_BYTES) {
                message.push_str("; the guest wrote: ");
                message.push_str(&said);
            }
            CallError::Trap {
                module: module.to_owned(),
                message,
            }
        }
    }
}

/// The caller's error for a call the host stopped from outside while the
/// guest waited in a host call.
pub fn interrupted(module: &str, why: Interrupt, state: &SandboxState) -> CallError {
    match why {
        Interrupt::Deadline => CallError::Deadline {
            module: module.to_owned(),
            deadline_ms: u64::try_from(state.deadline.limit().as_millis()).unwrap_or(u64::MAX),
        },
        Interrupt::Cancelled => CallError::Cancelled {
            module: module.to_owned(),
        },
        Interrupt::Parked => CallError::Parked {
            module: module.to_owned(),
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
