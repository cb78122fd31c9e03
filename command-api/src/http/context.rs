//! Per-request context: the request id (taken from a well-formed `X-Request-Id`, else new),
//! a tracing span carrying it, the `X-Request-Id` response header, error bodies, and one
//! structured log line per request.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::IntoResponse;
use axum::response::Response;
use futures::FutureExt;
use tracing::Instrument;

use super::error::{self, ApiError, ErrorCode};

/// Longest request id accepted from a client.
const REQUEST_ID_LEN_MAX: usize = 64;

/// The id of the request being handled; handlers put it in event metadata.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

fn incoming_id(request: &Request) -> Option<String> {
    let id = request.headers().get("x-request-id")?.to_str().ok()?;
    let ok = !id.is_empty()
        && id.len() <= REQUEST_ID_LEN_MAX
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then(|| id.to_owned())
}

pub async fn request_context(mut request: Request, next: Next) -> Response {
    let id = incoming_id(&request).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    request.extensions_mut().insert(RequestId(id.clone()));
    let (method, path) = (request.method().clone(), request.uri().path().to_owned());
    let span = tracing::info_span!("request", request_id = %id, %method, %path);
    let started = Instant::now();
    // A panic is a bug; the client still gets the API's 500 error body, and the process lives on.
    let response = match AssertUnwindSafe(next.run(request).instrument(span))
        .catch_unwind()
        .await
    {
        Ok(response) => response,
        Err(_) => {
            tracing::error!(request_id = %id, "handler panicked");
            ApiError::new(
                ErrorCode::InternalError,
                "the server failed to handle this request",
            )
            .into_response()
        }
    };
    let mut response = error::render(response, &id);
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert("x-request-id", value);
    }
    tracing::info!(request_id = %id, %method, %path, status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64, "request");
    response
}
