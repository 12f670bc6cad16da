//! Three `calsync serve` child processes on one PostgreSQL
//! (docs/CLUSTER.md): the slices spread evenly; any node accepts any
//! connection's notifications (forwarded to the owner, or made durable in
//! the inbox); a paused owner that resumes writes nothing it no longer
//! owns; a SIGKILLed node's connections are served by the others within
//! the lease's expiry; and no sample ever shows a slice held by two nodes.

use calsync::core::cluster::{slice_of, LEASE_TTL, TICK};
use calsync::drills::harness::google_request;
use calsync::drills::nodes::{doubly_held, evenly_spread, Nodes};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Polls `check` until it holds; false when `within` passed first.
async fn poll<F, Fut>(within: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        // Poll interval: the condition is checked again right after.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Samples every node's held slices at once, over and over, and keeps any
/// slice two nodes claimed in the same sample.
struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<AtomicUsize>,
    doubles: Arc<Mutex<Vec<(u16, String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(nodes: Arc<tokio::sync::RwLock<Nodes>>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(AtomicUsize::new(0));
        let doubles = Arc::new(Mutex::new(Vec::new()));
        let (s, n, d) = (stop.clone(), samples.clone(), doubles.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let sample = nodes.read().await.sample().await;
                d.lock().unwrap().extend(doubly_held(&sample));
                n.fetch_add(1, Ordering::Relaxed);
                // Sampling interval: the nodes are asked again right after.
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        });
        Sampler {
            stop,
            samples,
            doubles,
            task,
        }
    }

    async fn finish(self) -> (usize, Vec<(u16, String, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let d = self.doubles.lock().unwrap().clone();
        (self.samples.load(Ordering::Relaxed), d)
    }
}

async fn notifications_with_key(nodes: &Nodes, id: &str, number: u64) -> i64 {
    let sql = format!(
        "SELECT count(*) FROM events WHERE stream = 'connection-{id}' \
         AND event_type = 'notification_accepted' AND payload->>'key' LIKE '%:{number}'"
    );
    nodes.h.count(&sql).await.unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_slices_forward_survive_a_pause_and_a_kill() {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_calsync"));
    let nodes = Nodes::start_with("cluster-test", 3, Some(exe))
        .await
        .expect("three nodes");
    let nodes = Arc::new(tokio::sync::RwLock::new(nodes));
    let sampler = Sampler::start(nodes.clone());

    // 1. An even spread: 342/341/341, every slice held.
    let spread = poll(Duration::from_secs(30), || async {
        evenly_spread(&nodes.read().await.sample().await, 3)
    })
    .await;
    assert!(spread, "{:?}", nodes.read().await.sample().await);

    // 2. Connections created through node-0, whoever owns them.
    let mut conns = Vec::new();
    for k in 0..4 {
        let n = nodes.read().await;
        let (id, channel) =
            n.h.google_ready(&format!("user{k}@example.com"), &format!("pp-{k}"))
                .await
                .expect("connection ready through node-0");
        conns.push((id, channel));
    }

    // 3. Every node accepts every connection's notifications; a repeat
    // through another node is answered `duplicate` by the owner.
    {
        let n = nodes.read().await;
        let mut number = 100;
        for (id, channel) in &conns {
            for node in &n.nodes {
                number += 1;
                let r = google_request(&n.h.http, &node.base, channel, number)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200, "{} via {}", id, node.name);
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["status"], "accepted", "{body}");
                assert_eq!(notifications_with_key(&n, id, number).await, 1);
                // The same notification through the next node.
                let other = &n.nodes[(n.index_of(&node.name).unwrap() + 1) % 3];
                let r = google_request(&n.h.http, &other.base, channel, number)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["status"], "duplicate", "{body}");
                assert_eq!(notifications_with_key(&n, id, number).await, 1);
            }
        }
        // Two thirds of those went through a node that does not own the
        // connection; heartbeats report the forwarded counts.
        let forwarded = poll(Duration::from_secs(5), || async {
            n.h.count("SELECT coalesce(sum(forwarded), 0)::bigint FROM nodes")
                .await
                .unwrap_or(0)
                > 0
        })
        .await;
        assert!(forwarded, "no node reports a forwarded request");
    }

    // 4. Pause the owner of the first connection; the others take its
    // slices when its leases expire; what it did while stale is nothing.
    let (paused_id, paused_channel) = conns[0].clone();
    let owner = nodes
        .read()
        .await
        .owner_of(&paused_id)
        .await
        .unwrap()
        .unwrap();
    let p = nodes.read().await.index_of(&owner).unwrap();
    nodes.read().await.pause(p).unwrap();
    let slice = slice_of(&uuid::Uuid::parse_str(&paused_id).unwrap());
    let moved = poll(LEASE_TTL + TICK * 5, || async {
        let sample = nodes.read().await.sample().await;
        sample
            .iter()
            .flatten()
            .any(|h| h.node != owner && h.slices.contains(&slice))
    })
    .await;
    assert!(moved, "the paused node's slice was not taken over");
    // The log's head once another node holds the slice: what the paused
    // owner committed before its pause (a sync round finishing just then)
    // was written while it held the lease; from here on it holds nothing
    // until it claims anew, so anything it writes is checked below.
    let head_before = nodes
        .read()
        .await
        .h
        .count("SELECT coalesce(max(position), 0) FROM events")
        .await
        .unwrap();
    {
        let n = nodes.read().await;
        let live = (p + 1) % 3;
        let r = google_request(&n.h.http, &n.nodes[live].base, &paused_channel, 9001)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            poll(Duration::from_secs(10), || async {
                notifications_with_key(&n, &paused_id, 9001).await == 1
            })
            .await
        );
        n.resume(p).unwrap();
    }
    // The resumed node rejoins and the spread is even again.
    let spread = poll(Duration::from_secs(30), || async {
        evenly_spread(&nodes.read().await.sample().await, 3)
    })
    .await;
    assert!(spread, "{:?}", nodes.read().await.sample().await);
    // Every event the resumed node wrote since its pause is in a slice it
    // holds now, committed after it claimed that slice anew.
    {
        let n = nodes.read().await;
        let client = n.h.db().await.unwrap();
        let rows = client
            .query(
                "SELECT e.stream, e.committed_at, e.event_type FROM events e \
                 WHERE e.position > $1 AND e.metadata->>'node' = $2",
                &[&head_before, &owner],
            )
            .await
            .unwrap();
        for r in rows {
            let stream: String = r.get(0);
            let at: chrono::DateTime<chrono::Utc> = r.get(1);
            let Some(conn) = stream.strip_prefix("connection-") else {
                continue;
            };
            let s = i32::from(slice_of(&uuid::Uuid::parse_str(conn).unwrap()));
            let lease = client
                .query_one(
                    "SELECT owner, claimed_at FROM leases WHERE slice = $1",
                    &[&s],
                )
                .await
                .unwrap();
            let lease_owner: Option<String> = lease.get(0);
            let claimed: Option<chrono::DateTime<chrono::Utc>> = lease.get(1);
            let event_type: String = r.get(2);
            assert_eq!(
                lease_owner.as_deref(),
                Some(owner.as_str()),
                "{stream}: {event_type} at {at}; the slice's lease now: claimed {claimed:?}"
            );
            assert!(
                claimed.is_some_and(|c| c <= at),
                "{stream}: written {at}, claimed {claimed:?}"
            );
        }
    }

    // 5. SIGKILL the owner of the second connection: a notification sent
    // through a survivor right away is answered 200 (inbox) and committed
    // by the connection's new owner within the lease's expiry.
    let (killed_id, killed_channel) = conns[1].clone();
    let victim = nodes
        .read()
        .await
        .owner_of(&killed_id)
        .await
        .unwrap()
        .unwrap();
    let v = nodes.read().await.index_of(&victim).unwrap();
    nodes.write().await.kill(v).await.expect("SIGKILL");
    let killed_at = Instant::now();
    {
        let n = nodes.read().await;
        let survivor = (v + 1) % 3;
        let r = google_request(&n.h.http, &n.nodes[survivor].base, &killed_channel, 7001)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            200,
            "a survivor refused while the owner was dead"
        );
        let served = poll(Duration::from_secs(10), || async {
            notifications_with_key(&n, &killed_id, 7001).await == 1
        })
        .await;
        assert!(served, "not served within 10 s of the kill");
        println!(
            "killed node's connection served after {:?}",
            killed_at.elapsed()
        );
        let spread = poll(Duration::from_secs(10), || async {
            evenly_spread(&n.sample().await, 2)
        })
        .await;
        assert!(spread, "{:?}", n.sample().await);
        assert_eq!(
            n.h.count("SELECT count(*) FROM inbox").await.unwrap(),
            0,
            "the inbox was drained"
        );
    }

    // `calsync cluster status` sees the two survivors and every slice held.
    {
        let n = nodes.read().await;
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
            .args(["cluster", "status", "--json"])
            .env("DATABASE_URL", &n.h.db_url)
            .env_remove("CALSYNC_CONFIG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let live: Vec<&serde_json::Value> = status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["live"] == true)
            .collect();
        assert_eq!(live.len(), 2, "{status:#}");
        let held: i64 = live.iter().map(|n| n["slices"].as_i64().unwrap()).sum();
        assert_eq!(held, 1024, "{status:#}");
        assert_eq!(status["slices_unowned"], 0);
        assert_eq!(status["inbox_waiting"], 0);
    }

    let (samples, doubles) = sampler.finish().await;
    assert!(samples > 20, "only {samples} samples");
    assert!(
        doubles.is_empty(),
        "slices held by two nodes at once: {doubles:?}"
    );
    let nodes = Arc::try_unwrap(nodes)
        .ok()
        .expect("sampler done")
        .into_inner();
    let (ok, _, _) = nodes.h.replay_verify().await.unwrap();
    assert!(ok, "replay --verify found a difference");
    nodes.stop().await;
}

