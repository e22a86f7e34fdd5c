//! One benchmark run of modhost beside its peers and the raw limits, on one
//! machine, written to `BENCHMARKS.md`.
//!
//! - [`host`]: modhost's side of each scenario and the raw floor beside
//!   it (raw wasmtime, raw SQLite, raw `Command`), measured in this process.
//! - [`peers`]: the seed system, huey and obelisk, installed where missing
//!   and driven as their users would.
//! - [`report`]: figures (min/median/max of several runs), ratios, goals and
//!   the machine, as Markdown.
//!
//! Every run measures each system once per scenario, interleaved, so that
//! the machine's drift hits all of them alike.

pub mod host;
pub mod peers;
pub mod report;
pub mod stats;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::peers::obelisk::Obelisk;
use crate::peers::python::PythonPeers;
use crate::report::{Report, Section};
use crate::stats::{Figure, Unit};

/// A scenario of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Durable no-op tasks, submit → completed, 1 and 2 workers.
    Tasks,
    /// The same with 10 stored progress updates each.
    Progress,
    /// An action through the host vs raw wasmtime.
    Action,
    /// `run-blocking` vs a direct call.
    Blocking,
    /// A gated subprocess vs raw spawn and Python's `subprocess.run`.
    Subprocess,
    /// Key-prefix and newest-first user lookups at 1M rows vs raw SQL.
    Lookup,
    /// Resident memory of tasks waiting for a confirmation.
    Waiting,
    /// Outbound HTTP from a guest vs raw reqwest in the host.
    Http,
}

impl Scenario {
    pub const ALL: [Scenario; 8] = [
        Scenario::Tasks,
        Scenario::Progress,
        Scenario::Action,
        Scenario::Blocking,
        Scenario::Subprocess,
        Scenario::Lookup,
        Scenario::Waiting,
        Scenario::Http,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Tasks => "tasks",
            Scenario::Progress => "progress",
            Scenario::Action => "action",
            Scenario::Blocking => "blocking",
            Scenario::Subprocess => "subprocess",
            Scenario::Lookup => "lookup",
            Scenario::Waiting => "waiting",
            Scenario::Http => "http",
        }
    }

    pub fn parse(name: &str) -> Result<Self> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .with_context(|| {
                let names: Vec<_> = Scenario::ALL.iter().map(|s| s.name()).collect();
                format!("no scenario `{name}`; there are {}", names.join(", "))
            })
    }
}

/// Which peers to install and run.
#[derive(Debug, Clone, Copy)]
pub struct Peers {
    /// The seed system and huey, in a Python virtual environment.
    pub python: bool,
    /// obelisk, built from crates.io.
    pub obelisk: bool,
}

/// Sizes and choices of one benchmark run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Runs of every scenario (each figure is the min/median/max of these).
    pub runs: usize,
    /// Tasks per task-scenario measurement.
    pub tasks: usize,
    /// Calls per overhead measurement.
    pub calls: usize,
    /// Spawns per subprocess measurement.
    pub spawns: usize,
    /// Rows of the lookup table, and lookups per measurement.
    pub rows: usize,
    pub lookups: usize,
    /// Numbers of tasks left waiting for a confirmation.
    pub waiting: Vec<usize>,
    /// Bytes of the outbound download.
    pub download_bytes: u64,
    pub peers: Peers,
    /// Scenarios to run; empty means all.
    pub only: Vec<Scenario>,
    /// This benchmark's own executable: the waiting scenario measures its
    /// memory in a process of its own (`EXE --waiting N`).
    pub exe: PathBuf,
    /// The command line the report names.
    pub command: String,
}

impl Options {
    /// The full benchmark: the figures `BENCHMARKS.md` publishes.
    pub fn full(exe: PathBuf) -> Self {
        Options {
            runs: 3,
            tasks: 20_000,
            calls: 2_000,
            spawns: 500,
            rows: 1_000_000,
            lookups: 1_000,
            waiting: vec![10_000, 100_000],
            download_bytes: 1 << 30,
            peers: Peers {
                python: true,
                obelisk: true,
            },
            only: Vec::new(),
            exe,
            command: "cargo run --release -p modhost-bench".into(),
        }
    }

