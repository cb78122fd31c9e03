//! The chain, for auditors: the periodic full verification (one process per interval, through a
//! lease row), its latest result in `/metrics`, range re-walks, signed checkpoints and the proof
//! that today's log still extends a checkpoint kept earlier.

use std::time::Duration;

use schemas::signing::checkpoint::{verify_note, AuditSigner, Checkpoint};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::codec::{ChainHash, GENESIS_HASH};
use crate::domain::event::Timestamp;
use crate::store::{from_datetime, stored_hash, walk_chain, ChainFault, ChainReport};

use super::log;
use super::render::time;
use super::AuditError;

/// How often a full verification is run by default: every 10 minutes.
pub const VERIFY_INTERVAL_MS_DEFAULT: u64 = 600_000;
/// How often a process refreshes its `/metrics` from the latest verification, at most.
const METRICS_REFRESH_MS_MAX: u64 = 5_000;

/// One full verification, as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verification {
    pub started_at: Timestamp,
    pub finished_at: Timestamp,
    pub verifier: String,
    pub checked: u64,
    pub head_position: u64,
    pub head_hash: ChainHash,
    pub fault: Option<ChainFault>,
}

/// A fault as JSON: `{"kind": "hashMismatch"|"gap", "position": n}`.
pub fn fault_json(fault: &Option<ChainFault>) -> serde_json::Value {
    match fault {
        None => serde_json::Value::Null,
        Some(ChainFault::HashMismatch { position }) => {
            serde_json::json!({"kind": "hashMismatch", "position": position})
        }
        Some(ChainFault::Gap { expected, found }) => {
            serde_json::json!({"kind": "gap", "position": expected, "found": found})
        }
    }
}

impl Verification {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "startedAt": time(self.started_at),
            "finishedAt": time(self.finished_at),
            "verifier": self.verifier,
            "checkedPositions": self.checked,
            "headPosition": self.head_position,
            "verified": self.fault.is_none(),
            "firstFault": fault_json(&self.fault),
        })
    }
}

fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_micros())
}

/// Walks the whole chain once and records the result.
pub async fn verify_and_record(pool: &PgPool, verifier: &str) -> Result<Verification, AuditError> {
    let started_at = now();
    let head = log::head(pool).await?.map_or(0, |h| h.position);
    let report = walk_chain(pool, 1, head, GENESIS_HASH, |_, _| {}).await?;
    let verification = Verification {
        started_at,
        finished_at: now(),
        verifier: verifier.to_owned(),
        checked: report.checked,
        head_position: head,
        head_hash: report.head_hash,
        fault: report.fault,
    };
    let (kind, position) = match &verification.fault {
        None => (None, None),
        Some(ChainFault::HashMismatch { position }) => (Some("hashMismatch"), Some(*position)),
        Some(ChainFault::Gap { expected, .. }) => (Some("gap"), Some(*expected)),
    };
    sqlx::query(
        "INSERT INTO chain_verifications (started_at, finished_at, verifier, checked,
             head_position, head_hash, fault_kind, fault_position)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(crate::store::to_datetime(verification.started_at))
    .bind(crate::store::to_datetime(verification.finished_at))
    .bind(verifier)
    .bind(verification.checked as i64)
    .bind(head as i64)
    .bind(verification.head_hash.as_slice())
    .bind(kind)
    .bind(position.map(|p| p as i64))
    .execute(pool)
    .await?;
    Ok(verification)
}

