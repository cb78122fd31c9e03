//! Webhook delivery (ADR 0005): claims due deliveries (a lease taken with
//! `FOR UPDATE SKIP LOCKED`, so two finalizers never send the same attempt at once), POSTs each
//! notification's body signed Standard Webhooks style (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1a,…`), logs every attempt, and retries anything but a 2xx with capped
//! exponential backoff until it gives up. It runs in a loop of its own: a failing or slow
//! receiver delays only other webhooks, never a settlement.
//!
//! Destinations are checked at every attempt (`events::domain::webhook_url`): an IP literal
//! before sending, a name by every address it resolves to — in the HTTP client's own resolver,
//! so the connection goes only to an address that was checked (a rebinding DNS answer cannot
//! slip in between check and connect). A refused destination is a failed attempt that sends
//! nothing.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use events::domain::event::Timestamp;
use events::domain::webhook_url::{DestinationRefusal, WebhookAllowList, WebhookHost};
use events::store::to_datetime;
use futures::future::BoxFuture;
use futures::StreamExt;
use schemas::signing::webhook::{KeySource, WebhookSigner, DEVELOPMENT_ENV, WEBHOOK_SEED_ENV};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Longest error text kept in the attempt log, in bytes.
const ERROR_TEXT_BYTES_MAX: usize = 500;
/// How much longer than the request timeout a claim keeps other finalizers off a delivery.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// Delivery settings; every field has an environment name (and a flag when flattened into a
/// binary's configuration).
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct WebhookConfig {
    /// 64 hex characters: the 32-byte Ed25519 seed of the webhook signing key. Required, except
    /// in development mode (`SETTLE_DEVELOPMENT`), where unset means the public development key.
    #[arg(id = "webhook-seed",
        long = "webhook-seed", env = WEBHOOK_SEED_ENV, hide_env_values = true)]
    pub seed: Option<String>,
    /// Internal destinations webhooks may go to after all: comma-separated host names, IP
    /// addresses and CIDR networks (`hooks.internal,10.1.0.0/16`). Loopback, private,
    /// link-local, metadata and other internal addresses are refused unless named here.
    #[arg(
        id = "webhook-allow",
        long = "webhook-allow",
        env = WEBHOOK_ALLOW_ENV
    )]
    pub allow: Option<String>,
    /// Delay after the first failed attempt; each further failure doubles it.
    #[arg(
        id = "webhook-retry-base-ms",
        long = "webhook-retry-base-ms",
        env = "SETTLE_WEBHOOK_RETRY_BASE_MS",
        default_value_t = 1_000
    )]
    pub retry_base_ms: u64,
    /// Longest delay between two attempts.
    #[arg(
        id = "webhook-retry-cap-ms",
        long = "webhook-retry-cap-ms",
        env = "SETTLE_WEBHOOK_RETRY_CAP_MS",
        default_value_t = 3_600_000
    )]
    pub retry_cap_ms: u64,
    /// Attempts before a delivery is given up (`failed`).
    #[arg(
        id = "webhook-attempts-max",
        long = "webhook-attempts-max",
        env = "SETTLE_WEBHOOK_ATTEMPTS_MAX",
        default_value_t = 12
    )]
    pub attempts_max: u32,
    /// How long one attempt may take (connect, send, response head).
    #[arg(
        id = "webhook-timeout-ms",
        long = "webhook-timeout-ms",
        env = "SETTLE_WEBHOOK_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub timeout_ms: u64,
    /// Most deliveries claimed (and sent at once) per step.
    #[arg(
        id = "webhook-batch-max",
        long = "webhook-batch-max",
        env = "SETTLE_WEBHOOK_BATCH_MAX",
        default_value_t = 32
    )]
    pub batch_max: u32,
    /// Sleep between steps that found nothing due.
    #[arg(
        id = "webhook-poll-ms",
        long = "webhook-poll-ms",
        env = "SETTLE_WEBHOOK_POLL_MS",
        default_value_t = 500
    )]
    pub poll_ms: u64,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            seed: None,
            allow: None,
            retry_base_ms: 1_000,
            retry_cap_ms: 3_600_000,
            attempts_max: 12,
            timeout_ms: 5_000,
            batch_max: 32,
            poll_ms: 500,
        }
    }
}

