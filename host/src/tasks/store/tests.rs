//! Behaviour of the task store that the runtime and the guests rely on:
//! dedup, quotas, group commit, compare-and-set transitions, progress,
//! confirmation, recovery, lookups, listing and scoping.

use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use tokio::task::JoinSet;

use super::sqlite::{ListQuery, SqliteTaskStore, sql};
use super::*;

fn store() -> Arc<SqliteTaskStore> {
    Arc::new(SqliteTaskStore::open_fresh_for_tests(SqliteOptions::default()).unwrap())
}

const ROOMY: Quota = Quota {
    max_active_per_user: 10_000,
    max_active_per_module: 10_000,
    max_active_per_org: 10_000,
};

fn task(module: &str, org: &str, user: &str, key: Option<&str>) -> NewTask {
    NewTask {
        id: uuid::Uuid::now_v7().to_string(),
        module: module.into(),
        task_name: "work".into(),
        task_key: key.map(Into::into),
        title: Some("Work".into()),
        args_json: "{}".into(),
        resumable: false,
        user_id: user.into(),
        organization_id: org.into(),
        role: "member".into(),
        request_id: "req-1".into(),
        session_id: None,
        created_at: 1_000,
        limits: ROOMY,
    }
}

fn scope(module: &str, org: &str, user: Option<&str>) -> Scope {
    Scope {
        module: module.into(),
        organization_id: org.into(),
        user_id: user.map(Into::into),
    }
}

fn owner(module: &str, org: &str) -> Owner {
    Owner {
        module: module.into(),
        organization_id: org.into(),
    }
}

async fn created(store: &SqliteTaskStore, t: NewTask) -> String {
    match store.submit(t).await.unwrap() {
        Submitted::Created(id) => id,
        other => panic!("expected Created, got {other:?}"),
    }
}

/// Submits a task and starts it.
async fn running(store: &SqliteTaskStore, t: NewTask) -> String {
    let id = created(store, t).await;
    store
        .start(&id)
        .await
        .unwrap()
        .expect("pending task starts");
    id
}

fn status(store: &SqliteTaskStore, id: &str) -> Status {
    store.get_unscoped(id).unwrap().unwrap().status
}

fn ids(rows: &[TaskRow]) -> Vec<String> {
    rows.iter().map(|r| r.id.clone()).collect()
}

fn answer(at: i64) -> StoredAnswer {
    StoredAnswer {
        answer_json: r#"{"ok":true}"#.into(),
        answered_by: "u1".into(),
        answered_at: at,
    }
}

/// A connection of its own on the store's file, for checks behind the
/// store's back.
fn raw(store: &SqliteTaskStore) -> Connection {
    let conn = Connection::open(store.path()).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

// ---- dedup ----------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_of_one_key_store_one_task_and_share_its_id() {
    let store = store();
    let mut set = JoinSet::new();
    for _ in 0..64 {
        let store = Arc::clone(&store);
        set.spawn(async move {
            store
                .submit(task("m", "o", "u1", Some("report.42")))
                .await
                .unwrap()
        });
    }
    let results = set.join_all().await;
    let created: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            Submitted::Created(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{results:?}");
    for r in &results {
        match r {
            Submitted::Created(id) | Submitted::Existing(id) => assert_eq!(id, &created[0]),
            other => panic!("unexpected {other:?}"),
        }
    }
    let rows: i64 = raw(&store)
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 1);
}

#[tokio::test]
async fn finished_task_with_key_does_not_block_a_new_one() {
    let store = store();
    let first = created(&store, task("m", "o", "u1", Some("k"))).await;
    assert!(
        store
            .finish(
                &first,
                Outcome::Completed {
                    result_json: "1".into()
                }
            )
            .await
            .unwrap()
    );
    let second = created(&store, task("m", "o", "u1", Some("k"))).await;
    assert_ne!(first, second);
    let again = store.submit(task("m", "o", "u2", Some("k"))).await.unwrap();
    assert_eq!(again, Submitted::Existing(second));
}

#[tokio::test]
async fn same_key_in_another_module_or_organization_is_independent() {
    let store = store();
    let a = created(&store, task("m", "o", "u1", Some("k"))).await;
    let b = created(&store, task("other", "o", "u1", Some("k"))).await;
    let c = created(&store, task("m", "o2", "u1", Some("k"))).await;
    assert!(a != b && b != c && a != c);
}

#[tokio::test]
async fn submit_without_key_never_deduplicates() {
    let store = store();
    let a = created(&store, task("m", "o", "u1", None)).await;
    let b = created(&store, task("m", "o", "u1", None)).await;
    assert_ne!(a, b);
}

