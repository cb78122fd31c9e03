//! Dispute routes (docs/api/lifecycle.md): clients raise, retract, amend and close disputes with
//! signed requests; operators close them with adjusted transfers; both sides list them. Every
//! change is a command on the disputed settlement's stream (and, for a closure that carries
//! transfers, the partner's). A closure answers `{"disputeClosure": …}`, the other commands
//! `{"dispute": …}`.

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
    DisputeRejection, RaiseDispute, Signed, UpdateDispute,
};
use events::domain::event::Timestamp;
use events::domain::money::{parse_nonzero_amount, AmountFormat, CurrencyCode, CurrencyTable};
use events::domain::settlement::Settlement;
use events::domain::{DomainEvent, StreamName};
use events::lifecycle;
use events::store::Loaded;
use schemas::signing::{signing_payload, SignedRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::{self, connection_stream, fold, partner_stream, Admin, Caller, Role};
use super::body::{parse, JsonBody, RawBody};
use super::command::{run, CommandSpec, Decided, Reply};
use super::context::RequestId;
use super::error::{ApiError, ErrorCode};
use super::network::{
    nonce_command, own_fields, read_access, recheck, side, signed_spec, signing_error, verify,
};
use super::reads::{self, page_of};
use super::retry::{load_settlement, settlement_stream};
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
            post(raise_signing).get(raise_signing),
        )
        .route(
            &format!("{client}/settlements/disputes/{{id}}"),
            put(update),
        )
        .route(
            &format!("{client}/settlements/disputes/{{id}}/signing"),
            post(update_signing).get(update_signing),
        )
        .route(
            &format!("{client}/settlements/disputes/{{id}}/close"),
            post(close),
        )
        .route(
            &format!("{client}/settlements/disputes/{{id}}/close/signing"),
            post(close_signing).get(close_signing),
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

/// What an event keeps of a signed request, for auditors (docs/api/signatures.md).
pub(super) fn signed_of(signed: &SignedRequest, key_id: Uuid) -> Signed {
    Signed {
        payload: signed.payload().to_owned(),
        signature: signed.signature().to_hex(),
        key_id,
    }
}

/// The client's own connection, folded from loaded streams (404 for anyone else's).
fn own_connection(
    loaded: &Loaded,
    e: Uuid,
    connection_id: Uuid,
) -> Result<(Connection, AmountFormat), ApiError> {
    let connection: Connection = fold(
        loaded,
        &connection_stream(connection_id),
        Connection::evolve,
    );
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

async fn raise(
    caller: Caller,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path((e, settlement_id)): Path<(Uuid, Uuid)>,
    raw: RawBody,
) -> Result<Response, ApiError> {
    let access = auth::authorize(&state, &caller, e, Role::Client).await?;
    let body = raw.json().await?;
    let request: RaiseRequest = parse(&own_fields(&body))?;
    let loaded = auth::load(
        &state,
        &[
            connection_stream(request.connection_id),
            settlement_stream(settlement_id),
        ],
    )
    .await?;
    let (connection, format) = own_connection(&loaded, e, request.connection_id)?;
    let settlement: Settlement = fold(
        &loaded,
        &settlement_stream(settlement_id),
        Settlement::evolve,
    );
    visible(&settlement, &connection)?;
    let expected = parse_amounts(
        &request.expected_transfers,
        "expectedTransfers",
        format,
        &state.currencies,
    )?;
    let signed = SignedRequest::parse(&body, &[("settlementId", settlement_id.to_string())])
        .map_err(signing_error)?;
    let key_id = verify(&access, &signed)?;
    let dispute_id = dispute_id_of(settlement_id, request.connection_id);
    let by = SignedBy {
        caller: &caller,
        e,
        signed: &signed,
        key_id,
    };
    let streams = vec![
        settlement_stream(settlement_id),
        connection_stream(request.connection_id),
    ];
    client_command(
        &state,
        &request_id,
        by,
        (settlement_id, dispute_id),
        (streams, Answer::Dispute),
        |loaded, current, at| {
            let (connection, _) = own_connection(loaded, e, request.connection_id)?;
            let raise = RaiseDispute {
                dispute_id,
                connection_id: request.connection_id,
                client_enterprise_id: e,
                user_id: caller.user_id,
                reason: request.reason.clone(),
                expected_transfers: expected.clone(),
                signed: signed_of(&signed, key_id),
            };
            current
                .decide_raise(raise, &connection, at)
                .map_err(dispute_error)
        },
    )
    .await
}

/// Who signed a client's dispute command, as verified.
struct SignedBy<'a> {
    caller: &'a Caller,
    e: Uuid,
    signed: &'a SignedRequest,
    key_id: Uuid,
}

/// A signed client command on a dispute's settlement: the access streams plus `streams` are
/// loaded, access and the key re-checked, and `decide` runs on the settlement; the answer is
/// `answer_with` of the dispute as the command leaves it.
async fn client_command(
    state: &AppState,
    request_id: &RequestId,
    by: SignedBy<'_>,
    (settlement_id, dispute_id): (Uuid, Uuid),
    (streams, answer_with): (Vec<StreamName>, Answer<'_>),
    decide: impl Fn(&Loaded, &Settlement, Timestamp) -> Result<Vec<DomainEvent>, ApiError>,
) -> Result<Response, ApiError> {
    let SignedBy {
        caller,
        e,
        signed,
        key_id,
    } = by;
    let mut all = auth::access_streams(caller, e, Role::Client);
    all.extend(streams);
    let spec = signed_spec(caller, e, signed, key_id, nonce_command(e, signed), all);
    run(state, request_id, spec, |loaded, at| {
        recheck(loaded, caller, e, Role::Client, key_id)?;
        let current: Settlement = fold(
            loaded,
            &settlement_stream(settlement_id),
            Settlement::evolve,
        );
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
        Answer::Dispute => json!({ "dispute": view(record, d, None) }),
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
                .collect::<Option<Vec<Value>>>()
                .ok_or_else(|| ApiError::internal("a closure names a connection not loaded"))?;
            json!({ "disputeClosure": views::closure(d, transfers) })
        }
    };
    Ok((lifecycle::route(events), Reply::ok(body)))
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
        .map(|s| fold(&loaded, s, Connection::evolve))
        .collect();
    Ok(views::owners(&connections))
}

async fn raise_signing(
    caller: Caller,
    State(state): State<AppState>,
    Path((e, settlement_id)): Path<(Uuid, Uuid)>,
    raw: RawBody,
) -> Result<Json<Value>, ApiError> {
    auth::authorize(&state, &caller, e, Role::Client).await?;
    let body = raw.json().await?;
    let request: RaiseRequest = parse(&own_fields(&body))?;
    let loaded = auth::load(&state, &[connection_stream(request.connection_id)]).await?;
    let (_, format) = own_connection(&loaded, e, request.connection_id)?;
    parse_amounts(
        &request.expected_transfers,
        "expectedTransfers",
        format,
        &state.currencies,
    )?;
    let payload = signing_payload(&body, &[("settlementId", settlement_id.to_string())])
        .map_err(signing_error)?;
    Ok(Json(json!({ "payload": payload })))
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

fn update_path_ids(dispute_id: Uuid, settlement_id: Uuid) -> [(&'static str, String); 2] {
    [
        ("disputeId", dispute_id.to_string()),
        ("settlementId", settlement_id.to_string()),
    ]
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
    let settlement: Settlement = fold(
        &loaded,
        &settlement_stream(settlement_id),
        Settlement::evolve,
    );
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

async fn update(
    caller: Caller,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path((e, dispute_id)): Path<(Uuid, Uuid)>,
    raw: RawBody,
) -> Result<Response, ApiError> {
    let access = auth::authorize(&state, &caller, e, Role::Client).await?;
    let body = raw.json().await?;
    let request: UpdateRequest = parse(&own_fields(&body))?;
    let (format, settlement_id, _) =
        dispute_access(&state, e, dispute_id, Some(request.connection_id)).await?;
    let expected = request
        .expected_transfers
        .as_ref()
        .map(|v| parse_amounts(v, "expectedTransfers", format, &state.currencies))
        .transpose()?;
    let signed = SignedRequest::parse(&body, &update_path_ids(dispute_id, settlement_id))
        .map_err(signing_error)?;
    let key_id = verify(&access, &signed)?;
    let by = SignedBy {
        caller: &caller,
        e,
        signed: &signed,
        key_id,
    };
    let streams = vec![settlement_stream(settlement_id)];
    client_command(
        &state,
        &request_id,
        by,
        (settlement_id, dispute_id),
        (streams, Answer::Dispute),
        |_, current, at| {
            let update = UpdateDispute {
                dispute_id,
                connection_id: request.connection_id,
                client_enterprise_id: e,
                user_id: caller.user_id,
                retracted: request.retracted,
                reason: request.reason.clone(),
                expected_transfers: expected.clone(),
                signed: signed_of(&signed, key_id),
            };
            current.decide_update(update, at).map_err(dispute_error)
        },
    )
    .await
}

async fn update_signing(
    caller: Caller,
    State(state): State<AppState>,
    Path((e, dispute_id)): Path<(Uuid, Uuid)>,
    raw: RawBody,
) -> Result<Json<Value>, ApiError> {
    auth::authorize(&state, &caller, e, Role::Client).await?;
    let body = raw.json().await?;
    let request: UpdateRequest = parse(&own_fields(&body))?;
    let (format, settlement_id, _) =
        dispute_access(&state, e, dispute_id, Some(request.connection_id)).await?;
    if let Some(v) = &request.expected_transfers {
        parse_amounts(v, "expectedTransfers", format, &state.currencies)?;
    }
    let payload = signing_payload(&body, &update_path_ids(dispute_id, settlement_id))
        .map_err(signing_error)?;
    Ok(Json(json!({ "payload": payload })))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CloseRequest {
    notes: String,
}

fn close_path_ids(e: Uuid, dispute_id: Uuid) -> [(&'static str, String); 2] {
    [
        ("enterpriseId", e.to_string()),
        ("disputeId", dispute_id.to_string()),
    ]
}

/// The streams a closure decides on: the settlement and, for queued transfers, the partner.
fn closure_streams(settlement: &Settlement, settlement_id: Uuid) -> Vec<StreamName> {
    let mut streams = vec![settlement_stream(settlement_id)];
    if let Some(r) = settlement.record() {
        streams.push(partner_stream(r.staged.partner_id));
    }
    streams
}

async fn close(
    caller: Caller,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path((e, dispute_id)): Path<(Uuid, Uuid)>,
    raw: RawBody,
) -> Result<Response, ApiError> {
    let access = auth::authorize(&state, &caller, e, Role::Client).await?;
    let body = raw.json().await?;
    let request: CloseRequest = parse(&own_fields(&body))?;
    let (_, settlement_id, settlement) = dispute_access(&state, e, dispute_id, None).await?;
    let signed =
        SignedRequest::parse(&body, &close_path_ids(e, dispute_id)).map_err(signing_error)?;
    let key_id = verify(&access, &signed)?;
    let by = SignedBy {
        caller: &caller,
        e,
        signed: &signed,
        key_id,
    };
    let streams = closure_streams(&settlement, settlement_id);
    let owners = closure_owners(&state, &settlement, dispute_id).await?;
    client_command(
        &state,
        &request_id,
        by,
        (settlement_id, dispute_id),
        (streams, Answer::Closure(&owners)),
        |_, current, at| {
            let close = CloseDispute {
                dispute_id,
                closure_id: closure_id_of(dispute_id),
                closed_by: ClosedBy::Client,
                client_enterprise_id: Some(e),
                user_id: Some(caller.user_id),
                notes: request.notes.clone(),
                adjusted_transfers: vec![],
                signed: Some(signed_of(&signed, key_id)),
            };
            current.decide_close(close, at).map_err(dispute_error)
        },
    )
    .await
}

async fn close_signing(
    caller: Caller,
    State(state): State<AppState>,
    Path((e, dispute_id)): Path<(Uuid, Uuid)>,
    raw: RawBody,
) -> Result<Json<Value>, ApiError> {
    auth::authorize(&state, &caller, e, Role::Client).await?;
    let body = raw.json().await?;
    let _: CloseRequest = parse(&own_fields(&body))?;
    dispute_access(&state, e, dispute_id, None).await?;
    let payload = signing_payload(&body, &close_path_ids(e, dispute_id)).map_err(signing_error)?;
    Ok(Json(json!({ "payload": payload })))
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
    let connection = fold::<Connection>(&loaded, &connection_stream, Connection::evolve);
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
        let current: Settlement = fold(
            loaded,
            &settlement_stream(settlement_id),
            Settlement::evolve,
        );
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
) -> Result<Json<Value>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    let page = page_of(&query)?;
    let filter = reads::DisputeFilter::parse(&query)?;
    Ok(Json(reads::list(
        "disputes",
        reads::disputes(&s.pool, side, &filter, page).await?,
        page,
    )))
}
