//! Objects of docs/api/guide.md from domain records (for command replies), as the types of
//! `contract.rs`. Query routes build the same types from read models (`reads.rs`); both use `time`
//! for timestamps, so the two agree to the microsecond, and both leave out an optional field that
//! has no value.

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use events::domain::client::{wallet_id_of, ClientRecord};
use events::domain::connection::{AllocationKind, AllocationRecord, Connection, ConnectionRecord};
use events::domain::connection_key::ConnectionKeySchema;
use events::domain::dispute::{closure_amounts, Amounts, ClosedBy, DisputeRecord};
use events::domain::enterprise::EnterpriseRecord;
use events::domain::event::Timestamp;
use events::domain::money::{format_base_units, AmountFormat};
use events::domain::partner::{PartnerRecord, WindowMinutes};
use events::domain::settlement::{
    failure_reason, Phase, SettlementRecord, Status, StatusKind, Transfer,
};
use events::domain::user::UserRecord;
use events::store::to_datetime;
use serde::Serialize;
use uuid::Uuid;

use super::command::Reply;
use super::contract;
use super::error::ApiError;

/// RFC 3339 UTC with microseconds, e.g. `2026-11-22T04:38:30.123456Z`.
pub fn time(t: Timestamp) -> String {
    stamp(to_datetime(t))
}

/// As `time`, from a timestamp read from the database.
pub fn stamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// A command's `200` reply: `body` serialized, as the outcome the command records.
pub fn reply<T: Serialize>(body: &T) -> Result<Reply, ApiError> {
    serde_json::to_value(body)
        .map(Reply::ok)
        .map_err(ApiError::internal)
}

fn window(w: Option<WindowMinutes>) -> Option<f64> {
    w.and_then(|w| {
        let minutes: f64 = w.minutes().try_into().unwrap_or(0.0);
        minutes.is_finite().then_some(minutes)
    })
}

pub fn enterprise(r: &EnterpriseRecord) -> contract::Enterprise {
    contract::Enterprise {
        id: r.id,
        name: r.name.clone(),
        oes_license: r.oes_license,
        created_at: time(r.created_at),
        updated_at: time(r.updated_at),
    }
}

pub fn key(enterprise_id: Uuid, key_id: Uuid, r: &EnterpriseRecord) -> contract::Key {
    let k = r.keys.get(&key_id);
    contract::Key {
        id: key_id,
        enterprise_id,
        public_key: k.map(|k| hex::encode(k.public_key)),
        created_at: k.map(|k| time(k.created_at)),
        revoked_at: k.and_then(|k| k.revoked_at).map(time),
    }
}

pub fn user(r: &UserRecord) -> contract::User {
    contract::User {
        id: r.id,
        name: r.name.clone(),
        enterprise_ids: r.enterprise_ids.clone(),
        auditor: r.auditor,
        disabled: r.disabled,
        created_at: time(r.created_at),
        updated_at: time(r.updated_at),
    }
}

pub fn amount_format(f: AmountFormat) -> contract::AmountFormat {
    match f {
        AmountFormat::BaseUnits => contract::AmountFormat::BaseUnits,
        AmountFormat::Decimal => contract::AmountFormat::Decimal,
    }
}

pub fn connection_key_schema(s: ConnectionKeySchema) -> contract::ConnectionKeySchema {
    match s {
        ConnectionKeySchema::Token => contract::ConnectionKeySchema::Token,
        ConnectionKeySchema::TokenAndSignature => contract::ConnectionKeySchema::TokenAndSignature,
        ConnectionKeySchema::ApiKeyAndSecret => contract::ConnectionKeySchema::ApiKeyAndSecret,
        ConnectionKeySchema::Clearloop => contract::ConnectionKeySchema::Clearloop,
    }
}

pub fn partner(r: &PartnerRecord) -> contract::Partner {
    contract::Partner {
        id: r.id,
        enterprise_id: r.enterprise_id,
        name: r.name.clone(),
        broker: r.broker,
        active: r.active,
        client_dispute_window_minutes: window(r.client_dispute_window),
        top_up_window_minutes: window(r.top_up_window),
        amount_format: amount_format(r.amount_format),
        connection_key_schema: connection_key_schema(r.connection_key_schema),
        created_at: time(r.created_at),
        updated_at: time(r.updated_at),
    }
}

