//! The projector process: JetStream consumers that apply events to read models, each batch and its
//! checkpoint in one Postgres transaction. The read models and the notifications are split into
//! partitions (docs/decisions/0009-partitioned-projectors.md) that any number of projector
//! instances share through leases; the event catalog is one partition. Operators' commands:
//! `status`, `rebuild`, `replay`, `parked`, `verify-chain`.

pub mod audit_cli;
pub mod baseline;
pub mod catalog;
pub mod notifications;
pub mod readmodels;
pub mod rebuild;
pub mod route;
pub mod synthetic;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use events::bus::consumer::{Consumer, ConsumerConfig};
use events::bus::partitions::{self, GroupSpec, LeaseSettings};
use events::bus::BusConfig;
use events::service::{self, CommonConfig, Readiness};
use events::store::db;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use route::Directory;

#[derive(Clone, Debug, Parser)]
#[command(name = "projector", about = "Settlement engine projector")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,
    #[arg(long, env = "SETTLE_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: String,
    #[command(flatten)]
    pub scale: ScaleConfig,
    #[command(subcommand)]
    pub command: Option<Subcommand>,
}

/// How the projector shares its work with other instances.
#[derive(Clone, Debug, clap::Args)]
pub struct ScaleConfig {
    /// Partitions of the read models and of the notifications. Every instance must be run with
    /// the same value; changing it needs `projector rebuild --partitions N` (ADR 0009).
    #[arg(long, env = "SETTLE_PROJECTOR_PARTITIONS", default_value_t = PARTITIONS_DEFAULT)]
    pub partitions: u32,
    /// Seconds of the lease period: partitions of an instance that dies are taken over within
    /// it; instances renew their leases every quarter of it.
    #[arg(long, env = "SETTLE_PROJECTOR_LEASE_SECONDS", default_value_t = LEASE_SECONDS_DEFAULT)]
    pub lease_seconds: f64,
    /// Most events a partition applies in one transaction.
    #[arg(long, env = "SETTLE_PROJECTOR_BATCH_EVENTS", default_value_t = BATCH_EVENTS_DEFAULT)]
    pub batch_events: usize,
    /// This instance's name among the instances (default: host, pid and a random part).
    #[arg(long, env = "SETTLE_PROJECTOR_INSTANCE")]
    pub instance: Option<String>,
    /// Record every applied batch's positions in `consumer_batches` (an audit for tests).
    #[arg(long, env = "SETTLE_PROJECTOR_AUDIT_BATCHES")]
    pub audit_batches: bool,
}

/// Partitions of the read models and notifications unless configured otherwise: a few per core
/// of a small deployment, so that three instances each get some.
pub const PARTITIONS_DEFAULT: u32 = 6;
/// Lease period unless configured otherwise.
pub const LEASE_SECONDS_DEFAULT: f64 = 8.0;
/// Events per read of the stream (and at most per partition transaction) unless configured
/// otherwise. A read returns what the stream has, up to this many: live, batches stay small;
/// on a backlog, bigger batches fold more updates of the same rows into one write and pay each
/// partition's statements once per more events (measured in docs/benchmarks.md: 2,000 → 20,000
/// took one instance from about 51k to 84k events/s). A partition's transaction holds an xid
/// only while it writes, so the sequencer's horizon waits for the write, not the batch.
pub const BATCH_EVENTS_DEFAULT: usize = 20_000;
/// How long a read of the stream waits for the first message.
pub const FETCH_WAIT: Duration = Duration::from_millis(500);

impl Default for ScaleConfig {
    fn default() -> Self {
        Self {
            partitions: PARTITIONS_DEFAULT,
            lease_seconds: LEASE_SECONDS_DEFAULT,
            batch_events: BATCH_EVENTS_DEFAULT,
            instance: None,
            audit_batches: false,
        }
    }
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Re-walk the whole hash chain from position 1 and report the first bad position.
    /// Exits 0 when the chain verifies, 1 when it does not.
    VerifyChain,
    /// Events a consumer could not apply: list them, or retry them once the cause is fixed.
    #[command(subcommand)]
    Parked(events::bus::parked::ParkedCommand),
    /// Partitions, their owners, checkpoints, lag and parked events.
    Status {
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Rebuild projections from the event log in Postgres into shadow tables, catch up to the
    /// live partitions, compare digests with the live tables (listing differences), and swap.
    Rebuild(rebuild::RebuildArgs),
    /// Build the read models as they stood at a position into a separate schema.
    Replay(rebuild::ReplayArgs),
}

/// A consumer group of this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Catalog,
    ReadModels,
    Notifications,
}

