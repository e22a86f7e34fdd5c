//! `tasks.run-subprocess`: the capability gate and the confined child.
//!
//! A request passes [`gate::check`] (program, argument shapes, variables,
//! working directory, limits, all from the manifest's typed grant), then the
//! filesystem checks that need the data directory (the working directory and
//! `{path}` arguments resolved with cap-std), then the concurrency caps. The
//! child then starts with a cleared environment plus the granted variables
//! and the caller's identity, in its own process group, as a subreaper of
//! its descendants, under `no_new_privs`, resource limits and a Landlock
//! ruleset ([`confine`]). On timeout or cancellation the whole tree gets
//! SIGTERM, then SIGKILL ([`tree`]). Output is read into buffers capped by
//! the grant. Every decision, and every end, goes to the audit trail: a
//! refusal is committed before the guest hears of it; a launch is queued
//! before the child starts and committed with the writer's next batch.

pub mod confine;
pub mod gate;
mod spawn;
pub mod tree;

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Notify, watch};

use super::runtime::store_err;
use super::store::{AuditDecision, AuditEnd, Decision, Ended};
use crate::error::SdkError;
use crate::host::Core;
use crate::identity::Identity;
use crate::modules::LoadedModule;
use crate::store::now_ms;
use confine::{ChildLimits, ChildSetup, Confinement, RulesetSpec};
use gate::{Denied, Request};

/// How long output is still read after the child has exited: what it wrote
/// is in the pipe already; a writer still holding the pipe after this is a
/// stray descendant, and its output is not the child's.
const OUTPUT_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How often the tree is re-scanned while it is given time to stop.
const TREE_POLL: Duration = Duration::from_millis(10);

/// How long the host waits for killed descendants to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 64 * 1024;

/// How the host runs children, set by the operator. Deny by default: a child
/// that cannot be confined by Landlock is not started unless
/// `allow_unconfined` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubprocessOptions {
    /// Children running at once over all modules; each module also has the
    /// manifest's `[subprocess] max-concurrent`.
    pub max_running: u32,
    /// Start children without Landlock when the kernel cannot confine them
    /// (logged as a warning at every launch and audited as unconfined).
    pub allow_unconfined: bool,
    /// What children may read and execute besides the granted programs:
    /// [`confine::DEFAULT_READ_PATHS`] unless the operator widens it.
    pub read_paths: Vec<PathBuf>,
    pub limits: ChildLimits,
    /// Between SIGTERM and SIGKILL on timeout or cancellation.
    pub kill_grace: Duration,
}

impl Default for SubprocessOptions {
    fn default() -> Self {
        SubprocessOptions {
            max_running: 64,
            allow_unconfined: false,
            read_paths: confine::DEFAULT_READ_PATHS
                .iter()
                .map(PathBuf::from)
                .collect(),
            limits: ChildLimits::default(),
            kill_grace: Duration::from_secs(2),
        }
    }
}

/// Children running now, and each module's Landlock ruleset.
#[derive(Debug, Default)]
pub(crate) struct Subprocesses {
    counts: Mutex<Counts>,
    rulesets: Mutex<HashMap<String, Arc<Confinement>>>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    by_module: HashMap<String, u32>,
}

/// A running child's place in the caps; given back on drop.
struct Slot<'a> {
    owner: &'a Subprocesses,
    module: String,
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut c = self.owner.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_module.get_mut(&self.module) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_module.remove(&self.module);
            }
        }
    }
}

impl Subprocesses {
    fn acquire(&self, module: &str, per_module: u32, total: u32) -> Result<Slot<'_>, String> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.by_module.get(module).copied().unwrap_or(0);
        if mine >= per_module {
            return Err(format!(
                "[subprocess] max-concurrent: {per_module} children of this module are running"
            ));
        }
        if c.total >= total {
            return Err(format!("the host runs at most {total} children at once"));
        }
        c.total += 1;
        *c.by_module.entry(module.to_owned()).or_default() += 1;
        Ok(Slot {
            owner: self,
            module: module.to_owned(),
        })
    }

    fn ruleset(
        &self,
        module: &LoadedModule,
        options: &SubprocessOptions,
    ) -> Result<Arc<Confinement>, confine::ConfineError> {
        if let Some(r) = self
            .rulesets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(module.name())
        {
            return Ok(r.clone());
        }
        let grant = &module.manifest.policy.subprocess;
        let built = Arc::new(Confinement::build(&RulesetSpec {
            data_dir: &module.data_dir,
            read_paths: &options.read_paths,
            programs: grant.programs.iter().map(|p| p.path.as_path()).collect(),
            network: grant.network,
        })?);
        self.rulesets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(module.name().to_owned(), built.clone());
        Ok(built)
    }
}

