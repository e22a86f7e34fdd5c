//! The behaviour every [`TaskStore`] must have, as one suite generic over
//! the trait: dedup, quotas, claims and leases, fencing, compare-and-set
//! transitions, progress, confirmation, recovery, retention, lookups,
//! listing and scoping.
//!
//! Each case is a `pub async fn` taking a fresh, empty store, and uses the
//! trait alone, so the suite runs unchanged on any backend:
//! [`task_store_conformance!`](crate::task_store_conformance) turns every
//! case into a test. What only one backend can check (its query plans, its
//! schema's own guards, its writer) stays with that backend's tests.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{
    Answered, Asked, Claimed, HOST_RESTARTED, HostId, LEASE_EXPIRED, Lease, LeaseState,
    MAX_PAGE_LIMIT, NewTask, OrgScope, Outcome, Owner, ProgressResult, ProgressUpdate, Quota,
    Recovery, Scope, Status, StoredAnswer, Submitted, TaskFilter, TaskRow, TaskStore,
    TaskStoreError, Want,
};
use crate::db::now_ms;

/// Runs every case of the conformance suite on a [`TaskStore`]: one
/// `#[tokio::test]` (multi-threaded, 2 workers) per case, each on its own
/// store from `$fresh`, an expression evaluating to a future of a fresh,
/// empty `Arc<dyn TaskStore>`. Cases may run in parallel.
///
/// An embedder with its own store enables the `conformance` feature of this
/// crate in its dev-dependencies, has `tokio` (features `macros` and
/// `rt-multi-thread`) among them too, and writes in a test module:
///
/// ```ignore
/// use std::sync::Arc;
/// use modhost::tasks::store::TaskStore;
///
/// async fn fresh_store() -> Arc<dyn TaskStore> {
///     Arc::new(MyStore::on_an_empty_database().await)
/// }
///
/// modhost::task_store_conformance!(fresh_store());
/// ```
#[macro_export]
macro_rules! task_store_conformance {
    ($fresh:expr) => {
        $crate::task_store_conformance!(@cases $fresh;
            // dedup
            concurrent_submits_of_one_key_store_one_task_and_share_its_id,
            finished_task_with_key_does_not_block_a_new_one,
            same_key_in_another_module_or_organization_is_independent,
            submit_without_key_never_deduplicates,
            duplicate_task_id_is_an_error_not_a_dedup,
            submit_rejects_ids_that_are_not_canonical_uuidv7,
            // quotas
            submit_refuses_when_user_has_max_active_tasks,
            submit_refuses_when_the_module_has_max_active_tasks_in_the_organization,
            an_organization_at_a_modules_quota_does_not_stop_another_organization,
            the_organizations_cap_holds_across_modules_and_spares_other_organizations,
            concurrent_submits_of_many_modules_never_exceed_the_organizations_cap,
            finished_tasks_free_their_quota,
            tasks_count_against_the_quota_in_every_active_status,
            active_key_returns_existing_task_even_at_quota,
            concurrent_submits_never_exceed_the_quota,
            // claims
            a_claim_returns_the_whole_row_running_under_the_claimers_host,
            claims_take_the_oldest_first_and_at_most_max_per_module,
            a_module_that_is_not_wanted_is_not_claimed,
            claims_never_hand_one_task_to_two_hosts,
            a_cancelled_task_is_never_claimed,
            a_recovered_task_claimed_again_counts_a_second_attempt_under_a_newer_lease,
            release_returns_a_claimed_task_to_pending_and_only_a_running_one,
            a_released_lease_can_write_nothing_and_the_next_claim_can,
            // leases
            renewing_keeps_a_held_lease_and_loses_a_finished_one,
            renewing_another_hosts_lease_or_an_old_version_is_lost,
            renewing_reports_an_answer_until_it_is_delivered,
            an_expired_lease_interrupts_a_task_that_is_not_resumable,
            an_expired_lease_returns_a_resumable_task_to_pending_with_its_checkpoint,
            a_lease_that_has_not_run_out_is_not_recovered,
            a_renewed_lease_is_not_recovered_when_its_first_term_runs_out,
            a_restarted_host_recovers_its_own_leases_at_once_and_no_other_hosts,
            // fencing
            a_recovered_tasks_old_lease_can_write_nothing,
            after_another_host_claims_a_task_only_its_new_lease_can_write,
            a_cancel_without_a_lease_ends_the_task_whoever_holds_it,
            progress_without_a_lease_updates_an_active_task_whoever_holds_it,
            // compare-and-set transitions
            racing_finish_and_cancel_have_exactly_one_winner,
            finishing_a_final_task_returns_false_and_keeps_its_outcome,
            completing_a_task_stores_its_result_and_full_progress,
            // progress
            progress_updates_the_owners_task_with_label_and_checkpoint,
            progress_of_another_modules_or_organizations_task_is_not_found,
            progress_of_a_final_task_is_not_active,
            progress_outside_zero_to_one_is_invalid_input,
            // confirmation
            asking_moves_a_running_task_to_waiting_with_its_surface,
            asking_for_a_waiting_final_or_missing_task_is_not_active,
            an_answer_naming_another_question_than_the_open_one_is_refused_in_the_same_write,
            an_answer_is_recorded_once_with_who_and_when,
            an_answer_after_the_expiry_is_refused,
            an_unconsumed_answer_is_returned_by_the_repeated_ask_without_a_status_change,
            a_consumed_answer_lets_the_next_ask_open_a_new_confirmation,
            closing_a_confirmation_only_moves_a_waiting_task,
            closing_a_confirmation_decides_between_an_answer_and_a_timeout_once,
            // parked waits
            a_parked_task_waits_without_a_lease_that_renewals_and_recoveries_reach,
            answering_a_parked_task_makes_it_pending_and_its_next_run_gets_the_answer,
            a_parked_question_that_expires_makes_the_task_pending_to_hear_the_timeout_once,
            parking_is_refused_once_an_answer_is_recorded_or_the_task_is_cancelled,
            a_parked_task_can_be_cancelled_and_is_never_claimed,
            parking_under_an_old_lease_is_lease_lost,
            // recovery
            recovery_interrupts_active_tasks_that_are_not_resumable,
            recovery_leaves_pending_tasks_pending,
            recovery_requeues_resumable_tasks_with_checkpoint_and_open_confirmation,
            recovery_keeps_an_answered_confirmation_for_the_repeated_ask,
            an_answer_to_a_recovered_wait_is_recorded_and_resumes_nothing,
            a_recovery_of_more_lapsed_leases_than_a_page_recovers_every_one,
            // retention
            pruning_deletes_finished_tasks_before_the_cutoff_and_never_an_active_one,
            one_pruning_write_deletes_at_most_its_limit_oldest_first,
            // lookups
            by_key_returns_exact_matches_newest_first,
            key_prefix_treats_percent_underscore_and_backslash_as_ordinary_characters,
            key_prefix_handles_non_ascii_and_the_last_code_point,
            lookups_are_capped_at_500_rows,
            by_user_lists_one_user_or_the_whole_organization_newest_first,
            lookups_return_summaries_without_the_heavy_fields_and_get_returns_them,
            // list
            list_pages_newest_first_and_stays_stable_while_tasks_arrive,
            list_filters_are_combined,
            list_clamps_its_page_size_to_one_through_two_hundred,
            listing_an_organization_spans_its_modules_unless_one_is_named,
            // scope
            tasks_of_another_module_organization_or_user_are_invisible,
        );
    };
    (@cases $fresh:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = $fresh.await;
                $crate::tasks::store::conformance::$case(store).await;
            }
        )*
    };
}

// ---- helpers --------------------------------------------------------------

/// Quotas no case reaches unless it means to.
pub const ROOMY: Quota = Quota {
    max_active_per_user: 10_000,
    max_active_per_module: 10_000,
    max_active_per_org: 10_000,
};

/// The lease of a claim that must outlive its case.
pub const LEASE: Duration = Duration::from_secs(60);

/// A lease that has run out by the time [`LAPSE`] has passed.
pub const SHORT_LEASE: Duration = Duration::from_millis(1);

/// How long a case waits for a [`SHORT_LEASE`] to run out.
pub const LAPSE: Duration = Duration::from_millis(50);

/// A pending, not resumable task of `user` in `module` and `org`, with a
/// new id.
pub fn task(module: &str, org: &str, user: &str, key: Option<&str>) -> NewTask {
    NewTask {
        id: uuid::Uuid::now_v7().to_string(),
        module: module.into(),
        task_name: "work".into(),
        task_key: key.map(Into::into),
        title: Some("Work".into()),
        args_json: "{}".into(),
        resumable: false,
        user_id: user.into(),
        organization_id: org.into(),
        role: "member".into(),
        request_id: "req-1".into(),
        session_id: None,
        created_at: 1_000,
        limits: ROOMY,
    }
}

/// A resumable task of `user` in module `m` of organization `o`.
pub fn resumable(user: &str) -> NewTask {
    let mut t = task("m", "o", user, None);
    t.resumable = true;
    t
}

pub fn scope(module: &str, org: &str, user: Option<&str>) -> Scope {
    Scope {
        module: module.into(),
        organization_id: org.into(),
        user_id: user.map(Into::into),
    }
}

pub fn owner(module: &str, org: &str) -> Owner {
    Owner {
        module: module.into(),
        organization_id: org.into(),
    }
}

pub fn host(name: &str) -> HostId {
    HostId::new(name).expect("valid host id")
}

pub fn answer(at: i64) -> StoredAnswer {
    StoredAnswer {
        answer_json: r#"{"ok":true}"#.into(),
        answered_by: "u1".into(),
        answered_at: at,
    }
}

pub fn progress(p: f64, label: Option<&str>, checkpoint: Option<&str>) -> ProgressUpdate {
    ProgressUpdate {
        progress: p,
        label: label.map(Into::into),
        checkpoint_json: checkpoint.map(Into::into),
    }
}

fn completed(result_json: &str) -> Outcome {
    Outcome::Completed {
        result_json: result_json.into(),
    }
}

fn cancelled() -> Outcome {
    Outcome::Cancelled { by: None }
}

/// Submits `t`, which must be stored; its id.
pub async fn created(store: &dyn TaskStore, t: NewTask) -> String {
    match store.submit(t).await.unwrap() {
        Submitted::Created(id) => id,
        other => panic!("expected Created, got {other:?}"),
    }
}

/// Claims every pending task of `module` for `host`.
pub async fn claim_all(
    store: &dyn TaskStore,
    host: &HostId,
    module: &str,
    lease: Duration,
) -> Vec<Claimed> {
    let want = [Want {
        module: module.into(),
        max: 1000,
    }];
    store.claim(host, &want, lease).await.unwrap()
}

/// The lease of `id` among `claimed`.
pub fn lease_of(claimed: &[Claimed], id: &str) -> Lease {
    claimed
        .iter()
        .find(|c| c.row.id == id)
        .map(|c| c.lease.clone())
        .unwrap_or_else(|| panic!("{id} was not claimed: {claimed:?}"))
}

