//! Audit rules (ADR 0010), pure: who may audit and which tenants they see, which
//! events touch a settlement, which events carry a signed instruction and whether its signature
//! still verifies under the key that accepted it, and an enterprise's accounts folded from the
//! log up to a position.

use std::collections::{BTreeMap, BTreeSet};

use schemas::signing::{verify, PublicKey, Signature};
use uuid::Uuid;

use super::connection::Connection;
use super::custody::Custody;
use super::dispute::ClosedBy;
use super::event::DomainEvent;
use super::stream::StreamName;
use super::user::User;

/// The tenants an audit caller sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuditScope {
    /// The operator (admin token): every enterprise.
    All,
    /// An auditor user: the enterprises it is a member of.
    Enterprises(BTreeSet<Uuid>),
}

impl AuditScope {
    pub fn sees(&self, enterprise_id: Uuid) -> bool {
        match self {
            Self::All => true,
            Self::Enterprises(set) => set.contains(&enterprise_id),
        }
    }

    /// Whether any of `enterprises` is in scope. An object no enterprise owns is seen by the
    /// operator only.
    pub fn sees_any(&self, enterprises: &[Uuid]) -> bool {
        match self {
            Self::All => true,
            Self::Enterprises(set) => enterprises.iter().any(|e| set.contains(e)),
        }
    }
}

/// Refusals of an audit caller presenting a user token, in the order they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditorRejection {
    #[error("missing or unknown access token")]
    Unauthenticated,
    #[error("the user is disabled")]
    UserDisabled,
    #[error("the user is not an auditor")]
    NotAnAuditor,
}

/// A user token on the audit API: the user's current token, not disabled, flagged `auditor`;
/// it sees the enterprises it is a member of.
pub fn authorize_auditor(
    user: &User,
    token_hash: &[u8; 32],
) -> Result<AuditScope, AuditorRejection> {
    let user = user
        .record()
        .filter(|u| &u.token_hash == token_hash)
        .ok_or(AuditorRejection::Unauthenticated)?;
    if user.disabled {
        return Err(AuditorRejection::UserDisabled);
    }
    if !user.auditor {
        return Err(AuditorRejection::NotAnAuditor);
    }
    Ok(AuditScope::Enterprises(
        user.enterprise_ids.iter().copied().collect(),
    ))
}

/// The settlements an event names: its own, the one a lifecycle step acted on, or the disputed
/// settlement of a carried closure.
pub fn settlements_named(event: &DomainEvent) -> Vec<Uuid> {
    use DomainEvent as E;
    match event {
        E::SettlementStaged(e) => vec![e.settlement_id],
        E::SettlementExecuted(e) => vec![e.settlement_id],
        E::SettlementFailed(e) => vec![e.settlement_id],
        E::SettlementFinalized(e) => vec![e.settlement_id],
        E::FundsHeld(e) => vec![e.settlement_id],
        E::FundsReleased(e) => vec![e.settlement_id],
        E::ConnectionSettled(e) => vec![e.settlement_id],
        E::CustodySettled(e) => vec![e.settlement_id],
        E::PartnerCutoffAdvanced(e) => vec![e.settlement_id],
        E::DisputeRaised(e) => vec![e.settlement_id],
        E::DisputeUpdated(e) => vec![e.settlement_id],
        E::DisputeClosed(e) => vec![e.settlement_id],
        E::ClosureQueued(e) => vec![e.closure.disputed_settlement_id],
        E::ClosuresAssigned(e) => vec![e.settlement_id],
        E::ClosuresJoined(e) => std::iter::once(e.settlement_id)
            .chain(e.closures.iter().map(|c| c.disputed_settlement_id))
            .collect(),
        _ => vec![],
    }
}

/// The enterprises an event names outright (creation events name their owners; a dispute its
/// client). What an event does not name is found through its stream's first event.
pub fn enterprises_named(event: &DomainEvent) -> Vec<Uuid> {
    use DomainEvent as E;
    match event {
        E::EnterpriseCreated(e) => vec![e.enterprise_id],
        E::UserCreated(e) => e.enterprise_ids.clone(),
        E::PartnerRegistered(e) => vec![e.enterprise_id],
        E::ClientRegistered(e) => vec![e.enterprise_id],
        E::ConnectionCreated(e) => vec![e.client_enterprise_id, e.partner_enterprise_id],
        E::SettlementStaged(e) => vec![e.partner_enterprise_id],
        E::DisputeRaised(e) => vec![e.client_enterprise_id],
        _ => vec![],
    }
}

