//! The component toolchains of Python and JavaScript modules: componentize-py
//! and componentize-js, at the versions modhost is tested with.
//!
//! A `[build]` command that names one of them (`componentize-py ...`,
//! `componentize-js ...`) runs the one on the search path when there is
//! one, and otherwise the pinned one in modhost's tool cache
//! (`~/.cache/modhost/<tool>-<version>`), installed there from the package
//! registry the first time it is needed: Python's for componentize-py (a
//! virtual environment of `python3`), npm's for componentize-js. An
//! environment variable names another install. The tests' build script
//! builds its Python and JavaScript guest programs with the same tools, the
//! same way.
//!
//! An install goes into a scratch directory first and is moved in place
//! when complete, so two builds at once never use half an install.
//!
//! Standard library only: the tests' build script includes this file by path.

use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A toolchain that turns a module's source into a component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    /// componentize-py, for Python modules.
    ComponentizePy,
    /// componentize-js, for JavaScript modules.
    ComponentizeJs,
}

/// Why a tool could not be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolError {
    pub tool: &'static str,
    /// What went wrong, in a sentence.
    pub reason: String,
    /// What the user does to fix it.
    pub fix: String,
}

impl fmt::Display for ToolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "cannot install {} ({}); {}",
            self.tool, self.reason, self.fix
        )
    }
}

impl std::error::Error for ToolError {}

impl Tool {
    /// Every tool, for lookups by name.
    pub const ALL: [Tool; 2] = [Tool::ComponentizePy, Tool::ComponentizeJs];

    /// The tool a build command's program names, if it is one of these.
    pub fn named(program: &str) -> Option<Tool> {
        Tool::ALL.into_iter().find(|t| t.program() == program)
    }

