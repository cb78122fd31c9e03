//! The settlement engine's domain as events, and the event log that stores and carries them.
//!
//! `domain` and `codec` are pure (no I/O, no clock, no randomness); `store` is the only code that
//! writes events (Postgres); `bus` is the only code that speaks NATS; `service` holds what every
//! process shares (configuration, health, metrics, shutdown); `audit` holds the auditor's reads
//! of the log (it writes no events).

pub mod audit;
pub mod bus;
pub mod codec;
pub mod domain;
pub mod lifecycle;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
