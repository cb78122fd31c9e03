//! The command API over HTTP against the real local stack: SPEC §2 access rules, §4 signatures,
//! §3 money, read-your-writes, restarts, the error contract, and the process lifecycle.

mod admin_plane;
mod audit;
mod auth;
mod connections;
mod consistency;
mod disputes;
mod edge;
mod errors;
mod fuzz;
mod hostile;
mod lifecycle;
mod lifecycle_rules;
mod money;
mod settlements;
mod signatures;
mod support;
mod webhooks;
