//! Tests of signed-body parsing: what a partner may vary (key order, whitespace) and what it may
//! not (any field, the path ids, the signature's form, the nonce).

use super::*;
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use serde_json::json;
use uuid::Uuid;

const CONNECTION: &str = "6a1c8f0e-3d2b-4c5a-9e7f-1b2c3d4e5f60";
const ENTERPRISE: &str = "0f9e8d7c-6b5a-4938-a716-253443526170";

fn path_ids() -> Vec<(&'static str, String)> {
    vec![
        ("connectionId", CONNECTION.to_owned()),
        ("enterpriseId", ENTERPRISE.to_owned()),
    ]
}

fn allocation() -> Value {
    json!({
        "amount": {"currency": "BTC", "quantity": "50000000"},
        "clientExternalId": "alloc-1",
        "nonce": "n-1"
    })
}

fn signer() -> (SigningKey, Vec<(KeyId, PublicKey)>) {
    let signing = SigningKey::from_bytes(&[9; 32]);
    let public = PublicKey::parse_hex(&hex::encode(signing.verifying_key().as_bytes())).unwrap();
    (signing, vec![(Uuid::from_u128(9), public)])
}

/// `body` plus `payload` and its signature, as a partner sends it.
fn signed(body: &Value, payload: &str, signing: &SigningKey) -> Value {
    let mut body = body.clone();
    body[PAYLOAD] = json!(payload);
    body[SIGNATURE] = json!(hex::encode(signing.sign(payload.as_bytes()).to_bytes()));
    body
}

fn parse(body: &Value) -> Result<SignedRequest, SigningError> {
    SignedRequest::parse(body, &path_ids())
}

#[test]
fn a_canonically_signed_body_parses_and_verifies() {
    let (signing, keys) = signer();
    let payload = signing_payload(&allocation(), &path_ids()).unwrap();
    assert_eq!(
        payload,
        format!(
            r#"{{"amount":{{"currency":"BTC","quantity":"50000000"}},"clientExternalId":"alloc-1","connectionId":"{CONNECTION}","enterpriseId":"{ENTERPRISE}","nonce":"n-1"}}"#
        )
    );
    let request = parse(&signed(&allocation(), &payload, &signing)).unwrap();
    assert_eq!(request.payload(), payload);
    assert_eq!(request.nonce(), "n-1");
    assert_eq!(request.fields()["connectionId"], json!(CONNECTION));
    assert_eq!(request.verify(&keys), Some(Uuid::from_u128(9)));
    assert_eq!(request.verify(&[]), None);
}

#[test]
fn key_order_and_whitespace_in_the_payload_are_accepted() {
    let (signing, keys) = signer();
    let payload = format!(
        "{{\n  \"nonce\": \"n-1\",\n  \"enterpriseId\": \"{ENTERPRISE}\",\n  \"connectionId\": \"{CONNECTION}\",\n  \"clientExternalId\": \"alloc-1\",\n  \"amount\": {{ \"quantity\": \"50000000\", \"currency\": \"BTC\" }}\n}}"
    );
    let request = parse(&signed(&allocation(), &payload, &signing)).unwrap();
    assert_eq!(request.payload(), payload, "the original string is kept");
    assert_eq!(request.verify(&keys), Some(Uuid::from_u128(9)));
    let canonical = signing_payload(&allocation(), &path_ids()).unwrap();
    let canonical_request = parse(&signed(&allocation(), &canonical, &signing)).unwrap();
    assert_eq!(request.payload_hash(), canonical_request.payload_hash());
}

#[test]
fn any_difference_between_payload_and_request_is_a_mismatch() {
    let (signing, _) = signer();
    let canonical = signing_payload(&allocation(), &path_ids()).unwrap();
    let mut changed_body = allocation();
    changed_body["amount"]["quantity"] = json!("50000001");
    let mut extra_body = allocation();
    extra_body["notes"] = json!("x");
    let mut numeric_body = allocation();
    numeric_body["amount"]["quantity"] = json!(50_000_000);
    let no_path_ids = signing_payload(&allocation(), &[]).unwrap();
    for (body, payload) in [
        (&changed_body, &canonical),
        (&extra_body, &canonical),
        (&numeric_body, &canonical),
        (&allocation(), &no_path_ids),
    ] {
        let error = parse(&signed(body, payload, &signing)).unwrap_err();
        assert_eq!(error, SigningError::PayloadMismatch);
        assert_eq!(error.to_string(), "payload does not match request");
        assert_eq!(error.code(), "payload_mismatch");
    }
}

