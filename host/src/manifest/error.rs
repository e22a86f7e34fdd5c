//! [`ManifestError`]: why a manifest was refused, one variant per fault.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use super::names::{InvalidEnvName, InvalidModuleName};
use super::network::InvalidHostPattern;
use crate::subprocess::argv::ShapeError;

/// The largest manifest read: a real one is a few KiB, and the whole file is
/// held in memory while it is parsed.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// The longest `description`: it is shown in listings, not documentation.
pub const MAX_DESCRIPTION_BYTES: usize = 1024;

/// Why a manifest was refused. Each message names the key at fault.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: Arc<io::Error>,
    },
    #[error("{} is not UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    #[error("module.toml is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    #[error("module.toml{}: {message}", at_line(*.line))]
    Syntax {
        line: Option<usize>,
        message: String,
    },
    #[error("module.toml: name `{value}` is invalid: {reason}")]
    Name {
        value: String,
        reason: InvalidModuleName,
    },
    #[error("module.toml: version `{value}` is invalid: {reason}")]
    Version { value: String, reason: &'static str },
    #[error(
        "module.toml: description has {bytes} bytes; at most {MAX_DESCRIPTION_BYTES} are allowed"
    )]
    DescriptionTooLong { bytes: usize },
    #[error("module.toml: component `{value}` is invalid: {reason}")]
    Component { value: String, reason: &'static str },
    #[error(
        "module.toml: [build] command is a shell string; write it as a list of arguments, as in `command = [\"cargo\", \"build\"]`"
    )]
    BuildShellString,
    #[error("module.toml: [build] command is empty")]
    BuildEmpty,
    #[error("module.toml: [build] command argument {position} is invalid: {reason}")]
    BuildArgument {
        position: usize,
        reason: &'static str,
    },
    #[error("module.toml: [build] workdir `{value}` is invalid: {reason}")]
    BuildWorkdir { value: String, reason: &'static str },
    #[error("module.toml: [network] allow `{value}` is invalid: {reason}")]
    NetworkAllow {
        value: String,
        reason: InvalidHostPattern,
    },
    #[error("module.toml: [network] allow lists `{value}` twice")]
    NetworkDuplicate { value: String },
    #[error("module.toml: {key} = {value} is out of range {min}..={max}")]
    OutOfRange {
        key: &'static str,
        value: i64,
        min: u64,
        max: u64,
    },
    #[error(
        "module.toml: [tasks] max-active-per-module = {per_module} is below max-active-per-user = {per_user}"
    )]
    PerModuleBelowPerUser { per_module: u32, per_user: u32 },
    #[error("module.toml: {key} has {count} entries; at most {max} are allowed")]
    TooMany {
        key: &'static str,
        count: usize,
        max: usize,
    },
    #[error("module.toml: [subprocess] env `{value}` is refused: {reason}")]
    EnvName {
        value: String,
        reason: InvalidEnvName,
    },
    #[error("module.toml: [subprocess] env lists `{value}` twice")]
    EnvDuplicate { value: String },
    #[error("module.toml: [[subprocess.programs]] program `{program}` is invalid: {reason}")]
    Program {
        program: String,
        reason: &'static str,
    },
    #[error(
        "module.toml: [[subprocess.programs]] program `{program}` has no argument shapes; `args` needs at least one (`[[]]` for no arguments)"
    )]
    NoShapes { program: String },
    #[error(
        "module.toml: [[subprocess.programs]] program `{program}`, shape {shape} `{written}`: {reason}"
    )]
    Shape {
        program: String,
        /// 1-based index into `args`.
        shape: usize,
        /// The shape as the manifest writes it, cut when long.
        written: String,
        reason: ShapeError,
    },
    #[error(
        "module.toml: [[subprocess.programs]] program `{program}` is granted twice; list all its shapes in one grant"
    )]
    DuplicateProgram { program: String },
    #[error(
        "module.toml: [[subprocess.programs]] program `{program}` is the same file as `{other}`; list all its shapes in one grant"
    )]
    SameProgram { program: String, other: String },
    #[error(
        "module.toml: [[subprocess.programs]] program `{program}` not found on the host search path {search_path}"
    )]
    ProgramNotFound {
        program: String,
        search_path: String,
    },
    #[error("module.toml: [[subprocess.programs]] program `{program}` is not an executable file")]
    ProgramNotExecutable { program: String },
    #[error(
        "module.toml: [[subprocess.programs]] program `{program}` resolves to {}, inside a module or data directory, where a module could replace it",
        path.display()
    )]
    ProgramInSandbox { program: String, path: PathBuf },
}

fn at_line(line: Option<usize>) -> String {
    line.map(|l| format!(" line {l}")).unwrap_or_default()
}
