//! `calsync validate` end to end through the real binary: each drill starts
//! its own PostgreSQL, simulators and `calsync serve` child process. A few
//! fast drills here; `.ci/run` runs the whole quick suite after the tests.

use serde_json::Value;
use std::process::Command;

#[test]
fn validate_quick_runs_the_named_drills_and_reports_them_passed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let markdown = dir.path().join("report.md");
    let drills = ["allowlist", "idempotency", "malformed-webhooks"];
    let out = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["validate", "--quick", "--only", &drills.join(",")])
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&markdown)
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("CALSYNC_CONFIG")
        .output()
        .expect("calsync runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "validate failed:\n{stderr}");
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON report written"))
            .expect("JSON report parses");
    assert_eq!(report["verdict"], "GO", "{report:#}");
    assert_eq!(report["quick"], true);
    let ran: Vec<&str> = report["drills"]
        .as_array()
        .expect("drills array")
        .iter()
        .map(|d| d["drill"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ran, drills);
    for d in report["drills"].as_array().into_iter().flatten() {
        let checks = d["checks"].as_array().expect("checks");
        assert!(!checks.is_empty(), "{} ran no checks", d["drill"]);
        for c in checks {
            assert_eq!(c["pass"], true, "{}: {c}", d["drill"]);
            assert!(!c["evidence"].as_str().unwrap_or_default().is_empty());
        }
        // Every drill ends with replay --verify.
        assert!(checks.iter().any(|c| c["name"]
            .as_str()
            .unwrap_or_default()
            .starts_with("replay --verify")));
    }
    let md = std::fs::read_to_string(&markdown).expect("Markdown report written");
    assert!(md.starts_with("# calsync validation: GO"), "{md}");
    for d in drills {
        assert!(
            md.contains(&format!("| {d} | PASS |")),
            "{d} missing:\n{md}"
        );
    }
}

#[test]
fn validate_refuses_an_unknown_drill() {
    let out = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["validate", "--quick", "--only", "no-such-drill"])
        .output()
        .expect("calsync runs");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no drill"));
}
