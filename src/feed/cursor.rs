//! The feed's opaque cursor.
//!
//! A cursor names a point in the log's global order, `(txid, position)`,
//! plus how many platform events of that log event were already taken
//! (0: all of them). It is encoded as URL-safe base64 of
//! `1:<txid>:<position>:<taken>` — opaque to the platform, which only
//! passes it back — and depends on the log alone, so it survives restarts
//! and works against any node.

use crate::store::RecordedEvent;
use base64::Engine;

const VERSION: &str = "1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FeedCursor {
    pub txid: i64,
    pub position: i64,
    /// Platform events of the event at `(txid, position)` already taken;
    /// 0 means the whole event is behind the cursor.
    pub taken: u32,
}

/// A cursor the feed did not issue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid cursor: {0}")]
pub struct CursorError(pub &'static str);

impl FeedCursor {
    /// Before the first event.
    pub const START: FeedCursor = FeedCursor {
        txid: 0,
        position: 0,
        taken: 0,
    };

    /// After every platform event of `event`.
    pub fn after(event: &RecordedEvent) -> Self {
        FeedCursor {
            txid: event.txid,
            position: event.position,
            taken: 0,
        }
    }

    /// Inside `event`: its first `taken` platform events are behind.
    pub fn partial(event: &RecordedEvent, taken: u32) -> Self {
        FeedCursor {
            txid: event.txid,
            position: event.position,
            taken,
        }
    }

    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(
            "{VERSION}:{}:{}:{}",
            self.txid, self.position, self.taken
        ))
    }

    pub fn decode(text: &str) -> Result<Self, CursorError> {
        if text.len() > 128 {
            return Err(CursorError("too long"));
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|_| CursorError("not base64url"))?;
        let text = String::from_utf8(bytes).map_err(|_| CursorError("not text"))?;
        let parts: Vec<&str> = text.split(':').collect();
        let [version, txid, position, taken] = parts[..] else {
            return Err(CursorError("wrong shape"));
        };
        if version != VERSION {
            return Err(CursorError("unknown version"));
        }
        let cursor = FeedCursor {
            txid: txid.parse().map_err(|_| CursorError("bad txid"))?,
            position: position.parse().map_err(|_| CursorError("bad position"))?,
            taken: taken.parse().map_err(|_| CursorError("bad count"))?,
        };
        if cursor.txid < 0 || cursor.position < 0 {
            return Err(CursorError("negative"));
        }
        Ok(cursor)
    }
}

impl std::fmt::Display for FeedCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_text_is_refused() {
        for c in [
            FeedCursor::START,
            FeedCursor {
                txid: 812,
                position: 40_001,
                taken: 2,
            },
        ] {
            assert_eq!(FeedCursor::decode(&c.encode()), Ok(c));
        }
        for bad in ["", "!!", "MTox", "Mjox OjM6NA", &"A".repeat(200)] {
            assert!(FeedCursor::decode(bad).is_err(), "{bad}");
        }
        let foreign = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("2:1:2:0");
        assert!(FeedCursor::decode(&foreign).is_err());
        let negative = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("1:-1:2:0");
        assert!(FeedCursor::decode(&negative).is_err());
    }
}
