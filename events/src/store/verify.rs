//! Chain verification: re-walks the global order from position 1, recomputing every hash from the
//! stored bytes, and reports the first position that does not match (or is missing).

use sqlx::PgPool;

use super::append::sequenced_event_from_row;
use crate::codec::{chain_hash, ChainHash, SequencedEvent, GENESIS_HASH};

/// Rows read per query while walking.
const VERIFY_PAGE_ROWS: i64 = 10_000;

/// What is wrong at the first bad position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainFault {
    /// The recomputed hash differs from the stored one: the event or its hash was changed.
    HashMismatch { position: u64 },
    /// A position is missing or out of order.
    Gap { expected: u64, found: u64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainReport {
    /// Positions checked (all of them when there is no fault).
    pub checked: u64,
    pub head_hash: ChainHash,
    pub fault: Option<ChainFault>,
}

/// Checks one step of the walk; pure, so tests can drive it on any sequence.
pub fn check_link(
    previous: &ChainHash,
    expected_position: u64,
    event: &SequencedEvent,
) -> Result<ChainHash, ChainFault> {
    if event.position != expected_position {
        return Err(ChainFault::Gap {
            expected: expected_position,
            found: event.position,
        });
    }
    let hash = chain_hash(previous, event.position, &event.stored);
    if hash != event.hash {
        return Err(ChainFault::HashMismatch {
            position: event.position,
        });
    }
    Ok(hash)
}

/// Walks the whole chain stored in `pool`.
pub async fn verify_chain(pool: &PgPool) -> Result<ChainReport, sqlx::Error> {
    let mut previous = GENESIS_HASH;
    let mut checked = 0u64;
    loop {
        let rows = sqlx::query(
            "SELECT l.position, l.hash, e.event_id, e.category, e.stream_id, e.version, e.type_id,
                    e.schema_version, e.payload, e.metadata, e.recorded_at
             FROM event_log l JOIN events e ON e.event_id = l.event_id
             WHERE l.position > $1 ORDER BY l.position LIMIT $2",
        )
        .bind(checked as i64)
        .bind(VERIFY_PAGE_ROWS)
        .fetch_all(pool)
        .await?;
        if rows.is_empty() {
            return Ok(ChainReport {
                checked,
                head_hash: previous,
                fault: None,
            });
        }
        for row in &rows {
            let event = sequenced_event_from_row(row)?;
            match check_link(&previous, checked + 1, &event) {
                Ok(hash) => {
                    previous = hash;
                    checked += 1;
                }
                Err(fault) => {
                    return Ok(ChainReport {
                        checked,
                        head_hash: previous,
                        fault: Some(fault),
                    })
                }
            }
        }
    }
}
