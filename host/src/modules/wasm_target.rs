//! The guests' compilation target: make sure the Rust toolchain that builds
//! a guest has the standard library of `wasm32-wasip2` before cargo is asked
//! to build for it.
//!
//! rustup installs the targets of `rust-toolchain.toml` only when it
//! installs the toolchain itself; a toolchain that came preinstalled lacks
//! them, and cargo then fails with "can't find crate for `std`". Whoever
//! builds guests (the tests' build script, `modhost build`, `serve --build-unconfined`)
//! calls [`ensure`] first: it adds the target through rustup where rustup is
//! there, and otherwise stops with the exact command to run.
//!
//! Standard library only: the tests' build script includes this file by path.

use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The target every guest component is built for.
pub const WASM_TARGET: &str = "wasm32-wasip2";

/// What [`ensure`] found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ensured {
    /// The target's standard library was already installed.
    Present,
    /// rustup added it to `toolchain`.
    Added { toolchain: String },
}

/// Why the target is missing and could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetError {
    pub target: String,
    /// What went wrong, in a sentence.
    pub reason: String,
    /// What the user runs to fix it.
    pub fix: String,
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the Rust target `{}` is not installed and could not be added ({}); run `{}`",
            self.target, self.reason, self.fix
        )
    }
}

impl std::error::Error for TargetError {}

/// Makes sure `target` can be built with the `rustc` that cargo uses in
/// `dir` (the toolchain its `rust-toolchain.toml` or `RUSTUP_TOOLCHAIN`
/// selects). Adds the target with rustup when it is missing.
pub fn ensure(rustc: &OsStr, dir: &Path, target: &str) -> Result<Ensured, TargetError> {
    let libdir = target_libdir(rustc, dir, target)?;
    if has_std(&libdir) {
        return Ok(Ensured::Present);
    }
    let Some(toolchain) = active_toolchain(dir) else {
        return Err(TargetError {
            target: target.to_owned(),
            reason: format!(
                "no standard library in {} and rustup is not available",
                libdir.display()
            ),
            fix: format!("rustup target add {target}"),
        });
    };
    let fix = format!("rustup target add {target} --toolchain {toolchain}");
    let added = Command::new("rustup")
        .args(["target", "add", target, "--toolchain", &toolchain])
        .current_dir(dir)
        .output()
        .map_err(|e| TargetError {
            target: target.to_owned(),
            reason: format!("cannot run rustup: {e}"),
            fix: fix.clone(),
        })?;
    if !added.status.success() {
        let stderr = String::from_utf8_lossy(&added.stderr);
        return Err(TargetError {
            target: target.to_owned(),
            reason: format!("`{fix}` failed: {}", last_line(&stderr)),
            fix,
        });
    }
    if !has_std(&target_libdir(rustc, dir, target)?) {
        return Err(TargetError {
            target: target.to_owned(),
            reason: format!(
                "rustup reported success but {} holds no standard library",
                libdir.display()
            ),
            fix,
        });
    }
    Ok(Ensured::Added { toolchain })
}

/// The one line a builder prints when it had to add the target.
pub fn added_message(target: &str, toolchain: &str) -> String {
    format!(
        "added the Rust target `{target}` to toolchain `{toolchain}` (rustup target add {target} --toolchain {toolchain})"
    )
}

/// Whether a build command (an argv list) is a cargo build for a wasm
/// target, and which: `cargo build --target wasm32-wasip2 ...`.
pub fn cargo_wasm_target(command: &[String]) -> Option<&str> {
    let program = Path::new(command.first()?).file_name()?;
    if program != "cargo" {
        return None;
    }
    let mut args = command[1..].iter();
    while let Some(arg) = args.next() {
        let target = match arg.strip_prefix("--target=") {
            Some(t) => t,
            None if arg == "--target" => args.next()?,
            None => continue,
        };
        return target.starts_with("wasm32-").then_some(target);
    }
    None
}

