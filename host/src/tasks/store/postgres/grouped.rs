//! The writes a batch holds many of, each kind run as a few set-based
//! statements for all of them ([`Group`]): submissions, and ends of runs.
//! A statement's cost on the server is mostly its own, not its rows', so a
//! batch of 200 submissions costs a few statements rather than 200 function
//! calls of five statements each.
//!
//! A group runs under a savepoint. When one of its statements fails (a
//! duplicate id, say), the savepoint is rolled back and each write is run
//! alone under one of its own, so a bad write fails only itself and never
//! aborts the batch's transaction.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use deadpool_postgres::ClientWrapper;
use futures::future::BoxFuture;
use tokio_postgres::types::ToSql;

use super::statement::{exec, fence, select};
use crate::pg::writer::{Answers, Group};
use crate::tasks::store::{Lease, NewTask, QuotaReached, Submitted, TaskStoreError};

mod sql {
    /// Locks and reads the counters of the organizations `$1`, in key order:
    /// until the transaction ends, no other host's submission of them
    /// passes its quota check.
    pub const LOCK_ORGS: &str = "INSERT INTO task_active_per_org AS c (organization_id, active) \
        SELECT k.o, 0 FROM unnest($1::TEXT[]) AS k(o) ORDER BY 1 \
        ON CONFLICT (organization_id) DO UPDATE SET active = c.active \
        RETURNING c.organization_id, c.active";

    pub const LOCK_MODULES: &str = "INSERT INTO task_active_per_module_org AS c \
        (module, organization_id, active) \
        SELECT k.m, k.o, 0 FROM unnest($1::TEXT[], $2::TEXT[]) AS k(m, o) ORDER BY 1, 2 \
        ON CONFLICT (module, organization_id) DO UPDATE SET active = c.active \
        RETURNING c.module, c.organization_id, c.active";

    pub const LOCK_USERS: &str = "INSERT INTO task_active_per_user AS c \
        (module, organization_id, user_id, active) \
        SELECT k.m, k.o, k.u, 0 FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) AS k(m, o, u) \
        ORDER BY 1, 2, 3 \
        ON CONFLICT (module, organization_id, user_id) DO UPDATE SET active = c.active \
        RETURNING c.module, c.organization_id, c.user_id, c.active";

    pub const READ_ORGS: &str = "SELECT k.o, coalesce(c.active, 0) FROM unnest($1::TEXT[]) AS k(o) \
        LEFT JOIN task_active_per_org c ON c.organization_id = k.o";

    pub const READ_MODULES: &str = "SELECT k.m, k.o, coalesce(c.active, 0) \
        FROM unnest($1::TEXT[], $2::TEXT[]) AS k(m, o) \
        LEFT JOIN task_active_per_module_org c ON c.module = k.m AND c.organization_id = k.o";

    pub const READ_USERS: &str = "SELECT k.m, k.o, k.u, coalesce(c.active, 0) \
        FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) AS k(m, o, u) \
        LEFT JOIN task_active_per_user c \
        ON c.module = k.m AND c.organization_id = k.o AND c.user_id = k.u";

    /// Adds `$2[i]` to the counter of organization `$1[i]`, in key order;
    /// the new counts.
    pub const ADD_ORGS: &str = "INSERT INTO task_active_per_org AS c (organization_id, active) \
        SELECT k.o, k.n FROM unnest($1::TEXT[], $2::BIGINT[]) AS k(o, n) ORDER BY 1 \
        ON CONFLICT (organization_id) DO UPDATE SET active = c.active + EXCLUDED.active \
        RETURNING c.organization_id, c.active";

    pub const ADD_MODULES: &str = "INSERT INTO task_active_per_module_org AS c \
        (module, organization_id, active) \
        SELECT k.m, k.o, k.n FROM unnest($1::TEXT[], $2::TEXT[], $3::BIGINT[]) AS k(m, o, n) \
        ORDER BY 1, 2 \
        ON CONFLICT (module, organization_id) DO UPDATE SET active = c.active + EXCLUDED.active \
        RETURNING c.module, c.organization_id, c.active";

