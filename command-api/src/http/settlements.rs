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
use events::codec::Actor;
use events::domain::connection::Connection;
use events::domain::custody::Custody;
use events::domain::dispute::CarriedClosure;
use events::domain::event::Timestamp;
use events::domain::money::{parse_nonzero_amount, AmountFormat, CurrencyCode, CurrencyTable};
use events::domain::partner::{Partner, PartnerCutoffAdvanced};
use events::domain::settlement::{
    self, failure_reason, Instruction, LifecycleRejection, Settlement, SettlementApi,
    SettlementRecord, SettlementStaged, StageContext, StageRejection, Status, Transfer,
};
use events::domain::{CommandId, StreamName};
use events::lifecycle::{self, Step};
use events::store::Loaded;
use schemas::signing::{signing_payload, SignedRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::{self, connection_stream, custody_stream, fold, stream, Caller, Role};
use super::body::{parse, RawBody, MAX_BODY_BYTES_SETTLEMENT};

/// The body of a settlement route: sized for the largest settlement supported.
type SettlementBody = RawBody<MAX_BODY_BYTES_SETTLEMENT>;
use super::command::{now, run, run_replayable, CommandSpec, Decided, Reply};
use super::context::RequestId;
use super::disputes;
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
            get(super::webhooks::feed::<false>),
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
    // Bounded before anything else reads them (amounts are bounded by the body limit).
    settlement::check_input(&request.external_id, request.notes.as_deref(), 0)
        .map_err(ApiError::input)?;
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
        StageRejection::Input(e) => ApiError::input(e),
        _ => invalid(message),
    }
}

/// SPEC §5's settlement object.
pub fn view(r: &SettlementRecord, now: Timestamp) -> Value {
    let s = &r.staged;
    let dispute_ends = r.dispute_window_ends();
    let top_up_ends = r.top_up_window_ends();
    let (status, phase) = match (&r.status, s.api) {
        (Status::Completed { .. }, _) => ("completed", "done"),
        (Status::Failed { .. }, _) => ("failed", "executing"),
        (Status::Pending, SettlementApi::V2) if r.finalized.is_none() => {
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
        "disputed": !r.disputes.is_empty(),
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
            v["reason"] = failure_reason(short_currencies).into();
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
    raw: SettlementBody,
) -> Result<Response, ApiError> {
    settle(SettlementApi::V2, caller, state, id, e, raw).await
}

async fn perform_v1(
    caller: Caller,
    state: State<AppState>,
    id: Extension<RequestId>,
    e: Path<Uuid>,
    raw: SettlementBody,
) -> Result<Response, ApiError> {
    settle(SettlementApi::V1, caller, state, id, e, raw).await
}

async fn settle(
    api: SettlementApi,
    caller: Caller,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(e): Path<Uuid>,
    raw: SettlementBody,
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
    let body = raw.json().await?;
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
    // Closed disputes waiting for this partner's next v2 settlement join it (SPEC §7.5): their
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
        let mut spec = signed_spec(&caller, e, &signed, key_id, command_id, streams);
        spec.request_hash = context.parsed.content_hash;
        let ran = run_replayable(&state, &request_id, spec, |loaded, at| {
            decide_settlement(loaded, &context, &touched, &disputed, at)
        })
        .await;
        match ran {
            Err(e) if e.code == CLOSURES_CHANGED && round < STAGING_ROUNDS_MAX => {
                let partner_stream = auth::partner_stream(partner.id);
                let loaded = auth::load(&state, std::slice::from_ref(&partner_stream)).await?;
                let now: Partner = fold(&loaded, &partner_stream, Partner::evolve);
                pending = now
                    .record()
                    .map(|p| p.pending_closures.clone())
                    .unwrap_or_default();
            }
            other => break other?,
        }
    };
    // The same body again: for a failed settlement it retries the execution (SPEC §8, §9.3).
    if replayed {
        let current = load_settlement(&state, settlement_id).await?;
        if current
            .record()
            .is_some_and(|r| matches!(r.status, Status::Failed { .. }))
        {
            let by = Retrier::Partner {
                caller: &caller,
                e,
                key_id,
                signed: &signed,
            };
            return retry(&state, &request_id, by, settlement_id).await;
        }
    }
    Ok(response)
}

/// Error code of a staging that saw the partner's closure queue change under it.
const CLOSURES_CHANGED: &str = "contention";
/// How often staging goes round again when the closure queue changed meanwhile.
const STAGING_ROUNDS_MAX: u32 = 4;

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

/// Every connection a carried closure's transfers touch.
fn closure_connections(c: &CarriedClosure) -> impl Iterator<Item = Uuid> + '_ {
    c.transfers
        .iter()
        .flat_map(|t| std::iter::once(t.instruction.destination).chain(t.instruction.source))
}

