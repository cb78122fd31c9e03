//! The rules of the lifecycle after staging (docs/api/lifecycle.md) and its invariants, each pinned
//! by a test over HTTP: a retraction or a client's closure inside the dispute window lets the
//! connection execute; a client's closure after finalization carries the original instructions into
//! the partner's next settlement; a partner short of custody funds fails with its holds kept and
//! completes after a deposit (by the admin retry, or by the finalizer's own retry); two real
//! finalizer processes, SIGKILLed at random, finalize and execute every settlement exactly once
//! with money conserved; the dispute routes' refusals; and settlements due together, sharing
//! connections, all finalized without sitting out a lost race's lease.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use events::codec::{decode_event, EncodedEvent};
use events::domain::connection::AllocationKind;
use events::domain::DomainEvent;
use events::testing::{eventually, free_port, http_get, process_env};
use rand::Rng;
use reqwest::Method;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::disputes::{btc, raise, settled, stage, transfer_statuses, Lifecycle};
use crate::support::*;

/// Dispute window of the rule tests: 0.1 minutes (6 s), so that the dozen requests each makes
/// inside it fit even on a loaded machine running the suite in parallel.
const WINDOW_MINUTES: f64 = 0.1;
/// Dispute window of the failure tests, where nothing happens inside it (1.2 s).
const SHORT_WINDOW_MINUTES: f64 = 0.02;

/// The crash test: worlds (a partner, a client with two connections), settlements per world,
/// and how often a finalizer is killed.
const STRESS_WORLDS: usize = 5;
const STRESS_SETTLEMENTS_PER_WORLD: usize = 40;
/// Every n-th settlement of a world is disputed on its first connection (left open: withheld).
const STRESS_DISPUTE_EVERY: usize = 4;
const STRESS_KILLS_MIN: usize = 5;
const STRESS_KILLS_MAX: usize = 12;
const STRESS_KILL_GAP_MS: std::ops::RangeInclusive<u64> = 200..=700;

// ---------------------------------------------------------------------------------------------
// Worlds and requests

/// A client with two connections (0.4 BTC allocated to each) to a partner with the given
/// windows, and `custody` base units of BTC in the partner's custody account.
async fn windowed_world(
    app: &TestApp,
    dispute_minutes: f64,
    top_up_minutes: f64,
    custody: &str,
) -> Lifecycle {
    let w = world_with(
        app,
        "baseUnits",
        json!(dispute_minutes),
        json!(top_up_minutes),
    )
    .await;
    let c2 = connect(app, &w.client, &w.partner_id, "acct-2").await;
    let c1 = w.connection_id.clone();
    for (n, connection) in [&c1, &c2].into_iter().enumerate() {
        allocate(app, &w.client, connection, "40000000", &format!("fund-{n}")).await;
    }
    if custody != "0" {
        deposit_btc(app, &w.partner, custody, "p-0").await;
    }
    Lifecycle { w, c1, c2 }
}

/// A signed connection of `client` to `partner_id`; its id.
async fn connect(app: &TestApp, client: &Tenant, partner_id: &str, key: &str) -> String {
    let body = signed(
        &client.key,
        json!({"partnerId": partner_id, "name": key, "connectionKey": key}),
        &[],
        &format!("connect-{key}"),
    );
    app.post(
        &format!("/v1/enterprises/{}/clients/connections", client.id),
        &client.token,
        body,
    )
    .await
    .expect(200, None)["connection"]["id"]
        .as_str()
        .expect("connection id")
        .to_owned()
}

async fn allocate(
    app: &TestApp,
    client: &Tenant,
    connection: &str,
    quantity: &str,
    external: &str,
) {
    let body = signed(
        &client.key,
        json!({"amount": {"currency": "BTC", "quantity": quantity}, "clientExternalId": external}),
        &[
            ("connectionId", connection.to_owned()),
            ("enterpriseId", client.id.clone()),
        ],
        external,
    );
    let allocated = app
        .post(
            &format!(
                "/v1/enterprises/{}/clients/connections/{connection}/allocations",
                client.id
            ),
            &client.token,
            body,
        )
        .await;
    assert_eq!(
        allocated.expect(200, None)["allocation"]["status"],
        "cleared"
    );
}

/// An admin deposit of BTC into `tenant`'s custody; the write's position token.
async fn deposit_btc(app: &TestApp, tenant: &Tenant, quantity: &str, external: &str) -> String {
    let deposited = app
        .admin(
            Method::POST,
            &format!("/enterprises/{}/deposits", tenant.id),
            json!({"currency": "BTC", "quantity": quantity, "externalId": external}),
        )
        .await;
    deposited.expect(200, None);
    deposited
        .header("x-event-position")
        .expect("position token")
}

