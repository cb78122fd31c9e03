//! The partner aggregate: an exchange or broker record of an enterprise (docs/api/guide.md,
//! "Partner"), with its dispute and top-up window lengths and the amount format it writes
//! instructions in. A partner's id is derived from its enterprise's (one partner record per
//! enterprise). It also chooses the shape of connection key its clients present
//! (`connectionKeySchema`, ADR 0011).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::connection_key::ConnectionKeySchema;
use super::dispute::CarriedClosure;
use super::event::{DomainEvent, Timestamp};
use super::money::AmountFormat;

use super::limits::{self, LimitError, Lines, MAX_NAME_BYTES};

/// Longest window, in minutes (one year).
pub const WINDOW_MINUTES_MAX: u32 = 525_600;

/// A window length in minutes, ≥ 0, fractions allowed (0.05 is three seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowMinutes(#[serde(with = "rust_decimal::serde::str")] Decimal);

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("a window length is a number of minutes from 0 to {WINDOW_MINUTES_MAX}")]
    OutOfRange,
}

impl WindowMinutes {
    pub fn parse(minutes: Decimal) -> Result<Self, WindowError> {
        if minutes.is_sign_negative() && !minutes.is_zero()
            || minutes > Decimal::from(WINDOW_MINUTES_MAX)
        {
            return Err(WindowError::OutOfRange);
        }
        Ok(Self(minutes.normalize()))
    }

    pub fn minutes(&self) -> Decimal {
        self.0
    }