#[derive(clap::Parser)]
struct FromEnv {
    #[command(flatten)]
    webhooks: WebhookConfig,
}

/// The configuration name of the destination allow-list, the same in the command-api.
pub const WEBHOOK_ALLOW_ENV: &str = "SETTLE_WEBHOOK_ALLOW";

impl WebhookConfig {
    /// The settings from the environment alone (for a binary that does not flatten them).
    pub fn from_env() -> anyhow::Result<Self> {
        use clap::Parser;
        Ok(FromEnv::try_parse_from(["finalizer"])?.webhooks)
    }

    /// The signing key: the configured seed, or in `development` mode without one the public
    /// development key (with a loud warning); without either, an error naming the setting.
    pub fn signer(&self, development: bool) -> anyhow::Result<WebhookSigner> {
        let (signer, source) = WebhookSigner::from_config(self.seed.as_deref(), development)
            .with_context(|| format!("{WEBHOOK_SEED_ENV} is missing or invalid"))?;
        if source == KeySource::Development {
            tracing::warn!(
                public_key = %signer.public_key_hex(),
                "DEVELOPMENT MODE ({DEVELOPMENT_ENV}): {WEBHOOK_SEED_ENV} is not set, so webhooks \
                 are signed with the PUBLIC development key, which anyone can rebuild from the \
                 source. Never run this way outside a local stack or tests."
            );
        }
        Ok(signer)
    }

    /// The destination allow-list (`SETTLE_WEBHOOK_ALLOW`).
    pub fn allow_list(&self) -> anyhow::Result<WebhookAllowList> {
        WebhookAllowList::parse(self.allow.as_deref().unwrap_or_default())
            .with_context(|| format!("{WEBHOOK_ALLOW_ENV} is invalid"))
    }
}

/// When to try again after a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
    pub attempts_max: u32,
}

/// What follows a failed attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterFailure {
    RetryIn(Duration),
    GiveUp,
}

impl RetryPolicy {
    /// After failed attempt `attempt` (1-based): `base · 2^(attempt−1)`, at most `cap`; nothing
    /// more once `attempts_max` attempts were made.
    pub fn after_failure(&self, attempt: u32) -> AfterFailure {
        if attempt >= self.attempts_max {
            return AfterFailure::GiveUp;
        }
        let factor = 2u32
            .checked_pow(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        AfterFailure::RetryIn(self.base.saturating_mul(factor).min(self.cap))
    }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    /// The receiver answered (any status).
    Answered(u16),
    /// No answer: connection refused, timeout, TLS, …
    NoAnswer(String),
    /// Not sent: the destination is internal and not allowed (`destination not allowed: …`).
    NotAllowed(String),
}

impl AttemptResult {
    pub fn accepted(&self) -> bool {
        matches!(self, Self::Answered(status) if (200..300).contains(status))
    }
}

/// What one step did; all zero when nothing was due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryStep {
    /// Attempts sent.
    pub attempted: usize,
    /// Of those, accepted with a 2xx.
    pub delivered: usize,
    /// Of those, failed and scheduled again.
    pub retrying: usize,
    /// Of those, failed for the last time.
    pub gave_up: usize,
    /// Due deliveries whose enterprise no longer has a URL (now `not_configured`).
    pub unconfigured: usize,
    /// Attempts sent whose outcome could not be recorded: their lease lapses and they are sent
    /// again (receivers deduplicate on `webhook-id`).
    pub unrecorded: usize,
}

impl DeliveryStep {
    pub fn idle(&self) -> bool {
        *self == Self::default()
    }
}

struct Claimed {
    notification_id: Uuid,
    attempt: i32,
    body: String,
    url: String,
}

/// Why a destination was not contacted; the attempt log's error text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestinationNotAllowed {
    pub host: String,
    /// The resolved address refused, when the host is a name.
    pub address: Option<IpAddr>,
    pub refusal: DestinationRefusal,
}

impl std::fmt::Display for DestinationNotAllowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.address {
            Some(address) => write!(
                f,
                "destination not allowed: {} resolves to {address}, {}",
                self.host, self.refusal
            ),
            None => write!(
                f,
                "destination not allowed: {} is {}",
                self.host, self.refusal
            ),
        }
    }
}

impl std::error::Error for DestinationNotAllowed {}

