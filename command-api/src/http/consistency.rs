//! Read-your-writes: a write answers with a position token (its transaction id); a read sent
//! with `X-Min-Position: <token>` waits, bounded, until every partition of the read models'
//! consumer group reflects that write.
//! The token's transaction is finished, so once the sequencer has ordered its events their
//! last position is fixed; a newer write's token is therefore never satisfied before an older one.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use sqlx::PgPool;

use super::error::{ApiError, ErrorCode};

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

/// Whether the consumer group `group` has applied every event of transaction `txid`: every
/// partition of the group has (ADR 0009). All of them, not only those the write's events fall
/// in: a newer write's token must be satisfied only once every older write is visible too, and
/// an older write may sit in another partition. The partitions advance together (each reads the
/// whole stream), so waiting for all costs little. A group with no partitions yet has applied
/// nothing. A transaction's events may be sequenced across two batches, so all of them must have
/// a position before the last counts.
pub async fn reflected(pool: &PgPool, group: &str, txid: i64) -> Result<bool, sqlx::Error> {
    let (events, positioned, last, checkpoint): (i64, i64, Option<i64>, Option<i64>) =
        sqlx::query_as(
            "SELECT count(*), count(l.position), max(l.position),
                    (SELECT min(coalesce(c.position, 0)) FROM consumer_partitions p
                     LEFT JOIN consumer_checkpoints c ON c.consumer = p.consumer
                     WHERE p.consumer_group = $2)
             FROM events e LEFT JOIN event_log l ON l.event_id = e.event_id
             WHERE e.txid = $1",
        )
        .bind(txid)
        .bind(group)
        .fetch_one(pool)
        .await?;
    Ok(match last {
        _ if events == 0 => true,
        Some(last) if positioned == events => checkpoint.unwrap_or(0) >= last,
        _ => false,
    })
}

/// Seconds a client is told to wait (`Retry-After`) before reading again when its write is not
/// reflected yet.
const NOT_CAUGHT_UP_RETRY_AFTER_SECONDS: u32 = 1;

/// Waits (at most `max`) until the read models reflect the token in `X-Min-Position`, if any.
/// A malformed token is a 400. A wait that runs out is a 503 `read_not_caught_up` with
/// `Retry-After`, never a stale answer: the client asked to see its write, and a read model that
/// has not applied it (a stopped projector, a parked event) must not pretend it has.
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
        ApiError::new(
            ErrorCode::InvalidMinPosition,
            "X-Min-Position is not a position token",
        )
    })?;
    let started = Instant::now();
    while !reflected(pool, consumer, txid)
        .await
        .map_err(ApiError::internal)?
    {
        if started.elapsed() >= max {
            tracing::warn!(
                txid,
                consumer,
                "read refused: its projection has not caught up"
            );
            return Err(not_caught_up(consumer));
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
    Ok(())
}

fn not_caught_up(consumer: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ReadNotCaughtUp,
        format!("the read models ({consumer}) do not reflect the write in X-Min-Position yet; retry later"),
    )
    .with_header(
        axum::http::header::RETRY_AFTER,
        axum::http::HeaderValue::from(NOT_CAUGHT_UP_RETRY_AFTER_SECONDS),
    )
}
