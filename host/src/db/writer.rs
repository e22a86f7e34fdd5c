//! The single writer of a SQLite file, with group commit; shared by every
//! store on the file.
//!
//! One thread owns the write connection. It takes every queued operation at
//! once, runs them in one transaction, each inside its own savepoint (a failed
//! operation is rolled back alone and does not fail its batch), commits, and
//! only then answers each caller. One fsync is shared by the whole batch, and
//! (with `synchronous=FULL`) no caller ever learns a result that a crash
//! could take back.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;

use rusqlite::{Connection, Statement};
use tokio::sync::{mpsc, oneshot};

/// Why the writer could not run or commit an operation. Each store turns it
/// into its own error (`From<WriteError>`).
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// The database failed; the operation did not take effect.
    #[error("database error: {0}")]
    Sql(Arc<rusqlite::Error>),
    /// The disk is full; the operation did not take effect.
    #[error("the database's disk is full: {0}")]
    Full(Arc<rusqlite::Error>),
    /// The commit was written but the disk failed to sync it: it is not
    /// visible and the next commit writes over it, but had the host died
    /// before that, it might have survived. Read before writing it again.
    #[error("the database's disk failed while syncing a commit: {0}")]
    Uncertain(Arc<rusqlite::Error>),
    /// The writer was shut down.
    #[error("the database writer is closed")]
    Closed,
    /// A bug in an operation (it panicked); it did not take effect.
    #[error("{0}")]
    Internal(String),
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        if is_disk_full(&e) {
            WriteError::Full(Arc::new(e))
        } else {
            WriteError::Sql(Arc::new(e))
        }
    }
}

/// Whether SQLite failed for want of disk space (`SQLITE_FULL`).
pub fn is_disk_full(e: &rusqlite::Error) -> bool {
    e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
}

/// What a failed `COMMIT` means: a failed sync leaves the commit on disk,
/// unsynced ([`WriteError::Uncertain`]); any other failure stopped before
/// its last frame was written.
fn commit_error(e: rusqlite::Error) -> WriteError {
    let unsynced = matches!(
        &e,
        rusqlite::Error::SqliteFailure(f, _)
            if f.extended_code == rusqlite::ffi::SQLITE_IOERR_FSYNC
                || f.extended_code == rusqlite::ffi::SQLITE_IOERR_DIR_FSYNC
    );
    if unsynced {
        WriteError::Uncertain(Arc::new(e))
    } else {
        WriteError::from(e)
    }
}

/// The error SQLite last reported on `conn`, as a `rusqlite` error: for a
/// failure an operation handled itself.
fn last_error(conn: &Connection) -> rusqlite::Error {
    // SAFETY: the handle is only read, on the thread that owns `conn`.
    let code = unsafe { rusqlite::ffi::sqlite3_extended_errcode(conn.handle()) };
    rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(code),
        Some("the database rolled back the transaction".into()),
    )
}

/// The write connection as operations see it: the connection, plus its
/// prepared statements, kept for the life of the writer.
pub struct WriteConn<'c> {
    conn: &'c Connection,
    statements: RefCell<HashMap<SqlKey, Statement<'c>>>,
    /// Why SQLite rolled the batch's transaction back itself, taken as the
    /// operation that caused it failed.
    rolled_back: RefCell<Option<rusqlite::Error>>,
}

/// A statement's text by address and length: the same `&'static str` finds
/// its statement without hashing the whole text.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SqlKey(usize, usize);

impl SqlKey {
    fn of(sql: &'static str) -> Self {
        SqlKey(sql.as_ptr().addr(), sql.len())
    }
}

impl<'c> WriteConn<'c> {
    fn new(conn: &'c Connection) -> Self {
        WriteConn {
            conn,
            statements: RefCell::new(HashMap::new()),
            rolled_back: RefCell::new(None),
        }
    }

    /// The connection, for one-off statements.
    pub fn conn(&self) -> &'c Connection {
        self.conn
    }

    /// Runs one parameterless statement (transaction control), prepared once.
    fn execute(&self, sql: &'static str) -> rusqlite::Result<()> {
        self.prepare(sql)?.execute([]).map(|_| ())
    }

    /// The prepared statement for `sql`, prepared on first use only.
    pub fn prepare(&self, sql: &'static str) -> rusqlite::Result<Cached<'_, 'c>> {
        let key = SqlKey::of(sql);
        let cached = self.statements.borrow_mut().remove(&key);
        let statement = match cached {
            Some(statement) => statement,
            None => self.conn.prepare(sql)?,
        };
        Ok(Cached {
            owner: self,
            key,
            statement: Some(statement),
        })
    }
}

