//! Test fixtures shared by the domain's unit tests: a connection funded by one allocation.

use uuid::Uuid;

use super::connection::{
    network_account_id_of, AllocationCleared, AllocationKind, AllocationRecord, Connection,
    ConnectionCreated,
};
use super::event::{DomainEvent, Timestamp};
use super::money::{AmountFormat, CurrencyCode};

pub fn btc() -> CurrencyCode {
    CurrencyCode::parse("BTC").unwrap_or_else(|_| unreachable!("BTC is a currency code"))
}

/// Connection `id` of `client_enterprise_id` to a partner, with `allocated` BTC available.
pub fn funded_connection(
    id: Uuid,
    (partner_id, partner_enterprise_id): (Uuid, Uuid),
    client_enterprise_id: Uuid,
    allocated: i128,
    at: Timestamp,
) -> Connection {
    let created = ConnectionCreated {
        connection_id: id,
        name: "c".into(),
        client_id: Uuid::from_u128(9),
        client_enterprise_id,
        partner_id,
        partner_enterprise_id,
        network_account_id: network_account_id_of(id),
        amount_format: AmountFormat::BaseUnits,
        connection_key: "k".into(),
        nonce: "n".into(),
        proof: "p".into(),
        at,
        signed: None,
    };
    let allocation = AllocationRecord {
        allocation_id: Uuid::from_u128(id.as_u128() + 100),
        kind: AllocationKind::Allocation,
        connection_id: id,
        currency: btc(),
        quantity: allocated,
        client_external_id: format!("a{id}"),
        initiated_by: Uuid::from_u128(7),
        notes: None,
        released: None,
        at,
        signed: None,
    };
    [
        DomainEvent::from(created),
        AllocationCleared { allocation }.into(),
    ]
    .iter()
    .fold(Connection::Absent, Connection::evolve)
}
