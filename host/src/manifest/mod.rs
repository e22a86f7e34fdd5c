//! `module.toml`, parsed once into a typed, validated [`Policy`].
//!
//! Host functions never read raw TOML: they ask the [`Policy`] built here.
//! What this enforces when a module loads:
//!
//! - unknown keys anywhere are errors (`deny_unknown_fields`), and every
//!   number is range-checked against a named [`Setting`];
//! - the module name, version and component path are well-formed, and the
//!   component stays inside the module directory;
//! - network destinations are `host:port` with `*.` only as a leading label;
//! - subprocess grants name programs resolved to absolute paths on the
//!   host's search path (never a guest's `PATH`, never inside a module or data
//!   directory), with argument shapes that cannot carry the classic command
//!   injections (`git -c`, `tar --to-command`, `ext::` transports), and
//!   environment names that cannot change which code runs.
//!
//! Anything not granted is denied; see [`Policy`].

pub(crate) mod env;
pub(crate) mod error;
pub(crate) mod limits;
pub(crate) mod names;
pub(crate) mod network;

use std::fs::File;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

pub use env::LoadEnv;
pub use error::{MAX_DESCRIPTION_BYTES, MAX_MANIFEST_BYTES, ManifestError};
pub use limits::{
    BLOCKING_DEADLINE_MS, CALL_DEADLINE_MS, DATA_MAX_MIB, FIRST_BYTE_TIMEOUT_MS, Limits,
    MAX_ACTIVE_PER_MODULE, MAX_ACTIVE_PER_USER, MAX_CONCURRENT_REQUESTS, MAX_CONCURRENT_TASKS,
    MAX_RESPONSE_MIB, MEMORY_MIB, REQUEST_TIMEOUT_MS, ReadScope, Setting, TASK_DEADLINE_MS,
    TasksGrant,
};
pub use names::{
    EnvName, InvalidEnvName, InvalidModuleName, MAX_ENV_NAME_BYTES, MAX_MODULE_NAME_BYTES,
    MAX_VERSION_BYTES, ModuleName,
};
pub use network::{HostPattern, InvalidHostPattern, MAX_NETWORK_ALLOW, NetworkGrant, Scheme};

use crate::subprocess::grant::{RawSubprocess, SubprocessGrant};
use crate::text::{shown, truncate};

/// The manifest's file name inside a module directory.
pub const MANIFEST_FILE: &str = "module.toml";

/// The longest `component` or `[build] workdir` path (PATH_MAX on Linux).
pub const MAX_PATH_BYTES: usize = 4096;

/// The most `[build] command` arguments.
pub const MAX_BUILD_ARGS: usize = 256;

/// A module's manifest, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: ModuleName,
    pub version: String,
    pub description: Option<String>,
    /// Relative to the module directory, without `..`; ends in `.wasm`.
    pub component: PathBuf,
    pub build: Option<BuildSpec>,
    pub policy: Policy,
}

impl Manifest {
    /// Grants that are allowed but deserve an operator's second look
    /// (`modhost check` prints them).
    pub fn warnings(&self) -> Vec<String> {
        self.policy.subprocess.warnings()
    }
}

/// `[build]`: how to build the component, as an argument list (never a
/// shell string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildSpec {
    pub command: Vec<String>,
    /// Relative to the module directory; `.` by default. It may lead out of
    /// it (`..`), as for an example built from the tree that holds it.
    pub workdir: PathBuf,
}

/// What a module may do, computed once at load.
///
/// Deny by default: [`Policy::default()`] grants no data directory, no
/// network destination and no program, lets a caller read only their own
/// tasks, and applies the default task counts and limits
/// ([`MEMORY_MIB`], [`CALL_DEADLINE_MS`], ...). A manifest only widens it
/// key by key, within the ranges of each [`Setting`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub filesystem: FilesystemGrant,
    pub network: NetworkGrant,
    pub tasks: TasksGrant,
    pub limits: Limits,
    pub subprocess: SubprocessGrant,
}

