//! Authentication: bearer tokens (stored only as SHA-256), the admin token, and the access
//! checks for network routes, decided by `events::domain::access` on freshly loaded streams —
//! so a user, key or licence change takes effect on the very next request.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use events::domain::access::{self, AccessRejection, Scope};
use events::domain::client::Client;
use events::domain::enterprise::Enterprise;
use events::domain::partner::{partner_id_of, Partner};
use events::domain::user::User;
use events::domain::StreamName;
use events::store::Loaded;
use uuid::Uuid;

use super::error::{ApiError, ErrorCode};
use crate::state::{sha256, AppState};

/// Prefix of every user access token: `st_<user id>_<secret>`.
const TOKEN_PREFIX: &str = "st_";

/// The caller of a network route, as its token claims (not yet checked against the user).
#[derive(Clone, Debug)]
pub struct Caller {
    pub user_id: Uuid,
    pub token_hash: [u8; 32],
}

pub(super) fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthenticated,
        "missing or unknown access token",
    )
}

/// A new access token for `user_id` from 32 random bytes; returns the token and its digest.
pub fn new_token(user_id: Uuid, secret: [u8; 32]) -> (String, [u8; 32]) {
    let token = format!("{TOKEN_PREFIX}{}_{}", user_id.simple(), hex::encode(secret));
    let hash = sha256(token.as_bytes());
    (token, hash)
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or_else(unauthenticated)?;
        let user = token
            .strip_prefix(TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('_'))
            .map(|(user, _)| user);
        let user_id = user
            .and_then(|u| Uuid::try_parse(u).ok())
            .ok_or_else(unauthenticated)?;
        Ok(Self {
            user_id,
            token_hash: sha256(token.as_bytes()),
        })
    }
}

/// The operator holding the admin token.
#[derive(Clone, Copy, Debug)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = bearer(parts).map(|t| sha256(t.as_bytes()));
        match (state.admin_token_hash, presented) {
            (Some(expected), Some(presented)) if expected == presented => Ok(Admin),
            _ => Err(ApiError::new(
                ErrorCode::Unauthenticated,
                "missing or wrong admin token",
            )),
        }
    }
}

/// Which record a network route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Partner,
    Client,
}

pub use events::domain::stream::of::{
    client as client_stream, connection as connection_stream, custody as custody_stream,
    enterprise as enterprise_stream, partner as partner_stream, user as user_stream,
};

/// A stream named by a UUID.
pub fn stream(category: &'static str, id: Uuid) -> StreamName {
    events::domain::stream::named(category, id)
}

/// The streams every network command of `role` on `enterprise_id` loads for its access check.
pub fn access_streams(caller: &Caller, enterprise_id: Uuid, role: Role) -> Vec<StreamName> {
    let record = match role {
        Role::Partner => partner_stream(partner_id_of(enterprise_id)),
        Role::Client => client_stream(enterprise_id),
    };
    vec![
        user_stream(caller.user_id),
        enterprise_stream(enterprise_id),
        record,
    ]
}

/// The access-relevant state of one network request.
#[derive(Clone, Debug)]
pub struct Access {
    pub enterprise: Enterprise,
    pub partner: Partner,
    pub client: Client,
}

/// Runs the access checks of docs/api/guide.md on loaded streams.
pub fn check(
    loaded: &Loaded,
    caller: &Caller,
    enterprise_id: Uuid,
    role: Role,
) -> Result<Access, ApiError> {
    let user: User = loaded.aggregate(&user_stream(caller.user_id));
    let enterprise: Enterprise = loaded.aggregate(&enterprise_stream(enterprise_id));
    let partner: Partner = loaded.aggregate(&partner_stream(partner_id_of(enterprise_id)));
    let client: Client = loaded.aggregate(&client_stream(enterprise_id));
    let scope = match role {
        Role::Partner => Scope::Partner(&partner),
        Role::Client => Scope::Client(&client),
    };
    access::authorize(&user, &caller.token_hash, enterprise_id, &enterprise, scope)
        .map_err(access_error)?;
    Ok(Access {
        enterprise,
        partner,
        client,
    })
}

/// Loads streams and decodes them for a decision or a check.
pub async fn load(state: &AppState, streams: &[StreamName]) -> Result<Loaded, ApiError> {
    events::store::load(&state.store, streams)
        .await
        .map_err(ApiError::internal)
}

/// Loads the access streams and checks them (for queries and before signed commands).
pub async fn authorize(
    state: &AppState,
    caller: &Caller,
    enterprise_id: Uuid,
    role: Role,
) -> Result<Access, ApiError> {
    authorize_with(state, caller, enterprise_id, role, &[])
        .await
        .map(|(access, _)| access)
}

/// As `authorize`, loading `extra` streams in the same read (what validation needs to see).
pub async fn authorize_with(
    state: &AppState,
    caller: &Caller,
    enterprise_id: Uuid,
    role: Role,
    extra: &[StreamName],
) -> Result<(Access, Loaded), ApiError> {
    let mut streams = access_streams(caller, enterprise_id, role);
    streams.extend_from_slice(extra);
    let loaded = load(state, &streams).await?;
    let access = check(&loaded, caller, enterprise_id, role)?;
    Ok((access, loaded))
}

pub fn access_error(rejection: AccessRejection) -> ApiError {
    let message = rejection.to_string();
    match rejection {
        AccessRejection::Unauthenticated => ApiError::new(ErrorCode::Unauthenticated, message),
        AccessRejection::UserDisabled => ApiError::new(ErrorCode::UserDisabled, message),
        AccessRejection::NotMember => ApiError::new(ErrorCode::NotAMember, message),
        AccessRejection::NoLicense => ApiError::new(ErrorCode::NoOesLicense, message),
        AccessRejection::NoPartner => ApiError::new(ErrorCode::NoPartnerRecord, message),
        AccessRejection::PartnerInactive => ApiError::new(ErrorCode::PartnerInactive, message),
        AccessRejection::NoClient => ApiError::new(ErrorCode::NoClientRecord, message),
    }
}
