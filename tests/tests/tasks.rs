//! The durable task runtime end to end, with real guest components:
//! background and blocking runs, dedup, identity, scoping, progress,
//! confirmation, cancellation and restart recovery.

use std::sync::Arc;
use std::time::Duration;

use futures::future::join_all;
use modhost::identity::{Principal, RequestMeta, Role};
use modhost::tasks::SubmitOptions;
use modhost::tasks::api::ConfirmationAnswer;
use modhost::tasks::store::Status;
use modhost::{CallError, Host, SdkError};
use modhost_tests::*;

fn admin(user: &str, org: &str) -> Principal {
    Principal {
        role: Role::Admin,
        ..principal(user, org)
    }
}

fn keyed(key: &str) -> SubmitOptions {
    SubmitOptions {
        task_key: Some(key.to_owned()),
        ..SubmitOptions::default()
    }
}

async fn submit(
    host: &Host,
    module: &str,
    task: &str,
    options: SubmitOptions,
    who: &Principal,
) -> String {
    host.submit_task(module, task, "{}", options, who, RequestMeta::fresh())
        .await
        .unwrap()
}

async fn action(
    host: &Host,
    module: &str,
    name: &str,
    args: &str,
    who: &Principal,
) -> Result<serde_json::Value, CallError> {
    host.call_action(module, name, args, who, RequestMeta::fresh())
        .await
        .map(|o| o.data.unwrap_or(serde_json::Value::Null))
}

