//! The reply shapes of the HTTP API as types (SPEC §5): the component schemas of the OpenAPI
//! document (`openapi.rs`, `schemas/openapi.json`) and what the renderers build — `views.rs` from
//! domain records, `reads.rs` and `webhooks.rs` from read models, `admin.rs` and `audit.rs` — so a
//! reply cannot leave its documented shape without the code changing too. A field the server
//! sends as `null` is an `Option` that is still required; a field it leaves out when it does not
//! apply is an `Option` skipped when absent.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::openapi::schema::{ObjectBuilder, Schema, SchemaType, Type};
use utoipa::ToSchema;
use uuid::Uuid;

use super::codes::ErrorCode;

// ----------------------------------------------------------------------------------------------
// The error body.

/// The body of every 4xx and 5xx (SPEC §5): a sentence, a stable code and the request id, and for
/// some codes more fields (`field`, `limit`, `reason`, `shortfalls`, the released `allocation`).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// A sentence for humans; never internals.
    pub error: String,
    /// The stable code (see `x-error-codes` and `docs/errors.md`).
    #[schema(schema_with = error_code_schema)]
    pub code: String,
    /// The request's id, also in the `X-Request-Id` header.
    pub request_id: String,
    /// Where the refused value is (`invalid_request`, `malformed_json`, `field_*`, `too_many_items`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub field: Option<String>,
    /// The limit that was exceeded (`payload_too_large`: bytes; `json_too_deep`: levels).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub limit: Option<u64>,
    /// Why a webhook destination is refused (`invalid_webhook_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// Each connection and currency that cannot cover its liability (`insufficient_balance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub shortfalls: Option<Vec<Shortfall>>,
    /// The (de)allocation, recorded and released (`allocation_released`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub allocation: Option<Allocation>,
}

/// `code`: one of the registry's codes.
fn error_code_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(ErrorCode::ALL.iter().map(|c| c.code())))
        .description(Some("The stable error code."))
        .build()
        .into()
}

/// One connection and currency short of its net liability.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shortfall {
    pub connection_id: Uuid,
    pub currency: String,
    /// Base units needed.
    pub needed: String,
    /// Base units available.
    pub available: String,
}

// ----------------------------------------------------------------------------------------------
// Admin objects (SPEC §6.3).

/// An enterprise (tenant).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Enterprise {
    pub id: Uuid,
    pub name: String,
    pub oes_license: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct EnterpriseReply {
    pub enterprise: Enterprise,
}

/// A user: a member of enterprises, perhaps an auditor.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: Uuid,
    pub name: String,
    pub enterprise_ids: Vec<Uuid>,
    pub auditor: bool,
    pub disabled: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

/// `POST users/{id}/disable` and `…/enable`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UserReply {
    pub user: User,
}

/// `POST users`: the user and its access token, shown once (absent when an `Idempotency-Key`
/// retry replays the creation).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserCreatedReply {
    pub user: User,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub access_token: Option<String>,
}

/// `POST users/{id}/token`: the user and its new access token, shown once.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserTokenReply {
    pub user: User,
    pub access_token: String,
}

/// A signing key of an enterprise (Ed25519, hex).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Key {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    #[schema(required = true)]
    pub public_key: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub created_at: Option<String>,
    /// Set once the key is revoked.
    #[schema(required = true, format = DateTime)]
    pub revoked_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct KeyReply {
    pub key: Key,
}

/// How a partner writes amounts (responses always use base units).
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AmountFormat {
    BaseUnits,
    Decimal,
}

/// The shape of connection key a partner takes (ADR 0011).
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum ConnectionKeySchema {
    Token,
    TokenAndSignature,
    ApiKeyAndSecret,
    Clearloop,
}

/// A partner (exchange or broker).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Partner {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    pub name: String,
    pub broker: bool,
    pub active: bool,
    /// Minutes (fractions allowed); `null`: disputes are not enabled.
    #[schema(required = true)]
    pub client_dispute_window_minutes: Option<f64>,
    #[schema(required = true)]
    pub top_up_window_minutes: Option<f64>,
    pub amount_format: AmountFormat,
    /// The shape of connection key its clients present when they connect.
    pub connection_key_schema: ConnectionKeySchema,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct PartnerReply {
    pub partner: Partner,
}

