//! The life of one child: started, its output read into capped buffers,
//! waited for until it exits, its timeout, or a cancel; on the last two its
//! whole tree is stopped ([`tree`]) and reaped.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::confine::ChildSetup;
use super::{cgroup, spawn, tree};
use crate::audit::{AuditEnd, Ended};
use crate::cancel::CancelToken;
use crate::db::now_ms;

/// How long output is still read after the child has exited: what it wrote
/// is in the pipe already; a writer still holding the pipe after this is a
/// stray descendant, and its output is not the child's.
const OUTPUT_AFTER_EXIT: Duration = Duration::from_millis(500);

/// How often the tree is re-scanned while it is given time to stop.
const TREE_POLL: Duration = Duration::from_millis(10);

/// How long the host waits for killed descendants to be reaped.
const REAP_WAIT: Duration = Duration::from_secs(1);

/// Bytes read from a pipe at a time.
const READ_CHUNK: usize = 64 * 1024;

/// What a call to `run-subprocess` ended with, before it becomes WIT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub status: Status,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration: Duration,
}

/// How a child ended (WIT `exit-status`, plus cancellation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Code(i32),
    Signal(i32),
    TimedOut,
    /// The task was cancelled; the caller traps.
    Cancelled,
}

/// One child to start, everything decided.
pub(super) struct Launch<'a> {
    pub program: &'a std::path::Path,
    pub arg0: &'a str,
    pub args: &'a [String],
    pub env: &'a [(String, String)],
    pub stdin: Option<Vec<u8>>,
    pub setup: ChildSetup,
    pub timeout: Duration,
    pub max_output: u64,
    pub grace: Duration,
    /// Stops the child (its whole tree) when cancelled.
    pub cancel: Option<&'a CancelToken>,
    /// The child's own cgroup: whatever is left in it when the child ends
    /// (or the call is dropped) is killed.
    pub cgroup: Option<cgroup::ChildCgroup>,
}

/// A child that ran, and what the audit trail says of it.
pub(super) struct Ran {
    pub finished: Finished,
    stdout_total: u64,
    stderr_total: u64,
}

impl Ran {
    pub fn audit_end(&self) -> AuditEnd {
        let (ended, exit_code, signal) = match self.finished.status {
            Status::Code(c) => (Ended::Exited, Some(c), None),
            Status::Signal(s) => (Ended::Signalled, None, Some(s)),
            Status::TimedOut => (Ended::TimedOut, None, None),
            Status::Cancelled => (Ended::Cancelled, None, None),
        };
        AuditEnd {
            ended,
            exit_code,
            signal,
            failure: None,
            duration_ms: i64::try_from(self.finished.duration.as_millis()).unwrap_or(i64::MAX),
            stdout_bytes: i64::try_from(self.stdout_total).unwrap_or(i64::MAX),
            stderr_bytes: i64::try_from(self.stderr_total).unwrap_or(i64::MAX),
            finished_at: now_ms(),
        }
    }
}

/// Kills the tree if the call is dropped while the child runs (the call was
/// stopped from outside, the host is shutting down), and reaps the dead on
/// a thread of its own. It holds the pidfds taken at spawn, so a recycled
/// pid is never hit.
struct KillOnDrop(Option<tree::Tree>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(tree) = self.0.take() {
            // Freezing a tree scans /proc: not on an async worker.
            let shared = std::sync::Arc::new(std::sync::Mutex::new(Some(tree)));
            let on_thread = shared.clone();
            let reaper = std::thread::Builder::new()
                .name("modhost-reaper".into())
                .spawn(move || {
                    let tree = on_thread.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if let Some(mut tree) = tree {
                        tree.kill();
                        tree.reap_killed(REAP_WAIT);
                    }
                });
            if let Err(e) = reaper {
                tracing::error!(error = %e, "cannot start a thread to reap a killed child; killing it here");
                if let Some(mut tree) = shared.lock().unwrap_or_else(|p| p.into_inner()).take() {
                    tree.kill();
                }
            }
        }
    }
}

