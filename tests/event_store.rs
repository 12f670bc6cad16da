//! The event log's guarantees. The contract (atomic appends, typed
//! conflicts, gap-free versions, one global order, payloads byte for byte,
//! snapshots forward, read models in the append's transaction) runs
//! against PostgreSQL and against the in-memory store the deterministic
//! simulation uses: one suite, both implementations. The rest is
//! PostgreSQL's own (uncommitted gaps, the immutability trigger, outages).

use calsync::core::ids::ConnectionId;
use calsync::core::ids::StreamName;
use calsync::core::projection::{ConnectionRow, RowChange};
use calsync::pg::{Cluster, Durability, StopMode};
use calsync::store::{
    EventMetadata, EventStore, ExpectedVersion, GlobalCursor, MemoryStore, NewEvent, PgEventStore,
    Snapshot, Store, StoreError,
};
use calsync::testkit::TestDb;
use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

fn stream(name: &str) -> StreamName {
    StreamName::parse(name).unwrap()
}

fn event(n: usize) -> NewEvent {
    NewEvent::new("test_event", 1, format!(r#"{{"n":{n}}}"#))
}

/// One contract test, run on PostgreSQL and on the in-memory store.
macro_rules! contract {
    ($name:ident, $on:ident, $flavor:ident) => {
        mod $name {
            use super::*;
            contract!(@test postgres, $flavor, {
                let db = TestDb::new().await;
                $on(Store::Postgres(db.store())).await;
            });
            contract!(@test memory, $flavor, {
                $on(Store::Memory(MemoryStore::default())).await;
            });
        }
    };
    (@test $store:ident, multi, $body:block) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $store() $body
    };
    (@test $store:ident, single, $body:block) => {
        #[tokio::test]
        async fn $store() $body
    };
}

contract!(
    fifty_concurrent_appenders_on_one_version_yield_one_winner_and_typed_conflicts,
    fifty_concurrent_appenders_on_one_version_yield_one_winner_and_typed_conflicts_on,
    multi
);

async fn fifty_concurrent_appenders_on_one_version_yield_one_winner_and_typed_conflicts_on(
    store: Store,
) {
    let s = stream("race-once");
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            store
                .append(&s, ExpectedVersion::NoStream, vec![event(i)])
                .await
        }));
    }
    let mut winners = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(recorded) => {
                winners += 1;
                assert_eq!(recorded[0].version, 1);
            }
            Err(StoreError::Conflict {
                expected, actual, ..
            }) => {
                assert_eq!(expected, ExpectedVersion::NoStream);
                assert_eq!(actual, 1);
            }
            Err(other) => panic!("expected a conflict, got {other}"),
        }
    }
    assert_eq!(winners, 1);
    assert_eq!(store.stream_version(&s).await.unwrap(), 1);
}

contract!(
    fifty_appenders_retrying_on_conflict_build_a_gap_free_stream,
    fifty_appenders_retrying_on_conflict_build_a_gap_free_stream_on,
    multi
);

