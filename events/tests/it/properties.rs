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

mod custody_model {
    use std::collections::BTreeMap;

    use events::domain::connection::{Allocate, AllocationKind, Connection, ConnectionCreated};
    use events::domain::custody::Custody;
    use events::domain::event::Timestamp;
    use events::domain::money::CurrencyCode;
    use proptest::prelude::*;
    use uuid::Uuid;

    const CLIENT_E: Uuid = Uuid::from_u128(1);

    #[derive(Debug, Clone)]
    enum Op {
        Deposit {
            currency: usize,
            quantity: i128,
        },
        Allocate {
            connection: usize,
            currency: usize,
            quantity: i128,
        },
        Deallocate {
            connection: usize,
            currency: usize,
            quantity: i128,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0..2usize, 1..1_000i128)
                .prop_map(|(currency, quantity)| Op::Deposit { currency, quantity }),
            (0..3usize, 0..2usize, 1..1_000i128).prop_map(|(connection, currency, quantity)| {
                Op::Allocate {
                    connection,
                    currency,
                    quantity,
                }
            }),
            (0..3usize, 0..2usize, 1..1_000i128).prop_map(|(connection, currency, quantity)| {
                Op::Deallocate {
                    connection,
                    currency,
                    quantity,
                }
            }),
        ]
    }

    fn connection(n: usize) -> Connection {
        let id = Uuid::from_u128(100 + n as u128);
        Connection::Absent.evolve(
            &ConnectionCreated {
                connection_id: id,
                name: "c".into(),
                client_id: Uuid::from_u128(2),
                client_enterprise_id: CLIENT_E,
                partner_id: Uuid::from_u128(3),
                partner_enterprise_id: Uuid::from_u128(4),
                network_account_id: Uuid::from_u128(5),
                amount_format: events::domain::money::AmountFormat::BaseUnits,
                connection_key: "k".into(),
                nonce: "n".into(),
                proof: "p".into(),
                at: Timestamp(0),
                signed: None,
            }
            .into(),
        )
    }

    proptest! {
        /// Deposits, allocations and deallocations against a plain model of balances: every
        /// balance equals the model's, nothing is negative, and each currency is conserved.
        #[test]
        fn balances_follow_the_model_and_are_conserved(ops in proptest::collection::vec(op(), 1..80)) {
            let currencies = [CurrencyCode::parse("BTC").unwrap(), CurrencyCode::parse("USD").unwrap()];
            let mut custody = Custody::default();
            let mut connections: Vec<Connection> = (0..3).map(connection).collect();
            let mut model_custody: BTreeMap<usize, i128> = BTreeMap::new();
            let mut model_conn: BTreeMap<(usize, usize), i128> = BTreeMap::new();
            let mut deposited: BTreeMap<usize, i128> = BTreeMap::new();
            for (i, op) in ops.into_iter().enumerate() {
                let at = Timestamp(i as i64);
                match op {
                    Op::Deposit { currency, quantity } => {
                        let events = custody
                            .decide_deposit(CLIENT_E, Uuid::from_u128(i as u128), &format!("d{i}"), currencies[currency].clone(), quantity, at)
                            .unwrap();
                        custody = events.iter().fold(custody, Custody::evolve);
                        *model_custody.entry(currency).or_default() += quantity;
                        *deposited.entry(currency).or_default() += quantity;
                    }
                    Op::Allocate { connection, currency, quantity } | Op::Deallocate { connection, currency, quantity } => {
                        let kind = if matches!(op, Op::Allocate { .. }) { AllocationKind::Allocation } else { AllocationKind::Deallocation };
                        let command = Allocate {
                            allocation_id: Uuid::from_u128(i as u128),
                            kind,
                            currency: currencies[currency].clone(),
                            quantity,
                            client_external_id: format!("x{i}"),
                            initiated_by: Uuid::from_u128(9),
                            notes: None,
                            signed: None,
                        };
                        let d = connections[connection].decide_allocation(CLIENT_E, &custody, command, at).unwrap();
                        let c = model_custody.entry(currency).or_default();
                        let n = model_conn.entry((connection, currency)).or_default();
                        let covered = match kind { AllocationKind::Allocation => *c >= quantity, AllocationKind::Deallocation => *n >= quantity };
                        prop_assert_eq!(d.record.released.is_none(), covered);
                        if covered {
                            let sign = if kind == AllocationKind::Allocation { 1 } else { -1 };
                            *c -= sign * quantity;
                            *n += sign * quantity;
                        }
                        connections[connection] = d.connection_events.iter().fold(connections[connection].clone(), Connection::evolve);
                        custody = d.custody_events.iter().fold(custody, Custody::evolve);
                    }
                }
            }
            for (ci, currency) in currencies.iter().enumerate() {
                let custody_units = custody.balance(currency).available();
                prop_assert_eq!(custody_units, model_custody.get(&ci).copied().unwrap_or(0));
                let mut total = custody_units;
                for (n, conn) in connections.iter().enumerate() {
                    let b = conn.balance(currency);
                    prop_assert!(b.available() >= 0 && b.held() >= 0);
                    prop_assert_eq!(b.available(), model_conn.get(&(n, ci)).copied().unwrap_or(0));
                    total += b.total();
                }
                prop_assert_eq!(total, deposited.get(&ci).copied().unwrap_or(0), "currency {} is conserved", currency);
            }
        }
    }
}

