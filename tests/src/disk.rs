//! A disk that fails when told: SQLite's own file layer with I/O errors
//! injected, for tests of what the host does when its database cannot
//! write (a full disk, a failing one).
//!
//! [`Disk::under`] puts a shim in front of SQLite's default file layer
//! (its "VFS") of this process, once, and makes it the default, so every
//! database the host opens afterwards goes through it. The shim passes
//! every call on unchanged, except for files under a directory a
//! [`Disk`] was told to fail: their writes and syncs fail as a full
//! (`ENOSPC`) or broken (`EIO`) disk makes SQLite's own layer fail, at
//! the place asked for ([`At`]).
//!
//! In WAL mode a commit writes and syncs the `-wal` file and nothing
//! else; a checkpoint copies it into the database file. So failing the
//! `-wal` file fails commits, and failing the database file fails
//! checkpoints only.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use rusqlite::ffi;

/// Where the disk fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// Writes of the `-wal` file: every commit fails before its last
    /// frame is written.
    Commit,
    /// Syncs of the `-wal` file: every commit is written, but fails
    /// before it is known to be on disk.
    CommitSync,
    /// Writes, syncs and truncations of the database file: checkpoints.
    Checkpoint,
    /// Opening the database file or its `-wal` file.
    Open,
}

/// How the disk fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Errno {
    /// No space left: SQLite's layer answers `SQLITE_FULL` to a write.
    Enospc,
    /// An I/O error: `SQLITE_IOERR_WRITE` to a write.
    Eio,
}

/// One fault: files under `dir`, at `at`, fail with `errno` — for the next
/// `left` calls, or until healed.
struct Rule {
    dir: PathBuf,
    at: At,
    errno: Errno,
    left: Option<u32>,
}

/// The faults of every [`Disk`] of the process, and how many calls each
/// directory had failed.
static RULES: Mutex<Vec<Rule>> = Mutex::new(Vec::new());
static HITS: Mutex<Vec<(PathBuf, u64)>> = Mutex::new(Vec::new());

/// The files under one directory, failing when told.
#[derive(Debug)]
pub struct Disk {
    dir: PathBuf,
}

impl Disk {
    /// The files under `dir` (a test's own directory). Installs the shim
    /// as the process's default file layer on first use.
    pub fn under(dir: &Path) -> Disk {
        install();
        Disk {
            dir: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned()),
        }
    }

    /// Every call at `at` fails with `errno` until [`Disk::heal`].
    pub fn fail(&self, at: At, errno: Errno) {
        self.add(at, errno, None);
    }

    /// The next `times` calls at `at` fail with `errno`.
    pub fn fail_times(&self, at: At, errno: Errno, times: u32) {
        if times > 0 {
            self.add(at, errno, Some(times));
        }
    }

    fn add(&self, at: At, errno: Errno, left: Option<u32>) {
        rules().push(Rule {
            dir: self.dir.clone(),
            at,
            errno,
            left,
        });
    }

    /// The disk works again: space came back, the fault cleared.
    pub fn heal(&self) {
        rules().retain(|r| r.dir != self.dir);
    }

    /// Calls failed so far under this directory.
    pub fn failed(&self) -> u64 {
        hits()
            .iter()
            .find(|(d, _)| *d == self.dir)
            .map_or(0, |(_, n)| *n)
    }
}

impl Drop for Disk {
    fn drop(&mut self) {
        self.heal();
    }
}

fn rules() -> std::sync::MutexGuard<'static, Vec<Rule>> {
    RULES.lock().unwrap_or_else(|p| p.into_inner())
}

fn hits() -> std::sync::MutexGuard<'static, Vec<(PathBuf, u64)>> {
    HITS.lock().unwrap_or_else(|p| p.into_inner())
}

/// The fault a call at `at` on `path` gets now, if any (and counts it).
fn fault(path: Option<&Path>, at: At) -> Option<Errno> {
    let path = path?;
    let mut rules = rules();
    let i = rules
        .iter()
        .position(|r| r.at == at && path.starts_with(&r.dir))?;
    let rule = &mut rules[i];
    let errno = rule.errno;
    let dir = rule.dir.clone();
    if let Some(left) = &mut rule.left {
        *left -= 1;
        if *left == 0 {
            rules.remove(i);
        }
    }
    drop(rules);
    let mut hits = hits();
    match hits.iter_mut().find(|(d, _)| *d == dir) {
        Some((_, n)) => *n += 1,
        None => hits.push((dir, 1)),
    }
    Some(errno)
}

