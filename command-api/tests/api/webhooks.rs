//! Webhook notifications end to end on the real stack: the admin configures a URL, a staged
//! settlement notifies the client, the finalizer's deliverer signs, retries and logs until a
//! local receiver accepts, and the feeds and the delivery log show the same story.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode as AxumStatus};
use axum::routing::post;
use base64::Engine;
use ed25519_dalek::{Signature, VerifyingKey};
use events::domain::event::Timestamp;
use finalizer::webhooks::{Deliverer, DeliveryStep, WebhookConfig};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// One request the receiver saw.
#[derive(Clone, Debug)]
struct Received {
    id: String,
    timestamp: String,
    signature: String,
    body: Vec<u8>,
}

/// A local webhook receiver that answers 500 to its first `failures` requests, then 200.
async fn receiver(failures: usize) -> (String, Arc<Mutex<Vec<Received>>>, CancellationToken) {
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let log = seen.clone();
    let handler = move |headers: HeaderMap, body: Bytes| {
        let log = log.clone();
        async move {
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            let mut log = log.lock().expect("receiver log");
            log.push(Received {
                id: header("webhook-id"),
                timestamp: header("webhook-timestamp"),
                signature: header("webhook-signature"),
                body: body.to_vec(),
            });
            if log.len() <= failures {
                AxumStatus::INTERNAL_SERVER_ERROR
            } else {
                AxumStatus::OK
            }
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let url = format!(
        "http://{}/hooks/settle",
        listener.local_addr().expect("addr")
    );
    let stop = CancellationToken::new();
    let until = stop.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            axum::Router::new().route("/hooks/settle", post(handler)),
        )
        .with_graceful_shutdown(async move { until.cancelled().await })
        .await
        .ok();
    });
    (url, seen, stop)
}

fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_micros())
}

fn later(t: Timestamp, by: Duration) -> Timestamp {
    Timestamp(t.0 + i64::try_from(by.as_micros()).expect("fits"))
}

/// The admin's delivery log of an enterprise.
async fn deliveries(app: &TestApp, enterprise: &str) -> Vec<Value> {
    let read = app
        .admin(
            Method::GET,
            &format!("/enterprises/{enterprise}/webhook-deliveries"),
            json!({}),
        )
        .await;
    read.expect(200, None)["webhookDeliveries"]
        .as_array()
        .expect("list")
        .clone()
}

/// Waits until the notifications projection has written `n` notifications for `enterprise`.
async fn notified(app: &TestApp, enterprise: &str, n: usize) -> Vec<Value> {
    let shown = events::testing::eventually(Duration::from_secs(20), || async {
        deliveries(app, enterprise).await.len() >= n
    })
    .await;
    assert!(shown, "{n} notification(s) for {enterprise}");
    deliveries(app, enterprise).await
}

fn verifies(public_key: &[u8; 32], r: &Received) -> bool {
    let key = VerifyingKey::from_bytes(public_key).expect("public key");
    let Some(b64) = r.signature.strip_prefix("v1a,") else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(b64) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(&bytes) else {
        return false;
    };
    let mut content = format!("{}.{}.", r.id, r.timestamp).into_bytes();
    content.extend_from_slice(&r.body);
    key.verify_strict(&content, &signature).is_ok()
}

fn stage(w: &World, external: &str, amounts: Value) -> Value {
    let cutoff = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    signed(
        &w.partner.key,
        json!({"externalId": external, "settlementAmounts": amounts, "cutoffAt": cutoff}),
        &[],
        external,
    )
}

