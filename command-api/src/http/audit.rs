//! The audit API (ADR 0010): read-only routes for the operator (admin token, every
//! enterprise) and for users flagged `auditor` (the enterprises they are members of). One layer
//! authenticates and records every read before its answer leaves; handlers parse, ask
//! `events::audit` and render.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::header::{ACCEPT, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use events::audit::chain::{self, SignedCheckpoint};
use events::audit::log::{self, Filter};
use events::audit::reads::{self, AuditRead, Reader};
use events::audit::render::{time, Audited};
use events::audit::scope::ScopeResolver;
use events::audit::state;
use events::audit::AuditError;
use events::domain::audit::{authorize_auditor, AuditScope, AuditorRejection, SignerIndex};
use events::domain::event::Timestamp;
use events::domain::limits::{
    DEFAULT_AUDIT_PAGE_EVENTS, MAX_AUDIT_EXPORT_EVENTS, MAX_AUDIT_PAGE_EVENTS,
    MAX_AUDIT_READS_PAGE, MAX_AUDIT_SCAN_POSITIONS, MAX_VERIFY_RANGE_POSITIONS,
};
use events::domain::money::{format_base_units, Balance};
use events::domain::settlement::{Settlement, SettlementRecord, Status};
use events::domain::stream::of;
use events::domain::user::User;
use events::domain::{DomainEvent, StreamName};
use events::store::ChainFault;
use schemas::signing::checkpoint::{AuditKeyError, AuditSigner, AUDIT_SEED_ENV, CHECKPOINT_ORIGIN};
use schemas::signing::webhook::{KeySource, DEVELOPMENT_ENV};
use uuid::Uuid;

use super::auth::{self, bearer, Admin, Caller};
use super::context::RequestId;
use super::contract;
use super::error::{ApiError, ErrorCode};
use super::{disputes, settlements};
use crate::state::{sha256, AppState};

/// The audit settings of the command-api: the audit key's seed and how often the chain is fully
/// re-verified. Every flag also reads the environment variable of the same name.
#[derive(Clone, Debug, clap::Args)]
pub struct AuditConfig {
    /// 64 hex characters: the seed of the engine's Ed25519 audit key, which signs checkpoints of
    /// the log (`GET /api/audit/v1/chain`). Required, except in development mode.
    #[arg(long = "audit-seed", env = AUDIT_SEED_ENV, hide_env_values = true)]
    pub seed: Option<String>,
    /// How often one process re-walks the whole chain and records the result, in milliseconds.
    #[arg(long = "audit-verify-interval-ms", env = "SETTLE_AUDIT_VERIFY_INTERVAL_MS",
          default_value_t = chain::VERIFY_INTERVAL_MS_DEFAULT)]
    pub verify_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            seed: None,
            verify_interval_ms: chain::VERIFY_INTERVAL_MS_DEFAULT,
        }
    }
}

impl AuditConfig {
    pub fn verify_interval(&self) -> Duration {
        Duration::from_millis(self.verify_interval_ms.max(1))
    }
}

/// What the audit routes share: the signing key of checkpoints and the stream-owner cache.
#[derive(Debug, Default)]
pub struct AuditSettings {
    /// `None` only before `with_audit` (checkpoint routes then answer 500).
    pub signer: Option<AuditSigner>,
    pub scope: ScopeResolver,
}

impl AuditSettings {
    /// From `SETTLE_AUDIT_SEED` and development mode: a missing seed outside development mode,
    /// or an invalid one, is refused (the process does not start) — as the webhook seed.
    pub fn from_config(config: &AuditConfig, development: bool) -> anyhow::Result<Self> {
        let (signer, source) = AuditSigner::from_config(config.seed.as_deref(), development)
            .map_err(|e: AuditKeyError| {
                anyhow::anyhow!("{AUDIT_SEED_ENV} is missing or invalid: {e}")
            })?;
        if source == KeySource::Development {
            tracing::warn!(
                public_key = %signer.public_key_hex(),
                "DEVELOPMENT MODE ({DEVELOPMENT_ENV}): {AUDIT_SEED_ENV} is not set, so checkpoints \
                 are signed with the PUBLIC development audit key, which anyone can rebuild from \
                 the source. Never run this way outside a local stack or tests."
            );
        }
        Ok(Self {
            signer: Some(signer),
            scope: ScopeResolver::default(),
        })
    }
}

/// Who is reading, and what they may see.
#[derive(Clone, Debug)]
pub struct AuditCaller {
    pub reader: Reader,
    pub scope: AuditScope,
}

