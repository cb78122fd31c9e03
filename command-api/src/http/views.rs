//! SPEC §5 objects rendered from domain records (for command replies). Query routes render the
//! same objects from read models in SQL (`reads.rs`); both use `time` for timestamps, so the two
//! agree to the microsecond.

use chrono::SecondsFormat;
use events::domain::client::ClientRecord;
use events::domain::connection::{AllocationKind, AllocationRecord, ConnectionRecord};
use events::domain::enterprise::EnterpriseRecord;
use events::domain::event::Timestamp;
use events::domain::money::format_base_units;
use events::domain::partner::{PartnerRecord, WindowMinutes};
use events::domain::user::UserRecord;
use events::store::to_datetime;
use serde_json::{json, Value};
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
    json!({
        "id": a.allocation_id,
        "type": match a.kind { AllocationKind::Allocation => "allocation", AllocationKind::Deallocation => "deallocation" },
        "amount": {"currency": a.currency.as_str(), "quantity": format_base_units(a.quantity)},
        "connectionId": a.connection_id,
        "clientExternalId": a.client_external_id,
        "initiatedBy": a.initiated_by,
        "notes": a.notes,
        "status": if a.released.is_some() { "released" } else { "cleared" },
        "reason": a.released.map(|r| r.sentence()),
        "retriable": a.released.is_some(),
        "createdAt": time(a.at),
        "updatedAt": time(a.at),
    })
}
