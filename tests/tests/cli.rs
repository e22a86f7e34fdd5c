//! The `modhost` command against a running server, run as a user runs it:
//! built by cargo, talking HTTP to a host on a real socket.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use modhost::auth::Tokens;
use modhost::http::AppState;
use modhost_tests::*;
use serde_json::Value;

const LONG_TASKS: &str = "[limits]\ntask-deadline-ms = 60000\n[tasks]\nmax-concurrent = 8";

/// The `modhost` binary, built once for this test run.
fn modhost() -> &'static std::path::Path {
    modhost_binary()
}

struct Server {
    url: String,
    _served: Served,
    token: String,
    t: TestHost,
    tokens: Tokens,
}

async fn server() -> Server {
    let mut t = TestHost::new();
    t.load("tb", TASKS_BASIC, LONG_TASKS).await;
    t.load("confirm", CONFIRM, LONG_TASKS).await;
    t.host.start_tasks().await.unwrap();
    let (tokens, token) = tokens_of(&principal("alice", "acme")).await;
    let served = serve_socket(
        AppState::new(t.host.clone(), tokens.clone()),
        modhost::http::serve::HEADER_READ_TIMEOUT,
    )
    .await;
    Server {
        url: served.url.clone(),
        _served: served,
        token,
        t,
        tokens,
    }
}

impl Server {
    /// Runs `modhost ARGS` with this server's URL and token in the
    /// environment, off the test's runtime.
    async fn run(&self, args: &[&str]) -> Output {
        self.run_with(args, Some(&self.token)).await
    }

    async fn run_with(&self, args: &[&str], token: Option<&str>) -> Output {
        let mut cmd = self.command(args);
        cmd.env_remove("MODHOST_TOKEN");
        if let Some(t) = token {
            cmd.env("MODHOST_TOKEN", t);
        }
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
            .await
            .unwrap()
    }

