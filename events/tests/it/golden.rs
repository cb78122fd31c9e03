//! The golden corpus: stored bytes of every published `(type id, schema version)`, plus the
//! metadata and wire layouts, decoded on every build. A layout that changes without a new version
//! and an upcaster fails here. Missing files for the current versions are written when the test
//! runs with `SETTLE_WRITE_GOLDEN=1`; existing files are never rewritten.

use std::path::PathBuf;

use events::codec::{
    decode_event, encode_event, Actor, EncodedEvent, Metadata, SequencedEvent, StoredEvent,
};
use events::domain::client::ClientRegistered;
use events::domain::connection::{
    AllocationCleared, AllocationKind, AllocationRecord, AllocationReleased, ConnectionCreated,
    ConnectionUpdated, ReleaseReason,
};
use events::domain::connection_key::{ConnectionKey, ConnectionKeySchema};
use events::domain::custody::{CustodyAllocated, CustodyDeallocated, DepositCredited};
use events::domain::dispute::{
    CarriedClosure, ClosedBy, ClosureQueued, ClosuresAssigned, ClosuresJoined, DisputeClosed,
    DisputeRaised, DisputeUpdated, Signed,
};
use events::domain::enterprise::{
    EnterpriseCreated, EnterpriseLicenseSet, SigningKeyRegistered, SigningKeyRevoked,
    WebhookConfigured,
};
use events::domain::event::Timestamp;
use events::domain::money::{AmountFormat, CurrencyCode};
use events::domain::partner::{
    PartnerCutoffAdvanced, PartnerRegistered, PartnerUpdated, WindowMinutes,
};
use events::domain::settlement::{
    ConnectionSettled, CustodySettled, FundsHeld, FundsReleased, Instruction, SettlementApi,
    SettlementExecuted, SettlementFailed, SettlementFinalized, SettlementStaged, Transfer,
};
use events::domain::user::{UserCreated, UserDisabled, UserEnabled, UserTokenRotated};
use events::domain::{CommandId, DomainEvent, StreamName};
use serde_json::{json, Value};
use uuid::Uuid;

