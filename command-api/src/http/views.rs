//! Objects of docs/api/guide.md from domain records (for command replies). Query routes render the
//! same objects from read models in SQL (`reads.rs`); both use `time` for timestamps, so the two
//! agree to the microsecond, and both leave out an optional field that has no value.

use std::collections::BTreeMap;

use chrono::SecondsFormat;
use events::domain::client::{wallet_id_of, ClientRecord};
use events::domain::connection::{AllocationKind, AllocationRecord, Connection, ConnectionRecord};
use events::domain::dispute::{closure_amounts, Amounts, ClosedBy, DisputeRecord};
use events::domain::enterprise::EnterpriseRecord;
use events::domain::event::Timestamp;
use events::domain::money::format_base_units;
use events::domain::partner::{PartnerRecord, WindowMinutes};
use events::domain::settlement::{failure_reason, SettlementRecord, Status, Transfer};
use events::domain::user::UserRecord;
use events::store::to_datetime;
use serde_json::{json, Map, Value};
use uuid::Uuid;

/// RFC 3339 UTC with microseconds, e.g. `2026-11-22T04:38:30.123456Z`.
pub fn time(t: Timestamp) -> String {
    to_datetime(t).to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn window(w: Option<WindowMinutes>) -> Value {
    w.and_then(|w| serde_json::Number::from_f64(w.minutes().try_into().unwrap_or(0.0)))
        .map_or(Value::Null, Value::Number)
}

pub fn enterprise(r: &EnterpriseRecord) -> Value {
    json!({"id": r.id, "name": r.name, "oesLicense": r.oes_license, "createdAt": time(r.created_at), "updatedAt": time(r.updated_at)})
}

pub fn key(enterprise_id: Uuid, key_id: Uuid, r: &EnterpriseRecord) -> Value {
    let k = r.keys.get(&key_id);
    json!({
        "id": key_id,
        "enterpriseId": enterprise_id,
        "publicKey": k.map(|k| hex::encode(k.public_key)),
        "createdAt": k.map(|k| time(k.created_at)),
        "revokedAt": k.and_then(|k| k.revoked_at).map(time),
    })
}

pub fn user(r: &UserRecord) -> Value {
    json!({"id": r.id, "name": r.name, "enterpriseIds": r.enterprise_ids, "auditor": r.auditor, "disabled": r.disabled, "createdAt": time(r.created_at), "updatedAt": time(r.updated_at)})
}

pub fn partner(r: &PartnerRecord) -> Value {
    json!({
        "id": r.id,
        "enterpriseId": r.enterprise_id,
        "name": r.name,
        "broker": r.broker,
        "active": r.active,
        "clientDisputeWindowMinutes": window(r.client_dispute_window),
        "topUpWindowMinutes": window(r.top_up_window),
        "amountFormat": r.amount_format.as_str(),
        "connectionKeySchema": r.connection_key_schema.as_str(),
        "createdAt": time(r.created_at),
        "updatedAt": time(r.updated_at),
    })
}

pub fn client(r: &ClientRecord) -> Value {
    json!({"id": r.id, "enterpriseId": r.enterprise_id, "walletId": r.wallet_id, "createdAt": time(r.created_at), "updatedAt": time(r.created_at)})
}

pub fn connection(r: &ConnectionRecord, nonce: &str, proof: &str) -> Value {
    json!({
        "id": r.id,
        "name": r.name,
        "clientId": r.client_id,
        "partnerId": r.partner_id,
        "networkAccountId": r.network_account_id,
        "active": r.active,
        "initialized": true,
        "partnersConnectionId": null,
        "partnersClientId": null,
        "nonce": nonce,
        "proof": proof,
        "createdAt": time(r.created_at),
        "updatedAt": time(r.updated_at),
    })
}

pub fn allocation(a: &AllocationRecord) -> Value {
    let mut v = json!({
        "id": a.allocation_id,
        "type": match a.kind { AllocationKind::Allocation => "allocation", AllocationKind::Deallocation => "deallocation" },
        "amount": {"currency": a.currency.as_str(), "quantity": format_base_units(a.quantity)},
        "connectionId": a.connection_id,
        "clientExternalId": a.client_external_id,
        "initiatedBy": a.initiated_by,
        "status": if a.released.is_some() { "released" } else { "cleared" },
        "reason": a.released.map(|r| r.sentence()),
        "retriable": a.released.is_some(),
        "createdAt": time(a.at),
        "updatedAt": time(a.at),
    });
    if let Some(notes) = &a.notes {
        v["notes"] = notes.clone().into();
    }
    v
}

/// The settlement object at `now` (its `phase` depends on the time).
pub fn settlement(r: &SettlementRecord, now: Timestamp) -> Value {
    let s = &r.staged;
    let mut v = json!({
        "id": s.settlement_id,
        "partnerId": s.partner_id,
        "externalId": s.external_id,
        "status": r.status.kind().as_str(),
        "settlementType": "offchain",
        "reconciled": false,
        "initiatedBy": s.initiated_by,
        "createdAt": time(s.at),
        "updatedAt": time(r.updated_at),
        "disputed": !r.disputes.is_empty(),
        "lossSLAAlertSent": false,
        "gainSLAAlertSent": false,
        "phase": r.phase(now).as_str(),
        "disputeWindowEndsAt": time(r.dispute_window_ends()),
        "topUpWindowEndsAt": time(r.top_up_window_ends()),
    });
    if let Some(notes) = &s.notes {
        v["notes"] = notes.clone().into();
    }
    if let Some(cutoff) = s.cutoff_at {
        v["cutoffAt"] = time(cutoff).into();
    }
    match &r.status {
        Status::Failed { short_currencies } => {
            v["reason"] = failure_reason(short_currencies).into();
        }
        Status::Completed { finalized_at } => v["finalizedAt"] = time(*finalized_at).into(),
        Status::Pending => {}
    }
    v
}

/// The dispute object, from the settlement's own state, without its closure.
pub fn dispute(s: &SettlementRecord, d: &DisputeRecord, settled_in: Option<Uuid>) -> Value {
    let mut v = json!({
        "id": d.dispute_id,
        "connectionId": d.connection_id,
        "disputedSettlementId": s.staged.settlement_id,
        "userId": d.user_id,
        "expectedTransfers": amounts(&d.expected_transfers),
        "retracted": d.retraction.is_some(),
        "createdAt": time(d.created_at),
        "updatedAt": time(d.updated_at),
    });
    if let Some(reason) = &d.reason {
        v["reason"] = reason.clone().into();
    }
    if let Some(r) = &d.retraction {
        v["retractedBy"] = r.by.to_string().into();
        v["retractedAt"] = time(r.at).into();
        if let Some(reason) = &r.reason {
            v["retractedReason"] = reason.clone().into();
        }
    }
    if let Some(c) = &d.closure {
        v["disputeClosureId"] = c.closure_id.to_string().into();
    }
    if let Some(settled_in) = settled_in {
        v["settledInSettlementId"] = settled_in.to_string().into();
    }
    v
}

/// The dispute closure of `d` (`None` while it is not closed), with its adjusted settlement
/// transfers as `transfer` renders them.
pub fn closure(d: &DisputeRecord, adjusted_settlement_transfers: Vec<Value>) -> Option<Value> {
    let c = d.closure.as_ref()?;
    let adjusted = closure_amounts(d.connection_id, &c.adjusted_transfers);
    Some(json!({
        "id": c.closure_id,
        "closedBy": match c.closed_by { ClosedBy::Client => "client", ClosedBy::Admin => "admin" },
        // Not an optional field: an operator's closure has no user, so it is null.
        "userId": c.user_id,
        "notes": c.notes,
        "status": "approved",
        "adjustedTransfers": amounts(&adjusted),
        "adjustedSettlementTransfers": adjusted_settlement_transfers,
        "createdAt": time(c.at),
    }))
}

/// `{currency: "amount"}` in base units.
pub fn amounts(amounts: &Amounts) -> Value {
    let map: Map<String, Value> = amounts
        .iter()
        .map(|(c, q)| (c.as_str().to_owned(), Value::from(format_base_units(*q))))
        .collect();
    Value::Object(map)
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
    pub status: &'static str,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// The settlement transfer object: from the partner's custody (or a broker instruction's source
/// connection) to the destination connection. `None` when `owners` lacks a connection it names.
pub fn transfer(t: &Transfer, state: &TransferState, owners: &Owners) -> Option<Value> {
    let i = &t.instruction;
    let (destination_owner, destination_account) = *owners.get(&i.destination)?;
    let source = match i.source {
        Some(s) => Some(*owners.get(&s)?),
        None => None,
    };
    let source_owner = source.map_or(state.partner_enterprise_id, |(owner, _)| owner);
    let tx_ids = if state.status == "completed" {
        json!([t.transfer_id])
    } else {
        json!([])
    };
    let mut v = json!({
        "id": t.transfer_id,
        "currency": i.currency.as_str(),
        "quantity": format_base_units(i.quantity),
        "status": state.status,
        "sourceTradingAccountId": wallet_id_of(source_owner),
        "destinationTradingAccountId": wallet_id_of(destination_owner),
        "destinationNetworkAccountId": destination_account,
        "txIds": tx_ids,
        "createdAt": time(state.created_at),
        "updatedAt": time(state.updated_at),
    });
    if let Some(settlement_id) = state.settlement_id {
        v["settlementId"] = settlement_id.to_string().into();
    }
    if let Some(closure_id) = state.closure_id {
        v["disputeClosureId"] = closure_id.to_string().into();
    }
    if let Some((_, account)) = source {
        v["sourceNetworkAccountId"] = account.to_string().into();
    }
    Some(v)
}
