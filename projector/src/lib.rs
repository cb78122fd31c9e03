//! The projector process: JetStream consumers that apply events to read models, each batch and its
//! checkpoint in one Postgres transaction.

pub mod catalog;
pub mod disputes;
pub mod notifications;
pub mod tenancy;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use events::bus::consumer::{Consumer, ConsumerConfig};
use events::service::{self, CommonConfig, Readiness};
use events::store::db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Parser)]
#[command(name = "projector", about = "Settlement engine projector")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,
    #[arg(long, env = "SETTLE_LISTEN", default_value = "127.0.0.1:8081")]
    pub listen: String,
    #[command(subcommand)]
    pub command: Option<Subcommand>,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Re-walk the whole hash chain from position 1 and report the first bad position.
    /// Exits 0 when the chain verifies, 1 when it does not.
    VerifyChain,
}

/// Durable consumer (and checkpoint) name of the event catalog projection.
pub const CATALOG_CONSUMER: &str = "projector-catalog";
/// Durable consumer (and checkpoint) name of the tenancy and custody read models; reads that
/// carry `X-Min-Position` wait for this checkpoint.
pub const READ_MODELS_CONSUMER: &str = "projector-read-models";
/// Durable consumer (and checkpoint) name of the notification feed and webhook URLs; feed reads
/// that carry `X-Min-Position` wait for this checkpoint.
pub const NOTIFICATIONS_CONSUMER: &str = "projector-notifications";

pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.common.database_url, config.common.db_connections).await?;
    db::migrate(&pool).await?;
    let js = events::bus::connect(&config.common.nats_url).await?;
    let bus = config.common.bus();
    let consumer = Consumer::new(
        pool.clone(),
        js.clone(),
        ConsumerConfig::new(CATALOG_CONSUMER, bus.clone()),
        catalog::Catalog,
    )
    .await?;
    let consumer = exclusive(consumer, &config, &shutdown);
    let read_models = Consumer::new(
        pool.clone(),
        js.clone(),
        ConsumerConfig::new(READ_MODELS_CONSUMER, bus.clone()),
        tenancy::Tenancy,
    )
    .await?;
    let read_models = exclusive(read_models, &config, &shutdown);
    let notifications = Consumer::new(
        pool.clone(),
        js.clone(),
        ConsumerConfig::new(NOTIFICATIONS_CONSUMER, bus.clone()),
        notifications::Notifications,
    )
    .await?;
    let notifications = exclusive(notifications, &config, &shutdown);

    let readiness: Readiness = {
        let (pool, js) = (pool.clone(), js.clone());
        Arc::new(move || {
            let (pool, js, bus) = (pool.clone(), js.clone(), bus.clone());
            Box::pin(async move {
                let lag = match (
                    events::bus::stream_last_sequence(&js, &bus).await,
                    events::bus::consumer::load_checkpoint(&pool, CATALOG_CONSUMER).await,
                ) {
                    (Ok(last), Ok(checkpoint)) if last <= checkpoint + 10_000 => Ok(()),
                    (Ok(last), Ok(checkpoint)) => {
                        Err(format!("{} events behind", last - checkpoint))
                    }
                    (Err(e), _) => Err(e.to_string()),
                    (_, Err(e)) => Err(e.to_string()),
                };
                let mut checks = service::base_checks(&pool, &js).await;
                checks.push(("lag", lag));
                checks
            })
        })
    };
    tracing::info!(listen = %listener.local_addr()?, "projector listening");
    service::serve(listener, service::ops_router(readiness), shutdown.clone()).await?;
    consumer.await.context("consumer task panicked")??;
    read_models.await.context("consumer task panicked")??;
    notifications.await.context("consumer task panicked")??;
    pool.close().await;
    tracing::info!("projector stopped");
    Ok(())
}

/// Runs a consumer while this replica holds its lock: replicas share the three consumers
/// between them, each applied by exactly one at a time, the others standing by.
fn exclusive<P: events::bus::consumer::Projection + 'static>(
    consumer: Consumer<P>,
    config: &Config,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<anyhow::Result<()>> {
    let (url, shutdown) = (config.common.database_url.clone(), shutdown.clone());
    tokio::spawn(async move { consumer.run_exclusive(&url, shutdown).await })
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
    if let Some(Subcommand::VerifyChain) = config.command {
        let pool = db::connect(&config.common.database_url, 2).await?;
        let report = events::store::verify_chain(&pool).await?;
        println!("{}", verify_report_json(&report));
        std::process::exit(if report.fault.is_none() { 0 } else { 1 });
    }
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    run(listener, config, service::shutdown_on_signal()).await
}
