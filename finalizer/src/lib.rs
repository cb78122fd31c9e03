//! The finalizer process: turns due work into commands (docs/api/lifecycle.md, ADR 0004). Its
//! consumer keeps the due-work table (dispute and top-up deadlines, retries) from the event stream;
//! its worker claims what is due and finalizes or executes it through the one write path; its
//! deliverer sends the notification feed's webhooks. Any number of finalizers may run: leases
//! spread the work, and the store makes every step happen once.

pub mod due;
pub mod webhooks;
pub mod worker;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use events::bus::consumer::{Consumer, ConsumerConfig};
use events::service::{self, CommonConfig, Readiness};
use events::store::{db, EventStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use due::{DueWork, DUE_WORK_CONSUMER};
use worker::{Worker, WorkerConfig};

#[derive(Clone, Debug, Parser)]
#[command(name = "finalizer", about = "Settlement engine finalizer")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,
    #[arg(long, env = "SETTLE_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: String,
    /// Seconds after a failed execution before it is tried again.
    #[arg(long, env = "SETTLE_RETRY_SECONDS", default_value_t = 60.0)]
    pub retry_seconds: f64,
    /// Milliseconds between looks for due work when none was due.
    #[arg(long, env = "SETTLE_FINALIZER_POLL_MS", default_value_t = 50)]
    pub poll_ms: u64,
    /// Seconds a claim keeps other finalizers off a due row; after a crash, its rows wait this
    /// long before another finalizer takes them over.
    #[arg(long, env = "SETTLE_FINALIZER_LEASE_SECONDS", default_value_t = 30.0)]
    pub lease_seconds: f64,
    /// Seconds ahead of their deadline that due settlements have their streams loaded, so they
    /// are decided without a read when they fall due (a cache fill only; 0 turns it off).
    #[arg(long, env = "SETTLE_FINALIZER_WARM_SECONDS", default_value_t = 5.0)]
    pub warm_seconds: f64,
    #[command(flatten)]
    pub webhooks: webhooks::WebhookConfig,
    /// Development mode: without `SETTLE_WEBHOOK_SEED`, sign webhooks with the public
    /// development key (logged loudly) instead of refusing to start. Local stacks and tests only.
    #[arg(long, env = "SETTLE_DEVELOPMENT", value_parser = clap::builder::BoolishValueParser::new())]
    pub development: bool,
    #[command(subcommand)]
    pub command: Option<Subcommand>,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Events the due-work consumer could not apply: list them, or retry them once the cause
    /// is fixed.
    #[command(subcommand)]
    Parked(events::bus::parked::ParkedCommand),
}

/// Every consumer this process runs; readiness covers each.
pub const CONSUMERS: [&str; 1] = [DUE_WORK_CONSUMER];

pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Before anything records a metric.
    events::service::install_metrics();
    // Secrets and settings first: a missing signing seed or a bad allow-list stops the process
    // before it touches anything.
    let signer = config.webhooks.signer(config.development)?;
    let sender = webhooks::Sender::new(
        config.webhooks.allow_list()?,
        Duration::from_millis(config.webhooks.timeout_ms),
        webhooks::system_lookup(),
    )?;
    // The recorder first, so what the consumers report from their start is kept.
    let _ = service::metrics_handle();
    let pool = db::connect(&config.common.database_url, config.common.db_connections).await?;
    db::migrate(&pool).await?;
    let js = events::bus::connect(&config.common.nats_url).await?;
    let bus = config.common.bus();
    let retry_after = retry_after(&config)?;
    let consumer = Consumer::new(
        pool.clone(),
        js.clone(),
        ConsumerConfig::new(DUE_WORK_CONSUMER, bus.clone()),
        DueWork { retry_after },
    )
    .await?;
    let consumer = {
        let (url, shutdown) = (config.common.database_url.clone(), shutdown.clone());
        tokio::spawn(async move { consumer.run_exclusive(&url, shutdown).await })
    };
    let lease = Duration::try_from_secs_f64(config.lease_seconds.max(0.1))
        .context("SETTLE_FINALIZER_LEASE_SECONDS is not a number of seconds")?;
    let worker = Worker::new(
        EventStore::new(pool.clone()),
        WorkerConfig {
            idle_poll: Duration::from_millis(config.poll_ms),
            lease,
            warm_ahead: Duration::try_from_secs_f64(config.warm_seconds.max(0.0))
                .context("SETTLE_FINALIZER_WARM_SECONDS is not a number of seconds")?,
            ..WorkerConfig::default()
        },
    );
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    let deliverer = webhooks::Deliverer::with(pool.clone(), &config.webhooks, signer, sender);
    let deliveries = tokio::spawn(deliverer.run(shutdown.clone()));

    let readiness: Readiness = {
        let (pool, js) = (pool.clone(), js.clone());
        Arc::new(move || {
            let (pool, js, bus) = (pool.clone(), js.clone(), bus.clone());
            Box::pin(async move {
                let mut checks = service::base_checks(&pool, &js).await;
                checks.extend(
                    events::bus::consumer::readiness_checks(&pool, &js, &bus, &CONSUMERS).await,
                );
                checks
            })
        })
    };
    tracing::info!(listen = %listener.local_addr()?, "finalizer listening");
    service::serve(listener, service::ops_router(readiness), shutdown.clone()).await?;
    consumer.await.context("consumer task panicked")??;
    worker.await.context("worker task panicked")?;
    deliveries.await.context("webhook task panicked")?;
    pool.close().await;
    tracing::info!("finalizer stopped");
    Ok(())
}

fn retry_after(config: &Config) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(config.retry_seconds.max(0.0))
        .context("SETTLE_RETRY_SECONDS is not a number of seconds")
}

/// `finalizer parked retry`: re-applies the due-work consumer's parked events (only the streams
/// of the event at `position`, if given) with its projection, configured as the process is.
pub async fn retry_parked(
    pool: &sqlx::PgPool,
    config: &Config,
    consumer: Option<&str>,
    position: Option<u64>,
) -> anyhow::Result<Vec<events::bus::parked::RetryReport>> {
    events::bus::parked::check_consumer(consumer, &CONSUMERS)?;
    let mut projection = DueWork {
        retry_after: retry_after(config)?,
    };
    let report =
        events::bus::parked::retry(pool, DUE_WORK_CONSUMER, &mut projection, position).await?;
    Ok(vec![report])
}

/// `finalizer parked …`; returns the exit code.
pub async fn parked_command(
    pool: &sqlx::PgPool,
    config: &Config,
    command: &events::bus::parked::ParkedCommand,
) -> anyhow::Result<i32> {
    use events::bus::parked::{check_consumer, print_list, print_reports, ParkedCommand};
    match command {
        ParkedCommand::List { consumer } => {
            check_consumer(consumer.as_deref(), &CONSUMERS)?;
            print_list(pool, Some(consumer.as_deref().unwrap_or(DUE_WORK_CONSUMER))).await
        }
        ParkedCommand::Retry { consumer, position } => {
            print_reports(&retry_parked(pool, config, consumer.as_deref(), *position).await?)
        }
    }
}

pub async fn main_entry() -> anyhow::Result<()> {
    service::init_tracing();
    let config = Config::parse();
    if let Some(Subcommand::Parked(command)) = &config.command {
        let pool = db::connect(&config.common.database_url, 2).await?;
        db::migrate(&pool).await?;
        let code = parked_command(&pool, &config, command).await?;
        pool.close().await;
        std::process::exit(code);
    }
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    run(listener, config, service::shutdown_on_signal()).await
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_configuration_parses_with_its_defaults() {
        super::Config::command().debug_assert();
        let config = <super::Config as clap::Parser>::try_parse_from(["finalizer"]);
        assert!(config.is_ok(), "{config:?}");
        if std::env::vars().all(|(k, _)| !k.starts_with("SETTLE_WEBHOOK_")) {
            assert_eq!(
                config.map(|c| c.webhooks).ok(),
                Some(super::webhooks::WebhookConfig::default()),
                "the in-code defaults are the flags' defaults"
            );
        }
    }
}
