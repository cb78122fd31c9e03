//! The auditor's surface (ADR 0010) against the real stack: who may read, the
//! settlement timeline with signatures re-verified by an independent implementation (Python's
//! `cryptography`), state at a position equal to what the read models showed then, signed
//! checkpoints that catch an insider's rewrite, tamper detection by the API, `settle-audit` (on
//! the read-only role) and `/metrics`, and the record of audit reads.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::support::*;

async fn audit(app: &TestApp, path: &str, token: Option<&str>) -> Resp {
    app.call(
        Method::GET,
        &format!("/api/audit/v1{path}"),
        token,
        None,
        &[],
    )
    .await
}

/// A user flagged `auditor`, member of `enterprises`: its id and token.
async fn auditor(app: &TestApp, name: &str, enterprises: &[&str]) -> (String, String) {
    let created = app
        .admin(
            Method::POST,
            "/users",
            json!({"name": name, "enterpriseIds": enterprises, "auditor": true}),
        )
        .await;
    let body = created.expect(200, None);
    (
        body["user"]["id"].as_str().unwrap().to_owned(),
        body["accessToken"].as_str().unwrap().to_owned(),
    )
}

/// Waits until every committed event has its place in the log, and returns the head.
async fn sequenced(app: &TestApp) -> u64 {
    let pool = app.db.pool.clone();
    let done = events::testing::eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        async move {
            let unsequenced: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM events e LEFT JOIN event_log l ON l.event_id = e.event_id
                 WHERE l.position IS NULL",
            )
            .fetch_one(&pool)
            .await
            .unwrap();
            unsequenced == 0
        }
    })
    .await;
    assert!(done, "every event sequenced");
    let head: i64 = sqlx::query_scalar("SELECT coalesce(max(position), 0) FROM event_log")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    head as u64
}

fn v1(w: &World) -> String {
    format!("/v1/enterprises/{}/partners/settlements", w.partner.id)
}

/// A v1 settlement (executed at once): its id and position token.
async fn perform(app: &TestApp, w: &World, external: &str, amounts: Value) -> (String, String) {
    let body = signed(
        &w.partner.key,
        json!({"externalId": external, "settlementAmounts": amounts}),
        &[],
        external,
    );
    let done = app.post(&v1(w), &w.partner.token, body).await;
    let settlement = done.expect(200, None)["settlement"].clone();
    assert_eq!(settlement["status"], "completed", "{settlement}");
    (
        settlement["id"].as_str().unwrap().to_owned(),
        done.header("x-event-position").unwrap(),
    )
}

/// A world with 0.6 BTC allocated to the connection and 0.1 BTC in the partner's custody.
async fn funded(app: &TestApp) -> World {
    let w = world(app, "baseUnits").await;
    app.post(
        &w.allocation_path("allocations"),
        &w.client.token,
        w.allocation("BTC", json!("60000000"), "fund", "fund"),
    )
    .await
    .expect(200, None);
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/deposits", w.partner.id),
        json!({"currency": "BTC", "quantity": "10000000", "externalId": "p-1"}),
    )
    .await
    .expect(200, None);
    w
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The independent verifier: `deploy/audit/verify_ed25519.py` on the stack's Python, whose
/// `cryptography` (OpenSSL) shares no code with the engine. One check per
/// `(public key hex, message, signature hex)`; true when all verify.
fn python_verifies(checks: &[(String, String, String)]) -> bool {
    let python = std::env::var("SETTLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root().join("deploy/.venv/bin/python3"));
    let mut child = std::process::Command::new(&python)
        .arg(root().join("deploy/audit/verify_ed25519.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "run {} (deploy/stack up installs it): {e}",
                python.display()
            )
        });
    {
        let stdin = child.stdin.as_mut().expect("stdin");
        for (key, message, signature) in checks {
            let line = json!({"publicKey": key, "message": message, "signature": signature});
            writeln!(stdin, "{line}").expect("write a check");
        }
    }
    let out = child.wait_with_output().expect("verifier runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "the verifier failed to run: {stderr}"
    );
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| *l == "ok")
        .count();
    out.status.success() && lines == checks.len()
}

