//! Query routes' reads from the read models, as the types of `contract.rs` (the objects of
//! docs/api/guide.md), with the API's pagination (`pageSize`, `pageNumber`, `cursor`). Each read is
//! one statement whose columns are turned into the contract types here: no query per row.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use events::domain::event::Timestamp;
use events::domain::settlement::{Phase, SettlementApi, StatusKind};
use events::domain::StreamName;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::consistency::{position_token, wait_for_min_position};
use super::contract::{self, Listing};
use super::error::{ApiError, ErrorCode};
use super::views::{self, stamp};

/// Default and largest page.
const PAGE_SIZE_DEFAULT: u32 = 100;
const PAGE_SIZE_MAX: u32 = 1_000;

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

impl Page {
    /// Every row: the lists embedded in one object (a settlement's transfers and disputes).
    pub const ALL: Self = Self {
        size: u32::MAX,
        offset: 0,
    };
}

/// The page a list route's query asks for (`pageSize`, `pageNumber`, `cursor`).
pub fn page_of(query: &HashMap<String, String>) -> Result<Page, ApiError> {
    let fields: serde_json::Map<String, Value> = ["pageSize", "pageNumber", "cursor"]
        .iter()
        .filter_map(|k| {
            let number = |v: &String| {
                v.parse::<u64>()
                    .map_or_else(|_| Value::from(v.clone()), Value::from)
            };
            query.get(*k).map(|v| {
                (
                    (*k).to_owned(),
                    if *k == "cursor" {
                        Value::from(v.clone())
                    } else {
                        number(v)
                    },
                )
            })
        })
        .collect();
    let q: PageQuery = serde_json::from_value(Value::Object(fields)).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidPage,
            "pageSize and pageNumber are numbers",
        )
    })?;
    q.page()
}

