//! The OpenAPI 3.1 document of the HTTP API: every route of the admin, network and audit trees
//! with its parameters, request body and responses (each error status with the SPEC error body),
//! the bearer security scheme and every error code (`x-error-codes`, from `ErrorCode::ALL`).
//! Served at `GET /api/openapi.json` and rendered at `/api/docs` (Swagger UI, bundled in the
//! binary); committed as `schemas/openapi.json`, which a test keeps equal to what this module
//! builds (`SETTLE_BLESS=1 cargo test -p command-api openapi` regenerates it).
//!
//! Request bodies are the handlers' own request structs (`ToSchema` derived where they are
//! declared); replies are the types of `contract.rs`. The `#[utoipa::path]` declarations sit on
//! marker functions below, one per route, so the handlers stay as they are.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use axum::http::header::CONTENT_TYPE;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::codes::ErrorCode;
use super::contract::*;
use crate::state::AppState;

/// Where the document is served, and the rendered reference.
pub const DOCUMENT_PATH: &str = "/api/openapi.json";
pub const DOCS_PATH: &str = "/api/docs";

/// The name of the bearer security scheme.
const BEARER: &str = "bearer";

/// `schemas/openapi.json`, relative to the command-api crate.
pub const COMMITTED_PATH: &str = "../schemas/openapi.json";

const DESCRIPTION: &str = "\
The HTTP API of the off-exchange settlement engine: the admin API (`/api/admin/v1`, admin token), \
the network API for partners and clients (`/api/network`, user tokens, Ed25519-signed commands) \
and the audit API (`/api/audit/v1`, admin token or an auditor's token).

Every request carries `Authorization: Bearer <token>`. Every response carries `X-Request-Id`; \
every write answers with its position token in `X-Event-Position`, and a read sent with \
`X-Min-Position: <token>` waits (bounded) until the read models reflect that write.

Signed network commands carry `nonce`, `payload` and `signature` besides their own fields; each \
has a `…/signing` twin (GET with a JSON body, or POST) that answers the canonical `payload` to \
sign.

Every 4xx and 5xx has the body `{\"error\", \"code\", \"requestId\"}` (`ErrorBody`). The codes, \
with their statuses and meanings, are listed below and in `x-error-codes`.
";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Settlement engine API",
        description = DESCRIPTION,
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    paths(
        paths::create_enterprise,
        paths::set_license,
        paths::create_user,
        paths::disable_user,
        paths::enable_user,
        paths::rotate_token,
        paths::register_key,
        paths::revoke_key,
        paths::register_partner,
        paths::update_partner,
        paths::register_client,
        paths::deposit,
        paths::currencies,
        paths::audit_reads,
        paths::admin_close_dispute,
        paths::admin_retry_settlement,
        paths::configure_webhook,
        paths::webhook_public_key,
        paths::webhook_deliveries,
        paths::connect,
        paths::list_client_connections,
        paths::connect_signing_get,
        paths::connect_signing_post,
        paths::get_client_connection,
        paths::update_connection,
        paths::update_connection_signing_get,
        paths::update_connection_signing_post,
        paths::allocate,
        paths::allocate_signing_get,
        paths::allocate_signing_post,
        paths::deallocate,
        paths::deallocate_signing_get,
        paths::deallocate_signing_post,
        paths::list_client_allocations,
        paths::get_client_allocation,
        paths::client_balances,
        paths::list_partner_connections,
        paths::get_partner_connection,
        paths::list_partner_allocations,
        paths::get_partner_allocation,
        paths::partner_balances,
        paths::stage_settlement_v2,
        paths::perform_settlement_v1,
        paths::list_partner_settlements,
        paths::get_partner_settlement,
        paths::settlement_signing_get,
        paths::settlement_signing_post,
        paths::list_client_settlements,
        paths::get_client_settlement,
        paths::client_settlement_transfers,
        paths::client_notifications,
        paths::partner_notifications,
        paths::partner_webhook_public_key,
        paths::client_webhook_public_key,
        paths::raise_dispute,
        paths::raise_dispute_signing_get,
        paths::raise_dispute_signing_post,
        paths::update_dispute,
        paths::update_dispute_signing_get,
        paths::update_dispute_signing_post,
        paths::close_dispute,
        paths::close_dispute_signing_get,
        paths::close_dispute_signing_post,
        paths::list_client_disputes,
        paths::list_partner_disputes,
        paths::audit_settlement_events,
        paths::audit_settlement_at,
        paths::audit_balances_at,
        paths::audit_events,
        paths::audit_chain,
        paths::audit_chain_verify,
        paths::audit_key,
    ),
    components(schemas(
        ErrorBody,
        SignedEnvelope,
        super::network::ConnectRequest,
        super::network::UpdateRequest,
        super::network::AllocationRequest,
        super::settlements::SettlementRequest,
        super::disputes::RaiseRequest,
        super::disputes::UpdateRequest,
        super::disputes::CloseRequest,
    )),
    modifiers(&Finish),
    tags(
        (name = "admin", description = "Provisioning and operator actions (`/api/admin/v1`), with the admin token."),
        (name = "network", description = "Partner and client routes (`/api/network`), with a user's token; commands are signed."),
        (name = "audit", description = "The audit API (`/api/audit/v1`): the admin token, or an auditor's token for the enterprises it is a member of."),
    ),
)]
pub struct ApiDoc;

