//! The relay never loops silently: against a nats-server of its own whose `max_payload` is
//! smaller than an event, the relay publishes everything before that event, then keeps retrying
//! it while readiness names the position and the error and `settle_relay_stalled` is 1; once the
//! server's limit is raised it publishes the rest by itself and readiness recovers.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use events::bus::leader::{self, LeaderConfig, LeaderProgress, RelayHealth};
use events::codec::{Actor, EncodedEvent, Metadata};
use events::domain::event::Timestamp;
use events::domain::{CommandId, StreamName};
use events::service::{self, Readiness};
use events::store::{AppendRequest, EventStore, NewEvent};
use events::testing::*;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// A nats-server with a configuration file of the test's own (the flags cannot set
/// `max_payload`), restartable on the same port and store.
struct ConfiguredNats {
    port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl ConfiguredNats {
    async fn start(max_payload: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("settle-nats-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut nats = Self {
            port: free_port(),
            dir,
            child: None,
        };
        nats.restart(max_payload).await;
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    async fn restart(&mut self, max_payload: usize) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.ok();
            let _ = child.wait().await;
        }
        let config = self.dir.join("nats.conf");
        write_config(&config, self.port, &self.dir.join("store"), max_payload);
        let bin = std::env::var("SETTLE_NATS_SERVER_BIN")
            .expect("SETTLE_NATS_SERVER_BIN: run through `deploy/stack test`");
        self.child = Some(
            tokio::process::Command::new(bin)
                .arg("-c")
                .arg(&config)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start nats-server"),
        );
        let addr = format!("127.0.0.1:{}", self.port);
        assert!(
            eventually(Duration::from_secs(10), || {
                let addr = addr.clone();
                async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
            })
            .await,
            "nats-server did not start"
        );
    }
}

impl Drop for ConfiguredNats {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

fn write_config(path: &Path, port: u16, store: &Path, max_payload: usize) {
    std::fs::write(
        path,
        format!(
            "listen: \"127.0.0.1:{port}\"\nmax_payload: {max_payload}\njetstream {{\n  store_dir: \"{}\"\n}}\n",
            store.display()
        ),
    )
    .unwrap();
}

/// Appends one opaque event of `bytes` payload bytes to its own stream.
async fn append(store: &EventStore, bytes: usize) {
    let command = CommandId::from_uuid(Uuid::new_v4());
    let stream = StreamName::parse("blob", &Uuid::new_v4().simple().to_string()).unwrap();
    let mut request_hash = [0u8; 32];
    request_hash[..16].copy_from_slice(command.as_uuid().as_bytes());
    store
        .append(&AppendRequest {
            command_id: command,
            request_hash,
            expected: vec![(stream.clone(), 0)],
            events: vec![NewEvent {
                stream,
                event: EncodedEvent {
                    type_id: 1,
                    schema_version: 1,
                    payload: vec![7; bytes],
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_bus_refuses_stalls_the_relay_visibly() {
    let db = TestDb::new().await;
    let mut nats = ConfiguredNats::start(4_096).await;
    let js = jetstream_at(&nats.url()).await;
    let bus = unique_bus();
    let health = RelayHealth::default();
    let mut config = LeaderConfig::new(db.url.clone(), "stall-test", bus.clone());
    config.health = health.clone();
    config.nats_url = Some(nats.url());
    let (progress, progress_rx) = tokio::sync::watch::channel(LeaderProgress::default());
    let stop = CancellationToken::new();
    let leader = tokio::spawn(leader::run(
        db.pool.clone(),
        js.clone(),
        config,
        progress,
        stop.clone(),
    ));
    // The command-api's readiness, as it is wired there: its checks plus the relay's health.
    let readiness: Readiness = {
        let health = health.clone();
        Arc::new(move || {
            let health = health.clone();
            Box::pin(async move { health.checks() })
        })
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let ops = tokio::spawn(service::serve(
        listener,
        service::ops_router(readiness),
        stop.clone(),
    ));

    let store = EventStore::new(db.pool.clone());
    append(&store, 10).await;
    append(&store, 10).await;
    append(&store, 8_000).await;
    append(&store, 10).await;

    let stalled = eventually(Duration::from_secs(20), || {
        let health = health.clone();
        async move { health.stall().is_some_and(|s| s.attempts >= 2) }
    })
    .await;
    assert!(stalled, "the relay reports its stall");
    let stall = health.stall().unwrap();
    assert_eq!(stall.position, 3, "{stall:?}");
    assert!(stall.error.contains("max_payload"), "{stall:?}");
    assert_eq!(
        progress_rx.borrow().published,
        2,
        "what precedes the refused event is published; nothing is skipped"
    );
    let (status, body) = http_get(&addr, "/readyz").await.unwrap();
    assert_eq!(status, 503, "{body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    let check = ready["checks"]["relay-stalled"].as_str().unwrap();
    assert!(
        check.contains("position 3") && check.contains("max_payload"),
        "{body}"
    );
    assert!(
        ready["checks"]["nats-max-payload"]
            .as_str()
            .is_some_and(|c| c.contains("4096")),
        "a server limit below the store's event cap is flagged: {body}"
    );
    let (_, metrics) = http_get(&addr, "/metrics").await.unwrap();
    assert!(metrics.contains("settle_relay_stalled 1"), "{metrics}");
    let failures = metrics
        .lines()
        .find_map(|l| l.strip_prefix("settle_relay_publish_failures_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(failures >= 2.0, "{metrics}");

    // The operator raises the server's limit: the relay picks it up and carries on by itself.
    nats.restart(8 * 1024 * 1024).await;
    let flowing = eventually(Duration::from_secs(30), || {
        let (health, progress) = (health.clone(), progress_rx.clone());
        async move { health.stall().is_none() && progress.borrow().published == 4 }
    })
    .await;
    assert!(
        flowing,
        "the relay publishes the rest: {:?}",
        health.stall()
    );
    let (status, body) = http_get(&addr, "/readyz").await.unwrap();
    assert_eq!(status, 200, "{body}");
    let (_, metrics) = http_get(&addr, "/metrics").await.unwrap();
    assert!(metrics.contains("settle_relay_stalled 0"), "{metrics}");

    stop.cancel();
    leader.await.unwrap().unwrap();
    ops.await.unwrap().unwrap();
    db.drop_db().await;
}