/// The routes of the audit API, for `w` and `settlement`.
fn routes(w: &World, settlement: &str) -> Vec<String> {
    vec![
        format!("/settlements/{settlement}/events"),
        format!("/settlements/{settlement}"),
        format!("/enterprises/{}/balances", w.client.id),
        "/events?limit=5".into(),
        "/chain".into(),
        "/chain/verify".into(),
        "/key".into(),
    ]
}

#[tokio::test]
async fn audit_routes_admit_the_admin_and_auditors_refuse_others_and_are_recorded() {
    let app = TestApp::spawn().await;
    let w = funded(&app).await;
    let (settlement, _) = perform(
        &app,
        &w,
        "audit-1",
        json!({ w.connection_id.clone(): {"BTC": "-1000000"} }),
    )
    .await;
    let outsider_tenant = tenant(&app, "Elsewhere", 9).await;
    let (auditor_id, auditor_token) = auditor(&app, "Client auditor", &[&w.client.id]).await;
    let (_, outsider) = auditor(&app, "Other auditor", &[&outsider_tenant.id]).await;
    sequenced(&app).await;

    for route in routes(&w, &settlement) {
        audit(&app, &route, Some(ADMIN_TOKEN))
            .await
            .expect(200, None);
        audit(&app, &route, Some(&auditor_token))
            .await
            .expect(200, None);
        audit(&app, &route, Some(&w.client.token))
            .await
            .expect(403, Some("not_an_auditor"));
        audit(&app, &route, None)
            .await
            .expect(401, Some("unauthenticated"));
        audit(&app, &route, Some("st_not-a-token"))
            .await
            .expect(401, Some("unauthenticated"));
    }

    // An auditor sees only its enterprises: another tenant's objects do not exist for it.
    for route in [
        format!("/settlements/{settlement}/events"),
        format!("/settlements/{settlement}"),
        format!("/enterprises/{}/balances", w.client.id),
        format!("/events?enterpriseId={}", w.partner.id),
    ] {
        audit(&app, &route, Some(&outsider))
            .await
            .expect(404, Some("not_found"));
    }
    let feed = audit(&app, "/events?limit=1000", Some(&outsider)).await;
    let seen = feed.expect(200, None)["events"].as_array().unwrap().clone();
    assert!(!seen.is_empty(), "its own enterprise's events");
    assert!(
        seen.iter()
            .all(|e| !e["stream"].as_str().unwrap().contains(&w.client.id)),
        "none of the client's"
    );
    let all = audit(&app, "/events?limit=1000", Some(ADMIN_TOKEN)).await;
    assert!(all.expect(200, None)["events"].as_array().unwrap().len() > seen.len());

    // Bad queries are 400 with the API error body, unknown parameters included.
    for route in [
        "/events?limit=0",
        "/events?type=NoSuchEvent",
        "/events?stream=nonsense",
        "/events?sort=asc",
        "/chain/verify?from=x",
    ] {
        audit(&app, route, Some(ADMIN_TOKEN))
            .await
            .expect(400, Some("invalid_query"));
    }

    // Every read of the auditor is on record, for the operator only.
    let reads = app
        .call(
            Method::GET,
            &format!("/api/admin/v1/audit-reads?userId={auditor_id}&limit=100"),
            Some(ADMIN_TOKEN),
            None,
            &[],
        )
        .await;
    let reads = reads.expect(200, None)["auditReads"]
        .as_array()
        .unwrap()
        .clone();
    let paths: Vec<String> = reads
        .iter()
        .map(|r| {
            let q = r["query"].as_str().unwrap();
            let p = r["path"]
                .as_str()
                .unwrap()
                .trim_start_matches("/api/audit/v1");
            if q.is_empty() {
                p.to_owned()
            } else {
                format!("{p}?{q}")
            }
        })
        .collect();
    assert_eq!(paths, routes(&w, &settlement), "who read what, in order");
    assert!(reads
        .iter()
        .all(|r| r["actor"] == "auditor" && r["status"] == 200 && r["readAt"].is_string()));
    app.call(
        Method::GET,
        "/api/admin/v1/audit-reads",
        Some(&auditor_token),
        None,
        &[],
    )
    .await
    .expect(401, Some("unauthenticated"));
    let refused: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_reads WHERE status = 404")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(refused, 4, "the outsider's refused reads are on record too");
    // The record is append-only for the application as for the events.
    let changed = sqlx::query("DELETE FROM audit_reads")
        .execute(&app.db.pool)
        .await;
    assert!(changed.is_err(), "audit reads cannot be deleted");
    app.shutdown().await;
}

