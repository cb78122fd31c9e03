//! Decoded streams kept in memory between commands, so a command reads and decodes only the
//! events appended since it last saw a stream.
//!
//! Sound because stored events are immutable and a stream's versions are dense: the events at
//! versions `1..=v` of a stream never change once seen, so a cached prefix plus the rows with
//! `version > v` is exactly what a full load would return. The append still checks every
//! expected version, so a cache that is behind costs a re-load, never a wrong decision.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::domain::{DomainEvent, StreamName};

/// Payload bytes the cache may hold before it is emptied (a rough bound on its memory).
pub const CACHE_PAYLOAD_BYTES_MAX: usize = 256 << 20;

/// One stream as far as it was read: its version and its events, decoded.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CachedStream {
    pub version: u64,
    pub events: Arc<Vec<DomainEvent>>,
    /// Encoded payload bytes of `events`, for the memory bound.
    pub payload_bytes: usize,
}

#[derive(Debug, Default)]
struct Inner {
    streams: HashMap<StreamName, CachedStream>,
    payload_bytes: usize,
}

/// A process-local cache of decoded stream prefixes. Cheap to share.
#[derive(Debug, Default)]
pub struct StreamCache {
    inner: Mutex<Inner>,
}

impl StreamCache {
    /// The cached prefix of `stream`, if any.
    pub fn get(&self, stream: &StreamName) -> Option<CachedStream> {
        self.inner.lock().ok()?.streams.get(stream).cloned()
    }

    /// Records a longer prefix of `stream`; a shorter or equal one than what is cached is ignored
    /// (another command may have read further meanwhile).
    pub fn put(&self, stream: &StreamName, cached: CachedStream) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let known = inner
            .streams
            .get(stream)
            .map(|c| (c.version, c.payload_bytes));
        if known.is_some_and(|(version, _)| version >= cached.version) {
            return;
        }
        let replaced = known.map_or(0, |(_, bytes)| bytes);
        let total = inner.payload_bytes - replaced + cached.payload_bytes;
        if total > CACHE_PAYLOAD_BYTES_MAX {
            // Simplest bound that stays correct: start over. Hot streams come back at once.
            inner.streams.clear();
            inner.payload_bytes = 0;
            if cached.payload_bytes > CACHE_PAYLOAD_BYTES_MAX {
                return;
            }
            inner.payload_bytes = cached.payload_bytes;
        } else {
            inner.payload_bytes = total;
        }
        inner.streams.insert(stream.clone(), cached);
    }
}
