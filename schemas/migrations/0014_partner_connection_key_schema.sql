-- The shape of connection key each partner takes (ADR 0011). Every partner registered before
-- schemas existed took a plain token, which is what `token` means, so existing rows get it;
-- a rebuild from the log gives the same (a PartnerRegistered v1 lifts with no schema, read as
-- `token`).
ALTER TABLE rm_partners
    ADD COLUMN connection_key_schema text NOT NULL DEFAULT 'token';
