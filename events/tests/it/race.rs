//! The commit-order race: transactions take their ids in one order and commit in another. A naive
//! reader that follows `(txid, seq) > cursor` must skip events (the test has teeth); the
//! sequencer, which reads only below the xid horizon, must order every event exactly once.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use events::store::{append_on, Leadership, Sequencer, StepOutcome};
use rand::Rng;
use sqlx::{PgPool, Row};

use crate::support::*;

const WRITERS: usize = 8;
const EVENTS_TOTAL: usize = 20_000;
const EVENTS_PER_COMMIT: usize = 10;
const STREAMS_PER_WRITER: usize = 5;

/// One writer: appends to its own streams, sleeping 0–50 ms between the append and COMMIT.
async fn writer(pool: PgPool, w: usize, commits: usize) {
    let streams: Vec<_> = (0..STREAMS_PER_WRITER)
        .map(|i| stream("race", &format!("w{w}-s{i}")))
        .collect();
    let mut versions = [0u64; STREAMS_PER_WRITER];
    for c in 0..commits {
        let i = c % STREAMS_PER_WRITER;
        let request = append_request(&streams[i], versions[i], EVENTS_PER_COMMIT, new_command());
        let delay = Duration::from_millis(rand::thread_rng().gen_range(0..=50));
        let mut tx = pool.begin().await.expect("begin");
        append_on(&mut tx, &request).await.expect("append");
        tokio::time::sleep(delay).await;
        tx.commit().await.expect("commit");
        versions[i] += EVENTS_PER_COMMIT as u64;
    }
}

/// The canary: remembers the highest `(txid, seq)` it saw and asks only for what is above it.
async fn naive_reader(pool: PgPool, stop: Arc<AtomicBool>) -> HashSet<(i64, i32)> {
    let mut seen = HashSet::new();
    let mut cursor = (0i64, -1i32);
    loop {
        let done = stop.load(Ordering::SeqCst);
        let rows = sqlx::query(
            "SELECT txid, tx_seq FROM events WHERE (txid, tx_seq) > ($1, $2) ORDER BY txid, tx_seq",
        )
        .bind(cursor.0)
        .bind(cursor.1)
        .fetch_all(&pool)
        .await
        .expect("naive read");
        for row in rows {
            let key: (i64, i32) = (row.get(0), row.get(1));
            seen.insert(key);
            cursor = cursor.max(key);
        }
        if done {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn late_commits_are_never_skipped_by_the_sequencer() {
    let db = TestDb::new().await;
    let leadership = Leadership::acquire(&db.url, "race", Duration::from_millis(20))
        .await
        .unwrap();
    let mut sequencer = Sequencer::resume(db.pool.clone(), &leadership)
        .await
        .unwrap()
        .with_batch_max(500);

    let stop = Arc::new(AtomicBool::new(false));
    let canary = tokio::spawn(naive_reader(db.pool.clone(), stop.clone()));
    let commits_per_writer = EVENTS_TOTAL / EVENTS_PER_COMMIT / WRITERS;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(db.pool.clone(), w, commits_per_writer)))
        .collect();

    // The sequencer runs alongside the writers, as in production.
    let mut ordered = Vec::with_capacity(EVENTS_TOTAL);
    let all_written = async {
        for w in writers {
            w.await.unwrap();
        }
    };
    tokio::pin!(all_written);
    let mut writing = true;
    // The horizon is cluster-wide: a transaction open in another database (another test running
    // beside this one) holds back what may be sequenced. So once the writers are done, an idle
    // step means "not yet", and the loop waits (bounded) for progress instead of stopping.
    let mut progressed = std::time::Instant::now();
    while writing || ordered.len() < EVENTS_TOTAL {
        if writing && futures::poll!(&mut all_written).is_ready() {
            writing = false;
        }
        match sequencer.step().await.unwrap() {
            StepOutcome::Sequenced(batch) => {
                ordered.extend(batch);
                progressed = std::time::Instant::now();
            }
            StepOutcome::Idle if !writing && progressed.elapsed() > Duration::from_secs(30) => {
                break
            }
            StepOutcome::Idle => tokio::time::sleep(Duration::from_millis(1)).await,
            StepOutcome::Fenced => panic!("nobody else leads"),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let seen_by_canary = canary.await.unwrap();

    let skipped = EVENTS_TOTAL - seen_by_canary.len();
    println!(
        "naive reader skipped {skipped} of {EVENTS_TOTAL} events; the sequencer ordered {}",
        ordered.len()
    );
    assert!(
        skipped > 0,
        "the race must make a naive reader skip (otherwise this test proves nothing)"
    );

    // Ours: dense positions, no event missing or twice, per-stream versions in order.
    assert_eq!(ordered.len(), EVENTS_TOTAL, "missing events");
    for (i, e) in ordered.iter().enumerate() {
        assert_eq!(e.position, i as u64 + 1, "positions are dense");
    }
    let ids: HashSet<_> = ordered.iter().map(|e| e.stored.event_id).collect();
    assert_eq!(ids.len(), EVENTS_TOTAL, "duplicates");
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    for e in &ordered {
        let last = versions.entry(e.stored.stream.to_string()).or_insert(0);
        assert_eq!(
            e.stored.version,
            *last + 1,
            "stream {} out of order",
            e.stored.stream
        );
        *last = e.stored.version;
    }
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM event_log")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(stored, EVENTS_TOTAL as i64);
    let report = events::store::verify_chain(&db.pool).await.unwrap();
    assert_eq!((report.checked, report.fault), (EVENTS_TOTAL as u64, None));
    leadership.release().await;
    db.drop_db().await;
}
