//! Read-your-writes with `X-Min-Position`, and restarts of the command-api and the projector
//! between steps: nothing is lost and nonces stay used.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn reads_reflect_writes_and_survive_restarts() {
    let mut app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let token = w.client.token.clone();
    let balances = format!("/v1/enterprises/{}/clients/balances", w.client.id);

    let first = app
        .post(
            &w.allocation_path("allocations"),
            &token,
            w.allocation("BTC", json!("1000"), "r-1", "r-1"),
        )
        .await;
    let position = first.header("x-event-position").expect("position token");
    first.expect(200, None);
    let read = app.get_after(&balances, &token, &position).await;
    assert_eq!(
        read.expect(200, None)["networkBalances"][&w.connection_id]["balances"]["BTC"]["available"],
        "1000"
    );

    // Restart both processes; write while the projector is down, then bring it back.
    app.stop_projector().await;
    app.stop_api().await;
    app.start_api().await;
    let replay = app
        .post(
            &w.allocation_path("allocations"),
            &token,
            w.allocation("BTC", json!("1000"), "r-1", "r-1"),
        )
        .await;
    assert_eq!(
        replay.expect(200, None)["allocation"]["id"],
        first.body["allocation"]["id"],
        "the retry after a restart is the same allocation"
    );
    let reused = app
        .post(
            &w.allocation_path("allocations"),
            &token,
            w.allocation("BTC", json!("7"), "r-9", "r-1"),
        )
        .await;
    reused.expect(400, Some("nonce_reused"));
    let second = app
        .post(
            &w.allocation_path("allocations"),
            &token,
            w.allocation("BTC", json!("500"), "r-2", "r-2"),
        )
        .await;
    let position = second.header("x-event-position").expect("position token");
    second.expect(200, None);
    app.start_projector().await;
    let read = app.get_after(&balances, &token, &position).await;
    let read = read.expect(200, None);
    assert_eq!(
        read["networkBalances"][&w.connection_id]["balances"]["BTC"]["available"], "1500",
        "nothing lost across restarts"
    );
    assert_eq!(read["balances"]["BTC"]["available"], "99998500");
    let bad = app.get_after(&balances, &token, "not-a-token").await;
    bad.expect(400, Some("invalid_min_position"));
    app.shutdown().await;
}
