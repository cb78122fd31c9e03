//! Signed checkpoints of the event log, as transparency logs publish them: the engine's audit key
//! (Ed25519) signs a short text note naming the log's head — position, chain hash and time — so
//! an auditor who keeps a note can later prove that the log still extends it, whoever controls
//! the database by then. Pure: the seed arrives as text, the time as a string.
//!
//! The note (UTF-8, every line ending in `\n`, signed exactly as these bytes):
//! ```text
//! settle-engine audit checkpoint v1
//! position 1234
//! hash 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//! time 2026-01-01T00:00:00.000000Z
//! ```

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::webhook::{KeySource, DEVELOPMENT_ENV};

/// The configuration name of the audit key's seed (command-api).
pub const AUDIT_SEED_ENV: &str = "SETTLE_AUDIT_SEED";
/// Hex characters of a seed: 32 bytes.
pub const AUDIT_SEED_HEX_LEN: usize = 64;
/// What the development audit seed is derived from (SHA-256 of this text): public on purpose.
pub const DEVELOPMENT_AUDIT_SEED_LABEL: &str = "settle-engine development audit signing seed v1";
/// The first line of every checkpoint note: names the format, so a note cannot be mistaken for
/// anything else this key might ever sign.
pub const CHECKPOINT_ORIGIN: &str = "settle-engine audit checkpoint v1";

/// Why a configured audit seed was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuditKeyError {
    #[error("the audit seed must be {AUDIT_SEED_HEX_LEN} hex characters (32 bytes)")]
    BadSeed,
    #[error(
        "{AUDIT_SEED_ENV} is not set: set it to {AUDIT_SEED_HEX_LEN} hex characters (a secret \
         32-byte Ed25519 seed, e.g. the \"seed\" of `command-api keygen`), or run with \
         {DEVELOPMENT_ENV}=1 (--development) to sign checkpoints with the public development key"
    )]
    SeedMissing,
}

/// Why a note is not a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint note is malformed: {0}")]
    Malformed(&'static str),
}

/// The head of the log at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub position: u64,
    pub hash: [u8; 32],
    /// RFC 3339 UTC, as the signer wrote it.
    pub time: String,
}

impl Checkpoint {
    /// The exact text that is signed.
    pub fn note(&self) -> String {
        format!(
            "{CHECKPOINT_ORIGIN}\nposition {}\nhash {}\ntime {}\n",
            self.position,
            hex::encode(self.hash),
            self.time
        )
    }

    /// Reads a note back; anything but the exact format is refused (a note is compared by its
    /// bytes, so there is one spelling of each checkpoint).
    pub fn parse_note(note: &str) -> Result<Self, CheckpointError> {
        let body = note
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("it must end with a newline"))?;
        let lines: Vec<&str> = body.split('\n').collect();
        let [origin, position, hash, time] = lines.as_slice() else {
            return Err(CheckpointError::Malformed("it must have four lines"));
        };
        if *origin != CHECKPOINT_ORIGIN {
            return Err(CheckpointError::Malformed("unknown origin line"));
        }
        let position = position
            .strip_prefix("position ")
            .and_then(|p| p.parse::<u64>().ok())
            .ok_or(CheckpointError::Malformed("bad position line"))?;
        let hash = hash
            .strip_prefix("hash ")
            .and_then(|h| hex::decode(h).ok())
            .and_then(|h| <[u8; 32]>::try_from(h.as_slice()).ok())
            .ok_or(CheckpointError::Malformed("bad hash line"))?;
        let time = time
            .strip_prefix("time ")
            .filter(|t| !t.is_empty() && !t.contains(char::is_whitespace))
            .ok_or(CheckpointError::Malformed("bad time line"))?;
        let checkpoint = Self {
            position,
            hash,
            time: time.to_owned(),
        };
        if checkpoint.note() != note {
            return Err(CheckpointError::Malformed(
                "not in its one canonical spelling",
            ));
        }
        Ok(checkpoint)
    }
}

/// The engine's audit key. Its `Debug` shows the public key only.
#[derive(Clone)]
pub struct AuditSigner {
    key: SigningKey,
}

impl std::fmt::Debug for AuditSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditSigner")
            .field("public_key", &self.public_key_hex())
            .finish()
    }
}

