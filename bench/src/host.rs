//! modhost's side of each scenario, and the raw limits beside it, measured
//! in this process on the components the workspace builds.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use modhost::identity::{Principal, RequestMeta, Role};
use modhost::tasks::SubmitOptions;
use modhost::tasks::store::sqlite::SqliteTaskStore;
use modhost::tasks::store::{Scope, SqliteOptions, Status, TaskFilter, TaskStore, apply_schema};
use modhost::{Host, HostOptions};
use modhost_tests::{
    COMPONENT_CACHE_DIR, CONFIRM, FETCHER, JS_FETCHER, ModuleDir, PY_FETCHER, SPIN, SUBPROCESS,
    TASKS_BASIC, principal, raw, run_tasks_through,
};
use rusqlite::{Connection, params};

use crate::stats::{count, median, percentile};

/// Quotas wide enough that a benchmark's submitters never meet them.
const OPEN_QUOTAS: &str =
    "[tasks]\nmax-concurrent = 256\nmax-active-per-user = 10000\nmax-active-per-module = 1000000";

/// Concurrent submitters of the task scenarios, each a user of its own.
const SUBMITTERS: usize = 256;

/// A runtime of `workers` async worker threads.
fn runtime(workers: usize) -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?)
}

/// A host on a fresh state directory with `modules` loaded (name,
/// component, manifest extra) and its task runtime started.
async fn host(state: &Path, modules: &[(&str, &str, &str)]) -> Result<(Arc<Host>, Vec<ModuleDir>)> {
    let mut options = HostOptions::new(state);
    options.engine.cache_dir = Some(COMPONENT_CACHE_DIR.into());
    options.max_running_tasks = 256;
    // One organization submits every task of a scenario (up to 100,000 at
    // once in the waiting one).
    options.max_active_tasks_per_org = 1_000_000;
    let host = Host::new(options)?;
    let mut dirs = Vec::new();
    for (name, wasm, extra) in modules {
        let dir = ModuleDir::new(name, wasm, extra);
        host.load_module(dir.path(), false)
            .await
            .with_context(|| format!("loading {name}"))?;
        dirs.push(dir);
    }
    host.start_tasks().await?;
    Ok((Arc::new(host), dirs))
}

fn admin() -> Principal {
    Principal {
        role: Role::Admin,
        ..principal("bench", "bench")
    }
}

/// Durable no-op tasks, submit → completed, on the SQLite file store
/// (synchronous=FULL) with `workers` async workers; each task stores
/// `updates` progress updates. Tasks per second.
pub fn durable_tasks(n: usize, workers: usize, updates: u32) -> Result<f64> {
    runtime(workers)?.block_on(async move {
        let state = tempfile::tempdir()?;
        let (host, _dirs) = host(
            state.path(),
            &[
                ("spin", SPIN, OPEN_QUOTAS),
                ("tb", TASKS_BASIC, OPEN_QUOTAS),
            ],
        )
        .await?;
        let (module, task, args) = if updates == 0 {
            ("spin", "noop", "{}".to_owned())
        } else {
            ("tb", "burst", format!("{{\"n\": {updates}}}"))
        };
        let (_, done) = run_tasks_through(&host, module, task, &args, n, SUBMITTERS).await;
        let unfinished = TaskFilter {
            statuses: vec![Status::Failed, Status::Interrupted, Status::Cancelled],
            ..TaskFilter::default()
        };
        let failed = host
            .tasks()
            .list(&admin(), module, &unfinished, None, 1)
            .await?;
        if let Some(row) = failed.tasks.first() {
            bail!(
                "a benchmark task ended as {:?}: {}",
                row.status,
                row.failure_message.as_deref().unwrap_or("")
            );
        }
        Ok(count(n) / done.as_secs_f64())
    })
}

