//! Re-verification of every kept signature in a range of the log (`settle-audit
//! verify-signatures`): keys and signers are learned from the log itself, and the Ed25519 checks
//! — the cost of the pass — are spread over threads.

use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::audit::{
    check_signature, is_signed_instruction, signed_instruction, SignerIndex,
};
use crate::domain::DomainEvent;

use super::log;
use super::render::{type_name, Audited};
use super::AuditError;

/// One signature that does not stand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureFailure {
    pub position: u64,
    pub event_type: &'static str,
    pub key_id: Uuid,
    pub problem: String,
}

/// What a pass found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SignatureReport {
    pub scanned: u64,
    /// Signed instructions whose request was kept, all re-verified.
    pub verified: u64,
    /// Signed instructions recorded before their requests were kept (nothing to verify).
    pub not_kept: u64,
    /// Events that do not decode (also reported by `verify-chain` if they were changed).
    pub undecodable: u64,
    pub failures: Vec<SignatureFailure>,
}

/// Re-verifies every kept signature with `from <= position <= to` on `threads` threads;
/// `progress` sees the last position of each page handled.
pub async fn verify_signatures(
    pool: &PgPool,
    from: u64,
    to: u64,
    threads: usize,
    mut progress: impl FnMut(u64),
) -> Result<SignatureReport, AuditError> {
    let keys = log::key_registry(pool).await?;
    let mut signers = SignerIndex::default();
    // Connections created before `from` still say who signs for them.
    for (_, created) in log::connection_creations(pool, from).await? {
        signers.learn(&created);
    }
    let mut report = SignatureReport::default();
    log::for_each_page(pool, from, to, |page| {
        let last = page.last().map_or(0, |e| e.position);
        let audited: Vec<Audited> = page.into_iter().map(Audited::new).collect();
        let mut checks: Vec<(&Audited, &DomainEvent)> = Vec::new();
        for a in &audited {
            report.scanned += 1;
            match &a.decoded {
                Err(_) => report.undecodable += 1,
                Ok(event) => {
                    signers.learn(event);
                    if signed_instruction(event).is_some() {
                        checks.push((a, event));
                    } else if is_signed_instruction(event) {
                        report.not_kept += 1;
                    }
                }
            }
        }
        report.verified += checks.len() as u64;
        let chunk = checks.len().div_ceil(threads.max(1)).max(1);
        let (keys, signers) = (&keys, &signers);
        let failures: Vec<SignatureFailure> = std::thread::scope(|scope| {
            let workers: Vec<_> = checks
                .chunks(chunk)
                .map(|part| {
                    scope.spawn(move || {
                        part.iter()
                            .filter_map(|(a, event)| {
                                let signed = signed_instruction(event)?;
                                let check = check_signature(
                                    &signed,
                                    a.event.position,
                                    &signers.signers(event),
                                    keys,
                                );
                                check.problem.map(|p| SignatureFailure {
                                    position: a.event.position,
                                    event_type: type_name(a.event.stored.event.type_id),
                                    key_id: signed.key_id,
                                    problem: p.to_string(),
                                })
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers
                .into_iter()
                // A worker that panicked is a bug: re-raise it rather than lose its failures.
                .flat_map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        report.failures.extend(failures);
        progress(last);
        Ok(true)
    })
    .await?;
    report.failures.sort_by_key(|f| f.position);
    Ok(report)
}
