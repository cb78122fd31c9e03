//! The read models applied row at a time, as the projector did before set-based apply: one SQL
//! statement (or two) per event, joining other read-model tables for what it needs. Kept as the
//! benchmark's baseline (`projector-bench`, "row_at_a_time") and as the oracle the set-based
//! fold is tested against: for the same events both must leave the same rows. Runs as one
//! unpartitioned consumer only (its joins read rows other partitions would own).

pub mod disputes;

use events::bus::consumer::Projection;
use events::codec::{decode_event, SequencedEvent};
use events::domain::client::wallet_id_of;
use events::domain::connection::{AllocationKind, AllocationRecord, ReleaseReason};
use events::domain::event::Timestamp;
use events::domain::money::CurrencyCode;
use events::domain::settlement::{failure_reason, SettlementApi, SettlementStaged, Transfer};
use events::domain::DomainEvent;
use events::store::to_datetime;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Default)]
pub struct RowAtATime;

impl Projection for RowAtATime {
    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[SequencedEvent],
    ) -> anyhow::Result<()> {
        for sequenced in events {
            let event = decode_event(&sequenced.stored.event)?;
            apply(tx, &event).await?;
        }
        Ok(())
    }
}

fn minutes(w: Option<events::domain::partner::WindowMinutes>) -> Option<String> {
    w.map(|w| w.minutes().to_string())
}

