-- Read models of disputes and their closures (SPEC §5), maintained by the projector; transfers
-- of a closure wait in rm_settlement_transfers without a settlement until one picks them up.

ALTER TABLE rm_settlements ADD COLUMN finalized boolean NOT NULL DEFAULT false;

ALTER TABLE rm_settlement_transfers ALTER COLUMN settlement_id DROP NOT NULL;
ALTER TABLE rm_settlement_transfers ADD COLUMN dispute_closure_id uuid;
CREATE INDEX rm_transfers_closure ON rm_settlement_transfers (dispute_closure_id) WHERE dispute_closure_id IS NOT NULL;

CREATE TABLE rm_disputes (
    id                       uuid        PRIMARY KEY,
    settlement_id            uuid        NOT NULL,
    partner_enterprise_id    uuid        NOT NULL,
    connection_id            uuid        NOT NULL,
    client_enterprise_id     uuid        NOT NULL,
    user_id                  uuid        NOT NULL,
    expected_transfers       jsonb       NOT NULL,
    retracted                boolean     NOT NULL DEFAULT false,
    reason                   text,
    retracted_by             uuid,
    retracted_at             timestamptz,
    retracted_reason         text,
    dispute_closure_id       uuid,
    settled_in_settlement_id uuid,
    created_at               timestamptz NOT NULL,
    updated_at               timestamptz NOT NULL
);
CREATE INDEX rm_disputes_settlement ON rm_disputes (settlement_id);
CREATE INDEX rm_disputes_partner ON rm_disputes (partner_enterprise_id, created_at, id);
CREATE INDEX rm_disputes_client ON rm_disputes (client_enterprise_id, created_at, id);
CREATE INDEX rm_disputes_settled_in ON rm_disputes (settled_in_settlement_id) WHERE settled_in_settlement_id IS NOT NULL;

CREATE TABLE rm_dispute_closures (
    id                 uuid        PRIMARY KEY,
    dispute_id         uuid        NOT NULL UNIQUE,
    closed_by          text        NOT NULL,
    user_id            uuid,
    notes              text        NOT NULL,
    adjusted_transfers jsonb       NOT NULL,
    created_at         timestamptz NOT NULL
);