    /// Seconds, not minutes: every path of the benchmark, at sizes too small
    /// to mean anything, and no peer that needs an install.
    pub fn smoke(exe: PathBuf) -> Self {
        Options {
            runs: 1,
            tasks: 300,
            calls: 100,
            spawns: 20,
            rows: 20_000,
            lookups: 50,
            waiting: vec![100],
            download_bytes: 4 << 20,
            peers: Peers {
                python: false,
                obelisk: false,
            },
            command: "cargo run --release -p modhost-bench -- --smoke".into(),
            ..Options::full(exe)
        }
    }

    fn wants(&self, s: Scenario) -> bool {
        self.only.is_empty() || self.only.contains(&s)
    }
}

/// The figures of one section, by row, filled run by run.
struct Rows(Vec<Figure>);

impl Rows {
    fn new(figures: Vec<Figure>) -> Self {
        Rows(figures)
    }

    fn push(&mut self, row: usize, value: f64) {
        self.0[row].samples.push(value);
    }
}

/// A Python 3 for `subprocess.run`: the peers' one when installed, else
/// the machine's `python3`.
fn any_python(peers: Option<&PythonPeers>) -> Result<PathBuf> {
    if let Some(p) = peers {
        return Ok(p.python.clone());
    }
    modhost_tests::on_path("python3").context("no python3 on PATH for Python's subprocess.run")
}

const NOT_RUN: &str = "not run (`--no-peers` or smoke mode)";

