//! The admin plane and its secrets (ADR 0007): users disabled, enabled and given a new token take
//! effect on the very next request; admin create routes honour `Idempotency-Key`; and without a
//! webhook signing seed the processes refuse to start unless told they are in development.

use std::time::Duration;

use events::service::CommonConfig;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::support::*;

/// Creates a user of `enterprise`; returns its id and token.
async fn user(app: &TestApp, enterprise: &str) -> (String, String) {
    let created = app
        .admin(
            Method::POST,
            "/users",
            json!({"name": "desk", "enterpriseIds": [enterprise]}),
        )
        .await;
    let body = created.expect(200, None);
    assert_eq!(body["user"]["disabled"], false);
    (
        body["user"]["id"].as_str().expect("id").to_owned(),
        body["accessToken"].as_str().expect("token").to_owned(),
    )
}

#[tokio::test]
async fn disabled_users_and_rotated_out_tokens_are_refused_at_once() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let (id, token) = user(&app, &w.client.id).await;
    let balances = format!("/v1/enterprises/{}/clients/balances", w.client.id);
    app.get(&balances, &token).await.expect(200, None);

    let disabled = app
        .admin(Method::POST, &format!("/users/{id}/disable"), json!({}))
        .await;
    assert_eq!(disabled.expect(200, None)["user"]["disabled"], true);
    app.get(&balances, &token)
        .await
        .expect(401, Some("user_disabled"));
    // Signed commands are refused too (access comes before the body).
    let body = w.allocation("BTC", json!("1000"), "after-disable", "n-after-disable");
    app.post(&w.allocation_path("allocations"), &token, body)
        .await
        .expect(401, Some("user_disabled"));
    // Disabling again changes nothing; the other users of the enterprise are unaffected.
    app.admin(Method::POST, &format!("/users/{id}/disable"), json!({}))
        .await
        .expect(200, None);
    app.get(&balances, &w.client.token).await.expect(200, None);

    let enabled = app
        .admin(Method::POST, &format!("/users/{id}/enable"), json!({}))
        .await;
    assert_eq!(enabled.expect(200, None)["user"]["disabled"], false);
    app.get(&balances, &token).await.expect(200, None);

    let rotated = app
        .admin(Method::POST, &format!("/users/{id}/token"), json!({}))
        .await;
    let rotated = rotated.expect(200, None).clone();
    let fresh = rotated["accessToken"].as_str().expect("a new token");
    assert_ne!(fresh, token);
    assert_eq!(rotated["user"]["id"], id.as_str());
    app.get(&balances, &token)
        .await
        .expect(401, Some("unauthenticated"));
    app.get(&balances, fresh).await.expect(200, None);

    let unknown = uuid::Uuid::new_v4();
    for action in ["disable", "enable", "token"] {
        app.admin(
            Method::POST,
            &format!("/users/{unknown}/{action}"),
            json!({}),
        )
        .await
        .expect(404, Some("not_found"));
        app.call(
            Method::POST,
            &format!("/api/admin/v1/users/{id}/{action}"),
            Some(fresh),
            None,
            &[],
        )
        .await
        .expect(401, Some("unauthenticated"));
    }
    app.shutdown().await;
}

/// An admin call with an `Idempotency-Key`.
async fn keyed(app: &TestApp, path: &str, key: &str, body: Value) -> Resp {
    app.call(
        Method::POST,
        &format!("/api/admin/v1{path}"),
        Some(ADMIN_TOKEN),
        Some(body),
        &[("Idempotency-Key", key)],
    )
    .await
}

async fn count(app: &TestApp, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(&app.db.pool)
        .await
        .expect("count")
}

