//! Console settlements: the list (partner or client side, filters and paging, read with
//! `http::reads` after `http::auth`'s checks, as the network list routes read it) and one
//! settlement's page — its transfers, disputes, deadlines and, for the operator and auditors,
//! its audit timeline from the audit routes (each read recorded there). The operator may run a
//! failed execution again (`http::retry`, as the admin retry route does).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::session::{Identity, Viewer};
use super::{amount_cells, csrf_field, page, pretty, text, ConsoleError, ConsoleState};
use crate::http::auth::{self, Role};
use crate::http::context::RequestId;
use crate::http::reads::{self, Side};
use crate::http::retry::{self, Retrier};

/// Rows of a list page.
const PAGE_SIZE: u32 = 25;

/// Any read's answer as JSON (the read functions answer JSON values or typed objects).
pub fn to_json<T: Serialize>(value: T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// One side the viewer may read: an enterprise as partner or as client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub enterprise_id: Uuid,
    pub name: String,
    pub role: Role,
}

impl View {
    pub fn side(&self) -> Side {
        match self.role {
            Role::Partner => Side::Partner(self.enterprise_id),
            Role::Client => Side::Client(self.enterprise_id),
        }
    }

    /// `<enterprise id>:<partner|client>`, the list page's `view` parameter.
    pub fn key(&self) -> String {
        format!("{}:{}", self.enterprise_id, self.role_name())
    }

    pub fn role_name(&self) -> &'static str {
        match self.role {
            Role::Partner => "partner",
            Role::Client => "client",
        }
    }

    pub fn label(&self) -> String {
        format!("{} (as {})", self.name, self.role_name())
    }
}

/// The sides a viewer may read. The operator: every partner (its settlements as the partner
/// sees them). A user: each of its enterprises as partner and as client where the API's access
/// checks (`http::auth::authorize`, on the event store) pass now.
pub async fn views(state: &ConsoleState, viewer: &Viewer) -> Result<Vec<View>, ConsoleError> {
    match viewer.identity() {
        Identity::Admin => partner_views(state).await,
        Identity::User { enterprise_ids, .. } => {
            let caller = viewer
                .caller()
                .ok_or_else(|| ConsoleError::new(StatusCode::UNAUTHORIZED, ""))?;
            let mut views = Vec::new();
            for e in enterprise_ids {
                for role in [Role::Partner, Role::Client] {
                    match auth::authorize(&state.app, &caller, *e, role).await {
                        Ok(access) => views.push(View {
                            enterprise_id: *e,
                            name: access
                                .enterprise
                                .record()
                                .map_or_else(|| e.to_string(), |r| r.name.clone()),
                            role,
                        }),
                        Err(e) if e.status().is_client_error() => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            Ok(views)
        }
    }
}

/// Every partner, for the operator (who may read everything).
async fn partner_views(state: &ConsoleState) -> Result<Vec<View>, ConsoleError> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT enterprise_id, name FROM rm_partners ORDER BY name, enterprise_id")
            .fetch_all(&state.app.pool)
            .await
            .map_err(crate::http::error::ApiError::internal)?;
    Ok(rows
        .into_iter()
        .map(|(enterprise_id, name)| View {
            enterprise_id,
            name,
            role: Role::Partner,
        })
        .collect())
}

/// Percent-encodes a query value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn query_string(pairs: &[(&str, String)]) -> String {
    pairs
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k}={}", encode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The date filter of the form (`YYYY-MM-DD`) as the API's RFC 3339 bound: the start of that day
/// (UTC), or of the next day for an inclusive end.
fn day_bound(day: &str, next: bool) -> Result<String, ConsoleError> {
    let date = chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").map_err(|_| {
        ConsoleError::new(
            StatusCode::BAD_REQUEST,
            format!("{day} is not a date (YYYY-MM-DD)"),
        )
    })?;
    let date = if next {
        date.succ_opt().unwrap_or(date)
    } else {
        date
    };
    Ok(format!("{}T00:00:00Z", date.format("%Y-%m-%d")))
}

fn param<'a>(q: &'a HashMap<String, String>, key: &str) -> &'a str {
    q.get(key).map(|v| v.trim()).unwrap_or_default()
}

