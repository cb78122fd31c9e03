//! Input limits: the one table of bounds on everything a caller can send, and the checks that
//! enforce them where input enters the domain. A refusal names the field (as the caller wrote
//! it, e.g. `settlementAmounts` or `amount.quantity`) and the limit, and never reaches the log.
//!
//! Why each bound exists: every text field ends up in an event (the log), in a read-model row
//! (Postgres `text`, which refuses NUL, and btree indexes, which refuse keys over ~2.7 kB) and in
//! a NATS message (bounded by the server's `max_payload`). One oversized or NUL-bearing field
//! must be refused at the door, not discovered by a consumer that then cannot apply it.

/// Names: enterprises, users, partners, connections.
pub const MAX_NAME_BYTES: usize = 200;
/// External ids chosen by callers: a settlement's `externalId`, an allocation's
/// `clientExternalId`, a deposit's `externalId`. Indexed in read models, so well under the
/// btree key limit.
pub const MAX_EXTERNAL_ID_BYTES: usize = 255;
/// Free text: settlement, allocation and closure `notes`, dispute `reason`s.
pub const MAX_NOTES_BYTES: usize = 2_000;
/// Each text field of a connection's `connectionKey` (the client's credential at the partner:
/// `connectionToken`, `signature`, `apiKey`, `apiSecret`, `publicKey`), and the whole key when
/// written as a plain string. A key has at most two such fields (ADR 0011).
pub const MAX_CONNECTION_KEY_BYTES: usize = 1_024;
/// The `schema` name of a `connectionKey` object (the longest known is 17 bytes); checked before
/// an unknown name is echoed in a refusal.
pub const MAX_CONNECTION_KEY_SCHEMA_BYTES: usize = 64;
/// A signed request's `nonce`, in characters (checked with the signature rules, which the
/// signing helpers and verifiers outside the engine share).
pub use schemas::signing::NONCE_CHARS_MAX as MAX_NONCE_CHARS;
/// A webhook URL.
pub const MAX_URL_BYTES: usize = 2_000;
/// An `Idempotency-Key` header of the admin API.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 255;
/// A free-text filter value of a list query (e.g. one of `externalIds`).
pub const MAX_QUERY_VALUE_BYTES: usize = 255;
/// Values in one list-query filter (e.g. `settlementIds=a,b,c`).
pub const MAX_QUERY_VALUES: usize = 1_000;

/// Instruction lines of one settlement (party: connection × currency; broker: source ×
/// destination × currency), closure transfers joined at staging not counted. The largest
/// settlement the engine supports; its event stays far below `MAX_EVENT_BYTES`.
pub const MAX_SETTLEMENT_LINES: usize = 10_000;
/// Currencies in one amount map (`expectedTransfers`, `adjustedTransfers`, or the currencies of
/// one connection in `settlementAmounts`).
pub const MAX_CURRENCIES_PER_MAP: usize = 100;
/// Enterprises one user belongs to.
pub const MAX_USER_ENTERPRISES: usize = 100;
/// Active signing keys of one enterprise.
pub const MAX_ACTIVE_SIGNING_KEYS: usize = 32;

/// Nesting of a JSON body (objects and arrays). The deepest legitimate body, a broker
/// settlement's `settlementAmounts`, is 4 levels deep.
pub const MAX_JSON_DEPTH: usize = 16;
/// Body of an ordinary request: every route but the settlement routes.
pub const MAX_BODY_BYTES_DEFAULT: usize = 64 * 1024;
/// Body of a settlement route (v1, v2 and their signing twin): a `MAX_SETTLEMENT_LINES`
/// settlement with its signed payload (each line appears twice, in the body and in `payload`)
/// is about 1.5 MiB.
pub const MAX_BODY_BYTES_SETTLEMENT: usize = 4 * 1024 * 1024;
/// One encoded event, envelope and metadata included. The bus carries each event as one message
/// whose size the server bounds (`max_payload`, 8 MiB in the shipped configurations; NATS's
/// default is 1 MiB): an event over this is refused before the append, so the relay can never
/// meet one it cannot publish.
pub const MAX_EVENT_BYTES: usize = 4 * 1024 * 1024;

/// Events in one page of the audit feed as JSON (`GET /api/audit/v1/events`, the default `limit`
/// is `DEFAULT_AUDIT_PAGE_EVENTS`).
pub const MAX_AUDIT_PAGE_EVENTS: usize = 1_000;
/// The feed's default page.
pub const DEFAULT_AUDIT_PAGE_EVENTS: usize = 100;
/// Events in one page of the feed as JSON Lines (bulk export; about 1 KiB each).
pub const MAX_AUDIT_EXPORT_EVENTS: usize = 10_000;
/// Positions one feed request scans for events that pass its filters; a page may come back
/// short with `nextAfter` set, and the caller continues from there.
pub const MAX_AUDIT_SCAN_POSITIONS: u64 = 100_000;
/// Positions one `chain/verify` request re-walks (a larger range answers `nextFrom`).
pub const MAX_VERIFY_RANGE_POSITIONS: u64 = 1_000_000;
/// Entries in one page of the audit-read record (`GET /api/admin/v1/audit-reads`).
pub const MAX_AUDIT_READS_PAGE: usize = 1_000;

