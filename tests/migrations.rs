//! `calsync migrate`: once, checksummed, concurrent-safe.

use calsync::store::migrate::{self, MigrateError, Migration, MIGRATIONS};
use calsync::testkit::TestDb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_migrations_apply_each_file_once() {
    let db = TestDb::new().await;
    // The template is already migrated; a second run finds nothing to do.
    let mut a = db.client().await;
    let report = migrate::run(&mut a).await.unwrap();
    assert!(report.applied.is_empty());
    assert_eq!(report.already_applied, MIGRATIONS.len());

    // Two processes adding the same new migration at once: one applies it,
    // the other waits on the lock and then skips it.
    let extra: &'static [Migration] = Box::leak(
        MIGRATIONS
            .iter()
            .copied()
            .chain([Migration {
                // After the newest (not the count: branches may leave gaps).
                version: MIGRATIONS.iter().map(|m| m.version).max().unwrap_or(0) + 1,
                name: "9999_extra",
                sql: "CREATE TABLE extra_once (id int primary key)",
            }])
            .collect::<Vec<_>>()
            .into_boxed_slice(),
    );
    let mut b = db.client().await;
    let (ra, rb) = tokio::join!(
        migrate::run_with(&mut a, extra),
        migrate::run_with(&mut b, extra)
    );
    let applied = ra.unwrap().applied.len() + rb.unwrap().applied.len();
    assert_eq!(applied, 1, "exactly one process applied the new migration");
}

#[tokio::test]
async fn an_edited_applied_migration_stops_the_run() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    let edited: Vec<Migration> = MIGRATIONS
        .iter()
        .map(|m| Migration {
            sql: "-- edited\nSELECT 1",
            ..*m
        })
        .collect();
    let err = migrate::run_with(&mut client, &edited).await.unwrap_err();
    assert!(
        matches!(err, MigrateError::Edited { version: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("edited after it was applied"));
}

#[tokio::test]
async fn a_database_ahead_of_this_build_is_refused() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    client
        .execute(
            "INSERT INTO calsync_migrations (version, name, checksum) VALUES (999, 'future', 'x')",
            &[],
        )
        .await
        .unwrap();
    let err = migrate::run(&mut client).await.unwrap_err();
    assert!(matches!(err, MigrateError::Unknown { version: 999 }));
}
