//! Request bodies: JSON only, parsed into typed requests with clear 400s (the field and what is
//! wrong), never a panic. Signed routes keep the raw value to compare with the signed payload.

use axum::extract::{FromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

/// Largest request body, in bytes (a 10,000-line settlement fits).
pub const BODY_BYTES_MAX: usize = 8 * 1024 * 1024;

/// A body read but not yet judged. Network routes authenticate first and only then look at
/// the body (SPEC §2: 401/403 before 400); an oversize body is refused while reading (413).
#[derive(Debug, Clone)]
pub struct RawBody {
    is_json: bool,
    bytes: axum::body::Bytes,
}

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = request
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        let bytes = axum::body::Bytes::from_request(request, state)
            .await
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        e.status(),
                        "payload_too_large",
                        "the request body is too large",
                    )
                } else {
                    ApiError::bad_request("malformed_body", "the request body could not be read")
                }
            })?;
        Ok(Self { is_json, bytes })
    }
}

impl RawBody {
    /// The body as a JSON object: 415 for another content type, 400 for anything not an object.
    pub fn json(&self) -> Result<Value, ApiError> {
        if self.bytes.is_empty() {
            return Ok(Value::Object(Default::default()));
        }
        if !self.is_json {
            return Err(ApiError::new(
                axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (Content-Type: application/json)",
            ));
        }
        let value: Value = serde_json::from_slice(&self.bytes).map_err(|e| {
            ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        })?;
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "malformed_json",
                "the body must be a JSON object",
            ));
        }
        Ok(value)
    }
}

/// A JSON object body, parsed at once (admin routes, whose token is checked by an earlier extractor).
#[derive(Debug, Clone)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        RawBody::from_request(request, state)
            .await?
            .json()
            .map(Self)
    }
}

/// Parses a JSON object into a typed request; the message names the field and the problem.
pub fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_json::from_value(value.clone())
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid request: {e}")))
}
