//! What the event crate's benchmarks share: a sampler of other work on the same Postgres (so a
//! figure measured beside it is flagged instead of reported as clean), database URLs, and logs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// Client sessions outside the benchmark's databases that are running a statement right now.
pub const FOREIGN_ACTIVE: &str = "SELECT count(*) FROM pg_stat_activity
    WHERE backend_type = 'client backend' AND state <> 'idle' AND application_name <> $1
      AND coalesce(datname, '') NOT LIKE 'bench\\_%'";

/// What the sampler saw of other work on the same Postgres. The machine is shared (a test suite,
/// the stack's own services), and on two cores any of it shows up in every figure, so a phase
/// that ran beside it is flagged instead of silently reported as clean.
#[derive(Debug, Default)]
pub struct Interference {
    samples: AtomicU64,
    busy: AtomicU64,
    most: AtomicU64,
}

impl Interference {
    /// Samples since the last call, and how many of them saw foreign work (and at most how much).
    pub fn take(&self) -> (u64, u64, u64) {
        (
            self.samples.swap(0, Ordering::Relaxed),
            self.busy.swap(0, Ordering::Relaxed),
            self.most.swap(0, Ordering::Relaxed),
        )
    }
}

/// Samples every 250 ms until `stop`; sessions named `application_name` (the benchmark's own) do
/// not count.
pub async fn watch_interference(
    admin: PgPool,
    application_name: &'static str,
    seen: Arc<Interference>,
    stop: CancellationToken,
) {
    loop {
        if let Ok(active) = sqlx::query_scalar::<_, i64>(FOREIGN_ACTIVE)
            .bind(application_name)
            .fetch_one(&admin)
            .await
        {
            let active = u64::try_from(active).unwrap_or(0);
            seen.samples.fetch_add(1, Ordering::Relaxed);
            if active > 0 {
                seen.busy.fetch_add(1, Ordering::Relaxed);
            }
            seen.most.fetch_max(active, Ordering::Relaxed);
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// `url` with its database replaced.
pub fn with_database(url: &str, database: &str) -> Result<String> {
    let authority_start = url
        .find("://")
        .map(|i| i + 3)
        .context("DATABASE_URL has no scheme (postgres://…)")?;
    let rest = &url[authority_start..];
    let (before_query, query) = rest.split_at(rest.find('?').unwrap_or(rest.len()));
    let authority = before_query.split('/').next().unwrap_or_default();
    Ok(format!(
        "{}{authority}/{database}{query}",
        &url[..authority_start]
    ))
}

/// Logs on standard error, `warn` unless `RUST_LOG` says otherwise, so figures on standard out
/// stay readable.
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
}
