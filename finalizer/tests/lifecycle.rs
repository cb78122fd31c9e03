//! The finalizer binary as a real process: starts against a fresh database, becomes ready, and stops
//! cleanly on SIGTERM.

use events::testing::*;

#[tokio::test]
async fn starts_serves_health_and_stops_gracefully() {
    let db = TestDb::new().await;
    let bus = unique_bus();
    let process = spawn_ready(env!("CARGO_BIN_EXE_finalizer"), &db, &bus).await;
    let status = process.terminate().await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    jetstream_at(&nats_url())
        .await
        .delete_stream(&bus.stream)
        .await
        .ok();
    db.drop_db().await;
}
