//! The clock-driven half of the finalizer: claims due rows (lease, `FOR UPDATE SKIP LOCKED`)
//! and runs their steps through the one write path. A thin loop around `step`, which returns
//! what it did; tests drive `step` with their own clock.

use std::time::Duration;

use events::domain::event::Timestamp;
use std::collections::HashMap;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use events::domain::settlement::Settlement;
use events::domain::stream::of;
use events::domain::StreamName;
use events::lifecycle::{self, run_batch, Step};
use events::store::{from_datetime, load, to_datetime, EventStore, ExecuteError};
use futures::StreamExt;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Most rows claimed per step.
    pub batch_max: u32,
    /// How long a claim keeps other finalizers off a row.
    pub lease: Duration,
    /// Most settlements of one partner decided in one command.
    pub group_max: usize,
    /// Commands run at once.
    pub parallel_max: usize,
    /// Sleep between steps that found nothing due.
    pub idle_poll: Duration,
    /// How far ahead of their deadline due settlements have their streams loaded into the
    /// store's cache (`warm`), so that when they fall due their commands need no read.
    pub warm_ahead: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch_max: 2_000,
            lease: Duration::from_secs(30),
            group_max: 100,
            parallel_max: 8,
            idle_poll: Duration::from_millis(50),
            warm_ahead: Duration::from_secs(5),
        }
    }
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkDone {
    pub claimed: usize,
    pub finalized: usize,
    pub executed: usize,
    /// Steps the settlement refused (not due yet, already done): harmless repeats.
    pub refused: usize,
    pub errors: usize,
}

#[derive(Clone, Debug)]
pub struct Worker {
    store: EventStore,
    pool: PgPool,
    config: WorkerConfig,
    /// Rows whose streams were loaded ahead, by settlement and due time (`warm`).
    warmed: Arc<Mutex<HashSet<(Uuid, i64)>>>,
}

/// Most rows remembered as warmed; the set starts over past it (a row warmed twice costs one
/// more read).
const WARMED_MAX: usize = 100_000;

struct Claimed {
    settlement_id: Uuid,
    partner: Option<Uuid>,
    step: Step,
}

impl Worker {
    pub fn new(store: EventStore, config: WorkerConfig) -> Self {
        let pool = store.pool().clone();
        Self {
            store,
            pool,
            config,
            warmed: Arc::default(),
        }
    }

    /// Loads into the store's cache the streams of settlements falling due by `until` that are
    /// not warmed yet: their settlement streams, then every stream their step will decide on
    /// (`lifecycle::streams`). Only a cache fill: the step still claims, and its append checks
    /// every version, so state that moves in between costs a read, never a wrong decision.
    /// Returns how many rows it warmed.
    pub async fn warm(&self, now: Timestamp, until: Timestamp) -> Result<usize, ExecuteError> {
        let rows: Vec<(Uuid, chrono::DateTime<chrono::Utc>, String)> = sqlx::query_as(
            "SELECT settlement_id, due_at, step FROM finalizer_due
             WHERE due_at <= $1 AND (leased_until IS NULL OR leased_until <= $2)
             ORDER BY due_at LIMIT $3",
        )
        .bind(to_datetime(until))
        .bind(to_datetime(now))
        .bind(i64::from(self.config.batch_max) * 5)
        .fetch_all(&self.pool)
        .await?;
        let fresh: Vec<(Uuid, Timestamp, Step)> = {
            let Ok(mut warmed) = self.warmed.lock() else {
                return Ok(0);
            };
            if warmed.len() > WARMED_MAX {
                warmed.clear();
            }
            rows.into_iter()
                .filter(|(id, due, _)| warmed.insert((*id, due.timestamp_micros())))
                .map(|(id, due, step)| (id, from_datetime(due), step_of(&step)))
                .collect()
        };
        if fresh.is_empty() {
            return Ok(0);
        }
        for chunk in fresh.chunks(self.config.batch_max.max(1) as usize) {
            let heads: Vec<StreamName> =
                chunk.iter().map(|(id, _, _)| of::settlement(*id)).collect();
            let loaded = load(&self.store, &heads).await?;
            let mut streams: Vec<StreamName> = Vec::new();
            for (id, due, step) in chunk {
                let settlement: Settlement = loaded.aggregate(&of::settlement(*id));
                if let Some(record) = settlement.record() {
                    streams.extend(lifecycle::streams(record, *step, *due));
                }
            }
            streams.sort();
            streams.dedup();
            load(&self.store, &streams).await?;
        }
        Ok(fresh.len())
    }

