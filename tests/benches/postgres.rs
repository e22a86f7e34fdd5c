//! The task store on PostgreSQL, beside raw tokio-postgres on the same
//! schema, server and machine. The server flushes every commit to disk
//! (`fsync`, `synchronous_commit` and `full_page_writes` on: its defaults).
//!
//! Run: `cargo bench -p modhost-tests --bench postgres`.
//!
//! (a) no-op tasks submit -> claim -> finish through `PgTaskStore` by 1, 2
//!     and 3 hosts on one database, each host its own `connect` (its own
//!     writer and pool): a host submits its share with 256 in flight, then
//!     claims 256 at a time and finishes each under its lease until nothing
//!     is pending; min/median/max over the runs, each on a fresh database;
//! (b) raw inserts of as many finished rows from as many connections, 500
//!     per transaction: pipelined one-row INSERTs, and one 500-row INSERT;
//! (c) where the time goes: one more store run per host count with
//!     pg_stat_statements on, the connections' wait events sampled, and the
//!     CPU time of the hosts' process and of the server's;
//! (d) the 50 newest tasks of a key prefix matching ~1,000 of 1M rows
//!     through `by_key_prefix`, beside the query of the covering index alone.
//!
//! `TASKS` (per run), `RUNS`, `ROWS` and `LOOKUPS` in the environment change
//! the sizes; the suite runs it at [`Sizes::SMOKE`] (`tests/tests/benches.rs`).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::join_all;
use modhost::tasks::store::postgres::{MIGRATIONS, PgTaskStore};
use modhost::tasks::store::{
    HostId, NewTask, Outcome, Quota, Scope, Submitted, TaskStore, Want, prefix_successor,
};
use modhost_tests::postgres::Cluster;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

/// Submissions one host keeps in flight.
const SUBMITTERS: usize = 256;
/// Most tasks one claim takes.
const CLAIM: u32 = 256;
/// Rows per transaction of the raw inserts.
const RAW_BATCH: usize = 500;
/// The lease of a claimed task; no-op tasks end long before it runs out.
const LEASE: Duration = Duration::from_secs(60);
/// How many hosts (and raw connections) each measurement runs with.
const HOSTS: [usize; 3] = [1, 2, 3];
/// Key prefixes of the lookup table: each matches `rows / PREFIX_GROUPS`.
const PREFIX_GROUPS: usize = 1_000;
/// Tasks one lookup returns, newest first.
const NEWEST: u32 = 50;
/// How often the writers' wait events are sampled in (c).
const SAMPLE_EVERY: Duration = Duration::from_millis(5);
/// Server settings beyond the defaults: statement statistics loaded, but
/// collected only in the databases of (c) and (d); room in pg_stat_activity
/// for the store's statements, longer than its default 1 kB.
const SERVER: &[&str] = &[
    "shared_preload_libraries=pg_stat_statements",
    "pg_stat_statements.track=none",
    "track_activity_query_size=16384",
];

/// How much each part does.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    /// Tasks of one run of (a), and rows of one of (b).
    pub tasks: usize,
    /// Runs of (a) and of (b) per host count.
    pub runs: usize,
    /// Rows of the lookup table of (d).
    pub rows: usize,
    /// Lookups of (d), through the store and raw each.
    pub lookups: usize,
}

impl Sizes {
    /// What `cargo bench` runs.
    pub const FULL: Sizes = Sizes {
        tasks: 10_000,
        runs: 5,
        rows: 1_000_000,
        lookups: 1_000,
    };

    /// Seconds in all: what the suite runs so the bench keeps working.
    pub const SMOKE: Sizes = Sizes {
        tasks: 600,
        runs: 1,
        rows: 20_000,
        lookups: 50,
    };