/// What kind of file a handle is, for [`At`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Database,
    Wal,
    Other,
}

impl Kind {
    fn of(flags: c_int) -> Kind {
        if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
            Kind::Database
        } else if flags & ffi::SQLITE_OPEN_WAL != 0 {
            Kind::Wal
        } else {
            Kind::Other
        }
    }

    /// Where a write of this kind of file happens.
    fn writes_at(self) -> Option<At> {
        match self {
            Kind::Database => Some(At::Checkpoint),
            Kind::Wal => Some(At::Commit),
            Kind::Other => None,
        }
    }

    /// Where a sync of this kind of file happens.
    fn syncs_at(self) -> Option<At> {
        match self {
            Kind::Wal => Some(At::CommitSync),
            other => other.writes_at(),
        }
    }
}

/// The shim's file: SQLite's handle header, what the shim knows of the
/// file, then the default layer's own handle.
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    kind: Kind,
    /// Owned (`Box`), freed by `close`; null for a file without a name.
    path: *mut PathBuf,
    real: *mut ffi::sqlite3_file,
}

impl File {
    /// # Safety
    /// `f` is a handle the shim opened.
    unsafe fn of<'a>(f: *mut ffi::sqlite3_file) -> &'a File {
        unsafe { &*f.cast::<File>() }
    }

    fn path(&self) -> Option<&Path> {
        // SAFETY: set by `open` and freed only by `close`.
        unsafe { self.path.as_ref() }.map(PathBuf::as_path)
    }

    fn methods(&self) -> &ffi::sqlite3_io_methods {
        // SAFETY: the default layer's methods for an open handle.
        unsafe { &*(*self.real).pMethods }
    }

    /// The fault a write of this file gets now.
    fn write_fault(&self) -> Option<Errno> {
        fault(self.path(), self.kind.writes_at()?)
    }

    /// The fault a sync of this file gets now.
    fn sync_fault(&self) -> Option<Errno> {
        fault(self.path(), self.kind.syncs_at()?)
    }
}

/// The default layer this shim passes calls to.
struct Real(*mut ffi::sqlite3_vfs);
// SAFETY: SQLite's VFS objects are immutable once registered.
unsafe impl Send for Real {}
unsafe impl Sync for Real {}

static REAL: std::sync::OnceLock<Real> = std::sync::OnceLock::new();

