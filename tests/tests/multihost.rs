//! Several `modhost serve` processes on one PostgreSQL database, run as an
//! operator runs them and driven through their HTTP APIs: a task submitted
//! through any host runs once, on whichever host claims it; the tasks of a
//! host killed or paused past its lease are taken over by another; the host
//! that lost a task changes nothing of it afterwards; and a cancel or an
//! answer given through one host reaches the run on another.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modhost::client::{Client, ClientError};
use modhost::http::serve::DEMO_USER;
use modhost::tasks::store::LEASE_EXPIRED;
use modhost_tests::postgres::Cluster;
use modhost_tests::*;
use serde_json::{Value, json};

use modhost_tests::serve::{PATIENCE, POLL, Serve, modules};

/// The lease of hosts whose tasks are taken over in these tests.
const SHORT_LEASE: &str = "2s";
/// [`SHORT_LEASE`] in milliseconds.
const SHORT_LEASE_MS: i64 = 2_000;
/// Tasks that may run for as long as a test needs them to.
const LONG_TASKS: &str = "[limits]\ntask-deadline-ms = 600000";
/// `tb` running one task at a time on each host.
const ONE_AT_A_TIME: &str = "[limits]\ntask-deadline-ms = 600000\n[tasks]\nmax-concurrent = 1";

/// A new empty database on the suite's cluster; its URL.
async fn fresh_database() -> String {
    let name = format!("multihost_{}", uuid::Uuid::new_v4().simple());
    tokio::task::spawn_blocking(move || Cluster::shared().create_database(&name))
        .await
        .unwrap()
}

