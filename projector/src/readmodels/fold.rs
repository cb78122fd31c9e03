//! The set-based heart of the read models: a batch of events folded in memory into the net
//! change of every row it touches — the last state of each enterprise, key, partner, connection,
//! settlement, transfer and dispute, the rows it creates, and balance deltas summed per account
//! and currency — which `store.rs` then writes with one statement per table. Pure: rows that
//! already exist come in as `Loaded`, facts about rows of other partitions as `Facts`.
//!
//! Each arm does to the in-memory rows exactly what the row-at-a-time projection
//! (`crate::baseline`) does to the tables, statement by statement; tests hold the two equal.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use anyhow::Context;
use events::domain::client::wallet_id_of;
use events::domain::connection::{AllocationKind, AllocationRecord, ReleaseReason};
use events::domain::dispute::{closure_amounts, ClosedBy};
use events::domain::event::Timestamp;
use events::domain::settlement::{failure_reason, SettlementApi, Transfer};
use events::domain::DomainEvent;
use events::store::to_datetime;
use serde_json::Value;
use sqlx::types::chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::route::{ConnectionFacts, SettlementFacts};

pub type Time = DateTime<Utc>;

/// Where a closure's joined transfers' ordinals start, after the settlement's own.
pub const JOINED_ORDINAL_OFFSET: i32 = 1_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnterpriseRow {
    pub id: Uuid,
    pub name: String,
    pub oes_license: bool,
    pub created_at: Time,
    pub updated_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRow {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    pub public_key: String,
    pub created_at: Time,
    pub revoked_at: Option<Time>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRow {
    pub id: Uuid,
    pub name: String,
    pub auditor: bool,
    pub enterprise_ids: Vec<Uuid>,
    pub created_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartnerRow {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    pub name: String,
    pub broker: bool,
    pub active: bool,
    pub client_dispute_window_minutes: Option<String>,
    pub top_up_window_minutes: Option<String>,
    pub amount_format: String,
    /// The partner's `connectionKeySchema` (`token` for partners registered before schemas).
    pub connection_key_schema: String,
    pub created_at: Time,
    pub updated_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientRow {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    pub wallet_id: Uuid,
    pub created_at: Time,
    pub updated_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRow {
    pub id: Uuid,
    pub name: String,
    pub client_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub partner_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub network_account_id: Uuid,
    pub active: bool,
    pub nonce: String,
    pub proof: String,
    pub created_at: Time,
    pub updated_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllocationRow {
    pub id: Uuid,
    pub kind: &'static str,
    pub connection_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub currency: String,
    pub quantity: i128,
    pub client_external_id: String,
    pub initiated_by: Uuid,
    pub notes: Option<String>,
    pub status: &'static str,
    pub reason: Option<&'static str>,
    pub created_at: Time,
    pub updated_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DepositRow {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    pub external_id: String,
    pub currency: String,
    pub quantity: i128,
    pub created_at: Time,
}

/// The net change of one balance row (account, currency) in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BalanceDelta {
    pub owner_enterprise_id: Uuid,
    pub connection_id: Option<Uuid>,
    pub available: i128,
    pub held: i128,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SettlementRow {
    pub id: Uuid,
    pub partner_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub external_id: String,
    pub api: String,
    pub status: String,
    pub notes: Option<String>,
    pub cutoff_at: Option<Time>,
    pub initiated_by: Uuid,
    pub disputed: bool,
    pub reason: Option<String>,
    pub dispute_window_ends_at: Time,
    pub top_up_window_ends_at: Time,
    pub finalized_at: Option<Time>,
    pub created_at: Time,
    pub updated_at: Time,
    pub finalized: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRow {
    pub id: Uuid,
    pub settlement_id: Option<Uuid>,
    pub partner_enterprise_id: Uuid,
    pub source_trading_account_id: Uuid,
    pub source_connection_id: Option<Uuid>,
    pub source_network_account_id: Option<Uuid>,
    pub source_client_enterprise_id: Option<Uuid>,
    pub destination_connection_id: Uuid,
    pub destination_trading_account_id: Uuid,
    pub destination_network_account_id: Uuid,
    pub destination_client_enterprise_id: Uuid,
    pub currency: String,
    pub quantity: i128,
    pub status: String,
    pub created_at: Time,
    pub updated_at: Time,
    pub ordinal: i32,
    pub dispute_closure_id: Option<Uuid>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DisputeRow {
    pub id: Uuid,
    pub settlement_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub connection_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub user_id: Uuid,
    pub expected_transfers: Value,
    pub retracted: bool,
    pub reason: Option<String>,
    pub retracted_by: Option<Uuid>,
    pub retracted_at: Option<Time>,
    pub retracted_reason: Option<String>,
    pub dispute_closure_id: Option<Uuid>,
    pub settled_in_settlement_id: Option<Uuid>,
    pub created_at: Time,
    pub updated_at: Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClosureRow {
    pub id: Uuid,
    pub dispute_id: Uuid,
    pub closed_by: &'static str,
    pub user_id: Option<Uuid>,
    pub notes: String,
    pub adjusted_transfers: Value,
    pub created_at: Time,
}

/// Rows of one table: those loaded or made, and which of them the batch changed.
#[derive(Clone, Debug)]
pub struct Table<R> {
    rows: HashMap<Uuid, R>,
    changed: BTreeSet<Uuid>,
}

impl<R> Default for Table<R> {
    fn default() -> Self {
        Self {
            rows: HashMap::new(),
            changed: BTreeSet::new(),
        }
    }
}

impl<R: Clone> Table<R> {
    pub fn loaded(rows: impl IntoIterator<Item = (Uuid, R)>) -> Self {
        Self {
            rows: rows.into_iter().collect(),
            changed: BTreeSet::new(),
        }
    }

    /// `INSERT … ON CONFLICT DO NOTHING`: a row that exists stays as it is.
    fn create(&mut self, id: Uuid, row: R) {
        if let std::collections::hash_map::Entry::Vacant(slot) = self.rows.entry(id) {
            slot.insert(row);
            self.changed.insert(id);
        }
    }

    /// `UPDATE … WHERE id = $1`: a row that does not exist is not made.
    fn update(&mut self, id: Uuid, change: impl FnOnce(&mut R)) {
        if let Some(row) = self.rows.get_mut(&id) {
            change(row);
            self.changed.insert(id);
        }
    }

    /// `UPDATE … WHERE id = $1 AND <condition>`: `change` says whether it changed the row, so
    /// that only rows it did change are written back.
    fn update_where(&mut self, id: Uuid, change: impl FnOnce(&mut R) -> bool) {
        if let Some(row) = self.rows.get_mut(&id) {
            if change(row) {
                self.changed.insert(id);
            }
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<&R> {
        self.rows.get(id)
    }

    /// The rows the batch changed, by id.
    pub fn changed(&self) -> Vec<&R> {
        self.changed
            .iter()
            .filter_map(|id| self.rows.get(id))
            .collect()
    }
}

/// Rows of the tables that exist before the batch and that its events may change, read by
/// `store::load` from what `Needs` names.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    pub enterprises: Vec<EnterpriseRow>,
    pub keys: Vec<KeyRow>,
    pub partners: Vec<PartnerRow>,
    pub connections: Vec<ConnectionRow>,
    pub settlements: Vec<SettlementRow>,
    /// Transfers of the settlements and closures named.
    pub transfers: Vec<TransferRow>,
    pub disputes: Vec<DisputeRow>,
}

impl Loaded {
    /// These rows, with those `previous` (the batch folded just before, whose writes may still be
    /// under way) holds of the same ids — or, for transfers, of the settlements and closures
    /// named — in their place: the previous batch's rows are the newer. Pure.
    pub fn overlay(mut self, previous: &Rows, needs: &Needs) -> Self {
        overlay(
            &mut self.enterprises,
            &previous.enterprises,
            &needs.enterprises,
            |r| r.id,
        );
        overlay(&mut self.keys, &previous.keys, &needs.keys, |r| r.id);
        overlay(
            &mut self.partners,
            &previous.partners,
            &needs.partners,
            |r| r.id,
        );
        overlay(
            &mut self.connections,
            &previous.connections,
            &needs.connections,
            |r| r.id,
        );
        overlay(
            &mut self.settlements,
            &previous.settlements,
            &needs.settlements,
            |r| r.id,
        );
        overlay(
            &mut self.disputes,
            &previous.disputes,
            &needs.disputes,
            |r| r.id,
        );
        let wanted = |t: &TransferRow| {
            t.settlement_id
                .is_some_and(|s| needs.transfers_of_settlements.contains(&s))
                || t.dispute_closure_id
                    .is_some_and(|c| needs.transfers_of_closures.contains(&c))
        };
        self.transfers
            .retain(|t| !previous.transfers.rows.contains_key(&t.id));
        self.transfers.extend(
            previous
                .transfers
                .rows
                .values()
                .filter(|t| wanted(t))
                .cloned(),
        );
        self
    }
}

fn overlay<R: Clone>(
    loaded: &mut Vec<R>,
    previous: &Table<R>,
    ids: &BTreeSet<Uuid>,
    id: impl Fn(&R) -> Uuid,
) {
    loaded.retain(|r| !previous.rows.contains_key(&id(r)));
    loaded.extend(ids.iter().filter_map(|i| previous.rows.get(i)).cloned());
}

/// What a batch changes; written by `store::write`.
#[derive(Clone, Debug, Default)]
pub struct Rows {
    pub enterprises: Table<EnterpriseRow>,
    pub keys: Table<KeyRow>,
    pub users: Table<UserRow>,
    pub partners: Table<PartnerRow>,
    pub clients: Table<ClientRow>,
    pub connections: Table<ConnectionRow>,
    pub allocations: Table<AllocationRow>,
    pub deposits: Table<DepositRow>,
    /// Keyed by (account id, currency); every touched row is written, a zero net included
    /// (the first touch of an account makes its row).
    pub balances: BTreeMap<(Uuid, String), BalanceDelta>,
    pub settlements: Table<SettlementRow>,
    pub transfers: Table<TransferRow>,
    pub disputes: Table<DisputeRow>,
    pub closures: Table<ClosureRow>,
    /// Transfer ids by settlement and by closure, for the updates that select on those.
    by_settlement: HashMap<Uuid, BTreeSet<Uuid>>,
    by_closure: HashMap<Uuid, BTreeSet<Uuid>>,
}

/// The ids of existing rows a batch may change: what `store::load` reads. Pure.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub enterprises: BTreeSet<Uuid>,
    pub keys: BTreeSet<Uuid>,
    pub partners: BTreeSet<Uuid>,
    pub connections: BTreeSet<Uuid>,
    pub settlements: BTreeSet<Uuid>,
    /// Transfers of these settlements…
    pub transfers_of_settlements: BTreeSet<Uuid>,
    /// …and of these closures.
    pub transfers_of_closures: BTreeSet<Uuid>,
    pub disputes: BTreeSet<Uuid>,
    /// Facts needed from the directory.
    pub connection_facts: BTreeSet<Uuid>,
    pub settlement_facts: BTreeSet<Uuid>,
}

impl Needs {
    /// What `events` update (rows they make need nothing loaded) and which facts they read.
    /// A row made earlier in the same batch is not loaded either: it is in memory, and it
    /// cannot be in the table before (each row is made by one event, once).
    pub fn of<'a>(events: impl IntoIterator<Item = &'a DomainEvent>) -> Self {
        let mut n = Self::default();
        let mut made = Made::default();
        for event in events {
            match event {
                DomainEvent::EnterpriseCreated(e) => {
                    made.enterprises.insert(e.enterprise_id);
                }
                DomainEvent::EnterpriseLicenseSet(e) => {
                    unless_made(&mut n.enterprises, &made.enterprises, e.enterprise_id);
                }
                DomainEvent::SigningKeyRegistered(e) => {
                    made.keys.insert(e.key_id);
                }
                DomainEvent::SigningKeyRevoked(e) => {
                    unless_made(&mut n.keys, &made.keys, e.key_id);
                }
                DomainEvent::PartnerRegistered(e) => {
                    made.partners.insert(e.partner_id);
                }
                DomainEvent::PartnerUpdated(e) => {
                    unless_made(&mut n.partners, &made.partners, e.partner_id);
                }
                DomainEvent::ConnectionCreated(e) => {
                    made.connections.insert(e.connection_id);
                }
                DomainEvent::ConnectionUpdated(e) => {
                    unless_made(&mut n.connections, &made.connections, e.connection_id);
                }
                DomainEvent::AllocationCleared(e) => {
                    n.connection_facts.insert(e.allocation.connection_id);
                }
                DomainEvent::AllocationReleased(e) => {
                    n.connection_facts.insert(e.allocation.connection_id);
                }
                DomainEvent::FundsHeld(e) => {
                    n.connection_facts.insert(e.connection_id);
                }
                DomainEvent::ConnectionSettled(e) => {
                    n.connection_facts.insert(e.connection_id);
                }
                DomainEvent::FundsReleased(e) => {
                    n.connection_facts.insert(e.connection_id);
                }
                DomainEvent::SettlementStaged(e) => {
                    made.settlements.insert(e.settlement_id);
                    n.add_transfer_facts(&e.transfers);
                }
                DomainEvent::SettlementExecuted(e) => {
                    n.settlement_and_transfers(&made, e.settlement_id)
                }
                DomainEvent::SettlementFailed(e) => {
                    n.settlement_and_transfers(&made, e.settlement_id)
                }
                DomainEvent::SettlementFinalized(e) => {
                    n.settlement_and_transfers(&made, e.settlement_id)
                }
                DomainEvent::DisputeRaised(e) => {
                    made.disputes.insert(e.dispute_id);
                    unless_made(&mut n.settlements, &made.settlements, e.settlement_id);
                    n.settlement_facts.insert(e.settlement_id);
                }
                DomainEvent::DisputeUpdated(e) => {
                    unless_made(&mut n.disputes, &made.disputes, e.dispute_id);
                }
                DomainEvent::DisputeClosed(e) => {
                    made.closures.insert(e.closure_id);
                    unless_made(&mut n.disputes, &made.disputes, e.dispute_id);
                    n.settlement_facts.insert(e.settlement_id);
                    n.add_transfer_facts(&e.adjusted_transfers);
                }
                DomainEvent::ClosuresJoined(e) => {
                    for c in &e.closures {
                        unless_made(&mut n.transfers_of_closures, &made.closures, c.closure_id);
                    }
                }
                DomainEvent::ClosuresAssigned(e) => {
                    for id in &e.dispute_ids {
                        unless_made(&mut n.disputes, &made.disputes, *id);
                    }
                }
                _ => {}
            }
        }
        n
    }

    /// A settlement's row and transfers, unless it was staged in the batch (then its own
    /// transfers are in memory, and closures joining it are loaded by closure).
    fn settlement_and_transfers(&mut self, made: &Made, settlement_id: Uuid) {
        if !made.settlements.contains(&settlement_id) {
            self.settlements.insert(settlement_id);
            self.transfers_of_settlements.insert(settlement_id);
        }
    }

    fn add_transfer_facts(&mut self, transfers: &[Transfer]) {
        for t in transfers {
            self.connection_facts.insert(t.instruction.destination);
            self.connection_facts.extend(t.instruction.source);
        }
    }
}

/// Rows made so far in a batch, by table.
#[derive(Default)]
struct Made {
    enterprises: BTreeSet<Uuid>,
    keys: BTreeSet<Uuid>,
    partners: BTreeSet<Uuid>,
    connections: BTreeSet<Uuid>,
    settlements: BTreeSet<Uuid>,
    disputes: BTreeSet<Uuid>,
    closures: BTreeSet<Uuid>,
}

fn unless_made(needs: &mut BTreeSet<Uuid>, made: &BTreeSet<Uuid>, id: Uuid) {
    if !made.contains(&id) {
        needs.insert(id);
    }
}

/// Immutable facts of other partitions' rows (`route::Directory`), as the fold reads them.
pub trait Facts {
    fn connection(&self, id: Uuid) -> Option<ConnectionFacts>;
    fn settlement(&self, id: Uuid) -> Option<SettlementFacts>;
}

impl Facts for crate::route::Directory {
    fn connection(&self, id: Uuid) -> Option<ConnectionFacts> {
        crate::route::Directory::connection(self, id)
    }
    fn settlement(&self, id: Uuid) -> Option<SettlementFacts> {
        crate::route::Directory::settlement(self, id)
    }
}

fn minutes(w: Option<events::domain::partner::WindowMinutes>) -> Option<String> {
    w.map(|w| w.minutes().to_string())
}

/// `{currency: amount}` as base-unit strings.
pub fn amounts_json(amounts: &events::domain::dispute::Amounts) -> Value {
    let map: serde_json::Map<String, Value> = amounts
        .iter()
        .map(|(c, q)| (c.as_str().to_owned(), Value::from(q.to_string())))
        .collect();
    Value::Object(map)
}

impl Rows {
    /// The state before the batch.
    pub fn new(loaded: Loaded) -> Self {
        let mut rows = Self {
            enterprises: Table::loaded(loaded.enterprises.into_iter().map(|r| (r.id, r))),
            keys: Table::loaded(loaded.keys.into_iter().map(|r| (r.id, r))),
            partners: Table::loaded(loaded.partners.into_iter().map(|r| (r.id, r))),
            connections: Table::loaded(loaded.connections.into_iter().map(|r| (r.id, r))),
            settlements: Table::loaded(loaded.settlements.into_iter().map(|r| (r.id, r))),
            disputes: Table::loaded(loaded.disputes.into_iter().map(|r| (r.id, r))),
            ..Self::default()
        };
        for t in loaded.transfers {
            rows.index_transfer(&t);
            rows.transfers.rows.insert(t.id, t);
        }
        rows
    }

    /// Adds `deltas` to this batch's balance deltas (a rebuild sums them over many chunks).
    pub fn add_balances(
        &mut self,
        deltas: BTreeMap<(Uuid, String), BalanceDelta>,
    ) -> anyhow::Result<()> {
        for ((account, currency), d) in deltas {
            self.balance(
                (account, &currency),
                d.owner_enterprise_id,
                d.connection_id,
                d.available,
                d.held,
            )?;
        }
        Ok(())
    }

    fn index_transfer(&mut self, t: &TransferRow) {
        if let Some(s) = t.settlement_id {
            self.by_settlement.entry(s).or_default().insert(t.id);
        }
        if let Some(c) = t.dispute_closure_id {
            self.by_closure.entry(c).or_default().insert(t.id);
        }
    }

    /// Applies one event. An event that needs a fact the directory lacks is an error (its
    /// rows cannot be made right), as is an amount that overflows.
    pub fn apply(&mut self, event: &DomainEvent, facts: &impl Facts) -> anyhow::Result<()> {
        match event {
            DomainEvent::EnterpriseCreated(e) => {
                let at = to_datetime(e.at);
                self.enterprises.create(
                    e.enterprise_id,
                    EnterpriseRow {
                        id: e.enterprise_id,
                        name: e.name.clone(),
                        oes_license: e.oes_license,
                        created_at: at,
                        updated_at: at,
                    },
                );
            }
            DomainEvent::EnterpriseLicenseSet(e) => self.enterprises.update(e.enterprise_id, |r| {
                r.oes_license = e.oes_license;
                r.updated_at = to_datetime(e.at);
            }),
            DomainEvent::SigningKeyRegistered(e) => self.keys.create(
                e.key_id,
                KeyRow {
                    id: e.key_id,
                    enterprise_id: e.enterprise_id,
                    public_key: hex::encode(e.public_key),
                    created_at: to_datetime(e.at),
                    revoked_at: None,
                },
            ),
            DomainEvent::SigningKeyRevoked(e) => self
                .keys
                .update(e.key_id, |r| r.revoked_at = Some(to_datetime(e.at))),
            DomainEvent::UserCreated(e) => self.users.create(
                e.user_id,
                UserRow {
                    id: e.user_id,
                    name: e.name.clone(),
                    auditor: e.auditor,
                    enterprise_ids: e.enterprise_ids.clone(),
                    created_at: to_datetime(e.at),
                },
            ),
            DomainEvent::PartnerRegistered(e) => {
                let at = to_datetime(e.at);
                self.partners.create(
                    e.partner_id,
                    PartnerRow {
                        id: e.partner_id,
                        enterprise_id: e.enterprise_id,
                        name: e.name.clone(),
                        broker: e.broker,
                        active: true,
                        client_dispute_window_minutes: minutes(e.client_dispute_window),
                        top_up_window_minutes: minutes(e.top_up_window),
                        amount_format: e.amount_format.as_str().to_owned(),
                        connection_key_schema: e
                            .connection_key_schema
                            .unwrap_or_default()
                            .as_str()
                            .to_owned(),
                        created_at: at,
                        updated_at: at,
                    },
                );
            }
            DomainEvent::PartnerUpdated(e) => self.partners.update(e.partner_id, |r| {
                if let Some(active) = e.active {
                    r.active = active;
                }
                if let Some(w) = e.client_dispute_window {
                    r.client_dispute_window_minutes = minutes(w);
                }
                if let Some(w) = e.top_up_window {
                    r.top_up_window_minutes = minutes(w);
                }
                if let Some(schema) = e.connection_key_schema {
                    r.connection_key_schema = schema.as_str().to_owned();
                }
                r.updated_at = to_datetime(e.at);
            }),
            DomainEvent::ClientRegistered(e) => {
                let at = to_datetime(e.at);
                self.clients.create(
                    e.client_id,
                    ClientRow {
                        id: e.client_id,
                        enterprise_id: e.enterprise_id,
                        wallet_id: e.wallet_id,
                        created_at: at,
                        updated_at: at,
                    },
                );
            }
            DomainEvent::DepositCredited(e) => {
                self.deposits.create(
                    e.deposit_id,
                    DepositRow {
                        id: e.deposit_id,
                        enterprise_id: e.enterprise_id,
                        external_id: e.external_id.clone(),
                        currency: e.currency.as_str().to_owned(),
                        quantity: e.quantity,
                        created_at: to_datetime(e.at),
                    },
                );
                self.custody(e.enterprise_id, e.currency.as_str(), e.quantity)?;
            }
            DomainEvent::CustodyAllocated(e) => {
                self.custody(e.enterprise_id, e.currency.as_str(), neg(e.quantity)?)?
            }
            DomainEvent::CustodyDeallocated(e) => {
                self.custody(e.enterprise_id, e.currency.as_str(), e.quantity)?
            }
            DomainEvent::CustodySettled(e) => {
                self.custody(e.enterprise_id, e.currency.as_str(), e.delta)?
            }
            DomainEvent::ConnectionCreated(e) => {
                let at = to_datetime(e.at);
                self.connections.create(
                    e.connection_id,
                    ConnectionRow {
                        id: e.connection_id,
                        name: e.name.clone(),
                        client_id: e.client_id,
                        client_enterprise_id: e.client_enterprise_id,
                        partner_id: e.partner_id,
                        partner_enterprise_id: e.partner_enterprise_id,
                        network_account_id: e.network_account_id,
                        active: true,
                        nonce: e.nonce.clone(),
                        proof: e.proof.clone(),
                        created_at: at,
                        updated_at: at,
                    },
                );
            }
            DomainEvent::ConnectionUpdated(e) => self.connections.update(e.connection_id, |r| {
                if let Some(name) = &e.name {
                    r.name = name.clone();
                }
                if let Some(active) = e.active {
                    r.active = active;
                }
                r.updated_at = to_datetime(e.at);
            }),
            DomainEvent::AllocationCleared(e) => {
                self.allocation(&e.allocation, facts)?;
                let signed = match e.allocation.kind {
                    AllocationKind::Allocation => e.allocation.quantity,
                    AllocationKind::Deallocation => neg(e.allocation.quantity)?,
                };
                let currency = e.allocation.currency.as_str();
                self.network(e.allocation.connection_id, currency, signed, 0, facts)?;
            }
            DomainEvent::AllocationReleased(e) => self.allocation(&e.allocation, facts)?,
            DomainEvent::FundsHeld(e) => {
                let currency = e.currency.as_str();
                self.network(
                    e.connection_id,
                    currency,
                    neg(e.quantity)?,
                    e.quantity,
                    facts,
                )?
            }
            DomainEvent::ConnectionSettled(e) => {
                let (credited, consumed) = (e.credited, neg(e.consumed_held)?);
                let currency = e.currency.as_str();
                self.network(e.connection_id, currency, credited, consumed, facts)?
            }
            DomainEvent::FundsReleased(e) => {
                let currency = e.currency.as_str();
                self.network(
                    e.connection_id,
                    currency,
                    e.quantity,
                    neg(e.quantity)?,
                    facts,
                )?
            }
            DomainEvent::SettlementStaged(e) => {
                let at = to_datetime(e.at);
                let dispute_ends = e.at.0.saturating_add(e.dispute_window_micros);
                let top_up_ends = dispute_ends.saturating_add(e.top_up_window_micros);
                let api = match e.api {
                    SettlementApi::V1 => "v1",
                    SettlementApi::V2 => "v2",
                };
                self.settlements.create(
                    e.settlement_id,
                    SettlementRow {
                        id: e.settlement_id,
                        partner_id: e.partner_id,
                        partner_enterprise_id: e.partner_enterprise_id,
                        external_id: e.external_id.clone(),
                        api: api.to_owned(),
                        status: "pending".to_owned(),
                        notes: e.notes.clone(),
                        cutoff_at: e.cutoff_at.map(to_datetime),
                        initiated_by: e.initiated_by,
                        disputed: false,
                        reason: None,
                        dispute_window_ends_at: to_datetime(Timestamp(dispute_ends)),
                        top_up_window_ends_at: to_datetime(Timestamp(top_up_ends)),
                        finalized_at: None,
                        created_at: at,
                        updated_at: at,
                        finalized: false,
                    },
                );
                let place = TransferPlace {
                    settlement_id: Some(e.settlement_id),
                    closure_id: None,
                    partner_enterprise_id: e.partner_enterprise_id,
                    status: "pending",
                };
                self.transfers_made(&place, &e.transfers, e.at, facts)?;
            }
            DomainEvent::SettlementExecuted(e) => {
                let at = to_datetime(e.at);
                self.settlements.update(e.settlement_id, |r| {
                    r.status = "completed".to_owned();
                    r.reason = None;
                    r.finalized_at = Some(at);
                    r.updated_at = at;
                });
                self.settle_transfers(e.settlement_id, "completed", at);
            }
            DomainEvent::SettlementFailed(e) => {
                let at = to_datetime(e.at);
                let reason = failure_reason(&e.short_currencies);
                self.settlements.update(e.settlement_id, |r| {
                    r.status = "failed".to_owned();
                    r.reason = Some(reason);
                    r.finalized_at = None;
                    r.updated_at = at;
                });
                self.settle_transfers(e.settlement_id, "failed", at);
            }
            DomainEvent::SettlementFinalized(e) => {
                let at = to_datetime(e.at);
                self.settlements.update(e.settlement_id, |r| {
                    r.finalized = true;
                    r.updated_at = at;
                });
                let withheld: BTreeSet<Uuid> = e.withheld_connections.iter().copied().collect();
                for id in self.transfers_of(e.settlement_id) {
                    self.transfers.update_where(id, |t| {
                        let touches = withheld.contains(&t.destination_connection_id)
                            || t.source_connection_id
                                .is_some_and(|s| withheld.contains(&s));
                        if touches {
                            t.status = "disputed".to_owned();
                            t.updated_at = at;
                        }
                        touches
                    });
                }
            }
            DomainEvent::DisputeRaised(e) => {
                let at = to_datetime(e.at);
                let settlement = facts
                    .settlement(e.settlement_id)
                    .with_context(|| format!("settlement {} unknown", e.settlement_id))?;
                self.disputes.create(
                    e.dispute_id,
                    DisputeRow {
                        id: e.dispute_id,
                        settlement_id: e.settlement_id,
                        partner_enterprise_id: settlement.partner_enterprise_id,
                        connection_id: e.connection_id,
                        client_enterprise_id: e.client_enterprise_id,
                        user_id: e.user_id,
                        expected_transfers: amounts_json(&e.expected_transfers),
                        retracted: false,
                        reason: e.reason.clone(),
                        retracted_by: None,
                        retracted_at: None,
                        retracted_reason: None,
                        dispute_closure_id: None,
                        settled_in_settlement_id: None,
                        created_at: at,
                        updated_at: at,
                    },
                );
                self.settlements.update(e.settlement_id, |r| {
                    r.disputed = true;
                    r.updated_at = at;
                });
            }
            DomainEvent::DisputeUpdated(e) => {
                let at = to_datetime(e.at);
                self.disputes.update(e.dispute_id, |r| {
                    r.retracted = e.retracted;
                    r.reason = e.reason.clone();
                    r.expected_transfers = amounts_json(&e.expected_transfers);
                    r.retracted_by = e.retracted.then_some(e.user_id);
                    r.retracted_at = e.retracted.then_some(at);
                    r.retracted_reason = e.retracted_reason.clone();
                    r.updated_at = at;
                });
            }
            DomainEvent::DisputeClosed(e) => {
                let at = to_datetime(e.at);
                let closed_by = match e.closed_by {
                    ClosedBy::Client => "client",
                    ClosedBy::Admin => "admin",
                };
                let adjusted = closure_amounts(e.connection_id, &e.adjusted_transfers);
                self.closures.create(
                    e.closure_id,
                    ClosureRow {
                        id: e.closure_id,
                        dispute_id: e.dispute_id,
                        closed_by,
                        user_id: e.user_id,
                        notes: e.notes.clone(),
                        adjusted_transfers: amounts_json(&adjusted),
                        created_at: at,
                    },
                );
                self.disputes.update(e.dispute_id, |r| {
                    r.dispute_closure_id = Some(e.closure_id);
                    r.updated_at = at;
                });
                let settlement = facts
                    .settlement(e.settlement_id)
                    .with_context(|| format!("settlement {} unknown", e.settlement_id))?;
                let place = TransferPlace {
                    settlement_id: None,
                    closure_id: Some(e.closure_id),
                    partner_enterprise_id: settlement.partner_enterprise_id,
                    status: "pending_settlement_assignment",
                };
                self.transfers_made(&place, &e.adjusted_transfers, e.at, facts)?;
            }
            DomainEvent::ClosuresJoined(e) => {
                let at = to_datetime(e.at);
                for closure in &e.closures {
                    let ids: Vec<Uuid> = self
                        .by_closure
                        .get(&closure.closure_id)
                        .map(|ids| ids.iter().copied().collect())
                        .unwrap_or_default();
                    for id in ids {
                        let mut moved_from = None;
                        self.transfers.update(id, |t| {
                            moved_from = t.settlement_id;
                            t.settlement_id = Some(e.settlement_id);
                            t.status = "pending".to_owned();
                            t.updated_at = at;
                            t.ordinal = JOINED_ORDINAL_OFFSET.saturating_add(t.ordinal);
                        });
                        if let Some(old) = moved_from.and_then(|s| self.by_settlement.get_mut(&s)) {
                            old.remove(&id);
                        }
                        self.by_settlement
                            .entry(e.settlement_id)
                            .or_default()
                            .insert(id);
                    }
                }
            }
            DomainEvent::ClosuresAssigned(e) => {
                let at = to_datetime(e.at);
                for id in &e.dispute_ids {
                    self.disputes.update(*id, |r| {
                        r.settled_in_settlement_id = Some(e.settlement_id);
                        r.updated_at = at;
                    });
                }
            }
            DomainEvent::PartnerCutoffAdvanced(_)
            | DomainEvent::ClosureQueued(_)
            | DomainEvent::WebhookConfigured(_)
            | DomainEvent::UserDisabled(_)
            | DomainEvent::UserEnabled(_)
            | DomainEvent::UserTokenRotated(_) => {}
        }
        Ok(())
    }

    fn transfers_of(&self, settlement_id: Uuid) -> Vec<Uuid> {
        self.by_settlement
            .get(&settlement_id)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Execution's outcome on the settlement's transfers: all but the withheld (`disputed`).
    fn settle_transfers(&mut self, settlement_id: Uuid, status: &str, at: Time) {
        for id in self.transfers_of(settlement_id) {
            self.transfers.update_where(id, |t| {
                let settles = t.status != "disputed";
                if settles {
                    t.status = status.to_owned();
                    t.updated_at = at;
                }
                settles
            });
        }
    }

    fn custody(
        &mut self,
        enterprise_id: Uuid,
        currency: &str,
        available: i128,
    ) -> anyhow::Result<()> {
        self.balance(
            (wallet_id_of(enterprise_id), currency),
            enterprise_id,
            None,
            available,
            0,
        )
    }

    /// A connection's network balance; its owner is the connection's client enterprise.
    fn network(
        &mut self,
        connection_id: Uuid,
        currency: &str,
        available: i128,
        held: i128,
        facts: &impl Facts,
    ) -> anyhow::Result<()> {
        let c = connection(facts, connection_id)?;
        self.balance(
            (c.network_account_id, currency),
            c.client_enterprise_id,
            Some(connection_id),
            available,
            held,
        )
    }

    fn balance(
        &mut self,
        (account_id, currency): (Uuid, &str),
        owner: Uuid,
        connection_id: Option<Uuid>,
        available: i128,
        held: i128,
    ) -> anyhow::Result<()> {
        let row = self
            .balances
            .entry((account_id, currency.to_owned()))
            .or_insert(BalanceDelta {
                owner_enterprise_id: owner,
                connection_id,
                available: 0,
                held: 0,
            });
        row.available = row
            .available
            .checked_add(available)
            .context("balance delta overflows")?;
        row.held = row
            .held
            .checked_add(held)
            .context("balance delta overflows")?;
        Ok(())
    }

    fn allocation(&mut self, a: &AllocationRecord, facts: &impl Facts) -> anyhow::Result<()> {
        let c = connection(facts, a.connection_id)?;
        let at = to_datetime(a.at);
        let (status, reason) = match a.released {
            None => ("cleared", None),
            Some(r) => ("released", Some(ReleaseReason::sentence(r))),
        };
        self.allocations.create(
            a.allocation_id,
            AllocationRow {
                id: a.allocation_id,
                kind: match a.kind {
                    AllocationKind::Allocation => "allocation",
                    AllocationKind::Deallocation => "deallocation",
                },
                connection_id: a.connection_id,
                client_enterprise_id: c.client_enterprise_id,
                partner_enterprise_id: c.partner_enterprise_id,
                currency: a.currency.as_str().to_owned(),
                quantity: a.quantity,
                client_external_id: a.client_external_id.clone(),
                initiated_by: a.initiated_by,
                notes: a.notes.clone(),
                status,
                reason,
                created_at: at,
                updated_at: at,
            },
        );
        Ok(())
    }

    /// Transfer rows for `transfers`: the source is the partner's custody wallet, or a broker
    /// instruction's source connection's owner's wallet and network account.
    fn transfers_made(
        &mut self,
        place: &TransferPlace,
        transfers: &[Transfer],
        at: Timestamp,
        facts: &impl Facts,
    ) -> anyhow::Result<()> {
        let at = to_datetime(at);
        for (ordinal, t) in transfers.iter().enumerate() {
            let i = &t.instruction;
            let destination = connection(facts, i.destination)?;
            let source = i.source.map(|s| connection(facts, s)).transpose()?;
            let row = TransferRow {
                id: t.transfer_id,
                settlement_id: place.settlement_id,
                partner_enterprise_id: place.partner_enterprise_id,
                source_trading_account_id: wallet_id_of(
                    source.map_or(place.partner_enterprise_id, |s| s.client_enterprise_id),
                ),
                source_connection_id: i.source,
                source_network_account_id: source.map(|s| s.network_account_id),
                source_client_enterprise_id: source.map(|s| s.client_enterprise_id),
                destination_connection_id: i.destination,
                destination_trading_account_id: wallet_id_of(destination.client_enterprise_id),
                destination_network_account_id: destination.network_account_id,
                destination_client_enterprise_id: destination.client_enterprise_id,
                currency: i.currency.as_str().to_owned(),
                quantity: i.quantity,
                status: place.status.to_owned(),
                created_at: at,
                updated_at: at,
                ordinal: i32::try_from(ordinal).context("too many transfers")?,
                dispute_closure_id: place.closure_id,
            };
            if self.transfers.get(&row.id).is_none() {
                self.index_transfer(&row);
            }
            self.transfers.create(row.id, row);
        }
        Ok(())
    }
}

/// Where a set of new transfer rows belongs.
struct TransferPlace {
    /// `None` while a closure's transfers wait for a settlement.
    settlement_id: Option<Uuid>,
    closure_id: Option<Uuid>,
    partner_enterprise_id: Uuid,
    status: &'static str,
}

fn connection(facts: &impl Facts, id: Uuid) -> anyhow::Result<ConnectionFacts> {
    facts
        .connection(id)
        .with_context(|| format!("connection {id} unknown"))
}

fn neg(quantity: i128) -> anyhow::Result<i128> {
    quantity.checked_neg().context("amount overflows")
}

#[cfg(test)]
mod tests;
