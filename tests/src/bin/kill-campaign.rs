//! The kill -9 campaign: real `modhost serve` processes, one of them killed
//! with SIGKILL at random points while a client keeps them busy, and
//! restarted, cycle after cycle; then what survived is checked.
//!
//! On the embedded store (the default) one host on one state directory is
//! killed. With `--store postgres://…` (an empty database) or `--store
//! postgres` (a throwaway cluster of its own) two hosts share the database:
//! host `b` stays up, host `a` is killed and restarted, and the client
//! works through both.
//!
//! The client submits tasks without pause: counting tasks that store a
//! checkpoint at every step and resume from it, tasks held active under a
//! few keys, no-ops, and tasks that ask a confirmation, which it answers
//! (always the same button for one task). It keeps a granted child process
//! running on every host. Every id the API acknowledged, and every answer
//! it accepted, is recorded. One cycle in five is killed within moments of
//! the start, during the recovery of the previous one.
//!
//! After each kill: the database is whole (SQLite's `PRAGMA
//! integrity_check`; PostgreSQL's `amcheck` of every index); no key has two
//! active tasks; no counting task's stored checkpoint is older than at the
//! previous kill; no child of the killed host is left (nor a zombie of it).
//! At the end a last host runs every task to its end, and: every
//! acknowledged task is there; every counting task whose run was started
//! again after a kill started from the checkpoint stored at that kill, or
//! later; every accepted answer is the one its task ended with.
//!
//! Usage: `kill-campaign [--cycles N] [--seed S] [--store postgres[://…]]`
//! (default 1000 cycles on the embedded store). Prints the counts; exits 1
//! when any of them is not 0.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modhost::client::Client;
use modhost_tests::postgres::Cluster;
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
    let mut store = None;
    let usage = || {
        eprintln!("usage: kill-campaign [--cycles N] [--seed S] [--store postgres[://…]]");
        ExitCode::from(2)
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match (arg.as_str(), value.parse::<u64>()) {
            ("--cycles", Ok(n)) => cycles = u32::try_from(n).unwrap_or(u32::MAX),
            ("--seed", Ok(s)) => seed = s,
            ("--store", _) if value == "postgres" || value.starts_with("postgres://") => {
                store = Some(value);
            }
            _ => return usage(),
        }
    }
    let report = modhost_tests::runtime().block_on(async move {
        match store.as_deref() {
            None => campaign(cycles, seed, None).await,
            Some("postgres") => {
                let cluster = tokio::task::spawn_blocking(Cluster::start)
                    .await
                    .expect("a PostgreSQL cluster");
                let url = cluster.create_database("campaign");
                let report = campaign(cycles, seed, Some(&url)).await;
                drop(cluster);
                report
            }
            Some(url) => campaign(cycles, seed, Some(url)).await,
        }
    });
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

/// The lease of the hosts sharing PostgreSQL: short, so that renewals
/// and takeovers happen within a cycle.
const SHARED_LEASE: &str = "3s";

