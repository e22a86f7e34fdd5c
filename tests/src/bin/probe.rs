//! A native program the subprocess tests grant to a module: it tries what a
//! hostile child would and prints, one line each, what the kernel allowed.
//!
//! Usage:
//!   probe sockets        one line per socket family and type: `NAME ok` or
//!                        `NAME errno N`
//!   probe calls          the same for system calls a child never needs
//!   probe id             `uid= gid= groups=COUNT capbnd= capeff=` of itself

use std::io::Error;

fn outcome(r: i64) -> String {
    if r >= 0 {
        "ok".into()
    } else {
        format!(
            "errno {}",
            Error::last_os_error().raw_os_error().unwrap_or(0)
        )
    }
}

fn socket(domain: i32, ty: i32, proto: i32) -> String {
    // SAFETY: socket(2) on integers; a descriptor it returns is closed.
    let fd = unsafe { libc::socket(domain, ty, proto) };
    let out = outcome(i64::from(fd));
    if fd >= 0 {
        // SAFETY: our descriptor.
        unsafe { libc::close(fd) };
    }
    out
}

fn sockets() {
    let tries: &[(&str, i32, i32, i32)] = &[
        ("tcp", libc::AF_INET, libc::SOCK_STREAM, 0),
        ("tcp6", libc::AF_INET6, libc::SOCK_STREAM, 0),
        ("udp", libc::AF_INET, libc::SOCK_DGRAM, 0),
        ("udp6", libc::AF_INET6, libc::SOCK_DGRAM, 0),
        (
            "icmp-raw",
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMP,
        ),
        (
            "icmp-dgram",
            libc::AF_INET,
            libc::SOCK_DGRAM,
            libc::IPPROTO_ICMP,
        ),
        (
            "sctp",
            libc::AF_INET,
            libc::SOCK_SEQPACKET,
            libc::IPPROTO_SCTP,
        ),
        (
            "mptcp",
            libc::AF_INET,
            libc::SOCK_STREAM,
            libc::IPPROTO_MPTCP,
        ),
        ("packet", libc::AF_PACKET, libc::SOCK_RAW, 0),
        ("unix", libc::AF_UNIX, libc::SOCK_STREAM, 0),
        ("unix-dgram", libc::AF_UNIX, libc::SOCK_DGRAM, 0),
        (
            "netlink-audit",
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            libc::NETLINK_AUDIT,
        ),
        ("alg", libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
        ("vsock", libc::AF_VSOCK, libc::SOCK_STREAM, 0),
    ];
    for (name, domain, ty, proto) in tries {
        println!(
            "{name} {}",
            socket(*domain, *ty | libc::SOCK_CLOEXEC, *proto)
        );
    }
    let mut pair = [0i32; 2];
    // SAFETY: socketpair fills `pair`; both ends are closed.
    let r = unsafe { libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, pair.as_mut_ptr()) };
    println!("unix-pair {}", outcome(i64::from(r)));
    if r == 0 {
        // SAFETY: our descriptors.
        unsafe {
            libc::close(pair[0]);
            libc::close(pair[1]);
        }
    }
}

fn calls() {
    // SAFETY: each call is made with arguments that change nothing when it
    // is allowed (a failing or no-op request), and its result is printed.
    unsafe {
        let tries: [(&str, i64); 8] = [
            (
                "ptrace",
                libc::syscall(libc::SYS_ptrace, libc::PTRACE_TRACEME, 0, 0, 0),
            ),
            ("bpf", libc::syscall(libc::SYS_bpf, 0, 0, 0)),
            (
                "keyctl",
                libc::syscall(libc::SYS_keyctl, 0 /* GET_KEYRING_ID */, -3, 0),
            ),
            (
                "mount",
                libc::syscall(libc::SYS_mount, c"none".as_ptr(), c"/".as_ptr(), 0, 0, 0),
            ),
            (
                "unshare-user",
                libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER),
            ),
            ("io-uring", libc::syscall(libc::SYS_io_uring_setup, 1, 0)),
            (
                "init-module",
                libc::syscall(libc::SYS_init_module, 0, 0, c"".as_ptr()),
            ),
            (
                "clone-newuser",
                libc::syscall(
                    libc::SYS_clone,
                    libc::CLONE_NEWUSER | libc::SIGCHLD,
                    0,
                    0,
                    0,
                    0,
                ),
            ),
        ];
        for (name, r) in tries {
            if name == "clone-newuser" && r == 0 {
                libc::_exit(0); // the new child
            }
            println!("{name} {}", outcome(r));
        }
    }
}

fn id() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // SAFETY: plain queries of the calling process; capget fills `data`.
    unsafe {
        let groups = libc::getgroups(0, std::ptr::null_mut());
        let mut bounding = 0u64;
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_READ, cap, 0, 0, 0) == 1 {
                bounding |= 1 << cap;
            }
        }
        let mut header = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        libc::syscall(libc::SYS_capget, &raw mut header, data.as_mut_ptr());
        let effective = u64::from(data[0].effective) | (u64::from(data[1].effective) << 32);
        println!(
            "uid={} gid={} groups={groups} capbnd={bounding:016x} capeff={effective:016x}",
            libc::getuid(),
            libc::getgid(),
        );
    }
}

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("sockets") => sockets(),
        Some("calls") => calls(),
        Some("id") => id(),
        _ => {
            eprintln!("usage: probe sockets|calls|id");
            std::process::exit(2);
        }
    }
}