fn id(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

fn btc() -> CurrencyCode {
    CurrencyCode::parse("BTC").unwrap()
}

fn allocation(released: Option<ReleaseReason>) -> AllocationRecord {
    AllocationRecord {
        allocation_id: id(0x91),
        kind: AllocationKind::Allocation,
        connection_id: id(0x81),
        currency: btc(),
        quantity: 20_000_000,
        client_external_id: "alloc-1".into(),
        initiated_by: id(0x55),
        notes: Some("first".into()),
        released,
        at: Timestamp(1_767_225_720_000_000),
        signed: Some(signed()),
    }
}

fn signed() -> Signed {
    Signed {
        payload: "{\"connectionId\":\"x\"}".into(),
        signature: "ab".repeat(64),
        key_id: id(0x12),
    }
}

fn closure_transfer() -> Transfer {
    Transfer {
        transfer_id: id(0xc2),
        instruction: Instruction {
            source: None,
            destination: id(0x81),
            currency: btc(),
            quantity: -5_000_000,
        },
    }
}

fn carried() -> CarriedClosure {
    CarriedClosure {
        dispute_id: id(0xd1),
        disputed_settlement_id: id(0xa1),
        closure_id: id(0xc1),
        connection_id: id(0x81),
        transfers: vec![closure_transfer()],
    }
}

/// One sample of each current event type.
fn samples() -> Vec<DomainEvent> {
    let at = Timestamp(1_767_225_600_000_000);
    let minutes = |m: i64, scale: u32| {
        Some(WindowMinutes::parse(rust_decimal::Decimal::new(m, scale)).unwrap())
    };
    vec![
        EnterpriseCreated {
            enterprise_id: id(0x11),
            name: "Golden Exchange".into(),
            oes_license: true,
            at,
        }
        .into(),
        EnterpriseLicenseSet {
            enterprise_id: id(0x11),
            oes_license: false,
            at: Timestamp(1_767_225_660_000_000),
        }
        .into(),
        SigningKeyRegistered {
            enterprise_id: id(0x11),
            key_id: id(0x12),
            public_key: [0xab; 32],
            at,
        }
        .into(),
        SigningKeyRevoked {
            enterprise_id: id(0x11),
            key_id: id(0x12),
            at,
        }
        .into(),
        UserCreated {
            user_id: id(0x55),
            name: "Ops".into(),
            token_hash: [0xcd; 32],
            enterprise_ids: vec![id(0x11)],
            auditor: false,
            at,
        }
        .into(),
        PartnerRegistered {
            partner_id: id(0x21),
            enterprise_id: id(0x11),
            name: "Golden Venue".into(),
            broker: false,
            client_dispute_window: minutes(5, 2),
            top_up_window: None,
            amount_format: AmountFormat::Decimal,
            at,
            connection_key_schema: Some(ConnectionKeySchema::ApiKeyAndSecret),
        }
        .into(),
        PartnerUpdated {
            partner_id: id(0x21),
            active: Some(false),
            client_dispute_window: Some(None),
            top_up_window: Some(minutes(30, 0)),
            at,
            connection_key_schema: Some(ConnectionKeySchema::Clearloop),
        }
        .into(),
        ClientRegistered {
            client_id: id(0x31),
            enterprise_id: id(0x11),
            wallet_id: id(0x32),
            at,
        }
        .into(),
        DepositCredited {
            enterprise_id: id(0x11),
            deposit_id: id(0x41),
            external_id: "dep-1".into(),
            currency: btc(),
            quantity: 100_000_000,
            at,
        }
        .into(),
        CustodyAllocated {
            enterprise_id: id(0x11),
            allocation_id: id(0x91),
            connection_id: id(0x81),
            currency: btc(),
            quantity: 20_000_000,
            at,
        }
        .into(),
        CustodyDeallocated {
            enterprise_id: id(0x11),
            allocation_id: id(0x92),
            connection_id: id(0x81),
            currency: btc(),
            quantity: 5_000_000,
            at,
        }
        .into(),
        ConnectionCreated {
            connection_id: id(0x81),
            name: "main".into(),
            client_id: id(0x31),
            client_enterprise_id: id(0x11),
            partner_id: id(0x21),
            partner_enterprise_id: id(0x12),
            network_account_id: id(0x82),
            amount_format: AmountFormat::Decimal,
            connection_key: ConnectionKey::ApiKeyAndSecret {
                api_key: "api-key-1".into(),
                api_secret: "api-secret-1".into(),
            },
            nonce: "n-1".into(),
            proof: "00".repeat(64),
            at,
            signed: Some(signed()),
        }
        .into(),
        ConnectionUpdated {
            connection_id: id(0x81),
            name: Some("renamed".into()),
            active: Some(false),
            at,
            signed: Some(signed()),
        }
        .into(),
        AllocationCleared {
            allocation: allocation(None),
        }
        .into(),
        AllocationReleased {
            allocation: allocation(Some(ReleaseReason::InsufficientCustodyBalance)),
        }
        .into(),
        SettlementStaged {
            settlement_id: id(0xa1),
            partner_id: id(0x21),
            partner_enterprise_id: id(0x12),
            external_id: "settle-2026-01-01".into(),
            api: SettlementApi::V2,
            notes: Some("daily".into()),
            cutoff_at: Some(at),
            transfers: vec![
                Transfer {
                    transfer_id: id(0xb1),
                    instruction: Instruction {
                        source: None,
                        destination: id(0x81),
                        currency: btc(),
                        quantity: -20_000_000,
                    },
                },
                Transfer {
                    transfer_id: id(0xb2),
                    instruction: Instruction {
                        source: Some(id(0x81)),
                        destination: id(0x83),
                        currency: btc(),
                        quantity: 5,
                    },
                },
            ],
            dispute_window_micros: 3_000_000,
            top_up_window_micros: 0,
            initiated_by: id(0x55),
            payload: "{\"externalId\":\"settle-2026-01-01\"}".into(),
            signature: "ab".repeat(64),
            key_id: id(0x12),
            at,
        }
        .into(),
        FundsHeld {
            connection_id: id(0x81),
            settlement_id: id(0xa1),
            currency: btc(),
            quantity: 20_000_000,
            at,
        }
        .into(),
        ConnectionSettled {
            connection_id: id(0x81),
            settlement_id: id(0xa1),
            currency: btc(),
            consumed_held: 20_000_000,
            credited: 0,
            at,
        }
        .into(),
        CustodySettled {
            enterprise_id: id(0x12),
            settlement_id: id(0xa1),
            currency: btc(),
            delta: 20_000_000,
            at,
        }
        .into(),
        SettlementExecuted {
            settlement_id: id(0xa1),
            at,
        }
        .into(),
        SettlementFailed {
            settlement_id: id(0xa1),
            short_currencies: vec![btc()],
            at,
        }
        .into(),
        PartnerCutoffAdvanced {
            partner_id: id(0x21),
            settlement_id: id(0xa1),
            cutoff_at: at,
            at,
        }
        .into(),
        DisputeRaised {
            settlement_id: id(0xa1),
            dispute_id: id(0xd1),
            connection_id: id(0x81),
            client_enterprise_id: id(0x31),
            user_id: id(0x55),
            reason: Some("we lost less".into()),
            expected_transfers: vec![(btc(), -5_000_000)],
            signed: signed(),
            at,
        }
        .into(),
        DisputeUpdated {
            settlement_id: id(0xa1),
            dispute_id: id(0xd1),
            user_id: id(0x55),
            retracted: true,
            reason: Some("we lost less".into()),
            retracted_reason: Some("our mistake".into()),
            expected_transfers: vec![(btc(), -5_000_000)],
            signed: signed(),
            at,
        }
        .into(),
        DisputeClosed {
            settlement_id: id(0xa1),
            dispute_id: id(0xd1),
            connection_id: id(0x81),
            closure_id: id(0xc1),
            closed_by: ClosedBy::Admin,
            user_id: None,
            notes: "agreed".into(),
            adjusted_transfers: vec![closure_transfer()],
            signed: None,
            at,
        }
        .into(),
        ClosureQueued {
            partner_id: id(0x21),
            closure: carried(),
            at,
        }
        .into(),
        ClosuresJoined {
            settlement_id: id(0xa2),
            closures: vec![carried()],
            at,
        }
        .into(),
        ClosuresAssigned {
            partner_id: id(0x21),
            settlement_id: id(0xa2),
            dispute_ids: vec![id(0xd1)],
            at,
        }
        .into(),
        SettlementFinalized {
            settlement_id: id(0xa1),
            withheld_connections: vec![id(0x81)],
            at,
        }
        .into(),
        FundsReleased {
            connection_id: id(0x81),
            settlement_id: id(0xa1),
            currency: btc(),
            quantity: 20_000_000,
            at,
        }
        .into(),
        WebhookConfigured {
            enterprise_id: id(0x11),
            url: Some("https://hooks.example.com/settle".into()),
            at,
        }
        .into(),
        UserDisabled {
            user_id: id(0x55),
            at,
        }
        .into(),
        UserEnabled {
            user_id: id(0x55),
            at: Timestamp(1_767_225_660_000_000),
        }
        .into(),
        UserTokenRotated {
            user_id: id(0x55),
            token_hash: [0xef; 32],
            at,
        }
        .into(),
    ]
}

fn sample_metadata() -> Metadata {
    Metadata {
        command_id: CommandId::from_uuid(Uuid::from_u128(0x22)),
        causation_id: Some(Uuid::from_u128(0x33)),
        correlation_id: Uuid::from_u128(0x44),
        actor: Actor::User(Uuid::from_u128(0x55)),
        request_id: Some("req-1".into()),
        key_id: Some(Uuid::from_u128(0x66)),
    }
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read_or_write(file: &str, current: impl FnOnce() -> Value) -> Value {
    let path = dir().join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text).expect("golden file is JSON"),
        Err(_) if std::env::var("SETTLE_WRITE_GOLDEN").is_ok_and(|v| v == "1") => {
            let value = current();
            std::fs::write(&path, serde_json::to_string_pretty(&value).unwrap() + "\n")
                .expect("write golden file");
            value
        }
        Err(_) => panic!(
            "no golden file {file}: run the tests with SETTLE_WRITE_GOLDEN=1 once to record it"
        ),
    }
}

