//! `calsync demo` as a newcomer runs it: the real binary, no configuration,
//! a fresh working directory. It must come up on its own (private
//! PostgreSQL, simulators, actors, HTTP), survive its faults, print a
//! summary whose numbers show every mechanism at work, pass its own
//! consistency check and exit 0.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The number after `label` on the summary line starting with it.
fn number_after(summary: &str, label: &str) -> u64 {
    let line = summary
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` line in the summary:\n{summary}"));
    line[label.len()..]
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number on `{line}`"))
}

#[test]
fn demo_runs_the_whole_system_and_passes_its_consistency_check() {
    let dir = tempfile::tempdir().unwrap();
    // As root, PostgreSQL runs as `postgres`, which must reach the data
    // directory; a private 0700 temp dir would send the cluster elsewhere.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["demo", "--duration", "6s", "--connections", "4"])
        .current_dir(dir.path())
        .env_remove("DATABASE_URL")
        .env_remove("CALSYNC_PG_DIR")
        .env_remove("CALSYNC_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "demo failed ({:?}):\n{stdout}\n--- stderr ---\n{stderr}",
        output.status
    );
    assert!(
        elapsed < Duration::from_secs(50),
        "demo took {elapsed:?}:\n{stdout}"
    );
    let summary = stdout
        .split_once("\nsummary")
        .map(|(_, s)| s)
        .unwrap_or_else(|| panic!("no summary printed:\n{stdout}"));

    assert_eq!(number_after(summary, "connections"), 4, "{summary}");
    assert!(summary.contains("4 active"), "{summary}");
    assert_eq!(number_after(summary, "push channels open"), 4, "{summary}");
    assert!(number_after(summary, "busy intervals") > 0, "{summary}");
    assert!(number_after(summary, "notifications") > 0, "{summary}");
    assert!(number_after(summary, "duplicates dropped") > 0, "{summary}");
    assert!(number_after(summary, "actor restarts") > 0, "{summary}");
    assert!(number_after(summary, "backoffs") > 0, "{summary}");
    assert!(summary.contains("consistency          PASS"), "{summary}");
    // Bookings went out exactly once through kills, duplicates and an outage.
    assert!(number_after(summary, "outbound bookings") > 0, "{summary}");
    let outbound = summary
        .lines()
        .find(|l| l.trim_start().starts_with("outbound bookings"))
        .unwrap_or("");
    assert!(outbound.ends_with("PASS"), "{outbound}");
    assert!(
        outbound.contains("0 missing, 0 duplicated, 0 cancelled"),
        "{outbound}"
    );
    assert!(summary.contains("/healthz"), "{summary}");

    // Fresh each run, in the working directory: the private cluster lives
    // in ./.calsync/demo-pg and was stopped cleanly.
    let data = dir.path().join(".calsync/demo-pg/data");
    assert!(
        data.join("PG_VERSION").is_file(),
        "no cluster in ./.calsync/demo-pg"
    );
    assert!(
        !data.join("postmaster.pid").exists(),
        "PostgreSQL was left running"
    );
}
