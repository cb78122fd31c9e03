//! A connection's `connectionKey` — what a client presents to prove its account at a partner —
//! in the shape the partner chose with its `connectionKeySchema` (BitGo's four schemas), the
//! one parser of its JSON form, its input limits, and the shapes' published layouts (ADR 0011).
//!
//! On the wire a key is an object tagged by `schema`:
//! `{"schema":"token","connectionToken":…}`,
//! `{"schema":"tokenAndSignature","connectionToken":…,"signature":…}`,
//! `{"schema":"apiKeyAndSecret","apiKey":…,"apiSecret":…}`,
//! `{"schema":"clearloop","connectionToken":…,"publicKey":…}` (BitGo does not publish the
//! ClearLoop fields; these are ours). A plain string is the shorthand of the first: requests
//! written before keys were objects keep working.
//!
//! Events store a key as postcard (variant index, then its fields in order); the order of the
//! variants below is therefore a published layout and never changes — new schemas go last.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::limits::{
    self, LimitError, Lines, MAX_CONNECTION_KEY_BYTES, MAX_CONNECTION_KEY_SCHEMA_BYTES,
};

/// The shape of connection key a partner takes (its `connectionKeySchema`, default `token`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ConnectionKeySchema {
    #[default]
    Token,
    TokenAndSignature,
    ApiKeyAndSecret,
    Clearloop,
}

impl ConnectionKeySchema {
    /// Every schema, in layout order.
    pub const ALL: [Self; 4] = [
        Self::Token,
        Self::TokenAndSignature,
        Self::ApiKeyAndSecret,
        Self::Clearloop,
    ];

    /// The name on the wire (`token`, `tokenAndSignature`, `apiKeyAndSecret`, `clearloop`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::TokenAndSignature => "tokenAndSignature",
            Self::ApiKeyAndSecret => "apiKeyAndSecret",
            Self::Clearloop => "clearloop",
        }
    }

    /// The schema named `name`, exactly as written on the wire (case matters).
    pub fn parse(name: &str) -> Result<Self, ConnectionKeyError> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == name)
            .ok_or_else(|| ConnectionKeyError::UnsupportedSchema(name.to_owned()))
    }

    /// As `parse`, for a name a caller sent in `field` (`connectionKey.schema`,
    /// `connectionKeySchema`): bounded like any text first, so a refusal never echoes a huge or
    /// control-bearing value.
    pub fn parse_field(field: &'static str, name: &str) -> Result<Self, ConnectionKeyError> {
        limits::text(field, name, MAX_CONNECTION_KEY_SCHEMA_BYTES, Lines::One)?;
        Self::parse(name)
    }

    /// The key's fields besides `schema`, as written on the wire, in layout order.
    pub const fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Token => &["connectionToken"],
            Self::TokenAndSignature => &["connectionToken", "signature"],
            Self::ApiKeyAndSecret => &["apiKey", "apiSecret"],
            Self::Clearloop => &["connectionToken", "publicKey"],
        }
    }

    /// The fields that are credentials a read must never show (ADR 0011).
    pub const fn secret_fields(self) -> &'static [&'static str] {
        match self {
            Self::ApiKeyAndSecret => &["apiSecret"],
            Self::Token | Self::TokenAndSignature | Self::Clearloop => &[],
        }
    }
}

impl std::fmt::Display for ConnectionKeySchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A connection key, in one of the partner-chosen shapes.
#[derive(Clone, PartialEq, Eq)]
pub enum ConnectionKey {
    Token {
        connection_token: String,
    },
    TokenAndSignature {
        connection_token: String,
        signature: String,
    },
    ApiKeyAndSecret {
        api_key: String,
        api_secret: String,
    },
    Clearloop {
        connection_token: String,
        public_key: String,
    },
}

