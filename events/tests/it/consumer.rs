//! The consumer loop: a batch and its checkpoint commit together; a failed batch is retried;
//! redeliveries at or below the checkpoint have no effect.

use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use events::bus::consumer::{Consumer, ConsumerConfig, ConsumerStep, Projection};
use events::codec::SequencedEvent;
use events::store::EventStore;
use sqlx::PgConnection;

use crate::support::*;

/// Records every applied position; fails once when it meets `fail_once_at`.
struct Recorder {
    fail_once_at: Option<u64>,
}

impl Projection for Recorder {
    async fn apply(
        &mut self,
        tx: &mut PgConnection,
        events: &[SequencedEvent],
    ) -> anyhow::Result<()> {
        let positions: Vec<i64> = events.iter().map(|e| e.position as i64).collect();
        sqlx::query("INSERT INTO seen (position) SELECT unnest($1::bigint[])")
            .bind(&positions)
            .execute(&mut *tx)
            .await?;
        if let Some(at) = self.fail_once_at {
            if events.iter().any(|e| e.position == at) {
                self.fail_once_at = None;
                anyhow::bail!("projection failure at {at}");
            }
        }
        Ok(())
    }
}

async fn run_until(consumer: &mut Consumer<Recorder>, checkpoint: u64) -> usize {
    let mut errors = 0;
    for _ in 0..200 {
        if consumer.checkpoint() >= checkpoint {
            break;
        }
        if let Err(e) = consumer.step().await {
            println!("step failed: {e:#}");
            errors += 1;
        }
    }
    errors
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_apply_once_with_their_checkpoint() {
    let db = TestDb::new().await;
    sqlx::query("CREATE TABLE seen (position bigint NOT NULL)")
        .execute(&db.pool)
        .await
        .unwrap();
    let js = jetstream_at(&nats_url()).await;
    let bus = unique_bus();
    let store = EventStore::new(db.pool.clone());
    let mut leader = spawn_leader(&db, &js, &bus, "consumer").await;
    for i in 0..30 {
        let category = if i % 3 == 0 { "b" } else { "a" };
        store
            .append(&append_request(
                &stream(category, &format!("s{i}")),
                0,
                10,
                new_command(),
            ))
            .await
            .unwrap();
    }
    assert!(leader.wait_published(300, Duration::from_secs(30)).await);

    let mut config = ConsumerConfig::new("recorder", bus.clone());
    config.batch_max = 50;
    config.fetch_wait = Duration::from_millis(200);
    let mut consumer = Consumer::new(
        db.pool.clone(),
        js.clone(),
        config.clone(),
        Recorder {
            fail_once_at: Some(120),
        },
    )
    .await
    .unwrap();
    let errors = run_until(&mut consumer, 300).await;
    assert_eq!(errors, 1, "the failing batch failed once and was retried");
    assert_eq!(consumer.checkpoint(), 300);
    let (count, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT position) FROM seen")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        (count, distinct),
        (300, 300),
        "every position applied exactly once, none from the failed attempt"
    );

    // Redeliver everything (as after a lost ack): all at or below the checkpoint, so no effect.
    let stream_handle = js.get_stream(&bus.stream).await.unwrap();
    stream_handle.delete_consumer("recorder").await.unwrap();
    stream_handle
        .create_consumer(pull::Config {
            durable_name: Some("recorder".into()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::All,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut again = Consumer::new(
        db.pool.clone(),
        js.clone(),
        config,
        Recorder { fail_once_at: None },
    )
    .await
    .unwrap();
    assert_eq!(
        again.checkpoint(),
        300,
        "the checkpoint survived the instance"
    );
    let mut skipped = 0;
    while skipped < 300 {
        match again.step().await.unwrap() {
            ConsumerStep::Skipped { messages } => skipped += messages,
            other => panic!("only skips expected, got {other:?}"),
        }
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM seen")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 300, "redeliveries changed nothing");

    // A filtered consumer sees only its category, in order.
    let mut filtered = ConsumerConfig::new("only-b", bus.clone());
    filtered.filter_subject = Some(bus.category_filter("b"));
    filtered.fetch_wait = Duration::from_millis(200);
    sqlx::query("TRUNCATE seen")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut only_b = Consumer::new(
        db.pool.clone(),
        js.clone(),
        filtered,
        Recorder { fail_once_at: None },
    )
    .await
    .unwrap();
    while let ConsumerStep::Applied { .. } = only_b.step().await.unwrap() {}
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM seen")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(count, 100, "ten category-b streams of ten events");
    leader.stop().await;
    js.delete_stream(&bus.stream).await.ok();
    db.drop_db().await;
}
