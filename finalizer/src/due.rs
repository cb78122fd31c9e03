//! The finalizer's due-work projection: from events, one row per settlement with a step still
//! ahead of it (finalize at the end of the dispute window, execute at the end of the top-up
//! window, retry a failed execution later), written with the consumer's checkpoint.

use std::time::Duration;

use events::bus::consumer::Projection;
use events::codec::{decode_event, SequencedEvent};
use events::domain::event::Timestamp;
use events::domain::settlement::SettlementApi;
use events::domain::DomainEvent;
use events::store::to_datetime;
use sqlx::PgConnection;

/// Durable consumer (and checkpoint) name of the due-work projection.
pub const DUE_WORK_CONSUMER: &str = "finalizer-due-work";

#[derive(Debug, Clone)]
pub struct DueWork {
    /// How long after a failed execution it is tried again.
    pub retry_after: Duration,
}

fn plus(t: Timestamp, micros: i64) -> Timestamp {
    Timestamp(t.0.saturating_add(micros))
}

impl Projection for DueWork {
    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[SequencedEvent],
    ) -> anyhow::Result<()> {
        let retry_micros = i64::try_from(self.retry_after.as_micros()).unwrap_or(i64::MAX);
        for sequenced in events {
            // Only the lifecycle's events matter; others are not even decoded.
            let name = events::domain::DomainEvent::TYPES
                .iter()
                .find(|t| t.id == sequenced.stored.event.type_id)
                .map(|t| t.name);
            if !matches!(
                name,
                Some(
                    "SettlementStaged"
                        | "SettlementFinalized"
                        | "SettlementFailed"
                        | "SettlementExecuted"
                )
            ) {
                continue;
            }
            match decode_event(&sequenced.stored.event)? {
                DomainEvent::SettlementStaged(e) if e.api == SettlementApi::V2 => {
                    let finalize_at = plus(e.at, e.dispute_window_micros);
                    let execute_at = plus(finalize_at, e.top_up_window_micros);
                    sqlx::query(
                        "INSERT INTO finalizer_due (settlement_id, partner_enterprise_id, step, due_at, execute_at)
                         VALUES ($1, $4, 'finalize', $2, $3) ON CONFLICT DO NOTHING",
                    )
                    .bind(e.settlement_id)
                    .bind(to_datetime(finalize_at))
                    .bind(to_datetime(execute_at))
                    .bind(e.partner_enterprise_id)
                    .execute(&mut *tx)
                    .await?;
                }
                DomainEvent::SettlementFinalized(e) => {
                    sqlx::query(
                        "UPDATE finalizer_due SET step = 'execute', due_at = execute_at, leased_until = NULL
                         WHERE settlement_id = $1",
                    )
                    .bind(e.settlement_id)
                    .execute(&mut *tx)
                    .await?;
                }
                DomainEvent::SettlementFailed(e) => {
                    let again = to_datetime(plus(e.at, retry_micros));
                    sqlx::query(
                        "INSERT INTO finalizer_due (settlement_id, step, due_at, execute_at)
                         VALUES ($1, 'execute', $2, $3)
                         ON CONFLICT (settlement_id) DO UPDATE
                           SET step = 'execute', due_at = EXCLUDED.due_at, leased_until = NULL",
                    )
                    .bind(e.settlement_id)
                    .bind(again)
                    .bind(to_datetime(e.at))
                    .execute(&mut *tx)
                    .await?;
                }
                DomainEvent::SettlementExecuted(e) => {
                    sqlx::query("DELETE FROM finalizer_due WHERE settlement_id = $1")
                        .bind(e.settlement_id)
                        .execute(&mut *tx)
                        .await?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}