#[tokio::test]
async fn a_notification_is_signed_retried_logged_and_accepted_once() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    // A long dispute window: nothing else happens to the settlement while the test runs.
    app.admin(
        Method::PATCH,
        &format!("/partners/{}", w.partner_id),
        json!({"clientDisputeWindowMinutes": 60}),
    )
    .await
    .expect(200, None);
    let (url, seen, stop_receiver) = receiver(3).await;

    let set = app
        .admin(
            Method::PUT,
            &format!("/enterprises/{}/webhook", w.client.id),
            json!({ "url": url }),
        )
        .await;
    let webhook = set.expect(200, None)["webhook"].clone();
    assert_eq!(
        (webhook["enterpriseId"].as_str(), webhook["url"].as_str()),
        (Some(w.client.id.as_str()), Some(url.as_str()))
    );
    let again = app
        .admin(
            Method::PUT,
            &format!("/enterprises/{}/webhook", w.client.id),
            json!({ "url": url }),
        )
        .await;
    assert_eq!(
        again.expect(200, None)["webhook"],
        webhook,
        "the same URL again records nothing"
    );

    let staged = app
        .post(
            &format!("/v2/enterprises/{}/partners/settlements", w.partner.id),
            &w.partner.token,
            stage(&w, "s-hook", json!({ &w.connection_id: {"BTC": "2500"} })),
        )
        .await;
    let settlement_id = staged.expect(200, None)["settlement"]["id"]
        .as_str()
        .expect("settlement id")
        .to_owned();
    let listed = notified(&app, &w.client.id, 1).await;
    assert_eq!(listed.len(), 1, "one notification for the one client");
    let notification = &listed[0];
    assert_eq!(notification["type"], "settlement.staged");
    assert_eq!(notification["delivery"]["status"], "pending");
    assert_eq!(
        notification["payload"]["amounts"],
        json!({ &w.connection_id: {"BTC": "2500"} })
    );
    assert_eq!(notification["payload"]["settlementId"], settlement_id);

    // Default backoff (1 s, 2 s, 4 s, …); the steps' clock jumps past each delay.
    let deliverer =
        Deliverer::new(app.db.pool.clone(), &webhook_config(), false).expect("deliverer");
    let mut at = later(now(), Duration::from_secs(1));
    let mut steps = Vec::new();
    while steps.len() < 10 {
        let step = deliverer.step(at).await.expect("step");
        let delivered = step.delivered > 0;
        steps.push(step);
        if delivered {
            break;
        }
        at = later(at, Duration::from_secs(3_600));
    }
    let attempt = |delivered, retrying| DeliveryStep {
        attempted: 1,
        delivered,
        retrying,
        ..DeliveryStep::default()
    };
    assert_eq!(
        steps,
        vec![attempt(0, 1), attempt(0, 1), attempt(0, 1), attempt(1, 0)]
    );
    let after = deliverer
        .step(later(at, Duration::from_secs(86_400)))
        .await
        .expect("step");
    assert!(after.idle(), "nothing more is sent: {after:?}");

    let received = seen.lock().expect("log").clone();
    assert_eq!(received.len(), 4, "three refusals and one acceptance");
    let id = notification["id"].as_str().expect("id");
    let public_key = app
        .admin(Method::GET, "/webhooks/public-key", json!({}))
        .await;
    let public_key = public_key.expect(200, None).clone();
    assert_eq!(public_key["scheme"], "v1a");
    let key_bytes: [u8; 32] = hex::decode(public_key["publicKey"].as_str().expect("hex"))
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    assert_eq!(
        key_bytes,
        deliverer.public_key(),
        "the key the API shows signs"
    );
    // The tenants who receive webhooks read the same key on their own routes; another
    // enterprise's token does not.
    for (tenant, side) in [(&w.partner, "partners"), (&w.client, "clients")] {
        let path = format!("/v1/enterprises/{}/{side}/webhooks/public-key", tenant.id);
        let theirs = app.get(&path, &tenant.token).await;
        assert_eq!(theirs.expect(200, None), &public_key, "{side}");
        let other = if side == "partners" {
            &w.client
        } else {
            &w.partner
        };
        let refused = app.get(&path, &other.token).await;
        assert!(
            [401, 403, 404].contains(&refused.status.as_u16()),
            "{side}: {}",
            refused.status
        );
    }
    for r in &received {
        assert_eq!(r.id, id, "webhook-id is the notification id");
        assert!(verifies(&key_bytes, r), "signature verifies: {r:?}");
        let body: Value = serde_json::from_slice(&r.body).expect("JSON body");
        assert_eq!(
            body, notification["payload"],
            "the body is the feed's payload"
        );
    }

    let log = &deliveries(&app, &w.client.id).await[0]["delivery"];
    assert_eq!(
        (log["status"].as_str(), log["attemptCount"].as_i64()),
        (Some("delivered"), Some(4))
    );
    let attempts: Vec<(i64, i64)> = log["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().expect("n"),
                a["httpStatus"].as_i64().expect("status"),
            )
        })
        .collect();
    assert_eq!(attempts, vec![(1, 500), (2, 500), (3, 500), (4, 200)]);
    assert!(log["attempts"][0]["url"] == url && log["attempts"][0]["durationMs"].is_number());
    assert!(log["deliveredAt"].is_string() && log["nextAttemptAt"].is_null());

    // The client's feed shows the same notification, and of its delivery only the state and
    // the attempt count: what the receiver answered is the operator's to see.
    let feed = app
        .get(
            &format!("/v1/enterprises/{}/clients/notifications", w.client.id),
            &w.client.token,
        )
        .await;
    let feed = feed.expect(200, None);
    assert_eq!(
        feed["notifications"][0]["delivery"],
        json!({"status": "delivered", "attemptCount": 4})
    );
    assert_eq!(feed["notifications"][0]["payload"], notification["payload"]);
    assert_eq!(feed["nextCursor"], Value::Null);

    stop_receiver.cancel();
    app.shutdown().await;
}