    /// `modhost ARGS` for this server and token, stdin closed.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(modhost());
        cmd.args(args)
            .env("MODHOST_URL", &self.url)
            .env("MODHOST_TOKEN", &self.token)
            .stdin(Stdio::null());
        cmd
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `modhost call tb submit --follow` of tb's task `task`.
async fn follow(s: &Server, task: &str) -> Output {
    let args = format!(r#"{{"task": "{task}"}}"#);
    s.run(&["call", "tb", "submit", "--json", &args, "--follow"])
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn call_follow_shows_the_task_to_its_end_and_exits_with_its_outcome() {
    let s = server().await;
    let out = follow(&s, "progress").await;
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    let task: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(task["status"], "completed");
    assert_eq!(task["progress"], 1.0);
    assert!(stderr(&out).contains("following task"), "{}", stderr(&out));

    let out = follow(&s, "fail").await;
    assert_eq!(code(&out), 1, "a failed task: {}", stderr(&out));
    let task: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(task["status"], "failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_task_that_asks_waits_for_an_answer_given_elsewhere() {
    let s = server().await;
    let follower = {
        let mut cmd = s.command(&["call", "confirm", "start", "--json", "{}", "--follow"]);
        tokio::task::spawn_blocking(move || cmd.output().unwrap())
    };
    let alice = principal("alice", "acme");
    let id = loop {
        let page =
            s.t.host
                .tasks()
                .list(&alice, "confirm", &Default::default(), None, 1)
                .await
                .unwrap();
        if let Some(t) = page.tasks.first()
            && t.status == modhost::tasks::store::Status::WaitingConfirmation
        {
            break t.id.clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Give the follower time to see the question, then answer with the CLI.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = s.run(&["tasks", "confirm", &id]).await;
    assert_eq!(
        code(&refused),
        2,
        "no terminal, no --button: {}",
        stderr(&refused)
    );
    let answered = s.run(&["tasks", "confirm", &id, "--button", "no"]).await;
    assert_eq!(code(&answered), 0, "{}", stderr(&answered));
    let out = tokio::time::timeout(Duration::from_secs(30), follower)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code(&out), 0, "{}\n{}", stdout(&out), stderr(&out));
    assert!(
        stderr(&out).contains("Delete 3 files?"),
        "the question was shown: {}",
        stderr(&out)
    );
    let task: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(task["result"]["answer"]["button"], "no");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_list_show_cancel_audit_and_events_work_for_scripts() {
    let s = server().await;
    let out = s
        .run(&["call", "tb", "submit", "--json", r#"{"task": "sleep"}"#])
        .await;
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let id = serde_json::from_str::<Value>(&stdout(&out)).unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let events = s
        .command(&["events", "--json", "--task", &id])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let list = s.run(&["tasks", "list", "--json", "--module", "tb"]).await;
    assert_eq!(code(&list), 0, "{}", stderr(&list));
    let page: Value = serde_json::from_str(&stdout(&list)).unwrap();
    assert_eq!(page["tasks"][0]["id"], id.as_str());
    let text = s.run(&["tasks", "list"]).await;
    assert!(stdout(&text).contains(&id), "{}", stdout(&text));
    let show = s.run(&["tasks", "show", &id]).await;
    assert!(stdout(&show).contains("timeline"), "{}", stdout(&show));
    // Let the stream connect before the cancel it must report.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cancel = s.run(&["tasks", "cancel", &id]).await;
    assert_eq!(code(&cancel), 0, "{}", stderr(&cancel));
    let again = s.run(&["tasks", "cancel", &id]).await;
    assert_eq!(code(&again), 2, "cancelling a finished task is bad input");
    let mut events = events;
    let mut reader = std::io::BufReader::new(events.stdout.take().unwrap());
    let line = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap() == 0 || line.contains("cancelled") {
                return line;
            }
        }
    })
    .await
    .unwrap();
    let _ = events.kill();
    let _ = events.wait();
    let event: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(event["status"], "cancelled");
    assert_eq!(event["task_id"], id.as_str());

    let audit = s.run(&["audit", "--json"]).await;
    assert_eq!(code(&audit), 0, "{}", stderr(&audit));
    assert!(serde_json::from_str::<Value>(&stdout(&audit)).unwrap()["records"].is_array());
    // The task started above is on the trail as a submission.
    let submissions = s.run(&["audit", "--capability", "task"]).await;
    assert_eq!(code(&submissions), 0, "{}", stderr(&submissions));
    let text = stdout(&submissions);
    assert!(
        text.contains(" task ") && text.contains("allowed"),
        "{text}"
    );
    let bad = s.run(&["audit", "--capability", "sockets"]).await;
    assert_eq!(code(&bad), 2, "{}", stderr(&bad));
    // The module ran no subprocess and sent no request: nothing to grant.
    let suggest = s.run(&["manifest", "suggest", "tb", "--json"]).await;
    assert_eq!(code(&suggest), 0, "{}", stderr(&suggest));
    let suggested: Value = serde_json::from_str(&stdout(&suggest)).unwrap();
    assert!(suggested["records"].as_u64().unwrap() >= 1, "{suggested}");
    assert_eq!(suggested["toml"], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_usage_auth_and_unreachable_servers_apart() {
    let s = server().await;
    let missing = s.run_with(&["tasks", "list"], None).await;
    assert_eq!(code(&missing), 3, "{}", stderr(&missing));
    assert!(stderr(&missing).contains("MODHOST_TOKEN"));
    let wrong = s.run_with(&["tasks", "list"], Some("mht_wrong")).await;
    assert_eq!(code(&wrong), 3, "{}", stderr(&wrong));
    let bad_json = s.run(&["call", "tb", "submit", "--json", "{nope"]).await;
    assert_eq!(code(&bad_json), 2);
    let unknown = s
        .run(&["tasks", "show", "01900000-0000-7000-8000-000000000000"])
        .await;
    assert_eq!(code(&unknown), 2, "{}", stderr(&unknown));
    let member = s.run(&["tasks", "list", "--org"]).await;
    assert_eq!(code(&member), 3, "a member asking for the organization");
    let nowhere = s
        .run(&["tasks", "list", "--url", "http://127.0.0.1:9"])
        .await;
    assert_eq!(code(&nowhere), 4, "{}", stderr(&nowhere));
    let usage = s.run(&["tasks", "frobnicate"]).await;
    assert_eq!(code(&usage), 2);
    drop(s.tokens);
}

#[test]
fn serve_build_is_refused_with_the_name_that_says_what_it_does() {
    let modules = tempfile::tempdir().unwrap();
    let out = Command::new(modhost())
        .args(["serve", "--build"])
        .arg(modules.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--build is now --build-unconfined"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_learn_is_refused_on_a_shared_store_beside_other_organizations_and_for_a_missing_module() {
    let modules = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap().to_owned();
    let serve = |extra: &[&str]| {
        let out = Command::new(modhost())
            .args(["serve", "--learn", "git-stats", "--listen", "127.0.0.1:0"])
            .args(["--state-dir", &dir])
            .args(extra)
            .arg(modules.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{}", stdout(&out));
        stderr(&out)
    };
    let shared = serve(&["--store", "postgres://127.0.0.1:1/modhost"]);
    assert!(shared.contains("embedded SQLite"), "{shared}");
    let missing = serve(&[]);
    assert!(
        missing.contains("--learn git-stats: no module of that name was loaded"),
        "{missing}"
    );
    for org in ["acme", "globex"] {
        let out = Command::new(modhost())
            .args([
                "token",
                "create",
                "--user",
                "u",
                "--org",
                org,
                "--state-dir",
                &dir,
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let many = serve(&[]);
    assert!(
        many.contains("--learn needs a host of one organization; live tokens name acme, globex"),
        "{many}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_takes_the_state_dir_serve_uses_and_every_command_teaches_by_example() {
    let state = tempfile::tempdir().unwrap();
    let dir = state.path().to_str().unwrap().to_owned();
    let out = Command::new(modhost())
        .args([
            "token",
            "create",
            "--user",
            "alice",
            "--org",
            "acme",
            "--state-dir",
            &dir,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("mht_"));
    assert!(state.path().join("modhost.db").is_file());
    let list = Command::new(modhost())
        .args(["token", "list", "--state-dir", &dir])
        .output()
        .unwrap();
    assert!(stdout(&list).contains("alice@acme"), "{}", stdout(&list));
    for command in [
        &["serve"][..],
        &["call"],
        &["tasks", "list"],
        &["tasks", "show"],
        &["tasks", "cancel"],
        &["tasks", "confirm"],
        &["audit"],
        &["events"],
        &["new"],
        &["build"],
        &["check"],
        &["token"],
    ] {
        let out = Command::new(modhost())
            .args(command)
            .arg("--help")
            .output()
            .unwrap();
        let help = stdout(&out);
        assert!(
            help.contains("Example"),
            "`{}` --help: {help}",
            command.join(" ")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_is_asked_in_the_terminal_and_the_typed_choice_is_the_answer() {
    let Some(script) = on_path("script") else {
        panic!("the terminal test needs `script` (util-linux) to give the command a terminal");
    };
    let s = server().await;
    let out = s.run(&["call", "confirm", "start", "--json", "{}"]).await;
    let id = serde_json::from_str::<Value>(&stdout(&out)).unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice = principal("alice", "acme");
    while s.t.host.tasks().get(&id, &alice).await.unwrap().status
        != modhost::tasks::store::Status::WaitingConfirmation
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let command = format!("{} tasks confirm {id}", modhost().display());
    let mut child = Command::new(script)
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env("MODHOST_URL", &s.url)
        .env("MODHOST_TOKEN", &s.token)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        // The second button, "Keep" (id `no`).
        child.stdin.take().unwrap().write_all(b"2\n").unwrap();
    }
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let shown = stdout(&out);
    assert_eq!(code(&out), 0, "{shown}\n{}", stderr(&out));
    assert!(
        shown.contains("Delete 3 files?") && shown.contains("2) Keep"),
        "{shown}"
    );
    let row = wait_final(&s.t.host, &id, &alice).await;
    assert!(
        row.result_json.unwrap().contains(r#""button":"no""#),
        "the typed choice was the answer"
    );
}

#[test]
fn check_of_an_unbuilt_module_says_how_to_build_it_and_check_build_builds_it_first() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(IDENTITY, dir.path().join("prebuilt.wasm")).unwrap();
    std::fs::write(
        dir.path().join("module.toml"),
        "name = \"ident\"\nversion = \"0.1.0\"\ncomponent = \"component.wasm\"\n\
         [build]\ncommand = [\"cp\", \"prebuilt.wasm\", \"component.wasm\"]\n",
    )
    .unwrap();
    let path = dir.path().to_str().unwrap();
    let unbuilt = Command::new(modhost())
        .args(["check", path])
        .output()
        .unwrap();
    assert!(!unbuilt.status.success());
    let said = stdout(&unbuilt);
    assert!(
        said.contains("not built yet") && said.contains(&format!("modhost check --build {path}")),
        "{said}"
    );
    let built = Command::new(modhost())
        .args(["check", "--build", "--deny-warnings", path])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}{}",
        stdout(&built),
        stderr(&built)
    );
    assert!(
        stdout(&built).contains("ok: module `ident`"),
        "{}",
        stdout(&built)
    );
}

/// `modhost new` outside this repository, then `check --build
/// --deny-warnings`, then its actions in-process, as a new author would.
fn a_new_module_builds_checks_and_runs(lang: &str) {
    let parent = tempfile::tempdir().unwrap();
    let at = parent.path().to_str().unwrap();
    let made = Command::new(modhost())
        .args(["new", "my-mod", "--lang", lang, "--dir", at])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", stderr(&made));
    let dir = parent.path().join("my-mod");
    assert!(
        stdout(&made).contains(dir.to_str().unwrap()),
        "{}",
        stdout(&made)
    );
    let again = Command::new(modhost())
        .args(["new", "my-mod", "--lang", lang, "--dir", at])
        .output()
        .unwrap();
    assert_eq!(code(&again), 2, "a second `new` over it is refused");
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );
    let checked = Command::new(modhost())
        .args(["check", "--build", "--deny-warnings", dir.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "{}{}",
        stdout(&checked),
        stderr(&checked)
    );
    assert!(
        stdout(&checked).contains("ok: module `my-mod` in")
            && stdout(&checked).contains("(2 action(s), 1 task(s)"),
        "{}",
        stdout(&checked)
    );
    let state = parent.path().join("state");
    let call = |action: &str, json: &str| {
        let out = Command::new(modhost())
            .args(["call", "my-mod", action, "--json", json, "--modules", at])
            .args(["--user", "alice", "--org", "acme", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        (code(&out), stdout(&out), stderr(&out))
    };
    let (status, greeted, err) = call("greet", "{}");
    assert_eq!(status, 0, "{err}");
    let greeted: serde_json::Value = serde_json::from_str(&greeted).unwrap();
    assert_eq!(greeted["data"], serde_json::json!({"hello": "alice"}));
    let (status, started, err) = call("start", r#"{"to": 3}"#);
    assert_eq!(status, 0, "{err}");
    let started: serde_json::Value = serde_json::from_str(&started).unwrap();
    assert_eq!(started["effects"][0]["type"], "show-task", "{started}");
    let (status, _, refused) = call("start", r#"{"to": 0}"#);
    assert_ne!(status, 0);
    assert!(refused.contains("at least 1"), "{refused}");
}

#[test]
fn a_new_python_module_builds_passes_check_and_runs_outside_the_repository() {
    a_new_module_builds_checks_and_runs("python");
}

#[test]
fn a_new_javascript_module_builds_passes_check_and_runs_outside_the_repository() {
    a_new_module_builds_checks_and_runs("js");
}

#[test]
fn a_new_rust_module_builds_passes_check_and_runs_outside_the_repository() {
    a_new_module_builds_checks_and_runs("rust");
}

/// The Python and JavaScript twins of `examples/reports` build with their
/// `[build]` commands and pass `check --deny-warnings`.
#[test]
fn the_python_and_javascript_report_examples_build_and_pass_check() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for example in ["py-reports", "js-reports"] {
        let dir = root.join("examples").join(example);
        let checked = Command::new(modhost())
            .args(["check", "--build", "--deny-warnings"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "{example}: {}{}",
            stdout(&checked),
            stderr(&checked)
        );
        assert!(
            stdout(&checked).contains("(3 action(s), 1 task(s)"),
            "{example}: {}",
            stdout(&checked)
        );
    }
}
