//! The seccomp filter every confined child runs under, loaded in the child
//! after Landlock and before `exec`: sockets only of the families the grant
//! allows, and none of the system calls a confined program never needs.
//!
//! Landlock confines files, TCP ports, signals and abstract unix sockets;
//! it does not see UDP, raw or packet sockets, nor the kernel's other entry
//! points (modules, `bpf`, keys, mounts, namespaces, `io_uring`, which can
//! open sockets past this filter). The filter closes those. It is built once
//! per network setting in the host and only pointed to by the child.

use std::sync::OnceLock;

/// The architecture the filter's system call numbers are for; a call made
/// through another ABI (32-bit `int 0x80` on x86-64) kills the child.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// x32 system calls carry this bit on x86-64; none is allowed.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `clone` flags that make a namespace: a child needs none, and each opens
/// kernel surface (a user namespace grants capabilities inside it).
const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWCGROUP)
    .cast_unsigned();

/// The socket type bits of `socket`'s second argument (without
/// `SOCK_NONBLOCK` and `SOCK_CLOEXEC`).
const SOCK_TYPE_MASK: u32 = 0xf;

/// System calls a confined child is refused with `EPERM`: loading kernel
/// code or filters, tracing or reading other processes, keys, mounts and
/// namespaces, `io_uring` (its operations bypass this filter), the clock,
/// the host name, swap, reboot, and opening files by handle.
fn refused_calls() -> Vec<libc::c_long> {
    let common = [
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_mount_setattr,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_syslog,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
        libc::SYS_vhangup,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_fanotify_init,
        libc::SYS_lookup_dcookie,
    ];
    common.into_iter().chain(arch_refused_calls()).collect()
}

/// The x86-64 calls of the same kinds: port I/O, the LDT, old loaders.
#[cfg(target_arch = "x86_64")]
fn arch_refused_calls() -> Vec<libc::c_long> {
    vec![
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_modify_ldt,
        libc::SYS_uselib,
        libc::SYS__sysctl,
    ]
}

#[cfg(not(target_arch = "x86_64"))]
fn arch_refused_calls() -> Vec<libc::c_long> {
    Vec::new()
}

/// A built filter, kept for the host's lifetime and pointed to by children.
pub struct Filter {
    program: libc::sock_fprog,
    _instructions: Box<[libc::sock_filter]>,
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("instructions", &self.program.len)
            .finish()
    }
}

// SAFETY: the program points into `_instructions`, owned by the filter and
// never written after it is built.
unsafe impl Send for Filter {}
// SAFETY: as above: shared reads only.
unsafe impl Sync for Filter {}

/// Why the filter cannot be used on this host.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SeccompError {
    #[error("seccomp filters are not available on this kernel")]
    Unavailable,
    #[error("no seccomp filter is written for this architecture")]
    Architecture,
}

/// The filter for children with (`network`) or without network access.
pub fn filter(network: bool) -> Result<&'static Filter, SeccompError> {
    static WITH: OnceLock<Result<Filter, SeccompError>> = OnceLock::new();
    static WITHOUT: OnceLock<Result<Filter, SeccompError>> = OnceLock::new();
    let cell = if network { &WITH } else { &WITHOUT };
    cell.get_or_init(|| build(network))
        .as_ref()
        .map_err(Clone::clone)
}

