//! Pure encoding of events: postcard payloads keyed by permanent `(type id, schema version)`,
//! upcasting of old versions, metadata, the NATS wire form and the SHA-256 hash chain.

pub mod chain;
pub mod envelope;
pub mod legacy;
pub mod metadata;
pub mod upcast;

pub use chain::{chain_hash, ChainHash, GENESIS_HASH};
pub use envelope::{
    decode_event, encode_event, DecodeError, EncodedEvent, SequencedEvent, StoredEvent,
};
pub use metadata::{Actor, Metadata};
