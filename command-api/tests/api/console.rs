//! The console over HTTP (ADR 0012): sign-in sets an HttpOnly, SameSite=Strict session cookie
//! that is not the token; a POST without or with a wrong CSRF token is refused; a member sees
//! only its own enterprise's settlements; an auditor sees the audit timeline and no forms, and
//! its console reads are recorded as audit reads; the operator closes a dispute through the
//! confirmation page, and the admin route's closure is what lands.

use reqwest::header::{CONTENT_TYPE, COOKIE, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::disputes::{lifecycle_world, raise, settled, stage};
use crate::support::*;

/// A browser without JavaScript: keeps cookies, never follows redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: Vec<(String, String)>,
}

/// A page as the browser got it.
struct Page {
    status: StatusCode,
    set_cookies: Vec<String>,
    location: Option<String>,
    body: String,
}

fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The value of the first hidden `csrf` field of a page.
fn csrf_of(html: &str) -> String {
    let start = html
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no csrf field in {html}"))
        + r#"name="csrf" value=""#.len();
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

impl Browser {
    fn new(app: &TestApp) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: format!("http://{}", app.addr),
            cookies: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let request = if self.cookies.is_empty() {
            request
        } else {
            request.header(COOKIE, self.cookie_header())
        };
        let response = request.send().await.expect("console request");
        let status = response.status();
        let set_cookies: Vec<String> = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let location = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        for cookie in &set_cookies {
            let pair = cookie.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.retain(|(k, _)| k != name);
                if !value.is_empty() && !cookie.contains("Max-Age=0") {
                    self.cookies.push((name.to_owned(), value.to_owned()));
                }
            }
        }
        let body = response.text().await.unwrap_or_default();
        Page {
            status,
            set_cookies,
            location,
            body,
        }
    }

    async fn get(&mut self, path: &str) -> Page {
        let request = self.http.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = fields
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    /// Signs in with `token`; returns the answer to the form's POST.
    async fn sign_in(&mut self, token: &str) -> Page {
        let form = self.get("/console/sign-in").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let csrf = csrf_of(&form.body);
        self.post("/console/sign-in", &[("csrf", &csrf), ("token", token)])
            .await
    }
}

