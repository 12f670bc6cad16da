//! What this node knows of the cluster, shared by the front door, the
//! supervisor, the internal routes and the lease task.
//!
//! Ownership is a belief with an end: the slices this node renewed or
//! claimed, valid until [`BELIEF`] after the start of that tick. `owns`
//! reads the clock, so a node that stops ticking (database gone, process
//! paused) stops acting as the owner on its own, a [`crate::core::cluster::STOP_BOUND`] before
//! any other node may claim its slices.

use super::leases;
use super::wire::{CommandRequest, NotifyRequest, Outcome, WireAck, SECRET_HEADER};
use crate::actors::{Ack, SendError};
use crate::core::cluster::{slice_of, BELIEF, SLICES};
use crate::core::decide::ConnectionCommand;
use crate::core::ids::ConnectionId;
use crate::core::state::ConnectionState;
use deadpool_postgres::Pool;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;
use uuid::Uuid;

/// How long a forwarded request may take before the caller falls back
/// (inbox for notifications, 503 otherwise).
pub const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// A live owner of a slice, as of the last tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub node: String,
    pub address: String,
}

struct HeldSlices {
    slices: Vec<bool>,
    until: Option<Instant>,
}

pub struct ClusterLink {
    pub node: String,
    /// Where peers reach this node (`http://host:port`).
    pub address: String,
    secret_digest: [u8; 32],
    secret: String,
    held: RwLock<HeldSlices>,
    owners: RwLock<Vec<Option<Owner>>>,
    http: reqwest::Client,
    pub(super) pool: Pool,
    pub forwarded: AtomicU64,
    pub inboxed: AtomicU64,
    draining: AtomicBool,
    /// Serialises the lease task's ticks with the hand-over on shutdown.
    pub(super) tick_lock: tokio::sync::Mutex<()>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    // Poisoning only means a panic elsewhere; the value is still whole.
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// Why a forward did not reach an owner that answered.
enum Miss {
    /// No live owner known, or it is this node (moving).
    NoOwner,
    /// The owner said it no longer holds the slice, or did not answer.
    Unreachable(String),
}

impl ClusterLink {
    pub fn new(
        node: String,
        address: String,
        secret: String,
        pool: Pool,
    ) -> anyhow::Result<ClusterLink> {
        if secret.len() < 16 {
            anyhow::bail!("the cluster secret must be at least 16 characters");
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(1))
            .timeout(FORWARD_TIMEOUT)
            .build()?;
        Ok(ClusterLink {
            node,
            address: address.trim_end_matches('/').to_string(),
            secret_digest: Sha256::digest(secret.as_bytes()).into(),
            secret,
            held: RwLock::new(HeldSlices {
                slices: vec![false; usize::from(SLICES)],
                until: None,
            }),
            owners: RwLock::new(vec![None; usize::from(SLICES)]),
            http,
            pool,
            forwarded: AtomicU64::new(0),
            inboxed: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            tick_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether `presented` is the cluster secret, compared in constant time
    /// (over digests, so not even the length leaks).
    pub fn secret_matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        bool::from(digest.ct_eq(&self.secret_digest))
    }

    pub fn owns_slice(&self, slice: u16) -> bool {
        let held = read(&self.held);
        held.until.is_some_and(|t| Instant::now() < t)
            && held
                .slices
                .get(usize::from(slice))
                .copied()
                .unwrap_or(false)
    }

    pub fn owns(&self, id: ConnectionId) -> bool {
        self.owns_slice(slice_of(&id.as_uuid()))
    }

    /// The slices held right now (empty once the belief ran out).
    pub fn held_slices(&self) -> Vec<u16> {
        let held = read(&self.held);
        if held.until.is_none_or(|t| Instant::now() >= t) {
            return Vec::new();
        }
        (0..SLICES)
            .filter(|s| held.slices[usize::from(*s)])
            .collect()
    }

    /// Whether the belief ran out (no successful tick for [`BELIEF`]).
    pub fn belief_expired(&self) -> bool {
        read(&self.held).until.is_none_or(|t| Instant::now() >= t)
    }

    /// After a tick that started at `started`: these are the slices held.
    pub(super) fn set_held(&self, slices: &[u16], started: Instant) {
        let mut held = write(&self.held);
        held.slices.iter_mut().for_each(|s| *s = false);
        for s in slices {
            if let Some(slot) = held.slices.get_mut(usize::from(*s)) {
                *slot = true;
            }
        }
        held.until = Some(started + BELIEF);
    }

    /// Stops acting as the owner of `slices` at once.
    pub(super) fn drop_held(&self, slices: &[u16]) {
        let mut held = write(&self.held);
        for s in slices {
            if let Some(slot) = held.slices.get_mut(usize::from(*s)) {
                *slot = false;
            }
        }
    }

    pub(super) fn clear_held(&self) {
        let mut held = write(&self.held);
        held.slices.iter_mut().for_each(|s| *s = false);
        held.until = None;
    }

    pub(super) fn set_owners(&self, owners: Vec<Option<Owner>>) {
        *write(&self.owners) = owners;
    }

    pub fn owner_of(&self, slice: u16) -> Option<Owner> {
        read(&self.owners)
            .get(usize::from(slice))
            .cloned()
            .flatten()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub(super) fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Sends an input to its owner: the one known from the last tick, and
    /// if that fails (moved, not yet known, unreachable) the one the lease
    /// table names right now.
    async fn post<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        id: ConnectionId,
        what: &str,
        body: Option<&B>,
    ) -> Result<Outcome<T>, Miss> {
        let slice = slice_of(&id.as_uuid());
        let mut miss = Miss::NoOwner;
        let mut tried = None;
        if let Some(owner) = self.owner_of(slice).filter(|o| o.node != self.node) {
            match self.send(&owner, id, what, body).await {
                Ok(Outcome::NotOwner) => {}
                Ok(outcome) => return Ok(outcome),
                Err(m) => miss = m,
            }
            tried = Some(owner.node);
        }
        let fresh = leases::live_owner(&self.pool, slice)
            .await
            .ok()
            .flatten()
            .filter(|o| o.node != self.node && Some(&o.node) != tried.as_ref());
        match fresh {
            Some(owner) => match self.send(&owner, id, what, body).await {
                Ok(Outcome::NotOwner) => Err(Miss::NoOwner),
                other => other,
            },
            None => Err(miss),
        }
    }

    async fn send<B: serde::Serialize, T: DeserializeOwned>(
        &self,
        owner: &Owner,
        id: ConnectionId,
        what: &str,
        body: Option<&B>,
    ) -> Result<Outcome<T>, Miss> {
        let url = format!("{}/internal/v1/connections/{id}/{what}", owner.address);
        let request = match body {
            Some(b) => self.http.post(url).json(b),
            None => self.http.get(url),
        };
        let response = request
            .header(SECRET_HEADER, &self.secret)
            .send()
            .await
            .map_err(|e| Miss::Unreachable(format!("{}: {e}", owner.node)))?;
        if !response.status().is_success() {
            return Err(Miss::Unreachable(format!(
                "{} answered {}",
                owner.node,
                response.status()
            )));
        }
        let outcome: Outcome<T> = response
            .json()
            .await
            .map_err(|e| Miss::Unreachable(format!("{}: {e}", owner.node)))?;
        if !matches!(outcome, Outcome::NotOwner) {
            self.forwarded.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(super::metric_names::FORWARDED, "node" => self.node.clone())
                .increment(1);
        }
        Ok(outcome)
    }

    fn unavailable(id: ConnectionId, miss: Miss) -> SendError {
        match miss {
            Miss::NoOwner => SendError::Unavailable(format!(
                "connection {id}'s slice is moving between nodes; retry"
            )),
            Miss::Unreachable(why) => {
                SendError::Unavailable(format!("owner of connection {id} unreachable: {why}"))
            }
        }
    }

    /// A command for a connection owned elsewhere: the owner's answer, or
    /// 503 (retry) while the owner is unknown or unreachable.
    pub async fn forward_command(
        &self,
        id: ConnectionId,
        command: ConnectionCommand,
        correlation_id: Uuid,
    ) -> Result<Ack, SendError> {
        let body = CommandRequest {
            correlation_id,
            input: command,
        };
        match self.post::<_, WireAck>(id, "command", Some(&body)).await {
            Ok(outcome) => outcome
                .into_result()
                .unwrap_or_else(|| Err(Self::unavailable(id, Miss::NoOwner))),
            Err(miss) => Err(Self::unavailable(id, miss)),
        }
    }

    /// Lifts the quarantine of a connection owned elsewhere (the owner's
    /// supervisor holds it).
    pub async fn forward_lift_quarantine(&self, id: ConnectionId) -> Result<(), SendError> {
        match self.post::<_, bool>(id, "unquarantine", Some(&())).await {
            Ok(outcome) => outcome
                .into_result::<bool>()
                .unwrap_or_else(|| Err(Self::unavailable(id, Miss::NoOwner)))
                .map(|_| ()),
            Err(miss) => Err(Self::unavailable(id, miss)),
        }
    }

    /// The state of a connection owned elsewhere.
    pub async fn forward_inspect(&self, id: ConnectionId) -> Result<ConnectionState, SendError> {
        match self.post::<(), ConnectionState>(id, "state", None).await {
            Ok(outcome) => outcome
                .into_result()
                .unwrap_or_else(|| Err(Self::unavailable(id, Miss::NoOwner))),
            Err(miss) => Err(Self::unavailable(id, miss)),
        }
    }

    /// A notification for a connection owned elsewhere: the owner commits
    /// it (and answers `duplicate` from its window); when the owner is
    /// unknown, moving or unreachable, it is committed to the inbox here.
    pub async fn forward_notify(
        &self,
        id: ConnectionId,
        key: String,
        channel_id: String,
    ) -> Result<Ack, SendError> {
        let body = NotifyRequest {
            key: key.clone(),
            channel_id: channel_id.clone(),
        };
        match self.post::<_, WireAck>(id, "notify", Some(&body)).await {
            Ok(outcome) => match outcome.into_result() {
                Some(result) => result,
                None => self.inbox(id, &key, &channel_id).await,
            },
            Err(miss) => {
                if let Miss::Unreachable(why) = &miss {
                    tracing::info!(connection_id = %id, why = %why,
                        "owner unreachable; notification goes to the inbox");
                }
                self.inbox(id, &key, &channel_id).await
            }
        }
    }

    /// Commits a notification to the inbox. Answered `duplicate` when the
    /// same key already waits there; otherwise accepted (the owner's
    /// window drops it at drain time if it repeats one already committed).
    pub async fn inbox(
        &self,
        id: ConnectionId,
        key: &str,
        channel_id: &str,
    ) -> Result<Ack, SendError> {
        let slice = slice_of(&id.as_uuid());
        let inserted =
            leases::inbox_put(&self.pool, id.as_uuid(), slice, key, channel_id, &self.node)
                .await
                .map_err(|e| SendError::Unavailable(e.to_string()))?;
        if inserted {
            self.inboxed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(super::metric_names::INBOXED, "node" => self.node.clone())
                .increment(1);
        }
        Ok(Ack {
            version: 0,
            appended: 0,
            duplicate: !inserted,
        })
    }
}
