//! The record of audit reads: who read what through the audit API, when, and with what answer.
//! Written before the answer is sent; append-only (migration 0013); listed for the operator.

use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::event::Timestamp;
use crate::store::{from_datetime, to_datetime};

use super::render::time;
use super::AuditError;

/// Who read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    Admin,
    Auditor(Uuid),
}

/// One audit read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditRead {
    pub reader: Reader,
    pub at: Timestamp,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: u16,
    pub request_id: String,
}

pub async fn record(pool: &PgPool, read: &AuditRead) -> Result<(), AuditError> {
    let (actor, user) = match read.reader {
        Reader::Admin => ("admin", None),
        Reader::Auditor(id) => ("auditor", Some(id)),
    };
    sqlx::query(
        "INSERT INTO audit_reads (read_at, actor, user_id, method, path, query, status, request_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(to_datetime(read.at))
    .bind(actor)
    .bind(user)
    .bind(&read.method)
    .bind(&read.path)
    .bind(&read.query)
    .bind(read.status as i16)
    .bind(&read.request_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Reads with an id above `after`, oldest first, at most `limit`; only `user_id`'s when given.
pub async fn list(
    pool: &PgPool,
    after: u64,
    limit: u32,
    user_id: Option<Uuid>,
) -> Result<Vec<(u64, Value)>, AuditError> {
    type Row = (
        i64,
        chrono::DateTime<chrono::Utc>,
        String,
        Option<Uuid>,
        String,
        String,
        String,
        i16,
        String,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, read_at, actor, user_id, method, path, query, status, request_id
         FROM audit_reads WHERE id > $1 AND ($2::uuid IS NULL OR user_id = $2)
         ORDER BY id LIMIT $3",
    )
    .bind(after as i64)
    .bind(user_id)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(id, at, actor, user, method, path, query, status, request_id)| {
                (
                    id as u64,
                    json!({
                        "id": id,
                        "readAt": time(from_datetime(at)),
                        "actor": actor,
                        "userId": user,
                        "method": method,
                        "path": path,
                        "query": query,
                        "status": status,
                        "requestId": request_id,
                    }),
                )
            },
        )
        .collect())
}
