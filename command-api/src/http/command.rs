//! Running a command over HTTP: the one write path (`events::store::execute`) with the reply
//! recorded as the command's outcome, so an idempotent retry answers exactly as the first time,
//! and every write answers with its position token (`X-Event-Position`).

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::codec::{Actor, Metadata};
use events::domain::event::Timestamp;
use events::domain::{CommandId, DomainEvent, StreamName};
use events::store::{
    execute, AppendError, Command, Decision, ExecuteError, Executed, Loaded, NonceClaim,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::consistency::position_token;
use super::context::RequestId;
use super::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// The answer a command gives, stored as its outcome.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// Error code when `status` is an error (e.g. a 422 that still recorded events).
    #[serde(default)]
    pub code: Option<String>,
}

impl Reply {
    pub fn ok(body: Value) -> Self {
        Self {
            status: 200,
            body,
            code: None,
        }
    }

    /// A refusal that is nonetheless recorded (e.g. a released allocation), with its code's
    /// status.
    pub fn refused(code: ErrorCode, message: &str, details: Value) -> Self {
        let mut body = details.as_object().cloned().unwrap_or_default();
        body.insert("error".into(), message.into());
        Self {
            status: code.status().as_u16(),
            body: Value::Object(body),
            code: Some(code.code().to_owned()),
        }
    }
}

/// Everything about a command except its decision.
#[derive(Clone, Debug)]
pub struct CommandSpec {
    pub id: CommandId,
    pub request_hash: [u8; 32],
    pub nonce: Option<NonceClaim>,
    pub streams: Vec<StreamName>,
    pub actor: Actor,
    pub key_id: Option<Uuid>,
}

/// What a command's decide returns.
pub type Decided = Result<(Vec<(StreamName, DomainEvent)>, Reply), ApiError>;

/// The current time: the only clock read of a command, passed into the pure decision.
pub fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_micros())
}

/// Executes a command and renders its reply (first or replayed).
pub async fn run(
    state: &AppState,
    request_id: &RequestId,
    spec: CommandSpec,
    decide: impl FnMut(&Loaded, Timestamp) -> Decided,
) -> Result<Response, ApiError> {
    run_replayable(state, request_id, spec, decide)
        .await
        .map(|(response, _)| response)
}

/// As `run`, also saying whether the reply is an earlier outcome replayed.
pub async fn run_replayable(
    state: &AppState,
    request_id: &RequestId,
    spec: CommandSpec,
    mut decide: impl FnMut(&Loaded, Timestamp) -> Decided,
) -> Result<(Response, bool), ApiError> {
    let at = now();
    let command = Command {
        id: spec.id,
        request_hash: spec.request_hash,
        metadata: Metadata {
            command_id: spec.id,
            causation_id: None,
            correlation_id: spec.id.as_uuid(),
            actor: spec.actor,
            request_id: Some(request_id.0.clone()),
            key_id: spec.key_id,
        },
        nonce: spec.nonce,
        streams: spec.streams,
        recorded_at: at,
    };
    let executed = execute(&state.store, &command, |loaded| {
        let (events, reply) = decide(loaded, at)?;
        let outcome = serde_json::to_vec(&reply).map_err(ApiError::internal)?;
        Ok(Decision { events, outcome })
    })
    .await;
    match executed {
        Ok(Executed::Committed { outcome, txid }) => Ok((render(&outcome, txid)?, false)),
        Ok(Executed::Replayed { outcome, txid }) => Ok((render(&outcome, txid)?, true)),
        Ok(Executed::Rejected(error)) => Err(error),
        Err(ExecuteError::RequestMismatch) => Err(ApiError::new(
            ErrorCode::IdempotencyConflict,
            "this request repeats an earlier one's identity with different content",
        )),
        Err(ExecuteError::NonceReused) => {
            Err(ApiError::new(ErrorCode::NonceReused, "nonce already used"))
        }
        Err(ExecuteError::Append(AppendError::EventTooLarge { bytes, .. })) => Err(ApiError::new(
            ErrorCode::EventTooLarge,
            format!(
                "this request would record an event of {bytes} bytes; at most {} are allowed",
                events::domain::limits::MAX_EVENT_BYTES
            ),
        )),
        Err(ExecuteError::Contention) => Err(ApiError::new(
            ErrorCode::Contention,
            "too many concurrent changes; retry",
        )),
        Err(e) => Err(ApiError::internal(e)),
    }
}

fn render(outcome: &[u8], txid: Option<i64>) -> Result<Response, ApiError> {
    let reply: Reply = serde_json::from_slice(outcome).map_err(ApiError::internal)?;
    let status = StatusCode::from_u16(reply.status).map_err(ApiError::internal)?;
    let mut response = if status.is_success() {
        (status, Json(reply.body)).into_response()
    } else {
        let message = reply
            .body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("refused")
            .to_owned();
        let code = reply
            .code
            .as_deref()
            .and_then(ErrorCode::from_code)
            .unwrap_or(ErrorCode::Refused);
        let mut error = ApiError::new(code, message).with_status(status);
        if let Value::Object(fields) = reply.body {
            for (k, v) in fields.into_iter().filter(|(k, _)| k != "error") {
                error = error.with_detail(&k, v);
            }
        }
        error.into_response()
    };
    if let Some(token) = txid.map(position_token) {
        if let Ok(value) = HeaderValue::from_str(&token) {
            response.headers_mut().insert("x-event-position", value);
        }
    }
    Ok(response)
}
