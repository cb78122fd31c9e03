-- The event store: streams, events (append-only), the sequenced log with its hash chain,
-- command idempotency records, the nonce registry and the sequencer's fenced state.

-- One row per stream: its head version. Appends lock and advance these rows in stream order,
-- which is the optimistic-concurrency check (0 rows updated = someone else moved the head).
CREATE TABLE streams (
    -- head before the last append: lets one sorted upsert check every expected version.
    previous_version bigint NOT NULL,
    category   text   NOT NULL,
    id         text   NOT NULL,
    version    bigint NOT NULL CHECK (version >= 0),
    PRIMARY KEY (category, id)
);

-- Every event ever appended, immutable. (txid, tx_seq) is the order of the append transactions;
-- the sequencer reads it only below the xid horizon, so a late commit can never be skipped.
CREATE TABLE events (
    event_id        uuid        NOT NULL PRIMARY KEY,
    txid            bigint      NOT NULL,
    tx_seq          integer     NOT NULL,
    category        text        NOT NULL,
    stream_id       text        NOT NULL,
    version         bigint      NOT NULL CHECK (version >= 1),
    type_id         integer     NOT NULL,
    schema_version  smallint    NOT NULL,
    payload         bytea       NOT NULL,
    metadata        bytea       NOT NULL,
    recorded_at     timestamptz NOT NULL,
    UNIQUE (category, stream_id, version),
    UNIQUE (txid, tx_seq)
);

-- The global order: dense positions 1..N assigned by the single fenced sequencer, each with the
-- SHA-256 chain hash over the previous hash and the event's stored bytes.
CREATE TABLE event_log (
    position  bigint NOT NULL PRIMARY KEY CHECK (position >= 1),
    event_id  uuid   NOT NULL UNIQUE REFERENCES events (event_id),
    hash      bytea  NOT NULL CHECK (octet_length(hash) = 32)
);

-- The sequencer's cursor and fence. `epoch` is bumped by each new leader; every sequencer write
-- checks it, so a stale leader that lost its lock cannot write.
CREATE TABLE sequencer_state (
    id             smallint    NOT NULL PRIMARY KEY CHECK (id = 1),
    epoch          bigint      NOT NULL,
    leader         text        NOT NULL,
    last_position  bigint      NOT NULL,
    last_hash      bytea       NOT NULL CHECK (octet_length(last_hash) = 32),
    last_txid      bigint      NOT NULL,
    last_tx_seq    integer     NOT NULL,
    updated_at     timestamptz NOT NULL
);
INSERT INTO sequencer_state VALUES (1, 0, '', 0, '\x0000000000000000000000000000000000000000000000000000000000000000', 0, -1, now());

-- Command idempotency: a command id maps to the hash of the request that first used it and the
-- outcome it produced, so a retry returns that outcome and a different request is a conflict.
CREATE TABLE command_outcomes (
    command_id    uuid        NOT NULL PRIMARY KEY,
    request_hash  bytea       NOT NULL,
    outcome       bytea       NOT NULL,
    recorded_at   timestamptz NOT NULL
);

-- Nonces are unique per enterprise (SPEC §4); the payload hash tells a retry from a reuse.
CREATE TABLE nonces (
    scope         text        NOT NULL,
    nonce         text        NOT NULL,
    payload_hash  bytea       NOT NULL,
    command_id    uuid        NOT NULL,
    recorded_at   timestamptz NOT NULL,
    PRIMARY KEY (scope, nonce)
);

-- Append-only: stored events and their positions can never be changed or removed.
CREATE FUNCTION refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'table % is append-only', TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
CREATE TRIGGER event_log_append_only BEFORE UPDATE OR DELETE ON event_log
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER event_log_no_truncate BEFORE TRUNCATE ON event_log
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON events, event_log FROM PUBLIC;

-- Consumers (projector, finalizer) record the last global position they applied, in the same
-- transaction as the changes it caused.
CREATE TABLE consumer_checkpoints (
    consumer    text        NOT NULL PRIMARY KEY,
    position    bigint      NOT NULL CHECK (position >= 0),
    updated_at  timestamptz NOT NULL
);

-- The one append: a single call, so a command costs one round trip and one commit.
-- 1. Lock and advance the head of every touched stream, in (category, id) order so concurrent
--    appends cannot deadlock, checking each expected version (SE409 on any mismatch).
-- 2. One multi-row insert of all events, stamped with this transaction's id and their order.
-- 3. The command's outcome (SE410 if the command id was taken meanwhile) and nonce (SE411).
-- Any exception aborts the whole transaction: an append is all or nothing.
CREATE FUNCTION append_events(
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
        INSERT INTO command_outcomes (command_id, request_hash, outcome, recorded_at)
        VALUES (p_command_id, p_request_hash, p_outcome, p_recorded_at)
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
