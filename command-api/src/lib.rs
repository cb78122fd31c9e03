//! The command API process: HTTP commands and queries, and — when it holds the leader lock — the
//! sequencer and relay that order committed events and publish them to JetStream.

pub mod console;
pub mod http;
pub mod signer;
pub mod state;

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use events::bus::leader::{self, LeaderConfig, LeaderProgress};
use events::service::{self, CommonConfig, Readiness};
use events::store::db;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Configuration; every flag also reads the environment variable of the same name.
#[derive(Clone, Debug, Parser)]
#[command(name = "command-api", about = "Settlement engine command API")]
pub struct Config {
    #[command(flatten)]
    pub common: CommonConfig,
    #[arg(long, env = "SETTLE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Token of the admin API; without it the admin API refuses every request.
    #[arg(long, env = "SETTLE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Take part in sequencer leadership (one process leads, the others stand by).
    #[arg(long, env = "SETTLE_SEQUENCER", default_value_t = true, action = clap::ArgAction::Set)]
    pub sequencer: bool,
    /// Path of a currency table (JSON); the shipped default otherwise.
    #[arg(long, env = "SETTLE_CURRENCIES")]
    pub currencies: Option<std::path::PathBuf>,
    /// 64 hex characters: the webhook signing seed, the finalizer's too (this process shows its
    /// public key). Required, except in development mode.
    #[arg(long, env = schemas::signing::webhook::WEBHOOK_SEED_ENV, hide_env_values = true)]
    pub webhook_seed: Option<String>,
    /// Internal destinations a webhook URL may name after all: comma-separated host names, IP
    /// addresses and CIDR networks. Loopback, private, link-local, metadata and other internal
    /// addresses are refused unless named here.
    #[arg(long, env = "SETTLE_WEBHOOK_ALLOW")]
    pub webhook_allow: Option<String>,
    /// Development mode: without `SETTLE_WEBHOOK_SEED`, use the public development key (logged
    /// loudly) instead of refusing to start. Local stacks and tests only.
    #[arg(long, env = "SETTLE_DEVELOPMENT", value_parser = clap::builder::BoolishValueParser::new())]
    pub development: bool,
    #[command(flatten)]
    pub edge: http::edge::EdgeConfig,
    #[command(flatten)]
    pub audit: http::audit::AuditConfig,
    #[command(subcommand)]
    pub command: Option<Subcommand>,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum Subcommand {
    /// Apply the database migrations and exit.
    Migrate,
    /// Print a new Ed25519 signing key: `{"seed": hex, "publicKey": hex}` (keep the seed secret).
    Keygen,
    /// Sign the payload read from standard input (exactly as given) with the key whose 32-byte
    /// seed is in `--seed`; prints the signature as hex.
    Sign {
        #[arg(long, env = "SETTLE_SIGNING_SEED", hide_env_values = true)]
        seed: String,
    },
}

/// Runs the process until `shutdown`: migrations, durability check, HTTP, and sequencer duty.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    // Before anything records a metric.
    events::service::install_metrics();
    // Secrets and settings first: without a signing seed (outside development mode) or with a
    // bad allow-list the process stops before it touches anything.
    let webhooks = state::WebhookSettings::from_config(
        config.webhook_seed.as_deref(),
        config.webhook_allow.as_deref(),
        config.development,
    )?;
    // The audit key likewise (ADR 0010): checkpoints are signed with it.
    let audit = http::audit::AuditSettings::from_config(&config.audit, config.development)?;
    let pool = db::connect(&config.common.database_url, config.common.db_connections).await?;
    db::migrate(&pool).await?;
    db::check_durability(&pool).await?;
    let js = events::bus::connect(&config.common.nats_url).await?;
    events::bus::ensure_stream(&js, &config.common.bus()).await?;

