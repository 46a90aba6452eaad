-- Prototype of a narrow queue for Aula (design estimate, not Aula's schema): the queue row holds
-- only what claiming needs; a finished task is DELETEd from it and its history row is INSERTed
-- once into Aula's own `task_history` (status succeeded, so the 7 list indexes and the event indexes
-- get one entry each, once) and `task_attempts`. Needs an Aula-migrated database.
DROP TABLE IF EXISTS q;
CREATE TABLE q (
  id           bigint      PRIMARY KEY,
  kind         text        NOT NULL,
  priority     smallint    NOT NULL DEFAULT 50,
  run_at       timestamptz NOT NULL DEFAULT now(),
  attempts     int         NOT NULL DEFAULT 0,
  max_attempts int         NOT NULL DEFAULT 5,
  locked_at    timestamptz,
  locked_by    text,
  lease_until  timestamptz,
  event_id     uuid,
  payload      jsonb       NOT NULL DEFAULT '{}',
  created_at   timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 70);
CREATE INDEX q_claim ON q (priority, run_at) WHERE locked_at IS NULL;
CREATE INDEX q_lease ON q (lease_until) WHERE locked_at IS NOT NULL;
