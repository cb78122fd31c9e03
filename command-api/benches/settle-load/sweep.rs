//! The staging sweep of the load generator: provisioning, history seeding per level, and at each
//! level the closed-loop cells (ours and the raw baseline in alternating slices), the
//! half-capacity open-loop latency, the large settlement and the cold start; then the ranges
//! over runs. Each figure is printed as one `key=value` line.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use serde_json::{json, Map, Value};
use sqlx::PgPool;

use super::server::{Server, ServerEnv};
use super::{
    line_amount, seed_body, settlement_body, settlement_of, venue, App, Args, Funding, Venue,
};

/// Latency histogram in microseconds, up to ten minutes.
fn histogram() -> Result<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 600_000_000, 3)?)
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

/// The mean history of `venues` now.
fn history_now(venues: &[Arc<Venue>]) -> u64 {
    if venues.is_empty() {
        return 0;
    }
    venues
        .iter()
        .map(|v| v.staged.load(Ordering::SeqCst))
        .sum::<u64>()
        / venues.len() as u64
}

/// Stages one settlement, requiring 200; returns when it is answered.
async fn stage(app: &App, v: &Venue, body: &Value) -> Result<()> {
    let (status, answer) = app
        .call(&v.settlements_path(), &v.partner.token, body)
        .await?;
    if status != 200 {
        bail!("staging answered {status}: {answer}");
    }
    v.staged.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

/// Closed loop: one worker per venue stages `lines`-line settlements back to back for `secs`.
/// Returns the settlements completed and the seconds until the last worker finished.
async fn ours_slice(
    app: &Arc<App>,
    venues: &[Arc<Venue>],
    lines: usize,
    secs: f64,
    hist: &mut Histogram<u64>,
) -> Result<(u64, f64)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let workers: Vec<_> = venues
        .iter()
        .map(|v| {
            let (app, v) = (app.clone(), v.clone());
            tokio::spawn(async move {
                let mut hist = histogram()?;
                while Instant::now() < deadline {
                    let body = settlement_body(&v, lines);
                    let sent = Instant::now();
                    stage(&app, &v, &body).await?;
                    hist.record(sent.elapsed().as_micros() as u64)?;
                }
                Ok::<_, anyhow::Error>(hist)
            })
        })
        .collect();
    let mut count = 0;
    for w in workers {
        let h = w.await??;
        count += h.len();
        hist.add(h)?;
    }
    Ok((count, started.elapsed().as_secs_f64()))
}