fn bytes(value: &Value, key: &str) -> Vec<u8> {
    hex::decode(value[key].as_str().expect("hex string")).expect("valid hex")
}

#[test]
fn every_event_type_and_version_decodes_from_its_golden_bytes() {
    let samples = samples();
    for kind in DomainEvent::TYPES {
        let sample = samples
            .iter()
            .find(|s| s.event_type() == *kind)
            .unwrap_or_else(|| panic!("no sample for {}", kind.name));
        for version in 1..=kind.version {
            let file = format!("{}.v{version}.json", kind.name);
            let golden = read_or_write(&file, || {
                let encoded = encode_event(sample);
                json!({"typeId": kind.id, "schemaVersion": version, "payloadHex": hex::encode(&encoded.payload), "decoded": sample})
            });
            assert_eq!(
                golden["typeId"],
                json!(kind.id),
                "{file}: type id is permanent"
            );
            let encoded = EncodedEvent {
                type_id: kind.id,
                schema_version: version,
                payload: bytes(&golden, "payloadHex"),
            };
            let decoded =
                decode_event(&encoded).unwrap_or_else(|e| panic!("{file} no longer decodes: {e}"));
            let decoded = serde_json::to_value(&decoded).unwrap();
            // An old version lifts to the current layout with the fields it did not have absent
            // (null); every field it had keeps its value, in its new shape where one changed.
            let meant = reshaped(kind.name, version, &golden["decoded"]);
            let decoded = if version < kind.version {
                without_added_nulls(&decoded, &meant, &file)
            } else {
                decoded
            };
            assert_eq!(decoded, meant, "{file} decodes to what it meant");
            if version == kind.version {
                let decoded = decode_event(&encoded).expect("decodes");
                assert_eq!(
                    encode_event(&decoded).payload,
                    encoded.payload,
                    "{file}: the current layout changed without a new version"
                );
            }
        }
    }
}

