//! Request bodies: JSON only, bounded, read only after the caller is authenticated, and parsed
//! into typed requests with clear 400s (the field and what is wrong), never a panic. Signed
//! routes keep the raw value to compare with the signed payload.
//!
//! Bounds, in the order they apply: the route's body size (`RawBody<MAX>`, 413), the body-read
//! timeout (a layer of the router, 408), the nesting depth (`MAX_JSON_DEPTH`, 400), then JSON.
//!
//! Both parses (the bytes into JSON, the JSON into a typed request) track where they are, so a
//! refusal carries a `field` member with the path of the offending value (`transfers[3].amount`)
//! and its sentence names it.

use axum::extract::{FromRequest, Request};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use events::domain::limits::{json_depth, MAX_BODY_BYTES_DEFAULT, MAX_JSON_DEPTH};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::error::{ApiError, ErrorCode};

pub use events::domain::limits::MAX_BODY_BYTES_SETTLEMENT;

/// A body not yet read. Network routes authenticate first and only then read it (docs/api/guide.md:
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
        Ok(Self::unread(request))
    }
}

/// Reads `request`'s body as `RawBody::json` does, within `max` bytes: for an extractor whose
/// limit is its route's constant (`signed::SignedRoute::MAX`).
pub async fn read_json(request: Request, max: usize) -> Result<Value, ApiError> {
    RawBody::<MAX_BODY_BYTES_DEFAULT>::unread(request)
        .json_within(max)
        .await
}

