//! Folded-state snapshots against the real store: for random histories of deposits and
//! allocations run through the one write path, a process that starts from a stored snapshot —
//! the one the store kept, or one taken at any version — folds the same state, and so takes the
//! same decision, as a full replay of every event.

use std::collections::BTreeMap;
use std::time::Duration;

use events::codec::decode_event;
use events::domain::aggregate::STATE_SCHEMA;
use events::domain::connection::{Allocate, AllocationKind, Connection, ConnectionCreated};
use events::domain::custody::Custody;
use events::domain::event::Timestamp;
use events::domain::money::{AmountFormat, CurrencyCode};
use events::domain::stream::of;
use events::domain::{CommandId, DomainEvent, State, StreamName};
use events::store::{
    execute, load, Command, Decision, EventStore, Executed, Loaded, SNAPSHOT_EVERY,
};
use proptest::prelude::*;
use uuid::Uuid;

use crate::support::*;

const CLIENT_E: Uuid = Uuid::from_u128(0xc1);
const CONNECTIONS: usize = 2;

#[derive(Clone, Debug)]
enum Op {
    Deposit { quantity: i128 },
    Allocate { connection: usize, quantity: i128 },
    Deallocate { connection: usize, quantity: i128 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1..1_000i128).prop_map(|quantity| Op::Deposit { quantity }),
        (0..CONNECTIONS, 1..600i128).prop_map(|(connection, quantity)| Op::Allocate {
            connection,
            quantity
        }),
        (0..CONNECTIONS, 1..600i128).prop_map(|(connection, quantity)| Op::Deallocate {
            connection,
            quantity
        }),
    ]
}

fn btc() -> CurrencyCode {
    CurrencyCode::parse("BTC").unwrap()
}

fn connection_id(n: usize) -> Uuid {
    Uuid::from_u128(0x100 + n as u128)
}

fn created(n: usize) -> DomainEvent {
    ConnectionCreated {
        connection_id: connection_id(n),
        name: format!("c{n}"),
        client_id: Uuid::from_u128(2),
        client_enterprise_id: CLIENT_E,
        partner_id: Uuid::from_u128(3),
        partner_enterprise_id: Uuid::from_u128(4),
        network_account_id: Uuid::from_u128(5),
        amount_format: AmountFormat::BaseUnits,
        connection_key: "k".into(),
        nonce: format!("n{n}"),
        proof: "p".into(),
        at: Timestamp(0),
        signed: None,
    }
    .into()
}

fn command(name: &str, streams: Vec<StreamName>) -> Command {
    let id = CommandId::derive(name, &[]);
    Command {
        id,
        request_hash: [1; 32],
        metadata: metadata(id),
        nonce: None,
        streams,
        recorded_at: now(),
    }
}

/// The decision of one op on loaded states: the events it appends to each stream.
fn decide(loaded: &Loaded, op: &Op, n: usize) -> Result<Vec<(StreamName, DomainEvent)>, String> {
    let custody_stream = of::custody(CLIENT_E);
    let custody: Custody = loaded.aggregate(&custody_stream);
    let at = Timestamp(n as i64);
    match op {
        Op::Deposit { quantity } => custody
            .decide_deposit(
                CLIENT_E,
                Uuid::from_u128(n as u128),
                &format!("d{n}"),
                btc(),
                *quantity,
                at,
            )
            .map(|events| {
                events
                    .into_iter()
                    .map(|e| (custody_stream.clone(), e))
                    .collect()
            })
            .map_err(|e| e.to_string()),
        Op::Allocate {
            connection,
            quantity,
        }
        | Op::Deallocate {
            connection,
            quantity,
        } => {
            let stream = of::connection(connection_id(*connection));
            let current: Connection = loaded.aggregate(&stream);
            let kind = match op {
                Op::Allocate { .. } => AllocationKind::Allocation,
                _ => AllocationKind::Deallocation,
            };
            let command = Allocate {
                allocation_id: Uuid::from_u128(n as u128),
                kind,
                currency: btc(),
                quantity: *quantity,
                client_external_id: format!("x{n}"),
                initiated_by: Uuid::from_u128(9),
                notes: None,
                signed: None,
            };
            let d = current
                .decide_allocation(CLIENT_E, &custody, command, at)
                .map_err(|e| e.to_string())?;
            let mut events: Vec<(StreamName, DomainEvent)> = d
                .connection_events
                .into_iter()
                .map(|e| (stream.clone(), e))
                .collect();
            events.extend(
                d.custody_events
                    .into_iter()
                    .map(|e| (custody_stream.clone(), e)),
            );
            Ok(events)
        }
    }
}