/// What the client's and the partner's read models showed, and where the log stood then.
struct Snapshot {
    position: u64,
    client: Value,
    partner: Value,
}

async fn snapshot(app: &TestApp, w: &World, token: &str) -> Snapshot {
    let client = app
        .get_after(
            &format!("/v1/enterprises/{}/clients/balances", w.client.id),
            &w.client.token,
            token,
        )
        .await
        .expect(200, None)
        .clone();
    let partner = app
        .get_after(
            &format!("/v1/enterprises/{}/partners/balances", w.partner.id),
            &w.partner.token,
            token,
        )
        .await
        .expect(200, None)
        .clone();
    // Nothing else writes in this test, so the log's head is the write's last event.
    Snapshot {
        position: sequenced(app).await,
        client,
        partner,
    }
}

#[tokio::test]
async fn timelines_keep_signed_instructions_that_verify_independently_and_state_matches_the_past() {
    let app = TestApp::spawn().await;
    let w = world(&app, "baseUnits").await;
    let mut snapshots = vec![snapshot(&app, &w, &w.connected_at).await];

    let allocated = app
        .post(
            &w.allocation_path("allocations"),
            &w.client.token,
            w.allocation("BTC", json!("60000000"), "fund", "n-fund"),
        )
        .await;
    allocated.expect(200, None);
    snapshots.push(snapshot(&app, &w, &allocated.header("x-event-position").unwrap()).await);

    let renamed = app
        .call(
            Method::PUT,
            &format!(
                "/api/network/v1/enterprises/{}/clients/connections/{}",
                w.client.id, w.connection_id
            ),
            Some(&w.client.token),
            Some(signed(
                &w.client.key,
                json!({"name": "desk"}),
                &[],
                "n-rename",
            )),
            &[],
        )
        .await;
    renamed.expect(200, None);
    snapshots.push(snapshot(&app, &w, &renamed.header("x-event-position").unwrap()).await);

    let deposited = app
        .admin(
            Method::POST,
            &format!("/enterprises/{}/deposits", w.partner.id),
            json!({"currency": "BTC", "quantity": "10000000", "externalId": "p-1"}),
        )
        .await;
    deposited.expect(200, None);
    snapshots.push(snapshot(&app, &w, &deposited.header("x-event-position").unwrap()).await);
    let before_settlement = snapshots.last().unwrap().position;

    let (settlement, token) = perform(
        &app,
        &w,
        "audit-2",
        json!({ w.connection_id.clone(): {"BTC": "-2500000"} }),
    )
    .await;
    snapshots.push(snapshot(&app, &w, &token).await);

    let dealloc = app
        .post(
            &w.allocation_path("deallocations"),
            &w.client.token,
            w.allocation("BTC", json!("1000000"), "back", "n-back"),
        )
        .await;
    dealloc.expect(200, None);
    snapshots.push(snapshot(&app, &w, &dealloc.header("x-event-position").unwrap()).await);

    // Balances at each recorded position equal what the read models showed then.
    for s in &snapshots {
        let client = audit(
            &app,
            &format!(
                "/enterprises/{}/balances?atPosition={}",
                w.client.id, s.position
            ),
            Some(ADMIN_TOKEN),
        )
        .await;
        let client = client.expect(200, None);
        assert_eq!(
            client["balances"], s.client["balances"],
            "custody at {}",
            s.position
        );
        assert_eq!(
            client["clientNetworkBalances"], s.client["networkBalances"],
            "connections at {}",
            s.position
        );
        let partner = audit(
            &app,
            &format!(
                "/enterprises/{}/balances?atPosition={}",
                w.partner.id, s.position
            ),
            Some(ADMIN_TOKEN),
        )
        .await;
        let partner = partner.expect(200, None);
        assert_eq!(
            partner["balances"], s.partner["balances"],
            "partner at {}",
            s.position
        );
        assert_eq!(
            partner["partnerNetworkBalances"], s.partner["networkBalances"],
            "partner's connections at {}",
            s.position
        );
    }
    let head = snapshots.last().unwrap().position;
    audit(
        &app,
        &format!(
            "/enterprises/{}/balances?atPosition={}",
            w.client.id,
            head + 1
        ),
        Some(ADMIN_TOKEN),
    )
    .await
    .expect(400, Some("position_ahead_of_log"));

    // The settlement as it stood: absent before staging, completed after.
    audit(
        &app,
        &format!("/settlements/{settlement}?atPosition={before_settlement}"),
        Some(ADMIN_TOKEN),
    )
    .await
    .expect(404, Some("not_found"));
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let as_of = app
        .call(
            Method::GET,
            &format!("/api/audit/v1/settlements/{settlement}"),
            Some(ADMIN_TOKEN),
            None,
            &[],
        )
        .await;
    let current = as_of.expect(200, None);
    assert_eq!(current["settlement"]["status"], "completed");
    assert_eq!(current["settlementTransfers"][0]["quantity"], "-2500000");
    let by_time = app
        .http
        .get(format!(
            "http://{}/api/audit/v1/settlements/{settlement}",
            app.addr
        ))
        .query(&[("asOf", now.as_str())])
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(by_time.status(), 200);
    let by_time: Value = by_time.json().await.unwrap();
    assert_eq!(by_time["settlement"]["status"], "completed");
    assert_eq!(by_time["atPosition"].as_u64(), Some(head));

    // The timeline: every event touching the settlement, in order, with its signed instruction.
    let timeline = audit(
        &app,
        &format!("/settlements/{settlement}/events"),
        Some(ADMIN_TOKEN),
    )
    .await;
    let events = timeline.expect(200, None)["events"]
        .as_array()
        .unwrap()
        .clone();
    let types: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types.first(), Some(&"SettlementStaged"), "{types:?}");
    assert!(
        types.contains(&"ConnectionSettled") && types.contains(&"CustodySettled"),
        "{types:?}"
    );
    assert_eq!(types.last(), Some(&"SettlementExecuted"), "{types:?}");
    let positions: Vec<u64> = events
        .iter()
        .map(|e| e["position"].as_u64().unwrap())
        .collect();
    assert!(positions.windows(2).all(|p| p[0] < p[1]), "in log order");
    for e in &events {
        for field in ["hash", "stream", "recordedAt", "requestId", "eventId"] {
            assert!(e[field].is_string(), "{field} in {e}");
        }
        assert!(e["version"].is_u64() && e["payload"].is_object(), "{e}");
    }
    let staged = &events[0];
    assert_eq!(
        staged["actor"],
        json!({"kind": "user", "userId": staged["actor"]["userId"]})
    );
    assert_eq!(staged["payload"]["external_id"], "audit-2");
    let signed_staged = &staged["signed"];
    assert_eq!(signed_staged["signatureValid"], true, "{signed_staged}");
    let partner_key = hex::encode(w.partner.key.verifying_key().to_bytes());
    assert_eq!(signed_staged["publicKey"], partner_key.as_str());
    assert_eq!(signed_staged["keyId"], w.partner.key_id.as_str());

    // The allocation, connection creation and rename keep theirs too (through the feed).
    let feed = audit(
        &app,
        &format!("/events?stream=connection/{}&limit=100", w.connection_id),
        Some(ADMIN_TOKEN),
    )
    .await;
    let connection_events = feed.expect(200, None)["events"].as_array().unwrap().clone();
    let of_type = |t: &str| {
        connection_events
            .iter()
            .find(|e| e["type"] == t)
            .unwrap_or_else(|| panic!("a {t} event"))
            .clone()
    };
    let allocation = of_type("AllocationCleared");
    assert_eq!(allocation["schemaVersion"], 2);
    for t in [
        "ConnectionCreated",
        "ConnectionUpdated",
        "AllocationCleared",
    ] {
        let e = of_type(t);
        assert_eq!(e["signedKept"], true, "{e}");
        assert_eq!(e["signed"]["signatureValid"], true, "{e}");
    }
    let client_key = hex::encode(w.client.key.verifying_key().to_bytes());
    assert_eq!(allocation["signed"]["publicKey"], client_key.as_str());

    // Independent re-verification: the payloads and signatures the audit API shows verify under
    // the enterprises' registered public keys in Python's `cryptography`.
    let check = |key: &str, e: &Value| {
        (
            key.to_owned(),
            e["signed"]["payload"].as_str().unwrap().to_owned(),
            e["signed"]["signature"].as_str().unwrap().to_owned(),
        )
    };
    let checks = vec![
        check(&partner_key, staged),
        check(&client_key, &allocation),
        check(&client_key, &of_type("ConnectionUpdated")),
    ];
    assert!(python_verifies(&checks), "cryptography verifies {checks:?}");
    // The same verifier refuses a changed payload: the check above is a real one.
    let mut forged = checks[1].clone();
    forged.1 = forged.1.replace("60000000", "90000000");
    assert_ne!(forged.1, checks[1].1);
    assert!(
        !python_verifies(&[forged]),
        "a changed payload does not verify"
    );

    // The bulk export answers JSON Lines.
    let ndjson = app
        .http
        .get(format!(
            "http://{}/api/audit/v1/events?limit=10000",
            app.addr
        ))
        .header("Accept", "application/x-ndjson")
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ndjson.status(), 200);
    assert_eq!(ndjson.headers()["content-type"], "application/x-ndjson");
    assert_eq!(ndjson.headers()["x-next-after"], "null");
    let text = ndjson.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, head, "every event once");
    assert!(lines
        .iter()
        .enumerate()
        .all(|(i, e)| e["position"] == i as u64 + 1));
    app.shutdown().await;
}

