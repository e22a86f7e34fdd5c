//! [`SubprocessService`]: `tasks.run-subprocess`, from the capability gate
//! to the confined child and the audit trail.
//!
//! A request passes [`gate::check`] (program, argument shapes, variables,
//! working directory, limits, all from the module's typed grant), then the
//! filesystem checks that need the data directory (the working directory and
//! `{path}` arguments resolved with cap-std), then the concurrency caps. The
//! child then starts with a cleared environment plus the granted variables
//! and the caller's identity, in its own process group, as a subreaper of
//! its descendants, under `no_new_privs`, resource limits and a Landlock
//! ruleset ([`confine`]); [`super::launch`] runs it to its end. Every decision, and
//! every end, goes to the audit trail: a refusal is committed before the
//! guest hears of it, a launch before the child starts (a launch that
//! cannot be recorded is not started).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::confine::{self, ChildLimits, ChildSetup, Confinement, RulesetSpec};
use super::gate::{self, Denied, Request};
use super::grant::SubprocessGrant;
use super::launch::{Finished, Launch};
use super::learning::Learner;
use super::tree;
use super::user::{self, ChildUser, ChildUserChoice, ChildUserError};
use super::{cgroup, seccomp};
use crate::audit::{AuditEnd, AuditEntry, AuditTrail, Decision, Detail, Ended, SubprocessDetail};
use crate::cancel::CancelToken;
use crate::db::now_ms;
use crate::error::SdkError;
use crate::events::{EventHub, EventKind, Subject};
use crate::identity::{Identity, OrgId};
use crate::manifest::LoadEnv;
use crate::share::{Refused, Share, Shares};

/// How the host runs children, set by the operator. Deny by default: a child
/// that cannot be confined by Landlock is not started unless
/// `allow_unconfined` is set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubprocessOptions {
    /// Children running at once over all modules (64 by default); each
    /// module also has the manifest's `[subprocess] max-concurrent`.
    pub max_running: u32,
    /// Start children without Landlock when the kernel cannot confine them
    /// (logged as a warning at every launch and audited as unconfined).
    /// Off by default.
    pub allow_unconfined: bool,
    /// What children may read and execute besides the granted programs:
    /// [`confine::DEFAULT_READ_PATHS`] unless the operator widens it.
    pub read_paths: Vec<PathBuf>,
    pub limits: ChildLimits,
    /// Between SIGTERM and SIGKILL on timeout or cancellation (2 s).
    pub kill_grace: Duration,
    /// Who children run as: by default, when the host is root, the
    /// unprivileged [`user::DEFAULT_CHILD_USER`]; a host that is not root
    /// runs them as itself.
    pub child_user: ChildUserChoice,
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
            child_user: ChildUserChoice::Auto,
        }
    }
}

/// Landlock rulesets one module keeps built, one per organization.
pub const MAX_CACHED_RULESETS: usize = 64;

/// What one module may launch: its grant and data directory, configured
/// once when the module loads, and its Landlock rulesets, one per
/// organization (each confines a child to its organization's directory),
/// built at the organization's first launch.
#[derive(Debug)]
pub struct ModuleSubprocess {
    pub name: String,
    /// The manifest's grant.
    pub grant: Arc<SubprocessGrant>,
    /// The module's data directory; children run in their organization's
    /// directory inside it.
    pub data_dir: PathBuf,
    /// The host's state directory, which holds `data_dir`: a child user
    /// may pass through the directories from it down.
    pub reached_from: PathBuf,
    rulesets: Mutex<HashMap<OrgId, Arc<Confinement>>>,
    /// While the host learns this module: the grant its calls for the
    /// learned organization widen.
    learner: Option<Learner>,
}

impl ModuleSubprocess {
    /// `data_dir` lies inside `state_dir`, the host's state directory.
    pub fn new(
        name: impl Into<String>,
        grant: SubprocessGrant,
        data_dir: PathBuf,
        state_dir: PathBuf,
    ) -> Self {
        ModuleSubprocess {
            name: name.into(),
            grant: Arc::new(grant),
            data_dir,
            reached_from: state_dir,
            rulesets: Mutex::default(),
            learner: None,
        }
    }

