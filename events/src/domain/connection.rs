//! The connection aggregate: a client's account at one partner, with its network account's
//! balances per currency (available and held), and the allocations and deallocations that move
//! funds between it and the client's custody account (docs/api/guide.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::client::Client;
use super::connection_key::{ConnectionKey, ConnectionKeySchema};
use super::custody::{Custody, CustodyAllocated, CustodyDeallocated};
use super::event::{DomainEvent, Timestamp};
use super::ids::CommandId;
use super::money::{AmountFormat, Balance, CurrencyCode};
use super::partner::Partner;
use super::signed::Signed;

use super::limits::{
    self, LimitError, Lines, MAX_EXTERNAL_ID_BYTES, MAX_NAME_BYTES, MAX_NOTES_BYTES,
};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionCreated {
    pub connection_id: Uuid,
    pub name: String,
    pub client_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub partner_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub network_account_id: Uuid,
    /// How amounts on this connection are written: the partner's format, which never changes.
    pub amount_format: AmountFormat,
    /// What the client presented to prove its account at the partner, in the partner's
    /// `connectionKeySchema` (v3; a v1 or v2 event's plain string lifts to a `token` key).
    /// Never shown by a read (ADR 0011).
    pub connection_key: ConnectionKey,
    pub nonce: String,
    /// The request's signature, kept as the connection's proof.
    pub proof: String,
    pub at: Timestamp,
    /// The signed request (v2; `None` in events recorded before v2, which kept only `proof`).
    pub signed: Option<Signed>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionUpdated {
    pub connection_id: Uuid,
    pub name: Option<String>,
    pub active: Option<bool>,
    pub at: Timestamp,
    /// The signed request (v2; `None` in events recorded before v2).
    pub signed: Option<Signed>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AllocationKind {
    Allocation,
    Deallocation,
}

impl AllocationKind {
    /// The kind's name: the API's `type`, and the kind its command ids are derived under.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Allocation => "allocation",
            Self::Deallocation => "deallocation",
        }
    }
}

/// Why an allocation was released instead of cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReleaseReason {
    InsufficientCustodyBalance,
    InsufficientConnectionBalance,
    ConnectionInactive,
}

impl ReleaseReason {
    pub fn sentence(self) -> &'static str {
        match self {
            Self::InsufficientCustodyBalance => "insufficient custody balance",
            Self::InsufficientConnectionBalance => {
                "insufficient available balance on the connection"
            }
            Self::ConnectionInactive => "the connection is inactive",
        }
    }
}

