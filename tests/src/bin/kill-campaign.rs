//! The kill -9 campaign: a real `modhost serve` on one state directory,
//! killed with SIGKILL at random points while a client keeps it busy, and
//! restarted, cycle after cycle; then what survived is checked.
//!
//! The client submits tasks without pause: counting tasks that store a
//! checkpoint at every step and resume from it, tasks held active under a
//! few keys, no-ops, and tasks that ask a confirmation, which it answers
//! (always the same button for one task). It keeps a granted child process
//! running. Every id the API acknowledged, and every answer it accepted, is
//! recorded. One cycle in five is killed within moments of the start,
//! during the recovery of the previous one.
//!
//! After each kill, with the host gone: the database passes `PRAGMA
//! integrity_check`; no key has two active tasks; no counting task's stored
//! checkpoint is older than at the previous kill; no child of the host is
//! left (nor a zombie of it). At the end a last host runs every task to its
//! end, and: every acknowledged task is there; every counting task's last
//! run started from the checkpoint stored at the last kill it lived
//! through, or later; every accepted answer is the one its task ended with.
//!
//! Usage: `kill-campaign [--cycles N] [--seed S]` (default 1000 cycles).
//! Prints the counts; exits 1 when any of them is not 0.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modhost::client::Client;
use modhost_tests::serve::{Serve, modules};
use modhost_tests::{CONFIRM, SUBPROCESS, TASKS_BASIC};
use serde_json::{Value, json};

/// Tasks of these modules never hit their deadline in a cycle, and the
/// [`KEYS`] held tasks leave room for the others to run.
const LIMITS: &str = "[limits]\ntask-deadline-ms = 600000\n[tasks]\nmax-concurrent = 32\n\
    max-active-per-user = 1000\nmax-active-per-module = 2000";

/// The child every cycle keeps running: `sleep` for this many seconds, a
/// number no other process on the machine is likely to sleep for.
const CHILD_SECONDS: &str = "31415";

const SUBPROCESS_GRANT: &str = r#"[limits]
task-deadline-ms = 600000

[subprocess]
timeout-ms = 600000

[[subprocess.programs]]
program = "sleep"
args = [["{int}"]]
"#;

/// Submissions in flight at once.
const SUBMITTERS: u32 = 4;

/// Keys of the tasks held active.
const KEYS: u32 = 8;

/// Steps of a counting task, and the pause after each.
const COUNT_TO: u32 = 10;
const COUNT_PAUSE_MS: u64 = 20;

/// The pause between two submissions: about a hundred a second, which the
/// host keeps up with, so that the backlog does not grow over the cycles.
const SUBMIT_PAUSE: Duration = Duration::from_millis(8);

/// How long the final host may take to end every task.
const SETTLE: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    let mut cycles = 1000;
    let mut seed = 0x5eed_u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match (arg.as_str(), value.parse::<u64>()) {
            ("--cycles", Ok(n)) => cycles = u32::try_from(n).unwrap_or(u32::MAX),
            ("--seed", Ok(s)) => seed = s,
            _ => {
                eprintln!("usage: kill-campaign [--cycles N] [--seed S]");
                return ExitCode::from(2);
            }
        }
    }
    let report = modhost_tests::runtime().block_on(campaign(cycles, seed));
    println!("{report}");
    if report.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// What the campaign counted.
#[derive(Debug, Default)]
struct Report {
    cycles: u32,
    acknowledged: usize,
    answers: usize,
    refused: usize,
    lost: usize,
    duplicated: usize,
    older_checkpoint: usize,
    changed_answers: usize,
    corrupt: usize,
    orphans: usize,
    zombies: usize,
    /// Counting tasks that resumed from a checkpoint after a kill.
    resumed: usize,
}

impl Report {
    fn clean(&self) -> bool {
        self.lost
            + self.duplicated
            + self.older_checkpoint
            + self.changed_answers
            + self.corrupt
            + self.orphans
            + self.zombies
            == 0
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cycles {}, acknowledged submits {} (not acknowledged {}), accepted answers {}, \
             resumed from a checkpoint {}: \
             lost {}, duplicated {}, resumed-from-older-checkpoint {}, changed answers {}, \
             corrupt {}, orphans {}, zombies {}",
            self.cycles,
            self.acknowledged,
            self.refused,
            self.answers,
            self.resumed,
            self.lost,
            self.duplicated,
            self.older_checkpoint,
            self.changed_answers,
            self.corrupt,
            self.orphans,
            self.zombies
        )
    }
}

