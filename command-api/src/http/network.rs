//! Network routes for clients and partners (docs/api/guide.md): signed commands checked in the
//! documented order (access 401/403 → validation 400 → signature 400/401 → business 409/422) by
//! `signed::Signed`, their `…/signing` twins, and reads from the read models with read-your-writes.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use events::domain::client::wallet_id_of;
use events::domain::connection::{
    allocation_command_id, allocation_id_of, connection_id_of, Allocate, AllocationKind, Connect,
    Connection, ConnectionRejection, UpdateConnection,
};
use events::domain::connection_key::{ConnectionKey, ConnectionKeyError, ConnectionKeySchema};
use events::domain::custody::Custody;
use events::domain::money::{parse_amount, AmountFormat, CurrencyCode};
use events::domain::partner::Partner;
use events::domain::{DomainEvent, StreamName};
use events::store::Loaded;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::{self, connection_stream, custody_stream, partner_stream, Access, Caller, Role};
use super::command::{run, Reply};
use super::consistency::wait_for_min_position;
use super::context::RequestId;
use super::contract;
use super::error::{ApiError, ErrorCode};
use super::reads::{self, PageQuery, Side, READ_MODELS};
use super::signed::{signing, PathIds, Signed, SignedRoute};
use super::views;
use crate::state::{sha256, AppState};

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
            post(signing::<ConnectRoute>).get(signing::<ConnectRoute>),
        )
        .route(
            &format!("{client}/connections/{{id}}"),
            get(get_connection::<false>).put(update_connection),
        )
        .route(
            &format!("{client}/connections/{{id}}/signing"),
            post(signing::<UpdateConnectionRoute>).get(signing::<UpdateConnectionRoute>),
        )
        .route(
            &format!("{client}/connections/{{id}}/allocations"),
            post(move_funds::<false>),
        )
        .route(
            &format!("{client}/connections/{{id}}/allocations/signing"),
            post(signing::<AllocateRoute>).get(signing::<AllocateRoute>),
        )
        .route(
            &format!("{client}/connections/{{id}}/deallocations"),
            post(move_funds::<true>),
        )
        .route(
            &format!("{client}/connections/{{id}}/deallocations/signing"),
            post(signing::<DeallocateRoute>).get(signing::<DeallocateRoute>),
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

/// `POST …/clients/connections`: connect to a partner.
pub(super) struct ConnectRoute;

impl SignedRoute for ConnectRoute {
    const ROLE: Role = Role::Client;
    type Path = Uuid;
    type Request = ConnectRequest;
    type Found = ();
    type Valid = (ConnectRequest, ConnectionKey);

    fn before_body(_: &Access, _: &Loaded, _: Uuid) -> Result<(), ApiError> {
        Ok(())
    }

    async fn validate(
        _: &AppState,
        _: Uuid,
        _: (),
        request: ConnectRequest,
        _: &Value,
    ) -> Result<(Self::Valid, PathIds), ApiError> {
        // The twin refuses what the route refuses, so a client never signs a key it cannot send.
        let key = request.key()?;
        Ok(((request, key), vec![]))
    }
}

async fn connect(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    signed: Signed<ConnectRoute>,
) -> Result<Response, ApiError> {
    let (request, key) = &signed.request;
    let id = signed.nonce_command();
    let connection_id = connection_id_of(id);
    let (partner, connection) = (
        partner_stream(request.partner_id),
        connection_stream(connection_id),
    );
    let spec = signed.spec(id, signed.streams([partner.clone(), connection.clone()]));
    let (nonce, proof) = (
        signed.signature.nonce().to_owned(),
        signed.signature.signature_hex(),
    );
    let kept = signed.signature.kept();
    run(&state, &request_id, spec, |loaded, at| {
        let access = signed.recheck(loaded)?;
        let current: Connection = loaded.aggregate(&connection);
        let partner_state: Partner = loaded.aggregate(&partner);
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
        let connection_view = after
            .record()
            .map(views::connection)
            .ok_or_else(|| ApiError::internal("connection missing after its command"))?;
        Ok((
            on(&connection, events).collect(),
            views::reply(&contract::ConnectionReply {
                connection: connection_view,
            })?,
        ))
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ConnectionUpdateRequest)]
pub(super) struct UpdateRequest {
    name: Option<String>,
    active: Option<bool>,
}

/// `PUT …/clients/connections/{id}`: rename or (de)activate a connection.
pub(super) struct UpdateConnectionRoute;

impl SignedRoute for UpdateConnectionRoute {
    const ROLE: Role = Role::Client;
    type Path = (Uuid, Uuid);
    type Request = UpdateRequest;
    type Found = ();
    type Valid = UpdateRequest;

    fn before_body(_: &Access, _: &Loaded, _: (Uuid, Uuid)) -> Result<(), ApiError> {
        Ok(())
    }

    async fn validate(
        _: &AppState,
        _: (Uuid, Uuid),
        _: (),
        request: UpdateRequest,
        _: &Value,
    ) -> Result<(UpdateRequest, PathIds), ApiError> {
        Ok((request, vec![]))
    }
}

async fn update_connection(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    signed: Signed<UpdateConnectionRoute>,
) -> Result<Response, ApiError> {
    let ((e, connection_id), request) = (signed.path, &signed.request);
    let connection = connection_stream(connection_id);
    let spec = signed.spec(signed.nonce_command(), signed.streams([connection.clone()]));
    let kept = signed.signature.kept();
    run(&state, &request_id, spec, |loaded, at| {
        signed.recheck(loaded)?;
        let current: Connection = loaded.aggregate(&connection);
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
        let connection_view = after
            .record()
            .map(views::connection)
            .ok_or_else(|| ApiError::internal("connection missing after its command"))?;
        Ok((
            on(&connection, events).collect(),
            views::reply(&contract::ConnectionReply {
                connection: connection_view,
            })?,
        ))
    })
    .await
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

/// `POST …/connections/{id}/allocations` (`DEALLOCATION` false) and `…/deallocations` (true):
/// move funds between the client's custody and its connection.
pub(super) struct MoveFundsRoute<const DEALLOCATION: bool>;

type AllocateRoute = MoveFundsRoute<false>;
type DeallocateRoute = MoveFundsRoute<true>;

impl<const DEALLOCATION: bool> MoveFundsRoute<DEALLOCATION> {
    const KIND: AllocationKind = if DEALLOCATION {
        AllocationKind::Deallocation
    } else {
        AllocationKind::Allocation
    };
}

/// An allocation request, validated.
pub(super) struct Funds {
    currency: CurrencyCode,
    quantity: i128,
    client_external_id: String,
    notes: Option<String>,
}

impl<const DEALLOCATION: bool> SignedRoute for MoveFundsRoute<DEALLOCATION> {
    const ROLE: Role = Role::Client;
    type Path = (Uuid, Uuid);
    type Request = AllocationRequest;
    /// The connection's amount format.
    type Found = AmountFormat;
    type Valid = Funds;

    /// The connection, read with the access streams.
    fn preload((_, connection_id): (Uuid, Uuid)) -> Vec<StreamName> {
        vec![connection_stream(connection_id)]
    }

    /// The client's own connection (404 for anyone else's), before the body.
    fn before_body(
        _: &Access,
        loaded: &Loaded,
        (e, connection_id): (Uuid, Uuid),
    ) -> Result<AmountFormat, ApiError> {
        let current: Connection = loaded.aggregate(&connection_stream(connection_id));
        Ok(current
            .owned_by_client(e)
            .ok_or_else(|| ApiError::not_found("connection"))?
            .amount_format)
    }

    async fn validate(
        state: &AppState,
        (e, connection_id): (Uuid, Uuid),
        format: AmountFormat,
        request: AllocationRequest,
        _: &Value,
    ) -> Result<(Funds, PathIds), ApiError> {
        let (currency, quantity) = parse_allocation_amount(state, &request.amount, format)?;
        let funds = Funds {
            currency,
            quantity,
            client_external_id: request.client_external_id,
            notes: request.notes,
        };
        let path_ids = vec![
            ("connectionId", connection_id.to_string()),
            ("enterpriseId", e.to_string()),
        ];
        Ok((funds, path_ids))
    }
}

async fn move_funds<const DEALLOCATION: bool>(
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    signed: Signed<MoveFundsRoute<DEALLOCATION>>,
) -> Result<Response, ApiError> {
    let kind = MoveFundsRoute::<DEALLOCATION>::KIND;
    let ((e, connection_id), request) = (signed.path, &signed.request);
    let (currency, quantity) = (&request.currency, request.quantity);
    // Idempotent on clientExternalId: the same id with the same content answers as the first time.
    let id = allocation_command_id(kind, e, &request.client_external_id);
    let (connection, custody) = (connection_stream(connection_id), custody_stream(e));
    let mut spec = signed.spec(id, signed.streams([connection.clone(), custody.clone()]));
    let content = json!([
        kind.as_str(),
        connection_id,
        currency.as_str(),
        quantity.to_string(),
        request.notes
    ]);
    spec.request_hash = sha256(content.to_string().as_bytes());
    let kept = signed.signature.kept();
    run(&state, &request_id, spec, |loaded, at| {
        signed.recheck(loaded)?;
        let current: Connection = loaded.aggregate(&connection);
        let custody_state: Custody = loaded.aggregate(&custody);
        let command = Allocate {
            allocation_id: allocation_id_of(id),
            kind,
            currency: currency.clone(),
            quantity,
            client_external_id: request.client_external_id.clone(),
            initiated_by: signed.caller.user_id,
            notes: request.notes.clone(),
            signed: Some(kept.clone()),
        };
        let decision = current
            .decide_allocation(e, &custody_state, command, at)
            .map_err(connection_error)?;
        let view = views::allocation(&decision.record);
        let reply = match decision.record.released {
            None => views::reply(&contract::AllocationReply { allocation: view })?,
            Some(reason) => Reply::refused(
                ErrorCode::AllocationReleased,
                reason.sentence(),
                serde_json::to_value(contract::AllocationReply { allocation: view })
                    .map_err(ApiError::internal)?,
            ),
        };
        let events = on(&connection, decision.connection_events)
            .chain(on(&custody, decision.custody_events))
            .collect();
        Ok((events, reply))
    })
    .await
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
) -> Result<Json<super::contract::ConnectionList>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    let page = q.page()?;
    Ok(Json(reads::list(
        reads::connections(&s.pool, side, None, page).await?,
        page,
    )))
}

async fn get_connection<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((e, id)): Path<(Uuid, Uuid)>,
) -> Result<Json<super::contract::ConnectionReply>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    Ok(Json(reads::connection(&s.pool, side, id).await?))
}

async fn list_allocations<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<Json<super::contract::AllocationList>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    let page = q.page()?;
    Ok(Json(reads::list(
        reads::allocations(&s.pool, side, None, page).await?,
        page,
    )))
}

async fn get_allocation<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path((e, id)): Path<(Uuid, Uuid)>,
) -> Result<Json<super::contract::AllocationReply>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    Ok(Json(reads::allocation(&s.pool, side, id).await?))
}

async fn balances<const PARTNER: bool>(
    caller: Caller,
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
) -> Result<Json<super::contract::Balances>, ApiError> {
    let (side, role) = side::<PARTNER>(e);
    read_access(&s, &caller, &headers, e, role).await?;
    Ok(Json(reads::balances(&s.pool, side, wallet_id_of(e)).await?))
}
