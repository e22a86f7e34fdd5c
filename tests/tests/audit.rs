//! The one audit trail, end to end: each capability's decisions — file
//! operations the host refused, task submissions, confirmations answered —
//! land in it from real guests, and principals read it by capability,
//! scoped by role, over `GET /v1/audit`; and the grants a module needs are
//! learned back from its records. (Subprocess records are tested in
//! `subprocess.rs`, outbound HTTP records in `network.rs`.)

use axum::http::StatusCode;
use modhost::audit::{AuditRecord, Capability, Decision, Detail};
use modhost::auth::Tokens;
use modhost::db::Db;
use modhost::http::{AppState, router};
use modhost::identity::{Principal, RequestMeta};
use modhost::tasks::SubmitOptions;
use modhost::tasks::api::ConfirmationAnswer;
use modhost::tasks::store::Status;
use modhost_tests::*;
use serde_json::{Value, json};

async fn records(t: &TestHost, capability: Capability) -> Vec<AuditRecord> {
    t.host.audit(&records_of(capability), 500).await.unwrap()
}

/// Submits `task` of the `tasks` module as `who`.
async fn submit(
    t: &TestHost,
    task: &str,
    args: &str,
    options: SubmitOptions,
    who: &Principal,
) -> Result<String, modhost::SdkError> {
    t.host
        .submit_task("tasks", task, args, options, who, RequestMeta::fresh())
        .await
}

