-- Search over event payloads and task error texts (issue #23): trigram indexes
-- (pg_trgm, shipped with PostgreSQL's contrib modules and trusted, so a database owner
-- may create it) serve `ILIKE '%text%'` without reading every row.

CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- What a search sees of an event's payload: its scalar values at any depth, joined by
-- spaces, with the catalog's sensitive fields (`aula_domain::catalog::SENSITIVE_FIELDS`:
-- password and token hashes) left out, so a search cannot probe what the dashboard
-- redacts. One definition, used by the `admin_events` projection for every event (live
-- and rebuilt) and below for the events already projected.
CREATE FUNCTION aula_search_text(doc jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT COALESCE(string_agg(v #>> '{}', ' '), '')
    FROM jsonb_path_query(
             regexp_replace(doc::text,
                            '"(password_hash|token_hash)": "(?:[^"\\]|\\.)*"',
                            '"\1": null', 'g')::jsonb,
             'strict $.**') AS v
    WHERE jsonb_typeof(v) IN ('string', 'number', 'boolean')
$$;

-- Written by the `admin_events` projection beside each event's row (insert only: an
-- event's payload never changes), so the list's searches join it on `global_position`.
CREATE TABLE admin_event_search (
    global_position bigint PRIMARY KEY,
    body            text   NOT NULL
);
CREATE INDEX admin_event_search_body_trgm_idx ON admin_event_search USING gin (body gin_trgm_ops);

INSERT INTO admin_event_search (global_position, body)
SELECT e.global_position, aula_search_text(e.payload::jsonb)
FROM events e
JOIN admin_events a ON a.global_position = e.global_position;

-- Task errors. Partial: a task without an error (nearly all of them) is never in it,
-- so inserts, claims and successful completions do not write it; only a failure does.
CREATE INDEX tasks_last_error_trgm_idx ON tasks USING gin (last_error gin_trgm_ops)
    WHERE last_error IS NOT NULL;