#[test]
fn a_tampered_payload_byte_fails_verification() {
    let (signing, keys) = signer();
    let payload = signing_payload(&allocation(), &path_ids()).unwrap();
    let mut body = signed(&allocation(), &payload, &signing);
    // Same fields, one more byte of whitespace: still matches, but no longer what was signed.
    body[PAYLOAD] = json!(format!("{payload} "));
    assert_eq!(parse(&body).unwrap().verify(&keys), None);
}

#[test]
fn missing_parts_have_named_errors() {
    let (signing, _) = signer();
    let payload = signing_payload(&allocation(), &path_ids()).unwrap();
    let body = signed(&allocation(), &payload, &signing);
    let without = |name: &str| {
        let mut body = body.clone();
        body.as_object_mut().unwrap().remove(name);
        parse(&body).unwrap_err()
    };
    assert_eq!(without(PAYLOAD), SigningError::MissingPayload);
    assert_eq!(without(SIGNATURE), SigningError::MissingSignature);
    assert_eq!(without(NONCE), SigningError::MissingNonce);
    assert_eq!(without(NONCE).code(), "missing_nonce");
    assert_eq!(parse(&json!([1])), Err(SigningError::BodyNotAnObject));
}

#[test]
fn malformed_parts_have_named_errors() {
    let (signing, _) = signer();
    let payload = signing_payload(&allocation(), &path_ids()).unwrap();
    let body = signed(&allocation(), &payload, &signing);
    let with = |name: &str, value: Value| {
        let mut body = body.clone();
        body[name] = value;
        parse(&body).unwrap_err()
    };
    assert_eq!(with(PAYLOAD, json!({})), SigningError::PayloadNotAString);
    assert_eq!(with(PAYLOAD, json!("[]")), SigningError::PayloadNotAnObject);
    assert!(matches!(
        with(PAYLOAD, json!("{")),
        SigningError::PayloadNotJson { .. }
    ));
    let duplicate = with(PAYLOAD, json!(r#"{"nonce":"n-1","nonce":"n-1"}"#));
    assert!(
        duplicate.to_string().contains("duplicate key"),
        "{duplicate}"
    );
    assert_eq!(with(SIGNATURE, json!(7)), SigningError::SignatureNotAString);
    let not_hex = with(SIGNATURE, json!("xyz"));
    assert_eq!(
        not_hex,
        SigningError::SignatureFormat(SignatureError::NotHex)
    );
    assert_eq!(not_hex.code(), "invalid_signature_format");
    let short = with(SIGNATURE, json!("ab".repeat(32)));
    assert_eq!(
        short,
        SigningError::SignatureFormat(SignatureError::WrongLength { bytes: 32 })
    );
    assert_eq!(short.code(), "invalid_signature_format");
}

#[test]
fn nonces_are_bounded_non_empty_strings() {
    let with_nonce = |nonce: Value| {
        let mut body = allocation();
        body[NONCE] = nonce;
        signing_payload(&body, &path_ids())
    };
    assert_eq!(with_nonce(json!(1)), Err(SigningError::NonceNotAString));
    assert_eq!(with_nonce(json!("")), Err(SigningError::NonceEmpty));
    assert!(with_nonce(json!("é".repeat(NONCE_CHARS_MAX))).is_ok());
    let too_long = with_nonce(json!("n".repeat(NONCE_CHARS_MAX + 1)));
    assert_eq!(too_long, Err(SigningError::NonceTooLong { chars: 201 }));
    assert_eq!(SigningError::NonceEmpty.code(), "invalid_nonce");
    for nonce in ["n\u{0}1", "n\n1", "\u{7f}"] {
        assert_eq!(
            with_nonce(json!(nonce)),
            Err(SigningError::NonceControlCharacter)
        );
    }
}

#[test]
fn body_fields_may_repeat_path_ids_only_when_equal() {
    let mut body = allocation();
    body["connectionId"] = json!(CONNECTION);
    assert_eq!(
        signing_payload(&body, &path_ids()),
        signing_payload(&allocation(), &path_ids())
    );
    body["connectionId"] = json!("another");
    let conflict = signing_payload(&body, &path_ids()).unwrap_err();
    assert_eq!(
        conflict,
        SigningError::PathIdConflict {
            name: "connectionId".to_owned()
        }
    );
    assert_eq!(conflict.code(), "path_id_conflict");
}

#[test]
fn the_signing_twin_ignores_payload_and_signature() {
    let mut body = allocation();
    body[PAYLOAD] = json!("anything");
    body[SIGNATURE] = json!("anything");
    assert_eq!(
        signing_payload(&body, &path_ids()),
        signing_payload(&allocation(), &path_ids())
    );
    assert_eq!(
        signing_payload(&json!("x"), &[]),
        Err(SigningError::BodyNotAnObject)
    );
}

fn request_fields() -> impl Strategy<Value = Map<String, Value>> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        // Floats must survive canonical text exactly, or a signed float would be a mismatch.
        any::<f64>()
            .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z0-9é\"\\\\ -]{0,12}".prop_map(Value::String),
    ];
    let value = leaf.prop_recursive(3, 24, 4, |inner| {
        prop::collection::btree_map("[a-zA-Z]{1,6}", inner, 0..4)
            .prop_map(|fields| Value::Object(fields.into_iter().collect()))
    });
    (
        prop::collection::btree_map("[a-zA-Z]{1,8}", value, 0..6),
        "[!-~]{1,40}",
    )
        .prop_map(|(fields, nonce)| {
            let mut fields: Map<String, Value> = fields.into_iter().collect();
            fields.remove(PAYLOAD);
            fields.remove(SIGNATURE);
            fields.insert(NONCE.to_owned(), Value::String(nonce));
            fields
        })
}

