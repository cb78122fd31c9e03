//! Network routes for clients and partners (docs/api/guide.md): signed commands checked in the
//! documented order (access 401/403 → validation 400 → signature 400/401 → business 409/422), their
//! `…/signing` twins, and reads from the read models with read-your-writes.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use events::codec::Actor;
use events::domain::client::wallet_id_of;
use events::domain::connection::{
    Allocate, AllocationKind, Connect, Connection, ConnectionRejection, UpdateConnection,
};
use events::domain::connection_key::{ConnectionKey, ConnectionKeyError, ConnectionKeySchema};
use events::domain::custody::Custody;
use events::domain::money::{parse_amount, AmountFormat, CurrencyCode};
use events::domain::partner::Partner;
use events::domain::{CommandId, DomainEvent, StreamName};
use events::store::{Loaded, NonceClaim};
use schemas::signing::{signing_payload, PublicKey, SignedRequest, SigningError};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::{
    self, connection_stream, custody_stream, fold, partner_stream, Access, Caller, Role,
};
use super::body::{parse, RawBody};
use super::command::{run, CommandSpec, Reply};
use super::consistency::wait_for_min_position;
use super::context::RequestId;
use super::disputes::signed_of;
use super::error::{ApiError, ErrorCode};
use super::reads::{self, PageQuery, Side};
use super::views;
use crate::state::{sha256, AppState};

/// The checkpoint the tenancy read models keep (see the projector).
const READ_MODELS: &str = "projector-read-models";

pub fn routes() -> Router<AppState> {
    let client = "/v1/enterprises/{e}/clients";
    let partner = "/v1/enterprises/{e}/partners";
    Router::new()
        .route(
            &format!("{client}/connections"),
            post(connect).get(list_connections::<false>),
        )
        .route(
            &format!("{client}/connections/signing"),
            post(connect_signing).get(connect_signing),
        )
        .route(
            &format!("{client}/connections/{{id}}"),
            get(get_connection::<false>).put(update_connection),
        )
        .route(
            &format!("{client}/connections/{{id}}/signing"),
            post(update_signing).get(update_signing),
        )
        .route(
            &format!("{client}/connections/{{id}}/allocations"),
            post(allocate),
        )
        .route(
            &format!("{client}/connections/{{id}}/allocations/signing"),
            post(allocation_signing).get(allocation_signing),
        )
        .route(
            &format!("{client}/connections/{{id}}/deallocations"),
            post(deallocate),
        )
        .route(
            &format!("{client}/connections/{{id}}/deallocations/signing"),
            post(allocation_signing).get(allocation_signing),
        )
        .route(
            &format!("{client}/allocations"),
            get(list_allocations::<false>),
        )
        .route(
            &format!("{client}/allocations/{{id}}"),
            get(get_allocation::<false>),
        )
        .route(&format!("{client}/balances"), get(balances::<false>))
        .route(
            &format!("{partner}/connections"),
            get(list_connections::<true>),
        )
        .route(
            &format!("{partner}/connections/{{id}}"),
            get(get_connection::<true>),
        )
        .route(
            &format!("{partner}/allocations"),
            get(list_allocations::<true>),
        )
        .route(
            &format!("{partner}/allocations/{{id}}"),
            get(get_allocation::<true>),
        )
        .route(&format!("{partner}/balances"), get(balances::<true>))
}

pub(super) fn signing_error(e: SigningError) -> ApiError {
    ApiError::new(ErrorCode::from(&e), e.to_string())
}

/// The request's own fields: the body without the signing envelope.
pub(super) fn own_fields(body: &Value) -> Value {
    let mut fields = body.as_object().cloned().unwrap_or_default();
    for envelope in ["nonce", "payload", "signature"] {
        fields.remove(envelope);
    }
    Value::Object(fields)
}

/// The id of the enterprise key that verifies the request, or 401.
pub(super) fn verify(access: &Access, signed: &SignedRequest) -> Result<Uuid, ApiError> {
    let keys: Vec<(Uuid, PublicKey)> = access
        .enterprise
        .active_keys()
        .filter_map(|(id, bytes)| PublicKey::from_bytes(&bytes).ok().map(|k| (id, k)))
        .collect();
    signed.verify(&keys).ok_or_else(|| {
        ApiError::new(
            ErrorCode::InvalidSignature,
            "the signature does not verify under any active key of the enterprise",
        )
    })
}