pub fn client(r: &ClientRecord) -> contract::Client {
    contract::Client {
        id: r.id,
        enterprise_id: r.enterprise_id,
        wallet_id: r.wallet_id,
        created_at: time(r.created_at),
        updated_at: time(r.created_at),
    }
}

pub fn connection(r: &ConnectionRecord) -> contract::Connection {
    contract::Connection {
        id: r.id,
        name: r.name.clone(),
        client_id: r.client_id,
        partner_id: r.partner_id,
        network_account_id: r.network_account_id,
        active: r.active,
        initialized: true,
        partners_connection_id: None,
        partners_client_id: None,
        nonce: r.nonce.clone(),
        proof: r.proof.clone(),
        created_at: time(r.created_at),
        updated_at: time(r.updated_at),
    }
}

pub fn allocation(a: &AllocationRecord) -> contract::Allocation {
    contract::Allocation {
        id: a.allocation_id,
        kind: match a.kind {
            AllocationKind::Allocation => contract::AllocationType::Allocation,
            AllocationKind::Deallocation => contract::AllocationType::Deallocation,
        },
        amount: contract::Amount {
            currency: a.currency.as_str().to_owned(),
            quantity: format_base_units(a.quantity),
        },
        connection_id: a.connection_id,
        client_external_id: a.client_external_id.clone(),
        initiated_by: a.initiated_by,
        notes: a.notes.clone(),
        status: if a.released.is_some() {
            contract::AllocationStatus::Released
        } else {
            contract::AllocationStatus::Cleared
        },
        reason: a.released.map(|r| r.sentence().to_owned()),
        retriable: a.released.is_some(),
        created_at: time(a.at),
        updated_at: time(a.at),
    }
}

pub fn settlement_status(kind: StatusKind) -> contract::SettlementStatus {
    match kind {
        StatusKind::Pending => contract::SettlementStatus::Pending,
        StatusKind::Failed => contract::SettlementStatus::Failed,
        StatusKind::Completed => contract::SettlementStatus::Completed,
    }
}

pub fn phase(p: Phase) -> contract::SettlementPhase {
    match p {
        Phase::AwaitingDisputes => contract::SettlementPhase::AwaitingDisputes,
        Phase::ToppingUp => contract::SettlementPhase::ToppingUp,
        Phase::Executing => contract::SettlementPhase::Executing,
        Phase::Done => contract::SettlementPhase::Done,
    }
}

/// The settlement object at `now` (its `phase` depends on the time).
pub fn settlement(r: &SettlementRecord, now: Timestamp) -> contract::Settlement {
    let s = &r.staged;
    let (reason, finalized_at) = match &r.status {
        Status::Failed { short_currencies } => (Some(failure_reason(short_currencies)), None),
        Status::Completed { finalized_at } => (None, Some(time(*finalized_at))),
        Status::Pending => (None, None),
    };
    contract::Settlement {
        id: s.settlement_id,
        partner_id: s.partner_id,
        external_id: s.external_id.clone(),
        status: settlement_status(r.status.kind()),
        settlement_type: "offchain".to_owned(),
        reconciled: false,
        initiated_by: s.initiated_by,
        notes: s.notes.clone(),
        created_at: time(s.at),
        updated_at: time(r.updated_at),
        disputed: !r.disputes.is_empty(),
        loss_sla_alert_sent: false,
        gain_sla_alert_sent: false,
        phase: phase(r.phase(now)),
        dispute_window_ends_at: time(r.dispute_window_ends()),
        top_up_window_ends_at: time(r.top_up_window_ends()),
        cutoff_at: s.cutoff_at.map(time),
        reason,
        finalized_at,
        transfer_direction: None,
        settling_disputes: None,
    }
}

/// The dispute object, from the settlement's own state, without its closure.
pub fn dispute(
    s: &SettlementRecord,
    d: &DisputeRecord,
    settled_in: Option<Uuid>,
) -> contract::Dispute {
    let retraction = d.retraction.as_ref();
    contract::Dispute {
        id: d.dispute_id,
        connection_id: d.connection_id,
        disputed_settlement_id: s.staged.settlement_id,
        user_id: d.user_id,
        expected_transfers: amounts(&d.expected_transfers),
        retracted: retraction.is_some(),
        reason: d.reason.clone(),
        retracted_by: retraction.map(|r| r.by),
        retracted_at: retraction.map(|r| time(r.at)),
        retracted_reason: retraction.and_then(|r| r.reason.clone()),
        dispute_closure_id: d.closure.as_ref().map(|c| c.closure_id),
        settled_in_settlement_id: settled_in,
        dispute_closure: None,
        created_at: time(d.created_at),
        updated_at: time(d.updated_at),
    }
}

