//! Compiles every guest program under `tests/programs/` to a
//! `wasm32-wasip2` component and writes `programs.rs` into `OUT_DIR`: one
//! constant per program with the path of its `.wasm`, and the macro
//! `for_each_program!` that tests use to make sure each program has a test.

use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "../host/src/modules/guest_tools.rs"]
#[expect(
    dead_code,
    reason = "the build script names its tools itself, never by a build command's program"
)]
mod guest_tools;
use guest_tools::Tool;

#[path = "../host/src/modules/wasm_target.rs"]
#[expect(
    dead_code,
    reason = "the build script uses only `ensure` of the shared file"
)]
mod wasm_target;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest_dir.parent().unwrap().to_path_buf();
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let programs_dir = manifest_dir.join("programs");

    for p in [
        "programs",
        "../guest-sdk",
        "../wit",
        "../host/src/modules/wasm_target.rs",
        "../host/src/modules/guest_tools.rs",
    ] {
        println!("cargo:rerun-if-changed={}", manifest_dir.join(p).display());
    }

    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    match wasm_target::ensure(&rustc, &root, wasm_target::WASM_TARGET) {
        Ok(wasm_target::Ensured::Present) => {}
        Ok(wasm_target::Ensured::Added { toolchain }) => println!(
            "cargo:warning={}",
            wasm_target::added_message(wasm_target::WASM_TARGET, &toolchain)
        ),
        Err(e) => panic!("cannot build the guest programs: {e}"),
    }

    let mut programs: Vec<String> = std::fs::read_dir(&programs_dir)
        .expect("reading tests/programs")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    programs.sort();

    let target_dir = out_dir.join("guests");
    let mut cmd = guest_build(&root, &target_dir);
    for p in &programs {
        cmd.args(["-p", &package_name(&programs_dir.join(p))]);
    }
    let status = cmd.status().expect("running cargo for the guest programs");
    assert!(status.success(), "building guest programs failed: {status}");

    // The example modules the browser test serves, built as their own
    // workspaces into the same target directory (sharing its dependencies).
    let mut examples = Vec::new();
    for example in EXAMPLES {
        let dir = root.join("examples").join(example);
        for p in ["src", "Cargo.toml", "module.toml"] {
            println!("cargo:rerun-if-changed={}", dir.join(p).display());
        }
        let status = guest_build(&dir, &target_dir)
            .status()
            .expect("running cargo for an example module");
        assert!(
            status.success(),
            "building examples/{example} failed: {status}"
        );
        let wasm = target_dir
            .join(wasm_target::WASM_TARGET)
            .join("release")
            .join(format!("{}.wasm", example.replace('-', "_")));
        assert!(
            wasm.is_file(),
            "examples/{example} produced no {}",
            wasm.display()
        );
        examples.push((example, wasm));
    }

    let lang_programs: Vec<(&Lang, Vec<(String, PathBuf)>)> = LANGS
        .iter()
        .map(|lang| (lang, build_lang_programs(&root, lang, &out_dir)))
        .collect();

    let mut out = String::new();
    out.push_str("/// Every guest program, for `for_each_program!`.\n");
    out.push_str("#[macro_export]\nmacro_rules! for_each_program {\n    ($m:ident) => {\n");
    for p in &programs {
        out.push_str(&format!("        $m!({});\n", ident(p)));
    }
    for (lang, programs) in &lang_programs {
        for (p, _) in programs {
            let prefix = lang.prefix.to_lowercase();
            out.push_str(&format!("        $m!({prefix}_{});\n", ident(p)));
        }
    }
    out.push_str("    };\n}\n\n");
    for p in &programs {
        let wasm = target_dir
            .join(wasm_target::WASM_TARGET)
            .join("release")
            .join(format!(
                "{}.wasm",
                package_name(&programs_dir.join(p)).replace('-', "_")
            ));
        assert!(
            wasm.is_file(),
            "guest program {p} produced no {}",
            wasm.display()
        );
        out.push_str(&format!(
            "/// The component built from `tests/programs/{p}`.\npub const {}: &str = {:?};\n",
            ident(p).to_uppercase(),
            wasm.display().to_string()
        ));
    }
    for (lang, programs) in &lang_programs {
        for (p, wasm) in programs {
            out.push_str(&format!(
                "/// The component built from `tests/{}/{p}`.\npub const {}_{}: &str = {:?};\n",
                lang.dir,
                lang.prefix,
                ident(p).to_uppercase(),
                wasm.display().to_string()
            ));
        }
    }
    for (example, wasm) in &examples {
        out.push_str(&format!(
            "/// The component built from `examples/{example}`.\npub const EXAMPLE_{}: &str = {:?};\n",
            ident(example).to_uppercase(),
            wasm.display().to_string()
        ));
    }
    out.push_str(&format!(
        "/// A component cache shared by the tests of this build.\npub const COMPONENT_CACHE_DIR: &str = {:?};\n",
        out_dir.join("component-cache").display().to_string()
    ));
    write_if_changed(&out_dir.join("programs.rs"), &out);
}

