//! eventlog-bench: measures the event log's hot paths — append, sequencer + relay, and the latency
//! from commit to JetStream ack — each next to a raw baseline run on the same servers in the same
//! run, so the figures read as "what our layers cost" rather than as numbers without context.
//!
//! Run it with `deploy/stack bench [--quick] [--seconds N] [--only append|relay|latency]`.
//! Every phase works in a database and JetStream streams of its own, created here and removed at
//! the end, so it never touches the stack's `settle` database or the `EVENTS` stream.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use async_nats::jetstream::{self, context::Publish};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use rand::RngCore;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use events::bus::leader::{self, LeaderConfig, LeaderProgress};
use events::bus::relay::RelayObserver;
use events::bus::{self, BusConfig};
use events::codec::{Actor, EncodedEvent, Metadata, SequencedEvent};
use events::domain::event::Timestamp;
use events::domain::{event_id, CommandId, StreamName};
use events::store::sequencer::SEQUENCE_BATCH_MAX;
use events::store::{db, AppendRequest, EventStore, Leadership, NewEvent, Sequencer, StepOutcome};

/// Payload size of every benchmark event: about what a small domain event encodes to.
const PAYLOAD_BYTES: usize = 100;
const APPEND_EVENTS_PER_COMMAND: [usize; 3] = [1, 10, 100];
const APPEND_CONCURRENCY: [usize; 3] = [1, 4, 16];
/// The relay backlog is written with big commands so that filling it is quick.
const BACKLOG_EVENTS_PER_COMMAND: usize = 100;
const BACKLOG_CONCURRENCY: usize = 4;
/// The latency capacity reference is the append cell with 10-event commands at concurrency 4.
const LATENCY_EVENTS_PER_COMMAND: usize = 10;
const LATENCY_REFERENCE_CONCURRENCY: usize = 4;
/// More paced writers than the reference concurrency, so a slow commit does not make the writer
/// fall behind its schedule at half the capacity.
const LATENCY_WRITERS: usize = 8;
/// Slices per append measurement, alternating ours and raw.
const PAIR_ROUNDS: u32 = 4;
/// Connections of the leader's pool (sequencer step, relay reconcile).
const LEADER_POOL: u32 = 4;
/// Ratio below which a figure is flagged: our layers should cost at most 30% over the raw work.
const RATIO_TARGET: f64 = 0.7;
/// `application_name` of the admin sessions (create/drop database, interference sampling).
const APPLICATION_NAME: &str = "eventlog-bench";
/// Give up waiting for the leader after this long: something is broken, not slow.
const LEADER_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Phase {
    Append,
    Relay,
    Latency,
}

/// Benchmarks the event log against raw Postgres inserts and raw JetStream publishes.
#[derive(Parser, Debug)]
#[command(name = "eventlog-bench")]
struct Args {
    /// Passed by `cargo bench` (which runs this); ignored.
    #[arg(long = "bench", hide = true)]
    _cargo_bench: bool,
    /// Admin connection; each phase creates (and drops) its own database through it.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, env = "NATS_URL")]
    nats_url: String,
    /// Shorter measurements and a smaller relay backlog (a smoke run, ~1 minute).
    #[arg(long)]
    quick: bool,
    /// Seconds per measurement (default 3, or 1 with --quick).
    #[arg(long)]
    seconds: Option<f64>,
    /// Run one phase only.
    #[arg(long, value_enum)]
    only: Option<Phase>,
    /// Events in the relay backlog (default 200,000, or 50,000 with --quick).
    #[arg(long)]
    backlog: Option<u64>,
    /// Events/s for the latency phase instead of 50% of the measured capacity.
    #[arg(long)]
    latency_rate: Option<f64>,
}

#[derive(Clone, Debug)]
struct Settings {
    seconds: Duration,
    warmup: Duration,
    backlog: u64,
    only: Option<Phase>,
    latency_rate: Option<f64>,
}

impl Settings {
    fn from_args(args: &Args) -> Result<Self> {
        let seconds = args.seconds.unwrap_or(if args.quick { 1.0 } else { 3.0 });
        ensure!(
            seconds.is_finite() && seconds > 0.0,
            "--seconds must be positive"
        );
        let backlog = args
            .backlog
            .unwrap_or(if args.quick { 50_000 } else { 200_000 });
        ensure!(backlog > 0, "--backlog must be positive");
        // Whole commands only, so the backlog is exactly what the leader has to deliver.
        let per = BACKLOG_EVENTS_PER_COMMAND as u64;
        let backlog = backlog.div_ceil(per) * per;
        if let Some(rate) = args.latency_rate {
            ensure!(
                rate.is_finite() && rate > 0.0,
                "--latency-rate must be positive"
            );
        }
        let seconds = Duration::from_secs_f64(seconds);
        Ok(Self {
            seconds,
            // Long enough to open every connection and prepare the statements on each.
            warmup: seconds
                .mul_f64(0.15)
                .clamp(Duration::from_millis(200), Duration::from_millis(500)),
            backlog,
            only: args.only,
            latency_rate: args.latency_rate,
        })
    }

