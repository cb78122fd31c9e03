//! Console operations (operator only): consumers and partitions with owners, lag and parked
//! events (`projector status`'s rows; parked events retried with the function `projector parked
//! retry` runs), the finalizer's due work (next deadlines, failed settlements with their reasons
//! and a retry through `http::retry`), and the chain's head with its latest full verification
//! (from the audit routes, so the read is recorded).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::{Extension, Form};
use events::bus::{parked, partitions};
use events::domain::settlement::Status;
use maud::html;
use serde_json::Value;
use uuid::Uuid;

use super::session::{field, Viewer};
use super::{csrf_field, page, text, ConsoleError, ConsoleState};
use crate::http::context::RequestId;
use crate::http::error::ApiError;
use crate::http::retry;

/// Due rows the page shows (the soonest first).
const DUE_ROWS: i64 = 50;

/// One settlement's row of the finalizer's due work.
#[derive(Clone, Debug)]
pub struct Due {
    pub settlement_id: Uuid,
    pub partner_enterprise_id: Option<Uuid>,
    pub step: String,
    pub due_at: String,
    pub execute_at: String,
    pub attempts: i32,
    pub leased_until: Option<String>,
}

type DueRow = (
    Uuid,
    Option<Uuid>,
    String,
    String,
    String,
    i32,
    Option<String>,
);

