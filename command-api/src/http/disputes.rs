//! Dispute routes (docs/api/lifecycle.md): clients raise, retract, amend and close disputes with
//! signed requests (`signed::Signed`); operators close them with adjusted transfers; both sides
//! list them. Every change is a command on the disputed settlement's stream (and, for a closure
//! that carries transfers, the partner's). A closure answers `{"disputeClosure": …}`, the other
//! commands `{"dispute": …}`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{post, put};
use axum::{Extension, Json, Router};
use events::codec::Actor;
use events::domain::connection::Connection;
use events::domain::dispute::{
    closure_command_id, closure_id_of, dispute_id_of, Amounts, CloseDispute, ClosedBy,
    DisputeRejection, RaiseDispute, UpdateDispute,
};
use events::domain::event::Timestamp;
use events::domain::money::{parse_nonzero_amount, AmountFormat, CurrencyCode, CurrencyTable};
use events::domain::settlement::Settlement;
use events::domain::{DomainEvent, StreamName};
use events::lifecycle;
use events::store::Loaded;
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::auth::{self, connection_stream, partner_stream, Access, Admin, Caller, Role};
use super::body::{parse, JsonBody};
use super::command::{run, CommandSpec, Decided};
use super::context::RequestId;
use super::contract;
use super::error::{ApiError, ErrorCode};
use super::network::{read_access, side};
use super::reads::{self, page_of};
use super::retry::{load_settlement, settlement_stream};
use super::signed::{signing, PathIds, Signed, SignedRoute};
use super::views::{self, Owners, TransferState};
use crate::state::{sha256, AppState};

/// How often a dispute look-up polls the read model while it catches up (an unknown id costs
/// the bounded wait, so this stays coarse).
const LOCATE_POLL: Duration = Duration::from_millis(50);

pub fn network_routes() -> Router<AppState> {
    let client = "/v1/enterprises/{e}/clients";
    Router::new()
        .route(
            &format!("{client}/settlements/{{id}}/disputes"),
            post(raise),
        )
        .route(
            &format!("{client}/settlements/{{id}}/disputes/signing"),
            post(signing::<RaiseRoute>).get(signing::<RaiseRoute>),
        )
        .route(
            &format!("{client}/settlements/disputes/{{id}}"),
            put(update),
        )
        .route(
            &format!("{client}/settlements/disputes/{{id}}/signing"),
            post(signing::<UpdateRoute>).get(signing::<UpdateRoute>),
        )
        .route(
            &format!("{client}/settlements/disputes/{{id}}/close"),
            post(close),
        )
        .route(
            &format!("{client}/settlements/disputes/{{id}}/close/signing"),
            post(signing::<CloseRoute>).get(signing::<CloseRoute>),
        )
        .route(
            &format!("{client}/settlement/disputes"),
            axum::routing::get(list::<false>),
        )
        .route(
            "/v1/enterprises/{e}/partners/settlement/disputes",
            axum::routing::get(list::<true>),
        )
}

pub fn admin_routes() -> Router<AppState> {
    Router::new().route("/disputes/{id}/close", post(admin_close))
}

/// The dispute object (docs/api/guide.md); kept here for the routes that render it by name.
pub use super::views::dispute as view;

fn dispute_error(e: DisputeRejection) -> ApiError {
    let message = e.to_string();
    match e {
        DisputeRejection::SettlementNotFound => ApiError::not_found("settlement"),
        DisputeRejection::DisputeNotFound => ApiError::not_found("dispute"),
        DisputeRejection::AlreadyDisputed => ApiError::new(ErrorCode::AlreadyDisputed, message),
        DisputeRejection::NotDisputable => ApiError::new(ErrorCode::NotDisputable, message),
        DisputeRejection::WindowClosed => ApiError::new(ErrorCode::DisputeWindowClosed, message),
        DisputeRejection::WindowOpen => ApiError::new(ErrorCode::DisputeWindowOpen, message),
        DisputeRejection::Finalizing => ApiError::new(ErrorCode::SettlementFinalizing, message),
        DisputeRejection::Closed => ApiError::new(ErrorCode::DisputeClosed, message),
        DisputeRejection::Retracted => ApiError::new(ErrorCode::DisputeRetracted, message),
        DisputeRejection::ConnectionNotOurs
        | DisputeRejection::WrongConnection
        | DisputeRejection::NoAmounts
        | DisputeRejection::ZeroAmount => ApiError::new(ErrorCode::InvalidDispute, message),
        DisputeRejection::Input(e) => ApiError::input(e),
    }
}