async fn campaign(cycles: u32, seed: u64, store: Option<&str>) -> Report {
    let dir = modules(&[
        ("work", TASKS_BASIC, LIMITS),
        ("confirm", CONFIRM, LIMITS),
        ("sub", SUBPROCESS, SUBPROCESS_GRANT),
    ]);
    let state = tempfile::tempdir().expect("a state directory");
    let db = match store {
        None => Db::Sqlite(state.path().join("modhost.db")),
        Some(url) => Db::postgres(url).await,
    };
    let args: Vec<&str> = match store {
        None => Vec::new(),
        Some(url) => vec![
            "--store",
            url,
            "--host-id",
            "a",
            "--task-lease",
            SHARED_LEASE,
        ],
    };
    // The host that stays up, on a shared store.
    let survivor = match store {
        None => None,
        Some(url) => {
            let state = tempfile::tempdir().expect("a state directory");
            let args = [
                "--store",
                url,
                "--host-id",
                "b",
                "--task-lease",
                SHARED_LEASE,
            ];
            let host = Serve::start_on("b", dir.path(), state.path(), &args).await;
            Some((host, state))
        }
    };
    let acks = Arc::new(Mutex::new(Acks::default()));
    let mut rng = Rng(seed | 1);
    let mut report = Report::default();
    // What each counting task had stored at the last kill it lived through.
    let mut checkpoints: BTreeMap<String, Stored> = BTreeMap::new();
    let mut token = survivor.as_ref().and_then(|(b, _)| b.token.clone());
    let survivor_client = |token: &str| {
        survivor
            .as_ref()
            .map(|(b, _)| Client::new(&b.url, token).expect("a client"))
    };
    for cycle in 0..cycles {
        let during_recovery = cycle > 0 && rng.below(5) == 0;
        let (mut host, ready) = Serve::launch_on("a", dir.path(), state.path(), &args);
        let mut busy = None;
        if during_recovery {
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
        } else {
            let (url, made) = tokio::time::timeout(modhost_tests::serve::PATIENCE, ready)
                .await
                .expect("the host starts")
                .expect("the host says where it listens");
            host.url = url;
            token = token.or(made);
            let token = token.as_deref().expect("the first host makes a token");
            let clients: Vec<Client> =
                std::iter::once(Client::new(&host.url, token).expect("a client"))
                    .chain(survivor_client(token))
                    .collect();
            busy = Some(tokio::spawn(keep_busy(clients, Arc::clone(&acks))));
            tokio::time::sleep(Duration::from_millis(100 + rng.below(1400))).await;
        }
        host.kill();
        if let Some(busy) = busy {
            busy.abort();
        }
        report.cycles += 1;
        let alive: Vec<i32> = survivor.iter().map(|(b, _)| b.pgid()).collect();
        after_kill(&db, &alive, &mut checkpoints, &mut report).await;
        if report.cycles % 50 == 0 {
            let acked = acks.lock().expect("acks").tasks.len();
            eprintln!("{} cycles, {acked} acknowledged so far", report.cycles);
        }
    }
    let token = token.expect("a host made a token");
    settle(dir.path(), state.path(), &args, &token, &db, &acks).await;
    drop(survivor);
    let acks = std::mem::take(&mut *acks.lock().expect("acks"));
    check_final(&db, &acks, &checkpoints, &mut report).await;
    report
}

/// Where the hosts store their tasks, as the campaign reads it.
enum Db {
    /// The embedded store's file, read only while no host runs.
    Sqlite(std::path::PathBuf),
    /// The shared database, read while the survivor runs.
    Postgres(tokio_postgres::Client),
}

impl Db {
    async fn postgres(url: &str) -> Db {
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connecting to the campaign's database");
        tokio::spawn(connection);
        Db::Postgres(client)
    }

