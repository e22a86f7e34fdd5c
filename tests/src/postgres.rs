//! A throwaway PostgreSQL cluster the suite starts itself, for tests of code
//! that stores into PostgreSQL.
//!
//! The server comes from Debian's `postgresql` package: where it is missing
//! and the tests run as root with apt, it is installed first; otherwise the
//! panic names the command that installs it. A cluster trusts every
//! connection from 127.0.0.1, keeps nothing durable (no fsync) unless it is
//! started with [`Cluster::start_durable`] for benchmarks, and cannot
//! outlive the test process: its postmaster is a direct child that the kernel
//! kills when the process goes, which is what lets [`Cluster::shared`] live in
//! a static that is never dropped.

use std::ffi::CString;
use std::fs::{self, File};
use std::io;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::on_path;

/// The role every URL connects as: initdb makes it the superuser.
const USER: &str = "modhost";
/// How long a server may take to accept connections before start gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopping server may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How many free ports start tries: another process may bind the one it
/// picked between picking and the server binding it.
const PORT_ATTEMPTS: u32 = 5;
/// Cluster directories in the temp dir are `modhost-pg-<pid>-<n>`: the pid
/// tells a later run whether the owner is gone.
const DIR_PREFIX: &str = "modhost-pg-";
/// Serialises installing across test processes. A fixed path, not the temp
/// dir, because processes may disagree on `TMPDIR` but share one apt.
const INSTALL_LOCK: &str = "/tmp/modhost-pg-install.lock";
/// Where Debian puts each major version's `bin/`: not on `PATH`.
const DEBIAN_VERSIONS: &str = "/usr/lib/postgresql";

/// A PostgreSQL server on 127.0.0.1 with its own data directory. Dropping it
/// stops the server and removes the directory.
pub struct Cluster {
    /// Holds `data/` (the cluster), the unix socket and `server.log`.
    dir: PathBuf,
    /// The `bin/` holding initdb, postgres, pg_isready and psql.
    bin: PathBuf,
    port: u16,
    /// Whether commits reach the disk ([`Cluster::start_durable`]).
    durable: bool,
    /// `name=value` settings of the server beyond the usual ones.
    settings: Vec<String>,
    /// `None` before the server runs and once it is stopped.
    server: Mutex<Option<Child>>,
}

/// What a test cluster gives up for speed: a crash may lose or corrupt
/// anything, which no test outlives anyway.
const FAST: &[&str] = &[
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
];

/// Settings of every cluster.
const COMMON: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "max_connections=200",
    "shared_buffers=128MB",
];

static SHARED: OnceLock<Cluster> = OnceLock::new();

impl Cluster {
    /// Initialises a cluster in a new directory and starts its server,
    /// panicking with the reason (and the server's log) when it cannot.
    /// Commits are not durable (no fsync), which tests do not need.
    pub fn start() -> Cluster {
        Cluster::start_with(false, &[])
    }

    /// A cluster that flushes every commit to disk, as PostgreSQL does by
    /// default (`fsync`, `synchronous_commit` and `full_page_writes` on),
    /// for measuring what a real server costs; `settings` are added as
    /// `name=value`, as with `postgres -c`.
    pub fn start_durable(settings: &[&str]) -> Cluster {
        Cluster::start_with(true, settings)
    }