mod settlement_model {
    use std::collections::BTreeMap;

    use events::domain::connection::{
        AllocationCleared, AllocationKind, AllocationRecord, Connection, ConnectionCreated,
    };
    use events::domain::custody::{Custody, DepositCredited};
    use events::domain::dispute::{RaiseDispute, Signed};
    use events::domain::event::Timestamp;
    use events::domain::money::{AmountFormat, CurrencyCode};
    use events::domain::partner::PartnerRecord;
    use events::domain::settlement::{
        Instruction, LifecycleRejection, Settlement, SettlementApi, SettlementStaged, StageContext,
        Status, Transfer,
    };
    use events::domain::DomainEvent;
    use proptest::prelude::*;
    use uuid::Uuid;

    const PARTNER: Uuid = Uuid::from_u128(0xa);
    const PARTNER_E: Uuid = Uuid::from_u128(0xb);
    const CLIENT_E: Uuid = Uuid::from_u128(91);
    const NOW: Timestamp = Timestamp(1_000);
    /// The settlements' dispute window.
    const WINDOW_MICROS: i64 = 10;

    fn btc() -> CurrencyCode {
        CurrencyCode::parse("BTC").unwrap()
    }

    fn connection(n: u128, allocated: i128) -> Connection {
        let id = Uuid::from_u128(n);
        let created = ConnectionCreated {
            connection_id: id,
            name: "c".into(),
            client_id: Uuid::from_u128(90),
            client_enterprise_id: CLIENT_E,
            partner_id: PARTNER,
            partner_enterprise_id: PARTNER_E,
            network_account_id: Uuid::from_u128(n + 50),
            amount_format: AmountFormat::BaseUnits,
            connection_key: "k".into(),
            nonce: "n".into(),
            proof: "p".into(),
            at: NOW,
            signed: None,
        };
        let allocation = AllocationRecord {
            allocation_id: Uuid::from_u128(n + 100),
            kind: AllocationKind::Allocation,
            connection_id: id,
            currency: btc(),
            quantity: allocated,
            client_external_id: format!("a{n}"),
            initiated_by: Uuid::from_u128(7),
            notes: None,
            released: None,
            at: NOW,
            signed: None,
        };
        [
            DomainEvent::from(created),
            AllocationCleared { allocation }.into(),
        ]
        .iter()
        .fold(Connection::Absent, Connection::evolve)
    }

