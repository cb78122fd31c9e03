//! Partner settlement routes (docs/api/lifecycle.md): v2 stages a settlement (losses held until the
//! finalizer executes it), v1 performs one at once; both signed, idempotent on
//! (partner, externalId), all-or-nothing across the settlement's and every connection's stream.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use events::domain::connection::Connection;
use events::domain::custody::Custody;
use events::domain::dispute::CarriedClosure;
use events::domain::event::Timestamp;
use events::domain::money::{parse_nonzero_amount, AmountFormat, CurrencyCode, CurrencyTable};
use events::domain::partner::{Partner, PartnerRecord};
use events::domain::settlement::{
    self, check_cutoff_given, check_route, settlement_id_of, staging_command_id, Instruction,
    Settlement, SettlementApi, StageContext, StageRejection, StageRequest, Status,
};
use events::lifecycle;
use events::store::Loaded;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::{self, connection_stream, custody_stream, Access, Caller, Role};
use super::body::MAX_BODY_BYTES_SETTLEMENT;
use super::command::{run_replayable, Decided};
use super::consistency::position_token;
use super::context::RequestId;
use super::contract;
use super::error::{ApiError, ErrorCode};
use super::network::{read_access, side};
use super::reads::{self, page_of, Side};
use super::retry::{load_settlement, retry, settlement_stream, Retrier};
use super::signed::{signing, PathIds, Signed, SignedRoute, Verified};
use super::views::{self, Owners, TransferState};
use crate::state::{sha256, AppState};

/// The settlement object (docs/api/guide.md); kept here for the routes that render it by name.
pub use super::views::settlement as view;

pub fn routes() -> Router<AppState> {
    let partner = "/enterprises/{e}/partners";
    Router::new()
        .route(&format!("/v2{partner}/settlements"), post(settle::<true>))
        .route(
            &format!("/v1{partner}/settlements"),
            post(settle::<false>).get(list::<true>),
        )
        .route(
            &format!("/v1{partner}/settlements/{{id}}"),
            get(one::<true>),
        )
        .route(
            "/v1/enterprises/{e}/clients/settlements",
            get(list::<false>),
        )
        .route(
            "/v1/enterprises/{e}/clients/settlements/{id}",
            get(one::<false>),
        )
        .route(
            "/v1/enterprises/{e}/clients/settlementTransfers",
            get(client_transfers),
        )
        .route(
            "/v1/enterprises/{e}/clients/notifications",
            get(super::webhooks::feed::<false>),
        )
        .route(
            &format!("/v1{partner}/settlements-signing"),
            post(signing::<SettlementSigningRoute>).get(signing::<SettlementSigningRoute>),
        )
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SettlementRequest {
    external_id: String,
    notes: Option<String>,
    #[schema(schema_with = super::openapi::settlement_amounts_schema)]
    settlement_amounts: Value,
    #[schema(format = DateTime)]
    cutoff_at: Option<String>,
}

/// A validated request: what the partner asked for, in base units.
pub(super) struct Parsed {
    external_id: String,
    notes: Option<String>,
    instructions: Vec<Instruction>,
    cutoff_at: Option<Timestamp>,
    /// Hash of the settlement's own fields: same body, same settlement (docs/api/guide.md).
    content_hash: [u8; 32],
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidSettlement, message)
}

fn amount(
    value: &Value,
    at: &str,
    format: AmountFormat,
    currencies: &CurrencyTable,
    currency: &str,
) -> Result<(CurrencyCode, i128), ApiError> {
    let code = CurrencyCode::parse(currency)
        .map_err(|e| ApiError::new(ErrorCode::from(&e), format!("{at}: {e}")))?;
    let decimals = currencies
        .decimals_of(&code)
        .map_err(|e| ApiError::new(ErrorCode::from(&e), format!("{at}: {e}")))?;
    let text = value
        .as_str()
        .ok_or_else(|| invalid(format!("{at}.{currency}: an amount is a JSON string")))?;
    let quantity = parse_nonzero_amount(text, format, decimals)
        .map_err(|e| ApiError::new(ErrorCode::from(&e), format!("{at}.{currency}: {e}")))?;
    Ok((code, quantity))
}

