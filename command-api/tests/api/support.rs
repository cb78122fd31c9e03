//! Test support: the command-api and projector running in-process against a fresh database and
//! unique JetStream names on the local stack, an HTTP client, real Ed25519 signing, and a
//! provisioned world (a client enterprise, a partner enterprise, users, keys, a deposit).

use std::time::Duration;

use command_api::Config;
use ed25519_dalek::{Signer, SigningKey};
use events::bus::BusConfig;
use events::service::CommonConfig;
use events::testing::{nats_url, unique_bus, TestDb};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token";
/// Reads with `X-Min-Position` a test makes before it accepts `read_not_caught_up` as the answer.
const READ_RETRIES_MAX: u32 = 8;

/// The webhook allow-list of the processes under test: the tests' receivers listen on
/// 127.0.0.1, which is refused as a webhook destination unless the operator allows it. Only
/// that one address, so the other internal destinations stay refused.
pub const WEBHOOK_ALLOW: &str = "127.0.0.1";

/// The finalizer's webhook settings under test: the test signing seed (the processes refuse to
/// start without one) and the loopback receivers allowed.
pub fn webhook_config() -> finalizer::webhooks::WebhookConfig {
    finalizer::webhooks::WebhookConfig {
        seed: Some(events::testing::TEST_WEBHOOK_SEED.into()),
        allow: Some(WEBHOOK_ALLOW.into()),
        ..finalizer::webhooks::WebhookConfig::default()
    }
}

struct Running {
    stop: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        self.task
            .await
            .expect("task joins")
            .expect("clean shutdown");
    }
}

pub struct TestApp {
    pub addr: String,
    pub db: TestDb,
    pub bus: BusConfig,
    pub http: reqwest::Client,
    /// The HTTP edge limits the command-api starts with.
    pub edge: command_api::http::edge::EdgeConfig,
    /// The audit settings it starts with (the test audit seed; a test may shorten the interval
    /// of the full chain verification and restart the API).
    pub audit: command_api::http::audit::AuditConfig,
    api: Option<Running>,
    /// Projector instances sharing the partitions (`SETTLE_TEST_PROJECTORS`, default 2).
    projectors: Vec<Running>,
    finalizers: Vec<Running>,
}

/// How many projector instances each test app runs: `SETTLE_TEST_PROJECTORS`, default two, so
/// that the whole suite runs against partitions shared by two instances (ADR 0009).
pub fn projector_instances() -> usize {
    std::env::var("SETTLE_TEST_PROJECTORS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(2)
}

/// The projectors' scaling under test: three partitions, a two-second lease (rebalances in
/// half a second), every batch audited.
pub fn test_scale() -> projector::ScaleConfig {
    projector::ScaleConfig {
        partitions: 3,
        lease_seconds: 2.0,
        audit_batches: true,
        ..projector::ScaleConfig::default()
    }
}

/// A response, decoded.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    /// Asserts the status, and for errors the API error body with `code`.
    #[track_caller]
    pub fn expect(&self, status: u16, code: Option<&str>) -> &Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body {}",
            self.body
        );
        if let Some(code) = code {
            assert_eq!(self.body["code"], code, "error code; body {}", self.body);
            assert!(
                self.body["error"].is_string() && self.body["requestId"].is_string(),
                "SPEC error body: {}",
                self.body
            );
        }
        &self.body
    }
}

