//! Settlement and dispute replies as partners read them (docs/api/guide.md): v1 answers a short
//! balance with a failed settlement, an identical re-POST answers the settlement as it is now,
//! command replies carry what the reads show, optional fields without a value are left out, and
//! a closure answers `{"disputeClosure": …}`.

use reqwest::Method;
use serde_json::{json, Value};

use crate::disputes::{deposit, lifecycle_world, raise, settled, stage};
use crate::support::*;

fn v1(w: &World) -> String {
    format!("/v1/enterprises/{}/partners/settlements", w.partner.id)
}

fn v2(w: &World) -> String {
    format!("/v2/enterprises/{}/partners/settlements", w.partner.id)
}

fn one(w: &World, id: &str) -> String {
    format!("/v1/enterprises/{}/partners/settlements/{id}", w.partner.id)
}

fn v1_body(w: &World, external: &str, amounts: Value) -> Value {
    signed(
        &w.partner.key,
        json!({"externalId": external, "settlementAmounts": amounts}),
        &[],
        external,
    )
}

async fn allocate(app: &TestApp, w: &World, quantity: &str, external: &str) {
    app.post(
        &w.allocation_path("allocations"),
        &w.client.token,
        w.allocation("BTC", json!(quantity), external, external),
    )
    .await
    .expect(200, None);
}

/// The connection's BTC (available, held) as of `position`.
async fn connection_btc(app: &TestApp, w: &World, position: &str) -> (Value, Value) {
    let read = app
        .get_after(
            &format!("/v1/enterprises/{}/clients/balances", w.client.id),
            &w.client.token,
            position,
        )
        .await;
    let b = &read.expect(200, None)["networkBalances"][&w.connection_id]["balances"]["BTC"];
    (b["available"].clone(), b["held"].clone())
}

/// Every path in `v` whose value is null. The only null these objects have is a field that is
/// not optional: `userId` of an operator's closure (docs/api/guide.md).
fn nulls(v: &Value, at: &str, found: &mut Vec<String>) {
    match v {
        Value::Null if !at.ends_with("disputeClosure.userId") && !at.ends_with("nextCursor") => {
            found.push(at.to_owned());
        }
        Value::Object(fields) => {
            for (k, v) in fields {
                nulls(v, &format!("{at}.{k}"), found);
            }
        }
        Value::Array(items) => {
            for (n, v) in items.iter().enumerate() {
                nulls(v, &format!("{at}[{n}]"), found);
            }
        }
        _ => {}
    }
}

#[track_caller]
fn assert_no_nulls(v: &Value) {
    let mut found = Vec::new();
    nulls(v, "", &mut found);
    assert!(found.is_empty(), "null fields {found:?} in {v}");
}

