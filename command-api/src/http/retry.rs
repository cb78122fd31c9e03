//! A settlement's own state on the write side, and running a failed execution again now: asked
//! by the partner's identical re-POST (settlements) or by an operator (`settlements/{id}/retry`).
//! Shared by the settlement and dispute routes, so neither has to import the other.

use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};
use events::codec::Actor;
use events::domain::settlement::{LifecycleRejection, Settlement};
use events::domain::{CommandId, StreamName};
use events::lifecycle::{self, Step};
use uuid::Uuid;

use super::auth::{self, stream, Admin, Caller, Role};
use super::command::{now, run, CommandSpec};
use super::context::RequestId;
use super::contract;
use super::error::{ApiError, ErrorCode};
use super::signed::Verified;
use super::views;
use crate::state::{sha256, AppState};

pub fn admin_routes() -> Router<AppState> {
    Router::new().route("/settlements/{id}/retry", post(admin_retry))
}

pub fn settlement_stream(settlement_id: Uuid) -> StreamName {
    stream("settlement", settlement_id)
}

/// Loads one settlement from the event store (the write side's own state).
pub async fn load_settlement(
    state: &AppState,
    settlement_id: Uuid,
) -> Result<Settlement, ApiError> {
    let stream = settlement_stream(settlement_id);
    let loaded = auth::load(state, std::slice::from_ref(&stream)).await?;
    Ok(loaded.aggregate::<Settlement>(&stream))
}

/// A lifecycle refusal as the API answers it.
pub fn lifecycle_error(e: LifecycleRejection) -> ApiError {
    let message = e.to_string();
    match e {
        LifecycleRejection::NotFound => ApiError::not_found("settlement"),
        LifecycleRejection::Completed => ApiError::new(ErrorCode::SettlementCompleted, message),
        LifecycleRejection::AlreadyFinalized
        | LifecycleRejection::DisputeWindowOpen
        | LifecycleRejection::TopUpWindowOpen => ApiError::new(ErrorCode::NotDue, message),
        LifecycleRejection::Money(m) => ApiError::new(ErrorCode::from(&m), message),
    }
}

/// Who asks for a retry of a failed execution.
pub enum Retrier<'a> {
    /// The partner, by re-sending the identical signed body.
    Partner {
        caller: &'a Caller,
        e: Uuid,
        signed: &'a Verified,
    },
    /// An operator, through the admin retry route.
    Admin,
}

/// Runs the execution of a failed settlement again now (a new command each time).
pub async fn retry(
    state: &AppState,
    request_id: &RequestId,
    by: Retrier<'_>,
    settlement_id: Uuid,
) -> Result<Response, ApiError> {
    let current = load_settlement(state, settlement_id).await?;
    let record = current
        .record()
        .ok_or_else(|| ApiError::not_found("settlement"))?;
    let mut streams = lifecycle::streams(record, Step::Execute, now());
    let id = CommandId::from_uuid(Uuid::new_v4());
    let spec = match &by {
        Retrier::Partner { caller, e, signed } => {
            streams.extend(auth::access_streams(caller, *e, Role::Partner));
            let mut spec = signed.spec(caller, *e, id, streams);
            spec.nonce = None;
            spec
        }
        Retrier::Admin => CommandSpec {
            id,
            request_hash: sha256(id.as_uuid().as_bytes()),
            nonce: None,
            streams,
            actor: Actor::Admin,
            key_id: None,
        },
    };
    run(state, request_id, spec, |loaded, at| {
        if let Retrier::Partner { caller, e, signed } = &by {
            signed.recheck(loaded, caller, *e, Role::Partner)?;
        }
        let (events, after) =
            lifecycle::decide(loaded, settlement_id, Step::Execute, at).map_err(lifecycle_error)?;
        let record = after
            .record()
            .ok_or_else(|| ApiError::internal("settlement missing"))?;
        let reply = views::reply(&contract::SettlementReply {
            settlement: views::settlement(record, at),
        })?;
        Ok((lifecycle::route(events), reply))
    })
    .await
}

async fn admin_retry(
    _: Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(settlement_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    retry(&state, &request_id, Retrier::Admin, settlement_id).await
}
