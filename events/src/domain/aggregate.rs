//! The folded state of one stream, whatever its category: what a decision starts from, and what
//! the store keeps as a snapshot so a decision need not replay a stream from its first event.
//!
//! Invariant: for every stream, `State::fold(category, events)` over a prefix, evolved with the
//! rest, equals the fold over the whole stream. Each aggregate's `evolve` is a pure left fold, so
//! this holds by construction; `tests/it/snapshots.rs` checks the decisions that follow.

use serde::{Deserialize, Serialize};

use super::client::Client;
use super::connection::Connection;
use super::custody::Custody;
use super::enterprise::Enterprise;
use super::partner::Partner;
use super::settlement::Settlement;
use super::user::User;
use super::DomainEvent;

/// Version of the encoded form of [`State`] (postcard of every aggregate's state types). A stored
/// snapshot of another version is ignored and the stream replayed. Bump it whenever a state type
/// changes shape; `tests/it/golden.rs` pins the encoding so a change cannot go unnoticed.
pub const STATE_SCHEMA: u16 = 1;

/// Every category an aggregate folds, in the order of [`State`]'s variants.
pub const CATEGORIES: [&str; 7] = [
    User::CATEGORY,
    Enterprise::CATEGORY,
    Partner::CATEGORY,
    Client::CATEGORY,
    Custody::CATEGORY,
    Connection::CATEGORY,
    Settlement::CATEGORY,
];

/// The state of one stream, by the category it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    User(User),
    Enterprise(Enterprise),
    Partner(Partner),
    Client(Client),
    Custody(Custody),
    Connection(Connection),
    Settlement(Settlement),
    /// A category no aggregate folds: its events decide nothing.
    Unfolded,
}

impl State {
    /// The state of a stream of `category` before its first event.
    pub fn initial(category: &str) -> Self {
        match category {
            User::CATEGORY => Self::User(User::default()),
            Enterprise::CATEGORY => Self::Enterprise(Enterprise::default()),
            Partner::CATEGORY => Self::Partner(Partner::default()),
            Client::CATEGORY => Self::Client(Client::default()),
            Custody::CATEGORY => Self::Custody(Custody::default()),
            Connection::CATEGORY => Self::Connection(Connection::default()),
            Settlement::CATEGORY => Self::Settlement(Settlement::default()),
            _ => Self::Unfolded,
        }
    }

    /// The state after `event`.
    pub fn evolve(self, event: &DomainEvent) -> Self {
        match self {
            Self::User(s) => Self::User(s.evolve(event)),
            Self::Enterprise(s) => Self::Enterprise(s.evolve(event)),
            Self::Partner(s) => Self::Partner(s.evolve(event)),
            Self::Client(s) => Self::Client(s.evolve(event)),
            Self::Custody(s) => Self::Custody(s.evolve(event)),
            Self::Connection(s) => Self::Connection(s.evolve(event)),
            Self::Settlement(s) => Self::Settlement(s.evolve(event)),
            Self::Unfolded => Self::Unfolded,
        }
    }

    /// A whole stream of `category`, folded.
    pub fn fold<'a>(category: &str, events: impl IntoIterator<Item = &'a DomainEvent>) -> Self {
        events
            .into_iter()
            .fold(Self::initial(category), Self::evolve)
    }

    /// The encoded form a snapshot stores (version [`STATE_SCHEMA`]).
    pub fn encode(&self) -> Vec<u8> {
        // Every state type is plain data, which postcard always encodes.
        postcard::to_stdvec(self).unwrap_or_default()
    }

    /// A stored snapshot's state; `None` when it does not decode (it is then replayed instead).
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes(bytes).ok()
    }

    /// Bytes the state takes encoded: the weight a bounded cache charges for it.
    pub fn weight(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }
}

/// An aggregate: the state a stream of one category folds into.
pub trait Aggregate: Clone + Default {
    /// The category of the streams it folds.
    const CATEGORY: &'static str;
    /// The state after `event` (a pure left fold).
    fn evolve(self, event: &DomainEvent) -> Self;
    /// This aggregate, if `state` is one.
    fn of(state: &State) -> Option<&Self>;
}

macro_rules! aggregates {
    ($($ty:ident => $category:literal),* $(,)?) => {$(
        impl Aggregate for $ty {
            const CATEGORY: &'static str = $category;
            fn evolve(self, event: &DomainEvent) -> Self {
                $ty::evolve(self, event)
            }
            fn of(state: &State) -> Option<&Self> {
                match state {
                    State::$ty(s) => Some(s),
                    _ => None,
                }
            }
        }
    )*};
}

aggregates! {
    User => "user",
    Enterprise => "enterprise",
    Partner => "partner",
    Client => "client",
    Custody => "custody",
    Connection => "connection",
    Settlement => "settlement",
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::stream::of;

    #[test]
    fn every_stream_category_has_its_aggregate() {
        let id = uuid::Uuid::nil();
        for (stream, expected) in [
            (of::user(id), State::User(User::default())),
            (of::enterprise(id), State::Enterprise(Enterprise::default())),
            (of::partner(id), State::Partner(Partner::default())),
            (of::client(id), State::Client(Client::default())),
            (of::custody(id), State::Custody(Custody::default())),
            (of::connection(id), State::Connection(Connection::default())),
            (of::settlement(id), State::Settlement(Settlement::default())),
        ] {
            assert_eq!(State::initial(stream.category()), expected, "{stream}");
        }
        assert_eq!(State::initial("other"), State::Unfolded);
    }

    #[test]
    fn an_initial_state_round_trips_its_encoding() {
        for category in CATEGORIES {
            let state = State::initial(category);
            assert_eq!(State::decode(&state.encode()), Some(state.clone()));
            assert_eq!(state.weight(), state.encode().len());
        }
    }
}