/// A prepared statement on loan from [`WriteConn`]; returned on drop.
pub struct Cached<'w, 'c> {
    owner: &'w WriteConn<'c>,
    key: SqlKey,
    statement: Option<Statement<'c>>,
}

impl<'c> Deref for Cached<'_, 'c> {
    type Target = Statement<'c>;

    fn deref(&self) -> &Statement<'c> {
        self.statement.as_ref().expect("present until drop")
    }
}

impl DerefMut for Cached<'_, '_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.statement.as_mut().expect("present until drop")
    }
}

impl Drop for Cached<'_, '_> {
    fn drop(&mut self) {
        if let Some(statement) = self.statement.take() {
            self.owner
                .statements
                .borrow_mut()
                .insert(self.key, statement);
        }
    }
}

/// One queued write: run inside the batch transaction, answered after it.
trait Op: Send {
    /// Runs the operation inside its own savepoint of the open transaction.
    fn run(&mut self, conn: &WriteConn<'_>);
    /// Answers the caller: the operation's result if `commit` succeeded,
    /// otherwise the commit's error.
    fn answer(self: Box<Self>, commit: Result<(), &WriteError>);
}

struct TypedOp<T, E, F> {
    work: Option<F>,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T, E, F> Op for TypedOp<T, E, F>
where
    T: Send,
    E: From<WriteError> + Send,
    F: FnOnce(&WriteConn<'_>) -> Result<T, E> + Send,
{
    fn run(&mut self, conn: &WriteConn<'_>) {
        if let Some(work) = self.work.take() {
            self.result = Some(in_savepoint(conn, work));
        }
    }

    fn answer(self: Box<Self>, commit: Result<(), &WriteError>) {
        let result = match commit {
            Err(e) => Err(E::from(e.clone())),
            Ok(()) => self.result.unwrap_or_else(|| {
                Err(E::from(WriteError::Internal(
                    "operation was never run".into(),
                )))
            }),
        };
        // The caller may have stopped waiting; the write stands regardless.
        let _ = self.reply.send(result);
    }
}

/// Runs `work` in a savepoint: released on success, rolled back on error or
/// panic, so the rest of the batch is unaffected either way.
fn in_savepoint<T, E: From<WriteError>>(
    w: &WriteConn<'_>,
    work: impl FnOnce(&WriteConn<'_>) -> Result<T, E>,
) -> Result<T, E> {
    let sql = |e: rusqlite::Error| E::from(WriteError::from(e));
    w.execute("SAVEPOINT op").map_err(sql)?;
    let result = catch_unwind(AssertUnwindSafe(|| work(w))).unwrap_or_else(|_| {
        Err(E::from(WriteError::Internal(
            "a database operation panicked".into(),
        )))
    });
    if w.conn.is_autocommit() {
        // SQLite rolled the whole transaction back (a full disk, an I/O
        // error): the savepoint is gone, and so is the batch. Keep why,
        // before another statement's error replaces it.
        w.rolled_back
            .borrow_mut()
            .get_or_insert_with(|| last_error(w.conn));
        return match result {
            Ok(_) => Err(E::from(WriteError::from(last_error(w.conn)))),
            Err(e) => Err(e),
        };
    }
    if result.is_ok() && w.execute("RELEASE op").is_ok() {
        return result;
    }
    w.execute("ROLLBACK TO op").map_err(sql)?;
    w.execute("RELEASE op").map_err(sql)?;
    match result {
        Ok(_) => Err(E::from(WriteError::Internal(
            "could not release an operation's savepoint".into(),
        ))),
        Err(e) => Err(e),
    }
}

/// Handle on the writer thread. Dropping it lets the thread finish what is
/// queued, then waits for it, so the file is closed when the drop returns.
pub struct Writer {
    queue: Option<mpsc::Sender<Box<dyn Op>>>,
    thread: Option<JoinHandle<()>>,
    commits: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread on `conn`. At most `max_batch` operations
    /// share a transaction; at most `queue` wait, then callers wait too.
    pub fn spawn(conn: Connection, max_batch: usize, queue: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let commits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&commits);
        let thread = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || write_loop(&conn, rx, max_batch.max(1), &counted))?;
        Ok(Writer {
            queue: Some(tx),
            thread: Some(thread),
            commits,
        })
    }

    /// Writes waiting for the writer thread.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.queue
            .as_ref()
            .map_or(0, |q| q.max_capacity() - q.capacity())
    }