fn connection_id(key: &str, at: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(key).map_err(|_| invalid(format!("{at}: {key} is not a connection id")))
}

/// Both instruction shapes (docs/api/lifecycle.md): party `{connection: {currency: amount}}` and
/// counterparty→party `{source: {destination: {currency: amount}}}`.
fn instructions(
    amounts: &Value,
    format: AmountFormat,
    currencies: &CurrencyTable,
) -> Result<Vec<Instruction>, ApiError> {
    let outer = amounts
        .as_object()
        .ok_or_else(|| invalid("settlementAmounts must be an object"))?;
    let mut lines = Vec::new();
    let mut shapes = BTreeSet::new();
    for (key, inner) in outer {
        let first = connection_id(key, "settlementAmounts")?;
        let inner = inner
            .as_object()
            .ok_or_else(|| invalid(format!("settlementAmounts.{key} must be an object")))?;
        for (key2, value) in inner {
            if let Some(by_currency) = value.as_object() {
                shapes.insert("counterparty");
                let destination = connection_id(key2, &format!("settlementAmounts.{key}"))?;
                for (currency, amount_value) in by_currency {
                    let (currency, quantity) = amount(
                        amount_value,
                        &format!("settlementAmounts.{key}.{key2}"),
                        format,
                        currencies,
                        currency,
                    )?;
                    lines.push(Instruction {
                        source: Some(first),
                        destination,
                        currency,
                        quantity,
                    });
                }
            } else {
                shapes.insert("party");
                let (currency, quantity) = amount(
                    value,
                    &format!("settlementAmounts.{key}"),
                    format,
                    currencies,
                    key2,
                )?;
                lines.push(Instruction {
                    source: None,
                    destination: first,
                    currency,
                    quantity,
                });
            }
        }
    }
    if shapes.len() > 1 {
        return Err(invalid(
            "settlementAmounts mixes the party and counterparty→party shapes",
        ));
    }
    Ok(lines)
}

/// The request's rules beyond its fields' types, for `api` in the partner's amount `format`.
fn check_request(
    request: SettlementRequest,
    api: SettlementApi,
    format: AmountFormat,
    currencies: &CurrencyTable,
) -> Result<Parsed, ApiError> {
    // Bounded before anything else reads them (amounts are bounded by the body limit).
    settlement::check_input(&request.external_id, request.notes.as_deref(), 0)
        .map_err(ApiError::input)?;
    let cutoff_at = request
        .cutoff_at
        .as_deref()
        .map(|text| {
            chrono::DateTime::parse_from_rfc3339(text)
                .map(|at| Timestamp(at.timestamp_micros()))
                .map_err(|_| invalid("cutoffAt must be an RFC 3339 timestamp"))
        })
        .transpose()?;
    check_cutoff_given(api, cutoff_at).map_err(stage_error)?;
    let instructions = instructions(&request.settlement_amounts, format, currencies)?;
    settlement::check_input(
        &request.external_id,
        request.notes.as_deref(),
        instructions.len(),
    )
    .map_err(ApiError::input)?;
    // "The same body" is judged on what it means: the instant of cutoffAt and amounts in base
    // units, so re-serializing the same request (e.g. another timestamp precision) is a retry.
    let lines: Vec<Value> = instructions
        .iter()
        .map(|i| {
            json!([
                i.source,
                i.destination,
                i.currency.as_str(),
                i.quantity.to_string()
            ])
        })
        .collect();
    let content = json!([
        request.external_id,
        request.notes,
        cutoff_at.map(|t| t.0),
        lines
    ]);
    let content_hash = sha256(content.to_string().as_bytes());
    Ok(Parsed {
        external_id: request.external_id,
        notes: request.notes,
        instructions,
        cutoff_at,
        content_hash,
    })
}

