//! Webhook signatures (Standard Webhooks, asymmetric scheme `v1a`): the engine signs
//! `"{webhook-id}.{webhook-timestamp}.{body}"` with its Ed25519 key and sends
//! `webhook-signature: v1a,<base64 signature>`; receivers verify with the public key the admin API
//! shows. Pure: the seed arrives as text, the timestamp as a number.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// The signature scheme's name, the prefix of every `webhook-signature` entry.
pub const WEBHOOK_SCHEME: &str = "v1a";
/// The configuration name of the seed, the same in every process that needs the key.
pub const WEBHOOK_SEED_ENV: &str = "SETTLE_WEBHOOK_SEED";
/// The configuration name of development mode, in which a missing seed means the public
/// development key instead of a refusal to start.
pub const DEVELOPMENT_ENV: &str = "SETTLE_DEVELOPMENT";
/// Hex characters of a seed: 32 bytes.
pub const WEBHOOK_SEED_HEX_LEN: usize = 64;
/// What the development seed is derived from (SHA-256 of this text). Public on purpose: a key
/// anyone can rebuild is only for local stacks and tests.
pub const DEVELOPMENT_SEED_LABEL: &str = "settle-engine development webhook signing seed v1";

/// Why a configured seed was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookKeyError {
    #[error("the webhook seed must be {WEBHOOK_SEED_HEX_LEN} hex characters (32 bytes)")]
    BadSeed,
    #[error(
        "{WEBHOOK_SEED_ENV} is not set: set it to {WEBHOOK_SEED_HEX_LEN} hex characters (a secret \
         32-byte Ed25519 seed, e.g. the \"seed\" of `command-api keygen`), or run with \
         {DEVELOPMENT_ENV}=1 (--development) to sign with the public development key"
    )]
    SeedMissing,
}

/// Where the signing key came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    Configured,
    /// No seed was configured: the well-known development key (warn about it).
    Development,
}

/// The engine's webhook signing key. Its `Debug` shows the public key only.
#[derive(Clone)]
pub struct WebhookSigner {
    key: SigningKey,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSigner")
            .field("public_key", &self.public_key_hex())
            .finish()
    }
}