/// `GET /console/settlements`: the list, with the side, filters and page in the query.
pub async fn list(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    // "Open by id" jumps to the settlement's page.
    if let Some(open) = q.get("open").map(|v| v.trim()).filter(|v| !v.is_empty()) {
        let id = Uuid::try_parse(open).map_err(|_| {
            ConsoleError::new(StatusCode::BAD_REQUEST, "A settlement id is a UUID.")
        })?;
        return Ok(Redirect::to(&format!("/console/settlements/{id}")).into_response());
    }
    let views = views(&state, &viewer).await?;
    let chosen = match q.get("view").filter(|v| !v.is_empty()) {
        Some(key) => Some(
            views
                .iter()
                .find(|v| &v.key() == key)
                .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, ""))?,
        ),
        None => views.first(),
    };
    let (status, external, from, to) = (
        param(&q, "status"),
        param(&q, "externalId"),
        param(&q, "from"),
        param(&q, "to"),
    );
    let disputed = param(&q, "disputed") == "true";
    let page_number: u32 = param(&q, "page").parse().unwrap_or(0);

    // The filters, parsed by the API's own parser (and its limits).
    let mut api_query: HashMap<String, String> = HashMap::new();
    if !status.is_empty() {
        api_query.insert("statuses".into(), status.to_owned());
    }
    if !external.is_empty() {
        api_query.insert("externalIds".into(), external.to_owned());
    }
    if disputed {
        api_query.insert("onlyShowDisputed".into(), "true".into());
    }
    let mut problem = None;
    for (key, day, next) in [
        ("createdOnOrAfter", from, false),
        ("createdBefore", to, true),
    ] {
        if !day.is_empty() {
            match day_bound(day, next) {
                Ok(bound) => {
                    api_query.insert(key.into(), bound);
                }
                Err(e) => problem = Some(e.message().to_owned()),
            }
        }
    }
    api_query.insert("pageSize".into(), PAGE_SIZE.to_string());
    api_query.insert("pageNumber".into(), page_number.to_string());

    let mut rows = Vec::new();
    if let (Some(view), None) = (chosen, &problem) {
        // A user's side is checked again right before the read, as a list route does.
        if let Some(caller) = viewer.caller() {
            auth::authorize(&state.app, &caller, view.enterprise_id, view.role).await?;
        }
        let parsed = reads::SettlementFilter::parse(&api_query)
            .and_then(|filter| reads::page_of(&api_query).map(|page| (filter, page)));
        match parsed {
            Ok((filter, wanted)) => {
                let found =
                    reads::settlements(&state.app.pool, view.side(), &filter, wanted).await?;
                if let Value::Array(items) = to_json(found) {
                    rows = items;
                }
            }
            Err(e) => problem = Some(e.message().to_owned()),
        }
    }

    let base = |page: u32| -> String {
        let pairs = [
            ("view", chosen.map(View::key).unwrap_or_default()),
            ("status", status.to_owned()),
            ("externalId", external.to_owned()),
            ("from", from.to_owned()),
            ("to", to.to_owned()),
            (
                "disputed",
                if disputed {
                    "true".into()
                } else {
                    String::new()
                },
            ),
            (
                "page",
                if page == 0 {
                    String::new()
                } else {
                    page.to_string()
                },
            ),
        ];
        format!("/console/settlements?{}", query_string(&pairs))
    };
    let full = rows.len() as u32 == PAGE_SIZE;
    let client_side = chosen.is_some_and(|v| v.role == Role::Client);
    let body = html! {
        h1 { "Settlements" }
        form.filters method="get" action="/console/settlements" role="search" {
            div.field {
                label for="view" { @if viewer.is_admin() { "Partner" } @else { "Enterprise" } }
                select id="view" name="view" {
                    @for v in &views {
                        option value=(v.key()) selected[chosen == Some(v)] {
                            @if viewer.is_admin() { (v.name) } @else { (v.label()) }
                        }
                    }
                }
            }
            div.field {
                label for="status" { "Status" }
                select id="status" name="status" {
                    @for (value, label) in [("", "any"), ("pending", "pending"), ("failed", "failed"), ("completed", "completed")] {
                        option value=(value) selected[status == value] { (label) }
                    }
                }
            }
            div.field {
                label for="externalId" { "External id" }
                input type="text" id="externalId" name="externalId" value=(external);
            }
            div.field {
                label for="from" { "Created from" }
                input type="date" id="from" name="from" value=(from);
            }
            div.field {
                label for="to" { "Created to" }
                input type="date" id="to" name="to" value=(to);
            }
            div.field.check {
                input type="checkbox" id="disputed" name="disputed" value="true" checked[disputed];
                label for="disputed" { "Disputed only" }
            }
            button type="submit" { "Filter" }
        }
        form.open method="get" action="/console/settlements" {
            label for="open" { "Open a settlement by id" }
            input type="text" id="open" name="open" size="38" spellcheck="false";
            button type="submit" { "Open" }
        }
        @if views.is_empty() {
            p { @if viewer.is_admin() { "There are no partners yet." }
                @else { "None of your enterprises has a licence and a partner or client record you may read. "
                        @if viewer.is_auditor() { "As an auditor, open a settlement by its id." } } }
        }
        @if let Some(p) = &problem {
            p.error role="alert" { (p) }
        }
        @if chosen.is_some() && problem.is_none() {
            table.list {
                caption { "Settlements of " (chosen.map(View::label).unwrap_or_default()) ", page " (page_number + 1) }
                thead { tr {
                    th scope="col" { "External id" }
                    th scope="col" { "Status" }
                    th scope="col" { "Phase" }
                    th scope="col" { "Disputed" }
                    @if client_side { th scope="col" { "Direction" } }
                    th scope="col" { "Created" }
                    th scope="col" { "Settlement id" }
                } }
                tbody {
                    @for s in &rows {
                        tr {
                            td { a href={ "/console/settlements/" (text(&s["id"])) } { (text(&s["externalId"])) } }
                            td { span class={ "status " (text(&s["status"])) } { (text(&s["status"])) } }
                            td { (text(&s["phase"])) }
                            td { @if s["disputed"] == Value::Bool(true) { "yes" } @else { "no" } }
                            @if client_side { td { (text(&s["transferDirection"])) } }
                            td { (text(&s["createdAt"])) }
                            td.id { (text(&s["id"])) }
                        }
                    }
                    @if rows.is_empty() {
                        tr { td colspan="7" { "No settlements match." } }
                    }
                }
            }
            nav.pager aria-label="Pages" {
                @if page_number > 0 { a rel="prev" href=(base(page_number - 1)) { "← Previous page" } }
                @if full { a rel="next" href=(base(page_number + 1)) { "Next page →" } }
            }
        }
    };
    Ok(page("Settlements", &viewer, None, body))
}

