//! Rebuild and replay (ADR 0009): projections built from the event log in Postgres —
//! a keyset scan by position, decoded while the previous chunk is applied, never NATS — into a
//! schema of their own at set-based speed, with a progress bar.
//!
//! `rebuild` writes shadow tables while the live partitions keep applying, catches up with
//! them, and then, holding every partition's batch lock (live apply waits), brings each shadow
//! partition exactly to its live checkpoint, compares a digest of every rebuilt table with the
//! live one (listing the rows that differ), and swaps the tables in one transaction: the live
//! checkpoints stay valid for the rebuilt tables, so the partitions carry on from where they
//! were. `replay` builds the tables as they stood at a position into a schema an investigator
//! names, and leaves everything else alone.
//!
//! Table names in the projections' SQL are unqualified; a transaction that puts the shadow
//! schema first on its `search_path` writes the shadow tables (the event store, which exists
//! only in `public`, is still found). Shadow tables have the live tables' columns, checks and
//! unique constraints from the start, and their other indexes (same names) after the bulk load.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use events::bus::consumer::Projection;
use events::bus::partitions::{partition_consumer, register_group, GroupSpec};
use events::codec::{decode_event, SequencedEvent};
use events::domain::DomainEvent;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use crate::route::{route_decoded, Directory};
use crate::{catalog, notifications, readmodels, Config, Group};

/// Events read, decoded and applied per transaction unless told otherwise.
pub const CHUNK_EVENTS_DEFAULT: usize = 100_000;
/// A rebuild chases the live partitions until it is this many chunks behind, at most this many
/// rounds; what is left is applied while live apply waits.
const CHASE_CHUNKS_LEFT_MAX: u64 = 2;
const CHASE_ROUNDS_MAX: usize = 20;
/// Rows listed per table that differs.
const DIFFERENCES_LISTED_MAX: i64 = 10;
/// Decoded chunks read ahead of the one being applied.
const READ_AHEAD_CHUNKS: usize = 2;

#[derive(Clone, Debug, clap::Args)]
pub struct RebuildArgs {
    /// Only this projection: catalog, read-models or notifications (all three when absent).
    #[arg(long)]
    pub projection: Option<String>,
    /// Compare the rebuilt tables with the live ones and keep the live ones.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse to swap when a rebuilt table differs from the live one.
    #[arg(long)]
    pub require_identical: bool,
    /// Events per chunk (read, decoded and written in one transaction).
    #[arg(long, default_value_t = CHUNK_EVENTS_DEFAULT)]
    pub chunk_events: usize,
    /// No progress bar (it is also hidden when standard error is not a terminal).
    #[arg(long)]
    pub no_progress: bool,
}

#[derive(Clone, Debug, clap::Args)]
pub struct ReplayArgs {
    /// The last position applied.
    #[arg(long)]
    pub to_position: u64,
    /// The schema to build into (created; refused if it exists, unless --replace).
    #[arg(long)]
    pub schema: String,
    /// Only this projection (all three when absent).
    #[arg(long)]
    pub projection: Option<String>,
    /// Drop the schema first if it exists.
    #[arg(long)]
    pub replace: bool,
    #[arg(long, default_value_t = CHUNK_EVENTS_DEFAULT)]
    pub chunk_events: usize,
    #[arg(long)]
    pub no_progress: bool,
}

/// A table's digest: its row count and the sum of a 64-bit hash of every row's text, which does
/// not depend on the order rows were written in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Digest {
    pub rows: i64,
    pub sum: String,
}

/// Whether `name` may name a schema we create and drop: lower-case letters, digits and `_`,
/// not a system or the live schema. Pure.
pub fn valid_schema_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name != "public"
        && !name.starts_with("pg_")
        && name != "information_schema"
}

fn check_schema(name: &str) -> anyhow::Result<()> {
    if valid_schema_name(name) {
        Ok(())
    } else {
        bail!("{name} cannot be a schema name here (lower-case letters, digits, _; not public)")
    }
}