/// A lifecycle refusal as the API answers it.
pub fn lifecycle_error(e: LifecycleRejection) -> ApiError {
    let message = e.to_string();
    match e {
        LifecycleRejection::NotFound => ApiError::not_found("settlement"),
        LifecycleRejection::Completed => ApiError::conflict("settlement_completed", message),
        LifecycleRejection::AlreadyFinalized
        | LifecycleRejection::DisputeWindowOpen
        | LifecycleRejection::TopUpWindowOpen => ApiError::unprocessable("not_due", message),
        LifecycleRejection::Money(m) => ApiError::bad_request(m.code(), message),
    }
}

fn decide_settlement(
    loaded: &Loaded,
    input: &StagingInput,
    connection_ids: &BTreeSet<Uuid>,
    disputed: &BTreeSet<Uuid>,
    at: Timestamp,
) -> Decided {
    let access = recheck(loaded, &input.caller, input.e, Role::Partner, input.key_id)?;
    let partner: Partner = access.partner;
    let partner = partner
        .record()
        .ok_or_else(|| ApiError::forbidden("no_partner_record", "no partner record"))?;
    let current: Settlement = fold(
        loaded,
        &settlement_stream(input.settlement_id),
        Settlement::evolve,
    );
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
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            CLOSURES_CHANGED,
            "disputes kept closing while the settlement was staged; retry",
        ));
    }
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
        closures: &closures,
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
            .map_err(lifecycle_error)?;
        settlement = executed.iter().fold(settlement, Settlement::evolve);
        events.extend(executed);
    }
    let record = settlement
        .record()
        .ok_or_else(|| ApiError::internal("staged settlement missing"))?;
    let mut body = view(record, at);
    if input.api == SettlementApi::V2 {
        let settling: Vec<Value> = closures
            .iter()
            .filter_map(|c| {
                let old: Settlement = fold(
                    loaded,
                    &settlement_stream(c.disputed_settlement_id),
                    Settlement::evolve,
                );
                let old = old.record()?;
                let dispute = old.dispute(c.dispute_id)?;
                Some(disputes::view(old, dispute, Some(input.settlement_id)))
            })
            .collect();
        body["settlingDisputes"] = Value::Array(settling);
    }
    let reply = Reply::ok(json!({ "settlement": body }));
    Ok((lifecycle::route(events), reply))
}

/// Loads one settlement from the event store (the write side's own state).
pub async fn load_settlement(
    state: &AppState,
    settlement_id: Uuid,
) -> Result<Settlement, ApiError> {
    let stream = settlement_stream(settlement_id);
    let loaded = auth::load(state, std::slice::from_ref(&stream)).await?;
    Ok(fold(&loaded, &stream, Settlement::evolve))
}

/// Who asks for a retry of a failed execution.
pub enum Retrier<'a> {
    /// The partner, by re-sending the identical signed body.
    Partner {
        caller: &'a Caller,
        e: Uuid,
        key_id: Uuid,
        signed: &'a SignedRequest,
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
        Retrier::Partner {
            caller,
            e,
            key_id,
            signed,
        } => {
            streams.extend(auth::access_streams(caller, *e, Role::Partner));
            let mut spec = signed_spec(caller, *e, signed, *key_id, id, streams);
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
        if let Retrier::Partner {
            caller, e, key_id, ..
        } = &by
        {
            recheck(loaded, caller, *e, Role::Partner, *key_id)?;
        }
        let (events, after) =
            lifecycle::decide(loaded, settlement_id, Step::Execute, at).map_err(lifecycle_error)?;
        let record = after
            .record()
            .ok_or_else(|| ApiError::internal("settlement missing"))?;
        let reply = Reply::ok(json!({ "settlement": view(record, at) }));
        Ok((lifecycle::route(events), reply))
    })
    .await
}

async fn signing(
    caller: Caller,
    State(state): State<AppState>,
    Path(e): Path<Uuid>,
    raw: SettlementBody,
) -> Result<Json<Value>, ApiError> {
    let access = auth::authorize(&state, &caller, e, Role::Partner).await?;
    let body = raw.json().await?;
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

pub(super) fn page_of(query: &HashMap<String, String>) -> Result<reads::Page, ApiError> {
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
    let currencies = reads::list_of(&query, "currencies")?;
    let destinations = reads::list_of(&query, "destinationNetworkAccountIds")?
        .map(|v| {
            v.iter()
                .map(|id| Uuid::try_parse(id))
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
    let settling = reads::DisputeFilter {
        settled_in_settlement_ids: Some(vec![id]),
        show_retracted: true,
        ..Default::default()
    };
    let disputed = reads::DisputeFilter {
        settlement_ids: Some(vec![id]),
        show_retracted: true,
        ..Default::default()
    };
    let everything = reads::Page {
        size: u32::MAX,
        offset: 0,
    };
    Ok(Json(json!({
        "settlement": settlement,
        "settlementTransfers": transfers,
        "settlingDisputes": reads::disputes(&s.pool, side, &settling, everything).await?,
        "settlementDisputes": reads::disputes(&s.pool, side, &disputed, everything).await?,
    })))
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