fn audit_error(e: AuditError) -> ApiError {
    ApiError::internal(e)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidQuery, message)
}

/// The admin token sees everything; a user token must be an auditor's (403 for any other user).
async fn authenticate(
    state: &AppState,
    parts: &mut axum::http::request::Parts,
) -> Result<AuditCaller, ApiError> {
    let presented = bearer(parts).map(|t| sha256(t.as_bytes()));
    if presented.is_some() && presented == state.admin_token_hash {
        return Ok(AuditCaller {
            reader: Reader::Admin,
            scope: AuditScope::All,
        });
    }
    let caller = Caller::from_request_parts(parts, &()).await?;
    let stream = auth::user_stream(caller.user_id);
    let loaded = auth::load(state, std::slice::from_ref(&stream)).await?;
    let user: User = loaded.aggregate(&stream);
    let message = |r: AuditorRejection| r.to_string();
    match authorize_auditor(&user, &caller.token_hash) {
        Ok(scope) => Ok(AuditCaller {
            reader: Reader::Auditor(caller.user_id),
            scope,
        }),
        Err(r @ AuditorRejection::Unauthenticated) => {
            Err(ApiError::new(ErrorCode::Unauthenticated, message(r)))
        }
        Err(r @ AuditorRejection::UserDisabled) => {
            Err(ApiError::new(ErrorCode::UserDisabled, message(r)))
        }
        Err(r @ AuditorRejection::NotAnAuditor) => {
            Err(ApiError::new(ErrorCode::NotAnAuditor, message(r)))
        }
    }
}

/// Authenticates every audit request, and records the read (who, what, when, the answer's
/// status) before the answer leaves: a read that cannot be recorded is not answered.
async fn authenticate_and_record(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let caller = match authenticate(&state, &mut parts).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let request_id = parts
        .extensions
        .get::<RequestId>()
        .map(|r| r.0.clone())
        .unwrap_or_default();
    let (method, path) = (parts.method.to_string(), parts.uri.path().to_owned());
    let query = parts.uri.query().unwrap_or_default().to_owned();
    parts.extensions.insert(caller.clone());
    let response = next.run(Request::from_parts(parts, body)).await;
    let read = AuditRead {
        reader: caller.reader,
        at: Timestamp(chrono::Utc::now().timestamp_micros()),
        method,
        path,
        query,
        status: response.status().as_u16(),
        request_id,
    };
    match reads::record(&state.pool, &read).await {
        Ok(()) => response,
        Err(e) => ApiError::internal(e).into_response(),
    }
}

pub fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/settlements/{id}/events", get(timeline))
        .route("/settlements/{id}", get(settlement_at))
        .route("/enterprises/{e}/balances", get(balances_at))
        .route("/events", get(feed))
        .route("/chain", get(chain_head))
        .route("/chain/verify", get(chain_verify))
        .route("/key", get(key))
        .route_layer(middleware::from_fn_with_state(
            state,
            authenticate_and_record,
        ))
}

/// `GET /api/admin/v1/audit-reads`: the record of audit reads, for the operator.
pub fn admin_routes() -> Router<AppState> {
    Router::new().route("/audit-reads", get(audit_reads))
}

/// The query parameters a route accepts; any other is refused (a typo is not silently ignored).
fn only(query: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match query.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!(
            "unknown query parameter {k}; this route takes {}",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

fn number(query: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    query
        .get(name)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| invalid(format!("{name} must be a non-negative integer")))
        })
        .transpose()
}

fn uuid_param(query: &HashMap<String, String>, name: &str) -> Result<Option<Uuid>, ApiError> {
    query
        .get(name)
        .map(|v| Uuid::try_parse(v).map_err(|_| invalid(format!("{name} must be a UUID"))))
        .transpose()
}

/// An event as `events::audit::render` writes it (one line, shared with the `settle-audit`
/// export), read into its contract type. Written again, it must be the same text — every field
/// named, ordered and formatted as the contract says — or the answer is an internal error, so
/// the renderer and the contract cannot drift apart unnoticed.
fn audit_event(line: String) -> Result<contract::AuditEvent, ApiError> {
    let event: contract::AuditEvent = serde_json::from_str(&line).map_err(ApiError::internal)?;
    let again = serde_json::to_string(&event).map_err(ApiError::internal)?;
    if again != line {
        return Err(ApiError::internal(format!(
            "an audit event left its contract: {line} is not {again}"
        )));
    }
    Ok(event)
}

