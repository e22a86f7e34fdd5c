//! The same module in Rust, Python and JavaScript, side by side in one run:
//! component size, cold start (compile without a cache, link, `describe`,
//! first call), warm call (a fresh instance per call, as every call gets),
//! and no-op background tasks submit → completed.
//!
//! The guests are the SDK test programs: `tests/programs/spin` (Rust, on
//! `module-sdk`), `tests/programs-py/sdk` (componentize-py) and
//! `tests/programs-js/sdk` (componentize-js); each has an `ok` action and a
//! `noop` task that return at once.
//!
//! Run: `cargo bench -p modhost-tests --bench languages` (`-- N` sets the
//! number of warm calls and of tasks per language, default 2000); the suite
//! runs it at smoke sizes (`tests/tests/benches.rs`).

use std::time::{Duration, Instant};

use modhost::identity::{Principal, RequestMeta, Role};
use modhost::tasks::store::{Status, TaskFilter};
use modhost::{Host, HostOptions};
use modhost_tests::{JS_SDK, ModuleDir, PY_SDK, SPIN, principal, run_tasks_through};

const MANIFEST: &str =
    "[tasks]\nmax-concurrent = 256\nmax-active-per-user = 10000\nmax-active-per-module = 1000000";

/// The guests compared: a language, its component.
pub const GUESTS: [(&str, &str); 3] = [("Rust", SPIN), ("Python", PY_SDK), ("JavaScript", JS_SDK)];

/// What was measured of one guest.
#[derive(Debug)]
pub struct Figures {
    pub language: &'static str,
    pub bytes: u64,
    pub cold: Duration,
    pub warm_median: Duration,
    pub warm_p99: Duration,
    /// Page faults of the process per warm call: the pages of the
    /// instance's memory image its call wrote to (copy on write).
    pub faults_per_call: u64,
    pub tasks_per_s: f64,
}

/// The process's minor page faults so far.
fn minor_faults() -> u64 {
    // SAFETY: `getrusage` fills the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    u64::try_from(usage.ru_minflt).unwrap_or(0)
}

/// The sample at `per_mille` thousandths of the sorted samples.
fn quantile(samples: &mut [Duration], per_mille: usize) -> Duration {
    samples.sort();
    samples[(samples.len() - 1) * per_mille / 1000]
}

/// A host of its own; with no component cache, loading compiles.
fn fresh_host(state: &std::path::Path, cache: Option<&str>) -> Host {
    let mut options = HostOptions::new(state);
    options.engine.cache_dir = cache.map(Into::into);
    options.max_running_tasks = 256;
    Host::new(options).unwrap()
}

async fn measure(language: &'static str, wasm: &str, n: usize, cache: Option<&str>) -> Figures {
    let state = tempfile::tempdir().unwrap();
    let dir = ModuleDir::new("m", wasm, MANIFEST);
    let who = principal("bench", "bench");
    let host = fresh_host(state.path(), cache);
    let start = Instant::now();
    host.load_module(dir.path(), false).await.unwrap();
    host.call_action("m", "ok", "{}", &who, RequestMeta::fresh())
        .await
        .unwrap();
    let cold = start.elapsed();

    let mut warm = Vec::with_capacity(n);
    let faults_before = minor_faults();
    for _ in 0..n {
        let start = Instant::now();
        let out = host
            .call_action("m", "ok", "{}", &who, RequestMeta::fresh())
            .await
            .unwrap();
        warm.push(start.elapsed());
        assert_eq!(out.data, Some(serde_json::json!({"ok": true})));
    }
    let faults_per_call = (minor_faults() - faults_before) / n as u64;

    host.start_tasks().await.unwrap();
    let host = std::sync::Arc::new(host);
    let (_, finished) = run_tasks_through(&host, "m", "noop", "{}", n, 64).await;
    let admin = Principal {
        role: Role::Admin,
        ..who.clone()
    };
    let tasks_per_s = n as f64 / finished.as_secs_f64();
    let completed = TaskFilter {
        statuses: vec![Status::Completed],
        ..TaskFilter::default()
    };
    let page = host
        .tasks()
        .list(&admin, "m", &completed, None, 1)
        .await
        .unwrap();
    assert!(!page.tasks.is_empty(), "{language}: no task completed");

    Figures {
        language,
        bytes: std::fs::metadata(wasm).unwrap().len(),
        cold,
        warm_median: quantile(&mut warm, 500),
        warm_p99: quantile(&mut warm, 990),
        faults_per_call,
        tasks_per_s,
    }
}

/// Measures every guest, `n` warm calls and `n` tasks each, and prints the
/// table with ratios to the Rust guest. With a component `cache` the cold
/// start does not compile (the suite's smoke run, which only keeps the
/// path working).
pub fn run(n: usize, cache: Option<&str>) -> Vec<Figures> {
    let rt = modhost_tests::runtime();
    let figures: Vec<Figures> = rt.block_on(async {
        let mut all = Vec::new();
        for (language, wasm) in GUESTS {
            all.push(measure(language, wasm, n, cache).await);
        }
        all
    });
    let rust = &figures[0];
    println!(
        "one module in three languages: {n} warm calls and {n} no-op tasks each, 2 tokio workers, SQLite synchronous=FULL"
    );
    println!(
        "{:<11} {:>10} {:>12} {:>22} {:>13} {:>20}",
        "language",
        "component",
        "cold start",
        "warm call p50 / p99",
        "faults/call",
        "no-op tasks/s"
    );
    for f in &figures {
        println!(
            "{:<11} {:>7.1} MB {:>9.0} ms {:>9.0} / {:>6.0} µs {:>13} {:>10.0} ({:.2}x Rust)",
            f.language,
            f.bytes as f64 / 1e6,
            f.cold.as_secs_f64() * 1e3,
            f.warm_median.as_secs_f64() * 1e6,
            f.warm_p99.as_secs_f64() * 1e6,
            f.faults_per_call,
            f.tasks_per_s,
            f.tasks_per_s / rust.tasks_per_s,
        );
    }
    figures
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(2000);
    run(n, None);
}