/// Why a `connectionKey` was refused before any business rule looked at it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionKeyError {
    /// A text field breaks its limit (blank, too long, control character): 400.
    #[error(transparent)]
    Input(#[from] LimitError),
    /// Not a key's shape: not an object or string, a field missing, unknown or not a string
    /// (`field` is its path, e.g. `connectionKey.apiSecret`): 400.
    #[error("{field} {reason}")]
    Invalid { field: String, reason: &'static str },
    /// `schema` names no schema this engine knows: 422 (as BitGo answers it).
    #[error(
        "connection key schema `{0}` is not supported (supported: token, tokenAndSignature, \
         apiKeyAndSecret, clearloop)"
    )]
    UnsupportedSchema(String),
}

/// The path of a key field as the caller wrote it, for refusals.
fn path(field: &str) -> &'static str {
    match field {
        "connectionToken" => "connectionKey.connectionToken",
        "signature" => "connectionKey.signature",
        "apiKey" => "connectionKey.apiKey",
        "apiSecret" => "connectionKey.apiSecret",
        "publicKey" => "connectionKey.publicKey",
        _ => "connectionKey",
    }
}

fn invalid(field: impl Into<String>, reason: &'static str) -> ConnectionKeyError {
    ConnectionKeyError::Invalid {
        field: field.into(),
        reason,
    }
}

impl ConnectionKey {
    /// The `token` key of a plain-string `connectionKey`.
    pub fn token(connection_token: impl Into<String>) -> Self {
        Self::Token {
            connection_token: connection_token.into(),
        }
    }

    pub fn schema(&self) -> ConnectionKeySchema {
        match self {
            Self::Token { .. } => ConnectionKeySchema::Token,
            Self::TokenAndSignature { .. } => ConnectionKeySchema::TokenAndSignature,
            Self::ApiKeyAndSecret { .. } => ConnectionKeySchema::ApiKeyAndSecret,
            Self::Clearloop { .. } => ConnectionKeySchema::Clearloop,
        }
    }

    /// The key's text fields as `(wire name, value)`, in layout order.
    pub fn fields(&self) -> Vec<(&'static str, &str)> {
        match self {
            Self::Token { connection_token } => {
                vec![("connectionToken", connection_token.as_str())]
            }
            Self::TokenAndSignature {
                connection_token,
                signature,
            } => vec![
                ("connectionToken", connection_token.as_str()),
                ("signature", signature.as_str()),
            ],
            Self::ApiKeyAndSecret {
                api_key,
                api_secret,
            } => vec![
                ("apiKey", api_key.as_str()),
                ("apiSecret", api_secret.as_str()),
            ],
            Self::Clearloop {
                connection_token,
                public_key,
            } => vec![
                ("connectionToken", connection_token.as_str()),
                ("publicKey", public_key.as_str()),
            ],
        }
    }

    /// Every text field within its limit: not blank, at most `MAX_CONNECTION_KEY_BYTES`, one
    /// line without control characters. A refusal names the field (`connectionKey.apiSecret`).
    pub fn check(&self) -> Result<(), LimitError> {
        for (name, value) in self.fields() {
            limits::text(path(name), value, MAX_CONNECTION_KEY_BYTES, Lines::One)?;
        }
        Ok(())
    }

    /// Parses and checks `connectionKey` as a request wrote it: an object tagged by `schema`,
    /// or a string (the `token` shorthand, whose refusals name `connectionKey` itself).
    pub fn from_json(value: &Value) -> Result<Self, ConnectionKeyError> {
        match value {
            Value::String(token) => {
                limits::text("connectionKey", token, MAX_CONNECTION_KEY_BYTES, Lines::One)?;
                Ok(Self::token(token.clone()))
            }
            Value::Object(fields) => {
                let key = Self::from_object(fields)?;
                key.check()?;
                Ok(key)
            }
            _ => Err(invalid(
                "connectionKey",
                "must be an object with a `schema`, or a string (a token)",
            )),
        }
    }