fn id_of(resp: &Resp, object: &str) -> String {
    resp.expect(200, None)[object]["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

fn position(resp: &Resp) -> String {
    resp.header("x-event-position").expect("position token")
}

/// POSTs a raise body as-is (already signed, or deliberately not).
async fn post_raise(app: &TestApp, w: &World, settlement: &str, body: Value) -> Resp {
    app.post(
        &format!(
            "/v1/enterprises/{}/clients/settlements/{settlement}/disputes",
            w.client.id
        ),
        &w.client.token,
        body,
    )
    .await
}

/// A raise signed by the client's key over `fields` plus `settlementId` = `signed_for`.
fn raise_body(w: &World, fields: Value, signed_for: &str, nonce: &str) -> Value {
    signed(
        &w.client.key,
        fields,
        &[("settlementId", signed_for.to_owned())],
        nonce,
    )
}

/// PUT of a dispute (retract, un-retract, amend), signed with `disputeId` and `settlementId`.
async fn update(
    app: &TestApp,
    w: &World,
    dispute: &str,
    settlement: &str,
    fields: Value,
    nonce: &str,
) -> Resp {
    let body = signed(
        &w.client.key,
        fields,
        &[
            ("disputeId", dispute.to_owned()),
            ("settlementId", settlement.to_owned()),
        ],
        nonce,
    );
    put_dispute(app, w, dispute, body).await
}

async fn put_dispute(app: &TestApp, w: &World, dispute: &str, body: Value) -> Resp {
    app.call(
        Method::PUT,
        &format!(
            "/api/network/v1/enterprises/{}/clients/settlements/disputes/{dispute}",
            w.client.id
        ),
        Some(&w.client.token),
        Some(body),
        &[],
    )
    .await
}

/// The client closes its own dispute as invalid.
async fn close(app: &TestApp, w: &World, dispute: &str, notes: &str, nonce: &str) -> Resp {
    let body = signed(
        &w.client.key,
        json!({"notes": notes}),
        &[
            ("enterpriseId", w.client.id.clone()),
            ("disputeId", dispute.to_owned()),
        ],
        nonce,
    );
    app.post(
        &format!(
            "/v1/enterprises/{}/clients/settlements/disputes/{dispute}/close",
            w.client.id
        ),
        &w.client.token,
        body,
    )
    .await
}

/// The client's dispute list (`query` starts with `?` or is empty), as of `position`.
async fn client_disputes(app: &TestApp, w: &World, query: &str, position: &str) -> Vec<Value> {
    app.get_after(
        &format!(
            "/v1/enterprises/{}/clients/settlement/disputes{query}",
            w.client.id
        ),
        &w.client.token,
        position,
    )
    .await
    .expect(200, None)["disputes"]
        .as_array()
        .expect("disputes")
        .clone()
}

fn base_units(v: &Value) -> i128 {
    v.as_str().unwrap_or("0").parse().expect("base units")
}

/// available + held of one `{available, held}` entry (absent: zero).
fn total_of(entry: &Value) -> i128 {
    base_units(&entry["available"]) + base_units(&entry["held"])
}

/// BTC in every account of a world (the client's custody, both connections, the partner's
/// custody), from the read models, as of `position`.
async fn btc_in_world(app: &TestApp, w: &World, position: &str) -> i128 {
    let client = app
        .get_after(
            &format!("/v1/enterprises/{}/clients/balances", w.client.id),
            &w.client.token,
            position,
        )
        .await;
    let client = client.expect(200, None);
    let partner = app
        .get_after(
            &format!("/v1/enterprises/{}/partners/balances", w.partner.id),
            &w.partner.token,
            position,
        )
        .await;
    let connections: i128 = client["networkBalances"]
        .as_object()
        .expect("network balances")
        .values()
        .map(|c| total_of(&c["balances"]["BTC"]))
        .sum();
    total_of(&client["balances"]["BTC"])
        + connections
        + total_of(&partner.expect(200, None)["balances"]["BTC"])
}

/// Every event in the store, decoded, with its stream, in stream order.
async fn stored_events(pool: &PgPool) -> Vec<(String, String, DomainEvent)> {
    let rows: Vec<(String, String, i32, i16, Vec<u8>)> = sqlx::query_as(
        "SELECT category, stream_id, type_id, schema_version, payload FROM events
         ORDER BY category, stream_id, version",
    )
    .fetch_all(pool)
    .await
    .expect("read events");
    rows.into_iter()
        .map(|(category, stream, type_id, schema_version, payload)| {
            let encoded = EncodedEvent {
                type_id: u32::try_from(type_id).expect("type id"),
                schema_version: u16::try_from(schema_version).expect("schema version"),
                payload,
            };
            let event = decode_event(&encoded).expect("every stored event decodes");
            (category, stream, event)
        })
        .collect()
}

/// The decoded events of one settlement's stream.
async fn settlement_events(pool: &PgPool, settlement: &str) -> Vec<DomainEvent> {
    stored_events(pool)
        .await
        .into_iter()
        .filter(|(category, stream, _)| category == "settlement" && stream == settlement)
        .map(|(_, _, e)| e)
        .collect()
}

fn count(events: &[DomainEvent], f: impl Fn(&DomainEvent) -> bool) -> usize {
    events.iter().filter(|e| f(e)).count()
}

// ---------------------------------------------------------------------------------------------
// 1. Retraction inside the window

#[tokio::test]
async fn a_dispute_retracted_inside_the_window_lets_the_connection_execute() {
    let mut app = TestApp::spawn().await;
    app.start_finalizer(60.0).await;
    let l = windowed_world(&app, WINDOW_MINUTES, 0.0, "100000000").await;
    let w = &l.w;
    let s1 = stage(
        &app,
        w,
        "day-1",
        json!({&l.c1: {"BTC": "-20000000"}, &l.c2: {"BTC": "10000000"}}),
    )
    .await;
    let s1_id = id_of(&s1, "settlement");
    let raised = raise(&app, w, &s1_id, &l.c1, json!({"BTC": "-5000000"})).await;
    let dispute = raised.expect(200, None)["dispute"].clone();
    let dispute_id = dispute["id"].as_str().expect("dispute id").to_owned();
    let user_id = dispute["userId"].clone();
    assert!(user_id.is_string(), "the dispute names its user: {dispute}");

    // Retract: the answer and the read (only with showRetracted) say so.
    let retracted = update(
        &app,
        w,
        &dispute_id,
        &s1_id,
        json!({"connectionId": &l.c1, "retracted": true, "reason": "our mistake"}),
        "put-1",
    )
    .await;
    let answer = retracted.expect(200, None)["dispute"].clone();
    assert_eq!(answer["retracted"], true, "{answer}");
    assert_eq!(answer["retractedReason"], "our mistake", "{answer}");
    let at = position(&retracted);
    let shown = client_disputes(&app, w, "?showRetracted=true", &at).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!(shown[0]["id"], dispute_id.as_str());
    assert_eq!(shown[0]["retracted"], true);
    assert_eq!(shown[0]["retractedReason"], "our mistake");
    assert!(
        client_disputes(&app, w, "", &at).await.is_empty(),
        "a retracted dispute is hidden by default"
    );

    // Un-retract, amending the expected transfers: listed again, open, amended.
    let reopened = update(
        &app,
        w,
        &dispute_id,
        &s1_id,
        json!({"connectionId": &l.c1, "retracted": false, "expectedTransfers": {"BTC": "-6000000"}}),
        "put-2",
    )
    .await;
    assert_eq!(reopened.expect(200, None)["dispute"]["retracted"], false);
    let listed = client_disputes(&app, w, "", &position(&reopened)).await;
    assert_eq!(
        listed.len(),
        1,
        "an un-retracted dispute is listed: {listed:?}"
    );
    let d = &listed[0];
    assert_eq!(d["retracted"], false, "{d}");
    assert_eq!(d["expectedTransfers"], json!({"BTC": "-6000000"}), "{d}");
    assert_eq!(
        d["reason"], "we lost less",
        "the dispute's reason is kept: {d}"
    );
    for gone in ["retractedAt", "retractedBy", "retractedReason"] {
        assert!(d.get(gone).is_none(), "{gone} cleared on un-retract: {d}");
    }

    // Retract again: the read shows the second retraction, by the client's user.
    let again = update(
        &app,
        w,
        &dispute_id,
        &s1_id,
        json!({"connectionId": &l.c1, "retracted": true, "reason": "settled bilaterally"}),
        "put-3",
    )
    .await;
    assert_eq!(again.expect(200, None)["dispute"]["retracted"], true);
    let at = position(&again);
    let shown = client_disputes(&app, w, "?showRetracted=true", &at).await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    let d = &shown[0];
    assert_eq!(d["retracted"], true, "{d}");
    assert_eq!(d["retractedReason"], "settled bilaterally", "{d}");
    assert_eq!(d["retractedBy"], user_id, "{d}");
    assert!(d["retractedAt"].is_string(), "{d}");
    assert_eq!(d["expectedTransfers"], json!({"BTC": "-6000000"}), "{d}");
    assert_eq!(d["reason"], "we lost less", "{d}");
    assert!(client_disputes(&app, w, "", &at).await.is_empty());

    // The window closes with the dispute retracted: nothing is withheld, both transfers execute.
    let done = settled(&app, w, &s1_id, "completed").await;
    assert_eq!(done["settlement"]["disputed"], true, "a dispute was raised");
    assert_eq!(
        transfer_statuses(&done),
        vec![
            ("-20000000".into(), "completed".into()),
            ("10000000".into(), "completed".into())
        ]
    );
    assert_eq!(
        btc(&app, &l).await,
        (vec![(20_000_000, 0), (50_000_000, 0)], 110_000_000)
    );
    let history = settlement_events(&app.db.pool, &s1_id).await;
    let withheld: Vec<_> = history
        .iter()
        .filter_map(|e| match e {
            DomainEvent::SettlementFinalized(f) => Some(f.withheld_connections.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        withheld,
        vec![Vec::<Uuid>::new()],
        "finalized once, withholding nothing"
    );
    assert_eq!(
        count(&history, |e| matches!(e, DomainEvent::DisputeUpdated(_))),
        3,
        "retract, un-retract, retract: three updates"
    );
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. A client's closure: inside the window, and after finalization

#[tokio::test]
async fn a_client_closure_inside_the_window_executes_and_after_finalization_carries_into_the_next_settlement(
) {
    let mut app = TestApp::spawn().await;
    app.start_finalizer(60.0).await;
    let l = windowed_world(&app, WINDOW_MINUTES, 0.0, "100000000").await;
    let w = &l.w;

    // S1: C1 loses 0.2, C2 gains 0.1; both disputed. C1's is closed as invalid inside the
    // window, C2's is left open.
    let s1 = stage(
        &app,
        w,
        "day-1",
        json!({&l.c1: {"BTC": "-20000000"}, &l.c2: {"BTC": "10000000"}}),
    )
    .await;
    let s1_id = id_of(&s1, "settlement");
    let d1 = id_of(
        &raise(&app, w, &s1_id, &l.c1, json!({"BTC": "-1"})).await,
        "dispute",
    );
    let d2 = id_of(
        &raise(&app, w, &s1_id, &l.c2, json!({"BTC": "20000000"})).await,
        "dispute",
    );
    let closed = close(&app, w, &d1, "raised in error", "close-1").await;
    let closure = closed.expect(200, None)["disputeClosure"].clone();
    assert_eq!(closure["closedBy"], "client", "{closure}");
    assert_eq!(closure["status"], "approved", "{closure}");
    assert_eq!(
        closure["adjustedTransfers"],
        json!({}),
        "inside the window nothing is carried: the original transfers execute here"
    );

    // Finalization withholds only C2; C1's loss executes with S1.
    let done = settled(&app, w, &s1_id, "completed").await;
    assert_eq!(
        transfer_statuses(&done),
        vec![
            ("-20000000".into(), "completed".into()),
            ("10000000".into(), "disputed".into())
        ]
    );
    assert_eq!(
        done["settlementDisputes"].as_array().map(Vec::len),
        Some(2),
        "{done}"
    );
    assert_eq!(
        btc(&app, &l).await,
        (vec![(20_000_000, 0), (40_000_000, 0)], 120_000_000)
    );
    let withheld: Vec<_> = settlement_events(&app.db.pool, &s1_id)
        .await
        .into_iter()
        .filter_map(|e| match e {
            DomainEvent::SettlementFinalized(f) => Some(f.withheld_connections),
            _ => None,
        })
        .collect();
    assert_eq!(
        withheld,
        vec![vec![Uuid::parse_str(&l.c2).unwrap()]],
        "only the open dispute's connection is withheld"
    );
    // A closed dispute cannot be closed again.
    close(&app, w, &d1, "again", "close-1-again")
        .await
        .expect(422, Some("dispute_closed"));

    // After finalization the client closes C2's dispute as invalid: its original instruction
    // (+0.1 BTC) waits for the partner's next settlement.
    let closed = close(&app, w, &d2, "we were wrong", "close-2").await;
    let answer = closed.expect(200, None)["disputeClosure"].clone();
    assert_eq!(answer["closedBy"], "client", "{answer}");
    assert_eq!(
        answer["adjustedTransfers"],
        json!({"BTC": "10000000"}),
        "the original instructions are carried: {answer}"
    );
    let listed = client_disputes(&app, w, "?closed=true", &position(&closed)).await;
    let carried = listed
        .iter()
        .find(|d| d["id"] == d2.as_str())
        .expect("the closed dispute is listed");
    let pending = &carried["disputeClosure"]["adjustedSettlementTransfers"];
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{carried}");
    assert_eq!(pending[0]["quantity"], "10000000", "{carried}");
    assert_eq!(
        pending[0]["status"], "pending_settlement_assignment",
        "{carried}"
    );
    assert!(
        pending[0].get("settlementId").is_none(),
        "unassigned: {carried}"
    );
    assert!(carried.get("settledInSettlementId").is_none(), "{carried}");

    // S2 carries new trading for C1; the closure joins it (C1's closure carried nothing).
    let s2 = stage(&app, w, "day-2", json!({&l.c1: {"BTC": "-1000000"}})).await;
    let s2_body = s2.expect(200, None)["settlement"].clone();
    let s2_id = s2_body["id"].as_str().expect("id").to_owned();
    let settling = s2_body["settlingDisputes"]
        .as_array()
        .expect("settlingDisputes");
    assert_eq!(settling.len(), 1, "only C2's closure is carried: {s2_body}");
    assert_eq!(settling[0]["id"], d2.as_str());
    assert_eq!(settling[0]["settledInSettlementId"], s2_id.as_str());

    let done = settled(&app, w, &s2_id, "completed").await;
    assert_eq!(
        transfer_statuses(&done),
        vec![
            ("-1000000".into(), "completed".into()),
            ("10000000".into(), "completed".into())
        ]
    );
    let carried_transfer = done["settlementTransfers"]
        .as_array()
        .expect("transfers")
        .iter()
        .find(|t| t["quantity"] == "10000000")
        .expect("the carried transfer")
        .clone();
    assert_eq!(
        carried_transfer["disputeClosureId"], answer["id"],
        "{carried_transfer}"
    );
    assert_eq!(carried_transfer["settlementId"], s2_id.as_str());
    assert_eq!(done["settlingDisputes"][0]["id"], d2.as_str(), "{done}");
    let (connections, custody) = btc(&app, &l).await;
    assert_eq!(connections, vec![(19_000_000, 0), (50_000_000, 0)]);
    assert_eq!(custody, 111_000_000);
    // Conservation: 1 BTC deposited to the client, 1 BTC to the partner.
    assert_eq!(
        btc_in_world(&app, w, &s2.header("x-event-position").unwrap()).await,
        200_000_000
    );
    // S1's audit timeline (ADR 0010) holds its whole story, signed steps re-verified, up to the
    // staging of S2 that took in the closure carried from it.
    let timeline = app
        .call(
            reqwest::Method::GET,
            &format!("/api/audit/v1/settlements/{s1_id}/events"),
            Some(ADMIN_TOKEN),
            None,
            &[],
        )
        .await;
    let events = timeline.expect(200, None)["events"].clone();
    let kinds: Vec<&str> = events
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["type"].as_str().unwrap_or_default())
        .collect();
    for kind in [
        "SettlementStaged",
        "DisputeRaised",
        "DisputeClosed",
        "SettlementFinalized",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    assert_eq!(kinds.last(), Some(&"ClosuresJoined"), "{kinds:?}");
    for e in events.as_array().expect("events") {
        if !e["signed"].is_null() {
            assert_eq!(e["signed"]["signatureValid"], true, "{e}");
        }
    }
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Top-up: a partner short of custody funds

/// Stages C1 −0.1 / C2 +0.3 on a partner with empty custody (net outflow 0.2) and waits for the
/// failed execution, checking the failure and that C1's loss stays held.
async fn stage_short_and_fail(app: &TestApp, l: &Lifecycle) -> String {
    let w = &l.w;
    let staged = stage(
        app,
        w,
        "short",
        json!({&l.c1: {"BTC": "-10000000"}, &l.c2: {"BTC": "30000000"}}),
    )
    .await;
    let id = id_of(&staged, "settlement");
    assert_eq!(btc_in_world(app, w, &position(&staged)).await, 100_000_000);
    let failed = settled(app, w, &id, "failed").await;
    let reason = failed["settlement"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("BTC"), "the reason names BTC: {failed}");
    assert!(
        failed["settlement"].get("finalizedAt").is_none(),
        "{failed}"
    );
    assert!(
        transfer_statuses(&failed)
            .iter()
            .all(|(_, status)| status != "completed"),
        "nothing moved: {failed}"
    );
    assert_eq!(
        btc(app, l).await,
        (vec![(30_000_000, 10_000_000), (40_000_000, 0)], 0),
        "the loss stays held"
    );
    id
}

#[tokio::test]
async fn a_partner_short_of_custody_fails_keeps_holds_and_completes_after_a_deposit_and_admin_retry(
) {
    let mut app = TestApp::spawn().await;
    app.start_finalizer(60.0).await;
    let l = windowed_world(&app, SHORT_WINDOW_MINUTES, 0.0, "0").await;
    let w = &l.w;
    let id = stage_short_and_fail(&app, &l).await;
    assert_eq!(btc_in_world(&app, w, &w.connected_at).await, 100_000_000);

    // The partner tops up; the next retry is a minute away, so it is still failed.
    let at = deposit_btc(&app, &w.partner, "25000000", "top-up").await;
    assert_eq!(btc_in_world(&app, w, &at).await, 125_000_000);
    let read = app
        .get_after(
            &format!("/v1/enterprises/{}/partners/settlements/{id}", w.partner.id),
            &w.partner.token,
            &at,
        )
        .await;
    assert_eq!(read.expect(200, None)["settlement"]["status"], "failed");

    // The operator's retry executes it now.
    let retried = app
        .admin(Method::POST, &format!("/settlements/{id}/retry"), json!({}))
        .await;
    let answer = retried.expect(200, None)["settlement"].clone();
    assert_eq!(answer["status"], "completed", "{answer}");
    assert!(answer["finalizedAt"].is_string(), "{answer}");
    assert!(answer.get("reason").is_none(), "{answer}");
    let done = settled(&app, w, &id, "completed").await;
    assert_eq!(
        transfer_statuses(&done),
        vec![
            ("-10000000".into(), "completed".into()),
            ("30000000".into(), "completed".into())
        ]
    );
    assert_eq!(
        btc(&app, &l).await,
        (vec![(30_000_000, 0), (70_000_000, 0)], 5_000_000)
    );
    assert_eq!(
        btc_in_world(&app, w, &position(&retried)).await,
        125_000_000
    );

    // A completed settlement is not executed again.
    app.admin(Method::POST, &format!("/settlements/{id}/retry"), json!({}))
        .await
        .expect(409, Some("settlement_completed"));
    let history = settlement_events(&app.db.pool, &id).await;
    assert!(count(&history, |e| matches!(e, DomainEvent::SettlementFailed(_))) >= 1);
    assert_eq!(
        count(&history, |e| matches!(
            e,
            DomainEvent::SettlementFinalized(_)
        )),
        1
    );
    assert_eq!(
        count(&history, |e| matches!(
            e,
            DomainEvent::SettlementExecuted(_)
        )),
        1
    );
    app.shutdown().await;
}

#[tokio::test]
async fn with_a_one_second_retry_a_failed_settlement_completes_by_itself_after_a_deposit() {
    let mut app = TestApp::spawn().await;
    app.start_finalizer(1.0).await;
    let l = windowed_world(&app, SHORT_WINDOW_MINUTES, 0.0, "0").await;
    let w = &l.w;
    let id = stage_short_and_fail(&app, &l).await;
    let at = deposit_btc(&app, &w.partner, "25000000", "top-up").await;
    assert_eq!(btc_in_world(&app, w, &at).await, 125_000_000);

    // No retry call: the finalizer's own retry completes it.
    let done = settled(&app, w, &id, "completed").await;
    assert!(done["settlement"]["finalizedAt"].is_string(), "{done}");
    assert_eq!(
        transfer_statuses(&done),
        vec![
            ("-10000000".into(), "completed".into()),
            ("30000000".into(), "completed".into())
        ]
    );
    assert_eq!(
        btc(&app, &l).await,
        (vec![(30_000_000, 0), (70_000_000, 0)], 5_000_000)
    );
    assert_eq!(btc_in_world(&app, w, &w.connected_at).await, 125_000_000);
    let history = settlement_events(&app.db.pool, &id).await;
    assert!(count(&history, |e| matches!(e, DomainEvent::SettlementFailed(_))) >= 1);
    assert_eq!(
        count(&history, |e| matches!(
            e,
            DomainEvent::SettlementExecuted(_)
        )),
        1
    );
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Exactly once under two finalizers and SIGKILL

/// Set in a finalizer process's environment: the test binary then runs as that finalizer.
const AS_FINALIZER_ENV: &str = "SETTLE_TEST_RUN_AS_FINALIZER";
/// The test that a finalizer process runs (its full name in this binary).
const FINALIZER_ENTRY: &str = "lifecycle_rules::finalizer_process_entry";

/// The body of the crash test's finalizer processes. The `finalizer` binary belongs to another
/// package, so Cargo gives this crate's tests no `CARGO_BIN_EXE_finalizer`, and building it from
/// inside a test resolves the dependency graph's features anew (a second build of much of it,
/// 45–90 s on this machine, in every fresh target directory). Instead the crash test starts
/// this very binary as a real OS process that runs what the finalizer's `main` runs
/// (`finalizer::run`, configured from the environment, stopped by SIGTERM), with the code
/// compiled into the test. Run without that environment, this does nothing.
#[test]
#[ignore = "the entry point of the crash test's finalizer processes, not a test of its own"]
fn finalizer_process_entry() {
    if std::env::var_os(AS_FINALIZER_ENV).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let outcome = runtime.block_on(async {
        events::service::init_tracing();
        let config = <finalizer::Config as clap::Parser>::parse_from(["finalizer"]);
        let listener = tokio::net::TcpListener::bind(&config.listen).await?;
        finalizer::run(listener, config, events::service::shutdown_on_signal()).await
    });
    outcome.expect("the finalizer runs until it is stopped");
}

/// This test binary. On Linux `/proc/self/exe`, which still runs the same code when the file was
/// rebuilt meanwhile (a shared target directory): the path of a replaced binary no longer exists.
fn this_binary() -> std::path::PathBuf {
    let proc_self = std::path::Path::new("/proc/self/exe");
    if proc_self.exists() {
        proc_self.to_owned()
    } else {
        std::env::current_exe().expect("the test binary's path")
    }
}

/// A finalizer running as a real OS process (this test binary, see `finalizer_process_entry`).
struct FinalizerProcess {
    child: tokio::process::Child,
}

impl FinalizerProcess {
    /// Starts one with `env` on a free port and waits until it serves `/livez`.
    async fn start(env: &[(&'static str, String)]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = tokio::process::Command::new(this_binary())
            .args([FINALIZER_ENTRY, "--exact", "--ignored", "--test-threads=1"])
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env(AS_FINALIZER_ENV, "1")
            .env("SETTLE_LISTEN", &addr)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start a finalizer process");
        let live = eventually(Duration::from_secs(30), || {
            let addr = addr.clone();
            async move { matches!(http_get(&addr, "/livez").await, Ok((200, _))) }
        })
        .await;
        assert!(live, "the finalizer process serves /livez");
        Self { child }
    }

    /// SIGKILL, as a crash would; waits until the process is gone.
    async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL delivered");
        let _ = self.child.wait().await;
    }
}

/// One staged settlement of the crash test.
struct Staged {
    id: Uuid,
    c1: Uuid,
    c2: Uuid,
    /// A dispute on C1 was accepted (and left open): C1 must be withheld.
    disputed: bool,
}

/// Stages the world's settlements one after another (the partner's `cutoffAt` must grow),
/// disputing C1 on every `STRESS_DISPUTE_EVERY`-th.
async fn stage_many(app: &TestApp, l: &Lifecycle) -> Vec<Staged> {
    let mut staged = Vec::with_capacity(STRESS_SETTLEMENTS_PER_WORLD);
    for i in 0..STRESS_SETTLEMENTS_PER_WORLD {
        let amounts = json!({
            &l.c1: {"BTC": format!("-{}", 1_000 + i)},
            &l.c2: {"BTC": format!("{}", 500 + i)},
        });
        let s = stage(app, &l.w, &format!("s-{i}"), amounts).await;
        let id = id_of(&s, "settlement");
        let disputed = i % STRESS_DISPUTE_EVERY == 0 && {
            let raised = raise(app, &l.w, &id, &l.c1, json!({"BTC": "-1"})).await;
            match raised.status.as_u16() {
                200 => true,
                // On a loaded machine the 1.2 s window may close before the raise arrives.
                422 => false,
                _ => panic!("raise: {:?}", raised),
            }
        };
        staged.push(Staged {
            id: Uuid::parse_str(&id).expect("uuid"),
            c1: Uuid::parse_str(&l.c1).expect("uuid"),
            c2: Uuid::parse_str(&l.c2).expect("uuid"),
            disputed,
        });
    }
    staged
}

/// How many `SettlementExecuted` events the store holds.
async fn executed_count(pool: &PgPool) -> i64 {
    let executed = DomainEvent::TYPES
        .iter()
        .find(|t| t.name == "SettlementExecuted")
        .expect("a type id for SettlementExecuted")
        .id;
    sqlx::query_scalar("SELECT count(*) FROM events WHERE category = 'settlement' AND type_id = $1")
        .bind(i32::try_from(executed).expect("type id"))
        .fetch_one(pool)
        .await
        .expect("count executions")
}

/// An account money can be in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Account {
    Custody(Uuid),
    Connection(Uuid),
}

/// (available, held) per account and currency, folded from the events with checked arithmetic
/// (a negative balance fails the test), and the deposits per currency.
type Folded = (
    BTreeMap<(Account, String), (i128, i128)>,
    BTreeMap<String, i128>,
);

fn fold_money(events: &[(String, String, DomainEvent)]) -> Folded {
    let mut balances: BTreeMap<(Account, String), (i128, i128)> = BTreeMap::new();
    let mut deposits: BTreeMap<String, i128> = BTreeMap::new();
    let mut apply = |account: Account, currency: &str, available: i128, held: i128, why: &str| {
        let entry = balances
            .entry((account, currency.to_owned()))
            .or_insert((0, 0));
        entry.0 = entry.0.checked_add(available).expect("no overflow");
        entry.1 = entry.1.checked_add(held).expect("no overflow");
        assert!(
            entry.0 >= 0 && entry.1 >= 0,
            "{account:?} {currency} went negative ({entry:?}) after {why}"
        );
    };
    for (_, _, event) in events {
        match event {
            DomainEvent::DepositCredited(e) => {
                *deposits.entry(e.currency.as_str().to_owned()).or_default() += e.quantity;
                apply(
                    Account::Custody(e.enterprise_id),
                    e.currency.as_str(),
                    e.quantity,
                    0,
                    "a deposit",
                );
            }
            DomainEvent::CustodyAllocated(e) => apply(
                Account::Custody(e.enterprise_id),
                e.currency.as_str(),
                -e.quantity,
                0,
                "an allocation",
            ),
            DomainEvent::CustodyDeallocated(e) => apply(
                Account::Custody(e.enterprise_id),
                e.currency.as_str(),
                e.quantity,
                0,
                "a deallocation",
            ),
            DomainEvent::CustodySettled(e) => apply(
                Account::Custody(e.enterprise_id),
                e.currency.as_str(),
                e.delta,
                0,
                "a custody settlement",
            ),
            DomainEvent::AllocationCleared(e) => {
                let a = &e.allocation;
                let signed = match a.kind {
                    AllocationKind::Allocation => a.quantity,
                    AllocationKind::Deallocation => -a.quantity,
                };
                apply(
                    Account::Connection(a.connection_id),
                    a.currency.as_str(),
                    signed,
                    0,
                    "a cleared allocation",
                );
            }
            DomainEvent::FundsHeld(e) => apply(
                Account::Connection(e.connection_id),
                e.currency.as_str(),
                -e.quantity,
                e.quantity,
                "a hold",
            ),
            DomainEvent::FundsReleased(e) => apply(
                Account::Connection(e.connection_id),
                e.currency.as_str(),
                e.quantity,
                -e.quantity,
                "a release",
            ),
            DomainEvent::ConnectionSettled(e) => apply(
                Account::Connection(e.connection_id),
                e.currency.as_str(),
                e.credited,
                -e.consumed_held,
                "a connection settlement",
            ),
            _ => {}
        }
    }
    (balances, deposits)
}

/// What the crash test checks in the event store: one finalization and one execution per
/// settlement, each connection and custody settled at most once per settlement and currency
/// (and exactly the non-withheld connections), disputed connections withheld, every execution
/// zero-sum, no failure (the partners are funded), and conservation.
fn check_event_store(events: &[(String, String, DomainEvent)], staged: &[Staged]) -> Folded {
    let mut finalized: BTreeMap<Uuid, Vec<BTreeSet<Uuid>>> = BTreeMap::new();
    let mut executed: BTreeMap<Uuid, usize> = BTreeMap::new();
    let mut connection_settled: BTreeMap<(Uuid, Uuid, String), usize> = BTreeMap::new();
    let mut custody_settled: BTreeMap<(Uuid, String), usize> = BTreeMap::new();
    let mut zero_sum: BTreeMap<(Uuid, String), i128> = BTreeMap::new();
    let mut failed = 0;
    for (_, _, event) in events {
        match event {
            DomainEvent::SettlementFinalized(e) => finalized
                .entry(e.settlement_id)
                .or_default()
                .push(e.withheld_connections.iter().copied().collect()),
            DomainEvent::SettlementExecuted(e) => {
                *executed.entry(e.settlement_id).or_default() += 1
            }
            DomainEvent::SettlementFailed(_) => failed += 1,
            DomainEvent::ConnectionSettled(e) => {
                let currency = e.currency.as_str().to_owned();
                *connection_settled
                    .entry((e.settlement_id, e.connection_id, currency.clone()))
                    .or_default() += 1;
                *zero_sum.entry((e.settlement_id, currency)).or_default() +=
                    e.credited - e.consumed_held;
            }
            DomainEvent::CustodySettled(e) => {
                let currency = e.currency.as_str().to_owned();
                *custody_settled
                    .entry((e.settlement_id, currency.clone()))
                    .or_default() += 1;
                *zero_sum.entry((e.settlement_id, currency)).or_default() += e.delta;
            }
            _ => {}
        }
    }
    assert_eq!(finalized.len(), staged.len(), "every settlement finalized");
    assert_eq!(executed.len(), staged.len(), "every settlement executed");
    for s in staged {
        let finalizations = finalized.get(&s.id).map_or(&[][..], Vec::as_slice);
        assert_eq!(finalizations.len(), 1, "settlement {} finalized once", s.id);
        let expected: BTreeSet<Uuid> = s.disputed.then_some(s.c1).into_iter().collect();
        assert_eq!(
            finalizations[0], expected,
            "settlement {} withholds exactly its open dispute's connection",
            s.id
        );
        assert_eq!(
            executed.get(&s.id),
            Some(&1),
            "settlement {} executed once",
            s.id
        );
        let settled: BTreeSet<Uuid> = connection_settled
            .keys()
            .filter(|(settlement, _, _)| *settlement == s.id)
            .map(|(_, connection, _)| *connection)
            .collect();
        let mut expected: BTreeSet<Uuid> = [s.c2].into();
        if !s.disputed {
            expected.insert(s.c1);
        }
        assert_eq!(
            settled, expected,
            "settlement {} settles its non-withheld connections",
            s.id
        );
    }
    let twice: Vec<_> = connection_settled.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "ConnectionSettled more than once: {twice:?}"
    );
    let twice: Vec<_> = custody_settled.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "CustodySettled more than once: {twice:?}");
    let unbalanced: Vec<_> = zero_sum.iter().filter(|(_, sum)| **sum != 0).collect();
    assert!(
        unbalanced.is_empty(),
        "executions that create or destroy money: {unbalanced:?}"
    );
    assert_eq!(failed, 0, "funded partners never fail an execution");

    let (balances, deposits) = fold_money(events);
    let mut totals: BTreeMap<String, i128> = BTreeMap::new();
    for ((_, currency), (available, held)) in &balances {
        *totals.entry(currency.clone()).or_default() += available + held;
    }
    totals.retain(|_, total| *total != 0);
    assert_eq!(
        totals, deposits,
        "per currency, every account together holds the deposits"
    );
    (balances, deposits)
}

/// Every account of the crash test's worlds, from the read models:
/// (account, available, held) of BTC.
async fn read_model_accounts(
    app: &TestApp,
    worlds: &[Lifecycle],
) -> BTreeMap<Account, (i128, i128)> {
    let mut accounts = BTreeMap::new();
    let entry = |v: &Value| (base_units(&v["available"]), base_units(&v["held"]));
    for l in worlds {
        let client = app
            .get(
                &format!("/v1/enterprises/{}/clients/balances", l.w.client.id),
                &l.w.client.token,
            )
            .await;
        let client = client.expect(200, None);
        accounts.insert(
            Account::Custody(Uuid::parse_str(&l.w.client.id).unwrap()),
            entry(&client["balances"]["BTC"]),
        );
        for (connection, c) in client["networkBalances"]
            .as_object()
            .expect("network balances")
        {
            accounts.insert(
                Account::Connection(Uuid::parse_str(connection).unwrap()),
                entry(&c["balances"]["BTC"]),
            );
        }
        let partner = app
            .get(
                &format!("/v1/enterprises/{}/partners/balances", l.w.partner.id),
                &l.w.partner.token,
            )
            .await;
        accounts.insert(
            Account::Custody(Uuid::parse_str(&l.w.partner.id).unwrap()),
            entry(&partner.expect(200, None)["balances"]["BTC"]),
        );
    }
    accounts
}

/// Statuses of every settlement of the worlds' partners, from the read models.
async fn read_model_statuses(app: &TestApp, worlds: &[Lifecycle]) -> BTreeMap<String, usize> {
    let mut statuses = BTreeMap::new();
    for l in worlds {
        let list = app
            .get(
                &format!(
                    "/v1/enterprises/{}/partners/settlements?pageSize=1000",
                    l.w.partner.id
                ),
                &l.w.partner.token,
            )
            .await;
        for s in list.expect(200, None)["settlements"]
            .as_array()
            .expect("settlements")
        {
            let status = s["status"].as_str().unwrap_or("?").to_owned();
            *statuses.entry(status).or_default() += 1;
        }
    }
    statuses
}

/// Exactly once and conservation (docs/ARCHITECTURE.md, invariants), with the finalizer as two real
/// processes, one of them SIGKILLed at random moments (and restarted) while 200 settlements
/// finalize and execute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_finalizers_under_sigkill_finalize_and_execute_each_settlement_exactly_once() {
    let started = Instant::now();
    let app = TestApp::spawn().await;
    let mut worlds = Vec::with_capacity(STRESS_WORLDS);
    for _ in 0..STRESS_WORLDS {
        worlds.push(windowed_world(&app, SHORT_WINDOW_MINUTES, 0.0, "100000000").await);
    }
    let mut env = process_env(&app.db, &app.bus);
    env.push(("SETTLE_RETRY_SECONDS", "1".to_owned()));
    env.push(("SETTLE_FINALIZER_POLL_MS", "20".to_owned()));
    env.push(("SETTLE_DB_CONNECTIONS", "8".to_owned()));
    // A killed finalizer's claims lapse after this; the survivor (or the restart) takes over.
    env.push(("SETTLE_FINALIZER_LEASE_SECONDS", "3".to_owned()));
    let mut finalizers = vec![
        Some(FinalizerProcess::start(&env).await),
        Some(FinalizerProcess::start(&env).await),
    ];
    let total = STRESS_WORLDS * STRESS_SETTLEMENTS_PER_WORLD;
    let done = AtomicBool::new(false);

    let work = async {
        let staged: Vec<Staged> =
            futures::future::join_all(worlds.iter().map(|l| stage_many(&app, l)))
                .await
                .into_iter()
                .flatten()
                .collect();
        let staged_after = started.elapsed();
        // Bounded: a row leased by a killed finalizer is taken over once its lease lapses.
        let all = eventually(Duration::from_secs(120), || {
            let pool = app.db.pool.clone();
            async move { executed_count(&pool).await >= total as i64 }
        })
        .await;
        done.store(true, Ordering::SeqCst);
        (staged, all, staged_after)
    };
    let killing = async {
        let (mut kills, mut kills_while_pending) = (0, 0);
        while kills < STRESS_KILLS_MIN || (!done.load(Ordering::SeqCst) && kills < STRESS_KILLS_MAX)
        {
            let gap = rand::thread_rng().gen_range(STRESS_KILL_GAP_MS);
            tokio::time::sleep(Duration::from_millis(gap)).await;
            let pending = !done.load(Ordering::SeqCst);
            let victim = rand::thread_rng().gen_range(0..finalizers.len());
            if let Some(process) = finalizers[victim].take() {
                process.kill().await;
            }
            kills += 1;
            kills_while_pending += usize::from(pending);
            finalizers[victim] = Some(FinalizerProcess::start(&env).await);
        }
        (kills, kills_while_pending)
    };
    let ((staged, all_executed, staged_after), (kills, kills_while_pending)) =
        tokio::join!(work, killing);
    println!(
        "crash test: {} settlements staged in {staged_after:?} ({} disputed); {kills} SIGKILLs \
         ({kills_while_pending} while work was pending); all executed after {:?}",
        staged.len(),
        staged.iter().filter(|s| s.disputed).count(),
        started.elapsed()
    );
    assert_eq!(staged.len(), total);
    assert!(
        all_executed,
        "only {} of {total} settlements executed",
        executed_count(&app.db.pool).await
    );
    for process in finalizers.into_iter().flatten() {
        process.kill().await;
    }

    // The event store: exactly once, and conservation by folding the events.
    let events = stored_events(&app.db.pool).await;
    let (folded, deposits) = check_event_store(&events, &staged);
    assert_eq!(
        deposits.get("BTC"),
        Some(&(STRESS_WORLDS as i128 * 200_000_000)),
        "each world deposited 1 BTC to its client and 1 BTC to its partner"
    );

    // The read models: every settlement completed, and every account as the events say.
    let folded_btc: BTreeMap<Account, (i128, i128)> = folded
        .iter()
        .filter(|((_, currency), _)| currency == "BTC")
        .map(|((account, _), balance)| (*account, *balance))
        .collect();
    let caught_up = eventually(Duration::from_secs(30), || {
        let (app, worlds, folded_btc) = (&app, &worlds, &folded_btc);
        async move {
            read_model_statuses(app, worlds).await.get("completed") == Some(&total)
                && read_model_accounts(app, worlds).await == *folded_btc
        }
    })
    .await;
    let accounts = read_model_accounts(&app, &worlds).await;
    assert!(
        caught_up,
        "read models: statuses {:?}; balances {accounts:?}, events say {folded_btc:?}",
        read_model_statuses(&app, &worlds).await
    );
    let in_read_models: i128 = accounts.values().map(|(a, h)| a + h).sum();
    assert_eq!(in_read_models, STRESS_WORLDS as i128 * 200_000_000);
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 5. The dispute routes' refusals

#[tokio::test]
async fn dispute_routes_refuse_what_they_must() {
    let mut app = TestApp::spawn().await;
    app.start_finalizer(60.0).await;
    let l = windowed_world(&app, WINDOW_MINUTES, 0.0, "100000000").await;
    let w = &l.w;
    // Another client (B) with a partner of its own (P2), and a connection of B to our partner.
    let other = world_with(&app, "baseUnits", json!(WINDOW_MINUTES), json!(0)).await;
    let b_at_p1 = connect(&app, &other.client, &w.partner_id, "b-at-p1").await;
    deposit_btc(&app, &other.partner, "1000", "p2-0").await;
    let foreign = stage(
        &app,
        &other,
        "p2-day-1",
        json!({&other.connection_id: {"BTC": "1000"}}),
    )
    .await;
    let foreign_id = id_of(&foreign, "settlement");
    let s1 = stage(
        &app,
        w,
        "day-1",
        json!({&l.c1: {"BTC": "-20000000"}, &l.c2: {"BTC": "10000000"}}),
    )
    .await;
    let s1_id = id_of(&s1, "settlement");
    let fields = |connection: &str, expected: Value| json!({"connectionId": connection, "reason": "disputed", "expectedTransfers": expected});

    // Amounts: zero, and a JSON number, are 400.
    let body = raise_body(w, fields(&l.c1, json!({"BTC": "0"})), &s1_id, "r-zero");
    post_raise(&app, w, &s1_id, body)
        .await
        .expect(400, Some("amount_zero"));
    let body = raise_body(
        w,
        fields(&l.c1, json!({"BTC": -5_000_000})),
        &s1_id,
        "r-number",
    );
    post_raise(&app, w, &s1_id, body)
        .await
        .expect(400, Some("invalid_dispute"));
    // Another client's connection (to the same partner), and another partner's settlement: 404.
    let body = raise_body(
        w,
        fields(&b_at_p1, json!({"BTC": "-1"})),
        &s1_id,
        "r-theirs",
    );
    post_raise(&app, w, &s1_id, body)
        .await
        .expect(404, Some("not_found"));
    let body = raise_body(
        w,
        fields(&l.c1, json!({"BTC": "-1"})),
        &foreign_id,
        "r-foreign",
    );
    let refused = post_raise(&app, w, &foreign_id, body).await;
    refused.expect(404, Some("not_found"));
    assert!(
        !refused.body.to_string().contains(&other.partner_id),
        "nothing of the other tenant leaks: {}",
        refused.body
    );
    // Unsigned, signed for another settlement, and signed by a stranger's key.
    let mut body = raise_body(w, fields(&l.c1, json!({"BTC": "-1"})), &s1_id, "r-unsigned");
    body.as_object_mut().unwrap().remove("signature");
    post_raise(&app, w, &s1_id, body)
        .await
        .expect(400, Some("missing_signature"));
    let body = raise_body(
        w,
        fields(&l.c1, json!({"BTC": "-1"})),
        &foreign_id,
        "r-elsewhere",
    );
    post_raise(&app, w, &s1_id, body)
        .await
        .expect(400, Some("payload_mismatch"));
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let body = signed(
        &stranger,
        fields(&l.c1, json!({"BTC": "-1"})),
        &[("settlementId", s1_id.clone())],
        "r-stranger",
    );
    post_raise(&app, w, &s1_id, body)
        .await
        .expect(401, Some("invalid_signature"));

    // The good raise; a second one on the same connection is a conflict.
    let body = raise_body(w, fields(&l.c1, json!({"BTC": "-1"})), &s1_id, "r-good");
    let raised = post_raise(&app, w, &s1_id, body).await;
    let dispute_id = id_of(&raised, "dispute");
    let body = raise_body(w, fields(&l.c1, json!({"BTC": "-2"})), &s1_id, "r-second");
    post_raise(&app, w, &s1_id, body)
        .await
        .expect(409, Some("already_disputed"));

    // PUT naming another connection than the dispute's (the client's own C2): 400; signed
    // without the settlement id: 400.
    update(
        &app,
        w,
        &dispute_id,
        &s1_id,
        json!({"connectionId": &l.c2, "retracted": true}),
        "u-other",
    )
    .await
    .expect(400, Some("invalid_dispute"));
    let body = signed(
        &w.client.key,
        json!({"connectionId": &l.c1, "retracted": true}),
        &[("disputeId", dispute_id.clone())],
        "u-no-settlement",
    );
    put_dispute(&app, w, &dispute_id, body)
        .await
        .expect(400, Some("payload_mismatch"));

    // An operator cannot close a dispute while its window is open.
    app.admin(
        Method::POST,
        &format!("/disputes/{dispute_id}/close"),
        json!({"notes": "too early", "adjustedTransfers": {"BTC": "-1"}}),
    )
    .await
    .expect(422, Some("dispute_window_open"));

    // Nothing refused left a trace: one dispute, open, as raised.
    let listed = client_disputes(&app, w, "?showRetracted=true", &position(&raised)).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["retracted"], false);
    assert_eq!(listed[0]["expectedTransfers"], json!({"BTC": "-1"}));

    // After the window: raising and updating are refused.
    settled(&app, w, &s1_id, "completed").await;
    let body = raise_body(w, fields(&l.c2, json!({"BTC": "1"})), &s1_id, "r-late");
    post_raise(&app, w, &s1_id, body)
        .await
        .expect(422, Some("dispute_window_closed"));
    update(
        &app,
        w,
        &dispute_id,
        &s1_id,
        json!({"connectionId": &l.c1, "retracted": true}),
        "u-late",
    )
    .await
    .expect(422, Some("dispute_window_closed"));
    app.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// A finalizer must not sit out its own lease after losing races

/// Settlements due together that share connections (as every settlement of a partner does)
/// contend on the same streams when a finalizer runs their steps in parallel, as one does when
/// it starts with a backlog (after an outage, or here: started once all are due). A step that
/// loses its races must be tried again soon, not after the 30 s claim lease: everything is due
/// when the finalizer starts, and the wait below is bounded at 20 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settlements_due_together_finalize_and_execute_without_waiting_out_a_lease() {
    const SETTLEMENTS: usize = 60;
    let mut app = TestApp::spawn().await;
    let l = windowed_world(&app, SHORT_WINDOW_MINUTES, 0.0, "100000000").await;
    for i in 0..SETTLEMENTS {
        let amounts = json!({
            &l.c1: {"BTC": format!("-{}", 1_000 + i)},
            &l.c2: {"BTC": format!("{}", 500 + i)},
        });
        stage(&app, &l.w, &format!("s-{i}"), amounts)
            .await
            .expect(200, None);
    }
    // Every dispute window (1.2 s) is over before the finalizer starts.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    app.start_finalizer(1.0).await;
    let all = eventually(Duration::from_secs(20), || {
        let pool = app.db.pool.clone();
        async move { executed_count(&pool).await >= SETTLEMENTS as i64 }
    })
    .await;
    let stuck: Vec<(String, i32, Option<String>)> = sqlx::query_as(
        "SELECT step, attempts, (leased_until - now())::text FROM finalizer_due ORDER BY due_at",
    )
    .fetch_all(&app.db.pool)
    .await
    .expect("due rows");
    assert!(
        all,
        "{} of {SETTLEMENTS} executed; still due (step, attempts, lease left): {stuck:?}",
        executed_count(&app.db.pool).await
    );
    app.shutdown().await;
}