async fn try_ops(t: &TestHost, ops: Value) -> Vec<Value> {
    let Value::Array(ops) = ops else {
        panic!("a list of operations")
    };
    try_files(t, &principal("alice", "acme"), ops).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_operation_leading_out_of_the_data_directory_is_recorded_denied() {
    let t = TestHost::with("files", FILES, "[filesystem]\ndata = true").await;
    let out = try_ops(
        &t,
        json!([
            {"op": "read", "path": "/data/../secret"},
            {"op": "write", "path": "/data/../../escaped.txt"},
            {"op": "read", "path": "/data/missing.txt"},
            {"op": "write", "path": "/data/kept.txt"},
        ]),
    )
    .await;
    assert!(
        out[0]["error"].is_string() && out[1]["error"].is_string(),
        "{out:?}"
    );
    assert!(out[3].get("ok").is_some(), "{out:?}");
    let trail = records(&t, Capability::Filesystem).await;
    let subjects: Vec<&str> = trail.iter().map(|r| r.entry.subject.as_str()).collect();
    assert_eq!(
        subjects,
        ["../../escaped.txt", "../secret"],
        "the refusals, newest first, and neither a missing file nor an allowed write"
    );
    for r in &trail {
        assert_eq!(r.entry.decision, Decision::Denied);
        assert_eq!(r.entry.module, "files");
        assert_eq!(r.entry.user_id, "alice");
        assert!(reason_of(r).contains("outside"), "{r:?}");
        let Detail::Filesystem(d) = &r.entry.detail else {
            panic!("a filesystem record")
        };
        assert_eq!(d.operation, "open-at");
        assert_eq!(d.error, "not-permitted");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learning_host_opens_an_ungranted_data_directory_and_records_its_first_use() {
    let mut t = TestHost::with_options(|o| {
        o.learn = Some(modhost::host::Learning {
            module: "files".into(),
            organization: "acme".parse().unwrap(),
        });
    });
    t.load("files", FILES, "").await;
    let write = json!([{"op": "write", "path": "/data/kept.txt"}]);
    let Value::Array(ops) = write else {
        unreachable!()
    };
    let out = try_files(&t, &principal("alice", "acme"), ops.clone()).await;
    assert!(out[0].get("ok").is_some(), "{out:?}");
    // Another organization gets what the manifest grants: no directory.
    let out = try_files(&t, &principal("bob", "globex"), ops).await;
    assert!(out[0]["error"].is_string(), "{out:?}");
    let trail = records(&t, Capability::Filesystem).await;
    assert_eq!(trail.len(), 1, "one record of the first use: {trail:?}");
    let used = &trail[0];
    assert_eq!(
        (
            used.entry.decision,
            used.entry.subject.as_str(),
            reason_of(used)
        ),
        (Decision::Allowed, "kept.txt", modhost::audit::LEARNED)
    );
    assert!(modhost::learn::suggest(&trail).data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_records_a_bounded_number_of_refused_file_operations() {
    let t = TestHost::with("files", FILES, "[filesystem]\ndata = true").await;
    let ops: Vec<Value> = (0..200)
        .map(|i| json!({"op": "read", "path": format!("/data/../{i}")}))
        .collect();
    try_ops(&t, Value::Array(ops)).await;
    let n = records(&t, Capability::Filesystem).await.len();
    assert_eq!(
        u32::try_from(n).unwrap(),
        modhost::audit::MAX_RECORDED_REFUSALS,
        "a guest cannot flood the trail"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_are_recorded_with_the_task_they_made_and_refusals_with_their_reason() {
    let t = TestHost::with(
        "tasks",
        TASKS_BASIC,
        "[tasks]\nmax-active-per-user = 1\n\n[limits]\ntask-deadline-ms = 60000",
    )
    .await;
    let alice = principal("alice", "acme");
    let keyed = SubmitOptions {
        task_key: Some("nightly".into()),
        ..SubmitOptions::default()
    };
    let id = submit(&t, "sleep", "{}", keyed.clone(), &alice)
        .await
        .unwrap();
    let again = submit(&t, "sleep", "{}", keyed, &alice).await.unwrap();
    assert_eq!(again, id, "the key deduplicates");
    limited(submit(&t, "noop", "{}", SubmitOptions::default(), &alice).await);
    invalid(submit(&t, "no-such-task", "{}", SubmitOptions::default(), &alice).await);
    let trail = trail_of(&t.host, Capability::Task, 4).await;
    let seen: Vec<(&str, Decision)> = trail
        .iter()
        .map(|r| (r.entry.subject.as_str(), r.entry.decision))
        .collect();
    assert_eq!(
        seen,
        [
            ("no-such-task", Decision::Invalid),
            ("noop", Decision::Limited),
            ("sleep", Decision::Allowed),
            ("sleep", Decision::Allowed),
        ]
    );
    let details: Vec<_> = trail
        .iter()
        .map(|r| match &r.entry.detail {
            Detail::Task(d) => d.clone(),
            other => panic!("not a task record: {other:?}"),
        })
        .collect();
    assert!(reason_of(&trail[1]).contains("max-active-per-user"));
    assert_eq!(details[3].created.as_deref(), Some(id.as_str()));
    assert_eq!(details[3].task_key.as_deref(), Some("nightly"));
    assert!(!details[3].existing);
    assert_eq!(details[2].created.as_deref(), Some(id.as_str()));
    assert!(details[2].existing, "the second returned the active task");
    t.host.tasks().cancel(&id, &alice).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_confirmation_is_recorded_under_who_answered_and_a_refused_one_too() {
    let t = TestHost::with("confirm", CONFIRM, "[limits]\ntask-deadline-ms = 60000").await;
    t.host.start_tasks().await.unwrap();
    let alice = principal("alice", "acme");
    let started = t
        .host
        .call_action("confirm", "start", "{}", &alice, RequestMeta::fresh())
        .await
        .unwrap();
    let id = started.data.unwrap()["id"].as_str().unwrap().to_owned();
    wait_status(&t.host, &id, &alice, Status::WaitingConfirmation).await;
    invalid(
        t.host
            .tasks()
            .answer_confirmation(&id, &ConfirmationAnswer::press("maybe"), &alice)
            .await,
    );
    t.host
        .tasks()
        .answer_confirmation(&id, &ConfirmationAnswer::press("yes"), &alice)
        .await
        .unwrap();
    wait_final(&t.host, &id, &alice).await;
    let trail = records(&t, Capability::Confirmation).await;
    assert_eq!(trail.len(), 2);
    let (yes, maybe) = (&trail[0], &trail[1]);
    assert_eq!(yes.entry.decision, Decision::Allowed);
    assert_eq!(yes.entry.task_id.as_deref(), Some(id.as_str()));
    assert_eq!(
        (yes.entry.user_id.as_str(), yes.entry.subject.as_str()),
        ("alice", "ask")
    );
    assert!(matches!(&yes.entry.detail, Detail::Confirmation(d) if d.answer == "yes"));
    assert_eq!(maybe.entry.decision, Decision::Invalid);
    assert!(reason_of(maybe).contains("maybe"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trail_is_read_by_capability_and_scoped_by_role_over_http() {
    let t = TestHost::with("files", FILES, "[filesystem]\ndata = true").await;
    try_ops(&t, json!([{"op": "read", "path": "/data/../secret"}])).await;
    let other = json!({"op": "read", "path": "/data/../other"});
    try_files(&t, &principal("bob", "acme"), vec![other]).await;
    let tokens = Tokens::new(Db::in_memory().unwrap());
    let token = async |p: Principal| tokens.create(&p, "test").await.unwrap().secret;
    let (alice, acme_admin, other_admin) = (
        token(principal("alice", "acme")).await,
        token(admin_of("acme")).await,
        token(admin_of("other")).await,
    );
    let app = router(AppState::new(t.host.clone(), tokens.clone()));
    let get =
        async |token: &str, query: &str| get_json(&app, token, &format!("/v1/audit{query}")).await;
    let subjects = |body: &Value| -> Vec<String> {
        body["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["subject"].as_str().unwrap().to_owned())
            .collect()
    };
    let (status, mine) = get(&alice, "?capability=filesystem").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(subjects(&mine), ["../secret"], "a member reads their own");
    assert_eq!(mine["records"][0]["capability"], "filesystem");
    assert_eq!(mine["records"][0]["detail"]["operation"], "open-at");
    let (_, org) = get(&acme_admin, "?capability=filesystem").await;
    assert_eq!(
        subjects(&org),
        ["../other", "../secret"],
        "an admin reads the organization's"
    );
    let (_, bobs) = get(&acme_admin, "?capability=filesystem&user=bob").await;
    assert_eq!(subjects(&bobs), ["../other"]);
    let (_, none) = get(&acme_admin, "?capability=subprocess").await;
    assert!(subjects(&none).is_empty());
    let (_, foreign) = get(&other_admin, "").await;
    assert!(
        subjects(&foreign).is_empty(),
        "another organization sees nothing"
    );
    let (status, _) = get(&alice, "?capability=sockets").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// `examples/git-stats/module.toml`'s grants, and its policy.
fn git_stats_grants() -> (String, modhost::manifest::Policy) {
    if on_path("git").is_none() {
        panic!("git is missing: apt-get install git");
    }
    let manifest = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/git-stats/module.toml"),
    )
    .unwrap();
    let grants = manifest[manifest.find("[filesystem]").unwrap()..].to_owned();
    let policy = git_stats_with(&grants);
    (grants, policy)
}

/// The policy of git-stats with the manifest's grants replaced by `grants`.
fn git_stats_with(grants: &str) -> modhost::manifest::Policy {
    modhost::manifest::parse(
        &format!("name = \"git-stats\"\nversion = \"0.1.0\"\ncomponent = \"c.wasm\"\n{grants}"),
        &modhost::manifest::LoadEnv::host_default(),
    )
    .unwrap_or_else(|e| panic!("{e}\n{grants}"))
    .policy
}

/// Drives git-stats as `who` (two notes, then the stats) and returns the
/// module's records.
async fn git_stats_used(t: &TestHost, who: &Principal) -> Vec<AuditRecord> {
    for (action, args) in [
        ("note", json!({"message": "first note"})),
        ("note", json!({"message": "second"})),
        ("stats", json!({})),
    ] {
        t.host
            .call_action(
                "git-stats",
                action,
                &args.to_string(),
                who,
                RequestMeta::fresh(),
            )
            .await
            .unwrap_or_else(|e| panic!("{action}: {e}"));
    }
    let filter = modhost::audit::AuditFilter {
        module: Some("git-stats".into()),
        ..modhost::audit::AuditFilter::default()
    };
    t.host.audit(&filter, 500).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_git_stats_records_suggest_exactly_the_grants_of_its_manifest() {
    let (grants, policy) = git_stats_grants();
    let t = TestHost::with("git-stats", EXAMPLE_GIT_STATS, &grants).await;
    let records = git_stats_used(&t, &principal("alice", "acme")).await;
    let suggestion = modhost::learn::suggest(&records);
    let toml = suggestion.to_toml();
    assert!(
        toml.contains(r#"["-C", "repo", "commit", "-q", "--allow-empty", "-m", "{value}"]"#),
        "{toml}"
    );
    let changes = suggestion.changes(&records, &policy);
    assert!(changes.is_empty(), "{changes:?}\n{toml}");
    // A grant the module never used is reported as such.
    let wider = git_stats_with(&format!(
        "{grants}\n[network]\nallow = [\"https://unused.example\"]\n"
    ));
    let changes: Vec<String> = suggestion
        .changes(&records, &wider)
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        changes,
        ["- [network] allow https://unused.example (granted, not used)"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learning_git_stats_from_a_manifest_without_grants_reproduces_its_grants() {
    let (_, policy) = git_stats_grants();
    let mut t = TestHost::with_options(|o| {
        o.learn = Some(modhost::host::Learning {
            module: "git-stats".into(),
            organization: "acme".parse().unwrap(),
        });
    });
    t.load("git-stats", EXAMPLE_GIT_STATS, "").await;
    // Another organization's calls run under the manifest, granting nothing.
    let other = t
        .host
        .call_action(
            "git-stats",
            "note",
            &json!({"message": "elsewhere"}).to_string(),
            &principal("bob", "globex"),
            RequestMeta::fresh(),
        )
        .await;
    let refused = other
        .expect_err("the manifest grants no program")
        .to_string();
    assert!(
        refused.contains("permission denied") && refused.contains("grant"),
        "{refused}"
    );

    let records: Vec<AuditRecord> = git_stats_used(&t, &principal("alice", "acme"))
        .await
        .into_iter()
        .filter(|r| r.entry.organization_id == "acme")
        .collect();
    let launches: Vec<&AuditRecord> = records
        .iter()
        .filter(|r| matches!(r.entry.detail, Detail::Subprocess(_)))
        .collect();
    assert!(launches.len() >= 5, "{launches:?}");
    for r in &launches {
        assert_eq!(r.entry.decision, Decision::Allowed, "{r:?}");
        let Detail::Subprocess(d) = &r.entry.detail else {
            unreachable!()
        };
        assert!(
            d.confined,
            "a learned launch is confined as any other: {r:?}"
        );
    }
    // What the grant learned so far allowed says nothing more.
    assert!(
        launches
            .iter()
            .any(|r| r.entry.reason.as_deref() == Some(modhost::audit::LEARNED)),
        "{launches:?}"
    );
    let suggestion = modhost::learn::suggest(&records);
    let changes = suggestion.changes(&records, &policy);
    assert!(changes.is_empty(), "{changes:?}\n{}", suggestion.to_toml());
    assert_eq!(
        git_stats_with(&suggestion.to_toml())
            .subprocess
            .programs
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_serving_other_organizations_refuses_to_learn() {
    let state = tempfile::tempdir().unwrap();
    {
        let host = host_on(state.path());
        for org in ["acme", "globex"] {
            host.token_store()
                .create(&principal("admin", org), "test")
                .await
                .unwrap();
        }
    }
    let mut options = modhost::HostOptions::new(state.path());
    options.engine.cache_dir = Some(COMPONENT_CACHE_DIR.into());
    options.learn = Some(modhost::host::Learning {
        module: "git-stats".into(),
        organization: "acme".parse().unwrap(),
    });
    let Err(refused) = modhost::Host::new(options) else {
        panic!("a host learning for acme started beside globex's tokens")
    };
    assert!(
        matches!(&refused, modhost::StartError::LearningOthers { others, .. } if others == &["globex"]),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_submitted_by_a_running_task_is_recorded_within_it() {
    let t = TestHost::with("tasks", TASKS_BASIC, "").await;
    t.host.start_tasks().await.unwrap();
    let alice = principal("alice", "acme");
    let parent = submit(&t, "spawn", "null", SubmitOptions::default(), &alice)
        .await
        .unwrap();
    let row = wait_final(&t.host, &parent, &alice).await;
    assert_eq!(row.status, Status::Completed, "{row:?}");
    let child: String = serde_json::from_str(row.result_json.as_deref().unwrap()).unwrap();
    let trail = trail_of(&t.host, Capability::Task, 2).await;
    let within: Vec<(&str, Option<&str>)> = trail
        .iter()
        .map(|r| (r.entry.subject.as_str(), r.entry.task_id.as_deref()))
        .collect();
    assert_eq!(
        within,
        [("noop", Some(parent.as_str())), ("spawn", None)],
        "the child's record names the task that submitted it"
    );
    let Detail::Task(d) = &trail[0].entry.detail else {
        panic!("a task record")
    };
    assert_eq!(d.created.as_deref(), Some(child.as_str()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_held_by_another_users_task_is_recorded_refused_without_that_tasks_id() {
    let t = TestHost::with("tasks", TASKS_BASIC, "[limits]\ntask-deadline-ms = 60000").await;
    let (alice, bob) = (principal("alice", "acme"), principal("bob", "acme"));
    let keyed = || SubmitOptions {
        task_key: Some("nightly".into()),
        ..SubmitOptions::default()
    };
    let id = submit(&t, "sleep", "{}", keyed(), &alice).await.unwrap();
    invalid(submit(&t, "sleep", "{}", keyed(), &bob).await);
    let trail = trail_of(&t.host, Capability::Task, 2).await;
    let bobs: Vec<&AuditRecord> = trail.iter().filter(|r| r.entry.user_id == "bob").collect();
    assert_eq!(bobs.len(), 1);
    assert_eq!(bobs[0].entry.decision, Decision::Invalid);
    let Detail::Task(d) = &bobs[0].entry.detail else {
        panic!("a task record")
    };
    assert_eq!(d.created, None, "alice's task id is not bob's to read");
    t.host.tasks().cancel(&id, &alice).await.unwrap();
}
