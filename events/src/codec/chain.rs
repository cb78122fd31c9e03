//! The SHA-256 hash chain over the global order: each position's hash covers the previous hash
//! and every stored byte of the event, so changing any stored event breaks every later link.

use sha2::{Digest, Sha256};

use super::StoredEvent;

pub type ChainHash = [u8; 32];

/// The hash "before" position 1.
pub const GENESIS_HASH: ChainHash = [0; 32];

fn put_bytes(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// `hash(n) = SHA-256(hash(n-1) ‖ n ‖ event id ‖ stream ‖ version ‖ type ‖ schema version ‖
/// recorded time ‖ payload ‖ metadata)`, variable-length fields length-prefixed.
pub fn chain_hash(previous: &ChainHash, position: u64, event: &StoredEvent) -> ChainHash {
    let mut h = Sha256::new();
    h.update(previous);
    h.update(position.to_be_bytes());
    h.update(event.event_id.as_bytes());
    put_bytes(&mut h, event.stream.category().as_bytes());
    put_bytes(&mut h, event.stream.id().as_bytes());
    h.update(event.version.to_be_bytes());
    h.update(event.event.type_id.to_be_bytes());
    h.update(event.event.schema_version.to_be_bytes());
    h.update(event.recorded_at.0.to_be_bytes());
    put_bytes(&mut h, &event.event.payload);
    put_bytes(&mut h, &event.metadata);
    h.finalize().into()
}
