//! Events as an auditor reads them: one JSON object per event with its place in the log, its
//! metadata, the payload decoded to JSON and, for a signed instruction, the kept request with
//! its signature re-verified now. Also the CSV form of the export.
//!
//! Amounts inside a decoded payload are exact integers of base units; they may exceed 2^53, so
//! the payload is written as raw JSON text (never through an `f64`).

use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::codec::{decode_event, Actor, DecodeError, Metadata, SequencedEvent};
use crate::domain::audit::{
    check_signature, is_signed_instruction, signed_instruction, KeyRegistry, SignerIndex,
};
use crate::domain::DomainEvent;
use crate::store::to_datetime;

/// RFC 3339 UTC with microseconds, as the rest of the API writes times.
pub fn time(t: crate::domain::event::Timestamp) -> String {
    to_datetime(t).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The permanent name of a type id ("unknown" for one this build does not know).
pub fn type_name(type_id: u32) -> &'static str {
    DomainEvent::TYPES
        .iter()
        .find(|t| t.id == type_id)
        .map_or("unknown", |t| t.name)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ActorView {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    user_id: Option<Uuid>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedView {
    pub payload: String,
    pub signature: String,
    pub key_id: Uuid,
    /// The key as registered (hex), when the key id names one.
    pub public_key: Option<String>,
    pub key_enterprise_id: Option<Uuid>,
    /// Verified now, strictly, under the key that accepted the instruction (registered before
    /// it and not revoked before it, belonging to the signer's enterprise); `null` where the
    /// reader did not verify (the bulk export leaves that to `verify-signatures`).
    pub signature_valid: Option<bool>,
    /// Why not, when it is not.
    pub problem: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventView<'a> {
    position: u64,
    hash: String,
    event_id: Uuid,
    stream: String,
    version: u64,
    #[serde(rename = "type")]
    kind: &'static str,
    type_id: u32,
    schema_version: u16,
    recorded_at: String,
    actor: Option<ActorView>,
    request_id: Option<&'a str>,
    command_id: Option<Uuid>,
    correlation_id: Option<Uuid>,
    causation_id: Option<Uuid>,
    payload: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    decode_error: Option<String>,
    /// The kept request, re-verified; `null` when the event is no signed instruction or was
    /// recorded before requests were kept (then `signedKept` is false).
    signed: Option<SignedView>,
    /// For a signed instruction, whether its request was kept; `null` for other events.
    signed_kept: Option<bool>,
}

/// The decoded payload as JSON text, without the enum's outer tag.
fn payload_json(event: &DomainEvent) -> Option<Box<RawValue>> {
    let name = event.event_type().name;
    let text = serde_json::to_string(event).ok()?;
    let inner = text
        .strip_prefix(&format!("{{\"{name}\":"))
        .and_then(|rest| rest.strip_suffix('}'))
        .unwrap_or(&text);
    RawValue::from_string(inner.to_owned()).ok()
}

/// What signatures are re-verified against: every registered key and who signs for what. `None`
/// renders the kept requests without verifying them.
pub type Verify<'a> = Option<(&'a KeyRegistry, &'a SignerIndex)>;

/// Everything about one event an auditor is shown.
#[derive(Debug)]
pub struct Audited {
    pub event: SequencedEvent,
    pub decoded: Result<DomainEvent, DecodeError>,
    pub metadata: Option<Metadata>,
}

impl Audited {
    pub fn new(event: SequencedEvent) -> Self {
        let decoded = decode_event(&event.stored.event);
        let metadata = Metadata::decode(&event.stored.metadata).ok();
        Self {
            event,
            decoded,
            metadata,
        }
    }

    /// The signed request it keeps, re-verified against `verify`'s keys when given; `None` for
    /// an event that is no signed instruction or kept none.
    pub fn signed_view(&self, verify: Verify<'_>) -> Option<SignedView> {
        let event = self.decoded.as_ref().ok()?;
        let signed = signed_instruction(event)?;
        let mut view = SignedView {
            payload: signed.payload.to_owned(),
            signature: signed.signature.to_owned(),
            key_id: signed.key_id,
            public_key: None,
            key_enterprise_id: None,
            signature_valid: None,
            problem: None,
        };
        if let Some((keys, signers)) = verify {
            let check =
                check_signature(&signed, self.event.position, &signers.signers(event), keys);
            view.public_key = check.key.as_ref().map(|k| hex::encode(k.public_key));
            view.key_enterprise_id = check.key.as_ref().map(|k| k.enterprise_id);
            view.signature_valid = Some(check.valid());
            view.problem = check.problem.map(|p| p.to_string());
        }
        Some(view)
    }

    /// The event as one line of JSON.
    pub fn to_json(&self, verify: Verify<'_>) -> String {
        let stored = &self.event.stored;
        let meta = self.metadata.as_ref();
        let signed = self.signed_view(verify);
        let signed_kept = self
            .decoded
            .as_ref()
            .ok()
            .filter(|e| is_signed_instruction(e))
            .map(|_| signed.is_some());
        let view = EventView {
            position: self.event.position,
            hash: hex::encode(self.event.hash),
            event_id: stored.event_id,
            stream: format!("{}/{}", stored.stream.category(), stored.stream.id()),
            version: stored.version,
            kind: type_name(stored.event.type_id),
            type_id: stored.event.type_id,
            schema_version: stored.event.schema_version,
            recorded_at: time(stored.recorded_at),
            actor: meta.map(|m| match m.actor {
                Actor::System => ActorView {
                    kind: "system",
                    user_id: None,
                },
                Actor::Admin => ActorView {
                    kind: "admin",
                    user_id: None,
                },
                Actor::User(id) => ActorView {
                    kind: "user",
                    user_id: Some(id),
                },
            }),
            request_id: meta.and_then(|m| m.request_id.as_deref()),
            command_id: meta.map(|m| m.command_id.as_uuid()),
            correlation_id: meta.map(|m| m.correlation_id),
            causation_id: meta.and_then(|m| m.causation_id),
            payload: self.decoded.as_ref().ok().and_then(payload_json),
            decode_error: self.decoded.as_ref().err().map(ToString::to_string),
            signed,
            signed_kept,
        };
        // Serializing owned plain data with raw JSON inside cannot fail.
        serde_json::to_string(&view).unwrap_or_default()
    }

    /// The header of the CSV export.
    pub const CSV_HEADER: &'static str = "position,hash,event_id,stream,version,type,schema_version,recorded_at,actor,user_id,request_id,key_id,signature_valid,payload\n";

    /// The event as one CSV record (RFC 4180 quoting), its payload as JSON in the last column.
    pub fn to_csv(&self, verify: Verify<'_>) -> String {
        let stored = &self.event.stored;
        let meta = self.metadata.as_ref();
        let (actor, user) = match meta.map(|m| &m.actor) {
            Some(Actor::System) => ("system", String::new()),
            Some(Actor::Admin) => ("admin", String::new()),
            Some(Actor::User(id)) => ("user", id.to_string()),
            None => ("", String::new()),
        };
        let signed = self.signed_view(verify);
        let payload = self
            .decoded
            .as_ref()
            .ok()
            .and_then(payload_json)
            .map(|p| p.get().to_owned())
            .unwrap_or_default();
        let fields = [
            self.event.position.to_string(),
            hex::encode(self.event.hash),
            stored.event_id.to_string(),
            format!("{}/{}", stored.stream.category(), stored.stream.id()),
            stored.version.to_string(),
            type_name(stored.event.type_id).to_owned(),
            stored.event.schema_version.to_string(),
            time(stored.recorded_at),
            actor.to_owned(),
            user,
            meta.and_then(|m| m.request_id.clone()).unwrap_or_default(),
            signed
                .as_ref()
                .map(|s| s.key_id.to_string())
                .unwrap_or_default(),
            signed
                .as_ref()
                .and_then(|s| s.signature_valid)
                .map(|v| v.to_string())
                .unwrap_or_default(),
            payload,
        ];
        let mut line = fields
            .iter()
            .map(|f| csv_field(f))
            .collect::<Vec<_>>()
            .join(",");
        line.push('\n');
        line
    }
}

fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(
            csv_field(r#"{"a":1,"b":"x"}"#),
            r#""{""a"":1,""b"":""x""}""#
        );
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }

    #[test]
    fn payloads_keep_amounts_beyond_two_to_the_53() {
        use crate::domain::custody::DepositCredited;
        use crate::domain::event::Timestamp;
        use crate::domain::money::CurrencyCode;
        let event: DomainEvent = DepositCredited {
            enterprise_id: Uuid::from_u128(1),
            deposit_id: Uuid::from_u128(2),
            external_id: "d".into(),
            currency: CurrencyCode::parse("ETH").unwrap(),
            quantity: 123_456_789_012_345_678_901_234,
            at: Timestamp(0),
        }
        .into();
        let json = payload_json(&event).unwrap();
        assert!(
            json.get().starts_with("{\"enterprise_id\""),
            "{}",
            json.get()
        );
        assert!(json.get().contains("\"quantity\":123456789012345678901234"));
    }
}