    /// The same, learning ([`super::learning`]): a call marked as learning
    /// ([`Caller::learning`]) runs under the grant its requests widen,
    /// resolving programs with `load`.
    pub fn learning(mut self, load: LoadEnv) -> Self {
        self.learner = Some(Learner::new((*self.grant).clone(), load));
        self
    }

    /// The ruleset of `org`'s children, confined to `data_dir`; a failure to
    /// build it is not kept, so the next launch tries again. A learned
    /// grant's ruleset is built for each launch, as the grant may have
    /// grown since the last.
    fn ruleset(
        &self,
        org: &OrgId,
        data_dir: &Path,
        options: &SubprocessOptions,
        learned: Option<&SubprocessGrant>,
    ) -> Result<Arc<Confinement>, confine::ConfineError> {
        let spec = |grant: &SubprocessGrant| {
            Confinement::build(&RulesetSpec {
                data_dir,
                read_paths: &options.read_paths,
                programs: grant.programs.iter().map(|p| p.path.as_path()).collect(),
                network: grant.network,
            })
        };
        if let Some(grant) = learned {
            return spec(grant).map(Arc::new);
        }
        let mut rulesets = self.rulesets.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = rulesets.get(org) {
            return Ok(r.clone());
        }
        // Each ruleset holds a descriptor: a host serving many organizations
        // keeps only the recent ones (running children hold their own).
        if rulesets.len() >= MAX_CACHED_RULESETS {
            rulesets.clear();
        }
        let built = Arc::new(spec(&self.grant)?);
        rulesets.insert(org.clone(), built.clone());
        Ok(built)
    }
}

/// What a call may use of `run-subprocess`: the service, and its own
/// module's grant.
#[derive(Debug, Clone)]
pub struct SubprocessCtx {
    pub service: Arc<SubprocessService>,
    pub module: Arc<ModuleSubprocess>,
    /// The caller's data directory was at its quota when the call started:
    /// no child runs in this call.
    pub data_full: bool,
    /// The call is of the organization the host learns the module for.
    pub learning: bool,
}

/// Where a call runs: its identity, its task, and how it learns of a cancel.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    pub identity: &'a Identity,
    pub task_id: Option<&'a str>,
    /// Cancelled when the task is.
    pub cancel: Option<&'a CancelToken>,
    /// What is left of the call's own deadline.
    pub time_left: Duration,
    /// The data directory children work in is at its quota.
    pub data_full: bool,
    /// The call is of the organization the host learns the module for.
    pub learning: bool,
}

impl Caller<'_> {
    fn cancelled(&self) -> bool {
        self.cancel.is_some_and(CancelToken::is_cancelled)
    }
}

/// The subprocess capability of one host: its options, the caps it keeps,
/// and the audit trail it writes.
pub struct SubprocessService {
    options: SubprocessOptions,
    /// `PATH` of every child: the host's search path.
    path_var: String,
    audit: AuditTrail,
    /// Children running now, per module and in all.
    children: Arc<Shares>,
    events: EventHub,
    /// Who children run as (`None`: the host's own user), or why no
    /// unprivileged user could be found, which refuses every launch.
    child_user: Result<Option<ChildUser>, ChildUserError>,
}

