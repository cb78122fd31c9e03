//! The only code that speaks NATS: the JetStream stream `EVENTS`, the relay that fills it from the
//! sequenced log (stream sequence == global position), the consumer loop, and partitioned consumer
//! groups shared among instances through leases.

pub mod consumer;
pub mod leader;
pub mod parked;
pub mod partitions;
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
    /// Copies JetStream keeps of the stream (`SETTLE_EVENTS_REPLICAS`): 1 on a single server,
    /// 3 on a three-node cluster, where one node may die without the feed stopping.
    pub replicas: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            stream: "EVENTS".into(),
            subject_prefix: "events".into(),
            replicas: 1,
        }
    }
}

/// The most replicas JetStream keeps of a stream.
pub const STREAM_REPLICAS_MAX: usize = 5;

/// `SETTLE_EVENTS_REPLICAS` as configured: unset is 1; anything but 1..=5 is 0, which
/// `ensure_stream` refuses by name, so a typo stops the process instead of shrinking the stream.
pub fn replicas_setting(raw: Option<&str>) -> usize {
    match raw.map(str::trim) {
        None | Some("") => 1,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=STREAM_REPLICAS_MAX).contains(n))
            .unwrap_or(0),
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

/// The servers of `NATS_URL`: one URL, or several separated by commas (the nodes of a
/// cluster, so that the process can start while any one of them is down). Pure.
pub fn server_urls(nats_url: &str) -> Vec<String> {
    nats_url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Connects to NATS; the client reconnects by itself for as long as the process lives, to any
/// server of the list (and to the cluster's other nodes, which the servers advertise).
pub async fn connect(nats_url: &str) -> anyhow::Result<jetstream::Context> {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5))
        .connect(server_urls(nats_url))
        .await
        .with_context(|| format!("cannot connect to NATS at {nats_url}"))?;
    Ok(jetstream::new(client))
}

/// Creates the stream if it is missing. File storage, no limits (the log is never trimmed by
/// NATS), `config.replicas` copies. (The relay sends no `Nats-Msg-Id`; the two-minute
/// duplicate window is JetStream's default and holds nothing.) A stream
/// that exists with another replica count is changed to the configured one (JetStream moves a
/// clustered stream's replicas without losing messages), so raising `SETTLE_EVENTS_REPLICAS` on
/// a running deployment takes effect at the next start.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &BusConfig,
) -> anyhow::Result<stream::Stream> {
    if !(1..=STREAM_REPLICAS_MAX).contains(&config.replicas) {
        anyhow::bail!("SETTLE_EVENTS_REPLICAS must be a number from 1 to {STREAM_REPLICAS_MAX}");
    }
    let wanted = stream::Config {
        name: config.stream.clone(),
        subjects: vec![format!("{}.>", config.subject_prefix)],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        num_replicas: config.replicas,
        ..Default::default()
    };
    let mut stream = js
        .get_or_create_stream(wanted)
        .await
        .with_context(|| format!("cannot create JetStream stream {}", config.stream))?;
    let current = stream.cached_info().config.clone();
    if current.num_replicas.max(1) != config.replicas {
        tracing::info!(stream = %config.stream, from = current.num_replicas, to = config.replicas, "changing the stream's replica count");
        js.update_stream(stream::Config {
            num_replicas: config.replicas,
            ..current
        })
        .await
        .with_context(|| format!("cannot change the replicas of stream {}", config.stream))?;
        stream = js.get_stream(&config.stream).await?;
    }
    Ok(stream)
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_replica_setting_is_one_to_five_and_anything_else_is_refused() {
        use super::replicas_setting;
        assert_eq!(replicas_setting(None), 1);
        assert_eq!(replicas_setting(Some("")), 1);
        assert_eq!(replicas_setting(Some("3")), 3);
        assert_eq!(replicas_setting(Some(" 5 ")), 5);
        for bad in ["0", "6", "three", "-1"] {
            assert_eq!(replicas_setting(Some(bad)), 0, "{bad}");
        }
    }

    #[test]
    fn a_nats_url_may_list_every_node_of_a_cluster() {
        use super::server_urls;
        assert_eq!(server_urls("nats://a:4222"), vec!["nats://a:4222"]);
        assert_eq!(
            server_urls("nats://a:4222, nats://b:4222,nats://c:4222,"),
            vec!["nats://a:4222", "nats://b:4222", "nats://c:4222"]
        );
    }
}
