//! The enterprise aggregate: a tenant with its OES licence flag (SPEC §2).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{DomainEvent, Timestamp};

/// Longest enterprise name, in bytes.
pub const ENTERPRISE_NAME_LEN_MAX: usize = 200;

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

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Enterprise {
    #[default]
    Absent,
    Active {
        id: Uuid,
        name: String,
        oes_license: bool,
    },
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
}

impl Enterprise {
    pub fn evolve(self, event: &DomainEvent) -> Self {
        match (self, event) {
            (Self::Absent, DomainEvent::EnterpriseCreated(e)) => Self::Active {
                id: e.enterprise_id,
                name: e.name.clone(),
                oes_license: e.oes_license,
            },
            (Self::Active { id, name, .. }, DomainEvent::EnterpriseLicenseSet(e)) => Self::Active {
                id,
                name,
                oes_license: e.oes_license,
            },
            (state, _) => state,
        }
    }

    pub fn decide(
        &self,
        command: EnterpriseCommand,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, EnterpriseRejection> {
        match (self, command) {
            (
                Self::Absent,
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
            (Self::Active { .. }, EnterpriseCommand::Create { .. }) => {
                Err(EnterpriseRejection::AlreadyExists)
            }
            (Self::Absent, EnterpriseCommand::SetLicense { .. }) => {
                Err(EnterpriseRejection::NotFound)
            }
            (
                Self::Active {
                    id,
                    oes_license: current,
                    ..
                },
                EnterpriseCommand::SetLicense { oes_license },
            ) => {
                if *current == oes_license {
                    return Ok(vec![]);
                }
                Ok(vec![EnterpriseLicenseSet {
                    enterprise_id: *id,
                    oes_license,
                    at: now,
                }
                .into()])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Uuid = Uuid::from_u128(7);
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

    fn created(oes_license: bool) -> DomainEvent {
        EnterpriseCreated {
            enterprise_id: ID,
            name: "Acme".into(),
            oes_license,
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

    #[test]
    fn decides() {
        check(&[], create(" Acme "), Ok(vec![created(true)]));
        check(&[], create("  "), Err(EnterpriseRejection::NameEmpty));
        check(
            &[],
            create(&"x".repeat(201)),
            Err(EnterpriseRejection::NameTooLong),
        );
        check(
            &[created(true)],
            create("Acme"),
            Err(EnterpriseRejection::AlreadyExists),
        );
        check(
            &[],
            EnterpriseCommand::SetLicense { oes_license: true },
            Err(EnterpriseRejection::NotFound),
        );
        check(
            &[created(true)],
            EnterpriseCommand::SetLicense { oes_license: true },
            Ok(vec![]),
        );
        check(
            &[created(true)],
            EnterpriseCommand::SetLicense { oes_license: false },
            Ok(vec![EnterpriseLicenseSet {
                enterprise_id: ID,
                oes_license: false,
                at: NOW,
            }
            .into()]),
        );
    }
}
