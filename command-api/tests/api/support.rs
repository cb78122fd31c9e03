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
    api: Option<Running>,
    projector: Option<Running>,
    finalizers: Vec<Running>,
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

    /// Asserts the status, and for errors the SPEC body with `code`.
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
        let db = TestDb::new().await;
        let bus = unique_bus();
        let mut app = Self {
            addr: String::new(),
            db,
            bus,
            http: reqwest::Client::new(),
            api: None,
            projector: None,
            finalizers: Vec::new(),
        };
        app.start_api().await;
        app.start_projector().await;
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

    pub async fn start_projector(&mut self) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let config = projector::Config {
            common: common(&self.db, &self.bus),
            listen: listener.local_addr().expect("addr").to_string(),
            command: None,
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(projector::run(listener, config, stop.clone()));
        self.projector = Some(Running { stop, task });
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
            webhooks: finalizer::webhooks::WebhookConfig::default(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(finalizer::run(listener, config, stop.clone()));
        self.finalizers.push(Running { stop, task });
    }

    pub async fn stop_api(&mut self) {
        if let Some(api) = self.api.take() {
            api.stop().await;
        }
    }

    pub async fn stop_projector(&mut self) {
        if let Some(projector) = self.projector.take() {
            projector.stop().await;
        }
    }

    pub async fn shutdown(mut self) {
        for finalizer in std::mem::take(&mut self.finalizers) {
            finalizer.stop().await;
        }
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
    pub async fn get_after(&self, path: &str, token: &str, position: &str) -> Resp {
        self.call(
            Method::GET,
            &format!("/api/network{path}"),
            Some(token),
            None,
            &[("X-Min-Position", position)],
        )
        .await
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
