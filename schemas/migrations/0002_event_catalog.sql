-- Read model of the projector: how many events each stream category holds and the position of
-- the latest, so operators can see the log's shape and a projection's freshness.
CREATE TABLE rm_event_categories (
    category       text   NOT NULL PRIMARY KEY,
    events         bigint NOT NULL,
    last_position  bigint NOT NULL
);
