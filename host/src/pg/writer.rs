//! The group-commit writer of one host on a PostgreSQL database.
//!
//! One task owns one connection. It takes every queued write at once,
//! sends them all in one transaction without waiting for each answer
//! (tokio-postgres pipelines queries issued together), commits once, and
//! only then answers each caller: one round trip and one WAL flush for the
//! whole batch. A write whose statement fails aborts the transaction; the
//! batch is then rolled back and each write run again alone, so one bad
//! write never fails the others. Every write must therefore be safe to run
//! again after a rollback (each is compare-and-set statements in one
//! transaction).
//!
//! Writes of one [`Group`] queued together run as one: the batch's
//! submissions, say, become one multi-row statement rather than one
//! statement each, which is most of what a write costs the server.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ClientWrapper, Pool};
use futures::future::{BoxFuture, join_all};
use tokio::sync::{mpsc, oneshot};

macro_rules! idle_transaction_limit {
    () => {
        "SET LOCAL idle_in_transaction_session_timeout = '10s'"
    };
}

/// Makes PostgreSQL end this session, and so roll back its transaction and
/// release its locks, once the transaction has waited 10 s for the client's
/// next statement. A healthy host sends the statements of one transaction
/// milliseconds apart; a host frozen in the middle of one (its process or
/// machine paused) would otherwise keep the rows it locked for as long as it
/// sleeps: other hosts recover tasks with `SKIP LOCKED`, so they would skip
/// its tasks, and their own writes of those rows would wait.
pub(crate) const IDLE_TRANSACTION_LIMIT: &str = idle_transaction_limit!();

/// Opens a transaction under [`IDLE_TRANSACTION_LIMIT`].
const BEGIN: &str = concat!("BEGIN; ", idle_transaction_limit!());

/// Most writes one transaction holds.
const MAX_BATCH: usize = 512;

/// Writes that may wait for the writer before callers wait too.
const QUEUE: usize = 4096;

/// How long the writer waits before connecting again after losing its
/// connection.
const RECONNECT_AFTER: Duration = Duration::from_millis(500);

/// Why the writer could not run or commit a write.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PgWriteError {
    /// A statement failed; the write did not take effect.
    #[error("database error: {0}")]
    Sql(Arc<tokio_postgres::Error>),
    /// The connection to the server is lost (or could not be made); the
    /// write did not take effect.
    #[error("connection to PostgreSQL lost: {0}")]
    Connection(String),
    /// The connection broke while the write's transaction was committing:
    /// it may or may not have taken effect.
    #[error(
        "connection to PostgreSQL lost while committing (the write may have taken effect): {0}"
    )]
    Uncertain(String),
    /// The writer was shut down.
    #[error("the database writer is closed")]
    Closed,
}

impl From<tokio_postgres::Error> for PgWriteError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() {
            PgWriteError::Connection(e.to_string())
        } else {
            PgWriteError::Sql(Arc::new(e))
        }
    }
}

/// What a write's error says about its transaction.
pub trait Aborts {
    /// Whether the error came from a failed statement, which aborted the
    /// transaction (as opposed to the write's own refusal, which did not).
    fn aborts(&self) -> bool;
}

/// One write: re-runnable, since a failed batch runs it again alone.
/// It gets the writer's connection, whose statements are prepared once.
pub type Work<T, E> =
    Box<dyn for<'c> Fn(&'c ClientWrapper) -> BoxFuture<'c, Result<T, E>> + Send + Sync>;

/// Each write's answer, in order, or the error that aborted the
/// transaction.
pub type Answers<O, E> = Result<Vec<Result<O, E>>, E>;

/// Writes of one kind that run together: the writer hands every write of
/// the group in a batch to one [`Group::run`].
pub trait Group: 'static {
    /// One caller's write.
    type Item: Send + Sync + 'static;
    /// What the caller gets back.
    type Out: Send + 'static;
    /// Why a write failed.
    type Error: From<PgWriteError> + Aborts + Clone + Send + 'static;

    /// Runs `items` on `client` inside the open transaction, answering each
    /// in order. A write of the group that fails alone must not abort the
    /// transaction (run it under a savepoint); `Err` means the transaction
    /// is aborted, and the batch is run again.
    fn run<'c>(
        client: &'c ClientWrapper,
        items: &'c [Self::Item],
    ) -> BoxFuture<'c, Answers<Self::Out, Self::Error>>;
}

