//! Partner settlement routes (SPEC §7–§8): v2 stages a settlement (liabilities held until the
//! finalizer executes it), v1 performs one at once; both signed, idempotent on
//! (partner, externalId), all-or-nothing across the settlement's and every connection's stream.

use std::collections::{BTreeMap, BTreeSet};

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use events::domain::connection::Connection;
use events::domain::custody::Custody;
use events::domain::event::Timestamp;
use events::domain::money::{parse_nonzero_amount, AmountFormat, CurrencyCode, CurrencyTable};
use events::domain::partner::{partner_id_of, Partner, PartnerCutoffAdvanced};
use events::domain::settlement::{
    Instruction, Settlement, SettlementApi, SettlementRecord, SettlementStaged, StageContext,
    StageRejection, Status, Transfer,
};
use events::domain::{CommandId, DomainEvent, StreamName};
use events::store::Loaded;
use schemas::signing::{signing_payload, SignedRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::{
    self, connection_stream, custody_stream, fold, partner_stream, stream, Caller, Role,
};
use super::body::{parse, RawBody};
use super::command::{run, Decided, Reply};
use super::context::RequestId;
use super::error::ApiError;
use super::network::{own_fields, read_access, recheck, side, signed_spec, signing_error, verify};
use super::reads::{self, PageQuery, Side};
use super::views::time;
use crate::state::{sha256, AppState};

pub fn routes() -> Router<AppState> {
    let partner = "/enterprises/{e}/partners";
    Router::new()
        .route(&format!("/v2{partner}/settlements"), post(stage_v2))
        .route(
            &format!("/v1{partner}/settlements"),
            post(perform_v1).get(list::<true>),
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
            get(notifications),
        )
        .route(
            &format!("/v1{partner}/settlements-signing"),
            post(signing).get(signing),
        )
}

pub fn settlement_stream(settlement_id: Uuid) -> StreamName {
    stream("settlement", settlement_id)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SettlementRequest {
    external_id: String,
    notes: Option<String>,
    settlement_amounts: Value,
    cutoff_at: Option<String>,
}

/// A validated request: what the partner asked for, in base units.
struct Parsed {
    external_id: String,
    notes: Option<String>,
    instructions: Vec<Instruction>,
    cutoff_at: Option<Timestamp>,
    /// Hash of the settlement's own fields: the same body is the same settlement (SPEC §7.2).
    content_hash: [u8; 32],
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_settlement", message)
}

fn amount(
    value: &Value,
    at: &str,
    format: AmountFormat,
    currencies: &CurrencyTable,
    currency: &str,
) -> Result<(CurrencyCode, i128), ApiError> {
    let code = CurrencyCode::parse(currency)
        .map_err(|e| ApiError::bad_request(e.code(), format!("{at}: {e}")))?;
    let decimals = currencies
        .decimals_of(&code)
        .map_err(|e| ApiError::bad_request(e.code(), format!("{at}: {e}")))?;
    let text = value
        .as_str()
        .ok_or_else(|| invalid(format!("{at}.{currency}: an amount is a JSON string")))?;
    let quantity = parse_nonzero_amount(text, format, decimals)
        .map_err(|e| ApiError::bad_request(e.code(), format!("{at}.{currency}: {e}")))?;
    Ok((code, quantity))
}

fn connection_id(key: &str, at: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(key).map_err(|_| invalid(format!("{at}: {key} is not a connection id")))
}

/// Both shapes of `settlementAmounts` (SPEC §7): party `{connection: {currency: amount}}` and
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

fn parse_request(
    fields: &Value,
    api: SettlementApi,
    format: AmountFormat,
    currencies: &CurrencyTable,
) -> Result<Parsed, ApiError> {
    let request: SettlementRequest = parse(fields)?;
    if request.external_id.is_empty() {
        return Err(invalid("externalId must not be empty"));
    }
    if request.notes.as_deref() == Some("") {
        return Err(invalid("notes must not be empty"));
    }
    let cutoff_at = match (api, &request.cutoff_at) {
        (SettlementApi::V2, None) => return Err(invalid("cutoffAt is required")),
        (SettlementApi::V1, Some(_)) => return Err(invalid("cutoffAt belongs to v2")),
        (_, Some(text)) => {
            let at = chrono::DateTime::parse_from_rfc3339(text)
                .map_err(|_| invalid("cutoffAt must be an RFC 3339 timestamp"))?;
            Some(Timestamp(at.timestamp_micros()))
        }
        (_, None) => None,
    };
    let instructions = instructions(&request.settlement_amounts, format, currencies)?;
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
        StageRejection::AlreadyExists => ApiError::conflict("idempotency_conflict", message),
        StageRejection::Liabilities(shortfalls) => {
            let details: Vec<Value> = shortfalls
                .iter()
                .map(|s| json!({"connectionId": s.connection_id, "currency": s.currency.as_str(), "needed": s.needed.to_string(), "available": s.available.to_string()}))
                .collect();
            ApiError::unprocessable("insufficient_balance", message)
                .with_detail("shortfalls", Value::Array(details))
        }
        StageRejection::Money(m) => ApiError::bad_request(m.code(), message),
        _ => invalid(message),
    }
}

/// SPEC §5's settlement object.
pub fn view(r: &SettlementRecord, now: Timestamp) -> Value {
    let s = &r.staged;
    let dispute_ends = Timestamp(s.at.0.saturating_add(s.dispute_window_micros));
    let top_up_ends = Timestamp(dispute_ends.0.saturating_add(s.top_up_window_micros));
    let (status, phase) = match (&r.status, s.api) {
        (Status::Completed { .. }, _) => ("completed", "done"),
        (Status::Failed { .. }, _) => ("failed", "executing"),
        (Status::Pending, SettlementApi::V2) if now < dispute_ends => {
            ("pending", "awaitingDisputes")
        }
        (Status::Pending, SettlementApi::V2) if now < top_up_ends => ("pending", "toppingUp"),
        (Status::Pending, _) => ("pending", "executing"),
    };
    let mut v = json!({
        "id": s.settlement_id,
        "partnerId": s.partner_id,
        "externalId": s.external_id,
        "status": status,
        "settlementType": "offchain",
        "reconciled": false,
        "initiatedBy": s.initiated_by,
        "notes": s.notes,
        "createdAt": time(s.at),
        "updatedAt": time(r.updated_at),
        "disputed": false,
        "lossSLAAlertSent": false,
        "gainSLAAlertSent": false,
        "phase": phase,
        "disputeWindowEndsAt": time(dispute_ends),
        "topUpWindowEndsAt": time(top_up_ends),
    });
    if let Some(cutoff) = s.cutoff_at {
        v["cutoffAt"] = time(cutoff).into();
    }
    match &r.status {
        Status::Failed { short_currencies } => {
            let names: Vec<&str> = short_currencies.iter().map(CurrencyCode::as_str).collect();
            v["reason"] = format!(
                "the partner's custody cannot cover its net outflow in {}",
                names.join(", ")
            )
            .into();
        }
        Status::Completed { finalized_at } => v["finalizedAt"] = time(*finalized_at).into(),
        Status::Pending => {}
    }
    v
}

fn micros(w: Option<events::domain::partner::WindowMinutes>) -> i64 {
    w.map_or(0, |w| w.micros())
}

async fn stage_v2(
    caller: Caller,
    state: State<AppState>,
    id: Extension<RequestId>,
    e: Path<Uuid>,
    raw: RawBody,
) -> Result<Response, ApiError> {
    settle(SettlementApi::V2, caller, state, id, e, raw).await
}

async fn perform_v1(
    caller: Caller,
    state: State<AppState>,
    id: Extension<RequestId>,
    e: Path<Uuid>,
    raw: RawBody,
) -> Result<Response, ApiError> {
    settle(SettlementApi::V1, caller, state, id, e, raw).await
}

async fn settle(
    api: SettlementApi,
    caller: Caller,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(e): Path<Uuid>,
    raw: RawBody,
) -> Result<Response, ApiError> {
    let access = auth::authorize(&state, &caller, e, Role::Partner).await?;
    let partner = access
        .partner
        .record()
        .cloned()
        .ok_or_else(|| ApiError::forbidden("no_partner_record", "no partner record"))?;
    if api == SettlementApi::V1 && access.partner.disputes_enabled() {
        return Err(ApiError::forbidden(
            "disputes_enabled",
            "partners with disputes enabled stage settlements with v2",
        ));
    }
    let body = raw.json()?;
    let parsed = parse_request(
        &own_fields(&body),
        api,
        partner.amount_format,
        &state.currencies,
    )?;
    let signed = SignedRequest::parse(&body, &[]).map_err(signing_error)?;
    let key_id = verify(&access, &signed)?;

    let command_id = CommandId::derive(
        "settlement",
        &[partner.id.as_bytes(), parsed.external_id.as_bytes()],
    );
    let settlement_id = Uuid::new_v5(&command_id.as_uuid(), b"settlement");
    let connections: BTreeSet<Uuid> = parsed
        .instructions
        .iter()
        .flat_map(|i| std::iter::once(i.destination).chain(i.source))
        .collect();
    let mut streams = auth::access_streams(&caller, e, Role::Partner);
    streams.push(settlement_stream(settlement_id));
    streams.extend(connections.iter().map(|c| connection_stream(*c)));
    if api == SettlementApi::V1 {
        streams.push(custody_stream(e));
    }
    let mut spec = signed_spec(&caller, e, &signed, key_id, command_id, streams.clone());
    spec.request_hash = parsed.content_hash;

    // v1: an identical re-POST of a failed settlement retries its execution (SPEC §8).
    if api == SettlementApi::V1 {
        let first = state
            .store
            .command_outcome(command_id)
            .await
            .map_err(ApiError::internal)?;
        if first.is_some_and(|f| f.request_hash == parsed.content_hash) {
            let failed = auth::load(&state, &[settlement_stream(settlement_id)]).await?;
            let current: Settlement = fold(
                &failed,
                &settlement_stream(settlement_id),
                Settlement::evolve,
            );
            if current
                .record()
                .is_some_and(|r| matches!(r.status, Status::Failed { .. }))
            {
                return retry(
                    &state,
                    &request_id,
                    &caller,
                    e,
                    key_id,
                    settlement_id,
                    connections,
                    &signed,
                )
                .await;
            }
        }
    }
    let context = StagingInput {
        api,
        parsed,
        settlement_id,
        key_id,
        caller: caller.clone(),
        payload: signed.payload().to_owned(),
        signature: signed.signature().to_hex(),
        e,
    };
    run(&state, &request_id, spec, |loaded, at| {
        decide_settlement(loaded, &context, &connections, at)
    })
    .await
}

struct StagingInput {
    api: SettlementApi,
    parsed: Parsed,
    settlement_id: Uuid,
    key_id: Uuid,
    caller: Caller,
    payload: String,
    signature: String,
    e: Uuid,
}

fn fold_connections(loaded: &Loaded, ids: &BTreeSet<Uuid>) -> BTreeMap<Uuid, Connection> {
    ids.iter()
        .map(|id| {
            (
                *id,
                fold(loaded, &connection_stream(*id), Connection::evolve),
            )
        })
        .collect()
}

/// Events on each stream they belong to.
fn route(
    events: Vec<DomainEvent>,
    settlement: &StreamName,
    partner_enterprise: Uuid,
    partner_id: Uuid,
) -> Vec<(StreamName, DomainEvent)> {
    events
        .into_iter()
        .map(|event| {
            let stream = match &event {
                DomainEvent::FundsHeld(h) => connection_stream(h.connection_id),
                DomainEvent::ConnectionSettled(c) => connection_stream(c.connection_id),
                DomainEvent::CustodySettled(_) => custody_stream(partner_enterprise),
                DomainEvent::PartnerCutoffAdvanced(_) => partner_stream(partner_id),
                _ => settlement.clone(),
            };
            (stream, event)
        })
        .collect()
}

fn decide_settlement(
    loaded: &Loaded,
    input: &StagingInput,
    connection_ids: &BTreeSet<Uuid>,
    at: Timestamp,
) -> Decided {
    let access = recheck(loaded, &input.caller, input.e, Role::Partner, input.key_id)?;
    let partner: Partner = access.partner;
    let partner = partner
        .record()
        .ok_or_else(|| ApiError::forbidden("no_partner_record", "no partner record"))?;
    let settlement_stream = settlement_stream(input.settlement_id);
    let current: Settlement = fold(loaded, &settlement_stream, Settlement::evolve);
    let connections = fold_connections(loaded, connection_ids);
    let transfers = input
        .parsed
        .instructions
        .iter()
        .enumerate()
        .map(|(n, i)| Transfer {
            transfer_id: Uuid::new_v5(&input.settlement_id, &(n as u64).to_be_bytes()),
            instruction: i.clone(),
        })
        .collect();
    let staged = SettlementStaged {
        settlement_id: input.settlement_id,
        partner_id: partner.id,
        partner_enterprise_id: partner.enterprise_id,
        external_id: input.parsed.external_id.clone(),
        api: input.api,
        notes: input.parsed.notes.clone(),
        cutoff_at: input.parsed.cutoff_at,
        transfers,
        // A partner without disputes calling v2 gets a window of 0 (SPEC §7.8).
        dispute_window_micros: micros(partner.client_dispute_window),
        top_up_window_micros: micros(partner.top_up_window),
        initiated_by: input.caller.user_id,
        payload: input.payload.clone(),
        signature: input.signature.clone(),
        key_id: input.key_id,
        at,
    };
    let context = StageContext {
        partner,
        connections: &connections,
        previous_cutoff: partner.last_cutoff,
    };
    let mut events = current
        .decide_stage(&context, staged, at)
        .map_err(stage_error)?;
    if let (SettlementApi::V2, Some(cutoff_at)) = (input.api, input.parsed.cutoff_at) {
        events.push(
            PartnerCutoffAdvanced {
                partner_id: partner.id,
                settlement_id: input.settlement_id,
                cutoff_at,
                at,
            }
            .into(),
        );
    }
    let mut settlement = events.iter().fold(current, Settlement::evolve);
    if input.api == SettlementApi::V1 {
        let after: BTreeMap<Uuid, Connection> = connections
            .into_iter()
            .map(|(id, c)| (id, events.iter().fold(c, Connection::evolve)))
            .collect();
        let custody: Custody = fold(
            loaded,
            &custody_stream(partner.enterprise_id),
            Custody::evolve,
        );
        let executed = settlement
            .decide_execute(&after, &custody, at)
            .map_err(|m| ApiError::bad_request(m.code(), m.to_string()))?;
        settlement = executed.iter().fold(settlement, Settlement::evolve);
        events.extend(executed);
    }
    let record = settlement
        .record()
        .ok_or_else(|| ApiError::internal("staged settlement missing"))?;
    let mut body = view(record, at);
    if input.api == SettlementApi::V2 {
        body["settlingDisputes"] = json!([]);
    }
    let reply = Reply::ok(json!({ "settlement": body }));
    Ok((
        route(
            events,
            &settlement_stream,
            partner.enterprise_id,
            partner.id,
        ),
        reply,
    ))
}

/// Re-runs the execution of a failed v1 settlement (a new command each time).
#[allow(
    clippy::too_many_arguments,
    reason = "the retry needs the whole request context; a struct would only rename it"
)]
async fn retry(
    state: &AppState,
    request_id: &RequestId,
    caller: &Caller,
    e: Uuid,
    key_id: Uuid,
    settlement_id: Uuid,
    connection_ids: BTreeSet<Uuid>,
    signed: &SignedRequest,
) -> Result<Response, ApiError> {
    let settlement = settlement_stream(settlement_id);
    let mut streams = auth::access_streams(caller, e, Role::Partner);
    streams.push(settlement.clone());
    streams.extend(connection_ids.iter().map(|c| connection_stream(*c)));
    streams.push(custody_stream(e));
    let mut spec = signed_spec(
        caller,
        e,
        signed,
        key_id,
        CommandId::from_uuid(Uuid::new_v4()),
        streams,
    );
    spec.nonce = None;
    run(state, request_id, spec, |loaded, at| {
        recheck(loaded, caller, e, Role::Partner, key_id)?;
        let current: Settlement = fold(loaded, &settlement, Settlement::evolve);
        let connections = fold_connections(loaded, &connection_ids);
        let custody: Custody = fold(loaded, &custody_stream(e), Custody::evolve);
        let events = current
            .decide_execute(&connections, &custody, at)
            .map_err(|m| ApiError::bad_request(m.code(), m.to_string()))?;
        let after = events.iter().fold(current, Settlement::evolve);
        let record = after
            .record()
            .ok_or_else(|| ApiError::internal("settlement missing"))?;
        let reply = Reply::ok(json!({ "settlement": view(record, at) }));
        Ok((route(events, &settlement, e, partner_id_of(e)), reply))
    })
    .await
}