/// What a call to `run-subprocess` ended with, before it becomes WIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub status: Status,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration: Duration,
}

/// How a child ended (WIT `exit-status`, plus cancellation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Code(i32),
    Signal(i32),
    TimedOut,
    /// The task was cancelled; the caller traps.
    Cancelled,
}

/// Where a call runs: its identity, its task, and how it learns of a cancel.
pub(crate) struct Caller<'a> {
    pub identity: &'a Identity,
    pub task_id: Option<&'a str>,
    /// Set when the task is cancelled.
    pub cancel: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// Woken when the task is cancelled.
    pub wake: Option<Arc<Notify>>,
    /// What is left of the call's own deadline.
    pub time_left: Duration,
}

impl Caller<'_> {
    fn cancelled(&self) -> bool {
        self.cancel
            .as_ref()
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl Core {
    /// Runs `request` for `caller` if the module's manifest allows it.
    pub(crate) async fn run_subprocess(
        self: &Arc<Self>,
        caller: Caller<'_>,
        request: Request,
    ) -> Result<Finished, SdkError> {
        let identity = caller.identity;
        let module = self.module(&identity.module).ok_or(SdkError::NotFound)?;
        let store = self.tasks.store.clone();
        let mut record = AuditDecision {
            id: uuid::Uuid::now_v7().to_string(),
            at: now_ms(),
            module: identity.module.clone(),
            user_id: identity.user_id().to_string(),
            organization_id: identity.organization_id().to_string(),
            request_id: identity.request_id.clone(),
            task_id: caller.task_id.map(str::to_owned),
            program: request.program.clone(),
            path: None,
            args: request.args.clone(),
            cwd: request.cwd.clone(),
            env_names: request.env.iter().map(|(n, _)| n.clone()).collect(),
            decision: Decision::Allowed,
            reason: None,
            confined: false,
        };
        // Refusals are recorded before they are returned.
        let refuse = |mut record: AuditDecision, decision: Decision, error: SdkError| {
            let store = store.clone();
            async move {
                record.decision = decision;
                record.reason = Some(match &error {
                    SdkError::PermissionDenied(r)
                    | SdkError::InvalidInput(r)
                    | SdkError::LimitExceeded(r) => r.clone(),
                    other => other.to_string(),
                });
                tracing::info!(
                    module = %record.module, user = %record.user_id,
                    program = %crate::manifest::shown(&record.program),
                    decision = decision.as_str(), reason = record.reason.as_deref().unwrap_or(""),
                    "subprocess refused"
                );
                store.audit_subprocess(record).await.map_err(store_err)?;
                Err::<Finished, SdkError>(error)
            }
        };
        if identity.is_loader() {
            return refuse(
                record,
                Decision::Denied,
                SdkError::denied("a module cannot start programs while it is being loaded"),
            )
            .await;
        }

        let grant = &module.manifest.policy.subprocess;
        let approved = match gate::check(grant, &request) {
            Ok(a) => a,
            Err(denied) => {
                let (decision, error) = sdk(denied);
                return refuse(record, decision, error).await;
            }
        };
        record.path = Some(approved.program.path.display().to_string());

        let options = &self.options.subprocess;
        let ruleset = match self.tasks.subprocesses.ruleset(&module, options) {
            Ok(r) => Some(r),
            Err(e) if options.allow_unconfined => {
                tracing::warn!(module = %identity.module, error = %e, "starting a child WITHOUT confinement: the operator allowed unconfined children");
                None
            }
            Err(e) => {
                tracing::error!(module = %identity.module, error = %e, "subprocess refused: it cannot be confined");
                return refuse(
                    record,
                    Decision::Denied,
                    SdkError::denied(format!(
                        "children cannot be confined on this host ({e}) and the operator has not allowed unconfined ones"
                    )),
                )
                .await;
            }
        };
        record.confined = ruleset.is_some();

        let cwd = match open_cwd(&module, approved.cwd.as_deref()) {
            Ok(dir) => dir,
            Err(denied) => {
                let (decision, error) = sdk(denied);
                return refuse(record, decision, error).await;
            }
        };
        for &i in &approved.path_args {
            if let Err(denied) = check_path_arg(&cwd, i, &request.args[i]) {
                let (decision, error) = sdk(denied);
                return refuse(record, decision, error).await;
            }
        }
        let _slot = match self.tasks.subprocesses.acquire(
            &identity.module,
            grant.max_concurrent,
            options.max_running.max(1),
        ) {
            Ok(slot) => slot,
            Err(reason) => {
                return refuse(record, Decision::Limited, SdkError::LimitExceeded(reason)).await;
            }
        };
        if caller.cancelled() {
            return refuse(
                record,
                Decision::Denied,
                SdkError::denied("the task was cancelled before the program started"),
            )
            .await;
        }

        tree::adopt_orphans();
        // One writer task per launch keeps the two records in order: the
        // decision is queued before the child starts, the end once it is
        // known. Neither holds the guest up for a disk flush (a flush costs
        // more than starting a process); both commit with the writer's next
        // batch.
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<AuditEnd>();
        {
            let store = store.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let id = record.id.clone();
                if let Err(e) = store.audit_subprocess(record).await {
                    tracing::error!(error = %e, audit_id = %id, "cannot record a subprocess launch");
                    return;
                }
                if let Ok(end) = end_rx.await
                    && let Err(e) = store.audit_subprocess_end(&id, end).await
                {
                    tracing::error!(error = %e, audit_id = %id, "cannot record how a child ended");
                }
            });
        }
        let mut env: Vec<(String, String)> = request.env;
        env.push(("PATH".into(), self.options.load_env.path_var()));
        env.push(("MODHOST_MODULE".into(), identity.module.clone()));
        env.push(("MODHOST_USER_ID".into(), identity.user_id().to_string()));
        env.push((
            "MODHOST_ORGANIZATION_ID".into(),
            identity.organization_id().to_string(),
        ));
        env.push(("MODHOST_REQUEST_ID".into(), identity.request_id.clone()));
        if let Some(task) = caller.task_id {
            env.push(("MODHOST_TASK_ID".into(), task.to_owned()));
        }
        let timeout = approved.timeout.min(caller.time_left);
        let launch = Launch {
            program: &approved.program.path,
            arg0: &approved.program.name,
            args: &request.args,
            env: &env,
            stdin: request.stdin,
            setup: ChildSetup {
                cwd_fd: cwd.as_fd().as_raw_fd(),
                ruleset_fd: ruleset.as_ref().map(|r| r.raw_fd()),
                limits: options.limits,
            },
            timeout,
            max_output: approved.max_output_bytes,
            grace: options.kill_grace,
        };
        let result = launch.run(&caller).await;
        drop(cwd);

        let end = match &result {
            Ok(ran) => ran.audit_end(),
            Err(failure) => AuditEnd {
                ended: Ended::Failed,
                exit_code: None,
                signal: None,
                failure: Some(failure.clone()),
                duration_ms: 0,
                stdout_bytes: 0,
                stderr_bytes: 0,
                finished_at: now_ms(),
            },
        };
        tracing::info!(
            module = %record.module, user = %record.user_id, program = %approved.program.name,
            ended = end.ended.as_str(), code = ?end.exit_code, signal = ?end.signal,
            duration_ms = end.duration_ms, confined = record.confined,
            "subprocess ended"
        );
        let _ = end_tx.send(end);
        match result {
            Ok(ran) => Ok(ran.finished),
            Err(failure) => Err(SdkError::Internal(format!(
                "`{}` could not be started: {failure}",
                approved.program.name
            ))),
        }
    }
}

