//! Sequencer leadership: a standby takes over when the leader dies, continuing one dense chain;
//! a leader that lost its epoch cannot write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use events::codec::SequencedEvent;
use events::store::{verify_chain, EventStore, Leadership, Sequencer, StepOutcome};

use crate::support::*;

const COMMANDS: usize = 400;
const EVENTS_PER_COMMAND: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_takes_over_a_dead_leader_without_gap_or_duplicate() {
    let db = TestDb::new().await;
    let js = jetstream_at(&nats_url()).await;
    let bus = unique_bus();
    let store = EventStore::new(db.pool.clone());

    let mut first = spawn_leader(&db, &js, &bus, "first").await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            current_epoch(&db).await == 1
        })
        .await,
        "first leads"
    );
    let mut second = spawn_leader(&db, &js, &bus, "second").await;

    // Writers keep appending while the leader dies.
    let writing = Arc::new(AtomicBool::new(true));
    let writer = {
        let (store, writing) = (store.clone(), writing.clone());
        tokio::spawn(async move {
            for c in 0..COMMANDS {
                let s = stream("failover", &format!("s{}", c % 7));
                let version = store.load(std::slice::from_ref(&s)).await.unwrap().len() as u64;
                store
                    .append(&append_request(
                        &s,
                        version,
                        EVENTS_PER_COMMAND,
                        new_command(),
                    ))
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            writing.store(false, Ordering::SeqCst);
        })
    };
    let total = (COMMANDS * EVENTS_PER_COMMAND) as u64;
    assert!(
        first
            .wait_published(total / 4, Duration::from_secs(30))
            .await,
        "first leader publishes"
    );
    first.crash().await;
    assert!(writing.load(Ordering::SeqCst), "the leader died mid-stream");
    writer.await.unwrap();

    assert!(
        second.wait_published(total, Duration::from_secs(30)).await,
        "second leader takes over and catches up"
    );
    assert_eq!(current_epoch(&db).await, 2);
    let report = verify_chain(&db.pool).await.unwrap();
    assert_eq!(
        (report.checked, report.fault),
        (total, None),
        "one dense, unbroken chain"
    );
    assert_stream_matches_log(&js, &bus, &store, total).await;
    second.stop().await;
    js.delete_stream(&bus.stream).await.ok();
    db.drop_db().await;
}

async fn current_epoch(db: &TestDb) -> i64 {
    sqlx::query_scalar("SELECT epoch FROM sequencer_state")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Every JetStream message `n` is the event at position `n` of the log.
pub async fn assert_stream_matches_log(
    js: &async_nats::jetstream::Context,
    bus: &events::bus::BusConfig,
    store: &EventStore,
    total: u64,
) {
    let stream = js.get_stream(&bus.stream).await.unwrap();
    let log = store.read_log(0, total, u32::MAX).await.unwrap();
    assert_eq!(log.len() as u64, total);
    for expected in &log {
        let message = stream.get_raw_message(expected.position).await.unwrap();
        let on_wire = SequencedEvent::from_wire(&message.payload).unwrap();
        assert_eq!(
            message.sequence, expected.position,
            "stream sequence == global position"
        );
        assert_eq!(
            &on_wire, expected,
            "message {} is the logged event",
            expected.position
        );
    }
    let mut stream = stream;
    assert_eq!(
        stream.info().await.unwrap().state.last_sequence,
        total,
        "nothing beyond the log"
    );
}

#[tokio::test]
async fn a_fenced_leader_cannot_write() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let old = Leadership::acquire(&db.url, "old", Duration::from_millis(20))
        .await
        .unwrap();
    let mut stale = Sequencer::resume(db.pool.clone(), &old).await.unwrap();
    old.release().await; // a new leader takes the lock and bumps the epoch
    let new = Leadership::acquire(&db.url, "new", Duration::from_millis(20))
        .await
        .unwrap();
    let mut current = Sequencer::resume(db.pool.clone(), &new).await.unwrap();

    store
        .append(&append_request(&stream("f", "1"), 0, 3, new_command()))
        .await
        .unwrap();
    let mut sequenced = 0;
    while sequenced < 3 {
        match current.step().await.unwrap() {
            StepOutcome::Sequenced(batch) => sequenced += batch.len(),
            StepOutcome::Idle => tokio::time::sleep(Duration::from_millis(5)).await,
            StepOutcome::Fenced => panic!("the current leader is not fenced"),
        }
    }
    // The stale leader now finds the same events (they are below the horizon) but cannot write.
    assert!(
        matches!(stale.step().await.unwrap(), StepOutcome::Fenced),
        "the stale leader is fenced"
    );
    assert_eq!(store.log_head().await.unwrap(), 3);
    new.release().await;
    db.drop_db().await;
}
