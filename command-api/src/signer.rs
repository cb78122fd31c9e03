//! A partner's signer, for the command line: key generation and signing of canonical payloads
//! (the strings the `…/signing` routes return), exactly as docs/api/signatures.md describes.

use anyhow::{bail, Context};
use ed25519_dalek::{Signer, SigningKey};
use rand::RngCore;
use serde_json::json;

/// A new key: its secret seed and public key, as hex JSON.
pub fn keygen() -> serde_json::Value {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = SigningKey::from_bytes(&seed);
    json!({"seed": hex::encode(seed), "publicKey": hex::encode(key.verifying_key().to_bytes())})
}

/// The hex signature of `payload`'s exact UTF-8 bytes under the key with `seed_hex`.
pub fn sign(seed_hex: &str, payload: &str) -> anyhow::Result<String> {
    let seed = hex::decode(seed_hex.trim()).context("the seed is not hex")?;
    let Ok(seed) = <[u8; 32]>::try_from(seed.as_slice()) else {
        bail!("the seed must be 32 bytes")
    };
    Ok(hex::encode(
        SigningKey::from_bytes(&seed)
            .sign(payload.as_bytes())
            .to_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_what_the_signing_rules_verify() {
        let key = keygen();
        let seed = key["seed"].as_str().unwrap();
        let public =
            schemas::signing::PublicKey::parse_hex(key["publicKey"].as_str().unwrap()).unwrap();
        let payload = r#"{"nonce":"n-1","x":"1"}"#;
        let signature =
            schemas::signing::Signature::parse_hex(&sign(seed, payload).unwrap()).unwrap();
        let id = uuid::Uuid::from_u128(1);
        assert_eq!(
            schemas::signing::verify(payload, &signature, &[(id, public)]),
            Some(id)
        );
        assert!(sign("zz", payload).is_err() && sign("00", payload).is_err());
    }
}