    /// Rows of `sql` (text columns, or bigint ones as text) with `id` bound
    /// to its one parameter when given; none before the hosts made the
    /// tables.
    async fn rows(
        &self,
        sqlite: &str,
        postgres: &str,
        id: Option<&str>,
    ) -> Vec<Vec<Option<String>>> {
        match self {
            Db::Sqlite(path) => {
                let Some(conn) = open(path) else {
                    return Vec::new();
                };
                let mut statement = match conn.prepare(sqlite) {
                    Ok(statement) => statement,
                    Err(e) if e.to_string().contains("no such table") => return Vec::new(),
                    Err(e) => panic!("{sqlite}: {e}"),
                };
                let n = statement.column_count();
                let params: Vec<&dyn rusqlite::ToSql> =
                    id.iter().map(|i| i as &dyn rusqlite::ToSql).collect();
                statement
                    .query_map(params.as_slice(), |r| {
                        (0..n).map(|c| r.get::<_, Option<String>>(c)).collect()
                    })
                    .and_then(|rows| rows.collect())
                    .unwrap_or_else(|e| panic!("{sqlite}: {e}"))
            }
            Db::Postgres(client) => {
                let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = id
                    .iter()
                    .map(|i| i as &(dyn tokio_postgres::types::ToSql + Sync))
                    .collect();
                match client.query(postgres, &params).await {
                    Ok(rows) => rows
                        .iter()
                        .map(|r| {
                            (0..r.len())
                                .map(|c| r.get::<_, Option<String>>(c))
                                .collect()
                        })
                        .collect(),
                    Err(e)
                        if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) =>
                    {
                        Vec::new()
                    }
                    Err(e) => panic!("{postgres}: {e}"),
                }
            }
        }
    }

    /// Keys with two active tasks or more.
    async fn duplicated_keys(&self) -> usize {
        let sql = "SELECT task_key FROM tasks WHERE task_key IS NOT NULL \
             AND finished_at IS NULL GROUP BY module, organization_id, task_key \
             HAVING count(*) > 1";
        self.rows(sql, sql, None).await.len()
    }

    /// The active counting tasks with a checkpoint: id, step, attempts.
    async fn counting(&self) -> Vec<(String, Stored)> {
        let rows = self
            .rows(
                "SELECT id, CAST(json_extract(checkpoint_json, '$.n') AS TEXT), \
                 CAST(attempts AS TEXT) FROM tasks WHERE task_name = 'count' \
                 AND finished_at IS NULL AND checkpoint_json IS NOT NULL",
                "SELECT id, checkpoint_json::jsonb->>'n', attempts::text FROM tasks \
                 WHERE task_name = 'count' AND finished_at IS NULL AND checkpoint_json IS NOT NULL",
                None,
            )
            .await;
        rows.into_iter()
            .filter_map(|r| {
                let number = |c: usize| r.get(c)?.as_deref()?.parse::<u64>().ok();
                let id = r.first()?.clone()?;
                Some((
                    id,
                    Stored {
                        step: number(1)?,
                        attempts: number(2)?,
                    },
                ))
            })
            .collect()
    }

    /// Whether the database is whole; what it found is printed when not.
    async fn intact(&self) -> bool {
        match self {
            Db::Sqlite(path) => open(path).is_none_or(|conn| intact(&conn)),
            Db::Postgres(client) => {
                let checked = client
                    .batch_execute(
                        "CREATE EXTENSION IF NOT EXISTS amcheck; \
                         SELECT bt_index_check(i.indexrelid, true) FROM pg_index i \
                         JOIN pg_class c ON c.oid = i.indexrelid \
                         JOIN pg_am am ON am.oid = c.relam \
                         WHERE am.amname = 'btree' AND c.relnamespace = 'public'::regnamespace",
                    )
                    .await;
                if let Err(e) = &checked {
                    eprintln!("amcheck: {e}");
                }
                checked.is_ok()
            }
        }
    }

    /// The ids and task names of the active tasks.
    async fn active(&self) -> Vec<(String, String)> {
        let sql = "SELECT id, task_name FROM tasks WHERE finished_at IS NULL";
        self.rows(sql, sql, None)
            .await
            .into_iter()
            .filter_map(|r| Some((r.first()?.clone()?, r.get(1)?.clone()?)))
            .collect()
    }

    /// A task's status, result and attempts, if it is there.
    async fn outcome(&self, id: &str) -> Option<(String, Value, u64)> {
        let row = self
            .rows(
                "SELECT status, result_json, CAST(attempts AS TEXT) FROM tasks WHERE id = ?1",
                "SELECT status, result_json, attempts::text FROM tasks WHERE id = $1",
                Some(id),
            )
            .await
            .into_iter()
            .next()?;
        let status = row.first()?.clone()?;
        let result = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|r| serde_json::from_str::<Value>(&r).ok())
            .unwrap_or(Value::Null);
        let attempts = row.get(2)?.as_deref()?.parse().ok()?;
        Some((status, result, attempts))
    }
}

/// A counting task's checkpoint as stored at a kill, and the run it was
/// stored by (its attempt).
#[derive(Debug, Clone, Copy)]
struct Stored {
    step: u64,
    attempts: u64,
}

