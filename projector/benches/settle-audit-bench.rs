//! `settle-audit-bench`: figures for the auditor's tools (docs/benchmarks.md). Builds a log in a
//! fresh database of the local stack — tenants whose allocations carry real Ed25519 signatures,
//! one of them with `--history` events of its own — sequences it, then times, over the same
//! events: a raw ordered scan (the baseline), `verify-chain`, `verify-signatures` (one thread,
//! and every core), the export (JSON Lines, CSV) and an `atPosition` balance read. Prints
//! figures; asserts nothing about time. `deploy/stack audit-bench` runs it in release mode.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use ed25519_dalek::{Signer, SigningKey};
use events::audit::render::Audited;
use events::audit::{chain, log, signatures, state};
use events::codec::{encode_event, Actor, Metadata};
use events::domain::connection::{
    network_account_id_of, AllocationCleared, AllocationKind, AllocationRecord, ConnectionCreated,
};
use events::domain::custody::{CustodyAllocated, CustodyDeallocated, DepositCredited};
use events::domain::enterprise::{EnterpriseCreated, SigningKeyRegistered};
use events::domain::event::Timestamp;
use events::domain::money::{AmountFormat, CurrencyCode};
use events::domain::signed::Signed;
use events::domain::stream::of;
use events::domain::{CommandId, DomainEvent, StreamName};
use events::store::{db, AppendRequest, EventStore, Leadership, NewEvent, Sequencer, StepOutcome};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

#[derive(Debug, Parser)]
#[command(name = "settle-audit-bench")]
struct Args {
    /// Passed by `cargo bench` (which runs this); ignored.
    #[arg(long = "bench", hide = true)]
    _cargo_bench: bool,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Events in the whole log (about).
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Events in the history of the enterprise whose balances are read at a position.
    #[arg(long, default_value_t = 10_000)]
    history: u64,
    /// Other client enterprises sharing the log.
    #[arg(long, default_value_t = 20)]
    tenants: u64,
    /// Keep the benchmark database afterwards.
    #[arg(long)]
    keep: bool,
}

/// Allocations appended per command: the log is built fast, not realistically slowly.
const ALLOCATIONS_PER_APPEND: u64 = 250;

/// One client enterprise with a signing key and a connection.
struct Tenant {
    enterprise: Uuid,
    connection: Uuid,
    key: SigningKey,
    key_id: Uuid,
    allocations: u64,
}

/// Stream versions, for the appends' expectations.
#[derive(Default)]
struct Versions(std::collections::HashMap<StreamName, u64>);

struct Builder {
    store: EventStore,
    versions: Versions,
    commands: u64,
    at: Timestamp,
}

impl Builder {
    async fn append(
        &mut self,
        events: Vec<(StreamName, DomainEvent)>,
        key_id: Option<Uuid>,
    ) -> anyhow::Result<()> {
        self.commands += 1;
        let id = CommandId::derive("audit-bench", &[&self.commands.to_be_bytes()]);
        let mut expected: Vec<(StreamName, u64)> = Vec::new();
        for (stream, _) in &events {
            if !expected.iter().any(|(s, _)| s == stream) {
                expected.push((stream.clone(), *self.versions.0.get(stream).unwrap_or(&0)));
            }
        }
        for (stream, _) in &events {
            *self.versions.0.entry(stream.clone()).or_default() += 1;
        }
        let request = AppendRequest {
            command_id: id,
            request_hash: [0; 32],
            expected,
            events: events
                .iter()
                .map(|(stream, e)| NewEvent {
                    stream: stream.clone(),
                    event: encode_event(e),
                })
                .collect(),
            metadata: Metadata {
                command_id: id,
                causation_id: None,
                correlation_id: id.as_uuid(),
                actor: Actor::User(Uuid::from_u128(7)),
                request_id: Some(format!("bench-{}", self.commands)),
                key_id,
            },
            outcome: Vec::new(),
            nonce: None,
            recorded_at: self.at,
        };
        self.store.append(&request).await.context("append")?;
        self.at = Timestamp(self.at.0 + 1_000);
        Ok(())
    }

