-- The append statement as a function (ADR 0015): the same single statement the store ran as a
-- prepared statement, now planned once per session with a generic plan. As a prepared
-- statement Postgres re-planned it on every call (a custom plan per array size), and planning
-- took more of the server's time than executing. Nothing else changes: one statement, one
-- transaction in autocommit, the same locks, checks, inserts and errors (SE409, and unique
-- violations naming their constraint).
CREATE FUNCTION append_events(
    p_categories text[],
    p_ids text[],
    p_expected bigint[],
    p_new_versions bigint[],
    e_ids uuid[],
    e_categories text[],
    e_stream_ids text[],
    e_versions bigint[],
    e_type_ids integer[],
    e_schema_versions smallint[],
    e_payloads bytea[],
    e_metadata bytea[],
    e_recorded_at timestamptz[],
    c_ids uuid[],
    c_request_hashes bytea[],
    c_outcomes bytea[],
    c_recorded_at timestamptz[],
    n_scopes text[],
    n_nonces text[],
    n_payload_hashes bytea[],
    n_command_ids uuid[],
    n_recorded_at timestamptz[]
) RETURNS bigint LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    appended_in bigint;
BEGIN
WITH declared AS (
    SELECT u.category, u.id, u.new_version, u.expected,
           (u.new_version <> u.expected OR u.expected = 0) AS writes
    FROM unnest(p_categories, p_ids, p_new_versions, p_expected) AS u(category, id, new_version, expected)
    ORDER BY u.category, u.id
), locked AS (
    SELECT d.category, d.id, d.new_version, d.expected, d.writes, coalesce(r.version, w.version) AS current
    FROM declared d
    LEFT JOIN LATERAL (
        SELECT s.version FROM streams s
        WHERE s.category = d.category AND s.id = d.id AND NOT d.writes
        FOR SHARE
    ) r ON true
    LEFT JOIN LATERAL (
        SELECT s.version FROM streams s
        WHERE s.category = d.category AND s.id = d.id AND d.writes
        FOR UPDATE
    ) w ON true
), heads AS (
    INSERT INTO streams AS s (category, id, version, previous_version)
    SELECT l.category, l.id, l.new_version, l.expected
    FROM locked l
    WHERE l.writes
    ORDER BY l.category, l.id
    ON CONFLICT (category, id) DO UPDATE
        SET version = EXCLUDED.version, previous_version = EXCLUDED.previous_version
        WHERE s.version = EXCLUDED.previous_version
    RETURNING (xmax = 0) AS inserted, previous_version
), verdict AS (
    SELECT raise_stream_conflict()
    FROM (SELECT count(*) AS advanced, count(*) FILTER (WHERE inserted AND previous_version <> 0) AS created_late FROM heads) h,
         (SELECT count(*) FILTER (WHERE writes) AS writing,
                 count(*) FILTER (WHERE NOT writes AND current IS DISTINCT FROM expected) AS stale
          FROM locked) l
    WHERE h.advanced <> l.writing OR h.created_late <> 0 OR l.stale <> 0
), appended AS (
    INSERT INTO events (event_id, txid, tx_seq, category, stream_id, version, type_id, schema_version, payload, metadata, recorded_at)
    SELECT u.event_id, pg_current_xact_id()::text::bigint, u.ord::integer, u.category, u.stream_id, u.version,
           u.type_id, u.schema_version, u.payload, u.metadata, u.recorded_at
    FROM unnest(e_ids, e_categories, e_stream_ids, e_versions, e_type_ids, e_schema_versions, e_payloads,
                e_metadata, e_recorded_at)
         WITH ORDINALITY AS u(event_id, category, stream_id, version, type_id, schema_version, payload,
                              metadata, recorded_at, ord)
    WHERE NOT EXISTS (SELECT 1 FROM verdict)
    RETURNING 1
), outcome AS (
    INSERT INTO command_outcomes (command_id, request_hash, outcome, recorded_at, txid)
    SELECT c.command_id, c.request_hash, c.outcome, c.recorded_at, pg_current_xact_id()::text::bigint
    FROM unnest(c_ids, c_request_hashes, c_outcomes, c_recorded_at)
         AS c(command_id, request_hash, outcome, recorded_at)
    WHERE NOT EXISTS (SELECT 1 FROM verdict)
    RETURNING 1
), nonce AS (
    INSERT INTO nonces (scope, nonce, payload_hash, command_id, recorded_at)
    SELECT n.scope, n.nonce, n.payload_hash, n.command_id, n.recorded_at
    FROM unnest(n_scopes, n_nonces, n_payload_hashes, n_command_ids, n_recorded_at)
         AS n(scope, nonce, payload_hash, command_id, recorded_at)
    WHERE NOT EXISTS (SELECT 1 FROM verdict)
    RETURNING 1
)
SELECT pg_current_xact_id()::text::bigint INTO appended_in;
    RETURN appended_in;
END;
$$;