fn stage_error(e: StageRejection) -> ApiError {
    let message = e.to_string();
    match e {
        StageRejection::AlreadyExists => ApiError::new(ErrorCode::IdempotencyConflict, message),
        StageRejection::Liabilities(shortfalls) => {
            let details: Vec<Value> = shortfalls
                .iter()
                .map(|s| json!({"connectionId": s.connection_id, "currency": s.currency.as_str(), "needed": s.needed.to_string(), "available": s.available.to_string()}))
                .collect();
            ApiError::new(ErrorCode::InsufficientBalance, message)
                .with_detail("shortfalls", Value::Array(details))
        }
        StageRejection::Money(m) => ApiError::new(ErrorCode::from(&m), message),
        StageRejection::Input(e) => ApiError::input(e),
        StageRejection::DisputesEnabled => ApiError::new(ErrorCode::DisputesEnabled, message),
        StageRejection::Empty
        | StageRejection::ZeroQuantity
        | StageRejection::UnknownConnection(_)
        | StageRejection::NotABroker
        | StageRejection::BrokerNotNetZero(_)
        | StageRejection::CutoffTooFarAhead
        | StageRejection::CutoffNotAfterPrevious
        | StageRejection::CutoffRequired
        | StageRejection::CutoffInV1 => invalid(message),
    }
}

/// `POST /v2/…/partners/settlements` (`V2`) stages a settlement, `POST /v1/…` performs one.
pub(super) struct SettleRoute<const V2: bool>;

impl<const V2: bool> SettleRoute<V2> {
    const API: SettlementApi = if V2 {
        SettlementApi::V2
    } else {
        SettlementApi::V1
    };
}

impl<const V2: bool> SignedRoute for SettleRoute<V2> {
    const ROLE: Role = Role::Partner;
    const MAX: usize = MAX_BODY_BYTES_SETTLEMENT;
    type Path = Uuid;
    type Request = SettlementRequest;
    /// The partner, as access read it.
    type Found = PartnerRecord;
    type Valid = (PartnerRecord, Parsed);

    /// Before the body is read: a refused route is a 403 whatever the body says.
    fn before_body(access: &Access, _: &Loaded, _: Uuid) -> Result<PartnerRecord, ApiError> {
        let partner = access
            .partner
            .record()
            .cloned()
            .ok_or_else(|| ApiError::new(ErrorCode::NoPartnerRecord, "no partner record"))?;
        check_route(Self::API, &partner).map_err(stage_error)?;
        Ok(partner)
    }

    async fn validate(
        state: &AppState,
        _: Uuid,
        partner: PartnerRecord,
        request: SettlementRequest,
        _: &Value,
    ) -> Result<(Self::Valid, PathIds), ApiError> {
        let parsed = check_request(request, Self::API, partner.amount_format, &state.currencies)?;
        Ok(((partner, parsed), vec![]))
    }
}

/// `…/partners/settlements-signing`: the payload to sign for either settlement route, v2 when
/// the body has `cutoffAt`.
pub(super) struct SettlementSigningRoute;

impl SignedRoute for SettlementSigningRoute {
    const ROLE: Role = Role::Partner;
    const MAX: usize = MAX_BODY_BYTES_SETTLEMENT;
    type Path = Uuid;
    type Request = SettlementRequest;
    /// The partner's amount format.
    type Found = AmountFormat;
    type Valid = Parsed;

    fn before_body(access: &Access, _: &Loaded, _: Uuid) -> Result<AmountFormat, ApiError> {
        Ok(access
            .partner
            .record()
            .map_or(AmountFormat::BaseUnits, |p| p.amount_format))
    }

    async fn validate(
        state: &AppState,
        _: Uuid,
        format: AmountFormat,
        request: SettlementRequest,
        fields: &Value,
    ) -> Result<(Parsed, PathIds), ApiError> {
        let api = if fields.get("cutoffAt").is_some() {
            SettlementApi::V2
        } else {
            SettlementApi::V1
        };
        let parsed = check_request(request, api, format, &state.currencies)?;
        Ok((parsed, vec![]))
    }
}