async fn apply(tx: &mut PgConnection, event: &DomainEvent) -> anyhow::Result<()> {
    match event {
        DomainEvent::EnterpriseCreated(e) => {
            sqlx::query(
                "INSERT INTO rm_enterprises VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
            )
            .bind(e.enterprise_id)
            .bind(&e.name)
            .bind(e.oes_license)
            .bind(to_datetime(e.at))
            .execute(&mut *tx)
            .await?;
        }
        DomainEvent::EnterpriseLicenseSet(e) => {
            sqlx::query(
                "UPDATE rm_enterprises SET oes_license = $2, updated_at = $3 WHERE id = $1",
            )
            .bind(e.enterprise_id)
            .bind(e.oes_license)
            .bind(to_datetime(e.at))
            .execute(&mut *tx)
            .await?;
        }
        DomainEvent::SigningKeyRegistered(e) => {
            sqlx::query("INSERT INTO rm_keys VALUES ($1, $2, $3, $4, NULL) ON CONFLICT DO NOTHING")
                .bind(e.key_id)
                .bind(e.enterprise_id)
                .bind(hex::encode(e.public_key))
                .bind(to_datetime(e.at))
                .execute(&mut *tx)
                .await?;
        }
        DomainEvent::SigningKeyRevoked(e) => {
            sqlx::query("UPDATE rm_keys SET revoked_at = $2 WHERE id = $1")
                .bind(e.key_id)
                .bind(to_datetime(e.at))
                .execute(&mut *tx)
                .await?;
        }
        DomainEvent::UserCreated(e) => {
            sqlx::query("INSERT INTO rm_users VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING")
                .bind(e.user_id)
                .bind(&e.name)
                .bind(e.auditor)
                .bind(&e.enterprise_ids)
                .bind(to_datetime(e.at))
                .execute(&mut *tx)
                .await?;
        }
        DomainEvent::PartnerRegistered(e) => {
            sqlx::query("INSERT INTO rm_partners VALUES ($1, $2, $3, $4, true, $5, $6, $7, $8, $8, $9) ON CONFLICT DO NOTHING")
                .bind(e.partner_id)
                .bind(e.enterprise_id)
                .bind(&e.name)
                .bind(e.broker)
                .bind(minutes(e.client_dispute_window))
                .bind(minutes(e.top_up_window))
                .bind(e.amount_format.as_str())
                .bind(to_datetime(e.at))
                .bind(e.connection_key_schema.unwrap_or_default().as_str())
                .execute(&mut *tx)
                .await?;
        }
        DomainEvent::PartnerUpdated(e) => {
            sqlx::query(
                "UPDATE rm_partners SET
                    active = coalesce($2, active),
                    client_dispute_window_minutes = CASE WHEN $3 THEN $4 ELSE client_dispute_window_minutes END,
                    top_up_window_minutes = CASE WHEN $5 THEN $6 ELSE top_up_window_minutes END,
                    updated_at = $7,
                    connection_key_schema = coalesce($8, connection_key_schema)
                 WHERE id = $1",
            )
            .bind(e.partner_id)
            .bind(e.active)
            .bind(e.client_dispute_window.is_some())
            .bind(minutes(e.client_dispute_window.flatten()))
            .bind(e.top_up_window.is_some())
            .bind(minutes(e.top_up_window.flatten()))
            .bind(to_datetime(e.at))
            .bind(e.connection_key_schema.map(|s| s.as_str()))
            .execute(&mut *tx)
            .await?;
        }
        DomainEvent::ClientRegistered(e) => {
            sqlx::query(
                "INSERT INTO rm_clients VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
            )
            .bind(e.client_id)
            .bind(e.enterprise_id)
            .bind(e.wallet_id)
            .bind(to_datetime(e.at))
            .execute(&mut *tx)
            .await?;
        }
        DomainEvent::DepositCredited(e) => {
            sqlx::query("INSERT INTO rm_deposits VALUES ($1, $2, $3, $4, $5::numeric, $6) ON CONFLICT DO NOTHING")
                .bind(e.deposit_id)
                .bind(e.enterprise_id)
                .bind(&e.external_id)
                .bind(e.currency.as_str())
                .bind(e.quantity.to_string())
                .bind(to_datetime(e.at))
                .execute(&mut *tx)
                .await?;
            custody_delta(tx, e.enterprise_id, &e.currency, e.quantity).await?;
        }
        DomainEvent::CustodyAllocated(e) => {
            custody_delta(tx, e.enterprise_id, &e.currency, -e.quantity).await?
        }
        DomainEvent::CustodyDeallocated(e) => {
            custody_delta(tx, e.enterprise_id, &e.currency, e.quantity).await?
        }
        DomainEvent::ConnectionCreated(e) => {
            sqlx::query("INSERT INTO rm_connections VALUES ($1, $2, $3, $4, $5, $6, $7, true, $8, $9, $10, $10) ON CONFLICT DO NOTHING")
                .bind(e.connection_id)
                .bind(&e.name)
                .bind(e.client_id)
                .bind(e.client_enterprise_id)
                .bind(e.partner_id)
                .bind(e.partner_enterprise_id)
                .bind(e.network_account_id)
                .bind(&e.nonce)
                .bind(&e.proof)
                .bind(to_datetime(e.at))
                .execute(&mut *tx)
                .await?;
        }
        DomainEvent::ConnectionUpdated(e) => {
            sqlx::query("UPDATE rm_connections SET name = coalesce($2, name), active = coalesce($3, active), updated_at = $4 WHERE id = $1")
                .bind(e.connection_id)
                .bind(&e.name)
                .bind(e.active)
                .bind(to_datetime(e.at))
                .execute(&mut *tx)
                .await?;
        }
        DomainEvent::AllocationCleared(e) => {
            insert_allocation(tx, &e.allocation).await?;
            let signed = match e.allocation.kind {
                AllocationKind::Allocation => e.allocation.quantity,
                AllocationKind::Deallocation => -e.allocation.quantity,
            };
            network_delta(
                tx,
                e.allocation.connection_id,
                &e.allocation.currency,
                signed,
                0,
            )
            .await?;
        }
        DomainEvent::AllocationReleased(e) => insert_allocation(tx, &e.allocation).await?,
        DomainEvent::FundsHeld(e) => {
            network_delta(tx, e.connection_id, &e.currency, -e.quantity, e.quantity).await?
        }
        DomainEvent::ConnectionSettled(e) => {
            network_delta(
                tx,
                e.connection_id,
                &e.currency,
                e.credited,
                -e.consumed_held,
            )
            .await?;
        }
        DomainEvent::CustodySettled(e) => {
            custody_delta(tx, e.enterprise_id, &e.currency, e.delta).await?
        }
        // Settlements' own read models come with the settlement routes.
        DomainEvent::SettlementStaged(e) => settlement_staged(tx, e).await?,
        DomainEvent::SettlementExecuted(e) => {
            settlement_status(
                tx,
                e.settlement_id,
                "completed",
                "completed",
                None,
                Some(e.at),
                e.at,
            )
            .await?
        }
        DomainEvent::SettlementFailed(e) => {
            let reason = failure_reason(&e.short_currencies);
            settlement_status(
                tx,
                e.settlement_id,
                "failed",
                "failed",
                Some(reason),
                None,
                e.at,
            )
            .await?;
        }
        DomainEvent::PartnerCutoffAdvanced(_) | DomainEvent::ClosureQueued(_) => {}
        // Webhook URLs are the notifications projection's.
        DomainEvent::WebhookConfigured(_) => {}
        // Access is decided on the user's stream, never on a read model (ADR 0007).
        DomainEvent::UserDisabled(_)
        | DomainEvent::UserEnabled(_)
        | DomainEvent::UserTokenRotated(_) => {}
        DomainEvent::DisputeRaised(e) => disputes::raised(tx, e).await?,
        DomainEvent::DisputeUpdated(e) => disputes::updated(tx, e).await?,
        DomainEvent::DisputeClosed(e) => disputes::closed(tx, e).await?,
        DomainEvent::ClosuresJoined(e) => disputes::joined(tx, e).await?,
        DomainEvent::ClosuresAssigned(e) => disputes::assigned(tx, e).await?,
        DomainEvent::SettlementFinalized(e) => disputes::finalized(tx, e).await?,
        DomainEvent::FundsReleased(e) => disputes::released(tx, e).await?,
    }
    Ok(())
}