/// The raw limit of the task scenario: instantiate + `run-task` of the
/// same no-op on a fresh store, `workers` loops at once on as many
/// workers. Calls per second.
pub fn raw_instantiate(n: usize, workers: usize) -> Result<f64> {
    runtime(workers)?.block_on(async move {
        let state = tempfile::tempdir()?;
        let (host, _dirs) = host(state.path(), &[("spin", SPIN, "")]).await?;
        let engine = host.engine().engine().clone();
        let pre = Arc::new(raw::pre(
            &engine,
            &host.module("spin").context("spin")?.component,
        ));
        let start = Instant::now();
        let loops: Vec<_> = (0..workers)
            .map(|w| {
                let (pre, engine) = (pre.clone(), engine.clone());
                let mine = n / workers + usize::from(w < n % workers);
                tokio::spawn(async move {
                    let (noop, empty) = (String::from("noop"), String::from("{}"));
                    for _ in 0..mine {
                        let mut store = raw::store(&engine);
                        let inst = pre.instantiate_async(&mut store).await?;
                        inst.call_run_task(&mut store, &noop, &empty)
                            .await?
                            .map_err(|e| anyhow::anyhow!("run-task failed: {e:?}"))?;
                    }
                    anyhow::Ok(())
                })
            })
            .collect();
        for l in loops {
            l.await??;
        }
        Ok(count(n) / start.elapsed().as_secs_f64())
    })
}

/// Medians of one call through the host and of the raw floor beside it.
#[derive(Debug, Clone, Copy)]
pub struct Overhead {
    pub raw_us: f64,
    pub hosted_us: f64,
}

/// An action through `Host::call_action` beside raw instantiate + call of
/// the same component with WASI only, `n` calls each after a warm-up.
pub fn action_overhead(n: usize) -> Result<Overhead> {
    runtime(2)?.block_on(async move {
        let state = tempfile::tempdir()?;
        let (host, _dirs) = host(state.path(), &[("spin", SPIN, "")]).await?;
        let engine = host.engine().engine().clone();
        let pre = raw::pre(&engine, &host.module("spin").context("spin")?.component);
        let (action, args) = ("ok".to_owned(), "{}".to_owned());
        let who = principal("bench", "bench");
        interleaved(
            n,
            async || {
                let mut store = raw::store(&engine);
                let inst = pre.instantiate_async(&mut store).await?;
                inst.call_handle_action(&mut store, &action, &args)
                    .await?
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("the raw action failed: {e:?}"))
            },
            async || {
                host.call_action("spin", "ok", "{}", &who, RequestMeta::fresh())
                    .await?;
                Ok(())
            },
        )
        .await
    })
}

/// `run-blocking` through the host's pool beside instantiate +
/// `call-blocking` of the same function on a fresh store in the caller.
pub fn blocking_overhead(n: usize) -> Result<Overhead> {
    runtime(2)?.block_on(async move {
        let state = tempfile::tempdir()?;
        let (host, _dirs) = host(state.path(), &[("tb", TASKS_BASIC, "")]).await?;
        let engine = host.engine().engine().clone();
        let pre = raw::pre(&engine, &host.module("tb").context("tb")?.component);
        let (double, args) = (String::from("double"), String::from("21"));
        let who = principal("bench", "bench");
        interleaved(
            n,
            async || {
                let mut store = raw::store(&engine);
                let inst = pre.instantiate_async(&mut store).await?;
                inst.call_call_blocking(&mut store, &double, &args)
                    .await?
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("the raw call failed: {e:?}"))
            },
            async || {
                let out = host
                    .call_blocking("tb", "double", "21", &who, RequestMeta::fresh())
                    .await?;
                ensure!(out.trim() == "42", "double(21) answered {out}");
                Ok(())
            },
        )
        .await
    })
}

/// The medians of `raw` and `hosted`, called in turn `n` times after
/// `n / 4` turns of warm-up, so that noise hits both alike.
async fn interleaved(
    n: usize,
    mut raw: impl AsyncFnMut() -> Result<()>,
    mut hosted: impl AsyncFnMut() -> Result<()>,
) -> Result<Overhead> {
    let (mut raw_us, mut hosted_us) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n + n / 4 {
        let start = Instant::now();
        raw().await?;
        let r = start.elapsed();
        let start = Instant::now();
        hosted().await?;
        let h = start.elapsed();
        if i >= n / 4 {
            raw_us.push(micros(r));
            hosted_us.push(micros(h));
        }
    }
    Ok(Overhead {
        raw_us: median(&mut raw_us),
        hosted_us: median(&mut hosted_us),
    })
}

