//! The production manifests run the read side at scale (ADR 0009): three projector replicas
//! sharing the partitions with one partition count, and the `EVENTS` stream with three replicas
//! on the three-node JetStream cluster every process can reach through any node.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn compose_runs_three_projectors_on_a_replicated_stream() {
    let text = std::fs::read_to_string(deploy().join("compose.yaml")).unwrap();
    let mut compose: Value = serde_norway::from_str(&text).unwrap();
    compose.apply_merge().unwrap();
    let services = &compose["services"];
    let projector = &services["projector"];
    assert_eq!(projector["deploy"]["replicas"], 3);
    let partitions = projector["environment"]["SETTLE_PROJECTOR_PARTITIONS"].as_str();
    assert!(
        partitions
            .and_then(|p| p.parse::<u32>().ok())
            .is_some_and(|p| p >= 3),
        "{partitions:?}"
    );
    for name in ["command-api", "projector", "finalizer"] {
        let env = &services[name]["environment"];
        assert_eq!(env["SETTLE_EVENTS_REPLICAS"], "3", "{name}");
        let nats = env["NATS_URL"].as_str().unwrap_or_default();
        assert_eq!(
            events::bus::server_urls(nats).len(),
            3,
            "{name} knows every node: {nats}"
        );
    }
}

#[test]
fn kubernetes_runs_three_projectors_on_a_replicated_stream() {
    let text = std::fs::read_to_string(deploy().join("k8s/settle.yaml")).unwrap();
    let mut projector_replicas = None;
    let mut config = None;
    for document in serde_norway::Deserializer::from_str(&text) {
        let doc = Value::deserialize(document).unwrap();
        if doc["kind"] == "Deployment" && doc["metadata"]["name"] == "projector" {
            projector_replicas = doc["spec"]["replicas"].as_u64();
            assert!(
                doc["spec"]["strategy"]["type"] != "Recreate",
                "replicas may overlap: a rolling update keeps the read side up"
            );
        }
        if doc["kind"] == "ConfigMap" && doc["metadata"]["name"] == "settle" {
            config = Some(doc["data"].clone());
        }
    }
    assert_eq!(projector_replicas, Some(3));
    let config = config.expect("the settle ConfigMap");
    assert_eq!(config["SETTLE_EVENTS_REPLICAS"], "3");
    assert!(config["SETTLE_PROJECTOR_PARTITIONS"].is_string());
}

#[test]
fn the_cluster_nodes_route_to_each_other() {
    for node in 1..=3 {
        let text = std::fs::read_to_string(deploy().join(format!("nats/cluster/nats-{node}.conf")))
            .unwrap();
        assert!(text.contains("jetstream"), "node {node} runs JetStream");
        for other in 1..=3 {
            assert!(
                text.contains(&format!("nats-route://nats-{other}:6222")),
                "node {node} routes to nats-{other}"
            );
        }
    }
}
