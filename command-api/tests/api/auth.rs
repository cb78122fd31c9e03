//! docs/api/guide.md: each access rule, in order, with its status; other tenants' objects are 404.

use reqwest::Method;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn every_access_rule_answers_with_its_status() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let (c, p) = (&w.client, &w.partner);
    let client_balances = format!("/v1/enterprises/{}/clients/balances", c.id);
    let partner_balances = format!("/v1/enterprises/{}/partners/balances", p.id);

    // 1. No token, an unknown token, a malformed token: 401.
    app.call(
        Method::GET,
        &format!("/api/network{client_balances}"),
        None,
        None,
        &[],
    )
    .await
    .expect(401, Some("unauthenticated"));
    let forged = format!(
        "st_{}_{}",
        c.token.split('_').nth(1).unwrap(),
        "00".repeat(32)
    );
    app.get(&client_balances, &forged)
        .await
        .expect(401, Some("unauthenticated"));
    app.get(&client_balances, "garbage")
        .await
        .expect(401, Some("unauthenticated"));
    // 2. A member of the partner calling the client's routes: 401.
    app.get(&client_balances, &p.token)
        .await
        .expect(401, Some("not_a_member"));
    // 4. Partner route on an enterprise without a partner record; client route without a client record: 403.
    app.get(
        &format!("/v1/enterprises/{}/partners/balances", c.id),
        &c.token,
    )
    .await
    .expect(403, Some("no_partner_record"));
    app.get(
        &format!("/v1/enterprises/{}/clients/balances", p.id),
        &p.token,
    )
    .await
    .expect(403, Some("no_client_record"));
    // Access is decided before the body is looked at: a bad body from a stranger is still 401/403.
    let path = format!("/api/network{}", w.allocation_path("allocations"));
    let raw = |token: String| {
        app.http
            .post(format!("http://{}{path}", app.addr))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body("{bad")
    };
    assert_eq!(
        raw(forged.clone()).send().await.unwrap().status(),
        401,
        "unknown token, malformed JSON"
    );
    assert_eq!(
        raw(p.token.clone()).send().await.unwrap().status(),
        401,
        "not a member, malformed JSON"
    );
    assert_eq!(
        raw(c.token.clone()).send().await.unwrap().status(),
        400,
        "the owner gets the 400"
    );
    // Both work for their owners.
    app.get(&client_balances, &c.token).await.expect(200, None);
    app.get(&partner_balances, &p.token).await.expect(200, None);

    // An inactive partner: 403 on partner routes.
    app.admin(
        Method::PATCH,
        &format!("/partners/{}", w.partner_id),
        json!({"active": false}),
    )
    .await
    .expect(200, None);
    app.get(&partner_balances, &p.token)
        .await
        .expect(403, Some("partner_inactive"));
    app.admin(
        Method::PATCH,
        &format!("/partners/{}", w.partner_id),
        json!({"active": true}),
    )
    .await
    .expect(200, None);

    // 3. No licence: 403 (checked before the record).
    app.admin(
        Method::PATCH,
        &format!("/enterprises/{}", c.id),
        json!({"oesLicense": false}),
    )
    .await
    .expect(200, None);
    app.get(&client_balances, &c.token)
        .await
        .expect(403, Some("no_oes_license"));
    app.admin(
        Method::PATCH,
        &format!("/enterprises/{}", c.id),
        json!({"oesLicense": true}),
    )
    .await
    .expect(200, None);
    app.shutdown().await;
}

#[tokio::test]
async fn another_tenants_objects_are_invisible() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let other = tenant(&app, "Other Client", 3).await;
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/client", other.id),
        json!({}),
    )
    .await
    .expect(200, None);

    // The other client names w's connection on its own routes: 404, never the data.
    let read = app
        .get(
            &format!(
                "/v1/enterprises/{}/clients/connections/{}",
                other.id, w.connection_id
            ),
            &other.token,
        )
        .await;
    read.expect(404, Some("not_found"));
    assert!(!read.body.to_string().contains(&w.client.id));
    let path = format!(
        "/v1/enterprises/{}/clients/connections/{}/allocations",
        other.id, w.connection_id
    );
    let body = signed(
        &other.key,
        json!({"amount": {"currency": "BTC", "quantity": "1"}, "clientExternalId": "steal"}),
        &[
            ("connectionId", w.connection_id.clone()),
            ("enterpriseId", other.id.clone()),
        ],
        "n-steal",
    );
    app.post(&path, &other.token, body)
        .await
        .expect(404, Some("not_found"));
    // And the admin API refuses user tokens.
    app.call(
        Method::GET,
        "/api/admin/v1/currencies",
        Some(&w.client.token),
        None,
        &[],
    )
    .await
    .expect(401, Some("unauthenticated"));
    app.shutdown().await;
}
