//! NATS loses everything (stopped, store deleted, restarted): the relay refills `EVENTS` from the
//! Postgres log so that stream sequence == global position again for every event.

use std::time::Duration;

use events::store::EventStore;

use crate::failover::assert_stream_matches_log;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_relay_refills_a_wiped_stream() {
    let db = TestDb::new().await;
    let mut nats = PrivateNats::start().await;
    let js = jetstream_at(&nats.url()).await;
    let bus = unique_bus();
    let store = EventStore::new(db.pool.clone());
    let mut leader = spawn_leader(&db, &js, &bus, "relay").await;

    let s = stream("loss", "a");
    for c in 0..100u64 {
        store
            .append(&append_request(&s, c * 10, 10, new_command()))
            .await
            .unwrap();
    }
    assert!(
        leader.wait_published(1_000, Duration::from_secs(30)).await,
        "first thousand published"
    );

    nats.stop().await;
    nats.wipe();
    // Appends go on while NATS is away; they are durable in Postgres.
    for c in 100..120u64 {
        store
            .append(&append_request(&s, c * 10, 10, new_command()))
            .await
            .unwrap();
    }
    nats.restart().await;
    for c in 120..150u64 {
        store
            .append(&append_request(&s, c * 10, 10, new_command()))
            .await
            .unwrap();
    }

    let refilled = eventually(Duration::from_secs(60), || {
        let js = js.clone();
        let bus = bus.clone();
        async move {
            events::bus::stream_last_sequence(&js, &bus)
                .await
                .unwrap_or(0)
                == 1_500
        }
    })
    .await;
    assert!(refilled, "the relay refills the stream to the log's head");
    assert!(leader.wait_published(1_500, Duration::from_secs(10)).await);
    assert_stream_matches_log(&js, &bus, &store, 1_500).await;
    leader.stop().await;
    db.drop_db().await;
}
