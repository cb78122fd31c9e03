//! Load generator for settlement staging (issue "Settlements"): runs the command-api in-process on
//! a fresh database of the local stack, provisions partners and clients over HTTP, and stages v2
//! settlements signed with Ed25519 exactly as a partner would. It prints staged settlements/s,
//! lines/s and latency percentiles per (lines, concurrency), the latency of one 10,000-line
//! settlement, and a raw baseline measured in the same run: one multi-row insert of the same
//! number of rows per statement, at the same concurrency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use command_api::Config;
use ed25519_dalek::{Signer, SigningKey};
use events::service::CommonConfig;
use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use sqlx::{Connection, PgConnection, PgPool};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "load-admin-token";

#[derive(Parser, Debug)]
#[command(about = "Settlement staging load generator")]
struct Args {
    /// Passed by `cargo bench` (which runs this); ignored.
    #[arg(long = "bench", hide = true)]
    _cargo_bench: bool,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 3)]
    seconds: u64,
    /// Lines of the single large settlement.
    #[arg(long, default_value_t = 10_000)]
    big_lines: usize,
    /// Instead of the staging figures: stage this many 2-line settlements falling due in the
    /// same second, run the finalizer binary, and measure each one's delay past its deadline.
    #[arg(long)]
    due: Option<usize>,
    /// Partners the due settlements are spread over.
    #[arg(long, default_value_t = 50)]
    due_partners: usize,
    /// Finalizer processes to run for the due benchmark.
    #[arg(long, default_value_t = 1)]
    finalizers: usize,
    /// Staging rate (settlements/s) assumed when placing the common deadline; a slower run stops
    /// rather than measure settlements that were due before they were staged.
    #[arg(long, default_value_t = 150.0)]
    due_rate: f64,
}

struct App {
    base: String,
    http: reqwest::Client,
}

impl App {
    async fn call(&self, path: &str, token: &str, body: Value) -> Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    async fn ok(&self, path: &str, token: &str, body: Value) -> Result<Value> {
        let (status, body) = self.call(path, token, body).await?;
        if status != 200 {
            bail!("{path}: {status} {body}");
        }
        Ok(body)
    }
}

/// Signs `fields` plus `nonce` as docs/api/signatures.md describes: the canonical payload, Ed25519.
fn signed(key: &SigningKey, mut fields: Value, path_ids: &[(&str, String)], nonce: &str) -> Value {
    fields["nonce"] = nonce.into();
    let mut payload_fields = fields.as_object().cloned().unwrap_or_default();
    for (k, v) in path_ids {
        payload_fields.insert((*k).to_owned(), v.clone().into());
    }
    let payload = schemas::signing::canonical_payload(&payload_fields);
    fields["signature"] = hex::encode(key.sign(payload.as_bytes()).to_bytes()).into();
    fields["payload"] = payload.into();
    fields
}

struct Tenant {
    id: String,
    token: String,
    key: SigningKey,
}

async fn tenant(app: &App, name: &str, seed: u64) -> Result<Tenant> {
    let id = app
        .ok(
            "/api/admin/v1/enterprises",
            ADMIN,
            json!({"name": name, "oesLicense": true}),
        )
        .await?["enterprise"]["id"]
        .as_str()
        .context("id")?
        .to_owned();
    let token = app
        .ok(
            "/api/admin/v1/users",
            ADMIN,
            json!({"name": name, "enterpriseIds": [id]}),
        )
        .await?["accessToken"]
        .as_str()
        .context("token")?
        .to_owned();
    let mut seed_bytes = [7u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_be_bytes());
    let key = SigningKey::from_bytes(&seed_bytes);
    app.ok(
        &format!("/api/admin/v1/enterprises/{id}/keys"),
        ADMIN,
        json!({"publicKey": hex::encode(key.verifying_key().to_bytes())}),
    )
    .await?;
    Ok(Tenant { id, token, key })
}

/// A partner with `connections` connections of its own client, each funded for losses.
struct Venue {
    partner: Tenant,
    partner_id: String,
    connections: Vec<String>,
    cutoff_ms: AtomicU64,
}