/// The grant of the subprocess scenario: `true` with no arguments.
const TRUE_GRANT: &str = "[subprocess]\nmax-concurrent = 4\n\n[[subprocess.programs]]\nprogram = \"true\"\nargs = [[]]\n";

/// Medians of `true` run through the whole gate from a guest action and
/// raw with `std::process::Command::output()` in this process.
#[derive(Debug, Clone)]
pub struct Spawns {
    pub raw_us: f64,
    pub gated_us: f64,
    /// The program both ran, resolved as the grant resolves it.
    pub program: PathBuf,
}

pub fn subprocess(n: usize) -> Result<Spawns> {
    runtime(2)?.block_on(async move {
        let state = tempfile::tempdir()?;
        let (host, _dirs) = host(state.path(), &[("sub", SUBPROCESS, TRUE_GRANT)]).await?;
        let module = host.module("sub").context("sub")?;
        let program = module.manifest.policy.subprocess.programs[0].path.clone();
        let who = principal("bench", "bench");
        let args = r#"{"program": "true"}"#;
        let o = interleaved(
            n,
            async || {
                let out = std::process::Command::new(&program).output()?;
                ensure!(out.status.success(), "raw {} failed", program.display());
                Ok(())
            },
            async || {
                let out = host
                    .call_action("sub", "run", args, &who, RequestMeta::fresh())
                    .await?;
                let code = out.data.as_ref().map(|d| d["status"]["code"].clone());
                ensure!(
                    code == Some(0.into()),
                    "the gated run answered {:?}",
                    out.data
                );
                Ok(())
            },
        )
        .await?;
        Ok(Spawns {
            raw_us: o.raw_us,
            gated_us: o.hosted_us,
            program,
        })
    })
}

/// Key prefixes in the lookup table: each matches `rows / PREFIX_GROUPS`.
const PREFIX_GROUPS: usize = 1_000;
/// Users in the lookup table.
const USERS: usize = 100;

/// A task table of `rows` finished tasks through the store's own schema,
/// indexes and triggers, keyed `job.GGGG.NNNNNNN` in `PREFIX_GROUPS`
/// groups over `USERS` users.
#[derive(Debug)]
pub struct LookupTable {
    _dir: tempfile::TempDir,
    path: PathBuf,
    pub rows: usize,
}

const LOOKUP_INSERT: &str = "INSERT INTO tasks (id, module, task_name, task_key, title, status, \
    args_json, resumable, user_id, organization_id, role, request_id, session_id, created_at, \
    updated_at, finished_at) \
    VALUES (?1, 'bench', 'noop', ?2, NULL, 'completed', '{}', 0, ?3, 'org-1', 'member', 'req-1', \
    NULL, ?4, ?4, ?4)";

impl LookupTable {
    pub fn build(rows: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("lookup.db");
        let conn = Connection::open(&path)?;
        // Built fast (no fsync); the lookups read it as the store does.
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; \
             PRAGMA cache_size = -262144; PRAGMA temp_store = MEMORY",
        )?;
        apply_schema(&conn)?;
        for chunk in (0..rows).collect::<Vec<_>>().chunks(50_000) {
            let tx = conn.unchecked_transaction()?;
            {
                let mut stmt = tx.prepare(LOOKUP_INSERT)?;
                for &i in chunk {
                    stmt.execute(params![
                        uuid::Uuid::now_v7().to_string(),
                        format!("job.{:04}.{i:07}", i % PREFIX_GROUPS),
                        format!("user-{}", i % USERS),
                        i64::try_from(i)?,
                    ])?;
                }
            }
            tx.commit()?;
        }
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        Ok(LookupTable {
            _dir: dir,
            path,
            rows,
        })
    }
}

/// The newest 50 rows of one key prefix (about `rows / 1000` match), and
/// of one user, through the store and raw; p50 and p99 in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Lookups {
    pub prefix_store: (f64, f64),
    pub prefix_raw: (f64, f64),
    pub user_store: (f64, f64),
    pub user_raw: (f64, f64),
}

