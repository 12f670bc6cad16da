//! The SQL of the cluster tables (schema/0007_cluster.sql). Every expiry is
//! compared with the database's `now()`, so nodes' clocks never matter;
//! every statement that changes a lease carries its condition (owner, or
//! free/expired), so two nodes can never both win a slice.

use crate::core::cluster::{Lease, LEASE_TTL};
use crate::store::StoreError;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;
use uuid::Uuid;

/// The lease table as read in one statement, with the database's `now`.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub now: DateTime<Utc>,
    pub leases: Vec<Lease>,
    /// Address of each live lease's owner, by slice (`None`: free, expired,
    /// or the owner has no `nodes` row).
    pub addresses: Vec<Option<String>>,
    /// Live nodes (heartbeat within a lease's lifetime, not stopping).
    pub live: Vec<String>,
}

fn ttl_secs() -> f64 {
    LEASE_TTL.as_secs_f64()
}

fn slices_param(slices: &[u16]) -> Vec<i32> {
    slices.iter().map(|s| i32::from(*s)).collect()
}

fn to_slices(rows: &[tokio_postgres::Row]) -> Result<Vec<u16>, StoreError> {
    rows.iter()
        .map(|r| {
            let s: i32 = r.try_get(0)?;
            u16::try_from(s).map_err(|_| StoreError::BadData(format!("slice {s} out of range")))
        })
        .collect()
}

/// Records that `node` is alive at `address`, with its counters.
pub async fn heartbeat(
    pool: &Pool,
    node: &str,
    address: &str,
    forwarded: u64,
    inboxed: u64,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO nodes (name, address, forwarded, inboxed) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO UPDATE SET address = EXCLUDED.address, last_beat = now(), \
               stopping = false, forwarded = EXCLUDED.forwarded, inboxed = EXCLUDED.inboxed",
            &[&node, &address, &(forwarded as i64), &(inboxed as i64)],
        )
        .await?;
    Ok(())
}

/// Marks `node` as leaving: the others stop counting it in their shares.
pub async fn mark_stopping(pool: &Pool, node: &str) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "UPDATE nodes SET stopping = true, last_beat = now() WHERE name = $1",
            &[&node],
        )
        .await?;
    Ok(())
}

/// Forgets `node` (after it released everything) and nodes silent for an
/// hour (SIGKILLed long ago).
pub async fn forget(pool: &Pool, node: &str) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute(
            "DELETE FROM nodes WHERE name = $1 OR last_beat < now() - interval '1 hour'",
            &[&node],
        )
        .await?;
    Ok(())
}

/// The lease table, live nodes and the database's `now`.
pub async fn snapshot(pool: &Pool) -> Result<Snapshot, StoreError> {
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT l.slice, l.owner, l.expires_at, n.address, now() \
             FROM leases l LEFT JOIN nodes n ON n.name = l.owner ORDER BY l.slice",
            &[],
        )
        .await?;
    let live_rows = client
        .query(
            "SELECT name FROM nodes WHERE last_beat > now() - make_interval(secs => $1) \
             AND NOT stopping ORDER BY name",
            &[&ttl_secs()],
        )
        .await?;
    let mut now = Utc::now();
    let mut leases = Vec::with_capacity(rows.len());
    let mut addresses = Vec::with_capacity(rows.len());
    for r in &rows {
        now = r.try_get(4)?;
        let slice: i32 = r.try_get(0)?;
        let lease = Lease {
            slice: u16::try_from(slice)
                .map_err(|_| StoreError::BadData(format!("slice {slice} out of range")))?,
            owner: r.try_get(1)?,
            expires_at: r.try_get(2)?,
        };
        addresses.push(if lease.is_live(now) {
            r.try_get(3)?
        } else {
            None
        });
        leases.push(lease);
    }
    let live = live_rows
        .iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()?;
    Ok(Snapshot {
        now,
        leases,
        addresses,
        live,
    })
}

/// The live owner of `slice` and its address, as the table says now.
pub async fn live_owner(pool: &Pool, slice: u16) -> Result<Option<super::link::Owner>, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_opt(
            "SELECT l.owner, n.address FROM leases l JOIN nodes n ON n.name = l.owner \
             WHERE l.slice = $1 AND l.expires_at > now()",
            &[&i32::from(slice)],
        )
        .await?;
    row.map(|r| {
        Ok(super::link::Owner {
            node: r.try_get(0)?,
            address: r.try_get(1)?,
        })
    })
    .transpose()
}

/// Extends the leases `node` still holds among `slices`; returns those renewed.
pub async fn renew(pool: &Pool, node: &str, slices: &[u16]) -> Result<Vec<u16>, StoreError> {
    if slices.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await?;
    let rows = client
        .query(
            "UPDATE leases SET expires_at = now() + make_interval(secs => $3) \
             WHERE owner = $1 AND slice = ANY($2) AND expires_at > now() RETURNING slice",
            &[&node, &slices_param(slices), &ttl_secs()],
        )
        .await?;
    to_slices(&rows)
}