    fn from_object(fields: &Map<String, Value>) -> Result<Self, ConnectionKeyError> {
        let schema = match fields.get("schema") {
            Some(Value::String(s)) => s,
            None => return Err(invalid("connectionKey.schema", "is missing")),
            Some(_) => return Err(invalid("connectionKey.schema", "must be a string")),
        };
        let schema = ConnectionKeySchema::parse_field("connectionKey.schema", schema)?;
        let names = schema.fields();
        if let Some(unknown) = fields
            .keys()
            .find(|k| *k != "schema" && !names.contains(&k.as_str()))
        {
            return Err(invalid(
                format!("connectionKey.{unknown}"),
                "is not a field of this schema",
            ));
        }
        let text = |name: &str| match fields.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            None => Err(invalid(path(name), "is missing")),
            Some(_) => Err(invalid(path(name), "must be a string")),
        };
        Ok(match schema {
            ConnectionKeySchema::Token => Self::Token {
                connection_token: text("connectionToken")?,
            },
            ConnectionKeySchema::TokenAndSignature => Self::TokenAndSignature {
                connection_token: text("connectionToken")?,
                signature: text("signature")?,
            },
            ConnectionKeySchema::ApiKeyAndSecret => Self::ApiKeyAndSecret {
                api_key: text("apiKey")?,
                api_secret: text("apiSecret")?,
            },
            ConnectionKeySchema::Clearloop => Self::Clearloop {
                connection_token: text("connectionToken")?,
                public_key: text("publicKey")?,
            },
        })
    }

    /// The key as the request wrote it (an object tagged by `schema`), secrets included: for
    /// the event log's JSON, never for a read.
    pub fn to_json(&self) -> Value {
        let mut object = Map::new();
        object.insert("schema".into(), self.schema().as_str().into());
        for (name, value) in self.fields() {
            object.insert(name.into(), value.into());
        }
        Value::Object(object)
    }

    /// What a read may show of the key: `schema` and its non-secret fields (no `apiSecret`).
    pub fn public_view(&self) -> Value {
        let mut view = self.to_json();
        if let Value::Object(object) = &mut view {
            for secret in self.schema().secret_fields() {
                object.remove(*secret);
            }
        }
        view
    }
}

impl From<&str> for ConnectionKey {
    /// A plain string is the `token` shorthand.
    fn from(token: &str) -> Self {
        Self::token(token)
    }
}

impl From<String> for ConnectionKey {
    /// A plain string is the `token` shorthand.
    fn from(token: String) -> Self {
        Self::token(token)
    }
}

/// Secrets stay out of logs: `Debug` shows the schema and the non-secret fields only.
impl std::fmt::Debug for ConnectionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ConnectionKey({})", self.public_view())
    }
}

/// The stored layout: postcard writes the variant index, then the fields in order. Pinned by
/// the golden corpus (`tests/golden/connection-keys.json`); never reorder.
#[derive(Serialize, Deserialize)]
enum Stored {
    Token {
        connection_token: String,
    },
    TokenAndSignature {
        connection_token: String,
        signature: String,
    },
    ApiKeyAndSecret {
        api_key: String,
        api_secret: String,
    },
    Clearloop {
        connection_token: String,
        public_key: String,
    },
}

impl From<Stored> for ConnectionKey {
    fn from(s: Stored) -> Self {
        match s {
            Stored::Token { connection_token } => Self::Token { connection_token },
            Stored::TokenAndSignature {
                connection_token,
                signature,
            } => Self::TokenAndSignature {
                connection_token,
                signature,
            },
            Stored::ApiKeyAndSecret {
                api_key,
                api_secret,
            } => Self::ApiKeyAndSecret {
                api_key,
                api_secret,
            },
            Stored::Clearloop {
                connection_token,
                public_key,
            } => Self::Clearloop {
                connection_token,
                public_key,
            },
        }
    }
}

impl From<ConnectionKey> for Stored {
    fn from(k: ConnectionKey) -> Self {
        match k {
            ConnectionKey::Token { connection_token } => Self::Token { connection_token },
            ConnectionKey::TokenAndSignature {
                connection_token,
                signature,
            } => Self::TokenAndSignature {
                connection_token,
                signature,
            },
            ConnectionKey::ApiKeyAndSecret {
                api_key,
                api_secret,
            } => Self::ApiKeyAndSecret {
                api_key,
                api_secret,
            },
            ConnectionKey::Clearloop {
                connection_token,
                public_key,
            } => Self::Clearloop {
                connection_token,
                public_key,
            },
        }
    }
}

