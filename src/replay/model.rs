//! The read models in memory: [`RowChange`]s applied to maps keyed by
//! primary key, with exactly the semantics of the SQL in
//! `store::projections` (upsert by key, delete only the owner's row, sweep
//! and keep-only by connection and calendar). Replay folds the whole log
//! into this, then writes each table with one `COPY`.

use super::ReplayError;
use crate::core::ids::ConnectionId;
use crate::core::projection::{
    BookingRow, BusyRow, CalendarRow, ChannelRow, ConnectionRow, IgnoredRow, RowChange,
};
use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use std::hash::BuildHasher;

/// Hash maps and sets of the replay state. Replay hashes a few million
/// short string keys; SipHash was about 9% of its CPU samples. foldhash is
/// randomly seeded per map, so keys from the log cannot be chosen to
/// collide.
pub type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
pub type HashSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;

/// `busy_intervals`' primary key: connection, calendar, external event id.
pub type BusyKey = (ConnectionId, String, String);

#[derive(Debug, Default)]
pub struct Model {
    pub connections: HashMap<ConnectionId, ConnectionRow>,
    pub calendars: HashMap<ConnectionId, Vec<CalendarRow>>,
    /// `busy_intervals` rows, in slots reused after a removal (`None`:
    /// free). Rows are found by key through `busy_index`, which hashes the
    /// row's own key columns: a busy row's key is never copied (copies of
    /// the three strings were most of the fold's allocations).
    busy: Vec<Option<BusyRow>>,
    free_busy: Vec<usize>,
    busy_index: hashbrown::HashTable<usize>,
    busy_hasher: foldhash::fast::RandomState,
    /// `ignored_events` by connection, then (calendar, event id).
    pub ignored: HashMap<ConnectionId, BTreeMap<(String, String), IgnoredRow>>,
    /// `booking_events` by connection, then booking id.
    pub bookings: HashMap<ConnectionId, BTreeMap<String, BookingRow>>,
    /// `channels` by channel id, with the row's `closed_at`.
    pub channels: HashMap<String, (ChannelRow, Option<DateTime<Utc>>)>,
    /// The busy rows (slots) each connection currently owns (for sweeps).
    busy_by_connection: HashMap<ConnectionId, HashSet<usize>>,
    /// Keys touched since tracking began (the swap's catch-up rewrites
    /// only these in the shadow tables).
    dirty: Option<Dirty>,
}

/// Rows changed since tracking began.
#[derive(Debug, Default, Clone)]
pub struct Dirty {
    pub connections: HashSet<ConnectionId>,
    pub busy: HashSet<BusyKey>,
    pub channels: HashSet<String>,
}

impl Dirty {
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty() && self.busy.is_empty() && self.channels.is_empty()
    }
}

impl Model {
    /// Starts recording which rows change.
    pub fn track_changes(&mut self) {
        self.dirty.get_or_insert_with(Dirty::default);
    }

    /// The rows changed since the last call (or since tracking began).
    pub fn take_dirty(&mut self) -> Dirty {
        self.dirty.as_mut().map(std::mem::take).unwrap_or_default()
    }

    pub fn busy_rows(&self) -> usize {
        self.busy_index.len()
    }

    /// Every busy row.
    pub fn busy(&self) -> impl Iterator<Item = &BusyRow> {
        self.busy.iter().flatten()
    }

    /// The busy row with primary key `key`.
    pub fn busy_row(&self, key: &BusyKey) -> Option<&BusyRow> {
        self.find_busy(key.0, &key.1, &key.2)
            .and_then(|slot| self.busy[slot].as_ref())
    }

