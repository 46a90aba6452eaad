-- The task notification says where the new tasks sort (issue #20).
--
-- A claiming loop starts its claims at a hint, the `(priority, run_at)` of its last full
-- claim, so it does not walk the claim index's dead entries from the front each time
-- (`processor/src/queue/claim.rs`, `ClaimHint`). A notification had to drop the hint,
-- since the new tasks might sort before it; under a steady stream of inserts nearly every
-- claim walked from the front again. The payload is now the least priority and the least
-- `run_at` of the rows the statement inserted (each column's least, so the pair never
-- sorts after any inserted task), as `'<priority> <run_at in microseconds since the
-- epoch>'`; the loop keeps its hint when that sorts at or after it (`queue::Notified`).
-- A statement that inserted nothing (every row a duplicate) notifies nobody.
--
-- The transition table costs one pass over the inserted rows per statement.
CREATE FUNCTION aula_notify_task_queue() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    least_priority smallint;
    least_run_at timestamptz;
BEGIN
    SELECT min(priority), min(run_at) INTO least_priority, least_run_at FROM inserted;
    IF least_priority IS NOT NULL THEN
        PERFORM pg_notify('aula_tasks', least_priority::text || ' ' ||
                          floor(extract(epoch FROM least_run_at) * 1000000)::bigint::text);
    END IF;
    RETURN NULL;
END;
$$;

DROP TRIGGER task_queue_notify ON task_queue;
CREATE TRIGGER task_queue_notify AFTER INSERT ON task_queue
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION aula_notify_task_queue();
-- task_queue's was the last trigger on the old function.
DROP FUNCTION aula_notify_tasks();