#[tokio::test]
async fn admin_routes_validate_and_feeds_list_unconfigured_notifications() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let path = format!("/enterprises/{}/webhook", w.client.id);
    app.admin(Method::PUT, &path, json!({"url": "ftp://example.com/"}))
        .await
        .expect(400, Some("invalid_webhook_url"));
    app.admin(Method::PUT, &path, json!({}))
        .await
        .expect(400, Some("invalid_request"));
    app.admin(
        Method::PUT,
        &format!("/enterprises/{}/webhook", uuid::Uuid::new_v4()),
        json!({"url": "https://example.com/h"}),
    )
    .await
    .expect(404, Some("not_found"));
    let cleared = app.admin(Method::PUT, &path, json!({"url": null})).await;
    assert_eq!(
        cleared.expect(200, None)["webhook"],
        json!({"enterpriseId": w.client.id, "url": null, "updatedAt": null}),
        "clearing an unset URL records nothing"
    );
    app.call(
        Method::GET,
        "/api/admin/v1/webhooks/public-key",
        None,
        None,
        &[],
    )
    .await
    .expect(401, None);

    // A v1 settlement executes at once: the partner and the client hear it completed.
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/deposits", w.partner.id),
        json!({"currency": "BTC", "quantity": "10000000", "externalId": "p-1"}),
    )
    .await
    .expect(200, None);
    let body = signed(
        &w.partner.key,
        json!({"externalId": "v1-hook", "settlementAmounts": { &w.connection_id: {"BTC": "700"} }}),
        &[],
        "v1-hook",
    );
    let performed = app
        .post(
            &format!("/v1/enterprises/{}/partners/settlements", w.partner.id),
            &w.partner.token,
            body,
        )
        .await;
    let position = performed
        .header("x-event-position")
        .expect("position token");
    assert_eq!(
        performed.expect(200, None)["settlement"]["status"],
        "completed"
    );
    let feed = app
        .get_after(
            &format!("/v1/enterprises/{}/partners/notifications", w.partner.id),
            &w.partner.token,
            &position,
        )
        .await;
    let items = feed.expect(200, None)["notifications"].clone();
    assert_eq!(items.as_array().map(Vec::len), Some(1), "{items}");
    let item = &items[0];
    assert_eq!(item["type"], "settlement.completed");
    assert_eq!(
        item["delivery"],
        json!({"status": "not_configured", "attemptCount": 0})
    );
    assert_eq!(
        (
            item["payload"]["amounts"].clone(),
            item["payload"]["partnerNet"].clone()
        ),
        (
            json!({ &w.connection_id: {"BTC": "700"} }),
            json!({"BTC": "-700"})
        )
    );
    let client = notified(&app, &w.client.id, 1).await;
    assert_eq!(
        client
            .iter()
            .map(|n| n["type"].as_str().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec!["settlement.completed"],
        "v1 is not notified as staged"
    );
    assert!(client[0]["payload"].get("partnerNet").is_none());

    // The partner feed is the partner's: a client token is refused.
    app.get(
        &format!("/v1/enterprises/{}/partners/notifications", w.client.id),
        &w.client.token,
    )
    .await
    .expect(403, Some("no_partner_record"));
    app.shutdown().await;
}

