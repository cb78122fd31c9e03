//! The equivalence property of the read side (ADR 0009), end to end over HTTP: a random
//! workload — many tenants, signed allocations and deallocations, signed v2 settlements, client
//! disputes, operator closures carried into the next settlement, a real finalizer — leaves the
//! same read models (every table's digest) when they are applied
//!
//! - (b) live by three projector processes, one of them killed with SIGKILL and a fourth added
//!   while the workload runs;
//! - (a) by one projector process from the same log, from position 0;
//! - (c) by `projector rebuild` from position 0 (which also finds them identical to (b)).

#[path = "../../command-api/tests/api/support.rs"]
#[allow(dead_code)] // the shared harness: this test uses only part of it
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use events::testing::{eventually, process_env, Process, TestDb};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::Method;
use serde_json::{json, Value};
use support::*;

/// Client/partner pairs of the workload.
const WORLDS: usize = 8;
/// Settlement cycles per world (each may be disputed, closed and carried into the next).
const CYCLES: usize = 3;
const PARTITIONS: u32 = 4;
const LEASE_SECONDS: f64 = 2.0;
/// Dispute window of 0.02 minutes (1.2 s), top-up window of 0.005 (0.3 s).
const DISPUTE_MINUTES: f64 = 0.02;
const TOP_UP_MINUTES: f64 = 0.005;

fn projector_env(
    db: &TestDb,
    bus: &events::bus::BusConfig,
    name: &str,
) -> Vec<(&'static str, String)> {
    let mut env = process_env(db, bus);
    env.extend([
        ("SETTLE_PROJECTOR_PARTITIONS", PARTITIONS.to_string()),
        ("SETTLE_PROJECTOR_LEASE_SECONDS", LEASE_SECONDS.to_string()),
        ("SETTLE_PROJECTOR_INSTANCE", name.to_owned()),
        ("SETTLE_PROJECTOR_AUDIT_BATCHES", "true".to_owned()),
    ]);
    env
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn id(v: &Value) -> String {
    v.as_str().expect("an id").to_owned()
}

/// How far the worlds have got, so that the crash and the new instance land inside the run.
#[derive(Default)]
struct Progress {
    allocated: AtomicUsize,
    cycles: AtomicUsize,
}

/// One tenant pair's workload, driven by `seed`.
async fn world_workload(app: &TestApp, n: usize, seed: u64, progress: &Progress) {
    let mut rng = StdRng::seed_from_u64(seed);
    let w = world_with(
        app,
        "baseUnits",
        json!(DISPUTE_MINUTES),
        json!(TOP_UP_MINUTES),
    )
    .await;
    let second = signed(
        &w.client.key,
        json!({"partnerId": w.partner_id, "name": "second", "connectionKey": format!("acct-2-{n}")}),
        &[],
        &format!("connect-2-{n}"),
    );
    let c2 = id(&app
        .post(
            &format!("/v1/enterprises/{}/clients/connections", w.client.id),
            &w.client.token,
            second,
        )
        .await
        .expect(200, None)["connection"]["id"]);
    let connections = [w.connection_id.clone(), c2];
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/deposits", w.partner.id),
        json!({"currency": "BTC", "quantity": "50000000", "externalId": "p-0"}),
    )
    .await
    .expect(200, None);
    // Allocations and deallocations (some refused for want of funds: released).
    for k in 0..8 {
        let connection = &connections[rng.gen_range(0..2)];
        let kind = if rng.gen_bool(0.7) {
            "allocations"
        } else {
            "deallocations"
        };
        let quantity: u64 = rng.gen_range(1..30_000_000);
        let body = signed(
            &w.client.key,
            json!({"amount": {"currency": "BTC", "quantity": quantity.to_string()}, "clientExternalId": format!("a-{k}")}),
            &[
                ("connectionId", connection.clone()),
                ("enterpriseId", w.client.id.clone()),
            ],
            &format!("a-{k}"),
        );
        let r = app
            .post(
                &format!(
                    "/v1/enterprises/{}/clients/connections/{connection}/{kind}",
                    w.client.id
                ),
                &w.client.token,
                body,
            )
            .await;
        assert!(matches!(r.status.as_u16(), 200 | 422), "{}", r.body);
    }
    progress.allocated.fetch_add(1, Ordering::SeqCst);
    let mut dispute_to_close: Option<String> = None;
    for cycle in 0..CYCLES {
        let amounts = json!({
            &connections[0]: {"BTC": format!("-{}", rng.gen_range(1..1_000))},
            &connections[1]: {"BTC": rng.gen_range(1..1_000).to_string()},
        });
        let external = format!("day-{cycle}");
        let body = signed(
            &w.partner.key,
            json!({"externalId": external, "settlementAmounts": amounts, "cutoffAt": now_rfc3339()}),
            &[],
            &format!("stage-{cycle}"),
        );
        let staged = app
            .post(
                &format!("/v2/enterprises/{}/partners/settlements", w.partner.id),
                &w.partner.token,
                body,
            )
            .await;
        if staged.status.as_u16() != 200 {
            // Short on funds after random deallocations: refused, nothing staged.
            assert_eq!(staged.status.as_u16(), 422, "{}", staged.body);
            progress.cycles.fetch_add(1, Ordering::SeqCst);
            continue;
        }
        let settlement = id(&staged.body["settlement"]["id"]);
        if rng.gen_bool(0.6) {
            let body = signed(
                &w.client.key,
                json!({"connectionId": &connections[0], "reason": "less", "expectedTransfers": {"BTC": "-1"}}),
                &[("settlementId", settlement.clone())],
                &format!("raise-{cycle}"),
            );
            let raised = app
                .post(
                    &format!(
                        "/v1/enterprises/{}/clients/settlements/{settlement}/disputes",
                        w.client.id
                    ),
                    &w.client.token,
                    body,
                )
                .await;
            // The window may already have closed on a loaded machine.
            if raised.status.as_u16() == 200 {
                dispute_to_close = Some(id(&raised.body["dispute"]["id"]));
            }
        }
        // Wait for the finalizer: the settlement completes (or fails, and is retried).
        let done = eventually(Duration::from_secs(60), || {
            let path = format!(
                "/v1/enterprises/{}/partners/settlements/{settlement}",
                w.partner.id
            );
            let token = w.partner.token.clone();
            async move {
                let read = app.get(&path, &token).await;
                read.status.as_u16() == 200 && read.body["settlement"]["status"] == "completed"
            }
        })
        .await;
        assert!(done, "settlement {settlement} of world {n} completes");
        progress.cycles.fetch_add(1, Ordering::SeqCst);
        if let Some(dispute) = dispute_to_close.take() {
            app.admin(
                Method::POST,
                &format!("/disputes/{dispute}/close"),
                json!({"notes": "agreed", "adjustedTransfers": {"BTC": "-2"}}),
            )
            .await
            .expect(200, None);
        }
    }
}