    fn runs(&self, phase: Phase) -> bool {
        self.only.is_none_or(|p| p == phase)
    }
}

#[derive(Debug)]
struct AppendCell {
    events_per_command: usize,
    concurrency: usize,
    ours: f64,
    raw: f64,
}

#[derive(Debug)]
struct RelayResult {
    events: u64,
    ours: f64,
    raw: f64,
    sequencer_alone: f64,
}

#[derive(Debug)]
struct LatencyResult {
    target: f64,
    basis: String,
    achieved: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    count: u64,
    early: u64,
    unobserved: usize,
    max_lateness: Duration,
}

#[derive(Debug, Default)]
struct Results {
    append: Vec<AppendCell>,
    relay: Option<RelayResult>,
    latency: Option<LatencyResult>,
    notes: Vec<String>,
}

/// A database made for one phase.
#[derive(Debug)]
struct BenchDb {
    name: String,
    url: String,
}

/// Shared handles plus what has to be removed at the end, even after an error.
struct Ctx {
    settings: Settings,
    base_url: String,
    admin: PgPool,
    js: jetstream::Context,
    databases: Mutex<Vec<String>>,
    streams: Mutex<Vec<String>>,
    interference: Arc<common::Interference>,
}

fn random_hex() -> String {
    let mut hex = Uuid::new_v4().simple().to_string();
    hex.truncate(12);
    hex
}

impl Ctx {
    async fn fresh_db(&self) -> Result<BenchDb> {
        let name = format!("bench_{}", random_hex());
        // Recorded first, so a half-made database is dropped too.
        self.databases
            .lock()
            .map_err(|_| anyhow!("lock poisoned"))?
            .push(name.clone());
        // Without OWNER the creating role owns it; that role needs CREATEDB (the stack grants it).
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&self.admin)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        let url = common::with_database(&self.base_url, &name)?;
        let pool = db::connect(&url, 1).await?;
        db::migrate(&pool).await?;
        pool.close().await;
        Ok(BenchDb { name, url })
    }

    async fn drop_db(&self, name: &str) {
        // A closed pool can still be handing a connection back (sqlx returns connections from a
        // spawned task); give such stragglers a moment to leave.
        for _ in 0..40 {
            let sessions: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND backend_type = 'client backend'",
            )
            .bind(name)
            .fetch_one(&self.admin)
            .await
            .unwrap_or(0);
            if sessions == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // A plain DROP stops autovacuum workers by itself, which FORCE may not do for a role
        // without pg_signal_backend; FORCE is only for a session of ours that would not leave.
        let mut last_error = None;
        for statement in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            format!("DROP DATABASE IF EXISTS {name}"),
        ] {
            match sqlx::query(&statement).execute(&self.admin).await {
                Ok(_) => {
                    last_error = None;
                    break;
                }
                Err(e) => last_error = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if let Some(e) = last_error {
            tracing::warn!(database = name, error = %e, "cannot drop benchmark database");
            return;
        }
        if let Ok(mut dbs) = self.databases.lock() {
            dbs.retain(|d| d != name);
        }
    }

    fn new_bus(&self, suffix: &str) -> Result<BusConfig> {
        let hex = random_hex();
        let bus = BusConfig {
            stream: format!("BENCH_{hex}{}", suffix.to_uppercase()),
            subject_prefix: format!("bench{hex}{suffix}"),
            replicas: 1,
        };
        self.streams
            .lock()
            .map_err(|_| anyhow!("lock poisoned"))?
            .push(bus.stream.clone());
        Ok(bus)
    }

    async fn delete_stream(&self, name: &str) {
        if let Err(e) = self.js.delete_stream(name).await {
            tracing::warn!(stream = name, error = %e, "cannot delete benchmark stream");
            return;
        }
        if let Ok(mut streams) = self.streams.lock() {
            streams.retain(|s| s != name);
        }
    }

    /// Removes whatever a failed or interrupted phase left behind.
    async fn cleanup(&self) {
        let streams = self.streams.lock().map(|s| s.clone()).unwrap_or_default();
        for stream in streams {
            self.delete_stream(&stream).await;
        }
        let databases = self.databases.lock().map(|d| d.clone()).unwrap_or_default();
        for database in databases {
            self.drop_db(&database).await;
        }
    }
}

/// A command like the engine appends: one new stream, `n` events of ~100 random bytes.
fn new_request(n: usize) -> Result<AppendRequest> {
    let command_id = CommandId::from_uuid(Uuid::new_v4());
    let stream =
        StreamName::parse("bench", &Uuid::new_v4().to_string()).context("benchmark stream name")?;
    let mut rng = rand::thread_rng();
    let events = (0..n)
        .map(|_| {
            let mut payload = vec![0u8; PAYLOAD_BYTES];
            rng.fill_bytes(&mut payload);
            NewEvent {
                stream: stream.clone(),
                event: EncodedEvent {
                    type_id: 1,
                    schema_version: 1,
                    payload,
                },
            }
        })
        .collect();
    let mut request_hash = [0u8; 32];
    rng.fill_bytes(&mut request_hash);
    Ok(AppendRequest {
        command_id,
        request_hash,
        expected: vec![(stream, 0)],
        events,
        metadata: Metadata {
            command_id,
            causation_id: None,
            correlation_id: Uuid::new_v4(),
            actor: Actor::System,
            request_id: None,
            key_id: None,
        },
        outcome: vec![],
        nonce: None,
        recorded_at: Timestamp(chrono::Utc::now().timestamp_micros()),
    })
}

