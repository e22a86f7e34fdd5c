//! The SQLite schema of the task store: its own migrations, versioned under
//! [`OWNER`] (see [`crate::db::migrate`]).
//!
//! The schema enforces what must never depend on code paths: one active task
//! per key (a partial unique index), valid statuses and consistent columns
//! (`CHECK`s on `STRICT` tables), final states that stay final and owners
//! that never change (triggers), and active-task counters that the quota
//! check reads in O(1) (kept by triggers, so no write path can forget them).

use rusqlite::Connection;

use crate::db::migrate::{self, MigrateError, Migrations};

/// The task store's name in `schema_versions`.
pub const OWNER: &str = "tasks";

/// The task store's migrations, in order. Released entries are never edited;
/// changes are appended.
pub const MIGRATIONS: &[&str] = &[
    // Tasks, their current confirmation, and active-task counters.
    "CREATE TABLE tasks (
        id TEXT PRIMARY KEY NOT NULL,
        module TEXT NOT NULL,
        task_name TEXT NOT NULL,
        task_key TEXT,
        title TEXT,
        status TEXT NOT NULL CHECK (status = 'pending' OR status = 'running'
            OR status = 'waiting-confirmation' OR status = 'completed' OR status = 'failed'
            OR status = 'cancelled' OR status = 'interrupted'),
        progress REAL NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
        label TEXT,
        checkpoint_json TEXT,
        args_json TEXT NOT NULL,
        result_json TEXT,
        failure_kind TEXT,
        failure_message TEXT,
        resumable INTEGER NOT NULL CHECK (resumable IN (0, 1)),
        user_id TEXT NOT NULL,
        organization_id TEXT NOT NULL,
        role TEXT NOT NULL,
        request_id TEXT NOT NULL,
        session_id TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
        confirm_surface_json TEXT,
        confirm_asked_at INTEGER,
        confirm_expires_at INTEGER,
        confirm_answer_json TEXT,
        confirm_answered_by TEXT,
        confirm_answered_at INTEGER,
        confirm_consumed INTEGER NOT NULL DEFAULT 0 CHECK (confirm_consumed IN (0, 1)),
        -- Active (pending, running, waiting-confirmation) exactly while
        -- finished_at is NULL: every index, trigger and compare-and-set below
        -- tests that column instead of a list of statuses.
        CHECK ((finished_at IS NULL) = (status = 'pending' OR status = 'running'
            OR status = 'waiting-confirmation')),
        CHECK ((confirm_surface_json IS NULL) = (confirm_asked_at IS NULL)),
        CHECK ((confirm_answer_json IS NULL) = (confirm_answered_at IS NULL)
            AND (confirm_answer_json IS NULL) = (confirm_answered_by IS NULL)),
        CHECK (confirm_answer_json IS NULL OR confirm_surface_json IS NOT NULL),
        CHECK (confirm_consumed = 0 OR confirm_answer_json IS NOT NULL)
    ) STRICT;

    -- Dedup of active work: at most one active task per key, module and
    -- organization. Submission inserts with ON CONFLICT on exactly this index.
    CREATE UNIQUE INDEX tasks_active_key ON tasks (module, organization_id, task_key)
        WHERE task_key IS NOT NULL AND finished_at IS NULL;

    -- Exact key and key-prefix lookups; covers the rowid subquery of a prefix
    -- lookup, including a user filter.
    CREATE INDEX tasks_by_key ON tasks (module, organization_id, task_key, id, user_id)
        WHERE task_key IS NOT NULL;

    -- One user's tasks, newest first.
    CREATE INDEX tasks_by_user ON tasks (module, organization_id, user_id, id);

    -- An organization's tasks, newest first.
    CREATE INDEX tasks_by_org ON tasks (module, organization_id, id);

    -- Active tasks by status: the scheduler's pending queue and recovery.
    CREATE INDEX tasks_active ON tasks (status, id) WHERE finished_at IS NULL;

    CREATE TABLE task_active_per_user (
        module TEXT NOT NULL,
        organization_id TEXT NOT NULL,
        user_id TEXT NOT NULL,
        active INTEGER NOT NULL CHECK (active >= 0),
        PRIMARY KEY (module, organization_id, user_id)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE task_active_per_module (
        module TEXT PRIMARY KEY NOT NULL,
        active INTEGER NOT NULL CHECK (active >= 0)
    ) STRICT, WITHOUT ROWID;

    CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
    WHEN NEW.finished_at IS NULL
    BEGIN
        INSERT INTO task_active_per_user (module, organization_id, user_id, active)
            VALUES (NEW.module, NEW.organization_id, NEW.user_id, 1)
            ON CONFLICT (module, organization_id, user_id) DO UPDATE SET active = active + 1;
        INSERT INTO task_active_per_module (module, active) VALUES (NEW.module, 1)
            ON CONFLICT (module) DO UPDATE SET active = active + 1;
    END;

    CREATE TRIGGER tasks_count_finish AFTER UPDATE OF finished_at ON tasks
    WHEN OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL
    BEGIN
        UPDATE task_active_per_user SET active = active - 1
            WHERE module = OLD.module AND organization_id = OLD.organization_id
              AND user_id = OLD.user_id;
        UPDATE task_active_per_module SET active = active - 1 WHERE module = OLD.module;
    END;

    CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
    WHEN OLD.finished_at IS NULL
    BEGIN
        UPDATE task_active_per_user SET active = active - 1
            WHERE module = OLD.module AND organization_id = OLD.organization_id
              AND user_id = OLD.user_id;
        UPDATE task_active_per_module SET active = active - 1 WHERE module = OLD.module;
    END;

    CREATE TRIGGER tasks_final_is_final BEFORE UPDATE OF status, finished_at ON tasks
    WHEN OLD.finished_at IS NOT NULL
     AND (NEW.status IS NOT OLD.status OR NEW.finished_at IS NOT OLD.finished_at)
    BEGIN
        SELECT RAISE(ABORT, 'a finished task cannot change status');
    END;

    CREATE TRIGGER tasks_owner_is_fixed BEFORE UPDATE OF module, organization_id, user_id ON tasks
    WHEN NEW.module IS NOT OLD.module OR NEW.organization_id IS NOT OLD.organization_id
      OR NEW.user_id IS NOT OLD.user_id
    BEGIN
        SELECT RAISE(ABORT, 'the owner of a task cannot change');
    END;",
    // A principal's tasks across modules, newest first: the dashboard's and
    // the CLI's list.
    "CREATE INDEX tasks_org_user ON tasks (organization_id, user_id, id);
    CREATE INDEX tasks_org_all ON tasks (organization_id, id);",
    // Active-task counters per module and organization, and per
    // organization over all modules, replacing the per-module counter that
    // counted every organization together (one organization could use up a
    // module's quota for all). Filled from the active rows, then kept by
    // triggers as before.
    "DROP TRIGGER tasks_count_insert;
    DROP TRIGGER tasks_count_finish;
    DROP TRIGGER tasks_count_delete;
    DROP TABLE task_active_per_module;

    CREATE TABLE task_active_per_module_org (
        module TEXT NOT NULL,
        organization_id TEXT NOT NULL,
        active INTEGER NOT NULL CHECK (active >= 0),
        PRIMARY KEY (module, organization_id)
    ) STRICT, WITHOUT ROWID;

    CREATE TABLE task_active_per_org (
        organization_id TEXT PRIMARY KEY NOT NULL,
        active INTEGER NOT NULL CHECK (active >= 0)
    ) STRICT, WITHOUT ROWID;

    INSERT INTO task_active_per_module_org (module, organization_id, active)
        SELECT module, organization_id, count(*) FROM tasks WHERE finished_at IS NULL
        GROUP BY module, organization_id;
    INSERT INTO task_active_per_org (organization_id, active)
        SELECT organization_id, count(*) FROM tasks WHERE finished_at IS NULL
        GROUP BY organization_id;

    CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
    WHEN NEW.finished_at IS NULL
    BEGIN
        INSERT INTO task_active_per_user (module, organization_id, user_id, active)
            VALUES (NEW.module, NEW.organization_id, NEW.user_id, 1)
            ON CONFLICT (module, organization_id, user_id) DO UPDATE SET active = active + 1;
        INSERT INTO task_active_per_module_org (module, organization_id, active)
            VALUES (NEW.module, NEW.organization_id, 1)
            ON CONFLICT (module, organization_id) DO UPDATE SET active = active + 1;
        INSERT INTO task_active_per_org (organization_id, active)
            VALUES (NEW.organization_id, 1)
            ON CONFLICT (organization_id) DO UPDATE SET active = active + 1;
    END;

    CREATE TRIGGER tasks_count_finish AFTER UPDATE OF finished_at ON tasks
    WHEN OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL
    BEGIN
        UPDATE task_active_per_user SET active = active - 1
            WHERE module = OLD.module AND organization_id = OLD.organization_id
              AND user_id = OLD.user_id;
        UPDATE task_active_per_module_org SET active = active - 1
            WHERE module = OLD.module AND organization_id = OLD.organization_id;
        UPDATE task_active_per_org SET active = active - 1
            WHERE organization_id = OLD.organization_id;
    END;

    CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
    WHEN OLD.finished_at IS NULL
    BEGIN
        UPDATE task_active_per_user SET active = active - 1
            WHERE module = OLD.module AND organization_id = OLD.organization_id
              AND user_id = OLD.user_id;
        UPDATE task_active_per_module_org SET active = active - 1
            WHERE module = OLD.module AND organization_id = OLD.organization_id;
        UPDATE task_active_per_org SET active = active - 1
            WHERE organization_id = OLD.organization_id;
    END;",
    // Finished tasks by finish time: retention deletes the oldest first,
    // a batch at a time, without scanning the table.
    "CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;",
    // Claims and leases, so several hosts can share the store: a claimed
    // (running or waiting) task carries the host holding it, when its lease
    // runs out, and a version that every claim and recovery moves on (the
    // fence of its writes). Tasks left running by an older host have no
    // lease: they are given one that has run out, so the first recovery
    // takes them as before. Pending tasks are claimed per module, oldest
    // first; recovery reads leases by expiry and by host.
    "ALTER TABLE tasks ADD COLUMN lease_owner TEXT;
    ALTER TABLE tasks ADD COLUMN lease_expires_at INTEGER;
    ALTER TABLE tasks ADD COLUMN lease_version INTEGER NOT NULL DEFAULT 0;
    UPDATE tasks SET lease_owner = 'local', lease_expires_at = 0
        WHERE status = 'running' OR status = 'waiting-confirmation';
    DROP INDEX tasks_active;
    CREATE INDEX tasks_pending ON tasks (module, id) WHERE status = 'pending';
    CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at)
        WHERE lease_expires_at IS NOT NULL;
    CREATE INDEX tasks_lease_owner ON tasks (lease_owner) WHERE lease_owner IS NOT NULL;",
    // Parked waits: a task waiting for a confirmation without a lease (it
    // gave up its instance) is found by its question's expiry, and a
    // timeout that reached no run yet is kept until the task asks again.
    "ALTER TABLE tasks ADD COLUMN confirm_timed_out INTEGER NOT NULL DEFAULT 0
        CHECK (confirm_timed_out IN (0, 1));
    CREATE INDEX tasks_parked ON tasks (confirm_expires_at)
        WHERE status = 'waiting-confirmation' AND lease_owner IS NULL;",
];

/// Brings the task tables of the database on `conn` to this host's schema:
/// runs the migrations of [`OWNER`] that have not run yet.
pub fn apply_schema(conn: &Connection) -> Result<(), MigrateError> {
    migrate::apply(conn, &MIGRATION_LIST)
}

/// [`MIGRATIONS`] under their owner.
pub const MIGRATION_LIST: Migrations<'static> = Migrations::new(OWNER, MIGRATIONS);
