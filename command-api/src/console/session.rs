//! Console sign-in: a form posts the admin token or a user token; the session is a random id in
//! an HttpOnly, SameSite=Strict cookie that maps, in this process's memory, to the token and the
//! identity it proved. Sessions expire (idle and absolute limits). Every form carries the
//! session's CSRF token, checked on every POST. The identity is re-checked on the event store on
//! every request, as the API checks a token: a rotated token or a disabled user ends the session.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use events::domain::user::User;
use maud::html;
use uuid::Uuid;

use super::{layout, ConsoleError, ConsoleState};
use crate::http::auth::{self, Caller};
use crate::state::{sha256, AppState};

/// The session cookie: a random id, never the token.
pub const SESSION_COOKIE: &str = "settle_console";
/// The sign-in form's own CSRF cookie (double submit), before any session exists.
pub const SIGN_IN_COOKIE: &str = "settle_console_signin";
/// A session unused this long ends.
pub const IDLE_MAX: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const LIFETIME_MAX: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions one process keeps at most (expired ones are dropped first).
const SESSIONS_MAX: usize = 10_000;

/// Who signed in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The operator: the admin token.
    Admin,
    /// A user: an auditor, an enterprise member, or both.
    User {
        user_id: Uuid,
        name: String,
        auditor: bool,
        enterprise_ids: Vec<Uuid>,
    },
}

#[derive(Clone)]
struct Session {
    token: String,
    identity: Identity,
    csrf: String,
    created: Instant,
    last_seen: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.last_seen) > IDLE_MAX
            || now.duration_since(self.created) > LIFETIME_MAX
    }
}

/// The sessions of this process, by the SHA-256 of their cookie's id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

fn random_hex() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

impl Sessions {
    /// A new session for `token`; returns the cookie's id, or `None` when the process holds as
    /// many live sessions as it keeps.
    fn create(&self, token: String, identity: Identity) -> Option<String> {
        let now = Instant::now();
        let id = random_hex();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= SESSIONS_MAX {
            map.retain(|_, s| !s.expired(now));
            if map.len() >= SESSIONS_MAX {
                return None;
            }
        }
        map.insert(
            sha256(id.as_bytes()),
            Session {
                token,
                identity,
                csrf: random_hex(),
                created: now,
                last_seen: now,
            },
        );
        Some(id)
    }

    /// The live session of a cookie's id (its idle time restarts); an expired one is dropped.
    fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let key = sha256(id.as_bytes());
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(&key) {
            Some(s) if !s.expired(now) => {
                s.last_seen = now;
                Some(s.clone())
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    fn update_identity(&self, id: &str, identity: &Identity) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = map.get_mut(&sha256(id.as_bytes())) {
            s.identity = identity.clone();
        }
    }

    fn remove(&self, id: &str) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&sha256(id.as_bytes()));
    }
}

/// The signed-in viewer of a console request.
#[derive(Clone)]
pub struct Viewer {
    session_id: String,
    token: String,
    identity: Identity,
    csrf: String,
}

impl std::fmt::Debug for Viewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Viewer")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Viewer {
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn is_admin(&self) -> bool {
        self.identity == Identity::Admin
    }

    pub fn is_auditor(&self) -> bool {
        matches!(self.identity, Identity::User { auditor: true, .. })
    }

    /// The token, for the API routes the console calls in-process on the viewer's behalf.
    pub fn token(&self) -> &str {
        &self.token
    }

    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    /// The caller of a network read, as `http::auth` sees a bearer token.
    pub fn caller(&self) -> Option<Caller> {
        match &self.identity {
            Identity::Admin => None,
            Identity::User { user_id, .. } => Some(Caller {
                user_id: *user_id,
                token_hash: sha256(self.token.as_bytes()),
            }),
        }
    }

    pub fn label(&self) -> String {
        match &self.identity {
            Identity::Admin => "operator (admin)".to_owned(),
            Identity::User { name, auditor, .. } => {
                if *auditor {
                    format!("{name} (auditor)")
                } else {
                    name.clone()
                }
            }
        }
    }

    /// Refuses a POST whose form does not carry this session's CSRF token (403).
    pub fn check_csrf(&self, form: &[(String, String)]) -> Result<(), ConsoleError> {
        match field(form, "csrf") {
            Some(sent) if same(sent, &self.csrf) => Ok(()),
            _ => Err(ConsoleError::new(
                StatusCode::FORBIDDEN,
                "The form is stale or was not sent from this console (CSRF check). Reload the \
                 page and try again.",
            )),
        }
    }

    /// 403 unless the viewer holds the admin token.
    pub fn require_admin(&self) -> Result<(), ConsoleError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ConsoleError::new(
                StatusCode::FORBIDDEN,
                "Only the operator (admin token) may do this.",
            ))
        }
    }
}

