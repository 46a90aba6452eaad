-- Read models built by `aula-projections`. Each projection owns the tables listed under
-- its name; its subscription (same name in subscription_checkpoints) moves its
-- checkpoint in the same transaction as its rows. A rebuild creates copies of a
-- projection's tables in a schema of its own (`CREATE TABLE ... (LIKE ... INCLUDING ALL)`),
-- fills them from position zero and moves them into place in one transaction, so every
-- column, default and index a projection needs must be declared here.

-- projection `course_capacity`: one row per course.
CREATE TABLE course_capacity (
    course_id       uuid        PRIMARY KEY,
    institution_id  uuid,
    campus_id       uuid,
    name            text,
    capacity        integer     NOT NULL DEFAULT 0,
    enrolled        integer     NOT NULL DEFAULT 0,
    pending         integer     NOT NULL DEFAULT 0,
    declined        integer     NOT NULL DEFAULT 0,
    cancelled       integer     NOT NULL DEFAULT 0,
    seats_left      integer     GENERATED ALWAYS AS (greatest(capacity - enrolled, 0)) STORED,
    closed          boolean     NOT NULL DEFAULT false,
    opened_at       timestamptz,
    updated_at      timestamptz
);
CREATE INDEX course_capacity_institution_idx ON course_capacity (institution_id, campus_id);
CREATE INDEX course_capacity_campus_idx ON course_capacity (campus_id);

-- projection `age_metrics`: how many enrolled students of each age (whole years on the
-- enrollment date) per course, campus and institution. Keeping the counts per age,
-- rather than a running min/max, keeps min and max right when the youngest or oldest
-- student cancels. A row whose count drops to zero is deleted.
CREATE TABLE age_counts (
    scope       text    NOT NULL CHECK (scope IN ('course', 'campus', 'institution')),
    scope_id    uuid    NOT NULL,
    age         integer NOT NULL,
    -- No CHECK (students >= 0): an upsert checks the proposed row before it meets the
    -- existing one, and a batch's delta may be negative. The projection verifies instead.
    students    integer NOT NULL,
    PRIMARY KEY (scope, scope_id, age)
);

-- projection `course_enrollments`: students enrolled in each course, with their dates.
CREATE TABLE course_enrollments (
    course_id       uuid    NOT NULL,
    application_id  uuid    NOT NULL,
    institution_id  uuid    NOT NULL,
    campus_id       uuid    NOT NULL,
    name            text    NOT NULL,
    email           text    NOT NULL,
    birth_date      date    NOT NULL,
    age_years       integer NOT NULL,
    enrolled_on     date    NOT NULL,
    -- 'enrolled' or 'cancelled'
    status          text    NOT NULL,
    cancelled_on    date,
    global_position bigint  NOT NULL,
    PRIMARY KEY (course_id, application_id)
);
CREATE INDEX course_enrollments_course_idx ON course_enrollments (course_id, enrolled_on, global_position);

-- projection `audit_log`: who did what and when, from each event's metadata.
CREATE TABLE audit_log (
    event_id          uuid        PRIMARY KEY,
    global_position   bigint      NOT NULL,
    recorded_at       timestamptz NOT NULL,
    -- 'user:<uuid>', 'system' or 'public' (NULL when the metadata names no actor)
    actor             text,
    actor_user_id     uuid,
    institution_id    uuid,
    event_type        text        NOT NULL,
    aggregate_type    text        NOT NULL,
    aggregate_id      text        NOT NULL,
    sequence          bigint      NOT NULL,
    correlation_id    uuid,
    causation         text,
    request_id        text,
    reprocessed_from  uuid
);
CREATE INDEX audit_log_position_idx ON audit_log (global_position);
CREATE INDEX audit_log_actor_idx ON audit_log (actor_user_id, global_position);
CREATE INDEX audit_log_institution_idx ON audit_log (institution_id, global_position);
CREATE INDEX audit_log_correlation_idx ON audit_log (correlation_id);

-- projection `admin_events`: one row per event for the admin dashboard. The projection
-- writes the identity columns; the processor fills the processing columns later (a
-- rebuild carries them over from the live table).
CREATE TABLE admin_events (
    event_id          uuid        PRIMARY KEY,
    global_position   bigint      NOT NULL,
    event_type        text        NOT NULL,
    aggregate_type    text        NOT NULL,
    aggregate_id      text        NOT NULL,
    sequence          bigint      NOT NULL,
    institution_id    uuid,
    recorded_at       timestamptz NOT NULL,
    -- A reprocessed copy names its original; the original counts its copies.
    reprocessed_from  uuid,
    copies            integer     NOT NULL DEFAULT 0,
    -- Filled by the processor.
    status            text        NOT NULL DEFAULT 'pending',
    processed_at      timestamptz,
    duration_ms       bigint,
    error             text,
    tasks_pending     integer     NOT NULL DEFAULT 0,
    tasks_running     integer     NOT NULL DEFAULT 0,
    tasks_succeeded   integer     NOT NULL DEFAULT 0,
    tasks_failed      integer     NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX admin_events_position_idx ON admin_events (global_position);
CREATE INDEX admin_events_type_idx ON admin_events (event_type, global_position);
CREATE INDEX admin_events_recorded_idx ON admin_events (recorded_at, global_position);
-- Sorting and paging treat a missing processed_at / duration as the smallest value.
CREATE INDEX admin_events_processed_idx ON admin_events ((COALESCE(processed_at, '-infinity'::timestamptz)), global_position);
CREATE INDEX admin_events_status_idx ON admin_events (status, global_position);
CREATE INDEX admin_events_duration_idx ON admin_events ((COALESCE(duration_ms, -1)), global_position);
CREATE INDEX admin_events_institution_idx ON admin_events (institution_id, global_position);
CREATE INDEX admin_events_aggregate_idx ON admin_events (aggregate_type, aggregate_id);
CREATE INDEX admin_events_failed_tasks_idx ON admin_events (global_position) WHERE tasks_failed > 0;
CREATE INDEX admin_events_copies_idx ON admin_events (reprocessed_from) WHERE reprocessed_from IS NOT NULL;

-- Progress of `aula projections rebuild`, one row per projection (the latest run).
CREATE TABLE projection_rebuilds (
    name              text        PRIMARY KEY,
    -- 'running', 'swapping', 'done' or 'failed'
    state             text        NOT NULL,
    started_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL,
    global_position   bigint      NOT NULL DEFAULT 0,
    events_done       bigint      NOT NULL DEFAULT 0,
    -- Events in the log when the rebuild started (an estimate of the work).
    events_total      bigint      NOT NULL DEFAULT 0,
    events_per_second double precision NOT NULL DEFAULT 0,
    error             text
);
