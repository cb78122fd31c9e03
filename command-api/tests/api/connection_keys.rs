//! BitGo-shaped `connectionKey` objects over HTTP (ADR 0011): a key of each schema connects when
//! it is the partner's `connectionKeySchema`, any other is 422; unknown schemas are 422; every
//! key field is bounded and named; the plain string still means a `token` key; the admin sets
//! the partner's schema; the signing twin answers the payload the verifier checks; and no read
//! ever shows an `apiSecret`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

const SCHEMAS: [&str; 4] = ["token", "tokenAndSignature", "apiKeyAndSecret", "clearloop"];
const SECRET: &str = "never-shown-s3cret";

/// A valid key of `schema` (its `apiSecret`, where it has one, is `SECRET`).
fn key(schema: &str) -> Value {
    match schema {
        "token" => json!({"schema": "token", "connectionToken": "tok-1"}),
        "tokenAndSignature" => {
            json!({"schema": "tokenAndSignature", "connectionToken": "tok-1", "signature": "sig-1"})
        }
        "apiKeyAndSecret" => {
            json!({"schema": "apiKeyAndSecret", "apiKey": "key-1", "apiSecret": SECRET})
        }
        "clearloop" => {
            json!({"schema": "clearloop", "connectionToken": "tok-1", "publicKey": "pk-1"})
        }
        other => json!({"schema": other}),
    }
}

fn fields_of(schema: &str) -> Vec<String> {
    key(schema)
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "schema")
        .cloned()
        .collect()
}

fn connections_path(w: &World) -> String {
    format!("/v1/enterprises/{}/clients/connections", w.client.id)
}

async fn connect(app: &TestApp, w: &World, connection_key: Value, nonce: &str) -> Resp {
    let body = signed(
        &w.client.key,
        json!({"partnerId": w.partner_id, "name": format!("c-{nonce}"), "connectionKey": connection_key}),
        &[],
        nonce,
    );
    app.post(&connections_path(w), &w.client.token, body).await
}

async fn set_schema(app: &TestApp, partner_id: &str, schema: Value) -> Resp {
    app.admin(
        Method::PATCH,
        &format!("/partners/{partner_id}"),
        json!({ "connectionKeySchema": schema }),
    )
    .await
}

async fn log_len(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .expect("count events")
}

#[tokio::test]
async fn connect_with_each_schema_when_it_is_the_partners_and_only_then() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let mut n = 0;
    let mut nonce = || {
        n += 1;
        format!("ck-{n}")
    };
    for schema in SCHEMAS {
        let updated = set_schema(&app, &w.partner_id, json!(schema)).await;
        assert_eq!(
            updated.expect(200, None)["partner"]["connectionKeySchema"],
            schema
        );
        let connected = connect(&app, &w, key(schema), &nonce()).await;
        let connection = connected.expect(200, None)["connection"].clone();
        assert_eq!(connection["partnerId"], w.partner_id.as_str());

        for other in SCHEMAS.iter().filter(|s| **s != schema) {
            let before = log_len(&app).await;
            let refused = connect(&app, &w, key(other), &nonce()).await;
            refused.expect(422, Some("connection_key_schema_mismatch"));
            assert_eq!(
                refused.body["connectionKeySchema"], schema,
                "{}",
                refused.body
            );
            assert!(
                refused.body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains(schema) && e.contains(other)),
                "the sentence names both schemas: {}",
                refused.body
            );
            assert_eq!(log_len(&app).await, before, "a refusal records nothing");
        }
    }

    // The plain string is a `token` key: refused by a partner taking another schema, accepted
    // by one taking tokens (as every partner did before schemas).
    set_schema(&app, &w.partner_id, json!("apiKeyAndSecret"))
        .await
        .expect(200, None);
    connect(&app, &w, json!("acct-2"), &nonce())
        .await
        .expect(422, Some("connection_key_schema_mismatch"));
    set_schema(&app, &w.partner_id, json!("token"))
        .await
        .expect(200, None);
    connect(&app, &w, json!("acct-2"), &nonce())
        .await
        .expect(200, None);
}

