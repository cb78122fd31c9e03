//! The settlement lifecycle after staging over HTTP (docs/api/lifecycle.md), with a real finalizer
//! and short windows: disputes withhold connections at finalization, execution moves the rest, an
//! operator's closure carries into the next settlement, and a short partner fails and retries.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

/// Dispute window of 0.03 minutes (1.8 s), top-up window of 0.01 minutes (0.6 s).
const DISPUTE_MINUTES: f64 = 0.03;
const TOP_UP_MINUTES: f64 = 0.01;

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A client with two connections (0.4 BTC allocated to each) to a partner with disputes
/// enabled, and `custody` base units of BTC in the partner's custody account.
pub struct Lifecycle {
    pub w: World,
    pub c1: String,
    pub c2: String,
}

pub async fn lifecycle_world(app: &TestApp, custody: &str) -> Lifecycle {
    let w = world_with(
        app,
        "baseUnits",
        json!(DISPUTE_MINUTES),
        json!(TOP_UP_MINUTES),
    )
    .await;
    let second = signed(
        &w.client.key,
        json!({"partnerId": w.partner_id, "name": "second", "connectionKey": "acct-2"}),
        &[],
        "connect-2",
    );
    let c2 = app
        .post(
            &format!("/v1/enterprises/{}/clients/connections", w.client.id),
            &w.client.token,
            second,
        )
        .await
        .expect(200, None)["connection"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let c1 = w.connection_id.clone();
    for (n, connection) in [&c1, &c2].into_iter().enumerate() {
        let body = signed(
            &w.client.key,
            json!({"amount": {"currency": "BTC", "quantity": "40000000"}, "clientExternalId": format!("fund-{n}")}),
            &[
                ("connectionId", connection.clone()),
                ("enterpriseId", w.client.id.clone()),
            ],
            &format!("fund-{n}"),
        );
        app.post(
            &format!(
                "/v1/enterprises/{}/clients/connections/{connection}/allocations",
                w.client.id
            ),
            &w.client.token,
            body,
        )
        .await
        .expect(200, None);
    }
    if custody != "0" {
        deposit(app, &w, custody, "p-0").await;
    }
    Lifecycle { w, c1, c2 }
}

pub async fn deposit(app: &TestApp, w: &World, quantity: &str, external: &str) {
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/deposits", w.partner.id),
        json!({"currency": "BTC", "quantity": quantity, "externalId": external}),
    )
    .await
    .expect(200, None);
}

pub async fn stage(app: &TestApp, w: &World, external: &str, amounts: Value) -> Resp {
    let body = signed(
        &w.partner.key,
        json!({"externalId": external, "settlementAmounts": amounts, "cutoffAt": now_rfc3339()}),
        &[],
        &format!("stage-{external}"),
    );
    app.post(
        &format!("/v2/enterprises/{}/partners/settlements", w.partner.id),
        &w.partner.token,
        body,
    )
    .await
}

