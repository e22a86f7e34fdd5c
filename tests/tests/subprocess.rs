//! `run-subprocess` end to end, from a real guest component: each test is an
//! attack that must fail or a grant that must work. The guest (`SUBPROCESS`)
//! runs whatever request the test describes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::future::join_all;
use modhost::audit::{AuditFilter, AuditRecord, Decision, Detail, Ended, SubprocessDetail};
use modhost::identity::RequestMeta;
use modhost::manifest::{LoadEnv, parse};
use modhost::{CallError, SdkError};
use modhost_tests::*;
use serde_json::{Value, json};

/// A script that leaves four `sleep`s behind, each escaping differently: a
/// plain background job, a double fork, a new session, and a new session
/// whose parent exits at once; SIGTERM is ignored by all of them. Their pids
/// go to `pids`.
const TREE: &str = "trap '' TERM; sleep 600 & echo $! > pids; (sleep 600 & echo $! >> pids) & setsid sleep 600 & echo $! >> pids; (setsid sleep 600 & echo $! >> pids) & wait; sleep 600";

/// Leaves a `setsid` orphan that dies 0.3 s after the child exits normally.
const ORPHAN: &str = "setsid sh -c 'sleep 0.3' & echo $! > orphan; exit 0";

/// Leaves a daemon in a session of its own that would run for ten minutes
/// after the child exits normally.
const DAEMON: &str = "setsid sleep 600 & echo $! > daemon; exit 0";

/// Writes into a directory that was in the data directory before any child
/// ran, and into one made afterwards by the host (as the guest would).
const WRITES: &str = "echo a > before/a.txt && echo b > after/b.txt && cat before/old.txt";

fn grants(extra: &str) -> String {
    format!(
        r#"
[subprocess]
max-concurrent = 2
timeout-ms = 20000
max-output-bytes = 65536
env = ["GREETING"]

[[subprocess.programs]]
program = "printenv"
args = [[]]

[[subprocess.programs]]
program = "cat"
args = [["{{path}}"], ["-n", "loot/secret"]]

[[subprocess.programs]]
program = "sh"
args = [["-c", "{TREE}"], ["-c", "{ORPHAN}"], ["-c", "{DAEMON}"], ["-c", "{WRITES}"], ["-c", "echo made > made.txt; cat made.txt"], ["-c", "cp /usr/bin/true ./tool && ./tool"]]

[[subprocess.programs]]
program = "head"
args = [["-c", "{{int}}", "/dev/zero"]]

[[subprocess.programs]]
program = "sleep"
args = [["{{int}}"]]

[[subprocess.programs]]
program = "git"
args = [["init", "-q", "{{path}}"], ["ls-remote", "{{value}}"], ["-C", "{{path}}", "log", "-1", "--format=%at"]]

[[subprocess.programs]]
program = "tar"
args = [["-tf", "{{path}}"]]
{extra}
"#
    )
}

async fn host() -> TestHost {
    let mut t = TestHost::with_options(|o| {
        o.subprocess.kill_grace = Duration::from_millis(300);
    });
    t.load("sub", SUBPROCESS, &grants("")).await;
    t
}

