//! Webhook delivery (DESIGN §4 "Notifications"): claims due deliveries (a lease taken with
//! `FOR UPDATE SKIP LOCKED`, so two finalizers never send the same attempt at once), POSTs each
//! notification's body signed Standard Webhooks style (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1a,…`), logs every attempt, and retries anything but a 2xx with capped
//! exponential backoff until it gives up. It runs in a loop of its own: a failing or slow
//! receiver delays only other webhooks, never a settlement.

use std::time::{Duration, Instant};

use anyhow::Context;
use events::domain::event::Timestamp;
use events::store::to_datetime;
use futures::StreamExt;
use schemas::signing::webhook::{KeySource, WebhookSigner, WEBHOOK_SEED_ENV};
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
    /// 64 hex characters: the 32-byte Ed25519 seed of the webhook signing key. Unset: the
    /// public development key (a warning is logged).
    #[arg(id = "webhook-seed",
        long = "webhook-seed", env = WEBHOOK_SEED_ENV, hide_env_values = true)]
    pub seed: Option<String>,
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

impl WebhookConfig {
    /// The settings from the environment alone (for a binary that does not flatten them).
    pub fn from_env() -> anyhow::Result<Self> {
        use clap::Parser;
        Ok(FromEnv::try_parse_from(["finalizer"])?.webhooks)
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

/// The deliverer: a value with a `step`, run by `run` or driven by tests.
#[derive(Clone, Debug)]
pub struct Deliverer {
    pool: PgPool,
    http: reqwest::Client,
    signer: WebhookSigner,
    policy: RetryPolicy,
    timeout: Duration,
    batch_max: u32,
    poll: Duration,
}

impl Deliverer {
    pub fn new(pool: PgPool, config: &WebhookConfig) -> anyhow::Result<Self> {
        let (signer, source) = WebhookSigner::from_config(config.seed.as_deref())
            .with_context(|| format!("{WEBHOOK_SEED_ENV} is invalid"))?;
        if source == KeySource::Development {
            tracing::warn!(
                public_key = %signer.public_key_hex(),
                "{WEBHOOK_SEED_ENV} is not set: webhooks are signed with the public development key"
            );
        }
        let timeout = Duration::from_millis(config.timeout_ms);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            // A receiver's redirect is not followed: the URL configured is the one trusted.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "settle-engine-webhooks/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .context("cannot build the webhook HTTP client")?;
        Ok(Self {
            pool,
            http,
            signer,
            policy: RetryPolicy {
                base: Duration::from_millis(config.retry_base_ms),
                cap: Duration::from_millis(config.retry_cap_ms),
                attempts_max: config.attempts_max.max(1),
            },
            timeout,
            batch_max: config.batch_max.max(1),
            poll: Duration::from_millis(config.poll_ms),
        })
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
        let sent = self
            .http
            .post(&claimed.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(claimed.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => AttemptResult::Answered(response.status().as_u16()),
            Err(e) if e.is_timeout() => {
                AttemptResult::NoAnswer(format!("timed out after {} ms", self.timeout.as_millis()))
            }
            Err(e) => AttemptResult::NoAnswer(error_text(&e)),
        }
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
            AttemptResult::NoAnswer(e) => (None, Some(e.as_str())),
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
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    Deliverer::new(pool, &config)?.run(shutdown).await;
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