/// `postgres://user:password@…` as the read-only role `settle_audit` (deploy/stack creates it;
/// migration 0013 grants it SELECT in every database, the tests' included).
fn read_only_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (_, host) = rest.split_once('@').expect("credentials in DATABASE_URL");
    format!("{scheme}://settle_audit:settle_audit@{host}")
}

/// `settle-audit` in-process: its exit code and report.
async fn settle_audit(args: &[&str]) -> (u8, Value) {
    let mut out = Vec::new();
    let mut argv = vec!["settle-audit", "--quiet"];
    argv.extend_from_slice(args);
    let code = projector::audit_cli::run(argv, &mut out).await;
    let text = String::from_utf8(out).unwrap();
    let report = text
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (code, report)
}

/// What an insider with the database's owner role can do: switch off the append-only trigger,
/// change what they like, switch it back on.
async fn as_owner(app: &TestApp, table: &str, trigger: &str, statement: &str) {
    let mut tx = app.db.pool.begin().await.unwrap();
    for sql in [
        format!("ALTER TABLE {table} DISABLE TRIGGER {trigger}"),
        statement.to_owned(),
        format!("ALTER TABLE {table} ENABLE TRIGGER {trigger}"),
    ] {
        sqlx::query(&sql).execute(&mut *tx).await.unwrap();
    }
    tx.commit().await.unwrap();
}

