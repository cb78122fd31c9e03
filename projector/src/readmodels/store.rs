//! The read models' SQL: `load` reads the existing rows a batch may change (one statement per
//! table, by the ids `Needs` names), `write` writes what the fold changed: one `UNNEST` insert
//! per table, all sent as one statement (data-modifying CTEs), so a batch's writes are one round
//! trip. Table names are unqualified, so a rebuild or replay writes the same
//! rows into another schema by putting it first on the `search_path`.

use anyhow::Context;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use super::fold::*;

fn ids(set: &std::collections::BTreeSet<Uuid>) -> Vec<Uuid> {
    set.iter().copied().collect()
}

fn quantity(row: &PgRow, column: &str) -> anyhow::Result<i128> {
    let text: String = row.try_get(column)?;
    text.parse()
        .with_context(|| format!("{column} {text} is not an integer amount"))
}

/// Reads the rows named by `needs` that exist.
pub async fn load(tx: &mut PgConnection, needs: &Needs) -> anyhow::Result<Loaded> {
    let mut loaded = Loaded::default();
    if !needs.enterprises.is_empty() {
        loaded.enterprises = sqlx::query(
            "SELECT id, name, oes_license, created_at, updated_at FROM rm_enterprises WHERE id = ANY($1)",
        )
        .bind(ids(&needs.enterprises))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(EnterpriseRow {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                oes_license: r.try_get("oes_license")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    }
    if !needs.keys.is_empty() {
        loaded.keys = sqlx::query(
            "SELECT id, enterprise_id, public_key, created_at, revoked_at FROM rm_keys WHERE id = ANY($1)",
        )
        .bind(ids(&needs.keys))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(KeyRow {
                id: r.try_get("id")?,
                enterprise_id: r.try_get("enterprise_id")?,
                public_key: r.try_get("public_key")?,
                created_at: r.try_get("created_at")?,
                revoked_at: r.try_get("revoked_at")?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    }
    if !needs.partners.is_empty() {
        loaded.partners = sqlx::query(
            "SELECT id, enterprise_id, name, broker, active, client_dispute_window_minutes,
                    top_up_window_minutes, amount_format, connection_key_schema, created_at,
                    updated_at
             FROM rm_partners WHERE id = ANY($1)",
        )
        .bind(ids(&needs.partners))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(PartnerRow {
                id: r.try_get("id")?,
                enterprise_id: r.try_get("enterprise_id")?,
                name: r.try_get("name")?,
                broker: r.try_get("broker")?,
                active: r.try_get("active")?,
                client_dispute_window_minutes: r.try_get("client_dispute_window_minutes")?,
                top_up_window_minutes: r.try_get("top_up_window_minutes")?,
                amount_format: r.try_get("amount_format")?,
                connection_key_schema: r.try_get("connection_key_schema")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    }
    if !needs.connections.is_empty() {
        loaded.connections = sqlx::query(
            "SELECT id, name, client_id, client_enterprise_id, partner_id, partner_enterprise_id,
                    network_account_id, active, nonce, proof, created_at, updated_at
             FROM rm_connections WHERE id = ANY($1)",
        )
        .bind(ids(&needs.connections))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(ConnectionRow {
                id: r.try_get("id")?,
                name: r.try_get("name")?,
                client_id: r.try_get("client_id")?,
                client_enterprise_id: r.try_get("client_enterprise_id")?,
                partner_id: r.try_get("partner_id")?,
                partner_enterprise_id: r.try_get("partner_enterprise_id")?,
                network_account_id: r.try_get("network_account_id")?,
                active: r.try_get("active")?,
                nonce: r.try_get("nonce")?,
                proof: r.try_get("proof")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    }
    if !needs.settlements.is_empty() {
        loaded.settlements = sqlx::query(
            "SELECT id, partner_id, partner_enterprise_id, external_id, api, status, notes, cutoff_at,
                    initiated_by, disputed, reason, dispute_window_ends_at, top_up_window_ends_at,
                    finalized_at, created_at, updated_at, finalized
             FROM rm_settlements WHERE id = ANY($1)",
        )
        .bind(ids(&needs.settlements))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(SettlementRow {
                id: r.try_get("id")?,
                partner_id: r.try_get("partner_id")?,
                partner_enterprise_id: r.try_get("partner_enterprise_id")?,
                external_id: r.try_get("external_id")?,
                api: r.try_get("api")?,
                status: r.try_get("status")?,
                notes: r.try_get("notes")?,
                cutoff_at: r.try_get("cutoff_at")?,
                initiated_by: r.try_get("initiated_by")?,
                disputed: r.try_get("disputed")?,
                reason: r.try_get("reason")?,
                dispute_window_ends_at: r.try_get("dispute_window_ends_at")?,
                top_up_window_ends_at: r.try_get("top_up_window_ends_at")?,
                finalized_at: r.try_get("finalized_at")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
                finalized: r.try_get("finalized")?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    }
    if !needs.transfers_of_settlements.is_empty() || !needs.transfers_of_closures.is_empty() {
        loaded.transfers = sqlx::query(
            "SELECT id, settlement_id, partner_enterprise_id, source_trading_account_id, source_connection_id,
                    source_network_account_id, source_client_enterprise_id, destination_connection_id,
                    destination_trading_account_id, destination_network_account_id,
                    destination_client_enterprise_id, currency, quantity::text AS quantity, status,
                    created_at, updated_at, ordinal, dispute_closure_id
             FROM rm_settlement_transfers WHERE settlement_id = ANY($1) OR dispute_closure_id = ANY($2)",
        )
        .bind(ids(&needs.transfers_of_settlements))
        .bind(ids(&needs.transfers_of_closures))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(TransferRow {
                id: r.try_get("id")?,
                settlement_id: r.try_get("settlement_id")?,
                partner_enterprise_id: r.try_get("partner_enterprise_id")?,
                source_trading_account_id: r.try_get("source_trading_account_id")?,
                source_connection_id: r.try_get("source_connection_id")?,
                source_network_account_id: r.try_get("source_network_account_id")?,
                source_client_enterprise_id: r.try_get("source_client_enterprise_id")?,
                destination_connection_id: r.try_get("destination_connection_id")?,
                destination_trading_account_id: r.try_get("destination_trading_account_id")?,
                destination_network_account_id: r.try_get("destination_network_account_id")?,
                destination_client_enterprise_id: r.try_get("destination_client_enterprise_id")?,
                currency: r.try_get("currency")?,
                quantity: quantity(r, "quantity")?,
                status: r.try_get("status")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
                ordinal: r.try_get("ordinal")?,
                dispute_closure_id: r.try_get("dispute_closure_id")?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    }
    if !needs.disputes.is_empty() {
        loaded.disputes = sqlx::query(
            "SELECT id, settlement_id, partner_enterprise_id, connection_id, client_enterprise_id, user_id,
                    expected_transfers, retracted, reason, retracted_by, retracted_at, retracted_reason,
                    dispute_closure_id, settled_in_settlement_id, created_at, updated_at
             FROM rm_disputes WHERE id = ANY($1)",
        )
        .bind(ids(&needs.disputes))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|r| {
            Ok(DisputeRow {
                id: r.try_get("id")?,
                settlement_id: r.try_get("settlement_id")?,
                partner_enterprise_id: r.try_get("partner_enterprise_id")?,
                connection_id: r.try_get("connection_id")?,
                client_enterprise_id: r.try_get("client_enterprise_id")?,
                user_id: r.try_get("user_id")?,
                expected_transfers: r.try_get("expected_transfers")?,
                retracted: r.try_get("retracted")?,
                reason: r.try_get("reason")?,
                retracted_by: r.try_get("retracted_by")?,
                retracted_at: r.try_get("retracted_at")?,
                retracted_reason: r.try_get("retracted_reason")?,
                dispute_closure_id: r.try_get("dispute_closure_id")?,
                settled_in_settlement_id: r.try_get("settled_in_settlement_id")?,
                created_at: r.try_get("created_at")?,
                updated_at: r.try_get("updated_at")?,
            })
        })
        .collect::<sqlx::Result<_>>()?;
    }
    Ok(loaded)
}

/// Collects one column of the changed rows.
fn col<R, T>(rows: &[&R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(|r| f(r)).collect()
}

/// Each table's write, with its own parameters numbered from `$1`; `write_sql` joins them into
/// one statement of data-modifying CTEs, renumbered, so a batch's writes cost one round trip
/// (a table without changes gets empty arrays and writes nothing).
const TABLE_WRITES: [(&str, usize); 13] = [
    (
        "INSERT INTO rm_enterprises (id, name, oes_license, created_at, updated_at)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::timestamptz[], $5::timestamptz[])
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, oes_license = EXCLUDED.oes_license,
             created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at",
        5,
    ),
    (
        "INSERT INTO rm_keys (id, enterprise_id, public_key, created_at, revoked_at)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[], $5::timestamptz[])
         ON CONFLICT (id) DO UPDATE SET enterprise_id = EXCLUDED.enterprise_id,
             public_key = EXCLUDED.public_key, created_at = EXCLUDED.created_at, revoked_at = EXCLUDED.revoked_at",
        5,
    ),
    (
        // uuid[] per row: sent as array literals, as UNNEST cannot take an array of arrays.
        "INSERT INTO rm_users (id, name, auditor, enterprise_ids, created_at)
         SELECT u.id, u.name, u.auditor, u.ids::uuid[], u.at
         FROM unnest($1::uuid[], $2::text[], $3::bool[], $4::text[], $5::timestamptz[])
              AS u(id, name, auditor, ids, at)
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, auditor = EXCLUDED.auditor,
             enterprise_ids = EXCLUDED.enterprise_ids, created_at = EXCLUDED.created_at",
        5,
    ),
    (
        "INSERT INTO rm_partners (id, enterprise_id, name, broker, active, client_dispute_window_minutes,
                                  top_up_window_minutes, amount_format, connection_key_schema,
                                  created_at, updated_at)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::bool[], $5::bool[], $6::text[],
                              $7::text[], $8::text[], $9::text[], $10::timestamptz[], $11::timestamptz[])
         ON CONFLICT (id) DO UPDATE SET enterprise_id = EXCLUDED.enterprise_id, name = EXCLUDED.name,
             broker = EXCLUDED.broker, active = EXCLUDED.active,
             client_dispute_window_minutes = EXCLUDED.client_dispute_window_minutes,
             top_up_window_minutes = EXCLUDED.top_up_window_minutes, amount_format = EXCLUDED.amount_format,
             connection_key_schema = EXCLUDED.connection_key_schema,
             created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at",
        11,
    ),
    (
        "INSERT INTO rm_clients (id, enterprise_id, wallet_id, created_at, updated_at)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::timestamptz[])
         ON CONFLICT (id) DO UPDATE SET enterprise_id = EXCLUDED.enterprise_id, wallet_id = EXCLUDED.wallet_id,
             created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at",
        5,
    ),
    (
        "INSERT INTO rm_connections (id, name, client_id, client_enterprise_id, partner_id, partner_enterprise_id,
                                     network_account_id, active, nonce, proof, created_at, updated_at)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[],
                              $7::uuid[], $8::bool[], $9::text[], $10::text[], $11::timestamptz[], $12::timestamptz[])
         ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, active = EXCLUDED.active,
             updated_at = EXCLUDED.updated_at",
        12,
    ),
    (
        // Made once, never changed.
        "INSERT INTO rm_allocations (id, type, connection_id, client_enterprise_id, partner_enterprise_id,
                                     currency, quantity, client_external_id, initiated_by, notes, status,
                                     reason, created_at, updated_at)
         SELECT u.id, u.type, u.connection_id, u.client_enterprise_id, u.partner_enterprise_id, u.currency,
                u.quantity::numeric, u.client_external_id, u.initiated_by, u.notes, u.status, u.reason,
                u.created_at, u.updated_at
         FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[], $6::text[], $7::text[],
                     $8::text[], $9::uuid[], $10::text[], $11::text[], $12::text[], $13::timestamptz[],
                     $14::timestamptz[])
              AS u(id, type, connection_id, client_enterprise_id, partner_enterprise_id, currency, quantity,
                   client_external_id, initiated_by, notes, status, reason, created_at, updated_at)
         ON CONFLICT DO NOTHING",
        14,
    ),
    (
        "INSERT INTO rm_deposits (id, enterprise_id, external_id, currency, quantity, created_at)
         SELECT u.id, u.enterprise_id, u.external_id, u.currency, u.quantity::numeric, u.created_at
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::text[], $6::timestamptz[])
              AS u(id, enterprise_id, external_id, currency, quantity, created_at)
         ON CONFLICT DO NOTHING",
        6,
    ),
    (
        // Deltas, in key order, so that two transactions touching the same rows lock them alike.
        "INSERT INTO rm_balances (account_id, currency, owner_enterprise_id, connection_id, available, held)
         SELECT u.account_id, u.currency, u.owner, u.connection_id, u.available::numeric, u.held::numeric
         FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], $5::text[], $6::text[])
              AS u(account_id, currency, owner, connection_id, available, held)
         ON CONFLICT (account_id, currency) DO UPDATE
           SET available = rm_balances.available + EXCLUDED.available,
               held = rm_balances.held + EXCLUDED.held",
        6,
    ),
    (
        "INSERT INTO rm_settlements (id, partner_id, partner_enterprise_id, external_id, api, status, notes,
                                     cutoff_at, initiated_by, disputed, reason, dispute_window_ends_at,
                                     top_up_window_ends_at, finalized_at, created_at, updated_at, finalized)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[],
                              $7::text[], $8::timestamptz[], $9::uuid[], $10::bool[], $11::text[],
                              $12::timestamptz[], $13::timestamptz[], $14::timestamptz[], $15::timestamptz[],
                              $16::timestamptz[], $17::bool[])
         ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, disputed = EXCLUDED.disputed,
             reason = EXCLUDED.reason, finalized_at = EXCLUDED.finalized_at,
             updated_at = EXCLUDED.updated_at, finalized = EXCLUDED.finalized",
        17,
    ),
    (
        "INSERT INTO rm_settlement_transfers (id, settlement_id, partner_enterprise_id, source_trading_account_id,
                source_connection_id, source_network_account_id, source_client_enterprise_id,
                destination_connection_id, destination_trading_account_id, destination_network_account_id,
                destination_client_enterprise_id, currency, quantity, status, created_at, updated_at, ordinal,
                dispute_closure_id)
         SELECT u.id, u.settlement_id, u.partner_enterprise_id, u.source_trading_account_id,
                u.source_connection_id, u.source_network_account_id, u.source_client_enterprise_id,
                u.destination_connection_id, u.destination_trading_account_id,
                u.destination_network_account_id, u.destination_client_enterprise_id, u.currency,
                u.quantity::numeric, u.status, u.created_at, u.updated_at, u.ordinal, u.dispute_closure_id
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[], $7::uuid[],
                     $8::uuid[], $9::uuid[], $10::uuid[], $11::uuid[], $12::text[], $13::text[], $14::text[],
                     $15::timestamptz[], $16::timestamptz[], $17::int[], $18::uuid[])
              AS u(id, settlement_id, partner_enterprise_id, source_trading_account_id, source_connection_id,
                   source_network_account_id, source_client_enterprise_id, destination_connection_id,
                   destination_trading_account_id, destination_network_account_id,
                   destination_client_enterprise_id, currency, quantity, status, created_at, updated_at,
                   ordinal, dispute_closure_id)
         ON CONFLICT (id) DO UPDATE SET settlement_id = EXCLUDED.settlement_id, status = EXCLUDED.status,
             updated_at = EXCLUDED.updated_at, ordinal = EXCLUDED.ordinal",
        18,
    ),
    (
        "INSERT INTO rm_disputes (id, settlement_id, partner_enterprise_id, connection_id, client_enterprise_id,
                user_id, expected_transfers, retracted, reason, retracted_by, retracted_at, retracted_reason,
                dispute_closure_id, settled_in_settlement_id, created_at, updated_at)
         SELECT u.id, u.settlement_id, u.partner_enterprise_id, u.connection_id, u.client_enterprise_id,
                u.user_id, u.expected::jsonb, u.retracted, u.reason, u.retracted_by, u.retracted_at,
                u.retracted_reason, u.closure, u.settled_in, u.created_at, u.updated_at
         FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::uuid[], $5::uuid[], $6::uuid[], $7::text[],
                     $8::bool[], $9::text[], $10::uuid[], $11::timestamptz[], $12::text[], $13::uuid[],
                     $14::uuid[], $15::timestamptz[], $16::timestamptz[])
              AS u(id, settlement_id, partner_enterprise_id, connection_id, client_enterprise_id, user_id,
                   expected, retracted, reason, retracted_by, retracted_at, retracted_reason, closure,
                   settled_in, created_at, updated_at)
         ON CONFLICT (id) DO UPDATE SET expected_transfers = EXCLUDED.expected_transfers,
             retracted = EXCLUDED.retracted, reason = EXCLUDED.reason, retracted_by = EXCLUDED.retracted_by,
             retracted_at = EXCLUDED.retracted_at, retracted_reason = EXCLUDED.retracted_reason,
             dispute_closure_id = EXCLUDED.dispute_closure_id,
             settled_in_settlement_id = EXCLUDED.settled_in_settlement_id, updated_at = EXCLUDED.updated_at",
        16,
    ),
    (
        "INSERT INTO rm_dispute_closures (id, dispute_id, closed_by, user_id, notes, adjusted_transfers, created_at)
         SELECT u.id, u.dispute_id, u.closed_by, u.user_id, u.notes, u.adjusted::jsonb, u.created_at
         FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::text[], $6::text[], $7::timestamptz[])
              AS u(id, dispute_id, closed_by, user_id, notes, adjusted, created_at)
         ON CONFLICT DO NOTHING",
        7,
    ),
];