    pub const ADD_USERS: &str = "INSERT INTO task_active_per_user AS c \
        (module, organization_id, user_id, active) \
        SELECT k.m, k.o, k.u, k.n \
        FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[]) AS k(m, o, u, n) \
        ORDER BY 1, 2, 3 \
        ON CONFLICT (module, organization_id, user_id) \
        DO UPDATE SET active = c.active + EXCLUDED.active \
        RETURNING c.module, c.organization_id, c.user_id, c.active";

    /// The active tasks holding the keys `($1[i], $2[i], $3[i])`, read
    /// after the counters are locked: a key taken since is committed.
    pub const ACTIVE_KEYS: &str = "SELECT t.module, t.organization_id, t.task_key, t.id \
        FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[]) AS k(m, o, key) \
        JOIN tasks t ON t.module = k.m AND t.organization_id = k.o AND t.task_key = k.key \
        WHERE t.task_key IS NOT NULL AND t.finished_at IS NULL";

    pub const INSERT: &str = "INSERT INTO tasks (id, module, task_name, task_key, title, status, \
        args_json, resumable, user_id, organization_id, role, request_id, session_id, \
        created_at, updated_at) \
        SELECT n.id, n.module, n.task_name, n.task_key, n.title, 'pending', n.args_json, \
        n.resumable, n.user_id, n.organization_id, n.role, n.request_id, n.session_id, \
        n.created_at, n.created_at \
        FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::TEXT[], \
        $7::BOOLEAN[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::TEXT[], \
        $13::BIGINT[]) AS n(id, module, task_name, task_key, title, args_json, resumable, \
        user_id, organization_id, role, request_id, session_id, created_at) \
        ON CONFLICT (module, organization_id, task_key) \
        WHERE task_key IS NOT NULL AND finished_at IS NULL DO NOTHING";

    /// Tells every host, at commit, that the modules `$1` have new pending
    /// tasks.
    pub const ANNOUNCE: &str = "SELECT pg_notify('modhost_pending', d.m) \
        FROM (SELECT DISTINCT unnest($1::TEXT[])) AS d(m)";

    /// Ends the active tasks `$1[i]` under lease version `$6[i]` (none: any)
    /// and uncounts them; the ids it ended.
    pub const FINISH: &str = "WITH f AS (SELECT * FROM unnest($1::TEXT[], $2::TEXT[], \
        $3::TEXT[], $4::TEXT[], $5::TEXT[], $6::BIGINT[]) \
        AS f(id, status, result, kind, message, version)), \
        done AS (UPDATE tasks t SET status = f.status, result_json = f.result, \
        failure_kind = f.kind, failure_message = f.message, finished_at = now.ms, \
        updated_at = now.ms, \
        progress = CASE WHEN f.status = 'completed' THEN 1.0 ELSE t.progress END, \
        lease_owner = NULL, lease_expires_at = NULL \
        FROM f, (SELECT modhost_now() AS ms) AS now \
        WHERE t.id = f.id AND (f.version IS NULL OR t.lease_version = f.version) \
        AND t.finished_at IS NULL \
        RETURNING t.id, t.module, t.organization_id, t.user_id), \
        ended AS (SELECT array_agg(id) AS ids, array_agg(module) AS m, \
        array_agg(organization_id) AS o, array_agg(user_id) AS u FROM done) \
        SELECT ended.ids FROM ended, LATERAL modhost_count_many(ended.m, ended.o, ended.u, -1)";

    pub const SAVEPOINT: &str = "SAVEPOINT grouped";
    pub const ROLLBACK: &str = "ROLLBACK TO SAVEPOINT grouped";
}

/// A set-based write of many items: one answer per item, in order, or the
/// error of a statement.
type Many<'a, O> = BoxFuture<'a, Answers<O, TaskStoreError>>;