async fn caught_up(pool: &sqlx::PgPool) -> bool {
    let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM event_log")
        .fetch_one(pool)
        .await
        .unwrap();
    let behind: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM consumer_partitions p
         LEFT JOIN consumer_checkpoints c ON c.consumer = p.consumer
         WHERE coalesce(c.position, 0) < $1",
    )
    .bind(head)
    .fetch_one(pool)
    .await
    .unwrap();
    let partitions: i64 = sqlx::query_scalar("SELECT count(*) FROM consumer_partitions")
        .fetch_one(pool)
        .await
        .unwrap();
    head > 0 && partitions == i64::from(1 + 2 * PARTITIONS) && behind == 0
}

/// (gaps or overlaps between consecutive batches of a partition, partitions whose batches reach
/// the head): (0, every partition) when every position was applied once by each.
async fn batches(pool: &sqlx::PgPool) -> (i64, i64) {
    let gaps: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (
             SELECT first_position, lag(last_position) OVER (PARTITION BY consumer ORDER BY first_position) AS previous
             FROM consumer_batches) b
         WHERE first_position <> coalesce(previous, 0) + 1",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    let covered: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT consumer, max(last_position) AS last FROM consumer_batches GROUP BY consumer) c
         WHERE c.last = (SELECT max(position) FROM event_log)",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    (gaps, covered)
}

const GROUPS: [projector::Group; 3] = [
    projector::Group::Catalog,
    projector::Group::ReadModels,
    projector::Group::Notifications,
];

