//! peer-bench: our command path next to a peer's, on the same Postgres server in the same run, so
//! the figures read as "what our write path costs against a widely used Rust event-sourcing
//! library" rather than as numbers without context.
//!
//! The peer is cqrs-es with postgres-es (versions pinned in events/Cargo.toml), used the way its
//! documentation sets it up (`postgres_cqrs`: the plain event-sourced store, no snapshots, no
//! queries). The workload is the same on both sides: a command on one custody aggregate loads
//! the aggregate (folds its events), checks each deposit against the deposits seen so far and
//! appends 1 or 10 `DepositCredited` events, each with a fresh external id; at concurrency 1, 4
//! and 16, each worker owning its own aggregates, which it uses round-robin so that they build
//! up history as the run goes on.
//!
//! - **ours**: `events::store::execute` on an `EventStore` over a fresh database migrated with
//!   our migrations: the stream's state (from the store's in-process cache, or read and folded
//!   when not cached) → decide → one append statement (stream version check, events, command
//!   outcome), with the idempotency look-up and re-load rounds `execute` runs when it must.
//! - **theirs**: `CqrsFramework::execute_with_metadata` over a `PostgresEventRepository` on a
//!   fresh database of its own holding the `events`/`snapshots` tables postgres-es documents:
//!   select every event of the aggregate → deserialize and apply → handle → one transaction with
//!   one INSERT per event.
//!
//! Equal on both sides: the server, the pool (same function, same size: the concurrency), the
//! process and runtime, the inputs (fresh ids made outside the decision) and every aggregate's
//! history (see `run_cell`). Not equal, by design of each library, and so part of what is
//! measured: ours keeps folded states in memory where their default store re-reads and
//! deserializes the whole aggregate per command (so the gap depends on history depth, printed
//! per cell); ours records each command's outcome for idempotency, theirs records nothing of
//! the command; ours encodes events with postcard in one statement, theirs as JSON with one
//! INSERT per event. No projections on their side, no sequencer or relay on ours.
//!
//! Run it with `deploy/stack bench --peer [-- --seconds S --slices N --runs R]`. Output: one line
//! per cell, `peer cqrs-es events/cmd=… conc=… ours_cmd/s=… theirs_cmd/s=… ratio=… ours_p99_ms=…
//! theirs_p99_ms=…` (ratio = ours / theirs; with `--runs` > 1 the median of the runs and a
//! `range` line with the min–max of each figure); lines starting with `#` are notes.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context, Result};
use clap::Parser;
use cqrs_es::event_sink::EventSink;
use hdrhistogram::Histogram;
use postgres_es::{postgres_cqrs, PostgresCqrs};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use events::codec::{Actor, Metadata};
use events::domain::custody::{Custody, DepositCredited, DepositRejection};
use events::domain::event::Timestamp;
use events::domain::money::CurrencyCode;
use events::domain::stream::of;
use events::domain::{CommandId, StreamName};
use events::store::{db, execute, Command, Decision, EventStore, Executed, Loaded};

/// The versions pinned in events/Cargo.toml, for the header.
const PEER: &str = "cqrs-es 0.5.0 + postgres-es 0.5.0";
/// `application_name` of the admin sessions (create/drop database, interference sampling).
const APPLICATION_NAME: &str = "peer-bench";
const CURRENCY: &str = "BTC";
/// Every deposit's quantity: small, so no balance comes near overflowing in any run.
const QUANTITY: i128 = 100;

/// Benchmarks our command path against cqrs-es + postgres-es on the same Postgres.
#[derive(Parser, Debug)]
#[command(name = "peer-bench")]
struct Args {
    /// Passed by `cargo bench` (which runs this); ignored.
    #[arg(long = "bench", hide = true)]
    _cargo_bench: bool,
    /// Admin connection; the benchmark creates (and drops) its two databases through it.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    /// Seconds of each slice (the time-limited side of a pair; the other side then runs the
    /// same commands, however long they take).
    #[arg(long, default_value_t = 1.5)]
    seconds: f64,
    /// Slices per side and cell, alternating ours and theirs.
    #[arg(long, default_value_t = 4)]
    slices: u32,
    /// Runs of every cell; with more than one, each figure is the median and a `range` line
    /// gives min–max.
    #[arg(long, default_value_t = 1)]
    runs: u32,
    /// Aggregates per worker, used round-robin.
    #[arg(long, default_value_t = 50)]
    aggregates: usize,
    /// Events per command (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 10])]
    events: Vec<usize>,
    /// Concurrencies (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 4, 16])]
    concurrency: Vec<usize>,
}

