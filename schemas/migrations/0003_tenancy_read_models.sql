-- Read models of tenancy and custody, maintained by the projector from events. Amounts are
-- base units as NUMERIC(39,0) (they are i128 in the engine). Nothing here is the truth: every
-- row can be rebuilt from the event log.

CREATE TABLE rm_enterprises (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    oes_license boolean     NOT NULL,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);

CREATE TABLE rm_keys (
    id            uuid        PRIMARY KEY,
    enterprise_id uuid        NOT NULL,
    public_key    text        NOT NULL,
    created_at    timestamptz NOT NULL,
    revoked_at    timestamptz
);
CREATE INDEX rm_keys_enterprise ON rm_keys (enterprise_id);

CREATE TABLE rm_users (
    id             uuid        PRIMARY KEY,
    name           text        NOT NULL,
    auditor        boolean     NOT NULL,
    enterprise_ids uuid[]      NOT NULL,
    created_at     timestamptz NOT NULL
);

CREATE TABLE rm_partners (
    id                            uuid        PRIMARY KEY,
    enterprise_id                 uuid        NOT NULL UNIQUE,
    name                          text        NOT NULL,
    broker                        boolean     NOT NULL,
    active                        boolean     NOT NULL,
    client_dispute_window_minutes text,
    top_up_window_minutes         text,
    amount_format                 text        NOT NULL,
    created_at                    timestamptz NOT NULL,
    updated_at                    timestamptz NOT NULL
);

CREATE TABLE rm_clients (
    id            uuid        PRIMARY KEY,
    enterprise_id uuid        NOT NULL UNIQUE,
    wallet_id     uuid        NOT NULL,
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE TABLE rm_connections (
    id                    uuid        PRIMARY KEY,
    name                  text        NOT NULL,
    client_id             uuid        NOT NULL,
    client_enterprise_id  uuid        NOT NULL,
    partner_id            uuid        NOT NULL,
    partner_enterprise_id uuid        NOT NULL,
    network_account_id    uuid        NOT NULL,
    active                boolean     NOT NULL,
    nonce                 text        NOT NULL,
    proof                 text        NOT NULL,
    created_at            timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL
);
CREATE INDEX rm_connections_client ON rm_connections (client_enterprise_id, created_at, id);
CREATE INDEX rm_connections_partner ON rm_connections (partner_enterprise_id, created_at, id);

CREATE TABLE rm_allocations (
    id                    uuid           PRIMARY KEY,
    type                  text           NOT NULL,
    connection_id         uuid           NOT NULL,
    client_enterprise_id  uuid           NOT NULL,
    partner_enterprise_id uuid           NOT NULL,
    currency              text           NOT NULL,
    quantity              numeric(39, 0) NOT NULL,
    client_external_id    text           NOT NULL,
    initiated_by          uuid           NOT NULL,
    notes                 text,
    status                text           NOT NULL,
    reason                text,
    created_at            timestamptz    NOT NULL,
    updated_at            timestamptz    NOT NULL
);
CREATE INDEX rm_allocations_client ON rm_allocations (client_enterprise_id, created_at, id);
CREATE INDEX rm_allocations_partner ON rm_allocations (partner_enterprise_id, created_at, id);

-- Balances per account (a custody wallet or a connection's network account) and currency.
CREATE TABLE rm_balances (
    account_id          uuid           NOT NULL,
    currency            text           NOT NULL,
    owner_enterprise_id uuid           NOT NULL,
    connection_id       uuid,
    available           numeric(39, 0) NOT NULL,
    held                numeric(39, 0) NOT NULL,
    PRIMARY KEY (account_id, currency)
);
CREATE INDEX rm_balances_owner ON rm_balances (owner_enterprise_id);
CREATE INDEX rm_balances_connection ON rm_balances (connection_id);

CREATE TABLE rm_deposits (
    id            uuid           PRIMARY KEY,
    enterprise_id uuid           NOT NULL,
    external_id   text           NOT NULL,
    currency      text           NOT NULL,
    quantity      numeric(39, 0) NOT NULL,
    created_at    timestamptz    NOT NULL,
    UNIQUE (enterprise_id, external_id)
);