async fn digests(pool: &sqlx::PgPool) -> BTreeMap<String, projector::rebuild::Digest> {
    projector::rebuild::digests(pool, "public", &GROUPS)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_three_with_a_crash_and_a_rebuild_leave_the_same_read_models() {
    let bin = env!("CARGO_BIN_EXE_projector");
    let mut app = TestApp::spawn_api_only(command_api::http::edge::EdgeConfig::default()).await;
    app.start_finalizer(0.5).await;
    let (db, bus) = (&app.db, &app.bus);
    let mut projectors = vec![
        Process::spawn(bin, &projector_env(db, bus, "p1")).await,
        Process::spawn(bin, &projector_env(db, bus, "p2")).await,
        Process::spawn(bin, &projector_env(db, bus, "p3")).await,
    ];
    // (b): the workload, with p2 killed and p4 added while it runs.
    let head = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM events")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    let progress = Progress::default();
    let reached = |what: &'static str, n: usize| {
        let progress = &progress;
        async move {
            let counter = if what == "allocated" {
                &progress.allocated
            } else {
                &progress.cycles
            };
            while counter.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let chaos = async {
        // Once every world has allocated: kill one; a third of the way through the
        // settlements: add one.
        reached("allocated", WORLDS).await;
        let killed = projectors.remove(1);
        let at_kill = head().await;
        println!(
            "SIGKILL projector p2 (pid {}) at {at_kill} events",
            killed.pid()
        );
        killed.kill().await;
        reached("cycles", WORLDS).await;
        let at_add = head().await;
        println!("adding projector p4 at {at_add} events");
        projectors.push(Process::spawn(bin, &projector_env(db, bus, "p4")).await);
        (at_kill, at_add)
    };
    let workload = futures::future::join_all(
        (0..WORLDS).map(|n| world_workload(&app, n, 1_000 + n as u64, &progress)),
    );
    let ((at_kill, at_add), _) = tokio::join!(chaos, workload);
    let total = head().await;
    println!("workload: {total} events");
    assert!(
        0 < at_kill && at_kill < at_add && at_add < total,
        "the crash and the new instance fall inside the workload ({at_kill}, {at_add}, {total})"
    );
    // No more writes: stop the finalizer, let the relay sequence everything and the partitions
    // apply it, then stop the command-api.
    app.stop_finalizers().await;
    let ready = eventually(Duration::from_secs(60), || async {
        let unsequenced: i64 = sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM events) - (SELECT count(*) FROM event_log)",
        )
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        unsequenced == 0 && caught_up(&app.db.pool).await
    })
    .await;
    assert!(
        ready,
        "every event is sequenced and every partition reaches the head"
    );
    app.stop_api().await;
    let live = digests(&app.db.pool).await;
    assert_eq!(
        batches(&app.db.pool).await,
        (0, i64::from(1 + 2 * PARTITIONS)),
        "through the crash, each partition applied 1..=head once"
    );
    assert!(
        live["rm_settlement_transfers"].rows >= WORLDS as i64,
        "{live:?}"
    );
    assert!(
        live["rm_disputes"].rows > 0,
        "the workload disputed something: {live:?}"
    );
    assert!(live["rm_notifications"].rows > 0, "{live:?}");

    // (c): a rebuild from position 0 finds them identical, and swaps in equal tables. Small
    // chunks put many in its pipeline (a chunk folded while the one before it is written).
    let rebuild = tokio::process::Command::new(bin)
        .args([
            "rebuild",
            "--no-progress",
            "--require-identical",
            "--chunk-events",
            "97",
        ])
        .env("DATABASE_URL", &app.db.url)
        .env("SETTLE_PROJECTOR_PARTITIONS", PARTITIONS.to_string())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let reports: Vec<Value> = String::from_utf8_lossy(&rebuild.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        rebuild.status.success(),
        "{}",
        String::from_utf8_lossy(&rebuild.stderr)
    );
    assert_eq!(reports.len(), 3);
    for report in &reports {
        assert_eq!(report["identical"], true, "{report}");
        assert_eq!(report["swapped"], true, "{report}");
    }
    assert_eq!(
        digests(&app.db.pool).await,
        live,
        "the rebuilt tables are the live ones"
    );

    // (a): one instance applies the same log from position 0, on a copy of the database.
    for p in projectors.drain(..) {
        assert!(p.terminate().await.success());
    }
    let copy = app.db.copy().await;
    let tables: Vec<&str> = GROUPS
        .iter()
        .flat_map(|g| g.tables().iter().copied())
        .collect();
    sqlx::raw_sql(&format!(
        "TRUNCATE {};
         DELETE FROM consumer_partitions; DELETE FROM consumer_instances; DELETE FROM consumer_batches;
         DELETE FROM consumer_checkpoints WHERE consumer LIKE 'projector-%';",
        tables.join(", ")
    ))
    .execute(&copy.pool)
    .await
    .unwrap();
    let fresh_bus = events::testing::unique_bus();
    let stop = tokio_util::sync::CancellationToken::new();
    let js = events::testing::jetstream_at(&events::testing::nats_url()).await;
    let (progress, _) = tokio::sync::watch::channel(events::bus::leader::LeaderProgress::default());
    let relay = tokio::spawn(events::bus::leader::run(
        copy.pool.clone(),
        js.clone(),
        events::bus::leader::LeaderConfig::new(copy.url.clone(), "equivalence", fresh_bus.clone()),
        progress,
        stop.clone(),
    ));
    let single = Process::spawn(bin, &projector_env(&copy, &fresh_bus, "single")).await;
    let applied = eventually(Duration::from_secs(120), || caught_up(&copy.pool)).await;
    assert!(applied, "one instance applies the whole log");
    let one = digests(&copy.pool).await;
    // Every partition of the single instance applied the whole log, from position 1, once.
    assert_eq!(
        batches(&copy.pool).await,
        (0, i64::from(1 + 2 * PARTITIONS)),
        "each partition applied 1..=head in contiguous batches"
    );
    assert!(single.terminate().await.success());
    stop.cancel();
    relay.await.unwrap().unwrap();
    let differing: Vec<String> = live
        .iter()
        .filter(|(t, d)| one.get(*t) != Some(d))
        .map(|(t, d)| format!("{t}: three {d:?}, one {:?}", one.get(t)))
        .collect();
    let parked: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT consumer, position, error FROM consumer_parked_events ORDER BY consumer, position LIMIT 5",
    )
    .fetch_all(&copy.pool)
    .await
    .unwrap();
    assert!(
        differing.is_empty(),
        "one instance differs from three: {differing:#?}; parked: {parked:?}"
    );

    js.delete_stream(&fresh_bus.stream).await.ok();
    copy.drop_db().await;
    app.shutdown().await;
}
