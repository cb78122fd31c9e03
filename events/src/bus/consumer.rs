//! The consumer loop: a durable JetStream pull consumer whose every batch is applied, together with
//! the consumer's checkpoint, in one Postgres transaction. Positions at or below the checkpoint
//! are skipped, so a redelivery after a crash has no effect twice. Acknowledgement (ack, nak,
//! term) happens in one place, `settle`, after the transaction's outcome is known.

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

use super::{ensure_stream, BusConfig};
use crate::codec::SequencedEvent;

/// Applies events to a read model. Pure decisions live in the projection's own code; this is the
/// seam where its row changes are written, inside the consumer's transaction.
pub trait Projection: Send {
    /// Applies `events` (ascending, all above the checkpoint) within `tx`.
    fn apply<'a>(
        &'a mut self,
        tx: &'a mut PgConnection,
        events: &'a [SequencedEvent],
    ) -> impl Future<Output = anyhow::Result<()>> + Send + 'a;
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
}

impl ConsumerConfig {
    pub fn new(name: impl Into<String>, bus: BusConfig) -> Self {
        Self {
            name: name.into(),
            bus,
            filter_subject: None,
            batch_max: 1_000,
            fetch_wait: Duration::from_millis(500),
        }
    }
}

/// What one step did.
#[derive(Debug, PartialEq, Eq)]
pub enum ConsumerStep {
    /// Applied events and advanced the checkpoint to `checkpoint`.
    Applied { events: usize, checkpoint: u64 },
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

impl<P: Projection> Consumer<P> {
    pub async fn new(
        pool: PgPool,
        js: jetstream::Context,
        config: ConsumerConfig,
        projection: P,
    ) -> anyhow::Result<Self> {
        let checkpoint = load_checkpoint(&pool, &config.name).await?;
        Ok(Self {
            pool,
            js,
            config,
            projection,
            checkpoint,
            pull: None,
            must_rewind: false,
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
        match self.apply(&fresh).await {
            Ok(checkpoint) => {
                self.settle(&messages, Verdict::Ack).await;
                self.checkpoint = checkpoint;
                let consumer = self.config.name.clone();
                metrics::counter!("settle_consumer_applied_total", "consumer" => consumer.clone())
                    .increment(fresh.len() as u64);
                metrics::gauge!("settle_consumer_checkpoint", "consumer" => consumer)
                    .set(checkpoint as f64);
                Ok(ConsumerStep::Applied {
                    events: fresh.len(),
                    checkpoint,
                })
            }
            Err(e) => {
                self.checkpoint = load_checkpoint(&self.pool, &self.config.name)
                    .await
                    .unwrap_or(self.checkpoint);
                self.settle(&messages, Verdict::Rewind).await;
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

    /// One transaction: the projection's changes and the checkpoint, or neither.
    async fn apply(&mut self, fresh: &[SequencedEvent]) -> anyhow::Result<u64> {
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
        let mut tx = self.pool.begin().await?;
        self.projection.apply(&mut tx, fresh).await?;
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
        tx.commit().await?;
        Ok(last)
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