fn sdk(denied: Denied) -> (Decision, SdkError) {
    match denied {
        Denied::Internal(r) => (Decision::Denied, SdkError::Internal(r)),
        Denied::Invalid(r) => (Decision::Invalid, SdkError::InvalidInput(r)),
        Denied::NotGranted(r) => (Decision::Denied, SdkError::PermissionDenied(r)),
    }
}

/// The working directory, opened inside the data directory by cap-std: no
/// component may lead out (`..`, an absolute symlink, a relative symlink
/// climbing out), and the child enters it by descriptor, so swapping it for
/// a symlink after this check changes nothing.
fn open_cwd(module: &LoadedModule, cwd: Option<&str>) -> Result<cap_std::fs::Dir, Denied> {
    let data = cap_std::fs::Dir::open_ambient_dir(&module.data_dir, cap_std::ambient_authority())
        .map_err(|e| {
            tracing::error!(dir = %module.data_dir.display(), error = %e, "cannot open a module's data directory");
            Denied::Internal("the module's data directory cannot be opened; see the host's log".into())
        })?;
    let Some(cwd) = cwd else {
        return Ok(data);
    };
    let shown = crate::manifest::shown(cwd);
    data.open_dir(cwd).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Denied::Invalid(format!(
            "cwd `{shown}` does not exist in the data directory"
        )),
        std::io::ErrorKind::NotADirectory => {
            Denied::Invalid(format!("cwd `{shown}` is not a directory"))
        }
        _ => Denied::NotGranted(format!(
            "cwd `{shown}` leads outside the module's data directory"
        )),
    })
}