/// The connections whose owners a settlement's first events bring into its scope.
pub fn connections_named(event: &DomainEvent) -> Vec<Uuid> {
    use DomainEvent as E;
    match event {
        E::SettlementStaged(e) => e
            .transfers
            .iter()
            .flat_map(|t| std::iter::once(t.instruction.destination).chain(t.instruction.source))
            .collect(),
        E::ClosuresJoined(e) => e.closures.iter().map(|c| c.connection_id).collect(),
        _ => vec![],
    }
}

/// A signed instruction as an event keeps it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignedRef<'a> {
    pub payload: &'a str,
    pub signature: &'a str,
    pub key_id: Uuid,
}

/// Whether an event records a signed instruction (docs/api/signatures.md): true even for events
/// recorded before the signed request was kept, which then have no `SignedRef`.
pub fn is_signed_instruction(event: &DomainEvent) -> bool {
    use DomainEvent as E;
    match event {
        E::SettlementStaged(_)
        | E::DisputeRaised(_)
        | E::DisputeUpdated(_)
        | E::ConnectionCreated(_)
        | E::ConnectionUpdated(_)
        | E::AllocationCleared(_)
        | E::AllocationReleased(_) => true,
        E::DisputeClosed(e) => e.closed_by == ClosedBy::Client,
        _ => false,
    }
}

/// The signed instruction an event keeps, if it keeps one.
pub fn signed_instruction(event: &DomainEvent) -> Option<SignedRef<'_>> {
    use DomainEvent as E;
    fn of(s: &super::signed::Signed) -> SignedRef<'_> {
        SignedRef {
            payload: &s.payload,
            signature: &s.signature,
            key_id: s.key_id,
        }
    }
    match event {
        E::SettlementStaged(e) => Some(SignedRef {
            payload: &e.payload,
            signature: &e.signature,
            key_id: e.key_id,
        }),
        E::DisputeRaised(e) => Some(of(&e.signed)),
        E::DisputeUpdated(e) => Some(of(&e.signed)),
        E::DisputeClosed(e) => e.signed.as_ref().map(of),
        E::ConnectionCreated(e) => e.signed.as_ref().map(of),
        E::ConnectionUpdated(e) => e.signed.as_ref().map(of),
        E::AllocationCleared(e) => e.allocation.signed.as_ref().map(of),
        E::AllocationReleased(e) => e.allocation.signed.as_ref().map(of),
        _ => None,
    }
}

/// One registered signing key, with the positions of its registration and revocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRecord {
    pub enterprise_id: Uuid,
    pub public_key: [u8; 32],
    pub registered_at: u64,
    pub revoked_at: Option<u64>,
    /// The key parsed once (decompressing a point costs about as much as a fifth of a
    /// verification); `None` if the stored bytes are no valid key.
    pub parsed: Option<PublicKey>,
}

/// Every signing key the log has registered, by key id (key ids are unique across tenants).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyRegistry {
    pub keys: BTreeMap<Uuid, KeyRecord>,
}

impl KeyRegistry {
    /// Learns from the key events; others change nothing.
    pub fn apply(&mut self, position: u64, event: &DomainEvent) {
        match event {
            DomainEvent::SigningKeyRegistered(e) => {
                self.keys.entry(e.key_id).or_insert(KeyRecord {
                    enterprise_id: e.enterprise_id,
                    public_key: e.public_key,
                    registered_at: position,
                    revoked_at: None,
                    parsed: PublicKey::from_bytes(&e.public_key).ok(),
                });
            }
            DomainEvent::SigningKeyRevoked(e) => {
                if let Some(k) = self.keys.get_mut(&e.key_id) {
                    k.revoked_at.get_or_insert(position);
                }
            }
            _ => {}
        }
    }
}

/// Why a kept signature does not stand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureProblem {
    #[error("the key id names no registered key")]
    UnknownKey,
    #[error("the key was registered after the instruction was accepted")]
    KeyNotYetRegistered,
    #[error("the key had been revoked before the instruction was accepted")]
    KeyRevokedBefore,
    #[error("the key belongs to another enterprise than the signer's")]
    KeyOfAnotherEnterprise,
    #[error("the signature is not 64 bytes of hex")]
    MalformedSignature,
    #[error("the stored public key is not a valid Ed25519 key")]
    MalformedKey,
    #[error("the signature does not verify over the payload")]
    DoesNotVerify,
}

/// The re-verification of one kept signature.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignatureCheck {
    pub key: Option<KeyRecord>,
    pub problem: Option<SignatureProblem>,
}

impl SignatureCheck {
    pub fn valid(&self) -> bool {
        self.problem.is_none()
    }
}