/// A client record.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Client {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    /// Its custody account.
    pub wallet_id: Uuid,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ClientReply {
    pub client: Client,
}

/// A deposit into an enterprise's custody account.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deposit {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    pub external_id: String,
    pub currency: String,
    /// Base units.
    pub quantity: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DepositReply {
    pub deposit: Deposit,
}

/// One currency of the table.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Currency {
    pub code: String,
    pub decimals: u32,
}

/// `GET currencies`: the currency table, sorted by code.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CurrencyTable {
    pub currencies: Vec<Currency>,
}

/// An enterprise's webhook.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    pub enterprise_id: Uuid,
    /// `null` once cleared.
    #[schema(required = true)]
    pub url: Option<String>,
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct WebhookReply {
    pub webhook: Webhook,
}

/// The engine's webhook signing key.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookPublicKey {
    /// Hex Ed25519 public key.
    pub public_key: String,
    pub scheme: String,
}

/// One delivery attempt of a webhook (operator view).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    pub attempt: i64,
    #[schema(format = DateTime)]
    pub at: String,
    pub url: String,
    #[schema(required = true)]
    pub http_status: Option<i64>,
    #[schema(required = true)]
    pub error: Option<String>,
    #[schema(required = true)]
    pub duration_ms: Option<i64>,
}

/// A notification's delivery: its state and attempt count; the operator also sees the schedule
/// and every attempt.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// `not_configured`, `pending`, `delivered`, `failed`, …
    pub status: String,
    pub attempt_count: i64,
    /// Operator view only.
    // Absent from the tenant's view; `null` in the operator's when none is due.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub next_attempt_at: Option<Option<String>>,
    /// Operator view only.
    // Absent from the tenant's view; `null` in the operator's until delivered.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub delivered_at: Option<Option<String>>,
    /// Operator view only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub attempts: Option<Vec<DeliveryAttempt>>,
}

