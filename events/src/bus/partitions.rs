//! Partitioned consumer groups (docs/decisions/0009-partitioned-projectors.md): a group is split
//! into P partitions, each a `Consumer` of its own (`<group>-p<k>`: checkpoint, parked events,
//! durable), and any number of instances share the partitions through leases in Postgres.
//!
//! Each instance runs one lease loop per group. Every quarter of the lease period it says it is
//! alive, renews the leases it holds and re-plans: with N live instances, ordered by name, the
//! first P mod N hold ⌈P / N⌉ partitions and the others ⌊P / N⌋; each releases its surplus
//! (after its consumer has finished its step) and takes free or expired ones up to its share. A lease lives three quarters of the lease period after
//! its last renewal, so the partitions of an instance that dies are free, and taken by the next
//! tick of another, within one lease period; one that joins gets its share within half of one.
//!
//! An instance reads the stream once for all the partitions it holds (an ephemeral consumer,
//! no acknowledgements) and each partition applies its own events in a transaction of its own.
//!
//! Correctness never rests on the leases: every batch moves its partition's checkpoint with a
//! compare-and-set in the transaction that applies it, so even two owners at once (one that
//! lost its lease and does not know it yet) apply every position once. Leases only keep
//! instances from fighting over the same partitions.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, consumer::DeliverPolicy};
use futures::StreamExt;
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::consumer::{Consumer, Projection};
use super::BusConfig;
use crate::codec::SequencedEvent;

/// A consumer group and how many partitions it is split into.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    pub group: String,
    pub partitions: u32,
}

impl GroupSpec {
    pub fn new(group: impl Into<String>, partitions: u32) -> Self {
        Self {
            group: group.into(),
            partitions,
        }
    }

    /// Every partition's consumer name, in partition order.
    pub fn consumers(&self) -> Vec<String> {
        (0..self.partitions)
            .map(|k| partition_consumer(&self.group, k))
            .collect()
    }
}

/// The consumer (checkpoint, parked events, JetStream durable) name of partition `k`. NATS durable
/// names may not hold `.`, so the separator is `-`.
pub fn partition_consumer(group: &str, partition: u32) -> String {
    format!("{group}-p{partition}")
}

/// Largest number of partitions a group may have (each is a durable consumer of its own).
pub const PARTITIONS_MAX: u32 = 256;

/// How leases are kept.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// The lease period: a dead instance's partitions are taken over within it.
    pub period: Duration,
    /// This instance's name, unique among the live instances (host, pid and a random part).
    pub instance: String,
}

impl LeaseSettings {
    /// How long a renewed lease lasts: three quarters of the period, so that the first tick of
    /// another instance after it runs out still falls within the period.
    pub fn ttl(&self) -> Duration {
        self.period.mul_f64(0.75)
    }

    /// How often an instance renews, and re-plans.
    pub fn tick(&self) -> Duration {
        self.period / 4
    }
}

/// A name for this process among the instances of its groups.
pub fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "local".to_owned());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &random[..8])
}

/// One partition's lease as a planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub partition: u32,
    pub owner: Option<String>,
    pub lease_until: Option<DateTime<Utc>>,
}

/// What one instance does with the partitions at one tick.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Held and still its own: renew.
    pub renew: Vec<u32>,
    /// Free or expired: take (start a consumer, from the checkpoint).
    pub take: Vec<u32>,
    /// Held beyond its fair share: renew now, release once its consumer has stopped.
    pub release: Vec<u32>,
}

/// The share of `partitions` of instance `me` among the live `instances` (names, itself
/// included): every instance computes the same split — the first P mod N by name hold one
/// more than ⌊P / N⌋ — so they converge without talking to each other. Pure.
pub fn fair_share(partitions: u32, instances: &[String], me: &str) -> usize {
    let mut names: Vec<&str> = instances.iter().map(String::as_str).collect();
    if !names.contains(&me) {
        names.push(me);
    }
    names.sort_unstable();
    names.dedup();
    let n = names.len();
    let (floor, extra) = (partitions as usize / n, partitions as usize % n);
    let rank = names.iter().position(|x| *x == me).unwrap_or(n);
    floor + usize::from(rank < extra)
}

