//! Parked events (ADR 0006, "nothing loops forever on one item"): what a consumer does with an
//! event its projection cannot apply for a reason retrying does not cure, and the operator's
//! side of it (`parked list`, `parked retry`), shared by every binary that runs consumers.
//!
//! An event is parked together with every later event of the streams it touches, so no read-model
//! row is ever changed out of order; the consumer's checkpoint moves past parked events and every
//! other stream carries on. Parking, applying and retrying all happen inside transactions that
//! hold the consumer's batch lock, so a live consumer and a retry never interleave.

use std::collections::BTreeMap;

use anyhow::Context;
use sqlx::{PgConnection, PgPool, Row};

use super::consumer::Projection;
use crate::codec::{EncodedEvent, SequencedEvent};
use crate::store::EventStore;

/// Longest error text kept with a parked event (errors may quote whole statements).
const ERROR_TEXT_MAX: usize = 2_000;

/// Whether `error` may go away by itself, so the batch is retried as it is rather than narrowed
/// to a culprit: the connection, the pool or the network failed, or Postgres asked for a retry
/// (serialization failure, deadlock, shutdown, too many connections). Anything else — a row
/// Postgres refuses, a payload that does not decode — fails the same way every time.
pub fn is_transient(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return true;
        }
        match cause.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => db.code().is_some_and(|c| transient_sqlstate(&c)),
            Some(
                sqlx::Error::Io(_)
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::WorkerCrashed,
            ) => true,
            _ => false,
        }
    })
}

/// SQLSTATEs that say "try again": connection exceptions (08), serialization failure, deadlock,
/// insufficient resources (53), operator intervention (shutdown, crash recovery: 57P0x).
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "40001" | "40P01" | "57P01" | "57P02" | "57P03")
}

/// An error as kept with a parked event: its whole chain, the SQLSTATE if Postgres gave one, no
/// NUL (Postgres text cannot hold one, and the record of a poison must not be poisoned itself),
/// and bounded in length.
pub fn error_text(error: &anyhow::Error) -> String {
    // The chain, without a cause that only repeats what its wrapper already said (sqlx's
    // database error quotes Postgres' message, then gives it again as its source).
    let mut text = String::new();
    for cause in error.chain() {
        let said = cause.to_string();
        if text.ends_with(&said) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&said);
    }
    if let Some(code) = error
        .chain()
        .find_map(|c| match c.downcast_ref::<sqlx::Error>() {
            Some(sqlx::Error::Database(db)) => db.code().map(|c| c.into_owned()),
            _ => None,
        })
    {
        text.push_str(&format!(" (SQLSTATE {code})"));
    }
    clean_text(&text)
}

