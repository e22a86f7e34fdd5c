//! The task store on PostgreSQL: the conformance suite every store passes,
//! on a throwaway cluster the suite starts itself, and what only a shared
//! database has.

use std::sync::Arc;
use std::time::Duration;

use modhost::tasks::store::postgres::PgTaskStore;
use modhost::tasks::store::{
    HostId, NewTask, Outcome, Status, Submitted, TaskStore, TaskStoreError, Want,
};
use modhost_tests::postgres::Cluster;

/// A new empty database on the suite's cluster, with the task store on it.
async fn fresh_pg() -> Arc<dyn TaskStore> {
    Arc::new(PgTaskStore::connect(&fresh_database().await).await.unwrap())
}

async fn fresh_database() -> String {
    let name = format!("t_{}", uuid::Uuid::new_v4().simple());
    tokio::task::spawn_blocking(move || Cluster::shared().create_database(&name))
        .await
        .unwrap()
}

modhost::task_store_conformance!(fresh_pg());

/// A plain task of `module`, as the conformance suite makes them.
fn task(module: &str) -> NewTask {
    modhost::tasks::store::conformance::task(module, "o", "u", None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_submitted_through_one_host_is_claimed_and_finished_through_another() {
    let url = fresh_database().await;
    let a = PgTaskStore::connect(&url).await.unwrap();
    let b = PgTaskStore::connect(&url).await.unwrap();
    let Submitted::Created(id) = a.submit(task("m")).await.unwrap() else {
        panic!("not created")
    };
    let want = [Want {
        module: "m".into(),
        max: 10,
    }];
    let host_b = HostId::new("b").unwrap();
    let claimed = b
        .claim(&host_b, &want, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].row.id, id);
    assert_eq!(claimed[0].row.host.as_deref(), Some("b"));
    let done = Outcome::Completed {
        result_json: "1".into(),
    };
    assert!(b.finish(&id, Some(&claimed[0].lease), done).await.unwrap());
    let row = a.get_unscoped(&id).await.unwrap().unwrap();
    assert_eq!(row.status, Status::Completed);
    assert_eq!(row.host, None);
}

#[tokio::test]
async fn a_database_that_does_not_answer_fails_naming_its_url_without_the_password() {
    // Port 1 on loopback: nothing listens there.
    let url = "postgres://modhost:s3cret@127.0.0.1:1/tasks?connect_timeout=2";
    let err = PgTaskStore::connect(url).await.unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, TaskStoreError::Open { .. }), "{err:?}");
    assert!(shown.contains("127.0.0.1:1"), "{shown}");
    assert!(!shown.contains("s3cret"), "{shown}");
}

#[tokio::test]
async fn hosts_starting_together_migrate_the_schema_once() {
    let url = fresh_database().await;
    let stores = futures::future::join_all((0..4).map(|_| PgTaskStore::connect(&url))).await;
    for s in stores {
        s.unwrap();
    }
    let version = Cluster::shared().psql(
        &url,
        "SELECT version FROM schema_versions WHERE owner = 'tasks'",
    );
    assert_eq!(
        version.trim(),
        modhost::tasks::store::postgres::MIGRATIONS
            .len()
            .to_string()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_submitted_through_one_host_is_announced_to_the_others_at_commit() {
    let url = fresh_database().await;
    let a = PgTaskStore::connect(&url).await.unwrap();
    let b = PgTaskStore::connect(&url).await.unwrap();
    let mut heard = b.announcements().expect("PostgreSQL announces new tasks");
    // The listener connects in the background: submit until b hears.
    let module = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            a.submit(task("reports")).await.unwrap();
            if let Ok(Ok(m)) = tokio::time::timeout(Duration::from_millis(200), heard.recv()).await
            {
                return m;
            }
        }
    })
    .await
    .expect("no announcement within 10 s");
    assert_eq!(
        module,
        modhost::tasks::store::Announced {
            host: None,
            what: modhost::tasks::store::Announcement::Pending {
                module: "reports".into()
            },
        }
    );
}

/// A host on the PostgreSQL database at `url` under `name`, with a lease
/// short enough for a test to see renewals.
async fn host_on_pg(state: &std::path::Path, url: &str, name: &str) -> modhost::Host {
    host_with_lease(state, url, name, Duration::from_millis(1500)).await
}

