//! What only the SQLite store can show: its query plans, the guards of its
//! schema (the unique index, `CHECK`s, triggers and counters, read with raw
//! SQL), its migrations of an older database, its single writer (group
//! commit, batches, contained panics) and the opening of files. What every
//! store must do is the conformance suite, run here on SQLite.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::task::JoinSet;

use super::conformance::{LEASE, answer, claim_all, created, lease_of, resumable, running, task};
use super::sqlite::{ListQuery, SqliteTaskStore, sql};
use super::*;

async fn fresh_sqlite() -> Arc<dyn TaskStore> {
    Arc::new(SqliteTaskStore::open_fresh_for_tests(SqliteOptions::default()).unwrap())
}

crate::task_store_conformance!(fresh_sqlite());

fn store() -> Arc<SqliteTaskStore> {
    Arc::new(SqliteTaskStore::open_fresh_for_tests(SqliteOptions::default()).unwrap())
}

/// A connection of its own on the store's file, for checks behind the
/// store's back.
fn raw(store: &SqliteTaskStore) -> Connection {
    let conn = Connection::open(store.path()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

/// The names of the cases `conformance.rs` defines (a `pub async fn` whose
/// only parameter is the store) and of those its macro runs.
fn conformance_cases() -> (Vec<String>, Vec<String>) {
    let source = include_str!("conformance.rs");
    let (suite, _) = source
        .split_once("(@cases $fresh:expr;")
        .expect("the macro's second rule");
    let (_, listed) = suite
        .split_once("(@cases $fresh;")
        .expect("the macro's list");
    let listed = listed
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_suffix(','))
        .filter(|l| !l.is_empty() && l.chars().all(|c| c == '_' || c.is_ascii_alphanumeric()))
        .map(str::to_owned)
        .collect();
    let mut defined = Vec::new();
    for (_, rest) in source
        .match_indices("pub async fn ")
        .map(|(i, _)| source.split_at(i + 13))
    {
        let (name, rest) = rest.split_once('(').expect("a parameter list");
        let (params, _) = rest.split_once(')').expect("a parameter list");
        let params = params.trim().trim_end_matches(',');
        if params == "store: Arc<dyn TaskStore>" {
            defined.push(name.to_owned());
        }
    }
    (defined, listed)
}

#[test]
fn every_conformance_case_runs_in_the_suite() {
    let (mut defined, mut listed) = conformance_cases();
    assert!(defined.len() > 60, "{defined:?}");
    defined.sort();
    listed.sort();
    let before = listed.len();
    listed.dedup();
    assert_eq!(before, listed.len(), "a case is listed twice");
    assert_eq!(defined, listed);
}

// ---- schema guards ------------------------------------------------------------

#[tokio::test]
async fn database_rejects_a_second_active_task_with_the_same_key() {
    let store = store();
    let id = created(&*store, task("m", "o", "u1", Some("k"))).await;
    let conn = raw(&store);
    let copy = format!(
        "INSERT INTO tasks (id, module, task_name, task_key, status, args_json, resumable, \
         user_id, organization_id, role, request_id, created_at, updated_at) \
         SELECT '{}', module, task_name, task_key, 'running', args_json, resumable, user_id, \
         organization_id, role, request_id, created_at, updated_at FROM tasks WHERE id = ?1",
        uuid::Uuid::now_v7()
    );
    let err = conn.execute(&copy, [&id]).unwrap_err();
    assert!(err.to_string().contains("UNIQUE"), "{err}");
}

#[tokio::test]
async fn the_database_refuses_to_change_a_final_status_or_an_owner() {
    let store = store();
    let id = created(&*store, task("m", "o", "u1", None)).await;
    let conn = raw(&store);
    let err = conn
        .execute(
            "UPDATE tasks SET organization_id = 'o2' WHERE id = ?1",
            [&id],
        )
        .unwrap_err();
    assert!(err.to_string().contains("owner"), "{err}");
    store
        .finish(&id, None, Outcome::Cancelled { by: None })
        .await
        .unwrap();
    let err = conn
        .execute(
            "UPDATE tasks SET status = 'running', finished_at = NULL WHERE id = ?1",
            [&id],
        )
        .unwrap_err();
    assert!(err.to_string().contains("finished task"), "{err}");
}

#[test]
fn the_schema_refuses_unknown_statuses_and_wrongly_typed_values() {
    let conn = Connection::open_in_memory().unwrap();
    apply_schema(&conn).unwrap();
    let insert = |status: &str, progress: &str| {
        conn.execute(
            &format!(
                "INSERT INTO tasks (id, module, task_name, status, progress, args_json, \
                 resumable, user_id, organization_id, role, request_id, created_at, updated_at) \
                 VALUES ('{}', 'm', 'w', '{status}', {progress}, '{{}}', 0, 'u', 'o', 'member', \
                 'r', 1, 1)",
                uuid::Uuid::now_v7()
            ),
            [],
        )
    };
    assert!(insert("pending", "0.5").is_ok());
    assert!(insert("paused", "0.5").is_err(), "CHECK on status");
    assert!(insert("pending", "'half'").is_err(), "STRICT column type");
    assert!(insert("pending", "2.0").is_err(), "CHECK on progress");
    assert!(
        insert("completed", "1.0").is_err(),
        "final needs finished_at"
    );
    let strict: i64 = conn
        .query_row(
            "SELECT count(*) FROM pragma_table_list WHERE strict = 1 AND name LIKE 'task%'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    // tasks and its counters per user, per (module, organization) and per
    // organization.
    assert_eq!(strict, 4);
}

// ---- counters -----------------------------------------------------------------

#[tokio::test]
async fn active_counters_match_active_rows_after_every_transition() {
    let store = store();
    let s: &dyn TaskStore = &*store;
    let a = running(s, task("m", "o", "u1", None)).await;
    let b = running(s, task("m", "o", "u1", None)).await;
    let d = running(s, resumable("u2")).await;
    let e = running(s, task("m", "o", "u2", None)).await;
    assert!(s.release(&e).await.unwrap());
    let c = created(s, task("m", "o", "u2", None)).await;
    s.ask_confirmation(&b, "{}", 1, None).await.unwrap();
    let done = Outcome::Completed {
        result_json: "1".into(),
    };
    s.finish(&a.task_id, Some(&a), done).await.unwrap();
    s.recover_expired(Some(&HostId::local())).await.unwrap();
    // a finished and b was interrupted: both are pruned, which must not
    // touch the counters.
    assert_eq!(s.prune(i64::MAX, 100).await.unwrap(), 2);
    let _ = (c, d);
    let conn = raw(&store);
    let mismatched: i64 = conn
        .query_row(
            "SELECT count(*) FROM (
                SELECT module, organization_id, user_id, count(*) AS n FROM tasks
                WHERE status IN ('pending', 'running', 'waiting-confirmation')
                GROUP BY 1, 2, 3) AS t
             FULL JOIN task_active_per_user AS c USING (module, organization_id, user_id)
             WHERE coalesce(t.n, 0) <> coalesce(c.active, 0)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(mismatched, 0);
    let (module_active, org_active): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT active FROM task_active_per_module_org \
                     WHERE module = 'm' AND organization_id = 'o'), \
                    (SELECT active FROM task_active_per_org WHERE organization_id = 'o')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    // c stays pending, d was resumed, e was released.
    assert_eq!((module_active, org_active), (3, 3));
}

#[tokio::test]
async fn the_per_organization_counters_start_from_the_active_rows_of_an_older_database() {
    let conn = Connection::open_in_memory().unwrap();
    let before = crate::db::migrate::Migrations::new(OWNER, &MIGRATIONS[..2]);
    crate::db::migrate::apply(&conn, &before).unwrap();
    for (id, org, finished) in [("a", "o1", None), ("b", "o1", None), ("c", "o2", None)]
        .into_iter()
        .chain([("d", "o1", Some(5_i64))])
    {
        let status = if finished.is_some() {
            "completed"
        } else {
            "pending"
        };
        conn.execute(
            "INSERT INTO tasks (id, module, task_name, status, args_json, resumable, user_id, \
             organization_id, role, request_id, created_at, updated_at, finished_at) \
             VALUES (?1, 'm', 't', ?2, '{}', 0, 'u', ?3, 'member', 'r', 1, 1, ?4)",
            rusqlite::params![id, status, org, finished],
        )
        .unwrap();
    }
    apply_schema(&conn).unwrap();
    let counts: Vec<(String, i64, i64)> = conn
        .prepare(
            "SELECT m.organization_id, m.active, o.active FROM task_active_per_module_org AS m \
             JOIN task_active_per_org AS o USING (organization_id) ORDER BY 1",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap();
    assert_eq!(counts, [("o1".to_owned(), 2, 2), ("o2".to_owned(), 1, 1)]);
}

// ---- migrations and files ------------------------------------------------------

#[tokio::test]
async fn tasks_left_running_by_an_older_host_are_recovered_by_its_first_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.db");
    let [run, res, wait, new] = std::array::from_fn(|_| uuid::Uuid::now_v7().to_string());
    {
        let conn = Connection::open(&path).unwrap();
        let before = crate::db::migrate::Migrations::new(OWNER, &MIGRATIONS[..4]);
        crate::db::migrate::apply(&conn, &before).unwrap();
        for (id, status, resumable) in [
            (&run, "running", 0),
            (&res, "running", 1),
            (&wait, "waiting-confirmation", 0),
            (&new, "pending", 0),
        ] {
            conn.execute(
                "INSERT INTO tasks (id, module, task_name, status, args_json, resumable, \
                 user_id, organization_id, role, request_id, created_at, updated_at, attempts) \
                 VALUES (?1, 'm', 't', ?2, '{}', ?3, 'u', 'o', 'member', 'r', 1, 1, 1)",
                rusqlite::params![id, status, resumable],
            )
            .unwrap();
        }
        apply_schema(&conn).unwrap();
    }
    let store = SqliteTaskStore::open(&path, SqliteOptions::default()).unwrap();
    let rec = store.recover_expired(Some(&HostId::local())).await.unwrap();
    assert_eq!(
        rec,
        Recovery {
            resumed: vec![res.clone()],
            interrupted: {
                let mut both = vec![run.clone(), wait.clone()];
                both.sort();
                both
            },
            timed_out: vec![],
        }
    );
    for id in [&run, &wait] {
        let row = store.get_unscoped(id).await.unwrap().unwrap();
        assert_eq!(row.status, Status::Interrupted);
        assert_eq!(row.failure_message.as_deref(), Some(HOST_RESTARTED));
    }
    let claimed = claim_all(&store, &HostId::local(), "m", LEASE).await;
    assert_eq!(claimed.len(), 2);
    assert_eq!(
        claimed
            .iter()
            .find(|c| c.row.id == res)
            .unwrap()
            .row
            .attempts,
        2
    );
    lease_of(&claimed, &new);
}

#[tokio::test]
async fn a_new_process_on_the_same_file_recovers_the_runs_of_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.db");
    apply_schema(&Connection::open(&path).unwrap()).unwrap();
    let id = {
        let store = SqliteTaskStore::open(&path, SqliteOptions::default()).unwrap();
        let lease = running(&store, resumable("u1")).await;
        store.ask_confirmation(&lease, "{}", 1, None).await.unwrap();
        store
            .answer_confirmation(&lease.task_id, answer(5), None)
            .await
            .unwrap();
        lease.task_id
    };
    let store = SqliteTaskStore::open(&path, SqliteOptions::default()).unwrap();
    let rec = store.recover_expired(Some(&HostId::local())).await.unwrap();
    assert_eq!(rec.resumed, std::slice::from_ref(&id));
    let rerun = lease_of(&claim_all(&store, &HostId::local(), "m", LEASE).await, &id);
    let asked = store
        .ask_confirmation(&rerun, "{}", 9_001, None)
        .await
        .unwrap();
    assert_eq!(asked, Asked::AlreadyAnswered(answer(5)));
}