#[tokio::test]
async fn the_admin_sets_the_partners_schema_and_the_read_model_shows_it() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let venue = tenant(&app, "Second Venue", 7).await;
    let register = |schema: Value| {
        let app = &app;
        let e = venue.id.clone();
        async move {
            app.admin(
                Method::POST,
                &format!("/enterprises/{e}/partner"),
                json!({"name": "Second Venue", "connectionKeySchema": schema}),
            )
            .await
        }
    };
    let unknown = register(json!("ssh")).await;
    unknown.expect(422, Some("unsupported_connection_key_schema"));
    assert_eq!(unknown.body["field"], "connectionKeySchema");
    register(json!(7))
        .await
        .expect(400, Some("invalid_request"));
    let registered = register(json!("clearloop")).await;
    let partner = registered.expect(200, None)["partner"].clone();
    assert_eq!(partner["connectionKeySchema"], "clearloop");
    let partner_id = partner["id"].as_str().unwrap().to_owned();

    // A partner registered without a schema takes tokens.
    let first = app
        .admin(
            Method::PATCH,
            &format!("/partners/{}", w.partner_id),
            json!({}),
        )
        .await;
    assert_eq!(
        first.expect(200, None)["partner"]["connectionKeySchema"],
        "token"
    );

    // Updates: an unknown name is 422, a non-string 400, null 400 (the schema cannot be unset).
    for (bad, status, code) in [
        (json!("Token"), 422, "unsupported_connection_key_schema"),
        (json!(1), 400, "invalid_request"),
        (Value::Null, 400, "invalid_request"),
    ] {
        let r = set_schema(&app, &partner_id, bad.clone()).await;
        r.expect(status, Some(code));
        assert_eq!(r.body["field"], "connectionKeySchema", "{bad}: {}", r.body);
    }
    let updated = set_schema(&app, &partner_id, json!("tokenAndSignature")).await;
    assert_eq!(
        updated.expect(200, None)["partner"]["connectionKeySchema"],
        "tokenAndSignature"
    );

    // The partner read model shows each partner's schema (the update is the last write: wait
    // until the projection has applied it).
    let expected = vec![
        (w.partner_id.clone(), "token".to_owned()),
        (partner_id, "tokenAndSignature".to_owned()),
    ];
    let pool = &app.db.pool;
    let shown = events::testing::eventually(std::time::Duration::from_secs(20), || async {
        sqlx::query_as::<_, (String, String)>(
            "SELECT id::text, connection_key_schema FROM rm_partners ORDER BY connection_key_schema",
        )
        .fetch_all(pool)
        .await
        .is_ok_and(|rows| rows == expected)
    })
    .await;
    assert!(shown, "rm_partners shows {expected:?}");
}

#[tokio::test]
async fn unknown_schemas_and_bad_key_fields_are_refused_naming_the_field() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let signing = format!("{}/signing", connections_path(&w));
    let mut n = 0;
    let mut nonce = || {
        n += 1;
        format!("bad-{n}")
    };

    let unknown = connect(&app, &w, json!({"schema": "oauth", "token": "t"}), &nonce()).await;
    unknown.expect(422, Some("unsupported_connection_key_schema"));
    assert_eq!(unknown.body["field"], "connectionKey.schema");
    assert!(unknown.body["error"].as_str().unwrap().contains("oauth"));

    // (key, status, code, field)
    let mut cases: Vec<(Value, u16, &str, String)> = vec![
        (
            json!({"connectionToken": "t"}),
            400,
            "invalid_request",
            "connectionKey.schema".into(),
        ),
        (
            json!({"schema": "x".repeat(100)}),
            400,
            "field_too_long",
            "connectionKey.schema".into(),
        ),
        (
            json!({"schema": "apiKeyAndSecret", "apiKey": "k"}),
            400,
            "invalid_request",
            "connectionKey.apiSecret".into(),
        ),
        (
            json!({"schema": "token", "connectionToken": "t", "apiSecret": "s"}),
            400,
            "invalid_request",
            "connectionKey.apiSecret".into(),
        ),
        (json!(42), 400, "invalid_request", "connectionKey".into()),
        (
            json!("a\u{0}b"),
            400,
            "field_control_character",
            "connectionKey".into(),
        ),
    ];
    for schema in SCHEMAS {
        for field in fields_of(schema) {
            for (value, code) in [
                (json!("a\u{1b}[31mb"), "field_control_character"),
                (json!("a\u{0}b"), "field_control_character"),
                (json!("x".repeat(1_025)), "field_too_long"),
                (json!("  "), "field_empty"),
                (json!(["t"]), "invalid_request"),
            ] {
                let mut k = key(schema);
                k[&field] = value;
                cases.push((k, 400, code, format!("connectionKey.{field}")));
            }
        }
    }
    for (connection_key, status, code, field) in cases {
        let case = format!("{connection_key}");
        let before = log_len(&app).await;
        let r = connect(&app, &w, connection_key.clone(), &nonce()).await;
        r.expect(status, Some(code));
        assert_eq!(r.body["field"], field.as_str(), "{case}: {}", r.body);
        assert!(
            r.body["error"].as_str().is_some_and(|e| e.contains(&field)),
            "{case}: the sentence names the field: {}",
            r.body
        );
        assert_eq!(
            log_len(&app).await,
            before,
            "{case}: nothing reaches the log"
        );
        // The signing twin refuses it the same way.
        let twin = app
            .post(
                &signing,
                &w.client.token,
                json!({"partnerId": w.partner_id, "name": "n", "connectionKey": connection_key, "nonce": "x"}),
            )
            .await;
        twin.expect(status, Some(code));
        assert_eq!(twin.body["field"], field.as_str(), "twin {case}");
    }
}

