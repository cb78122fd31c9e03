//! The command API over HTTP against the real local stack: access rules, signatures,
//! money (docs/api/), read-your-writes, restarts, the error contract, and the process lifecycle.

mod admin_plane;
mod audit;
mod auth;
mod connection_keys;
mod connections;
mod consistency;
mod console;
mod contract;
mod disputes;
mod edge;
mod errors;
mod fuzz;
mod hostile;
mod lifecycle;
mod lifecycle_rules;
mod money;
mod replies;
mod settlements;
mod signatures;
mod support;
mod webhooks;