    let (progress, progress_rx) = watch::channel(LeaderProgress::default());
    // The relay's stalls and payload limit, for readiness (only a leader's relay reports any).
    let relay_health = leader::RelayHealth::default();
    let sequencer = if config.sequencer {
        let name = format!("command-api@{}:{}", hostname(), std::process::id());
        let mut leader_config = LeaderConfig::new(
            config.common.database_url.clone(),
            name,
            config.common.bus(),
        );
        leader_config.health = relay_health.clone();
        leader_config.nats_url = Some(config.common.nats_url.clone());
        Some(tokio::spawn(leader::run(
            pool.clone(),
            js.clone(),
            leader_config,
            progress,
            shutdown.clone(),
        )))
    } else {
        None
    };

    let readiness: Readiness = {
        let pool = pool.clone();
        let nats = js.clone();
        Arc::new(move || {
            let (pool, nats, progress) = (pool.clone(), nats.clone(), progress_rx.clone());
            let relay_health = relay_health.clone();
            Box::pin(async move {
                let p = *progress.borrow();
                let mut checks = service::base_checks(&pool, &nats).await;
                checks.push(("relay", relay_check(p)));
                checks.extend(relay_health.checks());
                checks
            })
        })
    };
    tracing::info!(listen = %listener.local_addr()?, "command-api listening");
    let currencies = load_currencies(config.currencies.as_deref())?;
    let state = state::AppState::new(pool.clone(), currencies, config.admin_token.as_deref())
        .with_webhooks(webhooks)
        .with_audit(audit);
    // The periodic full chain verification (one process per interval) and its `/metrics`.
    let verifier = tokio::spawn(events::audit::chain::run_verifier(
        pool.clone(),
        format!("command-api@{}:{}", hostname(), std::process::id()),
        config.audit.verify_interval(),
        shutdown.clone(),
    ));
    let app = http::router(state, service::ops_router(readiness), &config.edge);
    service::serve_with(
        listener,
        app,
        config.edge.header_read_timeout(),
        shutdown.clone(),
    )
    .await?;
    if let Some(sequencer) = sequencer {
        sequencer.await.context("sequencer task panicked")??;
    }
    verifier.await.context("chain verifier panicked")?;
    pool.close().await;
    tracing::info!("command-api stopped");
    Ok(())
}

/// Events the relay may trail the sequencer by before the process reports not ready.
const RELAY_LAG_READY_MAX: u64 = 50_000;

fn relay_check(p: LeaderProgress) -> Result<(), String> {
    let lag = p.sequenced.saturating_sub(p.published);
    if lag <= RELAY_LAG_READY_MAX {
        Ok(())
    } else {
        Err(format!("JetStream trails the log by {lag} events"))
    }
}

fn load_currencies(
    path: Option<&std::path::Path>,
) -> anyhow::Result<events::domain::money::CurrencyTable> {
    use events::domain::money::CurrencyTable;
    let Some(path) = path else {
        return Ok(CurrencyTable::default_table());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read SETTLE_CURRENCIES {}", path.display()))?;
    CurrencyTable::from_json(&text).with_context(|| {
        format!(
            "SETTLE_CURRENCIES {} is not a valid currency table",
            path.display()
        )
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".into())
}

/// The binary's entry point.
pub async fn main_entry() -> anyhow::Result<()> {
    service::init_tracing();
    let config = Config::parse();
    match &config.command {
        Some(Subcommand::Migrate) => {
            let pool = db::connect(&config.common.database_url, 2).await?;
            db::migrate(&pool).await?;
            println!("migrations applied");
            return Ok(());
        }
        Some(Subcommand::Keygen) => {
            println!("{}", signer::keygen());
            return Ok(());
        }
        Some(Subcommand::Sign { seed }) => {
            let mut payload = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut payload)
                .context("cannot read the payload from stdin")?;
            println!("{}", signer::sign(seed, &payload)?);
            return Ok(());
        }
        None => {}
    }
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    run(listener, config, service::shutdown_on_signal()).await
}