/// The digest of `schema.table`.
pub async fn digest(conn: &mut PgConnection, schema: &str, table: &str) -> anyhow::Result<Digest> {
    check_schema_or_public(schema)?;
    let (rows, sum): (i64, String) = sqlx::query_as(&format!(
        "SELECT count(*), coalesce(sum(('x' || substr(md5(t::text), 1, 16))::bit(64)::bigint::numeric), 0)::text
         FROM {schema}.{table} t"
    ))
    .fetch_one(conn)
    .await
    .with_context(|| format!("digest of {schema}.{table}"))?;
    Ok(Digest { rows, sum })
}

/// Digests of every table of `groups` in `schema`.
pub async fn digests(
    pool: &PgPool,
    schema: &str,
    groups: &[Group],
) -> anyhow::Result<BTreeMap<String, Digest>> {
    let mut conn = pool.acquire().await?;
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *conn)
        .await?;
    let mut out = BTreeMap::new();
    for group in groups {
        for table in group.tables() {
            out.insert((*table).to_owned(), digest(&mut conn, schema, table).await?);
        }
    }
    sqlx::query("RESET statement_timeout")
        .execute(&mut *conn)
        .await?;
    Ok(out)
}

fn check_schema_or_public(schema: &str) -> anyhow::Result<()> {
    if schema == "public" {
        Ok(())
    } else {
        check_schema(schema)
    }
}

/// One row that differs between the live and the rebuilt table.
#[derive(Clone, Debug, Serialize)]
pub struct Difference {
    pub key: String,
    /// `only in live`, `only in rebuilt` or `differs`.
    pub kind: String,
    pub live: Option<String>,
    pub rebuilt: Option<String>,
}

/// The primary key columns of `public.table`, as an SQL expression over alias `t`.
async fn key_expression(conn: &mut PgConnection, table: &str) -> anyhow::Result<String> {
    let columns: Vec<String> = sqlx::query_scalar(
        "SELECT quote_ident(a.attname) FROM pg_index i
         JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
         WHERE i.indrelid = ('public.' || quote_ident($1))::regclass AND i.indisprimary
         ORDER BY array_position(i.indkey::int2[], a.attnum)",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    if columns.is_empty() {
        bail!("{table} has no primary key");
    }
    let parts: Vec<String> = columns.iter().map(|c| format!("t.{c}::text")).collect();
    Ok(format!("concat_ws('/', {})", parts.join(", ")))
}

/// Up to `DIFFERENCES_LISTED_MAX` rows that differ between `public.table` and `shadow.table`.
async fn differences(
    conn: &mut PgConnection,
    shadow: &str,
    table: &str,
) -> anyhow::Result<Vec<Difference>> {
    let key = key_expression(conn, table).await?;
    let rows: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(&format!(
        "WITH l AS (SELECT {key} AS k, t::text AS r FROM public.{table} t),
              s AS (SELECT {key} AS k, t::text AS r FROM {shadow}.{table} t)
         SELECT coalesce(l.k, s.k),
                CASE WHEN l.k IS NULL THEN 'only in rebuilt' WHEN s.k IS NULL THEN 'only in live' ELSE 'differs' END,
                l.r, s.r
         FROM l FULL JOIN s ON l.k = s.k WHERE l.r IS DISTINCT FROM s.r ORDER BY 1 LIMIT {DIFFERENCES_LISTED_MAX}"
    ))
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, kind, live, rebuilt)| Difference {
            key,
            kind,
            live,
            rebuilt,
        })
        .collect())
}

