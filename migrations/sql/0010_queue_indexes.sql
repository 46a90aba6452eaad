-- Task queue throughput: fewer index entries written per claim and per completion.
-- Every claim and completion changes `status`, so it is never a HOT update: each one
-- writes an entry into every index whose predicate the new row version matches.
-- Measured with `aula bench tasks` (200,000 tasks, 4 processes x 24): the three
-- indexes below cost more than everything else the queue writes together.

-- Nothing reads by (status, created_at): the task list reads unfinished tasks through
-- the partial claim and lease indexes, finished ones through 0007's indexes.
DROP INDEX tasks_status_created_idx;

-- Tasks inserted without an event (event_id NULL) all had the same key here, so
-- every claim and completion appended to one run of duplicates; lookups are always
-- by a given event id (`event_id = $1` implies `event_id IS NOT NULL`).
DROP INDEX tasks_event_idx;
CREATE INDEX tasks_event_idx ON tasks (event_id) WHERE event_id IS NOT NULL;

-- The same for the (event, kind) rule: it only concerns tasks an event issued.
-- queue::insert_tasks names this predicate in its ON CONFLICT clause.
DROP INDEX tasks_event_kind_key;
CREATE UNIQUE INDEX tasks_event_kind_key ON tasks (event_id, kind)
    WHERE origin_task_id IS NULL AND event_id IS NOT NULL;

-- The nightly archive walks succeeded tasks by finish time through
-- tasks_list_finished_idx (0007) instead of an index of its own.
DROP INDEX tasks_archive_idx;
