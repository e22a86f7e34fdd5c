//! A cgroup v2 per child, where the host can make one: the child joins it
//! before `exec`, so every process it ever starts — `setsid`, double-forked
//! or not — is in it, and `cgroup.kill` ends them all when the child ends,
//! on every path (a normal exit included). Where the hierarchy delegates
//! the controllers, `pids.max`, `memory.max` and `cpu.max` cap each child
//! on its own instead of one process limit shared by every module.
//!
//! The host's groups live in `modhost-<pid>` under its own cgroup; a group
//! left by a host that died is emptied and removed by the next one.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::confine::ChildLimits;

/// The controllers a child's group can be capped with.
const CONTROLLERS: [&str; 3] = ["pids", "memory", "cpu"];

/// How the host keeps each child's processes together.
#[derive(Debug)]
pub struct Cgroups {
    /// `…/modhost-<pid>`: one group per child below it.
    root: PathBuf,
    /// Controllers enabled for the children's groups.
    controllers: Vec<&'static str>,
    next: AtomicU64,
}

/// The cgroup mode of this host process, found at the first launch.
pub fn cgroups() -> Result<&'static Cgroups, &'static str> {
    static CGROUPS: OnceLock<Result<Cgroups, String>> = OnceLock::new();
    CGROUPS
        .get_or_init(Cgroups::detect)
        .as_ref()
        .map_err(String::as_str)
}

/// Says in one line which mode is in force.
pub fn describe() -> String {
    match cgroups() {
        Ok(c) => {
            let missing: Vec<&str> = CONTROLLERS
                .iter()
                .copied()
                .filter(|c2| !c.controllers.contains(c2))
                .collect();
            let caps = if missing.is_empty() {
                "pids.max, memory.max and cpu.max per child".to_owned()
            } else if c.controllers.is_empty() {
                "no per-child caps: the hierarchy delegates no pids, memory or cpu controller"
                    .to_owned()
            } else {
                format!(
                    "{} per child; not delegated: {}",
                    c.controllers.join(", "),
                    missing.join(", ")
                )
            };
            format!(
                "a cgroup v2 group each, under {} (the whole tree ends with its child; {caps})",
                c.root.display()
            )
        }
        Err(why) => format!(
            "no cgroup v2 group each ({why}): a descendant that leaves the child's process group and session may outlive a child that exits normally"
        ),
    }
}

impl Cgroups {
    fn detect() -> Result<Self, String> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| format!("cannot read /proc/self/mountinfo: {e}"))?;
        let mount = mountinfo
            .lines()
            .find_map(|line| {
                let (fields, rest) = line.split_once(" - ")?;
                let fstype = rest.split(' ').next()?;
                let mut f = fields.split(' ');
                let root = f.nth(3)?;
                let point = f.next()?;
                (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(point))
            })
            .ok_or("no cgroup v2 hierarchy is mounted")?;
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?;
        let path = own
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .ok_or("this process is in no cgroup v2 group")?;
        let base = mount.join(path.trim_start_matches('/'));
        clean_stale(&base);
        let root = base.join(format!("modhost-{}", std::process::id()));
        match std::fs::create_dir(&root) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(format!("cannot create {}: {e}", root.display())),
        }
        // Controllers reach our group only through the host's own; a group
        // that holds processes (the host's, unless it is the root) cannot
        // pass them on, and then the children go uncapped.
        let available = |dir: &Path| {
            std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default()
        };
        for c in CONTROLLERS {
            if available(&base).split_whitespace().any(|a| a == c) {
                let _ = std::fs::write(base.join("cgroup.subtree_control"), format!("+{c}"));
            }
        }
        let mut controllers = Vec::new();
        for c in CONTROLLERS {
            if available(&root).split_whitespace().any(|a| a == c)
                && std::fs::write(root.join("cgroup.subtree_control"), format!("+{c}")).is_ok()
            {
                controllers.push(c);
            }
        }
        Ok(Cgroups {
            root,
            controllers,
            next: AtomicU64::new(0),
        })
    }

    /// A fresh group for one child, capped by `limits` where the
    /// controllers allow.
    pub fn create(&self, limits: &ChildLimits) -> io::Result<ChildCgroup> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("c{n}"));
        std::fs::create_dir(&dir)?;
        let group = ChildCgroup { procs: None, dir };
        let set = |file: &str, value: String| std::fs::write(group.dir.join(file), value);
        if self.controllers.contains(&"pids") {
            set("pids.max", limits.processes.to_string())?;
        }
        if self.controllers.contains(&"memory") {
            set("memory.max", limits.memory.to_string())?;
            set("memory.swap.max", "0".into()).ok();
        }
        if self.controllers.contains(&"cpu") {
            let period = 100_000u64;
            set(
                "cpu.max",
                format!("{} {period}", period * u64::from(limits.cpus)),
            )?;
        }
        let path = CString::new(
            group
                .dir
                .join("cgroup.procs")
                .into_os_string()
                .into_encoded_bytes(),
        )?;
        // SAFETY: open on a path of ours; the descriptor is owned below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd == -1 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, owned here.
        let procs = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut group = group;
        group.procs = Some(procs);
        Ok(group)
    }
}

/// One child's group. Dropping it kills whatever is still in it and
/// removes it.
#[derive(Debug)]
pub struct ChildCgroup {
    dir: PathBuf,
    procs: Option<OwnedFd>,
}

impl ChildCgroup {
    /// `cgroup.procs`, which the child writes itself into before `exec`.
    pub fn procs_fd(&self) -> Option<RawFd> {
        self.procs.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Kills every process in the group.
    pub fn kill(&self) {
        if let Err(e) = std::fs::write(self.dir.join("cgroup.kill"), "1") {
            tracing::warn!(group = %self.dir.display(), error = %e, "cannot kill a child's cgroup");
        }
    }
}

impl Drop for ChildCgroup {
    fn drop(&mut self) {
        self.procs = None;
        self.kill();
        if std::fs::remove_dir(&self.dir).is_err() {
            // Still emptying: the orphan reaper tries again.
            removals().push(self.dir.clone());
        }
    }
}

fn removals() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    static PENDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    PENDING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes the killed groups that were still emptying; called by the
/// orphan reaper.
pub(super) fn remove_emptied() {
    let pending = std::mem::take(&mut *removals());
    let left: Vec<PathBuf> = pending
        .into_iter()
        .filter(|dir| {
            let _ = std::fs::write(dir.join("cgroup.kill"), "1");
            std::fs::remove_dir(dir).is_err() && dir.exists()
        })
        .collect();
    removals().extend(left);
}

/// Empties and removes the groups of hosts that are gone.
fn clean_stale(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("modhost-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = entry.path();
        if let Ok(children) = std::fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = std::fs::write(child.path().join("cgroup.kill"), "1");
                removals().push(child.path());
            }
        }
        tracing::info!(group = %dir.display(), "removing the cgroups of a host that is gone");
        removals().push(dir);
        remove_emptied();
    }
}
