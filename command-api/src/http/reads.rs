//! Query routes' reads from the read models, rendered as the JSON of docs/api/guide.md by Postgres
//! (`json_build_object`), with the API's pagination (`pageSize`, `pageNumber`, `cursor`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};
use events::domain::event::Timestamp;
use events::domain::settlement::{Phase, SettlementApi, StatusKind};
use events::domain::StreamName;
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::consistency::{position_token, wait_for_min_position};
use super::error::{ApiError, ErrorCode};

/// Default and largest page.
const PAGE_SIZE_DEFAULT: u32 = 100;
const PAGE_SIZE_MAX: u32 = 1_000;

/// RFC 3339 UTC with microseconds, as `views::time` writes it.
pub(super) const TIME: &str = r#"'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'"#;

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

/// `{plural: [...], nextCursor}`: a cursor while the page came back full.
pub fn list(plural: &str, items: Vec<Value>, page: Page) -> Value {
    let next = (items.len() as u64 == u64::from(page.size))
        .then(|| encode_cursor(page.offset + u64::from(page.size)));
    json!({ plural: items, "nextCursor": next })
}

/// Rows of JSON text (built by Postgres) as values.
fn decode(rows: Vec<(String,)>) -> Result<Vec<Value>, ApiError> {
    rows.into_iter()
        .map(|(text,)| serde_json::from_str(&text).map_err(ApiError::internal))
        .collect()
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
    decode(rows)
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
        "SELECT (json_build_object(
            'id', id, 'type', type, 'amount', json_build_object('currency', currency, 'quantity', quantity::text),
            'connectionId', connection_id, 'clientExternalId', client_external_id, 'initiatedBy', initiated_by,
            'status', status, 'reason', reason, 'retriable', status = 'released',
            'createdAt', to_char(created_at AT TIME ZONE 'UTC', {TIME}),
            'updatedAt', to_char(updated_at AT TIME ZONE 'UTC', {TIME}))::jsonb
          || CASE WHEN notes IS NULL THEN '{{}}'::jsonb ELSE jsonb_build_object('notes', notes) END)::text
         FROM rm_allocations WHERE {} = $1 AND ($2::uuid IS NULL OR id = $2)
         ORDER BY created_at, id LIMIT $3 OFFSET $4",
        side.column().0
    );
    json_rows(pool, &sql, side, id, page).await
}

fn balance_entry(available: String, held: String) -> Value {
    json!({"available": available, "held": held})
}

/// The balances object (docs/api/guide.md): custody balances and each connection's.
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

/// Keys of a settlement row that only feed its `phase` (`with_phase`), never shown.
const PHASE_API: &str = "_api";
const PHASE_FINALIZED: &str = "_finalized";

/// SQL of a settlement object (`s` is `rm_settlements`); `notes`, `reason`, `finalizedAt` and
/// `cutoffAt` appear only when they apply, as in command replies. `phase` is not SQL's: the
/// row carries what it depends on under `PHASE_API` and `PHASE_FINALIZED`, and `with_phase`
/// computes it with the domain's one definition.
fn settlement_json() -> String {
    format!(
        "(jsonb_strip_nulls(jsonb_build_object(
            'id', s.id, 'partnerId', s.partner_id, 'externalId', s.external_id, 'status', s.status,
            'settlementType', 'offchain', 'reconciled', false, 'initiatedBy', s.initiated_by, 'notes', s.notes,
            'createdAt', to_char(s.created_at AT TIME ZONE 'UTC', {TIME}),
            'updatedAt', to_char(s.updated_at AT TIME ZONE 'UTC', {TIME}),
            'disputed', s.disputed, 'lossSLAAlertSent', false, 'gainSLAAlertSent', false,
            '{PHASE_API}', s.api, '{PHASE_FINALIZED}', s.finalized,
            'disputeWindowEndsAt', to_char(s.dispute_window_ends_at AT TIME ZONE 'UTC', {TIME}),
            'topUpWindowEndsAt', to_char(s.top_up_window_ends_at AT TIME ZONE 'UTC', {TIME})))
          || CASE WHEN s.cutoff_at IS NULL THEN '{{}}'::jsonb
                  ELSE jsonb_build_object('cutoffAt', to_char(s.cutoff_at AT TIME ZONE 'UTC', {TIME})) END
          || CASE WHEN s.reason IS NULL THEN '{{}}'::jsonb ELSE jsonb_build_object('reason', s.reason) END
          || CASE WHEN s.finalized_at IS NULL THEN '{{}}'::jsonb
                  ELSE jsonb_build_object('finalizedAt', to_char(s.finalized_at AT TIME ZONE 'UTC', {TIME})) END)"
    )
}

