//! A host process for the crash test: serves the `spin` guest on a state
//! directory, submits tasks, and prints `ack <id> <key>` for each task only
//! once `submit` has returned (the row is committed). The test kills it with
//! SIGKILL mid-stream and restarts on the same directory.
//!
//! Usage: task-host STATE_DIR MODULE_DIR

use modhost::identity::RequestMeta;
use modhost::tasks::SubmitOptions;
use modhost_tests::{host_on, principal};
use std::io::Write;

fn main() {
    let mut args = std::env::args().skip(1);
    let (state, module) = (
        args.next().expect("STATE_DIR"),
        args.next().expect("MODULE_DIR"),
    );
    let rt = modhost_tests::runtime();
    rt.block_on(async move {
        let host = host_on(state.as_ref());
        host.load_module(module.as_ref(), false)
            .await
            .expect("loading the module");
        host.start_tasks().await.expect("starting tasks");
        let who = principal("alice", "acme");
        let mut out = std::io::stdout().lock();
        for i in 0u32.. {
            // Keyed loops stay active (dedup by key); unkeyed no-ops finish.
            let (task, key) = if i % 2 == 0 {
                ("loop", Some(format!("k{}", i % 20)))
            } else {
                ("noop", None)
            };
            let options = SubmitOptions {
                task_key: key.clone(),
                ..SubmitOptions::default()
            };
            match host
                .submit_task("spin", task, "{}", options, &who, RequestMeta::fresh())
                .await
            {
                Ok(id) => writeln!(out, "ack {id} {}", key.as_deref().unwrap_or("-")).unwrap(),
                Err(e) => writeln!(out, "refused {e}").unwrap(),
            }
            out.flush().unwrap();
        }
    });
}
