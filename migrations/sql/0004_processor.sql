-- The processor: tasks issued by reactions to events, their attempts, their effects
-- (notifications, e-mails sent) and the archive the nightly job moves old rows into.
-- See processor/src/queue.rs for the statements that use these tables.

-- One unit of work. `status`:
--   pending   waiting for run_at (new, or waiting for its next retry)
--   running   claimed by `worker` until `lease_until` (extended by heartbeats)
--   succeeded done
--   failed    a permanent failure (the handler said retrying cannot help)
--   dead      retries exhausted (attempt = max_attempts)
-- `attempt` counts claims; a completion is accepted only for the current attempt of a
-- running task (fencing), so a worker that lost its lease cannot overwrite a newer one.
CREATE TABLE tasks (
    id              bigserial   PRIMARY KEY,
    kind            text        NOT NULL,
    -- Lower runs first (password reset before notifications before demo seeding).
    priority        smallint    NOT NULL DEFAULT 50,
    status          text        NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'dead')),
    run_at          timestamptz NOT NULL DEFAULT now(),
    attempt         integer     NOT NULL DEFAULT 0,
    max_attempts    integer     NOT NULL DEFAULT 5 CHECK (max_attempts > 0),
    lease_until     timestamptz,
    worker          text,
    -- The event that issued the task (NULL for tasks inserted directly, e.g. benchmarks).
    event_id        uuid,
    event_type      text,
    -- A manual retry is a new task naming the one it retries; the old one keeps its history.
    origin_task_id  bigint,
    -- Effects (e-mails, notifications) are recorded once per key; a manual retry keeps it.
    idempotency_key text        NOT NULL,
    payload         jsonb       NOT NULL DEFAULT '{}',
    institution_id  uuid,
    correlation_id  uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz,
    last_error      text
);

-- No event issues the same kind of task twice (manual retries are exempt: they carry
-- origin_task_id). Reactions insert with ON CONFLICT (event_id, kind) WHERE origin_task_id IS NULL.
CREATE UNIQUE INDEX tasks_event_kind_key ON tasks (event_id, kind) WHERE origin_task_id IS NULL;
-- The claim query: ORDER BY priority, run_at over pending tasks only.
CREATE INDEX tasks_claim_idx ON tasks (priority, run_at) WHERE status = 'pending';
-- Lease rescue.
CREATE INDEX tasks_lease_idx ON tasks (lease_until) WHERE status = 'running';
CREATE INDEX tasks_event_idx ON tasks (event_id);
CREATE INDEX tasks_origin_idx ON tasks (origin_task_id) WHERE origin_task_id IS NOT NULL;
-- The nightly archive: succeeded tasks by age.
CREATE INDEX tasks_archive_idx ON tasks (finished_at) WHERE status = 'succeeded';
CREATE INDEX tasks_status_created_idx ON tasks (status, created_at);

-- Every claim of a task. `outcome`: running, succeeded, retry (failed, will be retried),
-- failed (permanent), dead (last attempt failed), lease_expired (the worker was lost),
-- released (a graceful shutdown gave the task back before it ran to the end).
CREATE TABLE task_attempts (
    task_id     bigint      NOT NULL,
    attempt     integer     NOT NULL,
    worker      text        NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    duration_ms double precision,
    outcome     text        NOT NULL DEFAULT 'running'
                CHECK (outcome IN ('running', 'succeeded', 'retry', 'failed', 'dead', 'lease_expired', 'released')),
    -- "outer: cause: root cause"
    error       text,
    PRIMARY KEY (task_id, attempt)
);

-- The archive: same columns, plus when the row was moved.
CREATE TABLE tasks_archive (LIKE tasks INCLUDING DEFAULTS);
ALTER TABLE tasks_archive ADD PRIMARY KEY (id);
ALTER TABLE tasks_archive ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX tasks_archive_event_idx ON tasks_archive (event_id);
CREATE TABLE task_attempts_archive (LIKE task_attempts INCLUDING DEFAULTS);
ALTER TABLE task_attempts_archive ADD PRIMARY KEY (task_id, attempt);
ALTER TABLE task_attempts_archive ADD COLUMN archived_at timestamptz NOT NULL DEFAULT now();

-- Wake-ups for workers: one notification per inserting statement, delivered at commit.
-- Workers also poll, so a lost notification only delays them.
CREATE FUNCTION aula_notify_tasks() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aula_tasks', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER tasks_notify AFTER INSERT ON tasks
    FOR EACH STATEMENT EXECUTE FUNCTION aula_notify_tasks();

-- Raw one-time tokens waiting to be e-mailed. Events carry only the token's SHA-256, so
-- the API stashes the raw token here (processor::stash_token) and the e-mail task reads
-- it and deletes it once the e-mail is sent. Rows past expires_at are purged nightly.
CREATE TABLE pending_tokens (
    token_hash  text        PRIMARY KEY,
    raw_token   text        NOT NULL,
    expires_at  timestamptz NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- E-mails handed to the transport, once per idempotency key. Bodies are not kept: they
-- may hold one-time tokens.
CREATE TABLE outbox_emails (
    idempotency_key text        PRIMARY KEY,
    task_id         bigint      NOT NULL,
    kind            text        NOT NULL,
    recipient       text        NOT NULL,
    subject         text        NOT NULL,
    transport       text        NOT NULL,
    sent_at         timestamptz NOT NULL DEFAULT now()
);

-- In-app notifications. `audience`: 'student' / 'teacher' (one recipient, recipient_id)
-- or 'all_students' / 'all_teachers' of an institution (linked to each new student or
-- teacher by the processor when they are created).
CREATE TABLE notifications (
    id              bigserial   PRIMARY KEY,
    idempotency_key text        NOT NULL UNIQUE,
    institution_id  uuid,
    audience        text        NOT NULL
                    CHECK (audience IN ('student', 'teacher', 'all_students', 'all_teachers')),
    recipient_id    uuid,
    title           text        NOT NULL,
    body            text        NOT NULL,
    data            jsonb       NOT NULL DEFAULT '{}',
    task_id         bigint,
    event_id        uuid,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX notifications_broadcast_idx ON notifications (institution_id, audience)
    WHERE audience IN ('all_students', 'all_teachers');

CREATE TABLE notification_recipients (
    notification_id bigint      NOT NULL REFERENCES notifications (id),
    recipient_id    uuid        NOT NULL,
    recipient_type  text        NOT NULL CHECK (recipient_type IN ('student', 'teacher')),
    linked_at       timestamptz NOT NULL DEFAULT now(),
    read_at         timestamptz,
    PRIMARY KEY (notification_id, recipient_id)
);
CREATE INDEX notification_recipients_recipient_idx ON notification_recipients (recipient_id, linked_at);

-- Runs of the nightly archive (one row per run), for the admin screen and the scheduler.
CREATE TABLE archive_runs (
    id              bigserial   PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    finished_at     timestamptz,
    cutoff          timestamptz NOT NULL,
    tasks_moved     bigint      NOT NULL DEFAULT 0,
    attempts_moved  bigint      NOT NULL DEFAULT 0,
    error           text
);