fn target_libdir(rustc: &OsStr, dir: &Path, target: &str) -> Result<PathBuf, TargetError> {
    let out = Command::new(rustc)
        .args(["--print", "target-libdir", "--target", target])
        .current_dir(dir)
        .output()
        .map_err(|e| TargetError {
            target: target.to_owned(),
            reason: format!("cannot run `{}`: {e}", rustc.to_string_lossy()),
            fix: "install Rust with rustup (https://rustup.rs)".to_owned(),
        })?;
    if !out.status.success() {
        return Err(TargetError {
            target: target.to_owned(),
            reason: format!(
                "`rustc --print target-libdir` failed: {}",
                last_line(&String::from_utf8_lossy(&out.stderr))
            ),
            fix: format!("rustup target add {target}"),
        });
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

/// Whether `libdir` holds a compiled standard library.
fn has_std(libdir: &Path) -> bool {
    std::fs::read_dir(libdir).is_ok_and(|entries| {
        entries.filter_map(Result::ok).any(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("libstd-") && name.ends_with(".rlib")
        })
    })
}

/// The toolchain rustup runs in `dir`: `RUSTUP_TOOLCHAIN` when a rustup
/// proxy set it, else what `rustup show active-toolchain` says. `None`
/// without rustup.
fn active_toolchain(dir: &Path) -> Option<String> {
    if let Ok(t) = std::env::var("RUSTUP_TOOLCHAIN")
        && !t.trim().is_empty()
    {
        return Some(t.trim().to_owned());
    }
    let out = Command::new("rustup")
        .args(["show", "active-toolchain"])
        .current_dir(dir)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| toolchain_name(&String::from_utf8_lossy(&out.stdout)))
        .flatten()
}

/// The name in `rustup show active-toolchain`'s output:
/// `1.95.0-x86_64-unknown-linux-gnu (overridden by '/x/rust-toolchain.toml')`.
fn toolchain_name(shown: &str) -> Option<String> {
    shown
        .lines()
        .next()?
        .split_whitespace()
        .next()
        .map(str::to_owned)
}

fn last_line(text: &str) -> &str {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn a_cargo_build_names_its_wasm_target_in_either_spelling() {
        let cmd = argv("cargo build --release --target wasm32-wasip2 --target-dir target");
        assert_eq!(cargo_wasm_target(&cmd), Some("wasm32-wasip2"));
        let cmd = argv("/usr/bin/cargo build --target=wasm32-wasip1");
        assert_eq!(cargo_wasm_target(&cmd), Some("wasm32-wasip1"));
    }

    #[test]
    fn other_build_commands_need_no_wasm_target() {
        assert_eq!(cargo_wasm_target(&argv("make all")), None);
        assert_eq!(
            cargo_wasm_target(&argv("componentize-py componentize app")),
            None
        );
        assert_eq!(
            cargo_wasm_target(&argv("cargo build --target x86_64-unknown-linux-gnu")),
            None
        );
        assert_eq!(cargo_wasm_target(&argv("cargo build --target")), None);
        assert_eq!(cargo_wasm_target(&[]), None);
    }

    #[test]
    fn the_toolchain_is_the_first_word_rustup_shows() {
        assert_eq!(
            toolchain_name(
                "1.95.0-x86_64-unknown-linux-gnu (overridden by '/w/rust-toolchain.toml')\n"
            ),
            Some("1.95.0-x86_64-unknown-linux-gnu".to_owned())
        );
        assert_eq!(toolchain_name(""), None);
    }

    #[test]
    fn a_missing_target_names_the_command_that_adds_it() {
        let e = TargetError {
            target: WASM_TARGET.into(),
            reason: "rustup is not available".into(),
            fix: "rustup target add wasm32-wasip2".into(),
        };
        assert_eq!(
            e.to_string(),
            "the Rust target `wasm32-wasip2` is not installed and could not be added (rustup is not available); run `rustup target add wasm32-wasip2`"
        );
    }

    #[test]
    fn a_directory_without_a_standard_library_is_not_a_target() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!has_std(dir.path()));
        std::fs::write(dir.path().join("libstd-0123abcd.rlib"), b"").unwrap();
        assert!(has_std(dir.path()));
        assert!(!has_std(&dir.path().join("missing")));
    }
}
