//! Starting a child the way `posix_spawn` does — `clone(CLONE_VM |
//! CLONE_VFORK)`, so the host's page tables (large: the pooling allocator
//! reserves gigabytes) are never copied — with the confinement of
//! [`ChildSetup`] applied in the child before `execve`.
//!
//! The child shares the host's memory until `execve`, and the host thread
//! waits meanwhile: the child touches only the [`ChildArgs`] prepared for it
//! and makes only async-signal-safe calls.

use std::collections::BTreeSet;
use std::ffi::{CString, c_char, c_int, c_void};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::unix::AsyncFd;

use super::confine::ChildSetup;

/// The child's stack until `execve`: what the setup and `execve` need, with
/// room to spare.
const CHILD_STACK_BYTES: usize = 128 * 1024;

/// A started child: its pid, a pidfd to wait on, and the host's ends of its
/// pipes.
#[derive(Debug)]
pub struct Child {
    pub pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    /// The host's pipe ends, to be taken by their readers and writer.
    pub stdin: Option<OwnedFd>,
    pub stdout: Option<OwnedFd>,
    pub stderr: Option<OwnedFd>,
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

/// What to start.
#[derive(Debug)]
pub struct Spec {
    pub program: CString,
    /// Including `argv[0]`.
    pub argv: Vec<CString>,
    /// `NAME=value` entries: the whole environment.
    pub env: Vec<CString>,
    pub stdin: bool,
    pub setup: ChildSetup,
}

#[repr(C)]
struct ChildArgs {
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
    stdin: RawFd,
    stdout: RawFd,
    stderr: RawFd,
    setup: ChildSetup,
    /// Written by the child when it fails before `execve`.
    error: c_int,
}

/// Where closing descriptors one by one stops on a kernel without
/// `close_range` (before 5.9): far above any descriptor a host opens.
const MAX_FALLBACK_FD: c_int = 65_536;

/// Runs in the child, on its own stack, sharing the host's memory.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `ChildArgs` the parent keeps alive (and does not
    // touch) until the child has called `execve` or `_exit`.
    let a = unsafe { &mut *arg.cast::<ChildArgs>() };
    // SAFETY: async-signal-safe calls on values prepared by the parent.
    unsafe {
        let fail = |a: &mut ChildArgs, e: c_int| -> ! {
            a.error = if e == 0 { libc::EINVAL } else { e };
            libc::_exit(127)
        };
        let errno = || {
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EINVAL)
        };
        // Handlers are the host's; a signal before `execve` must not run
        // them here. Rust ignores SIGPIPE; the child gets the default.
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        for sig in 1..libc::SIGRTMAX() {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && (old.sa_sigaction != libc::SIG_IGN || sig == libc::SIGPIPE)
                && old.sa_sigaction != libc::SIG_DFL
            {
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
        for (from, to) in [(a.stdin, 0), (a.stdout, 1), (a.stderr, 2)] {
            if libc::dup2(from, to) == -1 {
                fail(a, errno());
            }
        }
        if libc::setpgid(0, 0) == -1 {
            fail(a, errno());
        }
        if let Err(e) = a.setup.apply() {
            fail(a, e.raw_os_error().unwrap_or(libc::EINVAL));
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        // Nothing of the host's but the three pipes reaches the program:
        // not a descriptor opened without close-on-exec (by a C library, or
        // inherited by the host itself), not the ones the setup used.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == -1 {
            for fd in 3..MAX_FALLBACK_FD {
                libc::close(fd);
            }
        }
        libc::execve(a.path, a.argv, a.envp);
        fail(a, errno())
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as c_int; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just created and are owned here.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
        if flags == -1 || libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) == -1
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn null_fd() -> io::Result<OwnedFd> {
    Ok(std::fs::File::open("/dev/null")?.into())
}

/// Pids of the children started here that their [`Child`] reaps: the
/// orphan reaper ([`super::tree::adopt_orphans`]) never takes their exit
/// status.
static ROOTS: std::sync::Mutex<BTreeSet<i32>> = std::sync::Mutex::new(BTreeSet::new());

fn roots() -> std::sync::MutexGuard<'static, BTreeSet<i32>> {
    ROOTS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `pid` is a child started here whose [`Child`] still reaps it.
pub(super) fn is_root(pid: i32) -> bool {
    roots().contains(&pid)
}

/// Starts `spec`. An error is why the child could not be started (its
/// setup or `execve` failed; the child has then been reaped).
pub fn spawn(spec: &Spec) -> io::Result<Child> {
    let (stdin_child, stdin_host) = if spec.stdin {
        let (r, w) = pipe()?;
        (r, Some(w))
    } else {
        (null_fd()?, None)
    };
    let (stdout_host, stdout_child) = pipe()?;
    let (stderr_host, stderr_child) = pipe()?;

    let mut argv: Vec<*const c_char> = spec.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const c_char> = spec.env.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut args = ChildArgs {
        path: spec.program.as_ptr(),
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        stdin: stdin_child.as_raw_fd(),
        stdout: stdout_child.as_raw_fd(),
        stderr: stderr_child.as_raw_fd(),
        setup: spec.setup,
        error: 0,
    };
    let mut stack = vec![0u8; CHILD_STACK_BYTES];
    let mut pidfd: c_int = -1;
    // Held across the clone: the reaper cannot see the new child before
    // it is registered as a root.
    let mut registry = roots();
    // SAFETY: signals are blocked around the clone so no host handler runs
    // on the child's stack; the child runs `child_main` on `stack` with
    // `args`, both alive until clone returns (CLONE_VFORK: after the
    // child's execve or exit).
    let pid = unsafe {
        let top = stack.as_mut_ptr().add(CHILD_STACK_BYTES);
        let top = top.sub(top.addr() % 16).cast::<c_void>();
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let pid = libc::clone(
            child_main,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_PIDFD | libc::SIGCHLD,
            (&raw mut args).cast::<c_void>(),
            &raw mut pidfd,
        );
        let clone_error = io::Error::last_os_error();
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        if pid == -1 {
            return Err(clone_error);
        }
        pid
    };
    registry.insert(pid);
    drop(registry);
    drop(stack);
    // SAFETY: CLONE_PIDFD stored a new descriptor for the child here.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if args.error != 0 {
        // It exited before execve: reap it and report why.
        let _ = wait_now(&pidfd, false);
        roots().remove(&pid);
        return Err(io::Error::from_raw_os_error(args.error));
    }
    drop((stdin_child, stdout_child, stderr_child));
    for fd in [Some(&stdout_host), Some(&stderr_host), stdin_host.as_ref()]
        .into_iter()
        .flatten()
    {
        set_nonblocking(fd)?;
    }
    // SAFETY: an OwnedFd keeps returning the same open descriptor.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into_parts().1)?;
    Ok(Child {
        pid,
        pidfd,
        stdin: stdin_host,
        stdout: Some(stdout_host),
        stderr: Some(stderr_host),
    })
}

/// Reaps the process behind `pidfd` if it has exited (with `nohang`
/// false: waits for it). `Ok(None)`: still running. Only the process's
/// parent may reap it; anyone else gets ECHILD.
pub(super) fn wait_now(pidfd: &OwnedFd, nohang: bool) -> io::Result<Option<Exit>> {
    // SAFETY: waitid fills `info` for the process behind our pidfd.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | if nohang { libc::WNOHANG } else { 0 };
    let r = unsafe {
        libc::waitid(
            libc::P_PIDFD,
            libc::id_t::try_from(pidfd.as_raw_fd()).unwrap_or(0),
            &mut info,
            flags,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: reading fields of a siginfo that waitid filled.
    unsafe {
        if info.si_pid() == 0 {
            return Ok(None);
        }
        let status = info.si_status();
        Ok(Some(match info.si_code {
            libc::CLD_EXITED => Exit::Code(status),
            _ => Exit::Signal(status),
        }))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // Reaped by now, or by the tree's reaper through its own pidfd.
        roots().remove(&self.pid);
    }
}

impl Child {
    /// Waits for the child to exit and reaps it. Cancel safe.
    pub async fn wait(&self) -> io::Result<Exit> {
        loop {
            let mut ready = self.pidfd.readable().await?;
            if let Some(exit) = wait_now(self.pidfd.get_ref(), true)? {
                return Ok(exit);
            }
            ready.clear_ready();
        }
    }
}