/// What the client was told, across cycles.
#[derive(Debug, Default)]
struct Acks {
    /// Acknowledged task ids, and what kind of task each is.
    tasks: BTreeMap<String, Kind>,
    /// Accepted answers: task id to button.
    answers: BTreeMap<String, String>,
    /// Submissions the API did not acknowledge.
    refused: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Count,
    Keyed,
    Noop,
    Confirm,
}

/// A small seeded generator: the kill points of a campaign repeat with its
/// seed (what the host does meanwhile does not).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

async fn campaign(cycles: u32, seed: u64) -> Report {
    let dir = modules(&[
        ("work", TASKS_BASIC, LIMITS),
        ("confirm", CONFIRM, LIMITS),
        ("sub", SUBPROCESS, SUBPROCESS_GRANT),
    ]);
    let state = tempfile::tempdir().expect("a state directory");
    let db = state.path().join("modhost.db");
    let acks = Arc::new(Mutex::new(Acks::default()));
    let mut rng = Rng(seed | 1);
    let mut report = Report::default();
    // The checkpoint each counting task had stored at the last kill it
    // lived through.
    let mut checkpoints: BTreeMap<String, u64> = BTreeMap::new();
    let mut token = None;
    for cycle in 0..cycles {
        let during_recovery = cycle > 0 && rng.below(5) == 0;
        let (mut host, ready) = Serve::launch_on("campaign", dir.path(), state.path(), &[]);
        if during_recovery {
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        } else {
            let (url, made) = tokio::time::timeout(modhost_tests::serve::PATIENCE, ready)
                .await
                .expect("the host starts")
                .expect("the host says where it listens");
            host.url = url;
            token = token.or(made);
            let client = Client::new(
                &host.url,
                token.as_deref().expect("the first host makes a token"),
            )
            .expect("a client");
            let busy = tokio::spawn(keep_busy(client, Arc::clone(&acks)));
            tokio::time::sleep(Duration::from_millis(100 + rng.below(1400))).await;
            busy.abort();
        }
        host.kill();
        report.cycles += 1;
        after_kill(&db, &mut checkpoints, &mut report);
        if report.cycles % 50 == 0 {
            let acked = acks.lock().expect("acks").tasks.len();
            eprintln!("{} cycles, {acked} acknowledged so far", report.cycles);
        }
    }
    settle(dir.path(), state.path(), token.as_deref(), &acks).await;
    check_final(&db, &acks.lock().expect("acks"), &checkpoints, &mut report);
    report
}