async fn settle<const V2: bool>(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    signed: Signed<SettleRoute<V2>>,
) -> Result<Response, ApiError> {
    let api = SettleRoute::<V2>::API;
    let e = signed.enterprise();
    let Signed {
        caller,
        request: (partner, parsed),
        signature,
        ..
    } = signed;
    let command_id = staging_command_id(partner.id, &parsed.external_id);
    let settlement_id = settlement_id_of(command_id);
    let connections: BTreeSet<Uuid> = parsed
        .instructions
        .iter()
        .flat_map(|i| std::iter::once(i.destination).chain(i.source))
        .collect();
    let context = StagingInput {
        api,
        parsed,
        settlement_id,
        caller: caller.clone(),
        signed: signature,
        e,
    };
    // Closed disputes queued for this partner join its v2 settlement (docs/api/lifecycle.md): their
    // connections and their disputed settlements are decided on too. A closure queued after
    // the partner was read sends the staging round again with the queue as it is now.
    let mut pending = partner.pending_closures;
    let mut round = 0;
    let (response, replayed) = loop {
        round += 1;
        let closures: Vec<CarriedClosure> = match api {
            SettlementApi::V2 => pending.values().cloned().collect(),
            SettlementApi::V1 => vec![],
        };
        let mut touched = connections.clone();
        touched.extend(closures.iter().flat_map(closure_connections));
        let disputed: BTreeSet<Uuid> = closures.iter().map(|c| c.disputed_settlement_id).collect();
        let mut streams = auth::access_streams(&caller, e, Role::Partner);
        streams.push(settlement_stream(settlement_id));
        if api == SettlementApi::V1 {
            streams.push(custody_stream(e));
        }
        streams.extend(touched.iter().map(|c| connection_stream(*c)));
        streams.extend(disputed.iter().map(|s| settlement_stream(*s)));
        let mut spec = context.signed.spec(&caller, e, command_id, streams);
        spec.request_hash = context.parsed.content_hash;
        let ran = run_replayable(&state, &request_id, spec, |loaded, at| {
            decide_settlement(loaded, &context, &touched, &disputed, at)
        })
        .await;
        match ran {
            Err(e) if e.code() == CLOSURES_CHANGED && round < STAGING_ROUNDS_MAX => {
                let partner_stream = auth::partner_stream(partner.id);
                let loaded = auth::load(&state, std::slice::from_ref(&partner_stream)).await?;
                let now: Partner = loaded.aggregate(&partner_stream);
                pending = now
                    .record()
                    .map(|p| p.pending_closures.clone())
                    .unwrap_or_default();
            }
            other => break other?,
        }
    };
    if !replayed {
        return Ok(response);
    }
    // The same body again: it answers the settlement as it is now, and a failed settlement's
    // execution is retried first (docs/api/lifecycle.md).
    let current = load_settlement(&state, settlement_id).await?;
    if current
        .record()
        .is_some_and(|r| matches!(r.status, Status::Failed { .. }))
    {
        let by = Retrier::Partner {
            caller: &caller,
            e,
            signed: &context.signed,
        };
        match retry(&state, &request_id, by, settlement_id).await {
            // Completed meanwhile (the finalizer's retry won): the answer below says so.
            Err(error) if error.code() == ErrorCode::SettlementCompleted => {}
            Err(error) => return Err(error),
            Ok(_) => {}
        }
    }
    current_reply(&state, api, e, settlement_id).await
}