impl Policy {
    /// What the module may do, one sentence per grant, for the people who
    /// decide whether to run it (the API's and dashboard's module list).
    pub fn in_plain_words(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.filesystem.data {
            out.push(match self.filesystem.max_bytes {
                Some(max) => format!(
                    "Reads and writes files in its own data directory, a separate one per organization, of at most {} MiB each.",
                    max / limits::MIB
                ),
                None => "Reads and writes files in its own data directory, a separate one per organization, within the host's quota."
                    .to_owned(),
            });
        } else {
            out.push("Has no file access.".to_owned());
        }
        if self.network.allow.is_empty() {
            out.push("Makes no network connections.".to_owned());
        } else {
            let hosts: Vec<String> = self.network.allow.iter().map(|h| h.to_string()).collect();
            let n = &self.network;
            out.push(format!(
                "May send HTTP requests to {} (internal addresses only where granted by address), {} at once, each up to {} MiB and {} s.",
                hosts.join(", "),
                n.max_concurrent,
                n.max_response_bytes >> 20,
                n.timeout.as_secs()
            ));
        }
        let t = &self.tasks;
        out.push(format!(
            "Runs background tasks: at most {} at once, {} active per user, {} active per organization.",
            t.max_concurrent, t.max_active_per_user, t.max_active_per_module
        ));
        out.push(match t.read {
            ReadScope::Own => "Each user sees only their own tasks of this module.".to_owned(),
            ReadScope::Organization => {
                "Any user sees every task of this module in their organization.".to_owned()
            }
        });
        let l = &self.limits;
        out.push(format!(
            "Uses at most {} MiB of memory; an action may run {} ms, a task {} ms.",
            l.memory_bytes / (1024 * 1024),
            l.call_deadline.as_millis(),
            l.task_deadline.as_millis()
        ));
        let sp = &self.subprocess;
        if sp.programs.is_empty() {
            out.push("Launches no programs.".to_owned());
        }
        for p in &sp.programs {
            let shapes: Vec<String> = p
                .shapes
                .iter()
                .map(|s| format!("`{} {s}`", p.name))
                .collect();
            out.push(format!(
                "May run {} ({}) only as {}.",
                p.name,
                p.path.display(),
                shapes.join(" or ")
            ));
        }
        if !sp.programs.is_empty() {
            let env: Vec<&str> = sp.env.iter().map(AsRef::as_ref).collect();
            out.push(format!(
                "Its programs run confined to its data directory{}, for at most {} ms, {} at once{}.",
                if sp.network { ", with network access" } else { ", without network" },
                sp.timeout.as_millis(),
                sp.max_concurrent,
                if env.is_empty() {
                    String::new()
                } else {
                    format!(", and may be given the variables {}", env.join(", "))
                }
            ));
        }
        out
    }
}

/// `[filesystem]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilesystemGrant {
    /// Preopen the module's private data directory for WASI.
    pub data: bool,
    /// Bytes each organization's data directory may hold (`max-mib`);
    /// `None`: the host's default quota.
    pub max_bytes: Option<u64>,
}

/// Reads and validates `dir/module.toml`.
pub fn load_dir(dir: &Path, env: &LoadEnv) -> Result<Manifest, ManifestError> {
    let path = dir.join(MANIFEST_FILE);
    let io_error = |error| ManifestError::Io {
        path: path.clone(),
        error: Arc::new(error),
    };
    let file = File::open(&path).map_err(io_error)?;
    let mut bytes = Vec::new();
    let limit = u64::try_from(MAX_MANIFEST_BYTES).unwrap_or(u64::MAX);
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge);
    }
    let text =
        String::from_utf8(bytes).map_err(|_| ManifestError::NotUtf8 { path: path.clone() })?;
    parse(&text, env)
}

