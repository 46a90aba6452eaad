-- E-mail tasks whose SMTP relay could not be reached (refused, closed, no answer), and
-- since when. Such attempts are retried without counting against the task's attempts;
-- once the relay has stayed unreachable longer than AULA_MAIL_UNREACHABLE_GIVE_UP_MINUTES
-- since the first of them, the task ends `dead` instead of waiting for ever. An attempt
-- that reaches the relay (sent, or answered with an error) deletes the row, so does
-- giving up; rows of tasks cancelled meanwhile are purged after twice the window.
-- Keyed by task id: a retried or reprocessed e-mail is a new task with a fresh window.
CREATE TABLE mail_unreachable (
    task_id bigint      PRIMARY KEY,
    since   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX mail_unreachable_since_idx ON mail_unreachable (since);
