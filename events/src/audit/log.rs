//! The audit reads of the log, in SQL: the head, bounded scans of the global order with filters,
//! a settlement's transactions, streams up to a position, the signing keys and the connection
//! creations (both found through a partial index, migration 0013), and the position of a time.

use sqlx::PgPool;
use uuid::Uuid;

use crate::codec::{decode_event, ChainHash, SequencedEvent};
use crate::domain::audit::KeyRegistry;
use crate::domain::event::Timestamp;
use crate::domain::{DomainEvent, StreamName};
use crate::store::{from_datetime, to_datetime};

use super::AuditError;

const COLUMNS: &str = "l.position, l.hash, e.event_id, e.category, e.stream_id, e.version, \
                       e.type_id, e.schema_version, e.payload, e.metadata, e.recorded_at";

fn rows(rows: &[sqlx::postgres::PgRow]) -> Result<Vec<SequencedEvent>, AuditError> {
    rows.iter()
        .map(|r| crate::store::sequenced_event_from_row(r).map_err(AuditError::from))
        .collect()
}

/// The log's head: position, stored hash and the time its event was recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub position: u64,
    pub hash: ChainHash,
    pub recorded_at: Timestamp,
}

pub async fn head(pool: &PgPool) -> Result<Option<Head>, AuditError> {
    let row: Option<(i64, Vec<u8>, chrono::DateTime<chrono::Utc>)> = sqlx::query_as(
        "SELECT l.position, l.hash, e.recorded_at FROM event_log l
         JOIN events e ON e.event_id = l.event_id ORDER BY l.position DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(position, hash, at)| Head {
        position: position as u64,
        hash: crate::store::hash32(&hash),
        recorded_at: from_datetime(at),
    }))
}

/// Narrows a scan of the global order: by event types and by one stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub type_ids: Vec<u32>,
    pub stream: Option<StreamName>,
}

/// Events with `after < position <= until` that pass `filter`, in order, at most `limit`.
pub async fn scan(
    pool: &PgPool,
    after: u64,
    until: u64,
    filter: &Filter,
    limit: u32,
) -> Result<Vec<SequencedEvent>, AuditError> {
    let types: Option<Vec<i32>> =
        (!filter.type_ids.is_empty()).then(|| filter.type_ids.iter().map(|t| *t as i32).collect());
    let sql = format!(
        "SELECT {COLUMNS} FROM event_log l JOIN events e ON e.event_id = l.event_id
         WHERE l.position > $1 AND l.position <= $2
           AND ($3::integer[] IS NULL OR e.type_id = ANY($3))
           AND ($4::text IS NULL OR (e.category = $4 AND e.stream_id = $5))
         ORDER BY l.position LIMIT $6"
    );
    let found = sqlx::query(&sql)
        .bind(after as i64)
        .bind(until.min(i64::MAX as u64) as i64)
        .bind(types)
        .bind(filter.stream.as_ref().map(|s| s.category()))
        .bind(filter.stream.as_ref().map(|s| s.id()))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    rows(&found)
}

/// Every sequenced event written by a transaction that wrote `settlement_id`'s stream, in
/// order: the settlement's own events and what the same commands did elsewhere (holds, custody
/// movements, cutoffs, queued and assigned closures).
pub async fn settlement_transactions(
    pool: &PgPool,
    settlement_id: Uuid,
) -> Result<Vec<SequencedEvent>, AuditError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM events e JOIN event_log l ON l.event_id = e.event_id
         WHERE e.txid IN (SELECT txid FROM events WHERE category = 'settlement' AND stream_id = $1)
         ORDER BY l.position"
    );
    let found = sqlx::query(&sql)
        .bind(settlement_id.to_string())
        .fetch_all(pool)
        .await?;
    rows(&found)
}

/// A settlement's timeline: the events of its transactions that name it, and — when a dispute
/// of it was closed with a carried closure — the events of the later staging that joined the
/// closure to the partner's next settlement and name it (`ClosuresJoined`). In log order.
pub async fn settlement_timeline(
    pool: &PgPool,
    settlement_id: Uuid,
) -> Result<Vec<SequencedEvent>, AuditError> {
    use crate::domain::audit::settlements_named;
    let own = of_settlement(settlement_id);
    let mut events: Vec<SequencedEvent> = Vec::new();
    let mut carried: Vec<(Uuid, Uuid)> = Vec::new();
    for event in settlement_transactions(pool, settlement_id).await? {
        match decode_event(&event.stored.event) {
            Ok(decoded) => {
                if let DomainEvent::ClosureQueued(q) = &decoded {
                    if q.closure.disputed_settlement_id == settlement_id {
                        carried.push((q.partner_id, q.closure.dispute_id));
                    }
                }
                if event.stored.stream == own
                    || settlements_named(&decoded).contains(&settlement_id)
                {
                    events.push(event);
                }
            }
            // An event that no longer decodes stays in view if it is the settlement's own.
            Err(_) if event.stored.stream == own => events.push(event),
            Err(_) => {}
        }
    }
    for (partner_id, dispute_id) in carried {
        for event in joined_closures(pool, partner_id, dispute_id).await? {
            let names = decode_event(&event.stored.event)
                .map(|e| settlements_named(&e).contains(&settlement_id))
                .unwrap_or(false);
            if names && !events.iter().any(|e| e.position == event.position) {
                events.push(event);
            }
        }
    }
    events.sort_by_key(|e| e.position);
    Ok(events)
}

