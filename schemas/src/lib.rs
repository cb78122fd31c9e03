//! Contracts with the outside world: the SQL schema (migrations) of the event store, read models
//! and operational tables; later also the HTTP types and signing rules.

pub mod signing;

/// Every migration, embedded; each process applies them at start (sqlx takes a lock, so
/// concurrent starts are safe).
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
