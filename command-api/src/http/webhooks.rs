//! Webhook notifications over HTTP: the admin sets or clears an enterprise's webhook URL (an
//! event-sourced command; internal destinations need the operator's allow-list), reads the
//! engine's webhook public key and an enterprise's delivery log with every attempt; partners and
//! clients read their notification feed with each item's delivery state and attempt count only
//! (what a receiver answered, and where its name resolved, is the operator's to see).

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use events::domain::enterprise::{Enterprise, WebhookRejection};
use schemas::signing::webhook::WEBHOOK_SCHEME;
use serde_json::Value;
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::admin::{admin_command, on_stream};
use super::auth::{self, enterprise_stream, Admin, Caller, Role};
use super::body::JsonBody;
use super::command::run;
use super::consistency::wait_for_min_position;
use super::context::RequestId;
use super::contract;
use super::error::{ApiError, ErrorCode};
use super::reads::{self, Page, PageQuery};
use super::views::{stamp, time};
use crate::state::AppState;

/// The projection whose checkpoint feed reads with `X-Min-Position` wait for.
const NOTIFICATIONS: &str = "projector-notifications";

/// `/api/admin/v1` routes.
pub fn admin_routes() -> Router<AppState> {
    Router::new()
        .route("/enterprises/{e}/webhook", put(configure))
        .route("/webhooks/public-key", get(public_key))
        .route("/enterprises/{e}/webhook-deliveries", get(deliveries))
}

/// `/api/network` routes. The client feed, `…/clients/notifications`, is `feed::<false>`,
/// registered with the other client routes in `settlements.rs`.
pub fn network_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/enterprises/{e}/partners/notifications",
            get(feed::<true>),
        )
        // The key webhooks are signed with, for the tenants who receive them.
        .route(
            "/v1/enterprises/{e}/partners/webhooks/public-key",
            get(tenant_public_key::<true>),
        )
        .route(
            "/v1/enterprises/{e}/clients/webhooks/public-key",
            get(tenant_public_key::<false>),
        )
}

fn webhook_error(e: WebhookRejection) -> ApiError {
    match e {
        WebhookRejection::NotFound => ApiError::not_found("enterprise"),
        WebhookRejection::Url(url) => ApiError::new(ErrorCode::InvalidWebhookUrl, url.to_string()),
        WebhookRejection::Destination(refusal) => {
            ApiError::new(ErrorCode::InvalidWebhookUrl, e.to_string())
                .with_detail("reason", refusal.code().into())
        }
    }
}

/// `{"url": "https://…"}` sets the URL, `{"url": null}` clears it; nothing else is accepted.
fn requested_url(body: &Value) -> Result<Option<String>, ApiError> {
    let invalid = |message: &str| ApiError::new(ErrorCode::InvalidRequest, message.to_owned());
    let object = body
        .as_object()
        .ok_or_else(|| invalid("the body must be a JSON object"))?;
    if let Some(unknown) = object.keys().find(|k| *k != "url") {
        return Err(invalid(&format!(
            "invalid request: unknown field `{unknown}`"
        )));
    }
    match object.get("url") {
        Some(Value::String(url)) => Ok(Some(url.clone())),
        Some(Value::Null) => Ok(None),
        Some(_) => Err(invalid("url must be a string or null")),
        None => Err(invalid("url is required (null clears the webhook)")),
    }
}

async fn configure(
    _: Admin,
    State(state): State<AppState>,
    Extension(request_id): Extension<RequestId>,
    Path(e): Path<Uuid>,
    JsonBody(body): JsonBody,
) -> Result<Response, ApiError> {
    let url = requested_url(&body)?;
    let stream = enterprise_stream(e);
    let spec = admin_command(
        "configure-webhook",
        Uuid::new_v4(),
        &body,
        vec![stream.clone()],
    );
    run(&state, &request_id, spec, |loaded, at| {
        on_stream::<Enterprise, _>(
            loaded,
            &stream,
            |current| {
                current
                    .decide_webhook(url.as_deref(), &state.webhooks.allow, at)
                    .map_err(webhook_error)
            },
            |after| {
                let r = after.record().ok_or_else(|| {
                    ApiError::internal("webhook configured without an enterprise")
                })?;
                Ok(contract::WebhookReply {
                    webhook: contract::Webhook {
                        enterprise_id: r.id,
                        url: r.webhook_url.clone(),
                        updated_at: r.webhook_updated_at.map(time),
                    },
                })
            },
        )
    })
    .await
}

