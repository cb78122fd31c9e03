//! A signed request body split into what the command API needs: the exact payload and signature
//! (kept in events for auditors), the nonce, and the fields the payload was checked against.

use serde_json::{Map, Value};

use super::canonical::parse_json_strict;
use super::{canonical_payload, payload_hash, verify, KeyId, PublicKey, Signature, SignatureError};

/// Longest nonce accepted, in characters: room for a UUID or a timestamp with a counter, while
/// bounding what the nonce table stores per request.
pub const NONCE_CHARS_MAX: usize = 200;

const PAYLOAD: &str = "payload";
const SIGNATURE: &str = "signature";
const NONCE: &str = "nonce";

/// Why a signed request body was refused before (or instead of) signature verification.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    #[error("request body must be a JSON object")]
    BodyNotAnObject,
    #[error("payload is required")]
    MissingPayload,
    #[error("payload must be a string holding a JSON object")]
    PayloadNotAString,
    #[error("payload is not valid JSON: {reason}")]
    PayloadNotJson { reason: String },
    #[error("payload must hold a JSON object")]
    PayloadNotAnObject,
    #[error("payload does not match request")]
    PayloadMismatch,
    #[error("signature is required")]
    MissingSignature,
    #[error("signature must be a string of hex")]
    SignatureNotAString,
    #[error(transparent)]
    SignatureFormat(#[from] SignatureError),
    #[error("nonce is required")]
    MissingNonce,
    #[error("nonce must be a string")]
    NonceNotAString,
    #[error("nonce must not be empty")]
    NonceEmpty,
    #[error("nonce must be at most {max} characters, got {chars}", max = NONCE_CHARS_MAX)]
    NonceTooLong { chars: usize },
    /// Control characters (NUL included) would reach the nonce table's `text` column.
    #[error("nonce contains a control character")]
    NonceControlCharacter,
    #[error("body field {name:?} differs from the id in the request path")]
    PathIdConflict { name: String },
}

impl SigningError {
    /// A stable snake_case code for the error body. Variants a client fixes the same way share
    /// a code; the message says which one it was.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::BodyNotAnObject => "invalid_body",
            Self::MissingPayload => "missing_payload",
            Self::PayloadNotAString | Self::PayloadNotJson { .. } | Self::PayloadNotAnObject => {
                "invalid_payload"
            }
            Self::PayloadMismatch => "payload_mismatch",
            Self::MissingSignature => "missing_signature",
            Self::SignatureNotAString => "invalid_signature_format",
            Self::SignatureFormat(inner) => inner.code(),
            Self::MissingNonce => "missing_nonce",
            Self::NonceNotAString
            | Self::NonceEmpty
            | Self::NonceTooLong { .. }
            | Self::NonceControlCharacter => "invalid_nonce",
            Self::PathIdConflict { .. } => "path_id_conflict",
        }
    }
}

/// A request body whose `payload` says exactly what the rest of the request says. Whether the
/// signature verifies is the caller's next step ([`SignedRequest::verify`]); the HTTP statuses
/// differ (400 for everything here, 401 for a signature no active key accepts).
#[derive(Clone, Debug, PartialEq)]
pub struct SignedRequest {
    payload: String,
    signature: Signature,
    nonce: String,
    fields: Map<String, Value>,
}

impl SignedRequest {
    /// Splits `body` (the parsed request body) into payload, signature and fields, and requires
    /// the payload to equal the body's other fields plus `path_ids` (the route's ids,
    /// docs/api/signatures.md).
    pub fn parse(body: &Value, path_ids: &[(&str, String)]) -> Result<Self, SigningError> {
        let body = body.as_object().ok_or(SigningError::BodyNotAnObject)?;
        let payload = required_str(body, PAYLOAD, SigningError::MissingPayload)
            .and_then(|p| p.ok_or(SigningError::PayloadNotAString))?;
        let signature = required_str(body, SIGNATURE, SigningError::MissingSignature)
            .and_then(|s| s.ok_or(SigningError::SignatureNotAString))?;
        let signature = Signature::parse_hex(signature)?;
        let fields = expected_fields(body, path_ids)?;
        let nonce = checked_nonce(&fields)?.to_owned();
        if parse_payload(payload)? != fields {
            return Err(SigningError::PayloadMismatch);
        }
        Ok(Self {
            payload: payload.to_owned(),
            signature,
            nonce,
            fields,
        })
    }

