//! Test support of the event log's tests: builders and a leader handle, on top of
//! `events::testing` (fresh databases, unique bus names, a private nats-server).

use std::time::Duration;

use async_nats::jetstream;
use events::bus::leader::{self, LeaderConfig, LeaderProgress};
use events::bus::BusConfig;
use events::codec::{Actor, EncodedEvent, Metadata};
use events::domain::event::Timestamp;
use events::domain::{CommandId, StreamName};
use events::store::{db, AppendRequest, NewEvent};
pub use events::testing::*;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn stream(category: &str, id: &str) -> StreamName {
    StreamName::parse(category, id).expect("valid stream name")
}

pub fn metadata(command: CommandId) -> Metadata {
    Metadata {
        command_id: command,
        causation_id: None,
        correlation_id: command.as_uuid(),
        actor: Actor::System,
        request_id: Some("test".into()),
        key_id: None,
    }
}

pub fn now() -> Timestamp {
    Timestamp(chrono::Utc::now().timestamp_micros())
}

/// An append of `count` opaque events to `stream`, expecting it at `expected`.
pub fn append_request(
    stream: &StreamName,
    expected: u64,
    count: usize,
    command: CommandId,
) -> AppendRequest {
    let mut request_hash = [0u8; 32];
    request_hash[..16].copy_from_slice(command.as_uuid().as_bytes());
    AppendRequest {
        command_id: command,
        request_hash,
        expected: vec![(stream.clone(), expected)],
        events: (0..count)
            .map(|i| NewEvent {
                stream: stream.clone(),
                event: EncodedEvent {
                    type_id: 1,
                    schema_version: 1,
                    payload: format!("event {i} of {}", command.as_uuid()).into_bytes(),
                },
            })
            .collect(),
        metadata: metadata(command),
        outcome: b"ok".to_vec(),
        nonce: None,
        recorded_at: now(),
    }
}

pub fn new_command() -> CommandId {
    CommandId::from_uuid(Uuid::new_v4())
}

/// A running sequencer/relay leader candidate.
pub struct LeaderHandle {
    pub task: JoinHandle<anyhow::Result<()>>,
    pub progress: watch::Receiver<LeaderProgress>,
    pub shutdown: CancellationToken,
    pub pool: PgPool,
}

pub async fn spawn_leader(
    db: &TestDb,
    js: &jetstream::Context,
    bus: &BusConfig,
    name: &str,
) -> LeaderHandle {
    let pool = db::connect(&db.url, 4).await.expect("leader pool");
    let (tx, progress) = watch::channel(LeaderProgress::default());
    let shutdown = CancellationToken::new();
    let mut config = LeaderConfig::new(db.url.clone(), name, bus.clone());
    config.standby_poll = Duration::from_millis(50);
    config.stream_check = Duration::from_millis(200);
    let task = tokio::spawn(leader::run(
        pool.clone(),
        js.clone(),
        config,
        tx,
        shutdown.clone(),
    ));
    LeaderHandle {
        task,
        progress,
        shutdown,
        pool,
    }
}

impl LeaderHandle {
    pub async fn wait_published(&mut self, position: u64, timeout: Duration) -> bool {
        let progress = self.progress.clone();
        eventually(timeout, || {
            let p = *progress.borrow();
            async move { p.published >= position }
        })
        .await
    }

    /// Stops the leader as a crash would: the task is dropped mid-flight, its sessions close.
    pub async fn crash(self) {
        self.task.abort();
        let _ = self.task.await;
        self.pool.close().await;
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
        self.pool.close().await;
    }
}