/// Re-verifies `signed`, accepted at `position`, against the key that accepted it: the key must
/// have been registered before and not revoked before that position, belong to one of
/// `signers` (when the caller knows who signed), and verify the payload strictly now.
pub fn check_signature(
    signed: &SignedRef<'_>,
    position: u64,
    signers: &[Uuid],
    keys: &KeyRegistry,
) -> SignatureCheck {
    let key = keys.keys.get(&signed.key_id).cloned();
    let problem = match &key {
        None => Some(SignatureProblem::UnknownKey),
        Some(k) if k.registered_at >= position => Some(SignatureProblem::KeyNotYetRegistered),
        Some(k) if k.revoked_at.is_some_and(|r| r < position) => {
            Some(SignatureProblem::KeyRevokedBefore)
        }
        Some(k) if !signers.is_empty() && !signers.contains(&k.enterprise_id) => {
            Some(SignatureProblem::KeyOfAnotherEnterprise)
        }
        Some(k) => verify_now(signed, k),
    };
    SignatureCheck { key, problem }
}

fn verify_now(signed: &SignedRef<'_>, key: &KeyRecord) -> Option<SignatureProblem> {
    let Some(public) = key.parsed else {
        return Some(SignatureProblem::MalformedKey);
    };
    let Ok(signature) = Signature::parse_hex(signed.signature) else {
        return Some(SignatureProblem::MalformedSignature);
    };
    match verify(signed.payload, &signature, &[(Uuid::nil(), public)]) {
        Some(_) => None,
        None => Some(SignatureProblem::DoesNotVerify),
    }
}

/// Who may have signed an instruction, learned from the log as it is read in order: the client
/// enterprise of each connection and each dispute.
#[derive(Clone, Debug, Default)]
pub struct SignerIndex {
    connection_clients: BTreeMap<Uuid, Uuid>,
    dispute_clients: BTreeMap<Uuid, Uuid>,
}

impl SignerIndex {
    pub fn learn(&mut self, event: &DomainEvent) {
        match event {
            DomainEvent::ConnectionCreated(e) => {
                self.connection_clients
                    .insert(e.connection_id, e.client_enterprise_id);
            }
            DomainEvent::DisputeRaised(e) => {
                self.dispute_clients
                    .insert(e.dispute_id, e.client_enterprise_id);
            }
            _ => {}
        }
    }

    /// The enterprise whose key must have signed `event`, when known (empty: not known here).
    pub fn signers(&self, event: &DomainEvent) -> Vec<Uuid> {
        use DomainEvent as E;
        let known = |map: &BTreeMap<Uuid, Uuid>, id: &Uuid| map.get(id).copied();
        let signer = match event {
            E::SettlementStaged(e) => Some(e.partner_enterprise_id),
            E::DisputeRaised(e) => Some(e.client_enterprise_id),
            E::ConnectionCreated(e) => Some(e.client_enterprise_id),
            E::DisputeUpdated(e) => known(&self.dispute_clients, &e.dispute_id),
            E::DisputeClosed(e) => known(&self.dispute_clients, &e.dispute_id),
            E::ConnectionUpdated(e) => known(&self.connection_clients, &e.connection_id),
            E::AllocationCleared(e) => known(&self.connection_clients, &e.allocation.connection_id),
            E::AllocationReleased(e) => {
                known(&self.connection_clients, &e.allocation.connection_id)
            }
            _ => None,
        };
        signer.into_iter().collect()
    }
}

/// An enterprise's accounts as the log stood at a position: its custody and the connections it
/// owns as a client or serves as a partner, each folded from its own stream's events.
#[derive(Clone, Debug, Default)]
pub struct AccountsAt {
    pub custody: Custody,
    pub connections: BTreeMap<Uuid, Connection>,
}

