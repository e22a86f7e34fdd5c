//! `[subprocess]`: the native programs a module may launch, each resolved to
//! an absolute path when the manifest loads, with the argument shapes it may
//! take and the environment variable names a request may set.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::argv::{self, ArgShape, ArgvDenied, Dialect, Family};
use crate::manifest::env::LoadEnv;
use crate::manifest::error::ManifestError;
use crate::manifest::limits::Setting;
use crate::manifest::names::EnvName;
use crate::text::shown;

/// Children of this module running at once: each is a native process with
/// its own memory and file descriptors.
pub const MAX_CONCURRENT_SUBPROCESSES: Setting = Setting {
    key: "[subprocess] max-concurrent",
    default: 2,
    min: 1,
    max: 64,
};

/// Default and ceiling of one request's timeout, in ms: the calling guest
/// waits for the child, so an hour at most.
pub const SUBPROCESS_TIMEOUT_MS: Setting = Setting {
    key: "[subprocess] timeout-ms",
    default: 10_000,
    min: 1,
    max: 3_600_000,
};

/// Default and ceiling of captured output per stream, in bytes: the host
/// buffers it in memory before handing it to the guest.
pub const MAX_OUTPUT_BYTES: Setting = Setting {
    key: "[subprocess] max-output-bytes",
    default: 1024 * 1024,
    min: 1,
    max: 64 * 1024 * 1024,
};

/// The most `[[subprocess.programs]]`: each is resolved and checked at load,
/// and an operator must be able to read the whole list.
pub const MAX_PROGRAMS: usize = 32;

/// The most argument shapes of one program; a denial lists the first few.
pub const MAX_SHAPES_PER_PROGRAM: usize = 64;

/// The most `[subprocess] env` names.
pub const MAX_ENV_NAMES: usize = 64;

/// The longest `program` value (PATH_MAX on Linux).
pub const MAX_PROGRAM_BYTES: usize = 4096;

/// `[subprocess]`: deny by default. With no programs (the default) nothing
/// may be launched, whatever the other keys say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubprocessGrant {
    pub max_concurrent: u32,
    /// Default and ceiling of a request's timeout.
    pub timeout: Duration,
    /// Default and ceiling of captured bytes per stream.
    pub max_output_bytes: u64,
    /// Whether children may use the network.
    pub network: bool,
    /// Variables a request may set; the child's environment starts empty.
    pub env: Vec<EnvName>,
    pub programs: Vec<ProgramGrant>,
}

/// One program a module may launch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgramGrant {
    /// As granted in the manifest: a bare name or an absolute path. Requests
    /// name the program this way.
    pub name: String,
    /// Absolute, resolved at load from the host's search path (never a
    /// guest's `PATH`).
    pub path: PathBuf,
    /// The argument lists it may take; at least one.
    pub shapes: Vec<ArgShape>,
}

impl ProgramGrant {
    /// Ok when `args` (without the program) fit one of the granted shapes.
    pub fn matches<S: AsRef<str>>(&self, args: &[S]) -> Result<(), ArgvDenied> {
        self.path_args(args).map(drop)
    }

    /// Like [`matches`](Self::matches), and says which arguments (by index)
    /// a granted shape reads as a `{path}`: the subprocess gate resolves
    /// those inside the module's data directory.
    pub fn path_args<S: AsRef<str>>(&self, args: &[S]) -> Result<Vec<usize>, ArgvDenied> {
        argv::match_shapes(&self.name, &self.shapes, args)
    }
}

impl Default for SubprocessGrant {
    fn default() -> Self {
        // No programs, so nothing is resolved and the host is not consulted.
        Self::from_raw(RawSubprocess::default(), &LoadEnv::host_default())
            .expect("the defaults are in range")
    }
}

impl SubprocessGrant {
    /// The grant for `name`, exactly as written in the manifest.
    pub fn program(&self, name: &str) -> Option<&ProgramGrant> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// True when no program may be launched.
    pub fn is_empty(&self) -> bool {
        self.programs.is_empty()
    }

