//! The canonical payload: the one string the `…/signing` routes hand a partner to sign, and the
//! form whose hash tells an idempotent nonce retry from a nonce reuse.
//!
//! Compact JSON, object keys sorted by code point (UTF-8 byte order) at every level, strings
//! escaped as serde_json does (only `"`, `\` and U+0000–U+001F; everything else raw UTF-8).
//! Keys are sorted here explicitly rather than relying on serde_json's `Map` being a `BTreeMap`:
//! any crate in the build enabling serde_json's `preserve_order` would silently change that.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;

/// The exact string a partner should sign for these fields.
pub fn canonical_payload(fields: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(256);
    write_object(fields, &mut out);
    out
}

/// SHA-256 of the canonical payload: equal for any two semantically equal payloads, whatever
/// their key order or whitespace, so a retry with a re-serialized payload is still a retry.
pub fn payload_hash(fields: &Map<String, Value>) -> [u8; 32] {
    Sha256::digest(canonical_payload(fields).as_bytes()).into()
}

fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Object(fields) => write_object(fields, out),
        Value::Array(items) => write_array(items, out),
        // A scalar's `Display` is its compact JSON text.
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn write_object(fields: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = fields.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (index, (key, value)) in entries.into_iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(key.clone()).to_string());
        out.push(':');
        write_value(value, out);
    }
    out.push('}');
}

fn write_array(items: &[Value], out: &mut String) {
    out.push('[');
    for (index, item) in items.iter().enumerate() {
        if index > 0 {
            out.push(',');
        }
        write_value(item, out);
    }
    out.push(']');
}

/// Parses JSON text like `serde_json::from_str::<Value>`, except that an object with a repeated
/// key is an error. serde_json keeps the last duplicate silently; other parsers keep the first.
/// A signed payload must mean one thing to us and to an auditor's tools, so it may not repeat.
pub(crate) fn parse_json_strict(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str::<StrictValue>(text).map(|strict| strict.0)
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(StrictValue)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut fields = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if fields.contains_key(&key) {
                return Err(de::Error::custom(format_args!("duplicate key {key:?}")));
            }
            let StrictValue(value) = map.next_value()?;
            fields.insert(key, value);
        }
        Ok(Value::Object(fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn object(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(fields) => fields,
            other => panic!("not an object: {other}"),
        }
    }

    #[test]
    fn nested_objects_are_sorted_and_compact() {
        let fields = object(json!({
            "settlementAmounts": {"c2": {"USDC": "5", "BTC": "-20000000"}, "c1": {"ETH": "1"}},
            "externalId": "s-1",
            "list": [{"b": 1, "a": [true, null]}, "x"],
            "cutoffAt": "2024-06-01T00:00:00Z"
        }));
        assert_eq!(
            canonical_payload(&fields),
            r#"{"cutoffAt":"2024-06-01T00:00:00Z","externalId":"s-1","list":[{"a":[true,null],"b":1},"x"],"settlementAmounts":{"c1":{"ETH":"1"},"c2":{"BTC":"-20000000","USDC":"5"}}}"#
        );
    }

    #[test]
    fn strings_escape_only_what_json_requires() {
        let fields = object(json!({"notes": "café \"ok\" \\ /\n\u{1}\u{7f}", "é": 1, "z": 2}));
        assert_eq!(
            canonical_payload(&fields),
            "{\"notes\":\"café \\\"ok\\\" \\\\ /\\n\\u0001\u{7f}\",\"z\":2,\"é\":1}"
        );
    }

    #[test]
    fn key_order_and_whitespace_do_not_change_the_hash() {
        let a = object(json!({"a": "1", "b": {"y": [1, 2], "x": null}}));
        let b =
            parse_json_strict("{ \"b\" : { \"x\" : null , \"y\" : [ 1 , 2 ] } , \"a\" : \"1\" }");
        assert_eq!(payload_hash(&a), payload_hash(&object(b.unwrap())));
        assert_ne!(payload_hash(&a), payload_hash(&object(json!({"a": "2"}))));
    }

    #[test]
    fn floats_survive_canonical_text_exactly() {
        // Found by proptest: without serde_json's `float_roundtrip` this parsed back one ulp off.
        let fields = object(json!({"x": -5.644_289_169_317_099e81, "y": 0.05}));
        let text = canonical_payload(&fields);
        assert_eq!(text, r#"{"x":-5.644289169317099e+81,"y":0.05}"#);
        assert_eq!(object(parse_json_strict(&text).unwrap()), fields);
    }

    #[test]
    fn strict_parsing_refuses_duplicate_keys_at_any_depth() {
        assert!(parse_json_strict(r#"{"a":1,"a":2}"#).is_err());
        assert!(parse_json_strict(r#"{"a":{"b":1,"b":1}}"#).is_err());
        assert!(parse_json_strict(r#"[{"b":1},{"b":1}]"#).is_ok());
    }

    fn json_leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("JSON has no NaN or infinity", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,12}".prop_map(Value::String),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        json_leaf().prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".{0,8}", inner, 0..6)
                    .prop_map(|fields| Value::Object(fields.into_iter().collect())),
            ]
        })
    }

    fn json_fields() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec((".{0,8}", json_value()), 0..8)
            .prop_map(|entries| entries.into_iter().collect())
    }

    /// The same value with every object's entries inserted in reverse order.
    fn reversed(value: &Value) -> Value {
        match value {
            Value::Object(fields) => Value::Object(reverse_fields(fields)),
            Value::Array(items) => Value::Array(items.iter().map(reversed).collect()),
            scalar => scalar.clone(),
        }
    }

    fn reverse_fields(fields: &Map<String, Value>) -> Map<String, Value> {
        fields
            .iter()
            .rev()
            .map(|(k, v)| (k.clone(), reversed(v)))
            .collect()
    }

    proptest! {
        #[test]
        fn canonical_payload_parses_back_equal(fields in json_fields()) {
            let text = canonical_payload(&fields);
            prop_assert_eq!(parse_json_strict(&text).unwrap(), Value::Object(fields.clone()));
            prop_assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), Value::Object(fields));
        }

        #[test]
        fn canonical_payload_ignores_insertion_order(fields in json_fields()) {
            let permuted = reverse_fields(&fields);
            prop_assert_eq!(canonical_payload(&permuted), canonical_payload(&fields));
            prop_assert_eq!(payload_hash(&permuted), payload_hash(&fields));
        }

        #[test]
        fn canonical_payload_is_a_fixed_point(fields in json_fields()) {
            let text = canonical_payload(&fields);
            let again = object(parse_json_strict(&text).unwrap());
            prop_assert_eq!(canonical_payload(&again), text);
        }
    }
}