/// Guest programs in a language other than Rust: one directory each under
/// `tests/<dir>`, holding its `entry`, built beside a copy of the
/// language's SDK.
struct Lang {
    /// `programs-py`.
    dir: &'static str,
    /// The constants' prefix: `PY` makes `PY_<NAME>`.
    prefix: &'static str,
    /// `app.py`.
    entry: &'static str,
    /// The SDK under `guest-sdk/`, copied beside each program: Python's
    /// package by its name, JavaScript's files one by one (componentize-js
    /// reads only files under the program's directory).
    sdk: &'static str,
    tool: Tool,
    /// The programs built to send outbound HTTP requests: for the SDK's
    /// world with `wasi:http` (Python), or with the toolchain's HTTP
    /// support kept (JavaScript). The others build for `module` alone, so
    /// both builds stay tested.
    with_http: &'static [&'static str],
}

const LANGS: &[Lang] = &[
    Lang {
        dir: "programs-py",
        prefix: "PY",
        entry: "app.py",
        sdk: "python/modhost_sdk",
        tool: Tool::ComponentizePy,
        with_http: &["fetcher"],
    },
    Lang {
        dir: "programs-js",
        prefix: "JS",
        entry: "app.js",
        sdk: "js",
        tool: Tool::ComponentizeJs,
        with_http: &["fetcher"],
    },
];

/// Builds each `DIR/<entry>` of the language into `OUT_DIR/<dir>/DIR.wasm`
/// against the workspace's `wit/`, beside a copy of its SDK: names and
/// components. The sources are copied out of the tree first, so that the
/// build leaves nothing (a `__pycache__`) behind.
fn build_lang_programs(root: &Path, lang: &Lang, out_dir: &Path) -> Vec<(String, PathBuf)> {
    let dir = root.join("tests").join(lang.dir);
    let sdk = root.join("guest-sdk").join(lang.sdk);
    println!("cargo:rerun-if-changed={}", dir.display());
    println!("cargo:rerun-if-changed={}", sdk.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join(lang.entry).is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        return Vec::new();
    }
    let built = out_dir.join(lang.dir);
    let wit = root.join("wit");
    names
        .into_iter()
        .map(|name| {
            let source = built.join("src").join(&name);
            let _ = std::fs::remove_dir_all(&source);
            std::fs::create_dir_all(&source).expect("a directory for a guest program");
            std::fs::copy(dir.join(&name).join(lang.entry), source.join(lang.entry))
                .expect("copying a guest program");
            let sdk_copy = source.join(sdk.file_name().unwrap());
            match lang.tool {
                Tool::ComponentizePy => copy_dir(&sdk, &sdk_copy),
                Tool::ComponentizeJs => copy_files(&sdk, &source, "js"),
            }
            let wasm = built.join(format!("{name}.wasm"));
            let mut cmd = guest_tool(lang.tool);
            let with_http = lang.with_http.contains(&name.as_str());
            match lang.tool {
                Tool::ComponentizePy if with_http => cmd
                    .arg("-d")
                    .arg(&wit)
                    .arg("-d")
                    .arg(sdk_copy.join("wit"))
                    .args(["-w", "modhost:python-sdk/module-http@0.1.0"])
                    .args(["componentize", "app", "-o"])
                    .arg(&wasm),
                Tool::ComponentizePy => cmd
                    .arg("-d")
                    .arg(&wit)
                    .args(["-w", "module", "componentize", "app", "-o"])
                    .arg(&wasm),
                Tool::ComponentizeJs if with_http => cmd
                    .arg("--wit")
                    .arg(js_http_wit(root, &source))
                    .args(["-n", "module-http", "-d", "http", "-d", "fetch-event", "-o"])
                    .arg(&wasm)
                    .arg(lang.entry),
                Tool::ComponentizeJs => cmd
                    .arg("--wit")
                    .arg(&wit)
                    .args(["-n", "module", "-d", "http", "-d", "fetch-event", "-o"])
                    .arg(&wasm)
                    .arg(lang.entry),
            };
            let status = cmd
                .current_dir(&source)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .status()
                .expect("running a guest toolchain");
            assert!(
                status.success(),
                "building guest program {}/{name} failed: {status}",
                lang.dir
            );
            (name, wasm)
        })
        .collect()
}

