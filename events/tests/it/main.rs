//! Integration tests of the event log against the real local stack (Postgres and nats-server
//! started by `deploy/stack`): append, idempotency, the commit-order race, sequencer failover,
//! NATS data loss, tampering, the consumer loop, the golden corpus, and properties of the pure core.

mod append;
mod consumer;
mod db_settings;
mod deploy;
mod failover;
mod golden;
mod idempotency;
mod nats_loss;
mod properties;
mod purity;
mod race;
mod snapshots;
mod support;
mod tamper;