/// Submits, answers and keeps a child running through each of `clients`
/// (one per host) until aborted, recording what the API acknowledged.
async fn keep_busy(clients: Vec<Client>, acks: Arc<Mutex<Acks>>) {
    let mut helpers = AbortOnDrop(Vec::new());
    for client in &clients {
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
    }
    let submitters = (0..SUBMITTERS).map(|s| {
        let client = clients[s as usize % clients.len()].clone();
        tokio::spawn(submit_on(client, Arc::clone(&acks), s))
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

/// The checks once a host was killed; `alive` are the hosts still up.
async fn after_kill(
    db: &Db,
    alive: &[i32],
    checkpoints: &mut BTreeMap<String, Stored>,
    report: &mut Report,
) {
    report.orphans += orphans(alive);
    report.zombies += zombies();
    report.corrupt += usize::from(!db.intact().await);
    report.duplicated += db.duplicated_keys().await;
    for (id, now) in db.counting().await {
        let before = checkpoints.insert(id.clone(), now);
        if let Some(before) = before
            && now.step < before.step
        {
            eprintln!("task {id}: checkpoint {now:?} after {before:?}");
            report.older_checkpoint += 1;
        }
    }
}

/// Children of a killed host still alive: `sleep CHILD_SECONDS` processes
/// none of whose ancestors is a host in `alive`, given a moment to get their
/// parent's death signal. They are killed, so that one cycle's are not
/// counted again.
fn orphans(alive: &[i32]) -> usize {
    let started = Instant::now();
    loop {
        let left: Vec<i32> = processes(|cmdline, _| cmdline == format!("sleep\0{CHILD_SECONDS}\0"))
            .into_iter()
            .filter(|pid| !ancestors(*pid).iter().any(|a| alive.contains(a)))
            .collect();
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

/// The parent, grandparent… of `pid`, up to the first process.
fn ancestors(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut at = pid;
    while at > 1 && out.len() < 64 {
        let stat = std::fs::read_to_string(format!("/proc/{at}/stat")).unwrap_or_default();
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, after)| after.split_whitespace().nth(1)?.parse::<i32>().ok());
        match parent {
            Some(p) if p > 0 => {
                out.push(p);
                at = p;
            }
            _ => break,
        }
    }
    out
}

/// The state and parent of a process, from its `stat`.
fn state_and_parent(stat: &str) -> (Option<&str>, Option<i32>) {
    let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
    let mut fields = after.split_whitespace();
    let state = fields.next();
    (state, fields.next().and_then(|p| p.parse::<i32>().ok()))
}

/// Zombies whose parent is this process (a host not reaped).
fn zombies() -> usize {
    let me = i32::try_from(std::process::id()).unwrap_or(0);
    processes(|_, stat| state_and_parent(stat) == (Some("Z"), Some(me))).len()
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

/// A last host `a` (beside the survivor, on a shared store), which runs
/// every task to its end: held tasks are cancelled, questions answered as
/// before, counting tasks left to finish.
async fn settle(dir: &Path, state: &Path, args: &[&str], token: &str, db: &Db, acks: &Mutex<Acks>) {
    let host = Serve::start_on("a", dir, state, args).await;
    let client = Client::new(&host.url, token).expect("a client");
    let started = Instant::now();
    loop {
        answer_waiting(&client, acks).await;
        let active = db.active().await;
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

/// The checks of the end.
async fn check_final(
    db: &Db,
    acks: &Acks,
    checkpoints: &BTreeMap<String, Stored>,
    report: &mut Report,
) {
    report.acknowledged = acks.tasks.len();
    report.answers = acks.answers.len();
    report.refused = acks.refused;
    report.corrupt += usize::from(!db.intact().await);
    let mut still_active = BTreeSet::new();
    for (id, kind) in &acks.tasks {
        let Some((status, result, attempts)) = db.outcome(id).await else {
            eprintln!("lost: {id}");
            report.lost += 1;
            continue;
        };
        if ["pending", "running", "waiting-confirmation"].contains(&status.as_str()) {
            still_active.insert(id.clone());
        }
        match kind {
            Kind::Count if status == "completed" => {
                // Only a run started after the kill had to resume; one
                // that was running then (on the host that stayed up)
                // started before it.
                let Some(stored) = checkpoints.get(id) else {
                    continue;
                };
                if attempts <= stored.attempts {
                    continue;
                }
                report.resumed += 1;
                let from = result["from"].as_u64().unwrap_or(0);
                if from < stored.step {
                    eprintln!("task {id}: its last run started at {from}, stored {stored:?}");
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
