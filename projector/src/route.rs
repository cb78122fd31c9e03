//! Which partition an event belongs to (docs/decisions/0009-partitioned-projectors.md), and the
//! immutable facts a partition needs about rows another partition owns.
//!
//! The key: every event of a settlement's stream and of a partner's stream belongs to its
//! partner (`partner.<partner id>`); every other event belongs to its own stream. So each
//! read-model row is changed by the events of one key only — a settlement, its transfers
//! (closures' transfers too, which move from one of the partner's settlements to the next), its
//! disputes and closures by the partner's; a connection, its allocations and its network
//! balances by the connection's stream; a custody balance and deposits by the custody stream —
//! and one partition applies them, in log order.
//!
//! What a partition reads of rows it does not own is immutable once written: a connection's
//! owner, partner and network account (from its `ConnectionCreated`), a settlement's partner
//! (from its `SettlementStaged`). The `Directory` keeps them, learnt from the events passing by
//! or read from the event store — never from another partition's tables, which may be behind.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use anyhow::{bail, Context};
use events::codec::{decode_event, EncodedEvent};
use events::domain::{DomainEvent, StreamName};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

/// The partition key of an event: `partner.<id>` for the settlement world, else its stream.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKey {
    Partner(Uuid),
    Stream(StreamName),
}

impl RouteKey {
    /// The key as text (also a stream name, so parking can hold it like a stream).
    pub fn text(&self) -> String {
        match self {
            Self::Partner(id) => format!("partner.{id}"),
            Self::Stream(stream) => stream.to_string(),
        }
    }

    pub fn stream(&self) -> StreamName {
        match self {
            Self::Partner(id) => events::domain::stream::of::partner(*id),
            Self::Stream(stream) => stream.clone(),
        }
    }
}

/// Where an event goes, before the settlement's partner is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    Known(RouteKey),
    /// An event of settlement `settlement_id`'s stream: the key is the settlement's partner,
    /// which the directory knows (from its staging).
    SettlementOf(Uuid),
}

/// Routes an event by its stream alone (no payload to decode). Pure.
pub fn route(stream: &StreamName) -> anyhow::Result<Route> {
    let id = || -> anyhow::Result<Uuid> {
        Uuid::parse_str(stream.id())
            .with_context(|| format!("stream {stream} is not named by a UUID"))
    };
    Ok(match stream.category() {
        "settlement" => Route::SettlementOf(id()?),
        "partner" => Route::Known(RouteKey::Partner(id()?)),
        _ => Route::Known(RouteKey::Stream(stream.clone())),
    })
}

/// The partition of `key` among `partitions`: the first eight bytes of SHA-256 of the key's
/// text, modulo P — stable across processes, platforms and versions. Pure.
pub fn partition_of(key: &RouteKey, partitions: u32) -> u32 {
    match key {
        RouteKey::Partner(id) => partner_partition(*id, partitions),
        RouteKey::Stream(stream) => stream_partition(stream, partitions),
    }
}

/// `partition_of` a stream's own key, without building the key's text.
pub fn stream_partition(stream: &StreamName, partitions: u32) -> u32 {
    let mut hash = Sha256::new();
    hash.update(stream.category().as_bytes());
    hash.update(b".");
    hash.update(stream.id().as_bytes());
    modulo(&hash.finalize(), partitions)
}

/// `partition_of` a partner's key, without building the key's text.
pub fn partner_partition(partner_id: Uuid, partitions: u32) -> u32 {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let mut hash = Sha256::new();
    hash.update(b"partner.");
    hash.update(partner_id.hyphenated().encode_lower(&mut text).as_bytes());
    modulo(&hash.finalize(), partitions)
}

fn modulo(digest: &[u8], partitions: u32) -> u32 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(head) % u64::from(partitions.max(1))) as u32
}

/// A connection as other partitions need it: fixed when it is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionFacts {
    pub client_enterprise_id: Uuid,
    pub partner_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub network_account_id: Uuid,
}

/// A settlement's partner: fixed when it is staged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettlementFacts {
    pub partner_id: Uuid,
    pub partner_enterprise_id: Uuid,
}

/// Entries the directory keeps per kind before it forgets them all (each is re-read from the
/// store on its next use): bounds a long-running projector's memory.
const DIRECTORY_ENTRIES_MAX: usize = 1_000_000;

