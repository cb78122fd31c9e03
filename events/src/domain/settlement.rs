//! The settlement aggregate (docs/api/lifecycle.md): staging a partner's signed instructions —
//! checked against the partner's connections, the broker rules and `cutoffAt`, with the net
//! liability of each connection and currency held — and executing them all together or not at all.
//!
//! Signs: a `+` quantity moves value from the source (the partner's custody, or the source
//! connection for broker instructions) to the destination connection.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::connection::Connection;
use super::custody::Custody;
use super::dispute::{
    evolve_disputes, CarriedClosure, ClosuresAssigned, ClosuresJoined, DisputeRecord,
};
use super::event::{DomainEvent, Timestamp};
use super::ids::CommandId;
use super::limits::{self, LimitError, Lines, MAX_EXTERNAL_ID_BYTES, MAX_NOTES_BYTES};
use super::money::{Balance, CurrencyCode, MoneyError};
use super::partner::{PartnerCutoffAdvanced, PartnerRecord};
use super::stream::{of, StreamName};

/// How far in the future a `cutoffAt` may be, in microseconds (5 minutes).
pub const CUTOFF_AHEAD_MICROS_MAX: i64 = 5 * 60 * 1_000_000;
/// Most instruction lines in one settlement.
pub const INSTRUCTIONS_MAX: usize = limits::MAX_SETTLEMENT_LINES;

/// Which route staged the settlement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SettlementApi {
    /// Performed synchronously (partners without disputes).
    V1,
    /// Staged, dispute-aware.
    V2,
}

/// One instruction line as the partner wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instruction {
    /// The paying connection of a broker (counterparty→party) instruction; `None` for the
    /// partner's own custody account (party shape).
    pub source: Option<Uuid>,
    pub destination: Uuid,
    pub currency: CurrencyCode,
    /// Non-zero; `+` the destination gains.
    pub quantity: i128,
}

/// A transfer of a settlement, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub transfer_id: Uuid,
    pub instruction: Instruction,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementStaged {
    pub settlement_id: Uuid,
    pub partner_id: Uuid,
    pub partner_enterprise_id: Uuid,
    pub external_id: String,
    pub api: SettlementApi,
    pub notes: Option<String>,
    pub cutoff_at: Option<Timestamp>,
    pub transfers: Vec<Transfer>,
    /// Fixed at staging: later partner changes do not move the deadlines (docs/api/lifecycle.md).
    pub dispute_window_micros: i64,
    pub top_up_window_micros: i64,
    pub initiated_by: Uuid,
    /// The partner's signed payload and signature, kept for auditors to re-verify.
    pub payload: String,
    pub signature: String,
    pub key_id: Uuid,
    pub at: Timestamp,
}

/// Funds of a connection held for a settlement (on the connection's stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsHeld {
    pub connection_id: Uuid,
    pub settlement_id: Uuid,
    pub currency: CurrencyCode,
    pub quantity: i128,
    pub at: Timestamp,
}

/// A connection's side of an executed settlement: its held loss consumed, its gain credited.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionSettled {
    pub connection_id: Uuid,
    pub settlement_id: Uuid,
    pub currency: CurrencyCode,
    pub consumed_held: i128,
    pub credited: i128,
    pub at: Timestamp,
}

/// The partner's custody side of an executed settlement, per currency (signed: `-` it paid).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodySettled {
    pub enterprise_id: Uuid,
    pub settlement_id: Uuid,
    pub currency: CurrencyCode,
    pub delta: i128,
    pub at: Timestamp,
}

/// Holds of a connection given back: a withheld connection's at finalization (connection stream).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FundsReleased {
    pub connection_id: Uuid,
    pub settlement_id: Uuid,
    pub currency: CurrencyCode,
    pub quantity: i128,
    pub at: Timestamp,
}

