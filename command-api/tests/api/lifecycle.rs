//! The command-api binary as a real process: starts against a fresh database, becomes ready
//! (Postgres, migrations, NATS, relay), takes the sequencer lead, stops cleanly on SIGTERM, and
//! hands the lead to a standby process without loss when killed with SIGKILL.

use std::time::Duration;

use events::testing::*;

#[tokio::test]
async fn starts_serves_health_and_stops_gracefully() {
    let db = TestDb::new().await;
    let bus = unique_bus();
    let api = spawn_ready(env!("CARGO_BIN_EXE_command-api"), &db, &bus).await;
    let leads = eventually(Duration::from_secs(20), || {
        let pool = db.pool.clone();
        async move {
            let leader: String = sqlx::query_scalar("SELECT leader FROM sequencer_state")
                .fetch_one(&pool)
                .await
                .unwrap();
            leader.starts_with("command-api@")
        }
    })
    .await;
    assert!(leads, "the process takes the sequencer lead");
    // The gauge is set a moment after the leader row: wait for it rather than race it (on a
    // loaded two-core machine the moment can be long).
    let visible = eventually(Duration::from_secs(30), || {
        let addr = api.addr.clone();
        async move { matches!(http_get(&addr, "/metrics").await, Ok((200, body)) if body.contains("settle_sequencer_leader 1")) }
    })
    .await;
    let sequencer_lines = match http_get(&api.addr, "/metrics").await {
        Ok((status, body)) => format!(
            "{status}: {}",
            body.lines()
                .filter(|l| l.starts_with("settle_sequencer") || l.starts_with("settle_relay"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
        Err(e) => e.to_string(),
    };
    assert!(
        visible,
        "leadership is visible in /metrics: {sequencer_lines}"
    );

    let status = api.terminate().await;
    assert!(status.success(), "clean exit on SIGTERM: {status}");
    let locks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND database = (SELECT oid FROM pg_database WHERE datname = current_database())")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(locks, 0, "leadership released on shutdown");
    jetstream_at(&nats_url())
        .await
        .delete_stream(&bus.stream)
        .await
        .ok();
    db.drop_db().await;
}

/// Two real command-api processes take part in sequencer leadership; the leader is killed with
/// SIGKILL while writers append; the standby takes over, and the log and JetStream hold every
/// event once, densely, with an unbroken chain.
#[tokio::test]
async fn sigkill_of_the_leading_process_loses_nothing() {
    use events::codec::{Actor, EncodedEvent, Metadata};
    use events::domain::event::Timestamp;
    use events::domain::{CommandId, StreamName};
    use events::store::{AppendRequest, EventStore, NewEvent};

    let db = TestDb::new().await;
    let bus = unique_bus();
    let bin = env!("CARGO_BIN_EXE_command-api");
    let first = spawn_ready(bin, &db, &bus).await;
    let leader_is = |pid: u32| {
        let pool = db.pool.clone();
        async move {
            let leader: String = sqlx::query_scalar("SELECT leader FROM sequencer_state")
                .fetch_one(&pool)
                .await
                .unwrap();
            leader.ends_with(&format!(":{pid}"))
        }
    };
    assert!(
        eventually(Duration::from_secs(20), || leader_is(first.pid())).await,
        "the first process leads"
    );
    let second = spawn_ready(bin, &db, &bus).await;

    let store = EventStore::new(db.pool.clone());
    let append = |n: u32| {
        let store = store.clone();
        async move {
            let stream = StreamName::parse("crash", &format!("s{n}")).unwrap();
            let command = CommandId::derive("crash-test", &[&n.to_be_bytes()]);
            let events = (0..5).map(|_| NewEvent {
                stream: stream.clone(),
                event: EncodedEvent {
                    type_id: 1,
                    schema_version: 1,
                    payload: vec![7; 40],
                },
            });
            let metadata = Metadata {
                command_id: command,
                causation_id: None,
                correlation_id: command.as_uuid(),
                actor: Actor::System,
                request_id: None,
                key_id: None,
            };
            let request = AppendRequest {
                command_id: command,
                request_hash: [1; 32],
                expected: vec![(stream.clone(), 0)],
                events: events.collect(),
                metadata,
                outcome: vec![],
                nonce: None,
                recorded_at: Timestamp(n.into()),
            };
            store.append(&request).await.unwrap();
        }
    };
    for n in 0..200 {
        append(n).await;
    }
    first.kill().await;
    for n in 200..400 {
        append(n).await;
    }
    let second_pid = second.pid();
    assert!(
        eventually(Duration::from_secs(30), || leader_is(second_pid)).await,
        "the standby takes the lead"
    );
    let js = jetstream_at(&nats_url()).await;
    let complete = eventually(Duration::from_secs(30), || {
        let (js, bus) = (js.clone(), bus.clone());
        async move {
            events::bus::stream_last_sequence(&js, &bus)
                .await
                .unwrap_or(0)
                == 2_000
        }
    })
    .await;
    assert!(complete, "JetStream holds all 2,000 events");
    let report = events::store::verify_chain(&db.pool).await.unwrap();
    assert_eq!(
        (report.checked, report.fault),
        (2_000, None),
        "a dense, unbroken chain"
    );
    let stream = js.get_stream(&bus.stream).await.unwrap();
    for (position, expected) in store
        .read_log(0, 2_000, u32::MAX)
        .await
        .unwrap()
        .iter()
        .enumerate()
    {
        let message = stream.get_raw_message(position as u64 + 1).await.unwrap();
        assert_eq!(
            &events::codec::SequencedEvent::from_wire(&message.payload).unwrap(),
            expected
        );
    }
    assert!(second.terminate().await.success());
    js.delete_stream(&bus.stream).await.ok();
    db.drop_db().await;
}