/// The latest recorded full verification.
pub async fn latest_verification(pool: &PgPool) -> Result<Option<Verification>, AuditError> {
    type Row = (
        chrono::DateTime<chrono::Utc>,
        chrono::DateTime<chrono::Utc>,
        String,
        i64,
        i64,
        Vec<u8>,
        Option<String>,
        Option<i64>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT started_at, finished_at, verifier, checked, head_position, head_hash,
                fault_kind, fault_position
         FROM chain_verifications ORDER BY id DESC LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    Ok(row.map(
        |(started, finished, verifier, checked, head, hash, kind, position)| {
            let position = position.unwrap_or_default() as u64;
            Verification {
                started_at: from_datetime(started),
                finished_at: from_datetime(finished),
                verifier,
                checked: checked as u64,
                head_position: head as u64,
                head_hash: crate::store::hash32(&hash),
                fault: match kind.as_deref() {
                    Some("hashMismatch") => Some(ChainFault::HashMismatch { position }),
                    Some(_) => Some(ChainFault::Gap {
                        expected: position,
                        found: 0,
                    }),
                    None => None,
                },
            }
        },
    ))
}

/// Takes the turn to verify if one is due: moves the lease forward by `interval` in one
/// statement, so of several processes exactly one wins each interval. A turn booked further
/// ahead than this process's interval (a process with a longer interval, e.g. before a
/// configuration change) is taken too, so a shorter interval applies at once.
pub async fn claim_turn(
    pool: &PgPool,
    holder: &str,
    interval: Duration,
) -> Result<bool, AuditError> {
    let claimed = sqlx::query(
        "UPDATE chain_verification_lease
         SET next_at = now() + $1 * interval '1 millisecond', holder = $2
         WHERE id = 1
           AND (next_at <= now() OR next_at > now() + $1 * interval '1 millisecond')",
    )
    .bind(interval.as_millis() as f64)
    .bind(holder)
    .execute(pool)
    .await?;
    Ok(claimed.rows_affected() == 1)
}

/// Shows the latest verification in this process's `/metrics`, labelled with the database (so
/// several engines in one process — tests — keep apart).
pub fn publish(database: &str, latest: &Verification) {
    let labels = [("database", database.to_owned())];
    let fault_position = match &latest.fault {
        None => 0,
        Some(ChainFault::HashMismatch { position }) => *position,
        Some(ChainFault::Gap { expected, .. }) => *expected,
    };
    metrics::gauge!("settle_chain_verified_positions", &labels).set(latest.checked as f64);
    metrics::gauge!("settle_chain_head_position_verified", &labels)
        .set(latest.head_position as f64);
    metrics::gauge!("settle_chain_fault_position", &labels).set(fault_position as f64);
    metrics::gauge!("settle_chain_verification_ok", &labels).set(if latest.fault.is_none() {
        1.0
    } else {
        0.0
    });
    metrics::gauge!("settle_chain_verification_finished_seconds", &labels)
        .set(latest.finished_at.0 as f64 / 1e6);
}

/// The periodic full verification: every `interval` one process (whichever claims the turn)
/// re-walks the chain from position 1 and records the result; every process shows the latest
/// result in its `/metrics`. A thin loop around `step`.
pub async fn run_verifier(
    pool: PgPool,
    verifier: String,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let database: String = match sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&pool)
        .await
    {
        Ok(name) => name,
        Err(e) => {
            tracing::error!(error = %e, "chain verifier cannot start");
            return;
        }
    };
    let tick = interval.min(Duration::from_millis(METRICS_REFRESH_MS_MAX));
    loop {
        if let Err(e) = step(&pool, &verifier, interval, &database).await {
            tracing::warn!(error = %e, "chain verification step failed; retrying next tick");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
        }
    }
}

/// One turn: verify if it is this process's turn, then show the latest result.
pub async fn step(
    pool: &PgPool,
    verifier: &str,
    interval: Duration,
    database: &str,
) -> Result<(), AuditError> {
    if claim_turn(pool, verifier, interval).await? {
        let done = verify_and_record(pool, verifier).await?;
        match &done.fault {
            None => tracing::info!(checked = done.checked, "chain verified"),
            Some(fault) => {
                tracing::error!(?fault, checked = done.checked, "CHAIN VERIFICATION FAILED")
            }
        }
    }
    if let Some(latest) = latest_verification(pool).await? {
        publish(database, &latest);
    }
    Ok(())
}

/// A range re-walk: positions `from..=to`, starting from the stored hash at `from - 1`.
pub async fn verify_range(
    pool: &PgPool,
    from: u64,
    to: u64,
    on_link: impl FnMut(u64, &ChainHash),
) -> Result<ChainReport, AuditError> {
    let from = from.max(1);
    let Some(previous) = stored_hash(pool, from - 1).await? else {
        return Ok(ChainReport {
            checked: 0,
            head_hash: GENESIS_HASH,
            fault: Some(ChainFault::Gap {
                expected: from - 1,
                found: 0,
            }),
        });
    };
    Ok(walk_chain(pool, from, to, previous, on_link).await?)
}

/// A checkpoint as the API hands it out and an auditor keeps it (the file of
/// `settle-audit verify-chain --since`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedCheckpoint {
    pub position: u64,
    pub hash: String,
    pub time: String,
    /// The exact text signed.
    pub note: String,
    /// Hex Ed25519 signature of `note`.
    pub signature: String,
    /// Hex public key of the engine's audit key (also at `GET /api/audit/v1/key`).
    pub public_key: String,
}