async fn signing(
    caller: Caller,
    State(state): State<AppState>,
    Path(e): Path<Uuid>,
    raw: RawBody,
) -> Result<Json<Value>, ApiError> {
    let access = auth::authorize(&state, &caller, e, Role::Partner).await?;
    let body = raw.json()?;
    let format = access
        .partner
        .record()
        .map_or(AmountFormat::BaseUnits, |p| p.amount_format);
    let api = if body.get("cutoffAt").is_some() {
        SettlementApi::V2
    } else {
        SettlementApi::V1
    };
    parse_request(&own_fields(&body), api, format, &state.currencies)?;
    Ok(Json(
        json!({ "payload": signing_payload(&body, &[]).map_err(signing_error)? }),
    ))
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
    let filter = reads::SettlementFilter::parse(&query)?;
    Ok(Json(reads::list(
        "settlements",
        reads::settlements(&s.pool, side, &filter, page).await?,
        page,
    )))
}

fn page_of(query: &HashMap<String, String>) -> Result<reads::Page, ApiError> {
    let fields: serde_json::Map<String, Value> = ["pageSize", "pageNumber", "cursor"]
        .iter()
        .filter_map(|k| {
            let number = |v: &String| {
                v.parse::<u64>()
                    .map_or_else(|_| Value::from(v.clone()), Value::from)
            };
            query.get(*k).map(|v| {
                (
                    (*k).to_owned(),
                    if *k == "cursor" {
                        Value::from(v.clone())
                    } else {
                        number(v)
                    },
                )
            })
        })
        .collect();
    let q: PageQuery = serde_json::from_value(Value::Object(fields)).map_err(|_| {
        ApiError::bad_request("invalid_page", "pageSize and pageNumber are numbers")
    })?;
    q.page()
}