/// The answer to an identical re-POST: the settlement as it is now, read as `GET` reads it, once
/// the read models reflect every event of the settlement so far (read-your-writes, with that
/// position in `X-Event-Position`); a v2 settlement adds its `settlingDisputes`.
async fn current_reply(
    state: &AppState,
    api: SettlementApi,
    e: Uuid,
    settlement_id: Uuid,
) -> Result<Response, ApiError> {
    let txid = reads::last_txid(&state.pool, &settlement_stream(settlement_id))
        .await?
        .ok_or_else(|| ApiError::not_found("settlement"))?;
    reads::wait_reflected(&state.pool, txid, state.read_wait_max).await?;
    let side = Side::Partner(e);
    let mut settlement = reads::settlement(&state.pool, side, settlement_id)
        .await?
        .ok_or_else(|| ApiError::not_found("settlement"))?;
    if api == SettlementApi::V2 {
        let settling = reads::settling_disputes(&state.pool, side, settlement_id).await?;
        settlement.settling_disputes = Some(settling);
    }
    let mut response = Json(super::contract::SettlementReply { settlement }).into_response();
    let token = HeaderValue::from_str(&position_token(txid)).map_err(ApiError::internal)?;
    response.headers_mut().insert("x-event-position", token);
    Ok(response)
}

/// Error code of a staging that saw the partner's closure queue change under it.
const CLOSURES_CHANGED: ErrorCode = ErrorCode::Contention;
/// How often staging goes round again when the closure queue changed meanwhile.
const STAGING_ROUNDS_MAX: u32 = 4;

struct StagingInput {
    api: SettlementApi,
    parsed: Parsed,
    settlement_id: Uuid,
    caller: Caller,
    signed: Verified,
    e: Uuid,
}

fn fold_connections(loaded: &Loaded, ids: &BTreeSet<Uuid>) -> BTreeMap<Uuid, Connection> {
    ids.iter()
        .map(|id| (*id, loaded.aggregate::<Connection>(&connection_stream(*id))))
        .collect()
}

/// Every connection a carried closure's transfers touch.
fn closure_connections(c: &CarriedClosure) -> impl Iterator<Item = Uuid> + '_ {
    c.transfers
        .iter()
        .flat_map(|t| std::iter::once(t.instruction.destination).chain(t.instruction.source))
}

fn decide_settlement(
    loaded: &Loaded,
    input: &StagingInput,
    connection_ids: &BTreeSet<Uuid>,
    disputed: &BTreeSet<Uuid>,
    at: Timestamp,
) -> Decided {
    let access = input
        .signed
        .recheck(loaded, &input.caller, input.e, Role::Partner)?;
    let partner: Partner = access.partner;
    let partner = partner
        .record()
        .ok_or_else(|| ApiError::new(ErrorCode::NoPartnerRecord, "no partner record"))?;
    let current: Settlement = loaded.aggregate(&settlement_stream(input.settlement_id));
    let connections = fold_connections(loaded, connection_ids);
    let closures: Vec<CarriedClosure> = match input.api {
        SettlementApi::V2 => partner.pending_closures.values().cloned().collect(),
        SettlementApi::V1 => vec![],
    };
    if closures.iter().any(|c| {
        !closure_connections(c).all(|id| connection_ids.contains(&id))
            || !disputed.contains(&c.disputed_settlement_id)
    }) {
        // A dispute was closed between reading the partner and this decision: go round again.
        return Err(ApiError::new(
            CLOSURES_CHANGED,
            "disputes kept closing while the settlement was staged; retry",
        ));
    }
    let kept = input.signed.kept();
    let request = StageRequest {
        settlement_id: input.settlement_id,
        api: input.api,
        external_id: input.parsed.external_id.clone(),
        notes: input.parsed.notes.clone(),
        cutoff_at: input.parsed.cutoff_at,
        instructions: input.parsed.instructions.clone(),
        initiated_by: input.caller.user_id,
        payload: kept.payload,
        signature: kept.signature,
        key_id: kept.key_id,
    };
    let context = StageContext {
        partner,
        connections: &connections,
        previous_cutoff: partner.last_cutoff,
        closures: &closures,
    };
    // Only v1 loads the partner's custody (it executes at once).
    let custody: Custody = loaded.aggregate(&custody_stream(partner.enterprise_id));
    let events = current
        .decide_settle(&context, &custody, request, at)
        .map_err(stage_error)?;
    let settlement = events.iter().fold(current, Settlement::evolve);
    let record = settlement
        .record()
        .ok_or_else(|| ApiError::internal("staged settlement missing"))?;
    let mut body = views::settlement(record, at);
    if input.api == SettlementApi::V2 {
        let owners = views::owners(connections.values());
        let settling =
            settling_disputes(loaded, partner, &closures, &owners, input.settlement_id, at)?;
        body.settling_disputes = Some(settling);
    }
    let reply = views::reply(&contract::SettlementReply { settlement: body })?;
    Ok((lifecycle::route(events), reply))
}

