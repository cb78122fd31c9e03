//! The sequencer/relay leader loop: wait for leadership, then sequence finished events in batches
//! and hand each batch to the relay, which publishes it to JetStream. Sequencing and publishing
//! run side by side (a bounded channel between them), so a slow or absent NATS applies
//! backpressure but never loses anything: the relay refills from the log.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

pub use super::relay::RelayHealth;
use super::relay::{Relay, RelayError, RelayObserver};
use super::{stream_last_sequence, BusConfig};
use crate::codec::SequencedEvent;
use crate::store::{EventStore, Leadership, Sequencer, StepOutcome};

/// Batches in flight between sequencer and relay.
const RELAY_QUEUE_BATCHES: usize = 8;
/// How long a stopping leader waits for the relay to publish what was sequenced.
const RELAY_DRAIN_MAX: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct LeaderConfig {
    pub database_url: String,
    /// Name recorded with the leadership (host and pid, say).
    pub name: String,
    pub bus: BusConfig,
    /// Pause after a step that found nothing.
    pub idle_poll: Duration,
    /// How often a standby tries to take the lead.
    pub standby_poll: Duration,
    /// How often the relay checks, while idle, that JetStream still holds what it published.
    pub stream_check: Duration,
    pub batch_max: u32,
    pub observer: Option<RelayObserver>,
    /// The relay's health (stalls, payload limit), for the process's readiness.
    pub health: RelayHealth,
    /// Where to read the server's `max_payload` at relay start; without it the relay learns of
    /// an oversized event only from the server.
    pub nats_url: Option<String>,
}

impl std::fmt::Debug for LeaderConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderConfig")
            .field("name", &self.name)
            .field("bus", &self.bus)
            .finish()
    }
}

impl LeaderConfig {
    pub fn new(database_url: impl Into<String>, name: impl Into<String>, bus: BusConfig) -> Self {
        Self {
            database_url: database_url.into(),
            name: name.into(),
            bus,
            idle_poll: Duration::from_millis(2),
            standby_poll: Duration::from_millis(250),
            stream_check: Duration::from_secs(1),
            batch_max: crate::store::sequencer::SEQUENCE_BATCH_MAX,
            observer: None,
            health: RelayHealth::default(),
            nats_url: None,
        }
    }
}

/// Positions the leader reached, for health checks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LeaderProgress {
    pub sequenced: u64,
    pub published: u64,
}