async fn fifty_appenders_retrying_on_conflict_build_a_gap_free_stream_on(store: Store) {
    let s = stream("race-many");
    const WRITERS: usize = 50;
    const EACH: usize = 6;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (store, s) = (store.clone(), s.clone());
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for k in 0..EACH {
                loop {
                    let v = store.stream_version(&s).await.unwrap();
                    // Let the others run between the read and the write
                    // (the in-memory store never waits on its own), so the
                    // race is real on both stores.
                    tokio::task::yield_now().await;
                    let e = NewEvent::new("w", 1, format!(r#"{{"w":{w},"k":{k}}}"#));
                    match store
                        .append(&s, ExpectedVersion::from_version(v), vec![e])
                        .await
                    {
                        Ok(_) => break,
                        Err(StoreError::Conflict { actual, .. }) => {
                            assert!(actual > v, "a conflict reports the newer version");
                            conflicts += 1;
                        }
                        Err(other) => panic!("unexpected error: {other}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let events = store.read_stream(&s, 1, 10_000).await.unwrap();
    assert_eq!(events.len(), WRITERS * EACH);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.version, i as u64 + 1, "versions are gap-free");
    }
    let distinct: HashSet<&str> = events.iter().map(|e| e.payload.as_str()).collect();
    assert_eq!(
        distinct.len(),
        WRITERS * EACH,
        "every write landed exactly once"
    );
    assert!(
        conflicts > 0,
        "the race was real: some writers lost and retried"
    );
}

contract!(
    reads_see_their_own_writes_and_multi_event_appends_are_atomic,
    reads_see_their_own_writes_and_multi_event_appends_are_atomic_on,
    single
);

async fn reads_see_their_own_writes_and_multi_event_appends_are_atomic_on(store: Store) {
    let s = stream("ryw");
    let recorded = store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![event(1), event(2), event(3)],
        )
        .await
        .unwrap();
    assert_eq!(
        recorded.iter().map(|e| e.version).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    let read = store.read_stream(&s, 1, 100).await.unwrap();
    assert_eq!(read, recorded);
    assert_eq!(store.read_stream(&s, 3, 100).await.unwrap().len(), 1);

    // A batch that conflicts writes nothing at all.
    let err = store
        .append(&s, ExpectedVersion::Exact(2), vec![event(4), event(5)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Conflict { actual: 3, .. }));
    assert_eq!(store.stream_version(&s).await.unwrap(), 3);

    // read_all sees the append once no older transaction is open anywhere
    // in the cluster (other tests run beside this one, so allow a moment).
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen = store.read_all(GlobalCursor::START, 100).await.unwrap();
        if seen.len() == 3 {
            break;
        }
        // Poll interval: the log is read again right after.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, recorded);
}

#[tokio::test]
async fn read_all_never_skips_an_event_committed_later_into_a_gap() {
    let db = TestDb::new().await;
    let store = db.store();
    let mut slow = db.client().await;

    // A writer inserts an event and keeps its transaction open…
    let tx = slow.transaction().await.unwrap();
    let row = tx
        .query_one(
            "INSERT INTO events (stream, version, event_type, schema_version, payload, metadata) \
             VALUES ('slow', 1, 'slow_event', 1, '{}', '{}') RETURNING position",
            &[],
        )
        .await
        .unwrap();
    let slow_position: i64 = row.get(0);

    // …while a later writer commits an event at a higher position.
    let fast = store
        .append(&stream("fast"), ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    assert!(fast[0].position > slow_position);

    // A follower must not move past the open transaction's gap.
    for _ in 0..5 {
        let read = store.read_all(GlobalCursor::START, 100).await.unwrap();
        assert!(
            read.iter().all(|e| e.position != fast[0].position),
            "read_all returned position {} while {} was uncommitted",
            fast[0].position,
            slow_position
        );
        // Not a wait for evidence: `fast` is committed (its append
        // returned), so every read here had the chance to return it; the
        // pause spreads a few reads out.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cursor_before = store
        .read_all(GlobalCursor::START, 100)
        .await
        .unwrap()
        .last()
        .map(|e| e.cursor())
        .unwrap_or(GlobalCursor::START);

    tx.commit().await.unwrap();

    // Once committed, the follower gets both, the earlier one first.
    let mut after = Vec::new();
    for _ in 0..200 {
        after = store.read_all(cursor_before, 100).await.unwrap();
        if after.len() == 2 {
            break;
        }
        // Poll interval: the log is read again right after.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let positions: Vec<i64> = after.iter().map(|e| e.position).collect();
    assert_eq!(positions, vec![slow_position, fast[0].position]);
}

contract!(
    events_round_trip_byte_for_byte,
    events_round_trip_byte_for_byte_on,
    single
);

async fn events_round_trip_byte_for_byte_on(store: Store) {
    let payloads = [
        r#"{"b":1,"a":2}"#,
        r#"{ "spaced" :  [1, 2 ,3] }"#,
        r#"{"big":123456789012345678901234567890,"f":1.10}"#,
        r#"{"u":"zoë — 日本 \ud83d\ude00 \"quoted\" \\ back"}"#,
        r#"{"dup":1,"dup":2}"#,
    ];
    let s = stream("bytes");
    let metadata = EventMetadata {
        correlation_id: Some(uuid::Uuid::new_v4()),
        dedupe_key: Some("chan:42".into()),
        node: Some("node-a".into()),
        incarnation: Some(3),
        ..Default::default()
    };
    let events: Vec<NewEvent> = payloads
        .iter()
        .map(|p| NewEvent::new("raw", 1, *p).with_metadata(metadata.clone()))
        .collect();
    store
        .append(&s, ExpectedVersion::NoStream, events)
        .await
        .unwrap();
    let read = store.read_stream(&s, 1, 10).await.unwrap();
    for (e, p) in read.iter().zip(payloads) {
        assert_eq!(e.payload, p);
        assert_eq!(e.metadata, metadata);
    }
    let bad = store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![NewEvent::new("raw", 1, "{not json")],
        )
        .await
        .unwrap_err();
    assert!(matches!(bad, StoreError::BadData(_)), "{bad}");
}

#[tokio::test]
async fn the_log_refuses_updates_and_deletes() {
    let db = TestDb::new().await;
    let store = db.store();
    store
        .append(&stream("imm"), ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();
    let client = db.client().await;
    assert!(client
        .execute("UPDATE events SET payload = '{}'", &[])
        .await
        .is_err());
    assert!(client.execute("DELETE FROM events", &[]).await.is_err());
    assert_eq!(
        store
            .read_stream(&stream("imm"), 1, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

contract!(
    read_models_change_in_the_appends_transaction,
    read_models_change_in_the_appends_transaction_on,
    single
);

fn quarantined_row(id: ConnectionId, version: u64) -> RowChange {
    RowChange::UpsertConnection(ConnectionRow {
        connection_id: id,
        platform_provider_id: "pp".into(),
        provider: "google".into(),
        account: "a@example.com".into(),
        calendars: vec!["primary".into()],
        destination_calendar: None,
        status: "quarantined".into(),
        pause_reason: None,
        quarantine_reason: Some("test".into()),
        quarantined_at: None,
        stream_version: version,
        error_count: 0,
        last_error: None,
        last_error_at: None,
        backoff_until: None,
        needs_reauthorization: None,
        notifications_accepted: 0,
    })
}

async fn read_models_change_in_the_appends_transaction_on(store: Store) {
    let (a, b) = (ConnectionId::new_random(), ConnectionId::new_random());
    store
        .append_with(
            &a.stream(),
            ExpectedVersion::NoStream,
            vec![event(1)],
            vec![quarantined_row(a, 1)],
        )
        .await
        .unwrap();
    assert_eq!(store.quarantined_connections().await.unwrap(), vec![a]);
    // A conflicting append changes no read model either.
    let err = store
        .append_with(
            &a.stream(),
            ExpectedVersion::NoStream,
            vec![event(2)],
            vec![quarantined_row(b, 1)],
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict { actual: 1, .. }),
        "{err}"
    );
    assert_eq!(store.quarantined_connections().await.unwrap(), vec![a]);
    assert_eq!(store.stream_version(&a.stream()).await.unwrap(), 1);
}

contract!(
    snapshots_only_move_forward,
    snapshots_only_move_forward_on,
    single
);

async fn snapshots_only_move_forward_on(store: Store) {
    let s = stream("snap");
    assert_eq!(store.load_snapshot(&s).await.unwrap(), None);
    let newer = Snapshot {
        stream: s.clone(),
        version: 10,
        schema_version: 1,
        state: r#"{"v":10}"#.into(),
    };
    store.save_snapshot(&newer).await.unwrap();
    let older = Snapshot {
        version: 5,
        state: r#"{"v":5}"#.into(),
        ..newer.clone()
    };
    store.save_snapshot(&older).await.unwrap();
    assert_eq!(store.load_snapshot(&s).await.unwrap(), Some(newer));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_database_yields_unavailable_and_appends_resume_after_restart() {
    // Full durability: with synchronous_commit off a crash may lose the last
    // commits, which is exactly what this test must not paper over.
    let cluster =
        tokio::task::spawn_blocking(|| Cluster::start_temporary(Durability::Full).unwrap())
            .await
            .unwrap();
    calsync::database::ensure_database(&cluster, "outage")
        .await
        .unwrap();
    let config = tokio_postgres::Config::from_str(&cluster.connection_string("outage")).unwrap();
    {
        let (mut client, conn) = config.connect(tokio_postgres::NoTls).await.unwrap();
        let task = tokio::spawn(conn);
        calsync::store::migrate::run(&mut client).await.unwrap();
        drop(client);
        let _ = task.await;
    }
    let store = PgEventStore::new(calsync::database::pool(config, 4).unwrap());
    let s = stream("outage");
    store
        .append(&s, ExpectedVersion::NoStream, vec![event(1)])
        .await
        .unwrap();

    let cluster = std::sync::Arc::new(cluster);
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.stop(StopMode::Immediate).unwrap())
        .await
        .unwrap();
    let err = store
        .append(&s, ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "got {err:?}");
    assert!(err.is_retryable());
    assert!(!store.ping().await);

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.restart().unwrap())
        .await
        .unwrap();
    // The pool drops its broken connections and opens new ones.
    let mut result = Err(StoreError::Unavailable("not tried".into()));
    for _ in 0..50 {
        result = store
            .append(&s, ExpectedVersion::Exact(1), vec![event(2)])
            .await;
        if result.is_ok() {
            break;
        }
        // Poll interval: the append is tried again right after.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(result.unwrap()[0].version, 2);
    assert_eq!(store.read_stream(&s, 1, 10).await.unwrap().len(), 2);
}
