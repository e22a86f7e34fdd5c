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

use super::{NewTask, QuotaReached, Submitted, TaskStoreError, exec, select};
use crate::pg::writer::{Answers, Group};
use crate::tasks::store::Lease;

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

    /// Counts the new tasks of owners `($1[i], $2[i], $3[i])`.
    pub const COUNT_NEW: &str = "SELECT modhost_count_many($1::TEXT[], $2::TEXT[], $3::TEXT[], 1)";

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
    pub const RELEASE: &str = "RELEASE SAVEPOINT grouped";
}

/// A set-based write of many items: one answer per item, in order, or the
/// error of a statement.
type Many<'a, O> = BoxFuture<'a, Answers<O, TaskStoreError>>;

/// Runs `all` for `items` under a savepoint; when a statement of it fails,
/// rolls it back and runs each item alone, under a savepoint of its own.
/// `Err` only when the connection broke (the transaction is then lost).
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

/// Runs `all` for `items` under a savepoint, rolled back when a statement
/// of it fails: `Ok(Err)` then. `Err` when the savepoint itself failed.
async fn attempt<I, O>(
    c: &ClientWrapper,
    items: &[I],
    all: for<'a> fn(&'a ClientWrapper, &'a [I]) -> Many<'a, O>,
) -> Result<Answers<O, TaskStoreError>, TaskStoreError> {
    exec(c, sql::SAVEPOINT, &[]).await?;
    match all(c, items).await {
        Ok(done) => {
            exec(c, sql::RELEASE, &[]).await?;
            Ok(Ok(done))
        }
        Err(e) => {
            exec(c, sql::ROLLBACK, &[]).await?;
            Ok(Err(e))
        }
    }
}

/// Submissions, already checked ([`super::validate_task_id`]).
pub(super) struct Submits;

impl Group for Submits {
    type Item = NewTask;
    type Out = Submitted;
    type Error = TaskStoreError;

    fn run<'c>(c: &'c ClientWrapper, items: &'c [NewTask]) -> Many<'c, Submitted> {
        Box::pin(together_or_alone(c, items, submit_all))
    }
}

type ModuleOrg<'a> = (&'a str, &'a str);
type Held<'a> = (&'a str, &'a str, &'a str);

/// Locks the counters of every owner in `tasks`, then decides each in order
/// as one submission at a time would (an active key first, then the
/// user's, the module's and the organization's quota, each counting the
/// group's earlier tasks), and stores and counts the created ones.
fn submit_all<'a>(c: &'a ClientWrapper, tasks: &'a [NewTask]) -> Many<'a, Submitted> {
    Box::pin(async move {
        let orgs: BTreeSet<&str> = tasks.iter().map(|t| t.organization_id.as_str()).collect();
        let modules: BTreeSet<ModuleOrg> = tasks
            .iter()
            .map(|t| (t.module.as_str(), t.organization_id.as_str()))
            .collect();
        let users: BTreeSet<Held> = tasks
            .iter()
            .map(|t| {
                (
                    t.module.as_str(),
                    t.organization_id.as_str(),
                    t.user_id.as_str(),
                )
            })
            .collect();
        let keyed: Vec<&NewTask> = tasks.iter().filter(|t| t.task_key.is_some()).collect();

        let orgs: Vec<&str> = orgs.into_iter().collect();
        let (module_m, module_o): (Vec<&str>, Vec<&str>) = modules.into_iter().unzip();
        let (mut user_m, mut user_o, mut user_u) = (Vec::new(), Vec::new(), Vec::new());
        for (m, o, u) in users {
            user_m.push(m);
            user_o.push(o);
            user_u.push(u);
        }
        let key_m: Vec<&str> = keyed.iter().map(|t| t.module.as_str()).collect();
        let key_o: Vec<&str> = keyed.iter().map(|t| t.organization_id.as_str()).collect();
        let key_k: Vec<&str> = keyed.iter().filter_map(|t| t.task_key.as_deref()).collect();
        // Sent together, in this order: the counters are locked before the
        // keys are read.
        let (by_org, by_module, by_user, active) = futures::try_join!(
            async { select(c, sql::LOCK_ORGS, &[&orgs]).await },
            async { select(c, sql::LOCK_MODULES, &[&module_m, &module_o]).await },
            async { select(c, sql::LOCK_USERS, &[&user_m, &user_o, &user_u]).await },
            async {
                if keyed.is_empty() {
                    Ok(Vec::new())
                } else {
                    select(c, sql::ACTIVE_KEYS, &[&key_m, &key_o, &key_k]).await
                }
            },
        )?;
        let mut per_org: HashMap<String, i64> = HashMap::new();
        for r in &by_org {
            per_org.insert(r.try_get(0)?, r.try_get(1)?);
        }
        let mut per_module: HashMap<(String, String), i64> = HashMap::new();
        for r in &by_module {
            per_module.insert((r.try_get(0)?, r.try_get(1)?), r.try_get(2)?);
        }
        let mut per_user: HashMap<(String, String, String), i64> = HashMap::new();
        for r in &by_user {
            per_user.insert((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?), r.try_get(3)?);
        }
        let mut holders: HashMap<(String, String, String), String> = HashMap::new();
        for r in &active {
            holders.insert((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?), r.try_get(3)?);
        }

        let mut answers = Vec::with_capacity(tasks.len());
        let mut created: Vec<&NewTask> = Vec::new();
        for t in tasks {
            let (m, o, u) = (&t.module, &t.organization_id, &t.user_id);
            if let Some(key) = &t.task_key
                && let Some(id) = holders.get(&(m.clone(), o.clone(), key.clone()))
            {
                answers.push(Ok(Submitted::Existing(id.clone())));
                continue;
            }
            let user = per_user
                .entry((m.clone(), o.clone(), u.clone()))
                .or_default();
            let module = per_module.entry((m.clone(), o.clone())).or_default();
            let org = per_org.entry(o.clone()).or_default();
            let reached = if *user >= i64::from(t.limits.max_active_per_user) {
                Some(QuotaReached::User)
            } else if *module >= i64::from(t.limits.max_active_per_module) {
                Some(QuotaReached::Module)
            } else if *org >= i64::from(t.limits.max_active_per_org) {
                Some(QuotaReached::Org)
            } else {
                None
            };
            if let Some(reached) = reached {
                answers.push(Ok(Submitted::LimitExceeded(
                    t.limits.refusal(reached, &t.module),
                )));
                continue;
            }
            *user += 1;
            *module += 1;
            *org += 1;
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
        let (inserted, _, _) = futures::try_join!(
            insert,
            async { exec(c, sql::COUNT_NEW, &[&modules, &orgs, &users]).await },
            async { exec(c, sql::ANNOUNCE, &[&modules]).await },
        )?;
        if usize::try_from(inserted).ok() != Some(created.len()) {
            // Not under the counters' lock: another writer of the tasks
            // took a key. Rolled back, and each submission run alone.
            return Err(TaskStoreError::Internal(format!(
                "{} of {} submissions were stored",
                inserted,
                created.len()
            )));
        }
        Ok(answers)
    })
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
                (Some(lease), false) => match super::fence(c, lease).await {
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