/// Plans one tick of instance `me`, given every lease of the group, the live instances' names
/// (itself included) and the time. Keeps the lowest-numbered of its own partitions, releases
/// the rest beyond its share, and takes free ones (lowest first) up to its share. Pure.
pub fn plan(leases: &[Lease], me: &str, instances: &[String], now: DateTime<Utc>) -> Plan {
    let share = fair_share(leases.len() as u32, instances, me);
    let live = |l: &Lease| l.lease_until.is_some_and(|until| until > now);
    let mut mine: Vec<u32> = leases
        .iter()
        .filter(|l| l.owner.as_deref() == Some(me) && live(l))
        .map(|l| l.partition)
        .collect();
    mine.sort_unstable();
    let mut free: Vec<u32> = leases
        .iter()
        .filter(|l| l.owner.is_none() || !live(l))
        .map(|l| l.partition)
        .collect();
    free.sort_unstable();
    let keep = mine.len().min(share);
    let take = free.into_iter().take(share - keep).collect();
    Plan {
        renew: mine.clone(),
        take,
        release: mine[keep..].to_vec(),
    }
}

/// Creates the group's partition rows (and checks that an existing group has the same P).
pub async fn register_group(pool: &PgPool, spec: &GroupSpec) -> anyhow::Result<()> {
    if spec.partitions == 0 || spec.partitions > PARTITIONS_MAX {
        bail!(
            "{} partitions for {}: must be 1 to {PARTITIONS_MAX}",
            spec.partitions,
            spec.group
        );
    }
    sqlx::query(
        "INSERT INTO consumer_partitions (consumer_group, partition, partitions, consumer)
         SELECT $1, k, $2, $1 || '-p' || k FROM generate_series(0, $2 - 1) AS k
         ON CONFLICT DO NOTHING",
    )
    .bind(&spec.group)
    .bind(spec.partitions as i32)
    .execute(pool)
    .await?;
    let (rows, others): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE partitions <> $2) FROM consumer_partitions
         WHERE consumer_group = $1",
    )
    .bind(&spec.group)
    .bind(spec.partitions as i32)
    .fetch_one(pool)
    .await?;
    if rows != i64::from(spec.partitions) || others != 0 {
        let stored: Option<i32> = sqlx::query_scalar(
            "SELECT max(partitions) FROM consumer_partitions WHERE consumer_group = $1",
        )
        .bind(&spec.group)
        .fetch_one(pool)
        .await?;
        bail!(
            "consumer group {} has {} partitions in the database, this instance is configured with {}; \
             run every instance with the same SETTLE_PROJECTOR_PARTITIONS (changing it: docs/decisions/0009)",
            spec.group,
            stored.unwrap_or_default(),
            spec.partitions
        );
    }
    Ok(())
}

/// Everything one tick decided and did in the database.
struct Ticked {
    taken: Vec<u32>,
    /// Held beyond the share: to release once the reader no longer applies them.
    to_release: Vec<u32>,
    /// Partitions this instance holds after the tick (renewed or taken), surplus included.
    held: Vec<u32>,
}