/// Consumer group (and partition name prefix) of the event catalog.
pub const CATALOG_CONSUMER: &str = "projector-catalog";
/// Consumer group of the tenancy, custody and settlement read models; reads that carry
/// `X-Min-Position` wait for its partitions.
pub const READ_MODELS_CONSUMER: &str = "projector-read-models";
/// Consumer group of the notification feed and webhook URLs; feed reads that carry
/// `X-Min-Position` wait for its partitions.
pub const NOTIFICATIONS_CONSUMER: &str = "projector-notifications";

impl Group {
    pub const ALL: [Group; 3] = [Group::Catalog, Group::ReadModels, Group::Notifications];

    pub fn name(self) -> &'static str {
        match self {
            Self::Catalog => CATALOG_CONSUMER,
            Self::ReadModels => READ_MODELS_CONSUMER,
            Self::Notifications => NOTIFICATIONS_CONSUMER,
        }
    }

    /// The projection name operators use (`rebuild --projection NAME`).
    pub fn projection(self) -> &'static str {
        match self {
            Self::Catalog => "catalog",
            Self::ReadModels => "read-models",
            Self::Notifications => "notifications",
        }
    }

    pub fn by_projection(name: &str) -> anyhow::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|g| g.projection() == name || g.name() == name)
            .with_context(|| {
                format!("unknown projection {name}; one of catalog, read-models, notifications")
            })
    }

    /// Partitions of the group: the catalog is small and one partition; the others as configured.
    pub fn partitions(self, scale: &ScaleConfig) -> u32 {
        match self {
            Self::Catalog => 1,
            Self::ReadModels | Self::Notifications => scale.partitions,
        }
    }

    pub fn spec(self, scale: &ScaleConfig) -> GroupSpec {
        GroupSpec::new(self.name(), self.partitions(scale))
    }

    /// The tables the group's projection writes, rebuilt and swapped together.
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Self::Catalog => &catalog::TABLES,
            Self::ReadModels => &readmodels::TABLES,
            Self::Notifications => &notifications::TABLES,
        }
    }

    /// Tables the projection writes that are not its own (kept by others; a rebuild writes its
    /// copies aside and throws them away).
    pub fn sinks(self) -> &'static [&'static str] {
        match self {
            Self::Notifications => &["webhook_deliveries"],
            _ => &[],
        }
    }
}

/// A group's projection for partition `partition` of `partitions`, as one type for the
/// commands that run any of them (parked retries, rebuilds).
#[derive(Debug)]
pub enum AnyProjection {
    Catalog(catalog::Catalog),
    ReadModels(readmodels::ReadModels),
    Notifications(notifications::Notifications),
}

impl AnyProjection {
    pub fn new(group: Group, partition: u32, partitions: u32, directory: Arc<Directory>) -> Self {
        match group {
            Group::Catalog => Self::Catalog(catalog::Catalog),
            Group::ReadModels => Self::ReadModels(readmodels::ReadModels::new(
                partition, partitions, directory,
            )),
            Group::Notifications => Self::Notifications(notifications::Notifications::new(
                partition, partitions, directory,
            )),
        }
    }
}

impl events::bus::consumer::Projection for AnyProjection {
    async fn apply(
        &mut self,
        tx: &mut sqlx::PgConnection,
        events: &[events::codec::SequencedEvent],
    ) -> anyhow::Result<()> {
        match self {
            Self::Catalog(p) => p.apply(tx, events).await,
            Self::ReadModels(p) => p.apply(tx, events).await,
            Self::Notifications(p) => p.apply(tx, events).await,
        }
    }

    async fn prepare(
        &mut self,
        conn: &mut sqlx::PgConnection,
        events: &[events::codec::SequencedEvent],
    ) -> anyhow::Result<()> {
        match self {
            Self::Catalog(p) => p.prepare(conn, events).await,
            Self::ReadModels(p) => p.prepare(conn, events).await,
            Self::Notifications(p) => p.prepare(conn, events).await,
        }
    }

    fn streams_touched(
        &self,
        event: &events::codec::SequencedEvent,
    ) -> Vec<events::domain::StreamName> {
        match self {
            Self::Catalog(p) => p.streams_touched(event),
            Self::ReadModels(p) => p.streams_touched(event),
            Self::Notifications(p) => p.streams_touched(event),
        }
    }
}

/// Every partition consumer of every group, with its group and partition number.
pub fn partition_consumers(scale: &ScaleConfig) -> Vec<(Group, u32, String)> {
    Group::ALL
        .into_iter()
        .flat_map(|g| {
            (0..g.partitions(scale))
                .map(move |k| (g, k, partitions::partition_consumer(g.name(), k)))
        })
        .collect()
}