fn real() -> *mut ffi::sqlite3_vfs {
    REAL.get().expect("installed").0
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: the default VFS exists once SQLite is initialized, and a
        // registered VFS is never freed (the copy is leaked on purpose).
        unsafe {
            assert_eq!(ffi::sqlite3_initialize(), ffi::SQLITE_OK);
            let default = ffi::sqlite3_vfs_find(std::ptr::null());
            assert!(!default.is_null(), "SQLite has a default VFS");
            let _ = REAL.set(Real(default));
            let mut shim: ffi::sqlite3_vfs = std::ptr::read(default);
            shim.zName = c"modhost-faulty-disk".as_ptr();
            shim.szOsFile =
                c_int::try_from(std::mem::size_of::<File>()).expect("small") + (*default).szOsFile;
            shim.xOpen = Some(open);
            shim.pNext = std::ptr::null_mut();
            let shim = Box::leak(Box::new(shim));
            assert_eq!(ffi::sqlite3_vfs_register(shim, 1), ffi::SQLITE_OK);
        }
    });
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let kind = Kind::of(flags);
    let path = (!name.is_null())
        // SAFETY: SQLite passes a NUL-terminated name.
        .then(|| {
            PathBuf::from(
                unsafe { CStr::from_ptr(name as *const c_char) }
                    .to_string_lossy()
                    .into_owned(),
            )
        });
    let shim = file.cast::<File>();
    // SAFETY: SQLite allocated `szOsFile` bytes at `file`: the shim's
    // header, then room for the default layer's handle.
    unsafe {
        (*shim).base.pMethods = std::ptr::null();
        if kind != Kind::Other && fault(path.as_deref(), At::Open).is_some() {
            return ffi::SQLITE_CANTOPEN;
        }
        let real_file = file
            .cast::<u8>()
            .add(std::mem::size_of::<File>())
            .cast::<ffi::sqlite3_file>();
        let vfs = real();
        let rc = ((*vfs).xOpen.expect("xOpen"))(vfs, name, real_file, flags, out_flags);
        if rc != ffi::SQLITE_OK || (*real_file).pMethods.is_null() {
            return rc;
        }
        std::ptr::write(
            shim,
            File {
                base: ffi::sqlite3_file { pMethods: &METHODS },
                kind,
                path: path.map_or(std::ptr::null_mut(), |p| Box::into_raw(Box::new(p))),
                real: real_file,
            },
        );
        rc
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

/// Calls the default layer's method `$m` of the handle `$f` with `$args`.
macro_rules! pass {
    ($f:expr, $m:ident $(, $arg:expr)*) => {{
        // SAFETY: `$f` is a handle the shim opened, so its `real` handle is
        // open; the default layer has every method of version 3.
        let file = unsafe { File::of($f) };
        unsafe { (file.methods().$m.expect(stringify!($m)))(file.real $(, $arg)*) }
    }};
}

unsafe extern "C" fn close(f: *mut ffi::sqlite3_file) -> c_int {
    let rc = pass!(f, xClose);
    // SAFETY: the path was boxed by `open`; the handle is closed now.
    unsafe {
        let file = f.cast::<File>();
        if !(*file).path.is_null() {
            drop(Box::from_raw((*file).path));
            (*file).path = std::ptr::null_mut();
        }
    }
    rc
}

unsafe extern "C" fn read(f: *mut ffi::sqlite3_file, buf: *mut c_void, n: c_int, at: i64) -> c_int {
    pass!(f, xRead, buf, n, at)
}

unsafe extern "C" fn write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    n: c_int,
    at: i64,
) -> c_int {
    // SAFETY: a handle the shim opened.
    match unsafe { File::of(f) }.write_fault() {
        Some(Errno::Enospc) => ffi::SQLITE_FULL,
        Some(Errno::Eio) => ffi::SQLITE_IOERR_WRITE,
        None => pass!(f, xWrite, buf, n, at),
    }
}

unsafe extern "C" fn truncate(f: *mut ffi::sqlite3_file, size: i64) -> c_int {
    // SAFETY: a handle the shim opened.
    match unsafe { File::of(f) }.write_fault() {
        Some(_) => ffi::SQLITE_IOERR_TRUNCATE,
        None => pass!(f, xTruncate, size),
    }
}

unsafe extern "C" fn sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    // SAFETY: a handle the shim opened.
    match unsafe { File::of(f) }.sync_fault() {
        // The default layer answers this to any failed fsync.
        Some(_) => ffi::SQLITE_IOERR_FSYNC,
        None => pass!(f, xSync, flags),
    }
}

unsafe extern "C" fn file_size(f: *mut ffi::sqlite3_file, size: *mut i64) -> c_int {
    pass!(f, xFileSize, size)
}

unsafe extern "C" fn lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    pass!(f, xLock, level)
}

unsafe extern "C" fn unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    pass!(f, xUnlock, level)
}

unsafe extern "C" fn check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    pass!(f, xCheckReservedLock, out)
}

unsafe extern "C" fn file_control(f: *mut ffi::sqlite3_file, op: c_int, arg: *mut c_void) -> c_int {
    pass!(f, xFileControl, op, arg)
}

unsafe extern "C" fn sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    pass!(f, xSectorSize)
}

unsafe extern "C" fn device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    pass!(f, xDeviceCharacteristics)
}

unsafe extern "C" fn shm_map(
    f: *mut ffi::sqlite3_file,
    page: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    pass!(f, xShmMap, page, size, extend, out)
}

unsafe extern "C" fn shm_lock(
    f: *mut ffi::sqlite3_file,
    at: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    pass!(f, xShmLock, at, n, flags)
}

unsafe extern "C" fn shm_barrier(f: *mut ffi::sqlite3_file) {
    pass!(f, xShmBarrier)
}

unsafe extern "C" fn shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    pass!(f, xShmUnmap, delete)
}

unsafe extern "C" fn fetch(
    f: *mut ffi::sqlite3_file,
    at: i64,
    n: c_int,
    out: *mut *mut c_void,
) -> c_int {
    pass!(f, xFetch, at, n, out)
}

unsafe extern "C" fn unfetch(f: *mut ffi::sqlite3_file, at: i64, p: *mut c_void) -> c_int {
    pass!(f, xUnfetch, at, p)
}
