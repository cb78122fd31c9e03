//! The relay: publishes sequenced events to JetStream so that the stream sequence equals the
//! global position. Each message carries `Nats-Msg-Id` = event id (dedup) and
//! `Nats-Expected-Last-Sequence` = position − 1 (fencing), so an out-of-order or duplicate publish
//! is refused by the server instead of silently shifting positions. After any failure — NATS
//! restarted, its data lost, a publish timed out — it reconciles from the stream's tail: the
//! Postgres log is the truth, NATS only has to be refillable.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use async_nats::jetstream::{self, context::Publish};

use super::{stream_last_sequence, BusConfig};
use crate::codec::SequencedEvent;
use crate::store::EventStore;

/// Events read from the log per query while refilling the stream.
const REFILL_PAGE_EVENTS: u32 = 5_000;

/// Called after each batch is acknowledged by JetStream (for metrics and benchmarks).
pub type RelayObserver = Arc<dyn Fn(&[SequencedEvent], Instant) + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The batch does not follow what was published: reconcile first.
    #[error("batch starts at {found}, expected {expected}")]
    Gap { expected: u64, found: u64 },
    #[error("JetStream stored position {position} at sequence {sequence}")]
    SequenceMismatch { position: u64, sequence: u64 },
    /// The stream holds more than the log: it was filled from another event store.
    #[error("stream {stream} holds {last} messages but the event log only {head}: it belongs to another event store")]
    ForeignStream {
        stream: String,
        last: u64,
        head: u64,
    },
    #[error("publish failed: {0}")]
    Publish(#[from] async_nats::jetstream::context::PublishError),
}

pub struct Relay {
    js: jetstream::Context,
    config: BusConfig,
    published: u64,
    observer: Option<RelayObserver>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("config", &self.config)
            .field("published", &self.published)
            .finish()
    }
}

impl Relay {
    pub fn new(js: jetstream::Context, config: BusConfig) -> Self {
        Self {
            js,
            config,
            published: 0,
            observer: None,
        }
    }

    pub fn with_observer(mut self, observer: Option<RelayObserver>) -> Self {
        self.observer = observer;
        self
    }

    /// The last position JetStream acknowledged.
    pub fn published(&self) -> u64 {
        self.published
    }

    /// Reads the stream's tail and republishes every sequenced event after it.
    pub async fn reconcile(&mut self, store: &EventStore) -> anyhow::Result<()> {
        let last = stream_last_sequence(&self.js, &self.config).await?;
        let head = store.log_head().await?;
        if last > head {
            bail!(RelayError::ForeignStream {
                stream: self.config.stream.clone(),
                last,
                head
            });
        }
        if last < self.published {
            tracing::warn!(stream = %self.config.stream, last, published = self.published, "JetStream lost events; refilling");
        }
        self.published = last;
        while self.published < head {
            let page = store
                .read_log(self.published, head, REFILL_PAGE_EVENTS)
                .await?;
            if page.is_empty() {
                bail!("event log has no position {}", self.published + 1);
            }
            self.publish(&page).await.context("refilling JetStream")?;
        }
        Ok(())
    }

    /// Publishes a contiguous batch (positions already published are skipped), pipelined, and
    /// waits for every acknowledgement.
    pub async fn publish(&mut self, batch: &[SequencedEvent]) -> Result<(), RelayError> {
        let fresh: Vec<&SequencedEvent> = batch
            .iter()
            .filter(|e| e.position > self.published)
            .collect();
        let Some(first) = fresh.first() else {
            return Ok(());
        };
        if first.position != self.published + 1 {
            return Err(RelayError::Gap {
                expected: self.published + 1,
                found: first.position,
            });
        }
        let mut acks = Vec::with_capacity(fresh.len());
        for event in &fresh {
            let publish = Publish::build()
                .payload(event.to_wire().into())
                .message_id(event.stored.event_id.to_string())
                .expected_last_sequence(event.position - 1);
            let ack = self
                .js
                .send_publish(self.config.subject(&event.stored.stream), publish)
                .await?;
            acks.push((event.position, ack));
        }
        for (position, ack) in acks {
            let ack = ack.await?;
            if ack.sequence != position {
                return Err(RelayError::SequenceMismatch {
                    position,
                    sequence: ack.sequence,
                });
            }
            self.published = position;
        }
        metrics::counter!("settle_events_published_total").increment(fresh.len() as u64);
        metrics::gauge!("settle_relay_position").set(self.published as f64);
        if let Some(observer) = &self.observer {
            observer(batch, Instant::now());
        }
        Ok(())
    }
}
