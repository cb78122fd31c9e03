//! What every process shares: logging, the shutdown signal, and the operations endpoints
//! (`/livez`, `/readyz`, `/metrics`).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connection settings every process takes (DESIGN.md §5); flags and environment alike.
#[derive(Clone, Debug, clap::Args)]
pub struct CommonConfig {
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://settle:settle@127.0.0.1:54329/settle"
    )]
    pub database_url: String,
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4229")]
    pub nats_url: String,
    #[arg(long, env = "SETTLE_EVENTS_STREAM", default_value = "EVENTS")]
    pub events_stream: String,
    #[arg(long, env = "SETTLE_EVENTS_SUBJECT_PREFIX", default_value = "events")]
    pub events_subject_prefix: String,
    #[arg(long, env = "SETTLE_DB_CONNECTIONS", default_value_t = crate::store::db::POOL_CONNECTIONS_DEFAULT)]
    pub db_connections: u32,
}

impl CommonConfig {
    pub fn bus(&self) -> crate::bus::BusConfig {
        crate::bus::BusConfig {
            stream: self.events_stream.clone(),
            subject_prefix: self.events_subject_prefix.clone(),
        }
    }
}

/// Structured logs; `RUST_LOG` filters (default `info`, sqlx at `warn`), `SETTLE_LOG_JSON=1` switches to JSON.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let _ = if std::env::var("SETTLE_LOG_JSON").is_ok_and(|v| v == "1") {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// A token cancelled on SIGINT or SIGTERM.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        cancel.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        cancel.cancel();
    });
    token
}

/// The process-wide Prometheus recorder.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // A recorder may already be installed (tests start several processes in one binary).
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// One readiness check's result: its name and what is wrong, if anything.
pub type Check = (&'static str, Result<(), String>);
pub type ReadinessFuture = Pin<Box<dyn Future<Output = Vec<Check>> + Send>>;
/// Runs every readiness check of a process.
pub type Readiness = Arc<dyn Fn() -> ReadinessFuture + Send + Sync>;

#[derive(Clone)]
struct Ops {
    readiness: Readiness,
    metrics: PrometheusHandle,
}

/// `/livez`, `/readyz` and `/metrics`.
pub fn ops_router(readiness: Readiness) -> Router {
    Router::new()
        .route(
            "/livez",
            get(|| async { Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/readyz", get(readyz))
        .route(
            "/metrics",
            get(|State(ops): State<Ops>| async move { ops.metrics.render() }),
        )
        .with_state(Ops {
            readiness,
            metrics: metrics_handle(),
        })
}

async fn readyz(State(ops): State<Ops>) -> impl IntoResponse {
    let checks = (ops.readiness)().await;
    let ready = checks.iter().all(|(_, r)| r.is_ok());
    let body: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, r)| {
            (
                name.to_owned(),
                r.map_or_else(serde_json::Value::String, |()| "ok".into()),
            )
        })
        .collect();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"ready": ready, "checks": body})),
    )
}

/// The checks every process shares: Postgres answers, migrations are applied, JetStream answers.
pub async fn base_checks(pool: &sqlx::PgPool, js: &async_nats::jetstream::Context) -> Vec<Check> {
    let migrations = if crate::store::db::migrations_applied(pool).await {
        Ok(())
    } else {
        Err("pending".to_owned())
    };
    vec![
        ("postgres", postgres_check(pool).await),
        ("migrations", migrations),
        ("nats", nats_check(js).await),
    ]
}

/// Readiness: can Postgres answer.
pub async fn postgres_check(pool: &sqlx::PgPool) -> Result<(), String> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Readiness: can JetStream answer.
pub async fn nats_check(js: &async_nats::jetstream::Context) -> Result<(), String> {
    js.query_account()
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Serves `router` until `shutdown`, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
