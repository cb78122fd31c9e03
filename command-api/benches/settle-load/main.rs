//! Load generator for settlement staging (`deploy/stack load`, a `cargo bench` target).
//!
//! It creates a fresh database on the local stack and runs the command-api as a release process
//! of its own (`server.rs`), configured through its environment and awaited on `/readyz`; every
//! request goes over HTTP, signed with Ed25519 exactly as a partner or client would sign it.
//! Partners and clients are provisioned through the admin and network APIs. Then, for each level
//! of `--history` (prior settlements per partner, seeded through the API with 1-line settlements
//! and grown cumulatively), `sweep.rs` measures:
//! - closed-loop cells per (lines, concurrency), one partner per worker: after a warm-up, slices
//!   of our v2 staging alternate with slices of the raw baseline (one multi-row insert of the same
//!   number of rows per statement into a copy of the events table, same concurrency), so drift
//!   affects both sides alike, and each of our slices waits for (and is charged) the sequencer's
//!   tail so none of our work spills into a raw slice; settlements/s, lines/s, latency
//!   percentiles, raw rows/s, ratio;
//! - 10-line settlements arriving as independent Poisson processes at half the capacity just
//!   measured, latency counted from each request's scheduled time (no coordinated omission);
//! - one settlement of `--big-lines` lines, half of them losses on funded connections;
//! - a cold start: the process is restarted and the first staging's latency is measured, then a
//!   few warm ones.
//!
//! With `--runs N` the measurements (not the seeding) repeat and min–max ranges close the output.
//! Every figure is one line of `key=value` fields for scripts. `--due N` instead measures N
//! settlements falling due in the same second with the finalizer binary (`due.rs`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use ed25519_dalek::{Signer, SigningKey};
use events::service::CommonConfig;
use futures::StreamExt;
use serde_json::{json, Map, Value};
use sqlx::{Connection, PgConnection};

mod due;
mod server;
mod sweep;

const ADMIN: &str = "load-admin-token";

#[derive(Parser, Debug)]
#[command(about = "Settlement staging load generator")]
struct Args {
    /// Passed by `cargo bench` (which runs this); ignored.
    #[arg(long = "bench", hide = true)]
    _cargo_bench: bool,
    /// Seconds of each measurement slice (ours and raw alternate in slices of this length), of
    /// each warm-up, and of the half-capacity measurement per slice pair.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
    /// Slices per side and cell after the warm-up (ours and raw alternate: ours, raw, raw, ours…).
    #[arg(long, default_value_t = 4)]
    slices: usize,
    /// Warm-up seconds per side and cell before the slices (default: `--seconds`).
    #[arg(long)]
    warmup: Option<f64>,
    /// History levels: settlements per partner staged before the cells at that level.
    #[arg(long, value_delimiter = ',', default_value = "0")]
    history: Vec<u64>,
    /// Lines per settlement of the closed-loop cells.
    #[arg(long, value_delimiter = ',', default_value = "10,1000")]
    lines: Vec<usize>,
    /// Concurrency (workers, one partner each) of the closed-loop cells.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16")]
    conc: Vec<usize>,
    /// Partners measured and seeded (default: the highest `--conc`); the half-capacity
    /// arrivals are spread over all of them.
    #[arg(long)]
    partners: Option<usize>,
    /// Repetitions of the measurements at each history level (the seeding is not repeated).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Lines of the single large settlement (half of them losses); 0 skips it.
    #[arg(long, default_value_t = 10_000)]
    big_lines: usize,
    /// Warm commands measured after the first one of a cold start.
    #[arg(long, default_value_t = 5)]
    warm_commands: usize,
    /// `SETTLE_DB_CONNECTIONS` of the command-api process (its own default otherwise).
    #[arg(long)]
    db_connections: Option<u32>,
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
    fn new(base: &str) -> Result<App> {
        Ok(App {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(256)
                .timeout(Duration::from_secs(300))
                .build()?,
        })
    }

    async fn call(&self, path: &str, token: &str, body: &Value) -> Result<(u16, Value)> {
        let response = self
            .http
            .post(format!("{}{path}", self.base))
            .bearer_auth(token)
            .json(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        Ok((status, response.json().await.unwrap_or(Value::Null)))
    }

    /// A call that must answer 200; contention (503) is retried with the same request, which
    /// every command accepts idempotently.
    async fn ok(&self, path: &str, token: &str, body: Value) -> Result<Value> {
        let mut attempt = 0;
        loop {
            let (status, answer) = self.call(path, token, &body).await?;
            match status {
                200 => return Ok(answer),
                503 if attempt < 8 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                }
                _ => bail!("{path}: {status} {answer}"),
            }
        }
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

/// Which connections of a venue get an allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Funding {
    /// The even-indexed ones: the lines that take losses (`settlement_body`).
    Losses,
    All,
}

/// A partner with `connections` connections of its own client.
struct Venue {
    partner: Tenant,
    partner_id: String,
    connections: Vec<String>,
    cutoff_ms: AtomicU64,
    /// v2 settlements staged by this partner so far: its history.
    staged: AtomicU64,
}

impl Venue {
    /// The next `cutoffAt`: now, or just after the previous one if that is later.
    fn next_cutoff(&self) -> String {
        let now_ms = chrono::Utc::now().timestamp_millis() as u64;
        let previous = self
            .cutoff_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |p| {
                Some(now_ms.max(p + 1))
            })
            .unwrap_or_default();
        let cutoff_ms = now_ms.max(previous + 1);
        chrono::DateTime::from_timestamp_millis(cutoff_ms as i64)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    }