/// Immutable facts about connections and settlements, shared by every partition of a process.
#[derive(Debug, Default)]
pub struct Directory {
    connections: Mutex<HashMap<Uuid, ConnectionFacts>>,
    settlements: Mutex<HashMap<Uuid, SettlementFacts>>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bounded_insert<K: std::hash::Hash + Eq, V>(map: &mut HashMap<K, V>, key: K, value: V) {
    if map.len() >= DIRECTORY_ENTRIES_MAX {
        map.clear();
    }
    map.insert(key, value);
}

impl Directory {
    /// Learns from an event passing by (every partition sees every event).
    pub fn observe(&self, event: &DomainEvent) {
        match event {
            DomainEvent::ConnectionCreated(e) => bounded_insert(
                &mut locked(&self.connections),
                e.connection_id,
                ConnectionFacts {
                    client_enterprise_id: e.client_enterprise_id,
                    partner_id: e.partner_id,
                    partner_enterprise_id: e.partner_enterprise_id,
                    network_account_id: e.network_account_id,
                },
            ),
            DomainEvent::SettlementStaged(e) => bounded_insert(
                &mut locked(&self.settlements),
                e.settlement_id,
                SettlementFacts {
                    partner_id: e.partner_id,
                    partner_enterprise_id: e.partner_enterprise_id,
                },
            ),
            _ => {}
        }
    }

    pub fn connection(&self, id: Uuid) -> Option<ConnectionFacts> {
        locked(&self.connections).get(&id).copied()
    }

    pub fn settlement(&self, id: Uuid) -> Option<SettlementFacts> {
        locked(&self.settlements).get(&id).copied()
    }

    /// Makes sure the facts of `connections` and `settlements` are known, reading those it has
    /// not seen from the event store (the first event of each stream). An id the store does not
    /// know is an error: the event naming it cannot be applied.
    pub async fn resolve(
        &self,
        conn: &mut PgConnection,
        connections: impl IntoIterator<Item = Uuid>,
        settlements: impl IntoIterator<Item = Uuid>,
    ) -> anyhow::Result<()> {
        let missing_connections: BTreeSet<Uuid> = {
            let known = locked(&self.connections);
            connections
                .into_iter()
                .filter(|id| !known.contains_key(id))
                .collect()
        };
        let missing_settlements: BTreeSet<Uuid> = {
            let known = locked(&self.settlements);
            settlements
                .into_iter()
                .filter(|id| !known.contains_key(id))
                .collect()
        };
        for (category, ids) in [
            ("connection", &missing_connections),
            ("settlement", &missing_settlements),
        ] {
            if ids.is_empty() {
                continue;
            }
            let names: Vec<String> = ids.iter().map(Uuid::to_string).collect();
            let rows: Vec<(String, i32, i16, Vec<u8>)> = sqlx::query_as(
                "SELECT stream_id, type_id, schema_version, payload FROM events
                 WHERE category = $1 AND stream_id = ANY($2) AND version = 1",
            )
            .bind(category)
            .bind(&names)
            .fetch_all(&mut *conn)
            .await?;
            for (stream_id, type_id, schema_version, payload) in rows {
                let event = decode_event(&EncodedEvent {
                    type_id: u32::try_from(type_id)?,
                    schema_version: u16::try_from(schema_version)?,
                    payload,
                })
                .with_context(|| format!("first event of {category}.{stream_id}"))?;
                self.observe(&event);
            }
        }
        if let Some(id) = missing_connections
            .iter()
            .find(|id| self.connection(**id).is_none())
        {
            bail!("connection {id} is not in the event store");
        }
        if let Some(id) = missing_settlements
            .iter()
            .find(|id| self.settlement(**id).is_none())
        {
            bail!("settlement {id} is not in the event store");
        }
        Ok(())
    }

    /// The key of `route`, asking the directory for a settlement's partner (resolved before).
    pub fn key(&self, route: &Route) -> anyhow::Result<RouteKey> {
        match route {
            Route::Known(key) => Ok(key.clone()),
            Route::SettlementOf(id) => self
                .settlement(*id)
                .map(|s| RouteKey::Partner(s.partner_id))
                .with_context(|| format!("settlement {id} not resolved")),
        }
    }
}

/// The type id of the event named `name` in the vocabulary.
pub fn type_id_of(name: &str) -> Option<u32> {
    DomainEvent::TYPES
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.id)
}

