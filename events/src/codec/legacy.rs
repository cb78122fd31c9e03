//! Published layouts of earlier schema versions, kept only so their stored bytes can be decoded
//! and lifted by the upcasters. A layout here never changes: it is what the golden corpus pins.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::connection::{
    AllocationCleared, AllocationKind, AllocationRecord, AllocationReleased, ConnectionCreated,
    ConnectionUpdated, ReleaseReason,
};
use crate::domain::connection_key::ConnectionKey;
use crate::domain::event::Timestamp;
use crate::domain::money::{AmountFormat, CurrencyCode};
use crate::domain::partner::{PartnerRegistered, PartnerUpdated, WindowMinutes};
use crate::domain::signed::Signed;

/// `ConnectionCreated` v1 (type 12): no signed request, only the signature as `proof`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionCreatedV1 {
    pub connection_id: Uuid,
    pub name: String,
    pub client_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub partner_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub network_account_id: Uuid,
    pub amount_format: AmountFormat,
    pub connection_key: String,
    pub nonce: String,
    pub proof: String,
    pub at: Timestamp,
}

impl From<ConnectionCreatedV1> for ConnectionCreatedV2 {
    fn from(v1: ConnectionCreatedV1) -> Self {
        Self {
            connection_id: v1.connection_id,
            name: v1.name,
            client_id: v1.client_id,
            client_enterprise_id: v1.client_enterprise_id,
            partner_id: v1.partner_id,
            partner_enterprise_id: v1.partner_enterprise_id,
            network_account_id: v1.network_account_id,
            amount_format: v1.amount_format,
            connection_key: v1.connection_key,
            nonce: v1.nonce,
            proof: v1.proof,
            at: v1.at,
            signed: None,
        }
    }
}

/// `ConnectionUpdated` v1 (type 13): no signed request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionUpdatedV1 {
    pub connection_id: Uuid,
    pub name: Option<String>,
    pub active: Option<bool>,
    pub at: Timestamp,
}

impl From<ConnectionUpdatedV1> for ConnectionUpdated {
    fn from(v1: ConnectionUpdatedV1) -> Self {
        Self {
            connection_id: v1.connection_id,
            name: v1.name,
            active: v1.active,
            at: v1.at,
            signed: None,
        }
    }
}

/// The allocation record of `AllocationCleared` and `AllocationReleased` v1 (types 14, 15).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecordV1 {
    pub allocation_id: Uuid,
    pub kind: AllocationKind,
    pub connection_id: Uuid,
    pub currency: CurrencyCode,
    pub quantity: i128,
    pub client_external_id: String,
    pub initiated_by: Uuid,
    pub notes: Option<String>,
    pub released: Option<ReleaseReason>,
    pub at: Timestamp,
}

impl From<AllocationRecordV1> for AllocationRecord {
    fn from(v1: AllocationRecordV1) -> Self {
        Self {
            allocation_id: v1.allocation_id,
            kind: v1.kind,
            connection_id: v1.connection_id,
            currency: v1.currency,
            quantity: v1.quantity,
            client_external_id: v1.client_external_id,
            initiated_by: v1.initiated_by,
            notes: v1.notes,
            released: v1.released,
            at: v1.at,
            signed: None,
        }
    }
}

/// `AllocationCleared` v1 (type 14).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationClearedV1 {
    pub allocation: AllocationRecordV1,
}

impl From<AllocationClearedV1> for AllocationCleared {
    fn from(v1: AllocationClearedV1) -> Self {
        Self {
            allocation: v1.allocation.into(),
        }
    }
}

/// `AllocationReleased` v1 (type 15).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationReleasedV1 {
    pub allocation: AllocationRecordV1,
}

impl From<AllocationReleasedV1> for AllocationReleased {
    fn from(v1: AllocationReleasedV1) -> Self {
        Self {
            allocation: v1.allocation.into(),
        }
    }
}

/// `ConnectionCreated` v2 (type 12): the connection key as a plain string.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionCreatedV2 {
    pub connection_id: Uuid,
    pub name: String,
    pub client_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub partner_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub network_account_id: Uuid,
    pub amount_format: AmountFormat,
    pub connection_key: String,
    pub nonce: String,
    pub proof: String,
    pub at: Timestamp,
    pub signed: Option<Signed>,
}

/// v2 → v3: every key before v3 was a plain string, which is the `token` schema's shorthand.
impl From<ConnectionCreatedV2> for ConnectionCreated {
    fn from(v2: ConnectionCreatedV2) -> Self {
        Self {
            connection_id: v2.connection_id,
            name: v2.name,
            client_id: v2.client_id,
            client_enterprise_id: v2.client_enterprise_id,
            partner_id: v2.partner_id,
            partner_enterprise_id: v2.partner_enterprise_id,
            network_account_id: v2.network_account_id,
            amount_format: v2.amount_format,
            connection_key: ConnectionKey::token(v2.connection_key),
            nonce: v2.nonce,
            proof: v2.proof,
            at: v2.at,
            signed: v2.signed,
        }
    }
}

/// `PartnerRegistered` v1 (type 6): no connection key schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRegisteredV1 {
    pub partner_id: Uuid,
    pub enterprise_id: Uuid,
    pub name: String,
    pub broker: bool,
    pub client_dispute_window: Option<WindowMinutes>,
    pub top_up_window: Option<WindowMinutes>,
    pub amount_format: AmountFormat,
    pub at: Timestamp,
}

/// v1 → v2: the schema is absent (`None`), which the partner reads as `token` — the only key a
/// partner took before v2.
impl From<PartnerRegisteredV1> for PartnerRegistered {
    fn from(v1: PartnerRegisteredV1) -> Self {
        Self {
            partner_id: v1.partner_id,
            enterprise_id: v1.enterprise_id,
            name: v1.name,
            broker: v1.broker,
            client_dispute_window: v1.client_dispute_window,
            top_up_window: v1.top_up_window,
            amount_format: v1.amount_format,
            at: v1.at,
            connection_key_schema: None,
        }
    }
}

/// `PartnerUpdated` v1 (type 7): no connection key schema.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerUpdatedV1 {
    pub partner_id: Uuid,
    pub active: Option<bool>,
    pub client_dispute_window: Option<Option<WindowMinutes>>,
    pub top_up_window: Option<Option<WindowMinutes>>,
    pub at: Timestamp,
}

/// v1 → v2: a v1 update never changed the schema (`None`: unchanged).
impl From<PartnerUpdatedV1> for PartnerUpdated {
    fn from(v1: PartnerUpdatedV1) -> Self {
        Self {
            partner_id: v1.partner_id,
            active: v1.active,
            client_dispute_window: v1.client_dispute_window,
            top_up_window: v1.top_up_window,
            at: v1.at,
            connection_key_schema: None,
        }
    }
}