/// `$n` in `fragment` becomes `$(n + offset)`. Pure.
fn renumber(fragment: &str, offset: usize) -> String {
    let mut out = String::with_capacity(fragment.len() + 16);
    let mut chars = fragment.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' || !chars.peek().is_some_and(char::is_ascii_digit) {
            out.push(c);
            continue;
        }
        let mut n = 0usize;
        while let Some(d) = chars.peek().and_then(|d| d.to_digit(10)) {
            n = n * 10 + d as usize;
            chars.next();
        }
        out.push_str(&format!("${}", n + offset));
    }
    out
}

/// The one write statement for the tables marked in `present` (by their place in
/// `TABLE_WRITES`): each table's insert as a data-modifying CTE (Postgres runs each of them
/// whether or not it is referenced). Only tables with changes take part, so a batch that
/// touches two tables does not open the other eleven; the few combinations that occur are each
/// prepared once per connection.
fn write_sql(present: &[bool; 13]) -> String {
    let mut offset = 0;
    let mut parts = Vec::with_capacity(TABLE_WRITES.len());
    for (k, (fragment, params)) in TABLE_WRITES.iter().enumerate() {
        if present[k] {
            parts.push(format!("w{k} AS ({})", renumber(fragment, offset)));
            offset += params;
        }
    }
    format!("WITH {} SELECT 1", parts.join(",\n"))
}

