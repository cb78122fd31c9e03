//! Ed25519 public keys as an enterprise registers them: 32 bytes, hex-encoded, a valid curve
//! point, and not of small order.

use std::fmt;
use std::str::FromStr;

use ed25519_dalek::{VerifyingKey, PUBLIC_KEY_LENGTH};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a public key was refused at registration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("public key is not valid hex")]
    NotHex,
    #[error("public key must be 32 bytes, got {bytes}")]
    WrongLength { bytes: usize },
    #[error("public key is not a valid Ed25519 point")]
    NotAPoint,
    #[error("public key is weak (a small-order point): any signature could verify under it")]
    Weak,
}

impl KeyError {
    /// A stable snake_case code for the error body. Format problems share one code: the client
    /// fixes them the same way; a weak key is a different mistake (a real but unsafe key).
    pub const fn code(&self) -> &'static str {
        match self {
            Self::NotHex | Self::WrongLength { .. } | Self::NotAPoint => "invalid_public_key",
            Self::Weak => "weak_public_key",
        }
    }
}

/// An Ed25519 public key that passed every registration check. Parsed once, when loaded, so
/// each verification skips point decompression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses a hex-encoded 32-byte key, refusing non-points and small-order (weak) points.
    pub fn parse_hex(hex_key: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(hex_key).map_err(|_| KeyError::NotHex)?;
        let bytes: [u8; PUBLIC_KEY_LENGTH] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength { bytes: bytes.len() })?;
        Self::from_bytes(&bytes)
    }

    /// Checks 32 raw bytes (e.g. a key stored at registration) the same way.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LENGTH]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| KeyError::NotAPoint)?;
        if key.is_weak() {
            return Err(KeyError::Weak);
        }
        Ok(Self(key))
    }

    /// Lower-case hex of the 32 bytes, the form the admin API shows.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0.as_bytes())
    }

    pub fn as_bytes(&self) -> [u8; PUBLIC_KEY_LENGTH] {
        self.0.to_bytes()
    }

    pub(crate) const fn verifying_key(&self) -> &VerifyingKey {
        &self.0
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(hex_key: &str) -> Result<Self, KeyError> {
        Self::parse_hex(hex_key)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// On the wire (and in any serde format) a key is its hex string; deserializing runs every
/// registration check, so a `PublicKey` read back is as trustworthy as one just parsed.
impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let hex_key = String::deserialize(deserializer)?;
        Self::parse_hex(&hex_key).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    /// The identity point: the canonical small-order key.
    const IDENTITY: &str = "0100000000000000000000000000000000000000000000000000000000000000";
    /// A point of order 8 (from the curve's torsion subgroup).
    const ORDER_EIGHT: &str = "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a";

    fn real_key_hex() -> String {
        hex::encode(SigningKey::from_bytes(&[7; 32]).verifying_key().as_bytes())
    }

    #[test]
    fn a_real_key_round_trips() {
        let hex_key = real_key_hex();
        let key = PublicKey::parse_hex(&hex_key).unwrap();
        assert_eq!(key.to_hex(), hex_key);
        assert_eq!(hex::encode(key.as_bytes()), hex_key);
        assert_eq!(key, hex_key.to_uppercase().parse().unwrap());
    }

    #[test]
    fn small_order_keys_are_refused() {
        assert_eq!(PublicKey::parse_hex(IDENTITY), Err(KeyError::Weak));
        assert_eq!(PublicKey::parse_hex(ORDER_EIGHT), Err(KeyError::Weak));
        assert_eq!(KeyError::Weak.code(), "weak_public_key");
    }

    #[test]
    fn malformed_keys_are_named() {
        assert_eq!(PublicKey::parse_hex("zz"), Err(KeyError::NotHex));
        assert_eq!(PublicKey::parse_hex("abc"), Err(KeyError::NotHex));
        assert_eq!(
            PublicKey::parse_hex("abcd"),
            Err(KeyError::WrongLength { bytes: 2 })
        );
        let long = format!("{}00", real_key_hex());
        assert_eq!(
            PublicKey::parse_hex(&long),
            Err(KeyError::WrongLength { bytes: 33 })
        );
        // y = 2 is not the y-coordinate of any point on edwards25519.
        let not_a_point = format!("02{}", "00".repeat(31));
        assert_eq!(PublicKey::parse_hex(&not_a_point), Err(KeyError::NotAPoint));
        assert_eq!(KeyError::NotAPoint.code(), "invalid_public_key");
    }

    #[test]
    fn serde_form_is_hex_and_checked() {
        let hex_key = real_key_hex();
        let key: PublicKey = serde_json::from_value(serde_json::json!(hex_key)).unwrap();
        assert_eq!(
            serde_json::to_value(key).unwrap(),
            serde_json::json!(hex_key)
        );
        assert!(serde_json::from_value::<PublicKey>(serde_json::json!(IDENTITY)).is_err());
    }
}
