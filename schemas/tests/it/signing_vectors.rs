//! The published signing test vectors (`docs/signing-test-vectors.json`, shown in
//! `docs/signing-test-vectors.md`) are exactly what this crate computes, and they verify.
//! Ed25519 (RFC 8032) signing is deterministic, so a seed and a payload fix the signature.

use std::collections::BTreeMap;

use ed25519_dalek::{Signer, SigningKey};
use schemas::signing::{signing_payload, PublicKey, SignedRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

const VECTORS_JSON: &str = include_str!("../../../docs/signing-test-vectors.json");
const VECTORS_MD: &str = include_str!("../../../docs/signing-test-vectors.md");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    #[allow(dead_code, reason = "read by people, not by the test")]
    warning: String,
    #[allow(dead_code, reason = "read by people, not by the test")]
    description: String,
    vectors: Vec<Vector>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Vector {
    name: String,
    route: String,
    secret_key_seed_hex: String,
    path_ids: BTreeMap<String, String>,
    body: Value,
    public_key_hex: String,
    payload: String,
    signature_hex: String,
}

impl Vector {
    fn path_ids(&self) -> Vec<(&str, String)> {
        self.path_ids
            .iter()
            .map(|(name, id)| (name.as_str(), id.clone()))
            .collect()
    }

    fn signing_key(&self) -> SigningKey {
        let seed: [u8; 32] = hex::decode(&self.secret_key_seed_hex)
            .unwrap()
            .try_into()
            .unwrap();
        SigningKey::from_bytes(&seed)
    }
}

fn vectors() -> Vec<Vector> {
    let vectors: Vectors = serde_json::from_str(VECTORS_JSON).unwrap();
    assert_eq!(vectors.vectors.len(), 3);
    vectors.vectors
}

#[test]
fn vectors_are_what_this_code_computes() {
    for vector in vectors() {
        let name = &vector.name;
        let signing = vector.signing_key();
        let public_hex = hex::encode(signing.verifying_key().as_bytes());
        assert_eq!(vector.public_key_hex, public_hex, "{name}: public key");
        let payload = signing_payload(&vector.body, &vector.path_ids()).unwrap();
        assert_eq!(vector.payload, payload, "{name}: canonical payload");
        let signature = hex::encode(signing.sign(payload.as_bytes()).to_bytes());
        assert_eq!(vector.signature_hex, signature, "{name}: signature");
    }
}

#[test]
fn vectors_verify_as_signed_requests() {
    for vector in vectors() {
        let key_id = Uuid::from_u128(1);
        let key = PublicKey::parse_hex(&vector.public_key_hex).unwrap();
        let mut body = vector.body.clone();
        body["payload"] = json!(vector.payload);
        body["signature"] = json!(vector.signature_hex);
        let request = SignedRequest::parse(&body, &vector.path_ids()).unwrap();
        assert_eq!(
            request.verify(&[(key_id, key)]),
            Some(key_id),
            "{}",
            vector.name
        );
    }
}

#[test]
fn the_markdown_shows_every_value_verbatim() {
    for vector in vectors() {
        let pretty_body = serde_json::to_string_pretty(&vector.body).unwrap();
        let path_ids = serde_json::to_string(&vector.path_ids).unwrap();
        for (what, value) in [
            ("route", &vector.route),
            ("seed", &vector.secret_key_seed_hex),
            ("public key", &vector.public_key_hex),
            ("path ids", &path_ids),
            ("body", &pretty_body),
            ("payload", &vector.payload),
            ("signature", &vector.signature_hex),
        ] {
            assert!(
                VECTORS_MD.contains(value.as_str()),
                "{}: {what} not in the markdown:\n{value}",
                vector.name
            );
        }
    }
}