fn of_settlement(settlement_id: Uuid) -> StreamName {
    crate::domain::stream::of::settlement(settlement_id)
}

/// The events of the staging that assigned `dispute_id`'s closure (a `ClosuresAssigned` on the
/// partner's stream), found from the partner's stream.
async fn joined_closures(
    pool: &PgPool,
    partner_id: Uuid,
    dispute_id: Uuid,
) -> Result<Vec<SequencedEvent>, AuditError> {
    // 28: ClosuresAssigned. A partner's stream holds a few events per settlement.
    let assigned: Vec<(i64, i16, Vec<u8>)> = sqlx::query_as(
        "SELECT txid, schema_version, payload FROM events
         WHERE category = 'partner' AND stream_id = $1 AND type_id = 28",
    )
    .bind(partner_id.to_string())
    .fetch_all(pool)
    .await?;
    let mut txids = Vec::new();
    for (txid, schema_version, payload) in assigned {
        let encoded = crate::codec::EncodedEvent {
            type_id: 28,
            schema_version: schema_version as u16,
            payload,
        };
        if let DomainEvent::ClosuresAssigned(a) = decode_event(&encoded)? {
            if a.dispute_ids.contains(&dispute_id) {
                txids.push(txid);
            }
        }
    }
    if txids.is_empty() {
        return Ok(Vec::new());
    }
    let found = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events e JOIN event_log l ON l.event_id = e.event_id
         WHERE e.txid = ANY($1) ORDER BY l.position"
    ))
    .bind(&txids)
    .fetch_all(pool)
    .await?;
    rows(&found)
}

/// The events of `streams` at positions up to `until`, in position order (the order the log
/// stood in, which is what "as it stood at position P" means).
pub async fn streams_until(
    pool: &PgPool,
    streams: &[StreamName],
    until: u64,
) -> Result<Vec<SequencedEvent>, AuditError> {
    let cats: Vec<&str> = streams.iter().map(StreamName::category).collect();
    let ids: Vec<&str> = streams.iter().map(StreamName::id).collect();
    let found = sqlx::query(&format!(
        // LATERAL: one index range scan per stream (see `EventStore::load_after`).
        "SELECT {COLUMNS} FROM unnest($1::text[], $2::text[]) AS u(category, id)
         CROSS JOIN LATERAL (
             SELECT * FROM events e WHERE e.category = u.category AND e.stream_id = u.id
         ) e
         JOIN event_log l ON l.event_id = e.event_id
         WHERE l.position <= $3 ORDER BY l.position"
    ))
    .bind(&cats)
    .bind(&ids)
    .bind(until.min(i64::MAX as u64) as i64)
    .fetch_all(pool)
    .await?;
    rows(&found)
}

/// The first `versions` events of each of `streams` (their creation events), sequenced or not.
pub async fn first_events(
    pool: &PgPool,
    streams: &[StreamName],
    versions: u64,
) -> Result<Vec<(StreamName, DomainEvent)>, AuditError> {
    let cats: Vec<&str> = streams.iter().map(StreamName::category).collect();
    let ids: Vec<&str> = streams.iter().map(StreamName::id).collect();
    let found = sqlx::query(
        "SELECT e.event_id, e.category, e.stream_id, e.version, e.type_id, e.schema_version,
                e.payload, e.metadata, e.recorded_at
         FROM unnest($1::text[], $2::text[]) AS u(category, id)
         CROSS JOIN LATERAL (
             SELECT * FROM events e
             WHERE e.category = u.category AND e.stream_id = u.id AND e.version <= $3
         ) e
         ORDER BY e.category, e.stream_id, e.version",
    )
    .bind(&cats)
    .bind(&ids)
    .bind(versions as i64)
    .fetch_all(pool)
    .await?;
    found
        .iter()
        .map(|row| {
            let stored = crate::store::stored_event_from_row(row)?;
            Ok((stored.stream, decode_event(&stored.event)?))
        })
        .collect()
}

