//! The relay: publishes sequenced events to JetStream so that the stream sequence equals the
//! global position. Each message carries `Nats-Expected-Last-Sequence` = position − 1
//! (fencing), so an out-of-order or duplicate publish is refused by the server instead of
//! silently shifting positions: a duplicate of position n finds the stream already at n. That
//! check is the whole of the deduplication, so no `Nats-Msg-Id` is sent (the server would keep
//! a window of ids for nothing). After any failure — NATS
//! restarted, its data lost, a publish timed out — it reconciles from the stream's tail: the
//! Postgres log is the truth, NATS only has to be refillable.
//!
//! It never loops silently: an event the server will not take (larger than its `max_payload`)
//! cannot be skipped — stream sequence must equal position — so the relay keeps retrying, but
//! `RelayHealth` turns the command-api's `/readyz` red naming the position and the error, and
//! `settle_relay_stalled` / `settle_relay_publish_failures_total` show it.

use std::sync::{Arc, Mutex};
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
    /// The event does not fit in one message of the server: it would close the connection.
    #[error("event at position {position} is {bytes} bytes on the wire; the NATS server's max_payload is {max_payload}")]
    TooLarge {
        position: u64,
        bytes: usize,
        max_payload: usize,
    },
}

/// Room kept in a message for the header the relay adds (the expected last sequence).
pub const HEADER_ALLOWANCE: usize = 256;

/// Why the relay is not getting events onto the bus, as the command-api's `/readyz` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayStall {
    /// The first position not yet published.
    pub position: u64,
    pub error: String,
    /// Failed attempts in a row at this position.
    pub attempts: u64,
}

#[derive(Debug, Default)]
struct HealthState {
    stall: Option<RelayStall>,
    /// Set when the server's `max_payload` is below what the store lets an event be.
    payload_limit: Option<String>,
}

/// The relay's own health, shared with the process's readiness (cheap to clone).
#[derive(Clone, Debug, Default)]
pub struct RelayHealth(Arc<Mutex<HealthState>>);

impl RelayHealth {
    fn state(&self) -> std::sync::MutexGuard<'_, HealthState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A publish or refill failed with `position` the first unpublished one.
    pub fn failed(&self, position: u64, error: &anyhow::Error) {
        metrics::counter!("settle_relay_publish_failures_total").increment(1);
        metrics::gauge!("settle_relay_stalled").set(1.0);
        let mut state = self.state();
        let attempts = match &state.stall {
            Some(s) if s.position == position => s.attempts + 1,
            _ => 1,
        };
        state.stall = Some(RelayStall {
            position,
            error: format!("{error:#}"),
            attempts,
        });
    }

    /// The relay is caught up with what it was given.
    pub fn flowing(&self) {
        let mut state = self.state();
        if state.stall.take().is_some() {
            tracing::info!("relay publishing again");
        }
        metrics::gauge!("settle_relay_stalled").set(0.0);
    }

    pub fn stall(&self) -> Option<RelayStall> {
        self.state().stall.clone()
    }

    pub fn set_payload_limit(&self, problem: Option<String>) {
        self.state().payload_limit = problem;
    }

    /// Readiness: `relay-stalled` names the position and the error; `nats-max-payload` fails
    /// when the server cannot carry an event the store accepts.
    pub fn checks(&self) -> Vec<crate::service::Check> {
        let state = self.state();
        let stalled = match &state.stall {
            None => Ok(()),
            Some(s) => Err(format!(
                "cannot publish position {} ({} attempt(s)): {}",
                s.position, s.attempts, s.error
            )),
        };
        let payload = match &state.payload_limit {
            None => Ok(()),
            Some(problem) => Err(problem.clone()),
        };
        vec![("relay-stalled", stalled), ("nats-max-payload", payload)]
    }
}

pub struct Relay {
    js: jetstream::Context,
    config: BusConfig,
    published: u64,
    observer: Option<RelayObserver>,
    /// The server's `max_payload`, when known: a larger message is refused here, by name,
    /// instead of being sent and costing the connection.
    max_payload: Option<usize>,
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
            max_payload: None,
        }
    }

    pub fn with_max_payload(mut self, max_payload: Option<usize>) -> Self {
        self.max_payload = max_payload;
        self
    }

    pub fn set_max_payload(&mut self, max_payload: Option<usize>) {
        self.max_payload = max_payload;
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
        let mut too_large = None;
        for event in &fresh {
            let wire = event.to_wire();
            if let Some(max_payload) = self.max_payload {
                if wire.len() + HEADER_ALLOWANCE > max_payload {
                    // Publish what precedes it, then report it.
                    too_large = Some(RelayError::TooLarge {
                        position: event.position,
                        bytes: wire.len() + HEADER_ALLOWANCE,
                        max_payload,
                    });
                    break;
                }
            }
            let publish = Publish::build()
                .payload(wire.into())
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
            metrics::counter!("settle_events_published_total").increment(1);
        }
        metrics::gauge!("settle_relay_position").set(self.published as f64);
        if let Some(error) = too_large {
            return Err(error);
        }
        if let Some(observer) = &self.observer {
            observer(batch, Instant::now());
        }
        Ok(())
    }
}
