//! Deterministic ids. A command's id is derived from what makes it unique (e.g. partner +
//! externalId), and each of its events' ids from the command id and the event's index, so a
//! retried append can never create twins: the same ids collide on the primary key.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

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
}
