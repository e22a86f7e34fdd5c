//! OS confinement of a child (Linux): a Landlock ruleset built in the host,
//! then applied in the forked child before `exec` together with
//! `no_new_privs`, resource limits and a working directory entered by file
//! descriptor.
//!
//! Everything the child runs between `fork` and `exec` is a raw system call
//! on values prepared in the parent: no allocation, no lock, nothing that
//! could deadlock in a fork of a multi-threaded process.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::seccomp::{self, Filter};
use super::user::ChildUser;
use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, Scope,
};

/// The newest Landlock ABI whose rights this host asks for; a kernel with an
/// older one enforces what it knows (best effort), and [`landlock_abi`] says
/// which that is.
const TARGET_ABI: ABI = ABI::V9;

/// The first ABI that can deny TCP `bind` and `connect`.
pub const NETWORK_ABI: i32 = 4;

/// Paths a child may read and execute when the operator sets none: the
/// system's programs and libraries, and the few files under `/etc` that the
/// C library, git and TLS need. The rest of `/etc` (and `/home`, `/root`,
/// `/var`, `/tmp`, `/proc`, ...) stays closed.
pub const DEFAULT_READ_PATHS: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/hosts",
    "/etc/resolv.conf",
    "/etc/gai.conf",
    "/etc/host.conf",
    "/etc/ssl",
    "/etc/ca-certificates",
    "/etc/gitconfig",
    "/etc/mime.types",
];

/// Devices a child may read and write.
const DEVICES_RW: &[&str] = &["/dev/null", "/dev/zero", "/dev/full"];

/// Devices a child may read.
const DEVICES_RO: &[&str] = &["/dev/random", "/dev/urandom"];

/// Resource limits of every child; each is a ceiling, never raised above
/// the host's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildLimits {
    /// `RLIMIT_AS`, bytes of address space.
    pub address_space: u64,
    /// `RLIMIT_FSIZE`, the largest file a child may write.
    pub file_size: u64,
    /// `RLIMIT_NOFILE`.
    pub open_files: u64,
    /// `RLIMIT_NPROC`: processes of the host's user, counted by the kernel
    /// over the whole user (not per child), so it is a fork-bomb brake; the
    /// kernel does not apply it to root. Also each child's `pids.max`
    /// where the host has a cgroup per child with the pids controller.
    pub processes: u64,
    /// `memory.max` of each child's cgroup, where the memory controller is
    /// delegated.
    pub memory: u64,
    /// CPUs' worth of time (`cpu.max`) each child's cgroup may use, where
    /// the cpu controller is delegated.
    pub cpus: u32,
}

impl Default for ChildLimits {
    fn default() -> Self {
        ChildLimits {
            address_space: 4 << 30,
            file_size: 1 << 30,
            open_files: 1024,
            processes: 4096,
            memory: 2 << 30,
            cpus: 1,
        }
    }
}

/// The Landlock ABI of the running kernel; 0 when it has none.
pub fn landlock_abi() -> i32 {
    static ABI_VERSION: OnceLock<i32> = OnceLock::new();
    *ABI_VERSION.get_or_init(|| {
        const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
        // SAFETY: with a null attribute and size 0 the call only returns
        // the ABI version (or an error); it touches no memory.
        let v = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                std::ptr::null::<libc::c_void>(),
                0usize,
                LANDLOCK_CREATE_RULESET_VERSION,
            )
        };
        i32::try_from(v).unwrap_or(0).max(0)
    })
}

/// Why a child could not be confined.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    #[error("Landlock is not available on this kernel")]
    Unavailable,
    #[error(
        "this kernel's Landlock (ABI {abi}) cannot deny network access (needs ABI {NETWORK_ABI})"
    )]
    NoNetworkRules { abi: i32 },
    #[error("this kernel's Landlock (ABI {abi}) cannot enforce {missing} (needs ABI {SCOPE_ABI})")]
    Partial { abi: i32, missing: String },
    #[error("cannot build the Landlock ruleset: {0}")]
    Ruleset(String),
    #[error(
        "{0}: sockets other than the granted ones and the kernel's other entry points would stay open to children"
    )]
    Seccomp(#[from] seccomp::SeccompError),
}

/// A module's Landlock ruleset, built once and applied to each of its
/// children.
#[derive(Debug)]
pub struct Confinement {
    fd: OwnedFd,
    filter: &'static Filter,
}