impl AccountsAt {
    /// Applies one event of `stream` (events arrive in position order).
    pub fn apply(&mut self, stream: &StreamName, event: &DomainEvent) {
        match stream.category() {
            "custody" => {
                self.custody = std::mem::take(&mut self.custody).evolve(event);
            }
            "connection" => {
                let Ok(id) = Uuid::try_parse(stream.id()) else {
                    return;
                };
                let entry = self.connections.entry(id).or_default();
                *entry = std::mem::take(entry).evolve(event);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::dispute::Signed;
    use crate::domain::enterprise::{SigningKeyRegistered, SigningKeyRevoked};
    use crate::domain::event::Timestamp;
    use crate::domain::user::{UserCreated, UserDisabled};
    use ed25519_dalek::{Signer, SigningKey};

    const E: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);
    const KEY: Uuid = Uuid::from_u128(3);
    const HASH: [u8; 32] = [7; 32];

    fn user(auditor: bool) -> User {
        User::Absent.evolve(
            &UserCreated {
                user_id: Uuid::from_u128(9),
                name: "a".into(),
                token_hash: HASH,
                enterprise_ids: vec![E],
                auditor,
                at: Timestamp(0),
            }
            .into(),
        )
    }

    #[test]
    fn auditors_see_their_enterprises_and_others_are_refused_in_order() {
        let scope = authorize_auditor(&user(true), &HASH).unwrap();
        assert!(scope.sees(E) && !scope.sees(OTHER));
        assert!(scope.sees_any(&[OTHER, E]) && !scope.sees_any(&[]));
        assert!(AuditScope::All.sees_any(&[]));
        assert_eq!(
            authorize_auditor(&user(false), &HASH),
            Err(AuditorRejection::NotAnAuditor)
        );
        assert_eq!(
            authorize_auditor(&user(true), &[0; 32]),
            Err(AuditorRejection::Unauthenticated)
        );
        assert_eq!(
            authorize_auditor(&User::Absent, &HASH),
            Err(AuditorRejection::Unauthenticated)
        );
        let disabled = user(true).evolve(
            &UserDisabled {
                user_id: Uuid::from_u128(9),
                at: Timestamp(1),
            }
            .into(),
        );
        assert_eq!(
            authorize_auditor(&disabled, &HASH),
            Err(AuditorRejection::UserDisabled)
        );
    }

    fn keys(signing: &SigningKey) -> KeyRegistry {
        let mut keys = KeyRegistry::default();
        keys.apply(
            5,
            &SigningKeyRegistered {
                enterprise_id: E,
                key_id: KEY,
                public_key: signing.verifying_key().to_bytes(),
                at: Timestamp(0),
            }
            .into(),
        );
        keys
    }

    #[test]
    fn a_kept_signature_is_checked_against_the_key_that_accepted_it() {
        let signing = SigningKey::from_bytes(&[4; 32]);
        let payload = r#"{"nonce":"n"}"#;
        let signature = hex::encode(signing.sign(payload.as_bytes()).to_bytes());
        let signed = SignedRef {
            payload,
            signature: &signature,
            key_id: KEY,
        };
        let mut registry = keys(&signing);
        let problem = |position, signers: &[Uuid], registry: &KeyRegistry| {
            check_signature(&signed, position, signers, registry).problem
        };
        assert_eq!(problem(6, &[E], &registry), None);
        assert_eq!(problem(6, &[], &registry), None);
        assert_eq!(
            problem(5, &[E], &registry),
            Some(SignatureProblem::KeyNotYetRegistered)
        );
        assert_eq!(
            problem(6, &[OTHER], &registry),
            Some(SignatureProblem::KeyOfAnotherEnterprise)
        );
        let tampered = SignedRef {
            payload: r#"{"nonce":"m"}"#,
            ..signed
        };
        assert_eq!(
            check_signature(&tampered, 6, &[E], &registry).problem,
            Some(SignatureProblem::DoesNotVerify)
        );
        assert_eq!(
            check_signature(
                &SignedRef {
                    signature: "zz",
                    ..signed
                },
                6,
                &[E],
                &registry
            )
            .problem,
            Some(SignatureProblem::MalformedSignature)
        );
        // A later revocation does not undo what the key signed while it was active.
        registry.apply(
            8,
            &SigningKeyRevoked {
                enterprise_id: E,
                key_id: KEY,
                at: Timestamp(0),
            }
            .into(),
        );
        assert_eq!(problem(7, &[E], &registry), None);
        assert_eq!(
            problem(9, &[E], &registry),
            Some(SignatureProblem::KeyRevokedBefore)
        );
        assert_eq!(
            problem(9, &[E], &KeyRegistry::default()),
            Some(SignatureProblem::UnknownKey)
        );
    }

    #[test]
    fn signed_instructions_are_found_in_every_signed_event() {
        use crate::domain::connection::ConnectionUpdated;
        let kept = Signed {
            payload: "p".into(),
            signature: "s".into(),
            key_id: KEY,
        };
        let updated: DomainEvent = ConnectionUpdated {
            connection_id: Uuid::from_u128(5),
            name: None,
            active: Some(false),
            at: Timestamp(0),
            signed: Some(kept.clone()),
        }
        .into();
        assert!(is_signed_instruction(&updated));
        assert_eq!(
            signed_instruction(&updated).map(|s| (s.payload, s.key_id)),
            Some(("p", KEY))
        );
        let old: DomainEvent = ConnectionUpdated {
            connection_id: Uuid::from_u128(5),
            name: None,
            active: Some(false),
            at: Timestamp(0),
            signed: None,
        }
        .into();
        assert!(is_signed_instruction(&old) && signed_instruction(&old).is_none());
    }
}
