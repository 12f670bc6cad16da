//! A short-lived, per-node cache of webhook channel lookups.
//!
//! Every push notification names its channel (Google: channel id or
//! resource id; Graph: subscription id), and authenticating it needs the
//! channel's connection and secret digest. Channels change rarely (opened,
//! renewed, closed by their connection's actor) and a channel id is never
//! reused with another secret, so a lookup may be remembered briefly: at
//! ingest rates that removes one database round trip per webhook.
//!
//! Only channels that exist are cached (an unknown id always asks the
//! database, so a channel committed a moment ago is found at once). What a
//! cached entry can miss for up to [`TTL`] is a close: notifications on a
//! closed channel are accepted for [`crate::core::channels::CLOSED_GRACE`]
//! (minutes) anyway, so a close seen [`TTL`] late changes nothing. The
//! secret check itself runs on every request.

use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// How long a lookup is trusted.
pub const TTL: Duration = Duration::from_secs(10);

/// Entries kept at most; when full the cache starts over (a burst of
/// distinct channels costs one database lookup each, as without a cache).
pub const CAPACITY: usize = 200_000;

/// What authentication needs to know about a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRecord {
    pub connection_id: Uuid,
    pub channel_id: String,
    pub secret_sha256: String,
    pub closed_at: Option<DateTime<Utc>>,
}

/// The key a notification names its channel by: provider, whether it is a
/// channel or a resource id, and the id.
pub type LookupKey = (&'static str, bool, String);

#[derive(Clone)]
pub struct ChannelCache {
    entries: Arc<Mutex<HashMap<LookupKey, (Instant, ChannelRecord)>>>,
    ttl: Duration,
}

impl Default for ChannelCache {
    fn default() -> Self {
        Self::with_ttl(TTL)
    }
}

impl ChannelCache {
    /// A cache trusting lookups for `ttl` (zero: a cache that never hits).
    pub fn with_ttl(ttl: Duration) -> Self {
        ChannelCache {
            entries: Arc::default(),
            ttl,
        }
    }

    /// The cached record, if it is younger than the TTL.
    pub fn get(&self, key: &LookupKey) -> Option<ChannelRecord> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, record)| record.clone())
    }

    pub fn put(&self, key: LookupKey, record: ChannelRecord) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), record));
    }

    /// Forgets everything (operators and tests that rewrite channels).
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(secret: &str) -> ChannelRecord {
        ChannelRecord {
            connection_id: Uuid::nil(),
            channel_id: "ch".into(),
            secret_sha256: secret.into(),
            closed_at: None,
        }
    }

    #[test]
    fn lookups_are_remembered_per_provider_and_kind_until_they_expire() {
        let cache = ChannelCache::default();
        let key = ("google", true, "ch".to_string());
        assert_eq!(cache.get(&key), None);
        cache.put(key.clone(), record("s1"));
        assert_eq!(cache.get(&key), Some(record("s1")));
        // The same id as a resource id, or at another provider, is another key.
        assert_eq!(cache.get(&("google", false, "ch".to_string())), None);
        assert_eq!(cache.get(&("microsoft", true, "ch".to_string())), None);
        // Clones share the entries.
        cache.clone().clear();
        assert_eq!(cache.get(&key), None);

        let expired = ChannelCache::with_ttl(Duration::ZERO);
        expired.put(key.clone(), record("s1"));
        assert_eq!(expired.get(&key), None, "older than the TTL is a miss");
    }
}
