-- Folded stream states (ADR 0014): a decision starts from a stream's latest snapshot and
-- replays only the events after it. Derived data: deleting any row, or all, changes no
-- decision, only how many events the next load of that stream reads. A row is written by the
-- process that folded it, after the append, never in it; `version` only ever moves forward.
CREATE TABLE snapshots (
    category  text     NOT NULL,
    stream_id text     NOT NULL,
    -- The encoding of `state` (events::domain::aggregate::STATE_SCHEMA); other versions are
    -- ignored by loads.
    schema    smallint NOT NULL,
    version   bigint   NOT NULL CHECK (version > 0),
    state     bytea    NOT NULL,
    taken_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (category, stream_id)
);