trait Op: Send {
    /// Runs the write on `client` inside the open transaction; whether its
    /// failure aborted the transaction.
    fn run<'a>(&'a mut self, client: &'a ClientWrapper) -> BoxFuture<'a, bool>;
    /// Answers the caller: the write's result if `commit` succeeded,
    /// otherwise the commit's error.
    fn answer(self: Box<Self>, commit: Result<(), PgWriteError>);
    /// The group the write runs with, if any.
    fn group(&self) -> Option<TypeId> {
        None
    }
    /// Takes the writes of `other`, of this write's group, into this one.
    fn absorb(&mut self, _other: &mut dyn Op) {}
    fn as_any(&mut self) -> &mut dyn Any;
}

struct TypedOp<T, E> {
    work: Work<T, E>,
    result: Option<Result<T, E>>,
    reply: oneshot::Sender<Result<T, E>>,
}

impl<T: Send + 'static, E: From<PgWriteError> + Aborts + Send + 'static> Op for TypedOp<T, E> {
    fn run<'a>(&'a mut self, client: &'a ClientWrapper) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let result = (self.work)(client).await;
            let aborted = result.as_ref().err().is_some_and(Aborts::aborts);
            self.result = Some(result);
            aborted
        })
    }

    fn answer(self: Box<Self>, commit: Result<(), PgWriteError>) {
        let result = match commit {
            Err(e) => Err(E::from(e)),
            Ok(()) => self
                .result
                .unwrap_or_else(|| Err(E::from(PgWriteError::Closed))),
        };
        // The caller may have stopped waiting; the write stands regardless.
        let _ = self.reply.send(result);
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

type GroupResults<G> = Answers<<G as Group>::Out, <G as Group>::Error>;

/// The writes of one group in a batch, run as one.
struct GroupOp<G: Group> {
    items: Vec<G::Item>,
    replies: Vec<oneshot::Sender<Result<G::Out, G::Error>>>,
    results: Option<GroupResults<G>>,
}

impl<G: Group> Op for GroupOp<G> {
    fn run<'a>(&'a mut self, client: &'a ClientWrapper) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let results = G::run(client, &self.items).await;
            let aborted = results.as_ref().err().is_some_and(Aborts::aborts);
            self.results = Some(results);
            aborted
        })
    }

    fn answer(self: Box<Self>, commit: Result<(), PgWriteError>) {
        let GroupOp {
            replies, results, ..
        } = *self;
        let results: Vec<Result<G::Out, G::Error>> = match (commit, results) {
            (Ok(()), Some(Ok(results))) if results.len() == replies.len() => results,
            (Ok(()), Some(Err(e))) => replies.iter().map(|_| Err(e.clone())).collect(),
            (Ok(()), _) => replies
                .iter()
                .map(|_| Err(G::Error::from(PgWriteError::Closed)))
                .collect(),
            (Err(e), _) => replies
                .iter()
                .map(|_| Err(G::Error::from(e.clone())))
                .collect(),
        };
        for (reply, result) in replies.into_iter().zip(results) {
            let _ = reply.send(result);
        }
    }

    fn group(&self) -> Option<TypeId> {
        Some(TypeId::of::<G>())
    }

    fn absorb(&mut self, other: &mut dyn Op) {
        if let Some(other) = other.as_any().downcast_mut::<GroupOp<G>>() {
            self.items.append(&mut other.items);
            self.replies.append(&mut other.replies);
        }
    }

    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
}

/// `batch` with the writes of each group taken into the group's first, and
/// the groups after the other writes: a group's last statements take the
/// locks other hosts wait for (counters), which are then held the shortest
/// time before the commit.
fn merge_groups(batch: &mut Vec<Box<dyn Op>>) {
    let mut at: HashMap<TypeId, usize> = HashMap::new();
    let mut groups: Vec<Box<dyn Op>> = Vec::new();
    let mut merged: Vec<Box<dyn Op>> = Vec::with_capacity(batch.len());
    for mut op in batch.drain(..) {
        match op.group() {
            Some(group) => match at.get(&group) {
                Some(&i) => groups[i].absorb(&mut *op),
                None => {
                    at.insert(group, groups.len());
                    groups.push(op);
                }
            },
            None => merged.push(op),
        }
    }
    merged.append(&mut groups);
    *batch = merged;
}

/// Handle on the writer task. Dropping it lets the task finish what is
/// queued.
pub struct PgWriter {
    queue: mpsc::Sender<Box<dyn Op>>,
}

impl std::fmt::Debug for PgWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgWriter").finish_non_exhaustive()
    }
}