impl std::fmt::Debug for SubprocessService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubprocessService")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl SubprocessService {
    /// `path_var` is the `PATH` children get (the host's search path).
    /// Decisions are published to `events` once they are on the record.
    pub fn new(
        options: SubprocessOptions,
        path_var: String,
        audit: AuditTrail,
        events: EventHub,
    ) -> Self {
        SubprocessService {
            children: Shares::new(options.max_running),
            child_user: options.child_user.resolve(),
            options,
            path_var,
            audit,
            events,
        }
    }

    pub fn options(&self) -> &SubprocessOptions {
        &self.options
    }

    /// What confines children on this host, in plain words, for the log at
    /// start: Landlock, seccomp, the child user and the cgroup mode.
    pub fn confinement_report(&self) -> Vec<String> {
        let abi = confine::landlock_abi();
        let missing = confine::missing_protections(abi, false);
        let landlock = if missing.is_empty() {
            format!("Landlock ABI {abi}: files, TCP, signals and abstract unix sockets")
        } else {
            format!(
                "Landlock ABI {abi} lacks {}: children are refused{}",
                missing.join(", "),
                if self.options.allow_unconfined {
                    " confinement and started UNCONFINED (the operator allowed it)"
                } else {
                    ""
                }
            )
        };
        let seccomp = match seccomp::filter(false) {
            Ok(_) => "seccomp: sockets only as granted, no kernel modules, ptrace, bpf, keys, mounts, namespaces or io_uring".to_owned(),
            Err(e) => format!("seccomp: {e}"),
        };
        let user = match &self.child_user {
            Ok(Some(u)) => format!(
                "run as uid {} gid {}, with no supplementary groups and no capabilities",
                u.uid, u.gid
            ),
            Ok(None) if user::host_is_root() => {
                "run as ROOT with every capability (the operator chose `host`)".to_owned()
            }
            Ok(None) => "run as the host's own user".to_owned(),
            Err(e) => format!("refused: {e}"),
        };
        vec![landlock, seccomp, user, cgroup::describe()]
    }

    /// A running child's place in the caps; given back on drop.
    fn acquire(&self, module: &str, per_module: u32) -> Result<Share, String> {
        self.children
            .take(module, per_module)
            .map_err(|refused| match refused {
                Refused::Owner => format!(
                    "[subprocess] max-concurrent: {per_module} children of this module are running"
                ),
                Refused::Total => format!(
                    "the host runs at most {} children at once",
                    self.children.total()
                ),
            })
    }

    /// Runs `request` for `caller` if the module's manifest allows it.
    pub async fn run(
        &self,
        module: &ModuleSubprocess,
        caller: Caller<'_>,
        request: Request,
    ) -> Result<Finished, SdkError> {
        let identity = caller.identity;
        let audit = self.audit.clone();
        let mut detail = SubprocessDetail {
            path: None,
            args: request.args.clone(),
            cwd: request.cwd.clone(),
            env_names: request.env.iter().map(|(n, _)| n.clone()).collect(),
            confined: false,
        };
        let entry = |detail: &SubprocessDetail| {
            AuditEntry::new(
                identity,
                caller.task_id,
                request.program.clone(),
                Detail::Subprocess(detail.clone()),
            )
        };
        // Refusals are recorded before they are returned.
        let refuse = |detail: SubprocessDetail, decision: Decision, error: SdkError| {
            let audit = audit.clone();
            let events = self.events.clone();
            let mut record = entry(&detail);
            async move {
                record.decision = decision;
                cut_refused(&mut record);
                record.reason = Some(Decision::of_refusal(&error).1);
                tracing::info!(
                    module = %record.module, user = %record.user_id,
                    program = %crate::text::shown(&record.subject),
                    decision = decision.as_str(), reason = record.reason.as_deref().unwrap_or(""),
                    "subprocess refused"
                );
                audit.record(record.clone()).await.map_err(|e| e.to_sdk())?;
                announce(&events, &record);
                Err::<Finished, SdkError>(error)
            }
        };
        // A learning call runs under the learned grant, which a refusal for
        // want of a grant widens by what the request needs.
        let learner = module.learner.as_ref().filter(|_| caller.learning);
        let grant = match learner {
            None => module.grant.clone(),
            Some(l) => match gate::check(&l.grant(), &request) {
                Err(Denied::NotGranted(why)) => match l.widen(&request) {
                    Ok(widened) => widened.unwrap_or_else(|| l.grant()),
                    Err(not) => {
                        let (decision, error) = sdk(Denied::NotGranted(format!("{why}; {not}")));
                        return refuse(detail, decision, error).await;
                    }
                },
                _ => l.grant(),
            },
        };
        let grant = grant.as_ref();
        // Allowed by what was learned, now or before: the manifest's own
        // grant would refuse it.
        let learned = learner.is_some() && gate::check(&module.grant, &request).is_err();
        let approved = match gate::check(grant, &request) {
            Ok(a) => a,
            Err(denied) => {
                let (decision, error) = sdk(denied);
                return refuse(detail, decision, error).await;
            }
        };
        detail.path = Some(approved.program.path.display().to_string());
        if caller.data_full {
            return refuse(
                detail,
                Decision::Limited,
                SdkError::LimitExceeded(
                    "the module's data directory of this organization is at its quota ([filesystem] max-mib): no program runs until it is under"
                        .into(),
                ),
            )
            .await;
        }

        // Each organization's children live in its own directory.
        let org = identity.organization_id();
        let data_dir = match org.ensure_data_dir_in(&module.data_dir) {
            Ok(dir) => dir,
            Err(e) => {
                tracing::error!(module = %identity.module, error = %e, "cannot prepare an organization's data directory");
                let error = SdkError::Internal(
                    "the module's data directory cannot be opened; see the host's log".into(),
                );
                return refuse(detail, Decision::Denied, error).await;
            }
        };
        let options = &self.options;
        let ruleset = match module.ruleset(org, &data_dir, options, learner.map(|_| grant)) {
            Ok(r) => Some(r),
            Err(e) if options.allow_unconfined => {
                tracing::warn!(module = %identity.module, error = %e, "starting a child WITHOUT confinement: the operator allowed unconfined children");
                None
            }
            Err(e) => {
                tracing::error!(module = %identity.module, error = %e, "subprocess refused: it cannot be confined");
                return refuse(
                    detail,
                    Decision::Denied,
                    SdkError::denied(format!(
                        "children cannot be confined on this host ({e}) and the operator has not allowed unconfined ones"
                    )),
                )
                .await;
            }
        };
        detail.confined = ruleset.is_some();
        let child_user = match &self.child_user {
            Ok(u) => *u,
            Err(e) => {
                tracing::error!(module = %identity.module, error = %e, "subprocess refused: no unprivileged user for children");
                return refuse(
                    detail,
                    Decision::Denied,
                    SdkError::denied(format!("children cannot run on this host: {e}")),
                )
                .await;
            }
        };
        if let Some(user) = child_user {
            let dir = data_dir.clone();
            let top = module.reached_from.clone();
            let shared = tokio::task::spawn_blocking(move || user.share(&top, &dir)).await;
            if let Err(e) = shared.unwrap_or_else(|e| Err(std::io::Error::other(e))) {
                tracing::error!(module = %identity.module, dir = %data_dir.display(), error = %e, "cannot share a data directory with the child user");
                let error = SdkError::Internal(
                    "the module's data directory cannot be prepared for its children; see the host's log".into(),
                );
                return refuse(detail, Decision::Denied, error).await;
            }
        }

        let cwd = match open_cwd(&data_dir, approved.cwd.as_deref()) {
            Ok(dir) => dir,
            Err(denied) => {
                let (decision, error) = sdk(denied);
                return refuse(detail, decision, error).await;
            }
        };
        for &i in &approved.path_args {
            if let Err(denied) = check_path_arg(&cwd, i, &request.args[i]) {
                let (decision, error) = sdk(denied);
                return refuse(detail, decision, error).await;
            }
        }
        let _slot = match self.acquire(&identity.module, grant.max_concurrent) {
            Ok(slot) => slot,
            Err(reason) => {
                return refuse(detail, Decision::Limited, SdkError::LimitExceeded(reason)).await;
            }
        };
        if caller.cancelled() {
            return refuse(
                detail,
                Decision::Denied,
                SdkError::denied("the task was cancelled before the program started"),
            )
            .await;
        }

        tree::adopt_orphans();
        let cgroup = match cgroup::cgroups() {
            Ok(groups) => match groups.create(&options.limits) {
                Ok(group) => Some(group),
                Err(e) => {
                    tracing::error!(module = %identity.module, error = %e, "cannot create a child's cgroup; not starting it");
                    let error = SdkError::Internal(
                        "the child's cgroup could not be created, so nothing was started; see the host's log".into(),
                    );
                    return refuse(detail, Decision::Denied, error).await;
                }
            },
            Err(_) => None,
        };
        // Fail closed: the launch is on record (committed) before the child
        // starts, so a child the trail cannot show never runs. The end is
        // written once known, off the guest's path.
        let mut record = entry(&detail);
        if learned {
            record.reason = Some(crate::audit::LEARNED.to_owned());
            tracing::info!(module = %record.module, program = %approved.program.name, "subprocess allowed while learning: not granted by the manifest");
        }
        if let Err(e) = audit.record(record.clone()).await {
            tracing::error!(error = %e, audit_id = %record.id, module = %record.module, "cannot record a subprocess launch; not starting it");
            let why = "the launch could not be put on the audit trail, so nothing was started";
            return Err(if e.is_disk_full() {
                SdkError::LimitExceeded(format!(
                    "the host's storage is full: {why}; try again later"
                ))
            } else {
                SdkError::Internal(format!("{why}; see the host's log"))
            });
        }
        announce(&self.events, &record);
        let (end_tx, end_rx) = tokio::sync::oneshot::channel::<AuditEnd>();
        let end_tx = EndOfRecord(Some(end_tx));
        {
            let audit = audit.clone();
            let id = record.id.clone();
            tokio::spawn(async move {
                if let Ok(end) = end_rx.await {
                    record_end_retrying(&audit, &id, end).await;
                }
            });
        }
        let mut env: Vec<(String, String)> = request.env;
        env.push(("PATH".into(), self.path_var.clone()));
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
                seccomp: ruleset.as_ref().map(|r| r.filter()),
                user: child_user,
                cgroup_procs: cgroup.as_ref().and_then(cgroup::ChildCgroup::procs_fd),
                limits: options.limits,
                parent: libc::pid_t::try_from(std::process::id()).unwrap_or(0),
            },
            cgroup,
            timeout,
            max_output: approved.max_output_bytes,
            grace: options.kill_grace,
            cancel: caller.cancel,
        };
        let result = launch.run().await;
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
            duration_ms = end.duration_ms, confined = detail.confined,
            "subprocess ended"
        );
        end_tx.send(end);
        match result {
            Ok(ran) => Ok(ran.finished),
            Err(failure) => Err(SdkError::Internal(format!(
                "`{}` could not be started: {failure}",
                approved.program.name
            ))),
        }
    }
}