/// `{currency: "amount"}` in the connection's amount format, to sorted base units.
fn parse_amounts(
    value: &Value,
    field: &str,
    format: AmountFormat,
    currencies: &CurrencyTable,
) -> Result<Amounts, ApiError> {
    let invalid = |m: String| ApiError::new(ErrorCode::InvalidDispute, m);
    let map = value
        .as_object()
        .ok_or_else(|| invalid(format!("{field} must be an object")))?;
    let mut amounts: Amounts = Vec::with_capacity(map.len());
    for (currency, amount) in map {
        let code = CurrencyCode::parse(currency)
            .map_err(|e| ApiError::new(ErrorCode::from(&e), format!("{field}: {e}")))?;
        let decimals = currencies
            .decimals_of(&code)
            .map_err(|e| ApiError::new(ErrorCode::from(&e), format!("{field}: {e}")))?;
        let text = amount
            .as_str()
            .ok_or_else(|| invalid(format!("{field}.{currency}: an amount is a JSON string")))?;
        let quantity = parse_nonzero_amount(text, format, decimals)
            .map_err(|e| ApiError::new(ErrorCode::from(&e), format!("{field}.{currency}: {e}")))?;
        amounts.push((code, quantity));
    }
    amounts.sort();
    amounts.dedup_by(|a, b| a.0 == b.0);
    Ok(amounts)
}