/// The data directory of the tests' organization, `acme`.
fn data_dir(t: &TestHost) -> PathBuf {
    let dir = t.state.path().join("data").join("sub").join("org-acme");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn run(t: &TestHost, request: Value) -> Result<Value, SdkError> {
    let out = t
        .host
        .call_action(
            "sub",
            "run",
            &request.to_string(),
            &principal("alice", "acme"),
            RequestMeta {
                request_id: "req-7".into(),
                session_id: None,
            },
        )
        .await;
    match out {
        Ok(out) => Ok(out.data.expect("run returns data")),
        Err(CallError::Guest { error, .. }) => Err(error),
        Err(other) => panic!("unexpected call failure: {other}"),
    }
}

/// Starts the task scheduler, then a background task that runs `request`;
/// returns the task id.
async fn start_task(t: &TestHost, who: &modhost::identity::Principal, request: Value) -> String {
    t.host.start_tasks().await.unwrap();
    let started = t
        .host
        .call_action(
            "sub",
            "start",
            &request.to_string(),
            who,
            RequestMeta::fresh(),
        )
        .await
        .unwrap();
    started.data.unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// What a subprocess record holds beside the columns every record has.
fn sub(r: &AuditRecord) -> &SubprocessDetail {
    match &r.entry.detail {
        Detail::Subprocess(d) => d,
        other => panic!("not a subprocess record: {other:?}"),
    }
}

/// The audit records of calls refused as over a cap, newest first.
async fn over_a_cap(t: &TestHost) -> Vec<AuditRecord> {
    let filter = AuditFilter {
        decision: Some(Decision::Limited),
        ..subprocesses()
    };
    t.host.audit(&filter, 50).await.unwrap()
}

fn is_gone(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_call_runs_end_to_end_and_is_audited() {
    let t = host().await;
    let out = run(
        &t,
        json!({"program": "sh", "args": ["-c", "echo made > made.txt; cat made.txt"]}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], json!({"code": 0}));
    assert_eq!(out["stdout"], "made\n");
    assert_eq!(
        std::fs::read_to_string(data_dir(&t).join("made.txt")).unwrap(),
        "made\n"
    );
    // The launch record is durable before the guest hears back; the end is
    // written right after.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let records = t.host.audit(&subprocesses(), 10).await.unwrap();
    let r = &records[0];
    assert_eq!(r.entry.decision, Decision::Allowed);
    assert_eq!(r.entry.subject, "sh");
    assert_eq!(r.entry.user_id, "alice");
    assert_eq!(r.entry.organization_id, "acme");
    assert_eq!(r.entry.request_id, "req-7");
    assert!(sub(r).confined);
    assert!(sub(r).path.as_deref().is_some_and(|p| p.starts_with('/')));
    let end = r.end.as_ref().expect("the end is recorded");
    assert_eq!(end.ended, Ended::Exited);
    assert_eq!(end.exit_code, Some(0));
    assert_eq!(end.stdout_bytes, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_sees_only_granted_variables_and_the_callers_identity() {
    let t = host().await;
    let out = run(
        &t,
        json!({"program": "printenv", "env": [["GREETING", "hi"]]}),
    )
    .await
    .unwrap();
    let mut lines: Vec<&str> = out["stdout"].as_str().unwrap().lines().collect();
    lines.sort_unstable();
    let path = lines
        .iter()
        .find(|l| l.starts_with("PATH="))
        .copied()
        .unwrap_or_default();
    assert_eq!(
        lines,
        [
            "GREETING=hi",
            "MODHOST_MODULE=sub",
            "MODHOST_ORGANIZATION_ID=acme",
            "MODHOST_REQUEST_ID=req-7",
            "MODHOST_USER_ID=alice",
            path,
        ]
    );
    assert_eq!(path, "PATH=/usr/local/bin:/usr/bin:/bin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn child_of_a_background_task_sees_the_task_id() {
    let t = host().await;
    let who = principal("bob", "acme");
    let id = start_task(&t, &who, json!({"program": "printenv"})).await;
    let row = wait_final(&t.host, &id, &who).await;
    let result = json(
        row.result_json
            .as_deref()
            .unwrap_or_else(|| panic!("no result: {row:?}")),
    );
    let stdout = result["stdout"].as_str().unwrap();
    assert!(
        stdout.contains(&format!("MODHOST_TASK_ID={id}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("MODHOST_USER_ID=bob\n"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unapproved_program_and_program_given_as_a_path_are_denied() {
    let t = host().await;
    let reason = denied(run(&t, json!({"program": "id"})).await);
    assert!(reason.contains("[[subprocess.programs]]"), "{reason}");
    for program in ["./git", "/usr/bin/../bin/sh", "/usr/bin/sh", "bin/sh"] {
        denied(
            run(
                &t,
                json!({"program": program, "args": ["-c", "echo made > made.txt; cat made.txt"]}),
            )
            .await,
        );
    }
    invalid(run(&t, json!({"program": ""})).await);
    invalid(run(&t, json!({"program": "sh", "args": ["-c", ""]})).await);
    invalid(run(&t, json!({"program": "sh\u{0}", "args": []})).await);
    let records = t.host.audit(&subprocesses(), 50).await.unwrap();
    assert_eq!(records.len(), 8, "every refusal is audited");
    assert!(
        records
            .iter()
            .all(|r| r.entry.decision != Decision::Allowed)
    );
    let first = records.last().unwrap();
    assert_eq!(first.entry.subject, "id");
    assert_eq!(first.entry.decision, Decision::Denied);
    assert!(first.entry.reason.as_deref().unwrap().contains("granted: "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fake_git_planted_in_the_data_directory_is_never_run() {
    let t = host().await;
    let dir = data_dir(&t);
    let fake = dir.join("git");
    std::fs::write(&fake, "#!/bin/sh\necho pwned > pwned\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = run(
        &t,
        json!({"program": "git", "args": ["init", "-q", "repo"]}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], json!({"code": 0}), "{out}");
    assert!(!dir.join("pwned").exists());
    assert!(dir.join("repo/.git").is_dir(), "the real git ran");
    denied(
        run(
            &t,
            json!({"program": "./git", "args": ["init", "-q", "repo"]}),
        )
        .await,
    );
    // And a binary the module copies into its data directory cannot be
    // executed by a granted program: Landlock gives no execute right there.
    let out = run(
        &t,
        json!({"program": "sh", "args": ["-c", "cp /usr/bin/true ./tool && ./tool"]}),
    )
    .await
    .unwrap();
    assert_ne!(out["status"], json!({"code": 0}), "{out}");
    assert!(
        out["stderr"].as_str().unwrap().contains("ermission denied"),
        "{out}"
    );
}

#[test]
fn refused_environment_names_cannot_be_granted() {
    for name in [
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "DYLD_INSERT_LIBRARIES",
        "BASH_ENV",
        "GIT_SSH_COMMAND",
        "GIT_CONFIG_COUNT",
        "GIT_CONFIG_KEY_0",
        "NODE_OPTIONS",
        "PYTHONPATH",
        "A=B",
        "A\\u0000B",
        "MODHOST_USER_ID",
    ] {
        let text = format!(
            "name = \"t\"\nversion = \"0.1.0\"\ncomponent = \"t.wasm\"\n[subprocess]\nenv = [\"{name}\"]\n"
        );
        let err = parse(&text, &LoadEnv::host_default()).expect_err(name);
        assert!(
            err.to_string().contains("[subprocess] env"),
            "{name}: {err}"
        );
    }
}

#[test]
fn shapes_that_let_the_caller_choose_the_code_cannot_be_granted() {
    for (program, args) in [
        ("sh", r#"["-c", "{value}"]"#),
        ("bash", r#"["{path}"]"#),
        ("python3", r#"["-c", "{value}"]"#),
        ("env", r#"["{value}"]"#),
        ("setsid", r#"["{path}"]"#),
        ("xargs", r#"["-0"]"#),
        ("git", r#"["config", "{value}", "{value}"]"#),
        ("git", r#"["config", "alias.x", "{value}"]"#),
        ("sed", r#"["{path}", "{path}"]"#),
    ] {
        let text = format!(
            "name = \"t\"\nversion = \"0.1.0\"\ncomponent = \"t.wasm\"\n\
             [[subprocess.programs]]\nprogram = \"{program}\"\nargs = [{args}]\n"
        );
        let err = parse(&text, &LoadEnv::host_default()).expect_err(program);
        assert!(
            err.to_string().contains("is refused"),
            "{program} {args}: {err}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_host_that_is_an_ssh_option_is_denied_at_the_call() {
    let mut t = TestHost::new();
    let extra =
        "[[subprocess.programs]]\nprogram = \"scp\"\nargs = [[\"-q\", \"{value}\", \"{path}\"]]\n";
    t.load("sub", SUBPROCESS, &grants(extra)).await;
    let reason = denied(
        run(
            &t,
            json!({"program": "scp", "args": ["-q", "x@-oProxyCommand=touch pwned:f", "out"]}),
        )
        .await,
    );
    assert!(reason.contains("`scp` may not run"), "{reason}");
    assert!(!data_dir(&t).join("pwned").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_environment_names_are_denied_at_the_call() {
    let t = host().await;
    for name in [
        "LD_PRELOAD",
        "DYLD_INSERT_LIBRARIES",
        "BASH_ENV",
        "GIT_SSH_COMMAND",
        "GIT_CONFIG_COUNT",
        "NODE_OPTIONS",
        "PYTHONPATH",
        "MODHOST_USER_ID",
        "PATH",
    ] {
        let reason = denied(run(&t, json!({"program": "printenv", "env": [[name, "x"]]})).await);
        assert!(reason.contains("[subprocess] env"), "{name}: {reason}");
    }
    for name in ["A=B", "A\u{0}B", ""] {
        invalid(run(&t, json!({"program": "printenv", "env": [[name, "x"]]})).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argv_injections_are_denied() {
    let t = host().await;
    for args in [
        json!(["-c", "core.sshCommand=touch pwned", "ls-remote", "origin"]),
        json!(["ls-remote", "--upload-pack=touch pwned", "origin"]),
        json!(["ls-remote", "--upload-pack=touch pwned"]),
        json!(["ls-remote", "ext::sh -c touch% pwned"]),
        json!(["ls-remote", "fd::3"]),
        json!(["-C", "repo", "log", "-1", "--format=%at", "--output=pwned"]),
        json!(["-C", "--exec-path=.", "log", "-1", "--format=%at"]),
    ] {
        let reason = denied(run(&t, json!({"program": "git", "args": args})).await);
        assert!(
            reason.contains("`git` may not run with these arguments"),
            "{reason}"
        );
    }
    for args in [
        json!(["-tf", "a.tar", "--to-command=sh -c id"]),
        json!(["--checkpoint-action=exec=sh", "-tf", "a.tar"]),
        json!(["-tf", "--checkpoint-action=exec=sh"]),
        json!(["-tf", "--to-command=sh"]),
    ] {
        denied(run(&t, json!({"program": "tar", "args": args})).await);
    }
    assert!(!data_dir(&t).join("pwned").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn working_directory_must_stay_inside_the_data_directory() {
    let t = host().await;
    let dir = data_dir(&t);
    std::fs::create_dir(dir.join("inside")).unwrap();
    std::os::unix::fs::symlink("../..", dir.join("up")).unwrap();
    std::os::unix::fs::symlink("/etc", dir.join("etc")).unwrap();
    let printenv = |cwd: &str| json!({"program": "printenv", "cwd": cwd});
    for cwd in ["..", "inside/../..", "/", "/etc", "up", "etc", "up/sub"] {
        let reason = denied(run(&t, printenv(cwd)).await);
        assert!(reason.contains("data directory"), "{cwd}: {reason}");
    }
    invalid(run(&t, printenv("in\u{0}side")).await);
    invalid(run(&t, printenv("missing")).await);
    run(&t, printenv("inside")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_argument_through_a_symlink_out_is_denied() {
    let t = host().await;
    let dir = data_dir(&t);
    let secret = t.state.path().join("secret.txt");
    std::fs::write(&secret, "top secret").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../secret.txt", dir.join("rel")).unwrap();
    for path in ["abs", "rel"] {
        let reason = denied(run(&t, json!({"program": "cat", "args": [path]})).await);
        assert!(
            reason.contains("outside the module's data directory"),
            "{reason}"
        );
    }
    std::fs::write(dir.join("mine.txt"), "mine").unwrap();
    let out = run(&t, json!({"program": "cat", "args": ["mine.txt"]}))
        .await
        .unwrap();
    assert_eq!(out["stdout"], "mine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlink_followed_by_an_allowed_program_is_blocked_by_landlock() {
    let t = host().await;
    let dir = data_dir(&t);
    // `loot` climbs from the organization's data directory
    // (state/data/sub/org-acme) to the state directory, where the host
    // keeps its database.
    std::fs::write(t.state.path().join("secret"), "top secret").unwrap();
    std::os::unix::fs::symlink("../../..", dir.join("loot")).unwrap();
    // The literal `loot/secret` is granted, so only the OS stands between
    // the child and the file.
    let out = run(&t, json!({"program": "cat", "args": ["-n", "loot/secret"]}))
        .await
        .unwrap();
    assert_ne!(out["status"], json!({"code": 0}), "{out}");
    assert_eq!(out["stdout"], "");
    assert!(
        out["stderr"].as_str().unwrap().contains("ermission denied"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_kills_the_whole_tree_including_escapees_and_leaves_no_zombies() {
    let t = host().await;
    let out = run(
        &t,
        json!({"program": "sh", "args": ["-c", TREE], "timeout_ms": 1000}),
    )
    .await
    .unwrap();
    assert_eq!(out["status"], "timed-out");
    let pids: Vec<i32> = std::fs::read_to_string(data_dir(&t).join("pids"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 4, "{pids:?}");
    for pid in &pids {
        assert!(is_gone(*pid), "process {pid} survived (or is a zombie)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_task_kills_its_child_tree() {
    let t = host().await;
    let who = principal("alice", "acme");
    let id = start_task(&t, &who, json!({"program": "sh", "args": ["-c", TREE]})).await;
    let pids_file = data_dir(&t).join("pids");
    let mut pids = Vec::new();
    for _ in 0..400 {
        if let Ok(text) = std::fs::read_to_string(&pids_file) {
            pids = text
                .lines()
                .filter_map(|l| l.trim().parse::<i32>().ok())
                .collect();
            if pids.len() == 4 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(pids.len(), 4);
    if let Err(e) = t.host.tasks().cancel(&id, &who).await {
        panic!("{e}: {:?}", t.host.tasks().get(&id, &who).await);
    }
    let row = wait_final(&t.host, &id, &who).await;
    assert_eq!(row.status.as_str(), "cancelled");
    for _ in 0..100 {
        if pids.iter().all(|p| is_gone(*p)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for pid in &pids {
        assert!(is_gone(*pid), "process {pid} survived the cancel");
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gigabyte_of_output_is_truncated_and_host_memory_stays_bounded() {
    let t = host().await;
    let before = rss_kib();
    let out = run(
        &t,
        json!({"program": "head", "args": ["-c", "1073741824", "/dev/zero"], "max_output_bytes": 4096}),
    )
    .await
    .unwrap();
    let grown_mib = rss_kib().saturating_sub(before) / 1024;
    assert_eq!(out["status"], json!({"code": 0}));
    assert_eq!(out["stdout_len"], 4096);
    assert_eq!(out["stdout_truncated"], true);
    assert_eq!(out["stderr_truncated"], false);
    assert!(grown_mib < 64, "host RSS grew by {grown_mib} MiB");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = &t.host.audit(&subprocesses(), 1).await.unwrap()[0];
    assert_eq!(r.end.as_ref().unwrap().stdout_bytes, 1 << 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_storm_gets_limit_exceeded_beyond_the_module_cap() {
    let t = host().await;
    let calls = (0..8).map(|_| run(&t, json!({"program": "sleep", "args": ["1"]})));
    let results = join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let limited = results
        .iter()
        .filter(|r| matches!(r, Err(SdkError::LimitExceeded(_))))
        .count();
    assert_eq!(ok + limited, 8, "{results:?}");
    assert!((1..=2).contains(&ok), "{results:?}");
    let records = over_a_cap(&t).await;
    assert_eq!(records.len(), limited);
    // The caps are given back: a later call runs.
    run(&t, json!({"program": "sleep", "args": ["0"]}))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_is_denied_to_children_unless_granted() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let url = format!("http://127.0.0.1:{port}/r.git");
    let mut t = TestHost::new();
    t.load("sub", SUBPROCESS, &grants("")).await;
    let extra = grants("").replace("[subprocess]\n", "[subprocess]\nnetwork = true\n");
    t.load("net", SUBPROCESS, &extra).await;
    let request = json!({"program": "git", "args": ["ls-remote", url], "timeout_ms": 3000});
    let out = run(&t, request.clone()).await.unwrap();
    assert_ne!(out["status"], json!({"code": 0}), "{out}");
    assert!(listener.accept().is_err(), "a confined child connected");
    let (text, who) = (request.to_string(), principal("alice", "acme"));
    let granted = t
        .host
        .call_action("net", "run", &text, &who, RequestMeta::fresh());
    // The granted child connects; nothing answers, so it fails or times out.
    // Bounded: a child that never connects fails the test, not the suite.
    let accepted = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if listener.accept().is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    });
    let _ = granted.await;
    assert!(accepted.await.unwrap(), "a granted child could not connect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_subprocess_grant_nothing_is_launched() {
    let t = TestHost::with("bare", SUBPROCESS, "").await;
    let err = t
        .host
        .call_action(
            "bare",
            "run",
            &json!({"program": "sh", "args": ["-c", "true"]}).to_string(),
            &principal("alice", "acme"),
            RequestMeta::fresh(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, CallError::Guest { error: SdkError::PermissionDenied(ref r), .. } if r.contains("no [[subprocess.programs]] grant")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_trail_is_readable_over_http_within_the_organization() {
    use axum::http::StatusCode;
    use modhost::auth::Tokens;
    use modhost::db::Db;
    use modhost::http::{AppState, router};
    use modhost::identity::Principal;

    let t = host().await;
    denied(run(&t, json!({"program": "id"})).await);
    run(&t, json!({"program": "printenv"})).await.unwrap();
    let tokens = Tokens::new(Db::in_memory().unwrap());
    let token = async |p: Principal| tokens.create(&p, "test").await.unwrap().secret;
    let (alice, bob, acme_admin, other_admin) = (
        token(principal("alice", "acme")).await,
        token(principal("bob", "acme")).await,
        token(admin_of("acme")).await,
        token(admin_of("other")).await,
    );
    let app = router(AppState::new(t.host.clone(), tokens.clone()));
    let get = async |token: &str, query: &str| {
        get_json(&app, token, &format!("/v1/audit/subprocesses{query}")).await
    };
    let count = |body: &Value| body["records"].as_array().unwrap().len();
    let (status, body) = get(&alice, "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(count(&body), 2);
    assert_eq!(body["records"][0]["subject"], "printenv");
    assert_eq!(body["records"][0]["capability"], "subprocess");
    assert_eq!(body["records"][1]["decision"], "denied");
    assert_eq!(
        count(&get(&bob, "").await.1),
        0,
        "a member reads only their own"
    );
    assert_eq!(count(&get(&bob, "?user=alice").await.1), 0);
    assert_eq!(count(&get(&acme_admin, "").await.1), 2);
    assert_eq!(count(&get(&acme_admin, "?decision=denied").await.1), 1);
    assert_eq!(
        count(&get(&other_admin, "").await.1),
        0,
        "another organization sees nothing"
    );
    let (status, _) = get(&alice, "?before=not-an-id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

/// The descriptors of a running child of this process named `name`, read
/// from `/proc` while it runs.
async fn descriptors_of_child(name: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    for _ in 0..200 {
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let dir = entry.path();
            let Ok(stat) = std::fs::read_to_string(dir.join("stat")) else {
                continue;
            };
            let Some(close) = stat.rfind(')') else {
                continue;
            };
            let comm = &stat[stat.find('(').unwrap_or(0) + 1..close];
            let ppid = stat[close + 1..].split_whitespace().nth(1).unwrap_or("");
            if comm == name && ppid == me {
                let mut fds: Vec<String> = std::fs::read_dir(dir.join("fd"))
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                fds.sort_by_key(|f| f.parse::<u32>().unwrap_or(u32::MAX));
                return fds;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no child `{name}` of this process appeared");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_inherits_no_descriptor_beyond_its_standard_three() {
    let t = host().await;
    // A descriptor of the host's without close-on-exec (as a C library
    // might open one) must not reach the child either.
    let leaky = std::fs::File::open("/dev/null").unwrap();
    let fd = std::os::fd::AsRawFd::as_raw_fd(&leaky);
    // SAFETY: fcntl on a descriptor this test owns.
    assert_eq!(unsafe { libc::fcntl(fd, libc::F_SETFD, 0) }, 0);
    let (out, fds) = tokio::join!(
        run(&t, json!({"program": "sleep", "args": ["2"]})),
        descriptors_of_child("sleep")
    );
    assert_eq!(out.unwrap()["status"], json!({"code": 0}));
    assert_eq!(fds, ["0", "1", "2"], "descriptors open in the child");
    drop(leaky);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_a_child_leaves_on_a_normal_exit_is_reaped_when_it_dies() {
    let t = host().await;
    let out = run(&t, json!({"program": "sh", "args": ["-c", ORPHAN]}))
        .await
        .unwrap();
    assert_eq!(out["status"], json!({"code": 0}), "{out}");
    let pid: i32 = std::fs::read_to_string(data_dir(&t).join("orphan"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for _ in 0..500 {
        if is_gone(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        is_gone(pid),
        "orphan {pid} is still there (alive or a zombie)"
    );
}

/// An audit trail that cannot be written (its disk failed, say).
struct BrokenAudit;

impl modhost::audit::AuditStore for BrokenAudit {
    fn record(
        &self,
        _: modhost::audit::AuditEntry,
    ) -> modhost::audit::BoxFuture<'_, Result<(), modhost::audit::AuditError>> {
        Box::pin(async { Err(modhost::audit::AuditError::SchemaMissing) })
    }

    fn record_end(
        &self,
        _: &str,
        _: modhost::audit::AuditEnd,
    ) -> modhost::audit::BoxFuture<'_, Result<bool, modhost::audit::AuditError>> {
        Box::pin(async { Err(modhost::audit::AuditError::SchemaMissing) })
    }

    fn query<'a>(
        &'a self,
        _: &'a AuditFilter,
        _: u32,
    ) -> modhost::audit::BoxFuture<
        'a,
        Result<Vec<modhost::audit::AuditRecord>, modhost::audit::AuditError>,
    > {
        Box::pin(async { Ok(Vec::new()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_that_cannot_be_put_on_the_audit_trail_is_not_started() {
    use std::sync::Arc;

    use modhost::db::{Db, Durability};
    use modhost::tasks::store::sqlite::SqliteTaskStore;
    use modhost::tasks::store::{SqliteOptions, apply_schema};

    let state = tempfile::tempdir().unwrap();
    let mut options = modhost::HostOptions::new(state.path());
    options.engine.cache_dir = Some(COMPONENT_CACHE_DIR.into());
    options.engine.max_instances = 64;
    let db = Db::open(&options.db_path, Durability::Full).unwrap();
    apply_schema(&db.lock()).unwrap();
    let tasks =
        Arc::new(SqliteTaskStore::open(&options.db_path, SqliteOptions::default()).unwrap());
    let host = modhost::Host::with_stores(options, db, tasks, Arc::new(BrokenAudit)).unwrap();
    let module = ModuleDir::new("sub", SUBPROCESS, &grants(""));
    host.load_module(module.path(), false).await.unwrap();
    let request = json!({"program": "sh", "args": ["-c", "echo made > made.txt; cat made.txt"]});
    let err = host
        .call_action(
            "sub",
            "run",
            &request.to_string(),
            &principal("alice", "acme"),
            RequestMeta::fresh(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Guest { error: SdkError::Internal(m), .. } if m.contains("audit trail")),
        "{err:?}"
    );
    let made = state.path().join("data/sub/org-acme/made.txt");
    assert!(!made.exists(), "the child ran without a record");
}

/// The `probe` program, copied where any user may run it (the build's own
/// directory may be private to root), and a host whose module `probe` may
/// run it with or without the network.
async fn probe_host(network: bool) -> (TestHost, tempfile::TempDir) {
    use std::os::unix::fs::PermissionsExt;
    let bin = tempfile::tempdir().unwrap();
    let probe = bin.path().join("probe");
    std::fs::copy(env!("CARGO_BIN_EXE_probe"), &probe).unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut t = TestHost::new();
    let grant = format!(
        "[subprocess]\nnetwork = {network}\n\n[[subprocess.programs]]\nprogram = \"{}\"\nargs = [[\"sockets\"], [\"calls\"], [\"id\"]]\n",
        probe.display()
    );
    t.load("sub", SUBPROCESS, &grant).await;
    (t, bin)
}

/// What `probe WHAT` printed, as `name -> outcome`.
async fn probe(t: &TestHost, bin: &tempfile::TempDir, what: &str) -> Vec<(String, String)> {
    let program = bin.path().join("probe").display().to_string();
    let out = run(t, json!({"program": program, "args": [what]}))
        .await
        .unwrap();
    assert_eq!(out["status"], json!({"code": 0}), "{out}");
    out["stdout"]
        .as_str()
        .unwrap()
        .lines()
        .map(|l| {
            let (name, outcome) = l.split_once(' ').unwrap();
            (name.to_owned(), outcome.to_owned())
        })
        .collect()
}

const EACCES: &str = "errno 13";
const EPERM: &str = "errno 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_without_the_network_opens_no_socket_of_any_family() {
    let (t, bin) = probe_host(false).await;
    let lines = probe(&t, &bin, "sockets").await;
    assert_eq!(lines.len(), 15, "{lines:?}");
    for (name, result) in &lines {
        let expected = if name == "unix-pair" { "ok" } else { EACCES };
        assert_eq!(result, expected, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_with_the_network_opens_tcp_and_udp_sockets_and_nothing_else() {
    let (t, bin) = probe_host(true).await;
    let lines = probe(&t, &bin, "sockets").await;
    for (name, result) in &lines {
        let expected = match name.as_str() {
            "tcp" | "tcp6" | "udp" | "udp6" | "unix-pair" => "ok",
            _ => EACCES,
        };
        assert_eq!(result, expected, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_cannot_reach_the_kernel_entry_points_it_never_needs() {
    let (t, bin) = probe_host(true).await;
    let lines = probe(&t, &bin, "calls").await;
    assert_eq!(lines.len(), 8, "{lines:?}");
    for (name, result) in &lines {
        assert_eq!(result, EPERM, "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_of_a_root_host_runs_unprivileged_with_no_groups_or_capabilities() {
    let (t, bin) = probe_host(false).await;
    let program = bin.path().join("probe").display().to_string();
    let out = run(&t, json!({"program": program, "args": ["id"]}))
        .await
        .unwrap();
    let line = out["stdout"].as_str().unwrap().trim().to_owned();
    // SAFETY: geteuid has no preconditions.
    let host_uid = unsafe { libc::geteuid() };
    if host_uid == 0 {
        assert_eq!(
            line,
            "uid=65534 gid=65534 groups=0 capbnd=0000000000000000 capeff=0000000000000000"
        );
    } else {
        assert!(line.starts_with(&format!("uid={host_uid} ")), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_left_by_a_child_that_exits_normally_ends_with_it() {
    modhost::subprocess::cgroup::cgroups()
        .expect("the machines this host is built for have a cgroup v2 hierarchy");
    let t = host().await;
    let out = run(&t, json!({"program": "sh", "args": ["-c", DAEMON]}))
        .await
        .unwrap();
    assert_eq!(out["status"], json!({"code": 0}), "{out}");
    let pid: i32 = std::fs::read_to_string(data_dir(&t).join("daemon"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    for _ in 0..100 {
        if is_gone(pid) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(is_gone(pid), "daemon {pid} outlived its child");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_works_in_what_the_host_put_in_its_data_directory_before_and_after() {
    let t = host().await;
    let dir = data_dir(&t);
    std::fs::create_dir(dir.join("before")).unwrap();
    std::fs::write(dir.join("before/old.txt"), "old\n").unwrap();
    // The first launch shares the directory with the child user ...
    run(&t, json!({"program": "printenv"})).await.unwrap();
    // ... and what the host makes in it later inherits that.
    std::fs::create_dir(dir.join("after")).unwrap();
    let out = run(&t, json!({"program": "sh", "args": ["-c", WRITES]}))
        .await
        .unwrap();
    assert_eq!(out["status"], json!({"code": 0}), "{out}");
    assert_eq!(out["stdout"], "old\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("after/b.txt")).unwrap(),
        "b\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_swapped_under_a_path_argument_never_reaches_the_host_or_another_tenant() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let t = host().await;
    let dir = data_dir(&t);
    std::fs::write(t.state.path().join("secret"), "host secret").unwrap();
    let globex = dir.parent().unwrap().join("org-globex");
    std::fs::create_dir_all(&globex).unwrap();
    std::fs::write(globex.join("notes.txt"), "globex secret").unwrap();
    std::fs::write(dir.join("swap"), "inside").unwrap();
    // Another process of the module's swaps `swap` between a file of its
    // own and symlinks out, as fast as it can, while the guest asks for
    // `cat swap` again and again: the check sees one, the child may open
    // the other.
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, dir) = (stop.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for target in ["../org-globex/notes.txt", "../../../secret"] {
                    let _ = std::fs::remove_file(dir.join("next"));
                    let _ = std::os::unix::fs::symlink(target, dir.join("next"));
                    let _ = std::fs::rename(dir.join("next"), dir.join("swap"));
                    let _ = std::fs::write(dir.join("next"), "inside");
                    let _ = std::fs::rename(dir.join("next"), dir.join("swap"));
                    swaps += 2;
                }
            }
            swaps
        })
    };
    let (mut inside, mut refused, mut kernel_denied, mut leaked) = (0, 0, 0, Vec::new());
    for _ in 0..400 {
        match run(&t, json!({"program": "cat", "args": ["swap"]})).await {
            Err(SdkError::PermissionDenied(_)) => refused += 1,
            Err(other) => panic!("{other:?}"),
            Ok(out) => {
                let stdout = out["stdout"].as_str().unwrap().to_owned();
                if stdout.contains("secret") {
                    leaked.push(stdout);
                } else if stdout == "inside" {
                    inside += 1;
                } else {
                    kernel_denied += 1;
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!(
        "{swaps} swaps: {inside} read inside, {refused} refused by the check, {kernel_denied} opened a symlink past the check and were denied by the kernel"
    );
    assert!(leaked.is_empty(), "{leaked:?}");
    assert!(
        refused > 0 && inside + kernel_denied > 0,
        "the swaps did not race the calls: {refused} refused, {} passed the check",
        inside + kernel_denied
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_child_runs_while_its_data_directory_is_at_its_quota() {
    let mut t = TestHost::with_options(|o| {
        o.data_quota.measure_every = Duration::from_millis(50);
        o.data_quota.min_remeasure = Duration::ZERO;
    });
    let grant = "[filesystem]\nmax-mib = 1\n\n[[subprocess.programs]]\nprogram = \"printenv\"\nargs = [[]]\n";
    t.load("sub", SUBPROCESS, grant).await;
    run(&t, json!({"program": "printenv"})).await.unwrap();
    std::fs::write(data_dir(&t).join("big.bin"), vec![7u8; 1_200_000]).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    match run(&t, json!({"program": "printenv"})).await {
        Err(SdkError::LimitExceeded(reason)) => assert!(reason.contains("max-mib"), "{reason}"),
        other => panic!("expected limit-exceeded, got {other:?}"),
    }
    let limited = over_a_cap(&t).await;
    assert_eq!(limited.len(), 1);
    // Another organization's directory is its own.
    let other = t
        .host
        .call_action(
            "sub",
            "run",
            &json!({"program": "printenv"}).to_string(),
            &principal("bob", "globex"),
            RequestMeta::fresh(),
        )
        .await;
    assert!(other.is_ok(), "{other:?}");
    // Under the quota again, children run.
    std::fs::remove_file(data_dir(&t).join("big.bin")).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    run(&t, json!({"program": "printenv"})).await.unwrap();
}