/// Whether the caller sees a stream (404 otherwise: another tenant's objects are invisible).
async fn sees(
    state: &AppState,
    caller: &AuditCaller,
    stream: &StreamName,
) -> Result<bool, ApiError> {
    if caller.scope == AuditScope::All {
        return Ok(true);
    }
    let owners = state
        .audit
        .scope
        .owners(&state.pool, std::slice::from_ref(stream))
        .await
        .map_err(audit_error)?;
    Ok(owners.get(stream).is_some_and(|o| caller.scope.sees_any(o)))
}

async fn timeline(
    Extension(caller): Extension<AuditCaller>,
    State(s): State<AppState>,
    Path(id): Path<Uuid>,
) -> Result<Json<contract::AuditTimeline>, ApiError> {
    let stream = of::settlement(id);
    let found = log::settlement_timeline(&s.pool, id)
        .await
        .map_err(audit_error)?;
    let events: Vec<Audited> = found.into_iter().map(Audited::new).collect();
    if events.is_empty() || !sees(&s, &caller, &stream).await? {
        return Err(ApiError::not_found("settlement"));
    }
    let keys = log::key_registry(&s.pool).await.map_err(audit_error)?;
    let mut signers = SignerIndex::default();
    for e in events.iter().filter_map(|a| a.decoded.as_ref().ok()) {
        signers.learn(e);
    }
    let events = events
        .iter()
        .map(|a| audit_event(a.to_json(Some((&keys, &signers)))))
        .collect::<Result<_, _>>()?;
    Ok(Json(contract::AuditTimeline {
        settlement_id: id,
        events,
    }))
}

/// The position a state read asks for: `atPosition`, `asOf` (the longest prefix of the log
/// recorded by then), or the head; with the log's time at that position.
async fn position_of(
    s: &AppState,
    query: &HashMap<String, String>,
) -> Result<(u64, Timestamp), ApiError> {
    let head = log::head(&s.pool).await.map_err(audit_error)?;
    let head_position = head.map_or(0, |h| h.position);
    let at = number(query, "atPosition")?;
    let as_of = query
        .get("asOf")
        .map(|t| {
            chrono::DateTime::parse_from_rfc3339(t)
                .map(|t| Timestamp(t.timestamp_micros()))
                .map_err(|_| invalid("asOf must be an RFC 3339 time"))
        })
        .transpose()?;
    match (at, as_of) {
        (Some(_), Some(_)) => Err(invalid("give atPosition or asOf, not both")),
        (Some(p), None) if p > head_position => Err(ApiError::new(
            ErrorCode::PositionAheadOfLog,
            format!("atPosition {p} is past the log's head {head_position}"),
        )),
        (Some(p), None) => Ok((p, recorded_at(s, p).await?)),
        (None, Some(t)) => {
            let p = log::position_at_time(&s.pool, t)
                .await
                .map_err(audit_error)?;
            Ok((p, t))
        }
        (None, None) => Ok((head_position, head.map_or(Timestamp(0), |h| h.recorded_at))),
    }
}

async fn recorded_at(s: &AppState, position: u64) -> Result<Timestamp, ApiError> {
    let at: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT e.recorded_at FROM event_log l JOIN events e ON e.event_id = l.event_id
         WHERE l.position = $1",
    )
    .bind(position as i64)
    .fetch_optional(&s.pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(at.map_or(Timestamp(0), events::store::from_datetime))
}

/// A transfer as the settlement's own state says it stood (read models add execution details).
fn transfer_status(
    r: &SettlementRecord,
    connection_ids: [Option<Uuid>; 2],
) -> contract::TransferStatus {
    let withheld = connection_ids.iter().flatten().any(|c| r.is_withheld(*c));
    match (&r.status, withheld) {
        (_, true) => contract::TransferStatus::Disputed,
        (Status::Completed { .. }, false) => contract::TransferStatus::Completed,
        (Status::Failed { .. }, false) => contract::TransferStatus::Failed,
        (Status::Pending, false) => contract::TransferStatus::Pending,
    }
}