/// One tick in one transaction: say this instance is alive, lock the group's leases, plan,
/// renew and take.
async fn tick(pool: &PgPool, spec: &GroupSpec, lease: &LeaseSettings) -> anyhow::Result<Ticked> {
    let mut tx = pool.begin().await?;
    let ttl_ms = lease.ttl().as_millis() as f64;
    let period_ms = lease.period.as_millis() as f64;
    sqlx::query(
        "INSERT INTO consumer_instances (consumer_group, instance, alive_until, started_at)
         VALUES ($1, $2, now() + make_interval(secs => $3 / 1000.0), now())
         ON CONFLICT (consumer_group, instance) DO UPDATE SET alive_until = EXCLUDED.alive_until",
    )
    .bind(&spec.group)
    .bind(&lease.instance)
    .bind(period_ms)
    .execute(&mut *tx)
    .await?;
    // Instances gone for a long time are forgotten (their leases ran out long ago).
    sqlx::query(
        "DELETE FROM consumer_instances WHERE consumer_group = $1
           AND alive_until < now() - make_interval(secs => $2 / 1000.0 * 10)",
    )
    .bind(&spec.group)
    .bind(period_ms)
    .execute(&mut *tx)
    .await?;
    let rows: Vec<(i32, Option<String>, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT partition, owner, lease_until FROM consumer_partitions WHERE consumer_group = $1
         ORDER BY partition FOR UPDATE",
    )
    .bind(&spec.group)
    .fetch_all(&mut *tx)
    .await?;
    let (instances, now): (Vec<String>, DateTime<Utc>) = sqlx::query_as(
        "SELECT coalesce(array_agg(instance ORDER BY instance), '{}'), now() FROM consumer_instances
         WHERE consumer_group = $1 AND alive_until > now()",
    )
    .bind(&spec.group)
    .fetch_one(&mut *tx)
    .await?;
    let leases: Vec<Lease> = rows
        .into_iter()
        .map(|(partition, owner, lease_until)| Lease {
            partition: partition as u32,
            owner,
            lease_until,
        })
        .collect();
    let decided = plan(&leases, &lease.instance, &instances, now);
    let renew: Vec<i32> = decided.renew.iter().map(|p| *p as i32).collect();
    sqlx::query(
        "UPDATE consumer_partitions SET lease_until = now() + make_interval(secs => $3 / 1000.0)
         WHERE consumer_group = $1 AND partition = ANY($2)",
    )
    .bind(&spec.group)
    .bind(&renew)
    .bind(ttl_ms)
    .execute(&mut *tx)
    .await?;
    if !decided.take.is_empty() {
        let take: Vec<i32> = decided.take.iter().map(|p| *p as i32).collect();
        sqlx::query(
            "WITH before AS (
                SELECT p.partition, p.owner, p.lease_until,
                       coalesce((SELECT c.position FROM consumer_checkpoints c WHERE c.consumer = p.consumer), 0) AS checkpoint
                FROM consumer_partitions p WHERE p.consumer_group = $1 AND p.partition = ANY($2)),
             taken AS (
                UPDATE consumer_partitions p SET owner = $3, acquired_at = now(),
                       lease_until = now() + make_interval(secs => $4 / 1000.0)
                WHERE p.consumer_group = $1 AND p.partition = ANY($2)
                RETURNING p.partition)
             INSERT INTO consumer_lease_log
                 (consumer_group, partition, instance, kind, at, previous_owner, previous_lease_until, checkpoint)
             SELECT $1, b.partition, $3, 'acquired', now(), b.owner, b.lease_until, b.checkpoint
             FROM before b JOIN taken t ON t.partition = b.partition",
        )
        .bind(&spec.group)
        .bind(&take)
        .bind(&lease.instance)
        .bind(ttl_ms)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let mut held = decided.renew.clone();
    held.extend(&decided.take);
    Ok(Ticked {
        taken: decided.take,
        to_release: decided.release,
        held,
    })
}

/// Gives up `partitions` (their consumers have stopped), so others may take them at once.
async fn release(
    pool: &PgPool,
    spec: &GroupSpec,
    lease: &LeaseSettings,
    partitions: &[u32],
) -> anyhow::Result<()> {
    if partitions.is_empty() {
        return Ok(());
    }
    let list: Vec<i32> = partitions.iter().map(|p| *p as i32).collect();
    sqlx::query(
        "WITH released AS (
            UPDATE consumer_partitions p SET owner = NULL, lease_until = NULL
            WHERE p.consumer_group = $1 AND p.partition = ANY($2) AND p.owner = $3
            RETURNING p.partition, p.consumer)
         INSERT INTO consumer_lease_log (consumer_group, partition, instance, kind, at, checkpoint)
         SELECT $1, r.partition, $3, 'released', now(),
                coalesce((SELECT c.position FROM consumer_checkpoints c WHERE c.consumer = r.consumer), 0)
         FROM released r",
    )
    .bind(&spec.group)
    .bind(&list)
    .bind(&lease.instance)
    .execute(pool)
    .await?;
    Ok(())
}

/// How a group runs on this instance.
#[derive(Clone, Debug)]
pub struct GroupRun {
    pub spec: GroupSpec,
    pub lease: LeaseSettings,
    pub bus: BusConfig,
    /// Most events read (and applied by each partition) per step.
    pub batch_max: usize,
    /// How long a read waits for the first message.
    pub fetch_wait: Duration,
}

