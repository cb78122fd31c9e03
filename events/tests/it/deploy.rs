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
    // The seeds are Compose secrets (files under /run/secrets that the entrypoint exports),
    // created from the environment of `docker compose up`: never in a service's plain
    // environment, and never the public development key (ADR 0007, ADR 0010).
    let secrets = &compose["secrets"];
    for (name, seeds) in [
        (
            "command-api",
            &["SETTLE_WEBHOOK_SEED", "SETTLE_AUDIT_SEED"][..],
        ),
        ("finalizer", &["SETTLE_WEBHOOK_SEED"][..]),
    ] {
        let service = &services[name];
        assert!(
            service["environment"]["SETTLE_DEVELOPMENT"].is_null(),
            "{name}"
        );
        for seed in seeds {
            assert!(
                service["environment"][*seed].is_null(),
                "{name}: {seed} in plain environment"
            );
            let mounted = service["secrets"]
                .as_sequence()
                .and_then(|s| s.iter().find(|m| m["target"] == *seed))
                .unwrap_or_else(|| panic!("{name} mounts {seed}"));
            let source = mounted["source"].as_str().expect("source");
            assert_eq!(secrets[source]["environment"], *seed, "{name}: {seed}");
        }
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
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            if name == "command-api" || name == "finalizer" {
                // The webhook signing seed comes from a Secret, required.
                let seed = container["env"]
                    .as_sequence()
                    .and_then(|env| env.iter().find(|e| e["name"] == "SETTLE_WEBHOOK_SEED"))
                    .unwrap_or_else(|| panic!("{name} sets SETTLE_WEBHOOK_SEED"));
                let secret = &seed["valueFrom"]["secretKeyRef"];
                assert!(
                    secret["name"].is_string() && secret["key"].is_string(),
                    "{name}: {seed:?}"
                );
                assert_ne!(secret["optional"], Value::Bool(true), "{name}");
            }
            if name == "command-api" {
                // So does the audit key's seed (ADR 0010).
                let seed = container["env"]
                    .as_sequence()
                    .and_then(|env| env.iter().find(|e| e["name"] == "SETTLE_AUDIT_SEED"))
                    .expect("command-api sets SETTLE_AUDIT_SEED");
                assert_eq!(
                    seed["valueFrom"]["secretKeyRef"]["key"],
                    "SETTLE_AUDIT_SEED"
                );
            }
            deployments.push(doc["metadata"]["name"].as_str().unwrap().to_owned());
        }
    }
    deployments.sort();
    assert_eq!(deployments, ["command-api", "finalizer", "projector"]);
}

#[test]
fn production_postgres_bounds_statements_and_idle_transactions() {
    let text =
        std::fs::read_to_string(deploy_dir().join("postgres/postgresql.production.conf")).unwrap();
    let set = |name: &str| {
        text.lines()
            .map(|l| l.split('#').next().unwrap_or_default().trim())
            .find_map(|l| {
                l.strip_prefix(name)?
                    .trim()
                    .strip_prefix('=')
                    .map(str::trim)
            })
            .map(str::to_owned)
    };
    // The same bounds the processes set on their own connections.
    use events::store::db::{IDLE_IN_TRANSACTION_TIMEOUT_SECONDS, STATEMENT_TIMEOUT_SECONDS};
    assert_eq!(
        set("statement_timeout"),
        Some(format!("{STATEMENT_TIMEOUT_SECONDS}s"))
    );
    assert_eq!(
        set("idle_in_transaction_session_timeout"),
        Some(format!("{IDLE_IN_TRANSACTION_TIMEOUT_SECONDS}s"))
    );
}
