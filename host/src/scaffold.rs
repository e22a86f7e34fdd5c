//! `modhost new`: a module directory that builds and passes `check` at once,
//! in Rust, Python or JavaScript, anywhere on disk.
//!
//! A Python or JavaScript module gets copies of the WIT contract and of its
//! language's SDK beside its source: its toolchain bundles both into the
//! component, so the module needs nothing of this repository afterwards. A
//! Rust module depends on the SDK crate of a modhost checkout by path (the
//! crate is not on a registry): the checkout this binary was built from, or
//! the one `--sdk` names.

use std::path::{Path, PathBuf};

use crate::manifest::ModuleName;

/// A module's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Rust,
    Python,
    Js,
}

/// Why a module directory was not written.
#[derive(Debug, thiserror::Error)]
pub enum NewError {
    #[error("{0}")]
    Name(String),
    #[error("{0} already exists; pick another name or directory")]
    Exists(PathBuf),
    #[error("no Rust SDK at {0}: pass --sdk with the `guest-sdk` directory of a modhost checkout")]
    NoSdk(PathBuf),
    #[error("cannot write {path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// The contract, as this host speaks it: each file of `wit/`.
pub const WIT_FILES: &[(&str, &str)] = &[
    (
        "background-tasks.wit",
        include_str!("../../wit/background-tasks.wit"),
    ),
    ("context.wit", include_str!("../../wit/context.wit")),
    ("log.wit", include_str!("../../wit/log.wit")),
    ("tasks.wit", include_str!("../../wit/tasks.wit")),
    ("types.wit", include_str!("../../wit/types.wit")),
    ("ui.wit", include_str!("../../wit/ui.wit")),
    ("world.wit", include_str!("../../wit/world.wit")),
];

/// The Python SDK, each file under `modhost_sdk/`: the package, its HTTP
/// client, and the world with `wasi:http` that the client needs (WASI's
/// packages, [`WASI_WIT`], go under its `wit/deps/`).
const PYTHON_SDK: &[(&str, &str)] = &[
    (
        "__init__.py",
        include_str!("../../guest-sdk/python/modhost_sdk/__init__.py"),
    ),
    (
        "http.py",
        include_str!("../../guest-sdk/python/modhost_sdk/http.py"),
    ),
    (
        "wit/world.wit",
        include_str!("../../guest-sdk/python/modhost_sdk/wit/world.wit"),
    ),
];
/// WASI's packages as the host implements them (0.2.12), which the SDKs'
/// `module-http` worlds resolve against: one copy, the Python SDK's.
const WASI_WIT: &[(&str, &str)] = &[
    (
        "cli.wit",
        include_str!("../../guest-sdk/python/modhost_sdk/wit/deps/cli.wit"),
    ),
    (
        "clocks.wit",
        include_str!("../../guest-sdk/python/modhost_sdk/wit/deps/clocks.wit"),
    ),
    (
        "filesystem.wit",
        include_str!("../../guest-sdk/python/modhost_sdk/wit/deps/filesystem.wit"),
    ),
    (
        "http.wit",
        include_str!("../../guest-sdk/python/modhost_sdk/wit/deps/http.wit"),
    ),
    (
        "io.wit",
        include_str!("../../guest-sdk/python/modhost_sdk/wit/deps/io.wit"),
    ),
    (
        "random.wit",
        include_str!("../../guest-sdk/python/modhost_sdk/wit/deps/random.wit"),
    ),
    (
        "sockets.wit",
        include_str!("../../guest-sdk/python/modhost_sdk/wit/deps/sockets.wit"),
    ),
];

/// The JavaScript SDK: the package, its HTTP client, and the world with
/// `wasi:http` the client needs.
const JS_SDK: &str = include_str!("../../guest-sdk/js/modhost_sdk.js");
const JS_HTTP: &str = include_str!("../../guest-sdk/js/modhost_http.js");
const JS_HTTP_WORLD: &str = include_str!("../../guest-sdk/js/http-world.wit");

const MANIFEST: &str = include_str!("../templates/new/module.toml");
const README: &str = include_str!("../templates/new/README.md");

/// The Rust SDK of the checkout this binary was built from.
pub fn default_rust_sdk() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("guest-sdk"), |root| root.join("guest-sdk"))
}

/// What differs between the languages' manifests and READMEs.
struct Shape {
    language: &'static str,
    component: String,
    /// The `[build] command`, as TOML.
    build: &'static str,
    /// What the README says the files are.
    layout: &'static str,
    /// What the README says builds it.
    toolchain: &'static str,
}