/// A notification of the feed, with the exact webhook body as `payload`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub enterprise_id: Uuid,
    pub settlement_id: Uuid,
    pub partner_id: Uuid,
    pub external_id: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub delivery: Delivery,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationList {
    pub notifications: Vec<Notification>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookDeliveryList {
    pub webhook_deliveries: Vec<Notification>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// One recorded audit read.
// Rendered by `events::audit::reads` and read back into this type (`reads::checked`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRead {
    pub id: i64,
    #[schema(format = DateTime)]
    pub read_at: String,
    /// `admin` or `auditor`.
    pub actor: String,
    #[schema(required = true)]
    pub user_id: Option<Uuid>,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: i64,
    #[schema(required = true)]
    pub request_id: Option<String>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditReadList {
    pub audit_reads: Vec<AuditRead>,
    /// Pass as `after` for the next page; `null` at the end.
    #[schema(required = true)]
    pub next_after: Option<i64>,
}

// ----------------------------------------------------------------------------------------------
// Network objects (SPEC §5, §6.1–6.2).

/// `…/signing`: the canonical string to sign.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SigningPayload {
    pub payload: String,
}

/// A connection: the client's account at one partner.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Connection {
    pub id: Uuid,
    pub name: String,
    pub client_id: Uuid,
    pub partner_id: Uuid,
    pub network_account_id: Uuid,
    pub active: bool,
    pub initialized: bool,
    /// Always `null`.
    #[schema(required = true, value_type = Option<String>)]
    pub partners_connection_id: Option<String>,
    /// Always `null`.
    #[schema(required = true, value_type = Option<String>)]
    pub partners_client_id: Option<String>,
    pub nonce: String,
    pub proof: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ConnectionReply {
    pub connection: Connection,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionList {
    pub connections: Vec<Connection>,
    /// The cursor of the next page; `null` at the end.
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// `{currency, quantity}`, quantity in base units.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Amount {
    pub currency: String,
    pub quantity: String,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AllocationType {
    Allocation,
    Deallocation,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum AllocationStatus {
    Reserved,
    Cleared,
    Released,
}

/// An allocation or deallocation.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub kind: AllocationType,
    pub amount: Amount,
    pub connection_id: Uuid,
    pub client_external_id: String,
    pub initiated_by: Uuid,
    /// Absent when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub notes: Option<String>,
    pub status: AllocationStatus,
    /// Why it was released; `null` otherwise.
    #[schema(required = true)]
    pub reason: Option<String>,
    pub retriable: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AllocationReply {
    pub allocation: Allocation,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocationList {
    pub allocations: Vec<Allocation>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// A balance in base units.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Balance {
    pub available: String,
    pub held: String,
}

/// A connection's balances: a client sees the connection's `partnerId`, a partner its
/// `clientId`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkBalance {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub partner_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub client_id: Option<Uuid>,
    pub name: String,
    /// By currency; a currency never touched may be absent.
    pub balances: BTreeMap<String, Balance>,
}

/// The custody balances by currency and each connection's, by connection id.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Balances {
    pub balances: BTreeMap<String, Balance>,
    pub network_balances: BTreeMap<String, NetworkBalance>,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum SettlementStatus {
    Pending,
    Failed,
    Completed,
    Rejected,
}

/// The engine's phase of a settlement.
#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum SettlementPhase {
    AwaitingDisputes,
    ToppingUp,
    Executing,
    Done,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
pub enum TransferDirection {
    #[serde(rename = "send")]
    Send,
    #[serde(rename = "receive")]
    Receive,
    #[serde(rename = "send-and-receive")]
    SendAndReceive,
}

/// A settlement.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Settlement {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub external_id: String,
    pub status: SettlementStatus,
    /// Always `offchain`.
    pub settlement_type: String,
    pub reconciled: bool,
    pub initiated_by: Uuid,
    /// Absent when there are none.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub notes: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub disputed: bool,
    #[serde(rename = "lossSLAAlertSent")]
    pub loss_sla_alert_sent: bool,
    #[serde(rename = "gainSLAAlertSent")]
    pub gain_sla_alert_sent: bool,
    pub phase: SettlementPhase,
    #[schema(format = DateTime)]
    pub dispute_window_ends_at: String,
    #[schema(format = DateTime)]
    pub top_up_window_ends_at: String,
    /// v2 settlements only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub cutoff_at: Option<String>,
    /// `failed` only: the short currencies.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// `completed` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub finalized_at: Option<String>,
    /// Client lists only: the direction of the client's transfers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub transfer_direction: Option<TransferDirection>,
    /// The reply of a v2 staging only: the closed disputes this settlement carries.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub settling_disputes: Option<Vec<Dispute>>,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SettlementReply {
    pub settlement: Settlement,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettlementList {
    pub settlements: Vec<Settlement>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

/// One settlement with its transfers and the disputes it settles and it has.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettlementDetail {
    pub settlement: Settlement,
    pub settlement_transfers: Vec<Transfer>,
    pub settling_disputes: Vec<Dispute>,
    pub settlement_disputes: Vec<Dispute>,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransferStatus {
    Pending,
    Completed,
    Failed,
    Disputed,
    PendingSettlementAssignment,
    Rejected,
}

/// A settlement transfer (`+` moves value from source to destination).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transfer {
    pub id: Uuid,
    /// Absent while unassigned.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub settlement_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub dispute_closure_id: Option<Uuid>,
    pub currency: String,
    /// Signed base units, non-zero.
    pub quantity: String,
    pub status: TransferStatus,
    pub source_trading_account_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub source_network_account_id: Option<Uuid>,
    pub destination_trading_account_id: Uuid,
    pub destination_network_account_id: Uuid,
    pub tx_ids: Vec<Uuid>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferList {
    pub settlement_transfers: Vec<Transfer>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum ClosedBy {
    Client,
    Admin,
}

/// A dispute's closure: approved, with the instructions that execute instead.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisputeClosure {
    pub id: Uuid,
    pub closed_by: ClosedBy,
    /// `null` for an operator's closure.
    #[schema(required = true)]
    pub user_id: Option<Uuid>,
    pub notes: String,
    /// Always `approved`.
    pub status: String,
    /// `{currency: amount}` in base units, `+` toward the client.
    pub adjusted_transfers: BTreeMap<String, String>,
    /// The closure's transfers.
    pub adjusted_settlement_transfers: Vec<Transfer>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// A dispute of a settlement by one connection.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Dispute {
    pub id: Uuid,
    pub connection_id: Uuid,
    pub disputed_settlement_id: Uuid,
    pub user_id: Uuid,
    /// `{currency: amount}` in base units, `+` toward the client.
    pub expected_transfers: BTreeMap<String, String>,
    pub retracted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub retracted_by: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = DateTime)]
    pub retracted_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub retracted_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub dispute_closure_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub settled_in_settlement_id: Option<Uuid>,
    /// The closure, once closed (read forms: lists and a settlement's disputes).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub dispute_closure: Option<DisputeClosure>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct DisputeReply {
    pub dispute: Dispute,
}

/// A closure's reply: the closure with its transfers, waiting for the partner's next v2
/// settlement.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisputeClosureReply {
    pub dispute_closure: DisputeClosure,
}

#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DisputeList {
    pub disputes: Vec<Dispute>,
    #[schema(required = true)]
    pub next_cursor: Option<String>,
}

// ----------------------------------------------------------------------------------------------
// Audit objects (SPEC §6.4).

/// Who recorded an event.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditActor {
    /// `system`, `admin` or `user`.
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub user_id: Option<Uuid>,
}

