//! What every handler shares: the event store, the read-model pool, the currency table, the
//! admin token's digest, and how long a read may wait for its projection.

use std::sync::Arc;
use std::time::Duration;

use events::domain::money::CurrencyTable;
use events::store::EventStore;
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
        }
    }
}