/// Writes a new module called `name` into `parent/name` and returns that
/// directory. `sdk` is the Rust SDK's directory (Rust only).
pub fn new_module(
    parent: &Path,
    name: &str,
    lang: Lang,
    sdk: Option<&Path>,
) -> Result<PathBuf, NewError> {
    let name = ModuleName::new(name).map_err(|e| NewError::Name(e.to_string()))?;
    let dir = parent.join(name.as_str());
    if dir.exists() {
        return Err(NewError::Exists(dir));
    }
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    let fill = |text: &str| text.replace("{{name}}", name.as_str());
    let shape = match lang {
        Lang::Rust => {
            let sdk = sdk.map_or_else(default_rust_sdk, Path::to_path_buf);
            if !sdk.join("Cargo.toml").is_file() {
                return Err(NewError::NoSdk(sdk));
            }
            let sdk = sdk.canonicalize().unwrap_or(sdk);
            let sdk = toml_string(&sdk.display().to_string());
            let cargo =
                fill(include_str!("../templates/new/rust/Cargo.toml")).replace("\"{{sdk}}\"", &sdk);
            files.push(("Cargo.toml".into(), cargo));
            files.push((
                "rust-toolchain.toml".into(),
                include_str!("../templates/new/rust/rust-toolchain.toml").into(),
            ));
            files.push((
                "src/lib.rs".into(),
                fill(include_str!("../templates/new/rust/src/lib.rs")),
            ));
            files.push((
                ".gitignore".into(),
                include_str!("../templates/new/rust/gitignore").into(),
            ));
            Shape {
                language: "Rust",
                component: format!(
                    "target/wasm32-wasip2/release/{}.wasm",
                    name.as_str().replace(['-', '.'], "_")
                ),
                build: r#"["cargo", "build", "--release", "--target", "wasm32-wasip2", "--target-dir", "target"]"#,
                layout: "`src/lib.rs` is the module, on the Rust SDK (`module-sdk`, by path\nfrom the modhost checkout in `Cargo.toml`); `module.toml` is its\nmanifest.",
                toolchain: "It builds with the Rust toolchain `rust-toolchain.toml` names and its\n`wasm32-wasip2` target, which `modhost build` adds through rustup when\nit is missing.",
            }
        }
        Lang::Python => {
            files.push((
                "app.py".into(),
                fill(include_str!("../templates/new/python/app.py")),
            ));
            for (file, text) in PYTHON_SDK {
                files.push((Path::new("modhost_sdk").join(file), (*text).to_owned()));
            }
            for (file, text) in WASI_WIT {
                files.push((
                    Path::new("modhost_sdk/wit/deps").join(file),
                    (*text).to_owned(),
                ));
            }
            for (file, text) in WIT_FILES {
                files.push((Path::new("wit").join(file), (*text).to_owned()));
            }
            files.push((
                ".gitignore".into(),
                include_str!("../templates/new/python/gitignore").into(),
            ));
            Shape {
                language: "Python",
                component: "component.wasm".to_owned(),
                build: r#"["componentize-py", "-d", "wit", "-d", "modhost_sdk/wit", "-w", "modhost:python-sdk/module-http@0.1.0", "componentize", "app", "-o", "component.wasm"]"#,
                layout: "`app.py` is the module, on the Python SDK (`modhost_sdk/`, a copy of\nmodhost's `guest-sdk/python`, with `modhost_sdk.http` for outbound\nrequests); `wit/` is a copy of the contract, and `modhost_sdk/wit/`\nadds `wasi:http` to it; `module.toml` is its manifest.",
                toolchain: "It builds with componentize-py 0.25.1: the one on your `PATH`, or else\none `modhost build` installs from the Python package registry into\n`~/.cache/modhost` (`MODHOST_COMPONENTIZE_PY` names another).",
            }
        }
        Lang::Js => {
            files.push((
                "app.js".into(),
                fill(include_str!("../templates/new/js/app.js")),
            ));
            files.push(("modhost_sdk.js".into(), JS_SDK.into()));
            files.push(("modhost_http.js".into(), JS_HTTP.into()));
            files.push(("wit/world.wit".into(), JS_HTTP_WORLD.into()));
            for (file, text) in WASI_WIT {
                files.push((Path::new("wit/deps").join(file), (*text).to_owned()));
            }
            for (file, text) in WIT_FILES {
                files.push((Path::new("wit/deps/sdk").join(file), (*text).to_owned()));
            }
            files.push((
                ".gitignore".into(),
                include_str!("../templates/new/js/gitignore").into(),
            ));
            Shape {
                language: "JavaScript",
                component: "component.wasm".to_owned(),
                build: r#"["componentize-js", "--wit", "wit", "-n", "module-http", "-d", "http", "-d", "fetch-event", "-o", "component.wasm", "app.js"]"#,
                layout: "`app.js` is the module, on the JavaScript SDK (`modhost_sdk.js`, a copy\nof modhost's `guest-sdk/js`, and `modhost_http.js` for outbound\nrequests); `wit/world.wit` is the SDK's world, modhost's contract with\n`wasi:http` added, over a copy of the contract in `wit/deps/sdk/`;\n`module.toml` is its manifest. componentize-js reads only files under\nthis directory, so the SDK stays beside `app.js`.",
                toolchain: "It builds with componentize-js 0.23.0 (Node.js 20 or newer): the one on\nyour `PATH`, or else one `modhost build` installs from the npm registry\ninto `~/.cache/modhost` (`MODHOST_COMPONENTIZE_JS` names another).",
            }
        }
    };
    let description = format!("A {} module made by modhost new", shape.language);
    files.push((
        "module.toml".into(),
        fill(MANIFEST)
            .replace("\"{{description}}\"", &toml_string(&description))
            .replace("\"{{component}}\"", &toml_string(&shape.component))
            .replace("{{build}}", shape.build),
    ));
    files.push((
        "README.md".into(),
        fill(README)
            .replace("{{language}}", shape.language)
            .replace("{{layout}}", shape.layout)
            .replace("{{toolchain}}", shape.toolchain),
    ));
    write_all(&dir, &files)?;
    Ok(dir)
}

