//! The one write path: load → decide (pure) → append, with idempotency, nonces and a bounded
//! number of retries when another writer moved a stream in between.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::append::{
    AppendError, AppendRequest, EventStore, NewEvent, NonceClaim, NonceState, StoredOutcome,
};
use super::cache::CachedStream;
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

/// One loaded stream: its version and its events, decoded (shared with the stream cache).
pub type LoadedStream = CachedStream;

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

/// Loads and decodes `streams`: what the cache holds plus, in one query, every event appended
/// since; the cache then learns the longer prefixes.
pub async fn load(store: &EventStore, streams: &[StreamName]) -> Result<Loaded, ExecuteError> {
    let mut loaded = Loaded::default();
    for stream in streams {
        let cached = store.cache().get(stream).unwrap_or_default();
        loaded.streams.insert(stream.clone(), cached);
    }
    let names: Vec<StreamName> = loaded.streams.keys().cloned().collect();
    let after: Vec<u64> = loaded.streams.values().map(|s| s.version).collect();
    let fresh = store.load_after(&names, &after).await?;
    if fresh.is_empty() {
        return Ok(loaded);
    }
    let mut grown: BTreeMap<StreamName, Vec<DomainEvent>> = BTreeMap::new();
    for stored in fresh {
        let entry = loaded.streams.entry(stored.stream.clone()).or_default();
        entry.version = stored.version;
        entry.payload_bytes += stored.event.payload.len();
        grown
            .entry(stored.stream)
            .or_default()
            .push(decode_event(&stored.event)?);
    }
    for (stream, new) in grown {
        if let Some(entry) = loaded.streams.get_mut(&stream) {
            Arc::make_mut(&mut entry.events).extend(new);
            store.cache().put(&stream, entry.clone());
        }
    }
    Ok(loaded)
}

/// Returns the earlier outcome if this command (or its nonce) was executed before. The nonce is
/// looked at first: a nonce reused with another payload is refused as such
/// (docs/api/signatures.md), even when the command's identity is derived from that nonce.
async fn earlier_outcome(
    store: &EventStore,
    command: &Command,
) -> Result<Option<StoredOutcome>, ExecuteError> {
    match store.earlier(command.id, command.nonce.as_ref()).await? {
        (NonceState::Reused, _) => Err(ExecuteError::NonceReused),
        (NonceState::Retry { .. }, found) => Ok(found),
        (NonceState::Fresh, Some(found)) if found.request_hash != command.request_hash => {
            Err(ExecuteError::RequestMismatch)
        }
        (NonceState::Fresh, found) => Ok(found),
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
