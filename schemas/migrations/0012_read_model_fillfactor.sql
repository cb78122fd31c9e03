-- Room on each page for updated rows (ADR 0009): the projector updates balances, settlements,
-- transfers, disputes and its checkpoints in place, batch after batch, and none of those
-- updates changes an indexed column, so with free space on the page Postgres keeps the new
-- version there (a HOT update) and writes no index entry at all. Applies to pages written from
-- now on (a rebuild writes them all anew).
ALTER TABLE rm_balances SET (fillfactor = 70);
ALTER TABLE rm_settlements SET (fillfactor = 80);
ALTER TABLE rm_settlement_transfers SET (fillfactor = 80);
ALTER TABLE rm_disputes SET (fillfactor = 80);
ALTER TABLE rm_connections SET (fillfactor = 90);
ALTER TABLE rm_enterprises SET (fillfactor = 90);
ALTER TABLE notification_settlements SET (fillfactor = 80);
ALTER TABLE consumer_checkpoints SET (fillfactor = 50);
ALTER TABLE consumer_partitions SET (fillfactor = 50);
ALTER TABLE consumer_instances SET (fillfactor = 50);
