//! Several `serve` nodes on one drill database (docs/CLUSTER.md): spawn,
//! SIGKILL, SIGSTOP/SIGCONT, SIGTERM and restart each one, and sample what
//! each says it holds. Used by the `node-kill` and `rolling-restart` drills
//! and by `tests/cluster.rs`.

use super::harness::Harness;
use crate::cluster::wire::{Held, SECRET_HEADER};
use crate::core::cluster::slice_of;
use anyhow::{anyhow, bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use rand::RngCore;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::process::Child;

pub struct Node {
    pub name: String,
    pub port: u16,
    pub base: String,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Node {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

pub struct Nodes {
    /// The drill's database and simulators; its `base` points at a live
    /// node for admin calls ([`Nodes::use_node`]).
    pub h: Harness,
    pub nodes: Vec<Node>,
    pub secret: String,
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Nodes {
    /// A database, the simulators and `n` cluster nodes (`node-0` …), all
    /// ready, flags on.
    pub async fn start(name: &str, n: usize) -> anyhow::Result<Nodes> {
        Self::start_with(name, n, None).await
    }

    /// Like [`Nodes::start`], running serve from `exe` (tests pass
    /// `CARGO_BIN_EXE_calsync`; `None`: this process's own binary).
    pub async fn start_with(name: &str, n: usize, exe: Option<PathBuf>) -> anyhow::Result<Nodes> {
        let mut h = Harness::prepare(name).await?;
        h.exe = exe;
        let mut secret = [0u8; 24];
        rand::rng().fill_bytes(&mut secret);
        let mut nodes = Nodes {
            h,
            nodes: Vec::new(),
            secret: hex::encode(secret),
        };
        for i in 0..n {
            let port = free_port()?;
            nodes.nodes.push(Node {
                name: format!("node-{i}"),
                port,
                base: format!("http://127.0.0.1:{port}"),
                log: nodes.h.work_dir().join(format!("node-{i}.log")),
                child: None,
            });
        }
        nodes.use_node(0);
        for i in 0..n {
            nodes.spawn(i).await?;
        }
        for flag in ["sync_enabled", "jobs_enabled", "webhooks_enabled"] {
            nodes.h.set_flag(flag, true).await?;
        }
        Ok(nodes)
    }

    /// Admin calls (and the harness's helpers) go to node `i` from now on.
    pub fn use_node(&mut self, i: usize) {
        self.h.port = self.nodes[i].port;
        self.h.base = self.nodes[i].base.clone();
    }

    /// (Re)starts node `i` and waits for its `/readyz`.
    pub async fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let node = &self.nodes[i];
        let child = self
            .h
            .serve_command(node.port, &node.log)?
            .env("CALSYNC_NODE_NAME", &node.name)
            .env("CALSYNC_CLUSTER_SECRET", &self.secret)
            .spawn()
            .with_context(|| format!("cannot spawn {}", node.name))?;
        self.nodes[i].child = Some(child);
        let ready = format!("{}/readyz", self.nodes[i].base);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .h
                .http
                .get(&ready)
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "{} not ready within 30 s (log: {})",
                    self.nodes[i].name,
                    self.nodes[i].log.display()
                );
            }
            // Poll interval: readiness is asked again right after.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn signal(&self, i: usize, signal: Signal) -> anyhow::Result<()> {
        let pid = self.nodes[i]
            .pid()
            .ok_or_else(|| anyhow!("{} is not running", self.nodes[i].name))?;
        kill(Pid::from_raw(pid as i32), signal)?;
        Ok(())
    }

    /// SIGKILL: a node that vanishes holding its leases.
    pub async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut child) = self.nodes[i].child.take() {
            child.start_kill()?;
            child.wait().await?;
        }
        Ok(())
    }

    /// SIGSTOP: a node that stops without knowing (a long GC pause, a
    /// frozen VM).
    pub fn pause(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, Signal::SIGSTOP)
    }

    pub fn resume(&self, i: usize) -> anyhow::Result<()> {
        self.signal(i, Signal::SIGCONT)
    }

    /// SIGTERM and wait for the exit (hand-over, then drain).
    pub async fn terminate(&mut self, i: usize) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(i, Signal::SIGTERM)?;
        let mut child = self.nodes[i]
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.nodes[i].name))?;
        match tokio::time::timeout(Duration::from_secs(30), child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                bail!("{} did not exit within 30 s of SIGTERM", self.nodes[i].name)
            }
        }
    }

    /// What node `i` says it holds (`None`: not answering).
    pub async fn held(&self, i: usize) -> Option<Held> {
        if !self.nodes[i].is_running() {
            return None;
        }
        let r = self
            .h
            .http
            .get(format!("{}/internal/v1/cluster/held", self.nodes[i].base))
            .header(SECRET_HEADER, &self.secret)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// Every node's answer, asked at the same moment.
    pub async fn sample(&self) -> Vec<Option<Held>> {
        futures::future::join_all((0..self.nodes.len()).map(|i| self.held(i))).await
    }

    /// The live owner of connection `id`'s slice per the lease table.
    pub async fn owner_of(&self, id: &str) -> anyhow::Result<Option<String>> {
        let uuid = uuid::Uuid::parse_str(id)?;
        let slice = i32::from(slice_of(&uuid));
        let row = self
            .h
            .db()
            .await?
            .query_one(
                "SELECT owner FROM leases WHERE slice = $1 AND expires_at > now()",
                &[&slice],
            )
            .await
            .ok();
        Ok(row.and_then(|r| r.get(0)))
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Stops every node (SIGTERM), then the database and simulators.
    pub async fn stop(mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].is_running() {
                let _ = self.resume(i);
                let _ = self.terminate(i).await;
            }
        }
        self.h.stop().await;
    }
}

/// Slices that two answers of one sample both claim to hold.
pub fn doubly_held(sample: &[Option<Held>]) -> Vec<(u16, String, String)> {
    let mut by_slice: BTreeMap<u16, &str> = BTreeMap::new();
    let mut doubles = Vec::new();
    for held in sample.iter().flatten() {
        for s in &held.slices {
            if let Some(other) = by_slice.insert(*s, &held.node) {
                doubles.push((*s, other.to_string(), held.node.clone()));
            }
        }
    }
    doubles
}

/// Whether a sample shows `live` nodes holding every slice, each its fair
/// share (±1 of the others).
pub fn evenly_spread(sample: &[Option<Held>], live: usize) -> bool {
    let counts: Vec<usize> = sample.iter().flatten().map(|h| h.slices.len()).collect();
    counts.len() == live
        && counts.iter().sum::<usize>() == usize::from(crate::core::cluster::SLICES)
        && counts
            .iter()
            .max()
            .zip(counts.iter().min())
            .is_some_and(|(a, b)| a - b <= 1)
}