/// One event of a batch, placed, and decoded if its partition is the caller's (or its type is
/// one the caller asked for).
#[derive(Clone, Debug)]
pub struct Routed {
    pub position: u64,
    pub event_id: Uuid,
    pub type_id: u32,
    pub stream: StreamName,
    pub event: Option<DomainEvent>,
    pub key: RouteKey,
    pub partition: u32,
}

/// What `route_batch` returns: the events of partition `mine` and those of `types` anywhere,
/// decoded; every other event too (undecoded) when `keys` asks where each event goes.
#[derive(Clone, Copy, Debug)]
pub struct Decode<'a> {
    pub mine: Option<u32>,
    pub types: &'a [u32],
    pub keys: bool,
}

impl Decode<'_> {
    /// Decode nothing: only where each event goes.
    pub const NOTHING: Decode<'static> = Decode {
        mine: None,
        types: &[],
        keys: true,
    };

    /// The events of partition `partition`, decoded.
    pub fn partition(partition: u32) -> Decode<'static> {
        Decode {
            mine: Some(partition),
            types: &[],
            keys: false,
        }
    }
}

/// Routes every event of a batch among `partitions` by its stream; a settlement's events by
/// its partner, learnt from its staging as it passes (decoding only that) or from the store.
/// Decodes what `decode` asks for, so that each partition decodes only its own share.
pub async fn route_batch(
    conn: &mut PgConnection,
    directory: &Directory,
    events: &[events::codec::SequencedEvent],
    partitions: u32,
    decode: Decode<'_>,
) -> anyhow::Result<Vec<Routed>> {
    let staged = type_id_of("SettlementStaged");
    let mut routes = Vec::with_capacity(events.len());
    let mut unknown = BTreeSet::new();
    for sequenced in events {
        let route = route(&sequenced.stored.stream)?;
        if let Route::SettlementOf(id) = route {
            if directory.settlement(id).is_none() {
                if Some(sequenced.stored.event.type_id) == staged {
                    let event = decode_event(&sequenced.stored.event)
                        .with_context(|| format!("position {}", sequenced.position))?;
                    directory.observe(&event);
                } else {
                    unknown.insert(id);
                }
            }
        }
        routes.push(route);
    }
    if !unknown.is_empty() {
        directory.resolve(conn, [], unknown).await?;
    }
    let mut routed = Vec::new();
    for (sequenced, route) in events.iter().zip(routes) {
        let partition = match &route {
            Route::Known(RouteKey::Stream(stream)) => stream_partition(stream, partitions),
            Route::Known(RouteKey::Partner(id)) => partner_partition(*id, partitions),
            Route::SettlementOf(id) => match directory.settlement(*id) {
                Some(facts) => partner_partition(facts.partner_id, partitions),
                None => bail!("settlement {id} not resolved"),
            },
        };
        let type_id = sequenced.stored.event.type_id;
        let wanted = decode.mine == Some(partition) || decode.types.contains(&type_id);
        // Another partition's event costs nothing more than its partition number.
        if !wanted && !decode.keys {
            continue;
        }
        let event = if wanted {
            Some(
                decode_event(&sequenced.stored.event)
                    .with_context(|| format!("position {}", sequenced.position))?,
            )
        } else {
            None
        };
        routed.push(Routed {
            position: sequenced.position,
            event_id: sequenced.stored.event_id,
            type_id,
            stream: sequenced.stored.stream.clone(),
            event,
            key: directory.key(&route)?,
            partition,
        });
    }
    Ok(routed)
}

/// Routes events decoded beforehand (a rebuild decodes while it reads), every one kept decoded.
pub async fn route_decoded(
    conn: &mut PgConnection,
    directory: &Directory,
    decoded: Vec<(events::codec::SequencedEvent, DomainEvent)>,
    partitions: u32,
) -> anyhow::Result<Vec<Routed>> {
    let mut routes = Vec::with_capacity(decoded.len());
    let mut unknown = BTreeSet::new();
    for (sequenced, event) in &decoded {
        directory.observe(event);
        let route = route(&sequenced.stored.stream)?;
        if let Route::SettlementOf(id) = route {
            if directory.settlement(id).is_none() {
                unknown.insert(id);
            }
        }
        routes.push(route);
    }
    if !unknown.is_empty() {
        directory.resolve(conn, [], unknown).await?;
    }
    decoded
        .into_iter()
        .zip(routes)
        .map(|((sequenced, event), route)| {
            let key = directory.key(&route)?;
            Ok(Routed {
                position: sequenced.position,
                event_id: sequenced.stored.event_id,
                type_id: sequenced.stored.event.type_id,
                partition: partition_of(&key, partitions),
                stream: sequenced.stored.stream,
                event: Some(event),
                key,
            })
        })
        .collect()
}