    async fn tenant(&mut self, n: u64, partner: Uuid) -> anyhow::Result<Tenant> {
        let enterprise = Uuid::from_u128(0xe000 + u128::from(n));
        let key = SigningKey::from_bytes(&[n as u8 + 1; 32]);
        let key_id = Uuid::from_u128(0x6e00 + u128::from(n));
        let connection = Uuid::from_u128(0xc000 + u128::from(n));
        let at = self.at;
        let btc = CurrencyCode::parse("BTC")?;
        let payload = format!(
            r#"{{"connectionKey":"k","name":"c{n}","nonce":"c{n}","partnerId":"{partner}"}}"#
        );
        let signed = sign(&key, key_id, payload);
        self.append(
            vec![
                (
                    of::enterprise(enterprise),
                    EnterpriseCreated {
                        enterprise_id: enterprise,
                        name: format!("Tenant {n}"),
                        oes_license: true,
                        at,
                    }
                    .into(),
                ),
                (
                    of::enterprise(enterprise),
                    SigningKeyRegistered {
                        enterprise_id: enterprise,
                        key_id,
                        public_key: key.verifying_key().to_bytes(),
                        at,
                    }
                    .into(),
                ),
                (
                    of::custody(enterprise),
                    DepositCredited {
                        enterprise_id: enterprise,
                        deposit_id: Uuid::from_u128(0xd000 + u128::from(n)),
                        external_id: "seed".into(),
                        currency: btc,
                        quantity: 1_000_000_000_000,
                        at,
                    }
                    .into(),
                ),
            ],
            None,
        )
        .await?;
        self.append(
            vec![(
                of::connection(connection),
                ConnectionCreated {
                    connection_id: connection,
                    name: format!("c{n}"),
                    client_id: Uuid::from_u128(0xa000 + u128::from(n)),
                    client_enterprise_id: enterprise,
                    partner_id: partner,
                    partner_enterprise_id: Uuid::from_u128(0xbeef),
                    network_account_id: network_account_id_of(connection),
                    amount_format: AmountFormat::BaseUnits,
                    connection_key: "k".into(),
                    nonce: format!("c{n}"),
                    proof: signed.signature.clone(),
                    at,
                    signed: Some(signed),
                }
                .into(),
            )],
            Some(key_id),
        )
        .await?;
        Ok(Tenant {
            enterprise,
            connection,
            key,
            key_id,
            allocations: 0,
        })
    }

    /// `count` signed allocations of `tenant` (alternately in and out), in as few appends.
    async fn allocations(&mut self, tenant: &mut Tenant, count: u64) -> anyhow::Result<()> {
        let btc = CurrencyCode::parse("BTC")?;
        let mut done = 0;
        while done < count {
            let mut events = Vec::new();
            for _ in 0..ALLOCATIONS_PER_APPEND.min(count - done) {
                let n = tenant.allocations;
                tenant.allocations += 1;
                done += 1;
                let kind = if n.is_multiple_of(2) {
                    AllocationKind::Allocation
                } else {
                    AllocationKind::Deallocation
                };
                let (connection, enterprise) = (tenant.connection, tenant.enterprise);
                let allocation_id = Uuid::new_v5(&connection, &n.to_be_bytes());
                let payload = format!(
                    r#"{{"amount":{{"currency":"BTC","quantity":"1000"}},"clientExternalId":"x{n}","connectionId":"{connection}","enterpriseId":"{enterprise}","nonce":"n{n}"}}"#
                );
                let signed = sign(&tenant.key, tenant.key_id, payload);
                let at = self.at;
                events.push((
                    of::connection(connection),
                    AllocationCleared {
                        allocation: AllocationRecord {
                            allocation_id,
                            kind,
                            connection_id: connection,
                            currency: btc.clone(),
                            quantity: 1_000,
                            client_external_id: format!("x{n}"),
                            initiated_by: Uuid::from_u128(7),
                            notes: None,
                            released: None,
                            at,
                            signed: Some(signed),
                        },
                    }
                    .into(),
                ));
                let custody: DomainEvent = match kind {
                    AllocationKind::Allocation => CustodyAllocated {
                        enterprise_id: enterprise,
                        allocation_id,
                        connection_id: connection,
                        currency: btc.clone(),
                        quantity: 1_000,
                        at,
                    }
                    .into(),
                    AllocationKind::Deallocation => CustodyDeallocated {
                        enterprise_id: enterprise,
                        allocation_id,
                        connection_id: connection,
                        currency: btc.clone(),
                        quantity: 1_000,
                        at,
                    }
                    .into(),
                };
                events.push((of::custody(enterprise), custody));
            }
            self.append(events, Some(tenant.key_id)).await?;
        }
        Ok(())
    }
}

