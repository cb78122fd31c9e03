//! The error contract: every 4xx and 5xx has the API error body and every response an
//! `X-Request-Id` (checked for each call in `support`), for framework errors too.

use reqwest::Method;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn framework_errors_have_the_spec_body() {
    let app = TestApp::spawn().await;
    app.call(Method::GET, "/api/network/v1/nowhere", None, None, &[])
        .await
        .expect(404, Some("not_found"));
    app.call(
        Method::DELETE,
        "/api/admin/v1/currencies",
        Some(ADMIN_TOKEN),
        None,
        &[],
    )
    .await
    .expect(405, Some("method_not_allowed"));
    let raw = |body: &'static str, content_type: &'static str| {
        app.http
            .post(format!("http://{}/api/admin/v1/enterprises", app.addr))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", content_type)
            .body(body)
    };
    let malformed = raw("{bad", "application/json").send().await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.json::<serde_json::Value>().await.unwrap()["code"],
        "malformed_json"
    );
    let wrong_type = raw("name=x", "application/x-www-form-urlencoded")
        .send()
        .await
        .unwrap();
    // Another content type is a 400 (malformed input), with a code of its own.
    assert_eq!(wrong_type.status(), 400);
    assert_eq!(
        wrong_type.json::<serde_json::Value>().await.unwrap()["code"],
        "unsupported_media_type"
    );
    let huge = format!("{{\"name\":\"{}\"}}", "x".repeat(9 * 1024 * 1024));
    let oversize = app
        .http
        .post(format!("http://{}/api/admin/v1/enterprises", app.addr))
        .bearer_auth(ADMIN_TOKEN)
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(oversize.status(), 413);
    assert_eq!(
        oversize.json::<serde_json::Value>().await.unwrap()["code"],
        "payload_too_large"
    );
    // A client-chosen request id is echoed.
    let r = app
        .call(
            Method::GET,
            "/api/admin/v1/currencies",
            Some(ADMIN_TOKEN),
            None,
            &[("x-request-id", "trace-123")],
        )
        .await;
    assert_eq!(r.header("x-request-id").as_deref(), Some("trace-123"));
    assert_eq!(r.expect(200, None)["currencies"][0]["code"], "BTC");
    // Unknown fields are refused, not ignored, and the refusal names them.
    let unknown = app
        .admin(
            Method::POST,
            "/enterprises",
            json!({"name": "x", "oesLicence": true}),
        )
        .await;
    let unknown = unknown.expect(400, Some("invalid_request"));
    assert_eq!(unknown["field"], "oesLicence", "{unknown}");
    // A value of the wrong type deep in a list is named by its path.
    let wrong = app
        .admin(
            Method::POST,
            "/users",
            json!({"name": "u", "enterpriseIds": [uuid::Uuid::new_v4(), {"id": 1}]}),
        )
        .await;
    let wrong = wrong.expect(400, Some("invalid_request"));
    assert_eq!(wrong["field"], "enterpriseIds[1]", "{wrong}");
    assert!(
        wrong["error"]
            .as_str()
            .is_some_and(|e| e.contains("enterpriseIds[1]")),
        "{wrong}"
    );
    app.shutdown().await;
}
