-- The queue's fence (processor/src/queue.rs, `Done`): the time of the claim that holds a
-- task, checked with its attempt number by every outcome, heartbeat and release.
-- Claims commit asynchronously, so a database crash can lose the last ones: the task
-- is back at its previous attempt and the next claim reuses the number, while the
-- worker of the lost claim may still be running; it never reuses the time.
ALTER TABLE tasks ADD COLUMN claimed_at timestamptz;
ALTER TABLE tasks_archive ADD COLUMN claimed_at timestamptz;
