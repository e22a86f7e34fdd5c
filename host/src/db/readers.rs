//! A few query-only connections on one SQLite file; WAL lets them read
//! beside the writer.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, TryLockError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// Bytes of the database file each read connection maps into memory: a
/// lookup then reads index and table pages without a system call per page.
const READ_MMAP_BYTES: i64 = 1 << 30;

/// The read connections of one file.
pub struct ReadPool {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

impl ReadPool {
    /// `n` (at least one) query-only connections on `path`, each waiting at
    /// most `busy_timeout` for a lock.
    pub fn open(path: &Path, n: usize, busy_timeout: Duration) -> rusqlite::Result<Self> {
        let conns = (0..n.max(1))
            .map(|_| {
                let conn = Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                conn.pragma_update(None, "query_only", "ON")?;
                conn.pragma_update(None, "temp_store", "MEMORY")?;
                conn.pragma_update(None, "mmap_size", READ_MMAP_BYTES)?;
                conn.busy_timeout(busy_timeout)?;
                Ok(Mutex::new(conn))
            })
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(ReadPool {
            conns,
            next: AtomicUsize::new(0),
        })
    }

    /// Runs `f` on a free connection, or waits for one.
    pub fn with<T>(&self, f: impl FnOnce(&Connection) -> T) -> T {
        let n = self.conns.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        for i in 0..n {
            match self.conns[(start + i) % n].try_lock() {
                Ok(conn) => return f(&conn),
                Err(TryLockError::Poisoned(p)) => return f(&p.into_inner()),
                Err(TryLockError::WouldBlock) => {}
            }
        }
        let conn = self.conns[start]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        f(&conn)
    }
}
