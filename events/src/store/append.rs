//! Appending and reading events. An append is one call of the `append_events` SQL function (one
//! round trip, one commit): every touched stream's head is checked and advanced in stream order,
//! all events go in with one multi-row insert, then the command's outcome and nonce are recorded.

use std::collections::BTreeMap;

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::{from_datetime, to_datetime};
use crate::codec::{EncodedEvent, Metadata, SequencedEvent, StoredEvent};
use crate::domain::event::Timestamp;
use crate::domain::{event_id, CommandId, StreamName};

/// Handle on the event store. Cheap to clone.
#[derive(Clone, Debug)]
pub struct EventStore {
    pool: PgPool,
}

/// One event to append, to `stream`.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub stream: StreamName,
    pub event: EncodedEvent,
}

/// A nonce the command consumes (SPEC §4): unique per `scope` (the enterprise).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonceClaim {
    pub scope: String,
    pub nonce: String,
    pub payload_hash: [u8; 32],
}

/// Everything one command writes, atomically.
#[derive(Clone, Debug)]
pub struct AppendRequest {
    pub command_id: CommandId,
    /// Hash of the request that carried the command; a retry with another hash is a conflict.
    pub request_hash: [u8; 32],
    /// Every stream the command decided on, with the version it saw. Streams without new
    /// events are still checked, so a decision that read them cannot be based on stale state.
    pub expected: Vec<(StreamName, u64)>,
    pub events: Vec<NewEvent>,
    pub metadata: Metadata,
    /// What the command answered; returned again on an idempotent retry.
    pub outcome: Vec<u8>,
    pub nonce: Option<NonceClaim>,
    pub recorded_at: Timestamp,
}

/// A committed append.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Appended {
    /// The Postgres transaction id of the append; the sequencer orders by it.
    pub txid: i64,
    pub event_ids: Vec<Uuid>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// Some stream's head was not at the expected version: re-load and re-decide.
    #[error("a stream changed since it was loaded")]
    Conflict,
    /// The command id was recorded by a concurrent append: look up its outcome.
    #[error("the command was recorded concurrently")]
    DuplicateCommand,
    /// The nonce was consumed by a concurrent append: look it up.
    #[error("the nonce was used concurrently")]
    NonceTaken,
    /// The request names an event for a stream it does not list in `expected`.
    #[error("event for stream {0} which the command did not load")]
    UndeclaredStream(StreamName),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// A recorded command outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOutcome {
    pub request_hash: [u8; 32],
    pub outcome: Vec<u8>,
}

/// What the registry knows of a nonce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NonceState {
    Fresh,
    /// Seen before with the same payload: an idempotent retry of `command_id`.
    Retry {
        command_id: CommandId,
    },
    /// Seen before with a different payload.
    Reused,
}

fn hash32(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if bytes.len() == 32 {
        out.copy_from_slice(bytes);
    }
    out
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends all of a command's events atomically, or nothing.
    pub async fn append(&self, request: &AppendRequest) -> Result<Appended, AppendError> {
        let mut conn = self.pool.acquire().await?;
        append_on(&mut conn, request).await
    }
}

/// Appends on `conn`: in autocommit mode the append is its own transaction; inside a transaction
/// the caller's COMMIT makes it durable (tests use this to delay commits on purpose).
pub async fn append_on(
    conn: &mut PgConnection,
    request: &AppendRequest,
) -> Result<Appended, AppendError> {
    {
        let mut heads: BTreeMap<&StreamName, (u64, u64)> = request
            .expected
            .iter()
            .map(|(s, v)| (s, (*v, *v)))
            .collect();
        let n = request.events.len();
        let (mut ids, mut cats, mut sids, mut versions, mut types, mut schemas, mut payloads) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (index, new) in request.events.iter().enumerate() {
            let head = heads
                .get_mut(&new.stream)
                .ok_or_else(|| AppendError::UndeclaredStream(new.stream.clone()))?;
            head.1 += 1;
            ids.push(event_id(request.command_id, index as u32));
            cats.push(new.stream.category());
            sids.push(new.stream.id());
            versions.push(head.1 as i64);
            types.push(new.event.type_id as i32);
            schemas.push(new.event.schema_version as i16);
            payloads.push(new.event.payload.as_slice());
        }
        let stream_cats: Vec<&str> = heads.keys().map(|s| s.category()).collect();
        let stream_ids: Vec<&str> = heads.keys().map(|s| s.id()).collect();
        let expected: Vec<i64> = heads.values().map(|v| v.0 as i64).collect();
        let new_versions: Vec<i64> = heads.values().map(|v| v.1 as i64).collect();
        let nonce = request.nonce.as_ref();

        let result = sqlx::query_scalar::<_, i64>(
            "SELECT append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)",
        )
        .bind(&stream_cats)
        .bind(&stream_ids)
        .bind(&expected)
        .bind(&new_versions)
        .bind(&ids)
        .bind(&cats)
        .bind(&sids)
        .bind(&versions)
        .bind(&types)
        .bind(&schemas)
        .bind(&payloads)
        .bind(request.metadata.encode())
        .bind(to_datetime(request.recorded_at))
        .bind(request.command_id.as_uuid())
        .bind(request.request_hash.as_slice())
        .bind(request.outcome.as_slice())
        .bind(nonce.map(|n| n.scope.as_str()))
        .bind(nonce.map(|n| n.nonce.as_str()))
        .bind(nonce.map(|n| n.payload_hash.as_slice()))
        .fetch_one(&mut *conn)
        .await;
        match result {
            Ok(txid) => Ok(Appended {
                txid,
                event_ids: ids,
            }),
            Err(sqlx::Error::Database(e)) => match e.code().as_deref() {
                Some("SE409") => Err(AppendError::Conflict),
                Some("SE410") => Err(AppendError::DuplicateCommand),
                Some("SE411") => Err(AppendError::NonceTaken),
                // A concurrent first append of the same new stream collides on the key.
                Some("23505") => Err(AppendError::Conflict),
                _ => Err(AppendError::Database(sqlx::Error::Database(e))),
            },
            Err(e) => Err(AppendError::Database(e)),
        }
    }
}