#[tokio::test]
async fn two_finalizers_send_each_attempt_once_and_no_answer_is_logged() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    app.admin(
        Method::PATCH,
        &format!("/partners/{}", w.partner_id),
        json!({"clientDisputeWindowMinutes": 60}),
    )
    .await
    .expect(200, None);
    // A port nobody listens on: the attempt gets no answer.
    let closed = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        format!("http://{}/gone", listener.local_addr().expect("addr"))
    };
    let path = format!("/enterprises/{}/webhook", w.client.id);
    app.admin(Method::PUT, &path, json!({ "url": closed }))
        .await
        .expect(200, None);
    app.post(
        &format!("/v2/enterprises/{}/partners/settlements", w.partner.id),
        &w.partner.token,
        stage(&w, "s-1", json!({ &w.connection_id: {"BTC": "100"} })),
    )
    .await
    .expect(200, None);
    notified(&app, &w.client.id, 1).await;

    let config = webhook_config();
    let (one, two) = (
        Deliverer::new(app.db.pool.clone(), &config, false).expect("deliverer"),
        Deliverer::new(app.db.pool.clone(), &config, false).expect("deliverer"),
    );
    let at = later(now(), Duration::from_secs(1));
    let (a, b) = tokio::join!(one.step(at), two.step(at));
    let (a, b) = (a.expect("step"), b.expect("step"));
    assert_eq!(
        a.attempted + b.attempted,
        1,
        "one attempt between them: {a:?} {b:?}"
    );
    assert_eq!(a.retrying + b.retrying, 1);

    // The receiver moves: the next attempt goes to the URL configured now.
    let (url, seen, stop_receiver) = receiver(0).await;
    app.admin(Method::PUT, &path, json!({ "url": url }))
        .await
        .expect(200, None);
    let moved = events::testing::eventually(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT url FROM rm_webhooks WHERE enterprise_id = $1::uuid",
        )
        .bind(&w.client.id)
        .fetch_optional(&app.db.pool)
        .await
        .ok()
        .flatten()
        .flatten()
        .as_deref()
            == Some(url.as_str())
    })
    .await;
    assert!(moved, "the projection has the new URL");
    let at = later(at, Duration::from_secs(3_600));
    let (a, b) = tokio::join!(one.step(at), two.step(at));
    let (a, b) = (a.expect("step"), b.expect("step"));
    assert_eq!(
        (a.delivered + b.delivered, a.attempted + b.attempted),
        (1, 1)
    );
    assert_eq!(seen.lock().expect("log").len(), 1);

    let log = &deliveries(&app, &w.client.id).await[0]["delivery"];
    assert_eq!(log["status"], "delivered");
    let first = &log["attempts"][0];
    assert!(
        first["httpStatus"].is_null() && first["error"].as_str().is_some_and(|e| !e.is_empty()),
        "no answer is logged with its error: {first}"
    );
    assert_eq!(
        (first["url"].as_str(), log["attempts"][1]["url"].as_str()),
        (Some(closed.as_str()), Some(url.as_str()))
    );
    assert_eq!(log["attempts"][1]["httpStatus"], 200);

    // Cleared: later notifications only go to the feed.
    app.admin(Method::PUT, &path, json!({ "url": null }))
        .await
        .expect(200, None);
    app.post(
        &format!("/v2/enterprises/{}/partners/settlements", w.partner.id),
        &w.partner.token,
        stage(&w, "s-2", json!({ &w.connection_id: {"BTC": "200"} })),
    )
    .await
    .expect(200, None);
    let listed = notified(&app, &w.client.id, 2).await;
    assert_eq!(listed[1]["delivery"]["status"], "not_configured");
    let idle = one
        .step(later(at, Duration::from_secs(3_600)))
        .await
        .expect("step");
    assert!(idle.idle(), "{idle:?}");
    stop_receiver.cancel();
    app.shutdown().await;
}

