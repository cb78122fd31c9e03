//! The golden corpus: stored bytes of every published `(type id, schema version)`, plus the
//! metadata and wire layouts, decoded on every build. A layout that changes without a new version
//! and an upcaster fails here. Missing files for the current versions are written when the test
//! runs with `SETTLE_WRITE_GOLDEN=1`; existing files are never rewritten.

use std::path::PathBuf;

use events::codec::{
    decode_event, encode_event, Actor, EncodedEvent, Metadata, SequencedEvent, StoredEvent,
};
use events::domain::enterprise::{EnterpriseCreated, EnterpriseLicenseSet};
use events::domain::event::Timestamp;
use events::domain::{CommandId, DomainEvent, StreamName};
use serde_json::{json, Value};
use uuid::Uuid;

/// One sample of each current event type.
fn samples() -> Vec<DomainEvent> {
    vec![
        EnterpriseCreated {
            enterprise_id: Uuid::from_u128(0x11),
            name: "Golden Exchange".into(),
            oes_license: true,
            at: Timestamp(1_767_225_600_000_000),
        }
        .into(),
        EnterpriseLicenseSet {
            enterprise_id: Uuid::from_u128(0x11),
            oes_license: false,
            at: Timestamp(1_767_225_660_000_000),
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
            assert_eq!(
                serde_json::to_value(&decoded).unwrap(),
                golden["decoded"],
                "{file} decodes to what it meant"
            );
            if version == kind.version {
                assert_eq!(
                    encode_event(&decoded).payload,
                    encoded.payload,
                    "{file}: the current layout changed without a new version"
                );
            }
        }
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
