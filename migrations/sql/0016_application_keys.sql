-- Client idempotency keys of `applyToCourse` (api/src/graphql/mutation.rs).
--
-- An application's id derives from its course and e-mail, so a repeat with the same
-- e-mail reaches the same `application` stream and the aggregate answers it. A key,
-- though, may come back with another e-mail, which is another stream: no aggregate
-- can see that, so the API reserves each (course, key) for the application it first
-- named, before the command, like `user_emails` reserves addresses. A key reserved for
-- another application is refused (IDEMPOTENCY_KEY_REUSED).
CREATE TABLE application_keys (
    course_id       uuid        NOT NULL,
    idempotency_key text        NOT NULL,
    application_id  uuid        NOT NULL,
    reserved_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (course_id, idempotency_key)
);
