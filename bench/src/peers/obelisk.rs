//! obelisk, a durable-execution engine on wasmtime and SQLite: the closest
//! peer in the field. Installed with `cargo install obelisk@0.38.3
//! --locked` (later releases need a newer rustc than the pinned one; the
//! build needs `protoc`), run as its own server on its default SQLite
//! store, and given no-op activities over its REST API.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::{install_once, run};
use crate::stats::count;

pub const VERSION: &str = "0.38.3";

/// The no-op activity's function, as obelisk names it.
const FFQN: &str = "bench:noop/noop.noop";

/// Submissions in flight at once.
const SUBMITTERS: usize = 32;

#[derive(Debug, Clone)]
pub struct Obelisk {
    bin: PathBuf,
    component: PathBuf,
}

/// `protoc`, which obelisk's build needs: installed with apt when missing
/// and this runs as root.
fn ensure_protoc() -> Result<()> {
    if modhost_tests::on_path("protoc").is_some() {
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("obelisk's build needs protoc: `sudo apt-get install protobuf-compiler`");
    }
    eprintln!("installing protobuf-compiler for obelisk's build");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-qq", "protobuf-compiler"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    Ok(())
}

impl Obelisk {
    /// obelisk in the cache (installed once, about 17 minutes on two
    /// cores), and the no-op activity built for it.
    pub fn install(cache: &Path) -> Result<Self> {
        let dir = cache.join(format!("obelisk-{VERSION}"));
        install_once(&dir, &format!("obelisk {VERSION}"), |scratch| {
            ensure_protoc()?;
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            run(Command::new(cargo)
                .args(["install", "--locked", "--quiet"])
                .arg(format!("obelisk@{VERSION}"))
                .arg("--root")
                .arg(scratch)
                .env_remove("CARGO_TARGET_DIR"))?;
            Ok(())
        })?;
        let bin = dir.join("bin").join("obelisk");
        ensure!(bin.is_file(), "no obelisk binary in {}", dir.display());

        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("peers")
            .join("obelisk-noop");
        let target = cache.join("obelisk-noop-target");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        run(Command::new(cargo)
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
            .arg("--manifest-path")
            .arg(source.join("Cargo.toml"))
            .arg("--target-dir")
            .arg(&target)
            .current_dir(&source))?;
        let component = target
            .join("wasm32-wasip2")
            .join("release")
            .join("obelisk_noop.wasm");
        ensure!(component.is_file(), "the no-op activity was not built");
        Ok(Obelisk { bin, component })
    }

    /// No-op activities submitted over the REST API by `SUBMITTERS` clients
    /// at once, until none is unfinished: tasks per second. The server runs
    /// on `cores` cores (`taskset`), or on all.
    pub fn durable_tasks(&self, n: usize, cores: Option<usize>) -> Result<f64> {
        let dir = tempfile::tempdir()?;
        let api = free_port()?;
        let server_toml = dir.path().join("server.toml");
        std::fs::write(
            &server_toml,
            format!(
                "[api]\nlistening_addr = \"127.0.0.1:{api}\"\n\n\
                 [database.sqlite]\ndirectory = \"{}\"\n\n\
                 [webui]\nenabled = false\n\n[external]\nenabled = false\n\n\
                 [log.console]\nenabled = false\n",
                dir.path().join("db").display()
            ),
        )?;
        let deployment = dir.path().join("deployment.toml");
        std::fs::write(
            &deployment,
            format!(
                "[[activity_wasm]]\nname = \"bench_noop\"\nlocation = \"{}\"\nmax_retries = 0\n",
                self.component.display()
            ),
        )?;
        let mut cmd = match cores {
            Some(c) => {
                let mut cmd = Command::new("taskset");
                cmd.arg("-c")
                    .arg(format!("0-{}", c.saturating_sub(1)))
                    .arg(&self.bin);
                cmd
            }
            None => Command::new(&self.bin),
        };
        cmd.args(["server", "run", "--server-config"])
            .arg(&server_toml)
            .arg("--deployment")
            .arg(&deployment)
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let server = Server(cmd.spawn().context("starting obelisk")?);
        let base = format!("http://127.0.0.1:{api}/v1");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let rate = rt.block_on(submit_and_wait(&base, n));
        drop(server);
        rate
    }
}

/// Kills the server when dropped.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

async fn submit_and_wait(base: &str, n: usize) -> Result<f64> {
    let client = reqwest::Client::new();
    // Ready once the deployment's functions are listed (it compiles the
    // component first).
    let ready = Instant::now() + Duration::from_secs(300);
    loop {
        ensure!(
            Instant::now() < ready,
            "obelisk did not start within 5 minutes"
        );
        if let Ok(r) = client.get(format!("{base}/functions")).send().await
            && r.status().is_success()
            && r.text().await.is_ok_and(|t| t.contains("noop"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = Arc::new(client);
    let start = Instant::now();
    let mut handles = Vec::new();
    for s in 0..SUBMITTERS {
        let (client, url) = (client.clone(), format!("{base}/executions"));
        let mine = n / SUBMITTERS + usize::from(s < n % SUBMITTERS);
        handles.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(mine);
            for _ in 0..mine {
                let r = client
                    .post(&url)
                    .json(&serde_json::json!({ "ffqn": FFQN, "params": [] }))
                    .send()
                    .await?;
                let status = r.status();
                let body = r.text().await?;
                ensure!(
                    status.is_success(),
                    "obelisk refused a submit ({status}): {body}"
                );
                ids.push(body.trim().to_owned());
            }
            anyhow::Ok(ids)
        }));
    }
    let mut ids = Vec::with_capacity(n);
    for h in handles {
        ids.extend(h.await??);
    }
    // Until no execution is unfinished.
    loop {
        let r = client
            .get(format!("{base}/executions?hide_finished=true&length=1"))
            .header("accept", "application/json")
            .send()
            .await?;
        let listed: serde_json::Value = r.json().await?;
        if listed.as_array().is_some_and(Vec::is_empty) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = start.elapsed();
    // Off the clock: every one finished well.
    for id in &ids {
        let status = client
            .get(format!("{base}/executions/{id}/status"))
            .send()
            .await?
            .text()
            .await?;
        ensure!(
            status.trim() == "Finished: OK",
            "obelisk execution {id}: {status}"
        );
    }
    Ok(count(n) / elapsed.as_secs_f64())
}
