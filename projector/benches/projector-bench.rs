//! projector-bench: the read side's figures, each beside a baseline measured in the same run
//! (`deploy/stack bench --projector`; docs/benchmarks.md):
//!
//! - **rebuild**: the read models built from position 0 by `replay` (keyset scan, decode on a
//!   blocking thread, set-based fold and write, then the deferred indexes) against a raw ordered
//!   scan + decode of the same events through the same read-ahead.
//! - **apply**: a backlog in JetStream applied by the partitioned read models with 1 and 2
//!   instances, against today's row-at-a-time apply (one unpartitioned consumer) of the same
//!   backlog, measured the same way: from start until every partition's checkpoint is past it.
//! - **latency**: commit (append returned) → visible (every partition's checkpoint past the
//!   command's last position), with writers paced at half of the 1-instance apply capacity.
//!
//! Everything runs in a database and a JetStream stream of its own, removed at the end. The
//! event count is a flag, so CI never runs this.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use clap::Parser;
use events::bus::consumer::{Consumer, ConsumerConfig};
use events::bus::leader::{self, LeaderConfig, LeaderProgress};
use events::bus::partitions::{self, GroupSpec, LeaseSettings};
use events::bus::BusConfig;
use events::domain::event::Timestamp;
use events::store::{db, EventStore};
use projector::rebuild::{read_ahead, replay};
use projector::route::Directory;
use projector::synthetic::{fill, Generator, Versions};
use projector::{AnyProjection, Group};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Benchmarks the projector's rebuild, live apply and commit → visible latency.
#[derive(Debug, Parser)]
#[command(name = "projector-bench")]
struct Args {
    /// Passed by `cargo bench` (which runs this); ignored.
    #[arg(long = "bench", hide = true)]
    _cargo_bench: bool,
    /// Events in the log (the rebuild runs over all of them; at least 1,000,000 for the figure
    /// the issue asks for).
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events of the backlog the live apply figures run over (the first of the log).
    #[arg(long, default_value_t = 300_000)]
    apply_events: u64,
    /// Client enterprises of the synthetic workload (a partner per eight).
    #[arg(long, default_value_t = 2_000)]
    tenants: usize,
    /// Partitions of the read models.
    #[arg(long, default_value_t = projector::PARTITIONS_DEFAULT)]
    partitions: u32,
    /// Events per read of the stream (and at most per partition transaction).
    #[arg(long, default_value_t = projector::BATCH_EVENTS_DEFAULT)]
    batch_events: usize,
    /// Events per chunk of the rebuild.
    #[arg(long, default_value_t = projector::rebuild::CHUNK_EVENTS_DEFAULT)]
    chunk_events: usize,
    /// Seconds of paced load for the latency figure.
    #[arg(long, default_value_t = 10)]
    latency_seconds: u64,
    /// Paced load of the latency figure in events/s (default: half the 1-instance capacity
    /// measured in the apply phase).
    #[arg(long)]
    latency_rate: Option<f64>,
    /// Only these phases (comma-separated: rebuild, apply, latency).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "NATS_URL")]
    nats_url: String,
}

/// Events per append request while filling the log.
const FILL_EVENTS_PER_REQUEST: usize = 200;
/// Sampling period of the checkpoints while waiting for a backlog, and of the latency observer.
const POLL: Duration = Duration::from_millis(5);
/// Writers of the paced latency load.
const LATENCY_WRITERS: usize = 4;
/// Commands per paced append.
const LATENCY_COMMANDS_PER_APPEND: usize = 5;

fn with_database(url: &str, database: &str) -> Result<String> {
    let (server, _) = url
        .rsplit_once('/')
        .context("DATABASE_URL names no database")?;
    Ok(format!("{server}/{database}"))
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64().max(1e-9)
}

struct Bench {
    args: Args,
    admin: PgPool,
    url: String,
    name: String,
    pool: PgPool,
    js: async_nats::jetstream::Context,
    bus: BusConfig,
}

