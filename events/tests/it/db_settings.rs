//! Our own connections carry the session guards (ADR 0007): every pooled connection reports
//! `statement_timeout` and `idle_in_transaction_session_timeout`, and migrations, which run
//! without the statement timeout, do not hand that setting back to the pool.

use events::store::db::{self, IDLE_IN_TRANSACTION_TIMEOUT_SECONDS, STATEMENT_TIMEOUT_SECONDS};

use crate::support::*;

/// A setting as `SHOW` reports it (`1min`, `15s`) and in milliseconds (`pg_settings`).
async fn setting(conn: &mut sqlx::PgConnection, name: &str) -> (String, u64) {
    let shown: String = sqlx::query_scalar(&format!("SHOW {name}"))
        .fetch_one(&mut *conn)
        .await
        .expect("SHOW");
    let (value, unit): (String, Option<String>) =
        sqlx::query_as("SELECT setting, unit FROM pg_settings WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *conn)
            .await
            .expect("pg_settings");
    assert_eq!(
        unit.as_deref(),
        Some("ms"),
        "{name} is kept in milliseconds"
    );
    (shown, value.parse().expect("a number"))
}

async fn assert_guarded(conn: &mut sqlx::PgConnection) {
    let (shown, ms) = setting(conn, "statement_timeout").await;
    assert_eq!(
        (shown.as_str(), ms),
        ("1min", STATEMENT_TIMEOUT_SECONDS * 1000)
    );
    let (shown, ms) = setting(conn, "idle_in_transaction_session_timeout").await;
    assert_eq!(
        (shown.as_str(), ms),
        ("15s", IDLE_IN_TRANSACTION_TIMEOUT_SECONDS * 1000)
    );
}

#[tokio::test]
async fn every_pooled_connection_reports_the_timeouts() {
    let db = TestDb::new().await;
    // One connection: the one migrations used (without the statement timeout) is not reused.
    let single = db::connect(&db.url, 1).await.expect("pool");
    db::migrate(&single).await.expect("migrations");
    assert_guarded(&mut single.acquire().await.expect("connection")).await;
    single.close().await;
    // Several physical connections at once.
    let pool = db::connect(&db.url, 3).await.expect("pool");
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.acquire().await.expect("connection"));
    }
    for conn in &mut held {
        assert_guarded(conn).await;
    }
    drop(held);
    pool.close().await;
    db.drop_db().await;
}
