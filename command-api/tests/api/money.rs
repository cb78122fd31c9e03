//! docs/api/guide.md: amounts as strings, exact decimals, and allocations that cannot be covered
//! answered 422 with the released allocation, nothing moved.

use serde_json::{json, Value};

use crate::support::*;

fn network(body: &Value, connection: &str, currency: &str) -> (String, String) {
    let b = &body["networkBalances"][connection]["balances"][currency];
    (
        b["available"].as_str().unwrap_or("0").to_owned(),
        b["held"].as_str().unwrap_or("0").to_owned(),
    )
}

fn custody(body: &Value, currency: &str) -> String {
    body["balances"][currency]["available"]
        .as_str()
        .unwrap_or("0")
        .to_owned()
}

#[tokio::test]
async fn allocations_move_funds_or_are_released_with_nothing_moved() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let token = &w.client.token;
    let balances = format!("/v1/enterprises/{}/clients/balances", w.client.id);

    let ok = app
        .post(
            &w.allocation_path("allocations"),
            token,
            w.allocation("BTC", json!("60000000"), "a-1", "n-1"),
        )
        .await;
    let allocation = ok.expect(200, None)["allocation"].clone();
    assert_eq!(
        (
            allocation["status"].as_str(),
            allocation["amount"]["quantity"].as_str()
        ),
        (Some("cleared"), Some("60000000"))
    );
    let position = ok
        .header("x-event-position")
        .expect("a write answers with its position");

    // More than custody holds: 422 with the released allocation.
    let short = app
        .post(
            &w.allocation_path("allocations"),
            token,
            w.allocation("BTC", json!("40000001"), "a-2", "n-2"),
        )
        .await;
    short.expect(422, Some("allocation_released"));
    assert_eq!(short.body["allocation"]["status"], "released");
    assert_eq!(
        short.body["allocation"]["reason"],
        "insufficient custody balance"
    );
    // More than the connection's available: 422.
    let over = app
        .post(
            &w.allocation_path("deallocations"),
            token,
            w.allocation("BTC", json!("60000001"), "d-1", "n-3"),
        )
        .await;
    over.expect(422, Some("allocation_released"));
    assert_eq!(over.body["allocation"]["type"], "deallocation");

    let read = app
        .get_after(
            &balances,
            token,
            &short.header("x-event-position").unwrap_or(position),
        )
        .await;
    let read = read.expect(200, None);
    assert_eq!(
        custody(read, "BTC"),
        "40000000",
        "only the cleared allocation moved funds"
    );
    assert_eq!(
        network(read, &w.connection_id, "BTC"),
        ("60000000".to_owned(), "0".to_owned())
    );

    // A deallocation that fits brings funds back.
    let back = app
        .post(
            &w.allocation_path("deallocations"),
            token,
            w.allocation("BTC", json!("10000000"), "d-2", "n-4"),
        )
        .await;
    let position = back.header("x-event-position").unwrap();
    back.expect(200, None);
    let read = app.get_after(&balances, token, &position).await;
    assert_eq!(custody(read.expect(200, None), "BTC"), "50000000");
    // Released allocations are listed too.
    let list = app
        .get_after(
            &format!("/v1/enterprises/{}/clients/allocations", w.client.id),
            token,
            &position,
        )
        .await;
    assert_eq!(
        list.expect(200, None)["allocations"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    let partner_view = app
        .get_after(
            &format!("/v1/enterprises/{}/partners/allocations", w.partner.id),
            &w.partner.token,
            &position,
        )
        .await;
    assert_eq!(
        partner_view.expect(200, None)["allocations"]
            .as_array()
            .map(Vec::len),
        Some(4)
    );
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_amounts_are_400_and_never_panic() {
    let app = TestApp::spawn().await;
    let w = world(&app, "decimal").await;
    let token = &w.client.token;
    let path = w.allocation_path("allocations");
    let cases = [
        (json!(0.5), "invalid_request"), // a JSON number where an amount belongs
        (json!("0.123456789"), "amount_too_precise"), // 9 digits for BTC's 8
        (json!("0"), "invalid_amount"),  // zero
        (json!("-1"), "invalid_amount"), // negative
        (json!("1e3"), "amount_not_a_number"), // no exponents
        (
            json!("99999999999999999999999999999999999999999"),
            "amount_overflow",
        ), // beyond i128
    ];
    for (i, (quantity, code)) in cases.into_iter().enumerate() {
        let body = w.allocation(
            "BTC",
            quantity.clone(),
            &format!("m-{i}"),
            &format!("m-{i}"),
        );
        app.post(&path, token, body).await.expect(400, Some(code));
    }
    let body = w.allocation("DOGE", json!("1"), "m-x", "m-x");
    app.post(&path, token, body)
        .await
        .expect(400, Some("unknown_currency"));
    // The partner writes decimals: "0.5" BTC is 50,000,000 base units; responses show base units.
    let ok = app
        .post(
            &path,
            token,
            w.allocation("BTC", json!("0.5"), "m-ok", "m-ok"),
        )
        .await;
    assert_eq!(
        ok.expect(200, None)["allocation"]["amount"]["quantity"],
        "50000000"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_overflowing_credit_is_refused_not_dropped() {
    use reqwest::Method;
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let max = i128::MAX.to_string();
    let deposit =
        |external: &str| json!({"currency": "USD", "quantity": max, "externalId": external});
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/deposits", w.client.id),
        deposit("usd-1"),
    )
    .await
    .expect(200, None);
    // A second deposit of the maximum would overflow custody: refused.
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/deposits", w.client.id),
        deposit("usd-2"),
    )
    .await
    .expect(400, Some("amount_overflow"));
    let token = &w.client.token;
    let path = w.allocation_path("allocations");
    app.post(&path, token, w.allocation("USD", json!(max), "o-1", "o-1"))
        .await
        .expect(200, None);
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/deposits", w.client.id),
        deposit("usd-3"),
    )
    .await
    .expect(200, None);
    // The connection holds the maximum already: one more would overflow it.
    app.post(&path, token, w.allocation("USD", json!("1"), "o-2", "o-2"))
        .await
        .expect(400, Some("amount_overflow"));
    app.shutdown().await;
}
