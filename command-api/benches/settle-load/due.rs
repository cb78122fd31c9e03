//! The finalizer benchmark: N settlements falling due in the same second. Each partner's
//! dispute window is set just before each of its stagings so that every deadline
//! (`createdAt + window`) lands on one target instant; the finalizer binary runs as a real
//! process; the delay from the deadline until each settlement's execution is committed is
//! observed by polling the log every 20 ms (the figure to judge by), and the `at` of
//! `SettlementExecuted` — when the finalizer's step began deciding — is reported beside it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use events::codec::{decode_event, EncodedEvent};
use events::domain::DomainEvent;
use events::service::CommonConfig;
use hdrhistogram::Histogram;
use serde_json::json;
use sqlx::PgPool;

use super::{signed, venue_with, App, Funding, Venue, ADMIN};

/// Stages `count` settlements of `venue` whose deadlines all fall at `target_ms`.
async fn stage_due(
    app: &App,
    v: &Venue,
    count: usize,
    target_ms: i64,
    tag: usize,
    rate: f64,
) -> Result<()> {
    for n in 0..count {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let window_ms = target_ms - now_ms - 20;
        if window_ms <= 0 {
            bail!("staging is slower than {rate}/s; run with a lower --due-rate");
        }
        let minutes = window_ms as f64 / 60_000.0;
        let path = format!("/api/admin/v1/partners/{}", v.partner_id);
        let response = app
            .http
            .patch(format!("{}{path}", app.base))
            .bearer_auth(ADMIN)
            .json(&json!({"clientDisputeWindowMinutes": format!("{minutes:.6}").parse::<f64>()?}))
            .send()
            .await?;
        if !response.status().is_success() {
            bail!("{path}: {}", response.text().await.unwrap_or_default());
        }
        let amounts = json!({&v.connections[0]: {"BTC": "-1"}, &v.connections[1]: {"BTC": "1"}});
        let body = signed(
            &v.partner.key,
            json!({"externalId": format!("due-{tag}-{n}"), "settlementAmounts": amounts, "cutoffAt": v.next_cutoff()}),
            &[],
            &format!("due-{tag}-{n}"),
        );
        app.ok(
            &format!(
                "/api/network/v2/enterprises/{}/partners/settlements",
                v.partner.id
            ),
            &v.partner.token,
            body,
        )
        .await?;
    }
    Ok(())
}

fn start_finalizer(common: &CommonConfig) -> Result<tokio::process::Child> {
    // `cargo bench` runs this from `target/release/deps`; the finalizer is in `target/release`.
    let exe = std::env::current_exe()?;
    let binary = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("finalizer"))
        .find(|candidate| candidate.is_file())
        .context("no finalizer binary beside this one or in its parent directory")?;
    tokio::process::Command::new(&binary)
        .env("DATABASE_URL", &common.database_url)
        .env("NATS_URL", &common.nats_url)
        .env("SETTLE_EVENTS_STREAM", &common.events_stream)
        .env(
            "SETTLE_EVENTS_SUBJECT_PREFIX",
            &common.events_subject_prefix,
        )
        .env("SETTLE_LISTEN", "127.0.0.1:0")
        .env("SETTLE_FINALIZER_POLL_MS", "10")
        // A local benchmark: the public development webhook key is fine here.
        .env("SETTLE_DEVELOPMENT", "1")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {} (build it first)", binary.display()))
}

async fn executed_count(pool: &PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM events WHERE category = 'settlement' AND type_id = 20",
    )
    .fetch_one(pool)
    .await?)
}

