//! The one write path: load → decide (pure) → append, with idempotency, nonces and a bounded
//! number of retries when another writer moved a stream in between.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::append::FoldingRow;
use super::append::{
    AppendError, AppendRequest, EventStore, NewEvent, NonceClaim, NonceState, StoredOutcome,
};
use super::cache::{Cached, Folded};
use crate::codec::{decode_event, encode_event, DecodeError, Metadata};
use crate::domain::aggregate::STATE_SCHEMA;
use crate::domain::event::Timestamp;
use crate::domain::{Aggregate, CommandId, DomainEvent, State, StreamName};

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

/// One loaded stream: its version and its state folded up to it (shared with the state cache).
pub type LoadedStream = Folded;

/// The streams a command loaded, each folded.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub streams: BTreeMap<StreamName, LoadedStream>,
}

impl Loaded {
    /// The version `stream` was loaded at (0 for a stream that does not exist yet).
    pub fn version(&self, stream: &StreamName) -> u64 {
        self.streams.get(stream).map_or(0, |s| s.version)
    }

    /// The aggregate of `stream` as loaded: its initial state for a stream not loaded, not
    /// made yet, or of another category.
    pub fn aggregate<A: Aggregate>(&self, stream: &StreamName) -> A {
        self.streams
            .get(stream)
            .and_then(|s| A::of(&s.state))
            .cloned()
            .unwrap_or_default()
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
    #[error("the stored snapshot of {0} cannot be decoded")]
    Snapshot(StreamName),
    #[error(transparent)]
    Append(#[from] AppendError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Events a stream may gain past its stored snapshot before a fresher one is stored: what a
/// process that never saw the stream replays at most to decide on it.
pub const SNAPSHOT_EVERY: u64 = 64;

/// The streams' states from the cache alone, when it holds every one of them: a decision on
/// them needs no read, as the append checks each version.
pub fn cached(store: &EventStore, streams: &[StreamName]) -> Option<Loaded> {
    cached_but(store, streams, 0)
}

/// As `cached`, taking up to `unknown` streams the cache does not hold as not made yet
/// (version 0). That is right for the stream a command creates (a staging's settlement); when
/// it is wrong, the append finds the stream made and refuses, and the command loads it. More
/// unknown streams than that suggest a process that has not seen them (after a start), where
/// guessing would only waste a round.
fn cached_but(store: &EventStore, streams: &[StreamName], unknown: usize) -> Option<Loaded> {
    let mut loaded = Loaded::default();
    let mut missing = 0;
    for stream in streams {
        let folded = match store.cache().get(stream) {
            Some(cached) => cached.folded,
            None if missing < unknown => {
                missing += 1;
                Folded::initial(stream)
            }
            None => return None,
        };
        loaded.streams.insert(stream.clone(), folded);
    }
    Some(loaded)
}

/// Loads `streams` folded: the cached state of each plus, in one query, every event appended
/// since — or, for a stream not cached, its latest stored snapshot and the events after it.
/// The cache then learns the newer states, and a snapshot is stored in the background for a
/// stream that has gone `SNAPSHOT_EVERY` events past its last one.
pub async fn load(store: &EventStore, streams: &[StreamName]) -> Result<Loaded, ExecuteError> {
    match load_with(store, streams, true).await {
        // A snapshot this build cannot read (it cannot happen at one schema, but a stored row is
        // not trusted to be readable): replay the streams from their events instead.
        Err(ExecuteError::Snapshot(stream)) => {
            tracing::warn!(%stream, "a stored snapshot does not decode; replaying its events");
            load_with(store, streams, false).await
        }
        other => other,
    }
}

async fn load_with(
    store: &EventStore,
    streams: &[StreamName],
    snapshots: bool,
) -> Result<Loaded, ExecuteError> {
    let mut known: BTreeMap<StreamName, Cached> = BTreeMap::new();
    for stream in streams {
        let cached = store.cache().get(stream).unwrap_or_else(|| Cached {
            folded: Folded::initial(stream),
            stored: 0,
        });
        known.insert(stream.clone(), cached);
    }
    let names: Vec<StreamName> = known.keys().cloned().collect();
    let after: Vec<u64> = known.values().map(|c| c.folded.version).collect();
    let snapshot: Vec<bool> = after.iter().map(|v| snapshots && *v == 0).collect();
    let rows = store
        .load_folding(&names, &after, &snapshot, STATE_SCHEMA)
        .await?;
    let mut grown: BTreeMap<StreamName, Cached> = BTreeMap::new();
    for row in rows {
        match row {
            FoldingRow::Snapshot {
                stream,
                version,
                state,
            } => {
                let Some(state) = State::decode(&state) else {
                    return Err(ExecuteError::Snapshot(stream));
                };
                let folded = Folded {
                    version,
                    state: Arc::new(state),
                };
                grown.insert(
                    stream,
                    Cached {
                        folded,
                        stored: version,
                    },
                );
            }
            FoldingRow::Event {
                stream,
                version,
                event,
            } => {
                let entry = match grown.entry(stream) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(v) => {
                        let start = known.get(v.key()).cloned().unwrap_or_else(|| Cached {
                            folded: Folded::initial(v.key()),
                            stored: 0,
                        });
                        v.insert(start)
                    }
                };
                let event = decode_event(&event)?;
                let state = Arc::make_mut(&mut entry.folded.state);
                *state = std::mem::replace(state, State::Unfolded).evolve(&event);
                entry.folded.version = version;
            }
        }
    }
    for (stream, cached) in grown {
        remember(store, &stream, cached.clone());
        if let Some(k) = known.get_mut(&stream) {
            *k = cached;
        }
    }
    Ok(Loaded {
        streams: known.into_iter().map(|(s, c)| (s, c.folded)).collect(),
    })
}

/// Puts a newer state of `stream` in the cache and, when it is `SNAPSHOT_EVERY` events past
/// the stored snapshot, stores a snapshot of it in the background (off the command's path; a
/// failure only means a later load replays more).
fn remember(store: &EventStore, stream: &StreamName, cached: Cached) {
    let weight = cached.folded.state.weight();
    let due = cached.folded.version >= cached.stored + SNAPSHOT_EVERY;
    let folded = cached.folded.clone();
    store.cache().put(stream, cached, weight);
    let (streams, bytes) = store.cache().size();
    metrics::gauge!("settle_state_cache_streams").set(streams as f64);
    metrics::gauge!("settle_state_cache_bytes").set(bytes as f64);
    if !due {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (store, stream) = (store.clone(), stream.clone());
    runtime.spawn(async move {
        let state = folded.state.encode();
        match store
            .store_snapshot(&stream, folded.version, STATE_SCHEMA, &state)
            .await
        {
            Ok(()) => {
                metrics::counter!("settle_snapshots_stored_total").increment(1);
                store.cache().stored(&stream, folded.version);
            }
            Err(error) => tracing::debug!(%stream, %error, "snapshot not stored"),
        }
    });
}

/// The states after a committed append: each written stream's loaded state evolved with its new
/// events, at its new version. Decided events are what the store decodes back (the codec
/// round-trips), so no read is needed to know them.
fn write_through(store: &EventStore, loaded: &Loaded, events: &[(StreamName, DomainEvent)]) {
    let mut written: BTreeMap<&StreamName, Vec<&DomainEvent>> = BTreeMap::new();
    for (stream, event) in events {
        written.entry(stream).or_default().push(event);
    }
    for (stream, new) in written {
        let Some(before) = loaded.streams.get(stream) else {
            continue;
        };
        let state = new.iter().fold((*before.state).clone(), |s, e| s.evolve(e));
        let stored = store.cache().get(stream).map_or(0, |c| c.stored);
        let folded = Folded {
            version: before.version + new.len() as u64,
            state: Arc::new(state),
        };
        remember(store, stream, Cached { folded, stored });
    }
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
///
/// The first round decides on the cached states alone when the cache holds every stream the
/// command names but at most one, taken as not made yet (`cached_but`), and goes straight to
/// the append, whose version checks make that decision as safe as one on a fresh load (one
/// round trip). Anything else — a stream not cached, a conflict, a twin or nonce
/// already recorded, or a refusal (which no append verifies) — is settled by the full rounds:
/// load, look for an earlier outcome, decide, append.
pub async fn execute<R>(
    store: &EventStore,
    command: &Command,
    mut decide: impl FnMut(&Loaded) -> Result<Decision, R>,
) -> Result<Executed<R>, ExecuteError> {
    if let Some(loaded) = cached_but(store, &command.streams, 1) {
        if let Ok(decision) = decide(&loaded) {
            if let Some(done) = commit(store, command, &loaded, decision, "cached").await? {
                return Ok(done);
            }
        }
    }
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
        if let Some(done) = commit(store, command, &loaded, decision, "loaded").await? {
            return Ok(done);
        }
    }
    Err(ExecuteError::Contention)
}

/// Appends `decision`, taken on `loaded` (`on`: cached or loaded states, for the metric), and
/// writes the new states through to the cache. `None` when the command must look again:
/// someone else moved a stream, or recorded this very command or nonce.
async fn commit<R>(
    store: &EventStore,
    command: &Command,
    loaded: &Loaded,
    decision: Decision,
    on: &'static str,
) -> Result<Option<Executed<R>>, ExecuteError> {
    match store
        .append(&append_request(command, loaded, &decision))
        .await
    {
        Ok(appended) => {
            metrics::counter!("settle_commands_decided_total", "on" => on).increment(1);
            write_through(store, loaded, &decision.events);
            Ok(Some(Executed::Committed {
                outcome: decision.outcome,
                txid: Some(appended.txid),
            }))
        }
        Err(AppendError::Conflict | AppendError::DuplicateCommand | AppendError::NonceTaken) => {
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The append of `decision`, taken on `loaded`.
fn append_request(command: &Command, loaded: &Loaded, decision: &Decision) -> AppendRequest {
    AppendRequest {
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
    }
}
