//! Manifests end to end: every file under `manifests/invalid/` is refused
//! with exactly the text of its `.err` file, and every file under
//! `manifests/valid/` loads.
//!
//! `.err` files may say `{root}` for the temporary directory the test puts
//! on the search path and among the sandbox roots; it holds one executable,
//! `modhost-fixture-tool`, so "resolves inside a sandbox root" is testable
//! on any machine. Other fixtures only use programs every Debian system has.
#![cfg(unix)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use modhost::manifest::{self, LoadEnv, ManifestError, Policy, ReadScope, Scheme};

const FAKE_PROGRAM: &str = "modhost-fixture-tool";

/// A search path of `/usr/bin`, `/bin` and a temporary directory that is
/// also the only sandbox root.
fn test_env() -> Result<(tempfile::TempDir, LoadEnv)> {
    let root = tempfile::tempdir()?;
    let tool = root.path().join(FAKE_PROGRAM);
    fs::write(&tool, "#!/bin/sh\nexit 0\n")?;
    fs::set_permissions(&tool, fs::Permissions::from_mode(0o755))?;
    let env = LoadEnv {
        search_path: vec![
            PathBuf::from("/usr/bin"),
            PathBuf::from("/bin"),
            root.path().to_owned(),
        ],
        sandbox_roots: vec![root.path().to_owned()],
    };
    Ok((root, env))
}

fn fixtures(kind: &str) -> Result<Vec<PathBuf>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(kind);
    let mut files = Vec::new();
    for entry in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn load(path: &Path, env: &LoadEnv) -> Result<Result<manifest::Manifest, ManifestError>> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(manifest::parse(&text, env))
}

fn fixture(kind: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("manifests")
        .join(kind)
        .join(name)
}

#[test]
fn every_invalid_manifest_fails_with_its_recorded_error() -> Result<()> {
    let (root, env) = test_env()?;
    let root = root.path().display().to_string();
    let mut mismatches = Vec::new();
    for path in fixtures("invalid")? {
        let err_path = path.with_extension("err");
        let expected = fs::read_to_string(&err_path)
            .with_context(|| format!("{} has no .err file", path.display()))?
            .trim()
            .replace("{root}", &root);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        match load(&path, &env)? {
            Ok(_) => mismatches.push(format!("{name}: loaded, expected `{expected}`")),
            Err(err) if err.to_string() == expected => {}
            Err(err) => {
                mismatches.push(format!("{name}:\n  expected {expected}\n  got      {err}"))
            }
        }
    }
    ensure!(mismatches.is_empty(), "\n{}", mismatches.join("\n"));
    Ok(())
}

#[test]
fn invalid_fixtures_cover_at_least_twenty_cases_each_with_one_line_error() -> Result<()> {
    let files = fixtures("invalid")?;
    ensure!(files.len() >= 20, "only {} invalid fixtures", files.len());
    for path in files {
        let expected = fs::read_to_string(path.with_extension("err"))?;
        ensure!(
            expected.trim().lines().count() == 1 && expected.starts_with("module.toml"),
            "{}: an error is one line naming module.toml",
            path.display()
        );
    }
    Ok(())
}

#[test]
fn every_valid_manifest_loads() -> Result<()> {
    let (_root, env) = test_env()?;
    let files = fixtures("valid")?;
    ensure!(!files.is_empty(), "no valid fixtures");
    for path in files {
        if let Err(err) = load(&path, &env)? {
            anyhow::bail!("{}: {err}", path.display());
        }
    }
    Ok(())
}

#[test]
fn minimal_manifest_is_denied_everything() -> Result<()> {
    let (_root, env) = test_env()?;
    let m = load(&fixture("valid", "minimal.toml"), &env)??;
    assert_eq!(m.name.as_str(), "minimal");
    assert_eq!(m.policy, Policy::default());
    assert!(m.policy.subprocess.is_empty());
    assert!(
        !m.policy
            .network
            .allows(Scheme::Https, "api.example.com", 443)
    );
    assert!(!m.policy.filesystem.data);
    assert!(m.warnings().is_empty());
    Ok(())
}

#[test]
fn everything_manifest_grants_what_it_says() -> Result<()> {
    let (_root, env) = test_env()?;
    let m = load(&fixture("valid", "everything.toml"), &env)??;
    assert_eq!(m.version, "1.2.3-beta.1");
    assert_eq!(
        m.component,
        Path::new("target/wasm32-wasip2/release/git_stats.wasm")
    );
    let build = m.build.as_ref().context("build section")?;
    assert_eq!(build.command[0], "cargo");
    assert_eq!(build.workdir, Path::new("."));

    let p = &m.policy;
    assert!(p.filesystem.data);
    assert_eq!(p.filesystem.max_bytes, Some(512 * 1024 * 1024));
    assert!(p.network.allows(Scheme::Https, "api.example.com", 443));
    assert!(p.network.allows(Scheme::Https, "cdn.example.org", 443));
    assert!(!p.network.allows(Scheme::Https, "example.org", 443));
    assert!(!p.network.allows(Scheme::Https, "api.example.com", 80));
    assert!(p.network.allows(Scheme::Https, "10.0.0.1", 5432));
    assert!(p.network.allows(Scheme::Http, "api.example.net", 80));
    assert!(!p.network.allows(Scheme::Https, "api.example.net", 80));
    assert_eq!(p.network.max_response_bytes, 128 << 20);
    assert_eq!(p.network.timeout, Duration::from_secs(60));
    assert_eq!(p.network.max_concurrent, 4);
    assert_eq!(
        (p.tasks.max_active_per_user, p.tasks.max_active_per_module),
        (10, 100)
    );
    assert_eq!(p.tasks.max_concurrent, 8);
    assert_eq!(p.tasks.read, ReadScope::Organization);
    assert_eq!(p.limits.memory_bytes, 128 * 1024 * 1024);
    assert_eq!(p.limits.call_deadline, Duration::from_secs(5));
    assert_eq!(p.limits.task_deadline, Duration::from_secs(7200));
    assert_eq!(p.limits.blocking_deadline, Duration::from_secs(30));

    let s = &p.subprocess;
    assert_eq!(s.max_concurrent, 4);
    assert_eq!(s.timeout, Duration::from_secs(20));
    assert_eq!(s.max_output_bytes, 2 * 1024 * 1024);
    assert!(s.network);
    let env_names: Vec<&str> = s.env.iter().map(|e| e.as_str()).collect();
    assert_eq!(env_names, ["LANG", "TZ"]);
    assert_eq!(s.programs.len(), 5);
    for program in &s.programs {
        assert!(program.path.is_absolute(), "{}", program.path.display());
    }
    assert!(
        s.program("/usr/bin/tar").is_none(),
        "lookup is by name as granted"
    );
    assert!(
        m.warnings()
            .iter()
            .any(|w| w.contains("`env` runs other programs")),
        "{:?}",
        m.warnings()
    );
    Ok(())
}