fn lease_settings(scale: &ScaleConfig) -> anyhow::Result<LeaseSettings> {
    let period = Duration::try_from_secs_f64(scale.lease_seconds)
        .ok()
        .filter(|p| *p >= Duration::from_millis(200))
        .context("SETTLE_PROJECTOR_LEASE_SECONDS must be a number of seconds of at least 0.2")?;
    Ok(LeaseSettings {
        period,
        instance: scale
            .instance
            .clone()
            .unwrap_or_else(partitions::instance_name),
    })
}

/// Removes the durable consumers of the unpartitioned projector (ADR 0009): their cursors
/// would only hold messages in the stream's bookkeeping.
async fn remove_legacy_durables(js: &async_nats::jetstream::Context, bus: &BusConfig) {
    if let Ok(stream) = js.get_stream(&bus.stream).await {
        for group in Group::ALL {
            let _ = stream.delete_consumer(group.name()).await;
        }
    }
}

pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Before anything records a metric.
    events::service::install_metrics();
    // The recorder first, so what the consumers report from their start is kept.
    let _ = service::metrics_handle();
    let pool = db::connect(&config.common.database_url, config.common.db_connections).await?;
    db::migrate(&pool).await?;
    let js = events::bus::connect(&config.common.nats_url).await?;
    let bus = config.common.bus();
    remove_legacy_durables(&js, &bus).await;
    let lease = lease_settings(&config.scale)?;
    let directory = Arc::new(Directory::default());
    tracing::info!(instance = %lease.instance, partitions = config.scale.partitions, "projector instance");
    let mut groups = Vec::new();
    for group in Group::ALL {
        let spec = group.spec(&config.scale);
        let partitions = spec.partitions;
        let (group_pool, directory) = (pool.clone(), directory.clone());
        let audit = config.scale.audit_batches.then(|| lease.instance.clone());
        let consumer_bus = bus.clone();
        let consumer_js = js.clone();
        let make = move |partition: u32, name: String| {
            let (pool, js, bus, directory) = (
                group_pool.clone(),
                consumer_js.clone(),
                consumer_bus.clone(),
                directory.clone(),
            );
            let audit = audit.clone();
            async move {
                let mut consumer = ConsumerConfig::new(name, bus);
                consumer.audit_instance = audit;
                // Read models are applied again after a crash (ADR 0009).
                consumer.asynchronous_commit = true;
                let projection = AnyProjection::new(group, partition, partitions, directory);
                Consumer::new(pool, js, consumer, projection).await
            }
        };
        let run = partitions::GroupRun {
            spec,
            lease: lease.clone(),
            bus: bus.clone(),
            batch_max: config.scale.batch_events.max(1),
            fetch_wait: FETCH_WAIT,
        };
        groups.push(tokio::spawn(partitions::run_group(
            pool.clone(),
            js.clone(),
            run,
            make,
            shutdown.clone(),
        )));
    }

    let readiness: Readiness = {
        let (pool, js) = (pool.clone(), js.clone());
        let consumers: Vec<String> = partition_consumers(&config.scale)
            .into_iter()
            .map(|(_, _, c)| c)
            .collect();
        Arc::new(move || {
            let (pool, js, bus, consumers) =
                (pool.clone(), js.clone(), bus.clone(), consumers.clone());
            Box::pin(async move {
                let mut checks = service::base_checks(&pool, &js).await;
                let names: Vec<&str> = consumers.iter().map(String::as_str).collect();
                checks.extend(
                    events::bus::consumer::readiness_checks(&pool, &js, &bus, &names).await,
                );
                for group in Group::ALL {
                    let name = service::check_name(format!("owners:{}", group.name()));
                    checks.push((name, partitions::ownership_check(&pool, group.name()).await));
                }
                checks
            })
        })
    };
    tracing::info!(listen = %listener.local_addr()?, "projector listening");
    service::serve(listener, service::ops_router(readiness), shutdown.clone()).await?;
    for group in groups {
        group.await.context("consumer group task panicked")??;
    }
    pool.close().await;
    tracing::info!("projector stopped");
    Ok(())
}