    /// Variants added to `RowChange` by new projections land in the last
    /// arm until replay learns them: refusing beats a silently wrong rebuild.
    #[allow(unreachable_patterns)]
    ///
    /// Changes are taken by value: rows move into the maps, never copied.
    pub fn apply(&mut self, changes: Vec<RowChange>) -> Result<(), ReplayError> {
        for change in changes {
            match change {
                RowChange::UpsertConnection(row) => {
                    self.touch_connection(row.connection_id);
                    self.connections.insert(row.connection_id, row);
                }
                RowChange::ReplaceCalendars {
                    connection_id,
                    rows,
                } => {
                    self.touch_connection(connection_id);
                    self.calendars.insert(connection_id, rows);
                }
                RowChange::UpsertBusy(row) => self.upsert_busy(row),
                RowChange::UpsertIgnored(row) => {
                    self.touch_connection(row.connection_id);
                    self.ignored.entry(row.connection_id).or_default().insert(
                        (row.calendar_id.clone(), row.external_event_id.clone()),
                        row,
                    );
                }
                RowChange::DeleteIgnored {
                    connection_id,
                    calendar_id,
                    external_event_id,
                } => {
                    if let Some(rows) = self.ignored.get_mut(&connection_id) {
                        if rows.remove(&(calendar_id, external_event_id)).is_some() {
                            self.touch_connection(connection_id);
                        }
                    }
                }
                RowChange::DeleteBusy {
                    connection_id,
                    calendar_id,
                    external_event_id,
                } => {
                    if let Some(slot) =
                        self.find_busy(connection_id, &calendar_id, &external_event_id)
                    {
                        self.remove_busy(slot);
                    }
                }
                RowChange::SweepBusy {
                    connection_id,
                    calendar_id,
                    below_generation,
                } => {
                    self.remove_ignored_where(connection_id, |r| {
                        r.calendar_id == calendar_id && r.generation < below_generation
                    });
                    self.remove_busy_where(connection_id, |r| {
                        r.calendar_id == calendar_id && r.generation < below_generation
                    })
                }
                RowChange::KeepOnlyCalendars {
                    connection_id,
                    calendars,
                } => {
                    self.remove_ignored_where(connection_id, |r| {
                        !calendars.contains(&r.calendar_id)
                    });
                    self.remove_busy_where(connection_id, |r| !calendars.contains(&r.calendar_id))
                }
                RowChange::UpsertBooking(row) => {
                    self.touch_connection(row.connection_id);
                    self.bookings
                        .entry(row.connection_id)
                        .or_default()
                        .insert(row.booking_id.clone(), row);
                }
                RowChange::UpsertChannel(row) => {
                    self.touch_channel(&row.channel_id);
                    self.channels.insert(row.channel_id.clone(), (row, None));
                }
                // Both are UPDATEs: a channel the table lacks stays absent.
                RowChange::RenewChannel {
                    channel_id,
                    expires_at,
                } => {
                    self.touch_channel(&channel_id);
                    if let Some((row, _)) = self.channels.get_mut(&channel_id) {
                        row.expires_at = expires_at;
                    }
                }
                RowChange::CloseChannel {
                    channel_id,
                    closed_at,
                } => {
                    self.touch_channel(&channel_id);
                    if let Some((_, closed)) = self.channels.get_mut(&channel_id) {
                        *closed = Some(closed_at);
                    }
                }
                // Secrets are no read model: replay leaves them alone.
                RowChange::EraseCredentials { .. } => {}
                other => return Err(ReplayError::Unsupported(variant_name(&other))),
            }
        }
        Ok(())
    }

    fn remove_ignored_where(&mut self, id: ConnectionId, doomed: impl Fn(&IgnoredRow) -> bool) {
        let Some(rows) = self.ignored.get_mut(&id) else {
            return;
        };
        let before = rows.len();
        rows.retain(|_, r| !doomed(r));
        if rows.len() != before {
            self.touch_connection(id);
        }
    }

    fn touch_connection(&mut self, id: ConnectionId) {
        if let Some(d) = self.dirty.as_mut() {
            d.connections.insert(id);
        }
    }

    fn touch_channel(&mut self, id: &str) {
        if let Some(d) = self.dirty.as_mut() {
            d.channels.insert(id.to_string());
        }
    }

    fn touch_busy(&mut self, row: &BusyRow) {
        if let Some(d) = self.dirty.as_mut() {
            d.busy.insert((
                row.connection_id,
                row.calendar_id.clone(),
                row.external_event_id.clone(),
            ));
        }
    }

    fn busy_hash(&self, connection: ConnectionId, calendar: &str, event_id: &str) -> u64 {
        self.busy_hasher.hash_one((connection, calendar, event_id))
    }

    fn find_busy(&self, connection: ConnectionId, calendar: &str, event_id: &str) -> Option<usize> {
        let hash = self.busy_hash(connection, calendar, event_id);
        let busy = &self.busy;
        self.busy_index
            .find(hash, |&slot| {
                busy[slot].as_ref().is_some_and(|r| {
                    r.connection_id == connection
                        && r.calendar_id == calendar
                        && r.external_event_id == event_id
                })
            })
            .copied()
    }