/// Validates a manifest's text.
pub fn parse(text: &str, env: &LoadEnv) -> Result<Manifest, ManifestError> {
    if text.len() > MAX_MANIFEST_BYTES {
        return Err(ManifestError::TooLarge);
    }
    let raw: RawManifest = toml::from_str(text).map_err(|e| syntax_error(text, &e))?;
    raw.validate(env)
}

/// A TOML or schema error as one stable line: the parser's message and the
/// line it points at.
fn syntax_error(text: &str, error: &toml::de::Error) -> ManifestError {
    let line = error.span().map(|span| {
        let before = text.as_bytes().get(..span.start).unwrap_or(text.as_bytes());
        before.iter().filter(|&&b| b == b'\n').count() + 1
    });
    let joined = error
        .message()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    // The parser quotes keys as written: escape their control characters
    // and cut a long one, as `shown` does for values.
    let mut message = String::with_capacity(joined.len());
    for c in joined.chars() {
        if c.is_control() {
            message.extend(c.escape_debug());
        } else {
            message.push(c);
        }
    }
    let cut = truncate(&message, MAX_SYNTAX_MESSAGE_BYTES).len();
    if cut < message.len() {
        message.truncate(cut);
        message.push('…');
    }
    ManifestError::Syntax { line, message }
}

/// The longest parser message a [`ManifestError::Syntax`] keeps: it may
/// quote a key, which can be as long as the file.
const MAX_SYNTAX_MESSAGE_BYTES: usize = 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawManifest {
    name: String,
    version: String,
    description: Option<String>,
    component: String,
    build: Option<RawBuild>,
    #[serde(default)]
    filesystem: RawFilesystem,
    #[serde(default)]
    network: RawNetwork,
    #[serde(default)]
    tasks: limits::RawTasks,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    subprocess: RawSubprocess,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFilesystem {
    #[serde(default)]
    data: bool,
    max_mib: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawNetwork {
    #[serde(default)]
    allow: Vec<String>,
    max_response_mib: Option<i64>,
    first_byte_timeout_ms: Option<i64>,
    timeout_ms: Option<i64>,
    max_concurrent: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBuild {
    command: RawCommand,
    workdir: Option<String>,
}

/// `[build] command`: a list, or a string kept only to be refused with a
/// clear message.
#[derive(Debug)]
enum RawCommand {
    List(Vec<String>),
    Shell,
}

impl<'de> Deserialize<'de> for RawCommand {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CommandVisitor;

        impl<'de> Visitor<'de> for CommandVisitor {
            type Value = RawCommand;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of strings")
            }

            fn visit_str<E: de::Error>(self, _: &str) -> Result<RawCommand, E> {
                Ok(RawCommand::Shell)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawCommand, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element::<String>()? {
                    args.push(arg);
                }
                Ok(RawCommand::List(args))
            }
        }

        deserializer.deserialize_any(CommandVisitor)
    }
}

impl RawManifest {
    fn validate(self, env: &LoadEnv) -> Result<Manifest, ManifestError> {
        let name = ModuleName::new(self.name.as_str()).map_err(|reason| ManifestError::Name {
            value: shown(&self.name),
            reason,
        })?;
        names::check_version(&self.version).map_err(|reason| ManifestError::Version {
            value: shown(&self.version),
            reason,
        })?;
        if let Some(description) = &self.description
            && description.len() > MAX_DESCRIPTION_BYTES
        {
            return Err(ManifestError::DescriptionTooLong {
                bytes: description.len(),
            });
        }
        let component =
            component_path(&self.component).map_err(|reason| ManifestError::Component {
                value: shown(&self.component),
                reason,
            })?;
        let build = self.build.map(build_spec).transpose()?;
        let policy = Policy {
            filesystem: FilesystemGrant {
                data: self.filesystem.data,
                max_bytes: self
                    .filesystem
                    .max_mib
                    .map(|mib| DATA_MAX_MIB.read(Some(mib)).map(|m| m * limits::MIB))
                    .transpose()?,
            },
            network: network_grant(self.network)?,
            tasks: TasksGrant::from_raw(self.tasks)?,
            limits: Limits::from_raw(self.limits)?,
            subprocess: SubprocessGrant::from_raw(self.subprocess, env)?,
        };
        Ok(Manifest {
            name,
            version: self.version,
            description: self.description,
            component,
            build,
            policy,
        })
    }
}

/// A path relative to the module directory that cannot leave it.
/// A path relative to the module directory that stays inside it.
fn relative_path(value: &str) -> Result<PathBuf, &'static str> {
    let path = relative_path_up(value)?;
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("the path must not contain `..`");
    }
    Ok(path)
}