/// The streams whose later events must wait behind a parked `routed`: its own, and its key's
/// (a settlement's events wait behind an earlier parked event of any of its partner's
/// settlements, whose rows they may change — a closure's transfers, its disputes).
pub fn streams_touched(routed: &Routed) -> Vec<StreamName> {
    let key = routed.key.stream();
    if key == routed.stream {
        vec![key]
    } else {
        vec![routed.stream.clone(), key]
    }
}

/// The streams each event of a batch touches, by position, for a partitioned projection's
/// parking (`Projection::prepare` fills it, `Projection::streams_touched` reads it).
#[derive(Debug, Default)]
pub struct Touched(HashMap<u64, Vec<StreamName>>);

impl Touched {
    /// Routes `events` one by one (without decoding what routing does not need), so that an
    /// event that cannot be routed parks its own stream only.
    pub async fn prepare(
        &mut self,
        conn: &mut PgConnection,
        directory: &Directory,
        events: &[events::codec::SequencedEvent],
        partitions: u32,
    ) {
        self.0.clear();
        for event in events {
            let one = std::slice::from_ref(event);
            if let Ok(routed) =
                route_batch(&mut *conn, directory, one, partitions, Decode::NOTHING).await
            {
                if let Some(r) = routed.first() {
                    self.0.insert(r.position, streams_touched(r));
                }
            }
        }
    }

    /// What `prepare` found for `event`, or its own stream.
    pub fn of(&self, event: &events::codec::SequencedEvent) -> Vec<StreamName> {
        self.0
            .get(&event.position)
            .cloned()
            .unwrap_or_else(|| vec![event.stored.stream.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use events::domain::stream::of;

    #[test]
    fn the_settlement_world_goes_by_partner_and_the_rest_by_stream() {
        let (partner, settlement) = (Uuid::from_u128(7), Uuid::from_u128(9));
        assert_eq!(
            route(&of::settlement(settlement)).unwrap(),
            Route::SettlementOf(settlement)
        );
        assert_eq!(
            route(&of::partner(partner)).unwrap(),
            Route::Known(RouteKey::Partner(partner))
        );
        let custody = of::custody(Uuid::from_u128(3));
        assert_eq!(
            route(&custody).unwrap(),
            Route::Known(RouteKey::Stream(custody.clone()))
        );
        assert_eq!(
            RouteKey::Partner(partner).text(),
            of::partner(partner).to_string()
        );
        let bad = StreamName::parse("settlement", "not-a-uuid").unwrap();
        assert!(route(&bad).is_err());
    }

    #[test]
    fn partitions_are_stable_and_spread() {
        let keys: Vec<RouteKey> = (0..4_000u128)
            .map(|i| RouteKey::Stream(of::connection(Uuid::from_u128(i))))
            .collect();
        let mut counts = [0usize; 8];
        for key in &keys {
            let p = partition_of(key, 8);
            assert_eq!(p, partition_of(key, 8), "deterministic");
            counts[p as usize] += 1;
        }
        assert!(counts.iter().all(|c| (350..650).contains(c)), "{counts:?}");
        assert!(keys.iter().all(|k| partition_of(k, 1) == 0));
        let partner = Uuid::from_u128(0xabc);
        assert_eq!(
            partition_of(&RouteKey::Partner(partner), 7),
            {
                let d = Sha256::digest(RouteKey::Partner(partner).text().as_bytes());
                (u64::from_be_bytes(d[..8].try_into().unwrap()) % 7) as u32
            },
            "the key's text is what is hashed"
        );
        // Pinned: a change of the hash would move every row to another partition.
        assert_eq!(partition_of(&RouteKey::Partner(Uuid::nil()), 1_000), {
            let d = Sha256::digest(format!("partner.{}", Uuid::nil()).as_bytes());
            (u64::from_be_bytes(d[..8].try_into().unwrap()) % 1_000) as u32
        });
    }
}
