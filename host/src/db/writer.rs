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
    /// The writer was shut down.
    #[error("the database writer is closed")]
    Closed,
    /// A bug in an operation (it panicked); it did not take effect.
    #[error("{0}")]
    Internal(String),
}

impl From<rusqlite::Error> for WriteError {
    fn from(e: rusqlite::Error) -> Self {
        WriteError::Sql(Arc::new(e))
    }
}

/// The write connection as operations see it: the connection, plus its
/// prepared statements, kept for the life of the writer.
pub struct WriteConn<'c> {
    conn: &'c Connection,
    statements: RefCell<HashMap<SqlKey, Statement<'c>>>,
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
fn run_batch(w: &WriteConn<'_>, batch: &mut Vec<Box<dyn Op>>, commits: &AtomicU64) {
    let outcome = w
        .execute("BEGIN IMMEDIATE")
        .map_err(WriteError::from)
        .and_then(|()| {
            for op in batch.iter_mut() {
                op.run(w);
            }
            w.execute("COMMIT").map_err(|e| {
                let _ = w.execute("ROLLBACK");
                WriteError::from(e)
            })
        });
    if outcome.is_ok() {
        commits.fetch_add(1, Ordering::Relaxed);
    }
    for op in batch.drain(..) {
        op.answer(outcome.as_ref().map(|_| ()));
    }
}
