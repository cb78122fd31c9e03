//! The console (ADR 0012): server-rendered HTML pages at `/console` for operators, auditors and
//! enterprise members, signed in with their API token. Every page reads through the API's own
//! access checks and read functions — `http::auth` and `http::reads` for network reads, the audit
//! routes (which authenticate and record every read) for timelines and the chain, the admin
//! routes and `http::retry` for the operator's actions — so the console shows and does exactly
//! what its user's token may show and do through the API.

pub mod disputes;
pub mod operations;
pub mod session;
pub mod settlements;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use events::domain::money::{CurrencyCode, CurrencyTable};
use futures::FutureExt;
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;
use tower::ServiceExt;
use tracing::Instrument;

use crate::http::context::RequestId;
use crate::http::error::ApiError;
use crate::http::{audit, disputes as api_disputes, edge};
use crate::state::AppState;
use session::{Sessions, Viewer};

/// Largest form body the console accepts (a dispute closure's notes and amounts fit easily).
const FORM_BYTES_MAX: usize = 64 * 1024;
/// Largest answer of an in-process API call the console reads (a settlement's whole timeline).
const INTERNAL_ANSWER_BYTES_MAX: usize = 32 * 1024 * 1024;

/// The stylesheet: screen and print, no external fonts or images.
const STYLESHEET: &str = include_str!("console.css");

/// What every console handler shares.
#[derive(Clone)]
pub struct ConsoleState {
    pub app: AppState,
    pub sessions: Arc<Sessions>,
    /// The API routes the console calls in-process (audit reads, the operator's dispute closure),
    /// so their authentication, checks and the record of audit reads are the API's own.
    internal: Router,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState").finish_non_exhaustive()
    }
}

impl ConsoleState {
    pub fn new(app: AppState) -> Self {
        let internal = Router::new()
            .nest("/api/audit/v1", audit::routes(app.clone()))
            .nest("/api/admin/v1", api_disputes::admin_routes())
            .with_state(app.clone());
        Self {
            app,
            sessions: Arc::new(Sessions::default()),
            internal,
        }
    }

    /// Calls an API route in-process with the viewer's token, as the viewer would over HTTP:
    /// the answer's status and JSON body (an error's body is the API error body).
    pub async fn call_api(
        &self,
        viewer: &Viewer,
        request_id: &RequestId,
        method: Method,
        path_and_query: &str,
        body: Option<String>,
    ) -> Result<(StatusCode, Value), ApiError> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(AUTHORIZATION, format!("Bearer {}", viewer.token()));
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        let mut request = builder
            .body(body.map_or_else(Body::empty, Body::from))
            .map_err(ApiError::internal)?;
        request.extensions_mut().insert(request_id.clone());
        let response = self
            .internal
            .clone()
            .oneshot(request)
            .await
            .map_err(ApiError::internal)?;
        answer(response, request_id).await
    }

    /// As `call_api`, for a read that must succeed: an error answer becomes the console's error
    /// page with the API's status and sentence.
    pub async fn read_api(
        &self,
        viewer: &Viewer,
        request_id: &RequestId,
        path_and_query: &str,
    ) -> Result<Value, ConsoleError> {
        let (status, body) = self
            .call_api(viewer, request_id, Method::GET, path_and_query, None)
            .await?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(ConsoleError::from_answer(status, &body))
        }
    }
}

/// An API handler's answer as its status and JSON body; an error answer gets the API error body,
/// as `http::context` gives it over HTTP.
pub async fn answer(
    response: Response,
    request_id: &RequestId,
) -> Result<(StatusCode, Value), ApiError> {
    let response = crate::http::error::render(response, &request_id.0);
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), INTERNAL_ANSWER_BYTES_MAX)
        .await
        .map_err(ApiError::internal)?;
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).map_err(ApiError::internal)?
    };
    Ok((status, value))
}