/// Whether this kernel takes seccomp filters.
pub fn available() -> bool {
    // SAFETY: a prctl on integers; it fails with EINVAL without seccomp.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}

impl Filter {
    /// Loads the filter on the calling process. Needs `no_new_privs` (or
    /// `CAP_SYS_ADMIN`).
    ///
    /// # Safety
    ///
    /// Makes one system call; safe between `clone` and `execve`.
    pub unsafe fn load(&self) -> std::io::Result<()> {
        // SAFETY: the program and its instructions live as long as `self`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0u32,
                &raw const self.program,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn build(_network: bool) -> Result<Filter, SeccompError> {
    Err(SeccompError::Architecture)
}

#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn build(network: bool) -> Result<Filter, SeccompError> {
    if !available() {
        return Err(SeccompError::Unavailable);
    }
    let instructions = program(network).into_boxed_slice();
    let program = libc::sock_fprog {
        len: u16::try_from(instructions.len()).expect("the filter is a few hundred instructions"),
        filter: instructions.as_ptr().cast_mut(),
    };
    Ok(Filter {
        program,
        _instructions: instructions,
    })
}

const BPF_LD_W_ABS: u16 = 0x20;
const BPF_ALU_AND_K: u16 = 0x04 | 0x50;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
#[cfg_attr(
    all(not(target_arch = "x86_64"), not(test)),
    expect(
        dead_code,
        reason = "only the x32 check jumps on >=; the tests' interpreter knows it"
    )
)]
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_JMP_JSET_K: u16 = 0x05 | 0x40;
const BPF_RET_K: u16 = 0x06;

/// Offsets in `struct seccomp_data`; an argument's low 32 bits (both
/// architectures are little-endian), which is all the kernel reads of the
/// `int` arguments checked here.
const NR: u32 = 0;
const ARCH: u32 = 4;
const fn arg(i: u32) -> u32 {
    16 + 8 * i
}

const ALLOW: u32 = 0x7fff_0000;
const KILL: u32 = 0x8000_0000;
const fn errno(e: i32) -> u32 {
    0x0005_0000 | (e.cast_unsigned() & 0xffff)
}

/// A tiny assembler: jumps go to labels, resolved to the forward offsets
/// classic BPF takes.
#[derive(Default)]
struct Asm {
    code: Vec<Op>,
    labels: usize,
}

enum Op {
    Stmt(u16, u32),
    Jump(u16, u32, Label, Label),
    Place(Label),
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Label(usize);

impl Asm {
    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels)
    }
    fn place(&mut self, l: Label) {
        self.code.push(Op::Place(l));
    }
    fn load(&mut self, offset: u32) {
        self.code.push(Op::Stmt(BPF_LD_W_ABS, offset));
    }
    fn and(&mut self, k: u32) {
        self.code.push(Op::Stmt(BPF_ALU_AND_K, k));
    }
    fn ret(&mut self, k: u32) {
        self.code.push(Op::Stmt(BPF_RET_K, k));
    }
    /// Jumps to `to` when the test `code` of the accumulator against `k`
    /// holds, else falls through.
    fn goto_if(&mut self, code: u16, k: u32, to: Label) {
        let next = self.label();
        self.code.push(Op::Jump(code, k, to, next));
        self.place(next);
    }
    /// Returns `action` when the test `code` of the accumulator against
    /// `k` holds, else falls through.
    fn ret_when(&mut self, code: u16, k: u32, action: u32) {
        let (yes, no) = (self.label(), self.label());
        self.code.push(Op::Jump(code, k, yes, no));
        self.place(yes);
        self.ret(action);
        self.place(no);
    }
    /// Returns `action` when the accumulator equals `k`.
    fn ret_if(&mut self, k: u32, action: u32) {
        self.ret_when(BPF_JMP_JEQ_K, k, action);
    }

    fn finish(self) -> Vec<libc::sock_filter> {
        let mut at = std::collections::HashMap::new();
        let mut n = 0usize;
        for op in &self.code {
            match op {
                Op::Place(l) => {
                    at.insert(l.0, n);
                }
                _ => n += 1,
            }
        }
        let mut out = Vec::with_capacity(n);
        for op in &self.code {
            let here = out.len();
            let offset = |l: &Label| {
                let to = at[&l.0];
                u8::try_from(to - here - 1).expect("a jump in the filter reaches past 255")
            };
            match op {
                Op::Place(_) => {}
                Op::Stmt(code, k) => out.push(libc::sock_filter {
                    code: *code,
                    jt: 0,
                    jf: 0,
                    k: *k,
                }),
                Op::Jump(code, k, yes, no) => out.push(libc::sock_filter {
                    code: *code,
                    jt: offset(yes),
                    jf: offset(no),
                    k: *k,
                }),
            }
        }
        out
    }
}

fn nr(call: libc::c_long) -> u32 {
    u32::try_from(call).expect("system call numbers are small")
}

