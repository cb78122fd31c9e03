//! The consumer loop: a durable JetStream pull consumer whose every batch is applied, together with
//! the consumer's checkpoint, in one Postgres transaction. Positions at or below the checkpoint
//! are skipped, so a redelivery after a crash has no effect twice. Acknowledgement (ack, nak,
//! term) happens in one place, `settle`, after the transaction's outcome is known.
//!
//! Nothing loops forever on one item: a batch that fails for a reason retrying does not cure is
//! applied again event by event, each in a savepoint, and an event that still fails is parked
//! (`parked.rs`) with the later events of the streams it touches; the checkpoint moves past them.

use std::future::Future;
use std::time::Duration;

use anyhow::{bail, Context};
use async_nats::jetstream::context::GetStreamErrorKind;
use async_nats::jetstream::stream::ConsumerErrorKind;
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{
    self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy, AckKind, Message,
};
use futures::StreamExt;
use sqlx::{PgConnection, PgPool};
use tokio_util::sync::CancellationToken;

use super::parked::{self, Admission, Parking};
use super::{ensure_stream, BusConfig};
use crate::codec::SequencedEvent;
use crate::domain::StreamName;

/// Applies events to a read model. Pure decisions live in the projection's own code; this is the
/// seam where its row changes are written, inside the consumer's transaction.
pub trait Projection: Send {
    /// Applies `events` (ascending, all above the checkpoint) within `tx`.
    fn apply<'a>(
        &'a mut self,
        tx: &'a mut PgConnection,
        events: &'a [SequencedEvent],
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'a;

    /// The streams whose rows applying `event` changes in order: when the event is parked, the
    /// later events of all of them are held back with it. Its own stream unless a projection
    /// knows better.
    fn streams_touched(&self, event: &SequencedEvent) -> Vec<StreamName> {
        vec![event.stored.stream.clone()]
    }

    /// Called before `streams_touched` is asked about `events` (parking, retries): a projection
    /// whose answer needs facts from the database (which partition key an event belongs to)
    /// looks them up here, so that `streams_touched` can stay a plain function.
    fn prepare<'a>(
        &'a mut self,
        _conn: &'a mut PgConnection,
        _events: &'a [SequencedEvent],
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'a {
        async { Ok(()) }
    }
}

#[derive(Clone, Debug)]
pub struct ConsumerConfig {
    /// Durable consumer name and checkpoint key.
    pub name: String,
    pub bus: BusConfig,
    /// Subject filter; `None` means every event, which also enforces that positions are dense.
    pub filter_subject: Option<String>,
    pub batch_max: usize,
    /// How long a fetch waits for the first message.
    pub fetch_wait: Duration,
    /// When set, every committed batch also records its positions and this instance's name in
    /// `consumer_batches` (an audit that positions were applied once, in order, across owners).
    pub audit_instance: Option<String>,
    /// Commit batches without waiting for the WAL flush (`synchronous_commit = off`). Only for
    /// consumers whose every effect can be applied again: the changes and the checkpoint are
    /// in one transaction, so a Postgres crash loses both together and the consumer re-applies
    /// from the older checkpoint. Never for anything that acts outside the database.
    pub asynchronous_commit: bool,
}

impl ConsumerConfig {
    pub fn new(name: impl Into<String>, bus: BusConfig) -> Self {
        Self {
            name: name.into(),
            bus,
            filter_subject: None,
            batch_max: 1_000,
            fetch_wait: Duration::from_millis(500),
            audit_instance: None,
            asynchronous_commit: false,
        }
    }
}

