//! The operations files agree with each other and with the code: every
//! alert is well formed and names an existing runbook, every metric an
//! alert or the dashboard uses is documented in ops/METRICS.md, and every
//! metric the code defines is documented. `promtool check rules` runs too;
//! a missing promtool is installed (`ops/install-promtool.sh`) or fails the
//! test.

use serde_json::Value as Json;
use serde_norway::Value as Yaml;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn rules() -> Vec<Yaml> {
    let doc: Yaml = serde_norway::from_str(&read("ops/alerts.yml")).expect("alerts.yml parses");
    let groups = doc["groups"].as_sequence().expect("groups: a list");
    assert!(!groups.is_empty());
    groups
        .iter()
        .flat_map(|g| {
            assert!(g["name"].as_str().is_some(), "group without a name: {g:?}");
            g["rules"].as_sequence().expect("rules: a list").clone()
        })
        .collect()
}

/// Metric names in a PromQL expression: identifiers that start with
/// `calsync_`, plus Prometheus' own `up`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut word = String::new();
    let mut in_string = false;
    for c in expr.chars().chain(std::iter::once(' ')) {
        if c == '"' {
            in_string = !in_string;
        }
        if !in_string && (c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            word.push(c);
            continue;
        }
        if word.starts_with("calsync_") || word == "up" {
            names.insert(std::mem::take(&mut word));
        }
        word.clear();
    }
    names
}

/// Whether METRICS.md documents `name` (histogram series by their base).
fn documented(doc: &str, name: &str) -> bool {
    let base = ["_bucket", "_count", "_sum"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    doc.contains(&format!("`{name}`")) || doc.contains(&format!("`{base}`"))
}

#[test]
fn every_alert_is_complete_and_names_its_runbook() {
    let rules = rules();
    assert!(rules.len() >= 5, "only {} rules", rules.len());
    let mut referenced = BTreeSet::new();
    for rule in &rules {
        let alert = rule["alert"]
            .as_str()
            .unwrap_or_else(|| panic!("rule without alert: {rule:?}"));
        for field in ["expr", "for"] {
            assert!(
                rule[field].as_str().is_some_and(|s| !s.trim().is_empty()),
                "{alert}: no {field}"
            );
        }
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("critical" | "warning" | "info")),
            "{alert}: severity {severity:?}"
        );
        assert!(
            rule["annotations"]["summary"].as_str().is_some(),
            "{alert}: no summary"
        );
        let runbook = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert}: no runbook_url"));
        assert_eq!(runbook, format!("ops/runbooks/{alert}.md"), "{alert}");
        let text = read(runbook);
        assert!(
            text.starts_with(&format!("# {alert}\n")),
            "{runbook}: title"
        );
        assert!(
            text.contains("## Confirm") && text.contains("## Act"),
            "{runbook}: has Confirm and Act sections"
        );
        assert!(
            text.contains("calsync status") || text.contains("curl"),
            "{runbook}: says how to confirm"
        );
        assert!(referenced.insert(runbook.to_string()), "{alert} twice");
    }
    // No orphan runbooks.
    for entry in std::fs::read_dir(root().join("ops/runbooks")).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        let path = format!("ops/runbooks/{name}");
        assert!(referenced.contains(&path), "{path} belongs to no alert");
    }
}

#[test]
fn alert_and_dashboard_metrics_are_documented() {
    let doc = read("ops/METRICS.md");
    let mut used = BTreeSet::new();
    for rule in rules() {
        used.extend(metric_names(rule["expr"].as_str().unwrap_or_default()));
    }
    let dashboard: Json =
        serde_json::from_str(&read("ops/grafana/calsync.json")).expect("dashboard JSON parses");
    assert!(dashboard["panels"].as_array().is_some_and(|p| p.len() > 5));
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() > 10, "dashboard has {} queries", exprs.len());
    for expr in &exprs {
        used.extend(metric_names(expr));
    }
    let missing: Vec<_> = used.iter().filter(|n| !documented(&doc, n)).collect();
    assert!(missing.is_empty(), "not in ops/METRICS.md: {missing:?}");
    // Every metric named in the docs and used in ops files exists in code.
    for name in used.iter().filter(|n| n.starts_with("calsync_")) {
        let base = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            calsync::metrics::ALL.contains(&base),
            "{name} is used in ops/ but not defined in src/metrics.rs"
        );
    }
}

fn collect_exprs(v: &Json, out: &mut Vec<String>) {
    match v {
        Json::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Json::String(s)) => out.push(s.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|i| collect_exprs(i, out)),
        _ => {}
    }
}

#[test]
fn every_metric_in_code_is_documented() {
    let doc = read("ops/METRICS.md");
    for name in calsync::metrics::ALL {
        assert!(documented(&doc, name), "{name} missing from ops/METRICS.md");
    }
}

/// What to do when promtool cannot be run after `testkit::promtool()`.
pub const PROMTOOL_MISSING: &str = "promtool could not be run: install it \
    (`ops/install-promtool.sh` unpacks /usr/bin/promtool from Debian's `prometheus` \
    package into /usr/local/bin); the alert rules are not checked without it";

#[test]
fn promtool_accepts_the_rules() {
    let rules = root().join("ops/alerts.yml");
    let out = match std::process::Command::new(calsync::testkit::promtool())
        .args(["check", "rules"])
        .arg(&rules)
        .output()
    {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!("{PROMTOOL_MISSING}"),
        Err(e) => panic!("cannot run promtool: {e}"),
    };
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool check rules: {report}");
    // It really read the rules: promtool names the file and counts them.
    let groups = read("ops/alerts.yml").matches("- alert:").count();
    assert!(groups > 0);
    assert!(
        report.contains(&format!("SUCCESS: {groups} rules found")),
        "promtool did not report the {groups} rules: {report}"
    );
}

#[test]
fn promtool_rejects_a_broken_rule() {
    // Positive control: the check above can fail. A rule with a PromQL
    // syntax error must be refused.
    let dir = std::env::temp_dir().join(format!("calsync-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let broken = dir.join("broken.yml");
    std::fs::write(
        &broken,
        "groups:\n  - name: broken\n    rules:\n      - alert: Broken\n        expr: rate(calsync_x_total[5m] > 0\n",
    )
    .unwrap();
    let out = std::process::Command::new(calsync::testkit::promtool())
        .args(["check", "rules"])
        .arg(&broken)
        .output()
        .unwrap_or_else(|e| panic!("{PROMTOOL_MISSING}: {e}"));
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(!out.status.success(), "promtool accepted a broken rule");
}

#[test]
fn deployment_files_exist_and_name_the_serve_command() {
    let unit = read("ops/deploy/calsync.service");
    assert!(unit.contains("ExecStart=/usr/local/bin/calsync serve"));
    assert!(unit.contains("[Install]"));
    let docker = read("ops/deploy/Dockerfile");
    assert!(docker.contains("FROM debian:bookworm-slim"));
    assert!(docker.contains("CMD [\"serve\"]"));
    assert!(Path::new(&root().join("calsync.example.toml")).exists());
}

#[test]
fn metric_names_are_extracted_from_promql() {
    let names = metric_names(
        r#"sum by (le) (rate(calsync_x_bucket{reason!~"calsync_not|busy"}[5m])) > up"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["calsync_x_bucket".to_string(), "up".to_string()]
    );
}