/// SQL of a transfer object (`t` is `rm_settlement_transfers`).
fn transfer_json() -> String {
    format!(
        "jsonb_strip_nulls(jsonb_build_object(
            'id', t.id, 'settlementId', t.settlement_id, 'disputeClosureId', t.dispute_closure_id,
            'currency', t.currency, 'quantity', t.quantity::text,
            'status', t.status, 'sourceTradingAccountId', t.source_trading_account_id,
            'sourceNetworkAccountId', t.source_network_account_id,
            'destinationTradingAccountId', t.destination_trading_account_id,
            'destinationNetworkAccountId', t.destination_network_account_id,
            'txIds', CASE WHEN t.status = 'completed' THEN json_build_array(t.id) ELSE '[]'::json END,
            'createdAt', to_char(t.created_at AT TIME ZONE 'UTC', {TIME}),
            'updatedAt', to_char(t.updated_at AT TIME ZONE 'UTC', {TIME})))"
    )
}

/// SQL of a dispute object with its closure embedded once closed (`d` is `rm_disputes`).
fn dispute_json() -> String {
    format!(
        "jsonb_strip_nulls(jsonb_build_object(
            'id', d.id, 'connectionId', d.connection_id, 'disputedSettlementId', d.settlement_id,
            'userId', d.user_id, 'expectedTransfers', d.expected_transfers, 'reason', d.reason,
            'retractedBy', d.retracted_by,
            'retractedAt', to_char(d.retracted_at AT TIME ZONE 'UTC', {TIME}),
            'retractedReason', d.retracted_reason, 'disputeClosureId', d.dispute_closure_id,
            'settledInSettlementId', d.settled_in_settlement_id,
            'createdAt', to_char(d.created_at AT TIME ZONE 'UTC', {TIME}),
            'updatedAt', to_char(d.updated_at AT TIME ZONE 'UTC', {TIME})))
         || jsonb_build_object('retracted', d.retracted)
         || coalesce((SELECT jsonb_build_object('disputeClosure', jsonb_build_object(
                'id', c.id, 'closedBy', c.closed_by, 'userId', c.user_id, 'notes', c.notes, 'status', 'approved',
                'adjustedTransfers', c.adjusted_transfers,
                'adjustedSettlementTransfers', coalesce((SELECT jsonb_agg({} ORDER BY t.ordinal)
                     FROM rm_settlement_transfers t WHERE t.dispute_closure_id = c.id), '[]'::jsonb),
                'createdAt', to_char(c.created_at AT TIME ZONE 'UTC', {TIME})))
              FROM rm_dispute_closures c WHERE c.id = d.dispute_closure_id), '{{}}'::jsonb)",
        transfer_json()
    )
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