/// The disputes whose closures joined a settlement staged at `at`, each with its closure and
/// adjusted settlement transfers as they now stand: the same items, in the same order, as
/// `GET …/settlements/{id}` lists under `settlingDisputes`.
fn settling_disputes(
    loaded: &Loaded,
    partner: &PartnerRecord,
    closures: &[CarriedClosure],
    owners: &Owners,
    settlement_id: Uuid,
    at: Timestamp,
) -> Result<Vec<super::contract::Dispute>, ApiError> {
    let mut settling: Vec<(Timestamp, Uuid, super::contract::Dispute)> =
        Vec::with_capacity(closures.len());
    for c in closures {
        let disputed: Settlement = loaded.aggregate(&settlement_stream(c.disputed_settlement_id));
        let Some((old, dispute)) = disputed
            .record()
            .and_then(|old| Some((old, old.dispute(c.dispute_id)?)))
        else {
            continue;
        };
        let created_at = dispute.closure.as_ref().map_or(at, |closure| closure.at);
        let state = TransferState {
            settlement_id: Some(settlement_id),
            closure_id: Some(c.closure_id),
            partner_enterprise_id: partner.enterprise_id,
            status: "pending",
            created_at,
            updated_at: at,
        };
        let transfers = c
            .transfers
            .iter()
            .map(|t| views::transfer(t, &state, owners))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::internal("a closure names a connection not loaded"))?;
        let mut v = views::dispute(old, dispute, Some(settlement_id));
        // Assigning the closure is the dispute's latest change.
        v.updated_at = views::time(at);
        v.dispute_closure = views::closure(dispute, transfers);
        settling.push((dispute.created_at, dispute.dispute_id, v));
    }
    settling.sort_by_key(|(created_at, id, _)| (*created_at, *id));
    Ok(settling.into_iter().map(|(_, _, v)| v).collect())
}

async fn list<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<super::contract::SettlementList>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    let page = page_of(&query)?;
    let filter = reads::SettlementFilter::parse(&query)?;
    Ok(Json(reads::list(
        reads::settlements(&s.pool, side, &filter, page).await?,
        page,
    )))
}

async fn one<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((e, id)): Path<(Uuid, Uuid)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<super::contract::SettlementDetail>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    let settlement = reads::settlement(&s.pool, side, id)
        .await?
        .ok_or_else(|| ApiError::not_found("settlement"))?;
    let currencies = reads::list_of(&query, "currencies")?;
    let destinations = reads::list_of(&query, "destinationNetworkAccountIds")?
        .map(|v| {
            v.iter()
                .map(|id| Uuid::try_parse(id))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidFilter,
                "destinationNetworkAccountIds must be comma-separated ids",
            )
        })?;
    let all = reads::Page::ALL;
    let transfers =
        reads::transfers(&s.pool, side, Some(id), currencies, destinations, all).await?;
    let disputed = reads::DisputeFilter {
        settlement_ids: Some(vec![id]),
        show_retracted: true,
        ..Default::default()
    };
    Ok(Json(super::contract::SettlementDetail {
        settlement,
        settlement_transfers: transfers,
        settling_disputes: reads::settling_disputes(&s.pool, side, id).await?,
        settlement_disputes: reads::disputes(&s.pool, side, &disputed, all).await?,
    }))
}

async fn client_transfers(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<super::contract::TransferList>, ApiError> {
    read_access(&s, &caller, &headers, e, Role::Client).await?;
    let page = page_of(&query)?;
    let transfers = reads::transfers(&s.pool, Side::Client(e), None, None, None, page).await?;
    Ok(Json(reads::list(transfers, page)))
}