/// What a settlement's page shows besides its timeline.
struct Shown {
    settlement: Value,
    transfers: Vec<Value>,
    disputes: Vec<Value>,
    settling: Vec<Value>,
    /// Where it comes from, for the page.
    source: String,
}

fn array(value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items,
        _ => Vec::new(),
    }
}

/// The settlement as `side` reads it through the network read functions, if that side sees it.
async fn network_read(
    state: &ConsoleState,
    side: Side,
    id: Uuid,
    source: String,
) -> Result<Option<Shown>, ConsoleError> {
    let pool = &state.app.pool;
    let settlement = to_json(reads::settlement(pool, side, id).await?);
    if settlement.is_null() {
        return Ok(None);
    }
    let all = reads::Page::ALL;
    let transfers = array(to_json(
        reads::transfers(pool, side, Some(id), None, None, all).await?,
    ));
    let disputed = reads::DisputeFilter {
        settlement_ids: Some(vec![id]),
        show_retracted: true,
        ..Default::default()
    };
    let disputes = array(to_json(reads::disputes(pool, side, &disputed, all).await?));
    let settling = array(to_json(reads::settling_disputes(pool, side, id).await?));
    Ok(Some(Shown {
        settlement,
        transfers,
        disputes,
        settling,
        source,
    }))
}

