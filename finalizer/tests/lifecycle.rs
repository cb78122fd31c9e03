//! The finalizer binary as a real process: starts against a fresh database, becomes ready, and stops
//! cleanly on SIGTERM.

use std::time::Duration;

use events::testing::*;

#[tokio::test]
async fn starts_serves_health_and_stops_gracefully() {
    let db = TestDb::new().await;
    let bus = unique_bus();
    let env = [
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", nats_url()),
        ("SETTLE_EVENTS_STREAM", bus.stream.clone()),
        ("SETTLE_EVENTS_SUBJECT_PREFIX", bus.subject_prefix.clone()),
    ];
    let process = Process::spawn(env!("CARGO_BIN_EXE_finalizer"), &env).await;
    let ready = eventually(Duration::from_secs(20), || {
        let addr = process.addr.clone();
        async move { matches!(http_get(&addr, "/readyz").await, Ok((200, body)) if body.contains("\"ready\":true")) }
    })
    .await;
    assert!(ready, "/readyz reports ready");
    let status = process.terminate().await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    jetstream_at(&nats_url())
        .await
        .delete_stream(&bus.stream)
        .await
        .ok();
    db.drop_db().await;
}