/// What a module's children may touch.
#[derive(Debug, Clone)]
pub struct RulesetSpec<'a> {
    /// Read-write (never execute): the module's data directory.
    pub data_dir: &'a Path,
    /// Read and execute: directories or files.
    pub read_paths: &'a [PathBuf],
    /// The granted programs' files, readable and executable even when they
    /// live outside `read_paths`.
    pub programs: Vec<&'a Path>,
    pub network: bool,
}

/// The Landlock ABI that scopes signals and abstract unix sockets to the
/// child's domain: without it a child could signal the host's processes or
/// reach a session bus or agent socket outside its box.
pub const SCOPE_ABI: i32 = 6;

/// What the policy relies on that a kernel with Landlock ABI `abi` would not
/// enforce (Landlock's best-effort mode would drop it silently).
pub fn missing_protections(abi: i32, network: bool) -> Vec<&'static str> {
    let mut missing = Vec::new();
    if abi < 1 {
        missing.push("file access rules");
    }
    if !network && abi < NETWORK_ABI {
        missing.push("denying TCP");
    }
    if abi < SCOPE_ABI {
        missing.push("scoping signals and abstract unix sockets");
    }
    missing
}

impl Confinement {
    /// Builds the ruleset, or says why this kernel cannot enforce all of
    /// it: a child is never started under a policy that holds only in part.
    pub fn build(spec: &RulesetSpec<'_>) -> Result<Self, ConfineError> {
        let abi = landlock_abi();
        if abi < 1 {
            return Err(ConfineError::Unavailable);
        }
        if !spec.network && abi < NETWORK_ABI {
            return Err(ConfineError::NoNetworkRules { abi });
        }
        let missing = missing_protections(abi, spec.network);
        if !missing.is_empty() {
            return Err(ConfineError::Partial {
                abi,
                missing: missing.join(", "),
            });
        }
        let filter = seccomp::filter(spec.network)?;
        let fail = |e: &dyn std::fmt::Display| ConfineError::Ruleset(e.to_string());
        let all = AccessFs::from_all(TARGET_ABI);
        let read_exec = AccessFs::from_read(TARGET_ABI);
        let read_file = AccessFs::ReadFile | AccessFs::Execute;
        let data = all & !(AccessFs::Execute | AccessFs::MakeChar | AccessFs::MakeBlock);
        let device = AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev;

        let mut ruleset = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)
            .map_err(|e| fail(&e))?
            .scope(Scope::Signal | Scope::AbstractUnixSocket)
            .map_err(|e| fail(&e))?;
        if !spec.network {
            ruleset = ruleset
                .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
                .map_err(|e| fail(&e))?;
        }
        let mut created = ruleset.create().map_err(|e| fail(&e))?;

        let mut add = |path: &Path, dir_rights, file_rights| -> Result<(), ConfineError> {
            let Ok(meta) = std::fs::metadata(path) else {
                return Ok(()); // absent on this system: nothing to allow
            };
            let rights = if meta.is_dir() {
                dir_rights
            } else {
                file_rights
            };
            let fd = PathFd::new(path).map_err(|e| fail(&e))?;
            created
                .as_mut()
                .add_rule(PathBeneath::new(fd, rights))
                .map_err(|e| fail(&e))?;
            Ok(())
        };
        for path in spec.read_paths {
            add(path, read_exec, read_file)?;
        }
        for program in &spec.programs {
            add(program, read_exec, read_file)?;
        }
        for dev in DEVICES_RW {
            add(Path::new(dev), device, device)?;
        }
        for dev in DEVICES_RO {
            add(
                Path::new(dev),
                AccessFs::ReadFile.into(),
                AccessFs::ReadFile.into(),
            )?;
        }
        add(spec.data_dir, data, data & AccessFs::from_file(TARGET_ABI))?;

        let fd: Option<OwnedFd> = created.into();
        let fd = fd.ok_or(ConfineError::Unavailable)?;
        Ok(Confinement { fd, filter })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The seccomp filter that goes with the ruleset.
    pub fn filter(&self) -> &'static Filter {
        self.filter
    }
}

