//! The finalizer process: turns due work into commands (DESIGN §4). Its consumer keeps the
//! due-work table (dispute and top-up deadlines, retries) from the event stream; its worker
//! claims what is due and finalizes or executes it through the one write path; its deliverer
//! sends the notification feed's webhooks. Any number of finalizers may run: leases spread the
//! work, and the store makes every step happen once.

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
    #[command(flatten)]
    pub webhooks: webhooks::WebhookConfig,
}

pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.common.database_url, config.common.db_connections).await?;
    db::migrate(&pool).await?;
    let js = events::bus::connect(&config.common.nats_url).await?;
    let bus = config.common.bus();
    let retry_after = Duration::try_from_secs_f64(config.retry_seconds.max(0.0))
        .context("SETTLE_RETRY_SECONDS is not a number of seconds")?;
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
            ..WorkerConfig::default()
        },
    );
    let worker = tokio::spawn(worker.run(shutdown.clone()));
    // Built first so that a bad signing seed stops the process at start.
    let deliverer = webhooks::Deliverer::new(pool.clone(), &config.webhooks)?;
    let deliveries = tokio::spawn(deliverer.run(shutdown.clone()));

    let readiness: Readiness = {
        let (pool, js) = (pool.clone(), js.clone());
        Arc::new(move || {
            let (pool, js, bus) = (pool.clone(), js.clone(), bus.clone());
            Box::pin(async move {
                let lag = match (
                    events::bus::stream_last_sequence(&js, &bus).await,
                    events::bus::consumer::load_checkpoint(&pool, DUE_WORK_CONSUMER).await,
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
    tracing::info!(listen = %listener.local_addr()?, "finalizer listening");
    service::serve(listener, service::ops_router(readiness), shutdown.clone()).await?;
    consumer.await.context("consumer task panicked")??;
    worker.await.context("worker task panicked")?;
    deliveries.await.context("webhook task panicked")?;
    pool.close().await;
    tracing::info!("finalizer stopped");
    Ok(())
}

pub async fn main_entry() -> anyhow::Result<()> {
    service::init_tracing();
    let config = Config::parse();
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