/// A path relative to the module directory, which may lead out of it
/// (`..`): where a build runs. The build is its author's code with the
/// operator's rights either way; a module inside a larger tree (an example
/// beside the SDK it is built with) builds from there.
fn relative_path_up(value: &str) -> Result<PathBuf, &'static str> {
    if value.is_empty() {
        return Err("a path must not be empty");
    }
    if value.len() > MAX_PATH_BYTES {
        return Err("a path must be at most 4096 bytes long");
    }
    if value.contains('\0') {
        return Err("a path must not contain NUL");
    }
    let path = Path::new(value);
    for component in path.components() {
        match component {
            Component::Prefix(_) | Component::RootDir => {
                return Err("the path must be relative to the module directory");
            }
            Component::CurDir | Component::ParentDir | Component::Normal(_) => {}
        }
    }
    Ok(path.to_owned())
}

fn component_path(value: &str) -> Result<PathBuf, &'static str> {
    let path = relative_path(value)?;
    let named_wasm = path.extension().is_some_and(|e| e == "wasm")
        && path.file_stem().is_some_and(|s| !s.is_empty());
    if !named_wasm || value.ends_with('/') {
        return Err("the component must be a `.wasm` file");
    }
    Ok(path)
}

fn build_spec(raw: RawBuild) -> Result<BuildSpec, ManifestError> {
    let RawCommand::List(command) = raw.command else {
        return Err(ManifestError::BuildShellString);
    };
    if command.is_empty() {
        return Err(ManifestError::BuildEmpty);
    }
    if command.len() > MAX_BUILD_ARGS {
        return Err(ManifestError::TooMany {
            key: "[build] command",
            count: command.len(),
            max: MAX_BUILD_ARGS,
        });
    }
    for (i, arg) in command.iter().enumerate() {
        let reason = if arg.is_empty() {
            "it is empty"
        } else if arg.contains('\0') {
            "it contains NUL"
        } else if i == 0 && arg.chars().any(char::is_whitespace) {
            "the program contains whitespace; give each argument its own string"
        } else {
            continue;
        };
        return Err(ManifestError::BuildArgument {
            position: i + 1,
            reason,
        });
    }
    let workdir = match raw.workdir {
        None => PathBuf::from("."),
        Some(value) => relative_path_up(&value).map_err(|reason| ManifestError::BuildWorkdir {
            value: shown(&value),
            reason,
        })?,
    };
    Ok(BuildSpec { command, workdir })
}

