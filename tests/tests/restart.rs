//! Restart recovery: a host stopped mid-task (its runtime dropped, or the
//! process killed with SIGKILL), then a new host on the same database.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use modhost::Host;
use modhost::identity::{Principal, RequestMeta, Role};
use modhost::tasks::SubmitOptions;
use modhost::tasks::api::ConfirmationAnswer;
use modhost::tasks::store::{Status, TaskRow};
use modhost_tests::*;

fn admin() -> Principal {
    Principal {
        role: Role::Admin,
        ..principal("root", "acme")
    }
}

async fn wait_for(host: &Host, id: &str, status: Status) -> TaskRow {
    wait_status(host, id, &admin(), status).await
}

const MANIFEST: &str =
    "[limits]\ntask-deadline-ms = 60000\n[tasks]\nmax-concurrent = 8\nmax-active-per-user = 1000";

#[test]
fn active_tasks_become_interrupted_after_a_restart_unless_resumable() {
    let state = tempfile::tempdir().unwrap();
    let spin = ModuleDir::new("spin", SPIN, MANIFEST);
    let who = principal("alice", "acme");
    let (plain, resumable) = runtime().block_on(async {
        let host = host_on(state.path());
        host.load_module(spin.path(), false).await.unwrap();
        host.start_tasks().await.unwrap();
        let plain = host
            .submit_task(
                "spin",
                "loop",
                "{}",
                SubmitOptions::default(),
                &who,
                RequestMeta::fresh(),
            )
            .await
            .unwrap();
        let options = SubmitOptions {
            resumable: true,
            task_key: Some("again".into()),
            ..SubmitOptions::default()
        };
        let resumable = host
            .submit_task("spin", "loop", "{}", options, &who, RequestMeta::fresh())
            .await
            .unwrap();
        wait_for(&host, &plain, Status::Running).await;
        wait_for(&host, &resumable, Status::Running).await;
        (plain, resumable)
    }); // the runtime is dropped here: every task of the first host stops mid-run

    runtime().block_on(async {
        let host = host_on(state.path());
        host.load_module(spin.path(), false).await.unwrap();
        let recovery = host.start_tasks().await.unwrap();
        assert_eq!(recovery.interrupted, std::slice::from_ref(&plain));
        assert_eq!(
            recovery
                .resumed
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            [resumable.as_str()]
        );
        let row = host.tasks().get(&plain, &admin()).await.unwrap();
        assert_eq!(row.status, Status::Interrupted);
        assert_eq!(row.failure_message.as_deref(), Some("host restarted"));
        let row = wait_for(&host, &resumable, Status::Running).await;
        assert_eq!(row.attempts, 2);
        // Its key still deduplicates: it is the one active task of that key.
        let options = SubmitOptions {
            task_key: Some("again".into()),
            ..SubmitOptions::default()
        };
        let same = host
            .submit_task("spin", "loop", "{}", options, &who, RequestMeta::fresh())
            .await
            .unwrap();
        assert_eq!(same, resumable);
        host.tasks().cancel(&resumable, &who).await.unwrap();
    });
}

#[test]
fn a_confirmation_asked_before_a_restart_is_answered_after_it() {
    let state = tempfile::tempdir().unwrap();
    let confirm = ModuleDir::new("confirm", CONFIRM, "[limits]\ntask-deadline-ms = 60000");
    let alice = principal("alice", "acme");
    let id = runtime().block_on(async {
        let host = host_on(state.path());
        host.load_module(confirm.path(), false).await.unwrap();
        host.start_tasks().await.unwrap();
        let out = host
            .call_action("confirm", "start", "{}", &alice, RequestMeta::fresh())
            .await
            .unwrap();
        let id = out.data.unwrap()["id"].as_str().unwrap().to_owned();
        wait_for(&host, &id, Status::WaitingConfirmation).await;
        id
    });

    runtime().block_on(async {
        let host = host_on(state.path());
        host.load_module(confirm.path(), false).await.unwrap();
        let recovery = host.start_tasks().await.unwrap();
        assert_eq!(recovery.resumed.len(), 1);
        // The task runs again from its checkpoint and asks again: the same
        // confirmation, still waiting for its answer.
        let row = wait_for(&host, &id, Status::WaitingConfirmation).await;
        assert_eq!(row.attempts, 2);
        let yes = ConfirmationAnswer::press("yes");
        host.tasks()
            .answer_confirmation(&id, &yes, &alice)
            .await
            .unwrap();
        let row = host.tasks().wait(&id, &alice).await.unwrap();
        assert_eq!(row.status, Status::Completed, "{row:?}");
        let result = json(row.result_json.as_deref().unwrap());
        assert_eq!(result["answer"]["button"], "yes");
        assert_eq!(
            result["resumed"], true,
            "the re-run starts from its checkpoint"
        );
    });
}

#[test]
fn a_host_killed_with_sigkill_loses_no_acknowledged_task_and_keeps_one_active_task_per_key() {
    let state = tempfile::tempdir().unwrap();
    let spin = ModuleDir::new("spin", SPIN, MANIFEST);
    let mut child = Command::new(env!("CARGO_BIN_EXE_task-host"))
        .arg(state.path())
        .arg(spin.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut acked: Vec<(String, String)> = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let mut parts = line.split(' ');
        assert_eq!(parts.next(), Some("ack"), "{line}");
        acked.push((
            parts.next().unwrap().to_owned(),
            parts.next().unwrap().to_owned(),
        ));
        if acked.len() == 300 {
            // SIGKILL: no destructor, no flush, no goodbye.
            child.kill().unwrap();
            break;
        }
    }
    child.wait().unwrap();

    runtime().block_on(async {
        let restarted_at = modhost::db::now_ms();
        let host = host_on(state.path());
        host.load_module(spin.path(), false).await.unwrap();
        let recovery = host.start_tasks().await.unwrap();
        assert!(!recovery.interrupted.is_empty(), "{recovery:?}");
        for (id, key) in &acked {
            let row = host
                .tasks()
                .get(id, &admin())
                .await
                .unwrap_or_else(|e| panic!("acknowledged task {id} lost: {e:?}"));
            if key == "-" {
                continue;
            }
            assert_eq!(row.task_key.as_deref(), Some(key.as_str()));
            // Running when the host died: interrupted. Still pending: never
            // started, so the new host runs it, for the first time.
            let interrupted = row.status == Status::Interrupted
                && row.failure_message.as_deref() == Some("host restarted");
            let first_run_here =
                row.attempts <= 1 && row.started_at.is_none_or(|t| t >= restarted_at);
            assert!(interrupted || first_run_here, "{row:?}");
            if row.status.is_active() {
                let _ = host.tasks().cancel(id, &admin()).await;
            }
        }
        // Each key had at most one active task, so every ack of a key named the same task.
        for k in 0..20 {
            let key = format!("k{k}");
            let ids: std::collections::BTreeSet<&str> = acked
                .iter()
                .filter(|(_, kk)| *kk == key)
                .map(|(id, _)| id.as_str())
                .collect();
            assert!(
                ids.len() <= 1,
                "key {key} had several active tasks: {ids:?}"
            );
        }
    });
}
