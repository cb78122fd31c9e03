//! Console disputes: the queue (open disputes, and closed ones waiting for the partner's next
//! settlement), read with `http::reads` after `http::auth`'s checks; and the operator's closure
//! with notes and adjusted transfers — a form, a confirmation page showing the exact request,
//! then that request sent to the admin close route in-process (the same command, checks and
//! idempotency as `POST /api/admin/v1/disputes/{id}/close`).

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use events::domain::connection::Connection;
use events::domain::money::{parse_nonzero_amount, AmountFormat, CurrencyCode};
use maud::{html, Markup};
use serde_json::{json, Value};
use uuid::Uuid;

use super::session::{field, Viewer};
use super::settlements::{to_json, views};
use super::{csrf_field, in_decimals, page, pretty, text, ConsoleError, ConsoleState};
use crate::http::auth;
use crate::http::context::RequestId;
use crate::http::reads;
use crate::http::retry;

/// Rows of adjusted transfers the closure form offers.
const ADJUSTED_ROWS: usize = 3;

fn amounts(state: &ConsoleState, value: &Value) -> Markup {
    html! {
        @if let Value::Object(map) = value {
            ul.amounts {
                @for (currency, amount) in map {
                    @let base = text(amount);
                    li { (base) " " (currency) " base units"
                        @if let Some(d) = in_decimals(&state.app.currencies, currency, &base) { " = " (d) " " (currency) } }
                }
            }
        } @else { "—" }
    }
}

fn dispute_state(d: &Value) -> &'static str {
    if d["retracted"] == Value::Bool(true) {
        "retracted"
    } else if !d["disputeClosureId"].is_null() || !d["disputeClosure"].is_null() {
        "closed"
    } else {
        "open"
    }
}

/// A table of disputes; the operator gets a link to close each open one.
pub fn table(
    state: &ConsoleState,
    viewer: &Viewer,
    disputes: &[Value],
    settlement: Option<Uuid>,
) -> Markup {
    html! {
        table.list {
            thead { tr {
                th scope="col" { "Dispute" }
                @if settlement.is_none() { th scope="col" { "Disputed settlement" } }
                th scope="col" { "Connection" }
                th scope="col" { "Reason" }
                th scope="col" { "Expected transfers" }
                th scope="col" { "State" }
                th scope="col" { "Closure" }
                @if viewer.is_admin() { th scope="col" { "Action" } }
            } }
            tbody {
                @for d in disputes {
                    @let state_name = dispute_state(d);
                    @let disputed = text(&d["disputedSettlementId"]);
                    tr {
                        td.id { (text(&d["id"])) }
                        @if settlement.is_none() {
                            td.id { a href={ "/console/settlements/" (disputed) } { (disputed) } }
                        }
                        td.id { (text(&d["connectionId"])) }
                        td { (text(&d["reason"])) }
                        td { (amounts(state, &d["expectedTransfers"])) }
                        td { span class={ "status " (state_name) } { (state_name) } }
                        td {
                            @if let Value::Object(c) = &d["disputeClosure"] {
                                "by " (text(&c["closedBy"])) ": " (text(&c["notes"]))
                                (amounts(state, &c["adjustedTransfers"]))
                            }
                            @if !d["settledInSettlementId"].is_null() {
                                "carried by "
                                a href={ "/console/settlements/" (text(&d["settledInSettlementId"])) } { (text(&d["settledInSettlementId"])) }
                            } @else if state_name == "closed" {
                                "waiting for the partner's next settlement"
                            }
                        }
                        @if viewer.is_admin() {
                            td {
                                @if state_name == "open" {
                                    a.button href={ "/console/disputes/" (text(&d["id"])) "/close?settlement=" (disputed) } { "Close…" }
                                }
                            }
                        }
                    }
                }
                @if disputes.is_empty() { tr { td colspan="8" { "No disputes." } } }
            }
        }
    }
}