/// What the forked child applies to itself before `exec`: plain values, so
/// the closure allocates nothing.
#[derive(Debug, Clone, Copy)]
pub struct ChildSetup {
    /// The working directory, open in the parent.
    pub cwd_fd: RawFd,
    /// The Landlock ruleset, or `None` for an unconfined child (only when
    /// the operator allowed it).
    pub ruleset_fd: Option<RawFd>,
    /// The seccomp filter, loaded last (with the ruleset).
    pub seccomp: Option<&'static Filter>,
    /// The unprivileged user to become, when the host is root.
    pub user: Option<ChildUser>,
    /// `cgroup.procs` of the child's own cgroup, joined first.
    pub cgroup_procs: Option<RawFd>,
    pub limits: ChildLimits,
    /// The host's pid: the child dies with it ([`libc::PR_SET_PDEATHSIG`]).
    pub parent: libc::pid_t,
}

impl ChildSetup {
    /// Runs in the child between `fork` and `exec`.
    ///
    /// # Safety
    ///
    /// Only async-signal-safe system calls are made; the descriptors must
    /// stay open in the parent until the child has been spawned.
    pub unsafe fn apply(&self) -> io::Result<()> {
        let check = |r: libc::c_int| {
            if r == -1 {
                Err(io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        if let Some(fd) = self.cgroup_procs {
            // SAFETY: a write of two bytes to a descriptor the parent keeps
            // open; "0" moves the writer.
            if unsafe { libc::write(fd, c"0".as_ptr().cast(), 1) } == -1 {
                return Err(io::Error::last_os_error());
            }
        }
        let l = self.limits;
        for (resource, value) in [
            (libc::RLIMIT_AS, l.address_space),
            (libc::RLIMIT_FSIZE, l.file_size),
            (libc::RLIMIT_NOFILE, l.open_files),
            (libc::RLIMIT_NPROC, l.processes),
            (libc::RLIMIT_CORE, 0),
        ] {
            // SAFETY: getrlimit/setrlimit write or read only `current`.
            unsafe {
                let mut current = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                check(libc::getrlimit(resource, &mut current))?;
                let value = value.min(current.rlim_max);
                let lowered = libc::rlimit {
                    rlim_cur: value,
                    rlim_max: value,
                };
                check(libc::setrlimit(resource, &lowered))?;
            }
        }
        // SAFETY: plain system calls on integers and a descriptor the parent
        // keeps open.
        unsafe {
            // Orphans of the child's descendants come back to the child, not
            // to init: the host can find and kill the whole tree.
            check(libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0))?;
            check(libc::fchdir(self.cwd_fd))?;
            if let Some(user) = &self.user {
                user.become_in_child()?;
            }
            // A host killed outright (SIGKILL, the OOM killer) takes its
            // child along: nothing is left running that no host decides
            // about. Set after the change of user, which clears it; a host
            // already gone by then is not waited for.
            check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
            if libc::getppid() != self.parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
            if let Some(fd) = self.ruleset_fd {
                let r = libc::syscall(libc::SYS_landlock_restrict_self, fd, 0u32);
                if r != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            if let Some(filter) = self.seccomp {
                filter.load()?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_that_would_enforce_the_policy_only_in_part_is_named_short() {
        assert!(missing_protections(7, false).is_empty());
        assert!(missing_protections(6, true).is_empty());
        assert_eq!(
            missing_protections(5, false),
            ["scoping signals and abstract unix sockets"]
        );
        assert_eq!(
            missing_protections(3, false),
            ["denying TCP", "scoping signals and abstract unix sockets"]
        );
        assert!(missing_protections(0, true).contains(&"file access rules"));
    }

    #[test]
    fn kernel_reports_a_landlock_abi_that_can_deny_network() {
        // The machines this host is built for run Landlock ABI 7; a kernel
        // without it must make the subprocess gate refuse, not skip.
        assert!(landlock_abi() >= NETWORK_ABI, "abi {}", landlock_abi());
    }

    #[test]
    fn ruleset_builds_for_a_data_directory_and_default_paths() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = DEFAULT_READ_PATHS.iter().map(PathBuf::from).collect();
        let spec = RulesetSpec {
            data_dir: dir.path(),
            read_paths: &paths,
            programs: vec![Path::new("/bin/true")],
            network: false,
        };
        let r = Confinement::build(&spec).unwrap();
        assert!(r.raw_fd() >= 0);
    }
}