fn clean_text(text: &str) -> String {
    let mut text = text.replace('\0', "\\0");
    if text.len() > ERROR_TEXT_MAX {
        let mut end = ERROR_TEXT_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The name of an event's type, for people (`type 7 v1` when this build does not know it).
pub fn event_type_name(event: &EncodedEvent) -> String {
    crate::domain::DomainEvent::TYPES
        .iter()
        .find(|t| t.id == event.type_id && t.version == event.schema_version)
        .map_or_else(
            || format!("type {} v{}", event.type_id, event.schema_version),
            |t| t.name.to_owned(),
        )
}

/// The streams an event touches, as text (`category.id`), by the projection's own account.
pub fn touched<P: Projection>(projection: &P, event: &SequencedEvent) -> Vec<String> {
    projection
        .streams_touched(event)
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// The streams a consumer has parked, each with the first parked position on it. Pure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParkedStreams {
    streams: BTreeMap<String, u64>,
}

/// What to do with one event, given the streams parked before it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// No stream it touches is parked: apply it.
    Apply,
    /// It touches `stream`, parked since `first`: hold it (park it unapplied).
    Hold { stream: String, first: u64 },
}

impl ParkedStreams {
    pub fn new(streams: impl IntoIterator<Item = (String, u64)>) -> Self {
        Self {
            streams: streams.into_iter().collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }

    pub fn contains(&self, stream: &str) -> bool {
        self.streams.contains_key(stream)
    }

    pub fn streams(&self) -> impl Iterator<Item = (&str, u64)> {
        self.streams.iter().map(|(s, p)| (s.as_str(), *p))
    }

    /// Whether an event touching `touched` may be applied.
    pub fn admit(&self, touched: &[String]) -> Admission {
        touched
            .iter()
            .find_map(|s| {
                self.streams.get(s).map(|first| Admission::Hold {
                    stream: s.clone(),
                    first: *first,
                })
            })
            .unwrap_or(Admission::Apply)
    }

    /// Parks every stream in `touched` at `position` (a stream already parked keeps its first
    /// position); returns the streams that were not parked before.
    pub fn park(&mut self, touched: &[String], position: u64) -> Vec<(String, u64)> {
        let mut fresh = Vec::new();
        for stream in touched {
            if !self.streams.contains_key(stream) {
                self.streams.insert(stream.clone(), position);
                fresh.push((stream.clone(), position));
            }
        }
        fresh
    }
}

/// Splits a batch (each event by position with the streams it touches) into the events to
/// apply and those to hold behind a parked stream. A held event parks the streams it touches,
/// so later events of any of them are held too. Pure.
pub fn hold_back(
    batch: &[(u64, Vec<String>)],
    parked: &mut ParkedStreams,
) -> Vec<(u64, Admission)> {
    batch
        .iter()
        .map(|(position, touched)| {
            let admission = parked.admit(touched);
            if admission != Admission::Apply {
                parked.park(touched, *position);
            }
            (*position, admission)
        })
        .collect()
}

/// One parked position, as written in the batch's transaction.
#[derive(Clone, Debug)]
pub(crate) struct Parking {
    pub position: u64,
    pub stream: String,
    pub event_type: String,
    pub reason: &'static str,
    pub error: String,
}

impl Parking {
    pub fn failed(event: &SequencedEvent, error: String) -> Self {
        Self {
            position: event.position,
            stream: event.stored.stream.to_string(),
            event_type: event_type_name(&event.stored.event),
            reason: "failed",
            error,
        }
    }

    pub fn held(event: &SequencedEvent, stream: &str, first: u64) -> Self {
        Self {
            position: event.position,
            stream: event.stored.stream.to_string(),
            event_type: event_type_name(&event.stored.event),
            reason: "held",
            error: format!("held behind stream {stream}, parked since position {first}"),
        }
    }
}

/// The advisory lock key a consumer's batch and retry transactions share (not the key of
/// `run_exclusive`'s session lock, which another connection of the same process holds).
pub(crate) fn batch_lock_key(consumer: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("consumer-batch:{consumer}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Takes the consumer's batch lock for the rest of the transaction on `tx`.
pub async fn lock_batch(tx: &mut PgConnection, consumer: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(batch_lock_key(consumer))
        .execute(tx)
        .await?;
    Ok(())
}

pub(crate) async fn load_parked_streams(
    tx: &mut PgConnection,
    consumer: &str,
) -> sqlx::Result<ParkedStreams> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT stream, first_position FROM consumer_parked_streams WHERE consumer = $1",
    )
    .bind(consumer)
    .fetch_all(tx)
    .await?;
    Ok(ParkedStreams::new(
        rows.into_iter().map(|(s, p)| (s, p as u64)),
    ))
}

/// Records `parkings` and the newly parked `streams`.
pub(crate) async fn record(
    tx: &mut PgConnection,
    consumer: &str,
    parkings: &[Parking],
    streams: &[(String, u64)],
) -> sqlx::Result<()> {
    if !parkings.is_empty() {
        let positions: Vec<i64> = parkings.iter().map(|p| p.position as i64).collect();
        let own: Vec<&str> = parkings.iter().map(|p| p.stream.as_str()).collect();
        let types: Vec<&str> = parkings.iter().map(|p| p.event_type.as_str()).collect();
        let reasons: Vec<&str> = parkings.iter().map(|p| p.reason).collect();
        let errors: Vec<&str> = parkings.iter().map(|p| p.error.as_str()).collect();
        sqlx::query(
            "INSERT INTO consumer_parked_events (consumer, position, stream, event_type, reason, error)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::text[], $5::text[], $6::text[])",
        )
        .bind(consumer)
        .bind(&positions)
        .bind(&own)
        .bind(&types)
        .bind(&reasons)
        .bind(&errors)
        .execute(&mut *tx)
        .await?;
    }
    if !streams.is_empty() {
        let names: Vec<&str> = streams.iter().map(|(s, _)| s.as_str()).collect();
        let firsts: Vec<i64> = streams.iter().map(|(_, p)| *p as i64).collect();
        sqlx::query(
            "INSERT INTO consumer_parked_streams (consumer, stream, first_position)
             SELECT $1, * FROM unnest($2::text[], $3::bigint[]) ON CONFLICT DO NOTHING",
        )
        .bind(consumer)
        .bind(&names)
        .bind(&firsts)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Applies one event in a savepoint of `tx`. `Ok(Err(text))`: the apply failed for good and
/// was rolled back; `Err`: a transient failure (the whole transaction is lost, nothing parks).
pub(crate) async fn apply_one<P: Projection>(
    tx: &mut PgConnection,
    projection: &mut P,
    event: &SequencedEvent,
) -> anyhow::Result<Result<(), String>> {
    sqlx::query("SAVEPOINT park_event")
        .execute(&mut *tx)
        .await?;
    match projection
        .apply(&mut *tx, std::slice::from_ref(event))
        .await
    {
        Ok(()) => {
            sqlx::query("RELEASE SAVEPOINT park_event")
                .execute(&mut *tx)
                .await?;
            Ok(Ok(()))
        }
        Err(e) if is_transient(&e) => Err(e),
        Err(e) => {
            sqlx::query("ROLLBACK TO SAVEPOINT park_event")
                .execute(&mut *tx)
                .await?;
            sqlx::query("RELEASE SAVEPOINT park_event")
                .execute(&mut *tx)
                .await?;
            Ok(Err(error_text(&e)))
        }
    }
}

/// What `/readyz` and `list` say about one consumer's parked events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParkedSummary {
    pub count: u64,
    /// The first parked position and its stream.
    pub first: Option<(u64, String)>,
}

pub async fn summary(pool: &PgPool, consumer: &str) -> sqlx::Result<ParkedSummary> {
    let (count, first): (i64, Option<(i64, String)>) = {
        let row = sqlx::query(
            "SELECT count(*) AS n,
                    (SELECT position FROM consumer_parked_events WHERE consumer = $1 ORDER BY position LIMIT 1) AS first,
                    (SELECT stream FROM consumer_parked_events WHERE consumer = $1 ORDER BY position LIMIT 1) AS stream
             FROM consumer_parked_events WHERE consumer = $1",
        )
        .bind(consumer)
        .fetch_one(pool)
        .await?;
        let first: Option<i64> = row.try_get("first")?;
        let stream: Option<String> = row.try_get("stream")?;
        (row.try_get("n")?, first.zip(stream))
    };
    Ok(ParkedSummary {
        count: count as u64,
        first: first.map(|(p, s)| (p as u64, s)),
    })
}

/// Sets the parked-events gauge of `consumer`.
pub fn set_gauge(consumer: &str, count: u64) {
    metrics::gauge!("settle_consumer_parked_events", "consumer" => consumer.to_owned())
        .set(count as f64);
}

/// One parked event, as `parked list` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ParkedEvent {
    pub consumer: String,
    pub position: u64,
    pub stream: String,
    #[serde(rename = "type")]
    pub event_type: String,
    pub reason: String,
    pub error: String,
    pub parked_at: String,
}

/// Parked events in (consumer, position) order, of one consumer or all.
pub async fn list(pool: &PgPool, consumer: Option<&str>) -> sqlx::Result<Vec<ParkedEvent>> {
    let rows = sqlx::query(
        "SELECT consumer, position, stream, event_type, reason, error,
                to_char(parked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS parked_at
         FROM consumer_parked_events WHERE $1::text IS NULL OR consumer = $1
         ORDER BY consumer, position",
    )
    .bind(consumer)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            Ok(ParkedEvent {
                consumer: row.try_get("consumer")?,
                position: row.try_get::<i64, _>("position")? as u64,
                stream: row.try_get("stream")?,
                event_type: row.try_get("event_type")?,
                reason: row.try_get("reason")?,
                error: row.try_get("error")?,
                parked_at: row.try_get("parked_at")?,
            })
        })
        .collect()
}

/// What a retry did for one consumer.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RetryReport {
    pub consumer: String,
    /// Positions applied (in order) and no longer parked.
    pub applied: Vec<u64>,
    /// Positions the retry chose that are still parked, with why.
    pub still_parked: Vec<(u64, String)>,
}