    fn settlements_path(&self) -> String {
        format!(
            "/api/network/v2/enterprises/{}/partners/settlements",
            self.partner.id
        )
    }
}

async fn venue(app: &App, n: u64, connections: usize, funding: Funding) -> Result<Venue> {
    venue_with(app, n, connections, funding, Value::Null).await
}

/// Connections of one venue being created (and funded) at once.
const PROVISION_CONCURRENCY: usize = 4;

async fn venue_with(
    app: &App,
    n: u64,
    connections: usize,
    funding: Funding,
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
    let (client, partner_id_ref) = (&client, &partner_id);
    let ids: Vec<String> = futures::stream::iter(0..connections)
        .map(|c| async move {
            let body = signed(
                &client.key,
                json!({"partnerId": partner_id_ref, "name": format!("c{c}"), "connectionKey": "k"}),
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
            let fund = match funding {
                Funding::Losses => c.is_multiple_of(2),
                Funding::All => true,
            };
            if fund {
                let path = format!(
                    "/api/network/v1/enterprises/{}/clients/connections/{id}/allocations",
                    client.id
                );
                let path_ids = [
                    ("connectionId", id.clone()),
                    ("enterpriseId", client.id.clone()),
                ];
                let body = signed(
                    &client.key,
                    json!({"amount": {"currency": "BTC", "quantity": "100000000000"}, "clientExternalId": format!("a{c}")}),
                    &path_ids,
                    &format!("a{c}"),
                );
                app.ok(&path, &client.token, body).await?;
            }
            Ok::<_, anyhow::Error>(id)
        })
        .buffered(PROVISION_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_>>()?;
    Ok(Venue {
        partner,
        partner_id,
        connections: ids,
        cutoff_ms: AtomicU64::new(0),
        staged: AtomicU64::new(0),
    })
}

/// Nonces and external ids, unique across the run.
static NEXT: AtomicU64 = AtomicU64::new(0);

/// One signed v2 settlement of `lines` lines on the venue's first connections: even-indexed
/// lines are losses (the client pays, a hold is placed), odd-indexed ones gains.
fn settlement_body(v: &Venue, lines: usize) -> Value {
    let amounts: Map<String, Value> = v.connections[..lines]
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), json!({"BTC": line_amount(i)})))
        .collect();
    settlement_of(v, amounts)
}

fn line_amount(index: usize) -> &'static str {
    if index.is_multiple_of(2) {
        "-1"
    } else {
        "1"
    }
}

/// A cheap history settlement: one line, rotating over the venue's first ten connections (a loss
/// on the even ones, as in the cells).
fn seed_body(v: &Venue, k: u64) -> Value {
    let i = (k % 10) as usize % v.connections.len();
    let mut amounts = Map::new();
    amounts.insert(v.connections[i].clone(), json!({"BTC": line_amount(i)}));
    settlement_of(v, amounts)
}

fn settlement_of(v: &Venue, amounts: Map<String, Value>) -> Value {
    let n = NEXT.fetch_add(1, Ordering::SeqCst);
    let fields = json!({"externalId": format!("load-{n}"), "settlementAmounts": amounts, "cutoffAt": v.next_cutoff()});
    signed(&v.partner.key, fields, &[], &format!("s-{n}"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let wall = Instant::now();
    let args = Args::parse();
    let base_url =
        std::env::var("DATABASE_URL").context("DATABASE_URL (run through deploy/stack)")?;
    let nats_url = std::env::var("NATS_URL").context("NATS_URL (run through deploy/stack)")?;
    let name = format!("load_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&base_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let (server_url, _) = base_url
        .rsplit_once('/')
        .context("DATABASE_URL names a database")?;
    let url = format!("{server_url}/{name}");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let env = server::ServerEnv {
        common: CommonConfig {
            database_url: url.clone(),
            nats_url,
            events_stream: format!("LOAD_{tag}"),
            events_subject_prefix: format!("load{tag}"),
            db_connections: events::store::db::POOL_CONNECTIONS_DEFAULT,
        },
        db_connections: args.db_connections,
    };

    let outcome = async {
        let (mut server, ready) = server::Server::start(&env).await?;
        println!(
            "server command-api pid={} ready_ms={:.0}",
            server.pid().unwrap_or_default(),
            ready.as_secs_f64() * 1000.0
        );
        let result = async {
            // The generator's own pool: the raw baseline and the `--due` event-log reads.
            let pool = events::store::db::connect(&url, 32).await?;
            let result = if let Some(count) = args.due {
                let app = Arc::new(App::new(&server.base)?);
                due::run(
                    &app,
                    &pool,
                    &env.common,
                    count,
                    args.due_partners,
                    args.finalizers,
                    args.due_rate,
                )
                .await
            } else {
                sweep::run(&mut server, &env, &pool, &args).await
            };
            pool.close().await;
            result
        }
        .await;
        server.stop().await?;
        result
    }
    .await;

    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .ok();
    if let Ok(js) = events::bus::connect(&env.common.nats_url).await {
        js.delete_stream(&env.common.events_stream).await.ok();
    }
    println!("wall s={:.1}", wall.elapsed().as_secs_f64());
    outcome
}