/// The console's routes with their state, inside the same edge limits as the API (timeouts, the
/// in-flight cap, rate limits), with HTML error pages and the request context of their own.
pub fn router(app: AppState, edge_config: &edge::EdgeConfig) -> Router {
    let state = ConsoleState::new(app);
    let routes = Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/settlements") }),
        )
        .route("/console/console.css", get(stylesheet))
        .route(
            "/console/sign-in",
            get(session::sign_in_page).post(session::sign_in),
        )
        .route("/console/sign-out", post(session::sign_out))
        .route("/console/settlements", get(settlements::list))
        .route("/console/settlements/{id}", get(settlements::one))
        .route("/console/settlements/{id}/retry", post(settlements::retry))
        .route("/console/disputes", get(disputes::queue))
        .route(
            "/console/disputes/{id}/close",
            get(disputes::close_form).post(disputes::close),
        )
        .route(
            "/console/disputes/{id}/close/review",
            post(disputes::review),
        )
        .route("/console/operations", get(operations::page_get))
        .route(
            "/console/operations/parked/retry",
            post(operations::retry_parked),
        )
        .route("/console/{*rest}", get(not_found).post(not_found))
        .layer(DefaultBodyLimit::max(FORM_BYTES_MAX))
        .with_state(state);
    edge::limit(routes, edge_config).layer(middleware::from_fn(context))
}

async fn stylesheet() -> Response {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        STYLESHEET,
    )
        .into_response()
}

async fn not_found() -> ConsoleError {
    ConsoleError::new(StatusCode::NOT_FOUND, "There is no such page.")
}

/// Per console request: a request id, security headers, one log line, a panic guard, and an HTML
/// page for every error answer (the edge's 408, 429 and 503 included).
async fn context(mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let span = tracing::info_span!("console", request_id = %id, %method, %path);
    let started = Instant::now();
    let mut response = match AssertUnwindSafe(next.run(request).instrument(span))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(request_id = %id, "console handler panicked");
            ConsoleError::new(StatusCode::INTERNAL_SERVER_ERROR, "").into_response()
        }
    };
    let status = response.status();
    let is_html = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/html"));
    if (status.is_client_error() || status.is_server_error()) && !is_html {
        let (parts, _) = response.into_parts();
        let mut page = ConsoleError::new(status, "").into_response();
        for (name, value) in parts.headers.iter() {
            if name != CONTENT_TYPE && name != axum::http::header::CONTENT_LENGTH {
                page.headers_mut().insert(name, value.clone());
            }
        }
        response = page;
    }
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", value);
    }
    tracing::info!(request_id = %id, %method, %path, status = status.as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64, "console request");
    response
}

/// A console failure: its status and a sentence for the page (internal details stay in the logs).
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    message: String,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// From an API error answer (`{"error", "code", …}`).
    pub fn from_answer(status: StatusCode, body: &Value) -> Self {
        let message = body["error"].as_str().unwrap_or_default();
        Self::new(status, message)
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        Self::new(e.status(), e.message())
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let reason = self.status.canonical_reason().unwrap_or("Error");
        let message = if self.message.is_empty() {
            match self.status {
                StatusCode::NOT_FOUND => "There is no such page, or it is not yours to see.",
                StatusCode::FORBIDDEN => "This is not allowed with your sign-in.",
                StatusCode::TOO_MANY_REQUESTS => "Too many requests; wait a moment and reload.",
                StatusCode::SERVICE_UNAVAILABLE => "The server is busy; reload in a moment.",
                StatusCode::REQUEST_TIMEOUT => "The request took too long.",
                s if s.is_server_error() => "The server failed to handle this request.",
                _ => "The request could not be handled.",
            }
            .to_owned()
        } else {
            self.message
        };
        let title = format!("{} {reason}", self.status.as_u16());
        let body = html! {
            h1 { (title) }
            p.error role="alert" { (message) }
            p { a href="/console/settlements" { "Back to settlements" } " · " a href="/console/sign-in" { "Sign in" } }
        };
        (
            self.status,
            Html(layout(&title, None, None, body).into_string()),
        )
            .into_response()
    }
}

