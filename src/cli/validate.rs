//! `calsync validate`: runs the failure drills (all, or those named) and
//! writes the go/no-go report as JSON and Markdown; exits non-zero when any
//! check failed.

use crate::drills::{self, report::ValidationReport, Sizes};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Short versions of every drill, for CI (a few minutes in total).
    #[arg(long)]
    pub quick: bool,
    /// Only these drills (comma separated), e.g. `--only inbound,replay-storm`.
    #[arg(long, value_delimiter = ',', value_name = "DRILLS")]
    pub only: Vec<String>,
    /// Write the JSON report here.
    #[arg(long, value_name = "PATH")]
    pub json: Option<PathBuf>,
    /// Write the Markdown report here (printed to stdout when unset).
    #[arg(long, value_name = "PATH")]
    pub markdown: Option<PathBuf>,
}

pub async fn run(args: ValidateArgs) -> anyhow::Result<()> {
    let names: Vec<String> = if args.only.is_empty() {
        drills::ALL.iter().map(|s| s.to_string()).collect()
    } else {
        args.only.iter().map(|s| s.trim().to_string()).collect()
    };
    if let Some(bad) = names.iter().find(|n| !drills::ALL.contains(&n.as_str())) {
        anyhow::bail!("no drill {bad:?}; drills: {}", drills::ALL.join(", "));
    }
    let sizes = Sizes { quick: args.quick };
    let started_at = chrono::Utc::now();
    let started = Instant::now();
    let mut reports = Vec::new();
    for name in &names {
        reports.push(drills::run(name, sizes).await);
    }
    drills::harness::remove_exe_copy();
    let mut report = ValidationReport {
        verdict: "NO-GO",
        calsync_version: env!("CARGO_PKG_VERSION").to_string(),
        git_commit: git_commit(),
        postgres_version: postgres_version(),
        host: nix::unistd::gethostname()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        started_at,
        duration_seconds: started.elapsed().as_secs_f64(),
        quick: args.quick,
        configuration: drills::configuration(sizes),
        drills: reports,
    };
    if report.passed() {
        report.verdict = "GO";
    }
    let markdown = report.markdown();
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        eprintln!("JSON report: {}", path.display());
    }
    match &args.markdown {
        Some(path) => {
            std::fs::write(path, &markdown)?;
            eprintln!("Markdown report: {}", path.display());
        }
        None => println!("{markdown}"),
    }
    let failed: Vec<&str> = report
        .drills
        .iter()
        .filter(|d| !d.passed())
        .map(|d| d.drill.as_str())
        .collect();
    eprintln!(
        "validate: {} in {:.0} s ({} drills, failed: {})",
        report.verdict,
        report.duration_seconds,
        report.drills.len(),
        if failed.is_empty() {
            "none".to_string()
        } else {
            failed.join(", ")
        }
    );
    if !failed.is_empty() {
        anyhow::bail!("validation failed: {}", failed.join(", "));
    }
    Ok(())
}

/// The commit being validated: of the working directory's checkout, else
/// of the checkout this binary was built from (absent for installed copies).
fn git_commit() -> Option<String> {
    [".", env!("CARGO_MANIFEST_DIR")].iter().find_map(|dir| {
        let out = std::process::Command::new("git")
            .args(["-C", dir, "rev-parse", "HEAD"])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    })
}

/// The PostgreSQL binaries the drills ran (`postgres --version`).
fn postgres_version() -> Option<String> {
    let bins = crate::pg::find_bin_dir().ok()?;
    let out = std::process::Command::new(bins.postgres)
        .arg("--version")
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
