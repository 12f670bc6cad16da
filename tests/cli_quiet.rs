//! Operator commands print their answer and nothing else: no PostgreSQL
//! NOTICE relayed at INFO, no `deadpool.postgres` "Connection error" WARN
//! as the private cluster stops (issue 23, "operator CLI hygiene").
//!
//! Runs the real binary on a private cluster of its own, the way an
//! operator on a laptop does: the first command creates the cluster and
//! migrates, the following ones find everything in place.

use std::process::Command;

fn calsync(pg_dir: &std::path::Path, args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_calsync"))
        .arg("--pg-dir")
        .arg(pg_dir)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CALSYNC_CONFIG")
        .env_remove("RUST_LOG")
        .env("CALSYNC_LOG_FORMAT", "text")
        .output()
        .expect("run calsync");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "calsync {args:?} failed\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

fn assert_quiet(args: &[&str], stdout: &str, stderr: &str) {
    for text in [stdout, stderr] {
        for line in text.lines() {
            assert!(
                !line.contains("NOTICE") && !line.contains("WARN") && !line.contains("INFO"),
                "calsync {args:?} printed a log line: {line}\nstdout:\n{stdout}\nstderr:\n{stderr}"
            );
            assert!(
                !line.contains("deadpool") && !line.contains("Connection error"),
                "calsync {args:?} printed pool noise: {line}"
            );
        }
    }
    assert!(
        stderr.trim().is_empty(),
        "calsync {args:?} wrote to stderr:\n{stderr}"
    );
}

#[test]
fn status_and_log_tail_print_only_their_answer() {
    let dir = tempfile::tempdir().unwrap();
    let pg = dir.path().join("pg");

    // First run: creates the cluster and applies every migration.
    let args = ["status"];
    let (out, err) = calsync(&pg, &args);
    assert_quiet(&args, &out, &err);
    assert!(out.contains("0 connection(s)"), "{out}");

    // A connection, so the answers have something in them.
    let args = [
        "connections",
        "add",
        "--platform-provider",
        "host-quiet",
        "--provider",
        "google",
        "--account",
        "quiet@example.com",
        "--calendar",
        "primary",
    ];
    let (out, err) = calsync(&pg, &args);
    assert_quiet(&args, &out, &err);

    // Later runs: the schema is in place (the old path relayed
    // `NOTICE: relation "calsync_migrations" already exists` here).
    let args = ["status"];
    let (out, err) = calsync(&pg, &args);
    assert_quiet(&args, &out, &err);
    assert!(out.contains("1 connection(s)"), "{out}");
    assert!(out.contains("google"), "{out}");

    let args = ["log", "tail", "-n", "5"];
    let (out, err) = calsync(&pg, &args);
    assert_quiet(&args, &out, &err);
    assert!(out.contains("connection_created"), "{out}");

    let args = ["migrate"];
    let (out, err) = calsync(&pg, &args);
    assert_quiet(&args, &out, &err);
    assert!(out.contains("schema is up to date"), "{out}");
}
