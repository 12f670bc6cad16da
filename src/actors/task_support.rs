//! What the sync, channel and outbound tasks share: reporting back through
//! the actor, and keeping a rotated refresh token.

use super::connection::ConnectionMsg;
use super::sync_task::SyncRuntime;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::ConnectionId;
use crate::providers::AuthSession;
use ractor::rpc::CallResult;
use ractor::ActorRef;
use std::time::Duration;
use uuid::Uuid;

/// Sends a command to the actor and waits until it is committed: the tasks
/// report every provider result as an input, never by touching state.
pub async fn record(
    actor: &ActorRef<ConnectionMsg>,
    command: ConnectionCommand,
) -> Result<(), String> {
    let sent = actor
        .call(
            |reply| ConnectionMsg::Internal {
                command,
                correlation_id: Uuid::new_v4(),
                reply,
            },
            Some(Duration::from_secs(60)),
        )
        .await;
    match sent {
        Ok(CallResult::Success(Ok(_))) => Ok(()),
        Ok(CallResult::Success(Err(e))) => Err(e.to_string()),
        _ => Err("connection actor not answering".into()),
    }
}

/// Microsoft rotates refresh tokens on every refresh: save the newest right
/// away, before anything else can fail and lose it.
pub async fn keep_rotated_token(
    runtime: &SyncRuntime,
    id: ConnectionId,
    session: &mut AuthSession,
) {
    if !session.refresh_token_rotated {
        return;
    }
    if let Err(e) = runtime.vault.save(&runtime.store, id, session).await {
        tracing::warn!(connection_id = %id, error = %e, "rotated refresh token not saved");
    }
    session.refresh_token_rotated = false;
}
