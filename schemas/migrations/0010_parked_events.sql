-- Parked events (DESIGN §4, "nothing loops forever on one item"): an event a consumer's
-- projection cannot apply, for a reason retrying does not cure, is recorded here instead of
-- being retried for ever; the checkpoint moves past it so every other stream carries on.
-- Written in the consumer's batch transaction, with its checkpoint, so a position is parked
-- or applied, never both, never twice. `projector parked list|retry` (and the finalizer's) read
-- and empty these tables.
CREATE TABLE consumer_parked_events (
    consumer   text        NOT NULL,
    position   bigint      NOT NULL CHECK (position > 0),
    -- The event's own stream, `category.id`.
    stream     text        NOT NULL,
    event_type text        NOT NULL,
    -- 'failed': its own apply failed; 'held': it waits behind an earlier parked event of a
    -- stream it touches (applying it first would change rows out of order).
    reason     text        NOT NULL CHECK (reason IN ('failed', 'held')),
    error      text        NOT NULL,
    parked_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, position)
);

-- Streams with parked events, per consumer: every later event of such a stream is parked
-- ('held') instead of applied, until a retry has applied all of the stream's parked events.
CREATE TABLE consumer_parked_streams (
    consumer       text        NOT NULL,
    stream         text        NOT NULL,
    first_position bigint      NOT NULL,
    parked_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream)
);