    /// The program's name, as a `[build]` command spells it.
    pub fn program(self) -> &'static str {
        match self {
            Tool::ComponentizePy => "componentize-py",
            Tool::ComponentizeJs => "componentize-js",
        }
    }

    /// The version installed into the cache.
    pub fn version(self) -> &'static str {
        match self {
            Tool::ComponentizePy => "0.25.1",
            Tool::ComponentizeJs => "0.23.0",
        }
    }

    /// The variable that names another install of the tool (a program).
    pub fn override_var(self) -> &'static str {
        match self {
            Tool::ComponentizePy => "MODHOST_COMPONENTIZE_PY",
            Tool::ComponentizeJs => "MODHOST_COMPONENTIZE_JS",
        }
    }

    /// Where the pinned install lives in the tool cache.
    pub fn install_dir(self, cache: &Path) -> PathBuf {
        cache.join(format!("{}-{}", self.program(), self.version()))
    }

    /// Whether the pinned install is complete in the cache.
    pub fn is_installed(self, cache: &Path) -> bool {
        self.install_dir(cache).join("installed").is_file()
    }

    /// The tool as a command to which its arguments are appended: the
    /// override, else the program on `path` (the search path a build sees;
    /// none to skip it), else the pinned one in `cache`, installed when
    /// missing. `installing`
    /// is told before a first install starts (it takes a minute).
    pub fn command(
        self,
        path: Option<&OsString>,
        cache: &Path,
        installing: impl FnOnce(&Path),
    ) -> Result<Command, ToolError> {
        if let Some(tool) = std::env::var_os(self.override_var()) {
            return Ok(Command::new(tool));
        }
        if let Some(found) = path.and_then(|p| on_path(p, self.program())) {
            return Ok(Command::new(found));
        }
        self.pinned(cache, installing)
    }

    /// The pinned tool in `cache`, installed when missing.
    fn pinned(self, cache: &Path, installing: impl FnOnce(&Path)) -> Result<Command, ToolError> {
        let dir = self.install_dir(cache);
        if !self.is_installed(cache) {
            installing(&dir);
            self.install(cache, &dir)?;
        }
        Ok(match self {
            // Through the environment's Python, which finds its environment
            // wherever it was moved, not its script, whose first line names
            // the scratch directory it was installed in.
            Tool::ComponentizePy => {
                let mut cmd = Command::new(dir.join("bin").join("python3"));
                cmd.args([
                    "-c",
                    "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
                ]);
                cmd
            }
            Tool::ComponentizeJs => {
                let mut cmd = Command::new("node");
                cmd.arg(
                    dir.join("node_modules")
                        .join("@bytecodealliance")
                        .join("componentize-js")
                        .join("src")
                        .join("cli.js"),
                );
                cmd
            }
        })
    }

    fn install(self, cache: &Path, dir: &Path) -> Result<(), ToolError> {
        let fail = |reason: String, fix: &str| ToolError {
            tool: self.program(),
            reason,
            fix: fix.to_owned(),
        };
        let needs = match self {
            Tool::ComponentizePy => {
                "it needs python3 with its venv module (apt-get install python3-venv) and the Python package registry"
            }
            Tool::ComponentizeJs => {
                "it needs Node.js 20 or newer with npm (apt-get install nodejs npm) and the npm registry"
            }
        };
        let fix = format!(
            "{needs}, or set {} to an install of {} {}",
            self.override_var(),
            self.program(),
            self.version()
        );
        std::fs::create_dir_all(cache)
            .map_err(|e| fail(format!("cannot create {}: {e}", cache.display()), &fix))?;
        let scratch = cache.join(format!(
            "{}-{}.partial-{}",
            self.program(),
            self.version(),
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&scratch);
        if dir.is_dir() && !dir.join("installed").is_file() {
            // What an interrupted install of an older layout left.
            let _ = std::fs::remove_dir_all(dir);
        }
        let run = |cmd: &mut Command, what: &str| -> Result<(), ToolError> {
            let out = cmd
                .output()
                .map_err(|e| fail(format!("{what}: {e}"), &fix))?;
            if out.status.success() {
                return Ok(());
            }
            let stderr = String::from_utf8_lossy(&out.stderr);
            let lines: Vec<&str> = stderr.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join("\n");
            Err(fail(
                format!("{what} failed ({}): {tail}", out.status),
                &fix,
            ))
        };
        let installed = match self {
            Tool::ComponentizePy => {
                let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
                run(
                    Command::new(python).arg("-m").arg("venv").arg(&scratch),
                    "making a virtual environment",
                )
                .and_then(|()| {
                    run(
                        Command::new(scratch.join("bin").join("python3"))
                            .args([
                                "-m",
                                "pip",
                                "install",
                                "--quiet",
                                "--disable-pip-version-check",
                            ])
                            .arg(format!("componentize-py=={}", self.version())),
                        "pip install",
                    )
                })
            }
            Tool::ComponentizeJs => std::fs::create_dir_all(&scratch)
                .map_err(|e| fail(format!("cannot create {}: {e}", scratch.display()), &fix))
                .and_then(|()| {
                    run(
                        Command::new("npm")
                            .args([
                                "install",
                                "--no-audit",
                                "--no-fund",
                                "--loglevel=error",
                                "--prefix",
                            ])
                            .arg(&scratch)
                            .arg(format!(
                                "@bytecodealliance/componentize-js@{}",
                                self.version()
                            )),
                        "npm install",
                    )
                }),
        };
        if let Err(e) = installed {
            let _ = std::fs::remove_dir_all(&scratch);
            return Err(e);
        }
        std::fs::write(scratch.join("installed"), self.version())
            .map_err(|e| fail(format!("cannot mark the install: {e}"), &fix))?;
        // Another build may have finished first: its install stands.
        if std::fs::rename(&scratch, dir).is_err() {
            let _ = std::fs::remove_dir_all(&scratch);
        }
        Ok(())
    }
}

/// modhost's tool cache: `$HOME/.cache/modhost`.
pub fn cache_dir() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("modhost"))
}

/// The first executable file called `program` in the directories of `path`.
fn on_path(path: &OsString, program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
