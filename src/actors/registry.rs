//! Which actor serves which connection on this node, shared by the front
//! door and the supervisor; and each actor's mailbox counters, read without
//! asking the actor (admission control, passivation). Critical sections are
//! a map lookup long.
//!
//! Maps are ordered (`BTreeMap`): anything that walks them (a settings
//! change waking every actor, a drill killing some) does so in the same
//! order on every run, which the deterministic simulation relies on.

use super::ack::SendError;
use super::connection::ConnectionMsg;
pub use super::mailbox::Mailbox;
use crate::core::ids::ConnectionId;
use chrono::{DateTime, Utc};
use ractor::{ActorId, ActorRef};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

#[derive(Clone)]
pub struct Entry {
    pub actor: ActorRef<ConnectionMsg>,
    pub mailbox: Arc<Mailbox>,
    pub incarnation: u64,
}

/// An actor stopped for idleness, and when it wanted to wake next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parked {
    pub wake_at: Option<DateTime<Utc>>,
}

#[derive(Default)]
pub struct Registry {
    entries: Mutex<BTreeMap<ConnectionId, Entry>>,
    quarantined: Mutex<BTreeSet<ConnectionId>>,
    /// Passivated connections and their next wake-up: the supervisor wakes
    /// them on time without asking the database.
    parked: Mutex<BTreeMap<ConnectionId, Parked>>,
    pub restarts: AtomicU64,
    /// Actor failures per connection since this node started (status).
    failures: Mutex<BTreeMap<ConnectionId, u64>>,
    /// Actors killed because their slice moved: not failures.
    moving: Mutex<BTreeSet<ActorId>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Poisoning only means a panic elsewhere; the map is still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    pub fn get(&self, id: ConnectionId) -> Option<Entry> {
        lock(&self.entries).get(&id).cloned()
    }

    pub fn insert(
        &self,
        id: ConnectionId,
        actor: ActorRef<ConnectionMsg>,
        mailbox: Arc<Mailbox>,
        incarnation: u64,
    ) {
        lock(&self.parked).remove(&id);
        lock(&self.entries).insert(
            id,
            Entry {
                actor,
                mailbox,
                incarnation,
            },
        );
    }

    /// Removes `id` only if it is still served by `actor` (a newer
    /// incarnation may already have taken its place).
    pub fn remove_if(&self, id: ConnectionId, actor: ActorId) {
        let mut entries = lock(&self.entries);
        if entries.get(&id).is_some_and(|e| e.actor.get_id() == actor) {
            entries.remove(&id);
        }
    }

    /// Admits one input: bumps the queue counter under the registry lock so
    /// passivation (which checks the counter under the same lock) can never
    /// stop an actor that has an input on the way.
    pub fn admit(&self, id: ConnectionId, bound: usize) -> Option<Result<Entry, SendError>> {
        let entries = lock(&self.entries);
        let entry = entries.get(&id)?;
        if entry.mailbox.queued.load(Ordering::Acquire) >= bound {
            return Some(Err(SendError::Busy {
                retry_after: Duration::from_secs(1),
            }));
        }
        entry.mailbox.queued.fetch_add(1, Ordering::AcqRel);
        Some(Ok(entry.clone()))
    }

    /// Removes and returns the actors idle since before `cutoff_ms` with
    /// nothing queued, parking each with its next wake-up.
    pub fn take_idle(&self, cutoff_ms: u64) -> Vec<(ConnectionId, ActorRef<ConnectionMsg>)> {
        let mut entries = lock(&self.entries);
        let idle: Vec<ConnectionId> = entries
            .iter()
            .filter(|(_, e)| {
                e.mailbox.queued.load(Ordering::Acquire) == 0
                    && e.mailbox.last_active_ms.load(Ordering::Relaxed) < cutoff_ms
            })
            .map(|(id, _)| *id)
            .collect();
        let mut parked = lock(&self.parked);
        idle.into_iter()
            .filter_map(|id| {
                entries.remove(&id).map(|e| {
                    parked.insert(
                        id,
                        Parked {
                            wake_at: e.mailbox.wake_at(),
                        },
                    );
                    (id, e.actor)
                })
            })
            .collect()
    }

    /// Parked connections whose wake-up is due at `now` (unparked), and
    /// with `and_waiting`, those parked without one too (a settings change
    /// may have opened their gate).
    pub fn take_due_parked(&self, now: DateTime<Utc>, and_waiting: bool) -> Vec<ConnectionId> {
        let mut parked = lock(&self.parked);
        let due: Vec<ConnectionId> = parked
            .iter()
            .filter(|(_, p)| match p.wake_at {
                Some(at) => at <= now,
                None => and_waiting,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in &due {
            parked.remove(id);
        }
        due
    }

    /// Whether this node knows when `id` wants to wake (so a sweep of the
    /// database need not wake it).
    pub fn is_parked(&self, id: ConnectionId) -> bool {
        lock(&self.parked).contains_key(&id)
    }

    /// Marks an actor about to be killed because its slice moved.
    pub fn note_moving(&self, actor: ActorId) {
        lock(&self.moving).insert(actor);
    }

    /// Whether `actor` was killed because its slice moved (forgets it).
    pub fn take_moving(&self, actor: ActorId) -> bool {
        lock(&self.moving).remove(&actor)
    }

    pub fn is_quarantined(&self, id: ConnectionId) -> bool {
        lock(&self.quarantined).contains(&id)
    }

    pub fn set_quarantined(&self, id: ConnectionId, on: bool) {
        let mut set = lock(&self.quarantined);
        if on {
            set.insert(id);
        } else {
            set.remove(&id);
        }
    }

    pub fn quarantined_count(&self) -> usize {
        lock(&self.quarantined).len()
    }

    pub fn active(&self) -> usize {
        lock(&self.entries).len()
    }

    /// Counts one actor failure of `id` (each is followed by a restart or
    /// a quarantine).
    pub fn note_failure(&self, id: ConnectionId) {
        *lock(&self.failures).entry(id).or_insert(0) += 1;
    }

    pub fn failures_of(&self, id: ConnectionId) -> u64 {
        lock(&self.failures).get(&id).copied().unwrap_or(0)
    }

    /// Every active connection, in id order.
    pub fn ids(&self) -> Vec<ConnectionId> {
        lock(&self.entries).keys().copied().collect()
    }

    /// Every active actor, in id order.
    pub fn actors(&self) -> Vec<ActorRef<ConnectionMsg>> {
        lock(&self.entries)
            .values()
            .map(|e| e.actor.clone())
            .collect()
    }
}
