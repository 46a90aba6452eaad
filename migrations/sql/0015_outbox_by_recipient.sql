-- The `email.already_registered` task sends at most one such e-mail per address per
-- hour (processor/src/handlers/email.rs): anyone can sign up with anyone's address, so
-- without it a registered owner could be flooded. This index answers "when did this
-- address last get this kind of e-mail" without reading the whole outbox.
CREATE INDEX outbox_emails_recipient_idx ON outbox_emails (recipient, kind, sent_at);
