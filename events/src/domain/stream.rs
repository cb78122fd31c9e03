//! Stream names: `category` + `id`, both restricted to characters that are safe as NATS subject
//! tokens and SQL text, so a name can never smuggle a wildcard or separator into a subject.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest category or id, in bytes.
pub const STREAM_TOKEN_LEN_MAX: usize = 64;

/// The name of one event stream, e.g. `settlement` / `0b1c…`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawStreamName")]
pub struct StreamName {
    category: String,
    id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamNameError {
    #[error("stream {0} is empty")]
    Empty(&'static str),
    #[error("stream {0} is longer than {STREAM_TOKEN_LEN_MAX} bytes")]
    TooLong(&'static str),
    #[error("stream {0} may hold only ASCII letters, digits, '-' and '_'")]
    BadCharacter(&'static str),
}

fn check_token(what: &'static str, token: &str) -> Result<(), StreamNameError> {
    if token.is_empty() {
        return Err(StreamNameError::Empty(what));
    }
    if token.len() > STREAM_TOKEN_LEN_MAX {
        return Err(StreamNameError::TooLong(what));
    }
    if !token
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(StreamNameError::BadCharacter(what));
    }
    Ok(())
}

/// What arrives on the wire, checked by `TryFrom` before it becomes a `StreamName`.
#[derive(Deserialize)]
struct RawStreamName {
    category: String,
    id: String,
}

impl TryFrom<RawStreamName> for StreamName {
    type Error = StreamNameError;

    fn try_from(raw: RawStreamName) -> Result<Self, Self::Error> {
        Self::parse(&raw.category, &raw.id)
    }
}

impl StreamName {
    pub fn parse(category: &str, id: &str) -> Result<Self, StreamNameError> {
        check_token("category", category)?;
        check_token("id", id)?;
        Ok(Self {
            category: category.to_owned(),
            id: id.to_owned(),
        })
    }

    /// A stream keyed by a UUID, the common case (`enterprise`/`<uuid>`).
    pub fn for_uuid(category: &str, id: uuid::Uuid) -> Result<Self, StreamNameError> {
        Self::parse(category, &id.to_string())
    }

    pub fn category(&self) -> &str {
        &self.category
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A stream named by a UUID; a UUID's text is always a valid stream id.
pub fn named(category: &'static str, id: uuid::Uuid) -> StreamName {
    StreamName {
        category: category.to_owned(),
        id: id.to_string(),
    }
}

/// The stream of each aggregate, by the id that names it.
pub mod of {
    use super::{named, StreamName};
    use crate::domain::client::client_id_of;
    use uuid::Uuid;

    pub fn user(user_id: Uuid) -> StreamName {
        named("user", user_id)
    }
    pub fn enterprise(enterprise_id: Uuid) -> StreamName {
        named("enterprise", enterprise_id)
    }
    pub fn partner(partner_id: Uuid) -> StreamName {
        named("partner", partner_id)
    }
    /// The client record of an enterprise.
    pub fn client(enterprise_id: Uuid) -> StreamName {
        named("client", client_id_of(enterprise_id))
    }
    /// The custody account of an enterprise.
    pub fn custody(enterprise_id: Uuid) -> StreamName {
        named("custody", enterprise_id)
    }
    pub fn connection(connection_id: Uuid) -> StreamName {
        named("connection", connection_id)
    }
    pub fn settlement(settlement_id: Uuid) -> StreamName {
        named("settlement", settlement_id)
    }
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.category, self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_subject_safe_tokens_only() {
        assert!(StreamName::parse("settlement", "abc-DEF_123").is_ok());
        assert_eq!(
            StreamName::parse("", "x"),
            Err(StreamNameError::Empty("category"))
        );
        assert_eq!(
            StreamName::parse("a", ""),
            Err(StreamNameError::Empty("id"))
        );
        for bad in ["a.b", "a*", ">", "a b", "é"] {
            assert_eq!(
                StreamName::parse("c", bad),
                Err(StreamNameError::BadCharacter("id")),
                "{bad}"
            );
        }
        let bad = postcard::to_stdvec(&("a", "b.c")).unwrap();
        assert!(
            postcard::from_bytes::<StreamName>(&bad).is_err(),
            "decoding checks too"
        );
        let long = "x".repeat(STREAM_TOKEN_LEN_MAX + 1);
        assert_eq!(
            StreamName::parse(&long, "x"),
            Err(StreamNameError::TooLong("category"))
        );
    }
}
