-- Webhooks (issue #21): endpoints other systems register, one message per (event,
-- endpoint), every delivery attempt, and the "recover since T" jobs. Owned by the
-- processor (processor/src/webhooks/); the API reads and changes them only through its
-- functions. Deliveries are tasks of kind `webhook.deliver` (one task per attempt).

-- An endpoint. `institution_id` NULL: platform-wide (an admin's; every event).
-- `event_types` NULL: every type of the catalog. The secrets are the raw bytes the
-- `whsec_` strings encode: they must sign, so they are stored as they are (like the
-- API's token secret), never logged and never shown again after create/rotate.
CREATE TABLE webhook_endpoints (
    id                          uuid        PRIMARY KEY,
    institution_id              uuid,
    url                         text        NOT NULL CHECK (length(url) <= 2048),
    event_types                 text[],
    description                 text        NOT NULL DEFAULT '' CHECK (length(description) <= 1000),
    enabled                     boolean     NOT NULL DEFAULT true,
    disabled_reason             text,
    secret                      bytea       NOT NULL,
    -- After a rotation the previous secret signs too, until it expires.
    previous_secret             bytea,
    previous_secret_expires_at  timestamptz,
    -- Who registered it (`user:<uuid>`): the owner e-mailed when it is disabled.
    created_by                  text        NOT NULL,
    created_by_user             uuid,
    created_at                  timestamptz NOT NULL DEFAULT now(),
    updated_at                  timestamptz NOT NULL DEFAULT now(),
    deleted_at                  timestamptz,
    -- Health: the start of the current run of failures (NULL while healthy).
    failing_since               timestamptz,
    last_success_at             timestamptz,
    last_failure_at             timestamptz,
    last_failure                text
);
CREATE INDEX webhook_endpoints_institution ON webhook_endpoints (institution_id)
    WHERE deleted_at IS NULL;

-- One message per (event, endpoint); its id (`msg_` + the uuid in hex) is the
-- `webhook-id` of every attempt. `body` is signed as stored, so every attempt and every
-- resend carries the same bytes.
CREATE TABLE webhook_messages (
    id                uuid        PRIMARY KEY,
    endpoint_id       uuid        NOT NULL REFERENCES webhook_endpoints (id),
    event_id          uuid        NOT NULL,
    event_type        text        NOT NULL,
    institution_id    uuid,
    -- A reprocessed copy's message names the original event.
    original_event_id uuid,
    event_recorded_at timestamptz NOT NULL,
    body              text        NOT NULL,
    status            text        NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'delivered', 'failed')),
    -- Attempts recorded so far (the next task carries attempts + 1).
    attempts          integer     NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    finished_at       timestamptz,
    last_error        text,
    UNIQUE (event_id, endpoint_id)
);
CREATE INDEX webhook_messages_endpoint ON webhook_messages (endpoint_id, created_at DESC, id DESC);
CREATE INDEX webhook_messages_created ON webhook_messages (created_at DESC, id DESC);

-- Every attempt: what the receiver answered (status, a bounded excerpt), how long it
-- took, or why no request was made (refused address, timeout, connection error).
CREATE TABLE webhook_attempts (
    message_id       uuid        NOT NULL REFERENCES webhook_messages (id),
    attempt          integer     NOT NULL,
    endpoint_id      uuid        NOT NULL,
    started_at       timestamptz NOT NULL,
    latency_ms       double precision NOT NULL,
    status_code      integer,
    outcome          text        NOT NULL
                     CHECK (outcome IN ('succeeded', 'failed', 'refused', 'gone', 'timeout')),
    response_excerpt text        CHECK (length(response_excerpt) <= 1024),
    error            text,
    PRIMARY KEY (message_id, attempt)
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, started_at DESC);

-- "Recover since T" for one endpoint: messages of its events since `since` are sent
-- again (failed ones) or created (events it missed), in batches, with progress; setting
-- `status = 'cancelled'` stops it before its next batch.
CREATE TABLE webhook_recover_jobs (
    id           uuid        PRIMARY KEY,
    endpoint_id  uuid        NOT NULL REFERENCES webhook_endpoints (id),
    since        timestamptz NOT NULL,
    requested_by text        NOT NULL,
    status       text        NOT NULL DEFAULT 'running'
                 CHECK (status IN ('running', 'cancelled', 'done', 'failed')),
    total        bigint      NOT NULL DEFAULT 0,
    done         bigint      NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    error        text
);