async fn venue(app: &App, n: u64, connections: usize, fund: bool) -> Result<Venue> {
    venue_with(app, n, connections, fund, Value::Null).await
}

async fn venue_with(
    app: &App,
    n: u64,
    connections: usize,
    fund: bool,
    dispute_window: Value,
) -> Result<Venue> {
    let partner = tenant(app, &format!("venue-{n}"), 1_000 + n).await?;
    let body = json!({"name": "v", "broker": false, "clientDisputeWindowMinutes": dispute_window, "topUpWindowMinutes": null});
    let partner_id = app
        .ok(
            &format!("/api/admin/v1/enterprises/{}/partner", partner.id),
            ADMIN,
            body,
        )
        .await?["partner"]["id"]
        .as_str()
        .context("partner id")?
        .to_owned();
    let client = tenant(app, &format!("client-{n}"), 2_000 + n).await?;
    app.ok(
        &format!("/api/admin/v1/enterprises/{}/client", client.id),
        ADMIN,
        json!({}),
    )
    .await?;
    let deposit = json!({"currency": "BTC", "quantity": "1000000000000000", "externalId": "seed"});
    app.ok(
        &format!("/api/admin/v1/enterprises/{}/deposits", client.id),
        ADMIN,
        deposit,
    )
    .await?;
    let mut ids = Vec::with_capacity(connections);
    for c in 0..connections {
        let body = signed(
            &client.key,
            json!({"partnerId": partner_id, "name": format!("c{c}"), "connectionKey": "k"}),
            &[],
            &format!("c{c}"),
        );
        let created = app
            .ok(
                &format!(
                    "/api/network/v1/enterprises/{}/clients/connections",
                    client.id
                ),
                &client.token,
                body,
            )
            .await?;
        let id = created["connection"]["id"]
            .as_str()
            .context("connection id")?
            .to_owned();
        if fund {
            let path = format!(
                "/api/network/v1/enterprises/{}/clients/connections/{id}/allocations",
                client.id
            );
            let ids_ = [
                ("connectionId", id.clone()),
                ("enterpriseId", client.id.clone()),
            ];
            let body = signed(
                &client.key,
                json!({"amount": {"currency": "BTC", "quantity": "100000000000"}, "clientExternalId": format!("a{c}")}),
                &ids_,
                &format!("a{c}"),
            );
            app.ok(&path, &client.token, body).await?;
        }
        ids.push(id);
    }
    let now_ms = chrono::Utc::now().timestamp_millis() as u64;
    Ok(Venue {
        partner,
        partner_id,
        connections: ids,
        cutoff_ms: AtomicU64::new(now_ms),
    })
}

/// One signed v2 settlement of `lines` lines on the venue's connections (alternating losses and gains).
fn settlement_body(v: &Venue, lines: usize, n: u64) -> Value {
    let amounts: Map<String, Value> = v.connections[..lines]
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.clone(),
                json!({"BTC": if i % 2 == 0 { "-1" } else { "1" }}),
            )
        })
        .collect();
    // cutoffAt strictly increases per partner and stays near the server's clock.
    let cutoff_ms = v.cutoff_ms.fetch_add(1, Ordering::SeqCst) + 1;
    let cutoff = chrono::DateTime::from_timestamp_millis(cutoff_ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let fields = json!({"externalId": format!("load-{n}"), "settlementAmounts": amounts, "cutoffAt": cutoff});
    signed(&v.partner.key, fields, &[], &format!("s-{n}"))
}

