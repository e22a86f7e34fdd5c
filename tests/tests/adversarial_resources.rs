//! One module's abuse stays its own: loops and sleeps in host calls are
//! stopped at their deadline while another module answers, memory growth
//! past the manifest's limit is `limit-exceeded` and the host's memory
//! comes back, oversize arguments are `invalid-input` one byte past each
//! limit (and accepted at it), and a burst of tens of thousands of keyed
//! tasks stays within the active caps while key lookups stay exact.
//!
//! Already tried elsewhere, and not repeated here:
//! - `programs.rs`: `infinite_loop_is_stopped_by_the_deadline_and_the_next_call_succeeds`
//!   (an action's loop and sleep, then the same module answers),
//!   `a_looping_call_does_not_hold_up_other_calls`,
//!   `growing_memory_past_the_limit_gives_limit_exceeded`,
//!   `memory_within_the_limit_is_granted`;
//! - `tasks.rs`: a looping task failing with `deadline`
//!   (`a_failing_looping_or_unknown_task_fails_with_its_reason_and_the_host_keeps_serving`,
//!   which also refuses a 257-byte key given to `Host::submit_task`),
//!   `a_task_waiting_in_a_host_call_past_its_deadline_fails_and_frees_its_slot`,
//!   `a_blocking_call_waiting_in_a_host_call_frees_its_pool_thread_at_its_deadline`,
//!   `a_full_blocking_pool_gives_limit_exceeded_instead_of_a_hang`,
//!   `one_module_holds_at_most_half_the_blocking_pool_and_the_instances`,
//!   `a_busy_module_cannot_starve_another_modules_tasks`,
//!   `active_tasks_past_the_per_user_quota_are_refused_with_limit_exceeded`
//!   (two tasks);
//! - `subprocess.rs`: `gigabyte_of_output_is_truncated_and_host_memory_stays_bounded`,
//!   `spawn_storm_gets_limit_exceeded_beyond_the_module_cap`;
//! - `http.rs`: a request body over `MAX_ARGS_BYTES` is 413.
//!
//! The tests here measure time and the process's memory, so they run one
//! at a time.

use std::time::{Duration, Instant};

use futures::future::join_all;
use modhost::identity::{Principal, RequestMeta};
use modhost::tasks::SubmitOptions;
use modhost::tasks::policy::{
    MAX_ARGS_BYTES, MAX_CHECKPOINT_BYTES, MAX_LABEL_BYTES, MAX_TASK_KEY_BYTES, MAX_TITLE_BYTES,
};
use modhost::tasks::store::Status;
use modhost::{CallError, SdkError};
use modhost_tests::*;
use serde_json::{Value, json};

/// Serialises the tests of this file: each measures time or the RSS of the
/// whole process. Each test has a runtime of its own; tokio's mutex wakes
/// a waiter on any of them.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024
}

async fn action(
    host: &modhost::Host,
    module: &str,
    name: &str,
    args: &str,
    who: &Principal,
) -> Result<Value, CallError> {
    host.call_action(module, name, args, who, RequestMeta::fresh())
        .await
        .map(|o| o.data.unwrap_or(Value::Null))
}

// ------------------------------------------------------------ deadlines

/// The abuser's deadline for every kind of call.
const DEADLINE: Duration = Duration::from_millis(800);

/// The children's SIGTERM grace here; only a call with a child running is
/// given it (and `STOP_MARGIN`) past its deadline.
const KILL_GRACE: Duration = Duration::from_millis(300);

