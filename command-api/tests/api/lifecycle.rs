//! The command-api binary as a real process: starts against a fresh database, becomes ready
//! (Postgres, migrations, NATS, relay), takes the sequencer lead, and stops cleanly on SIGTERM.

use std::time::Duration;

use events::testing::*;

#[tokio::test]
async fn starts_serves_health_and_stops_gracefully() {
    let db = TestDb::new().await;
    let bus = unique_bus();
    let api = spawn_ready(env!("CARGO_BIN_EXE_command-api"), &db, &bus).await;
    let leads = eventually(Duration::from_secs(20), || {
        let pool = db.pool.clone();
        async move {
            let leader: String = sqlx::query_scalar("SELECT leader FROM sequencer_state")
                .fetch_one(&pool)
                .await
                .unwrap();
            leader.starts_with("command-api@")
        }
    })
    .await;
    assert!(leads, "the process takes the sequencer lead");
    let (status, metrics) = http_get(&api.addr, "/metrics").await.unwrap();
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains("settle_sequencer_leader 1"),
        "leadership is visible in /metrics: {metrics}"
    );

    let status = api.terminate().await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let locks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(locks, 0, "leadership released on shutdown");
    jetstream_at(&nats_url())
        .await
        .delete_stream(&bus.stream)
        .await
        .ok();
    db.drop_db().await;
}