/// Waits until the sequencer has ordered every event appended so far (its cursor reaches the last
/// appended `(txid, tx_seq)`); returns how long that took. Our slices are charged this tail, so
/// the sequencing work a slice causes never spills into the raw slice after it.
async fn drain(pool: &PgPool) -> Result<Duration> {
    let started = Instant::now();
    let last: Option<(i64, i32)> =
        sqlx::query_as("SELECT txid, tx_seq FROM events ORDER BY txid DESC, tx_seq DESC LIMIT 1")
            .fetch_optional(pool)
            .await?;
    let Some(last) = last else {
        return Ok(started.elapsed());
    };
    loop {
        let cursor: (i64, i32) =
            sqlx::query_as("SELECT last_txid, last_tx_seq FROM sequencer_state WHERE id = 1")
                .fetch_one(pool)
                .await?;
        if cursor >= last {
            return Ok(started.elapsed());
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("the sequencer is still behind {last:?} (at {cursor:?}) after 300 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Raw baseline for `secs`: `concurrency` writers, each statement one multi-row insert of `rows`
/// ~100-byte rows into a copy of the events table, autocommit. Returns the rows written and the
/// seconds until the last writer finished.
async fn raw_slice(
    pool: &PgPool,
    rows: usize,
    concurrency: usize,
    secs: f64,
) -> Result<(u64, f64)> {
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
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
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await??;
    }
    Ok((total, started.elapsed().as_secs_f64()))
}

/// One cell's figures.
#[derive(Clone, Copy, Debug)]
struct Cell {
    settlements_per_s: f64,
    lines_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
    raw_rows_per_s: f64,
    ratio: f64,
    /// Time our slices waited for the sequencer after their last answer (included in the rates).
    sequencer_tail_ms: f64,
}

/// A cell: warm-up of both sides, then `slices` slices per side, alternating ours/raw in the
/// order ours, raw, raw, ours, ours, raw… so that a linear drift weighs on both alike.
async fn cell(
    app: &Arc<App>,
    pool: &PgPool,
    venues: &[Arc<Venue>],
    lines: usize,
    args: &Args,
) -> Result<Cell> {
    let conc = venues.len();
    let warmup = args.warmup.unwrap_or(args.seconds);
    drain(pool).await?;
    if warmup > 0.0 {
        ours_slice(app, venues, lines, warmup, &mut histogram()?).await?;
        drain(pool).await?;
        raw_slice(pool, lines, conc, warmup).await?;
    }
    let mut hist = histogram()?;
    let (mut ours_n, mut ours_s, mut raw_n, mut raw_s) = (0u64, 0.0, 0u64, 0.0);
    let mut tail = Duration::ZERO;
    for i in 0..args.slices {
        for ours_turn in if i.is_multiple_of(2) {
            [true, false]
        } else {
            [false, true]
        } {
            if ours_turn {
                let (n, s) = ours_slice(app, venues, lines, args.seconds, &mut hist).await?;
                let drained = drain(pool).await?;
                tail += drained;
                ours_n += n;
                ours_s += s + drained.as_secs_f64();
            } else {
                let (n, s) = raw_slice(pool, lines, conc, args.seconds).await?;
                raw_n += n;
                raw_s += s;
            }
        }
    }
    let settlements_per_s = ours_n as f64 / ours_s;
    let lines_per_s = settlements_per_s * lines as f64;
    let raw_rows_per_s = raw_n as f64 / raw_s;
    Ok(Cell {
        settlements_per_s,
        lines_per_s,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        raw_rows_per_s,
        ratio: lines_per_s / raw_rows_per_s,
        sequencer_tail_ms: tail.as_secs_f64() * 1000.0,
    })
}

/// Open loop: each venue stages 10-line settlements at its own Poisson arrivals, `rate` in total
/// over all venues, for `secs`; every scheduled arrival is sent (late if the venue's previous one
/// is still being answered: a partner's stagings are sequential) and its latency counts from the
/// scheduled instant. Returns the histogram and the achieved arrival rate.
async fn open_loop(
    app: &Arc<App>,
    venues: &[Arc<Venue>],
    lines: usize,
    rate: f64,
    secs: f64,
    seed: u64,
) -> Result<(Histogram<u64>, f64)> {
    let started = tokio::time::Instant::now();
    let end = started + Duration::from_secs_f64(secs);
    let per_venue = rate / venues.len() as f64;
    let workers: Vec<_> = venues
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let (app, v) = (app.clone(), v.clone());
            tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed * 1_000 + i as u64);
                let mut gap = move || {
                    let u: f64 = rng.gen();
                    Duration::from_secs_f64(-(1.0 - u).ln() / per_venue)
                };
                let mut hist = histogram()?;
                let mut scheduled = started + gap();
                while scheduled < end {
                    tokio::time::sleep_until(scheduled).await;
                    let body = settlement_body(&v, lines);
                    stage(&app, &v, &body).await?;
                    hist.record(scheduled.elapsed().as_micros().max(1) as u64)?;
                    scheduled += gap();
                }
                Ok::<_, anyhow::Error>(hist)
            })
        })
        .collect();
    let mut total = histogram()?;
    for w in workers {
        total.add(w.await??)?;
    }
    let achieved = total.len() as f64 / secs;
    Ok((total, achieved))
}

/// Grows every venue's history to at least `target` settlements with 1-line stagings, one worker
/// per venue (a partner's stagings are sequential). Returns the settlements staged.
async fn seed_history(app: &Arc<App>, venues: &[Arc<Venue>], target: u64) -> Result<u64> {
    let workers: Vec<_> = venues
        .iter()
        .map(|v| {
            let (app, v) = (app.clone(), v.clone());
            tokio::spawn(async move {
                let mut staged = 0u64;
                while v.staged.load(Ordering::SeqCst) < target {
                    let k = v.staged.load(Ordering::SeqCst);
                    let body = seed_body(&v, k);
                    // `ok` retries contention with the same (idempotent) request.
                    app.ok(&v.settlements_path(), &v.partner.token, body)
                        .await?;
                    v.staged.fetch_add(1, Ordering::SeqCst);
                    staged += 1;
                }
                Ok::<_, anyhow::Error>(staged)
            })
        })
        .collect();
    let mut total = 0;
    for w in workers {
        total += w.await??;
    }
    Ok(total)
}

