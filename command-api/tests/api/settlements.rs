//! Settlements over HTTP (docs/api/lifecycle.md): staging holds net losses, liabilities count
//! earlier holds, idempotency on (partner, externalId), the error matrix, and v1's immediate
//! execution.

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

fn now_rfc3339(offset_seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(offset_seconds))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A world whose connection has 0.6 BTC allocated, and the partner's custody 0.1 BTC.
async fn funded(app: &TestApp) -> World {
    let w = world(app, "baseUnits").await;
    app.post(
        &w.allocation_path("allocations"),
        &w.client.token,
        w.allocation("BTC", json!("60000000"), "fund", "fund"),
    )
    .await
    .expect(200, None);
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/deposits", w.partner.id),
        json!({"currency": "BTC", "quantity": "10000000", "externalId": "p-1"}),
    )
    .await
    .expect(200, None);
    w
}

fn settlement(
    w: &World,
    external: &str,
    amounts: Value,
    cutoff: Option<String>,
    nonce: &str,
) -> Value {
    let mut fields = json!({"externalId": external, "settlementAmounts": amounts});
    if let Some(cutoff) = cutoff {
        fields["cutoffAt"] = cutoff.into();
    }
    signed(&w.partner.key, fields, &[], nonce)
}

fn v2(w: &World) -> String {
    format!("/v2/enterprises/{}/partners/settlements", w.partner.id)
}

fn v1(w: &World) -> String {
    format!("/v1/enterprises/{}/partners/settlements", w.partner.id)
}

async fn network_btc(app: &TestApp, w: &World, position: &str) -> (String, String) {
    let read = app
        .get_after(
            &format!("/v1/enterprises/{}/clients/balances", w.client.id),
            &w.client.token,
            position,
        )
        .await;
    let b = &read.expect(200, None)["networkBalances"][&w.connection_id]["balances"]["BTC"];
    (
        b["available"].as_str().unwrap().to_owned(),
        b["held"].as_str().unwrap().to_owned(),
    )
}

#[tokio::test]
async fn staging_holds_losses_and_counts_earlier_holds() {
    let app = TestApp::spawn().await;
    let w = funded(&app).await;
    let c = w.connection_id.clone();
    let staged = app
        .post(
            &v2(&w),
            &w.partner.token,
            settlement(
                &w,
                "s-1",
                json!({&c: {"BTC": "-20000000"}}),
                Some(now_rfc3339(0)),
                "s-1",
            ),
        )
        .await;
    let body = staged.expect(200, None);
    assert_eq!(
        (
            body["settlement"]["status"].as_str(),
            body["settlement"]["settlingDisputes"].clone()
        ),
        (Some("pending"), json!([]))
    );
    let position = staged.header("x-event-position").unwrap();
    assert_eq!(
        network_btc(&app, &w, &position).await,
        ("40000000".into(), "20000000".into()),
        "the loss is held"
    );

    // 0.45 BTC fits the connection alone but not with the 0.2 already held: 422, nothing written.
    let short = app
        .post(
            &v2(&w),
            &w.partner.token,
            settlement(
                &w,
                "s-2",
                json!({&c: {"BTC": "-45000000"}}),
                Some(now_rfc3339(1)),
                "s-2",
            ),
        )
        .await;
    short.expect(422, Some("insufficient_balance"));
    assert_eq!(
        short.body["shortfalls"],
        json!([{"connectionId": c, "currency": "BTC", "needed": "45000000", "available": "40000000"}])
    );
    let read = app
        .get_after(
            &format!("/v1/enterprises/{}/clients/balances", w.client.id),
            &w.client.token,
            &position,
        )
        .await;
    assert_eq!(
        read.expect(200, None)["networkBalances"][&c]["balances"]["BTC"]["held"],
        "20000000",
        "nothing of the refusal remains"
    );

    // The same settlement again (new nonce): the same answer; any other field: 409.
    let again = app
        .post(
            &v2(&w),
            &w.partner.token,
            settlement(
                &w,
                "s-1",
                json!({&c: {"BTC": "-20000000"}}),
                staged_cutoff(body),
                "s-1b",
            ),
        )
        .await;
    assert_eq!(
        again.expect(200, None)["settlement"]["id"],
        body["settlement"]["id"]
    );
    let changed = app
        .post(
            &v2(&w),
            &w.partner.token,
            settlement(
                &w,
                "s-1",
                json!({&c: {"BTC": "-20000001"}}),
                staged_cutoff(body),
                "s-1c",
            ),
        )
        .await;
    changed.expect(409, Some("idempotency_conflict"));
    app.shutdown().await;
}