impl PgWriter {
    /// Starts the writer task on `pool` (of one connection: the writer's),
    /// failing now if the server does not answer.
    pub async fn spawn(pool: Pool) -> Result<Self, deadpool_postgres::PoolError> {
        drop(pool.get().await?);
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write_loop(pool, rx));
        Ok(PgWriter { queue: tx })
    }

    /// Queues `work` and resolves with its result once its batch committed.
    pub async fn run<T, E>(&self, work: Work<T, E>) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<PgWriteError> + Aborts + Send + 'static,
    {
        let closed = || E::from(PgWriteError::Closed);
        let (reply, answer) = oneshot::channel();
        let op: Box<dyn Op> = Box::new(TypedOp {
            work,
            result: None,
            reply,
        });
        self.queue.send(op).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }

    /// Queues `item` of group `G`, to run with the group's other writes of
    /// its batch, and resolves with its result once the batch committed.
    pub async fn run_in<G: Group>(&self, item: G::Item) -> Result<G::Out, G::Error> {
        let closed = || G::Error::from(PgWriteError::Closed);
        let (reply, answer) = oneshot::channel();
        let op: Box<dyn Op> = Box::new(GroupOp::<G> {
            items: vec![item],
            replies: vec![reply],
            results: None,
        });
        self.queue.send(op).await.map_err(|_| closed())?;
        answer.await.map_err(|_| closed())?
    }
}

async fn write_loop(pool: Pool, mut rx: mpsc::Receiver<Box<dyn Op>>) {
    let mut batch: Vec<Box<dyn Op>> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        merge_groups(&mut batch);
        // A pooled connection may have broken unnoticed (the server
        // restarted): nothing of the batch has been sent when BEGIN fails,
        // so it is tried once more on a new connection.
        let mut failed = None;
        for _ in 0..2 {
            // The pool hands back the connection, or a new one for a broken one.
            match pool.get().await {
                Ok(client) => match run_batch(&client, &mut batch).await {
                    Ok(()) => {
                        failed = None;
                        break;
                    }
                    Err(e) => failed = Some(e),
                },
                Err(e) => {
                    failed = Some(PgWriteError::Connection(e.to_string()));
                    break;
                }
            }
        }
        if let Some(e) = failed {
            tracing::error!(error = %e, "the database writer cannot reach the database");
            for op in batch.drain(..) {
                op.answer(Err(e.clone()));
            }
            tokio::time::sleep(RECONNECT_AFTER).await;
        }
    }
}

/// Runs `batch` in one transaction and answers it; after a failed
/// statement, rolls back and runs each write alone. `Err` (the batch left
/// unanswered) when the transaction could not even begin.
async fn run_batch(
    client: &ClientWrapper,
    batch: &mut Vec<Box<dyn Op>>,
) -> Result<(), PgWriteError> {
    // The writes that are no group's run together, pipelined behind BEGIN;
    // then each group alone (a group's savepoint must not be taken in the
    // middle of another write's statements, which its rollback would undo).
    // With no other writes, the first group goes behind BEGIN instead.
    let plain = batch
        .iter()
        .position(|op| op.group().is_some())
        .unwrap_or(batch.len())
        .max(1)
        .min(batch.len());
    let (first, groups) = batch.split_at_mut(plain);
    let (begun, first) = futures::join!(
        client.batch_execute(BEGIN),
        join_all(first.iter_mut().map(|op| op.run(client)))
    );
    // BEGIN fails only with its connection, and the writes behind it with
    // it: nothing took effect.
    begun?;
    let together = async {
        let mut aborted = first.into_iter().any(|a| a);
        for op in groups.iter_mut() {
            if aborted {
                break;
            }
            aborted = op.run(client).await;
        }
        if aborted {
            client.batch_execute("ROLLBACK").await?;
            return Ok::<bool, PgWriteError>(false);
        }
        client.batch_execute("COMMIT").await.map_err(uncertain)?;
        Ok(true)
    }
    .await;
    match together {
        Ok(true) => {
            for op in batch.drain(..) {
                op.answer(Ok(()));
            }
        }
        Ok(false) => {
            for mut op in batch.drain(..) {
                let alone = async {
                    client.batch_execute(BEGIN).await?;
                    let aborted = op.run(client).await;
                    if aborted {
                        client.batch_execute("ROLLBACK").await?;
                    } else {
                        client.batch_execute("COMMIT").await.map_err(uncertain)?;
                    }
                    Ok::<(), PgWriteError>(())
                }
                .await;
                op.answer(alone);
            }
        }
        Err(e) => {
            if !client.is_closed() {
                let _ = client.batch_execute("ROLLBACK").await;
            }
            for op in batch.drain(..) {
                op.answer(Err(e.clone()));
            }
        }
    }
    Ok(())
}

/// A COMMIT whose connection broke: the server may have committed it.
fn uncertain(e: tokio_postgres::Error) -> PgWriteError {
    if e.is_closed() {
        PgWriteError::Uncertain(e.to_string())
    } else {
        PgWriteError::from(e)
    }
}
