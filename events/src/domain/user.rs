//! The user aggregate: a person or system with an access token, a member of one or more
//! enterprises, possibly an auditor (docs/api/guide.md). Only the token's SHA-256 is ever stored;
//! the clear token is generated outside the domain and shown once. An operator can disable a user
//! (every request is refused until it is enabled again) and rotate its token (the old one stops
//! working at once; the new one is again shown once).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{DomainEvent, Timestamp};

use super::limits::{self, LimitError, Lines, MAX_NAME_BYTES};

/// Most enterprises one user may belong to.
pub const USER_ENTERPRISES_MAX: usize = limits::MAX_USER_ENTERPRISES;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user_id: Uuid,
    pub name: String,
    pub token_hash: [u8; 32],
    pub enterprise_ids: Vec<Uuid>,
    pub auditor: bool,
    pub at: Timestamp,
}

/// The operator disabled the user: its token is refused until `UserEnabled`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserDisabled {
    pub user_id: Uuid,
    pub at: Timestamp,
}

/// The operator enabled a disabled user again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEnabled {
    pub user_id: Uuid,
    pub at: Timestamp,
}

/// The user's access token was replaced: only the token with this SHA-256 is accepted now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserTokenRotated {
    pub user_id: Uuid,
    pub token_hash: [u8; 32],
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: Uuid,
    pub name: String,
    /// SHA-256 of the one token accepted now.
    pub token_hash: [u8; 32],
    pub enterprise_ids: Vec<Uuid>,
    pub auditor: bool,
    /// Disabled users are refused on every route, whatever token they present.
    pub disabled: bool,
    pub created_at: Timestamp,
    /// When the user was last disabled, enabled or given a new token.
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum User {
    #[default]
    Absent,
    Active(UserRecord),
}

/// Every way creating a user can be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UserRejection {
    #[error("the user already exists")]
    AlreadyExists,
    #[error("the user does not exist")]
    NotFound,
    #[error(transparent)]
    Input(#[from] LimitError),
    #[error("a user belongs to at most {USER_ENTERPRISES_MAX} enterprises")]
    TooManyEnterprises,
    #[error("an enterprise the user should belong to does not exist")]
    EnterpriseNotFound,
}

/// What a new user needs; `enterprises_exist` is the caller's check of every enterprise id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateUser {
    pub user_id: Uuid,
    pub name: String,
    pub token_hash: [u8; 32],
    pub enterprise_ids: Vec<Uuid>,
    pub auditor: bool,
    pub enterprises_exist: bool,
}

impl User {
    pub fn record(&self) -> Option<&UserRecord> {
        match self {
            Self::Absent => None,
            Self::Active(r) => Some(r),
        }
    }

    pub fn evolve(self, event: &DomainEvent) -> Self {
        match (self, event) {
            (Self::Absent, DomainEvent::UserCreated(e)) => Self::Active(UserRecord {
                id: e.user_id,
                name: e.name.clone(),
                token_hash: e.token_hash,
                enterprise_ids: e.enterprise_ids.clone(),
                auditor: e.auditor,
                disabled: false,
                created_at: e.at,
                updated_at: e.at,
            }),
            (Self::Active(mut r), DomainEvent::UserDisabled(e)) => {
                r.disabled = true;
                r.updated_at = e.at;
                Self::Active(r)
            }
            (Self::Active(mut r), DomainEvent::UserEnabled(e)) => {
                r.disabled = false;
                r.updated_at = e.at;
                Self::Active(r)
            }
            (Self::Active(mut r), DomainEvent::UserTokenRotated(e)) => {
                r.token_hash = e.token_hash;
                r.updated_at = e.at;
                Self::Active(r)
            }
            (state, _) => state,
        }
    }

