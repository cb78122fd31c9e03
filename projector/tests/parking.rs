//! Poison-proof consumers against the real stack: an event the read models cannot apply is
//! parked with the later events of its stream while every other tenant's events apply; readiness
//! and metrics say so; once the cause is fixed a retry applies them in order and readiness
//! recovers. A transient failure (a dropped connection) parks nothing.

use std::time::Duration;

use events::bus::consumer::{Consumer, ConsumerConfig, ConsumerStep, Projection};
use events::bus::leader::{self, LeaderConfig, LeaderProgress};
use events::codec::{encode_event, Actor, Metadata, SequencedEvent};
use events::domain::custody::DepositCredited;
use events::domain::enterprise::EnterpriseCreated;
use events::domain::event::Timestamp;
use events::domain::money::CurrencyCode;
use events::domain::stream::of;
use events::domain::{CommandId, DomainEvent, StreamName};
use events::store::{AppendRequest, EventStore, NewEvent};
use events::testing::*;
use sqlx::{PgConnection, PgPool};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Appends `event` to `stream` at `expected` (the stream's version before it), as one command.
async fn append(store: &EventStore, stream: StreamName, expected: u64, event: DomainEvent) {
    let command = CommandId::from_uuid(Uuid::new_v4());
    let mut request_hash = [0u8; 32];
    request_hash[..16].copy_from_slice(command.as_uuid().as_bytes());
    store
        .append(&AppendRequest {
            command_id: command,
            request_hash,
            expected: vec![(stream.clone(), expected)],
            events: vec![NewEvent {
                stream,
                event: encode_event(&event),
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

fn enterprise(id: Uuid, name: &str) -> DomainEvent {
    DomainEvent::EnterpriseCreated(EnterpriseCreated {
        enterprise_id: id,
        name: name.to_owned(),
        oes_license: true,
        at: Timestamp(1_000),
    })
}

fn deposit(enterprise_id: Uuid, external_id: String, quantity: i128) -> DomainEvent {
    DomainEvent::DepositCredited(DepositCredited {
        enterprise_id,
        deposit_id: Uuid::new_v4(),
        external_id,
        currency: CurrencyCode::parse("BTC").unwrap(),
        quantity,
        at: Timestamp(2_000),
    })
}

async fn checkpoint(pool: &PgPool, consumer: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce((SELECT position FROM consumer_checkpoints WHERE consumer = $1), 0)",
    )
    .bind(consumer)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn head(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM event_log")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn position_of(pool: &PgPool, stream: &StreamName, version: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT l.position FROM event_log l JOIN events e ON e.event_id = l.event_id
         WHERE e.category = $1 AND e.stream_id = $2 AND e.version = $3",
    )
    .bind(stream.category())
    .bind(stream.id())
    .bind(version)
    .fetch_one(pool)
    .await
    .unwrap()
}

async fn parked_rows(pool: &PgPool, consumer: &str) -> Vec<(i64, String, String, String)> {
    sqlx::query_as(
        "SELECT position, stream, reason, error FROM consumer_parked_events
         WHERE consumer = $1 ORDER BY position",
    )
    .bind(consumer)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn balance(pool: &PgPool, enterprise_id: Uuid) -> Option<String> {
    sqlx::query_scalar(
        "SELECT available::text FROM rm_balances WHERE owner_enterprise_id = $1 AND connection_id IS NULL AND currency = 'BTC'",
    )
    .bind(enterprise_id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// A string no compression brings under the btree key limit (2,704 bytes): random hex, 6 kB.
fn huge_external_id() -> String {
    (0..190)
        .map(|_| Uuid::new_v4().simple().to_string())
        .collect()
}

/// Partitions of the read models and notifications in this test: the poison's partition parks
/// it, the other applies its own events and parks nothing.
const PARTITIONS: u32 = 2;

/// The read models' partition consumer that owns `stream`.
fn owner_of(stream: &StreamName) -> (u32, String) {
    let key = projector::route::RouteKey::Stream(stream.clone());
    let k = projector::route::partition_of(&key, PARTITIONS);
    (
        k,
        events::bus::partitions::partition_consumer(projector::READ_MODELS_CONSUMER, k),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_event_parks_its_stream_and_the_rest_carries_on() {
    let db = TestDb::new().await;
    let bus = unique_bus();
    let js = jetstream_at(&nats_url()).await;
    let stop = CancellationToken::new();
    let (progress, _) = tokio::sync::watch::channel(LeaderProgress::default());
    let sequencer = tokio::spawn(leader::run(
        db.pool.clone(),
        js.clone(),
        LeaderConfig::new(db.url.clone(), "parking-test", bus.clone()),
        progress,
        stop.clone(),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Driven beside the scenario rather than spawned: the test needs no `Send` of its own.
    let projector = projector::run(
        listener,
        projector::Config {
            common: events::service::CommonConfig {
                database_url: db.url.clone(),
                nats_url: nats_url(),
                events_stream: bus.stream.clone(),
                events_subject_prefix: bus.subject_prefix.clone(),
                db_connections: 8,
            },
            listen: addr.clone(),
            scale: projector::ScaleConfig {
                partitions: PARTITIONS,
                lease_seconds: 2.0,
                ..projector::ScaleConfig::default()
            },
            command: None,
        },
        stop.clone(),
    );
    let scenario = async {
        poison_scenario(&db, &addr).await;
        stop.cancel();
    };
    let (ran, ()) = tokio::join!(projector, scenario);
    ran.unwrap();
    sequencer.await.unwrap().unwrap();
    js.delete_stream(&bus.stream).await.ok();
    db.drop_db().await;
}

async fn poison_scenario(db: &TestDb, addr: &str) {
    // Tenant A: its second deposit's external id is too large for the read model's unique
    // index, and a third deposit follows on the same stream. Tenant B is healthy.
    let store = EventStore::new(db.pool.clone());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    append(&store, of::enterprise(a), 0, enterprise(a, "Tenant A")).await;
    append(&store, of::custody(a), 0, deposit(a, "a-1".into(), 100)).await;
    append(
        &store,
        of::custody(a),
        1,
        deposit(a, huge_external_id(), 20),
    )
    .await;
    append(&store, of::enterprise(b), 0, enterprise(b, "Tenant B")).await;
    append(&store, of::custody(b), 0, deposit(b, "b-1".into(), 7)).await;
    append(&store, of::custody(a), 2, deposit(a, "a-3".into(), 3)).await;
    append(&store, of::custody(b), 1, deposit(b, "b-2".into(), 5)).await;

    let custody_a = of::custody(a);
    let (poisoned, read_models) = owner_of(&custody_a);
    let read_models = read_models.as_str();
    let healthy =
        events::bus::partitions::partition_consumer(projector::READ_MODELS_CONSUMER, 1 - poisoned);
    let caught_up = eventually(Duration::from_secs(30), || {
        let pool = db.pool.clone();
        let healthy = healthy.clone();
        async move {
            let h = head(&pool).await;
            h == 7
                && checkpoint(&pool, read_models).await == h
                && checkpoint(&pool, &healthy).await == h
        }
    })
    .await;
    assert!(
        caught_up,
        "the read models' checkpoint moves past the poison"
    );

    let poison = position_of(&db.pool, &custody_a, 2).await;
    let later = position_of(&db.pool, &custody_a, 3).await;
    let parked = parked_rows(&db.pool, read_models).await;
    assert_eq!(
        parked
            .iter()
            .map(|(p, s, r, _)| (*p, s.clone(), r.clone()))
            .collect::<Vec<_>>(),
        vec![
            (poison, custody_a.to_string(), "failed".to_owned()),
            (later, custody_a.to_string(), "held".to_owned()),
        ],
        "the poison and the later event of its stream are parked: {parked:?}"
    );
    assert!(
        parked[0].3.contains("exceeds btree") && parked[0].3.contains("54000"),
        "the error is kept: {}",
        parked[0].3
    );
    // Everything else applied: tenant B whole, tenant A up to its poison.
    assert_eq!(balance(&db.pool, b).await.as_deref(), Some("12"));
    assert_eq!(balance(&db.pool, a).await.as_deref(), Some("100"));
    let enterprises: i64 = sqlx::query_scalar("SELECT count(*) FROM rm_enterprises")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(enterprises, 2);
    let others = [
        "projector-catalog-p0".to_owned(),
        "projector-notifications-p0".to_owned(),
        "projector-notifications-p1".to_owned(),
        healthy.clone(),
    ];
    for other in &others {
        assert!(
            parked_rows(&db.pool, other).await.is_empty(),
            "{other} applies them all"
        );
    }

    let (status, body) = http_get(addr, "/readyz").await.unwrap();
    assert_eq!(status, 503, "parked events make readiness degraded: {body}");
    let ready: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        ready["checks"][format!("parked:{read_models}")],
        format!("2 parked event(s), first at position {poison} on stream {custody_a}"),
        "{body}"
    );
    assert_eq!(
        ready["checks"]["parked:projector-catalog-p0"], "ok",
        "{body}"
    );
    assert_eq!(ready["checks"][format!("parked:{healthy}")], "ok", "{body}");
    assert_eq!(
        ready["checks"]["lag:projector-notifications-p1"], "ok",
        "{body}"
    );
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert!(
        metrics.contains(&format!(
            "settle_consumer_parked_events{{consumer=\"{read_models}\"}} 2"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "settle_consumer_parked_total{{consumer=\"{read_models}\"}} 2"
        )),
        "{metrics}"
    );

    // The CLI lists them.
    let list = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(["parked", "list"])
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(list.status.success());
    let listed: Vec<serde_json::Value> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0]["consumer"], read_models);
    assert_eq!(listed[0]["position"], poison);
    assert_eq!(listed[0]["type"], "DepositCredited");
    assert!(listed[0]["parked_at"].is_string());

    // A retry before the cause is fixed changes nothing and says so.
    let scale = projector::ScaleConfig {
        partitions: PARTITIONS,
        ..projector::ScaleConfig::default()
    };
    let reports = projector::retry_parked(&db.pool, &scale, Some(read_models), None)
        .await
        .unwrap();
    assert!(!reports[0].succeeded());
    assert!(reports[0].applied.is_empty());
    assert_eq!(parked_rows(&db.pool, read_models).await.len(), 2);

    // The fix an operator would ship: index the external id by its hash, as the key limit asks.
    sqlx::raw_sql(
        "ALTER TABLE rm_deposits DROP CONSTRAINT rm_deposits_enterprise_id_external_id_key;
         CREATE UNIQUE INDEX rm_deposits_external_id_hash ON rm_deposits (enterprise_id, md5(external_id));",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    // Retry only the poison's streams, through the library the CLI uses...
    let reports = projector::retry_parked(&db.pool, &scale, None, Some(poison as u64))
        .await
        .unwrap();
    let applied: Vec<u64> = reports.iter().flat_map(|r| r.applied.clone()).collect();
    assert_eq!(applied, vec![poison as u64, later as u64], "in order");
    assert!(reports.iter().all(|r| r.succeeded()), "{reports:?}");
    assert!(parked_rows(&db.pool, read_models).await.is_empty());
    let streams: i64 = sqlx::query_scalar("SELECT count(*) FROM consumer_parked_streams")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(streams, 0, "the stream is un-parked");
    assert_eq!(balance(&db.pool, a).await.as_deref(), Some("123"));
    // ...and the CLI, with nothing left to do, exits 0.
    let retry = tokio::process::Command::new(env!("CARGO_BIN_EXE_projector"))
        .args(["parked", "retry", "--consumer", read_models])
        .env("SETTLE_PROJECTOR_PARTITIONS", PARTITIONS.to_string())
        .env("DATABASE_URL", &db.url)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    assert!(retry.status.success());
    let report: serde_json::Value = serde_json::from_slice(&retry.stdout).unwrap();
    assert_eq!(report["consumer"], read_models);
    assert_eq!(report["still_parked"], serde_json::json!([]));

    let recovered = eventually(Duration::from_secs(10), || {
        let addr = addr.to_owned();
        async move { matches!(http_get(&addr, "/readyz").await, Ok((200, _))) }
    })
    .await;
    assert!(recovered, "readiness returns to ok after the retry");
    let (_, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert!(metrics.contains(&format!(
        "settle_consumer_parked_events{{consumer=\"{read_models}\"}} 0"
    )));

    // The stream flows again: a new event of it applies at once.
    append(
        &store,
        custody_a.clone(),
        3,
        deposit(a, "a-4".into(), 1_000),
    )
    .await;
    let applied = eventually(Duration::from_secs(20), || {
        let pool = db.pool.clone();
        async move { balance(&pool, a).await.as_deref() == Some("1123") }
    })
    .await;
    assert!(applied, "later events of the un-parked stream apply live");
    assert!(parked_rows(&db.pool, read_models).await.is_empty());
}

/// Records positions; the first apply kills its own database session, as a failover would.
struct DropsConnection {
    dropped: bool,
}

impl Projection for DropsConnection {
    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[SequencedEvent],
    ) -> anyhow::Result<()> {
        if !self.dropped {
            self.dropped = true;
            sqlx::query("SELECT pg_terminate_backend(pg_backend_pid())")
                .execute(&mut *tx)
                .await?;
        }
        let positions: Vec<i64> = events.iter().map(|e| e.position as i64).collect();
        sqlx::query("INSERT INTO seen (position) SELECT unnest($1::bigint[])")
            .bind(&positions)
            .execute(&mut *tx)
            .await?;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_parks_nothing() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE seen (position bigint NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    let bus = unique_bus();
    let js = jetstream_at(&nats_url()).await;
    let stop = CancellationToken::new();
    let (progress, mut progress_rx) = tokio::sync::watch::channel(LeaderProgress::default());
    let sequencer = tokio::spawn(leader::run(
        db.pool.clone(),
        js.clone(),
        LeaderConfig::new(db.url.clone(), "transient-test", bus.clone()),
        progress,
        stop.clone(),
    ));
    let store = EventStore::new(db.pool.clone());
    for i in 0..5u8 {
        let id = Uuid::from_bytes([i + 1; 16]);
        append(&store, of::enterprise(id), 0, enterprise(id, "E")).await;
    }
    progress_rx
        .wait_for(|p| p.published >= 5)
        .await
        .expect("published");

    let mut config = ConsumerConfig::new("transient", bus.clone());
    config.fetch_wait = Duration::from_millis(200);
    let mut consumer = Consumer::new(
        db.pool.clone(),
        js.clone(),
        config,
        DropsConnection { dropped: false },
    )
    .await
    .unwrap();
    let Err(first) = consumer.step().await else {
        panic!("the batch fails with its connection");
    };
    assert!(
        events::bus::parked::is_transient(&first),
        "a dropped connection is transient: {first:#}"
    );
    let mut steps = 0;
    while consumer.checkpoint() < 5 && steps < 20 {
        steps += 1;
        match consumer.step().await {
            Ok(ConsumerStep::Applied { parked, .. }) => assert_eq!(parked, 0),
            Ok(_) => {}
            Err(e) => println!("step failed: {e:#}"),
        }
    }
    assert_eq!(consumer.checkpoint(), 5);
    let (count, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT position) FROM seen")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((count, distinct), (5, 5), "every position applied once");
    let parked: i64 = sqlx::query_scalar("SELECT count(*) FROM consumer_parked_events")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(parked, 0, "a transient failure parks nothing");

    stop.cancel();
    sequencer.await.unwrap().unwrap();
    js.delete_stream(&bus.stream).await.ok();
    db.drop_db().await;
}
