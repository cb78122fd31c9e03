//! The registry of error codes: every `code` an error body of the API can carry, with the HTTP
//! status it is answered with and what it means. `ApiError` is built only from an `ErrorCode`;
//! `docs/errors.md` is generated from `ErrorCode::ALL` (a test fails when the file drifts).
//! The code strings are a contract with partners: a variant's `code()` never changes.
//!
//! Refusals of the domain (`events::domain`) and of the signing rules (`schemas::signing`) map to
//! codes here or in their handlers by exhaustive matches, so a new refusal does not compile until
//! it has a code.

use axum::http::StatusCode;
use events::domain::limits::LimitError;
use events::domain::money::MoneyError;
use schemas::signing::{KeyError, SignatureError, SigningError};

/// One stable error code of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(test, derive(strum::EnumIter))]
pub enum ErrorCode {
    // The HTTP edge and the framework.
    NotFound,
    MethodNotAllowed,
    BadRequest,
    PayloadTooLarge,
    UnsupportedMediaType,
    MalformedBody,
    MalformedJson,
    JsonTooDeep,
    Timeout,
    RateLimited,
    Overloaded,
    InternalError,
    Contention,
    EventTooLarge,
    ReadNotCaughtUp,
    InvalidMinPosition,
    // Request shape and input limits.
    InvalidRequest,
    IdempotencyConflict,
    InvalidIdempotencyKey,
    FieldEmpty,
    FieldTooLong,
    FieldControlCharacter,
    TooManyItems,
    // Authentication and tenancy (docs/api/guide.md).
    Unauthenticated,
    UserDisabled,
    NotAMember,
    NoOesLicense,
    NoPartnerRecord,
    NoClientRecord,
    PartnerInactive,
    NotAnAuditor,
    DisputesEnabled,
    // Request signatures (docs/api/signatures.md) and signing keys.
    InvalidBody,
    MissingPayload,
    InvalidPayload,
    PayloadMismatch,
    MissingSignature,
    InvalidSignatureFormat,
    InvalidSignature,
    MissingNonce,
    InvalidNonce,
    NonceReused,
    PathIdConflict,
    InvalidPublicKey,
    WeakPublicKey,
    // Money (docs/api/guide.md).
    AmountEmpty,
    AmountNotANumber,
    AmountTooPrecise,
    AmountOverflow,
    AmountZero,
    AmountNegative,
    InvalidAmount,
    UnknownCurrency,
    BadCurrencyCode,
    InsufficientFunds,
    InsufficientHeldFunds,
    // Provisioning (admin API).
    AlreadyExists,
    EnterpriseNotFound,
    TooManyKeys,
    InvalidWindow,
    InvalidWebhookUrl,
    // Connection keys (ADR 0011).
    UnsupportedConnectionKeySchema,
    ConnectionKeySchemaMismatch,
    // Settlements, allocations and disputes.
    InvalidSettlement,
    InsufficientBalance,
    SettlementCompleted,
    NotDue,
    AllocationReleased,
    InvalidDispute,
    AlreadyDisputed,
    NotDisputable,
    DisputeWindowClosed,
    DisputeWindowOpen,
    SettlementFinalizing,
    DisputeClosed,
    DisputeRetracted,
    Refused,
    // Reads and the audit API.
    InvalidPage,
    InvalidCursor,
    InvalidFilter,
    InvalidQuery,
    PositionAheadOfLog,
}

/// What the registry says of one code.
struct Entry {
    code: &'static str,
    status: StatusCode,
    /// Statuses some routes answer the code with besides `status` (fixed per route).
    also: &'static [StatusCode],
    meaning: &'static str,
}

const fn entry(code: &'static str, status: StatusCode, meaning: &'static str) -> Entry {
    Entry {
        code,
        status,
        also: &[],
        meaning,
    }
}