/// How a host name becomes addresses (the system resolver; tests substitute their own).
pub type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The system resolver.
pub fn system_lookup() -> Lookup {
    Arc::new(|host: String| {
        Box::pin(async move {
            tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map(Iterator::collect)
        })
    })
}

/// The webhook client's resolver: every address of a name is checked, and the name is refused
/// if any is not allowed; the client connects only to the addresses returned here.
struct CheckedResolver {
    allow: Arc<WebhookAllowList>,
    lookup: Lookup,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (allow, lookup) = (self.allow.clone(), self.lookup.clone());
        let host = match WebhookHost::parse(name.as_str()) {
            Ok(WebhookHost::Name(host)) => host,
            _ => name.as_str().to_ascii_lowercase(),
        };
        Box::pin(async move {
            let addresses = lookup(host.clone()).await?;
            for address in &addresses {
                if let Err(refusal) = allow.check_resolved(&host, address.ip()) {
                    return Err(Box::new(DestinationNotAllowed {
                        host: host.clone(),
                        address: Some(address.ip()),
                        refusal,
                    })
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addresses.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The HTTP side of delivery: a client whose every connection goes to a checked address.
#[derive(Clone)]
pub struct Sender {
    http: reqwest::Client,
    allow: Arc<WebhookAllowList>,
    timeout: Duration,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("allow", &self.allow)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Sender {
    pub fn new(allow: WebhookAllowList, timeout: Duration, lookup: Lookup) -> anyhow::Result<Self> {
        let allow = Arc::new(allow);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // A receiver's redirect is not followed: the URL configured is the one trusted.
            .redirect(reqwest::redirect::Policy::none())
            // No proxy from the environment: a proxy would resolve and connect on our behalf,
            // past the destination checks.
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                allow: allow.clone(),
                lookup,
            }))
            .user_agent(concat!(
                "settle-engine-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .context("cannot build the webhook HTTP client")?;
        Ok(Self {
            http,
            allow,
            timeout,
        })
    }

    /// The check of the URL's host as written: IP literals (which the client connects to
    /// without resolving) and the names refused as such.
    fn check_url(&self, url: &reqwest::Url) -> Result<(), AttemptResult> {
        let host = url
            .host_str()
            .ok_or_else(|| AttemptResult::NoAnswer("the URL has no host".into()))?;
        let parsed = WebhookHost::parse(host)
            .map_err(|e| AttemptResult::NoAnswer(format!("the URL's host is invalid: {e}")))?;
        self.allow.check_host(&parsed).map_err(|refusal| {
            AttemptResult::NotAllowed(
                DestinationNotAllowed {
                    host: host.to_owned(),
                    address: None,
                    refusal,
                }
                .to_string(),
            )
        })
    }

    /// One POST of `body` with `headers`; never an error: what happened is the result.
    pub async fn post(&self, url: &str, headers: &[(&str, String)], body: &str) -> AttemptResult {
        let url = match reqwest::Url::parse(url) {
            Ok(url) => url,
            Err(e) => return AttemptResult::NoAnswer(format!("the URL is invalid: {e}")),
        };
        if let Err(refused) = self.check_url(&url) {
            return refused;
        }
        let mut request = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        match request.body(body.to_owned()).send().await {
            Ok(response) => AttemptResult::Answered(response.status().as_u16()),
            Err(e) => match not_allowed(&e) {
                Some(refused) => AttemptResult::NotAllowed(refused.to_string()),
                None if e.is_timeout() => AttemptResult::NoAnswer(format!(
                    "timed out after {} ms",
                    self.timeout.as_millis()
                )),
                None => AttemptResult::NoAnswer(error_text(&e)),
            },
        }
    }
}

/// The resolver's refusal, if that is why a request failed.
fn not_allowed<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a DestinationNotAllowed> {
    let mut current = Some(e);
    while let Some(error) = current {
        if let Some(refused) = error.downcast_ref::<DestinationNotAllowed>() {
            return Some(refused);
        }
        current = error.source();
    }
    None
}

/// The deliverer: a value with a `step`, run by `run` or driven by tests.
#[derive(Clone, Debug)]
pub struct Deliverer {
    pool: PgPool,
    sender: Sender,
    signer: WebhookSigner,
    policy: RetryPolicy,
    timeout: Duration,
    batch_max: u32,
    poll: Duration,
}

impl Deliverer {
    /// A deliverer configured by `config`; see `WebhookConfig::signer` for `development`.
    pub fn new(pool: PgPool, config: &WebhookConfig, development: bool) -> anyhow::Result<Self> {
        let signer = config.signer(development)?;
        let sender = Sender::new(
            config.allow_list()?,
            Duration::from_millis(config.timeout_ms),
            system_lookup(),
        )?;
        Ok(Self::with(pool, config, signer, sender))
    }

    /// A deliverer with its key and sender made already.
    pub fn with(
        pool: PgPool,
        config: &WebhookConfig,
        signer: WebhookSigner,
        sender: Sender,
    ) -> Self {
        let timeout = Duration::from_millis(config.timeout_ms);
        Self {
            pool,
            sender,
            signer,
            policy: RetryPolicy {
                base: Duration::from_millis(config.retry_base_ms),
                cap: Duration::from_millis(config.retry_cap_ms),
                attempts_max: config.attempts_max.max(1),
            },
            timeout,
            batch_max: config.batch_max.max(1),
            poll: Duration::from_millis(config.poll_ms),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.signer.public_key()
    }

    /// Gives up due deliveries whose enterprise has no URL any more.
    async fn drop_unconfigured(&self, now: Timestamp) -> sqlx::Result<usize> {
        let done = sqlx::query(
            "UPDATE webhook_deliveries d SET status = 'not_configured', leased_until = NULL, updated_at = $1
             WHERE d.status = 'pending' AND d.due_at <= $1 AND (d.leased_until IS NULL OR d.leased_until <= $1)
               AND NOT EXISTS (SELECT 1 FROM rm_webhooks w WHERE w.enterprise_id = d.enterprise_id AND w.url IS NOT NULL)",
        )
        .bind(to_datetime(now))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() as usize)
    }

    /// Leases what is due at `now` and numbers its next attempt.
    async fn claim(&self, now: Timestamp) -> sqlx::Result<Vec<Claimed>> {
        let now_at = to_datetime(now);
        let rows: Vec<(Uuid, i32, String, String)> = sqlx::query_as(
            "UPDATE webhook_deliveries d SET attempts = d.attempts + 1, leased_until = $2, updated_at = $1
             FROM (SELECT c.notification_id FROM webhook_deliveries c
                   WHERE c.status = 'pending' AND c.due_at <= $1 AND (c.leased_until IS NULL OR c.leased_until <= $1)
                     AND EXISTS (SELECT 1 FROM rm_webhooks w WHERE w.enterprise_id = c.enterprise_id AND w.url IS NOT NULL)
                   ORDER BY c.due_at LIMIT $3 FOR UPDATE SKIP LOCKED) due
             JOIN rm_notifications n ON n.id = due.notification_id
             JOIN rm_webhooks w ON w.enterprise_id = n.enterprise_id
             WHERE d.notification_id = due.notification_id AND w.url IS NOT NULL
             RETURNING d.notification_id, d.attempts, n.body, w.url",
        )
        .bind(now_at)
        .bind(now_at + self.timeout + LEASE_MARGIN)
        .bind(i64::from(self.batch_max))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(notification_id, attempt, body, url)| Claimed {
                notification_id,
                attempt,
                body,
                url,
            })
            .collect())
    }

    /// One signed POST; never an error: what happened is the result.
    async fn send(&self, claimed: &Claimed, now: Timestamp) -> AttemptResult {
        let id = claimed.notification_id.to_string();
        let timestamp = now.0.div_euclid(1_000_000);
        let signature = self.signer.sign(&id, timestamp, claimed.body.as_bytes());
        let headers = [
            ("webhook-id", id),
            ("webhook-timestamp", timestamp.to_string()),
            ("webhook-signature", signature),
        ];
        self.sender
            .post(&claimed.url, &headers, &claimed.body)
            .await
    }

    /// Logs the attempt and moves the delivery on, unless its lease was lost meanwhile (then
    /// another finalizer owns the next attempt and this one only logs).
    async fn record(
        &self,
        claimed: &Claimed,
        result: &AttemptResult,
        at: Timestamp,
        took: Duration,
    ) -> sqlx::Result<Outcome> {
        let outcome = match (
            result.accepted(),
            self.policy
                .after_failure(u32::try_from(claimed.attempt).unwrap_or(u32::MAX)),
        ) {
            (true, _) => Outcome::Delivered,
            (false, AfterFailure::RetryIn(delay)) => Outcome::Retry(delay),
            (false, AfterFailure::GiveUp) => Outcome::GaveUp,
        };
        let (status, error) = match result {
            AttemptResult::Answered(status) => (Some(i32::from(*status)), None),
            AttemptResult::NoAnswer(e) | AttemptResult::NotAllowed(e) => (None, Some(e.as_str())),
        };
        let ended = Timestamp(at.0.saturating_add(took.as_micros().try_into().unwrap_or(i64::MAX)));
        let (state, due) = match outcome {
            Outcome::Delivered => ("delivered", ended),
            Outcome::Retry(delay) => (
                "pending",
                Timestamp(
                    ended
                        .0
                        .saturating_add(delay.as_micros().try_into().unwrap_or(i64::MAX)),
                ),
            ),
            Outcome::GaveUp => ("failed", ended),
        };
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO webhook_attempts VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING")
            .bind(claimed.notification_id)
            .bind(claimed.attempt)
            .bind(to_datetime(at))
            .bind(&claimed.url)
            .bind(status)
            .bind(error)
            .bind(i32::try_from(took.as_millis()).unwrap_or(i32::MAX))
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "UPDATE webhook_deliveries SET status = $3, due_at = $4, leased_until = NULL, updated_at = $5,
                    delivered_at = CASE WHEN $3 = 'delivered' THEN $5 END
             WHERE notification_id = $1 AND attempts = $2 AND status = 'pending'",
        )
        .bind(claimed.notification_id)
        .bind(claimed.attempt)
        .bind(state)
        .bind(to_datetime(due))
        .bind(to_datetime(ended))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// Claims what is due at `now`, sends it (all of a batch at once), and records each attempt.
    /// Errors only when nothing could be claimed; a failed record is counted, not raised, so
    /// the other attempts of the batch still finish.
    pub async fn step(&self, now: Timestamp) -> sqlx::Result<DeliveryStep> {
        let mut done = DeliveryStep {
            unconfigured: self.drop_unconfigured(now).await?,
            ..DeliveryStep::default()
        };
        let claimed = self.claim(now).await?;
        let mut results = futures::stream::iter(claimed)
            .map(|c| async move {
                let started = Instant::now();
                let result = self.send(&c, now).await;
                let took = started.elapsed();
                let outcome = self.record(&c, &result, now, took).await;
                (c, result, outcome)
            })
            .buffer_unordered(self.batch_max as usize);
        while let Some((claimed, result, outcome)) = results.next().await {
            done.attempted += 1;
            let id = claimed.notification_id;
            match outcome {
                Err(e) => {
                    tracing::warn!(notification_id = %id, attempt = claimed.attempt, error = %e, "webhook attempt not recorded");
                    done.unrecorded += 1;
                }
                Ok(Outcome::Delivered) => done.delivered += 1,
                Ok(Outcome::Retry(delay)) => {
                    tracing::info!(notification_id = %id, attempt = claimed.attempt, ?result, retry_in_ms = delay.as_millis() as u64, "webhook not accepted");
                    done.retrying += 1;
                }
                Ok(Outcome::GaveUp) => {
                    tracing::warn!(notification_id = %id, attempt = claimed.attempt, ?result, "webhook given up");
                    done.gave_up += 1;
                }
            }
        }
        metrics::counter!("settle_webhook_attempts_total").increment(done.attempted as u64);
        metrics::counter!("settle_webhook_delivered_total").increment(done.delivered as u64);
        metrics::counter!("settle_webhook_failed_total").increment(done.gave_up as u64);
        Ok(done)
    }

    /// Steps until `shutdown` (finishing the attempts in flight), sleeping when nothing is due.
    pub async fn run(self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let now = Timestamp(chrono::Utc::now().timestamp_micros());
            let idle = match self.step(now).await {
                Ok(done) => done.idle(),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook delivery step failed");
                    true
                }
            };
            if idle {
                tokio::select! {
                    _ = shutdown.cancelled() => {}
                    _ = tokio::time::sleep(self.poll) => {}
                }
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Retry(Duration),
    GaveUp,
}

/// An error and its causes on one line, bounded.
fn error_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if text.len() > ERROR_TEXT_BYTES_MAX {
        let mut end = ERROR_TEXT_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Delivers webhooks until `shutdown`: the finalizer's delivery loop.
pub async fn run_deliveries(
    pool: PgPool,
    config: WebhookConfig,
    development: bool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Deliverer::new(pool, &config, development)?
        .run(shutdown)
        .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap_then_gives_up() {
        let policy = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(3_600),
            attempts_max: 12,
        };
        let delays: Vec<AfterFailure> = (1..=12).map(|n| policy.after_failure(n)).collect();
        let secs = |s| AfterFailure::RetryIn(Duration::from_secs(s));
        assert_eq!(
            delays,
            vec![
                secs(1),
                secs(2),
                secs(4),
                secs(8),
                secs(16),
                secs(32),
                secs(64),
                secs(128),
                secs(256),
                secs(512),
                secs(1_024),
                AfterFailure::GiveUp,
            ]
        );
        let capped = RetryPolicy {
            cap: Duration::from_secs(100),
            attempts_max: 200,
            ..policy
        };
        assert_eq!(capped.after_failure(8), secs(100));
        assert_eq!(capped.after_failure(150), secs(100), "no overflow far out");
        let once = RetryPolicy {
            attempts_max: 1,
            ..policy
        };
        assert_eq!(once.after_failure(1), AfterFailure::GiveUp);
    }

    #[test]
    fn only_a_2xx_is_accepted() {
        for (result, accepted) in [
            (AttemptResult::Answered(200), true),
            (AttemptResult::Answered(204), true),
            (AttemptResult::Answered(299), true),
            (AttemptResult::Answered(301), false),
            (AttemptResult::Answered(410), false),
            (AttemptResult::Answered(500), false),
            (AttemptResult::NoAnswer("connection refused".into()), false),
            (
                AttemptResult::NotAllowed("destination not allowed".into()),
                false,
            ),
        ] {
            assert_eq!(result.accepted(), accepted, "{result:?}");
        }
    }

    #[test]
    fn error_text_keeps_causes_and_stays_bounded() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(error_text(&io), "refused");
        let long = std::io::Error::other("é".repeat(ERROR_TEXT_BYTES_MAX));
        let text = error_text(&long);
        assert!(text.len() <= ERROR_TEXT_BYTES_MAX && text.starts_with('é'));
    }

    /// A local receiver that answers 204 and counts what reaches it.
    async fn counting_receiver() -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let seen = Arc::new(AtomicUsize::new(0));
        let counter = seen.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                axum::http::StatusCode::NO_CONTENT
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (port, seen)
    }

    /// A resolver answering from a fixed table, recording each name it was asked for.
    fn table(answers: &[(&str, &[&str])]) -> (Lookup, Arc<std::sync::Mutex<Vec<String>>>) {
        let answers: Vec<(String, Vec<SocketAddr>)> = answers
            .iter()
            .map(|(name, ips)| {
                let addrs = ips
                    .iter()
                    .map(|ip| SocketAddr::new(ip.parse().expect("ip"), 0))
                    .collect();
                ((*name).to_owned(), addrs)
            })
            .collect();
        let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let lookup: Lookup = Arc::new(move |host: String| {
            log.lock().expect("log").push(host.clone());
            let found = answers
                .iter()
                .find(|(n, _)| *n == host)
                .map(|(_, a)| a.clone());
            Box::pin(async move {
                found.ok_or_else(|| {
                    std::io::Error::new(std::io::ErrorKind::NotFound, "no such host")
                })
            })
        });
        (lookup, asked)
    }

    fn sender(allow: &str, lookup: Lookup) -> Sender {
        let allow = WebhookAllowList::parse(allow).expect("allow-list");
        Sender::new(allow, Duration::from_secs(5), lookup).expect("sender")
    }

    fn refused(result: &AttemptResult) -> &str {
        match result {
            AttemptResult::NotAllowed(text) => text,
            other => panic!("expected a refused destination, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn names_are_checked_by_every_address_they_resolve_to() {
        let (port, seen) = counting_receiver().await;
        let (lookup, _) = table(&[
            ("hooks.test", &["127.0.0.1"]),
            ("rebind.test", &["93.184.216.34", "127.0.0.1"]),
            ("meta.test", &["::ffff:169.254.169.254"]),
        ]);
        let closed = sender("", lookup.clone());
        let url = |host: &str| format!("http://{host}:{port}/hook");
        let result = closed.post(&url("hooks.test"), &[], "{}").await;
        assert_eq!(
            refused(&result),
            "destination not allowed: hooks.test resolves to 127.0.0.1, a loopback address"
        );
        // DNS rebinding: one internal answer among public ones refuses the name.
        let result = closed.post(&url("Rebind.Test."), &[], "{}").await;
        assert!(refused(&result).contains("127.0.0.1"), "{result:?}");
        let result = closed.post(&url("meta.test"), &[], "{}").await;
        assert!(refused(&result).contains("metadata"), "{result:?}");
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing was sent"
        );

        // Allowed, the request goes to the address the checked resolver returned (the name
        // exists nowhere else).
        let open = sender("127.0.0.1", lookup);
        let result = open
            .post(&url("hooks.test"), &[("webhook-id", "x".into())], "{}")
            .await;
        assert_eq!(result, AttemptResult::Answered(204));
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn internal_literals_and_names_are_refused_before_any_lookup() {
        let (port, seen) = counting_receiver().await;
        let (lookup, asked) = table(&[]);
        let closed = sender("", lookup.clone());
        for host in [
            "127.0.0.1",
            "127.1",
            "0x7f.0.0.1",
            "2130706433",
            "[::1]",
            "[::ffff:127.0.0.1]",
            "localhost",
            "LOCALHOST.",
            "metadata.google.internal",
            "169.254.169.254",
            "10.0.0.1",
        ] {
            let result = closed
                .post(&format!("http://{host}:{port}/hook"), &[], "{}")
                .await;
            assert!(
                refused(&result).starts_with("destination not allowed: "),
                "{host}: {result:?}"
            );
        }
        assert!(
            asked.lock().expect("log").is_empty(),
            "no name was resolved"
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 0);
        let open = sender("127.0.0.0/8", lookup);
        let result = open
            .post(&format!("http://127.0.0.1:{port}/hook"), &[], "{}")
            .await;
        assert_eq!(result, AttemptResult::Answered(204));
    }

    #[test]
    fn the_domain_reads_hosts_as_the_http_client_does() {
        for host in [
            "127.0.0.1",
            "127.1",
            "0x7f.1",
            "0177.0.0.1",
            "2130706433",
            "10.0.0.1.",
            "Example.COM",
            "hooks.example.com.",
            "[::ffff:7f00:1]",
            "[0:0:0:0:0:0:0:1]",
            "hooks.1a",
        ] {
            let url = reqwest::Url::parse(&format!("http://{host}/x")).expect("url");
            let theirs = WebhookHost::parse(url.host_str().expect("host")).expect("parses");
            let ours = WebhookHost::of_url(&format!("http://{host}/x")).expect("ours");
            let same = match (&ours, &theirs) {
                (WebhookHost::Name(a), WebhookHost::Name(b)) => a == b,
                (WebhookHost::Ip(a), WebhookHost::Ip(b)) => a == b,
                _ => false,
            };
            assert!(same, "{host}: ours {ours:?}, the client's {theirs:?}");
        }
        for refused in ["256.1.1.1", "1.2.3.4.5", "08.1.1.1"] {
            assert!(reqwest::Url::parse(&format!("http://{refused}/")).is_err());
            assert!(WebhookHost::parse(refused).is_err(), "{refused}");
        }
    }

    #[test]
    fn settings_have_defaults_and_environment_names() {
        let names = [
            "SETTLE_WEBHOOK_RETRY_BASE_MS",
            "SETTLE_WEBHOOK_RETRY_CAP_MS",
            "SETTLE_WEBHOOK_ATTEMPTS_MAX",
            "SETTLE_WEBHOOK_TIMEOUT_MS",
        ];
        if names.iter().any(|n| std::env::var_os(n).is_some()) {
            return; // configured by the environment: the defaults are not what applies
        }
        let parsed = WebhookConfig::from_env().expect("defaults parse");
        let defaults = WebhookConfig::default();
        assert_eq!(
            (
                parsed.retry_base_ms,
                parsed.retry_cap_ms,
                parsed.attempts_max,
                parsed.timeout_ms
            ),
            (
                defaults.retry_base_ms,
                defaults.retry_cap_ms,
                defaults.attempts_max,
                defaults.timeout_ms
            )
        );
    }
}