/// The raw prefix lookup: the same plan as the store's (the 50 row ids
/// from the covering index, then those rows), on one connection in the
/// calling thread.
const RAW_PREFIX: &str = "SELECT id, module, task_name, task_key, title, status, progress, label, \
    resumable, user_id, organization_id, created_at, updated_at, finished_at FROM tasks \
    WHERE rowid IN (SELECT rowid FROM tasks INDEXED BY tasks_by_key WHERE module = ?1 \
    AND organization_id = ?2 AND task_key >= ?3 AND task_key < ?4 ORDER BY id DESC LIMIT 50) \
    ORDER BY id DESC";

/// The raw newest-first listing of one user, through the user index.
const RAW_USER: &str = "SELECT id, module, task_name, task_key, title, status, progress, label, \
    resumable, user_id, organization_id, created_at, updated_at, finished_at FROM tasks \
    INDEXED BY tasks_by_user WHERE module = ?1 AND organization_id = ?2 AND user_id = ?3 \
    ORDER BY id DESC LIMIT 50";

fn raw_rows(
    stmt: &mut rusqlite::CachedStatement<'_>,
    args: &[&dyn rusqlite::ToSql],
) -> Result<usize> {
    let rows = stmt.query_map(args, |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, String>(5)?,
            r.get::<_, f64>(6)?,
            r.get::<_, String>(9)?,
            r.get::<_, i64>(11)?,
        ))
    })?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?.len())
}

pub fn lookups(table: &LookupTable, lookups: usize) -> Result<Lookups> {
    runtime(2)?.block_on(async move {
        let store = SqliteTaskStore::open(&table.path, SqliteOptions::default())?;
        let conn = Connection::open(&table.path)?;
        let scope = Scope {
            module: "bench".into(),
            organization_id: "org-1".into(),
            user_id: None,
        };
        let expect = (table.rows / PREFIX_GROUPS).min(50);
        let mut t = [(); 4].map(|()| Vec::with_capacity(lookups));
        // Spread over the groups in a fixed pseudo-random order.
        let mut g: u64 = 7;
        for i in 0..lookups {
            g = g
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            let group = usize::try_from(g >> 33)? % PREFIX_GROUPS;
            let (prefix, upper) = (format!("job.{group:04}."), format!("job.{group:04}/"));
            let user = format!("user-{}", i % USERS);

            let start = Instant::now();
            let found = store.by_key_prefix(&scope, &prefix, 50).await?;
            t[0].push(millis(start.elapsed()));
            ensure!(
                found.len() == expect,
                "the store found {} rows of {prefix}",
                found.len()
            );

            let start = Instant::now();
            let mut stmt = conn.prepare_cached(RAW_PREFIX)?;
            let raw = raw_rows(&mut stmt, &[&"bench", &"org-1", &prefix, &upper])?;
            t[1].push(millis(start.elapsed()));
            ensure!(raw == expect, "the raw query found {raw} rows of {prefix}");

            let one_user = Scope {
                user_id: Some(user.clone()),
                ..scope.clone()
            };
            let start = Instant::now();
            let found = store.by_user(&one_user, 50).await?;
            t[2].push(millis(start.elapsed()));
            ensure!(
                found.len() == 50.min(table.rows / USERS),
                "the store listed {}",
                found.len()
            );

            let start = Instant::now();
            let mut stmt = conn.prepare_cached(RAW_USER)?;
            raw_rows(&mut stmt, &[&"bench", &"org-1", &user])?;
            t[3].push(millis(start.elapsed()));
        }
        let [mut a, mut b, mut c, mut d] = t;
        let p = |v: &mut Vec<f64>| (percentile(v, 50), percentile(v, 99));
        Ok(Lookups {
            prefix_store: p(&mut a),
            prefix_raw: p(&mut b),
            user_store: p(&mut c),
            user_raw: p(&mut d),
        })
    })
}

/// What `n` resumable tasks asking for a confirmation cost while they
/// wait, in a process of their own (see `main`'s `--waiting`).
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    pub asked: usize,
    /// Tasks waiting for an answer once the host stopped starting more.
    pub waiting: usize,
    /// Resident memory before the first submit, and with every task that
    /// got that far waiting.
    pub rss_before_mib: f64,
    pub rss_mib: f64,
}

/// How long the waiting scenario waits for every task to have asked (with
/// the host's defaults, the first waits give their instances up after 10 s)
/// before it measures anyway.
const SETTLE_LIMIT: Duration = Duration::from_secs(300);

