//! Replies against the OpenAPI document: a settlement driven through its life — staged,
//! disputed, closed, executed, with a closure carried into the next one — and the admin, read,
//! notification and audit routes around it, each reply body validated against the schema that
//! `schemas/openapi.json` gives for its operation and status (JSON Schema 2020-12, `$ref`s
//! resolved into the document's components).

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::disputes::{lifecycle_world, raise, settled, stage};
use crate::support::*;

/// The document, with every object schema that names its properties closed: the document leaves
/// objects open to additions, but a reply that carries a field the document does not name has
/// drifted from it, so here that fails too.
fn document() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../schemas/openapi.json");
    let text = std::fs::read_to_string(path).expect("schemas/openapi.json");
    let mut doc: Value = serde_json::from_str(&text).expect("the document is JSON");
    close_objects(&mut doc["components"]["schemas"]);
    doc
}

fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(fields) => {
            if fields.contains_key("properties") && !fields.contains_key("additionalProperties") {
                fields.insert("unevaluatedProperties".into(), Value::Bool(false));
            }
            fields.values_mut().for_each(close_objects);
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

struct Contract {
    doc: Value,
    checked: std::cell::Cell<usize>,
}

impl Contract {
    fn new() -> Self {
        Self {
            doc: document(),
            checked: std::cell::Cell::new(0),
        }
    }

    /// Asserts that `resp` is a success, and what the document says `method path` answers with
    /// it: the status is documented for the operation, and the body matches its JSON schema.
    #[track_caller]
    fn check(&self, method: &str, path: &str, resp: &Resp) {
        assert!(
            resp.status.is_success(),
            "{method} {path}: {} {}",
            resp.status,
            resp.body
        );
        self.check_any(method, path, resp);
    }

    /// As `check`, for a reply of any status (a refusal the test provokes).
    #[track_caller]
    fn check_any(&self, method: &str, path: &str, resp: &Resp) {
        let status = resp.status.as_u16();
        let errors = self.violations(method, path, status, &resp.body);
        assert!(
            errors.is_empty(),
            "{method} {path} {status}: the reply does not match the document: {errors:#?}\nbody {}",
            resp.body
        );
        self.checked.set(self.checked.get() + 1);
    }

    /// How `body` breaks the schema the document gives `method path` for `status` (none when it
    /// matches); panics when the document has no JSON body for them.
    #[track_caller]
    fn violations(&self, method: &str, path: &str, status: u16, body: &Value) -> Vec<String> {
        let status = status.to_string();
        let operation = &self.doc["paths"][path][method];
        assert!(operation.is_object(), "{method} {path} is not documented");
        let mut response = &operation["responses"][status.as_str()];
        assert!(
            response.is_object(),
            "{method} {path} does not document status {status}; body {body}"
        );
        if let Some(reference) = response["$ref"].as_str() {
            let name = reference
                .strip_prefix("#/components/responses/")
                .expect("a response reference");
            response = &self.doc["components"]["responses"][name];
        }
        let schema = &response["content"]["application/json"]["schema"];
        assert!(
            schema.is_object(),
            "{method} {path} {status} documents no JSON body"
        );
        let mut root = schema.clone();
        root["components"] = self.doc["components"].clone();
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&root)
            .expect("the document's schema compiles");
        validator
            .iter_errors(body)
            .map(|e| format!("{} (at {})", e, e.instance_path()))
            .collect()
    }
}

/// A webhook receiver on loopback that accepts every delivery.
async fn receiver() -> (String, CancellationToken) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::Router::new().route("/hook", axum::routing::post(|| async { "ok" })),
        )
        .with_graceful_shutdown(async move { until.cancelled().await })
        .await
        .ok();
    });
    (url, stop)
}

fn id(resp: &Resp, pointer: &str) -> String {
    resp.body
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("{pointer} in {}", resp.body))
        .to_owned()
}

async fn admin_get(app: &TestApp, path: &str) -> Resp {
    app.call(Method::GET, path, Some(ADMIN_TOKEN), None, &[])
        .await
}

async fn network_get(app: &TestApp, path: &str, token: &str) -> Resp {
    app.call(
        Method::GET,
        &format!("/api/network{path}"),
        Some(token),
        None,
        &[],
    )
    .await
}

