-- The narrow task queue (issue #20, docs/adr/0003-narrow-task-queue.md).
--
-- `tasks` was queue and history at once: every task issued by an event was written three
-- times into one wide table with 16 indexes (insert, claim, completion), and the claim's
-- cost grew with the history kept beside the queue. Now:
--   task_queue    the tasks not finished (pending, paused, running): the hot path's
--                 indexes only, fillfactor 70, rows DELETEd when they finish;
--   task_history  the finished ones (succeeded, failed, dead, cancelled), written once
--                 at completion with the task list's indexes (the old table, renamed);
--   tasks         a view, both UNION ALL, with the old columns, so readers keep working.
-- The queue's statements (processor/src/queue.rs, controls.rs) write the tables; the
-- view's INSTEAD OF trigger serves the few direct writes (tools, tests).

ALTER TABLE tasks RENAME TO task_history;
ALTER TABLE task_history RENAME CONSTRAINT tasks_status_check TO task_history_status_check;
DROP TRIGGER tasks_notify ON task_history;

CREATE TABLE task_queue (LIKE task_history INCLUDING DEFAULTS) WITH (fillfactor = 70);
ALTER TABLE task_queue ADD PRIMARY KEY (id);
ALTER TABLE task_queue ADD CONSTRAINT task_queue_max_attempts_check CHECK (max_attempts > 0);
ALTER TABLE task_queue ADD CONSTRAINT task_queue_status_check
    CHECK (status IN ('pending', 'paused', 'running'));

-- Move the unfinished tasks (an upgrade of a populated database keeps every one, its
-- attempts stay in task_attempts keyed by the same id).
INSERT INTO task_queue SELECT * FROM task_history WHERE status IN ('pending', 'paused', 'running');
DELETE FROM task_history WHERE status IN ('pending', 'paused', 'running');
ALTER TABLE task_history ADD CONSTRAINT task_history_finished_check
    CHECK (status IN ('succeeded', 'failed', 'dead', 'cancelled'));
ALTER TABLE task_history DROP CONSTRAINT task_history_status_check;

-- The queue's indexes, each what a hot statement or a control needs.
CREATE INDEX task_queue_claim_idx ON task_queue (priority, run_at) WHERE status = 'pending';
CREATE INDEX task_queue_lease_idx ON task_queue (lease_until) WHERE status = 'running';
CREATE INDEX task_queue_paused_idx ON task_queue (kind) WHERE status = 'paused';
-- An event issues a task of a kind once: this index within the queue, the history's
-- `tasks_event_kind_key` within the history, and the insert's check of the history
-- after its own insert between them (queue.rs, `insert_tasks_unrecorded`).
CREATE UNIQUE INDEX task_queue_event_kind_key ON task_queue (event_id, kind)
    WHERE origin_task_id IS NULL AND event_id IS NOT NULL;
-- The recount of an event's tasks (processing.rs) and the API's `eventTasks`.
CREATE INDEX task_queue_event_idx ON task_queue (event_id) WHERE event_id IS NOT NULL;
-- Rare entries (manual retries, tasks that failed an attempt): nearly free to keep.
CREATE INDEX task_queue_origin_idx ON task_queue (origin_task_id) WHERE origin_task_id IS NOT NULL;
CREATE INDEX task_queue_last_error_trgm_idx ON task_queue USING gin (last_error gin_trgm_ops)
    WHERE last_error IS NOT NULL;

-- The history never holds a waiting or running task.
DROP INDEX tasks_claim_idx;
DROP INDEX tasks_lease_idx;
DROP INDEX tasks_paused_idx;
-- Rows are written once and never updated: pack them.
ALTER TABLE task_history SET (fillfactor = 100);

CREATE TRIGGER task_queue_notify AFTER INSERT ON task_queue
    FOR EACH STATEMENT EXECUTE FUNCTION aula_notify_tasks();

CREATE VIEW tasks AS
    SELECT id, kind, priority, status, run_at, attempt, max_attempts, lease_until, worker,
           event_id, event_type, origin_task_id, idempotency_key, payload, institution_id,
           correlation_id, created_at, started_at, finished_at, last_error, claimed_at
    FROM task_queue
    UNION ALL
    SELECT id, kind, priority, status, run_at, attempt, max_attempts, lease_until, worker,
           event_id, event_type, origin_task_id, idempotency_key, payload, institution_id,
           correlation_id, created_at, started_at, finished_at, last_error, claimed_at
    FROM task_history;

ALTER VIEW tasks ALTER COLUMN id SET DEFAULT nextval('tasks_id_seq');
ALTER VIEW tasks ALTER COLUMN priority SET DEFAULT 50;
ALTER VIEW tasks ALTER COLUMN status SET DEFAULT 'pending';
ALTER VIEW tasks ALTER COLUMN run_at SET DEFAULT now();
ALTER VIEW tasks ALTER COLUMN attempt SET DEFAULT 0;
ALTER VIEW tasks ALTER COLUMN max_attempts SET DEFAULT 5;
ALTER VIEW tasks ALTER COLUMN payload SET DEFAULT '{}';
ALTER VIEW tasks ALTER COLUMN created_at SET DEFAULT now();

-- Direct writes to the view (tools and tests; the processor writes the tables): a row
-- lives in the queue while unfinished, in the history once finished, so a write that
-- changes the status across that line moves the row.
CREATE FUNCTION aula_tasks_view_write() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    queued boolean;
BEGIN
    IF TG_OP = 'DELETE' THEN
        DELETE FROM task_queue WHERE id = OLD.id;
        DELETE FROM task_history WHERE id = OLD.id;
        RETURN OLD;
    END IF;
    queued := NEW.status IN ('pending', 'paused', 'running');
    IF TG_OP = 'UPDATE' THEN
        IF queued AND EXISTS (SELECT 1 FROM task_queue WHERE id = OLD.id) THEN
            UPDATE task_queue SET (id, kind, priority, status, run_at, attempt, max_attempts,
                lease_until, worker, event_id, event_type, origin_task_id, idempotency_key,
                payload, institution_id, correlation_id, created_at, started_at, finished_at,
                last_error, claimed_at) = (SELECT NEW.*)
            WHERE id = OLD.id;
            RETURN NEW;
        ELSIF NOT queued AND EXISTS (SELECT 1 FROM task_history WHERE id = OLD.id) THEN
            UPDATE task_history SET (id, kind, priority, status, run_at, attempt, max_attempts,
                lease_until, worker, event_id, event_type, origin_task_id, idempotency_key,
                payload, institution_id, correlation_id, created_at, started_at, finished_at,
                last_error, claimed_at) = (SELECT NEW.*)
            WHERE id = OLD.id;
            RETURN NEW;
        END IF;
        DELETE FROM task_queue WHERE id = OLD.id;
        DELETE FROM task_history WHERE id = OLD.id;
    END IF;
    IF queued THEN
        INSERT INTO task_queue SELECT NEW.*;
    ELSE
        INSERT INTO task_history SELECT NEW.*;
    END IF;
    RETURN NEW;
END;
$$;

CREATE TRIGGER tasks_view_write INSTEAD OF INSERT OR UPDATE OR DELETE ON tasks
    FOR EACH ROW EXECUTE FUNCTION aula_tasks_view_write();

ANALYZE task_queue;
ANALYZE task_history;