/// A form field's first value.
pub fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Compares two secrets in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A cookie's value from the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `Set-Cookie` for the console's cookies: HttpOnly, SameSite=Strict, path `/console`, Secure
/// when the console is reached over HTTPS (through a terminating proxy).
fn set_cookie(headers: &HeaderMap, name: &str, value: &str, max_age: Duration) -> HeaderValue {
    let secure = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("https"));
    let text = format!(
        "{name}={value}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The identity a token proves now, checked on the event store as the API checks it: the admin
/// token, or a user's current token of a user who is not disabled.
async fn identify(state: &AppState, token: &str) -> Result<Option<Identity>, ConsoleError> {
    if token.is_empty() {
        return Ok(None);
    }
    if state.admin_token_hash == Some(sha256(token.as_bytes())) {
        return Ok(Some(Identity::Admin));
    }
    // The token is read exactly as the API reads a bearer token.
    let request = axum::http::Request::builder()
        .header(axum::http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(())
        .map_err(|_| ConsoleError::new(StatusCode::BAD_REQUEST, "The token is malformed."))?;
    let (mut parts, ()) = request.into_parts();
    let Ok(caller) = Caller::from_request_parts(&mut parts, &()).await else {
        return Ok(None);
    };
    let stream = auth::user_stream(caller.user_id);
    let loaded = auth::load(state, std::slice::from_ref(&stream)).await?;
    let user: User = loaded.aggregate(&stream);
    Ok(user
        .record()
        .filter(|u| u.token_hash == caller.token_hash && !u.disabled)
        .map(|u| Identity::User {
            user_id: u.id,
            name: u.name.clone(),
            auditor: u.auditor,
            enterprise_ids: u.enterprise_ids.clone(),
        }))
}

/// Where a request without a live session goes.
fn to_sign_in() -> Response {
    Redirect::to("/console/sign-in").into_response()
}

impl FromRequestParts<ConsoleState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ConsoleState,
    ) -> Result<Self, Self::Rejection> {
        let Some(id) = cookie(&parts.headers, SESSION_COOKIE).map(str::to_owned) else {
            return Err(to_sign_in());
        };
        let Some(session) = state.sessions.get(&id) else {
            return Err(to_sign_in());
        };
        // The token is checked again, on the event store, as on every API request.
        match identify(&state.app, &session.token).await {
            Ok(Some(identity)) => {
                if identity != session.identity {
                    state.sessions.update_identity(&id, &identity);
                }
                Ok(Viewer {
                    session_id: id,
                    token: session.token,
                    identity,
                    csrf: session.csrf,
                })
            }
            Ok(None) => {
                state.sessions.remove(&id);
                Err(to_sign_in())
            }
            Err(e) => Err(e.into_response()),
        }
    }
}

fn sign_in_form(csrf: &str, problem: Option<&str>) -> maud::Markup {
    html! {
        h1 { "Sign in" }
        p { "Sign in with the admin token (operators) or your access token (auditors and enterprise members). "
            "The token stays on the server; your browser keeps only a session cookie." }
        @if let Some(p) = problem {
            p.error role="alert" id="sign-in-problem" { (p) }
        }
        form.stack method="post" action="/console/sign-in" {
            input type="hidden" name="csrf" value=(csrf);
            label for="token" { "Access token" }
            input type="password" id="token" name="token" autocomplete="off" required
                aria-describedby=[problem.map(|_| "sign-in-problem")];
            button type="submit" { "Sign in" }
        }
    }
}

/// The sign-in page, with a fresh CSRF token in a cookie and in the form (double submit).
pub async fn sign_in_page(headers: HeaderMap) -> Response {
    sign_in_response(&headers, StatusCode::OK, None)
}

fn sign_in_response(headers: &HeaderMap, status: StatusCode, problem: Option<&str>) -> Response {
    let csrf = random_hex();
    let body = sign_in_form(&csrf, problem);
    let mut response = (
        status,
        Html(layout("Sign in", None, None, body).into_string()),
    )
        .into_response();
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(headers, SIGN_IN_COOKIE, &csrf, Duration::from_secs(3600)),
    );
    response
}

/// Signs in with the posted token: a session for the identity it proves, or the form again.
pub async fn sign_in(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let csrf_ok = match (cookie(&headers, SIGN_IN_COOKIE), field(&form, "csrf")) {
        (Some(expected), Some(sent)) => same(expected, sent),
        _ => false,
    };
    if !csrf_ok {
        return sign_in_response(
            &headers,
            StatusCode::FORBIDDEN,
            Some("The sign-in form was stale or not sent from this console. Try again."),
        );
    }
    let token = field(&form, "token").unwrap_or_default().trim().to_owned();
    let identity = match identify(&state.app, &token).await {
        Ok(Some(identity)) => identity,
        Ok(None) => {
            return sign_in_response(
                &headers,
                StatusCode::UNAUTHORIZED,
                Some("This token is not accepted: unknown, replaced, or its user is disabled."),
            )
        }
        Err(e) => return e.into_response(),
    };
    // A new session id at every sign-in; a session this browser had ends.
    if let Some(old) = cookie(&headers, SESSION_COOKIE) {
        state.sessions.remove(old);
    }
    let Some(id) = state.sessions.create(token, identity) else {
        return ConsoleError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "Too many console sessions are open; try again later.",
        )
        .into_response();
    };
    let mut response = Redirect::to("/console/settlements").into_response();
    let headers_out = response.headers_mut();
    headers_out.append(
        SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, &id, LIFETIME_MAX),
    );
    headers_out.append(
        SET_COOKIE,
        set_cookie(&headers, SIGN_IN_COOKIE, "", Duration::ZERO),
    );
    response
}

/// Signs out: the session ends on the server and its cookie is cleared.
pub async fn sign_out(
    State(state): State<ConsoleState>,
    viewer: Viewer,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Result<Response, ConsoleError> {
    viewer.check_csrf(&form)?;
    state.sessions.remove(&viewer.session_id);
    let mut response = Redirect::to("/console/sign-in").into_response();
    response.headers_mut().append(
        SET_COOKIE,
        set_cookie(&headers, SESSION_COOKIE, "", Duration::ZERO),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_are_found_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1; settle_console=abc"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie(&headers, "b"), Some("2"));
        assert_eq!(cookie(&headers, "c"), None);
    }

    #[test]
    fn sessions_expire_and_end() {
        let sessions = Sessions::default();
        let id = sessions
            .create("t".into(), Identity::Admin)
            .expect("room for a session");
        assert!(sessions.get(&id).is_some());
        assert!(sessions.get("other").is_none());
        sessions.remove(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn secrets_compare_whole() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