/// Writes every changed row in one statement: whole rows (`ON CONFLICT DO UPDATE`) for
/// last-state tables, summed deltas for balances.
pub async fn write(tx: &mut PgConnection, rows: &Rows) -> anyhow::Result<()> {
    write_tables(tx, rows, &[true; 13]).await
}

/// The tables, by their place in `TABLE_WRITES`, that a rebuild writes on each of its two
/// connections at once: transfers (the widest rows) and the rarer tables beside allocations,
/// deposits, balances, settlements and disputes — about half of the work each.
pub const REBUILD_SPLIT: [[bool; 13]; 2] = [
    [
        true, true, true, true, true, true, false, false, false, false, true, false, true,
    ],
    [
        false, false, false, false, false, false, true, true, true, true, false, true, false,
    ],
];

/// As `write`, only the tables marked in `only`.
pub async fn write_tables(
    tx: &mut PgConnection,
    rows: &Rows,
    only: &[bool; 13],
) -> anyhow::Result<()> {
    let mut changes = [
        rows.enterprises.changed().len(),
        rows.keys.changed().len(),
        rows.users.changed().len(),
        rows.partners.changed().len(),
        rows.clients.changed().len(),
        rows.connections.changed().len(),
        rows.allocations.changed().len(),
        rows.deposits.changed().len(),
        rows.balances.len(),
        rows.settlements.changed().len(),
        rows.transfers.changed().len(),
        rows.disputes.changed().len(),
        rows.closures.changed().len(),
    ];
    for (n, wanted) in changes.iter_mut().zip(only) {
        if !wanted {
            *n = 0;
        }
    }
    if changes.iter().all(|n| *n == 0) {
        return Ok(());
    }
    let present = changes.map(|n| n > 0);
    let sql = write_sql(&present);
    // Binds one table's columns, or nothing when it has no changes (its CTE is left out).
    macro_rules! table {
        ($q:expr, $k:expr, $($bind:expr),+ $(,)?) => {
            if present[$k] { $q$(.bind($bind))+ } else { $q }
        };
    }
    let q = sqlx::query(&sql);
    let r = rows.enterprises.changed();
    let q = table!(
        q,
        0,
        col(&r, |x| x.id),
        col(&r, |x| x.name.clone()),
        col(&r, |x| x.oes_license),
        col(&r, |x| x.created_at),
        col(&r, |x| x.updated_at),
    );
    let r = rows.keys.changed();
    let q = table!(
        q,
        1,
        col(&r, |x| x.id),
        col(&r, |x| x.enterprise_id),
        col(&r, |x| x.public_key.clone()),
        col(&r, |x| x.created_at),
        col(&r, |x| x.revoked_at),
    );
    let r = rows.users.changed();
    let q = table!(
        q,
        2,
        col(&r, |x| x.id),
        col(&r, |x| x.name.clone()),
        col(&r, |x| x.auditor),
        col(&r, |x| {
            let ids: Vec<String> = x.enterprise_ids.iter().map(Uuid::to_string).collect();
            format!("{{{}}}", ids.join(","))
        }),
        col(&r, |x| x.created_at),
    );
    let r = rows.partners.changed();
    let q = table!(
        q,
        3,
        col(&r, |x| x.id),
        col(&r, |x| x.enterprise_id),
        col(&r, |x| x.name.clone()),
        col(&r, |x| x.broker),
        col(&r, |x| x.active),
        col(&r, |x| x.client_dispute_window_minutes.clone()),
        col(&r, |x| x.top_up_window_minutes.clone()),
        col(&r, |x| x.amount_format.clone()),
        col(&r, |x| x.connection_key_schema.clone()),
        col(&r, |x| x.created_at),
        col(&r, |x| x.updated_at),
    );
    let r = rows.clients.changed();
    let q = table!(
        q,
        4,
        col(&r, |x| x.id),
        col(&r, |x| x.enterprise_id),
        col(&r, |x| x.wallet_id),
        col(&r, |x| x.created_at),
        col(&r, |x| x.updated_at),
    );
    let r = rows.connections.changed();
    let q = table!(
        q,
        5,
        col(&r, |x| x.id),
        col(&r, |x| x.name.clone()),
        col(&r, |x| x.client_id),
        col(&r, |x| x.client_enterprise_id),
        col(&r, |x| x.partner_id),
        col(&r, |x| x.partner_enterprise_id),
        col(&r, |x| x.network_account_id),
        col(&r, |x| x.active),
        col(&r, |x| x.nonce.clone()),
        col(&r, |x| x.proof.clone()),
        col(&r, |x| x.created_at),
        col(&r, |x| x.updated_at),
    );
    let r = rows.allocations.changed();
    let q = table!(
        q,
        6,
        col(&r, |x| x.id),
        col(&r, |x| x.kind),
        col(&r, |x| x.connection_id),
        col(&r, |x| x.client_enterprise_id),
        col(&r, |x| x.partner_enterprise_id),
        col(&r, |x| x.currency.clone()),
        col(&r, |x| x.quantity.to_string()),
        col(&r, |x| x.client_external_id.clone()),
        col(&r, |x| x.initiated_by),
        col(&r, |x| x.notes.clone()),
        col(&r, |x| x.status),
        col(&r, |x| x.reason),
        col(&r, |x| x.created_at),
        col(&r, |x| x.updated_at),
    );
    let r = rows.deposits.changed();
    let q = table!(
        q,
        7,
        col(&r, |x| x.id),
        col(&r, |x| x.enterprise_id),
        col(&r, |x| x.external_id.clone()),
        col(&r, |x| x.currency.clone()),
        col(&r, |x| x.quantity.to_string()),
        col(&r, |x| x.created_at),
    );
    let b: Vec<(&(Uuid, String), &BalanceDelta)> = rows.balances.iter().collect();
    let q = table!(
        q,
        8,
        b.iter().map(|((a, _), _)| *a).collect::<Vec<_>>(),
        b.iter().map(|((_, c), _)| c.clone()).collect::<Vec<_>>(),
        b.iter()
            .map(|(_, d)| d.owner_enterprise_id)
            .collect::<Vec<_>>(),
        b.iter().map(|(_, d)| d.connection_id).collect::<Vec<_>>(),
        b.iter()
            .map(|(_, d)| d.available.to_string())
            .collect::<Vec<_>>(),
        b.iter()
            .map(|(_, d)| d.held.to_string())
            .collect::<Vec<_>>(),
    );
    let r = rows.settlements.changed();
    let q = table!(
        q,
        9,
        col(&r, |x| x.id),
        col(&r, |x| x.partner_id),
        col(&r, |x| x.partner_enterprise_id),
        col(&r, |x| x.external_id.clone()),
        col(&r, |x| x.api.clone()),
        col(&r, |x| x.status.clone()),
        col(&r, |x| x.notes.clone()),
        col(&r, |x| x.cutoff_at),
        col(&r, |x| x.initiated_by),
        col(&r, |x| x.disputed),
        col(&r, |x| x.reason.clone()),
        col(&r, |x| x.dispute_window_ends_at),
        col(&r, |x| x.top_up_window_ends_at),
        col(&r, |x| x.finalized_at),
        col(&r, |x| x.created_at),
        col(&r, |x| x.updated_at),
        col(&r, |x| x.finalized),
    );
    let r = rows.transfers.changed();
    let q = table!(
        q,
        10,
        col(&r, |x| x.id),
        col(&r, |x| x.settlement_id),
        col(&r, |x| x.partner_enterprise_id),
        col(&r, |x| x.source_trading_account_id),
        col(&r, |x| x.source_connection_id),
        col(&r, |x| x.source_network_account_id),
        col(&r, |x| x.source_client_enterprise_id),
        col(&r, |x| x.destination_connection_id),
        col(&r, |x| x.destination_trading_account_id),
        col(&r, |x| x.destination_network_account_id),
        col(&r, |x| x.destination_client_enterprise_id),
        col(&r, |x| x.currency.clone()),
        col(&r, |x| x.quantity.to_string()),
        col(&r, |x| x.status.clone()),
        col(&r, |x| x.created_at),
        col(&r, |x| x.updated_at),
        col(&r, |x| x.ordinal),
        col(&r, |x| x.dispute_closure_id),
    );
    let r = rows.disputes.changed();
    let q = table!(
        q,
        11,
        col(&r, |x| x.id),
        col(&r, |x| x.settlement_id),
        col(&r, |x| x.partner_enterprise_id),
        col(&r, |x| x.connection_id),
        col(&r, |x| x.client_enterprise_id),
        col(&r, |x| x.user_id),
        col(&r, |x| json_text(&x.expected_transfers)),
        col(&r, |x| x.retracted),
        col(&r, |x| x.reason.clone()),
        col(&r, |x| x.retracted_by),
        col(&r, |x| x.retracted_at),
        col(&r, |x| x.retracted_reason.clone()),
        col(&r, |x| x.dispute_closure_id),
        col(&r, |x| x.settled_in_settlement_id),
        col(&r, |x| x.created_at),
        col(&r, |x| x.updated_at),
    );
    let r = rows.closures.changed();
    let q = table!(
        q,
        12,
        col(&r, |x| x.id),
        col(&r, |x| x.dispute_id),
        col(&r, |x| x.closed_by),
        col(&r, |x| x.user_id),
        col(&r, |x| x.notes.clone()),
        col(&r, |x| json_text(&x.adjusted_transfers)),
        col(&r, |x| x.created_at),
    );
    q.execute(&mut *tx).await?;
    Ok(())
}

