//! Connection actors against a real PostgreSQL: recovery after kills,
//! fencing of a stale writer, quarantine of a restart storm, and scale.

use calsync::actors::connection::{recover, ConnectionActor, ConnectionArgs, ConnectionMsg};
use calsync::actors::mailbox::Mailbox;
use calsync::actors::{ActorSettings, Connections, SendError};
use calsync::core::decide::ConnectionCommand;
use calsync::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use calsync::core::state::{ConnectionStatus, Lifecycle};
use calsync::store::{EventStore, ExpectedVersion, NewEvent};
use calsync::testkit::TestDb;
use ractor::rpc::CallResult;
use ractor::Actor;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use uuid::Uuid;

fn create(n: usize) -> ConnectionCommand {
    ConnectionCommand::Create {
        platform_provider_id: PlatformProviderId::parse(format!("prov-{n}")).unwrap(),
        provider: if n % 2 == 0 {
            CalendarProvider::Google
        } else {
            CalendarProvider::Microsoft
        },
        account: ExternalAccount::parse(format!("user{n}@example.com")).unwrap(),
        calendars: vec![CalendarId::parse("primary").unwrap()],
        destination_calendar: Some(CalendarId::parse("primary").unwrap()),
    }
}

fn fast_settings() -> ActorSettings {
    ActorSettings {
        snapshot_every: 7,
        restart_base_delay: Duration::from_millis(5),
        restart_max_delay: Duration::from_millis(50),
        ..Default::default()
    }
}