/// The JavaScript SDK's world with `wasi:http`, laid out under `source`
/// as one directory for componentize-js: its `world.wit`, modhost's
/// contract under `deps/sdk/`, WASI's packages (the Python SDK's copy)
/// under `deps/`.
fn js_http_wit(root: &Path, source: &Path) -> PathBuf {
    let dir = source.join("wit");
    std::fs::create_dir_all(dir.join("deps")).expect("a directory for the world");
    std::fs::copy(
        root.join("guest-sdk/js/http-world.wit"),
        dir.join("world.wit"),
    )
    .expect("copying the JavaScript SDK's world");
    copy_files(&root.join("wit"), &dir.join("deps/sdk"), "wit");
    copy_files(
        &root.join("guest-sdk/python/modhost_sdk/wit/deps"),
        &dir.join("deps"),
        "wit",
    );
    dir
}

/// Copies the files of `from` ending `.EXT` into `to`.
fn copy_files(from: &Path, to: &Path, ext: &str) {
    std::fs::create_dir_all(to).expect("a directory to copy into");
    for e in std::fs::read_dir(from).expect("reading an SDK").flatten() {
        let path = e.path();
        if path.is_file() && path.extension().is_some_and(|x| x == ext) {
            std::fs::copy(&path, to.join(e.file_name())).expect("copying an SDK");
        }
    }
}

/// Copies the `.py` and `.wit` files of `from` and its directories into
/// `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a directory for the Python SDK");
    for e in std::fs::read_dir(from)
        .expect("reading the Python SDK")
        .flatten()
    {
        let path = e.path();
        if path.is_dir() && e.file_name() != "__pycache__" {
            copy_dir(&path, &to.join(e.file_name()));
        } else if path.extension().is_some_and(|x| x == "py" || x == "wit") {
            std::fs::copy(&path, to.join(e.file_name())).expect("copying the Python SDK");
        }
    }
}

/// A guest toolchain as a command: the override its variable names, or
/// the pinned one in the tool cache outside the clone, installed there
/// from the package registry when missing (never the search path's, so the
/// suite always builds with the version it was written for).
fn guest_tool(tool: Tool) -> Command {
    println!("cargo:rerun-if-env-changed={}", tool.override_var());
    let cache = guest_tools::cache_dir().expect("HOME, for the tool cache");
    tool.command(None, &cache, |dir| {
        println!(
            "cargo:warning=installing {} {} into {}",
            tool.program(),
            tool.version(),
            dir.display()
        );
    })
    .unwrap_or_else(|e| panic!("cannot build the guest programs: {e}"))
}

/// The `name` of a guest crate's `[package]`.
/// `cargo build` of wasm guests in `dir` into `target_dir`. Flags meant
/// for the host build must not leak into the guest build.
fn guest_build(dir: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(dir)
        .args([
            "build",
            "--release",
            "--target",
            wasm_target::WASM_TARGET,
            "--target-dir",
        ])
        .arg(target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Example modules whose components the tests use.
const EXAMPLES: &[&str] = &["reports", "fetch", "git-stats"];

fn package_name(dir: &Path) -> String {
    let text =
        std::fs::read_to_string(dir.join("Cargo.toml")).expect("reading a guest's Cargo.toml");
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no package name in {}", dir.display()))
}

fn ident(name: &str) -> String {
    name.replace('-', "_")
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).unwrap();
    }
}