/// A `{path}` argument must not lead out of the data directory (through a
/// symlink, say). One that does not exist yet is fine: the child may create
/// it, and Landlock keeps its writes inside.
fn check_path_arg(cwd: &cap_std::fs::Dir, index: usize, arg: &str) -> Result<(), Denied> {
    match cwd.metadata(arg) {
        Ok(_) => Ok(()),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(())
        }
        Err(_) => Err(Denied::NotGranted(format!(
            "argument {} `{}` leads outside the module's data directory",
            index + 1,
            crate::manifest::shown(arg)
        ))),
    }
}

/// One child to start, everything decided.
struct Launch<'a> {
    program: &'a std::path::Path,
    arg0: &'a str,
    args: &'a [String],
    env: &'a [(String, String)],
    stdin: Option<Vec<u8>>,
    setup: ChildSetup,
    timeout: Duration,
    max_output: u64,
    grace: Duration,
}

/// A child that ran, and what the audit trail says of it.
struct Ran {
    finished: Finished,
    stdout_total: u64,
    stderr_total: u64,
}

impl Ran {
    fn audit_end(&self) -> AuditEnd {
        let (ended, exit_code, signal) = match self.finished.status {
            Status::Code(c) => (Ended::Exited, Some(c), None),
            Status::Signal(s) => (Ended::Signalled, None, Some(s)),
            Status::TimedOut => (Ended::TimedOut, None, None),
            Status::Cancelled => (Ended::Cancelled, None, None),
        };
        AuditEnd {
            ended,
            exit_code,
            signal,
            failure: None,
            duration_ms: i64::try_from(self.finished.duration.as_millis()).unwrap_or(i64::MAX),
            stdout_bytes: i64::try_from(self.stdout_total).unwrap_or(i64::MAX),
            stderr_bytes: i64::try_from(self.stderr_total).unwrap_or(i64::MAX),
            finished_at: now_ms(),
        }
    }
}

/// Kills the tree if the call is dropped while the child runs (the guest's
/// store was dropped, the host is shutting down). It holds the pidfds taken
/// at spawn, so a recycled pid is never hit.
struct KillOnDrop(Option<tree::Tree>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut tree) = self.0.take() {
            tree.kill();
        }
    }
}

