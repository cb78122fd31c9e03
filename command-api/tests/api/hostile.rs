//! Hostile input, as a partner or client trying to break the engine would send it: control
//! characters (NUL included) and oversized values in every text field of every signed and admin
//! route, one settlement line over the cap, deep JSON, invalid UTF-8, oversized bodies, slow
//! clients. Each gets a clear 4xx with the error body naming the field; nothing reaches the log;
//! and after each case another tenant's write is readable with `X-Min-Position` — the read side
//! is never frozen.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::disputes::{lifecycle_world, raise, stage};
use crate::support::*;

/// Values no text field may hold: control characters, and more bytes than any text limit.
fn hostile_values() -> Vec<(&'static str, String, &'static str)> {
    vec![
        ("NUL", "a\u{0}b".into(), "field_control_character"),
        ("ESC", "a\u{1b}[31mb".into(), "field_control_character"),
        ("DEL", "a\u{7f}".into(), "field_control_character"),
        ("C1", "a\u{85}".into(), "field_control_character"),
        ("4 KiB", "x".repeat(4_100), "field_too_long"),
    ]
}

/// Another tenant's deposit, read back through the read models within the 2 s `X-Min-Position`
/// wait: proof that the case before it did not freeze the read side.
async fn read_side_flows(app: &TestApp, other: &World, tag: &str) {
    let deposit = app
        .admin(
            Method::POST,
            &format!("/enterprises/{}/deposits", other.client.id),
            json!({"currency": "ETH", "quantity": "1", "externalId": format!("flow-{tag}")}),
        )
        .await;
    deposit.expect(200, None);
    let position = deposit.header("x-event-position").expect("position token");
    let read = app
        .get_after(
            &format!("/v1/enterprises/{}/clients/balances", other.client.id),
            &other.client.token,
            &position,
        )
        .await;
    // A 200 to a read with X-Min-Position is the proof: the server answers it only once the read
    // models reflect the write (within its bounded wait), never with a stale read.
    let body = read.expect(200, None);
    assert!(
        body["balances"]["ETH"]["available"].as_str().is_some(),
        "after {tag} the other tenant's deposit is visible: {body}"
    );
}

#[track_caller]
fn refused(r: &Resp, case: &str, field: &str, code: &str) {
    assert_eq!(r.status.as_u16(), 400, "{case}: {}", r.body);
    assert_eq!(r.body["code"], code, "{case}: {}", r.body);
    assert_eq!(r.body["field"], field, "{case}: {}", r.body);
    assert!(
        r.body["error"].as_str().is_some_and(|e| e.contains(field)),
        "{case}: the sentence names the field: {}",
        r.body
    );
    assert!(r.body["requestId"].is_string(), "{case}: {}", r.body);
}

/// Events in the log: a refusal must add none.
async fn log_len(app: &TestApp) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&app.db.pool)
        .await
        .expect("count events")
}

