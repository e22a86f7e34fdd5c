//! `host/examples/embed.rs`, the embedder's program, built and run as a user
//! would run it, against a module directory of its own.

use std::process::Command;

use modhost_tests::{ModuleDir, TASKS_BASIC};

#[test]
fn the_embedding_example_runs_a_task_under_its_own_identity_and_sees_its_events() {
    let modules = tempfile::tempdir().unwrap();
    let module = ModuleDir::new("tasks", TASKS_BASIC, "");
    let dir = modules.path().join("tasks");
    std::fs::create_dir(&dir).unwrap();
    for file in ["module.toml", "component.wasm"] {
        std::fs::copy(module.path().join(file), dir.join(file)).unwrap();
    }
    let out = Command::new(env!("CARGO"))
        .args([
            "run",
            "--quiet",
            "-p",
            "modhost",
            "--example",
            "embed",
            "--",
        ])
        .arg(modules.path())
        .args(["tasks", "submit", r#"{"task": "progress", "args": {}}"#])
        .output()
        .expect("running cargo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let task_line = stdout
        .lines()
        .find(|l| l.starts_with("task "))
        .unwrap_or_else(|| panic!("no task line in {stdout}"));
    assert!(task_line.ends_with("completed by alice"), "{task_line}");
    let events: Vec<&str> = stdout.lines().filter(|l| l.starts_with("event ")).collect();
    for wanted in [
        r#""status":"running""#,
        r#""type":"progress""#,
        r#""organization_id":"acme""#,
    ] {
        assert!(
            events.iter().any(|e| e.contains(wanted)),
            "no {wanted} in {events:#?}"
        );
    }
}