/// Claims those of `slices` that are free or expired, each with a new
/// epoch, in one conditional `UPDATE`; returns the slices won.
pub async fn claim(pool: &Pool, node: &str, slices: &[u16]) -> Result<Vec<u16>, StoreError> {
    if slices.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await?;
    let rows = client
        .query(
            "UPDATE leases SET owner = $1, epoch = nextval('lease_epochs'), \
               expires_at = now() + make_interval(secs => $3), claimed_at = now() \
             WHERE slice = ANY($2) AND (owner IS NULL OR expires_at <= now()) RETURNING slice",
            &[&node, &slices_param(slices), &ttl_secs()],
        )
        .await?;
    to_slices(&rows)
}

/// Gives up `slices` (only those `node` holds): free for others at once.
pub async fn release(pool: &Pool, node: &str, slices: &[u16]) -> Result<u64, StoreError> {
    if slices.is_empty() {
        return Ok(0);
    }
    let client = pool.get().await?;
    Ok(client
        .execute(
            "UPDATE leases SET owner = NULL, expires_at = now() \
             WHERE owner = $1 AND slice = ANY($2)",
            &[&node, &slices_param(slices)],
        )
        .await?)
}

/// Makes a notification durable for the owner to drain. `Ok(false)`: the
/// same (connection, key) already waits there.
pub async fn inbox_put(
    pool: &Pool,
    connection: Uuid,
    slice: u16,
    key: &str,
    channel_id: &str,
    node: &str,
) -> Result<bool, StoreError> {
    let client = pool.get().await?;
    let n = client
        .execute(
            "INSERT INTO inbox (connection_id, slice, dedupe_key, channel_id, accepted_by) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (connection_id, dedupe_key) DO NOTHING",
            &[&connection, &i32::from(slice), &key, &channel_id, &node],
        )
        .await?;
    Ok(n == 1)
}

/// One waiting notification.
#[derive(Debug, Clone)]
pub struct InboxRow {
    pub id: i64,
    pub connection: Uuid,
    pub key: String,
    pub channel_id: String,
}

/// The oldest waiting notifications of `slices`, in acceptance order.
pub async fn inbox_take(
    pool: &Pool,
    slices: &[u16],
    limit: i64,
) -> Result<Vec<InboxRow>, StoreError> {
    if slices.is_empty() {
        return Ok(Vec::new());
    }
    let client = pool.get().await?;
    let rows = client
        .query(
            "SELECT id, connection_id, dedupe_key, channel_id FROM inbox \
             WHERE slice = ANY($1) ORDER BY id LIMIT $2",
            &[&slices_param(slices), &limit],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(InboxRow {
                id: r.try_get(0)?,
                connection: r.try_get(1)?,
                key: r.try_get(2)?,
                channel_id: r.try_get(3)?,
            })
        })
        .collect()
}

pub async fn inbox_done(pool: &Pool, id: i64) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute("DELETE FROM inbox WHERE id = $1", &[&id])
        .await?;
    Ok(())
}

/// One node as `calsync cluster status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub name: String,
    pub address: String,
    pub started_at: DateTime<Utc>,
    pub beat_age_ms: i64,
    pub stopping: bool,
    pub live: bool,
    pub slices: i64,
    /// Age of its oldest lease renewal, in ms (how far behind renewals are).
    pub oldest_lease_age_ms: Option<i64>,
    pub forwarded: i64,
    pub inboxed: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterStatus {
    pub nodes: Vec<NodeStatus>,
    pub slices_unowned: i64,
    pub inbox_waiting: i64,
    pub oldest_inbox_age_ms: Option<i64>,
}

pub async fn status(pool: &Pool) -> Result<ClusterStatus, StoreError> {
    let client = pool.get().await?;
    let ttl = ttl_secs();
    let rows = client
        .query(
            "SELECT n.name, n.address, n.started_at, \
                    (extract(epoch FROM now() - n.last_beat) * 1000)::bigint, n.stopping, \
                    n.last_beat > now() - make_interval(secs => $1) AND NOT n.stopping, \
                    count(l.slice), \
                    (max(extract(epoch FROM now() - (l.expires_at - make_interval(secs => $1)))) * 1000)::bigint, \
                    n.forwarded, n.inboxed \
             FROM nodes n LEFT JOIN leases l ON l.owner = n.name AND l.expires_at > now() \
             GROUP BY n.name ORDER BY n.name",
            &[&ttl],
        )
        .await?;
    let nodes = rows
        .iter()
        .map(|r| {
            Ok(NodeStatus {
                name: r.try_get(0)?,
                address: r.try_get(1)?,
                started_at: r.try_get(2)?,
                beat_age_ms: r.try_get(3)?,
                stopping: r.try_get(4)?,
                live: r.try_get(5)?,
                slices: r.try_get(6)?,
                oldest_lease_age_ms: r.try_get(7)?,
                forwarded: r.try_get(8)?,
                inboxed: r.try_get(9)?,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    let unowned: i64 = client
        .query_one(
            "SELECT count(*) FROM leases WHERE owner IS NULL OR expires_at <= now()",
            &[],
        )
        .await?
        .try_get(0)?;
    let inbox = client
        .query_one(
            "SELECT count(*), (extract(epoch FROM now() - min(accepted_at)) * 1000)::bigint FROM inbox",
            &[],
        )
        .await?;
    Ok(ClusterStatus {
        nodes,
        slices_unowned: unowned,
        inbox_waiting: inbox.try_get(0)?,
        oldest_inbox_age_ms: inbox.try_get(1)?,
    })
}