    fn upsert_busy(&mut self, row: BusyRow) {
        self.touch_busy(&row);
        let owner = row.connection_id;
        match self.find_busy(owner, &row.calendar_id, &row.external_event_id) {
            Some(slot) => {
                self.busy[slot] = Some(row);
            }
            None => {
                let hash = self.busy_hash(owner, &row.calendar_id, &row.external_event_id);
                let slot = match self.free_busy.pop() {
                    Some(slot) => {
                        self.busy[slot] = Some(row);
                        slot
                    }
                    None => {
                        self.busy.push(Some(row));
                        self.busy.len() - 1
                    }
                };
                let Model {
                    busy,
                    busy_index,
                    busy_hasher,
                    ..
                } = self;
                // Rehashing reads each indexed row's key; every indexed
                // slot holds a row (a removal unindexes its slot first).
                busy_index.insert_unique(hash, slot, |&s| {
                    busy[s].as_ref().map_or(0, |r| {
                        busy_hasher.hash_one((
                            r.connection_id,
                            r.calendar_id.as_str(),
                            r.external_event_id.as_str(),
                        ))
                    })
                });
                self.busy_by_connection
                    .entry(owner)
                    .or_default()
                    .insert(slot);
            }
        }
    }

    /// Removes the row in `slot` (which holds one).
    fn remove_busy(&mut self, slot: usize) {
        let Some(old) = self.busy[slot].take() else {
            return;
        };
        self.touch_busy(&old);
        let hash = self.busy_hash(old.connection_id, &old.calendar_id, &old.external_event_id);
        if let Ok(entry) = self.busy_index.find_entry(hash, |&s| s == slot) {
            entry.remove();
        }
        self.free_busy.push(slot);
        if let Some(slots) = self.busy_by_connection.get_mut(&old.connection_id) {
            slots.remove(&slot);
        }
    }

    fn remove_busy_where(&mut self, id: ConnectionId, doomed: impl Fn(&BusyRow) -> bool) {
        let Some(slots) = self.busy_by_connection.get(&id) else {
            return;
        };
        let gone: Vec<usize> = slots
            .iter()
            .copied()
            .filter(|&slot| self.busy[slot].as_ref().is_some_and(&doomed))
            .collect();
        for slot in gone {
            self.remove_busy(slot);
        }
    }
}

