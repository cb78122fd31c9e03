//! The finalizer's due-work consumer parks what it cannot apply, as the projector's do: a
//! lifecycle event that does not decode is parked with the later events of its stream, the
//! finalizer's `/readyz` names it, `finalizer parked list` shows it and `finalizer parked retry`
//! exits 1 while it still fails.

use std::time::Duration;

use events::bus::leader::{self, LeaderConfig, LeaderProgress};
use events::codec::{Actor, EncodedEvent, Metadata};
use events::domain::event::Timestamp;
use events::domain::{CommandId, DomainEvent, StreamName};
use events::store::{AppendRequest, EventStore, NewEvent};
use events::testing::*;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Appends events of `type_name` with `payload` to `stream`, one command each.
async fn append(store: &EventStore, stream: &StreamName, version: u64, type_name: &str) {
    let kind = DomainEvent::TYPES
        .iter()
        .find(|t| t.name == type_name)
        .expect("known event type");
    let command = CommandId::from_uuid(Uuid::new_v4());
    let mut request_hash = [0u8; 32];
    request_hash[..16].copy_from_slice(command.as_uuid().as_bytes());
    store
        .append(&AppendRequest {
            command_id: command,
            request_hash,
            expected: vec![(stream.clone(), version)],
            events: vec![NewEvent {
                stream: stream.clone(),
                // Not a layout of this type: it can never decode.
                event: EncodedEvent {
                    type_id: kind.id,
                    schema_version: kind.version,
                    payload: vec![0xff; 3],
                },
            }],
            metadata: Metadata {
                command_id: command,
                causation_id: None,
                correlation_id: command.as_uuid(),
                actor: Actor::System,
                request_id: None,
                key_id: None,
            },
            outcome: b"ok".to_vec(),
            nonce: None,
            recorded_at: Timestamp(1),
        })
        .await
        .expect("append");
}

async fn finalizer_cli(db: &TestDb, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_finalizer"))
        .args(args)
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_lifecycle_event_is_parked_and_reported() {
    let db = TestDb::new().await;
    let bus = unique_bus();
    let js = jetstream_at(&nats_url()).await;
    let stop = CancellationToken::new();
    let (progress, _) = tokio::sync::watch::channel(LeaderProgress::default());
    let sequencer = tokio::spawn(leader::run(
        db.pool.clone(),
        js.clone(),
        LeaderConfig::new(db.url.clone(), "finalizer-parking", bus.clone()),
        progress,
        stop.clone(),
    ));
    let store = EventStore::new(db.pool.clone());
    let settlement = StreamName::parse("settlement", &Uuid::new_v4().to_string()).unwrap();
    append(&store, &settlement, 0, "SettlementStaged").await;
    append(&store, &settlement, 1, "SettlementExecuted").await;

    let process = Process::spawn(env!("CARGO_BIN_EXE_finalizer"), &process_env(&db, &bus)).await;
    let expected = format!("2 parked event(s), first at position 1 on stream {settlement}");
    let reported = eventually(Duration::from_secs(30), || {
        let (addr, expected) = (process.addr.clone(), expected.clone());
        async move {
            match http_get(&addr, "/readyz").await {
                Ok((503, body)) => {
                    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
                    ready["checks"]["parked:finalizer-due-work"] == expected.as_str()
                }
                _ => false,
            }
        }
    })
    .await;
    assert!(
        reported,
        "readiness names the parked event: {:?}",
        http_get(&process.addr, "/readyz").await
    );

    let list = finalizer_cli(&db, &["parked", "list"]).await;
    assert!(list.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["type"], "SettlementStaged");
    assert_eq!(lines[0]["reason"], "failed");
    assert_eq!(lines[1]["type"], "SettlementExecuted");
    assert_eq!(lines[1]["reason"], "held");

    let retry = finalizer_cli(&db, &["parked", "retry"]).await;
    assert_eq!(retry.status.code(), Some(1), "still failing: exit 1");
    let unknown = finalizer_cli(&db, &["parked", "retry", "--consumer", "nope"]).await;
    assert!(!unknown.status.success(), "an unknown consumer is refused");

    assert!(process.terminate().await.success());
    stop.cancel();
    sequencer.await.unwrap().unwrap();
    js.delete_stream(&bus.stream).await.ok();
    db.drop_db().await;
}