/// A user's share of the waiting tasks (the per-user quota's ceiling).
const WAITING_PER_USER: usize = 10_000;

pub fn waiting(n: usize) -> Result<Waiting> {
    runtime(2)?.block_on(async move {
        let state = tempfile::tempdir()?;
        let (host, _dirs) = host(state.path(), &[("confirm", CONFIRM, OPEN_QUOTAS)]).await?;
        let rss_before_mib = rss_mib()?;
        let users = n.div_ceil(WAITING_PER_USER);
        let mut submitters = Vec::new();
        for u in 0..users {
            let host = host.clone();
            let who = principal(&format!("waiter{u}"), "bench");
            let mine = n / users + usize::from(u < n % users);
            submitters.push(tokio::spawn(async move {
                for _ in 0..mine {
                    let options = SubmitOptions {
                        resumable: true,
                        ..SubmitOptions::default()
                    };
                    host.submit_task("confirm", "ask", "{}", options, &who, RequestMeta::fresh())
                        .await?;
                }
                anyhow::Ok(())
            }));
        }
        for s in submitters {
            s.await??;
        }
        // Settled once no task is pending or running three looks in a row:
        // each has asked, and none holds an instance; or at the limit.
        let running = TaskFilter {
            statuses: vec![Status::Pending, Status::Running],
            ..TaskFilter::default()
        };
        let mut quiet = 0;
        let deadline = Instant::now() + SETTLE_LIMIT;
        while quiet < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(300)).await;
            let page = host
                .tasks()
                .list(&admin(), "confirm", &running, None, 1)
                .await?;
            quiet = if page.tasks.is_empty() { quiet + 1 } else { 0 };
        }
        let rss = rss_mib()?;
        let waiting = count_status(&host, "confirm", Status::WaitingConfirmation).await?;
        Ok(Waiting {
            asked: n,
            waiting,
            rss_before_mib,
            rss_mib: rss,
        })
    })
}

async fn count_status(host: &Host, module: &str, status: Status) -> Result<usize> {
    let filter = TaskFilter {
        statuses: vec![status],
        ..TaskFilter::default()
    };
    let (mut seen, mut cursor) = (0, None::<String>);
    loop {
        let page = host
            .tasks()
            .list(&admin(), module, &filter, cursor.as_deref(), 500)
            .await?;
        seen += page.tasks.len();
        match page.next_cursor {
            Some(next) => cursor = Some(next.to_string()),
            None => return Ok(seen),
        }
    }
}

/// This process's resident memory.
pub fn rss_mib() -> Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")?;
    Ok(kib / 1024.0)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// GETs per guest action in the outbound scenario, so that the action's own
/// cost is shared out.
pub const GET_BATCH: usize = 50;

/// The chunk the loopback server streams a large body in.
const SERVED_CHUNK: usize = 256 * 1024;

/// The outbound scenario: per-GET medians, and download throughputs.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Through each SDK's client, in [`SDKS`] order.
    pub sdks: Vec<SdkOutbound>,
    pub raw_get_us: f64,
    pub raw_mib_s: f64,
}

/// One SDK's client in the outbound scenario.
#[derive(Debug, Clone)]
pub struct SdkOutbound {
    pub get_us: f64,
    pub mib_s: f64,
}

/// The SDKs whose clients the outbound scenario measures, each by its
/// fetcher twin: its name, and the module it is loaded as.
pub const SDKS: [(&str, &str); 3] = [
    ("Rust", "net"),
    ("Python", "netpy"),
    ("JavaScript", "netjs"),
];