// ---------------------------------------------------------------------------------------------
// Ours

/// The custody state a command decides on: the stream folded (from the store's state cache or
/// snapshot plus the events after it). Kept to this one function so that a change of the
/// `Loaded` API touches one line; with the event-vector API it read
/// `loaded.events(stream).iter().fold(Custody::default(), Custody::evolve)`.
fn custody_of(loaded: &Loaded, stream: &StreamName) -> Custody {
    loaded.aggregate::<Custody>(stream)
}

fn currency() -> CurrencyCode {
    CurrencyCode::parse(CURRENCY).unwrap_or_else(|_| unreachable!("BTC is a currency code"))
}

fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_micros())
}

/// One command's deposits: a fresh deposit id and external id per event, made before the
/// command runs (a decision must be pure, and both sides are given the same inputs).
fn new_deposits(n: usize) -> Vec<(Uuid, String)> {
    (0..n)
        .map(|_| {
            let id = Uuid::new_v4();
            (id, format!("dep-{}", id.simple()))
        })
        .collect()
}

/// Our decision: the deposits one after the other, each decided on the state with the ones
/// before it applied, exactly as the deposit route decides one.
fn decide_deposits(
    mut custody: Custody,
    stream: &StreamName,
    enterprise_id: Uuid,
    deposits: &[(Uuid, String)],
    at: Timestamp,
) -> Result<Decision, DepositRejection> {
    let mut events = Vec::with_capacity(deposits.len());
    for (deposit_id, external_id) in deposits {
        let decided = custody.decide_deposit(
            enterprise_id,
            *deposit_id,
            external_id,
            currency(),
            QUANTITY,
            at,
        )?;
        for event in decided {
            custody = custody.evolve(&event);
            events.push((stream.clone(), event));
        }
    }
    Ok(Decision {
        events,
        outcome: Vec::new(),
    })
}

