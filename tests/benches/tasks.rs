//! Background-task throughput and blocking-call overhead, beside the raw
//! limits measured in the same run.
//!
//! Run: `cargo bench -p modhost-tests --bench tasks` (`-- N` sets the number
//! of tasks, default 20000).
//!
//! 1. No-op background tasks, submit → completed, through `Host::submit_task`
//!    on the SQLite file store with `synchronous=FULL`.
//! 2. Raw SQLite: the same rows inserted 256 per transaction, FULL.
//! 3. Raw wasmtime: instantiate + `run-task` of the same no-op on a fresh
//!    store, two concurrent loops (the cores the host has).
//! 4. `run-blocking` through the host vs instantiate + `call-blocking` directly.

use std::sync::Arc;
use std::time::{Duration, Instant};

use modhost::identity::RequestMeta;
use modhost::tasks::store::apply_schema;
use modhost::{Host, HostOptions};
use modhost_tests::raw;
use modhost_tests::{
    COMPONENT_CACHE_DIR, ModuleDir, SPIN, TASKS_BASIC, principal, run_tasks_through,
};

const MANIFEST: &str =
    "[tasks]\nmax-concurrent = 256\nmax-active-per-user = 10000\nmax-active-per-module = 1000000";

fn median_us(mut v: Vec<Duration>) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e6
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(20_000);
    let rt = modhost_tests::runtime();
    rt.block_on(async move {
        let state = tempfile::tempdir().unwrap();
        let mut options = HostOptions::new(state.path());
        options.engine.cache_dir = Some(COMPONENT_CACHE_DIR.into());
        options.max_running_tasks = 256;
        let host = Host::new(options).unwrap();
        let spin = ModuleDir::new("spin", SPIN, MANIFEST);
        let tb = ModuleDir::new("tb", TASKS_BASIC, "");
        host.load_module(spin.path(), false).await.unwrap();
        host.load_module(tb.path(), false).await.unwrap();
        host.start_tasks().await.unwrap();
        let host = Arc::new(host);
        println!("modhost task benchmarks: {n} tasks, 2 tokio workers, 2 cores, synchronous=FULL");

        // 1. End to end.
        let who = principal("bench", "bench");
        let (submitted, done) = run_tasks_through(&host, "spin", "noop", n, 256).await;
        let e2e = n as f64 / done.as_secs_f64();
        println!(
            "1. end to end (submit -> completed)   {e2e:>9.0} tasks/s   (all submitted after {:.2} s, all completed after {:.2} s)",
            submitted.as_secs_f64(),
            done.as_secs_f64()
        );

        // 2. Raw SQLite batched inserts of task-shaped rows.
        let dir = tempfile::tempdir().unwrap();
        let conn = rusqlite::Connection::open(dir.path().join("raw.db")).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "synchronous", "FULL").unwrap();
        apply_schema(&conn).unwrap();
        let start = Instant::now();
        let mut conn = conn;
        for chunk in (0..n).collect::<Vec<_>>().chunks(256) {
            let tx = conn.transaction().unwrap();
            {
                let mut stmt = tx
                    .prepare(
                        "INSERT INTO tasks (id, module, task_name, args_json, resumable, user_id, organization_id, role, request_id, status, progress, created_at, updated_at, started_at, finished_at, attempts)
                         VALUES (?1, 'spin', 'noop', '{}', 0, 'bench', 'bench', 'member', ?1, 'completed', 1.0, 0, 0, 0, 0, 1)",
                    )
                    .unwrap();
                for _ in chunk {
                    stmt.execute([uuid::Uuid::now_v7().to_string()]).unwrap();
                }
            }
            tx.commit().unwrap();
        }
        let raw_sql = n as f64 / start.elapsed().as_secs_f64();
        println!("2. raw SQLite, 256 rows/transaction   {raw_sql:>9.0} rows/s");

        // 3. Raw wasmtime: instantiate + run-task, two concurrent loops.
        let module = host.module("spin").unwrap();
        let engine = host.engine().engine().clone();
        let pre = Arc::new(raw::pre(&engine, &module.component));
        let (noop, empty) = (String::from("noop"), String::from("{}"));
        let start = Instant::now();
        let loops: Vec<_> = (0..2)
            .map(|_| {
                let (pre, engine) = (pre.clone(), engine.clone());
                let (noop, empty) = (noop.clone(), empty.clone());
                tokio::spawn(async move {
                    for _ in 0..n / 2 {
                        let mut store = raw::store(&engine);
                        let inst = pre.instantiate_async(&mut store).await.unwrap();
                        inst.call_run_task(&mut store, &noop, &empty).await.unwrap().unwrap();
                    }
                })
            })
            .collect();
        for l in loops {
            l.await.unwrap();
        }
        let raw_wasm = n as f64 / start.elapsed().as_secs_f64();
        println!("3. raw wasmtime instantiate + call    {raw_wasm:>9.0} calls/s");
        println!(
            "   end to end is {:.2}x raw SQLite and {:.2}x raw wasmtime",
            e2e / raw_sql,
            e2e / raw_wasm
        );

        // 4. run-blocking overhead.
        let tb = host.module("tb").unwrap();
        let tb_pre = raw::pre(&engine, &tb.component);
        let (mut direct, mut pooled) = (Vec::new(), Vec::new());
        let (double, args21) = (String::from("double"), String::from("21"));
        for i in 0..4000 {
            let t = Instant::now();
            let mut store = raw::store(&engine);
            let inst = tb_pre.instantiate_async(&mut store).await.unwrap();
            inst.call_call_blocking(&mut store, &double, &args21).await.unwrap().unwrap();
            drop(store);
            let d = t.elapsed();
            let t = Instant::now();
            host.call_blocking("tb", "double", "21", &who, RequestMeta::fresh()).await.unwrap();
            let p = t.elapsed();
            if i >= 1000 {
                direct.push(d);
                pooled.push(p);
            }
        }
        let (d, p) = (median_us(direct), median_us(pooled));
        println!("4. call-blocking direct (fresh instance) median {d:.1} µs; through run-blocking's pool {p:.1} µs; overhead {:.1} µs", p - d);
    });
}
