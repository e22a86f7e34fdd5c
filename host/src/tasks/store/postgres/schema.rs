//! The PostgreSQL schema of the task store, versioned under
//! [`super::super::OWNER`] in `schema_versions` like the SQLite one.
//!
//! The same rules as the SQLite schema, held by the database: one active
//! task per key (a partial unique index), valid statuses and consistent
//! columns (`CHECK`s), final states that stay final and owners that never
//! change (a trigger). Ids and keys compare byte by byte (`COLLATE "C"`), so
//! newest-first order, cursors and prefix ranges mean what they mean in
//! SQLite whatever the database's locale.
//!
//! The active-task counters are moved by the store's statements, for a
//! batch's owners at once (`modhost_count_many`, [`MIGRATIONS`] 4), and
//! submissions lock the counters of their owners, organization first,
//! before they read them, so concurrent submissions on several hosts never
//! pass a quota together. (Two hosts' batches that touch the same
//! counters in different orders can still deadlock; PostgreSQL then fails
//! one, whose writes are run again alone.) New pending tasks, and tasks a
//! recovery made pending again, are announced on the channel
//! `modhost_pending` (payload: the module), at commit.

/// The task store's migrations, in order. Released entries are never edited;
/// changes are appended.
pub const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE tasks (
    id TEXT COLLATE "C" PRIMARY KEY,
    module TEXT NOT NULL,
    task_name TEXT NOT NULL,
    task_key TEXT COLLATE "C",
    title TEXT,
    status TEXT NOT NULL CHECK (status IN ('pending', 'running', 'waiting-confirmation',
        'completed', 'failed', 'cancelled', 'interrupted')),
    progress DOUBLE PRECISION NOT NULL DEFAULT 0 CHECK (progress >= 0 AND progress <= 1),
    label TEXT,
    checkpoint_json TEXT,
    args_json TEXT NOT NULL,
    result_json TEXT,
    failure_kind TEXT,
    failure_message TEXT,
    resumable BOOLEAN NOT NULL,
    user_id TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    role TEXT NOT NULL,
    request_id TEXT NOT NULL,
    session_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    confirm_surface_json TEXT,
    confirm_asked_at BIGINT,
    confirm_expires_at BIGINT,
    confirm_answer_json TEXT,
    confirm_answered_by TEXT,
    confirm_answered_at BIGINT,
    confirm_consumed BOOLEAN NOT NULL DEFAULT FALSE,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    lease_version BIGINT NOT NULL DEFAULT 0,
    CHECK ((finished_at IS NULL) = (status IN ('pending', 'running', 'waiting-confirmation'))),
    CHECK ((confirm_surface_json IS NULL) = (confirm_asked_at IS NULL)),
    CHECK ((confirm_answer_json IS NULL) = (confirm_answered_at IS NULL)
        AND (confirm_answer_json IS NULL) = (confirm_answered_by IS NULL)),
    CHECK (confirm_answer_json IS NULL OR confirm_surface_json IS NOT NULL),
    CHECK (NOT confirm_consumed OR confirm_answer_json IS NOT NULL),
    CHECK ((lease_owner IS NULL) = (lease_expires_at IS NULL)),
    CHECK (lease_owner IS NULL OR status IN ('running', 'waiting-confirmation'))
);

CREATE UNIQUE INDEX tasks_active_key ON tasks (module, organization_id, task_key)
    WHERE task_key IS NOT NULL AND finished_at IS NULL;
CREATE INDEX tasks_by_key ON tasks (module, organization_id, task_key, id)
    WHERE task_key IS NOT NULL;