impl PageQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        let size = self.page_size.unwrap_or(PAGE_SIZE_DEFAULT);
        if size == 0 || size > PAGE_SIZE_MAX {
            return Err(ApiError::new(
                ErrorCode::InvalidPage,
                format!("pageSize must be 1 to {PAGE_SIZE_MAX}"),
            ));
        }
        let offset = match &self.cursor {
            Some(cursor) => decode_cursor(cursor).ok_or_else(|| {
                ApiError::new(
                    ErrorCode::InvalidCursor,
                    "cursor is not one this API issued",
                )
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

/// A list reply of one page of `items`: with a cursor while the page came back full.
pub fn list<L: Listing>(items: Vec<L::Item>, page: Page) -> L {
    let next = (items.len() as u64 == u64::from(page.size))
        .then(|| encode_cursor(page.offset + u64::from(page.size)));
    L::of(items, next)
}

/// JSON another module rendered, read into its contract type `T`. The value must come back
/// unchanged when `T` is serialized again — no field `T` lacks, none it would add or leave
/// out, no `null` where `T` omits a field — or it is an internal error: drift between that
/// renderer and the contract fails every reply (and every test) that crosses it.
pub fn checked<T: DeserializeOwned + Serialize>(value: Value) -> Result<T, ApiError> {
    let typed: T = serde_json::from_value(value.clone()).map_err(ApiError::internal)?;
    let again = serde_json::to_value(&typed).map_err(ApiError::internal)?;
    if again != value {
        return Err(ApiError::internal(format!(
            "a reply left its contract type {}: {value} is not {again}",
            std::any::type_name::<T>()
        )));
    }
    Ok(typed)
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

fn internal(e: sqlx::Error) -> ApiError {
    ApiError::internal(e)
}

/// A text column that names one of the contract's values; any other value is an internal
/// error, never passed on.
fn known<T>(what: &str, value: &str, parse: impl FnOnce(&str) -> Option<T>) -> Result<T, ApiError> {
    parse(value)
        .ok_or_else(|| ApiError::internal(format!("{what} {value:?} is not in the contract")))
}

/// `{currency: amount}` kept as JSON text in a read model.
fn amounts(text: &str) -> Result<BTreeMap<String, String>, ApiError> {
    serde_json::from_str(text).map_err(ApiError::internal)
}

fn connection_of(row: &PgRow) -> Result<contract::Connection, sqlx::Error> {
    Ok(contract::Connection {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        client_id: row.try_get("client_id")?,
        partner_id: row.try_get("partner_id")?,
        network_account_id: row.try_get("network_account_id")?,
        active: row.try_get("active")?,
        initialized: true,
        partners_connection_id: None,
        partners_client_id: None,
        nonce: row.try_get("nonce")?,
        proof: row.try_get("proof")?,
        created_at: stamp(row.try_get("created_at")?),
        updated_at: stamp(row.try_get("updated_at")?),
    })
}

/// Connections of one side, or the one with `id`.
pub async fn connections(
    pool: &PgPool,
    side: Side,
    id: Option<Uuid>,
    page: Page,
) -> Result<Vec<contract::Connection>, ApiError> {
    let sql = format!(
        "SELECT id, name, client_id, partner_id, network_account_id, active, nonce, proof,
                created_at, updated_at
         FROM rm_connections WHERE {} = $1 AND ($2::uuid IS NULL OR id = $2)
         ORDER BY created_at, id LIMIT $3 OFFSET $4",
        side.column().0
    );
    let rows = sqlx::query(&sql)
        .bind(side.column().1)
        .bind(id)
        .bind(i64::from(page.size))
        .bind(page.offset as i64)
        .fetch_all(pool)
        .await
        .map_err(internal)?;
    rows.iter()
        .map(connection_of)
        .collect::<Result<_, _>>()
        .map_err(internal)
}

/// The connection `id` as `side` sees it, or 404.
pub async fn connection(
    pool: &PgPool,
    side: Side,
    id: Uuid,
) -> Result<contract::ConnectionReply, ApiError> {
    let connection = connections(pool, side, Some(id), Page { size: 1, offset: 0 })
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found("connection"))?;
    Ok(contract::ConnectionReply { connection })
}

fn allocation_of(row: &PgRow) -> Result<contract::Allocation, ApiError> {
    let kind: String = row.try_get("type").map_err(internal)?;
    let status: String = row.try_get("status").map_err(internal)?;
    Ok(contract::Allocation {
        id: row.try_get("id").map_err(internal)?,
        kind: known("allocation type", &kind, |k| match k {
            "allocation" => Some(contract::AllocationType::Allocation),
            "deallocation" => Some(contract::AllocationType::Deallocation),
            _ => None,
        })?,
        amount: contract::Amount {
            currency: row.try_get("currency").map_err(internal)?,
            quantity: row.try_get("quantity").map_err(internal)?,
        },
        connection_id: row.try_get("connection_id").map_err(internal)?,
        client_external_id: row.try_get("client_external_id").map_err(internal)?,
        initiated_by: row.try_get("initiated_by").map_err(internal)?,
        notes: row.try_get("notes").map_err(internal)?,
        status: known("allocation status", &status, |s| match s {
            "reserved" => Some(contract::AllocationStatus::Reserved),
            "cleared" => Some(contract::AllocationStatus::Cleared),
            "released" => Some(contract::AllocationStatus::Released),
            _ => None,
        })?,
        reason: row.try_get("reason").map_err(internal)?,
        retriable: status == "released",
        created_at: stamp(row.try_get("created_at").map_err(internal)?),
        updated_at: stamp(row.try_get("updated_at").map_err(internal)?),
    })
}

/// (De)allocations on one side's connections, or the one with `id`.
pub async fn allocations(
    pool: &PgPool,
    side: Side,
    id: Option<Uuid>,
    page: Page,
) -> Result<Vec<contract::Allocation>, ApiError> {
    let sql = format!(
        "SELECT id, type, currency, quantity::text AS quantity, connection_id, client_external_id,
                initiated_by, notes, status, reason, created_at, updated_at
         FROM rm_allocations WHERE {} = $1 AND ($2::uuid IS NULL OR id = $2)
         ORDER BY created_at, id LIMIT $3 OFFSET $4",
        side.column().0
    );
    let rows = sqlx::query(&sql)
        .bind(side.column().1)
        .bind(id)
        .bind(i64::from(page.size))
        .bind(page.offset as i64)
        .fetch_all(pool)
        .await
        .map_err(internal)?;
    rows.iter().map(allocation_of).collect()
}

/// The (de)allocation `id` as `side` sees it, or 404.
pub async fn allocation(
    pool: &PgPool,
    side: Side,
    id: Uuid,
) -> Result<contract::AllocationReply, ApiError> {
    let allocation = allocations(pool, side, Some(id), Page { size: 1, offset: 0 })
        .await?
        .pop()
        .ok_or_else(|| ApiError::not_found("allocation"))?;
    Ok(contract::AllocationReply { allocation })
}

/// The balances object (docs/api/guide.md): custody balances and each connection's.
pub async fn balances(
    pool: &PgPool,
    side: Side,
    wallet_id: Uuid,
) -> Result<contract::Balances, ApiError> {
    let custody: Vec<(String, String, String)> =
        sqlx::query_as("SELECT currency, available::text, held::text FROM rm_balances WHERE account_id = $1 ORDER BY currency")
            .bind(wallet_id)
            .fetch_all(pool)
            .await
            .map_err(internal)?;
    let balances = custody
        .into_iter()
        .map(|(c, available, held)| (c, contract::Balance { available, held }))
        .collect();

    let (column, enterprise) = side.column();
    let counterpart_column = match side {
        Side::Client(_) => "partner_id",
        Side::Partner(_) => "client_id",
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
        .map_err(internal)?;
    let mut network: BTreeMap<String, contract::NetworkBalance> = BTreeMap::new();
    for (connection, counterpart, name, currency, available, held) in rows {
        let entry =
            network
                .entry(connection.to_string())
                .or_insert_with(|| contract::NetworkBalance {
                    partner_id: matches!(side, Side::Client(_)).then_some(counterpart),
                    client_id: matches!(side, Side::Partner(_)).then_some(counterpart),
                    name,
                    balances: BTreeMap::new(),
                });
        if let (Some(currency), Some(available), Some(held)) = (currency, available, held) {
            entry
                .balances
                .insert(currency, contract::Balance { available, held });
        }
    }
    Ok(contract::Balances {
        balances,
        network_balances: network,
    })
}

/// The columns of a transfer (`t` is `rm_settlement_transfers`), each named `{prefix}column`.
fn transfer_columns(prefix: &str) -> String {
    [
        "id",
        "settlement_id",
        "dispute_closure_id",
        "currency",
        "status",
        "source_trading_account_id",
        "source_network_account_id",
        "destination_trading_account_id",
        "destination_network_account_id",
        "created_at",
        "updated_at",
    ]
    .iter()
    .map(|c| format!("t.{c} AS {prefix}{c}"))
    .chain(std::iter::once(format!(
        "t.quantity::text AS {prefix}quantity"
    )))
    .collect::<Vec<_>>()
    .join(", ")
}

/// The transfer in the columns `transfer_columns(prefix)` selected; `None` where a left join
/// found none.
fn transfer_of(row: &PgRow, prefix: &str) -> Result<Option<contract::Transfer>, ApiError> {
    let get = |c: &str| format!("{prefix}{c}");
    let Some(id) = row
        .try_get::<Option<Uuid>, _>(get("id").as_str())
        .map_err(internal)?
    else {
        return Ok(None);
    };
    let status_name: String = row.try_get(get("status").as_str()).map_err(internal)?;
    let status = known("transfer status", &status_name, views::transfer_status)?;
    let created_at: DateTime<Utc> = row.try_get(get("created_at").as_str()).map_err(internal)?;
    let updated_at: DateTime<Utc> = row.try_get(get("updated_at").as_str()).map_err(internal)?;
    Ok(Some(contract::Transfer {
        id,
        settlement_id: row
            .try_get(get("settlement_id").as_str())
            .map_err(internal)?,
        dispute_closure_id: row
            .try_get(get("dispute_closure_id").as_str())
            .map_err(internal)?,
        currency: row.try_get(get("currency").as_str()).map_err(internal)?,
        quantity: row.try_get(get("quantity").as_str()).map_err(internal)?,
        status,
        source_trading_account_id: row
            .try_get(get("source_trading_account_id").as_str())
            .map_err(internal)?,
        source_network_account_id: row
            .try_get(get("source_network_account_id").as_str())
            .map_err(internal)?,
        destination_trading_account_id: row
            .try_get(get("destination_trading_account_id").as_str())
            .map_err(internal)?,
        destination_network_account_id: row
            .try_get(get("destination_network_account_id").as_str())
            .map_err(internal)?,
        tx_ids: match status {
            contract::TransferStatus::Completed => vec![id],
            _ => vec![],
        },
        created_at: stamp(created_at),
        updated_at: stamp(updated_at),
    }))
}

/// The columns of a dispute with its closure (`d` is `rm_disputes`, `c` its closure, if any).
const DISPUTE_COLUMNS: &str = "d.id, d.connection_id, d.settlement_id, d.user_id,
    d.expected_transfers::text AS expected_transfers, d.retracted, d.reason, d.retracted_by,
    d.retracted_at, d.retracted_reason, d.dispute_closure_id, d.settled_in_settlement_id,
    d.created_at, d.updated_at,
    c.id AS closure_id, c.closed_by AS closure_closed_by, c.user_id AS closure_user_id,
    c.notes AS closure_notes, c.adjusted_transfers::text AS closure_adjusted_transfers,
    c.created_at AS closure_created_at";

/// The dispute in `DISPUTE_COLUMNS`, its closure without its transfers.
fn dispute_of(row: &PgRow) -> Result<contract::Dispute, ApiError> {
    let get = |c: &str| row.try_get::<Option<String>, _>(c).map_err(internal);
    let expected: String = row.try_get("expected_transfers").map_err(internal)?;
    let closure = match row
        .try_get::<Option<Uuid>, _>("closure_id")
        .map_err(internal)?
    {
        None => None,
        // The closure's columns are not null where its row was found.
        Some(id) => {
            let closed_by: String = row.try_get("closure_closed_by").map_err(internal)?;
            let adjusted: String = row
                .try_get("closure_adjusted_transfers")
                .map_err(internal)?;
            let created_at: DateTime<Utc> = row.try_get("closure_created_at").map_err(internal)?;
            Some(contract::DisputeClosure {
                id,
                closed_by: known("closedBy", &closed_by, |c| match c {
                    "client" => Some(contract::ClosedBy::Client),
                    "admin" => Some(contract::ClosedBy::Admin),
                    _ => None,
                })?,
                user_id: row.try_get("closure_user_id").map_err(internal)?,
                notes: row.try_get("closure_notes").map_err(internal)?,
                status: "approved".to_owned(),
                adjusted_transfers: amounts(&adjusted)?,
                adjusted_settlement_transfers: Vec::new(),
                created_at: stamp(created_at),
            })
        }
    };
    let retracted_at: Option<DateTime<Utc>> = row.try_get("retracted_at").map_err(internal)?;
    Ok(contract::Dispute {
        id: row.try_get("id").map_err(internal)?,
        connection_id: row.try_get("connection_id").map_err(internal)?,
        disputed_settlement_id: row.try_get("settlement_id").map_err(internal)?,
        user_id: row.try_get("user_id").map_err(internal)?,
        expected_transfers: amounts(&expected)?,
        retracted: row.try_get("retracted").map_err(internal)?,
        reason: get("reason")?,
        retracted_by: row.try_get("retracted_by").map_err(internal)?,
        retracted_at: retracted_at.map(stamp),
        retracted_reason: get("retracted_reason")?,
        dispute_closure_id: row.try_get("dispute_closure_id").map_err(internal)?,
        settled_in_settlement_id: row.try_get("settled_in_settlement_id").map_err(internal)?,
        dispute_closure: closure,
        created_at: stamp(row.try_get("created_at").map_err(internal)?),
        updated_at: stamp(row.try_get("updated_at").map_err(internal)?),
    })
}

/// The filters of a dispute list (docs/api/guide.md, "Lists: paging and filters").
#[derive(Debug, Default)]
pub struct DisputeFilter {
    pub settlement_ids: Option<Vec<Uuid>>,
    pub settled_in_settlement_ids: Option<Vec<Uuid>>,
    pub connection_ids: Option<Vec<Uuid>>,
    pub closed: Option<bool>,
    pub show_retracted: bool,
}

fn flag(
    query: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<bool>, ApiError> {
    match query.get(key).map(String::as_str) {
        None => Ok(None),
        Some("true") => Ok(Some(true)),
        Some("false") => Ok(Some(false)),
        Some(_) => Err(ApiError::new(
            ErrorCode::InvalidFilter,
            format!("{key} must be true or false"),
        )),
    }
}

impl DisputeFilter {
    pub fn parse(query: &std::collections::HashMap<String, String>) -> Result<Self, ApiError> {
        Ok(Self {
            settlement_ids: uuids(query, "settlementIds")?,
            settled_in_settlement_ids: uuids(query, "settledInSettlementIds")?,
            connection_ids: uuids(query, "connectionIds")?,
            closed: flag(query, "closed")?,
            show_retracted: flag(query, "showRetracted")?.unwrap_or(false),
        })
    }
}

/// Disputes on a partner's settlements (`Side::Partner`) or raised by a client (`Side::Client`),
/// each closed one with its closure and the closure's transfers. One statement: the page of
/// disputes, joined with their closures' transfers (a row per transfer, in order).
pub async fn disputes(
    pool: &PgPool,
    side: Side,
    filter: &DisputeFilter,
    page: Page,
) -> Result<Vec<contract::Dispute>, ApiError> {
    let (column, e) = side.column();
    let sql = format!(
        "SELECT p.*, {} FROM (
            SELECT {DISPUTE_COLUMNS} FROM rm_disputes d
            LEFT JOIN rm_dispute_closures c ON c.id = d.dispute_closure_id
            WHERE d.{column} = $1
              AND ($2::uuid[] IS NULL OR d.settlement_id = ANY($2))
              AND ($3::uuid[] IS NULL OR d.settled_in_settlement_id = ANY($3))
              AND ($4::uuid[] IS NULL OR d.connection_id = ANY($4))
              AND ($5::boolean IS NULL OR (d.dispute_closure_id IS NOT NULL) = $5)
              AND ($6 OR NOT d.retracted)
            ORDER BY d.created_at, d.id LIMIT $7 OFFSET $8) p
         LEFT JOIN rm_settlement_transfers t ON t.dispute_closure_id = p.closure_id
         ORDER BY p.created_at, p.id, t.ordinal",
        transfer_columns("t_")
    );
    let rows = sqlx::query(&sql)
        .bind(e)
        .bind(&filter.settlement_ids)
        .bind(&filter.settled_in_settlement_ids)
        .bind(&filter.connection_ids)
        .bind(filter.closed)
        .bind(filter.show_retracted)
        .bind(i64::from(page.size.min(i32::MAX as u32)))
        .bind(page.offset as i64)
        .fetch_all(pool)
        .await
        .map_err(internal)?;
    let mut disputes: Vec<contract::Dispute> = Vec::new();
    for row in &rows {
        let id: Uuid = row.try_get("id").map_err(internal)?;
        if disputes.last().is_none_or(|d| d.id != id) {
            disputes.push(dispute_of(row)?);
        }
        let transfer = transfer_of(row, "t_")?;
        if let (Some(transfer), Some(closure)) = (
            transfer,
            disputes.last_mut().and_then(|d| d.dispute_closure.as_mut()),
        ) {
            closure.adjusted_settlement_transfers.push(transfer);
        }
    }
    Ok(disputes)
}

/// The filters of a settlement list (docs/api/guide.md), from comma-separated query values.
#[derive(Debug, Default)]
pub struct SettlementFilter {
    pub settlement_ids: Option<Vec<Uuid>>,
    pub external_ids: Option<Vec<String>>,
    pub statuses: Option<Vec<String>>,
    pub party_connection_ids: Option<Vec<Uuid>>,
    pub only_show_disputed: bool,
    pub created_on_or_after: Option<chrono::DateTime<chrono::Utc>>,
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_on_or_after: Option<chrono::DateTime<chrono::Utc>>,
    pub updated_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// A comma-separated filter, bounded like any input: at most `MAX_QUERY_VALUES` values of at most
/// `MAX_QUERY_VALUE_BYTES` each, without control characters (they would reach SQL parameters).
pub fn list_of(
    query: &std::collections::HashMap<String, String>,
    key: &'static str,
) -> Result<Option<Vec<String>>, ApiError> {
    use events::domain::limits::{self, Lines, MAX_QUERY_VALUES, MAX_QUERY_VALUE_BYTES};
    let Some(value) = query.get(key) else {
        return Ok(None);
    };
    let values: Vec<String> = value
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    limits::count(key, values.len(), MAX_QUERY_VALUES).map_err(ApiError::input)?;
    for v in &values {
        limits::bounded(key, v, MAX_QUERY_VALUE_BYTES, Lines::One).map_err(ApiError::input)?;
    }
    Ok(Some(values))
}

fn uuids(
    query: &std::collections::HashMap<String, String>,
    key: &'static str,
) -> Result<Option<Vec<Uuid>>, ApiError> {
    list_of(query, key)?
        .map(|ids| {
            ids.iter()
                .map(|id| Uuid::try_parse(id))
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidFilter,
                format!("{key} must be comma-separated ids"),
            )
        })
}

fn instant(
    query: &std::collections::HashMap<String, String>,
    key: &str,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    query
        .get(key)
        .map(|v| chrono::DateTime::parse_from_rfc3339(v).map(|t| t.to_utc()))
        .transpose()
        .map_err(|_| {
            ApiError::new(
                ErrorCode::InvalidFilter,
                format!("{key} must be an RFC 3339 timestamp"),
            )
        })
}

impl SettlementFilter {
    pub fn parse(query: &std::collections::HashMap<String, String>) -> Result<Self, ApiError> {
        let only_show_disputed = match query.get("onlyShowDisputed").map(String::as_str) {
            None | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(ApiError::new(
                    ErrorCode::InvalidFilter,
                    "onlyShowDisputed must be true or false",
                ))
            }
        };
        Ok(Self {
            settlement_ids: uuids(query, "settlementIds")?,
            external_ids: list_of(query, "externalIds")?,
            statuses: list_of(query, "statuses")?,
            party_connection_ids: uuids(query, "partyConnectionIds")?,
            only_show_disputed,
            created_on_or_after: instant(query, "createdOnOrAfter")?,
            created_before: instant(query, "createdBefore")?,
            updated_on_or_after: instant(query, "updatedOnOrAfter")?,
            updated_before: instant(query, "updatedBefore")?,
        })
    }
}

/// Settlements of one partner (`Side::Partner`) or touching one client's connections
/// (`Side::Client`, with `transferDirection` from the client's point of view).
pub async fn settlements(
    pool: &PgPool,
    side: Side,
    filter: &SettlementFilter,
    page: Page,
) -> Result<Vec<contract::Settlement>, ApiError> {
    let (scope, direction) = match side {
        Side::Partner(_) => ("s.partner_enterprise_id = $1", "NULL::text"),
        Side::Client(_) => (
            "EXISTS (SELECT 1 FROM rm_settlement_transfers t WHERE t.settlement_id = s.id
                     AND (t.destination_client_enterprise_id = $1 OR t.source_client_enterprise_id = $1))",
            "(SELECT CASE WHEN bool_and(sends) THEN 'send' WHEN NOT bool_or(sends) THEN 'receive'
                          ELSE 'send-and-receive' END
              FROM (SELECT (t.destination_client_enterprise_id = $1) = (t.quantity < 0) AS sends
                    FROM rm_settlement_transfers t WHERE t.settlement_id = s.id
                      AND (t.destination_client_enterprise_id = $1 OR t.source_client_enterprise_id = $1)) d)",
        ),
    };
    let sql = format!(
        "SELECT s.id, s.partner_id, s.external_id, s.api, s.status, s.notes, s.cutoff_at,
                s.initiated_by, s.disputed, s.reason, s.dispute_window_ends_at,
                s.top_up_window_ends_at, s.finalized_at, s.finalized, s.created_at, s.updated_at,
                {direction} AS transfer_direction
         FROM rm_settlements s
         WHERE {scope}
           AND ($2::uuid[] IS NULL OR s.id = ANY($2))
           AND ($3::text[] IS NULL OR s.external_id = ANY($3))
           AND ($4::text[] IS NULL OR s.status = ANY($4))
           AND ($5::uuid[] IS NULL OR EXISTS (SELECT 1 FROM rm_settlement_transfers p WHERE p.settlement_id = s.id
                AND (p.destination_connection_id = ANY($5) OR p.source_connection_id = ANY($5))))
           AND (NOT $6 OR s.disputed)
           AND ($7::timestamptz IS NULL OR s.created_at >= $7) AND ($8::timestamptz IS NULL OR s.created_at < $8)
           AND ($9::timestamptz IS NULL OR s.updated_at >= $9) AND ($10::timestamptz IS NULL OR s.updated_at < $10)
         ORDER BY s.created_at, s.id LIMIT $11 OFFSET $12"
    );
    let rows = sqlx::query(&sql)
        .bind(side.column().1)
        .bind(&filter.settlement_ids)
        .bind(&filter.external_ids)
        .bind(&filter.statuses)
        .bind(&filter.party_connection_ids)
        .bind(filter.only_show_disputed)
        .bind(filter.created_on_or_after)
        .bind(filter.created_before)
        .bind(filter.updated_on_or_after)
        .bind(filter.updated_before)
        .bind(i64::from(page.size))
        .bind(page.offset as i64)
        .fetch_all(pool)
        .await
        .map_err(internal)?;
    let now = Timestamp(Utc::now().timestamp_micros());
    rows.iter().map(|row| settlement_of(row, now)).collect()
}

/// A settlement row as the object, with its `phase` at `now` (the domain's one definition).
fn settlement_of(row: &PgRow, now: Timestamp) -> Result<contract::Settlement, ApiError> {
    let api: String = row.try_get("api").map_err(internal)?;
    let api = known("settlement api", &api, |a| match a {
        "v1" => Some(SettlementApi::V1),
        "v2" => Some(SettlementApi::V2),
        _ => None,
    })?;
    let status: String = row.try_get("status").map_err(internal)?;
    let status = known("settlement status", &status, StatusKind::parse)?;
    let finalized: bool = row.try_get("finalized").map_err(internal)?;
    let top_up_ends: DateTime<Utc> = row.try_get("top_up_window_ends_at").map_err(internal)?;
    let phase = Phase::of(
        api,
        status,
        finalized,
        Timestamp(top_up_ends.timestamp_micros()),
        now,
    );
    let direction: Option<String> = row.try_get("transfer_direction").map_err(internal)?;
    let transfer_direction = direction
        .map(|d| {
            known("transferDirection", &d, |d| match d {
                "send" => Some(contract::TransferDirection::Send),
                "receive" => Some(contract::TransferDirection::Receive),
                "send-and-receive" => Some(contract::TransferDirection::SendAndReceive),
                _ => None,
            })
        })
        .transpose()?;
    let at = |c: &str| -> Result<Option<String>, ApiError> {
        let t: Option<DateTime<Utc>> = row.try_get(c).map_err(internal)?;
        Ok(t.map(stamp))
    };
    Ok(contract::Settlement {
        id: row.try_get("id").map_err(internal)?,
        partner_id: row.try_get("partner_id").map_err(internal)?,
        external_id: row.try_get("external_id").map_err(internal)?,
        status: views::settlement_status(status),
        settlement_type: "offchain".to_owned(),
        reconciled: false,
        initiated_by: row.try_get("initiated_by").map_err(internal)?,
        notes: row.try_get("notes").map_err(internal)?,
        created_at: stamp(row.try_get("created_at").map_err(internal)?),
        updated_at: stamp(row.try_get("updated_at").map_err(internal)?),
        disputed: row.try_get("disputed").map_err(internal)?,
        loss_sla_alert_sent: false,
        gain_sla_alert_sent: false,
        phase: views::phase(phase),
        dispute_window_ends_at: stamp(row.try_get("dispute_window_ends_at").map_err(internal)?),
        top_up_window_ends_at: stamp(top_up_ends),
        cutoff_at: at("cutoff_at")?,
        reason: row.try_get("reason").map_err(internal)?,
        finalized_at: at("finalized_at")?,
        transfer_direction,
        settling_disputes: None,
    })
}

/// One settlement as its side sees it, if it exists.
pub async fn settlement(
    pool: &PgPool,
    side: Side,
    settlement_id: Uuid,
) -> Result<Option<contract::Settlement>, ApiError> {
    let filter = SettlementFilter {
        settlement_ids: Some(vec![settlement_id]),
        ..Default::default()
    };
    Ok(
        settlements(pool, side, &filter, Page { size: 1, offset: 0 })
            .await?
            .pop(),
    )
}

/// Every dispute whose closure a settlement carries (`settlingDisputes`), as its side sees them.
pub async fn settling_disputes(
    pool: &PgPool,
    side: Side,
    settlement_id: Uuid,
) -> Result<Vec<contract::Dispute>, ApiError> {
    let settling = DisputeFilter {
        settled_in_settlement_ids: Some(vec![settlement_id]),
        show_retracted: true,
        ..Default::default()
    };
    disputes(pool, side, &settling, Page::ALL).await
}

/// The consumer group that projects the read models.
pub const READ_MODELS: &str = "projector-read-models";

/// The transaction of the latest event of `stream`: a write position covering its current state.
pub async fn last_txid(pool: &PgPool, stream: &StreamName) -> Result<Option<i64>, ApiError> {
    sqlx::query_scalar(
        "SELECT txid FROM events WHERE category = $1 AND stream_id = $2
         ORDER BY version DESC LIMIT 1",
    )
    .bind(stream.category())
    .bind(stream.id())
    .fetch_optional(pool)
    .await
    .map_err(ApiError::internal)
}

/// Waits (bounded, as a read with `X-Min-Position` does) until the read models reflect the write
/// of transaction `txid`.
pub async fn wait_reflected(pool: &PgPool, txid: i64, max: Duration) -> Result<(), ApiError> {
    let mut headers = HeaderMap::new();
    let token = HeaderValue::from_str(&position_token(txid)).map_err(ApiError::internal)?;
    headers.insert("x-min-position", token);
    wait_for_min_position(&headers, pool, READ_MODELS, max).await
}

/// Transfers of one settlement (partner: all; client: only its own), or — without a settlement —
/// every transfer touching a client; filtered by currencies and destination network accounts.
pub async fn transfers(
    pool: &PgPool,
    side: Side,
    settlement_id: Option<Uuid>,
    currencies: Option<Vec<String>>,
    destinations: Option<Vec<Uuid>>,
    page: Page,
) -> Result<Vec<contract::Transfer>, ApiError> {
    let scope = match side {
        Side::Partner(_) => "t.partner_enterprise_id = $1",
        Side::Client(_) => {
            "(t.destination_client_enterprise_id = $1 OR t.source_client_enterprise_id = $1)"
        }
    };
    let sql = format!(
        "SELECT {} FROM rm_settlement_transfers t
         WHERE {scope} AND ($2::uuid IS NULL OR t.settlement_id = $2)
           AND ($3::text[] IS NULL OR t.currency = ANY($3))
           AND ($4::uuid[] IS NULL OR t.destination_network_account_id = ANY($4))
         ORDER BY t.created_at, t.settlement_id, t.ordinal LIMIT $5 OFFSET $6",
        transfer_columns("")
    );
    let rows = sqlx::query(&sql)
        .bind(side.column().1)
        .bind(settlement_id)
        .bind(currencies)
        .bind(destinations)
        .bind(i64::from(page.size))
        .bind(page.offset as i64)
        .fetch_all(pool)
        .await
        .map_err(internal)?;
    rows.iter()
        .filter_map(|row| transfer_of(row, "").transpose())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn checked_takes_only_what_its_type_writes_out_again() {
        let read = json!({
            "id": 7, "readAt": "2026-11-22T04:38:30.123456Z", "actor": "admin", "userId": null,
            "method": "GET", "path": "/api/audit/v1/key", "query": "", "status": 200,
            "requestId": "r-1",
        });
        let typed: contract::AuditRead = checked(read.clone()).expect("as the contract says");
        assert_eq!(serde_json::to_value(typed).expect("serializes"), read);
        let mut extra = read.clone();
        extra["reader"] = json!("admin");
        let mut absent = read.clone();
        absent.as_object_mut().expect("object").remove("userId");
        let mut retyped = read.clone();
        retyped["status"] = json!("200");
        for drifted in [extra, absent, retyped] {
            assert!(
                checked::<contract::AuditRead>(drifted.clone()).is_err(),
                "{drifted}"
            );
        }
    }
}
