//! Request signatures (docs/api/signatures.md): Ed25519 public keys and signatures, the canonical
//! payload a partner signs, and the parsing of a signed request body into what the command API
//! needs.
//!
//! Everything here is pure: no I/O, no clock. Verification is `verify_strict`, so a signature
//! accepted today stays accepted by any later strict verifier an auditor uses.
//!
//! *Must not know*: HTTP status codes (errors carry a stable `code()`; the HTTP layer maps them),
//! where keys or nonces are stored, or what a route does with its fields.

mod canonical;
pub mod checkpoint;
mod keys;
mod request;
mod signature;
pub mod webhook;

pub use canonical::{canonical_payload, payload_hash};
pub use keys::{KeyError, PublicKey};
pub use request::{signing_payload, SignedRequest, SigningError, NONCE_CHARS_MAX};
pub use signature::{verify, KeyId, Signature, SignatureError};