const BAD_REQUEST: StatusCode = StatusCode::BAD_REQUEST;
const UNAUTHORIZED: StatusCode = StatusCode::UNAUTHORIZED;
const FORBIDDEN: StatusCode = StatusCode::FORBIDDEN;
const NOT_FOUND: StatusCode = StatusCode::NOT_FOUND;
const CONFLICT: StatusCode = StatusCode::CONFLICT;
const UNPROCESSABLE: StatusCode = StatusCode::UNPROCESSABLE_ENTITY;
const UNAVAILABLE: StatusCode = StatusCode::SERVICE_UNAVAILABLE;

impl ErrorCode {
    /// Every code, in declaration order (a test checks that none is missing).
    pub const ALL: &'static [ErrorCode] = &[
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::BadRequest,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::MalformedBody,
        Self::MalformedJson,
        Self::JsonTooDeep,
        Self::Timeout,
        Self::RateLimited,
        Self::Overloaded,
        Self::InternalError,
        Self::Contention,
        Self::EventTooLarge,
        Self::ReadNotCaughtUp,
        Self::InvalidMinPosition,
        Self::InvalidRequest,
        Self::IdempotencyConflict,
        Self::InvalidIdempotencyKey,
        Self::FieldEmpty,
        Self::FieldTooLong,
        Self::FieldControlCharacter,
        Self::TooManyItems,
        Self::Unauthenticated,
        Self::UserDisabled,
        Self::NotAMember,
        Self::NoOesLicense,
        Self::NoPartnerRecord,
        Self::NoClientRecord,
        Self::PartnerInactive,
        Self::NotAnAuditor,
        Self::DisputesEnabled,
        Self::InvalidBody,
        Self::MissingPayload,
        Self::InvalidPayload,
        Self::PayloadMismatch,
        Self::MissingSignature,
        Self::InvalidSignatureFormat,
        Self::InvalidSignature,
        Self::MissingNonce,
        Self::InvalidNonce,
        Self::NonceReused,
        Self::PathIdConflict,
        Self::InvalidPublicKey,
        Self::WeakPublicKey,
        Self::AmountEmpty,
        Self::AmountNotANumber,
        Self::AmountTooPrecise,
        Self::AmountOverflow,
        Self::AmountZero,
        Self::AmountNegative,
        Self::InvalidAmount,
        Self::UnknownCurrency,
        Self::BadCurrencyCode,
        Self::InsufficientFunds,
        Self::InsufficientHeldFunds,
        Self::AlreadyExists,
        Self::EnterpriseNotFound,
        Self::TooManyKeys,
        Self::InvalidWindow,
        Self::InvalidWebhookUrl,
        Self::UnsupportedConnectionKeySchema,
        Self::ConnectionKeySchemaMismatch,
        Self::InvalidSettlement,
        Self::InsufficientBalance,
        Self::SettlementCompleted,
        Self::NotDue,
        Self::AllocationReleased,
        Self::InvalidDispute,
        Self::AlreadyDisputed,
        Self::NotDisputable,
        Self::DisputeWindowClosed,
        Self::DisputeWindowOpen,
        Self::SettlementFinalizing,
        Self::DisputeClosed,
        Self::DisputeRetracted,
        Self::Refused,
        Self::InvalidPage,
        Self::InvalidCursor,
        Self::InvalidFilter,
        Self::InvalidQuery,
        Self::PositionAheadOfLog,
    ];

    const fn entry(self) -> Entry {
        match self {
            Self::NotFound => entry(
                "not_found",
                NOT_FOUND,
                "No such route, or the object the request names does not exist or belongs to \
                 another tenant.",
            ),
            Self::MethodNotAllowed => entry(
                "method_not_allowed",
                StatusCode::METHOD_NOT_ALLOWED,
                "The route exists but does not take this HTTP method.",
            ),
            Self::BadRequest => entry(
                "bad_request",
                BAD_REQUEST,
                "The request was refused before its handler ran, e.g. a path id that is not a \
                 UUID or a malformed query string.",
            ),
            Self::PayloadTooLarge => entry(
                "payload_too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "The body is larger than the route's limit; `limit` gives it in bytes.",
            ),
            Self::UnsupportedMediaType => entry(
                "unsupported_media_type",
                BAD_REQUEST,
                "The request has a body whose `Content-Type` is not `application/json`.",
            ),
            Self::MalformedBody => entry(
                "malformed_body",
                BAD_REQUEST,
                "The body could not be read (the connection failed while sending it).",
            ),
            Self::MalformedJson => entry(
                "malformed_json",
                BAD_REQUEST,
                "The body is not valid JSON, or not a JSON object; `field`, when present, is the \
                 path where parsing stopped.",
            ),
            Self::JsonTooDeep => entry(
                "json_too_deep",
                BAD_REQUEST,
                "The body nests objects and arrays deeper than `limit` levels.",
            ),
            Self::Timeout => entry(
                "timeout",
                StatusCode::REQUEST_TIMEOUT,
                "The request or its body was not received, or the request not handled, in time; \
                 a write that committed stays committed.",
            ),
            Self::RateLimited => entry(
                "rate_limited",
                StatusCode::TOO_MANY_REQUESTS,
                "The access token, or the address, sent too many requests; retry after \
                 `Retry-After` seconds.",
            ),
            Self::Overloaded => entry(
                "overloaded",
                UNAVAILABLE,
                "The process is handling as many requests as it takes; retry after `Retry-After` \
                 seconds.",
            ),
            Self::InternalError => entry(
                "internal_error",
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server failed; the log has the details under the request id.",
            ),
            Self::Contention => entry(
                "contention",
                UNAVAILABLE,
                "Too many concurrent changes to the same objects; retry the same request.",
            ),
            Self::EventTooLarge => entry(
                "event_too_large",
                StatusCode::PAYLOAD_TOO_LARGE,
                "The request would record an event larger than the event-size limit.",
            ),
            Self::ReadNotCaughtUp => entry(
                "read_not_caught_up",
                UNAVAILABLE,
                "The read models do not reflect the write named in `X-Min-Position` yet; retry \
                 after `Retry-After` seconds.",
            ),
            Self::InvalidMinPosition => entry(
                "invalid_min_position",
                BAD_REQUEST,
                "`X-Min-Position` is not a position token of this API.",
            ),
            Self::InvalidRequest => entry(
                "invalid_request",
                BAD_REQUEST,
                "The body does not have the route's shape: a field is missing, unknown or of the \
                 wrong type (`field` names it), or a value is out of range.",
            ),
            Self::IdempotencyConflict => entry(
                "idempotency_conflict",
                CONFLICT,
                "The request repeats an earlier one's identity (`externalId`, `Idempotency-Key`, \
                 deposit) with different content.",
            ),
            Self::InvalidIdempotencyKey => entry(
                "invalid_idempotency_key",
                BAD_REQUEST,
                "The `Idempotency-Key` header is empty, too long or not printable ASCII, or was \
                 sent twice.",
            ),
            Self::FieldEmpty => entry(
                "field_empty",
                BAD_REQUEST,
                "A required text field (`field`) is blank.",
            ),
            Self::FieldTooLong => entry(
                "field_too_long",
                BAD_REQUEST,
                "A text field (`field`) is longer than its limit in bytes.",
            ),
            Self::FieldControlCharacter => entry(
                "field_control_character",
                BAD_REQUEST,
                "A text field (`field`) holds a control character.",
            ),
            Self::TooManyItems => entry(
                "too_many_items",
                BAD_REQUEST,
                "A list or map (`field`) has more entries than its limit.",
            ),
            Self::Unauthenticated => entry(
                "unauthenticated",
                UNAUTHORIZED,
                "No access token, or an unknown one (on admin routes: not the admin token).",
            ),
            Self::UserDisabled => entry(
                "user_disabled",
                UNAUTHORIZED,
                "The token's user is disabled.",
            ),
            Self::NotAMember => entry(
                "not_a_member",
                UNAUTHORIZED,
                "The token's user is not a member of the enterprise in the path.",
            ),
            Self::NoOesLicense => entry(
                "no_oes_license",
                FORBIDDEN,
                "The enterprise has no OES licence.",
            ),
            Self::NoPartnerRecord => entry(
                "no_partner_record",
                FORBIDDEN,
                "A partner route, and the enterprise has no partner record.",
            ),
            Self::NoClientRecord => entry(
                "no_client_record",
                FORBIDDEN,
                "A client route, and the enterprise has no client record.",
            ),
            Self::PartnerInactive => Entry {
                code: "partner_inactive",
                status: FORBIDDEN,
                also: &[UNPROCESSABLE],
                meaning: "The partner is inactive: 403 on the partner's own routes, 422 when a \
                          client connects to it.",
            },
            Self::NotAnAuditor => entry(
                "not_an_auditor",
                FORBIDDEN,
                "An audit route, and the token's user is not an auditor.",
            ),
            Self::DisputesEnabled => entry(
                "disputes_enabled",
                FORBIDDEN,
                "A v1 settlement from a partner with disputes enabled; such partners stage \
                 settlements with v2.",
            ),
            Self::InvalidBody => entry(
                "invalid_body",
                BAD_REQUEST,
                "A signed request's body is not a JSON object.",
            ),
            Self::MissingPayload => entry(
                "missing_payload",
                BAD_REQUEST,
                "A signed request has no `payload`.",
            ),
            Self::InvalidPayload => entry(
                "invalid_payload",
                BAD_REQUEST,
                "`payload` is not a string holding a JSON object.",
            ),
            Self::PayloadMismatch => entry(
                "payload_mismatch",
                BAD_REQUEST,
                "`payload` does not say what the request's fields and path ids say.",
            ),
            Self::MissingSignature => entry(
                "missing_signature",
                BAD_REQUEST,
                "A signed request has no `signature`.",
            ),
            Self::InvalidSignatureFormat => entry(
                "invalid_signature_format",
                BAD_REQUEST,
                "`signature` is not the hex of 64 bytes.",
            ),
            Self::InvalidSignature => entry(
                "invalid_signature",
                UNAUTHORIZED,
                "The signature does not verify under any active key of the enterprise (or its \
                 key was revoked).",
            ),
            Self::MissingNonce => entry(
                "missing_nonce",
                BAD_REQUEST,
                "A signed request has no `nonce`.",
            ),
            Self::InvalidNonce => entry(
                "invalid_nonce",
                BAD_REQUEST,
                "`nonce` is not a string, is empty, is too long or holds a control character.",
            ),
            Self::NonceReused => entry(
                "nonce_reused",
                BAD_REQUEST,
                "The nonce was used before with a different payload.",
            ),
            Self::PathIdConflict => entry(
                "path_id_conflict",
                BAD_REQUEST,
                "A body field differs from the id of the same name in the path.",
            ),
            Self::InvalidPublicKey => entry(
                "invalid_public_key",
                BAD_REQUEST,
                "`publicKey` is not the hex of a 32-byte Ed25519 point.",
            ),
            Self::WeakPublicKey => entry(
                "weak_public_key",
                BAD_REQUEST,
                "`publicKey` is a small-order (weak) Ed25519 key, under which any signature \
                 could verify.",
            ),
            Self::AmountEmpty => {
                entry("amount_empty", BAD_REQUEST, "An amount is an empty string.")
            }
            Self::AmountNotANumber => entry(
                "amount_not_a_number",
                BAD_REQUEST,
                "An amount is not a number in the partner's amount format (no exponents, no \
                 spaces).",
            ),
            Self::AmountTooPrecise => entry(
                "amount_too_precise",
                BAD_REQUEST,
                "A decimal amount has more fractional digits than its currency's decimals; \
                 amounts are never rounded.",
            ),
            Self::AmountOverflow => entry(
                "amount_overflow",
                BAD_REQUEST,
                "An amount, or a balance it would produce, is out of range.",
            ),
            Self::AmountZero => entry(
                "amount_zero",
                BAD_REQUEST,
                "An amount that must not be zero is zero.",
            ),
            Self::AmountNegative => entry(
                "amount_negative",
                BAD_REQUEST,
                "An amount that must not be negative is negative.",
            ),
            Self::InvalidAmount => entry(
                "invalid_amount",
                BAD_REQUEST,
                "An allocation or deallocation quantity is not positive.",
            ),
            Self::UnknownCurrency => entry(
                "unknown_currency",
                BAD_REQUEST,
                "The currency is not in the currency table.",
            ),
            Self::BadCurrencyCode => entry(
                "bad_currency_code",
                BAD_REQUEST,
                "A currency code is not 1 to 16 upper-case ASCII letters or digits.",
            ),
            Self::InsufficientFunds => entry(
                "insufficient_funds",
                BAD_REQUEST,
                "An account's available balance does not cover the amount.",
            ),
            Self::InsufficientHeldFunds => entry(
                "insufficient_held_funds",
                BAD_REQUEST,
                "An account's held balance does not cover the amount.",
            ),
            Self::AlreadyExists => entry(
                "already_exists",
                CONFLICT,
                "The object exists already (enterprise, user, partner, client, connection, \
                 active key).",
            ),
            Self::EnterpriseNotFound => entry(
                "enterprise_not_found",
                UNPROCESSABLE,
                "An enterprise a new user should belong to does not exist.",
            ),
            Self::TooManyKeys => entry(
                "too_many_keys",
                UNPROCESSABLE,
                "The enterprise has as many active signing keys as allowed.",
            ),
            Self::InvalidWindow => entry(
                "invalid_window",
                BAD_REQUEST,
                "A window length is not a number of minutes ≥ 0, or null.",
            ),
            Self::InvalidWebhookUrl => entry(
                "invalid_webhook_url",
                BAD_REQUEST,
                "The webhook URL is malformed, or points where webhooks may not go (`reason` \
                 says which).",
            ),
            Self::UnsupportedConnectionKeySchema => entry(
                "unsupported_connection_key_schema",
                UNPROCESSABLE,
                "`connectionKey.schema` or a partner's `connectionKeySchema` names no known \
                 schema (token, tokenAndSignature, apiKeyAndSecret, clearloop).",
            ),
            Self::ConnectionKeySchemaMismatch => entry(
                "connection_key_schema_mismatch",
                UNPROCESSABLE,
                "The `connectionKey` is not of the partner's `connectionKeySchema`, which \
                 `connectionKeySchema` in the body names.",
            ),
            Self::InvalidSettlement => entry(
                "invalid_settlement",
                BAD_REQUEST,
                "The settlement breaks a staging rule: shape of `settlementAmounts`, unknown \
                 connection, `cutoffAt`, broker netting, empty v1.",
            ),
            Self::InsufficientBalance => entry(
                "insufficient_balance",
                UNPROCESSABLE,
                "Connections cannot cover their net liabilities; `shortfalls` names each \
                 connection and currency.",
            ),
            Self::SettlementCompleted => entry(
                "settlement_completed",
                CONFLICT,
                "The settlement is completed already.",
            ),
            Self::NotDue => entry(
                "not_due",
                UNPROCESSABLE,
                "The settlement's dispute or top-up window is still open, or it is finalized \
                 already.",
            ),
            Self::AllocationReleased => entry(
                "allocation_released",
                UNPROCESSABLE,
                "The (de)allocation was recorded and released at once (balance short or \
                 connection inactive); the body holds it with its `reason`.",
            ),
            Self::InvalidDispute => entry(
                "invalid_dispute",
                BAD_REQUEST,
                "The dispute's connection or `expectedTransfers` is not acceptable (not the \
                 client's, another connection's, empty, zero).",
            ),
            Self::AlreadyDisputed => entry(
                "already_disputed",
                CONFLICT,
                "This connection already disputes this settlement.",
            ),
            Self::NotDisputable => entry(
                "not_disputable",
                UNPROCESSABLE,
                "Settlements performed with v1 cannot be disputed.",
            ),
            Self::DisputeWindowClosed => entry(
                "dispute_window_closed",
                UNPROCESSABLE,
                "The settlement's dispute window has closed.",
            ),
            Self::DisputeWindowOpen => entry(
                "dispute_window_open",
                UNPROCESSABLE,
                "The settlement's dispute window is still open.",
            ),
            Self::SettlementFinalizing => entry(
                "settlement_finalizing",
                CONFLICT,
                "The dispute window has closed and the settlement is being finalized; retry \
                 shortly.",
            ),
            Self::DisputeClosed => entry("dispute_closed", UNPROCESSABLE, "The dispute is closed."),
            Self::DisputeRetracted => entry(
                "dispute_retracted",
                UNPROCESSABLE,
                "The dispute is retracted.",
            ),
            Self::Refused => entry(
                "refused",
                UNPROCESSABLE,
                "A recorded refusal of an earlier request, replayed, whose code this version no \
                 longer knows.",
            ),
            Self::InvalidPage => entry(
                "invalid_page",
                BAD_REQUEST,
                "`pageSize` or `pageNumber` is not a number in range.",
            ),
            Self::InvalidCursor => entry(
                "invalid_cursor",
                BAD_REQUEST,
                "`cursor` is not one this API issued.",
            ),
            Self::InvalidFilter => entry(
                "invalid_filter",
                BAD_REQUEST,
                "A list filter is malformed (ids, timestamps, booleans).",
            ),
            Self::InvalidQuery => entry(
                "invalid_query",
                BAD_REQUEST,
                "An audit query parameter is malformed or the parameters contradict each other.",
            ),
            Self::PositionAheadOfLog => entry(
                "position_ahead_of_log",
                BAD_REQUEST,
                "`atPosition` is past the head of the event log.",
            ),
        }
    }

    /// The `code` of the error body: stable snake_case.
    pub const fn code(self) -> &'static str {
        self.entry().code
    }

    /// The HTTP status the code is answered with.
    pub const fn status(self) -> StatusCode {
        self.entry().status
    }

    /// Every status the code can be answered with: `status()` first, then those some routes use
    /// instead (`ApiError::with_status`).
    pub fn statuses(self) -> Vec<StatusCode> {
        let entry = self.entry();
        std::iter::once(entry.status)
            .chain(entry.also.iter().copied())
            .collect()
    }

    /// One line saying what the code means.
    pub const fn meaning(self) -> &'static str {
        self.entry().meaning
    }

    /// The code whose `code()` is `text` (e.g. one recorded in a command's outcome).
    pub fn from_code(text: &str) -> Option<Self> {
        Self::ALL.iter().copied().find(|c| c.code() == text)
    }

    /// The Markdown table of every code with its statuses and meaning, by status then code (in
    /// `docs/errors.md` and the OpenAPI document's description).
    pub fn table() -> String {
        let mut table = String::from("| code | HTTP status | meaning |\n|---|---|---|\n");
        let mut codes = Self::ALL.to_vec();
        codes.sort_by_key(|c| (c.status().as_u16(), c.code()));
        for code in codes {
            let statuses: Vec<String> = code
                .statuses()
                .iter()
                .map(|s| s.as_u16().to_string())
                .collect();
            table.push_str(&format!(
                "| `{}` | {} | {} |\n",
                code.code(),
                statuses.join(", "),
                code.meaning()
            ));
        }
        table
    }

    /// The Markdown of `docs/errors.md`: every code with its statuses and meaning.
    pub fn markdown() -> String {
        let mut doc = String::from(
            "# Error codes\n\n\
             Every error response has the body `{\"error\": \"<sentence>\", \"code\": \"<code>\", \
             \"requestId\": \"<id>\"}` ([guide](api/guide.md#errors)), sometimes with more fields (`field`, `limit`, \
             `reason`, `shortfalls`, the released allocation). These are all the codes, with the \
             HTTP status each is answered with. Codes never change; new ones may be added.\n\n\
             Generated from `ErrorCode` (`command-api/src/http/codes.rs`); do not edit by hand. \
             Regenerate with `SETTLE_BLESS=1 cargo test -p command-api errors_doc`.\n\n\
             ",
        );
        doc.push_str(&Self::table());
        doc
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

impl From<&LimitError> for ErrorCode {
    fn from(e: &LimitError) -> Self {
        match e {
            LimitError::Empty { .. } => Self::FieldEmpty,
            LimitError::TooLong { .. } => Self::FieldTooLong,
            LimitError::ControlCharacter { .. } => Self::FieldControlCharacter,
            LimitError::TooMany { .. } => Self::TooManyItems,
        }
    }
}

impl From<&MoneyError> for ErrorCode {
    fn from(e: &MoneyError) -> Self {
        match e {
            MoneyError::Empty => Self::AmountEmpty,
            MoneyError::NotANumber { .. } => Self::AmountNotANumber,
            MoneyError::TooPrecise { .. } => Self::AmountTooPrecise,
            MoneyError::Overflow => Self::AmountOverflow,
            MoneyError::Zero => Self::AmountZero,
            MoneyError::Negative => Self::AmountNegative,
            MoneyError::UnknownCurrency(_) => Self::UnknownCurrency,
            MoneyError::BadCurrencyCode => Self::BadCurrencyCode,
            MoneyError::Insufficient { .. } => Self::InsufficientFunds,
            MoneyError::InsufficientHeld { .. } => Self::InsufficientHeldFunds,
            // Faults of the currency table, which is loaded at start-up: never the caller's.
            MoneyError::DuplicateCurrency(_)
            | MoneyError::DecimalsTooLarge { .. }
            | MoneyError::BadCurrencyTable(_) => Self::InternalError,
        }
    }
}

impl From<&SignatureError> for ErrorCode {
    fn from(e: &SignatureError) -> Self {
        match e {
            SignatureError::NotHex | SignatureError::WrongLength { .. } => {
                Self::InvalidSignatureFormat
            }
        }
    }
}

impl From<&SigningError> for ErrorCode {
    fn from(e: &SigningError) -> Self {
        match e {
            SigningError::BodyNotAnObject => Self::InvalidBody,
            SigningError::MissingPayload => Self::MissingPayload,
            SigningError::PayloadNotAString
            | SigningError::PayloadNotJson { .. }
            | SigningError::PayloadNotAnObject => Self::InvalidPayload,
            SigningError::PayloadMismatch => Self::PayloadMismatch,
            SigningError::MissingSignature => Self::MissingSignature,
            SigningError::SignatureNotAString => Self::InvalidSignatureFormat,
            SigningError::SignatureFormat(inner) => inner.into(),
            SigningError::MissingNonce => Self::MissingNonce,
            SigningError::NonceNotAString
            | SigningError::NonceEmpty
            | SigningError::NonceTooLong { .. }
            | SigningError::NonceControlCharacter => Self::InvalidNonce,
            SigningError::PathIdConflict { .. } => Self::PathIdConflict,
        }
    }
}

impl From<&KeyError> for ErrorCode {
    fn from(e: &KeyError) -> Self {
        match e {
            KeyError::NotHex | KeyError::WrongLength { .. } | KeyError::NotAPoint => {
                Self::InvalidPublicKey
            }
            KeyError::Weak => Self::WeakPublicKey,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use strum::IntoEnumIterator;

    use super::*;

    #[test]
    fn all_lists_every_code_once_in_declaration_order() {
        let every: Vec<ErrorCode> = ErrorCode::iter().collect();
        assert_eq!(
            ErrorCode::ALL,
            every.as_slice(),
            "ErrorCode::ALL must list every variant, in declaration order"
        );
    }

    #[test]
    fn codes_are_unique_snake_case_and_documented() {
        let mut seen = BTreeSet::new();
        for code in ErrorCode::ALL {
            let text = code.code();
            assert!(seen.insert(text), "{text} is the code of two variants");
            assert!(
                !text.is_empty() && text.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{text} is not snake_case"
            );
            assert!(
                code.status().is_client_error() || code.status().is_server_error(),
                "{text}: an error code needs an error status"
            );
            let meaning = code.meaning();
            assert!(
                meaning.ends_with('.') && !meaning.contains('\n') && !meaning.contains('|'),
                "{text}: the meaning is one sentence line that fits a table cell"
            );
            assert_eq!(ErrorCode::from_code(text), Some(*code));
        }
    }

    /// The domain's own code strings and the registry agree, variant by variant.
    #[test]
    fn domain_refusals_keep_their_code_strings() {
        let limits = [
            LimitError::Empty { field: "f" },
            LimitError::TooLong { field: "f", max: 1 },
            LimitError::ControlCharacter {
                field: "f",
                code: 0,
            },
            LimitError::TooMany { field: "f", max: 1 },
        ];
        for e in &limits {
            assert_eq!(ErrorCode::from(e).code(), e.code(), "{e:?}");
        }
        let money = [
            MoneyError::Empty,
            MoneyError::NotANumber {
                format: events::domain::money::AmountFormat::BaseUnits,
            },
            MoneyError::TooPrecise { decimals: 8 },
            MoneyError::Overflow,
            MoneyError::Zero,
            MoneyError::Negative,
            MoneyError::UnknownCurrency("X".into()),
            MoneyError::BadCurrencyCode,
            MoneyError::Insufficient {
                available: 0,
                requested: 1,
            },
            MoneyError::InsufficientHeld {
                held: 0,
                requested: 1,
            },
        ];
        for e in &money {
            assert_eq!(ErrorCode::from(e).code(), e.code(), "{e:?}");
        }
        let signatures = [
            SignatureError::NotHex,
            SignatureError::WrongLength { bytes: 1 },
        ];
        for e in &signatures {
            assert_eq!(ErrorCode::from(e).code(), e.code(), "{e:?}");
        }
        let signing = [
            SigningError::BodyNotAnObject,
            SigningError::MissingPayload,
            SigningError::PayloadNotAString,
            SigningError::PayloadNotJson { reason: "r".into() },
            SigningError::PayloadNotAnObject,
            SigningError::PayloadMismatch,
            SigningError::MissingSignature,
            SigningError::SignatureNotAString,
            SigningError::SignatureFormat(SignatureError::NotHex),
            SigningError::MissingNonce,
            SigningError::NonceNotAString,
            SigningError::NonceEmpty,
            SigningError::NonceTooLong { chars: 201 },
            SigningError::NonceControlCharacter,
            SigningError::PathIdConflict { name: "n".into() },
        ];
        for e in &signing {
            assert_eq!(ErrorCode::from(e).code(), e.code(), "{e:?}");
        }
        let keys = [
            KeyError::NotHex,
            KeyError::WrongLength { bytes: 1 },
            KeyError::NotAPoint,
            KeyError::Weak,
        ];
        for e in &keys {
            assert_eq!(ErrorCode::from(e).code(), e.code(), "{e:?}");
        }
    }

    /// `docs/errors.md` is generated from the registry; `SETTLE_BLESS=1` rewrites it.
    #[test]
    fn errors_doc_matches_the_registry() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/errors.md");
        let rendered = ErrorCode::markdown();
        if std::env::var_os("SETTLE_BLESS").is_some() {
            std::fs::write(&path, &rendered).expect("write docs/errors.md");
            return;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == rendered,
            "docs/errors.md is out of date with ErrorCode; regenerate it with \
             `SETTLE_BLESS=1 cargo test -p command-api errors_doc` and commit the result"
        );
    }
}