#[tokio::test]
async fn the_signing_twin_answers_the_payload_the_verifier_checks() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    set_schema(&app, &w.partner_id, json!("tokenAndSignature"))
        .await
        .expect(200, None);
    // Keys in an unusual order and with white space: the payload is canonical (sorted, compact).
    let body_text = format!(
        r#"{{ "nonce": "twin-1", "connectionKey": {{ "signature": "sig-1", "schema": "tokenAndSignature", "connectionToken": "tok-1" }}, "name": "twin", "partnerId": "{}" }}"#,
        w.partner_id
    );
    let fields: Value = serde_json::from_str(&body_text).unwrap();
    let twin = app
        .post(
            &format!("{}/signing", connections_path(&w)),
            &w.client.token,
            fields.clone(),
        )
        .await;
    let payload = twin.expect(200, None)["payload"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        payload,
        format!(
            r#"{{"connectionKey":{{"connectionToken":"tok-1","schema":"tokenAndSignature","signature":"sig-1"}},"name":"twin","nonce":"twin-1","partnerId":"{}"}}"#,
            w.partner_id
        )
    );
    // Signing exactly that string is what the route verifies.
    use ed25519_dalek::Signer;
    let mut body = fields;
    body["payload"] = payload.clone().into();
    body["signature"] = hex::encode(w.client.key.sign(payload.as_bytes()).to_bytes()).into();
    let connected = app.post(&connections_path(&w), &w.client.token, body).await;
    connected.expect(200, None);

    // A payload whose key differs from the body's is a mismatch.
    let mut other = signed(
        &w.client.key,
        json!({"partnerId": w.partner_id, "name": "twin-2", "connectionKey": key("tokenAndSignature")}),
        &[],
        "twin-2",
    );
    other["connectionKey"]["signature"] = "sig-2".into();
    app.post(&connections_path(&w), &w.client.token, other)
        .await
        .expect(400, Some("payload_mismatch"));
}

#[tokio::test]
async fn no_read_or_reply_shows_an_api_secret() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    set_schema(&app, &w.partner_id, json!("apiKeyAndSecret"))
        .await
        .expect(200, None);
    let connected = connect(&app, &w, key("apiKeyAndSecret"), "secret-1").await;
    let id = connected.expect(200, None)["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let position = connected.header("x-event-position").unwrap();
    let mut seen = vec![connected.body.to_string()];
    for (path, token) in [
        (format!("{}/{id}", connections_path(&w)), &w.client.token),
        (connections_path(&w), &w.client.token),
        (
            format!("/v1/enterprises/{}/partners/connections/{id}", w.partner.id),
            &w.partner.token,
        ),
        (
            format!("/v1/enterprises/{}/partners/connections", w.partner.id),
            &w.partner.token,
        ),
    ] {
        let read = app.get_after(&path, token, &position).await;
        read.expect(200, None);
        seen.push(read.body.to_string());
    }
    // A retry of the same request answers the recorded reply.
    let retried = connect(&app, &w, key("apiKeyAndSecret"), "secret-1").await;
    seen.push(retried.expect(200, None).to_string());
    for text in &seen {
        assert!(!text.contains(SECRET), "a read shows the secret: {text}");
        assert!(!text.contains("apiSecret"), "{text}");
    }
    app.read_models_caught_up().await;
    let rows: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM rm_connections WHERE row_to_json(rm_connections)::text LIKE $1",
    )
    .bind(format!("%{SECRET}%"))
    .fetch_one(&app.db.pool)
    .await
    .expect("scan");
    assert_eq!(rows, 0, "the read model does not keep the key");
}