/// How long a child's end is tried again while the trail cannot be
/// written.
const END_RETRY_FOR: Duration = Duration::from_secs(3600);

/// Writes how a child ended, trying again while the trail fails in a way
/// that passes (a full disk, a lost connection), so a launch's record is
/// not left open: until it lands, the failure is one that will not pass,
/// or [`END_RETRY_FOR`] is over.
async fn record_end_retrying(audit: &AuditTrail, id: &str, end: AuditEnd) {
    let mut wait = Duration::from_millis(100);
    let mut failures = 0u32;
    let give_up = tokio::time::Instant::now() + END_RETRY_FOR;
    loop {
        match audit.store().record_end(id, end.clone()).await {
            Ok(_) => return,
            Err(e) if e.is_transient() && tokio::time::Instant::now() < give_up => {
                // The first failure, then about one a minute.
                if failures.is_multiple_of(12) {
                    tracing::error!(error = %e, audit_id = %id, "cannot record how a child ended; trying again");
                }
                failures += 1;
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, audit_id = %id, "cannot record how a child ended; giving up");
                return;
            }
        }
    }
}

/// Completes a launch's audit record with how the child ended; a call
/// stopped from outside while its child ran (the child's tree is then killed
/// on drop) is recorded as such instead of staying open.
struct EndOfRecord(Option<tokio::sync::oneshot::Sender<AuditEnd>>);