/// How an old value of a field reads in the field's new shape.
type Reshape = fn(&Value) -> Value;

/// Fields whose shape changed in a later version, and how their old value reads in the new one:
/// `(type, versions before, field, new shape of the old value)`.
const RESHAPED: &[(&str, u16, &str, Reshape)] = &[
    // v3 keeps the key as an object of the partner's schema; a plain string is a `token` key.
    (
        "ConnectionCreated",
        3,
        "connection_key",
        |old| json!({"schema": "token", "connectionToken": old}),
    ),
];

/// `decoded` (a golden file's meaning) with every reshaped field of its version in its new shape.
fn reshaped(type_name: &str, version: u16, decoded: &Value) -> Value {
    let mut decoded = decoded.clone();
    for (name, before, field, reshape) in RESHAPED {
        if *name == type_name && version < *before {
            let value = &mut decoded[*name][*field];
            *value = reshape(value);
        }
    }
    decoded
}

/// `lifted` without the fields `old` lacks, each of which must be null: what an upcaster adds
/// to an old event is absent, never invented.
fn without_added_nulls(lifted: &Value, old: &Value, file: &str) -> Value {
    match (lifted, old) {
        (Value::Object(new), Value::Object(was)) => Value::Object(
            new.iter()
                .filter_map(|(k, v)| match was.get(k) {
                    Some(before) => Some((k.clone(), without_added_nulls(v, before, file))),
                    None => {
                        assert!(v.is_null(), "{file}: the upcaster invented {k} = {v}");
                        None
                    }
                })
                .collect(),
        ),
        (Value::Array(new), Value::Array(was)) if new.len() == was.len() => Value::Array(
            new.iter()
                .zip(was)
                .map(|(v, before)| without_added_nulls(v, before, file))
                .collect(),
        ),
        _ => lifted.clone(),
    }
}

