//! The per-connection webhook dedupe window: the last N notification keys a
//! connection accepted, so a duplicate or replayed webhook is answered
//! `duplicate` without new sync work (DESIGN.md guarantee 2).
//!
//! Owns the key format ([`DedupeKey`]) and the window ([`DedupeWindow`]).
//! The window is part of connection state, rebuilt by folding the log and
//! saved in snapshots, so two things matter:
//! - the digest must be the same in every process and every release: it is
//!   the first 8 bytes of SHA-256 of the key, never `std`'s randomly seeded
//!   hasher;
//! - memory: with 100,000 connections per node and ≤ 10 KB per idle
//!   connection, the window keeps only 8-byte digests in one `VecDeque`
//!   (800 bytes at the default N = 100). Membership is a linear scan of that
//!   contiguous buffer, which at N ≈ 100 costs tens of nanoseconds; a
//!   companion hash set would be marginally faster but more than double the
//!   memory, for a check that runs once per webhook.
//!
//! A 64-bit digest collision would make a genuine notification look like a
//! duplicate; with ≤ N live digests the chance is about N / 2⁶⁴ per webhook,
//! and the periodic incremental sync would still pick the change up.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Default window length (DESIGN.md: "last N keys, default 100").
pub const DEFAULT_DEDUPE_CAPACITY: usize = 100;

/// The identity of one provider notification.
///
/// Built from the fields that make a notification unique, each
/// length-prefixed so that no two different field lists can produce the same
/// key (ids may contain any separator we could pick).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DedupeKey(String);

impl DedupeKey {
    /// A Google push notification: its channel (`X-Goog-Channel-ID`) and
    /// message number (`X-Goog-Message-Number`), unique per channel.
    pub fn google(channel_id: &str, message_number: u64) -> Self {
        Self::from_parts("google", &[channel_id, &message_number.to_string()])
    }

    /// A Graph change notification: subscription, change type, resource id
    /// and the resource's `changeKey` or `@odata.etag`. Graph retries a
    /// delivery with identical values; a new change carries a new change key.
    pub fn graph(
        subscription_id: &str,
        change_type: &str,
        resource_id: &str,
        change_key_or_etag: &str,
    ) -> Self {
        Self::from_parts(
            "graph",
            &[
                subscription_id,
                change_type,
                resource_id,
                change_key_or_etag,
            ],
        )
    }