fn program(network: bool) -> Vec<libc::sock_filter> {
    let eaccess = errno(libc::EACCES);
    let mut a = Asm::default();
    let native = a.label();
    a.load(ARCH);
    a.goto_if(BPF_JMP_JEQ_K, AUDIT_ARCH, native);
    a.ret(KILL);
    a.place(native);
    a.load(NR);
    #[cfg(target_arch = "x86_64")]
    a.ret_when(BPF_JMP_JGE_K, X32_SYSCALL_BIT, errno(libc::EPERM));
    for call in refused_calls() {
        a.ret_if(nr(call), errno(libc::EPERM));
    }
    // glibc falls back to `clone` when `clone3` is missing; `clone3`'s
    // flags are behind a pointer the filter cannot read.
    a.ret_if(nr(libc::SYS_clone3), errno(libc::ENOSYS));
    let (clone, pair, socket) = (a.label(), a.label(), a.label());
    a.goto_if(BPF_JMP_JEQ_K, nr(libc::SYS_clone), clone);
    a.goto_if(BPF_JMP_JEQ_K, nr(libc::SYS_socketpair), pair);
    a.goto_if(BPF_JMP_JEQ_K, nr(libc::SYS_socket), socket);
    a.ret(ALLOW);

    a.place(clone);
    let namespace = a.label();
    a.load(arg(0));
    a.goto_if(BPF_JMP_JSET_K, NAMESPACE_FLAGS, namespace);
    a.ret(ALLOW);
    a.place(namespace);
    a.ret(errno(libc::EPERM));

    // A connected pair of unix sockets reaches nothing outside the child.
    a.place(pair);
    a.load(arg(0));
    a.ret_if(libc::AF_UNIX.cast_unsigned(), ALLOW);
    a.ret(eaccess);

    a.place(socket);
    if !network {
        // No socket of any family: no grant names a unix socket, and
        // without the network nothing else is reachable.
        a.ret(eaccess);
        return a.finish();
    }
    let (inet, netlink) = (a.label(), a.label());
    a.load(arg(0));
    a.goto_if(BPF_JMP_JEQ_K, libc::AF_INET.cast_unsigned(), inet);
    a.goto_if(BPF_JMP_JEQ_K, libc::AF_INET6.cast_unsigned(), inet);
    a.goto_if(BPF_JMP_JEQ_K, libc::AF_NETLINK.cast_unsigned(), netlink);
    a.ret(eaccess);

    // TCP and UDP (name lookups need UDP); not raw, SCTP, MPTCP or ICMP
    // datagram sockets.
    a.place(inet);
    let (stream, dgram) = (a.label(), a.label());
    a.load(arg(1));
    a.and(SOCK_TYPE_MASK);
    a.goto_if(BPF_JMP_JEQ_K, libc::SOCK_STREAM.cast_unsigned(), stream);
    a.goto_if(BPF_JMP_JEQ_K, libc::SOCK_DGRAM.cast_unsigned(), dgram);
    a.ret(eaccess);
    for (label, protocol) in [(stream, libc::IPPROTO_TCP), (dgram, libc::IPPROTO_UDP)] {
        a.place(label);
        a.load(arg(2));
        a.ret_if(0, ALLOW);
        a.ret_if(protocol.cast_unsigned(), ALLOW);
        a.ret(eaccess);
    }

    // The C library asks the kernel's routing socket which address
    // families are configured; it changes nothing without privileges.
    a.place(netlink);
    a.load(arg(2));
    a.ret_if(libc::NETLINK_ROUTE.cast_unsigned(), ALLOW);
    a.ret(eaccess);
    a.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs the classic BPF program on one call, as the kernel would.
    fn run(program: &[libc::sock_filter], call: libc::c_long, args: [u32; 3]) -> u32 {
        let data = |offset: u32| -> u32 {
            match offset {
                NR => nr(call),
                ARCH => AUDIT_ARCH,
                o => args[((o - 16) / 8) as usize],
            }
        };
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = program[pc];
            pc += 1;
            match i.code {
                BPF_LD_W_ABS => acc = data(i.k),
                BPF_ALU_AND_K => acc &= i.k,
                BPF_RET_K => return i.k,
                code => {
                    let taken = match code {
                        BPF_JMP_JEQ_K => acc == i.k,
                        BPF_JMP_JGE_K => acc >= i.k,
                        BPF_JMP_JSET_K => acc & i.k != 0,
                        other => panic!("unknown instruction {other:#x}"),
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
            }
        }
    }

    fn socket(network: bool, domain: i32, ty: i32, proto: i32) -> u32 {
        run(
            &program(network),
            libc::SYS_socket,
            [
                domain.cast_unsigned(),
                ty.cast_unsigned(),
                proto.cast_unsigned(),
            ],
        )
    }

    #[test]
    fn without_the_network_no_socket_of_any_family_is_created() {
        for (domain, ty) in [
            (libc::AF_INET, libc::SOCK_STREAM),
            (libc::AF_INET, libc::SOCK_DGRAM),
            (libc::AF_INET6, libc::SOCK_DGRAM),
            (libc::AF_UNIX, libc::SOCK_STREAM),
            (libc::AF_NETLINK, libc::SOCK_RAW),
            (libc::AF_PACKET, libc::SOCK_RAW),
        ] {
            assert_eq!(socket(false, domain, ty, 0), errno(libc::EACCES));
        }
    }

    #[test]
    fn with_the_network_only_tcp_and_udp_sockets_are_created() {
        let cloexec = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        assert_eq!(socket(true, libc::AF_INET, libc::SOCK_STREAM, 0), ALLOW);
        assert_eq!(
            socket(true, libc::AF_INET6, libc::SOCK_STREAM | cloexec, 6),
            ALLOW
        );
        assert_eq!(socket(true, libc::AF_INET, libc::SOCK_DGRAM, 17), ALLOW);
        assert_eq!(
            socket(true, libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            ALLOW
        );
        for (domain, ty, proto) in [
            (libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
            (libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            (libc::AF_INET, libc::SOCK_STREAM, libc::IPPROTO_MPTCP),
            (libc::AF_INET, libc::SOCK_SEQPACKET, libc::IPPROTO_SCTP),
            (libc::AF_INET6, libc::SOCK_STREAM, libc::IPPROTO_SCTP),
            (libc::AF_PACKET, libc::SOCK_RAW, 0),
            (libc::AF_UNIX, libc::SOCK_STREAM, 0),
            (libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
            (libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
            (libc::AF_VSOCK, libc::SOCK_STREAM, 0),
        ] {
            assert_eq!(
                socket(true, domain, ty, proto),
                errno(libc::EACCES),
                "{domain} {ty} {proto}"
            );
        }
    }

    #[test]
    fn kernel_entry_points_a_child_never_needs_are_refused() {
        let p = program(false);
        for call in [
            libc::SYS_ptrace,
            libc::SYS_bpf,
            libc::SYS_init_module,
            libc::SYS_keyctl,
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_io_uring_setup,
        ] {
            assert_eq!(run(&p, call, [0; 3]), errno(libc::EPERM), "{call}");
        }
        assert_eq!(run(&p, libc::SYS_clone3, [0; 3]), errno(libc::ENOSYS));
        let user_ns = libc::CLONE_NEWUSER.cast_unsigned();
        assert_eq!(
            run(&p, libc::SYS_clone, [user_ns, 0, 0]),
            errno(libc::EPERM)
        );
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND).cast_unsigned();
        assert_eq!(run(&p, libc::SYS_clone, [thread, 0, 0]), ALLOW);
        for call in [libc::SYS_read, libc::SYS_execve, libc::SYS_openat] {
            assert_eq!(run(&p, call, [0; 3]), ALLOW);
        }
        let pair = libc::AF_UNIX.cast_unsigned();
        assert_eq!(run(&p, libc::SYS_socketpair, [pair, 1, 0]), ALLOW);
    }

    #[test]
    fn filters_build_on_this_kernel() {
        assert!(filter(false).is_ok());
        assert!(filter(true).is_ok());
    }
}
