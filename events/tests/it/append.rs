//! Optimistic concurrency and all-or-nothing multi-stream appends.

use events::codec::EncodedEvent;
use events::store::{AppendError, EventStore, NewEvent};

use crate::support::*;

#[tokio::test]
async fn two_writers_on_one_stream_exactly_one_wins() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let s = stream("account", "a1");
    store
        .append(&append_request(&s, 0, 2, new_command()))
        .await
        .expect("first append");

    // Both load version 2 and race to append.
    let (first, second) = (
        append_request(&s, 2, 3, new_command()),
        append_request(&s, 2, 1, new_command()),
    );
    let (a, b) = tokio::join!(store.append(&first), store.append(&second));
    let wins = [a.is_ok(), b.is_ok()].iter().filter(|w| **w).count();
    assert_eq!(wins, 1, "exactly one writer wins: {a:?} {b:?}");
    let loser = if a.is_ok() { b } else { a };
    assert!(
        matches!(loser, Err(AppendError::Conflict)),
        "the other gets a conflict: {loser:?}"
    );
    let loaded = store.load(std::slice::from_ref(&s)).await.unwrap();
    let versions: Vec<u64> = loaded.iter().map(|e| e.version).collect();
    assert!(
        versions == vec![1, 2, 3, 4, 5] || versions == vec![1, 2, 3],
        "versions {versions:?}"
    );

    // A stale expected version and a "new" stream that exists are conflicts too.
    assert!(matches!(
        store.append(&append_request(&s, 1, 1, new_command())).await,
        Err(AppendError::Conflict)
    ));
    assert!(matches!(
        store.append(&append_request(&s, 0, 1, new_command())).await,
        Err(AppendError::Conflict)
    ));
    // Expecting a version of a stream that does not exist is a conflict, not a creation.
    let ghost = stream("account", "ghost");
    assert!(matches!(
        store
            .append(&append_request(&ghost, 4, 1, new_command()))
            .await,
        Err(AppendError::Conflict)
    ));
    assert!(store.load(&[ghost]).await.unwrap().is_empty());
    db.drop_db().await;
}

#[tokio::test]
async fn multi_stream_append_is_all_or_nothing() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let (a, b) = (stream("settlement", "s1"), stream("connection", "c1"));
    store
        .append(&append_request(&b, 0, 1, new_command()))
        .await
        .unwrap();

    let event = |s: &events::domain::StreamName| NewEvent {
        stream: s.clone(),
        event: EncodedEvent {
            type_id: 1,
            schema_version: 1,
            payload: vec![1, 2, 3],
        },
    };
    // b is at 1, the command expects 0: nothing may be written to a either.
    let mut bad = append_request(&a, 0, 2, new_command());
    bad.expected.push((b.clone(), 0));
    bad.events.push(event(&b));
    assert!(matches!(
        store.append(&bad).await,
        Err(AppendError::Conflict)
    ));
    assert!(
        store
            .load(std::slice::from_ref(&a))
            .await
            .unwrap()
            .is_empty(),
        "no event of a refused append remains"
    );
    assert_eq!(
        store.command_outcome(bad.command_id).await.unwrap(),
        None,
        "no outcome recorded"
    );

    let mut good = append_request(&a, 0, 2, new_command());
    good.expected.push((b.clone(), 1));
    good.events.push(event(&b));
    let appended = store
        .append(&good)
        .await
        .expect("consistent multi-stream append");
    assert_eq!(appended.event_ids.len(), 3);
    let loaded = store.load(&[a.clone(), b.clone()]).await.unwrap();
    let by_stream: Vec<(String, u64)> = loaded
        .iter()
        .map(|e| (e.stream.to_string(), e.version))
        .collect();
    assert_eq!(
        by_stream,
        vec![
            ("connection.c1".into(), 1),
            ("connection.c1".into(), 2),
            ("settlement.s1".into(), 1),
            ("settlement.s1".into(), 2)
        ]
    );

    // An event for a stream the command did not declare is refused before touching the database.
    let mut undeclared = append_request(&a, 2, 1, new_command());
    undeclared
        .events
        .push(event(&stream("connection", "other")));
    assert!(matches!(
        store.append(&undeclared).await,
        Err(AppendError::UndeclaredStream(_))
    ));
    db.drop_db().await;
}