    /// The length in whole microseconds (fractions of a microsecond are dropped).
    pub fn micros(&self) -> i64 {
        use rust_decimal::prelude::ToPrimitive;
        (self.0 * Decimal::from(60_000_000u32))
            .trunc()
            .to_i64()
            .unwrap_or(i64::MAX)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRegistered {
    pub partner_id: Uuid,
    pub enterprise_id: Uuid,
    pub name: String,
    pub broker: bool,
    pub client_dispute_window: Option<WindowMinutes>,
    pub top_up_window: Option<WindowMinutes>,
    pub amount_format: AmountFormat,
    pub at: Timestamp,
    /// The shape of connection key the partner takes (v2). `None` only in events recorded
    /// before v2, when every partner took a plain token: read as `token`.
    pub connection_key_schema: Option<ConnectionKeySchema>,
}

/// A v2 settlement was staged with this `cutoffAt`: the next one must be later
/// (docs/api/lifecycle.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerCutoffAdvanced {
    pub partner_id: Uuid,
    pub settlement_id: Uuid,
    pub cutoff_at: Timestamp,
    pub at: Timestamp,
}

/// Only the fields that changed are `Some`; a window set to "none" is `Some(None)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerUpdated {
    pub partner_id: Uuid,
    pub active: Option<bool>,
    pub client_dispute_window: Option<Option<WindowMinutes>>,
    pub top_up_window: Option<Option<WindowMinutes>>,
    pub at: Timestamp,
    /// A new connection key schema (v2; `None` when unchanged, and in every v1 event).
    pub connection_key_schema: Option<ConnectionKeySchema>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartnerRecord {
    pub id: Uuid,
    pub enterprise_id: Uuid,
    pub name: String,
    pub broker: bool,
    pub active: bool,
    pub client_dispute_window: Option<WindowMinutes>,
    pub top_up_window: Option<WindowMinutes>,
    pub amount_format: AmountFormat,
    /// The shape of connection key new connections must present; existing connections keep
    /// the key they were made with.
    pub connection_key_schema: ConnectionKeySchema,
    /// `cutoffAt` of the latest v2 settlement.
    pub last_cutoff: Option<Timestamp>,
    /// Closed disputes whose transfers wait for the next v2 settlement, by dispute id.
    pub pending_closures: BTreeMap<Uuid, CarriedClosure>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Partner {
    #[default]
    Absent,
    Present(PartnerRecord),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PartnerCommand {
    Register {
        partner_id: Uuid,
        enterprise_id: Uuid,
        name: String,
        broker: bool,
        client_dispute_window: Option<WindowMinutes>,
        top_up_window: Option<WindowMinutes>,
        amount_format: AmountFormat,
        connection_key_schema: ConnectionKeySchema,
    },
    Update {
        active: Option<bool>,
        client_dispute_window: Option<Option<WindowMinutes>>,
        top_up_window: Option<Option<WindowMinutes>>,
        connection_key_schema: Option<ConnectionKeySchema>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PartnerRejection {
    #[error("the enterprise already has a partner record")]
    AlreadyExists,
    #[error("the partner does not exist")]
    NotFound,
    #[error(transparent)]
    Input(#[from] LimitError),
}

/// The id of the partner record of `enterprise_id`.
pub fn partner_id_of(enterprise_id: Uuid) -> Uuid {
    Uuid::new_v5(&enterprise_id, b"partner")
}

impl Partner {
    pub fn record(&self) -> Option<&PartnerRecord> {
        match self {
            Self::Absent => None,
            Self::Present(r) => Some(r),
        }
    }

    /// Disputes are enabled exactly when the dispute window is set (docs/api/guide.md, "Partner").
    pub fn disputes_enabled(&self) -> bool {
        self.record()
            .is_some_and(|r| r.client_dispute_window.is_some())
    }

    pub fn evolve(self, event: &DomainEvent) -> Self {
        match (self, event) {
            (Self::Absent, DomainEvent::PartnerRegistered(e)) => Self::Present(PartnerRecord {
                id: e.partner_id,
                enterprise_id: e.enterprise_id,
                name: e.name.clone(),
                broker: e.broker,
                active: true,
                client_dispute_window: e.client_dispute_window,
                top_up_window: e.top_up_window,
                amount_format: e.amount_format,
                connection_key_schema: e.connection_key_schema.unwrap_or_default(),
                last_cutoff: None,
                pending_closures: BTreeMap::new(),
                created_at: e.at,
                updated_at: e.at,
            }),
            (Self::Present(mut r), DomainEvent::PartnerCutoffAdvanced(e)) => {
                r.last_cutoff = Some(e.cutoff_at);
                Self::Present(r)
            }
            (Self::Present(mut r), DomainEvent::ClosureQueued(e)) => {
                r.pending_closures
                    .insert(e.closure.dispute_id, e.closure.clone());
                Self::Present(r)
            }
            (Self::Present(mut r), DomainEvent::ClosuresAssigned(e)) => {
                for id in &e.dispute_ids {
                    r.pending_closures.remove(id);
                }
                Self::Present(r)
            }
            (Self::Present(mut r), DomainEvent::PartnerUpdated(e)) => {
                r.active = e.active.unwrap_or(r.active);
                r.client_dispute_window =
                    e.client_dispute_window.unwrap_or(r.client_dispute_window);
                r.top_up_window = e.top_up_window.unwrap_or(r.top_up_window);
                r.connection_key_schema =
                    e.connection_key_schema.unwrap_or(r.connection_key_schema);
                r.updated_at = e.at;
                Self::Present(r)
            }
            (state, _) => state,
        }
    }

    pub fn decide(
        &self,
        command: PartnerCommand,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, PartnerRejection> {
        match (self, command) {
            (Self::Present(_), PartnerCommand::Register { .. }) => {
                Err(PartnerRejection::AlreadyExists)
            }
            (Self::Absent, PartnerCommand::Update { .. }) => Err(PartnerRejection::NotFound),
            (
                Self::Absent,
                PartnerCommand::Register {
                    partner_id,
                    enterprise_id,
                    name,
                    broker,
                    client_dispute_window,
                    top_up_window,
                    amount_format,
                    connection_key_schema,
                },
            ) => {
                limits::text("name", &name, MAX_NAME_BYTES, Lines::One)?;
                let name = name.trim().to_owned();
                Ok(vec![PartnerRegistered {
                    partner_id,
                    enterprise_id,
                    name,
                    broker,
                    client_dispute_window,
                    top_up_window,
                    amount_format,
                    at: now,
                    connection_key_schema: Some(connection_key_schema),
                }
                .into()])
            }
            (
                Self::Present(r),
                PartnerCommand::Update {
                    active,
                    client_dispute_window,
                    top_up_window,
                    connection_key_schema,
                },
            ) => {
                // Only what actually changes is recorded; an update that changes nothing records nothing.
                let active = active.filter(|a| *a != r.active);
                let client_dispute_window =
                    client_dispute_window.filter(|w| *w != r.client_dispute_window);
                let top_up_window = top_up_window.filter(|w| *w != r.top_up_window);
                let connection_key_schema =
                    connection_key_schema.filter(|s| *s != r.connection_key_schema);
                if active.is_none()
                    && client_dispute_window.is_none()
                    && top_up_window.is_none()
                    && connection_key_schema.is_none()
                {
                    return Ok(vec![]);
                }
                Ok(vec![PartnerUpdated {
                    partner_id: r.id,
                    active,
                    client_dispute_window,
                    top_up_window,
                    at: now,
                    connection_key_schema,
                }
                .into()])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timestamp = Timestamp(10);

    fn registered(schema: ConnectionKeySchema) -> Partner {
        let events = Partner::Absent
            .decide(
                PartnerCommand::Register {
                    partner_id: Uuid::from_u128(1),
                    enterprise_id: Uuid::from_u128(2),
                    name: "p".into(),
                    broker: false,
                    client_dispute_window: None,
                    top_up_window: None,
                    amount_format: AmountFormat::BaseUnits,
                    connection_key_schema: schema,
                },
                T,
            )
            .unwrap();
        events.iter().fold(Partner::Absent, Partner::evolve)
    }

    fn update(schema: Option<ConnectionKeySchema>) -> PartnerCommand {
        PartnerCommand::Update {
            active: None,
            client_dispute_window: None,
            top_up_window: None,
            connection_key_schema: schema,
        }
    }

    fn schema_of(p: &Partner) -> ConnectionKeySchema {
        p.record().expect("registered").connection_key_schema
    }

    #[test]
    fn the_connection_key_schema_is_set_at_registration_and_changed_by_updates() {
        let p = registered(ConnectionKeySchema::ApiKeyAndSecret);
        assert_eq!(schema_of(&p), ConnectionKeySchema::ApiKeyAndSecret);
        let events = p
            .decide(update(Some(ConnectionKeySchema::Clearloop)), Timestamp(11))
            .unwrap();
        let p = events.iter().fold(p, Partner::evolve);
        assert_eq!(schema_of(&p), ConnectionKeySchema::Clearloop);
        assert_eq!(p.record().unwrap().updated_at, Timestamp(11));
        assert_eq!(
            p.decide(update(Some(ConnectionKeySchema::Clearloop)), T),
            Ok(vec![]),
            "no change, no event"
        );
        assert_eq!(p.decide(update(None), T), Ok(vec![]));
    }

    #[test]
    fn a_partner_registered_without_a_schema_takes_tokens() {
        let p = Partner::Absent.evolve(
            &PartnerRegistered {
                partner_id: Uuid::from_u128(1),
                enterprise_id: Uuid::from_u128(2),
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
        assert_eq!(schema_of(&p), ConnectionKeySchema::Token);
        // An update that does not name the schema keeps it.
        let p = p.evolve(
            &PartnerUpdated {
                partner_id: Uuid::from_u128(1),
                active: Some(false),
                client_dispute_window: None,
                top_up_window: None,
                at: T,
                connection_key_schema: None,
            }
            .into(),
        );
        assert_eq!(schema_of(&p), ConnectionKeySchema::Token);
    }
}