/// Creates `schema` with an empty copy of every table in `tables` (and `sinks`): columns,
/// defaults, checks, storage parameters, primary keys and unique constraints (and the indexes
/// of `READ_DURING_REBUILD`). Returns the DDL of the other indexes, to be run once the bulk load
/// is done.
async fn create_shadow(
    conn: &mut PgConnection,
    schema: &str,
    tables: &[&str],
) -> anyhow::Result<Vec<String>> {
    check_schema(schema)?;
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut *conn)
        .await?;
    let mut later = Vec::new();
    for table in tables {
        sqlx::query(&format!(
            "CREATE TABLE {schema}.{table} (LIKE public.{table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING GENERATED)"
        ))
        .execute(&mut *conn)
        .await?;
        // Storage parameters (fillfactor) are not copied by LIKE.
        let options: Option<Vec<String>> = sqlx::query_scalar(
            "SELECT reloptions FROM pg_class WHERE oid = ('public.' || quote_ident($1))::regclass",
        )
        .bind(table)
        .fetch_one(&mut *conn)
        .await?;
        if let Some(options) = options.filter(|o| !o.is_empty()) {
            sqlx::query(&format!(
                "ALTER TABLE {schema}.{table} SET ({})",
                options.join(", ")
            ))
            .execute(&mut *conn)
            .await?;
        }
        let constraints: Vec<(String, String)> = sqlx::query_as(
            "SELECT quote_ident(conname), pg_get_constraintdef(oid) FROM pg_constraint
             WHERE conrelid = ('public.' || quote_ident($1))::regclass AND contype IN ('p', 'u')
             ORDER BY contype, conname",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        for (name, definition) in constraints {
            sqlx::query(&format!(
                "ALTER TABLE {schema}.{table} ADD CONSTRAINT {name} {definition}"
            ))
            .execute(&mut *conn)
            .await?;
        }
        let indexes: Vec<String> = sqlx::query_scalar(
            "SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
             WHERE i.indrelid = ('public.' || quote_ident($1))::regclass
               AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
             ORDER BY i.indexrelid",
        )
        .bind(table)
        .fetch_all(&mut *conn)
        .await?;
        let live = format!(" ON public.{table} ");
        for ddl in indexes {
            if !ddl.contains(&live) {
                bail!("cannot copy index of {table}: {ddl}");
            }
            let ddl = ddl.replacen(&live, &format!(" ON {schema}.{table} "), 1);
            if READ_DURING_REBUILD.contains(table) {
                sqlx::query(&ddl).execute(&mut *conn).await?;
            } else {
                later.push(ddl);
            }
        }
    }
    Ok(later)
}

/// Tables a projection reads by other than their primary key while it applies (a settlement's
/// transfers, a closure's): their indexes are made before the bulk load, not after, or every
/// chunk would scan the whole table.
const READ_DURING_REBUILD: [&str; 1] = ["rm_settlement_transfers"];

/// Puts `schema` first on the transaction's search path and lifts the statement timeout (a
/// chunk of a rebuild is one long statement per table).
async fn use_schema(tx: &mut PgConnection, schema: &str) -> anyhow::Result<()> {
    check_schema(schema)?;
    sqlx::query(&format!("SET LOCAL search_path TO {schema}, public"))
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL statement_timeout = 0")
        .execute(&mut *tx)
        .await?;
    Ok(())
}

type Decoded = Vec<(SequencedEvent, DomainEvent)>;

/// Positions `(after, until]` of the log, at most `limit`, in order: only what projections read
/// (position, event id, stream, version, type and payload). The chain hash, metadata and
/// recording time are left empty — no projection reads them — which halves what the scan
/// moves. Rebuild and replay only.
pub async fn read_log_lean(
    pool: &PgPool,
    after: u64,
    until: u64,
    limit: usize,
) -> anyhow::Result<Vec<SequencedEvent>> {
    use sqlx::Row;
    let rows = sqlx::query(
        "SELECT l.position, e.event_id, e.category, e.stream_id, e.version, e.type_id, e.schema_version, e.payload
         FROM event_log l JOIN events e ON e.event_id = l.event_id
         WHERE l.position > $1 AND l.position <= least($2, $1 + $3) ORDER BY l.position",
    )
    // Positions are dense, so `limit` positions are `limit` events; bounding the range (not
    // only a LIMIT) keeps the planner from joining everything up to `until` for every page
    // and sorting it, which made a rebuild quadratic.
    .bind(after as i64)
    .bind(until as i64)
    .bind(limit as i64)
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let category: &str = row.try_get(2)?;
            let id: &str = row.try_get(3)?;
            Ok(SequencedEvent {
                position: row.try_get::<i64, _>(0)? as u64,
                hash: [0; 32],
                stored: events::codec::StoredEvent {
                    event_id: row.try_get(1)?,
                    stream: events::domain::StreamName::parse(category, id)?,
                    version: row.try_get::<i64, _>(4)? as u64,
                    event: events::codec::EncodedEvent {
                        type_id: u32::try_from(row.try_get::<i32, _>(5)?)?,
                        schema_version: u16::try_from(row.try_get::<i16, _>(6)?)?,
                        payload: row.try_get(7)?,
                    },
                    metadata: Vec::new(),
                    recorded_at: events::domain::event::Timestamp(0),
                },
            })
        })
        .collect()
}