/// Two string fields of every item of a list, in order.
fn pairs(list: &Value, first: &str, second: &str) -> Vec<(String, String)> {
    let field = |item: &Value, key: &str| item[key].as_str().unwrap_or_default().to_owned();
    list.as_array()
        .into_iter()
        .flatten()
        .map(|item| (field(item, first), field(item, second)))
        .collect()
}

/// The `cutoffAt` a staged settlement answered with, to resend the identical body.
fn staged_cutoff(body: &Value) -> Option<String> {
    body["settlement"]["cutoffAt"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn twenty_identical_concurrent_requests_stage_one_settlement() {
    let app = TestApp::spawn().await;
    let w = funded(&app).await;
    let body = settlement(
        &w,
        "s-c",
        json!({&w.connection_id: {"BTC": "-1000"}}),
        Some(now_rfc3339(0)),
        "s-c",
    );
    let path = v2(&w);
    let sends = (0..20).map(|_| app.post(&path, &w.partner.token, body.clone()));
    let answers = futures::future::join_all(sends).await;
    let ids: std::collections::BTreeSet<String> = answers
        .iter()
        .map(|a| {
            a.expect(200, None)["settlement"]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "every answer names the one settlement");
    let position = answers[0].header("x-event-position").unwrap();
    assert_eq!(
        network_btc(&app, &w, &position).await.1,
        "1000",
        "held once"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn every_refusal_has_its_status() {
    let app = TestApp::spawn().await;
    let w = funded(&app).await;
    let other = tenant(&app, "Other Venue", 5).await;
    let c = w.connection_id.clone();
    let token = &w.partner.token;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({&c: {"BTC": -5}}), 400, "invalid_settlement"),
        (json!({&c: {"BTC": "0"}}), 400, "amount_zero"),
        (json!({&c: {"BTC": "1.5"}}), 400, "amount_not_a_number"),
        (json!({&c: {"DOGE": "1"}}), 400, "unknown_currency"),
        (
            json!({"00000000-0000-0000-0000-000000000001": {"BTC": "1"}}),
            400,
            "invalid_settlement",
        ),
        (
            json!({"not-a-uuid": {"BTC": "1"}}),
            400,
            "invalid_settlement",
        ),
        (json!({&c: {&c: {"BTC": "1"}}}), 400, "invalid_settlement"),
    ];
    for (n, (amounts, status, code)) in cases.into_iter().enumerate() {
        let body = settlement(
            &w,
            &format!("e-{n}"),
            amounts,
            Some(now_rfc3339(0)),
            &format!("e-{n}"),
        );
        app.post(&v2(&w), token, body)
            .await
            .expect(status, Some(code));
    }
    let far = settlement(
        &w,
        "e-far",
        json!({&c: {"BTC": "1"}}),
        Some(now_rfc3339(600)),
        "e-far",
    );
    app.post(&v2(&w), token, far)
        .await
        .expect(400, Some("invalid_settlement"));
    let missing = signed(&w.partner.key, json!({"settlementAmounts": {}}), &[], "e-m");
    app.post(&v2(&w), token, missing)
        .await
        .expect(400, Some("invalid_request"));
    app.post(
        &v1(&w),
        token,
        settlement(&w, "e-empty", json!({}), None, "e-empty"),
    )
    .await
    .expect(400, Some("invalid_settlement"));
    let mut bad_sig = settlement(
        &w,
        "e-sig",
        json!({&c: {"BTC": "1"}}),
        Some(now_rfc3339(0)),
        "e-sig",
    );
    bad_sig["signature"] = "zz".into();
    app.post(&v2(&w), token, bad_sig)
        .await
        .expect(400, Some("invalid_signature_format"));
    let wrong_key = signed(
        &w.client.key,
        json!({"externalId": "e-k", "settlementAmounts": {}, "cutoffAt": now_rfc3339(0)}),
        &[],
        "e-k",
    );
    app.post(&v2(&w), token, wrong_key)
        .await
        .expect(401, Some("invalid_signature"));
    app.post(
        &v2(&w),
        &other.token,
        settlement(&w, "e-n", json!({}), Some(now_rfc3339(0)), "e-n"),
    )
    .await
    .expect(401, Some("not_a_member"));

    // A partner with disputes enabled performs no v1 settlements.
    app.admin(
        Method::PATCH,
        &format!("/partners/{}", w.partner_id),
        json!({"clientDisputeWindowMinutes": 5}),
    )
    .await
    .expect(200, None);
    app.post(
        &v1(&w),
        token,
        settlement(&w, "e-v1", json!({&c: {"BTC": "1"}}), None, "e-v1"),
    )
    .await
    .expect(403, Some("disputes_enabled"));
    app.admin(
        Method::PATCH,
        &format!("/partners/{}", w.partner_id),
        json!({"active": false}),
    )
    .await
    .expect(200, None);
    app.post(
        &v2(&w),
        token,
        settlement(&w, "e-i", json!({}), Some(now_rfc3339(0)), "e-i"),
    )
    .await
    .expect(403, Some("partner_inactive"));
    app.admin(
        Method::PATCH,
        &format!("/enterprises/{}", w.partner.id),
        json!({"oesLicense": false}),
    )
    .await
    .expect(200, None);
    app.post(
        &v2(&w),
        token,
        settlement(&w, "e-l", json!({}), Some(now_rfc3339(0)), "e-l"),
    )
    .await
    .expect(403, Some("no_oes_license"));
    app.shutdown().await;
}

#[tokio::test]
async fn v1_executes_at_once_fails_when_the_partner_is_short_and_retries() {
    let app = TestApp::spawn().await;
    let w = funded(&app).await;
    let c = w.connection_id.clone();
    let token = &w.partner.token;
    // A loss: the connection pays the partner at once.
    let done = app
        .post(
            &v1(&w),
            token,
            settlement(&w, "v1-a", json!({&c: {"BTC": "-5000000"}}), None, "v1-a"),
        )
        .await;
    let s = done.expect(200, None)["settlement"].clone();
    assert_eq!(s["status"], "completed");
    assert!(s["finalizedAt"].is_string());
    // A gain beyond the partner's custody (0.1 + 0.05 BTC): failed, naming the currency.
    let body = settlement(&w, "v1-b", json!({&c: {"BTC": "20000000"}}), None, "v1-b");
    let failed = app.post(&v1(&w), token, body.clone()).await;
    let f = failed.expect(200, None)["settlement"].clone();
    assert_eq!(f["status"], "failed");
    assert!(f["reason"].as_str().unwrap().contains("BTC"));
    // The partner tops up; the identical body retries the execution.
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/deposits", w.partner.id),
        json!({"currency": "BTC", "quantity": "5000000", "externalId": "p-2"}),
    )
    .await
    .expect(200, None);
    let retried = app.post(&v1(&w), token, body).await;
    let r = retried.expect(200, None)["settlement"].clone();
    assert_eq!(
        (r["id"].clone(), r["status"].as_str()),
        (f["id"].clone(), Some("completed"))
    );
    let position = retried.header("x-event-position").unwrap();
    assert_eq!(
        network_btc(&app, &w, &position).await,
        ("75000000".into(), "0".into()),
        "60 − 5 + 20, nothing held"
    );
    let partner = app
        .get_after(
            &format!("/v1/enterprises/{}/partners/balances", w.partner.id),
            token,
            &position,
        )
        .await;
    assert_eq!(
        partner.expect(200, None)["balances"]["BTC"]["available"],
        "0",
        "10 + 5 + 5 − 20: conserved"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn both_sides_read_settlements_and_transfers() {
    let app = TestApp::spawn().await;
    let w = funded(&app).await;
    let c = w.connection_id.clone();
    let staged = app
        .post(
            &v2(&w),
            &w.partner.token,
            settlement(
                &w,
                "r-1",
                json!({&c: {"BTC": "-1000"}}),
                Some(now_rfc3339(0)),
                "r-1",
            ),
        )
        .await;
    let id = staged.expect(200, None)["settlement"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let done = app
        .post(
            &v1(&w),
            &w.partner.token,
            settlement(&w, "r-2", json!({&c: {"BTC": "500"}}), None, "r-2"),
        )
        .await;
    let position = done.header("x-event-position").unwrap();
    done.expect(200, None);

    let partner_list = format!("/v1/enterprises/{}/partners/settlements", w.partner.id);
    let all = app
        .get_after(&partner_list, &w.partner.token, &position)
        .await;
    assert_eq!(
        all.expect(200, None)["settlements"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let pending = app
        .get_after(
            &format!("{partner_list}?statuses=pending&externalIds=r-1"),
            &w.partner.token,
            &position,
        )
        .await;
    let pending = pending.expect(200, None)["settlements"].clone();
    assert_eq!(
        (pending[0]["id"].as_str(), pending.as_array().map(Vec::len)),
        (Some(id.as_str()), Some(1))
    );
    assert_eq!(
        staged.body["settlement"]["cutoffAt"], pending[0]["cutoffAt"],
        "read model and reply agree"
    );

    let one = app
        .get_after(&format!("{partner_list}/{id}"), &w.partner.token, &position)
        .await;
    let one = one.expect(200, None);
    assert_eq!(one["settlementTransfers"][0]["quantity"], "-1000");
    assert_eq!(one["settlementTransfers"][0]["status"], "pending");
    assert_eq!(one["settlingDisputes"], json!([]));

    let client_list = app
        .get_after(
            &format!("/v1/enterprises/{}/clients/settlements", w.client.id),
            &w.client.token,
            &position,
        )
        .await;
    let directions: Vec<(String, String)> = pairs(
        &client_list.expect(200, None)["settlements"],
        "externalId",
        "transferDirection",
    );
    assert_eq!(
        directions,
        vec![
            ("r-1".into(), "send".into()),
            ("r-2".into(), "receive".into())
        ]
    );
    let transfers = app
        .get_after(
            &format!(
                "/v1/enterprises/{}/clients/settlementTransfers",
                w.client.id
            ),
            &w.client.token,
            &position,
        )
        .await;
    let transfers = transfers.expect(200, None)["settlementTransfers"].clone();
    assert_eq!(transfers[1]["status"], "completed");
    assert_eq!(transfers[1]["txIds"].as_array().map(Vec::len), Some(1));
    // The client's feed lists both settlements: v2 as staged, v1 by its outcome.
    let feed = app
        .get_after(
            &format!("/v1/enterprises/{}/clients/notifications", w.client.id),
            &w.client.token,
            &position,
        )
        .await;
    let kinds: Vec<(String, String)> = pairs(
        &feed.expect(200, None)["notifications"],
        "type",
        "externalId",
    );
    assert_eq!(
        kinds,
        vec![
            ("settlement.staged".into(), "r-1".into()),
            ("settlement.completed".into(), "r-2".into())
        ]
    );
    // Another partner sees none of it.
    let other = tenant(&app, "Stranger", 6).await;
    app.admin(Method::POST, &format!("/enterprises/{}/partner", other.id), json!({"name": "S", "broker": false, "clientDisputeWindowMinutes": null, "topUpWindowMinutes": null}))
        .await
        .expect(200, None);
    app.get(
        &format!("/v1/enterprises/{}/partners/settlements/{id}", other.id),
        &other.token,
    )
    .await
    .expect(404, Some("not_found"));
    app.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_thousand_connection_settlement_stages() {
    use events::codec::{encode_event, Actor, Metadata};
    use events::domain::connection::{network_account_id_of, ConnectionCreated};
    use events::domain::event::Timestamp;
    use events::domain::money::AmountFormat;
    use events::domain::{CommandId, StreamName};
    use events::store::{AppendRequest, EventStore, NewEvent};
    use uuid::Uuid;

    const CONNECTIONS: usize = 10_000;
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let client_enterprise = Uuid::parse_str(&w.client.id).unwrap();
    let partner_id = Uuid::parse_str(&w.partner_id).unwrap();
    let partner_enterprise = Uuid::parse_str(&w.partner.id).unwrap();
    let ids: Vec<Uuid> = (0..CONNECTIONS).map(|_| Uuid::new_v4()).collect();
    let command = CommandId::derive("bulk-connections", &[partner_id.as_bytes()]);
    let streams: Vec<StreamName> = ids
        .iter()
        .map(|id| StreamName::for_uuid("connection", *id).unwrap())
        .collect();
    let request = AppendRequest {
        command_id: command,
        request_hash: [0; 32],
        expected: streams.iter().map(|s| (s.clone(), 0)).collect(),
        events: ids
            .iter()
            .zip(&streams)
            .map(|(id, stream)| NewEvent {
                stream: stream.clone(),
                event: encode_event(
                    &ConnectionCreated {
                        connection_id: *id,
                        name: "bulk".into(),
                        client_id: events::domain::client::client_id_of(client_enterprise),
                        client_enterprise_id: client_enterprise,
                        partner_id,
                        partner_enterprise_id: partner_enterprise,
                        network_account_id: network_account_id_of(*id),
                        amount_format: AmountFormat::BaseUnits,
                        connection_key: "k".into(),
                        nonce: "n".into(),
                        proof: "p".into(),
                        at: Timestamp(0),
                        signed: None,
                    }
                    .into(),
                ),
            })
            .collect(),
        metadata: Metadata {
            command_id: command,
            causation_id: None,
            correlation_id: command.as_uuid(),
            actor: Actor::Admin,
            request_id: None,
            key_id: None,
        },
        outcome: vec![],
        nonce: None,
        recorded_at: Timestamp(0),
    };
    EventStore::new(app.db.pool.clone())
        .append(&request)
        .await
        .expect("bulk connections");

    let amounts: serde_json::Map<String, Value> = ids
        .iter()
        .map(|id| (id.to_string(), json!({"BTC": "1"})))
        .collect();
    let body = settlement(
        &w,
        "big",
        Value::Object(amounts),
        Some(now_rfc3339(0)),
        "big",
    );
    let started = std::time::Instant::now();
    let staged = app.post(&v2(&w), &w.partner.token, body).await;
    let elapsed = started.elapsed();
    let id = staged.expect(200, None)["settlement"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    println!("a {CONNECTIONS}-line settlement staged in {elapsed:?} (debug build, test machine)");
    let position = staged.header("x-event-position").unwrap();
    // Projecting 10,000 transfers in a debug build can outlast one read's bounded wait: read
    // again (each read waits for the write) until the projection shows the settlement.
    let mut transfers = None;
    for _ in 0..30 {
        let read = app
            .get_after(
                &format!("/v1/enterprises/{}/partners/settlements/{id}", w.partner.id),
                &w.partner.token,
                &position,
            )
            .await;
        if read.status == 200 {
            transfers = read.body["settlementTransfers"].as_array().map(Vec::len);
            break;
        }
    }
    assert_eq!(transfers, Some(CONNECTIONS), "one transfer per line");
    app.shutdown().await;
}
