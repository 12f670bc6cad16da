//! The end-of-run summary: what happened, in numbers an operator can check
//! against the log, the read models and `/metrics`.

use super::accounts::Demoed;
use super::check::Consistency;
use super::database::DEMO_PG_DIR;
use super::stats::Snapshot;
use super::traffic::TrafficReport;
use super::world::World;
use crate::core::ids::CalendarProvider;
use std::collections::BTreeMap;
use std::time::Duration;

pub struct Report<'a> {
    pub world: &'a World,
    pub demoed: &'a [Demoed],
    pub traffic: &'a TrafficReport,
    pub snap: &'a Snapshot,
    pub consistency: &'a Consistency,
    pub final_sync: Duration,
    pub elapsed: Duration,
    pub duration: Duration,
    /// The server stays up after the summary (`--keep-running`).
    pub running: bool,
}

/// Prints one `label  value` line, aligned.
fn line(label: &str, value: impl std::fmt::Display) {
    println!("  {label:<20} {value}");
}

pub fn print(r: &Report<'_>) {
    let s = r.snap;
    let c = r.consistency;
    let google = r
        .demoed
        .iter()
        .filter(|d| d.provider == CalendarProvider::Google)
        .count();
    println!();
    println!(
        "summary ({:.1} s of traffic, {:.1} s in all)",
        r.duration.as_secs_f64(),
        r.elapsed.as_secs_f64()
    );
    line(
        "connections",
        format!(
            "{} ({google} Google, {} Microsoft): {}",
            s.connections(),
            r.demoed.len() - google,
            s.statuses()
        ),
    );
    line("push channels open", s.channels_open);
    line(
        "external events",
        format!(
            "{} in the simulators' calendars; a full read of the sync window returns {} (series expanded)",
            c.stored_events, c.listed_items
        ),
    );
    let free: Vec<String> = c.free.iter().map(|(k, v)| format!("{k} {v}")).collect();
    line(
        "",
        format!(
            "{} block time, {} do not ({})",
            c.expected_busy,
            c.listed_items.saturating_sub(c.expected_busy),
            if free.is_empty() {
                "none".into()
            } else {
                free.join(", ")
            }
        ),
    );
    let zones: Vec<&str> = c.all_day_zones.iter().map(String::as_str).collect();
    line(
        "",
        format!(
            "{} of them all-day, placed by the check's own all-day rule (not core::busy) in {}",
            c.all_day,
            if zones.is_empty() {
                "no zone".into()
            } else {
                zones.join(", ")
            }
        ),
    );
    line(
        "busy intervals",
        format!("{} in the projection", s.busy_intervals),
    );
    let (verdict, relation) = match c.pass() {
        true => ("PASS", "equals"),
        false => ("FAIL", "differs from"),
    };
    line(
        "consistency",
        format!(
            "{verdict}: after a quiet period and a final sync of every connection ({:.1} s), \
             the projection {relation} the busy rules applied to a fresh full read of every calendar \
             ({} expected, {} projected; {} missing, {} extra, {} with other times)",
            r.final_sync.as_secs_f64(),
            c.expected_busy,
            c.actual_busy,
            c.missing.len(),
            c.extra.len(),
            c.moved.len()
        ),
    );
    for problem in c
        .missing
        .iter()
        .map(|m| ("missing", m))
        .chain(c.extra.iter().map(|m| ("extra", m)))
        .chain(c.moved.iter().map(|m| ("other times", m)))
        .take(10)
    {
        line("", format!("{}: {}", problem.0, problem.1));
    }
    let changes: Vec<String> = r
        .traffic
        .changes
        .iter()
        .map(|(k, v)| format!("{v} {k}"))
        .collect();
    line(
        "external changes",
        format!(
            "{} during traffic ({})",
            r.traffic.total_changes(),
            changes.join(", ")
        ),
    );
    line(
        "notifications",
        format!(
            "{} accepted (each committed to the log as notification_accepted before its 2xx); \
             webhooks: {} answered 2xx (channel handshakes included), {} refused{}",
            s.event("notification_accepted"),
            s.webhooks_accepted + s.webhooks_duplicate,
            s.webhooks_rejected,
            refusals(r.world, s),
        ),
    );
    let copies = r
        .world
        .sim
        .deliveries()
        .iter()
        .filter(|d| matches!(d.fault.as_deref(), Some("duplicate" | "replay")))
        .count();
    line(
        "duplicates dropped",
        format!(
            "{} answered `duplicate` and dropped (the simulators sent {copies} duplicated or replayed copies)",
            s.webhooks_duplicate
        ),
    );
    line(
        "syncs",
        format!(
            "{} started, {} succeeded, {} failed; {} sync rounds completed",
            s.syncs_started,
            s.syncs_succeeded,
            s.syncs_failed,
            s.event("sync_round_completed")
        ),
    );
    line(
        "backoffs",
        format!(
            "{} (sync_failed and calendar_sync_failed in the log, during the {:.1} s Google 503 outage); {} connections still erroring{}",
            s.event("sync_failed") + s.event("calendar_sync_failed"),
            r.traffic.outage_len.as_secs_f64(),
            s.erroring,
            if s.erroring == 0 { ": all recovered" } else { "" }
        ),
    );
    line(
        "actor restarts",
        format!(
            "{} (killed: {}); {} quarantined",
            s.restarts,
            if r.traffic.killed.is_empty() {
                "none".into()
            } else {
                r.traffic
                    .killed
                    .iter()
                    .map(|(account, at)| format!("{account} at {at:.1} s"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            s.quarantined
        ),
    );
    let o = &r.consistency.outbound;
    let (created, moved, cancelled) = r.consistency.bookings;
    line(
        "outbound bookings",
        format!(
            "{created} created, {moved} rescheduled, {cancelled} cancelled through the actors; \
             {} live bookings, {} with exactly one external event; {} missing, {} duplicated, \
             {} cancelled but still in a calendar — {}",
            o.live_bookings,
            o.written_once,
            o.missing.len(),
            o.duplicated.len(),
            o.lingering.len(),
            if o.pass() { "PASS" } else { "FAIL" }
        ),
    );
    let total_events: i64 = s.events.values().sum();
    line(
        "event log",
        format!("{total_events} events on the demo's connection streams"),
    );
    print_urls(r.world, r.demoed.first(), r.running);
}

/// ` (unknown_channel 3; deliveries refused, by kind: sync 3)`: why
/// calsync refused, and what the simulators' delivery log says those
/// deliveries were (a Google channel's first `sync` message can arrive
/// before the channel is recorded; it carries no change).
fn refusals(world: &World, s: &Snapshot) -> String {
    if s.rejected_by_reason.is_empty() {
        return String::new();
    }
    let reasons: Vec<String> = s
        .rejected_by_reason
        .iter()
        .map(|(reason, n)| format!("{reason} {n}"))
        .collect();
    let mut kinds: BTreeMap<String, usize> = BTreeMap::new();
    for d in world.sim.deliveries() {
        if d.status.is_some_and(|code| code >= 400) {
            *kinds.entry(d.kind).or_default() += 1;
        }
    }
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
    format!(
        " ({}; deliveries refused, by kind: {})",
        reasons.join(", "),
        kinds.join(", ")
    )
}

/// Where to look. With `running`, the server is up until Ctrl-C.
fn print_urls(world: &World, example: Option<&Demoed>, running: bool) {
    let b = &world.base;
    println!();
    if running {
        println!("calsync is running at {b} (Ctrl-C or SIGTERM to stop):");
    } else {
        println!("calsync served at {b} during the run (--keep-running keeps it up):");
    }
    println!("  {b}/healthz            process up");
    println!("  {b}/readyz             database answering");
    println!("  {b}/metrics            Prometheus counters behind this summary");
    println!(
        "  {b}/admin/status       per-connection health (header: Authorization: Bearer {})",
        world.admin_token
    );
    println!("  {b}/admin/connections  connections; also /admin/flags, /admin/actors");
    println!("  {b}/ui                 the troubleshooter page (sign in with the admin token)");
    if let Some(d) = example {
        let from = chrono::Utc::now().date_naive();
        let to = from + chrono::Days::new(14);
        println!(
            "  {b}/v1/providers/{}/busy?from={from}T00:00:00Z&to={to}T00:00:00Z  one platform provider's busy time (same header)",
            d.platform_provider_id
        );
    }
    match (&world.db.cluster, running) {
        (Some(cluster), true) => println!(
            "  log: DATABASE_URL='{}' calsync log tail -n 20",
            cluster.url(crate::config::defaults::DB_NAME)
        ),
        (Some(_), false) => println!("  log: calsync --pg-dir {DEMO_PG_DIR} log tail -n 20"),
        (None, _) => println!("  log: calsync log tail -n 20   (same DATABASE_URL)"),
    }
}
