//! Runs whatever `run-subprocess` request its caller describes, from an
//! action or from a background task, and reports the output: the attacks
//! and grants of the subprocess tests are requests sent through it.

use module_sdk::prelude::*;
use module_sdk::tasks::{self, Command};
use serde_json::{Value, json};

module_sdk::module! {
    actions: {
        "run" => run: "Run a program: {program, args?, cwd?, env?, stdin?, timeout_ms?, max_output_bytes?}",
        "start" => start: "Run the same request in a background task; returns the task id",
    },
    tasks: {
        "run" => run_in_task: "Run a program inside a task",
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Request {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    cwd: Option<String>,
    #[serde(default)]
    env: Vec<(String, String)>,
    stdin: Option<String>,
    timeout_ms: Option<u64>,
    max_output_bytes: Option<u64>,
}

fn execute(r: Request) -> Result<Value> {
    let mut c = Command::new(r.program).args(r.args);
    if let Some(cwd) = r.cwd {
        c = c.cwd(cwd);
    }
    for (k, v) in r.env {
        c = c.env(k, v);
    }
    if let Some(s) = r.stdin {
        c = c.stdin(s.into_bytes());
    }
    if let Some(ms) = r.timeout_ms {
        c = c.timeout(std::time::Duration::from_millis(ms));
    }
    if let Some(b) = r.max_output_bytes {
        c = c.max_output_bytes(b);
    }
    let out = c.run()?;
    Ok(json!({
        "status": out.status,
        "stdout": out.stdout_lossy(),
        "stderr": out.stderr_lossy(),
        "stdout_len": out.stdout.len(),
        "stdout_truncated": out.stdout_truncated,
        "stderr_truncated": out.stderr_truncated,
        "duration_ms": u64::try_from(out.duration.as_millis()).unwrap_or(u64::MAX),
    }))
}

fn run(r: Request) -> Result<ActionResult> {
    ActionResult::data(&execute(r)?)
}

fn start(r: Request) -> Result<ActionResult> {
    let id = tasks::run_background("run", &r, tasks::BackgroundOptions::default())?;
    ActionResult::data(&json!({ "task_id": id }))
}

fn run_in_task(r: Request) -> Result<Value> {
    execute(r)
}
