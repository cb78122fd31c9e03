//! Which enterprises a stream belongs to, for scoping an auditor to its enterprises: found from
//! the stream's first events (what created it names its owners), never from a read model.
//! Those events never change, so answers are cached for the life of the process.
//!
//! - `enterprise/e`, `custody/e`: `e`.
//! - `user/u`, `partner/p`, `client/c`: the enterprises its creation event names.
//! - `connection/c`: its client's and its partner's enterprises.
//! - `settlement/s`: its partner's enterprise and the client enterprises of every connection its
//!   staging names (its instructions and the closures that joined it).
//! - anything else: none (only the operator sees it).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::audit::{connections_named, enterprises_named};
use crate::domain::stream::of;
use crate::domain::StreamName;

use super::{log, AuditError};

/// Streams remembered before the cache starts afresh (a bound on memory, not on correctness).
const SCOPE_CACHE_STREAMS_MAX: usize = 200_000;

/// The owners of one stream.
pub type Owners = Arc<[Uuid]>;

#[derive(Debug, Default)]
pub struct ScopeResolver {
    cache: Mutex<HashMap<StreamName, Owners>>,
}

impl ScopeResolver {
    fn cached(&self, stream: &StreamName) -> Option<Owners> {
        self.cache.lock().ok()?.get(stream).cloned()
    }

    fn remember(&self, found: &HashMap<StreamName, Owners>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() + found.len() > SCOPE_CACHE_STREAMS_MAX {
                cache.clear();
            }
            // A stream with no owners yet may simply not exist yet: ask again next time.
            cache.extend(
                found
                    .iter()
                    .filter(|(_, o)| !o.is_empty())
                    .map(|(s, o)| (s.clone(), o.clone())),
            );
        }
    }

    /// The owners of each of `streams`.
    pub async fn owners(
        &self,
        pool: &PgPool,
        streams: &[StreamName],
    ) -> Result<HashMap<StreamName, Owners>, AuditError> {
        let mut found: HashMap<StreamName, Owners> = HashMap::new();
        let mut unknown: Vec<StreamName> = Vec::new();
        for stream in streams.iter().collect::<BTreeSet<_>>() {
            if let Some(owners) = self.cached(stream) {
                found.insert(stream.clone(), owners);
                continue;
            }
            match stream.category() {
                "enterprise" | "custody" => {
                    let owners: Owners = Uuid::try_parse(stream.id()).ok().into_iter().collect();
                    found.insert(stream.clone(), owners);
                }
                "user" | "partner" | "client" | "connection" | "settlement" => {
                    unknown.push(stream.clone())
                }
                _ => {
                    found.insert(stream.clone(), Arc::from([]));
                }
            }
        }
        if !unknown.is_empty() {
            // A settlement's staging is its first events (staged, then closures joined).
            let first = log::first_events(pool, &unknown, 2).await?;
            let mut named: HashMap<StreamName, (BTreeSet<Uuid>, BTreeSet<Uuid>)> = unknown
                .iter()
                .map(|s| (s.clone(), Default::default()))
                .collect();
            for (stream, event) in &first {
                let entry = named.entry(stream.clone()).or_default();
                entry.0.extend(enterprises_named(event));
                entry.1.extend(connections_named(event));
            }
            let connections: Vec<StreamName> = named
                .values()
                .flat_map(|(_, c)| c.iter().map(|id| of::connection(*id)))
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let connection_owners = if connections.is_empty() {
                HashMap::new()
            } else {
                Box::pin(self.owners(pool, &connections)).await?
            };
            for (stream, (mut enterprises, connections)) in named {
                for c in connections {
                    if let Some(owners) = connection_owners.get(&of::connection(c)) {
                        enterprises.extend(owners.iter().copied());
                    }
                }
                found.insert(stream, enterprises.into_iter().collect());
            }
        }
        self.remember(&found);
        Ok(found)
    }
}
