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
use events::domain::enterprise::{Enterprise, WebhookRejection};
use schemas::signing::webhook::WEBHOOK_SCHEME;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::admin::{admin_command, on_stream};
use super::auth::{self, enterprise_stream, Admin, Caller, Role};
use super::body::JsonBody;
use super::command::run;
use super::consistency::wait_for_min_position;
use super::context::RequestId;
use super::error::{ApiError, ErrorCode};
use super::reads::{self, Page, PageQuery, TIME};
use super::views::time;
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
    Router::new().route(
        "/v1/enterprises/{e}/partners/notifications",
        get(feed::<true>),
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
        on_stream(
            loaded,
            &stream,
            Enterprise::evolve,
            |current| {
                current
                    .decide_webhook(url.as_deref(), &state.webhooks.allow, at)
                    .map_err(webhook_error)
            },
            |after| {
                json!({"webhook": after.record().map(|r| json!({
                    "enterpriseId": r.id,
                    "url": r.webhook_url,
                    "updatedAt": r.webhook_updated_at.map(time),
                }))})
            },
        )
    })
    .await
}

async fn public_key(_: Admin, State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let key = state
        .webhooks
        .public_key
        .ok_or_else(|| ApiError::internal("the webhook key is not configured"))?;
    Ok(Json(
        json!({"publicKey": hex::encode(key), "scheme": WEBHOOK_SCHEME}),
    ))
}

async fn deliveries(
    _: Admin,
    State(state): State<AppState>,
    Path(e): Path<Uuid>,
    Query(q): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let page = q.page()?;
    Ok(Json(reads::list(
        "webhookDeliveries",
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
) -> Result<Json<Value>, ApiError> {
    let role = if PARTNER { Role::Partner } else { Role::Client };
    auth::authorize(&state, &caller, e, role).await?;
    wait_for_min_position(&headers, &state.pool, NOTIFICATIONS, state.read_wait_max).await?;
    let page = q.page()?;
    Ok(Json(reads::list(
        "notifications",
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
/// count, for the operator also the next attempt and every attempt.
pub async fn notifications(
    pool: &PgPool,
    enterprise_id: Uuid,
    page: Page,
    audience: Audience,
) -> Result<Vec<Value>, ApiError> {
    let delivery = match audience {
        Audience::Tenant => "json_build_object(
                'status', coalesce(d.status, 'not_configured'),
                'attemptCount', coalesce(d.attempts, 0))"
            .to_owned(),
        Audience::Operator => operator_delivery(),
    };
    let sql = format!(
        "SELECT json_build_object(
            'id', n.id, 'type', n.type, 'enterpriseId', n.enterprise_id, 'settlementId', n.settlement_id,
            'partnerId', n.partner_id, 'externalId', n.external_id,
            'createdAt', to_char(n.created_at AT TIME ZONE 'UTC', {TIME}),
            'payload', n.body::json,
            'delivery', {delivery})::text
         FROM rm_notifications n LEFT JOIN webhook_deliveries d ON d.notification_id = n.id
         WHERE n.enterprise_id = $1 ORDER BY n.position, n.id LIMIT $2 OFFSET $3"
    );
    let rows: Vec<(String,)> = sqlx::query_as(&sql)
        .bind(enterprise_id)
        .bind(i64::from(page.size))
        .bind(page.offset as i64)
        .fetch_all(pool)
        .await
        .map_err(ApiError::internal)?;
    rows.into_iter()
        .map(|(text,)| serde_json::from_str(&text).map_err(ApiError::internal))
        .collect()
}

/// The operator's delivery object: state, schedule and the full attempt log.
fn operator_delivery() -> String {
    format!(
        "json_build_object(
                'status', coalesce(d.status, 'not_configured'),
                'attemptCount', coalesce(d.attempts, 0),
                'nextAttemptAt', CASE WHEN d.status = 'pending'
                    THEN to_char(greatest(d.due_at, d.leased_until) AT TIME ZONE 'UTC', {TIME}) END,
                'deliveredAt', to_char(d.delivered_at AT TIME ZONE 'UTC', {TIME}),
                'attempts', coalesce((
                    SELECT json_agg(json_build_object(
                        'attempt', a.attempt, 'at', to_char(a.at AT TIME ZONE 'UTC', {TIME}), 'url', a.url,
                        'httpStatus', a.http_status, 'error', a.error, 'durationMs', a.duration_ms)
                        ORDER BY a.attempt)
                    FROM webhook_attempts a WHERE a.notification_id = n.id), '[]'::json))"
    )
}

#[cfg(test)]
mod tests {
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