impl WebhookSigner {
    /// A key from a 64-hex-character seed.
    pub fn from_seed_hex(seed: &str) -> Result<Self, WebhookKeyError> {
        let bytes = hex::decode(seed.trim()).map_err(|_| WebhookKeyError::BadSeed)?;
        let seed: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| WebhookKeyError::BadSeed)?;
        Ok(Self {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The development key: derived from `DEVELOPMENT_SEED_LABEL`, the same everywhere.
    pub fn development() -> Self {
        let seed: [u8; 32] = Sha256::digest(DEVELOPMENT_SEED_LABEL.as_bytes()).into();
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// The configured key; with no seed (or an empty one), the development key in development
    /// mode and a refusal otherwise. A configured seed wins in development mode too.
    pub fn from_config(
        seed: Option<&str>,
        development: bool,
    ) -> Result<(Self, KeySource), WebhookKeyError> {
        match seed.map(str::trim).filter(|s| !s.is_empty()) {
            Some(seed) => Ok((Self::from_seed_hex(seed)?, KeySource::Configured)),
            None if development => Ok((Self::development(), KeySource::Development)),
            None => Err(WebhookKeyError::SeedMissing),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Lower-case hex of the public key, as the admin API shows it.
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public_key())
    }

    /// The `webhook-signature` header value for one delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let signature = self.key.sign(&signed_content(id, timestamp, body));
        format!("{WEBHOOK_SCHEME},{}", BASE64.encode(signature.to_bytes()))
    }
}

/// The bytes that are signed: `"{id}.{timestamp}.{body}"`.
pub fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let prefix = format!("{id}.{timestamp}.");
    let mut content = Vec::with_capacity(prefix.len() + body.len());
    content.extend_from_slice(prefix.as_bytes());
    content.extend_from_slice(body);
    content
}

/// Whether any `v1a` entry of a `webhook-signature` header (space-separated entries, as
/// Standard Webhooks allows during key rotation) verifies strictly under `public_key`.
pub fn verify_webhook(
    public_key: &[u8; 32],
    id: &str,
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> bool {
    let Ok(key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    let content = signed_content(id, timestamp, body);
    header.split(' ').any(|entry| {
        entry
            .strip_prefix(WEBHOOK_SCHEME)
            .and_then(|rest| rest.strip_prefix(','))
            .and_then(|b64| BASE64.decode(b64).ok())
            .and_then(|bytes| Signature::from_slice(&bytes).ok())
            .is_some_and(|signature| key.verify_strict(&content, &signature).is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";

    #[test]
    fn signs_id_timestamp_and_body_with_the_v1a_scheme() {
        let signer = WebhookSigner::from_seed_hex(SEED).expect("seed");
        // RFC 8032 test 1: this seed's public key.
        assert_eq!(
            signer.public_key_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let body = br#"{"type":"settlement.staged"}"#;
        let header = signer.sign("msg_1", 1_767_225_600, body);
        let b64 = header.strip_prefix("v1a,").expect("scheme prefix");
        let bytes = BASE64.decode(b64).expect("base64");
        assert_eq!(bytes.len(), 64);
        // Ed25519 is deterministic: the same input signs to the same bytes.
        assert_eq!(header, signer.sign("msg_1", 1_767_225_600, body));
        // The signature is over exactly "{id}.{timestamp}.{body}".
        let signature = Signature::from_slice(&bytes).expect("64 bytes");
        let key = VerifyingKey::from_bytes(&signer.public_key()).expect("key");
        let content = br#"msg_1.1767225600.{"type":"settlement.staged"}"#;
        assert!(key.verify_strict(content, &signature).is_ok());
        assert_eq!(
            signed_content("msg_1", 1_767_225_600, body),
            content.to_vec()
        );

        let public = signer.public_key();
        assert!(verify_webhook(
            &public,
            "msg_1",
            1_767_225_600,
            body,
            &header
        ));
        let rotated = format!("v1a,{} {header}", BASE64.encode([0u8; 64]));
        assert!(verify_webhook(
            &public,
            "msg_1",
            1_767_225_600,
            body,
            &rotated
        ));
        for (id, ts, body, header) in [
            ("msg_2", 1_767_225_600, &body[..], header.as_str()),
            ("msg_1", 1_767_225_601, &body[..], header.as_str()),
            ("msg_1", 1_767_225_600, &b"{}"[..], header.as_str()),
            (
                "msg_1",
                1_767_225_600,
                &body[..],
                &header.replacen("v1a", "v1", 1),
            ),
            ("msg_1", 1_767_225_600, &body[..], "v1a,not-base64!"),
        ] {
            assert!(
                !verify_webhook(&public, id, ts, body, header),
                "{id} {ts} {header}"
            );
        }
    }

    #[test]
    fn seeds_are_64_hex_characters_and_the_development_key_is_fixed() {
        for bad in [
            "",
            "abc",
            &SEED[..62],
            &format!("{SEED}00"),
            &SEED.replace('9', "g"),
        ] {
            assert_eq!(
                WebhookSigner::from_seed_hex(bad).map(|_| ()),
                Err(WebhookKeyError::BadSeed),
                "{bad}"
            );
        }
        let (configured, source) = WebhookSigner::from_config(Some(SEED), false).expect("seed");
        assert_eq!(source, KeySource::Configured);
        assert_eq!(
            configured.public_key_hex(),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            WebhookSigner::from_config(Some(SEED), true).map(|(_, s)| s),
            Ok(KeySource::Configured),
            "a seed wins in development mode"
        );
        for missing in [None, Some(""), Some("  ")] {
            let refused = WebhookSigner::from_config(missing, false).map(|(_, s)| s);
            assert_eq!(refused, Err(WebhookKeyError::SeedMissing));
        }
        assert!(WebhookKeyError::SeedMissing
            .to_string()
            .contains("SETTLE_WEBHOOK_SEED"));
        let (dev, source) = WebhookSigner::from_config(Some("  "), true).expect("dev");
        assert_eq!(source, KeySource::Development);
        assert_eq!(dev.public_key(), WebhookSigner::development().public_key());
        assert_ne!(dev.public_key(), configured.public_key());
        assert!(!format!("{dev:?}").contains(&hex::encode(Sha256::digest(DEVELOPMENT_SEED_LABEL))));
    }
}