/// Human-readable formats (JSON: the audit view, the golden files) get the wire object tagged
/// by `schema`; binary ones (postcard: the event log) get the stored layout.
impl Serialize for ConnectionKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            self.to_json().serialize(serializer)
        } else {
            Stored::from(self.clone()).serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for ConnectionKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let value = Value::deserialize(deserializer)?;
            Self::from_json(&value).map_err(serde::de::Error::custom)
        } else {
            Stored::deserialize(deserializer).map(Self::from)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn samples() -> Vec<(Value, ConnectionKey)> {
        vec![
            (
                json!({"schema": "token", "connectionToken": "t-1"}),
                ConnectionKey::token("t-1"),
            ),
            (
                json!({"schema": "tokenAndSignature", "connectionToken": "t-1", "signature": "s-1"}),
                ConnectionKey::TokenAndSignature {
                    connection_token: "t-1".into(),
                    signature: "s-1".into(),
                },
            ),
            (
                json!({"schema": "apiKeyAndSecret", "apiKey": "k-1", "apiSecret": "secret-1"}),
                ConnectionKey::ApiKeyAndSecret {
                    api_key: "k-1".into(),
                    api_secret: "secret-1".into(),
                },
            ),
            (
                json!({"schema": "clearloop", "connectionToken": "t-1", "publicKey": "pk-1"}),
                ConnectionKey::Clearloop {
                    connection_token: "t-1".into(),
                    public_key: "pk-1".into(),
                },
            ),
        ]
    }

    #[test]
    fn each_schema_parses_and_round_trips_through_json_and_postcard() {
        for (json, key) in samples() {
            assert_eq!(ConnectionKey::from_json(&json), Ok(key.clone()), "{json}");
            assert_eq!(key.to_json(), json);
            assert_eq!(serde_json::to_value(&key).unwrap(), json);
            assert_eq!(serde_json::from_value::<ConnectionKey>(json).unwrap(), key);
            let bytes = postcard::to_stdvec(&key).unwrap();
            assert_eq!(postcard::from_bytes::<ConnectionKey>(&bytes).unwrap(), key);
        }
    }

    #[test]
    fn a_plain_string_is_the_token_shorthand() {
        assert_eq!(
            ConnectionKey::from_json(&json!("acct-1")),
            Ok(ConnectionKey::token("acct-1"))
        );
        assert_eq!(
            ConnectionKey::from("acct-1").schema(),
            ConnectionKeySchema::Token
        );
        // Its refusals name `connectionKey` itself, as before keys were objects.
        assert_eq!(
            ConnectionKey::from_json(&json!("a\u{0}b")),
            Err(ConnectionKeyError::Input(LimitError::ControlCharacter {
                field: "connectionKey",
                code: 0
            }))
        );
        assert_eq!(
            ConnectionKey::from_json(&json!(" ")),
            Err(ConnectionKeyError::Input(LimitError::Empty {
                field: "connectionKey"
            }))
        );
    }

    #[test]
    fn every_field_of_every_schema_is_bounded_and_named() {
        for (json, _) in samples() {
            let schema = json["schema"].as_str().unwrap().to_owned();
            for field in ConnectionKeySchema::parse(&schema).unwrap().fields() {
                let named = format!("connectionKey.{field}");
                let with = |value: Value| {
                    let mut j = json.clone();
                    j[*field] = value;
                    ConnectionKey::from_json(&j).unwrap_err()
                };
                let long = with("x".repeat(MAX_CONNECTION_KEY_BYTES + 1).into());
                assert_eq!(
                    long,
                    ConnectionKeyError::Input(LimitError::TooLong {
                        field: path(field),
                        max: MAX_CONNECTION_KEY_BYTES
                    })
                );
                assert_eq!(path(field), named);
                for bad in ["a\u{0}b", "a\u{1b}[31m", "a\nb", "a\u{85}"] {
                    assert!(
                        matches!(with(bad.into()), ConnectionKeyError::Input(LimitError::ControlCharacter { field: f, .. }) if f == named),
                        "{schema}.{field}: {bad:?}"
                    );
                }
                assert_eq!(
                    with("  ".into()),
                    ConnectionKeyError::Input(LimitError::Empty { field: path(field) })
                );
                assert_eq!(with(json!(7)), invalid(named.clone(), "must be a string"));
                let mut missing = json.clone();
                missing.as_object_mut().unwrap().remove(*field);
                assert_eq!(
                    ConnectionKey::from_json(&missing),
                    Err(invalid(named, "is missing"))
                );
                // At the limit exactly is fine.
                let at_limit = with_ok(&json, field, "y".repeat(MAX_CONNECTION_KEY_BYTES));
                assert!(at_limit.is_ok(), "{schema}.{field} at the limit");
            }
        }
    }

    fn with_ok(
        json: &Value,
        field: &str,
        value: String,
    ) -> Result<ConnectionKey, ConnectionKeyError> {
        let mut j = json.clone();
        j[field] = value.into();
        ConnectionKey::from_json(&j)
    }

    #[test]
    fn shapes_that_are_no_key_are_refused() {
        assert_eq!(
            ConnectionKey::from_json(&json!({"schema": "ssh"})),
            Err(ConnectionKeyError::UnsupportedSchema("ssh".into()))
        );
        assert_eq!(
            ConnectionKey::from_json(&json!({"schema": "Token", "connectionToken": "t"})),
            Err(ConnectionKeyError::UnsupportedSchema("Token".into())),
            "schema names are exact"
        );
        assert_eq!(
            ConnectionKey::from_json(&json!({"connectionToken": "t"})),
            Err(invalid("connectionKey.schema", "is missing"))
        );
        assert_eq!(
            ConnectionKey::from_json(&json!({"schema": 1})),
            Err(invalid("connectionKey.schema", "must be a string"))
        );
        assert!(matches!(
            ConnectionKey::from_json(
                &json!({"schema": "x".repeat(MAX_CONNECTION_KEY_SCHEMA_BYTES + 1)})
            ),
            Err(ConnectionKeyError::Input(LimitError::TooLong {
                field: "connectionKey.schema",
                ..
            }))
        ));
        assert_eq!(
            ConnectionKey::from_json(
                &json!({"schema": "token", "connectionToken": "t", "apiSecret": "s"})
            ),
            Err(invalid(
                "connectionKey.apiSecret",
                "is not a field of this schema"
            ))
        );
        for not_a_key in [json!(null), json!(1), json!(["t"]), json!(true)] {
            assert!(
                matches!(ConnectionKey::from_json(&not_a_key), Err(ConnectionKeyError::Invalid { ref field, .. }) if field == "connectionKey"),
                "{not_a_key}"
            );
        }
    }

    #[test]
    fn secrets_stay_out_of_views_and_debug() {
        let key = ConnectionKey::ApiKeyAndSecret {
            api_key: "k-1".into(),
            api_secret: "secret-1".into(),
        };
        assert_eq!(
            key.public_view(),
            json!({"schema": "apiKeyAndSecret", "apiKey": "k-1"})
        );
        assert!(!format!("{key:?}").contains("secret-1"));
        assert_eq!(
            ConnectionKey::token("t").public_view(),
            json!({"schema": "token", "connectionToken": "t"})
        );
    }

    #[test]
    fn schemas_have_stable_names() {
        for schema in ConnectionKeySchema::ALL {
            assert_eq!(ConnectionKeySchema::parse(schema.as_str()), Ok(schema));
            assert_eq!(
                serde_json::to_value(schema).unwrap(),
                json!(schema.as_str())
            );
        }
        assert_eq!(ConnectionKeySchema::default(), ConnectionKeySchema::Token);
    }
}