#[tokio::test]
async fn opening_a_missing_file_or_a_database_without_the_schema_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.db");
    assert!(matches!(
        SqliteTaskStore::open(&path, SqliteOptions::default()),
        Err(TaskStoreError::Open { .. })
    ));
    assert!(!path.exists(), "opening never creates the file");
    drop(Connection::open(&path).unwrap());
    assert!(matches!(
        SqliteTaskStore::open(&path, SqliteOptions::default()),
        Err(TaskStoreError::SchemaMissing)
    ));
}

// ---- the writer -----------------------------------------------------------------

/// Stores a task that finished at `finished_at` with `status`, as an older
/// run of the host left it.
fn insert_finished(conn: &Connection, status: &str, finished_at: i64) -> String {
    let id = uuid::Uuid::now_v7().to_string();
    conn.execute(
        "INSERT INTO tasks (id, module, task_name, status, args_json, resumable, user_id, \
         organization_id, role, request_id, created_at, updated_at, finished_at) \
         VALUES (?1, 'm', 'work', ?2, '{}', 0, 'u1', 'o', 'member', 'r', 1, ?3, ?3)",
        rusqlite::params![id, status, finished_at],
    )
    .unwrap();
    id
}

#[tokio::test]
async fn each_pruning_write_commits_one_transaction() {
    let store = store();
    let conn = raw(&store);
    for at in 0..26 {
        insert_finished(&conn, "completed", 100 + at);
    }
    let before = store.commits();
    assert_eq!(store.prune(1_000, 10).await.unwrap(), 10);
    assert_eq!(store.prune(1_000, 10).await.unwrap(), 10);
    assert_eq!(store.prune(1_000, 10).await.unwrap(), 6);
    assert_eq!(store.prune(1_000, 10).await.unwrap(), 0);
    assert_eq!(store.commits() - before, 4, "one transaction per write");
}

