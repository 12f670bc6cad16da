//! Running planned channel upkeep (open, renew, close) for one connection,
//! outside its actor. Every result goes back through the actor as an
//! input; a failed step is recorded for its calendar (the core backs its
//! upkeep off) and the other steps still run.

use super::runtime::SyncRuntime;
use super::task_support::{keep_rotated_token, load_session, Recorder};
use crate::core::channels::ChannelStep;
use crate::core::decide::ConnectionCommand;
use crate::core::fault::{stops_run, Fault};
use crate::core::ids::{CalendarProvider, ConnectionId};
use crate::core::inflight::Task;
use crate::core::state::ChannelState;
use crate::providers::{CalendarApi, Channel, ChannelRequest};
use base64::Engine;
use litemap::LiteMap;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The SHA-256 (hex) the log and the `channels` table keep of a secret.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A fresh per-channel secret: 32 random bytes, URL-safe base64 (43
/// characters, within Google's 256 and Graph's 128 character limits).
fn new_secret(runtime: &SyncRuntime) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(runtime.entropy.bytes32())
}

pub async fn run(
    recorder: Arc<dyn Recorder>,
    runtime: Arc<SyncRuntime>,
    id: ConnectionId,
    provider: CalendarProvider,
    channels: LiteMap<String, ChannelState>,
    steps: Vec<ChannelStep>,
) {
    let mut calls = 0;
    if let Err(e) = upkeep(
        &*recorder, &runtime, id, provider, &channels, steps, &mut calls,
    )
    .await
    {
        tracing::warn!(connection_id = %id, error = %e, "channel upkeep stopped");
    }
    recorder.finished(Task::Channels, calls);
}

async fn upkeep(
    recorder: &dyn Recorder,
    runtime: &SyncRuntime,
    id: ConnectionId,
    provider: CalendarProvider,
    channels: &LiteMap<String, ChannelState>,
    steps: Vec<ChannelStep>,
    calls: &mut u32,
) -> Result<(), String> {
    let attempt_started = runtime.clock.now();
    let session = match load_session(runtime, id).await {
        Ok(s) => s,
        Err(e) => return Err(e.to_string()),
    };
    let client = runtime.client(provider);
    let base = runtime.webhook_base.as_deref().unwrap_or_default();
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
    let Some(mut session) = session else {
        // No grant: nothing can be opened; a close is simply forgotten
        // (the channel expires on its own).
        for step in steps {
            if let ChannelStep::Close { channel_id } = step {
                recorder
                    .record(ConnectionCommand::RecordChannelClosed {
                        channel_id,
                        reason: "left to expire: no credentials".into(),
                    })
                    .await?;
            }
        }
        return Ok(());
    };
    for step in steps {
        let now = runtime.clock.now();
        *calls += 1;
        let command = match &step {
            ChannelStep::Open { calendar } => {
                let secret = new_secret(runtime);
                let request = ChannelRequest {
                    channel_id: runtime.entropy.uuid().simple().to_string(),
                    address: address.clone(),
                    lifecycle_address: (provider == CalendarProvider::Microsoft)
                        .then(|| format!("{base}/webhooks/graph/lifecycle")),
                    secret: secret.clone(),
                    expires_at: now + lifetime,
                };
                match client.open_channel(&mut session, calendar, &request).await {
                    Ok(channel) => ConnectionCommand::RecordChannelOpened {
                        calendar: calendar.clone(),
                        channel_id: channel.channel_id,
                        resource_id: channel.resource_id,
                        secret_sha256: secret_digest(&secret),
                        expires_at: channel.expires_at,
                    },
                    Err(e) => {
                        crate::metrics::channel_upkeep_failed(provider.as_str(), "open");
                        failure(
                            runtime,
                            calendar.clone(),
                            "open",
                            None,
                            e.fault(),
                            attempt_started,
                        )
                    }
                }
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
                        Ok(renewed) => ConnectionCommand::RecordChannelRenewed {
                            channel_id: channel_id.clone(),
                            expires_at: renewed.expires_at,
                        },
                        Err(e) => {
                            crate::metrics::channel_upkeep_failed(provider.as_str(), "renew");
                            failure(
                                runtime,
                                c.calendar.clone(),
                                "renew",
                                Some(channel_id.clone()),
                                e.fault(),
                                attempt_started,
                            )
                        }
                    }
                }
            },
            // One attempt: whatever the provider says, the channel is
            // forgotten (one we failed to stop expires by itself).
            ChannelStep::Close { channel_id } => {
                let reason = match channels.get(channel_id) {
                    None => "stopped".to_string(),
                    Some(c) => {
                        let channel = Channel {
                            channel_id: channel_id.clone(),
                            resource_id: c.resource_id.clone(),
                            expires_at: c.expires_at,
                        };
                        match client.close_channel(&mut session, &channel).await {
                            Ok(()) => "stopped".to_string(),
                            Err(e) => format!("left to expire: {e}"),
                        }
                    }
                };
                ConnectionCommand::RecordChannelClosed {
                    channel_id: channel_id.clone(),
                    reason,
                }
            }
        };
        keep_rotated_token(runtime, id, &mut session).await;
        let stop = matches!(
            &command,
            ConnectionCommand::RecordChannelFailure { fault, .. } if stops_run(fault)
        );
        recorder.record(command).await?;
        if stop {
            return Ok(());
        }
    }
    Ok(())
}

fn failure(
    runtime: &SyncRuntime,
    calendar: crate::core::ids::CalendarId,
    op: &str,
    channel_id: Option<String>,
    fault: Fault,
    attempt_started: chrono::DateTime<chrono::Utc>,
) -> ConnectionCommand {
    tracing::warn!(calendar = %calendar, op, kind = %fault.label, error = %fault.message,
        "channel upkeep failed");
    ConnectionCommand::RecordChannelFailure {
        calendar,
        op: op.to_string(),
        channel_id,
        fault,
        unit_random: runtime.entropy.unit(),
        attempt_started: Some(attempt_started),
    }
}