async fn host_with_lease(
    state: &std::path::Path,
    url: &str,
    name: &str,
    lease: Duration,
) -> modhost::Host {
    let mut options = modhost::HostOptions::new(state);
    options.task_store = modhost::host::TaskStoreLocation::Postgres(url.to_owned());
    options.host_id = HostId::new(name).unwrap();
    options.task_lease = lease;
    modhost::Host::open(options).await.unwrap()
}

async fn wait_status(
    host: &modhost::Host,
    id: &str,
    who: &modhost::Principal,
    status: Status,
) -> modhost::tasks::store::TaskRow {
    for _ in 0..1500 {
        let row = host.tasks().get(id, who).await.unwrap();
        if row.status == status {
            return row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("task {id} never reached {status}");
}

/// Two started hosts on one database with leases of `lease`: `b` has the
/// `confirm` module, `a` none, so every run is b's.
struct Pair {
    a: modhost::Host,
    b: modhost::Host,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    _module: modhost_tests::ModuleDir,
}

impl Pair {
    async fn start(url: &str, lease: Duration) -> Pair {
        use modhost_tests::{CONFIRM, ModuleDir};
        let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = host_with_lease(dirs.0.path(), url, "a", lease).await;
        let b = host_with_lease(dirs.1.path(), url, "b", lease).await;
        let module = ModuleDir::new("confirm", CONFIRM, "[limits]\ntask-deadline-ms = 60000");
        b.load_module(module.path(), false).await.unwrap();
        a.start_tasks().await.unwrap();
        b.start_tasks().await.unwrap();
        Pair {
            a,
            b,
            _dirs: dirs,
            _module: module,
        }
    }

    /// Starts a `confirm` task through b for `who`; its id.
    async fn start_confirm(&self, who: &modhost::identity::Principal) -> String {
        let out = self
            .b
            .call_action("confirm", "start", "{}", who, modhost::RequestMeta::fresh())
            .await
            .unwrap();
        out.data.unwrap()["id"].as_str().unwrap().to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_and_a_cancel_given_through_one_host_reach_the_run_on_another() {
    use modhost::tasks::api::ConfirmationAnswer;
    use modhost_tests::principal;
    let url = fresh_database().await;
    let pair = Pair::start(&url, Duration::from_millis(1500)).await;
    let a = &pair.a;
    let alice = principal("alice", "acme");

    let asked = pair.start_confirm(&alice).await;
    let row = wait_status(a, &asked, &alice, Status::WaitingConfirmation).await;
    assert_eq!(row.host.as_deref(), Some("b"), "b runs it");
    a.tasks()
        .answer_confirmation(&asked, &ConfirmationAnswer::press("yes"), &alice)
        .await
        .unwrap();
    let done = wait_status(a, &asked, &alice, Status::Completed).await;
    let result: serde_json::Value =
        serde_json::from_str(done.result_json.as_deref().unwrap()).unwrap();
    assert_eq!(result["answer"]["by"], "alice", "{result}");

    let stopped = pair.start_confirm(&alice).await;
    wait_status(a, &stopped, &alice, Status::WaitingConfirmation).await;
    a.tasks().cancel(&stopped, &alice).await.unwrap();
    // b's next renewal finds the task lost and stops its run: its own end
    // (cancelled) changes nothing, and the row stays as a's cancel left it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let row = a.tasks().get(&stopped, &alice).await.unwrap();
    assert_eq!(row.status, Status::Cancelled);
    assert_eq!(row.failure_message.as_deref(), Some("cancelled by alice"));
    assert_eq!(row.host, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_made_on_one_host_proves_its_principal_on_every_host_of_the_database() {
    use modhost_tests::principal;
    let url = fresh_database().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host_on_pg(dir_a.path(), &url, "a").await;
    let b = host_on_pg(dir_b.path(), &url, "b").await;
    let alice = principal("alice", "acme");
    let token = a.token_store().create(&alice, "shared").await.unwrap();
    assert_eq!(
        b.token_store().verify(&token.secret).await.unwrap(),
        Some(alice)
    );
    assert!(b.token_store().revoke(&token.id).await.unwrap());
    assert_eq!(a.token_store().verify(&token.secret).await.unwrap(), None);
    assert_eq!(a.token_store().count_live().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decision_audited_on_one_host_is_read_on_another_and_its_end_written_once() {
    use modhost::audit::{
        AuditEnd, AuditEntry, AuditFilter, AuditStore, Decision, Detail, Ended, PgAuditStore,
        SubprocessDetail,
    };
    let url = fresh_database().await;
    let connect = async || {
        let db = modhost::pg::PgDatabase::connect(&url).await.unwrap();
        PgAuditStore::on(Arc::new(db)).await.unwrap()
    };
    let (a, b) = (connect().await, connect().await);
    let decision = AuditEntry {
        id: uuid::Uuid::now_v7().to_string(),
        at: modhost::db::now_ms(),
        module: "git-stats".into(),
        user_id: "alice".into(),
        organization_id: "acme".into(),
        request_id: "r".into(),
        task_id: None,
        subject: "git".into(),
        decision: Decision::Allowed,
        reason: None,
        detail: Detail::Subprocess(SubprocessDetail {
            path: Some("/usr/bin/git".into()),
            args: vec!["log".into(), "x".repeat(20_000)],
            cwd: None,
            env_names: vec!["LANG".into()],
            confined: true,
        }),
    };
    a.record(decision.clone()).await.unwrap();
    let end = AuditEnd {
        ended: Ended::Exited,
        exit_code: Some(0),
        signal: None,
        failure: None,
        duration_ms: 12,
        stdout_bytes: 3,
        stderr_bytes: 0,
        finished_at: modhost::db::now_ms(),
    };
    assert!(b.record_end(&decision.id, end.clone()).await.unwrap());
    assert!(
        !a.record_end(&decision.id, end.clone()).await.unwrap(),
        "once"
    );
    let mine = AuditFilter {
        organization_id: Some("acme".into()),
        user_id: Some("alice".into()),
        ..AuditFilter::default()
    };
    let found = b.query(&mine, 10).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].end.as_ref(), Some(&end));
    assert_eq!(found[0].entry.subject, "git");
    let Detail::Subprocess(d) = &found[0].entry.detail else {
        panic!("a subprocess record")
    };
    assert!(d.args.concat().len() < 17_000, "long text is cut");
    let other = AuditFilter {
        organization_id: Some("globex".into()),
        ..AuditFilter::default()
    };
    assert!(a.query(&other, 10).await.unwrap().is_empty());
    // Retention never deletes a record younger than a day.
    assert!(a.prune(modhost::db::now_ms() + 1, 10).await.is_err());
    assert_eq!(b.query(&mine, 10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subprocess_records_of_an_older_host_move_into_the_one_trail() {
    use modhost::audit::pg::PG_MIGRATIONS;
    use modhost::audit::{AuditFilter, AuditStore, Detail, OWNER, PgAuditStore};
    let url = fresh_database().await;
    let db = Arc::new(modhost::pg::PgDatabase::connect(&url).await.unwrap());
    db.migrate(OWNER, &PG_MIGRATIONS[..1]).await.unwrap();
    db.reader()
        .await
        .unwrap()
        .batch_execute(
            "INSERT INTO subprocess_audit (id, at, module, user_id, organization_id, request_id, \
             program, path, args_json, env_json, decision, confined, ended, exit_code, \
             duration_ms, stdout_bytes, stderr_bytes, finished_at) VALUES \
             ('01', 1, 'git-stats', 'alice', 'acme', 'r', 'git', '/usr/bin/git', \
              '[\"log\"]', '[]', 'allowed', true, 'exited', 0, 5, 1, 0, 6), \
             ('02', 2, 'git-stats', 'alice', 'acme', 'r', 'git', NULL, '[\"x…[cut]', '[]', \
              'denied', false, NULL, NULL, NULL, NULL, NULL, NULL)",
        )
        .await
        .unwrap();
    let trail = PgAuditStore::on(db).await.unwrap();
    let records = trail.query(&AuditFilter::default(), 10).await.unwrap();
    assert_eq!(records.len(), 2);
    let Detail::Subprocess(allowed) = &records[1].entry.detail else {
        panic!("a subprocess record")
    };
    assert_eq!(allowed.args, ["log"]);
    assert!(allowed.confined);
    assert_eq!(records[1].end.as_ref().unwrap().finished_at, 6);
    let Detail::Subprocess(cut) = &records[0].entry.detail else {
        panic!("a subprocess record")
    };
    assert_eq!(
        cut.args,
        ["[\"x…[cut]"],
        "a cut list stays one readable item"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_answers_cross_hosts_at_once_without_waiting_for_a_renewal() {
    use modhost::tasks::api::ConfirmationAnswer;
    use modhost_tests::principal;
    let url = fresh_database().await;
    // Leases of a minute: a renewal (every 20 s) is not what carries them.
    let pair = Pair::start(&url, Duration::from_secs(60)).await;
    let a = &pair.a;
    let mut watched = a.tasks().subscribe();
    let alice = principal("alice", "acme");
    // b's listener may still be connecting: ask until b runs the task.
    let id = pair.start_confirm(&alice).await;
    wait_status(a, &id, &alice, Status::WaitingConfirmation).await;
    let started = std::time::Instant::now();
    a.tasks()
        .answer_confirmation(&id, &ConfirmationAnswer::press("yes"), &alice)
        .await
        .unwrap();
    wait_status(a, &id, &alice, Status::Completed).await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the answer waited for a renewal ({:?})",
        started.elapsed()
    );
    // a's subscribers saw the run on b: its status changes and the answer.
    let mut seen = Vec::new();
    while let Ok(Ok(Some(published))) =
        tokio::time::timeout(Duration::from_secs(5), watched.recv()).await
    {
        use modhost::events::EventKind;
        let e = &published.event;
        if e.subject.task_id.as_deref() != Some(id.as_str()) {
            continue;
        }
        seen.push(match &e.kind {
            EventKind::Status { status, .. } => format!("status:{status}"),
            EventKind::ConfirmationAsked { .. } => "confirmation-asked".to_owned(),
            EventKind::ConfirmationAnswered { .. } => "confirmation-answered".to_owned(),
            other => format!("{other:?}"),
        });
        if seen.iter().any(|s| s == "status:completed") {
            break;
        }
    }
    for expected in [
        "status:running",
        "confirmation-asked",
        "confirmation-answered",
        "status:completed",
    ] {
        assert!(
            seen.iter().any(|s| s == expected),
            "{expected} not among {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_whose_database_goes_away_fails_with_a_typed_error_and_works_again_when_it_returns()
{
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let url = cluster.create_database("comes_and_goes");
    let store = PgTaskStore::connect(&url).await.unwrap();
    let Submitted::Created(kept) = store.submit(task("m")).await.unwrap() else {
        panic!("not created")
    };
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop();
        cluster
    })
    .await
    .unwrap();
    let lost = store.submit(task("m")).await.unwrap_err();
    assert!(matches!(lost, TaskStoreError::Backend(_)), "{lost:?}");
    assert!(store.get_unscoped(&kept).await.is_err(), "reads fail too");
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.restart();
        cluster
    })
    .await
    .unwrap();
    // Broken connections are replaced: the first use after may still meet
    // one, the next does not.
    let mut back = None;
    for _ in 0..50 {
        match store.submit(task("m")).await {
            Ok(Submitted::Created(id)) => {
                back = Some(id);
                break;
            }
            Ok(other) => panic!("{other:?}"),
            // The database is still starting, or a broken connection is
            // being replaced.
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let back = back.expect("writes work again once the database is back");
    for id in [&kept, &back] {
        let mut row = None;
        for _ in 0..50 {
            if let Ok(found) = store.get_unscoped(id).await {
                row = found;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            row.expect("an acknowledged task is kept").status,
            Status::Pending
        );
    }
    drop(cluster);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_message_with_a_nul_is_stored_not_refused() {
    let store = PgTaskStore::connect(&fresh_database().await).await.unwrap();
    let Submitted::Created(id) = store.submit(task("m")).await.unwrap() else {
        panic!("not created")
    };
    let want = [Want {
        module: "m".into(),
        max: 1,
    }];
    let claimed = store
        .claim(&HostId::local(), &want, Duration::from_secs(60))
        .await
        .unwrap();
    let failed = Outcome::Failed {
        kind: "error".into(),
        message: "bad\0byte".into(),
    };
    assert!(
        store
            .finish(&id, Some(&claimed[0].lease), failed)
            .await
            .unwrap()
    );
    let row = store.get_unscoped(&id).await.unwrap().unwrap();
    assert_eq!(row.failure_message.as_deref(), Some("bad\u{FFFD}byte"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_on_a_shared_store_must_have_a_host_id_of_its_own() {
    let url = fresh_database().await;
    let state = tempfile::tempdir().unwrap();
    let mut options = modhost::HostOptions::new(state.path());
    options.task_store = modhost::host::TaskStoreLocation::Postgres(url);
    let refused = modhost::Host::open(options).await.unwrap_err();
    assert!(
        matches!(refused, modhost::StartError::SharedHostId),
        "{refused}"
    );
}

/// Active tasks per owner that the counter tables do not agree with.
async fn miscounted(url: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .query_one(
            "SELECT (SELECT count(*) FROM (SELECT module, organization_id, user_id, count(*) AS n \
                FROM tasks WHERE finished_at IS NULL GROUP BY 1, 2, 3) AS t \
                FULL JOIN task_active_per_user AS c USING (module, organization_id, user_id) \
                WHERE coalesce(t.n, 0) <> coalesce(c.active, 0)) \
             + (SELECT count(*) FROM (SELECT module, organization_id, count(*) AS n \
                FROM tasks WHERE finished_at IS NULL GROUP BY 1, 2) AS t \
                FULL JOIN task_active_per_module_org AS c USING (module, organization_id) \
                WHERE coalesce(t.n, 0) <> coalesce(c.active, 0)) \
             + (SELECT count(*) FROM (SELECT organization_id, count(*) AS n \
                FROM tasks WHERE finished_at IS NULL GROUP BY 1) AS t \
                FULL JOIN task_active_per_org AS c USING (organization_id) \
                WHERE coalesce(t.n, 0) <> coalesce(c.active, 0))",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_counters_match_the_active_tasks_after_batches_of_every_write() {
    use modhost::tasks::store::conformance::task as owned;
    let url = fresh_database().await;
    let store = Arc::new(PgTaskStore::connect(&url).await.unwrap());
    // Submitted together, so that they share batches: owners, keys and a
    // repeated id mixed.
    let mut tasks: Vec<NewTask> = (0..120)
        .map(|i| {
            let user = format!("u{}", i % 3);
            let key = (i % 4 == 0).then(|| format!("k{}", i % 8));
            let mut t = owned(
                &format!("m{}", i % 2),
                &format!("o{}", i % 2),
                &user,
                key.as_deref(),
            );
            t.resumable = i % 5 == 0;
            t
        })
        .collect();
    let repeated = tasks[7].clone();
    tasks.push(repeated);
    let answers = futures::future::join_all(tasks.into_iter().map(|t| {
        let store = Arc::clone(&store);
        async move { store.submit(t).await }
    }))
    .await;
    let refused = answers.iter().filter(|a| a.is_err()).count();
    assert_eq!(refused, 1, "only the repeated id fails: {answers:?}");
    assert!(
        answers
            .iter()
            .any(|a| matches!(a, Ok(Submitted::Existing(_))))
    );
    assert_eq!(miscounted(&url).await, 0, "after submitting");

    let host = HostId::new("h").unwrap();
    let wants: Vec<Want> = ["m0", "m1"]
        .into_iter()
        .map(|m| Want {
            module: m.into(),
            max: 30,
        })
        .collect();
    let claimed = store
        .claim(&host, &wants, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 60);
    // Half end, a quarter of them twice at once (the second ends nothing),
    // some pending ones are cancelled, the rest lapse and are recovered.
    let ends = claimed.iter().take(40).enumerate().flat_map(|(i, c)| {
        let times = if i % 4 == 0 { 2 } else { 1 };
        std::iter::repeat_n(c, times)
    });
    let ended = futures::future::join_all(ends.map(|c| {
        let store = Arc::clone(&store);
        async move {
            let done = Outcome::Completed {
                result_json: "1".into(),
            };
            store.finish(&c.row.id, Some(&c.lease), done).await
        }
    }))
    .await;
    assert_eq!(ended.iter().filter(|e| matches!(e, Ok(true))).count(), 40);
    assert_eq!(ended.iter().filter(|e| matches!(e, Ok(false))).count(), 10);
    let pending: Vec<String> = answers
        .iter()
        .filter_map(|a| match a {
            Ok(Submitted::Created(id)) => Some(id.clone()),
            _ => None,
        })
        .filter(|id| claimed.iter().all(|c| &c.row.id != id))
        .take(10)
        .collect();
    for id in &pending {
        let cancel = Outcome::Cancelled { by: None };
        assert!(store.finish(id, None, cancel).await.unwrap());
    }
    assert_eq!(miscounted(&url).await, 0, "after ending and cancelling");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let recovered = store.recover_expired(None).await.unwrap();
    assert_eq!(recovered.resumed.len() + recovered.interrupted.len(), 20);
    assert!(!recovered.resumed.is_empty() && !recovered.interrupted.is_empty());
    assert_eq!(miscounted(&url).await, 0, "after recovering");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_submitting_at_once_near_a_quota_never_pass_it_together() {
    use modhost::tasks::store::conformance::task as owned;
    let url = fresh_database().await;
    let hosts = [
        Arc::new(PgTaskStore::connect(&url).await.unwrap()),
        Arc::new(PgTaskStore::connect(&url).await.unwrap()),
        Arc::new(PgTaskStore::connect(&url).await.unwrap()),
    ];
    for round in 0..3 {
        let submits = hosts.iter().flat_map(|store| {
            (0..40).map(move |_| {
                let store = Arc::clone(store);
                let mut t = owned("m", "o", &format!("u{round}"), None);
                t.limits.max_active_per_user = 25;
                async move { store.submit(t).await.unwrap() }
            })
        });
        let answers = futures::future::join_all(submits).await;
        let created = answers
            .iter()
            .filter(|a| matches!(a, Submitted::Created(_)))
            .count();
        assert_eq!(created, 25, "created in round {round}");
    }
    assert_eq!(miscounted(&url).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_fails_in_a_batch_undoes_nothing_of_the_others() {
    let url = fresh_database().await;
    let store = Arc::new(PgTaskStore::connect(&url).await.unwrap());
    let host = HostId::new("h").unwrap();
    let want = [Want {
        module: "m".into(),
        max: 30,
    }];
    for round in 0..20 {
        let submitted = futures::future::join_all((0..30).map(|_| store.submit(task("m")))).await;
        assert!(submitted.iter().all(Result::is_ok), "round {round}");
        let claimed = store
            .claim(&host, &want, Duration::from_secs(60))
            .await
            .unwrap();
        assert_eq!(claimed.len(), 30, "round {round}");
        // At once, so that they share a batch: the runs' ends, and new
        // submissions of which one repeats a stored id (and fails).
        let mut repeated = task("m");
        repeated.id = claimed[0].row.id.clone();
        let ends = futures::future::join_all(claimed.iter().map(|c| {
            let done = Outcome::Completed {
                result_json: "1".into(),
            };
            store.finish(&c.row.id, Some(&c.lease), done)
        }));
        let submits = futures::future::join_all(
            std::iter::once(repeated)
                .chain((0..9).map(|_| task("m")))
                .map(|t| store.submit(t)),
        );
        let (ended, submitted) = futures::join!(ends, submits);
        assert!(submitted[0].is_err(), "round {round}: the repeated id");
        for s in &submitted[1..] {
            let Ok(Submitted::Created(id)) = s else {
                panic!("round {round}: {s:?}")
            };
            let row = store.get_unscoped(id).await.unwrap();
            assert!(row.is_some(), "round {round}: a created task is stored");
        }
        for (c, ended) in claimed.iter().zip(ended) {
            assert!(ended.unwrap(), "round {round}: the run ended its task");
            let row = store.get_unscoped(&c.row.id).await.unwrap().unwrap();
            assert_eq!(row.status, Status::Completed, "round {round}");
        }
        // The new tasks, out of the way of the next round's claim.
        for s in &submitted[1..] {
            if let Ok(Submitted::Created(id)) = s {
                let cancel = Outcome::Cancelled { by: None };
                assert!(store.finish(id, None, cancel).await.unwrap());
            }
        }
    }
    assert_eq!(miscounted(&url).await, 0);
}
