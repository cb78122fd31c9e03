//! Admin API (docs/api/guide.md): provisioning and operator actions, each an event-sourced command
//! through the one write path, authorized by the admin token. Create routes honour an
//! `Idempotency-Key` header (ADR 0007); users can be disabled, enabled and given a new token.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{delete, get, patch, post};
use axum::{Extension, Json, Router};
use events::codec::Actor;
use events::domain::client::{client_id_of, Client, ClientRejection};
use events::domain::connection_key::ConnectionKeySchema;
use events::domain::custody::{Custody, DepositRejection};
use events::domain::enterprise::{Enterprise, EnterpriseCommand, EnterpriseRejection};
use events::domain::ids::IdempotencyKey;
use events::domain::money::{parse_amount, AmountFormat, CurrencyCode};
use events::domain::partner::{
    partner_id_of, Partner, PartnerCommand, PartnerRejection, WindowMinutes,
};
use events::domain::user::{CreateUser, User, UserRejection};
use events::domain::{Aggregate, CommandId, DomainEvent, StreamName};
use events::store::Loaded;
use rand::RngCore;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::auth::{
    client_stream, custody_stream, enterprise_stream, new_token, partner_stream, user_stream, Admin,
};
use super::body::{parse, JsonBody};
use super::command::{run, run_replayable, CommandSpec, Decided};
use super::context::RequestId;
use super::contract;
use super::error::{ApiError, ErrorCode};
use super::{reads, views};
use crate::state::{sha256, AppState};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/enterprises", post(create_enterprise))
        .route("/enterprises/{e}", patch(set_license))
        .route("/users", post(create_user))
        .route("/users/{id}/disable", post(disable_user))
        .route("/users/{id}/enable", post(enable_user))
        .route("/users/{id}/token", post(rotate_token))
        .route("/enterprises/{e}/keys", post(register_key))
        .route("/enterprises/{e}/keys/{key_id}", delete(revoke_key))
        .route("/enterprises/{e}/partner", post(register_partner))
        .route("/partners/{id}", patch(update_partner))
        .route("/enterprises/{e}/client", post(register_client))
        .route("/enterprises/{e}/deposits", post(deposit))
        .route("/currencies", get(currencies))
}

/// The shape of most admin commands: fold one stream, decide, and answer with the state after,
/// as the contract type `view` renders it.
pub(super) fn on_stream<S: Aggregate, T: Serialize>(
    loaded: &Loaded,
    stream: &StreamName,
    decide: impl FnOnce(&S) -> Result<Vec<DomainEvent>, ApiError>,
    view: impl FnOnce(&S) -> Result<T, ApiError>,
) -> Decided {
    let current: S = loaded.aggregate(stream);
    let events = decide(&current)?;
    let after = events.iter().fold(current, S::evolve);
    let body = views::reply(&view(&after)?)?;
    Ok((
        events.into_iter().map(|e| (stream.clone(), e)).collect(),
        body,
    ))
}

/// The record a command that succeeded leaves behind (it decided on it, so it exists).
fn recorded<T>(record: Option<T>, what: &str) -> Result<T, ApiError> {
    record.ok_or_else(|| ApiError::internal(format!("no {what} after the command")))
}

fn enterprise_reply(after: &Enterprise) -> Result<contract::EnterpriseReply, ApiError> {
    Ok(contract::EnterpriseReply {
        enterprise: views::enterprise(recorded(after.record(), "enterprise")?),
    })
}

fn user_reply(after: &User) -> Result<contract::UserReply, ApiError> {
    Ok(contract::UserReply {
        user: views::user(recorded(after.record(), "user")?),
    })
}

fn partner_reply(after: &Partner) -> Result<contract::PartnerReply, ApiError> {
    Ok(contract::PartnerReply {
        partner: views::partner(recorded(after.record(), "partner")?),
    })
}

fn key_reply(after: &Enterprise, e: Uuid, key_id: Uuid) -> Result<contract::KeyReply, ApiError> {
    Ok(contract::KeyReply {
        key: views::key(e, key_id, recorded(after.record(), "enterprise")?),
    })
}

/// 404 unless the enterprise a command names exists.
fn require_enterprise(loaded: &Loaded, enterprise: &StreamName) -> Result<(), ApiError> {
    match loaded.aggregate::<Enterprise>(enterprise).record() {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found("enterprise")),
    }
}