/// Every sequenced event of the given types up to `until`, through the partial index of
/// migration 0013 (signing keys 3 and 4, connection creations 12).
async fn of_types(
    pool: &PgPool,
    type_ids: &[i32],
    until: u64,
) -> Result<Vec<SequencedEvent>, AuditError> {
    let found = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM events e JOIN event_log l ON l.event_id = e.event_id
         WHERE e.type_id = ANY($1) AND e.type_id IN (3, 4, 12) AND l.position <= $2
         ORDER BY l.position"
    ))
    .bind(type_ids)
    .bind(until.min(i64::MAX as u64) as i64)
    .fetch_all(pool)
    .await?;
    rows(&found)
}

/// Every signing key the log has registered, with the positions of registration and revocation.
pub async fn key_registry(pool: &PgPool) -> Result<KeyRegistry, AuditError> {
    let mut keys = KeyRegistry::default();
    for event in of_types(pool, &[3, 4], u64::MAX).await? {
        keys.apply(event.position, &decode_event(&event.stored.event)?);
    }
    Ok(keys)
}

/// Every connection creation sequenced before `before`, decoded.
pub async fn connection_creations(
    pool: &PgPool,
    before: u64,
) -> Result<Vec<(u64, DomainEvent)>, AuditError> {
    of_types(pool, &[12], before.saturating_sub(1))
        .await?
        .into_iter()
        .map(|e| Ok((e.position, decode_event(&e.stored.event)?)))
        .collect()
}

/// A connection an enterprise owns (as client) or serves (as partner), as created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionOf {
    pub connection_id: Uuid,
    pub name: String,
    pub client_id: Uuid,
    pub partner_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub created_at: Timestamp,
}

/// The connections created up to `until` that `enterprise_id` owns or serves, in creation order.
pub async fn connections_of(
    pool: &PgPool,
    enterprise_id: Uuid,
    until: u64,
) -> Result<Vec<ConnectionOf>, AuditError> {
    let mut found = Vec::new();
    for event in of_types(pool, &[12], until).await? {
        if let DomainEvent::ConnectionCreated(c) = decode_event(&event.stored.event)? {
            if c.client_enterprise_id == enterprise_id || c.partner_enterprise_id == enterprise_id {
                found.push(ConnectionOf {
                    connection_id: c.connection_id,
                    name: c.name,
                    client_id: c.client_id,
                    partner_id: c.partner_id,
                    client_enterprise_id: c.client_enterprise_id,
                    partner_enterprise_id: c.partner_enterprise_id,
                    created_at: c.at,
                });
            }
        }
    }
    Ok(found)
}

/// The last position of the longest prefix of the log whose events were all recorded at or
/// before `at` (0 when even the first was later). An event's recorded time precedes its commit,
/// so nothing in this prefix can have been committed after `at`.
pub async fn position_at_time(pool: &PgPool, at: Timestamp) -> Result<u64, AuditError> {
    let position: i64 = sqlx::query_scalar(
        "SELECT coalesce(
             (SELECT min(l.position) - 1 FROM events e JOIN event_log l ON l.event_id = e.event_id
              WHERE e.recorded_at > $1),
             (SELECT coalesce(max(position), 0) FROM event_log))",
    )
    .bind(to_datetime(at))
    .fetch_one(pool)
    .await?;
    Ok(position.max(0) as u64)
}

/// Rows per page of a bulk pass over the log.
pub const BULK_PAGE_ROWS: u32 = 10_000;

/// Hands every event with `from <= position <= to` to `each_page`, a page at a time, in order;
/// the next page is fetched while the current one is handled, so a pass runs at the speed of the
/// slower of the two. `each_page` answers whether to go on.
pub async fn for_each_page(
    pool: &PgPool,
    from: u64,
    to: u64,
    mut each_page: impl FnMut(Vec<SequencedEvent>) -> Result<bool, AuditError>,
) -> Result<(), AuditError> {
    let fetch = |after: u64| {
        let pool = pool.clone();
        tokio::spawn(
            async move { scan(&pool, after, to, &Filter::default(), BULK_PAGE_ROWS).await },
        )
    };
    let mut next = Some(fetch(from.max(1) - 1));
    while let Some(fetching) = next.take() {
        let page = fetching
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("page fetch task failed: {e}")))??;
        let Some(last) = page.last().map(|e| e.position) else {
            break;
        };
        if page.len() == BULK_PAGE_ROWS as usize && last < to {
            next = Some(fetch(last));
        }
        if !each_page(page)? {
            if let Some(pending) = next.take() {
                pending.abort();
            }
            break;
        }
    }
    Ok(())
}
