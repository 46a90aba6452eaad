-- The API's e-mail index: which user owns which e-mail address.
--
-- Uniqueness of e-mails spans every User aggregate, which no single aggregate can
-- decide, and logging in or resetting a password starts from an e-mail, not a user id.
-- So the API reserves the address here (INSERT ... ON CONFLICT DO NOTHING) *before* it
-- issues a user-creating command, and looks the user id up here for login and reset.
-- The primary key is the whole uniqueness rule. This is not a read model: it is written
-- synchronously by the API (not derived from the log), and a row may outlive a command
-- that failed after the reservation (the address then stays taken by that unused id,
-- which a later sign-up with the same address simply reuses).
CREATE TABLE user_emails (
    -- Lower-cased and trimmed by `aula_domain::values::Email::parse`.
    email       text        PRIMARY KEY,
    user_id     uuid        NOT NULL,
    reserved_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX user_emails_user_id_idx ON user_emails (user_id);