CREATE INDEX tasks_by_user ON tasks (module, organization_id, user_id, id);
CREATE INDEX tasks_by_org ON tasks (module, organization_id, id);
CREATE INDEX tasks_org_user ON tasks (organization_id, user_id, id);
CREATE INDEX tasks_org_all ON tasks (organization_id, id);
CREATE INDEX tasks_finished ON tasks (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX tasks_pending ON tasks (module, id) WHERE status = 'pending';
CREATE INDEX tasks_lease_expiry ON tasks (lease_expires_at) WHERE lease_expires_at IS NOT NULL;
CREATE INDEX tasks_lease_owner ON tasks (lease_owner) WHERE lease_owner IS NOT NULL;

CREATE TABLE task_active_per_org (
    organization_id TEXT PRIMARY KEY,
    active BIGINT NOT NULL CHECK (active >= 0)
);
CREATE TABLE task_active_per_module_org (
    module TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    active BIGINT NOT NULL CHECK (active >= 0),
    PRIMARY KEY (module, organization_id)
);
CREATE TABLE task_active_per_user (
    module TEXT NOT NULL,
    organization_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    active BIGINT NOT NULL CHECK (active >= 0),
    PRIMARY KEY (module, organization_id, user_id)
);

-- Counters move by `delta` for one task's owner, locked organization first
-- (the order modhost_submit locks them in). A decrement is a plain update:
-- an upsert would check its insert row (a negative count) first.
CREATE FUNCTION modhost_count(m TEXT, o TEXT, u TEXT, delta BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF delta < 0 THEN
        UPDATE task_active_per_org SET active = active + delta WHERE organization_id = o;
        UPDATE task_active_per_module_org SET active = active + delta
            WHERE module = m AND organization_id = o;
        UPDATE task_active_per_user SET active = active + delta
            WHERE module = m AND organization_id = o AND user_id = u;
        RETURN;
    END IF;
    INSERT INTO task_active_per_org AS c (organization_id, active) VALUES (o, delta)
        ON CONFLICT (organization_id) DO UPDATE SET active = c.active + delta;
    INSERT INTO task_active_per_module_org AS c (module, organization_id, active)
        VALUES (m, o, delta)
        ON CONFLICT (module, organization_id) DO UPDATE SET active = c.active + delta;
    INSERT INTO task_active_per_user AS c (module, organization_id, user_id, active)
        VALUES (m, o, u, delta)
        ON CONFLICT (module, organization_id, user_id) DO UPDATE SET active = c.active + delta;
END $$;

CREATE FUNCTION modhost_tasks_count() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.finished_at IS NULL THEN
            PERFORM modhost_count(NEW.module, NEW.organization_id, NEW.user_id, 1);
            PERFORM pg_notify('modhost_pending', NEW.module);
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        IF OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL THEN
            PERFORM modhost_count(OLD.module, OLD.organization_id, OLD.user_id, -1);
        END IF;
        IF NEW.status = 'pending' AND OLD.status <> 'pending' THEN
            PERFORM pg_notify('modhost_pending', NEW.module);
        END IF;
        RETURN NEW;
    ELSE
        IF OLD.finished_at IS NULL THEN
            PERFORM modhost_count(OLD.module, OLD.organization_id, OLD.user_id, -1);
        END IF;
        RETURN OLD;
    END IF;
END $$;

-- Only the changes that move a counter or make a task pending fire: a
-- progress write or a lease renewal runs no trigger at all.
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
    FOR EACH ROW WHEN (NEW.finished_at IS NULL) EXECUTE FUNCTION modhost_tasks_count();
CREATE TRIGGER tasks_count_update AFTER UPDATE OF status, finished_at ON tasks
    FOR EACH ROW WHEN ((OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL)
        OR (NEW.status = 'pending' AND OLD.status <> 'pending'))
    EXECUTE FUNCTION modhost_tasks_count();
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
    FOR EACH ROW WHEN (OLD.finished_at IS NULL) EXECUTE FUNCTION modhost_tasks_count();

CREATE FUNCTION modhost_tasks_guard() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.finished_at IS NOT NULL AND (NEW.status IS DISTINCT FROM OLD.status
        OR NEW.finished_at IS DISTINCT FROM OLD.finished_at) THEN
        RAISE EXCEPTION 'a finished task cannot change status';
    END IF;
    IF NEW.module IS DISTINCT FROM OLD.module
        OR NEW.organization_id IS DISTINCT FROM OLD.organization_id
        OR NEW.user_id IS DISTINCT FROM OLD.user_id THEN
        RAISE EXCEPTION 'the owner of a task cannot change';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER tasks_guard BEFORE UPDATE OF status, finished_at, module, organization_id,
    user_id ON tasks FOR EACH ROW EXECUTE FUNCTION modhost_tasks_guard();

-- The store's clock, in ms since the epoch: leases are compared with it, so
-- hosts need not agree on the time.
CREATE FUNCTION modhost_now() RETURNS BIGINT LANGUAGE sql VOLATILE AS $$
    SELECT (extract(epoch FROM clock_timestamp()) * 1000)::BIGINT
$$;

-- Stores a pending task unless its key is active (outcome 'existing' and the
-- holder's id) or a quota is reached (outcome 'limit-user', 'limit-module'
-- or 'limit-org'); otherwise 'created'. The three counters of the owner are
-- locked, organization first, before they are read: until this transaction
-- ends, no other submission of the organization passes the check.
CREATE FUNCTION modhost_submit(
    p_id TEXT, p_module TEXT, p_task_name TEXT, p_task_key TEXT, p_title TEXT,
    p_args_json TEXT, p_resumable BOOLEAN, p_user_id TEXT, p_organization_id TEXT,
    p_role TEXT, p_request_id TEXT, p_session_id TEXT, p_created_at BIGINT,
    max_user BIGINT, max_module BIGINT, max_org BIGINT,
    OUT outcome TEXT, OUT task_id TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    per_org BIGINT;
    per_module BIGINT;
    per_user BIGINT;
BEGIN
    PERFORM modhost_count(p_module, p_organization_id, p_user_id, 0);
    SELECT active INTO per_org FROM task_active_per_org
        WHERE organization_id = p_organization_id FOR UPDATE;
    SELECT active INTO per_module FROM task_active_per_module_org
        WHERE module = p_module AND organization_id = p_organization_id FOR UPDATE;
    SELECT active INTO per_user FROM task_active_per_user
        WHERE module = p_module AND organization_id = p_organization_id
          AND user_id = p_user_id FOR UPDATE;
    IF p_task_key IS NOT NULL THEN
        SELECT t.id INTO task_id FROM tasks t
            WHERE t.module = p_module AND t.organization_id = p_organization_id
              AND t.task_key = p_task_key AND t.finished_at IS NULL;
        IF task_id IS NOT NULL THEN
            outcome := 'existing';
            RETURN;
        END IF;
    END IF;
    IF per_user >= max_user THEN
        outcome := 'limit-user';
        RETURN;
    ELSIF per_module >= max_module THEN
        outcome := 'limit-module';
        RETURN;
    ELSIF per_org >= max_org THEN
        outcome := 'limit-org';
        RETURN;
    END IF;
    INSERT INTO tasks (id, module, task_name, task_key, title, status, args_json,
        resumable, user_id, organization_id, role, request_id, session_id, created_at,
        updated_at)
    VALUES (p_id, p_module, p_task_name, p_task_key, p_title, 'pending', p_args_json,
        p_resumable, p_user_id, p_organization_id, p_role, p_request_id, p_session_id,
        p_created_at, p_created_at)
    ON CONFLICT (module, organization_id, task_key)
        WHERE task_key IS NOT NULL AND finished_at IS NULL DO NOTHING;
    IF FOUND THEN
        outcome := 'created';
        task_id := p_id;
        RETURN;
    END IF;
    SELECT t.id INTO task_id FROM tasks t
        WHERE t.module = p_module AND t.organization_id = p_organization_id
          AND t.task_key = p_task_key AND t.finished_at IS NULL;
    outcome := 'existing';
END $$;
"#,
    // A task made pending again is announced when a recovery did it (other
    // hosts may take it), not when its own host released it for want of an
    // instance (a release takes its attempt back): that host tries again
    // itself, later, and an announcement would only have it claim the task
    // at once, again and again.
    r#"
CREATE OR REPLACE FUNCTION modhost_tasks_count() RETURNS TRIGGER LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.finished_at IS NULL THEN
            PERFORM modhost_count(NEW.module, NEW.organization_id, NEW.user_id, 1);
            PERFORM pg_notify('modhost_pending', NEW.module);
        END IF;
        RETURN NEW;
    ELSIF TG_OP = 'UPDATE' THEN
        IF OLD.finished_at IS NULL AND NEW.finished_at IS NOT NULL THEN
            PERFORM modhost_count(OLD.module, OLD.organization_id, OLD.user_id, -1);
        END IF;
        IF NEW.status = 'pending' AND OLD.status <> 'pending'
            AND NEW.attempts >= OLD.attempts THEN
            PERFORM pg_notify('modhost_pending', NEW.module);
        END IF;
        RETURN NEW;
    ELSE
        IF OLD.finished_at IS NULL THEN
            PERFORM modhost_count(OLD.module, OLD.organization_id, OLD.user_id, -1);
        END IF;
        RETURN OLD;
    END IF;
END $$;
"#,
    // Fewer statements per submission: each counter is read and locked by
    // one upsert (it was made, then locked, then read), and an increment
    // updates the row a submission has just locked, inserting it only when
    // it is missing (a task inserted by other means).
    r#"
CREATE OR REPLACE FUNCTION modhost_count(m TEXT, o TEXT, u TEXT, delta BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE task_active_per_org SET active = active + delta WHERE organization_id = o;
    IF NOT FOUND AND delta > 0 THEN
        INSERT INTO task_active_per_org AS c (organization_id, active) VALUES (o, delta)
            ON CONFLICT (organization_id) DO UPDATE SET active = c.active + delta;
    END IF;
    UPDATE task_active_per_module_org SET active = active + delta
        WHERE module = m AND organization_id = o;
    IF NOT FOUND AND delta > 0 THEN
        INSERT INTO task_active_per_module_org AS c (module, organization_id, active)
            VALUES (m, o, delta)
            ON CONFLICT (module, organization_id) DO UPDATE SET active = c.active + delta;
    END IF;
    UPDATE task_active_per_user SET active = active + delta
        WHERE module = m AND organization_id = o AND user_id = u;
    IF NOT FOUND AND delta > 0 THEN
        INSERT INTO task_active_per_user AS c (module, organization_id, user_id, active)
            VALUES (m, o, u, delta)
            ON CONFLICT (module, organization_id, user_id) DO UPDATE SET active = c.active + delta;
    END IF;
END $$;

CREATE OR REPLACE FUNCTION modhost_submit(
    p_id TEXT, p_module TEXT, p_task_name TEXT, p_task_key TEXT, p_title TEXT,
    p_args_json TEXT, p_resumable BOOLEAN, p_user_id TEXT, p_organization_id TEXT,
    p_role TEXT, p_request_id TEXT, p_session_id TEXT, p_created_at BIGINT,
    max_user BIGINT, max_module BIGINT, max_org BIGINT,
    OUT outcome TEXT, OUT task_id TEXT)
LANGUAGE plpgsql AS $$
DECLARE
    per_org BIGINT;
    per_module BIGINT;
    per_user BIGINT;
BEGIN
    -- Each counter read and locked in one statement, made if missing.
    INSERT INTO task_active_per_org AS c (organization_id, active)
        VALUES (p_organization_id, 0)
        ON CONFLICT (organization_id) DO UPDATE SET active = c.active
        RETURNING c.active INTO per_org;
    INSERT INTO task_active_per_module_org AS c (module, organization_id, active)
        VALUES (p_module, p_organization_id, 0)
        ON CONFLICT (module, organization_id) DO UPDATE SET active = c.active
        RETURNING c.active INTO per_module;
    INSERT INTO task_active_per_user AS c (module, organization_id, user_id, active)
        VALUES (p_module, p_organization_id, p_user_id, 0)
        ON CONFLICT (module, organization_id, user_id) DO UPDATE SET active = c.active
        RETURNING c.active INTO per_user;
    IF p_task_key IS NOT NULL THEN
        SELECT t.id INTO task_id FROM tasks t
            WHERE t.module = p_module AND t.organization_id = p_organization_id
              AND t.task_key = p_task_key AND t.finished_at IS NULL;
        IF task_id IS NOT NULL THEN
            outcome := 'existing';
            RETURN;
        END IF;
    END IF;
    IF per_user >= max_user THEN
        outcome := 'limit-user';
        RETURN;
    ELSIF per_module >= max_module THEN
        outcome := 'limit-module';
        RETURN;
    ELSIF per_org >= max_org THEN
        outcome := 'limit-org';
        RETURN;
    END IF;
    INSERT INTO tasks (id, module, task_name, task_key, title, status, args_json,
        resumable, user_id, organization_id, role, request_id, session_id, created_at,
        updated_at)
    VALUES (p_id, p_module, p_task_name, p_task_key, p_title, 'pending', p_args_json,
        p_resumable, p_user_id, p_organization_id, p_role, p_request_id, p_session_id,
        p_created_at, p_created_at)
    ON CONFLICT (module, organization_id, task_key)
        WHERE task_key IS NOT NULL AND finished_at IS NULL DO NOTHING;
    IF FOUND THEN
        outcome := 'created';
        task_id := p_id;
        RETURN;
    END IF;
    SELECT t.id INTO task_id FROM tasks t
        WHERE t.module = p_module AND t.organization_id = p_organization_id
          AND t.task_key = p_task_key AND t.finished_at IS NULL;
    outcome := 'existing';
END $$;
"#,
    // Writes of many tasks in one statement. The counters are moved by the
    // store's own statements, a batch's owners at a time
    // (`modhost_count_many`), rather than by a trigger row by row, and a
    // task made pending again is announced by the recovery that does it.
    // The owner guard runs only for the changes it may refuse. Submission
    // is the store's few set-based statements, so `modhost_submit` goes.
    r#"
DROP TRIGGER tasks_count_insert ON tasks;
DROP TRIGGER tasks_count_update ON tasks;
DROP TRIGGER tasks_count_delete ON tasks;
DROP FUNCTION modhost_tasks_count();
DROP FUNCTION modhost_submit(TEXT, TEXT, TEXT, TEXT, TEXT, TEXT, BOOLEAN, TEXT, TEXT, TEXT,
    TEXT, TEXT, BIGINT, BIGINT, BIGINT, BIGINT);
DROP FUNCTION modhost_count(TEXT, TEXT, TEXT, BIGINT);

-- Moves the counters of the tasks whose owners are `p_m[i]`, `p_o[i]`, `p_u[i]`
-- by `delta` each, organization first and each table in key order (the
-- order a submission locks them in), one statement per table. An increment
-- makes a missing counter; a decrement is a plain update: an upsert would
-- check its insert row (a negative count) first.
CREATE FUNCTION modhost_count_many(p_m TEXT[], p_o TEXT[], p_u TEXT[], delta BIGINT) RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    IF delta < 0 THEN
        -- Locked in key order first: an UPDATE ... FROM locks in the order
        -- its join meets the rows.
        PERFORM 1 FROM task_active_per_org WHERE organization_id = ANY (p_o)
            ORDER BY organization_id FOR UPDATE;
        PERFORM 1 FROM task_active_per_module_org
            WHERE (module, organization_id) IN (SELECT * FROM unnest(p_m, p_o))
            ORDER BY module, organization_id FOR UPDATE;
        PERFORM 1 FROM task_active_per_user
            WHERE (module, organization_id, user_id) IN (SELECT * FROM unnest(p_m, p_o, p_u))
            ORDER BY module, organization_id, user_id FOR UPDATE;
        UPDATE task_active_per_org c SET active = c.active + delta * d.n
            FROM (SELECT k.o, count(*) AS n FROM unnest(p_o) AS k(o) GROUP BY 1 ORDER BY 1) d
            WHERE c.organization_id = d.o;
        UPDATE task_active_per_module_org c SET active = c.active + delta * d.n
            FROM (SELECT k.m, k.o, count(*) AS n FROM unnest(p_m, p_o) AS k(m, o)
                GROUP BY 1, 2 ORDER BY 1, 2) d
            WHERE c.module = d.m AND c.organization_id = d.o;
        UPDATE task_active_per_user c SET active = c.active + delta * d.n
            FROM (SELECT k.m, k.o, k.u, count(*) AS n FROM unnest(p_m, p_o, p_u) AS k(m, o, u)
                GROUP BY 1, 2, 3 ORDER BY 1, 2, 3) d
            WHERE c.module = d.m AND c.organization_id = d.o AND c.user_id = d.u;
        RETURN;
    END IF;
    INSERT INTO task_active_per_org AS c (organization_id, active)
        SELECT k.o, delta * count(*) FROM unnest(p_o) AS k(o) GROUP BY 1 ORDER BY 1
        ON CONFLICT (organization_id) DO UPDATE SET active = c.active + EXCLUDED.active;
    INSERT INTO task_active_per_module_org AS c (module, organization_id, active)
        SELECT k.m, k.o, delta * count(*) FROM unnest(p_m, p_o) AS k(m, o)
            GROUP BY 1, 2 ORDER BY 1, 2
        ON CONFLICT (module, organization_id) DO UPDATE SET active = c.active + EXCLUDED.active;
    INSERT INTO task_active_per_user AS c (module, organization_id, user_id, active)
        SELECT k.m, k.o, k.u, delta * count(*) FROM unnest(p_m, p_o, p_u) AS k(m, o, u)
            GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
        ON CONFLICT (module, organization_id, user_id)
            DO UPDATE SET active = c.active + EXCLUDED.active;
END $$;

DROP TRIGGER tasks_guard ON tasks;
CREATE TRIGGER tasks_guard BEFORE UPDATE OF status, finished_at, module, organization_id,
    user_id ON tasks FOR EACH ROW
    WHEN (OLD.finished_at IS NOT NULL OR NEW.module IS DISTINCT FROM OLD.module
        OR NEW.organization_id IS DISTINCT FROM OLD.organization_id
        OR NEW.user_id IS DISTINCT FROM OLD.user_id)
    EXECUTE FUNCTION modhost_tasks_guard();
"#,
    // Parked waits: a task waiting for a confirmation without a lease (it
    // gave up its instance) is found by its question's expiry, and a
    // timeout that reached no run yet is kept until the task asks again.
    r#"
ALTER TABLE tasks ADD COLUMN confirm_timed_out BOOLEAN NOT NULL DEFAULT FALSE;
CREATE INDEX tasks_parked ON tasks (confirm_expires_at)
    WHERE status = 'waiting-confirmation' AND lease_owner IS NULL;
"#,
];
