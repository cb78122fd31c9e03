//! Integration tests of the event log against the real local stack (Postgres and nats-server
//! started by `deploy/stack`): append, idempotency, the commit-order race, sequencer failover,
//! NATS data loss, tampering, the consumer loop, and the golden corpus.

mod append;
mod consumer;
mod failover;
mod golden;
mod idempotency;
mod nats_loss;
mod race;
mod support;
mod tamper;