impl AuditSigner {
    pub fn from_seed_hex(seed: &str) -> Result<Self, AuditKeyError> {
        let bytes = hex::decode(seed.trim()).map_err(|_| AuditKeyError::BadSeed)?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| AuditKeyError::BadSeed)?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The development key: derived from `DEVELOPMENT_AUDIT_SEED_LABEL`, the same everywhere.
    pub fn development() -> Self {
        let seed: [u8; 32] = Sha256::digest(DEVELOPMENT_AUDIT_SEED_LABEL.as_bytes()).into();
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The configured key; without one, the development key in development mode and a refusal
    /// otherwise — the rule of the webhook seed (ADR 0007).
    pub fn from_config(
        seed: Option<&str>,
        development: bool,
    ) -> Result<(Self, KeySource), AuditKeyError> {
        match seed.map(str::trim).filter(|s| !s.is_empty()) {
            Some(seed) => Ok((Self::from_seed_hex(seed)?, KeySource::Configured)),
            None if development => Ok((Self::development(), KeySource::Development)),
            None => Err(AuditKeyError::SeedMissing),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    /// The hex signature of the checkpoint's note.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        hex::encode(self.key.sign(checkpoint.note().as_bytes()).to_bytes())
    }
}

/// Whether `signature_hex` is a strict Ed25519 signature of `note` under `public_key`.
pub fn verify_note(public_key: &[u8; 32], note: &str, signature_hex: &str) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let Some(signature) = hex::decode(signature_hex)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
    else {
        return false;
    };
    key.verify_strict(note.as_bytes(), &signature).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            position: 42,
            hash: [7; 32],
            time: "2026-01-01T00:00:00.000000Z".into(),
        }
    }

    #[test]
    fn a_signed_note_verifies_and_any_change_does_not() {
        let signer = AuditSigner::from_seed_hex(SEED).expect("seed");
        let c = checkpoint();
        let signature = signer.sign(&c);
        let public = signer.public_key();
        assert!(verify_note(&public, &c.note(), &signature));
        assert_eq!(Checkpoint::parse_note(&c.note()), Ok(c.clone()));
        let moved = Checkpoint {
            position: 43,
            ..c.clone()
        };
        assert!(!verify_note(&public, &moved.note(), &signature));
        let rehashed = Checkpoint {
            hash: [8; 32],
            ..c.clone()
        };
        assert!(!verify_note(&public, &rehashed.note(), &signature));
        let other = AuditSigner::development().public_key();
        assert!(!verify_note(&other, &c.note(), &signature));
        assert!(!verify_note(&public, &c.note(), "zz"));
    }

    #[test]
    fn notes_have_one_spelling() {
        let note = checkpoint().note();
        for bad in [
            note.trim_end().to_owned(),
            note.replace("position 42", "position 042"),
            note.replace("position 42", "position  42"),
            note.replace(CHECKPOINT_ORIGIN, "other log"),
            note.replace("hash 07", "hash 7"),
            format!("{note}extra\n"),
            note.replace("time 2026-01-01T00:00:00.000000Z", "time "),
        ] {
            assert!(Checkpoint::parse_note(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_seed_is_required_outside_development_mode() {
        assert_eq!(
            AuditSigner::from_config(None, false).map(|(_, s)| s),
            Err(AuditKeyError::SeedMissing)
        );
        assert!(AuditKeyError::SeedMissing
            .to_string()
            .contains("SETTLE_AUDIT_SEED"));
        assert_eq!(
            AuditSigner::from_config(Some("abc"), true).map(|(_, s)| s),
            Err(AuditKeyError::BadSeed)
        );
        let (dev, source) = AuditSigner::from_config(None, true).expect("dev");
        assert_eq!(source, KeySource::Development);
        assert_eq!(dev.public_key(), AuditSigner::development().public_key());
        let (configured, source) = AuditSigner::from_config(Some(SEED), true).expect("seed");
        assert_eq!(source, KeySource::Configured);
        assert_ne!(configured.public_key(), dev.public_key());
        // Not the webhook development key: the two keys sign different things.
        assert_ne!(
            dev.public_key(),
            super::super::webhook::WebhookSigner::development().public_key()
        );
    }
}
