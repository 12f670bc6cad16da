//! The numbers the live lines and the summary print, read the way an
//! operator would read them: the read models and the log (scoped to the
//! demo's connections, so a shared `DATABASE_URL` does not skew them) and
//! this process's Prometheus counters (what `GET /metrics` serves).

use super::accounts::Demoed;
use super::world::World;
use std::collections::BTreeMap;
use uuid::Uuid;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Connections by status (`active`, `backoff`, …).
    pub by_status: BTreeMap<String, i64>,
    pub busy_intervals: i64,
    pub channels_open: i64,
    /// Log events by type, over the demo's streams.
    pub events: BTreeMap<String, i64>,
    /// Connections whose last attempt failed (error count > 0).
    pub erroring: i64,
    /// Webhooks answered 2xx as new, answered `duplicate`, refused.
    pub webhooks_accepted: u64,
    pub webhooks_duplicate: u64,
    pub webhooks_rejected: u64,
    /// Refused webhooks by reason (`unavailable`, `busy`, …).
    pub rejected_by_reason: BTreeMap<String, u64>,
    pub syncs_started: u64,
    pub syncs_succeeded: u64,
    pub syncs_failed: u64,
    pub restarts: u64,
    pub quarantined: usize,
}

impl Snapshot {
    pub fn event(&self, event_type: &str) -> i64 {
        self.events.get(event_type).copied().unwrap_or(0)
    }

    /// `3 active, 1 backoff`
    pub fn statuses(&self) -> String {
        if self.by_status.is_empty() {
            return "none".into();
        }
        self.by_status
            .iter()
            .map(|(status, n)| format!("{n} {status}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn connections(&self) -> i64 {
        self.by_status.values().sum()
    }
}

pub async fn collect(world: &World, demoed: &[Demoed]) -> anyhow::Result<Snapshot> {
    let ids: Vec<Uuid> = demoed.iter().map(|d| d.id.as_uuid()).collect();
    let streams: Vec<String> = demoed
        .iter()
        .map(|d| d.id.stream().as_str().to_string())
        .collect();
    let client = world.db.pool.get().await?;
    let mut snap = Snapshot::default();
    for row in client
        .query(
            "SELECT status, count(*), count(*) FILTER (WHERE error_count > 0) \
             FROM connections WHERE connection_id = ANY($1) GROUP BY status",
            &[&ids],
        )
        .await?
    {
        snap.by_status.insert(row.get(0), row.get(1));
        snap.erroring += row.get::<_, i64>(2);
    }
    snap.busy_intervals = client
        .query_one(
            "SELECT count(*) FROM busy_intervals WHERE connection_id = ANY($1)",
            &[&ids],
        )
        .await?
        .get(0);
    snap.channels_open = client
        .query_one(
            "SELECT count(*) FROM channels WHERE connection_id = ANY($1) AND closed_at IS NULL",
            &[&ids],
        )
        .await?
        .get(0);
    for row in client
        .query(
            "SELECT event_type, count(*) FROM events WHERE stream = ANY($1) GROUP BY event_type",
            &[&streams],
        )
        .await?
    {
        snap.events.insert(row.get(0), row.get(1));
    }
    drop(client);
    let metrics = crate::metrics::install().render();
    let webhooks = crate::metrics::WEBHOOKS_RECEIVED;
    snap.webhooks_accepted = sum(&metrics, webhooks, &[("outcome", "accepted")]);
    snap.webhooks_duplicate = sum(&metrics, webhooks, &[("outcome", "duplicate")]);
    snap.webhooks_rejected = sum(&metrics, webhooks, &[("outcome", "rejected")]);
    for reason in crate::metrics::REJECTION_REASONS {
        let n = sum(
            &metrics,
            webhooks,
            &[("outcome", "rejected"), ("reason", reason)],
        );
        if n > 0 {
            snap.rejected_by_reason.insert(reason.to_string(), n);
        }
    }
    snap.syncs_started = sum(&metrics, crate::metrics::SYNCS_STARTED, &[]);
    snap.syncs_succeeded = sum(&metrics, crate::metrics::SYNCS_SUCCEEDED, &[]);
    snap.syncs_failed = sum(&metrics, crate::metrics::SYNCS_FAILED, &[]);
    let actors = world.connections.stats();
    snap.restarts = actors.restarts;
    snap.quarantined = actors.quarantined;
    Ok(snap)
}

/// Sums the samples of counter `name` whose labels include every pair in
/// `labels`, from Prometheus text exposition.
pub fn sum(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let all = labels
                .iter()
                .all(|(k, v)| label_text.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            // Counters render as integers or floats ("3" or "3.0").
            all.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum::<f64>() as u64
}

#[cfg(test)]
mod tests {
    use super::sum;

    #[test]
    fn sums_matching_series_only() {
        let text = "# TYPE c counter\n\
                    c{provider=\"google\",outcome=\"duplicate\",reason=\"none\"} 3\n\
                    c{provider=\"graph\",outcome=\"duplicate\",reason=\"none\"} 2\n\
                    c{provider=\"graph\",outcome=\"accepted\",reason=\"none\"} 7\n\
                    c_other 100\n\
                    d 4.0\n";
        assert_eq!(sum(text, "c", &[("outcome", "duplicate")]), 5);
        assert_eq!(sum(text, "c", &[]), 12);
        assert_eq!(sum(text, "d", &[]), 4);
        assert_eq!(sum(text, "missing", &[]), 0);
    }
}
