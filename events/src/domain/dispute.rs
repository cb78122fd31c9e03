//! Disputes of a settlement (docs/api/lifecycle.md): raised, retracted, amended and closed on the
//! settlement's own stream, so finalization decides on one consistent history; closures that
//! carry instructions are queued on the partner's stream for its next v2 settlement.
//!
//! Signs: `expectedTransfers` and `adjustedTransfers` are from the client's side, `+` it
//! receives — the same sign as a party-shaped instruction to that connection.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::connection::Connection;
use super::event::{DomainEvent, Timestamp};
use super::ids::CommandId;
use super::money::CurrencyCode;
use super::settlement::{Instruction, Settlement, SettlementApi, SettlementRecord, Transfer};

use super::limits::{self, LimitError, Lines, MAX_CURRENCIES_PER_MAP, MAX_NOTES_BYTES};

/// Amounts per currency, `+` toward the client. Kept as a sorted list so the bytes are canonical.
pub type Amounts = Vec<(CurrencyCode, i128)>;

/// Who closed a dispute.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClosedBy {
    /// The client withdrew its dispute as invalid: the original instructions stand.
    Client,
    /// An operator decided which instructions execute.
    Admin,
}

/// The signed request that caused a client's dispute event, kept for auditors.
pub use super::signed::Signed;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeRaised {
    pub settlement_id: Uuid,
    pub dispute_id: Uuid,
    pub connection_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub user_id: Uuid,
    pub reason: Option<String>,
    pub expected_transfers: Amounts,
    pub signed: Signed,
    pub at: Timestamp,
}

/// A retraction, un-retraction or amendment, with the dispute's fields as they now stand.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeUpdated {
    pub settlement_id: Uuid,
    pub dispute_id: Uuid,
    pub user_id: Uuid,
    pub retracted: bool,
    pub reason: Option<String>,
    pub retracted_reason: Option<String>,
    pub expected_transfers: Amounts,
    pub signed: Signed,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeClosed {
    pub settlement_id: Uuid,
    pub dispute_id: Uuid,
    pub connection_id: Uuid,
    pub closure_id: Uuid,
    pub closed_by: ClosedBy,
    pub user_id: Option<Uuid>,
    pub notes: String,
    /// What executes for the connection in the partner's next v2 settlement (empty when the
    /// connection was not withheld: its transfers executed, or will, in this settlement).
    pub adjusted_transfers: Vec<Transfer>,
    pub signed: Option<Signed>,
    pub at: Timestamp,
}

/// A closure whose transfers wait for the partner's next v2 settlement (partner stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarriedClosure {
    pub dispute_id: Uuid,
    pub disputed_settlement_id: Uuid,
    pub closure_id: Uuid,
    pub connection_id: Uuid,
    pub transfers: Vec<Transfer>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosureQueued {
    pub partner_id: Uuid,
    pub closure: CarriedClosure,
    pub at: Timestamp,
}

/// Closures joined a newly staged settlement (settlement stream): their transfers are its own.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosuresJoined {
    pub settlement_id: Uuid,
    pub closures: Vec<CarriedClosure>,
    pub at: Timestamp,
}

