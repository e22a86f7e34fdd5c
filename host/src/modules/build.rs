//! A module's `[build]` command: an argv list run in the module's directory.
//!
//! The command is the module author's code (a cargo build runs build
//! scripts and proc macros): it runs with the operator's user, files and
//! network, which is why `serve` runs it only when told so by name
//! (`--build-unconfined`). Its environment is cleared to what a toolchain
//! needs, so the host's own secrets (tokens, database URLs) stay out of it.

use std::path::Path;
use std::process::Command;

use super::guest_tools::{self, Tool, ToolError};
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
    #[error("cannot build module: {0}")]
    Tool(#[from] ToolError),
    #[error("build command `{command}` failed ({status}):\n{output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
}

/// The host's variables a build command sees: where the toolchain and its
/// caches are, the search path, the locale, and the proxies a registry is
/// reached through. Nothing else of the host's environment.
pub const BUILD_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "TMPDIR",
    "LANG",
    "LC_ALL",
    "TERM",
    "CARGO_HOME",
    "CARGO_TARGET_DIR",
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

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
    let mut command = match Tool::named(program) {
        Some(tool) => toolchain(tool)?,
        None => Command::new(program),
    };
    command.env_clear();
    for name in BUILD_ENV {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    let output = command
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

/// The command of a component toolchain a build names
/// ([`guest_tools`]): the one on the search path, or the pinned one in the
/// tool cache, installed the first time.
fn toolchain(tool: Tool) -> Result<Command, ToolError> {
    let cache = guest_tools::cache_dir().ok_or_else(|| ToolError {
        tool: tool.program(),
        reason: "HOME is not set, so there is no tool cache".into(),
        fix: format!(
            "install {} {} on the search path",
            tool.program(),
            tool.version()
        ),
    })?;
    tool.command(std::env::var_os("PATH").as_ref(), &cache, |dir| {
        tracing::warn!(
            "installing {} {} into {} (once; it takes a minute)",
            tool.program(),
            tool.version(),
            dir.display()
        );
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_sees_only_the_toolchains_variables_of_the_hosts_environment() {
        let dir = tempfile::tempdir().unwrap();
        // The output of a failed build is kept: print the environment, fail.
        let spec = BuildSpec {
            command: vec!["sh".into(), "-c".into(), "env; exit 3".into()],
            workdir: ".".into(),
        };
        let Err(BuildError::Failed { output, .. }) = run_build(dir.path(), &spec) else {
            panic!("the build was to fail");
        };
        let names: Vec<&str> = output
            .lines()
            .filter_map(|l| l.split_once('=').map(|(n, _)| n))
            .collect();
        assert!(names.contains(&"PATH"), "{output}");
        // What the shell sets itself, and nothing else of the host's.
        let shell = ["PWD", "OLDPWD", "SHLVL", "_"];
        for name in names {
            assert!(
                BUILD_ENV.contains(&name) || shell.contains(&name),
                "the build saw {name}"
            );
        }
    }
}
