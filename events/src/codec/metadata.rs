//! Metadata that travels with every event: which command produced it, why, for whom, and with
//! which signing key. Encoded as postcard behind a layout byte so the layout can evolve.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DecodeError;
use crate::domain::CommandId;

/// Layout byte of the current metadata encoding.
const METADATA_LAYOUT_V1: u8 = 1;

/// Who caused an event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Actor {
    /// The engine itself (finalizer, sequencer, scheduled retries).
    System,
    /// An operator holding the admin token.
    Admin,
    /// A user with an access token.
    User(Uuid),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metadata {
    pub command_id: CommandId,
    /// The event or command that caused this command, when there is one.
    pub causation_id: Option<Uuid>,
    /// The id shared by every command of one business flow (e.g. a settlement's lifecycle).
    pub correlation_id: Uuid,
    pub actor: Actor,
    /// The HTTP request id (`X-Request-Id`) that carried the command, if any.
    pub request_id: Option<String>,
    /// The signing key that verified the command's signature, if it was signed.
    pub key_id: Option<Uuid>,
}

impl Metadata {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![METADATA_LAYOUT_V1];
        // Serializing owned plain data into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            Some((&METADATA_LAYOUT_V1, rest)) => {
                postcard::from_bytes(rest).map_err(|e| DecodeError::Malformed {
                    what: "metadata",
                    reason: e.to_string(),
                })
            }
            Some((&layout, _)) => Err(DecodeError::UnknownLayout {
                what: "metadata",
                layout,
            }),
            None => Err(DecodeError::Malformed {
                what: "metadata",
                reason: "empty".into(),
            }),
        }
    }
}
