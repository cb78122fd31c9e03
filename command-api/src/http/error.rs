//! The API's one error type and the SPEC error body (`{"error", "code", "requestId"}`), rendered
//! in one place for every 4xx and 5xx — ours and the framework's (unknown route, wrong method,
//! oversize body). Internal errors are logged with the request id and never echoed.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// A refusal or failure, with its status, stable code and a sentence for humans.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Extra fields of the body (e.g. the released allocation of a 422).
    pub details: Option<serde_json::Map<String, serde_json::Value>>,
    /// Extra response headers (e.g. `Retry-After` of a 503).
    pub headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

/// What a handler's error leaves on its response for `render` to turn into the body.
#[derive(Debug, Clone)]
struct ErrorInfo {
    code: &'static str,
    message: String,
    details: Option<serde_json::Map<String, serde_json::Value>>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            headers: Vec::new(),
        }
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

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// An input refused by its limits (`events::domain::limits`): 400, naming the field.
    pub fn input(e: events::domain::limits::LimitError) -> Self {
        Self::bad_request(e.code(), e.to_string()).with_detail("field", e.field().into())
    }

    pub fn unauthorized(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, message)
    }

    pub fn forbidden(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn unprocessable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
    }

    /// A failure of ours: logged in full, answered with a sentence that leaks nothing.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(error = %error, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
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

/// Code and sentence for a framework error response that carries no `ErrorInfo`.
fn framework_error(status: StatusCode) -> (&'static str, &'static str) {
    match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take this method")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ),
        StatusCode::TOO_MANY_REQUESTS => ("rate_limited", "too many requests"),
        StatusCode::REQUEST_TIMEOUT => ("timeout", "the request took too long"),
        s if s.is_client_error() => ("bad_request", "the request is malformed"),
        _ => ("internal_error", "the server failed to handle this request"),
    }
}

/// Gives an error response the SPEC body; other responses pass through.
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
    body.insert("code".into(), code.into());
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