/// `GET /console/disputes`: open disputes, and closed ones not yet carried by a settlement, of
/// every side the viewer may read.
pub async fn queue(
    State(state): State<ConsoleState>,
    viewer: Viewer,
) -> Result<Response, ConsoleError> {
    let mut open = Vec::new();
    let mut waiting = Vec::new();
    let mut seen = HashSet::new();
    for view in views(&state, &viewer).await? {
        for closed in [false, true] {
            let filter = reads::DisputeFilter {
                closed: Some(closed),
                ..Default::default()
            };
            let found = to_json(
                reads::disputes(&state.app.pool, view.side(), &filter, reads::Page::ALL).await?,
            );
            for d in found.as_array().into_iter().flatten() {
                if !seen.insert((text(&d["id"]), closed)) {
                    continue;
                }
                match (closed, d["settledInSettlementId"].is_null()) {
                    (false, _) => open.push(d.clone()),
                    (true, true) => waiting.push(d.clone()),
                    (true, false) => {}
                }
            }
        }
    }
    let body = html! {
        h1 { "Disputes" }
        section aria-labelledby="open" {
            h2 id="open" { "Open" }
            (table(&state, &viewer, &open, None))
        }
        section aria-labelledby="waiting" {
            h2 id="waiting" { "Closed, waiting for the partner's next settlement" }
            (table(&state, &viewer, &waiting, None))
        }
    };
    Ok(page("Disputes", &viewer, None, body))
}

/// What the closure pages know about a dispute, from the event store.
struct Closing {
    settlement_id: Uuid,
    connection_id: Uuid,
    format: AmountFormat,
    reason: Option<String>,
    expected: Value,
    open: bool,
}

async fn closing(
    state: &ConsoleState,
    dispute_id: Uuid,
    settlement: Option<&str>,
) -> Result<Closing, ConsoleError> {
    let settlement_id = settlement
        .and_then(|s| Uuid::try_parse(s).ok())
        .ok_or_else(|| {
            ConsoleError::new(
                StatusCode::NOT_FOUND,
                "Open the dispute from its settlement's page or the dispute queue.",
            )
        })?;
    let current = retry::load_settlement(&state.app, settlement_id).await?;
    let dispute = current
        .record()
        .and_then(|r| r.dispute(dispute_id))
        .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, "No such dispute."))?;
    let stream = auth::connection_stream(dispute.connection_id);
    let loaded = auth::load(&state.app, std::slice::from_ref(&stream)).await?;
    let connection: Connection = loaded.aggregate(&stream);
    let format = connection
        .record()
        .map_or(AmountFormat::BaseUnits, |c| c.amount_format);
    let expected: serde_json::Map<String, Value> = dispute
        .expected_transfers
        .iter()
        .map(|(c, q)| (c.as_str().to_owned(), Value::from(q.to_string())))
        .collect();
    Ok(Closing {
        settlement_id,
        connection_id: dispute.connection_id,
        format,
        reason: dispute.reason.clone(),
        expected: Value::Object(expected),
        open: dispute.is_open(),
    })
}

fn format_hint(format: AmountFormat) -> &'static str {
    match format {
        AmountFormat::BaseUnits => "in base units (integers, e.g. -2000000)",
        AmountFormat::Decimal => "in whole units with decimals (e.g. -0.02)",
    }
}

fn dispute_facts(state: &ConsoleState, dispute_id: Uuid, c: &Closing) -> Markup {
    html! {
        dl.facts {
            dt { "Dispute" } dd.id { (dispute_id) }
            dt { "Settlement" } dd.id { a href={ "/console/settlements/" (c.settlement_id) } { (c.settlement_id) } }
            dt { "Connection" } dd.id { (c.connection_id) }
            dt { "Reason" } dd { (c.reason.as_deref().unwrap_or("—")) }
            dt { "Expected transfers" } dd { (amounts(state, &c.expected)) }
        }
    }
}