#[tokio::test]
async fn database_rejects_a_second_active_task_with_the_same_key() {
    let store = store();
    let id = created(&store, task("m", "o", "u1", Some("k"))).await;
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
async fn duplicate_task_id_is_an_error_not_a_dedup() {
    let store = store();
    let t = task("m", "o", "u1", Some("k"));
    created(&store, t.clone()).await;
    let mut dup = t;
    dup.task_key = Some("other".into());
    assert!(matches!(
        store.submit(dup).await,
        Err(TaskStoreError::Backend(_))
    ));
}

#[tokio::test]
async fn submit_rejects_ids_that_are_not_canonical_uuidv7() {
    let store = store();
    for bad in [
        "not-a-uuid".to_owned(),
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::now_v7().to_string().to_uppercase(),
    ] {
        let mut t = task("m", "o", "u1", None);
        t.id = bad;
        assert!(matches!(
            store.submit(t).await,
            Err(TaskStoreError::InvalidInput(_))
        ));
    }
}

// ---- quotas ---------------------------------------------------------------

fn limited(user: &str, per_user: u32, per_module: u32) -> NewTask {
    let mut t = task("m", "o", user, None);
    t.limits = Quota {
        max_active_per_user: per_user,
        max_active_per_module: per_module,
        max_active_per_org: 10_000,
    };
    t
}

/// A task of `module` in `org` under an organization-wide cap of `per_org`.
fn in_org(module: &str, org: &str, user: &str, per_org: u32) -> NewTask {
    let mut t = task(module, org, user, None);
    t.limits.max_active_per_org = per_org;
    t
}

fn refusal(s: Submitted) -> String {
    match s {
        Submitted::LimitExceeded(reason) => reason,
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

#[tokio::test]
async fn submit_refuses_when_user_has_max_active_tasks() {
    let store = store();
    for _ in 0..2 {
        created(&store, limited("u1", 2, 100)).await;
    }
    let reason = refusal(store.submit(limited("u1", 2, 100)).await.unwrap());
    assert!(reason.contains("[tasks] max-active-per-user"), "{reason}");
    created(&store, limited("u2", 2, 100)).await;
}

#[tokio::test]
async fn submit_refuses_when_the_module_has_max_active_tasks_in_the_organization() {
    let store = store();
    created(&store, limited("u1", 10, 2)).await;
    created(&store, limited("u2", 10, 2)).await;
    let reason = refusal(store.submit(limited("u3", 10, 2)).await.unwrap());
    assert!(reason.contains("[tasks] max-active-per-module"), "{reason}");
}

#[tokio::test]
async fn an_organization_at_a_modules_quota_does_not_stop_another_organization() {
    let store = store();
    for user in ["u1", "u2"] {
        created(&store, limited(user, 10, 2)).await;
    }
    assert!(matches!(
        store.submit(limited("u3", 10, 2)).await.unwrap(),
        Submitted::LimitExceeded(_)
    ));
    for user in ["u1", "u2"] {
        let mut other_org = limited(user, 10, 2);
        other_org.organization_id = "o2".into();
        created(&store, other_org).await;
    }
}

#[tokio::test]
async fn the_organizations_cap_holds_across_modules_and_spares_other_organizations() {
    let store = store();
    created(&store, in_org("m1", "o", "u1", 3)).await;
    created(&store, in_org("m2", "o", "u2", 3)).await;
    created(&store, in_org("m3", "o", "u3", 3)).await;
    let reason = refusal(store.submit(in_org("m4", "o", "u4", 3)).await.unwrap());
    assert!(reason.contains("max-active-tasks-per-org"), "{reason}");
    created(&store, in_org("m4", "o2", "u4", 3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_of_many_modules_never_exceed_the_organizations_cap() {
    let store = store();
    let mut set = JoinSet::new();
    for i in 0..48 {
        let store = Arc::clone(&store);
        set.spawn(async move {
            let module = format!("m{}", i % 6);
            store
                .submit(in_org(&module, "o", &format!("u{i}"), 7))
                .await
                .unwrap()
        });
    }
    let results = set.join_all().await;
    let created = results
        .iter()
        .filter(|r| matches!(r, Submitted::Created(_)))
        .count();
    assert_eq!(created, 7, "{results:?}");
    let active: i64 = raw(&store)
        .query_row(
            "SELECT active FROM task_active_per_org WHERE organization_id = 'o'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(active, 7);
}

#[tokio::test]
async fn finished_tasks_free_their_quota() {
    let store = store();
    let id = created(&store, limited("u1", 1, 1)).await;
    assert!(matches!(
        store.submit(limited("u1", 1, 1)).await.unwrap(),
        Submitted::LimitExceeded(_)
    ));
    store
        .finish(&id, Outcome::Cancelled { by: None })
        .await
        .unwrap();
    created(&store, limited("u1", 1, 1)).await;
}

#[tokio::test]
async fn active_key_returns_existing_task_even_at_quota() {
    let store = store();
    let mut t = limited("u1", 1, 1);
    t.task_key = Some("k".into());
    let id = created(&store, t.clone()).await;
    t.id = uuid::Uuid::now_v7().to_string();
    assert_eq!(store.submit(t).await.unwrap(), Submitted::Existing(id));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_never_exceed_the_quota() {
    let store = store();
    let mut set = JoinSet::new();
    for _ in 0..40 {
        let store = Arc::clone(&store);
        set.spawn(async move { store.submit(limited("u1", 5, 100)).await.unwrap() });
    }
    let results = set.join_all().await;
    let created = results
        .iter()
        .filter(|r| matches!(r, Submitted::Created(_)))
        .count();
    assert_eq!(created, 5);
}

#[tokio::test]
async fn active_counters_match_active_rows_after_every_transition() {
    let store = store();
    let a = running(&store, task("m", "o", "u1", None)).await;
    let b = running(&store, task("m", "o", "u1", None)).await;
    let c = created(&store, task("m", "o", "u2", None)).await;
    let mut r = task("m", "o", "u2", None);
    r.resumable = true;
    let d = running(&store, r).await;
    store.ask_confirmation(&b, "{}", 1, None).await.unwrap();
    store
        .finish(
            &a,
            Outcome::Completed {
                result_json: "1".into(),
            },
        )
        .await
        .unwrap();
    store.recover(5).await.unwrap();
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
    // c stays pending, d was resumed; a finished, b was interrupted.
    assert_eq!((module_active, org_active), (2, 2));
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

// ---- retention --------------------------------------------------------------

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
async fn pruning_deletes_finished_tasks_before_the_cutoff_and_never_an_active_one() {
    let store = store();
    let conn = raw(&store);
    let old: Vec<String> = ["completed", "failed", "cancelled", "interrupted"]
        .into_iter()
        .map(|status| insert_finished(&conn, status, 1_000))
        .collect();
    let recent = insert_finished(&conn, "completed", 50_000);
    // Active tasks submitted long ago: their age is no reason to delete them.
    let pending = created(&store, task("m", "o", "u1", None)).await;
    let started = running(&store, task("m", "o", "u1", None)).await;
    let waiting = running_task_waiting(&store).await;

    assert_eq!(store.prune(10_000, 100).await.unwrap(), 4);
    for id in &old {
        assert!(store.get_unscoped(id).unwrap().is_none(), "{id} was kept");
    }
    for id in [&recent, &pending, &started, &waiting] {
        assert!(store.get_unscoped(id).unwrap().is_some(), "{id} was pruned");
    }
    // Even a cutoff in the future spares active tasks, and their counters.
    assert_eq!(store.prune(i64::MAX, 100).await.unwrap(), 1);
    let active: i64 = conn
        .query_row(
            "SELECT active FROM task_active_per_org WHERE organization_id = 'o'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(active, 3);
}

async fn running_task_waiting(store: &SqliteTaskStore) -> String {
    let id = running(store, task("m", "o", "u2", None)).await;
    store.ask_confirmation(&id, "{}", 1, None).await.unwrap();
    id
}

#[tokio::test]
async fn one_pruning_write_deletes_at_most_its_limit_oldest_first() {
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

#[tokio::test]
async fn pruning_in_batches_leaves_the_newest_until_the_last_batch() {
    let store = store();
    let conn = raw(&store);
    let newest = insert_finished(&conn, "completed", 900);
    for at in 0..9 {
        insert_finished(&conn, "failed", 100 + at);
    }
    assert_eq!(store.prune(1_000, 9).await.unwrap(), 9);
    assert!(store.get_unscoped(&newest).unwrap().is_some());
}

// ---- group commit -----------------------------------------------------------

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
    created(&store, existing.clone()).await;
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
        assert!(store.get_unscoped(&id).unwrap().is_some());
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
    created(&store, task("m", "o", "u1", None)).await;
}

#[tokio::test]
async fn a_submitted_task_is_committed_when_submit_returns() {
    let store = store();
    let id = created(&store, task("m", "o", "u1", None)).await;
    // A connection that did not exist before the submit returned sees it.
    let found: i64 = raw(&store)
        .query_row("SELECT count(*) FROM tasks WHERE id = ?1", [&id], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(found, 1);
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

// ---- compare-and-set transitions ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_finish_and_cancel_have_exactly_one_winner() {
    let store = store();
    for _ in 0..50 {
        let id = running(&store, task("m", "o", "u1", None)).await;
        let (s1, s2) = (Arc::clone(&store), Arc::clone(&store));
        let (i1, i2) = (id.clone(), id.clone());
        let done = tokio::spawn(async move {
            s1.finish(
                &i1,
                Outcome::Completed {
                    result_json: "1".into(),
                },
            )
            .await
            .unwrap()
        });
        let cancel = tokio::spawn(async move {
            s2.finish(
                &i2,
                Outcome::Cancelled {
                    by: Some("u2".into()),
                },
            )
            .await
            .unwrap()
        });
        let (done, cancel) = (done.await.unwrap(), cancel.await.unwrap());
        assert!(done ^ cancel, "exactly one wins");
        let row = store.get_unscoped(&id).unwrap().unwrap();
        if done {
            assert_eq!(row.status, Status::Completed);
            assert_eq!(row.result_json.as_deref(), Some("1"));
        } else {
            assert_eq!(row.status, Status::Cancelled);
            assert_eq!(row.failure_message.as_deref(), Some("cancelled by u2"));
        }
    }
}

#[tokio::test]
async fn start_of_a_cancelled_task_returns_none() {
    let store = store();
    let id = created(&store, task("m", "o", "u1", None)).await;
    assert!(
        store
            .finish(&id, Outcome::Cancelled { by: None })
            .await
            .unwrap()
    );
    assert!(store.start(&id).await.unwrap().is_none());
    assert_eq!(status(&store, &id), Status::Cancelled);
}

#[tokio::test]
async fn start_counts_attempts_and_stamps_started_at() {
    let store = store();
    let mut t = task("m", "o", "u1", None);
    t.resumable = true;
    let id = created(&store, t).await;
    let row = store.start(&id).await.unwrap().unwrap();
    assert_eq!((row.status, row.attempts), (Status::Running, 1));
    assert!(row.started_at.is_some());
    assert!(store.start(&id).await.unwrap().is_none(), "already running");
    store.recover(2_000).await.unwrap();
    assert_eq!(store.start(&id).await.unwrap().unwrap().attempts, 2);
}

#[tokio::test]
async fn finishing_a_final_task_returns_false_and_keeps_its_outcome() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    let failed = Outcome::Failed {
        kind: "trap".into(),
        message: "unreachable".into(),
    };
    assert!(store.finish(&id, failed).await.unwrap());
    assert!(
        !store
            .finish(
                &id,
                Outcome::Completed {
                    result_json: "1".into()
                }
            )
            .await
            .unwrap()
    );
    let row = store.get_unscoped(&id).unwrap().unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.failure_kind.as_deref(), Some("trap"));
    assert!(row.finished_at.is_some() && row.result_json.is_none());
    assert!(
        !store
            .finish(
                &uuid::Uuid::now_v7().to_string(),
                Outcome::Cancelled { by: None }
            )
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn completing_a_task_stores_its_result_and_full_progress() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    store
        .finish(
            &id,
            Outcome::Completed {
                result_json: r#"{"n":3}"#.into(),
            },
        )
        .await
        .unwrap();
    let row = store.get_unscoped(&id).unwrap().unwrap();
    assert_eq!(row.result_json.as_deref(), Some(r#"{"n":3}"#));
    assert_eq!(row.progress, 1.0);
}

#[tokio::test]
async fn the_database_refuses_to_change_a_final_status_or_an_owner() {
    let store = store();
    let id = created(&store, task("m", "o", "u1", None)).await;
    let conn = raw(&store);
    let err = conn
        .execute(
            "UPDATE tasks SET organization_id = 'o2' WHERE id = ?1",
            [&id],
        )
        .unwrap_err();
    assert!(err.to_string().contains("owner"), "{err}");
    store
        .finish(&id, Outcome::Cancelled { by: None })
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

// ---- progress -----------------------------------------------------------------

fn progress(p: f64, label: Option<&str>, checkpoint: Option<&str>) -> ProgressUpdate {
    ProgressUpdate {
        progress: p,
        label: label.map(Into::into),
        checkpoint_json: checkpoint.map(Into::into),
    }
}

#[tokio::test]
async fn progress_updates_the_owners_task_with_label_and_checkpoint() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    let me = owner("m", "o");
    let r = store
        .update_progress(&id, &me, progress(0.25, Some("a"), Some(r#"{"step":1}"#)))
        .await
        .unwrap();
    let ProgressResult::Updated(row) = r else {
        panic!("{r:?}")
    };
    assert_eq!(row.progress, 0.25);
    // Absent label and checkpoint keep the stored ones.
    store
        .update_progress(&id, &me, progress(0.5, None, None))
        .await
        .unwrap();
    let row = store.get_unscoped(&id).unwrap().unwrap();
    assert_eq!(row.progress, 0.5);
    assert_eq!(row.label.as_deref(), Some("a"));
    assert_eq!(row.checkpoint_json.as_deref(), Some(r#"{"step":1}"#));
}

#[tokio::test]
async fn progress_of_another_modules_or_organizations_task_is_not_found() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    for them in [owner("other", "o"), owner("m", "o2")] {
        let r = store
            .update_progress(&id, &them, progress(0.9, Some("x"), None))
            .await
            .unwrap();
        assert_eq!(r, ProgressResult::NotFound);
    }
    let missing = uuid::Uuid::now_v7().to_string();
    let r = store
        .update_progress(&missing, &owner("m", "o"), progress(0.9, None, None))
        .await
        .unwrap();
    assert_eq!(r, ProgressResult::NotFound);
    assert_eq!(store.get_unscoped(&id).unwrap().unwrap().progress, 0.0);
}

#[tokio::test]
async fn progress_of_a_final_task_is_not_active() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    store
        .finish(&id, Outcome::Cancelled { by: None })
        .await
        .unwrap();
    let r = store
        .update_progress(&id, &owner("m", "o"), progress(0.5, None, None))
        .await
        .unwrap();
    assert_eq!(r, ProgressResult::NotActive);
}

#[tokio::test]
async fn progress_outside_zero_to_one_is_invalid_input() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    for p in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        let r = store
            .update_progress(&id, &owner("m", "o"), progress(p, None, None))
            .await;
        assert!(matches!(r, Err(TaskStoreError::InvalidInput(_))), "{p}");
    }
}

// ---- confirmation ---------------------------------------------------------------

#[tokio::test]
async fn asking_moves_a_running_task_to_waiting_with_its_surface() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    let asked = store
        .ask_confirmation(&id, r#"{"title":"Go?"}"#, 10, Some(100))
        .await
        .unwrap();
    assert_eq!(asked, Asked::Waiting);
    let row = store.get_unscoped(&id).unwrap().unwrap();
    assert_eq!(row.status, Status::WaitingConfirmation);
    let c = row.confirmation.unwrap();
    assert_eq!(
        (c.surface_json.as_str(), c.asked_at, c.expires_at),
        (r#"{"title":"Go?"}"#, 10, Some(100))
    );
    assert!(c.answer.is_none() && !c.consumed);
}

#[tokio::test]
async fn asking_for_a_pending_waiting_final_or_missing_task_is_not_active() {
    let store = store();
    let pending = created(&store, task("m", "o", "u1", None)).await;
    let waiting = running(&store, task("m", "o", "u1", None)).await;
    store
        .ask_confirmation(&waiting, "{}", 1, None)
        .await
        .unwrap();
    let done = running(&store, task("m", "o", "u1", None)).await;
    store
        .finish(&done, Outcome::Cancelled { by: None })
        .await
        .unwrap();
    let missing = uuid::Uuid::now_v7().to_string();
    for id in [pending, waiting, done, missing] {
        let asked = store.ask_confirmation(&id, "{}", 2, None).await.unwrap();
        assert_eq!(asked, Asked::NotActive);
    }
}

#[tokio::test]
async fn an_answer_naming_another_question_than_the_open_one_is_refused_in_the_same_write() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    store.ask_confirmation(&id, "{}", 7, None).await.unwrap();
    assert_eq!(
        store
            .answer_confirmation(&id, answer(8), Some(3))
            .await
            .unwrap(),
        Answered::OtherQuestion
    );
    assert_eq!(
        store
            .answer_confirmation(&id, answer(8), Some(7))
            .await
            .unwrap(),
        Answered::Recorded
    );
}

#[tokio::test]
async fn an_answer_is_recorded_once_with_who_and_when() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    assert_eq!(
        store
            .answer_confirmation(&id, answer(5), None)
            .await
            .unwrap(),
        Answered::NotWaiting,
        "nothing asked yet"
    );
    store.ask_confirmation(&id, "{}", 1, None).await.unwrap();
    assert_eq!(
        store
            .answer_confirmation(&id, answer(5), None)
            .await
            .unwrap(),
        Answered::Recorded
    );
    let mut late = answer(6);
    late.answered_by = "u9".into();
    assert_eq!(
        store.answer_confirmation(&id, late, None).await.unwrap(),
        Answered::NotWaiting
    );
    let c = store
        .get_unscoped(&id)
        .unwrap()
        .unwrap()
        .confirmation
        .unwrap();
    assert_eq!(c.answer, Some(answer(5)));
    let missing = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        store
            .answer_confirmation(&missing, answer(5), None)
            .await
            .unwrap(),
        Answered::NotFound
    );
}

#[tokio::test]
async fn an_answer_after_the_expiry_is_refused() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    // Answers are judged by when they were given and when they are written.
    let expires = crate::db::now_ms() + 60_000;
    store
        .ask_confirmation(&id, "{}", 1, Some(expires))
        .await
        .unwrap();
    assert_eq!(
        store
            .answer_confirmation(&id, answer(expires), None)
            .await
            .unwrap(),
        Answered::NotWaiting
    );
    assert_eq!(
        store
            .answer_confirmation(&id, answer(expires - 1), None)
            .await
            .unwrap(),
        Answered::Recorded
    );
}

#[tokio::test]
async fn an_unconsumed_answer_is_returned_by_the_repeated_ask_without_a_status_change() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    store.ask_confirmation(&id, "{}", 1, None).await.unwrap();
    store
        .answer_confirmation(&id, answer(5), None)
        .await
        .unwrap();
    assert!(store.resume_after_confirmation(&id).await.unwrap());
    let asked = store.ask_confirmation(&id, "{}", 9, None).await.unwrap();
    assert_eq!(asked, Asked::AlreadyAnswered(answer(5)));
    assert_eq!(status(&store, &id), Status::Running);
}

#[tokio::test]
async fn a_consumed_answer_lets_the_next_ask_open_a_new_confirmation() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    store.ask_confirmation(&id, "{}", 1, None).await.unwrap();
    store
        .answer_confirmation(&id, answer(5), None)
        .await
        .unwrap();
    store.resume_after_confirmation(&id).await.unwrap();
    assert!(store.consume_answer(&id).await.unwrap());
    assert!(!store.consume_answer(&id).await.unwrap(), "only once");
    let asked = store
        .ask_confirmation(&id, r#"{"second":true}"#, 7, None)
        .await
        .unwrap();
    assert_eq!(asked, Asked::Waiting);
    let c = store
        .get_unscoped(&id)
        .unwrap()
        .unwrap()
        .confirmation
        .unwrap();
    assert_eq!(c.surface_json, r#"{"second":true}"#);
    assert!(c.answer.is_none() && !c.consumed);
}

#[tokio::test]
async fn resuming_after_confirmation_only_leaves_waiting() {
    let store = store();
    let id = running(&store, task("m", "o", "u1", None)).await;
    assert!(!store.resume_after_confirmation(&id).await.unwrap());
    store.ask_confirmation(&id, "{}", 1, None).await.unwrap();
    assert!(store.resume_after_confirmation(&id).await.unwrap());
    assert_eq!(status(&store, &id), Status::Running);
    assert!(!store.resume_after_confirmation(&id).await.unwrap());
}

// ---- recovery -------------------------------------------------------------------

#[tokio::test]
async fn recovery_interrupts_active_tasks_that_are_not_resumable() {
    let store = store();
    let run = running(&store, task("m", "o", "u1", None)).await;
    let wait = running(&store, task("m", "o", "u1", None)).await;
    store.ask_confirmation(&wait, "{}", 1, None).await.unwrap();
    let done = running(&store, task("m", "o", "u1", None)).await;
    store
        .finish(
            &done,
            Outcome::Completed {
                result_json: "1".into(),
            },
        )
        .await
        .unwrap();
    let rec = store.recover(9_000).await.unwrap();
    assert_eq!(rec.interrupted, 2);
    for id in [run, wait] {
        let row = store.get_unscoped(&id).unwrap().unwrap();
        assert_eq!(row.status, Status::Interrupted);
        assert_eq!(row.failure_kind.as_deref(), Some("interrupted"));
        assert_eq!(row.failure_message.as_deref(), Some(HOST_RESTARTED));
        assert_eq!(row.finished_at, Some(9_000));
    }
    assert_eq!(status(&store, &done), Status::Completed);
}

#[tokio::test]
async fn recovery_leaves_pending_tasks_pending_and_counts_them() {
    let store = store();
    let a = created(&store, task("m", "o", "u1", None)).await;
    let b = created(&store, task("m", "o", "u2", None)).await;
    let rec = store.recover(9_000).await.unwrap();
    assert_eq!((rec.pending, rec.interrupted), (2, 0));
    assert!(rec.resumed.is_empty());
    assert_eq!(ids(&store.pending(10).unwrap()), vec![a, b], "oldest first");
}

fn resumable(user: &str) -> NewTask {
    let mut t = task("m", "o", user, None);
    t.resumable = true;
    t
}

#[tokio::test]
async fn recovery_requeues_resumable_tasks_with_checkpoint_and_open_confirmation() {
    let store = store();
    let run = running(&store, resumable("u1")).await;
    store
        .update_progress(&run, &owner("m", "o"), progress(0.4, None, Some("[4]")))
        .await
        .unwrap();
    let wait = running(&store, resumable("u1")).await;
    store.ask_confirmation(&wait, "{}", 1, None).await.unwrap();

    let rec = store.recover(9_000).await.unwrap();
    assert_eq!(ids(&rec.resumed), vec![run.clone(), wait.clone()]);
    assert_eq!(rec.interrupted, 0);
    let row = store.get_unscoped(&run).unwrap().unwrap();
    assert_eq!(row.status, Status::Pending);
    assert_eq!(row.checkpoint_json.as_deref(), Some("[4]"));

    // The open confirmation survives and may be answered before the re-run.
    let row = store.get_unscoped(&wait).unwrap().unwrap();
    assert_eq!(row.status, Status::Pending);
    assert!(row.confirmation.unwrap().answer.is_none());
    store.start(&wait).await.unwrap().unwrap();
    let asked = store
        .ask_confirmation(&wait, "{}", 9_001, None)
        .await
        .unwrap();
    assert_eq!(asked, Asked::Waiting, "the re-run waits for the answer");
    assert_eq!(
        store
            .answer_confirmation(&wait, answer(9_002), None)
            .await
            .unwrap(),
        Answered::Recorded
    );
}

#[tokio::test]
async fn recovery_keeps_an_answered_confirmation_for_the_repeated_ask() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tasks.db");
    apply_schema(&Connection::open(&path).unwrap()).unwrap();
    let id = {
        let store = SqliteTaskStore::open(&path, SqliteOptions::default()).unwrap();
        let id = running(&store, resumable("u1")).await;
        store.ask_confirmation(&id, "{}", 1, None).await.unwrap();
        store
            .answer_confirmation(&id, answer(5), None)
            .await
            .unwrap();
        id
    };
    // A new host process on the same file.
    let store = SqliteTaskStore::open(&path, SqliteOptions::default()).unwrap();
    let rec = store.recover(9_000).await.unwrap();
    assert_eq!(ids(&rec.resumed), vec![id.clone()]);
    store.start(&id).await.unwrap().unwrap();
    let asked = store
        .ask_confirmation(&id, "{}", 9_001, None)
        .await
        .unwrap();
    assert_eq!(asked, Asked::AlreadyAnswered(answer(5)));
    assert_eq!(status(&store, &id), Status::Running);
}

// ---- lookups --------------------------------------------------------------------

#[tokio::test]
async fn by_key_returns_exact_matches_newest_first() {
    let store = store();
    let mut expected = Vec::new();
    for _ in 0..3 {
        let id = created(&store, task("m", "o", "u1", Some("k"))).await;
        store
            .finish(&id, Outcome::Cancelled { by: None })
            .await
            .unwrap();
        expected.push(id);
    }
    created(&store, task("m", "o", "u1", Some("k2"))).await;
    created(&store, task("m", "o", "u1", Some("kk"))).await;
    expected.reverse();
    let rows = store.by_key(&scope("m", "o", None), "k", 10).unwrap();
    assert_eq!(ids(&rows), expected);
    let rows = store.by_key(&scope("m", "o", None), "k", 2).unwrap();
    assert_eq!(ids(&rows), expected[..2]);
}

#[tokio::test]
async fn key_prefix_treats_percent_underscore_and_backslash_as_ordinary_characters() {
    let store = store();
    let keys = [
        "a%b", "a%", "a_b", "a\\b", "axb", "ab", "a%%", "a_", "a\\", "b%",
    ];
    let mut by_key = std::collections::HashMap::new();
    for key in keys {
        by_key.insert(key, created(&store, task("m", "o", "u1", Some(key))).await);
    }
    let all = scope("m", "o", None);
    let matching = |prefix: &str| -> Vec<String> {
        let mut rows: Vec<String> = store
            .by_key_prefix(&all, prefix, 50)
            .unwrap()
            .into_iter()
            .map(|r| r.task_key.unwrap())
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(matching("a%"), vec!["a%", "a%%", "a%b"]);
    assert_eq!(matching("a_"), vec!["a_", "a_b"]);
    assert_eq!(matching("a\\"), vec!["a\\", "a\\b"]);
    assert_eq!(matching("a%%"), vec!["a%%"]);
    assert_eq!(matching("%").len(), 0);
    assert_eq!(matching("").len(), keys.len());
}

#[tokio::test]
async fn key_prefix_handles_non_ascii_and_the_last_code_point() {
    let store = store();
    let max = char::MAX;
    for key in [
        "é1".to_owned(),
        "é2".to_owned(),
        "ê".to_owned(),
        format!("z{max}"),
        format!("z{max}{max}"),
        format!("z{max}a"),
        "{".to_owned(),
    ] {
        created(&store, task("m", "o", "u1", Some(&key))).await;
    }
    let all = scope("m", "o", None);
    assert_eq!(store.by_key_prefix(&all, "é", 50).unwrap().len(), 2);
    assert_eq!(
        store
            .by_key_prefix(&all, &format!("z{max}"), 50)
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        store
            .by_key_prefix(&all, &format!("{max}"), 50)
            .unwrap()
            .len(),
        0
    );
}

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

#[tokio::test]
async fn lookups_are_capped_at_500_rows() {
    let store = store();
    let conn = raw(&store);
    let tx = conn.unchecked_transaction().unwrap();
    for i in 0..510 {
        tx.execute(
            "INSERT INTO tasks (id, module, task_name, task_key, status, args_json, resumable, \
             user_id, organization_id, role, request_id, created_at, updated_at, finished_at) \
             VALUES (?1, 'm', 'work', ?2, 'completed', '{}', 0, 'u1', 'o', 'member', 'r', 1, 1, 1)",
            rusqlite::params![uuid::Uuid::now_v7().to_string(), format!("k.{i}")],
        )
        .unwrap();
    }
    tx.commit().unwrap();
    let all = scope("m", "o", None);
    assert_eq!(store.by_key_prefix(&all, "k.", 10_000).unwrap().len(), 500);
    assert_eq!(store.by_user(&all, u32::MAX).unwrap().len(), 500);
    assert_eq!(store.by_key(&all, "k.7", 0).unwrap().len(), 0);
}

#[tokio::test]
async fn by_user_lists_one_user_or_the_whole_organization_newest_first() {
    let store = store();
    let a = created(&store, task("m", "o", "u1", None)).await;
    let b = created(&store, task("m", "o", "u2", None)).await;
    let c = created(&store, task("m", "o", "u1", None)).await;
    created(&store, task("m", "o2", "u1", None)).await;
    created(&store, task("m2", "o", "u1", None)).await;
    let mine = store.by_user(&scope("m", "o", Some("u1")), 50).unwrap();
    assert_eq!(ids(&mine), vec![c.clone(), a.clone()]);
    let org = store.by_user(&scope("m", "o", None), 50).unwrap();
    assert_eq!(ids(&org), vec![c, b, a]);
}

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
async fn lookups_read_their_indexes_and_never_scan_the_table() {
    let store = store();
    let conn = raw(&store);
    let cases = [
        (sql::GET, 4, "USING INDEX sqlite_autoindex_tasks_1"),
        (sql::BY_KEY, 5, "USING INDEX tasks_by_key"),
        (sql::BY_KEY_RANGE, 6, "COVERING INDEX tasks_by_key"),
        (sql::BY_KEY_FROM, 6, "COVERING INDEX tasks_by_key"),
        (sql::BY_USER, 4, "USING INDEX tasks_by_user"),
        (sql::BY_ORG, 4, "USING INDEX tasks_by_org"),
        (sql::PENDING, 1, "USING INDEX tasks_active"),
        (sql::ACTIVE_WITH_KEY, 3, "INDEX tasks_active_key"),
        (sql::PRUNE, 2, "INDEX tasks_finished"),
    ];
    for (sql, n, expected) in cases {
        let plan = plan(&conn, sql, n);
        assert!(plan.contains(expected), "{sql}\n{plan}");
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
        (sql::PENDING, 1),
        (sql::PRUNE, 2),
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

// ---- list -----------------------------------------------------------------------

#[tokio::test]
async fn list_pages_newest_first_and_stays_stable_while_tasks_arrive() {
    let store = store();
    let mut all = Vec::new();
    for _ in 0..7 {
        all.push(created(&store, task("m", "o", "u1", None)).await);
    }
    all.reverse();
    let me = scope("m", "o", Some("u1"));
    let filter = TaskFilter::default();
    let first = store.list(&me, &filter, None, 3).unwrap();
    assert_eq!(ids(&first.tasks), all[..3]);
    // New work arrives between pages: the next pages do not shift.
    created(&store, task("m", "o", "u1", None)).await;
    let cursor: Cursor = first.next_cursor.unwrap().to_string().parse().unwrap();
    let second = store.list(&me, &filter, Some(&cursor), 3).unwrap();
    assert_eq!(ids(&second.tasks), all[3..6]);
    let third = store
        .list(&me, &filter, second.next_cursor.as_ref(), 3)
        .unwrap();
    assert_eq!(ids(&third.tasks), all[6..]);
    assert!(third.next_cursor.is_none());
}

#[tokio::test]
async fn list_filters_are_combined() {
    let store = store();
    let mut t = task("m", "o", "u1", Some("report.1"));
    t.created_at = 100;
    let old = created(&store, t).await;
    let mut t = task("m", "o", "u1", Some("report.2"));
    t.created_at = 200;
    let done = created(&store, t).await;
    store
        .finish(
            &done,
            Outcome::Completed {
                result_json: "1".into(),
            },
        )
        .await
        .unwrap();
    let mut t = task("m", "o", "u1", Some("export.1"));
    t.created_at = 200;
    let export = created(&store, t).await;
    let mut t = task("m", "o", "u1", Some("report.3"));
    t.task_name = "other".into();
    t.created_at = 300;
    let other_name = created(&store, t).await;

    let me = scope("m", "o", None);
    let list = |filter: TaskFilter| ids(&store.list(&me, &filter, None, 50).unwrap().tasks);
    let reports = TaskFilter {
        key_prefix: Some("report.".into()),
        ..TaskFilter::default()
    };
    assert_eq!(
        list(reports.clone()),
        vec![other_name.clone(), done.clone(), old.clone()]
    );
    assert_eq!(
        list(TaskFilter {
            statuses: vec![Status::Pending, Status::Running],
            task_name: Some("work".into()),
            ..reports.clone()
        }),
        vec![old.clone()]
    );
    assert_eq!(
        list(TaskFilter {
            created_after: Some(200),
            created_before: Some(300),
            ..TaskFilter::default()
        }),
        vec![export, done.clone()]
    );
    assert_eq!(
        list(TaskFilter {
            statuses: vec![Status::Completed],
            ..reports
        }),
        vec![done]
    );
}

#[tokio::test]
async fn list_clamps_its_page_size_to_one_through_two_hundred() {
    let store = store();
    for _ in 0..3 {
        created(&store, task("m", "o", "u1", None)).await;
    }
    let me = scope("m", "o", None);
    let page = store.list(&me, &TaskFilter::default(), None, 0).unwrap();
    assert_eq!(page.tasks.len(), 1);
    assert!(page.next_cursor.is_some());
    let q = ListQuery::new(
        &OrgScope::from(&me),
        &TaskFilter::default(),
        None,
        MAX_PAGE_LIMIT,
    );
    assert_eq!(q.params.last(), Some(&rusqlite::types::Value::Integer(201)));
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

// ---- scope ----------------------------------------------------------------------

#[tokio::test]
async fn tasks_of_another_module_organization_or_user_are_invisible() {
    let store = store();
    let id = created(&store, task("m", "o", "u1", Some("k.1"))).await;
    let visible = [scope("m", "o", Some("u1")), scope("m", "o", None)];
    let hidden = [
        scope("other", "o", None),
        scope("m", "o2", None),
        scope("m", "o", Some("u2")),
    ];
    for s in &visible {
        assert!(store.get(&id, s).unwrap().is_some());
        assert_eq!(store.by_key(s, "k.1", 10).unwrap().len(), 1);
        assert_eq!(store.by_key_prefix(s, "k.", 10).unwrap().len(), 1);
        assert_eq!(store.by_user(s, 10).unwrap().len(), 1);
        let page = store.list(s, &TaskFilter::default(), None, 10).unwrap();
        assert_eq!(page.tasks.len(), 1);
    }
    for s in &hidden {
        assert!(store.get(&id, s).unwrap().is_none(), "{s:?}");
        assert!(store.by_key(s, "k.1", 10).unwrap().is_empty());
        assert!(store.by_key_prefix(s, "k.", 10).unwrap().is_empty());
        assert!(store.by_user(s, 10).unwrap().is_empty());
        let page = store.list(s, &TaskFilter::default(), None, 10).unwrap();
        assert!(page.tasks.is_empty());
    }
    let missing = uuid::Uuid::now_v7().to_string();
    assert!(store.get(&missing, &visible[0]).unwrap().is_none());
}

// ---- schema -----------------------------------------------------------------------

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

#[test]
fn the_store_is_usable_as_a_trait_object() {
    fn takes(_: Option<Arc<dyn TaskStore>>) {}
    takes(None);
}

#[tokio::test]
async fn lookups_return_summaries_without_the_heavy_fields_and_get_returns_them() {
    let store = store();
    let mut t = task("m", "o", "u", Some("heavy"));
    t.args_json = format!("\"{}\"", "x".repeat(100_000));
    let id = created(&store, t).await;
    let own = owner("m", "o");
    let update = ProgressUpdate {
        progress: 0.5,
        label: Some("half".into()),
        checkpoint_json: Some("{\"page\": 5}".into()),
    };
    store.update_progress(&id, &own, update).await.unwrap();
    let all = scope("m", "o", None);
    for rows in [
        store.by_key(&all, "heavy", 10).unwrap(),
        store.by_key_prefix(&all, "hea", 10).unwrap(),
        store.by_user(&all, 10).unwrap(),
        store
            .list(&all, &TaskFilter::default(), None, 10)
            .unwrap()
            .tasks,
    ] {
        assert_eq!(ids(&rows), std::slice::from_ref(&id));
        assert_eq!(rows[0].args_json, "");
        assert_eq!(rows[0].checkpoint_json, None);
        assert_eq!(rows[0].label.as_deref(), Some("half"));
    }
    let whole = store.get(&id, &all).unwrap().unwrap();
    assert_eq!(whole.args_json.len(), 100_002);
    assert_eq!(whole.checkpoint_json.as_deref(), Some("{\"page\": 5}"));
}

#[tokio::test]
async fn release_returns_a_started_task_to_pending_and_only_a_running_one() {
    let store = store();
    let id = running(&store, task("m", "o", "u", None)).await;
    assert!(store.release(&id).await.unwrap());
    let row = store.get_unscoped(&id).unwrap().unwrap();
    assert_eq!(
        (row.status, row.attempts, row.started_at),
        (Status::Pending, 0, None)
    );
    assert!(
        !store.release(&id).await.unwrap(),
        "a pending task is not released"
    );
    let again = store.start(&id).await.unwrap().unwrap();
    assert_eq!(again.attempts, 1);
    store
        .finish(
            &id,
            Outcome::Completed {
                result_json: "null".into(),
            },
        )
        .await
        .unwrap();
    assert!(
        !store.release(&id).await.unwrap(),
        "a finished task stays finished"
    );
}

#[tokio::test]
async fn closing_a_confirmation_decides_between_an_answer_and_a_timeout_once() {
    let store = store();
    // Closed with no answer: a later answer is refused, the task runs again.
    let id = running(&store, task("m", "o", "u", None)).await;
    store.ask_confirmation(&id, "{}", 10, None).await.unwrap();
    assert_eq!(
        store
            .close_confirmation(&id, crate::db::now_ms())
            .await
            .unwrap(),
        None
    );
    assert_eq!(status(&store, &id), Status::Running);
    let late = store
        .answer_confirmation(&id, answer(crate::db::now_ms()), None)
        .await
        .unwrap();
    assert!(matches!(late, Answered::NotWaiting), "{late:?}");
    // Answered before the close: the close returns it, once.
    let id = running(&store, task("m", "o", "u", None)).await;
    store.ask_confirmation(&id, "{}", 10, None).await.unwrap();
    let recorded = store
        .answer_confirmation(&id, answer(crate::db::now_ms()), None)
        .await
        .unwrap();
    assert!(matches!(recorded, Answered::Recorded));
    let closed = store
        .close_confirmation(&id, crate::db::now_ms())
        .await
        .unwrap();
    assert_eq!(closed.map(|a| a.answered_by), Some("u1".to_owned()));
    assert_eq!(
        store
            .close_confirmation(&id, crate::db::now_ms())
            .await
            .unwrap(),
        None,
        "consumed"
    );
    assert_eq!(status(&store, &id), Status::Running);
}
