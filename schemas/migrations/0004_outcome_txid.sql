-- A replayed command answers with the position token of its first execution, so the outcome
-- records the transaction that wrote it.
ALTER TABLE command_outcomes ADD COLUMN txid bigint;

CREATE OR REPLACE FUNCTION append_events(
    p_stream_categories text[], p_stream_ids text[], p_expected bigint[], p_new_versions bigint[],
    p_event_ids uuid[], p_event_categories text[], p_event_stream_ids text[], p_event_versions bigint[],
    p_type_ids integer[], p_schema_versions smallint[], p_payloads bytea[],
    p_metadata bytea, p_recorded_at timestamptz,
    p_command_id uuid, p_request_hash bytea, p_outcome bytea,
    p_nonce_scope text, p_nonce text, p_nonce_hash bytea
) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    advanced integer;
    created_late integer;
BEGIN
    WITH heads AS (
        INSERT INTO streams AS s (category, id, version, previous_version)
        SELECT u.category, u.id, u.new_version, u.expected
        FROM unnest(p_stream_categories, p_stream_ids, p_new_versions, p_expected)
             AS u(category, id, new_version, expected)
        ORDER BY u.category, u.id
        ON CONFLICT (category, id) DO UPDATE
            SET version = EXCLUDED.version, previous_version = EXCLUDED.previous_version
            WHERE s.version = EXCLUDED.previous_version
        RETURNING (xmax = 0) AS inserted, previous_version
    )
    SELECT count(*), count(*) FILTER (WHERE inserted AND previous_version <> 0)
    INTO advanced, created_late FROM heads;
    IF advanced <> cardinality(p_stream_categories) OR created_late <> 0 THEN
        RAISE EXCEPTION 'stream version conflict' USING ERRCODE = 'SE409';
    END IF;

    INSERT INTO events (event_id, txid, tx_seq, category, stream_id, version, type_id,
                        schema_version, payload, metadata, recorded_at)
    SELECT u.event_id, pg_current_xact_id()::text::bigint, u.ord::integer, u.category, u.stream_id,
           u.version, u.type_id, u.schema_version, u.payload, p_metadata, p_recorded_at
    FROM unnest(p_event_ids, p_event_categories, p_event_stream_ids, p_event_versions,
                p_type_ids, p_schema_versions, p_payloads)
         WITH ORDINALITY AS u(event_id, category, stream_id, version, type_id, schema_version, payload, ord);

    IF p_command_id IS NOT NULL THEN
        INSERT INTO command_outcomes (command_id, request_hash, outcome, recorded_at, txid)
        VALUES (p_command_id, p_request_hash, p_outcome, p_recorded_at, pg_current_xact_id()::text::bigint)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'command already recorded' USING ERRCODE = 'SE410';
        END IF;
    END IF;

    IF p_nonce IS NOT NULL THEN
        INSERT INTO nonces (scope, nonce, payload_hash, command_id, recorded_at)
        VALUES (p_nonce_scope, p_nonce, p_nonce_hash, p_command_id, p_recorded_at)
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'nonce already used' USING ERRCODE = 'SE411';
        END IF;
    END IF;

    RETURN pg_current_xact_id()::text::bigint;
END;
$$;
