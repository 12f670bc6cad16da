//! The demo's bookings: created, rescheduled and cancelled during traffic
//! through the connection actors (as `POST /v1/bookings` would route them),
//! then checked against a fresh read of every calendar — exactly one
//! external event per live booking, none for a cancelled one.

use super::accounts::Demoed;
use super::world::World;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::{BookingId, ConnectionId};
use crate::core::outbound::{Booking, BookingStatus};
use chrono::{Duration as TimeDelta, Utc};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// What the demo asked for, booking by booking.
#[derive(Default)]
pub struct Ledger {
    pub latest: BTreeMap<String, (ConnectionId, Booking)>,
    pub created: usize,
    pub rescheduled: usize,
    pub cancelled: usize,
    steps: u64,
}

/// The outbound verdict after the run.
#[derive(Debug, Clone, Default)]
pub struct OutboundCheck {
    pub live_bookings: usize,
    /// Live bookings with exactly one external event.
    pub written_once: usize,
    pub missing: Vec<String>,
    pub duplicated: Vec<String>,
    /// Cancelled bookings still in a calendar.
    pub lingering: Vec<String>,
}

impl OutboundCheck {
    pub fn pass(&self) -> bool {
        self.missing.is_empty() && self.duplicated.is_empty() && self.lingering.is_empty()
    }
}

impl Ledger {
    /// One booking change: mostly new bookings, some reschedules, a few
    /// cancellations — spread over the connections.
    pub async fn step(&mut self, world: &World, demoed: &[Demoed]) -> anyhow::Result<()> {
        self.steps += 1;
        let n = self.steps;
        let existing: Vec<String> = self
            .latest
            .iter()
            .filter(|(_, (_, b))| b.status == BookingStatus::Confirmed)
            .map(|(k, _)| k.clone())
            .collect();
        let (connection, booking) = match (
            n % 5,
            existing.get((n as usize * 7) % existing.len().max(1)),
        ) {
            (3, Some(key)) => {
                let (id, b) = self.latest[key].clone();
                self.rescheduled += 1;
                (
                    id,
                    Booking {
                        version: b.version + 1,
                        start: b.start + TimeDelta::hours(1),
                        end: b.end + TimeDelta::hours(1),
                        title: format!("{} (moved)", b.title),
                        ..b
                    },
                )
            }
            (4, Some(key)) => {
                let (id, b) = self.latest[key].clone();
                self.cancelled += 1;
                (
                    id,
                    Booking {
                        version: b.version + 1,
                        status: BookingStatus::Cancelled,
                        ..b
                    },
                )
            }
            _ => {
                let Some(d) = demoed.get(n as usize % demoed.len().max(1)) else {
                    return Ok(());
                };
                self.created += 1;
                let start = Utc::now()
                    + TimeDelta::days(3 + (n as i64 % 10))
                    + TimeDelta::hours(n as i64 % 8);
                (
                    d.id,
                    Booking {
                        booking_id: BookingId::parse(format!("demo-{n}"))?,
                        version: 1,
                        status: BookingStatus::Confirmed,
                        start,
                        end: start + TimeDelta::minutes(45),
                        time_zone: "Europe/Berlin".into(),
                        title: format!("Demo booking {n}"),
                        attendees: vec![format!("client{n}@example.com")],
                    },
                )
            }
        };
        // A kill or an outage may refuse the change: the platform retries.
        world
            .connections
            .command(
                connection,
                ConnectionCommand::ApplyBooking(booking.clone()),
                Uuid::new_v4(),
            )
            .await
            .ok();
        self.latest
            .insert(booking.booking_id.to_string(), (connection, booking));
        Ok(())
    }

    /// Re-sends every booking's latest version (a refused one arrives now;
    /// the others are ignored as repeats) and waits until no write is left.
    pub async fn settle(&self, world: &World, within: Duration) -> anyhow::Result<()> {
        for (id, b) in self.latest.values() {
            world
                .connections
                .command(
                    *id,
                    ConnectionCommand::ApplyBooking(b.clone()),
                    Uuid::new_v4(),
                )
                .await
                .ok();
        }
        let started = Instant::now();
        while started.elapsed() < within {
            let client = world.db.pool.get().await?;
            let open: i64 = client
                .query_one(
                    "SELECT count(*) FROM booking_events WHERE booking_id LIKE 'demo-%' \
                     AND state IN ('pending', 'waiting')",
                    &[],
                )
                .await?
                .get(0);
            drop(client);
            if open == 0 {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }

    /// Compares what was asked with what a fresh read of the calendars
    /// found (`ours`: external events per booking id).
    pub fn verify(&self, ours: &BTreeMap<String, usize>) -> OutboundCheck {
        let mut check = OutboundCheck::default();
        for (key, (_, b)) in &self.latest {
            let found = ours.get(key).copied().unwrap_or(0);
            match b.status {
                BookingStatus::Confirmed => {
                    check.live_bookings += 1;
                    match found {
                        1 => check.written_once += 1,
                        0 => check.missing.push(key.clone()),
                        _ => check.duplicated.push(key.clone()),
                    }
                }
                BookingStatus::Cancelled if found > 0 => check.lingering.push(key.clone()),
                BookingStatus::Cancelled => {}
            }
        }
        check
    }
}