/// Signs the head (`None` before the first event: position 0, the genesis hash).
pub fn sign_checkpoint(
    signer: &AuditSigner,
    head: Option<log::Head>,
    at: Timestamp,
) -> SignedCheckpoint {
    let checkpoint = Checkpoint {
        position: head.map_or(0, |h| h.position),
        hash: head.map_or(GENESIS_HASH, |h| h.hash),
        time: time(at),
    };
    SignedCheckpoint {
        position: checkpoint.position,
        hash: hex::encode(checkpoint.hash),
        time: checkpoint.time.clone(),
        note: checkpoint.note(),
        signature: signer.sign(&checkpoint),
        public_key: signer.public_key_hex(),
    }
}

/// Why a checkpoint is not extended by today's log.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointFailure {
    #[error("the checkpoint's signature does not verify under the audit key")]
    BadSignature,
    #[error("the checkpoint was signed by key {found}, not the pinned audit key {pinned}")]
    OtherKey { found: String, pinned: String },
    #[error("the checkpoint file does not agree with its signed note")]
    NoteMismatch,
    #[error("the chain is broken before the checkpoint: {0:?}")]
    ChainFault(ChainFault),
    #[error("the log holds {head} positions, fewer than the checkpoint's {position}")]
    Truncated { head: u64, position: u64 },
    #[error("history was rewritten: the hash at position {position} is {found}, the checkpoint says {expected}")]
    Rewritten {
        position: u64,
        expected: String,
        found: String,
    },
}

/// The outcome of `verify-chain --since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointReport {
    pub checkpoint_position: u64,
    /// The walk of the whole chain, from position 1 to the head.
    pub report: ChainReport,
    pub failure: Option<CheckpointFailure>,
}

/// Checks the checkpoint's own signature and note (before touching the database).
pub fn check_checkpoint(
    checkpoint: &SignedCheckpoint,
    pinned_key: Option<&str>,
) -> Result<Checkpoint, CheckpointFailure> {
    if let Some(pinned) = pinned_key {
        if !pinned.eq_ignore_ascii_case(&checkpoint.public_key) {
            return Err(CheckpointFailure::OtherKey {
                found: checkpoint.public_key.clone(),
                pinned: pinned.to_owned(),
            });
        }
    }
    let key = hex::decode(&checkpoint.public_key)
        .ok()
        .and_then(|k| <[u8; 32]>::try_from(k.as_slice()).ok())
        .ok_or(CheckpointFailure::BadSignature)?;
    if !verify_note(&key, &checkpoint.note, &checkpoint.signature) {
        return Err(CheckpointFailure::BadSignature);
    }
    let note =
        Checkpoint::parse_note(&checkpoint.note).map_err(|_| CheckpointFailure::NoteMismatch)?;
    if note.position != checkpoint.position
        || hex::encode(note.hash) != checkpoint.hash.to_lowercase()
    {
        return Err(CheckpointFailure::NoteMismatch);
    }
    Ok(note)
}

/// Proves that today's log extends `checkpoint`: the chain verifies from position 1, and the hash
/// recomputed at the checkpoint's position — from the stored events, not the stored hashes —
/// equals the checkpoint's. An insider who changed an earlier event and re-hashed every later
/// link passes the first test and fails the second.
pub async fn verify_since(
    pool: &PgPool,
    checkpoint: &Checkpoint,
    mut on_link: impl FnMut(u64, &ChainHash),
) -> Result<CheckpointReport, AuditError> {
    let head = log::head(pool).await?.map_or(0, |h| h.position);
    let mut at_checkpoint = (checkpoint.position == 0).then_some(GENESIS_HASH);
    let report = walk_chain(pool, 1, head, GENESIS_HASH, |position, hash| {
        if position == checkpoint.position {
            at_checkpoint = Some(*hash);
        }
        on_link(position, hash);
    })
    .await?;
    let failure = match (&report.fault, at_checkpoint) {
        (Some(fault), _) if report.checked < checkpoint.position => {
            Some(CheckpointFailure::ChainFault(fault.clone()))
        }
        (_, None) => Some(CheckpointFailure::Truncated {
            head,
            position: checkpoint.position,
        }),
        (_, Some(found)) if found != checkpoint.hash => Some(CheckpointFailure::Rewritten {
            position: checkpoint.position,
            expected: hex::encode(checkpoint.hash),
            found: hex::encode(found),
        }),
        (Some(fault), _) => Some(CheckpointFailure::ChainFault(fault.clone())),
        (None, Some(_)) => None,
    };
    Ok(CheckpointReport {
        checkpoint_position: checkpoint.position,
        report,
        failure,
    })
}