/// The webhook key as a partner (`PARTNER`) or client of enterprise `e` reads it: the same as
/// the operator's.
async fn tenant_public_key<const PARTNER: bool>(
    caller: Caller,
    State(state): State<AppState>,
    Path(e): Path<Uuid>,
) -> Result<Json<contract::WebhookPublicKey>, ApiError> {
    let role = if PARTNER { Role::Partner } else { Role::Client };
    auth::authorize(&state, &caller, e, role).await?;
    webhook_public_key(&state)
}

async fn public_key(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<contract::WebhookPublicKey>, ApiError> {
    webhook_public_key(&state)
}

fn webhook_public_key(state: &AppState) -> Result<Json<contract::WebhookPublicKey>, ApiError> {
    let key = state
        .webhooks
        .public_key
        .ok_or_else(|| ApiError::internal("the webhook key is not configured"))?;
    Ok(Json(contract::WebhookPublicKey {
        public_key: hex::encode(key),
        scheme: WEBHOOK_SCHEME.to_owned(),
    }))
}

async fn deliveries(
    _: Admin,
    State(state): State<AppState>,
    Path(e): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<Json<contract::WebhookDeliveryList>, ApiError> {
    let page = q.page()?;
    Ok(Json(reads::list(
        notifications(&state.pool, e, page, Audience::Operator).await?,
        page,
    )))
}

/// A partner's (`PARTNER`) or client's notification feed, waiting for read-your-writes on the
/// notifications projection.
pub async fn feed<const PARTNER: bool>(
    caller: Caller,
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(e): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<Json<contract::NotificationList>, ApiError> {
    let role = if PARTNER { Role::Partner } else { Role::Client };
    auth::authorize(&state, &caller, e, role).await?;
    wait_for_min_position(&headers, &state.pool, NOTIFICATIONS, state.read_wait_max).await?;
    let page = q.page()?;
    Ok(Json(reads::list(
        notifications(&state.pool, e, page, Audience::Tenant).await?,
        page,
    )))
}

/// Who reads a delivery: the tenant sees its state and attempt count; the operator also the
/// schedule and every attempt (URL, status, error text, duration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    Tenant,
    Operator,
}

/// An enterprise's notifications in the order of the events behind them, each with its
/// payload (the exact webhook body) and its delivery: for the tenant its status and attempt
/// count, for the operator also the next attempt and every attempt. One statement: the page of
/// notifications, for the operator joined with their attempts (a row per attempt, in order).
pub async fn notifications(
    pool: &PgPool,
    enterprise_id: Uuid,
    page: Page,
    audience: Audience,
) -> Result<Vec<contract::Notification>, ApiError> {
    let page_sql =
        "SELECT n.id, n.type, n.enterprise_id, n.settlement_id, n.partner_id, n.external_id,
                n.created_at, n.body, n.position,
                coalesce(d.status, 'not_configured') AS delivery_status,
                coalesce(d.attempts, 0) AS attempt_count,
                CASE WHEN d.status = 'pending' THEN greatest(d.due_at, d.leased_until) END
                    AS next_attempt_at,
                d.delivered_at
         FROM rm_notifications n LEFT JOIN webhook_deliveries d ON d.notification_id = n.id
         WHERE n.enterprise_id = $1 ORDER BY n.position, n.id LIMIT $2 OFFSET $3";
    let sql = match audience {
        Audience::Tenant => page_sql.to_owned(),
        Audience::Operator => format!(
            "SELECT p.*, a.attempt, a.at AS attempt_at, a.url AS attempt_url,
                    a.http_status AS attempt_http_status, a.error AS attempt_error,
                    a.duration_ms AS attempt_duration_ms
             FROM ({page_sql}) p LEFT JOIN webhook_attempts a ON a.notification_id = p.id
             ORDER BY p.position, p.id, a.attempt"
        ),
    };
    let rows = sqlx::query(&sql)
        .bind(enterprise_id)
        .bind(i64::from(page.size))
        .bind(page.offset as i64)
        .fetch_all(pool)
        .await
        .map_err(ApiError::internal)?;
    let mut out: Vec<contract::Notification> = Vec::new();
    for row in &rows {
        let id: Uuid = row.try_get("id").map_err(ApiError::internal)?;
        if out.last().is_none_or(|n| n.id != id) {
            out.push(notification_of(row, audience).map_err(ApiError::internal)?);
        }
        if audience == Audience::Operator {
            let attempt = attempt_of(row).map_err(ApiError::internal)?;
            if let (Some(attempt), Some(attempts)) = (
                attempt,
                out.last_mut().and_then(|n| n.delivery.attempts.as_mut()),
            ) {
                attempts.push(attempt);
            }
        }
    }
    Ok(out)
}

fn notification_of(row: &PgRow, audience: Audience) -> Result<contract::Notification, String> {
    let sql = |e: sqlx::Error| e.to_string();
    let body: String = row.try_get("body").map_err(sql)?;
    let payload: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let attempt_count: i32 = row.try_get("attempt_count").map_err(sql)?;
    let operator = audience == Audience::Operator;
    let at = |c: &str| -> Result<Option<String>, String> {
        let t: Option<DateTime<Utc>> = row.try_get(c).map_err(sql)?;
        Ok(t.map(stamp))
    };
    Ok(contract::Notification {
        id: row.try_get("id").map_err(sql)?,
        kind: row.try_get("type").map_err(sql)?,
        enterprise_id: row.try_get("enterprise_id").map_err(sql)?,
        settlement_id: row.try_get("settlement_id").map_err(sql)?,
        partner_id: row.try_get("partner_id").map_err(sql)?,
        external_id: row.try_get("external_id").map_err(sql)?,
        created_at: stamp(row.try_get("created_at").map_err(sql)?),
        payload,
        delivery: contract::Delivery {
            status: row.try_get("delivery_status").map_err(sql)?,
            attempt_count: i64::from(attempt_count),
            // The tenant sees neither field; the operator sees both, `null` when unset.
            next_attempt_at: if operator {
                Some(at("next_attempt_at")?)
            } else {
                None
            },
            delivered_at: if operator {
                Some(at("delivered_at")?)
            } else {
                None
            },
            attempts: operator.then(Vec::new),
        },
    })
}

/// The attempt a row of the operator's statement carries; `None` where the left join found none.
fn attempt_of(row: &PgRow) -> Result<Option<contract::DeliveryAttempt>, sqlx::Error> {
    let Some(attempt) = row.try_get::<Option<i32>, _>("attempt")? else {
        return Ok(None);
    };
    let at: DateTime<Utc> = row.try_get("attempt_at")?;
    let http_status: Option<i32> = row.try_get("attempt_http_status")?;
    let duration_ms: i32 = row.try_get("attempt_duration_ms")?;
    Ok(Some(contract::DeliveryAttempt {
        attempt: i64::from(attempt),
        at: stamp(at),
        url: row.try_get("attempt_url")?,
        http_status: http_status.map(i64::from),
        error: row.try_get("attempt_error")?,
        duration_ms: Some(i64::from(duration_ms)),
    }))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_body_names_a_url_or_null_and_nothing_else() {
        assert_eq!(
            requested_url(&json!({"url": "https://a.example/h"})),
            Ok(Some("https://a.example/h".into()))
        );
        assert_eq!(requested_url(&json!({"url": null})), Ok(None));
        for bad in [json!({}), json!({"url": 7}), json!({"url": null, "x": 1})] {
            let e = requested_url(&bad).expect_err("refused");
            assert_eq!(
                (e.status().as_u16(), e.code()),
                (400, ErrorCode::InvalidRequest),
                "{bad}"
            );
        }
    }
}
