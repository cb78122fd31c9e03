//! The pure domain: ids, stream names, money, the event vocabulary and the aggregates. No I/O, clock or randomness here:
//! time and new ids arrive as arguments.

pub mod access;
pub mod aggregate;
pub mod audit;
pub mod client;
pub mod connection;
pub mod connection_key;
pub mod custody;
pub mod dispute;
pub mod enterprise;
pub mod event;
#[cfg(test)]
mod fixtures;
pub mod ids;
pub mod limits;
pub mod money;
pub mod partner;
pub mod settlement;
pub mod signed;
pub mod stream;
pub mod user;
pub mod webhook_url;

pub use aggregate::{Aggregate, State};
pub use event::DomainEvent;
pub use ids::{event_id, CommandId};
pub use stream::{StreamName, StreamNameError};