/// What one applied batch left behind.
struct Batch {
    checkpoint: u64,
    /// Events of the batch parked instead of applied.
    parked: usize,
    /// The consumer's parked events after the batch.
    parked_now: u64,
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumerStep {
    /// Applied events (`parked` of them parked instead) and advanced the checkpoint to
    /// `checkpoint`.
    Applied {
        events: usize,
        parked: usize,
        checkpoint: u64,
    },
    /// Only redeliveries at or below the checkpoint: acknowledged, nothing applied.
    Skipped { messages: usize },
    /// Nothing arrived within the fetch wait.
    Idle,
}

/// How the messages of one fetch are answered.
enum Verdict {
    /// Done with; `AckPolicy::All` makes one ack of the last message cover the batch.
    Ack,
    /// The batch was not applied. JetStream would go on delivering later messages, and one ack
    /// of a later batch would cover this one too, so the durable consumer is recreated at
    /// checkpoint + 1 instead: the checkpoint in Postgres is the truth, the durable a cursor.
    Rewind,
}

pub struct Consumer<P> {
    pool: PgPool,
    js: jetstream::Context,
    config: ConsumerConfig,
    projection: P,
    checkpoint: u64,
    pull: Option<jetstream::consumer::Consumer<pull::Config>>,
    /// A rewind is owed: the durable consumer's cursor may be past unapplied messages, so it
    /// must be deleted (and recreated at checkpoint + 1) before anything else is fetched.
    must_rewind: bool,
    /// The checkpoint at which a batch last failed for a reason that was not transient: the
    /// next attempt from there goes event by event and parks what still fails.
    suspect: Option<u64>,
    /// No stream of this consumer was parked at its last batch, which parked nothing: only its
    /// own batches park streams (a retry only un-parks), so the next batch need not look. Reset
    /// by any failure and at start.
    known_clean: bool,
}

impl<P> std::fmt::Debug for Consumer<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("config", &self.config)
            .field("checkpoint", &self.checkpoint)
            .finish()
    }
}

/// How often a consumer holding its lock checks that the lock's connection is alive.
const LOCK_CHECK: Duration = Duration::from_secs(1);
/// How often a standby replica tries for the lock.
const LOCK_STANDBY_POLL: Duration = Duration::from_millis(500);