fn too_large(max: usize) -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
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
    /// The body of `request`, unread, with what its headers say about it.
    fn unread(request: Request) -> Self {
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
        Self {
            is_json,
            declared_len,
            body: request.into_body(),
        }
    }

    /// Reads the body (at most `MAX` bytes) and parses it as a JSON object: 413 over the limit,
    /// 408 when the client sends too slowly, 400 for another content type, for a body nested
    /// deeper than `MAX_JSON_DEPTH` and for anything not a JSON object.
    pub async fn json(self) -> Result<Value, ApiError> {
        self.json_within(MAX).await
    }

    /// As `json`, within `max` bytes.
    async fn json_within(self, max: usize) -> Result<Value, ApiError> {
        if self.declared_len.is_some_and(|n| n > max as u64) {
            return Err(too_large(max));
        }
        let bytes = axum::body::to_bytes(self.body, max).await.map_err(|e| {
            let inner = e.into_inner();
            if inner.is::<http_body_util::LengthLimitError>() {
                too_large(max)
            } else if timed_out(inner.as_ref()) {
                ApiError::new(
                    ErrorCode::Timeout,
                    "the request body was not received in time",
                )
            } else {
                ApiError::new(
                    ErrorCode::MalformedBody,
                    "the request body could not be read",
                )
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
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    if json_depth(bytes) > MAX_JSON_DEPTH {
        return Err(ApiError::new(
            ErrorCode::JsonTooDeep,
            format!("the body nests objects and arrays deeper than {MAX_JSON_DEPTH} levels"),
        )
        .with_detail("limit", MAX_JSON_DEPTH.into()));
    }
    let value: Value =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(bytes))
            .map_err(|e| refusal(ErrorCode::MalformedJson, "the body is not valid JSON", e))?;
    if !value.is_object() {
        return Err(ApiError::new(
            ErrorCode::MalformedJson,
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

/// Parses a JSON object into a typed request: 400 `invalid_request`, whose `field` is the path of
/// the value refused and whose message names it and the problem.
pub fn parse<T: DeserializeOwned>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value)
        .map_err(|e| refusal(ErrorCode::InvalidRequest, "invalid request", e))
}

/// The path of the value a parse refused, as the caller would write it (`transfers[3].amount`);
/// `None` for the body as a whole.
fn field_path(error: &serde_path_to_error::Error<serde_json::Error>) -> Option<String> {
    use serde_path_to_error::Segment;
    let mut path = String::new();
    for segment in error.path().iter() {
        match segment {
            Segment::Seq { index } => path.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            // Where a key was expected but could not be read: the path ends before it.
            Segment::Unknown => break,
        }
    }
    // A missing field is reported at its parent's path; the field is serde's to name.
    let message = error.inner().to_string();
    let missing = message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.strip_suffix('`'));
    let field = match missing {
        Some(name) if path.is_empty() => name.to_owned(),
        Some(name) => format!("{path}.{name}"),
        None => path,
    };
    (!field.is_empty()).then_some(field)
}

/// A 400 for a parse that failed: the sentence and `field` name where.
fn refusal(
    code: ErrorCode,
    what: &str,
    error: serde_path_to_error::Error<serde_json::Error>,
) -> ApiError {
    let inner = error.inner();
    match field_path(&error) {
        Some(field) => ApiError::new(code, format!("{what}: {field}: {inner}"))
            .with_detail("field", field.into()),
        None => ApiError::new(code, format!("{what}: {inner}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn deep_bodies_are_refused_before_parsing() {
        let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
        let refused = parse_object(deep.as_bytes(), true).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::JsonTooDeep);
        let nested = br#"{"a":{"b":{"c":{"d":1}}}}"#;
        assert!(parse_object(nested, true).is_ok());
        assert_eq!(
            parse_object(b"\xff\xfe{}", true).unwrap_err().code(),
            ErrorCode::MalformedJson
        );
    }

    #[test]
    fn a_body_that_is_not_json_is_a_400() {
        let refused = parse_object(b"{}", false).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::UnsupportedMediaType);
        assert_eq!(refused.status(), axum::http::StatusCode::BAD_REQUEST);
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)] // Only parsed: the tests look at the refusals.
    struct Request {
        external_id: String,
        transfers: Vec<Transfer>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)] // Only parsed: the tests look at the refusals.
    struct Transfer {
        currency: String,
        amount: String,
    }

    fn refused(body: Value) -> ApiError {
        parse::<Request>(&body).expect_err("refused")
    }

    #[track_caller]
    fn names_field(e: &ApiError, field: &str) {
        assert_eq!(e.code(), ErrorCode::InvalidRequest, "{e:?}");
        assert_eq!(e.status(), axum::http::StatusCode::BAD_REQUEST, "{e:?}");
        assert_eq!(e.detail("field"), Some(&Value::from(field)), "{e:?}");
        assert!(e.message().contains(field), "{e:?}");
    }

    fn transfer(amount: Value) -> Value {
        serde_json::json!({"currency": "BTC", "amount": amount})
    }

    #[test]
    fn a_wrong_type_deep_in_a_list_names_its_path() {
        let ok = transfer("1".into());
        let body = serde_json::json!({
            "externalId": "s-1",
            "transfers": [ok, ok, ok, transfer(serde_json::json!({"x": 1}))],
        });
        let e = refused(body);
        names_field(&e, "transfers[3].amount");
        assert!(e.message().contains("invalid type: map"), "{e:?}");
    }

    #[test]
    fn missing_and_unknown_fields_name_their_path() {
        let e = refused(serde_json::json!({"transfers": []}));
        names_field(&e, "externalId");
        let e = refused(serde_json::json!({
            "externalId": "s-1",
            "transfers": [{"currency": "BTC"}],
        }));
        names_field(&e, "transfers[0].amount");
        let e = refused(serde_json::json!({
            "externalId": "s-1",
            "transfers": [],
            "oesLicence": true,
        }));
        names_field(&e, "oesLicence");
    }

    #[test]
    fn malformed_json_names_where_parsing_stopped() {
        let e = parse_object(br#"{"transfers":[{"amount":"1"},{"amount":}]}"#, true)
            .expect_err("refused");
        assert_eq!(e.code(), ErrorCode::MalformedJson);
        assert_eq!(
            e.detail("field"),
            Some(&Value::from("transfers[1].amount")),
            "{e:?}"
        );
        let e = parse_object(b"{bad", true).expect_err("refused");
        assert_eq!(e.code(), ErrorCode::MalformedJson);
        assert_eq!(e.detail("field"), None, "{e:?}");
    }

    proptest! {
        /// Any bytes: a JSON object or a 4xx, never a panic or a 5xx.
        #[test]
        fn any_bytes_parse_or_refuse(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            match parse_object(&bytes, true) {
                Ok(value) => prop_assert!(value.is_object()),
                Err(e) => prop_assert!(e.status().is_client_error()),
            }
        }

        /// Any JSON value: the same.
        #[test]
        fn any_json_parses_or_refuses(text in "[\\[\\]{}\":,0-9a-z\\\\ ]{0,256}") {
            match parse_object(text.as_bytes(), true) {
                Ok(value) => prop_assert!(value.is_object()),
                Err(e) => prop_assert!(e.status().is_client_error()),
            }
        }
    }
}