proptest! {
    /// Whatever a partner signs — canonical or pretty-printed — verifies strictly, parses back
    /// to the same fields and hashes like the canonical form.
    #[test]
    fn signed_payloads_round_trip(fields in request_fields(), pretty in any::<bool>()) {
        let (signing, keys) = signer();
        let body = Value::Object(fields.clone());
        let canonical = signing_payload(&body, &path_ids()).unwrap();
        let payload = if pretty {
            serde_json::to_string_pretty(&serde_json::from_str::<Value>(&canonical).unwrap()).unwrap()
        } else {
            canonical.clone()
        };
        let request = parse(&signed(&body, &payload, &signing)).unwrap();
        prop_assert_eq!(request.verify(&keys), Some(Uuid::from_u128(9)));
        prop_assert_eq!(request.payload(), payload.as_str());
        prop_assert_eq!(canonical_payload(request.fields()), canonical.clone());
        prop_assert_eq!(request.payload_hash(), payload_hash(&fields_with_path_ids(fields)));
    }
}

fn fields_with_path_ids(mut fields: Map<String, Value>) -> Map<String, Value> {
    for (name, id) in path_ids() {
        fields.insert(name.to_owned(), Value::String(id));
    }
    fields
}

/// Any JSON value, as a hostile caller might send it: nested, with odd keys and strings.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map(
                prop_oneof![
                    Just(NONCE.to_owned()),
                    Just(PAYLOAD.to_owned()),
                    Just(SIGNATURE.to_owned()),
                    Just("connectionId".to_owned()),
                    any::<String>()
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// The canonicaliser and the signed-request parser take any JSON and any payload string:
    /// an answer or a named error, never a panic.
    #[test]
    fn any_body_or_payload_is_answered_without_panic(
        body in any_json(),
        payload in prop_oneof![any::<String>(), any_json().prop_map(|v| v.to_string())],
        signature in "[0-9a-f]{0,130}",
    ) {
        let _ = signing_payload(&body, &path_ids());
        let mut with_envelope = body.clone();
        if let Value::Object(fields) = &mut with_envelope {
            fields.insert(PAYLOAD.to_owned(), Value::String(payload));
            fields.insert(SIGNATURE.to_owned(), Value::String(signature));
        }
        if let Err(e) = parse(&with_envelope) {
            prop_assert!(!e.code().is_empty());
        }
        if let Value::Object(fields) = &body {
            let _ = canonical_payload(fields);
        }
    }
}