    pub(crate) fn from_raw(raw: RawSubprocess, env: &LoadEnv) -> Result<Self, ManifestError> {
        let max_concurrent = MAX_CONCURRENT_SUBPROCESSES.read_u32(raw.max_concurrent)?;
        let timeout = Duration::from_millis(SUBPROCESS_TIMEOUT_MS.read(raw.timeout_ms)?);
        let max_output_bytes = MAX_OUTPUT_BYTES.read(raw.max_output_bytes)?;

        at_most("[subprocess] env", raw.env.len(), MAX_ENV_NAMES)?;
        let mut names = Vec::with_capacity(raw.env.len());
        for value in raw.env {
            let name = EnvName::new(value.as_str()).map_err(|reason| ManifestError::EnvName {
                value: shown(&value),
                reason,
            })?;
            if names.contains(&name) {
                return Err(ManifestError::EnvDuplicate {
                    value: shown(&value),
                });
            }
            names.push(name);
        }

        at_most("[[subprocess.programs]]", raw.programs.len(), MAX_PROGRAMS)?;
        // Everything that does not depend on the host first, so a manifest
        // gets the same error on every machine.
        let mut checked = Vec::with_capacity(raw.programs.len());
        let mut seen = HashSet::new();
        for raw in raw.programs {
            let shapes = check_program(&raw)?;
            if !seen.insert(raw.program.clone()) {
                return Err(ManifestError::DuplicateProgram {
                    program: shown(&raw.program),
                });
            }
            checked.push((raw.program, shapes));
        }
        let mut programs: Vec<ProgramGrant> = Vec::with_capacity(checked.len());
        let mut files: Vec<(PathBuf, String)> = Vec::new();
        for (name, shapes) in checked {
            let path = resolve(&name, env)?;
            let file = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if let Some((_, other)) = files.iter().find(|(f, _)| *f == file) {
                return Err(ManifestError::SameProgram {
                    program: shown(&name),
                    other: shown(other),
                });
            }
            files.push((file, name.clone()));
            programs.push(ProgramGrant { name, path, shapes });
        }

        Ok(Self {
            max_concurrent,
            timeout,
            max_output_bytes,
            network: raw.network,
            env: names,
            programs,
        })
    }

    /// `self` with `programs` (each an argument list in the manifest's
    /// grammar, by program as a request names it) and `env` added, checked
    /// as a manifest's grant is: the program's spelling and resolution, the
    /// shapes, and the caps on each.
    pub(crate) fn widened(
        &self,
        programs: &BTreeMap<String, BTreeSet<Vec<String>>>,
        env: &BTreeSet<String>,
        load: &LoadEnv,
    ) -> Result<SubprocessGrant, ManifestError> {
        let mut out = self.clone();
        for value in env {
            let name = EnvName::new(value.as_str()).map_err(|reason| ManifestError::EnvName {
                value: shown(value),
                reason,
            })?;
            if !out.env.contains(&name) {
                out.env.push(name);
            }
        }
        at_most("[subprocess] env", out.env.len(), MAX_ENV_NAMES)?;
        for (name, lists) in programs {
            let raw = RawProgram {
                program: name.clone(),
                args: lists.iter().cloned().collect(),
            };
            let shapes = check_program(&raw)?;
            if let Some(granted) = out.programs.iter_mut().find(|p| p.name == *name) {
                for shape in shapes {
                    if !granted.shapes.contains(&shape) {
                        granted.shapes.push(shape);
                    }
                }
                at_most(
                    "[[subprocess.programs]] args",
                    granted.shapes.len(),
                    MAX_SHAPES_PER_PROGRAM,
                )?;
                continue;
            }
            let path = resolve(name, load)?;
            let file = fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            if let Some(other) = out
                .programs
                .iter()
                .find(|p| fs::canonicalize(&p.path).unwrap_or_else(|_| p.path.clone()) == file)
            {
                return Err(ManifestError::SameProgram {
                    program: shown(name),
                    other: shown(&other.name),
                });
            }
            out.programs.push(ProgramGrant {
                name: name.clone(),
                path,
                shapes,
            });
        }
        at_most("[[subprocess.programs]]", out.programs.len(), MAX_PROGRAMS)?;
        Ok(out)
    }

