//! The report: every scenario's figures with ratios to the best peer and to
//! the raw limit, the goals beside what was measured, the machine, the
//! versions and the exact command, as Markdown.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use crate::stats::{Figure, Unit};
use crate::{Options, Scenario};

#[derive(Debug)]
pub struct Report {
    pub command: String,
    pub runs: usize,
    pub machine: Vec<(String, String)>,
    pub versions: Vec<(String, String)>,
    pub sections: Vec<Section>,
    pub goals: Vec<Goal>,
}

#[derive(Debug)]
pub struct Section {
    pub scenario: Scenario,
    pub title: String,
    /// What was measured and how, in a paragraph.
    pub about: String,
    pub figures: Vec<Figure>,
}

/// A goal of the throughput work beside the figure that answers it.
#[derive(Debug)]
pub struct Goal {
    pub goal: String,
    /// The measured value in words, or why there is none.
    pub measured: String,
    pub met: Option<bool>,
}

fn first_line(cmd: &mut Command) -> String {
    cmd.output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// The version of `package` in the workspace's lock file.
fn locked(package: &str) -> String {
    let lock = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.lock");
    let text = std::fs::read_to_string(lock).unwrap_or_default();
    let header = format!("name = \"{package}\"\nversion = \"");
    text.split_once(&header)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map_or_else(|| "unknown".into(), |(v, _)| v.to_owned())
}

fn proc_value(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown".into())
}

fn memory() -> String {
    let kib: Option<f64> = proc_value("/proc/meminfo", "MemTotal")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok();
    kib.map_or_else(
        || "unknown".into(),
        |k| format!("{:.1} GiB", k / 1024.0 / 1024.0),
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

impl Report {
    pub fn new(options: &Options) -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let commit = first_line(
            Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .current_dir(&root),
        );
        let dirty = !first_line(
            Command::new("git")
                .args(["status", "--porcelain"])
                .current_dir(&root),
        )
        .eq("unknown");
        let cores = std::thread::available_parallelism().map_or(0, usize::from);
        Report {
            command: options.command.clone(),
            runs: options.runs,
            machine: vec![
                ("CPU".into(), proc_value("/proc/cpuinfo", "model name")),
                ("cores".into(), cores.to_string()),
                ("memory".into(), memory()),
                ("kernel".into(), first_line(Command::new("uname").arg("-r"))),
                ("load average at start".into(), load_average()),
            ],
            versions: vec![
                (
                    "modhost".into(),
                    format!(
                        "{commit}{}",
                        if dirty {
                            " (with uncommitted changes)"
                        } else {
                            ""
                        }
                    ),
                ),
                (
                    "rustc".into(),
                    first_line(Command::new("rustc").arg("--version").current_dir(&root)),
                ),
                ("wasmtime".into(), locked("wasmtime")),
                ("SQLite".into(), rusqlite::version().to_owned()),
            ],
            sections: Vec::new(),
            goals: Vec::new(),
        }
    }

    pub fn version(&mut self, what: &str, version: &str) {
        self.versions.push((what.into(), version.into()));
    }

    /// Notes the end of the run and weighs the goals.
    pub fn finish(&mut self) {
        self.machine
            .push(("load average at end".into(), load_average()));
        self.goals = goals(&self.sections);
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# modhost benchmarks\n");
        let _ = writeln!(
            md,
            "Measured in one run on one machine: every scenario ran each system once per \
             run, interleaved, {} run(s); each figure is the min / median / max over the runs. \
             Ratios are modhost's median divided by the other's median in the same unit \
             (above 1 is faster for rates, slower for times). Compare figures only within \
             this file: the same benchmark moves 2x between machines and days.\n",
            self.runs
        );
        let _ = writeln!(md, "Command: `{}`\n", self.command);
        let _ = writeln!(md, "## Goals\n\n| goal | measured | met |\n|---|---|---|");
        for g in &self.goals {
            let met = match g.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "not measured",
            };
            let _ = writeln!(md, "| {} | {} | {met} |", g.goal, g.measured);
        }
        for s in &self.sections {
            let _ = writeln!(md, "\n## {}\n\n{}\n", s.title, s.about);
            let _ = writeln!(
                md,
                "| system | setting | min | median | max | unit | ÷ best peer | ÷ raw |\n|---|---|---|---|---|---|---|---|"
            );
            for f in &s.figures {
                let (best, raw) = if f.system.starts_with("modhost") {
                    (s.ratio_to(f, false), s.ratio_to(f, true))
                } else {
                    (String::new(), String::new())
                };
                match f.absent.as_deref() {
                    Some(why) => {
                        let _ = writeln!(
                            md,
                            "| {} | {} | – | {why} | – | {} | | |",
                            f.system,
                            f.setting,
                            f.unit.label()
                        );
                    }
                    None => {
                        let v =
                            |x: Option<f64>| x.map_or_else(|| "–".into(), |x| number(x, f.unit));
                        let _ = writeln!(
                            md,
                            "| {} | {} | {} | {} | {} | {} | {best} | {raw} |",
                            f.system,
                            f.setting,
                            v(f.min()),
                            v(f.median()),
                            v(f.max()),
                            f.unit.label()
                        );
                    }
                }
            }
        }
        let _ = writeln!(md, "\n## Machine\n");
        for (k, v) in &self.machine {
            let _ = writeln!(md, "- {k}: {v}");
        }
        let _ = writeln!(md, "\n## Versions\n");
        for (k, v) in &self.versions {
            let _ = writeln!(md, "- {k}: {v}");
        }
        md
    }
}

fn number(x: f64, unit: Unit) -> String {
    match unit {
        Unit::Count(_) => format!("{x:.0}"),
        _ if x >= 100.0 => format!("{x:.0}"),
        _ if x >= 10.0 => format!("{x:.1}"),
        _ => format!("{x:.2}"),
    }
}

impl Section {
    pub fn new(scenario: Scenario, options: &Options, figures: Vec<Figure>) -> Self {
        let n = options.tasks;
        let (title, about) = match scenario {
            Scenario::Tasks => (
                format!("1. Durable no-op tasks, submit → completed ({n} tasks)"),
                format!(
                    "Each system takes {n} no-op tasks from submitters and runs them to completion \
                     on its own durable SQLite store; the clock runs from the first submit to the \
                     last completion. modhost: `Host::submit_task` from 256 concurrent users on \
                     the file store (synchronous=FULL, group commit), N tokio workers. Raw: \
                     instantiate + `run-task` of the same no-op on a fresh store, N loops at once. \
                     democrai: its `TaskManager.submit` of coroutines on one asyncio loop \
                     (WAL, synchronous=NORMAL; the connection registry stubbed, so no \
                     notification row). huey: `SqliteHuey`, all tasks enqueued, then a consumer \
                     of N thread workers. obelisk: its server on its default SQLite store, no-op \
                     activities submitted over its REST API by 32 clients at once, pinned to N \
                     cores with `taskset`."
                ),
            ),
            Scenario::Progress => (
                format!("2. Durable tasks storing 10 progress updates each ({n} tasks)"),
                "As scenario 1 with 2 workers, each task storing its progress 10 times \
                 (`update-progress`; democrai's `update_progress`). huey and obelisk keep no \
                 progress of a running task."
                    .into(),
            ),
            Scenario::Action => (
                "3. Action overhead vs raw wasmtime".into(),
                format!(
                    "The median of {} calls of an action returning at once: through \
                     `Host::call_action` (identity, policy, a fresh sandboxed instance, \
                     result checks) and raw (`InstancePre::instantiate_async` + one call on a \
                     fresh `Store` with a bare WASI context, the same engine and compiled \
                     component), interleaved call by call.",
                    options.calls
                ),
            ),
            Scenario::Blocking => (
                "4. run-blocking overhead".into(),
                format!(
                    "The median of {} calls of a blocking function through the host's \
                     `run-blocking` pool, beside instantiate + `call-blocking` of the same \
                     function on a fresh store in the caller, interleaved.",
                    options.calls
                ),
            ),
            Scenario::Subprocess => (
                "5. Gated subprocess vs raw spawn".into(),
                format!(
                    "The median of {} runs of `/bin/true`: from a guest action through the \
                     whole gate (argv check, audit records, working directory, Landlock, rlimits, \
                     process group), raw `std::process::Command::output()` in the host process, \
                     and Python's `subprocess.run` in a Python process.",
                    options.spawns
                ),
            ),
            Scenario::Lookup => (
                format!("6. Lookups at {} rows", options.rows),
                format!(
                    "{} lookups each of the 50 newest tasks of a key prefix (about 1 in 1,000 \
                     rows match) and of one user's tasks (1 in 100), through the store \
                     (`TaskStore::by_key_prefix`, `by_user`) and raw: the same plan (row ids \
                     from the covering index, then those rows) run with rusqlite on one \
                     connection in the calling thread.",
                    options.lookups
                ),
            ),
            Scenario::Http => (
                "8. Outbound HTTP from a guest".into(),
                format!(
                    "A loopback server in this process. GETs of a small body: the median of \
                     batches of {batch} sequential GETs from one guest action (the SDK's \
                     client through `wasi:http` and the network room: grant check, the host's \
                     resolving and connecting, the caps), per GET, beside the same batch with \
                     reqwest in the host, each GET on a fresh connection as the host opens one \
                     per request; interleaved batch by batch. Download: one {mib} MiB body \
                     streamed by a guest action into its data directory \
                     (`Response::save`, `save` in Python and JavaScript), each just after reqwest \
                     streamed it into a file (both synced; the raw row is the median of those). \
                     Each SDK's client in turn, by its fetcher \
                     (`tests/programs*/fetcher`); the rows without an SDK named are Rust's.",
                    batch = crate::host::GET_BATCH,
                    mib = options.download_bytes >> 20
                ),
            ),
            Scenario::Waiting => (
                "7. Tasks waiting for a confirmation".into(),
                "Resumable tasks that store a checkpoint and ask for a confirmation, submitted \
                 at once to a host in a process of its own (default instance pool, the module \
                 allowed 256 running tasks, the host's default waits: an instance kept for \
                 10 s, then given up); measured once no task is pending or running, or after \
                 300 s: how many wait for an answer, and the process's resident memory then."
                    .into(),
            ),
        };
        Section {
            scenario,
            title,
            about,
            figures,
        }
    }

    /// `f`'s median over the best peer's (or the raw limit's) of the same
    /// setting.
    fn ratio_to(&self, f: &Figure, raw: bool) -> String {
        let Some(mine) = f.median() else {
            return String::new();
        };
        let others = self.figures.iter().filter(|o| {
            o.setting == f.setting
                && o.unit.higher_is_better() == f.unit.higher_is_better()
                && o.raw == raw
                && !o.system.starts_with("modhost")
        });
        let best = others.filter_map(Figure::median).reduce(|a, b| {
            if f.unit.higher_is_better() {
                a.max(b)
            } else {
                a.min(b)
            }
        });
        best.map_or_else(String::new, |b| format!("{:.2}x", mine / b))
    }

    fn median_of(&self, system: &str, setting_starts: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.system == system && f.setting.starts_with(setting_starts))
            .and_then(Figure::median)
    }
}

