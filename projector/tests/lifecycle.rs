//! The projector binary as a real process: starts against a fresh database, becomes ready, and stops
//! cleanly on SIGTERM.

use std::time::Duration;

use events::testing::*;

#[tokio::test]
async fn starts_serves_health_and_stops_gracefully() {
    let db = TestDb::new().await;
    let bus = unique_bus();
    let process = spawn_ready(env!("CARGO_BIN_EXE_projector"), &db, &bus).await;
    let status = process.terminate().await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    jetstream_at(&nats_url())
        .await
        .delete_stream(&bus.stream)
        .await
        .ok();
    db.drop_db().await;
}

#[tokio::test]
async fn projects_sequenced_events_and_verifies_the_chain() {
    use events::bus::leader::{self, LeaderConfig, LeaderProgress};
    use events::codec::{Actor, EncodedEvent, Metadata};
    use events::domain::event::Timestamp;
    use events::domain::{CommandId, StreamName};
    use events::store::{AppendRequest, EventStore, NewEvent};

    let db = TestDb::new().await;
    let bus = unique_bus();
    let js = jetstream_at(&nats_url()).await;
    let (progress, _) = tokio::sync::watch::channel(LeaderProgress::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let sequencer = tokio::spawn(leader::run(
        db.pool.clone(),
        js.clone(),
        LeaderConfig::new(db.url.clone(), "test", bus.clone()),
        progress,
        stop.clone(),
    ));
    let store = EventStore::new(db.pool.clone());
    for (i, category) in ["alpha", "alpha", "beta"].iter().enumerate() {
        let stream = StreamName::parse(category, &format!("s{i}")).unwrap();
        let command = CommandId::derive("test", &[&[i as u8]]);
        let request = AppendRequest {
            command_id: command,
            request_hash: [i as u8; 32],
            expected: vec![(stream.clone(), 0)],
            events: (0..4)
                .map(|_| NewEvent {
                    stream: stream.clone(),
                    event: EncodedEvent {
                        type_id: 1,
                        schema_version: 1,
                        payload: vec![1],
                    },
                })
                .collect(),
            metadata: Metadata {
                command_id: command,
                causation_id: None,
                correlation_id: command.as_uuid(),
                actor: Actor::System,
                request_id: None,
                key_id: None,
            },
            outcome: vec![],
            nonce: None,
            recorded_at: Timestamp(1),
        };
        store.append(&request).await.unwrap();
    }

    let process = Process::spawn(env!("CARGO_BIN_EXE_projector"), &process_env(&db, &bus)).await;
    let projected = eventually(Duration::from_secs(20), || {
        let pool = db.pool.clone();
        async move {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT category, events FROM rm_event_categories ORDER BY category",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            rows == vec![("alpha".to_owned(), 8), ("beta".to_owned(), 4)]
        }
    })
    .await;
    assert!(
        projected,
        "the projector applies every sequenced event once"
    );
    assert!(process.terminate().await.success());
    stop.cancel();
    sequencer.await.unwrap().unwrap();

    let verify = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .arg("verify-chain")
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(verify.status.success(), "the chain verifies");
    let report: serde_json::Value = serde_json::from_slice(&verify.stdout).unwrap();
    assert_eq!(report["verified"], true);
    assert_eq!(report["checkedPositions"], 12);
    js.delete_stream(&bus.stream).await.ok();
    db.drop_db().await;
}