/// Holds the writer busy until `release` is called, so that what is queued
/// meanwhile forms one batch.
struct Held {
    done: tokio::task::JoinHandle<()>,
    go: std::sync::mpsc::Sender<()>,
}

async fn hold_writer(store: &Arc<SqliteTaskStore>) -> Held {
    let (go, wait) = std::sync::mpsc::channel::<()>();
    let (started, is_started) = tokio::sync::oneshot::channel::<()>();
    let s = Arc::clone(store);
    let done = tokio::spawn(async move {
        s.file
            .writer
            .run(move |_| {
                let _ = started.send(());
                let _ = wait.recv();
                Ok::<(), TaskStoreError>(())
            })
            .await
            .unwrap();
    });
    is_started.await.unwrap();
    Held { done, go }
}

impl Held {
    /// Waits until `n` writes are queued behind the held one, then lets the
    /// writer go on.
    async fn release_after(self, store: &SqliteTaskStore, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while store.file.writer.queued() < n {
            assert!(tokio::time::Instant::now() < deadline, "writes not queued");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.go.send(()).unwrap();
        self.done.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_together_commit_in_one_transaction() {
    let store = store();
    let held = hold_writer(&store).await;
    let before = store.commits();
    let mut set = JoinSet::new();
    for _ in 0..100 {
        let store = Arc::clone(&store);
        set.spawn(async move { store.submit(task("m", "o", "u1", None)).await.unwrap() });
    }
    held.release_after(&store, 100).await;
    let results = set.join_all().await;
    assert!(results.iter().all(|r| matches!(r, Submitted::Created(_))));
    assert_eq!(
        store.commits() - before,
        2,
        "the held write, then all 100 submits together"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_write_does_not_fail_the_others_in_its_batch() {
    let store = store();
    let existing = task("m", "o", "u1", None);
    created(&*store, existing.clone()).await;
    let held = hold_writer(&store).await;
    let before = store.commits();

    let s = Arc::clone(&store);
    let good_a = tokio::spawn(async move { s.submit(task("m", "o", "u1", None)).await });
    let s = Arc::clone(&store);
    let duplicate = tokio::spawn(async move { s.submit(existing).await });
    // Writes a row, then fails: its row must be rolled back alone.
    let s = Arc::clone(&store);
    let partial = tokio::spawn(async move {
        s.file
            .writer
            .run(|w| -> Result<(), TaskStoreError> {
                w.conn().execute(
                    "UPDATE tasks SET label = 'half-done' WHERE module = 'm'",
                    [],
                )?;
                Err(TaskStoreError::InvalidInput("refused".into()))
            })
            .await
    });
    let s = Arc::clone(&store);
    let good_b = tokio::spawn(async move { s.submit(task("m", "o", "u1", None)).await });

    held.release_after(&store, 4).await;
    let a = good_a.await.unwrap().unwrap();
    assert!(duplicate.await.unwrap().is_err());
    assert!(partial.await.unwrap().is_err());
    let b = good_b.await.unwrap().unwrap();
    assert_eq!(store.commits() - before, 2, "held op, then one batch");
    for id in [a, b] {
        let Submitted::Created(id) = id else {
            panic!("{id:?}")
        };
        assert!(store.get_unscoped(&id).await.unwrap().is_some());
    }
    let half_done: i64 = raw(&store)
        .query_row(
            "SELECT count(*) FROM tasks WHERE label = 'half-done'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(half_done, 0);
}

#[tokio::test]
async fn a_panicking_write_is_contained_and_the_writer_keeps_going() {
    let store = store();
    let result = store
        .file
        .writer
        .run(|_| -> Result<(), TaskStoreError> { panic!("bug in an operation") })
        .await;
    assert!(matches!(result, Err(TaskStoreError::Internal(_))));
    created(&*store, task("m", "o", "u1", None)).await;
}

#[tokio::test]
async fn a_submitted_task_is_committed_when_submit_returns() {
    let store = store();
    let id = created(&*store, task("m", "o", "u1", None)).await;
    // A connection that did not exist before the submit returned sees it.
    let found: i64 = raw(&store)
        .query_row("SELECT count(*) FROM tasks WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(found, 1);
}

// ---- query plans ----------------------------------------------------------------

/// The plan of `sql`, one step a line, indented by depth as the sqlite3 shell
/// shows it.
fn plan(conn: &Connection, sql: &str, n_params: usize) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let params: Vec<&dyn rusqlite::ToSql> = (0..n_params).map(|_| &"x" as _).collect();
    let steps = stmt
        .query_map(params.as_slice(), |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(3)?,
            ))
        })
        .unwrap()
        .collect::<rusqlite::Result<Vec<_>>>()
        .unwrap();
    let mut depth = std::collections::HashMap::from([(0_i64, 0_usize)]);
    let mut lines = Vec::new();
    for (id, parent, detail) in steps {
        let d = depth.get(&parent).copied().unwrap_or(0) + 1;
        depth.insert(id, d);
        lines.push(format!("{}{detail}", "  ".repeat(d - 1)));
    }
    lines.join("\n")
}

#[tokio::test]
async fn statements_read_their_indexes_and_never_scan_the_table() {
    let store = store();
    let conn = raw(&store);
    let lease_indexes = &["INDEX tasks_lease_expiry", "INDEX tasks_lease_owner"][..];
    let cases = [
        (sql::GET, 4, &["USING INDEX sqlite_autoindex_tasks_1"][..]),
        (sql::BY_KEY, 5, &["USING INDEX tasks_by_key"]),
        (sql::BY_KEY_RANGE, 6, &["COVERING INDEX tasks_by_key"]),
        (sql::BY_KEY_FROM, 6, &["COVERING INDEX tasks_by_key"]),
        (sql::BY_USER, 4, &["USING INDEX tasks_by_user"]),
        (sql::BY_ORG, 4, &["USING INDEX tasks_by_org"]),
        (sql::ACTIVE_WITH_KEY, 3, &["INDEX tasks_active_key"]),
        (sql::PRUNE, 2, &["INDEX tasks_finished"]),
        (sql::CLAIM, 5, &["INDEX tasks_pending"]),
        (sql::RENEW, 4, &["INDEX sqlite_autoindex_tasks_1"]),
        (sql::RECOVER_INTERRUPT, 5, lease_indexes),
        (sql::RECOVER_RESUME, 5, lease_indexes),
    ];
    for (sql, n, expected) in cases {
        let plan = plan(&conn, sql, n);
        for index in expected {
            assert!(plan.contains(index), "{sql}\n{plan}");
        }
        for line in plan.lines() {
            assert!(
                !line.trim_start().starts_with("SCAN tasks") || line.contains("INDEX"),
                "{sql}\n{plan}"
            );
        }
    }
    // Exact key, user, organization and pending lookups walk their index in
    // id order and stop at the limit: no sort, no temporary table.
    for (sql, n) in [
        (sql::BY_KEY, 5),
        (sql::BY_USER, 4),
        (sql::BY_ORG, 4),
        (sql::CLAIM, 5),
        (sql::PRUNE, 2),
        (sql::RECOVER_INTERRUPT, 5),
        (sql::RECOVER_RESUME, 5),
    ] {
        let plan = plan(&conn, sql, n);
        assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
    }
    // A key range sorts only inside the covering-index subquery.
    let plan = plan(&conn, sql::BY_KEY_RANGE, 6);
    assert!(
        plan.lines()
            .any(|l| l.starts_with("  ") && l.contains("COVERING INDEX tasks_by_key")),
        "{plan}"
    );
}

#[test]
fn a_full_page_reads_one_row_more_than_it_returns() {
    let me = OrgScope {
        organization_id: "o".into(),
        user_id: None,
        module: Some("m".into()),
    };
    let q = ListQuery::new(&me, &TaskFilter::default(), None, MAX_PAGE_LIMIT);
    assert_eq!(q.params.last(), Some(&rusqlite::types::Value::Integer(201)));
}

// ---- pure helpers -----------------------------------------------------------------

#[test]
fn prefix_successor_bounds_exactly_the_strings_with_the_prefix() {
    assert_eq!(prefix_successor("ab").as_deref(), Some("ac"));
    assert_eq!(prefix_successor("a%").as_deref(), Some("a&"));
    assert_eq!(prefix_successor("\u{D7FF}").as_deref(), Some("\u{E000}"));
    assert_eq!(
        prefix_successor(&format!("a{}", char::MAX)).as_deref(),
        Some("b")
    );
    assert_eq!(prefix_successor(&char::MAX.to_string()), None);
    assert_eq!(prefix_successor(""), None);
    let prefix = "ab\u{7F}";
    let upper = prefix_successor(prefix).unwrap();
    for s in ["ab\u{7F}", "ab\u{7F}\u{10FFFF}", "ab\u{7F}zz"] {
        assert!(s >= prefix && s < upper.as_str(), "{s:?}");
    }
    for s in ["ab\u{80}", "ab\u{7E}\u{10FFFF}", "ac"] {
        assert!(!(s >= prefix && s < upper.as_str()), "{s:?}");
    }
}

#[test]
fn a_cursor_round_trips_and_a_malformed_one_is_refused() {
    let id = uuid::Uuid::now_v7().to_string();
    let cursor = Cursor::after_task(&id).unwrap();
    let text = cursor.to_string();
    assert!(!text.contains(&id), "opaque: {text}");
    let back: Cursor = text.parse().unwrap();
    assert_eq!(back.after_id(), id);
    for bad in [
        "",
        "c1",
        "zz",
        &id,
        "c1' OR 1=1 --",
        "c1ABCDEF0123456789abcdef0123456789",
        &format!("c2{}", &text[2..]),
    ] {
        assert_eq!(bad.parse::<Cursor>(), Err(CursorError), "{bad:?}");
    }
}

#[test]
fn status_spellings_round_trip() {
    for s in Status::ALL {
        assert_eq!(s.as_str().parse::<Status>(), Ok(s));
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
    assert!("paused".parse::<Status>().is_err());
    let active: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_active()).collect();
    assert_eq!(
        active,
        [
            Status::Pending,
            Status::Running,
            Status::WaitingConfirmation
        ]
    );
}
