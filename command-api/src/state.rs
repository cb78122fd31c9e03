//! What every handler shares: the event store, the read-model pool, the currency table, the
//! admin token's digest, the webhook settings, and how long a read may wait for its projection.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use events::domain::money::CurrencyTable;
use events::domain::webhook_url::WebhookAllowList;
use events::store::EventStore;
use schemas::signing::webhook::{KeySource, WebhookSigner, DEVELOPMENT_ENV, WEBHOOK_SEED_ENV};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

#[derive(Clone)]
pub struct AppState {
    pub store: EventStore,
    pub pool: PgPool,
    pub currencies: Arc<CurrencyTable>,
    /// SHA-256 of the admin token; `None` disables the admin API.
    pub admin_token_hash: Option<[u8; 32]>,
    /// The longest a read with `X-Min-Position` waits for its projection.
    pub read_wait_max: Duration,
    pub webhooks: Arc<WebhookSettings>,
    pub audit: Arc<crate::http::audit::AuditSettings>,
}

/// What the webhook routes need: the signing key's public half (the finalizer signs) and the
/// operator's allow-list of internal destinations.
#[derive(Clone, Debug, Default)]
pub struct WebhookSettings {
    /// `None` only before `with_webhooks` (the public-key route then answers 500).
    pub public_key: Option<[u8; 32]>,
    pub allow: WebhookAllowList,
}

impl WebhookSettings {
    /// From `SETTLE_WEBHOOK_SEED`, `SETTLE_WEBHOOK_ALLOW` and development mode: refuses a
    /// missing seed outside development mode, an invalid seed and an invalid allow-list.
    pub fn from_config(
        seed: Option<&str>,
        allow: Option<&str>,
        development: bool,
    ) -> anyhow::Result<Self> {
        let (signer, source) = WebhookSigner::from_config(seed, development)
            .with_context(|| format!("{WEBHOOK_SEED_ENV} is missing or invalid"))?;
        if source == KeySource::Development {
            tracing::warn!(
                public_key = %signer.public_key_hex(),
                "DEVELOPMENT MODE ({DEVELOPMENT_ENV}): {WEBHOOK_SEED_ENV} is not set, so webhooks \
                 are signed with the PUBLIC development key, which anyone can rebuild from the \
                 source. Never run this way outside a local stack or tests."
            );
        }
        let allow = WebhookAllowList::parse(allow.unwrap_or_default())
            .context("SETTLE_WEBHOOK_ALLOW is invalid")?;
        Ok(Self {
            public_key: Some(signer.public_key()),
            allow,
        })
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("read_wait_max", &self.read_wait_max)
            .finish()
    }
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl AppState {
    pub fn new(pool: PgPool, currencies: CurrencyTable, admin_token: Option<&str>) -> Self {
        Self {
            store: EventStore::new(pool.clone()),
            pool,
            currencies: Arc::new(currencies),
            admin_token_hash: admin_token
                .filter(|t| !t.is_empty())
                .map(|t| sha256(t.as_bytes())),
            read_wait_max: Duration::from_secs(2),
            webhooks: Arc::default(),
            audit: Arc::default(),
        }
    }

    pub fn with_audit(mut self, audit: crate::http::audit::AuditSettings) -> Self {
        self.audit = Arc::new(audit);
        self
    }

    pub fn with_webhooks(mut self, webhooks: WebhookSettings) -> Self {
        self.webhooks = Arc::new(webhooks);
        self
    }
}
