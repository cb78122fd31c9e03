//! Folded stream states kept in memory between commands, so a decision starts from the state a
//! stream had at some version and only the events after it are read, decoded and applied.
//!
//! Sound because stored events are immutable and a stream's versions are dense: the state folded
//! from versions `1..=v` never changes once computed, so a cached state plus the events with
//! `version > v` is exactly the fold of a full load. The append still checks every expected
//! version, so a cache that is behind costs a re-load, never a wrong decision.
//!
//! Bounded by weight, not count: each entry is charged its state's encoded size, and the least
//! recently used entries go when the total passes the bound.

use std::sync::{Arc, Mutex};

use lru::LruCache;

use crate::domain::{State, StreamName};

/// Encoded state bytes the cache may hold before it evicts the least recently used streams.
pub const CACHE_STATE_BYTES_MAX: usize = 256 << 20;

/// One stream's state as of a version.
#[derive(Clone, Debug, PartialEq)]
pub struct Folded {
    pub version: u64,
    pub state: Arc<State>,
}

impl Folded {
    /// A stream of `stream`'s category before its first event.
    pub fn initial(stream: &StreamName) -> Self {
        Self {
            version: 0,
            state: Arc::new(State::initial(stream.category())),
        }
    }
}

/// What the cache keeps of a stream: its state, and the version of its latest snapshot known to
/// be stored (so a process writes a snapshot only when enough events have passed since).
#[derive(Clone, Debug)]
pub struct Cached {
    pub folded: Folded,
    pub stored: u64,
}

#[derive(Debug)]
struct Entry {
    cached: Cached,
    weight: usize,
}

#[derive(Debug)]
struct Inner {
    streams: LruCache<StreamName, Entry>,
    weight: usize,
}

/// A process-local, weight-bounded LRU of folded stream states. Cheap to share.
#[derive(Debug)]
pub struct StateCache {
    inner: Mutex<Inner>,
    max_weight: usize,
}

impl Default for StateCache {
    fn default() -> Self {
        Self::with_max_weight(CACHE_STATE_BYTES_MAX)
    }
}

impl StateCache {
    pub fn with_max_weight(max_weight: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                streams: LruCache::unbounded(),
                weight: 0,
            }),
            max_weight,
        }
    }

    /// The cached state of `stream`, if any (and marks it recently used).
    pub fn get(&self, stream: &StreamName) -> Option<Cached> {
        let mut inner = self.inner.lock().ok()?;
        inner.streams.get(stream).map(|e| e.cached.clone())
    }

    /// Records `stream`'s state at a later version than the cached one (an earlier or equal one
    /// is ignored: another command may have read further meanwhile), with `weight` its encoded
    /// size. A state heavier than the whole bound is not kept.
    pub fn put(&self, stream: &StreamName, cached: Cached, weight: usize) {
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let inner = &mut *inner;
        if let Some(known) = inner.streams.peek(stream) {
            if known.cached.folded.version >= cached.folded.version {
                return;
            }
        }
        if let Some(old) = inner.streams.pop(stream) {
            inner.weight -= old.weight;
        }
        if weight > self.max_weight {
            return;
        }
        while inner.weight + weight > self.max_weight {
            match inner.streams.pop_lru() {
                Some((_, evicted)) => inner.weight -= evicted.weight,
                None => break,
            }
        }
        inner.weight += weight;
        inner.streams.put(stream.clone(), Entry { cached, weight });
    }

    /// Notes that a snapshot of `stream` at `version` is stored.
    pub fn stored(&self, stream: &StreamName, version: u64) {
        if let Ok(mut inner) = self.inner.lock() {
            if let Some(entry) = inner.streams.peek_mut(stream) {
                entry.cached.stored = entry.cached.stored.max(version);
            }
        }
    }

    /// Forgets every stream (tests use it to act as a freshly started process).
    pub fn clear(&self) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.streams.clear();
            inner.weight = 0;
        }
    }

    /// Streams and encoded bytes held.
    pub fn size(&self) -> (usize, usize) {
        self.inner
            .lock()
            .map(|i| (i.streams.len(), i.weight))
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stream::of;

    fn at(version: u64) -> Cached {
        Cached {
            folded: Folded {
                version,
                state: Arc::new(State::Unfolded),
            },
            stored: 0,
        }
    }

    #[test]
    fn keeps_only_later_versions() {
        let cache = StateCache::default();
        let s = of::user(uuid::Uuid::nil());
        cache.put(&s, at(3), 10);
        cache.put(&s, at(2), 10);
        assert_eq!(cache.get(&s).map(|c| c.folded.version), Some(3));
        cache.put(&s, at(5), 12);
        assert_eq!(cache.get(&s).map(|c| c.folded.version), Some(5));
        assert_eq!(cache.size(), (1, 12));
    }

    #[test]
    fn evicts_the_least_recently_used_by_weight() {
        let cache = StateCache::with_max_weight(100);
        let [a, b, c] = [1u128, 2, 3].map(|n| of::user(uuid::Uuid::from_u128(n)));
        cache.put(&a, at(1), 40);
        cache.put(&b, at(1), 40);
        assert!(cache.get(&a).is_some(), "a is now the most recently used");
        cache.put(&c, at(1), 40);
        assert!(cache.get(&b).is_none(), "b was the least recently used");
        assert!(cache.get(&a).is_some() && cache.get(&c).is_some());
        assert_eq!(cache.size(), (2, 80));
        cache.put(&b, at(1), 101);
        assert!(cache.get(&b).is_none(), "heavier than the bound: not kept");
        assert_eq!(cache.size(), (2, 80));
    }
}