#[test]
fn v1_events_recorded_before_signed_requests_were_kept_lift_with_them_absent() {
    use events::domain::connection::{AllocationRecord, ConnectionCreated};
    for (name, type_id) in [
        ("ConnectionCreated", 12),
        ("ConnectionUpdated", 13),
        ("AllocationCleared", 14),
        ("AllocationReleased", 15),
    ] {
        let golden = read_or_write(&format!("{name}.v1.json"), || unreachable!("published"));
        let encoded = EncodedEvent {
            type_id,
            schema_version: 1,
            payload: bytes(&golden, "payloadHex"),
        };
        let signed = match decode_event(&encoded).expect("v1 decodes") {
            DomainEvent::ConnectionCreated(ConnectionCreated { signed, .. }) => signed,
            DomainEvent::ConnectionUpdated(e) => e.signed,
            DomainEvent::AllocationCleared(e) => {
                let AllocationRecord { signed, .. } = e.allocation;
                signed
            }
            DomainEvent::AllocationReleased(e) => e.allocation.signed,
            other => panic!("{name} decoded as {other:?}"),
        };
        assert_eq!(signed, None, "{name} v1 has no signed request");
    }
}

#[test]
fn metadata_and_wire_layouts_decode_from_their_golden_bytes() {
    let golden = read_or_write(
        "metadata.v1.json",
        || json!({"hex": hex::encode(sample_metadata().encode())}),
    );
    assert_eq!(
        Metadata::decode(&bytes(&golden, "hex")).unwrap(),
        sample_metadata()
    );

    let event = SequencedEvent {
        position: 42,
        hash: [9; 32],
        stored: StoredEvent {
            event_id: Uuid::from_u128(0x77),
            stream: StreamName::parse("enterprise", "golden").unwrap(),
            version: 3,
            event: encode_event(&samples()[0]),
            metadata: sample_metadata().encode(),
            recorded_at: Timestamp(1_767_225_600_000_001),
        },
    };
    let golden = read_or_write(
        "wire.v1.json",
        || json!({"hex": hex::encode(event.to_wire())}),
    );
    assert_eq!(
        SequencedEvent::from_wire(&bytes(&golden, "hex")).unwrap(),
        event
    );
}

#[test]
fn connection_keys_before_v3_lift_to_token_keys_and_partners_before_v2_take_tokens() {
    use events::domain::partner::Partner;
    for version in [1, 2] {
        let golden = read_or_write(&format!("ConnectionCreated.v{version}.json"), || {
            unreachable!("published")
        });
        let encoded = EncodedEvent {
            type_id: 12,
            schema_version: version,
            payload: bytes(&golden, "payloadHex"),
        };
        match decode_event(&encoded).expect("decodes") {
            DomainEvent::ConnectionCreated(e) => {
                assert_eq!(
                    e.connection_key,
                    ConnectionKey::token("key-1"),
                    "v{version}"
                )
            }
            other => panic!("decoded as {other:?}"),
        }
    }
    let registered = read_or_write("PartnerRegistered.v1.json", || unreachable!("published"));
    let registered = decode_event(&EncodedEvent {
        type_id: 6,
        schema_version: 1,
        payload: bytes(&registered, "payloadHex"),
    })
    .expect("v1 decodes");
    let updated = read_or_write("PartnerUpdated.v1.json", || unreachable!("published"));
    let updated = decode_event(&EncodedEvent {
        type_id: 7,
        schema_version: 1,
        payload: bytes(&updated, "payloadHex"),
    })
    .expect("v1 decodes");
    let partner = [registered, updated]
        .iter()
        .fold(Partner::Absent, Partner::evolve);
    assert_eq!(
        partner.record().expect("registered").connection_key_schema,
        ConnectionKeySchema::Token,
        "a partner registered before schemas takes tokens, and a v1 update keeps it"
    );
}