/// Re-checks, on the streams the command loaded, what was checked before it ran: access, and
/// that the signing key is still active (a revocation in between wins).
pub(super) fn recheck(
    loaded: &Loaded,
    caller: &Caller,
    e: Uuid,
    role: Role,
    key_id: Uuid,
) -> Result<Access, ApiError> {
    let access = auth::check(loaded, caller, e, role)?;
    if !access.enterprise.active_keys().any(|(id, _)| id == key_id) {
        return Err(ApiError::new(
            ErrorCode::InvalidSignature,
            "the signing key was revoked",
        ));
    }
    Ok(access)
}

/// A signed command's identity: its nonce (unique per enterprise) unless it has a natural key.
pub(super) fn signed_spec(
    caller: &Caller,
    e: Uuid,
    signed: &SignedRequest,
    key_id: Uuid,
    id: CommandId,
    streams: Vec<StreamName>,
) -> CommandSpec {
    CommandSpec {
        id,
        request_hash: signed.payload_hash(),
        nonce: Some(NonceClaim {
            scope: e.to_string(),
            nonce: signed.nonce().to_owned(),
            payload_hash: signed.payload_hash(),
        }),
        streams,
        actor: Actor::User(caller.user_id),
        key_id: Some(key_id),
    }
}

pub(super) fn nonce_command(e: Uuid, signed: &SignedRequest) -> CommandId {
    CommandId::derive("signed", &[e.as_bytes(), signed.nonce().as_bytes()])
}

fn connection_error(e: ConnectionRejection) -> ApiError {
    let message = e.to_string();
    match e {
        ConnectionRejection::NotFound => ApiError::not_found("connection"),
        ConnectionRejection::PartnerNotFound => ApiError::not_found("partner"),
        ConnectionRejection::PartnerInactive => {
            // 422 here (docs/api/guide.md, client routes); on the partner's own routes it is 403.
            ApiError::new(ErrorCode::PartnerInactive, message)
                .with_status(StatusCode::UNPROCESSABLE_ENTITY)
        }
        ConnectionRejection::KeySchemaMismatch { expected, .. } => {
            ApiError::new(ErrorCode::ConnectionKeySchemaMismatch, message)
                .with_detail("connectionKeySchema", expected.as_str().into())
        }
        ConnectionRejection::NoClient => ApiError::new(ErrorCode::NoClientRecord, message),
        ConnectionRejection::AlreadyExists | ConnectionRejection::ExternalIdReused(_) => {
            ApiError::new(ErrorCode::AlreadyExists, message)
        }
        ConnectionRejection::Overflow => ApiError::new(ErrorCode::AmountOverflow, message),
        ConnectionRejection::NotPositive => ApiError::new(ErrorCode::InvalidRequest, message),
        ConnectionRejection::Input(e) => ApiError::input(e),
    }
}

fn on(
    stream: &StreamName,
    events: Vec<DomainEvent>,
) -> impl Iterator<Item = (StreamName, DomainEvent)> + '_ {
    events.into_iter().map(move |e| (stream.clone(), e))
}

/// A `connectionKey` refused before any business rule (ADR 0011): 400 naming the field, or 422
/// `unsupported_connection_key_schema` for a schema this engine does not know. `field` is where
/// the caller wrote the schema (`connectionKey.schema`, or an admin's `connectionKeySchema`).
pub(super) fn connection_key_error(e: ConnectionKeyError, schema_field: &str) -> ApiError {
    let message = e.to_string();
    match e {
        ConnectionKeyError::Input(e) => ApiError::input(e),
        ConnectionKeyError::Invalid { field, .. } => ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid request: {message}"),
        )
        .with_detail("field", field.into()),
        ConnectionKeyError::UnsupportedSchema(_) => {
            ApiError::new(ErrorCode::UnsupportedConnectionKeySchema, message)
                .with_detail("field", schema_field.into())
        }
    }
}

/// The OpenAPI schema of `connectionKey`: an object of one of the four schemas, or a string
/// (the `token` shorthand).
fn connection_key_openapi() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
    let text = || ObjectBuilder::new().schema_type(Type::String);
    let mut one_of = OneOfBuilder::new().item(text().description(Some(
        "Shorthand of `{\"schema\":\"token\",\"connectionToken\":…}`.",
    )));
    for schema in ConnectionKeySchema::ALL {
        let mut object = ObjectBuilder::new()
            .schema_type(Type::Object)
            .property("schema", text().enum_values(Some([schema.as_str()])))
            .required("schema");
        for field in schema.fields() {
            object = object.property(*field, text()).required(*field);
        }
        one_of =
            one_of.item(object.additional_properties(Some(AdditionalProperties::FreeForm(false))));
    }
    one_of
        .description(Some(
            "The client's credential at the partner, in the partner's `connectionKeySchema`.",
        ))
        .build()
        .into()
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct ConnectRequest {
    partner_id: Uuid,
    name: String,
    /// An object tagged by `schema`, or a string meaning a `token` key (ADR 0011).
    #[schema(schema_with = connection_key_openapi)]
    connection_key: Value,
}

