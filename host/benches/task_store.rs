//! Task store throughput and lookup latency, beside raw SQLite on the same
//! schema and machine.
//!
//! (a) submit -> claim -> finish of no-op tasks through `SqliteTaskStore`
//!     (synchronous=FULL, group commit), from 256 concurrent submitters;
//! (b) raw batched inserts of the same rows, 256 per transaction, FULL.
//!
//! `TASKS` in the environment sets the size. Lookups at 1M rows are in
//! `modhost-bench` (scenario 6), beside the same raw SQL.

use std::sync::Arc;
use std::time::{Duration, Instant};

use modhost::db::Durability;
use modhost::tasks::store::sqlite::SqliteTaskStore;
use modhost::tasks::store::{
    HostId, MIGRATIONS, NewTask, Outcome, Quota, SqliteOptions, Submitted, TaskStore, Want,
    apply_schema,
};
use rusqlite::{Connection, params};

const SUBMITTERS: usize = 256;
const BATCH: usize = 256;
/// The lease of a claimed task; no-op tasks end long before it runs out.
const LEASE: Duration = Duration::from_secs(60);

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn new_task(key: Option<String>) -> NewTask {
    NewTask {
        id: uuid::Uuid::now_v7().to_string(),
        module: "bench".into(),
        task_name: "noop".into(),
        task_key: key,
        title: None,
        args_json: "{}".into(),
        resumable: false,
        user_id: "user-1".into(),
        organization_id: "org-1".into(),
        role: "member".into(),
        request_id: "req-1".into(),
        session_id: None,
        created_at: 0,
        limits: Quota {
            max_active_per_user: u32::MAX,
            max_active_per_module: u32::MAX,
            max_active_per_org: u32::MAX,
        },
    }
}

/// A count as f64 (benchmark counts stay far below 2^32).
fn count(n: impl TryInto<u32>) -> f64 {
    n.try_into().map(f64::from).unwrap_or(f64::MAX)
}

fn per_second(n: usize, elapsed: Duration) -> f64 {
    count(n) / elapsed.as_secs_f64()
}

/// (a): the full life of `tasks` no-op tasks through the store.
fn store_lifecycle(tasks: usize) -> (f64, f64) {
    let store = Arc::new(
        SqliteTaskStore::open_fresh_for_tests(SqliteOptions {
            durability: Durability::Full,
            ..SqliteOptions::default()
        })
        .expect("open store"),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let commits_before = store.commits();
    let started = Instant::now();
    rt.block_on(async {
        let mut set = tokio::task::JoinSet::new();
        for s in 0..SUBMITTERS {
            let store = Arc::clone(&store);
            let host = HostId::local();
            let want = [Want {
                module: "bench".into(),
                max: 1,
            }];
            let mine = tasks / SUBMITTERS + usize::from(s < tasks % SUBMITTERS);
            set.spawn(async move {
                for _ in 0..mine {
                    let Ok(Submitted::Created(_)) = store.submit(new_task(None)).await else {
                        panic!("submit failed");
                    };
                    // Every submitter claims after its own submit, so one
                    // task (not always its own) is pending for it.
                    let claimed = store
                        .claim(&host, &want, LEASE)
                        .await
                        .expect("claim")
                        .pop()
                        .expect("a pending task");
                    let done = Outcome::Completed {
                        result_json: "null".into(),
                    };
                    let finished = store.finish(&claimed.row.id, Some(&claimed.lease), done);
                    assert!(finished.await.expect("finish"));
                }
            });
        }
        set.join_all().await;
    });
    let elapsed = started.elapsed();
    let commits = store.commits() - commits_before;
    let ops_per_commit = count(tasks * 3) / count(commits);
    (per_second(tasks, elapsed), ops_per_commit)
}

fn raw_connection(path: &std::path::Path, sync: &str) -> Connection {
    let conn = Connection::open(path).expect("open");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    conn.pragma_update(None, "synchronous", sync).expect("sync");
    conn
}

const RAW_INSERT: &str = "INSERT INTO tasks (id, module, task_name, task_key, title, status, \
    args_json, resumable, user_id, organization_id, role, request_id, session_id, created_at, \
    updated_at, finished_at) \
    VALUES (?1, ?2, ?3, ?4, NULL, ?5, '{}', 0, ?6, ?7, 'member', 'req-1', NULL, ?8, ?8, ?9)";

/// Inserts `rows` rows, `per_tx` per transaction, built by `row(i)`:
/// (task_key, status, user_id, created_at).
fn raw_insert(
    conn: &Connection,
    rows: usize,
    per_tx: usize,
    row: impl Fn(usize) -> (Option<String>, &'static str, String, i64),
) {
    let mut i = 0;
    while i < rows {
        let tx = conn.unchecked_transaction().expect("begin");
        {
            let mut stmt = tx.prepare(RAW_INSERT).expect("prepare");
            for j in i..(i + per_tx).min(rows) {
                let (key, status, user, created) = row(j);
                let finished = (status != "pending").then_some(created);
                stmt.execute(params![
                    uuid::Uuid::now_v7().to_string(),
                    "bench",
                    "noop",
                    key,
                    status,
                    user,
                    "org-1",
                    created,
                    finished
                ])
                .expect("insert");
            }
        }
        tx.commit().expect("commit");
        i += per_tx;
    }
}

/// (b): the same number of rows, raw, 256 per FULL transaction.
fn raw_batched(rows: usize) -> f64 {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raw.db");
    let conn = raw_connection(&path, "FULL");
    apply_schema(&conn).expect("schema");
    let started = Instant::now();
    raw_insert(&conn, rows, BATCH, |_| {
        (None, "pending", "user-1".to_owned(), 0)
    });
    per_second(rows, started.elapsed())
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let tasks = env_or("TASKS", 25_600);
    println!("command: cargo bench -p modhost --bench task_store");
    println!(
        "store migrations: {}; submitters: {SUBMITTERS}; tasks: {tasks}",
        MIGRATIONS.len()
    );

    let (tasks_per_s, ops_per_commit) = store_lifecycle(tasks);
    println!(
        "(a) store submit->claim->finish, FULL, {SUBMITTERS} submitters: {tasks_per_s:.0} tasks/s \
         ({:.0} writes/s, {ops_per_commit:.1} writes per commit)",
        tasks_per_s * 3.0
    );

    let raw_rows_per_s = raw_batched(tasks);
    println!(
        "(b) raw SQLite inserts, {BATCH} rows per FULL transaction: {raw_rows_per_s:.0} rows/s"
    );
}
