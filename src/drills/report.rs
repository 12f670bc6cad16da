//! The go/no-go checklist: every drill's checks with PASS/FAIL and the
//! evidence behind them, as JSON (for machines) and Markdown (to attach to
//! a release).

use serde::Serialize;
use serde_json::Value;
use std::fmt::Write as _;

/// One guarantee checked from the outside.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub pass: bool,
    /// What was measured, in words an SRE can read.
    pub evidence: String,
}

/// What one drill did and found.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    pub drill: String,
    pub quick: bool,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_seconds: f64,
    pub checks: Vec<Check>,
    /// Numbers worth keeping (counts, latencies, restarts, load).
    pub measurements: serde_json::Map<String, Value>,
    /// Set when the drill could not run to the end (a harness failure).
    pub error: Option<String>,
}

impl DrillReport {
    pub fn new(drill: &str, quick: bool) -> DrillReport {
        DrillReport {
            drill: drill.to_string(),
            quick,
            started_at: chrono::Utc::now(),
            duration_seconds: 0.0,
            checks: Vec::new(),
            measurements: serde_json::Map::new(),
            error: None,
        }
    }

    /// Records a check and prints it at once, so a long drill shows progress.
    pub fn check(&mut self, name: &str, pass: bool, evidence: impl Into<String>) -> bool {
        let evidence = evidence.into();
        eprintln!(
            "[{}] {} {name}: {evidence}",
            self.drill,
            if pass { "PASS" } else { "FAIL" }
        );
        self.checks.push(Check {
            name: name.to_string(),
            pass,
            evidence,
        });
        pass
    }

    pub fn measure(&mut self, key: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or(Value::Null);
        eprintln!("[{}] measured {key} = {value}", self.drill);
        self.measurements.insert(key.to_string(), value);
    }

    /// Passed: no error and every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        self.error.is_none() && !self.checks.is_empty() && self.checks.iter().all(|c| c.pass)
    }
}

/// The whole validation run.
#[derive(Debug, Clone, Serialize)]
pub struct ValidationReport {
    pub verdict: &'static str,
    pub calsync_version: String,
    pub git_commit: Option<String>,
    pub postgres_version: Option<String>,
    pub host: String,
    pub started_at: chrono::DateTime<chrono::Utc>,
    pub duration_seconds: f64,
    pub quick: bool,
    /// How the drills ran (sizes, timings of the harness).
    pub configuration: Value,
    pub drills: Vec<DrillReport>,
}

impl ValidationReport {
    pub fn passed(&self) -> bool {
        !self.drills.is_empty() && self.drills.iter().all(DrillReport::passed)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(md, "# calsync validation: {}\n", self.verdict);
        let _ = writeln!(md, "| | |\n| --- | --- |");
        let _ = writeln!(md, "| calsync | {} |", self.calsync_version);
        let _ = writeln!(
            md,
            "| git commit | {} |",
            self.git_commit.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(
            md,
            "| PostgreSQL | {} |",
            self.postgres_version.as_deref().unwrap_or("unknown")
        );
        let _ = writeln!(md, "| host | {} |", self.host);
        let _ = writeln!(md, "| started | {} |", self.started_at.to_rfc3339());
        let _ = writeln!(md, "| duration | {:.1} s |", self.duration_seconds);
        let _ = writeln!(
            md,
            "| mode | {} |",
            if self.quick {
                "quick (CI sizes)"
            } else {
                "full"
            }
        );
        let _ = writeln!(md, "| configuration | `{}` |\n", self.configuration);
        let _ = writeln!(md, "## Checklist\n");
        let _ = writeln!(md, "| drill | result | checks | duration |");
        let _ = writeln!(md, "| --- | --- | --- | --- |");
        for d in &self.drills {
            let passed = d.checks.iter().filter(|c| c.pass).count();
            let _ = writeln!(
                md,
                "| {} | {} | {}/{} | {:.1} s |",
                d.drill,
                if d.passed() { "PASS" } else { "FAIL" },
                passed,
                d.checks.len(),
                d.duration_seconds
            );
        }
        for d in &self.drills {
            let _ = writeln!(
                md,
                "\n## {} — {}\n",
                d.drill,
                if d.passed() { "PASS" } else { "FAIL" }
            );
            if let Some(e) = &d.error {
                let _ = writeln!(md, "**The drill stopped early:** {}\n", cell(e));
            }
            let _ = writeln!(md, "| | check | evidence |\n| --- | --- | --- |");
            for c in &d.checks {
                let _ = writeln!(
                    md,
                    "| {} | {} | {} |",
                    if c.pass { "PASS" } else { "**FAIL**" },
                    cell(&c.name),
                    cell(&c.evidence)
                );
            }
            if !d.measurements.is_empty() {
                let _ = writeln!(md, "\nMeasured:\n");
                for (k, v) in &d.measurements {
                    let _ = writeln!(md, "- `{k}`: {v}");
                }
            }
        }
        md
    }
}

/// Markdown table cells cannot hold `|` or line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}
