//! The pure domain: ids, stream names and the event vocabulary. No I/O, clock or randomness here:
//! time and new ids arrive as arguments.

pub mod enterprise;
pub mod event;
pub mod ids;
pub mod stream;

pub use event::DomainEvent;
pub use ids::{event_id, CommandId};
pub use stream::{StreamName, StreamNameError};