/// Runs the benchmark.
pub fn run(options: &Options) -> Result<Report> {
    if options.runs == 0 || options.tasks == 0 {
        bail!("runs and tasks must be at least 1");
    }
    let mut report = Report::new(options);
    let cache = peers::cache()?;
    let python = if options.peers.python {
        let p = PythonPeers::install(&cache)?;
        report.version("Python (peers)", &p.version);
        report.version("democrai (the seed system)", peers::python::DEMOCRAI);
        report.version("huey", peers::python::HUEY);
        Some(p)
    } else {
        None
    };
    let obelisk = if options.peers.obelisk {
        report.version("obelisk", peers::obelisk::VERSION);
        Some(Obelisk::install(&cache)?)
    } else {
        None
    };
    let table = if options.wants(Scenario::Lookup) {
        eprintln!("building the lookup table: {} rows", options.rows);
        Some(host::LookupTable::build(options.rows)?)
    } else {
        None
    };
    let per_s = Unit::PerSecond("tasks");
    let peer_row = |on: bool, system: &str, setting: &str, unit: Unit| {
        if on {
            Figure::new(system, setting, unit)
        } else {
            Figure::absent(system, setting, unit, NOT_RUN)
        }
    };
    let (py, ob) = (python.is_some(), obelisk.is_some());
    let mut tasks = Rows::new(vec![
        Figure::new("modhost", "1 worker", per_s),
        Figure::new(
            "raw wasmtime instantiate + call",
            "1 worker",
            Unit::PerSecond("calls"),
        )
        .raw(),
        peer_row(py, "democrai (seed)", "1 worker", per_s),
        peer_row(py, "huey", "1 worker", per_s),
        peer_row(ob, "obelisk", "1 worker", per_s),
        Figure::new("modhost", "2 workers", per_s),
        Figure::new(
            "raw wasmtime instantiate + call",
            "2 workers",
            Unit::PerSecond("calls"),
        )
        .raw(),
        Figure::absent(
            "democrai (seed)",
            "2 workers",
            per_s,
            "one asyncio event loop: no worker setting",
        ),
        peer_row(py, "huey", "2 workers", per_s),
        peer_row(ob, "obelisk", "2 workers", per_s),
    ]);
    let mut progress = Rows::new(vec![
        Figure::new("modhost", "2 workers, 10 updates", per_s),
        peer_row(py, "democrai (seed)", "2 workers, 10 updates", per_s),
        Figure::absent("huey", "2 workers, 10 updates", per_s, "no stored progress"),
        Figure::absent(
            "obelisk",
            "2 workers, 10 updates",
            per_s,
            "no stored progress",
        ),
    ]);
    let mut action = Rows::new(vec![
        Figure::new("modhost call_action", "one action", Unit::Micros),
        Figure::new(
            "raw wasmtime instantiate + call",
            "one action",
            Unit::Micros,
        )
        .raw(),
    ]);
    let mut blocking = Rows::new(vec![
        Figure::new("modhost run-blocking", "double(21)", Unit::Micros),
        Figure::new(
            "direct call (fresh instance, in the caller)",
            "double(21)",
            Unit::Micros,
        )
        .raw(),
        Figure::new(
            "modhost run-blocking overhead",
            "over the direct call",
            Unit::Micros,
        ),
    ]);
    let mut spawn = Rows::new(vec![
        Figure::new("modhost run-subprocess (gated)", "/bin/true", Unit::Micros),
        Figure::new("raw std Command::output()", "/bin/true", Unit::Micros).raw(),
        Figure::new("Python subprocess.run", "/bin/true", Unit::Micros),
    ]);
    let rows = options.rows;
    let mut lookup = Rows::new(vec![
        Figure::new(
            "modhost store",
            &format!("key prefix, 50 newest, p50, {rows} rows"),
            Unit::Millis,
        ),
        Figure::new(
            "raw SQL, same plan",
            &format!("key prefix, 50 newest, p50, {rows} rows"),
            Unit::Millis,
        )
        .raw(),
        Figure::new(
            "modhost store",
            &format!("key prefix, 50 newest, p99, {rows} rows"),
            Unit::Millis,
        ),
        Figure::new(
            "raw SQL, same plan",
            &format!("key prefix, 50 newest, p99, {rows} rows"),
            Unit::Millis,
        )
        .raw(),
        Figure::new(
            "modhost store",
            &format!("one user, 50 newest, p50, {rows} rows"),
            Unit::Millis,
        ),
        Figure::new(
            "raw SQL, same plan",
            &format!("one user, 50 newest, p50, {rows} rows"),
            Unit::Millis,
        )
        .raw(),
    ]);
    let mut waiting = Rows::new(
        options
            .waiting
            .iter()
            .flat_map(|n| {
                [
                    Figure::new("modhost", &format!("{n} asked: resident memory"), Unit::MiB),
                    Figure::new(
                        "modhost",
                        &format!("{n} asked: waiting at once"),
                        Unit::Count("tasks"),
                    ),
                ]
            })
            .collect(),
    );
    let mib = options.download_bytes >> 20;
    // The Rust SDK's rows keep their names (the goals read them); the
    // other SDKs' rows follow, in `host::SDKS` order.
    let sdk_label = |sdk: &str| {
        if sdk == "Rust" {
            String::new()
        } else {
            format!(" ({sdk} SDK)")
        }
    };
    let mut outbound_rows = Vec::new();
    for (sdk, _) in host::SDKS {
        outbound_rows.push(Figure::new(
            &format!("modhost guest GET (through the grant){}", sdk_label(sdk)),
            "small body, fresh connection",
            Unit::Micros,
        ));
    }
    outbound_rows.push(
        Figure::new(
            "raw reqwest GET in the host",
            "small body, fresh connection",
            Unit::Micros,
        )
        .raw(),
    );
    for (sdk, _) in host::SDKS {
        outbound_rows.push(Figure::new(
            &format!("modhost guest download into /data{}", sdk_label(sdk)),
            &format!("{mib} MiB body"),
            Unit::PerSecond("MiB"),
        ));
    }
    outbound_rows.push(
        Figure::new(
            "raw reqwest download into a file",
            &format!("{mib} MiB body"),
            Unit::PerSecond("MiB"),
        )
        .raw(),
    );
    let mut outbound = Rows::new(outbound_rows);

    for run in 1..=options.runs {
        eprintln!("run {run} of {}", options.runs);
        let n = options.tasks;
        if options.wants(Scenario::Tasks) {
            for (offset, workers) in [(0, 1), (5, 2)] {
                tasks.push(offset, host::durable_tasks(n, workers, 0)?);
                tasks.push(offset + 1, host::raw_instantiate(n, workers)?);
                if let Some(p) = &python {
                    if workers == 1 {
                        tasks.push(offset + 2, p.democrai(n, 0)?);
                    }
                    tasks.push(offset + 3, p.huey(n, workers)?);
                }
                if let Some(o) = &obelisk {
                    tasks.push(offset + 4, o.durable_tasks(n, Some(workers))?);
                }
            }
        }
        if options.wants(Scenario::Progress) {
            progress.push(0, host::durable_tasks(n, 2, 10)?);
            if let Some(p) = &python {
                progress.push(1, p.democrai(n, 10)?);
            }
        }
        if options.wants(Scenario::Action) {
            let o = host::action_overhead(options.calls)?;
            action.push(0, o.hosted_us);
            action.push(1, o.raw_us);
        }
        if options.wants(Scenario::Blocking) {
            let o = host::blocking_overhead(options.calls)?;
            blocking.push(0, o.hosted_us);
            blocking.push(1, o.raw_us);
            blocking.push(2, o.hosted_us - o.raw_us);
        }
        if options.wants(Scenario::Subprocess) {
            let s = host::subprocess(options.spawns)?;
            spawn.push(0, s.gated_us);
            spawn.push(1, s.raw_us);
            let python = any_python(python.as_ref())?;
            spawn.push(
                2,
                peers::python::subprocess_run(&python, &s.program, options.spawns)?,
            );
        }
        if let Some(table) = &table {
            let l = host::lookups(table, options.lookups)?;
            for (i, v) in [
                l.prefix_store.0,
                l.prefix_raw.0,
                l.prefix_store.1,
                l.prefix_raw.1,
                l.user_store.0,
                l.user_raw.0,
            ]
            .into_iter()
            .enumerate()
            {
                lookup.push(i, v);
            }
        }
        if options.wants(Scenario::Waiting) {
            for (i, &n) in options.waiting.iter().enumerate() {
                let w = waiting_child(options, n)?;
                waiting.push(2 * i, w.rss_mib);
                waiting.push(2 * i + 1, stats::count(w.waiting));
            }
        }
        if options.wants(Scenario::Http) {
            let o = host::outbound(options.calls, options.download_bytes)?;
            let n = o.sdks.len();
            for (i, sdk) in o.sdks.iter().enumerate() {
                outbound.push(i, sdk.get_us);
                outbound.push(n + 1 + i, sdk.mib_s);
            }
            outbound.push(n, o.raw_get_us);
            outbound.push(2 * n + 1, o.raw_mib_s);
        }
    }

    let sections = [
        (Scenario::Tasks, tasks),
        (Scenario::Progress, progress),
        (Scenario::Action, action),
        (Scenario::Blocking, blocking),
        (Scenario::Subprocess, spawn),
        (Scenario::Lookup, lookup),
        (Scenario::Waiting, waiting),
        (Scenario::Http, outbound),
    ];
    for (scenario, rows) in sections {
        if options.wants(scenario) {
            report
                .sections
                .push(Section::new(scenario, options, rows.0));
        }
    }
    report.finish();
    Ok(report)
}

/// The waiting scenario for `n` tasks, in a child process of this
/// benchmark so that its resident memory is theirs alone.
fn waiting_child(options: &Options, n: usize) -> Result<host::Waiting> {
    let out = peers::run_json(
        Command::new(&options.exe)
            .arg("--waiting")
            .arg(n.to_string()),
    )?;
    let field = |k: &str| {
        out[k]
            .as_f64()
            .with_context(|| format!("no {k} from the waiting child"))
    };
    let whole = |k: &str| {
        out[k]
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .with_context(|| format!("no {k} from the waiting child"))
    };
    Ok(host::Waiting {
        asked: whole("asked")?,
        waiting: whole("waiting")?,
        rss_before_mib: field("rss_before_mib")?,
        rss_mib: field("rss_mib")?,
    })
}

/// What `EXE --waiting N` prints: the waiting scenario as one JSON line.
pub fn waiting_json(n: usize) -> Result<String> {
    let w = host::waiting(n)?;
    Ok(serde_json::json!({
        "asked": w.asked,
        "waiting": w.waiting,
        "rss_before_mib": w.rss_before_mib,
        "rss_mib": w.rss_mib,
    })
    .to_string())
}