/// Runs `all` for `items` under a savepoint; when a statement of it fails,
/// rolls it back and runs each item alone, under a savepoint of its own.
/// `Err` when the transaction is lost (the connection broke) or must be
/// rolled back whole (a wait on other transactions' locks was ended).
async fn together_or_alone<I, O>(
    c: &ClientWrapper,
    items: &[I],
    all: for<'a> fn(&'a ClientWrapper, &'a [I]) -> Many<'a, O>,
) -> Answers<O, TaskStoreError> {
    match attempt(c, items, all).await? {
        Ok(done) => return Ok(done),
        Err(e) if items.len() == 1 => return Ok(vec![Err(e)]),
        Err(_) => {}
    }
    let mut answers = Vec::with_capacity(items.len());
    for item in items {
        answers.push(match attempt(c, std::slice::from_ref(item), all).await? {
            Ok(mut one) => one.pop().unwrap_or_else(|| {
                Err(TaskStoreError::Internal(
                    "a grouped write answered nothing".into(),
                ))
            }),
            Err(e) => Err(e),
        });
    }
    Ok(answers)
}

/// Runs `all` for `items` under a savepoint (sent with its first
/// statements), rolled back when a statement of it fails: `Ok(Err)` then.
/// `Err` when the savepoint itself failed. A savepoint that is not rolled
/// back is left to the commit: releasing it would cost a round trip.
async fn attempt<I, O>(
    c: &ClientWrapper,
    items: &[I],
    all: for<'a> fn(&'a ClientWrapper, &'a [I]) -> Many<'a, O>,
) -> Result<Answers<O, TaskStoreError>, TaskStoreError> {
    let (saved, done) = futures::join!(exec(c, sql::SAVEPOINT, &[]), all(c, items));
    saved?;
    match done {
        Ok(done) => Ok(Ok(done)),
        // Tried again in this transaction, the write would wait again for
        // the locks the transaction's earlier writes hold: the whole batch
        // is rolled back instead, and each write run again alone.
        Err(e) if waits_on_others(&e) => Err(e),
        Err(e) => {
            exec(c, sql::ROLLBACK, &[]).await?;
            Ok(Err(e))
        }
    }
}

/// Whether `e` is PostgreSQL ending a wait for other transactions' locks: a
/// deadlock, a serialization failure or a lock not to be had.
fn waits_on_others(e: &TaskStoreError) -> bool {
    use tokio_postgres::error::SqlState;
    let TaskStoreError::Backend(e) = e else {
        return false;
    };
    e.downcast_ref::<tokio_postgres::Error>()
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| {
            [
                SqlState::T_R_DEADLOCK_DETECTED,
                SqlState::T_R_SERIALIZATION_FAILURE,
                SqlState::LOCK_NOT_AVAILABLE,
            ]
            .contains(code)
        })
}

/// Submissions, already checked ([`super::validate_task_id`]).
///
/// A group is first decided on the counters as they are, unlocked, and
/// counted after its tasks are stored: the counters' row locks are then
/// held only from the counting to the commit, so other hosts' submissions
/// of the same organization store their tasks meanwhile. When the counts
/// had moved so far that a created task would not have passed its quota,
/// or another host took a key first, the group is rolled back and decided
/// again on counters locked before they are read.
pub(super) struct Submits;

impl Group for Submits {
    type Item = NewTask;
    type Out = Submitted;
    type Error = TaskStoreError;

    fn run<'c>(c: &'c ClientWrapper, items: &'c [NewTask]) -> Many<'c, Submitted> {
        Box::pin(async move {
            match attempt(c, items, submit_unlocked).await? {
                Ok(done) => Ok(done),
                Err(_) => together_or_alone(c, items, submit_locked).await,
            }
        })
    }
}

fn submit_unlocked<'a>(c: &'a ClientWrapper, tasks: &'a [NewTask]) -> Many<'a, Submitted> {
    Box::pin(submit_all(c, tasks, false))
}

fn submit_locked<'a>(c: &'a ClientWrapper, tasks: &'a [NewTask]) -> Many<'a, Submitted> {
    Box::pin(submit_all(c, tasks, true))
}

/// A counter: of an organization, a module in it, or a user of one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Counter {
    Org(String),
    Module(String, String),
    User(String, String, String),
}