pub async fn raise(
    app: &TestApp,
    w: &World,
    settlement: &str,
    connection: &str,
    expected: Value,
) -> Resp {
    let body = signed(
        &w.client.key,
        json!({"connectionId": connection, "reason": "we lost less", "expectedTransfers": expected}),
        &[("settlementId", settlement.to_owned())],
        &format!("raise-{settlement}-{connection}"),
    );
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

/// The partner's view of a settlement once `status` is reached (polls; bounded).
pub async fn settled(app: &TestApp, w: &World, settlement: &str, status: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let read = app
            .get(
                &format!(
                    "/v1/enterprises/{}/partners/settlements/{settlement}",
                    w.partner.id
                ),
                &w.partner.token,
            )
            .await;
        last = read.body.clone();
        if read.status == 200 && last["settlement"]["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("settlement {settlement} never became {status}: {last}");
}

/// (available, held) of BTC on each connection, and the partner's custody available.
pub async fn btc(app: &TestApp, l: &Lifecycle) -> (Vec<(i128, i128)>, i128) {
    app.read_models_caught_up().await;
    let client = app
        .get(
            &format!("/v1/enterprises/{}/clients/balances", l.w.client.id),
            &l.w.client.token,
        )
        .await;
    let client = client.expect(200, None);
    let of = |c: &str| {
        let b = &client["networkBalances"][c]["balances"]["BTC"];
        let n = |v: &Value| v.as_str().unwrap_or("0").parse::<i128>().unwrap();
        (n(&b["available"]), n(&b["held"]))
    };
    let partner = app
        .get(
            &format!("/v1/enterprises/{}/partners/balances", l.w.partner.id),
            &l.w.partner.token,
        )
        .await;
    let custody = partner.expect(200, None)["balances"]["BTC"]["available"]
        .as_str()
        .unwrap_or("0")
        .parse::<i128>()
        .unwrap();
    (vec![of(&l.c1), of(&l.c2)], custody)
}

/// (quantity, status) of each transfer of a settlement read, sorted.
pub fn transfer_statuses(read: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = read["settlementTransfers"]
        .as_array()
        .expect("transfers")
        .iter()
        .map(|t| {
            (
                t["quantity"].as_str().expect("quantity").to_owned(),
                t["status"].as_str().expect("status").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn worked_example_dispute_withholds_then_closure_carries_into_the_next_settlement() {
    let mut app = TestApp::spawn().await;
    app.start_finalizer(60.0).await;
    let l = lifecycle_world(&app, "100000000").await;
    let w = &l.w;

    // S1: C1 loses 0.2 BTC, C2 gains 0.1 BTC. Client A disputes C1 inside the window.
    let s1 = stage(
        &app,
        w,
        "day-1",
        json!({&l.c1: {"BTC": "-20000000"}, &l.c2: {"BTC": "10000000"}}),
    )
    .await;
    let s1_id = s1.expect(200, None)["settlement"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let raised = raise(&app, w, &s1_id, &l.c1, json!({"BTC": "-5000000"})).await;
    let dispute = raised.expect(200, None)["dispute"].clone();
    assert_eq!(dispute["connectionId"], l.c1.as_str());
    assert_eq!(dispute["retracted"], false);
    let dispute_id = dispute["id"].as_str().unwrap().to_owned();
    // One dispute per settlement and connection.
    let again = signed(
        &w.client.key,
        json!({"connectionId": &l.c1, "expectedTransfers": {"BTC": "-1"}}),
        &[("settlementId", s1_id.clone())],
        "raise-again",
    );
    app.post(
        &format!(
            "/v1/enterprises/{}/clients/settlements/{s1_id}/disputes",
            w.client.id
        ),
        &w.client.token,
        again,
    )
    .await
    .expect(409, Some("already_disputed"));

    // Finalization withholds C1 (its hold released); execution moves only C2's gain.
    let done = settled(&app, w, &s1_id, "completed").await;
    assert_eq!(done["settlement"]["disputed"], true);
    assert_eq!(
        transfer_statuses(&done),
        vec![
            ("-20000000".into(), "disputed".into()),
            ("10000000".into(), "completed".into())
        ]
    );
    assert_eq!(
        btc(&app, &l).await,
        (vec![(40_000_000, 0), (50_000_000, 0)], 90_000_000)
    );

    // After the window: raising is refused.
    raise(&app, w, &s1_id, &l.c2, json!({"BTC": "1"}))
        .await
        .expect(422, Some("dispute_window_closed"));

    // The operator closes the dispute with a smaller loss.
    let closed = app
        .admin(
            Method::POST,
            &format!("/disputes/{dispute_id}/close"),
            json!({"notes": "agreed at 0.05", "adjustedTransfers": {"BTC": "-5000000"}}),
        )
        .await;
    let closed = closed.expect(200, None)["disputeClosure"].clone();
    assert_eq!(closed["closedBy"], "admin");
    assert_eq!(closed["adjustedTransfers"], json!({"BTC": "-5000000"}));

    // S2 carries only new trading; the closure joins it, counts in its liabilities and executes.
    let s2 = stage(&app, w, "day-2", json!({&l.c2: {"BTC": "1000000"}})).await;
    let s2_body = s2.expect(200, None)["settlement"].clone();
    let s2_id = s2_body["id"].as_str().unwrap().to_owned();
    let settling = s2_body["settlingDisputes"].as_array().unwrap();
    assert_eq!(settling.len(), 1, "the closed dispute joins S2: {s2_body}");
    assert_eq!(settling[0]["id"], dispute_id.as_str());
    assert_eq!(settling[0]["settledInSettlementId"], s2_id.as_str());
    let done = settled(&app, w, &s2_id, "completed").await;
    assert_eq!(
        transfer_statuses(&done),
        vec![
            ("-5000000".into(), "completed".into()),
            ("1000000".into(), "completed".into())
        ]
    );
    assert_eq!(done["settlingDisputes"][0]["id"], dispute_id.as_str());
    let (connections, custody) = btc(&app, &l).await;
    assert_eq!(connections, vec![(35_000_000, 0), (51_000_000, 0)]);
    assert_eq!(custody, 94_000_000);
    // Conservation: 2 × 0.4 allocated + 1 BTC deposited by the partner.
    let total: i128 = connections.iter().map(|(a, h)| a + h).sum::<i128>() + custody;
    assert_eq!(total, 180_000_000);
    app.shutdown().await;
}
