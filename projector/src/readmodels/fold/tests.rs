//! The fold on its own: what a batch becomes, with no database.

use super::*;
use events::domain::custody::{CustodyAllocated, DepositCredited};
use events::domain::dispute::{CarriedClosure, ClosuresJoined, DisputeClosed};
use events::domain::enterprise::{EnterpriseCreated, EnterpriseLicenseSet};
use events::domain::money::CurrencyCode;
use events::domain::settlement::{
    ConnectionSettled, FundsHeld, Instruction, SettlementExecuted, SettlementFinalized,
    SettlementStaged,
};

const E: Uuid = Uuid::from_u128(0xe);
const PARTNER: Uuid = Uuid::from_u128(0x9);
const PARTNER_E: Uuid = Uuid::from_u128(0x9e);
const C1: Uuid = Uuid::from_u128(0xc1);
const C2: Uuid = Uuid::from_u128(0xc2);
const S: Uuid = Uuid::from_u128(0x5);
const S2: Uuid = Uuid::from_u128(0x52);

fn at(n: i64) -> Timestamp {
    Timestamp(1_767_225_600_000_000 + n)
}

fn btc() -> CurrencyCode {
    CurrencyCode::parse("BTC").expect("code")
}

struct World;

impl Facts for World {
    fn connection(&self, id: Uuid) -> Option<ConnectionFacts> {
        [C1, C2].contains(&id).then_some(ConnectionFacts {
            client_enterprise_id: E,
            partner_id: PARTNER,
            partner_enterprise_id: PARTNER_E,
            network_account_id: Uuid::from_u128(id.as_u128() + 0x1000),
        })
    }
    fn settlement(&self, id: Uuid) -> Option<SettlementFacts> {
        [S, S2].contains(&id).then_some(SettlementFacts {
            partner_id: PARTNER,
            partner_enterprise_id: PARTNER_E,
        })
    }
}

fn fold(loaded: Loaded, events: Vec<DomainEvent>) -> Rows {
    let mut rows = Rows::new(loaded);
    for e in &events {
        rows.apply(e, &World).expect("applies");
    }
    rows
}

fn staged(id: Uuid, lines: &[(Uuid, i128)], n: i64) -> DomainEvent {
    SettlementStaged {
        settlement_id: id,
        partner_id: PARTNER,
        partner_enterprise_id: PARTNER_E,
        external_id: format!("x-{n}"),
        api: SettlementApi::V2,
        notes: None,
        cutoff_at: Some(at(n)),
        transfers: lines
            .iter()
            .enumerate()
            .map(|(k, (c, q))| Transfer {
                transfer_id: Uuid::from_u128(id.as_u128() * 100 + k as u128),
                instruction: Instruction {
                    source: None,
                    destination: *c,
                    currency: btc(),
                    quantity: *q,
                },
            })
            .collect(),
        dispute_window_micros: 60,
        top_up_window_micros: 30,
        initiated_by: PARTNER_E,
        payload: String::new(),
        signature: String::new(),
        key_id: Uuid::nil(),
        at: at(n),
    }
    .into()
}

#[test]
fn balance_deltas_are_summed_per_account_and_currency() {
    let rows = fold(
        Loaded::default(),
        vec![
            DepositCredited {
                enterprise_id: E,
                deposit_id: Uuid::from_u128(1),
                external_id: "d".into(),
                currency: btc(),
                quantity: 100,
                at: at(1),
            }
            .into(),
            CustodyAllocated {
                enterprise_id: E,
                allocation_id: Uuid::from_u128(2),
                connection_id: C1,
                currency: btc(),
                quantity: 30,
                at: at(2),
            }
            .into(),
            FundsHeld {
                connection_id: C1,
                settlement_id: S,
                currency: btc(),
                quantity: 7,
                at: at(3),
            }
            .into(),
            ConnectionSettled {
                connection_id: C1,
                settlement_id: S,
                currency: btc(),
                consumed_held: 7,
                credited: 0,
                at: at(4),
            }
            .into(),
        ],
    );
    assert_eq!(rows.balances.len(), 2, "{:?}", rows.balances);
    let custody = &rows.balances[&(wallet_id_of(E), "BTC".to_owned())];
    assert_eq!(
        (custody.available, custody.held, custody.connection_id),
        (70, 0, None)
    );
    let network = &rows.balances[&(Uuid::from_u128(C1.as_u128() + 0x1000), "BTC".to_owned())];
    assert_eq!(
        (
            network.available,
            network.held,
            network.connection_id,
            network.owner_enterprise_id
        ),
        (-7, 0, Some(C1), E),
        "held then consumed: the hold nets to zero, the row is still written"
    );
}

