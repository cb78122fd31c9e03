//! The event vocabulary: every event the product records, each with a permanent type id.
//!
//! A type id is never reused and a published `(type id, schema version)` layout never changes;
//! a changed layout is a new version plus an upcaster in `codec::upcast`.

use serde::{Deserialize, Serialize};

use super::client::ClientRegistered;
use super::connection::{
    AllocationCleared, AllocationReleased, ConnectionCreated, ConnectionUpdated,
};
use super::custody::{CustodyAllocated, CustodyDeallocated, DepositCredited};
use super::dispute::{
    ClosureQueued, ClosuresAssigned, ClosuresJoined, DisputeClosed, DisputeRaised, DisputeUpdated,
};
use super::enterprise::{
    EnterpriseCreated, EnterpriseLicenseSet, SigningKeyRegistered, SigningKeyRevoked,
    WebhookConfigured,
};
use super::partner::{PartnerCutoffAdvanced, PartnerRegistered, PartnerUpdated};
use super::settlement::{
    ConnectionSettled, CustodySettled, FundsHeld, FundsReleased, SettlementExecuted,
    SettlementFailed, SettlementFinalized, SettlementStaged,
};
use super::user::{UserCreated, UserDisabled, UserEnabled, UserTokenRotated};

/// Microseconds since the Unix epoch, UTC. The domain never reads a clock: callers pass it in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp(pub i64);

/// A permanent event type: id, current schema version and a stable name for logs and audit JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EventType {
    pub id: u32,
    pub version: u16,
    pub name: &'static str,
}

macro_rules! vocabulary {
    ($( $variant:ident = $id:literal v $version:literal ),* $(,)?) => {
        /// Every event of the product, as one value.
        #[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
        pub enum DomainEvent {
            $( $variant($variant), )*
        }

        impl DomainEvent {
            /// Every current event type, for the codec's registry and its golden corpus.
            pub const TYPES: &'static [EventType] = &[
                $( EventType { id: $id, version: $version, name: stringify!($variant) }, )*
            ];

            pub fn event_type(&self) -> EventType {
                match self {
                    $( Self::$variant(_) => EventType { id: $id, version: $version, name: stringify!($variant) }, )*
                }
            }

            /// Encodes the payload (without type id or version) as postcard.
            pub fn encode_payload(&self) -> Result<Vec<u8>, postcard::Error> {
                match self {
                    $( Self::$variant(e) => postcard::to_stdvec(e), )*
                }
            }

            /// Decodes a payload of the current version of type `type_id`; `None` for an unknown id.
            pub fn decode_payload(type_id: u32, bytes: &[u8]) -> Option<Result<Self, postcard::Error>> {
                match type_id {
                    $( $id => Some(postcard::from_bytes(bytes).map(Self::$variant)), )*
                    _ => None,
                }
            }
        }

        $( impl From<$variant> for DomainEvent {
            fn from(e: $variant) -> Self { Self::$variant(e) }
        } )*
    };
}

vocabulary! {
    EnterpriseCreated = 1 v 1,
    EnterpriseLicenseSet = 2 v 1,
    SigningKeyRegistered = 3 v 1,
    SigningKeyRevoked = 4 v 1,
    UserCreated = 5 v 1,
    PartnerRegistered = 6 v 2,
    PartnerUpdated = 7 v 2,
    ClientRegistered = 8 v 1,
    DepositCredited = 9 v 1,
    CustodyAllocated = 10 v 1,
    CustodyDeallocated = 11 v 1,
    ConnectionCreated = 12 v 3,
    ConnectionUpdated = 13 v 2,
    AllocationCleared = 14 v 2,
    AllocationReleased = 15 v 2,
    SettlementStaged = 16 v 1,
    FundsHeld = 17 v 1,
    ConnectionSettled = 18 v 1,
    CustodySettled = 19 v 1,
    SettlementExecuted = 20 v 1,
    SettlementFailed = 21 v 1,
    PartnerCutoffAdvanced = 22 v 1,
    DisputeRaised = 23 v 1,
    DisputeUpdated = 24 v 1,
    DisputeClosed = 25 v 1,
    ClosureQueued = 26 v 1,
    ClosuresJoined = 27 v 1,
    ClosuresAssigned = 28 v 1,
    SettlementFinalized = 29 v 1,
    FundsReleased = 30 v 1,
    WebhookConfigured = 31 v 1,
    UserDisabled = 32 v 1,
    UserEnabled = 33 v 1,
    UserTokenRotated = 34 v 1,
}
