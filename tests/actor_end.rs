//! Passivated actors leave the registry at once but end later, after their
//! snapshot. The count of live actors follows them however they end (a
//! kill skips `post_stop`), and each end opens the window in which idle
//! workers hand memory back (`calsync::memory`). Its own test binary: the
//! count and the window are process-wide.

use calsync::actors::connection::running_in_process;
use calsync::actors::{ActorSettings, Connections};
use calsync::core::decide::ConnectionCommand;
use calsync::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use calsync::memory::release_window_open;
use calsync::testkit::TestDb;
use std::time::{Duration, Instant};
use uuid::Uuid;

fn create(n: usize) -> ConnectionCommand {
    ConnectionCommand::Create {
        platform_provider_id: PlatformProviderId::parse(format!("prov-{n}")).unwrap(),
        provider: CalendarProvider::Google,
        account: ExternalAccount::parse(format!("user{n}@example.com")).unwrap(),
        calendars: vec![CalendarId::parse("primary").unwrap()],
        destination_calendar: None,
    }
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_actors_are_counted_however_they_end_and_open_the_release_window() {
    let db = TestDb::new().await;
    // No restart within the test: a killed actor stays ended.
    let settings = ActorSettings {
        restart_base_delay: Duration::from_secs(600),
        restart_max_delay: Duration::from_secs(600),
        ..Default::default()
    };
    let connections = Connections::start(db.store(), settings).await.unwrap();
    assert_eq!(running_in_process(), 0);
    let ids: Vec<ConnectionId> = (0..3).map(|_| ConnectionId::new_random()).collect();
    for (n, id) in ids.iter().enumerate() {
        connections
            .command(*id, create(n), Uuid::new_v4())
            .await
            .unwrap();
    }
    assert_eq!(running_in_process(), 3);
    assert!(!release_window_open(), "no actor has ended yet");

    // Killed: no post_stop, still counted out, and the window opens.
    assert!(connections.kill(ids[0]));
    until("the killed actor to end", || running_in_process() == 2).await;
    assert!(release_window_open());

    // Passivated: out of the registry at once, ended after the snapshot.
    let passivated = connections.passivate_idle(Duration::ZERO);
    assert_eq!(passivated, 2);
    until("the passivated actors to end", || running_in_process() == 0).await;
    assert!(release_window_open());
    for id in &ids[1..] {
        assert!(!connections.is_active(*id));
    }
}