/// A loopback server: `/small` answers a short body, `/bytes/N` N bytes
/// with their length.
async fn loopback_server() -> Result<std::net::SocketAddr> {
    use axum::body::Body;
    use axum::extract::Path as UrlPath;
    use axum::routing::get;
    let chunk = bytes::Bytes::from(vec![7u8; SERVED_CHUNK]);
    let app = axum::Router::new()
        .route(
            "/small",
            get(|| async { "a small body from the loopback server" }),
        )
        .route(
            "/bytes/{n}",
            get(move |UrlPath(n): UrlPath<u64>| {
                let chunk = chunk.clone();
                async move {
                    let size = u64::try_from(SERVED_CHUNK).unwrap_or(u64::MAX);
                    let chunks = (0..n.div_ceil(size)).map(move |i| {
                        let len = usize::try_from((n - i * size).min(size)).unwrap_or(0);
                        Ok::<_, std::io::Error>(chunk.slice(..len))
                    });
                    axum::response::Response::builder()
                        .header("content-length", n)
                        .body(Body::from_stream(futures::stream::iter(chunks)))
                        .map_err(|e| e.to_string())
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// Outbound HTTP from a guest through the network room beside reqwest in
/// this process, through each SDK's client: GETs of a small body (each on a
/// fresh connection, as the host opens one per request), and one download
/// of `download` bytes into the data directory, each just after reqwest
/// streamed the same body into a file (the raw figure is their median).
pub fn outbound(calls: usize, download: u64) -> Result<Outbound> {
    runtime(2)?.block_on(async move {
        let addr = loopback_server().await?;
        let state = tempfile::tempdir()?;
        let grant = format!(
            "[filesystem]\ndata = true\nmax-mib = 8192\n\n[network]\nallow = [\"http://{addr}\"]\nmax-response-mib = 8192\ntimeout-ms = 3600000\n\n[limits]\ncall-deadline-ms = 600000\n"
        );
        let fetchers = [FETCHER, PY_FETCHER, JS_FETCHER];
        let modules: Vec<(&str, &str, &str)> = SDKS
            .iter()
            .zip(fetchers)
            .map(|((_, module), wasm)| (*module, wasm, grant.as_str()))
            .collect();
        let (host, _dirs) = host(state.path(), &modules).await?;
        let who = principal("bench", "bench");
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()?;
        let small = format!("http://{addr}/small");
        let batch = serde_json::json!({ "url": small, "n": GET_BATCH }).to_string();
        let rounds = (calls / GET_BATCH).max(4);
        let per = |us: f64| us / GET_BATCH as f64;
        let big = format!("http://{addr}/bytes/{download}");
        let mib = download as f64 / f64::from(1u32 << 20);
        let args = serde_json::json!({ "url": big, "name": "big.bin" }).to_string();
        let (mut sdks, mut raw_get_us, mut raw_mib_s) = (Vec::new(), Vec::new(), Vec::new());
        for (_, module) in SDKS {
            let per_batch = interleaved(
                rounds,
                async || {
                    for _ in 0..GET_BATCH {
                        let r = client.get(&small).send().await?;
                        ensure!(r.status() == 200, "/small answered {}", r.status());
                        r.bytes().await?;
                    }
                    Ok(())
                },
                async || {
                    host.call_action(module, "repeat", &batch, &who, RequestMeta::fresh())
                        .await?;
                    Ok(())
                },
            )
            .await?;
            raw_get_us.push(per(per_batch.raw_us));

            // The raw download beside each guest's, just before it: the
            // page cache and the disk's writeback see both alike.
            let raw_file = state.path().join("raw.bin");
            let start = Instant::now();
            {
                use std::io::Write;
                let mut file = std::fs::File::create(&raw_file)?;
                let mut response = client.get(&big).send().await?;
                while let Some(chunk) = response.chunk().await? {
                    file.write_all(&chunk)?;
                }
                file.sync_all()?;
            }
            raw_mib_s.push(mib / start.elapsed().as_secs_f64());
            ensure!(std::fs::metadata(&raw_file)?.len() == download, "raw download short");
            std::fs::remove_file(&raw_file)?;

            let start = Instant::now();
            host.call_action(module, "save", &args, &who, RequestMeta::fresh())
                .await?;
            let mib_s = mib / start.elapsed().as_secs_f64();
            let saved = state.path().join(format!("data/{module}/org-bench/big.bin"));
            ensure!(
                std::fs::metadata(&saved)?.len() == download,
                "the {module} guest saved a file of the wrong size"
            );
            std::fs::remove_file(&saved)?;
            sdks.push(SdkOutbound {
                get_us: per(per_batch.hosted_us),
                mib_s,
            });
        }

        Ok(Outbound {
            sdks,
            raw_get_us: median(&mut raw_get_us),
            raw_mib_s: median(&mut raw_mib_s),
        })
    })
}