#[test]
fn granted_program_runs_only_with_its_argument_shapes() -> Result<()> {
    let (_root, env) = test_env()?;
    let m = load(&fixture("valid", "everything.toml"), &env)??;
    let tar = m.policy.subprocess.program("tar").context("tar granted")?;
    assert!(tar.matches(&["-t", "-f", "notes.tar"]).is_ok());
    assert!(
        tar.matches(&["-c", "-z", "-f", "a.tgz", "--checkpoint=100", "notes"])
            .is_ok()
    );
    assert!(tar.matches(&["-t", "-f", "/etc/shadow"]).is_err());
    assert!(tar.matches(&["-t", "-f", "../../x.tar"]).is_err());
    assert!(tar.matches(&["-t", "-f", "--to-command=sh"]).is_err());
    let denied = tar.matches(&["-x", "-f", "a.tar"]).unwrap_err();
    assert_eq!(
        denied.to_string(),
        "`tar` may not run with these arguments: no granted shape matches \
         (granted: `-c -z -f {path} --checkpoint=100 {path}`, `-t -f {path}`)"
    );
    let ls = m.policy.subprocess.program("ls").context("ls granted")?;
    assert!(ls.matches(&["-l", "notes"]).is_ok());
    assert!(ls.matches(&["-l", "-a", "notes"]).is_ok());
    assert!(ls.matches(&["-l", "-a", "-a", "notes"]).is_err());
    let t = m
        .policy
        .subprocess
        .program("true")
        .context("true granted")?;
    assert!(t.matches::<&str>(&[]).is_ok());
    assert!(t.matches(&["x"]).is_err());
    Ok(())
}

#[test]
fn shell_grant_loads_with_a_warning() -> Result<()> {
    let (_root, env) = test_env()?;
    let m = load(&fixture("valid", "shell-granted.toml"), &env)??;
    assert_eq!(
        m.warnings(),
        [
            "subprocess grant `sh` is a shell: its granted scripts are literal, but they run \
             with the caller's arguments in a directory the module writes"
        ]
    );
    Ok(())
}

#[test]
fn load_dir_reads_module_toml_and_names_a_missing_one() -> Result<()> {
    let (root, env) = test_env()?;
    let dir = root.path().join("module");
    fs::create_dir(&dir)?;
    let err = manifest::load_dir(&dir, &env).unwrap_err();
    assert!(matches!(err, ManifestError::Io { .. }));
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "cannot read {}: ",
            dir.join("module.toml").display()
        )),
        "{text}"
    );

    fs::copy(fixture("valid", "minimal.toml"), dir.join("module.toml"))?;
    assert_eq!(manifest::load_dir(&dir, &env)?.name.as_str(), "minimal");

    fs::write(dir.join("module.toml"), b"name = \"\xff\"\n")?;
    assert!(matches!(
        manifest::load_dir(&dir, &env),
        Err(ManifestError::NotUtf8 { .. })
    ));
    Ok(())
}

#[test]
fn the_authors_guide_gives_every_numeric_key_its_default_and_range() {
    use modhost::manifest::*;
    use modhost::subprocess::grant::{
        MAX_CONCURRENT_SUBPROCESSES, MAX_OUTPUT_BYTES, SUBPROCESS_TIMEOUT_MS,
    };
    let guide = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/authoring.md"),
    )
    .expect("docs/authoring.md");
    for s in [
        MAX_ACTIVE_PER_USER,
        MAX_ACTIVE_PER_MODULE,
        MAX_CONCURRENT_TASKS,
        MEMORY_MIB,
        CALL_DEADLINE_MS,
        TASK_DEADLINE_MS,
        BLOCKING_DEADLINE_MS,
        DATA_MAX_MIB,
        MAX_CONCURRENT_SUBPROCESSES,
        SUBPROCESS_TIMEOUT_MS,
        MAX_OUTPUT_BYTES,
    ] {
        let row = format!("| `{}` | {} | {}..={} |", s.key, s.default, s.min, s.max);
        assert!(
            guide.contains(&row),
            "docs/authoring.md lacks the row {row}"
        );
    }
}
