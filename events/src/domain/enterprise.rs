//! The enterprise aggregate: a tenant with its OES licence flag and its registered Ed25519 signing
//! keys (SPEC §2, §4). Keys arrive already parsed and checked (not weak) by the signing rules.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{DomainEvent, Timestamp};

/// Longest enterprise name, in bytes.
pub const ENTERPRISE_NAME_LEN_MAX: usize = 200;
/// Most active signing keys per enterprise.
pub const SIGNING_KEYS_ACTIVE_MAX: usize = 32;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterpriseCreated {
    pub enterprise_id: Uuid,
    pub name: String,
    pub oes_license: bool,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterpriseLicenseSet {
    pub enterprise_id: Uuid,
    pub oes_license: bool,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRegistered {
    pub enterprise_id: Uuid,
    pub key_id: Uuid,
    pub public_key: [u8; 32],
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRevoked {
    pub enterprise_id: Uuid,
    pub key_id: Uuid,
    pub at: Timestamp,
}

/// One registered key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey {
    pub public_key: [u8; 32],
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnterpriseRecord {
    pub id: Uuid,
    pub name: String,
    pub oes_license: bool,
    pub keys: BTreeMap<Uuid, SigningKey>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Enterprise {
    #[default]
    Absent,
    Active(EnterpriseRecord),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnterpriseCommand {
    Create {
        enterprise_id: Uuid,
        name: String,
        oes_license: bool,
    },
    SetLicense {
        oes_license: bool,
    },
    RegisterKey {
        key_id: Uuid,
        public_key: [u8; 32],
    },
    RevokeKey {
        key_id: Uuid,
    },
}

/// Every way an enterprise command can be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnterpriseRejection {
    #[error("the enterprise already exists")]
    AlreadyExists,
    #[error("the enterprise does not exist")]
    NotFound,
    #[error("the name is empty")]
    NameEmpty,
    #[error("the name is longer than {ENTERPRISE_NAME_LEN_MAX} bytes")]
    NameTooLong,
    #[error("this public key is already registered and active")]
    KeyAlreadyRegistered,
    #[error("the enterprise already has {SIGNING_KEYS_ACTIVE_MAX} active keys")]
    TooManyKeys,
    #[error("the key does not exist")]
    KeyNotFound,
}

impl Enterprise {
    pub fn record(&self) -> Option<&EnterpriseRecord> {
        match self {
            Self::Absent => None,
            Self::Active(record) => Some(record),
        }
    }

    /// The keys that verify signatures now.
    pub fn active_keys(&self) -> impl Iterator<Item = (Uuid, [u8; 32])> + '_ {
        self.record()
            .into_iter()
            .flat_map(|r| r.keys.iter())
            .filter(|(_, k)| k.revoked_at.is_none())
            .map(|(id, k)| (*id, k.public_key))
    }

    pub fn evolve(self, event: &DomainEvent) -> Self {
        match (self, event) {
            (Self::Absent, DomainEvent::EnterpriseCreated(e)) => Self::Active(EnterpriseRecord {
                id: e.enterprise_id,
                name: e.name.clone(),
                oes_license: e.oes_license,
                keys: BTreeMap::new(),
                created_at: e.at,
                updated_at: e.at,
            }),
            (Self::Active(mut r), DomainEvent::EnterpriseLicenseSet(e)) => {
                r.oes_license = e.oes_license;
                r.updated_at = e.at;
                Self::Active(r)
            }
            (Self::Active(mut r), DomainEvent::SigningKeyRegistered(e)) => {
                r.keys.insert(
                    e.key_id,
                    SigningKey {
                        public_key: e.public_key,
                        created_at: e.at,
                        revoked_at: None,
                    },
                );
                Self::Active(r)
            }
            (Self::Active(mut r), DomainEvent::SigningKeyRevoked(e)) => {
                if let Some(key) = r.keys.get_mut(&e.key_id) {
                    key.revoked_at = Some(e.at);
                }
                Self::Active(r)
            }
            (state, _) => state,
        }
    }

    pub fn decide(
        &self,
        command: EnterpriseCommand,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, EnterpriseRejection> {
        let record = match (self, &command) {
            (Self::Absent, EnterpriseCommand::Create { .. }) => None,
            (Self::Active(_), EnterpriseCommand::Create { .. }) => {
                return Err(EnterpriseRejection::AlreadyExists)
            }
            (Self::Absent, _) => return Err(EnterpriseRejection::NotFound),
            (Self::Active(record), _) => Some(record),
        };
        match (record, command) {
            (
                None,
                EnterpriseCommand::Create {
                    enterprise_id,
                    name,
                    oes_license,
                },
            ) => {
                let name = name.trim().to_owned();
                if name.is_empty() {
                    return Err(EnterpriseRejection::NameEmpty);
                }
                if name.len() > ENTERPRISE_NAME_LEN_MAX {
                    return Err(EnterpriseRejection::NameTooLong);
                }
                Ok(vec![EnterpriseCreated {
                    enterprise_id,
                    name,
                    oes_license,
                    at: now,
                }
                .into()])
            }
            (Some(r), EnterpriseCommand::SetLicense { oes_license }) => {
                if r.oes_license == oes_license {
                    return Ok(vec![]);
                }
                Ok(vec![EnterpriseLicenseSet {
                    enterprise_id: r.id,
                    oes_license,
                    at: now,
                }
                .into()])
            }
            (Some(r), EnterpriseCommand::RegisterKey { key_id, public_key }) => {
                if self.active_keys().any(|(_, k)| k == public_key) {
                    return Err(EnterpriseRejection::KeyAlreadyRegistered);
                }
                if self.active_keys().count() >= SIGNING_KEYS_ACTIVE_MAX {
                    return Err(EnterpriseRejection::TooManyKeys);
                }
                Ok(vec![SigningKeyRegistered {
                    enterprise_id: r.id,
                    key_id,
                    public_key,
                    at: now,
                }
                .into()])
            }
            (Some(r), EnterpriseCommand::RevokeKey { key_id }) => match r.keys.get(&key_id) {
                None => Err(EnterpriseRejection::KeyNotFound),
                Some(key) if key.revoked_at.is_some() => Ok(vec![]),
                Some(_) => Ok(vec![SigningKeyRevoked {
                    enterprise_id: r.id,
                    key_id,
                    at: now,
                }
                .into()]),
            },
            // Unreachable combinations were answered above.
            _ => Err(EnterpriseRejection::NotFound),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Uuid = Uuid::from_u128(7);
    const KEY: Uuid = Uuid::from_u128(8);
    const NOW: Timestamp = Timestamp(1_700_000_000_000_000);

    fn given(events: &[DomainEvent]) -> Enterprise {
        events.iter().fold(Enterprise::Absent, Enterprise::evolve)
    }

    fn check(
        history: &[DomainEvent],
        command: EnterpriseCommand,
        expected: Result<Vec<DomainEvent>, EnterpriseRejection>,
    ) {
        assert_eq!(given(history).decide(command, NOW), expected);
    }

    fn created() -> DomainEvent {
        EnterpriseCreated {
            enterprise_id: ID,
            name: "Acme".into(),
            oes_license: true,
            at: NOW,
        }
        .into()
    }

    fn create(name: &str) -> EnterpriseCommand {
        EnterpriseCommand::Create {
            enterprise_id: ID,
            name: name.into(),
            oes_license: true,
        }
    }

    fn key_registered() -> DomainEvent {
        SigningKeyRegistered {
            enterprise_id: ID,
            key_id: KEY,
            public_key: [3; 32],
            at: NOW,
        }
        .into()
    }

    fn key_revoked() -> DomainEvent {
        SigningKeyRevoked {
            enterprise_id: ID,
            key_id: KEY,
            at: NOW,
        }
        .into()
    }

    #[test]
    fn decides() {
        use EnterpriseCommand::*;
        check(&[], create(" Acme "), Ok(vec![created()]));
        check(&[], create("  "), Err(EnterpriseRejection::NameEmpty));
        check(
            &[],
            create(&"x".repeat(201)),
            Err(EnterpriseRejection::NameTooLong),
        );
        check(
            &[created()],
            create("Acme"),
            Err(EnterpriseRejection::AlreadyExists),
        );
        check(
            &[],
            SetLicense { oes_license: true },
            Err(EnterpriseRejection::NotFound),
        );
        check(&[created()], SetLicense { oes_license: true }, Ok(vec![]));
        check(
            &[created()],
            SetLicense { oes_license: false },
            Ok(vec![EnterpriseLicenseSet {
                enterprise_id: ID,
                oes_license: false,
                at: NOW,
            }
            .into()]),
        );
        check(
            &[created()],
            RegisterKey {
                key_id: KEY,
                public_key: [3; 32],
            },
            Ok(vec![key_registered()]),
        );
        check(
            &[created(), key_registered()],
            RegisterKey {
                key_id: Uuid::from_u128(9),
                public_key: [3; 32],
            },
            Err(EnterpriseRejection::KeyAlreadyRegistered),
        );
        check(
            &[created()],
            RevokeKey { key_id: KEY },
            Err(EnterpriseRejection::KeyNotFound),
        );
        check(
            &[created(), key_registered()],
            RevokeKey { key_id: KEY },
            Ok(vec![key_revoked()]),
        );
        check(
            &[created(), key_registered(), key_revoked()],
            RevokeKey { key_id: KEY },
            Ok(vec![]),
        );
        // A revoked key's bytes may be registered again under a new id.
        let again = RegisterKey {
            key_id: Uuid::from_u128(9),
            public_key: [3; 32],
        };
        assert!(given(&[created(), key_registered(), key_revoked()])
            .decide(again, NOW)
            .is_ok());
    }

    #[test]
    fn only_unrevoked_keys_are_active() {
        assert_eq!(
            given(&[created(), key_registered()]).active_keys().count(),
            1
        );
        assert_eq!(
            given(&[created(), key_registered(), key_revoked()])
                .active_keys()
                .count(),
            0
        );
    }
}
