//! Retention: finished tasks and audit records older than their
//! retention period are deleted, so neither table grows without end.
//!
//! What is enforced: a finished task (completed, failed, cancelled,
//! interrupted) whose `finished_at` is older than [`RetentionOptions::tasks`]
//! is deleted, with everything stored with it; an audit record whose `at` is
//! older than [`RetentionOptions::audit`] is deleted. An active task is never
//! touched. Deletion runs every [`RetentionOptions::every`] in batches of
//! [`PRUNE_BATCH`] rows, each batch one write of the store (through the
//! single writer of the SQLite file, on its thread, never on an async
//! worker), walking an index of the finish or decision time.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use crate::audit::{AuditError, AuditStore};
use crate::db::now_ms;
use crate::tasks::store::{TaskStore, TaskStoreError};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// How long finished tasks are kept by default: a month, so last month's
/// runs, results and failures can still be looked up from the dashboard,
/// while a busy host's table stays bounded by a month of work.
pub const DEFAULT_TASK_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long audit records are kept by default: a quarter. The trail is read
/// after an incident, which is often noticed weeks later; its records are
/// small (fields cut at 16 KiB), so keeping them longer than tasks is cheap.
pub const DEFAULT_AUDIT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// The shortest task retention: a page that started a task reads its
/// result after it finished, and a shorter period could delete it first.
pub const MIN_TASK_RETENTION: Duration = Duration::from_secs(60);

/// The shortest audit retention: a day, longer than any child may run
/// (`[subprocess] timeout-ms` is at most an hour), so a launch is never
/// deleted before its end is recorded. The audit schema refuses deleting a
/// younger record whatever the setting.
pub const MIN_AUDIT_RETENTION: Duration = DAY;

/// Rows one pruning write deletes at most: a few thousand rows keep one
/// transaction in the tens of milliseconds, so the writes queued behind it
/// (submissions, progress, audit records) wait no longer than that.
pub const PRUNE_BATCH: u32 = 2_000;

/// How often pruning runs by default: each pass finds at most ten minutes'
/// worth of newly expired rows, so it is a few batches even on a busy host.
pub const DEFAULT_PRUNE_EVERY: Duration = Duration::from_secs(600);

/// How long rows are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Never deleted.
    Forever,
    /// Deleted once older than this.
    For(Duration),
}

impl Retention {
    /// The time (ms since the epoch) before which rows are deleted at `now`,
    /// or `None` when they are kept forever.
    pub fn cutoff(self, now: i64) -> Option<i64> {
        match self {
            Retention::Forever => None,
            Retention::For(d) => {
                let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
                Some(now.saturating_sub(ms))
            }
        }
    }

    /// This retention, refused if shorter than `min`.
    pub fn at_least(self, min: Duration) -> Result<Self, RetentionError> {
        match self {
            Retention::For(d) if d < min => Err(RetentionError::TooShort {
                given: Retention::For(d).to_string(),
                min: Retention::For(min).to_string(),
            }),
            other => Ok(other),
        }
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Retention::For(d) = self else {
            return f.write_str("forever");
        };
        let secs = d.as_secs();
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
            if secs >= size && secs % size == 0 {
                return write!(f, "{}{unit}", secs / size);
            }
        }
        write!(f, "{secs}s")
    }
}

/// `30d`, `12h`, `90m`, `45s`; `forever` or `0` to keep rows forever.
impl FromStr for Retention {
    type Err = RetentionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || RetentionError::Invalid(crate::text::shown(s));
        if s == "forever" || s == "0" {
            return Ok(Retention::Forever);
        }
        let split = s.find(|c: char| !c.is_ascii_digit()).ok_or_else(invalid)?;
        let (digits, unit) = s.split_at(split);
        let n: u64 = digits.parse().map_err(|_| invalid())?;
        let size = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => return Err(invalid()),
        };
        match n.checked_mul(size) {
            Some(0) | None => Err(invalid()),
            Some(secs) => Ok(Retention::For(Duration::from_secs(secs))),
        }
    }
}

/// How long finished tasks and audit records are kept, and how often the
/// host deletes the expired ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionOptions {
    /// Finished tasks, by `finished_at` (default [`DEFAULT_TASK_RETENTION`],
    /// at least [`MIN_TASK_RETENTION`]).
    pub tasks: Retention,
    /// Audit records, by decision time (default
    /// [`DEFAULT_AUDIT_RETENTION`], at least [`MIN_AUDIT_RETENTION`]).
    pub audit: Retention,
    /// Time between two pruning passes (default [`DEFAULT_PRUNE_EVERY`]).
    pub every: Duration,
}