#[tokio::test]
async fn internal_destinations_are_refused_unless_the_operator_allows_them() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let path = format!("/enterprises/{}/webhook", w.client.id);
    // The API under test allows 127.0.0.1 only (support::WEBHOOK_ALLOW).
    for (url, reason) in [
        ("http://127.0.0.2/hook", "loopback"),
        ("http://127.2:8080/hook", "loopback"),
        ("http://0x7f000002/hook", "loopback"),
        ("http://localhost:8080/hook", "loopback"),
        ("http://api.localhost/hook", "loopback"),
        ("http://[::1]:9000/hook", "loopback"),
        ("http://10.0.0.7/hook", "private"),
        ("https://172.16.4.4/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("http://[fd12::1]/hook", "private"),
        ("http://169.254.10.10/hook", "link_local"),
        ("http://[fe80::1]/hook", "link_local"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://[fd00:ec2::254]/", "metadata"),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "metadata",
        ),
        ("http://0.0.0.0:8080/", "unspecified"),
        ("http://255.255.255.255/", "broadcast"),
        ("http://100.64.0.1/", "shared_address_space"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[::ffff:10.0.0.1]/", "private"),
    ] {
        let refused = app.admin(Method::PUT, &path, json!({ "url": url })).await;
        refused.expect(400, Some("invalid_webhook_url"));
        assert_eq!(refused.body["reason"], reason, "{url}: {}", refused.body);
    }
    for allowed in [
        "http://127.0.0.1:9/hook",
        "http://127.1:9/hook", // the allowed address, spelled otherwise
        "https://hooks.example.com/settle",
        "https://93.184.216.34/hook",
    ] {
        app.admin(Method::PUT, &path, json!({ "url": allowed }))
            .await
            .expect(200, None);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_destination_refused_at_delivery_is_a_failed_attempt_that_sends_nothing() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    app.admin(
        Method::PATCH,
        &format!("/partners/{}", w.partner_id),
        json!({"clientDisputeWindowMinutes": 60}),
    )
    .await
    .expect(200, None);
    let (url, seen, stop_receiver) = receiver(0).await;
    app.admin(
        Method::PUT,
        &format!("/enterprises/{}/webhook", w.client.id),
        json!({ "url": url }),
    )
    .await
    .expect(200, None);
    app.post(
        &format!("/v2/enterprises/{}/partners/settlements", w.partner.id),
        &w.partner.token,
        stage(&w, "s-refused", json!({ &w.connection_id: {"BTC": "100"} })),
    )
    .await
    .expect(200, None);
    notified(&app, &w.client.id, 1).await;

    // A finalizer whose operator did not allow loopback (the API's list may differ, or the
    // URL may predate the rules): the attempt is refused, logged, and retried later.
    let strict = WebhookConfig {
        allow: None,
        ..webhook_config()
    };
    let deliverer = Deliverer::new(app.db.pool.clone(), &strict, false).expect("deliverer");
    let at = later(now(), Duration::from_secs(1));
    let step = deliverer.step(at).await.expect("step");
    assert_eq!((step.attempted, step.retrying), (1, 1), "{step:?}");
    assert!(seen.lock().expect("log").is_empty(), "nothing was sent");
    let log = &deliveries(&app, &w.client.id).await[0]["delivery"];
    assert_eq!(log["status"], "pending");
    let attempt = &log["attempts"][0];
    assert!(attempt["httpStatus"].is_null(), "{attempt}");
    assert!(
        attempt["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("destination not allowed: 127.0.0.1 is a loopback")),
        "{attempt}"
    );
    // The tenant sees the state and the count, never the reason or the address.
    let feed = app
        .get(
            &format!("/v1/enterprises/{}/clients/notifications", w.client.id),
            &w.client.token,
        )
        .await;
    assert_eq!(
        feed.expect(200, None)["notifications"][0]["delivery"],
        json!({"status": "pending", "attemptCount": 1})
    );

    // Allowed, the next attempt goes through.
    let allowed = Deliverer::new(app.db.pool.clone(), &webhook_config(), false).expect("deliverer");
    let step = allowed
        .step(later(at, Duration::from_secs(3_600)))
        .await
        .expect("step");
    assert_eq!(step.delivered, 1, "{step:?}");
    assert_eq!(seen.lock().expect("log").len(), 1);
    stop_receiver.cancel();
    app.shutdown().await;
}

/// The `type` and `externalId` of each notification, with its `amounts`.
fn summary(items: &[Value]) -> Vec<(String, String, Value)> {
    items
        .iter()
        .map(|n| {
            (
                n["type"].as_str().unwrap_or_default().to_owned(),
                n["externalId"].as_str().unwrap_or_default().to_owned(),
                n["payload"]["amounts"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn the_lifecycle_tells_clients_and_the_partner_the_final_amounts() {
    use crate::disputes::{lifecycle_world, raise, settled, stage};
    let mut app = TestApp::spawn().await;
    app.start_finalizer(60.0).await;
    let l = lifecycle_world(&app, "100000000").await;
    let w = &l.w;
    let (c1, c2) = (l.c1.as_str(), l.c2.as_str());

    // S1: C1 disputed and withheld; only C2's gain executes.
    let s1 = stage(
        &app,
        w,
        "day-1",
        json!({c1: {"BTC": "-20000000"}, c2: {"BTC": "10000000"}}),
    )
    .await;
    let s1_id = s1.expect(200, None)["settlement"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let dispute = raise(&app, w, &s1_id, c1, json!({"BTC": "-5000000"})).await;
    let dispute_id = dispute.expect(200, None)["dispute"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    settled(&app, w, &s1_id, "completed").await;
    app.admin(
        Method::POST,
        &format!("/disputes/{dispute_id}/close"),
        json!({"notes": "agreed", "adjustedTransfers": {"BTC": "-5000000"}}),
    )
    .await
    .expect(200, None);
    // S2: the closure joins it, and its transfer is part of what the client is told.
    let s2 = stage(&app, w, "day-2", json!({c2: {"BTC": "1000000"}})).await;
    let s2_id = s2.expect(200, None)["settlement"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    settled(&app, w, &s2_id, "completed").await;

    let client = notified(&app, &w.client.id, 4).await;
    let partner = notified(&app, &w.partner.id, 4).await;
    assert_eq!(
        summary(&client),
        vec![
            (
                "settlement.staged".into(),
                "day-1".into(),
                json!({c1: {"BTC": "-20000000"}, c2: {"BTC": "10000000"}})
            ),
            (
                "settlement.completed".into(),
                "day-1".into(),
                json!({c2: {"BTC": "10000000"}})
            ),
            (
                "settlement.staged".into(),
                "day-2".into(),
                json!({c1: {"BTC": "-5000000"}, c2: {"BTC": "1000000"}})
            ),
            (
                "settlement.completed".into(),
                "day-2".into(),
                json!({c1: {"BTC": "-5000000"}, c2: {"BTC": "1000000"}})
            ),
        ]
    );
    assert_eq!(client[1]["payload"]["withheldConnections"], json!([c1]));
    assert_eq!(
        summary(&partner),
        vec![
            (
                "settlement.finalized".into(),
                "day-1".into(),
                json!({c2: {"BTC": "10000000"}})
            ),
            (
                "settlement.completed".into(),
                "day-1".into(),
                json!({c2: {"BTC": "10000000"}})
            ),
            (
                "settlement.finalized".into(),
                "day-2".into(),
                json!({c1: {"BTC": "-5000000"}, c2: {"BTC": "1000000"}})
            ),
            (
                "settlement.completed".into(),
                "day-2".into(),
                json!({c1: {"BTC": "-5000000"}, c2: {"BTC": "1000000"}})
            ),
        ]
    );
    let finalized = &partner[0]["payload"];
    assert_eq!(finalized["withheldConnections"], json!([c1]));
    assert_eq!(finalized["partnerNet"], json!({"BTC": "-10000000"}));
    assert_eq!(
        partner[2]["payload"]["partnerNet"],
        json!({"BTC": "4000000"})
    );
    app.shutdown().await;
}