/// A page of the console: its title, the navigation for the viewer (or none before sign-in), an
/// optional notice, and the body.
pub fn layout(title: &str, viewer: Option<&Viewer>, notice: Option<&str>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Settlement console" }
                link rel="stylesheet" href="/console/console.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    span.brand { "Settlement console" }
                    @if let Some(v) = viewer {
                        nav aria-label="Main" {
                            ul {
                                li { a href="/console/settlements" { "Settlements" } }
                                li { a href="/console/disputes" { "Disputes" } }
                                @if v.is_admin() {
                                    li { a href="/console/operations" { "Operations" } }
                                }
                            }
                        }
                        form.signout method="post" action="/console/sign-out" {
                            span.who { "Signed in as " strong { (v.label()) } }
                            (csrf_field(v))
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    @if let Some(n) = notice {
                        p.notice role="status" { (n) }
                    }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field every form of a signed-in page carries.
pub fn csrf_field(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf()); }
}

/// A full HTML page as a response.
pub fn page(title: &str, viewer: &Viewer, notice: Option<&str>, body: Markup) -> Response {
    Html(layout(title, Some(viewer), notice, body).into_string()).into_response()
}

/// An amount in base units written in the currency's decimals (`-5000000`, 8 → `-0.05`); `None`
/// for a currency the table does not know or text that is not an integer.
pub fn in_decimals(currencies: &CurrencyTable, currency: &str, base_units: &str) -> Option<String> {
    let code = CurrencyCode::parse(currency).ok()?;
    let decimals = usize::from(currencies.decimals(&code)?);
    let negative = base_units.starts_with('-');
    let digits = base_units.strip_prefix('-').unwrap_or(base_units);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = if digits.len() <= decimals {
        format!("{}{digits}", "0".repeat(decimals + 1 - digits.len()))
    } else {
        digits.to_owned()
    };
    let (whole, fraction) = padded.split_at(padded.len() - decimals);
    let whole = match whole.trim_start_matches('0') {
        "" => "0",
        w => w,
    };
    let fraction = fraction.trim_end_matches('0');
    let sign = if negative && (whole != "0" || !fraction.is_empty()) {
        "-"
    } else {
        ""
    };
    Some(if fraction.is_empty() {
        format!("{sign}{whole}")
    } else {
        format!("{sign}{whole}.{fraction}")
    })
}

/// An amount as table cells: base units and the currency's decimals side by side.
pub fn amount_cells(currencies: &CurrencyTable, currency: &str, base_units: &str) -> Markup {
    let decimal = in_decimals(currencies, currency, base_units);
    html! {
        td.num { (base_units) }
        td.num { @if let Some(d) = decimal { (d) " " (currency) } @else { "—" } }
    }
}

/// A JSON value's text for a cell (strings without quotes; absent as a dash).
pub fn text(value: &Value) -> String {
    match value {
        Value::Null => "—".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A JSON value pretty-printed for a `<pre>` block.
pub fn pretty(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_in_the_currency_decimals() {
        let table = CurrencyTable::default_table();
        assert_eq!(
            in_decimals(&table, "BTC", "-5000000").as_deref(),
            Some("-0.05")
        );
        assert_eq!(
            in_decimals(&table, "BTC", "100000000").as_deref(),
            Some("1")
        );
        assert_eq!(
            in_decimals(&table, "BTC", "1").as_deref(),
            Some("0.00000001")
        );
        assert_eq!(
            in_decimals(&table, "USD", "-12345").as_deref(),
            Some("-123.45")
        );
        assert_eq!(in_decimals(&table, "USD", "0").as_deref(), Some("0"));
        assert_eq!(in_decimals(&table, "USD", "-0").as_deref(), Some("0"));
        assert_eq!(in_decimals(&table, "NOPE", "1"), None);
        assert_eq!(in_decimals(&table, "BTC", "1.5"), None);
    }
}