impl Default for RetentionOptions {
    fn default() -> Self {
        RetentionOptions {
            tasks: Retention::For(DEFAULT_TASK_RETENTION),
            audit: Retention::For(DEFAULT_AUDIT_RETENTION),
            every: DEFAULT_PRUNE_EVERY,
        }
    }
}

impl RetentionOptions {
    /// Refuses periods shorter than their minimum.
    pub fn validate(&self) -> Result<(), RetentionError> {
        self.tasks.at_least(MIN_TASK_RETENTION)?;
        self.audit.at_least(MIN_AUDIT_RETENTION)?;
        Ok(())
    }
}

/// Why a retention was refused or a pruning pass failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RetentionError {
    #[error(
        "retention `{0}` is invalid: write a number and a unit (30d, 12h, 90m, 45s), or forever"
    )]
    Invalid(String),
    #[error("retention {given} is shorter than the minimum of {min}")]
    TooShort { given: String, min: String },
    #[error("pruning finished tasks failed: {0}")]
    Tasks(#[from] TaskStoreError),
    #[error("pruning the audit trail failed: {0}")]
    Audit(#[from] AuditError),
}

/// What one pruning pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub tasks: u64,
    pub audit: u64,
}

/// Deletes what is past its retention at `now`, `batch` rows per write
/// until a write deletes fewer: a backlog of any size is pruned in one pass,
/// without any one transaction holding the writer for long.
pub async fn prune(
    tasks: &dyn TaskStore,
    audit: &dyn AuditStore,
    options: &RetentionOptions,
    now: i64,
    batch: u32,
) -> Result<Pruned, RetentionError> {
    let batch = batch.max(1);
    let mut pruned = Pruned::default();
    if let Some(before) = options.tasks.cutoff(now) {
        loop {
            let n = tasks.prune(before, batch).await?;
            pruned.tasks += n;
            if n < u64::from(batch) {
                break;
            }
        }
    }
    if let Some(before) = options.audit.cutoff(now) {
        loop {
            let n = audit.prune(before, batch).await?;
            pruned.audit += n;
            if n < u64::from(batch) {
                break;
            }
        }
    }
    Ok(pruned)
}

/// [`prune`] now, with [`PRUNE_BATCH`], logging what was deleted.
pub async fn prune_now(
    tasks: &dyn TaskStore,
    audit: &dyn AuditStore,
    options: &RetentionOptions,
) -> Result<Pruned, RetentionError> {
    let pruned = prune(tasks, audit, options, now_ms(), PRUNE_BATCH).await?;
    if pruned != Pruned::default() {
        tracing::info!(
            tasks = pruned.tasks,
            audit_records = pruned.audit,
            task_retention = %options.tasks,
            audit_retention = %options.audit,
            "pruned finished tasks and audit records past their retention"
        );
    }
    Ok(pruned)
}