/// The request structs of signed routes: each gets a `Signed…` component (its fields plus the
/// signing envelope) for the route and a `Signing…` one (its fields plus `nonce`) for its twin.
const SIGNED_BODIES: &[&str] = &[
    "ConnectRequest",
    "ConnectionUpdateRequest",
    "AllocationRequest",
    "SettlementRequest",
    "RaiseRequest",
    "DisputeUpdateRequest",
    "CloseRequest",
];

/// `settlementAmounts`: party `{connectionId: {currency: amount}}` or counterparty→party
/// `{sourceConnectionId: {destinationConnectionId: {currency: amount}}}` (SPEC §7).
pub(super) fn settlement_amounts_schema() -> Schema {
    let amounts = || {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::Object))
            .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String)))
            .build()
    };
    let by_destination = ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(
            amounts(),
        )))))
        .build();
    let inner = utoipa::openapi::schema::OneOfBuilder::new()
        .item(amounts())
        .item(by_destination)
        .build();
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::Object))
        .description(Some(
            "By connection id: `{currency: amount}` (party shape), or by source connection id \
             `{destinationConnectionId: {currency: amount}}` (counterparty→party shape, brokers). \
             Amounts are strings in the partner's amount format.",
        ))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::OneOf(
            inner,
        )))))
        .build()
        .into()
}

/// What `derive(OpenApi)` cannot say: the security scheme, the error responses of every
/// operation, the signed bodies, the error codes, the response headers.
struct Finish;

impl Modify for Finish {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            BEARER,
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin token (admin API, audit API), or a user's access token \
                         (network API; audit API for auditors).",
                    ))
                    .build(),
            ),
        );
        for name in SIGNED_BODIES {
            let Some(RefOr::T(Schema::Object(base))) = components.schemas.get(*name).cloned()
            else {
                panic!("the signed body {name} is not an object component");
            };
            let mut signing = base.clone();
            add_string(&mut signing, "nonce", "Unique per enterprise.");
            components.schemas.insert(
                format!("Signing{name}"),
                RefOr::T(Schema::Object(signing.clone())),
            );
            let mut signed = signing;
            add_string(
                &mut signed,
                "payload",
                "The JSON object of the request's own fields, `nonce` and the route's path ids, \
                 as a string: what the `…/signing` twin answers.",
            );
            add_string(
                &mut signed,
                "signature",
                "Hex of the 64-byte Ed25519 signature of `payload`.",
            );
            components
                .schemas
                .insert(format!("Signed{name}"), RefOr::T(Schema::Object(signed)));
        }
        let mut statuses: BTreeSet<u16> = BTreeSet::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in operations(item) {
                let wanted = error_statuses(path, method, operation);
                for status in wanted {
                    statuses.insert(status);
                    operation
                        .responses
                        .responses
                        .entry(status.to_string())
                        .or_insert_with(|| RefOr::Ref(Ref::from_response_name(error_name(status))));
                }
                for response in operation.responses.responses.values_mut() {
                    if let RefOr::T(response) = response {
                        add_headers(response, method);
                    }
                }
            }
        }
        for status in statuses {
            let mut response = ResponseBuilder::new()
                .description(error_description(status))
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build();
            add_headers(&mut response, "");
            components
                .responses
                .insert(error_name(status), RefOr::T(response));
        }
        doc.security = Some(vec![SecurityRequirement::new(BEARER, Vec::<String>::new())]);
        doc.info.description = Some(format!("{DESCRIPTION}\n{}", ErrorCode::table()));
        let codes: Vec<Value> = ErrorCode::ALL
            .iter()
            .map(|c| {
                json!({
                    "code": c.code(),
                    "status": c.status().as_u16(),
                    "statuses": c.statuses().iter().map(|s| s.as_u16()).collect::<Vec<_>>(),
                    "meaning": c.meaning(),
                })
            })
            .collect();
        let extensions = doc.extensions.get_or_insert_with(Default::default);
        extensions.merge(
            ExtensionsBuilder::new()
                .add("x-error-codes", Value::Array(codes))
                .build(),
        );
    }
}

/// Adds a required string property to an object schema.
fn add_string(object: &mut utoipa::openapi::schema::Object, name: &str, description: &str) {
    object.properties.insert(
        name.to_owned(),
        RefOr::T(Schema::Object(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .description(Some(description))
                .build(),
        )),
    );
    if !object.required.iter().any(|r| r == name) {
        object.required.push(name.to_owned());
    }
}

fn operations(item: &mut utoipa::openapi::PathItem) -> Vec<(&'static str, &mut Operation)> {
    [
        ("get", item.get.as_mut()),
        ("put", item.put.as_mut()),
        ("post", item.post.as_mut()),
        ("delete", item.delete.as_mut()),
        ("patch", item.patch.as_mut()),
    ]
    .into_iter()
    .filter_map(|(m, op)| op.map(|op| (m, op)))
    .collect()
}

fn error_name(status: u16) -> String {
    format!("Error{status}")
}