impl EventStore {
    /// Loads every event of the given streams, each stream in version order.
    pub async fn load(&self, streams: &[StreamName]) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let cats: Vec<&str> = streams.iter().map(|s| s.category()).collect();
        let ids: Vec<&str> = streams.iter().map(|s| s.id()).collect();
        let rows = sqlx::query(
            "SELECT e.event_id, e.category, e.stream_id, e.version, e.type_id, e.schema_version,
                    e.payload, e.metadata, e.recorded_at
             FROM events e JOIN unnest($1::text[], $2::text[]) AS u(category, id)
               ON e.category = u.category AND e.stream_id = u.id
             ORDER BY e.category, e.stream_id, e.version",
        )
        .bind(&cats)
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event_from_row).collect()
    }

    pub async fn command_outcome(
        &self,
        command_id: CommandId,
    ) -> Result<Option<StoredOutcome>, sqlx::Error> {
        let row =
            sqlx::query("SELECT request_hash, outcome FROM command_outcomes WHERE command_id = $1")
                .bind(command_id.as_uuid())
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(|r| StoredOutcome {
            request_hash: hash32(r.get("request_hash")),
            outcome: r.get("outcome"),
        }))
    }

    pub async fn nonce_state(
        &self,
        scope: &str,
        nonce: &str,
        payload_hash: &[u8; 32],
    ) -> Result<NonceState, sqlx::Error> {
        let row = sqlx::query(
            "SELECT payload_hash, command_id FROM nonces WHERE scope = $1 AND nonce = $2",
        )
        .bind(scope)
        .bind(nonce)
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => NonceState::Fresh,
            Some(r) if hash32(r.get("payload_hash")) == *payload_hash => NonceState::Retry {
                command_id: CommandId::from_uuid(r.get("command_id")),
            },
            Some(_) => NonceState::Reused,
        })
    }

    /// The last sequenced position (0 before the first).
    pub async fn log_head(&self) -> Result<u64, sqlx::Error> {
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM event_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(head as u64)
    }

    /// Sequenced events with `after < position <= until`, in order, at most `limit`.
    pub async fn read_log(
        &self,
        after: u64,
        until: u64,
        limit: u32,
    ) -> Result<Vec<SequencedEvent>, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT l.position, l.hash, e.event_id, e.category, e.stream_id, e.version, e.type_id,
                    e.schema_version, e.payload, e.metadata, e.recorded_at
             FROM event_log l JOIN events e ON e.event_id = l.event_id
             WHERE l.position > $1 AND l.position <= $2
             ORDER BY l.position LIMIT $3",
        )
        .bind(after as i64)
        .bind(until as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(sequenced_event_from_row).collect()
    }
}

pub(crate) fn stored_event_from_row(row: &PgRow) -> Result<StoredEvent, sqlx::Error> {
    let category: String = row.try_get("category")?;
    let id: String = row.try_get("stream_id")?;
    let stream = StreamName::parse(&category, &id).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(StoredEvent {
        event_id: row.try_get("event_id")?,
        stream,
        version: row.try_get::<i64, _>("version")? as u64,
        event: EncodedEvent {
            type_id: row.try_get::<i32, _>("type_id")? as u32,
            schema_version: row.try_get::<i16, _>("schema_version")? as u16,
            payload: row.try_get("payload")?,
        },
        metadata: row.try_get("metadata")?,
        recorded_at: from_datetime(row.try_get("recorded_at")?),
    })
}

pub(crate) fn sequenced_event_from_row(row: &PgRow) -> Result<SequencedEvent, sqlx::Error> {
    Ok(SequencedEvent {
        position: row.try_get::<i64, _>("position")? as u64,
        hash: hash32(row.try_get("hash")?),
        stored: stored_event_from_row(row)?,
    })
}