fn streams() -> Vec<StreamName> {
    let mut streams = vec![of::custody(CLIENT_E)];
    streams.extend((0..CONNECTIONS).map(|n| of::connection(connection_id(n))));
    streams
}

/// Runs the history through `execute` on `store`; the connections are made first.
async fn run(store: &EventStore, ops: &[Op]) {
    for n in 0..CONNECTIONS {
        let stream = of::connection(connection_id(n));
        let c = command(&format!("connect {n}"), vec![stream.clone()]);
        let made = execute(store, &c, |_| {
            Ok::<_, String>(Decision {
                events: vec![(stream.clone(), created(n))],
                outcome: vec![],
            })
        })
        .await
        .unwrap();
        assert!(matches!(made, Executed::Committed { .. }));
    }
    for (n, op) in ops.iter().enumerate() {
        let c = command(&format!("op {n}"), streams());
        let done = execute(store, &c, |loaded| {
            decide(loaded, op, n).map(|events| Decision {
                events,
                outcome: vec![],
            })
        })
        .await
        .unwrap();
        assert!(
            matches!(done, Executed::Committed { .. }),
            "a decided op commits: {op:?}"
        );
    }
}

/// Every stream folded from all of its events, as a process without snapshots would (a stream
/// with none yet at version 0, as a load gives it).
async fn replayed(store: &EventStore) -> BTreeMap<StreamName, (u64, State)> {
    let mut out: BTreeMap<StreamName, (u64, State)> = streams()
        .into_iter()
        .map(|s| {
            let initial = State::initial(s.category());
            (s, (0, initial))
        })
        .collect();
    for stored in store.load(&streams()).await.unwrap() {
        let event = decode_event(&stored.event).unwrap();
        let Some((version, state)) = out.get_mut(&stored.stream) else {
            continue;
        };
        *state = std::mem::replace(state, State::Unfolded).evolve(&event);
        *version = stored.version;
    }
    out
}

fn as_map(loaded: &Loaded) -> BTreeMap<StreamName, (u64, State)> {
    loaded
        .streams
        .iter()
        .map(|(s, f)| (s.clone(), (f.version, (*f.state).clone())))
        .collect()
}

async fn stored_snapshots(store: &EventStore) -> BTreeMap<String, i64> {
    sqlx::query_as::<_, (String, i64)>("SELECT category, version FROM snapshots")
        .fetch_all(store.pool())
        .await
        .unwrap()
        .into_iter()
        .collect()
}