struct Figures {
    settlements_per_s: f64,
    lines_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Stages settlements of `lines` lines from `venues.len()` workers (one partner each) for
/// `seconds`, optionally paced to `rate` settlements/s in total.
async fn stage_load(
    app: &Arc<App>,
    venues: &[Arc<Venue>],
    lines: usize,
    seconds: u64,
    rate: Option<f64>,
) -> Result<Figures> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let per_worker_interval = rate.map(|r| Duration::from_secs_f64(venues.len() as f64 / r));
    let mut workers = Vec::new();
    for v in venues {
        let (app, v) = (app.clone(), v.clone());
        workers.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let mut next_due = Instant::now();
            while Instant::now() < deadline {
                if let Some(interval) = per_worker_interval {
                    tokio::time::sleep_until(next_due.into()).await;
                    next_due += interval;
                }
                let body = settlement_body(&v, lines, NEXT.fetch_add(1, Ordering::SeqCst));
                let sent = Instant::now();
                let (status, answer) = app
                    .call(
                        &format!(
                            "/api/network/v2/enterprises/{}/partners/settlements",
                            v.partner.id
                        ),
                        &v.partner.token,
                        body,
                    )
                    .await?;
                if status != 200 {
                    bail!("staging answered {status}: {answer}");
                }
                hist.record(sent.elapsed().as_micros() as u64)?;
            }
            Ok::<_, anyhow::Error>(hist)
        }));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for w in workers {
        total.add(w.await??)?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = total.len() as f64;
    Ok(Figures {
        settlements_per_s: count / elapsed,
        lines_per_s: count * lines as f64 / elapsed,
        p50_ms: total.value_at_quantile(0.5) as f64 / 1000.0,
        p99_ms: total.value_at_quantile(0.99) as f64 / 1000.0,
    })
}

