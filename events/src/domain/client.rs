//! The client aggregate: the client record of an enterprise (docs/api/guide.md, "Client"). Its id
//! and its custody wallet id are derived from the enterprise's (one client record per enterprise).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{DomainEvent, Timestamp};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRegistered {
    pub client_id: Uuid,
    pub enterprise_id: Uuid,
    pub wallet_id: Uuid,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    pub wallet_id: Uuid,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Client {
    #[default]
    Absent,
    Present(ClientRecord),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ClientRejection {
    #[error("the enterprise already has a client record")]
    AlreadyExists,
}

/// The id of the client record of `enterprise_id`.
pub fn client_id_of(enterprise_id: Uuid) -> Uuid {
    Uuid::new_v5(&enterprise_id, b"client")
}

/// The custody wallet ("Go account") of `enterprise_id`.
pub fn wallet_id_of(enterprise_id: Uuid) -> Uuid {
    Uuid::new_v5(&enterprise_id, b"wallet")
}

impl Client {
    pub fn record(&self) -> Option<&ClientRecord> {
        match self {
            Self::Absent => None,
            Self::Present(r) => Some(r),
        }
    }

    pub fn evolve(self, event: &DomainEvent) -> Self {
        match (self, event) {
            (Self::Absent, DomainEvent::ClientRegistered(e)) => Self::Present(ClientRecord {
                id: e.client_id,
                enterprise_id: e.enterprise_id,
                wallet_id: e.wallet_id,
                created_at: e.at,
            }),
            (state, _) => state,
        }
    }

    pub fn decide_register(
        &self,
        enterprise_id: Uuid,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, ClientRejection> {
        match self {
            Self::Present(_) => Err(ClientRejection::AlreadyExists),
            Self::Absent => Ok(vec![ClientRegistered {
                client_id: client_id_of(enterprise_id),
                enterprise_id,
                wallet_id: wallet_id_of(enterprise_id),
                at: now,
            }
            .into()]),
        }
    }
}