/// The dispute window closed: disputes are frozen and connections with open disputes withheld.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementFinalized {
    pub settlement_id: Uuid,
    pub withheld_connections: Vec<Uuid>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementExecuted {
    pub settlement_id: Uuid,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementFailed {
    pub settlement_id: Uuid,
    /// The currencies the partner's custody could not cover.
    pub short_currencies: Vec<CurrencyCode>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    Pending,
    Failed { short_currencies: Vec<CurrencyCode> },
    Completed { finalized_at: Timestamp },
}

/// What finalization decided.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finalized {
    pub withheld: BTreeSet<Uuid>,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettlementRecord {
    pub staged: SettlementStaged,
    pub status: Status,
    pub updated_at: Timestamp,
    /// Disputes raised on this settlement, by id.
    pub disputes: BTreeMap<Uuid, DisputeRecord>,
    /// Closures of earlier disputes whose transfers joined this settlement at staging.
    pub joined: Vec<CarriedClosure>,
    /// Set when the dispute window was closed (v2 only).
    pub finalized: Option<Finalized>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settlement {
    #[default]
    Absent,
    Present(Box<SettlementRecord>),
}

/// One connection and currency that cannot cover its net loss.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Shortfall {
    pub connection_id: Uuid,
    pub currency: CurrencyCode,
    pub needed: i128,
    pub available: i128,
}

/// Every way staging can be refused; nothing is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StageRejection {
    #[error("the settlement already exists")]
    AlreadyExists,
    #[error("settlementAmounts is empty")]
    Empty,
    #[error(transparent)]
    Input(#[from] LimitError),
    #[error("an instruction quantity is zero")]
    ZeroQuantity,
    #[error("connection {0} is not a connection to this partner")]
    UnknownConnection(Uuid),
    #[error("only broker partners may name a source connection")]
    NotABroker,
    #[error("a broker's party-shaped amounts must sum to zero per currency; {0} does not")]
    BrokerNotNetZero(CurrencyCode),
    #[error("cutoffAt is more than 5 minutes in the future")]
    CutoffTooFarAhead,
    #[error("cutoffAt must be later than the previous settlement's")]
    CutoffNotAfterPrevious,
    #[error("cutoffAt is required")]
    CutoffRequired,
    #[error("cutoffAt belongs to v2")]
    CutoffInV1,
    #[error("partners with disputes enabled stage settlements with v2")]
    DisputesEnabled,
    #[error("some connections cannot cover their net liabilities")]
    Liabilities(Vec<Shortfall>),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// Why a settlement cannot be finalized or executed now; nothing is written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LifecycleRejection {
    #[error("the settlement does not exist")]
    NotFound,
    #[error("the settlement is completed")]
    Completed,
    #[error("the settlement is already finalized")]
    AlreadyFinalized,
    #[error("the dispute window has not closed yet")]
    DisputeWindowOpen,
    #[error("the top-up window has not closed yet")]
    TopUpWindowOpen,
    #[error(transparent)]
    Money(#[from] MoneyError),
}

/// The partner's own words in a settlement, bounded: `externalId`, `notes` and the number of
/// instruction lines. Checked by staging, and by the API before anything is loaded.
pub fn check_input(external_id: &str, notes: Option<&str>, lines: usize) -> Result<(), LimitError> {
    limits::text("externalId", external_id, MAX_EXTERNAL_ID_BYTES, Lines::One)?;
    limits::optional_text("notes", notes, MAX_NOTES_BYTES, Lines::Many)?;
    limits::count("settlementAmounts", lines, INSTRUCTIONS_MAX)
}

/// The command that stages `externalId` for a partner: a retry of the same settlement is the
/// same command, so it answers as the first time (or is a conflict when its body differs).
pub fn staging_command_id(partner_id: Uuid, external_id: &str) -> CommandId {
    CommandId::derive(
        "settlement",
        &[partner_id.as_bytes(), external_id.as_bytes()],
    )
}

/// The settlement a staging command creates: one per (partner, `externalId`).
pub fn settlement_id_of(command: CommandId) -> Uuid {
    Uuid::new_v5(&command.as_uuid(), b"settlement")
}

/// The settlement's transfers, one per instruction line, with ids derived from the settlement
/// and the line's position.
pub fn transfers_of(settlement_id: Uuid, instructions: &[Instruction]) -> Vec<Transfer> {
    instructions
        .iter()
        .enumerate()
        .map(|(n, i)| Transfer {
            transfer_id: Uuid::new_v5(&settlement_id, &(n as u64).to_be_bytes()),
            instruction: i.clone(),
        })
        .collect()
}

/// v1 performs a settlement at once, so it has no dispute window: only partners without disputes
/// may use it.
pub fn check_route(api: SettlementApi, partner: &PartnerRecord) -> Result<(), StageRejection> {
    match api {
        SettlementApi::V1 if partner.client_dispute_window.is_some() => {
            Err(StageRejection::DisputesEnabled)
        }
        _ => Ok(()),
    }
}

/// `cutoffAt` is required in v2 and refused in v1.
pub fn check_cutoff_given(
    api: SettlementApi,
    cutoff_at: Option<Timestamp>,
) -> Result<(), StageRejection> {
    match (api, cutoff_at) {
        (SettlementApi::V2, None) => Err(StageRejection::CutoffRequired),
        (SettlementApi::V1, Some(_)) => Err(StageRejection::CutoffInV1),
        _ => Ok(()),
    }
}

/// `cutoffAt`, when given, is at most five minutes ahead of `now` and later than the partner's
/// previous v2 settlement's.
pub fn check_cutoff_time(
    cutoff_at: Option<Timestamp>,
    previous: Option<Timestamp>,
    now: Timestamp,
) -> Result<(), StageRejection> {
    let Some(cutoff) = cutoff_at else {
        return Ok(());
    };
    if cutoff.0 > now.0.saturating_add(CUTOFF_AHEAD_MICROS_MAX) {
        return Err(StageRejection::CutoffTooFarAhead);
    }
    if previous.is_some_and(|previous| cutoff <= previous) {
        return Err(StageRejection::CutoffNotAfterPrevious);
    }
    Ok(())
}

/// The window lengths fixed on a settlement when it is staged, in microseconds: the partner's
/// dispute and top-up windows, each 0 when not set (a partner without disputes calling v2 gets
/// a dispute window of 0).
pub fn windows_of(partner: &PartnerRecord) -> (i64, i64) {
    let micros = |w: Option<super::partner::WindowMinutes>| w.map_or(0, |w| w.micros());
    (
        micros(partner.client_dispute_window),
        micros(partner.top_up_window),
    )
}

/// Where a settlement is in its lifecycle, as its `phase` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// v2, not yet finalized: disputes may still be raised.
    AwaitingDisputes,
    /// Finalized; the top-up window is running.
    ToppingUp,
    /// Due, or failed and waiting for a retry; a v1 settlement until it completes.
    Executing,
    /// Completed.
    Done,
}

/// A settlement's status without its details, as a read model keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusKind {
    Pending,
    Failed,
    Completed,
}

impl StatusKind {
    /// From the status name on the wire (`pending`, `failed`, `completed`).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "pending" => Some(Self::Pending),
            "failed" => Some(Self::Failed),
            "completed" => Some(Self::Completed),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Failed => "failed",
            Self::Completed => "completed",
        }
    }
}

impl Phase {
    /// The phase at `now` of a settlement staged through `api`, with `status`, finalized or not,
    /// whose top-up window ends at `top_up_window_ends`. The one definition: command replies and
    /// reads both call it.
    pub fn of(
        api: SettlementApi,
        status: StatusKind,
        finalized: bool,
        top_up_window_ends: Timestamp,
        now: Timestamp,
    ) -> Self {
        match (status, api) {
            (StatusKind::Completed, _) => Self::Done,
            (StatusKind::Failed, _) | (StatusKind::Pending, SettlementApi::V1) => Self::Executing,
            (StatusKind::Pending, SettlementApi::V2) if !finalized => Self::AwaitingDisputes,
            (StatusKind::Pending, SettlementApi::V2) if now < top_up_window_ends => Self::ToppingUp,
            (StatusKind::Pending, SettlementApi::V2) => Self::Executing,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingDisputes => "awaitingDisputes",
            Self::ToppingUp => "toppingUp",
            Self::Executing => "executing",
            Self::Done => "done",
        }
    }
}

impl Status {
    pub fn kind(&self) -> StatusKind {
        match self {
            Self::Pending => StatusKind::Pending,
            Self::Failed { .. } => StatusKind::Failed,
            Self::Completed { .. } => StatusKind::Completed,
        }
    }
}

/// A partner's request to stage (v2) or perform (v1) a settlement, as parsed and verified.
#[derive(Clone, Debug)]
pub struct StageRequest {
    pub settlement_id: Uuid,
    pub api: SettlementApi,
    pub external_id: String,
    pub notes: Option<String>,
    pub cutoff_at: Option<Timestamp>,
    pub instructions: Vec<Instruction>,
    pub initiated_by: Uuid,
    /// The signed payload, its signature and the key that verified it, kept for auditors.
    pub payload: String,
    pub signature: String,
    pub key_id: Uuid,
}

impl StageRequest {
    /// The `SettlementStaged` this request records for `partner` at `now`.
    pub fn staged(self, partner: &PartnerRecord, now: Timestamp) -> SettlementStaged {
        let (dispute_window_micros, top_up_window_micros) = windows_of(partner);
        SettlementStaged {
            settlement_id: self.settlement_id,
            partner_id: partner.id,
            partner_enterprise_id: partner.enterprise_id,
            external_id: self.external_id,
            api: self.api,
            notes: self.notes,
            cutoff_at: self.cutoff_at,
            transfers: transfers_of(self.settlement_id, &self.instructions),
            dispute_window_micros,
            top_up_window_micros,
            initiated_by: self.initiated_by,
            payload: self.payload,
            signature: self.signature,
            key_id: self.key_id,
            at: now,
        }
    }
}

