//! The HTTP API: admin routes (§6.3), network routes (§6.1–6.2) and audit routes (§6.4), with
//! request ids, the SPEC error body on every failure, body limits and one structured log line per
//! request.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod body;
pub mod command;
pub mod consistency;
pub mod context;
pub mod disputes;
pub mod edge;
pub mod error;
pub mod network;
pub mod reads;
pub mod settlements;
pub mod views;
pub mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::{middleware, Router};

use crate::state::AppState;
use error::ApiError;

/// The whole API as a value, inside the edge limits; `ops` adds `/livez`, `/readyz` and
/// `/metrics`, which the edge limits leave alone.
pub fn router(state: AppState, ops: Router, edge: &edge::EdgeConfig) -> Router {
    let api = Router::new()
        .nest(
            "/api/admin/v1",
            admin::routes()
                .merge(audit::admin_routes())
                .merge(disputes::admin_routes())
                .merge(webhooks::admin_routes()),
        )
        .nest(
            "/api/network",
            network::routes()
                .merge(settlements::routes())
                .merge(disputes::network_routes())
                .merge(webhooks::network_routes()),
        )
        .nest("/api/audit/v1", audit::routes(state.clone()))
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            )
        })
        .layer(DefaultBodyLimit::max(body::MAX_BODY_BYTES_SETTLEMENT))
        .with_state(state);
    edge::limit(api, edge)
        .merge(ops)
        .layer(middleware::from_fn(context::request_context))
}
