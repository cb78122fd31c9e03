//! Test support: a fresh database per test on the local stack, unique JetStream names on the
//! shared server, a private nats-server for tests that stop or wipe it, and small builders.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use events::bus::leader::{self, LeaderConfig, LeaderProgress};
use events::bus::BusConfig;
use events::codec::{Actor, EncodedEvent, Metadata};
use events::domain::event::Timestamp;
use events::domain::{CommandId, StreamName};
use events::store::{db, AppendRequest, NewEvent};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run the tests through `deploy/stack test`")
}

pub fn nats_url() -> String {
    std::env::var("NATS_URL")
        .expect("NATS_URL is not set: run the tests through `deploy/stack test`")
}

fn url_for(database: &str) -> String {
    let base = base_url();
    let (server, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL names a database");
    format!("{server}/{database}")
}

/// A database of its own, migrated, for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("t_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base_url())
            .await
            .expect("connect to the stack's Postgres");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = url_for(&name);
        let pool = db::connect(&url, 20)
            .await
            .expect("connect to test database");
        db::migrate(&pool).await.expect("migrate test database");
        Self { name, url, pool }
    }

    /// A copy of this database (closes this one's pool: a template may have no sessions).
    pub async fn copy(&self) -> TestDb {
        self.pool.close().await;
        let name = format!("t_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base_url()).await.expect("connect");
        sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {}", self.name))
            .execute(&mut admin)
            .await
            .expect("copy");
        let url = url_for(&name);
        let pool = db::connect(&url, 4).await.expect("connect to copy");
        TestDb { name, url, pool }
    }

    pub async fn drop_db(self) {
        self.pool.close().await;
        if let Ok(mut admin) = PgConnection::connect(&base_url()).await {
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await
            .ok();
        }
    }
}

/// Stream and subject names no other test uses.
pub fn unique_bus() -> BusConfig {
    let tag = Uuid::new_v4().simple().to_string();
    BusConfig {
        stream: format!("T_{tag}"),
        subject_prefix: format!("t{tag}"),
    }
}

pub async fn jetstream_at(url: &str) -> jetstream::Context {
    events::bus::connect(url).await.expect("connect to NATS")
}

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

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check().await
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

/// A nats-server of the test's own, so it can be stopped and its data wiped.
pub struct PrivateNats {
    pub port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl PrivateNats {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(format!("settle-nats-{}", Uuid::new_v4().simple()));
        let mut nats = Self {
            port,
            dir,
            child: None,
        };
        nats.restart().await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) {
        let bin = std::env::var("SETTLE_NATS_SERVER_BIN")
            .expect("SETTLE_NATS_SERVER_BIN: run through `deploy/stack test`");
        let child = tokio::process::Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        assert!(
            eventually(Duration::from_secs(10), || {
                let addr = addr.clone();
                async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
            })
            .await,
            "private nats-server did not start"
        );
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.ok();
        }
    }

    /// Deletes every stored JetStream byte (the server must be stopped).
    pub fn wipe(&self) {
        std::fs::remove_dir_all(self.dir.join("store")).ok();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}
