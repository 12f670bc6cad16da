//! The cluster's deployment files say what docs/CLUSTER.md promises:
//! three replicas, readiness on /readyz, a preStop drain, a disruption
//! budget, and a compose file with PostgreSQL and three nodes sharing one
//! cluster secret, each advertising its own address.

use serde::Deserialize;
use serde_norway::Value;
use std::path::PathBuf;

fn read(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).expect("a YAML document"))
        .collect()
}

#[test]
fn the_kubernetes_manifest_runs_three_ready_draining_replicas_under_a_budget() {
    let docs = documents(&read("ops/deploy/kubernetes.yaml"));
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k}"))
            .clone()
    };
    let deployment = kind("Deployment");
    assert_eq!(deployment["spec"]["replicas"].as_u64(), Some(3));
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0].as_str(), Some("serve"));
    assert_eq!(
        container["readinessProbe"]["httpGet"]["path"].as_str(),
        Some("/readyz")
    );
    assert!(container["lifecycle"]["preStop"].is_mapping(), "no preStop");
    let env: Vec<&str> = container["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in [
        "CALSYNC_CLUSTER_SECRET",
        "CALSYNC_NODE_NAME",
        "CALSYNC_ADVERTISE_URL",
        "DATABASE_URL",
    ] {
        assert!(env.contains(&name), "{name} not set: {env:?}");
    }
    let pdb = kind("PodDisruptionBudget");
    assert_eq!(pdb["spec"]["maxUnavailable"].as_u64(), Some(1));
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"]["app"],
        deployment["spec"]["selector"]["matchLabels"]["app"]
    );
}

#[test]
fn the_compose_file_runs_postgres_and_three_distinct_nodes() {
    let mut doc: Value = serde_norway::from_str(&read("ops/deploy/compose.yaml")).unwrap();
    // The nodes share one block (`<<: *calsync`).
    doc.apply_merge().unwrap();
    let services = doc["services"].as_mapping().expect("services");
    assert!(services.contains_key("postgres"));
    let mut names = Vec::new();
    let mut urls = Vec::new();
    for i in 1..=3 {
        let s = &doc["services"][format!("calsync-{i}").as_str()];
        let env = &s["environment"];
        assert!(
            env["CALSYNC_CLUSTER_SECRET"].as_str().is_some(),
            "calsync-{i}"
        );
        assert!(env["DATABASE_URL"].as_str().unwrap().contains("@postgres:"));
        names.push(env["CALSYNC_NODE_NAME"].as_str().unwrap().to_string());
        urls.push(env["CALSYNC_ADVERTISE_URL"].as_str().unwrap().to_string());
        assert_eq!(s["command"][0].as_str(), Some("serve"));
    }
    names.dedup();
    urls.dedup();
    assert_eq!((names.len(), urls.len()), (3, 3));
}