/// Reads positions `(after, until]` in chunks, decoding each on a blocking thread while the
/// previous one is applied.
pub fn read_ahead(
    pool: PgPool,
    after: u64,
    until: u64,
    chunk: usize,
) -> tokio::sync::mpsc::Receiver<anyhow::Result<Decoded>> {
    let (send, receive) = tokio::sync::mpsc::channel(READ_AHEAD_CHUNKS);
    tokio::spawn(async move {
        let mut from = after;
        let chunk = chunk.max(1);
        while from < until {
            let read = read_log_lean(&pool, from, until, chunk).await;
            let decoded = match read {
                Err(e) => Err(e),
                Ok(events) if events.is_empty() => Err(anyhow::anyhow!(
                    "positions {from}..={until} are not in the log"
                )),
                Ok(events) => {
                    from = events.last().map_or(from, |e| e.position);
                    tokio::task::spawn_blocking(move || {
                        events
                            .into_iter()
                            .map(|e| {
                                let decoded = decode_event(&e.stored.event)
                                    .with_context(|| format!("position {}", e.position))?;
                                Ok((e, decoded))
                            })
                            .collect::<anyhow::Result<Decoded>>()
                    })
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|r| r)
                }
            };
            let failed = decoded.is_err();
            if send.send(decoded).await.is_err() || failed {
                return;
            }
        }
    });
    receive
}

/// Applies `chunk` to the group's tables on `tx` (search path already set), each event only
/// if its partition's limit is at or past its position.
async fn apply_chunk(
    tx: &mut PgConnection,
    group: Group,
    partitions: u32,
    directory: &Arc<Directory>,
    chunk: Decoded,
    limit: &(dyn Fn(u32) -> u64 + Sync),
) -> anyhow::Result<()> {
    match group {
        Group::ReadModels => {
            let routed = route_decoded(&mut *tx, directory, chunk, partitions).await?;
            readmodels::apply_selected(tx, directory, &routed, |r| r.position <= limit(r.partition))
                .await
        }
        Group::Catalog => {
            let events: Vec<SequencedEvent> = chunk
                .into_iter()
                .map(|(e, _)| e)
                .filter(|e| e.position <= limit(0))
                .collect();
            catalog::Catalog.apply(tx, &events).await
        }
        Group::Notifications => {
            let events: Vec<SequencedEvent> = chunk.into_iter().map(|(e, _)| e).collect();
            for k in 0..partitions {
                let mine: Vec<SequencedEvent> = events
                    .iter()
                    .filter(|e| e.position <= limit(k))
                    .cloned()
                    .collect();
                if mine.is_empty() {
                    continue;
                }
                let mut projection =
                    notifications::Notifications::new(k, partitions, directory.clone());
                projection.apply(tx, &mine).await?;
            }
            Ok(())
        }
    }
}

fn progress_bar(hidden: bool, total: u64, what: &str) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:32}] {human_pos}/{human_len} events  {per_sec}  ETA {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(what.to_owned());
    bar
}

/// A transaction on the shadow schema whose commit does not wait for the WAL: shadow rows are
/// rebuilt from scratch if anything is lost.
async fn shadow_tx(
    pool: &PgPool,
    schema: &str,
) -> anyhow::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    let mut tx = pool
        .begin_with("BEGIN; SET LOCAL synchronous_commit = off")
        .await?;
    use_schema(&mut tx, schema).await?;
    Ok(tx)
}

/// Writes `rows` on two connections at once (Postgres' writing is most of a rebuild, and one
/// backend uses one core), each half in its own transaction.
async fn write_halves(
    pool: &PgPool,
    schema: &str,
    rows: &readmodels::fold::Rows,
) -> anyhow::Result<()> {
    use readmodels::store::{write_tables, REBUILD_SPLIT};
    let (mut one, mut two) = (
        shadow_tx(pool, schema).await?,
        shadow_tx(pool, schema).await?,
    );
    let (a, b) = tokio::join!(
        write_tables(&mut one, rows, &REBUILD_SPLIT[0]),
        write_tables(&mut two, rows, &REBUILD_SPLIT[1]),
    );
    a?;
    b?;
    one.commit().await?;
    two.commit().await?;
    Ok(())
}

