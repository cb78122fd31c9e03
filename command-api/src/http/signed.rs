//! Signed requests over HTTP (docs/api/signatures.md), in one place for every signed route and
//! its `…/signing` twin: `Signed<R>` extracts a request of route `R` checked in the documented
//! order, and `signing::<R>` is the twin's whole handler.
//!
//! The order (docs/api/guide.md): the token (401), the route's access checks on the current
//! streams (401/403, and what the route refuses before reading a body, e.g. 404 for another
//! client's connection), then the body — within `R::MAX` bytes and `MAX_JSON_DEPTH` — parsed into `R::Request` (400 naming the field), the route's own rules
//! (`R::validate`), the signing envelope and payload-equals-body with the path ids the route
//! adds (400), and the signature under the enterprise's active keys (401). A nonce used before
//! with another payload is refused when the command runs (`Signed::spec` claims it; 400
//! `nonce_reused`), as is a key revoked meanwhile (`Signed::recheck`).

use std::future::Future;

use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::Json;
use events::codec::Actor;
use events::domain::enterprise::Enterprise;
use events::domain::ids::signed_command_id;
use events::domain::limits::MAX_BODY_BYTES_DEFAULT;
use events::domain::{CommandId, StreamName};
use events::store::{Loaded, NonceClaim};
use schemas::signing::{signing_payload, PublicKey, SignedRequest, SigningError};
use serde::de::DeserializeOwned;
use serde_json::Value;
use uuid::Uuid;

use super::auth::{self, Access, Caller, Role};
use super::body::{parse, read_json};
use super::command::CommandSpec;
use super::contract;
use super::error::{ApiError, ErrorCode};
use crate::state::AppState;

/// The ids of the request path a route adds to its payload (docs/api/signatures.md).
pub type PathIds = Vec<(&'static str, String)>;

/// The path parameters of a signed route: the enterprise first, then the object's id, if any.
pub trait RoutePath: DeserializeOwned + Copy + Send + Sync + 'static {
    /// The enterprise the route acts for: whose keys verify, whose nonces count.
    fn enterprise(&self) -> Uuid;
}

impl RoutePath for Uuid {
    fn enterprise(&self) -> Uuid {
        *self
    }
}

impl RoutePath for (Uuid, Uuid) {
    fn enterprise(&self) -> Uuid {
        self.0
    }
}

/// A signed route: who may call it, what it checks before its body is read, its fields and
/// their rules, and the path ids its payload adds. Implemented by a marker type per route; its
/// twin uses the same one, so the twin refuses what the route refuses.
pub trait SignedRoute: Send + Sync + 'static {
    /// Whose record the caller needs (docs/api/guide.md, access checks).
    const ROLE: Role;
    /// The route's body limit in bytes.
    const MAX: usize = MAX_BODY_BYTES_DEFAULT;
    /// The path parameters.
    type Path: RoutePath;
    /// The route's own fields: the body without `nonce`, `payload` and `signature`.
    type Request: DeserializeOwned + Send;
    /// What the checks before the body found, for `validate`.
    type Found: Send;
    /// The request as the route passes it on: validated, in the domain's terms.
    type Valid: Send;

    /// Streams the access check loads besides the access streams, in the same read.
    fn preload(_path: Self::Path) -> Vec<StreamName> {
        Vec::new()
    }

    /// What the route refuses before its body is read, once access passed on `loaded` (the
    /// access streams and `preload`'s).
    fn before_body(
        access: &Access,
        loaded: &Loaded,
        path: Self::Path,
    ) -> Result<Self::Found, ApiError>;

    /// The fields' rules beyond their types (400, 404, 422), and the path ids the payload adds.
    /// `fields` is the body as sent, without the signing envelope.
    fn validate(
        state: &AppState,
        path: Self::Path,
        found: Self::Found,
        request: Self::Request,
        fields: &Value,
    ) -> impl Future<Output = Result<(Self::Valid, PathIds), ApiError>> + Send;
}

/// A signed request of route `R` that passed every check up to the signature: who sent it, the
/// path, the validated request, and the verified signature.
pub struct Signed<R: SignedRoute> {
    pub caller: Caller,
    pub path: R::Path,
    pub request: R::Valid,
    pub signature: Verified,
}