/// `GET /console/settlements/{id}`.
pub async fn one(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<Uuid>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ConsoleError> {
    let mut shown = None;
    let mut due = None;
    match viewer.identity() {
        Identity::Admin => {
            // The operator reads it as its partner does (the partner comes from the event store).
            let current = retry::load_settlement(&state.app, id).await?;
            let record = current
                .record()
                .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, ""))?;
            let partner = record.staged.partner_enterprise_id;
            shown = network_read(
                &state,
                Side::Partner(partner),
                id,
                "as its partner reads it".into(),
            )
            .await?;
            due = super::operations::due_of(&state, id).await?;
        }
        Identity::User { .. } => {
            for view in views(&state, &viewer).await? {
                let source = format!("as {} ({}) reads it", view.name, view.role_name());
                if let Some(found) = network_read(&state, view.side(), id, source).await? {
                    shown = Some(found);
                    break;
                }
            }
        }
    }
    // The audit timeline for the operator and auditors, through the audit routes (recorded).
    let mut timeline = None;
    if viewer.is_admin() || viewer.is_auditor() {
        let (status, body) = state
            .call_api(
                &viewer,
                &request_id,
                Method::GET,
                &format!("/api/audit/v1/settlements/{id}/events"),
                None,
            )
            .await?;
        if status.is_success() {
            timeline = Some(array(body["events"].clone()));
            if shown.is_none() {
                // An auditor outside the network reads sees the settlement folded from the log.
                let at = state
                    .read_api(
                        &viewer,
                        &request_id,
                        &format!("/api/audit/v1/settlements/{id}"),
                    )
                    .await?;
                shown = Some(Shown {
                    settlement: at["settlement"].clone(),
                    transfers: array(at["settlementTransfers"].clone()),
                    disputes: array(at["settlementDisputes"].clone()),
                    settling: Vec::new(),
                    source: format!(
                        "folded from the event log up to position {} (audit)",
                        text(&at["atPosition"])
                    ),
                });
            }
        } else if status != StatusCode::NOT_FOUND {
            return Err(ConsoleError::from_answer(status, &body));
        }
    }
    let Some(shown) = shown else {
        // Another tenant's settlement is invisible, exactly as an unknown id.
        return Err(ConsoleError::new(StatusCode::NOT_FOUND, ""));
    };
    let notice = match q.get("notice").map(String::as_str) {
        Some("retried") => Some("The execution was run again; the status below is current."),
        Some("closed") => Some(
            "The dispute is closed; the partner's next settlement carries its adjusted transfers.",
        ),
        _ => None,
    };
    let body = render(
        &state,
        &viewer,
        id,
        &shown,
        timeline.as_deref(),
        due.as_ref(),
    );
    let title = format!("Settlement {}", text(&shown.settlement["externalId"]));
    Ok(page(&title, &viewer, notice, body))
}

fn render(
    state: &ConsoleState,
    viewer: &Viewer,
    id: Uuid,
    shown: &Shown,
    timeline: Option<&[Value]>,
    due: Option<&super::operations::Due>,
) -> Markup {
    let s = &shown.settlement;
    let currencies = &state.app.currencies;
    let failed = s["status"] == "failed";
    html! {
        h1 { "Settlement " (text(&s["externalId"])) }
        p.meta { "Id " code { (id) } " · " (shown.source) }
        section aria-labelledby="summary" {
            h2 id="summary" { "Summary" }
            dl.facts {
                dt { "Status" } dd { span class={ "status " (text(&s["status"])) } { (text(&s["status"])) } }
                dt { "Phase" } dd { (text(&s["phase"])) }
                dt { "Partner" } dd.id { (text(&s["partnerId"])) }
                dt { "Disputed" } dd { @if s["disputed"] == Value::Bool(true) { "yes" } @else { "no" } }
                @if !s["notes"].is_null() { dt { "Notes" } dd { (text(&s["notes"])) } }
                @if !s["reason"].is_null() { dt { "Failure reason" } dd.error { (text(&s["reason"])) } }
            }
            @if failed && viewer.is_admin() {
                form method="post" action={ "/console/settlements/" (id) "/retry" } {
                    (csrf_field(viewer))
                    button type="submit" { "Retry execution now" }
                }
            }
        }
        section aria-labelledby="deadlines" {
            h2 id="deadlines" { "Deadlines" }
            dl.facts {
                dt { "Created" } dd { (text(&s["createdAt"])) }
                @if !s["cutoffAt"].is_null() { dt { "Cut-off" } dd { (text(&s["cutoffAt"])) } }
                dt { "Dispute window ends" } dd { (text(&s["disputeWindowEndsAt"])) }
                dt { "Top-up window ends" } dd { (text(&s["topUpWindowEndsAt"])) }
                @if !s["finalizedAt"].is_null() { dt { "Completed (finalized)" } dd { (text(&s["finalizedAt"])) } }
                @if let Some(d) = due {
                    dt { "Finalizer's next step" }
                    dd { (d.step) " due " (d.due_at) " (attempts " (d.attempts) ")" }
                }
            }
        }
        section aria-labelledby="transfers" {
            h2 id="transfers" { "Transfers" }
            (transfers_table(currencies, &shown.transfers))
        }
        section aria-labelledby="disputes" {
            h2 id="disputes" { "Disputes" }
            (super::disputes::table(state, viewer, &shown.disputes, Some(id)))
        }
        @if !shown.settling.is_empty() {
            section aria-labelledby="settling" {
                h2 id="settling" { "Closed disputes this settlement carries" }
                (super::disputes::table(state, viewer, &shown.settling, None))
            }
        }
        @if let Some(events) = timeline {
            section aria-labelledby="timeline" {
                h2 id="timeline" { "Audit timeline" }
                p.meta { "Every event touching this settlement, in log order, from the audit routes; signed instructions are re-verified now." }
                (timeline_table(events))
            }
        }
    }
}

