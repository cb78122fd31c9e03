//! The only code that speaks NATS: the JetStream stream `EVENTS`, the relay that fills it from the
//! sequenced log (stream sequence == global position), and the consumer loop.

pub mod consumer;
pub mod leader;
pub mod relay;

use std::time::Duration;

use anyhow::Context;
use async_nats::jetstream::{self, stream};

use crate::domain::StreamName;

/// Where events are published. Tests use their own names so they can share one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusConfig {
    /// JetStream stream name.
    pub stream: String,
    /// First subject token; subjects are `{prefix}.{category}.{stream id}`.
    pub subject_prefix: String,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            stream: "EVENTS".into(),
            subject_prefix: "events".into(),
        }
    }
}

impl BusConfig {
    /// The subject of an event of `stream`; consumers filter by category or by one stream.
    pub fn subject(&self, stream: &StreamName) -> String {
        format!(
            "{}.{}.{}",
            self.subject_prefix,
            stream.category(),
            stream.id()
        )
    }

    /// The subject filter for every event of one category.
    pub fn category_filter(&self, category: &str) -> String {
        format!("{}.{}.*", self.subject_prefix, category)
    }
}

/// Connects to NATS; the client reconnects by itself for as long as the process lives.
pub async fn connect(nats_url: &str) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(nats_url)
        .await
        .with_context(|| format!("cannot connect to NATS at {nats_url}"))?;
    Ok(jetstream::new(client))
}

/// Creates the stream if it is missing. File storage, no limits (the log is never trimmed by
/// NATS), a two-minute duplicate window for `Nats-Msg-Id`.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &BusConfig,
) -> anyhow::Result<stream::Stream> {
    js.get_or_create_stream(stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    })
    .await
    .with_context(|| format!("cannot create JetStream stream {}", config.stream))
}

/// The stream's last sequence (0 for an empty or missing stream).
pub async fn stream_last_sequence(
    js: &jetstream::Context,
    config: &BusConfig,
) -> anyhow::Result<u64> {
    let mut stream = ensure_stream(js, config).await?;
    Ok(stream
        .info()
        .await
        .context("cannot read stream info")?
        .state
        .last_sequence)
}