/// Disputes on a partner's settlements (`Side::Partner`) or raised by a client (`Side::Client`).
pub async fn disputes(
    pool: &PgPool,
    side: Side,
    filter: &DisputeFilter,
    page: Page,
) -> Result<Vec<Value>, ApiError> {
    let (column, e) = side.column();
    let sql = format!(
        "SELECT ({})::text FROM rm_disputes d
         WHERE d.{column} = $1
           AND ($2::uuid[] IS NULL OR d.settlement_id = ANY($2))
           AND ($3::uuid[] IS NULL OR d.settled_in_settlement_id = ANY($3))
           AND ($4::uuid[] IS NULL OR d.connection_id = ANY($4))
           AND ($5::boolean IS NULL OR (d.dispute_closure_id IS NOT NULL) = $5)
           AND ($6 OR NOT d.retracted)
         ORDER BY d.created_at, d.id LIMIT $7 OFFSET $8",
        dispute_json()
    );
    let rows: Vec<(String,)> = sqlx::query_as(&sql)
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
        .map_err(ApiError::internal)?;
    decode(rows)
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
) -> Result<Vec<Value>, ApiError> {
    let (scope, direction) = match side {
        Side::Partner(_) => ("s.partner_enterprise_id = $1", "'{}'::jsonb".to_owned()),
        Side::Client(_) => (
            "EXISTS (SELECT 1 FROM rm_settlement_transfers t WHERE t.settlement_id = s.id
                     AND (t.destination_client_enterprise_id = $1 OR t.source_client_enterprise_id = $1))",
            "(SELECT jsonb_build_object('transferDirection',
                 CASE WHEN bool_and(sends) THEN 'send' WHEN NOT bool_or(sends) THEN 'receive' ELSE 'send-and-receive' END)
              FROM (SELECT (t.destination_client_enterprise_id = $1) = (t.quantity < 0) AS sends
                    FROM rm_settlement_transfers t WHERE t.settlement_id = s.id
                      AND (t.destination_client_enterprise_id = $1 OR t.source_client_enterprise_id = $1)) d)"
                .to_owned(),
        ),
    };
    let sql = format!(
        "SELECT ({} || {direction})::text FROM rm_settlements s
         WHERE {scope}
           AND ($2::uuid[] IS NULL OR s.id = ANY($2))
           AND ($3::text[] IS NULL OR s.external_id = ANY($3))
           AND ($4::text[] IS NULL OR s.status = ANY($4))
           AND ($5::uuid[] IS NULL OR EXISTS (SELECT 1 FROM rm_settlement_transfers p WHERE p.settlement_id = s.id
                AND (p.destination_connection_id = ANY($5) OR p.source_connection_id = ANY($5))))
           AND (NOT $6 OR s.disputed)
           AND ($7::timestamptz IS NULL OR s.created_at >= $7) AND ($8::timestamptz IS NULL OR s.created_at < $8)
           AND ($9::timestamptz IS NULL OR s.updated_at >= $9) AND ($10::timestamptz IS NULL OR s.updated_at < $10)
         ORDER BY s.created_at, s.id LIMIT $11 OFFSET $12",
        settlement_json()
    );
    let rows: Vec<(String,)> = sqlx::query_as(&sql)
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
        .map_err(ApiError::internal)?;
    let now = Timestamp(chrono::Utc::now().timestamp_micros());
    decode(rows)?
        .into_iter()
        .map(|row| with_phase(row, now))
        .collect()
}

/// A settlement row with its `phase` at `now` in place of the fields that feed it.
fn with_phase(mut row: Value, now: Timestamp) -> Result<Value, ApiError> {
    let fields = row
        .as_object_mut()
        .ok_or_else(|| ApiError::internal("a settlement row is not an object"))?;
    let api = match fields.remove(PHASE_API).as_ref().and_then(Value::as_str) {
        Some("v1") => SettlementApi::V1,
        Some("v2") => SettlementApi::V2,
        other => return Err(ApiError::internal(format!("settlement api {other:?}"))),
    };
    let finalized = fields
        .remove(PHASE_FINALIZED)
        .as_ref()
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let status = fields
        .get("status")
        .and_then(Value::as_str)
        .and_then(StatusKind::parse)
        .ok_or_else(|| ApiError::internal("settlement status"))?;
    let top_up_ends = fields
        .get("topUpWindowEndsAt")
        .and_then(Value::as_str)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| Timestamp(t.timestamp_micros()))
        .ok_or_else(|| ApiError::internal("settlement topUpWindowEndsAt"))?;
    let phase = Phase::of(api, status, finalized, top_up_ends, now);
    fields.insert("phase".into(), phase.as_str().into());
    Ok(row)
}

/// One settlement as its side sees it, if it exists.
pub async fn settlement(
    pool: &PgPool,
    side: Side,
    settlement_id: Uuid,
) -> Result<Option<Value>, ApiError> {
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
) -> Result<Vec<Value>, ApiError> {
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
) -> Result<Vec<Value>, ApiError> {
    let scope = match side {
        Side::Partner(_) => "t.partner_enterprise_id = $1",
        Side::Client(_) => {
            "(t.destination_client_enterprise_id = $1 OR t.source_client_enterprise_id = $1)"
        }
    };
    let sql = format!(
        "SELECT {}::text FROM rm_settlement_transfers t
         WHERE {scope} AND ($2::uuid IS NULL OR t.settlement_id = $2)
           AND ($3::text[] IS NULL OR t.currency = ANY($3))
           AND ($4::uuid[] IS NULL OR t.destination_network_account_id = ANY($4))
         ORDER BY t.created_at, t.settlement_id, t.ordinal LIMIT $5 OFFSET $6",
        transfer_json()
    );
    let rows: Vec<(String,)> = sqlx::query_as(&sql)
        .bind(side.column().1)
        .bind(settlement_id)
        .bind(currencies)
        .bind(destinations)
        .bind(i64::from(page.size))
        .bind(page.offset as i64)
        .fetch_all(pool)
        .await
        .map_err(ApiError::internal)?;
    decode(rows)
}