/// Applies positions `(from, to]` of the log to the group's tables in `schema`, chunk by chunk.
/// Returns the events applied.
///
/// The read models go in a pipeline: chunk N+1 is folded while chunk N is written (N's rows
/// taking the place of what N+1 reads of the same rows, as N's writes may not be committed
/// yet; the writes themselves stay in order), and balance deltas, which nothing reads back,
/// are summed over the whole load and written once at its end.
#[allow(
    clippy::too_many_arguments,
    reason = "one private step of the rebuild; each argument is a distinct input it needs"
)]
async fn bulk(
    pool: &PgPool,
    schema: &str,
    group: Group,
    partitions: u32,
    directory: &Arc<Directory>,
    (from, to): (u64, u64),
    chunk: usize,
    bar: &ProgressBar,
) -> anyhow::Result<u64> {
    let mut chunks = read_ahead(pool.clone(), from, to, chunk);
    let mut applied = 0;
    let mut balances = readmodels::fold::Rows::default();
    let mut writing: Option<(
        Arc<readmodels::fold::Rows>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )> = None;
    while let Some(decoded) = chunks.recv().await {
        let decoded = decoded?;
        let (n, last) = (
            decoded.len() as u64,
            decoded.last().map_or(from, |(e, _)| e.position),
        );
        let mut tx = shadow_tx(pool, schema).await?;
        if group == Group::ReadModels {
            let routed = route_decoded(&mut tx, directory, decoded, partitions).await?;
            let previous = writing.as_ref().map(|(rows, _)| rows.as_ref());
            let folded =
                readmodels::fold_over(&mut tx, directory, &routed, |_| true, previous).await?;
            tx.commit().await?;
            if let Some(mut rows) = folded {
                balances.add_balances(std::mem::take(&mut rows.balances))?;
                // The previous chunk's writes end before this chunk's begin.
                if let Some((_, task)) = writing.take() {
                    task.await??;
                }
                let rows = Arc::new(rows);
                let (pool, schema, mine) = (pool.clone(), schema.to_owned(), rows.clone());
                let task = tokio::spawn(async move { write_halves(&pool, &schema, &mine).await });
                writing = Some((rows, task));
            }
        } else {
            apply_chunk(&mut tx, group, partitions, directory, decoded, &|_| {
                u64::MAX
            })
            .await?;
            tx.commit().await?;
        }
        applied += n;
        bar.inc(n);
        bar.set_message(format!("{} position {last}", group.projection()));
    }
    if let Some((_, task)) = writing.take() {
        task.await??;
    }
    if !balances.balances.is_empty() {
        let mut tx = shadow_tx(pool, schema).await?;
        readmodels::store::write(&mut tx, &balances).await?;
        tx.commit().await?;
    }
    Ok(applied)
}

async fn log_head(pool: &PgPool) -> anyhow::Result<u64> {
    let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM event_log")
        .fetch_one(pool)
        .await?;
    Ok(head as u64)
}

/// Live checkpoints of a group's partitions, by partition (empty when it has none).
async fn live_checkpoints(
    conn: &mut PgConnection,
    group: Group,
) -> anyhow::Result<BTreeMap<u32, u64>> {
    let rows: Vec<(i32, i64)> = sqlx::query_as(
        "SELECT p.partition, coalesce(c.position, 0) FROM consumer_partitions p
         LEFT JOIN consumer_checkpoints c ON c.consumer = p.consumer
         WHERE p.consumer_group = $1 ORDER BY p.partition",
    )
    .bind(group.name())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(k, c)| (k as u32, c as u64))
        .collect())
}

/// What a rebuild or replay did to one projection, printed as one JSON line.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub projection: String,
    /// Positions the rebuilt tables reflect, by partition.
    pub positions: BTreeMap<u32, u64>,
    pub events: u64,
    pub seconds: f64,
    pub events_per_second: f64,
    pub tables: Vec<TableReport>,
    pub identical: bool,
    pub swapped: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct TableReport {
    pub table: String,
    pub live: Option<Digest>,
    pub rebuilt: Digest,
    pub identical: bool,
    pub differences: Vec<Difference>,
}