async fn one<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((e, id)): Path<(Uuid, Uuid)>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    let filter = reads::SettlementFilter {
        settlement_ids: Some(vec![id]),
        ..Default::default()
    };
    let settlement = reads::settlements(&s.pool, side, &filter, reads::Page { size: 1, offset: 0 })
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found("settlement"))?;
    let currencies = query
        .get("currencies")
        .map(|v| v.split(',').map(str::to_owned).collect());
    let destinations = query
        .get("destinationNetworkAccountIds")
        .map(|v| {
            v.split(',')
                .map(Uuid::try_parse)
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|_| {
            ApiError::bad_request(
                "invalid_filter",
                "destinationNetworkAccountIds must be comma-separated ids",
            )
        })?;
    let all = reads::Page {
        size: u32::MAX,
        offset: 0,
    };
    let transfers =
        reads::transfers(&s.pool, side, Some(id), currencies, destinations, all).await?;
    Ok(Json(
        json!({"settlement": settlement, "settlementTransfers": transfers, "settlingDisputes": [], "settlementDisputes": []}),
    ))
}

async fn client_transfers(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    read_access(&s, &caller, &headers, e, Role::Client).await?;
    let page = page_of(&query)?;
    let transfers = reads::transfers(&s.pool, Side::Client(e), None, None, None, page).await?;
    Ok(Json(reads::list("settlementTransfers", transfers, page)))
}

async fn notifications(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    read_access(&s, &caller, &headers, e, Role::Client).await?;
    let page = page_of(&query)?;
    Ok(Json(reads::list(
        "notifications",
        reads::notifications(&s.pool, e, page).await?,
        page,
    )))
}
