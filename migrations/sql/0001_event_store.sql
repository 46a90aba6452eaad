-- The event store: postgres-es 0.5's `events` table, extended with the columns the
-- commit-ordered log reader needs. postgres-es names its columns explicitly in every
-- statement, so the extra columns (all with defaults) are invisible to it.
CREATE TABLE events (
    aggregate_type  text    NOT NULL,
    aggregate_id    text    NOT NULL,
    sequence        bigint  NOT NULL CHECK (sequence >= 0),
    event_type      text    NOT NULL,
    event_version   text    NOT NULL,
    payload         json    NOT NULL,
    metadata        json    NOT NULL,
    -- Taken at insert time, NOT commit time: never read the log in this order alone.
    global_position bigint  GENERATED ALWAYS AS IDENTITY,
    -- The writing transaction. Readers only take rows of transactions older than every
    -- running one (tx_id < pg_snapshot_xmin(pg_current_snapshot())), ordered by
    -- (tx_id, global_position): that order never changes once a row is readable.
    tx_id           xid8        NOT NULL DEFAULT pg_current_xact_id(),
    recorded_at     timestamptz NOT NULL DEFAULT now(),
    event_id        uuid        NOT NULL DEFAULT gen_random_uuid(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

CREATE UNIQUE INDEX events_global_position_key ON events (global_position);
CREATE UNIQUE INDEX events_event_id_key ON events (event_id);
CREATE INDEX events_commit_order_idx ON events (tx_id, global_position);

-- One row per subscription (projection, reaction...): how far it has consumed the log.
-- It is updated in the same transaction as the subscriber's own writes.
CREATE TABLE subscription_checkpoints (
    name            text        PRIMARY KEY,
    tx_id           xid8        NOT NULL DEFAULT '0',
    global_position bigint      NOT NULL DEFAULT 0,
    events_handled  bigint      NOT NULL DEFAULT 0,
    -- recorded_at of the last event handled, for lag in seconds.
    last_event_at   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    -- Set while the subscriber keeps failing on the event at failed_position; cleared on success.
    last_error      text,
    failed_position bigint,
    failing_since   timestamptz,
    attempts        integer     NOT NULL DEFAULT 0
);

-- Wake-ups: writers send `NOTIFY aula_events` AFTER their commit, from a separate
-- statement (see aula_eventlog::store::LogNotifier), never from a trigger: a
-- transaction that notifies takes a database-wide lock from pre-commit until its
-- commit is flushed, which serializes every writer's commit behind the WAL flush
-- (measured here: 310 vs 4,900 one-row inserts/s at 32 clients). Readers also poll,
-- so a lost notification only delays them.