/// `UpsertChannel(…)` → `UpsertChannel`.
fn variant_name(change: &RowChange) -> String {
    let debug = format!("{change:?}");
    debug
        .split(|c: char| !c.is_alphanumeric() && c != '_')
        .next()
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::interval::Interval;
    use chrono::{TimeZone, Utc};

    fn busy(conn: ConnectionId, id: &str, cal: &str, generation: u64) -> RowChange {
        let start = Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap();
        RowChange::UpsertBusy(BusyRow {
            platform_provider_id: "pp".into(),
            provider: "google".into(),
            external_event_id: id.into(),
            connection_id: conn,
            calendar_id: cal.into(),
            interval: Interval::new(start, start + chrono::Duration::hours(1)).unwrap(),
            generation,
            rule: Some("opaque".into()),
        })
    }

    #[test]
    fn the_same_event_in_two_calendars_or_connections_is_two_rows() {
        let (a, b) = (ConnectionId::new_random(), ConnectionId::new_random());
        let mut m = Model::default();
        m.apply(vec![
            busy(a, "e1", "c", 1),
            busy(a, "e1", "d", 1),
            busy(b, "e1", "c", 1),
        ])
        .unwrap();
        assert_eq!(m.busy_rows(), 3);
        // Declined in one calendar: only that copy goes.
        m.apply(vec![RowChange::DeleteBusy {
            connection_id: a,
            calendar_id: "c".into(),
            external_event_id: "e1".into(),
        }])
        .unwrap();
        assert_eq!(m.busy_rows(), 2);
        m.apply(vec![RowChange::SweepBusy {
            connection_id: a,
            calendar_id: "d".into(),
            below_generation: 5,
        }])
        .unwrap();
        assert_eq!(m.busy_rows(), 1, "a's sweep must not touch b's row");
        m.apply(vec![RowChange::KeepOnlyCalendars {
            connection_id: b,
            calendars: vec![],
        }])
        .unwrap();
        assert_eq!(m.busy_rows(), 0);
    }

    #[test]
    fn sweeps_remove_only_older_generations_of_the_calendar() {
        let a = ConnectionId::new_random();
        let mut m = Model::default();
        m.track_changes();
        m.apply(vec![
            busy(a, "e1", "c", 1),
            busy(a, "e2", "c", 2),
            busy(a, "e3", "d", 1),
        ])
        .unwrap();
        m.apply(vec![RowChange::SweepBusy {
            connection_id: a,
            calendar_id: "c".into(),
            below_generation: 2,
        }])
        .unwrap();
        let mut left: Vec<_> = m.busy().map(|r| r.external_event_id.clone()).collect();
        left.sort();
        assert_eq!(left, ["e2", "e3"]);
        assert_eq!(m.take_dirty().busy.len(), 3);
        assert!(m.take_dirty().is_empty());
    }

    #[test]
    fn freed_busy_slots_are_reused_and_found_by_key() {
        let (a, b) = (ConnectionId::new_random(), ConnectionId::new_random());
        let key = |c: ConnectionId, cal: &str, id: &str| (c, cal.to_string(), id.to_string());
        let mut m = Model::default();
        m.apply(vec![busy(a, "e1", "c", 1), busy(a, "e2", "c", 1)])
            .unwrap();
        m.apply(vec![RowChange::DeleteBusy {
            connection_id: a,
            calendar_id: "c".into(),
            external_event_id: "e1".into(),
        }])
        .unwrap();
        assert!(m.busy_row(&key(a, "c", "e1")).is_none());
        // e3 takes e1's slot; b's copy of e2 is a row of its own.
        m.apply(vec![busy(a, "e3", "c", 1), busy(b, "e2", "d", 2)])
            .unwrap();
        assert_eq!(m.busy.len(), 3, "the freed slot was reused");
        assert!(m.busy_row(&key(a, "c", "e3")).is_some());
        assert!(m.busy_row(&key(b, "d", "e2")).is_some());
        m.apply(vec![RowChange::SweepBusy {
            connection_id: a,
            calendar_id: "c".into(),
            below_generation: 5,
        }])
        .unwrap();
        assert_eq!(m.busy_rows(), 1);
        assert!(m.busy_row(&key(b, "d", "e2")).is_some());
    }

    #[test]
    fn channel_updates_touch_only_existing_channels() {
        let at = Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap();
        let row = ChannelRow {
            channel_id: "ch1".into(),
            provider: "google".into(),
            connection_id: ConnectionId::new_random(),
            calendar_id: "primary".into(),
            resource_id: "r1".into(),
            secret_sha256: "00".into(),
            expires_at: at,
        };
        let mut m = Model::default();
        m.apply(vec![
            RowChange::UpsertChannel(row.clone()),
            RowChange::RenewChannel {
                channel_id: "ch1".into(),
                expires_at: at + chrono::Duration::days(1),
            },
            RowChange::CloseChannel {
                channel_id: "ch1".into(),
                closed_at: at,
            },
            RowChange::RenewChannel {
                channel_id: "nope".into(),
                expires_at: at,
            },
        ])
        .unwrap();
        assert_eq!(m.channels.len(), 1);
        let (stored, closed) = &m.channels["ch1"];
        assert_eq!(stored.expires_at, at + chrono::Duration::days(1));
        assert_eq!(*closed, Some(at));
        // A new upsert reopens it, as the SQL's `closed_at = NULL` does.
        m.apply(vec![RowChange::UpsertChannel(row)]).unwrap();
        assert_eq!(m.channels["ch1"].1, None);
    }

    fn ignored(conn: ConnectionId, id: &str, cal: &str, generation: u64) -> RowChange {
        RowChange::UpsertIgnored(IgnoredRow {
            connection_id: conn,
            calendar_id: cal.into(),
            external_event_id: id.into(),
            platform_provider_id: "pp".into(),
            reason: "declined".into(),
            span: None,
            booking_id: None,
            generation,
        })
    }

    #[test]
    fn ignored_rows_are_swept_and_deselected_like_busy_rows() {
        let c = ConnectionId::new_random();
        let mut m = Model::default();
        m.track_changes();
        m.apply(vec![
            ignored(c, "old", "a", 1),
            ignored(c, "new", "a", 2),
            ignored(c, "other", "b", 1),
            ignored(c, "gone", "a", 2),
            RowChange::DeleteIgnored {
                connection_id: c,
                calendar_id: "a".into(),
                external_event_id: "gone".into(),
            },
        ])
        .unwrap();
        assert!(
            m.take_dirty().connections.contains(&c),
            "swap rewrites them"
        );
        m.apply(vec![RowChange::SweepBusy {
            connection_id: c,
            calendar_id: "a".into(),
            below_generation: 2,
        }])
        .unwrap();
        let keys: Vec<_> = m.ignored[&c].keys().cloned().collect();
        assert_eq!(
            keys,
            [
                ("a".to_string(), "new".to_string()),
                ("b".into(), "other".into())
            ]
        );
        m.apply(vec![RowChange::KeepOnlyCalendars {
            connection_id: c,
            calendars: vec!["b".into()],
        }])
        .unwrap();
        assert_eq!(m.ignored[&c].len(), 1);
        assert!(m.ignored[&c].contains_key(&("b".to_string(), "other".to_string())));
    }
}
