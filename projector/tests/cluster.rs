//! The feed as a cluster: three `nats-server` processes on loopback, configured from the
//! production files in `deploy/nats/cluster/`, hold the `EVENTS` stream with three replicas.
//! Under load, the node leading the stream is killed with SIGKILL; the relay and every consumer
//! carry on through the election of a new leader: every event reaches the stream, stream
//! sequence == position for every message, and every partition of every projector group
//! applies every position once.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use events::bus::leader::{self, LeaderConfig, LeaderProgress};
use events::codec::SequencedEvent;
use events::domain::event::Timestamp;
use events::store::EventStore;
use events::testing::*;
use futures::StreamExt;
use projector::synthetic::{Generator, Versions};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One node: its client, monitoring and route ports, and the process.
struct Node {
    name: String,
    client: u16,
    child: Option<tokio::process::Child>,
}

fn deploy_file(node: usize) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy/nats/cluster")
        .join(format!("nats-{node}.conf"))
}

/// The production configuration of node `node`, moved to loopback ports and a local store.
fn local_config(node: usize, ports: &[(u16, u16, u16)], store: &Path) -> String {
    let text = std::fs::read_to_string(deploy_file(node)).expect("cluster config");
    let (client, http, route) = ports[node - 1];
    let mut text = text
        .replace("0.0.0.0:4222", &format!("127.0.0.1:{client}"))
        .replace("0.0.0.0:8222", &format!("127.0.0.1:{http}"))
        .replace("0.0.0.0:6222", &format!("127.0.0.1:{route}"))
        .replace(
            "/data/jetstream",
            &store.join(format!("n{node}")).display().to_string(),
        )
        // Local disks are smaller than a production volume.
        .replace("max_file_store: 200GB", "max_file_store: 2GB");
    for (k, (_, _, r)) in ports.iter().enumerate() {
        text = text.replace(
            &format!("nats-route://nats-{}:6222", k + 1),
            &format!("nats-route://127.0.0.1:{r}"),
        );
    }
    text
}

async fn start_cluster(dir: &Path) -> Vec<Node> {
    let bin = std::env::var("SETTLE_NATS_SERVER_BIN")
        .expect("SETTLE_NATS_SERVER_BIN: run through `deploy/stack test`");
    let ports: Vec<(u16, u16, u16)> = (0..3)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let mut nodes = Vec::new();
    for node in 1..=3 {
        let config = dir.join(format!("nats-{node}.conf"));
        std::fs::write(&config, local_config(node, &ports, dir)).expect("write config");
        let child = tokio::process::Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        nodes.push(Node {
            name: format!("nats-{node}"),
            client: ports[node - 1].0,
            child: Some(child),
        });
    }
    nodes
}

fn url(nodes: &[Node]) -> String {
    nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.client))
        .collect::<Vec<_>>()
        .join(",")
}