impl RetryReport {
    pub fn succeeded(&self) -> bool {
        self.still_parked.is_empty()
    }
}

/// Re-applies the parked events of `consumer` (all, or those of the streams the event at
/// `position` touches) in position order with `projection`, the code the live consumer runs.
/// One transaction under the consumer's batch lock: each event in a savepoint; an applied event
/// loses its parked row; an event still failing, or held behind one that does, stays parked,
/// and with it its streams. A stream is un-parked when none of its parked events remain.
pub async fn retry<P: Projection>(
    pool: &PgPool,
    consumer: &str,
    projection: &mut P,
    position: Option<u64>,
) -> anyhow::Result<RetryReport> {
    let mut report = RetryReport {
        consumer: consumer.to_owned(),
        ..Default::default()
    };
    let mut tx = pool.begin().await?;
    lock_batch(&mut tx, consumer).await?;
    let positions: Vec<i64> = sqlx::query_scalar(
        "SELECT position FROM consumer_parked_events WHERE consumer = $1 ORDER BY position",
    )
    .bind(consumer)
    .fetch_all(&mut *tx)
    .await?;
    if positions.is_empty() {
        return Ok(report);
    }
    let store = EventStore::new(pool.clone());
    let mut read = Vec::with_capacity(positions.len());
    for p in &positions {
        let p = *p as u64;
        let event = store
            .read_log(p - 1, p, 1)
            .await?
            .pop()
            .with_context(|| format!("parked position {p} is not in the event log"))?;
        read.push(event);
    }
    projection.prepare(&mut tx, &read).await?;
    let events: Vec<(SequencedEvent, Vec<String>)> = read
        .into_iter()
        .map(|event| {
            let streams = touched(projection, &event);
            (event, streams)
        })
        .collect();
    // The streams chosen: every stream, or those of the event at `position`.
    let chosen: Option<Vec<String>> = match position {
        None => None,
        Some(p) => match events.iter().find(|(e, _)| e.position == p) {
            Some((_, streams)) => Some(streams.clone()),
            None => return Ok(report),
        },
    };
    let mut still = ParkedStreams::default();
    for (event, streams) in &events {
        let picked = chosen
            .as_ref()
            .is_none_or(|c| streams.iter().any(|s| c.contains(s)));
        if !picked {
            // Not retried now: whatever follows on its streams must wait for it.
            still.park(streams, event.position);
            continue;
        }
        if let Admission::Hold { stream, first } = still.admit(streams) {
            still.park(streams, event.position);
            let why = format!("held behind stream {stream}, parked since position {first}");
            report.still_parked.push((event.position, why));
            continue;
        }
        match apply_one(&mut tx, projection, event).await? {
            Ok(()) => {
                sqlx::query(
                    "DELETE FROM consumer_parked_events WHERE consumer = $1 AND position = $2",
                )
                .bind(consumer)
                .bind(event.position as i64)
                .execute(&mut *tx)
                .await?;
                report.applied.push(event.position);
            }
            Err(error) => {
                sqlx::query(
                    "UPDATE consumer_parked_events SET reason = 'failed', error = $3
                     WHERE consumer = $1 AND position = $2",
                )
                .bind(consumer)
                .bind(event.position as i64)
                .bind(&error)
                .execute(&mut *tx)
                .await?;
                still.park(streams, event.position);
                report.still_parked.push((event.position, error));
            }
        }
    }
    // What stays parked is exactly the streams of the events that stay parked.
    let (names, firsts): (Vec<&str>, Vec<i64>) =
        still.streams().map(|(s, p)| (s, p as i64)).unzip();
    sqlx::query(
        "DELETE FROM consumer_parked_streams WHERE consumer = $1 AND NOT (stream = ANY($2))",
    )
    .bind(consumer)
    .bind(&names)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO consumer_parked_streams (consumer, stream, first_position)
         SELECT $1, * FROM unnest($2::text[], $3::bigint[])
         ON CONFLICT (consumer, stream) DO UPDATE SET first_position = EXCLUDED.first_position",
    )
    .bind(consumer)
    .bind(&names)
    .bind(&firsts)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    let left = summary(pool, consumer).await?;
    set_gauge(consumer, left.count);
    if !report.applied.is_empty() {
        tracing::info!(consumer, applied = ?report.applied, "parked events applied on retry");
    }
    Ok(report)
}