/// The baseline: the same rows `append_events` inserts, in one multi-row statement, without the
/// stream-head check, the command record or the plpgsql call around it.
const RAW_INSERT: &str = "INSERT INTO events_raw (event_id, txid, tx_seq, category, stream_id, version, type_id,
                                schema_version, payload, metadata, recorded_at)
    SELECT u.event_id, pg_current_xact_id()::text::bigint, u.ord::integer, u.category, u.stream_id,
           u.version, u.type_id, u.schema_version, u.payload, $8, $9
    FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::integer[], $6::smallint[], $7::bytea[])
         WITH ORDINALITY AS u(event_id, category, stream_id, version, type_id, schema_version, payload, ord)";

async fn raw_insert(pool: &PgPool, request: &AppendRequest) -> Result<()> {
    // The arrays are built exactly as `append_on` builds them, so both sides pay the same
    // client-side work and send the same bytes per row.
    let mut heads: BTreeMap<&StreamName, u64> =
        request.expected.iter().map(|(s, v)| (s, *v)).collect();
    let n = request.events.len();
    let mut ids = Vec::with_capacity(n);
    let mut cats = Vec::with_capacity(n);
    let mut sids = Vec::with_capacity(n);
    let mut versions = Vec::with_capacity(n);
    let mut types = Vec::with_capacity(n);
    let mut schemas = Vec::with_capacity(n);
    let mut payloads = Vec::with_capacity(n);
    for (index, new) in request.events.iter().enumerate() {
        let head = heads
            .get_mut(&new.stream)
            .context("raw baseline: event for an undeclared stream")?;
        *head += 1;
        ids.push(event_id(request.command_id, index as u32));
        cats.push(new.stream.category());
        sids.push(new.stream.id());
        versions.push(*head as i64);
        types.push(new.event.type_id as i32);
        schemas.push(new.event.schema_version as i16);
        payloads.push(new.event.payload.as_slice());
    }
    let recorded_at =
        chrono::DateTime::from_timestamp_micros(request.recorded_at.0).unwrap_or_default();
    sqlx::query(RAW_INSERT)
        .bind(&ids)
        .bind(&cats)
        .bind(&sids)
        .bind(&versions)
        .bind(&types)
        .bind(&schemas)
        .bind(&payloads)
        .bind(request.metadata.encode())
        .bind(recorded_at)
        .execute(pool)
        .await
        .context("raw insert failed")?;
    Ok(())
}

#[derive(Clone)]
enum Writer {
    Ours(EventStore),
    Raw(PgPool),
}

impl Writer {
    async fn write(&self, request: &AppendRequest) -> Result<()> {
        match self {
            Writer::Ours(store) => {
                store.append(request).await.context("append failed")?;
            }
            Writer::Raw(pool) => raw_insert(pool, request).await?,
        }
        Ok(())
    }
}

/// When a closed loop stops.
#[derive(Clone, Copy)]
enum Limit {
    Duration(Duration),
    Commands(u64),
}

#[derive(Clone, Copy, Debug, Default)]
struct Throughput {
    events: u64,
    elapsed: Duration,
}