/// What staging needs to know besides the settlement itself.
#[derive(Clone, Debug)]
pub struct StageContext<'a> {
    pub partner: &'a PartnerRecord,
    /// Every connection the instructions name, as loaded.
    pub connections: &'a BTreeMap<Uuid, Connection>,
    /// `cutoffAt` of the partner's previous v2 settlement.
    pub previous_cutoff: Option<Timestamp>,
    /// Closed disputes of earlier settlements waiting for this partner's next v2 settlement;
    /// their connections must be in `connections`.
    pub closures: &'a [CarriedClosure],
}

/// Net effect per (connection, currency): `+` it gains. Checked; never panics.
pub fn nets(
    instructions: &[Instruction],
) -> Result<BTreeMap<(Uuid, CurrencyCode), i128>, MoneyError> {
    let mut nets: BTreeMap<(Uuid, CurrencyCode), i128> = BTreeMap::new();
    let mut add =
        |connection: Uuid, currency: &CurrencyCode, delta: i128| -> Result<(), MoneyError> {
            let entry = nets.entry((connection, currency.clone())).or_default();
            *entry = entry.checked_add(delta).ok_or(MoneyError::Overflow)?;
            Ok(())
        };
    for i in instructions {
        add(i.destination, &i.currency, i.quantity)?;
        if let Some(source) = i.source {
            add(
                source,
                &i.currency,
                i.quantity.checked_neg().ok_or(MoneyError::Overflow)?,
            )?;
        }
    }
    Ok(nets)
}

/// The partner custody's net outflow per currency when `nets` execute (`+` it pays).
fn partner_outflows(
    nets: &BTreeMap<(Uuid, CurrencyCode), i128>,
) -> Result<BTreeMap<CurrencyCode, i128>, MoneyError> {
    let mut outflows: BTreeMap<CurrencyCode, i128> = BTreeMap::new();
    for ((_, currency), net) in nets {
        let entry = outflows.entry(currency.clone()).or_default();
        *entry = entry.checked_add(*net).ok_or(MoneyError::Overflow)?;
    }
    Ok(outflows)
}

fn check_instructions(
    context: &StageContext<'_>,
    instructions: &[Instruction],
) -> Result<(), StageRejection> {
    let ours = |id: Uuid| {
        context
            .connections
            .get(&id)
            .and_then(Connection::record)
            .is_some_and(|r| r.partner_id == context.partner.id)
    };
    let mut party_sums: BTreeMap<&CurrencyCode, i128> = BTreeMap::new();
    for i in instructions {
        if i.quantity == 0 {
            return Err(StageRejection::ZeroQuantity);
        }
        for connection in std::iter::once(i.destination).chain(i.source) {
            if !ours(connection) {
                return Err(StageRejection::UnknownConnection(connection));
            }
        }
        match (i.source, context.partner.broker) {
            (Some(_), false) => return Err(StageRejection::NotABroker),
            (None, true) => {
                let sum = party_sums.entry(&i.currency).or_default();
                *sum = sum.checked_add(i.quantity).ok_or(MoneyError::Overflow)?;
            }
            _ => {}
        }
    }
    match party_sums.into_iter().find(|(_, sum)| *sum != 0) {
        Some((currency, _)) => Err(StageRejection::BrokerNotNetZero(currency.clone())),
        None => Ok(()),
    }
}

impl Settlement {
    pub fn record(&self) -> Option<&SettlementRecord> {
        match self {
            Self::Absent => None,
            Self::Present(r) => Some(r),
        }
    }

    pub fn evolve(self, event: &DomainEvent) -> Self {
        match (self, event) {
            (Self::Absent, DomainEvent::SettlementStaged(e)) => {
                Self::Present(Box::new(SettlementRecord {
                    staged: e.clone(),
                    status: Status::Pending,
                    updated_at: e.at,
                    disputes: BTreeMap::new(),
                    joined: Vec::new(),
                    finalized: None,
                }))
            }
            (Self::Present(mut r), DomainEvent::ClosuresJoined(e)) => {
                r.joined.extend(e.closures.iter().cloned());
                Self::Present(r)
            }
            (Self::Present(mut r), DomainEvent::SettlementFinalized(e)) => {
                r.finalized = Some(Finalized {
                    withheld: e.withheld_connections.iter().copied().collect(),
                    at: e.at,
                });
                r.updated_at = e.at;
                Self::Present(r)
            }
            (
                Self::Present(mut r),
                event @ (DomainEvent::DisputeRaised(_)
                | DomainEvent::DisputeUpdated(_)
                | DomainEvent::DisputeClosed(_)),
            ) => {
                evolve_disputes(&mut r.disputes, event);
                Self::Present(r)
            }
            (Self::Present(mut r), DomainEvent::SettlementExecuted(e)) => {
                r.status = Status::Completed { finalized_at: e.at };
                r.updated_at = e.at;
                Self::Present(r)
            }
            (Self::Present(mut r), DomainEvent::SettlementFailed(e)) => {
                r.status = Status::Failed {
                    short_currencies: e.short_currencies.clone(),
                };
                r.updated_at = e.at;
                Self::Present(r)
            }
            (state, _) => state,
        }
    }

