//! The HTTP API (docs/api/guide.md): admin routes, network routes and audit routes, with
//! request ids, the API error body on every failure, body limits and one structured log line per
//! request.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod body;
pub mod codes;
pub mod command;
pub mod consistency;
pub mod context;
pub mod contract;
pub mod disputes;
pub mod edge;
pub mod error;
pub mod network;
pub mod openapi;
pub mod reads;
pub mod retry;
pub mod settlements;
pub mod signed;
pub mod views;
pub mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::{middleware, Router};

use crate::state::AppState;
use error::{ApiError, ErrorCode};

/// The whole API as a value, inside the edge limits; `ops` adds `/livez`, `/readyz` and
/// `/metrics`, which the edge limits leave alone.
pub fn router(state: AppState, ops: Router, edge: &edge::EdgeConfig) -> Router {
    // The console (ADR 0012): HTML pages with HTML error pages of their own, inside the same
    // edge limits.
    let console = crate::console::router(state.clone(), edge);
    let api = route_trees(state.clone())
        .into_iter()
        .fold(Router::new(), |api, (base, tree)| api.nest(base, tree))
        // The OpenAPI document and its rendered reference: no authentication.
        .merge(openapi::routes())
        .fallback(|| async { ApiError::new(ErrorCode::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(body::MAX_BODY_BYTES_SETTLEMENT))
        .with_state(state);
    edge::limit(api, edge)
        .merge(ops)
        .layer(middleware::from_fn(context::request_context))
        .merge(console)
}

/// The API's route trees by base path: what `router` serves, and what the OpenAPI document's
/// coverage test walks (every route documented, every documented route served).
pub fn route_trees(state: AppState) -> [(&'static str, Router<AppState>); 3] {
    [
        (
            "/api/admin/v1",
            admin::routes()
                .merge(audit::admin_routes())
                .merge(disputes::admin_routes())
                .merge(retry::admin_routes())
                .merge(webhooks::admin_routes()),
        ),
        (
            "/api/network",
            network::routes()
                .merge(settlements::routes())
                .merge(disputes::network_routes())
                .merge(webhooks::network_routes()),
        ),
        ("/api/audit/v1", audit::routes(state)),
    ]
}
