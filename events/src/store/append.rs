//! Appending and reading events. An append is one SQL statement (one round trip, one commit):
//! every touched stream's head is checked and advanced in stream order, all events go in with one
//! multi-row insert, then the command's outcome and nonce are recorded.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::{oneshot, Semaphore};

use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use uuid::Uuid;

use super::cache::StateCache;
use super::{from_datetime, to_datetime};
use crate::codec::{EncodedEvent, Metadata, SequencedEvent, StoredEvent};
use crate::domain::event::Timestamp;
use crate::domain::{event_id, CommandId, StreamName};

/// The append, as one statement: one round trip, one commit in autocommit mode. It takes one
/// command or a group of commands on disjoint streams (`Grouping`): everything below is per
/// stream, per event or per command, so a group is the same checks as its members one by one.
/// 1. `locked`: every declared stream's head row is locked in (category, id) order — so
///    concurrent appends cannot deadlock — `FOR UPDATE` (as the upsert takes) where the command appends (or
///    expects a stream not yet made), `FOR SHARE` where it only read what it decided on.
/// 2. `heads`: the heads of the streams the command appends to advance, each checked against its
///    expected version; the heads it only read are not written (ADR 0013): their share lock holds
///    back any writer of them until this commits, and their version is checked in `verdict`.
/// 3. `verdict`: a written stream that did not advance, one created although expected at a
///    version, or a read one not at its expected version, raises SE409 and aborts the statement.
/// 4. One multi-row insert of the events, stamped with this transaction's id and their order.
/// 5. Each command's outcome and nonce: a concurrent twin violates their primary keys.
///
/// The statement is the body of `append_events` (schemas/migrations/0016_append_function.sql):
/// as a function it is planned once per session with a generic plan, where as a prepared
/// statement Postgres planned it afresh on every call.
const APPEND_SQL: &str = "SELECT append_events($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12,
    $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)";

/// Handle on the event store. Cheap to clone; clones share the state cache and the grouping of
/// concurrent appends.
#[derive(Clone, Debug)]
pub struct EventStore {
    pool: PgPool,
    cache: Arc<StateCache>,
    grouping: Arc<Grouping>,
}

/// One event to append, to `stream`.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub stream: StreamName,
    pub event: EncodedEvent,
}

/// A nonce the command consumes (docs/api/signatures.md): unique per `scope` (the enterprise).
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
    /// events are still checked (and share-locked until the commit, not written: ADR 0013), so a
    /// decision that read them cannot be based on stale state.
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
    /// A caller's transaction already holds an append: one append per transaction (the
    /// sequencer orders events by transaction and position within it).
    #[error("one append per transaction")]
    SecondAppendInTransaction,
    /// The request names an event for a stream it does not list in `expected`.
    #[error("event for stream {0} which the command did not load")]
    UndeclaredStream(StreamName),
    /// An encoded event over `MAX_EVENT_BYTES` could never be carried by the bus: refused
    /// before anything is written, so the relay never meets an event it cannot publish.
    #[error("an event of stream {stream} would be {bytes} bytes; at most {max} are allowed", max = crate::domain::limits::MAX_EVENT_BYTES)]
    EventTooLarge { stream: StreamName, bytes: usize },
    /// The group this append was in went away before answering (its outcome is unknown: a
    /// retry with the same command id finds it or appends it).
    #[error("the grouped append was lost before it answered")]
    GroupLost,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// One row of [`EventStore::load_folding`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FoldingRow {
    Snapshot {
        stream: StreamName,
        version: u64,
        state: Vec<u8>,
    },
    Event {
        stream: StreamName,
        version: u64,
        event: EncodedEvent,
    },
}

/// A recorded command outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredOutcome {
    pub request_hash: [u8; 32],
    pub outcome: Vec<u8>,
    /// The transaction that recorded it (absent for outcomes recorded before this was kept).
    pub txid: Option<i64>,
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

pub(crate) fn hash32(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if bytes.len() == 32 {
        out.copy_from_slice(bytes);
    }
    out
}

