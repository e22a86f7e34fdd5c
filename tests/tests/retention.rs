//! Retention end to end: a host deletes finished tasks and subprocess audit
//! records past their retention, and nothing active or recent.

use std::time::Duration;

use modhost::identity::RequestMeta;
use modhost::retention::Pruned;
use modhost::tasks::SubmitOptions;
use modhost_tests::*;
use rusqlite::{Connection, params};

const DAY_MS: i64 = 86_400_000;

fn now_ms() -> i64 {
    modhost::db::now_ms()
}

/// A task of module `tasks` for alice of acme that finished `days_ago`, as
/// an earlier run of the host left it.
fn finished_task(conn: &Connection, status: &str, days_ago: i64) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    let at = now_ms() - days_ago * DAY_MS;
    conn.execute(
        "INSERT INTO tasks (id, module, task_name, status, args_json, resumable, user_id, \
         organization_id, role, request_id, created_at, updated_at, finished_at) \
         VALUES (?1, 'tasks', 'noop', ?2, '{}', 0, 'alice', 'acme', 'member', 'r', ?3, ?3, ?3)",
        params![id, status, at],
    )
    .unwrap();
    id
}

/// A denied `run-subprocess` of alice of acme, decided `days_ago`.
fn audit_record(conn: &Connection, days_ago: i64) {
    conn.execute(
        "INSERT INTO audit (id, at, capability, module, user_id, organization_id, request_id, \
         subject, decision, detail_json) \
         VALUES (?1, ?2, 'subprocess', 'tasks', 'alice', 'acme', 'r', 'rm', 'denied', \
         '{\"path\":null,\"args\":[],\"cwd\":null,\"env_names\":[],\"confined\":false}')",
        params![
            uuid::Uuid::now_v7().to_string(),
            now_ms() - days_ago * DAY_MS
        ],
    )
    .unwrap();
}

fn open_db(t: &TestHost) -> Connection {
    let conn = Connection::open(t.state.path().join("modhost.db")).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_finished_tasks_and_audit_records_go_while_recent_and_active_ones_stay() {
    let mut t = TestHost::with_options(|o| {
        o.retention.tasks = "7d".parse().unwrap();
        o.retention.audit = "30d".parse().unwrap();
    });
    t.load("tasks", TASKS_BASIC, "[limits]\ntask-deadline-ms = 60000")
        .await;
    let alice = principal("alice", "acme");
    let submit = |task: &'static str| {
        let (host, alice) = (t.host.clone(), alice.clone());
        async move {
            host.submit_task(
                "tasks",
                task,
                "{}",
                SubmitOptions::default(),
                &alice,
                RequestMeta::fresh(),
            )
            .await
            .unwrap()
        }
    };
    // The host does not run tasks here (no `start_tasks`, so no pruning
    // pass of its own either): a submitted task stays pending, and active.
    let active = submit("sleep").await;

    let conn = open_db(&t);
    let done = finished_task(&conn, "completed", 0);
    let old: Vec<String> = ["completed", "failed", "cancelled", "interrupted"]
        .into_iter()
        .map(|status| finished_task(&conn, status, 8))
        .collect();
    let recent = finished_task(&conn, "failed", 6);
    audit_record(&conn, 31);
    audit_record(&conn, 45);
    audit_record(&conn, 29);

    let pruned = t.host.prune().await.unwrap();
    assert_eq!(pruned, Pruned { tasks: 4, audit: 2 });
    for id in &old {
        assert!(
            t.host.tasks().get(id, &alice).await.is_err(),
            "{id} was kept"
        );
    }
    for id in [&done, &recent, &active] {
        t.host.tasks().get(id, &alice).await.unwrap();
    }
    let trail = t.host.audit(&subprocesses(), 100).await.unwrap();
    assert_eq!(trail.len(), 1, "the record of 29 days ago stays");
    // Nothing else is past its retention now.
    assert_eq!(t.host.prune().await.unwrap(), Pruned::default());
    t.host.tasks().cancel(&active, &alice).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_host_prunes_what_expired_while_it_was_down() {
    let mut t = TestHost::new();
    t.load("tasks", TASKS_BASIC, "").await;
    let conn = open_db(&t);
    let expired = finished_task(&conn, "completed", 31);
    let kept = finished_task(&conn, "completed", 29);
    audit_record(&conn, 91);
    t.host.start_tasks().await.unwrap();
    let alice = principal("alice", "acme");
    let gone = async || {
        let task_gone = t.host.tasks().get(&expired, &alice).await.is_err();
        let trail = t.host.audit(&subprocesses(), 100).await;
        (task_gone, trail.unwrap().is_empty())
    };
    for _ in 0..500 {
        if gone().await == (true, true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gone().await,
        (true, true),
        "a task finished 31 days ago and a record of 91 days ago outlived the defaults (30 and 90 days)"
    );
    t.host.tasks().get(&kept, &alice).await.unwrap();
}