impl Throughput {
    fn per_second(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// `concurrency` workers, each appending one command after the other until the limit.
/// Elapsed runs until the last worker's last append returned, so no work is left uncounted.
async fn closed_loop(
    writer: &Writer,
    concurrency: usize,
    events_per_command: usize,
    limit: Limit,
) -> Result<Throughput> {
    let start = Instant::now();
    let issued = Arc::new(AtomicU64::new(0));
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let writer = writer.clone();
        let issued = issued.clone();
        workers.spawn(async move {
            let mut events = 0u64;
            loop {
                let more = match limit {
                    Limit::Duration(d) => start.elapsed() < d,
                    Limit::Commands(n) => issued.fetch_add(1, Ordering::Relaxed) < n,
                };
                if !more {
                    return Ok::<u64, anyhow::Error>(events);
                }
                let request = new_request(events_per_command)?;
                writer.write(&request).await?;
                events += events_per_command as u64;
            }
        });
    }
    let mut events = 0;
    // An error returns at once; dropping the JoinSet aborts the other workers.
    while let Some(done) = workers.join_next().await {
        events += done.context("benchmark worker panicked")??;
    }
    Ok(Throughput {
        events,
        elapsed: start.elapsed(),
    })
}

async fn measure(
    settings: &Settings,
    writer: &Writer,
    concurrency: usize,
    events_per_command: usize,
) -> Result<Throughput> {
    closed_loop(
        writer,
        concurrency,
        events_per_command,
        Limit::Duration(settings.warmup),
    )
    .await?;
    closed_loop(
        writer,
        concurrency,
        events_per_command,
        Limit::Duration(settings.seconds),
    )
    .await
}

/// Ours and raw in alternating slices (ours, raw, raw, ours, …), summed: disk and CPU speed on a
/// shared VM drift by a factor of two within seconds, and both tables grow as the run goes on, so
/// back-to-back runs of one side then the other would mostly measure the drift.
async fn measure_pair(
    settings: &Settings,
    ours: &Writer,
    raw: &Writer,
    concurrency: usize,
    events_per_command: usize,
) -> Result<(Throughput, Throughput)> {
    for writer in [ours, raw] {
        closed_loop(
            writer,
            concurrency,
            events_per_command,
            Limit::Duration(settings.warmup),
        )
        .await?;
    }
    let slice = Limit::Duration(settings.seconds / PAIR_ROUNDS);
    let mut totals = [Throughput::default(), Throughput::default()];
    for round in 0..PAIR_ROUNDS {
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for side in order {
            let writer = if side == 0 { ours } else { raw };
            let t = closed_loop(writer, concurrency, events_per_command, slice).await?;
            totals[side].events += t.events;
            totals[side].elapsed += t.elapsed;
        }
    }
    Ok((totals[0], totals[1]))
}

fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn millis(us: u64) -> String {
    format!("{:.2} ms", us as f64 / 1000.0)
}

fn ratio_note(ratio: f64) -> &'static str {
    if ratio < RATIO_TARGET {
        "  < target 0.7"
    } else {
        ""
    }
}

async fn bench_append(ctx: &Ctx, results: &mut Results) -> Result<()> {
    let settings = &ctx.settings;
    let bench_db = ctx.fresh_db().await?;
    let setup = db::connect(&bench_db.url, 1).await?;
    // Same columns, indexes and constraints as `events`; LIKE does not copy the triggers.
    sqlx::query("CREATE TABLE events_raw (LIKE events INCLUDING ALL)")
        .execute(&setup)
        .await
        .context("cannot create events_raw")?;
    setup.close().await;

    println!(
        "\n== append: EventStore::append vs one raw multi-row INSERT per command\n   {} s per side in {PAIR_ROUNDS} alternating slices, {} B payloads, one new stream per command (expected version 0), autocommit, no leader running",
        settings.seconds.as_secs_f64(),
        PAYLOAD_BYTES
    );
    println!(
        "{:>10} {:>6} {:>14} {:>14} {:>7}",
        "events/cmd", "conc", "ours ev/s", "raw ev/s", "ratio"
    );
    for &events_per_command in &APPEND_EVENTS_PER_COMMAND {
        for &concurrency in &APPEND_CONCURRENCY {
            let pool = db::connect(&bench_db.url, concurrency as u32).await?;
            let ours = Writer::Ours(EventStore::new(pool.clone()));
            let raw = Writer::Raw(pool.clone());
            let (ours, raw) =
                measure_pair(settings, &ours, &raw, concurrency, events_per_command).await?;
            pool.close().await;
            let cell = AppendCell {
                events_per_command,
                concurrency,
                ours: ours.per_second(),
                raw: raw.per_second(),
            };
            let ratio = cell.ours / cell.raw;
            println!(
                "{:>10} {:>6} {:>14} {:>14} {:>7.2}{}",
                events_per_command,
                concurrency,
                thousands(cell.ours),
                thousands(cell.raw),
                ratio,
                ratio_note(ratio)
            );
            results.append.push(cell);
        }
    }
    ctx.drop_db(&bench_db.name).await;
    Ok(())
}

/// Waits until the leader has published `target` positions; returns when it had sequenced them
/// and when it had published them, both measured from `start`.
async fn wait_for_leader(
    progress: &mut watch::Receiver<LeaderProgress>,
    target: u64,
    start: Instant,
) -> Result<(Duration, Duration)> {
    let mut sequenced_at = None;
    loop {
        let now = *progress.borrow_and_update();
        if now.sequenced >= target && sequenced_at.is_none() {
            sequenced_at = Some(start.elapsed());
        }
        if now.published >= target {
            let published_at = start.elapsed();
            return Ok((sequenced_at.unwrap_or(published_at), published_at));
        }
        let left = LEADER_TIMEOUT.saturating_sub(start.elapsed());
        match tokio::time::timeout(left, progress.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => bail!(
                "the leader stopped at sequenced {} / published {} of {target}",
                now.sequenced,
                now.published
            ),
            Err(_) => bail!(
                "the leader did not publish {target} events within {} s (sequenced {}, published {})",
                LEADER_TIMEOUT.as_secs(),
                now.sequenced,
                now.published
            ),
        }
    }
}

struct RunningLeader {
    task: tokio::task::JoinHandle<Result<()>>,
    shutdown: CancellationToken,
    progress: watch::Receiver<LeaderProgress>,
    pool: PgPool,
}