/// The operator's commands, as every binary with consumers offers them (`<binary> parked …`).
#[derive(Clone, Debug, clap::Subcommand)]
pub enum ParkedCommand {
    /// Print the parked events as JSON lines: consumer, position, stream, type, reason, error,
    /// parked_at.
    List {
        /// Only this consumer's.
        #[arg(long)]
        consumer: Option<String>,
    },
    /// Re-apply parked events in position order with the consumer's own projection, un-parking
    /// each stream whose parked events all apply. Exits 1 when some still fail.
    Retry {
        /// Only this consumer's.
        #[arg(long)]
        consumer: Option<String>,
        /// Only the streams of the event parked at this position.
        #[arg(long)]
        position: Option<u64>,
    },
}

/// `parked list`: prints JSON lines; returns the exit code.
pub async fn print_list(pool: &PgPool, consumer: Option<&str>) -> anyhow::Result<i32> {
    for event in list(pool, consumer).await? {
        println!("{}", serde_json::to_string(&event)?);
    }
    Ok(0)
}

/// Prints retry reports as JSON lines; returns the exit code (1 when something still fails).
pub fn print_reports(reports: &[RetryReport]) -> anyhow::Result<i32> {
    for report in reports {
        println!("{}", serde_json::to_string(report)?);
    }
    Ok(if reports.iter().all(RetryReport::succeeded) {
        0
    } else {
        1
    })
}