impl Counter {
    /// The three counters a task of `t` counts in.
    fn of(t: &NewTask) -> [Counter; 3] {
        let (m, o, u) = (&t.module, &t.organization_id, &t.user_id);
        [
            Counter::User(m.clone(), o.clone(), u.clone()),
            Counter::Module(m.clone(), o.clone()),
            Counter::Org(o.clone()),
        ]
    }

    /// The most of `t`'s quota this counter may hold before it is refused.
    fn limit(&self, t: &NewTask) -> (i64, QuotaReached) {
        let l = &t.limits;
        match self {
            Counter::User(..) => (i64::from(l.max_active_per_user), QuotaReached::User),
            Counter::Module(..) => (i64::from(l.max_active_per_module), QuotaReached::Module),
            Counter::Org(_) => (i64::from(l.max_active_per_org), QuotaReached::Org),
        }
    }
}

/// Counters as read, by kind: the statements' parameter columns.
#[derive(Default)]
struct Columns<'a> {
    orgs: Vec<&'a str>,
    module_m: Vec<&'a str>,
    module_o: Vec<&'a str>,
    user_m: Vec<&'a str>,
    user_o: Vec<&'a str>,
    user_u: Vec<&'a str>,
    /// How much each moves by, in the same order.
    org_n: Vec<i64>,
    module_n: Vec<i64>,
    user_n: Vec<i64>,
}

impl<'a> Columns<'a> {
    /// `counters` (sorted: the order every host locks them in), each moved
    /// by its count.
    fn of(counters: &'a std::collections::BTreeMap<Counter, i64>) -> Self {
        let mut c = Columns::default();
        for (counter, &n) in counters {
            match counter {
                Counter::Org(o) => {
                    c.orgs.push(o);
                    c.org_n.push(n);
                }
                Counter::Module(m, o) => {
                    c.module_m.push(m);
                    c.module_o.push(o);
                    c.module_n.push(n);
                }
                Counter::User(m, o, u) => {
                    c.user_m.push(m);
                    c.user_o.push(o);
                    c.user_u.push(u);
                    c.user_n.push(n);
                }
            }
        }
        c
    }
}