    /// A partner's settlement request, whole: v2 stages it (`decide_stage`) and advances the
    /// partner's `cutoffAt`; v1 performs it at once (`decide_perform`). The route, `cutoffAt` and
    /// every staging rule are checked here; `custody` (the partner's) is read by v1 only.
    pub fn decide_settle(
        &self,
        context: &StageContext<'_>,
        custody: &Custody,
        request: StageRequest,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, StageRejection> {
        check_route(request.api, context.partner)?;
        check_cutoff_given(request.api, request.cutoff_at)?;
        let staged = request.staged(context.partner, now);
        match staged.api {
            SettlementApi::V1 => self.decide_perform(context, custody, staged, now),
            SettlementApi::V2 => {
                let advanced = staged.cutoff_at.map(|cutoff_at| PartnerCutoffAdvanced {
                    partner_id: staged.partner_id,
                    settlement_id: staged.settlement_id,
                    cutoff_at,
                    at: now,
                });
                let mut events = self.decide_stage(context, staged, now)?;
                events.extend(advanced.map(DomainEvent::from));
                Ok(events)
            }
        }
    }

    /// Performs a v1 settlement (docs/api/lifecycle.md): staged and executed in one decision. When
    /// a connection cannot cover its net loss or the partner's custody its net outflow, the
    /// settlement is still recorded — `SettlementStaged` then `SettlementFailed` naming the
    /// short currencies — and nothing is held; a retry (`decide_execute`) tries again.
    pub fn decide_perform(
        &self,
        context: &StageContext<'_>,
        custody: &Custody,
        staged: SettlementStaged,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, StageRejection> {
        if self.record().is_some() {
            return Err(StageRejection::AlreadyExists);
        }
        let instructions: Vec<Instruction> = staged
            .transfers
            .iter()
            .map(|t| t.instruction.clone())
            .collect();
        check_input(
            &staged.external_id,
            staged.notes.as_deref(),
            instructions.len(),
        )?;
        if instructions.is_empty() {
            return Err(StageRejection::Empty);
        }
        check_route(staged.api, context.partner)?;
        check_instructions(context, &instructions)?;
        let performed = Settlement::Absent.evolve(&staged.clone().into());
        let record = performed.record().ok_or(StageRejection::AlreadyExists)?;
        let attempt = record.attempt_unheld(context.connections, custody, now)?;
        let mut events: Vec<DomainEvent> = vec![staged.into()];
        events.extend(attempt);
        Ok(events)
    }

    /// Stages a (v2) settlement: the `SettlementStaged` event and one `FundsHeld` per connection
    /// and currency whose net is a loss, each covered by the connection's available balance
    /// (v1 is performed by `decide_perform`, which holds only what it executes). A v2
    /// settlement also takes in every queued closure of the partner (`ClosuresJoined` here,
    /// `ClosuresAssigned` on the partner), and their transfers count in the liability check.
    pub fn decide_stage(
        &self,
        context: &StageContext<'_>,
        staged: SettlementStaged,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, StageRejection> {
        if self.record().is_some() {
            return Err(StageRejection::AlreadyExists);
        }
        let mut instructions: Vec<Instruction> = staged
            .transfers
            .iter()
            .map(|t| t.instruction.clone())
            .collect();
        check_input(
            &staged.external_id,
            staged.notes.as_deref(),
            instructions.len(),
        )?;
        if instructions.is_empty() && staged.api == SettlementApi::V1 {
            return Err(StageRejection::Empty);
        }
        check_route(staged.api, context.partner)?;
        check_instructions(context, &instructions)?;
        check_cutoff_time(staged.cutoff_at, context.previous_cutoff, now)?;
        let closures: &[CarriedClosure] = match staged.api {
            SettlementApi::V2 => context.closures,
            SettlementApi::V1 => &[],
        };
        instructions.extend(
            closures
                .iter()
                .flat_map(|c| c.transfers.iter().map(|t| t.instruction.clone())),
        );
        let nets = nets(&instructions)?;
        let mut shortfalls = Vec::new();
        let mut holds = Vec::new();
        for ((connection_id, currency), net) in &nets {
            if *net >= 0 {
                continue;
            }
            let needed = net.checked_neg().ok_or(MoneyError::Overflow)?;
            let available = context
                .connections
                .get(connection_id)
                .map_or(0, |c| c.balance(currency).available());
            if needed > available {
                shortfalls.push(Shortfall {
                    connection_id: *connection_id,
                    currency: currency.clone(),
                    needed,
                    available,
                });
                continue;
            }
            holds.push(FundsHeld {
                connection_id: *connection_id,
                settlement_id: staged.settlement_id,
                currency: currency.clone(),
                quantity: needed,
                at: now,
            });
        }
        if !shortfalls.is_empty() {
            return Err(StageRejection::Liabilities(shortfalls));
        }
        let (settlement_id, partner_id) = (staged.settlement_id, staged.partner_id);
        let mut events: Vec<DomainEvent> = vec![staged.into()];
        if !closures.is_empty() {
            events.push(
                ClosuresJoined {
                    settlement_id,
                    closures: closures.to_vec(),
                    at: now,
                }
                .into(),
            );
            events.push(
                ClosuresAssigned {
                    partner_id,
                    settlement_id,
                    dispute_ids: closures.iter().map(|c| c.dispute_id).collect(),
                    at: now,
                }
                .into(),
            );
        }
        events.extend(holds.into_iter().map(DomainEvent::from));
        Ok(events)
    }

    /// Closes the dispute window (docs/api/lifecycle.md): every connection with an open dispute is
    /// withheld, and its holds for this settlement are given back. Due at `createdAt + D`.
    pub fn decide_finalize(&self, now: Timestamp) -> Result<Vec<DomainEvent>, LifecycleRejection> {
        let record = self.record().ok_or(LifecycleRejection::NotFound)?;
        if record.staged.api == SettlementApi::V1 || record.finalized.is_some() {
            return Err(LifecycleRejection::AlreadyFinalized);
        }
        if now < record.dispute_window_ends() {
            return Err(LifecycleRejection::DisputeWindowOpen);
        }
        let withheld: BTreeSet<Uuid> = record
            .disputes
            .values()
            .filter(|d| d.is_open())
            .map(|d| d.connection_id)
            .collect();
        let before = holds_of(&nets(&record.instructions(|_| true))?);
        let after = holds_of(&nets(
            &record.instructions(|i| !withheld_any(&withheld, i)),
        )?);
        let settlement_id = record.staged.settlement_id;
        let mut events: Vec<DomainEvent> = Vec::new();
        for (key, held) in &before {
            let still = after.get(key).copied().unwrap_or(0);
            if still < *held {
                events.push(
                    FundsReleased {
                        connection_id: key.0,
                        settlement_id,
                        currency: key.1.clone(),
                        quantity: held - still,
                        at: now,
                    }
                    .into(),
                );
            }
        }
        // A broker instruction withheld on one side can leave the other side owing more than
        // it held; execution then fails naming that currency rather than overdrawing.
        events.push(
            SettlementFinalized {
                settlement_id,
                withheld_connections: withheld.into_iter().collect(),
                at: now,
            }
            .into(),
        );
        Ok(events)
    }

    /// Executes every transfer that is not withheld, together (docs/api/lifecycle.md): held losses
    /// go to the partner's custody, gains come from it. When the custody cannot cover its net
    /// outflow in some currency (or a connection's hold no longer covers its loss),
    /// `SettlementFailed` names the currencies and the holds stay; each failed attempt is recorded.
    /// A v2 settlement executes once finalized and its top-up window has closed; a failed v1
    /// settlement, which holds nothing, is attempted afresh (`decide_perform`'s rules).
    pub fn decide_execute(
        &self,
        connections: &BTreeMap<Uuid, Connection>,
        partner_custody: &Custody,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, LifecycleRejection> {
        let record = self.record().ok_or(LifecycleRejection::NotFound)?;
        if matches!(record.status, Status::Completed { .. }) {
            return Err(LifecycleRejection::Completed);
        }
        match record.staged.api {
            // A v1 settlement holds nothing while it is failed: each attempt holds and executes.
            SettlementApi::V1 => {
                return Ok(record.attempt_unheld(connections, partner_custody, now)?);
            }
            SettlementApi::V2 => {
                if record.finalized.is_none() {
                    return Err(LifecycleRejection::DisputeWindowOpen);
                }
                if now < record.top_up_window_ends() {
                    return Err(LifecycleRejection::TopUpWindowOpen);
                }
            }
        }
        record.execute_held(connections, partner_custody, now)
    }
}

impl SettlementRecord {
    /// Where the settlement is in its lifecycle at `now`.
    pub fn phase(&self, now: Timestamp) -> Phase {
        Phase::of(
            self.staged.api,
            self.status.kind(),
            self.finalized.is_some(),
            self.top_up_window_ends(),
            now,
        )
    }

    /// One attempt of a settlement that holds nothing yet (v1): when every connection's
    /// available balance covers its net loss and the partner's custody its net outflow, the
    /// losses are held and everything executes in the same decision; otherwise
    /// `SettlementFailed` names every short currency and nothing moves.
    fn attempt_unheld(
        &self,
        connections: &BTreeMap<Uuid, Connection>,
        partner_custody: &Custody,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, MoneyError> {
        let settlement_id = self.staged.settlement_id;
        let nets = nets(&self.instructions(|_| true))?;
        let holds = holds_of(&nets);
        let mut short: BTreeSet<CurrencyCode> = partner_outflows(&nets)?
            .into_iter()
            .filter(|(currency, outflow)| {
                *outflow > 0 && partner_custody.balance(currency).available() < *outflow
            })
            .map(|(currency, _)| currency)
            .collect();
        for ((connection_id, currency), needed) in &holds {
            let available = connections
                .get(connection_id)
                .map_or(0, |c| c.balance(currency).available());
            if available < *needed {
                short.insert(currency.clone());
            }
        }
        if !short.is_empty() {
            return Ok(vec![SettlementFailed {
                settlement_id,
                short_currencies: short.into_iter().collect(),
                at: now,
            }
            .into()]);
        }
        let mut events: Vec<DomainEvent> = holds
            .into_iter()
            .map(|((connection_id, currency), quantity)| {
                FundsHeld {
                    connection_id,
                    settlement_id,
                    currency,
                    quantity,
                    at: now,
                }
                .into()
            })
            .collect();
        let held: BTreeMap<Uuid, Connection> = connections
            .iter()
            .map(|(id, c)| (*id, events.iter().fold(c.clone(), Connection::evolve)))
            .collect();
        let executed = self
            .execute_held(&held, partner_custody, now)
            .map_err(|e| match e {
                LifecycleRejection::Money(m) => m,
                // Only money can refuse once every balance was checked.
                _ => MoneyError::Overflow,
            })?;
        events.extend(executed);
        Ok(events)
    }

    /// Executes every transfer that is not withheld from the holds this settlement placed.
    fn execute_held(
        &self,
        connections: &BTreeMap<Uuid, Connection>,
        partner_custody: &Custody,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, LifecycleRejection> {
        let record = self;
        let staged = &record.staged;
        let withheld = record
            .finalized
            .as_ref()
            .map(|f| f.withheld.clone())
            .unwrap_or_default();
        let nets = nets(&record.instructions(|i| !withheld_any(&withheld, i)))?;
        let outflows = partner_outflows(&nets)?;
        let mut short: BTreeSet<CurrencyCode> = outflows
            .iter()
            .filter(|(currency, outflow)| {
                **outflow > 0 && partner_custody.balance(currency).available() < **outflow
            })
            .map(|(currency, _)| currency.clone())
            .collect();
        // A loss is paid from this settlement's own hold, never from another settlement's: its
        // hold is what staging placed less what finalization gave back. (A broker instruction
        // withheld on one side can leave the other side owing more than that: it fails here.)
        let placed = holds_of(&self::nets(&record.instructions(|_| true))?);
        for ((connection_id, currency), net) in &nets {
            if *net >= 0 {
                continue;
            }
            let needed = net.checked_neg().ok_or(MoneyError::Overflow)?;
            let own = placed
                .get(&(*connection_id, currency.clone()))
                .copied()
                .unwrap_or(0);
            let held = connections
                .get(connection_id)
                .map_or(0, |c| c.balance(currency).held());
            if own < needed || held < needed {
                short.insert(currency.clone());
            }
        }
        if !short.is_empty() {
            return Ok(vec![SettlementFailed {
                settlement_id: staged.settlement_id,
                short_currencies: short.into_iter().collect(),
                at: now,
            }
            .into()]);
        }
        let settlement_id = staged.settlement_id;
        let mut events: Vec<DomainEvent> = Vec::new();
        for ((connection_id, currency), net) in &nets {
            let (consumed_held, credited) = if *net < 0 {
                (net.checked_neg().ok_or(MoneyError::Overflow)?, 0)
            } else {
                (0, *net)
            };
            // Every move is checked on both sides before anything is recorded.
            let balance = connections
                .get(connection_id)
                .map_or(Balance::ZERO, |c| c.balance(currency));
            balance.consume_held(consumed_held)?.credit(credited)?;
            events.push(
                ConnectionSettled {
                    connection_id: *connection_id,
                    settlement_id,
                    currency: currency.clone(),
                    consumed_held,
                    credited,
                    at: now,
                }
                .into(),
            );
        }
        for (currency, outflow) in outflows.into_iter().filter(|(_, o)| *o != 0) {
            let delta = outflow.checked_neg().ok_or(MoneyError::Overflow)?;
            let custody = partner_custody.balance(&currency);
            if delta > 0 {
                custody.credit(delta)?;
            } else {
                custody.debit(outflow)?;
            }
            events.push(
                CustodySettled {
                    enterprise_id: staged.partner_enterprise_id,
                    settlement_id,
                    currency,
                    delta,
                    at: now,
                }
                .into(),
            );
        }
        events.push(
            SettlementExecuted {
                settlement_id,
                at: now,
            }
            .into(),
        );
        Ok(events)
    }
}

impl SettlementRecord {
    /// The instructions of every transfer (own and joined) that `keep` accepts.
    pub fn instructions(&self, keep: impl Fn(&Instruction) -> bool) -> Vec<Instruction> {
        self.all_transfers()
            .map(|t| &t.instruction)
            .filter(|i| keep(i))
            .cloned()
            .collect()
    }

    /// Every connection a transfer of this settlement touches.
    pub fn connections(&self) -> BTreeSet<Uuid> {
        self.all_transfers()
            .flat_map(|t| std::iter::once(t.instruction.destination).chain(t.instruction.source))
            .collect()
    }
}

/// An instruction is withheld when either connection it touches is.
fn withheld_any(withheld: &BTreeSet<Uuid>, i: &Instruction) -> bool {
    withheld.contains(&i.destination) || i.source.is_some_and(|s| withheld.contains(&s))
}

/// The hold each net loss needs.
fn holds_of(nets: &BTreeMap<(Uuid, CurrencyCode), i128>) -> BTreeMap<(Uuid, CurrencyCode), i128> {
    nets.iter()
        .filter(|(_, net)| **net < 0)
        .map(|(key, net)| (key.clone(), net.saturating_neg()))
        .collect()
}

/// Why an execution attempt failed, as the settlement's `reason` says it. The currencies are
/// what the event records; the sentence names both sides a currency can be short on.
pub fn failure_reason(short_currencies: &[CurrencyCode]) -> String {
    let names: Vec<&str> = short_currencies.iter().map(CurrencyCode::as_str).collect();
    format!(
        "balances are short in {}: the partner's custody cannot cover its net outflow, or a \
         connection cannot cover its net loss",
        names.join(", ")
    )
}

/// The stream a settlement-lifecycle event is recorded on; `None` for other events.
pub fn stream_of(event: &DomainEvent) -> Option<StreamName> {
    Some(match event {
        DomainEvent::SettlementStaged(e) => of::settlement(e.settlement_id),
        DomainEvent::SettlementExecuted(e) => of::settlement(e.settlement_id),
        DomainEvent::SettlementFailed(e) => of::settlement(e.settlement_id),
        DomainEvent::SettlementFinalized(e) => of::settlement(e.settlement_id),
        DomainEvent::ClosuresJoined(e) => of::settlement(e.settlement_id),
        DomainEvent::DisputeRaised(e) => of::settlement(e.settlement_id),
        DomainEvent::DisputeUpdated(e) => of::settlement(e.settlement_id),
        DomainEvent::DisputeClosed(e) => of::settlement(e.settlement_id),
        DomainEvent::FundsHeld(e) => of::connection(e.connection_id),
        DomainEvent::FundsReleased(e) => of::connection(e.connection_id),
        DomainEvent::ConnectionSettled(e) => of::connection(e.connection_id),
        DomainEvent::CustodySettled(e) => of::custody(e.enterprise_id),
        DomainEvent::PartnerCutoffAdvanced(e) => of::partner(e.partner_id),
        DomainEvent::ClosureQueued(e) => of::partner(e.partner_id),
        DomainEvent::ClosuresAssigned(e) => of::partner(e.partner_id),
        _ => return None,
    })
}

/// A connection balance after a settlement event of this connection (used by `Connection::evolve`).
pub fn apply_to_balance(balance: Balance, event: &DomainEvent) -> Result<Balance, MoneyError> {
    match event {
        DomainEvent::FundsHeld(e) => balance.hold(e.quantity),
        DomainEvent::FundsReleased(e) => balance.release(e.quantity),
        DomainEvent::ConnectionSettled(e) => {
            balance.consume_held(e.consumed_held)?.credit(e.credited)
        }
        _ => Ok(balance),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::custody::DepositCredited;
    use crate::domain::fixtures::{btc, funded_connection};
    use crate::domain::money::AmountFormat;

    const PARTNER: Uuid = Uuid::from_u128(0xa);
    const PARTNER_E: Uuid = Uuid::from_u128(0xb);
    const C1: Uuid = Uuid::from_u128(1);
    const C2: Uuid = Uuid::from_u128(2);
    const FOREIGN: Uuid = Uuid::from_u128(3);
    const S: Uuid = Uuid::from_u128(0x5);
    const NOW: Timestamp = Timestamp(1_000_000_000_000);

    fn partner(broker: bool) -> PartnerRecord {
        PartnerRecord {
            id: PARTNER,
            enterprise_id: PARTNER_E,
            name: "p".into(),
            broker,
            active: true,
            client_dispute_window: None,
            top_up_window: None,
            amount_format: AmountFormat::BaseUnits,
            connection_key_schema: Default::default(),
            last_cutoff: None,
            pending_closures: BTreeMap::new(),
            created_at: NOW,
            updated_at: NOW,
        }
    }

    /// A connection to `partner_id` with `allocated` BTC available.
    fn connection(id: Uuid, partner_id: Uuid, allocated: i128) -> Connection {
        funded_connection(
            id,
            (partner_id, PARTNER_E),
            Uuid::from_u128(8),
            allocated,
            NOW,
        )
    }

    fn connections(c1: i128, c2: i128) -> BTreeMap<Uuid, Connection> {
        BTreeMap::from([
            (C1, connection(C1, PARTNER, c1)),
            (C2, connection(C2, PARTNER, c2)),
            (FOREIGN, connection(FOREIGN, Uuid::from_u128(0xff), 100)),
        ])
    }

    fn line(source: Option<Uuid>, destination: Uuid, quantity: i128) -> Transfer {
        Transfer {
            transfer_id: Uuid::from_u128(destination.as_u128() * 1000 + quantity.unsigned_abs()),
            instruction: Instruction {
                source,
                destination,
                currency: btc(),
                quantity,
            },
        }
    }

    fn staged(
        api: SettlementApi,
        transfers: Vec<Transfer>,
        cutoff_at: Option<Timestamp>,
    ) -> SettlementStaged {
        SettlementStaged {
            settlement_id: S,
            partner_id: PARTNER,
            partner_enterprise_id: PARTNER_E,
            external_id: "x-1".into(),
            api,
            notes: None,
            cutoff_at,
            transfers,
            dispute_window_micros: 0,
            top_up_window_micros: 0,
            initiated_by: Uuid::from_u128(6),
            payload: "{}".into(),
            signature: "00".into(),
            key_id: Uuid::from_u128(4),
            at: NOW,
        }
    }

    fn stage(
        p: &PartnerRecord,
        conns: &BTreeMap<Uuid, Connection>,
        previous: Option<Timestamp>,
        s: SettlementStaged,
    ) -> Result<Vec<DomainEvent>, StageRejection> {
        Settlement::Absent.decide_stage(
            &StageContext {
                partner: p,
                connections: conns,
                previous_cutoff: previous,
                closures: &[],
            },
            s,
            NOW,
        )
    }

    fn custody(btc_units: i128) -> Custody {
        let deposit = DepositCredited {
            enterprise_id: PARTNER_E,
            deposit_id: Uuid::from_u128(1),
            external_id: "d".into(),
            currency: btc(),
            quantity: btc_units,
            at: NOW,
        };
        Custody::default().evolve(&deposit.into())
    }

    #[test]
    fn staging_holds_each_net_loss() {
        let conns = connections(100, 0);
        let s = staged(
            SettlementApi::V2,
            vec![line(None, C1, -30), line(None, C2, 50), line(None, C1, 10)],
            Some(NOW),
        );
        let events = stage(&partner(false), &conns, None, s.clone()).unwrap();
        let held = FundsHeld {
            connection_id: C1,
            settlement_id: S,
            currency: btc(),
            quantity: 20,
            at: NOW,
        };
        assert_eq!(
            events,
            vec![s.into(), held.into()],
            "one hold of the net loss; gains hold nothing"
        );
    }

    #[test]
    fn staging_refusals() {
        use StageRejection::*;
        let (p, conns) = (partner(false), connections(100, 0));
        let v2 = |t: Vec<Transfer>| staged(SettlementApi::V2, t, None);
        assert_eq!(
            stage(&p, &conns, None, staged(SettlementApi::V1, vec![], None)),
            Err(Empty)
        );
        assert!(
            stage(&p, &conns, None, v2(vec![])).is_ok(),
            "v2 accepts {{}}"
        );
        assert_eq!(
            stage(&p, &conns, None, v2(vec![line(None, C1, 0)])),
            Err(ZeroQuantity)
        );
        assert_eq!(
            stage(&p, &conns, None, v2(vec![line(None, FOREIGN, 1)])),
            Err(UnknownConnection(FOREIGN))
        );
        assert_eq!(
            stage(
                &p,
                &conns,
                None,
                v2(vec![line(None, Uuid::from_u128(77), 1)])
            ),
            Err(UnknownConnection(Uuid::from_u128(77)))
        );
        assert_eq!(
            stage(&p, &conns, None, v2(vec![line(Some(C1), C2, 1)])),
            Err(NotABroker)
        );
        let broker = partner(true);
        assert_eq!(
            stage(
                &broker,
                &conns,
                None,
                v2(vec![line(None, C1, -5), line(None, C2, 4)])
            ),
            Err(BrokerNotNetZero(btc()))
        );
        assert!(stage(
            &broker,
            &conns,
            None,
            v2(vec![line(None, C1, -5), line(None, C2, 5)])
        )
        .is_ok());
        assert!(
            stage(&broker, &conns, None, v2(vec![line(Some(C1), C2, 5)])).is_ok(),
            "counterparty→party"
        );
        let ahead = staged(
            SettlementApi::V2,
            vec![],
            Some(Timestamp(NOW.0 + CUTOFF_AHEAD_MICROS_MAX + 1)),
        );
        assert_eq!(stage(&p, &conns, None, ahead), Err(CutoffTooFarAhead));
        assert_eq!(
            stage(
                &p,
                &conns,
                Some(NOW),
                staged(SettlementApi::V2, vec![], Some(NOW))
            ),
            Err(CutoffNotAfterPrevious)
        );
        let short = stage(
            &p,
            &conns,
            None,
            v2(vec![line(None, C1, -101), line(None, C2, -1)]),
        );
        assert_eq!(
            short,
            Err(Liabilities(vec![
                Shortfall {
                    connection_id: C1,
                    currency: btc(),
                    needed: 101,
                    available: 100
                },
                Shortfall {
                    connection_id: C2,
                    currency: btc(),
                    needed: 1,
                    available: 0
                },
            ])),
            "every short connection and currency is named"
        );
        let present = Settlement::Absent.evolve(&staged(SettlementApi::V2, vec![], None).into());
        let context = StageContext {
            partner: &p,
            connections: &conns,
            previous_cutoff: None,
            closures: &[],
        };
        assert_eq!(
            present.decide_stage(&context, v2(vec![]), NOW),
            Err(AlreadyExists)
        );
    }

    #[test]
    fn earlier_holds_count_against_later_settlements() {
        let (p, mut conns) = (partner(false), connections(100, 0));
        let first = stage(
            &p,
            &conns,
            None,
            staged(SettlementApi::V2, vec![line(None, C1, -70)], None),
        )
        .unwrap();
        let c1 = first
            .iter()
            .fold(conns.remove(&C1).unwrap(), |c, e| c.evolve(e));
        assert_eq!(
            (c1.balance(&btc()).available(), c1.balance(&btc()).held()),
            (30, 70)
        );
        conns.insert(C1, c1);
        let second = stage(
            &p,
            &conns,
            None,
            staged(SettlementApi::V2, vec![line(None, C1, -31)], None),
        );
        assert!(matches!(second, Err(StageRejection::Liabilities(s)) if s[0].available == 30));
    }

    #[test]
    fn execution_moves_everything_or_fails_naming_the_currency() {
        let (p, conns) = (partner(false), connections(100, 0));
        let s = staged(
            SettlementApi::V2,
            vec![line(None, C1, -30), line(None, C2, 50)],
            None,
        );
        let staged_events = stage(&p, &conns, None, s).unwrap();
        let settlement = staged_events
            .iter()
            .fold(Settlement::Absent, Settlement::evolve);
        let finalized = settlement.decide_finalize(NOW).unwrap();
        let settlement = finalized.iter().fold(settlement, Settlement::evolve);
        let mut c1 = staged_events
            .iter()
            .fold(conns[&C1].clone(), |c, e| c.evolve(e));
        let mut c2 = conns[&C2].clone();
        let total = |c1: &Connection, c2: &Connection, custody: &Custody| {
            c1.balance(&btc()).total()
                + c2.balance(&btc()).total()
                + custody.balance(&btc()).total()
        };

        // The partner owes a net 20 and has 10: failed, holds stay, nothing moves.
        let after_staging: BTreeMap<Uuid, Connection> =
            BTreeMap::from([(C1, c1.clone()), (C2, c2.clone())]);
        let poor = custody(10);
        let failed = settlement
            .decide_execute(&after_staging, &poor, NOW)
            .unwrap();
        assert_eq!(
            failed,
            vec![SettlementFailed {
                settlement_id: S,
                short_currencies: vec![btc()],
                at: NOW
            }
            .into()]
        );
        let settlement = failed.iter().fold(settlement, Settlement::evolve);
        assert_eq!(
            settlement
                .decide_execute(&after_staging, &poor, NOW)
                .unwrap(),
            failed,
            "every failed attempt is recorded"
        );

        // Topped up: everything moves, and the currency is conserved.
        let mut funded = custody(25);
        let before = total(&c1, &c2, &funded);
        let executed = settlement
            .decide_execute(&after_staging, &funded, NOW)
            .unwrap();
        for e in &executed {
            c1 = c1.evolve(e);
            c2 = c2.evolve(e);
            funded = funded.evolve(e);
        }
        assert_eq!(
            (c1.balance(&btc()).available(), c1.balance(&btc()).held()),
            (70, 0),
            "the held loss is consumed"
        );
        assert_eq!(c2.balance(&btc()).available(), 50);
        assert_eq!(funded.balance(&btc()).available(), 5);
        assert_eq!(total(&c1, &c2, &funded), before, "conserved");
        let done = executed.iter().fold(settlement, Settlement::evolve);
        assert!(matches!(
            done.record().unwrap().status,
            Status::Completed { .. }
        ));
        assert_eq!(
            done.decide_execute(&after_staging, &funded, NOW),
            Err(LifecycleRejection::Completed),
            "executes at most once"
        );
    }

    fn perform(
        conns: &BTreeMap<Uuid, Connection>,
        custody_btc: i128,
        transfers: Vec<Transfer>,
    ) -> Result<Vec<DomainEvent>, StageRejection> {
        let p = partner(false);
        let context = StageContext {
            partner: &p,
            connections: conns,
            previous_cutoff: None,
            closures: &[],
        };
        Settlement::Absent.decide_perform(
            &context,
            &custody(custody_btc),
            staged(SettlementApi::V1, transfers, None),
            NOW,
        )
    }

    #[test]
    fn v1_short_of_a_balance_is_recorded_failed_and_holds_nothing() {
        let conns = connections(10, 0);
        // C1 owes 30 with 10 allocated: staged and failed, naming BTC; no hold, nothing moves.
        let s = staged(SettlementApi::V1, vec![line(None, C1, -30)], None);
        let events = perform(&conns, 100, s.transfers.clone()).unwrap();
        let failed = SettlementFailed {
            settlement_id: S,
            short_currencies: vec![btc()],
            at: NOW,
        };
        assert_eq!(events, vec![s.clone().into(), failed.clone().into()]);
        // The partner's custody short of a gain: the same, and nothing is held either.
        let gain = staged(SettlementApi::V1, vec![line(None, C2, 500)], None);
        assert_eq!(
            perform(&conns, 100, gain.transfers.clone()).unwrap(),
            vec![gain.into(), failed.clone().into()]
        );

        // Once the connection is funded, a retry holds and executes in one decision.
        let settlement = events.iter().fold(Settlement::Absent, Settlement::evolve);
        assert!(matches!(
            settlement.record().unwrap().status,
            Status::Failed { .. }
        ));
        assert_eq!(settlement.record().unwrap().phase(NOW), Phase::Executing);
        let still_short = settlement.decide_execute(&conns, &custody(100), NOW);
        assert_eq!(
            still_short,
            Ok(vec![failed.into()]),
            "each attempt is recorded"
        );
        let funded = connections(40, 0);
        let retried = settlement
            .decide_execute(&funded, &custody(100), NOW)
            .unwrap();
        let held = FundsHeld {
            connection_id: C1,
            settlement_id: S,
            currency: btc(),
            quantity: 30,
            at: NOW,
        };
        assert_eq!(retried.first(), Some(&held.into()));
        let c1 = retried.iter().fold(funded[&C1].clone(), |c, e| c.evolve(e));
        assert_eq!(
            (c1.balance(&btc()).available(), c1.balance(&btc()).held()),
            (10, 0),
            "held and paid at once"
        );
        let done = retried.iter().fold(settlement, Settlement::evolve);
        assert_eq!(done.record().unwrap().phase(NOW), Phase::Done);
    }

    #[test]
    fn v1_covered_executes_at_once() {
        let conns = connections(100, 0);
        let s = staged(
            SettlementApi::V1,
            vec![line(None, C1, -30), line(None, C2, 20)],
            None,
        );
        let events = perform(&conns, 0, s.transfers.clone()).unwrap();
        let done = events.iter().fold(Settlement::Absent, Settlement::evolve);
        assert!(matches!(
            done.record().unwrap().status,
            Status::Completed { .. }
        ));
        assert!(events
            .iter()
            .any(|e| matches!(e, DomainEvent::FundsHeld(h) if h.quantity == 30)));
    }

    #[test]
    fn route_and_cutoff_rules() {
        use StageRejection::*;
        let mut p = partner(false);
        assert_eq!(check_route(SettlementApi::V1, &p), Ok(()));
        p.client_dispute_window =
            Some(super::super::partner::WindowMinutes::parse(5.into()).unwrap());
        assert_eq!(check_route(SettlementApi::V1, &p), Err(DisputesEnabled));
        assert_eq!(check_route(SettlementApi::V2, &p), Ok(()));
        assert_eq!(
            check_cutoff_given(SettlementApi::V2, None),
            Err(CutoffRequired)
        );
        assert_eq!(
            check_cutoff_given(SettlementApi::V1, Some(NOW)),
            Err(CutoffInV1)
        );
        assert_eq!(check_cutoff_given(SettlementApi::V2, Some(NOW)), Ok(()));
        assert_eq!(check_cutoff_given(SettlementApi::V1, None), Ok(()));
        // A partner with disputes enabled is refused v1 by the decision itself too.
        let conns = connections(100, 0);
        let context = StageContext {
            partner: &p,
            connections: &conns,
            previous_cutoff: None,
            closures: &[],
        };
        let request = StageRequest {
            settlement_id: S,
            api: SettlementApi::V1,
            external_id: "x".into(),
            notes: None,
            cutoff_at: None,
            instructions: vec![line(None, C1, 1).instruction],
            initiated_by: Uuid::from_u128(6),
            payload: "{}".into(),
            signature: "00".into(),
            key_id: Uuid::from_u128(4),
        };
        assert_eq!(
            Settlement::Absent.decide_settle(&context, &custody(0), request, NOW),
            Err(DisputesEnabled)
        );
    }

    #[test]
    fn v2_request_stages_and_advances_the_cutoff() {
        let (p, conns) = (partner(false), connections(100, 0));
        let context = StageContext {
            partner: &p,
            connections: &conns,
            previous_cutoff: None,
            closures: &[],
        };
        let request = StageRequest {
            settlement_id: S,
            api: SettlementApi::V2,
            external_id: "x".into(),
            notes: None,
            cutoff_at: Some(NOW),
            instructions: vec![line(None, C1, -5).instruction],
            initiated_by: Uuid::from_u128(6),
            payload: "{}".into(),
            signature: "00".into(),
            key_id: Uuid::from_u128(4),
        };
        let events = Settlement::Absent
            .decide_settle(&context, &Custody::default(), request, NOW)
            .unwrap();
        let staged = match &events[0] {
            DomainEvent::SettlementStaged(s) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            staged.transfers,
            transfers_of(S, &[line(None, C1, -5).instruction])
        );
        assert_eq!(
            events.last(),
            Some(
                &PartnerCutoffAdvanced {
                    partner_id: PARTNER,
                    settlement_id: S,
                    cutoff_at: NOW,
                    at: NOW
                }
                .into()
            )
        );
    }

    #[test]
    fn ids_are_derived_as_they_always_were() {
        let command = staging_command_id(PARTNER, "x-1");
        assert_eq!(
            command,
            CommandId::derive("settlement", &[PARTNER.as_bytes(), b"x-1"])
        );
        assert_eq!(
            settlement_id_of(command),
            Uuid::new_v5(&command.as_uuid(), b"settlement")
        );
        let transfers = transfers_of(S, &[line(None, C1, 1).instruction]);
        assert_eq!(
            transfers[0].transfer_id,
            Uuid::new_v5(&S, &0u64.to_be_bytes())
        );
    }

    #[test]
    fn phase_follows_status_windows_and_time() {
        use Phase::*;
        use SettlementApi::{V1, V2};
        use StatusKind::*;
        let ends = Timestamp(NOW.0 + 10);
        let cases = [
            (V2, Pending, false, NOW, AwaitingDisputes),
            (V2, Pending, true, NOW, ToppingUp),
            (V2, Pending, true, ends, Executing),
            (V2, Failed, true, NOW, Executing),
            (V2, Completed, true, NOW, Done),
            (V1, Pending, false, NOW, Executing),
            (V1, Failed, false, NOW, Executing),
            (V1, Completed, false, NOW, Done),
        ];
        for (api, status, finalized, now, phase) in cases {
            assert_eq!(
                Phase::of(api, status, finalized, ends, now),
                phase,
                "{api:?} {status:?} finalized={finalized}"
            );
        }
        for status in [Pending, Failed, Completed] {
            assert_eq!(StatusKind::parse(status.as_str()), Some(status));
        }
    }
}
