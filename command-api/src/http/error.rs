//! The API's one error type and the API error body (`{"error", "code", "requestId"}`), rendered
//! in one place for every 4xx and 5xx — ours and the framework's (unknown route, wrong method,
//! oversize body). Internal errors are logged with the request id and never echoed. Every code
//! comes from the registry in `codes` (`ErrorCode`), which also gives its status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

pub use super::codes::ErrorCode;

/// A refusal or failure: its code (which gives the status), and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    message: String,
    /// Extra fields of the body (e.g. the released allocation of a 422).
    details: Option<serde_json::Map<String, serde_json::Value>>,
    /// Extra response headers (e.g. `Retry-After` of a 503).
    headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

/// What a handler's error leaves on its response for `render` to turn into the body.
#[derive(Debug, Clone)]
struct ErrorInfo {
    code: ErrorCode,
    message: String,
    details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    /// An error with `code`, answered with the code's status.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: code.status(),
            code,
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
    }

    /// Answers with another of the code's statuses (`ErrorCode::statuses`, e.g. 422 for
    /// `partner_inactive` when a client connects); a status the registry does not list for the
    /// code is ignored.
    pub fn with_status(mut self, status: StatusCode) -> Self {
        if self.code.statuses().contains(&status) {
            self.status = status;
        }
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn code(&self) -> ErrorCode {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// A field of the body besides `error`, `code` and `requestId`.
    pub fn detail(&self, key: &str) -> Option<&serde_json::Value> {
        self.details.as_ref()?.get(key)
    }

    /// Adds a header to the response (`render` keeps it on the rendered error).
    pub fn with_header(
        mut self,
        name: axum::http::HeaderName,
        value: axum::http::HeaderValue,
    ) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds a field to the error body.
    pub fn with_detail(mut self, key: &str, value: serde_json::Value) -> Self {
        self.details
            .get_or_insert_with(Default::default)
            .insert(key.to_owned(), value);
        self
    }

    /// An input refused by its limits (`events::domain::limits`): 400, naming the field.
    pub fn input(e: events::domain::limits::LimitError) -> Self {
        Self::new(ErrorCode::from(&e), e.to_string()).with_detail("field", e.field().into())
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(ErrorCode::NotFound, format!("{what} not found"))
    }

    /// A failure of ours: logged in full, answered with a sentence that leaks nothing.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(
            ErrorCode::InternalError,
            "the server failed to handle this request",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = self.status.into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response.extensions_mut().insert(ErrorInfo {
            code: self.code,
            message: self.message,
            details: self.details,
        });
        response
    }
}

/// Code and sentence for a framework error response that carries no `ErrorInfo`; the response
/// keeps the framework's status.
fn framework_error(status: StatusCode) -> (ErrorCode, &'static str) {
    match status {
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "this route does not take this method",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            (ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::UnsupportedMediaType,
            "the body must be JSON (Content-Type: application/json)",
        ),
        StatusCode::TOO_MANY_REQUESTS => (ErrorCode::RateLimited, "too many requests"),
        StatusCode::REQUEST_TIMEOUT => (ErrorCode::Timeout, "the request took too long"),
        s if s.is_client_error() => (ErrorCode::BadRequest, "the request is malformed"),
        _ => (
            ErrorCode::InternalError,
            "the server failed to handle this request",
        ),
    }
}

/// Gives an error response the API error body (docs/api/guide.md); other responses pass through.
pub fn render(response: Response, request_id: &str) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (code, message, details) = match response.extensions().get::<ErrorInfo>() {
        Some(info) => (info.code, info.message.clone(), info.details.clone()),
        None => {
            let (code, message) = framework_error(status);
            (code, message.to_owned(), None)
        }
    };
    let mut body = details.unwrap_or_default();
    body.insert("error".into(), message.into());
    body.insert("code".into(), code.code().into());
    body.insert("requestId".into(), request_id.into());
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let mut rendered = (status, Json(serde_json::Value::Object(body))).into_response();
    for (name, value) in parts.headers.iter() {
        if name != axum::http::header::CONTENT_TYPE {
            rendered.headers_mut().insert(name, value.clone());
        }
    }
    rendered
}
