//! Query routes' reads from the read models, rendered as SPEC §5 JSON by Postgres itself
//! (`json_build_object`), with the SPEC's pagination (`pageSize`, `pageNumber`, `cursor`).

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::error::ApiError;

/// Default and largest page.
const PAGE_SIZE_DEFAULT: u32 = 100;
const PAGE_SIZE_MAX: u32 = 1_000;

/// RFC 3339 UTC with microseconds, as `views::time` writes it.
const TIME: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PageQuery {
    page_size: Option<u32>,
    page_number: Option<u32>,
    cursor: Option<String>,
}

/// A resolved page: how many rows, from which offset.
#[derive(Clone, Copy, Debug)]
pub struct Page {
    pub size: u32,
    pub offset: u64,
}

impl PageQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        let size = self.page_size.unwrap_or(PAGE_SIZE_DEFAULT);
        if size == 0 || size > PAGE_SIZE_MAX {
            return Err(ApiError::bad_request(
                "invalid_page",
                format!("pageSize must be 1 to {PAGE_SIZE_MAX}"),
            ));
        }
        let offset = match &self.cursor {
            Some(cursor) => decode_cursor(cursor).ok_or_else(|| {
                ApiError::bad_request("invalid_cursor", "cursor is not one this API issued")
            })?,
            None => u64::from(self.page_number.unwrap_or(0)) * u64::from(size),
        };
        Ok(Page { size, offset })
    }
}

fn encode_cursor(offset: u64) -> String {
    hex::encode(format!("o{offset}"))
}

fn decode_cursor(cursor: &str) -> Option<u64> {
    let text = String::from_utf8(hex::decode(cursor).ok()?).ok()?;
    // An offset beyond what Postgres takes is not a cursor this API issued.
    text.strip_prefix('o')?
        .parse()
        .ok()
        .filter(|offset| *offset <= i64::MAX as u64)
}

/// `{plural: [...], nextCursor}`: a cursor while the page came back full.
pub fn list(plural: &str, items: Vec<Value>, page: Page) -> Value {
    let next = (items.len() as u64 == u64::from(page.size))
        .then(|| encode_cursor(page.offset + u64::from(page.size)));
    json!({ plural: items, "nextCursor": next })
}

/// Whose side a network read is on.
#[derive(Clone, Copy, Debug)]
pub enum Side {
    Client(Uuid),
    Partner(Uuid),
}

impl Side {
    fn column(self) -> (&'static str, Uuid) {
        match self {
            Self::Client(e) => ("client_enterprise_id", e),
            Self::Partner(e) => ("partner_enterprise_id", e),
        }
    }
}

async fn json_rows(
    pool: &PgPool,
    sql: &str,
    side: Side,
    id: Option<Uuid>,
    page: Page,
) -> Result<Vec<Value>, ApiError> {
    let rows: Vec<(String,)> = sqlx::query_as(sql)
        .bind(side.column().1)
        .bind(id)
        .bind(i64::from(page.size))
        .bind(page.offset as i64)
        .fetch_all(pool)
        .await
        .map_err(ApiError::internal)?;
    rows.into_iter()
        .map(|(text,)| serde_json::from_str(&text).map_err(ApiError::internal))
        .collect()
}

pub async fn connections(
    pool: &PgPool,
    side: Side,
    id: Option<Uuid>,
    page: Page,
) -> Result<Vec<Value>, ApiError> {
    let sql = format!(
        "SELECT json_build_object(
            'id', id, 'name', name, 'clientId', client_id, 'partnerId', partner_id,
            'networkAccountId', network_account_id, 'active', active, 'initialized', true,
            'partnersConnectionId', NULL, 'partnersClientId', NULL, 'nonce', nonce, 'proof', proof,
            'createdAt', to_char(created_at AT TIME ZONE 'UTC', {TIME}),
            'updatedAt', to_char(updated_at AT TIME ZONE 'UTC', {TIME}))::text
         FROM rm_connections WHERE {} = $1 AND ($2::uuid IS NULL OR id = $2)
         ORDER BY created_at, id LIMIT $3 OFFSET $4",
        side.column().0
    );
    json_rows(pool, &sql, side, id, page).await
}

pub async fn allocations(
    pool: &PgPool,
    side: Side,
    id: Option<Uuid>,
    page: Page,
) -> Result<Vec<Value>, ApiError> {
    let sql = format!(
        "SELECT json_build_object(
            'id', id, 'type', type, 'amount', json_build_object('currency', currency, 'quantity', quantity::text),
            'connectionId', connection_id, 'clientExternalId', client_external_id, 'initiatedBy', initiated_by,
            'notes', notes, 'status', status, 'reason', reason, 'retriable', status = 'released',
            'createdAt', to_char(created_at AT TIME ZONE 'UTC', {TIME}),
            'updatedAt', to_char(updated_at AT TIME ZONE 'UTC', {TIME}))::text
         FROM rm_allocations WHERE {} = $1 AND ($2::uuid IS NULL OR id = $2)
         ORDER BY created_at, id LIMIT $3 OFFSET $4",
        side.column().0
    );
    json_rows(pool, &sql, side, id, page).await
}

fn balance_entry(available: String, held: String) -> Value {
    json!({"available": available, "held": held})
}

/// The SPEC balances object: the enterprise's custody balances and each connection's.
pub async fn balances(pool: &PgPool, side: Side, wallet_id: Uuid) -> Result<Value, ApiError> {
    let custody: Vec<(String, String, String)> =
        sqlx::query_as("SELECT currency, available::text, held::text FROM rm_balances WHERE account_id = $1 ORDER BY currency")
            .bind(wallet_id)
            .fetch_all(pool)
            .await
            .map_err(ApiError::internal)?;
    let balances: serde_json::Map<String, Value> = custody
        .into_iter()
        .map(|(c, a, h)| (c, balance_entry(a, h)))
        .collect();

    let (column, enterprise) = side.column();
    let (counterpart_key, counterpart_column) = match side {
        Side::Client(_) => ("partnerId", "partner_id"),
        Side::Partner(_) => ("clientId", "client_id"),
    };
    let sql = format!(
        "SELECT c.id, c.{counterpart_column}, c.name, b.currency, b.available::text, b.held::text
         FROM rm_connections c LEFT JOIN rm_balances b ON b.connection_id = c.id
         WHERE c.{column} = $1 ORDER BY c.created_at, c.id, b.currency"
    );
    type Row = (
        Uuid,
        Uuid,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let rows: Vec<Row> = sqlx::query_as(&sql)
        .bind(enterprise)
        .fetch_all(pool)
        .await
        .map_err(ApiError::internal)?;
    let mut network: BTreeMap<String, Value> = BTreeMap::new();
    for (connection, counterpart, name, currency, available, held) in rows {
        let entry = network.entry(connection.to_string()).or_insert_with(
            || json!({ counterpart_key: counterpart, "name": name, "balances": {} }),
        );
        if let (Some(currency), Some(available), Some(held)) = (currency, available, held) {
            entry["balances"][currency] = balance_entry(available, held);
        }
    }
    Ok(json!({"balances": balances, "networkBalances": network}))
}