/// The error statuses an operation can answer besides those its declaration names: the edge's
/// (400 malformed request, 408, 429, 500, 503), authentication (401), and by API and shape
/// 403, 404 and 413.
fn error_statuses(path: &str, method: &str, operation: &Operation) -> BTreeSet<u16> {
    let mut statuses: BTreeSet<u16> = [400, 401, 408, 429, 500, 503].into();
    if operation.request_body.is_some() || matches!(method, "post" | "put" | "patch") {
        statuses.insert(413);
    }
    if path.starts_with("/api/network/") || path.starts_with("/api/audit/") {
        statuses.extend([403, 404]);
    } else if path.contains('{') {
        statuses.insert(404);
    }
    statuses
}

fn error_description(status: u16) -> String {
    let codes: Vec<String> = ErrorCode::ALL
        .iter()
        .filter(|c| c.statuses().iter().any(|s| s.as_u16() == status))
        .map(|c| format!("`{}`", c.code()))
        .collect();
    let reason = axum::http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    format!("{reason}; the code is one of {}.", codes.join(", "))
}

/// Every response carries `X-Request-Id`; a write's success also `X-Event-Position`.
fn add_headers(response: &mut utoipa::openapi::Response, method: &str) {
    let mut request_id =
        utoipa::openapi::header::Header::new(ObjectBuilder::new().schema_type(Type::String));
    request_id.description = Some("The request's id (also in an error body).".into());
    response.headers.insert("X-Request-Id".into(), request_id);
    if matches!(method, "post" | "put" | "patch" | "delete") {
        let mut position =
            utoipa::openapi::header::Header::new(ObjectBuilder::new().schema_type(Type::String));
        position.description = Some(
            "The write's position token, for `X-Min-Position` on later reads (commands only)."
                .into(),
        );
        response.headers.insert("X-Event-Position".into(), position);
    }
}

