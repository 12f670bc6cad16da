//! Running channel upkeep (open, renew, close) for one connection, outside
//! its actor; every result goes back through the actor as an input.

use super::connection::ConnectionMsg;
use super::sync_task::SyncRuntime;
use super::task_support::{keep_rotated_token, load_session, record};
use crate::core::channels::ChannelStep;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::{CalendarProvider, ConnectionId};
use crate::core::state::ChannelState;
use crate::core::sync::FailureClass;
use crate::providers::{CalendarApi, Channel, ChannelRequest, ProviderError};
use base64::Engine;
use chrono::Utc;
use ractor::ActorRef;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;
use uuid::Uuid;

/// The SHA-256 (hex) the log and the `channels` table keep of a secret.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh per-channel secret: 32 random bytes, URL-safe base64 (43
/// characters, within Google's 256 and Graph's 128 character limits).
fn new_secret() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub async fn run(
    actor: ActorRef<ConnectionMsg>,
    runtime: Arc<SyncRuntime>,
    id: ConnectionId,
    provider: CalendarProvider,
    channels: BTreeMap<String, ChannelState>,
    steps: Vec<ChannelStep>,
) {
    if let Err(e) = upkeep(&actor, &runtime, id, provider, &channels, steps).await {
        tracing::warn!(connection_id = %id, error = %e, "channel upkeep failed; retried at the next tick");
    }
    let _ = actor.send_message(ConnectionMsg::ChannelsFinished);
}

async fn upkeep(
    actor: &ActorRef<ConnectionMsg>,
    runtime: &SyncRuntime,
    id: ConnectionId,
    provider: CalendarProvider,
    channels: &BTreeMap<String, ChannelState>,
    steps: Vec<ChannelStep>,
) -> Result<(), String> {
    let Some(base) = runtime.webhook_base.as_deref() else {
        return Ok(());
    };
    let attempt_started = Utc::now();
    let mut session = match load_session(runtime, id).await {
        Ok(Some(s)) => s,
        Ok(None) => return Err("no credentials".into()),
        Err(e) => return Err(e.to_string()),
    };
    let client = runtime.client(provider);
    let (address, lifetime) = match provider {
        CalendarProvider::Google => (
            format!("{base}/webhooks/google"),
            runtime.google_channel_lifetime,
        ),
        CalendarProvider::Microsoft => (
            format!("{base}/webhooks/graph"),
            runtime.graph_channel_lifetime,
        ),
    };
    for step in steps {
        let now = Utc::now();
        let result = match &step {
            ChannelStep::Open { calendar } => {
                let secret = new_secret();
                let request = ChannelRequest {
                    channel_id: Uuid::new_v4().simple().to_string(),
                    address: address.clone(),
                    lifecycle_address: (provider == CalendarProvider::Microsoft)
                        .then(|| format!("{base}/webhooks/graph/lifecycle")),
                    secret: secret.clone(),
                    expires_at: now + lifetime,
                };
                client
                    .open_channel(&mut session, calendar, &request)
                    .await
                    .map(|channel| ConnectionCommand::RecordChannelOpened {
                        calendar: calendar.clone(),
                        channel_id: channel.channel_id,
                        resource_id: channel.resource_id,
                        secret_sha256: secret_digest(&secret),
                        expires_at: channel.expires_at,
                    })
            }
            ChannelStep::Renew { channel_id } => match channels.get(channel_id) {
                None => continue,
                Some(c) => {
                    let channel = Channel {
                        channel_id: channel_id.clone(),
                        resource_id: c.resource_id.clone(),
                        expires_at: c.expires_at,
                    };
                    match client
                        .renew_channel(&mut session, &channel, now + lifetime)
                        .await
                    {
                        Ok(renewed) => Ok(ConnectionCommand::RecordChannelRenewed {
                            channel_id: channel_id.clone(),
                            expires_at: renewed.expires_at,
                        }),
                        // Gone at the provider: record it; the plan opens a
                        // new one.
                        Err(ProviderError::NotFound(_) | ProviderError::Gone(_)) => {
                            Ok(ConnectionCommand::RecordChannelClosed {
                                channel_id: channel_id.clone(),
                                reason: "not found at the provider on renewal".into(),
                            })
                        }
                        Err(e) => Err(e),
                    }
                }
            },
            ChannelStep::Close { channel_id } => {
                let closed = match channels.get(channel_id) {
                    None => Ok(()),
                    Some(c) => {
                        let channel = Channel {
                            channel_id: channel_id.clone(),
                            resource_id: c.resource_id.clone(),
                            expires_at: c.expires_at,
                        };
                        client.close_channel(&mut session, &channel).await
                    }
                };
                match closed {
                    Ok(()) | Err(ProviderError::NotFound(_) | ProviderError::Gone(_)) => {
                        Ok(ConnectionCommand::RecordChannelClosed {
                            channel_id: channel_id.clone(),
                            reason: "stopped".into(),
                        })
                    }
                    Err(e) => Err(e),
                }
            }
        };
        keep_rotated_token(runtime, id, &mut session).await;
        let command = match result {
            Ok(command) => command,
            Err(ProviderError::Reauthorize(reason)) => ConnectionCommand::RecordFailure {
                class: FailureClass::Reauthorize,
                kind: "reauthorize".into(),
                message: reason,
                unit_random: rand::random(),
                attempt_started: Some(attempt_started),
            },
            Err(e) => return Err(format!("{step:?}: {e}")),
        };
        record(actor, command).await?;
    }
    Ok(())
}