/// Reads with `read` every [`POLL`] until `done` holds for the answer, for
/// at most [`PATIENCE`]; returns that answer.
async fn until<F>(what: &str, mut read: impl FnMut() -> F, done: impl Fn(&Value) -> bool) -> Value
where
    F: Future<Output = Result<Value, ClientError>>,
{
    let started = Instant::now();
    loop {
        let last = read().await;
        if let Ok(v) = &last
            && done(v)
        {
            return v.clone();
        }
        assert!(
            started.elapsed() < PATIENCE,
            "{what}: still {last:?} after {PATIENCE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// `GET /v1/tasks/{id}` through `client` until `done` holds for the task.
async fn task_until(client: &Client, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    until(&format!("task {id} {what}"), || client.task(id), done).await
}

fn is_final(task: &Value) -> bool {
    ["completed", "failed", "cancelled", "interrupted"]
        .iter()
        .any(|s| task["status"] == *s)
}

/// Calls an action that starts a task; the task's id.
async fn start(client: &Client, module: &str, action: &str, args: Value) -> String {
    let out = client
        .call_action(module, action, &args.to_string())
        .await
        .unwrap_or_else(|e| panic!("{module} {action} {args}: {e}"));
    out["data"]["id"]
        .as_str()
        .expect("the action answers the task's id")
        .to_owned()
}

/// What the database holds as the time left on the lease of task `id`, in
/// milliseconds.
fn lease_left_ms(store: &str, id: &str) -> i64 {
    assert!(id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'));
    let sql = format!("SELECT lease_expires_at - modhost_now() FROM tasks WHERE id = '{id}'");
    let left = Cluster::shared().psql(store, &sql);
    left.trim()
        .parse()
        .unwrap_or_else(|_| panic!("no lease on {id}: {left:?}"))
}

/// The status changes one host's event stream reports, `(task, status,
/// host)` in order: every host's (events cross hosts), each run's with the
/// host that ran it.
#[derive(Clone, Default)]
struct Statuses(Arc<Mutex<Vec<Seen>>>);

/// One status event: task, status, and the host of a run's.
type Seen = (String, String, Option<String>);

impl Statuses {
    /// Follows the stream of the `tb` module's events through `client`
    /// from now on.
    async fn follow(client: &Client) -> Statuses {
        let mut stream = client
            .events(&[("module", "tb".to_owned())], None)
            .await
            .expect("an event stream");
        let seen = Statuses::default();
        let into = seen.clone();
        tokio::spawn(async move {
            while let Ok(Some(event)) = stream.next().await {
                if event.data["type"] == "status"
                    && let (Some(task), Some(status)) = (
                        event.data["task_id"].as_str(),
                        event.data["status"].as_str(),
                    )
                {
                    let host = event.data["host"].as_str().map(str::to_owned);
                    let mut seen = into.0.lock().unwrap();
                    seen.push((task.to_owned(), status.to_owned(), host));
                }
            }
        });
        seen
    }

    /// The hosts of the `status` events of `task`, one per event.
    fn hosts_of(&self, task: &str, status: &str) -> Vec<Option<String>> {
        let seen = self.0.lock().unwrap();
        seen.iter()
            .filter(|(t, s, _)| t == task && s == status)
            .map(|(_, _, h)| h.clone())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_submitted_through_three_hosts_run_exactly_once() {
    const TASKS: usize = 60;
    let store = fresh_database().await;
    let dir = modules(&[(
        "tb",
        TASKS_BASIC,
        "[limits]\ntask-deadline-ms = 600000\n[tasks]\nmax-concurrent = 8\nmax-active-per-user = 1000",
    )]);
    // Started at once, so they also race to migrate the new database.
    let (a, b, c) = tokio::join!(
        Serve::start("a", dir.path(), &store, None),
        Serve::start("b", dir.path(), &store, None),
        Serve::start("c", dir.path(), &store, None),
    );
    let hosts = [&a, &b, &c];
    // Started together on an empty database, exactly one of them makes the
    // development token (any one), and every host takes it.
    let printed = hosts.iter().filter(|h| h.token.is_some()).count();
    assert_eq!(printed, 1, "hosts that printed a development token");
    let clients: Vec<Client> = hosts.iter().map(|h| h.client(&hosts)).collect();
    let mut streams = Vec::new();
    for client in &clients {
        streams.push(Statuses::follow(client).await);
    }

    let ids = futures::future::join_all((0..TASKS).map(|n| {
        let args = json!({ "task": "echo", "args": { "n": n } });
        start(&clients[n % 3], "tb", "submit", args)
    }))
    .await;
    let query = [("module", "tb".to_owned()), ("limit", "200".to_owned())];
    let page = until(
        "every task final",
        || clients[0].tasks(&query),
        |p| {
            p["tasks"]
                .as_array()
                .is_some_and(|t| t.len() == TASKS && t.iter().all(is_final))
        },
    )
    .await;
    let listed: BTreeSet<&str> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect());
    for (n, id) in ids.iter().enumerate() {
        // Read through a host other than the one it was submitted through.
        let task = clients[(n + 1) % 3].task(id).await.unwrap();
        assert_eq!(task["status"], "completed", "{task}");
        assert_eq!(task["attempts"], 1, "claimed once: {task}");
        assert_eq!(task["result"], json!({ "n": n }), "{task}");
        assert_eq!(task["host"], Value::Null, "a finished task has no host");
    }

    // Every host's stream shows every run: one `running` and one
    // `completed` per task, both naming the one host that ran it.
    let started = Instant::now();
    while !ids.iter().all(|id| {
        streams
            .iter()
            .all(|s| !s.hosts_of(id, "completed").is_empty())
    }) {
        assert!(
            started.elapsed() < PATIENCE,
            "some completions never reached an event stream"
        );
        tokio::time::sleep(POLL).await;
    }
    let mut ran_by: BTreeMap<&str, String> = BTreeMap::new();
    for (host, stream) in hosts.iter().zip(&streams) {
        for id in &ids {
            let runs = stream.hosts_of(id, "running");
            let ends = stream.hosts_of(id, "completed");
            assert_eq!(
                runs.len(),
                1,
                "task {id} seen on host {}: {runs:?}",
                host.name
            );
            assert_eq!(runs, ends, "task {id} seen on host {}", host.name);
            let runner = runs[0].clone().expect("a run's status names its host");
            let first = ran_by.entry(id.as_str()).or_insert_with(|| runner.clone());
            assert_eq!(
                *first, runner,
                "task {id}: the hosts disagree on who ran it"
            );
        }
    }
    let runners: BTreeSet<&str> = ran_by.values().map(String::as_str).collect();
    assert!(
        runners.len() > 1,
        "every task ran on {runners:?}: the hosts did not share the work"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_hosts_tasks_are_taken_over_after_its_lease() {
    let store = fresh_database().await;
    let dir = modules(&[
        ("tb", TASKS_BASIC, LONG_TASKS),
        ("confirm", CONFIRM, LONG_TASKS),
    ]);
    let mut a = Serve::start("a", dir.path(), &store, Some(SHORT_LEASE)).await;
    let on_a = a.client(&[&a]);
    // Alone, a runs both: a task that sleeps for an hour, and a resumable
    // one that checkpoints and waits for a confirmation.
    let plain = start(&on_a, "tb", "submit", json!({ "task": "sleep" })).await;
    let resumable = start(&on_a, "confirm", "start", json!({})).await;
    let running = task_until(&on_a, &plain, "running", |t| t["status"] == "running").await;
    assert_eq!(running["host"], "a");
    let asked = task_until(&on_a, &resumable, "asking", |t| {
        t["status"] == "waiting-confirmation"
    })
    .await;
    assert_eq!(asked["host"], "a");
    assert_eq!(asked["attempts"], 1);
    assert_eq!(asked["checkpoint"], json!({ "asked": true }));
    for id in [&plain, &resumable] {
        let left = lease_left_ms(&store, id);
        assert!(
            left <= SHORT_LEASE_MS,
            "a lease of {left} ms, not the 2 s given"
        );
    }

    let b = Serve::start("b", dir.path(), &store, Some(SHORT_LEASE)).await;
    let on_b = b.client(&[&a]);
    let watched = Statuses::follow(&on_b).await;
    a.kill();

    let interrupted = task_until(&on_b, &plain, "interrupted", is_final).await;
    // b's watchers are told of the recovery, not only its readers.
    let started = Instant::now();
    while watched.hosts_of(&plain, "interrupted").is_empty() {
        assert!(
            started.elapsed() < PATIENCE,
            "the recovery never reached b's event stream"
        );
        tokio::time::sleep(POLL).await;
    }
    assert_eq!(interrupted["status"], "interrupted", "{interrupted}");
    assert_eq!(interrupted["failure"]["kind"], "interrupted");
    assert_eq!(interrupted["failure"]["message"], LEASE_EXPIRED);
    assert_eq!(interrupted["host"], Value::Null);
    let again = task_until(&on_b, &resumable, "asking again", |t| {
        t["attempts"] == 2 && t["status"] == "waiting-confirmation"
    })
    .await;
    assert_eq!(again["host"], "b", "{again}");
    assert_eq!(again["checkpoint"], json!({ "asked": true }));
    let asked_at = again["confirmation"]["asked_at"].as_i64().unwrap();
    on_b.confirm(&resumable, "yes", json!({}), Some(asked_at))
        .await
        .unwrap();
    let done = task_until(&on_b, &resumable, "finished", is_final).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["result"]["answer"]["button"], "yes");
    assert_eq!(
        done["result"]["resumed"], true,
        "b's run started from a's checkpoint"
    );

    // No task is lost: b knows exactly the two, each at its end.
    let page = on_b.tasks(&[]).await.unwrap();
    let mut listed: Vec<(&str, &str)> = page["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["id"].as_str().unwrap(), t["status"].as_str().unwrap()))
        .collect();
    listed.sort();
    let mut expected = vec![
        (plain.as_str(), "interrupted"),
        (resumable.as_str(), "completed"),
    ];
    expected.sort();
    assert_eq!(listed, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_paused_past_its_lease_cannot_finish_the_task_it_lost() {
    let store = fresh_database().await;
    let dir = modules(&[
        ("tb", TASKS_BASIC, LONG_TASKS),
        ("confirm", CONFIRM, LONG_TASKS),
    ]);
    let a = Serve::start("a", dir.path(), &store, Some(SHORT_LEASE)).await;
    let on_a = a.client(&[&a]);
    let plain = start(&on_a, "tb", "submit", json!({ "task": "sleep" })).await;
    let resumable = start(&on_a, "confirm", "start", json!({})).await;
    task_until(&on_a, &plain, "running on a", |t| {
        t["status"] == "running" && t["host"] == "a"
    })
    .await;
    task_until(&on_a, &resumable, "asking on a", |t| {
        t["status"] == "waiting-confirmation" && t["host"] == "a"
    })
    .await;

    let b = Serve::start("b", dir.path(), &store, Some(SHORT_LEASE)).await;
    let on_b = b.client(&[&a]);
    a.pause();
    let interrupted = task_until(&on_b, &plain, "interrupted", is_final).await;
    assert_eq!(interrupted["status"], "interrupted", "{interrupted}");
    assert_eq!(interrupted["failure"]["message"], LEASE_EXPIRED);
    let taken = task_until(&on_b, &resumable, "asking again on b", |t| {
        t["attempts"] == 2 && t["status"] == "waiting-confirmation"
    })
    .await;
    assert_eq!(taken["host"], "b", "{taken}");

    // a wakes with both runs still going. Its next renewal finds the leases
    // lost and stops them; the end a's run of the resumable task then tries
    // to record is refused, and it says so.
    a.resume();
    let resumed = Instant::now();
    while !a.logged(|line| line.contains("lease was lost") && line.contains(&resumable)) {
        let now = on_b.task(&resumable).await.unwrap();
        assert_eq!(now, taken, "a's run changed the task b runs");
        assert!(
            resumed.elapsed() < PATIENCE,
            "a never tried to record the end of its run"
        );
        tokio::time::sleep(POLL).await;
    }
    let after = on_b.task(&resumable).await.unwrap();
    assert_eq!(after, taken, "a's run changed the task b runs");
    let after = on_b.task(&plain).await.unwrap();
    assert_eq!(after, interrupted, "a's run changed the interrupted task");

    let asked_at = taken["confirmation"]["asked_at"].as_i64().unwrap();
    on_b.confirm(&resumable, "yes", json!({}), Some(asked_at))
        .await
        .unwrap();
    let done = task_until(&on_b, &resumable, "finished", is_final).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["result"]["resumed"], true, "b's run, not a's: {done}");
    // a serves on, reading what b made of the task.
    assert_eq!(on_a.task(&resumable).await.unwrap(), done);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_paused_in_the_middle_of_a_write_keeps_its_tasks_from_no_other_host() {
    let store = fresh_database().await;
    let dir = modules(&[("tb", TASKS_BASIC, LONG_TASKS)]);
    let a = Serve::start("a", dir.path(), &store, Some(SHORT_LEASE)).await;
    let on_a = a.client(&[&a]);
    // Progress flat out: a's writer is in a transaction that updated the
    // task's row much of the time.
    let args = json!({ "task": "burst", "args": { "n": 100_000_000 } });
    let busy = start(&on_a, "tb", "submit", args).await;
    task_until(&on_a, &busy, "writing progress", |t| {
        t["progress"].as_f64().is_some_and(|p| p > 0.0)
    })
    .await;
    let started = Instant::now();
    loop {
        a.pause();
        if writing_in_an_open_transaction(&store) {
            break;
        }
        a.resume();
        assert!(
            started.elapsed() < PATIENCE,
            "a was never caught in the middle of a write"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The row a locked is recovered all the same, once PostgreSQL ends a's
    // idle transaction.
    let b = Serve::start("b", dir.path(), &store, Some(SHORT_LEASE)).await;
    let on_b = b.client(&[&a]);
    let interrupted = task_until(&on_b, &busy, "interrupted", is_final).await;
    assert_eq!(interrupted["status"], "interrupted", "{interrupted}");
    assert_eq!(interrupted["failure"]["message"], LEASE_EXPIRED);
}

/// Whether a session on the database `store` holds a transaction open,
/// waiting for its client, after updating a task.
fn writing_in_an_open_transaction(store: &str) -> bool {
    let sessions = Cluster::shared().psql(
        store,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
         AND state = 'idle in transaction' AND query LIKE 'UPDATE tasks%'",
    );
    sessions.trim() != "0"
}

/// Hosts `a`, with no module, and `b`, with `module`, on a new database
/// under [`SHORT_LEASE`]: every run is b's, and a is where a user comes in.
struct TwoHosts {
    on_a: Client,
    on_b: Client,
    _hosts: (Serve, Serve),
    _modules: (tempfile::TempDir, tempfile::TempDir),
}

impl TwoHosts {
    async fn start(module: (&str, &str, &str)) -> TwoHosts {
        let store = fresh_database().await;
        let (none, dir) = (modules(&[]), modules(&[module]));
        let (a, b) = tokio::join!(
            Serve::start("a", none.path(), &store, Some(SHORT_LEASE)),
            Serve::start("b", dir.path(), &store, Some(SHORT_LEASE)),
        );
        TwoHosts {
            on_a: a.client(&[&a, &b]),
            on_b: b.client(&[&a, &b]),
            _hosts: (a, b),
            _modules: (none, dir),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_answered_through_one_host_resumes_the_task_waiting_on_another() {
    let hosts = TwoHosts::start(("confirm", CONFIRM, LONG_TASKS)).await;
    let (on_a, on_b) = (&hosts.on_a, &hosts.on_b);
    let id = start(on_b, "confirm", "start", json!({})).await;
    let asked = task_until(on_a, &id, "asking", |t| {
        t["status"] == "waiting-confirmation"
    })
    .await;
    assert_eq!(asked["host"], "b");
    let asked_at = asked["confirmation"]["asked_at"].as_i64().unwrap();
    on_a.confirm(&id, "no", json!({}), Some(asked_at))
        .await
        .unwrap();
    let done = task_until(on_a, &id, "finished", is_final).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["result"]["answer"]["button"], "no");
    assert_eq!(done["result"]["answer"]["by"], DEMO_USER);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_through_one_host_stops_the_run_on_another() {
    let hosts = TwoHosts::start(("tb", TASKS_BASIC, ONE_AT_A_TIME)).await;
    let (on_a, on_b) = (&hosts.on_a, &hosts.on_b);
    let sleeping = start(on_b, "tb", "submit", json!({ "task": "sleep" })).await;
    task_until(on_a, &sleeping, "running on b", |t| {
        t["status"] == "running" && t["host"] == "b"
    })
    .await;
    let answer = on_a.cancel(&sleeping).await.unwrap();
    assert_eq!(answer["status"], "cancelled");
    let cancelled = on_a.task(&sleeping).await.unwrap();
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(
        cancelled["failure"]["message"],
        format!("cancelled by {}", DEMO_USER)
    );
    assert_eq!(cancelled["host"], Value::Null);

    // b runs one tb task at a time: the next runs once the cancelled run
    // has stopped there.
    let next = start(on_b, "tb", "submit", json!({ "task": "noop" })).await;
    let done = task_until(on_a, &next, "finished", is_final).await;
    assert_eq!(done["status"], "completed", "{done}");
    assert_eq!(
        on_a.task(&sleeping).await.unwrap(),
        cancelled,
        "the stopped run's own end changed nothing"
    );
}

#[test]
fn a_task_lease_under_a_second_is_refused() {
    for lease in ["500ms", "0", "forever", "soon"] {
        let out = Command::new(modhost_binary())
            .args(["serve", "--task-lease", lease, "--listen", "127.0.0.1:0"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{lease}: {stderr}");
        assert!(
            stderr.contains("at least 1s"),
            "{lease}: the refusal names the least lease: {stderr}"
        );
    }
}
