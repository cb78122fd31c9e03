//! The auditor's reads of the event log (ADR 0010), shared by the audit API and the
//! `settle-audit` command-line tool: events rendered with their signed requests re-verified, a
//! settlement's timeline, state folded from the log up to a position, the periodic full chain
//! verification and signed checkpoints, and the record of who read what.
//!
//! Reads only — except the records the audit surface keeps of itself (`audit_reads`,
//! `chain_verifications`), which are not events.

pub mod chain;
pub mod log;
pub mod reads;
pub mod render;
pub mod scope;
pub mod signatures;
pub mod state;

use crate::codec::DecodeError;

/// What can go wrong reading the log for an auditor.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error("a stored event cannot be decoded: {0}")]
    Decode(#[from] DecodeError),
}
