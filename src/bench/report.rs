//! What every benchmark reports: its configuration, its figures (median
//! and spread over repeated runs), its comparisons with raw PostgreSQL and
//! the machine it ran on — as text for people and JSON for machines.

use serde::Serialize;
use std::collections::BTreeMap;

/// One measured quantity over repeated runs.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Every run's value, in run order.
    pub runs: Vec<f64>,
}

impl Figure {
    pub fn new(name: &str, unit: &str, runs: Vec<f64>) -> Figure {
        Figure {
            name: name.into(),
            unit: unit.into(),
            median: median(&runs),
            min: runs.iter().copied().fold(f64::INFINITY, f64::min),
            max: runs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
            runs,
        }
    }

    /// A figure measured once (no spread).
    pub fn single(name: &str, unit: &str, value: f64) -> Figure {
        Figure::new(name, unit, vec![value])
    }
}

/// calsync's figure against its raw-PostgreSQL comparison, as a ratio.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub what: String,
    pub calsync: f64,
    pub baseline: f64,
    pub baseline_name: String,
    /// calsync / baseline (higher is better for rates).
    pub ratio: f64,
    /// The target ratio from DESIGN.md, if there is one.
    pub target: Option<f64>,
    pub met: Option<bool>,
}

impl Comparison {
    pub fn new(
        what: &str,
        calsync: f64,
        baseline_name: &str,
        baseline: f64,
        target: Option<f64>,
    ) -> Self {
        let ratio = if baseline > 0.0 {
            calsync / baseline
        } else {
            0.0
        };
        Comparison {
            what: what.into(),
            calsync,
            baseline,
            baseline_name: baseline_name.into(),
            ratio,
            target,
            met: target.map(|t| ratio >= t),
        }
    }
}

/// An absolute target (e.g. "p99 under 50 ms"), for benchmarks without a
/// PostgreSQL baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub what: String,
    pub value: f64,
    pub limit: f64,
    pub unit: String,
    /// True when `value <= limit`.
    pub met: bool,
}

impl Target {
    pub fn at_most(what: &str, value: f64, limit: f64, unit: &str) -> Target {
        Target {
            what: what.into(),
            value,
            limit,
            unit: unit.into(),
            met: value <= limit,
        }
    }
}

/// Where the figures were taken.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_total_mb: u64,
    pub postgres: String,
}

impl Machine {
    pub fn detect(postgres: String) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_total_mb = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
            .map(|kb| kb / 1024)
            .unwrap_or(0);
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_total_mb,
            postgres,
        }
    }
}

/// One benchmark's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub benchmark: String,
    pub machine: Machine,
    pub config: BTreeMap<String, serde_json::Value>,
    pub figures: Vec<Figure>,
    pub comparisons: Vec<Comparison>,
    pub targets: Vec<Target>,
    /// What the figures mean and what limits them, in words.
    pub notes: Vec<String>,
    pub seconds: f64,
}

impl Report {
    pub fn new(benchmark: &str, machine: Machine) -> Report {
        Report {
            benchmark: benchmark.into(),
            machine,
            config: BTreeMap::new(),
            figures: Vec::new(),
            comparisons: Vec::new(),
            targets: Vec::new(),
            notes: Vec::new(),
            seconds: 0.0,
        }
    }

    pub fn config(&mut self, key: &str, value: impl Serialize) {
        self.config.insert(
            key.into(),
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        );
    }

    pub fn figure(&mut self, figure: Figure) {
        self.figures.push(figure);
    }

    /// The median of the named figure, if present.
    pub fn median_of(&self, name: &str) -> Option<f64> {
        self.figures
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.median)
    }

    /// The human-readable form printed by `calsync bench`.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let m = &self.machine;
        let _ = writeln!(out, "== bench {} ==", self.benchmark);
        let _ = writeln!(
            out,
            "machine: {} cpus ({}), {} MB RAM, {}",
            m.cpus, m.cpu_model, m.memory_total_mb, m.postgres
        );
        let _ = writeln!(out, "configuration:");
        for (k, v) in &self.config {
            let _ = writeln!(out, "  {k}: {v}");
        }
        let _ = writeln!(out, "figures (median [min..max] over runs):");
        for f in &self.figures {
            let _ = writeln!(
                out,
                "  {:<40} {:>12} {:<8} [{} .. {}] n={}",
                f.name,
                fmt(f.median),
                f.unit,
                fmt(f.min),
                fmt(f.max),
                f.runs.len()
            );
        }
        for c in &self.comparisons {
            let verdict = match (c.target, c.met) {
                (Some(t), Some(true)) => format!("target >= {t}: met"),
                (Some(t), Some(false)) => format!("target >= {t}: MISSED"),
                _ => String::new(),
            };
            let _ = writeln!(
                out,
                "ratio {}: calsync {} / {} {} = {:.3}  {}",
                c.what,
                fmt(c.calsync),
                c.baseline_name,
                fmt(c.baseline),
                c.ratio,
                verdict
            );
        }
        for t in &self.targets {
            let _ = writeln!(
                out,
                "target {}: {} {} (limit {} {}): {}",
                t.what,
                fmt(t.value),
                t.unit,
                fmt(t.limit),
                t.unit,
                if t.met { "met" } else { "MISSED" }
            );
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        let _ = writeln!(out, "took {:.1}s", self.seconds);
        out
    }
}

fn fmt(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// The median (the mean of the middle two for an even count); 0 when empty.
pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// The `p`-th percentile by linear interpolation between closest ranks;
/// 0 when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    sorted[lo] + (sorted[hi] - sorted[lo]) * frac
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(median(&v), 2.5);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }

    #[test]
    fn ratios_say_whether_the_target_is_met() {
        let c = Comparison::new("x", 5.0, "pg", 10.0, Some(1.0));
        assert_eq!(c.ratio, 0.5);
        assert_eq!(c.met, Some(false));
        assert!(Target::at_most("p99", 40.0, 50.0, "ms").met);
    }
}
