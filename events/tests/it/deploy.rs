//! The deployment manifests stay valid: every nats-server configuration passes `nats-server -t`,
//! and the compose and Kubernetes files parse and run the three processes with health probes.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_norway::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

#[test]
fn nats_configurations_are_valid() {
    let bin = std::env::var("SETTLE_NATS_SERVER_BIN")
        .expect("SETTLE_NATS_SERVER_BIN: run through `deploy/stack test`");
    let mut configs = vec![deploy_dir().join("nats/local.conf")];
    for entry in std::fs::read_dir(deploy_dir().join("nats/cluster")).unwrap() {
        configs.push(entry.unwrap().path());
    }
    assert_eq!(configs.len(), 4, "the local config and three cluster nodes");
    for config in configs {
        let out = std::process::Command::new(&bin)
            .arg("-t")
            .arg("-c")
            .arg(&config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn compose_runs_every_process_against_a_three_node_cluster() {
    let text = std::fs::read_to_string(deploy_dir().join("compose.yaml")).unwrap();
    let mut compose: Value = serde_norway::from_str(&text).unwrap();
    compose.apply_merge().unwrap(); // resolve `<<:` merge keys as compose does
    let services = compose["services"].as_mapping().expect("services");
    for name in [
        "postgres",
        "nats-1",
        "nats-2",
        "nats-3",
        "command-api",
        "projector",
        "finalizer",
    ] {
        assert!(services.contains_key(name), "compose lacks {name}");
    }
    for name in ["command-api", "projector", "finalizer"] {
        let env = &services[name]["environment"];
        assert!(
            env["DATABASE_URL"].is_string() && env["NATS_URL"].is_string(),
            "{name} is configured"
        );
    }
}

#[test]
fn kubernetes_deployments_have_health_probes() {
    let text = std::fs::read_to_string(deploy_dir().join("k8s/settle.yaml")).unwrap();
    let mut deployments = Vec::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let doc = Value::deserialize(document).unwrap();
        assert!(
            doc["apiVersion"].is_string() && doc["kind"].is_string(),
            "every document has apiVersion and kind"
        );
        if doc["kind"] == "Deployment" {
            let container = &doc["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
            assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
            deployments.push(doc["metadata"]["name"].as_str().unwrap().to_owned());
        }
    }
    deployments.sort();
    assert_eq!(deployments, ["command-api", "finalizer", "projector"]);
}