/// The counters in `rows` (their key columns, then the count).
fn counted(rows: [Vec<tokio_postgres::Row>; 3]) -> Result<HashMap<Counter, i64>, TaskStoreError> {
    let [orgs, modules, users] = rows;
    let mut counts = HashMap::new();
    for r in &orgs {
        counts.insert(Counter::Org(r.try_get(0)?), r.try_get(1)?);
    }
    for r in &modules {
        counts.insert(Counter::Module(r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
    }
    for r in &users {
        let key = Counter::User(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
        counts.insert(key, r.try_get(3)?);
    }
    Ok(counts)
}

/// Reads the counters of every owner in `tasks` (locked first when `lock`)
/// and the active tasks of their keys, decides each task in order as one
/// submission at a time would (an active key first, then the user's, the
/// module's and the organization's quota, each counting the group's
/// earlier tasks), stores the created ones, then counts them. `Err` when,
/// unlocked, the counts had moved past what a created task was allowed, or
/// a key was taken meanwhile.
async fn submit_all(
    c: &ClientWrapper,
    tasks: &[NewTask],
    lock: bool,
) -> Answers<Submitted, TaskStoreError> {
    let owners: std::collections::BTreeMap<Counter, i64> =
        tasks.iter().flat_map(Counter::of).map(|k| (k, 0)).collect();
    let read = Columns::of(&owners);
    let keyed: Vec<&NewTask> = tasks.iter().filter(|t| t.task_key.is_some()).collect();
    let key_m: Vec<&str> = keyed.iter().map(|t| t.module.as_str()).collect();
    let key_o: Vec<&str> = keyed.iter().map(|t| t.organization_id.as_str()).collect();
    let key_k: Vec<&str> = keyed.iter().filter_map(|t| t.task_key.as_deref()).collect();
    let [orgs, modules, users] = if lock {
        [sql::LOCK_ORGS, sql::LOCK_MODULES, sql::LOCK_USERS]
    } else {
        [sql::READ_ORGS, sql::READ_MODULES, sql::READ_USERS]
    };
    // Sent together, in this order: locked counters are locked before the
    // keys are read.
    let (by_org, by_module, by_user, active) = futures::try_join!(
        async { select(c, orgs, &[&read.orgs]).await },
        async { select(c, modules, &[&read.module_m, &read.module_o]).await },
        async { select(c, users, &[&read.user_m, &read.user_o, &read.user_u]).await },
        async {
            if keyed.is_empty() {
                Ok(Vec::new())
            } else {
                select(c, sql::ACTIVE_KEYS, &[&key_m, &key_o, &key_k]).await
            }
        },
    )?;
    let mut counts = counted([by_org, by_module, by_user])?;
    let mut holders: HashMap<(String, String, String), String> = HashMap::new();
    for r in &active {
        holders.insert((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?), r.try_get(3)?);
    }

    let mut answers = Vec::with_capacity(tasks.len());
    let mut created: Vec<&NewTask> = Vec::new();
    let mut moved = owners.clone();
    for t in tasks {
        let (m, o) = (&t.module, &t.organization_id);
        if let Some(key) = &t.task_key
            && let Some(id) = holders.get(&(m.clone(), o.clone(), key.clone()))
        {
            answers.push(Ok(Submitted::Existing(id.clone())));
            continue;
        }
        let counters = Counter::of(t);
        let reached = counters.iter().find_map(|k| {
            let (max, reached) = k.limit(t);
            (counts.get(k).copied().unwrap_or(0) >= max).then_some(reached)
        });
        if let Some(reached) = reached {
            answers.push(Ok(Submitted::LimitExceeded(
                t.limits.refusal(reached, &t.module),
            )));
            continue;
        }
        for k in counters {
            *moved.entry(k.clone()).or_default() += 1;
            *counts.entry(k).or_default() += 1;
        }
        if let Some(key) = &t.task_key {
            holders.insert((m.clone(), o.clone(), key.clone()), t.id.clone());
        }
        answers.push(Ok(Submitted::Created(t.id.clone())));
        created.push(t);
    }
    if created.is_empty() {
        return Ok(answers);
    }

    let column = |f: fn(&NewTask) -> &str| created.iter().map(|t| f(t)).collect::<Vec<_>>();
    let optional = |f: fn(&NewTask) -> Option<&str>| {
        created.iter().map(|t| f(t)).collect::<Vec<Option<&str>>>()
    };
    let ids = column(|t| &t.id);
    let modules = column(|t| &t.module);
    let names = column(|t| &t.task_name);
    let keys = optional(|t| t.task_key.as_deref());
    let titles = optional(|t| t.title.as_deref());
    let args = column(|t| &t.args_json);
    let resumable: Vec<bool> = created.iter().map(|t| t.resumable).collect();
    let users = column(|t| &t.user_id);
    let orgs = column(|t| &t.organization_id);
    let roles = column(|t| &t.role);
    let requests = column(|t| &t.request_id);
    let sessions = optional(|t| t.session_id.as_deref());
    let created_at: Vec<i64> = created.iter().map(|t| t.created_at).collect();
    moved.retain(|_, n| *n > 0);
    let add = Columns::of(&moved);
    let insert = async {
        let columns: [&(dyn ToSql + Sync); 13] = [
            &ids,
            &modules,
            &names,
            &keys,
            &titles,
            &args,
            &resumable,
            &users,
            &orgs,
            &roles,
            &requests,
            &sessions,
            &created_at,
        ];
        exec(c, sql::INSERT, &columns).await
    };
    // Stored, then counted: the counters' locks are taken last.
    let (inserted, by_org, by_module, by_user, _) = futures::try_join!(
        insert,
        async { select(c, sql::ADD_ORGS, &[&add.orgs, &add.org_n]).await },
        async {
            let p: [&(dyn ToSql + Sync); 3] = [&add.module_m, &add.module_o, &add.module_n];
            select(c, sql::ADD_MODULES, &p).await
        },
        async {
            let p: [&(dyn ToSql + Sync); 4] = [&add.user_m, &add.user_o, &add.user_u, &add.user_n];
            select(c, sql::ADD_USERS, &p).await
        },
        async { exec(c, sql::ANNOUNCE, &[&modules]).await },
    )?;
    if usize::try_from(inserted).ok() != Some(created.len()) {
        // Another host took a key since it was read.
        return Err(TaskStoreError::Internal(format!(
            "{} of {} submissions were stored",
            inserted,
            created.len()
        )));
    }
    // What each counter held before the group, now: every created task
    // must have found its counters under its quota.
    let mut before = counted([by_org, by_module, by_user])?;
    for (k, n) in &moved {
        if let Some(now) = before.get_mut(k) {
            *now -= n;
        }
    }
    for t in created {
        for k in Counter::of(t) {
            let count = before.entry(k.clone()).or_default();
            if *count >= k.limit(t).0 {
                return Err(TaskStoreError::Internal(format!(
                    "{k:?} moved past a quota while the submissions were decided"
                )));
            }
            *count += 1;
        }
    }
    Ok(answers)
}

/// One run's end: the task, its lease (none: whatever holds it), and its
/// outcome's columns.
pub(super) struct Finish {
    pub id: String,
    pub lease: Option<Lease>,
    pub status: &'static str,
    pub result: Option<String>,
    pub kind: Option<String>,
    pub message: Option<String>,
}

/// Ends of runs and cancels: whether each ended its task.
pub(super) struct Finishes;

impl Group for Finishes {
    type Item = Arc<Finish>;
    type Out = bool;
    type Error = TaskStoreError;

    fn run<'c>(c: &'c ClientWrapper, items: &'c [Arc<Finish>]) -> Many<'c, bool> {
        Box::pin(together_or_alone(c, items, finish_all))
    }
}

/// Ends `items` in as few statements as they have writes of one task (one,
/// nearly always), then says why each that ended nothing did.
fn finish_all<'a>(c: &'a ClientWrapper, items: &'a [Arc<Finish>]) -> Many<'a, bool> {
    Box::pin(async move {
        // A task ends once: a second write of it in the group (a cancel
        // racing its run's end) goes in the next statement, and finds it
        // ended.
        let mut rounds: Vec<Vec<usize>> = Vec::new();
        let mut round_of: HashMap<&str, usize> = HashMap::new();
        for (i, f) in items.iter().enumerate() {
            let round = round_of.entry(f.id.as_str()).or_insert(0);
            if rounds.len() <= *round {
                rounds.push(Vec::new());
            }
            rounds[*round].push(i);
            *round += 1;
        }
        let mut ended = vec![false; items.len()];
        for round in rounds {
            let of = |f: fn(&Finish) -> Option<&str>| {
                round.iter().map(|&i| f(&items[i])).collect::<Vec<_>>()
            };
            let ids = of(|f| Some(&f.id));
            let statuses = of(|f| Some(f.status));
            let results = of(|f| f.result.as_deref());
            let kinds = of(|f| f.kind.as_deref());
            let messages = of(|f| f.message.as_deref());
            let versions: Vec<Option<i64>> = round
                .iter()
                .map(|&i| items[i].lease.as_ref().map(|l| l.version))
                .collect();
            let done = select(
                c,
                sql::FINISH,
                &[&ids, &statuses, &results, &kinds, &messages, &versions],
            )
            .await?;
            let done: Vec<String> = match done.first() {
                Some(r) => r.try_get::<_, Option<Vec<String>>>(0)?.unwrap_or_default(),
                None => Vec::new(),
            };
            let done: BTreeSet<&str> = done.iter().map(String::as_str).collect();
            for &i in &round {
                ended[i] = done.contains(items[i].id.as_str());
            }
        }
        let mut answers = Vec::with_capacity(items.len());
        for (f, ended) in items.iter().zip(ended) {
            answers.push(match (&f.lease, ended) {
                (Some(lease), false) => match fence(c, lease).await {
                    Ok(()) => Ok(false),
                    Err(lost @ TaskStoreError::LeaseLost { .. }) => Err(lost),
                    // A failed statement: the savepoint is rolled back.
                    Err(e) => return Err(e),
                },
                _ => Ok(ended),
            });
        }
        Ok(answers)
    })
}