/// Submits `t` and claims it for `host` under a lease of `lease`. The
/// module must have no other pending task (it would be claimed too).
pub async fn running_on(
    store: &dyn TaskStore,
    host: &HostId,
    t: NewTask,
    lease: Duration,
) -> Lease {
    let module = t.module.clone();
    let id = created(store, t).await;
    let claimed = claim_all(store, host, &module, lease).await;
    assert_eq!(claimed.len(), 1, "other tasks were pending: {claimed:?}");
    lease_of(&claimed, &id)
}

/// Submits `t` and claims it for [`HostId::local`] under [`LEASE`].
pub async fn running(store: &dyn TaskStore, t: NewTask) -> Lease {
    running_on(store, &HostId::local(), t, LEASE).await
}

/// A running task of `u2` in `m`/`o` that asked for a confirmation.
pub async fn waiting(store: &dyn TaskStore) -> Lease {
    let lease = running(store, task("m", "o", "u2", None)).await;
    let asked = store.ask_confirmation(&lease, "{}", 1, None).await.unwrap();
    assert_eq!(asked, Asked::Waiting);
    lease
}

/// The whole row of `id`, which must exist.
pub async fn get(store: &dyn TaskStore, id: &str) -> TaskRow {
    store
        .get_unscoped(id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{id} is missing"))
}

pub async fn status(store: &dyn TaskStore, id: &str) -> Status {
    get(store, id).await.status
}

pub fn ids(rows: &[TaskRow]) -> Vec<String> {
    rows.iter().map(|r| r.id.clone()).collect()
}

fn set(ids: &[String]) -> HashSet<String> {
    ids.iter().cloned().collect()
}

fn claimed_ids(claimed: &[Claimed]) -> HashSet<String> {
    claimed.iter().map(|c| c.row.id.clone()).collect()
}

/// Every task of organization `org` with one of `statuses` (any when
/// empty), newest first, over all modules.
async fn org_tasks(store: &dyn TaskStore, org: &str, statuses: &[Status]) -> Vec<String> {
    let scope = OrgScope {
        organization_id: org.into(),
        user_id: None,
        module: None,
    };
    let filter = TaskFilter {
        statuses: statuses.to_vec(),
        ..TaskFilter::default()
    };
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_org(&scope, &filter, cursor.as_ref(), MAX_PAGE_LIMIT)
            .await
            .unwrap();
        all.extend(ids(&page.tasks));
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => return all,
        }
    }
}

/// Submits `n` tasks built by `make(i)` at once; their ids.
async fn submit_many(
    store: &Arc<dyn TaskStore>,
    n: usize,
    make: impl Fn(usize) -> NewTask,
) -> Vec<String> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let (store, t) = (Arc::clone(store), make(i));
        set.spawn(async move { created(&*store, t).await });
    }
    set.join_all().await
}

#[track_caller]
fn assert_lease_lost<T: Debug>(result: Result<T, TaskStoreError>, id: &str, write: &str) {
    match result {
        Err(TaskStoreError::LeaseLost { task_id }) => assert_eq!(task_id, id, "{write}"),
        other => panic!("{write} under a lost lease: expected LeaseLost, got {other:?}"),
    }
}

/// Every fenced write under `lease`, each of which must be refused as
/// [`TaskStoreError::LeaseLost`].
async fn assert_every_write_is_fenced(store: &dyn TaskStore, lease: &Lease, owner: &Owner) {
    let id = lease.task_id.as_str();
    assert_lease_lost(
        store.finish(id, Some(lease), completed("1")).await,
        id,
        "finish",
    );
    assert_lease_lost(
        store
            .update_progress(
                id,
                owner,
                Some(lease),
                progress(0.9, Some("x"), Some("[9]")),
            )
            .await,
        id,
        "update_progress",
    );
    assert_lease_lost(
        store
            .ask_confirmation(lease, "{\"late\":1}", 77, None)
            .await,
        id,
        "ask_confirmation",
    );
    assert_lease_lost(store.consume_answer(lease).await, id, "consume_answer");
    assert_lease_lost(store.park(lease).await, id, "park");
    assert_lease_lost(
        store.close_confirmation(lease, now_ms()).await,
        id,
        "close_confirmation",
    );
    assert_lease_lost(store.release(lease).await, id, "release");
}

// ---- dedup ----------------------------------------------------------------