#[tokio::test]
async fn stored_events_cannot_be_changed_or_removed() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    store
        .append(&append_request(&stream("a", "1"), 0, 1, new_command()))
        .await
        .unwrap();
    for statement in [
        "UPDATE events SET payload = '\\x00'",
        "DELETE FROM events",
        "TRUNCATE events CASCADE",
    ] {
        let refused = sqlx::query(statement).execute(&db.pool).await;
        assert!(refused.is_err(), "{statement} must be refused");
    }
    assert_eq!(store.load(&[stream("a", "1")]).await.unwrap().len(), 1);
    db.drop_db().await;
}

#[tokio::test]
async fn refuses_to_run_where_commits_are_not_durable() {
    let db = TestDb::new().await;
    events::store::db::check_durability(&db.pool)
        .await
        .expect("the local stack is durable");
    sqlx::query(&format!(
        "ALTER DATABASE {} SET synchronous_commit = off",
        db.name
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let relaxed = events::store::db::connect(&db.url, 1).await.unwrap();
    let refused = events::store::db::check_durability(&relaxed).await;
    assert!(refused.is_err_and(|e| e.to_string().contains("synchronous_commit=off")));
    relaxed.close().await;
    db.drop_db().await;
}

#[tokio::test]
async fn an_event_the_bus_could_not_carry_is_refused_before_the_append() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let s = stream("account", "big");
    let mut request = append_request(&s, 0, 2, new_command());
    request.events[1].event.payload = vec![7; events::domain::limits::MAX_EVENT_BYTES + 1];
    let refused = store.append(&request).await;
    assert!(
        matches!(&refused, Err(AppendError::EventTooLarge { bytes, .. }) if *bytes == events::domain::limits::MAX_EVENT_BYTES + 1),
        "{refused:?}"
    );
    assert!(
        store
            .load(std::slice::from_ref(&s))
            .await
            .unwrap()
            .is_empty(),
        "nothing of the command was written"
    );
    // At the limit, it is written.
    let mut request = append_request(&s, 0, 1, new_command());
    request.events[0].event.payload = vec![7; events::domain::limits::MAX_EVENT_BYTES];
    store.append(&request).await.expect("an event at the limit");
    db.drop_db().await;
}

/// A stream a command only read (declared with no events) is checked, and share-locked until the
/// command commits, but its head row is not written (ADR 0013): commands that only read the same
/// stream do not wait for each other; a writer of it waits for them; and a read made stale by a
/// writer that committed first is a conflict.
#[tokio::test]
async fn a_stream_only_read_is_checked_and_locked_not_written() {
    use std::time::Duration;

    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let read = stream("user", "u1");
    store
        .append(&append_request(&read, 0, 1, new_command()))
        .await
        .expect("the read stream exists at version 1");
    // An append to `target` that read `read` at `seen`.
    let reading = |target: &str, seen: u64| {
        let mut request = append_request(&stream("partner", target), 0, 1, new_command());
        request.expected.push((read.clone(), seen));
        request
    };
    let head_row = || async {
        sqlx::query_as::<_, (String, i64)>(
            "SELECT xmin::text, version FROM streams WHERE category = 'user' AND id = 'u1'",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };

    // Checked: a version it does not have is a conflict, and nothing is written.
    for stale in [2, 7] {
        assert!(matches!(
            store.append(&reading("p0", stale)).await,
            Err(AppendError::Conflict)
        ));
    }
    // Not written: the head row is the same row version after a command that read it.
    let before = head_row().await;
    store.append(&reading("p1", 1)).await.expect("read at 1");
    assert_eq!(
        head_row().await,
        before,
        "a read stream's head is not rewritten"
    );

    // Two commands that read it do not wait for each other.
    let mut first = db.pool.begin().await.unwrap();
    events::store::append_on(&mut first, &reading("p2", 1))
        .await
        .expect("first reader, uncommitted");
    tokio::time::timeout(Duration::from_secs(5), store.append(&reading("p3", 1)))
        .await
        .expect("a second reader does not wait for the first")
        .expect("second reader");

    // A writer of it waits until the reader commits, then goes ahead (the reader came first).
    let writer = {
        let store = store.clone();
        let read = read.clone();
        tokio::spawn(async move {
            store
                .append(&append_request(&read, 1, 1, new_command()))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !writer.is_finished(),
        "the writer waits for the reader's commit"
    );
    first.commit().await.unwrap();
    writer
        .await
        .unwrap()
        .expect("the writer appends after the reader");

    // A reader that meets an uncommitted writer waits for it, then finds its read stale.
    let mut writing = db.pool.begin().await.unwrap();
    events::store::append_on(&mut writing, &append_request(&read, 2, 1, new_command()))
        .await
        .expect("writer, uncommitted");
    let reader = {
        let store = store.clone();
        let request = reading("p4", 2);
        tokio::spawn(async move { store.append(&request).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !reader.is_finished(),
        "the reader waits for the writer's commit"
    );
    writing.commit().await.unwrap();
    assert!(
        matches!(reader.await.unwrap(), Err(AppendError::Conflict)),
        "the read is stale once the writer committed"
    );
    assert_eq!(head_row().await.1, 3);
    db.drop_db().await;
}

/// Group commit: concurrent appends on disjoint streams share one transaction, each keeps its
/// own checks, and a member that conflicts or repeats a command is answered alone — the others
/// of its group still commit. Two appends on one stream are never grouped.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appends_are_grouped_and_a_bad_member_refuses_only_itself() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let contested = stream("account", "contested");
    store
        .append(&append_request(&contested, 0, 1, new_command()))
        .await
        .expect("first append");
    let repeated = new_command();
    store
        .append(&append_request(&stream("account", "once"), 0, 1, repeated))
        .await
        .expect("the command's first append");

    let mut requests: Vec<_> = (0..48)
        .map(|n| append_request(&stream("account", &format!("g{n}")), 0, 2, new_command()))
        .collect();
    let stale = requests.len();
    requests.push(append_request(&contested, 0, 1, new_command()));
    let twin = requests.len();
    requests.push(append_request(&stream("account", "other"), 0, 1, repeated));
    let same_stream = requests.len();
    requests.push(append_request(&contested, 1, 1, new_command()));
    requests.push(append_request(&contested, 1, 1, new_command()));

    let handles: Vec<_> = requests
        .into_iter()
        .map(|r| {
            let store = store.clone();
            tokio::spawn(async move { store.append(&r).await })
        })
        .collect();
    let mut results = Vec::new();
    for h in handles {
        results.push(h.await.expect("append task"));
    }
    let txids: Vec<i64> = results[..stale]
        .iter()
        .map(|r| r.as_ref().expect("a disjoint append commits").txid)
        .collect();
    let distinct: std::collections::BTreeSet<i64> = txids.iter().copied().collect();
    assert!(
        distinct.len() < txids.len(),
        "48 concurrent appends on 4 appenders share transactions: {} distinct",
        distinct.len()
    );
    assert!(
        matches!(results[stale], Err(AppendError::Conflict)),
        "{:?}",
        results[stale]
    );
    assert!(
        matches!(results[twin], Err(AppendError::DuplicateCommand)),
        "{:?}",
        results[twin]
    );
    let contested_wins = results[same_stream..].iter().filter(|r| r.is_ok()).count();
    assert_eq!(contested_wins, 1, "{:?}", &results[same_stream..]);
    for n in 0..48 {
        let events = store
            .load(&[stream("account", &format!("g{n}"))])
            .await
            .unwrap();
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }
    let outcomes: i64 = sqlx::query_scalar("SELECT count(*) FROM command_outcomes")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        outcomes,
        2 + 48 + 1,
        "every committed command has its outcome, once"
    );
    db.drop_db().await;
}