/// Alternating pause/resume: every input appends exactly one event.
fn input(i: usize) -> ConnectionCommand {
    if i % 2 == 0 {
        ConnectionCommand::Pause {
            reason: format!("input-{i}"),
        }
    } else {
        ConnectionCommand::Resume
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_actor_comes_back_with_exactly_what_it_committed() {
    let db = TestDb::new().await;
    let store = db.store();
    // Deliberate kills must not trip the quarantine in this test.
    let settings = ActorSettings {
        max_restarts: 1_000,
        ..fast_settings()
    };
    let connections = Connections::start(store.clone(), settings).await.unwrap();
    let id = ConnectionId::new_random();
    connections
        .command(id, create(1), Uuid::new_v4())
        .await
        .unwrap();

    let mut acked: HashMap<Uuid, u64> = HashMap::new();
    let mut failed = 0;
    let mut no_ops = 0;
    let mut kills = 0;
    for i in 0..120 {
        let correlation = Uuid::new_v4();
        // Kill the actor every few inputs, sometimes right as an input is
        // on its way (panic in the handler or ractor's kill).
        if i % 9 == 4 && connections.kill(id) {
            kills += 1;
        }
        if i % 13 == 6 && connections.panic(id) {
            kills += 1;
        }
        match connections.command(id, input(i), correlation).await {
            // A kill can land after a commit but before the reply; the
            // caller sees Stopped and the repeated command is a no-op.
            Ok(ack) if ack.appended == 0 => no_ops += 1,
            Ok(ack) => {
                acked.insert(correlation, ack.version);
            }
            Err(SendError::Stopped) => failed += 1,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert!(kills >= 8, "only {kills} kills landed");
    assert!(
        no_ops <= failed,
        "a no-op answer only follows an unanswered input"
    );

    let events = store.read_stream(&id.stream(), 1, 10_000).await.unwrap();
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    for e in &events {
        if let Some(c) = e.metadata.correlation_id {
            *seen.entry(c).or_default() += 1;
        }
    }
    for (correlation, version) in &acked {
        assert_eq!(
            seen.get(correlation),
            Some(&1),
            "acknowledged input lost or doubled"
        );
        assert_eq!(
            events[*version as usize - 1].metadata.correlation_id,
            Some(*correlation)
        );
    }
    assert!(
        seen.values().all(|n| *n == 1),
        "no input is in the log twice"
    );
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.version, i as u64 + 1);
    }

    // The live actor (restarted by the supervisor or re-activated) holds
    // exactly the fold of the stream, and so does a fold from scratch.
    let live = connections.inspect(id).await.unwrap();
    let (fresh, _) = recover(&store, &id.stream()).await.unwrap();
    assert_eq!(live, fresh);
    assert_eq!(live.version, events.len() as u64);
    // Every failure the supervisor saw came from a drill; most drills hit.
    let restarts = connections.stats().restarts;
    assert!(
        restarts <= kills as u64 && restarts * 2 >= kills as u64,
        "{restarts} of {kills}"
    );

    // Snapshots are a cache: delete them all and the fold is the same.
    let client = db.client().await;
    client.execute("DELETE FROM snapshots", &[]).await.unwrap();
    let (without, folded) = recover(&store, &id.stream()).await.unwrap();
    assert_eq!(without, fresh);
    assert_eq!(folded, events.len() as u64);

    // The read model agrees with the fold.
    let row = client
        .query_one(
            "SELECT status, stream_version FROM connections WHERE connection_id = $1",
            &[&id.as_uuid()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), live.status().as_str());
    assert_eq!(row.get::<_, i64>(1) as u64, live.version);
    connections.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_second_writer_is_fenced_and_the_stream_stays_gap_free() {
    let db = TestDb::new().await;
    let store = db.store();
    let settings = Arc::new(fast_settings());
    let id = ConnectionId::new_random();
    let spawn = |incarnation| {
        let actor = ConnectionActor {
            store: store.clone().into(),
            settings: settings.clone(),
            sync: None,
            cluster: Default::default(),
            stop_snapshots: Default::default(),
        };
        let args = ConnectionArgs {
            id,
            incarnation,
            mailbox: Arc::new(Mailbox::default()),
        };
        Actor::spawn(None, actor, args)
    };
    let send = |actor: ractor::ActorRef<ConnectionMsg>, command: ConnectionCommand| async move {
        match actor
            .call(
                |reply| ConnectionMsg::Command {
                    command: Box::new(command),
                    correlation_id: Uuid::new_v4(),
                    reply,
                },
                Some(Duration::from_secs(10)),
            )
            .await
            .unwrap()
        {
            CallResult::Success(r) => r,
            other => panic!("no answer: {other:?}"),
        }
    };
    // Split brain: two actors fold the same stream at the same time.
    let (a, a_join) = spawn(1).await.unwrap();
    let (b, b_join) = spawn(2).await.unwrap();
    // Each actor's mailbox counter is decremented per command; keep it even.
    send(a.clone(), create(1)).await.unwrap();
    let stale = send(b.clone(), create(1)).await;
    assert_eq!(
        stale,
        Err(SendError::Fenced),
        "the stale writer must not write"
    );
    b_join.await.unwrap();
    assert!(matches!(
        b.get_status(),
        ractor::ActorStatus::Stopped | ractor::ActorStatus::Stopping
    ));
    // The owner goes on writing.
    send(a.clone(), input(0)).await.unwrap();
    let events = store.read_stream(&id.stream(), 1, 100).await.unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[0].metadata.incarnation, Some(1));
    assert_eq!(events[1].version, 2);
    a.stop(None);
    a_join.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_storm_ends_in_quarantine_and_others_keep_working() {
    let db = TestDb::new().await;
    let store = db.store();
    let settings = ActorSettings {
        max_restarts: 3,
        ..fast_settings()
    };
    let connections = Connections::start(store.clone(), settings).await.unwrap();
    let poisoned = ConnectionId::new_random();
    let healthy = ConnectionId::new_random();
    connections
        .command(poisoned, create(1), Uuid::new_v4())
        .await
        .unwrap();
    connections
        .command(healthy, create(2), Uuid::new_v4())
        .await
        .unwrap();
    // An event this build cannot read (as if a newer node wrote it): every
    // start of the actor fails, which would loop forever without quarantine.
    store
        .append(
            &poisoned.stream(),
            ExpectedVersion::Exact(1),
            vec![NewEvent::new(
                "connection_paused",
                99,
                r#"{"reason":"from the future"}"#,
            )],
        )
        .await
        .unwrap();
    connections.kill(poisoned);

    let mut quarantined = false;
    for _ in 0..200 {
        match connections
            .command(poisoned, ConnectionCommand::Resume, Uuid::new_v4())
            .await
        {
            Err(SendError::Quarantined) => {
                quarantined = true;
                break;
            }
            // Poll interval: the command is tried again right after.
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(quarantined, "the connection was never quarantined");
    let restarts = connections.stats().restarts;
    assert!(restarts <= 8, "a hot loop: {restarts} restarts");
    assert_eq!(connections.stats().quarantined, 1);

    // The quarantine is in the log…
    let events = store.read_stream(&poisoned.stream(), 1, 100).await.unwrap();
    assert_eq!(events.last().unwrap().event_type, "connection_quarantined");
    // …and stays after a restart of the whole system.
    connections.shutdown();
    let again = Connections::start(store.clone(), fast_settings())
        .await
        .unwrap();
    let status: String = db
        .client()
        .await
        .query_one(
            "SELECT status FROM connections WHERE connection_id = $1",
            &[&poisoned.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "quarantined");
    assert!(matches!(
        again
            .command(poisoned, ConnectionCommand::Resume, Uuid::new_v4())
            .await,
        Err(SendError::Quarantined)
    ));
    let ack = again
        .command(healthy, input(0), Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(ack.version, 2);
    let state = again.inspect(healthy).await.unwrap();
    assert_eq!(state.lifecycle, Lifecycle::Paused);
    again.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quarantine_of_a_foldable_connection_is_visible_and_can_be_lifted() {
    let db = TestDb::new().await;
    let store = db.store();
    let settings = ActorSettings {
        max_restarts: 2,
        ..fast_settings()
    };
    let connections = Connections::start(store.clone(), settings).await.unwrap();
    let id = ConnectionId::new_random();
    connections
        .command(id, create(3), Uuid::new_v4())
        .await
        .unwrap();
    // A bug that crashes the actor again and again.
    for _ in 0..20 {
        if connections.stats().quarantined == 1 {
            break;
        }
        let _ = connections.inspect(id).await;
        connections.panic(id);
        // Poll interval: the quarantine is checked again right after.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(connections.stats().quarantined, 1);
    let client = db.client().await;
    let status: String = client
        .query_one(
            "SELECT status FROM connections WHERE connection_id = $1",
            &[&id.as_uuid()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "quarantined");

    connections.lift_quarantine(id).await.unwrap();
    let state = connections.inspect(id).await.unwrap();
    assert_eq!(state.status(), ConnectionStatus::Active);
    connections.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_mailbox_answers_busy_instead_of_growing() {
    let db = TestDb::new().await;
    let settings = ActorSettings {
        mailbox_bound: 4,
        ..fast_settings()
    };
    let connections = Connections::start(db.store(), settings).await.unwrap();
    let id = ConnectionId::new_random();
    connections
        .command(id, create(4), Uuid::new_v4())
        .await
        .unwrap();
    let mut calls = Vec::new();
    for i in 0..200 {
        let c = connections.clone();
        calls.push(tokio::spawn(async move {
            c.command(id, input(i), Uuid::new_v4()).await
        }));
    }
    let mut busy = 0;
    let mut ok = 0;
    for call in calls {
        match call.await.unwrap() {
            Ok(_) => ok += 1,
            Err(SendError::Busy { .. }) => busy += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(busy > 0, "200 concurrent inputs never hit a bound of 4");
    assert!(ok > 0);
    connections.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_activate_and_passivate() {
    let db = TestDb::new().await;
    let store = db.store();
    let connections = Connections::start(store.clone(), fast_settings())
        .await
        .unwrap();
    const N: usize = 10_000;
    let ids: Vec<ConnectionId> = (0..N).map(|_| ConnectionId::new_random()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    for (chunk_no, chunk) in ids.chunks(N / 32).enumerate() {
        let (c, chunk) = (connections.clone(), chunk.to_vec());
        tasks.spawn(async move {
            for (i, id) in chunk.into_iter().enumerate() {
                c.command(id, create(chunk_no * 1000 + i), Uuid::new_v4())
                    .await
                    .unwrap();
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert_eq!(connections.stats().active, N);
    assert_eq!(connections.passivate_idle(Duration::ZERO), N);
    for _ in 0..100 {
        if connections.stats().active == 0 {
            break;
        }
        // Poll interval: the count is checked again right after.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(connections.stats().active, 0);
    assert_eq!(
        connections.stats().restarts,
        0,
        "passivation is not a failure"
    );
    // A passivated connection comes back on its next input with its state.
    let ack = connections
        .command(ids[17], input(0), Uuid::new_v4())
        .await
        .unwrap();
    assert_eq!(ack.version, 2);
    let client = db.client().await;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM connections", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rows, N as i64);
    connections.shutdown();
}