impl Bench {
    async fn new(args: Args) -> Result<Self> {
        let admin = db::connect(&args.database_url, 2).await?;
        let name = format!("bench_{}", &Uuid::new_v4().simple().to_string()[..12]);
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await?;
        let url = with_database(&args.database_url, &name)?;
        let pool = db::connect(&url, 16).await?;
        db::migrate(&pool).await?;
        let js = events::bus::connect(&args.nats_url).await?;
        let tag = Uuid::new_v4().simple().to_string();
        let bus = BusConfig {
            stream: format!("BENCH_{}", &tag[..12]),
            subject_prefix: format!("bench{}", &tag[..12]),
            replicas: 1,
        };
        Ok(Self {
            args,
            admin,
            url,
            name,
            pool,
            js,
            bus,
        })
    }

    fn wants(&self, phase: &str) -> bool {
        self.args.only.is_empty() || self.args.only.iter().any(|p| p == phase)
    }

    async fn cleanup(self) {
        self.js.delete_stream(&self.bus.stream).await.ok();
        self.pool.close().await;
        let _ = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        ))
        .execute(&self.admin)
        .await;
    }

    /// The log: `events` synthetic events, sequenced and published.
    async fn fill(&self) -> Result<()> {
        let started = Instant::now();
        let store = EventStore::new(self.pool.clone());
        let mut generator = Generator::new(42, self.args.tenants);
        let mut versions = Versions::default();
        let n = fill(
            &store,
            &mut generator,
            &mut versions,
            self.args.events,
            FILL_EVENTS_PER_REQUEST,
        )
        .await?;
        println!(
            "log: {n} events appended in {:.1} s ({} tenants)",
            started.elapsed().as_secs_f64(),
            self.args.tenants
        );
        let started = Instant::now();
        let (stop, leader, mut progress) = self.start_leader();
        progress
            .wait_for(|p| p.published >= n)
            .await
            .map_err(|_| anyhow!("the leader stopped"))?;
        stop.cancel();
        leader.await??;
        println!(
            "log: sequenced and published in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn start_leader(
        &self,
    ) -> (
        CancellationToken,
        tokio::task::JoinHandle<Result<()>>,
        tokio::sync::watch::Receiver<LeaderProgress>,
    ) {
        let stop = CancellationToken::new();
        let (progress, receiver) = tokio::sync::watch::channel(LeaderProgress::default());
        let task = tokio::spawn(leader::run(
            self.pool.clone(),
            self.js.clone(),
            LeaderConfig::new(self.url.clone(), "projector-bench", self.bus.clone()),
            progress,
            stop.clone(),
        ));
        (stop, task, receiver)
    }

    async fn rebuild(&self) -> Result<()> {
        let n = self.args.events;
        // Raw: the same ordered keyset scan and decode, through the same read-ahead.
        let started = Instant::now();
        let mut chunks = read_ahead(self.pool.clone(), 0, n, self.args.chunk_events);
        let mut scanned = 0u64;
        while let Some(chunk) = chunks.recv().await {
            scanned += chunk?.len() as u64;
        }
        let raw = rate(scanned, started.elapsed());
        let figures = replay(
            &self.pool,
            &[Group::ReadModels],
            self.args.partitions,
            n,
            "bench_rebuild",
            self.args.chunk_events,
            false,
        )
        .await?;
        let ours = rate(figures.events, figures.elapsed);
        println!(
            "rebuild events={} ours_ev/s={ours:.0} raw_scan_ev/s={raw:.0} ratio={:.2}",
            figures.events,
            ours / raw
        );
        sqlx::query("DROP SCHEMA bench_rebuild CASCADE")
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Empties the read models and forgets every consumer, so the next run starts at 0.
    async fn reset(&self) -> Result<()> {
        let tables = Group::ReadModels.tables().join(", ");
        sqlx::query(&format!("TRUNCATE {tables}"))
            .execute(&self.pool)
            .await?;
        sqlx::raw_sql(
            "DELETE FROM consumer_partitions; DELETE FROM consumer_instances;
             DELETE FROM consumer_checkpoints; DELETE FROM consumer_lease_log;",
        )
        .execute(&self.pool)
        .await?;
        if let Ok(stream) = self.js.get_stream(&self.bus.stream).await {
            let names: Vec<String> = {
                use futures::StreamExt;
                stream
                    .consumer_names()
                    .filter_map(|n| async { n.ok() })
                    .collect()
                    .await
            };
            for name in names {
                stream.delete_consumer(&name).await.ok();
            }
        }
        Ok(())
    }

    /// Waits until every consumer named `group-*` (or `group` itself) is at `target`.
    async fn wait_for(&self, consumers: &[String], target: u64) -> Result<Duration> {
        let started = Instant::now();
        loop {
            let least: Option<i64> = sqlx::query_scalar(
                "SELECT min(coalesce(c.position, 0)) FROM unnest($1::text[]) AS n(consumer)
                 LEFT JOIN consumer_checkpoints c ON c.consumer = n.consumer",
            )
            .bind(consumers)
            .fetch_one(&self.pool)
            .await?;
            if least.unwrap_or(0) as u64 >= target {
                return Ok(started.elapsed());
            }
            if started.elapsed() > Duration::from_secs(3_600) {
                anyhow::bail!("the backlog was not applied within an hour");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Today's apply: one unpartitioned consumer applying row at a time.
    async fn row_at_a_time(&self, target: u64) -> Result<f64> {
        self.reset().await?;
        let name = "bench-row-at-a-time".to_owned();
        let consumer = Consumer::new(
            self.pool.clone(),
            self.js.clone(),
            ConsumerConfig::new(name.clone(), self.bus.clone()),
            projector::baseline::RowAtATime,
        )
        .await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(consumer.run(stop.clone()));
        let elapsed = self.wait_for(&[name], target).await?;
        stop.cancel();
        task.await??;
        Ok(rate(target, elapsed))
    }

    /// The partitioned read models with `instances` instances (each with its own directory, as
    /// separate processes would have), all in this process.
    async fn partitioned(&self, instances: usize, target: u64) -> Result<f64> {
        self.reset().await?;
        let spec = GroupSpec::new("bench-read-models", self.args.partitions);
        let stop = CancellationToken::new();
        let mut tasks = Vec::new();
        // A steady deployment of `instances` meets the backlog: every instance known from the
        // first tick, so the partitions are split at once instead of handed over.
        partitions::register_group(&self.pool, &spec).await?;
        for i in 0..instances {
            sqlx::query(
                "INSERT INTO consumer_instances (consumer_group, instance, alive_until, started_at)
                 VALUES ($1, $2, now() + interval '8 seconds', now())",
            )
            .bind(&spec.group)
            .bind(format!("bench-{i}"))
            .execute(&self.pool)
            .await?;
        }
        let started = Instant::now();
        for i in 0..instances {
            tasks.push(self.instance(&spec, &format!("bench-{i}"), stop.clone()));
        }
        self.wait_for(&spec.consumers(), target).await?;
        let elapsed = started.elapsed();
        stop.cancel();
        for task in tasks {
            task.await??;
        }
        Ok(rate(target, elapsed))
    }

    /// One instance of the read models' group `spec` (its own directory, as a separate process
    /// would have), in this process.
    fn instance(
        &self,
        spec: &GroupSpec,
        name: &str,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<Result<()>> {
        let (pool, js, bus) = (self.pool.clone(), self.js.clone(), self.bus.clone());
        let directory = Arc::new(Directory::default());
        let partitions = spec.partitions;
        let make = move |partition: u32, name: String| {
            let (pool, js, bus, directory) =
                (pool.clone(), js.clone(), bus.clone(), directory.clone());
            async move {
                let mut config = ConsumerConfig::new(name, bus);
                config.asynchronous_commit = true;
                let projection =
                    AnyProjection::new(Group::ReadModels, partition, partitions, directory);
                Consumer::new(pool, js, config, projection).await
            }
        };
        let run = partitions::GroupRun {
            spec: spec.clone(),
            lease: LeaseSettings {
                period: Duration::from_secs(8),
                instance: name.to_owned(),
            },
            bus: self.bus.clone(),
            batch_max: self.args.batch_events,
            fetch_wait: projector::FETCH_WAIT,
        };
        tokio::spawn(partitions::run_group(
            self.pool.clone(),
            self.js.clone(),
            run,
            make,
            stop,
        ))
    }

    async fn apply(&self) -> Result<f64> {
        let target = self.args.apply_events.min(self.args.events);
        let baseline = self.row_at_a_time(target).await?;
        let mut one = 0.0;
        for instances in [1, 2] {
            let ours = self.partitioned(instances, target).await?;
            if instances == 1 {
                one = ours;
            }
            println!(
                "apply instances={instances} events={target} ours_ev/s={ours:.0} row_at_a_time_ev/s={baseline:.0} ratio={:.2}",
                ours / baseline
            );
        }
        Ok(one)
    }

    /// Commit → visible at half of `capacity` (events/s), one instance applying live.
    async fn latency(&self, capacity: f64) -> Result<()> {
        self.reset().await?;
        let spec = GroupSpec::new("bench-latency", self.args.partitions);
        let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM event_log")
            .fetch_one(&self.pool)
            .await?;
        // Start the partitions at the head: only the paced load is applied.
        register_at(&self.pool, &spec, head as u64).await?;
        let stop = CancellationToken::new();
        let group = self.instance(&spec, "bench-latency", stop.clone());
        let (leader_stop, leader, _) = self.start_leader();
        // Let the partitions be taken before the load starts.
        tokio::time::sleep(Duration::from_secs(2)).await;

        let target_rate = self.args.latency_rate.unwrap_or(capacity / 2.0);
        let pending: Arc<Mutex<VecDeque<(i64, Instant)>>> = Arc::default();
        let load_stop = CancellationToken::new();
        let mut writers = Vec::new();
        let seconds = self.args.latency_seconds;
        // The writers continue the log where the fill left it: a fresh generator would make
        // new tenants (its own ids), which is what the paced load needs anyway.
        for w in 0..LATENCY_WRITERS {
            let (pool, pending, stop) = (self.pool.clone(), pending.clone(), load_stop.clone());
            let tenants = self.args.tenants / LATENCY_WRITERS + 1;
            writers.push(tokio::spawn(async move {
                let store = EventStore::new(pool);
                let mut generator = Generator::new(1_000 + w as u64, tenants);
                let mut versions = Versions::default();
                // Setup commands first, unpaced and unmeasured.
                let mut appended = 0u64;
                let start = Instant::now();
                let mut next = start;
                while !stop.is_cancelled() {
                    let commands: Vec<_> = (0..LATENCY_COMMANDS_PER_APPEND)
                        .map(|_| generator.next_command())
                        .collect();
                    let n: usize = commands.iter().map(Vec::len).sum();
                    let appended_at = store
                        .append(&versions.request(&commands, Timestamp(0)))
                        .await?;
                    let committed = Instant::now();
                    pending
                        .lock()
                        .map_err(|_| anyhow!("poisoned"))?
                        .push_back((appended_at.txid, committed));
                    appended += n as u64;
                    let per_writer = target_rate / LATENCY_WRITERS as f64;
                    next = start + Duration::from_secs_f64(appended as f64 / per_writer);
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        tokio::time::sleep(wait).await;
                    }
                }
                let _ = next;
                Ok::<u64, anyhow::Error>(appended)
            }));
        }
        let observer = {
            let (pool, pending, consumers) = (self.pool.clone(), pending.clone(), spec.consumers());
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut histogram = hdrhistogram::Histogram::<u64>::new(3)?;
                let mut waiting: Vec<(i64, Instant, Option<i64>)> = Vec::new();
                while !stop.is_cancelled() {
                    waiting.extend(
                        pending
                            .lock()
                            .map_err(|_| anyhow!("poisoned"))?
                            .drain(..)
                            .map(|(txid, at)| (txid, at, None)),
                    );
                    let unknown: Vec<i64> = waiting
                        .iter()
                        .filter(|(_, _, p)| p.is_none())
                        .map(|(t, _, _)| *t)
                        .collect();
                    if !unknown.is_empty() {
                        let rows: Vec<(i64, i64, i64, i64)> = sqlx::query_as(
                            "SELECT e.txid, count(*), count(l.position), coalesce(max(l.position), 0)
                             FROM events e LEFT JOIN event_log l ON l.event_id = e.event_id
                             WHERE e.txid = ANY($1) GROUP BY e.txid",
                        )
                        .bind(&unknown)
                        .fetch_all(&pool)
                        .await?;
                        for (txid, all, positioned, last) in rows {
                            if all == positioned {
                                if let Some(w) = waiting.iter_mut().find(|w| w.0 == txid) {
                                    w.2 = Some(last);
                                }
                            }
                        }
                    }
                    let least: Option<i64> = sqlx::query_scalar(
                        "SELECT min(coalesce(c.position, 0)) FROM unnest($1::text[]) AS n(consumer)
                         LEFT JOIN consumer_checkpoints c ON c.consumer = n.consumer",
                    )
                    .bind(&consumers)
                    .fetch_one(&pool)
                    .await?;
                    let least = least.unwrap_or(0);
                    let now = Instant::now();
                    waiting.retain(|(_, at, position)| match position {
                        Some(p) if *p <= least => {
                            let us = now.duration_since(*at).as_micros() as u64;
                            let _ = histogram.record(us.max(1));
                            false
                        }
                        _ => true,
                    });
                    tokio::time::sleep(POLL).await;
                }
                Ok::<_, anyhow::Error>((histogram, waiting.len()))
            })
        };
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        load_stop.cancel();
        let mut appended = 0;
        for w in writers {
            appended += w.await??;
        }
        // Let what was written become visible, then stop observing.
        tokio::time::sleep(Duration::from_secs(3)).await;
        stop.cancel();
        let (histogram, unseen) = observer.await??;
        group.await??;
        leader_stop.cancel();
        leader.await??;
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1_000.0;
        println!(
            "latency commit_to_visible target_ev/s={target_rate:.0} achieved_ev/s={:.0} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} n={} unseen={unseen} (observer polls every {} ms)",
            appended as f64 / seconds as f64,
            ms(0.5),
            ms(0.99),
            histogram.max() as f64 / 1_000.0,
            histogram.len(),
            POLL.as_millis()
        );
        Ok(())
    }
}

/// Makes the partitions of `spec` with every checkpoint at `position`.
async fn register_at(pool: &PgPool, spec: &GroupSpec, position: u64) -> Result<()> {
    partitions::register_group(pool, spec).await?;
    sqlx::query(
        "INSERT INTO consumer_checkpoints (consumer, position, updated_at)
         SELECT unnest($1::text[]), $2, now()
         ON CONFLICT (consumer) DO UPDATE SET position = EXCLUDED.position",
    )
    .bind(spec.consumers())
    .bind(position as i64)
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    events::service::init_tracing();
    let args = Args::parse();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "projector-bench: {} events, apply backlog {}, {} partitions, {} tenants, {cpus} CPUs",
        args.events, args.apply_events, args.partitions, args.tenants
    );
    let bench = Bench::new(args).await?;
    let outcome = async {
        bench.fill().await?;
        if bench.wants("rebuild") {
            bench.rebuild().await?;
        }
        let mut capacity = 0.0;
        if bench.wants("apply") {
            capacity = bench.apply().await?;
        }
        if bench.wants("latency") {
            if capacity == 0.0 && bench.args.latency_rate.is_none() {
                capacity = bench
                    .partitioned(1, bench.args.apply_events.min(bench.args.events))
                    .await?;
            }
            bench.latency(capacity).await?;
        }
        Ok::<(), anyhow::Error>(())
    }
    .await;
    bench.cleanup().await;
    outcome
}