const DUE_SELECT: &str = "SELECT settlement_id, partner_enterprise_id, step,
        to_char(due_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
        to_char(execute_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
        attempts,
        CASE WHEN leased_until > now()
             THEN to_char(leased_until AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') END
     FROM finalizer_due";

fn due(row: DueRow) -> Due {
    let (settlement_id, partner_enterprise_id, step, due_at, execute_at, attempts, leased_until) =
        row;
    Due {
        settlement_id,
        partner_enterprise_id,
        step,
        due_at,
        execute_at,
        attempts,
        leased_until,
    }
}

/// The finalizer's next step for one settlement, if it has one (operator pages only).
pub async fn due_of(state: &ConsoleState, settlement_id: Uuid) -> Result<Option<Due>, ApiError> {
    let row: Option<DueRow> = sqlx::query_as(&format!("{DUE_SELECT} WHERE settlement_id = $1"))
        .bind(settlement_id)
        .fetch_optional(&state.app.pool)
        .await
        .map_err(ApiError::internal)?;
    Ok(row.map(due))
}

async fn due_rows(state: &ConsoleState) -> Result<Vec<Due>, ApiError> {
    let rows: Vec<DueRow> = sqlx::query_as(&format!(
        "{DUE_SELECT} ORDER BY due_at, settlement_id LIMIT $1"
    ))
    .bind(DUE_ROWS)
    .fetch_all(&state.app.pool)
    .await
    .map_err(ApiError::internal)?;
    Ok(rows.into_iter().map(due).collect())
}

/// Consumers that are not partitions (the finalizer's due work): checkpoint and lag.
async fn other_consumers(state: &ConsoleState) -> Result<Vec<(String, i64, i64)>, ApiError> {
    sqlx::query_as(
        "SELECT c.consumer, c.position, greatest((SELECT coalesce(max(position), 0) FROM event_log) - c.position, 0)
         FROM consumer_checkpoints c
         WHERE NOT EXISTS (SELECT 1 FROM consumer_partitions p WHERE p.consumer = c.consumer)
         ORDER BY c.consumer",
    )
    .fetch_all(&state.app.pool)
    .await
    .map_err(ApiError::internal)
}

/// The projector's scaling as its partitions are registered (the partition count a retry's
/// projection must use).
fn projector_scale(rows: &[partitions::PartitionStatus]) -> projector::ScaleConfig {
    let partitions = rows
        .iter()
        .find(|r| r.group == projector::READ_MODELS_CONSUMER)
        .map_or(projector::PARTITIONS_DEFAULT, |r| r.partitions);
    projector::ScaleConfig {
        partitions,
        ..projector::ScaleConfig::default()
    }
}

/// `GET /console/operations`.
pub async fn page_handler(
    state: &ConsoleState,
    viewer: &Viewer,
    request_id: &RequestId,
    notice: Option<&str>,
    report: Option<maud::Markup>,
) -> Result<Response, ConsoleError> {
    viewer.require_admin()?;
    let pool = &state.app.pool;
    let rows = partitions::status(pool, &[])
        .await
        .map_err(ApiError::internal)?;
    let others = other_consumers(state).await?;
    let mut other_parked = Vec::with_capacity(others.len());
    for (consumer, _, _) in &others {
        other_parked.push(
            parked::summary(pool, consumer)
                .await
                .map_err(ApiError::internal)?
                .count,
        );
    }
    let parked_events = parked::list(pool, None).await.map_err(ApiError::internal)?;
    let projector_consumers: Vec<String> = projector::partition_consumers(&projector_scale(&rows))
        .into_iter()
        .map(|(_, _, name)| name)
        .collect();
    let due = due_rows(state).await?;
    let mut failed = Vec::new();
    for d in due.iter().filter(|d| d.step == "execute") {
        let current = retry::load_settlement(&state.app, d.settlement_id).await?;
        if let Some(r) = current.record() {
            if let Status::Failed { short_currencies } = &r.status {
                let short: Vec<&str> = short_currencies.iter().map(|c| c.as_str()).collect();
                failed.push((d.clone(), r.staged.external_id.clone(), short.join(", ")));
            }
        }
    }
    let chain = state
        .read_api(viewer, request_id, "/api/audit/v1/chain")
        .await?;
    let latest = &chain["latestVerification"];
    let body = html! {
        h1 { "Operations" }
        @if let Some(r) = report { (r) }
        section aria-labelledby="chain" {
            h2 id="chain" { "Event log chain" }
            dl.facts {
                dt { "Head position" } dd { (text(&chain["head"]["position"])) }
                dt { "Head hash" } dd.id { (text(&chain["head"]["hash"])) }
                dt { "Recorded" } dd { (text(&chain["head"]["recordedAt"])) }
                dt { "Latest full verification" }
                dd {
                    @if latest.is_null() { "none yet" }
                    @else {
                        @if latest["verified"] == Value::Bool(true) { span.valid { "verified" } }
                        @else { span.invalid { "FAILED" } " at " (text(&latest["firstFault"])) }
                        " — " (text(&latest["checkedPositions"])) " positions up to " (text(&latest["headPosition"]))
                        ", finished " (text(&latest["finishedAt"])) " by " (text(&latest["verifier"]))
                    }
                }
            }
        }
        section aria-labelledby="partitions" {
            h2 id="partitions" { "Consumers and partitions" }
            table.list {
                thead { tr {
                    th scope="col" { "Group" } th scope="col" { "Partition" } th scope="col" { "Consumer" }
                    th scope="col" { "Owner" } th scope="col" { "Lease until" } th scope="col" { "Checkpoint" }
                    th scope="col" { "Lag" } th scope="col" { "Parked" }
                } }
                tbody {
                    @for r in &rows {
                        tr {
                            td { (r.group) } td.num { (r.partition) "/" (r.partitions) } td { (r.consumer) }
                            td { @if let Some(o) = &r.owner { (o) } @else { span.invalid { "no live owner" } } }
                            td { (r.lease_until.as_deref().unwrap_or("—")) }
                            td.num { (r.checkpoint) } td.num { (r.lag) }
                            td.num { @if r.parked > 0 { span.invalid { (r.parked) } } @else { "0" } }
                        }
                    }
                    @for ((consumer, checkpoint, lag), parked) in others.iter().zip(&other_parked) {
                        tr {
                            td { (consumer) } td { "—" } td { (consumer) } td { "its process (advisory lock)" } td { "—" }
                            td.num { (checkpoint) } td.num { (lag) }
                            td.num { @if *parked > 0 { span.invalid { (parked) } } @else { "0" } }
                        }
                    }
                    @if rows.is_empty() && others.is_empty() { tr { td colspan="8" { "No consumers have registered yet." } } }
                }
            }
        }
        section aria-labelledby="parked" {
            h2 id="parked" { "Parked events" }
            table.list {
                thead { tr {
                    th scope="col" { "Consumer" } th scope="col" { "Position" } th scope="col" { "Stream" }
                    th scope="col" { "Type" } th scope="col" { "Reason" } th scope="col" { "Error" }
                    th scope="col" { "Parked at" } th scope="col" { "Action" }
                } }
                tbody {
                    @for p in &parked_events {
                        tr {
                            td { (p.consumer) } td.num { (p.position) } td.id { (p.stream) } td { (p.event_type) }
                            td { (p.reason) } td { (p.error) } td { (p.parked_at) }
                            td {
                                @if projector_consumers.contains(&p.consumer) {
                                    form method="post" action="/console/operations/parked/retry" {
                                        (csrf_field(viewer))
                                        input type="hidden" name="consumer" value=(p.consumer);
                                        input type="hidden" name="position" value=(p.position);
                                        button type="submit" aria-label={ "Retry parked event " (p.position) " of " (p.consumer) } { "Retry" }
                                    }
                                } @else {
                                    code { "finalizer parked retry --consumer " (p.consumer) " --position " (p.position) }
                                }
                            }
                        }
                    }
                    @if parked_events.is_empty() { tr { td colspan="8" { "Nothing is parked." } } }
                }
            }
        }
        section aria-labelledby="failed" {
            h2 id="failed" { "Failed settlements" }
            table.list {
                thead { tr {
                    th scope="col" { "Settlement" } th scope="col" { "Reason" } th scope="col" { "Failed at" }
                    th scope="col" { "Finalizer retries at" } th scope="col" { "Action" }
                } }
                tbody {
                    @for (d, external, short) in &failed {
                        tr {
                            td { a href={ "/console/settlements/" (d.settlement_id) } { (external) } }
                            td.error { "balances are short in " (short) }
                            td { (d.execute_at) }
                            td { (d.due_at) }
                            td {
                                form method="post" action={ "/console/settlements/" (d.settlement_id) "/retry" } {
                                    (csrf_field(viewer))
                                    button type="submit" aria-label={ "Retry execution of " (external) } { "Retry now" }
                                }
                            }
                        }
                    }
                    @if failed.is_empty() { tr { td colspan="5" { "No failed settlements are waiting." } } }
                }
            }
        }
        section aria-labelledby="due" {
            h2 id="due" { "The finalizer's next deadlines" }
            table.list {
                thead { tr {
                    th scope="col" { "Settlement" } th scope="col" { "Partner enterprise" } th scope="col" { "Step" }
                    th scope="col" { "Due at" } th scope="col" { "Executes at" } th scope="col" { "Attempts" }
                    th scope="col" { "Leased until" }
                } }
                tbody {
                    @for d in &due {
                        tr {
                            td.id { a href={ "/console/settlements/" (d.settlement_id) } { (d.settlement_id) } }
                            td.id { @if let Some(p) = d.partner_enterprise_id { (p) } @else { "—" } }
                            td { (d.step) } td { (d.due_at) } td { (d.execute_at) } td.num { (d.attempts) }
                            td { (d.leased_until.as_deref().unwrap_or("—")) }
                        }
                    }
                    @if due.is_empty() { tr { td colspan="7" { "No settlement has a step ahead." } } }
                }
            }
        }
    };
    Ok(page("Operations", viewer, notice, body))
}

/// `GET /console/operations`.
pub async fn page_get(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Extension(request_id): Extension<RequestId>,
) -> Result<Response, ConsoleError> {
    page_handler(&state, &viewer, &request_id, None, None).await
}

/// `POST /console/operations/parked/retry`: `projector parked retry --consumer C --position P`.
pub async fn retry_parked(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Extension(request_id): Extension<RequestId>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&form)?;
    viewer.require_admin()?;
    let consumer = field(&form, "consumer").unwrap_or_default().to_owned();
    let position = match field(&form, "position").filter(|p| !p.is_empty()) {
        Some(p) => Some(p.parse::<u64>().map_err(|_| {
            ConsoleError::new(StatusCode::BAD_REQUEST, "The position is not a number.")
        })?),
        None => None,
    };
    let pool = &state.app.pool;
    let rows = partitions::status(pool, &[])
        .await
        .map_err(ApiError::internal)?;
    let reports = projector::retry_parked(
        pool,
        &projector_scale(&rows),
        Some(consumer.as_str()),
        position,
    )
    .await
    .map_err(|e| ConsoleError::new(StatusCode::BAD_REQUEST, format!("The retry failed: {e:#}")))?;
    let succeeded = reports.iter().all(parked::RetryReport::succeeded);
    let report = html! {
        section.report aria-labelledby="retry-report" {
            h2 id="retry-report" { "Retry of " (consumer) }
            @for r in &reports {
                p { "Applied: " @if r.applied.is_empty() { "none" } @else {
                    (r.applied.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")) } }
                @if !r.still_parked.is_empty() {
                    ul { @for (p, why) in &r.still_parked { li.error { "Still parked at " (p) ": " (why) } } }
                }
            }
        }
    };
    let notice = if succeeded {
        "The parked events were applied."
    } else {
        "Some events are still parked; see the report."
    };
    page_handler(&state, &viewer, &request_id, Some(notice), Some(report)).await
}