/// The partner's queued closures were assigned to `settlement_id` (partner stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosuresAssigned {
    pub partner_id: Uuid,
    pub settlement_id: Uuid,
    pub dispute_ids: Vec<Uuid>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retraction {
    pub by: Uuid,
    pub reason: Option<String>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closure {
    pub closure_id: Uuid,
    pub closed_by: ClosedBy,
    pub user_id: Option<Uuid>,
    pub notes: String,
    pub adjusted_transfers: Vec<Transfer>,
    pub at: Timestamp,
}

/// A dispute as the settlement knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DisputeRecord {
    pub dispute_id: Uuid,
    pub connection_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub user_id: Uuid,
    pub reason: Option<String>,
    pub expected_transfers: Amounts,
    pub retraction: Option<Retraction>,
    pub closure: Option<Closure>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl DisputeRecord {
    /// Open: neither retracted nor closed. Only open disputes withhold at finalization.
    pub fn is_open(&self) -> bool {
        self.retraction.is_none() && self.closure.is_none()
    }
}

/// Every way a dispute command can be refused; nothing is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DisputeRejection {
    #[error("the settlement does not exist")]
    SettlementNotFound,
    #[error("the dispute does not exist")]
    DisputeNotFound,
    #[error("the connection is not one of the client's connections to this settlement's partner")]
    ConnectionNotOurs,
    #[error("the dispute belongs to another connection")]
    WrongConnection,
    #[error("settlements performed with v1 cannot be disputed")]
    NotDisputable,
    #[error("the dispute window of this settlement has closed")]
    WindowClosed,
    #[error("the dispute window of this settlement is still open")]
    WindowOpen,
    #[error("the dispute window has closed and the settlement is being finalized; retry shortly")]
    Finalizing,
    #[error("this connection already disputes this settlement")]
    AlreadyDisputed,
    #[error("the dispute is closed")]
    Closed,
    #[error("the dispute is retracted")]
    Retracted,
    #[error("expectedTransfers must name at least one currency")]
    NoAmounts,
    #[error("an amount is zero")]
    ZeroAmount,
    #[error(transparent)]
    Input(#[from] LimitError),
}

fn check_reason(reason: Option<&str>) -> Result<(), LimitError> {
    limits::optional_text("reason", reason, MAX_NOTES_BYTES, Lines::Many)
}

fn check_amounts(
    field: &'static str,
    amounts: &Amounts,
    allow_empty: bool,
) -> Result<(), DisputeRejection> {
    if amounts.is_empty() && !allow_empty {
        return Err(DisputeRejection::NoAmounts);
    }
    limits::count(field, amounts.len(), MAX_CURRENCIES_PER_MAP)?;
    if amounts.iter().any(|(_, q)| *q == 0) {
        return Err(DisputeRejection::ZeroAmount);
    }
    Ok(())
}

/// A client raises a dispute.
#[derive(Clone, Debug)]
pub struct RaiseDispute {
    pub dispute_id: Uuid,
    pub connection_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub user_id: Uuid,
    pub reason: Option<String>,
    pub expected_transfers: Amounts,
    pub signed: Signed,
}

/// A client retracts, un-retracts or amends its dispute.
#[derive(Clone, Debug)]
pub struct UpdateDispute {
    pub dispute_id: Uuid,
    pub connection_id: Uuid,
    pub client_enterprise_id: Uuid,
    pub user_id: Uuid,
    pub retracted: bool,
    pub reason: Option<String>,
    pub expected_transfers: Option<Amounts>,
    pub signed: Signed,
}

/// A dispute is closed, by its client as invalid or by an operator with adjusted transfers.
#[derive(Clone, Debug)]
pub struct CloseDispute {
    pub dispute_id: Uuid,
    pub closure_id: Uuid,
    pub closed_by: ClosedBy,
    /// The client enterprise closing its own dispute; `None` for an operator.
    pub client_enterprise_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub notes: String,
    /// The operator's instructions for the connection (ignored for a client's closure).
    pub adjusted_transfers: Amounts,
    pub signed: Option<Signed>,
}

impl SettlementRecord {
    /// When the dispute window closes: `createdAt + D`.
    pub fn dispute_window_ends(&self) -> Timestamp {
        Timestamp(
            self.staged
                .at
                .0
                .saturating_add(self.staged.dispute_window_micros),
        )
    }

    /// When the top-up window closes and execution is due: `createdAt + D + T`.
    pub fn top_up_window_ends(&self) -> Timestamp {
        Timestamp(
            self.dispute_window_ends()
                .0
                .saturating_add(self.staged.top_up_window_micros),
        )
    }

    /// Disputes can still be raised and changed: a v2 settlement inside its window, not yet
    /// finalized (finalization freezes them even if it ran a little early or late).
    pub fn accepts_dispute_changes(&self, now: Timestamp) -> bool {
        self.staged.api == SettlementApi::V2
            && self.finalized.is_none()
            && now < self.dispute_window_ends()
    }

    pub fn dispute(&self, dispute_id: Uuid) -> Option<&DisputeRecord> {
        self.disputes.get(&dispute_id)
    }

    pub fn dispute_of_connection(&self, connection_id: Uuid) -> Option<&DisputeRecord> {
        self.disputes
            .values()
            .find(|d| d.connection_id == connection_id)
    }

    /// Every transfer of the settlement: its own instructions, then those closures carried in.
    pub fn all_transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.staged
            .transfers
            .iter()
            .chain(self.joined.iter().flat_map(|c| c.transfers.iter()))
    }

    /// Whether `connection_id` was withheld at finalization.
    pub fn is_withheld(&self, connection_id: Uuid) -> bool {
        self.finalized
            .as_ref()
            .is_some_and(|f| f.withheld.contains(&connection_id))
    }

    /// The withheld transfers a closure of `connection_id`'s dispute carries as they stood:
    /// those to it and, of a broker's, those from it whose destination was not withheld too — so
    /// an instruction between two disputing connections is carried by one closure, not both.
    pub fn carried_by(&self, connection_id: Uuid) -> Vec<Transfer> {
        self.all_transfers()
            .filter(|t| {
                let i = &t.instruction;
                i.destination == connection_id
                    || (i.source == Some(connection_id) && !self.is_withheld(i.destination))
            })
            .cloned()
            .collect()
    }
}