    pub fn decide_create(
        &self,
        command: CreateUser,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, UserRejection> {
        if !matches!(self, Self::Absent) {
            return Err(UserRejection::AlreadyExists);
        }
        limits::text("name", &command.name, MAX_NAME_BYTES, Lines::One)?;
        let name = command.name.trim().to_owned();
        let mut enterprise_ids = command.enterprise_ids;
        enterprise_ids.sort();
        enterprise_ids.dedup();
        if enterprise_ids.len() > USER_ENTERPRISES_MAX {
            return Err(UserRejection::TooManyEnterprises);
        }
        if !command.enterprises_exist {
            return Err(UserRejection::EnterpriseNotFound);
        }
        Ok(vec![UserCreated {
            user_id: command.user_id,
            name,
            token_hash: command.token_hash,
            enterprise_ids,
            auditor: command.auditor,
            at: now,
        }
        .into()])
    }

    /// Disables (`false`) or enables (`true`) the user; asking for the state it is in records
    /// nothing.
    pub fn decide_enabled(
        &self,
        enabled: bool,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, UserRejection> {
        let record = self.record().ok_or(UserRejection::NotFound)?;
        if record.disabled != enabled {
            return Ok(vec![]);
        }
        let user_id = record.id;
        Ok(vec![if enabled {
            UserEnabled { user_id, at: now }.into()
        } else {
            UserDisabled { user_id, at: now }.into()
        }])
    }

    /// Replaces the user's token with the one whose SHA-256 is `token_hash` (a disabled user
    /// stays disabled).
    pub fn decide_rotate_token(
        &self,
        token_hash: [u8; 32],
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, UserRejection> {
        let record = self.record().ok_or(UserRejection::NotFound)?;
        Ok(vec![UserTokenRotated {
            user_id: record.id,
            token_hash,
            at: now,
        }
        .into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Uuid = Uuid::from_u128(5);
    const T0: Timestamp = Timestamp(1_000);
    const NOW: Timestamp = Timestamp(2_000);

    fn given(events: &[DomainEvent]) -> User {
        events.iter().fold(User::Absent, User::evolve)
    }

    fn created() -> DomainEvent {
        UserCreated {
            user_id: ID,
            name: "ops".into(),
            token_hash: [1; 32],
            enterprise_ids: vec![Uuid::from_u128(1)],
            auditor: false,
            at: T0,
        }
        .into()
    }

    fn disabled() -> DomainEvent {
        UserDisabled {
            user_id: ID,
            at: NOW,
        }
        .into()
    }

    #[test]
    fn disables_and_enables_once() {
        let check = |history: &[DomainEvent], enabled, expected| {
            assert_eq!(given(history).decide_enabled(enabled, NOW), expected);
        };
        check(&[], false, Err(UserRejection::NotFound));
        check(&[created()], false, Ok(vec![disabled()]));
        check(&[created()], true, Ok(vec![]));
        check(&[created(), disabled()], false, Ok(vec![]));
        let enabled: DomainEvent = UserEnabled {
            user_id: ID,
            at: NOW,
        }
        .into();
        check(&[created(), disabled()], true, Ok(vec![enabled.clone()]));
        let state = given(&[created(), disabled()]);
        assert!(state
            .record()
            .is_some_and(|r| r.disabled && r.updated_at == NOW));
        assert!(given(&[created(), disabled(), enabled])
            .record()
            .is_some_and(|r| !r.disabled));
    }

    #[test]
    fn a_rotated_token_replaces_the_old_one() {
        assert_eq!(
            User::Absent.decide_rotate_token([2; 32], NOW),
            Err(UserRejection::NotFound)
        );
        let rotated = given(&[created()])
            .decide_rotate_token([2; 32], NOW)
            .expect("rotated");
        assert_eq!(
            rotated,
            vec![UserTokenRotated {
                user_id: ID,
                token_hash: [2; 32],
                at: NOW
            }
            .into()]
        );
        let mut history = vec![created(), disabled()];
        history.extend(rotated);
        let record = given(&history).record().cloned().expect("user");
        assert_eq!(record.token_hash, [2; 32]);
        assert!(record.disabled, "rotation does not enable");
    }
}
