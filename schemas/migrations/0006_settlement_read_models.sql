-- Read models of settlements and their transfers, maintained by the projector.

CREATE TABLE rm_settlements (
    id                     uuid        PRIMARY KEY,
    partner_id             uuid        NOT NULL,
    partner_enterprise_id  uuid        NOT NULL,
    external_id            text        NOT NULL,
    api                    text        NOT NULL,
    status                 text        NOT NULL,
    notes                  text,
    cutoff_at              timestamptz,
    initiated_by           uuid        NOT NULL,
    disputed               boolean     NOT NULL DEFAULT false,
    reason                 text,
    dispute_window_ends_at timestamptz NOT NULL,
    top_up_window_ends_at  timestamptz NOT NULL,
    finalized_at           timestamptz,
    created_at             timestamptz NOT NULL,
    updated_at             timestamptz NOT NULL,
    UNIQUE (partner_id, external_id)
);
CREATE INDEX rm_settlements_partner ON rm_settlements (partner_enterprise_id, created_at, id);

CREATE TABLE rm_settlement_transfers (
    id                             uuid           PRIMARY KEY,
    settlement_id                  uuid           NOT NULL,
    partner_enterprise_id          uuid           NOT NULL,
    source_trading_account_id      uuid           NOT NULL,
    source_connection_id           uuid,
    source_network_account_id      uuid,
    source_client_enterprise_id    uuid,
    destination_connection_id      uuid           NOT NULL,
    destination_trading_account_id uuid           NOT NULL,
    destination_network_account_id uuid           NOT NULL,
    destination_client_enterprise_id uuid         NOT NULL,
    currency                       text           NOT NULL,
    quantity                       numeric(39, 0) NOT NULL,
    status                         text           NOT NULL,
    created_at                     timestamptz    NOT NULL,
    updated_at                     timestamptz    NOT NULL,
    ordinal                        integer        NOT NULL
);
CREATE INDEX rm_transfers_settlement ON rm_settlement_transfers (settlement_id, ordinal);
CREATE INDEX rm_transfers_destination_client ON rm_settlement_transfers (destination_client_enterprise_id);
CREATE INDEX rm_transfers_source_client ON rm_settlement_transfers (source_client_enterprise_id);

-- Each client enterprise's notification feed (webhook delivery comes with the finalizer).
CREATE TABLE rm_notifications (
    id            uuid        PRIMARY KEY,
    enterprise_id uuid        NOT NULL,
    type          text        NOT NULL,
    settlement_id uuid        NOT NULL,
    partner_id    uuid        NOT NULL,
    external_id   text        NOT NULL,
    created_at    timestamptz NOT NULL
);
CREATE INDEX rm_notifications_enterprise ON rm_notifications (enterprise_id, created_at, id);