    /// What an operator should know before granting this: programs that
    /// can run arbitrary code however carefully their arguments are shaped.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for p in &self.programs {
            out.extend(warning(&p.name));
            out.extend(
                p.shapes
                    .iter()
                    .filter_map(|s| argv::shape_warning(&p.name, s)),
            );
        }
        if self.network && !self.is_empty() {
            out.push(
                "subprocess children may use the network ([subprocess] network = true)".to_owned(),
            );
        }
        out
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawSubprocess {
    max_concurrent: Option<i64>,
    timeout_ms: Option<i64>,
    max_output_bytes: Option<i64>,
    #[serde(default)]
    network: bool,
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    programs: Vec<RawProgram>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct RawProgram {
    program: String,
    args: Vec<Vec<String>>,
}

/// The host-independent checks of one grant: the program's spelling and
/// every shape.
fn check_program(raw: &RawProgram) -> Result<Vec<ArgShape>, ManifestError> {
    let program = raw.program.as_str();
    check_program_name(program).map_err(|reason| ManifestError::Program {
        program: shown(program),
        reason,
    })?;
    if raw.args.is_empty() {
        return Err(ManifestError::NoShapes {
            program: shown(program),
        });
    }
    at_most(
        "[[subprocess.programs]] args",
        raw.args.len(),
        MAX_SHAPES_PER_PROGRAM,
    )?;
    let mut shapes: Vec<ArgShape> = Vec::with_capacity(raw.args.len());
    for (i, tokens) in raw.args.iter().enumerate() {
        let shape = ArgShape::parse(program, tokens).map_err(|reason| ManifestError::Shape {
            program: shown(program),
            shape: i + 1,
            written: written(tokens),
            reason,
        })?;
        if !shapes.contains(&shape) {
            shapes.push(shape);
        }
    }
    Ok(shapes)
}

/// A shape as an error shows it: its tokens separated by spaces, a token
/// that is empty or holds a space or a quote in quotes, and cut when long.
fn written(tokens: &[String]) -> String {
    let quoted: Vec<String> = tokens
        .iter()
        .map(|t| {
            if t.is_empty() || t.contains(char::is_whitespace) || t.contains(['"', '\\']) {
                format!("{t:?}")
            } else {
                t.clone()
            }
        })
        .collect();
    shown(&quoted.join(" "))
}

/// `TooMany` when `count` of `key` is over `max`.
fn at_most(key: &'static str, count: usize, max: usize) -> Result<(), ManifestError> {
    if count > max {
        return Err(ManifestError::TooMany { key, count, max });
    }
    Ok(())
}

fn check_program_name(program: &str) -> Result<(), &'static str> {
    if program.is_empty() {
        return Err("a program must not be empty");
    }
    if program.len() > MAX_PROGRAM_BYTES {
        return Err("a program must be at most 4096 bytes long");
    }
    if program.contains('\0') {
        return Err("a program must not contain NUL");
    }
    if program.chars().any(char::is_whitespace) {
        return Err(
            "a program must be one name or path, not a command line; arguments go in `args`",
        );
    }
    if program.contains(['*', '?', '[', ']']) {
        return Err("wildcards are not allowed; grant each program by name");
    }
    if let Some(rest) = program.strip_prefix('/') {
        if rest
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err("an absolute program path must not have `.`, `..` or empty components");
        }
        return Ok(());
    }
    if program.contains('/') || program == "." || program == ".." {
        return Err(
            "a program must be a bare name (looked up on the host search path) or an absolute path, not a relative path",
        );
    }
    if program.starts_with('-') {
        return Err("a program name must not start with `-`");
    }
    if !program
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
    {
        return Err("a program name may contain only ASCII letters, digits, `.`, `_`, `+` and `-`");
    }
    Ok(())
}