/// A signature that verified: the request's envelope and the id of the key that accepted it.
#[derive(Clone, Debug)]
pub struct Verified {
    request: SignedRequest,
    key_id: Uuid,
}

impl Verified {
    /// The id of the enterprise key that verified the request.
    pub const fn key_id(&self) -> Uuid {
        self.key_id
    }

    pub fn nonce(&self) -> &str {
        self.request.nonce()
    }

    /// The hex signature (a connection keeps it as its `proof`).
    pub fn signature_hex(&self) -> String {
        self.request.signature().to_hex()
    }

    /// What an event keeps of the request, for auditors (docs/api/signatures.md).
    pub fn kept(&self) -> events::domain::signed::Signed {
        events::domain::signed::Signed {
            payload: self.request.payload().to_owned(),
            signature: self.signature_hex(),
            key_id: self.key_id,
        }
    }

    /// A signed command's identity: `id`, the payload's hash as the request hash, and the nonce
    /// claimed for enterprise `e` in the same transaction as the command's events.
    pub fn spec(
        &self,
        caller: &Caller,
        e: Uuid,
        id: CommandId,
        streams: Vec<StreamName>,
    ) -> CommandSpec {
        CommandSpec {
            id,
            request_hash: self.request.payload_hash(),
            nonce: Some(NonceClaim {
                scope: e.to_string(),
                nonce: self.nonce().to_owned(),
                payload_hash: self.request.payload_hash(),
            }),
            streams,
            actor: Actor::User(caller.user_id),
            key_id: Some(self.key_id),
        }
    }

    /// Re-checks, on the streams the command loaded, what was checked before it ran: access,
    /// and that the signing key is still active (a revocation in between wins).
    pub fn recheck(
        &self,
        loaded: &Loaded,
        caller: &Caller,
        e: Uuid,
        role: Role,
    ) -> Result<Access, ApiError> {
        let access = auth::check(loaded, caller, e, role)?;
        if !access
            .enterprise
            .active_keys()
            .any(|(id, _)| id == self.key_id)
        {
            return Err(ApiError::new(
                ErrorCode::InvalidSignature,
                "the signing key was revoked",
            ));
        }
        Ok(access)
    }
}

impl<R: SignedRoute> Signed<R> {
    /// The enterprise in the path.
    pub fn enterprise(&self) -> Uuid {
        self.path.enterprise()
    }

    /// The streams of the command: the access streams, then `extra`.
    pub fn streams(&self, extra: impl IntoIterator<Item = StreamName>) -> Vec<StreamName> {
        let mut streams = auth::access_streams(&self.caller, self.enterprise(), R::ROLE);
        streams.extend(extra);
        streams
    }

    /// The command of a request identified by its nonce alone (unique per enterprise).
    pub fn nonce_command(&self) -> CommandId {
        signed_command_id(self.enterprise(), self.signature.nonce())
    }

    /// The command's identity (`Verified::spec`).
    pub fn spec(&self, id: CommandId, streams: Vec<StreamName>) -> CommandSpec {
        self.signature
            .spec(&self.caller, self.enterprise(), id, streams)
    }

    /// Access and the signing key, re-checked on the command's streams (`Verified::recheck`).
    pub fn recheck(&self, loaded: &Loaded) -> Result<Access, ApiError> {
        self.signature
            .recheck(loaded, &self.caller, self.enterprise(), R::ROLE)
    }
}

fn signing_error(e: SigningError) -> ApiError {
    ApiError::new(ErrorCode::from(&e), e.to_string())
}

/// The request's own fields: the body without the signing envelope.
fn own_fields(body: &Value) -> Value {
    let mut fields = body.as_object().cloned().unwrap_or_default();
    for envelope in ["nonce", "payload", "signature"] {
        fields.remove(envelope);
    }
    Value::Object(fields)
}