    /// A key as it was stored in the log, for rebuilding a window by folding.
    pub fn from_stored(key: impl Into<String>) -> Self {
        DedupeKey(key.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stable 64-bit digest the window stores: the first 8 bytes of
    /// SHA-256 of the key, big-endian.
    pub fn digest(&self) -> u64 {
        let hash = Sha256::digest(self.0.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash[..8]);
        u64::from_be_bytes(first)
    }

    fn from_parts(provider: &str, parts: &[&str]) -> Self {
        let mut key = String::from(provider);
        for part in parts {
            key.push('|');
            key.push_str(&part.len().to_string());
            key.push(':');
            key.push_str(part);
        }
        DedupeKey(key)
    }
}

impl fmt::Display for DedupeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a notification is new or a repeat of one in the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Admission {
    New,
    Duplicate,
}

/// The last `capacity` distinct keys admitted, oldest evicted first. A
/// duplicate does not refresh its key's position: a key stays recognised
/// until `capacity` newer distinct keys have been admitted after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Snapshot", try_from = "Snapshot")]
pub struct DedupeWindow {
    capacity: usize,
    /// Oldest first; no repeats.
    digests: VecDeque<u64>,
}

impl Default for DedupeWindow {
    fn default() -> Self {
        DedupeWindow::new(DEFAULT_DEDUPE_CAPACITY)
    }
}

impl DedupeWindow {
    /// An empty window of `capacity` keys. Capacity 0 remembers nothing:
    /// every key is new.
    pub fn new(capacity: usize) -> Self {
        DedupeWindow {
            capacity,
            digests: VecDeque::new(),
        }
    }

    /// Admits `key` if it is not in the window (evicting the oldest key when
    /// full) and says whether it was new.
    pub fn check_and_insert(&mut self, key: &DedupeKey) -> Admission {
        let digest = key.digest();
        if self.digests.contains(&digest) {
            return Admission::Duplicate;
        }
        if self.capacity > 0 {
            if self.digests.len() == self.capacity {
                self.digests.pop_front();
            } else if self.digests.capacity() == 0 {
                // Allocate the whole window once: growing by doubling would
                // leave 128 slots for 100 keys and a trail of freed smaller
                // buffers in every long-lived actor.
                self.digests.reserve_exact(self.capacity);
            }
            self.digests.push_back(digest);
        }
        Admission::New
    }

    /// Whether `key` is in the window, without admitting it.
    pub fn contains(&self, key: &DedupeKey) -> bool {
        self.digests.contains(&key.digest())
    }

    /// Changes the capacity (e.g. after a configuration change), dropping the
    /// oldest keys if the window is now too long.
    pub fn resize(&mut self, capacity: usize) {
        self.capacity = capacity;
        while self.digests.len() > capacity {
            self.digests.pop_front();
        }
        self.digests.shrink_to(capacity);
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

/// Snapshot form: digests as 16-digit hex strings, oldest first. Hex rather
/// than JSON numbers because u64 values above 2⁵³ lose precision in many JSON
/// readers.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    capacity: usize,
    digests: Vec<String>,
}

/// Why a snapshot is not a window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dedupe snapshot digest {0:?} is not 16 hex digits")]
pub struct BadDigest(String);

impl From<DedupeWindow> for Snapshot {
    fn from(window: DedupeWindow) -> Self {
        Snapshot {
            capacity: window.capacity,
            digests: window.digests.iter().map(|d| format!("{d:016x}")).collect(),
        }
    }
}

impl TryFrom<Snapshot> for DedupeWindow {
    type Error = BadDigest;

    /// Rebuilds a window; repeats are dropped and only the newest `capacity`
    /// digests kept, so a hand-edited or foreign snapshot still yields a
    /// window that obeys its invariants.
    fn try_from(snapshot: Snapshot) -> Result<Self, Self::Error> {
        let mut window = DedupeWindow::new(snapshot.capacity);
        for text in snapshot.digests {
            // from_str_radix alone would also accept a leading '+'.
            let well_formed = text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
            let digest = match u64::from_str_radix(&text, 16) {
                Ok(digest) if well_formed => digest,
                _ => return Err(BadDigest(text)),
            };
            if !window.digests.contains(&digest) {
                window.digests.push_back(digest);
            }
        }
        window.resize(snapshot.capacity);
        Ok(window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(n: u32) -> DedupeKey {
        DedupeKey::google("chan-1", u64::from(n))
    }

    #[test]
    fn a_key_is_new_once_then_duplicate() {
        let mut w = DedupeWindow::default();
        assert_eq!(w.check_and_insert(&key(1)), Admission::New);
        assert_eq!(w.check_and_insert(&key(1)), Admission::Duplicate);
        assert_eq!(w.check_and_insert(&key(2)), Admission::New);
        assert_eq!(w.len(), 2);
    }

    #[test]
    fn oldest_key_is_evicted_first() {
        let mut w = DedupeWindow::new(3);
        for n in 1..=3 {
            w.check_and_insert(&key(n));
        }
        assert_eq!(w.check_and_insert(&key(4)), Admission::New);
        assert!(!w.contains(&key(1)));
        assert!(w.contains(&key(2)) && w.contains(&key(4)));
        assert_eq!(w.len(), 3);
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let mut w = DedupeWindow::new(0);
        assert_eq!(w.check_and_insert(&key(1)), Admission::New);
        assert_eq!(w.check_and_insert(&key(1)), Admission::New);
        assert!(w.is_empty());
    }

    #[test]
    fn digests_are_stable_across_processes_and_releases() {
        // Pinned values: changing the key format or digest breaks every
        // stored snapshot and log fold, so it must be a deliberate migration.
        assert_eq!(
            DedupeKey::google("chan-1", 7).as_str(),
            "google|6:chan-1|1:7"
        );
        assert_eq!(
            DedupeKey::graph("sub", "updated", "Users/a/Events/b", "ck1").as_str(),
            "graph|3:sub|7:updated|16:Users/a/Events/b|3:ck1"
        );
        assert_eq!(
            DedupeKey::from_stored("google|6:chan-1|1:7").digest(),
            0x5abf_4348_ef49_a2cd
        );
    }

    #[test]
    fn length_prefixes_keep_different_fields_apart() {
        assert_ne!(
            DedupeKey::graph("a|1:b", "c", "d", "e"),
            DedupeKey::graph("a", "b", "c", "d|1:e")
        );
        assert_ne!(DedupeKey::google("a", 12), DedupeKey::google("a|2:1", 2));
    }

    #[test]
    fn snapshot_is_compact_hex_and_round_trips() {
        let mut w = DedupeWindow::new(2);
        w.check_and_insert(&key(1));
        w.check_and_insert(&key(2));
        let json = serde_json::to_value(&w).unwrap();
        assert_eq!(json["capacity"], 2);
        assert_eq!(json["digests"][0].as_str().unwrap().len(), 16);
        let back: DedupeWindow = serde_json::from_value(json).unwrap();
        assert_eq!(back, w);
    }

    #[test]
    fn odd_snapshots_are_normalised_or_rejected() {
        let trimmed: DedupeWindow = serde_json::from_str(
            r#"{"capacity":1,"digests":["0000000000000001","0000000000000001","0000000000000002"]}"#,
        )
        .unwrap();
        assert_eq!(trimmed.len(), 1);
        assert!(
            serde_json::from_str::<DedupeWindow>(r#"{"capacity":1,"digests":["xyz"]}"#).is_err()
        );
        assert!(serde_json::from_str::<DedupeWindow>(
            r#"{"capacity":1,"digests":["+000000000000001"]}"#
        )
        .is_err());
    }

    #[test]
    fn resize_drops_the_oldest() {
        let mut w = DedupeWindow::new(5);
        for n in 1..=5 {
            w.check_and_insert(&key(n));
        }
        w.resize(2);
        assert!(!w.contains(&key(3)) && w.contains(&key(4)) && w.contains(&key(5)));
    }

    /// The reference model: the plain definition, on whole keys.
    fn model_admit(model: &mut VecDeque<DedupeKey>, capacity: usize, k: &DedupeKey) -> Admission {
        if model.contains(k) {
            return Admission::Duplicate;
        }
        if capacity > 0 {
            if model.len() == capacity {
                model.pop_front();
            }
            model.push_back(k.clone());
        }
        Admission::New
    }

    proptest! {
        #[test]
        fn behaves_like_the_model(capacity in 0usize..12, keys in prop::collection::vec(0u32..20, 0..200)) {
            let mut window = DedupeWindow::new(capacity);
            let mut model = VecDeque::new();
            for n in keys {
                let k = key(n);
                prop_assert_eq!(window.check_and_insert(&k), model_admit(&mut model, capacity, &k));
                prop_assert!(window.len() <= capacity);
            }
        }

        #[test]
        fn duplicate_until_n_newer_distinct_keys(capacity in 1usize..50, newer in 0usize..60) {
            let mut window = DedupeWindow::new(capacity);
            let first = DedupeKey::graph("sub", "updated", "res", "ck-first");
            prop_assert_eq!(window.check_and_insert(&first), Admission::New);
            for i in 0..newer {
                let other = DedupeKey::graph("sub", "updated", "res", &format!("ck-{i}"));
                prop_assert_eq!(window.check_and_insert(&other), Admission::New);
                // Repeats of already-seen keys must not push `first` out.
                prop_assert_eq!(window.check_and_insert(&other), Admission::Duplicate);
            }
            let expected = if newer < capacity { Admission::Duplicate } else { Admission::New };
            prop_assert_eq!(window.check_and_insert(&first), expected);
        }

        #[test]
        fn serde_round_trip_preserves_behaviour(
            capacity in 0usize..12,
            before in prop::collection::vec(0u32..20, 0..60),
            after in prop::collection::vec(0u32..20, 0..60),
        ) {
            let mut live = DedupeWindow::new(capacity);
            for n in before {
                live.check_and_insert(&key(n));
            }
            let json = serde_json::to_string(&live).unwrap();
            let mut restored: DedupeWindow = serde_json::from_str(&json).unwrap();
            prop_assert_eq!(&restored, &live);
            for n in after {
                prop_assert_eq!(restored.check_and_insert(&key(n)), live.check_and_insert(&key(n)));
            }
        }
    }
}
