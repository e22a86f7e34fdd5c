//! A module's `[build]` command: an argv list run in the module's directory.

use std::path::Path;
use std::process::Command;

use super::wasm_target::{self, Ensured, TargetError};
use crate::manifest::BuildSpec;

/// How much of a failed build's output is kept in the error.
const BUILD_OUTPUT_TAIL_BYTES: usize = 4096;

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot start build command `{program}`: {reason}")]
    Spawn { program: String, reason: String },
    #[error("cannot build module: {0}")]
    Target(#[from] TargetError),
    #[error("build command `{command}` failed ({status}):\n{output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
}

/// Runs the build command and waits for it. Its output is kept only on
/// failure. A cargo build for a wasm target first makes sure the toolchain
/// has that target ([`wasm_target::ensure`]).
pub fn run_build(dir: &Path, spec: &BuildSpec) -> Result<(), BuildError> {
    let (program, args) = spec
        .command
        .split_first()
        .expect("manifest validation guarantees a non-empty build command");
    let workdir = dir.join(&spec.workdir);
    if let Some(target) = wasm_target::cargo_wasm_target(&spec.command)
        && let Ensured::Added { toolchain } =
            wasm_target::ensure("rustc".as_ref(), &workdir, target)?
    {
        tracing::warn!("{}", wasm_target::added_message(target, &toolchain));
    }
    tracing::info!(dir = %dir.display(), command = ?spec.command, "building module");
    let output = Command::new(program)
        .args(args)
        .current_dir(&workdir)
        .output()
        .map_err(|e| BuildError::Spawn {
            program: program.clone(),
            reason: e.to_string(),
        })?;
    if output.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    let start = text.len().saturating_sub(BUILD_OUTPUT_TAIL_BYTES);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    Err(BuildError::Failed {
        command: spec.command.join(" "),
        status: output.status.to_string(),
        output: text[start..].to_owned(),
    })
}