async fn head(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM event_log")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_and_every_consumer_carry_on_when_a_cluster_node_dies() {
    let dir = std::env::temp_dir().join(format!("settle-cluster-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut nodes = start_cluster(&dir).await;
    let nats = url(&nodes);
    let js = jetstream_at(&nats).await;
    let mut bus = unique_bus();
    bus.replicas = 3;
    // The cluster elects its meta leader first; the stream can be made after.
    let mut stream = None;
    for _ in 0..100 {
        if let Ok(s) = events::bus::ensure_stream(&js, &bus).await {
            stream = Some(s);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut stream = stream.expect("a three-replica stream on the cluster");
    assert_eq!(stream.info().await.unwrap().config.num_replicas, 3);

    let db = TestDb::new().await;
    let stop = CancellationToken::new();
    let (progress, _) = tokio::sync::watch::channel(LeaderProgress::default());
    let mut leader_config = LeaderConfig::new(db.url.clone(), "cluster-test", bus.clone());
    leader_config.nats_url = Some(nats.clone());
    let sequencer = tokio::spawn(leader::run(
        db.pool.clone(),
        js.clone(),
        leader_config,
        progress,
        stop.clone(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = projector::Config {
        common: events::service::CommonConfig {
            database_url: db.url.clone(),
            nats_url: nats.clone(),
            events_stream: bus.stream.clone(),
            events_subject_prefix: bus.subject_prefix.clone(),
            db_connections: 8,
        },
        listen: listener.local_addr().unwrap().to_string(),
        scale: projector::ScaleConfig {
            partitions: 2,
            lease_seconds: 2.0,
            audit_batches: true,
            ..projector::ScaleConfig::default()
        },
        command: None,
    };
    let projector = tokio::spawn(projector::run(listener, config, stop.clone()));

    let loading = Arc::new(AtomicBool::new(true));
    let writer = {
        let (pool, loading) = (db.pool.clone(), loading.clone());
        tokio::spawn(async move {
            let store = EventStore::new(pool);
            let mut generator = Generator::new(5, 20);
            let mut versions = Versions::default();
            let mut appended = 0u64;
            while loading.load(Ordering::Relaxed) {
                let commands: Vec<_> = (0..10).map(|_| generator.next_command()).collect();
                appended += commands.iter().map(Vec::len).sum::<usize>() as u64;
                store
                    .append(&versions.request(&commands, Timestamp(appended as i64)))
                    .await
                    .expect("append");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            appended
        })
    };
    let published_some = eventually(Duration::from_secs(30), || {
        let pool = db.pool.clone();
        async move { head(&pool).await > 500 }
    })
    .await;
    assert!(published_some, "load flows");

    // Kill the node that leads the stream, under load.
    let leader_name = stream
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader");
    let victim = nodes
        .iter_mut()
        .find(|n| n.name == leader_name)
        .expect("the leader is one of ours");
    let mut child = victim.child.take().expect("running");
    child.start_kill().expect("SIGKILL");
    let _ = child.wait().await;
    println!("killed {leader_name}, the stream's leader");
    tokio::time::sleep(Duration::from_secs(3)).await;
    loading.store(false, Ordering::Relaxed);
    let appended = writer.await.unwrap();

    // Every event is sequenced, published at its position, and applied by every partition.
    let all_in = eventually(Duration::from_secs(60), || {
        let (pool, bus, js) = (db.pool.clone(), bus.clone(), js.clone());
        async move {
            head(&pool).await as u64 == appended
                && events::bus::stream_last_sequence(&js, &bus).await.ok() == Some(appended)
        }
    })
    .await;
    assert!(
        all_in,
        "the relay published all {appended} events through the failover"
    );
    let caught_up = eventually(Duration::from_secs(60), || {
        let pool = db.pool.clone();
        async move {
            let positions: Vec<i64> = sqlx::query_scalar(
                "SELECT coalesce(c.position, 0) FROM consumer_partitions p
                 LEFT JOIN consumer_checkpoints c ON c.consumer = p.consumer",
            )
            .fetch_all(&pool)
            .await
            .unwrap();
            positions.len() == 5 && positions.iter().all(|p| *p as u64 == appended)
        }
    })
    .await;
    assert!(caught_up, "every partition of every group reaches the head");

    // Stream sequence == position, message by message; the event is the log's.
    let reader = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let logged: Vec<(i64, Uuid)> =
        sqlx::query_as("SELECT position, event_id FROM event_log ORDER BY position")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut messages = reader.messages().await.unwrap();
    for (position, event_id) in &logged {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("a message per position")
            .expect("stream open")
            .expect("message");
        let sequence = message.info().unwrap().stream_sequence;
        let event = SequencedEvent::from_wire(&message.payload).expect("an event");
        assert_eq!(
            (sequence, event.position, event.stored.event_id),
            (*position as u64, *position as u64, *event_id)
        );
    }

    // Nothing applied twice, nothing skipped, in any partition.
    let gaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT first_position, lag(last_position) OVER (PARTITION BY consumer ORDER BY first_position) AS previous
             FROM consumer_batches) b
         WHERE first_position <> coalesce(previous, 0) + 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(gaps, 0, "batches are contiguous in every partition");

    stop.cancel();
    projector.await.unwrap().unwrap();
    sequencer.await.unwrap().unwrap();
    js.delete_stream(&bus.stream).await.ok();
    for node in &mut nodes {
        if let Some(mut child) = node.child.take() {
            child.kill().await.ok();
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    db.drop_db().await;
}
