//! The clock-driven half of the finalizer: claims due rows (lease, `FOR UPDATE SKIP LOCKED`)
//! and runs their steps through the one write path. A thin loop around `step`, which returns
//! what it did; tests drive `step` with their own clock.

use std::time::Duration;

use events::domain::event::Timestamp;
use std::collections::HashMap;

use events::lifecycle::{run_batch, Step};
use events::store::{to_datetime, EventStore, ExecuteError};
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
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch_max: 2_000,
            lease: Duration::from_secs(30),
            group_max: 100,
            parallel_max: 8,
            idle_poll: Duration::from_millis(50),
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
}

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
        }
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
                step: if step == "finalize" {
                    Step::Finalize
                } else {
                    Step::Execute
                },
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

    /// Steps until `shutdown`, sleeping when nothing is due.
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
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(self.config.idle_poll) => {}
                }
            }
        }
    }
}
