//! The HTTP edge: the limits every API request meets before a handler runs — a whole-request
//! timeout, a body-read timeout, a cap on requests in flight that sheds the excess with 503, and
//! rate limits per access token (per address for requests without one) that answer 429. Each
//! refusal carries `Retry-After` and the API error body (rendered by `context`). The header-read
//! timeout is the server's (`events::service::serve_with`). Operations routes are not limited.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::error_handling::HandleErrorLayer;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use events::service::PeerAddr;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tower::ServiceBuilder;

use super::error::{ApiError, ErrorCode};
use crate::state::sha256;

/// Defaults of the edge limits; each is configurable (see `EdgeConfig`).
pub const HEADER_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
pub const BODY_READ_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Long enough for the largest settlement and a bounded read-your-writes wait.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 30_000;
pub const IN_FLIGHT_MAX_DEFAULT: usize = 512;
pub const RATE_PER_TOKEN_PER_SECOND_DEFAULT: u32 = 200;
pub const RATE_BURST_PER_TOKEN_DEFAULT: u32 = 400;
pub const RATE_PER_ADDRESS_PER_SECOND_DEFAULT: u32 = 20;
pub const RATE_BURST_PER_ADDRESS_DEFAULT: u32 = 40;
/// `Retry-After` of a shed request, in seconds.
const SHED_RETRY_AFTER_SECONDS: u64 = 1;
/// How often idle rate-limit state is dropped, so random keys cannot grow it without bound.
const RATE_STATE_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Limits of the HTTP edge; every flag also reads the environment variable of the same name.
/// A rate of 0 turns that rate limit off.
#[derive(Clone, Debug, clap::Args)]
pub struct EdgeConfig {
    /// Milliseconds a client may take to send a request's headers.
    #[arg(long, env = "SETTLE_HEADER_READ_TIMEOUT_MS", default_value_t = HEADER_READ_TIMEOUT_MS_DEFAULT)]
    pub header_read_timeout_ms: u64,
    /// Milliseconds a client may take to send a request's body (408 after).
    #[arg(long, env = "SETTLE_BODY_READ_TIMEOUT_MS", default_value_t = BODY_READ_TIMEOUT_MS_DEFAULT)]
    pub body_read_timeout_ms: u64,
    /// Milliseconds a whole request may take (408 after).
    #[arg(long, env = "SETTLE_REQUEST_TIMEOUT_MS", default_value_t = REQUEST_TIMEOUT_MS_DEFAULT)]
    pub request_timeout_ms: u64,
    /// Requests handled at once by this process; more are shed with 503.
    #[arg(long, env = "SETTLE_IN_FLIGHT_MAX", default_value_t = IN_FLIGHT_MAX_DEFAULT)]
    pub in_flight_max: usize,
    /// Sustained requests per second per access token (429 beyond the burst).
    #[arg(long, env = "SETTLE_RATE_PER_TOKEN", default_value_t = RATE_PER_TOKEN_PER_SECOND_DEFAULT)]
    pub rate_per_token: u32,
    /// Requests a token may send at once before its rate applies.
    #[arg(long, env = "SETTLE_RATE_BURST_PER_TOKEN", default_value_t = RATE_BURST_PER_TOKEN_DEFAULT)]
    pub rate_burst_per_token: u32,
    /// Sustained requests per second per client address, for requests without a token and
    /// for failed authentications.
    #[arg(long, env = "SETTLE_RATE_PER_ADDRESS", default_value_t = RATE_PER_ADDRESS_PER_SECOND_DEFAULT)]
    pub rate_per_address: u32,
    /// Requests an address may send at once before its rate applies.
    #[arg(long, env = "SETTLE_RATE_BURST_PER_ADDRESS", default_value_t = RATE_BURST_PER_ADDRESS_DEFAULT)]
    pub rate_burst_per_address: u32,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            header_read_timeout_ms: HEADER_READ_TIMEOUT_MS_DEFAULT,
            body_read_timeout_ms: BODY_READ_TIMEOUT_MS_DEFAULT,
            request_timeout_ms: REQUEST_TIMEOUT_MS_DEFAULT,
            in_flight_max: IN_FLIGHT_MAX_DEFAULT,
            rate_per_token: RATE_PER_TOKEN_PER_SECOND_DEFAULT,
            rate_burst_per_token: RATE_BURST_PER_TOKEN_DEFAULT,
            rate_per_address: RATE_PER_ADDRESS_PER_SECOND_DEFAULT,
            rate_burst_per_address: RATE_BURST_PER_ADDRESS_DEFAULT,
        }
    }
}

impl EdgeConfig {
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.header_read_timeout_ms)
    }
}

/// Whom a rate limit counts a request against.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    /// The SHA-256 of the bearer token (tokens are never kept in clear).
    Token([u8; 32]),
    Address(IpAddr),
}

struct Limiters {
    per_token: Option<DefaultKeyedRateLimiter<Key>>,
    per_address: Option<DefaultKeyedRateLimiter<Key>>,
    /// Addresses whose failed authentications used up their allowance, until when: held back
    /// whatever token they present next, so guessing tokens is rate-limited too.
    penalized: Mutex<HashMap<IpAddr, Instant>>,
}