/// A goal on `mine ÷ other` (at least or at most `bound`).
fn ratio_goal(
    goal: &str,
    mine: Option<f64>,
    other: Option<f64>,
    at_least: bool,
    bound: f64,
    what: &str,
) -> Goal {
    let (measured, met) = match (mine, other) {
        (Some(m), Some(o)) => {
            let r = m / o;
            let met = if at_least { r >= bound } else { r <= bound };
            (format!("{r:.2}x ({m:.1} vs {o:.1} {what})"), Some(met))
        }
        _ => ("not measured in this run".into(), None),
    };
    Goal {
        goal: goal.into(),
        measured,
        met,
    }
}

/// A goal on a value itself.
fn absolute_goal(goal: &str, value: Option<f64>, at_least: bool, bound: f64, what: &str) -> Goal {
    let (measured, met) = match value {
        Some(v) => (
            format!("{v:.1} {what}"),
            Some(if at_least { v >= bound } else { v <= bound }),
        ),
        None => ("not measured in this run".into(), None),
    };
    Goal {
        goal: goal.into(),
        measured,
        met,
    }
}

fn goals(sections: &[Section]) -> Vec<Goal> {
    let find = |s: Scenario| sections.iter().find(|x| x.scenario == s);
    let median = |s: Scenario, system: &str, setting: &str| {
        find(s).and_then(|x| x.median_of(system, setting))
    };
    let m2 = median(Scenario::Tasks, "modhost", "2 workers");
    let raw2 = median(
        Scenario::Tasks,
        "raw wasmtime instantiate + call",
        "2 workers",
    );
    let rss = median(
        Scenario::Waiting,
        "modhost",
        "100000 asked: resident memory",
    );
    let held = median(
        Scenario::Waiting,
        "modhost",
        "100000 asked: waiting at once",
    );
    vec![
        absolute_goal(
            "durable no-op tasks ≥ 25,000/s (2 workers)",
            m2,
            true,
            25_000.0,
            "tasks/s",
        ),
        ratio_goal(
            "durable no-op tasks ≥ 0.7x raw instantiate + call (2 workers)",
            m2,
            raw2,
            true,
            0.7,
            "per s",
        ),
        ratio_goal(
            "≥ 30x the seed system (modhost with 2 workers vs democrai's one loop)",
            m2,
            median(Scenario::Tasks, "democrai (seed)", "1 worker"),
            true,
            30.0,
            "tasks/s",
        ),
        ratio_goal(
            "≥ 5x huey (2 workers each)",
            m2,
            median(Scenario::Tasks, "huey", "2 workers"),
            true,
            5.0,
            "tasks/s",
        ),
        ratio_goal(
            "≥ 20x obelisk (2 cores each)",
            m2,
            median(Scenario::Tasks, "obelisk", "2 workers"),
            true,
            20.0,
            "tasks/s",
        ),
        ratio_goal(
            "action overhead ≤ 1.1x raw",
            median(Scenario::Action, "modhost call_action", ""),
            median(Scenario::Action, "raw wasmtime instantiate + call", ""),
            false,
            1.1,
            "µs",
        ),
        absolute_goal(
            "run-blocking overhead ≤ 15 µs",
            median(Scenario::Blocking, "modhost run-blocking overhead", ""),
            false,
            15.0,
            "µs",
        ),
        ratio_goal(
            "gated subprocess ≤ 1.2x Python subprocess.run",
            median(Scenario::Subprocess, "modhost run-subprocess (gated)", ""),
            median(Scenario::Subprocess, "Python subprocess.run", ""),
            false,
            1.2,
            "µs",
        ),
        ratio_goal(
            "key-prefix lookup ≤ 1.2x the raw covering-index query (p50)",
            median(
                Scenario::Lookup,
                "modhost store",
                "key prefix, 50 newest, p50",
            ),
            median(
                Scenario::Lookup,
                "raw SQL, same plan",
                "key prefix, 50 newest, p50",
            ),
            false,
            1.2,
            "ms",
        ),
        match (rss, held) {
            (Some(r), Some(h)) => Goal {
                goal: "100,000 tasks waiting for a confirmation in ≤ 256 MiB".into(),
                measured: format!("{h:.0} of 100000 waiting, {r:.0} MiB resident"),
                met: Some(h >= 100_000.0 && r <= 256.0),
            },
            _ => absolute_goal(
                "100,000 tasks waiting for a confirmation in ≤ 256 MiB",
                None,
                false,
                0.0,
                "",
            ),
        },
        ratio_goal(
            "outbound GET from a guest ≤ 1.3x raw reqwest",
            median(Scenario::Http, "modhost guest GET (through the grant)", ""),
            median(Scenario::Http, "raw reqwest GET in the host", ""),
            false,
            1.3,
            "µs",
        ),
        ratio_goal(
            "download into the data directory ≥ 0.8x raw",
            median(Scenario::Http, "modhost guest download into /data", ""),
            median(Scenario::Http, "raw reqwest download into a file", ""),
            true,
            0.8,
            "MiB/s",
        ),
    ]
}