fn common(db: &TestDb, bus: &BusConfig) -> CommonConfig {
    CommonConfig {
        database_url: db.url.clone(),
        nats_url: nats_url(),
        events_stream: bus.stream.clone(),
        events_subject_prefix: bus.subject_prefix.clone(),
        db_connections: 8,
    }
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with_edge(command_api::http::edge::EdgeConfig::default()).await
    }

    /// As `spawn`, with these HTTP edge limits.
    pub async fn spawn_with_edge(edge: command_api::http::edge::EdgeConfig) -> Self {
        let mut app = Self::spawn_api_only(edge).await;
        app.start_projector().await;
        app
    }

    /// The command-api alone: a test that runs its projectors itself (as real processes, say)
    /// starts them against `db` and `bus`.
    pub async fn spawn_api_only(edge: command_api::http::edge::EdgeConfig) -> Self {
        let db = TestDb::new().await;
        let bus = unique_bus();
        let mut app = Self {
            addr: String::new(),
            db,
            bus,
            http: reqwest::Client::new(),
            edge,
            audit: command_api::http::audit::AuditConfig {
                seed: Some(events::testing::TEST_AUDIT_SEED.into()),
                ..Default::default()
            },
            api: None,
            projectors: Vec::new(),
            finalizers: Vec::new(),
        };
        app.start_api().await;
        app
    }

    pub async fn start_api(&mut self) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        self.addr = listener.local_addr().expect("addr").to_string();
        let config = Config {
            common: common(&self.db, &self.bus),
            listen: self.addr.clone(),
            admin_token: Some(ADMIN_TOKEN.into()),
            sequencer: true,
            currencies: None,
            // A signing seed as a deployment must have (the test one), and the loopback
            // receivers allowed as webhook destinations.
            webhook_seed: Some(events::testing::TEST_WEBHOOK_SEED.into()),
            webhook_allow: Some(WEBHOOK_ALLOW.into()),
            development: false,
            edge: self.edge.clone(),
            audit: self.audit.clone(),
            command: None,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(command_api::run(listener, config, stop.clone()));
        self.api = Some(Running { stop, task });
        let addr = self.addr.clone();
        let up = events::testing::eventually(Duration::from_secs(20), || {
            let addr = addr.clone();
            async move {
                matches!(
                    events::testing::http_get(&addr, "/readyz").await,
                    Ok((200, _))
                )
            }
        })
        .await;
        assert!(up, "command-api ready");
    }

    /// Starts the projector instances and waits until they share the partitions (every
    /// partition owned, each instance holding its share), so no rebalance runs under a test.
    pub async fn start_projector(&mut self) {
        let instances = projector_instances();
        for _ in 0..instances {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let config = projector::Config {
                common: common(&self.db, &self.bus),
                listen: listener.local_addr().expect("addr").to_string(),
                scale: test_scale(),
                command: None,
            };
            let stop = CancellationToken::new();
            let task = tokio::spawn(projector::run(listener, config, stop.clone()));
            self.projectors.push(Running { stop, task });
        }
        let pool = self.db.pool.clone();
        let balanced = events::testing::eventually(Duration::from_secs(20), || {
            let pool = pool.clone();
            async move { partitions_balanced(&pool, instances).await }
        })
        .await;
        assert!(
            balanced,
            "{instances} projector instance(s) share the partitions"
        );
    }

    /// Starts a finalizer (several may run at once); failed executions are retried after
    /// `retry_seconds`.
    pub async fn start_finalizer(&mut self, retry_seconds: f64) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let config = finalizer::Config {
            common: common(&self.db, &self.bus),
            listen: listener.local_addr().expect("addr").to_string(),
            retry_seconds,
            poll_ms: 20,
            lease_seconds: 30.0,
            // Warm every settlement as soon as it is staged, so that every dispute, closure
            // and retry a test makes afterwards meets a finalizer holding stale states: the
            // steps must still decide on the current ones (ADR 0014).
            warm_seconds: 3600.0,
            webhooks: webhook_config(),
            development: false,
            command: None,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(finalizer::run(listener, config, stop.clone()));
        self.finalizers.push(Running { stop, task });
    }

    pub async fn stop_finalizers(&mut self) {
        for finalizer in std::mem::take(&mut self.finalizers) {
            finalizer.stop().await;
        }
    }

    pub async fn stop_api(&mut self) {
        if let Some(api) = self.api.take() {
            api.stop().await;
        }
    }

    pub async fn stop_projector(&mut self) {
        let running = std::mem::take(&mut self.projectors);
        futures::future::join_all(running.into_iter().map(Running::stop)).await;
    }

    /// Waits (bounded) until every partition of the read models has applied everything
    /// sequenced so far. Partitions apply independently, so a read that saw one object change
    /// (a settlement completed) is not proof that another (a connection's balance) has: a test
    /// that reads without a position token waits here first.
    pub async fn read_models_caught_up(&self) {
        let caught_up = events::testing::eventually(Duration::from_secs(20), || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT (SELECT coalesce(max(position), 0) FROM event_log)
                        <= (SELECT coalesce(min(coalesce(c.position, 0)), 0)
                            FROM consumer_partitions p
                            LEFT JOIN consumer_checkpoints c ON c.consumer = p.consumer
                            WHERE p.consumer_group = 'projector-read-models')",
            )
            .fetch_one(&self.db.pool)
            .await
            .unwrap_or(false)
        })
        .await;
        assert!(caught_up, "the read models caught up with the log");
    }

    pub async fn shutdown(mut self) {
        self.stop_finalizers().await;
        self.stop_projector().await;
        self.stop_api().await;
        events::testing::jetstream_at(&nats_url())
            .await
            .delete_stream(&self.bus.stream)
            .await
            .ok();
        self.db.drop_db().await;
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut request = self
            .http
            .request(method, format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let (status, headers) = (response.status(), response.headers().clone());
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        assert!(
            headers.contains_key("x-request-id"),
            "every response carries X-Request-Id"
        );
        Resp {
            status,
            body,
            headers,
        }
    }

    pub async fn admin(&self, method: Method, path: &str, body: Value) -> Resp {
        self.call(
            method,
            &format!("/api/admin/v1{path}"),
            Some(ADMIN_TOKEN),
            Some(body),
            &[],
        )
        .await
    }

    pub async fn get(&self, path: &str, token: &str) -> Resp {
        self.call(
            Method::GET,
            &format!("/api/network{path}"),
            Some(token),
            None,
            &[],
        )
        .await
    }

    /// A read that waits for the write behind `position`.
    /// A read that waits for the write behind `position`, as a well-behaved client does: a
    /// 503 `read_not_caught_up` (the projection has not applied the write within the server's
    /// wait) is retried after its `Retry-After`, a bounded number of times. A stale answer is
    /// never accepted.
    pub async fn get_after(&self, path: &str, token: &str, position: &str) -> Resp {
        let mut attempts = 0;
        loop {
            let read = self
                .call(
                    Method::GET,
                    &format!("/api/network{path}"),
                    Some(token),
                    None,
                    &[("X-Min-Position", position)],
                )
                .await;
            attempts += 1;
            if read.status.as_u16() != 503
                || read.body["code"] != "read_not_caught_up"
                || attempts >= READ_RETRIES_MAX
            {
                return read;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> Resp {
        self.call(
            Method::POST,
            &format!("/api/network{path}"),
            Some(token),
            Some(body),
            &[],
        )
        .await
    }
}

/// Whether every partition of every projector group has a live owner and, where a group has at
/// least as many partitions as there are instances, every instance owns some.
pub async fn partitions_balanced(pool: &sqlx::PgPool, instances: usize) -> bool {
    let groups: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT consumer_group, count(*), count(*) FILTER (WHERE owner IS NOT NULL AND lease_until > now()),
                count(DISTINCT owner) FILTER (WHERE lease_until > now())
         FROM consumer_partitions GROUP BY consumer_group",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default();
    groups.len() == 3
        && groups.iter().all(|(_, partitions, owned, owners)| {
            owned == partitions && (*owners as usize == instances.min(*partitions as usize))
        })
}

/// Signs `fields` as a partner's or client's signer would: the canonical payload of the fields,
/// the nonce and the route's path ids, signed with `key`.
pub fn signed(key: &SigningKey, fields: Value, path_ids: &[(&str, String)], nonce: &str) -> Value {
    let mut body = fields;
    body["nonce"] = nonce.into();
    let mut payload_fields = body.as_object().cloned().unwrap_or_default();
    for (name, value) in path_ids {
        payload_fields.insert((*name).to_owned(), value.clone().into());
    }
    let payload = schemas::signing::canonical_payload(&payload_fields);
    let signature = key.sign(payload.as_bytes());
    body["payload"] = payload.into();
    body["signature"] = hex::encode(signature.to_bytes()).into();
    body
}

/// One provisioned tenant: an enterprise with a user and a signing key.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub token: String,
    pub key: SigningKey,
    pub key_id: String,
}

pub async fn tenant(app: &TestApp, name: &str, seed: u8) -> Tenant {
    let id = app
        .admin(
            Method::POST,
            "/enterprises",
            json!({"name": name, "oesLicense": true}),
        )
        .await
        .expect(200, None)["enterprise"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let user = app
        .admin(
            Method::POST,
            "/users",
            json!({"name": format!("{name} user"), "enterpriseIds": [id]}),
        )
        .await;
    let token = user.expect(200, None)["accessToken"]
        .as_str()
        .expect("token")
        .to_owned();
    let key = SigningKey::from_bytes(&[seed; 32]);
    let registered = app
        .admin(
            Method::POST,
            &format!("/enterprises/{id}/keys"),
            json!({"publicKey": hex::encode(key.verifying_key().to_bytes())}),
        )
        .await;
    let key_id = registered.expect(200, None)["key"]["id"]
        .as_str()
        .expect("key id")
        .to_owned();
    Tenant {
        id,
        token,
        key,
        key_id,
    }
}

/// A client enterprise and a partner enterprise, the client funded and connected.
pub struct World {
    pub client: Tenant,
    pub partner: Tenant,
    pub partner_id: String,
    pub connection_id: String,
    /// Position token of the connection's creation, for reads that must see it.
    pub connected_at: String,
}

pub async fn world(app: &TestApp, amount_format: &str) -> World {
    world_with(app, amount_format, Value::Null, Value::Null).await
}

/// As `world`, with the partner's dispute and top-up windows (minutes, or null).
pub async fn world_with(
    app: &TestApp,
    amount_format: &str,
    dispute_window: Value,
    top_up_window: Value,
) -> World {
    let client = tenant(app, "Client Co", 2).await;
    let partner = tenant(app, "Venue", 1).await;
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/client", client.id),
        json!({}),
    )
    .await
    .expect(200, None);
    let registered = app
        .admin(
            Method::POST,
            &format!("/enterprises/{}/partner", partner.id),
            json!({"name": "Venue", "broker": false, "clientDisputeWindowMinutes": dispute_window, "topUpWindowMinutes": top_up_window, "amountFormat": amount_format}),
        )
        .await;
    let partner_id = registered.expect(200, None)["partner"]["id"]
        .as_str()
        .expect("partner id")
        .to_owned();
    app.admin(
        Method::POST,
        &format!("/enterprises/{}/deposits", client.id),
        json!({"currency": "BTC", "quantity": "100000000", "externalId": "seed"}),
    )
    .await
    .expect(200, None);
    let body = signed(
        &client.key,
        json!({"partnerId": partner_id, "name": "main", "connectionKey": "acct-1"}),
        &[],
        "connect-1",
    );
    let connected = app
        .post(
            &format!("/v1/enterprises/{}/clients/connections", client.id),
            &client.token,
            body,
        )
        .await;
    let connection_id = connected.expect(200, None)["connection"]["id"]
        .as_str()
        .expect("connection id")
        .to_owned();
    let connected_at = connected
        .header("x-event-position")
        .expect("position token");
    World {
        client,
        partner,
        partner_id,
        connection_id,
        connected_at,
    }
}

impl World {
    pub fn allocation_path(&self, kind: &str) -> String {
        format!(
            "/v1/enterprises/{}/clients/connections/{}/{kind}",
            self.client.id, self.connection_id
        )
    }

    pub fn allocation_ids(&self) -> [(&'static str, String); 2] {
        [
            ("connectionId", self.connection_id.clone()),
            ("enterpriseId", self.client.id.clone()),
        ]
    }

    /// A signed (de)allocation body.
    pub fn allocation(
        &self,
        currency: &str,
        quantity: Value,
        external: &str,
        nonce: &str,
    ) -> Value {
        signed(
            &self.client.key,
            json!({"amount": {"currency": currency, "quantity": quantity}, "clientExternalId": external}),
            &self.allocation_ids(),
            nonce,
        )
    }
}
