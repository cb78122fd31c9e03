//! Support for tests against the real local stack (`deploy/stack`): a fresh database per test,
//! unique JetStream names on the shared server, a private nats-server that can be stopped and
//! wiped, and polling helpers. Compiled only with the `testing` feature.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::bus::BusConfig;
use crate::store::db;

/// The webhook signing seed every test process runs with. The processes refuse to start without
/// one (outside development mode), so tests set it as a deployment must; it is a test value,
/// public on purpose, never a deployment's.
pub const TEST_WEBHOOK_SEED: &str =
    "7e57000000000000000000000000000000000000000000000000000000005eed";

/// The audit-key seed every test process uses (as public as the webhook one; tests only).
pub const TEST_AUDIT_SEED: &str =
    "a0d1700000000000000000000000000000000000000000000000000000005eed";

pub fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .expect("DATABASE_URL is not set: run the tests through `deploy/stack test`")
}

pub fn nats_url() -> String {
    std::env::var("NATS_URL")
        .expect("NATS_URL is not set: run the tests through `deploy/stack test`")
}

fn url_for(database: &str) -> String {
    let base = base_url();
    let (server, _) = base
        .rsplit_once('/')
        .expect("DATABASE_URL names a database");
    format!("{server}/{database}")
}

/// A database of its own, migrated, for one test.
pub struct TestDb {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> Self {
        let name = format!("t_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base_url())
            .await
            .expect("connect to the stack's Postgres");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .expect("create test database");
        admin.close().await.ok();
        let url = url_for(&name);
        let pool = db::connect(&url, 20)
            .await
            .expect("connect to test database");
        db::migrate(&pool).await.expect("migrate test database");
        Self { name, url, pool }
    }

    /// A copy of this database (closes this one's pool: a template may have no sessions).
    pub async fn copy(&self) -> TestDb {
        self.pool.close().await;
        let name = format!("t_{}", Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&base_url()).await.expect("connect");
        // A template may have no sessions. The pool is closed, but on a loaded machine a closed
        // session can linger; the test owns this database, so end whatever is left, then copy
        // (retrying, as Postgres only waits 5 s for sessions to go).
        let mut created = Err(sqlx::Error::PoolClosed);
        for _ in 0..4 {
            sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()")
                .bind(&self.name)
                .execute(&mut admin)
                .await
                .ok();
            created = sqlx::query(&format!("CREATE DATABASE {name} TEMPLATE {}", self.name))
                .execute(&mut admin)
                .await;
            if created.is_ok() {
                break;
            }
        }
        if let Err(e) = created {
            let who: Vec<(Option<String>, Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT backend_type, state, query FROM pg_stat_activity WHERE datname = $1",
            )
            .bind(&self.name)
            .fetch_all(&mut admin)
            .await
            .unwrap_or_default();
            panic!("copy {}: {e}; sessions: {who:?}", self.name);
        }
        let url = url_for(&name);
        let pool = db::connect(&url, 4).await.expect("connect to copy");
        TestDb { name, url, pool }
    }

    pub async fn drop_db(self) {
        self.pool.close().await;
        if let Ok(mut admin) = PgConnection::connect(&base_url()).await {
            sqlx::query(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .execute(&mut admin)
            .await
            .ok();
        }
    }
}

/// Stream and subject names no other test uses.
pub fn unique_bus() -> BusConfig {
    let tag = Uuid::new_v4().simple().to_string();
    BusConfig {
        stream: format!("T_{tag}"),
        subject_prefix: format!("t{tag}"),
        replicas: 1,
    }
}

pub async fn jetstream_at(url: &str) -> jetstream::Context {
    crate::bus::connect(url).await.expect("connect to NATS")
}

/// Polls `check` until it holds or `timeout` passes; returns whether it held.
pub async fn eventually<F, Fut>(timeout: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while start.elapsed() < timeout {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check().await
}

/// A plain HTTP GET on loopback: the status code and body.
pub async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A nats-server of the test's own, so it can be stopped and its data wiped.
pub struct PrivateNats {
    pub port: u16,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
}

impl PrivateNats {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let dir = std::env::temp_dir().join(format!("settle-nats-{}", Uuid::new_v4().simple()));
        let mut nats = Self {
            port,
            dir,
            child: None,
        };
        nats.restart().await;
        nats
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub async fn restart(&mut self) {
        let bin = std::env::var("SETTLE_NATS_SERVER_BIN")
            .expect("SETTLE_NATS_SERVER_BIN: run through `deploy/stack test`");
        let child = tokio::process::Command::new(bin)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.join("store"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start nats-server");
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        assert!(
            eventually(Duration::from_secs(10), || {
                let addr = addr.clone();
                async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
            })
            .await,
            "private nats-server did not start"
        );
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.ok();
        }
    }

    /// Deletes every stored JetStream byte (the server must be stopped).
    pub fn wipe(&self) {
        std::fs::remove_dir_all(self.dir.join("store")).ok();
    }
}

impl Drop for PrivateNats {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.dir).ok();
    }
}

/// One of the product's binaries running as a real process for a test.
pub struct Process {
    pub addr: String,
    child: tokio::process::Child,
}

impl Process {
    /// Starts `bin` listening on a free port with `env` (plus `SETTLE_LISTEN`), and waits until
    /// `/livez` answers.
    pub async fn spawn(bin: &str, env: &[(&str, String)]) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = tokio::process::Command::new(bin)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("SETTLE_LISTEN", &addr)
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()
            .expect("start the binary");
        let process = Self { addr, child };
        let live = eventually(Duration::from_secs(30), || {
            let addr = process.addr.clone();
            async move { matches!(http_get(&addr, "/livez").await, Ok((200, _))) }
        })
        .await;
        assert!(live, "{bin} did not serve /livez");
        process
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or_default()
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it to be gone.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL delivered");
        let _ = self.child.wait().await;
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().expect("running").to_string();
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .expect("kill");
        assert!(sent.success(), "SIGTERM delivered");
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("the process stops within 20 s of SIGTERM")
            .expect("exit status")
    }
}

/// The environment a product binary needs to run against `db` and `bus`.
pub fn process_env(db: &TestDb, bus: &BusConfig) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", db.url.clone()),
        ("NATS_URL", nats_url()),
        ("SETTLE_EVENTS_STREAM", bus.stream.clone()),
        ("SETTLE_EVENTS_SUBJECT_PREFIX", bus.subject_prefix.clone()),
        // Required by the command-api and the finalizer (a test key, see TEST_WEBHOOK_SEED).
        ("SETTLE_WEBHOOK_SEED", TEST_WEBHOOK_SEED.to_owned()),
        // Required by the command-api (checkpoints; see TEST_AUDIT_SEED).
        ("SETTLE_AUDIT_SEED", TEST_AUDIT_SEED.to_owned()),
    ]
}

/// Starts `bin` against `db` and `bus` and waits until `/readyz` reports ready.
pub async fn spawn_ready(bin: &str, db: &TestDb, bus: &BusConfig) -> Process {
    let process = Process::spawn(bin, &process_env(db, bus)).await;
    let ready = eventually(Duration::from_secs(20), || {
        let addr = process.addr.clone();
        async move { matches!(http_get(&addr, "/readyz").await, Ok((200, body)) if body.contains("\"ready\":true")) }
    })
    .await;
    assert!(ready, "{bin} reports ready");
    process
}