/// A signed instruction's kept request, re-verified.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSigned {
    pub payload: String,
    pub signature: String,
    pub key_id: Uuid,
    #[schema(required = true)]
    pub public_key: Option<String>,
    #[schema(required = true)]
    pub key_enterprise_id: Option<Uuid>,
    #[schema(required = true)]
    pub signature_valid: Option<bool>,
    #[schema(required = true)]
    pub problem: Option<String>,
}

/// One event of the log, as an auditor reads it.
// Rendered by `events::audit::render` (shared with the `settle-audit` export) and read back into
// this type, which must write it out again unchanged (`audit::audit_event`).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub position: u64,
    pub hash: String,
    pub event_id: Uuid,
    /// `category/id`.
    pub stream: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub kind: String,
    pub type_id: u32,
    pub schema_version: u16,
    #[schema(format = DateTime)]
    pub recorded_at: String,
    #[schema(required = true)]
    pub actor: Option<AuditActor>,
    #[schema(required = true)]
    pub request_id: Option<String>,
    #[schema(required = true)]
    pub command_id: Option<Uuid>,
    #[schema(required = true)]
    pub correlation_id: Option<Uuid>,
    #[schema(required = true)]
    pub causation_id: Option<Uuid>,
    /// The event decoded to JSON; `null` when it cannot be decoded.
    // Raw JSON text: its amounts are exact integers that may exceed what an `f64` holds.
    #[schema(required = true, value_type = Value)]
    pub payload: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub decode_error: Option<String>,
    #[schema(required = true)]
    pub signed: Option<AuditSigned>,
    #[schema(required = true)]
    pub signed_kept: Option<bool>,
}

/// `GET settlements/{id}/events`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditTimeline {
    pub settlement_id: Uuid,
    pub events: Vec<AuditEvent>,
}

/// `GET events`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditFeed {
    pub events: Vec<AuditEvent>,
    /// Pass as `after` for the next page; `null` at the head.
    #[schema(required = true)]
    pub next_after: Option<u64>,
    pub head: u64,
}

/// A transfer as the settlement's own state says it stood.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditTransfer {
    pub id: Uuid,
    pub currency: String,
    pub quantity: String,
    #[schema(required = true)]
    pub source_connection_id: Option<Uuid>,
    pub destination_connection_id: Uuid,
    pub status: TransferStatus,
}

/// `GET settlements/{id}`: the settlement as it stood at a position.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditSettlementAt {
    pub at_position: u64,
    #[schema(format = DateTime)]
    pub as_of: String,
    pub settlement: Settlement,
    pub settlement_transfers: Vec<AuditTransfer>,
    pub settlement_disputes: Vec<Dispute>,
}