/// Prunes at once, then every `options.every`, for as long as the stores
/// live: the loop holds them weakly, so dropping the host ends it.
pub fn spawn(
    tasks: &Arc<dyn TaskStore>,
    audit: &Arc<dyn AuditStore>,
    options: RetentionOptions,
) -> tokio::task::JoinHandle<()> {
    let (tasks, audit): (Weak<dyn TaskStore>, Weak<dyn AuditStore>) =
        (Arc::downgrade(tasks), Arc::downgrade(audit));
    let every = options.every.max(Duration::from_secs(1));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let (Some(tasks), Some(audit)) = (tasks.upgrade(), audit.upgrade()) else {
                return;
            };
            if let Err(e) = prune_now(tasks.as_ref(), audit.as_ref(), &options).await {
                tracing::error!(error = %e, "pruning past retention failed; retrying at the next pass");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{self, SqliteAuditStore, decided_at};
    use crate::db::{SqliteFile, SqliteOptions};
    use crate::tasks::store::sqlite::SqliteTaskStore;

    const DAY_MS: i64 = 86_400_000;

    /// Both stores on one file, as the host has them.
    fn stores() -> (Arc<SqliteFile>, SqliteTaskStore, SqliteAuditStore) {
        let schema = [crate::tasks::store::MIGRATION_LIST, audit::MIGRATION_LIST];
        let file = Arc::new(SqliteFile::open_scratch(SqliteOptions::default(), &schema).unwrap());
        let tasks = SqliteTaskStore::on(file.clone()).unwrap();
        let audit = SqliteAuditStore::on(file.clone()).unwrap();
        (file, tasks, audit)
    }

    fn finished_at(conn: &rusqlite::Connection, at: i64) {
        conn.execute(
            "INSERT INTO tasks (id, module, task_name, status, args_json, resumable, user_id, \
             organization_id, role, request_id, created_at, updated_at, finished_at) \
             VALUES (?1, 'm', 'work', 'completed', '{}', 0, 'u', 'o', 'member', 'r', 1, ?2, ?2)",
            rusqlite::params![uuid::Uuid::now_v7().to_string(), at],
        )
        .unwrap();
    }

    #[tokio::test]
    async fn a_backlog_is_pruned_in_one_pass_one_batch_per_write() {
        let (file, tasks, audit) = stores();
        let conn = rusqlite::Connection::open(file.path()).unwrap();
        let now = now_ms();
        for i in 0..25 {
            finished_at(&conn, now - 40 * DAY_MS + i);
        }
        finished_at(&conn, now - 2 * DAY_MS);
        for i in 0..7 {
            audit
                .record(decided_at(now - 100 * DAY_MS + i))
                .await
                .unwrap();
        }
        audit.record(decided_at(now - 2 * DAY_MS)).await.unwrap();
        let before = file.writer.commits();
        let options = RetentionOptions::default();
        let pruned = prune(&tasks, &audit, &options, now, 10).await.unwrap();
        assert_eq!(
            pruned,
            Pruned {
                tasks: 25,
                audit: 7
            }
        );
        // Tasks in writes of 10, 10 and 5; the audit trail's 7 in one.
        assert_eq!(file.writer.commits() - before, 4);
        let left: (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM tasks), (SELECT count(*) FROM audit)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(left, (1, 1), "what is inside its retention stays");
    }

    #[tokio::test]
    async fn forever_deletes_nothing_and_writes_nothing() {
        let (file, tasks, audit) = stores();
        let conn = rusqlite::Connection::open(file.path()).unwrap();
        finished_at(&conn, 1);
        audit.record(decided_at(1)).await.unwrap();
        let before = file.writer.commits();
        let options = RetentionOptions {
            tasks: Retention::Forever,
            audit: Retention::Forever,
            ..RetentionOptions::default()
        };
        let pruned = prune(&tasks, &audit, &options, now_ms(), 10).await.unwrap();
        assert_eq!(pruned, Pruned::default());
        assert_eq!(file.writer.commits(), before);
    }

    #[test]
    fn retentions_are_a_number_and_a_unit_or_forever() {
        let days = |n: u64| Retention::For(Duration::from_secs(n * 86_400));
        assert_eq!("30d".parse::<Retention>().unwrap(), days(30));
        assert_eq!(
            "12h".parse::<Retention>().unwrap(),
            Retention::For(Duration::from_secs(12 * 3600))
        );
        assert_eq!(
            "45s".parse::<Retention>().unwrap(),
            Retention::For(Duration::from_secs(45))
        );
        assert_eq!("forever".parse::<Retention>().unwrap(), Retention::Forever);
        assert_eq!("0".parse::<Retention>().unwrap(), Retention::Forever);
        for bad in [
            "",
            "d",
            "30",
            "30 d",
            "-1d",
            "0d",
            "1w",
            "99999999999999999999d",
            "1.5d",
        ] {
            assert!(bad.parse::<Retention>().is_err(), "{bad:?}");
        }
        assert_eq!(days(90).to_string(), "90d");
        assert_eq!(Retention::For(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(Retention::Forever.to_string(), "forever");
    }

    #[test]
    fn the_defaults_keep_tasks_a_month_and_the_audit_trail_a_quarter() {
        let o = RetentionOptions::default();
        assert_eq!(o.tasks.to_string(), "30d");
        assert_eq!(o.audit.to_string(), "90d");
        o.validate().unwrap();
        assert_eq!(Retention::Forever.cutoff(1_000), None);
        assert_eq!(
            Retention::For(Duration::from_secs(1)).cutoff(5_000),
            Some(4_000)
        );
    }

    #[test]
    fn an_audit_retention_under_a_day_is_refused() {
        let o = RetentionOptions {
            audit: "23h".parse().unwrap(),
            ..RetentionOptions::default()
        };
        let err = o.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "retention 23h is shorter than the minimum of 1d"
        );
        let forever = RetentionOptions {
            tasks: Retention::Forever,
            audit: Retention::Forever,
            ..RetentionOptions::default()
        };
        forever.validate().unwrap();
    }
}
