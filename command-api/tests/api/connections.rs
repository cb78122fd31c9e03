//! Connections over HTTP: signed rename and deactivation, what an inactive connection refuses,
//! both sides' lists, and pagination with `pageSize` and `cursor`.

use reqwest::Method;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn rename_deactivate_list_and_paginate() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let (c, token) = (&w.client, &w.client.token);
    let path = format!(
        "/v1/enterprises/{}/clients/connections/{}",
        c.id, w.connection_id
    );

    let body = signed(
        &c.key,
        json!({"name": "renamed", "active": false}),
        &[],
        "u-1",
    );
    let updated = app
        .call(
            Method::PUT,
            &format!("/api/network{path}"),
            Some(token),
            Some(body),
            &[],
        )
        .await;
    let view = updated.expect(200, None)["connection"].clone();
    assert_eq!(
        (view["name"].as_str(), view["active"].as_bool()),
        (Some("renamed"), Some(false))
    );
    let position = updated.header("x-event-position").unwrap();

    // An inactive connection takes no allocation (released), but gives funds back.
    let refused = app
        .post(
            &w.allocation_path("allocations"),
            token,
            w.allocation("BTC", json!("1"), "i-1", "i-1"),
        )
        .await;
    refused.expect(422, Some("allocation_released"));
    assert_eq!(
        refused.body["allocation"]["reason"],
        "the connection is inactive"
    );

    let read = app.get_after(&path, token, &position).await;
    assert_eq!(read.expect(200, None)["connection"]["name"], "renamed");
    let partner_list = app
        .get_after(
            &format!("/v1/enterprises/{}/partners/connections", w.partner.id),
            &w.partner.token,
            &position,
        )
        .await;
    let listed = partner_list.expect(200, None);
    assert_eq!(listed["connections"][0]["id"], w.connection_id.as_str());
    assert_eq!(listed["nextCursor"], serde_json::Value::Null);

    // Two more connections; pages of one walk all three with the cursor.
    let mut last = position;
    for n in 2..=3 {
        let body = signed(
            &c.key,
            json!({"partnerId": w.partner_id, "name": format!("c{n}"), "connectionKey": "k"}),
            &[],
            &format!("c-{n}"),
        );
        let created = app
            .post(
                &format!("/v1/enterprises/{}/clients/connections", c.id),
                token,
                body,
            )
            .await;
        last = created.header("x-event-position").unwrap();
        created.expect(200, None);
    }
    let mut seen = Vec::new();
    let mut query = "pageSize=1".to_owned();
    loop {
        let page = app
            .get_after(
                &format!("/v1/enterprises/{}/clients/connections?{query}", c.id),
                token,
                &last,
            )
            .await;
        let page = page.expect(200, None).clone();
        seen.extend(
            page["connections"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["id"].as_str().unwrap().to_owned()),
        );
        match page["nextCursor"].as_str() {
            Some(cursor) => query = format!("pageSize=1&cursor={cursor}"),
            None => break,
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 3, "every connection once: {seen:?}");
    app.get(
        &format!("/v1/enterprises/{}/clients/connections?pageSize=1001", c.id),
        token,
    )
    .await
    .expect(400, Some("invalid_page"));
    app.get(
        &format!("/v1/enterprises/{}/clients/connections?cursor=zz", c.id),
        token,
    )
    .await
    .expect(400, Some("invalid_cursor"));
    app.shutdown().await;
}
