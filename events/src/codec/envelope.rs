//! Event envelopes: the encoded payload with its permanent type id and schema version, the event
//! as stored (stream, version, metadata, time), as sequenced (global position and chain hash),
//! and the wire form the relay publishes to NATS.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::upcast::{upcast, UPCASTERS};
use super::ChainHash;
use crate::domain::event::Timestamp;
use crate::domain::{DomainEvent, StreamName};

/// Layout byte of the current wire form.
const WIRE_LAYOUT_V1: u8 = 1;

/// Why bytes could not be turned back into an event. Never a panic.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type id {type_id}")]
    UnknownType { type_id: u32 },
    #[error(
        "event type {type_id} has no decoder for schema version {version} (current {current})"
    )]
    UnsupportedVersion {
        type_id: u32,
        version: u16,
        current: u16,
    },
    #[error("unknown {what} layout {layout}")]
    UnknownLayout { what: &'static str, layout: u8 },
    #[error("malformed {what}: {reason}")]
    Malformed { what: &'static str, reason: String },
}

/// A payload with its permanent type id and the schema version it was written with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EncodedEvent {
    pub type_id: u32,
    pub schema_version: u16,
    pub payload: Vec<u8>,
}

/// An event as the store holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    pub event_id: Uuid,
    pub stream: StreamName,
    /// 1-based version within its stream.
    pub version: u64,
    pub event: EncodedEvent,
    /// `Metadata::encode` bytes, kept as stored so the chain hash covers them exactly.
    pub metadata: Vec<u8>,
    pub recorded_at: Timestamp,
}

/// An event with its place in the global order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequencedEvent {
    pub position: u64,
    pub hash: ChainHash,
    pub stored: StoredEvent,
}

pub fn encode_event(event: &DomainEvent) -> EncodedEvent {
    let kind = event.event_type();
    EncodedEvent {
        type_id: kind.id,
        schema_version: kind.version,
        // Serializing owned plain data into a Vec cannot fail.
        payload: event.encode_payload().unwrap_or_default(),
    }
}

/// Decodes any stored version of any known type, upcasting old versions first.
pub fn decode_event(encoded: &EncodedEvent) -> Result<DomainEvent, DecodeError> {
    let type_id = encoded.type_id;
    let current = DomainEvent::TYPES
        .iter()
        .find(|t| t.id == type_id)
        .ok_or(DecodeError::UnknownType { type_id })?
        .version;
    let payload = upcast(
        UPCASTERS,
        type_id,
        encoded.schema_version,
        current,
        &encoded.payload,
    )?;
    match DomainEvent::decode_payload(type_id, &payload) {
        Some(Ok(event)) => Ok(event),
        Some(Err(e)) => Err(DecodeError::Malformed {
            what: "payload",
            reason: e.to_string(),
        }),
        None => Err(DecodeError::UnknownType { type_id }),
    }
}

impl SequencedEvent {
    /// The bytes the relay publishes: a layout byte, then postcard.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut out =
            Vec::with_capacity(96 + self.stored.event.payload.len() + self.stored.metadata.len());
        out.push(WIRE_LAYOUT_V1);
        // Serializing owned plain data into a Vec cannot fail.
        out.extend(postcard::to_stdvec(self).unwrap_or_default());
        out
    }

    pub fn from_wire(bytes: &[u8]) -> Result<Self, DecodeError> {
        match bytes.split_first() {
            Some((&WIRE_LAYOUT_V1, rest)) => {
                postcard::from_bytes(rest).map_err(|e| DecodeError::Malformed {
                    what: "wire event",
                    reason: e.to_string(),
                })
            }
            Some((&layout, _)) => Err(DecodeError::UnknownLayout {
                what: "wire event",
                layout,
            }),
            None => Err(DecodeError::Malformed {
                what: "wire event",
                reason: "empty".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::enterprise::EnterpriseCreated;

    #[test]
    fn unknown_types_versions_and_garbage_are_errors() {
        let e = EncodedEvent {
            type_id: 60_000,
            schema_version: 1,
            payload: vec![],
        };
        assert_eq!(
            decode_event(&e),
            Err(DecodeError::UnknownType { type_id: 60_000 })
        );
        let e = EncodedEvent {
            type_id: 1,
            schema_version: 9,
            payload: vec![],
        };
        assert_eq!(
            decode_event(&e),
            Err(DecodeError::UnsupportedVersion {
                type_id: 1,
                version: 9,
                current: 1
            })
        );
        let e = EncodedEvent {
            type_id: 1,
            schema_version: 1,
            payload: vec![0xff; 3],
        };
        assert!(matches!(
            decode_event(&e),
            Err(DecodeError::Malformed { .. })
        ));
        assert!(matches!(
            SequencedEvent::from_wire(&[]),
            Err(DecodeError::Malformed { .. })
        ));
        assert_eq!(
            SequencedEvent::from_wire(&[7, 1]),
            Err(DecodeError::UnknownLayout {
                what: "wire event",
                layout: 7
            })
        );
        assert!(matches!(
            SequencedEvent::from_wire(&[1, 0xff]),
            Err(DecodeError::Malformed { .. })
        ));
    }

    #[test]
    fn round_trips() {
        let event: DomainEvent = EnterpriseCreated {
            enterprise_id: Uuid::from_u128(1),
            name: "A".into(),
            oes_license: true,
            at: Timestamp(5),
        }
        .into();
        assert_eq!(decode_event(&encode_event(&event)).unwrap(), event);
    }
}
