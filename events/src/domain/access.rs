//! Who may call what (docs/api/guide.md), decided purely from the caller's user, the enterprise
//! named in the path, and that enterprise's partner or client record — in the documented order,
//! each check with its own named refusal.

use uuid::Uuid;

use super::client::Client;
use super::enterprise::Enterprise;
use super::partner::Partner;
use super::user::User;

/// The record a route needs besides membership and licence.
#[derive(Clone, Copy, Debug)]
pub enum Scope<'a> {
    /// Any member with a licence (e.g. reading the enterprise's own data).
    Enterprise,
    Partner(&'a Partner),
    Client(&'a Client),
}

/// Refusals, in the order they are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AccessRejection {
    #[error("missing or unknown access token")]
    Unauthenticated,
    #[error("the user is disabled")]
    UserDisabled,
    #[error("the user is not a member of this enterprise")]
    NotMember,
    #[error("the enterprise has no OES licence")]
    NoLicense,
    #[error("the enterprise has no partner record")]
    NoPartner,
    #[error("the partner is inactive")]
    PartnerInactive,
    #[error("the enterprise has no client record")]
    NoClient,
}

/// Checks a caller presenting a token whose SHA-256 is `token_hash` against `enterprise_id`.
/// Only the user's current token is accepted (a rotated-out one is unknown), and a disabled
/// user is refused whatever else holds.
pub fn authorize(
    user: &User,
    token_hash: &[u8; 32],
    enterprise_id: Uuid,
    enterprise: &Enterprise,
    scope: Scope<'_>,
) -> Result<(), AccessRejection> {
    let user = user
        .record()
        .filter(|u| &u.token_hash == token_hash)
        .ok_or(AccessRejection::Unauthenticated)?;
    if user.disabled {
        return Err(AccessRejection::UserDisabled);
    }
    if !user.enterprise_ids.contains(&enterprise_id) {
        return Err(AccessRejection::NotMember);
    }
    let enterprise = enterprise.record().ok_or(AccessRejection::NotMember)?;
    if !enterprise.oes_license {
        return Err(AccessRejection::NoLicense);
    }
    match scope {
        Scope::Enterprise => Ok(()),
        Scope::Partner(partner) => match partner.record() {
            None => Err(AccessRejection::NoPartner),
            Some(p) if !p.active => Err(AccessRejection::PartnerInactive),
            Some(_) => Ok(()),
        },
        Scope::Client(client) => client.record().map(|_| ()).ok_or(AccessRejection::NoClient),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::client::ClientRegistered;
    use crate::domain::enterprise::EnterpriseCreated;
    use crate::domain::event::{DomainEvent, Timestamp};
    use crate::domain::money::AmountFormat;
    use crate::domain::partner::{PartnerRegistered, PartnerUpdated};
    use crate::domain::user::{UserCreated, UserDisabled, UserEnabled, UserTokenRotated};

    const E: Uuid = Uuid::from_u128(1);
    const OTHER: Uuid = Uuid::from_u128(2);
    const T: Timestamp = Timestamp(0);
    const HASH: [u8; 32] = [7; 32];

    fn user() -> User {
        User::Absent.evolve(&DomainEvent::from(UserCreated {
            user_id: Uuid::from_u128(9),
            name: "u".into(),
            token_hash: HASH,
            enterprise_ids: vec![E],
            auditor: false,
            at: T,
        }))
    }

    fn enterprise(licensed: bool) -> Enterprise {
        Enterprise::Absent.evolve(
            &EnterpriseCreated {
                enterprise_id: E,
                name: "e".into(),
                oes_license: licensed,
                at: T,
            }
            .into(),
        )
    }

    fn partner(active: bool) -> Partner {
        let registered = Partner::Absent.evolve(
            &PartnerRegistered {
                partner_id: Uuid::from_u128(3),
                enterprise_id: E,
                name: "p".into(),
                broker: false,
                client_dispute_window: None,
                top_up_window: None,
                amount_format: AmountFormat::BaseUnits,
                at: T,
                connection_key_schema: None,
            }
            .into(),
        );
        let update = PartnerUpdated {
            partner_id: Uuid::from_u128(3),
            active: Some(active),
            client_dispute_window: None,
            top_up_window: None,
            at: T,
            connection_key_schema: None,
        };
        registered.evolve(&update.into())
    }

    fn client() -> Client {
        Client::Absent.evolve(
            &ClientRegistered {
                client_id: Uuid::from_u128(4),
                enterprise_id: E,
                wallet_id: Uuid::from_u128(5),
                at: T,
            }
            .into(),
        )
    }

    #[test]
    fn checks_in_the_spec_order() {
        use AccessRejection::*;
        let (u, lic, unlic) = (user(), enterprise(true), enterprise(false));
        assert_eq!(
            authorize(&User::Absent, &HASH, E, &lic, Scope::Enterprise),
            Err(Unauthenticated)
        );
        assert_eq!(
            authorize(&u, &[0; 32], E, &lic, Scope::Enterprise),
            Err(Unauthenticated)
        );
        assert_eq!(
            authorize(&u, &HASH, OTHER, &lic, Scope::Enterprise),
            Err(NotMember)
        );
        assert_eq!(
            authorize(&u, &HASH, E, &Enterprise::Absent, Scope::Enterprise),
            Err(NotMember)
        );
        assert_eq!(
            authorize(&u, &HASH, E, &unlic, Scope::Partner(&Partner::Absent)),
            Err(NoLicense)
        );
        assert_eq!(
            authorize(&u, &HASH, E, &lic, Scope::Partner(&Partner::Absent)),
            Err(NoPartner)
        );
        assert_eq!(
            authorize(&u, &HASH, E, &lic, Scope::Partner(&partner(false))),
            Err(PartnerInactive)
        );
        assert_eq!(
            authorize(&u, &HASH, E, &lic, Scope::Partner(&partner(true))),
            Ok(())
        );
        assert_eq!(
            authorize(&u, &HASH, E, &lic, Scope::Client(&Client::Absent)),
            Err(NoClient)
        );
        assert_eq!(
            authorize(&u, &HASH, E, &lic, Scope::Client(&client())),
            Ok(())
        );
    }

    #[test]
    fn a_disabled_user_and_a_rotated_out_token_are_refused() {
        use AccessRejection::Unauthenticated;
        let lic = enterprise(true);
        let user_id = Uuid::from_u128(9);
        let disabled = user().evolve(&UserDisabled { user_id, at: T }.into());
        assert_eq!(
            authorize(&disabled, &HASH, E, &lic, Scope::Enterprise),
            Err(AccessRejection::UserDisabled)
        );
        assert_eq!(
            authorize(&disabled, &[0; 32], E, &lic, Scope::Enterprise),
            Err(Unauthenticated),
            "an unknown token is unknown first"
        );
        let enabled = disabled.evolve(&UserEnabled { user_id, at: T }.into());
        assert_eq!(
            authorize(&enabled, &HASH, E, &lic, Scope::Enterprise),
            Ok(())
        );
        let fresh = [8; 32];
        let rotated = enabled.evolve(
            &UserTokenRotated {
                user_id,
                token_hash: fresh,
                at: T,
            }
            .into(),
        );
        assert_eq!(
            authorize(&rotated, &HASH, E, &lic, Scope::Enterprise),
            Err(Unauthenticated)
        );
        assert_eq!(
            authorize(&rotated, &fresh, E, &lic, Scope::Enterprise),
            Ok(())
        );
    }
}