/// What the bulk phase of a rebuild measured (the bench reads it).
#[derive(Clone, Copy, Debug)]
pub struct BulkFigures {
    pub events: u64,
    pub elapsed: Duration,
}

/// Rebuilds `group` (see the module comment). `swap`: replace the live tables (else compare
/// only); `require_identical`: do not swap when a table differs.
pub async fn rebuild_group(
    pool: &PgPool,
    group: Group,
    configured_partitions: u32,
    options: &RebuildArgs,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let shadow = format!("settle_rebuild_{}", group.projection().replace('-', "_"));
    let mut conn = pool.acquire().await?;
    // One rebuild of a projection at a time.
    let lock_key = format!("rebuild:{}", group.name());
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(&lock_key)
        .fetch_one(&mut *conn)
        .await?;
    if !locked {
        bail!("another rebuild of {} is running", group.projection());
    }
    let outcome = rebuild_locked(
        pool,
        group,
        configured_partitions,
        options,
        &shadow,
        started,
    )
    .await;
    sqlx::query("SELECT pg_advisory_unlock(hashtextextended($1, 0))")
        .bind(&lock_key)
        .execute(&mut *conn)
        .await?;
    // Whatever happened, nothing of the rebuild stays behind.
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {shadow} CASCADE"))
        .execute(&mut *conn)
        .await?;
    outcome
}

