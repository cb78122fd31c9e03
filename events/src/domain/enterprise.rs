//! The enterprise aggregate: a tenant with its OES licence flag, its registered Ed25519 signing
//! keys (docs/api/signatures.md) and the URL its webhook notifications go to. Keys arrive already
//! parsed and checked (not weak) by the signing rules; webhook URLs are checked here.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::event::{DomainEvent, Timestamp};
use super::webhook_url::{DestinationRefusal, WebhookAllowList, WebhookHost};

use super::limits::{self, LimitError, Lines, MAX_NAME_BYTES};

/// Most active signing keys per enterprise.
pub const SIGNING_KEYS_ACTIVE_MAX: usize = limits::MAX_ACTIVE_SIGNING_KEYS;
/// Longest webhook URL, in bytes.
pub const WEBHOOK_URL_LEN_MAX: usize = 2000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterpriseCreated {
    pub enterprise_id: Uuid,
    pub name: String,
    pub oes_license: bool,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterpriseLicenseSet {
    pub enterprise_id: Uuid,
    pub oes_license: bool,
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRegistered {
    pub enterprise_id: Uuid,
    pub key_id: Uuid,
    pub public_key: [u8; 32],
    pub at: Timestamp,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRevoked {
    pub enterprise_id: Uuid,
    pub key_id: Uuid,
    pub at: Timestamp,
}

/// The enterprise's webhook URL was set (`Some`) or cleared (`None`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookConfigured {
    pub enterprise_id: Uuid,
    pub url: Option<String>,
    pub at: Timestamp,
}

/// One registered key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKey {
    pub public_key: [u8; 32],
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnterpriseRecord {
    pub id: Uuid,
    pub name: String,
    pub oes_license: bool,
    pub keys: BTreeMap<Uuid, SigningKey>,
    /// Where notifications are delivered, if anywhere.
    pub webhook_url: Option<String>,
    /// When the webhook URL was last set or cleared; `None` if it never was.
    pub webhook_updated_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Enterprise {
    #[default]
    Absent,
    Active(EnterpriseRecord),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnterpriseCommand {
    Create {
        enterprise_id: Uuid,
        name: String,
        oes_license: bool,
    },
    SetLicense {
        oes_license: bool,
    },
    RegisterKey {
        key_id: Uuid,
        public_key: [u8; 32],
    },
    RevokeKey {
        key_id: Uuid,
    },
}

/// Every way an enterprise command can be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EnterpriseRejection {
    #[error("the enterprise already exists")]
    AlreadyExists,
    #[error("the enterprise does not exist")]
    NotFound,
    #[error(transparent)]
    Input(#[from] LimitError),
    #[error("this public key is already registered and active")]
    KeyAlreadyRegistered,
    #[error("the enterprise already has {SIGNING_KEYS_ACTIVE_MAX} active keys")]
    TooManyKeys,
    #[error("the key does not exist")]
    KeyNotFound,
}

impl Enterprise {
    pub fn record(&self) -> Option<&EnterpriseRecord> {
        match self {
            Self::Absent => None,
            Self::Active(record) => Some(record),
        }
    }

    /// The keys that verify signatures now.
    pub fn active_keys(&self) -> impl Iterator<Item = (Uuid, [u8; 32])> + '_ {
        self.record()
            .into_iter()
            .flat_map(|r| r.keys.iter())
            .filter(|(_, k)| k.revoked_at.is_none())
            .map(|(id, k)| (*id, k.public_key))
    }

    pub fn evolve(self, event: &DomainEvent) -> Self {
        match (self, event) {
            (Self::Absent, DomainEvent::EnterpriseCreated(e)) => Self::Active(EnterpriseRecord {
                id: e.enterprise_id,
                name: e.name.clone(),
                oes_license: e.oes_license,
                keys: BTreeMap::new(),
                webhook_url: None,
                webhook_updated_at: None,
                created_at: e.at,
                updated_at: e.at,
            }),
            (Self::Active(mut r), DomainEvent::EnterpriseLicenseSet(e)) => {
                r.oes_license = e.oes_license;
                r.updated_at = e.at;
                Self::Active(r)
            }
            (Self::Active(mut r), DomainEvent::SigningKeyRegistered(e)) => {
                r.keys.insert(
                    e.key_id,
                    SigningKey {
                        public_key: e.public_key,
                        created_at: e.at,
                        revoked_at: None,
                    },
                );
                Self::Active(r)
            }
            (Self::Active(mut r), DomainEvent::SigningKeyRevoked(e)) => {
                if let Some(key) = r.keys.get_mut(&e.key_id) {
                    key.revoked_at = Some(e.at);
                }
                Self::Active(r)
            }
            (Self::Active(mut r), DomainEvent::WebhookConfigured(e)) => {
                r.webhook_url = e.url.clone();
                r.webhook_updated_at = Some(e.at);
                Self::Active(r)
            }
            (state, _) => state,
        }
    }

    pub fn decide(
        &self,
        command: EnterpriseCommand,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, EnterpriseRejection> {
        let record = match (self, &command) {
            (Self::Absent, EnterpriseCommand::Create { .. }) => None,
            (Self::Active(_), EnterpriseCommand::Create { .. }) => {
                return Err(EnterpriseRejection::AlreadyExists)
            }
            (Self::Absent, _) => return Err(EnterpriseRejection::NotFound),
            (Self::Active(record), _) => Some(record),
        };
        match (record, command) {
            (
                None,
                EnterpriseCommand::Create {
                    enterprise_id,
                    name,
                    oes_license,
                },
            ) => {
                limits::text("name", &name, MAX_NAME_BYTES, Lines::One)?;
                let name = name.trim().to_owned();
                Ok(vec![EnterpriseCreated {
                    enterprise_id,
                    name,
                    oes_license,
                    at: now,
                }
                .into()])
            }
            (Some(r), EnterpriseCommand::SetLicense { oes_license }) => {
                if r.oes_license == oes_license {
                    return Ok(vec![]);
                }
                Ok(vec![EnterpriseLicenseSet {
                    enterprise_id: r.id,
                    oes_license,
                    at: now,
                }
                .into()])
            }
            (Some(r), EnterpriseCommand::RegisterKey { key_id, public_key }) => {
                if self.active_keys().any(|(_, k)| k == public_key) {
                    return Err(EnterpriseRejection::KeyAlreadyRegistered);
                }
                if self.active_keys().count() >= SIGNING_KEYS_ACTIVE_MAX {
                    return Err(EnterpriseRejection::TooManyKeys);
                }
                Ok(vec![SigningKeyRegistered {
                    enterprise_id: r.id,
                    key_id,
                    public_key,
                    at: now,
                }
                .into()])
            }
            (Some(r), EnterpriseCommand::RevokeKey { key_id }) => match r.keys.get(&key_id) {
                None => Err(EnterpriseRejection::KeyNotFound),
                Some(key) if key.revoked_at.is_some() => Ok(vec![]),
                Some(_) => Ok(vec![SigningKeyRevoked {
                    enterprise_id: r.id,
                    key_id,
                    at: now,
                }
                .into()]),
            },
            // Unreachable combinations were answered above.
            _ => Err(EnterpriseRejection::NotFound),
        }
    }
}

/// Why a webhook URL was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookUrlError {
    #[error("the webhook URL is longer than {WEBHOOK_URL_LEN_MAX} bytes")]
    TooLong,
    #[error("the webhook URL must start with http:// or https://")]
    NotHttp,
    #[error("the webhook URL may hold only visible ASCII characters (percent-encode the rest)")]
    BadCharacter,
    #[error("the webhook URL has no host")]
    NoHost,
    #[error("the webhook URL's host is not a valid host name or IP literal")]
    BadHost,
    #[error("the webhook URL's port is not a number from 1 to 65535")]
    BadPort,
    #[error("the webhook URL may not carry credentials (user:password@)")]
    Credentials,
    #[error("the webhook URL may not carry a fragment (#...): it is never sent")]
    Fragment,
    #[error("the webhook URL has a '%' not followed by two hex digits")]
    BadEscape,
}

/// Every way configuring a webhook can be refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WebhookRejection {
    #[error("the enterprise does not exist")]
    NotFound,
    #[error(transparent)]
    Url(#[from] WebhookUrlError),
    /// The host is an internal destination (SSRF) the operator's allow-list does not name.
    #[error("the webhook URL points at {0}, which only the operator's allow-list can permit")]
    Destination(#[from] DestinationRefusal),
}

/// Checks a webhook URL: `http://` or `https://`, a host (name, IPv4 or `[IPv6]`), an optional
/// port, then any path and query of visible ASCII with valid percent escapes. The scheme and
/// host are kept as written; senders compare URLs byte for byte.
pub fn parse_webhook_url(url: &str) -> Result<&str, WebhookUrlError> {
    if url.len() > WEBHOOK_URL_LEN_MAX {
        return Err(WebhookUrlError::TooLong);
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WebhookUrlError::BadCharacter);
    }
    let lower = url.to_ascii_lowercase();
    let scheme_len = ["https://", "http://"]
        .iter()
        .find(|s| lower.starts_with(**s))
        .map(|s| s.len())
        .ok_or(WebhookUrlError::NotHttp)?;
    let rest = &url[scheme_len..];
    if rest.contains('#') {
        return Err(WebhookUrlError::Fragment);
    }
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if authority.contains('@') {
        return Err(WebhookUrlError::Credentials);
    }
    check_authority(authority)?;
    check_escapes(tail)?;
    Ok(url)
}

fn check_authority(authority: &str) -> Result<(), WebhookUrlError> {
    if authority.is_empty() {
        return Err(WebhookUrlError::NoHost);
    }
    let (host, port) = if let Some(literal) = authority.strip_prefix('[') {
        let (inside, after) = literal.split_once(']').ok_or(WebhookUrlError::BadHost)?;
        let ipv6 = !inside.is_empty()
            && inside.contains(':')
            && inside
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        if !ipv6 {
            return Err(WebhookUrlError::BadHost);
        }
        match after {
            "" => (inside, None),
            _ => (
                inside,
                Some(after.strip_prefix(':').ok_or(WebhookUrlError::BadHost)?),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(WebhookUrlError::NoHost);
    }
    // A name may end in one dot (fully qualified); IP literals were checked above.
    let name = host.strip_suffix('.').unwrap_or(host);
    let labels_ok = name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if !authority.starts_with('[') && !labels_ok {
        return Err(WebhookUrlError::BadHost);
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65_535).contains(&p));
        if !valid {
            return Err(WebhookUrlError::BadPort);
        }
    }
    Ok(())
}

fn check_escapes(text: &str) -> Result<(), WebhookUrlError> {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or(WebhookUrlError::BadEscape)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return Err(WebhookUrlError::BadEscape);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

impl Enterprise {
    /// Sets (`Some`) or clears (`None`) the webhook URL. Setting the URL it already has, or
    /// clearing an unset one, records nothing. A host that is an internal destination
    /// (`webhook_url`) is refused unless `allow` names it.
    pub fn decide_webhook(
        &self,
        url: Option<&str>,
        allow: &WebhookAllowList,
        now: Timestamp,
    ) -> Result<Vec<DomainEvent>, WebhookRejection> {
        let record = self.record().ok_or(WebhookRejection::NotFound)?;
        let url = url.map(parse_webhook_url).transpose()?;
        if let Some(url) = url {
            allow.check_host(&WebhookHost::of_url(url)?)?;
        }
        if record.webhook_url.as_deref() == url {
            return Ok(vec![]);
        }
        Ok(vec![WebhookConfigured {
            enterprise_id: record.id,
            url: url.map(str::to_owned),
            at: now,
        }
        .into()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Uuid = Uuid::from_u128(7);
    const KEY: Uuid = Uuid::from_u128(8);
    const NOW: Timestamp = Timestamp(1_700_000_000_000_000);

    fn given(events: &[DomainEvent]) -> Enterprise {
        events.iter().fold(Enterprise::Absent, Enterprise::evolve)
    }

    fn check(
        history: &[DomainEvent],
        command: EnterpriseCommand,
        expected: Result<Vec<DomainEvent>, EnterpriseRejection>,
    ) {
        assert_eq!(given(history).decide(command, NOW), expected);
    }

    fn created() -> DomainEvent {
        EnterpriseCreated {
            enterprise_id: ID,
            name: "Acme".into(),
            oes_license: true,
            at: NOW,
        }
        .into()
    }

    fn create(name: &str) -> EnterpriseCommand {
        EnterpriseCommand::Create {
            enterprise_id: ID,
            name: name.into(),
            oes_license: true,
        }
    }

    fn key_registered() -> DomainEvent {
        SigningKeyRegistered {
            enterprise_id: ID,
            key_id: KEY,
            public_key: [3; 32],
            at: NOW,
        }
        .into()
    }

    fn key_revoked() -> DomainEvent {
        SigningKeyRevoked {
            enterprise_id: ID,
            key_id: KEY,
            at: NOW,
        }
        .into()
    }

    #[test]
    fn decides() {
        use EnterpriseCommand::*;
        check(&[], create(" Acme "), Ok(vec![created()]));
        let refused = |e: LimitError| Err(EnterpriseRejection::Input(e));
        check(
            &[],
            create("  "),
            refused(LimitError::Empty { field: "name" }),
        );
        check(
            &[],
            create(&"x".repeat(201)),
            refused(LimitError::TooLong {
                field: "name",
                max: MAX_NAME_BYTES,
            }),
        );
        check(
            &[],
            create("Acme\u{0}"),
            refused(LimitError::ControlCharacter {
                field: "name",
                code: 0,
            }),
        );
        check(
            &[created()],
            create("Acme"),
            Err(EnterpriseRejection::AlreadyExists),
        );
        check(
            &[],
            SetLicense { oes_license: true },
            Err(EnterpriseRejection::NotFound),
        );
        check(&[created()], SetLicense { oes_license: true }, Ok(vec![]));
        check(
            &[created()],
            SetLicense { oes_license: false },
            Ok(vec![EnterpriseLicenseSet {
                enterprise_id: ID,
                oes_license: false,
                at: NOW,
            }
            .into()]),
        );
        check(
            &[created()],
            RegisterKey {
                key_id: KEY,
                public_key: [3; 32],
            },
            Ok(vec![key_registered()]),
        );
        check(
            &[created(), key_registered()],
            RegisterKey {
                key_id: Uuid::from_u128(9),
                public_key: [3; 32],
            },
            Err(EnterpriseRejection::KeyAlreadyRegistered),
        );
        check(
            &[created()],
            RevokeKey { key_id: KEY },
            Err(EnterpriseRejection::KeyNotFound),
        );
        check(
            &[created(), key_registered()],
            RevokeKey { key_id: KEY },
            Ok(vec![key_revoked()]),
        );
        check(
            &[created(), key_registered(), key_revoked()],
            RevokeKey { key_id: KEY },
            Ok(vec![]),
        );
        // A revoked key's bytes may be registered again under a new id.
        let again = RegisterKey {
            key_id: Uuid::from_u128(9),
            public_key: [3; 32],
        };
        assert!(given(&[created(), key_registered(), key_revoked()])
            .decide(again, NOW)
            .is_ok());
    }

    fn webhook_set(url: Option<&str>) -> DomainEvent {
        WebhookConfigured {
            enterprise_id: ID,
            url: url.map(str::to_owned),
            at: NOW,
        }
        .into()
    }

    #[test]
    fn decides_webhooks() {
        let check = |history: &[DomainEvent], url: Option<&str>, expected| {
            let allow = WebhookAllowList::parse("127.0.0.1").expect("allow-list");
            assert_eq!(
                given(history).decide_webhook(url, &allow, NOW),
                expected,
                "{url:?}"
            );
        };
        let hook = "https://hooks.example.com/settle?tenant=7";
        check(&[], Some(hook), Err(WebhookRejection::NotFound));
        check(&[created()], Some(hook), Ok(vec![webhook_set(Some(hook))]));
        check(
            &[created(), webhook_set(Some(hook))],
            Some(hook),
            Ok(vec![]),
        );
        let other = "http://127.0.0.1:9000/in";
        check(
            &[created(), webhook_set(Some(hook))],
            Some(other),
            Ok(vec![webhook_set(Some(other))]),
        );
        check(
            &[created(), webhook_set(Some(hook))],
            None,
            Ok(vec![webhook_set(None)]),
        );
        check(&[created()], None, Ok(vec![]));
        check(
            &[created(), webhook_set(Some(hook)), webhook_set(None)],
            None,
            Ok(vec![]),
        );
        check(
            &[created()],
            Some("ftp://example.com/"),
            Err(WebhookRejection::Url(WebhookUrlError::NotHttp)),
        );
        // Internal destinations need the allow-list (here: 127.0.0.1 only).
        for (internal, refusal) in [
            ("http://127.0.0.2/in", DestinationRefusal::Loopback),
            ("http://localhost:9000/in", DestinationRefusal::Loopback),
            (
                "http://169.254.169.254/latest",
                DestinationRefusal::Metadata,
            ),
            ("https://10.0.0.1/", DestinationRefusal::Private),
        ] {
            check(
                &[created()],
                Some(internal),
                Err(WebhookRejection::Destination(refusal)),
            );
        }
        let state = given(&[created(), webhook_set(Some(hook))]);
        let record = state.record().expect("created");
        assert_eq!(
            (record.webhook_url.as_deref(), record.webhook_updated_at),
            (Some(hook), Some(NOW))
        );
    }

    #[test]
    fn checks_webhook_urls() {
        use WebhookUrlError::*;
        let long = format!("https://example.com/{}", "a".repeat(WEBHOOK_URL_LEN_MAX));
        let cases: &[(&str, Result<(), WebhookUrlError>)] = &[
            ("https://example.com", Ok(())),
            ("HTTPS://Example.COM/a/b?c=d&e=%2F", Ok(())),
            ("http://localhost:8080/hook", Ok(())),
            ("http://10.0.0.1/", Ok(())),
            ("http://[::1]:9000/x", Ok(())),
            ("https://example.com./x", Ok(())),
            ("https://my_host.internal?x", Ok(())),
            (&long, Err(TooLong)),
            ("example.com/hook", Err(NotHttp)),
            ("mailto:ops@example.com", Err(NotHttp)),
            ("https://exa mple.com", Err(BadCharacter)),
            ("https://exämple.com", Err(BadCharacter)),
            ("https://", Err(NoHost)),
            ("https:///path", Err(NoHost)),
            ("https://:80/", Err(NoHost)),
            ("https://a..b/", Err(BadHost)),
            ("https://-a.com/", Err(BadHost)),
            ("https://[zz]/", Err(BadHost)),
            ("https://[::1/", Err(BadHost)),
            ("https://example.com:0/", Err(BadPort)),
            ("https://example.com:65536/", Err(BadPort)),
            ("https://example.com:/", Err(BadPort)),
            ("https://example.com:8a/", Err(BadPort)),
            ("https://user:pw@example.com/", Err(Credentials)),
            ("https://example.com/#top", Err(Fragment)),
            ("https://example.com/%zz", Err(BadEscape)),
            ("https://example.com/%4", Err(BadEscape)),
        ];
        for (url, expected) in cases {
            assert_eq!(parse_webhook_url(url).map(|_| ()), *expected, "{url}");
        }
        let just_fits = format!("https://e.com/{}", "a".repeat(WEBHOOK_URL_LEN_MAX - 14));
        assert_eq!(just_fits.len(), WEBHOOK_URL_LEN_MAX);
        assert!(parse_webhook_url(&just_fits).is_ok());
    }

    #[test]
    fn only_unrevoked_keys_are_active() {
        assert_eq!(
            given(&[created(), key_registered()]).active_keys().count(),
            1
        );
        assert_eq!(
            given(&[created(), key_registered(), key_revoked()])
                .active_keys()
                .count(),
            0
        );
    }
}