/// Refuses a `--consumer` that the binary does not run.
pub fn check_consumer(consumer: Option<&str>, known: &[&str]) -> anyhow::Result<()> {
    match consumer {
        Some(c) if !known.contains(&c) => {
            anyhow::bail!(
                "unknown consumer {c}; this binary runs {}",
                known.join(", ")
            )
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_held_event_holds_the_later_events_of_every_stream_it_touches() {
        let mut parked = ParkedStreams::new([("settlement.a".to_owned(), 17)]);
        let batch = vec![
            (18, s(&["custody.x"])),
            (19, s(&["settlement.a", "connection.c"])),
            (20, s(&["connection.c"])),
            (21, s(&["settlement.b"])),
            (22, s(&["settlement.a"])),
        ];
        let decided = hold_back(&batch, &mut parked);
        assert_eq!(
            decided,
            vec![
                (18, Admission::Apply),
                (
                    19,
                    Admission::Hold {
                        stream: "settlement.a".into(),
                        first: 17
                    }
                ),
                (
                    20,
                    Admission::Hold {
                        stream: "connection.c".into(),
                        first: 19
                    }
                ),
                (21, Admission::Apply),
                (
                    22,
                    Admission::Hold {
                        stream: "settlement.a".into(),
                        first: 17
                    }
                ),
            ]
        );
        assert!(parked.contains("connection.c") && !parked.contains("settlement.b"));
    }

    #[test]
    fn parking_keeps_a_streams_first_position() {
        let mut parked = ParkedStreams::default();
        assert_eq!(parked.park(&s(&["a.1"]), 5), vec![("a.1".to_owned(), 5)]);
        assert_eq!(
            parked.park(&s(&["a.1", "b.2"]), 9),
            vec![("b.2".to_owned(), 9)]
        );
        assert_eq!(
            parked.streams().collect::<Vec<_>>(),
            vec![("a.1", 5), ("b.2", 9)]
        );
    }

    #[test]
    fn connection_failures_are_transient_and_refusals_are_not() {
        let io = anyhow::Error::from(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "reset",
        )));
        assert!(is_transient(&io));
        assert!(is_transient(&anyhow::Error::from(
            sqlx::Error::PoolTimedOut
        )));
        assert!(is_transient(
            &anyhow::Error::from(sqlx::Error::PoolClosed).context("applying batch")
        ));
        assert!(!is_transient(&anyhow::anyhow!("unknown event type 99")));
        assert!(!is_transient(&anyhow::Error::from(
            sqlx::Error::RowNotFound
        )));
        assert!(transient_sqlstate("40001") && transient_sqlstate("40P01"));
        assert!(transient_sqlstate("08006") && transient_sqlstate("57P01"));
        assert!(!transient_sqlstate("22021") && !transient_sqlstate("54000"));
    }

    #[test]
    fn error_text_has_no_nul_and_is_bounded() {
        let text = error_text(&anyhow::anyhow!("bad {}", "\0".repeat(5_000)));
        assert!(!text.contains('\0'));
        assert!(text.len() <= ERROR_TEXT_MAX + '…'.len_utf8());
    }
}