async fn rebuild_locked(
    pool: &PgPool,
    group: Group,
    configured_partitions: u32,
    options: &RebuildArgs,
    shadow: &str,
    started: Instant,
) -> anyhow::Result<Report> {
    let mut conn = pool.acquire().await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {shadow} CASCADE"))
        .execute(&mut *conn)
        .await?;
    let mut tables: Vec<&str> = group.tables().to_vec();
    tables.extend(group.sinks());
    let deferred = create_shadow(&mut conn, shadow, &tables).await?;
    let live = live_checkpoints(&mut conn, group).await?;
    // A group that never ran is built to the head, and starts from there.
    let fresh = live.is_empty();
    let partitions = if fresh {
        configured_partitions
    } else {
        live.len() as u32
    };
    let target = |live: &BTreeMap<u32, u64>, head: u64| -> u64 {
        if fresh {
            head
        } else {
            live.values().copied().min().unwrap_or(0)
        }
    };
    let directory = Arc::new(Directory::default());
    let chunk = options.chunk_events.max(1);
    let mut reached = 0u64;
    let mut events = 0u64;
    let bar = progress_bar(options.no_progress, 0, group.projection());
    let bulk_started = Instant::now();
    for _ in 0..CHASE_ROUNDS_MAX {
        let live = live_checkpoints(&mut conn, group).await?;
        let goal = target(&live, log_head(pool).await?);
        if goal <= reached + CHASE_CHUNKS_LEFT_MAX * chunk as u64 && reached > 0 {
            break;
        }
        if goal <= reached {
            break;
        }
        bar.set_length(goal);
        bar.set_position(reached);
        events += bulk(
            pool,
            shadow,
            group,
            partitions,
            &directory,
            (reached, goal),
            chunk,
            &bar,
        )
        .await?;
        reached = goal;
    }
    bar.finish_and_clear();
    let bulk_seconds = bulk_started.elapsed().as_secs_f64();
    for ddl in &deferred {
        sqlx::query(ddl).execute(&mut *conn).await?;
    }
    for table in &tables {
        sqlx::query(&format!("ANALYZE {shadow}.{table}"))
            .execute(&mut *conn)
            .await?;
    }
    drop(conn);

    // Live apply waits from here to the commit: the shadow reaches each partition's checkpoint.
    let mut tx = pool.begin().await?;
    use_schema(&mut tx, shadow).await?;
    let spec = GroupSpec::new(group.name(), partitions);
    for name in spec.consumers() {
        events::bus::parked::lock_batch(&mut tx, &name).await?;
    }
    let head = log_head(pool).await?;
    let limits: BTreeMap<u32, u64> = if fresh {
        (0..partitions).map(|k| (k, head)).collect()
    } else {
        live_checkpoints(&mut tx, group).await?
    };
    let last = limits.values().copied().max().unwrap_or(0);
    if last > reached {
        let mut from = reached;
        while from < last {
            let page = read_log_lean(pool, from, last, chunk).await?;
            let Some(end) = page.last().map(|e| e.position) else {
                bail!("positions after {from} are not in the log");
            };
            let decoded = page
                .into_iter()
                .map(|e| {
                    let d = decode_event(&e.stored.event)
                        .with_context(|| format!("position {}", e.position))?;
                    Ok((e, d))
                })
                .collect::<anyhow::Result<Decoded>>()?;
            events += decoded.iter().filter(|(e, _)| e.position > reached).count() as u64;
            let limit = |k: u32| limits.get(&k).copied().unwrap_or(0);
            apply_chunk(&mut tx, group, partitions, &directory, decoded, &limit).await?;
            from = end;
        }
    }
    // Compare, under the same locks: both sides at the same positions.
    let mut reports = Vec::new();
    for table in group.tables() {
        let live = digest(&mut tx, "public", table).await?;
        let rebuilt = digest(&mut tx, shadow, table).await?;
        let identical = live == rebuilt;
        let differences = if identical {
            Vec::new()
        } else {
            differences(&mut tx, shadow, table).await?
        };
        reports.push(TableReport {
            table: (*table).to_owned(),
            live: Some(live),
            rebuilt,
            identical,
            differences,
        });
    }
    let identical = reports.iter().all(|t| t.identical);
    let swap = !options.dry_run && (identical || !options.require_identical);
    if swap {
        let retired = format!("{shadow}_retired");
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {retired} CASCADE"))
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!("CREATE SCHEMA {retired}"))
            .execute(&mut *tx)
            .await?;
        for table in group.tables() {
            sqlx::query(&format!("ALTER TABLE public.{table} SET SCHEMA {retired}"))
                .execute(&mut *tx)
                .await?;
            sqlx::query(&format!("ALTER TABLE {shadow}.{table} SET SCHEMA public"))
                .execute(&mut *tx)
                .await?;
        }
        // The rebuilt tables hold every event's effect, parked ones included: nothing of the
        // group stays parked.
        let names = spec.consumers();
        sqlx::query("DELETE FROM consumer_parked_events WHERE consumer = ANY($1)")
            .bind(&names)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM consumer_parked_streams WHERE consumer = ANY($1)")
            .bind(&names)
            .execute(&mut *tx)
            .await?;
        if fresh {
            sqlx::query(
                "INSERT INTO consumer_checkpoints (consumer, position, updated_at)
                 SELECT unnest($1::text[]), $2, now()
                 ON CONFLICT (consumer) DO UPDATE SET position = EXCLUDED.position, updated_at = now()",
            )
            .bind(&names)
            .bind(head as i64)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(&format!("DROP SCHEMA {retired} CASCADE"))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        if fresh {
            register_group(pool, &spec).await?;
        }
    } else {
        tx.rollback().await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        projection: group.projection().to_owned(),
        positions: limits,
        events,
        seconds,
        events_per_second: events as f64 / bulk_seconds.max(1e-9),
        tables: reports,
        identical,
        swapped: swap,
    })
}

fn groups_of(projection: Option<&str>) -> anyhow::Result<Vec<Group>> {
    Ok(match projection {
        None => Group::ALL.to_vec(),
        Some(name) => vec![Group::by_projection(name)?],
    })
}

