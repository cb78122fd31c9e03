-- The auditor's surface (ADR 0010): who read what through the audit API, the results of the
-- periodic full chain verification, the lease that lets one process run it per interval, the
-- indexes audit reads need, and SELECT for the read-only role `settle_audit` where it exists.

-- Every audit read, recorded before its answer is sent (a read that cannot be recorded is not
-- answered). Append-only, like the events: an operator cannot quietly remove a read.
CREATE TABLE audit_reads (
    id          bigserial   PRIMARY KEY,
    read_at     timestamptz NOT NULL,
    -- 'admin' (the admin token) or 'auditor' (a user flagged auditor, `user_id`).
    actor       text        NOT NULL CHECK (actor IN ('admin', 'auditor')),
    user_id     uuid,
    method      text        NOT NULL,
    path        text        NOT NULL,
    query       text        NOT NULL,
    status      smallint    NOT NULL,
    request_id  text        NOT NULL
);
CREATE INDEX audit_reads_user ON audit_reads (user_id, id);
CREATE TRIGGER audit_reads_append_only BEFORE UPDATE OR DELETE ON audit_reads
    FOR EACH ROW EXECUTE FUNCTION refuse_change();
CREATE TRIGGER audit_reads_no_truncate BEFORE TRUNCATE ON audit_reads
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_change();

-- Each full re-walk of the chain from position 1: what it checked and the first fault found.
CREATE TABLE chain_verifications (
    id              bigserial   PRIMARY KEY,
    started_at      timestamptz NOT NULL,
    finished_at     timestamptz NOT NULL,
    verifier        text        NOT NULL,
    -- Positions checked without fault (the whole log when there is no fault).
    checked         bigint      NOT NULL,
    -- The head when the walk began.
    head_position   bigint      NOT NULL,
    -- The recomputed hash at `checked`.
    head_hash       bytea       NOT NULL CHECK (octet_length(head_hash) = 32),
    fault_kind      text        CHECK (fault_kind IN ('hashMismatch', 'gap')),
    fault_position  bigint
);

-- One row: when the next full verification is due and who took the last one. A process runs
-- a verification only after moving `next_at` forward in one statement, so replicas take turns.
CREATE TABLE chain_verification_lease (
    id       smallint    NOT NULL PRIMARY KEY CHECK (id = 1),
    next_at  timestamptz NOT NULL,
    holder   text        NOT NULL
);
INSERT INTO chain_verification_lease VALUES (1, '-infinity', '');

-- Audit reads find the signing keys and connection creations by type without scanning the log:
-- a partial index holds only those few events (3 SigningKeyRegistered, 4 SigningKeyRevoked,
-- 12 ConnectionCreated).
CREATE INDEX events_audit_types ON events (type_id, event_id) WHERE type_id IN (3, 4, 12);
-- `asOf=<time>` finds the first event recorded after a time; events are appended in nearly
-- time order, which is what a BRIN index is cheap for (it costs appends almost nothing).
CREATE INDEX events_recorded_at_brin ON events USING brin (recorded_at);
-- (A settlement's timeline is the events of the transactions that wrote its stream: the
-- unique index on events (txid, tx_seq) already finds them.)

-- The read-only role of `settle-audit` (deploy/stack creates it): SELECT on everything, now and
-- for tables later migrations create. Nothing happens where the role does not exist.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'settle_audit') THEN
        EXECUTE 'GRANT USAGE ON SCHEMA public TO settle_audit';
        EXECUTE 'GRANT SELECT ON ALL TABLES IN SCHEMA public TO settle_audit';
        EXECUTE 'ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO settle_audit';
    END IF;
END
$$;