/// A command of the operator: random identity (each POST is a new action), no nonce.
pub(super) fn admin_command(
    kind: &str,
    id: Uuid,
    body: &Value,
    streams: Vec<events::domain::StreamName>,
) -> CommandSpec {
    CommandSpec {
        id: CommandId::derive(kind, &[id.as_bytes()]),
        request_hash: sha256(body.to_string().as_bytes()),
        nonce: None,
        streams,
        actor: Actor::Admin,
        key_id: None,
    }
}

/// The optional `Idempotency-Key` header of an admin create route: 1 to 255 printable ASCII
/// bytes, at most one; anything else is a 400 naming the header.
#[derive(Clone, Debug, Default)]
pub(super) struct Idempotency(Option<IdempotencyKey>);

impl<S: Send + Sync> FromRequestParts<S> for Idempotency {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let invalid = |message: String| ApiError::new(ErrorCode::InvalidIdempotencyKey, message);
        let mut values = parts.headers.get_all("idempotency-key").iter();
        let Some(value) = values.next() else {
            return Ok(Self(None));
        };
        if values.next().is_some() {
            return Err(invalid(
                "send at most one Idempotency-Key header".to_owned(),
            ));
        }
        IdempotencyKey::parse(value.as_bytes())
            .map(|key| Self(Some(key)))
            .map_err(|e| invalid(e.to_string()))
    }
}

impl Idempotency {
    /// The id of the entity a create makes: derived from the key (so a raced retry decides on
    /// the same stream), random without one.
    fn new_id(&self, route: &str, path_ids: &[&[u8]]) -> Uuid {
        self.0
            .as_ref()
            .map_or_else(Uuid::new_v4, |key| key.entity_id(route, path_ids))
    }

    /// A create command. With a key its id derives from the route, its path ids and the key,
    /// and its request hash from the body: a retry with the same body answers with the first
    /// outcome, one with another body is 409 `idempotency_conflict`. Without a key it is
    /// `fallback` (each request a new command, unless the route has a natural identity).
    fn command(
        &self,
        route: &str,
        path_ids: &[&[u8]],
        body: &Value,
        streams: Vec<StreamName>,
        fallback: impl FnOnce(Vec<StreamName>) -> CommandSpec,
    ) -> CommandSpec {
        match &self.0 {
            None => fallback(streams),
            Some(key) => CommandSpec {
                id: key.command_id(route, path_ids),
                request_hash: sha256(body.to_string().as_bytes()),
                nonce: None,
                streams,
                actor: Actor::Admin,
                key_id: None,
            },
        }
    }
}