    async fn claim(&self, now: Timestamp) -> Result<Vec<Claimed>, sqlx::Error> {
        let now_at = to_datetime(now);
        let until = now_at + self.config.lease;
        let rows: Vec<(Uuid, Option<Uuid>, String)> = sqlx::query_as(
            "UPDATE finalizer_due d SET leased_until = $2, attempts = d.attempts + 1
             FROM (SELECT settlement_id FROM finalizer_due
                   WHERE due_at <= $1 AND (leased_until IS NULL OR leased_until <= $1)
                   ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) due
             WHERE d.settlement_id = due.settlement_id
             RETURNING d.settlement_id, d.partner_enterprise_id, d.step",
        )
        .bind(now_at)
        .bind(until)
        .bind(i64::from(self.config.batch_max))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(settlement_id, partner, step)| Claimed {
                settlement_id,
                partner,
                step: step_of(&step),
            })
            .collect())
    }

    /// Runs the steps of one group of rows (one partner's) as one command.
    async fn work(&self, group: Vec<Claimed>, now: Timestamp) -> Result<WorkDone, ExecuteError> {
        let steps: Vec<(Uuid, Step)> = group.iter().map(|c| (c.settlement_id, c.step)).collect();
        let outcome = run_batch(&self.store, &steps, now).await?;
        let mut done = WorkDone {
            claimed: group.len(),
            ..WorkDone::default()
        };
        for (_, step) in &outcome.done {
            match step {
                Step::Finalize => done.finalized += 1,
                Step::Execute => done.executed += 1,
            }
        }
        for (settlement_id, reason) in &outcome.refused {
            tracing::debug!(%settlement_id, %reason, "step refused");
        }
        done.refused = outcome.refused.len();
        Ok(done)
    }

    /// Groups claimed rows by partner (rows without one alone), at most `group_max` a group.
    fn groups(&self, claimed: Vec<Claimed>) -> Vec<Vec<Claimed>> {
        let mut by_partner: HashMap<Option<Uuid>, Vec<Claimed>> = HashMap::new();
        let mut groups = Vec::new();
        for c in claimed {
            match c.partner {
                None => groups.push(vec![c]),
                Some(_) => by_partner.entry(c.partner).or_default().push(c),
            }
        }
        for (_, mut rows) in by_partner {
            while !rows.is_empty() {
                let rest = rows.split_off(rows.len().min(self.config.group_max.max(1)));
                groups.push(rows);
                rows = rest;
            }
        }
        groups
    }

    /// Claims what is due at `now` and runs it. Returns what it did (all zero when idle).
    pub async fn step(&self, now: Timestamp) -> Result<WorkDone, sqlx::Error> {
        let claimed = self.claim(now).await?;
        let mut total = WorkDone::default();
        let mut results = futures::stream::iter(self.groups(claimed))
            .map(|group| {
                let size = group.len();
                async move { (size, self.work(group, now).await) }
            })
            .buffer_unordered(self.config.parallel_max);
        while let Some((size, result)) = results.next().await {
            match result {
                Ok(done) => {
                    total.claimed += done.claimed;
                    total.finalized += done.finalized;
                    total.executed += done.executed;
                    total.refused += done.refused;
                }
                Err(e) => {
                    // The leases lapse and another step (here or elsewhere) tries again.
                    tracing::warn!(error = %e, settlements = size, "settlement steps failed");
                    total.claimed += size;
                    total.errors += size;
                }
            }
        }
        metrics::counter!("settle_finalizer_finalized_total").increment(total.finalized as u64);
        metrics::counter!("settle_finalizer_executed_total").increment(total.executed as u64);
        Ok(total)
    }

    /// Steps until `shutdown`, sleeping when nothing is due; while idle, warms what falls due
    /// within `warm_ahead`.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let now = Timestamp(chrono::Utc::now().timestamp_micros());
            let idle = match self.step(now).await {
                Ok(done) => done.claimed == 0,
                Err(e) => {
                    tracing::warn!(error = %e, "claiming due work failed");
                    true
                }
            };
            if idle {
                if !self.config.warm_ahead.is_zero() {
                    let ahead =
                        i64::try_from(self.config.warm_ahead.as_micros()).unwrap_or(i64::MAX);
                    let until = Timestamp(now.0.saturating_add(ahead));
                    if let Err(e) = self.warm(now, until).await {
                        tracing::warn!(error = %e, "loading settlements falling due failed");
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(self.config.idle_poll) => {}
                }
            }
        }
    }
}

fn step_of(step: &str) -> Step {
    if step == "finalize" {
        Step::Finalize
    } else {
        Step::Execute
    }
}