pub fn closed_by(c: ClosedBy) -> contract::ClosedBy {
    match c {
        ClosedBy::Client => contract::ClosedBy::Client,
        ClosedBy::Admin => contract::ClosedBy::Admin,
    }
}

/// The dispute closure of `d` (`None` while it is not closed), with its adjusted settlement
/// transfers as `transfer` renders them.
pub fn closure(
    d: &DisputeRecord,
    adjusted_settlement_transfers: Vec<contract::Transfer>,
) -> Option<contract::DisputeClosure> {
    let c = d.closure.as_ref()?;
    let adjusted = closure_amounts(d.connection_id, &c.adjusted_transfers);
    Some(contract::DisputeClosure {
        id: c.closure_id,
        closed_by: closed_by(c.closed_by),
        // Not an optional field: an operator's closure has no user, so it is null.
        user_id: c.user_id,
        notes: c.notes.clone(),
        status: "approved".to_owned(),
        adjusted_transfers: amounts(&adjusted),
        adjusted_settlement_transfers,
        created_at: time(c.at),
    })
}

/// `{currency: "amount"}` in base units.
pub fn amounts(amounts: &Amounts) -> BTreeMap<String, String> {
    amounts
        .iter()
        .map(|(c, q)| (c.as_str().to_owned(), format_base_units(*q)))
        .collect()
}

/// What a transfer object needs to know about a connection, by id: its client enterprise and
/// its network account (facts fixed when the connection was made).
pub type Owners = BTreeMap<Uuid, (Uuid, Uuid)>;

/// The owners of those of `connections` that exist.
pub fn owners<'a>(connections: impl IntoIterator<Item = &'a Connection>) -> Owners {
    connections
        .into_iter()
        .filter_map(Connection::record)
        .map(|r| (r.id, (r.client_enterprise_id, r.network_account_id)))
        .collect()
}

/// Where a transfer stands, as its object shows it.
pub struct TransferState {
    /// `None` while a closure's transfer waits for a settlement.
    pub settlement_id: Option<Uuid>,
    pub closure_id: Option<Uuid>,
    pub partner_enterprise_id: Uuid,
    /// A transfer status as the API writes it (`pending`, `pending_settlement_assignment`, …).
    pub status: &'static str,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A transfer status from its name on the wire (and in the read models).
pub fn transfer_status(name: &str) -> Option<contract::TransferStatus> {
    use contract::TransferStatus as S;
    Some(match name {
        "pending" => S::Pending,
        "completed" => S::Completed,
        "failed" => S::Failed,
        "disputed" => S::Disputed,
        "pending_settlement_assignment" => S::PendingSettlementAssignment,
        "rejected" => S::Rejected,
        _ => return None,
    })
}

/// The settlement transfer object: from the partner's custody (or a broker instruction's source
/// connection) to the destination connection. `None` when `owners` lacks a connection it names
/// (or the state names no transfer status).
pub fn transfer(
    t: &Transfer,
    state: &TransferState,
    owners: &Owners,
) -> Option<contract::Transfer> {
    let i = &t.instruction;
    let (destination_owner, destination_account) = *owners.get(&i.destination)?;
    let source = match i.source {
        Some(s) => Some(*owners.get(&s)?),
        None => None,
    };
    let status = transfer_status(state.status)?;
    let source_owner = source.map_or(state.partner_enterprise_id, |(owner, _)| owner);
    let tx_ids = match status {
        contract::TransferStatus::Completed => vec![t.transfer_id],
        _ => vec![],
    };
    Some(contract::Transfer {
        id: t.transfer_id,
        settlement_id: state.settlement_id,
        dispute_closure_id: state.closure_id,
        currency: i.currency.as_str().to_owned(),
        quantity: format_base_units(i.quantity),
        status,
        source_trading_account_id: wallet_id_of(source_owner),
        source_network_account_id: source.map(|(_, account)| account),
        destination_trading_account_id: wallet_id_of(destination_owner),
        destination_network_account_id: destination_account,
        tx_ids,
        created_at: time(state.created_at),
        updated_at: time(state.updated_at),
    })
}