fn set_owned_gauge(group: &str, owned: usize) {
    metrics::gauge!("settle_consumer_partitions_owned", "group" => group.to_owned())
        .set(owned as f64);
}

/// `settle_consumer_partition_held{consumer, instance}`: 1 for each partition this instance
/// applies, 0 for the others (summed over instances, who holds what).
fn set_held_gauges(spec: &GroupSpec, instance: &str, held: &BTreeSet<u32>) {
    for partition in 0..spec.partitions {
        metrics::gauge!(
            "settle_consumer_partition_held",
            "consumer" => partition_consumer(&spec.group, partition),
            "instance" => instance.to_owned()
        )
        .set(if held.contains(&partition) { 1.0 } else { 0.0 });
    }
}

/// Runs this instance's share of the group's partitions until `shutdown`. Two tasks: the lease
/// loop (renews, plans, takes and releases — never held up by an apply) and the reader, which
/// reads the stream once for all the partitions this instance holds and has each of them apply
/// its own events (`Consumer::apply_batch`, made by `make` for a partition number and its
/// consumer name), concurrently. A partition is released only once the reader has stopped
/// applying it. On shutdown the reader finishes its step, then every lease is released and the
/// instance leaves, so the others take over at their next tick.
pub async fn run_group<P, F, Fut>(
    pool: PgPool,
    js: jetstream::Context,
    run: GroupRun,
    make: F,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    P: Projection + 'static,
    F: Fn(u32, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Consumer<P>>> + Send + 'static,
{
    let (spec, lease) = (run.spec.clone(), run.lease.clone());
    register_group(&pool, &spec).await?;
    let group = spec.group.clone();
    set_owned_gauge(&group, 0);
    let (desired, desired_rx) = watch::channel(BTreeSet::new());
    let (applied_tx, applied) = watch::channel(BTreeSet::new());
    let reader_stop = CancellationToken::new();
    let reader = tokio::spawn(read_partitions(
        js,
        run,
        make,
        desired_rx,
        applied_tx,
        reader_stop.clone(),
    ));
    let mut last_renewal = Instant::now();
    loop {
        match tick(&pool, &spec, &lease).await {
            Ok(ticked) => {
                last_renewal = Instant::now();
                let keep: BTreeSet<u32> = ticked
                    .held
                    .iter()
                    .filter(|p| !ticked.to_release.contains(p))
                    .copied()
                    .collect();
                for partition in &ticked.taken {
                    tracing::info!(consumer = %partition_consumer(&group, *partition), instance = %lease.instance, "partition acquired");
                }
                desired.send_replace(keep);
                // Released once the reader no longer applies them (it finishes its step first);
                // until then they are renewed, and released at a later tick.
                let stopped: Vec<u32> = {
                    let applying = applied.borrow();
                    ticked
                        .to_release
                        .iter()
                        .filter(|p| !applying.contains(p))
                        .copied()
                        .collect()
                };
                if !stopped.is_empty() {
                    match release(&pool, &spec, &lease, &stopped).await {
                        Ok(()) => {
                            tracing::info!(group = %group, released = ?stopped, "partitions released to rebalance")
                        }
                        Err(e) => {
                            tracing::warn!(group = %group, error = %e, "cannot release partitions; they expire instead")
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "lease tick failed");
                if last_renewal.elapsed() >= lease.ttl() {
                    // Our leases have run out by now: another instance may hold them.
                    if !desired.borrow().is_empty() {
                        tracing::warn!(group = %group, "leases not renewed in time; applying nothing until they are");
                    }
                    desired.send_replace(BTreeSet::new());
                }
            }
        }
        let held = applied.borrow().clone();
        set_owned_gauge(&group, held.len());
        set_held_gauges(&spec, &lease.instance, &held);
        tokio::select! {
            () = tokio::time::sleep(lease.tick()) => {}
            () = shutdown.cancelled() => break,
        }
    }
    // Stop applying (the step in progress finishes), then give everything up.
    desired.send_replace(BTreeSet::new());
    let mut applied = applied;
    let drained = tokio::time::timeout(SHUTDOWN_DRAIN_MAX, applied.wait_for(BTreeSet::is_empty))
        .await
        .is_ok_and(|r| r.is_ok());
    if !drained {
        tracing::warn!(group = %group, "partition reader did not stop in time");
    }
    reader_stop.cancel();
    match reader.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            tracing::warn!(group = %group, error = %e, "partition reader ended with an error")
        }
        Err(e) => tracing::error!(group = %group, error = %e, "partition reader panicked"),
    }
    let all: Vec<u32> = (0..spec.partitions).collect();
    release(&pool, &spec, &lease, &all)
        .await
        .context("releasing partitions at shutdown")?;
    sqlx::query("DELETE FROM consumer_instances WHERE consumer_group = $1 AND instance = $2")
        .bind(&group)
        .bind(&lease.instance)
        .execute(&pool)
        .await?;
    set_owned_gauge(&group, 0);
    set_held_gauges(&spec, &lease.instance, &BTreeSet::new());
    Ok(())
}

/// How long a shutdown waits for the reader to finish its step.
const SHUTDOWN_DRAIN_MAX: Duration = Duration::from_secs(30);
/// Longest pause after a failed step of the reader.
const READER_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// An ephemeral reader left behind (a crash) is removed by the server after this long idle.
const READER_INACTIVE: Duration = Duration::from_secs(60);

/// A NATS consumer name made of `text` (no `.`, `*`, `>` or white space).
fn nats_name(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The reader of one instance's partitions of a group: one ephemeral pull consumer of the whole
/// stream (no acknowledgements: each partition's checkpoint in Postgres is the truth), started
/// at the lowest checkpoint of the partitions held and recreated there whenever a partition is
/// added, a read fails, positions are not dense, or a partition's batch fails (the partitions
/// that applied it skip it on the way back).
async fn read_partitions<P, F, Fut>(
    js: jetstream::Context,
    run: GroupRun,
    make: F,
    mut desired: watch::Receiver<BTreeSet<u32>>,
    applied: watch::Sender<BTreeSet<u32>>,
    stop: CancellationToken,
) -> anyhow::Result<()>
where
    P: Projection + 'static,
    F: Fn(u32, String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = anyhow::Result<Consumer<P>>> + Send + 'static,
{
    let group = run.spec.group.clone();
    let mut owned: BTreeMap<u32, Consumer<P>> = BTreeMap::new();
    let mut reader = Reader::new(&js, &run);
    let mut backoff = Duration::from_millis(100);
    // The batch read while the one before it was applied (reading overlaps applying).
    let mut prefetched: Option<anyhow::Result<Vec<SequencedEvent>>> = None;
    while !stop.is_cancelled() {
        let want = desired.borrow_and_update().clone();
        owned.retain(|k, _| want.contains(k));
        let mut added = false;
        let missing: Vec<u32> = want
            .iter()
            .filter(|p| !owned.contains_key(p))
            .copied()
            .collect();
        for partition in &missing {
            let name = partition_consumer(&group, *partition);
            match make(*partition, name.clone()).await {
                Ok(consumer) => {
                    owned.insert(*partition, consumer);
                    added = true;
                }
                // Retried at the next step, while the lease is held.
                Err(e) => tracing::warn!(consumer = %name, error = %e, "cannot start partition"),
            }
        }
        let now: BTreeSet<u32> = owned.keys().copied().collect();
        let changed = *applied.borrow() != now;
        if changed {
            applied.send_replace(now);
        }
        let Some(lowest) = owned.values().map(Consumer::checkpoint).min() else {
            reader.close().await;
            prefetched = None;
            tokio::select! {
                _ = desired.changed() => {}
                () = stop.cancelled() => {}
            }
            continue;
        };
        // The position before the next event the reader hands out: a prefetched batch's first
        // one, or the reader's cursor. Past the lowest checkpoint, something was not applied
        // (a partition was added, or a batch failed): read again from the checkpoints.
        let next_after = match &prefetched {
            Some(Ok(events)) if !events.is_empty() => Some(events[0].position - 1),
            Some(Err(_)) => None,
            _ => reader.cursor(),
        };
        if added || next_after.is_none_or(|c| c > lowest) {
            reader.close().await;
            prefetched = None;
        }
        let read = match prefetched.take() {
            Some(read) => read,
            None => reader.read(lowest).await,
        };
        let events = match read {
            Ok(events) => events,
            Err(e) => {
                tracing::warn!(group = %group, error = %e, "partition reader failed; reading again from the checkpoints");
                reader.close().await;
                pause(&mut backoff, &stop).await;
                continue;
            }
        };
        if events.is_empty() {
            continue;
        }
        // Every partition applies the batch while the next one is read.
        let last = events.last().map_or(lowest, |e| e.position);
        let (outcomes, next) = tokio::join!(
            futures::future::join_all(owned.values_mut().map(|c| c.apply_batch(&events))),
            reader.read(last),
        );
        prefetched = Some(next);
        let mut failed = false;
        for (partition, outcome) in owned.keys().zip(outcomes) {
            if let Err(e) = outcome {
                failed = true;
                tracing::warn!(consumer = %partition_consumer(&group, *partition), error = %e, "partition batch failed");
            }
        }
        if failed {
            reader.close().await;
            prefetched = None;
            pause(&mut backoff, &stop).await;
        } else {
            backoff = Duration::from_millis(100);
        }
    }
    reader.close().await;
    applied.send_replace(BTreeSet::new());
    Ok(())
}

async fn pause(backoff: &mut Duration, stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(*backoff) => {}
        () = stop.cancelled() => {}
    }
    *backoff = (*backoff * 2).min(READER_BACKOFF_MAX);
}

/// The stream as one instance reads it for its partitions.
struct Reader {
    js: jetstream::Context,
    bus: BusConfig,
    name_prefix: String,
    batch_max: usize,
    fetch_wait: Duration,
    created: u64,
    current: Option<(String, jetstream::consumer::Consumer<pull::Config>)>,
    /// The last position read, while a consumer is open.
    cursor: Option<u64>,
}

impl Reader {
    fn new(js: &jetstream::Context, run: &GroupRun) -> Self {
        Self {
            js: js.clone(),
            bus: run.bus.clone(),
            name_prefix: nats_name(&format!("{}-{}", run.spec.group, run.lease.instance)),
            batch_max: run.batch_max.max(1),
            fetch_wait: run.fetch_wait,
            created: 0,
            current: None,
            cursor: None,
        }
    }

    fn cursor(&self) -> Option<u64> {
        self.cursor
    }

    /// The next events after the cursor (opening the consumer at `after` + 1 if none is open),
    /// checked dense.
    async fn read(&mut self, after: u64) -> anyhow::Result<Vec<SequencedEvent>> {
        if self.current.is_none() {
            let stream = super::ensure_stream(&self.js, &self.bus).await?;
            self.created += 1;
            let name = format!("{}-{}", self.name_prefix, self.created);
            let deliver_policy = match after {
                0 => DeliverPolicy::All,
                n => DeliverPolicy::ByStartSequence {
                    start_sequence: n + 1,
                },
            };
            let consumer = stream
                .create_consumer(pull::Config {
                    name: Some(name.clone()),
                    deliver_policy,
                    ack_policy: AckPolicy::None,
                    inactive_threshold: READER_INACTIVE,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot create reader {name}"))?;
            self.current = Some((name, consumer));
            self.cursor = Some(after);
        }
        let (Some((_, consumer)), Some(cursor)) = (&self.current, self.cursor) else {
            bail!("no reader");
        };
        let mut batch = consumer
            .fetch()
            .max_messages(self.batch_max)
            .expires(self.fetch_wait)
            .messages()
            .await
            .context("fetch failed")?;
        let mut events = Vec::with_capacity(self.batch_max);
        while let Some(message) = batch.next().await {
            let message = message.map_err(|e| anyhow::anyhow!("fetch failed: {e}"))?;
            let event = SequencedEvent::from_wire(&message.payload)
                .context("undecodable message on the event stream")?;
            let expected = cursor + events.len() as u64 + 1;
            if event.position != expected {
                bail!("expected position {expected}, read {}", event.position);
            }
            events.push(event);
        }
        if let Some(last) = events.last() {
            self.cursor = Some(last.position);
        }
        Ok(events)
    }

    /// Deletes the consumer (best effort: an orphan is removed by the server when inactive).
    async fn close(&mut self) {
        self.cursor = None;
        if let Some((name, _)) = self.current.take() {
            if let Ok(stream) = self.js.get_stream(&self.bus.stream).await {
                let _ = stream.delete_consumer(&name).await;
            }
        }
    }
}

/// One partition as `status` shows it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PartitionStatus {
    pub group: String,
    pub partition: u32,
    pub partitions: u32,
    pub consumer: String,
    /// The live owner, if any (an expired lease shows as none).
    pub owner: Option<String>,
    pub lease_until: Option<String>,
    pub checkpoint: u64,
    /// The log head (sequenced positions) minus the checkpoint.
    pub lag: u64,
    pub parked: u64,
}

/// A partition's row as `status` reads it: group, partition, partitions, consumer, owner, lease
/// end, checkpoint, lag, parked.
type StatusRow = (
    String,
    i32,
    i32,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
    i64,
);

/// Every partition of the given groups (all groups when empty), with owners, checkpoints and lag.
pub async fn status(pool: &PgPool, groups: &[&str]) -> anyhow::Result<Vec<PartitionStatus>> {
    let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
    let rows: Vec<StatusRow> =
        sqlx::query_as(
            "SELECT p.consumer_group, p.partition, p.partitions, p.consumer,
                    CASE WHEN p.lease_until > now() THEN p.owner END,
                    CASE WHEN p.lease_until > now()
                         THEN to_char(p.lease_until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') END,
                    coalesce(c.position, 0),
                    (SELECT coalesce(max(position), 0) FROM event_log),
                    (SELECT count(*) FROM consumer_parked_events e WHERE e.consumer = p.consumer)
             FROM consumer_partitions p LEFT JOIN consumer_checkpoints c ON c.consumer = p.consumer
             WHERE cardinality($1::text[]) = 0 OR p.consumer_group = ANY($1)
             ORDER BY p.consumer_group, p.partition",
        )
        .bind(&groups)
        .fetch_all(pool)
        .await?;
    Ok(rows
        .into_iter()
        .map(
            |(
                group,
                partition,
                partitions,
                consumer,
                owner,
                lease_until,
                checkpoint,
                head,
                parked,
            )| {
                PartitionStatus {
                    group,
                    partition: partition as u32,
                    partitions: partitions as u32,
                    consumer,
                    owner,
                    lease_until,
                    checkpoint: checkpoint as u64,
                    lag: (head - checkpoint).max(0) as u64,
                    parked: parked as u64,
                }
            },
        )
        .collect())
}

/// Readiness of a group's ownership: fails while a partition has no live owner, naming them.
pub async fn ownership_check(pool: &PgPool, group: &str) -> Result<(), String> {
    let orphans: Vec<i32> = sqlx::query_scalar(
        "SELECT partition FROM consumer_partitions WHERE consumer_group = $1
           AND (owner IS NULL OR lease_until IS NULL OR lease_until <= now()) ORDER BY partition",
    )
    .bind(group)
    .fetch_all(pool)
    .await
    .map_err(|e| e.to_string())?;
    match orphans.as_slice() {
        [] => Ok(()),
        list => Err(format!("partition(s) {list:?} without a live owner")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).expect("time")
    }

    fn leases(owners: &[Option<(&str, i64)>]) -> Vec<Lease> {
        owners
            .iter()
            .enumerate()
            .map(|(k, o)| Lease {
                partition: k as u32,
                owner: o.map(|(who, _)| who.to_owned()),
                lease_until: o.map(|(_, until)| at(until)),
            })
            .collect()
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn shares_split_the_partitions_the_same_way_for_everyone() {
        let abc = names(&["c", "a", "b"]);
        let shares: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|me| fair_share(8, &abc, me))
            .collect();
        assert_eq!(shares, vec![3, 3, 2]);
        let shares: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|me| fair_share(4, &abc, me))
            .collect();
        assert_eq!(shares, vec![2, 1, 1], "nobody is left without a partition");
        assert_eq!(fair_share(8, &[], "a"), 8, "an instance counts itself");
        let shares: Vec<usize> = ["a", "b", "c"]
            .iter()
            .map(|me| fair_share(1, &abc, me))
            .collect();
        assert_eq!(shares, vec![1, 0, 0]);
    }

    #[test]
    fn a_lone_instance_takes_everything_free() {
        let all = leases(&[None, None, None, None]);
        let p = plan(&all, "a", &names(&["a"]), at(0));
        assert_eq!(p.take, vec![0, 1, 2, 3]);
        assert!(p.renew.is_empty() && p.release.is_empty());
    }

    #[test]
    fn an_instance_over_its_share_releases_its_highest_partitions() {
        let all = leases(&[Some(("a", 9)); 4]);
        let ab = names(&["a", "b"]);
        let p = plan(&all, "a", &ab, at(0));
        assert_eq!(p.renew, vec![0, 1, 2, 3], "renewed until released");
        assert_eq!(p.release, vec![2, 3]);
        assert!(p.take.is_empty());
        // The newcomer takes nothing until they are released, then its share.
        assert_eq!(plan(&all, "b", &ab, at(0)), Plan::default());
        let after = leases(&[Some(("a", 9)), Some(("a", 9)), None, None]);
        assert_eq!(plan(&after, "b", &ab, at(0)).take, vec![2, 3]);
    }

    #[test]
    fn expired_leases_are_free_even_if_they_name_an_owner() {
        let all = leases(&[Some(("dead", -1)), Some(("b", 5)), Some(("dead", 0))]);
        let p = plan(&all, "b", &names(&["b"]), at(0));
        assert_eq!(p.renew, vec![1]);
        assert_eq!(p.take, vec![0, 2], "expiry at `now` counts as expired");
        let mine_expired = leases(&[Some(("b", -3))]);
        let p = plan(&mine_expired, "b", &names(&["b"]), at(0));
        assert_eq!(
            (p.renew, p.take),
            (vec![], vec![0]),
            "retaken, from the checkpoint"
        );
    }

    #[test]
    fn three_instances_split_eight_partitions_three_three_two() {
        let mut all = leases(&[None; 8]);
        let abc = names(&["a", "b", "c"]);
        for me in ["a", "b", "c"] {
            let p = plan(&all, me, &abc, at(0));
            for k in p.take {
                all[k as usize].owner = Some(me.to_owned());
                all[k as usize].lease_until = Some(at(5));
            }
        }
        let count = |who: &str| {
            all.iter()
                .filter(|l| l.owner.as_deref() == Some(who))
                .count()
        };
        assert_eq!((count("a"), count("b"), count("c")), (3, 3, 2));
    }

    #[test]
    fn a_third_instance_gets_its_share_from_two_that_split_everything() {
        // a and b hold two each; c joins: b (second by name) is now over its share of one.
        let all = leases(&[
            Some(("a", 9)),
            Some(("a", 9)),
            Some(("b", 9)),
            Some(("b", 9)),
        ]);
        let abc = names(&["a", "b", "c"]);
        assert!(plan(&all, "a", &abc, at(0)).release.is_empty());
        assert_eq!(plan(&all, "b", &abc, at(0)).release, vec![3]);
        let after = leases(&[Some(("a", 9)), Some(("a", 9)), Some(("b", 9)), None]);
        assert_eq!(plan(&after, "c", &abc, at(0)).take, vec![3]);
    }

    #[test]
    fn lease_timing_keeps_takeover_within_the_period() {
        let lease = LeaseSettings {
            period: Duration::from_secs(8),
            instance: "a".into(),
        };
        assert_eq!(lease.ttl(), Duration::from_secs(6));
        assert_eq!(lease.tick(), Duration::from_secs(2));
        assert!(lease.ttl() + lease.tick() <= lease.period);
    }

    #[test]
    fn partition_consumer_names_are_nats_durable_safe() {
        let spec = GroupSpec::new("projector-read-models", 3);
        assert_eq!(
            spec.consumers(),
            vec![
                "projector-read-models-p0",
                "projector-read-models-p1",
                "projector-read-models-p2"
            ]
        );
        assert!(spec.consumers().iter().all(|c| !c.contains('.')));
    }
}