impl ConnectRequest {
    /// The key, parsed and bounded by the domain's one rule.
    fn key(&self) -> Result<ConnectionKey, ApiError> {
        ConnectionKey::from_json(&self.connection_key)
            .map_err(|e| connection_key_error(e, "connectionKey.schema"))
    }
}

async fn connect(
    caller: Caller,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(e): Path<Uuid>,
    raw: RawBody,
) -> Result<Response, ApiError> {
    let access = auth::authorize(&state, &caller, e, Role::Client).await?;
    let body = raw.json().await?;
    let request: ConnectRequest = parse(&own_fields(&body))?;
    let key = request.key()?;
    let signed = SignedRequest::parse(&body, &[]).map_err(signing_error)?;
    let key_id = verify(&access, &signed)?;
    let id = nonce_command(e, &signed);
    let connection_id = Uuid::new_v5(&id.as_uuid(), b"connection");
    let (partner, connection) = (
        partner_stream(request.partner_id),
        connection_stream(connection_id),
    );
    let mut streams = auth::access_streams(&caller, e, Role::Client);
    streams.extend([partner.clone(), connection.clone()]);
    let spec = signed_spec(&caller, e, &signed, key_id, id, streams);
    let (nonce, proof) = (signed.nonce().to_owned(), signed.signature().to_hex());
    let kept = signed_of(&signed, key_id);
    run(&state, &request_id, spec, |loaded, at| {
        let access = recheck(loaded, &caller, e, Role::Client, key_id)?;
        let current: Connection = fold(loaded, &connection, Connection::evolve);
        let partner_state: Partner = fold(loaded, &partner, Partner::evolve);
        let command = Connect {
            connection_id,
            name: request.name.clone(),
            connection_key: key.clone(),
            nonce: nonce.clone(),
            proof: proof.clone(),
            signed: Some(kept.clone()),
        };
        let events = current
            .decide_connect(&access.client, &partner_state, command, at)
            .map_err(connection_error)?;
        let after = events.iter().fold(current, Connection::evolve);
        let view = after.record().map(|r| views::connection(r, &nonce, &proof));
        Ok((
            on(&connection, events).collect(),
            Reply::ok(json!({ "connection": view })),
        ))
    })
    .await
}