pub fn transfers_table(
    currencies: &events::domain::money::CurrencyTable,
    transfers: &[Value],
) -> Markup {
    html! {
        table.list {
            thead { tr {
                th scope="col" { "Currency" }
                th scope="col" { "Base units" }
                th scope="col" { "Amount" }
                th scope="col" { "Status" }
                th scope="col" { "Destination" }
                th scope="col" { "Source" }
                th scope="col" { "Closure" }
            } }
            tbody {
                @for t in transfers {
                    @let currency = text(&t["currency"]);
                    @let quantity = text(&t["quantity"]);
                    @let destination = if t["destinationNetworkAccountId"].is_null() { &t["destinationConnectionId"] } else { &t["destinationNetworkAccountId"] };
                    @let source = if t["sourceNetworkAccountId"].is_null() { &t["sourceConnectionId"] } else { &t["sourceNetworkAccountId"] };
                    tr {
                        td { (currency) }
                        (amount_cells(currencies, &currency, &quantity))
                        td { span class={ "status " (text(&t["status"])) } { (text(&t["status"])) } }
                        td.id { (text(destination)) }
                        td.id { @if source.is_null() { "partner custody" } @else { (text(source)) } }
                        td.id { (text(&t["disputeClosureId"])) }
                    }
                }
                @if transfers.is_empty() { tr { td colspan="7" { "No transfers." } } }
            }
        }
    }
}

fn signature_cell(signed: &Value) -> Markup {
    let valid = signed["signatureValid"].as_bool();
    html! {
        @if valid == Some(true) { span.valid { "valid" } }
        @else if valid == Some(false) { span.invalid { "INVALID" } }
        @else if signed.is_null() { "—" }
        @else { "not checked" }
    }
}

/// The audit timeline: each event's position, type, stream, actor, time, hash, and its signed
/// request with `signatureValid`; payloads in disclosures.
pub fn timeline_table(events: &[Value]) -> Markup {
    html! {
        table.list.timeline {
            thead { tr {
                th scope="col" { "Position" }
                th scope="col" { "Event" }
                th scope="col" { "Stream" }
                th scope="col" { "Actor" }
                th scope="col" { "Recorded" }
                th scope="col" { "Signature" }
            } }
            tbody {
                @for e in events {
                    tr {
                        td.num { (text(&e["position"])) }
                        td { (text(&e["type"])) }
                        td.id { (text(&e["stream"])) }
                        td { (text(&e["actor"]["kind"])) }
                        td { (text(&e["recordedAt"])) }
                        td { (signature_cell(&e["signed"])) }
                    }
                    tr.detail {
                        td colspan="6" {
                            details {
                                summary { "Hash, ids and payload of event " (text(&e["position"])) }
                                dl.facts {
                                    dt { "Chain hash" } dd.id { (text(&e["hash"])) }
                                    dt { "Event id" } dd.id { (text(&e["eventId"])) }
                                    dt { "Command id" } dd.id { (text(&e["commandId"])) }
                                    dt { "Request id" } dd.id { (text(&e["requestId"])) }
                                }
                                pre { (pretty(&e["payload"])) }
                                @if !e["signed"].is_null() {
                                    @let signed = &e["signed"];
                                    dl.facts {
                                        dt { "Signed payload" } dd { pre { (text(&signed["payload"])) } }
                                        dt { "Signature" } dd.id { (text(&signed["signature"])) }
                                        dt { "Key" } dd.id { (text(&signed["keyId"])) }
                                        dt { "Public key" } dd.id { (text(&signed["publicKey"])) }
                                        dt { "signatureValid" } dd { (signature_cell(signed)) }
                                        @if !signed["problem"].is_null() { dt { "Problem" } dd.error { (text(&signed["problem"])) } }
                                    }
                                }
                            }
                        }
                    }
                }
                @if events.is_empty() { tr { td colspan="6" { "No events." } } }
            }
        }
    }
}

/// `POST /console/settlements/{id}/retry` (operator): the admin retry route's function.
pub async fn retry(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    Extension(request_id): Extension<RequestId>,
    Path(id): Path<Uuid>,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&form)?;
    viewer.require_admin()?;
    let response = retry::retry(&state.app, &request_id, Retrier::Admin, id).await?;
    let (status, body) = super::answer(response, &request_id).await?;
    if !status.is_success() {
        return Err(ConsoleError::from_answer(status, &body));
    }
    Ok(Redirect::to(&format!("/console/settlements/{id}?notice=retried")).into_response())
}
