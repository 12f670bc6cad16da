//! The seeded workload: accounts, calendars and connections; then, every
//! few virtual minutes for the whole run, calendar edits, bookings and
//! fault episodes; then quiescence and the final checks.

use super::invariants::{self, GateWindow};
use super::node::Node;
use super::{Outcome, Scale, Stats};
use crate::actors::{ActorSettings, SendError};
use crate::core::decide::ConnectionCommand;
use crate::core::external_change::ExternalChangePolicy;
use crate::core::ids::{
    BookingId, CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use crate::core::outbound::{Booking, BookingStatus};
use crate::core::settings::{Actor, Flag, SettingsCommand};
use crate::providers::AuthSession;
use calsim::{FaultKind, FaultRule, NotificationFaults, Provider, SimConfig};
use chrono::{DateTime, Duration, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;

/// One simulated connection and its account.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: ConnectionId,
    pub provider: CalendarProvider,
    pub email: String,
    pub pp: String,
    /// Calendars that exist at the provider (the first is the destination).
    pub calendars: Vec<String>,
    /// A selected calendar the provider answers 404 for.
    pub missing: Option<String>,
    pub revoked: bool,
    pub paused: bool,
}

/// What the platform last sent for a booking.
#[derive(Debug, Clone)]
pub struct Planned {
    pub pp: String,
    pub version: u64,
    pub cancelled: bool,
    pub start: DateTime<Utc>,
}

/// The host moved or deleted a booking's own event in one calendar, at
/// this version of the booking.
#[derive(Debug, Clone)]
pub struct HostChange {
    pub version: u64,
    pub deleted: bool,
}

/// A fault episode to undo later.
enum Undo {
    Fault(u64),
    Regrant(usize),
    Restart,
    Flag(Flag, bool),
    Production,
    Resume(usize),
}

pub struct World {
    pub rng: StdRng,
    pub node: Node,
    pub accounts: Vec<Account>,
    pub bookings: BTreeMap<String, Planned>,
    pub gates: Vec<GateWindow>,
    pub violations: Vec<String>,
    pub stats: Stats,
    undo: Vec<(DateTime<Utc>, Undo)>,
    next_event: u64,
    /// Bookings the node could not take yet, by (connection, booking).
    redeliver: BTreeMap<(ConnectionId, String), Booking>,
    /// The host's last edit of a booking's own event, by (booking, account
    /// email); forgotten when the platform sends a newer version.
    pub host_changed: BTreeMap<(String, String), HostChange>,
}

pub(crate) fn epoch() -> DateTime<Utc> {
    // A fixed Monday: the same seed, the same calendar dates.
    Utc.with_ymd_and_hms(2027, 1, 4, 6, 0, 0)
        .single()
        .unwrap_or_default()
}

fn sim_config(rng: &mut StdRng, seed: u64) -> SimConfig {
    SimConfig {
        seed,
        push_retry_delay_ms: 500,
        // Short channel lifetimes for some seeds (renewal every minute).
        google_channel_ttl_secs: [120, 3600, 604_800][rng.random_range(0..3)],
        graph_subscription_max_minutes: [60, 4230][rng.random_range(0..2)],
        // The budget invariant reads the whole week's trace.
        log_capacity: 5_000_000,
        ..SimConfig::default()
    }
}

/// How the node's actors are tuned: passivation after 10 minutes idle (the
/// default: a quiet connection is stopped and woken again for every poll),
/// an hour, or never within the run; snapshots every 100 events (the
/// default), every 10 or every 1000.
fn actor_settings(rng: &mut StdRng) -> ActorSettings {
    let minutes = [10u64, 60, 60 * 24 * 365][rng.random_range(0..3)];
    ActorSettings {
        node: "sim".into(),
        idle_timeout: std::time::Duration::from_secs(minutes * 60),
        snapshot_every: [100, 10, 1000][rng.random_range(0..3)],
        ..ActorSettings::default()
    }
}

pub async fn run(seed: u64, scale: Scale) -> anyhow::Result<Outcome> {
    let mut rng = StdRng::seed_from_u64(seed);
    let sim = sim_config(&mut rng, seed);
    let actors = actor_settings(&mut rng);
    let node = Node::new(seed, epoch(), sim, actors).await?;
    let mut w = World {
        rng,
        node,
        accounts: Vec::new(),
        bookings: BTreeMap::new(),
        gates: Vec::new(),
        violations: Vec::new(),
        stats: Stats::default(),
        undo: Vec::new(),
        next_event: 0,
        redeliver: BTreeMap::new(),
        host_changed: BTreeMap::new(),
    };
    w.node.external_change = if w.rng.random_bool(0.5) {
        ExternalChangePolicy::Restore
    } else {
        ExternalChangePolicy::Notify
    };
    w.set_flags(true).await?;
    w.node.start().await?;
    w.create_accounts(scale.connections).await?;
    let faults = NotificationFaults {
        drop_rate: w.rng.random_range(0.0..0.2),
        duplicate_rate: w.rng.random_range(0.0..0.2),
        reorder_window_ms: w.rng.random_range(0..500),
        ..NotificationFaults::default()
    };
    w.node
        .sim
        .set_notification_faults(Provider::Google, faults.clone());
    w.node.sim.set_notification_faults(Provider::Graph, faults);

    let end = w.node.now() + Duration::days(i64::from(scale.days));
    let mut hour_from = w.node.now();
    let watch = w.node.watch.clone();
    while w.node.now() < end {
        let step = w.rng.random_range(5..=20);
        // A node that spins never lets virtual time reach the next step:
        // the watch ends the seed with a verdict instead of a hang.
        let stepped = tokio::select! {
            biased;
            _ = watch.tripped() => false,
            _ = async {
                tokio::time::sleep(std::time::Duration::from_secs(step * 60)).await;
                w.step().await;
            } => true,
        };
        if !stepped {
            break;
        }
        invariants::continuous(&mut w);
        if w.node.now() - hour_from >= Duration::hours(1) {
            invariants::hourly(&mut w, hour_from);
            hour_from = w.node.now();
        }
        if !w.violations.is_empty() {
            // Fail fast: the first broken invariant is the one to report,
            // and a loop left running only makes the seed slow to replay.
            break;
        }
    }
    let quiet = w.violations.is_empty()
        && watch.report().is_none()
        && tokio::select! {
            biased;
            _ = watch.tripped() => false,
            _ = w.quiesce() => true,
        };
    if let Some(spin) = watch.report() {
        w.violations.push(format!("{}: {spin}", w.node.now()));
        // Stop the spinning actors; what they logged is the evidence.
        w.node.crash();
    }
    let (events, requests) = if quiet && w.violations.is_empty() {
        invariants::at_quiescence(&mut w).await
    } else {
        (
            w.node.store.all_events().unwrap_or_default(),
            w.node.sim.requests(),
        )
    };
    if let Ok(dir) = std::env::var("CALSYNC_SIMULATE_DUMP") {
        super::dump(std::path::Path::new(&dir), seed, &events, &requests)?;
    }
    w.stats.events = events.len();
    w.stats.host_edits_noticed = events
        .iter()
        .filter(|e| e.event_type == "booking_externally_changed")
        .count();
    w.stats.provider_calls = requests.len();
    w.stats.notifications_acked = w
        .node
        .push
        .acked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len();
    // Down, and unhooked from the simulators' pushes: the push target holds
    // the node's actors, which hold the simulators, which hold the push
    // target — a cycle that kept every finished seed's world alive (40
    // seeds grew to 7.6 GB).
    w.node.crash();
    Ok(Outcome {
        seed,
        scale_connections: scale.connections,
        scale_days: scale.days,
        digest: super::digest(&events, &requests),
        violations: std::mem::take(&mut w.violations),
        stats: w.stats,
    })
}

fn session(client_id: String, client_secret: String, refresh_token: String) -> AuthSession {
    AuthSession {
        client_id,
        client_secret,
        refresh_token,
        access_token: None,
        access_expires_at: None,
        refresh_token_rotated: false,
        access_token_refreshed: false,
    }
}

impl World {
    fn actor() -> Actor {
        Actor::parse("simulation").unwrap_or_else(|_| unreachable!("a valid actor name"))
    }

    async fn settings(&mut self, command: SettingsCommand) {
        if let Err(e) = self.node.settings.apply(command, Self::actor()).await {
            self.violations
                .push(format!("settings change refused: {e}"));
        }
    }

    async fn set_flags(&mut self, on: bool) -> anyhow::Result<()> {
        for flag in Flag::ALL {
            self.settings(SettingsCommand::SetFlag {
                flag,
                enabled: on,
                reason: "simulation".into(),
            })
            .await;
        }
        Ok(())
    }

    fn grant(&self, a: &Account) -> AuthSession {
        match a.provider {
            CalendarProvider::Google => {
                let g = self.node.sim.google().create_account(&a.email);
                session(g.client_id, g.client_secret, g.refresh_token)
            }
            CalendarProvider::Microsoft => {
                let m = self.node.sim.graph().create_account(&a.email);
                session(m.client_id, m.client_secret, m.refresh_token)
            }
        }
    }

    async fn create_accounts(&mut self, n: usize) -> anyhow::Result<()> {
        for i in 0..n {
            let provider = if i % 2 == 0 {
                CalendarProvider::Google
            } else {
                CalendarProvider::Microsoft
            };
            let email = match provider {
                CalendarProvider::Google => format!("user{i}@example.com"),
                CalendarProvider::Microsoft => format!("user{i}@contoso.com"),
            };
            // Pairs of connections share a platform provider now and then.
            let pp = format!("pp-{}", if i % 5 == 4 { i - 1 } else { i });
            let mut calendars = vec!["primary".to_string()];
            let mut missing = None;
            let google = self.node.sim.google();
            match provider {
                CalendarProvider::Google => {
                    google.create_account(&email);
                    if self.rng.random_bool(0.5) {
                        if let Ok(id) = google.create_calendar(&email, "Team", "Europe/Berlin") {
                            calendars.push(id);
                        }
                    }
                    if self.rng.random_bool(0.15) {
                        missing = Some(format!("gone{i}@group.calendar.google.com"));
                    }
                }
                CalendarProvider::Microsoft => {
                    self.node.sim.graph().create_account(&email);
                }
            }
            let id = ConnectionId::from_uuid(uuid::Uuid::from_u128(
                (seed_bits(&mut self.rng) << 16) | i as u128,
            ));
            let account = Account {
                id,
                provider,
                email: email.clone(),
                pp: pp.clone(),
                calendars: calendars.clone(),
                missing: missing.clone(),
                revoked: false,
                paused: false,
            };
            for _ in 0..self.rng.random_range(1..4) {
                self.edit_calendar(&account, false);
            }
            let grant = self.grant(&account);
            self.node.vault.save(&self.node.store, id, &grant).await?;
            let mut selected = calendars.clone();
            selected.extend(missing);
            let create = ConnectionCommand::Create {
                platform_provider_id: PlatformProviderId::parse(pp)?,
                provider,
                account: ExternalAccount::parse(email)?,
                calendars: selected
                    .iter()
                    .map(|c| CalendarId::parse(c.clone()))
                    .collect::<Result<_, _>>()?,
                destination_calendar: Some(CalendarId::parse("primary")?),
            };
            self.command(id, create).await;
            self.accounts.push(account);
        }
        Ok(())
    }

    /// Sends `command`; `false` when the node could not take it now (down,
    /// busy, database unavailable, actor stopped) and the platform would
    /// send it again. Other refusals (a paused or removed connection) are
    /// part of the run; only commits matter to the invariants.
    async fn command(&mut self, id: ConnectionId, command: ConnectionCommand) -> bool {
        let correlation = uuid::Uuid::from_u128(self.rng.random());
        let Ok(connections) = self.node.connections() else {
            *self.stats.refusals.entry("node_down".into()).or_default() += 1;
            return false;
        };
        match connections.command(id, command, correlation).await {
            Ok(_) => true,
            Err(e) => {
                *self.stats.refusals.entry(e.code().into()).or_default() += 1;
                !matches!(
                    e,
                    SendError::Busy { .. }
                        | SendError::Unavailable(_)
                        | SendError::Stopped
                        | SendError::Fenced
                )
            }
        }
    }

    /// Sends again the bookings the node could not take (the platform
    /// retries a 503), newest version of each only.
    async fn redeliver(&mut self) {
        for ((target, _), booking) in std::mem::take(&mut self.redeliver) {
            self.deliver(target, booking).await;
        }
    }

    async fn deliver(&mut self, target: ConnectionId, booking: Booking) {
        let key = (target, booking.booking_id.as_str().to_string());
        if self
            .command(target, ConnectionCommand::ApplyBooking(booking.clone()))
            .await
        {
            self.redeliver.remove(&key);
        } else {
            self.stats.redeliveries += 1;
            self.redeliver.insert(key, booking);
        }
    }

    /// Creates, moves or deletes one event in one of `a`'s calendars.
    fn edit_calendar(&mut self, a: &Account, may_delete: bool) {
        self.next_event += 1;
        let n = self.next_event;
        let day = self.rng.random_range(0..14);
        let hour = self.rng.random_range(7..19);
        let start = self.node.now() + Duration::days(day);
        let start = start
            .date_naive()
            .and_hms_opt(hour, 0, 0)
            .map(|t| t.and_utc())
            .unwrap_or(start);
        let minutes = [30, 60, 90][self.rng.random_range(0..3)];
        let end = start + Duration::minutes(minutes);
        let kind = self.rng.random_range(0..10);
        let calendar = a.calendars[self.rng.random_range(0..a.calendars.len())].clone();
        match a.provider {
            CalendarProvider::Google => {
                let google = self.node.sim.google();
                // The user's own live events (ids only: rendering every
                // stored event per edit was a tenth of a run).
                let mut existing: Vec<String> = Vec::new();
                let _ = google.visit_live_event_ids(&a.email, &calendar, |id| {
                    if crate::core::busy::parse_booking_tag(id).is_none() {
                        existing.push(id.to_string());
                    }
                });
                if may_delete && kind < 2 && !existing.is_empty() {
                    let victim = &existing[self.rng.random_range(0..existing.len())];
                    let _ = google.delete_event(&a.email, &calendar, victim);
                    return;
                }
                let mut event = json!({"summary": format!("e{n}"),
                    "start": {"dateTime": start.to_rfc3339()},
                    "end": {"dateTime": end.to_rfc3339()}});
                match kind {
                    2 => event["transparency"] = json!("transparent"),
                    3 => {
                        event["start"] = json!({"date": start.date_naive().to_string()});
                        event["end"] =
                            json!({"date": (start.date_naive() + Duration::days(1)).to_string()});
                    }
                    4 => {
                        event["attendees"] =
                            json!([{"email": a.email, "self": true, "responseStatus": "declined"}])
                    }
                    5 if !existing.is_empty() => {
                        event["id"] = json!(existing[self.rng.random_range(0..existing.len())]);
                    }
                    _ => {}
                }
                let _ = google.upsert_event(&a.email, &calendar, event);
            }
            CalendarProvider::Microsoft => {
                let graph = self.node.sim.graph();
                let mut existing: Vec<String> = Vec::new();
                graph.visit_live_transaction_ids(&a.email, |id, tag| {
                    if tag.and_then(crate::core::busy::parse_booking_tag).is_none() {
                        existing.push(id.to_string());
                    }
                });
                if may_delete && kind < 2 && !existing.is_empty() {
                    let victim = &existing[self.rng.random_range(0..existing.len())];
                    let _ = graph.delete_event(&a.email, victim);
                    return;
                }
                let fmt = "%Y-%m-%dT%H:%M:%S";
                let mut event = json!({"subject": format!("e{n}"),
                    "start": {"dateTime": start.format(fmt).to_string(), "timeZone": "UTC"},
                    "end": {"dateTime": end.format(fmt).to_string(), "timeZone": "UTC"}});
                match kind {
                    2 => event["showAs"] = json!("free"),
                    3 => {
                        let day = start.date_naive();
                        event["isAllDay"] = json!(true);
                        event["start"] =
                            json!({"dateTime": format!("{day}T00:00:00"), "timeZone": "UTC"});
                        event["end"] = json!({"dateTime": format!("{}T00:00:00", day + Duration::days(1)), "timeZone": "UTC"});
                    }
                    5 if !existing.is_empty() => {
                        let id = existing[self.rng.random_range(0..existing.len())].clone();
                        let _ = graph.update_event(
                            &a.email,
                            &id,
                            json!({"start": event["start"], "end": event["end"]}),
                        );
                        return;
                    }
                    _ => {}
                }
                let _ = graph.create_event(&a.email, event);
            }
        }
        self.stats.edits += 1;
    }

    /// The host moves (by one to three hours) or deletes one of calsync's
    /// own events in their calendar — the two-way case of
    /// `[outbound] on_external_change`.
    fn host_edits_a_booking(&mut self) {
        let a = self.accounts[self.rng.random_range(0..self.accounts.len())].clone();
        let ours = invariants::booking_events(self, a.provider, &a.email);
        if ours.is_empty() {
            return;
        }
        let (booking, event_id) = ours[self.rng.random_range(0..ours.len())].clone();
        let Some(planned) = self.bookings.get(&booking).cloned() else {
            return;
        };
        // Hosts edit upcoming bookings; what lies behind the sync window's
        // start is not watched (docs/PLATFORM_EVENTS.md).
        if planned.start < self.node.now() + Duration::hours(2) {
            return;
        }
        let deleted = self.rng.random_bool(0.5);
        let start = planned.start + Duration::hours(self.rng.random_range(1..4));
        let end = start + Duration::minutes(45);
        let done = match (a.provider, deleted) {
            (CalendarProvider::Google, true) => self
                .node
                .sim
                .google()
                .delete_event(&a.email, "primary", &event_id)
                .is_ok(),
            (CalendarProvider::Google, false) => self
                .node
                .sim
                .google()
                .patch_event(
                    &a.email,
                    "primary",
                    &event_id,
                    json!({"start": {"dateTime": start.to_rfc3339()},
                           "end": {"dateTime": end.to_rfc3339()}}),
                )
                .is_ok(),
            (CalendarProvider::Microsoft, true) => self
                .node
                .sim
                .graph()
                .delete_event(&a.email, &event_id)
                .is_ok(),
            (CalendarProvider::Microsoft, false) => {
                let fmt = "%Y-%m-%dT%H:%M:%S";
                self.node
                    .sim
                    .graph()
                    .update_event(
                        &a.email,
                        &event_id,
                        json!({"start": {"dateTime": start.format(fmt).to_string(), "timeZone": "UTC"},
                               "end": {"dateTime": end.format(fmt).to_string(), "timeZone": "UTC"}}),
                    )
                    .is_ok()
            }
        };
        if done {
            self.host_changed.insert(
                (booking, a.email.clone()),
                HostChange {
                    version: planned.version,
                    deleted,
                },
            );
            self.stats.host_edits += 1;
        }
    }

    /// One booking change for a random platform provider.
    async fn book(&mut self) {
        let a = self.accounts[self.rng.random_range(0..self.accounts.len())].clone();
        let reuse = !self.bookings.is_empty() && self.rng.random_bool(0.4);
        let (id, planned) = if reuse {
            let keys: Vec<String> = self.bookings.keys().cloned().collect();
            let id = keys[self.rng.random_range(0..keys.len())].clone();
            let mut p = self.bookings[&id].clone();
            p.version += 1;
            if self.rng.random_bool(0.4) {
                p.cancelled = !p.cancelled;
            } else {
                p.start += Duration::hours(self.rng.random_range(-3..4));
            }
            (id, p)
        } else {
            let id = format!("bk{}", self.bookings.len());
            let start = self.node.now() + Duration::days(self.rng.random_range(1..10));
            let start = start
                .date_naive()
                .and_hms_opt(self.rng.random_range(8..18), 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or(start);
            let p = Planned {
                pp: a.pp.clone(),
                version: 1,
                cancelled: false,
                start,
            };
            (id, p)
        };
        let Ok(booking_id) = BookingId::parse(id.clone()) else {
            return;
        };
        let booking = Booking {
            booking_id,
            version: planned.version,
            status: if planned.cancelled {
                BookingStatus::Cancelled
            } else {
                BookingStatus::Confirmed
            },
            start: planned.start,
            end: planned.start + Duration::minutes(45),
            time_zone: "Europe/Berlin".into(),
            title: format!("Booking {id}"),
            attendees: vec!["client@example.com".into()],
        };
        // The platform API's fan-out: every connection of the provider.
        let targets: Vec<ConnectionId> = self
            .accounts
            .iter()
            .filter(|x| x.pp == planned.pp)
            .map(|x| x.id)
            .collect();
        for target in targets {
            self.deliver(target, booking.clone()).await;
        }
        self.host_changed.retain(|(b, _), _| *b != id);
        self.bookings.insert(id, planned);
        self.stats.bookings += 1;
    }

    async fn step(&mut self) {
        let now = self.node.now();
        // Undo what is due.
        let due: Vec<Undo> = {
            let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.undo)
                .into_iter()
                .partition(|(at, _)| *at <= now);
            self.undo = keep;
            due.into_iter().map(|(_, u)| u).collect()
        };
        for undo in due {
            self.apply_undo(undo).await;
        }
        self.redeliver().await;
        for i in 0..self.accounts.len() {
            if self.rng.random_bool(0.04) {
                let a = self.accounts[i].clone();
                self.edit_calendar(&a, true);
            }
        }
        for _ in 0..self.rng.random_range(0..3) {
            self.book().await;
        }
        if self.rng.random_bool(0.05) {
            self.host_edits_a_booking();
        }
        if self.rng.random_bool(0.06) {
            self.episode().await;
        }
    }

    async fn apply_undo(&mut self, undo: Undo) {
        match undo {
            Undo::Fault(id) => {
                self.node.sim.remove_fault(id);
            }
            Undo::Regrant(i) => {
                self.regrant(i).await;
            }
            Undo::Restart => {
                if self.node.connections.is_none() && self.node.start().await.is_err() {
                    self.violations.push("the node could not restart".into());
                }
            }
            Undo::Flag(flag, on) => {
                self.settings(SettingsCommand::SetFlag {
                    flag,
                    enabled: on,
                    reason: "simulation".into(),
                })
                .await;
                if flag == Flag::SyncEnabled {
                    // Overlapping episodes may have opened several windows;
                    // the flag is on again from now, so all of them end.
                    self.close_gate_windows(None, "sync_enabled off");
                }
            }
            Undo::Production => {
                self.settings(SettingsCommand::SetProductionMode {
                    enabled: false,
                    reason: "simulation".into(),
                })
                .await;
                let now = self.node.now();
                for w in self.gates.iter_mut() {
                    if w.to.is_none() && w.why.starts_with("not allowlisted") {
                        w.to = Some(now);
                    }
                }
            }
            Undo::Resume(i) => {
                let id = self.accounts[i].id;
                if self.command(id, ConnectionCommand::Resume).await {
                    self.accounts[i].paused = false;
                    self.close_gate_windows(Some(id), "paused");
                } else {
                    // The owner presses "resume" again when it failed.
                    let later = self.node.now() + Duration::minutes(5);
                    self.undo.push((later, Undo::Resume(i)));
                }
            }
        }
    }

    /// The account's owner connects again. Like a real client, it goes
    /// through the front door and tries again later when that fails (the
    /// node is down, or the actor died between storing the secret and
    /// recording it): a grant stored behind calsync's back would leave the
    /// connection waiting for a re-authorisation it never hears of.
    async fn regrant(&mut self, i: usize) -> bool {
        let a = self.accounts[i].clone();
        if !a.revoked {
            return true;
        }
        let grant = self.grant(&a);
        let stored = match self.node.connections() {
            Ok(connections) => connections.save_credentials(a.id, &grant).await.is_ok(),
            Err(_) => false,
        };
        if stored {
            self.accounts[i].revoked = false;
        } else {
            let later = self.node.now() + Duration::minutes(5);
            self.undo.push((later, Undo::Regrant(i)));
        }
        stored
    }

    /// Opens a window in which `id` (or every connection) is gated.
    fn open_gate_window(&mut self, id: Option<ConnectionId>, why: &str) {
        self.gates.push(GateWindow {
            connection: id,
            from: self.node.now(),
            to: None,
            why: why.to_string(),
        });
    }

    /// Ends every open window of `id` opened for `why`: the gate it models
    /// is open again from now.
    fn close_gate_windows(&mut self, id: Option<ConnectionId>, why: &str) {
        let now = self.node.now();
        for w in self
            .gates
            .iter_mut()
            .filter(|w| w.connection == id && w.why == why && w.to.is_none())
        {
            w.to = Some(now);
        }
    }

    async fn episode(&mut self) {
        self.stats.fault_episodes += 1;
        let now = self.node.now();
        let i = self.rng.random_range(0..self.accounts.len());
        let a = self.accounts[i].clone();
        let provider = match a.provider {
            CalendarProvider::Google => Provider::Google,
            CalendarProvider::Microsoft => Provider::Graph,
        };
        let minutes =
            |rng: &mut StdRng, lo: i64, hi: i64| Duration::minutes(rng.random_range(lo..hi));
        match self.rng.random_range(0..11) {
            0 => {
                let id = self.node.sim.add_fault(FaultRule {
                    provider,
                    endpoint: None,
                    account: None,
                    path: None,
                    body_contains: None,
                    kind: FaultKind::ErrorRate {
                        probability: 0.3,
                        code: 503,
                        retry_after: None,
                        reason: None,
                    },
                    remaining: None,
                });
                let until = now + minutes(&mut self.rng, 10, 40);
                self.undo.push((until, Undo::Fault(id)));
            }
            1 => {
                let id = self.node.sim.add_fault(FaultRule {
                    provider,
                    endpoint: None,
                    account: Some(a.email.clone()),
                    path: None,
                    body_contains: None,
                    kind: FaultKind::Status {
                        code: 429,
                        retry_after: Some(30.0),
                        reason: Some("rateLimitExceeded".into()),
                    },
                    remaining: None,
                });
                let until = now + minutes(&mut self.rng, 5, 20);
                self.undo.push((until, Undo::Fault(id)));
            }
            2 => {
                self.node.sim.add_fault(FaultRule {
                    provider,
                    endpoint: Some(match provider {
                        Provider::Google => "events.insert".into(),
                        Provider::Graph => "events.create".into(),
                    }),
                    account: None,
                    path: None,
                    body_contains: None,
                    kind: FaultKind::CreatedButResponseLost { status: None },
                    remaining: Some(1),
                });
            }
            3 => match a.provider {
                CalendarProvider::Google => self.node.sim.google().invalidate_sync_tokens(&a.email),
                CalendarProvider::Microsoft => {
                    self.node.sim.graph().invalidate_delta_tokens(&a.email)
                }
            },
            4 if !a.revoked => {
                match a.provider {
                    CalendarProvider::Google => self.node.sim.google().revoke_grant(&a.email),
                    CalendarProvider::Microsoft => self.node.sim.graph().revoke_grant(&a.email),
                }
                self.accounts[i].revoked = true;
                let until = now + minutes(&mut self.rng, 30, 240);
                self.undo.push((until, Undo::Regrant(i)));
            }
            5 => {
                if let Ok(c) = self.node.connections() {
                    let n = self.rng.random_range(1..4);
                    let ids: Vec<ConnectionId> = (0..n)
                        .map(|_| self.accounts[self.rng.random_range(0..self.accounts.len())].id)
                        .collect();
                    for id in ids {
                        if c.kill(id) {
                            self.stats.kills += 1;
                        }
                    }
                }
            }
            6 if self.node.connections.is_some() => {
                self.node.crash();
                self.stats.crashes += 1;
                let until = now + minutes(&mut self.rng, 1, 10);
                self.undo.push((until, Undo::Restart));
            }
            7 => {
                let flag = Flag::ALL[self.rng.random_range(0..3)];
                self.settings(SettingsCommand::SetFlag {
                    flag,
                    enabled: false,
                    reason: "simulation".into(),
                })
                .await;
                self.stats.settings_toggles += 1;
                if flag == Flag::SyncEnabled {
                    self.open_gate_window(None, "sync_enabled off");
                }
                let until = now + minutes(&mut self.rng, 10, 90);
                self.undo.push((until, Undo::Flag(flag, true)));
            }
            8 => {
                // Production mode with only some connections listed.
                self.settings(SettingsCommand::AllowProvider {
                    provider: CalendarProvider::Google,
                    reason: "simulation".into(),
                })
                .await;
                for x in self.accounts.clone() {
                    let listed =
                        x.provider == CalendarProvider::Google && self.rng.random_bool(0.5);
                    let command = if listed {
                        SettingsCommand::AllowConnection {
                            connection_id: x.id,
                            reason: "simulation".into(),
                        }
                    } else {
                        SettingsCommand::UnlistConnection {
                            connection_id: x.id,
                            reason: "simulation".into(),
                        }
                    };
                    self.settings(command).await;
                }
                self.settings(SettingsCommand::SetProductionMode {
                    enabled: true,
                    reason: "simulation".into(),
                })
                .await;
                self.stats.settings_toggles += 1;
                let state = self.node.settings.current();
                // An episode overlapping an earlier one re-draws the lists:
                // the earlier windows end now, the new ones start.
                for w in self.gates.iter_mut() {
                    if w.to.is_none() && w.why.starts_with("not allowlisted") {
                        w.to = Some(now);
                    }
                }
                for x in self.accounts.clone() {
                    let open = state.provider_allowlisted(x.provider)
                        && state.connection_allowlisted(x.id);
                    if !open {
                        self.gates.push(GateWindow {
                            connection: Some(x.id),
                            from: now,
                            to: None,
                            why: "not allowlisted (production)".into(),
                        });
                    }
                }
                let until = now + minutes(&mut self.rng, 20, 120);
                self.undo.push((until, Undo::Production));
            }
            9 if !a.paused => {
                let paused = self
                    .command(
                        a.id,
                        ConnectionCommand::Pause {
                            reason: "simulation".into(),
                        },
                    )
                    .await;
                // A refused pause may still have landed (the reply was what
                // failed), so the resume is scheduled either way; the gate
                // is only checked when the pause is known to hold.
                self.accounts[i].paused = true;
                if paused {
                    self.open_gate_window(Some(a.id), "paused");
                }
                let until = now + minutes(&mut self.rng, 10, 120);
                self.undo.push((until, Undo::Resume(i)));
            }
            10 => {
                let id = self.node.sim.add_fault(FaultRule {
                    provider,
                    endpoint: Some("*".into()),
                    account: Some(a.email.clone()),
                    path: None,
                    body_contains: None,
                    kind: FaultKind::Latency {
                        ms: self.rng.random_range(500..5000),
                    },
                    remaining: None,
                });
                let until = now + minutes(&mut self.rng, 10, 60);
                self.undo.push((until, Undo::Fault(id)));
            }
            _ => {}
        }
    }

    /// Everything undone, every gate open, every connection asked to sync;
    /// then two virtual hours for the node to settle.
    async fn quiesce(&mut self) {
        self.node.sim.clear_faults();
        if self.node.connections.is_none() {
            let _ = self.node.start().await;
        }
        // Undo everything still pending; what fails (an actor restarting)
        // queues itself again, so a few rounds a virtual minute apart
        // drain it.
        for _ in 0..10 {
            let undo: Vec<Undo> = std::mem::take(&mut self.undo)
                .into_iter()
                .map(|(_, u)| u)
                .collect();
            if undo.is_empty() {
                break;
            }
            for u in undo {
                self.apply_undo(u).await;
            }
            tokio::time::sleep(std::time::Duration::from_secs(60)).await;
        }
        if !self.undo.is_empty() {
            self.violations.push(format!(
                "{} undo steps still failing at quiescence",
                self.undo.len()
            ));
        }
        self.set_flags(true).await.ok();
        self.close_gate_windows(None, "sync_enabled off");
        if let Ok(c) = self.node.connections() {
            let c = c.clone();
            for a in self.accounts.clone() {
                let _ = c.lift_quarantine(a.id).await;
                let _ = c
                    .command(a.id, ConnectionCommand::RequestSync, uuid::Uuid::nil())
                    .await;
            }
        }
        self.redeliver().await;
        tokio::time::sleep(std::time::Duration::from_secs(2 * 3600)).await;
        if let Ok(c) = self.node.connections() {
            let c = c.clone();
            for a in self.accounts.clone() {
                for _ in 0..600 {
                    if c.quiet(a.id).await.unwrap_or(true) {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
            }
        }
    }
}

fn seed_bits(rng: &mut StdRng) -> u128 {
    u128::from(rng.random::<u64>())
}