/// Why an input was refused; `field` is the caller's name for it (`externalId`, `notes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error("{field} must not be empty")]
    Empty { field: &'static str },
    #[error("{field} is longer than {max} bytes")]
    TooLong { field: &'static str, max: usize },
    #[error("{field} contains a control character (U+{code:04X})")]
    ControlCharacter { field: &'static str, code: u32 },
    #[error("{field} has more than {max} entries")]
    TooMany { field: &'static str, max: usize },
}

impl LimitError {
    /// The stable error code of the refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Empty { .. } => "field_empty",
            Self::TooLong { .. } => "field_too_long",
            Self::ControlCharacter { .. } => "field_control_character",
            Self::TooMany { .. } => "too_many_items",
        }
    }

    /// The field refused, as the caller named it.
    pub fn field(&self) -> &'static str {
        match self {
            Self::Empty { field }
            | Self::TooLong { field, .. }
            | Self::ControlCharacter { field, .. }
            | Self::TooMany { field, .. } => field,
        }
    }
}

/// Which characters a text field takes besides printable ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lines {
    /// One line: every control character is refused (identifiers, names, keys).
    One,
    /// Free text: tab and line breaks are allowed, every other control character is refused.
    Many,
}

/// Checks a required text field: not blank, at most `max` bytes, no control characters (NUL
/// included; for `Lines::Many` tab, LF and CR are allowed).
pub fn text(field: &'static str, value: &str, max: usize, lines: Lines) -> Result<(), LimitError> {
    if value.trim().is_empty() {
        return Err(LimitError::Empty { field });
    }
    bounded(field, value, max, lines)
}

/// As `text`, for a field that may be absent.
pub fn optional_text(
    field: &'static str,
    value: Option<&str>,
    max: usize,
    lines: Lines,
) -> Result<(), LimitError> {
    value.map_or(Ok(()), |v| text(field, v, max, lines))
}

/// Length and characters only: for values where blank is judged elsewhere.
pub fn bounded(
    field: &'static str,
    value: &str,
    max: usize,
    lines: Lines,
) -> Result<(), LimitError> {
    if value.len() > max {
        return Err(LimitError::TooLong { field, max });
    }
    let allowed = |c: char| lines == Lines::Many && matches!(c, '\t' | '\n' | '\r');
    match value.chars().find(|c| c.is_control() && !allowed(*c)) {
        Some(c) => Err(LimitError::ControlCharacter {
            field,
            code: c as u32,
        }),
        None => Ok(()),
    }
}

/// Checks the number of entries of a list or map.
pub fn count(field: &'static str, len: usize, max: usize) -> Result<(), LimitError> {
    if len > max {
        return Err(LimitError::TooMany { field, max });
    }
    Ok(())
}

/// The deepest nesting of objects and arrays in a JSON text, found without parsing it (so a
/// hostile body is measured before any recursive parser sees it). Brackets inside strings do
/// not count; the text need not be valid JSON.
pub fn json_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn text_refuses_blank_long_and_control_characters() {
        let one = Lines::One;
        assert_eq!(text("name", "desk-a", 10, one), Ok(()));
        assert_eq!(
            text("name", "  ", 10, one).unwrap_err().code(),
            "field_empty"
        );
        assert_eq!(
            text("name", "abcdefghijk", 10, one),
            Err(LimitError::TooLong {
                field: "name",
                max: 10
            })
        );
        assert_eq!(
            text("name", "a\u{0}b", 10, one),
            Err(LimitError::ControlCharacter {
                field: "name",
                code: 0
            })
        );
        for c in ['\u{1}', '\u{1b}', '\u{7f}', '\u{85}', '\n', '\t'] {
            assert!(text("name", &format!("a{c}"), 10, one).is_err(), "{c:?}");
        }
        assert_eq!(text("notes", "line 1\r\nline\t2", 20, Lines::Many), Ok(()));
        assert!(text("notes", "nul\u{0}", 20, Lines::Many).is_err());
        // Length is in bytes: four 3-byte characters are 12 bytes.
        assert!(text("name", "€€€€", 11, one).is_err());
        assert_eq!(optional_text("notes", None, 1, one), Ok(()));
    }

    #[test]
    fn errors_name_the_field_and_the_limit() {
        let e = text(
            "externalId",
            &"x".repeat(300),
            MAX_EXTERNAL_ID_BYTES,
            Lines::One,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "externalId is longer than 255 bytes");
        assert_eq!(e.field(), "externalId");
        assert_eq!(
            count("settlementAmounts", 10_001, MAX_SETTLEMENT_LINES)
                .unwrap_err()
                .to_string(),
            "settlementAmounts has more than 10000 entries"
        );
    }

    #[test]
    fn json_depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth(b"{}"), 1);
        assert_eq!(json_depth(br#"{"a":{"b":[1,{"c":2}]}}"#), 4);
        assert_eq!(json_depth(br#"{"a":"[[[[{{{{\"[["}"#), 1);
        assert_eq!(json_depth(&[b'['; 1000]), 1000);
        assert_eq!(json_depth(b"]]]]"), 0);
    }

    proptest! {
        #[test]
        fn json_depth_matches_the_parsers_nesting(value in arb_json()) {
            let text = serde_json::to_vec(&value).expect("encodes");
            prop_assert_eq!(json_depth(&text), nesting(&value));
        }

        #[test]
        fn text_never_panics(value in any::<String>(), max in 0usize..64) {
            let _ = text("f", &value, max, Lines::One);
            let _ = text("f", &value, max, Lines::Many);
        }
    }

    fn nesting(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Array(items) => 1 + items.iter().map(nesting).max().unwrap_or(0),
            serde_json::Value::Object(map) => 1 + map.values().map(nesting).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            "[\\[\\]{}\"\\\\a-z]{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(6, 64, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z\\[{\"]{0,3}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
