//! The dispute side of the row-at-a-time read models (the baseline): disputes and closures, the settlement's
//! `disputed` and finalization state, withheld (`disputed`) transfers, closure transfers waiting
//! for a settlement (`pending_settlement_assignment`) and their assignment.

use events::domain::dispute::{
    closure_amounts, Amounts, CarriedClosure, ClosedBy, ClosuresAssigned, ClosuresJoined,
    DisputeClosed, DisputeRaised, DisputeUpdated,
};
use events::domain::event::Timestamp;
use events::domain::settlement::{FundsReleased, SettlementFinalized};
use events::store::to_datetime;
use serde_json::{Map, Value};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{insert_transfers, network_delta, TransferRows};

/// `{currency: amount}` as base-unit strings.
pub fn amounts_json(amounts: &Amounts) -> Value {
    let map: Map<String, Value> = amounts
        .iter()
        .map(|(c, q)| (c.as_str().to_owned(), Value::from(q.to_string())))
        .collect();
    Value::Object(map)
}

pub async fn raised(tx: &mut PgConnection, e: &DisputeRaised) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO rm_disputes (id, settlement_id, partner_enterprise_id, connection_id, client_enterprise_id, user_id,
                                  expected_transfers, reason, created_at, updated_at)
         SELECT $1, $2, s.partner_enterprise_id, $3, $4, $5, $6, $7, $8, $8 FROM rm_settlements s WHERE s.id = $2
         ON CONFLICT DO NOTHING",
    )
    .bind(e.dispute_id)
    .bind(e.settlement_id)
    .bind(e.connection_id)
    .bind(e.client_enterprise_id)
    .bind(e.user_id)
    .bind(amounts_json(&e.expected_transfers))
    .bind(&e.reason)
    .bind(to_datetime(e.at))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE rm_settlements SET disputed = true, updated_at = $2 WHERE id = $1")
        .bind(e.settlement_id)
        .bind(to_datetime(e.at))
        .execute(&mut *tx)
        .await?;
    Ok(())
}

pub async fn updated(tx: &mut PgConnection, e: &DisputeUpdated) -> sqlx::Result<()> {
    let at = to_datetime(e.at);
    sqlx::query(
        "UPDATE rm_disputes SET retracted = $2, reason = $3, expected_transfers = $4,
                retracted_by = CASE WHEN $2 THEN $5 END, retracted_at = CASE WHEN $2 THEN $6 END,
                retracted_reason = $7, updated_at = $6
         WHERE id = $1",
    )
    .bind(e.dispute_id)
    .bind(e.retracted)
    .bind(&e.reason)
    .bind(amounts_json(&e.expected_transfers))
    .bind(e.user_id)
    .bind(at)
    .bind(&e.retracted_reason)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn closed(tx: &mut PgConnection, e: &DisputeClosed) -> sqlx::Result<()> {
    let at = to_datetime(e.at);
    let closed_by = match e.closed_by {
        ClosedBy::Client => "client",
        ClosedBy::Admin => "admin",
    };
    let adjusted = closure_amounts(e.connection_id, &e.adjusted_transfers);
    sqlx::query("INSERT INTO rm_dispute_closures VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING")
        .bind(e.closure_id)
        .bind(e.dispute_id)
        .bind(closed_by)
        .bind(e.user_id)
        .bind(&e.notes)
        .bind(amounts_json(&adjusted))
        .bind(at)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE rm_disputes SET dispute_closure_id = $2, updated_at = $3 WHERE id = $1")
        .bind(e.dispute_id)
        .bind(e.closure_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    let closure = CarriedClosure {
        dispute_id: e.dispute_id,
        disputed_settlement_id: e.settlement_id,
        closure_id: e.closure_id,
        connection_id: e.connection_id,
        transfers: e.adjusted_transfers.clone(),
    };
    closure_transfers(tx, &closure, e.settlement_id, e.at).await
}

/// The closure's transfers, waiting for a settlement.
async fn closure_transfers(
    tx: &mut PgConnection,
    closure: &CarriedClosure,
    disputed_settlement_id: Uuid,
    at: Timestamp,
) -> sqlx::Result<()> {
    let partner: Option<Uuid> =
        sqlx::query_scalar("SELECT partner_enterprise_id FROM rm_settlements WHERE id = $1")
            .bind(disputed_settlement_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(partner_enterprise_id) = partner else {
        return Ok(());
    };
    let rows = TransferRows {
        settlement_id: None,
        closure_id: Some(closure.closure_id),
        partner_enterprise_id,
        status: "pending_settlement_assignment",
    };
    insert_transfers(tx, rows, &closure.transfers, at).await
}

/// Closures' transfers become the new settlement's, `pending` like its own.
pub async fn joined(tx: &mut PgConnection, e: &ClosuresJoined) -> sqlx::Result<()> {
    let closure_ids: Vec<Uuid> = e.closures.iter().map(|c| c.closure_id).collect();
    sqlx::query(
        "UPDATE rm_settlement_transfers SET settlement_id = $1, status = 'pending', updated_at = $3,
                ordinal = 1000000000 + ordinal
         WHERE dispute_closure_id = ANY($2)",
    )
    .bind(e.settlement_id)
    .bind(&closure_ids)
    .bind(to_datetime(e.at))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn assigned(tx: &mut PgConnection, e: &ClosuresAssigned) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE rm_disputes SET settled_in_settlement_id = $2, updated_at = $3 WHERE id = ANY($1)",
    )
    .bind(&e.dispute_ids)
    .bind(e.settlement_id)
    .bind(to_datetime(e.at))
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn finalized(tx: &mut PgConnection, e: &SettlementFinalized) -> sqlx::Result<()> {
    let at = to_datetime(e.at);
    sqlx::query("UPDATE rm_settlements SET finalized = true, updated_at = $2 WHERE id = $1")
        .bind(e.settlement_id)
        .bind(at)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "UPDATE rm_settlement_transfers SET status = 'disputed', updated_at = $3
         WHERE settlement_id = $1 AND (destination_connection_id = ANY($2) OR source_connection_id = ANY($2))",
    )
    .bind(e.settlement_id)
    .bind(&e.withheld_connections)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn released(tx: &mut PgConnection, e: &FundsReleased) -> sqlx::Result<()> {
    network_delta(tx, e.connection_id, &e.currency, e.quantity, -e.quantity).await
}