/// An allocation or deallocation as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationRecord {
    pub allocation_id: Uuid,
    pub kind: AllocationKind,
    pub connection_id: Uuid,
    pub currency: CurrencyCode,
    pub quantity: i128,
    pub client_external_id: String,
    pub initiated_by: Uuid,
    pub notes: Option<String>,
    /// `None` when cleared; the reason when released.
    pub released: Option<ReleaseReason>,
    pub at: Timestamp,
    /// The client's signed request (v2 of the allocation events; `None` in events recorded
    /// before v2).
    pub signed: Option<Signed>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationCleared {
    pub allocation: AllocationRecord,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationReleased {
    pub allocation: AllocationRecord,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub id: Uuid,
    pub name: String,
    pub client_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub partner_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub network_account_id: Uuid,
    pub amount_format: AmountFormat,
    /// The nonce and signature of the request that made the connection (shown by its reads).
    pub nonce: String,
    pub proof: String,
    pub active: bool,
    pub balances: BTreeMap<CurrencyCode, Balance>,
    /// Allocations by client external id, for idempotency.
    pub allocations: BTreeMap<String, AllocationRecord>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Connection {
    #[default]
    Absent,
    Present(Box<ConnectionRecord>),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionRejection {
    #[error("the connection does not exist")]
    NotFound,
    #[error("the connection already exists")]
    AlreadyExists,
    #[error("the partner does not exist")]
    PartnerNotFound,
    #[error("the partner is inactive")]
    PartnerInactive,
    #[error("the partner takes connection keys of schema {expected}, not {presented}")]
    KeySchemaMismatch {
        expected: ConnectionKeySchema,
        presented: ConnectionKeySchema,
    },
    #[error("the enterprise has no client record")]
    NoClient,
    #[error("an allocation quantity must be positive")]
    NotPositive,
    #[error(transparent)]
    Input(#[from] LimitError),
    #[error("client external id {0} was used for a different allocation")]
    ExternalIdReused(String),
    #[error("the resulting balance would overflow")]
    Overflow,
}

/// A new connection, as asked for by a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    pub connection_id: Uuid,
    pub name: String,
    pub connection_key: ConnectionKey,
    pub nonce: String,
    pub proof: String,
    pub signed: Option<Signed>,
}

/// An allocation or deallocation, as asked for by a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allocate {
    pub allocation_id: Uuid,
    pub kind: AllocationKind,
    pub currency: CurrencyCode,
    pub quantity: i128,
    pub client_external_id: String,
    pub initiated_by: Uuid,
    pub notes: Option<String>,
    pub signed: Option<Signed>,
}

/// A rename or (de)activation, as asked for by a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpdateConnection {
    pub client_enterprise_id: Uuid,
    pub name: Option<String>,
    pub active: Option<bool>,
    pub signed: Option<Signed>,
}

/// The events of an allocation, per stream, and the record it produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationDecision {
    pub connection_events: Vec<DomainEvent>,
    pub custody_events: Vec<DomainEvent>,
    pub record: AllocationRecord,
}

/// The name as given is checked (a control character anywhere is refused, even one `trim`
/// would drop), then kept without surrounding white space.
fn check_name(name: &str) -> Result<String, LimitError> {
    limits::text("name", name, MAX_NAME_BYTES, Lines::One)?;
    Ok(name.trim().to_owned())
}

/// The network account of a connection.
pub fn network_account_id_of(connection_id: Uuid) -> Uuid {
    Uuid::new_v5(&connection_id, b"network-account")
}

/// The connection a connect command creates (the command is the client's signed request,
/// `ids::signed_command_id`): a raced retry targets the same stream.
pub fn connection_id_of(command: CommandId) -> Uuid {
    Uuid::new_v5(&command.as_uuid(), b"connection")
}

/// The command that moves funds for a client's `clientExternalId`: the same kind and id is the
/// same command, so a retry answers as the first time (docs/api/guide.md).
pub fn allocation_command_id(
    kind: AllocationKind,
    client_enterprise_id: Uuid,
    client_external_id: &str,
) -> CommandId {
    CommandId::derive(
        kind.as_str(),
        &[
            client_enterprise_id.as_bytes(),
            client_external_id.as_bytes(),
        ],
    )
}

/// The allocation (or deallocation) an allocation command records.
pub fn allocation_id_of(command: CommandId) -> Uuid {
    Uuid::new_v5(&command.as_uuid(), b"allocation")
}

impl Connection {
    pub fn record(&self) -> Option<&ConnectionRecord> {
        match self {
            Self::Absent => None,
            Self::Present(r) => Some(r),
        }
    }

    /// The record, if it belongs to the client enterprise `client_enterprise_id` (others see nothing).
    pub fn owned_by_client(&self, client_enterprise_id: Uuid) -> Option<&ConnectionRecord> {
        self.record()
            .filter(|r| r.client_enterprise_id == client_enterprise_id)
    }

    pub fn balance(&self, currency: &CurrencyCode) -> Balance {
        self.record()
            .and_then(|r| r.balances.get(currency).copied())
            .unwrap_or_default()
    }