#[tokio::test]
async fn admin_creates_with_the_same_idempotency_key_happen_once() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "Keyed Exchange", "oesLicense": true});
    let first = keyed(&app, "/enterprises", "create-keyed-1", body.clone()).await;
    let second = keyed(&app, "/enterprises", "create-keyed-1", body.clone()).await;
    let id = first.expect(200, None)["enterprise"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(second.expect(200, None), first.expect(200, None));
    assert_eq!(
        second.header("x-event-position"),
        first.header("x-event-position"),
        "the replay answers with the first write's position"
    );
    let created = "SELECT count(*) FROM events WHERE type_id = 1 AND stream_id = $1";
    assert_eq!(count(&app, created, &id).await, 1, "one enterprise");
    let shown = events::testing::eventually(Duration::from_secs(20), || async {
        count(
            &app,
            "SELECT count(*) FROM rm_enterprises WHERE name = $1",
            "Keyed Exchange",
        )
        .await
            == 1
    })
    .await;
    assert!(shown, "the read model lists one enterprise");
    // Same key, other body: refused. Another key: another enterprise.
    keyed(
        &app,
        "/enterprises",
        "create-keyed-1",
        json!({"name": "Other", "oesLicense": true}),
    )
    .await
    .expect(409, Some("idempotency_conflict"));
    let other = keyed(&app, "/enterprises", "create-keyed-2", body.clone()).await;
    assert_ne!(other.expect(200, None)["enterprise"]["id"], id.as_str());
    // Without a key every POST is a new command, as before.
    let unkeyed = app.admin(Method::POST, "/enterprises", body.clone()).await;
    assert_ne!(unkeyed.expect(200, None)["enterprise"]["id"], id.as_str());

    // Users: the replay is the recorded outcome, which never holds the one-time token.
    let user_body = json!({"name": "ops", "enterpriseIds": [id]});
    let first = keyed(&app, "/users", "user-1", user_body.clone()).await;
    let replay = keyed(&app, "/users", "user-1", user_body).await;
    let first = first.expect(200, None).clone();
    let replay = replay.expect(200, None).clone();
    assert_eq!(replay["user"], first["user"]);
    assert!(first["accessToken"].is_string());
    assert!(replay.get("accessToken").is_none(), "{replay}");
    let user_id = first["user"]["id"].as_str().expect("user id");
    let created = "SELECT count(*) FROM events WHERE type_id = 5 AND stream_id = $1";
    assert_eq!(count(&app, created, user_id).await, 1, "one user");

    // Keys, partner, client and deposits under a key answer the first outcome again.
    let key_body = json!({"publicKey": hex::encode(
        ed25519_dalek::SigningKey::from_bytes(&[9; 32]).verifying_key().to_bytes()
    )});
    let routes = [
        (format!("/enterprises/{id}/keys"), key_body),
        (
            format!("/enterprises/{id}/partner"),
            json!({"name": "Keyed Venue", "amountFormat": "baseUnits"}),
        ),
        (format!("/enterprises/{id}/client"), json!({})),
        (
            format!("/enterprises/{id}/deposits"),
            json!({"currency": "BTC", "quantity": "100", "externalId": "keyed-dep"}),
        ),
    ];
    for (path, body) in routes {
        let first = keyed(&app, &path, "same-key", body.clone()).await;
        let again = keyed(&app, &path, "same-key", body).await;
        assert_eq!(
            again.expect(200, None),
            first.expect(200, None),
            "{path} replays its first outcome"
        );
    }
    keyed(
        &app,
        &format!("/enterprises/{id}/deposits"),
        "same-key",
        json!({"currency": "BTC", "quantity": "200", "externalId": "keyed-dep"}),
    )
    .await
    .expect(409, Some("idempotency_conflict"));
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_idempotency_keys_are_refused_naming_the_header() {
    let app = TestApp::spawn().await;
    let body = json!({"name": "Never", "oesLicense": true});
    let long = "k".repeat(256);
    for bad in ["", long.as_str(), "tab\there"] {
        let refused = keyed(&app, "/enterprises", bad, body.clone()).await;
        refused.expect(400, Some("invalid_idempotency_key"));
        assert!(
            refused.body["error"]
                .as_str()
                .is_some_and(|e| e.contains("Idempotency-Key")),
            "{}",
            refused.body
        );
    }
    let fits = "k".repeat(255);
    keyed(&app, "/enterprises", &fits, body.clone())
        .await
        .expect(200, None);
    // Non-ASCII bytes, and two keys at once.
    let client = reqwest::Client::new();
    let url = format!("http://{}/api/admin/v1/enterprises", app.addr);
    let non_ascii = reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").expect("bytes");
    let sent = client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", non_ascii)
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(sent.status().as_u16(), 400);
    let sent = client
        .post(&url)
        .bearer_auth(ADMIN_TOKEN)
        .header("Idempotency-Key", "a")
        .header("Idempotency-Key", "b")
        .json(&body)
        .send()
        .await
        .expect("sent");
    assert_eq!(sent.status().as_u16(), 400);
    // The admin token is checked first.
    app.call(
        Method::POST,
        "/api/admin/v1/enterprises",
        Some("wrong"),
        Some(body),
        &[("Idempotency-Key", "")],
    )
    .await
    .expect(401, None);
    app.shutdown().await;
}

fn nowhere() -> CommonConfig {
    CommonConfig {
        // Never reached: the configuration is refused first.
        database_url: "postgres://nobody@127.0.0.1:1/nothing".into(),
        nats_url: "nats://127.0.0.1:1".into(),
        events_stream: "UNUSED".into(),
        events_subject_prefix: "unused".into(),
        db_connections: 1,
    }
}

fn error_chain(result: anyhow::Result<()>) -> String {
    format!("{:#}", result.expect_err("refused to start"))
}

#[tokio::test]
async fn without_a_webhook_seed_the_processes_refuse_to_start() {
    use clap::Parser;
    assert!(command_api::Config::parse_from(["command-api", "--development"]).development);
    assert!(finalizer::Config::parse_from(["finalizer", "--development"]).development);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = <command_api::Config as clap::Parser>::parse_from(["command-api"]);
    config.common = nowhere();
    config.webhook_seed = None;
    config.development = false;
    let refused = command_api::run(listener, config.clone(), CancellationToken::new()).await;
    let text = error_chain(refused);
    assert!(
        text.contains("SETTLE_WEBHOOK_SEED") && text.contains("SETTLE_DEVELOPMENT"),
        "{text}"
    );
    // A bad allow-list is refused as well.
    config.webhook_seed = Some(events::testing::TEST_WEBHOOK_SEED.into());
    config.webhook_allow = Some("10.0.0.0/40".into());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let text = error_chain(command_api::run(listener, config, CancellationToken::new()).await);
    assert!(text.contains("SETTLE_WEBHOOK_ALLOW"), "{text}");

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = <finalizer::Config as clap::Parser>::parse_from(["finalizer"]);
    config.common = nowhere();
    config.webhooks.seed = None;
    config.development = false;
    let text = error_chain(finalizer::run(listener, config, CancellationToken::new()).await);
    assert!(text.contains("SETTLE_WEBHOOK_SEED"), "{text}");
}

/// Runs the command-api binary against nothing with `env`; its exit status and stderr.
async fn run_binary(env: &[(&str, &str)]) -> (bool, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_command-api"))
            .env_remove("SETTLE_WEBHOOK_SEED")
            .env_remove("SETTLE_DEVELOPMENT")
            .env("SETTLE_LISTEN", "127.0.0.1:0")
            .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/nothing")
            .env("RUST_LOG", "warn")
            .env("RUST_BACKTRACE", "0")
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("exits")
    .expect("ran");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_binary_needs_a_seed_or_development_mode() {
    let (ok, stderr) = run_binary(&[]).await;
    assert!(
        !ok && stderr.contains("SETTLE_WEBHOOK_SEED is missing"),
        "{stderr}"
    );
    // Development mode (as the environment spells it): the loud warning, then on to Postgres,
    // which is not there.
    let (ok, stderr) = run_binary(&[("SETTLE_DEVELOPMENT", "1")]).await;
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("DEVELOPMENT MODE") && stderr.contains("PUBLIC development key"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot connect to Postgres"), "{stderr}");
}