async fn ours_command(store: &EventStore, enterprise_id: Uuid, n: usize) -> Result<()> {
    let stream = of::custody(enterprise_id);
    let deposits = new_deposits(n);
    let at = now();
    let id = CommandId::from_uuid(Uuid::new_v4());
    let mut request_hash = [0u8; 32];
    request_hash[..16].copy_from_slice(id.as_uuid().as_bytes());
    request_hash[16..].copy_from_slice(Uuid::new_v4().as_bytes());
    let command = Command {
        id,
        request_hash,
        metadata: Metadata {
            command_id: id,
            causation_id: None,
            correlation_id: Uuid::new_v4(),
            actor: Actor::System,
            request_id: None,
            key_id: None,
        },
        nonce: None,
        streams: vec![stream.clone()],
        recorded_at: at,
    };
    let executed = execute(store, &command, |loaded| {
        decide_deposits(
            custody_of(loaded, &stream),
            &stream,
            enterprise_id,
            &deposits,
            at,
        )
    })
    .await?;
    match executed {
        Executed::Committed { .. } => Ok(()),
        other => bail!("ours: expected a commit, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Theirs: the same aggregate written for cqrs-es. The event is our `DepositCredited` (so both
// sides store the same fields); the state and the checks mirror `Custody` for deposits.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
enum PeerEvent {
    DepositCredited(DepositCredited),
}

impl cqrs_es::DomainEvent for PeerEvent {
    fn event_type(&self) -> String {
        match self {
            Self::DepositCredited(_) => "DepositCredited".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_owned()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct PeerDeposit {
    deposit_id: Uuid,
    currency: CurrencyCode,
    quantity: i128,
    at: Timestamp,
}

/// A custody account as cqrs-es wants it: balances per currency and deposits by external id.
#[derive(Debug, Default, Serialize, Deserialize)]
struct PeerCustody {
    balances: BTreeMap<CurrencyCode, i128>,
    deposits: BTreeMap<String, PeerDeposit>,
}

struct CreditDeposits {
    enterprise_id: Uuid,
    deposits: Vec<(Uuid, String)>,
    at: Timestamp,
}

#[derive(Debug, thiserror::Error)]
enum PeerRejection {
    #[error("a deposit quantity must be positive")]
    NotPositive,
    #[error("deposit {0} exists with a different currency or quantity")]
    ExistsWithDifferentAmount(String),
    #[error("the balance would overflow")]
    Overflow,
}

impl cqrs_es::Aggregate for PeerCustody {
    const TYPE: &'static str = "custody";
    type Command = CreditDeposits;
    type Event = PeerEvent;
    type Error = PeerRejection;
    type Services = ();

    /// The checks of `Custody::decide_deposit` (but the external id's length check), deposit by
    /// deposit; `EventSink::write` applies each event before the next is decided, as ours does.
    async fn handle(
        &mut self,
        command: CreditDeposits,
        _services: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), PeerRejection> {
        let currency = currency();
        for (deposit_id, external_id) in command.deposits {
            if QUANTITY <= 0 {
                return Err(PeerRejection::NotPositive);
            }
            if let Some(existing) = self.deposits.get(&external_id) {
                if existing.currency == currency && existing.quantity == QUANTITY {
                    continue;
                }
                return Err(PeerRejection::ExistsWithDifferentAmount(external_id));
            }
            let balance = self.balances.get(&currency).copied().unwrap_or(0);
            balance
                .checked_add(QUANTITY)
                .ok_or(PeerRejection::Overflow)?;
            let event = PeerEvent::DepositCredited(DepositCredited {
                enterprise_id: command.enterprise_id,
                deposit_id,
                external_id,
                currency: currency.clone(),
                quantity: QUANTITY,
                at: command.at,
            });
            sink.write(event, self).await;
        }
        Ok(())
    }

    fn apply(&mut self, event: PeerEvent) {
        match event {
            PeerEvent::DepositCredited(e) => {
                let balance = self.balances.entry(e.currency.clone()).or_insert(0);
                *balance = balance.saturating_add(e.quantity);
                self.deposits.insert(
                    e.external_id,
                    PeerDeposit {
                        deposit_id: e.deposit_id,
                        currency: e.currency,
                        quantity: e.quantity,
                        at: e.at,
                    },
                );
            }
        }
    }
}

/// postgres-es's tables (its repository's `db/init.sql`): one for all events, keyed by
/// aggregate type, id and sequence, and one for snapshots, which the default store never uses.
const PEER_SCHEMA: [&str; 2] = [
    "CREATE TABLE events (
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        sequence bigint NOT NULL CHECK (sequence >= 0),
        event_type text NOT NULL,
        event_version text NOT NULL,
        payload json NOT NULL,
        metadata json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, sequence))",
    "CREATE TABLE snapshots (
        aggregate_type text NOT NULL,
        aggregate_id text NOT NULL,
        last_sequence bigint NOT NULL CHECK (last_sequence >= 0),
        current_snapshot bigint NOT NULL CHECK (current_snapshot >= 0),
        payload json NOT NULL,
        PRIMARY KEY (aggregate_type, aggregate_id, last_sequence))",
];

async fn theirs_command(
    cqrs: &PostgresCqrs<PeerCustody>,
    enterprise_id: Uuid,
    n: usize,
) -> Result<()> {
    let command = CreditDeposits {
        enterprise_id,
        deposits: new_deposits(n),
        at: now(),
    };
    // What our metadata carries, so both sides store comparable metadata with every event.
    let metadata = HashMap::from([
        ("command_id".to_owned(), Uuid::new_v4().to_string()),
        ("correlation_id".to_owned(), Uuid::new_v4().to_string()),
        ("actor".to_owned(), "system".to_owned()),
    ]);
    cqrs.execute_with_metadata(&enterprise_id.to_string(), command, metadata)
        .await
        .map_err(|e| anyhow!("theirs: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Measuring

#[derive(Clone)]
enum Side {
    Ours(EventStore),
    Theirs(Arc<PostgresCqrs<PeerCustody>>),
}

impl Side {
    async fn command(&self, aggregate: Uuid, n: usize) -> Result<()> {
        match self {
            Self::Ours(store) => ours_command(store, aggregate, n).await,
            Self::Theirs(cqrs) => theirs_command(cqrs, aggregate, n).await,
        }
    }
}

#[derive(Clone, Debug)]
enum Limit {
    /// Every worker runs until this much time has passed since the slice started.
    For(Duration),
    /// Worker `w` runs exactly `counts[w]` commands.
    Counts(Vec<u64>),
}

struct Slice {
    /// Commands per worker.
    counts: Vec<u64>,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

fn histogram() -> Result<Histogram<u64>> {
    // Fixed bounds (1 µs .. 10 min): `saturating_record` clamps instead of growing.
    Histogram::new_with_bounds(1, 600_000_000, 3).context("histogram")
}

/// One slice of one side: every worker runs commands on its own aggregates, round-robin from
/// where that side's worker left off. Elapsed runs until the last worker's last command returned.
async fn run_slice(
    side: &Side,
    aggregates: &[Arc<Vec<Uuid>>],
    done: &[u64],
    n: usize,
    limit: &Limit,
) -> Result<Slice> {
    let start = Instant::now();
    let mut workers = JoinSet::new();
    for (w, owned) in aggregates.iter().enumerate() {
        let side = side.clone();
        let owned = owned.clone();
        let offset = done[w];
        let limit = limit.clone();
        workers.spawn(async move {
            let mut latency = histogram()?;
            let mut count = 0u64;
            loop {
                let more = match &limit {
                    Limit::For(d) => start.elapsed() < *d,
                    Limit::Counts(counts) => count < counts[w],
                };
                if !more {
                    return Ok::<_, anyhow::Error>((w, count, latency));
                }
                let index = usize::try_from((offset + count) % owned.len() as u64)?;
                let began = Instant::now();
                side.command(owned[index], n).await?;
                let us = u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX);
                latency.saturating_record(us);
                count += 1;
            }
        });
    }
    let mut counts = vec![0; aggregates.len()];
    let mut latency_us = histogram()?;
    // An error returns at once; dropping the JoinSet aborts the other workers.
    while let Some(joined) = workers.join_next().await {
        let (w, count, latency) = joined.context("benchmark worker panicked")??;
        counts[w] = count;
        latency_us.add(&latency).context("histogram")?;
    }
    Ok(Slice {
        counts,
        elapsed: start.elapsed(),
        latency_us,
    })
}

/// One side's figures in one cell.
#[derive(Clone, Copy, Debug)]
struct Figures {
    per_second: f64,
    p99_ms: f64,
}

#[derive(Clone, Copy, Debug)]
struct CellRun {
    ours: Figures,
    theirs: Figures,
    /// Events per aggregate at the end of the cell (the same on both sides).
    history: f64,
}

struct Totals {
    commands: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Totals {
    fn new() -> Result<Self> {
        Ok(Self {
            commands: 0,
            elapsed: Duration::ZERO,
            latency_us: histogram()?,
        })
    }

    fn add(&mut self, slice: &Slice) -> Result<()> {
        self.commands += slice.counts.iter().sum::<u64>();
        self.elapsed += slice.elapsed;
        self.latency_us.add(&slice.latency_us).context("histogram")
    }

    fn figures(&self) -> Figures {
        Figures {
            per_second: self.commands as f64 / self.elapsed.as_secs_f64().max(1e-9),
            p99_ms: self.latency_us.value_at_quantile(0.99) as f64 / 1000.0,
        }
    }
}

/// One cell: both sides on fresh aggregates, warmed up, then measured in alternating slices.
///
/// Fairness: each pair of slices has one side run for `--seconds` and the other run exactly the
/// same number of commands per worker, on the same aggregates in the same order, so after every
/// pair both sides' aggregates have identical histories — a load that grows with history costs
/// both sides the same. Which side leads (and goes first) alternates from pair to pair, so drift
/// of the shared machine and the growth within a pair hit both sides alike. Both pools are made
/// by the same function with the same size (the concurrency), so neither side waits for a
/// connection or pays a different connection setup.
async fn run_cell(
    args: &Args,
    ours_url: &str,
    theirs_url: &str,
    n: usize,
    concurrency: usize,
) -> Result<CellRun> {
    let size = u32::try_from(concurrency)?;
    let ours_pool = db::connect(ours_url, size).await?;
    let theirs_pool = db::connect(theirs_url, size).await?;
    // A new store per cell: its cache starts empty, as in a freshly started process.
    let sides = [
        Side::Ours(EventStore::new(ours_pool.clone())),
        Side::Theirs(Arc::new(postgres_cqrs(theirs_pool.clone(), vec![], ()))),
    ];
    let aggregates: Vec<Arc<Vec<Uuid>>> = (0..concurrency)
        .map(|_| Arc::new((0..args.aggregates).map(|_| Uuid::new_v4()).collect()))
        .collect();
    let mut done = [vec![0u64; concurrency], vec![0u64; concurrency]];

    // Warm-up, not measured: one command on every aggregate, each side (opens every connection,
    // prepares the statements, creates the streams).
    let round = Limit::Counts(vec![args.aggregates as u64; concurrency]);
    for (side, done) in sides.iter().zip(done.iter_mut()) {
        let slice = run_slice(side, &aggregates, done, n, &round).await?;
        for (d, c) in done.iter_mut().zip(&slice.counts) {
            *d += c;
        }
    }

    let mut totals = [Totals::new()?, Totals::new()?];
    let seconds = Duration::from_secs_f64(args.seconds);
    for pair in 0..args.slices {
        let (lead, follow) = if pair.is_multiple_of(2) {
            (0, 1)
        } else {
            (1, 0)
        };
        let led = run_slice(
            &sides[lead],
            &aggregates,
            &done[lead],
            n,
            &Limit::For(seconds),
        )
        .await?;
        let followed = run_slice(
            &sides[follow],
            &aggregates,
            &done[follow],
            n,
            &Limit::Counts(led.counts.clone()),
        )
        .await?;
        for (side, slice) in [(lead, &led), (follow, &followed)] {
            totals[side].add(slice)?;
            for (d, c) in done[side].iter_mut().zip(&slice.counts) {
                *d += c;
            }
        }
    }
    ensure!(
        done[0] == done[1],
        "both sides must have run the same commands"
    );
    ours_pool.close().await;
    theirs_pool.close().await;
    let commands: u64 = done[0].iter().sum();
    Ok(CellRun {
        ours: totals[0].figures(),
        theirs: totals[1].figures(),
        history: (commands * n as u64) as f64 / (concurrency * args.aggregates) as f64,
    })
}

// ---------------------------------------------------------------------------------------------
// Databases, interference, reporting

struct Databases {
    admin: PgPool,
    base_url: String,
    made: Mutex<Vec<String>>,
}

impl Databases {
    /// A new empty database; its name is recorded first, so a half-made one is dropped too.
    async fn create(&self, role: &str) -> Result<String> {
        let mut hex = Uuid::new_v4().simple().to_string();
        hex.truncate(12);
        let name = format!("bench_peer_{role}_{hex}");
        self.made
            .lock()
            .map_err(|_| anyhow!("lock poisoned"))?
            .push(name.clone());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&self.admin)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        common::with_database(&self.base_url, &name)
    }

    async fn drop_all(&self) {
        let names = self.made.lock().map(|m| m.clone()).unwrap_or_default();
        for name in names {
            // A closed pool can still be handing a connection back; give it a moment, then
            // force whatever session of ours is left.
            let mut dropped = false;
            for statement in [
                format!("DROP DATABASE IF EXISTS {name}"),
                format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
            ] {
                tokio::time::sleep(Duration::from_millis(200)).await;
                if sqlx::query(&statement).execute(&self.admin).await.is_ok() {
                    dropped = true;
                    break;
                }
            }
            if !dropped {
                eprintln!("peer-bench: cannot drop database {name}; drop it by hand");
            }
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

fn min_max(values: &[f64]) -> (f64, f64) {
    values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
            (lo.min(v), hi.max(v))
        })
}

/// The cells' lines: per figure the median over the runs (the only run, with one), the ratio
/// being the median of the runs' ratios; with several runs a `range` line follows each.
fn print_cells(cells: &[((usize, usize), Vec<CellRun>)]) {
    for ((n, concurrency), runs) in cells {
        let column = |f: &dyn Fn(&CellRun) -> f64| runs.iter().map(f).collect::<Vec<f64>>();
        let ours = column(&|r| r.ours.per_second);
        let theirs = column(&|r| r.theirs.per_second);
        let ratio = column(&|r| r.ours.per_second / r.theirs.per_second.max(1e-9));
        let ours_p99 = column(&|r| r.ours.p99_ms);
        let theirs_p99 = column(&|r| r.theirs.p99_ms);
        println!(
            "peer cqrs-es events/cmd={n} conc={concurrency} ours_cmd/s={:.0} theirs_cmd/s={:.0} ratio={:.2} ours_p99_ms={:.2} theirs_p99_ms={:.2}",
            median(&mut ours.clone()),
            median(&mut theirs.clone()),
            median(&mut ratio.clone()),
            median(&mut ours_p99.clone()),
            median(&mut theirs_p99.clone()),
        );
        if runs.len() > 1 {
            let range = |v: &[f64], decimals: usize| {
                let (lo, hi) = min_max(v);
                format!("{lo:.decimals$}-{hi:.decimals$}")
            };
            println!(
                "range cqrs-es events/cmd={n} conc={concurrency} runs={} ours_cmd/s={} theirs_cmd/s={} ratio={} ours_p99_ms={} theirs_p99_ms={}",
                runs.len(),
                range(&ours, 0),
                range(&theirs, 0),
                range(&ratio, 2),
                range(&ours_p99, 2),
                range(&theirs_p99, 2),
            );
        }
    }
}

async fn run(
    args: &Args,
    databases: &Databases,
    interference: &common::Interference,
) -> Result<Vec<((usize, usize), Vec<CellRun>)>> {
    let ours_url = databases.create("ours").await?;
    let pool = db::connect(&ours_url, 1).await?;
    db::migrate(&pool).await?;
    pool.close().await;
    let theirs_url = databases.create("theirs").await?;
    let pool = db::connect(&theirs_url, 1).await?;
    for statement in PEER_SCHEMA {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .context("cannot create the postgres-es tables")?;
    }
    pool.close().await;

    let mut cells: Vec<((usize, usize), Vec<CellRun>)> = Vec::new();
    for &n in &args.events {
        for &concurrency in &args.concurrency {
            cells.push(((n, concurrency), Vec::new()));
        }
    }
    for run in 1..=args.runs {
        for ((n, concurrency), runs) in &mut cells {
            interference.take();
            let cell = run_cell(args, &ours_url, &theirs_url, *n, *concurrency).await?;
            println!(
                "# run {run}/{} events/cmd={n} conc={concurrency}: ours {:.0} cmd/s p99 {:.2} ms, theirs {:.0} cmd/s p99 {:.2} ms, ratio {:.2}; {:.0} events per aggregate at the end",
                args.runs,
                cell.ours.per_second,
                cell.ours.p99_ms,
                cell.theirs.per_second,
                cell.theirs.p99_ms,
                cell.ours.per_second / cell.theirs.per_second.max(1e-9),
                cell.history,
            );
            let (samples, busy, most) = interference.take();
            if busy > 0 {
                println!(
                    "# note: this cell ran beside other Postgres work ({busy} of {samples} samples saw up to {most} foreign active sessions): its figures are disturbed"
                );
            }
            runs.push(cell);
        }
    }
    Ok(cells)
}

#[tokio::main]
async fn main() -> Result<()> {
    common::init_tracing();
    let args = Args::parse();
    ensure!(
        args.seconds.is_finite() && args.seconds > 0.0,
        "--seconds must be positive"
    );
    ensure!(args.slices > 0, "--slices must be positive");
    ensure!(args.runs > 0, "--runs must be positive");
    ensure!(args.aggregates > 0, "--aggregates must be positive");
    ensure!(
        args.events.iter().all(|&n| n > 0) && args.concurrency.iter().all(|&c| c > 0),
        "--events and --concurrency must be positive"
    );

    // Named, so the interference sampler can tell this process's own sessions from others'.
    let admin_options = args
        .database_url
        .parse::<PgConnectOptions>()
        .context("DATABASE_URL is not a valid Postgres URL")?
        .application_name(APPLICATION_NAME)
        // DROP DATABASE waits for a checkpoint; sqlx would log it as a slow statement.
        .disable_statement_logging();
    let admin = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(admin_options)
        .await
        .context("cannot connect to Postgres")?;
    let server: String = sqlx::query_scalar("SHOW server_version")
        .fetch_one(&admin)
        .await?;
    let sync: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&admin)
        .await?;
    println!(
        "# peer-bench: ours (events::store::execute) vs {PEER} (postgres_cqrs: event store, no snapshots), Postgres {server} (synchronous_commit={sync}), {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    println!(
        "# {} slices per side per cell of {} s (the other side of each pair runs the same commands), {} aggregates per worker, {} run(s)",
        args.slices, args.seconds, args.aggregates, args.runs
    );

    let databases = Databases {
        admin: admin.clone(),
        base_url: args.database_url.clone(),
        made: Mutex::new(Vec::new()),
    };
    let interference = Arc::new(common::Interference::default());
    let stop_watching = CancellationToken::new();
    let watcher = tokio::spawn(common::watch_interference(
        admin.clone(),
        APPLICATION_NAME,
        interference.clone(),
        stop_watching.clone(),
    ));
    let outcome = tokio::select! {
        r = run(&args, &databases, &interference) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    stop_watching.cancel();
    watcher.await.ok();
    // Runs after errors and interrupts too: nothing of the benchmark may outlive it.
    databases.drop_all().await;
    print_cells(&outcome?);
    Ok(())
}