/// Checks that a fresh process loads exactly the full replay, and decides `next` the same.
async fn same_as_replay(store: &EventStore, next: &Op, n: usize) -> Result<(), TestCaseError> {
    let fresh = EventStore::new(store.pool().clone());
    let from_snapshots = load(&fresh, &streams()).await.unwrap();
    let full = replayed(store).await;
    prop_assert_eq!(&as_map(&from_snapshots), &full);
    let full_loaded = Loaded {
        streams: full
            .into_iter()
            .map(|(s, (version, state))| {
                let folded = events::store::LoadedStream {
                    version,
                    state: std::sync::Arc::new(state),
                };
                (s, folded)
            })
            .collect(),
    };
    prop_assert_eq!(
        decide(&from_snapshots, next, n),
        decide(&full_loaded, next, n)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, ..ProptestConfig::default() })]

    #[test]
    fn a_decision_from_a_snapshot_equals_one_from_a_full_replay(
        ops in proptest::collection::vec(op(), 1..(3 * SNAPSHOT_EVERY as usize)),
        cut in any::<prop::sample::Index>(),
        next in op(),
    ) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let db = TestDb::new().await;
            let store = EventStore::new(db.pool.clone());
            run(&store, &ops).await;
            let n = ops.len();

            // 1. The snapshots the store took on its own, once they are written.
            let custody_events = replayed(&store).await[&of::custody(CLIENT_E)].0;
            if custody_events >= SNAPSHOT_EVERY {
                let taken = eventually(Duration::from_secs(10), || async {
                    stored_snapshots(&store).await.contains_key("custody")
                })
                .await;
                prop_assert!(taken, "a stream {custody_events} events long gets a snapshot");
            }
            same_as_replay(&store, &next, n).await?;

            // 2. A snapshot of each stream at an arbitrary version, the rest replayed after it.
            sqlx::query("DELETE FROM snapshots").execute(&db.pool).await.unwrap();
            let mut prefixes: BTreeMap<StreamName, (u64, State)> = BTreeMap::new();
            for stored in store.load(&streams()).await.unwrap() {
                let total = store.load(std::slice::from_ref(&stored.stream)).await.unwrap().len();
                let at = cut.index(total) as u64 + 1;
                let entry = prefixes
                    .entry(stored.stream.clone())
                    .or_insert_with(|| (0, State::initial(stored.stream.category())));
                if stored.version <= at {
                    let event = decode_event(&stored.event).unwrap();
                    entry.1 = std::mem::replace(&mut entry.1, State::Unfolded).evolve(&event);
                    entry.0 = stored.version;
                }
            }
            for (stream, (version, state)) in &prefixes {
                store.store_snapshot(stream, *version, STATE_SCHEMA, &state.encode()).await.unwrap();
            }
            same_as_replay(&store, &next, n).await?;

            // 3. A snapshot that does not decode is not trusted: the stream is replayed.
            sqlx::query("UPDATE snapshots SET state = '\\x00ff'::bytea")
                .execute(&db.pool)
                .await
                .unwrap();
            same_as_replay(&store, &next, n).await?;
            db.drop_db().await;
            Ok(())
        })?;
    }
}

/// What the property above cannot see, since a full replay gives the same states: that a
/// process's own appends land in its cache at their new versions, and that a process without
/// the stream cached starts from the stored snapshot instead of replaying (a snapshot that
/// differs from the replay shows which one it read), unless the snapshot is of another schema.
#[tokio::test]
async fn own_appends_are_written_through_and_a_load_starts_from_the_stored_snapshot() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let ops = [
        Op::Deposit { quantity: 500 },
        Op::Allocate {
            connection: 0,
            quantity: 200,
        },
        Op::Deposit { quantity: 7 },
    ];
    run(&store, &ops).await;
    let full = replayed(&store).await;
    for (stream, (version, state)) in &full {
        let cached = store.cache().get(stream).expect("written through");
        assert_eq!(cached.folded.version, *version, "{stream}");
        assert_eq!(*cached.folded.state, *state, "{stream}");
    }

    let custody = of::custody(CLIENT_E);
    let (head, replay) = full[&custody].clone();
    assert_eq!(head, 3, "two deposits and the allocation's custody event");
    let marked = State::Custody(Custody::default());
    assert_ne!(marked, replay);
    store
        .store_snapshot(&custody, head, STATE_SCHEMA, &marked.encode())
        .await
        .unwrap();
    let fresh = EventStore::new(db.pool.clone());
    let loaded = load(&fresh, std::slice::from_ref(&custody)).await.unwrap();
    assert_eq!(loaded.version(&custody), head);
    assert_eq!(
        *loaded.streams[&custody].state, marked,
        "read from the snapshot"
    );

    sqlx::query("UPDATE snapshots SET schema = schema + 1")
        .execute(&db.pool)
        .await
        .unwrap();
    let other = EventStore::new(db.pool.clone());
    let loaded = load(&other, std::slice::from_ref(&custody)).await.unwrap();
    assert_eq!(
        *loaded.streams[&custody].state, replay,
        "another schema's snapshot is ignored"
    );
    db.drop_db().await;
}