    pub fn evolve(self, event: &DomainEvent) -> Self {
        match (self, event) {
            (Self::Absent, DomainEvent::ConnectionCreated(e)) => {
                Self::Present(Box::new(ConnectionRecord {
                    id: e.connection_id,
                    name: e.name.clone(),
                    client_id: e.client_id,
                    client_enterprise_id: e.client_enterprise_id,
                    partner_id: e.partner_id,
                    partner_enterprise_id: e.partner_enterprise_id,
                    network_account_id: e.network_account_id,
                    amount_format: e.amount_format,
                    nonce: e.nonce.clone(),
                    proof: e.proof.clone(),
                    active: true,
                    balances: BTreeMap::new(),
                    allocations: BTreeMap::new(),
                    created_at: e.at,
                    updated_at: e.at,
                }))
            }
            (Self::Present(mut r), DomainEvent::ConnectionUpdated(e)) => {
                r.name = e.name.clone().unwrap_or(r.name);
                r.active = e.active.unwrap_or(r.active);
                r.updated_at = e.at;
                Self::Present(r)
            }
            (Self::Present(mut r), DomainEvent::AllocationCleared(e))
                if e.allocation.connection_id == r.id =>
            {
                let a = &e.allocation;
                let balance = r.balances.get(&a.currency).copied().unwrap_or_default();
                let next = match a.kind {
                    AllocationKind::Allocation => balance.credit(a.quantity),
                    AllocationKind::Deallocation => balance.debit(a.quantity),
                };
                if let Ok(next) = next {
                    r.balances.insert(a.currency.clone(), next);
                }
                r.allocations
                    .insert(a.client_external_id.clone(), a.clone());
                Self::Present(r)
            }
            (
                Self::Present(mut r),
                event @ (DomainEvent::FundsHeld(_)
                | DomainEvent::FundsReleased(_)
                | DomainEvent::ConnectionSettled(_)),
            ) => {
                let (connection_id, currency) = match event {
                    DomainEvent::FundsHeld(e) => (e.connection_id, e.currency.clone()),
                    DomainEvent::FundsReleased(e) => (e.connection_id, e.currency.clone()),
                    DomainEvent::ConnectionSettled(e) => (e.connection_id, e.currency.clone()),
                    _ => return Self::Present(r),
                };
                // Another connection's event changes nothing here.
                if connection_id != r.id {
                    return Self::Present(r);
                }
                let balance = r.balances.get(&currency).copied().unwrap_or_default();
                if let Ok(next) = super::settlement::apply_to_balance(balance, event) {
                    r.balances.insert(currency, next);
                }
                Self::Present(r)
            }
            (Self::Present(mut r), DomainEvent::AllocationReleased(e)) => {
                r.allocations.insert(
                    e.allocation.client_external_id.clone(),
                    e.allocation.clone(),
                );
                Self::Present(r)
            }
            (state, _) => state,
        }
    }