#[tokio::test]
async fn control_characters_and_oversized_text_are_refused_in_every_field() {
    let app = TestApp::spawn().await;
    let l = lifecycle_world(&app, "100000000").await;
    let w = &l.w;
    let other = world(&app, "baseUnits").await;
    let staged = stage(&app, w, "s-1", json!({ &l.c1: {"BTC": "-1000"} })).await;
    let settlement = staged.expect(200, None)["settlement"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let raised = raise(&app, w, &settlement, &l.c1, json!({"BTC": "-500"})).await;
    let dispute = raised.expect(200, None)["dispute"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (c, p) = (&w.client, &w.partner);
    let cutoff = || chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);

    let mut n = 0;
    for (what, value, code) in hostile_values() {
        let mut nonce = || {
            n += 1;
            format!("hostile-{n}")
        };
        let alloc_ids = [
            ("connectionId", l.c1.clone()),
            ("enterpriseId", c.id.clone()),
        ];
        let dispute_ids = [
            ("disputeId", dispute.clone()),
            ("settlementId", settlement.clone()),
        ];
        let close_ids = [
            ("enterpriseId", c.id.clone()),
            ("disputeId", dispute.clone()),
        ];
        // (route, method, path, signed body, field)
        let signed_cases: Vec<(Method, String, &str, Value, &str)> = vec![
            (
                Method::POST,
                format!("/v1/enterprises/{}/clients/connections", c.id),
                &c.token,
                signed(
                    &c.key,
                    json!({"partnerId": w.partner_id, "name": value, "connectionKey": "k"}),
                    &[],
                    &nonce(),
                ),
                "name",
            ),
            (
                Method::POST,
                format!("/v1/enterprises/{}/clients/connections", c.id),
                &c.token,
                signed(
                    &c.key,
                    json!({"partnerId": w.partner_id, "name": "n", "connectionKey": value}),
                    &[],
                    &nonce(),
                ),
                "connectionKey",
            ),
            (
                Method::PUT,
                format!("/v1/enterprises/{}/clients/connections/{}", c.id, l.c1),
                &c.token,
                signed(&c.key, json!({"name": value}), &[], &nonce()),
                "name",
            ),
            (
                Method::POST,
                format!(
                    "/v1/enterprises/{}/clients/connections/{}/allocations",
                    c.id, l.c1
                ),
                &c.token,
                signed(
                    &c.key,
                    json!({"amount": {"currency": "BTC", "quantity": "1"}, "clientExternalId": value}),
                    &alloc_ids,
                    &nonce(),
                ),
                "clientExternalId",
            ),
            (
                Method::POST,
                format!(
                    "/v1/enterprises/{}/clients/connections/{}/deallocations",
                    c.id, l.c1
                ),
                &c.token,
                signed(
                    &c.key,
                    json!({"amount": {"currency": "BTC", "quantity": "1"}, "clientExternalId": "d", "notes": value}),
                    &alloc_ids,
                    &nonce(),
                ),
                "notes",
            ),
            (
                Method::POST,
                format!(
                    "/v1/enterprises/{}/clients/settlements/{settlement}/disputes",
                    c.id
                ),
                &c.token,
                signed(
                    &c.key,
                    json!({"connectionId": l.c2, "reason": value, "expectedTransfers": {"BTC": "1"}}),
                    &[("settlementId", settlement.clone())],
                    &nonce(),
                ),
                "reason",
            ),
            (
                Method::PUT,
                format!(
                    "/v1/enterprises/{}/clients/settlements/disputes/{dispute}",
                    c.id
                ),
                &c.token,
                signed(
                    &c.key,
                    json!({"connectionId": l.c1, "retracted": false, "reason": value}),
                    &dispute_ids,
                    &nonce(),
                ),
                "reason",
            ),
            (
                Method::POST,
                format!(
                    "/v1/enterprises/{}/clients/settlements/disputes/{dispute}/close",
                    c.id
                ),
                &c.token,
                signed(&c.key, json!({"notes": value}), &close_ids, &nonce()),
                "notes",
            ),
            (
                Method::POST,
                format!("/v2/enterprises/{}/partners/settlements", p.id),
                &p.token,
                signed(
                    &p.key,
                    json!({"externalId": value, "settlementAmounts": {}, "cutoffAt": cutoff()}),
                    &[],
                    &nonce(),
                ),
                "externalId",
            ),
            (
                Method::POST,
                format!("/v2/enterprises/{}/partners/settlements", p.id),
                &p.token,
                signed(
                    &p.key,
                    json!({"externalId": "e", "notes": value, "settlementAmounts": {}, "cutoffAt": cutoff()}),
                    &[],
                    &nonce(),
                ),
                "notes",
            ),
        ];
        for (method, path, token, body, field) in signed_cases {
            let case = format!("{what} in {field} of {method} {path}");
            let before = log_len(&app).await;
            let r = app
                .call(
                    method,
                    &format!("/api/network{path}"),
                    Some(token),
                    Some(body),
                    &[],
                )
                .await;
            refused(&r, &case, field, code);
            assert_eq!(
                log_len(&app).await,
                before,
                "{case}: nothing reaches the log"
            );
        }
        let admin_cases: Vec<(String, Value, &str)> = vec![
            (
                "/enterprises".into(),
                json!({"name": value, "oesLicense": true}),
                "name",
            ),
            (
                "/users".into(),
                json!({"name": value, "enterpriseIds": [c.id]}),
                "name",
            ),
            (
                format!("/enterprises/{}/partner", other.client.id),
                json!({"name": value, "broker": false, "clientDisputeWindowMinutes": null, "topUpWindowMinutes": null, "amountFormat": "baseUnits"}),
                "name",
            ),
            (
                format!("/enterprises/{}/deposits", c.id),
                json!({"currency": "BTC", "quantity": "1", "externalId": value}),
                "externalId",
            ),
            (
                format!("/disputes/{dispute}/close"),
                json!({"notes": value, "adjustedTransfers": {}}),
                "notes",
            ),
        ];
        for (path, body, field) in admin_cases {
            let case = format!("{what} in {field} of POST {path}");
            let r = app.admin(Method::POST, &path, body).await;
            refused(&r, &case, field, code);
        }
        // A webhook URL holds visible ASCII only (percent-encode the rest).
        let url = format!("https://hooks.example.com/{value}");
        let r = app
            .admin(
                Method::PUT,
                &format!("/enterprises/{}/webhook", c.id),
                json!({ "url": url }),
            )
            .await;
        assert_eq!(
            r.status.as_u16(),
            400,
            "{what} in a webhook URL: {}",
            r.body
        );
        // The nonce is checked with the signature rules.
        let r = app
            .post(
                &format!("/v2/enterprises/{}/partners/settlements", p.id),
                &p.token,
                signed(
                    &p.key,
                    json!({"externalId": "e", "settlementAmounts": {}, "cutoffAt": cutoff()}),
                    &[],
                    &value,
                ),
            )
            .await;
        r.expect(400, Some("invalid_nonce"));
        read_side_flows(&app, &other, what).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn one_line_over_the_settlement_cap_is_refused_and_deep_or_broken_json_too() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let other = world(&app, "baseUnits").await;
    let lines = events::domain::limits::MAX_SETTLEMENT_LINES + 1;
    let amounts: serde_json::Map<String, Value> = (0..lines)
        .map(|_| (uuid::Uuid::new_v4().to_string(), json!({"BTC": "-1"})))
        .collect();
    let body = signed(
        &w.partner.key,
        json!({"externalId": "too-many", "settlementAmounts": amounts, "cutoffAt": chrono::Utc::now().to_rfc3339()}),
        &[],
        "too-many",
    );
    let r = app
        .post(
            &format!("/v2/enterprises/{}/partners/settlements", w.partner.id),
            &w.partner.token,
            body,
        )
        .await;
    refused(&r, "10,001 lines", "settlementAmounts", "too_many_items");
    read_side_flows(&app, &other, "lines").await;

    let raw = |path: String, body: Vec<u8>| {
        app.http
            .post(format!("http://{}/api/network{path}", app.addr))
            .bearer_auth(&w.client.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let connections = format!("/v1/enterprises/{}/clients/connections", w.client.id);
    let deep = format!("{}{}", "[".repeat(1000), "]".repeat(1000));
    let r = raw(connections.clone(), deep.into_bytes()).await.unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "json_too_deep", "{body}");
    read_side_flows(&app, &other, "deep").await;

    let r = raw(connections.clone(), b"{\"name\":\"\xff\xfe\"}".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "malformed_json", "{body}");
    read_side_flows(&app, &other, "utf-8").await;

    // A 1 MB field: over an ordinary route's body limit (413), and on the settlement route,
    // whose limit is larger, over the field's own (400 naming it).
    let mega = "x".repeat(1024 * 1024);
    let r = raw(
        connections,
        serde_json::to_vec(&json!({"name": mega, "nonce": "n"})).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large", "{body}");
    let r = app
        .post(
            &format!("/v2/enterprises/{}/partners/settlements", w.partner.id),
            &w.partner.token,
            signed(
                &w.partner.key,
                json!({"externalId": mega, "settlementAmounts": {}, "cutoffAt": chrono::Utc::now().to_rfc3339()}),
                &[],
                "mega",
            ),
        )
        .await;
    refused(&r, "1 MB externalId", "externalId", "field_too_long");
    read_side_flows(&app, &other, "mega").await;
    app.shutdown().await;
}

/// Sends `head` on a fresh connection and returns the status line's code.
async fn status_of(stream: &mut TcpStream) -> u16 {
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    while !response.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
            Ok(Err(_)) => break,
        }
    }
    let text = String::from_utf8_lossy(&response);
    text.split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn large_bodies_are_not_read_before_the_token_is_checked() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let path = format!(
        "/api/network/v1/enterprises/{}/clients/connections",
        w.client.id
    );
    // 8 MiB announced, 1 KiB sent: a bad token is answered 401 without waiting for the rest.
    for (token, expected) in [("st_bogus", 401), (w.client.token.as_str(), 413)] {
        let mut stream = TcpStream::connect(&app.addr).await.unwrap();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            8 * 1024 * 1024
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b' '; 1024]).await.unwrap();
        let started = Instant::now();
        assert_eq!(status_of(&mut stream).await, expected, "token {token}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let other = world(&app, "baseUnits").await;
    read_side_flows(&app, &other, "8 MiB").await;
    app.shutdown().await;
}

#[tokio::test]
async fn the_original_freeze_is_refused_at_the_door() {
    // The report that started this: a 4,000-character externalId with empty amounts was
    // accepted, and the read-model consumer then failed on it forever.
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let other = world(&app, "baseUnits").await;
    let r = app
        .post(
            &format!("/v2/enterprises/{}/partners/settlements", w.partner.id),
            &w.partner.token,
            signed(
                &w.partner.key,
                json!({"externalId": "e".repeat(4_000), "settlementAmounts": {}, "cutoffAt": chrono::Utc::now().to_rfc3339()}),
                &[],
                "freeze",
            ),
        )
        .await;
    refused(&r, "4,000-byte externalId", "externalId", "field_too_long");
    read_side_flows(&app, &other, "freeze").await;
    // The longest externalId allowed stages, and is read back.
    let longest = "e".repeat(events::domain::limits::MAX_EXTERNAL_ID_BYTES);
    let staged = app
        .post(
            &format!("/v2/enterprises/{}/partners/settlements", w.partner.id),
            &w.partner.token,
            signed(
                &w.partner.key,
                json!({"externalId": longest, "settlementAmounts": {}, "cutoffAt": chrono::Utc::now().to_rfc3339()}),
                &[],
                "longest",
            ),
        )
        .await;
    staged.expect(200, None);
    let position = staged.header("x-event-position").unwrap();
    let list = app
        .get_after(
            &format!("/v1/enterprises/{}/partners/settlements", w.partner.id),
            &w.partner.token,
            &position,
        )
        .await;
    assert_eq!(
        list.expect(200, None)["settlements"][0]["externalId"],
        longest
    );
    // Filters are inputs too: a NUL in a query value never reaches SQL.
    let filtered = app
        .get(
            &format!(
                "/v1/enterprises/{}/partners/settlements?externalIds=a%00b",
                w.partner.id
            ),
            &w.partner.token,
        )
        .await;
    refused(
        &filtered,
        "NUL in a filter",
        "externalIds",
        "field_control_character",
    );
    read_side_flows(&app, &other, "filter").await;
    app.shutdown().await;
}