async fn connect_signing(
    caller: Caller,
    State(state): State<AppState>,
    Path(e): Path<Uuid>,
    raw: RawBody,
) -> Result<Json<Value>, ApiError> {
    auth::authorize(&state, &caller, e, Role::Client).await?;
    let body = raw.json().await?;
    let request: ConnectRequest = parse(&own_fields(&body))?;
    // The twin refuses what the route refuses, so a client never signs a key it cannot send.
    request.key()?;
    Ok(Json(
        json!({ "payload": signing_payload(&body, &[]).map_err(signing_error)? }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ConnectionUpdateRequest)]
pub(super) struct UpdateRequest {
    name: Option<String>,
    active: Option<bool>,
}

async fn update_connection(
    caller: Caller,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path((e, connection_id)): Path<(Uuid, Uuid)>,
    raw: RawBody,
) -> Result<Response, ApiError> {
    let access = auth::authorize(&state, &caller, e, Role::Client).await?;
    let body = raw.json().await?;
    let request: UpdateRequest = parse(&own_fields(&body))?;
    let signed = SignedRequest::parse(&body, &[]).map_err(signing_error)?;
    let key_id = verify(&access, &signed)?;
    let connection = connection_stream(connection_id);
    let mut streams = auth::access_streams(&caller, e, Role::Client);
    streams.push(connection.clone());
    let spec = signed_spec(
        &caller,
        e,
        &signed,
        key_id,
        nonce_command(e, &signed),
        streams,
    );
    let kept = signed_of(&signed, key_id);
    run(&state, &request_id, spec, |loaded, at| {
        recheck(loaded, &caller, e, Role::Client, key_id)?;
        let current: Connection = fold(loaded, &connection, Connection::evolve);
        let command = UpdateConnection {
            client_enterprise_id: e,
            name: request.name.clone(),
            active: request.active,
            signed: Some(kept.clone()),
        };
        let events = current
            .decide_update(command, at)
            .map_err(connection_error)?;
        let after = events.iter().fold(current, Connection::evolve);
        let created = loaded.events(&connection).iter().find_map(|ev| match ev {
            DomainEvent::ConnectionCreated(c) => Some((c.nonce.clone(), c.proof.clone())),
            _ => None,
        });
        let (nonce, proof) = created.unwrap_or_default();
        let view = after.record().map(|r| views::connection(r, &nonce, &proof));
        Ok((
            on(&connection, events).collect(),
            Reply::ok(json!({ "connection": view })),
        ))
    })
    .await
}

async fn update_signing(
    caller: Caller,
    State(state): State<AppState>,
    Path((e, _)): Path<(Uuid, Uuid)>,
    raw: RawBody,
) -> Result<Json<Value>, ApiError> {
    auth::authorize(&state, &caller, e, Role::Client).await?;
    let body = raw.json().await?;
    let _: UpdateRequest = parse(&own_fields(&body))?;
    Ok(Json(
        json!({ "payload": signing_payload(&body, &[]).map_err(signing_error)? }),
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct AmountRequest {
    currency: String,
    quantity: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AllocationRequest {
    amount: AmountRequest,
    client_external_id: String,
    notes: Option<String>,
}

/// Currency in the table, quantity a positive amount in the connection's partner's format.
fn parse_allocation_amount(
    state: &AppState,
    amount: &AmountRequest,
    format: AmountFormat,
) -> Result<(CurrencyCode, i128), ApiError> {
    let currency = CurrencyCode::parse(&amount.currency)
        .map_err(|e| ApiError::new(ErrorCode::from(&e), format!("amount.currency: {e}")))?;
    let decimals = state
        .currencies
        .decimals_of(&currency)
        .map_err(|e| ApiError::new(ErrorCode::from(&e), e.to_string()))?;
    let quantity = parse_amount(&amount.quantity, format, decimals)
        .map_err(|e| ApiError::new(ErrorCode::from(&e), format!("amount.quantity: {e}")))?;
    if quantity <= 0 {
        return Err(ApiError::new(
            ErrorCode::InvalidAmount,
            "amount.quantity must be positive",
        ));
    }
    Ok((currency, quantity))
}

/// Access, plus the client's own connection (404 for anyone else's), in one read.
async fn client_connection_access(
    state: &AppState,
    caller: &Caller,
    e: Uuid,
    connection_id: Uuid,
) -> Result<(Access, AmountFormat), ApiError> {
    let connection = connection_stream(connection_id);
    let (access, loaded) = auth::authorize_with(
        state,
        caller,
        e,
        Role::Client,
        std::slice::from_ref(&connection),
    )
    .await?;
    let current: Connection = fold(&loaded, &connection, Connection::evolve);
    let format = current
        .owned_by_client(e)
        .ok_or_else(|| ApiError::not_found("connection"))?
        .amount_format;
    Ok((access, format))
}

fn allocation_path_ids(e: Uuid, connection_id: Uuid) -> [(&'static str, String); 2] {
    [
        ("connectionId", connection_id.to_string()),
        ("enterpriseId", e.to_string()),
    ]
}

async fn allocate(
    caller: Caller,
    state: State<AppState>,
    request_id: Extension<RequestId>,
    path: Path<(Uuid, Uuid)>,
    body: RawBody,
) -> Result<Response, ApiError> {
    move_funds(
        AllocationKind::Allocation,
        caller,
        state,
        request_id,
        path,
        body,
    )
    .await
}

async fn deallocate(
    caller: Caller,
    state: State<AppState>,
    request_id: Extension<RequestId>,
    path: Path<(Uuid, Uuid)>,
    body: RawBody,
) -> Result<Response, ApiError> {
    move_funds(
        AllocationKind::Deallocation,
        caller,
        state,
        request_id,
        path,
        body,
    )
    .await
}

async fn move_funds(
    kind: AllocationKind,
    caller: Caller,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path((e, connection_id)): Path<(Uuid, Uuid)>,
    raw: RawBody,
) -> Result<Response, ApiError> {
    let (access, format) = client_connection_access(&state, &caller, e, connection_id).await?;
    let body = raw.json().await?;
    let request: AllocationRequest = parse(&own_fields(&body))?;
    let (currency, quantity) = parse_allocation_amount(&state, &request.amount, format)?;
    let signed = SignedRequest::parse(&body, &allocation_path_ids(e, connection_id))
        .map_err(signing_error)?;
    let key_id = verify(&access, &signed)?;
    let kind_name = match kind {
        AllocationKind::Allocation => "allocation",
        AllocationKind::Deallocation => "deallocation",
    };
    // Idempotent on clientExternalId: the same id with the same content answers as the first time.
    let id = CommandId::derive(
        kind_name,
        &[e.as_bytes(), request.client_external_id.as_bytes()],
    );
    let (connection, custody) = (connection_stream(connection_id), custody_stream(e));
    let mut streams = auth::access_streams(&caller, e, Role::Client);
    streams.extend([connection.clone(), custody.clone()]);
    let mut spec = signed_spec(&caller, e, &signed, key_id, id, streams);
    let content = json!([
        kind_name,
        connection_id,
        currency.as_str(),
        quantity.to_string(),
        request.notes
    ]);
    spec.request_hash = sha256(content.to_string().as_bytes());
    let kept = signed_of(&signed, key_id);
    run(&state, &request_id, spec, |loaded, at| {
        recheck(loaded, &caller, e, Role::Client, key_id)?;
        let current: Connection = fold(loaded, &connection, Connection::evolve);
        let custody_state: Custody = fold(loaded, &custody, Custody::evolve);
        let command = Allocate {
            allocation_id: Uuid::new_v5(&id.as_uuid(), b"allocation"),
            kind,
            currency: currency.clone(),
            quantity,
            client_external_id: request.client_external_id.clone(),
            initiated_by: caller.user_id,
            notes: request.notes.clone(),
            signed: Some(kept.clone()),
        };
        let decision = current
            .decide_allocation(e, &custody_state, command, at)
            .map_err(connection_error)?;
        let view = views::allocation(&decision.record);
        let reply = match decision.record.released {
            None => Reply::ok(json!({ "allocation": view })),
            Some(reason) => Reply::refused(
                ErrorCode::AllocationReleased,
                reason.sentence(),
                json!({ "allocation": view }),
            ),
        };
        let events = on(&connection, decision.connection_events)
            .chain(on(&custody, decision.custody_events))
            .collect();
        Ok((events, reply))
    })
    .await
}

async fn allocation_signing(
    caller: Caller,
    State(state): State<AppState>,
    Path((e, connection_id)): Path<(Uuid, Uuid)>,
    raw: RawBody,
) -> Result<Json<Value>, ApiError> {
    let (_, format) = client_connection_access(&state, &caller, e, connection_id).await?;
    let body = raw.json().await?;
    let request: AllocationRequest = parse(&own_fields(&body))?;
    parse_allocation_amount(&state, &request.amount, format)?;
    let payload =
        signing_payload(&body, &allocation_path_ids(e, connection_id)).map_err(signing_error)?;
    Ok(Json(json!({ "payload": payload })))
}

/// Authorizes a read and waits for read-your-writes.
pub(super) async fn read_access(
    state: &AppState,
    caller: &Caller,
    headers: &HeaderMap,
    e: Uuid,
    role: Role,
) -> Result<(), ApiError> {
    auth::authorize(state, caller, e, role).await?;
    wait_for_min_position(headers, &state.pool, READ_MODELS, state.read_wait_max).await
}

fn one(mut items: Vec<Value>, singular: &str) -> Result<Json<Value>, ApiError> {
    let item = items.pop().ok_or_else(|| ApiError::not_found(singular))?;
    Ok(Json(json!({ singular: item })))
}

fn single() -> reads::Page {
    reads::Page { size: 1, offset: 0 }
}

/// Which side a read is on: `PARTNER` picks the partner routes, else the client routes.
pub(super) fn side<const PARTNER: bool>(e: Uuid) -> (Side, Role) {
    if PARTNER {
        (Side::Partner(e), Role::Partner)
    } else {
        (Side::Client(e), Role::Client)
    }
}

async fn list_connections<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    let page = q.page()?;
    Ok(Json(reads::list(
        "connections",
        reads::connections(&s.pool, side, None, page).await?,
        page,
    )))
}

async fn get_connection<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((e, id)): Path<(Uuid, Uuid)>,
) -> Result<Json<Value>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    one(
        reads::connections(&s.pool, side, Some(id), single()).await?,
        "connection",
    )
}

async fn list_allocations<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    let page = q.page()?;
    Ok(Json(reads::list(
        "allocations",
        reads::allocations(&s.pool, side, None, page).await?,
        page,
    )))
}

async fn get_allocation<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((e, id)): Path<(Uuid, Uuid)>,
) -> Result<Json<Value>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    one(
        reads::allocations(&s.pool, side, Some(id), single()).await?,
        "allocation",
    )
}

async fn balances<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
) -> Result<Json<Value>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    Ok(Json(reads::balances(&s.pool, side, wallet_id_of(e)).await?))
}
