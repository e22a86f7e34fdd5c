//! The process tree of one child: found through `/proc`, frozen, signalled
//! and reaped through pidfds, so a recycled pid is never signalled.
//!
//! The child is a child subreaper (set before `exec`), so while it lives
//! every process it starts, double-forked or `setsid` or not, stays its
//! descendant. The tree is killed leaves first and the child last; the host
//! itself adopts the orphans (see [`adopt_orphans`]) so the dead are reaped,
//! not left as zombies.

use std::collections::HashSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Once;

/// Rounds of stopping newly found processes before giving up on a tree that
/// keeps growing (each round stops every process found so far, and a
/// stopped process cannot fork, so real trees settle in two or three).
const MAX_FREEZE_ROUNDS: usize = 64;

/// How often the orphan reaper looks for dead adopted descendants.
const ORPHAN_REAP_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);

/// Makes the host a child subreaper, once: the descendants of a child that
/// dies before them are re-parented to the host instead of init, so the
/// host can reap them (init in some containers never does). A thread then
/// reaps those orphans when they die (a child that leaves one behind on a
/// normal exit, like git's detached maintenance, would otherwise leave a
/// zombie for the host's lifetime).
pub fn adopt_orphans() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: a prctl on integers.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if r != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "cannot make the host a child subreaper; killed grandchildren may stay zombies");
            return;
        }
        let reaper = std::thread::Builder::new()
            .name("modhost-orphans".into())
            .spawn(|| {
                loop {
                    std::thread::sleep(ORPHAN_REAP_INTERVAL);
                    reap_orphans();
                    super::cgroup::remove_emptied();
                }
            });
        if let Err(e) = reaper {
            tracing::warn!(error = %e, "cannot start the orphan reaper; adopted orphans may stay zombies");
        }
    });
}

/// Reaps the dead among the host's adopted orphans: zombies whose parent is
/// the host, that are not a child the host started itself (a root, whose
/// owner takes its status), and that are not in the host's own process
/// group (the children of `std::process::Command`, such as module builds,
/// are; every launched child and its descendants left it).
fn reap_orphans() {
    // SAFETY: getpid and getpgid on our own process.
    let (me, my_group) = unsafe { (libc::getpid(), libc::getpgid(0)) };
    for p in all_processes() {
        if !p.dead || p.ppid != me || p.pgid == my_group || super::spawn::is_root(p.pid) {
            continue;
        }
        // SAFETY: waitid on a pid, filling a siginfo of ours.
        unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                libc::id_t::try_from(p.pid).unwrap_or(0),
                &mut info,
                libc::WEXITED | libc::WNOHANG,
            );
        }
    }
}

/// One process of `/proc`.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: i32,
    ppid: i32,
    pgid: i32,
    /// Dead, not yet reaped (`Z`) or being reaped (`X`).
    dead: bool,
}

fn stat(pid: i32) -> Option<Proc> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is in parentheses and may contain anything; fields follow
    // the last `)`: state, ppid, pgrp, ...
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgid = fields.next()?.parse().ok()?;
    Some(Proc {
        pid,
        ppid,
        pgid,
        dead: state == "Z" || state == "X",
    })
}

fn all_processes() -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat)
        .collect()
}

fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0u32) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the descriptor was just returned to us and is owned here.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn send(fd: &OwnedFd, signal: i32) {
    // SAFETY: pidfd_send_signal on a descriptor we own, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0u32,
        );
    }
}

/// The processes of one child's tree that the host has a handle on.
#[derive(Debug)]
pub struct Tree {
    root: i32,
    /// Every member but the root, with its pidfd.
    members: Vec<(i32, OwnedFd)>,
    root_fd: Option<OwnedFd>,
}

impl Tree {
    /// The tree under `root`, a child of the host not yet reaped.
    pub fn new(root: i32) -> Self {
        Tree {
            root,
            members: Vec::new(),
            root_fd: pidfd_open(root),
        }
    }

