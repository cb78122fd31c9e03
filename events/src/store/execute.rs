//! The one write path: load → decide (pure) → append, with idempotency, nonces and a bounded
//! number of retries when another writer moved a stream in between.

use std::collections::BTreeMap;

use super::append::{
    AppendError, AppendRequest, EventStore, NewEvent, NonceClaim, NonceState, StoredOutcome,
};
use crate::codec::{decode_event, encode_event, DecodeError, Metadata};
use crate::domain::event::Timestamp;
use crate::domain::{CommandId, DomainEvent, StreamName};

/// How often a command is re-decided after losing a race on a stream before giving up.
pub const EXECUTE_ATTEMPTS_MAX: u32 = 8;

/// A command on its way to the store.
#[derive(Clone, Debug)]
pub struct Command {
    pub id: CommandId,
    pub request_hash: [u8; 32],
    pub metadata: Metadata,
    pub nonce: Option<NonceClaim>,
    /// Every stream `decide` needs to see.
    pub streams: Vec<StreamName>,
    pub recorded_at: Timestamp,
}

/// One loaded stream: its version and its events, decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadedStream {
    pub version: u64,
    pub events: Vec<DomainEvent>,
}

/// The streams a command loaded.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub streams: BTreeMap<StreamName, LoadedStream>,
}

impl Loaded {
    /// The events of `stream` (empty for a stream that does not exist yet).
    pub fn events(&self, stream: &StreamName) -> &[DomainEvent] {
        self.streams
            .get(stream)
            .map_or(&[], |s| s.events.as_slice())
    }
}

/// What `decide` answers: the events to append and the outcome to record and return.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    pub events: Vec<(StreamName, DomainEvent)>,
    pub outcome: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Executed<R> {
    /// The events were appended (possibly none) in transaction `txid`.
    Committed { outcome: Vec<u8>, txid: Option<i64> },
    /// The same command (or nonce with the same payload) was executed before: its first outcome,
    /// and the transaction that recorded it.
    Replayed { outcome: Vec<u8>, txid: Option<i64> },
    /// `decide` refused; nothing was written.
    Rejected(R),
}

#[derive(Debug, thiserror::Error)]
pub enum ExecuteError {
    #[error("the command id was already used by a different request")]
    RequestMismatch,
    #[error("the nonce was already used with a different payload")]
    NonceReused,
    #[error("the command lost {EXECUTE_ATTEMPTS_MAX} races in a row")]
    Contention,
    #[error("a stored event cannot be decoded: {0}")]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

async fn load(store: &EventStore, streams: &[StreamName]) -> Result<Loaded, ExecuteError> {
    let mut loaded = Loaded::default();
    for stream in streams {
        loaded.streams.entry(stream.clone()).or_default();
    }
    for stored in store.load(streams).await? {
        let entry = loaded.streams.entry(stored.stream.clone()).or_default();
        entry.version = stored.version;
        entry.events.push(decode_event(&stored.event)?);
    }
    Ok(loaded)
}

/// Returns the earlier outcome if this command (or its nonce) was executed before. The nonce is
/// looked at first: a nonce reused with another payload is refused as such (SPEC §4), even when
/// the command's identity is derived from that nonce.
async fn earlier_outcome(
    store: &EventStore,
    command: &Command,
) -> Result<Option<StoredOutcome>, ExecuteError> {
    if let Some(nonce) = &command.nonce {
        match store
            .nonce_state(&nonce.scope, &nonce.nonce, &nonce.payload_hash)
            .await?
        {
            NonceState::Fresh => {}
            NonceState::Reused => return Err(ExecuteError::NonceReused),
            NonceState::Retry { command_id } => {
                return Ok(store.command_outcome(command_id).await?)
            }
        }
    }
    match store.command_outcome(command.id).await? {
        Some(found) if found.request_hash != command.request_hash => {
            Err(ExecuteError::RequestMismatch)
        }
        found => Ok(found),
    }
}

/// Runs `command` through load → `decide` → append. `decide` must be pure: it may be called
/// again (with fresher state) when another writer wins a race.
pub async fn execute<R>(
    store: &EventStore,
    command: &Command,
    mut decide: impl FnMut(&Loaded) -> Result<Decision, R>,
) -> Result<Executed<R>, ExecuteError> {
    for _ in 0..EXECUTE_ATTEMPTS_MAX {
        // Load first, then look for an earlier outcome: the outcome commits with the events, so
        // if a twin of this command committed before the load, the look-up sees it; if after,
        // the append below conflicts and the next round sees it. The other order would let a
        // twin's events be decided on as if they were someone else's.
        let loaded = load(store, &command.streams).await?;
        if let Some(first) = earlier_outcome(store, command).await? {
            return Ok(Executed::Replayed {
                outcome: first.outcome,
                txid: first.txid,
            });
        }
        let decision = match decide(&loaded) {
            Ok(decision) => decision,
            Err(rejection) => return Ok(Executed::Rejected(rejection)),
        };
        let request = AppendRequest {
            command_id: command.id,
            request_hash: command.request_hash,
            expected: loaded
                .streams
                .iter()
                .map(|(s, l)| (s.clone(), l.version))
                .collect(),
            events: decision
                .events
                .iter()
                .map(|(stream, event)| NewEvent {
                    stream: stream.clone(),
                    event: encode_event(event),
                })
                .collect(),
            metadata: command.metadata.clone(),
            outcome: decision.outcome.clone(),
            nonce: command.nonce.clone(),
            recorded_at: command.recorded_at,
        };
        match store.append(&request).await {
            Ok(appended) => {
                return Ok(Executed::Committed {
                    outcome: decision.outcome,
                    txid: Some(appended.txid),
                })
            }
            // Someone else moved a stream, or recorded this very command or nonce: look again.
            Err(
                AppendError::Conflict | AppendError::DuplicateCommand | AppendError::NonceTaken,
            ) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ExecuteError::Contention)
}