pub async fn concurrent_submits_of_one_key_store_one_task_and_share_its_id(
    store: Arc<dyn TaskStore>,
) {
    let mut set = JoinSet::new();
    for _ in 0..64 {
        let store = Arc::clone(&store);
        set.spawn(async move {
            store
                .submit(task("m", "o", "u1", Some("report.42")))
                .await
                .unwrap()
        });
    }
    let results = set.join_all().await;
    let created: Vec<_> = results
        .iter()
        .filter_map(|r| match r {
            Submitted::Created(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(created.len(), 1, "{results:?}");
    for r in &results {
        match r {
            Submitted::Created(id) | Submitted::Existing(id) => assert_eq!(id, &created[0]),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        org_tasks(&*store, "o", &[]).await,
        created,
        "one row stored"
    );
}

pub async fn finished_task_with_key_does_not_block_a_new_one(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let first = created(s, task("m", "o", "u1", Some("k"))).await;
    assert!(s.finish(&first, None, completed("1")).await.unwrap());
    let second = created(s, task("m", "o", "u1", Some("k"))).await;
    assert_ne!(first, second);
    let again = s.submit(task("m", "o", "u2", Some("k"))).await.unwrap();
    assert_eq!(again, Submitted::Existing(second));
}

pub async fn same_key_in_another_module_or_organization_is_independent(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let a = created(s, task("m", "o", "u1", Some("k"))).await;
    let b = created(s, task("other", "o", "u1", Some("k"))).await;
    let c = created(s, task("m", "o2", "u1", Some("k"))).await;
    assert!(a != b && b != c && a != c);
}

pub async fn submit_without_key_never_deduplicates(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let a = created(s, task("m", "o", "u1", None)).await;
    let b = created(s, task("m", "o", "u1", None)).await;
    assert_ne!(a, b);
}

pub async fn duplicate_task_id_is_an_error_not_a_dedup(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let t = task("m", "o", "u1", Some("k"));
    let id = created(s, t.clone()).await;
    let before = get(s, &id).await;
    let mut dup = t;
    dup.task_key = Some("other".into());
    let result = s.submit(dup).await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(get(s, &id).await, before);
    assert!(
        s.by_key(&scope("m", "o", None), "other", 10)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn submit_rejects_ids_that_are_not_canonical_uuidv7(store: Arc<dyn TaskStore>) {
    for bad in [
        "not-a-uuid".to_owned(),
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::now_v7().to_string().to_uppercase(),
    ] {
        let mut t = task("m", "o", "u1", None);
        t.id = bad;
        assert!(matches!(
            store.submit(t).await,
            Err(TaskStoreError::InvalidInput(_))
        ));
    }
    assert!(org_tasks(&*store, "o", &[]).await.is_empty());
}

// ---- quotas ---------------------------------------------------------------

fn limited(user: &str, per_user: u32, per_module: u32) -> NewTask {
    let mut t = task("m", "o", user, None);
    t.limits = Quota {
        max_active_per_user: per_user,
        max_active_per_module: per_module,
        max_active_per_org: 10_000,
    };
    t
}

/// A task of `module` in `org` under an organization-wide cap of `per_org`.
fn in_org(module: &str, org: &str, user: &str, per_org: u32) -> NewTask {
    let mut t = task(module, org, user, None);
    t.limits.max_active_per_org = per_org;
    t
}

fn refusal(s: Submitted) -> String {
    match s {
        Submitted::LimitExceeded(reason) => reason,
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
}

pub async fn submit_refuses_when_user_has_max_active_tasks(store: Arc<dyn TaskStore>) {
    let s = &*store;
    for _ in 0..2 {
        created(s, limited("u1", 2, 100)).await;
    }
    let reason = refusal(s.submit(limited("u1", 2, 100)).await.unwrap());
    assert!(reason.contains("[tasks] max-active-per-user"), "{reason}");
    created(s, limited("u2", 2, 100)).await;
}

pub async fn submit_refuses_when_the_module_has_max_active_tasks_in_the_organization(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    created(s, limited("u1", 10, 2)).await;
    created(s, limited("u2", 10, 2)).await;
    let reason = refusal(s.submit(limited("u3", 10, 2)).await.unwrap());
    assert!(reason.contains("[tasks] max-active-per-module"), "{reason}");
}

pub async fn an_organization_at_a_modules_quota_does_not_stop_another_organization(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    for user in ["u1", "u2"] {
        created(s, limited(user, 10, 2)).await;
    }
    assert!(matches!(
        s.submit(limited("u3", 10, 2)).await.unwrap(),
        Submitted::LimitExceeded(_)
    ));
    for user in ["u1", "u2"] {
        let mut other_org = limited(user, 10, 2);
        other_org.organization_id = "o2".into();
        created(s, other_org).await;
    }
}

pub async fn the_organizations_cap_holds_across_modules_and_spares_other_organizations(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    created(s, in_org("m1", "o", "u1", 3)).await;
    created(s, in_org("m2", "o", "u2", 3)).await;
    created(s, in_org("m3", "o", "u3", 3)).await;
    let reason = refusal(s.submit(in_org("m4", "o", "u4", 3)).await.unwrap());
    assert!(reason.contains("max-active-tasks-per-org"), "{reason}");
    created(s, in_org("m4", "o2", "u4", 3)).await;
}

pub async fn concurrent_submits_of_many_modules_never_exceed_the_organizations_cap(
    store: Arc<dyn TaskStore>,
) {
    let mut set = JoinSet::new();
    for i in 0..48 {
        let store = Arc::clone(&store);
        set.spawn(async move {
            let module = format!("m{}", i % 6);
            store
                .submit(in_org(&module, "o", &format!("u{i}"), 7))
                .await
                .unwrap()
        });
    }
    let results = set.join_all().await;
    let created = results
        .iter()
        .filter(|r| matches!(r, Submitted::Created(_)))
        .count();
    assert_eq!(created, 7, "{results:?}");
    assert_eq!(org_tasks(&*store, "o", &[]).await.len(), 7);
}

pub async fn finished_tasks_free_their_quota(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let id = created(s, limited("u1", 1, 1)).await;
    assert!(matches!(
        s.submit(limited("u1", 1, 1)).await.unwrap(),
        Submitted::LimitExceeded(_)
    ));
    s.finish(&id, None, cancelled()).await.unwrap();
    created(s, limited("u1", 1, 1)).await;
}

/// Pending, running and waiting tasks all hold quota; a task interrupted
/// by recovery gives it back, a resumed one keeps it.
pub async fn tasks_count_against_the_quota_in_every_active_status(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let run = running(s, limited("u1", 4, 100)).await;
    let wait = running(s, limited("u1", 4, 100)).await;
    s.ask_confirmation(&wait, "{}", 1, None).await.unwrap();
    let mut r = limited("u1", 4, 100);
    r.resumable = true;
    running(s, r).await;
    created(s, limited("u1", 4, 100)).await;
    assert!(matches!(
        s.submit(limited("u1", 4, 100)).await.unwrap(),
        Submitted::LimitExceeded(_)
    ));
    let recovery = s.recover_expired(Some(&HostId::local())).await.unwrap();
    assert_eq!(recovery.interrupted.len(), 2);
    for lease in [&run, &wait] {
        assert_eq!(status(s, &lease.task_id).await, Status::Interrupted);
    }
    created(s, limited("u1", 4, 100)).await;
    created(s, limited("u1", 4, 100)).await;
    assert!(matches!(
        s.submit(limited("u1", 4, 100)).await.unwrap(),
        Submitted::LimitExceeded(_)
    ));
}

pub async fn active_key_returns_existing_task_even_at_quota(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let mut t = limited("u1", 1, 1);
    t.task_key = Some("k".into());
    let id = created(s, t.clone()).await;
    t.id = uuid::Uuid::now_v7().to_string();
    assert_eq!(s.submit(t).await.unwrap(), Submitted::Existing(id));
}

pub async fn concurrent_submits_never_exceed_the_quota(store: Arc<dyn TaskStore>) {
    let mut set = JoinSet::new();
    for _ in 0..40 {
        let store = Arc::clone(&store);
        set.spawn(async move { store.submit(limited("u1", 5, 100)).await.unwrap() });
    }
    let results = set.join_all().await;
    let created = results
        .iter()
        .filter(|r| matches!(r, Submitted::Created(_)))
        .count();
    assert_eq!(created, 5);
    assert_eq!(org_tasks(&*store, "o", &[]).await.len(), 5);
}

// ---- claims -----------------------------------------------------------------

pub async fn a_claim_returns_the_whole_row_running_under_the_claimers_host(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let mut t = task("m", "o", "u1", Some("k"));
    t.args_json = format!(r#"{{"pages":"{}"}}"#, "p".repeat(10_000));
    let args = t.args_json.clone();
    let id = created(s, t).await;
    let pending = get(s, &id).await;
    assert_eq!((pending.attempts, pending.started_at), (0, None));
    assert_eq!(pending.host, None);

    let h1 = host("h1");
    let claimed = claim_all(s, &h1, "m", LEASE).await;
    assert_eq!(claimed.len(), 1);
    let Claimed { row, lease } = &claimed[0];
    assert_eq!(lease.task_id, id);
    assert_eq!(
        (row.id.as_str(), row.status),
        (id.as_str(), Status::Running)
    );
    assert_eq!(row.attempts, 1);
    assert!(row.started_at.is_some());
    assert_eq!(row.host.as_deref(), Some("h1"));
    assert_eq!(row.args_json, args);
    assert_eq!(row.task_key.as_deref(), Some("k"));
    assert_eq!(row, &get(s, &id).await, "the claim returns the stored row");
    assert!(
        claim_all(s, &host("h2"), "m", LEASE).await.is_empty(),
        "a running task is not claimed again"
    );
}

pub async fn claims_take_the_oldest_first_and_at_most_max_per_module(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let mut a = Vec::new();
    let mut b = Vec::new();
    for i in 0..5 {
        a.push(created(s, task("a", "o", "u1", None)).await);
        if i < 2 {
            b.push(created(s, task("b", "o", "u1", None)).await);
        }
    }
    let wants = [
        Want {
            module: "a".into(),
            max: 3,
        },
        Want {
            module: "b".into(),
            max: 5,
        },
    ];
    let h = HostId::local();
    let claimed = s.claim(&h, &wants, LEASE).await.unwrap();
    let mut by_module: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    for c in &claimed {
        by_module
            .entry(c.row.module.clone())
            .or_default()
            .insert(c.row.id.clone());
    }
    assert_eq!(by_module["a"], set(&a[..3]));
    assert_eq!(by_module["b"], set(&b));
    let rest = s.claim(&h, &wants, LEASE).await.unwrap();
    assert_eq!(claimed_ids(&rest), set(&a[3..]));
    assert!(s.claim(&h, &wants, LEASE).await.unwrap().is_empty());
}

pub async fn a_module_that_is_not_wanted_is_not_claimed(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let a = created(s, task("a", "o", "u1", None)).await;
    let b = created(s, task("b", "o", "u1", None)).await;
    let h = HostId::local();
    assert!(s.claim(&h, &[], LEASE).await.unwrap().is_empty());
    let none = [Want {
        module: "b".into(),
        max: 0,
    }];
    assert!(s.claim(&h, &none, LEASE).await.unwrap().is_empty());
    let claimed = claim_all(s, &h, "a", LEASE).await;
    assert_eq!(claimed_ids(&claimed), HashSet::from([a]));
    assert_eq!(status(s, &b).await, Status::Pending);
    assert_eq!(get(s, &b).await.attempts, 0);
}

pub async fn claims_never_hand_one_task_to_two_hosts(store: Arc<dyn TaskStore>) {
    let submitted = submit_many(&store, 200, |i| {
        task("m", "o", &format!("u{}", i % 7), None)
    })
    .await;
    let mut set = JoinSet::new();
    for h in ["h1", "h2", "h3", "h4"] {
        let store = Arc::clone(&store);
        set.spawn(async move {
            let h = host(h);
            let want = [Want {
                module: "m".into(),
                max: 3,
            }];
            let mut mine = Vec::new();
            loop {
                let claimed = store.claim(&h, &want, LEASE).await.unwrap();
                if claimed.is_empty() {
                    return mine;
                }
                assert!(claimed.len() <= 3, "{claimed:?}");
                mine.extend(claimed.into_iter().map(|c| (h.clone(), c)));
                assert!(mine.len() <= 200, "{h} claimed more tasks than exist");
            }
        });
    }
    let claims: Vec<(HostId, Claimed)> = set.join_all().await.into_iter().flatten().collect();
    let mut seen = HashSet::new();
    for (_, c) in &claims {
        assert!(seen.insert(c.row.id.clone()), "{} claimed twice", c.row.id);
    }
    assert_eq!(seen, submitted.into_iter().collect::<HashSet<_>>());
    for (h, c) in &claims {
        let row = get(&*store, &c.row.id).await;
        assert_eq!(row.host.as_deref(), Some(h.as_str()));
        assert_eq!((row.status, row.attempts), (Status::Running, 1));
    }
}

pub async fn a_cancelled_task_is_never_claimed(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let id = created(s, task("m", "o", "u1", None)).await;
    assert!(s.finish(&id, None, cancelled()).await.unwrap());
    assert!(claim_all(s, &HostId::local(), "m", LEASE).await.is_empty());
    assert_eq!(status(s, &id).await, Status::Cancelled);
}

pub async fn a_recovered_task_claimed_again_counts_a_second_attempt_under_a_newer_lease(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let first = running(s, resumable("u1")).await;
    let id = first.task_id.clone();
    let rec = s.recover_expired(Some(&HostId::local())).await.unwrap();
    assert_eq!(rec.resumed, std::slice::from_ref(&id));
    let again = claim_all(s, &host("h2"), "m", LEASE).await;
    let second = lease_of(&again, &id);
    assert!(second.version > first.version, "{first:?} -> {second:?}");
    assert_eq!(again[0].row.attempts, 2);
    assert_eq!(again[0].row.host.as_deref(), Some("h2"));
}

pub async fn release_returns_a_claimed_task_to_pending_and_only_a_running_one(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u", None)).await;
    let id = lease.task_id.clone();
    assert!(s.release(&lease).await.unwrap());
    let row = get(s, &id).await;
    assert_eq!(
        (row.status, row.attempts, row.started_at, row.host),
        (Status::Pending, 0, None, None)
    );
    assert_lease_lost(s.release(&lease).await, &id, "a second release");
    let again = claim_all(s, &HostId::local(), "m", LEASE).await;
    assert_eq!(again[0].row.attempts, 1);
    let again = lease_of(&again, &id);
    s.ask_confirmation(&again, "{}", 1, None).await.unwrap();
    assert!(
        !s.release(&again).await.unwrap(),
        "a waiting task is not released"
    );
    assert_eq!(status(s, &id).await, Status::WaitingConfirmation);
    s.finish(&id, Some(&again), completed("null"))
        .await
        .unwrap();
    assert!(
        !s.release(&again).await.unwrap(),
        "a finished task stays finished"
    );
    assert_eq!(status(s, &id).await, Status::Completed);
}

pub async fn a_released_lease_can_write_nothing_and_the_next_claim_can(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let me = owner("m", "o");
    let (h1, h2) = (host("h1"), host("h2"));
    let old = running_on(s, &h1, task("m", "o", "u1", None), LEASE).await;
    let id = old.task_id.clone();
    assert!(s.release(&old).await.unwrap());
    let released = get(s, &id).await;
    assert_every_write_is_fenced(s, &old, &me).await;
    assert_eq!(
        s.renew(&h1, std::slice::from_ref(&old), LEASE)
            .await
            .unwrap(),
        [LeaseState::Lost]
    );
    assert_eq!(get(s, &id).await, released, "nothing changed");

    let new = lease_of(&claim_all(s, &h2, "m", LEASE).await, &id);
    assert_ne!(new, old);
    let claimed = get(s, &id).await;
    assert_every_write_is_fenced(s, &old, &me).await;
    assert_eq!(get(s, &id).await, claimed, "nothing changed");
    assert!(s.finish(&id, Some(&new), completed("2")).await.unwrap());
    assert_eq!(status(s, &id).await, Status::Completed);
}

// ---- leases -------------------------------------------------------------------

pub async fn renewing_keeps_a_held_lease_and_loses_a_finished_one(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let h = HostId::local();
    let a = running(s, task("m", "o", "u1", None)).await;
    let b = running(s, task("m", "o", "u1", None)).await;
    let held = LeaseState::Held { answered: false };
    let leases = [a.clone(), b.clone()];
    assert_eq!(s.renew(&h, &leases, LEASE).await.unwrap(), [held, held]);
    // Cancelled by a user, without the lease.
    assert!(s.finish(&b.task_id, None, cancelled()).await.unwrap());
    assert_eq!(
        s.renew(&h, &leases, LEASE).await.unwrap(),
        [held, LeaseState::Lost],
        "one state per lease, in order"
    );
    let missing = Lease {
        task_id: uuid::Uuid::now_v7().to_string(),
        version: a.version,
    };
    assert_eq!(
        s.renew(&h, &[missing], LEASE).await.unwrap(),
        [LeaseState::Lost]
    );
}

pub async fn renewing_another_hosts_lease_or_an_old_version_is_lost(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let (h1, h2) = (host("h1"), host("h2"));
    let lease = running_on(s, &h1, task("m", "o", "u1", None), LEASE).await;
    assert_eq!(
        s.renew(&h2, std::slice::from_ref(&lease), LEASE)
            .await
            .unwrap(),
        [LeaseState::Lost]
    );
    for version in [lease.version - 1, lease.version + 1] {
        let other = Lease {
            task_id: lease.task_id.clone(),
            version,
        };
        assert_eq!(
            s.renew(&h1, &[other], LEASE).await.unwrap(),
            [LeaseState::Lost],
            "version {version}"
        );
    }
    assert_eq!(
        s.renew(&h1, std::slice::from_ref(&lease), LEASE)
            .await
            .unwrap(),
        [LeaseState::Held { answered: false }],
        "the holder keeps it"
    );
    assert_eq!(get(s, &lease.task_id).await.host.as_deref(), Some("h1"));
}

pub async fn renewing_reports_an_answer_until_it_is_delivered(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let h = HostId::local();
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    let (h, held) = (&h, &lease);
    let renew = move || async move {
        let states = s.renew(h, std::slice::from_ref(held), LEASE).await;
        match states.unwrap()[..] {
            [LeaseState::Held { answered }] => answered,
            ref other => panic!("expected one held lease, got {other:?}"),
        }
    };
    s.ask_confirmation(&lease, "{}", 1, None).await.unwrap();
    assert!(!renew().await, "asked, not answered");
    s.answer_confirmation(&id, answer(now_ms()), None)
        .await
        .unwrap();
    assert!(renew().await, "answered through any host");
    assert!(
        s.close_confirmation(&lease, now_ms())
            .await
            .unwrap()
            .is_some()
    );
    assert!(!renew().await, "delivered by closing the wait");

    assert_eq!(
        s.ask_confirmation(&lease, "{}", 2, None).await.unwrap(),
        Asked::Waiting
    );
    s.answer_confirmation(&id, answer(now_ms()), None)
        .await
        .unwrap();
    assert!(renew().await);
    assert!(s.consume_answer(&lease).await.unwrap());
    assert!(!renew().await, "delivered by consuming it");
}

pub async fn an_expired_lease_interrupts_a_task_that_is_not_resumable(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let h = host("h1");
    let lease = running_on(s, &h, task("m", "o", "u1", None), SHORT_LEASE).await;
    tokio::time::sleep(LAPSE).await;
    let rec = s.recover_expired(None).await.unwrap();
    assert_eq!(
        rec,
        Recovery {
            resumed: vec![],
            interrupted: vec![lease.task_id.clone()],
            timed_out: vec![],
        }
    );
    let row = get(s, &lease.task_id).await;
    assert_eq!(row.status, Status::Interrupted);
    assert_eq!(row.failure_kind.as_deref(), Some("interrupted"));
    assert_eq!(row.failure_message.as_deref(), Some(LEASE_EXPIRED));
    assert!(row.finished_at.is_some());
    assert_eq!(row.host, None);
    assert_eq!(
        s.renew(&h, &[lease], LEASE).await.unwrap(),
        [LeaseState::Lost]
    );
    assert_eq!(s.recover_expired(None).await.unwrap(), Recovery::default());
}

pub async fn an_expired_lease_returns_a_resumable_task_to_pending_with_its_checkpoint(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let h = host("h1");
    let lease = running_on(s, &h, resumable("u1"), SHORT_LEASE).await;
    let id = lease.task_id.clone();
    s.update_progress(
        &id,
        &owner("m", "o"),
        Some(&lease),
        progress(0.5, Some("half"), Some("[5]")),
    )
    .await
    .unwrap();
    tokio::time::sleep(LAPSE).await;
    let rec = s.recover_expired(None).await.unwrap();
    assert_eq!(
        rec,
        Recovery {
            resumed: vec![id.clone()],
            interrupted: vec![],
            timed_out: vec![],
        }
    );
    let row = get(s, &id).await;
    assert_eq!((row.status, row.host), (Status::Pending, None));
    assert_eq!(row.checkpoint_json.as_deref(), Some("[5]"));
    assert_eq!((row.progress, row.label.as_deref()), (0.5, Some("half")));
    assert_eq!(row.finished_at, None);
    assert_eq!(
        s.renew(&h, &[lease], LEASE).await.unwrap(),
        [LeaseState::Lost]
    );
}

pub async fn a_lease_that_has_not_run_out_is_not_recovered(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let h1 = host("h1");
    let run = running_on(s, &h1, task("m", "o", "u1", None), LEASE).await;
    let wait = running_on(s, &h1, task("m", "o", "u1", None), LEASE).await;
    s.ask_confirmation(&wait, "{}", 1, None).await.unwrap();
    let res = running_on(s, &host("h2"), resumable("u1"), LEASE).await;
    let pending = created(s, task("m", "o", "u1", None)).await;
    let ids = [&run.task_id, &wait.task_id, &res.task_id, &pending];
    let mut before = Vec::new();
    for id in ids {
        before.push(get(s, id).await);
    }
    tokio::time::sleep(LAPSE).await;
    assert_eq!(s.recover_expired(None).await.unwrap(), Recovery::default());
    for (id, row) in ids.into_iter().zip(before) {
        assert_eq!(get(s, id).await, row);
    }
}

pub async fn a_renewed_lease_is_not_recovered_when_its_first_term_runs_out(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let h = host("h1");
    let lease = running_on(s, &h, task("m", "o", "u1", None), SHORT_LEASE).await;
    assert_eq!(
        s.renew(&h, std::slice::from_ref(&lease), LEASE)
            .await
            .unwrap(),
        [LeaseState::Held { answered: false }]
    );
    tokio::time::sleep(LAPSE).await;
    assert_eq!(s.recover_expired(None).await.unwrap(), Recovery::default());
    assert_eq!(status(s, &lease.task_id).await, Status::Running);
    assert_eq!(
        s.renew(&h, &[lease], LEASE).await.unwrap(),
        [LeaseState::Held { answered: false }]
    );
}

pub async fn a_restarted_host_recovers_its_own_leases_at_once_and_no_other_hosts(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let (h1, h2, h3) = (host("h1"), host("h2"), host("h3"));
    let mine = running_on(s, &h1, task("m", "o", "u1", None), LEASE).await;
    let mine_resumable = running_on(s, &h1, resumable("u1"), LEASE).await;
    let theirs = running_on(s, &h2, task("m", "o", "u1", None), LEASE).await;
    let lapsed = running_on(s, &h3, task("m", "o", "u1", None), SHORT_LEASE).await;
    tokio::time::sleep(LAPSE).await;

    let rec = s.recover_expired(Some(&h1)).await.unwrap();
    assert_eq!(rec.resumed, std::slice::from_ref(&mine_resumable.task_id));
    assert_eq!(rec.interrupted.len(), 2, "h1's task, and h3's lapsed lease");
    let row = get(s, &mine.task_id).await;
    assert_eq!(row.status, Status::Interrupted);
    assert_eq!(row.failure_message.as_deref(), Some(HOST_RESTARTED));
    let row = get(s, &lapsed.task_id).await;
    assert_eq!(row.status, Status::Interrupted);
    assert_eq!(row.failure_message.as_deref(), Some(LEASE_EXPIRED));
    assert_eq!(status(s, &mine_resumable.task_id).await, Status::Pending);

    let row = get(s, &theirs.task_id).await;
    assert_eq!(
        (row.status, row.host.as_deref()),
        (Status::Running, Some("h2"))
    );
    assert_eq!(
        s.renew(&h2, &[theirs], LEASE).await.unwrap(),
        [LeaseState::Held { answered: false }]
    );
}

// ---- fencing --------------------------------------------------------------------

pub async fn a_recovered_tasks_old_lease_can_write_nothing(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let me = owner("m", "o");
    let lease = running(s, resumable("u1")).await;
    let id = lease.task_id.clone();
    s.update_progress(
        &id,
        &me,
        Some(&lease),
        progress(0.3, Some("a"), Some("[3]")),
    )
    .await
    .unwrap();
    s.ask_confirmation(&lease, "{}", 1, None).await.unwrap();
    assert_eq!(
        s.answer_confirmation(&id, answer(5), None).await.unwrap(),
        Answered::Recorded
    );
    let rec = s.recover_expired(Some(&HostId::local())).await.unwrap();
    assert_eq!(rec.resumed, std::slice::from_ref(&id));
    let before = get(s, &id).await;
    assert_eq!(before.status, Status::Pending);

    assert_every_write_is_fenced(s, &lease, &me).await;
    assert_eq!(get(s, &id).await, before, "nothing changed");
}

pub async fn after_another_host_claims_a_task_only_its_new_lease_can_write(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let me = owner("m", "o");
    let (h1, h2) = (host("h1"), host("h2"));
    let old = running_on(s, &h1, resumable("u1"), SHORT_LEASE).await;
    let id = old.task_id.clone();
    tokio::time::sleep(LAPSE).await;
    assert_eq!(
        s.recover_expired(None).await.unwrap().resumed,
        std::slice::from_ref(&id)
    );
    let new = lease_of(&claim_all(s, &h2, "m", LEASE).await, &id);
    let before = get(s, &id).await;
    assert_eq!(
        (before.status, before.host.as_deref()),
        (Status::Running, Some("h2"))
    );

    assert_every_write_is_fenced(s, &old, &me).await;
    assert_eq!(
        s.renew(&h1, std::slice::from_ref(&old), LEASE)
            .await
            .unwrap(),
        [LeaseState::Lost]
    );
    assert_eq!(get(s, &id).await, before, "nothing changed");

    let r = s
        .update_progress(&id, &me, Some(&new), progress(0.6, None, Some("[6]")))
        .await
        .unwrap();
    assert!(matches!(r, ProgressResult::Updated(row) if row.progress == 0.6));
    assert_eq!(
        s.ask_confirmation(&new, "{}", 10, None).await.unwrap(),
        Asked::Waiting
    );
    s.answer_confirmation(&id, answer(11), None).await.unwrap();
    assert_eq!(
        s.renew(&h2, std::slice::from_ref(&new), LEASE)
            .await
            .unwrap(),
        [LeaseState::Held { answered: true }]
    );
    assert_eq!(
        s.close_confirmation(&new, now_ms()).await.unwrap(),
        Some(answer(11))
    );
    assert!(s.finish(&id, Some(&new), completed("6")).await.unwrap());
    let row = get(s, &id).await;
    assert_eq!(
        (row.status, row.result_json.as_deref()),
        (Status::Completed, Some("6"))
    );
    assert_eq!(row.checkpoint_json.as_deref(), Some("[6]"));
}

pub async fn a_cancel_without_a_lease_ends_the_task_whoever_holds_it(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let h1 = host("h1");
    let run = running_on(s, &h1, task("m", "o", "u1", None), LEASE).await;
    let wait = running_on(s, &h1, task("m", "o", "u1", None), LEASE).await;
    s.ask_confirmation(&wait, "{}", 1, None).await.unwrap();
    for lease in [&run, &wait] {
        let by = Outcome::Cancelled {
            by: Some("u2".into()),
        };
        assert!(s.finish(&lease.task_id, None, by).await.unwrap());
        let row = get(s, &lease.task_id).await;
        assert_eq!((row.status, row.host), (Status::Cancelled, None));
        assert_eq!(row.failure_message.as_deref(), Some("cancelled by u2"));
        assert_eq!(
            s.renew(&h1, std::slice::from_ref(lease), LEASE)
                .await
                .unwrap(),
            [LeaseState::Lost]
        );
        // The run's own end comes too late: the task is final, not taken.
        assert!(
            !s.finish(&lease.task_id, Some(lease), completed("1"))
                .await
                .unwrap()
        );
        assert_eq!(status(s, &lease.task_id).await, Status::Cancelled);
    }
}

pub async fn progress_without_a_lease_updates_an_active_task_whoever_holds_it(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let me = owner("m", "o");
    let held = running_on(s, &host("h2"), task("m", "o", "u1", None), LEASE).await;
    let pending = created(s, task("m", "o", "u1", None)).await;
    for id in [&held.task_id, &pending] {
        let r = s
            .update_progress(id, &me, None, progress(0.7, Some("seven"), None))
            .await
            .unwrap();
        let ProgressResult::Updated(row) = r else {
            panic!("{r:?}")
        };
        assert_eq!((row.progress, row.label.as_deref()), (0.7, Some("seven")));
    }
    assert_eq!(status(s, &held.task_id).await, Status::Running);
    assert_eq!(status(s, &pending).await, Status::Pending);
}

// ---- compare-and-set transitions ----------------------------------------------

pub async fn racing_finish_and_cancel_have_exactly_one_winner(store: Arc<dyn TaskStore>) {
    for _ in 0..50 {
        let lease = running(&*store, task("m", "o", "u1", None)).await;
        let id = lease.task_id.clone();
        let (s1, s2) = (Arc::clone(&store), Arc::clone(&store));
        let (i1, i2) = (id.clone(), id.clone());
        let done =
            tokio::spawn(
                async move { s1.finish(&i1, Some(&lease), completed("1")).await.unwrap() },
            );
        let cancel = tokio::spawn(async move {
            let by = Outcome::Cancelled {
                by: Some("u2".into()),
            };
            s2.finish(&i2, None, by).await.unwrap()
        });
        let (done, cancel) = (done.await.unwrap(), cancel.await.unwrap());
        assert!(done ^ cancel, "exactly one wins");
        let row = get(&*store, &id).await;
        if done {
            assert_eq!(row.status, Status::Completed);
            assert_eq!(row.result_json.as_deref(), Some("1"));
        } else {
            assert_eq!(row.status, Status::Cancelled);
            assert_eq!(row.failure_message.as_deref(), Some("cancelled by u2"));
        }
    }
}

pub async fn finishing_a_final_task_returns_false_and_keeps_its_outcome(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    let failed = Outcome::Failed {
        kind: "trap".into(),
        message: "unreachable".into(),
    };
    assert!(s.finish(&id, Some(&lease), failed).await.unwrap());
    assert!(!s.finish(&id, Some(&lease), completed("1")).await.unwrap());
    assert!(!s.finish(&id, None, cancelled()).await.unwrap());
    let row = get(s, &id).await;
    assert_eq!(row.status, Status::Failed);
    assert_eq!(row.failure_kind.as_deref(), Some("trap"));
    assert_eq!(row.failure_message.as_deref(), Some("unreachable"));
    assert!(row.finished_at.is_some() && row.result_json.is_none());
    let missing = uuid::Uuid::now_v7().to_string();
    assert!(!s.finish(&missing, None, cancelled()).await.unwrap());
}

pub async fn completing_a_task_stores_its_result_and_full_progress(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    s.finish(&id, Some(&lease), completed(r#"{"n":3}"#))
        .await
        .unwrap();
    let row = get(s, &id).await;
    assert_eq!(row.status, Status::Completed);
    assert_eq!(row.result_json.as_deref(), Some(r#"{"n":3}"#));
    assert_eq!(row.progress, 1.0);
    assert_eq!(row.host, None);
}

// ---- progress -----------------------------------------------------------------

pub async fn progress_updates_the_owners_task_with_label_and_checkpoint(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    let me = owner("m", "o");
    let r = s
        .update_progress(
            &id,
            &me,
            Some(&lease),
            progress(0.25, Some("a"), Some(r#"{"step":1}"#)),
        )
        .await
        .unwrap();
    let ProgressResult::Updated(row) = r else {
        panic!("{r:?}")
    };
    assert_eq!(row.progress, 0.25);
    // Absent label and checkpoint keep the stored ones.
    s.update_progress(&id, &me, Some(&lease), progress(0.5, None, None))
        .await
        .unwrap();
    let row = get(s, &id).await;
    assert_eq!(row.progress, 0.5);
    assert_eq!(row.label.as_deref(), Some("a"));
    assert_eq!(row.checkpoint_json.as_deref(), Some(r#"{"step":1}"#));
}

pub async fn progress_of_another_modules_or_organizations_task_is_not_found(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    for them in [owner("other", "o"), owner("m", "o2")] {
        for l in [None, Some(&lease)] {
            let r = s
                .update_progress(&id, &them, l, progress(0.9, Some("x"), None))
                .await
                .unwrap();
            assert_eq!(r, ProgressResult::NotFound);
        }
    }
    let missing = uuid::Uuid::now_v7().to_string();
    let r = s
        .update_progress(&missing, &owner("m", "o"), None, progress(0.9, None, None))
        .await
        .unwrap();
    assert_eq!(r, ProgressResult::NotFound);
    let row = get(s, &id).await;
    assert_eq!((row.progress, row.label), (0.0, None));
}

pub async fn progress_of_a_final_task_is_not_active(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    s.finish(&id, None, cancelled()).await.unwrap();
    for l in [None, Some(&lease)] {
        let r = s
            .update_progress(&id, &owner("m", "o"), l, progress(0.5, None, None))
            .await
            .unwrap();
        assert_eq!(r, ProgressResult::NotActive);
    }
}

pub async fn progress_outside_zero_to_one_is_invalid_input(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    for p in [f64::NAN, -0.1, 1.5, f64::INFINITY] {
        let r = s
            .update_progress(
                &lease.task_id,
                &owner("m", "o"),
                Some(&lease),
                progress(p, None, None),
            )
            .await;
        assert!(matches!(r, Err(TaskStoreError::InvalidInput(_))), "{p}");
    }
    assert_eq!(get(s, &lease.task_id).await.progress, 0.0);
}

// ---- confirmation ---------------------------------------------------------------

pub async fn asking_moves_a_running_task_to_waiting_with_its_surface(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let asked = s
        .ask_confirmation(&lease, r#"{"title":"Go?"}"#, 10, Some(100))
        .await
        .unwrap();
    assert_eq!(asked, Asked::Waiting);
    let row = get(s, &lease.task_id).await;
    assert_eq!(row.status, Status::WaitingConfirmation);
    assert_eq!(row.host.as_deref(), Some(HostId::local().as_str()));
    let c = row.confirmation.unwrap();
    assert_eq!(
        (c.surface_json.as_str(), c.asked_at, c.expires_at),
        (r#"{"title":"Go?"}"#, 10, Some(100))
    );
    assert!(c.answer.is_none() && !c.consumed);
}

pub async fn asking_for_a_waiting_final_or_missing_task_is_not_active(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let wait = waiting(s).await;
    let done = running(s, task("m", "o", "u1", None)).await;
    s.finish(&done.task_id, None, cancelled()).await.unwrap();
    let missing = Lease {
        task_id: uuid::Uuid::now_v7().to_string(),
        version: 1,
    };
    for lease in [&wait, &done, &missing] {
        let asked = s.ask_confirmation(lease, "{}", 2, None).await.unwrap();
        assert_eq!(asked, Asked::NotActive);
    }
    assert_eq!(
        get(s, &wait.task_id).await.confirmation.unwrap().asked_at,
        1,
        "the open question stays"
    );
    assert_eq!(get(s, &done.task_id).await.confirmation, None);
}

pub async fn an_answer_naming_another_question_than_the_open_one_is_refused_in_the_same_write(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    s.ask_confirmation(&lease, "{}", 7, None).await.unwrap();
    assert_eq!(
        s.answer_confirmation(&id, answer(8), Some(3))
            .await
            .unwrap(),
        Answered::OtherQuestion
    );
    assert_eq!(get(s, &id).await.confirmation.unwrap().answer, None);
    assert_eq!(
        s.answer_confirmation(&id, answer(8), Some(7))
            .await
            .unwrap(),
        Answered::Recorded
    );
}

pub async fn an_answer_is_recorded_once_with_who_and_when(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    assert_eq!(
        s.answer_confirmation(&id, answer(5), None).await.unwrap(),
        Answered::NotWaiting,
        "nothing asked yet"
    );
    s.ask_confirmation(&lease, "{}", 1, None).await.unwrap();
    assert_eq!(
        s.answer_confirmation(&id, answer(5), None).await.unwrap(),
        Answered::Recorded
    );
    let mut late = answer(6);
    late.answered_by = "u9".into();
    assert_eq!(
        s.answer_confirmation(&id, late, None).await.unwrap(),
        Answered::NotWaiting
    );
    let c = get(s, &id).await.confirmation.unwrap();
    assert_eq!(c.answer, Some(answer(5)));
    let missing = uuid::Uuid::now_v7().to_string();
    assert_eq!(
        s.answer_confirmation(&missing, answer(5), None)
            .await
            .unwrap(),
        Answered::NotFound
    );
}

pub async fn an_answer_after_the_expiry_is_refused(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    // Answers are judged by when they were given and when they are written.
    let expires = now_ms() + 60_000;
    s.ask_confirmation(&lease, "{}", 1, Some(expires))
        .await
        .unwrap();
    assert_eq!(
        s.answer_confirmation(&id, answer(expires), None)
            .await
            .unwrap(),
        Answered::NotWaiting
    );
    assert_eq!(
        s.answer_confirmation(&id, answer(expires - 1), None)
            .await
            .unwrap(),
        Answered::Recorded
    );
    // A question that expired before it is answered refuses even an answer
    // dated earlier.
    let lease = running(s, task("m", "o", "u1", None)).await;
    s.ask_confirmation(&lease, "{}", 1, Some(now_ms() - 1))
        .await
        .unwrap();
    assert_eq!(
        s.answer_confirmation(&lease.task_id, answer(0), None)
            .await
            .unwrap(),
        Answered::NotWaiting
    );
}

pub async fn an_unconsumed_answer_is_returned_by_the_repeated_ask_without_a_status_change(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    s.ask_confirmation(&lease, "{}", 1, None).await.unwrap();
    s.answer_confirmation(&id, answer(5), None).await.unwrap();
    let before = get(s, &id).await;
    let asked = s
        .ask_confirmation(&lease, r#"{"again":1}"#, 9, None)
        .await
        .unwrap();
    assert_eq!(asked, Asked::AlreadyAnswered(answer(5)));
    assert_eq!(
        get(s, &id).await,
        before,
        "neither status nor question changed"
    );
}

pub async fn a_consumed_answer_lets_the_next_ask_open_a_new_confirmation(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    s.ask_confirmation(&lease, "{}", 1, None).await.unwrap();
    assert!(
        !s.consume_answer(&lease).await.unwrap(),
        "nothing to consume yet"
    );
    s.answer_confirmation(&id, answer(5), None).await.unwrap();
    assert!(s.consume_answer(&lease).await.unwrap());
    assert!(!s.consume_answer(&lease).await.unwrap(), "only once");
    let c = get(s, &id).await.confirmation.unwrap();
    assert!(c.consumed && c.answer == Some(answer(5)));
    assert_eq!(
        s.close_confirmation(&lease, now_ms()).await.unwrap(),
        None,
        "already delivered"
    );
    assert_eq!(status(s, &id).await, Status::Running);
    let asked = s
        .ask_confirmation(&lease, r#"{"second":true}"#, 7, None)
        .await
        .unwrap();
    assert_eq!(asked, Asked::Waiting);
    let c = get(s, &id).await.confirmation.unwrap();
    assert_eq!(
        (c.surface_json.as_str(), c.asked_at),
        (r#"{"second":true}"#, 7)
    );
    assert!(c.answer.is_none() && !c.consumed);
}

pub async fn closing_a_confirmation_only_moves_a_waiting_task(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let lease = running(s, task("m", "o", "u1", None)).await;
    let id = lease.task_id.clone();
    let before = get(s, &id).await;
    assert_eq!(s.close_confirmation(&lease, now_ms()).await.unwrap(), None);
    assert_eq!(get(s, &id).await, before, "nothing to close");
    s.ask_confirmation(&lease, "{}", 1, None).await.unwrap();
    assert_eq!(s.close_confirmation(&lease, now_ms()).await.unwrap(), None);
    assert_eq!(status(s, &id).await, Status::Running);
    assert_eq!(s.close_confirmation(&lease, now_ms()).await.unwrap(), None);
    assert_eq!(status(s, &id).await, Status::Running);
    s.finish(&id, None, cancelled()).await.unwrap();
    assert_eq!(s.close_confirmation(&lease, now_ms()).await.unwrap(), None);
    assert_eq!(status(s, &id).await, Status::Cancelled);
}

pub async fn closing_a_confirmation_decides_between_an_answer_and_a_timeout_once(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    // Closed with no answer: a later answer is refused, the task runs again.
    let lease = running(s, task("m", "o", "u", None)).await;
    s.ask_confirmation(&lease, "{}", 10, None).await.unwrap();
    assert_eq!(s.close_confirmation(&lease, now_ms()).await.unwrap(), None);
    assert_eq!(status(s, &lease.task_id).await, Status::Running);
    let late = s
        .answer_confirmation(&lease.task_id, answer(now_ms()), None)
        .await
        .unwrap();
    assert_eq!(late, Answered::NotWaiting);
    // Answered before the close: the close returns it, once.
    let lease = running(s, task("m", "o", "u", None)).await;
    s.ask_confirmation(&lease, "{}", 10, None).await.unwrap();
    let recorded = s
        .answer_confirmation(&lease.task_id, answer(now_ms()), None)
        .await
        .unwrap();
    assert_eq!(recorded, Answered::Recorded);
    let closed = s.close_confirmation(&lease, now_ms()).await.unwrap();
    assert_eq!(closed.map(|a| a.answered_by), Some("u1".to_owned()));
    assert_eq!(
        s.close_confirmation(&lease, now_ms()).await.unwrap(),
        None,
        "consumed"
    );
    assert_eq!(status(s, &lease.task_id).await, Status::Running);
}

// ---- recovery -------------------------------------------------------------------

pub async fn recovery_interrupts_active_tasks_that_are_not_resumable(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let run = running(s, task("m", "o", "u1", None)).await;
    let wait = running(s, task("m", "o", "u1", None)).await;
    s.ask_confirmation(&wait, "{}", 1, None).await.unwrap();
    let done = running(s, task("m", "o", "u1", None)).await;
    s.finish(&done.task_id, Some(&done), completed("1"))
        .await
        .unwrap();
    let pending = created(s, task("m", "o", "u1", None)).await;
    let rec = s.recover_expired(Some(&HostId::local())).await.unwrap();
    let mut both = vec![run.task_id.clone(), wait.task_id.clone()];
    both.sort();
    assert_eq!(
        rec,
        Recovery {
            resumed: vec![],
            interrupted: both,
            timed_out: vec![],
        }
    );
    for lease in [run, wait] {
        let row = get(s, &lease.task_id).await;
        assert_eq!(row.status, Status::Interrupted);
        assert_eq!(row.failure_kind.as_deref(), Some("interrupted"));
        assert_eq!(row.failure_message.as_deref(), Some(HOST_RESTARTED));
        assert!(row.finished_at.is_some());
        assert_eq!(row.host, None);
    }
    assert_eq!(status(s, &done.task_id).await, Status::Completed);
    assert_eq!(status(s, &pending).await, Status::Pending);
}

pub async fn a_recovery_of_more_lapsed_leases_than_a_page_recovers_every_one(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let page = usize::try_from(super::RECOVERY_PAGE).unwrap();
    let (mut resumable, mut other) = (Vec::new(), Vec::new());
    // Two pages and a little of each kind.
    for i in 0..2 * (2 * page + 10) {
        let mut t = task("m", "o", &format!("u{}", i % 7), None);
        t.resumable = i % 2 == 0;
        let id = created(s, t).await;
        if i % 2 == 0 {
            resumable.push(id);
        } else {
            other.push(id);
        }
    }
    let mut claimed = 0;
    while claimed < resumable.len() + other.len() {
        let got = claim_all(s, &HostId::local(), "m", SHORT_LEASE).await.len();
        assert!(got > 0, "every task is claimed");
        claimed += got;
    }
    tokio::time::sleep(LAPSE).await;
    resumable.sort();
    other.sort();
    let (mut recovered, mut pages) = (Recovery::default(), 0);
    loop {
        let next = s.recover_expired(None).await.unwrap();
        assert!(next.resumed.len() <= page && next.interrupted.len() <= page);
        let more = next.is_full_page();
        recovered.extend(next);
        pages += 1;
        if !more {
            break;
        }
    }
    assert_eq!(pages, 3, "two full pages, then the rest");
    assert_eq!(
        recovered,
        Recovery {
            resumed: resumable,
            interrupted: other,
            timed_out: vec![],
        }
    );
    assert_eq!(s.recover_expired(None).await.unwrap(), Recovery::default());
}

pub async fn recovery_leaves_pending_tasks_pending(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let a = created(s, task("m", "o", "u1", None)).await;
    let b = created(s, task("m", "o", "u2", None)).await;
    let before = [get(s, &a).await, get(s, &b).await];
    let h = HostId::local();
    assert_eq!(
        s.recover_expired(Some(&h)).await.unwrap(),
        Recovery::default()
    );
    assert_eq!(s.recover_expired(None).await.unwrap(), Recovery::default());
    assert_eq!([get(s, &a).await, get(s, &b).await], before);
    let claimed = s
        .claim(
            &h,
            &[Want {
                module: "m".into(),
                max: 1,
            }],
            LEASE,
        )
        .await
        .unwrap();
    assert_eq!(claimed_ids(&claimed), HashSet::from([a]), "oldest first");
}

pub async fn recovery_requeues_resumable_tasks_with_checkpoint_and_open_confirmation(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let h = HostId::local();
    let run = running(s, resumable("u1")).await;
    s.update_progress(
        &run.task_id,
        &owner("m", "o"),
        Some(&run),
        progress(0.4, None, Some("[4]")),
    )
    .await
    .unwrap();
    let wait = running(s, resumable("u1")).await;
    s.ask_confirmation(&wait, "{}", 1, None).await.unwrap();

    let rec = s.recover_expired(Some(&h)).await.unwrap();
    assert_eq!(rec.resumed, [run.task_id.clone(), wait.task_id.clone()]);
    assert!(rec.interrupted.is_empty());
    let row = get(s, &run.task_id).await;
    assert_eq!(row.status, Status::Pending);
    assert_eq!(row.checkpoint_json.as_deref(), Some("[4]"));

    // The open confirmation survives and may be answered before the re-run.
    let row = get(s, &wait.task_id).await;
    assert_eq!(row.status, Status::Pending);
    let c = row.confirmation.unwrap();
    assert_eq!((c.asked_at, c.answer), (1, None));
    let claimed = claim_all(s, &h, "m", LEASE).await;
    assert_eq!(claimed.len(), 2);
    let rerun = lease_of(&claimed, &wait.task_id);
    let asked = s.ask_confirmation(&rerun, "{}", 9_001, None).await.unwrap();
    assert_eq!(asked, Asked::Waiting, "the re-run waits for the answer");
    assert_eq!(
        s.answer_confirmation(&wait.task_id, answer(9_002), None)
            .await
            .unwrap(),
        Answered::Recorded
    );
}

pub async fn an_answer_to_a_recovered_wait_is_recorded_and_resumes_nothing(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let h = HostId::local();
    let wait = running(s, resumable("u1")).await;
    s.ask_confirmation(&wait, "{}", 1, None).await.unwrap();
    let rec = s.recover_expired(Some(&h)).await.unwrap();
    assert_eq!(rec.resumed, std::slice::from_ref(&wait.task_id));
    // Pending already, without a lease, but it was not parked: the answer
    // waits for its next ask and nothing more changes.
    assert_eq!(
        s.answer_confirmation(&wait.task_id, answer(5), None)
            .await
            .unwrap(),
        Answered::Recorded
    );
    assert_eq!(status(s, &wait.task_id).await, Status::Pending);
    let rerun = lease_of(&claim_all(s, &h, "m", LEASE).await, &wait.task_id);
    let asked = s.ask_confirmation(&rerun, "{}", 9, None).await.unwrap();
    assert!(matches!(asked, Asked::AlreadyAnswered(_)), "{asked:?}");
}

pub async fn recovery_keeps_an_answered_confirmation_for_the_repeated_ask(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let h = HostId::local();
    let lease = running(s, resumable("u1")).await;
    let id = lease.task_id.clone();
    s.ask_confirmation(&lease, "{}", 1, None).await.unwrap();
    s.answer_confirmation(&id, answer(5), None).await.unwrap();
    // The host restarts.
    let rec = s.recover_expired(Some(&h)).await.unwrap();
    assert_eq!(rec.resumed, std::slice::from_ref(&id));
    let rerun = lease_of(&claim_all(s, &h, "m", LEASE).await, &id);
    let asked = s.ask_confirmation(&rerun, "{}", 9_001, None).await.unwrap();
    assert_eq!(asked, Asked::AlreadyAnswered(answer(5)));
    assert_eq!(status(s, &id).await, Status::Running);
}

// ---- parked waits -------------------------------------------------------------

/// A claimed resumable task that asked `surface` (expiring at `expires`)
/// and was parked; its old lease.
async fn parked(s: &dyn TaskStore, surface: &str, expires: Option<i64>) -> Lease {
    let lease = running(s, resumable("u1")).await;
    s.update_progress(
        &lease.task_id,
        &owner("m", "o"),
        Some(&lease),
        progress(0.5, None, Some("[5]")),
    )
    .await
    .unwrap();
    let asked = s
        .ask_confirmation(&lease, surface, now_ms(), expires)
        .await
        .unwrap();
    assert_eq!(asked, Asked::Waiting);
    assert!(s.park(&lease).await.unwrap(), "a waiting task parks");
    lease
}

pub async fn a_parked_task_waits_without_a_lease_that_renewals_and_recoveries_reach(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let h = HostId::local();
    let old = parked(s, "{}", None).await;
    let row = get(s, &old.task_id).await;
    assert_eq!(row.status, Status::WaitingConfirmation);
    assert_eq!(row.host, None, "no host holds it");
    assert_eq!(
        s.renew(&h, std::slice::from_ref(&old), LEASE)
            .await
            .unwrap(),
        [LeaseState::Lost]
    );
    // Neither a lapse nor a restart of its host touches it.
    tokio::time::sleep(LAPSE).await;
    let rec = s.recover_expired(Some(&h)).await.unwrap();
    assert_eq!(rec, Recovery::default());
    assert!(claim_all(s, &h, "m", LEASE).await.is_empty());
    assert_eq!(status(s, &old.task_id).await, Status::WaitingConfirmation);
    assert_every_write_is_fenced(s, &old, &owner("m", "o")).await;
}

pub async fn answering_a_parked_task_makes_it_pending_and_its_next_run_gets_the_answer(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let h = host("b");
    let old = parked(s, r#"{"q":1}"#, None).await;
    let id = old.task_id.clone();
    assert_eq!(
        s.answer_confirmation(&id, answer(now_ms()), None)
            .await
            .unwrap(),
        Answered::Resumed
    );
    assert_eq!(status(s, &id).await, Status::Pending);
    // Any host takes it up, from its checkpoint, and its repeated ask gets
    // the answer once.
    let claimed = claim_all(s, &h, "m", LEASE).await;
    let rerun = lease_of(&claimed, &id);
    assert_eq!(claimed[0].row.checkpoint_json.as_deref(), Some("[5]"));
    let asked = s
        .ask_confirmation(&rerun, r#"{"q":1}"#, now_ms(), None)
        .await
        .unwrap();
    let Asked::AlreadyAnswered(got) = asked else {
        panic!("expected the answer, got {asked:?}")
    };
    assert_eq!(got.answer_json, answer(0).answer_json);
    assert_eq!(status(s, &id).await, Status::Running);
    assert!(s.consume_answer(&rerun).await.unwrap());
    let again = s
        .ask_confirmation(&rerun, r#"{"q":1}"#, now_ms(), None)
        .await
        .unwrap();
    assert_eq!(again, Asked::Waiting, "a new question after the answer");
}

pub async fn a_parked_question_that_expires_makes_the_task_pending_to_hear_the_timeout_once(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let h = HostId::local();
    // Far enough ahead that parking it comes first on a loaded machine.
    let expires = now_ms() + 2_000;
    let old = parked(s, "{}", Some(expires)).await;
    let id = old.task_id.clone();
    assert_eq!(s.recover_expired(None).await.unwrap(), Recovery::default());
    clock_past(expires).await;
    let rec = s.recover_expired(None).await.unwrap();
    assert_eq!(rec.timed_out, std::slice::from_ref(&id));
    assert!(rec.resumed.is_empty() && rec.interrupted.is_empty());
    assert_eq!(status(s, &id).await, Status::Pending);
    assert_eq!(
        s.answer_confirmation(&id, answer(now_ms()), None)
            .await
            .unwrap(),
        Answered::NotWaiting,
        "too late"
    );
    assert_eq!(s.recover_expired(None).await.unwrap(), Recovery::default());
    let rerun = lease_of(&claim_all(s, &h, "m", LEASE).await, &id);
    let asked = s.ask_confirmation(&rerun, "{}", now_ms(), None).await;
    assert_eq!(asked.unwrap(), Asked::AlreadyTimedOut);
    assert_eq!(status(s, &id).await, Status::Running);
    assert!(s.consume_answer(&rerun).await.unwrap());
    assert!(!s.consume_answer(&rerun).await.unwrap(), "heard once");
    let again = s.ask_confirmation(&rerun, "{}", now_ms(), None).await;
    assert_eq!(again.unwrap(), Asked::Waiting);
}

pub async fn parking_is_refused_once_an_answer_is_recorded_or_the_task_is_cancelled(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let h = HostId::local();
    let answered = waiting(s).await;
    s.answer_confirmation(&answered.task_id, answer(now_ms()), None)
        .await
        .unwrap();
    assert!(!s.park(&answered).await.unwrap());
    let row = get(s, &answered.task_id).await;
    assert_eq!(row.host.as_deref(), Some(h.as_str()), "still held");
    assert_eq!(
        s.renew(&h, std::slice::from_ref(&answered), LEASE)
            .await
            .unwrap(),
        [LeaseState::Held { answered: true }]
    );
    let running = running(s, task("m", "o", "u1", None)).await;
    assert!(
        !s.park(&running).await.unwrap(),
        "a running task has no question"
    );
    let gone = waiting(s).await;
    assert!(s.finish(&gone.task_id, None, cancelled()).await.unwrap());
    assert!(!s.park(&gone).await.unwrap());
}

pub async fn a_parked_task_can_be_cancelled_and_is_never_claimed(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let old = parked(s, "{}", None).await;
    let id = old.task_id.clone();
    assert!(s.finish(&id, None, cancelled()).await.unwrap());
    assert_eq!(status(s, &id).await, Status::Cancelled);
    assert_eq!(
        s.answer_confirmation(&id, answer(now_ms()), None)
            .await
            .unwrap(),
        Answered::NotWaiting
    );
    assert!(claim_all(s, &HostId::local(), "m", LEASE).await.is_empty());
}

pub async fn parking_under_an_old_lease_is_lease_lost(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let h = HostId::local();
    let first = running_on(s, &h, resumable("u1"), SHORT_LEASE).await;
    s.ask_confirmation(&first, "{}", now_ms(), None)
        .await
        .unwrap();
    tokio::time::sleep(LAPSE).await;
    assert_eq!(s.recover_expired(None).await.unwrap().resumed.len(), 1);
    assert!(matches!(
        s.park(&first).await,
        Err(TaskStoreError::LeaseLost { .. })
    ));
}

// ---- retention --------------------------------------------------------------

/// Waits until the store's clock has passed `at`, which it stamped.
async fn clock_past(at: i64) {
    while now_ms() <= at + 1 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A task of `m2`/`o` ended with `outcome`; its `finished_at`.
async fn ended(store: &dyn TaskStore, outcome: Outcome) -> (String, i64) {
    let id = created(store, task("m2", "o", "u1", None)).await;
    assert!(store.finish(&id, None, outcome).await.unwrap());
    let finished = get(store, &id).await.finished_at.expect("finished");
    (id, finished)
}

pub async fn pruning_deletes_finished_tasks_before_the_cutoff_and_never_an_active_one(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let started = running(s, task("m", "o", "u1", None)).await.task_id;
    let waiting = waiting(s).await.task_id;
    let pending = created(s, task("m", "o", "u1", None)).await;
    let mut old = Vec::new();
    let mut last = 0;
    for outcome in [
        completed("1"),
        Outcome::Failed {
            kind: "error".into(),
            message: "no".into(),
        },
        cancelled(),
        Outcome::Interrupted {
            message: "stopped".into(),
        },
    ] {
        let (id, at) = ended(s, outcome).await;
        old.push(id);
        last = last.max(at);
    }
    clock_past(last).await;
    let (recent, cutoff) = ended(s, completed("2")).await;
    assert!(cutoff > last);

    assert_eq!(s.prune(cutoff, 100).await.unwrap(), 4);
    for id in &old {
        assert!(s.get_unscoped(id).await.unwrap().is_none(), "{id} was kept");
    }
    for id in [&recent, &pending, &started, &waiting] {
        assert!(
            s.get_unscoped(id).await.unwrap().is_some(),
            "{id} was pruned"
        );
    }
    // Even a cutoff in the future spares active tasks.
    assert_eq!(s.prune(i64::MAX, 100).await.unwrap(), 1);
    assert!(s.get_unscoped(&recent).await.unwrap().is_none());
    let mut active = org_tasks(s, "o", &[]).await;
    active.sort();
    let mut expected = vec![started, waiting, pending];
    expected.sort();
    assert_eq!(active, expected);
}

pub async fn one_pruning_write_deletes_at_most_its_limit_oldest_first(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let mut finished = Vec::new();
    for _ in 0..5 {
        let (id, at) = ended(s, completed("1")).await;
        finished.push(id);
        clock_past(at).await;
    }
    let left = move || async move { org_tasks(s, "o", &[]).await.len() };
    assert_eq!(s.prune(i64::MAX, 2).await.unwrap(), 2);
    assert_eq!(left().await, 3);
    for (i, id) in finished.iter().enumerate() {
        let kept = s.get_unscoped(id).await.unwrap().is_some();
        assert_eq!(kept, i >= 2, "task {i} finished {i}th");
    }
    assert_eq!(s.prune(i64::MAX, 2).await.unwrap(), 2);
    assert!(
        s.get_unscoped(&finished[4]).await.unwrap().is_some(),
        "the newest stays until the last batch"
    );
    assert_eq!(s.prune(i64::MAX, 2).await.unwrap(), 1);
    assert_eq!(s.prune(i64::MAX, 2).await.unwrap(), 0);
    assert_eq!(left().await, 0);
}

// ---- lookups --------------------------------------------------------------------

pub async fn by_key_returns_exact_matches_newest_first(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let mut expected = Vec::new();
    for _ in 0..3 {
        let id = created(s, task("m", "o", "u1", Some("k"))).await;
        s.finish(&id, None, cancelled()).await.unwrap();
        expected.push(id);
    }
    created(s, task("m", "o", "u1", Some("k2"))).await;
    created(s, task("m", "o", "u1", Some("kk"))).await;
    expected.reverse();
    let rows = s.by_key(&scope("m", "o", None), "k", 10).await.unwrap();
    assert_eq!(ids(&rows), expected);
    let rows = s.by_key(&scope("m", "o", None), "k", 2).await.unwrap();
    assert_eq!(ids(&rows), expected[..2]);
}

pub async fn key_prefix_treats_percent_underscore_and_backslash_as_ordinary_characters(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let keys = [
        "a%b", "a%", "a_b", "a\\b", "axb", "ab", "a%%", "a_", "a\\", "b%",
    ];
    for key in keys {
        created(s, task("m", "o", "u1", Some(key))).await;
    }
    let all = &scope("m", "o", None);
    let matching = move |prefix: &'static str| async move {
        let mut rows: Vec<String> = s
            .by_key_prefix(all, prefix, 50)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.task_key.unwrap())
            .collect();
        rows.sort();
        rows
    };
    assert_eq!(matching("a%").await, vec!["a%", "a%%", "a%b"]);
    assert_eq!(matching("a_").await, vec!["a_", "a_b"]);
    assert_eq!(matching("a\\").await, vec!["a\\", "a\\b"]);
    assert_eq!(matching("a%%").await, vec!["a%%"]);
    assert_eq!(matching("%").await.len(), 0);
    assert_eq!(matching("").await.len(), keys.len());
}

pub async fn key_prefix_handles_non_ascii_and_the_last_code_point(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let max = char::MAX;
    for key in [
        "é1".to_owned(),
        "é2".to_owned(),
        "ê".to_owned(),
        format!("z{max}"),
        format!("z{max}{max}"),
        format!("z{max}a"),
        "{".to_owned(),
    ] {
        created(s, task("m", "o", "u1", Some(&key))).await;
    }
    let all = &scope("m", "o", None);
    let count =
        move |prefix: String| async move { s.by_key_prefix(all, &prefix, 50).await.unwrap().len() };
    assert_eq!(count("é".into()).await, 2);
    assert_eq!(count(format!("z{max}")).await, 3);
    assert_eq!(count(format!("{max}")).await, 0);
}

pub async fn lookups_are_capped_at_500_rows(store: Arc<dyn TaskStore>) {
    submit_many(&store, 510, |i| {
        task("m", "o", "u1", Some(&format!("k.{i}")))
    })
    .await;
    let all = scope("m", "o", None);
    let s = &*store;
    assert_eq!(
        s.by_key_prefix(&all, "k.", 10_000).await.unwrap().len(),
        500
    );
    assert_eq!(s.by_user(&all, u32::MAX).await.unwrap().len(), 500);
    assert_eq!(s.by_key(&all, "k.7", 0).await.unwrap().len(), 0);
    assert_eq!(s.by_key(&all, "k.7", 10).await.unwrap().len(), 1);
}

pub async fn by_user_lists_one_user_or_the_whole_organization_newest_first(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let a = created(s, task("m", "o", "u1", None)).await;
    let b = created(s, task("m", "o", "u2", None)).await;
    let c = created(s, task("m", "o", "u1", None)).await;
    created(s, task("m", "o2", "u1", None)).await;
    created(s, task("m2", "o", "u1", None)).await;
    let mine = s.by_user(&scope("m", "o", Some("u1")), 50).await.unwrap();
    assert_eq!(ids(&mine), vec![c.clone(), a.clone()]);
    let org = s.by_user(&scope("m", "o", None), 50).await.unwrap();
    assert_eq!(ids(&org), vec![c, b, a]);
}

pub async fn lookups_return_summaries_without_the_heavy_fields_and_get_returns_them(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let mut t = task("m", "o", "u", Some("heavy"));
    t.args_json = format!("\"{}\"", "x".repeat(100_000));
    let id = created(s, t).await;
    let update = ProgressUpdate {
        progress: 0.5,
        label: Some("half".into()),
        checkpoint_json: Some("{\"page\": 5}".into()),
    };
    s.update_progress(&id, &owner("m", "o"), None, update)
        .await
        .unwrap();
    let all = scope("m", "o", None);
    for rows in [
        s.by_key(&all, "heavy", 10).await.unwrap(),
        s.by_key_prefix(&all, "hea", 10).await.unwrap(),
        s.by_user(&all, 10).await.unwrap(),
        s.list(&all, &TaskFilter::default(), None, 10)
            .await
            .unwrap()
            .tasks,
    ] {
        assert_eq!(ids(&rows), std::slice::from_ref(&id));
        assert_eq!(rows[0].args_json, "");
        assert_eq!(rows[0].checkpoint_json, None);
        assert_eq!(rows[0].label.as_deref(), Some("half"));
    }
    let whole = s.get(&id, &all).await.unwrap().unwrap();
    assert_eq!(whole.args_json.len(), 100_002);
    assert_eq!(whole.checkpoint_json.as_deref(), Some("{\"page\": 5}"));
}

// ---- list -----------------------------------------------------------------------

pub async fn list_pages_newest_first_and_stays_stable_while_tasks_arrive(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let mut all = Vec::new();
    for _ in 0..7 {
        all.push(created(s, task("m", "o", "u1", None)).await);
    }
    all.reverse();
    let me = scope("m", "o", Some("u1"));
    let filter = TaskFilter::default();
    let first = s.list(&me, &filter, None, 3).await.unwrap();
    assert_eq!(ids(&first.tasks), all[..3]);
    // New work arrives between pages: the next pages do not shift.
    created(s, task("m", "o", "u1", None)).await;
    let cursor: super::Cursor = first.next_cursor.unwrap().to_string().parse().unwrap();
    let second = s.list(&me, &filter, Some(&cursor), 3).await.unwrap();
    assert_eq!(ids(&second.tasks), all[3..6]);
    let third = s
        .list(&me, &filter, second.next_cursor.as_ref(), 3)
        .await
        .unwrap();
    assert_eq!(ids(&third.tasks), all[6..]);
    assert!(third.next_cursor.is_none());
}

pub async fn list_filters_are_combined(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let mut t = task("m", "o", "u1", Some("report.1"));
    t.created_at = 100;
    let old = created(s, t).await;
    let mut t = task("m", "o", "u1", Some("report.2"));
    t.created_at = 200;
    let done = created(s, t).await;
    s.finish(&done, None, completed("1")).await.unwrap();
    let mut t = task("m", "o", "u1", Some("export.1"));
    t.created_at = 200;
    let export = created(s, t).await;
    let mut t = task("m", "o", "u1", Some("report.3"));
    t.task_name = "other".into();
    t.created_at = 300;
    let other_name = created(s, t).await;

    let me = &scope("m", "o", None);
    let list = move |filter: TaskFilter| async move {
        ids(&s.list(me, &filter, None, 50).await.unwrap().tasks)
    };
    let reports = TaskFilter {
        key_prefix: Some("report.".into()),
        ..TaskFilter::default()
    };
    assert_eq!(
        list(reports.clone()).await,
        vec![other_name.clone(), done.clone(), old.clone()]
    );
    assert_eq!(
        list(TaskFilter {
            statuses: vec![Status::Pending, Status::Running],
            task_name: Some("work".into()),
            ..reports.clone()
        })
        .await,
        vec![old.clone()]
    );
    assert_eq!(
        list(TaskFilter {
            created_after: Some(200),
            created_before: Some(300),
            ..TaskFilter::default()
        })
        .await,
        vec![export, done.clone()]
    );
    assert_eq!(
        list(TaskFilter {
            statuses: vec![Status::Completed],
            ..reports
        })
        .await,
        vec![done]
    );
}

pub async fn list_clamps_its_page_size_to_one_through_two_hundred(store: Arc<dyn TaskStore>) {
    let total = usize::try_from(MAX_PAGE_LIMIT).unwrap() + 1;
    submit_many(&store, total, |_| task("m", "o", "u1", None)).await;
    let me = scope("m", "o", None);
    let filter = TaskFilter::default();
    let page = store.list(&me, &filter, None, 0).await.unwrap();
    assert_eq!(page.tasks.len(), 1);
    assert!(page.next_cursor.is_some());
    let page = store.list(&me, &filter, None, u32::MAX).await.unwrap();
    assert_eq!(page.tasks.len(), total - 1);
    let rest = store
        .list(&me, &filter, page.next_cursor.as_ref(), u32::MAX)
        .await
        .unwrap();
    assert_eq!(rest.tasks.len(), 1);
    assert!(rest.next_cursor.is_none());
}

pub async fn listing_an_organization_spans_its_modules_unless_one_is_named(
    store: Arc<dyn TaskStore>,
) {
    let s = &*store;
    let a = created(s, task("m1", "o", "u1", None)).await;
    let b = created(s, task("m2", "o", "u2", None)).await;
    let c = created(s, task("m1", "o", "u2", None)).await;
    created(s, task("m1", "o2", "u1", None)).await;
    let list = move |module: Option<&str>, user: Option<&str>| {
        let scope = OrgScope {
            organization_id: "o".into(),
            user_id: user.map(Into::into),
            module: module.map(Into::into),
        };
        async move {
            let page = s
                .list_org(&scope, &TaskFilter::default(), None, 50)
                .await
                .unwrap();
            ids(&page.tasks)
        }
    };
    assert_eq!(list(None, None).await, [c.clone(), b.clone(), a.clone()]);
    assert_eq!(list(Some("m1"), None).await, [c.clone(), a.clone()]);
    assert_eq!(list(None, Some("u2")).await, [c.clone(), b]);
    assert_eq!(list(Some("m1"), Some("u1")).await, [a]);
    assert!(list(Some("m3"), None).await.is_empty());
}

// ---- scope ----------------------------------------------------------------------

pub async fn tasks_of_another_module_organization_or_user_are_invisible(store: Arc<dyn TaskStore>) {
    let s = &*store;
    let id = created(s, task("m", "o", "u1", Some("k.1"))).await;
    let visible = [scope("m", "o", Some("u1")), scope("m", "o", None)];
    let hidden = [
        scope("other", "o", None),
        scope("m", "o2", None),
        scope("m", "o", Some("u2")),
    ];
    let filter = TaskFilter::default();
    for sc in &visible {
        assert!(s.get(&id, sc).await.unwrap().is_some());
        assert_eq!(s.by_key(sc, "k.1", 10).await.unwrap().len(), 1);
        assert_eq!(s.by_key_prefix(sc, "k.", 10).await.unwrap().len(), 1);
        assert_eq!(s.by_user(sc, 10).await.unwrap().len(), 1);
        let page = s.list(sc, &filter, None, 10).await.unwrap();
        assert_eq!(page.tasks.len(), 1);
        let page = s.list_org(&sc.into(), &filter, None, 10).await.unwrap();
        assert_eq!(page.tasks.len(), 1);
    }
    for sc in &hidden {
        assert!(s.get(&id, sc).await.unwrap().is_none(), "{sc:?}");
        assert!(s.by_key(sc, "k.1", 10).await.unwrap().is_empty());
        assert!(s.by_key_prefix(sc, "k.", 10).await.unwrap().is_empty());
        assert!(s.by_user(sc, 10).await.unwrap().is_empty());
        let page = s.list(sc, &filter, None, 10).await.unwrap();
        assert!(page.tasks.is_empty());
        let page = s.list_org(&sc.into(), &filter, None, 10).await.unwrap();
        assert!(page.tasks.is_empty());
    }
    let missing = uuid::Uuid::now_v7().to_string();
    assert!(s.get(&missing, &visible[0]).await.unwrap().is_none());
}