fn limiter(per_second: u32, burst: u32) -> Option<DefaultKeyedRateLimiter<Key>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(burst.max(per_second)).unwrap_or(rate);
    Some(RateLimiter::keyed(
        Quota::per_second(rate).allow_burst(burst),
    ))
}

impl Limiters {
    fn new(config: &EdgeConfig) -> Self {
        Self {
            per_token: limiter(config.rate_per_token, config.rate_burst_per_token),
            per_address: limiter(config.rate_per_address, config.rate_burst_per_address),
            penalized: Mutex::default(),
        }
    }

    /// `Some(wait)` when `key` has no allowance left now.
    fn exhausted(limiter: &Option<DefaultKeyedRateLimiter<Key>>, key: &Key) -> Option<Duration> {
        let limiter = limiter.as_ref()?;
        limiter
            .check_key(key)
            .err()
            .map(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    fn penalty(&self, ip: IpAddr) -> Option<Duration> {
        let mut penalized = self.penalized.lock().unwrap_or_else(|p| p.into_inner());
        match penalized.get(&ip) {
            Some(until) if *until > Instant::now() => Some(*until - Instant::now()),
            Some(_) => {
                penalized.remove(&ip);
                None
            }
            None => None,
        }
    }

    fn penalize(&self, ip: IpAddr, wait: Duration) {
        let mut penalized = self.penalized.lock().unwrap_or_else(|p| p.into_inner());
        penalized.insert(ip, Instant::now() + wait);
    }

    fn prune(&self) {
        for limiter in [&self.per_token, &self.per_address].into_iter().flatten() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
        let now = Instant::now();
        let mut penalized = self.penalized.lock().unwrap_or_else(|p| p.into_inner());
        penalized.retain(|_, until| *until > now);
    }
}

fn bearer_key(request: &Request) -> Option<Key> {
    let value = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| Key::Token(sha256(token.trim().as_bytes())))
}

fn retry_after(mut response: Response, wait: Duration) -> Response {
    // Whole seconds, rounded up: a client waiting this long is admitted.
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    if let Ok(value) = HeaderValue::from_str(&seconds.max(1).to_string()) {
        response.headers_mut().insert("retry-after", value);
    }
    response
}

fn rate_limited(wait: Duration) -> Response {
    let refusal = ApiError::new(
        ErrorCode::RateLimited,
        "too many requests; retry after the time in Retry-After",
    );
    retry_after(refusal.into_response(), wait)
}

async fn rate_limit(
    State(limiters): State<Arc<Limiters>>,
    request: Request,
    next: Next,
) -> Response {
    let ip = request.extensions().get::<PeerAddr>().map(|p| p.0.ip());
    if let Some(wait) = ip.and_then(|ip| limiters.penalty(ip)) {
        return rate_limited(wait);
    }
    let token = bearer_key(&request);
    let verdict = match (&token, ip) {
        (Some(token), _) => Limiters::exhausted(&limiters.per_token, token),
        (None, Some(ip)) => Limiters::exhausted(&limiters.per_address, &Key::Address(ip)),
        (None, None) => None,
    };
    if let Some(wait) = verdict {
        return rate_limited(wait);
    }
    let response = next.run(request).await;
    // A token that failed authentication was counted against itself, which an attacker picks
    // afresh each time: count it against the address too (a request without a token already was).
    if response.status() == StatusCode::UNAUTHORIZED && token.is_some() {
        if let Some(ip) = ip {
            if let Some(wait) = Limiters::exhausted(&limiters.per_address, &Key::Address(ip)) {
                limiters.penalize(ip, wait);
            }
        }
    }
    response
}

async fn shed(_: tower::BoxError) -> Response {
    let refusal = ApiError::new(
        ErrorCode::Overloaded,
        "the server is handling as many requests as it takes; retry shortly",
    );
    retry_after(
        refusal.into_response(),
        Duration::from_secs(SHED_RETRY_AFTER_SECONDS),
    )
}

/// Puts the edge limits around `api` (the routes without the operations endpoints).
pub fn limit(api: Router, config: &EdgeConfig) -> Router {
    let limiters = Arc::new(Limiters::new(config));
    let pruned = Arc::downgrade(&limiters);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RATE_STATE_PRUNE_EVERY);
        every.tick().await;
        loop {
            every.tick().await;
            match pruned.upgrade() {
                Some(limiters) => limiters.prune(),
                None => return,
            }
        }
    });
    api.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
        Duration::from_millis(config.body_read_timeout_ms),
    ))
    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        Duration::from_millis(config.request_timeout_ms),
    ))
    .layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(shed))
            .load_shed()
            // Global: `Router::layer` gives each route its own copy of a layer, and a plain
            // concurrency limit would then cap each route separately.
            .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                config.in_flight_max.max(1),
            )),
    )
    .layer(middleware::from_fn_with_state(limiters, rate_limit))
}
