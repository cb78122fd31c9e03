-- Partitioned consumers (docs/decisions/0009-partitioned-projectors.md). A consumer group — the
-- projector's read models, its notifications, its event catalog — is split into P partitions,
-- each a consumer of its own named `<group>-p<k>`: its own checkpoint in consumer_checkpoints
-- (written in the transaction that applies it), its own parked events, its own JetStream durable.
-- Any number of projector instances share the partitions through the leases kept here.

-- One row per partition. `owner` holds the partition while `lease_until` is in the future; an
-- owner renews its leases every quarter of the lease period, so a dead owner's partitions are
-- free again within one lease period and another instance takes them.
CREATE TABLE consumer_partitions (
    consumer_group text        NOT NULL,
    partition      integer     NOT NULL CHECK (partition >= 0),
    -- P of the group; every row of a group agrees (an instance configured otherwise refuses).
    partitions     integer     NOT NULL CHECK (partitions >= 1 AND partition < partitions),
    -- The partition's consumer name: checkpoint, parked events and durable consumer.
    consumer       text        NOT NULL UNIQUE,
    owner          text,
    lease_until    timestamptz,
    acquired_at    timestamptz,
    PRIMARY KEY (consumer_group, partition)
);

-- The instances of each group that are alive: the fair share of partitions is P divided by the
-- instances whose `alive_until` is in the future.
CREATE TABLE consumer_instances (
    consumer_group text        NOT NULL,
    instance       text        NOT NULL,
    alive_until    timestamptz NOT NULL,
    started_at     timestamptz NOT NULL,
    PRIMARY KEY (consumer_group, instance)
);

-- Every change of a partition's owner, for operators (`projector status`) and for the tests
-- that check a dead owner's partitions are taken over within the lease period.
CREATE TABLE consumer_lease_log (
    consumer_group       text        NOT NULL,
    partition            integer     NOT NULL,
    instance             text        NOT NULL,
    -- 'acquired' (free or expired), 'released' (gave it up: shutdown or rebalance)
    kind                 text        NOT NULL CHECK (kind IN ('acquired', 'released')),
    at                   timestamptz NOT NULL,
    -- For 'acquired': who held it before and until when (NULL when it was free).
    previous_owner       text,
    previous_lease_until timestamptz,
    -- The partition's checkpoint at the change.
    checkpoint           bigint      NOT NULL
);
CREATE INDEX consumer_lease_log_at ON consumer_lease_log (consumer_group, at);

-- Optional audit of applied batches (projector `--audit-batches`, on in tests): one row per
-- committed batch, written in its transaction, so the positions each partition applied can be
-- shown contiguous and non-overlapping across owners.
CREATE TABLE consumer_batches (
    consumer       text        NOT NULL,
    first_position bigint      NOT NULL,
    last_position  bigint      NOT NULL CHECK (last_position >= first_position),
    instance       text        NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, first_position)
);

-- The notification partitions decide "pending" or "not_configured" for a new delivery from the
-- enterprise's webhook URL as of the event. rm_webhooks is written by the partition that owns
-- the enterprise's stream, which may be ahead of or behind another partition; so every
-- partition keeps its own copy of the URLs, in its own order of events.
CREATE TABLE notification_webhook_replicas (
    partition     integer     NOT NULL,
    enterprise_id uuid        NOT NULL,
    url           text,
    PRIMARY KEY (partition, enterprise_id)
);

-- Connection owners are now read from the event store (immutable facts; see ADR 0009), so the
-- notifications projection's own copy goes.
DROP TABLE notification_connections;

-- The partitioned consumers start at position 1 and rebuild the read models, so what the
-- unpartitioned consumers wrote goes. rm_webhooks stays: it converges as the events are
-- applied again (last state per enterprise), and the finalizer's deliverer reads it meanwhile.
-- webhook_deliveries stays too: rebuilt notifications keep their ids.
TRUNCATE rm_event_categories, rm_enterprises, rm_keys, rm_users, rm_partners, rm_clients,
         rm_connections, rm_allocations, rm_balances, rm_deposits, rm_settlements,
         rm_settlement_transfers, rm_disputes, rm_dispute_closures, rm_notifications,
         notification_settlements, notification_transfer_sets;
DELETE FROM consumer_parked_events
 WHERE consumer IN ('projector-catalog', 'projector-read-models', 'projector-notifications');
DELETE FROM consumer_parked_streams
 WHERE consumer IN ('projector-catalog', 'projector-read-models', 'projector-notifications');
-- Retired, not deleted: an unpartitioned projector of an older version still running during an
-- upgrade would recreate a missing checkpoint at 0 and apply everything again; at the largest
-- position it skips every message instead.
UPDATE consumer_checkpoints SET position = 9223372036854775807, updated_at = now()
 WHERE consumer IN ('projector-catalog', 'projector-read-models', 'projector-notifications');
