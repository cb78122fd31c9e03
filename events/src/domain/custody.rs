//! The custody account of an enterprise (its "Go account"): deposits in, allocations out to
//! connections and deallocations back. Balances per currency; never negative.

use super::limits::{self, LimitError, Lines, MAX_EXTERNAL_ID_BYTES};
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{DomainEvent, Timestamp};
use super::money::{Balance, CurrencyCode, MoneyError};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepositCredited {
    pub enterprise_id: Uuid,
    pub deposit_id: Uuid,
    pub external_id: String,
    pub currency: CurrencyCode,
    pub quantity: i128,
    pub at: Timestamp,
}

/// Funds leave custody for a connection's network account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyAllocated {
    pub enterprise_id: Uuid,
    pub allocation_id: Uuid,
    pub connection_id: Uuid,
    pub currency: CurrencyCode,
    pub quantity: i128,
    pub at: Timestamp,
}

/// Funds come back to custody from a connection's network account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustodyDeallocated {
    pub enterprise_id: Uuid,
    pub allocation_id: Uuid,
    pub connection_id: Uuid,
    pub currency: CurrencyCode,
    pub quantity: i128,
    pub at: Timestamp,
}

/// A deposit as recorded, for idempotency on its external id.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deposit {
    pub deposit_id: Uuid,
    pub currency: CurrencyCode,
    pub quantity: i128,
    pub at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Custody {
    pub balances: BTreeMap<CurrencyCode, Balance>,
    pub deposits: BTreeMap<String, Deposit>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DepositRejection {
    #[error("a deposit quantity must be positive")]
    NotPositive,
    #[error(transparent)]
    Input(#[from] LimitError),
    #[error("deposit {0} exists with a different currency or quantity")]
    ExistsWithDifferentAmount(String),
    #[error(transparent)]
    Money(#[from] MoneyError),
}

impl Custody {
    pub fn balance(&self, currency: &CurrencyCode) -> Balance {
        self.balances.get(currency).copied().unwrap_or_default()
    }

    /// Applies an event. Balance arithmetic was checked when the event was decided; an event
    /// that would break it leaves the balance as it was rather than panic.
    pub fn evolve(mut self, event: &DomainEvent) -> Self {
        let (currency, quantity, credit) = match event {
            DomainEvent::DepositCredited(e) => {
                let deposit = Deposit {
                    deposit_id: e.deposit_id,
                    currency: e.currency.clone(),
                    quantity: e.quantity,
                    at: e.at,
                };
                self.deposits.insert(e.external_id.clone(), deposit);
                (&e.currency, e.quantity, true)
            }
            DomainEvent::CustodyAllocated(e) => (&e.currency, e.quantity, false),
            DomainEvent::CustodyDeallocated(e) => (&e.currency, e.quantity, true),
            DomainEvent::CustodySettled(e) => (&e.currency, e.delta.saturating_abs(), e.delta > 0),
            _ => return self,
        };
        let balance = self.balance(currency);
        let next = if credit {
            balance.credit(quantity)
        } else {
            balance.debit(quantity)
        };
        if let Ok(next) = next {
            self.balances.insert(currency.clone(), next);
        }
        self
    }

    pub fn decide_deposit(
        &self,
        enterprise_id: Uuid,
        deposit_id: Uuid,
        external_id: &str,
        currency: CurrencyCode,
        quantity: i128,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, DepositRejection> {
        limits::text("externalId", external_id, MAX_EXTERNAL_ID_BYTES, Lines::One)?;
        if quantity <= 0 {
            return Err(DepositRejection::NotPositive);
        }
        if let Some(existing) = self.deposits.get(external_id) {
            if existing.currency == currency && existing.quantity == quantity {
                return Ok(vec![]);
            }
            return Err(DepositRejection::ExistsWithDifferentAmount(
                external_id.to_owned(),
            ));
        }
        self.balance(&currency).credit(quantity)?;
        Ok(vec![DepositCredited {
            enterprise_id,
            deposit_id,
            external_id: external_id.to_owned(),
            currency,
            quantity,
            at: now,
        }
        .into()])
    }
}