async fn insert_allocation(tx: &mut PgConnection, a: &AllocationRecord) -> sqlx::Result<()> {
    let kind = match a.kind {
        AllocationKind::Allocation => "allocation",
        AllocationKind::Deallocation => "deallocation",
    };
    let (status, reason) = match a.released {
        None => ("cleared", None),
        Some(r) => ("released", Some(ReleaseReason::sentence(r))),
    };
    sqlx::query(
        "INSERT INTO rm_allocations
         SELECT $1, $2, c.id, c.client_enterprise_id, c.partner_enterprise_id, $3, $4::numeric, $5, $6, $7, $8, $9, $10, $10
         FROM rm_connections c WHERE c.id = $11
         ON CONFLICT DO NOTHING",
    )
    .bind(a.allocation_id)
    .bind(kind)
    .bind(a.currency.as_str())
    .bind(a.quantity.to_string())
    .bind(&a.client_external_id)
    .bind(a.initiated_by)
    .bind(&a.notes)
    .bind(status)
    .bind(reason)
    .bind(to_datetime(a.at))
    .bind(a.connection_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn custody_delta(
    tx: &mut PgConnection,
    enterprise_id: Uuid,
    currency: &CurrencyCode,
    available: i128,
) -> sqlx::Result<()> {
    balance_delta(
        tx,
        wallet_id_of(enterprise_id),
        currency,
        enterprise_id,
        None,
        available,
        0,
    )
    .await
}

/// Changes a connection's network balance; its owner is the connection's client enterprise.
pub async fn network_delta(
    tx: &mut PgConnection,
    connection_id: Uuid,
    currency: &CurrencyCode,
    available: i128,
    held: i128,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO rm_balances (account_id, currency, owner_enterprise_id, connection_id, available, held)
         SELECT c.network_account_id, $2, c.client_enterprise_id, c.id, $3::numeric, $4::numeric FROM rm_connections c WHERE c.id = $1
         ON CONFLICT (account_id, currency) DO UPDATE
           SET available = rm_balances.available + EXCLUDED.available, held = rm_balances.held + EXCLUDED.held",
    )
    .bind(connection_id)
    .bind(currency.as_str())
    .bind(available.to_string())
    .bind(held.to_string())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn balance_delta(
    tx: &mut PgConnection,
    account_id: Uuid,
    currency: &CurrencyCode,
    owner: Uuid,
    connection_id: Option<Uuid>,
    available: i128,
    held: i128,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO rm_balances VALUES ($1, $2, $3, $4, $5::numeric, $6::numeric)
         ON CONFLICT (account_id, currency) DO UPDATE
           SET available = rm_balances.available + EXCLUDED.available, held = rm_balances.held + EXCLUDED.held",
    )
    .bind(account_id)
    .bind(currency.as_str())
    .bind(owner)
    .bind(connection_id)
    .bind(available.to_string())
    .bind(held.to_string())
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn settlement_staged(tx: &mut PgConnection, e: &SettlementStaged) -> sqlx::Result<()> {
    let at = to_datetime(e.at);
    let dispute_ends = to_datetime(Timestamp(e.at.0.saturating_add(e.dispute_window_micros)));
    let top_up_ends = to_datetime(Timestamp(
        e.at.0
            .saturating_add(e.dispute_window_micros)
            .saturating_add(e.top_up_window_micros),
    ));
    let api = match e.api {
        SettlementApi::V1 => "v1",
        SettlementApi::V2 => "v2",
    };
    sqlx::query(
        "INSERT INTO rm_settlements (id, partner_id, partner_enterprise_id, external_id, api, status, notes, cutoff_at, initiated_by,
                                     dispute_window_ends_at, top_up_window_ends_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'pending', $6, $7, $8, $9, $10, $11, $11) ON CONFLICT DO NOTHING",
    )
    .bind(e.settlement_id)
    .bind(e.partner_id)
    .bind(e.partner_enterprise_id)
    .bind(&e.external_id)
    .bind(api)
    .bind(&e.notes)
    .bind(e.cutoff_at.map(to_datetime))
    .bind(e.initiated_by)
    .bind(dispute_ends)
    .bind(top_up_ends)
    .bind(at)
    .execute(&mut *tx)
    .await?;
    insert_transfers(
        tx,
        TransferRows {
            settlement_id: Some(e.settlement_id),
            closure_id: None,
            partner_enterprise_id: e.partner_enterprise_id,
            status: "pending",
        },
        &e.transfers,
        e.at,
    )
    .await?;
    // Notifications are their own projection (`notifications.rs`).
    Ok(())
}

/// Where a batch of transfer rows belongs.
pub struct TransferRows {
    /// `None` while a closure's transfers wait for a settlement.
    pub settlement_id: Option<Uuid>,
    pub closure_id: Option<Uuid>,
    pub partner_enterprise_id: Uuid,
    pub status: &'static str,
}

/// One insert for all `transfers`; accounts come from the connections' read model: the source
/// is the partner's custody wallet, or a broker instruction's source connection.
pub async fn insert_transfers(
    tx: &mut PgConnection,
    rows: TransferRows,
    transfers: &[Transfer],
    at: Timestamp,
) -> sqlx::Result<()> {
    let n = transfers.len();
    let (mut ids, mut sources, mut destinations, mut currencies, mut quantities, mut ordinals) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (ordinal, t) in transfers.iter().enumerate() {
        ids.push(t.transfer_id);
        sources.push(t.instruction.source);
        destinations.push(t.instruction.destination);
        currencies.push(t.instruction.currency.as_str());
        quantities.push(t.instruction.quantity.to_string());
        ordinals.push(ordinal as i32);
    }
    sqlx::query(
        "INSERT INTO rm_settlement_transfers
         SELECT u.id, $1, $2, coalesce(src.client_wallet, $3), u.source, src.network_account_id, src.client_enterprise_id,
                d.id, dc.wallet_id, d.network_account_id, d.client_enterprise_id, u.currency, u.quantity::numeric,
                $11, $4, $4, u.ordinal, $12
         FROM unnest($5::uuid[], $6::uuid[], $7::uuid[], $8::text[], $9::text[], $10::int[])
              AS u(id, source, destination, currency, quantity, ordinal)
         JOIN rm_connections d ON d.id = u.destination
         JOIN rm_clients dc ON dc.enterprise_id = d.client_enterprise_id
         LEFT JOIN LATERAL (
             SELECT s.network_account_id, s.client_enterprise_id, sc.wallet_id AS client_wallet
             FROM rm_connections s JOIN rm_clients sc ON sc.enterprise_id = s.client_enterprise_id
             WHERE s.id = u.source
         ) src ON true
         ON CONFLICT DO NOTHING",
    )
    .bind(rows.settlement_id)
    .bind(rows.partner_enterprise_id)
    .bind(wallet_id_of(rows.partner_enterprise_id))
    .bind(to_datetime(at))
    .bind(&ids)
    .bind(&sources as &[Option<Uuid>])
    .bind(&destinations)
    .bind(&currencies)
    .bind(&quantities)
    .bind(&ordinals)
    .bind(rows.status)
    .bind(rows.closure_id)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

async fn settlement_status(
    tx: &mut PgConnection,
    settlement_id: Uuid,
    status: &str,
    transfer_status: &str,
    reason: Option<String>,
    finalized_at: Option<Timestamp>,
    at: Timestamp,
) -> sqlx::Result<()> {
    sqlx::query("UPDATE rm_settlements SET status = $2, reason = $3, finalized_at = $4, updated_at = $5 WHERE id = $1")
        .bind(settlement_id)
        .bind(status)
        .bind(reason)
        .bind(finalized_at.map(to_datetime))
        .bind(to_datetime(at))
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE rm_settlement_transfers SET status = $2, updated_at = $3 WHERE settlement_id = $1 AND status <> 'disputed'")
        .bind(settlement_id)
        .bind(transfer_status)
        .bind(to_datetime(at))
        .execute(&mut *tx)
        .await?;
    Ok(())
}