    fn from_env() -> Sizes {
        let env_or = |name: &str, default: usize| {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Sizes {
            tasks: env_or("TASKS", Sizes::FULL.tasks),
            runs: env_or("RUNS", Sizes::FULL.runs).max(1),
            rows: env_or("ROWS", Sizes::FULL.rows),
            lookups: env_or("LOOKUPS", Sizes::FULL.lookups).max(1),
        }
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    run(Sizes::from_env());
}

/// Runs (a) to (d) and prints them; panics when a task or a lookup goes
/// wrong.
pub fn run(sizes: Sizes) {
    let cluster = Cluster::start_durable(SERVER);
    let rt = modhost_tests::runtime();
    let mut bench = Bench {
        cluster: &cluster,
        databases: 0,
    };
    let version = cluster.psql(&cluster.url(), "show server_version");
    let durable = cluster.psql(
        &cluster.url(),
        "select 'fsync=' || current_setting('fsync') || ', synchronous_commit=' \
         || current_setting('synchronous_commit') || ', full_page_writes=' \
         || current_setting('full_page_writes')",
    );
    println!("command: cargo bench -p modhost-tests --bench postgres");
    println!(
        "PostgreSQL {version} ({durable}) on this machine, {} cores, 2 tokio workers; \
         {} tasks per run, {} runs, each on a fresh database",
        std::thread::available_parallelism().map_or(0, usize::from),
        sizes.tasks,
        sizes.runs
    );

    // Interleaved, so that a slower minute of the machine spreads over all.
    let mut store = vec![Vec::new(); HOSTS.len()];
    let mut piped = vec![Vec::new(); HOSTS.len()];
    let mut multi = vec![Vec::new(); HOSTS.len()];
    for _ in 0..sizes.runs {
        for (i, hosts) in HOSTS.into_iter().enumerate() {
            let url = bench.database();
            let (r, _) = rt.block_on(store_run(&url, hosts, sizes.tasks, None));
            store[i].push(r);
            bench.drop_database(&url);
            for (insert, rates) in [(Raw::Pipelined, &mut piped), (Raw::MultiRow, &mut multi)] {
                let url = bench.database();
                let elapsed = rt.block_on(raw_run(&url, hosts, sizes.tasks, insert));
                rates[i].push(per_second(sizes.tasks, elapsed));
                bench.drop_database(&url);
            }
        }
    }

    println!(
        "(a) through the store: submit -> claim -> finish, tasks/s; (b) raw: finished rows, \
         {RAW_BATCH} per transaction, rows/s"
    );
    println!(
        "    min / median / max of {} runs; the phases are the median run's, the ratios the medians'",
        sizes.runs
    );
    println!(
        "    hosts  {:<23} {:>8} {:>13}  | {:<23} {:<23} | store / (b)",
        "(a) store", "submit", "claim+finish", "(b) pipelined INSERTs", "(b) 500-row INSERT"
    );
    for (i, hosts) in HOSTS.into_iter().enumerate() {
        let rates = Spread::of(store[i].iter().map(|r| per_second(sizes.tasks, r.total)));
        let median = median_run(&store[i]);
        let p = Spread::of(piped[i].iter().copied());
        let m = Spread::of(multi[i].iter().copied());
        println!(
            "    {hosts:>5}  {:<23} {:>6.2} s {:>11.2} s  | {:<23} {:<23} | {:.2}x  {:.2}x",
            rates.to_string(),
            median.submit.as_secs_f64(),
            median.work.as_secs_f64(),
            p.to_string(),
            m.to_string(),
            rates.median / p.median,
            rates.median / m.median
        );
    }

    println!("(c) where the time goes: one more store run per host count, statistics on");
    for hosts in HOSTS {
        let url = bench.database();
        let db = database_of(&url);
        cluster.psql(&url, "create extension pg_stat_statements");
        cluster.psql(
            &url,
            &format!("alter database {db} set pg_stat_statements.track = 'all'"),
        );
        // Migrated first, so that only the run is counted.
        drop(rt.block_on(PgTaskStore::connect(&url)).expect("connect"));
        cluster.psql(&url, "select pg_stat_statements_reset()");
        let (r, profile) = rt.block_on(store_run(&url, hosts, sizes.tasks, Some(&cluster.url())));
        println!(
            "    {hosts} host{}: {:.0} tasks/s (submit {:.2} s, claim+finish {:.2} s)",
            if hosts == 1 { "" } else { "s" },
            per_second(sizes.tasks, r.total),
            r.submit.as_secs_f64(),
            r.work.as_secs_f64()
        );
        print_profile(&profile.expect("a profile"), r.total);
        print_statements(&cluster, &url, hosts, sizes.tasks, r.total);
        bench.drop_database(&url);
    }

    rt.block_on(lookups(&mut bench, sizes));
}

/// The cluster and the databases made on it.
struct Bench<'c> {
    cluster: &'c Cluster,
    databases: usize,
}

impl Bench<'_> {
    /// A new empty database, its URL.
    fn database(&mut self) -> String {
        self.databases += 1;
        self.cluster
            .create_database(&format!("bench_{}", self.databases))
    }