fn enterprise_error(e: EnterpriseRejection) -> ApiError {
    let message = e.to_string();
    match e {
        EnterpriseRejection::NotFound | EnterpriseRejection::KeyNotFound => {
            ApiError::new(ErrorCode::NotFound, message)
        }
        EnterpriseRejection::AlreadyExists | EnterpriseRejection::KeyAlreadyRegistered => {
            ApiError::new(ErrorCode::AlreadyExists, message)
        }
        EnterpriseRejection::TooManyKeys => ApiError::new(ErrorCode::TooManyKeys, message),
        EnterpriseRejection::Input(e) => ApiError::input(e),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CreateEnterprise {
    name: String,
    #[serde(default)]
    oes_license: bool,
}

async fn create_enterprise(
    _: Admin,
    idempotency: Idempotency,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request: CreateEnterprise = parse(&body)?;
    const ROUTE: &str = "create-enterprise";
    let id = idempotency.new_id(ROUTE, &[]);
    let stream = enterprise_stream(id);
    let spec = idempotency.command(ROUTE, &[], &body, vec![stream.clone()], |streams| {
        admin_command(ROUTE, id, &body, streams)
    });
    run(&state, &request_id, spec, |loaded, at| {
        let command = EnterpriseCommand::Create {
            enterprise_id: id,
            name: request.name.clone(),
            oes_license: request.oes_license,
        };
        on_stream(
            loaded,
            &stream,
            |current| current.decide(command, at).map_err(enterprise_error),
            enterprise_reply,
        )
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct SetLicense {
    oes_license: bool,
}

async fn set_license(
    _: Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(e): Path<Uuid>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request: SetLicense = parse(&body)?;
    let stream = enterprise_stream(e);
    let spec = admin_command("set-license", Uuid::new_v4(), &body, vec![stream.clone()]);
    run(&state, &request_id, spec, |loaded, at| {
        on_stream(
            loaded,
            &stream,
            |current| {
                current
                    .decide(
                        EnterpriseCommand::SetLicense {
                            oes_license: request.oes_license,
                        },
                        at,
                    )
                    .map_err(enterprise_error)
            },
            enterprise_reply,
        )
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CreateUserRequest {
    name: String,
    enterprise_ids: Vec<Uuid>,
    #[serde(default)]
    auditor: bool,
}

async fn create_user(
    _: Admin,
    idempotency: Idempotency,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request: CreateUserRequest = parse(&body)?;
    const ROUTE: &str = "create-user";
    let user_id = idempotency.new_id(ROUTE, &[]);
    let (token, token_hash) = random_token(user_id);
    let stream = user_stream(user_id);
    let mut streams = vec![stream.clone()];
    streams.extend(request.enterprise_ids.iter().map(|e| enterprise_stream(*e)));
    let spec = idempotency.command(ROUTE, &[], &body, streams, |streams| {
        admin_command(ROUTE, user_id, &body, streams)
    });
    let (response, replayed) = run_replayable(&state, &request_id, spec, |loaded, at| {
        let enterprises_exist = request.enterprise_ids.iter().all(|e| {
            loaded
                .aggregate::<Enterprise>(&enterprise_stream(*e))
                .record()
                .is_some()
        });
        let command = CreateUser {
            user_id,
            name: request.name.clone(),
            token_hash,
            enterprise_ids: request.enterprise_ids.clone(),
            auditor: request.auditor,
            enterprises_exist,
        };
        // The clear token is not part of the recorded outcome: it is shown once, below.
        on_stream(
            loaded,
            &stream,
            |current| current.decide_create(command, at).map_err(user_error),
            user_reply,
        )
    })
    .await?;
    // A replay (same Idempotency-Key and body) answers with the recorded outcome, which never
    // holds the token: the token made for this request is not the user's, and the user's own
    // is never shown twice. An operator who lost it rotates it (`POST users/{id}/token`).
    if replayed {
        return Ok(response);
    }
    with_token(response, &token).await
}

/// A new access token for `user_id` from the system's randomness, and its SHA-256.
fn random_token(user_id: Uuid) -> (String, [u8; 32]) {
    let mut secret = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut secret);
    new_token(user_id, secret)
}

/// `POST users/{id}/disable` and `…/enable`: every route refuses a disabled user's token at once
/// (access is decided on the user's stream, freshly loaded).
async fn set_user_enabled(
    state: &AppState,
    request_id: &RequestId,
    user_id: Uuid,
    enabled: bool,
) -> Result<Response, ApiError> {
    let stream = user_stream(user_id);
    let kind = if enabled {
        "enable-user"
    } else {
        "disable-user"
    };
    let spec = admin_command(
        kind,
        Uuid::new_v4(),
        &json!({ "userId": user_id }),
        vec![stream.clone()],
    );
    run(state, request_id, spec, |loaded, at| {
        on_stream(
            loaded,
            &stream,
            |current| current.decide_enabled(enabled, at).map_err(user_error),
            user_reply,
        )
    })
    .await
}

async fn disable_user(
    _: Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(user_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    set_user_enabled(&state, &request_id, user_id, false).await
}

async fn enable_user(
    _: Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(user_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    set_user_enabled(&state, &request_id, user_id, true).await
}

/// `POST users/{id}/token`: a new token, shown once in `accessToken`; the old one is refused
/// from the next request on.
async fn rotate_token(
    _: Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(user_id): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (token, token_hash) = random_token(user_id);
    let stream = user_stream(user_id);
    let spec = admin_command(
        "rotate-token",
        Uuid::new_v4(),
        &json!({ "userId": user_id }),
        vec![stream.clone()],
    );
    let response = run(&state, &request_id, spec, |loaded, at| {
        on_stream(
            loaded,
            &stream,
            |current| {
                current
                    .decide_rotate_token(token_hash, at)
                    .map_err(user_error)
            },
            user_reply,
        )
    })
    .await?;
    with_token(response, &token).await
}

/// Adds the one-time `accessToken` to a successful user creation or token rotation: the
/// recorded `{"user"}` becomes `{"user", "accessToken"}`.
async fn with_token(response: Response, token: &str) -> Result<Response, ApiError> {
    if !response.status().is_success() {
        return Ok(response);
    }
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .map_err(ApiError::internal)?;
    let value: Value = serde_json::from_slice(&bytes).map_err(ApiError::internal)?;
    let recorded: contract::UserReply = reads::checked(value)?;
    let reply = contract::UserTokenReply {
        user: recorded.user,
        access_token: token.to_owned(),
    };
    let mut response = axum::response::IntoResponse::into_response(Json(reply));
    *response.status_mut() = parts.status;
    for (name, header) in parts
        .headers
        .iter()
        .filter(|(n, _)| *n != axum::http::header::CONTENT_LENGTH)
    {
        response.headers_mut().insert(name, header.clone());
    }
    Ok(response)
}

fn user_error(e: UserRejection) -> ApiError {
    let message = e.to_string();
    match e {
        UserRejection::AlreadyExists => ApiError::new(ErrorCode::AlreadyExists, message),
        UserRejection::NotFound => ApiError::not_found("user"),
        UserRejection::EnterpriseNotFound => ApiError::new(ErrorCode::EnterpriseNotFound, message),
        UserRejection::TooManyEnterprises => ApiError::new(ErrorCode::InvalidRequest, message),
        UserRejection::Input(e) => ApiError::input(e),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RegisterKey {
    public_key: String,
}

async fn register_key(
    _: Admin,
    idempotency: Idempotency,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(e): Path<Uuid>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request: RegisterKey = parse(&body)?;
    let key = schemas::signing::PublicKey::parse_hex(&request.public_key)
        .map_err(|err| ApiError::new(ErrorCode::from(&err), format!("publicKey: {err}")))?;
    const ROUTE: &str = "register-key";
    let key_id = idempotency.new_id(ROUTE, &[e.as_bytes()]);
    let stream = enterprise_stream(e);
    let spec = idempotency.command(
        ROUTE,
        &[e.as_bytes()],
        &body,
        vec![stream.clone()],
        |streams| admin_command(ROUTE, key_id, &body, streams),
    );
    run(&state, &request_id, spec, |loaded, at| {
        let command = EnterpriseCommand::RegisterKey {
            key_id,
            public_key: key.as_bytes(),
        };
        on_stream::<Enterprise, _>(
            loaded,
            &stream,
            |current| current.decide(command, at).map_err(enterprise_error),
            |after| key_reply(after, e, key_id),
        )
    })
    .await
}

async fn revoke_key(
    _: Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path((e, key_id)): Path<(Uuid, Uuid)>,
) -> Result<Response, ApiError> {
    let stream = enterprise_stream(e);
    let spec = admin_command(
        "revoke-key",
        Uuid::new_v4(),
        &json!({ "keyId": key_id }),
        vec![stream.clone()],
    );
    run(&state, &request_id, spec, |loaded, at| {
        on_stream::<Enterprise, _>(
            loaded,
            &stream,
            |current| {
                current
                    .decide(EnterpriseCommand::RevokeKey { key_id }, at)
                    .map_err(enterprise_error)
            },
            |after| key_reply(after, e, key_id),
        )
    })
    .await
}

/// Parses a window length in minutes: a JSON number ≥ 0 (fractions allowed) or null.
fn window(value: Option<&Value>, field: &str) -> Result<Option<WindowMinutes>, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorCode::InvalidWindow,
            format!("{field} must be a number of minutes ≥ 0, or null"),
        )
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let minutes: Decimal = n.to_string().parse().map_err(|_| bad())?;
            WindowMinutes::parse(minutes).map(Some).map_err(|_| bad())
        }
        Some(_) => Err(bad()),
    }
}

fn partner_error(e: PartnerRejection) -> ApiError {
    let message = e.to_string();
    match e {
        PartnerRejection::AlreadyExists => ApiError::new(ErrorCode::AlreadyExists, message),
        PartnerRejection::NotFound => ApiError::not_found("partner"),
        PartnerRejection::Input(e) => ApiError::input(e),
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct RegisterPartner {
    name: String,
    #[serde(default)]
    broker: bool,
    #[serde(default)]
    #[schema(value_type = Option<f64>, minimum = 0.0)]
    client_dispute_window_minutes: Option<Value>,
    #[serde(default)]
    #[schema(value_type = Option<f64>, minimum = 0.0)]
    top_up_window_minutes: Option<Value>,
    #[serde(default)]
    #[schema(value_type = super::contract::AmountFormat)]
    amount_format: AmountFormat,
    /// The shape of connection key the partner's clients present (default `token`; ADR 0011).
    #[serde(default)]
    #[schema(value_type = Option<super::contract::ConnectionKeySchema>)]
    connection_key_schema: Option<String>,
}

/// A partner's `connectionKeySchema`: one of the known schema names (an unknown one is 422
/// `unsupported_connection_key_schema`, as on connect).
fn key_schema(name: &str) -> Result<ConnectionKeySchema, ApiError> {
    const FIELD: &str = "connectionKeySchema";
    ConnectionKeySchema::parse_field(FIELD, name)
        .map_err(|e| super::network::connection_key_error(e, FIELD))
}

async fn register_partner(
    _: Admin,
    idempotency: Idempotency,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(e): Path<Uuid>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request: RegisterPartner = parse(&body)?;
    let client_dispute_window = window(
        request.client_dispute_window_minutes.as_ref(),
        "clientDisputeWindowMinutes",
    )?;
    let top_up_window = window(request.top_up_window_minutes.as_ref(), "topUpWindowMinutes")?;
    let connection_key_schema = request
        .connection_key_schema
        .as_deref()
        .map(key_schema)
        .transpose()?
        .unwrap_or_default();
    let partner_id = partner_id_of(e);
    let (enterprise, stream) = (enterprise_stream(e), partner_stream(partner_id));
    const ROUTE: &str = "register-partner";
    let spec = idempotency.command(
        ROUTE,
        &[e.as_bytes()],
        &body,
        vec![enterprise.clone(), stream.clone()],
        |streams| admin_command(ROUTE, Uuid::new_v4(), &body, streams),
    );
    run(&state, &request_id, spec, |loaded, at| {
        require_enterprise(loaded, &enterprise)?;
        let command = PartnerCommand::Register {
            partner_id,
            enterprise_id: e,
            name: request.name.clone(),
            broker: request.broker,
            client_dispute_window,
            top_up_window,
            amount_format: request.amount_format,
            connection_key_schema,
        };
        on_stream(
            loaded,
            &stream,
            |current| current.decide(command, at).map_err(partner_error),
            partner_reply,
        )
    })
    .await
}

/// A field that may be absent (unchanged), `null` (cleared) or a value.
fn tri_state<'a>(body: &'a Value, field: &str) -> Option<Option<&'a Value>> {
    body.get(field)
        .map(|v| if v.is_null() { None } else { Some(v) })
}

async fn update_partner(
    _: Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(partner_id): Path<Uuid>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let allowed = [
        "active",
        "clientDisputeWindowMinutes",
        "topUpWindowMinutes",
        "connectionKeySchema",
    ];
    if let Some(unknown) = body
        .as_object()
        .and_then(|o| o.keys().find(|k| !allowed.contains(&k.as_str())))
    {
        return Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("invalid request: unknown field `{unknown}`"),
        ));
    }
    let active = match body.get("active") {
        None => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "active must be true or false",
            ))
        }
    };
    let dispute = tri_state(&body, "clientDisputeWindowMinutes")
        .map(|v| window(v, "clientDisputeWindowMinutes"))
        .transpose()?;
    let top_up = tri_state(&body, "topUpWindowMinutes")
        .map(|v| window(v, "topUpWindowMinutes"))
        .transpose()?;
    let connection_key_schema = match body.get("connectionKeySchema") {
        None => None,
        Some(Value::String(name)) => Some(key_schema(name)?),
        Some(_) => {
            return Err(ApiError::new(
                ErrorCode::InvalidRequest,
                "connectionKeySchema must be a schema name (token, tokenAndSignature, \
                 apiKeyAndSecret, clearloop)",
            )
            .with_detail("field", "connectionKeySchema".into()))
        }
    };
    let stream = partner_stream(partner_id);
    let spec = admin_command(
        "update-partner",
        Uuid::new_v4(),
        &body,
        vec![stream.clone()],
    );
    run(&state, &request_id, spec, |loaded, at| {
        let command = PartnerCommand::Update {
            active,
            client_dispute_window: dispute,
            top_up_window: top_up,
            connection_key_schema,
        };
        on_stream(
            loaded,
            &stream,
            |current| current.decide(command, at).map_err(partner_error),
            partner_reply,
        )
    })
    .await
}

async fn register_client(
    _: Admin,
    idempotency: Idempotency,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(e): Path<Uuid>,
) -> Result<Response, ApiError> {
    let (enterprise, stream) = (enterprise_stream(e), client_stream(e));
    const ROUTE: &str = "register-client";
    // The route takes no body: a key's request hash is that of `{}`.
    let spec = idempotency.command(
        ROUTE,
        &[e.as_bytes()],
        &json!({}),
        vec![enterprise.clone(), stream.clone()],
        |streams| admin_command(ROUTE, client_id_of(e), &json!({}), streams),
    );
    run(&state, &request_id, spec, |loaded, at| {
        require_enterprise(loaded, &enterprise)?;
        let already = |ClientRejection::AlreadyExists| {
            ApiError::new(
                ErrorCode::AlreadyExists,
                "the enterprise already has a client record",
            )
        };
        on_stream::<Client, _>(
            loaded,
            &stream,
            |current| current.decide_register(e, at).map_err(already),
            |after| {
                Ok(contract::ClientReply {
                    client: views::client(recorded(after.record(), "client")?),
                })
            },
        )
    })
    .await
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct DepositRequest {
    currency: String,
    quantity: String,
    external_id: String,
}

async fn deposit(
    _: Admin,
    idempotency: Idempotency,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(e): Path<Uuid>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let request: DepositRequest = parse(&body)?;
    let currency = CurrencyCode::parse(&request.currency)
        .map_err(|err| ApiError::new(ErrorCode::from(&err), format!("currency: {err}")))?;
    let decimals = state
        .currencies
        .decimals_of(&currency)
        .map_err(|err| ApiError::new(ErrorCode::from(&err), err.to_string()))?;
    let quantity = parse_amount(&request.quantity, AmountFormat::BaseUnits, decimals)
        .map_err(|err| ApiError::new(ErrorCode::from(&err), format!("quantity: {err}")))?;
    let (enterprise, stream) = (enterprise_stream(e), custody_stream(e));
    // Idempotent on externalId: without a key, the command's identity is the enterprise and
    // externalId; with one, the key's (and the custody stream still refuses a second deposit
    // under the same externalId with another amount).
    const ROUTE: &str = "deposit";
    let spec = idempotency.command(
        ROUTE,
        &[e.as_bytes()],
        &body,
        vec![enterprise.clone(), stream.clone()],
        |streams| CommandSpec {
            id: CommandId::derive(ROUTE, &[e.as_bytes(), request.external_id.as_bytes()]),
            request_hash: sha256(format!("{}:{quantity}", currency.as_str()).as_bytes()),
            nonce: None,
            streams,
            actor: Actor::Admin,
            key_id: None,
        },
    );
    let deposit_id = idempotency.new_id(ROUTE, &[e.as_bytes()]);
    run(&state, &request_id, spec, |loaded, at| {
        require_enterprise(loaded, &enterprise)?;
        let decide = |custody: &Custody| {
            custody
                .decide_deposit(
                    e,
                    deposit_id,
                    &request.external_id,
                    currency.clone(),
                    quantity,
                    at,
                )
                .map_err(deposit_error)
        };
        let view = |after: &Custody| {
            let d = recorded(after.deposits.get(&request.external_id), "deposit")?;
            Ok(contract::DepositReply {
                deposit: contract::Deposit {
                    id: d.deposit_id,
                    enterprise_id: e,
                    external_id: request.external_id.clone(),
                    currency: d.currency.as_str().to_owned(),
                    quantity: d.quantity.to_string(),
                    created_at: views::time(d.at),
                },
            })
        };
        on_stream(loaded, &stream, decide, view)
    })
    .await
}

fn deposit_error(e: DepositRejection) -> ApiError {
    let message = e.to_string();
    match e {
        DepositRejection::ExistsWithDifferentAmount(_) => {
            ApiError::new(ErrorCode::IdempotencyConflict, message)
        }
        DepositRejection::Money(m) => ApiError::new(ErrorCode::from(&m), message),
        DepositRejection::NotPositive => ApiError::new(ErrorCode::InvalidRequest, message),
        DepositRejection::Input(e) => ApiError::input(e),
    }
}

async fn currencies(_: Admin, State(state): State<AppState>) -> Json<contract::CurrencyTable> {
    Json(contract::CurrencyTable {
        currencies: state
            .currencies
            .iter()
            .map(|(code, decimals)| contract::Currency {
                code: code.as_str().to_owned(),
                decimals: u32::from(decimals),
            })
            .collect(),
    })
}
