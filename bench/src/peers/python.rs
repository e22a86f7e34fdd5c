//! The Python peers: the seed system (democrai, whose task manager modhost
//! grew from) and huey, in one virtual environment of a Python the seed
//! system supports (3.12 or newer); and Python's own `subprocess.run`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{install_once, run, run_json, script, tasks_per_s};

pub const DEMOCRAI: &str = "0.0.1b2";
pub const HUEY: &str = "3.5.4";

/// A virtual environment holding both peers.
#[derive(Debug, Clone)]
pub struct PythonPeers {
    pub python: PathBuf,
    /// `Python 3.12.1`.
    pub version: String,
}

/// A Python of at least 3.12 that runs: pyenv's newest such version, else
/// `python3.13`/`python3.12` on the search path (a pyenv shim there may
/// name a version that is not selected, so each is tried).
fn base_python() -> Result<PathBuf> {
    let pyenv = std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".pyenv")))
        .map(|root| root.join("versions"));
    let mut installed: Vec<(u32, PathBuf)> = pyenv
        .and_then(|dir| std::fs::read_dir(dir).ok())
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter_map(|p| {
            let minor = p
                .file_name()?
                .to_str()?
                .strip_prefix("3.")?
                .split('.')
                .next()?
                .parse::<u32>()
                .ok()?;
            (minor >= 12).then(|| (minor, p.join("bin").join("python3")))
        })
        .collect();
    installed.sort();
    let on_path = ["python3.13", "python3.12"]
        .into_iter()
        .filter_map(modhost_tests::on_path);
    installed
        .into_iter()
        .rev()
        .map(|(_, p)| p)
        .chain(on_path)
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .context(
            "the seed system needs Python 3.12 or newer, and none was found \
             (under pyenv or as python3.12 on PATH): install one, for example `pyenv install 3.12`",
        )
}

impl PythonPeers {
    pub fn install(cache: &Path) -> Result<Self> {
        let dir = cache.join(format!("python-democrai-{DEMOCRAI}-huey-{HUEY}"));
        let what = format!("democrai {DEMOCRAI} and huey {HUEY}");
        install_once(&dir, &what, |scratch| {
            let base = base_python()?;
            run(Command::new(&base).arg("-m").arg("venv").arg(scratch))?;
            run(Command::new(scratch.join("bin").join("python3"))
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .arg(format!("democrai=={DEMOCRAI}"))
                .arg(format!("huey=={HUEY}")))?;
            Ok(())
        })?;
        let python = dir.join("bin").join("python3");
        let version = run(Command::new(&python).arg("--version"))?
            .trim()
            .to_owned();
        Ok(PythonPeers { python, version })
    }

    /// No-op tasks through the seed system's task manager, each storing
    /// `updates` progress updates. Tasks per second, submit → completed.
    pub fn democrai(&self, n: usize, updates: u32) -> Result<f64> {
        self.tasks("democrai", n, updates)
    }

    /// No-op tasks through huey's SqliteHuey with `workers` thread
    /// workers. Tasks per second, enqueue → completed.
    pub fn huey(&self, n: usize, workers: usize) -> Result<f64> {
        self.tasks("huey", n, workers)
    }

    /// `PEER_tasks.py N DB SETTING` on a database of its own.
    fn tasks(&self, peer: &str, n: usize, setting: impl ToString) -> Result<f64> {
        let db = tempfile::tempdir()?;
        let out = run_json(
            Command::new(&self.python)
                .arg(script(&format!("{peer}_tasks.py")))
                .arg(n.to_string())
                .arg(db.path().join(format!("{peer}.db")))
                .arg(setting.to_string()),
        )?;
        tasks_per_s(&out, peer)
    }
}

/// The median of `n` runs of `program` through Python's `subprocess.run`,
/// in microseconds, with `python` (any Python 3).
pub fn subprocess_run(python: &Path, program: &Path, n: usize) -> Result<f64> {
    let out = run_json(
        Command::new(python)
            .arg(script("subprocess_run.py"))
            .arg(program)
            .arg(n.to_string()),
    )?;
    let mut us: Vec<f64> = out["latencies_us"]
        .as_array()
        .context("no latencies")?
        .iter()
        .filter_map(serde_json::Value::as_f64)
        .collect();
    if us.len() != n {
        bail!("subprocess_run.py measured {} of {n} runs", us.len());
    }
    Ok(crate::stats::median(&mut us))
}