/// The client's own connection, folded from loaded streams (404 for anyone else's).
fn own_connection(
    loaded: &Loaded,
    e: Uuid,
    connection_id: Uuid,
) -> Result<(Connection, AmountFormat), ApiError> {
    let connection: Connection = loaded.aggregate(&connection_stream(connection_id));
    let format = connection
        .owned_by_client(e)
        .ok_or_else(|| ApiError::not_found("connection"))?
        .amount_format;
    Ok((connection, format))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RaiseRequest {
    connection_id: Uuid,
    reason: Option<String>,
    #[schema(value_type = HashMap<String, String>)]
    expected_transfers: Value,
}

/// A client sees a settlement only through a connection to its partner; anything else is
/// invisible (404).
fn visible(settlement: &Settlement, connection: &Connection) -> Result<(), ApiError> {
    match (settlement.record(), connection.record()) {
        (Some(s), Some(c)) if s.staged.partner_id == c.partner_id => Ok(()),
        _ => Err(ApiError::not_found("settlement")),
    }
}

/// `POST …/clients/settlements/{settlementId}/disputes`: raise a dispute.
pub(super) struct RaiseRoute;

impl SignedRoute for RaiseRoute {
    const ROLE: Role = Role::Client;
    type Path = (Uuid, Uuid);
    type Request = RaiseRequest;
    type Found = ();
    /// The request and its expected transfers in base units.
    type Valid = (RaiseRequest, Amounts);

    fn before_body(_: &Access, _: &Loaded, _: (Uuid, Uuid)) -> Result<(), ApiError> {
        Ok(())
    }

    /// The client's own connection to the settlement's partner (404 otherwise), and amounts in
    /// its format.
    async fn validate(
        state: &AppState,
        (e, settlement_id): (Uuid, Uuid),
        _: (),
        request: RaiseRequest,
        _: &Value,
    ) -> Result<(Self::Valid, PathIds), ApiError> {
        let loaded = auth::load(
            state,
            &[
                connection_stream(request.connection_id),
                settlement_stream(settlement_id),
            ],
        )
        .await?;
        let (connection, format) = own_connection(&loaded, e, request.connection_id)?;
        let settlement: Settlement = loaded.aggregate(&settlement_stream(settlement_id));
        visible(&settlement, &connection)?;
        let expected = parse_amounts(
            &request.expected_transfers,
            "expectedTransfers",
            format,
            &state.currencies,
        )?;
        let path_ids = vec![("settlementId", settlement_id.to_string())];
        Ok(((request, expected), path_ids))
    }
}

async fn raise(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    signed: Signed<RaiseRoute>,
) -> Result<Response, ApiError> {
    let ((e, settlement_id), (request, expected)) = (signed.path, &signed.request);
    let dispute_id = dispute_id_of(settlement_id, request.connection_id);
    let streams = vec![
        settlement_stream(settlement_id),
        connection_stream(request.connection_id),
    ];
    client_command(
        &state,
        &request_id,
        &signed,
        (settlement_id, dispute_id),
        (streams, Answer::Dispute),
        |loaded, current, at| {
            let (connection, _) = own_connection(loaded, e, request.connection_id)?;
            let raise = RaiseDispute {
                dispute_id,
                connection_id: request.connection_id,
                client_enterprise_id: e,
                user_id: signed.caller.user_id,
                reason: request.reason.clone(),
                expected_transfers: expected.clone(),
                signed: signed.signature.kept(),
            };
            current
                .decide_raise(raise, &connection, at)
                .map_err(dispute_error)
        },
    )
    .await
}

/// A signed client command on a dispute's settlement: the access streams plus `streams` are
/// loaded, access and the key re-checked, and `decide` runs on the settlement; the answer is
/// `answer_with` of the dispute as the command leaves it.
async fn client_command<R: SignedRoute>(
    state: &AppState,
    request_id: &RequestId,
    by: &Signed<R>,
    (settlement_id, dispute_id): (Uuid, Uuid),
    (streams, answer_with): (Vec<StreamName>, Answer<'_>),
    decide: impl Fn(&Loaded, &Settlement, Timestamp) -> Result<Vec<DomainEvent>, ApiError>,
) -> Result<Response, ApiError> {
    let spec = by.spec(by.nonce_command(), by.streams(streams));
    run(state, request_id, spec, |loaded, at| {
        by.recheck(loaded)?;
        let current: Settlement = loaded.aggregate(&settlement_stream(settlement_id));
        let events = decide(loaded, &current, at)?;
        answer(current, events, dispute_id, &answer_with)
    })
    .await
}

/// What a dispute command answers with.
enum Answer<'a> {
    /// `{"dispute": …}`: raising, retracting, amending.
    Dispute,
    /// `{"disputeClosure": …}`: closing; `Owners` of every connection its transfers may name.
    Closure(&'a Owners),
}

/// The settlement after `events`, answered with dispute `dispute_id` or with its closure.
fn answer(
    current: Settlement,
    events: Vec<DomainEvent>,
    dispute_id: Uuid,
    answer_with: &Answer<'_>,
) -> Decided {
    let after = events.iter().fold(current, Settlement::evolve);
    let record = after
        .record()
        .ok_or_else(|| ApiError::not_found("settlement"))?;
    let d = record
        .dispute(dispute_id)
        .ok_or_else(|| ApiError::not_found("dispute"))?;
    let body = match answer_with {
        Answer::Dispute => views::reply(&contract::DisputeReply {
            dispute: view(record, d, None),
        })?,
        Answer::Closure(owners) => {
            let closure = d
                .closure
                .as_ref()
                .ok_or_else(|| ApiError::internal("closed dispute without closure"))?;
            // Its transfers wait for the partner's next v2 settlement.
            let state = TransferState {
                settlement_id: None,
                closure_id: Some(closure.closure_id),
                partner_enterprise_id: record.staged.partner_enterprise_id,
                status: "pending_settlement_assignment",
                created_at: closure.at,
                updated_at: closure.at,
            };
            let transfers = closure
                .adjusted_transfers
                .iter()
                .map(|t| views::transfer(t, &state, owners))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| ApiError::internal("a closure names a connection not loaded"))?;
            views::reply(&contract::DisputeClosureReply {
                dispute_closure: views::closure(d, transfers)
                    .ok_or_else(|| ApiError::internal("closed dispute without closure"))?,
            })?
        }
    };
    Ok((lifecycle::route(events), body))
}

/// The owners of every connection a closure of `dispute_id` can carry a transfer of: those of
/// the settlement's transfers touching the dispute's connection. Read before the command (they
/// are facts fixed at the connections' creation), so the command decides on no more streams.
async fn closure_owners(
    state: &AppState,
    settlement: &Settlement,
    dispute_id: Uuid,
) -> Result<Owners, ApiError> {
    let Some((record, connection)) = settlement
        .record()
        .and_then(|r| Some((r, r.dispute(dispute_id)?.connection_id)))
    else {
        return Ok(Owners::new());
    };
    let mut ids = std::collections::BTreeSet::from([connection]);
    for t in record.all_transfers() {
        let i = &t.instruction;
        if i.destination == connection || i.source == Some(connection) {
            ids.insert(i.destination);
            ids.extend(i.source);
        }
    }
    let streams: Vec<StreamName> = ids.iter().map(|id| connection_stream(*id)).collect();
    let loaded = auth::load(state, &streams).await?;
    let connections: Vec<Connection> = streams
        .iter()
        .map(|s| loaded.aggregate::<Connection>(s))
        .collect();
    Ok(views::owners(&connections))
}

/// The settlement a dispute belongs to, from the read model; a dispute raised a moment ago may
/// not be projected yet, so a miss waits (bounded) for the projection before it is a 404.
async fn locate(state: &AppState, dispute_id: Uuid) -> Result<Uuid, ApiError> {
    let started = Instant::now();
    loop {
        let found: Option<Uuid> =
            sqlx::query_scalar("SELECT settlement_id FROM rm_disputes WHERE id = $1")
                .bind(dispute_id)
                .fetch_optional(&state.pool)
                .await
                .map_err(ApiError::internal)?;
        if let Some(settlement_id) = found {
            return Ok(settlement_id);
        }
        if started.elapsed() >= state.read_wait_max {
            return Err(ApiError::not_found("dispute"));
        }
        tokio::time::sleep(LOCATE_POLL).await;
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = DisputeUpdateRequest)]
pub(super) struct UpdateRequest {
    connection_id: Uuid,
    retracted: bool,
    reason: Option<String>,
    #[schema(value_type = Option<HashMap<String, String>>)]
    expected_transfers: Option<Value>,
}

/// What a client's dispute request needs, once access is checked, before its signature is: its
/// connection's amount format, and the dispute's settlement (404 unless it is the client's).
async fn dispute_access(
    state: &AppState,
    e: Uuid,
    dispute_id: Uuid,
    connection_id: Option<Uuid>,
) -> Result<(AmountFormat, Uuid, Settlement), ApiError> {
    let settlement_id = locate(state, dispute_id).await?;
    let mut extra = vec![settlement_stream(settlement_id)];
    extra.extend(connection_id.map(connection_stream));
    let loaded = auth::load(state, &extra).await?;
    let settlement: Settlement = loaded.aggregate(&settlement_stream(settlement_id));
    let owned = settlement
        .record()
        .and_then(|r| r.dispute(dispute_id))
        .is_some_and(|d| d.client_enterprise_id == e);
    if !owned {
        return Err(ApiError::not_found("dispute"));
    }
    let format = match connection_id {
        Some(c) => own_connection(&loaded, e, c)?.1,
        None => AmountFormat::BaseUnits,
    };
    Ok((format, settlement_id, settlement))
}

/// `PUT …/clients/settlements/disputes/{disputeId}`: retract, un-retract or amend a dispute.
pub(super) struct UpdateRoute;

/// A dispute update, validated.
pub(super) struct Update {
    request: UpdateRequest,
    /// The amended expected transfers in base units.
    expected: Option<Amounts>,
    /// The settlement the dispute is on.
    settlement_id: Uuid,
}

impl SignedRoute for UpdateRoute {
    const ROLE: Role = Role::Client;
    type Path = (Uuid, Uuid);
    type Request = UpdateRequest;
    type Found = ();
    type Valid = Update;

    fn before_body(_: &Access, _: &Loaded, _: (Uuid, Uuid)) -> Result<(), ApiError> {
        Ok(())
    }

    async fn validate(
        state: &AppState,
        (e, dispute_id): (Uuid, Uuid),
        _: (),
        request: UpdateRequest,
        _: &Value,
    ) -> Result<(Update, PathIds), ApiError> {
        let (format, settlement_id, _) =
            dispute_access(state, e, dispute_id, Some(request.connection_id)).await?;
        let expected = request
            .expected_transfers
            .as_ref()
            .map(|v| parse_amounts(v, "expectedTransfers", format, &state.currencies))
            .transpose()?;
        let path_ids = vec![
            ("disputeId", dispute_id.to_string()),
            ("settlementId", settlement_id.to_string()),
        ];
        let update = Update {
            request,
            expected,
            settlement_id,
        };
        Ok((update, path_ids))
    }
}

async fn update(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    signed: Signed<UpdateRoute>,
) -> Result<Response, ApiError> {
    let ((e, dispute_id), valid) = (signed.path, &signed.request);
    let (request, settlement_id) = (&valid.request, valid.settlement_id);
    let streams = vec![settlement_stream(settlement_id)];
    client_command(
        &state,
        &request_id,
        &signed,
        (settlement_id, dispute_id),
        (streams, Answer::Dispute),
        |_, current, at| {
            let update = UpdateDispute {
                dispute_id,
                connection_id: request.connection_id,
                client_enterprise_id: e,
                user_id: signed.caller.user_id,
                retracted: request.retracted,
                reason: request.reason.clone(),
                expected_transfers: valid.expected.clone(),
                signed: signed.signature.kept(),
            };
            current.decide_update(update, at).map_err(dispute_error)
        },
    )
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CloseRequest {
    notes: String,
}

/// The streams a closure decides on: the settlement and, for queued transfers, the partner.
fn closure_streams(settlement: &Settlement, settlement_id: Uuid) -> Vec<StreamName> {
    let mut streams = vec![settlement_stream(settlement_id)];
    if let Some(r) = settlement.record() {
        streams.push(partner_stream(r.staged.partner_id));
    }
    streams
}

/// `POST …/clients/settlements/disputes/{disputeId}/close`: the client withdraws its dispute.
pub(super) struct CloseRoute;

impl SignedRoute for CloseRoute {
    const ROLE: Role = Role::Client;
    type Path = (Uuid, Uuid);
    type Request = CloseRequest;
    type Found = ();
    /// The request, and the dispute's settlement id and state.
    type Valid = (CloseRequest, Uuid, Settlement);

    fn before_body(_: &Access, _: &Loaded, _: (Uuid, Uuid)) -> Result<(), ApiError> {
        Ok(())
    }

    async fn validate(
        state: &AppState,
        (e, dispute_id): (Uuid, Uuid),
        _: (),
        request: CloseRequest,
        _: &Value,
    ) -> Result<(Self::Valid, PathIds), ApiError> {
        let (_, settlement_id, settlement) = dispute_access(state, e, dispute_id, None).await?;
        let path_ids = vec![
            ("enterpriseId", e.to_string()),
            ("disputeId", dispute_id.to_string()),
        ];
        Ok(((request, settlement_id, settlement), path_ids))
    }
}

async fn close(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    signed: Signed<CloseRoute>,
) -> Result<Response, ApiError> {
    let ((e, dispute_id), (request, settlement_id, settlement)) = (signed.path, &signed.request);
    let settlement_id = *settlement_id;
    let streams = closure_streams(settlement, settlement_id);
    let owners = closure_owners(&state, settlement, dispute_id).await?;
    client_command(
        &state,
        &request_id,
        &signed,
        (settlement_id, dispute_id),
        (streams, Answer::Closure(&owners)),
        |_, current, at| {
            let close = CloseDispute {
                dispute_id,
                closure_id: closure_id_of(dispute_id),
                closed_by: ClosedBy::Client,
                client_enterprise_id: Some(e),
                user_id: Some(signed.caller.user_id),
                notes: request.notes.clone(),
                adjusted_transfers: vec![],
                signed: Some(signed.signature.kept()),
            };
            current.decide_close(close, at).map_err(dispute_error)
        },
    )
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AdminCloseRequest {
    notes: String,
    #[schema(value_type = HashMap<String, String>)]
    adjusted_transfers: Value,
}

async fn admin_close(
    _: Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(dispute_id): Path<Uuid>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request: AdminCloseRequest = parse(&body)?;
    let settlement_id = locate(&state, dispute_id).await?;
    let settlement = load_settlement(&state, settlement_id).await?;
    let connection_id = settlement
        .record()
        .and_then(|r| r.dispute(dispute_id))
        .map(|d| d.connection_id)
        .ok_or_else(|| ApiError::not_found("dispute"))?;
    let connection_stream = connection_stream(connection_id);
    let loaded = auth::load(&state, std::slice::from_ref(&connection_stream)).await?;
    let connection = loaded.aggregate::<Connection>(&connection_stream);
    let format = connection
        .record()
        .map_or(AmountFormat::BaseUnits, |c| c.amount_format);
    // An operator's adjusted transfers are party-shaped: to the dispute's connection only.
    let owners = views::owners([&connection]);
    let adjusted = parse_amounts(
        &request.adjusted_transfers,
        "adjustedTransfers",
        format,
        &state.currencies,
    )?;
    let spec = CommandSpec {
        id: closure_command_id(dispute_id),
        request_hash: sha256(body.to_string().as_bytes()),
        nonce: None,
        streams: closure_streams(&settlement, settlement_id),
        actor: Actor::Admin,
        key_id: None,
    };
    run(&state, &request_id, spec, |loaded, at| {
        let current: Settlement = loaded.aggregate(&settlement_stream(settlement_id));
        let events = current
            .decide_close(
                CloseDispute {
                    dispute_id,
                    closure_id: closure_id_of(dispute_id),
                    closed_by: ClosedBy::Admin,
                    client_enterprise_id: None,
                    user_id: None,
                    notes: request.notes.clone(),
                    adjusted_transfers: adjusted.clone(),
                    signed: None,
                },
                at,
            )
            .map_err(dispute_error)?;
        answer(current, events, dispute_id, &Answer::Closure(&owners))
    })
    .await
}

async fn list<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<super::contract::DisputeList>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    let page = page_of(&query)?;
    let filter = reads::DisputeFilter::parse(&query)?;
    Ok(Json(reads::list(
        reads::disputes(&s.pool, side, &filter, page).await?,
        page,
    )))
}
