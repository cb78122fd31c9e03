//! Request bodies: JSON only, bounded, read only after the caller is authenticated, and parsed
//! into typed requests with clear 400s (the field and what is wrong), never a panic. Signed
//! routes keep the raw value to compare with the signed payload.
//!
//! Bounds, in the order they apply: the route's body size (`RawBody<MAX>`, 413), the body-read
//! timeout (a layer of the router, 408), the nesting depth (`MAX_JSON_DEPTH`, 400), then JSON.

use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::StatusCode;
use events::domain::limits::{json_depth, MAX_BODY_BYTES_DEFAULT, MAX_JSON_DEPTH};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::ApiError;

pub use events::domain::limits::MAX_BODY_BYTES_SETTLEMENT;

/// A body not yet read. Network routes authenticate first and only then read it (SPEC §2:
/// 401/403 before 400), so an unauthenticated caller never makes the server buffer a body.
/// `MAX` is the route's body limit in bytes.
#[derive(Debug)]
pub struct RawBody<const MAX: usize = MAX_BODY_BYTES_DEFAULT> {
    is_json: bool,
    declared_len: Option<u64>,
    body: axum::body::Body,
}

impl<S: Send + Sync, const MAX: usize> FromRequest<S> for RawBody<MAX> {
    type Rejection = ApiError;

    async fn from_request(request: Request, _: &S) -> Result<Self, Self::Rejection> {
        let headers = request.headers();
        let is_json = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        let declared_len = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok(Self {
            is_json,
            declared_len,
            body: request.into_body(),
        })
    }
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is larger than this route's limit of {max} bytes"),
    )
    .with_detail("limit", max.into())
}

/// Whether a body-read error is the body-read timeout of the router's layer.
fn timed_out(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

impl<const MAX: usize> RawBody<MAX> {
    /// Reads the body (at most `MAX` bytes) and parses it as a JSON object: 413 over the limit,
    /// 408 when the client sends too slowly, 415 for another content type, 400 for a body nested
    /// deeper than `MAX_JSON_DEPTH` or anything not a JSON object.
    pub async fn json(self) -> Result<Value, ApiError> {
        if self.declared_len.is_some_and(|n| n > MAX as u64) {
            return Err(too_large(MAX));
        }
        let bytes = axum::body::to_bytes(self.body, MAX).await.map_err(|e| {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                too_large(MAX)
            } else if timed_out(inner.as_ref()) {
                ApiError::new(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the request body was not received in time",
                )
            } else {
                ApiError::bad_request("malformed_body", "the request body could not be read")
            }
        })?;
        parse_object(&bytes, self.is_json)
    }
}

/// The bytes of a body as a JSON object (see `RawBody::json`).
pub fn parse_object(bytes: &[u8], is_json: bool) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    if json_depth(bytes) > MAX_JSON_DEPTH {
        return Err(ApiError::bad_request(
            "json_too_deep",
            format!("the body nests objects and arrays deeper than {MAX_JSON_DEPTH} levels"),
        )
        .with_detail("limit", MAX_JSON_DEPTH.into()));
    }
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
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

/// A JSON object body, read at once (admin routes, whose token an earlier extractor checked).
#[derive(Debug, Clone)]
pub struct JsonBody(pub Value);

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        RawBody::<MAX_BODY_BYTES_DEFAULT>::from_request(request, state)
            .await?
            .json()
            .await
            .map(Self)
    }
}

/// Parses a JSON object into a typed request; the message names the field and the problem.
pub fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_json::from_value(value.clone())
        .map_err(|e| ApiError::bad_request("invalid_request", format!("invalid request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deep_bodies_are_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let refused = parse_object(deep.as_bytes(), true).unwrap_err();
        assert_eq!(refused.code, "json_too_deep");
        let nested = br#"{"a":{"b":{"c":{"d":1}}}}"#;
        assert!(parse_object(nested, true).is_ok());
        assert_eq!(
            parse_object(b"{}", false).unwrap_err().code,
            "unsupported_media_type"
        );
        assert_eq!(
            parse_object(b"\xff\xfe{}", true).unwrap_err().code,
            "malformed_json"
        );
    }

    proptest! {
        /// Any bytes: a JSON object or a 4xx, never a panic or a 5xx.
        #[test]
        fn any_bytes_parse_or_refuse(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            match parse_object(&bytes, true) {
                Ok(value) => prop_assert!(value.is_object()),
                Err(e) => prop_assert!(e.status.is_client_error()),
            }
        }

        /// Any JSON value: the same.
        #[test]
        fn any_json_parses_or_refuses(text in "[\\[\\]{}\":,0-9a-z\\\\ ]{0,256}") {
            match parse_object(text.as_bytes(), true) {
                Ok(value) => prop_assert!(value.is_object()),
                Err(e) => prop_assert!(e.status.is_client_error()),
            }
        }
    }
}
