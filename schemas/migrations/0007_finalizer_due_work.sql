-- The finalizer's due work, maintained by its own consumer from events (checkpoint in the same
-- transaction): one row per settlement with a step still ahead of it. `due_at` is when the next
-- step may run; `leased_until` keeps two finalizers from running the same row at once (a lease
-- that lapses is taken over: the steps are idempotent, so a second run has no second effect).
-- Rows of one partner are run together, one command per batch, sharing its custody account.
CREATE TABLE finalizer_due (
    settlement_id uuid        PRIMARY KEY,
    -- The partner's enterprise (unknown for a v1 settlement that failed at staging).
    partner_enterprise_id uuid,
    step          text        NOT NULL CHECK (step IN ('finalize', 'execute')),
    due_at        timestamptz NOT NULL,
    -- When execution is due (end of the top-up window), fixed at staging.
    execute_at    timestamptz NOT NULL,
    leased_until  timestamptz,
    attempts      integer     NOT NULL DEFAULT 0
);
CREATE INDEX finalizer_due_at ON finalizer_due (due_at);