impl EventStore {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Arc::default(),
            grouping: Arc::new(Grouping::new(GROUP_APPENDERS)),
        }
    }

    /// The folded stream states this handle (and its clones) have read or written.
    pub fn cache(&self) -> &StateCache {
        &self.cache
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Appends all of a command's events atomically, or nothing.
    ///
    /// Group commit: while `GROUP_APPENDERS` appends are in flight, further requests queue, and
    /// the next appender to free up takes every queued request on streams disjoint from the ones
    /// it already took into one statement — one transaction, one commit for all of them. Each
    /// member's checks are its own (versions, outcome, nonce); if the group fails for any
    /// reason it is halved until the failing members stand alone, so a member's conflict or
    /// twin is answered to it alone and never refuses another. A lone request is appended as
    /// before.
    pub async fn append(&self, request: &AppendRequest) -> Result<Appended, AppendError> {
        let prepared = Prepared::of(request)?;
        let (reply, mut answer) = oneshot::channel();
        self.grouping.enqueue(Pending { prepared, reply });
        loop {
            tokio::select! {
                biased;
                answer = &mut answer => {
                    return answer.unwrap_or_else(|_| Err(AppendError::GroupLost));
                }
                permit = self.grouping.permits.clone().acquire_owned() => {
                    let Ok(permit) = permit else {
                        return Err(AppendError::GroupLost);
                    };
                    let group = self.grouping.take();
                    if group.is_empty() {
                        // Another appender took this request: its answer is coming.
                        drop(permit);
                        return answer.await.unwrap_or_else(|_| Err(AppendError::GroupLost));
                    }
                    // In a task of its own, so a caller that goes away (a closed connection)
                    // cannot cut short a group that carries other callers' commands.
                    let pool = self.pool.clone();
                    tokio::spawn(async move {
                        let _permit = permit;
                        run_group(&pool, group).await;
                    });
                }
            }
        }
    }
}

/// Appends that may run at once per store handle; requests beyond them queue and are grouped.
pub const GROUP_APPENDERS: usize = 4;
/// Most commands in one grouped append.
pub const GROUP_COMMANDS_MAX: usize = 64;
/// Most events in one grouped append (a command alone may have more).
pub const GROUP_EVENTS_MAX: usize = 20_000;

/// Queued appends and the permits of the appenders that run them.
#[derive(Debug)]
struct Grouping {
    queue: Mutex<VecDeque<Pending>>,
    permits: Arc<Semaphore>,
}

#[derive(Debug)]
struct Pending {
    prepared: Prepared,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

impl Grouping {
    fn new(appenders: usize) -> Self {
        Self {
            queue: Mutex::new(VecDeque::new()),
            permits: Arc::new(Semaphore::new(appenders.max(1))),
        }
    }

    fn enqueue(&self, pending: Pending) {
        if let Ok(mut queue) = self.queue.lock() {
            queue.push_back(pending);
        }
    }

