//! Whole-path behaviour with real guest components, one module per guest
//! program under `tests/programs/` (a missing module is a compile error).

use std::time::Duration;

use futures::future::join_all;
use modhost::CallError;
use modhost::identity::{Principal, RequestMeta};
use modhost_tests::*;

/// Names each guest's test module: a guest program without one does not compile.
macro_rules! assert_test_exists {
    ($name:ident) => {
        #[expect(unused_imports, reason = "the import exists only to name the module")]
        use self::$name as _;
    };
}
for_each_program!(assert_test_exists);

fn request(id: &str) -> RequestMeta {
    RequestMeta {
        request_id: id.to_owned(),
        session_id: Some("session-1".into()),
    }
}

mod identity {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn organizations_never_see_each_others_files_in_a_modules_data_directory() {
        let t = TestHost::with("ident", IDENTITY, "[filesystem]\ndata = true").await;
        let (acme, globex) = (principal("alice", "acme"), principal("alice", "globex"));
        let call = |action: &'static str, args: &'static str, who: &Principal| {
            let (host, who) = (t.host.clone(), who.clone());
            async move {
                host.call_action("ident", action, args, &who, RequestMeta::fresh())
                    .await
                    .unwrap()
                    .data
                    .unwrap()
            }
        };
        call("write_note", r#"{"text": "acme only"}"#, &acme).await;
        assert_eq!(
            call("read_note", "{}", &globex).await,
            serde_json::Value::Null
        );
        assert_eq!(call("read_note", "{}", &acme).await, "acme only");
        call("write_note", r#"{"text": "globex only"}"#, &globex).await;
        assert_eq!(call("read_note", "{}", &acme).await, "acme only");
        let data = t.state.path().join("data").join("ident");
        assert_eq!(
            std::fs::read_to_string(data.join("org-globex").join("note.txt")).unwrap(),
            "globex only"
        );
        assert!(
            !data.join("note.txt").exists(),
            "a file outside every organization"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_directories_declaring_one_module_name_load_nothing_and_name_both() {
        let modules = tempfile::tempdir().unwrap();
        for dir in ["aaa-squat", "probe"] {
            let m = ModuleDir::new("probe", IDENTITY, "");
            let to = modules.path().join(dir);
            std::fs::create_dir(&to).unwrap();
            for file in ["module.toml", "component.wasm"] {
                std::fs::copy(m.path().join(file), to.join(file)).unwrap();
            }
        }
        let t = TestHost::new();
        let err = t.host.load_dir(modules.path(), false).await.unwrap_err();
        let message = err.to_string();
        assert!(
            matches!(&err, modhost::LoadDirError::SameName { name, .. } if name == "probe"),
            "{err:?}"
        );
        assert!(
            message.contains("aaa-squat") && message.contains("/probe"),
            "{message}"
        );
        assert!(
            t.host.module_names().is_empty(),
            "{:?}",
            t.host.module_names()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn identity_travels_from_principal_to_context_current() {
        let t = TestHost::with("ident", IDENTITY, "").await;
        let out = t
            .host
            .call_action(
                "ident",
                "whoami",
                "{}",
                &principal("alice", "acme"),
                request("req-1"),
            )
            .await
            .unwrap();
        let data = out.data.unwrap();
        assert_eq!(data["module"], "ident");
        assert_eq!(data["user_id"], "alice");
        assert_eq!(data["organization_id"], "acme");
        assert_eq!(data["role"], "member");
        assert_eq!(data["request_id"], "req-1");
        assert_eq!(data["session_id"], "session-1");
        assert!(
            data["task"].is_null(),
            "no task outside a background run: {data}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn arguments_cannot_change_who_the_guest_acts_as() {
        let t = TestHost::with("ident", IDENTITY, "").await;
        let args = r#"{"user_id":"mallory","organization_id":"evil","module":"other"}"#;
        let out = t
            .host
            .call_action(
                "ident",
                "whoami",
                args,
                &principal("bob", "acme"),
                request("req-2"),
            )
            .await
            .unwrap();
        let data = out.data.unwrap();
        assert_eq!(data["user_id"], "bob");
        assert_eq!(data["organization_id"], "acme");
        assert_eq!(data["module"], "ident");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn each_call_sees_only_its_own_callers_identity() {
        let t = TestHost::with("ident", IDENTITY, "").await;
        let calls = (0..8).map(|i| {
            let host = t.host.clone();
            async move {
                let user = format!("user{i}");
                let out = host
                    .call_action(
                        "ident",
                        "whoami",
                        "{}",
                        &principal(&user, "acme"),
                        request(&format!("r{i}")),
                    )
                    .await
                    .unwrap();
                (user, out.data.unwrap())
            }
        });
        for (user, data) in join_all(calls).await {
            assert_eq!(data["user_id"], user.as_str());
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn guest_logging_never_fails_the_call() {
        let t = TestHost::with("ident", IDENTITY, "").await;
        let out = t
            .host
            .call_action(
                "ident",
                "log",
                "{}",
                &principal("alice", "acme"),
                RequestMeta::fresh(),
            )
            .await;
        assert!(out.is_ok(), "{out:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_action_the_module_does_not_list_is_refused_before_the_guest_runs() {
        let t = TestHost::with("ident", IDENTITY, "").await;
        let err = t
            .host
            .call_action(
                "ident",
                "nope",
                "{}",
                &principal("alice", "acme"),
                RequestMeta::fresh(),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, CallError::UnknownEntry { kind: "action", .. }),
            "{err:?}"
        );
        let err = t
            .host
            .call_action(
                "ident",
                "whoami",
                "{not json",
                &principal("alice", "acme"),
                RequestMeta::fresh(),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, CallError::InvalidInput(_)), "{err:?}");
    }
}

mod spin {
    use super::*;

    /// Longer than a stopped call may take, far shorter than the guest's
    /// hour-long sleep: a call still waiting after this was never stopped.
    const STOPPED_WITHIN: Duration = Duration::from_secs(30);

    /// `loop` runs in wasm, where the epoch callback stops it; `sleep` waits
    /// inside a host call, where only the watchdog around the call can.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn infinite_loop_is_stopped_by_the_deadline_and_the_next_call_succeeds() {
        let t = TestHost::with("spin", SPIN, "[limits]\ncall-deadline-ms = 300").await;
        let who = principal("alice", "acme");
        for action in ["loop", "sleep"] {
            let call = t
                .host
                .call_action("spin", action, "{}", &who, RequestMeta::fresh());
            let err = tokio::time::timeout(STOPPED_WITHIN, call)
                .await
                .unwrap_or_else(|_| panic!("`{action}` was never stopped"))
                .unwrap_err();
            assert_eq!(
                err,
                CallError::Deadline {
                    module: "spin".into(),
                    deadline_ms: 300
                },
                "{action}"
            );
            assert_eq!(err.to_sdk().kind(), "limit-exceeded");
        }
        let ok = t
            .host
            .call_action("spin", "ok", "{}", &who, RequestMeta::fresh())
            .await
            .unwrap();
        assert_eq!(ok.data.unwrap()["ok"], true);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_looping_call_does_not_hold_up_other_calls() {
        let t = TestHost::with("spin", SPIN, "[limits]\ncall-deadline-ms = 5000").await;
        let who = principal("alice", "acme");
        let looping = spawn_action(&t.host, "spin", "loop", "{}", &who);
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..5 {
            t.host
                .call_action("spin", "ok", "{}", &who, RequestMeta::fresh())
                .await
                .unwrap();
        }
        assert!(!looping.is_finished(), "the loop should still be running");
        let err = looping.await.unwrap().unwrap_err();
        assert!(matches!(err, CallError::Deadline { .. }), "{err:?}");
    }
}

mod hog {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn growing_memory_past_the_limit_gives_limit_exceeded() {
        let t = TestHost::with("hog", HOG, "[limits]\nmemory-mib = 16").await;
        let who = principal("alice", "acme");
        let err = t
            .host
            .call_action("hog", "grow", r#"{"mib": 64}"#, &who, RequestMeta::fresh())
            .await
            .unwrap_err();
        assert_eq!(
            err,
            CallError::MemoryLimit {
                module: "hog".into(),
                limit_bytes: 16 * 1024 * 1024
            }
        );
        assert_eq!(err.to_sdk().kind(), "limit-exceeded");
        let ok = t
            .host
            .call_action("hog", "ok", "{}", &who, RequestMeta::fresh())
            .await;
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_within_the_limit_is_granted() {
        let t = TestHost::with("hog", HOG, "[limits]\nmemory-mib = 32").await;
        let out = t
            .host
            .call_action(
                "hog",
                "grow",
                r#"{"mib": 4}"#,
                &principal("alice", "acme"),
                RequestMeta::fresh(),
            )
            .await
            .unwrap();
        assert_eq!(out.data.unwrap()["len"], 4 * 1024 * 1024);
    }
}

mod trap {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panic_is_a_typed_trap_error() {
        let t = TestHost::with("trap", TRAP, "").await;
        let who = principal("alice", "acme");
        for action in ["panic", "unreachable"] {
            let err = t
                .host
                .call_action("trap", action, "{}", &who, RequestMeta::fresh())
                .await
                .unwrap_err();
            assert!(
                matches!(err, CallError::Trap { ref module, .. } if module == "trap"),
                "{err:?}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trap_quotes_what_the_guest_wrote_before_it_and_only_that() {
        let t = TestHost::with("trap", TRAP, "").await;
        let who = principal("alice", "acme");
        let message = |action: &'static str| {
            let (t, who) = (&t, &who);
            async move {
                match t
                    .host
                    .call_action("trap", action, "{}", who, RequestMeta::fresh())
                    .await
                {
                    Err(CallError::Trap { message, .. }) => message,
                    other => panic!("{action}: {other:?}"),
                }
            }
        };
        let panicked = message("panic").await;
        assert!(
            panicked.contains("the guest wrote: ")
                && panicked.contains("the trap program panics on purpose"),
            "{panicked}"
        );
        // Each call keeps its own output: none here.
        let silent = message("unreachable").await;
        assert!(!silent.contains("the guest wrote"), "{silent}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trap_in_one_call_does_not_disturb_a_concurrent_call() {
        let t = TestHost::with("trap", TRAP, "").await;
        let who = principal("alice", "acme");
        let slow = spawn_action(&t.host, "trap", "slow", r#"{"ms": 300}"#, &who);
        let traps = (0..4).map(|_| {
            t.host
                .call_action("trap", "panic", "{}", &who, RequestMeta::fresh())
        });
        for r in join_all(traps).await {
            assert!(matches!(r, Err(CallError::Trap { .. })), "{r:?}");
        }
        let out = slow.await.unwrap().unwrap();
        assert_eq!(out.data.unwrap()["ok"], true);
    }
}

mod tasks_basic {
    use super::*;

    /// A host running tasks of the `tb` module, and what its `submit`
    /// action answered `who` for `args`, with the task id.
    async fn submitted(
        args: &str,
        who: &Principal,
    ) -> (TestHost, modhost::ui::ActionOutput, String) {
        let t = TestHost::with("tb", TASKS_BASIC, "").await;
        t.host.start_tasks().await.unwrap();
        let out = t
            .host
            .call_action("tb", "submit", args, who, RequestMeta::fresh())
            .await
            .unwrap();
        let id = out.data.as_ref().unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        (t, out, id)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_guest_submits_a_background_task_and_gets_its_result() {
        let who = principal("alice", "acme");
        let (t, out, id) = submitted(r#"{"task":"echo","args":{"x":1}}"#, &who).await;
        assert!(
            matches!(&out.effects[..], [modhost::ui::Effect::ShowTask { task_id }] if *task_id == id),
            "{:?}",
            out.effects
        );
        let row = t.host.tasks().wait(&id, &who).await.unwrap();
        assert_eq!(row.result_json.as_deref(), Some(r#"{"x":1}"#));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_task_that_panics_stores_what_it_printed_in_its_failure() {
        let who = principal("alice", "acme");
        let (t, _, id) = submitted(r#"{"task":"panic"}"#, &who).await;
        let row = wait_final(&t.host, &id, &who).await;
        assert_eq!(row.status.as_str(), "failed", "{row:?}");
        let failure = row.failure_message.unwrap_or_default();
        assert!(
            failure.contains("about to give up") && failure.contains("the task panics on purpose"),
            "{failure}"
        );
    }
}

mod confirm {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn describe_lists_the_confirmation_task_and_its_actions() {
        let t = TestHost::with("confirm", CONFIRM, "").await;
        let m = t.host.module("confirm").unwrap();
        assert!(m.description.has_task("ask"));
        assert!(m.description.has_action("start") && m.description.has_action("ask_here"));
    }
}

mod not_a_module {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn check_rejects_a_component_that_does_not_match_the_world() {
        let m = ModuleDir::new("other", NOT_A_MODULE, "");
        let report =
            modhost::check::check_dir(m.path(), &modhost::manifest::LoadEnv::host_default()).await;
        assert!(!report.ok());
        assert!(
            report
                .errors
                .iter()
                .any(|e| e.contains("does not match the modhost:sdk/module world")),
            "{:?}",
            report.errors
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loading_refuses_a_component_that_does_not_match_the_world() {
        let t = TestHost::new();
        let m = ModuleDir::new("other", NOT_A_MODULE, "");
        let err = t.host.load_module(m.path(), false).await.unwrap_err();
        assert!(
            matches!(err, modhost::modules::ModuleError::World(_)),
            "{err}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn check_accepts_a_real_module_and_lists_what_it_offers() {
        let m = ModuleDir::new("ident", IDENTITY, "");
        let report =
            modhost::check::check_dir(m.path(), &modhost::manifest::LoadEnv::host_default()).await;
        assert!(report.ok(), "{:?}", report.errors);
        assert!(report.actions.contains(&"whoami".to_owned()));
        assert!(
            report
                .imports
                .iter()
                .any(|i| i.starts_with("modhost:sdk/context")),
            "{:?}",
            report.imports
        );
    }
}

mod py_identity {
    use super::*;

    /// `action` of the Python module, called by alice of acme on a host of
    /// its own.
    async fn as_alice(action: &str) -> Result<modhost::ui::ActionOutput, CallError> {
        let t = TestHost::with("pyident", PY_IDENTITY, "").await;
        t.host
            .call_action(
                "pyident",
                action,
                "{}",
                &principal("alice", "acme"),
                RequestMeta::fresh(),
            )
            .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_python_module_answers_with_its_callers_identity() {
        let out = as_alice("whoami").await.unwrap();
        assert_eq!(
            out.data.unwrap(),
            serde_json::json!({"module": "pyident", "user_id": "alice", "organization_id": "acme"})
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_exception_escaping_a_python_module_quotes_its_traceback_in_the_trap() {
        let err = as_alice("raise").await.unwrap_err();
        let CallError::Trap { message, .. } = err else {
            panic!("{err:?}");
        };
        assert!(
            message.contains("the Python program raises on purpose"),
            "{message}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn check_notes_rather_than_warns_that_cpython_imports_sockets() {
        let m = ModuleDir::new("pyident", PY_IDENTITY, "");
        let report =
            modhost::check::check_dir(m.path(), &modhost::manifest::LoadEnv::host_default()).await;
        assert!(report.ok(), "{:?}", report.errors);
        assert!(
            report
                .imports
                .iter()
                .any(|i| i.starts_with("wasi:sockets/")),
            "{:?}",
            report.imports
        );
        assert_eq!(report.warnings, Vec::<String>::new());
        assert!(
            report
                .notes
                .iter()
                .any(|n| n.contains("every CPython module")),
            "{:?}",
            report.notes
        );
    }
}

/// The Python and the JavaScript SDK's test programs (`tests/programs-py/sdk`,
/// `tests/programs-js/sdk`) are twins: the same actions, answering the same
/// way, so each scenario runs on both.
macro_rules! sdk_twin_tests {
    ($name:ident, $wasm:expr) => {
        mod $name {
            use super::*;
            use modhost::SdkError;
            use modhost::tasks::api::ConfirmationAnswer;
            use modhost::tasks::store::Status;
            use modhost::ui::Effect;
            use serde_json::{Value, json};

            const MODULE: &str = "sdkmod";
            const MANIFEST: &str = r#"
[limits]
task-deadline-ms = 60000

[subprocess]
[[subprocess.programs]]
program = "echo"
args = [["granted"]]
"#;

            async fn host() -> TestHost {
                let t = TestHost::with(MODULE, $wasm, MANIFEST).await;
                t.host.start_tasks().await.unwrap();
                t
            }

            async fn output(host: &modhost::Host, action: &str, args: Value) -> Result<modhost::ui::ActionOutput, CallError> {
                host.call_action(
                    MODULE,
                    action,
                    &args.to_string(),
                    &principal("alice", "acme"),
                    RequestMeta::fresh(),
                )
                .await
            }

            async fn call(host: &modhost::Host, action: &str, args: Value) -> Result<Value, CallError> {
                output(host, action, args)
                    .await
                    .map(|o| o.data.unwrap_or(Value::Null))
            }

            async fn wait_for(host: &modhost::Host, id: &str, status: Status) {
                wait_status(host, id, &principal("alice", "acme"), status).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_module_on_the_sdk_runs_actions_tasks_and_blocking_functions_with_plain_values() {
                let t = host().await;
                let h = &t.host;
                assert_eq!(
                    call(h, "whoami", json!({})).await.unwrap(),
                    json!({"user_id": "alice", "organization_id": "acme", "role": "member"})
                );
                assert_eq!(call(h, "double", json!({"n": 21})).await.unwrap(), 42);
                let started = call(h, "start", json!({"to": 3, "key": "sdk.count"})).await.unwrap();
                let id = started["id"].as_str().unwrap().to_owned();
                let row = wait_final(h, &id, &principal("alice", "acme")).await;
                assert_eq!(row.status.as_str(), "completed", "{row:?}");
                assert_eq!(json(row.result_json.as_deref().unwrap()), json!({"from": 0, "to": 3}));
                assert_eq!((row.progress, row.label.as_deref()), (1.0, Some("step 3")));
                assert_eq!(json(row.checkpoint_json.as_deref().unwrap()), json!({"n": 3}));
                assert_eq!(
                    call(h, "by_key", json!({"key": "sdk.count"})).await.unwrap(),
                    json!(["completed"])
                );
                // The host's refusal reaches the module as the matching exception.
                assert_eq!(
                    call(h, "bad_progress", json!({"id": id})).await.unwrap(),
                    json!({"refused": "invalid-input"})
                );
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn exceptions_become_typed_errors_never_traps() {
                let t = TestHost::with(MODULE, $wasm, MANIFEST).await;
                let h = &t.host;
                let refused = call(h, "refuse", json!({})).await.unwrap_err();
                assert!(
                    matches!(&refused, CallError::Guest { error: SdkError::InvalidInput(m), .. } if m == "no such report"),
                    "{refused:?}"
                );
                let crashed = call(h, "crash", json!({})).await.unwrap_err();
                assert!(
                    matches!(&crashed, CallError::Guest { error: SdkError::Internal(m), .. } if m.contains("Error")),
                    "{crashed:?}"
                );
                let unjson = call(h, "unjson", json!({})).await.unwrap_err();
                assert!(
                    matches!(&unjson, CallError::Guest { error: SdkError::Internal(m), .. } if m.contains("not JSON")),
                    "{unjson:?}"
                );
                let style = call(h, "bad_style", json!({})).await.unwrap_err();
                assert!(
                    matches!(&style, CallError::Guest { error: SdkError::Internal(m), .. } if m.contains("loud")),
                    "{style:?}"
                );
                let unknown = call(h, "nope", json!({})).await.unwrap_err();
                assert!(matches!(unknown, CallError::UnknownEntry { .. }), "{unknown:?}");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_keyed_confirmation_deduplicates_shows_its_card_and_returns_the_answer() {
                let t = host().await;
                let h = &t.host;
                let out = output(h, "ask", json!({"key": "sdk.ask"})).await.unwrap();
                let id = out.data.as_ref().unwrap()["id"].as_str().unwrap().to_owned();
                assert_eq!(
                    out.effects,
                    [
                        Effect::ShowTask { task_id: id.clone() },
                        Effect::Toast { level: modhost::ui::ToastLevel::Info, message: "asked".into() },
                    ]
                );
                wait_for(h, &id, Status::WaitingConfirmation).await;
                // The same key while the task is active: the same task.
                let again = call(h, "ask", json!({"key": "sdk.ask"})).await.unwrap();
                assert_eq!(again["id"], id.as_str());
                let seen = call(h, "detail", json!({"id": id})).await.unwrap();
                assert_eq!(
                    seen,
                    json!({
                        "found": true, "status": "waiting-confirmation", "key": "sdk.ask",
                        "args": {"key": "sdk.ask"}, "checkpoint": {"asked": true},
                        "attempts": 1, "question": "Delete 3 files?",
                    })
                );
                let answer = ConfirmationAnswer {
                    values: json!({"which": ["b"]}),
                    ..ConfirmationAnswer::press("yes")
                };
                h.tasks().answer_confirmation(&id, &answer, &principal("alice", "acme")).await.unwrap();
                let row = wait_final(h, &id, &principal("alice", "acme")).await;
                assert_eq!(
                    json(row.result_json.as_deref().unwrap()),
                    json!({"resumed": false, "answer": {"button": "yes", "by": "alice", "picked": ["b"]}})
                );
                // Another organization's task is missing, not forbidden.
                let foreign = h
                    .call_action(MODULE, "detail", &json!({"id": id}).to_string(), &principal("alice", "globex"), RequestMeta::fresh())
                    .await
                    .unwrap();
                assert_eq!(foreign.data.unwrap(), json!({"found": false}));
            }

            #[test]
            fn a_confirmation_asked_before_a_restart_is_answered_after_it() {
                let state = tempfile::tempdir().unwrap();
                let dir = ModuleDir::new(MODULE, $wasm, MANIFEST);
                let alice = principal("alice", "acme");
                let id = runtime().block_on(async {
                    let host = host_on(state.path());
                    host.load_module(dir.path(), false).await.unwrap();
                    host.start_tasks().await.unwrap();
                    let out = call(&host, "ask", json!({})).await.unwrap();
                    let id = out["id"].as_str().unwrap().to_owned();
                    wait_for(&host, &id, Status::WaitingConfirmation).await;
                    id
                }); // the runtime is dropped: the task stops mid-wait
                runtime().block_on(async {
                    let host = host_on(state.path());
                    host.load_module(dir.path(), false).await.unwrap();
                    let recovery = host.start_tasks().await.unwrap();
                    assert_eq!(recovery.resumed, std::slice::from_ref(&id));
                    wait_for(&host, &id, Status::WaitingConfirmation).await;
                    host.tasks().answer_confirmation(&id, &ConfirmationAnswer::press("no"), &alice).await.unwrap();
                    let row = host.tasks().wait(&id, &alice).await.unwrap();
                    assert_eq!(row.attempts, 2);
                    assert_eq!(
                        json(row.result_json.as_deref().unwrap()),
                        json!({"resumed": true, "answer": {"button": "no", "by": "alice", "picked": []}})
                    );
                });
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn a_granted_command_runs_and_any_other_is_refused_naming_the_grant() {
                let t = host().await;
                let h = &t.host;
                assert_eq!(
                    call(h, "run", json!({"program": "echo", "args": ["granted"]})).await.unwrap(),
                    json!({"code": 0, "stdout": "granted\n"})
                );
                let other_args = call(h, "run", json!({"program": "echo", "args": ["not granted"]})).await.unwrap();
                assert!(other_args["denied"].as_str().is_some_and(|m| m.contains("echo")), "{other_args}");
                let other_program = call(h, "run", json!({"program": "ls", "args": []})).await.unwrap();
                assert!(other_program["denied"].as_str().is_some_and(|m| m.contains("ls")), "{other_program}");
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn the_read_model_pages_newest_first_and_filters_by_status() {
                let t = host().await;
                let h = &t.host;
                for n in 1..=3 {
                    let id = call(h, "start", json!({"to": 1, "key": format!("sdk.page.{n}")})).await.unwrap();
                    wait_final(h, id["id"].as_str().unwrap(), &principal("alice", "acme")).await;
                }
                let first = call(h, "page", json!({"prefix": "sdk.page.", "limit": 2})).await.unwrap();
                assert_eq!(first["keys"], json!(["sdk.page.3", "sdk.page.2"]));
                let rest = call(h, "page", json!({"prefix": "sdk.page.", "limit": 2, "cursor": first["next"]})).await.unwrap();
                assert_eq!(rest, json!({"keys": ["sdk.page.1"], "next": null}));
                // An empty prefix does not filter.
                let all = call(h, "page", json!({"prefix": ""})).await.unwrap();
                assert_eq!(all["keys"], json!(["sdk.page.3", "sdk.page.2", "sdk.page.1"]));
                let waiting = call(h, "page", json!({"statuses": ["waiting-confirmation"]})).await.unwrap();
                assert_eq!(waiting["keys"], json!([]));
                assert_eq!(
                    call(h, "mine", json!({})).await.unwrap(),
                    json!(["sdk.page.3", "sdk.page.2", "sdk.page.1"])
                );
                assert_eq!(call(h, "log", json!({})).await.unwrap(), Value::Null);
            }
        }
    };
}

sdk_twin_tests!(py_sdk, PY_SDK);
sdk_twin_tests!(js_sdk, JS_SDK);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_async_javascript_handler_is_awaited_for_its_answer_and_its_refusal() {
    let t = TestHost::with("sdkmod", JS_SDK, "").await;
    let alice = principal("alice", "acme");
    let call = |args: &'static str| {
        t.host
            .call_action("sdkmod", "later", args, &alice, RequestMeta::fresh())
    };
    let out = call("{}").await.unwrap();
    assert_eq!(out.data.unwrap(), serde_json::json!({"waited": true}));
    match call(r#"{"refuse": true}"#).await {
        Err(CallError::Guest {
            error: modhost::SdkError::PermissionDenied(reason),
            ..
        }) => assert_eq!(reason, "refused after a wait"),
        other => panic!("expected permission-denied, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_http_client_in_a_build_without_wasi_http_says_how_to_build_it() {
    let t = TestHost::with(
        "sdkmod",
        PY_SDK,
        "[network]\nallow = [\"http://127.0.0.1:9\"]",
    )
    .await;
    let out = t
        .host
        .call_action(
            "sdkmod",
            "fetch",
            r#"{"url": "http://127.0.0.1:9/x"}"#,
            &principal("alice", "acme"),
            RequestMeta::fresh(),
        )
        .await;
    match out {
        Err(CallError::Guest {
            error: modhost::SdkError::Internal(reason),
            ..
        }) => assert!(
            reason.contains("without wasi:http")
                && reason.contains("modhost:python-sdk/module-http@0.1.0"),
            "{reason}"
        ),
        other => panic!("expected an internal error naming the world, got {other:?}"),
    }
}

mod subprocess {
    // The subprocess guest has its own file of attacks and grants:
    // `tests/subprocess.rs`.
}

mod fetcher {
    // The outbound HTTP guest has its own file of grants and attacks:
    // `tests/network.rs`.
}

mod js_fetcher {}

mod py_fetcher {
    // The Python twin of `fetcher` runs the same tests in `tests/network.rs`.
}

mod files {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_written_in_the_data_directory_is_read_back_and_listed() {
        let t = TestHost::with("files", FILES, "[filesystem]\ndata = true").await;
        let ops = serde_json::json!({"ops": [
            {"op": "write", "path": "/data/n.txt", "text": "hi"},
            {"op": "read", "path": "/data/n.txt"},
            {"op": "list", "path": "/data"},
        ]});
        let out = t
            .host
            .call_action(
                "files",
                "try",
                &ops.to_string(),
                &principal("alice", "acme"),
                RequestMeta::fresh(),
            )
            .await
            .unwrap();
        assert_eq!(
            out.data.unwrap(),
            serde_json::json!([{"ok": true}, {"ok": "hi"}, {"ok": ["n.txt"]}])
        );
    }
}