    /// The payload exactly as the partner sent and signed it.
    pub fn payload(&self) -> &str {
        &self.payload
    }

    pub const fn signature(&self) -> &Signature {
        &self.signature
    }

    pub fn nonce(&self) -> &str {
        &self.nonce
    }

    /// The body's fields other than `payload` and `signature`, plus the path ids.
    pub const fn fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// The hash the nonce table keeps, to tell a retry (same hash) from a reuse.
    pub fn payload_hash(&self) -> [u8; 32] {
        payload_hash(&self.fields)
    }

    /// The id of the first active key under which the signature verifies.
    pub fn verify(&self, active_keys: &[(KeyId, PublicKey)]) -> Option<KeyId> {
        verify(&self.payload, &self.signature, active_keys)
    }
}

/// The canonical payload for a `…/signing` route: the body without `payload`/`signature`, plus
/// the path ids. The nonce is required here too: a payload without one could never be accepted.
pub fn signing_payload(body: &Value, path_ids: &[(&str, String)]) -> Result<String, SigningError> {
    let body = body.as_object().ok_or(SigningError::BodyNotAnObject)?;
    let fields = expected_fields(body, path_ids)?;
    checked_nonce(&fields)?;
    Ok(canonical_payload(&fields))
}

/// `Err(missing)` when absent, `Ok(None)` when present but not a string.
fn required_str<'a>(
    body: &'a Map<String, Value>,
    name: &str,
    missing: SigningError,
) -> Result<Option<&'a str>, SigningError> {
    body.get(name).map(Value::as_str).ok_or(missing)
}

/// What the payload must equal. A body field named like a path id must agree with the path:
/// otherwise the signed payload could name one object while the route acts on another.
fn expected_fields(
    body: &Map<String, Value>,
    path_ids: &[(&str, String)],
) -> Result<Map<String, Value>, SigningError> {
    let mut fields: Map<String, Value> = body
        .iter()
        .filter(|(name, _)| name.as_str() != PAYLOAD && name.as_str() != SIGNATURE)
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    for (name, id) in path_ids {
        let id = Value::String(id.clone());
        if fields.get(*name).is_some_and(|existing| *existing != id) {
            return Err(SigningError::PathIdConflict {
                name: (*name).to_owned(),
            });
        }
        fields.insert((*name).to_owned(), id);
    }
    Ok(fields)
}

fn checked_nonce(fields: &Map<String, Value>) -> Result<&str, SigningError> {
    let nonce = fields.get(NONCE).ok_or(SigningError::MissingNonce)?;
    let nonce = nonce.as_str().ok_or(SigningError::NonceNotAString)?;
    if nonce.is_empty() {
        return Err(SigningError::NonceEmpty);
    }
    let chars = nonce.chars().count();
    if chars > NONCE_CHARS_MAX {
        return Err(SigningError::NonceTooLong { chars });
    }
    if nonce.chars().any(char::is_control) {
        return Err(SigningError::NonceControlCharacter);
    }
    Ok(nonce)
}

fn parse_payload(payload: &str) -> Result<Map<String, Value>, SigningError> {
    let value = parse_json_strict(payload).map_err(|error| SigningError::PayloadNotJson {
        reason: error.to_string(),
    })?;
    match value {
        Value::Object(fields) => Ok(fields),
        _ => Err(SigningError::PayloadNotAnObject),
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