impl Launch<'_> {
    /// Starts the child and waits for it, its timeout or a cancel. The
    /// error is why it could not be started.
    pub async fn run(self) -> Result<Ran, String> {
        let cstr = |s: &str| CString::new(s).map_err(|_| "an argument contains NUL".to_owned());
        let spec = spawn::Spec {
            program: CString::new(self.program.as_os_str().as_bytes())
                .map_err(|_| "the program path contains NUL".to_owned())?,
            argv: std::iter::once(self.arg0)
                .chain(self.args.iter().map(String::as_str))
                .map(cstr)
                .collect::<Result<_, _>>()?,
            env: self
                .env
                .iter()
                .map(|(k, v)| cstr(&format!("{k}={v}")))
                .collect::<Result<_, _>>()?,
            stdin: self.stdin.is_some(),
            setup: self.setup,
        };
        let started = Instant::now();
        let cgroup = self.cgroup;
        let mut child = spawn::spawn(&spec).map_err(|e| match e.kind() {
            std::io::ErrorKind::PermissionDenied => {
                "permission denied (the confinement refused it)".to_owned()
            }
            _ => e.to_string(),
        })?;
        let pid = child.pid;
        let mut guard = KillOnDrop(Some(tree::Tree::new(pid)));

        let (stop_tx, stop_rx) = watch::channel(false);
        let reader = |fd| {
            let stop = stop_rx.clone();
            let max = self.max_output;
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .map(|r| tokio::spawn(read_capped(r, max, stop)))
                .ok()
        };
        let out = child.stdout.take().and_then(reader);
        let err = child.stderr.take().and_then(reader);
        let mut writer = None;
        if let (Some(fd), Some(bytes)) = (child.stdin.take(), self.stdin)
            && let Ok(mut w) = tokio::net::unix::pipe::Sender::from_owned_fd(fd)
        {
            writer = Some(tokio::spawn(async move {
                // A child that does not read its input is not an error.
                let _ = w.write_all(&bytes).await;
            }));
        }

        let cancelled = async {
            match self.cancel {
                Some(token) => token.cancelled().await,
                None => std::future::pending::<()>().await,
            }
        };
        let ending = tokio::select! {
            status = child.wait() => Ending::Exited(status.ok()),
            () = tokio::time::sleep(self.timeout) => Ending::TimedOut,
            () = cancelled => Ending::Cancelled,
        };
        let status = match ending {
            Ending::Exited(status) => {
                // Stray members of its process group go with it.
                // SAFETY: kill(2) on the child's process group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
                match status {
                    Some(spawn::Exit::Code(c)) => Status::Code(c),
                    Some(spawn::Exit::Signal(s)) => Status::Signal(s),
                    None => Status::Signal(0),
                }
            }
            Ending::TimedOut | Ending::Cancelled => {
                if let Some(tree) = guard.0.as_mut() {
                    terminate(&mut child, tree, self.grace).await;
                }
                if matches!(ending, Ending::Cancelled) {
                    Status::Cancelled
                } else {
                    Status::TimedOut
                }
            }
        };
        guard.0 = None;
        // Descendants that left the process group and the session (a
        // `setsid` daemon) end with the child too.
        drop(cgroup);
        if let Some(w) = writer {
            // Input nobody will read is dropped with its pipe.
            w.abort();
        }
        let duration = started.elapsed();

        // Give the readers what is already in the pipes, then stop them.
        let stopper = tokio::spawn(async move {
            tokio::time::sleep(OUTPUT_AFTER_EXIT).await;
            let _ = stop_tx.send(true);
        });
        let out = match out {
            Some(h) => h.await.unwrap_or_default(),
            None => Captured::default(),
        };
        let err = match err {
            Some(h) => h.await.unwrap_or_default(),
            None => Captured::default(),
        };
        stopper.abort();
        Ok(Ran {
            finished: Finished {
                status,
                stdout_truncated: out.total > out.kept.len() as u64,
                stderr_truncated: err.total > err.kept.len() as u64,
                stdout: out.kept,
                stderr: err.kept,
                duration,
            },
            stdout_total: out.total,
            stderr_total: err.total,
        })
    }
}

enum Ending {
    Exited(Option<spawn::Exit>),
    TimedOut,
    Cancelled,
}

/// SIGTERM to the whole tree, time to stop, then SIGKILL, leaves first; the
/// dead are reaped.
async fn terminate(child: &mut spawn::Child, tree: &mut tree::Tree, grace: Duration) {
    tree.freeze();
    tree.signal_and_continue(libc::SIGTERM);
    let deadline = Instant::now() + grace;
    let mut root_done = false;
    while Instant::now() < deadline {
        if root_done {
            tree.refresh();
            if tree.alive() == 0 {
                break;
            }
            tokio::time::sleep(TREE_POLL).await;
            continue;
        }
        tokio::select! {
            _ = child.wait() => root_done = true,
            () = tokio::time::sleep(TREE_POLL) => tree.refresh(),
        }
    }
    tree.kill();
    let _ = child.wait().await;
    let reap_until = Instant::now() + REAP_WAIT;
    while tree.reap() > 0 && Instant::now() < reap_until {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Output kept (at most the cap) and the total the child wrote.
#[derive(Debug, Default)]
struct Captured {
    kept: Vec<u8>,
    total: u64,
}

/// Reads `r` to its end (or until told to stop), keeping at most `cap`
/// bytes: the rest is read and dropped, so the child is never blocked on a
/// full pipe and the host never holds more than the cap.
async fn read_capped<R: AsyncRead + Unpin>(
    mut r: R,
    cap: u64,
    mut stop: watch::Receiver<bool>,
) -> Captured {
    let cap = usize::try_from(cap).unwrap_or(usize::MAX);
    let mut kept = Vec::new();
    let mut chunk = vec![0u8; READ_CHUNK];
    let mut total: u64 = 0;
    loop {
        let n = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            read = r.read(&mut chunk) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        total = total.saturating_add(n as u64);
        let room = cap.saturating_sub(kept.len());
        kept.extend_from_slice(&chunk[..n.min(room)]);
    }
    Captured { kept, total }
}
