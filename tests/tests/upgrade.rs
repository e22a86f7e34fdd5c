//! A database made before each owner had its own schema version (one
//! `user_version` for the host's, the task store's and the audit trail's
//! migrations) opens on this host: nothing runs twice, nothing is lost, and
//! each owner's version is recorded.

use modhost::db::{HOST_MIGRATIONS, migrate};
use modhost::identity::{Principal, Role};
use modhost::tasks::store::Status;
use modhost_tests::host_on;
use rusqlite::Connection;

/// The single-counter layout, as the previous release wrote it: host
/// migration 1, task migration 1, then the audit table, `user_version` 3.
fn legacy_database(path: &std::path::Path) {
    let conn = Connection::open(path).unwrap();
    for sql in [
        HOST_MIGRATIONS[0],
        modhost::tasks::store::MIGRATIONS[0],
        modhost::audit::MIGRATIONS[0],
    ] {
        conn.execute_batch(sql).unwrap();
    }
    conn.pragma_update(None, "user_version", 3).unwrap();
}

#[tokio::test]
async fn a_single_counter_database_opens_with_its_tasks_and_each_owners_version() {
    let state = tempfile::tempdir().unwrap();
    let db = state.path().join("modhost.db");
    legacy_database(&db);
    let id = uuid::Uuid::now_v7().to_string();
    Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO tasks (id, module, task_name, status, args_json, result_json, resumable, \
             user_id, organization_id, role, request_id, created_at, updated_at, finished_at) \
             VALUES (?1, 'reports', 'monthly', 'completed', '{}', '{\"ok\":true}', 0, 'alice', \
             'acme', 'member', 'r1', 1, 2, 2)",
            [&id],
        )
        .unwrap();

    let host = host_on(state.path());
    let alice = Principal {
        user_id: "alice".parse().unwrap(),
        organization_id: "acme".parse().unwrap(),
        role: Role::Member,
    };
    let row = host.tasks().get(&id, &alice).await.unwrap();
    assert_eq!(row.status, Status::Completed);
    assert_eq!(row.result_json.as_deref(), Some("{\"ok\":true}"));

    // Each owner's share was recorded, and the migrations appended after
    // the single counter was retired (the audit trail's second to fifth,
    // the task store's second to fourth) ran on their own.
    let conn = Connection::open(&db).unwrap();
    for (owner, version) in [
        ("host", HOST_MIGRATIONS.len()),
        ("tasks", modhost::tasks::store::MIGRATIONS.len()),
        ("audit", modhost::audit::MIGRATIONS.len()),
    ] {
        assert_eq!(migrate::version(&conn, owner).unwrap(), version, "{owner}");
    }
    assert_eq!(modhost::audit::MIGRATIONS.len(), 5);
    let index: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'audit_by_user'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(index, 1);
    drop(host);
    // Opening again runs nothing: a re-run `CREATE TABLE` would fail.
    let again = host_on(state.path());
    assert_eq!(again.tasks().get(&id, &alice).await.unwrap().id, id);
}
