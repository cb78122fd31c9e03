//! Command idempotency and nonces through the one write path (`execute`).

use events::domain::enterprise::{Enterprise, EnterpriseCommand, EnterpriseRejection};
use events::domain::{CommandId, StreamName};
use events::store::{
    execute, Command, Decision, EventStore, ExecuteError, Executed, Loaded, NonceClaim,
};
use uuid::Uuid;

use crate::support::*;

fn create_enterprise(id: Uuid, request_hash: [u8; 32]) -> (Command, StreamName) {
    let s = StreamName::for_uuid("enterprise", id).unwrap();
    let command_id = CommandId::derive("create-enterprise", &[id.as_bytes()]);
    let command = Command {
        id: command_id,
        request_hash,
        metadata: metadata(command_id),
        nonce: None,
        streams: vec![s.clone()],
        recorded_at: now(),
    };
    (command, s)
}

fn decide_create(
    s: &StreamName,
    id: Uuid,
    name: &str,
) -> impl Fn(&Loaded) -> Result<Decision, EnterpriseRejection> {
    let (s, name) = (s.clone(), name.to_owned());
    move |loaded: &Loaded| {
        let state: Enterprise = loaded.aggregate(&s);
        let events = state.decide(
            EnterpriseCommand::Create {
                enterprise_id: id,
                name: name.clone(),
                oes_license: true,
            },
            now(),
        )?;
        Ok(Decision {
            events: events.into_iter().map(|e| (s.clone(), e)).collect(),
            outcome: id.as_bytes().to_vec(),
        })
    }
}

#[tokio::test]
async fn the_same_command_twice_appends_once_and_answers_the_same() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let id = Uuid::new_v4();
    let (command, s) = create_enterprise(id, [1; 32]);

    let first = execute(&store, &command, decide_create(&s, id, "Acme"))
        .await
        .unwrap();
    assert!(
        matches!(&first, Executed::Committed { outcome, .. } if outcome == id.as_bytes()),
        "{first:?}"
    );
    let second = execute(&store, &command, decide_create(&s, id, "Acme"))
        .await
        .unwrap();
    let Executed::Committed {
        txid: first_txid, ..
    } = first
    else {
        panic!("first commits")
    };
    assert_eq!(
        second,
        Executed::Replayed {
            outcome: id.as_bytes().to_vec(),
            txid: first_txid
        },
        "a retry answers with the first outcome and the first write's position"
    );
    assert_eq!(
        store.load(std::slice::from_ref(&s)).await.unwrap().len(),
        1,
        "one set of events"
    );

    // Same command id, different request: a conflict, nothing written.
    let (mut other, _) = create_enterprise(id, [2; 32]);
    other.request_hash = [2; 32];
    assert!(matches!(
        execute(&store, &other, decide_create(&s, id, "Other")).await,
        Err(ExecuteError::RequestMismatch)
    ));
    assert_eq!(store.load(&[s]).await.unwrap().len(), 1);
    db.drop_db().await;
}

#[tokio::test]
async fn twenty_concurrent_identical_commands_create_one_set_of_events() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let id = Uuid::new_v4();
    let (command, s) = create_enterprise(id, [7; 32]);
    let runs = (0..20).map(|_| {
        let (store, command, s) = (store.clone(), command.clone(), s.clone());
        tokio::spawn(async move { execute(&store, &command, decide_create(&s, id, "Acme")).await })
    });
    let results: Vec<_> = futures::future::join_all(runs)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    let committed = results
        .iter()
        .filter(|r| matches!(r, Executed::Committed { .. }))
        .count();
    assert_eq!(committed, 1, "exactly one execution commits: {results:?}");
    for r in &results {
        match r {
            Executed::Committed { outcome, .. } | Executed::Replayed { outcome, .. } => {
                assert_eq!(outcome, id.as_bytes())
            }
            Executed::Rejected(e) => panic!("no execution may be rejected: {e:?}"),
        }
    }
    assert_eq!(store.load(&[s]).await.unwrap().len(), 1);
    db.drop_db().await;
}

#[tokio::test]
async fn a_rejected_command_writes_nothing() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let id = Uuid::new_v4();
    let (command, s) = create_enterprise(id, [3; 32]);
    let result = execute(&store, &command, decide_create(&s, id, "  "))
        .await
        .unwrap();
    assert_eq!(
        result,
        Executed::Rejected(EnterpriseRejection::Input(
            events::domain::limits::LimitError::Empty { field: "name" }
        ))
    );
    assert!(store.load(&[s]).await.unwrap().is_empty());
    assert_eq!(store.command_outcome(command.id).await.unwrap(), None);
    db.drop_db().await;
}

#[tokio::test]
async fn nonces_replay_with_the_same_payload_and_refuse_another() {
    let db = TestDb::new().await;
    let store = EventStore::new(db.pool.clone());
    let nonce = |hash: u8| {
        Some(NonceClaim {
            scope: "enterprise-1".into(),
            nonce: "n-1".into(),
            payload_hash: [hash; 32],
        })
    };

    let id = Uuid::new_v4();
    let (mut command, s) = create_enterprise(id, [4; 32]);
    command.nonce = nonce(9);
    assert!(matches!(
        execute(&store, &command, decide_create(&s, id, "Acme"))
            .await
            .unwrap(),
        Executed::Committed { .. }
    ));

    // Another command reusing the nonce with the same payload is a retry of the first.
    let other_id = Uuid::new_v4();
    let (mut retry, other_stream) = create_enterprise(other_id, [5; 32]);
    retry.nonce = nonce(9);
    let replayed = execute(
        &store,
        &retry,
        decide_create(&other_stream, other_id, "Acme"),
    )
    .await
    .unwrap();
    assert!(
        matches!(&replayed, Executed::Replayed { outcome, txid: Some(_) } if outcome == id.as_bytes()),
        "{replayed:?}"
    );
    assert!(store
        .load(std::slice::from_ref(&other_stream))
        .await
        .unwrap()
        .is_empty());

    // With a different payload it is refused.
    retry.nonce = nonce(8);
    assert!(matches!(
        execute(
            &store,
            &retry,
            decide_create(&other_stream, other_id, "Acme")
        )
        .await,
        Err(ExecuteError::NonceReused)
    ));
    assert!(store.load(&[other_stream]).await.unwrap().is_empty());
    db.drop_db().await;
}