/// One dispute per (settlement, connection): its id follows from the two.
pub fn dispute_id_of(settlement_id: Uuid, connection_id: Uuid) -> Uuid {
    Uuid::new_v5(&settlement_id, connection_id.as_bytes())
}

/// One closure per dispute: its id follows from the dispute's.
pub fn closure_id_of(dispute_id: Uuid) -> Uuid {
    Uuid::new_v5(&dispute_id, b"closure")
}

/// The operator's closure of a dispute is one command, whoever sends it and however often: a
/// repeat answers as the first time.
pub fn closure_command_id(dispute_id: Uuid) -> CommandId {
    CommandId::derive("dispute-close", &[dispute_id.as_bytes()])
}

/// The id of the `n`th adjusted transfer of a closure.
fn closure_transfer_id(closure_id: Uuid, n: usize) -> Uuid {
    Uuid::new_v5(&closure_id, &(n as u64).to_be_bytes())
}

/// A closure's transfers as amounts per currency from `connection_id`'s side (`+` it receives),
/// summed: what its `adjustedTransfers` says.
pub fn closure_amounts(connection_id: Uuid, transfers: &[Transfer]) -> Amounts {
    let mut sums: BTreeMap<CurrencyCode, i128> = BTreeMap::new();
    for t in transfers {
        let i = &t.instruction;
        let signed = if i.destination == connection_id {
            i.quantity
        } else {
            i.quantity.saturating_neg()
        };
        let sum = sums.entry(i.currency.clone()).or_default();
        *sum = sum.saturating_add(signed);
    }
    sums.into_iter().collect()
}

/// Adjusted transfers of a closure, one per currency, with ids derived from the closure.
pub fn closure_transfers(
    closure_id: Uuid,
    connection_id: Uuid,
    amounts: &Amounts,
) -> Vec<Transfer> {
    amounts
        .iter()
        .enumerate()
        .map(|(n, (currency, quantity))| Transfer {
            transfer_id: closure_transfer_id(closure_id, n),
            instruction: Instruction {
                source: None,
                destination: connection_id,
                currency: currency.clone(),
                quantity: *quantity,
            },
        })
        .collect()
}

impl Settlement {
    fn present(&self) -> Result<&SettlementRecord, DisputeRejection> {
        self.record().ok_or(DisputeRejection::SettlementNotFound)
    }