/// The absolute path `program` runs as: itself when absolute, otherwise the
/// first executable file of that name on the host search path. Never one
/// inside a sandbox root, where a module could replace it.
fn resolve(program: &str, env: &LoadEnv) -> Result<PathBuf, ManifestError> {
    let path = if program.starts_with('/') {
        let path = PathBuf::from(program);
        if !is_executable_file(&path) {
            return Err(ManifestError::ProgramNotExecutable {
                program: shown(program),
            });
        }
        path
    } else {
        env.search_path
            .iter()
            .filter(|dir| dir.is_absolute())
            .map(|dir| dir.join(program))
            .find(|candidate| is_executable_file(candidate))
            .ok_or_else(|| ManifestError::ProgramNotFound {
                program: shown(program),
                search_path: env.search_path_display(),
            })?
    };
    let canonical = fs::canonicalize(&path).ok();
    for root in &env.sandbox_roots {
        let canonical_root = fs::canonicalize(root).ok();
        let inside = [Some(&path), canonical.as_ref()]
            .into_iter()
            .flatten()
            .any(|p| {
                p.starts_with(root) || canonical_root.as_ref().is_some_and(|r| p.starts_with(r))
            });
        if inside {
            return Err(ManifestError::ProgramInSandbox {
                program: shown(program),
                path,
            });
        }
    }
    Ok(path)
}

fn is_executable_file(path: &Path) -> bool {
    let Ok(meta) = fs::metadata(path) else {
        return false;
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        meta.is_file() && meta.permissions().mode() & 0o111 != 0
    }
    #[cfg(not(unix))]
    {
        meta.is_file()
    }
}

/// Programs with a built-in way to run shell commands.
const SHELL_ESCAPES: &[&str] = &[
    "vi", "vim", "nvim", "ex", "ed", "emacs", "less", "more", "man", "sqlite3", "psql", "mysql",
    "gdb",
];

/// Build tools: they run code from the project they build.
const BUILD_TOOLS: &[&str] = &[
    "make", "gmake", "cmake", "ninja", "cargo", "npm", "npx", "yarn", "pnpm", "pip", "pip3",
    "gradle", "mvn", "go", "rake", "bundle",
];

