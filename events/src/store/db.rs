//! Connecting to Postgres: pool settings (with the session timeouts every connection carries),
//! migrations, and the durability guard that refuses to run against a server that could lose
//! acknowledged events.

use std::time::Duration;

use anyhow::{bail, Context};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// Connections per process unless configured otherwise.
pub const POOL_CONNECTIONS_DEFAULT: u32 = 16;

/// The longest any one statement of ours may run. Our longest legitimate statements — a
/// sequencer batch (`SEQUENCE_BATCH_MAX` events read, then written), a consumer's read-model
/// batch statements, a finalizer claim, a verification page — take milliseconds to a few
/// seconds on a loaded server; a statement past this is stuck (a lock or a runaway plan) and is
/// better cancelled than left holding locks. Migrations run without it (`migrate`).
pub const STATEMENT_TIMEOUT_SECONDS: u64 = 60;
/// The longest a transaction of ours may sit idle between statements. Ours never wait on
/// anything but Postgres inside a transaction; an open write transaction holds back the
/// sequencer's xid horizon, and so delivery, for everyone (docs/decisions/0001-event-log.md).
pub const IDLE_IN_TRANSACTION_TIMEOUT_SECONDS: u64 = 15;

/// The session settings every pooled connection starts with.
pub fn session_options(options: PgConnectOptions) -> PgConnectOptions {
    options.options([
        (
            "statement_timeout",
            format!("{}s", STATEMENT_TIMEOUT_SECONDS),
        ),
        (
            "idle_in_transaction_session_timeout",
            format!("{}s", IDLE_IN_TRANSACTION_TIMEOUT_SECONDS),
        ),
    ])
}

/// Opens a pool. Connections are not pinged before each use (that costs 20–30% of a short
/// transaction); a broken connection surfaces as an error on first use and is replaced. Every
/// connection carries `statement_timeout` and `idle_in_transaction_session_timeout`.
pub async fn connect(database_url: &str, max_connections: u32) -> anyhow::Result<PgPool> {
    let options: PgConnectOptions = database_url
        .parse()
        .context("DATABASE_URL is not a valid Postgres URL")?;
    let options = session_options(options);
    PgPoolOptions::new()
        .max_connections(max_connections)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("cannot connect to Postgres")
}

/// Applies the embedded migrations, on a connection of their own without the statement
/// timeout (a migration may rewrite a large table); the connection is closed afterwards rather
/// than returned to the pool with that setting.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await.context("cannot connect to Postgres")?;
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await
        .context("cannot lift the statement timeout for migrations")?;
    // `run_direct`: `run` over a borrowed connection makes the future not `Send`.
    let migrated = schemas::MIGRATOR
        .run_direct(&mut *conn)
        .await
        .context("migrations failed");
    conn.close().await.ok();
    migrated
}

/// Refuses a server whose settings make a committed append non-durable (docs/ARCHITECTURE.md,
/// invariant 1).
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