/// Polls `path` (admin token or `token`) until `ready` holds of its body; the last reply.
async fn until(app: &TestApp, path: &str, token: &str, ready: impl Fn(&Value) -> bool) -> Resp {
    let mut last = None;
    for _ in 0..200 {
        let read = app.call(Method::GET, path, Some(token), None, &[]).await;
        if read.status == 200 && ready(&read.body) {
            return read;
        }
        last = Some(read);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never became ready: {:?}", last.map(|r| r.body));
}

#[tokio::test]
async fn every_reply_of_a_settlements_life_matches_the_openapi_document() {
    let contract = Contract::new();
    let mut app = TestApp::spawn().await;
    app.start_finalizer(60.0).await;
    let (hook, stop_hook) = receiver().await;

    // The admin plane.
    let created = app
        .admin(
            Method::POST,
            "/enterprises",
            json!({"name": "Contract Co", "oesLicense": true}),
        )
        .await;
    contract.check("post", "/api/admin/v1/enterprises", &created);
    let e = id(&created, "/enterprise/id");
    let licensed = app
        .admin(
            Method::PATCH,
            &format!("/enterprises/{e}"),
            json!({"oesLicense": true}),
        )
        .await;
    contract.check(
        "patch",
        "/api/admin/v1/enterprises/{enterpriseId}",
        &licensed,
    );
    let user = app
        .admin(
            Method::POST,
            "/users",
            json!({"name": "Auditor", "enterpriseIds": [e], "auditor": true}),
        )
        .await;
    contract.check("post", "/api/admin/v1/users", &user);
    let user_id = id(&user, "/user/id");
    for action in ["disable", "enable"] {
        let switched = app
            .admin(
                Method::POST,
                &format!("/users/{user_id}/{action}"),
                json!({}),
            )
            .await;
        contract.check(
            "post",
            &format!("/api/admin/v1/users/{{userId}}/{action}"),
            &switched,
        );
    }
    let rotated = app
        .admin(Method::POST, &format!("/users/{user_id}/token"), json!({}))
        .await;
    contract.check("post", "/api/admin/v1/users/{userId}/token", &rotated);
    let auditor_token = id(&rotated, "/accessToken");
    let key = app
        .admin(
            Method::POST,
            &format!("/enterprises/{e}/keys"),
            json!({"publicKey": hex::encode(ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes())}),
        )
        .await;
    contract.check(
        "post",
        "/api/admin/v1/enterprises/{enterpriseId}/keys",
        &key,
    );
    let revoked = app
        .admin(
            Method::DELETE,
            &format!("/enterprises/{e}/keys/{}", id(&key, "/key/id")),
            json!({}),
        )
        .await;
    contract.check(
        "delete",
        "/api/admin/v1/enterprises/{enterpriseId}/keys/{keyId}",
        &revoked,
    );
    assert!(
        revoked.body["key"]["revokedAt"].is_string(),
        "{}",
        revoked.body
    );
    let partner = app
        .admin(
            Method::POST,
            &format!("/enterprises/{e}/partner"),
            json!({"name": "Contract Venue", "broker": false, "clientDisputeWindowMinutes": 0.5,
                   "topUpWindowMinutes": null, "amountFormat": "decimal"}),
        )
        .await;
    contract.check(
        "post",
        "/api/admin/v1/enterprises/{enterpriseId}/partner",
        &partner,
    );
    let updated = app
        .admin(
            Method::PATCH,
            &format!("/partners/{}", id(&partner, "/partner/id")),
            json!({"active": false, "connectionKeySchema": "apiKeyAndSecret"}),
        )
        .await;
    contract.check("patch", "/api/admin/v1/partners/{partnerId}", &updated);
    let client = app
        .admin(Method::POST, &format!("/enterprises/{e}/client"), json!({}))
        .await;
    contract.check(
        "post",
        "/api/admin/v1/enterprises/{enterpriseId}/client",
        &client,
    );
    let deposit = app
        .admin(
            Method::POST,
            &format!("/enterprises/{e}/deposits"),
            json!({"currency": "BTC", "quantity": "5", "externalId": "d-1"}),
        )
        .await;
    contract.check(
        "post",
        "/api/admin/v1/enterprises/{enterpriseId}/deposits",
        &deposit,
    );
    let currencies = admin_get(&app, "/api/admin/v1/currencies").await;
    contract.check("get", "/api/admin/v1/currencies", &currencies);
    let public_key = admin_get(&app, "/api/admin/v1/webhooks/public-key").await;
    contract.check("get", "/api/admin/v1/webhooks/public-key", &public_key);

    // A client with two funded connections to a partner with short windows, its webhook set.
    let l = lifecycle_world(&app, "100000000").await;
    let w = &l.w;
    let (client, partner) = (&w.client, &w.partner);
    let webhook = app
        .admin(
            Method::PUT,
            &format!("/enterprises/{}/webhook", client.id),
            json!({ "url": hook }),
        )
        .await;
    contract.check(
        "put",
        "/api/admin/v1/enterprises/{enterpriseId}/webhook",
        &webhook,
    );
    let connected = app
        .post(
            &format!("/v1/enterprises/{}/clients/connections", client.id),
            &client.token,
            signed(
                &client.key,
                json!({"partnerId": w.partner_id, "name": "third", "connectionKey": "acct-3"}),
                &[],
                "connect-3",
            ),
        )
        .await;
    contract.check(
        "post",
        "/api/network/v1/enterprises/{enterpriseId}/clients/connections",
        &connected,
    );
    let deallocated = app
        .post(
            &w.allocation_path("deallocations"),
            &client.token,
            w.allocation("BTC", json!("1000"), "back-1", "back-1"),
        )
        .await;
    contract.check(
        "post",
        "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}/deallocations",
        &deallocated,
    );
    let released = app
        .post(
            &w.allocation_path("deallocations"),
            &client.token,
            w.allocation("BTC", json!("900000000"), "back-2", "back-2"),
        )
        .await;
    released.expect(422, Some("allocation_released"));
    contract.check_any(
        "post",
        "/api/network/v1/enterprises/{enterpriseId}/clients/connections/{connectionId}/deallocations",
        &released,
    );

    // Reads of connections, allocations and balances, from both sides.
    let written = deallocated
        .header("x-event-position")
        .expect("a write's position");
    for (side, tenant) in [("clients", client), ("partners", partner)] {
        let base = format!("/v1/enterprises/{}/{side}", tenant.id);
        let template = format!("/api/network/v1/enterprises/{{enterpriseId}}/{side}");
        let connections = app
            .get_after(&format!("{base}/connections"), &tenant.token, &written)
            .await;
        contract.check("get", &format!("{template}/connections"), &connections);
        let one = app
            .get_after(
                &format!("{base}/connections/{}", w.connection_id),
                &tenant.token,
                &written,
            )
            .await;
        contract.check(
            "get",
            &format!("{template}/connections/{{connectionId}}"),
            &one,
        );
        let allocations = app
            .get_after(&format!("{base}/allocations"), &tenant.token, &written)
            .await;
        contract.check("get", &format!("{template}/allocations"), &allocations);
        let first = id(&allocations, "/allocations/0/id");
        let one = app
            .get_after(
                &format!("{base}/allocations/{first}"),
                &tenant.token,
                &written,
            )
            .await;
        contract.check(
            "get",
            &format!("{template}/allocations/{{allocationId}}"),
            &one,
        );
        let balances = app
            .get_after(&format!("{base}/balances"), &tenant.token, &written)
            .await;
        contract.check("get", &format!("{template}/balances"), &balances);
    }

    // Staged: C1 loses 0.2 BTC, C2 gains 0.1 BTC; the client disputes C1 inside the window.
    let v2 = "/api/network/v2/enterprises/{enterpriseId}/partners/settlements";
    let s1 = stage(
        &app,
        w,
        "day-1",
        json!({&l.c1: {"BTC": "-20000000"}, &l.c2: {"BTC": "10000000"}}),
    )
    .await;
    s1.expect(200, None);
    contract.check("post", v2, &s1);
    let s1_id = id(&s1, "/settlement/id");
    // The check can fail: a field the document does not name, an amount written as a number, a
    // required field left out, a timestamp that is not one.
    let tampered: [(&str, Value); 4] = [
        ("/settlement/bogus", json!(true)),
        ("/settlement/externalId", json!(7)),
        ("/settlement/phase", json!("sometime")),
        ("/settlement/createdAt", json!("yesterday")),
    ];
    for (pointer, value) in tampered {
        let mut body = s1.body.clone();
        let (parent, field) = pointer.rsplit_once('/').expect("a pointer");
        body.pointer_mut(parent).expect("the parent")[field] = value;
        assert!(
            !contract.violations("post", v2, 200, &body).is_empty(),
            "{pointer} tampered passes: {body}"
        );
    }
    let mut missing = s1.body.clone();
    missing["settlement"]
        .as_object_mut()
        .expect("an object")
        .remove("updatedAt");
    assert!(!contract.violations("post", v2, 200, &missing).is_empty());
    let raise_path =
        "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/{settlementId}/disputes";
    let raised = raise(&app, w, &s1_id, &l.c1, json!({"BTC": "-5000000"})).await;
    raised.expect(200, None);
    contract.check("post", raise_path, &raised);
    let dispute_id = id(&raised, "/dispute/id");
    let twice = app
        .post(
            &format!(
                "/v1/enterprises/{}/clients/settlements/{s1_id}/disputes",
                client.id
            ),
            &client.token,
            signed(
                &client.key,
                json!({"connectionId": &l.c1, "expectedTransfers": {"BTC": "-1"}}),
                &[("settlementId", s1_id.clone())],
                "raise-again",
            ),
        )
        .await;
    twice.expect(409, Some("already_disputed"));
    contract.check_any("post", raise_path, &twice);
    let amended = app
        .call(
            Method::PUT,
            &format!(
                "/api/network/v1/enterprises/{}/clients/settlements/disputes/{dispute_id}",
                client.id
            ),
            Some(&client.token),
            Some(signed(
                &client.key,
                json!({"connectionId": &l.c1, "retracted": false, "reason": "less",
                       "expectedTransfers": {"BTC": "-4000000"}}),
                &[
                    ("disputeId", dispute_id.clone()),
                    ("settlementId", s1_id.clone()),
                ],
                "amend-1",
            )),
            &[],
        )
        .await;
    // Inside the window it amends; a slow run may find the window closed (422): either way the
    // reply is one the document describes.
    assert!(
        matches!(amended.status.as_u16(), 200 | 422),
        "{}",
        amended.body
    );
    contract.check_any(
        "put",
        "/api/network/v1/enterprises/{enterpriseId}/clients/settlements/disputes/{disputeId}",
        &amended,
    );

    // Disputed and executed: finalization withholds C1, execution moves C2's gain.
    settled(&app, w, &s1_id, "completed").await;
    let late = raise(&app, w, &s1_id, &l.c2, json!({"BTC": "1"})).await;
    late.expect(422, Some("dispute_window_closed"));
    contract.check_any("post", raise_path, &late);
    let retried = app
        .admin(
            Method::POST,
            &format!("/settlements/{s1_id}/retry"),
            json!({}),
        )
        .await;
    assert!(retried.status.is_client_error(), "{}", retried.body);
    contract.check_any(
        "post",
        "/api/admin/v1/settlements/{settlementId}/retry",
        &retried,
    );

    // Closed by the operator after finalization; the closure joins the next settlement.
    let closed = app
        .admin(
            Method::POST,
            &format!("/disputes/{dispute_id}/close"),
            json!({"notes": "agreed at 0.05", "adjustedTransfers": {"BTC": "-5000000"}}),
        )
        .await;
    closed.expect(200, None);
    contract.check("post", "/api/admin/v1/disputes/{disputeId}/close", &closed);
    let s2 = stage(&app, w, "day-2", json!({&l.c2: {"BTC": "1000000"}})).await;
    s2.expect(200, None);
    contract.check("post", v2, &s2);
    let s2_id = id(&s2, "/settlement/id");
    assert_eq!(
        s2.body["settlement"]["settlingDisputes"][0]["id"],
        dispute_id.as_str(),
        "{}",
        s2.body
    );
    settled(&app, w, &s2_id, "completed").await;
    app.read_models_caught_up().await;

    // Every settlement read, from both sides, once both are executed.
    for (side, tenant) in [("clients", client), ("partners", partner)] {
        let base = format!("/v1/enterprises/{}/{side}", tenant.id);
        let template = format!("/api/network/v1/enterprises/{{enterpriseId}}/{side}");
        let list = network_get(&app, &format!("{base}/settlements"), &tenant.token).await;
        contract.check("get", &format!("{template}/settlements"), &list);
        assert_eq!(list.body["settlements"].as_array().map(Vec::len), Some(2));
        for settlement in [&s1_id, &s2_id] {
            let one = network_get(
                &app,
                &format!("{base}/settlements/{settlement}"),
                &tenant.token,
            )
            .await;
            contract.check(
                "get",
                &format!("{template}/settlements/{{settlementId}}"),
                &one,
            );
        }
        for query in ["", "?closed=true", "?showRetracted=true"] {
            let disputes = network_get(
                &app,
                &format!("{base}/settlement/disputes{query}"),
                &tenant.token,
            )
            .await;
            contract.check("get", &format!("{template}/settlement/disputes"), &disputes);
        }
    }
    let carried = network_get(
        &app,
        &format!(
            "/v1/enterprises/{}/partners/settlements/{s2_id}",
            partner.id
        ),
        &partner.token,
    )
    .await;
    let closure = &carried.body["settlingDisputes"][0]["disputeClosure"];
    assert!(
        closure["adjustedSettlementTransfers"]
            .as_array()
            .is_some_and(|t| !t.is_empty()),
        "the carried closure shows its transfers: {}",
        carried.body
    );
    let transfers = network_get(
        &app,
        &format!("/v1/enterprises/{}/clients/settlementTransfers", client.id),
        &client.token,
    )
    .await;
    contract.check(
        "get",
        "/api/network/v1/enterprises/{enterpriseId}/clients/settlementTransfers",
        &transfers,
    );

    // Notifications and their webhook deliveries.
    for (side, tenant) in [("clients", client), ("partners", partner)] {
        let feed = until(
            &app,
            &format!(
                "/api/network/v1/enterprises/{}/{side}/notifications",
                tenant.id
            ),
            &tenant.token,
            |b| b["notifications"].as_array().is_some_and(|n| !n.is_empty()),
        )
        .await;
        contract.check(
            "get",
            &format!("/api/network/v1/enterprises/{{enterpriseId}}/{side}/notifications"),
            &feed,
        );
    }
    let deliveries = until(
        &app,
        &format!("/api/admin/v1/enterprises/{}/webhook-deliveries", client.id),
        ADMIN_TOKEN,
        |b| {
            b["webhookDeliveries"].as_array().is_some_and(|d| {
                d.iter().any(|n| {
                    n["delivery"]["attempts"]
                        .as_array()
                        .is_some_and(|a| !a.is_empty())
                })
            })
        },
    )
    .await;
    contract.check(
        "get",
        "/api/admin/v1/enterprises/{enterpriseId}/webhook-deliveries",
        &deliveries,
    );

    // The audit routes, and the record of those reads.
    let audit = [
        (
            "/api/audit/v1/settlements/{settlementId}/events",
            format!("/api/audit/v1/settlements/{s1_id}/events"),
        ),
        (
            "/api/audit/v1/settlements/{settlementId}",
            format!("/api/audit/v1/settlements/{s1_id}"),
        ),
        (
            "/api/audit/v1/settlements/{settlementId}",
            format!("/api/audit/v1/settlements/{s2_id}"),
        ),
        (
            "/api/audit/v1/enterprises/{enterpriseId}/balances",
            format!("/api/audit/v1/enterprises/{}/balances", client.id),
        ),
        (
            "/api/audit/v1/enterprises/{enterpriseId}/balances",
            format!("/api/audit/v1/enterprises/{}/balances", partner.id),
        ),
        (
            "/api/audit/v1/events",
            "/api/audit/v1/events?limit=500".to_owned(),
        ),
        ("/api/audit/v1/chain", "/api/audit/v1/chain".to_owned()),
        (
            "/api/audit/v1/chain/verify",
            "/api/audit/v1/chain/verify".to_owned(),
        ),
        ("/api/audit/v1/key", "/api/audit/v1/key".to_owned()),
    ];
    for (template, path) in &audit {
        let read = admin_get(&app, path).await;
        contract.check("get", template, &read);
    }
    // An auditor of the first enterprise sees its (empty) balances, not another's settlement.
    let own = app
        .call(
            Method::GET,
            &format!("/api/audit/v1/enterprises/{e}/balances"),
            Some(&auditor_token),
            None,
            &[],
        )
        .await;
    contract.check(
        "get",
        "/api/audit/v1/enterprises/{enterpriseId}/balances",
        &own,
    );
    let hidden = app
        .call(
            Method::GET,
            &format!("/api/audit/v1/settlements/{s1_id}"),
            Some(&auditor_token),
            None,
            &[],
        )
        .await;
    hidden.expect(404, Some("not_found"));
    contract.check_any("get", "/api/audit/v1/settlements/{settlementId}", &hidden);
    let reads = admin_get(&app, "/api/admin/v1/audit-reads").await;
    contract.check("get", "/api/admin/v1/audit-reads", &reads);
    assert!(
        reads.body["auditReads"]
            .as_array()
            .is_some_and(|r| r.len() > audit.len()),
        "{}",
        reads.body
    );

    assert!(
        contract.checked.get() >= 60,
        "{} replies checked",
        contract.checked.get()
    );
    stop_hook.cancel();
    app.shutdown().await;
}