impl EndOfRecord {
    fn send(mut self, end: AuditEnd) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(end);
        }
    }
}

impl Drop for EndOfRecord {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(AuditEnd {
                ended: Ended::Cancelled,
                exit_code: None,
                signal: None,
                failure: Some(
                    "the call was stopped while the child ran; its tree was killed".into(),
                ),
                duration_ms: 0,
                stdout_bytes: 0,
                stderr_bytes: 0,
                finished_at: now_ms(),
            });
        }
    }
}

/// Longest program name, argument, directory or variable name a refused
/// request leaves on the record, and most arguments and names: a refusal
/// is kept whole enough to read, never as large as the guest made it.
pub const MAX_REFUSED_FIELD_BYTES: usize = 4 * 1024;
pub const MAX_REFUSED_ITEMS: usize = 64;

/// Cuts a refused request's guest-chosen fields to the limits above.
fn cut_refused(record: &mut AuditEntry) {
    let cut = |s: &mut String| {
        if s.len() > MAX_REFUSED_FIELD_BYTES {
            let kept = crate::text::truncate(s, MAX_REFUSED_FIELD_BYTES).len();
            s.truncate(kept);
            s.push('…');
        }
    };
    cut(&mut record.subject);
    let Detail::Subprocess(detail) = &mut record.detail else {
        return;
    };
    if let Some(cwd) = &mut detail.cwd {
        cut(cwd);
    }
    for list in [&mut detail.args, &mut detail.env_names] {
        if list.len() > MAX_REFUSED_ITEMS {
            let dropped = list.len() - MAX_REFUSED_ITEMS;
            list.truncate(MAX_REFUSED_ITEMS);
            list.push(format!("… {dropped} more"));
        }
        list.iter_mut().for_each(cut);
    }
}

