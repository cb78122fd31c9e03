//! The event store on Postgres: the only code that writes events. Append (multi-stream, optimistic,
//! one round trip), load, command idempotency, nonces, the gap-free sequencer and chain verification.

mod append;
pub mod cache;
pub mod db;
mod execute;
pub mod sequencer;
pub mod verify;

pub use append::{
    append_on, AppendError, AppendRequest, Appended, EventStore, FoldingRow, NewEvent, NonceClaim,
    NonceState, StoredOutcome,
};
pub(crate) use append::{hash32, sequenced_event_from_row, stored_event_from_row};
pub use execute::{
    cached, execute, load, Command, Decision, ExecuteError, Executed, Loaded, LoadedStream,
    EXECUTE_ATTEMPTS_MAX, SNAPSHOT_EVERY,
};
pub use sequencer::{Leadership, Sequencer, StepOutcome};
pub use verify::{stored_hash, verify_chain, walk_chain, ChainFault, ChainReport};

use chrono::{DateTime, Utc};

use crate::domain::event::Timestamp;

pub fn to_datetime(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.0).unwrap_or_default()
}

pub fn from_datetime(t: DateTime<Utc>) -> Timestamp {
    Timestamp(t.timestamp_micros())
}
