//! The user aggregate: a person or system with an access token, a member of one or more
//! enterprises, possibly an auditor (SPEC §2). Only the token's SHA-256 is ever stored; the clear
//! token is generated outside the domain and shown once.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{DomainEvent, Timestamp};

/// Longest user name, in bytes.
pub const USER_NAME_LEN_MAX: usize = 200;
/// Most enterprises one user may belong to.
pub const USER_ENTERPRISES_MAX: usize = 100;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserCreated {
    pub user_id: Uuid,
    pub name: String,
    pub token_hash: [u8; 32],
    pub enterprise_ids: Vec<Uuid>,
    pub auditor: bool,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserRecord {
    pub id: Uuid,
    pub name: String,
    pub token_hash: [u8; 32],
    pub enterprise_ids: Vec<Uuid>,
    pub auditor: bool,
    pub created_at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
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
    #[error("the name is empty")]
    NameEmpty,
    #[error("the name is longer than {USER_NAME_LEN_MAX} bytes")]
    NameTooLong,
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
                created_at: e.at,
            }),
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
        let name = command.name.trim().to_owned();
        if name.is_empty() {
            return Err(UserRejection::NameEmpty);
        }
        if name.len() > USER_NAME_LEN_MAX {
            return Err(UserRejection::NameTooLong);
        }
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
}
