//! Set-based apply against the row-at-a-time baseline, on real Postgres, without NATS: a
//! synthetic log of many tenants (allocations, deallocations, deposits, settlements through
//! their lifecycle, disputes closed and carried, licence and key changes) is applied
//! (a) row at a time in one consumer, (b) set-based in three partitions with uneven batches,
//! (c) set-based in one partition with large batches, and (d) by `replay`; every read-model
//! table has the same digest in all four. The notifications agree across partition counts too.

use std::collections::BTreeMap;
use std::sync::Arc;

use events::bus::consumer::Projection;
use events::codec::SequencedEvent;
use events::store::sequencer::{Leadership, Sequencer, StepOutcome};
use events::store::EventStore;
use events::testing::TestDb;
use projector::rebuild::{digests, replay, Digest};
use projector::route::Directory;
use projector::synthetic::{fill, Generator, Versions};
use projector::Group;
use sqlx::PgPool;

/// Events in the synthetic log: enough for every kind of event many times over, few enough
/// for CI.
const EVENTS: u64 = 12_000;

/// Gives every appended event a position (no relay: this test reads the log itself).
async fn sequence_all(db: &TestDb) -> u64 {
    let leadership = Leadership::acquire(
        &db.url,
        "setbased-test",
        std::time::Duration::from_millis(50),
    )
    .await
    .expect("leadership");
    let mut sequencer = Sequencer::resume(db.pool.clone(), &leadership)
        .await
        .expect("sequencer");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&db.pool)
        .await
        .expect("count");
    while sequencer.last_position() < total as u64 {
        match sequencer.step().await.expect("step") {
            StepOutcome::Sequenced(_) => {}
            StepOutcome::Idle => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            StepOutcome::Fenced => panic!("fenced"),
        }
    }
    leadership.release().await;
    sequencer.last_position()
}

async fn log(pool: &PgPool, head: u64) -> Vec<SequencedEvent> {
    EventStore::new(pool.clone())
        .read_log(0, head, u32::MAX)
        .await
        .expect("read log")
}

/// Applies `events` to the tables of `schema` with `projection`, in batches of the sizes
/// `sizes` cycles through, each batch in a transaction of its own.
async fn apply_in<P: Projection>(
    pool: &PgPool,
    schema: &str,
    projection: &mut P,
    events: &[SequencedEvent],
    sizes: &[usize],
) {
    let mut at = 0;
    let mut k = 0;
    while at < events.len() {
        let n = sizes[k % sizes.len()].min(events.len() - at);
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
            .execute(&mut *tx)
            .await
            .expect("search path");
        projection
            .apply(&mut tx, &events[at..at + n])
            .await
            .unwrap_or_else(|e| panic!("apply at {}: {e:#}", events[at].position));
        tx.commit().await.expect("commit");
        at += n;
        k += 1;
    }
}

async fn empty_schema(pool: &PgPool, schema: &str, groups: &[Group]) {
    replay(pool, groups, 3, 0, schema, 1_000, false)
        .await
        .expect("schema");
}

fn differing(a: &BTreeMap<String, Digest>, b: &BTreeMap<String, Digest>) -> Vec<String> {
    a.iter()
        .filter(|(t, d)| b.get(*t) != Some(d))
        .map(|(t, d)| format!("{t}: {d:?} vs {:?}", b.get(t)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_based_partitions_and_replay_leave_the_rows_the_baseline_leaves() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let mut generator = Generator::new(7, 60);
    let mut versions = Versions::default();
    fill(&store, &mut generator, &mut versions, EVENTS, 50)
        .await
        .expect("fill");
    let head = sequence_all(&db).await;
    let events = log(&db.pool, head).await;
    assert_eq!(events.len() as u64, head);

    let read_models = [Group::ReadModels];
    // (a) the baseline, one consumer, batches of 1,000.
    empty_schema(&db.pool, "baseline", &read_models).await;
    apply_in(
        &db.pool,
        "baseline",
        &mut projector::baseline::RowAtATime,
        &events,
        &[1_000],
    )
    .await;
    // (b) three partitions, each over the whole log in uneven batches (1 to 997 events).
    empty_schema(&db.pool, "partitioned", &read_models).await;
    let directory = Arc::new(Directory::default());
    for k in 0..3 {
        let mut partition = projector::readmodels::ReadModels::new(k, 3, directory.clone());
        apply_in(
            &db.pool,
            "partitioned",
            &mut partition,
            &events,
            &[1, 997, 13, 250, 64],
        )
        .await;
    }
    // (c) one partition, big batches, a directory that learns everything from the store.
    empty_schema(&db.pool, "single", &read_models).await;
    let mut single = projector::readmodels::ReadModels::single(Arc::new(Directory::default()));
    apply_in(&db.pool, "single", &mut single, &events, &[5_000]).await;
    // (d) replay.
    replay(&db.pool, &read_models, 3, head, "replayed", 3_000, false)
        .await
        .expect("replay");

    let baseline = digests(&db.pool, "baseline", &read_models).await.unwrap();
    assert!(
        baseline["rm_settlement_transfers"].rows > 100 && baseline["rm_disputes"].rows > 5,
        "the workload reaches every table: {baseline:?}"
    );
    for schema in ["partitioned", "single", "replayed"] {
        let other = digests(&db.pool, schema, &read_models).await.unwrap();
        assert!(
            differing(&baseline, &other).is_empty(),
            "{schema} differs from the baseline: {:?}",
            differing(&baseline, &other)
        );
    }

    // Notifications: one partition and three, and a replay, agree on the feed and on every
    // delivery's status (each partition's own copy of the webhook URLs).
    let notifications = [Group::Notifications];
    for (schema, partitions) in [("n_one", 1u32), ("n_three", 3)] {
        empty_schema(&db.pool, schema, &notifications).await;
        let directory = Arc::new(Directory::default());
        for k in 0..partitions {
            let mut p =
                projector::notifications::Notifications::new(k, partitions, directory.clone());
            apply_in(&db.pool, schema, &mut p, &events, &[700, 31]).await;
        }
    }
    let feed = |schema: &'static str| {
        let pool = db.pool.clone();
        async move {
            let all = digests(&pool, schema, &[Group::Notifications])
                .await
                .unwrap();
            let deliveries: Vec<(uuid::Uuid, String)> = sqlx::query_as(&format!(
                "SELECT notification_id, status FROM {schema}.webhook_deliveries ORDER BY 1"
            ))
            .fetch_all(&pool)
            .await
            .unwrap();
            let shared: BTreeMap<String, Digest> = all
                .into_iter()
                .filter(|(t, _)| t != "notification_webhook_replicas")
                .collect();
            (shared, deliveries)
        }
    };
    let (one, one_deliveries) = feed("n_one").await;
    let (three, three_deliveries) = feed("n_three").await;
    assert!(one["rm_notifications"].rows > 50, "{one:?}");
    assert!(
        differing(&one, &three).is_empty(),
        "{:?}",
        differing(&one, &three)
    );
    assert_eq!(one_deliveries, three_deliveries);
    assert!(
        one_deliveries.iter().any(|(_, s)| s == "pending")
            && one_deliveries.iter().any(|(_, s)| s == "not_configured"),
        "both kinds of delivery occur"
    );
    db.drop_db().await;
}
