//! Random bodies to every route that takes one — random JSON shaped like the route's request
//! (its own field names with values of any type) and random bytes — as an authenticated caller:
//! every answer is a success or a 4xx with the API error body, never a 5xx. Seeded, so a failure
//! repeats.

use command_api::http::edge::EdgeConfig;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use reqwest::Method;
use serde_json::{json, Value};

use crate::disputes::{lifecycle_world, raise, stage};
use crate::support::*;

/// Bodies per route and kind.
const CASES_PER_ROUTE: usize = 24;

fn any_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(1e300)),
        any::<String>().prop_map(Value::from),
        "[0-9a-f-]{36}".prop_map(Value::from),
        "-?[0-9]{1,40}(\\.[0-9]{0,30})?".prop_map(Value::from),
        "[A-Z]{1,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[A-Za-z0-9-]{0,40}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// An object using the route's field names (and the signing envelope's) with any values.
fn shaped(fields: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let names = prop_oneof![
        prop::sample::select(fields.to_vec()).prop_map(str::to_owned),
        prop::sample::select(vec!["nonce", "payload", "signature"]).prop_map(str::to_owned),
        "[a-zA-Z]{1,12}",
    ];
    prop::collection::btree_map(names, any_value(), 0..8)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn sample<S: Strategy>(strategy: &S, runner: &mut TestRunner) -> S::Value {
    strategy
        .new_tree(runner)
        .expect("a value is generated")
        .current()
}

#[track_caller]
fn no_server_error(status: u16, text: &str, route: &str, body: &str) {
    assert!(status < 500, "{route} answered {status} to {body}: {text}");
    if status >= 400 {
        let parsed: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        assert!(
            parsed["code"].is_string() && parsed["requestId"].is_string(),
            "{route}: SPEC error body: {text}"
        );
    }
}

#[tokio::test]
async fn random_bodies_never_get_a_server_error() {
    // One caller sending hundreds of requests: rate limits off.
    let app = TestApp::spawn_with_edge(EdgeConfig {
        rate_per_token: 0,
        rate_per_address: 0,
        ..EdgeConfig::default()
    })
    .await;
    let l = lifecycle_world(&app, "100000000").await;
    let w = &l.w;
    let settlement = stage(&app, w, "fuzz-1", json!({ &l.c1: {"BTC": "-10"} }))
        .await
        .expect(200, None)["settlement"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dispute = raise(&app, w, &settlement, &l.c1, json!({"BTC": "-5"}))
        .await
        .expect(200, None)["dispute"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (c, p) = (&w.client.id, &w.partner.id);
    let net = "/api/network/v1/enterprises";
    // (method, path, token, field names)
    let routes: Vec<(Method, String, &str, &'static [&'static str])> = vec![
        (
            Method::POST,
            format!("{net}/{c}/clients/connections"),
            &w.client.token,
            &["partnerId", "name", "connectionKey"],
        ),
        (
            Method::POST,
            format!("{net}/{c}/clients/connections/signing"),
            &w.client.token,
            &["partnerId", "name", "connectionKey"],
        ),
        (
            Method::PUT,
            format!("{net}/{c}/clients/connections/{}", l.c1),
            &w.client.token,
            &["name", "active"],
        ),
        (
            Method::POST,
            format!("{net}/{c}/clients/connections/{}/allocations", l.c1),
            &w.client.token,
            &["amount", "clientExternalId", "notes"],
        ),
        (
            Method::POST,
            format!(
                "{net}/{c}/clients/connections/{}/deallocations/signing",
                l.c1
            ),
            &w.client.token,
            &["amount", "clientExternalId", "notes"],
        ),
        (
            Method::POST,
            format!("{net}/{c}/clients/settlements/{settlement}/disputes"),
            &w.client.token,
            &["connectionId", "reason", "expectedTransfers"],
        ),
        (
            Method::PUT,
            format!("{net}/{c}/clients/settlements/disputes/{dispute}"),
            &w.client.token,
            &["connectionId", "retracted", "reason", "expectedTransfers"],
        ),
        (
            Method::POST,
            format!("{net}/{c}/clients/settlements/disputes/{dispute}/close"),
            &w.client.token,
            &["notes"],
        ),
        (
            Method::POST,
            format!("/api/network/v2/enterprises/{p}/partners/settlements"),
            &w.partner.token,
            &["externalId", "notes", "settlementAmounts", "cutoffAt"],
        ),
        (
            Method::POST,
            format!("{net}/{p}/partners/settlements"),
            &w.partner.token,
            &["externalId", "notes", "settlementAmounts"],
        ),
        (
            Method::POST,
            format!("{net}/{p}/partners/settlements-signing"),
            &w.partner.token,
            &["externalId", "notes", "settlementAmounts", "cutoffAt"],
        ),
        (
            Method::POST,
            "/api/admin/v1/enterprises".into(),
            ADMIN_TOKEN,
            &["name", "oesLicense"],
        ),
        (
            Method::PATCH,
            format!("/api/admin/v1/enterprises/{c}"),
            ADMIN_TOKEN,
            &["oesLicense"],
        ),
        (
            Method::POST,
            "/api/admin/v1/users".into(),
            ADMIN_TOKEN,
            &["name", "enterpriseIds", "auditor"],
        ),
        (
            Method::POST,
            format!("/api/admin/v1/enterprises/{c}/keys"),
            ADMIN_TOKEN,
            &["publicKey"],
        ),
        (
            Method::POST,
            format!("/api/admin/v1/enterprises/{c}/partner"),
            ADMIN_TOKEN,
            &[
                "name",
                "broker",
                "clientDisputeWindowMinutes",
                "topUpWindowMinutes",
                "amountFormat",
            ],
        ),
        (
            Method::PATCH,
            format!("/api/admin/v1/partners/{}", w.partner_id),
            ADMIN_TOKEN,
            &["active", "clientDisputeWindowMinutes", "topUpWindowMinutes"],
        ),
        (
            Method::POST,
            format!("/api/admin/v1/enterprises/{c}/deposits"),
            ADMIN_TOKEN,
            &["currency", "quantity", "externalId"],
        ),
        (
            Method::POST,
            format!("/api/admin/v1/disputes/{dispute}/close"),
            ADMIN_TOKEN,
            &["notes", "adjustedTransfers"],
        ),
        (
            Method::PUT,
            format!("/api/admin/v1/enterprises/{c}/webhook"),
            ADMIN_TOKEN,
            &["url"],
        ),
    ];
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let bytes = prop::collection::vec(any::<u8>(), 0..256);
    for (method, path, token, fields) in &routes {
        let shape = shaped(fields);
        for _ in 0..CASES_PER_ROUTE {
            let body = sample(&shape, &mut runner).to_string().into_bytes();
            let noise = sample(&bytes, &mut runner);
            for payload in [body, noise] {
                let response = app
                    .http
                    .request(method.clone(), format!("http://{}{path}", app.addr))
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(payload.clone())
                    .send()
                    .await
                    .expect("answered");
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                no_server_error(
                    status,
                    &text,
                    &format!("{method} {path}"),
                    &String::from_utf8_lossy(&payload),
                );
            }
        }
    }
    app.shutdown().await;
}