fn json_text(value: &Value) -> String {
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rebuild_split_writes_every_table_once() {
        for (k, (one, two)) in REBUILD_SPLIT[0].iter().zip(&REBUILD_SPLIT[1]).enumerate() {
            assert!(one ^ two, "table {k}");
        }
    }

    #[test]
    fn placeholders_are_renumbered_for_the_one_statement() {
        assert_eq!(
            renumber("a($1, $2::int[], $10) $x $", 5),
            "a($6, $7::int[], $15) $x $"
        );
        let sql = write_sql(&[true; 13]);
        let total: usize = TABLE_WRITES.iter().map(|(_, n)| n).sum();
        assert!(
            sql.contains(&format!("${total}::")),
            "the last parameter is ${total}"
        );
        assert!(!sql.contains(&format!("${}", total + 1)));
        let some = write_sql(&[
            false, false, false, false, false, false, true, false, true, false, false, false, false,
        ]);
        assert!(
            some.contains("rm_allocations")
                && some.contains("rm_balances")
                && some.contains("$20::text[]")
        );
        assert!(
            !some.contains("rm_users") && !some.contains("$21"),
            "{some}"
        );
        for (fragment, params) in TABLE_WRITES {
            assert!(fragment.contains(&format!("${params}::")), "{fragment}");
            assert!(
                !fragment.contains(&format!("${}", params + 1)),
                "{fragment}"
            );
        }
    }
}
