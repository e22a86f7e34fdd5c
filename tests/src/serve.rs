//! `modhost serve` as a user runs it: a real process, signalled as a crash,
//! a pause or an OOM kill would.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use modhost::client::Client;

/// How long a host may take to start, and its processes to go.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// How often to look again.
pub const POLL: Duration = Duration::from_millis(100);

/// A directory for `serve`: one module directory per `(name, component,
/// manifest lines)`.
pub fn modules(list: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    for (name, wasm, extra) in list {
        let dir = root.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::copy(wasm, dir.join("component.wasm")).unwrap();
        let manifest = format!(
            "name = \"{name}\"\nversion = \"0.1.0\"\ncomponent = \"component.wasm\"\n{extra}\n"
        );
        std::fs::write(dir.join("module.toml"), manifest).unwrap();
    }
    root
}

/// One `modhost serve` process, in a process group of its own so that it
/// and any child it starts are signalled together. Dropping it kills the
/// group (and, during a panic, prints what the host logged).
pub struct Serve {
    pub name: String,
    child: Child,
    /// `http://127.0.0.1:PORT`, as the host printed it.
    pub url: String,
    /// The development token the host printed, if it made one.
    pub token: Option<String>,
    /// What the host wrote to stderr so far, line by line.
    log: Arc<Mutex<Vec<String>>>,
    reaped: bool,
    /// The state directory, when the host has one of its own.
    _state: Option<tempfile::TempDir>,
}

impl Serve {
    /// Starts `modhost serve MODULES` on the PostgreSQL database `store` as
    /// host `name` (with `--task-lease lease` when given), on a state
    /// directory of its own, and waits until it listens.
    pub async fn start(name: &str, modules: &Path, store: &str, lease: Option<&str>) -> Serve {
        let state = tempfile::tempdir().unwrap();
        let mut args = vec!["--store", store, "--host-id", name];
        args.extend(lease.map(|l| ["--task-lease", l]).into_iter().flatten());
        let mut serve = Serve::start_on(name, modules, state.path(), &args).await;
        serve._state = Some(state);
        serve
    }

    /// Starts `modhost serve MODULES --state-dir STATE` with `args` more
    /// (on the embedded store unless they name one), and waits until it
    /// listens.
    pub async fn start_on(name: &str, modules: &Path, state: &Path, args: &[&str]) -> Serve {
        let (mut serve, started) = Serve::launch_on(name, modules, state, args);
        let Ok(Ok((url, token))) = tokio::time::timeout(PATIENCE, started).await else {
            panic!("host {name} did not start serving");
        };
        serve.url = url;
        serve.token = token;
        serve
    }

    /// [`Serve::start_on`] without waiting: the host, and what says its URL
    /// and token once it listens.
    pub fn launch_on(
        name: &str,
        modules: &Path,
        state: &Path,
        args: &[&str],
    ) -> (
        Serve,
        tokio::sync::oneshot::Receiver<(String, Option<String>)>,
    ) {
        let mut command = Command::new(crate::modhost_binary());
        command
            .arg("serve")
            .arg(modules)
            .args(args)
            .args(["--listen", "127.0.0.1:0", "--state-dir"])
            .arg(state)
            .env("RUST_LOG", "info")
            .env_remove("MODHOST_STORE")
            .env_remove("MODHOST_HOST_ID")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // No host outlives its test, even a killed one.
        crate::postgres::dies_with_parent_thread(&mut command);
        let mut child = command.spawn().expect("starting modhost serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines, stderr) = (log.clone(), child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let (ready, started) = tokio::sync::oneshot::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || read_stdout(stdout, ready));
        let serve = Serve {
            name: name.to_owned(),
            child,
            url: String::new(),
            token: None,
            log,
            reaped: false,
            _state: None,
        };
        (serve, started)
    }

    /// A client of this host's API as the `demo` user, with the development
    /// token one of `hosts` printed: tokens live in the shared database, and
    /// only the host that made the first one prints it.
    pub fn client(&self, hosts: &[&Serve]) -> Client {
        let token = hosts
            .iter()
            .find_map(|h| h.token.as_deref())
            .expect("one of the hosts prints a development token");
        Client::new(&self.url, token).unwrap()
    }

    pub fn pgid(&self) -> libc::pid_t {
        libc::pid_t::try_from(self.child.id()).expect("a pid")
    }

    /// Sends `signal` to the host and its children.
    pub fn signal(&self, signal: libc::c_int) {
        assert!(!self.reaped, "host {} is gone", self.name);
        // SAFETY: kill has no memory preconditions; the group is this
        // host's (it leads it and is not reaped yet).
        let sent = unsafe { libc::kill(-self.pgid(), signal) };
        assert_eq!(sent, 0, "signalling host {}", self.name);
    }

    /// SIGKILL to the host and its children, as a crash or an OOM kill
    /// would; returns once none of them is left.
    pub fn kill(&mut self) {
        if self.reaped {
            return;
        }
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
        self.reaped = true;
        let started = Instant::now();
        // SAFETY: signal 0 only asks whether the group has a member.
        while unsafe { libc::kill(-self.pgid(), 0) } == 0 {
            assert!(
                started.elapsed() < PATIENCE,
                "processes of host {} outlived it",
                self.name
            );
            std::thread::sleep(POLL);
        }
    }

    /// SIGSTOP: the host and its children freeze, as in a long pause of
    /// the machine or the process, holding whatever they held.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT after [`Serve::pause`].
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Whether the host logged a line for which `wanted` holds.
    pub fn logged(&self, wanted: impl Fn(&str) -> bool) -> bool {
        self.log.lock().unwrap().iter().any(|l| wanted(l))
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- host {} logged ---\n{}",
                self.name,
                self.log.lock().unwrap().join("\n")
            );
        }
        if !self.reaped {
            // A paused group takes SIGKILL too.
            // SAFETY: as in `signal`.
            unsafe { libc::kill(-self.pgid(), libc::SIGKILL) };
            let _ = self.child.wait();
        }
    }
}

/// Reads what `serve` prints: its URL, then its development token or the
/// line saying it made none, which it sends on `ready`; then the rest, so
/// the host never blocks on a full pipe.
fn read_stdout(stdout: ChildStdout, ready: tokio::sync::oneshot::Sender<(String, Option<String>)>) {
    let (mut ready, mut url) = (Some(ready), None);
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if let Some((_, at)) = line.split_once(" module(s) at ") {
            url = Some(at.trim().to_owned());
        }
        let token = line.trim().strip_prefix("export TOKEN=").map(str::to_owned);
        if (token.is_some() || line.starts_with("tokens: "))
            && let (Some(url), Some(ready)) = (url.clone(), ready.take())
        {
            let _ = ready.send((url, token));
        }
    }
}