/// Runs until `shutdown`: standby until leader, then lead; after losing the lead, stand by again.
pub async fn run(
    pool: PgPool,
    js: jetstream::Context,
    config: LeaderConfig,
    progress: watch::Sender<LeaderProgress>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let leadership = tokio::select! {
            l = Leadership::acquire(&config.database_url, &config.name, config.standby_poll) => l,
            () = shutdown.cancelled() => return Ok(()),
        };
        let leadership = match leadership {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot try for sequencer leadership");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(epoch = leadership.epoch(), name = %config.name, "sequencer leadership acquired");
        match lead(&pool, &js, &config, leadership, &progress, &shutdown).await {
            Ok(()) => return Ok(()),
            Err(e) => tracing::warn!(error = %e, "sequencer leadership ended"),
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

async fn lead(
    pool: &PgPool,
    js: &jetstream::Context,
    config: &LeaderConfig,
    mut leadership: Leadership,
    progress: &watch::Sender<LeaderProgress>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let mut sequencer = Sequencer::resume(pool.clone(), &leadership)
        .await?
        .with_batch_max(config.batch_max);
    let store = EventStore::new(pool.clone());
    let (batches, queue) = mpsc::channel(RELAY_QUEUE_BATCHES);
    let relay_stop = CancellationToken::new();
    let relay = tokio::spawn(relay_loop(
        store,
        js.clone(),
        config.clone(),
        queue,
        progress.clone(),
        relay_stop.clone(),
    ));
    progress.send_modify(|p| p.sequenced = sequencer.last_position());
    metrics::gauge!("settle_sequencer_leader").set(1.0);
    let mut lock_checked = Instant::now();
    let result = loop {
        if shutdown.is_cancelled() {
            break Ok(());
        }
        match sequencer.step().await {
            Ok(StepOutcome::Sequenced(batch)) => {
                metrics::counter!("settle_events_sequenced_total").increment(batch.len() as u64);
                let head = sequencer.last_position();
                metrics::gauge!("settle_sequencer_position").set(head as f64);
                progress.send_modify(|p| p.sequenced = head);
                if batches.send(batch).await.is_err() {
                    break Err(anyhow::anyhow!("relay stopped"));
                }
            }
            Ok(StepOutcome::Idle) => {
                if lock_checked.elapsed() > Duration::from_secs(1) {
                    if !leadership.still_held().await {
                        break Err(anyhow::anyhow!("the leader lock's session ended"));
                    }
                    lock_checked = Instant::now();
                }
                tokio::select! {
                    () = tokio::time::sleep(config.idle_poll) => {}
                    () = shutdown.cancelled() => {}
                }
            }
            Ok(StepOutcome::Fenced) => break Err(anyhow::anyhow!("fenced by a newer sequencer")),
            Err(e) => break Err(e.into()),
        }
    };
    leadership.release().await;
    metrics::gauge!("settle_sequencer_leader").set(0.0);
    // Let the relay publish what was sequenced, then stop it.
    drop(batches);
    if result.is_err() {
        relay_stop.cancel();
    }
    // Draining is bounded: with NATS unreachable the relay would retry for ever, and a stopping
    // process must stop. What it did not publish, the next leader's relay refills from the log.
    let mut relay = relay;
    let drained = tokio::time::timeout(RELAY_DRAIN_MAX, &mut relay).await;
    let joined = match drained {
        Ok(joined) => joined,
        Err(_) => {
            tracing::warn!("relay did not drain in time; stopping it");
            relay_stop.cancel();
            relay.await
        }
    };
    match joined {
        Ok(Ok(())) => result,
        Ok(Err(e)) => result.and(Err(e)),
        Err(e) => result.and(Err(e.into())),
    }
}

async fn relay_loop(
    store: EventStore,
    js: jetstream::Context,
    config: LeaderConfig,
    mut queue: mpsc::Receiver<Vec<SequencedEvent>>,
    progress: watch::Sender<LeaderProgress>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let max_payload = match &config.nats_url {
        Some(url) => server_max_payload(url, &config.health).await,
        None => None,
    };
    let mut relay = Relay::new(js.clone(), config.bus.clone())
        .with_observer(config.observer.clone())
        .with_max_payload(max_payload);
    let health = &config.health;
    reconcile_until_done(&mut relay, &store, &progress, &config, &stop).await?;
    let mut check = tokio::time::interval(config.stream_check);
    loop {
        tokio::select! {
            batch = queue.recv() => {
                let Some(batch) = batch else { return Ok(()) };
                if let Err(e) = relay.publish(&batch).await {
                    tracing::warn!(error = %e, "publish to JetStream failed; reconciling");
                    health.failed(relay.published() + 1, &e.into());
                    reconcile_until_done(&mut relay, &store, &progress, &config, &stop).await?;
                }
                progress.send_modify(|p| p.published = relay.published());
            }
            _ = check.tick() => {
                match stream_last_sequence(&js, &config.bus).await {
                    Ok(last) if last < relay.published() => {
                        reconcile_until_done(&mut relay, &store, &progress, &config, &stop).await?;
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "cannot read JetStream stream state"),
                }
            }
            () = stop.cancelled() => return Ok(()),
        }
    }
}

async fn reconcile_until_done(
    relay: &mut Relay,
    store: &EventStore,
    progress: &watch::Sender<LeaderProgress>,
    config: &LeaderConfig,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let health = &config.health;
    let mut backoff = Duration::from_millis(50);
    loop {
        match relay.reconcile(store).await {
            Ok(()) => {
                progress.send_modify(|p| p.published = relay.published());
                health.flowing();
                return Ok(());
            }
            Err(e) => {
                // Whatever was published before the failure counts.
                progress.send_modify(|p| p.published = relay.published());
                health.failed(relay.published() + 1, &e);
                if matches!(
                    e.downcast_ref::<RelayError>(),
                    Some(RelayError::ForeignStream { .. })
                ) {
                    return Err(e);
                }
                tracing::warn!(error = %format!("{e:#}"), position = relay.published() + 1,
                    retry_in_ms = backoff.as_millis() as u64, "cannot reconcile JetStream");
                let too_large = e.chain().any(|c| {
                    matches!(
                        c.downcast_ref::<RelayError>(),
                        Some(RelayError::TooLarge { .. })
                    )
                });
                if let (true, Some(url)) = (too_large, &config.nats_url) {
                    // The operator may have raised the server's limit: look again.
                    if let Some(max_payload) = server_max_payload(url, health).await {
                        relay.set_max_payload(Some(max_payload));
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = stop.cancelled() => return Ok(()),
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Reads the server's `max_payload` (a connection of its own: the jetstream context does not
/// expose its client's server info) and flags readiness when it is below the largest event the
/// store accepts, since such an event could never be published.
async fn server_max_payload(nats_url: &str, health: &RelayHealth) -> Option<usize> {
    let connect = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(super::server_urls(nats_url));
    let client = match tokio::time::timeout(Duration::from_secs(10), connect).await {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read the NATS server's max_payload");
            return None;
        }
        Err(_) => {
            tracing::warn!("cannot read the NATS server's max_payload: connect timed out");
            return None;
        }
    };
    let max_payload = client.server_info().max_payload;
    drop(client);
    let needed = crate::domain::limits::MAX_EVENT_BYTES + super::relay::HEADER_ALLOWANCE;
    health.set_payload_limit(payload_limit_problem(max_payload, needed));
    if max_payload < needed {
        tracing::error!(
            max_payload,
            needed,
            "the NATS server's max_payload is smaller than the largest event the store accepts"
        );
    } else {
        tracing::info!(max_payload, "NATS server max_payload");
    }
    (max_payload > 0).then_some(max_payload)
}

/// Why a server's `max_payload` cannot carry every event, if it cannot. Pure.
fn payload_limit_problem(max_payload: usize, needed: usize) -> Option<String> {
    (max_payload < needed).then(|| {
        format!(
            "NATS max_payload is {max_payload} bytes; an event the store accepts may need {needed}"
        )
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_max_payload_below_the_event_cap_is_flagged() {
        assert!(super::payload_limit_problem(1024 * 1024, 4 * 1024 * 1024 + 256).is_some());
        assert!(super::payload_limit_problem(8 * 1024 * 1024, 4 * 1024 * 1024 + 256).is_none());
    }
}
