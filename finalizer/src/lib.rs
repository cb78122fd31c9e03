//! The finalizer process: turns due work (dispute and top-up deadlines, retries) into commands.
//! Until the settlement lifecycle exists it serves its health and metrics endpoints only.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use events::service::{self, CommonConfig, Readiness};
use events::store::db;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Clone, Debug, Parser)]
#[command(name = "finalizer", about = "Settlement engine finalizer")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,
    #[arg(long, env = "SETTLE_LISTEN", default_value = "127.0.0.1:8082")]
    pub listen: String,
}

pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let pool = db::connect(&config.common.database_url, config.common.db_connections).await?;
    db::migrate(&pool).await?;
    let js = events::bus::connect(&config.common.nats_url).await?;
    let readiness: Readiness = {
        let (pool, js) = (pool.clone(), js.clone());
        Arc::new(move || {
            let (pool, js) = (pool.clone(), js.clone());
            Box::pin(async move { service::base_checks(&pool, &js).await })
        })
    };
    tracing::info!(listen = %listener.local_addr()?, "finalizer listening");
    service::serve(listener, service::ops_router(readiness), shutdown).await?;
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