fn start_leader(
    ctx: &Ctx,
    pool: PgPool,
    bench_db: &BenchDb,
    bus: &BusConfig,
    observer: Option<RelayObserver>,
) -> RunningLeader {
    let (progress_tx, progress) = watch::channel(LeaderProgress::default());
    let shutdown = CancellationToken::new();
    let mut config = LeaderConfig::new(bench_db.url.clone(), "eventlog-bench", bus.clone());
    config.observer = observer;
    let task = tokio::spawn(leader::run(
        pool.clone(),
        ctx.js.clone(),
        config,
        progress_tx,
        shutdown.clone(),
    ));
    RunningLeader {
        task,
        shutdown,
        progress,
        pool,
    }
}

impl RunningLeader {
    async fn stop(self) -> Result<()> {
        self.shutdown.cancel();
        let result = self.task.await;
        self.pool.close().await;
        result
            .context("leader task panicked")?
            .context("leader failed")
    }
}

/// Appends `total` events in 100-event commands while no leader runs.
async fn fill_backlog(store: &EventStore, total: u64) -> Result<()> {
    let fill = closed_loop(
        &Writer::Ours(store.clone()),
        BACKLOG_CONCURRENCY,
        BACKLOG_EVENTS_PER_COMMAND,
        Limit::Commands(total / BACKLOG_EVENTS_PER_COMMAND as u64),
    )
    .await
    .context("filling the backlog")?;
    ensure!(
        fill.events == total,
        "backlog has {} events, wanted {total}",
        fill.events
    );
    println!(
        "backlog: {} events appended in {:.2} s ({} ev/s; {}-event commands, concurrency {}, no leader running)",
        thousands(total as f64),
        fill.elapsed.as_secs_f64(),
        thousands(fill.per_second()),
        BACKLOG_EVENTS_PER_COMMAND,
        BACKLOG_CONCURRENCY
    );
    Ok(())
}

/// The sequencer by itself over a backlog, without relay or NATS: the leader's ceiling here, and
/// so the measure of how much of the relay figure is Postgres work.
async fn sequencer_alone(ctx: &Ctx, total: u64) -> Result<Throughput> {
    let bench_db = ctx.fresh_db().await?;
    let pool = db::connect(&bench_db.url, BACKLOG_CONCURRENCY as u32).await?;
    fill_backlog(&EventStore::new(pool.clone()), total).await?;
    let leadership = Leadership::try_acquire(&bench_db.url, "eventlog-bench")
        .await?
        .context("another process leads the benchmark database")?;
    let mut sequencer = Sequencer::resume(pool.clone(), &leadership).await?;
    let start = Instant::now();
    let mut sequenced = 0u64;
    while sequenced < total {
        match sequencer.step().await.context("sequencer step")? {
            StepOutcome::Sequenced(batch) => sequenced += batch.len() as u64,
            // A transaction elsewhere in the cluster can hold the xid horizon back for a moment.
            StepOutcome::Idle if start.elapsed() < LEADER_TIMEOUT => {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            StepOutcome::Idle => bail!("sequencer stalled at {sequenced} of {total}"),
            StepOutcome::Fenced => bail!("sequencer fenced in the benchmark database"),
        }
    }
    let alone = Throughput {
        events: sequenced,
        elapsed: start.elapsed(),
    };
    drop(leadership);
    pool.close().await;
    ctx.drop_db(&bench_db.name).await;
    Ok(alone)
}

async fn bench_relay(ctx: &Ctx, results: &mut Results) -> Result<()> {
    let total = ctx.settings.backlog;
    let bench_db = ctx.fresh_db().await?;
    let pool = db::connect(&bench_db.url, BACKLOG_CONCURRENCY as u32).await?;
    let store = EventStore::new(pool.clone());

    println!(
        "\n== relay: sequencer + relay (commit → JetStream ack) vs raw pipelined JetStream publish"
    );
    // No leader yet: the whole backlog is waiting when the clock starts.
    fill_backlog(&store, total).await?;
    let ours_bus = ctx.new_bus("")?;
    // Created before the clock starts, as the raw side's stream is.
    bus::ensure_stream(&ctx.js, &ours_bus).await?;
    let leader_pool = db::connect(&bench_db.url, LEADER_POOL).await?;
    let start = Instant::now();
    let mut leader = start_leader(ctx, leader_pool, &bench_db, &ours_bus, None);
    let waited = wait_for_leader(&mut leader.progress, total, start).await;
    leader.stop().await?;
    let (sequenced_at, published_at) = waited?;
    let stored = bus::stream_last_sequence(&ctx.js, &ours_bus).await?;
    ensure!(
        stored == total,
        "JetStream holds {stored} events, the log {total}"
    );
    let ours = Throughput {
        events: total,
        elapsed: published_at,
    };
    println!(
        "ours:  {} ev/s  ({} events; all sequenced after {:.2} s, all acked after {:.2} s; batches of ≤{})",
        thousands(ours.per_second()),
        thousands(total as f64),
        sequenced_at.as_secs_f64(),
        published_at.as_secs_f64(),
        SEQUENCE_BATCH_MAX
    );

    // The identical messages: same wire bytes, same subjects (under the raw stream's prefix),
    // no headers (the relay sends only the expected last sequence); built before the clock
    // starts, so the baseline is JetStream alone.
    let raw_bus = ctx.new_bus("raw")?;
    let mut messages: Vec<(String, Bytes)> = Vec::with_capacity(total as usize);
    let mut after = 0;
    while after < total {
        let page: Vec<SequencedEvent> = store
            .read_log(after, total, SEQUENCE_BATCH_MAX)
            .await
            .context("reading the log back")?;
        let Some(last) = page.last() else {
            bail!("event log has no position {}", after + 1);
        };
        after = last.position;
        messages.extend(
            page.iter()
                .map(|e| (raw_bus.subject(&e.stored.stream), Bytes::from(e.to_wire()))),
        );
    }
    pool.close().await;
    ctx.drop_db(&bench_db.name).await;
    ctx.delete_stream(&ours_bus.stream).await;

    bus::ensure_stream(&ctx.js, &raw_bus).await?;
    let start = Instant::now();
    // Chunked like the relay: send a whole batch, then wait for all of its acks.
    for chunk in messages.chunks(SEQUENCE_BATCH_MAX as usize) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, payload) in chunk {
            let publish = Publish::build().payload(payload.clone());
            acks.push(
                ctx.js
                    .send_publish(subject.clone(), publish)
                    .await
                    .context("raw publish failed")?,
            );
        }
        for ack in acks {
            ack.await.context("raw publish was not acknowledged")?;
        }
    }
    let raw = Throughput {
        events: total,
        elapsed: start.elapsed(),
    };
    let stored = bus::stream_last_sequence(&ctx.js, &raw_bus).await?;
    ensure!(
        stored == total,
        "raw stream holds {stored} events, sent {total}"
    );
    ctx.delete_stream(&raw_bus.stream).await;
    let ratio = ours.per_second() / raw.per_second();
    println!(
        "raw:   {} ev/s  ({:.2} s; same wire bytes, subjects and message ids, chunks of {})\nratio: {:.2}{}",
        thousands(raw.per_second()),
        raw.elapsed.as_secs_f64(),
        SEQUENCE_BATCH_MAX,
        ratio,
        ratio_note(ratio)
    );
    let alone = sequencer_alone(ctx, total).await?;
    println!(
        "diagnostic: sequencer alone (no relay, no NATS) {} ev/s ({:.2} s)",
        thousands(alone.per_second()),
        alone.elapsed.as_secs_f64()
    );
    results.relay = Some(RelayResult {
        events: total,
        ours: ours.per_second(),
        raw: raw.per_second(),
        sequencer_alone: alone.per_second(),
    });
    Ok(())
}

