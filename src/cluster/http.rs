//! The routes peers forward to, under `/internal/v1/`, behind the cluster
//! secret (header `x-calsync-cluster-secret`, compared in constant time).
//! Off (404) unless this node is in cluster mode. A receiving node never
//! forwards again: if it does not hold the slice it answers `not_owner`,
//! and the sender falls back to the inbox (notifications) or a 503.

use super::wire::{CommandRequest, Held, NotifyRequest, Outcome, WireAck, SECRET_HEADER};
use super::ClusterLink;
use crate::core::cluster::slice_of;
use crate::core::ids::ConnectionId;
use crate::core::state::ConnectionState;
use crate::http::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::collections::BTreeSet;
use std::sync::Arc;
use uuid::Uuid;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/internal/v1/connections/{id}/command", post(command))
        .route("/internal/v1/connections/{id}/notify", post(notify))
        .route("/internal/v1/connections/{id}/state", get(inspect))
        .route(
            "/internal/v1/connections/{id}/unquarantine",
            post(unquarantine),
        )
        .route("/internal/v1/cluster/held", get(held))
}

/// The link, if the caller presented the cluster secret; else the status.
fn authorised(state: &AppState, headers: &HeaderMap) -> Result<Arc<ClusterLink>, StatusCode> {
    let Some(link) = state.connections.cluster() else {
        return Err(StatusCode::NOT_FOUND);
    };
    let presented = headers
        .get(SECRET_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !link.secret_matches(presented) {
        return Err(StatusCode::UNAUTHORIZED);
    }
    Ok(link.clone())
}

/// The connection, if the caller presented the cluster secret and this
/// node holds its slice; else the answer to give (the status, or
/// `not_owner` so the sender tries elsewhere).
fn held_here<T: serde::Serialize>(
    state: &AppState,
    headers: &HeaderMap,
    id: Uuid,
) -> Result<ConnectionId, Box<Response>> {
    let link = authorised(state, headers).map_err(|s| Box::new(s.into_response()))?;
    let id = ConnectionId::from_uuid(id);
    if !link.owns(id) {
        return Err(Box::new(Json(Outcome::<T>::NotOwner).into_response()));
    }
    Ok(id)
}

async fn command(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Json(body): Json<CommandRequest>,
) -> Response {
    let id = match held_here::<WireAck>(&state, &headers, id) {
        Ok(id) => id,
        Err(refusal) => return *refusal,
    };
    let result = state
        .connections
        .command_here(id, body.input, body.correlation_id)
        .await;
    Json(Outcome::<WireAck>::from_result(result)).into_response()
}

async fn notify(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
    Json(body): Json<NotifyRequest>,
) -> Response {
    let id = match held_here::<WireAck>(&state, &headers, id) {
        Ok(id) => id,
        Err(refusal) => return *refusal,
    };
    let result = state
        .connections
        .notify_here(id, body.key, body.channel_id)
        .await;
    Json(Outcome::<WireAck>::from_result(result)).into_response()
}

async fn inspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let id = match held_here::<ConnectionState>(&state, &headers, id) {
        Ok(id) => id,
        Err(refusal) => return *refusal,
    };
    let result = state.connections.inspect_here(id).await;
    Json(Outcome::<ConnectionState>::from_result(result)).into_response()
}

async fn unquarantine(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Response {
    let id = match held_here::<bool>(&state, &headers, id) {
        Ok(id) => id,
        Err(refusal) => return *refusal,
    };
    let result = state
        .connections
        .lift_quarantine_here(id)
        .await
        .map(|()| true)
        .map_err(crate::actors::SendError::Unavailable);
    Json(Outcome::<bool>::from_result(result)).into_response()
}

async fn held(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let link = match authorised(&state, &headers) {
        Ok(l) => l,
        Err(status) => return status.into_response(),
    };
    let slices = link.held_slices();
    let set: BTreeSet<u16> = slices.iter().copied().collect();
    let connections = &state.connections;
    Json(Held {
        node: link.node.clone(),
        active_actors: connections.count_where(|_| true),
        actors_outside_held: connections.count_where(|id| !set.contains(&slice_of(&id.as_uuid()))),
        slices,
    })
    .into_response()
}