    /// The oldest queued requests whose streams are disjoint from one another, within the
    /// group's bounds; the rest stay queued, in order.
    fn take(&self) -> Vec<Pending> {
        let Ok(mut queue) = self.queue.lock() else {
            return Vec::new();
        };
        let mut group: Vec<Pending> = Vec::new();
        let mut streams: HashSet<StreamName> = HashSet::new();
        let mut events = 0;
        let mut kept = VecDeque::with_capacity(queue.len());
        while let Some(pending) = queue.pop_front() {
            let p = &pending.prepared;
            let fits = group.is_empty()
                || (group.len() < GROUP_COMMANDS_MAX
                    && events + p.ids.len() <= GROUP_EVENTS_MAX
                    && p.heads.keys().all(|s| !streams.contains(s)));
            if fits {
                events += p.ids.len();
                streams.extend(p.heads.keys().cloned());
                group.push(pending);
            } else {
                kept.push_back(pending);
            }
        }
        *queue = kept;
        group
    }
}

/// Runs one group and answers each member.
async fn run_group(pool: &PgPool, group: Vec<Pending>) {
    let mut conn = match pool.acquire().await {
        Ok(conn) => conn,
        Err(e) => {
            let message = e.to_string();
            for pending in group {
                let error = sqlx::Error::Protocol(message.clone());
                let _ = pending.reply.send(Err(AppendError::Database(error)));
            }
            return;
        }
    };
    let members: Vec<&Prepared> = group.iter().map(|p| &p.prepared).collect();
    let mut answers = Vec::with_capacity(group.len());
    append_members(&mut conn, &members, &mut answers).await;
    if group.len() > 1 {
        metrics::histogram!("settle_append_group_commands").record(group.len() as f64);
    }
    for (pending, answer) in group.into_iter().zip(answers) {
        let event_ids = pending.prepared.ids;
        let _ = pending
            .reply
            .send(answer.map(|txid| Appended { txid, event_ids }));
    }
}

/// Appends `members` as one statement; if that fails, halves them and tries each half, so a
/// member that conflicts (or repeats a command or nonce) is found in a few statements and is
/// answered alone, while the rest still commit together. One answer per member, in order.
async fn append_members(
    conn: &mut PgConnection,
    members: &[&Prepared],
    answers: &mut Vec<Result<i64, AppendError>>,
) {
    let result = append_prepared(conn, members).await;
    match result {
        Ok(txid) => answers.extend(members.iter().map(|_| Ok(txid))),
        Err(error) if members.len() == 1 => answers.push(Err(error)),
        Err(_) => {
            let (left, right) = members.split_at(members.len() / 2);
            Box::pin(append_members(conn, left, answers)).await;
            Box::pin(append_members(conn, right, answers)).await;
        }
    }
}

/// Appends on `conn`: in autocommit mode the append is its own transaction; inside a transaction
/// the caller's COMMIT makes it durable (tests use this to delay commits on purpose).
pub async fn append_on(
    conn: &mut PgConnection,
    request: &AppendRequest,
) -> Result<Appended, AppendError> {
    let prepared = Prepared::of(request)?;
    let txid = append_prepared(conn, &[&prepared]).await?;
    Ok(Appended {
        txid,
        event_ids: prepared.ids,
    })
}

/// A request checked and laid out for the statement: each stream's expected and new version,
/// and each event's id and version.
#[derive(Debug)]
struct Prepared {
    heads: BTreeMap<StreamName, (u64, u64)>,
    ids: Vec<Uuid>,
    streams: Vec<StreamName>,
    versions: Vec<i64>,
    types: Vec<i32>,
    schemas: Vec<i16>,
    payloads: Vec<Vec<u8>>,
    metadata: Vec<u8>,
    recorded_at: DateTime<Utc>,
    command_id: Uuid,
    request_hash: [u8; 32],
    outcome: Vec<u8>,
    nonce: Option<NonceClaim>,
}

impl Prepared {
    fn of(request: &AppendRequest) -> Result<Self, AppendError> {
        let mut heads: BTreeMap<StreamName, (u64, u64)> = request
            .expected
            .iter()
            .map(|(s, v)| (s.clone(), (*v, *v)))
            .collect();
        let n = request.events.len();
        let mut prepared = Self {
            heads: BTreeMap::new(),
            ids: Vec::with_capacity(n),
            streams: Vec::with_capacity(n),
            versions: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            schemas: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            metadata: request.metadata.encode(),
            recorded_at: to_datetime(request.recorded_at),
            command_id: request.command_id.as_uuid(),
            request_hash: request.request_hash,
            outcome: request.outcome.clone(),
            nonce: request.nonce.clone(),
        };
        for (index, new) in request.events.iter().enumerate() {
            if new.event.payload.len() > crate::domain::limits::MAX_EVENT_BYTES {
                return Err(AppendError::EventTooLarge {
                    stream: new.stream.clone(),
                    bytes: new.event.payload.len(),
                });
            }
            let head = heads
                .get_mut(&new.stream)
                .ok_or_else(|| AppendError::UndeclaredStream(new.stream.clone()))?;
            head.1 += 1;
            prepared
                .ids
                .push(event_id(request.command_id, index as u32));
            prepared.streams.push(new.stream.clone());
            prepared.versions.push(head.1 as i64);
            prepared.types.push(new.event.type_id as i32);
            prepared.schemas.push(new.event.schema_version as i16);
            prepared.payloads.push(new.event.payload.clone());
        }
        prepared.heads = heads;
        Ok(prepared)
    }
}

/// One statement appending `members` (disjoint streams) in one transaction; its txid.
async fn append_prepared(
    conn: &mut PgConnection,
    members: &[&Prepared],
) -> Result<i64, AppendError> {
    let heads: Vec<(&StreamName, &(u64, u64))> = {
        let mut all: Vec<_> = members.iter().flat_map(|m| m.heads.iter()).collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    };
    let stream_cats: Vec<&str> = heads.iter().map(|(s, _)| s.category()).collect();
    let stream_ids: Vec<&str> = heads.iter().map(|(s, _)| s.id()).collect();
    let expected: Vec<i64> = heads.iter().map(|(_, v)| v.0 as i64).collect();
    let new_versions: Vec<i64> = heads.iter().map(|(_, v)| v.1 as i64).collect();
    let events = members.iter().map(|m| m.ids.len()).sum();
    let (mut ids, mut cats, mut sids, mut versions) = (
        Vec::with_capacity(events),
        Vec::with_capacity(events),
        Vec::with_capacity(events),
        Vec::with_capacity(events),
    );
    let (mut types, mut schemas, mut payloads, mut metadata, mut at) = (
        Vec::with_capacity(events),
        Vec::with_capacity(events),
        Vec::with_capacity(events),
        Vec::with_capacity(events),
        Vec::with_capacity(events),
    );
    for m in members {
        ids.extend_from_slice(&m.ids);
        cats.extend(m.streams.iter().map(StreamName::category));
        sids.extend(m.streams.iter().map(StreamName::id));
        versions.extend_from_slice(&m.versions);
        types.extend_from_slice(&m.types);
        schemas.extend_from_slice(&m.schemas);
        payloads.extend(m.payloads.iter().map(Vec::as_slice));
        metadata.extend(std::iter::repeat_n(m.metadata.as_slice(), m.ids.len()));
        at.extend(std::iter::repeat_n(m.recorded_at, m.ids.len()));
    }
    let command_ids: Vec<Uuid> = members.iter().map(|m| m.command_id).collect();
    let request_hashes: Vec<&[u8]> = members.iter().map(|m| m.request_hash.as_slice()).collect();
    let outcomes: Vec<&[u8]> = members.iter().map(|m| m.outcome.as_slice()).collect();
    let command_at: Vec<DateTime<Utc>> = members.iter().map(|m| m.recorded_at).collect();
    let claims: Vec<(&NonceClaim, &&Prepared)> = members
        .iter()
        .filter_map(|m| m.nonce.as_ref().map(|n| (n, m)))
        .collect();
    let result = sqlx::query_scalar::<_, i64>(APPEND_SQL)
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
        .bind(&metadata)
        .bind(&at)
        .bind(&command_ids)
        .bind(&request_hashes)
        .bind(&outcomes)
        .bind(&command_at)
        .bind(
            claims
                .iter()
                .map(|(n, _)| n.scope.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            claims
                .iter()
                .map(|(n, _)| n.nonce.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            claims
                .iter()
                .map(|(n, _)| n.payload_hash.as_slice())
                .collect::<Vec<_>>(),
        )
        .bind(claims.iter().map(|(_, m)| m.command_id).collect::<Vec<_>>())
        .bind(
            claims
                .iter()
                .map(|(_, m)| m.recorded_at)
                .collect::<Vec<_>>(),
        )
        .fetch_one(&mut *conn)
        .await;
    match result {
        Ok(txid) => Ok(txid),
        Err(sqlx::Error::Database(e)) => match (e.code().as_deref(), e.constraint()) {
            // A deadlock cannot come of the ordered locks; if Postgres ever reports one,
            // the append was aborted whole and re-deciding is the answer.
            (Some("SE409") | Some("40P01"), _) => Err(AppendError::Conflict),
            (Some("23505"), Some("command_outcomes_pkey")) => Err(AppendError::DuplicateCommand),
            (Some("23505"), Some("nonces_pkey")) => Err(AppendError::NonceTaken),
            (Some("23505"), Some("events_txid_tx_seq_key")) => {
                Err(AppendError::SecondAppendInTransaction)
            }
            // A twin's events, or a version taken meanwhile: the stream moved.
            (Some("23505"), _) => Err(AppendError::Conflict),
            _ => Err(AppendError::Database(sqlx::Error::Database(e))),
        },
        Err(e) => Err(AppendError::Database(e)),
    }
}

impl EventStore {
    /// Loads every event of the given streams, each stream in version order.
    pub async fn load(&self, streams: &[StreamName]) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let after = vec![0; streams.len()];
        self.load_after(streams, &after).await
    }

    /// Loads the events of `streams[i]` with a version above `after[i]`, each stream in version
    /// order, in one query.
    pub async fn load_after(
        &self,
        streams: &[StreamName],
        after: &[u64],
    ) -> Result<Vec<StoredEvent>, sqlx::Error> {
        let cats: Vec<&str> = streams.iter().map(|s| s.category()).collect();
        let ids: Vec<&str> = streams.iter().map(|s| s.id()).collect();
        let after: Vec<i64> = after.iter().map(|v| *v as i64).collect();
        let rows = sqlx::query(
            // LATERAL: one index range scan per stream. A plain join lets the planner hash the
            // streams and scan the whole events table, which grows with history.
            "SELECT e.event_id, e.category, e.stream_id, e.version, e.type_id, e.schema_version,
                    e.payload, e.metadata, e.recorded_at
             FROM unnest($1::text[], $2::text[], $3::bigint[]) AS u(category, id, after)
             CROSS JOIN LATERAL (
                 SELECT * FROM events e
                 WHERE e.category = u.category AND e.stream_id = u.id AND e.version > u.after
             ) e
             ORDER BY e.category, e.stream_id, e.version",
        )
        .bind(&cats)
        .bind(&ids)
        .bind(&after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(stored_event_from_row).collect()
    }

    /// What a decision needs of `streams[i]`, in one query: its latest snapshot of encoding
    /// `schema` above version `after[i]` (only where `snapshot[i]`), then its events above the
    /// later of `after[i]` and that snapshot, each stream's rows in version order.
    pub async fn load_folding(
        &self,
        streams: &[StreamName],
        after: &[u64],
        snapshot: &[bool],
        schema: u16,
    ) -> Result<Vec<FoldingRow>, sqlx::Error> {
        let cats: Vec<&str> = streams.iter().map(|s| s.category()).collect();
        let ids: Vec<&str> = streams.iter().map(|s| s.id()).collect();
        let after: Vec<i64> = after.iter().map(|v| *v as i64).collect();
        let rows = sqlx::query(
            // LATERAL: one index probe or range scan per stream, never a scan of the table.
            "WITH u AS (
                 SELECT u.category, u.id, u.after, s.version AS snapshot_version, s.state
                 FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bool[])
                      AS u(category, id, after, snapshot)
                 LEFT JOIN LATERAL (
                     SELECT sn.version, sn.state FROM snapshots sn
                     WHERE u.snapshot AND sn.category = u.category AND sn.stream_id = u.id
                       AND sn.schema = $5 AND sn.version > u.after
                 ) s ON true
             )
             SELECT true AS snapshot, u.category, u.id AS stream_id, u.snapshot_version AS version,
                    NULL::integer AS type_id, NULL::smallint AS schema_version, u.state AS payload
             FROM u WHERE u.snapshot_version IS NOT NULL
             UNION ALL
             SELECT false, e.category, e.stream_id, e.version, e.type_id, e.schema_version, e.payload
             FROM u CROSS JOIN LATERAL (
                 SELECT * FROM events e
                 WHERE e.category = u.category AND e.stream_id = u.id
                   AND e.version > greatest(u.after, coalesce(u.snapshot_version, 0))
             ) e
             ORDER BY 2, 3, 1 DESC, 4",
        )
        .bind(&cats)
        .bind(&ids)
        .bind(&after)
        .bind(snapshot)
        .bind(schema as i16)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let category: String = row.try_get("category")?;
                let id: String = row.try_get("stream_id")?;
                let stream = StreamName::parse(&category, &id)
                    .map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
                let version = row.try_get::<i64, _>("version")? as u64;
                let payload: Vec<u8> = row.try_get("payload")?;
                Ok(if row.try_get("snapshot")? {
                    FoldingRow::Snapshot {
                        stream,
                        version,
                        state: payload,
                    }
                } else {
                    FoldingRow::Event {
                        stream,
                        version,
                        event: EncodedEvent {
                            type_id: row.try_get::<i32, _>("type_id")? as u32,
                            schema_version: row.try_get::<i16, _>("schema_version")? as u16,
                            payload,
                        },
                    }
                })
            })
            .collect()
    }

    /// Stores `state` as `stream`'s snapshot at `version` unless one as recent is stored.
    pub async fn store_snapshot(
        &self,
        stream: &StreamName,
        version: u64,
        schema: u16,
        state: &[u8],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO snapshots AS s (category, stream_id, schema, version, state)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (category, stream_id) DO UPDATE
                 SET schema = EXCLUDED.schema, version = EXCLUDED.version,
                     state = EXCLUDED.state, taken_at = now()
                 WHERE s.version < EXCLUDED.version OR s.schema <> EXCLUDED.schema",
        )
        .bind(stream.category())
        .bind(stream.id())
        .bind(schema as i16)
        .bind(version as i64)
        .bind(state)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn command_outcome(
        &self,
        command_id: CommandId,
    ) -> Result<Option<StoredOutcome>, sqlx::Error> {
        let row = sqlx::query(
            "SELECT request_hash, outcome, txid FROM command_outcomes WHERE command_id = $1",
        )
        .bind(command_id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StoredOutcome {
                request_hash: hash32(r.try_get("request_hash")?),
                outcome: r.try_get("outcome")?,
                txid: r.try_get("txid")?,
            })
        })
        .transpose()
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
        let Some(row) = row else {
            return Ok(NonceState::Fresh);
        };
        if hash32(row.try_get("payload_hash")?) != *payload_hash {
            return Ok(NonceState::Reused);
        }
        Ok(NonceState::Retry {
            command_id: CommandId::from_uuid(row.try_get("command_id")?),
        })
    }

    /// What the store knows of a command before it runs, in one round trip: the state of its
    /// nonce (if it has one) and the outcome recorded under the nonce's command (a retry) or,
    /// failing that, under `command_id`.
    pub async fn earlier(
        &self,
        command_id: CommandId,
        nonce: Option<&NonceClaim>,
    ) -> Result<(NonceState, Option<StoredOutcome>), sqlx::Error> {
        let row = sqlx::query(
            "SELECT n.payload_hash AS nonce_hash, n.command_id AS nonce_command,
                    o.request_hash, o.outcome, o.txid
             FROM (SELECT 1) one
             LEFT JOIN nonces n ON n.scope = $1 AND n.nonce = $2
             LEFT JOIN command_outcomes o
               ON o.command_id = coalesce(CASE WHEN n.payload_hash = $3 THEN n.command_id END, $4)",
        )
        .bind(nonce.map(|n| n.scope.as_str()))
        .bind(nonce.map(|n| n.nonce.as_str()))
        .bind(nonce.map(|n| n.payload_hash.as_slice()))
        .bind(command_id.as_uuid())
        .fetch_one(&self.pool)
        .await?;
        let nonce_hash: Option<Vec<u8>> = row.try_get("nonce_hash")?;
        let state = match (nonce_hash, nonce) {
            (Some(found), Some(claim)) if hash32(&found) != claim.payload_hash => {
                NonceState::Reused
            }
            (Some(_), Some(_)) => NonceState::Retry {
                command_id: CommandId::from_uuid(row.try_get("nonce_command")?),
            },
            _ => NonceState::Fresh,
        };
        let request_hash: Option<Vec<u8>> = row.try_get("request_hash")?;
        let outcome = match request_hash {
            Some(hash) => Some(StoredOutcome {
                request_hash: hash32(&hash),
                outcome: row.try_get("outcome")?,
                txid: row.try_get("txid")?,
            }),
            None => None,
        };
        Ok((state, outcome))
    }

    /// The last sequenced position (0 before the first).
    pub async fn log_head(&self) -> Result<u64, sqlx::Error> {
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM event_log")
            .fetch_one(&self.pool)
            .await?;
        Ok(head as u64)
    }

    /// Sequenced events with `after < position <= until`, in order, at most `limit`. The range
    /// is bounded to `limit` positions (they are dense), not only limited: with the bound alone
    /// the planner may join and sort everything up to `until` for each page.
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
             WHERE l.position > $1 AND l.position <= least($2, $1 + $3)
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