/// Every connection key shape and every schema, as the event log stores them (postcard: the
/// variant index, then the fields): the corpus pins the variant order, which never changes.
#[test]
fn connection_key_layouts_decode_from_their_golden_bytes() {
    let keys = [
        ConnectionKey::token("t-1"),
        ConnectionKey::TokenAndSignature {
            connection_token: "t-1".into(),
            signature: "s-1".into(),
        },
        ConnectionKey::ApiKeyAndSecret {
            api_key: "k-1".into(),
            api_secret: "secret-1".into(),
        },
        ConnectionKey::Clearloop {
            connection_token: "t-1".into(),
            public_key: "pk-1".into(),
        },
    ];
    let golden = read_or_write("connection-keys.v1.json", || {
        json!({
            "keys": keys.iter().map(|k| json!({
                "hex": hex::encode(postcard::to_stdvec(k).unwrap()),
                "json": k,
            })).collect::<Vec<_>>(),
            "schemas": ConnectionKeySchema::ALL.iter().map(|s| json!({
                "hex": hex::encode(postcard::to_stdvec(s).unwrap()),
                "json": s,
            })).collect::<Vec<_>>(),
        })
    });
    for (key, pinned) in keys.iter().zip(golden["keys"].as_array().expect("keys")) {
        let stored = bytes(pinned, "hex");
        assert_eq!(
            postcard::from_bytes::<ConnectionKey>(&stored).expect("decodes"),
            *key
        );
        assert_eq!(postcard::to_stdvec(key).unwrap(), stored, "{key:?}");
        assert_eq!(serde_json::to_value(key).unwrap(), pinned["json"]);
    }
    for (schema, pinned) in ConnectionKeySchema::ALL
        .iter()
        .zip(golden["schemas"].as_array().expect("schemas"))
    {
        let stored = bytes(pinned, "hex");
        assert_eq!(
            postcard::from_bytes::<ConnectionKeySchema>(&stored).expect("decodes"),
            *schema
        );
        assert_eq!(serde_json::to_value(schema).unwrap(), pinned["json"]);
    }
}

/// The encoding of folded states (snapshots, ADR 0014) at `STATE_SCHEMA`: each category's state
/// after every sample event, against its recorded bytes. A state type that changes shape fails
/// here until `STATE_SCHEMA` is bumped (and the new file recorded), so an old snapshot is never
/// read as a new shape.
#[test]
fn folded_state_layouts_are_pinned_by_their_schema() {
    use events::domain::aggregate::{CATEGORIES, STATE_SCHEMA};
    use events::domain::State;

    let samples = samples();
    let states: Vec<(&str, State)> = CATEGORIES
        .iter()
        .map(|c| (*c, State::fold(c, &samples)))
        .collect();
    let file = format!("state.v{STATE_SCHEMA}.json");
    let golden = read_or_write(&file, || {
        Value::Object(
            states
                .iter()
                .map(|(c, s)| ((*c).to_owned(), Value::from(hex::encode(s.encode()))))
                .collect(),
        )
    });
    for (category, state) in &states {
        assert_ne!(
            *state,
            State::initial(category),
            "the samples reach a {category} state"
        );
        let recorded = bytes(&golden, category);
        assert_eq!(
            hex::encode(state.encode()),
            hex::encode(&recorded),
            "the {category} state no longer encodes as {file} recorded: bump STATE_SCHEMA"
        );
        assert_eq!(State::decode(&recorded).as_ref(), Some(state));
    }
}