fn network_grant(raw: RawNetwork) -> Result<NetworkGrant, ManifestError> {
    if raw.allow.len() > MAX_NETWORK_ALLOW {
        return Err(ManifestError::TooMany {
            key: "[network] allow",
            count: raw.allow.len(),
            max: MAX_NETWORK_ALLOW,
        });
    }
    let mut allow: Vec<HostPattern> = Vec::with_capacity(raw.allow.len());
    for value in raw.allow {
        let pattern: HostPattern = value
            .parse()
            .map_err(|reason| ManifestError::NetworkAllow {
                value: shown(&value),
                reason,
            })?;
        if allow.contains(&pattern) {
            return Err(ManifestError::NetworkDuplicate {
                value: shown(&value),
            });
        }
        allow.push(pattern);
    }
    Ok(NetworkGrant {
        allow,
        max_response_bytes: MAX_RESPONSE_MIB.read(raw.max_response_mib)? << 20,
        first_byte_timeout: Duration::from_millis(
            FIRST_BYTE_TIMEOUT_MS.read(raw.first_byte_timeout_ms)?,
        ),
        timeout: Duration::from_millis(REQUEST_TIMEOUT_MS.read(raw.timeout_ms)?),
        max_concurrent: MAX_CONCURRENT_REQUESTS.read_u32(raw.max_concurrent)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "name = \"m\"\nversion = \"0.1.0\"\ncomponent = \"m.wasm\"\n";

    #[test]
    fn minimal_manifest_gets_the_default_policy() {
        let m = parse(MINIMAL, &LoadEnv::host_default()).unwrap();
        assert_eq!(m.policy, Policy::default());
        assert!(m.build.is_none());
        assert!(m.warnings().is_empty());
    }

    #[test]
    fn a_build_may_run_above_its_module_directory_while_its_component_stays_inside() {
        let env = LoadEnv::host_default();
        let up = format!("{MINIMAL}[build]\nworkdir = \"../..\"\ncommand = [\"make\"]\n");
        let m = parse(&up, &env).unwrap();
        assert_eq!(m.build.unwrap().workdir, Path::new("../.."));
        let absolute = format!("{MINIMAL}[build]\nworkdir = \"/tmp\"\ncommand = [\"make\"]\n");
        assert!(matches!(
            parse(&absolute, &env),
            Err(ManifestError::BuildWorkdir { .. })
        ));
        let outside = MINIMAL.replace("m.wasm", "../m.wasm");
        assert!(parse(&outside, &env).is_err());
    }

    #[test]
    fn default_policy_denies_every_capability() {
        let p = Policy::default();
        assert!(!p.filesystem.data);
        assert!(p.network.allow.is_empty());
        assert!(p.subprocess.is_empty());
        assert!(p.subprocess.env.is_empty());
        assert!(!p.subprocess.network);
        assert_eq!(p.tasks.read, ReadScope::Own);
    }

    #[test]
    fn syntax_error_names_the_line() {
        let err = parse(
            &format!("{MINIMAL}\n\ncolour = 1\n"),
            &LoadEnv::host_default(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("module.toml line 6: unknown field `colour`"),
            "{err}"
        );
    }

    #[test]
    fn syntax_error_escapes_control_characters_and_cuts_a_long_key() {
        let env = LoadEnv::host_default();
        let err = parse(&format!("{MINIMAL}\n\"a\\u001b[31m\\u0000\" = 1\n"), &env).unwrap_err();
        let message = err.to_string();
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(
            message.contains(r"unknown field `a\u{1b}[31m\0`"),
            "{message}"
        );
        let long = "k".repeat(60_000);
        let message = parse(&format!("{MINIMAL}\n{long} = 1\n"), &env)
            .unwrap_err()
            .to_string();
        assert!(message.len() < 1200, "{} bytes", message.len());
        assert!(message.ends_with('…'), "{message}");
    }

    #[test]
    fn component_path_stays_inside_the_module_directory() {
        for ok in ["m.wasm", "./target/m.wasm", "a/b/c.wasm"] {
            assert!(component_path(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "/m.wasm",
            "../m.wasm",
            "a/../../m.wasm",
            "m.wat",
            ".wasm",
            "m.wasm/",
            "m\0.wasm",
        ] {
            assert!(component_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn oversize_manifest_is_refused_before_parsing() {
        let text = format!("{MINIMAL}#{}", "x".repeat(MAX_MANIFEST_BYTES));
        assert!(matches!(
            parse(&text, &LoadEnv::host_default()),
            Err(ManifestError::TooLarge)
        ));
    }
}