/// Tells watchers of the caller's identity how its call was decided.
fn announce(events: &EventHub, record: &AuditEntry) {
    events.send(
        Subject {
            task_id: record.task_id.clone(),
            module: record.module.clone(),
            organization_id: record.organization_id.clone(),
            user_id: record.user_id.clone(),
        },
        EventKind::subprocess(
            &record.subject,
            record.decision.as_str(),
            record.reason.as_deref(),
        ),
    );
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
fn open_cwd(data_dir: &Path, cwd: Option<&str>) -> Result<cap_std::fs::Dir, Denied> {
    let data = cap_std::fs::Dir::open_ambient_dir(data_dir, cap_std::ambient_authority())
        .map_err(|e| {
            tracing::error!(dir = %data_dir.display(), error = %e, "cannot open a module's data directory");
            Denied::Internal("the module's data directory cannot be opened; see the host's log".into())
        })?;
    let Some(cwd) = cwd else {
        return Ok(data);
    };
    let shown = crate::text::shown(cwd);
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
            crate::text::shown(arg)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_request_is_recorded_cut_to_a_readable_size() {
        let mut r = crate::audit::decided_at(0);
        r.subject = "p".repeat(1 << 20);
        r.detail = Detail::Subprocess(SubprocessDetail {
            args: vec!["a".repeat(10_000); 1000],
            cwd: Some("c".repeat(10_000)),
            ..SubprocessDetail::default()
        });
        cut_refused(&mut r);
        let most = MAX_REFUSED_FIELD_BYTES + '…'.len_utf8();
        assert_eq!(r.subject.len(), most);
        let Detail::Subprocess(d) = r.detail else {
            unreachable!()
        };
        assert_eq!(d.args.len(), MAX_REFUSED_ITEMS + 1);
        assert_eq!(d.args.last().unwrap(), "… 936 more");
        assert!(d.args.iter().all(|a| a.len() <= most));
        assert!(d.cwd.unwrap().len() <= most);
    }
}