    /// A client raises a dispute on one of its connections to this settlement's partner.
    pub fn decide_raise(
        &self,
        command: RaiseDispute,
        connection: &Connection,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, DisputeRejection> {
        // The request's own validity first (400s before 409/422, docs/api/guide.md).
        check_reason(command.reason.as_deref())?;
        check_amounts("expectedTransfers", &command.expected_transfers, false)?;
        let record = self.present()?;
        let owned = connection
            .owned_by_client(command.client_enterprise_id)
            .is_some_and(|c| c.partner_id == record.staged.partner_id);
        if !owned {
            return Err(DisputeRejection::ConnectionNotOurs);
        }
        if record.staged.api != SettlementApi::V2 {
            return Err(DisputeRejection::NotDisputable);
        }
        if !record.accepts_dispute_changes(now) {
            return Err(DisputeRejection::WindowClosed);
        }
        if record
            .dispute_of_connection(command.connection_id)
            .is_some()
        {
            return Err(DisputeRejection::AlreadyDisputed);
        }
        Ok(vec![DisputeRaised {
            settlement_id: record.staged.settlement_id,
            dispute_id: command.dispute_id,
            connection_id: command.connection_id,
            client_enterprise_id: command.client_enterprise_id,
            user_id: command.user_id,
            reason: command.reason,
            expected_transfers: command.expected_transfers,
            signed: command.signed,
            at: now,
        }
        .into()])
    }

    fn own_dispute(
        &self,
        dispute_id: Uuid,
        client_enterprise_id: Option<Uuid>,
    ) -> Result<(&SettlementRecord, &DisputeRecord), DisputeRejection> {
        let record = self.present()?;
        let dispute = record
            .dispute(dispute_id)
            .filter(|d| client_enterprise_id.is_none_or(|e| e == d.client_enterprise_id))
            .ok_or(DisputeRejection::DisputeNotFound)?;
        Ok((record, dispute))
    }

    /// Retract, un-retract or amend, inside the window only. A change to nothing records nothing.
    pub fn decide_update(
        &self,
        command: UpdateDispute,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, DisputeRejection> {
        check_reason(command.reason.as_deref())?;
        let (record, dispute) =
            self.own_dispute(command.dispute_id, Some(command.client_enterprise_id))?;
        if dispute.connection_id != command.connection_id {
            return Err(DisputeRejection::WrongConnection);
        }
        if dispute.closure.is_some() {
            return Err(DisputeRejection::Closed);
        }
        if !record.accepts_dispute_changes(now) {
            return Err(DisputeRejection::WindowClosed);
        }
        let expected = command
            .expected_transfers
            .unwrap_or_else(|| dispute.expected_transfers.clone());
        check_amounts("expectedTransfers", &expected, false)?;
        let (reason, retracted_reason) = if command.retracted {
            // The reason given with a retraction is why it was retracted.
            (dispute.reason.clone(), command.reason)
        } else {
            (command.reason.or_else(|| dispute.reason.clone()), None)
        };
        let unchanged = command.retracted == dispute.retraction.is_some()
            && expected == dispute.expected_transfers
            && reason == dispute.reason
            && (!command.retracted
                || dispute.retraction.as_ref().map(|r| &r.reason) == Some(&retracted_reason));
        if unchanged {
            return Ok(vec![]);
        }
        Ok(vec![DisputeUpdated {
            settlement_id: record.staged.settlement_id,
            dispute_id: dispute.dispute_id,
            user_id: command.user_id,
            retracted: command.retracted,
            reason,
            retracted_reason,
            expected_transfers: expected,
            signed: command.signed,
            at: now,
        }
        .into()])
    }

    /// Closes a dispute. A client may close its own open dispute at any time: inside the window it
    /// acts as a retraction; after finalization the connection's original transfers are carried
    /// into the partner's next settlement. An operator closes only after finalization, with the
    /// transfers that should execute instead.
    pub fn decide_close(
        &self,
        command: CloseDispute,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, DisputeRejection> {
        // Notes may be empty (a closure needs no explanation), but are bounded like any text.
        limits::bounded("notes", &command.notes, MAX_NOTES_BYTES, Lines::Many)?;
        let (record, dispute) =
            self.own_dispute(command.dispute_id, command.client_enterprise_id)?;
        if dispute.closure.is_some() {
            return Err(DisputeRejection::Closed);
        }
        let frozen = record.finalized.is_some();
        // Disputes freeze when the window closes (docs/api/lifecycle.md); until finalization has
        // recorded which connections it withheld, a closure cannot know what it carries.
        if !frozen && now >= record.dispute_window_ends() {
            return Err(DisputeRejection::Finalizing);
        }
        if command.closed_by == ClosedBy::Admin {
            if !frozen {
                return Err(DisputeRejection::WindowOpen);
            }
            if dispute.retraction.is_some() {
                return Err(DisputeRejection::Retracted);
            }
            check_amounts("adjustedTransfers", &command.adjusted_transfers, true)?;
        }
        let withheld = record.is_withheld(dispute.connection_id);
        let adjusted_transfers = match (command.closed_by, withheld) {
            (_, false) => vec![],
            (ClosedBy::Client, true) => record
                .carried_by(dispute.connection_id)
                .into_iter()
                .enumerate()
                .map(|(n, t)| Transfer {
                    transfer_id: closure_transfer_id(command.closure_id, n),
                    instruction: t.instruction,
                })
                .collect(),
            (ClosedBy::Admin, true) => closure_transfers(
                command.closure_id,
                dispute.connection_id,
                &command.adjusted_transfers,
            ),
        };
        let mut events: Vec<DomainEvent> = vec![DisputeClosed {
            settlement_id: record.staged.settlement_id,
            dispute_id: dispute.dispute_id,
            connection_id: dispute.connection_id,
            closure_id: command.closure_id,
            closed_by: command.closed_by,
            user_id: command.user_id,
            notes: command.notes,
            adjusted_transfers: adjusted_transfers.clone(),
            signed: command.signed,
            at: now,
        }
        .into()];
        if withheld {
            events.push(
                ClosureQueued {
                    partner_id: record.staged.partner_id,
                    closure: CarriedClosure {
                        dispute_id: dispute.dispute_id,
                        disputed_settlement_id: record.staged.settlement_id,
                        closure_id: command.closure_id,
                        connection_id: dispute.connection_id,
                        transfers: adjusted_transfers,
                    },
                    at: now,
                }
                .into(),
            );
        }
        Ok(events)
    }
}

/// Applies a dispute event to the settlement's disputes.
pub fn evolve_disputes(disputes: &mut BTreeMap<Uuid, DisputeRecord>, event: &DomainEvent) {
    match event {
        DomainEvent::DisputeRaised(e) => {
            disputes.entry(e.dispute_id).or_insert(DisputeRecord {
                dispute_id: e.dispute_id,
                connection_id: e.connection_id,
                client_enterprise_id: e.client_enterprise_id,
                user_id: e.user_id,
                reason: e.reason.clone(),
                expected_transfers: e.expected_transfers.clone(),
                retraction: None,
                closure: None,
                created_at: e.at,
                updated_at: e.at,
            });
        }
        DomainEvent::DisputeUpdated(e) => {
            if let Some(d) = disputes.get_mut(&e.dispute_id) {
                d.reason = e.reason.clone();
                d.expected_transfers = e.expected_transfers.clone();
                d.retraction = e.retracted.then(|| Retraction {
                    by: e.user_id,
                    reason: e.retracted_reason.clone(),
                    at: e.at,
                });
                d.updated_at = e.at;
            }
        }
        DomainEvent::DisputeClosed(e) => {
            if let Some(d) = disputes.get_mut(&e.dispute_id) {
                d.closure = Some(Closure {
                    closure_id: e.closure_id,
                    closed_by: e.closed_by,
                    user_id: e.user_id,
                    notes: e.notes.clone(),
                    adjusted_transfers: e.adjusted_transfers.clone(),
                    at: e.at,
                });
                d.updated_at = e.at;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::fixtures::{btc, funded_connection};
    use crate::domain::money::AmountFormat;
    use crate::domain::partner::PartnerRecord;
    use crate::domain::settlement::{
        FundsReleased, LifecycleRejection, SettlementFinalized, SettlementStaged, StageContext,
    };

    const PARTNER: Uuid = Uuid::from_u128(0xa);
    const PARTNER_E: Uuid = Uuid::from_u128(0xb);
    const CLIENT_E: Uuid = Uuid::from_u128(0x8);
    const C1: Uuid = Uuid::from_u128(1);
    const C2: Uuid = Uuid::from_u128(2);
    const S: Uuid = Uuid::from_u128(0x5);
    const D1: Uuid = Uuid::from_u128(0xd1);
    const T0: Timestamp = Timestamp(1_000_000_000_000);
    /// Dispute window of 10 s, top-up window of 5 s.
    const D: i64 = 10_000_000;
    const T: i64 = 5_000_000;

    fn at(seconds: i64) -> Timestamp {
        Timestamp(T0.0 + seconds * 1_000_000)
    }

    fn connection(id: Uuid, allocated: i128) -> Connection {
        funded_connection(id, (PARTNER, PARTNER_E), CLIENT_E, allocated, T0)
    }

    fn partner() -> PartnerRecord {
        PartnerRecord {
            id: PARTNER,
            enterprise_id: PARTNER_E,
            name: "p".into(),
            broker: false,
            active: true,
            client_dispute_window: None,
            top_up_window: None,
            amount_format: AmountFormat::BaseUnits,
            connection_key_schema: Default::default(),
            last_cutoff: None,
            pending_closures: BTreeMap::new(),
            created_at: T0,
            updated_at: T0,
        }
    }

    fn transfer(n: u128, destination: Uuid, quantity: i128) -> Transfer {
        Transfer {
            transfer_id: Uuid::from_u128(0x100 + n),
            instruction: Instruction {
                source: None,
                destination,
                currency: btc(),
                quantity,
            },
        }
    }

    fn staged(id: Uuid, transfers: Vec<Transfer>) -> SettlementStaged {
        SettlementStaged {
            settlement_id: id,
            partner_id: PARTNER,
            partner_enterprise_id: PARTNER_E,
            external_id: format!("x{id}"),
            api: SettlementApi::V2,
            notes: None,
            cutoff_at: None,
            transfers,
            dispute_window_micros: D,
            top_up_window_micros: T,
            initiated_by: Uuid::from_u128(7),
            payload: "{}".into(),
            signature: "00".into(),
            key_id: Uuid::from_u128(0x12),
            at: T0,
        }
    }

    /// S1: C1 loses 30, C2 gains 20, as staged (holds placed).
    fn s1() -> Settlement {
        Settlement::Absent
            .evolve(&staged(S, vec![transfer(1, C1, -30), transfer(2, C2, 20)]).into())
    }

    fn signed() -> Signed {
        Signed {
            payload: "{}".into(),
            signature: "00".into(),
            key_id: Uuid::from_u128(0x12),
        }
    }

    fn raise(connection_id: Uuid) -> RaiseDispute {
        RaiseDispute {
            dispute_id: D1,
            connection_id,
            client_enterprise_id: CLIENT_E,
            user_id: Uuid::from_u128(0x55),
            reason: None,
            expected_transfers: vec![(btc(), -10)],
            signed: signed(),
        }
    }

    fn update(retracted: bool) -> UpdateDispute {
        UpdateDispute {
            dispute_id: D1,
            connection_id: C1,
            client_enterprise_id: CLIENT_E,
            user_id: Uuid::from_u128(0x55),
            retracted,
            reason: None,
            expected_transfers: None,
            signed: signed(),
        }
    }

    fn close(by: ClosedBy, adjusted: Amounts) -> CloseDispute {
        CloseDispute {
            dispute_id: D1,
            closure_id: Uuid::from_u128(0xc1),
            closed_by: by,
            client_enterprise_id: (by == ClosedBy::Client).then_some(CLIENT_E),
            user_id: None,
            notes: "n".into(),
            adjusted_transfers: adjusted,
            signed: None,
        }
    }

    /// Applies what `decide` returned, or panics with the rejection.
    fn then<E: std::fmt::Debug>(s: Settlement, decided: Result<Vec<DomainEvent>, E>) -> Settlement {
        decided.unwrap().iter().fold(s, Settlement::evolve)
    }

    fn finalized_withholding(events: &[DomainEvent]) -> Vec<Uuid> {
        events
            .iter()
            .find_map(|e| match e {
                DomainEvent::SettlementFinalized(SettlementFinalized {
                    withheld_connections,
                    ..
                }) => Some(withheld_connections.clone()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn raising_is_allowed_once_per_connection_and_only_inside_the_window() {
        let c1 = connection(C1, 100);
        let s = s1();
        let disputed = then(s.clone(), s.decide_raise(raise(C1), &c1, at(1)));
        assert!(disputed.record().unwrap().dispute(D1).unwrap().is_open());
        let check = |s: &Settlement, when, expected| {
            assert_eq!(s.decide_raise(raise(C1), &c1, when), Err(expected));
        };
        check(&disputed, at(2), DisputeRejection::AlreadyDisputed);
        check(&s, at(10), DisputeRejection::WindowClosed);
        let frozen = then(s.clone(), s.decide_finalize(at(10)));
        check(&frozen, at(3), DisputeRejection::WindowClosed);
        let foreign = connection(Uuid::from_u128(3), 100);
        assert_eq!(
            s.decide_raise(raise(Uuid::from_u128(3)), &foreign, at(1))
                .map(|_| ()),
            Ok(()),
            "any connection of the client to this partner may dispute"
        );
        let mut zero = raise(C1);
        zero.expected_transfers = vec![(btc(), 0)];
        assert_eq!(
            s.decide_raise(zero, &c1, at(1)),
            Err(DisputeRejection::ZeroAmount)
        );
    }

    #[test]
    fn finalization_withholds_open_disputes_only_and_releases_their_holds() {
        let c1 = connection(C1, 100);
        let s = then(s1(), s1().decide_raise(raise(C1), &c1, at(1)));
        assert_eq!(
            s.decide_finalize(at(9)),
            Err(LifecycleRejection::DisputeWindowOpen)
        );
        let events = s.decide_finalize(at(10)).unwrap();
        assert_eq!(finalized_withholding(&events), vec![C1]);
        assert!(events.contains(
            &FundsReleased {
                connection_id: C1,
                settlement_id: S,
                currency: btc(),
                quantity: 30,
                at: at(10),
            }
            .into()
        ));

        // Retracted inside the window: nothing withheld. Un-retracted: withheld again.
        let retracted = then(s.clone(), s.decide_update(update(true), at(2)));
        let events = retracted.decide_finalize(at(10)).unwrap();
        assert_eq!(finalized_withholding(&events), Vec::<Uuid>::new());
        assert_eq!(events.len(), 1, "no hold to release");
        let again = then(
            retracted.clone(),
            retracted.decide_update(update(false), at(3)),
        );
        assert_eq!(
            finalized_withholding(&again.decide_finalize(at(10)).unwrap()),
            vec![C1]
        );
        assert_eq!(
            s.decide_update(update(true), at(10)),
            Err(DisputeRejection::WindowClosed)
        );
        let finalized = then(s.clone(), s.decide_finalize(at(10)));
        assert_eq!(
            finalized.decide_finalize(at(11)),
            Err(LifecycleRejection::AlreadyFinalized)
        );
    }

    #[test]
    fn a_client_closing_inside_the_window_acts_as_a_retraction() {
        let c1 = connection(C1, 100);
        let s = then(s1(), s1().decide_raise(raise(C1), &c1, at(1)));
        let events = s
            .decide_close(close(ClosedBy::Client, vec![]), at(2))
            .unwrap();
        assert_eq!(events.len(), 1, "nothing queued: {events:?}");
        let closed = then(s, Ok::<_, DisputeRejection>(events));
        assert_eq!(
            finalized_withholding(&closed.decide_finalize(at(10)).unwrap()),
            Vec::<Uuid>::new()
        );
    }

    #[test]
    fn closures_after_finalization_queue_their_transfers_for_the_partner() {
        let c1 = connection(C1, 100);
        let s = then(s1(), s1().decide_raise(raise(C1), &c1, at(1)));
        assert_eq!(
            s.decide_close(close(ClosedBy::Admin, vec![(btc(), -10)]), at(5)),
            Err(DisputeRejection::WindowOpen)
        );
        let frozen = then(s.clone(), s.decide_finalize(at(10)));

        let queued = |events: &[DomainEvent]| {
            events.iter().find_map(|e| match e {
                DomainEvent::ClosureQueued(q) => Some(q.closure.clone()),
                _ => None,
            })
        };
        let by_admin = frozen
            .decide_close(close(ClosedBy::Admin, vec![(btc(), -10)]), at(20))
            .unwrap();
        let carried = queued(&by_admin).unwrap();
        assert_eq!(carried.connection_id, C1);
        assert_eq!(
            carried
                .transfers
                .iter()
                .map(|t| t.instruction.quantity)
                .collect::<Vec<_>>(),
            vec![-10]
        );
        let by_client = frozen
            .decide_close(close(ClosedBy::Client, vec![]), at(20))
            .unwrap();
        assert_eq!(
            queued(&by_client)
                .unwrap()
                .transfers
                .iter()
                .map(|t| t.instruction.quantity)
                .collect::<Vec<_>>(),
            vec![-30],
            "the original instructions stand"
        );
        let closed = then(frozen, Ok::<_, DisputeRejection>(by_admin));
        assert_eq!(
            closed.decide_close(close(ClosedBy::Admin, vec![]), at(21)),
            Err(DisputeRejection::Closed)
        );
    }

    fn broker_line(n: u128, source: Uuid, destination: Uuid, quantity: i128) -> Transfer {
        let mut t = transfer(n, destination, quantity);
        t.instruction.source = Some(source);
        t
    }

    #[test]
    fn an_instruction_between_two_disputing_connections_is_carried_once() {
        // C1 pays C2 30 (broker shape); both dispute, both withheld, both close as invalid.
        let s = Settlement::Absent.evolve(&staged(S, vec![broker_line(1, C1, C2, 30)]).into());
        let (c1, c2) = (connection(C1, 100), connection(C2, 100));
        let mut second = raise(C2);
        second.dispute_id = Uuid::from_u128(0xd2);
        let s = then(s.clone(), s.decide_raise(raise(C1), &c1, at(1)));
        let s = then(s.clone(), s.decide_raise(second, &c2, at(1)));
        let s = then(s.clone(), s.decide_finalize(at(10)));
        let carried = |s: &Settlement, dispute_id: u128, closure: u128| {
            let mut c = close(ClosedBy::Client, vec![]);
            c.dispute_id = Uuid::from_u128(dispute_id);
            c.closure_id = Uuid::from_u128(closure);
            s.decide_close(c, at(20))
                .unwrap()
                .iter()
                .filter_map(|e| match e {
                    DomainEvent::ClosureQueued(q) => Some(q.closure.transfers.len()),
                    _ => None,
                })
                .sum::<usize>()
        };
        assert_eq!(
            carried(&s, 0xd1, 0xc1) + carried(&s, 0xd2, 0xc2),
            1,
            "the instruction joins exactly one closure"
        );
    }

    #[test]
    fn execution_never_pays_a_loss_from_another_settlements_hold() {
        // C1 → C2 50 and C2 → C3 70: C2 nets −20 and holds 20. C1's dispute withholds the first
        // line, so C2 would owe 70 on a hold of 20: execution fails instead of taking the 50
        // another settlement holds on C2.
        let c3 = Uuid::from_u128(3);
        let s = Settlement::Absent.evolve(
            &staged(
                S,
                vec![broker_line(1, C1, C2, 50), broker_line(2, C2, c3, 70)],
            )
            .into(),
        );
        let s = then(
            s.clone(),
            s.decide_raise(raise(C1), &connection(C1, 100), at(1)),
        );
        let s = then(s.clone(), s.decide_finalize(at(10)));
        let mut c2 = connection(C2, 200);
        // 20 held by this settlement, 50 by another one.
        for (settlement, quantity) in [(S, 20), (Uuid::from_u128(0x77), 50)] {
            c2 = c2.evolve(
                &crate::domain::settlement::FundsHeld {
                    connection_id: C2,
                    settlement_id: settlement,
                    currency: btc(),
                    quantity,
                    at: T0,
                }
                .into(),
            );
        }
        let connections =
            BTreeMap::from([(C1, connection(C1, 100)), (C2, c2), (c3, connection(c3, 0))]);
        let events = s
            .decide_execute(
                &connections,
                &crate::domain::custody::Custody::default(),
                at(15),
            )
            .unwrap();
        assert!(
            matches!(events.as_slice(), [DomainEvent::SettlementFailed(f)] if f.short_currencies == vec![btc()]),
            "{events:?}"
        );
    }

    #[test]
    fn the_next_settlement_takes_in_queued_closures_and_checks_their_liabilities() {
        let carried = CarriedClosure {
            dispute_id: D1,
            disputed_settlement_id: S,
            closure_id: Uuid::from_u128(0xc1),
            connection_id: C1,
            transfers: closure_transfers(Uuid::from_u128(0xc1), C1, &vec![(btc(), -40)]),
        };
        let p = partner();
        let connections = BTreeMap::from([(C1, connection(C1, 50)), (C2, connection(C2, 0))]);
        let context = StageContext {
            partner: &p,
            connections: &connections,
            previous_cutoff: None,
            closures: std::slice::from_ref(&carried),
        };
        let s2 = Uuid::from_u128(0x6);
        let events = Settlement::Absent
            .decide_stage(&context, staged(s2, vec![transfer(3, C1, -5)]), T0)
            .unwrap();
        let names: Vec<&str> = events.iter().map(|e| e.event_type().name).collect();
        assert_eq!(
            names,
            vec![
                "SettlementStaged",
                "ClosuresJoined",
                "ClosuresAssigned",
                "FundsHeld"
            ]
        );
        assert!(events.contains(
            &crate::domain::settlement::FundsHeld {
                connection_id: C1,
                settlement_id: s2,
                currency: btc(),
                quantity: 45,
                at: T0,
            }
            .into()
        ));
        // 40 carried plus 15 new exceeds the 50 available.
        assert!(matches!(
            Settlement::Absent.decide_stage(&context, staged(s2, vec![transfer(3, C1, -15)]), T0),
            Err(crate::domain::settlement::StageRejection::Liabilities(_))
        ));
        let joined = events.iter().fold(Settlement::Absent, Settlement::evolve);
        assert_eq!(joined.record().unwrap().all_transfers().count(), 2);
    }

    #[test]
    fn ids_are_derived_as_they_always_were() {
        assert_eq!(dispute_id_of(S, C1), Uuid::new_v5(&S, C1.as_bytes()));
        assert_eq!(closure_id_of(D1), Uuid::new_v5(&D1, b"closure"));
        assert_eq!(
            closure_command_id(D1),
            CommandId::derive("dispute-close", &[D1.as_bytes()])
        );
        let transfers = closure_transfers(closure_id_of(D1), C1, &vec![(btc(), 5)]);
        assert_eq!(
            transfers[0].transfer_id,
            Uuid::new_v5(&closure_id_of(D1), &0u64.to_be_bytes())
        );
    }
}
