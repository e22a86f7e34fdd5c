//! Who a child runs as. A host running as root (as in many containers)
//! starts its children as an unprivileged user and group, with no
//! supplementary groups and an empty capability bounding set: a confined
//! child then cannot read root's files, load modules, open raw sockets or
//! escape `RLIMIT_NPROC`. A host that is not root runs them as itself.
//!
//! The child user must be able to work in its data directory, which the
//! host creates and the guest fills as root: the directory gets a POSIX
//! access and default ACL for that user, so what either side creates later
//! stays usable by both.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// The user children run as when the host is root and the operator names
/// none.
pub const DEFAULT_CHILD_USER: &str = "nobody";

/// Who the operator wants children to run as.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ChildUserChoice {
    /// When the host is root: [`DEFAULT_CHILD_USER`]; otherwise the host's
    /// own user.
    #[default]
    Auto,
    /// A user by name, with its primary group.
    Named(String),
    /// A user and group by number.
    Id { uid: u32, gid: u32 },
    /// The host's own user, root included: children keep root's powers.
    Host,
}

impl std::str::FromStr for ChildUserChoice {
    type Err = String;

    /// `host`, `UID:GID`, or a user name.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "host" {
            return Ok(Self::Host);
        }
        if let Some((uid, gid)) = s.split_once(':') {
            let number = |v: &str| {
                v.parse::<u32>()
                    .map_err(|_| format!("`{s}` is not UID:GID (two unsigned numbers)"))
            };
            return Ok(Self::Id {
                uid: number(uid)?,
                gid: number(gid)?,
            });
        }
        if s.is_empty() || s.len() > 64 || s.contains(['/', '\0']) {
            return Err(format!("`{s}` is not a user name"));
        }
        Ok(Self::Named(s.to_owned()))
    }
}

/// The unprivileged identity a child takes before `exec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChildUser {
    pub uid: u32,
    pub gid: u32,
    /// The highest capability the kernel knows: every one up to it leaves
    /// the bounding set.
    last_cap: u32,
}

/// Why no unprivileged user could be chosen.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ChildUserError {
    #[error(
        "the host runs as root and there is no user `{0}` to run children as (name one with --child-user)"
    )]
    NoSuchUser(String),
    #[error(
        "children would run as root (uid 0); name an unprivileged user, or `host` to keep root"
    )]
    Root,
    #[error("the host is not root and cannot run children as uid {uid}")]
    NotPermitted { uid: u32 },
}

/// Whether the host runs as root.
pub fn host_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl ChildUserChoice {
    /// The user children run as: `None` for the host's own.
    pub fn resolve(&self) -> Result<Option<ChildUser>, ChildUserError> {
        let (uid, gid) = match self {
            Self::Host => return Ok(None),
            Self::Auto if !host_is_root() => return Ok(None),
            Self::Auto => lookup(DEFAULT_CHILD_USER)?,
            Self::Named(name) => lookup(name)?,
            Self::Id { uid, gid } => (*uid, *gid),
        };
        if uid == 0 || gid == 0 {
            return Err(ChildUserError::Root);
        }
        if !host_is_root() {
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } == uid {
                return Ok(None);
            }
            return Err(ChildUserError::NotPermitted { uid });
        }
        Ok(Some(ChildUser {
            uid,
            gid,
            last_cap: last_capability(),
        }))
    }
}

fn lookup(name: &str) -> Result<(u32, u32), ChildUserError> {
    let missing = || ChildUserError::NoSuchUser(name.to_owned());
    let c_name = CString::new(name).map_err(|_| missing())?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: getpwnam_r writes into `pwd` and `buf`, both ours and sized.
    unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let r = libc::getpwnam_r(
            c_name.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut found,
        );
        if r != 0 || found.is_null() {
            return Err(missing());
        }
        Ok((pwd.pw_uid, pwd.pw_gid))
    }
}

/// `/proc/sys/kernel/cap_last_cap`, or the highest capability of Linux 6.x
/// when it cannot be read.
fn last_capability() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