/// `text` as a TOML basic string.
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Writes every file under a scratch directory beside `dir`, then moves it
/// into place: a failure leaves no half-written module.
fn write_all(dir: &Path, files: &[(PathBuf, String)]) -> Result<(), NewError> {
    let fail = |path: &Path, e: std::io::Error| NewError::Write {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let parent = dir.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| fail(parent, e))?;
    let scratch = tempfile::Builder::new()
        .prefix(".modhost-new-")
        .tempdir_in(parent)
        .map_err(|e| fail(parent, e))?;
    for (file, text) in files {
        let path = scratch.path().join(file);
        if let Some(up) = path.parent() {
            std::fs::create_dir_all(up).map_err(|e| fail(up, e))?;
        }
        std::fs::write(&path, text).map_err(|e| fail(&dir.join(file), e))?;
    }
    let made = scratch.keep();
    std::fs::rename(&made, dir).map_err(|e| {
        let _ = std::fs::remove_dir_all(&made);
        match e.kind() {
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty => {
                NewError::Exists(dir.to_owned())
            }
            _ => fail(dir, e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_contract_written_into_new_modules_is_every_file_of_wit() {
        let wit = Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut on_disk: Vec<String> = std::fs::read_dir(wit)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".wit"))
            .collect();
        on_disk.sort();
        let embedded: Vec<&str> = WIT_FILES.iter().map(|(n, _)| *n).collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn the_python_sdk_written_into_new_modules_is_every_file_of_the_sdk() {
        let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk/python/modhost_sdk");
        let mut on_disk = Vec::new();
        let mut dirs = vec![sdk.clone()];
        while let Some(dir) = dirs.pop() {
            for e in std::fs::read_dir(dir).unwrap() {
                let path = e.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|x| x == "py" || x == "wit") {
                    let name = path.strip_prefix(&sdk).unwrap();
                    on_disk.push(name.to_string_lossy().into_owned());
                }
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = PYTHON_SDK.iter().map(|(n, _)| (*n).to_owned()).collect();
        embedded.extend(WASI_WIT.iter().map(|(n, _)| format!("wit/deps/{n}")));
        embedded.sort();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn a_new_javascript_module_holds_its_sdk_and_the_sdks_world_over_the_contract() {
        let parent = tempfile::tempdir().unwrap();
        let dir = new_module(parent.path(), "my-mod", Lang::Js, None).unwrap();
        for file in [
            "app.js",
            "modhost_sdk.js",
            "modhost_http.js",
            "wit/world.wit",
            "wit/deps/http.wit",
            "wit/deps/sdk/world.wit",
        ] {
            assert!(dir.join(file).is_file(), "{file}");
        }
        let world = std::fs::read_to_string(dir.join("wit/world.wit")).unwrap();
        assert!(world.contains("world module-http"), "{world}");
    }

    #[test]
    fn a_new_module_is_refused_over_an_existing_directory_or_with_a_bad_name() {
        let parent = tempfile::tempdir().unwrap();
        std::fs::create_dir(parent.path().join("taken")).unwrap();
        assert!(matches!(
            new_module(parent.path(), "taken", Lang::Python, None),
            Err(NewError::Exists(_))
        ));
        assert!(matches!(
            new_module(parent.path(), "Not A Name", Lang::Js, None),
            Err(NewError::Name(_))
        ));
        assert!(matches!(
            new_module(parent.path(), "ok", Lang::Rust, Some(parent.path())),
            Err(NewError::NoSdk(_))
        ));
        let left: Vec<_> = std::fs::read_dir(parent.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "nothing but the existing directory");
    }

    #[test]
    fn a_new_python_module_holds_its_sdk_its_contract_and_a_manifest_that_parses() {
        let parent = tempfile::tempdir().unwrap();
        let dir = new_module(parent.path(), "my-mod", Lang::Python, None).unwrap();
        for file in [
            "app.py",
            "modhost_sdk/__init__.py",
            "modhost_sdk/http.py",
            "modhost_sdk/wit/world.wit",
            "modhost_sdk/wit/deps/http.wit",
            "wit/world.wit",
            "README.md",
        ] {
            assert!(dir.join(file).is_file(), "{file}");
        }
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("module.toml")).unwrap()).unwrap();
        assert_eq!(manifest["name"].as_str(), Some("my-mod"));
        assert_eq!(
            manifest["build"]["command"][0].as_str(),
            Some("componentize-py")
        );
    }
}