impl Launch<'_> {
    /// Starts the child and waits for it, its timeout or a cancel. The
    /// error is why it could not be started.
    async fn run(self, caller: &Caller<'_>) -> Result<Ran, String> {
        let cstr = |s: &str| CString::new(s).map_err(|_| "an argument contains NUL".to_owned());
        let spec = spawn::Spec {
            program: CString::new(self.program.as_os_str().as_bytes())
                .map_err(|_| "the program path contains NUL".to_owned())?,
            argv: std::iter::once(self.arg0)
                .chain(self.args.iter().map(String::as_str))
                .map(cstr)
                .collect::<Result<_, _>>()?,
            env: self
                .env
                .iter()
                .map(|(k, v)| cstr(&format!("{k}={v}")))
                .collect::<Result<_, _>>()?,
            stdin: self.stdin.is_some(),
            setup: self.setup,
        };
        let started = Instant::now();
        let mut child = spawn::spawn(&spec).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (the confinement refused it)".to_owned()
            }
            _ => e.to_string(),
        })?;
        let pid = child.pid;
        let mut guard = KillOnDrop(Some(tree::Tree::new(pid)));

        let (stop_tx, stop_rx) = watch::channel(false);
        let reader = |fd| {
            let stop = stop_rx.clone();
            let max = self.max_output;
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map(|r| tokio::spawn(read_capped(r, max, stop)))
                .ok()
        };
        let out = child.stdout.take().and_then(reader);
        let err = child.stderr.take().and_then(reader);
        let mut writer = None;
        if let (Some(fd), Some(bytes)) = (child.stdin.take(), self.stdin)
            && let Ok(mut w) = tokio::net::unix::pipe::Sender::from_owned_fd(fd)
        {
            writer = Some(tokio::spawn(async move {
                // A child that does not read its input is not an error.
                let _ = w.write_all(&bytes).await;
            }));
        }

        let cancelled = async {
            match &caller.wake {
                Some(w) => {
                    let notified = w.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    if !caller.cancelled() {
                        notified.await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let ending = tokio::select! {
            status = child.wait() => Ending::Exited(status.ok()),
            () = tokio::time::sleep(self.timeout) => Ending::TimedOut,
            () = cancelled => Ending::Cancelled,
        };
        let status = match ending {
            Ending::Exited(status) => {
                // Stray members of its process group go with it.
                // SAFETY: kill(2) on the child's process group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                match status {
                    Some(spawn::Exit::Code(c)) => Status::Code(c),
                    Some(spawn::Exit::Signal(s)) => Status::Signal(s),
                    None => Status::Signal(0),
                }
            }
            Ending::TimedOut | Ending::Cancelled => {
                if let Some(tree) = guard.0.as_mut() {
                    terminate(&mut child, tree, self.grace).await;
                }
                if matches!(ending, Ending::Cancelled) {
                    Status::Cancelled
                } else {
                    Status::TimedOut
                }
            }
        };
        guard.0 = None;
        if let Some(w) = writer {
            // Input nobody will read is dropped with its pipe.
            w.abort();
        }
        let duration = started.elapsed();

        // Give the readers what is already in the pipes, then stop them.
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(OUTPUT_AFTER_EXIT).await;
            let _ = stop_tx.send(true);
        });
        let out = match out {
            Some(h) => h.await.unwrap_or_default(),
            None => Captured::default(),
        };
        let err = match err {
            Some(h) => h.await.unwrap_or_default(),
            None => Captured::default(),
        };
        stopper.abort();
        Ok(Ran {
            finished: Finished {
                status,
                stdout_truncated: out.total > out.kept.len() as u64,
                stderr_truncated: err.total > err.kept.len() as u64,
                stdout: out.kept,
                stderr: err.kept,
                duration,
            },
            stdout_total: out.total,
            stderr_total: err.total,
        })
    }
}

enum Ending {
    Exited(Option<spawn::Exit>),
    TimedOut,
    Cancelled,
}

/// SIGTERM to the whole tree, time to stop, then SIGKILL, leaves first; the
/// dead are reaped.
async fn terminate(child: &mut spawn::Child, tree: &mut tree::Tree, grace: Duration) {
    tree.freeze();
    tree.signal_and_continue(libc::SIGTERM);
    let deadline = Instant::now() + grace;
    let mut root_done = false;
    while Instant::now() < deadline {
        if root_done {
            tree.refresh();
            if tree.alive() == 0 {
                break;
            }
            tokio::time::sleep(TREE_POLL).await;
            continue;
        }
        tokio::select! {
            _ = child.wait() => root_done = true,
            () = tokio::time::sleep(TREE_POLL) => tree.refresh(),
        }
    }
    tree.kill();
    let _ = child.wait().await;
    let reap_until = Instant::now() + REAP_WAIT;
    while tree.reap() > 0 && Instant::now() < reap_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Output kept (at most the cap) and the total the child wrote.
#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    total: u64,
}

/// Reads `r` to its end (or until told to stop), keeping at most `cap`
/// bytes: the rest is read and dropped, so the child is never blocked on a
/// full pipe and the host never holds more than the cap.
async fn read_capped<R: AsyncRead + Unpin>(
    mut r: R,
    cap: u64,
    mut stop: watch::Receiver<bool>,
) -> Captured {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut total: u64 = 0;
    loop {
        let n = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            read = r.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        total = total.saturating_add(n as u64);
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    Captured { kept, total }
}