impl ChildUser {
    /// Becomes this user in the child, after everything that needs root
    /// (joining the cgroup, entering the working directory).
    ///
    /// # Safety
    ///
    /// Raw system calls only (the C library's wrappers would signal the
    /// host's threads, whose memory a `CLONE_VM` child shares).
    pub unsafe fn become_in_child(&self) -> std::io::Result<()> {
        let check = |r: libc::c_long| {
            if r == -1 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        // SAFETY: system calls on integers.
        unsafe {
            for cap in 0..=self.last_cap {
                let r = libc::prctl(libc::PR_CAPBSET_DROP, libc::c_ulong::from(cap), 0, 0, 0);
                if r == -1 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                    return Err(std::io::Error::last_os_error());
                }
            }
            check(libc::syscall(
                libc::SYS_setgroups,
                0usize,
                std::ptr::null::<libc::gid_t>(),
            ))?;
            check(libc::syscall(
                libc::SYS_setresgid,
                self.gid,
                self.gid,
                self.gid,
            ))?;
            check(libc::syscall(
                libc::SYS_setresuid,
                self.uid,
                self.uid,
                self.uid,
            ))?;
            check(libc::c_long::from(libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL,
                0,
                0,
                0,
            )))?;
        }
        Ok(())
    }

    /// Lets this user work in `dir`, a data directory inside `top` (the
    /// host's state directory): an access and a default ACL on it, and —
    /// the first time — on everything already in it (without following a
    /// symlink anywhere), and the right to pass through each directory from
    /// `top` down to it (programs such as git resolve their working
    /// directory's absolute path). Blocks on a large tree: not for an async
    /// worker.
    pub fn share(&self, top: &Path, dir: &Path) -> std::io::Result<()> {
        let fd = open_path(dir, true)?;
        let wanted = dir_acl(self.uid);
        if get_acl(&fd, DEFAULT_ACL).as_deref() == Some(wanted.as_slice()) {
            return Ok(());
        }
        for ancestor in dir.ancestors().skip(1) {
            if !ancestor.starts_with(top) {
                break;
            }
            let fd = open_path(ancestor, true)?;
            let mode = mode_of(&fd)?;
            set_acl(&fd, ACCESS_ACL, &pass_through_acl(self.uid, mode))?;
        }
        self.share_tree(&fd, MAX_SHARE_DEPTH)?;
        // The default ACL on the top is the mark that the tree is shared.
        set_acl(&fd, ACCESS_ACL, &wanted)?;
        set_acl(&fd, DEFAULT_ACL, &wanted)
    }

    fn share_tree(&self, dir: &OwnedFd, depth: u32) -> std::io::Result<()> {
        if depth == 0 {
            tracing::warn!(
                uid = self.uid,
                "a data directory nests deeper than {MAX_SHARE_DEPTH} levels; the rest is not shared with the child user"
            );
            return Ok(());
        }
        let names: Vec<CString> = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?
            .filter_map(|e| CString::new(e.ok()?.file_name().into_encoded_bytes()).ok())
            .collect();
        for name in names {
            let Some(kind) = kind_at(dir.as_raw_fd(), &name) else {
                continue; // gone, or a symlink: never followed
            };
            let Ok(fd) = open_nofollow(dir.as_raw_fd(), &name, kind == Kind::Dir) else {
                continue;
            };
            let Ok(mode) = mode_of(&fd) else {
                continue;
            };
            let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
            if is_dir {
                self.share_tree(&fd, depth - 1)?;
                set_acl(&fd, DEFAULT_ACL, &dir_acl(self.uid))?;
            }
            if is_dir || mode & libc::S_IFMT == libc::S_IFREG {
                set_acl(&fd, ACCESS_ACL, &file_acl(self.uid, mode))?;
            }
        }
        Ok(())
    }
}

/// How deep the first sharing of a data directory descends.
const MAX_SHARE_DEPTH: u32 = 128;

const ACCESS_ACL: &std::ffi::CStr = c"system.posix_acl_access";
const DEFAULT_ACL: &std::ffi::CStr = c"system.posix_acl_default";

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;

