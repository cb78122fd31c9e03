//! Ed25519 signatures on the wire (64 bytes, hex) and their strict verification against an
//! enterprise's active keys.

use ed25519_dalek::SIGNATURE_LENGTH;
use uuid::Uuid;

use super::PublicKey;

/// The id under which an enterprise registered a key; events record which key verified.
pub type KeyId = Uuid;

/// Why a `signature` field is not a well-formed signature (before any verification).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("signature is not valid hex")]
    NotHex,
    #[error("signature must be 64 bytes, got {bytes}")]
    WrongLength { bytes: usize },
}

impl SignatureError {
    /// One code for both: the partner's signer produced something that is not a signature.
    pub const fn code(&self) -> &'static str {
        match self {
            Self::NotHex | Self::WrongLength { .. } => "invalid_signature_format",
        }
    }
}

/// A well-formed 64-byte Ed25519 signature; whether it verifies is a separate question.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Signature(ed25519_dalek::Signature);

impl Signature {
    pub fn parse_hex(hex_signature: &str) -> Result<Self, SignatureError> {
        let bytes = hex::decode(hex_signature).map_err(|_| SignatureError::NotHex)?;
        let bytes: [u8; SIGNATURE_LENGTH] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SignatureError::WrongLength { bytes: bytes.len() })?;
        Ok(Self(ed25519_dalek::Signature::from_bytes(&bytes)))
    }

    /// Lower-case hex of the 64 bytes.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.to_bytes())
    }

    pub fn to_bytes(&self) -> [u8; SIGNATURE_LENGTH] {
        self.0.to_bytes()
    }
}

/// The id of the first key that verifies `signature` over the exact UTF-8 bytes of `payload`,
/// or `None`. Callers pass only *active* keys: a revoked key is simply absent.
///
/// Strict verification refuses non-canonical scalars and small-order components, so the
/// accepted set of signatures is the same for every strict verifier, now and at audit time.
pub fn verify(payload: &str, signature: &Signature, keys: &[(KeyId, PublicKey)]) -> Option<KeyId> {
    keys.iter()
        .find(|(_, key)| {
            key.verifying_key()
                .verify_strict(payload.as_bytes(), &signature.0)
                .is_ok()
        })
        .map(|(id, _)| *id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};
    use proptest::prelude::*;

    const PAYLOAD: &str = r#"{"externalId":"s-1","nonce":"n-1"}"#;

    fn signer(seed: u8) -> (KeyId, PublicKey, SigningKey) {
        let signing = SigningKey::from_bytes(&[seed; 32]);
        let public =
            PublicKey::parse_hex(&hex::encode(signing.verifying_key().as_bytes())).unwrap();
        (Uuid::from_u128(u128::from(seed)), public, signing)
    }

    fn sign(signing: &SigningKey, payload: &str) -> Signature {
        Signature::parse_hex(&hex::encode(signing.sign(payload.as_bytes()).to_bytes())).unwrap()
    }

    #[test]
    fn the_signing_key_verifies_and_is_named() {
        let (id_a, key_a, _) = signer(1);
        let (id_b, key_b, signing_b) = signer(2);
        let signature = sign(&signing_b, PAYLOAD);
        assert_eq!(
            verify(PAYLOAD, &signature, &[(id_a, key_a), (id_b, key_b)]),
            Some(id_b)
        );
    }

    #[test]
    fn a_tampered_payload_fails() {
        let (id, key, signing) = signer(1);
        let signature = sign(&signing, PAYLOAD);
        let tampered = PAYLOAD.replace("s-1", "s-2");
        assert_eq!(verify(&tampered, &signature, &[(id, key)]), None);
        // Whitespace is a byte like any other: the signature covers the exact string.
        let spaced = PAYLOAD.replace(',', ", ");
        assert_eq!(verify(&spaced, &signature, &[(id, key)]), None);
    }

    #[test]
    fn a_tampered_signature_fails() {
        let (id, key, signing) = signer(1);
        let mut bytes = sign(&signing, PAYLOAD).to_bytes();
        bytes[10] ^= 1;
        let signature = Signature::parse_hex(&hex::encode(bytes)).unwrap();
        assert_eq!(verify(PAYLOAD, &signature, &[(id, key)]), None);
    }

    #[test]
    fn a_wrong_or_revoked_key_fails() {
        let (id_a, key_a, signing_a) = signer(1);
        let (id_b, key_b, _) = signer(2);
        let signature = sign(&signing_a, PAYLOAD);
        assert_eq!(verify(PAYLOAD, &signature, &[(id_b, key_b)]), None);
        // Revoking key A means the caller no longer lists it.
        assert_eq!(verify(PAYLOAD, &signature, &[]), None);
        assert_eq!(
            verify(PAYLOAD, &signature, &[(id_b, key_b), (id_a, key_a)]),
            Some(id_a)
        );
    }

    #[test]
    fn malformed_signatures_are_format_errors() {
        assert_eq!(Signature::parse_hex("not hex"), Err(SignatureError::NotHex));
        assert_eq!(Signature::parse_hex("abc"), Err(SignatureError::NotHex));
        assert_eq!(
            Signature::parse_hex(&"ab".repeat(63)),
            Err(SignatureError::WrongLength { bytes: 63 })
        );
        assert_eq!(
            Signature::parse_hex(&"ab".repeat(65)),
            Err(SignatureError::WrongLength { bytes: 65 })
        );
        assert_eq!(SignatureError::NotHex.code(), "invalid_signature_format");
        let signature = Signature::parse_hex(&"AB".repeat(64)).unwrap();
        assert_eq!(signature.to_hex(), "ab".repeat(64));
    }

    proptest! {
        #[test]
        fn signatures_verify_exactly_their_payload(
            seed in any::<[u8; 32]>(),
            payload in ".{0,200}",
            other in ".{0,200}",
        ) {
            let signing = SigningKey::from_bytes(&seed);
            let public = PublicKey::parse_hex(&hex::encode(signing.verifying_key().as_bytes())).unwrap();
            let id = Uuid::from_u128(1);
            let signature = sign(&signing, &payload);
            let reparsed = Signature::parse_hex(&signature.to_hex()).unwrap();
            prop_assert_eq!(verify(&payload, &reparsed, &[(id, public)]), Some(id));
            prop_assert_eq!(verify(&other, &reparsed, &[(id, public)]).is_some(), other == payload);
        }
    }
}
