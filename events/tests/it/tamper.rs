//! Tampering: one changed byte of one stored payload (on a copy of the store, since the original
//! refuses changes) is found by verification, which names its position.

use std::time::Duration;

use events::store::{verify_chain, ChainFault, EventStore, Leadership, Sequencer, StepOutcome};

use crate::support::*;

#[tokio::test]
async fn verification_names_the_changed_position() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    for i in 0..10 {
        store
            .append(&append_request(
                &stream("tamper", &format!("s{i}")),
                0,
                5,
                new_command(),
            ))
            .await
            .unwrap();
    }
    let leadership = Leadership::acquire(&db.url, "tamper", Duration::from_millis(20))
        .await
        .unwrap();
    let mut sequencer = Sequencer::resume(db.pool.clone(), &leadership)
        .await
        .unwrap();
    // Idle only means "nothing below the horizon yet": other sessions of the cluster may hold it.
    let mut sequenced = 0;
    while sequenced < 50 {
        match sequencer.step().await.unwrap() {
            StepOutcome::Sequenced(batch) => sequenced += batch.len(),
            StepOutcome::Idle => tokio::time::sleep(Duration::from_millis(5)).await,
            StepOutcome::Fenced => panic!("nobody else leads"),
        }
    }
    leadership.release().await;
    let clean = verify_chain(&db.pool).await.unwrap();
    assert_eq!((clean.checked, clean.fault.clone()), (50, None));

    let copy = db.copy().await;
    sqlx::query("ALTER TABLE events DISABLE TRIGGER events_append_only")
        .execute(&copy.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE events SET payload = set_byte(payload, 3, get_byte(payload, 3) # 1)
         WHERE event_id = (SELECT event_id FROM event_log WHERE position = 37)",
    )
    .execute(&copy.pool)
    .await
    .unwrap();
    let report = verify_chain(&copy.pool).await.unwrap();
    assert_eq!(
        report.fault,
        Some(ChainFault::HashMismatch { position: 37 })
    );
    assert_eq!(report.checked, 36, "everything before it verifies");

    // A removed position is named too.
    sqlx::query("ALTER TABLE event_log DISABLE TRIGGER event_log_append_only")
        .execute(&copy.pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM event_log WHERE position = 12")
        .execute(&copy.pool)
        .await
        .unwrap();
    let report = verify_chain(&copy.pool).await.unwrap();
    assert_eq!(
        report.fault,
        Some(ChainFault::Gap {
            expected: 12,
            found: 13
        })
    );
    copy.drop_db().await;
    db.drop_db().await;
}