/// The kernel's `posix_acl_xattr` form: a version, then entries sorted by
/// tag.
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// A data directory: its owner and the child user may do anything, nobody
/// else anything.
fn dir_acl(uid: u32) -> Vec<u8> {
    acl(&[
        (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
        (ACL_USER, 7, uid),
        (ACL_GROUP_OBJ, 0, ACL_UNDEFINED_ID),
        (ACL_MASK, 7, ACL_UNDEFINED_ID),
        (ACL_OTHER, 0, ACL_UNDEFINED_ID),
    ])
}

/// The owner's, group's and others' `rwx` bits of `mode`.
fn permission_bits(mode: libc::mode_t) -> (u16, u16, u16) {
    let bits = |shift: u32| u16::try_from((mode >> shift) & 7).unwrap_or(0);
    (bits(6), bits(3), bits(0))
}

/// An entry that was there before: the child user gets its owner's rights,
/// the rest stays as it was.
fn file_acl(uid: u32, mode: libc::mode_t) -> Vec<u8> {
    let (owner, group, other) = permission_bits(mode);
    acl(&[
        (ACL_USER_OBJ, owner, ACL_UNDEFINED_ID),
        (ACL_USER, owner, uid),
        (ACL_GROUP_OBJ, group, ACL_UNDEFINED_ID),
        (ACL_MASK, owner | group, ACL_UNDEFINED_ID),
        (ACL_OTHER, other, ACL_UNDEFINED_ID),
    ])
}

/// A directory on the way to a data directory: the child user may pass
/// through it (not list it), the rest stays as it was.
fn pass_through_acl(uid: u32, mode: libc::mode_t) -> Vec<u8> {
    let (owner, group, other) = permission_bits(mode);
    acl(&[
        (ACL_USER_OBJ, owner, ACL_UNDEFINED_ID),
        (ACL_USER, 1, uid),
        (ACL_GROUP_OBJ, group, ACL_UNDEFINED_ID),
        (ACL_MASK, group | 1, ACL_UNDEFINED_ID),
        (ACL_OTHER, other, ACL_UNDEFINED_ID),
    ])
}

fn open_path(path: &Path, directory: bool) -> std::io::Result<OwnedFd> {
    open_nofollow(
        libc::AT_FDCWD,
        &CString::new(path.as_os_str().as_encoded_bytes())?,
        directory,
    )
}

fn mode_of(fd: &OwnedFd) -> std::io::Result<libc::mode_t> {
    // SAFETY: fstat fills `st` for our descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(st.st_mode)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// What `name` in `dir` is, without following it: `None` for a symlink,
/// anything but a file or directory, or an entry gone meanwhile.
fn kind_at(dir: RawFd, name: &CString) -> Option<Kind> {
    // SAFETY: fstatat fills `st` for a name in our directory.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r == -1 {
        return None;
    }
    match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => Some(Kind::Dir),
        libc::S_IFREG => Some(Kind::File),
        _ => None,
    }
}

fn open_nofollow(dir: RawFd, name: &CString, directory: bool) -> std::io::Result<OwnedFd> {
    let flags = libc::O_RDONLY
        | libc::O_NOFOLLOW
        | libc::O_NONBLOCK
        | libc::O_NOCTTY
        | libc::O_CLOEXEC
        | if directory { libc::O_DIRECTORY } else { 0 };
    // SAFETY: openat on a name of ours; the descriptor is owned below.
    let fd = unsafe { libc::openat(dir, name.as_ptr(), flags) };
    if fd == -1 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just opened, owned here.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn get_acl(fd: &OwnedFd, name: &std::ffi::CStr) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    // SAFETY: fgetxattr writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        libc::fgetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    buf.truncate(usize::try_from(n).ok()?);
    Some(buf)
}

fn set_acl(fd: &OwnedFd, name: &std::ffi::CStr, value: &[u8]) -> std::io::Result<()> {
    // SAFETY: fsetxattr reads `value` for our descriptor.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_user_choices_parse_from_the_command_line() {
        assert_eq!("host".parse(), Ok(ChildUserChoice::Host));
        assert_eq!(
            "1000:1000".parse(),
            Ok(ChildUserChoice::Id {
                uid: 1000,
                gid: 1000
            })
        );
        assert_eq!("svc".parse(), Ok(ChildUserChoice::Named("svc".into())));
        assert!("1000:x".parse::<ChildUserChoice>().is_err());
        assert!("".parse::<ChildUserChoice>().is_err());
    }

    #[test]
    fn root_is_never_chosen_as_the_child_user() {
        let root = ChildUserChoice::Id { uid: 0, gid: 0 };
        assert_eq!(root.resolve(), Err(ChildUserError::Root));
        let missing = ChildUserChoice::Named("no-such-user-here".into());
        if host_is_root() {
            assert!(matches!(
                missing.resolve(),
                Err(ChildUserError::NoSuchUser(_))
            ));
        }
    }

    #[test]
    fn sharing_a_data_directory_reaches_what_was_there_but_no_symlink() {
        if !host_is_root() {
            return;
        }
        let Ok(Some(user)) = ChildUserChoice::Auto.resolve() else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/file"), "x").unwrap();
        std::fs::write(outside.path().join("target"), "y").unwrap();
        std::os::unix::fs::symlink(outside.path().join("target"), dir.path().join("link")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("dirlink")).unwrap();
        let top = dir.path().parent().unwrap();
        user.share(top, dir.path()).unwrap();
        let has_acl = |p: &Path| get_acl(&open_path(p, p.is_dir()).unwrap(), ACCESS_ACL).is_some();
        assert!(has_acl(&dir.path().join("sub/file")));
        assert!(has_acl(&dir.path().join("sub")));
        assert!(!has_acl(&outside.path().join("target")));
        assert!(!has_acl(outside.path()));
        // Once shared, a second call is one look at the top.
        user.share(top, dir.path()).unwrap();
    }
}
