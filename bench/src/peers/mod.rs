//! The peers modhost is measured beside, installed where missing into
//! modhost's cache (`~/.cache/modhost/peers`) from the package registries:
//! the seed system and huey from Python's, obelisk from crates.io.
//!
//! An install goes into a scratch directory and is moved in place when
//! complete, so an interrupted one is never taken for a finished one.

pub mod obelisk;
pub mod python;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Where peers are installed.
pub fn cache() -> Result<PathBuf> {
    let dir = modhost::modules::guest_tools::cache_dir()
        .context("HOME is not set: there is no cache to install the peers into")?
        .join("peers");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// `dir`, installed by `install` into a scratch directory first when it is
/// not there yet.
pub fn install_once(
    dir: &Path,
    what: &str,
    install: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if dir.join("installed").is_file() {
        return Ok(());
    }
    let _ = std::fs::remove_dir_all(dir);
    let mut scratch = dir.as_os_str().to_owned();
    scratch.push(format!(".partial-{}", std::process::id()));
    let scratch = PathBuf::from(scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!("installing {what} into {}", dir.display());
    if let Err(e) = install(&scratch) {
        let _ = std::fs::remove_dir_all(&scratch);
        return Err(e.context(format!("installing {what}")));
    }
    std::fs::write(scratch.join("installed"), what)?;
    std::fs::rename(&scratch, dir).with_context(|| format!("moving {what} into place"))?;
    Ok(())
}

/// Runs `cmd` and fails with the tail of its error output unless it
/// succeeds; returns its standard output.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        bail!(
            "{cmd:?} failed ({}):\n{}",
            out.status,
            lines[lines.len().saturating_sub(12)..].join("\n")
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// The JSON object on the last line of `cmd`'s output.
pub fn run_json(cmd: &mut Command) -> Result<serde_json::Value> {
    let out = run(cmd)?;
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("not a JSON line: {last:?}"))
}

/// Tasks per second from a peer script's `{tasks, completed, total_s}`,
/// failing unless every task completed.
pub fn tasks_per_s(out: &serde_json::Value, peer: &str) -> Result<f64> {
    let (tasks, completed) = (out["tasks"].as_u64(), out["completed"].as_u64());
    let total = out["total_s"].as_f64().context("no total_s")?;
    if tasks.is_none() || tasks != completed {
        bail!("{peer} completed {completed:?} of {tasks:?} tasks");
    }
    let tasks = u32::try_from(tasks.unwrap_or_default())?;
    Ok(f64::from(tasks) / total)
}

/// The scripts that drive the Python peers.
pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("peers")
        .join(name)
}