    fn known(&self) -> HashSet<i32> {
        let mut set: HashSet<i32> = self.members.iter().map(|(p, _)| *p).collect();
        set.insert(self.root);
        set
    }

    fn belongs(&self, p: &Proc, known: &HashSet<i32>) -> bool {
        known.contains(&p.ppid) || p.pgid == self.root
    }

    /// Adds every process that descends from a member or is in the root's
    /// process group; returns how many were new.
    fn discover(&mut self) -> usize {
        let procs = all_processes();
        let mut known = self.known();
        let mut added = 0;
        loop {
            let mut grew = false;
            for p in &procs {
                if known.contains(&p.pid) || !self.belongs(p, &known) {
                    continue;
                }
                let Some(fd) = pidfd_open(p.pid) else {
                    continue;
                };
                // The pid may have been recycled between the scan and the
                // open: keep the handle only if it still is one of ours.
                if stat(p.pid).is_some_and(|now| self.belongs(&now, &known)) {
                    known.insert(p.pid);
                    self.members.push((p.pid, fd));
                    added += 1;
                    grew = true;
                }
            }
            if !grew {
                return added;
            }
        }
    }

    /// Stops the whole tree: a stopped process cannot fork, so after this
    /// the tree is complete.
    pub fn freeze(&mut self) {
        if let Some(fd) = &self.root_fd {
            send(fd, libc::SIGSTOP);
        }
        let mut stopped = 0;
        for _ in 0..MAX_FREEZE_ROUNDS {
            self.discover();
            for (_, fd) in &self.members[stopped..] {
                send(fd, libc::SIGSTOP);
            }
            if self.members.len() == stopped {
                return;
            }
            stopped = self.members.len();
        }
    }

    /// Sends `signal` to every member and then the root, and wakes them so
    /// a handler can run.
    pub fn signal_and_continue(&mut self, signal: i32) {
        self.discover();
        for (_, fd) in &self.members {
            send(fd, signal);
            send(fd, libc::SIGCONT);
        }
        if let Some(fd) = &self.root_fd {
            send(fd, signal);
            send(fd, libc::SIGCONT);
        }
    }

    /// Refreshes the member list while the tree runs (between a polite
    /// signal and the kill).
    pub fn refresh(&mut self) {
        self.discover();
    }

    /// Kills the tree: frozen first, then every member, then the root, so
    /// nothing is orphaned while it can still run.
    pub fn kill(&mut self) {
        self.freeze();
        for (_, fd) in &self.members {
            send(fd, libc::SIGKILL);
        }
        match &self.root_fd {
            Some(fd) => send(fd, libc::SIGKILL),
            // No pidfd (descriptors exhausted): the root is the host's
            // unreaped child, so its pid cannot have been recycled.
            // SAFETY: kill(2) on that pid.
            None => unsafe {
                libc::kill(self.root, libc::SIGKILL);
            },
        }
    }

    /// Reaps a killed tree, the root first, waiting at most `patience` for
    /// members re-parented to the host. Blocks: for a thread of its own,
    /// when the call that ran the child is gone.
    pub fn reap_killed(mut self, patience: std::time::Duration) {
        if let Some(fd) = &self.root_fd {
            let _ = super::spawn::wait_now(fd, false);
        }
        let until = std::time::Instant::now() + patience;
        while self.reap() > 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Members that are not yet reaped. Call after the root was reaped:
    /// the killed members are then the host's children (see
    /// [`adopt_orphans`]) and are reaped here.
    pub fn reap(&mut self) -> usize {
        // Reaped, or not ours to reap (ECHILD: reaped elsewhere, never
        // re-parented): either way nothing is left to wait for.
        self.members
            .retain(|(_, fd)| matches!(super::spawn::wait_now(fd, true), Ok(None)));
        self.members.len()
    }

    /// Members still running (not yet dead); the root is not counted.
    pub fn alive(&self) -> usize {
        self.members
            .iter()
            .filter(|(pid, _)| stat(*pid).is_some_and(|p| !p.dead))
            .count()
    }
}
