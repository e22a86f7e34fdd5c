//! Statements on the writer's connection, prepared once, and the fence
//! that tells a lost lease from a final task.

use deadpool_postgres::ClientWrapper;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::tasks::store::{Lease, TaskStoreError};

/// Locks the row until the write's transaction ends: what the write
/// does next cannot race a recovery or another host's claim.
const FENCE: &str =
    "SELECT lease_version FROM tasks WHERE id = $1 AND finished_at IS NULL FOR UPDATE";

/// Runs `sql` on the writer's connection, prepared once.
pub(super) async fn exec(
    c: &ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<u64, TaskStoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.execute(&statement, params).await?)
}

pub(super) async fn select(
    c: &ClientWrapper,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, TaskStoreError> {
    let statement = c.prepare_cached(sql).await?;
    Ok(c.query(&statement, params).await?)
}

/// Why a fenced write changed nothing: the lease is no longer the active
/// task's ([`TaskStoreError::LeaseLost`]), or the task is final or missing.
pub(super) async fn fence(c: &ClientWrapper, lease: &Lease) -> Result<(), TaskStoreError> {
    let current = select(c, FENCE, &[&lease.task_id]).await?;
    match current
        .first()
        .map(|r| r.try_get::<_, i64>(0))
        .transpose()?
    {
        Some(v) if v != lease.version => Err(TaskStoreError::LeaseLost {
            task_id: lease.task_id.clone(),
        }),
        _ => Ok(()),
    }
}
