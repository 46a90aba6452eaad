-- Queue controls (issue #19): cancel, force release, pause and resume a task kind,
-- change a waiting task's priority. See processor/src/controls.rs and docs/queue.md.
--
-- Task statuses after this migration (stored; `retrying` is derived, see below):
--   pending    waiting for run_at
--   paused     waiting, but its kind is paused: out of the claim index until resumed
--   running    claimed by `worker` until `lease_until`
--   succeeded  done
--   failed     a permanent failure
--   dead       retries exhausted
--   cancelled  an operator cancelled it while it waited; never claimed again
-- `retrying` is a pending task with `last_error` set (it failed before and waits for
-- run_at): derived, so the claim statement and its index stay as they were.
ALTER TABLE tasks DROP CONSTRAINT tasks_status_check;
ALTER TABLE tasks ADD CONSTRAINT tasks_status_check
    CHECK (status IN ('pending', 'paused', 'running', 'succeeded', 'failed', 'dead', 'cancelled'));

-- `force_released`: an operator ended the attempt's lease (processor::controls).
ALTER TABLE task_attempts DROP CONSTRAINT task_attempts_outcome_check;
ALTER TABLE task_attempts ADD CONSTRAINT task_attempts_outcome_check
    CHECK (outcome IN ('running', 'succeeded', 'retry', 'failed', 'dead', 'lease_expired',
                       'released', 'force_released'));

-- Paused task kinds. Owned by the processor. A claim reads this (tiny) table once per
-- statement; a due task of a paused kind that a claim meets is parked (`paused`)
-- instead of run, so it leaves the claim index and no later claim steps over it.
CREATE TABLE task_kind_pauses (
    kind       text        PRIMARY KEY,
    paused_at  timestamptz NOT NULL DEFAULT now(),
    -- 'user:<uuid>' as in event metadata.
    paused_by  text        NOT NULL
);

-- The parked tasks of each kind: resume and the dashboard's "waiting behind" count read
-- them by kind; only parked tasks have entries.
CREATE INDEX tasks_paused_idx ON tasks (kind) WHERE status = 'paused';
-- The task list reads cancelled tasks (few: operators cancel them one by one) apart,
-- like the pending and running ones (processor/src/task_list.rs).
CREATE INDEX tasks_cancelled_idx ON tasks (id) WHERE status = 'cancelled';

-- The audit trail of queue controls: one row per operator action, written in the
-- transaction of the change itself, so it can never disagree with the tasks. A task
-- is not an aggregate (its changes are not events), so these are not in `audit_log`.
CREATE TABLE task_controls (
    id              bigserial   PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    -- 'user:<uuid>' as in event metadata.
    actor           text        NOT NULL,
    action          text        NOT NULL
                    CHECK (action IN ('cancel', 'force_release', 'set_priority', 'pause', 'resume')),
    task_id         bigint,
    kind            text,
    -- The task's institution (NULL for kind-wide actions and platform tasks).
    institution_id  uuid,
    -- What changed, e.g. `priority 30 -> 5`, `3 tasks parked`.
    detail          text        NOT NULL DEFAULT ''
);
CREATE INDEX task_controls_institution_idx ON task_controls (institution_id, id);

-- The header counts `retrying` apart from `pending` (processor/src/processing.rs):
-- move the tasks waiting for a retry now into their own counter.
INSERT INTO task_status_counts (kind, status, shard, count)
SELECT 'task', s.status, 0, s.sign * n.n
FROM (SELECT count(*) AS n FROM tasks WHERE status = 'pending' AND last_error IS NOT NULL) n,
     (VALUES ('retrying', 1), ('pending', -1)) AS s(status, sign)
WHERE n.n > 0
ON CONFLICT (kind, status, shard) DO UPDATE SET count = task_status_counts.count + EXCLUDED.count;
