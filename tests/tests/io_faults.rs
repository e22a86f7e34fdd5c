//! The embedded SQLite store on a disk that fails: each write path (submit,
//! start, finish, progress, confirmation asked and answered, the subprocess
//! audit trail) with its commits failing for want of space (`ENOSPC`), on an
//! I/O error (`EIO`) or at the sync, and with its checkpoints and its
//! opening failing. Every time, the caller gets a typed error, nothing is
//! acknowledged that was not committed, reads go on being served, and once
//! the disk works again writes succeed without a restart. At the end the
//! file is checked whole and holds exactly what was acknowledged.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use modhost::http::{AppState, router};
use modhost_tests::disk::{At, Disk, Errno};
use modhost_tests::*;
use serde_json::{Value, json};
use tower::ServiceExt;

const PATIENCE: Duration = Duration::from_secs(30);

/// How a refused write reads over HTTP.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// The disk is full: `limit-exceeded`, try again later.
    Full,
    /// Any other failure of the disk: `internal`.
    Failed,
}

impl Refusal {
    fn of(errno: Errno) -> Refusal {
        match errno {
            Errno::Enospc => Refusal::Full,
            Errno::Eio => Refusal::Failed,
        }
    }

    fn assert(self, status: StatusCode, body: &Value) {
        let (want_status, code) = match self {
            Refusal::Full => (StatusCode::TOO_MANY_REQUESTS, "limit-exceeded"),
            Refusal::Failed => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        assert_eq!(status, want_status, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        if let Refusal::Full = self {
            let message = body["error"]["message"].as_str().unwrap_or_default();
            assert!(message.contains("storage is full"), "{body}");
        }
    }
}

/// A host whose state directory is on a disk that fails when told, with
/// its HTTP API and a token of alice's.
struct Faulty {
    t: TestHost,
    disk: Disk,
    app: axum::Router,
    token: String,
    /// Tasks whose submission was acknowledged.
    acknowledged: Vec<String>,
}

/// A host, not yet running tasks, whose state directory is on a disk that
/// fails when told.
fn host_on_disk() -> (TestHost, Disk) {
    let state = tempfile::tempdir().unwrap();
    let disk = Disk::under(state.path());
    let t = TestHost {
        host: Arc::new(host_on(state.path())),
        state,
        modules: Vec::new(),
    };
    (t, disk)
}

impl Faulty {
    async fn new(modules: &[(&str, &str, &str)]) -> Faulty {
        let (mut t, disk) = host_on_disk();
        for (name, wasm, extra) in modules {
            t.load(name, wasm, extra).await;
        }
        t.host.start_tasks().await.unwrap();
        let (tokens, token) = tokens_of(&principal("alice", "acme")).await;
        let app = router(AppState::new(t.host.clone(), tokens));
        Faulty {
            t,
            disk,
            app,
            token,
            acknowledged: Vec::new(),
        }
    }

    async fn send(&self, req: axum::http::request::Builder, body: Body) -> (StatusCode, Value) {
        let req = req
            .header("authorization", format!("Bearer {}", self.token))
            .body(body)
            .unwrap();
        let res = self.app.clone().oneshot(req).await.unwrap();
        let status = res.status();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        (status, json(std::str::from_utf8(&bytes).unwrap()))
    }

    async fn post(&self, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.send(Request::post(uri), Body::from(body.to_string()))
            .await
    }

    async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.send(Request::get(uri), Body::empty()).await
    }

    async fn action(&self, module: &str, action: &str, args: &Value) -> (StatusCode, Value) {
        self.post(&format!("/v1/modules/{module}/actions/{action}"), args)
            .await
    }

    /// Submits `task` of `tb` with `args`; its id if acknowledged, else the
    /// refusal as HTTP gave it.
    async fn submit(&mut self, task: &str, args: Value) -> Result<String, (StatusCode, Value)> {
        let (status, body) = self
            .action("tb", "submit", &json!({ "task": task, "args": args }))
            .await;
        if status != StatusCode::OK {
            return Err((status, body));
        }
        let id = body["data"]["id"].as_str().unwrap().to_owned();
        self.acknowledged.push(id.clone());
        Ok(id)
    }

    /// The task as `GET /v1/tasks/{id}` shows it: reads are served whatever
    /// the disk does.
    async fn task(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/tasks/{id}")).await;
        assert_eq!(status, StatusCode::OK, "reading task {id}: {body}");
        body
    }

    /// Waits until the task `id` satisfies `done`.
    async fn until(&self, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let task = self.task(id).await;
            if done(&task) {
                return task;
            }
            assert!(Instant::now() < deadline, "task never {what}: {task}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the disk refused at least one more call than `before`.
    async fn until_refused(&self, before: u64) {
        let deadline = Instant::now() + PATIENCE;
        while self.disk.failed() <= before {
            assert!(Instant::now() < deadline, "the disk was never written");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn db_path(&self) -> PathBuf {
        self.t.state.path().join("modhost.db")
    }

    /// Stops the host, and checks its file: whole, and holding exactly the
    /// acknowledged tasks.
    fn close(self) {
        let Faulty {
            t,
            disk,
            app,
            acknowledged,
            ..
        } = self;
        disk.heal();
        drop(app);
        let path = t.state.path().join("modhost.db");
        let TestHost { host, state, .. } = t;
        drop(host);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        let mut stored: Vec<String> = conn
            .prepare("SELECT id FROM tasks")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let mut acknowledged = acknowledged;
        stored.sort();
        acknowledged.sort();
        assert_eq!(
            stored, acknowledged,
            "stored tasks against acknowledged ones"
        );
        drop(state);
    }
}

const TB: (&str, &str, &str) = ("tb", TASKS_BASIC, "");

fn final_status(task: &Value) -> bool {
    matches!(
        task["status"].as_str(),
        Some("completed" | "failed" | "cancelled" | "interrupted")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submission_whose_commit_fails_is_refused_with_a_typed_error_and_the_next_one_is_kept() {
    let mut f = Faulty::new(&[TB]).await;
    let before = f.submit("echo", json!({ "n": 1 })).await.unwrap();
    for (at, errno) in [
        (At::Commit, Errno::Enospc),
        (At::Commit, Errno::Eio),
        (At::CommitSync, Errno::Eio),
    ] {
        f.disk.fail(at, errno);
        let (status, body) = f.submit("echo", json!({ "n": 2 })).await.unwrap_err();
        Refusal::of(errno).assert(status, &body);
        if at == At::CommitSync {
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains("may not have kept it"), "{body}");
        }
        // Reads go on: the task stored before is there, the refused one not.
        let (status, list) = f.get("/v1/tasks").await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(f.task(&before).await["id"], before.as_str());
        f.disk.heal();
        let id = f.submit("echo", json!({ "n": 3 })).await.unwrap();
        f.until(&id, "completed", |t| t["status"] == "completed")
            .await;
    }
    f.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_tasks_the_host_cannot_start_on_a_full_disk_start_once_it_has_room() {
    let (mut t, disk) = host_on_disk();
    t.load("tb", TASKS_BASIC, "").await;
    let alice = principal("alice", "acme");
    // Submitted before the host runs tasks: pending.
    let mut ids = Vec::new();
    for n in 0..3 {
        let out = tb_action(&t, "submit", json!({"task": "echo", "args": {"n": n}})).await;
        ids.push(out["id"].as_str().unwrap().to_owned());
    }
    // The submissions' audit records are written after them; one still
    // under way would share its commit with the start's recovery and fail
    // it with the disk.
    assert!(t.host.settle_audit(PATIENCE).await);
    disk.fail(At::Commit, Errno::Enospc);
    t.host.start_tasks().await.unwrap();
    let before = disk.failed();
    let deadline = Instant::now() + PATIENCE;
    while disk.failed() == before {
        assert!(
            Instant::now() < deadline,
            "the host never tried to start a task"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for id in &ids {
        let row = t.host.tasks().get(id, &alice).await.unwrap();
        assert_eq!(row.status.as_str(), "pending", "{row:?}");
    }
    disk.heal();
    for (n, id) in ids.iter().enumerate() {
        let row = wait_final(&t.host, id, &alice).await;
        assert_eq!(row.status.as_str(), "completed", "{row:?}");
        assert_eq!(json(row.result_json.as_deref().unwrap())["n"], n);
    }
}

/// `action` of the `tb` module as alice, through the host API: its data.
async fn tb_action(t: &TestHost, action: &str, args: Value) -> Value {
    t.host
        .call_action(
            "tb",
            action,
            &args.to_string(),
            &principal("alice", "acme"),
            modhost::identity::RequestMeta::fresh(),
        )
        .await
        .unwrap()
        .data
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_end_cannot_be_written_stays_running_and_ends_once_the_disk_works() {
    let mut f = Faulty::new(&[TB]).await;
    for errno in [Errno::Enospc, Errno::Eio] {
        // One step stored, then a pause, then the end.
        let id = f
            .submit("count", json!({ "to": 1, "pause_ms": 600 }))
            .await
            .unwrap();
        f.until(&id, "stored its step", |t| t["progress"] == 1.0)
            .await;
        let before = f.disk.failed();
        f.disk.fail(At::Commit, errno);
        f.until_refused(before).await;
        // The end is not acknowledged: the task is still running.
        assert_eq!(f.task(&id).await["status"], "running");
        f.disk.heal();
        let task = f.until(&id, "ended", final_status).await;
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(task["result"], json!({ "from": 0, "to": 1 }));
    }
    f.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_that_cannot_be_stored_is_refused_to_the_guest_and_stored_once_it_can() {
    let mut f = Faulty::new(&[TB]).await;
    let id = f.submit("sleep", json!(null)).await.unwrap();
    f.until(&id, "running", |t| t["status"] == "running").await;
    for errno in [Errno::Enospc, Errno::Eio] {
        f.disk.fail(At::Commit, errno);
        let update = json!({ "id": id, "progress": 0.25, "label": "quarter" });
        let (status, body) = f.action("tb", "progress_of", &update).await;
        Refusal::of(errno).assert(status, &body);
        let task = f.task(&id).await;
        assert_eq!(task["progress"], 0.0, "{task}");
        f.disk.heal();
        let (status, body) = f.action("tb", "progress_of", &update).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let task = f.task(&id).await;
        assert_eq!(
            (task["progress"].clone(), task["label"].clone()),
            (json!(0.25), json!("quarter"))
        );
        let reset = json!({ "id": id, "progress": 0.0 });
        assert_eq!(
            f.action("tb", "progress_of", &reset).await.0,
            StatusCode::OK
        );
    }
    let (status, _) = f.post(&format!("/v1/tasks/{id}/cancel"), &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    f.until(&id, "ended", final_status).await;
    f.close();
}

const CONFIRM_LIMITS: &str = "[limits]\ntask-deadline-ms = 60000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_that_cannot_be_stored_fails_for_the_guest_which_asks_again_once_it_can() {
    let f = Faulty::new(&[("confirm", CONFIRM, CONFIRM_LIMITS)]).await;
    let (status, body) = f
        .action(
            "confirm",
            "start",
            &json!({ "ask_retries": 300, "ask_after_ms": 1000 }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    f.until(&id, "about to ask", |t| {
        t["label"] == "waiting for the user"
    })
    .await;
    let before = f.disk.failed();
    f.disk.fail(At::Commit, Errno::Enospc);
    f.until_refused(before).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.task(&id).await["status"], "running");
    f.disk.heal();
    f.until(&id, "asked", |t| t["status"] == "waiting-confirmation")
        .await;
    let (status, body) = f
        .post(
            &format!("/v1/tasks/{id}/confirmation"),
            &json!({ "button": "yes" }),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let task = f.until(&id, "ended", final_status).await;
    assert_eq!(task["status"], "completed", "{task}");
    assert_eq!(task["result"]["answer"]["button"], "yes");
    let first = task["result"]["first_ask_error"].as_str().unwrap();
    assert!(
        first.starts_with("limit exceeded") && first.contains("storage is full"),
        "{first}"
    );
    let Faulty { t, .. } = f;
    drop(t);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_that_cannot_be_stored_is_refused_and_the_question_stays_open_for_the_next() {
    let f = Faulty::new(&[("confirm", CONFIRM, CONFIRM_LIMITS)]).await;
    let (_, body) = f.action("confirm", "start", &json!({})).await;
    let id = body["data"]["id"].as_str().unwrap().to_owned();
    f.until(&id, "asked", |t| t["status"] == "waiting-confirmation")
        .await;
    let answer = format!("/v1/tasks/{id}/confirmation");
    for errno in [Errno::Enospc, Errno::Eio] {
        f.disk.fail(At::Commit, errno);
        let (status, body) = f.post(&answer, &json!({ "button": "no" })).await;
        Refusal::of(errno).assert(status, &body);
        f.disk.heal();
        let task = f.task(&id).await;
        assert_eq!(task["status"], "waiting-confirmation", "{task}");
        assert_eq!(task["confirmation"]["answer"], Value::Null, "{task}");
    }
    let (status, body) = f.post(&answer, &json!({ "button": "yes" })).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let task = f.until(&id, "ended", final_status).await;
    assert_eq!(task["result"]["answer"]["button"], "yes", "{task}");
}

const SUB_GRANT: &str = r#"
[subprocess]
timeout-ms = 20000

[[subprocess.programs]]
program = "sleep"
args = [["{int}"]]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_the_audit_trail_cannot_record_never_starts_and_an_unrecorded_end_is_written_later()
 {
    let f = Faulty::new(&[("sub", SUBPROCESS, SUB_GRANT)]).await;
    let records = |f: &Faulty| {
        let host = f.t.host.clone();
        async move { host.audit(&subprocesses(), 10).await.unwrap() }
    };
    // Refused before it starts: no record, no child.
    f.disk.fail(At::Commit, Errno::Enospc);
    let started = Instant::now();
    let (status, body) = f
        .action("sub", "run", &json!({ "program": "sleep", "args": ["2"] }))
        .await;
    Refusal::Full.assert(status, &body);
    assert!(started.elapsed() < Duration::from_secs(2), "the child ran");
    f.disk.heal();
    assert!(records(&f).await.is_empty());
    // Launched on a working disk, ended on a full one.
    let run = {
        let (app, token) = (f.app.clone(), f.token.clone());
        tokio::spawn(async move {
            let req = Request::post("/v1/modules/sub/actions/run")
                .header("authorization", format!("Bearer {token}"))
                .body(Body::from(
                    json!({ "program": "sleep", "args": ["1"] }).to_string(),
                ))
                .unwrap();
            app.oneshot(req).await.unwrap().status()
        })
    };
    let deadline = Instant::now() + PATIENCE;
    while records(&f).await.is_empty() {
        assert!(Instant::now() < deadline, "the launch was never recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = f.disk.failed();
    f.disk.fail(At::Commit, Errno::Enospc);
    assert_eq!(run.await.unwrap(), StatusCode::OK);
    f.until_refused(before).await;
    assert!(records(&f).await[0].end.is_none());
    f.disk.heal();
    let deadline = Instant::now() + PATIENCE;
    while records(&f).await[0].end.is_none() {
        assert!(Instant::now() < deadline, "the end was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_stand_while_checkpoints_fail_and_checkpoint_once_the_disk_works() {
    let mut f = Faulty::new(&[TB]).await;
    let path = f.db_path();
    let size = || std::fs::metadata(&path).unwrap().len();
    for errno in [Errno::Eio, Errno::Enospc] {
        let failed = f.disk.failed();
        f.disk.fail(At::Checkpoint, errno);
        // SQLite checkpoints once the log holds 1,000 pages.
        let mut n = 0;
        while f.disk.failed() == failed {
            f.submit("noop", json!(null)).await.unwrap();
            n += 1;
            assert!(n < 5_000, "no checkpoint was tried");
        }
        let before = size();
        f.disk.heal();
        let id = f.submit("noop", json!(null)).await.unwrap();
        f.until(&id, "completed", |t| t["status"] == "completed")
            .await;
        assert!(size() > before, "the checkpoint never copied the log");
    }
    f.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_database_cannot_be_opened_fails_to_start_with_an_error_naming_it() {
    for errno in [Errno::Eio, Errno::Enospc] {
        let state = tempfile::tempdir().unwrap();
        let disk = Disk::under(state.path());
        disk.fail(At::Open, errno);
        let mut options = modhost::HostOptions::new(state.path());
        options.engine.cache_dir = Some(COMPONENT_CACHE_DIR.into());
        let error = modhost::Host::new(options).unwrap_err().to_string();
        assert!(error.contains("modhost.db"), "{error}");
        disk.heal();
        let host = host_on(state.path());
        host.start_tasks().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_racing_a_failing_disk_are_each_either_refused_or_kept() {
    let mut f = Faulty::new(&[TB]).await;
    let faults = [
        (At::Commit, Errno::Enospc),
        (At::Commit, Errno::Eio),
        (At::CommitSync, Errno::Eio),
        (At::Checkpoint, Errno::Eio),
    ];
    let submitters: Vec<_> = (0..8)
        .map(|i| {
            let (app, token) = (f.app.clone(), f.token.clone());
            tokio::spawn(async move {
                let mut kept = Vec::new();
                for n in 0..60 {
                    let req = Request::post("/v1/modules/tb/actions/submit")
                        .header("authorization", format!("Bearer {token}"))
                        .body(Body::from(
                            json!({ "task": "echo", "args": { "i": i, "n": n } }).to_string(),
                        ))
                        .unwrap();
                    let res = app.clone().oneshot(req).await.unwrap();
                    let status = res.status();
                    let bytes = res.into_body().collect().await.unwrap().to_bytes();
                    let body = json(std::str::from_utf8(&bytes).unwrap());
                    match status {
                        StatusCode::OK => {
                            kept.push(body["data"]["id"].as_str().unwrap().to_owned())
                        }
                        StatusCode::TOO_MANY_REQUESTS | StatusCode::INTERNAL_SERVER_ERROR => {
                            let code = body["error"]["code"].as_str().unwrap();
                            assert!(["limit-exceeded", "internal"].contains(&code), "{body}");
                        }
                        other => panic!("submission answered {other}: {body}"),
                    }
                }
                kept
            })
        })
        .collect();
    for round in 0..20u32 {
        let (at, errno) = faults[round as usize % faults.len()];
        f.disk.fail_times(at, errno, 1 + round % 3);
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let mut kept = Vec::new();
    for s in submitters {
        kept.extend(s.await.unwrap());
    }
    assert!(f.disk.failed() > 0, "no fault reached the disk");
    f.disk.heal();
    assert!(!kept.is_empty());
    for id in &kept {
        f.until(id, "ended", final_status).await;
    }
    f.acknowledged = kept;
    f.close();
}
