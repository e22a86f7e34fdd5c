//! `modhost-bench`: one benchmark run of modhost beside its peers, written
//! to `BENCHMARKS.md` (see the crate docs).
//!
//! ```text
//! cargo run --release -p modhost-bench [-- OPTIONS]
//!   --smoke            seconds: every path at tiny sizes, no peer installs
//!   --runs R           runs of each scenario (3)
//!   --tasks N          tasks per task measurement (20000)
//!   --only A,B         only these scenarios (tasks, progress, action,
//!                      blocking, subprocess, lookup, waiting, http)
//!   --download-mib M   size of the outbound download (1024)
//!   --no-peers         modhost and the raw limits only
//!   --no-obelisk       skip obelisk (its first install takes ~17 minutes)
//!   --out PATH         where the report goes (BENCHMARKS.md at the root)
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use modhost_bench::{Options, Scenario, run, waiting_json};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n] = args.as_slice()
        && flag == "--waiting"
    {
        println!("{}", waiting_json(n.parse().context("--waiting N")?)?);
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mut options = if args.iter().any(|a| a == "--smoke") {
        Options::smoke(exe)
    } else {
        Options::full(exe)
    };
    let mut out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--smoke" => {}
            "--runs" => options.runs = value()?.parse().context("--runs")?,
            "--tasks" => options.tasks = value()?.parse().context("--tasks")?,
            "--download-mib" => {
                let mib: u64 = value()?.parse().context("--download-mib")?;
                anyhow::ensure!(mib >= 1, "--download-mib must be at least 1");
                options.download_bytes = mib << 20;
            }
            "--only" => {
                options.only = value()?
                    .split(',')
                    .map(Scenario::parse)
                    .collect::<Result<_>>()?;
            }
            "--no-peers" => {
                options.peers.python = false;
                options.peers.obelisk = false;
            }
            "--no-obelisk" => options.peers.obelisk = false,
            "--out" => out = value()?.into(),
            // What `cargo bench` passes.
            "--bench" => {}
            other => bail!("unknown option {other} (see the top of bench/src/main.rs)"),
        }
    }
    if !args.is_empty() && !args.iter().all(|a| a == "--smoke") {
        options.command = format!(
            "{} -- {}",
            options.command.split(" -- ").next().unwrap_or_default(),
            args.join(" ")
        );
    }
    let report = run(&options)?;
    let md = report.markdown();
    std::fs::write(&out, &md).with_context(|| format!("writing {}", out.display()))?;
    print!("{md}");
    eprintln!("written to {}", out.display());
    Ok(())
}