    /// Drops the database at `url`, closing what still connects to it (a
    /// dropped store's listener), so the disk holds one run at a time.
    fn drop_database(&self, url: &str) {
        self.cluster.psql(
            &self.cluster.url(),
            &format!("drop database {} with (force)", database_of(url)),
        );
    }
}

/// The database name at the end of a URL of [`Cluster`].
fn database_of(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

/// The times of one run of (a).
#[derive(Debug, Clone, Copy)]
struct StoreRun {
    total: Duration,
    /// Until the last host submitted its last task.
    submit: Duration,
    /// From then until the last task was finished.
    work: Duration,
}

fn new_task(submitter: usize) -> NewTask {
    NewTask {
        task_name: "noop".into(),
        title: None,
        created_at: 0,
        limits: Quota {
            max_active_per_user: u32::MAX,
            max_active_per_module: u32::MAX,
            max_active_per_org: u32::MAX,
        },
        ..modhost::tasks::store::conformance::task(
            "bench",
            "org-1",
            &format!("user-{submitter}"),
            None,
        )
    }
}

/// Task `tasks / of` plus one of the remainder, for part `i` of `of`.
fn share(tasks: usize, of: usize, i: usize) -> usize {
    tasks / of + usize::from(i < tasks % of)
}

/// (a): `tasks` no-op tasks through `hosts` stores on the database at `url`;
/// with `profile_from` (a URL of another database, so that profiling is not
/// counted in this one's statistics), a [`Profile`] of the run.
async fn store_run(
    url: &str,
    hosts: usize,
    tasks: usize,
    profile_from: Option<&str>,
) -> (StoreRun, Option<Profile>) {
    let mut stores = Vec::with_capacity(hosts);
    for _ in 0..hosts {
        stores.push(Arc::new(PgTaskStore::connect(url).await.expect("connect")));
    }
    let sampling = Arc::new(AtomicBool::new(true));
    let profiler = match profile_from {
        Some(from) => {
            let client = connect(from).await;
            let before = cpu_now(&client).await;
            let sampler = tokio::spawn(sample_waits(
                connect(from).await,
                database_of(url).to_owned(),
                Arc::clone(&sampling),
            ));
            Some((client, before, sampler))
        }
        None => None,
    };
    let all_submitted = Arc::new(tokio::sync::Barrier::new(hosts));
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (h, store) in stores.iter().enumerate() {
        let (store, all_submitted) = (Arc::clone(store), Arc::clone(&all_submitted));
        let mine = share(tasks, hosts, h);
        set.spawn(async move {
            submit(&store, mine).await;
            let submitted = Instant::now();
            all_submitted.wait().await;
            let done = claim_and_finish(&store, h).await;
            (submitted, Instant::now(), done)
        });
    }
    let ends = set.join_all().await;
    sampling.store(false, Ordering::Relaxed);
    let profile = match profiler {
        Some((client, before, sampler)) => {
            let after = cpu_now(&client).await;
            let (waits, samples) = sampler.await.expect("sampler");
            Some(Profile::new(waits, samples, &before, &after))
        }
        None => None,
    };
    let submitted = ends.iter().map(|e| e.0).max().expect("a host");
    let finished = ends.iter().map(|e| e.1).max().expect("a host");
    let done: usize = ends.iter().map(|e| e.2).sum();
    assert_eq!(done, tasks, "tasks finished by the hosts");
    let client = connect(url).await;
    let completed: i64 = client
        .query_one(
            "SELECT count(*) FROM tasks WHERE status = 'completed' AND lease_owner IS NULL",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(
        usize::try_from(completed).ok(),
        Some(tasks),
        "completed rows"
    );
    let run = StoreRun {
        total: finished - started,
        submit: submitted - started,
        work: finished - submitted,
    };
    (run, profile)
}

/// Submits `n` tasks through `store`, [`SUBMITTERS`] at a time.
async fn submit(store: &Arc<PgTaskStore>, n: usize) {
    let mut set = tokio::task::JoinSet::new();
    for s in 0..SUBMITTERS {
        let store = Arc::clone(store);
        set.spawn(async move {
            for _ in 0..share(n, SUBMITTERS, s) {
                let submitted = store.submit(new_task(s)).await.expect("submit");
                assert!(matches!(submitted, Submitted::Created(_)), "{submitted:?}");
            }
        });
    }
    set.join_all().await;
}

/// Claims pending tasks through `store`, [`CLAIM`] at a time, and finishes
/// each under its lease, until none is left; how many it finished.
async fn claim_and_finish(store: &PgTaskStore, h: usize) -> usize {
    let host = HostId::new(format!("bench-host-{h}")).expect("host id");
    let want = [Want {
        module: "bench".into(),
        max: CLAIM,
    }];
    let mut done = 0;
    loop {
        let claimed = store.claim(&host, &want, LEASE).await.expect("claim");
        if claimed.is_empty() {
            return done;
        }
        let finished = join_all(claimed.iter().map(|c| {
            let completed = Outcome::Completed {
                result_json: "null".into(),
            };
            store.finish(&c.row.id, Some(&c.lease), completed)
        }))
        .await;
        for f in finished {
            assert!(f.expect("finish"), "a claimed task was not finished");
        }
        done += claimed.len();
    }
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// How the raw inserts of (b) send their rows.
#[derive(Debug, Clone, Copy)]
enum Raw {
    /// One INSERT per row, all of a transaction sent before any answer (as
    /// the store's writer sends its batch).
    Pipelined,
    /// One INSERT of every row of the transaction, from arrays.
    MultiRow,
}

/// The columns the store's rows end with, as (b) and (d) insert them.
const COLUMNS: &str = "id, module, task_name, task_key, status, progress, args_json, \
    result_json, resumable, user_id, organization_id, role, request_id, created_at, \
    updated_at, started_at, finished_at, attempts";

/// (b): `rows` finished task rows from `connections` connections, each its
/// share in transactions of [`RAW_BATCH`].
async fn raw_run(url: &str, connections: usize, rows: usize, insert: Raw) -> Duration {
    let schema = connect(url).await;
    schema.batch_execute(MIGRATIONS[0]).await.expect("schema");
    let mut clients = Vec::with_capacity(connections);
    for _ in 0..connections {
        clients.push(connect(url).await);
    }
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for (c, client) in clients.into_iter().enumerate() {
        let mine = share(rows, connections, c);
        set.spawn(async move { raw_insert(&client, mine, insert).await });
    }
    set.join_all().await;
    let elapsed = started.elapsed();
    let count: i64 = schema
        .query_one("SELECT count(*) FROM tasks", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(usize::try_from(count).ok(), Some(rows), "raw rows");
    elapsed
}

async fn raw_insert(client: &Client, rows: usize, insert: Raw) {
    let one = client
        .prepare(&format!(
            "INSERT INTO tasks ({COLUMNS}) VALUES ($1, 'bench', 'noop', NULL, 'completed', 1.0, \
             '{{}}', 'null', FALSE, $2, 'org-1', 'member', 'req-1', 0, 0, 0, 0, 1)"
        ))
        .await
        .expect("prepare");
    let many = client
        .prepare(&format!(
            "INSERT INTO tasks ({COLUMNS}) SELECT r.id, 'bench', 'noop', NULL, 'completed', 1.0, \
             '{{}}', 'null', FALSE, r.u, 'org-1', 'member', 'req-1', 0, 0, 0, 0, 1 \
             FROM unnest($1::TEXT[], $2::TEXT[]) AS r(id, u)"
        ))
        .await
        .expect("prepare");
    let mut left = rows;
    while left > 0 {
        let n = left.min(RAW_BATCH);
        left -= n;
        let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::now_v7().to_string()).collect();
        let users: Vec<String> = (0..n).map(|i| format!("user-{}", i % SUBMITTERS)).collect();
        match insert {
            Raw::Pipelined => {
                let params: Vec<[&(dyn ToSql + Sync); 2]> = ids
                    .iter()
                    .zip(&users)
                    .map(|(id, u)| [id as _, u as _])
                    .collect();
                client.batch_execute("BEGIN").await.expect("begin");
                let inserted = join_all(params.iter().map(|p| client.execute(&one, p))).await;
                for i in inserted {
                    assert_eq!(i.expect("insert"), 1);
                }
                client.batch_execute("COMMIT").await.expect("commit");
            }
            Raw::MultiRow => {
                let inserted = client.execute(&many, &[&ids, &users]).await;
                assert_eq!(usize::try_from(inserted.expect("insert")).ok(), Some(n));
            }
        }
    }
}

/// Counts, until `sampling` goes false, what the busy client connections to
/// `database` wait for, every [`SAMPLE_EVERY`]; and how many samples.
async fn sample_waits(
    client: Client,
    database: String,
    sampling: Arc<AtomicBool>,
) -> (HashMap<String, u64>, u64) {
    // A pipelined statement ends with a Sync, after which the server shows
    // the connection idle in transaction until the next one is read.
    let sample = client
        .prepare(
            "SELECT CASE WHEN state = 'idle in transaction' \
             THEN 'idle in transaction (between statements)' \
             WHEN wait_event IS NULL THEN 'running (CPU)' \
             ELSE wait_event_type || ': ' || wait_event END, count(*) \
             FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend' \
             AND state IN ('active', 'idle in transaction') GROUP BY 1",
        )
        .await
        .expect("prepare");
    let (mut waits, mut samples) = (HashMap::new(), 0);
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    while sampling.load(Ordering::Relaxed) {
        tick.tick().await;
        for row in client.query(&sample, &[&database]).await.expect("sample") {
            let n: i64 = row.get(1);
            *waits.entry(row.get(0)).or_insert(0) += n.unsigned_abs();
        }
        samples += 1;
    }
    (waits, samples)
}

/// CPU time so far, in seconds, of this process (the hosts) and of each
/// process of the server, by pid with its kind.
struct Cpu {
    hosts: f64,
    server: HashMap<i32, (String, f64)>,
}

async fn cpu_now(client: &Client) -> Cpu {
    let processes = client
        .query("SELECT pid, backend_type FROM pg_stat_activity", &[])
        .await
        .expect("processes");
    let server = processes
        .iter()
        .filter_map(|r| {
            let pid: i32 = r.get(0);
            let kind: Option<String> = r.get(1);
            Some((
                pid,
                (kind.unwrap_or_default(), cpu_seconds(pid.unsigned_abs())?),
            ))
        })
        .collect();
    Cpu {
        hosts: cpu_seconds(std::process::id()).unwrap_or(0.0),
        server,
    }
}

/// User and system time of process `pid`, from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: utime and stime are the 12th and 13th of them.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: u32 = fields.next()?.parse().ok()?;
    let stime: u32 = fields.next()?.parse().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let ticks = u32::try_from(ticks).ok().filter(|&t| t > 0)?;
    Some((f64::from(utime) + f64::from(stime)) / f64::from(ticks))
}

/// What (c) learns of a run besides its times.
struct Profile {
    /// Sampled connections by what they were doing.
    waits: HashMap<String, u64>,
    samples: u64,
    /// CPU seconds of this process during the run.
    hosts_cpu: f64,
    /// CPU seconds of the server's client backends during the run, busiest
    /// first, and of its other processes together.
    backends_cpu: Vec<f64>,
    background_cpu: f64,
}

impl Profile {
    fn new(waits: HashMap<String, u64>, samples: u64, before: &Cpu, after: &Cpu) -> Profile {
        let mut backends_cpu = Vec::new();
        let mut background_cpu = 0.0;
        for (pid, (kind, was)) in &before.server {
            let Some((_, now)) = after.server.get(pid) else {
                continue;
            };
            if kind == "client backend" {
                backends_cpu.push(now - was);
            } else {
                background_cpu += now - was;
            }
        }
        backends_cpu.sort_by(|a, b| b.total_cmp(a));
        Profile {
            waits,
            samples,
            hosts_cpu: after.hosts - before.hosts,
            backends_cpu,
            background_cpu,
        }
    }
}

fn print_profile(profile: &Profile, elapsed: Duration) {
    let busiest: Vec<String> = profile
        .backends_cpu
        .iter()
        .take(4)
        .map(|s| format!("{s:.2}"))
        .collect();
    println!(
        "      CPU in the {:.2} s: hosts' process {:.2} s; server backends {:.2} s \
         (busiest {} s), its other processes {:.2} s",
        elapsed.as_secs_f64(),
        profile.hosts_cpu,
        profile.backends_cpu.iter().sum::<f64>(),
        busiest.join(", "),
        profile.background_cpu
    );
    let samples = profile.samples.max(1);
    let mut seen: Vec<_> = profile.waits.iter().collect();
    seen.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    println!(
        "      busy connections, mean over {samples} samples every {} ms:",
        SAMPLE_EVERY.as_millis()
    );
    for (what, n) in seen.iter().take(8) {
        println!("        {:5.2}  {what}", count(**n) / count(samples));
    }
}

/// The statements of the database at `url` that took the most time, after
/// a run of `tasks` tasks in `elapsed` by `hosts` hosts.
fn print_statements(cluster: &Cluster, url: &str, hosts: usize, tasks: usize, elapsed: Duration) {
    let top = cluster.psql(
        url,
        "select calls, round(total_exec_time::numeric, 1), \
         round((1000 * mean_exec_time)::numeric, 1), toplevel, \
         left(regexp_replace(query, '\\s+', ' ', 'g'), 80) from pg_stat_statements \
         where dbid = (select oid from pg_database where datname = current_database()) \
         order by total_exec_time desc limit 12",
    );
    // A COMMIT's flush comes after the statement's timing ends: its wait
    // shows in the wait events (IO: WALSync, LWLock: WALWrite) instead.
    let totals = cluster.psql(
        url,
        "select round(coalesce(sum(total_exec_time) filter (where toplevel), 0)::numeric, 1), \
         coalesce(sum(calls) filter (where query = 'COMMIT'), 0) \
         from pg_stat_statements \
         where dbid = (select oid from pg_database where datname = current_database())",
    );
    let mut totals = totals.split('|').map(|v| v.parse::<f64>().unwrap_or(0.0));
    let mut next = || totals.next().unwrap_or(0.0);
    let (executing, commits) = (next(), next());
    println!(
        "      statements executed {executing:.0} ms of {:.0} ms (run time x {hosts} writer \
         connection{}); {commits:.0} COMMITs, {:.1} tasks each",
        elapsed.as_secs_f64() * 1e3 * count(hosts),
        if hosts == 1 { "" } else { "s" },
        count(tasks) / commits.max(1.0),
    );
    println!("        calls      total ms   mean µs  statement");
    for line in top.lines() {
        let cols: Vec<&str> = line.splitn(5, '|').collect();
        if let [calls, total, mean, toplevel, query] = cols[..] {
            let nested = if toplevel == "t" { "" } else { "  (nested) " };
            println!("        {calls:>7} {total:>12} {mean:>9}  {nested}{query}");
        }
    }
}

/// (d): prefix lookups through the store and raw, on `sizes.rows` rows.
async fn lookups(bench: &mut Bench<'_>, sizes: Sizes) {
    let url = bench.database();
    let cluster = bench.cluster;
    let db = database_of(&url).to_owned();
    cluster.psql(&url, "create extension pg_stat_statements");
    cluster.psql(
        &url,
        &format!("alter database {db} set pg_stat_statements.track = 'top'"),
    );
    let store = PgTaskStore::connect(&url).await.expect("connect");
    let raw = connect(&url).await;
    let rows = i64::try_from(sizes.rows).expect("rows fit in i64");
    let groups = i64::try_from(PREFIX_GROUPS).expect("small");

    // Finished rows, so that the counter triggers do not fire; ids sort in
    // insertion order like UUIDv7s, and every key is `job.GGGG.NNNNNNN`.
    let build = Instant::now();
    raw.batch_execute("SET maintenance_work_mem = '256MB'")
        .await
        .expect("set");
    raw.execute(
        &format!(
            "INSERT INTO tasks ({COLUMNS}) SELECT \
             '01900000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'), 'bench', 'noop', \
             'job.' || lpad((i % $2::BIGINT)::TEXT, 4, '0') || '.' || lpad(i::TEXT, 7, '0'), \
             'completed', 1.0, '{{}}', 'null', FALSE, 'user-' || (i % 100), 'org-1', 'member', \
             'req-1', i, i, i, i, 1 FROM generate_series(0, $1::BIGINT - 1) AS i"
        ),
        &[&rows, &groups],
    )
    .await
    .expect("load");
    let loaded = build.elapsed();
    raw.batch_execute("VACUUM (ANALYZE) tasks")
        .await
        .expect("vacuum");
    let built = build.elapsed();
    let size: String = raw
        .query_one(
            "SELECT pg_size_pretty(pg_table_size('tasks')) || ' table, ' \
             || pg_size_pretty(pg_indexes_size('tasks')) || ' indexes'",
            &[],
        )
        .await
        .expect("size")
        .get(0);

    let covering = raw
        .prepare(
            "SELECT id FROM tasks WHERE module = $1 AND organization_id = $2 \
             AND task_key >= $3 AND task_key < $4 AND task_key IS NOT NULL \
             ORDER BY id DESC LIMIT $5",
        )
        .await
        .expect("prepare");
    let scope = Scope {
        module: "bench".into(),
        organization_id: "org-1".into(),
        user_id: None,
    };
    raw.execute("SELECT pg_stat_statements_reset()", &[])
        .await
        .expect("reset");
    let (mut through_store, mut through_index) = (
        Vec::with_capacity(sizes.lookups),
        Vec::with_capacity(sizes.lookups),
    );
    // Spread over the groups, in a fixed pseudo-random order; each prefix
    // through the store, then raw.
    let mut g: u64 = 7;
    let group_count = u64::try_from(PREFIX_GROUPS).expect("small");
    for _ in 0..sizes.lookups {
        g = g
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407)
            % group_count;
        let prefix = format!("job.{g:04}.");
        let upper = prefix_successor(&prefix);
        let t = Instant::now();
        let by_store = store
            .by_key_prefix(&scope, &prefix, NEWEST)
            .await
            .expect("lookup");
        through_store.push(t.elapsed());
        let t = Instant::now();
        let by_index = raw
            .query(
                &covering,
                &[&"bench", &"org-1", &prefix, &upper, &i64::from(NEWEST)],
            )
            .await
            .expect("raw lookup");
        through_index.push(t.elapsed());
        let ids: Vec<String> = by_index.iter().map(|r| r.get(0)).collect();
        let store_ids: Vec<&str> = by_store.iter().map(|t| t.id.as_str()).collect();
        assert_eq!(
            store_ids, ids,
            "the store and the index disagree on {prefix}"
        );
        let g = usize::try_from(g).expect("small");
        let matching = share(sizes.rows, PREFIX_GROUPS, g);
        let newest = usize::try_from(NEWEST).expect("small");
        assert_eq!(ids.len(), matching.min(newest), "tasks found for {prefix}");
    }
    through_store.sort();
    through_index.sort();
    // The store's statement is the one that reads more than ids.
    let server = raw
        .query(
            "SELECT query LIKE '%task_name%', round((1000 * mean_exec_time)::numeric, 1)::TEXT \
             FROM pg_stat_statements \
             WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database()) \
             AND query LIKE '%task_key >= $3%'",
            &[],
        )
        .await
        .expect("statements");
    let mean_of = |store: bool| {
        server
            .iter()
            .find(|r| r.get::<_, bool>(0) == store)
            .map_or_else(|| "?".to_owned(), |r| r.get::<_, String>(1))
    };
    let (s50, s99) = (
        percentile(&through_store, 50),
        percentile(&through_store, 99),
    );
    let (i50, i99) = (
        percentile(&through_index, 50),
        percentile(&through_index, 99),
    );
    println!(
        "(d) key prefix (~{} of {} rows), {NEWEST} newest, {} lookups each \
         (table built in {:.1} s + {:.1} s vacuum/analyze; {size})",
        sizes.rows / PREFIX_GROUPS,
        sizes.rows,
        sizes.lookups,
        loaded.as_secs_f64(),
        (built - loaded).as_secs_f64()
    );
    println!(
        "    by_key_prefix:        p50 {s50:.3} ms, p99 {s99:.3} ms (server mean {} µs)",
        mean_of(true)
    );
    println!(
        "    covering index alone: p50 {i50:.3} ms, p99 {i99:.3} ms (server mean {} µs)",
        mean_of(false)
    );
    println!(
        "    store / index: {:.2}x at p50, {:.2}x at p99",
        s50 / i50,
        s99 / i99
    );

    // The plan the store's statement settles on once a connection has run
    // it more than five times (a generic plan, or still custom ones); its
    // exact text is what the store's reader last ran.
    let statement = raw
        .query_opt(
            "SELECT query FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'modhost' AND query LIKE '%task_key >= $3%' LIMIT 1",
            &[],
        )
        .await
        .expect("activity")
        .map(|r| r.get::<_, String>(0))
        .expect("the store's lookup statement");
    raw.batch_execute(&format!("PREPARE lookup AS {statement}"))
        .await
        .expect("prepare the store's statement");
    let execute = "EXECUTE lookup('bench', 'org-1', 'job.0042.', 50, 'job.0042/')";
    for _ in 0..10 {
        raw.batch_execute(execute).await.expect("execute");
    }
    println!("    plan of by_key_prefix's statement after 10 runs, for job.0042.:");
    for message in raw
        .simple_query(&format!("EXPLAIN (ANALYZE, BUFFERS) {execute}"))
        .await
        .expect("explain")
    {
        if let tokio_postgres::SimpleQueryMessage::Row(r) = message {
            println!("      {}", r.get(0).unwrap_or_default());
        }
    }
    drop(store);
    drop(raw);
    bench.drop_database(&url);
}

/// Middle, low and high of a few measurements.
#[derive(Debug, Clone, Copy)]
struct Spread {
    min: f64,
    median: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        Spread {
            min: v.first().copied().unwrap_or(f64::NAN),
            median: v.get(v.len() / 2).copied().unwrap_or(f64::NAN),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.0} / {:.0} / {:.0}", self.min, self.median, self.max)
    }
}

/// The run of median total time.
fn median_run(runs: &[StoreRun]) -> StoreRun {
    let mut sorted = runs.to_vec();
    sorted.sort_by_key(|r| r.total);
    sorted[sorted.len() / 2]
}

/// A count as f64 (benchmark counts stay far below 2^32).
fn count(n: impl TryInto<u32>) -> f64 {
    n.try_into().map(f64::from).unwrap_or(f64::MAX)
}

fn per_second(n: usize, elapsed: Duration) -> f64 {
    count(n) / elapsed.as_secs_f64()
}

fn percentile(sorted: &[Duration], p: usize) -> f64 {
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1e3
}
