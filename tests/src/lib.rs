//! Fixtures for whole-path tests: guest components built by `build.rs`,
//! module directories made from them, and hosts that load those; and a
//! throwaway PostgreSQL cluster ([`postgres`]).

use std::path::Path;
use std::sync::Arc;

use modhost::identity::{Principal, Role};
use modhost::{Host, HostOptions};

pub mod disk;
pub mod faults;
pub mod postgres;
pub mod raw;
pub mod serve;

include!(concat!(env!("OUT_DIR"), "/programs.rs"));

/// A module directory in a temporary folder: `module.toml` plus a copy of
/// the component as `component.wasm`.
#[derive(Debug)]
pub struct ModuleDir {
    pub dir: tempfile::TempDir,
}

impl ModuleDir {
    /// `name` is the module name; `extra` is appended to the manifest (grants).
    pub fn new(name: &str, wasm: &str, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::copy(wasm, dir.path().join("component.wasm")).expect("copying the component");
        let manifest = format!(
            "name = \"{name}\"\nversion = \"0.1.0\"\ncomponent = \"component.wasm\"\n{extra}\n"
        );
        std::fs::write(dir.path().join("module.toml"), manifest).expect("writing module.toml");
        ModuleDir { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A host whose state lives in a temporary folder, sharing this build's
/// component cache so each component compiles once per test run.
#[derive(Debug)]
pub struct TestHost {
    pub host: Arc<Host>,
    pub state: tempfile::TempDir,
    pub modules: Vec<ModuleDir>,
}

/// A host on the state directory `state`: what a restarted host opens.
pub fn host_on(state: &Path) -> Host {
    host_with_options(state, |_| {})
}

/// A host on `state` with test defaults, adjusted by `adjust`.
pub fn host_with_options(state: &Path, adjust: impl FnOnce(&mut HostOptions)) -> Host {
    let mut options = HostOptions::new(state);
    options.engine.cache_dir = Some(COMPONENT_CACHE_DIR.into());
    options.engine.max_instances = 64;
    adjust(&mut options);
    Host::new(options).expect("starting a host")
}

impl TestHost {
    pub fn new() -> Self {
        let state = tempfile::tempdir().expect("temp dir");
        TestHost {
            host: Arc::new(host_on(state.path())),
            state,
            modules: Vec::new(),
        }
    }

    /// A host with adjusted options and no module yet.
    pub fn with_options(adjust: impl FnOnce(&mut HostOptions)) -> Self {
        let state = tempfile::tempdir().expect("temp dir");
        TestHost {
            host: Arc::new(host_with_options(state.path(), adjust)),
            state,
            modules: Vec::new(),
        }
    }

    /// Loads a module made from `wasm` under `name`, with manifest `extra`.
    pub async fn load(&mut self, name: &str, wasm: &str, extra: &str) -> &mut Self {
        let m = ModuleDir::new(name, wasm, extra);
        self.host
            .load_module(m.path(), false)
            .await
            .unwrap_or_else(|e| panic!("loading {name}: {e}"));
        self.modules.push(m);
        self
    }

    /// A host with the one module loaded.
    pub async fn with(name: &str, wasm: &str, extra: &str) -> Self {
        let mut h = TestHost::new();
        h.load(name, wasm, extra).await;
        h
    }
}

impl Default for TestHost {
    fn default() -> Self {
        Self::new()
    }
}

/// Starts `action` of `module` as `who` in the background: for tests of
/// what happens while a call is still running.
pub fn spawn_action(
    host: &Host,
    module: &str,
    action: &str,
    args: &str,
    who: &Principal,
) -> tokio::task::JoinHandle<Result<modhost::ui::ActionOutput, modhost::CallError>> {
    let (host, who) = (host.clone(), who.clone());
    let (module, action, args) = (module.to_owned(), action.to_owned(), args.to_owned());
    tokio::spawn(async move {
        host.call_action(
            &module,
            &action,
            &args,
            &who,
            modhost::identity::RequestMeta::fresh(),
        )
        .await
    })
}

/// An admin of `org`.
pub fn admin_of(org: &str) -> Principal {
    Principal {
        role: modhost::identity::Role::Admin,
        ..principal("root", org)
    }
}

/// `GET path` through `app` as the bearer of `token`: the status and the
/// JSON body.
pub async fn get_json(
    app: &axum::Router,
    token: &str,
    path: &str,
) -> (axum::http::StatusCode, serde_json::Value) {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let req = axum::http::Request::get(path)
        .header("authorization", format!("Bearer {token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let res = app.clone().oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, json(std::str::from_utf8(&bytes).unwrap()))
}

/// The `files` guest's outcomes of `ops`, tried as `who`.
pub async fn try_files(
    t: &TestHost,
    who: &Principal,
    ops: Vec<serde_json::Value>,
) -> Vec<serde_json::Value> {
    let out = t
        .host
        .call_action(
            "files",
            "try",
            &serde_json::json!({ "ops": ops }).to_string(),
            who,
            modhost::identity::RequestMeta::fresh(),
        )
        .await
        .unwrap();
    out.data.unwrap().as_array().unwrap().clone()
}

/// The reason an audit record gives; a record without one fails the test.
pub fn reason_of(r: &modhost::audit::AuditRecord) -> &str {
    r.entry
        .reason
        .as_deref()
        .unwrap_or_else(|| panic!("a record without a reason: {r:?}"))
}

/// The audit trail's filter of one capability's records.
pub fn records_of(capability: modhost::audit::Capability) -> modhost::audit::AuditFilter {
    modhost::audit::AuditFilter {
        capability: Some(capability),
        ..modhost::audit::AuditFilter::default()
    }
}

/// Only the subprocess records of the audit trail.
pub fn subprocesses() -> modhost::audit::AuditFilter {
    records_of(modhost::audit::Capability::Subprocess)
}

/// The records of `capability`, newest first, once there are `n`: what
/// was allowed reaches the trail at the commit after the act.
pub async fn trail_of(
    host: &Host,
    capability: modhost::audit::Capability,
    n: usize,
) -> Vec<modhost::audit::AuditRecord> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let records = host.audit(&records_of(capability), 500).await.unwrap();
        if records.len() >= n || std::time::Instant::now() > deadline {
            return records;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

/// The reason of a call refused with `permission-denied`; any other
/// outcome fails the test, naming it.
pub fn denied<T: std::fmt::Debug>(r: Result<T, modhost::SdkError>) -> String {
    match r {
        Err(modhost::SdkError::PermissionDenied(reason)) => reason,
        other => panic!("expected permission-denied, got {other:?}"),
    }
}

/// The reason of a call refused with `limit-exceeded`.
pub fn limited<T: std::fmt::Debug>(r: Result<T, modhost::SdkError>) -> String {
    match r {
        Err(modhost::SdkError::LimitExceeded(reason)) => reason,
        other => panic!("expected limit-exceeded, got {other:?}"),
    }
}

/// The reason of a call refused with `invalid-input`.
pub fn invalid<T: std::fmt::Debug>(r: Result<T, modhost::SdkError>) -> String {
    match r {
        Err(modhost::SdkError::InvalidInput(reason)) => reason,
        other => panic!("expected invalid-input, got {other:?}"),
    }
}

/// A member principal.
pub fn principal(user: &str, org: &str) -> Principal {
    Principal {
        user_id: user.parse().expect("user id"),
        organization_id: org.parse().expect("org id"),
        role: Role::Member,
    }
}

/// Parses JSON text, panicking with the text on failure.
pub fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Waits (at most 30 s) for task `id` to reach a final state, as `who`.
pub async fn wait_final(host: &Host, id: &str, who: &Principal) -> modhost::tasks::store::TaskRow {
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        host.tasks().wait(id, who),
    )
    .await
    .expect("task did not finish in 30 s")
    .unwrap()
}

/// Polls (at most 30 s) until task `id` reaches `status`, as `who`; fails
/// at once if it ends in another.
pub async fn wait_status(
    host: &Host,
    id: &str,
    who: &Principal,
    status: modhost::tasks::store::Status,
) -> modhost::tasks::store::TaskRow {
    for _ in 0..3000 {
        let row = host.tasks().get(id, who).await.unwrap();
        if row.status == status {
            return row;
        }
        assert!(
            row.status.is_active(),
            "task {id} ended as {:?} while waiting for {status:?}",
            row.status
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("task {id} never reached {status:?}");
}

/// A runtime with the two workers of the machines the suite runs on: what
/// benches and tests that own their runtime use.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("building a tokio runtime")
}

/// `program` found on `PATH`.
pub fn on_path(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

/// The `modhost` binary, built once per test process: for tests that run
/// the command as a user does. `MODHOST_BIN` names one to run instead (a
/// copy, so that a long campaign runs one build throughout).
pub fn modhost_binary() -> &'static Path {
    static BIN: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("MODHOST_BIN") {
            return bin.into();
        }
        let out = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "modhost",
                "--bin",
                "modhost",
                "--message-format=json",
            ])
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running cargo build");
        assert!(out.status.success(), "building modhost failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "modhost")
            .find_map(|m| m["executable"].as_str().map(std::path::PathBuf::from))
            .expect("cargo named the modhost executable")
    })
}

/// A token store in memory holding one token of `who`, and its secret:
/// what an API test signs its requests with.
pub async fn tokens_of(who: &Principal) -> (modhost::auth::Tokens, String) {
    let tokens = modhost::auth::Tokens::new(modhost::db::Db::in_memory().expect("a database"));
    let secret = tokens.create(who, "test").await.expect("a token").secret;
    (tokens, secret)
}

/// The HTTP API of `host` on a real socket of 127.0.0.1, served by the same
/// loop as `modhost serve`.
#[derive(Debug)]
pub struct Served {
    pub addr: std::net::SocketAddr,
    /// `http://ADDR`.
    pub url: String,
    /// Stops the server (dropping it does too).
    pub stop: tokio::sync::oneshot::Sender<()>,
    pub server: tokio::task::JoinHandle<Result<(), modhost::http::serve::ServeError>>,
}

/// Serves `state` (see [`Served`]), reading headers within `header_timeout`.
pub async fn serve_socket(
    state: modhost::http::AppState,
    header_timeout: std::time::Duration,
) -> Served {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("binding 127.0.0.1:0");
    let addr = listener.local_addr().expect("the bound address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let closing = state.closing.clone();
    let server = tokio::spawn(modhost::http::serve::serve_app(
        listener,
        modhost::http::router(state),
        closing,
        async move {
            let _ = stopped.await;
        },
        header_timeout,
    ));
    Served {
        addr,
        url: format!("http://{addr}"),
        stop,
        server,
    }
}

/// A manifest granting the programs modules ask for, with `{path}`,
/// `{value}`, `{int}` and optional shapes: the adversarial tables ask the
/// policy kit about requests against it.
pub const REALISTIC_GRANT: &str = r#"
name = "probe"
version = "0.1.0"
component = "probe.wasm"

[subprocess]
env = ["LANG", "GIT_AUTHOR_NAME"]

[[subprocess.programs]]
program = "git"
args = [["-C", "{path}", "log", "-1", "--format=%at"], ["ls-remote", "{value}"], ["init", "-q", "{path}"]]

[[subprocess.programs]]
program = "tar"
args = [["-tf", "{path}"], ["-xf", "{path}", "-C", "{path}"]]

[[subprocess.programs]]
program = "cat"
args = [["{path}"]]

[[subprocess.programs]]
program = "head"
args = [["-c", "{int}", "{path}"]]

[[subprocess.programs]]
program = "curl"
args = [["-fsS", "-o", "{path}", "{value}"]]

[[subprocess.programs]]
program = "sort"
args = [["[-r]", "{path}"]]
"#;

/// How long `n` tasks with arguments `args` took through `host`: submitted
/// by `submitters` concurrent users, then until none of `module` is pending
/// or running. Returns (all submitted, all finished), both from the first
/// submit.
pub async fn run_tasks_through(
    host: &Arc<Host>,
    module: &str,
    task: &str,
    args: &str,
    n: usize,
    submitters: usize,
) -> (std::time::Duration, std::time::Duration) {
    use modhost::identity::RequestMeta;
    use modhost::tasks::SubmitOptions;
    use modhost::tasks::store::{Status, TaskFilter};
    let start = std::time::Instant::now();
    let submitters = submitters.clamp(1, n.max(1));
    let mut handles = Vec::new();
    for s in 0..submitters {
        let (host, module, task) = (host.clone(), module.to_owned(), task.to_owned());
        let args = args.to_owned();
        let who = principal(&format!("bench{s}"), "bench");
        handles.push(tokio::spawn(async move {
            for _ in (s..n).step_by(submitters) {
                let options = SubmitOptions::default();
                host.submit_task(&module, &task, &args, options, &who, RequestMeta::fresh())
                    .await
                    .unwrap();
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let submitted = start.elapsed();
    let admin = Principal {
        role: Role::Admin,
        ..principal("bench", "bench")
    };
    let active = TaskFilter {
        statuses: vec![Status::Pending, Status::Running],
        ..TaskFilter::default()
    };
    while !host
        .tasks()
        .list(&admin, module, &active, None, 1)
        .await
        .unwrap()
        .tasks
        .is_empty()
    {
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    (submitted, start.elapsed())
}