/// Submits, answers and keeps a child running through `client` until
/// aborted, recording what the API acknowledged.
async fn keep_busy(client: Client, acks: Arc<Mutex<Acks>>) {
    let mut helpers = AbortOnDrop(Vec::new());
    helpers.0.push({
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                let run = json!({"program": "sleep", "args": [CHILD_SECONDS]});
                let _ = client.call_action("sub", "run", &run.to_string()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    helpers.0.push({
        let (client, acks) = (client.clone(), Arc::clone(&acks));
        tokio::spawn(async move {
            loop {
                answer_waiting(&client, &acks).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    });
    let submitters = (0..SUBMITTERS).map(|s| {
        let (client, acks) = (client.clone(), Arc::clone(&acks));
        tokio::spawn(submit_on(client, acks, s))
    });
    helpers.0.extend(submitters);
    std::future::pending::<()>().await;
}

/// Submits one task after another through `client`, the kinds in turn
/// from the `first`-th, recording each acknowledged id.
async fn submit_on(client: Client, acks: Arc<Mutex<Acks>>, first: u32) {
    let mut i = first;
    loop {
        let (kind, call) = match i % 4 {
            0 => (
                Kind::Count,
                (
                    "work",
                    "submit",
                    json!({"task": "count", "resumable": true,
                    "args": {"to": COUNT_TO, "pause_ms": COUNT_PAUSE_MS}}),
                ),
            ),
            1 => (
                Kind::Keyed,
                (
                    "work",
                    "submit",
                    json!({"task": "sleep", "key": format!("k{}", i % KEYS)}),
                ),
            ),
            2 => (Kind::Noop, ("work", "submit", json!({"task": "noop"}))),
            _ => (Kind::Confirm, ("confirm", "start", json!({}))),
        };
        i = i.wrapping_add(1);
        match client
            .call_action(call.0, call.1, &call.2.to_string())
            .await
        {
            Ok(out) => match task_id(&out) {
                Some(id) => {
                    acks.lock().expect("acks").tasks.insert(id, kind);
                }
                None => eprintln!("no task id in {out}"),
            },
            // Refused (a quota), or cut off by the kill: not acknowledged.
            Err(_) => acks.lock().expect("acks").refused += 1,
        }
        tokio::time::sleep(SUBMIT_PAUSE).await;
    }
}

/// Tasks that end with what spawned them.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// The task id an action answered (`{data: {id}}`).
fn task_id(out: &Value) -> Option<String> {
    out["data"]["id"].as_str().map(str::to_owned)
}

/// The button the client presses for task `id`: always the same one.
fn button_for(id: &str) -> &'static str {
    if id.bytes().map(u32::from).sum::<u32>() % 2 == 0 {
        "yes"
    } else {
        "no"
    }
}

/// Answers every task waiting for a confirmation.
async fn answer_waiting(client: &Client, acks: &Mutex<Acks>) {
    let query = [("status", "waiting-confirmation".to_owned())];
    let Ok(page) = client.tasks(&query).await else {
        return;
    };
    for task in page["tasks"].as_array().into_iter().flatten() {
        let Some(id) = task["id"].as_str() else {
            continue;
        };
        let button = button_for(id);
        let asked_at = task["confirmation"]["asked_at"].as_i64();
        if client
            .confirm(id, button, json!({}), asked_at)
            .await
            .is_ok()
        {
            acks.lock()
                .expect("acks")
                .answers
                .insert(id.to_owned(), button.to_owned());
        }
    }
}

/// The database of a dead host, read only.
fn open(db: &Path) -> Option<rusqlite::Connection> {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).ok()
}

/// Whether the database passes `PRAGMA integrity_check` (what it found is
/// printed when it does not).
fn intact(conn: &rusqlite::Connection) -> bool {
    let found: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap_or_else(|e| e.to_string());
    if found != "ok" {
        eprintln!("integrity_check: {found}");
    }
    found == "ok"
}

/// The checks with the host gone.
fn after_kill(db: &Path, checkpoints: &mut BTreeMap<String, u64>, report: &mut Report) {
    report.orphans += orphans();
    report.zombies += zombies();
    let Some(conn) = open(db) else {
        // Killed before it made its database.
        return;
    };
    report.corrupt += usize::from(!intact(&conn));
    let duplicated: i64 = conn
        .query_row(
            "SELECT count(*) FROM (SELECT 1 FROM tasks WHERE task_key IS NOT NULL \
             AND finished_at IS NULL GROUP BY module, organization_id, task_key \
             HAVING count(*) > 1)",
            [],
            |r| r.get(0),
        )
        .unwrap_or(0);
    report.duplicated += usize::try_from(duplicated).unwrap_or(0);
    let mut stored = conn
        .prepare(
            "SELECT id, json_extract(checkpoint_json, '$.n') FROM tasks \
             WHERE task_name = 'count' AND finished_at IS NULL AND checkpoint_json IS NOT NULL",
        )
        .expect("the checkpoint query");
    let rows = stored
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
        .expect("checkpoints");
    for (id, n) in rows.flatten() {
        let n = u64::try_from(n).unwrap_or(0);
        let before = checkpoints.insert(id.clone(), n).unwrap_or(0);
        if n < before {
            eprintln!("task {id}: checkpoint {n} after {before}");
            report.older_checkpoint += 1;
        }
    }
}

/// Children of a dead host still alive: `sleep CHILD_SECONDS` processes,
/// given a moment to get their parent's death signal. They are killed, so
/// that one cycle's are not counted again.
fn orphans() -> usize {
    let started = Instant::now();
    loop {
        let left = processes(|cmdline, _| cmdline == format!("sleep\0{CHILD_SECONDS}\0"));
        if left.is_empty() || started.elapsed() > Duration::from_secs(5) {
            for pid in &left {
                eprintln!("orphan: pid {pid}");
                // SAFETY: kill has no memory preconditions.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
            return left.len();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Zombies whose parent is this process (a host not reaped).
fn zombies() -> usize {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    processes(|_, stat| {
        let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
        let mut fields = after.split_whitespace();
        let state = fields.next();
        let parent = fields.next().and_then(|p| p.parse::<i32>().ok());
        state == Some("Z") && parent == Some(me)
    })
    .len()
}

/// The pids of `/proc` for whose command line and `stat` `wanted` holds.
fn processes(wanted: impl Fn(&str, &str) -> bool) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            wanted(&String::from_utf8_lossy(&cmdline), &stat)
        })
        .collect()
}

/// A last host, which runs every task to its end: held tasks are
/// cancelled, questions answered as before, counting tasks left to finish.
async fn settle(dir: &Path, state: &Path, token: Option<&str>, acks: &Mutex<Acks>) {
    let host = Serve::start_on("campaign", dir, state, &[]).await;
    let token = token.or(host.token.as_deref()).expect("a token");
    let client = Client::new(&host.url, token).expect("a client");
    let db = state.join("modhost.db");
    let started = Instant::now();
    loop {
        answer_waiting(&client, acks).await;
        let active = active_tasks(&db);
        for (id, task) in &active {
            if task == "sleep" {
                let _ = client.cancel(id).await;
            }
        }
        if active.is_empty() || started.elapsed() > SETTLE {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(host);
}

/// The ids and task names of the active tasks.
fn active_tasks(db: &Path) -> Vec<(String, String)> {
    let Some(conn) = open(db) else {
        return Vec::new();
    };
    let Ok(mut active) = conn.prepare("SELECT id, task_name FROM tasks WHERE finished_at IS NULL")
    else {
        return Vec::new();
    };
    active
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map(|rows| rows.flatten().collect())
        .unwrap_or_default()
}

/// The checks of the end.
fn check_final(db: &Path, acks: &Acks, checkpoints: &BTreeMap<String, u64>, report: &mut Report) {
    report.acknowledged = acks.tasks.len();
    report.answers = acks.answers.len();
    report.refused = acks.refused;
    let conn = open(db).expect("the campaign's database");
    report.corrupt += usize::from(!intact(&conn));
    let mut read = conn
        .prepare("SELECT status, result_json FROM tasks WHERE id = ?1")
        .expect("the task query");
    let mut still_active = BTreeSet::new();
    for (id, kind) in &acks.tasks {
        let row = read
            .query_row([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .ok();
        let Some((status, result)) = row else {
            eprintln!("lost: {id}");
            report.lost += 1;
            continue;
        };
        if ["pending", "running", "waiting-confirmation"].contains(&status.as_str()) {
            still_active.insert(id.clone());
        }
        let result: Value = result
            .and_then(|r| serde_json::from_str::<Value>(&r).ok())
            .unwrap_or(Value::Null);
        match kind {
            Kind::Count if status == "completed" => {
                let from = result["from"].as_u64().unwrap_or(0);
                let stored = checkpoints.get(id).copied().unwrap_or(0);
                if stored > 0 {
                    report.resumed += 1;
                }
                if from < stored {
                    eprintln!("task {id}: its last run started at {from}, stored {stored}");
                    report.older_checkpoint += 1;
                }
            }
            Kind::Confirm if status == "completed" => {
                if let Some(button) = acks.answers.get(id)
                    && result["answer"]["button"].as_str() != Some(button.as_str())
                {
                    eprintln!("task {id}: answered {button}, ended with {result}");
                    report.changed_answers += 1;
                }
            }
            _ => {}
        }
    }
    if !still_active.is_empty() {
        eprintln!("{} tasks still active after {SETTLE:?}", still_active.len());
    }
}