fn close_form_body(
    state: &ConsoleState,
    viewer: &Viewer,
    dispute_id: Uuid,
    c: &Closing,
    notes: &str,
    rows: &[(String, String)],
    problem: Option<&str>,
) -> Markup {
    let currencies: Vec<String> = state
        .app
        .currencies
        .iter()
        .map(|(code, _)| code.as_str().to_owned())
        .collect();
    html! {
        h1 { "Close dispute" }
        (dispute_facts(state, dispute_id, c))
        @if !c.open {
            p.error role="alert" { "This dispute is not open (closed or retracted)." }
        }
        @if let Some(p) = problem {
            p.error role="alert" id="close-problem" { (p) }
        }
        form.stack method="post" action={ "/console/disputes/" (dispute_id) "/close/review" } {
            (csrf_field(viewer))
            input type="hidden" name="settlement" value=(c.settlement_id);
            label for="notes" { "Notes (required)" }
            textarea id="notes" name="notes" rows="4" required { (notes) }
            fieldset {
                legend { "Adjusted transfers to the connection, " (format_hint(c.format)) "; leave a row empty for none" }
                @for i in 0..ADJUSTED_ROWS {
                    @let (currency, amount) = rows.get(i).cloned().unwrap_or_default();
                    div.row {
                        label for={ "currency-" (i) } { "Currency " (i + 1) }
                        select id={ "currency-" (i) } name="currency" {
                            option value="" selected[currency.is_empty()] { "—" }
                            @for code in &currencies {
                                option value=(code) selected[&currency == code] { (code) }
                            }
                        }
                        label for={ "amount-" (i) } { "Amount " (i + 1) }
                        input type="text" id={ "amount-" (i) } name="amount" value=(amount) inputmode="decimal" spellcheck="false";
                    }
                }
            }
            button type="submit" { "Review closure" }
        }
    }
}

/// `GET /console/disputes/{id}/close?settlement=…` (operator): the closure form.
pub async fn close_form(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(dispute_id): Path<Uuid>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    viewer.require_admin()?;
    let c = closing(&state, dispute_id, q.get("settlement").map(String::as_str)).await?;
    let body = close_form_body(&state, &viewer, dispute_id, &c, "", &[], None);
    Ok(page("Close dispute", &viewer, None, body))
}

/// The request the closure form describes: `{"notes", "adjustedTransfers"}` as the admin route
/// takes it, checked as it will check it (amounts in the connection's format).
/// The form's rows of adjusted transfers: (currency, amount) as written.
type Rows = Vec<(String, String)>;

fn closure_request(
    state: &ConsoleState,
    c: &Closing,
    form: &[(String, String)],
) -> Result<Value, (String, Rows)> {
    let currencies = form
        .iter()
        .filter(|(k, _)| k == "currency")
        .map(|(_, v)| v.trim());
    let amounts = form
        .iter()
        .filter(|(k, _)| k == "amount")
        .map(|(_, v)| v.trim());
    let rows: Rows = currencies
        .zip(amounts)
        .map(|(c, a)| (c.to_owned(), a.to_owned()))
        .collect();
    let notes = field(form, "notes").unwrap_or_default();
    let mut adjusted = BTreeMap::new();
    for (currency, amount) in &rows {
        match (currency.is_empty(), amount.is_empty()) {
            (true, true) => continue,
            (true, false) | (false, true) => {
                return Err((
                    "Give both a currency and an amount in a row, or neither.".into(),
                    rows.clone(),
                ))
            }
            (false, false) => {}
        }
        let code = CurrencyCode::parse(currency).map_err(|e| (e.to_string(), rows.clone()))?;
        let decimals = state
            .app
            .currencies
            .decimals_of(&code)
            .map_err(|e| (e.to_string(), rows.clone()))?;
        parse_nonzero_amount(amount, c.format, decimals)
            .map_err(|e| (format!("{currency}: {e}"), rows.clone()))?;
        if adjusted
            .insert(currency.clone(), Value::from(amount.clone()))
            .is_some()
        {
            return Err((format!("{currency} is given twice."), rows.clone()));
        }
    }
    if notes.trim().is_empty() {
        return Err(("Notes are required.".into(), rows));
    }
    Ok(json!({"notes": notes, "adjustedTransfers": adjusted}))
}