    /// Transactions committed so far (each holds one batch).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Queues `work` and resolves with its result once its batch committed.
    pub async fn run<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<WriteError> + Send + 'static,
        F: FnOnce(&WriteConn<'_>) -> Result<T, E> + Send + 'static,
    {
        let closed = || E::from(WriteError::Closed);
        let queue = self.queue.as_ref().ok_or_else(closed)?;
        let (reply, answer) = oneshot::channel();
        let op: Box<dyn Op> = Box::new(TypedOp {
            work: Some(work),
            result: None,
            reply,
        });
        queue.send(op).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.queue.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn write_loop(
    conn: &Connection,
    mut rx: mpsc::Receiver<Box<dyn Op>>,
    max_batch: usize,
    commits: &AtomicU64,
) {
    let w = WriteConn::new(conn);
    let mut batch: Vec<Box<dyn Op>> = Vec::with_capacity(max_batch);
    while rx.blocking_recv_many(&mut batch, max_batch) > 0 {
        run_batch(&w, &mut batch, commits);
    }
}

/// Runs every op of `batch` in one transaction and answers them after it;
/// counts the commit before answering.
///
/// SQLite may roll the whole transaction back itself when an operation
/// fails for want of disk space or on an I/O error. The operations before
/// it are then undone too, and the ones after it would run outside the
/// transaction: so the batch stops there, and every caller learns of the
/// failure, none of a result that was taken back.
fn run_batch(w: &WriteConn<'_>, batch: &mut Vec<Box<dyn Op>>, commits: &AtomicU64) {
    let outcome = w
        .execute("BEGIN IMMEDIATE")
        .map_err(WriteError::from)
        .and_then(|()| {
            for op in batch.iter_mut() {
                op.run(w);
                if w.conn.is_autocommit() {
                    let why = w.rolled_back.borrow_mut().take();
                    return Err(WriteError::from(why.unwrap_or_else(|| last_error(w.conn))));
                }
            }
            w.execute("COMMIT").map_err(|e| {
                let _ = w.execute("ROLLBACK");
                commit_error(e)
            })
        });
    if outcome.is_ok() {
        commits.fetch_add(1, Ordering::Relaxed);
    }
    for op in batch.drain(..) {
        op.answer(outcome.as_ref().map(|_| ()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Work = Box<dyn FnOnce(&WriteConn<'_>) -> Result<(), WriteError> + Send>;

    fn writer() -> (tempfile::TempDir, Writer, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER PRIMARY KEY);")
            .unwrap();
        (dir, Writer::spawn(conn, 64, 64).unwrap(), path)
    }

    fn insert(v: i64) -> impl FnOnce(&WriteConn<'_>) -> Result<(), WriteError> + Send {
        move |w| {
            w.conn().execute("INSERT INTO t (v) VALUES (?1)", [v])?;
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_write_of_a_batch_the_database_rolled_back_is_answered_otherwise_than_it_ended() {
        let (_dir, writer, path) = writer();
        let writer = Arc::new(writer);
        // The writer is held inside a first batch while three writes queue
        // for the next; the second of them ends the transaction, as SQLite
        // does itself on a full disk, and fails.
        let (entered, inside) = oneshot::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let hold = tokio::spawn({
            let writer = writer.clone();
            async move {
                writer
                    .run(move |_| -> Result<(), WriteError> {
                        let _ = entered.send(());
                        let _ = released.recv();
                        Ok(())
                    })
                    .await
            }
        });
        inside.await.unwrap();
        let queue = |work: Work| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.run(work).await })
        };
        let first = queue(Box::new(insert(1)));
        let second = queue(Box::new(|w| {
            w.conn().execute_batch("ROLLBACK")?;
            Err(WriteError::Internal("rolled back".into()))
        }));
        let third = queue(Box::new(insert(3)));
        while writer.queued() < 3 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        hold.await.unwrap().unwrap();
        let (first, second, third) = (
            first.await.unwrap(),
            second.await.unwrap(),
            third.await.unwrap(),
        );
        assert!(second.is_err());
        let conn = Connection::open(&path).unwrap();
        let mut s = conn.prepare("SELECT v FROM t ORDER BY v").unwrap();
        let stored: Vec<i64> = s
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        for (v, answer) in [(1, &first), (3, &third)] {
            assert_eq!(
                answer.is_ok(),
                stored.contains(&v),
                "write {v}: answered {answer:?}, stored {stored:?}"
            );
        }
    }
}
