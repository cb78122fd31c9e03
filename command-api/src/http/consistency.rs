//! Read-your-writes: a write answers with a position token (its transaction id); a read sent
//! with `X-Min-Position: <token>` waits, bounded, until the read models reflect that write.
//! The token's transaction is finished, so once the sequencer has ordered its events their
//! last position is fixed; a newer write's token is therefore never satisfied before an older one.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use sqlx::PgPool;

use super::error::ApiError;

/// Prefix of position tokens (opaque to clients).
const TOKEN_PREFIX: &str = "tx-";
/// Polling interval while a read waits for its projection.
const WAIT_POLL: Duration = Duration::from_millis(5);

pub fn position_token(txid: i64) -> String {
    format!("{TOKEN_PREFIX}{txid}")
}

fn parse_token(token: &str) -> Option<i64> {
    token.strip_prefix(TOKEN_PREFIX)?.parse().ok()
}

/// Whether `consumer` has applied every event of transaction `txid`. A transaction's events may
/// be sequenced across two batches, so all of them must have a position before the last counts.
pub async fn reflected(pool: &PgPool, consumer: &str, txid: i64) -> Result<bool, sqlx::Error> {
    let (events, positioned, last, checkpoint): (i64, i64, Option<i64>, i64) = sqlx::query_as(
        "SELECT count(*), count(l.position), max(l.position),
                coalesce((SELECT position FROM consumer_checkpoints WHERE consumer = $2), 0)
         FROM events e LEFT JOIN event_log l ON l.event_id = e.event_id
         WHERE e.txid = $1",
    )
    .bind(txid)
    .bind(consumer)
    .fetch_one(pool)
    .await?;
    Ok(match last {
        _ if events == 0 => true,
        Some(last) if positioned == events => checkpoint >= last,
        _ => false,
    })
}

/// Waits (at most `max`) until the read models reflect the token in `X-Min-Position`, if any.
/// A malformed token is a 400; a wait that runs out answers with what is there.
pub async fn wait_for_min_position(
    headers: &HeaderMap,
    pool: &PgPool,
    consumer: &str,
    max: Duration,
) -> Result<(), ApiError> {
    let Some(value) = headers.get("x-min-position") else {
        return Ok(());
    };
    let txid = value.to_str().ok().and_then(parse_token).ok_or_else(|| {
        ApiError::bad_request(
            "invalid_min_position",
            "X-Min-Position is not a position token",
        )
    })?;
    let started = Instant::now();
    while !reflected(pool, consumer, txid)
        .await
        .map_err(ApiError::internal)?
    {
        if started.elapsed() >= max {
            tracing::warn!(txid, "read served before its projection caught up");
            return Ok(());
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
    Ok(())
}
