//! Read-your-writes with `X-Min-Position`, and restarts of the command-api and the projector
//! between steps: nothing is lost and nonces stay used.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn reads_reflect_writes_and_survive_restarts() {
    let mut app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let token = w.client.token.clone();
    let balances = format!("/v1/enterprises/{}/clients/balances", w.client.id);

    let first = app
        .post(
            &w.allocation_path("allocations"),
            &token,
            w.allocation("BTC", json!("1000"), "r-1", "r-1"),
        )
        .await;
    let position = first.header("x-event-position").expect("position token");
    first.expect(200, None);
    let read = app.get_after(&balances, &token, &position).await;
    assert_eq!(
        read.expect(200, None)["networkBalances"][&w.connection_id]["balances"]["BTC"]["available"],
        "1000"
    );

    // Restart both processes; write while the projector is down, then bring it back.
    app.stop_projector().await;
    app.stop_api().await;
    app.start_api().await;
    let replay = app
        .post(
            &w.allocation_path("allocations"),
            &token,
            w.allocation("BTC", json!("1000"), "r-1", "r-1"),
        )
        .await;
    assert_eq!(
        replay.expect(200, None)["allocation"]["id"],
        first.body["allocation"]["id"],
        "the retry after a restart is the same allocation"
    );
    let reused = app
        .post(
            &w.allocation_path("allocations"),
            &token,
            w.allocation("BTC", json!("7"), "r-9", "r-1"),
        )
        .await;
    reused.expect(400, Some("nonce_reused"));
    let second = app
        .post(
            &w.allocation_path("allocations"),
            &token,
            w.allocation("BTC", json!("500"), "r-2", "r-2"),
        )
        .await;
    let position = second.header("x-event-position").expect("position token");
    second.expect(200, None);
    app.start_projector().await;
    let read = app.get_after(&balances, &token, &position).await;
    let read = read.expect(200, None);
    assert_eq!(
        read["networkBalances"][&w.connection_id]["balances"]["BTC"]["available"], "1500",
        "nothing lost across restarts"
    );
    assert_eq!(read["balances"]["BTC"]["available"], "99998500");
    let bad = app.get_after(&balances, &token, "not-a-token").await;
    bad.expect(400, Some("invalid_min_position"));
    app.shutdown().await;
}

/// A write whose events were sequenced in two batches is reflected only once every one of its
/// events has a position and every partition of the read models is past the last.
#[tokio::test]
async fn a_partly_sequenced_write_is_not_reflected() {
    use command_api::http::consistency::reflected;
    use events::codec::{Actor, EncodedEvent, Metadata};
    use events::domain::event::Timestamp;
    use events::domain::{CommandId, StreamName};
    use events::store::{AppendRequest, EventStore, NewEvent};

    let db = events::testing::TestDb::new().await;
    let stream = StreamName::parse("rw", "one").unwrap();
    let command = CommandId::derive("rw", &[b"1"]);
    let request = AppendRequest {
        command_id: command,
        request_hash: [0; 32],
        expected: vec![(stream.clone(), 0)],
        events: (0..2)
            .map(|_| NewEvent {
                stream: stream.clone(),
                event: EncodedEvent {
                    type_id: 1,
                    schema_version: 1,
                    payload: vec![1],
                },
            })
            .collect(),
        metadata: Metadata {
            command_id: command,
            causation_id: None,
            correlation_id: command.as_uuid(),
            actor: Actor::System,
            request_id: None,
            key_id: None,
        },
        outcome: vec![],
        nonce: None,
        recorded_at: Timestamp(0),
    };
    let appended = EventStore::new(db.pool.clone())
        .append(&request)
        .await
        .unwrap();
    let position = |n: i64, id: uuid::Uuid| {
        sqlx::query("INSERT INTO event_log (position, event_id, hash) VALUES ($1, $2, $3)")
            .bind(n)
            .bind(id)
            .bind(vec![0u8; 32])
    };
    // The group has two partitions; a write is reflected once both are past it.
    sqlx::query(
        "INSERT INTO consumer_partitions (consumer_group, partition, partitions, consumer)
         VALUES ('projector-read-models', 0, 2, 'projector-read-models-p0'),
                ('projector-read-models', 1, 2, 'projector-read-models-p1')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let checkpoint = |partition: u8, n: i64| {
        sqlx::query("INSERT INTO consumer_checkpoints VALUES ($1, $2, now()) ON CONFLICT (consumer) DO UPDATE SET position = $2")
            .bind(format!("projector-read-models-p{partition}"))
            .bind(n)
    };
    let consumer = "projector-read-models";
    assert!(
        !reflected(&db.pool, consumer, appended.txid).await.unwrap(),
        "nothing sequenced yet"
    );
    // The first event sequenced and applied, the second not yet sequenced: not reflected.
    position(1, appended.event_ids[0])
        .execute(&db.pool)
        .await
        .unwrap();
    checkpoint(0, 1).execute(&db.pool).await.unwrap();
    checkpoint(1, 1).execute(&db.pool).await.unwrap();
    assert!(
        !reflected(&db.pool, consumer, appended.txid).await.unwrap(),
        "half a write is not the write"
    );
    position(2, appended.event_ids[1])
        .execute(&db.pool)
        .await
        .unwrap();
    assert!(
        !reflected(&db.pool, consumer, appended.txid).await.unwrap(),
        "sequenced but not yet applied"
    );
    checkpoint(0, 2).execute(&db.pool).await.unwrap();
    assert!(
        !reflected(&db.pool, consumer, appended.txid).await.unwrap(),
        "one partition past it, the other not yet: not reflected"
    );
    checkpoint(1, 2).execute(&db.pool).await.unwrap();
    assert!(reflected(&db.pool, consumer, appended.txid).await.unwrap());
    assert!(
        !reflected(&db.pool, "projector-notifications", appended.txid)
            .await
            .unwrap(),
        "a group without partitions has applied nothing"
    );
    assert!(
        reflected(&db.pool, consumer, appended.txid + 1_000_000)
            .await
            .unwrap(),
        "a token of no events is met at once"
    );
    db.drop_db().await;
}

/// A read asking for a write its read models cannot reflect within the wait is refused with 503
/// `read_not_caught_up` and `Retry-After`, never answered with stale data; once the projector
/// is back the same read succeeds.
#[tokio::test]
async fn a_read_that_cannot_catch_up_is_refused_not_stale() {
    let mut app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let token = w.client.token.clone();
    let balances = format!("/v1/enterprises/{}/clients/balances", w.client.id);
    app.get_after(&balances, &token, &w.connected_at)
        .await
        .expect(200, None);

    app.stop_projector().await;
    let write = app
        .post(
            &w.allocation_path("allocations"),
            &token,
            w.allocation("BTC", json!("250"), "stale-1", "stale-1"),
        )
        .await;
    let position = write.header("x-event-position").expect("position token");
    write.expect(200, None);
    let read = app.get_after(&balances, &token, &position).await;
    read.expect(503, Some("read_not_caught_up"));
    assert_eq!(read.header("retry-after").as_deref(), Some("1"));

    app.start_projector().await;
    let read = app.get_after(&balances, &token, &position).await;
    assert_eq!(
        read.expect(200, None)["networkBalances"][&w.connection_id]["balances"]["BTC"]["available"],
        "250"
    );
    app.shutdown().await;
}