/// The id of the enterprise key that verifies the request, or 401.
fn verify(enterprise: &Enterprise, signed: &SignedRequest) -> Result<Uuid, ApiError> {
    let keys: Vec<(Uuid, PublicKey)> = enterprise
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

/// What a route and its twin both check, in order: the token, the path, access and what the
/// route refuses before the body, then the body, its fields and their rules; with the body and
/// the path ids, for the signature's checks or the twin's payload.
struct Checked<R: SignedRoute> {
    caller: Caller,
    path: R::Path,
    access: Access,
    request: R::Valid,
    body: Value,
    path_ids: PathIds,
}

impl<R: SignedRoute> Checked<R> {
    /// The checks, then `last` (the signature, or the twin's payload) on what they gave.
    async fn from_request<T>(
        request: Request,
        state: &AppState,
        last: impl Fn(&Self) -> Result<T, ApiError>,
    ) -> Result<(Self, T), Response> {
        let (mut parts, body) = request.into_parts();
        let (caller, path) = caller_and_path::<R>(&mut parts, state).await?;
        let request = Request::from_parts(parts, body);
        Self::read(request, state, caller, path, last)
            .await
            .map_err(IntoResponse::into_response)
    }

    /// Reads the body (its refusal waits its turn, after the access checks), then checks on
    /// the cached states of the streams when the cache holds them all — the command re-checks
    /// access and the key on the states its append verifies, so an acceptance needs no read.
    /// A refusal must stand on fresh states: on any, or on a cache miss, the checks run again
    /// on a fresh load.
    async fn read<T>(
        request: Request,
        state: &AppState,
        caller: Caller,
        path: R::Path,
        last: impl Fn(&Self) -> Result<T, ApiError>,
    ) -> Result<(Self, T), ApiError> {
        let body = read_json(request, R::MAX).await;
        let mut streams = auth::access_streams(&caller, path.enterprise(), R::ROLE);
        streams.extend(R::preload(path));
        if let Some(loaded) = events::store::cached(&state.store, &streams) {
            if let Ok(checked) = Self::check(state, &caller, path, &loaded, &body).await {
                if let Ok(last) = last(&checked) {
                    return Ok((checked, last));
                }
            }
        }
        let loaded = auth::load(state, &streams).await?;
        let checked = Self::check(state, &caller, path, &loaded, &body).await?;
        let last = last(&checked)?;
        Ok((checked, last))
    }

    async fn check(
        state: &AppState,
        caller: &Caller,
        path: R::Path,
        loaded: &Loaded,
        body: &Result<Value, ApiError>,
    ) -> Result<Self, ApiError> {
        let access = auth::check(loaded, caller, path.enterprise(), R::ROLE)?;
        let found = R::before_body(&access, loaded, path)?;
        let body = body.clone()?;
        let fields = own_fields(&body);
        let parsed: R::Request = parse(&fields)?;
        let (valid, path_ids) = R::validate(state, path, found, parsed, &fields).await?;
        Ok(Self {
            caller: caller.clone(),
            path,
            access,
            request: valid,
            body,
            path_ids,
        })
    }
}

/// The caller's token (401 first, as for every network route), then the path parameters.
async fn caller_and_path<R: SignedRoute>(
    parts: &mut Parts,
    state: &AppState,
) -> Result<(Caller, R::Path), Response> {
    let caller = Caller::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    let Path(path) = Path::<R::Path>::from_request_parts(parts, state)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok((caller, path))
}

impl<R: SignedRoute> FromRequest<AppState> for Signed<R> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (checked, (signed, key_id)) = Checked::<R>::from_request(request, state, |c| {
            let signed = SignedRequest::parse(&c.body, &c.path_ids).map_err(signing_error)?;
            let key_id = verify(&c.access.enterprise, &signed)?;
            Ok((signed, key_id))
        })
        .await?;
        Ok(Self {
            caller: checked.caller,
            path: checked.path,
            request: checked.request,
            signature: Verified {
                request: signed,
                key_id,
            },
        })
    }
}

/// The canonical payload a twin answers, after the checks of its route.
pub struct SigningPayload<R: SignedRoute>(String, std::marker::PhantomData<R>);

impl<R: SignedRoute> FromRequest<AppState> for SigningPayload<R> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (_, payload) = Checked::<R>::from_request(request, state, |c| {
            signing_payload(&c.body, &c.path_ids).map_err(signing_error)
        })
        .await?;
        Ok(Self(payload, std::marker::PhantomData))
    }
}

/// The `…/signing` twin of route `R` (GET with a JSON body, or POST): the route's access checks
/// and field rules, then `{"payload": "<canonical string>"}`. It records nothing and consumes no
/// nonce.
pub async fn signing<R: SignedRoute>(twin: SigningPayload<R>) -> Json<contract::SigningPayload> {
    Json(contract::SigningPayload { payload: twin.0 })
}