/// Commit instants waiting for their ack, and the histogram the observer fills.
struct LatencyState {
    /// Only positions after this one belong to the paced writer.
    after_position: u64,
    commits: HashMap<Uuid, Instant>,
    /// Acks seen before the writer got back from its append and stored the commit instant.
    acked_early: HashMap<Uuid, Instant>,
    early: u64,
    histogram: Histogram<u64>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

async fn bench_latency(ctx: &Ctx, results: &mut Results) -> Result<()> {
    let settings = &ctx.settings;
    let bench_db = ctx.fresh_db().await?;
    let pool = db::connect(&bench_db.url, LATENCY_WRITERS as u32).await?;
    let store = EventStore::new(pool.clone());
    println!(
        "\n== latency: commit (append returned) → JetStream ack, {LATENCY_EVENTS_PER_COMMAND}-event commands, paced, leader running"
    );

    let mut probe_events = 0;
    let (target, basis) = if let Some(rate) = settings.latency_rate {
        (rate, "--latency-rate".to_owned())
    } else {
        let append_reference = match results.append.iter().find(|c| {
            c.events_per_command == LATENCY_EVENTS_PER_COMMAND
                && c.concurrency == LATENCY_REFERENCE_CONCURRENCY
        }) {
            Some(cell) => cell.ours,
            None => {
                // Run alone: measure the append reference here, before the leader starts; the
                // leader delivers these events first and they are left out of the figures.
                let probe_pool =
                    db::connect(&bench_db.url, LATENCY_REFERENCE_CONCURRENCY as u32).await?;
                let probe = measure(
                    settings,
                    &Writer::Ours(EventStore::new(probe_pool.clone())),
                    LATENCY_REFERENCE_CONCURRENCY,
                    LATENCY_EVENTS_PER_COMMAND,
                )
                .await?;
                probe_pool.close().await;
                // Warmup included: everything in the table is what the leader must deliver.
                let count: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
                    .fetch_one(&pool)
                    .await?;
                probe_events = count as u64;
                println!(
                    "append reference (probed here): {} ev/s",
                    thousands(probe.per_second())
                );
                probe.per_second()
            }
        };
        let append_basis = format!(
            "append {LATENCY_EVENTS_PER_COMMAND}/cmd conc {LATENCY_REFERENCE_CONCURRENCY} ({} ev/s)",
            thousands(append_reference)
        );
        match &results.relay {
            Some(relay) if relay.ours < append_reference => (
                relay.ours * 0.5,
                format!("50% of relay ({} ev/s)", thousands(relay.ours)),
            ),
            _ => (append_reference * 0.5, format!("50% of {append_basis}")),
        }
    };

    let state = Arc::new(Mutex::new(LatencyState {
        after_position: probe_events,
        commits: HashMap::new(),
        acked_early: HashMap::new(),
        early: 0,
        // Fixed bounds (1 µs .. 1 h): `saturating_record` never grows a histogram, it clamps.
        histogram: Histogram::new_with_bounds(1, 3_600_000_000, 3).context("histogram")?,
    }));
    let observer: RelayObserver = {
        let state = state.clone();
        Arc::new(move |batch: &[SequencedEvent], acked: Instant| {
            let Ok(mut s) = state.lock() else { return };
            for event in batch {
                if event.position <= s.after_position {
                    continue;
                }
                let id = event.stored.event_id;
                match s.commits.remove(&id) {
                    Some(committed) => s
                        .histogram
                        .saturating_record(micros(acked.saturating_duration_since(committed))),
                    None => {
                        s.acked_early.insert(id, acked);
                    }
                }
            }
        })
    };

    let bus_config = ctx.new_bus("")?;
    bus::ensure_stream(&ctx.js, &bus_config).await?;
    let leader_pool = db::connect(&bench_db.url, LEADER_POOL).await?;
    let mut leader = start_leader(ctx, leader_pool, &bench_db, &bus_config, Some(observer));
    // The first progress report means leadership is held; a probe backlog must be out first, so
    // the paced writes do not queue behind it.
    let started = Instant::now();
    let ready = async {
        leader
            .progress
            .changed()
            .await
            .context("leader stopped before it led")?;
        wait_for_leader(&mut leader.progress, probe_events, started).await
    }
    .await;
    if let Err(e) = ready {
        leader.stop().await.ok();
        return Err(e);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let commands_per_second = target / LATENCY_EVENTS_PER_COMMAND as f64;
    let commands = (commands_per_second * settings.seconds.as_secs_f64()).ceil() as u64;
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now() + Duration::from_millis(20);
    let mut writers = JoinSet::new();
    for _ in 0..LATENCY_WRITERS {
        let (store, next, state) = (store.clone(), next.clone(), state.clone());
        writers.spawn(async move {
            let (mut events, mut max_lateness) = (0u64, Duration::ZERO);
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                if k >= commands {
                    return Ok::<_, anyhow::Error>((events, max_lateness));
                }
                // Open loop: command k is due at a fixed time whatever happened before, so a
                // slow append shows as lateness instead of a silently lower rate.
                let due = t0 + Duration::from_secs_f64(k as f64 / commands_per_second);
                tokio::time::sleep_until(due.into()).await;
                max_lateness = max_lateness.max(Instant::now().saturating_duration_since(due));
                let request = new_request(LATENCY_EVENTS_PER_COMMAND)?;
                let appended = store.append(&request).await.context("append failed")?;
                let committed = Instant::now();
                let mut s = state
                    .lock()
                    .map_err(|_| anyhow!("latency state poisoned"))?;
                for id in appended.event_ids {
                    match s.acked_early.remove(&id) {
                        // Acked before we looked: the true figure is at most zero by our clock.
                        Some(acked) => {
                            s.early += 1;
                            let us = micros(acked.saturating_duration_since(committed));
                            s.histogram.saturating_record(us);
                        }
                        None => {
                            s.commits.insert(id, committed);
                        }
                    }
                }
                events += LATENCY_EVENTS_PER_COMMAND as u64;
            }
        });
    }
    let (mut written, mut max_lateness) = (0u64, Duration::ZERO);
    let mut failed = None;
    while let Some(done) = writers.join_next().await {
        match done.context("latency writer panicked").and_then(|r| r) {
            Ok((events, lateness)) => {
                written += events;
                max_lateness = max_lateness.max(lateness);
            }
            Err(e) => {
                failed = Some(e);
                writers.abort_all();
            }
        }
    }
    let writing = t0.elapsed();
    let delivered = match failed {
        Some(e) => Err(e),
        None => wait_for_leader(&mut leader.progress, probe_events + written, t0)
            .await
            .map(|_| ()),
    };
    leader.stop().await?;
    delivered?;
    pool.close().await;
    ctx.drop_db(&bench_db.name).await;
    ctx.delete_stream(&bus_config.stream).await;

    let s = state
        .lock()
        .map_err(|_| anyhow!("latency state poisoned"))?;
    let h = &s.histogram;
    let result = LatencyResult {
        target,
        basis,
        achieved: written as f64 / writing.as_secs_f64(),
        p50_us: h.value_at_quantile(0.50),
        p99_us: h.value_at_quantile(0.99),
        max_us: h.max(),
        count: h.len(),
        early: s.early,
        unobserved: s.commits.len(),
        max_lateness,
    };
    println!(
        "target {} ev/s ({}), achieved {} ev/s, {} writers, {:.1} s; writer max lateness {:.1} ms",
        thousands(result.target),
        result.basis,
        thousands(result.achieved),
        LATENCY_WRITERS,
        writing.as_secs_f64(),
        result.max_lateness.as_secs_f64() * 1000.0
    );
    if result.achieved < result.target * 0.95 {
        // Open-loop pacing fell behind: appends and leader together could not carry the target
        // (the capacities above were measured one at a time), so these figures include queueing.
        let note = format!(
            "latency: the writer reached only {} of {} ev/s (up to {:.0} ms behind schedule): the system was overloaded at this rate; try --latency-rate",
            thousands(result.achieved),
            thousands(result.target),
            result.max_lateness.as_secs_f64() * 1000.0
        );
        println!("note: {note}");
        results.notes.push(note);
    }
    println!(
        "p50 {}  p99 {}  max {}  (n={}, acked before the writer saw its commit: {}, never seen acked: {})",
        millis(result.p50_us),
        millis(result.p99_us),
        millis(result.max_us),
        thousands(result.count as f64),
        result.early,
        result.unobserved
    );
    results.latency = Some(result);
    Ok(())
}

fn print_summary(results: &Results) {
    println!("\n== summary");
    for note in &results.notes {
        println!("note: {note}");
    }
    for c in &results.append {
        let ratio = c.ours / c.raw;
        println!(
            "append  events/cmd={:<3} conc={:<3} ours {:>9} ev/s   raw {:>9} ev/s   ratio {:.2}{}",
            c.events_per_command,
            c.concurrency,
            thousands(c.ours),
            thousands(c.raw),
            ratio,
            ratio_note(ratio)
        );
    }
    if let Some(r) = &results.relay {
        let ratio = r.ours / r.raw;
        println!(
            "relay   ours {} ev/s  raw {} ev/s  ratio {:.2}{}  ({} events; sequencer alone {} ev/s)",
            thousands(r.ours),
            thousands(r.raw),
            ratio,
            ratio_note(ratio),
            thousands(r.events as f64),
            thousands(r.sequencer_alone)
        );
    }
    if let Some(l) = &results.latency {
        println!(
            "latency at {} ev/s (target {}): p50 {}  p99 {}  max {}  (n={})",
            thousands(l.achieved),
            thousands(l.target),
            millis(l.p50_us),
            millis(l.p99_us),
            millis(l.max_us),
            thousands(l.count as f64)
        );
    }
}

async fn run(ctx: &Ctx, results: &mut Results) -> Result<()> {
    for phase in [Phase::Append, Phase::Relay, Phase::Latency] {
        if !ctx.settings.runs(phase) {
            continue;
        }
        ctx.interference.take();
        match phase {
            Phase::Append => bench_append(ctx, results).await?,
            Phase::Relay => bench_relay(ctx, results).await?,
            Phase::Latency => bench_latency(ctx, results).await?,
        }
        let (samples, busy, most) = ctx.interference.take();
        if busy > 0 {
            let note = format!(
                "{phase:?} ran beside other Postgres work ({busy} of {samples} samples saw up to {most} foreign active sessions): its figures are disturbed"
            )
            .to_lowercase();
            println!("note: {note}");
            results.notes.push(note);
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    common::init_tracing();
    let args = Args::parse();
    let settings = Settings::from_args(&args)?;
    // Named, so the interference sampler can tell this process's own sessions from others'.
    let admin_options = args
        .database_url
        .parse::<PgConnectOptions>()
        .context("DATABASE_URL is not a valid Postgres URL")?
        .application_name(APPLICATION_NAME);
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(admin_options)
        .await
        .context("cannot connect to Postgres")?;
    let js = bus::connect(&args.nats_url).await?;

    let server: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&admin)
        .await?;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&admin)
        .await?;
    println!(
        "eventlog-bench: Postgres {server} (synchronous_commit={sync}), {} CPUs, {} s per measurement, relay backlog {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        settings.seconds.as_secs_f64(),
        thousands(settings.backlog as f64)
    );

    let ctx = Ctx {
        settings,
        base_url: args.database_url.clone(),
        admin,
        js,
        databases: Mutex::new(Vec::new()),
        streams: Mutex::new(Vec::new()),
        interference: Arc::new(common::Interference::default()),
    };
    let stop_watching = CancellationToken::new();
    let watcher = tokio::spawn(common::watch_interference(
        ctx.admin.clone(),
        APPLICATION_NAME,
        ctx.interference.clone(),
        stop_watching.clone(),
    ));
    let mut results = Results::default();
    let outcome = tokio::select! {
        r = run(&ctx, &mut results) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    stop_watching.cancel();
    watcher.await.ok();
    // Runs after errors and interrupts too: nothing of the benchmark may outlive it.
    ctx.cleanup().await;
    print_summary(&results);
    outcome
}