/// The large settlement: every connection of `big`, even-indexed lines losses. Returns ms.
async fn stage_big(app: &App, big: &Venue) -> Result<f64> {
    let amounts: Map<String, Value> = big
        .connections
        .iter()
        .enumerate()
        .map(|(i, c)| (c.clone(), json!({"BTC": line_amount(i)})))
        .collect();
    let body = settlement_of(big, amounts);
    let sent = Instant::now();
    stage(app, big, &body).await?;
    Ok(sent.elapsed().as_secs_f64() * 1000.0)
}

fn range(values: impl Iterator<Item = f64> + Clone, decimals: usize) -> String {
    let min = values.clone().fold(f64::INFINITY, f64::min);
    let max = values.fold(f64::NEG_INFINITY, f64::max);
    format!("{min:.decimals$}-{max:.decimals$}")
}

pub async fn run(server: &mut Server, env: &ServerEnv, pool: &PgPool, args: &Args) -> Result<()> {
    let max_conc = args.conc.iter().copied().max().unwrap_or(1);
    let partners = args.partners.unwrap_or(max_conc).max(1);
    if partners < max_conc {
        bail!(
            "--partners {partners} is below the highest --conc {max_conc}: one partner per worker"
        );
    }
    let max_lines = args.lines.iter().copied().max().unwrap_or(10).max(10);
    let mut levels = args.history.clone();
    levels.sort_unstable();
    levels.dedup();
    println!(
        "settle-load: v2 staging over HTTP to a separate command-api process (signed, idempotent, liability check and holds); \
         slices={} slice_s={} warmup_s={} runs={} partners={partners} lines={:?} conc={:?} history={levels:?}",
        args.slices,
        args.seconds,
        args.warmup.unwrap_or(args.seconds),
        args.runs,
        args.lines,
        args.conc,
    );
    sqlx::query("CREATE TABLE IF NOT EXISTS events_raw (LIKE events INCLUDING ALL)")
        .execute(pool)
        .await?;

    let mut app = Arc::new(App::new(&server.base)?);
    let provisioning = Instant::now();
    let venues: Vec<Arc<Venue>> = futures::future::try_join_all(
        (0..partners as u64).map(|n| venue(&app, n, max_lines, Funding::Losses)),
    )
    .await?
    .into_iter()
    .map(Arc::new)
    .collect();
    let big = if args.big_lines > 0 {
        Some(Arc::new(
            venue(&app, 999, args.big_lines, Funding::Losses).await?,
        ))
    } else {
        None
    };
    println!(
        "provisioned partners={} connections_each={max_lines} big_connections={} s={:.1}",
        partners,
        args.big_lines,
        provisioning.elapsed().as_secs_f64()
    );
    // Everyone whose history is seeded: the measured partners and the large settlement's.
    let seeded: Vec<Arc<Venue>> = venues.iter().cloned().chain(big.clone()).collect();

    type Key = (u64, usize, usize);
    let mut cells: BTreeMap<Key, Vec<Cell>> = BTreeMap::new();
    let mut half: BTreeMap<u64, Vec<(f64, f64, f64)>> = BTreeMap::new();
    for &level in &levels {
        let seeding = Instant::now();
        let staged = seed_history(&app, &seeded, level).await?;
        drain(pool).await?;
        let secs = seeding.elapsed().as_secs_f64();
        println!(
            "seed H={level} settlements={staged} workers={} s={secs:.1} rate={:.0}",
            seeded.len(),
            staged as f64 / secs.max(1e-9)
        );
        for run in 1..=args.runs {
            let mut capacity10: Option<f64> = None;
            for &lines in &args.lines {
                for &conc in &args.conc {
                    // The partners with the least history so far, so that every cell's
                    // history stays as close to the level as the measuring allows.
                    let mut used = venues.clone();
                    used.sort_by_key(|v| v.staged.load(Ordering::SeqCst));
                    used.truncate(conc);
                    let h_now = history_now(&used);
                    let c = cell(&app, pool, &used, lines, args).await?;
                    println!(
                        "history H={level} lines={lines} conc={conc} settl/s={:.1} lines/s={:.0} p50_ms={:.2} p99_ms={:.2} raw_rows/s={:.0} ratio={:.3} run={run} h_now={h_now} seq_tail_ms={:.0}",
                        c.settlements_per_s, c.lines_per_s, c.p50_ms, c.p99_ms, c.raw_rows_per_s, c.ratio, c.sequencer_tail_ms
                    );
                    if lines == 10 {
                        capacity10 = Some(capacity10.unwrap_or(0.0).max(c.settlements_per_s));
                    }
                    cells.entry((level, lines, conc)).or_default().push(c);
                }
            }
            match capacity10 {
                Some(capacity) => {
                    drain(pool).await?;
                    let rate = capacity / 2.0;
                    let h_now = history_now(&venues);
                    let secs = (args.seconds * args.slices.max(1) as f64 * 2.0).max(2.0);
                    let (hist, achieved) =
                        open_loop(&app, &venues, 10, rate, secs, level * 100 + run as u64).await?;
                    let (p50, p99) = (
                        ms(hist.value_at_quantile(0.5)),
                        ms(hist.value_at_quantile(0.99)),
                    );
                    println!(
                        "half-capacity lines=10 H={level} rate={rate:.1} p50_ms={p50:.2} p99_ms={p99:.2} capacity={capacity:.1} achieved={achieved:.1} n={} partners={} s={secs:.1} run={run} h_now={h_now}",
                        hist.len(),
                        venues.len()
                    );
                    half.entry(level).or_default().push((rate, p50, p99));
                }
                None => println!("half-capacity skipped: no 10-line cell (--lines)"),
            }
        }
        if let Some(big) = &big {
            drain(pool).await?;
            let h_now = big.staged.load(Ordering::SeqCst);
            let took = stage_big(&app, big).await?;
            let losses = big.connections.len().div_ceil(2);
            println!(
                "big lines={} losses={losses} H={level} ms={took:.0} h_now={h_now}",
                big.connections.len()
            );
        }
        // Cold start: a new process, whose first command loads the partner's history afresh.
        drain(pool).await?;
        let ready = server.restart(env).await?;
        app = Arc::new(App::new(&server.base)?);
        let v = venues
            .iter()
            .max_by_key(|v| v.staged.load(Ordering::SeqCst))
            .context("no partner")?;
        let h_now = v.staged.load(Ordering::SeqCst);
        let first = {
            let body = settlement_body(v, 10);
            let sent = Instant::now();
            stage(&app, v, &body).await?;
            sent.elapsed().as_secs_f64() * 1000.0
        };
        let mut warm = Vec::new();
        for _ in 0..args.warm_commands {
            let body = settlement_body(v, 10);
            let sent = Instant::now();
            stage(&app, v, &body).await?;
            warm.push(sent.elapsed().as_secs_f64() * 1000.0);
        }
        warm.sort_by(f64::total_cmp);
        let warm_median = warm.get(warm.len() / 2).copied().unwrap_or(f64::NAN);
        let warm_max = warm.last().copied().unwrap_or(f64::NAN);
        println!(
            "cold-start H={level} first_ms={first:.2} warm_ms={warm_median:.2} warm_max_ms={warm_max:.2} warm_n={} ready_ms={:.0} h_now={h_now}",
            warm.len(),
            ready.as_secs_f64() * 1000.0
        );
    }

    for ((level, lines, conc), runs) in &cells {
        let it = runs.iter();
        println!(
            "range history H={level} lines={lines} conc={conc} settl/s={} lines/s={} p50_ms={} p99_ms={} raw_rows/s={} ratio={} runs={}",
            range(it.clone().map(|c| c.settlements_per_s), 1),
            range(it.clone().map(|c| c.lines_per_s), 0),
            range(it.clone().map(|c| c.p50_ms), 2),
            range(it.clone().map(|c| c.p99_ms), 2),
            range(it.clone().map(|c| c.raw_rows_per_s), 0),
            range(it.clone().map(|c| c.ratio), 3),
            runs.len()
        );
    }
    for (level, runs) in &half {
        let it = runs.iter();
        println!(
            "range half-capacity lines=10 H={level} rate={} p50_ms={} p99_ms={} runs={}",
            range(it.clone().map(|r| r.0), 1),
            range(it.clone().map(|r| r.1), 2),
            range(it.clone().map(|r| r.2), 2),
            runs.len()
        );
    }
    Ok(())
}