/// Deadline and execution instant (µs) of every executed settlement, from the event log.
async fn delays(pool: &PgPool) -> Result<Vec<i64>> {
    let rows: Vec<(String, i32, i16, Vec<u8>)> = sqlx::query_as(
        "SELECT stream_id, type_id, schema_version, payload FROM events
         WHERE category = 'settlement' AND type_id IN (16, 20) ORDER BY stream_id, version",
    )
    .fetch_all(pool)
    .await?;
    let mut deadline = std::collections::HashMap::new();
    let mut out = Vec::new();
    for (stream, type_id, schema_version, payload) in rows {
        let event = decode_event(&EncodedEvent {
            type_id: type_id as u32,
            schema_version: schema_version as u16,
            payload,
        })?;
        match event {
            DomainEvent::SettlementStaged(e) => {
                deadline.insert(stream, e.at.0 + e.dispute_window_micros);
            }
            DomainEvent::SettlementExecuted(e) => {
                if let Some(d) = deadline.get(&stream) {
                    out.push(e.at.0 - d);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

pub async fn run(
    app: &Arc<App>,
    pool: &PgPool,
    common: &CommonConfig,
    count: usize,
    partners: usize,
    finalizers: usize,
    rate: f64,
) -> Result<()> {
    println!("settle-load: {count} settlements falling due in the same second, {partners} partners, {finalizers} finalizer process(es)");
    println!("provisioning…");
    let venues: Vec<Arc<Venue>> = futures::future::try_join_all(
        (0..partners as u64).map(|n| venue_with(app, 5_000 + n, 2, Funding::All, json!(60))),
    )
    .await?
    .into_iter()
    .map(Arc::new)
    .collect();
    let mut children = Vec::new();
    for _ in 0..finalizers {
        children.push(start_finalizer(common)?);
    }
    let staging_s = count as f64 / rate + 5.0;
    let target_ms = chrono::Utc::now().timestamp_millis() + (staging_s * 1000.0) as i64;
    println!("staging; all deadlines at +{staging_s:.0} s");
    let staged_at = Instant::now();
    let per = count / partners;
    let extra = count % partners;
    let staged = AtomicU64::new(0);
    futures::future::try_join_all(venues.iter().enumerate().map(|(i, v)| {
        let n = per + usize::from(i < extra);
        let staged = &staged;
        async move {
            stage_due(app, v, n, target_ms, i, rate).await?;
            staged.fetch_add(n as u64, Ordering::SeqCst);
            Ok::<_, anyhow::Error>(())
        }
    }))
    .await?;
    println!(
        "staged {} in {:.1} s ({:.0}/s, with a window change before each)",
        staged.load(Ordering::SeqCst),
        staged_at.elapsed().as_secs_f64(),
        count as f64 / staged_at.elapsed().as_secs_f64()
    );
    let target =
        Duration::from_millis((target_ms - chrono::Utc::now().timestamp_millis()).max(0) as u64);
    tokio::time::sleep(target).await;
    let due_at = Instant::now();
    // (time after the deadline, settlements whose execution is committed by then): the honest
    // delay, at the polling's resolution. The `at` in the events is when the step began deciding,
    // shared by every settlement of one finalizer step, so it understates what a settlement waits.
    let mut seen: Vec<(Duration, usize)> = Vec::new();
    loop {
        let executed = executed_count(pool).await?;
        seen.push((due_at.elapsed(), executed as usize));
        if executed as usize >= count {
            break;
        }
        if due_at.elapsed() > Duration::from_secs(600) {
            bail!("only {executed} of {count} executed after 10 minutes");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let all_done = due_at.elapsed();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let delays = delays(pool).await?;
    for d in &delays {
        hist.record((*d).max(1) as u64)?;
    }
    println!(
        "all {count} executed {:.2} s after the deadline (observed by polling the log every 20 ms)",
        all_done.as_secs_f64()
    );
    let committed_by = |q: f64| {
        let wanted = (q * count as f64).ceil() as usize;
        seen.iter()
            .find(|(_, n)| *n >= wanted)
            .map_or(all_done, |(t, _)| *t)
            .as_secs_f64()
            * 1000.0
    };
    println!(
        "deadline → committed (polled every 20 ms): p50 {:.0} ms  p99 {:.0} ms  all {:.0} ms",
        committed_by(0.5),
        committed_by(0.99),
        all_done.as_secs_f64() * 1000.0
    );
    println!(
        "deadline → decided (the step's `at` in SettlementExecuted): p50 {:.0} ms  p99 {:.0} ms  max {:.0} ms  (n={})",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        delays.len()
    );
    for mut child in children {
        child.kill().await.ok();
    }
    Ok(())
}
