//! Connecting to Postgres: pool settings, migrations, and the durability guard that refuses to run
//! against a server that could lose acknowledged events.

use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Connections per process unless configured otherwise.
pub const POOL_CONNECTIONS_DEFAULT: u32 = 16;

/// Opens a pool. Connections are not pinged before each use (that costs 20–30% of a short
/// transaction); a broken connection surfaces as an error on first use and is replaced.
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = database_url
        .parse()
        .context("DATABASE_URL is not a valid Postgres URL")?;
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("cannot connect to Postgres")
}

/// Applies the embedded migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    schemas::MIGRATOR
        .run(pool)
        .await
        .context("migrations failed")
}

/// Refuses a server whose settings make a committed append non-durable (DESIGN.md §3).
pub async fn check_durability(pool: &PgPool) -> anyhow::Result<()> {
    for setting in ["fsync", "synchronous_commit"] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(pool)
            .await?;
        if value == "off" {
            bail!(
                "Postgres has {setting}=off: acknowledged events could be lost; refusing to start"
            );
        }
    }
    Ok(())
}

/// Whether every embedded migration has been applied (for `/readyz`).
pub async fn migrations_applied(pool: &PgPool) -> bool {
    let applied: Result<i64, _> =
        sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(pool)
            .await;
    matches!(applied, Ok(n) if n as usize >= schemas::MIGRATOR.iter().count())
}