/// The document as a value.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// Rebuilds every object of `value` with its keys in order (whatever map serde_json uses).
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let ordered: BTreeMap<String, Value> =
                map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(ordered.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The document as pretty JSON with its keys in order: the text of `schemas/openapi.json` and
/// of `GET /api/openapi.json`.
pub fn document_json() -> String {
    let value = serde_json::to_value(document()).expect("the OpenAPI document serializes");
    let mut text =
        serde_json::to_string_pretty(&sorted(value)).expect("the OpenAPI document serializes");
    text.push('\n');
    text
}

async fn serve_document() -> Response {
    static TEXT: OnceLock<String> = OnceLock::new();
    let text = TEXT.get_or_init(document_json).clone();
    let mut response = text.into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// `GET /api/openapi.json` and the Swagger UI at `/api/docs`: no authentication.
pub fn routes() -> Router<AppState> {
    let ui: Router<AppState> = SwaggerUi::new(DOCS_PATH)
        .config(Config::new([DOCUMENT_PATH]))
        .into();
    Router::new()
        .route(DOCUMENT_PATH, get(serve_document))
        .merge(ui)
}

/// The `#[utoipa::path]` declarations, one marker per route.
#[allow(dead_code)]
mod paths {
    use uuid::Uuid;

    use super::super::contract::*;
    use super::super::{admin, disputes};

    // Parameters shared by many routes.
    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(non_snake_case)]
    pub struct Page {
        /// Items per page, 1 to 1000 (default 100).
        #[param(minimum = 1, maximum = 1000)]
        pageSize: Option<u32>,
        /// 0-based page number.
        pageNumber: Option<u32>,
        /// The `nextCursor` of the previous page (wins over `pageNumber`).
        cursor: Option<String>,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Header)]
    pub struct MinPosition {
        /// A write's `X-Event-Position`: the read waits (bounded) until it is reflected.
        #[param(rename = "X-Min-Position", nullable = false)]
        min_position: Option<String>,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Header)]
    pub struct Idempotency {
        /// 1 to 255 printable ASCII bytes: a retry with the same key and body answers as the
        /// first request; with another body it is a 409.
        #[param(rename = "Idempotency-Key", nullable = false)]
        idempotency_key: Option<String>,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(non_snake_case)]
    pub struct SettlementFilters {
        /// Comma-separated settlement ids.
        settlementIds: Option<String>,
        /// Comma-separated external ids.
        externalIds: Option<String>,
        /// Comma-separated statuses.
        statuses: Option<String>,
        /// `true` or `false`.
        onlyShowDisputed: Option<bool>,
        /// Comma-separated connection ids.
        partyConnectionIds: Option<String>,
        /// RFC 3339.
        createdOnOrAfter: Option<String>,
        createdBefore: Option<String>,
        updatedOnOrAfter: Option<String>,
        updatedBefore: Option<String>,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(non_snake_case)]
    pub struct TransferFilters {
        /// Comma-separated currency codes.
        currencies: Option<String>,
        /// Comma-separated network account ids.
        destinationNetworkAccountIds: Option<String>,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(non_snake_case)]
    pub struct DisputeFilters {
        /// Comma-separated settlement ids.
        settlementIds: Option<String>,
        /// Comma-separated settlement ids.
        settledInSettlementIds: Option<String>,
        /// Comma-separated connection ids.
        connectionIds: Option<String>,
        /// Only closed (`true`) or open (`false`) disputes.
        closed: Option<bool>,
        /// Include retracted disputes (default `false`).
        showRetracted: Option<bool>,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(non_snake_case)]
    pub struct AsOf {
        /// A global position of the log (at most the head).
        atPosition: Option<u64>,
        /// An RFC 3339 time (not with `atPosition`).
        asOf: Option<String>,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(non_snake_case)]
    pub struct FeedQuery {
        /// Events after this position (default 0).
        after: Option<u64>,
        /// Events per page.
        #[param(minimum = 1)]
        limit: Option<u64>,
        /// Comma-separated event type names.
        r#type: Option<String>,
        /// `category/id`, e.g. `settlement/<uuid>`.
        stream: Option<String>,
        /// Only this enterprise's events.
        enterpriseId: Option<Uuid>,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    pub struct VerifyRange {
        /// First position (default 1).
        from: Option<u64>,
        /// Last position (default the head).
        to: Option<u64>,
    }

    #[derive(utoipa::IntoParams)]
    #[into_params(parameter_in = Query)]
    #[allow(non_snake_case)]
    pub struct AuditReadsQuery {
        /// Reads after this id.
        after: Option<u64>,
        /// Reads per page (default 100).
        #[param(minimum = 1)]
        limit: Option<u64>,
        userId: Option<Uuid>,
    }

    // ------------------------------------------------------------------------------------------
    // Admin API.

    /// Create an enterprise.
    #[utoipa::path(post, path = "/api/admin/v1/enterprises", tag = "admin",
        params(Idempotency), request_body = admin::CreateEnterprise,
        responses((status = 200, description = "The enterprise.", body = EnterpriseReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody)))]
    pub fn create_enterprise() {}

    /// Grant or withdraw an enterprise's OES licence.
    #[utoipa::path(patch, path = "/api/admin/v1/enterprises/{enterpriseId}", tag = "admin",
        params(("enterpriseId" = Uuid, Path,)), request_body = admin::SetLicense,
        responses((status = 200, description = "The enterprise.", body = EnterpriseReply)))]
    pub fn set_license() {}

    /// Create a user; its access token is shown once.
    #[utoipa::path(post, path = "/api/admin/v1/users", tag = "admin",
        params(Idempotency), request_body = admin::CreateUserRequest,
        responses((status = 200, description = "The user and its token.", body = UserCreatedReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn create_user() {}

    /// Disable a user: its token is refused from the next request on.
    #[utoipa::path(post, path = "/api/admin/v1/users/{userId}/disable", tag = "admin",
        params(("userId" = Uuid, Path,)),
        responses((status = 200, description = "The user.", body = UserReply)))]
    pub fn disable_user() {}

    /// Enable a disabled user.
    #[utoipa::path(post, path = "/api/admin/v1/users/{userId}/enable", tag = "admin",
        params(("userId" = Uuid, Path,)),
        responses((status = 200, description = "The user.", body = UserReply)))]
    pub fn enable_user() {}

    /// Give a user a new access token (shown once); the old one stops working.
    #[utoipa::path(post, path = "/api/admin/v1/users/{userId}/token", tag = "admin",
        params(("userId" = Uuid, Path,)),
        responses((status = 200, description = "The user and its new token.", body = UserTokenReply)))]
    pub fn rotate_token() {}

    /// Register an Ed25519 signing key of an enterprise.
    #[utoipa::path(post, path = "/api/admin/v1/enterprises/{enterpriseId}/keys", tag = "admin",
        params(("enterpriseId" = Uuid, Path,), Idempotency), request_body = admin::RegisterKey,
        responses((status = 200, description = "The key.", body = KeyReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn register_key() {}

    /// Revoke a signing key.
    #[utoipa::path(delete, path = "/api/admin/v1/enterprises/{enterpriseId}/keys/{keyId}", tag = "admin",
        params(("enterpriseId" = Uuid, Path,), ("keyId" = Uuid, Path,)),
        responses((status = 200, description = "The key, revoked.", body = KeyReply)))]
    pub fn revoke_key() {}

    /// Register an enterprise's partner record.
    #[utoipa::path(post, path = "/api/admin/v1/enterprises/{enterpriseId}/partner", tag = "admin",
        params(("enterpriseId" = Uuid, Path,), Idempotency), request_body = admin::RegisterPartner,
        responses((status = 200, description = "The partner.", body = PartnerReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn register_partner() {}

    /// Change a partner: active, or its windows.
    #[utoipa::path(patch, path = "/api/admin/v1/partners/{partnerId}", tag = "admin",
        params(("partnerId" = Uuid, Path,)), request_body = UpdatePartnerRequest,
        responses((status = 200, description = "The partner.", body = PartnerReply),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn update_partner() {}

    /// Register an enterprise's client record.
    #[utoipa::path(post, path = "/api/admin/v1/enterprises/{enterpriseId}/client", tag = "admin",
        params(("enterpriseId" = Uuid, Path,), Idempotency),
        responses((status = 200, description = "The client.", body = ClientReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody)))]
    pub fn register_client() {}

    /// Credit an enterprise's custody account (idempotent on `externalId`).
    #[utoipa::path(post, path = "/api/admin/v1/enterprises/{enterpriseId}/deposits", tag = "admin",
        params(("enterpriseId" = Uuid, Path,), Idempotency), request_body = admin::DepositRequest,
        responses((status = 200, description = "The deposit.", body = DepositReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody)))]
    pub fn deposit() {}

    /// The currency table.
    #[utoipa::path(get, path = "/api/admin/v1/currencies", tag = "admin",
        responses((status = 200, description = "Every currency and its decimals.", body = CurrencyTable)))]
    pub fn currencies() {}

    /// The record of audit reads.
    #[utoipa::path(get, path = "/api/admin/v1/audit-reads", tag = "admin",
        params(AuditReadsQuery),
        responses((status = 200, description = "A page of audit reads.", body = AuditReadList)))]
    pub fn audit_reads() {}

    /// Close a dispute with the transfers that should execute instead.
    #[utoipa::path(post, path = "/api/admin/v1/disputes/{disputeId}/close", tag = "admin",
        params(("disputeId" = Uuid, Path,)), request_body = disputes::AdminCloseRequest,
        responses((status = 200, description = "The dispute's closure.", body = DisputeClosureReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn admin_close_dispute() {}

    /// Run a failed settlement's execution again now.
    #[utoipa::path(post, path = "/api/admin/v1/settlements/{settlementId}/retry", tag = "admin",
        params(("settlementId" = Uuid, Path,)),
        responses((status = 200, description = "The settlement.", body = SettlementReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn admin_retry_settlement() {}

    /// Set (`url`) or clear (`null`) an enterprise's webhook.
    #[utoipa::path(put, path = "/api/admin/v1/enterprises/{enterpriseId}/webhook", tag = "admin",
        params(("enterpriseId" = Uuid, Path,)), request_body = WebhookRequest,
        responses((status = 200, description = "The webhook.", body = WebhookReply)))]
    pub fn configure_webhook() {}

    /// The engine's webhook signing key.
    #[utoipa::path(get, path = "/api/admin/v1/webhooks/public-key", tag = "admin",
        responses((status = 200, description = "The key.", body = WebhookPublicKey)))]
    pub fn webhook_public_key() {}

    /// An enterprise's notifications with every delivery attempt.
    #[utoipa::path(get, path = "/api/admin/v1/enterprises/{enterpriseId}/webhook-deliveries", tag = "admin",
        params(("enterpriseId" = Uuid, Path,), Page),
        responses((status = 200, description = "A page of deliveries.", body = WebhookDeliveryList)))]
    pub fn webhook_deliveries() {}

    // ------------------------------------------------------------------------------------------
    // Network API: client connections and allocations.

    /// Connect to a partner (signed).
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections", tag = "network",
        params(("enterpriseId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SignedConnectRequest"),
        responses((status = 200, description = "The connection.", body = ConnectionReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn connect() {}

    /// The client's connections.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, MinPosition),
        responses((status = 200, description = "A page of connections.", body = ConnectionList)))]
    pub fn list_client_connections() {}

    /// The payload to sign for a connection.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/signing", tag = "network",
        operation_id = "connect_signing_get",
        params(("enterpriseId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningConnectRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn connect_signing_get() {}

    /// The payload to sign for a connection.
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningConnectRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn connect_signing_post() {}

    /// One of the client's connections.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,), MinPosition),
        responses((status = 200, description = "The connection.", body = ConnectionReply)))]
    pub fn get_client_connection() {}

    /// Rename or (de)activate a connection (signed).
    #[utoipa::path(put, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SignedConnectionUpdateRequest"),
        responses((status = 200, description = "The connection.", body = ConnectionReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn update_connection() {}

    /// The payload to sign for a connection change.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningConnectionUpdateRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn update_connection_signing_get() {}

    /// The payload to sign for a connection change.
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningConnectionUpdateRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn update_connection_signing_post() {}

    /// Move funds from custody to the connection (signed; idempotent on `clientExternalId`).
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}/allocations", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SignedAllocationRequest"),
        responses((status = 200, description = "The allocation.", body = AllocationReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "The (de)allocation was recorded and released at once (`allocation_released`, with `allocation`), or a business rule refuses it.", body = ErrorBody)))]
    pub fn allocate() {}

    /// The payload to sign for an allocation.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}/allocations/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningAllocationRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn allocate_signing_get() {}

    /// The payload to sign for an allocation.
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}/allocations/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningAllocationRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn allocate_signing_post() {}

    /// Move funds from the connection back to custody (signed; idempotent on `clientExternalId`).
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}/deallocations", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SignedAllocationRequest"),
        responses((status = 200, description = "The deallocation.", body = AllocationReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "The (de)allocation was recorded and released at once (`allocation_released`, with `allocation`), or a business rule refuses it.", body = ErrorBody)))]
    pub fn deallocate() {}

    /// The payload to sign for a deallocation.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}/deallocations/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningAllocationRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn deallocate_signing_get() {}

    /// The payload to sign for a deallocation.
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}/deallocations/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningAllocationRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn deallocate_signing_post() {}

    /// The client's allocations and deallocations.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/allocations", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, MinPosition),
        responses((status = 200, description = "A page of allocations.", body = AllocationList)))]
    pub fn list_client_allocations() {}

    /// One of the client's allocations.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/allocations/{allocationId}", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("allocationId" = Uuid, Path,), MinPosition),
        responses((status = 200, description = "The allocation.", body = AllocationReply)))]
    pub fn get_client_allocation() {}

    /// The client's custody and connection balances.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/balances", tag = "network",
        params(("enterpriseId" = Uuid, Path,), MinPosition),
        responses((status = 200, description = "The balances.", body = Balances)))]
    pub fn client_balances() {}

    /// The connections to this partner.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/connections", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, MinPosition),
        responses((status = 200, description = "A page of connections.", body = ConnectionList)))]
    pub fn list_partner_connections() {}

    /// One connection to this partner.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/connections/{connectionId}", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("connectionId" = Uuid, Path,), MinPosition),
        responses((status = 200, description = "The connection.", body = ConnectionReply)))]
    pub fn get_partner_connection() {}

    /// (De)allocations on this partner's connections.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/allocations", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, MinPosition),
        responses((status = 200, description = "A page of allocations.", body = AllocationList)))]
    pub fn list_partner_allocations() {}

    /// One (de)allocation on this partner's connections.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/allocations/{allocationId}", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("allocationId" = Uuid, Path,), MinPosition),
        responses((status = 200, description = "The allocation.", body = AllocationReply)))]
    pub fn get_partner_allocation() {}

    /// The partner's custody balances and each connection's.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/balances", tag = "network",
        params(("enterpriseId" = Uuid, Path,), MinPosition),
        responses((status = 200, description = "The balances.", body = Balances)))]
    pub fn partner_balances() {}

    // ------------------------------------------------------------------------------------------
    // Network API: settlements.

    /// Stage a settlement (dispute-aware, executed after its windows; signed).
    #[utoipa::path(post, path = "/api/network/v2/enterprises/{enterpriseId}/partners/settlements", tag = "network",
        params(("enterpriseId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SignedSettlementRequest"),
        responses((status = 200, description = "The settlement, with `settlingDisputes`.", body = SettlementReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn stage_settlement_v2() {}

    /// Perform a settlement at once (partners without disputes; signed).
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/partners/settlements", tag = "network",
        params(("enterpriseId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SignedSettlementRequest"),
        responses((status = 200, description = "The settlement, `completed` or `failed`.", body = SettlementReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn perform_settlement_v1() {}

    /// The partner's settlements.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/settlements", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, SettlementFilters, MinPosition),
        responses((status = 200, description = "A page of settlements.", body = SettlementList)))]
    pub fn list_partner_settlements() {}

    /// One settlement with its transfers and disputes.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/settlements/{settlementId}", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("settlementId" = Uuid, Path,), TransferFilters, MinPosition),
        responses((status = 200, description = "The settlement.", body = SettlementDetail)))]
    pub fn get_partner_settlement() {}

    /// The payload to sign for a settlement (v2 when `cutoffAt` is given, else v1).
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/settlements-signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningSettlementRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn settlement_signing_get() {}

    /// The payload to sign for a settlement (v2 when `cutoffAt` is given, else v1).
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/partners/settlements-signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningSettlementRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn settlement_signing_post() {}

    /// Settlements touching the client's connections.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, SettlementFilters, MinPosition),
        responses((status = 200, description = "A page of settlements, with `transferDirection`.", body = SettlementList)))]
    pub fn list_client_settlements() {}

    /// One settlement touching the client, with the client's transfers.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/{settlementId}", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("settlementId" = Uuid, Path,), TransferFilters, MinPosition),
        responses((status = 200, description = "The settlement.", body = SettlementDetail)))]
    pub fn get_client_settlement() {}

    /// Transfers touching the client.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlementTransfers", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, MinPosition),
        responses((status = 200, description = "A page of transfers.", body = TransferList)))]
    pub fn client_settlement_transfers() {}

    /// The client's notification feed.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/notifications", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, MinPosition),
        responses((status = 200, description = "A page of notifications.", body = NotificationList)))]
    pub fn client_notifications() {}

    /// The partner's notification feed.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/notifications", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, MinPosition),
        responses((status = 200, description = "A page of notifications.", body = NotificationList)))]
    pub fn partner_notifications() {}

    /// The engine's webhook signing key, for a partner verifying its webhooks.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/webhooks/public-key", tag = "network",
        params(("enterpriseId" = Uuid, Path,)),
        responses((status = 200, description = "The key.", body = WebhookPublicKey)))]
    pub fn partner_webhook_public_key() {}

    /// The engine's webhook signing key, for a client verifying its webhooks.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/webhooks/public-key", tag = "network",
        params(("enterpriseId" = Uuid, Path,)),
        responses((status = 200, description = "The key.", body = WebhookPublicKey)))]
    pub fn client_webhook_public_key() {}

    // ------------------------------------------------------------------------------------------
    // Network API: disputes.

    /// Raise a dispute of a settlement inside its window (signed).
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/{settlementId}/disputes", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("settlementId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SignedRaiseRequest"),
        responses((status = 200, description = "The dispute.", body = DisputeReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn raise_dispute() {}

    /// The payload to sign for a dispute.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/{settlementId}/disputes/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("settlementId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningRaiseRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn raise_dispute_signing_get() {}

    /// The payload to sign for a dispute.
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/{settlementId}/disputes/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("settlementId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningRaiseRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn raise_dispute_signing_post() {}

    /// Retract, un-retract or amend a dispute (signed).
    #[utoipa::path(put, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/disputes/{disputeId}", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("disputeId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SignedDisputeUpdateRequest"),
        responses((status = 200, description = "The dispute.", body = DisputeReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn update_dispute() {}

    /// The payload to sign for a dispute change.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/disputes/{disputeId}/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("disputeId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningDisputeUpdateRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn update_dispute_signing_get() {}

    /// The payload to sign for a dispute change.
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/disputes/{disputeId}/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("disputeId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningDisputeUpdateRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn update_dispute_signing_post() {}

    /// Withdraw one's own dispute as invalid (signed).
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/disputes/{disputeId}/close", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("disputeId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SignedCloseRequest"),
        responses((status = 200, description = "The dispute's closure.", body = DisputeClosureReply),
                  (status = 409, description = "Conflict: the request repeats an earlier one's identity with other content, or the object exists already.", body = ErrorBody),
                  (status = 422, description = "Unprocessable: a business rule refuses the request.", body = ErrorBody)))]
    pub fn close_dispute() {}

    /// The payload to sign for a dispute's closure.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/disputes/{disputeId}/close/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("disputeId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningCloseRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn close_dispute_signing_get() {}

    /// The payload to sign for a dispute's closure.
    #[utoipa::path(post, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/disputes/{disputeId}/close/signing", tag = "network",
        params(("enterpriseId" = Uuid, Path,), ("disputeId" = Uuid, Path,)),
        request_body = ref("#/components/schemas/SigningCloseRequest"),
        responses((status = 200, description = "The payload.", body = SigningPayload)))]
    pub fn close_dispute_signing_post() {}

    /// The client's disputes.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/clients/settlement/disputes", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, DisputeFilters, MinPosition),
        responses((status = 200, description = "A page of disputes.", body = DisputeList)))]
    pub fn list_client_disputes() {}

    /// Disputes on this partner's settlements.
    #[utoipa::path(get, path = "/api/network/v1/enterprises/{enterpriseId}/partners/settlement/disputes", tag = "network",
        params(("enterpriseId" = Uuid, Path,), Page, DisputeFilters, MinPosition),
        responses((status = 200, description = "A page of disputes.", body = DisputeList)))]
    pub fn list_partner_disputes() {}

    // ------------------------------------------------------------------------------------------
    // Audit API.

    /// A settlement's whole timeline: every event touching it, in order.
    #[utoipa::path(get, path = "/api/audit/v1/settlements/{settlementId}/events", tag = "audit",
        params(("settlementId" = Uuid, Path,)),
        responses((status = 200, description = "The timeline.", body = AuditTimeline)))]
    pub fn audit_settlement_events() {}

    /// A settlement as it stood at a position or time.
    #[utoipa::path(get, path = "/api/audit/v1/settlements/{settlementId}", tag = "audit",
        params(("settlementId" = Uuid, Path,), AsOf),
        responses((status = 200, description = "The settlement then.", body = AuditSettlementAt)))]
    pub fn audit_settlement_at() {}

    /// An enterprise's balances as they stood at a position or time.
    #[utoipa::path(get, path = "/api/audit/v1/enterprises/{enterpriseId}/balances", tag = "audit",
        params(("enterpriseId" = Uuid, Path,), AsOf),
        responses((status = 200, description = "The balances then.", body = AuditBalancesAt)))]
    pub fn audit_balances_at() {}

    /// The global event feed (NDJSON with `Accept: application/x-ndjson`).
    #[utoipa::path(get, path = "/api/audit/v1/events", tag = "audit",
        params(FeedQuery),
        responses((status = 200, description = "A page of events.",
            content((AuditFeed = "application/json"), (String = "application/x-ndjson")))))]
    pub fn audit_events() {}

    /// The head of the log, a signed checkpoint, and the latest full verification.
    #[utoipa::path(get, path = "/api/audit/v1/chain", tag = "audit",
        responses((status = 200, description = "The chain's head.", body = ChainHead)))]
    pub fn audit_chain() {}

    /// Verify a range of the chain now.
    #[utoipa::path(get, path = "/api/audit/v1/chain/verify", tag = "audit",
        params(VerifyRange),
        responses((status = 200, description = "The verification.", body = ChainVerify)))]
    pub fn audit_chain_verify() {}

    /// The audit key that signs checkpoints.
    #[utoipa::path(get, path = "/api/audit/v1/key", tag = "audit",
        responses((status = 200, description = "The key.", body = AuditKey)))]
    pub fn audit_key() {}
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    /// A state whose database is never reached: every request below is refused (401) or
    /// answered before a handler reads anything.
    fn offline_state() -> AppState {
        let pool = sqlx::PgPool::connect_lazy("postgres://offline@127.0.0.1:9/offline")
            .expect("a lazy pool");
        AppState::new(
            pool,
            events::domain::money::CurrencyTable::default_table(),
            Some("test-admin-token"),
        )
    }

    fn app() -> Router {
        super::super::router(
            offline_state(),
            Router::new(),
            &super::super::edge::EdgeConfig::default(),
        )
    }

    /// `{name}` of either syntax as `{}`: documented and routed paths name parameters
    /// differently.
    fn shape(path: &str) -> String {
        let mut out = String::new();
        let mut in_param = false;
        for c in path.chars() {
            match c {
                '{' => {
                    in_param = true;
                    out.push_str("{}");
                }
                '}' => in_param = false,
                c if !in_param => out.push(c),
                _ => {}
            }
        }
        out
    }

    /// Every (method, path) a route tree serves, read from the router itself: axum's `Debug`
    /// of a router lists each route's path and its `Allow` methods by route id.
    fn routed(base: &str, tree: &Router<AppState>) -> BTreeSet<(String, String)> {
        let full = format!("{tree:?}");
        // The path router only: the fallback router numbers its own routes from 1 too.
        let text = full.split(", fallback_router:").next().unwrap_or_default();
        let mut paths: BTreeMap<String, String> = BTreeMap::new();
        let mut methods: BTreeMap<String, String> = BTreeMap::new();
        let mut rest = text;
        while let Some(at) = rest.find("RouteId(") {
            rest = &rest[at + "RouteId(".len()..];
            let Some(close) = rest.find(')') else { break };
            let id = rest[..close].to_owned();
            let after = &rest[close + 1..];
            if let Some(quoted) = after.strip_prefix(": \"") {
                let end = quoted.find('"').expect("a quoted path ends");
                paths.insert(id, quoted[..end].to_owned());
            } else if after.starts_with(": MethodRouter(") {
                let allow = after
                    .find("allow_header: ")
                    .map(|i| &after[i + "allow_header: ".len()..])
                    .expect("a method router names its Allow header");
                let list = allow
                    .strip_prefix("Bytes(b\"")
                    .and_then(|l| l.split('"').next())
                    .unwrap_or_default();
                methods.insert(id, list.to_owned());
            }
        }
        assert!(
            !paths.is_empty(),
            "no routes read from the router: {text:.400}"
        );
        let mut out = BTreeSet::new();
        for (id, path) in &paths {
            let allow = methods
                .get(id)
                .unwrap_or_else(|| panic!("route {path} has no methods read"));
            for method in allow.split(',').filter(|m| !m.is_empty() && *m != "HEAD") {
                out.insert((method.to_ascii_lowercase(), shape(&format!("{base}{path}"))));
            }
        }
        out
    }

    fn documented() -> BTreeSet<(String, String)> {
        let mut doc = document();
        let mut out = BTreeSet::new();
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, _) in operations(item) {
                out.insert((method.to_owned(), path.clone()));
            }
        }
        out
    }

    #[test]
    fn openapi_document_matches_schemas_openapi_json() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(COMMITTED_PATH);
        let rendered = document_json();
        if std::env::var_os("SETTLE_BLESS").is_some() {
            std::fs::write(&path, &rendered).expect("write schemas/openapi.json");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == rendered,
            "schemas/openapi.json is out of date with the code; regenerate it with \
             `SETTLE_BLESS=1 cargo test -p command-api openapi` and commit the result"
        );
    }

    #[tokio::test]
    async fn openapi_documents_every_route_and_every_documented_route_is_served() {
        let mut served = BTreeSet::new();
        for (base, tree) in super::super::route_trees(offline_state()) {
            served.extend(routed(base, &tree));
        }
        let documented = documented();
        let documented_shapes: BTreeSet<(String, String)> = documented
            .iter()
            .map(|(m, p)| (m.clone(), shape(p)))
            .collect();
        let missing: Vec<_> = served.difference(&documented_shapes).collect();
        assert!(
            missing.is_empty(),
            "routes the router serves but the OpenAPI document does not describe: {missing:?}"
        );
        // And every documented operation reaches a handler: no 404 `no such route`, no 405.
        let app = app();
        for (method, path) in &documented {
            let uri = shape(path).replace("{}", "00000000-0000-4000-8000-000000000000");
            let request = Request::builder()
                .method(Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method"))
                .uri(&uri)
                .body(Body::empty())
                .expect("request");
            let response = app.clone().oneshot(request).await.expect("answered");
            assert!(
                !matches!(
                    response.status(),
                    StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
                ),
                "{method} {path} is documented but not routed ({})",
                response.status()
            );
        }
        assert_eq!(served.len(), documented.len(), "one operation per route");
    }

    #[tokio::test]
    async fn openapi_document_and_docs_are_served_without_authentication() {
        let app = app();
        let get = |uri: &str| {
            Request::builder()
                .uri(uri)
                .body(Body::empty())
                .expect("request")
        };
        let response = app
            .clone()
            .oneshot(get(DOCUMENT_PATH))
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers().get(CONTENT_TYPE).map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        assert_eq!(std::str::from_utf8(&body).expect("utf-8"), document_json());
        let value: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(value["openapi"], "3.1.0");

        let response = app
            .clone()
            .oneshot(get("/api/docs/"))
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let html = String::from_utf8_lossy(&body);
        assert!(html.contains("swagger"), "the Swagger UI page: {html:.300}");
        let response = app
            .clone()
            .oneshot(get("/api/docs/swagger-initializer.js"))
            .await
            .expect("answered");
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        assert!(
            String::from_utf8_lossy(&body).contains(DOCUMENT_PATH),
            "the UI loads the served document"
        );
        let response = app.oneshot(get("/api/docs")).await.expect("answered");
        assert!(response.status().is_redirection(), "{}", response.status());
    }

    #[test]
    fn every_error_code_is_in_the_document() {
        let value = serde_json::to_value(document()).expect("serializes");
        let listed: BTreeSet<&str> = value["x-error-codes"]
            .as_array()
            .expect("x-error-codes")
            .iter()
            .filter_map(|c| c["code"].as_str())
            .collect();
        let all: BTreeSet<&str> = ErrorCode::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(listed, all);
        let body_codes: BTreeSet<&str> = value["components"]["schemas"]["ErrorBody"]["properties"]
            ["code"]["enum"]
            .as_array()
            .expect("ErrorBody.code is an enum")
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(body_codes, all);
    }
}
