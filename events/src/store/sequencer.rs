//! The sequencer: a single fenced leader that gives committed events their dense global positions
//! and extends the hash chain.
//!
//! Why it cannot skip: it reads only events of transactions below the xid horizon
//! (`txid < pg_snapshot_xmin(pg_current_snapshot())`), that is of transactions that have finished,
//! in `(txid, tx_seq)` order. Every transaction still running, or not yet begun, has a txid at or
//! above the horizon, so no event can ever appear behind the cursor — no time-based gap skipping
//! and no global writer lock. Leadership is a session advisory lock plus an epoch that every
//! sequencer write checks, so a leader that lost its lock cannot write.

use std::time::Duration;

use sqlx::postgres::PgConnection;
use sqlx::{Connection, PgPool, Row};

use super::append::{hash32, stored_event_from_row};
use crate::codec::{chain_hash, ChainHash, SequencedEvent};

/// Advisory lock key of the sequencer leadership (per database).
const LEADER_LOCK_KEY: i64 = 0x5E77_1E5E_0001;

/// Most events sequenced in one step.
pub const SEQUENCE_BATCH_MAX: u32 = 5_000;

/// A held leadership: the connection that owns the advisory lock, and the fence epoch.
pub struct Leadership {
    lock: PgConnection,
    epoch: i64,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leadership")
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl Leadership {
    /// Tries once to become leader. `None` when another process leads.
    pub async fn try_acquire(database_url: &str, name: &str) -> Result<Option<Self>, sqlx::Error> {
        let mut lock = PgConnection::connect(database_url).await?;
        let won: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(LEADER_LOCK_KEY)
            .fetch_one(&mut lock)
            .await?;
        if !won {
            lock.close().await.ok();
            return Ok(None);
        }
        let epoch: i64 =
            sqlx::query_scalar("UPDATE sequencer_state SET epoch = epoch + 1, leader = $1, updated_at = now() WHERE id = 1 RETURNING epoch")
                .bind(name)
                .fetch_one(&mut lock)
                .await?;
        Ok(Some(Self { lock, epoch }))
    }

    /// Waits until this process is leader, polling every `every`.
    pub async fn acquire(
        database_url: &str,
        name: &str,
        every: Duration,
    ) -> Result<Self, sqlx::Error> {
        loop {
            if let Some(leadership) = Self::try_acquire(database_url, name).await? {
                return Ok(leadership);
            }
            tokio::time::sleep(every).await;
        }
    }

    pub fn epoch(&self) -> i64 {
        self.epoch
    }

    /// Gives the lead up at once (graceful shutdown), so a standby need not wait for the session
    /// to time out.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(LEADER_LOCK_KEY)
            .execute(&mut self.lock)
            .await;
        let _ = self.lock.close().await;
    }

    /// Whether the lock's session is still alive (the lock dies with it).
    pub async fn still_held(&mut self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&mut self.lock)
            .await
            .is_ok()
    }
}

/// What one step did.
#[derive(Debug)]
pub enum StepOutcome {
    /// These events got positions, in order; the batch is committed.
    Sequenced(Vec<SequencedEvent>),
    /// Nothing finished since the last step.
    Idle,
    /// Another leader took over (the epoch moved): stop sequencing.
    Fenced,
}

/// The leader's cursor over the events table and the head of the chain.
#[derive(Debug)]
pub struct Sequencer {
    pool: PgPool,
    epoch: i64,
    last_position: u64,
    last_hash: ChainHash,
    last_txid: i64,
    last_tx_seq: i32,
    batch_max: u32,
}

impl Sequencer {
    /// Loads the persisted cursor for the holder of `leadership`.
    pub async fn resume(pool: PgPool, leadership: &Leadership) -> Result<Self, sqlx::Error> {
        let row = sqlx::query("SELECT last_position, last_hash, last_txid, last_tx_seq FROM sequencer_state WHERE id = 1")
            .fetch_one(&pool)
            .await?;
        let last_hash = hash32(row.try_get("last_hash")?);
        Ok(Self {
            pool,
            epoch: leadership.epoch,
            last_position: row.try_get::<i64, _>("last_position")? as u64,
            last_hash,
            last_txid: row.try_get("last_txid")?,
            last_tx_seq: row.try_get("last_tx_seq")?,
            batch_max: SEQUENCE_BATCH_MAX,
        })
    }

    pub fn with_batch_max(mut self, batch_max: u32) -> Self {
        self.batch_max = batch_max.max(1);
        self
    }

    pub fn last_position(&self) -> u64 {
        self.last_position
    }

    /// Sequences the next batch of finished events: one read, then one fenced write.
    pub async fn step(&mut self) -> Result<StepOutcome, sqlx::Error> {
        let rows = sqlx::query(
            "SELECT e.event_id, e.txid, e.tx_seq, e.category, e.stream_id, e.version, e.type_id,
                    e.schema_version, e.payload, e.metadata, e.recorded_at
             FROM events e
             WHERE (e.txid, e.tx_seq) > ($1, $2)
               AND e.txid < (SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint)
             ORDER BY e.txid, e.tx_seq
             LIMIT $3",
        )
        .bind(self.last_txid)
        .bind(self.last_tx_seq)
        .bind(i64::from(self.batch_max))
        .fetch_all(&self.pool)
        .await?;
        let Some(last_row) = rows.last() else {
            return Ok(StepOutcome::Idle);
        };
        let (last_txid, last_tx_seq): (i64, i32) =
            (last_row.try_get("txid")?, last_row.try_get("tx_seq")?);

        let mut batch = Vec::with_capacity(rows.len());
        let mut hash = self.last_hash;
        for (offset, row) in rows.iter().enumerate() {
            let stored = stored_event_from_row(row)?;
            let position = self.last_position + 1 + offset as u64;
            hash = chain_hash(&hash, position, &stored);
            batch.push(SequencedEvent {
                position,
                hash,
                stored,
            });
        }
        let positions: Vec<i64> = batch.iter().map(|e| e.position as i64).collect();
        let ids: Vec<uuid::Uuid> = batch.iter().map(|e| e.stored.event_id).collect();
        let hashes: Vec<&[u8]> = batch.iter().map(|e| e.hash.as_slice()).collect();
        let head = batch.last().map_or(self.last_position, |e| e.position);

        // One statement: advance the fenced cursor, and only if that succeeded, record positions.
        let written = sqlx::query(
            "WITH fence AS (
                 UPDATE sequencer_state
                 SET last_position = $4, last_hash = $5, last_txid = $6, last_tx_seq = $7, updated_at = now()
                 WHERE id = 1 AND epoch = $8 AND last_position = $9
                 RETURNING 1
             )
             INSERT INTO event_log (position, event_id, hash)
             SELECT u.position, u.event_id, u.hash
             FROM unnest($1::bigint[], $2::uuid[], $3::bytea[]) AS u(position, event_id, hash)
             WHERE EXISTS (SELECT 1 FROM fence)",
        )
        .bind(&positions)
        .bind(&ids)
        .bind(&hashes)
        .bind(head as i64)
        .bind(hash.as_slice())
        .bind(last_txid)
        .bind(last_tx_seq)
        .bind(self.epoch)
        .bind(self.last_position as i64)
        .execute(&self.pool)
        .await?;
        if written.rows_affected() != batch.len() as u64 {
            return Ok(StepOutcome::Fenced);
        }
        self.last_position = head;
        self.last_hash = hash;
        self.last_txid = last_txid;
        self.last_tx_seq = last_tx_seq;
        Ok(StepOutcome::Sequenced(batch))
    }
}