fn sign(key: &SigningKey, key_id: Uuid, payload: String) -> Signed {
    let signature = hex::encode(key.sign(payload.as_bytes()).to_bytes());
    Signed {
        payload,
        signature,
        key_id,
    }
}

async fn sequence_all(url: &str, pool: &sqlx::PgPool) -> anyhow::Result<u64> {
    let leadership = Leadership::try_acquire(url, "settle-audit-bench")
        .await?
        .context("another process leads the benchmark database")?;
    let mut sequencer = Sequencer::resume(pool.clone(), &leadership).await?;
    let started = Instant::now();
    loop {
        match sequencer.step().await? {
            StepOutcome::Sequenced(_) => {}
            StepOutcome::Idle => {
                let pending: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM events e LEFT JOIN event_log l ON l.event_id = e.event_id WHERE l.position IS NULL",
                )
                .fetch_one(pool)
                .await?;
                if pending == 0 {
                    break;
                }
                if started.elapsed() > Duration::from_secs(600) {
                    bail!("sequencer stalled with {pending} events pending");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            StepOutcome::Fenced => bail!("fenced"),
        }
    }
    let last = sequencer.last_position();
    leadership.release().await;
    Ok(last)
}

fn rate(events: u64, elapsed: Duration) -> f64 {
    events as f64 / elapsed.as_secs_f64()
}

fn line(what: &str, events: u64, elapsed: Duration, baseline: Option<f64>) {
    let r = rate(events, elapsed);
    let ratio = baseline.map_or(String::new(), |b| format!("  ({:.2}x raw scan)", r / b));
    println!(
        "{what:<34} {events:>9} events  {:>7.3} s  {:>10.0} events/s{ratio}",
        elapsed.as_secs_f64(),
        r
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let name = format!("audit_bench_{}", Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&args.database_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await?;
    let (server, _) = args
        .database_url
        .rsplit_once('/')
        .context("DATABASE_URL names a database")?;
    let url = format!("{server}/{name}");
    let result = run(&args, &url).await;
    if !args.keep {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .ok();
    } else {
        println!("kept database {name}");
    }
    result
}

async fn run(args: &Args, url: &str) -> anyhow::Result<()> {
    let pool = db::connect(url, 8).await?;
    db::migrate(&pool).await?;
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let started = Instant::now();
    let mut b = Builder {
        store: EventStore::new(pool.clone()),
        versions: Versions::default(),
        commands: 0,
        at: Timestamp(1_767_225_600_000_000),
    };
    let partner = Uuid::from_u128(0xfeed);
    let mut audited = b.tenant(0, partner).await?;
    let mut others = Vec::new();
    for n in 1..=args.tenants {
        others.push(b.tenant(n, partner).await?);
    }
    // Each allocation is two events; the audited tenant's are spread through the log.
    let own = args.history.saturating_sub(4) / 2;
    let rest = args.events.saturating_sub(args.history) / 2;
    let rounds = 20;
    for round in 0..rounds {
        b.allocations(
            &mut audited,
            own / rounds + if round == 0 { own % rounds } else { 0 },
        )
        .await?;
        for t in others.iter_mut() {
            b.allocations(t, rest / rounds / args.tenants.max(1))
                .await?;
        }
    }
    let head = sequence_all(url, &pool).await?;
    // A freshly bulk-loaded table is vacuumed and analysed by autovacuum soon after, slowing
    // whatever runs then; do it now, so the figures are those of a log in its steady state.
    sqlx::query("VACUUM (ANALYZE) events, event_log")
        .execute(&pool)
        .await?;
    println!(
        "log: {head} events ({} signed allocations, {} tenants; the audited one has {} events), built and sequenced in {:.1} s; {cores} cores",
        (head - 5 * (args.tenants + 1)) / 2,
        args.tenants + 1,
        audited.allocations * 2 + 4,
        started.elapsed().as_secs_f64()
    );
    println!();

    // Warm the cache, then the baseline: the same ordered scan every tool does, rows to structs.
    for _ in 0..2 {
        log::for_each_page(&pool, 1, head, |_| Ok(true)).await?;
    }
    let t = Instant::now();
    let mut scanned = 0u64;
    log::for_each_page(&pool, 1, head, |page| {
        scanned += page.len() as u64;
        Ok(true)
    })
    .await?;
    let raw = t.elapsed();
    line("raw ordered scan (baseline)", scanned, raw, None);
    let baseline = Some(rate(scanned, raw));

    let t = Instant::now();
    let report = chain::verify_range(&pool, 1, head, |_, _| {}).await?;
    anyhow::ensure!(
        report.fault.is_none() && report.checked == head,
        "chain verifies"
    );
    line("verify-chain", head, t.elapsed(), baseline);

    for threads in [1, cores] {
        let t = Instant::now();
        let report = signatures::verify_signatures(&pool, 1, head, threads, |_| {}).await?;
        anyhow::ensure!(report.failures.is_empty(), "signatures verify");
        let elapsed = t.elapsed();
        line(
            &format!("verify-signatures ({threads} thread(s))"),
            report.scanned,
            elapsed,
            baseline,
        );
        println!(
            "{:<34} {:>9} signatures            {:>10.0} signatures/s ({:.0} per core)",
            "",
            report.verified,
            rate(report.verified, elapsed),
            rate(report.verified, elapsed) / threads as f64
        );
    }

    for csv in [false, true] {
        let mut sink = std::io::BufWriter::new(std::io::sink());
        let t = Instant::now();
        let mut written = 0u64;
        log::for_each_page(&pool, 1, head, |page| {
            let mut chunk = String::with_capacity(page.len() * 512);
            for event in page {
                let a = Audited::new(event);
                if csv {
                    chunk.push_str(&a.to_csv(None));
                } else {
                    chunk.push_str(&a.to_json(None));
                    chunk.push('\n');
                }
                written += 1;
            }
            sink.write_all(chunk.as_bytes()).map_err(sqlx::Error::Io)?;
            Ok(true)
        })
        .await?;
        line(
            if csv {
                "export --format csv"
            } else {
                "export --format jsonl"
            },
            written,
            t.elapsed(),
            baseline,
        );
    }
    println!();

    for at in [head / 2, head] {
        let mut times = Vec::new();
        let mut folded = 0;
        for _ in 0..30 {
            let t = Instant::now();
            let found = state::balances_at(&pool, audited.enterprise, at).await?;
            times.push(t.elapsed());
            folded = found.events_folded;
        }
        times.sort();
        println!(
            "balances --at-position {at:<9} folds {folded:>6} events: median {:>6.1} ms, max {:>6.1} ms (30 reads)",
            times[times.len() / 2].as_secs_f64() * 1e3,
            times[times.len() - 1].as_secs_f64() * 1e3
        );
    }
    pool.close().await;
    Ok(())
}