#[test]
fn a_settlement_staged_finalized_and_executed_in_one_batch_is_written_once_in_its_last_state() {
    let rows = fold(
        Loaded::default(),
        vec![
            staged(S, &[(C1, -5), (C2, 9)], 1),
            SettlementFinalized {
                settlement_id: S,
                withheld_connections: vec![C2],
                at: at(2),
            }
            .into(),
            SettlementExecuted {
                settlement_id: S,
                at: at(3),
            }
            .into(),
        ],
    );
    let s = rows.settlements.changed();
    assert_eq!(s.len(), 1);
    assert_eq!(
        (
            s[0].status.as_str(),
            s[0].finalized,
            s[0].finalized_at,
            s[0].updated_at
        ),
        (
            "completed",
            true,
            Some(to_datetime(at(3))),
            to_datetime(at(3))
        )
    );
    assert_eq!(s[0].dispute_window_ends_at, to_datetime(at(61)));
    assert_eq!(s[0].top_up_window_ends_at, to_datetime(at(91)));
    let mut t: Vec<(Uuid, &str, Time)> = rows
        .transfers
        .changed()
        .iter()
        .map(|t| (t.destination_connection_id, t.status.as_str(), t.updated_at))
        .collect();
    t.sort();
    assert_eq!(
        t,
        vec![
            (C1, "completed", to_datetime(at(3))),
            (C2, "disputed", to_datetime(at(2)))
        ],
        "the withheld connection's transfer stays disputed"
    );
}

#[test]
fn updates_apply_to_loaded_rows_and_never_make_missing_ones() {
    let loaded = Loaded {
        enterprises: vec![EnterpriseRow {
            id: E,
            name: "E".into(),
            oes_license: true,
            created_at: to_datetime(at(0)),
            updated_at: to_datetime(at(0)),
        }],
        ..Loaded::default()
    };
    let other = Uuid::from_u128(0xdead);
    let rows = fold(
        loaded,
        vec![
            EnterpriseLicenseSet {
                enterprise_id: E,
                oes_license: false,
                at: at(5),
            }
            .into(),
            EnterpriseLicenseSet {
                enterprise_id: other,
                oes_license: false,
                at: at(5),
            }
            .into(),
            // A second creation of an existing row changes nothing (ON CONFLICT DO NOTHING).
            EnterpriseCreated {
                enterprise_id: E,
                name: "again".into(),
                oes_license: true,
                at: at(6),
            }
            .into(),
        ],
    );
    let changed = rows.enterprises.changed();
    assert_eq!(changed.len(), 1);
    assert_eq!(
        (
            changed[0].name.as_str(),
            changed[0].oes_license,
            changed[0].updated_at
        ),
        ("E", false, to_datetime(at(5)))
    );
}

