//! Compiles every guest program under `tests/programs/` to a
//! `wasm32-wasip2` component and writes `programs.rs` into `OUT_DIR`: one
//! constant per program with the path of its `.wasm`, and the macro
//! `for_each_program!` that tests use to make sure each program has a test.

use std::path::{Path, PathBuf};
use std::process::Command;

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

    let py_programs = build_python_programs(&root, &manifest_dir.join("programs-py"), &out_dir);

    let mut out = String::new();
    out.push_str("/// Every guest program, for `for_each_program!`.\n");
    out.push_str("#[macro_export]\nmacro_rules! for_each_program {\n    ($m:ident) => {\n");
    for p in &programs {
        out.push_str(&format!("        $m!({});\n", ident(p)));
    }
    for (p, _) in &py_programs {
        out.push_str(&format!("        $m!(py_{});\n", ident(p)));
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
    for (p, wasm) in &py_programs {
        out.push_str(&format!(
            "/// The component built from `tests/programs-py/{p}` (Python).\npub const PY_{}: &str = {:?};\n",
            ident(p).to_uppercase(),
            wasm.display().to_string()
        ));
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

/// The componentize-py the Python programs are built with.
const COMPONENTIZE_PY: &str = "0.25.1";

/// Builds each `DIR/app.py` under `dir` into `OUT_DIR/py/DIR.wasm` with
/// componentize-py against the workspace's `wit/`, beside a copy of the
/// Python SDK (`guest-sdk/python/modhost_sdk`): names and components. The
/// sources are copied out of the tree first, so that the build leaves no
/// `__pycache__` behind.
fn build_python_programs(root: &Path, dir: &Path, out_dir: &Path) -> Vec<(String, PathBuf)> {
    println!("cargo:rerun-if-changed={}", dir.display());
    println!(
        "cargo:rerun-if-changed={}",
        root.join("guest-sdk").join("python").display()
    );
    println!("cargo:rerun-if-env-changed=MODHOST_COMPONENTIZE_PY");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("reading tests/programs-py")
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("app.py").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    if names.is_empty() {
        return Vec::new();
    }
    let built = out_dir.join("py");
    let sdk = root.join("guest-sdk").join("python").join("modhost_sdk");
    names
        .into_iter()
        .map(|name| {
            let source = built.join("src").join(&name);
            let _ = std::fs::remove_dir_all(&source);
            std::fs::create_dir_all(&source).expect("a directory for a Python program");
            std::fs::copy(dir.join(&name).join("app.py"), source.join("app.py"))
                .expect("copying a Python program");
            copy_dir(&sdk, &source.join("modhost_sdk"));
            let wasm = built.join(format!("{name}.wasm"));
            let status = componentize_py()
                .current_dir(&source)
                .arg("-d")
                .arg(root.join("wit"))
                .args(["-w", "module", "componentize", "app", "-o"])
                .arg(&wasm)
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .status()
                .expect("running componentize-py");
            assert!(
                status.success(),
                "building Python program {name} failed: {status}"
            );
            (name, wasm)
        })
        .collect()
}

/// Copies the `.py` files of `from` into `to`.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("a directory for the Python SDK");
    for e in std::fs::read_dir(from)
        .expect("reading the Python SDK")
        .flatten()
    {
        let path = e.path();
        if path.extension().is_some_and(|x| x == "py") {
            std::fs::copy(&path, to.join(e.file_name())).expect("copying the Python SDK");
        }
    }
}

/// componentize-py, as a command to which its arguments are appended:
/// `MODHOST_COMPONENTIZE_PY`, or the one in the cache outside the clone,
/// installed there from the Python package registry when missing. It is
/// installed into a scratch directory first and moved in place, so two
/// builds at once never see half an install; run through the environment's
/// Python (which finds its environment wherever it is moved), not its
/// script (whose first line names the scratch directory).
fn componentize_py() -> Command {
    if let Some(tool) = std::env::var_os("MODHOST_COMPONENTIZE_PY") {
        return Command::new(tool);
    }
    let home = std::env::var_os("HOME").expect("HOME, for the tool cache");
    let cache = PathBuf::from(home).join(".cache").join("modhost");
    let venv = cache.join(format!("componentize-py-{COMPONENTIZE_PY}"));
    let python = venv.join("bin").join("python3");
    if !venv.join("installed").is_file() {
        println!(
            "cargo:warning=installing componentize-py {COMPONENTIZE_PY} into {}",
            venv.display()
        );
        install_componentize_py(&cache, &venv);
    }
    let mut cmd = Command::new(python);
    cmd.args([
        "-c",
        "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())",
    ]);
    cmd
}

fn install_componentize_py(cache: &Path, venv: &Path) {
    std::fs::create_dir_all(cache).expect("the tool cache");
    let scratch = cache.join(format!(
        "componentize-py-{COMPONENTIZE_PY}.partial-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    if venv.is_dir() && !venv.join("installed").is_file() {
        // What an interrupted install of an older layout left.
        let _ = std::fs::remove_dir_all(venv);
    }
    let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
    let run = |cmd: &mut Command, what: &str| {
        let needs = "Python 3 with its venv module is needed: apt-get install python3-venv";
        let status = cmd
            .status()
            .unwrap_or_else(|e| panic!("{what}: {e} ({needs})"));
        assert!(status.success(), "{what} failed: {status} ({needs})");
    };
    run(
        Command::new(&python).arg("-m").arg("venv").arg(&scratch),
        "making a virtual environment for componentize-py",
    );
    run(
        Command::new(scratch.join("bin").join("python3"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(format!("componentize-py=={COMPONENTIZE_PY}")),
        "installing componentize-py",
    );
    std::fs::write(scratch.join("installed"), COMPONENTIZE_PY).expect("marking the install");
    // Another build may have finished first: its install stands.
    if std::fs::rename(&scratch, venv).is_err() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
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
const EXAMPLES: &[&str] = &["reports"];

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
