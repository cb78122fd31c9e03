//! The HTTP API: admin routes (§6.3) and network routes (§6.1–6.2), with request ids, the SPEC
//! error body on every failure, body limits and one structured log line per request.

pub mod admin;
pub mod auth;
pub mod body;
pub mod command;
pub mod consistency;
pub mod context;
pub mod disputes;
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

/// The whole API as a value; `ops` adds `/livez`, `/readyz` and `/metrics`.
pub fn router(state: AppState, ops: Router) -> Router {
    Router::new()
        .nest(
            "/api/admin/v1",
            admin::routes()
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
        .fallback(|| async {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not_found",
                "no such route",
            )
        })
        .layer(DefaultBodyLimit::max(body::BODY_BYTES_MAX))
        .with_state(state)
        .merge(ops)
        .layer(middleware::from_fn(context::request_context))
}
