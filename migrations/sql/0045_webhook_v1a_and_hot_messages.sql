-- Webhooks (issue #21), second part.
--
-- `v1a` signatures (Standard Webhooks' asymmetric scheme, ed25519) for endpoints that
-- choose them. `secret` holds the HMAC key of a `v1` endpoint or the 32-byte ed25519
-- seed of a `v1a` one (never shown: receivers verify with the public key); the public
-- key is stored beside it so that reads never touch the secret. A rotation may change
-- the scheme, so the previous secret keeps its own.
ALTER TABLE webhook_endpoints
    ADD COLUMN signature_scheme text NOT NULL DEFAULT 'v1'
        CHECK (signature_scheme IN ('v1', 'v1a')),
    ADD COLUMN public_key bytea,
    ADD COLUMN previous_signature_scheme text NOT NULL DEFAULT 'v1'
        CHECK (previous_signature_scheme IN ('v1', 'v1a')),
    ADD CONSTRAINT webhook_endpoints_public_key_of_v1a
        CHECK ((signature_scheme = 'v1a') = (public_key IS NOT NULL));

-- Every attempt updates its message's row: room on each page keeps those updates HOT
-- (no new entries in the message's four indexes). Applies to pages written from now on.
ALTER TABLE webhook_messages SET (fillfactor = 80);
