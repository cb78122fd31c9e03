-- Notifications (SPEC §7.7, §9.2, §9.3): each enterprise's feed as a projection of its own
-- (consumer `projector-notifications`), the webhook URLs, what that projection keeps to address
-- and fill notifications, and the webhook delivery state and attempt log of the finalizer.

-- The feed used to be written by the tenancy projection, without payloads. The new consumer
-- starts at position 1 and rebuilds it, so the old table goes.
DROP TABLE rm_notifications;

CREATE TABLE rm_notifications (
    id            uuid        PRIMARY KEY,
    enterprise_id uuid        NOT NULL,
    type          text        NOT NULL,
    settlement_id uuid        NOT NULL,
    partner_id    uuid        NOT NULL,
    external_id   text        NOT NULL,
    -- The exact JSON text a webhook delivery sends (and the feed shows as `payload`).
    body          text        NOT NULL,
    -- Global position of the event behind it: the feed's order.
    position      bigint      NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX rm_notifications_enterprise ON rm_notifications (enterprise_id, position, id);

-- Each enterprise's webhook URL (NULL once cleared), from WebhookConfigured.
CREATE TABLE rm_webhooks (
    enterprise_id uuid        PRIMARY KEY,
    url           text,
    updated_at    timestamptz NOT NULL
);

-- What the notifications projection needs, kept by itself: the three consumers advance
-- independently, so another projection's tables may be behind (or ahead of) this one.
CREATE TABLE notification_connections (
    connection_id        uuid PRIMARY KEY,
    client_enterprise_id uuid NOT NULL
);

CREATE TABLE notification_settlements (
    settlement_id          uuid        PRIMARY KEY,
    partner_id             uuid        NOT NULL,
    partner_enterprise_id  uuid        NOT NULL,
    external_id            text        NOT NULL,
    dispute_window_ends_at timestamptz NOT NULL,
    top_up_window_ends_at  timestamptz NOT NULL,
    withheld_connections   uuid[]      NOT NULL DEFAULT '{}',
    -- Short currencies of the last failure notified: a retry that fails alike is not renotified.
    failed_currencies      text[]
);

-- The instructions of each settlement, one row per event that brought them (its staging, each
-- set of joined dispute closures), as parallel arrays: written and read in one statement each.
CREATE TABLE notification_transfer_sets (
    settlement_id uuid   NOT NULL,
    event_id      uuid   NOT NULL,
    -- NULL where the partner's custody account pays (party shape).
    sources       uuid[] NOT NULL,
    destinations  uuid[] NOT NULL,
    currencies    text[] NOT NULL,
    -- Signed base units, `+` toward the destination.
    quantities    text[] NOT NULL,
    PRIMARY KEY (settlement_id, event_id)
);

-- Webhook delivery state, one row per notification, written first by the projection (pending
-- when the enterprise had a URL, else not_configured) and then by the finalizer's deliverer.
-- Operational, not a read model: rebuilding the feed keeps it (same ids, ON CONFLICT DO NOTHING).
-- `attempts` counts claimed attempts; `leased_until` keeps two finalizers from sending the same
-- attempt at once, and a lease that lapses (a crash mid-send) makes the row due again.
CREATE TABLE webhook_deliveries (
    notification_id uuid        PRIMARY KEY,
    enterprise_id   uuid        NOT NULL,
    status          text        NOT NULL
                    CHECK (status IN ('pending', 'delivered', 'failed', 'not_configured')),
    attempts        integer     NOT NULL DEFAULT 0,
    due_at          timestamptz NOT NULL,
    leased_until    timestamptz,
    delivered_at    timestamptz,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at) WHERE status = 'pending';

-- Every attempt: HTTP status, or the error when there was no response.
CREATE TABLE webhook_attempts (
    notification_id uuid        NOT NULL,
    attempt         integer     NOT NULL CHECK (attempt >= 1),
    at              timestamptz NOT NULL,
    url             text        NOT NULL,
    http_status     integer,
    error           text,
    duration_ms     integer     NOT NULL,
    PRIMARY KEY (notification_id, attempt)
);