/// How late after its deadline a stopped call may end: no child runs in
/// these calls, so at once, give or take a second for a busy machine.
fn stop_slack() -> Duration {
    Duration::from_secs(1)
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Action,
    Blocking,
    Task,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_call_looping_or_sleeping_is_stopped_at_its_deadline_while_another_module_answers()
 {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut t = TestHost::with_options(|o| o.subprocess.kill_grace = KILL_GRACE);
    let ms = DEADLINE.as_millis();
    t.load(
        "abuser",
        SPIN,
        &format!(
            "[limits]\ncall-deadline-ms = {ms}\ntask-deadline-ms = {ms}\nblocking-deadline-ms = {ms}"
        ),
    )
    .await;
    t.load("bystander", HOG, "").await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    for (kind, entry) in [
        (Kind::Action, "loop"),
        (Kind::Action, "sleep"),
        (Kind::Blocking, "loop"),
        (Kind::Blocking, "sleep"),
        (Kind::Task, "loop"),
        (Kind::Task, "sleep"),
    ] {
        let started = Instant::now();
        let abuse = {
            let (host, who) = (t.host.clone(), who.clone());
            tokio::spawn(async move {
                match kind {
                    Kind::Action => action(&host, "abuser", entry, "{}", &who)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_sdk()),
                    Kind::Blocking => host
                        .call_blocking("abuser", entry, "{}", &who, RequestMeta::fresh())
                        .await
                        .map(|_| ()),
                    Kind::Task => {
                        let id = host
                            .submit_task(
                                "abuser",
                                entry,
                                "{}",
                                SubmitOptions::default(),
                                &who,
                                RequestMeta::fresh(),
                            )
                            .await?;
                        let row = wait_final(&host, &id, &who).await;
                        match (row.status, row.failure_kind.as_deref()) {
                            (Status::Failed, Some("deadline")) => {
                                Err(SdkError::LimitExceeded("deadline".into()))
                            }
                            _ => Err(SdkError::Internal(format!("{row:?}"))),
                        }
                    }
                }
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Another module answers at once while the abuse goes on.
        let asked = Instant::now();
        let answer = action(&t.host, "bystander", "ok", "{}", &who).await;
        let waited = asked.elapsed();
        assert_eq!(answer, Ok(json!({ "ok": true })), "{kind:?} {entry}");
        assert!(
            !abuse.is_finished(),
            "{kind:?} {entry} ended before the bystander answered"
        );
        assert!(
            waited < Duration::from_millis(500),
            "{kind:?} {entry}: the bystander waited {waited:?}"
        );
        let stopped = abuse.await.unwrap();
        let took = started.elapsed();
        assert!(
            matches!(&stopped, Err(SdkError::LimitExceeded(m)) if m.contains("deadline")),
            "{kind:?} {entry}: {stopped:?}"
        );
        assert!(
            took >= DEADLINE && took < DEADLINE + stop_slack(),
            "{kind:?} {entry} was stopped after {took:?}"
        );
    }
    // The abuser itself answers again.
    assert_eq!(
        action(&t.host, "abuser", "ok", "{}", &who).await,
        Ok(json!({ "ok": true }))
    );
}

// --------------------------------------------------------------- memory

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_growth_past_the_limit_is_limit_exceeded_and_the_host_gets_its_memory_back() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let mut t = TestHost::new();
    t.load("hog16", HOG, "[limits]\nmemory-mib = 16").await;
    t.load("hog64", HOG, "[limits]\nmemory-mib = 64").await;
    t.load("bystander", HOG, "").await;
    let who = principal("alice", "acme");
    // Warm each up, so compiling and the first instances are not counted.
    for m in ["hog16", "hog64", "bystander"] {
        action(&t.host, m, "grow", r#"{"mib": 1}"#, &who)
            .await
            .unwrap();
    }
    let before = rss_mib();
    let limited = |module: &str, limit: u64| CallError::MemoryLimit {
        module: module.into(),
        limit_bytes: limit << 20,
    };
    // (module, MiB asked, expected); each row is tried 8 times, 4 at once.
    let rows: &[(&str, u64, Result<u64, CallError>)] = &[
        ("hog16", 17, Err(limited("hog16", 16))),
        ("hog16", 1024, Err(limited("hog16", 16))),
        ("hog64", 65, Err(limited("hog64", 64))),
        // Just under what a wasm32 `Vec` may hold.
        ("hog64", 2000, Err(limited("hog64", 64))),
        ("hog64", 48, Ok(48 << 20)),
        (
            "hog64",
            5000,
            Err(CallError::Guest {
                module: "hog64".into(),
                error: SdkError::InvalidInput("`mib` is too large".into()),
            }),
        ),
    ];
    for (module, mib, want) in rows {
        for _ in 0..2 {
            let args = json!({ "mib": mib }).to_string();
            let calls = (0..4).map(|_| action(&t.host, module, "grow", &args, &who));
            for got in join_all(calls).await {
                let got = got.map(|v| v["len"].as_u64().unwrap());
                assert_eq!(&got, want, "{module} growing {mib} MiB");
            }
        }
        assert_eq!(
            action(&t.host, "bystander", "ok", "{}", &who).await,
            Ok(json!({ "ok": true })),
            "after {module} grew {mib} MiB"
        );
    }
    // 48 calls grew up to 64 MiB each, 4 at a time; what the host keeps
    // afterwards is less than one instance's worth.
    let grown = rss_mib().saturating_sub(before);
    assert!(grown < 64, "the host's RSS grew by {grown} MiB");
}

// ------------------------------------------------------ oversize arguments

/// `n` bytes of `c`, cut to whole characters.
fn text(c: char, bytes: usize) -> String {
    std::iter::repeat_n(c, bytes / c.len_utf8()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_argument_one_byte_past_its_limit_is_invalid_input_and_at_its_limit_is_accepted() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let t = TestHost::with(
        "tb",
        TASKS_BASIC,
        "[limits]\ntask-deadline-ms = 600000\n[tasks]\nmax-active-per-user = 1000\nmax-concurrent = 2",
    )
    .await;
    t.host.start_tasks().await.unwrap();
    let who = principal("alice", "acme");
    let running = action(&t.host, "tb", "submit", r#"{"task":"sleep"}"#, &who)
        .await
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3000 {
        if t.host.tasks().get(&running, &who).await.unwrap().status == Status::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The action's own arguments, padded to exactly `n` bytes.
    let call_of = |n: usize| {
        let frame = json!({ "task": "noop", "args": "" }).to_string();
        json!({ "task": "noop", "args": "x".repeat(n - frame.len()) }).to_string()
    };
    assert_eq!(call_of(MAX_ARGS_BYTES).len(), MAX_ARGS_BYTES);
    let key = |k: String| json!({ "task": "noop", "key": k }).to_string();
    let title = |k: String| json!({ "task": "noop", "title": k }).to_string();
    let label = |l: String| json!({ "id": running, "label": l }).to_string();
    // A JSON string of `n` bytes is `n - 2` bytes between its quotes.
    let pad = |n: usize| json!({ "task": "noop", "pad": n - 2 }).to_string();
    let checkpoint = |n: usize| json!({ "id": running, "checkpoint_pad": n - 2 }).to_string();
    let prefix = |p: String| json!({ "prefix": p }).to_string();
    let lookup = |k: String| json!({ "key": k }).to_string();
    // (what, action, arguments, accepted)
    let rows: Vec<(&str, &str, String, bool)> = vec![
        ("action arguments", "submit", call_of(MAX_ARGS_BYTES), true),
        (
            "action arguments",
            "submit",
            call_of(MAX_ARGS_BYTES + 1),
            false,
        ),
        ("task arguments", "submit", pad(MAX_ARGS_BYTES), true),
        ("task arguments", "submit", pad(MAX_ARGS_BYTES + 1), false),
        ("task arguments", "submit", pad(4 * MAX_ARGS_BYTES), false),
        ("key", "submit", key(text('k', MAX_TASK_KEY_BYTES)), true),
        (
            "key",
            "submit",
            key(text('k', MAX_TASK_KEY_BYTES + 1)),
            false,
        ),
        // Limits count bytes, not characters.
        ("key", "submit", key(text('é', MAX_TASK_KEY_BYTES)), true),
        (
            "key",
            "submit",
            key(format!("{}é", text('€', MAX_TASK_KEY_BYTES - 1))),
            false,
        ),
        ("title", "submit", title(text('t', MAX_TITLE_BYTES)), true),
        (
            "title",
            "submit",
            title(text('t', MAX_TITLE_BYTES + 1)),
            false,
        ),
        (
            "label",
            "progress_of",
            label(text('l', MAX_LABEL_BYTES)),
            true,
        ),
        (
            "label",
            "progress_of",
            label(text('l', MAX_LABEL_BYTES + 1)),
            false,
        ),
        (
            "checkpoint",
            "progress_of",
            checkpoint(MAX_CHECKPOINT_BYTES),
            true,
        ),
        (
            "checkpoint",
            "progress_of",
            checkpoint(MAX_CHECKPOINT_BYTES + 1),
            false,
        ),
        (
            "key prefix",
            "by_prefix",
            prefix(text('p', MAX_TASK_KEY_BYTES)),
            true,
        ),
        (
            "key prefix",
            "by_prefix",
            prefix(text('p', MAX_TASK_KEY_BYTES + 1)),
            false,
        ),
        (
            "lookup key",
            "by_key",
            lookup(text('k', MAX_TASK_KEY_BYTES + 1)),
            false,
        ),
    ];
    for (what, act, args, accepted) in &rows {
        let got = action(&t.host, "tb", act, args, &who).await;
        let shown = format!("{what} via {act} ({} bytes of arguments)", args.len());
        if *accepted {
            assert!(got.is_ok(), "{shown}: {got:?}");
            // What was accepted at the limit was stored whole.
            let row = t.host.tasks().get(&running, &who).await.unwrap();
            match *what {
                "label" => assert_eq!(row.label.map(|l| l.len()), Some(MAX_LABEL_BYTES)),
                "checkpoint" => assert_eq!(
                    row.checkpoint_json.map(|c| c.len()),
                    Some(MAX_CHECKPOINT_BYTES)
                ),
                _ => {}
            }
            continue;
        }
        let reason = match &got {
            // Refused by the host before the module runs.
            Err(CallError::InvalidInput(m)) => m,
            // Refused by the host function the module called.
            Err(CallError::Guest {
                error: SdkError::InvalidInput(m),
                ..
            }) => m,
            other => panic!("{shown}: expected invalid input, got {other:?}"),
        };
        assert!(
            reason.contains("the limit is") || reason.contains("bytes"),
            "{shown}: {reason}"
        );
    }
    t.host.tasks().cancel(&running, &who).await.unwrap();
}

// ------------------------------------------------------------ key bursts

/// Active tasks one user may hold: the manifest's ceiling.
const PER_USER: u32 = 10_000;
/// Users who fill their place to the cap.
const FULL: [&str; 10] = [
    "alice", "bob", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory", "niaj",
];
/// What the module has left for one more user when the others are full.
const LEFT: u32 = 5_000;
/// Active tasks of the module.
const PER_MODULE: u32 = 10 * PER_USER + LEFT;

/// Submits `keys` as `who`, `CONCURRENT` at a time; the outcome of each.
async fn burst(
    host: &modhost::Host,
    who: &Principal,
    keys: impl Iterator<Item = String>,
) -> Vec<(String, Result<String, SdkError>)> {
    const CONCURRENT: usize = 256;
    let keys: Vec<String> = keys.collect();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(CONCURRENT) {
        let submits = chunk.iter().map(|k| {
            host.submit_task(
                "tb",
                "sleep",
                "{}",
                SubmitOptions {
                    task_key: Some(k.clone()),
                    ..SubmitOptions::default()
                },
                who,
                RequestMeta::fresh(),
            )
        });
        out.extend(chunk.iter().cloned().zip(join_all(submits).await));
    }
    out
}

/// Tens of thousands, not a million: every submission is a committed row
/// of the one SQLite writer, and a million of them would take about a
/// minute of the suite's two cores (and a million active tasks are twenty
/// times the per-module cap this fills); 105,000 fill a module to its cap
/// through eleven users in a few seconds, and the prefix lookups scan the
/// same index at any size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_distinct_keys_stays_within_the_active_caps_and_prefix_lookups_stay_exact() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // Each task sleeps for an hour, one at a time: every task stays active.
    // Every user is in one organization: the host's cap on an
    // organization's active tasks is raised past the module's.
    let mut t = TestHost::with_options(|o| o.max_active_tasks_per_org = 2 * PER_MODULE);
    t.load(
        "tb",
        TASKS_BASIC,
        &format!(
            "[tasks]\nmax-active-per-user = {PER_USER}\nmax-active-per-module = {PER_MODULE}\n\
             max-concurrent = 1"
        ),
    )
    .await;
    let keys = |user: &str, range: std::ops::Range<u32>| {
        let user = user.to_owned();
        range.map(move |i| format!("burst.{user}.{i:04}"))
    };
    let refused = |outcomes: &[(String, Result<String, SdkError>)], cap: &str| {
        for (key, r) in outcomes {
            assert!(
                matches!(r, Err(SdkError::LimitExceeded(m)) if m.contains(cap)),
                "{key}: {r:?}"
            );
        }
    };
    let started = Instant::now();
    let mut created = 0;
    for user in FULL {
        let who = principal(user, "acme");
        let burst_ = burst(&t.host, &who, keys(user, 0..PER_USER)).await;
        for (key, r) in &burst_ {
            assert!(r.is_ok(), "{key}: {r:?}");
        }
        created += burst_.len();
        let over = burst(&t.host, &who, keys(user, PER_USER..PER_USER + 40)).await;
        refused(&over, "max-active-per-user");
    }
    let carol = principal("carol", "acme");
    let burst_ = burst(&t.host, &carol, keys("carol", 0..LEFT)).await;
    assert!(burst_.iter().all(|(_, r)| r.is_ok()));
    created += burst_.len();
    let over = burst(&t.host, &carol, keys("carol", LEFT..LEFT + 40)).await;
    refused(&over, "max-active-per-module");
    let dave = principal("dave", "acme");
    refused(
        &burst(&t.host, &dave, keys("dave", 0..40)).await,
        "max-active-per-module",
    );
    let took = started.elapsed();
    assert_eq!(created, usize::try_from(PER_MODULE).unwrap(), "in {took:?}");
    // At her cap, Alice's active key still answers with its task.
    let alice = principal("alice", "acme");
    let again = burst(&t.host, &alice, keys("alice", 42..43)).await;
    let held = action(
        &t.host,
        "tb",
        "by_key",
        r#"{"key":"burst.alice.0042"}"#,
        &alice,
    )
    .await
    .unwrap();
    assert_eq!(held.as_array().unwrap().len(), 1, "{held}");
    assert_eq!(again[0].1.as_deref(), Ok(held[0]["id"].as_str().unwrap()));

    let found = |who: &Principal, args: Value| {
        let (host, who) = (t.host.clone(), who.clone());
        async move {
            let v = action(&host, "tb", "by_prefix", &args.to_string(), &who)
                .await
                .unwrap();
            let mut keys: Vec<String> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["task_key"].as_str().unwrap().to_owned())
                .collect();
            keys.sort();
            keys
        }
    };
    let default = usize::try_from(modhost::tasks::service::DEFAULT_LOOKUP_LIMIT).unwrap();
    let most = usize::try_from(modhost::tasks::policy::MAX_LOOKUP_LIMIT).unwrap();
    // What each user holds; a caller sees only their own (`read = "own"`).
    let held_by = |who: &Principal| -> Vec<String> {
        let user = who.user_id.as_str();
        let n = match user {
            "carol" => LEFT,
            u if FULL.contains(&u) => PER_USER,
            _ => 0,
        };
        keys(user, 0..n).collect()
    };
    let carols_last = format!("burst.carol.{:03}", LEFT / 10 - 1);
    // (who, prefix, limit)
    let cases: &[(&Principal, &str, Option<u32>)] = &[
        (&alice, "burst.alice.004", None),
        (&alice, "burst.alice.00", Some(500)),
        (&alice, "burst.alice.1", Some(500)),
        (&alice, "burst.alice.1", Some(100_000)),
        (&alice, "burst.alice.", None),
        (&alice, "burst.alice.", Some(0)),
        (&alice, "burst.alice.9999", None),
        (&alice, "burst.alice.10000", None),
        (&alice, "burst.bob.", None),
        (&alice, "burst.alice.%", None),
        (&alice, "burst_alice", None),
        (&alice, "burst.alice.00_0", None),
        (&carol, &carols_last, None),
        (&carol, "burst.carol.5", None),
    ];
    for (who, prefix, limit) in cases {
        let got = found(who, json!({ "prefix": prefix, "limit": limit })).await;
        let want: Vec<String> = held_by(who)
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .collect();
        let room = match limit {
            // The guest asks for 100 when it is given no limit.
            None => 100,
            Some(0) => default,
            Some(n) => usize::try_from(*n).unwrap().min(most),
        };
        let shown = format!("{prefix} (limit {limit:?}) as {}", who.user_id);
        if want.len() <= room {
            assert_eq!(got, want, "{shown}");
        } else {
            assert_eq!(got.len(), room, "{shown}");
            assert!(
                got.iter().all(|k| want.binary_search(k).is_ok()),
                "{shown}: {got:?}"
            );
            assert!(got.windows(2).all(|w| w[0] < w[1]), "{shown}: a key twice");
        }
    }
    let exact = |who: &Principal, key: String| {
        let (host, who) = (t.host.clone(), who.clone());
        async move {
            action(
                &host,
                "tb",
                "by_key",
                &json!({ "key": key }).to_string(),
                &who,
            )
            .await
            .unwrap()
            .as_array()
            .unwrap()
            .len()
        }
    };
    assert_eq!(
        exact(&carol, format!("burst.carol.{:04}", LEFT - 1)).await,
        1
    );
    assert_eq!(exact(&carol, format!("burst.carol.{LEFT:04}")).await, 0);
    assert_eq!(exact(&alice, format!("burst.alice.{PER_USER:04}")).await, 0);
    assert_eq!(exact(&alice, "burst.bob.0001".into()).await, 0);
}