/// The internal routes answer only in cluster mode (404 on a lone node)
/// and only to the cluster secret (401 without it or with another one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_routes_need_cluster_mode_and_the_secret() {
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_calsync"));
    let nodes = Nodes::start_with("cluster-auth", 1, Some(exe))
        .await
        .expect("one node");
    let http = nodes.h.http.clone();
    let held = format!("{}/internal/v1/cluster/held", nodes.nodes[0].base);
    let status = |secret: Option<&str>| {
        let mut req = http.get(&held);
        if let Some(s) = secret {
            req = req.header(calsync::cluster::wire::SECRET_HEADER, s);
        }
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(None).await, 401);
    assert_eq!(status(Some("not-the-cluster-secret")).await, 401);
    let wrong_length = format!("{}x", nodes.secret);
    assert_eq!(status(Some(&wrong_length)).await, 401);
    assert_eq!(status(Some(&nodes.secret)).await, 200);
    // A lone node holds every slice at once.
    let h = nodes.held(0).await.expect("held");
    assert_eq!(h.slices.len(), 1024);
    // A forwarded command with the wrong secret changes nothing.
    let id = uuid::Uuid::new_v4();
    let r = http
        .post(format!(
            "{}/internal/v1/connections/{id}/command",
            nodes.nodes[0].base
        ))
        .header(calsync::cluster::wire::SECRET_HEADER, "wrong")
        .json(&serde_json::json!({"correlation_id": id, "input": {"command": "request_sync"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    nodes.stop().await;

    // A lone node (no cluster secret) has no internal routes.
    let lone = calsync::drills::harness::Harness::prepare("cluster-lone")
        .await
        .unwrap();
    let mut lone = lone;
    lone.exe = Some(std::path::PathBuf::from(env!("CARGO_BIN_EXE_calsync")));
    lone.start_serve().await.unwrap();
    let r = lone
        .http
        .get(format!("{}/internal/v1/cluster/held", lone.base))
        .header(
            calsync::cluster::wire::SECRET_HEADER,
            "anything-at-all-here",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    lone.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_is_lifted_through_any_node() {
    // The quarantine lives in the owner's supervisor. Lifted through
    // another node, it used to be recorded there while the owner went on
    // refusing the connection (and the lift answered 503).
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_calsync"));
    let mut nodes = Nodes::start_with("cluster-quarantine", 2, Some(exe))
        .await
        .expect("two nodes");
    assert!(
        poll(Duration::from_secs(30), || async {
            evenly_spread(&nodes.sample().await, 2)
        })
        .await
    );
    let (id, channel) = nodes
        .h
        .google_ready("storm@example.com", "pp-storm")
        .await
        .expect("connection ready");
    let owner = nodes.owner_of(&id).await.unwrap().unwrap();
    let o = nodes.index_of(&owner).unwrap();
    let other = 1 - o;
    let quarantined = format!(
        "SELECT count(*) FROM connections WHERE connection_id = '{id}' AND status = 'quarantined'"
    );
    // A restart storm on the owner: wake the actor, crash it, again.
    nodes.use_node(o);
    for number in 0..40 {
        if nodes.h.count(&quarantined).await.unwrap() == 1 {
            break;
        }
        let _ = google_request(&nodes.h.http, &nodes.nodes[o].base, &channel, 500 + number)
            .send()
            .await;
        let _ = nodes
            .h
            .admin(
                reqwest::Method::POST,
                "/admin/drill/kill",
                Some(serde_json::json!({"connection": id, "mode": "panic"})),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        nodes.h.count(&quarantined).await.unwrap(),
        1,
        "no quarantine"
    );

    // Lifted through the other node: forwarded to the owner.
    nodes.use_node(other);
    let (status, body) = nodes
        .h
        .admin(
            reqwest::Method::POST,
            &format!("/admin/connections/{id}/unquarantine"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(nodes.h.count(&quarantined).await.unwrap(), 0);
    // The owner runs the connection again: a command through it succeeds.
    nodes.use_node(o);
    let (status, body) = nodes
        .h
        .admin(
            reqwest::Method::POST,
            &format!("/admin/connections/{id}/pause"),
            None,
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "the owner still refuses: {body}");
    nodes.stop().await;
}