/// Raw baseline: one multi-row insert of `rows` ~100-byte rows per statement into a copy of the
/// events table, `concurrency` writers, autocommit — rows/s.
async fn raw_rows_per_s(
    pool: &PgPool,
    rows: usize,
    concurrency: usize,
    seconds: u64,
) -> Result<f64> {
    sqlx::query("CREATE TABLE IF NOT EXISTS events_raw (LIKE events INCLUDING ALL)")
        .execute(pool)
        .await?;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let pool = pool.clone();
        workers.push(tokio::spawn(async move {
            let mut written = 0u64;
            while Instant::now() < deadline {
                let ids: Vec<uuid::Uuid> = (0..rows).map(|_| uuid::Uuid::new_v4()).collect();
                let stream = uuid::Uuid::new_v4().to_string();
                let payloads: Vec<Vec<u8>> = (0..rows).map(|_| vec![7u8; 100]).collect();
                sqlx::query(
                    "INSERT INTO events_raw (event_id, txid, tx_seq, category, stream_id, version, type_id, schema_version, payload, metadata, recorded_at)
                     SELECT u.id, pg_current_xact_id()::text::bigint, u.ord::int, 'raw', $2, u.ord, 1, 1, u.payload, '\\x00', now()
                     FROM unnest($1::uuid[], $3::bytea[]) WITH ORDINALITY AS u(id, payload, ord)",
                )
                .bind(&ids)
                .bind(&stream)
                .bind(&payloads)
                .execute(&pool)
                .await?;
                written += rows as u64;
            }
            Ok::<_, anyhow::Error>(written)
        }));
    }
    let mut total = 0;
    for w in workers {
        total += w.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let base_url =
        std::env::var("DATABASE_URL").context("DATABASE_URL (run through deploy/stack)")?;
    let nats_url = std::env::var("NATS_URL").context("NATS_URL (run through deploy/stack)")?;
    let name = format!("load_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let (server, _) = base_url
        .rsplit_once('/')
        .context("DATABASE_URL names a database")?;
    let url = format!("{server}/{name}");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let common = CommonConfig {
        database_url: url.clone(),
        nats_url,
        events_stream: format!("LOAD_{tag}"),
        events_subject_prefix: format!("load{tag}"),
        db_connections: 32,
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let config = Config {
        common: common.clone(),
        listen: base.clone(),
        admin_token: Some(ADMIN.into()),
        sequencer: true,
        currencies: None,
        // A local benchmark: the public development webhook key (and its warning) is fine here.
        webhook_seed: None,
        webhook_allow: None,
        development: true,
        // A load generator is one client sending as fast as it can: no rate limits, and room
        // for every worker in flight.
        edge: command_api::http::edge::EdgeConfig {
            rate_per_token: 0,
            rate_per_address: 0,
            in_flight_max: 100_000,
            ..Default::default()
        },
        // Development mode: the public development audit key signs checkpoints.
        audit: Default::default(),
        command: None,
    };
    let stop = CancellationToken::new();
    let server_task = tokio::spawn(command_api::run(listener, config, stop.clone()));
    let app = Arc::new(App {
        base,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()?,
    });
    for _ in 0..200 {
        if app
            .http
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pool = events::store::db::connect(&url, 32).await?;

    if let Some(count) = args.due {
        due::run(
            &app,
            &pool,
            &common,
            count,
            args.due_partners,
            args.finalizers,
            args.due_rate,
        )
        .await?;
    } else {
        staging_figures(&app, &pool, &args).await?;
    }

    stop.cancel();
    server_task.await??;
    pool.close().await;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .ok();
    if let Ok(js) = events::bus::connect(&common.nats_url).await {
        js.delete_stream(&common.events_stream).await.ok();
    }
    Ok(())
}

/// Staged settlements/s, lines/s and latency per (lines, concurrency), against the raw baseline.
async fn staging_figures(app: &Arc<App>, pool: &PgPool, args: &Args) -> Result<()> {
    let app = app.clone();
    println!("settle-load: v2 staging over HTTP (signed, idempotent, liability check and holds), {} s per measurement", args.seconds);
    println!("provisioning…");
    let small: Vec<Arc<Venue>> =
        futures::future::try_join_all((0..16).map(|n| venue(&app, n, 10, true)))
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();
    let large: Vec<Arc<Venue>> =
        futures::future::try_join_all((100..104).map(|n| venue(&app, n, 1_000, true)))
            .await?
            .into_iter()
            .map(Arc::new)
            .collect();

    println!("\n lines  conc   settl/s     lines/s    p50 ms   p99 ms   raw rows/s   ratio");
    let mut best_small = (0.0f64, 1usize);
    for (lines, venues, concurrencies) in [
        (10usize, &small, [1usize, 4, 16]),
        (1_000, &large, [1, 2, 4]),
    ] {
        for conc in concurrencies {
            let f = stage_load(&app, &venues[..conc], lines, args.seconds, None).await?;
            let raw = raw_rows_per_s(pool, lines, conc, args.seconds).await?;
            println!(
                "{lines:>6} {conc:>5} {:>9.0} {:>11.0} {:>9.2} {:>8.2} {:>12.0} {:>7.2}",
                f.settlements_per_s,
                f.lines_per_s,
                f.p50_ms,
                f.p99_ms,
                raw,
                f.lines_per_s / raw
            );
            if lines == 10 && f.settlements_per_s > best_small.0 {
                best_small = (f.settlements_per_s, conc);
            }
        }
    }
    let (capacity, conc) = best_small;
    let half = stage_load(&app, &small[..conc], 10, args.seconds, Some(capacity / 2.0)).await?;
    println!(
        "\n10-line settlements at half capacity ({:.0}/s of {capacity:.0}/s, concurrency {conc}): p50 {:.2} ms  p99 {:.2} ms",
        half.settlements_per_s, half.p50_ms, half.p99_ms
    );

    println!(
        "provisioning {} connections for one large settlement…",
        args.big_lines
    );
    let big = Arc::new(venue(&app, 999, args.big_lines, false).await?);
    let amounts: Map<String, Value> = big
        .connections
        .iter()
        .map(|c| (c.clone(), json!({"BTC": "1"})))
        .collect();
    let cutoff = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let body = signed(
        &big.partner.key,
        json!({"externalId": "big", "settlementAmounts": amounts, "cutoffAt": cutoff}),
        &[],
        "big",
    );
    let sent = Instant::now();
    app.ok(
        &format!(
            "/api/network/v2/enterprises/{}/partners/settlements",
            big.partner.id
        ),
        &big.partner.token,
        body,
    )
    .await?;
    println!(
        "one {}-line settlement staged in {:.0} ms",
        args.big_lines,
        sent.elapsed().as_secs_f64() * 1000.0
    );
    Ok(())
}

mod due;