/// Re-hashes the chain from `from` to the head over the stored events, as an insider covering
/// a change would.
async fn rehash_from(app: &TestApp, from: u64) {
    let store = events::store::EventStore::new(app.db.pool.clone());
    let previous: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT hash FROM event_log WHERE position = $1")
            .bind(from as i64 - 1)
            .fetch_optional(&app.db.pool)
            .await
            .unwrap();
    let mut previous: [u8; 32] =
        previous.map_or(events::codec::GENESIS_HASH, |h| h.try_into().unwrap());
    let log = store
        .read_log(from - 1, u64::MAX >> 1, 100_000)
        .await
        .unwrap();
    for event in log {
        let hash = events::codec::chain_hash(&previous, event.position, &event.stored);
        as_owner(
            app,
            "event_log",
            "event_log_append_only",
            &format!(
                "UPDATE event_log SET hash = '\\x{}' WHERE position = {}",
                hex::encode(hash),
                event.position
            ),
        )
        .await;
        previous = hash;
    }
}

async fn metric(app: &TestApp, name: &str) -> Option<f64> {
    let (_, text) = events::testing::http_get(&app.addr, "/metrics")
        .await
        .ok()?;
    let series = format!("{name}{{database=\"{}\"}} ", app.db.name);
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn checkpoints_catch_a_rewritten_history_and_tampering_is_reported_everywhere() {
    let mut app = TestApp::spawn().await;
    // Verify the whole chain often, so `/metrics` follows the tampering below quickly.
    app.audit.verify_interval_ms = 200;
    app.stop_api().await;
    app.start_api().await;
    let w = funded(&app).await;
    let first_head = sequenced(&app).await;

    // An auditor keeps a checkpoint; it is signed by the key the API publishes.
    let chain = audit(&app, "/chain", Some(ADMIN_TOKEN)).await;
    let chain = chain.expect(200, None).clone();
    let checkpoint = chain["checkpoint"].clone();
    assert_eq!(checkpoint["position"].as_u64(), Some(first_head));
    assert_eq!(chain["head"]["hash"], checkpoint["hash"]);
    let key = audit(&app, "/key", Some(ADMIN_TOKEN)).await;
    let public_key = key.expect(200, None)["publicKey"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(checkpoint["publicKey"], public_key.as_str());
    assert!(python_verifies(&[(
        public_key.clone(),
        checkpoint["note"].as_str().unwrap().to_owned(),
        checkpoint["signature"].as_str().unwrap().to_owned(),
    )]));
    let dir = std::env::temp_dir().join(format!("audit-{}", app.db.name));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("checkpoint.json");
    std::fs::write(&file, serde_json::to_string_pretty(&chain).unwrap()).unwrap();
    let file = file.to_str().unwrap().to_owned();

    // The log grows.
    perform(
        &app,
        &w,
        "audit-3",
        json!({ w.connection_id.clone(): {"BTC": "-1000000"} }),
    )
    .await;
    app.post(
        &w.allocation_path("deallocations"),
        &w.client.token,
        w.allocation("BTC", json!("1000000"), "back", "n-back"),
    )
    .await
    .expect(200, None);
    let head = sequenced(&app).await;
    assert!(head > first_head);

    // settle-audit, on the read-only role: the chain verifies and extends the checkpoint.
    let url = read_only_url(&app.db.url);
    let refused = sqlx::PgPool::connect(&url)
        .await
        .expect("the read-only role connects (deploy/stack up creates it)");
    assert!(
        sqlx::query("DELETE FROM nonces")
            .execute(&refused)
            .await
            .is_err(),
        "the auditors' role cannot write"
    );
    refused.close().await;
    let (code, report) = settle_audit(&["--database-url", &url, "verify-chain"]).await;
    assert_eq!(
        (code, report["checkedPositions"].as_u64()),
        (0, Some(head)),
        "{report}"
    );
    let (code, report) =
        settle_audit(&["--database-url", &url, "verify-chain", "--since", &file]).await;
    assert_eq!(code, 0, "{report}");
    let (code, report) = settle_audit(&[
        "--database-url",
        &url,
        "verify-chain",
        "--since",
        &file,
        "--audit-key",
        &"00".repeat(32),
    ])
    .await;
    assert_eq!(
        code, 1,
        "a checkpoint not signed by the pinned key: {report}"
    );
    let (code, report) = settle_audit(&["--database-url", &url, "verify-signatures"]).await;
    assert_eq!(code, 0, "{report}");
    assert!(
        report["signaturesChecked"].as_u64().unwrap() >= 4,
        "{report}"
    );
    let export = dir.join("export.jsonl");
    let (code, _) = settle_audit(&[
        "--database-url",
        &url,
        "export",
        "--format",
        "jsonl",
        "--output",
        export.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0);
    let exported = std::fs::read_to_string(&export).unwrap();
    assert_eq!(exported.lines().count() as u64, head);
    let csv = dir.join("export.csv");
    let (code, _) = settle_audit(&[
        "--database-url",
        &url,
        "export",
        "--from",
        "2",
        "--to",
        "4",
        "--format",
        "csv",
        "--output",
        csv.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 0);
    let csv = std::fs::read_to_string(&csv).unwrap();
    assert!(csv.starts_with("position,hash,"), "{csv}");
    assert_eq!(csv.lines().nth(1).unwrap().split(',').next(), Some("2"));
    let (code, balances) = settle_audit(&[
        "--database-url",
        &url,
        "balances",
        "--enterprise",
        &w.client.id,
        "--at-position",
        &first_head.to_string(),
    ])
    .await;
    assert_eq!(code, 0);
    assert_eq!(
        balances["connections"][&w.connection_id]["balances"]["BTC"]["available"],
        "60000000"
    );
    let chain_ok = events::testing::eventually(Duration::from_secs(20), || async {
        metric(&app, "settle_chain_verified_positions").await == Some(head as f64)
            && metric(&app, "settle_chain_fault_position").await == Some(0.0)
    })
    .await;
    assert!(chain_ok, "/metrics shows the whole chain verified");

    // Tampering: one byte of an event before the checkpoint changes behind the database's back.
    let (position, event_id): (i64, uuid::Uuid) = sqlx::query_as(
        "SELECT l.position, e.event_id FROM events e JOIN event_log l ON l.event_id = e.event_id
         WHERE e.type_id = 1 AND position('Client Co'::bytea IN e.payload) > 0",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let tampered = position as u64;
    assert!(tampered < first_head);
    as_owner(
        &app,
        "events",
        "events_append_only",
        &format!(
            "UPDATE events SET payload = overlay(payload PLACING 'K'::bytea
                 FROM position('Client Co'::bytea IN payload) FOR 1)
             WHERE event_id = '{event_id}'"
        ),
    )
    .await;
    let verify = audit(&app, "/chain/verify", Some(ADMIN_TOKEN)).await;
    let verify = verify.expect(200, None);
    assert_eq!(verify["verified"], false);
    assert_eq!(
        verify["firstFault"],
        json!({"kind": "hashMismatch", "position": tampered})
    );
    let ranged = audit(
        &app,
        &format!("/chain/verify?from={}&to={head}", tampered + 1),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(
        ranged.expect(200, None)["verified"],
        true,
        "the range after it is intact"
    );
    let (code, report) = settle_audit(&["--database-url", &url, "verify-chain"]).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["firstFault"]["position"].as_u64(), Some(tampered));
    let reported = events::testing::eventually(Duration::from_secs(20), || async {
        metric(&app, "settle_chain_fault_position").await == Some(tampered as f64)
            && metric(&app, "settle_chain_verification_ok").await == Some(0.0)
    })
    .await;
    assert!(reported, "/metrics names the tampered position");
    let latest = audit(&app, "/chain", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        latest.expect(200, None)["latestVerification"]["firstFault"]["position"].as_u64(),
        Some(tampered)
    );

    // An insider re-hashes the chain from there: plain verification is fooled...
    rehash_from(&app, tampered).await;
    let verify = audit(&app, "/chain/verify", Some(ADMIN_TOKEN)).await;
    assert_eq!(
        verify.expect(200, None)["verified"],
        true,
        "the re-hashed chain is consistent"
    );
    let (code, _) = settle_audit(&["--database-url", &url, "verify-chain"]).await;
    assert_eq!(code, 0);
    // ...but the checkpoint kept earlier is not extended by this history.
    let (code, report) =
        settle_audit(&["--database-url", &url, "verify-chain", "--since", &file]).await;
    assert_eq!(code, 1, "{report}");
    assert!(
        report["failure"]
            .as_str()
            .unwrap()
            .contains("history was rewritten"),
        "{report}"
    );
    std::fs::remove_dir_all(&dir).ok();
    app.shutdown().await;
}

#[tokio::test]
async fn without_an_audit_seed_the_api_refuses_to_start() {
    use clap::Parser;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = command_api::Config::parse_from(["command-api"]);
    config.common.database_url = "postgres://nobody@127.0.0.1:1/nothing".into();
    config.webhook_seed = Some(events::testing::TEST_WEBHOOK_SEED.into());
    config.audit.seed = None;
    config.development = false;
    let refused = command_api::run(listener, config, Default::default()).await;
    let text = format!("{:#}", refused.expect_err("refused to start"));
    assert!(
        text.contains("SETTLE_AUDIT_SEED") && text.contains("SETTLE_DEVELOPMENT"),
        "{text}"
    );
}
