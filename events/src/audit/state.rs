//! State as it stood at a position, computed from the log — the streams' events up to that
//! position folded by the domain's own `evolve` — never from today's read models.

use std::collections::BTreeMap;

use sqlx::PgPool;
use uuid::Uuid;

use crate::codec::decode_event;
use crate::domain::audit::AccountsAt;
use crate::domain::connection::Connection;
use crate::domain::money::Balance;
use crate::domain::settlement::Settlement;
use crate::domain::stream::of;
use crate::domain::StreamName;

use super::log::{self, ConnectionOf};
use super::AuditError;

/// An enterprise's accounts at a position: its custody, and each connection it owns as a
/// client or serves as a partner, with the balances folded from the log.
#[derive(Clone, Debug)]
pub struct BalancesAt {
    pub position: u64,
    pub custody: BTreeMap<String, Balance>,
    pub connections: Vec<(ConnectionOf, BTreeMap<String, Balance>)>,
    /// Events folded (the custody stream's and the connections').
    pub events_folded: usize,
}

fn balances_of(connection: &Connection) -> BTreeMap<String, Balance> {
    connection
        .record()
        .map(|r| {
            r.balances
                .iter()
                .map(|(c, b)| (c.as_str().to_owned(), *b))
                .collect()
        })
        .unwrap_or_default()
}

/// `enterprise_id`'s accounts as the log stood at `position`.
pub async fn balances_at(
    pool: &PgPool,
    enterprise_id: Uuid,
    position: u64,
) -> Result<BalancesAt, AuditError> {
    let connections = log::connections_of(pool, enterprise_id, position).await?;
    let streams: Vec<StreamName> = std::iter::once(of::custody(enterprise_id))
        .chain(connections.iter().map(|c| of::connection(c.connection_id)))
        .collect();
    let events = log::streams_until(pool, &streams, position).await?;
    let mut accounts = AccountsAt::default();
    for event in &events {
        accounts.apply(&event.stored.stream, &decode_event(&event.stored.event)?);
    }
    let custody = accounts
        .custody
        .balances
        .iter()
        .map(|(c, b)| (c.as_str().to_owned(), *b))
        .collect();
    let connections = connections
        .into_iter()
        .map(|mut c| {
            let folded = accounts.connections.get(&c.connection_id);
            // The name as it stood then (a connection can be renamed).
            if let Some(r) = folded.and_then(Connection::record) {
                c.name = r.name.clone();
            }
            (c, folded.map(balances_of).unwrap_or_default())
        })
        .collect();
    Ok(BalancesAt {
        position,
        custody,
        connections,
        events_folded: events.len(),
    })
}

/// The settlement as the log stood at `position` (`Absent` before it was staged).
pub async fn settlement_at(
    pool: &PgPool,
    settlement_id: Uuid,
    position: u64,
) -> Result<Settlement, AuditError> {
    let events = log::streams_until(pool, &[of::settlement(settlement_id)], position).await?;
    let mut settlement = Settlement::Absent;
    for event in &events {
        settlement = settlement.evolve(&decode_event(&event.stored.event)?);
    }
    Ok(settlement)
}