    proptest! {
        /// For random instruction sets and disputes: the staged transfers mirror the instructions,
        /// holds equal the net losses, a disputed connection is withheld with its hold given back,
        /// and execution moves the rest exactly once, conserving BTC across connections and the
        /// partner.
        #[test]
        fn staging_and_execution_follow_the_instructions(
            lines in proptest::collection::vec((1u128..6, -1_000i128..1_000).prop_filter("non-zero", |(_, q)| *q != 0), 1..30),
            allocated in proptest::collection::vec(0i128..5_000, 5),
            partner_funds in 0i128..20_000,
            disputed in proptest::collection::vec(proptest::bool::weighted(0.3), 5),
        ) {
            let partner = PartnerRecord {
                id: PARTNER, enterprise_id: PARTNER_E, name: "p".into(), broker: false, active: true,
                client_dispute_window: None, top_up_window: None, amount_format: AmountFormat::BaseUnits,
                connection_key_schema: Default::default(), last_cutoff: None, pending_closures: Default::default(), created_at: NOW, updated_at: NOW,
            };
            let connections: BTreeMap<Uuid, Connection> = (1..6u128).map(|n| (Uuid::from_u128(n), connection(n, allocated[n as usize - 1]))).collect();
            let transfers: Vec<Transfer> = lines.iter().enumerate().map(|(i, (c, q))| Transfer {
                transfer_id: Uuid::from_u128(1000 + i as u128),
                instruction: Instruction { source: None, destination: Uuid::from_u128(*c), currency: btc(), quantity: *q },
            }).collect();
            let staged = SettlementStaged {
                settlement_id: Uuid::from_u128(0x5), partner_id: PARTNER, partner_enterprise_id: PARTNER_E, external_id: "x".into(),
                api: SettlementApi::V2, notes: None, cutoff_at: None, transfers: transfers.clone(), dispute_window_micros: WINDOW_MICROS,
                top_up_window_micros: 0, initiated_by: Uuid::from_u128(6), payload: "{}".into(), signature: "00".into(),
                key_id: Uuid::from_u128(4), at: NOW,
            };
            let mut net: BTreeMap<Uuid, i128> = BTreeMap::new();
            for (c, q) in &lines {
                *net.entry(Uuid::from_u128(*c)).or_default() += q;
            }
            let context = StageContext { partner: &partner, connections: &connections, previous_cutoff: None, closures: &[] };
            let decided = Settlement::Absent.decide_stage(&context, staged, NOW);
            let fits = net.iter().all(|(c, n)| *n >= 0 || -n <= connections[c].balance(&btc()).available());
            prop_assert_eq!(decided.is_ok(), fits, "refused exactly when some connection cannot cover its net loss");
            let Ok(events) = decided else { return Ok(()) };
            let settlement = events.iter().fold(Settlement::Absent, Settlement::evolve);
            prop_assert_eq!(&settlement.record().unwrap().staged.transfers, &transfers, "transfers mirror the instructions");
            let after: BTreeMap<Uuid, Connection> = connections.iter().map(|(id, c)| (*id, events.iter().fold(c.clone(), Connection::evolve))).collect();
            for (id, c) in &after {
                let expected_hold = net.get(id).map_or(0, |n| if *n < 0 { -n } else { 0 });
                prop_assert_eq!(c.balance(&btc()).held(), expected_hold, "holds equal the net losses");
            }

            // Disputes raised inside the window withhold their connections at finalization.
            let mut settlement = settlement;
            for (n, disputed) in disputed.iter().enumerate() {
                let id = Uuid::from_u128(n as u128 + 1);
                if !*disputed { continue; }
                let raise = RaiseDispute {
                    dispute_id: Uuid::from_u128(0xd00 + n as u128), connection_id: id, client_enterprise_id: CLIENT_E,
                    user_id: Uuid::from_u128(6), reason: None, expected_transfers: vec![(btc(), 1)],
                    signed: Signed { payload: "{}".into(), signature: "00".into(), key_id: Uuid::from_u128(4) },
                };
                let raised = settlement.decide_raise(raise, &after[&id], NOW).unwrap();
                settlement = raised.iter().fold(settlement, Settlement::evolve);
            }
            let closes = Timestamp(NOW.0 + WINDOW_MICROS);
            let finalized = settlement.decide_finalize(closes).unwrap();
            let settlement = finalized.iter().fold(settlement, Settlement::evolve);
            let after: BTreeMap<Uuid, Connection> = after.into_iter().map(|(id, c)| (id, finalized.iter().fold(c, Connection::evolve))).collect();
            let withheld = |id: &Uuid| disputed[id.as_u128() as usize - 1];
            for (id, c) in &after {
                if withheld(id) {
                    prop_assert_eq!(c.balance(&btc()), connections[id].balance(&btc()), "a withheld connection's hold is given back");
                }
            }

            let deposit = DepositCredited { enterprise_id: PARTNER_E, deposit_id: Uuid::from_u128(1), external_id: "d".into(), currency: btc(), quantity: partner_funds, at: NOW };
            let custody = Custody::default().evolve(&deposit.into());
            let total = |conns: &BTreeMap<Uuid, Connection>, custody: &Custody| conns.values().map(|c| c.balance(&btc()).total()).sum::<i128>() + custody.balance(&btc()).total();
            let before = total(&after, &custody);
            let executed = settlement.decide_execute(&after, &custody, closes).unwrap();
            let (mut conns, mut custody) = (after, custody);
            for e in &executed {
                conns = conns.into_iter().map(|(id, c)| (id, c.evolve(e))).collect();
                custody = custody.evolve(e);
            }
            let settled = executed.iter().fold(settlement, Settlement::evolve);
            let outflow: i128 = net.iter().filter(|(id, _)| !withheld(id)).map(|(_, n)| n).sum();
            let completed = matches!(settled.record().unwrap().status, Status::Completed { .. });
            prop_assert_eq!(completed, outflow <= partner_funds, "executes exactly when the partner covers its net outflow");
            prop_assert_eq!(total(&conns, &custody), before, "conserved");
            for (id, c) in &conns {
                prop_assert!(c.balance(&btc()).available() >= 0 && c.balance(&btc()).held() >= 0);
                if withheld(id) {
                    prop_assert_eq!(c.balance(&btc()), connections[id].balance(&btc()), "nothing of a withheld connection moves");
                } else if completed {
                    let moved = connections[id].balance(&btc()).available() + net.get(id).copied().unwrap_or(0);
                    prop_assert_eq!((c.balance(&btc()).available(), c.balance(&btc()).held()), (moved, 0), "the rest moves as instructed");
                }
            }
            if completed {
                prop_assert_eq!(settled.decide_execute(&conns, &custody, closes), Err(LifecycleRejection::Completed), "nothing executes twice");
            }
        }

        /// v1 performs at once or not at all: it completes exactly when every connection covers
        /// its net loss and the partner its net outflow; otherwise it is recorded failed and no
        /// balance moves (nothing is held). BTC is conserved either way.
        #[test]
        fn v1_performs_everything_or_records_a_failure_that_holds_nothing(
            lines in proptest::collection::vec((1u128..6, -1_000i128..1_000).prop_filter("non-zero", |(_, q)| *q != 0), 1..30),
            allocated in proptest::collection::vec(0i128..2_000, 5),
            partner_funds in 0i128..5_000,
        ) {
            let partner = PartnerRecord {
                id: PARTNER, enterprise_id: PARTNER_E, name: "p".into(), broker: false, active: true,
                client_dispute_window: None, top_up_window: None, amount_format: AmountFormat::BaseUnits,
                connection_key_schema: Default::default(), last_cutoff: None, pending_closures: Default::default(), created_at: NOW, updated_at: NOW,
            };
            let connections: BTreeMap<Uuid, Connection> = (1..6u128).map(|n| (Uuid::from_u128(n), connection(n, allocated[n as usize - 1]))).collect();
            let transfers: Vec<Transfer> = lines.iter().enumerate().map(|(i, (c, q))| Transfer {
                transfer_id: Uuid::from_u128(1000 + i as u128),
                instruction: Instruction { source: None, destination: Uuid::from_u128(*c), currency: btc(), quantity: *q },
            }).collect();
            let staged = SettlementStaged {
                settlement_id: Uuid::from_u128(0x5), partner_id: PARTNER, partner_enterprise_id: PARTNER_E, external_id: "x".into(),
                api: SettlementApi::V1, notes: None, cutoff_at: None, transfers, dispute_window_micros: 0,
                top_up_window_micros: 0, initiated_by: Uuid::from_u128(6), payload: "{}".into(), signature: "00".into(),
                key_id: Uuid::from_u128(4), at: NOW,
            };
            let mut net: BTreeMap<Uuid, i128> = BTreeMap::new();
            for (c, q) in &lines {
                *net.entry(Uuid::from_u128(*c)).or_default() += q;
            }
            let deposit = DepositCredited { enterprise_id: PARTNER_E, deposit_id: Uuid::from_u128(1), external_id: "d".into(), currency: btc(), quantity: partner_funds, at: NOW };
            let custody = Custody::default().evolve(&deposit.into());
            let context = StageContext { partner: &partner, connections: &connections, previous_cutoff: None, closures: &[] };
            let events = Settlement::Absent.decide_perform(&context, &custody, staged, NOW).unwrap();
            let covered = net.iter().all(|(c, n)| *n >= 0 || -n <= connections[c].balance(&btc()).available());
            let outflow: i128 = net.values().sum();
            let settled = events.iter().fold(Settlement::Absent, Settlement::evolve);
            let completed = matches!(settled.record().unwrap().status, Status::Completed { .. });
            prop_assert_eq!(completed, covered && outflow <= partner_funds, "completes exactly when every balance covers it");
            let after: BTreeMap<Uuid, Connection> = connections.iter().map(|(id, c)| (*id, events.iter().fold(c.clone(), Connection::evolve))).collect();
            let custody_after = events.iter().fold(custody.clone(), Custody::evolve);
            let total = |conns: &BTreeMap<Uuid, Connection>, custody: &Custody| conns.values().map(|c| c.balance(&btc()).total()).sum::<i128>() + custody.balance(&btc()).total();
            prop_assert_eq!(total(&after, &custody_after), total(&connections, &custody), "conserved");
            for (id, c) in &after {
                prop_assert_eq!(c.balance(&btc()).held(), 0, "nothing stays held");
                if !completed {
                    prop_assert_eq!(c.balance(&btc()), connections[id].balance(&btc()), "a failure moves nothing");
                }
            }
        }
    }
}