/// `projector parked retry`: re-applies the parked events of each partition consumer (or only
/// `consumer`'s; only the streams of the event at `position`) with the partition's projection.
pub async fn retry_parked(
    pool: &PgPool,
    scale: &ScaleConfig,
    consumer: Option<&str>,
    position: Option<u64>,
) -> anyhow::Result<Vec<events::bus::parked::RetryReport>> {
    use events::bus::parked::{check_consumer, retry};
    let all = partition_consumers(scale);
    let names: Vec<&str> = all.iter().map(|(_, _, c)| c.as_str()).collect();
    check_consumer(consumer, &names)?;
    let directory = Arc::new(Directory::default());
    let mut reports = Vec::new();
    for (group, partition, name) in &all {
        if consumer.is_some_and(|c| c != name) {
            continue;
        }
        let mut projection = AnyProjection::new(
            *group,
            *partition,
            group.partitions(scale),
            directory.clone(),
        );
        reports.push(retry(pool, name, &mut projection, position).await?);
    }
    Ok(reports)
}

/// `projector parked …`; returns the exit code.
pub async fn parked_command(
    pool: &PgPool,
    scale: &ScaleConfig,
    command: &events::bus::parked::ParkedCommand,
) -> anyhow::Result<i32> {
    use events::bus::parked::{check_consumer, print_list, print_reports, ParkedCommand};
    match command {
        ParkedCommand::List { consumer } => {
            let all = partition_consumers(scale);
            let names: Vec<&str> = all.iter().map(|(_, _, c)| c.as_str()).collect();
            check_consumer(consumer.as_deref(), &names)?;
            print_list(pool, consumer.as_deref()).await
        }
        ParkedCommand::Retry { consumer, position } => {
            print_reports(&retry_parked(pool, scale, consumer.as_deref(), *position).await?)
        }
    }
}

/// `projector status`: one line per partition; returns the exit code (1 when a partition has
/// no live owner or something is parked, so scripts can alert on it).
pub async fn status_command(pool: &PgPool, json: bool) -> anyhow::Result<i32> {
    let groups: Vec<&str> = Group::ALL.iter().map(|g| g.name()).collect();
    let rows = partitions::status(pool, &groups).await?;
    if json {
        for row in &rows {
            println!("{}", serde_json::to_string(row)?);
        }
    } else {
        println!(
            "{:<26} {:>4} {:<36} {:>12} {:>10} {:>7}  LEASE UNTIL",
            "GROUP", "PART", "OWNER", "CHECKPOINT", "LAG", "PARKED"
        );
        for r in &rows {
            println!(
                "{:<26} {:>4} {:<36} {:>12} {:>10} {:>7}  {}",
                r.group,
                r.partition,
                r.owner.as_deref().unwrap_or("-"),
                r.checkpoint,
                r.lag,
                r.parked,
                r.lease_until.as_deref().unwrap_or("-")
            );
        }
    }
    let healthy = rows.iter().all(|r| r.owner.is_some() && r.parked == 0);
    Ok(if healthy { 0 } else { 1 })
}

/// The auditor's view of a verification, as JSON.
pub fn verify_report_json(report: &events::store::ChainReport) -> serde_json::Value {
    let fault = match &report.fault {
        None => serde_json::Value::Null,
        Some(events::store::ChainFault::HashMismatch { position }) => {
            serde_json::json!({"kind": "hashMismatch", "position": position})
        }
        Some(events::store::ChainFault::Gap { expected, found }) => {
            serde_json::json!({"kind": "gap", "position": expected, "found": found})
        }
    };
    serde_json::json!({
        "verified": report.fault.is_none(),
        "checkedPositions": report.checked,
        "headHash": hex::encode(report.head_hash),
        "firstFault": fault,
    })
}

pub async fn main_entry() -> anyhow::Result<()> {
    service::init_tracing();
    let config = Config::parse();
    if let Some(command) = &config.command {
        let pool = db::connect(&config.common.database_url, 4).await?;
        let code = match command {
            Subcommand::VerifyChain => {
                let report = events::store::verify_chain(&pool).await?;
                println!("{}", verify_report_json(&report));
                if report.fault.is_none() {
                    0
                } else {
                    1
                }
            }
            Subcommand::Parked(command) => {
                db::migrate(&pool).await?;
                parked_command(&pool, &config.scale, command).await?
            }
            Subcommand::Status { json } => {
                db::migrate(&pool).await?;
                status_command(&pool, *json).await?
            }
            Subcommand::Rebuild(args) => {
                db::migrate(&pool).await?;
                rebuild::rebuild_command(&pool, &config, args).await?
            }
            Subcommand::Replay(args) => {
                db::migrate(&pool).await?;
                rebuild::replay_command(&pool, &config, args).await?
            }
        };
        pool.close().await;
        std::process::exit(code);
    }
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    run(listener, config, service::shutdown_on_signal()).await
}
