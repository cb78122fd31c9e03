//! Property tests of the pure core: codec round trips, the chain's sensitivity to every stored
//! byte, deterministic replay and idempotent decisions.

use events::codec::{
    chain_hash, decode_event, encode_event, EncodedEvent, SequencedEvent, StoredEvent, GENESIS_HASH,
};
use events::domain::enterprise::{
    Enterprise, EnterpriseCommand, EnterpriseCreated, EnterpriseLicenseSet,
};
use events::domain::event::Timestamp;
use events::domain::{DomainEvent, StreamName};
use proptest::prelude::*;
use uuid::Uuid;

fn any_event() -> impl Strategy<Value = DomainEvent> {
    prop_oneof![
        (any::<u128>(), ".{0,40}", any::<bool>(), any::<i64>()).prop_map(
            |(id, name, oes_license, at)| {
                DomainEvent::from(EnterpriseCreated {
                    enterprise_id: Uuid::from_u128(id),
                    name,
                    oes_license,
                    at: Timestamp(at),
                })
            }
        ),
        (any::<u128>(), any::<bool>(), any::<i64>()).prop_map(|(id, oes_license, at)| {
            DomainEvent::from(EnterpriseLicenseSet {
                enterprise_id: Uuid::from_u128(id),
                oes_license,
                at: Timestamp(at),
            })
        }),
    ]
}

fn stored(payload: Vec<u8>, metadata: Vec<u8>) -> StoredEvent {
    StoredEvent {
        event_id: Uuid::from_u128(1),
        stream: StreamName::parse("p", "q").unwrap(),
        version: 1,
        event: EncodedEvent {
            type_id: 1,
            schema_version: 1,
            payload,
        },
        metadata,
        recorded_at: Timestamp(0),
    }
}

proptest! {
    #[test]
    fn events_round_trip(event in any_event()) {
        prop_assert_eq!(decode_event(&encode_event(&event)).unwrap(), event);
    }

    #[test]
    fn wire_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..256), position in 1u64.., hash in any::<[u8; 32]>()) {
        let event = SequencedEvent { position, hash, stored: stored(payload, vec![1, 2]) };
        prop_assert_eq!(SequencedEvent::from_wire(&event.to_wire()).unwrap(), event);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..128), type_id in 0u32..4, version in 0u16..3) {
        let _ = decode_event(&EncodedEvent { type_id, schema_version: version, payload: bytes.clone() });
        let _ = SequencedEvent::from_wire(&bytes);
        let _ = events::codec::Metadata::decode(&bytes);
    }

    #[test]
    fn any_changed_byte_changes_the_hash(payload in proptest::collection::vec(any::<u8>(), 1..128), index in any::<prop::sample::Index>(), flip in 1u8..) {
        let original = stored(payload.clone(), vec![3]);
        let mut changed = payload;
        let i = index.index(changed.len());
        changed[i] ^= flip;
        let tampered = stored(changed, vec![3]);
        prop_assert_ne!(chain_hash(&GENESIS_HASH, 1, &original), chain_hash(&GENESIS_HASH, 1, &tampered));
        prop_assert_ne!(chain_hash(&GENESIS_HASH, 1, &original), chain_hash(&GENESIS_HASH, 2, &original));
    }

    #[test]
    fn replay_is_deterministic_and_retries_add_nothing(licences in proptest::collection::vec(any::<bool>(), 0..20)) {
        let id = Uuid::from_u128(9);
        let mut history: Vec<DomainEvent> = Vec::new();
        let mut state = Enterprise::Absent;
        let create = EnterpriseCommand::Create { enterprise_id: id, name: "E".into(), oes_license: true };
        let commands = std::iter::once(create.clone()).chain(licences.into_iter().map(|oes_license| EnterpriseCommand::SetLicense { oes_license }));
        for (t, command) in commands.enumerate() {
            let events = state.decide(command.clone(), Timestamp(t as i64)).unwrap();
            state = events.iter().fold(state, Enterprise::evolve);
            history.extend(events);
            // Deciding the same command again on the new state adds nothing (or is refused).
            match state.decide(command, Timestamp(t as i64)) {
                Ok(again) => prop_assert!(again.is_empty()),
                Err(e) => prop_assert_eq!(e, events::domain::enterprise::EnterpriseRejection::AlreadyExists),
            }
        }
        let replayed = history.iter().fold(Enterprise::Absent, Enterprise::evolve);
        prop_assert_eq!(replayed, state);
    }
}