fn warning(name: &str) -> Option<String> {
    let base = name.rsplit('/').next().unwrap_or(name).to_ascii_lowercase();
    let is = |list: &[&str]| list.contains(&base.as_str());
    match Family::of(name) {
        Family::Code(Dialect::Sh | Dialect::Fish) => {
            return Some(format!(
                "subprocess grant `{name}` is a shell: its granted scripts are literal, but they run \
                 with the caller's arguments in a directory the module writes"
            ));
        }
        Family::Code(_) => {
            return Some(format!(
                "subprocess grant `{name}` is an interpreter: its granted code is literal, but it runs \
                 with the caller's arguments and may import modules from the working directory, which \
                 the module writes"
            ));
        }
        Family::Runner | Family::Batch | Family::MultiCall => {
            return Some(format!(
                "subprocess grant `{name}` runs other programs: its arguments choose what runs"
            ));
        }
        _ => {}
    }
    if Family::of(name) == Family::Ffmpeg {
        return Some(format!(
            "subprocess grant `{name}` follows URLs named inside its inputs (HLS playlists, concat \
             lists): an input the module writes can reach any protocol ffmpeg supports, UDP among them"
        ));
    }
    if base == "ssh" {
        return Some(format!(
            "subprocess grant `{name}` runs commands on the hosts it connects to"
        ));
    }
    if is(SHELL_ESCAPES) {
        return Some(format!(
            "subprocess grant `{name}` can run shell commands from its input or arguments"
        ));
    }
    if is(BUILD_TOOLS) {
        return Some(format!(
            "subprocess grant `{name}` is a build tool: it runs code from the project it builds"
        ));
    }
    if base == "git" {
        return Some(format!(
            "subprocess grant `{name}` reads configuration and hooks from the repository it runs in: \
             a repository the module can write can make it run commands"
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_name_accepts_bare_names_and_clean_absolute_paths() {
        for ok in [
            "git",
            "python3.12",
            "g++",
            "x86_64-linux-gnu-gcc",
            "/usr/bin/git",
        ] {
            assert_eq!(check_program_name(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn program_name_refuses_relative_wildcard_and_dotted_paths() {
        for bad in [
            "",
            "./git",
            "bin/git",
            "..",
            "*",
            "git*",
            "/usr/bin/../bin/sh",
            "/usr/./bin/sh",
            "/usr//bin/sh",
            "/usr/bin/",
            "git status",
            "-git",
            "gi\0t",
            "gït",
        ] {
            assert!(check_program_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn shells_and_interpreters_get_a_warning_and_plain_tools_do_not() {
        assert_eq!(
            warning("sh").unwrap(),
            "subprocess grant `sh` is a shell: its granted scripts are literal, but they run \
             with the caller's arguments in a directory the module writes"
        );
        for name in [
            "/bin/bash",
            "python3",
            "python3.12",
            "perl",
            "node",
            "busybox",
            "env",
        ] {
            assert!(warning(name).is_some(), "{name}");
        }
        for name in ["cat", "tar", "ls", "pythonic", "true"] {
            assert!(warning(name).is_none(), "{name}");
        }
    }

    #[test]
    fn a_find_grant_that_deletes_files_loads_with_a_warning_naming_the_shape() {
        let text = "name = \"t\"\nversion = \"0.1.0\"\ncomponent = \"t.wasm\"\n\
                    [[subprocess.programs]]\nprogram = \"find\"\n\
                    args = [[\"{path}\", \"-name\", \"*.tmp\", \"-delete\"], [\"{path}\"]]\n";
        let manifest = crate::manifest::parse(text, &LoadEnv::host_default()).unwrap();
        assert_eq!(
            manifest.warnings(),
            [
                "subprocess grant `find` shape `{path} -name *.tmp -delete` deletes or writes files \
              (-delete): only inside the data directory, where Landlock confines it"
            ]
        );
    }

    #[test]
    fn bare_program_resolves_on_the_host_search_path_only() {
        let env = LoadEnv {
            search_path: vec![PathBuf::from("relative"), PathBuf::from("/bin")],
            sandbox_roots: vec![],
        };
        let path = resolve("true", &env).unwrap();
        assert!(path.is_absolute());
        assert!(matches!(
            resolve("modhost-no-such-program", &env),
            Err(ManifestError::ProgramNotFound { .. })
        ));
    }

    #[cfg(unix)]
    #[test]
    fn program_inside_a_sandbox_root_is_refused_even_through_a_symlinked_root() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let tool = real.join("tool");
        fs::write(&tool, "#!/bin/true\n").unwrap();
        fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let env = LoadEnv {
            search_path: vec![link.clone()],
            sandbox_roots: vec![real.clone()],
        };
        assert!(matches!(
            resolve("tool", &env),
            Err(ManifestError::ProgramInSandbox { .. })
        ));
        let outside = LoadEnv {
            search_path: vec![link],
            sandbox_roots: vec![dir.path().join("elsewhere")],
        };
        assert!(resolve("tool", &outside).is_ok());
    }

    #[cfg(unix)]
    #[test]
    fn non_executable_file_is_skipped_on_the_search_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("true"), "data").unwrap();
        let env = LoadEnv {
            search_path: vec![dir.path().to_owned(), PathBuf::from("/bin")],
            sandbox_roots: vec![],
        };
        assert!(!resolve("true", &env).unwrap().starts_with(dir.path()));
    }
}
