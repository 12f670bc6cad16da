//! `calsync status`: per-connection health from the read models — status,
//! errors, backoff, cursor age and last successful sync per calendar,
//! channel expiry. Reads the database only, so it works without a running
//! server; the live actor view (incarnation, restarts) of a node is in its
//! `GET /admin/status`.

use crate::config::GlobalArgs;
use crate::database::Database;
use crate::store::status::{self, ConnectionStatus};
use chrono::{DateTime, Utc};
use clap::Args;

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Machine-readable output (one JSON document).
    #[arg(long)]
    pub json: bool,
    /// Only this connection.
    #[arg(long, value_name = "ID")]
    pub connection: Option<uuid::Uuid>,
}

pub async fn run(args: StatusArgs, global: &GlobalArgs) -> anyhow::Result<()> {
    let (db, _) = Database::open(&global.settings()?).await?;
    let store = db.store();
    let rows = db
        .run_then_shutdown(async move { Ok(status::load(&store, args.connection).await?) })
        .await?;
    if args.json {
        let doc = serde_json::json!({ "generated_at": Utc::now(), "connections": rows });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", render(&rows, Utc::now()));
    }
    Ok(())
}

/// The human table: one line per connection, one indented line per
/// calendar, and a summary by status.
pub fn render(rows: &[ConnectionStatus], now: DateTime<Utc>) -> String {
    let mut out = format!(
        "{:<36}  {:<21}  {:<9}  {:>4}  {:<14}  {:<14}  LAST ERROR\n",
        "CONNECTION", "STATUS", "PROVIDER", "ERRS", "BACKOFF FOR", "CHANNEL EXPIRY"
    );
    let mut by_status = std::collections::BTreeMap::<&str, usize>::new();
    for r in rows {
        *by_status.entry(r.status.as_str()).or_default() += 1;
        let backoff = r
            .backoff_until
            .filter(|t| *t > now)
            .map_or("-".into(), |t| age(t - now));
        let channel = r.channel_expires_at.map_or("-".into(), |t| {
            if t > now {
                format!("in {}", age(t - now))
            } else {
                "EXPIRED".into()
            }
        });
        // A reason in force first; else the newest error, with its age, so
        // an old error on a healthy connection reads as old.
        let error = match (
            r.needs_reauthorization
                .as_deref()
                .or(r.quarantine_reason.as_deref()),
            r.last_error.as_deref(),
        ) {
            (Some(reason), _) => reason.to_string(),
            (None, Some(e)) => match r.last_error_at {
                Some(at) => format!("{} ago: {e}", age(now - at)),
                // Recorded before error times were kept: say it is over
                // when the connection has recovered since.
                None if r.error_count == 0 => format!("earlier, since recovered: {e}"),
                None => e.to_string(),
            },
            (None, None) => "-".to_string(),
        };
        out.push_str(&format!(
            "{:<36}  {:<21}  {:<9}  {:>4}  {:<14}  {:<14}  {}\n",
            r.connection_id,
            r.status,
            r.provider,
            r.error_count,
            backoff,
            channel,
            truncate(&error, 80)
        ));
        if r.failed_bookings > 0 {
            out.push_str(&format!(
                "    {} booking(s) failed: calsync bookings show / retry\n",
                r.failed_bookings
            ));
        }
        for c in &r.calendars {
            let synced = c.last_success_at.map_or("never synced".into(), |t| {
                format!("synced {} ago", age(now - t))
            });
            let cursor = if c.full_sync_in_progress {
                "full sync in progress"
            } else if c.has_cursor {
                "cursor held"
            } else {
                "no cursor"
            };
            let health = match c.status.as_str() {
                "ok" => String::new(),
                status => {
                    let retry = c
                        .retry_at
                        .filter(|t| *t > now)
                        .map_or(String::new(), |t| format!(", retry in {}", age(t - now)));
                    format!(
                        "; {status} ({} failure(s){retry}): {}",
                        c.failures,
                        truncate(c.last_error.as_deref().unwrap_or("-"), 60)
                    )
                }
            };
            let channel = match (&c.channel_error, c.channel_failures) {
                (Some(e), n) if n > 0 => format!("; channel failing ({n}): {}", truncate(e, 60)),
                _ => String::new(),
            };
            out.push_str(&format!(
                "    {:<40}  {synced}, {cursor}{health}{channel}\n",
                c.calendar_id
            ));
        }
    }
    let summary: Vec<String> = by_status.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    out.push_str(&format!(
        "{} connection(s){}{}\n",
        rows.len(),
        if summary.is_empty() { "" } else { " — " },
        summary.join(", ")
    ));
    out
}

fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::status::CalendarStatus;

    #[test]
    fn renders_status_calendars_and_summary() {
        let now = Utc::now();
        let row = ConnectionStatus {
            connection_id: uuid::Uuid::nil(),
            platform_provider_id: "pp".into(),
            provider: "google".into(),
            status: "backoff".into(),
            error_count: 3,
            last_error: Some("provider unavailable: 503".into()),
            last_error_at: Some(now - chrono::Duration::minutes(3)),
            backoff_until: Some(now + chrono::Duration::seconds(90)),
            needs_reauthorization: None,
            quarantine_reason: None,
            pause_reason: None,
            stream_version: 7,
            updated_at: now,
            calendars: vec![
                CalendarStatus {
                    calendar_id: "primary".into(),
                    has_cursor: true,
                    full_sync_in_progress: false,
                    last_success_at: Some(now - chrono::Duration::minutes(5)),
                    cursor_age_seconds: Some(300),
                    status: "ok".into(),
                    failures: 0,
                    retry_at: None,
                    last_error: None,
                    last_error_at: None,
                    channel_failures: 0,
                    channel_retry_at: None,
                    channel_error: None,
                },
                CalendarStatus {
                    calendar_id: "gone".into(),
                    has_cursor: false,
                    full_sync_in_progress: false,
                    last_success_at: None,
                    cursor_age_seconds: None,
                    status: "unavailable".into(),
                    failures: 2,
                    retry_at: Some(now + chrono::Duration::seconds(50 * 60 + 30)),
                    last_error: Some("not_found (404): notFound".into()),
                    last_error_at: Some(now),
                    channel_failures: 0,
                    channel_retry_at: None,
                    channel_error: None,
                },
            ],
            channel_expires_at: None,
            open_channels: 0,
            pending_outbound_intents: None,
            failed_bookings: 1,
        };
        let row_clone = row.clone();
        let text = render(&[row], now);
        assert!(text.contains("backoff"), "{text}");
        assert!(text.contains("3m ago: provider unavailable: 503"), "{text}");
        assert!(
            text.contains("unavailable (2 failure(s), retry in 50m): not_found (404)"),
            "{text}"
        );
        assert!(text.contains("1 booking(s) failed"), "{text}");
        assert!(text.contains("synced 5m ago, cursor held"), "{text}");
        assert!(text.contains("1 connection(s) — backoff: 1"), "{text}");
        assert_eq!(truncate("ééé", 2), "éé…");

        // An active connection with no errors now: an old error reads as old.
        let mut healthy = row_clone;
        healthy.status = "active".into();
        healthy.error_count = 0;
        healthy.backoff_until = None;
        healthy.last_error = Some("unavailable".into());
        healthy.last_error_at = Some(now - chrono::Duration::hours(5));
        let text = render(std::slice::from_ref(&healthy), now);
        assert!(text.contains("5h ago: unavailable"), "{text}");
        healthy.last_error_at = None;
        let text = render(&[healthy], now);
        assert!(
            text.contains("earlier, since recovered: unavailable"),
            "{text}"
        );
    }
}