    fn start_with(durable: bool, settings: &[&str]) -> Cluster {
        let bin = binaries();
        let account = server_account();
        remove_stale_dirs(&std::env::temp_dir());
        let mut cluster = Cluster {
            dir: make_dir(account),
            bin,
            port: 0,
            durable,
            settings: settings.iter().map(|s| (*s).to_owned()).collect(),
            server: Mutex::new(None),
        };
        cluster.initdb(account);
        for _ in 0..PORT_ATTEMPTS {
            cluster.port = free_port();
            let child = cluster.spawn_server(account);
            *cluster
                .server
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner) = Some(child);
            match cluster.wait_until_ready() {
                Ok(()) => return cluster,
                Err(Startup::PortTaken) => cluster.stop_server(),
                Err(Startup::Failed(why)) => panic!(
                    "PostgreSQL did not start in {}: {why}\n--- server log ---\n{}",
                    cluster.dir.display(),
                    cluster.log()
                ),
            }
        }
        panic!(
            "PostgreSQL found each of {PORT_ATTEMPTS} free ports taken before it bound them\n\
             --- server log ---\n{}",
            cluster.log()
        )
    }

    /// The one cluster of this test process, started on first use, so tests
    /// pay for initdb once and each takes a database of its own with
    /// [`Cluster::create_database`]. It is stopped and its directory removed
    /// when the process exits.
    pub fn shared() -> &'static Cluster {
        SHARED.get_or_init(|| {
            let cluster = Cluster::start();
            // SAFETY: registers a plain function; it only touches SHARED.
            unsafe { libc::atexit(stop_shared) };
            cluster
        })
    }

    /// A URL of the `postgres` database, as `postgres://modhost@127.0.0.1:PORT/postgres`.
    /// TCP rather than the unix socket, so that libpq, tokio-postgres and
    /// the rest read it the same way.
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// Creates the empty database `name` and returns its URL. Names are
    /// lowercase ASCII letters, digits and `_` (as unquoted SQL would fold
    /// them), so they need no quoting in SQL or escaping in the URL.
    pub fn create_database(&self, name: &str) -> String {
        let plain = !name.is_empty()
            && name.len() <= 63
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        assert!(
            plain,
            "a test database name is 1 to 63 of a-z, 0-9 and _, not starting with a digit: {name:?}"
        );
        self.psql(&self.url(), &format!("create database {name}"));
        self.database_url(name)
    }

    /// Runs `sql` with psql against `url` and returns its unaligned,
    /// tuples-only output without the final newline: for seeding and
    /// checking a database without a driver. Panics when psql fails.
    pub fn psql(&self, url: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                url,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.join("psql").display()));
        assert!(
            out.status.success(),
            "psql {sql:?} on {url}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.ends_with('\n') {
            text.pop();
        }
        text
    }

    /// The directory holding the cluster, its socket and its log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stops the server and keeps the cluster, for tests of a database that
    /// goes away; [`Cluster::restart`] brings it back. A fast shutdown: the
    /// server cuts every connection and writes what was committed (an
    /// immediate one, with this cluster's `synchronous_commit=off`, could
    /// forget the last commits).
    pub fn stop(&self) {
        self.stop_server_with(libc::SIGINT);
    }

    /// Starts the server of a stopped cluster again, on the same port.
    pub fn restart(&self) {
        let child = self.spawn_server(server_account());
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = Some(child);
        match self.wait_until_ready() {
            Ok(()) => {}
            Err(Startup::PortTaken) => panic!("port {} was taken while stopped", self.port),
            Err(Startup::Failed(why)) => panic!(
                "PostgreSQL did not start again: {why}\n--- server log ---\n{}",
                self.log()
            ),
        }
    }

    fn database_url(&self, database: &str) -> String {
        format!("postgres://{USER}@127.0.0.1:{}/{database}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_else(|e| format!("({e})"))
    }

    fn initdb(&self, account: Option<Account>) {
        let mut command = Command::new(self.bin.join("initdb"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-A", "trust", "-U", USER, "-E", "UTF8", "--no-locale"])
            .args((!self.durable).then_some("--no-sync"))
            .current_dir(&self.dir)
            .stdin(Stdio::null());
        run_as(&mut command, account);
        let out = command
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", self.bin.join("initdb").display()));
        assert!(
            out.status.success(),
            "initdb in {} failed: {}\n{}{}",
            self.dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn spawn_server(&self, account: Option<Account>) -> Child {
        let log = File::create(self.dir.join("server.log")).expect("creating server.log");
        let mut command = Command::new(self.bin.join("postgres"));
        command
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-k")
            .arg(&self.dir)
            .arg("-p")
            .arg(self.port.to_string());
        let fast = if self.durable { &[][..] } else { FAST };
        let extra = self.settings.iter().map(String::as_str);
        for setting in COMMON.iter().chain(fast).copied().chain(extra) {
            command.arg("-c").arg(setting);
        }
        command
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("sharing server.log"))
            .stderr(log);
        run_as(&mut command, account);
        dies_with_parent_thread(&mut command);
        spawn_from_lasting_thread(command)
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.bin.join("postgres").display()))
    }

    fn wait_until_ready(&self) -> Result<(), Startup> {
        let started = Instant::now();
        loop {
            let exited = {
                let mut server = self.server.lock().unwrap_or_else(PoisonError::into_inner);
                let child = server.as_mut().expect("a server was spawned");
                child
                    .try_wait()
                    .map_err(|e| Startup::Failed(e.to_string()))?
            };
            if let Some(status) = exited {
                return Err(if self.log().contains("could not bind") {
                    Startup::PortTaken
                } else {
                    Startup::Failed(format!("the server exited with {status}"))
                });
            }
            let ready = Command::new(self.bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
                .args(["-U", USER, "-d", "postgres", "-t", "1"])
                .stdin(Stdio::null())
                .status()
                .map_err(|e| Startup::Failed(format!("running pg_isready: {e}")))?;
            if ready.success() {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(Startup::Failed(format!(
                    "not accepting connections after {READY_TIMEOUT:?}"
                )));
            }
            thread::sleep(Duration::from_millis(25));
        }
    }

    /// Stops the server with an immediate shutdown (nothing here needs a
    /// checkpoint), killing it if it lingers.
    fn stop_server(&self) {
        self.stop_server_with(libc::SIGQUIT);
    }

    /// Stops the server with `signal` (SIGQUIT: immediate, SIGINT: fast),
    /// killing it if it lingers.
    fn stop_server_with(&self, signal: libc::c_int) {
        let child = self
            .server
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(mut child) = child else { return };
        if let (Ok(None), Ok(pid)) = (child.try_wait(), libc::pid_t::try_from(child.id())) {
            // SAFETY: kill(2) on our own unreaped child, so the pid is still its.
            unsafe { libc::kill(pid, signal) };
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_server();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Statics are never dropped: the shared cluster is stopped here instead,
/// so a normal exit leaves no directory behind.
extern "C" fn stop_shared() {
    if let Some(cluster) = SHARED.get() {
        cluster.stop_server();
        let _ = fs::remove_dir_all(&cluster.dir);
    }
}

/// Why a server did not come up.
enum Startup {
    /// Another process bound the port first: worth another port.
    PortTaken,
    Failed(String),
}

/// The user a server runs as when it cannot run as us.
#[derive(Clone, Copy)]
struct Account {
    uid: libc::uid_t,
    gid: libc::gid_t,
}

/// `None` to run as ourselves; as root, the `postgres` user Debian's package
/// creates, since initdb and postgres refuse to run as root.
fn server_account() -> Option<Account> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let account = lookup_user("postgres");
    assert!(
        account.is_some(),
        "PostgreSQL refuses to run as root and there is no user postgres to run it as: \
         useradd --system postgres, or run the tests as another user"
    );
    account
}

fn lookup_user(name: &str) -> Option<Account> {
    let name = CString::new(name).ok()?;
    // SAFETY: passwd is plain data; all zeroes is a valid value to overwrite.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut strings: Vec<libc::c_char> = vec![0; 16 * 1024];
    let mut found = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call and the buffer's length is
    // passed with it; the reentrant form, since tests run on many threads.
    let rc = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            &mut entry,
            strings.as_mut_ptr(),
            strings.len(),
            &mut found,
        )
    };
    (rc == 0 && !found.is_null()).then_some(Account {
        uid: entry.pw_uid,
        gid: entry.pw_gid,
    })
}

/// Makes `command` run as `account` (all groups dropped), when there is one.
fn run_as(command: &mut Command, account: Option<Account>) {
    let Some(Account { uid, gid }) = account else {
        return;
    };
    // SAFETY: between fork and exec the closure makes only
    // async-signal-safe system calls and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(gid) != 0
                || libc::setuid(uid) != 0
            {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Has the kernel kill `command` when the thread that spawned it ends (so
/// a killed test process takes its servers and hosts along). Set after any
/// change of credentials (as [`run_as`] makes): that clears the setting.
pub fn dies_with_parent_thread(command: &mut Command) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: as in run_as, only async-signal-safe system calls.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::c_ulong::from(libc::SIGKILL.unsigned_abs()),
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died before the setting took effect.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// Spawns `command` from one thread that lives as long as the process. The
/// kernel's parent-death signal follows the spawning *thread*, so a server
/// spawned from a test's thread would die when that test ends.
fn spawn_from_lasting_thread(command: Command) -> io::Result<Child> {
    type Request = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (requests, incoming) = mpsc::channel::<Request>();
        thread::Builder::new()
            .name("postgres-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("starting the thread that spawns PostgreSQL servers");
        requests
    });
    let (reply, answer) = mpsc::channel();
    spawner
        .send((command, reply))
        .expect("the spawner thread lives as long as the process");
    answer.recv().expect("the spawner thread answers")
}

/// A port of 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0 for a free port")
}

/// A new `modhost-pg-<pid>-<n>` in the temp dir, owned by the server's user.
fn make_dir(account: Option<Account>) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let root = std::env::temp_dir();
    let dir = loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{DIR_PREFIX}{}-{n}", std::process::id()));
        match fs::create_dir(&dir) {
            Ok(()) => break dir,
            // Left by an earlier process that had our pid.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("creating {}: {e}", dir.display()),
        }
    };
    if let Some(Account { uid, gid }) = account {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .unwrap_or_else(|e| panic!("handing {} to the postgres user: {e}", dir.display()));
    }
    dir
}

/// Removes the cluster directories under `root` whose process is gone: a
/// killed run cannot remove its own.
fn remove_stale_dirs(root: &Path) {
    let Ok(entries) = fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let owner = entry.file_name().to_str().and_then(owner_pid);
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let (Some(pid), true) = (owner, is_dir)
            && !alive(pid)
        {
            release_shared_memory(&entry.path().join("data"));
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Removes the small System V segment that a killed postmaster of `data`
/// leaves behind (the rest of its shared memory goes with the process),
/// unless something is still attached to it.
fn release_shared_memory(data: &Path) {
    let Ok(pid_file) = fs::read_to_string(data.join("postmaster.pid")) else {
        return;
    };
    // Line 7 of postmaster.pid is `<key> <id>` of the segment.
    let key = pid_file
        .lines()
        .nth(6)
        .and_then(|line| line.split_whitespace().next())
        .and_then(|key| key.parse::<libc::key_t>().ok());
    let Some(key) = key else {
        return;
    };
    // SAFETY: System V calls on integers and a status struct we own; by key,
    // so a reused id of another segment is never removed.
    unsafe {
        let id = libc::shmget(key, 0, 0);
        let mut status: libc::shmid_ds = std::mem::zeroed();
        if id >= 0 && libc::shmctl(id, libc::IPC_STAT, &mut status) == 0 && status.shm_nattch == 0 {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
    }
}

/// The pid in `modhost-pg-<pid>-<n>`.
fn owner_pid(name: &str) -> Option<libc::pid_t> {
    let (pid, n) = name.strip_prefix(DIR_PREFIX)?.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok().filter(|&pid| pid > 0)
}

fn alive(pid: libc::pid_t) -> bool {
    // SAFETY: signal 0 only asks whether the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// The `bin/` with initdb and postgres, installed first where it is missing
/// and we may.
fn binaries() -> PathBuf {
    installed().unwrap_or_else(install)
}

/// The newest Debian version's `bin/`, else the directory of `initdb` on
/// `PATH`: the one place that decides which PostgreSQL the suite runs.
fn installed() -> Option<PathBuf> {
    newest_version(Path::new(DEBIAN_VERSIONS)).or_else(|| {
        let dir = on_path("initdb")?.parent()?.to_path_buf();
        dir.join("postgres").is_file().then_some(dir)
    })
}

/// The `bin/` of the highest version under `root` (laid out like
/// `/usr/lib/postgresql/15/bin`) that has both initdb and postgres.
fn newest_version(root: &Path) -> Option<PathBuf> {
    fs::read_dir(root)
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let version: Vec<u32> = entry
                .file_name()
                .to_str()?
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<_>>()?;
            let bin = entry.path().join("bin");
            let complete = bin.join("initdb").is_file() && bin.join("postgres").is_file();
            complete.then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
}

/// Installs Debian's `postgresql` with apt-get, once across the test
/// processes that find it missing at the same time.
fn install() -> PathBuf {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert!(
        root && on_path("apt-get").is_some(),
        "the PostgreSQL tests need a PostgreSQL server: apt-get install postgresql"
    );
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(INSTALL_LOCK)
        .unwrap_or_else(|e| panic!("opening {INSTALL_LOCK}: {e}"));
    lock.lock()
        .unwrap_or_else(|e| panic!("locking {INSTALL_LOCK}: {e}"));
    // Another process may have installed it while we waited.
    if let Some(bin) = installed() {
        return bin;
    }
    eprintln!("installing postgresql with apt-get for the PostgreSQL tests");
    for args in [
        &["update", "-qq"][..],
        &["install", "-y", "-qq", "postgresql"][..],
    ] {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .status()
            .expect("running apt-get");
        assert!(status.success(), "apt-get {args:?} failed: {status}");
    }
    installed().expect("initdb and postgres after installing postgresql")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_version_with_a_server_is_chosen() {
        let root = tempfile::tempdir().unwrap();
        for (version, programs) in [
            ("9.6", &["initdb", "postgres"][..]),
            ("15", &["initdb", "postgres"][..]),
            ("16", &["initdb"][..]),
            ("common", &["initdb", "postgres"][..]),
        ] {
            let bin = root.path().join(version).join("bin");
            fs::create_dir_all(&bin).unwrap();
            for program in programs {
                fs::write(bin.join(program), "").unwrap();
            }
        }
        assert_eq!(
            newest_version(root.path()),
            Some(root.path().join("15").join("bin"))
        );
    }

    #[test]
    fn only_directories_named_after_a_pid_and_a_number_have_an_owner() {
        assert_eq!(owner_pid("modhost-pg-4242-0"), Some(4242));
        assert_eq!(owner_pid("modhost-pg-install.lock"), None);
        assert_eq!(owner_pid("modhost-pg-0-1"), None);
        assert_eq!(owner_pid("modhost-pg-12-x"), None);
        assert_eq!(owner_pid("other-4242-0"), None);
    }
}
