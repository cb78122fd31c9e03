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
    /// Positions checked without fault (all those walked when there is no fault).
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
    walk_chain(pool, 1, u64::MAX, GENESIS_HASH, |_, _| {}).await
}

/// One page of the log, `after < position <= until`, in position order.
async fn log_page(
    pool: &PgPool,
    after: u64,
    until: u64,
) -> Result<Vec<SequencedEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT l.position, l.hash, e.event_id, e.category, e.stream_id, e.version, e.type_id,
                e.schema_version, e.payload, e.metadata, e.recorded_at
         FROM event_log l JOIN events e ON e.event_id = l.event_id
         WHERE l.position > $1 AND l.position <= $2 ORDER BY l.position LIMIT $3",
    )
    .bind(after as i64)
    .bind(until.min(i64::MAX as u64) as i64)
    .bind(VERIFY_PAGE_ROWS)
    .fetch_all(pool)
    .await?;
    rows.iter().map(sequenced_event_from_row).collect()
}

/// Re-walks positions `from..=to` (or to the head), starting from `previous`, the hash at
/// `from - 1` (the genesis hash for `from = 1`). `on_link` sees each verified position with its
/// recomputed hash, in order (progress bars, checkpoint comparisons). The next page is fetched
/// while the current one is hashed, so the walk runs at the speed of the scan.
pub async fn walk_chain(
    pool: &PgPool,
    from: u64,
    to: u64,
    previous: ChainHash,
    mut on_link: impl FnMut(u64, &ChainHash),
) -> Result<ChainReport, sqlx::Error> {
    let start = from.max(1);
    let mut previous = previous;
    let mut checked = 0u64;
    let mut next = Some(tokio::spawn({
        let pool = pool.clone();
        async move { log_page(&pool, start - 1, to).await }
    }));
    while let Some(fetching) = next.take() {
        let rows = fetching
            .await
            .map_err(|e| sqlx::Error::Protocol(format!("page fetch task failed: {e}")))??;
        let Some(last) = rows.last().map(|r| r.position) else {
            break;
        };
        if rows.len() as i64 == VERIFY_PAGE_ROWS && last < to {
            let pool = pool.clone();
            next = Some(tokio::spawn(async move { log_page(&pool, last, to).await }));
        }
        for event in &rows {
            match check_link(&previous, start + checked, event) {
                Ok(hash) => {
                    previous = hash;
                    checked += 1;
                    on_link(event.position, &hash);
                }
                Err(fault) => {
                    if let Some(pending) = next.take() {
                        pending.abort();
                    }
                    return Ok(ChainReport {
                        checked,
                        head_hash: previous,
                        fault: Some(fault),
                    });
                }
            }
        }
    }
    Ok(ChainReport {
        checked,
        head_hash: previous,
        fault: None,
    })
}

/// The stored hash at `position` (the genesis hash at 0), as the walk of a range starts from.
pub async fn stored_hash(pool: &PgPool, position: u64) -> Result<Option<ChainHash>, sqlx::Error> {
    if position == 0 {
        return Ok(Some(GENESIS_HASH));
    }
    let hash: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT hash FROM event_log WHERE position = $1")
            .bind(position as i64)
            .fetch_optional(pool)
            .await?;
    Ok(hash.map(|h| super::append::hash32(&h)))
}
