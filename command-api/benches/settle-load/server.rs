//! The command-api as an operating-system process of its own for the load generator: the release
//! binary cargo built for this bench target, started against the run's fresh database with its
//! ordinary environment variables, awaited on `/readyz`, stopped with SIGTERM (SIGKILL after a
//! grace period) and restarted for the cold-start measurement.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use events::service::CommonConfig;
use tokio::process::{Child, Command};

use super::ADMIN;

/// How long a start may take to answer `/readyz` (the first start migrates a fresh database).
const READY_WAIT: Duration = Duration::from_secs(120);
/// How long a stop waits after SIGTERM before it kills the process.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// What every start of the process is configured with.
pub struct ServerEnv {
    pub common: CommonConfig,
    /// `SETTLE_DB_CONNECTIONS`; the process's own default when `None`.
    pub db_connections: Option<u32>,
}

/// A running command-api process.
pub struct Server {
    child: Child,
    pub base: String,
}

impl Server {
    /// Starts the process on a free local port and waits until it is ready; returns it with the
    /// time from spawn to the first successful `/readyz`.
    pub async fn start(env: &ServerEnv) -> Result<(Server, Duration)> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let listen = format!("127.0.0.1:{port}");
        let mut command = Command::new(env!("CARGO_BIN_EXE_command-api"));
        command
            .env("DATABASE_URL", &env.common.database_url)
            .env("NATS_URL", &env.common.nats_url)
            .env("SETTLE_EVENTS_STREAM", &env.common.events_stream)
            .env(
                "SETTLE_EVENTS_SUBJECT_PREFIX",
                &env.common.events_subject_prefix,
            )
            .env("SETTLE_LISTEN", &listen)
            .env("SETTLE_ADMIN_TOKEN", ADMIN)
            // A local benchmark: the public development webhook and audit keys are fine here.
            .env("SETTLE_DEVELOPMENT", "1")
            // One load generator sends as fast as it can from one address with a few tokens: no
            // rate limits, and room for every request in flight.
            .env("SETTLE_RATE_PER_TOKEN", "0")
            .env("SETTLE_RATE_PER_ADDRESS", "0")
            .env("SETTLE_IN_FLIGHT_MAX", "100000")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        if let Some(n) = env.db_connections {
            command.env("SETTLE_DB_CONNECTIONS", n.to_string());
        }
        let spawned = Instant::now();
        let mut child = command
            .spawn()
            .context("cannot start the command-api binary")?;
        let base = format!("http://{listen}");
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("the command-api exited before it was ready: {status}");
            }
            let ready = http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if spawned.elapsed() > READY_WAIT {
                child.kill().await.ok();
                bail!("the command-api was not ready after {READY_WAIT:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok((Server { child, base }, spawned.elapsed()))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the process: SIGTERM, then SIGKILL if it has not exited within the grace period.
    pub async fn stop(&mut self) -> Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await
                .ok();
        }
        if tokio::time::timeout(STOP_GRACE, self.child.wait())
            .await
            .is_err()
        {
            self.child.kill().await?;
        }
        Ok(())
    }

    /// Stops this process and starts a new one in its place; returns the new one's time to ready.
    pub async fn restart(&mut self, env: &ServerEnv) -> Result<Duration> {
        self.stop().await?;
        let (next, ready) = Server::start(env).await?;
        *self = next;
        Ok(ready)
    }
}
