//! `settle-audit`: the auditor's command-line tool, for a read-only database role (ADR 0010).
//! It reads the event log directly — never the read models, never through the engine — and
//! writes nothing. The binary (`src/bin/settle-audit.rs`) is a few lines around `run`, which
//! tests call in-process.
//!
//! Exit codes: 0 everything verified (or the export/balances were written); 1 the audit failed
//! (a chain fault, a signature that does not verify, a checkpoint today's log does not extend);
//! 2 the command line is wrong; 3 the tool could not run (database unreachable, unreadable
//! checkpoint file, output not writable).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use events::audit::chain::{self, SignedCheckpoint};
use events::audit::log;
use events::audit::render::Audited;
use events::audit::signatures::verify_signatures;
use events::audit::state::balances_at;
use events::domain::money::format_base_units;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use uuid::Uuid;

/// Exit code of an audit that verified, or of an export or balances written.
pub const EXIT_OK: u8 = 0;
/// Exit code of an audit that found a fault.
pub const EXIT_AUDIT_FAILED: u8 = 1;
/// Exit code of a command line that is wrong (clap's).
pub const EXIT_USAGE: u8 = 2;
/// Exit code of a tool that could not run.
pub const EXIT_CANNOT_RUN: u8 = 3;

#[derive(Debug, Parser)]
#[command(
    name = "settle-audit",
    about = "Verify and export the settlement engine's event log, read-only",
    after_help = "Exit codes: 0 verified / written; 1 audit failed; 2 usage error; 3 could not run."
)]
pub struct Cli {
    /// A Postgres URL; a read-only role (e.g. `settle_audit`, SELECT only) is enough.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// No progress bars (they are drawn only on a terminal anyway).
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Re-walk the hash chain and name the first fault. With `--since`, also prove that today's
    /// log extends a checkpoint kept earlier (`GET /api/audit/v1/chain` → `checkpoint`).
    VerifyChain {
        /// First position (default 1; the stored hash before it is taken as given).
        #[arg(long, conflicts_with = "since")]
        from: Option<u64>,
        /// Last position (default the head).
        #[arg(long)]
        to: Option<u64>,
        /// A checkpoint file: the `checkpoint` object of `GET chain` (or that whole answer).
        #[arg(long)]
        since: Option<PathBuf>,
        /// The audit key's public key (hex) you trust, from `GET /api/audit/v1/key`; the
        /// checkpoint must be signed by it (default: the key named in the file).
        #[arg(long, requires = "since")]
        audit_key: Option<String>,
    },
    /// Re-verify every kept signed instruction under the key that accepted it; lists failures.
    VerifySignatures {
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
        /// Threads verifying signatures (default: every core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Write the events of a range as JSON Lines or CSV (payloads decoded; signed requests kept
    /// as recorded — `verify-signatures` re-verifies them).
    Export {
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long)]
        to: Option<u64>,
        #[arg(long, value_enum, default_value_t = Format::Jsonl)]
        format: Format,
        /// Where to write (default standard output).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// An enterprise's balances as the log stood at a position, folded from the log.
    Balances {
        #[arg(long)]
        enterprise: Uuid,
        /// Default: the head.
        #[arg(long)]
        at_position: Option<u64>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Format {
    Jsonl,
    Csv,
}

/// A failed audit, as opposed to a tool that could not run.
struct AuditFailed;

fn bar(quiet: bool, total: u64, what: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {pos}/{len} positions, {per_sec}, ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

async fn connect(url: &str) -> anyhow::Result<PgPool> {
    // One plain connection first: a pool retries a refused connection until its acquire
    // timeout, and an auditor with a wrong URL should hear about it at once.
    sqlx::Connection::close(
        <sqlx::PgConnection as sqlx::Connection>::connect(url)
            .await
            .context("cannot connect to Postgres (DATABASE_URL)")?,
    )
    .await
    .ok();
    PgPoolOptions::new()
        .max_connections(4)
        .connect(url)
        .await
        .context("cannot connect to Postgres (DATABASE_URL)")
}

async fn head(pool: &PgPool) -> anyhow::Result<u64> {
    Ok(log::head(pool).await?.map_or(0, |h| h.position))
}

fn read_checkpoint(path: &PathBuf) -> anyhow::Result<SignedCheckpoint> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    // Either the checkpoint itself or the whole answer of `GET chain`.
    let checkpoint = value.get("checkpoint").cloned().unwrap_or(value);
    serde_json::from_value(checkpoint)
        .with_context(|| format!("{} holds no checkpoint", path.display()))
}

async fn verify_chain(
    out: &mut dyn Write,
    pool: &PgPool,
    quiet: bool,
    from: Option<u64>,
    to: Option<u64>,
    since: Option<PathBuf>,
    audit_key: Option<String>,
) -> anyhow::Result<Result<(), AuditFailed>> {
    let head = head(pool).await?;
    let to = to.unwrap_or(head).min(head);
    if let Some(path) = since {
        let file = read_checkpoint(&path)?;
        let checkpoint = match chain::check_checkpoint(&file, audit_key.as_deref()) {
            Ok(c) => c,
            Err(failure) => {
                writeln!(
                    out,
                    "{}",
                    json!({"verified": false, "checkpoint": file.position, "failure": failure.to_string()})
                )?;
                return Ok(Err(AuditFailed));
            }
        };
        let progress = bar(quiet, head, "verify-chain --since");
        let report =
            chain::verify_since(pool, &checkpoint, |p, _| progress.set_position(p)).await?;
        progress.finish_and_clear();
        writeln!(
            out,
            "{}",
            json!({
                "verified": report.failure.is_none(),
                "checkpoint": report.checkpoint_position,
                "checkedPositions": report.report.checked,
                "headHash": hex::encode(report.report.head_hash),
                "firstFault": chain::fault_json(&report.report.fault),
                "failure": report.failure.as_ref().map(ToString::to_string),
            })
        )?;
        return Ok(if report.failure.is_none() {
            Ok(())
        } else {
            Err(AuditFailed)
        });
    }
    let from = from.unwrap_or(1).max(1);
    let progress = bar(quiet, to.saturating_sub(from - 1), "verify-chain");
    let report =
        chain::verify_range(pool, from, to, |p, _| progress.set_position(p + 1 - from)).await?;
    progress.finish_and_clear();
    writeln!(
        out,
        "{}",
        json!({
            "verified": report.fault.is_none(),
            "from": from,
            "to": to,
            "checkedPositions": report.checked,
            "headHash": hex::encode(report.head_hash),
            "firstFault": chain::fault_json(&report.fault),
        })
    )?;
    Ok(if report.fault.is_none() {
        Ok(())
    } else {
        Err(AuditFailed)
    })
}

async fn signatures(
    out: &mut dyn Write,
    pool: &PgPool,
    quiet: bool,
    from: u64,
    to: Option<u64>,
    threads: Option<usize>,
) -> anyhow::Result<Result<(), AuditFailed>> {
    let head = head(pool).await?;
    let to = to.unwrap_or(head).min(head);
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let progress = bar(
        quiet,
        to.saturating_sub(from.max(1) - 1),
        "verify-signatures",
    );
    let start = from.max(1);
    let report = verify_signatures(pool, start, to, threads, |p| {
        progress.set_position(p + 1 - start)
    })
    .await?;
    progress.finish_and_clear();
    let failures: Vec<_> = report
        .failures
        .iter()
        .map(|f| json!({"position": f.position, "type": f.event_type, "keyId": f.key_id, "problem": f.problem}))
        .collect();
    writeln!(
        out,
        "{}",
        json!({
            "verified": report.failures.is_empty(),
            "scannedEvents": report.scanned,
            "signaturesChecked": report.verified,
            "signedBeforeRequestsWereKept": report.not_kept,
            "undecodableEvents": report.undecodable,
            "failures": failures,
        })
    )?;
    Ok(if report.failures.is_empty() {
        Ok(())
    } else {
        Err(AuditFailed)
    })
}

async fn export(
    pool: &PgPool,
    quiet: bool,
    from: u64,
    to: Option<u64>,
    format: Format,
    output: Option<PathBuf>,
) -> anyhow::Result<()> {
    let head = head(pool).await?;
    let to = to.unwrap_or(head).min(head);
    let out: Box<dyn Write + Send> = match &output {
        Some(path) => Box::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 20, out);
    if format == Format::Csv {
        out.write_all(Audited::CSV_HEADER.as_bytes())?;
    }
    let start = from.max(1);
    let progress = bar(quiet, to.saturating_sub(start - 1), "export");
    let mut failed: Option<std::io::Error> = None;
    log::for_each_page(pool, start, to, |page| {
        let last = page.last().map_or(start, |e| e.position);
        let mut chunk = String::with_capacity(page.len() * 512);
        for event in page {
            let a = Audited::new(event);
            match format {
                Format::Jsonl => {
                    chunk.push_str(&a.to_json(None));
                    chunk.push('\n');
                }
                Format::Csv => chunk.push_str(&a.to_csv(None)),
            }
        }
        if let Err(e) = out.write_all(chunk.as_bytes()) {
            failed = Some(e);
            return Ok(false);
        }
        progress.set_position(last + 1 - start);
        Ok(true)
    })
    .await?;
    progress.finish_and_clear();
    if let Some(e) = failed {
        return Err(e).context("cannot write the export");
    }
    out.flush().context("cannot write the export")?;
    Ok(())
}

async fn balances(
    out: &mut dyn Write,
    pool: &PgPool,
    enterprise: Uuid,
    at: Option<u64>,
) -> anyhow::Result<()> {
    let head = head(pool).await?;
    let at = at.unwrap_or(head);
    anyhow::ensure!(at <= head, "position {at} is past the log's head {head}");
    let found = balances_at(pool, enterprise, at).await?;
    let map = |b: &std::collections::BTreeMap<String, events::domain::money::Balance>| {
        b.iter()
            .map(|(c, b)| {
                (
                    c.clone(),
                    json!({"available": format_base_units(b.available()), "held": format_base_units(b.held())}),
                )
            })
            .collect::<serde_json::Map<_, _>>()
    };
    let connections: serde_json::Map<String, serde_json::Value> = found
        .connections
        .iter()
        .map(|(c, b)| {
            (
                c.connection_id.to_string(),
                json!({
                    "name": c.name,
                    "clientEnterpriseId": c.client_enterprise_id,
                    "partnerEnterpriseId": c.partner_enterprise_id,
                    "balances": map(b),
                }),
            )
        })
        .collect();
    writeln!(
        out,
        "{}",
        json!({
            "enterpriseId": enterprise,
            "atPosition": at,
            "balances": map(&found.custody),
            "connections": connections,
        })
    )?;
    Ok(())
}

async fn dispatch(cli: Cli, out: &mut dyn Write) -> anyhow::Result<Result<(), AuditFailed>> {
    let pool = connect(&cli.database_url).await?;
    let quiet = cli.quiet;
    let outcome = match cli.command {
        Command::VerifyChain {
            from,
            to,
            since,
            audit_key,
        } => verify_chain(out, &pool, quiet, from, to, since, audit_key).await?,
        Command::VerifySignatures { from, to, threads } => {
            signatures(out, &pool, quiet, from, to, threads).await?
        }
        Command::Export {
            from,
            to,
            format,
            output,
        } => export(&pool, quiet, from, to, format, output)
            .await
            .map(Ok)?,
        Command::Balances {
            enterprise,
            at_position,
        } => balances(out, &pool, enterprise, at_position)
            .await
            .map(Ok)?,
    };
    pool.close().await;
    Ok(outcome)
}

/// Runs `settle-audit` with `args` (the program name first), writing its report to `out`;
/// returns the exit code.
pub async fn run<I, T>(args: I, out: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return code;
        }
    };
    match dispatch(cli, out).await {
        Ok(Ok(())) => EXIT_OK,
        Ok(Err(AuditFailed)) => EXIT_AUDIT_FAILED,
        Err(e) => {
            eprintln!("settle-audit: {e:#}");
            EXIT_CANNOT_RUN
        }
    }
}