/// `GET enterprises/{e}/balances`: an enterprise's balances as they stood at a position.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditBalancesAt {
    pub enterprise_id: Uuid,
    pub at_position: u64,
    #[schema(format = DateTime)]
    pub as_of: String,
    pub balances: BTreeMap<String, Balance>,
    pub client_network_balances: BTreeMap<String, NetworkBalance>,
    pub partner_network_balances: BTreeMap<String, NetworkBalance>,
    pub events_folded: u64,
}

/// The head of the log.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainPosition {
    pub position: u64,
    pub hash: String,
    #[schema(required = true, format = DateTime)]
    pub recorded_at: Option<String>,
}

/// A signed checkpoint of the log.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    pub position: u64,
    pub hash: String,
    pub time: String,
    /// The exact text signed.
    pub note: String,
    pub signature: String,
    pub public_key: String,
}

/// Where the chain breaks.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainFault {
    /// `hashMismatch` or `gap`.
    pub kind: String,
    pub position: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub found: Option<u64>,
}

/// A full verification of the chain.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verification {
    #[schema(format = DateTime)]
    pub started_at: String,
    #[schema(format = DateTime)]
    pub finished_at: String,
    pub verifier: String,
    pub checked_positions: u64,
    pub head_position: u64,
    pub verified: bool,
    #[schema(required = true)]
    pub first_fault: Option<ChainFault>,
}

/// `GET chain`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainHead {
    pub head: ChainPosition,
    pub checkpoint: Checkpoint,
    #[schema(required = true)]
    pub latest_verification: Option<Verification>,
}

/// `GET chain/verify`.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChainVerify {
    pub from: u64,
    pub to: u64,
    pub checked_positions: u64,
    pub verified: bool,
    #[schema(required = true)]
    pub first_fault: Option<ChainFault>,
    #[schema(required = true)]
    pub next_from: Option<u64>,
}

/// `GET key`: the audit key that signs checkpoints.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditKey {
    pub public_key: String,
    pub algorithm: String,
    pub note_origin: String,
}

// ----------------------------------------------------------------------------------------------
// Request bodies without a request struct of their own in the handlers.

/// `PATCH partners/{id}`: each field absent (unchanged), or a value; a window may be `null`
/// (disputes or the top-up window turned off).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdatePartnerRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub active: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0)]
    pub client_dispute_window_minutes: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0.0)]
    pub top_up_window_minutes: Option<f64>,
    /// New connections must present keys of this schema; existing ones keep theirs.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub connection_key_schema: Option<ConnectionKeySchema>,
}

/// `PUT enterprises/{e}/webhook`: `{"url": "https://…"}` sets it, `{"url": null}` clears it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookRequest {
    #[schema(required = true)]
    pub url: Option<String>,
}

/// The signing envelope every signed network request carries besides its own fields (SPEC §4).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct SignedEnvelope {
    /// Unique per enterprise.
    pub nonce: String,
    /// A string holding the JSON object of the request's own fields, the nonce and the route's
    /// path ids: what `…/signing` answers.
    pub payload: String,
    /// Hex of the 64-byte Ed25519 signature of `payload`.
    pub signature: String,
}

// ----------------------------------------------------------------------------------------------
// Pages.

/// A list reply: one page of items under the list's plural name, and the cursor of the next page
/// (`reads::list` fills it in).
pub trait Listing {
    type Item;
    fn of(items: Vec<Self::Item>, next_cursor: Option<String>) -> Self;
}

macro_rules! listing {
    ($($list:ident { $field:ident: $item:ty }),* $(,)?) => {$(
        impl Listing for $list {
            type Item = $item;
            fn of(items: Vec<$item>, next_cursor: Option<String>) -> Self {
                Self { $field: items, next_cursor }
            }
        }
    )*};
}

listing!(
    ConnectionList {
        connections: Connection
    },
    AllocationList {
        allocations: Allocation
    },
    SettlementList {
        settlements: Settlement
    },
    TransferList {
        settlement_transfers: Transfer
    },
    DisputeList { disputes: Dispute },
    NotificationList {
        notifications: Notification
    },
    WebhookDeliveryList {
        webhook_deliveries: Notification
    },
);
