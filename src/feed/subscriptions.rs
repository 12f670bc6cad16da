//! Push subscriptions in the store: their streams in the log, their
//! secrets in `feed_subscription_secrets`. Shared by the API, the CLI and
//! the delivery workers ([`super::push`]).

use super::FeedCursor;
use crate::core::ids::StreamName;
use crate::core::platform_events::PlatformEventType;
use crate::core::subscription::{validate_url, SubscriptionEvent, SubscriptionState, UrlError};
use crate::store::{EventStore, ExpectedVersion, NewEvent, PgEventStore, StoreError};
use chrono::Utc;
use rand::RngCore;
use sha2::{Digest, Sha256};
use uuid::Uuid;

pub const STREAM_PREFIX: &str = "subscription-";

/// What can go wrong managing a subscription.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("no subscription {0}")]
    NotFound(Uuid),
    #[error(transparent)]
    Cursor(#[from] super::CursorError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub fn stream(id: Uuid) -> StreamName {
    // A fixed prefix and a UUID: always a valid stream name.
    StreamName::parse(format!("{STREAM_PREFIX}{id}")).unwrap_or_else(|_| StreamName::settings())
}

/// A new subscription and its secret (shown once).
#[derive(Debug, Clone)]
pub struct Created {
    pub id: Uuid,
    pub secret: String,
    pub state: SubscriptionState,
}

/// Creates a subscription delivering `types` (all when empty) to `url`,
/// after `after`.
pub async fn create(
    store: &PgEventStore,
    url: &str,
    types: Vec<PlatformEventType>,
    after: FeedCursor,
) -> Result<Created, SubscriptionError> {
    validate_url(url)?;
    let id = Uuid::new_v4();
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    let secret = format!("whsec_{}", hex::encode(bytes));
    let client = store.pool().get().await.map_err(StoreError::from)?;
    client
        .execute(
            "INSERT INTO feed_subscription_secrets (subscription_id, secret) VALUES ($1, $2)",
            &[&id, &secret],
        )
        .await
        .map_err(StoreError::from)?;
    let event = SubscriptionEvent::SubscriptionCreated {
        url: url.to_string(),
        types,
        cursor: after.encode(),
        secret_sha256: hex::encode(Sha256::digest(secret.as_bytes())),
        at: Utc::now(),
    };
    append(store, id, ExpectedVersion::NoStream, &[event]).await?;
    let state = load(store, id).await?;
    Ok(Created { id, secret, state })
}

/// Appends `events` to the subscription's stream.
pub async fn append(
    store: &PgEventStore,
    id: Uuid,
    expected: ExpectedVersion,
    events: &[SubscriptionEvent],
) -> Result<(), StoreError> {
    let new = events
        .iter()
        .map(|e| {
            let (ty, payload) = e
                .to_parts()
                .map_err(|err| StoreError::BadData(err.to_string()))?;
            Ok(NewEvent::new(ty, e.schema_version(), payload.to_string()))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    store.append(&stream(id), expected, new).await?;
    Ok(())
}

/// The fold of the subscription's stream.
pub async fn load(store: &PgEventStore, id: Uuid) -> Result<SubscriptionState, SubscriptionError> {
    let mut state = SubscriptionState::default();
    loop {
        let events = store
            .read_stream(&stream(id), state.version + 1, 1000)
            .await?;
        if events.is_empty() {
            break;
        }
        for recorded in events {
            let payload = serde_json::from_str(&recorded.payload)
                .map_err(|e| StoreError::BadData(e.to_string()))?;
            let event = SubscriptionEvent::from_parts(
                &recorded.event_type,
                recorded.schema_version,
                payload,
            )
            .map_err(|e| StoreError::BadData(e.to_string()))?;
            state = state.evolve(&event);
        }
    }
    if !state.created {
        return Err(SubscriptionError::NotFound(id));
    }
    Ok(state)
}

/// Every subscription ever created (deleted ones included), by id.
pub async fn ids(store: &PgEventStore) -> Result<Vec<Uuid>, StoreError> {
    let client = store.pool().get().await?;
    let rows = client
        .query(
            "SELECT stream FROM events WHERE stream LIKE 'subscription-%' AND version = 1 \
             ORDER BY position",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            r.try_get::<_, String>(0)
                .ok()
                .and_then(|s| s.strip_prefix(STREAM_PREFIX).and_then(|u| u.parse().ok()))
        })
        .collect())
}

/// The secret deliveries are signed with (`None` once deleted).
pub async fn secret(store: &PgEventStore, id: Uuid) -> Result<Option<String>, StoreError> {
    let client = store.pool().get().await?;
    let row = client
        .query_opt(
            "SELECT secret FROM feed_subscription_secrets WHERE subscription_id = $1",
            &[&id],
        )
        .await?;
    row.map(|r| r.try_get(0).map_err(StoreError::from))
        .transpose()
}

/// Deletes the subscription: deliveries stop, the secret is erased, the
/// stream stays as history.
pub async fn delete(store: &PgEventStore, id: Uuid) -> Result<(), SubscriptionError> {
    let state = load(store, id).await?;
    if !state.deleted {
        append(
            store,
            id,
            ExpectedVersion::Exact(state.version),
            &[SubscriptionEvent::SubscriptionDeleted { at: Utc::now() }],
        )
        .await?;
    }
    let client = store.pool().get().await.map_err(StoreError::from)?;
    client
        .execute(
            "DELETE FROM feed_subscription_secrets WHERE subscription_id = $1",
            &[&id],
        )
        .await
        .map_err(StoreError::from)?;
    Ok(())
}

/// An operator restarts deliveries from `cursor` (dead-lettered or not).
pub async fn replay(
    store: &PgEventStore,
    id: Uuid,
    cursor: FeedCursor,
) -> Result<SubscriptionState, SubscriptionError> {
    let state = load(store, id).await?;
    if state.deleted {
        return Err(SubscriptionError::NotFound(id));
    }
    append(
        store,
        id,
        ExpectedVersion::Exact(state.version),
        &[SubscriptionEvent::ReplayRequested {
            cursor: cursor.encode(),
            at: Utc::now(),
        }],
    )
    .await?;
    load(store, id).await
}

/// The signature header value for `body` at unix time `timestamp`:
/// `t=<timestamp>,v1=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(timestamp.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={timestamp},v1={}", hex::encode(ctx.sign().as_ref()))
}