    /// A client connects to a partner.
    pub fn decide_connect(
        &self,
        client: &Client,
        partner: &Partner,
        command: Connect,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, ConnectionRejection> {
        if self.record().is_some() {
            return Err(ConnectionRejection::AlreadyExists);
        }
        let client = client.record().ok_or(ConnectionRejection::NoClient)?;
        let partner = partner
            .record()
            .ok_or(ConnectionRejection::PartnerNotFound)?;
        if !partner.active {
            return Err(ConnectionRejection::PartnerInactive);
        }
        let name = check_name(&command.name)?;
        command.connection_key.check()?;
        let (expected, presented) = (
            partner.connection_key_schema,
            command.connection_key.schema(),
        );
        if presented != expected {
            return Err(ConnectionRejection::KeySchemaMismatch {
                expected,
                presented,
            });
        }
        Ok(vec![ConnectionCreated {
            connection_id: command.connection_id,
            name,
            client_id: client.id,
            client_enterprise_id: client.enterprise_id,
            partner_id: partner.id,
            partner_enterprise_id: partner.enterprise_id,
            network_account_id: network_account_id_of(command.connection_id),
            amount_format: partner.amount_format,
            connection_key: command.connection_key,
            nonce: command.nonce,
            proof: command.proof,
            at: now,
            signed: command.signed,
        }
        .into()])
    }

    /// A client renames or (de)activates its connection.
    pub fn decide_update(
        &self,
        command: UpdateConnection,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, ConnectionRejection> {
        let record = self
            .owned_by_client(command.client_enterprise_id)
            .ok_or(ConnectionRejection::NotFound)?;
        let name = command
            .name
            .map(|n| check_name(&n))
            .transpose()?
            .filter(|n| *n != record.name);
        let active = command.active.filter(|a| *a != record.active);
        if name.is_none() && active.is_none() {
            return Ok(vec![]);
        }
        Ok(vec![ConnectionUpdated {
            connection_id: record.id,
            name,
            active,
            at: now,
            signed: command.signed,
        }
        .into()])
    }

    /// Moves funds between the client's custody and this connection: cleared when the source
    /// covers it, otherwise released with a reason (and nothing moves).
    pub fn decide_allocation(
        &self,
        client_enterprise_id: Uuid,
        custody: &Custody,
        command: Allocate,
        now: Timestamp,
    ) -> Result<AllocationDecision, ConnectionRejection> {
        let record = self
            .owned_by_client(client_enterprise_id)
            .ok_or(ConnectionRejection::NotFound)?;
        if command.quantity <= 0 {
            return Err(ConnectionRejection::NotPositive);
        }
        limits::text(
            "clientExternalId",
            &command.client_external_id,
            MAX_EXTERNAL_ID_BYTES,
            Lines::One,
        )?;
        limits::optional_text(
            "notes",
            command.notes.as_deref(),
            MAX_NOTES_BYTES,
            Lines::Many,
        )?;
        let released = match command.kind {
            AllocationKind::Allocation if !record.active => Some(ReleaseReason::ConnectionInactive),
            AllocationKind::Allocation => custody
                .balance(&command.currency)
                .debit(command.quantity)
                .err()
                .map(|_| ReleaseReason::InsufficientCustodyBalance),
            AllocationKind::Deallocation => self
                .balance(&command.currency)
                .debit(command.quantity)
                .err()
                .map(|_| ReleaseReason::InsufficientConnectionBalance),
        };
        let allocation = AllocationRecord {
            allocation_id: command.allocation_id,
            kind: command.kind,
            connection_id: record.id,
            currency: command.currency,
            quantity: command.quantity,
            client_external_id: command.client_external_id,
            initiated_by: command.initiated_by,
            notes: command.notes,
            released,
            at: now,
            signed: command.signed,
        };
        if let Some(existing) = record.allocations.get(&allocation.client_external_id) {
            return Err(ConnectionRejection::ExternalIdReused(
                existing.client_external_id.clone(),
            ));
        }
        if released.is_none() {
            // The receiving side must be able to take it too: overflow is refused, never dropped.
            let receiving = match allocation.kind {
                AllocationKind::Allocation => self.balance(&allocation.currency),
                AllocationKind::Deallocation => custody.balance(&allocation.currency),
            };
            receiving
                .credit(allocation.quantity)
                .map_err(|_| ConnectionRejection::Overflow)?;
        }
        if released.is_some() {
            return Ok(AllocationDecision {
                connection_events: vec![AllocationReleased {
                    allocation: allocation.clone(),
                }
                .into()],
                custody_events: vec![],
                record: allocation,
            });
        }
        let (enterprise_id, allocation_id, connection_id) =
            (client_enterprise_id, allocation.allocation_id, record.id);
        let (currency, quantity) = (allocation.currency.clone(), allocation.quantity);
        let custody_event: DomainEvent = match allocation.kind {
            AllocationKind::Allocation => CustodyAllocated {
                enterprise_id,
                allocation_id,
                connection_id,
                currency,
                quantity,
                at: now,
            }
            .into(),
            AllocationKind::Deallocation => CustodyDeallocated {
                enterprise_id,
                allocation_id,
                connection_id,
                currency,
                quantity,
                at: now,
            }
            .into(),
        };
        Ok(AllocationDecision {
            connection_events: vec![AllocationCleared {
                allocation: allocation.clone(),
            }
            .into()],
            custody_events: vec![custody_event],
            record: allocation,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::custody::DepositCredited;
    use crate::domain::ids::signed_command_id;

    #[test]
    fn ids_are_derived_as_they_always_were() {
        let uuid = |s: &str| Uuid::parse_str(s).expect("uuid");
        let e = Uuid::from_u128(0x1111);
        let connect = signed_command_id(e, "n-1");
        assert_eq!(
            connection_id_of(connect),
            Uuid::new_v5(&connect.as_uuid(), b"connection")
        );
        let allocate = allocation_command_id(AllocationKind::Allocation, e, "a-1");
        assert_eq!(
            allocate,
            CommandId::derive("allocation", &[e.as_bytes(), b"a-1"])
        );
        assert_eq!(
            allocation_id_of(allocate),
            Uuid::new_v5(&allocate.as_uuid(), b"allocation")
        );
        let deallocate = allocation_command_id(AllocationKind::Deallocation, e, "a-1");
        assert_eq!(
            deallocate,
            CommandId::derive("deallocation", &[e.as_bytes(), b"a-1"])
        );
        // Pinned: recorded connections, allocations and command outcomes carry these ids.
        let pinned = [
            (
                connection_id_of(connect),
                "72d9fa95-6c94-5980-9031-1becf9004906",
            ),
            (allocate.as_uuid(), "f1837005-cc81-5db9-be7b-687a740ad876"),
            (
                allocation_id_of(allocate),
                "1c324432-52d8-5342-832f-19b017baed7d",
            ),
            (deallocate.as_uuid(), "4546d577-2be4-59e7-8939-5d68f3b9fb29"),
            (
                allocation_id_of(deallocate),
                "40517f55-d997-54b4-8940-896d588a63d4",
            ),
        ];
        for (derived, recorded) in pinned {
            assert_eq!(derived, uuid(recorded));
        }
    }

    const CLIENT_E: Uuid = Uuid::from_u128(1);
    const CONN: Uuid = Uuid::from_u128(2);
    const T: Timestamp = Timestamp(10);

    fn btc() -> CurrencyCode {
        CurrencyCode::parse("BTC").unwrap()
    }

    fn connection(active: bool) -> Connection {
        let created = ConnectionCreated {
            connection_id: CONN,
            name: "c".into(),
            client_id: Uuid::from_u128(3),
            client_enterprise_id: CLIENT_E,
            partner_id: Uuid::from_u128(4),
            partner_enterprise_id: Uuid::from_u128(5),
            network_account_id: network_account_id_of(CONN),
            amount_format: AmountFormat::BaseUnits,
            connection_key: "k".into(),
            nonce: "n".into(),
            proof: "p".into(),
            at: T,
            signed: None,
        };
        let c = Connection::Absent.evolve(&created.into());
        c.evolve(
            &ConnectionUpdated {
                connection_id: CONN,
                name: None,
                active: Some(active),
                at: T,
                signed: None,
            }
            .into(),
        )
    }

    fn custody(btc_units: i128) -> Custody {
        Custody::default().evolve(
            &DepositCredited {
                enterprise_id: CLIENT_E,
                deposit_id: Uuid::from_u128(6),
                external_id: "d".into(),
                currency: btc(),
                quantity: btc_units,
                at: T,
            }
            .into(),
        )
    }

    fn allocate(kind: AllocationKind, quantity: i128, external: &str) -> Allocate {
        Allocate {
            allocation_id: Uuid::from_u128(7),
            kind,
            currency: btc(),
            quantity,
            client_external_id: external.into(),
            initiated_by: Uuid::from_u128(8),
            notes: None,
            signed: None,
        }
    }

    fn update(name: Option<&str>, active: Option<bool>) -> UpdateConnection {
        UpdateConnection {
            client_enterprise_id: CLIENT_E,
            name: name.map(str::to_owned),
            active,
            signed: None,
        }
    }

    fn apply(
        connection: Connection,
        custody: Custody,
        d: &AllocationDecision,
    ) -> (Connection, Custody) {
        (
            d.connection_events
                .iter()
                .fold(connection, Connection::evolve),
            d.custody_events.iter().fold(custody, Custody::evolve),
        )
    }

    #[test]
    fn allocations_clear_when_covered_and_release_otherwise() {
        use AllocationKind::*;
        let (conn, cust) = (connection(true), custody(100));
        let d = conn
            .decide_allocation(CLIENT_E, &cust, allocate(Allocation, 60, "a1"), T)
            .unwrap();
        assert_eq!(d.record.released, None);
        let (conn, cust) = apply(conn, cust, &d);
        assert_eq!(
            (
                conn.balance(&btc()).available(),
                cust.balance(&btc()).available()
            ),
            (60, 40)
        );

        let short = conn
            .decide_allocation(CLIENT_E, &cust, allocate(Allocation, 41, "a2"), T)
            .unwrap();
        assert_eq!(
            short.record.released,
            Some(ReleaseReason::InsufficientCustodyBalance)
        );
        assert!(short.custody_events.is_empty());
        let (conn, cust) = apply(conn, cust, &short);
        assert_eq!(
            (
                conn.balance(&btc()).available(),
                cust.balance(&btc()).available()
            ),
            (60, 40),
            "nothing moved"
        );

        let too_much = conn
            .decide_allocation(CLIENT_E, &cust, allocate(Deallocation, 61, "d1"), T)
            .unwrap();
        assert_eq!(
            too_much.record.released,
            Some(ReleaseReason::InsufficientConnectionBalance)
        );
        let back = conn
            .decide_allocation(CLIENT_E, &cust, allocate(Deallocation, 60, "d2"), T)
            .unwrap();
        let (conn, cust) = apply(conn, cust, &back);
        assert_eq!(
            (
                conn.balance(&btc()).available(),
                cust.balance(&btc()).available()
            ),
            (0, 100)
        );

        assert_eq!(
            conn.decide_allocation(CLIENT_E, &cust, allocate(Allocation, 1, "a1"), T),
            Err(ConnectionRejection::ExternalIdReused("a1".into()))
        );
    }

    mod connect {
        use super::*;
        use crate::domain::client::ClientRegistered;
        use crate::domain::partner::PartnerCommand;

        fn client() -> Client {
            Client::Absent.evolve(
                &ClientRegistered {
                    client_id: Uuid::from_u128(3),
                    enterprise_id: CLIENT_E,
                    wallet_id: Uuid::from_u128(9),
                    at: T,
                }
                .into(),
            )
        }

        fn partner(schema: ConnectionKeySchema) -> Partner {
            let events = Partner::Absent
                .decide(
                    PartnerCommand::Register {
                        partner_id: Uuid::from_u128(4),
                        enterprise_id: Uuid::from_u128(5),
                        name: "p".into(),
                        broker: false,
                        client_dispute_window: None,
                        top_up_window: None,
                        amount_format: AmountFormat::BaseUnits,
                        connection_key_schema: schema,
                    },
                    T,
                )
                .unwrap();
            events.iter().fold(Partner::Absent, Partner::evolve)
        }

        fn connect(key: ConnectionKey) -> Connect {
            Connect {
                connection_id: CONN,
                name: "main".into(),
                connection_key: key,
                nonce: "n".into(),
                proof: "p".into(),
                signed: None,
            }
        }

        fn keys() -> Vec<ConnectionKey> {
            vec![
                ConnectionKey::token("t"),
                ConnectionKey::TokenAndSignature {
                    connection_token: "t".into(),
                    signature: "s".into(),
                },
                ConnectionKey::ApiKeyAndSecret {
                    api_key: "k".into(),
                    api_secret: "secret".into(),
                },
                ConnectionKey::Clearloop {
                    connection_token: "t".into(),
                    public_key: "pk".into(),
                },
            ]
        }

        #[test]
        fn a_key_of_the_partners_schema_connects_and_is_kept() {
            for key in keys() {
                let events = Connection::Absent
                    .decide_connect(&client(), &partner(key.schema()), connect(key.clone()), T)
                    .unwrap();
                match events.as_slice() {
                    [DomainEvent::ConnectionCreated(e)] => assert_eq!(e.connection_key, key),
                    other => panic!("{other:?}"),
                }
            }
        }

        #[test]
        fn a_key_of_another_schema_is_refused() {
            for key in keys() {
                for schema in ConnectionKeySchema::ALL {
                    if schema == key.schema() {
                        continue;
                    }
                    assert_eq!(
                        Connection::Absent.decide_connect(
                            &client(),
                            &partner(schema),
                            connect(key.clone()),
                            T
                        ),
                        Err(ConnectionRejection::KeySchemaMismatch {
                            expected: schema,
                            presented: key.schema()
                        })
                    );
                }
            }
        }

        #[test]
        fn the_string_shorthand_is_a_token_key() {
            let key = ConnectionKey::from_json(&serde_json::json!("acct-1")).unwrap();
            assert!(Connection::Absent
                .decide_connect(
                    &client(),
                    &partner(ConnectionKeySchema::Token),
                    connect(key.clone()),
                    T
                )
                .is_ok());
            assert_eq!(
                Connection::Absent.decide_connect(
                    &client(),
                    &partner(ConnectionKeySchema::ApiKeyAndSecret),
                    connect(key),
                    T
                ),
                Err(ConnectionRejection::KeySchemaMismatch {
                    expected: ConnectionKeySchema::ApiKeyAndSecret,
                    presented: ConnectionKeySchema::Token
                })
            );
        }

        #[test]
        fn key_fields_are_bounded_before_the_schema_is_compared() {
            let key = ConnectionKey::ApiKeyAndSecret {
                api_key: "k".into(),
                api_secret: "a\u{0}b".into(),
            };
            // Input validity comes first: a 400 naming the field, even under another schema.
            assert_eq!(
                Connection::Absent.decide_connect(
                    &client(),
                    &partner(ConnectionKeySchema::Token),
                    connect(key),
                    T
                ),
                Err(ConnectionRejection::Input(LimitError::ControlCharacter {
                    field: "connectionKey.apiSecret",
                    code: 0
                }))
            );
        }
    }

    #[test]
    fn refusals() {
        use AllocationKind::*;
        let (conn, cust) = (connection(true), custody(100));
        assert_eq!(
            conn.decide_allocation(Uuid::from_u128(99), &cust, allocate(Allocation, 1, "x"), T),
            Err(ConnectionRejection::NotFound)
        );
        assert_eq!(
            conn.decide_allocation(CLIENT_E, &cust, allocate(Allocation, 0, "x"), T),
            Err(ConnectionRejection::NotPositive)
        );
        assert_eq!(
            conn.decide_allocation(CLIENT_E, &cust, allocate(Allocation, 1, " "), T),
            Err(ConnectionRejection::Input(LimitError::Empty {
                field: "clientExternalId"
            }))
        );
        let mut nul_notes = allocate(Allocation, 1, "x");
        nul_notes.notes = Some("a\u{0}b".into());
        assert_eq!(
            conn.decide_allocation(CLIENT_E, &cust, nul_notes, T),
            Err(ConnectionRejection::Input(LimitError::ControlCharacter {
                field: "notes",
                code: 0
            }))
        );
        let inactive = connection(false)
            .decide_allocation(CLIENT_E, &cust, allocate(Allocation, 1, "x"), T)
            .unwrap();
        assert_eq!(
            inactive.record.released,
            Some(ReleaseReason::ConnectionInactive)
        );
        assert_eq!(
            Connection::Absent.decide_update(update(Some("n"), None), T),
            Err(ConnectionRejection::NotFound)
        );
        assert_eq!(
            conn.decide_update(update(Some("c"), Some(true)), T),
            Ok(vec![]),
            "no change, no event"
        );
    }
}
