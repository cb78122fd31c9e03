//! docs/api/signatures.md: the signature matrix, nonces, and the signing twins.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

#[tokio::test]
async fn signature_matrix() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let path = w.allocation_path("allocations");
    let token = &w.client.token;
    let good = || w.allocation("BTC", json!("1000"), "a-1", "n-1");

    // A byte of the payload changed without changing its meaning: the signature fails (401).
    let mut body = good();
    body["payload"] = format!(" {}", body["payload"].as_str().unwrap()).into();
    app.post(&path, token, body)
        .await
        .expect(401, Some("invalid_signature"));
    // A payload that says something else than the body: 400.
    let mut body = good();
    body["amount"]["quantity"] = "999999".into();
    let refused = app.post(&path, token, body).await;
    refused.expect(400, Some("payload_mismatch"));
    assert_eq!(refused.body["error"], "payload does not match request");
    // Signed by a key the enterprise never registered: 401.
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let body = signed(
        &stranger,
        json!({"amount": {"currency": "BTC", "quantity": "1000"}, "clientExternalId": "a-1"}),
        &w.allocation_ids(),
        "n-2",
    );
    app.post(&path, token, body)
        .await
        .expect(401, Some("invalid_signature"));
    // Not hex, and too short: 400.
    let mut body = good();
    body["signature"] = "zz".repeat(64).into();
    app.post(&path, token, body)
        .await
        .expect(400, Some("invalid_signature_format"));
    let mut body = good();
    body["signature"] = "ab".repeat(10).into();
    app.post(&path, token, body)
        .await
        .expect(400, Some("invalid_signature_format"));
    // Missing envelope fields: 400.
    let mut body = good();
    body.as_object_mut().unwrap().remove("signature");
    app.post(&path, token, body)
        .await
        .expect(400, Some("missing_signature"));
    // Nothing of the above moved funds.
    let balances = app
        .get_after(
            &format!("/v1/enterprises/{}/clients/balances", w.client.id),
            token,
            &w.connected_at,
        )
        .await;
    assert_eq!(
        balances.expect(200, None)["networkBalances"][&w.connection_id]["balances"],
        json!({})
    );

    // The good request, twice with the same nonce: the same answer, one allocation.
    let first = app.post(&path, token, good()).await;
    let id = first.expect(200, None)["allocation"]["id"].clone();
    let again = app.post(&path, token, good()).await;
    assert_eq!(
        again.expect(200, None)["allocation"]["id"],
        id,
        "an idempotent retry"
    );
    // The same nonce with another payload: 400.
    let other = w.allocation("BTC", json!("2000"), "a-2", "n-1");
    app.post(&path, token, other)
        .await
        .expect(400, Some("nonce_reused"));

    // A nonce is spent across routes: a connect's nonce on a rename is a reuse (400), not a retry.
    let rename = signed(&w.client.key, json!({"name": "x"}), &[], "connect-1");
    let put = format!(
        "/api/network/v1/enterprises/{}/clients/connections/{}",
        w.client.id, w.connection_id
    );
    app.call(Method::PUT, &put, Some(token), Some(rename), &[])
        .await
        .expect(400, Some("nonce_reused"));

    // A revoked key no longer verifies.
    app.admin(
        Method::DELETE,
        &format!("/enterprises/{}/keys/{}", w.client.id, w.client.key_id),
        Value::Null,
    )
    .await
    .expect(200, None);
    let after = w.allocation("BTC", json!("1000"), "a-3", "n-3");
    app.post(&path, token, after)
        .await
        .expect(401, Some("invalid_signature"));
    app.shutdown().await;
}

#[tokio::test]
async fn weak_and_malformed_keys_are_refused_at_registration() {
    let app = TestApp::spawn().await;
    let t = tenant(&app, "Keys", 4).await;
    let path = format!("/enterprises/{}/keys", t.id);
    let identity = format!("01{}", "00".repeat(31));
    app.admin(Method::POST, &path, json!({"publicKey": identity}))
        .await
        .expect(400, Some("weak_public_key"));
    app.admin(Method::POST, &path, json!({"publicKey": "abcd"}))
        .await
        .expect(400, Some("invalid_public_key"));
    app.admin(Method::POST, &path, json!({"publicKey": "xy".repeat(32)}))
        .await
        .expect(400, Some("invalid_public_key"));
    // Registering the same active key twice is a conflict.
    let again = hex::encode(t.key.verifying_key().to_bytes());
    app.admin(Method::POST, &path, json!({"publicKey": again}))
        .await
        .expect(409, Some("already_exists"));
    app.shutdown().await;
}

#[tokio::test]
async fn signing_twins_return_the_payload_to_sign() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let fields = json!({"amount": {"currency": "BTC", "quantity": "5"}, "clientExternalId": "x", "nonce": "n-twin"});
    let expected =
        signed(&w.client.key, fields.clone(), &w.allocation_ids(), "n-twin")["payload"].clone();
    let twin = format!("/api/network{}/signing", w.allocation_path("allocations"));
    for method in [Method::POST, Method::GET] {
        let r = app
            .call(
                method,
                &twin,
                Some(&w.client.token),
                Some(fields.clone()),
                &[],
            )
            .await;
        assert_eq!(r.expect(200, None)["payload"], expected);
    }
    // Signing what the twin returned is accepted.
    let mut body = fields;
    body["payload"] = expected.clone();
    body["signature"] = hex::encode(
        ed25519_dalek::Signer::sign(&w.client.key, expected.as_str().unwrap().as_bytes())
            .to_bytes(),
    )
    .into();
    app.post(&w.allocation_path("allocations"), &w.client.token, body)
        .await
        .expect(200, None);
    app.shutdown().await;
}