#[tokio::test]
async fn sign_in_sets_an_http_only_same_site_cookie_that_is_not_the_token() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);

    // Without a session every page sends the browser to sign in.
    let page = browser.get("/console/settlements").await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location.as_deref(), Some("/console/sign-in"));

    // A wrong token is refused, and no session cookie is set.
    let refused = browser.sign_in("st_not_a_token").await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.body);
    assert!(refused
        .set_cookies
        .iter()
        .all(|c| !c.starts_with("settle_console=")));

    let signed_in = browser.sign_in(ADMIN_TOKEN).await;
    assert_eq!(
        signed_in.status,
        StatusCode::SEE_OTHER,
        "{}",
        signed_in.body
    );
    let session = signed_in
        .set_cookies
        .iter()
        .find(|c| c.starts_with("settle_console="))
        .expect("a session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    assert!(session.contains("Path=/console"), "{session}");
    assert!(
        session.contains("Max-Age="),
        "the session expires: {session}"
    );
    assert!(
        !session.contains(ADMIN_TOKEN),
        "the cookie is not the token"
    );

    let page = browser.get("/console/settlements").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Settlements"));
    assert!(
        page.body.contains("Operations"),
        "the operator's navigation"
    );
    let operations = browser.get("/console/operations").await;
    assert_eq!(operations.status, StatusCode::OK, "{}", operations.body);
    assert!(operations.body.contains("Consumers and partitions"));

    // The stylesheet is served, and every page forbids scripts and framing.
    let css = browser.get("/console/console.css").await;
    assert_eq!(css.status, StatusCode::OK);
    assert!(css.body.contains("@media print"));
    let head = browser
        .http
        .get(format!("{}/console/sign-in", browser.base))
        .send()
        .await
        .expect("sign-in page");
    let csp = head
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_post_without_or_with_a_wrong_csrf_token_is_refused() {
    let app = TestApp::spawn().await;
    let mut browser = Browser::new(&app);
    assert_eq!(
        browser.sign_in(ADMIN_TOKEN).await.status,
        StatusCode::SEE_OTHER
    );
    let page = browser.get("/console/settlements").await;
    let csrf = csrf_of(&page.body);

    let without = browser.post("/console/sign-out", &[]).await;
    assert_eq!(without.status, StatusCode::FORBIDDEN, "{}", without.body);
    let wrong = browser
        .post("/console/sign-out", &[("csrf", "0123456789abcdef")])
        .await;
    assert_eq!(wrong.status, StatusCode::FORBIDDEN, "{}", wrong.body);
    let retry = browser
        .post(
            &format!("/console/settlements/{}/retry", uuid::Uuid::new_v4()),
            &[("csrf", "wrong")],
        )
        .await;
    assert_eq!(retry.status, StatusCode::FORBIDDEN, "{}", retry.body);
    let parked = browser
        .post(
            "/console/operations/parked/retry",
            &[("consumer", "projector-read-models-p0")],
        )
        .await;
    assert_eq!(parked.status, StatusCode::FORBIDDEN, "{}", parked.body);
    // The refused POSTs changed nothing: the session lives on.
    assert_eq!(
        browser.get("/console/settlements").await.status,
        StatusCode::OK
    );

    // The sign-in form has its own CSRF token too.
    let mut stranger = Browser::new(&app);
    let forged = stranger
        .post(
            "/console/sign-in",
            &[("csrf", "forged"), ("token", ADMIN_TOKEN)],
        )
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);

    // With the session's token, signing out ends the session on the server.
    let cookie = browser.cookie_header();
    let out = browser.post("/console/sign-out", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, StatusCode::SEE_OTHER, "{}", out.body);
    let replayed = browser
        .http
        .get(format!("{}/console/settlements", browser.base))
        .header(COOKIE, cookie)
        .send()
        .await
        .expect("replay");
    assert_eq!(
        replayed.status(),
        StatusCode::SEE_OTHER,
        "the old cookie is dead"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_member_sees_only_its_enterprise_and_an_auditor_sees_no_forms() {
    let app = TestApp::spawn().await;
    let l = lifecycle_world(&app, "10000000").await;
    let staged = stage(
        &app,
        &l.w,
        "console-1",
        json!({ &l.c1: {"BTC": "-1000000"} }),
    )
    .await;
    let id = staged.expect(200, None)["settlement"]["id"]
        .as_str()
        .expect("settlement id")
        .to_owned();
    settled(&app, &l.w, &id, "pending").await;
    let path = format!("/console/settlements/{id}");

    // The partner's member sees it, with its transfers and no audit timeline or operator forms.
    let mut partner = Browser::new(&app);
    assert_eq!(
        partner.sign_in(&l.w.partner.token).await.status,
        StatusCode::SEE_OTHER
    );
    let page = partner.get(&path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("console-1") && page.body.contains("-1000000"));
    assert!(page.body.contains("-0.01 BTC"), "amounts in decimals too");
    assert!(!page.body.contains("Audit timeline"));
    assert!(!page.body.contains("/retry") && !page.body.contains("/close"));
    let list = partner.get("/console/settlements").await;
    assert!(list.body.contains(&id), "{}", list.body);
    assert!(!list.body.contains("Operations"));
    // The filters: creation dates, status and external id, parsed as the API parses them.
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let filtered = partner
        .get(&format!(
            "/console/settlements?from={today}&to={today}&status=pending&externalId=console-1"
        ))
        .await;
    assert!(filtered.body.contains(&id), "{}", filtered.body);
    for query in [
        "from=2000-01-01&to=2000-01-02",
        "status=completed",
        "externalId=other",
    ] {
        let none = partner.get(&format!("/console/settlements?{query}")).await;
        assert_eq!(none.status, StatusCode::OK);
        assert!(!none.body.contains(&id), "{query}: {}", none.body);
    }
    let bad = partner.get("/console/settlements?from=yesterday").await;
    assert!(bad.body.contains("is not a date"), "{}", bad.body);
    assert_eq!(
        partner.get("/console/operations").await.status,
        StatusCode::FORBIDDEN
    );

    // A member of another enterprise: the same URL is not found, as for an unknown id.
    let other = tenant(&app, "Other Fund", 9).await;
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/client", other.id),
        json!({}),
    )
    .await
    .expect(200, None);
    let mut stranger = Browser::new(&app);
    assert_eq!(
        stranger.sign_in(&other.token).await.status,
        StatusCode::SEE_OTHER
    );
    let hidden = stranger.get(&path).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND, "{}", hidden.body);
    assert!(!hidden.body.contains("console-1"));
    let list = stranger.get("/console/settlements").await;
    assert_eq!(list.status, StatusCode::OK);
    assert!(!list.body.contains(&id));
    let foreign = stranger
        .get(&format!(
            "/console/settlements?view={}:partner",
            l.w.partner.id
        ))
        .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND, "{}", foreign.body);

    // An auditor of the client: the timeline with signatures, and no form but signing out.
    let auditor = app
        .admin(
            Method::POST,
            "/users",
            json!({"name": "console auditor", "enterpriseIds": [l.w.client.id], "auditor": true}),
        )
        .await
        .expect(200, None)["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let mut reader = Browser::new(&app);
    assert_eq!(reader.sign_in(&auditor).await.status, StatusCode::SEE_OTHER);
    let page = reader.get(&path).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert!(page.body.contains("Audit timeline"), "{}", page.body);
    assert!(page.body.contains("SettlementStaged"));
    assert!(page.body.contains("valid"), "signatureValid shown");
    assert_eq!(
        page.body.matches("<form").count(),
        1,
        "only the sign-out form: {}",
        page.body
    );
    assert!(page.body.contains(r#"action="/console/sign-out""#));
    assert!(!page.body.contains("Retry") && !page.body.contains("Close…"));
    // The auditor's console reads are recorded as the audit API records them.
    let reads = app
        .call(
            Method::GET,
            "/api/admin/v1/audit-reads?limit=100",
            Some(ADMIN_TOKEN),
            None,
            &[],
        )
        .await;
    let reads = reads.expect(200, None)["auditReads"].clone();
    let timeline = format!("/settlements/{id}/events");
    assert!(
        reads
            .as_array()
            .into_iter()
            .flatten()
            .any(|r| r["actor"] == "auditor"
                && r["status"] == 200
                && r["path"].as_str().is_some_and(|p| p.ends_with(&timeline))),
        "{reads}"
    );
    app.shutdown().await;
}

/// The value of the hidden field `name` of a page.
fn hidden(html: &str, name: &str) -> String {
    let marker = format!(r#"name="{name}" value=""#);
    let start = html
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} field in {html}"))
        + marker.len();
    html[start..]
        .split('"')
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What the browser shows of HTML-escaped text.
fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}

#[tokio::test]
async fn the_operator_closes_a_dispute_through_the_confirmation_page() {
    let mut app = TestApp::spawn().await;
    app.start_finalizer(60.0).await;
    let l = lifecycle_world(&app, "100000000").await;
    let staged = stage(
        &app,
        &l.w,
        "close-1",
        json!({ &l.c1: {"BTC": "-20000000"} }),
    )
    .await;
    let id = staged.expect(200, None)["settlement"]["id"]
        .as_str()
        .expect("settlement id")
        .to_owned();
    let dispute = raise(&app, &l.w, &id, &l.c1, json!({"BTC": "-5000000"})).await;
    let dispute = dispute.expect(200, None)["dispute"]["id"]
        .as_str()
        .expect("dispute id")
        .to_owned();
    settled(&app, &l.w, &id, "completed").await;

    let mut operator = Browser::new(&app);
    assert_eq!(
        operator.sign_in(ADMIN_TOKEN).await.status,
        StatusCode::SEE_OTHER
    );
    let page = operator.get(&format!("/console/settlements/{id}")).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    let form_path = format!("/console/disputes/{dispute}/close?settlement={id}");
    assert!(
        page.body.contains(&form_path.replace('&', "&amp;")),
        "{}",
        page.body
    );
    let form = operator.get(&form_path).await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.body);
    let csrf = csrf_of(&form.body);

    // A row with a currency and no amount is refused on the form, before anything is sent.
    let review = format!("/console/disputes/{dispute}/close/review");
    let half = operator
        .post(
            &review,
            &[
                ("csrf", &csrf),
                ("settlement", &id),
                ("notes", "agreed"),
                ("currency", "BTC"),
                ("amount", ""),
            ],
        )
        .await;
    assert_eq!(half.status, StatusCode::BAD_REQUEST, "{}", half.body);

    let confirm = operator
        .post(
            &review,
            &[
                ("csrf", &csrf),
                ("settlement", &id),
                ("notes", "agreed at 0.05"),
                ("currency", "BTC"),
                ("amount", "-5000000"),
                ("currency", ""),
                ("amount", ""),
            ],
        )
        .await;
    assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
    let exact = unescape(&hidden(&confirm.body, "body"));
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&exact).expect("JSON"),
        json!({"notes": "agreed at 0.05", "adjustedTransfers": {"BTC": "-5000000"}})
    );
    assert!(
        confirm.body.contains("-0.05 BTC"),
        "amounts read in decimals"
    );

    // Without the CSRF token the closure is refused and nothing is closed.
    let close = format!("/console/disputes/{dispute}/close");
    let forged = operator
        .post(&close, &[("settlement", &id), ("body", &exact)])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN, "{}", forged.body);

    let done = operator
        .post(
            &close,
            &[("csrf", &csrf), ("settlement", &id), ("body", &exact)],
        )
        .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
    assert_eq!(
        done.location.as_deref(),
        Some(format!("/console/settlements/{id}?notice=closed").as_str())
    );
    // The admin route recorded it: the same request again is its idempotent replay.
    let replay = app
        .admin(
            Method::POST,
            &format!("/disputes/{dispute}/close"),
            serde_json::from_str(&exact).expect("JSON"),
        )
        .await;
    assert_eq!(
        replay.expect(200, None)["disputeClosure"]["closedBy"],
        "admin"
    );
    app.shutdown().await;
}