#[tokio::test]
async fn v1_short_of_a_connection_balance_answers_a_failed_settlement_and_a_retry_completes_it() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    allocate(&app, &w, "30000000", "a-1").await;
    let c = w.connection_id.clone();
    // The connection owes 0.5 BTC and has 0.3 allocated: recorded, failed, with a reason.
    let body = v1_body(&w, "v1-short", json!({&c: {"BTC": "-50000000"}}));
    let failed = app.post(&v1(&w), &w.partner.token, body.clone()).await;
    let settlement = failed.expect(200, None)["settlement"].clone();
    assert_eq!(settlement["status"], "failed", "{settlement}");
    assert_eq!(settlement["phase"], "executing", "{settlement}");
    assert!(
        settlement["reason"]
            .as_str()
            .is_some_and(|r| r.contains("BTC")),
        "{settlement}"
    );
    assert_no_nulls(&settlement);
    let position = failed.header("x-event-position").expect("position");
    let read = app
        .get_after(
            &one(&w, settlement["id"].as_str().unwrap()),
            &w.partner.token,
            &position,
        )
        .await;
    let read = read.expect(200, None);
    assert_eq!(
        read["settlement"], settlement,
        "the reply is what the read shows"
    );
    assert_eq!(read["settlementTransfers"][0]["status"], "failed");
    assert_eq!(
        connection_btc(&app, &w, &position).await,
        (json!("30000000"), json!("0")),
        "nothing is held while it is failed"
    );

    // Funded, the identical body retries it: completed, the loss paid to the partner.
    allocate(&app, &w, "30000000", "a-2").await;
    let retried = app.post(&v1(&w), &w.partner.token, body).await;
    let done = retried.expect(200, None)["settlement"].clone();
    assert_eq!(
        (done["id"].clone(), done["status"].as_str()),
        (settlement["id"].clone(), Some("completed")),
        "{done}"
    );
    let position = retried.header("x-event-position").expect("position");
    assert_eq!(
        connection_btc(&app, &w, &position).await,
        (json!("10000000"), json!("0"))
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_identical_re_post_answers_the_settlement_as_it_is_now() {
    let mut app = TestApp::spawn().await;
    app.start_finalizer(60.0).await;
    // No dispute or top-up window: a v2 settlement executes right after it is staged.
    let w = world(&app, "baseUnits").await;
    allocate(&app, &w, "60000000", "a-1").await;
    let c = w.connection_id.clone();
    let cutoff = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let body = signed(
        &w.partner.key,
        json!({"externalId": "v2-a", "settlementAmounts": {&c: {"BTC": "-1000"}}, "cutoffAt": cutoff}),
        &[],
        "v2-a",
    );
    let staged = app.post(&v2(&w), &w.partner.token, body.clone()).await;
    let id = staged.expect(200, None)["settlement"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let read = settled(&app, &w, &id, "completed").await;
    let again = app.post(&v2(&w), &w.partner.token, body).await;
    let now = again.expect(200, None)["settlement"].clone();
    assert_eq!(now["status"], "completed", "not the first answer: {now}");
    assert_eq!(now["settlingDisputes"], json!([]), "{now}");
    let mut expected = read["settlement"].clone();
    expected["settlingDisputes"] = json!([]);
    assert_eq!(now, expected, "answered as GET reads it");
    assert!(again.header("x-event-position").is_some());

    // v1, failed for the partner's custody, then completed by an operator's retry: the
    // identical body says completed.
    let body = v1_body(&w, "v1-b", json!({&c: {"BTC": "20000000"}}));
    let failed = app.post(&v1(&w), &w.partner.token, body.clone()).await;
    let failed = failed.expect(200, None)["settlement"].clone();
    assert_eq!(failed["status"], "failed", "{failed}");
    deposit(&app, &w, "20000000", "p-1").await;
    let id = failed["id"].as_str().unwrap();
    app.admin(Method::POST, &format!("/settlements/{id}/retry"), json!({}))
        .await
        .expect(200, None);
    let again = app.post(&v1(&w), &w.partner.token, body).await;
    let now = again.expect(200, None)["settlement"].clone();
    assert_eq!(
        (now["id"].as_str(), now["status"].as_str()),
        (Some(id), Some("completed")),
        "{now}"
    );
    assert!(
        now["finalizedAt"].is_string() && now.get("reason").is_none(),
        "{now}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn replies_carry_what_reads_show_without_nulls() {
    let mut app = TestApp::spawn().await;
    app.start_finalizer(60.0).await;
    let l = lifecycle_world(&app, "100000000").await;
    let w = &l.w;

    // S1 (no notes): C1 loses 0.2, C2 gains 0.1; both disputed.
    let s1 = stage(
        &app,
        w,
        "day-1",
        json!({&l.c1: {"BTC": "-20000000"}, &l.c2: {"BTC": "10000000"}}),
    )
    .await;
    let s1_body = s1.expect(200, None).clone();
    assert!(s1_body["settlement"].get("notes").is_none(), "{s1_body}");
    assert_no_nulls(&s1_body);
    let s1_id = s1_body["settlement"]["id"].as_str().unwrap().to_owned();
    let d1 = raise(&app, w, &s1_id, &l.c1, json!({"BTC": "-5000000"})).await;
    assert_no_nulls(d1.expect(200, None));
    let d1 = d1.body["dispute"]["id"].as_str().unwrap().to_owned();
    let d2 = raise(&app, w, &s1_id, &l.c2, json!({"BTC": "20000000"})).await;
    let position = d2.header("x-event-position").expect("position");
    let d2 = d2.expect(200, None)["dispute"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let disputes = format!(
        "/v1/enterprises/{}/partners/settlement/disputes",
        w.partner.id
    );
    let open = app.get_after(&disputes, &w.partner.token, &position).await;
    let open = open.expect(200, None);
    assert_no_nulls(open);
    assert!(
        open["disputes"][0].get("disputeClosure").is_none(),
        "an open dispute has no closure: {open}"
    );
    let read = app
        .get_after(&one(w, &s1_id), &w.partner.token, &position)
        .await;
    assert_no_nulls(read.expect(200, None));

    // After finalization: the operator closes C1's dispute, the client closes C2's.
    settled(&app, w, &s1_id, "completed").await;
    let by_admin = app
        .admin(
            Method::POST,
            &format!("/disputes/{d1}/close"),
            json!({"notes": "agreed at 0.05", "adjustedTransfers": {"BTC": "-5000000"}}),
        )
        .await;
    let by_admin = by_admin.expect(200, None).clone();
    assert!(by_admin.get("dispute").is_none(), "{by_admin}");
    let admin_closure = by_admin["disputeClosure"].clone();
    assert_eq!(admin_closure["closedBy"], "admin", "{by_admin}");
    assert_no_nulls(&by_admin);
    let close = signed(
        &w.client.key,
        json!({"notes": "we were wrong"}),
        &[
            ("enterpriseId", w.client.id.clone()),
            ("disputeId", d2.clone()),
        ],
        "close-2",
    );
    let by_client = app
        .post(
            &format!(
                "/v1/enterprises/{}/clients/settlements/disputes/{d2}/close",
                w.client.id
            ),
            &w.client.token,
            close,
        )
        .await;
    let client_closure = by_client.expect(200, None)["disputeClosure"].clone();
    assert_eq!(client_closure["closedBy"], "client", "{client_closure}");
    assert_eq!(
        client_closure["adjustedSettlementTransfers"][0]["status"],
        "pending_settlement_assignment"
    );
    assert_no_nulls(&client_closure);
    let position = by_client.header("x-event-position").expect("position");
    let closed = app
        .get_after(
            &format!("{disputes}?closed=true"),
            &w.partner.token,
            &position,
        )
        .await;
    let closed = closed.expect(200, None)["disputes"].clone();
    let closure_of = |id: &str| {
        closed
            .as_array()
            .into_iter()
            .flatten()
            .find(|d| d["id"] == id)
            .map(|d| d["disputeClosure"].clone())
            .unwrap_or_default()
    };
    assert_eq!(
        closure_of(&d1),
        admin_closure,
        "the reply is what the read shows"
    );
    assert_eq!(
        closure_of(&d2),
        client_closure,
        "the reply is what the read shows"
    );

    // S2, on a long window so nothing moves while it is read: both closures join it, and its
    // reply lists them exactly as its read does.
    app.admin(
        Method::PATCH,
        &format!("/partners/{}", w.partner_id),
        json!({"clientDisputeWindowMinutes": 10}),
    )
    .await
    .expect(200, None);
    let s2 = stage(&app, w, "day-2", json!({&l.c1: {"BTC": "-1000000"}})).await;
    let s2_body = s2.expect(200, None).clone();
    assert_no_nulls(&s2_body);
    let settling = s2_body["settlement"]["settlingDisputes"].clone();
    assert_eq!(settling.as_array().map(Vec::len), Some(2), "{s2_body}");
    assert!(
        settling[0]["disputeClosure"]["adjustedSettlementTransfers"][0]["status"] == "pending",
        "{settling}"
    );
    let s2_id = s2_body["settlement"]["id"].as_str().unwrap().to_owned();
    let position = s2.header("x-event-position").expect("position");
    let read = app
        .get_after(&one(w, &s2_id), &w.partner.token, &position)
        .await;
    let read = read.expect(200, None).clone();
    assert_no_nulls(&read);
    assert_eq!(
        read["settlingDisputes"], settling,
        "the reply is what the read shows"
    );
    let mut staged = s2_body["settlement"].clone();
    staged.as_object_mut().unwrap().remove("settlingDisputes");
    assert_eq!(
        read["settlement"], staged,
        "the settlement too, phase included"
    );
    app.shutdown().await;
}