async fn settlement_at(
    Extension(caller): Extension<AuditCaller>,
    State(s): State<AppState>,
    Path(id): Path<Uuid>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<contract::AuditSettlementAt>, ApiError> {
    only(&query, &["atPosition", "asOf"])?;
    let (position, at) = position_of(&s, &query).await?;
    let settlement = state::settlement_at(&s.pool, id, position)
        .await
        .map_err(audit_error)?;
    let Settlement::Present(record) = settlement else {
        return Err(ApiError::not_found("settlement"));
    };
    if !sees(&s, &caller, &of::settlement(id)).await? {
        return Err(ApiError::not_found("settlement"));
    }
    let transfers = record
        .all_transfers()
        .map(|t| {
            let i = &t.instruction;
            contract::AuditTransfer {
                id: t.transfer_id,
                currency: i.currency.as_str().to_owned(),
                quantity: format_base_units(i.quantity),
                source_connection_id: i.source,
                destination_connection_id: i.destination,
                status: transfer_status(&record, [Some(i.destination), i.source]),
            }
        })
        .collect();
    let disputes = record
        .disputes
        .values()
        .map(|d| disputes::view(&record, d, None))
        .collect();
    Ok(Json(contract::AuditSettlementAt {
        at_position: position,
        as_of: time(at),
        settlement: settlements::view(&record, at),
        settlement_transfers: transfers,
        settlement_disputes: disputes,
    }))
}

fn balance_map(balances: &BTreeMap<String, Balance>) -> BTreeMap<String, contract::Balance> {
    balances
        .iter()
        .map(|(c, b)| {
            (
                c.clone(),
                contract::Balance {
                    available: format_base_units(b.available()),
                    held: format_base_units(b.held()),
                },
            )
        })
        .collect()
}

async fn balances_at(
    Extension(caller): Extension<AuditCaller>,
    State(s): State<AppState>,
    Path(e): Path<Uuid>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<contract::AuditBalancesAt>, ApiError> {
    only(&query, &["atPosition", "asOf"])?;
    let exists = !log::first_events(&s.pool, &[of::enterprise(e)], 1)
        .await
        .map_err(audit_error)?
        .is_empty();
    if !exists || !caller.scope.sees(e) {
        return Err(ApiError::not_found("enterprise"));
    }
    let (position, at) = position_of(&s, &query).await?;
    let found = state::balances_at(&s.pool, e, position)
        .await
        .map_err(audit_error)?;
    let (mut as_client, mut as_partner) = (BTreeMap::new(), BTreeMap::new());
    for (c, balances) in &found.connections {
        if c.client_enterprise_id == e {
            as_client.insert(
                c.connection_id.to_string(),
                contract::NetworkBalance {
                    partner_id: Some(c.partner_id),
                    client_id: None,
                    name: c.name.clone(),
                    balances: balance_map(balances),
                },
            );
        }
        if c.partner_enterprise_id == e {
            as_partner.insert(
                c.connection_id.to_string(),
                contract::NetworkBalance {
                    partner_id: None,
                    client_id: Some(c.client_id),
                    name: c.name.clone(),
                    balances: balance_map(balances),
                },
            );
        }
    }
    Ok(Json(contract::AuditBalancesAt {
        enterprise_id: e,
        at_position: position,
        as_of: time(at),
        balances: balance_map(&found.custody),
        client_network_balances: as_client,
        partner_network_balances: as_partner,
        events_folded: found.events_folded as u64,
    }))
}

/// The feed's filters, parsed.
struct FeedQuery {
    after: u64,
    limit: usize,
    filter: Filter,
    enterprise: Option<Uuid>,
}

fn feed_query(query: &HashMap<String, String>, ndjson: bool) -> Result<FeedQuery, ApiError> {
    only(query, &["after", "limit", "type", "stream", "enterpriseId"])?;
    let max = if ndjson {
        MAX_AUDIT_EXPORT_EVENTS
    } else {
        MAX_AUDIT_PAGE_EVENTS
    };
    let limit = number(query, "limit")?.map_or(DEFAULT_AUDIT_PAGE_EVENTS, |l| l as usize);
    if limit == 0 || limit > max {
        return Err(invalid(format!("limit must be 1 to {max}")));
    }
    let mut type_ids = Vec::new();
    for name in query.get("type").into_iter().flat_map(|t| t.split(',')) {
        let kind = DomainEvent::TYPES
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| invalid(format!("type {name} is not an event type")))?;
        type_ids.push(kind.id);
    }
    let stream = query
        .get("stream")
        .map(|s| {
            s.split_once('/')
                .and_then(|(c, id)| StreamName::parse(c, id).ok())
                .ok_or_else(|| invalid("stream must be category/id, e.g. settlement/<uuid>"))
        })
        .transpose()?;
    Ok(FeedQuery {
        after: number(query, "after")?.unwrap_or(0),
        limit,
        filter: Filter { type_ids, stream },
        enterprise: uuid_param(query, "enterpriseId")?,
    })
}

fn wants_ndjson(headers: &HeaderMap) -> bool {
    headers
        .get(ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/x-ndjson"))
}

/// One page of the feed: events that pass the filters and the caller's scope, scanning at most
/// `MAX_AUDIT_SCAN_POSITIONS` positions; `next` is where to continue (`None` at the head).
async fn feed_page(
    s: &AppState,
    caller: &AuditCaller,
    q: &FeedQuery,
) -> Result<(Vec<Audited>, Option<u64>, u64), ApiError> {
    let head = log::head(&s.pool)
        .await
        .map_err(audit_error)?
        .map_or(0, |h| h.position);
    let scope = match q.enterprise {
        Some(e) if !caller.scope.sees(e) => return Err(ApiError::not_found("enterprise")),
        Some(e) => AuditScope::Enterprises([e].into()),
        None => caller.scope.clone(),
    };
    let until = head.min(q.after.saturating_add(MAX_AUDIT_SCAN_POSITIONS));
    let (mut cursor, mut out) = (q.after, Vec::new());
    loop {
        let want = (q.limit - out.len()) as u32;
        let page = log::scan(&s.pool, cursor, until, &q.filter, want)
            .await
            .map_err(audit_error)?;
        let short = page.len() < want as usize;
        let owners = if scope == AuditScope::All {
            HashMap::new()
        } else {
            let streams: Vec<StreamName> = page.iter().map(|e| e.stored.stream.clone()).collect();
            s.audit
                .scope
                .owners(&s.pool, &streams)
                .await
                .map_err(audit_error)?
        };
        for event in page {
            cursor = event.position;
            let visible = scope == AuditScope::All
                || owners
                    .get(&event.stored.stream)
                    .is_some_and(|o| scope.sees_any(o));
            if visible {
                out.push(Audited::new(event));
            }
        }
        if out.len() >= q.limit {
            return Ok((out, Some(cursor), head));
        }
        if short {
            // Nothing more up to `until`: continue after it, unless that is the head.
            return Ok((out, (until < head).then_some(until), head));
        }
    }
}

/// What the feed needs to judge signatures: every key, and each connection's client.
async fn signers_for(s: &AppState, events: &[Audited]) -> Result<SignerIndex, ApiError> {
    let mut signers = SignerIndex::default();
    let connections: Vec<StreamName> = events
        .iter()
        .filter(|a| a.event.stored.stream.category() == "connection")
        .map(|a| a.event.stored.stream.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if !connections.is_empty() {
        for (_, e) in log::first_events(&s.pool, &connections, 1)
            .await
            .map_err(audit_error)?
        {
            signers.learn(&e);
        }
    }
    for e in events.iter().filter_map(|a| a.decoded.as_ref().ok()) {
        signers.learn(e);
    }
    Ok(signers)
}

async fn feed(
    Extension(caller): Extension<AuditCaller>,
    State(s): State<AppState>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let ndjson = wants_ndjson(&headers);
    let q = feed_query(&query, ndjson)?;
    let (events, next, head) = feed_page(&s, &caller, &q).await?;
    let keys = log::key_registry(&s.pool).await.map_err(audit_error)?;
    let signers = signers_for(&s, &events).await?;
    let lines: Vec<String> = events
        .iter()
        .map(|a| a.to_json(Some((&keys, &signers))))
        .collect();
    if ndjson {
        // The export: the renderer's lines as they are (each the `AuditEvent` of the JSON
        // form, which reads them back into the contract type).
        let next_json = next.map_or("null".to_owned(), |n| n.to_string());
        let mut body = lines.join("\n");
        if !body.is_empty() {
            body.push('\n');
        }
        let mut response = (StatusCode::OK, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-ndjson"),
        );
        if let Ok(v) = HeaderValue::from_str(&next_json) {
            headers.insert("x-next-after", v);
        }
        return Ok(response);
    }
    let events = lines
        .into_iter()
        .map(audit_event)
        .collect::<Result<_, _>>()?;
    Ok(Json(contract::AuditFeed {
        events,
        next_after: next,
        head,
    })
    .into_response())
}

fn signer(s: &AppState) -> Result<&AuditSigner, ApiError> {
    s.audit
        .signer
        .as_ref()
        .ok_or_else(|| ApiError::internal("the audit key is not configured"))
}

/// A fault of the chain as the contract writes it.
fn chain_fault(fault: &Option<ChainFault>) -> Option<contract::ChainFault> {
    fault.as_ref().map(|f| match *f {
        ChainFault::HashMismatch { position } => contract::ChainFault {
            kind: "hashMismatch".to_owned(),
            position,
            found: None,
        },
        ChainFault::Gap { expected, found } => contract::ChainFault {
            kind: "gap".to_owned(),
            position: expected,
            found: Some(found),
        },
    })
}

async fn chain_head(
    State(s): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<contract::ChainHead>, ApiError> {
    only(&query, &[])?;
    let head = log::head(&s.pool).await.map_err(audit_error)?;
    let now = Timestamp(chrono::Utc::now().timestamp_micros());
    let checkpoint: SignedCheckpoint = chain::sign_checkpoint(signer(&s)?, head, now);
    let latest = chain::latest_verification(&s.pool)
        .await
        .map_err(audit_error)?;
    let SignedCheckpoint {
        position,
        hash,
        time: signed_time,
        note,
        signature,
        public_key,
    } = checkpoint;
    Ok(Json(contract::ChainHead {
        head: contract::ChainPosition {
            position: head.map_or(0, |h| h.position),
            hash: hex::encode(head.map_or([0; 32], |h| h.hash)),
            recorded_at: head.map(|h| time(h.recorded_at)),
        },
        checkpoint: contract::Checkpoint {
            position,
            hash,
            time: signed_time,
            note,
            signature,
            public_key,
        },
        latest_verification: latest.map(|v| contract::Verification {
            started_at: time(v.started_at),
            finished_at: time(v.finished_at),
            verifier: v.verifier,
            checked_positions: v.checked,
            head_position: v.head_position,
            verified: v.fault.is_none(),
            first_fault: chain_fault(&v.fault),
        }),
    }))
}

async fn chain_verify(
    State(s): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<contract::ChainVerify>, ApiError> {
    only(&query, &["from", "to"])?;
    let head = log::head(&s.pool)
        .await
        .map_err(audit_error)?
        .map_or(0, |h| h.position);
    let from = number(&query, "from")?.unwrap_or(1).max(1);
    let to = number(&query, "to")?.unwrap_or(head).min(head);
    if head == 0 {
        return Ok(Json(contract::ChainVerify {
            from: 0,
            to: 0,
            checked_positions: 0,
            verified: true,
            first_fault: None,
            next_from: None,
        }));
    }
    if from > to {
        return Err(invalid(format!(
            "the range {from} to {to} is empty (the head is {head})"
        )));
    }
    let last = to.min(from.saturating_add(MAX_VERIFY_RANGE_POSITIONS - 1));
    let report = chain::verify_range(&s.pool, from, last, |_, _| {})
        .await
        .map_err(audit_error)?;
    Ok(Json(contract::ChainVerify {
        from,
        to: last,
        checked_positions: report.checked,
        verified: report.fault.is_none(),
        first_fault: chain_fault(&report.fault),
        next_from: (last < to && report.fault.is_none()).then_some(last + 1),
    }))
}

async fn key(
    State(s): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<contract::AuditKey>, ApiError> {
    only(&query, &[])?;
    Ok(Json(contract::AuditKey {
        public_key: signer(&s)?.public_key_hex(),
        algorithm: "Ed25519".to_owned(),
        note_origin: CHECKPOINT_ORIGIN.to_owned(),
    }))
}

async fn audit_reads(
    _: Admin,
    State(s): State<AppState>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<contract::AuditReadList>, ApiError> {
    only(&query, &["after", "limit", "userId"])?;
    let limit = number(&query, "limit")?.map_or(100, |l| l as usize);
    if limit == 0 || limit > MAX_AUDIT_READS_PAGE {
        return Err(invalid(format!(
            "limit must be 1 to {MAX_AUDIT_READS_PAGE}"
        )));
    }
    let found = reads::list(
        &s.pool,
        number(&query, "after")?.unwrap_or(0),
        limit as u32,
        uuid_param(&query, "userId")?,
    )
    .await
    .map_err(audit_error)?;
    let next = (found.len() == limit)
        .then(|| found.last().map(|(id, _)| *id))
        .flatten();
    // `events::audit::reads` renders the rows (for this route alone); each is read back into its
    // contract type, and must come back unchanged.
    let audit_reads = found
        .into_iter()
        .map(|(_, v)| super::reads::checked::<contract::AuditRead>(v))
        .collect::<Result<_, _>>()?;
    Ok(Json(contract::AuditReadList {
        audit_reads,
        next_after: next.map(|n| n as i64),
    }))
}