/// `projector rebuild`: one JSON report per projection on standard output; exit code 0 when
/// every projection was rebuilt (and swapped unless `--dry-run`), 1 when a dry run or
/// `--require-identical` found differences.
pub async fn rebuild_command(
    pool: &PgPool,
    config: &Config,
    args: &RebuildArgs,
) -> anyhow::Result<i32> {
    let mut code = 0;
    for group in groups_of(args.projection.as_deref())? {
        let report = rebuild_group(pool, group, group.partitions(&config.scale), args).await?;
        eprintln!(
            "{}: {} events in {:.1} s; {}; {}",
            report.projection,
            report.events,
            report.seconds,
            if report.identical {
                "every table identical to the live one".to_owned()
            } else {
                let differing: Vec<&str> = report
                    .tables
                    .iter()
                    .filter(|t| !t.identical)
                    .map(|t| t.table.as_str())
                    .collect();
                format!("differs from the live tables in {}", differing.join(", "))
            },
            if report.swapped {
                "swapped"
            } else {
                "live tables kept"
            }
        );
        for t in report.tables.iter().filter(|t| !t.identical) {
            for d in &t.differences {
                eprintln!("  {} {}: {}", t.table, d.key, d.kind);
            }
        }
        println!("{}", serde_json::to_string(&report)?);
        if !report.identical && (args.dry_run || args.require_identical) {
            code = 1;
        }
    }
    Ok(code)
}

/// Builds the tables of `groups` as they stood at `position` into `schema` (created). Returns
/// the events applied and the bulk figures.
pub async fn replay(
    pool: &PgPool,
    groups: &[Group],
    partitions: u32,
    position: u64,
    schema: &str,
    chunk: usize,
    progress: bool,
) -> anyhow::Result<BulkFigures> {
    check_schema(schema)?;
    let head = log_head(pool).await?;
    if position > head {
        bail!("position {position} is past the log's head {head}");
    }
    let mut conn = pool.acquire().await?;
    let mut tables: Vec<&str> = Vec::new();
    for group in groups {
        tables.extend(group.tables());
        tables.extend(group.sinks());
    }
    tables.dedup();
    let deferred = create_shadow(&mut conn, schema, &tables).await?;
    let started = Instant::now();
    let mut events = 0;
    for group in groups {
        let directory = Arc::new(Directory::default());
        let bar = progress_bar(!progress, position, group.projection());
        events += bulk(
            pool,
            schema,
            *group,
            group_partitions(*group, partitions),
            &directory,
            (0, position),
            chunk,
            &bar,
        )
        .await?;
        bar.finish_and_clear();
    }
    // The indexes are part of what a rebuild costs: counted.
    for ddl in &deferred {
        sqlx::query(ddl).execute(&mut *conn).await?;
    }
    Ok(BulkFigures {
        events,
        elapsed: started.elapsed(),
    })
}

fn group_partitions(group: Group, partitions: u32) -> u32 {
    match group {
        Group::Catalog => 1,
        _ => partitions,
    }
}

/// `projector replay`: prints one JSON line per table (rows and digest) of the built schema.
pub async fn replay_command(
    pool: &PgPool,
    config: &Config,
    args: &ReplayArgs,
) -> anyhow::Result<i32> {
    check_schema(&args.schema)?;
    let groups = groups_of(args.projection.as_deref())?;
    if args.replace {
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", args.schema))
            .execute(pool)
            .await?;
    }
    let figures = replay(
        pool,
        &groups,
        config.scale.partitions,
        args.to_position,
        &args.schema,
        args.chunk_events.max(1),
        !args.no_progress,
    )
    .await?;
    eprintln!(
        "replayed {} events to position {} into schema {} in {:.1} s",
        figures.events,
        args.to_position,
        args.schema,
        figures.elapsed.as_secs_f64()
    );
    for (table, digest) in digests(pool, &args.schema, &groups).await? {
        println!(
            "{}",
            serde_json::json!({"schema": args.schema, "table": table, "rows": digest.rows, "digest": digest.sum})
        );
    }
    Ok(0)
}

/// The consumer names of a group's partitions.
pub fn group_consumers(group: Group, partitions: u32) -> Vec<String> {
    (0..partitions)
        .map(|k| partition_consumer(group.name(), k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_names_are_plain_identifiers_and_never_the_live_one() {
        for ok in ["audit_2026", "_x", "settle_rebuild_read_models"] {
            assert!(valid_schema_name(ok), "{ok}");
        }
        for bad in [
            "public",
            "pg_temp",
            "Audit",
            "a-b",
            "a;drop",
            "",
            "1x",
            "information_schema",
        ] {
            assert!(!valid_schema_name(bad), "{bad}");
        }
        assert!(!valid_schema_name(&"x".repeat(64)));
    }
}