/// The advisory lock key of a consumer name (stable across processes and versions).
fn lock_key(name: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("consumer:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

/// Waits until this process holds the lock `key` on a connection of its own; `None` on shutdown.
/// A standby keeps one connection and asks on it; it reconnects only when that connection fails.
async fn hold_lock(
    database_url: &str,
    key: i64,
    shutdown: &CancellationToken,
) -> Option<PgConnection> {
    use sqlx::Connection;
    let mut conn: Option<PgConnection> = None;
    loop {
        if conn.is_none() {
            conn = PgConnection::connect(database_url).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
                .bind(key)
                .fetch_one(&mut *c)
                .await
            {
                Ok(true) => return conn,
                Ok(false) => {}
                Err(_) => conn = None,
            }
        }
        tokio::select! {
            () = tokio::time::sleep(LOCK_STANDBY_POLL) => {}
            () = shutdown.cancelled() => return None,
        }
    }
}

/// Reads (creating at 0) the checkpoint of `name`.
pub async fn load_checkpoint(pool: &PgPool, name: &str) -> Result<u64, sqlx::Error> {
    sqlx::query("INSERT INTO consumer_checkpoints (consumer, position, updated_at) VALUES ($1, 0, now()) ON CONFLICT DO NOTHING")
        .bind(name)
        .execute(pool)
        .await?;
    let position: i64 =
        sqlx::query_scalar("SELECT position FROM consumer_checkpoints WHERE consumer = $1")
            .bind(name)
            .fetch_one(pool)
            .await?;
    Ok(position as u64)
}

/// Events a consumer may trail the stream by before its process reports not ready.
pub const LAG_READY_MAX: u64 = 10_000;

/// Readiness of every consumer a process runs, two checks each: `lag:<name>` (the stream's last
/// sequence minus the checkpoint, failing past `LAG_READY_MAX`) and `parked:<name>` (failing
/// while any event is parked, naming the first). Also refreshes the lag and parked-events
/// gauges, as another process (a partition's owner, a retry) changes them.
pub async fn readiness_checks(
    pool: &PgPool,
    js: &jetstream::Context,
    bus: &BusConfig,
    consumers: &[&str],
) -> Vec<crate::service::Check> {
    use crate::service::check_name;
    let last = super::stream_last_sequence(js, bus).await;
    let mut checks = Vec::with_capacity(consumers.len() * 2);
    for consumer in consumers {
        let checkpoint = load_checkpoint(pool, consumer).await;
        if let (Ok(last), Ok(checkpoint)) = (&last, &checkpoint) {
            metrics::gauge!("settle_consumer_lag", "consumer" => (*consumer).to_owned())
                .set(last.saturating_sub(*checkpoint) as f64);
        }
        let lag = match (&last, checkpoint) {
            (Ok(last), Ok(checkpoint)) if *last <= checkpoint + LAG_READY_MAX => Ok(()),
            (Ok(last), Ok(checkpoint)) => Err(format!("{} events behind", last - checkpoint)),
            (Err(e), _) => Err(e.to_string()),
            (_, Err(e)) => Err(e.to_string()),
        };
        checks.push((check_name(format!("lag:{consumer}")), lag));
        let parked = match parked::summary(pool, consumer).await {
            Ok(summary) => {
                parked::set_gauge(consumer, summary.count);
                match summary.first {
                    None => Ok(()),
                    Some((position, stream)) => Err(format!(
                        "{} parked event(s), first at position {position} on stream {stream}",
                        summary.count
                    )),
                }
            }
            Err(e) => Err(e.to_string()),
        };
        checks.push((check_name(format!("parked:{consumer}")), parked));
    }
    checks
}

impl<P: Projection> Consumer<P> {
    pub async fn new(
        pool: PgPool,
        js: jetstream::Context,
        config: ConsumerConfig,
        projection: P,
    ) -> anyhow::Result<Self> {
        let checkpoint = load_checkpoint(&pool, &config.name).await?;
        // Both series exist from the start, so dashboards and alerts see zeroes, not gaps.
        let parked_now = parked::summary(&pool, &config.name).await?.count;
        parked::set_gauge(&config.name, parked_now);
        metrics::counter!("settle_consumer_parked_total", "consumer" => config.name.clone())
            .increment(0);
        Ok(Self {
            pool,
            js,
            config,
            projection,
            checkpoint,
            pull: None,
            must_rewind: false,
            suspect: None,
            known_clean: false,
        })
    }

    pub fn checkpoint(&self) -> u64 {
        self.checkpoint
    }

    pub fn projection(&self) -> &P {
        &self.projection
    }

    async fn pull_consumer(
        &mut self,
    ) -> anyhow::Result<jetstream::consumer::Consumer<pull::Config>> {
        if let Some(pull) = &self.pull {
            return Ok(pull.clone());
        }
        let stream = ensure_stream(&self.js, &self.config.bus).await?;
        let deliver_policy = match self.checkpoint {
            0 => DeliverPolicy::All,
            n => DeliverPolicy::ByStartSequence {
                start_sequence: n + 1,
            },
        };
        let pull = stream
            .get_or_create_consumer(
                &self.config.name,
                pull::Config {
                    durable_name: Some(self.config.name.clone()),
                    filter_subject: self.config.filter_subject.clone().unwrap_or_default(),
                    deliver_policy,
                    ack_policy: AckPolicy::All,
                    ack_wait: Duration::from_secs(30),
                    max_ack_pending: 20_000,
                    ..Default::default()
                },
            )
            .await
            .with_context(|| format!("cannot create consumer {}", self.config.name))?;
        self.pull = Some(pull.clone());
        Ok(pull)
    }

    /// Fetches one batch and applies what is new in it.
    pub async fn step(&mut self) -> anyhow::Result<ConsumerStep> {
        if self.must_rewind {
            self.rewind().await?;
        }
        let messages = match self.fetch().await {
            Ok(messages) => messages,
            Err(e) => {
                // Part of a batch may have been delivered (and the cursor moved) before the error,
                // or NATS lost its data: start again from the checkpoint.
                self.must_rewind = true;
                return Err(e);
            }
        };
        if messages.is_empty() {
            return Ok(ConsumerStep::Idle);
        }
        let mut fresh = Vec::with_capacity(messages.len());
        for message in &messages {
            match SequencedEvent::from_wire(&message.payload) {
                Ok(event) if event.position > self.checkpoint => fresh.push(event),
                Ok(_) => {}
                Err(e) => {
                    // Not an event this engine wrote; it can never become one. Refuse it for good.
                    tracing::error!(consumer = %self.config.name, error = %e, "undecodable message on the event stream");
                    message.ack_with(AckKind::Term).await.ok();
                }
            }
        }
        if fresh.is_empty() {
            self.settle(&messages, Verdict::Ack).await;
            return Ok(ConsumerStep::Skipped {
                messages: messages.len(),
            });
        }
        match self.apply_fresh(&fresh).await {
            Ok(step) => {
                self.settle(&messages, Verdict::Ack).await;
                Ok(step)
            }
            Err(e) => {
                self.settle(&messages, Verdict::Rewind).await;
                Err(e)
            }
        }
    }

    /// Applies what is new in `events` (ascending positions, as read from the stream by someone
    /// else — a partitioned group's shared reader): the same transaction, parking and checkpoint
    /// as `step`, without fetching or acknowledging. On an error the checkpoint is read again,
    /// so the caller re-delivers from `checkpoint() + 1`.
    pub async fn apply_batch(&mut self, events: &[SequencedEvent]) -> anyhow::Result<ConsumerStep> {
        let start = events.partition_point(|e| e.position <= self.checkpoint);
        let fresh = &events[start..];
        if fresh.is_empty() {
            return Ok(ConsumerStep::Skipped {
                messages: events.len(),
            });
        }
        self.apply_fresh(fresh).await
    }

    /// Applies `fresh` (all above the checkpoint) and records the outcome: the new checkpoint
    /// and metrics, or, on failure, whether to narrow the next attempt, and the checkpoint read
    /// again from Postgres (the truth).
    async fn apply_fresh(&mut self, fresh: &[SequencedEvent]) -> anyhow::Result<ConsumerStep> {
        match self.apply(fresh).await {
            Ok(Batch {
                checkpoint,
                parked,
                parked_now,
            }) => {
                self.checkpoint = checkpoint;
                self.suspect = None;
                let consumer = self.config.name.clone();
                metrics::counter!("settle_consumer_applied_total", "consumer" => consumer.clone())
                    .increment((fresh.len() - parked) as u64);
                metrics::counter!("settle_consumer_parked_total", "consumer" => consumer.clone())
                    .increment(parked as u64);
                parked::set_gauge(&consumer, parked_now);
                metrics::gauge!("settle_consumer_checkpoint", "consumer" => consumer)
                    .set(checkpoint as f64);
                Ok(ConsumerStep::Applied {
                    events: fresh.len(),
                    parked,
                    checkpoint,
                })
            }
            Err(e) => {
                if !parked::is_transient(&e) {
                    // Retrying the batch whole would fail the same way: narrow it next time.
                    self.suspect = Some(self.checkpoint);
                }
                self.known_clean = false;
                self.checkpoint = load_checkpoint(&self.pool, &self.config.name)
                    .await
                    .unwrap_or(self.checkpoint);
                Err(e)
            }
        }
    }

    async fn fetch(&mut self) -> anyhow::Result<Vec<Message>> {
        let pull = self.pull_consumer().await?;
        let mut batch = pull
            .fetch()
            .max_messages(self.config.batch_max)
            .expires(self.config.fetch_wait)
            .messages()
            .await
            .context("fetch failed")?;
        let mut messages = Vec::with_capacity(self.config.batch_max);
        while let Some(message) = batch.next().await {
            messages.push(message.map_err(|e| anyhow::anyhow!("fetch failed: {e}"))?);
        }
        Ok(messages)
    }

    /// One transaction, under the consumer's batch lock (which a retry of parked events takes
    /// too): the projection's changes, the parked events and the checkpoint, or none of them.
    async fn apply(&mut self, fresh: &[SequencedEvent]) -> anyhow::Result<Batch> {
        if self.config.filter_subject.is_none() {
            // Unfiltered, positions must be dense: a hole would be a lost event.
            let expected = self.checkpoint + 1..;
            if let Some((want, event)) = expected.zip(fresh).find(|(want, e)| e.position != *want) {
                bail!(
                    "consumer {} expected position {want}, got {}",
                    self.config.name,
                    event.position
                );
            }
        } else if fresh.windows(2).any(|w| w[1].position <= w[0].position) {
            bail!(
                "consumer {} received positions out of order",
                self.config.name
            );
        }
        let last = fresh.last().map_or(self.checkpoint, |e| e.position);
        // The batch lock (and the commit mode) with the BEGIN, in one round trip.
        let key = parked::batch_lock_key(&self.config.name);
        let commit_mode = if self.config.asynchronous_commit {
            " SET LOCAL synchronous_commit = off;"
        } else {
            ""
        };
        let mut tx = self
            .pool
            .begin_with(format!(
                "BEGIN;{commit_mode} SELECT pg_advisory_xact_lock({key})"
            ))
            .await?;
        let mut parked_streams = if self.known_clean {
            parked::ParkedStreams::default()
        } else {
            parked::load_parked_streams(&mut tx, &self.config.name).await?
        };
        self.known_clean = false;
        let narrow = self.suspect == Some(self.checkpoint);
        let (parkings, parked_now) = if parked_streams.is_empty() && !narrow {
            // The common case: nothing parked, nothing suspect; the batch in one call.
            self.projection.apply(&mut tx, fresh).await?;
            (Vec::new(), 0)
        } else {
            self.projection.prepare(&mut tx, fresh).await?;
            let before = parked_streams.clone();
            let parkings = if narrow {
                self.apply_narrowly(&mut tx, fresh, &mut parked_streams)
                    .await?
            } else {
                self.apply_around_parked(&mut tx, fresh, &mut parked_streams)
                    .await?
            };
            let fresh_streams: Vec<(String, u64)> = parked_streams
                .streams()
                .filter(|(s, _)| !before.contains(s))
                .map(|(s, p)| (s.to_owned(), p))
                .collect();
            parked::record(&mut tx, &self.config.name, &parkings, &fresh_streams).await?;
            let count: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM consumer_parked_events WHERE consumer = $1",
            )
            .bind(&self.config.name)
            .fetch_one(&mut *tx)
            .await?;
            (parkings, count as u64)
        };
        let moved = sqlx::query(
            "UPDATE consumer_checkpoints SET position = $3, updated_at = now() WHERE consumer = $1 AND position = $2",
        )
        .bind(&self.config.name)
        .bind(self.checkpoint as i64)
        .bind(last as i64)
        .execute(&mut *tx)
        .await?;
        if moved.rows_affected() != 1 {
            bail!(
                "checkpoint of {} moved under this instance",
                self.config.name
            );
        }
        if let Some(instance) = &self.config.audit_instance {
            sqlx::query(
                "INSERT INTO consumer_batches (consumer, first_position, last_position, instance)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(&self.config.name)
            .bind((self.checkpoint + 1) as i64)
            .bind(last as i64)
            .bind(instance)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        self.known_clean = parkings.is_empty() && parked_now == 0;
        for p in parkings.iter().filter(|p| p.reason == "failed") {
            tracing::error!(consumer = %self.config.name, position = p.position, stream = %p.stream,
                event_type = %p.event_type, error = %p.error, "event parked: its projection cannot apply it");
        }
        Ok(Batch {
            checkpoint: last,
            parked: parkings.len(),
            parked_now,
        })
    }

    /// Some streams are parked: their events in `fresh` are held (parked unapplied), the rest
    /// applied in one call.
    async fn apply_around_parked(
        &mut self,
        tx: &mut PgConnection,
        fresh: &[SequencedEvent],
        parked_streams: &mut parked::ParkedStreams,
    ) -> anyhow::Result<Vec<Parking>> {
        let batch: Vec<(u64, Vec<String>)> = fresh
            .iter()
            .map(|e| (e.position, parked::touched(&self.projection, e)))
            .collect();
        let decided = parked::hold_back(&batch, parked_streams);
        let mut apply = Vec::with_capacity(fresh.len());
        let mut parkings = Vec::new();
        for (event, (_, admission)) in fresh.iter().zip(&decided) {
            match admission {
                Admission::Apply => apply.push(event.clone()),
                Admission::Hold { stream, first } => {
                    parkings.push(Parking::held(event, stream, *first))
                }
            }
        }
        if !apply.is_empty() {
            self.projection.apply(&mut *tx, &apply).await?;
        }
        Ok(parkings)
    }

    /// The batch failed before for a reason that was not transient: each event in a savepoint;
    /// one that fails is rolled back and parked with its streams, one of a parked stream held.
    async fn apply_narrowly(
        &mut self,
        tx: &mut PgConnection,
        fresh: &[SequencedEvent],
        parked_streams: &mut parked::ParkedStreams,
    ) -> anyhow::Result<Vec<Parking>> {
        let mut parkings = Vec::new();
        for event in fresh {
            let touched = parked::touched(&self.projection, event);
            if let Admission::Hold { stream, first } = parked_streams.admit(&touched) {
                parkings.push(Parking::held(event, &stream, first));
                parked_streams.park(&touched, event.position);
                continue;
            }
            if let Err(error) = parked::apply_one(tx, &mut self.projection, event).await? {
                parkings.push(Parking::failed(event, error));
                parked_streams.park(&touched, event.position);
            }
        }
        Ok(parkings)
    }

    /// The one place messages are answered.
    async fn settle(&mut self, messages: &[Message], verdict: Verdict) {
        match verdict {
            Verdict::Ack => {
                if let Some(last) = messages.last() {
                    if let Err(e) = last.ack().await {
                        tracing::warn!(error = %e, "ack failed; the batch will be redelivered and skipped");
                    }
                }
            }
            Verdict::Rewind => {
                self.must_rewind = true;
                if let Err(e) = self.rewind().await {
                    tracing::warn!(error = %e, "cannot rewind consumer yet; retried before the next fetch");
                }
            }
        }
    }

    /// Deletes the durable consumer so that it is recreated at checkpoint + 1. Done (the flag
    /// cleared) only when the consumer is gone, or its stream is.
    async fn rewind(&mut self) -> anyhow::Result<()> {
        self.pull = None;
        let stream = match self.js.get_stream(&self.config.bus.stream).await {
            Ok(stream) => stream,
            Err(e) if matches!(e.kind(), GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND) =>
            {
                // No stream: no cursor to rewind.
                self.must_rewind = false;
                return Ok(());
            }
            Err(e) => bail!("cannot rewind consumer {}: {e}", self.config.name),
        };
        match stream.delete_consumer(&self.config.name).await {
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ConsumerErrorKind::JetStream(j) if j.error_code() == ErrorCode::CONSUMER_NOT_FOUND) =>
                {}
            Err(e) => bail!("cannot rewind consumer {}: {e}", self.config.name),
        }
        self.must_rewind = false;
        Ok(())
    }

    /// As `run`, but applies only while this instance holds the consumer's session advisory
    /// lock (on a connection of its own to `database_url`): of several replicas one applies and
    /// the others stand by, instead of splitting a durable consumer's messages between them and
    /// rewinding each other. Correctness never rests on the lock (each batch checks the
    /// checkpoint in its transaction); it only keeps replicas from fighting.
    pub async fn run_exclusive(
        mut self,
        database_url: &str,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let key = lock_key(&self.config.name);
        while let Some(mut lock) = hold_lock(database_url, key, &shutdown).await {
            tracing::info!(consumer = %self.config.name, "consumer lock held; applying");
            // Another replica may have applied meanwhile: start again from the checkpoint, with
            // the durable consumer recreated there.
            self.checkpoint = load_checkpoint(&self.pool, &self.config.name).await?;
            self.must_rewind = true;
            let mut backoff = Duration::from_millis(100);
            let mut checked = std::time::Instant::now();
            loop {
                // Between steps, never inside one: a step dropped halfway would leave fetched
                // messages unacknowledged until JetStream redelivers them.
                if checked.elapsed() >= LOCK_CHECK {
                    if sqlx::query("SELECT 1").execute(&mut lock).await.is_err() {
                        tracing::warn!(consumer = %self.config.name, "consumer lock lost; standing by");
                        break;
                    }
                    checked = std::time::Instant::now();
                }
                let step = tokio::select! {
                    step = self.step() => step,
                    () = shutdown.cancelled() => return Ok(()),
                };
                match step {
                    Ok(_) => backoff = Duration::from_millis(100),
                    Err(e) => {
                        tracing::warn!(consumer = %self.config.name, error = %e, "consumer step failed");
                        tokio::select! {
                            () = tokio::time::sleep(backoff) => {}
                            () = shutdown.cancelled() => return Ok(()),
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
        }
        Ok(())
    }

    /// Steps until `shutdown`, backing off after errors.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut backoff = Duration::from_millis(100);
        while !shutdown.is_cancelled() {
            let step = tokio::select! {
                step = self.step() => step,
                () = shutdown.cancelled() => break,
            };
            match step {
                Ok(_) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(consumer = %self.config.name, error = %e, "consumer step failed");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = shutdown.cancelled() => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        Ok(())
    }
}