const LONG_TASKS: &str = "[limits]\ntask-deadline-ms = 60000\n[tasks]\nmax-concurrent = 8";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_submissions_of_one_key_make_one_task_and_one_id() {
    let t = TestHost::with("spin", SPIN, LONG_TASKS).await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let ids =
        join_all((0..64).map(|_| submit(&t.host, "spin", "loop", keyed("one.key"), &who))).await;
    assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    let page = t
        .host
        .tasks()
        .list(
            &admin("root", "acme"),
            "spin",
            &Default::default(),
            None,
            200,
        )
        .await
        .unwrap();
    assert_eq!(page.tasks.len(), 1);
    // The same key is free again once the task has finished.
    t.host.tasks().cancel(&ids[0], &who).await.unwrap();
    assert_eq!(
        wait_final(&t.host, &ids[0], &who).await.status,
        Status::Cancelled
    );
    let again = submit(&t.host, "spin", "loop", keyed("one.key"), &who).await;
    assert_ne!(again, ids[0]);
    t.host.tasks().cancel(&again, &who).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_and_blocking_runs_inherit_the_callers_identity() {
    let t = TestHost::with("ident", IDENTITY, "").await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let request = RequestMeta {
        request_id: "req-42".into(),
        session_id: Some("s-1".into()),
    };
    let out = t
        .host
        .call_action("ident", "spawn", "{}", &who, request.clone())
        .await
        .unwrap();
    let id = out.data.unwrap()["id"].as_str().unwrap().to_owned();
    let row = wait_final(&t.host, &id, &who).await;
    assert_eq!(row.status, Status::Completed, "{row:?}");
    let seen = json(row.result_json.as_deref().unwrap());
    assert_eq!(seen["user_id"], "alice");
    assert_eq!(seen["organization_id"], "acme");
    assert_eq!(seen["module"], "ident");
    assert_eq!(seen["request_id"], "req-42");
    assert_eq!(seen["session_id"], "s-1");
    assert_eq!(seen["task_id"], id.as_str());

    let out = t
        .host
        .call_action("ident", "via_blocking", "{}", &who, request)
        .await
        .unwrap();
    let seen = out.data.unwrap();
    assert_eq!(seen["user_id"], "alice");
    assert_eq!(seen["request_id"], "req-42");
    assert!(seen["task_id"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_task_id_is_indistinguishable_from_a_missing_one() {
    let mut t = TestHost::new();
    t.load("ta", TASKS_BASIC, LONG_TASKS).await;
    t.load("tb", TASKS_BASIC, LONG_TASKS).await;
    t.host.start_tasks().await.unwrap();
    let alice = principal("alice", "acme");
    let out = action(
        &t.host,
        "ta",
        "submit",
        r#"{"task":"echo","args":{"x":1}}"#,
        &alice,
    )
    .await
    .unwrap();
    let id = out["id"].as_str().unwrap().to_owned();
    wait_final(&t.host, &id, &alice).await;
    let missing = uuid_v7();
    let mallory_other_org = principal("mallory", "evil");
    for (module, who, target) in [
        ("tb", &alice, id.as_str()),
        ("tb", &alice, missing.as_str()),
        ("ta", &mallory_other_org, id.as_str()),
        ("ta", &mallory_other_org, missing.as_str()),
    ] {
        for act in ["progress_of", "view"] {
            let err = action(
                &t.host,
                module,
                act,
                &format!(r#"{{"id":"{target}"}}"#),
                who,
            )
            .await
            .unwrap_err();
            assert_eq!(
                err,
                CallError::Guest {
                    module: module.into(),
                    error: SdkError::NotFound
                },
                "{act} from {module} as {who:?} on {target}"
            );
        }
    }
    // The owner sees it, and a finished task refuses progress with a different error.
    let view = action(
        &t.host,
        "ta",
        "view",
        &format!(r#"{{"id":"{id}"}}"#),
        &alice,
    )
    .await
    .unwrap();
    assert_eq!(view["summary"]["id"], id.as_str());
    let err = action(
        &t.host,
        "ta",
        "progress_of",
        &format!(r#"{{"id":"{id}"}}"#),
        &alice,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Guest {
                error: SdkError::InvalidInput(_),
                ..
            }
        ),
        "{err:?}"
    );
    // The host API hides other organizations' tasks the same way.
    assert_eq!(
        t.host
            .tasks()
            .get(&id, &admin("root", "evil"))
            .await
            .unwrap_err(),
        SdkError::NotFound
    );
}

fn uuid_v7() -> String {
    // A well-formed id that no task has.
    format!("{:08x}-0000-7000-8000-000000000000", std::process::id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_lookups_treat_percent_underscore_and_backslash_as_ordinary_characters() {
    let t = TestHost::with("tb", TASKS_BASIC, LONG_TASKS).await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    for key in [
        "a%b.1", "a_b.1", "axb.1", "a\\b.1", "job.1", "job.2", "job.3",
    ] {
        let id = submit(&t.host, "tb", "noop", keyed(key), &who).await;
        wait_final(&t.host, &id, &who).await;
    }
    let keys = |v: serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["task_key"].as_str().unwrap().to_owned())
            .collect()
    };
    let by_prefix = |module: &'static str, prefix: &str| {
        let (host, who) = (t.host.clone(), who.clone());
        let args = serde_json::json!({ "prefix": prefix }).to_string();
        async move {
            keys(
                action(&host, module, "by_prefix", &args, &who)
                    .await
                    .unwrap(),
            )
        }
    };
    assert_eq!(by_prefix("tb", "a%").await, ["a%b.1"]);
    assert_eq!(by_prefix("tb", "a_").await, ["a_b.1"]);
    assert_eq!(by_prefix("tb", "a\\").await, ["a\\b.1"]);
    assert_eq!(by_prefix("tb", "job.").await, ["job.3", "job.2", "job.1"]);
    let exact = action(&t.host, "tb", "by_key", r#"{"key":"job.2"}"#, &who)
        .await
        .unwrap();
    assert_eq!(keys(exact), ["job.2"]);
    // Another module with the same keys sees none of them.
    let other = ModuleDir::new("other", TASKS_BASIC, "");
    t.host.load_module(other.path(), false).await.unwrap();
    assert_eq!(by_prefix("other", "job.").await, Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_label_and_checkpoint_are_persisted_and_announced() {
    let t = TestHost::with("tb", TASKS_BASIC, LONG_TASKS).await;
    t.host.start_tasks().await.unwrap();
    let mut events = t.host.tasks().subscribe();
    let who = principal("alice", "acme");
    let id = submit(&t.host, "tb", "progress", SubmitOptions::default(), &who).await;
    let row = wait_final(&t.host, &id, &who).await;
    assert_eq!(row.status, Status::Completed, "{row:?}");
    assert_eq!(row.progress, 1.0);
    assert_eq!(row.label.as_deref(), Some("done"));
    assert_eq!(
        json(row.checkpoint_json.as_deref().unwrap()),
        serde_json::json!({ "step": 2 })
    );
    let mut persisted = Vec::new();
    let mut statuses = Vec::new();
    let mut kinds = Vec::new();
    for p in events.try_batch(usize::MAX).unwrap() {
        if p.event.subject.task_id.as_deref() != Some(id.as_str()) {
            continue;
        }
        kinds.push(p.event.kind.name());
        match p.event.kind.clone() {
            modhost::events::EventKind::Progress {
                progress,
                persisted: true,
                ..
            } => persisted.push(progress),
            modhost::events::EventKind::Status { status, .. } => statuses.push(status),
            _ => {}
        }
    }
    assert_eq!(persisted, [0.25, 0.5, 1.0]);
    assert_eq!(statuses, ["pending", "running", "completed"]);
    assert_eq!(kinds.first(), Some(&"task-created"), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_looping_or_unknown_task_fails_with_its_reason_and_the_host_keeps_serving() {
    let mut t = TestHost::new();
    t.load("tb", TASKS_BASIC, LONG_TASKS).await;
    t.load("spin", SPIN, "[limits]\ntask-deadline-ms = 300")
        .await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let failing = submit(&t.host, "tb", "fail", SubmitOptions::default(), &who).await;
    let looping = submit(&t.host, "spin", "loop", SubmitOptions::default(), &who).await;
    let row = wait_final(&t.host, &failing, &who).await;
    assert_eq!(
        (row.status, row.failure_kind.as_deref()),
        (Status::Failed, Some("error"))
    );
    assert!(row.failure_message.unwrap().contains("boom"));
    let row = wait_final(&t.host, &looping, &who).await;
    assert_eq!(
        (row.status, row.failure_kind.as_deref()),
        (Status::Failed, Some("deadline")),
        "{row:?}"
    );
    // Bad input is refused before anything is stored.
    let bad = |task: &str, args: &str, options: SubmitOptions| {
        let host = t.host.clone();
        let (task, args) = (task.to_owned(), args.to_owned());
        let who = who.clone();
        async move {
            host.submit_task("tb", &task, &args, options, &who, RequestMeta::fresh())
                .await
                .unwrap_err()
        }
    };
    assert!(matches!(
        bad("nope", "{}", SubmitOptions::default()).await,
        SdkError::InvalidInput(_)
    ));
    assert!(matches!(
        bad("noop", "{oops", SubmitOptions::default()).await,
        SdkError::InvalidInput(_)
    ));
    assert!(matches!(
        bad("noop", "{}", keyed("")).await,
        SdkError::InvalidInput(_)
    ));
    assert!(matches!(
        bad("noop", "{}", keyed("a\u{7}b")).await,
        SdkError::InvalidInput(_)
    ));
    assert!(matches!(
        bad("noop", "{}", keyed(&"k".repeat(257))).await,
        SdkError::InvalidInput(_)
    ));
    let out = action(&t.host, "tb", "blocking", r#"{"n": 21}"#, &who)
        .await
        .unwrap();
    assert_eq!(out, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_guest_and_a_pending_task_never_starts() {
    let t = TestHost::with(
        "spin",
        SPIN,
        "[limits]\ntask-deadline-ms = 60000\n[tasks]\nmax-concurrent = 1",
    )
    .await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let running = submit(&t.host, "spin", "loop", SubmitOptions::default(), &who).await;
    wait_status(&t.host, &running, &who, Status::Running).await;
    let queued = submit(&t.host, "spin", "noop", SubmitOptions::default(), &who).await;
    t.host.tasks().cancel(&queued, &who).await.unwrap();
    t.host.tasks().cancel(&running, &who).await.unwrap();
    let r = wait_final(&t.host, &running, &who).await;
    assert_eq!(r.status, Status::Cancelled);
    let q = wait_final(&t.host, &queued, &who).await;
    assert_eq!(
        (q.status, q.attempts, q.started_at),
        (Status::Cancelled, 0, None)
    );
    // A finished task cannot be cancelled again, and others may not cancel it at all.
    assert!(matches!(
        t.host.tasks().cancel(&running, &who).await,
        Err(SdkError::InvalidInput(_))
    ));
    assert_eq!(
        t.host
            .tasks()
            .cancel(&running, &principal("bob", "acme"))
            .await,
        Err(SdkError::NotFound)
    );
    // The module's slot was released: new work runs.
    let next = submit(&t.host, "spin", "noop", SubmitOptions::default(), &who).await;
    assert_eq!(
        wait_final(&t.host, &next, &who).await.status,
        Status::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_racing_completion_ends_in_exactly_one_final_state() {
    let t = TestHost::with(
        "spin",
        SPIN,
        "[tasks]\nmax-active-per-user = 100\nmax-concurrent = 8",
    )
    .await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let ids =
        join_all((0..40).map(|_| submit(&t.host, "spin", "noop", SubmitOptions::default(), &who)))
            .await;
    let cancels = join_all(ids.iter().map(|id| t.host.tasks().cancel(id, &who))).await;
    for (id, cancelled) in ids.iter().zip(cancels) {
        let row = wait_final(&t.host, id, &who).await;
        match cancelled {
            Ok(()) => assert_eq!(
                row.status,
                Status::Cancelled,
                "cancel won, so the task must say so"
            ),
            Err(SdkError::InvalidInput(_)) => assert_eq!(row.status, Status::Completed),
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

const CONFIRM_LIMITS: &str = "[limits]\ntask-deadline-ms = 60000";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_pauses_the_task_until_its_user_answers() {
    let t = TestHost::with("confirm", CONFIRM, CONFIRM_LIMITS).await;
    t.host.start_tasks().await.unwrap();
    let alice = principal("alice", "acme");
    let id = action(&t.host, "confirm", "start", "{}", &alice)
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let row = wait_status(&t.host, &id, &alice, Status::WaitingConfirmation).await;
    let c = row.confirmation.expect("a stored confirmation");
    assert!(c.surface_json.contains("Delete 3 files?"));
    assert_eq!(row.progress, 0.5);
    let yes = ConfirmationAnswer::press("yes");
    // Another member may not answer; a button the surface lacks is refused.
    assert!(matches!(
        t.host
            .tasks()
            .answer_confirmation(&id, &yes, &principal("bob", "acme"))
            .await,
        Err(SdkError::NotFound)
    ));
    let bogus = ConfirmationAnswer::press("maybe");
    assert!(matches!(
        t.host
            .tasks()
            .answer_confirmation(&id, &bogus, &alice)
            .await,
        Err(SdkError::InvalidInput(_))
    ));
    t.host
        .tasks()
        .answer_confirmation(&id, &yes, &alice)
        .await
        .unwrap();
    let row = wait_final(&t.host, &id, &alice).await;
    assert_eq!(row.status, Status::Completed, "{row:?}");
    let result = json(row.result_json.as_deref().unwrap());
    assert_eq!(
        result["answer"],
        serde_json::json!({ "button": "yes", "by": "alice" })
    );
    assert_eq!(result["resumed"], false);
    // An admin of the organization may answer too.
    let id = action(&t.host, "confirm", "start", "{}", &alice)
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    wait_status(&t.host, &id, &alice, Status::WaitingConfirmation).await;
    t.host
        .tasks()
        .answer_confirmation(&id, &yes, &admin("root", "acme"))
        .await
        .unwrap();
    let result = json(
        wait_final(&t.host, &id, &alice)
            .await
            .result_json
            .as_deref()
            .unwrap(),
    );
    assert_eq!(result["answer"]["by"], "root");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_confirmation_times_out_with_a_typed_outcome() {
    let t = TestHost::with("confirm", CONFIRM, CONFIRM_LIMITS).await;
    t.host.start_tasks().await.unwrap();
    let alice = principal("alice", "acme");
    let id = started(&t.host, "confirm", r#"{"timeout_ms": 200}"#, &alice).await;
    let row = wait_final(&t.host, &id, &alice).await;
    assert_eq!(
        json(row.result_json.as_deref().unwrap())["answer"],
        "timed-out",
        "{row:?}"
    );
}

/// The `confirm` module on a started host whose waits keep their instance
/// for `grace`, at most `held` of them, in a pool of `instances`.
async fn confirm_waits(grace: Duration, held: u32, instances: u32) -> TestHost {
    let mut t = TestHost::with_options(|o| {
        o.waiting_grace = grace;
        o.max_waiting_instances = held;
        o.engine.max_instances = instances;
    });
    t.load("confirm", CONFIRM, CONFIRM_LIMITS).await;
    t.host.start_tasks().await.unwrap();
    t
}

/// Polls (at most 30 s) until task `id` waits for a confirmation with no
/// host holding it: parked.
async fn wait_parked(host: &Host, id: &str, who: &Principal) -> modhost::tasks::store::TaskRow {
    for _ in 0..3000 {
        let row = host.tasks().get(id, who).await.unwrap();
        if row.status == Status::WaitingConfirmation && row.host.is_none() {
            return row;
        }
        assert!(row.status.is_active(), "task {id} ended: {row:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("task {id} never parked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_tasks_waiting_past_the_grace_give_up_their_instances_and_the_answer_runs_them_again()
 {
    // Twelve waits on a pool of four instances: only waits without an
    // instance fit, and the action starting the next one still finds one.
    // (A task still inside its grace holds its instance: an action then
    // meets a module at its share and is refused, so each is started
    // once the one before has parked.)
    let t = confirm_waits(Duration::from_millis(100), 256, 4).await;
    let alice = principal("alice", "acme");
    let mut ids = Vec::new();
    for _ in 0..12 {
        let id = started(&t.host, "confirm", "{}", &alice).await;
        let row = wait_parked(&t.host, &id, &alice).await;
        assert_eq!(row.progress, 0.5, "its checkpoint is stored: {row:?}");
        assert_eq!(row.attempts, 1);
        ids.push(id);
    }
    let yes = ConfirmationAnswer::press("yes");
    for id in &ids {
        t.host
            .tasks()
            .answer_confirmation(id, &yes, &alice)
            .await
            .unwrap();
    }
    for id in &ids {
        let row = wait_final(&t.host, id, &alice).await;
        assert_eq!(row.status, Status::Completed, "{row:?}");
        let result = json(row.result_json.as_deref().unwrap());
        assert_eq!(
            result["answer"],
            serde_json::json!({ "button": "yes", "by": "alice" })
        );
        assert_eq!(result["resumed"], true, "run again from its checkpoint");
        assert_eq!(row.attempts, 2);
        let c = row.confirmation.expect("the question is kept");
        assert!(c.consumed, "the answer was delivered once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_question_that_expires_runs_the_task_again_with_the_timeout() {
    let t = confirm_waits(Duration::from_millis(50), 256, 1000).await;
    let alice = principal("alice", "acme");
    let id = started(&t.host, "confirm", r#"{"timeout_ms": 1500}"#, &alice).await;
    wait_parked(&t.host, &id, &alice).await;
    let row = wait_final(&t.host, &id, &alice).await;
    let result = json(row.result_json.as_deref().unwrap());
    assert_eq!(result["answer"], "timed-out", "{row:?}");
    assert_eq!(result["resumed"], true);
    let late = t
        .host
        .tasks()
        .answer_confirmation(&id, &ConfirmationAnswer::press("yes"), &alice)
        .await;
    assert!(matches!(late, Err(SdkError::InvalidInput(_))), "{late:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_hold_instances_only_within_the_cap() {
    let t = confirm_waits(Duration::from_secs(600), 1, 1000).await;
    let alice = principal("alice", "acme");
    let held = started(&t.host, "confirm", r#"{"not_resumable": true}"#, &alice).await;
    let row = wait_status(&t.host, &held, &alice, Status::WaitingConfirmation).await;
    assert!(
        row.host.is_some(),
        "it keeps its instance and lease: {row:?}"
    );
    // The cap is taken: a task that is not resumable may not wait, and a
    // resumable one waits without an instance at once.
    let refused = started(&t.host, "confirm", r#"{"not_resumable": true}"#, &alice).await;
    let row = wait_final(&t.host, &refused, &alice).await;
    assert_eq!(row.status, Status::Failed, "{row:?}");
    let message = row.failure_message.unwrap_or_default();
    assert!(
        message.contains("at most 1 tasks may wait for a confirmation"),
        "{message}"
    );
    let parked = started(&t.host, "confirm", "{}", &alice).await;
    wait_parked(&t.host, &parked, &alice).await;
    let yes = ConfirmationAnswer::press("yes");
    for id in [&held, &parked] {
        t.host
            .tasks()
            .answer_confirmation(id, &yes, &alice)
            .await
            .unwrap();
    }
    let held = wait_final(&t.host, &held, &alice).await;
    let result = json(held.result_json.as_deref().unwrap());
    assert_eq!(
        (result["resumed"].clone(), held.attempts),
        (false.into(), 1)
    );
    let parked = wait_final(&t.host, &parked, &alice).await;
    let result = json(parked.result_json.as_deref().unwrap());
    assert_eq!(
        (result["resumed"].clone(), parked.attempts),
        (true.into(), 2)
    );
}

/// The id of the task `module`'s `start` action started with `args`.
async fn started(host: &Host, module: &str, args: &str, who: &Principal) -> String {
    action(host, module, "start", args, who).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The `confirm` module on a host whose task store fails as told.
async fn confirm_on_faulty_store() -> (TestHost, Arc<modhost_tests::faults::FaultyStore>) {
    let state = tempfile::tempdir().unwrap();
    let (host, faults) = modhost_tests::faults::faulty_host(state.path());
    let mut t = TestHost {
        host: Arc::new(host),
        state,
        modules: Vec::new(),
    };
    t.load("confirm", CONFIRM, CONFIRM_LIMITS).await;
    t.host.start_tasks().await.unwrap();
    (t, faults)
}

/// Starts the `confirm` task asking once more if asking fails, answers
/// "yes" once it waits, and returns its result. A question taken down
/// between the read that saw it and the answer (as one whose commit may
/// have failed is) is answered again once it is asked again.
async fn answered_once_asked(t: &TestHost) -> serde_json::Value {
    let alice = principal("alice", "acme");
    let id = started(&t.host, "confirm", r#"{"retry_ask": true}"#, &alice).await;
    let yes = ConfirmationAnswer::press("yes");
    for attempt in 1.. {
        // Polled by hand: a fault armed for the host's next read may meet
        // this poll's read instead, which is then read again.
        for _ in 0..3000 {
            match t.host.tasks().get(&id, &alice).await {
                Ok(row) if row.status == Status::WaitingConfirmation => break,
                Ok(row) => assert!(row.status.is_active(), "{row:?}"),
                Err(SdkError::Internal(_)) => {}
                Err(e) => panic!("reading the task: {e:?}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        match t.host.tasks().answer_confirmation(&id, &yes, &alice).await {
            Ok(()) => break,
            Err(SdkError::InvalidInput(_)) if attempt < 3 => continue,
            Err(e) => panic!("answering failed: {e:?}"),
        }
    }
    let row = wait_final(&t.host, &id, &alice).await;
    assert_eq!(row.status, Status::Completed, "{row:?}");
    json(row.result_json.as_deref().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_whose_closing_fails_for_a_while_still_resumes_its_task_with_the_answer() {
    use modhost_tests::faults::Fault;
    let (t, faults) = confirm_on_faulty_store().await;
    faults.inject("close_confirmation", Fault::Fails, 2);
    let result = answered_once_asked(&t).await;
    assert_eq!(faults.pending("close_confirmation"), 0);
    assert_eq!(result["answer"]["button"], "yes");
    assert_eq!(result["first_ask_failed"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_asked_in_a_commit_that_may_have_failed_is_taken_down_so_it_can_be_asked_again()
{
    use modhost_tests::faults::Fault;
    let (t, faults) = confirm_on_faulty_store().await;
    // The question is stored, and the host told its commit may have
    // failed: the guest hears of the failure only once the task runs again,
    // so its second question waits for the answer.
    faults.inject("ask_confirmation", Fault::Uncertain, 1);
    let result = answered_once_asked(&t).await;
    assert_eq!(result["first_ask_failed"], true);
    assert_eq!(result["answer"]["button"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_failing_right_after_a_question_is_asked_does_not_fail_the_question() {
    use modhost_tests::faults::Fault;
    let (t, faults) = confirm_on_faulty_store().await;
    faults.inject_after("ask_confirmation", "get_unscoped", Fault::Fails, 1);
    let result = answered_once_asked(&t).await;
    assert_eq!(faults.pending("get_unscoped"), 0);
    assert_eq!(result["first_ask_failed"], false);
    assert_eq!(result["answer"]["button"], "yes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmation_outside_a_background_task_is_invalid_input() {
    let t = TestHost::with("confirm", CONFIRM, CONFIRM_LIMITS).await;
    let err = action(
        &t.host,
        "confirm",
        "ask_here",
        "{}",
        &principal("alice", "acme"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Guest {
                error: SdkError::InvalidInput(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_are_the_callers_own_unless_the_manifest_grants_the_organization() {
    let mut t = TestHost::new();
    t.load("own", TASKS_BASIC, "").await;
    t.load("org", TASKS_BASIC, "[tasks]\nread = \"organization\"")
        .await;
    t.host.start_tasks().await.unwrap();
    let (alice, bob) = (principal("alice", "acme"), principal("bob", "acme"));
    let mut ids = Vec::new();
    for m in ["own", "org"] {
        let id = submit(&t.host, m, "noop", SubmitOptions::default(), &alice).await;
        wait_final(&t.host, &id, &alice).await;
        ids.push(id);
    }
    // Another user's task, its args and result, is not-found without the grant.
    let view = |m: &'static str, id: String| {
        let host = t.host.clone();
        let bob = bob.clone();
        async move { action(&host, m, "view", &format!(r#"{{"id":"{id}"}}"#), &bob).await }
    };
    assert_eq!(
        view("own", ids[0].clone()).await.unwrap_err(),
        CallError::Guest {
            module: "own".into(),
            error: SdkError::NotFound
        }
    );
    assert_eq!(
        view("org", ids[1].clone()).await.unwrap()["summary"]["user_id"],
        "alice"
    );
    let seen = |m: &'static str| {
        let host = t.host.clone();
        let bob = bob.clone();
        async move {
            action(&host, m, "list_of", r#"{"user":"alice"}"#, &bob)
                .await
                .unwrap()
                .as_array()
                .unwrap()
                .len()
        }
    };
    assert_eq!(seen("own").await, 0);
    assert_eq!(seen("org").await, 1);
    let mine = action(&t.host, "own", "list_mine", "{}", &alice)
        .await
        .unwrap();
    assert_eq!(mine.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_model_pages_stay_stable_while_new_tasks_arrive() {
    let t = TestHost::with("tb", TASKS_BASIC, LONG_TASKS).await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(submit(&t.host, "tb", "noop", keyed(&format!("page.{i}")), &who).await);
    }
    let first = action(&t.host, "tb", "list", r#"{"limit": 3}"#, &who)
        .await
        .unwrap();
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    // New tasks arrive between pages.
    for i in 7..10 {
        submit(&t.host, "tb", "noop", keyed(&format!("page.{i}")), &who).await;
    }
    let second = action(
        &t.host,
        "tb",
        "list",
        &serde_json::json!({ "limit": 3, "cursor": cursor }).to_string(),
        &who,
    )
    .await
    .unwrap();
    let got: Vec<&str> = first["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["tasks"].as_array().unwrap())
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let want: Vec<&str> = ids.iter().rev().take(6).map(String::as_str).collect();
    assert_eq!(got, want);
    let err = action(&t.host, "tb", "list", r#"{"cursor": "garbage"}"#, &who)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            CallError::Guest {
                error: SdkError::InvalidInput(_),
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_tasks_past_the_per_user_quota_are_refused_with_limit_exceeded() {
    let t = TestHost::with(
        "spin",
        SPIN,
        "[limits]\ntask-deadline-ms = 60000\n[tasks]\nmax-active-per-user = 2",
    )
    .await;
    t.host.start_tasks().await.unwrap();
    let (alice, bob) = (principal("alice", "acme"), principal("bob", "acme"));
    let a = submit(&t.host, "spin", "loop", SubmitOptions::default(), &alice).await;
    let b = submit(&t.host, "spin", "loop", SubmitOptions::default(), &alice).await;
    let err = t
        .host
        .submit_task(
            "spin",
            "loop",
            "{}",
            SubmitOptions::default(),
            &alice,
            RequestMeta::fresh(),
        )
        .await;
    assert!(matches!(err, Err(SdkError::LimitExceeded(_))), "{err:?}");
    // Another user has a quota of their own; a finished task frees a place.
    let c = submit(&t.host, "spin", "loop", SubmitOptions::default(), &bob).await;
    t.host.tasks().cancel(&a, &alice).await.unwrap();
    let d = submit(&t.host, "spin", "loop", SubmitOptions::default(), &alice).await;
    for (id, who) in [(&b, &alice), (&c, &bob), (&d, &alice)] {
        t.host.tasks().cancel(id, who).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_organization_at_its_quotas_does_not_stop_another() {
    let mut t = TestHost::with_options(|o| o.max_active_tasks_per_org = 3);
    let grant = "[limits]\ntask-deadline-ms = 60000\n\
                 [tasks]\nmax-active-per-user = 2\nmax-active-per-module = 2";
    t.load("first", SPIN, grant).await;
    t.load("second", SPIN, grant).await;
    let (alice, bob) = (principal("alice", "acme"), principal("bob", "acme"));
    let carol = principal("carol", "globex");
    let try_submit = |module: &'static str, who: &Principal| {
        let (host, who) = (t.host.clone(), who.clone());
        async move {
            host.submit_task(
                module,
                "sleep",
                "{}",
                SubmitOptions::default(),
                &who,
                RequestMeta::fresh(),
            )
            .await
            .map(|id| (id, who))
        }
    };
    let mut active = Vec::new();
    active.push(try_submit("first", &alice).await.unwrap());
    active.push(try_submit("first", &bob).await.unwrap());
    // acme holds `first`'s quota in acme, whichever of its users asks ...
    let refused = try_submit("first", &alice).await;
    assert!(
        matches!(&refused, Err(SdkError::LimitExceeded(m)) if m.contains("max-active-per-module")),
        "{refused:?}"
    );
    // ... and globex still has all of its own.
    active.push(try_submit("first", &carol).await.unwrap());
    active.push(try_submit("first", &carol).await.unwrap());
    // The host's cap counts acme's tasks over every module.
    active.push(try_submit("second", &alice).await.unwrap());
    let refused = try_submit("second", &bob).await;
    assert!(
        matches!(&refused, Err(SdkError::LimitExceeded(m)) if m.contains("max-active-tasks-per-org")),
        "{refused:?}"
    );
    active.push(try_submit("second", &carol).await.unwrap());
    for (id, who) in &active {
        t.host.tasks().cancel(id, who).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_call_stops_at_the_deadline_of_the_action_that_made_it() {
    let mut t = TestHost::with_options(|o| o.blocking_threads = 1);
    t.load(
        "tb",
        TASKS_BASIC,
        "[limits]\ncall-deadline-ms = 500\nblocking-deadline-ms = 600000",
    )
    .await;
    let who = principal("alice", "acme");
    let start = std::time::Instant::now();
    let stopped = t
        .host
        .call_action("tb", "blocking_sleep", "{}", &who, RequestMeta::fresh())
        .await;
    assert!(stopped.is_err(), "{stopped:?}");
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the blocking call outlived its caller's deadline: {:?}",
        start.elapsed()
    );
    // Its one pool thread is free again.
    let out = t
        .host
        .call_blocking("tb", "double", "21", &who, RequestMeta::fresh())
        .await
        .unwrap();
    assert_eq!(out, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_call_stops_when_the_task_that_made_it_is_cancelled() {
    let mut t = TestHost::with_options(|o| o.blocking_threads = 1);
    t.load("tb", TASKS_BASIC, "[limits]\nblocking-deadline-ms = 600000")
        .await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let id = t
        .host
        .submit_task(
            "tb",
            "blocking_sleep",
            "{}",
            SubmitOptions::default(),
            &who,
            RequestMeta::fresh(),
        )
        .await
        .unwrap();
    // The task says so just before it makes the call.
    for _ in 0..3000 {
        let row = t.host.tasks().get(&id, &who).await.unwrap();
        if row.label.as_deref() == Some("calling") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    t.host.tasks().cancel(&id, &who).await.unwrap();
    let row = wait_final(&t.host, &id, &who).await;
    assert_eq!(row.status, Status::Cancelled);
    // The stopped call gives its pool thread back soon after, not after
    // its own deadline of ten minutes.
    let start = std::time::Instant::now();
    let out = loop {
        match t
            .host
            .call_blocking("tb", "double", "21", &who, RequestMeta::fresh())
            .await
        {
            Err(SdkError::LimitExceeded(_)) if start.elapsed() < Duration::from_secs(20) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            done => break done.unwrap(),
        }
    };
    assert_eq!(out, "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_blocking_pool_gives_limit_exceeded_instead_of_a_hang() {
    let mut t = TestHost::with_options(|o| o.blocking_threads = 1);
    t.load("spin", SPIN, "[limits]\nblocking-deadline-ms = 3000")
        .await;
    let who = principal("alice", "acme");
    let busy = tokio::spawn({
        let host = t.host.clone();
        let who = who.clone();
        async move {
            host.call_blocking("spin", "loop", "{}", &who, RequestMeta::fresh())
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = t
        .host
        .call_blocking("spin", "loop", "{}", &who, RequestMeta::fresh())
        .await;
    assert!(
        matches!(&refused, Err(SdkError::LimitExceeded(m)) if m.contains("blocking pool")),
        "{refused:?}"
    );
    // The looping call is stopped by its own deadline, and frees the thread.
    let stopped = busy.await.unwrap();
    assert!(
        matches!(&stopped, Err(SdkError::LimitExceeded(m)) if m.contains("deadline")),
        "{stopped:?}"
    );
    let err = t
        .host
        .call_blocking("spin", "nope", "{}", &who, RequestMeta::fresh())
        .await
        .unwrap_err();
    assert!(matches!(err, SdkError::InvalidInput(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_module_cannot_starve_another_modules_tasks() {
    let mut t = TestHost::with_options(|o| o.max_running_tasks = 1);
    t.load(
        "busy",
        SPIN,
        "[limits]\ntask-deadline-ms = 100\n[tasks]\nmax-active-per-user = 100",
    )
    .await;
    t.load("quiet", SPIN, "").await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let busy =
        join_all((0..20).map(|_| submit(&t.host, "busy", "loop", SubmitOptions::default(), &who)))
            .await;
    let quiet = submit(&t.host, "quiet", "noop", SubmitOptions::default(), &who).await;
    let row = wait_final(&t.host, &quiet, &who).await;
    assert_eq!(row.status, Status::Completed);
    // Each busy task holds the only slot for 100 ms; round robin let the quiet
    // module in long before the busy queue drained.
    let mut still_queued = 0;
    for id in &busy {
        if t.host.tasks().get(id, &who).await.unwrap().status == Status::Pending {
            still_queued += 1;
        }
    }
    assert!(
        still_queued >= 10,
        "only {still_queued} busy tasks were still queued"
    );
    for id in &busy {
        let _ = t.host.tasks().cancel(id, &who).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_finds_no_free_instance_waits_instead_of_failing() {
    let mut t = TestHost::with_options(|o| o.engine.max_instances = 1);
    t.load("spin", SPIN, "[limits]\ncall-deadline-ms = 1500")
        .await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    // A looping action holds the only instance slot until its deadline.
    let looping = spawn_action(&t.host, "spin", "loop", "{}", &who);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let id = submit(&t.host, "spin", "noop", SubmitOptions::default(), &who).await;
    let row = wait_final(&t.host, &id, &who).await;
    assert_eq!(
        (row.status, row.attempts),
        (Status::Completed, 1),
        "{row:?}"
    );
    assert!(matches!(
        looping.await.unwrap(),
        Err(CallError::Deadline { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_for_its_user_gives_its_running_slot_to_the_next_one() {
    let t = TestHost::with(
        "confirm",
        CONFIRM,
        "[limits]\ntask-deadline-ms = 60000\n[tasks]\nmax-concurrent = 1",
    )
    .await;
    t.host.start_tasks().await.unwrap();
    let alice = principal("alice", "acme");
    let start = || {
        let host = t.host.clone();
        let alice = alice.clone();
        async move {
            let out = action(&host, "confirm", "start", "{}", &alice)
                .await
                .unwrap();
            out["id"].as_str().unwrap().to_owned()
        }
    };
    let (first, second) = (start().await, start().await);
    // With one slot, the second could only start because the first parked.
    wait_status(&t.host, &first, &alice, Status::WaitingConfirmation).await;
    wait_status(&t.host, &second, &alice, Status::WaitingConfirmation).await;
    let yes = ConfirmationAnswer::press("yes");
    for id in [&first, &second] {
        t.host
            .tasks()
            .answer_confirmation(id, &yes, &alice)
            .await
            .unwrap();
        assert_eq!(
            wait_final(&t.host, id, &alice).await.status,
            Status::Completed
        );
    }
}

/// Longer than any of these tests may take, far shorter than the guest's
/// hour-long sleep: a call still waiting after this was never stopped.
const STOPPED_WITHIN: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_task_waiting_in_a_host_call_gives_its_running_slot_back_at_once() {
    let t = TestHost::with(
        "spin",
        SPIN,
        "[limits]\ntask-deadline-ms = 600000\n[tasks]\nmax-concurrent = 1",
    )
    .await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let sleeper = submit(&t.host, "spin", "sleep", SubmitOptions::default(), &who).await;
    wait_status(&t.host, &sleeper, &who, Status::Running).await;
    let next = submit(&t.host, "spin", "noop", SubmitOptions::default(), &who).await;
    t.host.tasks().cancel(&sleeper, &who).await.unwrap();
    let row = tokio::time::timeout(STOPPED_WITHIN, t.host.tasks().wait(&next, &who))
        .await
        .expect("the cancelled sleeper kept the module's only slot")
        .unwrap();
    assert_eq!(row.status, Status::Completed);
    assert_eq!(
        t.host.tasks().get(&sleeper, &who).await.unwrap().status,
        Status::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_waiting_in_a_host_call_past_its_deadline_fails_and_frees_its_slot() {
    let t = TestHost::with(
        "spin",
        SPIN,
        "[limits]\ntask-deadline-ms = 300\n[tasks]\nmax-concurrent = 1",
    )
    .await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let sleeper = submit(&t.host, "spin", "sleep", SubmitOptions::default(), &who).await;
    let next = submit(&t.host, "spin", "noop", SubmitOptions::default(), &who).await;
    let row = tokio::time::timeout(STOPPED_WITHIN, t.host.tasks().wait(&sleeper, &who))
        .await
        .expect("the sleeping task was never stopped")
        .unwrap();
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.failure_kind.as_deref(), Some("deadline"));
    let next = tokio::time::timeout(STOPPED_WITHIN, t.host.tasks().wait(&next, &who))
        .await
        .expect("the next task never ran")
        .unwrap();
    assert_eq!(next.status, Status::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_call_waiting_in_a_host_call_frees_its_pool_thread_at_its_deadline() {
    let mut t = TestHost::with_options(|o| o.blocking_threads = 1);
    t.load("spin", SPIN, "[limits]\nblocking-deadline-ms = 300")
        .await;
    let who = principal("alice", "acme");
    let call = t
        .host
        .call_blocking("spin", "sleep", "{}", &who, RequestMeta::fresh());
    let stopped = tokio::time::timeout(STOPPED_WITHIN, call)
        .await
        .expect("the sleeping blocking call was never stopped");
    assert!(
        matches!(&stopped, Err(SdkError::LimitExceeded(m)) if m.contains("deadline")),
        "{stopped:?}"
    );
    // The pool's only thread is free again.
    let again = t
        .host
        .call_blocking("spin", "sleep", "{}", &who, RequestMeta::fresh());
    let again = tokio::time::timeout(STOPPED_WITHIN, again).await.unwrap();
    assert!(
        matches!(&again, Err(SdkError::LimitExceeded(m)) if m.contains("deadline")),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_read_own_key_lookups_dedup_and_progress_never_reach_another_users_task() {
    let t = TestHost::with(
        "tb",
        TASKS_BASIC,
        "[limits]\ntask-deadline-ms = 600000\n[tasks]\nmax-concurrent = 8",
    )
    .await;
    t.host.start_tasks().await.unwrap();
    let (bob, alice) = (principal("bob", "acme"), principal("alice", "acme"));
    // Bob's task holds its key while it runs.
    let bobs = t
        .host
        .submit_task(
            "tb",
            "sleep",
            "{}",
            keyed("probe.1"),
            &bob,
            RequestMeta::fresh(),
        )
        .await
        .unwrap();
    wait_status(&t.host, &bobs, &bob, Status::Running).await;
    let ids = |v: serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_owned())
            .collect()
    };
    for (act, args) in [
        ("by_key", r#"{"key":"probe.1"}"#),
        ("by_prefix", r#"{"prefix":"probe."}"#),
        ("by_prefix", r#"{"prefix":""}"#),
    ] {
        let seen = ids(action(&t.host, "tb", act, args, &alice).await.unwrap());
        assert!(!seen.contains(&bobs), "{act} {args} showed bob's task");
        let own = ids(action(&t.host, "tb", act, args, &bob).await.unwrap());
        assert!(own.contains(&bobs), "{act} {args} hid bob's task from bob");
    }
    let taken = t
        .host
        .submit_task(
            "tb",
            "noop",
            "{}",
            keyed("probe.1"),
            &alice,
            RequestMeta::fresh(),
        )
        .await;
    assert!(
        matches!(&taken, Err(SdkError::InvalidInput(m)) if m.contains("another user")),
        "{taken:?}"
    );
    let err = action(
        &t.host,
        "tb",
        "progress_of",
        &format!(r#"{{"id":"{bobs}"}}"#),
        &alice,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        CallError::Guest {
            module: "tb".into(),
            error: SdkError::NotFound
        }
    );
    let _ = t.host.tasks().cancel(&bobs, &bob).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_module_holds_at_most_half_the_blocking_pool_and_the_instances() {
    let mut t = TestHost::with_options(|o| {
        o.blocking_threads = 2;
        o.engine.max_instances = 4;
    });
    let slow = "[limits]\ncall-deadline-ms = 20000\nblocking-deadline-ms = 500";
    t.load("busy", SPIN, slow).await;
    t.load("quiet", SPIN, "").await;
    let who = principal("alice", "acme");
    // Blocking pool: `busy` gets one of the two threads, not both.
    let sleeping = tokio::spawn({
        let (host, who) = (t.host.clone(), who.clone());
        async move {
            host.call_blocking("busy", "sleep", "{}", &who, RequestMeta::fresh())
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = t
        .host
        .call_blocking("busy", "sleep", "{}", &who, RequestMeta::fresh())
        .await;
    assert!(
        matches!(&refused, Err(SdkError::LimitExceeded(m)) if m.contains("its share of the blocking pool")),
        "{refused:?}"
    );
    let other = t
        .host
        .call_blocking("quiet", "nope", "{}", &who, RequestMeta::fresh())
        .await;
    assert!(matches!(other, Err(SdkError::InvalidInput(_))), "{other:?}");
    // Its deadline ends the sleep and gives the thread and instance back.
    let stopped = tokio::time::timeout(STOPPED_WITHIN, sleeping)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(stopped, Err(SdkError::LimitExceeded(_))),
        "{stopped:?}"
    );

    // Instances: two sleeping actions are `busy`'s share of the four.
    let holders: Vec<_> = (0..2)
        .map(|_| spawn_action(&t.host, "busy", "sleep", "{}", &who))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let err = t
        .host
        .call_action("busy", "ok", "{}", &who, RequestMeta::fresh())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Busy(m) if m.contains("its share of instances")),
        "{err:?}"
    );
    let ok = t
        .host
        .call_action("quiet", "ok", "{}", &who, RequestMeta::fresh())
        .await
        .unwrap();
    assert_eq!(ok.data.unwrap()["ok"], true);
    for h in holders {
        h.abort();
    }
}