/// `POST /console/disputes/{id}/close/review` (operator): the confirmation page, showing the
/// exact request the closure will send.
pub async fn review(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Path(dispute_id): Path<Uuid>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&form)?;
    viewer.require_admin()?;
    let c = closing(&state, dispute_id, field(&form, "settlement")).await?;
    let notes = field(&form, "notes").unwrap_or_default().to_owned();
    let request = match closure_request(&state, &c, &form) {
        Ok(found) => found,
        Err((problem, rows)) => {
            let body = close_form_body(
                &state,
                &viewer,
                dispute_id,
                &c,
                &notes,
                &rows,
                Some(&problem),
            );
            let mut response = page("Close dispute", &viewer, None, body);
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return Ok(response);
        }
    };
    let exact = request.to_string();
    let path = format!("/api/admin/v1/disputes/{dispute_id}/close");
    let body = html! {
        h1 { "Confirm the closure" }
        (dispute_facts(&state, dispute_id, &c))
        p { "Submitting sends exactly this request, as the operator, to " code { "POST " (path) } ":" }
        pre.request { (exact) }
        h2 { "Adjusted transfers, read" }
        table.list {
            thead { tr { th scope="col" { "Currency" } th scope="col" { "As written (" (c.format.as_str()) ")" } th scope="col" { "Base units" } th scope="col" { "Amount" } } }
            tbody {
                @for (currency, amount) in request["adjustedTransfers"].as_object().into_iter().flatten() {
                    @let written = text(amount);
                    @let base = CurrencyCode::parse(currency).ok()
                        .and_then(|code| state.app.currencies.decimals_of(&code).ok())
                        .and_then(|d| parse_nonzero_amount(&written, c.format, d).ok())
                        .map(|q| q.to_string())
                        .unwrap_or_default();
                    tr {
                        td { (currency) }
                        td.num { (written) }
                        (super::amount_cells(&state.app.currencies, currency, &base))
                    }
                }
                @if request["adjustedTransfers"].as_object().is_none_or(|m| m.is_empty()) {
                    tr { td colspan="4" { "None: the dispute closes without transfers." } }
                }
            }
        }
        details { summary { "The same request, formatted" } pre { (pretty(&request)) } }
        form.actions method="post" action={ "/console/disputes/" (dispute_id) "/close" } {
            (csrf_field(&viewer))
            input type="hidden" name="settlement" value=(c.settlement_id);
            input type="hidden" name="body" value=(exact);
            button type="submit" { "Submit closure" }
            " "
            a href={ "/console/disputes/" (dispute_id) "/close?settlement=" (c.settlement_id) } { "Cancel and edit" }
        }
    };
    Ok(page("Confirm the closure", &viewer, None, body))
}

/// `POST /console/disputes/{id}/close` (operator): sends the confirmed request to the admin close
/// route, as the operator.
pub async fn close(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Extension(request_id): Extension<RequestId>,
    Path(dispute_id): Path<Uuid>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&form)?;
    viewer.require_admin()?;
    let settlement = field(&form, "settlement")
        .and_then(|s| Uuid::try_parse(s).ok())
        .ok_or_else(|| {
            ConsoleError::new(StatusCode::BAD_REQUEST, "The form names no settlement.")
        })?;
    let body = field(&form, "body").unwrap_or_default().to_owned();
    let (status, answer) = state
        .call_api(
            &viewer,
            &request_id,
            Method::POST,
            &format!("/api/admin/v1/disputes/{dispute_id}/close"),
            Some(body),
        )
        .await?;
    if !status.is_success() {
        let message = format!(
            "The closure was refused ({} {}): {}",
            status.as_u16(),
            text(&answer["code"]),
            text(&answer["error"])
        );
        return Err(ConsoleError::new(status, message));
    }
    Ok(Redirect::to(&format!("/console/settlements/{settlement}?notice=closed")).into_response())
}
