//! The signed request behind an event (docs/api/signatures.md): the exact `payload` string the
//! caller signed, its hex `signature` and the id of the enterprise key that verified it when it was
//! accepted — kept in the event so an auditor can re-verify, years later, who instructed what.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A signed request as accepted. The bytes are kept exactly as received: re-serialising the
/// payload would change what the signature covers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub payload: String,
    pub signature: String,
    pub key_id: Uuid,
}
