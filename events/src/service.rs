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

/// Connection settings every process takes (README, "Configuration"); flags and environment alike.
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
            // Environment only (every process reads the same name): see `replicas_setting`.
            replicas: crate::bus::replicas_setting(
                std::env::var("SETTLE_EVENTS_REPLICAS").ok().as_deref(),
            ),
        }
    }
}

/// Structured logs on standard error; `RUST_LOG` filters (default `info`, sqlx at `warn`), `SETTLE_LOG_JSON=1` switches to JSON.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    // Logs go to standard error, so a subcommand's output on standard out can be piped.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
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

/// Installs the process-wide Prometheus recorder. Each process calls it first in `run`: a metric
/// recorded before the recorder exists is lost (a gauge set once at start, such as
/// `settle_sequencer_leader`, would never show in `/metrics`).
pub fn install_metrics() {
    let _ = metrics_handle();
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

/// A check name made at run time (`parked:<consumer>`), kept for the life of the process: the
/// names are few and fixed per process, so each is stored once.
pub fn check_name(name: String) -> &'static str {
    use std::collections::BTreeSet;
    use std::sync::Mutex;
    static NAMES: OnceLock<Mutex<BTreeSet<&'static str>>> = OnceLock::new();
    let mut names = NAMES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.get(name.as_str()) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.into_boxed_str());
    names.insert(leaked);
    leaked
}
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

/// How long a client may take to send a request's headers before its connection is closed
/// (slow-header clients would otherwise hold connections open forever).
pub const HEADER_READ_TIMEOUT_DEFAULT: std::time::Duration = std::time::Duration::from_secs(10);
/// How long in-flight requests may take to finish once shutdown begins.
const SHUTDOWN_DRAIN_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// The caller's socket address, added to every request's extensions by `serve`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub std::net::SocketAddr);

/// Serves `router` until `shutdown`, then finishes in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, router, HEADER_READ_TIMEOUT_DEFAULT, shutdown).await
}

/// As `serve`, closing any connection that does not deliver a request's headers within
/// `header_read_timeout`. Each request carries the caller's `PeerAddr`.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    header_read_timeout: std::time::Duration,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    use hyper_util::server::conn::auto::Builder;
    use tower::ServiceExt;

    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<_>| {
            request.extensions_mut().insert(PeerAddr(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_DRAIN_MAX, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests did not finish in time; closing");
    }
    Ok(())
}
