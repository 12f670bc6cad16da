//! Group commit: appends to different streams that arrive together share a
//! transaction, and every single-append guarantee still holds per append.

use calsync::core::ids::{ConnectionId, StreamName};
use calsync::core::projection::{ConnectionRow, RowChange};
use calsync::store::{EventStore, ExpectedVersion, NewEvent, RecordedEvent, StoreError};
use calsync::testkit::TestDb;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use tokio::sync::Barrier;

fn stream(name: String) -> StreamName {
    StreamName::parse(name).unwrap()
}

fn event(n: usize) -> NewEvent {
    NewEvent::new("test_event", 1, format!(r#"{{"n":{n}}}"#))
}

fn connection_row(id: ConnectionId, version: u64) -> ConnectionRow {
    ConnectionRow {
        connection_id: id,
        platform_provider_id: "pp".into(),
        provider: "google".into(),
        account: format!("{id}@example.com"),
        calendars: vec!["primary".into()],
        destination_calendar: None,
        status: "active".into(),
        pause_reason: None,
        quarantine_reason: None,
        quarantined_at: None,
        stream_version: version,
        error_count: 0,
        last_error: (version % 2 == 0).then(|| format!("error at {version}")),
        last_error_at: None,
        backoff_until: None,
        needs_reauthorization: None,
        notifications_accepted: version * 10,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_share_transactions_and_every_stream_stays_gap_free() {
    let db = TestDb::new().await;
    let store = db.store();
    const STREAMS: usize = 200;
    const APPENDS: u64 = 5;
    let start = Arc::new(Barrier::new(STREAMS));
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let s = stream(format!("connection-gc-{i}"));
            let id = ConnectionId::new_random();
            start.wait().await;
            let mut recorded = Vec::new();
            for v in 1..=APPENDS {
                // Each append carries two events and its read-model row, as
                // an actor's does.
                let changes = vec![RowChange::UpsertConnection(connection_row(id, v * 2))];
                let expected = ExpectedVersion::from_version((v - 1) * 2);
                let out = store
                    .append_with(&s, expected, vec![event(1), event(2)], changes)
                    .await
                    .unwrap_or_else(|e| panic!("{s} append {v}: {e}"));
                recorded.extend(out);
            }
            (s, id, recorded)
        }));
    }
    let mut all: Vec<RecordedEvent> = Vec::new();
    let mut ids = Vec::new();
    for task in tasks {
        let (s, id, recorded) = task.await.unwrap();
        let versions: Vec<u64> = recorded.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=APPENDS * 2).collect::<Vec<_>>(), "{s}");
        assert!(recorded.iter().all(|e| e.stream == s));
        assert_eq!(store.read_stream(&s, 1, 100).await.unwrap(), recorded);
        all.extend(recorded);
        ids.push(id);
    }
    // Appends from different streams committed in the same transaction.
    let txids: HashSet<i64> = all.iter().map(|e| e.txid).collect();
    let appends = STREAMS * APPENDS as usize;
    assert!(
        txids.len() < appends,
        "{} transactions for {appends} appends: nothing was grouped",
        txids.len()
    );
    // The read models were written with their appends.
    let client = db.client().await;
    for id in ids {
        let row = client
            .query_one(
                "SELECT stream_version, notifications_accepted, last_error \
                 FROM connections WHERE connection_id = $1",
                &[&id.as_uuid()],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i64>(0), (APPENDS * 2) as i64);
        assert_eq!(row.get::<_, i64>(1), (APPENDS * 20) as i64);
        assert_eq!(
            row.get::<_, Option<String>>(2),
            Some(format!("error at {}", APPENDS * 2))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_conflict_or_bad_data_in_a_batch_fails_only_its_own_append() {
    let db = TestDb::new().await;
    let store = db.store();
    const GOOD: usize = 100;
    // Stale writers: these streams already have 3 events.
    let stale: Vec<StreamName> = (0..10).map(|i| stream(format!("stale-{i}"))).collect();
    for s in &stale {
        store
            .append(
                s,
                ExpectedVersion::NoStream,
                vec![event(0), event(1), event(2)],
            )
            .await
            .unwrap();
    }
    let start = Arc::new(Barrier::new(GOOD + stale.len() + 1));
    let mut tasks = Vec::new();
    for i in 0..GOOD {
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            let s = stream(format!("fresh-{i}"));
            start.wait().await;
            (
                "good",
                store
                    .append(&s, ExpectedVersion::NoStream, vec![event(i)])
                    .await,
            )
        }));
    }
    // Each stale append carries its connection row, as an actor's does: a
    // refused append must not write it.
    let stale_ids: Vec<ConnectionId> = stale.iter().map(|_| ConnectionId::new_random()).collect();
    for (s, id) in stale.clone().into_iter().zip(stale_ids.clone()) {
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let changes = vec![RowChange::UpsertConnection(connection_row(id, 2))];
            (
                "stale",
                store
                    .append_with(&s, ExpectedVersion::Exact(1), vec![event(9)], changes)
                    .await,
            )
        }));
    }
    {
        let (store, start) = (store.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let bad = NewEvent::new("test_event", 1, "this is not json");
            let s = stream("bad-payload".into());
            (
                "bad",
                store.append(&s, ExpectedVersion::NoStream, vec![bad]).await,
            )
        }));
    }
    let mut outcomes: BTreeMap<&str, Vec<Result<Vec<RecordedEvent>, StoreError>>> = BTreeMap::new();
    for task in tasks {
        let (kind, outcome) = task.await.unwrap();
        outcomes.entry(kind).or_default().push(outcome);
    }
    assert!(
        outcomes["good"]
            .iter()
            .all(|o| matches!(o, Ok(r) if r.len() == 1)),
        "{:?}",
        outcomes["good"]
            .iter()
            .filter(|o| o.is_err())
            .collect::<Vec<_>>()
    );
    assert!(outcomes["stale"]
        .iter()
        .all(|o| matches!(o, Err(StoreError::Conflict { actual: 3, .. }))));
    assert!(matches!(outcomes["bad"][..], [Err(StoreError::BadData(_))]));
    for s in &stale {
        assert_eq!(store.stream_version(s).await.unwrap(), 3, "{s} unchanged");
    }
    let bad = stream("bad-payload".into());
    assert_eq!(store.stream_version(&bad).await.unwrap(), 0);
    let client = db.client().await;
    let ids: Vec<uuid::Uuid> = stale_ids.iter().map(|id| id.as_uuid()).collect();
    let written = client
        .query_one(
            "SELECT count(*) FROM connections WHERE connection_id = ANY($1)",
            &[&ids],
        )
        .await
        .unwrap();
    assert_eq!(
        written.get::<_, i64>(0),
        0,
        "a refused append wrote its row"
    );
}
