//! Deterministic ids. A command's id is derived from what makes it unique (e.g. partner +
//! externalId), and each of its events' ids from the command id and the event's index, so a
//! retried append can never create twins: the same ids collide on the primary key.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::limits::MAX_IDEMPOTENCY_KEY_BYTES;

/// Namespace of every id this product derives (UUID v5).
const NAMESPACE: Uuid = Uuid::from_u128(0x6f1e_2a4c_9b3d_4e8f_a1c2_5d6e_7f80_9a1b);

/// The identity of one command, stable across retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CommandId(Uuid);

impl CommandId {
    pub const fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    /// A command id derived from a kind and the parts that make the command unique.
    /// Parts are length-prefixed so `("ab","c")` and `("a","bc")` differ.
    pub fn derive(kind: &str, parts: &[&[u8]]) -> Self {
        let mut name = Vec::with_capacity(64);
        for part in std::iter::once(kind.as_bytes()).chain(parts.iter().copied()) {
            name.extend_from_slice(&(part.len() as u64).to_be_bytes());
            name.extend_from_slice(part);
        }
        Self(Uuid::new_v5(&NAMESPACE, &name))
    }

    pub const fn as_uuid(&self) -> Uuid {
        self.0
    }
}

/// A signed command whose only identity is its nonce (unique per enterprise,
/// docs/api/signatures.md): connects, renames and the client's dispute commands. The same nonce
/// is the same command, so a retry answers as the first time and another payload under it is a
/// reuse.
pub fn signed_command_id(enterprise_id: Uuid, nonce: &str) -> CommandId {
    CommandId::derive("signed", &[enterprise_id.as_bytes(), nonce.as_bytes()])
}

/// Why an `Idempotency-Key` was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyKeyError {
    #[error("the Idempotency-Key is empty")]
    Empty,
    #[error("the Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY_BYTES} bytes")]
    TooLong,
    #[error("the Idempotency-Key may hold only printable ASCII characters")]
    BadCharacter,
}

/// A caller's name for one create request (the admin API's `Idempotency-Key`): 1 to
/// `MAX_IDEMPOTENCY_KEY_BYTES` printable ASCII bytes. The same key on the same route is the same
/// command, so a retry answers with the first outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(bytes: &[u8]) -> Result<Self, IdempotencyKeyError> {
        if bytes.is_empty() {
            return Err(IdempotencyKeyError::Empty);
        }
        if bytes.len() > MAX_IDEMPOTENCY_KEY_BYTES {
            return Err(IdempotencyKeyError::TooLong);
        }
        if !bytes.iter().all(|b| (0x20..=0x7e).contains(b)) {
            return Err(IdempotencyKeyError::BadCharacter);
        }
        Ok(Self(bytes.iter().map(|b| char::from(*b)).collect()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The command id of a request to `route` (a fixed name) with the path ids `path_ids`
    /// under this key: the same route, ids and key always name the same command.
    pub fn command_id(&self, route: &str, path_ids: &[&[u8]]) -> CommandId {
        let mut parts: Vec<&[u8]> = path_ids.to_vec();
        parts.push(self.0.as_bytes());
        CommandId::derive(&format!("idempotency-key:{route}"), &parts)
    }

    /// A new entity's id derived from the command, so a raced retry targets the same stream.
    pub fn entity_id(&self, route: &str, path_ids: &[&[u8]]) -> Uuid {
        Uuid::new_v5(&NAMESPACE, self.command_id(route, path_ids).0.as_bytes())
    }
}

/// The id of the `index`-th event a command produces.
pub fn event_id(command: CommandId, index: u32) -> Uuid {
    let mut name = [0u8; 20];
    name[..16].copy_from_slice(command.0.as_bytes());
    name[16..].copy_from_slice(&index.to_be_bytes());
    Uuid::new_v5(&NAMESPACE, &name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_and_distinct() {
        let a = CommandId::derive("stage", &[b"partner", b"ext-1"]);
        assert_eq!(a, CommandId::derive("stage", &[b"partner", b"ext-1"]));
        assert_ne!(a, CommandId::derive("stage", &[b"partne", b"rext-1"]));
        assert_ne!(a, CommandId::derive("perform", &[b"partner", b"ext-1"]));
        assert_eq!(event_id(a, 3), event_id(a, 3));
        assert_ne!(event_id(a, 3), event_id(a, 4));
    }

    #[test]
    fn signed_command_ids_are_derived_as_they_always_were() {
        let e = Uuid::from_u128(0x1111);
        let id = signed_command_id(e, "n-1");
        assert_eq!(id, CommandId::derive("signed", &[e.as_bytes(), b"n-1"]));
        // Pinned: recorded commands and nonces carry these ids.
        assert_eq!(
            id.as_uuid(),
            Uuid::parse_str("7dc24a24-606e-50bf-a560-5b102475e335").expect("uuid")
        );
        assert_ne!(id, signed_command_id(e, "n-2"));
        assert_ne!(id, signed_command_id(Uuid::from_u128(0x2222), "n-1"));
    }

    #[test]
    fn idempotency_keys_are_bounded_printable_ascii_and_name_a_command_per_route() {
        assert_eq!(IdempotencyKey::parse(b""), Err(IdempotencyKeyError::Empty));
        assert_eq!(
            IdempotencyKey::parse(&[b'k'; MAX_IDEMPOTENCY_KEY_BYTES + 1]),
            Err(IdempotencyKeyError::TooLong)
        );
        for bad in [&b"a\tb"[..], b"caf\xc3\xa9", b"\x7f"] {
            assert_eq!(
                IdempotencyKey::parse(bad),
                Err(IdempotencyKeyError::BadCharacter)
            );
        }
        let longest = IdempotencyKey::parse(&[b'~'; MAX_IDEMPOTENCY_KEY_BYTES]).expect("fits");
        let key = IdempotencyKey::parse(b"create 7").expect("key");
        assert_eq!(key.as_str(), "create 7");
        assert_eq!(
            key.command_id("create-enterprise", &[]),
            IdempotencyKey::parse(b"create 7")
                .expect("key")
                .command_id("create-enterprise", &[])
        );
        assert_ne!(
            key.command_id("create-enterprise", &[]),
            key.command_id("create-user", &[])
        );
        assert_ne!(
            key.command_id("register-key", &[b"e1"]),
            key.command_id("register-key", &[b"e2"])
        );
        assert_ne!(
            key.command_id("create-user", &[]),
            longest.command_id("create-user", &[])
        );
        assert_ne!(
            key.entity_id("create-user", &[]),
            key.command_id("create-user", &[]).as_uuid()
        );
    }
}
