-- The admin dashboard's task list (processor/src/task_list.rs): every sortable column
-- has an index `(<sort expression>, id)`, so keyset pages stay fast deep in the list.
-- The expressions must match `TaskSort::expression` exactly. Nullable columns go
-- through COALESCE (row comparisons with NULL are never true).
-- The indexes are partial, over finished tasks only: a task gets its entries once, when
-- it finishes, and the queue's insert and claim (the hot statements) do not write them.
-- The list reads pending and running tasks (few, unless there is a backlog) apart.
CREATE INDEX tasks_list_kind_idx ON tasks (kind, id)
    WHERE status IN ('succeeded', 'failed', 'dead');
CREATE INDEX tasks_list_status_idx ON tasks (status, id)
    WHERE status IN ('succeeded', 'failed', 'dead');
CREATE INDEX tasks_list_created_idx ON tasks (created_at, id)
    WHERE status IN ('succeeded', 'failed', 'dead');
CREATE INDEX tasks_list_finished_idx ON tasks ((COALESCE(finished_at, '-infinity'::timestamptz)), id)
    WHERE status IN ('succeeded', 'failed', 'dead');
CREATE INDEX tasks_list_duration_idx ON tasks
    ((COALESCE((extract(epoch FROM finished_at - started_at) * 1000)::bigint, -1)), id)
    WHERE status IN ('succeeded', 'failed', 'dead');
CREATE INDEX tasks_list_institution_idx ON tasks
    ((COALESCE(institution_id, '00000000-0000-0000-0000-000000000000'::uuid)), id)
    WHERE status IN ('succeeded', 'failed', 'dead');
CREATE INDEX tasks_list_attempt_idx ON tasks (attempt, id)
    WHERE status IN ('succeeded', 'failed', 'dead');