#[test]
fn a_closure_moves_its_transfers_from_one_settlement_to_the_next() {
    let closure = Uuid::from_u128(0xc105);
    let transfer = Transfer {
        transfer_id: Uuid::from_u128(0x77),
        instruction: Instruction {
            source: None,
            destination: C1,
            currency: btc(),
            quantity: 3,
        },
    };
    // The closure in one batch…
    let first = fold(
        Loaded::default(),
        vec![DisputeClosed {
            settlement_id: S,
            dispute_id: Uuid::from_u128(0xd),
            connection_id: C1,
            closure_id: closure,
            closed_by: ClosedBy::Admin,
            user_id: None,
            notes: "n".into(),
            adjusted_transfers: vec![transfer.clone()],
            signed: None,
            at: at(1),
        }
        .into()],
    );
    let waiting = first.transfers.changed()[0].clone();
    assert_eq!(
        (
            waiting.settlement_id,
            waiting.status.as_str(),
            waiting.ordinal
        ),
        (None, "pending_settlement_assignment", 0)
    );
    // …joined to the next settlement and executed in a later one, loaded by closure and
    // settlement.
    let rows = fold(
        Loaded {
            transfers: vec![waiting],
            ..Loaded::default()
        },
        vec![
            staged(S2, &[(C2, 4)], 2),
            ClosuresJoined {
                settlement_id: S2,
                closures: vec![CarriedClosure {
                    dispute_id: Uuid::from_u128(0xd),
                    disputed_settlement_id: S,
                    closure_id: closure,
                    connection_id: C1,
                    transfers: vec![transfer],
                }],
                at: at(2),
            }
            .into(),
            SettlementExecuted {
                settlement_id: S2,
                at: at(3),
            }
            .into(),
        ],
    );
    let moved = rows
        .transfers
        .get(&Uuid::from_u128(0x77))
        .expect("the closure's transfer");
    assert_eq!(
        (moved.settlement_id, moved.status.as_str(), moved.ordinal),
        (Some(S2), "completed", JOINED_ORDINAL_OFFSET)
    );
    assert_eq!(rows.transfers.changed().len(), 2);
}

#[test]
fn needs_name_what_exists_before_and_the_facts_read() {
    let needs = Needs::of(&[
        staged(S, &[(C1, 1)], 1),
        SettlementExecuted {
            settlement_id: S2,
            at: at(2),
        }
        .into(),
    ]);
    assert_eq!(needs.connection_facts, [C1].into_iter().collect());
    assert_eq!(needs.settlements, [S2].into_iter().collect());
    assert_eq!(needs.transfers_of_settlements, [S2].into_iter().collect());
    assert!(needs.enterprises.is_empty() && needs.disputes.is_empty());
}

#[test]
fn rows_made_in_the_batch_are_not_loaded() {
    let needs = Needs::of(&[
        staged(S, &[(C1, 1)], 1),
        SettlementFinalized {
            settlement_id: S,
            withheld_connections: vec![],
            at: at(2),
        }
        .into(),
        SettlementExecuted {
            settlement_id: S,
            at: at(3),
        }
        .into(),
        EnterpriseCreated {
            enterprise_id: E,
            name: "E".into(),
            oes_license: true,
            at: at(4),
        }
        .into(),
        EnterpriseLicenseSet {
            enterprise_id: E,
            oes_license: false,
            at: at(5),
        }
        .into(),
    ]);
    assert!(needs.settlements.is_empty() && needs.transfers_of_settlements.is_empty());
    assert!(needs.enterprises.is_empty());
    // The order matters: an update before the creation in the batch is of an older row.
    let needs = Needs::of(&[EnterpriseLicenseSet {
        enterprise_id: E,
        oes_license: false,
        at: at(5),
    }
    .into()]);
    assert_eq!(needs.enterprises, [E].into_iter().collect());
}

#[test]
fn an_unknown_connection_is_an_error_not_a_silent_drop() {
    let mut rows = Rows::default();
    let stranger = Uuid::from_u128(0x5555);
    let held: DomainEvent = FundsHeld {
        connection_id: stranger,
        settlement_id: S,
        currency: btc(),
        quantity: 1,
        at: at(1),
    }
    .into();
    let error = rows.apply(&held, &World).expect_err("no facts");
    assert!(error.to_string().contains("unknown"), "{error}");
}
