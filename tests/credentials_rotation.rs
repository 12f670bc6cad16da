//! Key rotation: rows sealed under two old keys end under the new one,
//! rows no key opens are reported and left alone, and a node holding only
//! the new key still syncs the rotated connection.

mod support;

use base64::Engine;
use calsync::core::ids::ConnectionId;
use calsync::store::credentials::{self, CredentialVault};
use calsync::store::SealedCredentials;
use support::{Options, World};

fn random_key() -> String {
    base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 32]>())
}

async fn key_ids(w: &World) -> Vec<(uuid::Uuid, String)> {
    w.db.client()
        .await
        .query(
            "SELECT connection_id, key_id FROM credentials ORDER BY connection_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_under_two_old_keys_end_under_the_new_one_and_sync_goes_on() {
    let (old_a, old_b, unknown, new) = (random_key(), random_key(), random_key(), random_key());
    let vault_a = CredentialVault::from_configured(&old_a).unwrap();
    let vault_b = CredentialVault::from_configured(&old_b).unwrap();
    let vault_unknown = CredentialVault::from_configured(&unknown).unwrap();
    // The node knows the new key only: after the rotation nothing else may
    // be needed.
    let vault_new = CredentialVault::from_configured(&new).unwrap();
    let w = World::start(Options {
        vault: Some(vault_new.clone()),
        ..Default::default()
    })
    .await;
    let store = w.db.store();
    let id = w.google_connection("rotate@example.com").await;
    w.wait_for_round(id, 0).await;

    // The live connection's grant goes under old key A, and other grants
    // under A and B; one under a key nobody has any more.
    let session = vault_new.load(&store, id).await.unwrap().unwrap();
    vault_a.save(&store, id, &session).await.unwrap();
    let mut expected_rotated = vec![id];
    for (i, vault) in [&vault_a, &vault_a, &vault_b, &vault_b, &vault_b]
        .into_iter()
        .enumerate()
    {
        let other = ConnectionId::new_random();
        let mut s = session.clone();
        s.refresh_token = format!("grant-{i}");
        vault.save(&store, other, &s).await.unwrap();
        expected_rotated.push(other);
    }
    let lost = ConnectionId::new_random();
    vault_unknown.save(&store, lost, &session).await.unwrap();
    // Before the rotation the new-key-only vault cannot open the grant.
    assert!(vault_new.load(&store, id).await.is_err());

    let rotating = vault_new
        .clone()
        .with_old_keys(&[old_a.clone(), old_b.clone()])
        .unwrap();
    let mut batches = Vec::new();
    let report = credentials::rotate(&store, &rotating, 2, |so_far, todo| {
        batches.push((so_far.resealed, todo))
    })
    .await
    .unwrap();
    assert_eq!(report.resealed, 6, "{report:?}");
    assert_eq!(report.raced, 0);
    assert_eq!(
        report.unopenable,
        vec![(lost, credentials::fingerprint(&unknown).unwrap())]
    );
    // 7 rows to do in batches of 2: four batches, progress after each.
    assert_eq!(batches.len(), 4, "{batches:?}");
    assert!(batches.iter().all(|(_, todo)| *todo == 7));
    assert_eq!(batches.last().unwrap().0, 6);

    let rows = key_ids(&w).await;
    for (uuid, key_id) in &rows {
        if *uuid == lost.as_uuid() {
            assert_eq!(key_id, &credentials::fingerprint(&unknown).unwrap());
        } else {
            assert_eq!(key_id, vault_new.key_id(), "{uuid}");
        }
    }
    assert_eq!(rows.len(), expected_rotated.len() + 1);
    // Every rotated grant opens with the new key alone, unchanged.
    for other in &expected_rotated {
        let opened = vault_new.load(&store, *other).await.unwrap().unwrap();
        assert_eq!(opened.client_id, session.client_id);
    }
    assert!(
        store.get_sealed(lost).await.unwrap().is_some(),
        "left alone"
    );
    // A second run has nothing to do but the unopenable row.
    let again = credentials::rotate(&store, &rotating, 2, |_, _| {})
        .await
        .unwrap();
    assert_eq!((again.resealed, again.current), (0, 6));
    assert_eq!(again.unopenable.len(), 1);

    // The command line does the same and reports the row it cannot open.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_calsync"))
        .args(["credentials", "rotate", "--batch", "3"])
        .env("DATABASE_URL", w.db.url())
        .env("CALSYNC_CREDENTIALS_KEY", &new)
        .env("CALSYNC_CREDENTIALS_OLD_KEYS", format!("{old_a},{old_b}"))
        .env_remove("CALSYNC_CONFIG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains(&format!("cannot open {lost}")), "{stdout}");
    assert!(
        stdout.contains("0 re-sealed, 6 already under the current key"),
        "{stdout}"
    );

    // The node (new key only) still syncs the rotated connection.
    let head = w.log_head().await;
    assert!(!w.notify(id, "google:rotate:1").await);
    w.wait_for_round(id, head).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_connection_erases_its_grant_and_the_log_says_so() {
    let w = World::new().await;
    let store = w.db.store();
    let id = w.google_connection("leaving@example.com").await;
    let kept = w.google_connection("staying@example.com").await;
    w.wait_for_round(id, 0).await;
    assert!(store.get_sealed(id).await.unwrap().is_some());
    let head = w.log_head().await;
    w.connections
        .command(
            id,
            calsync::core::decide::ConnectionCommand::Remove {
                reason: "offboarded".into(),
            },
            uuid::Uuid::new_v4(),
        )
        .await
        .unwrap();
    // Erased with the removal, in its transaction, and recorded.
    let removed = w.wait_for_event(id, "connection_removed", head).await;
    let erased = w.wait_for_event(id, "credentials_erased", head).await;
    assert!(erased.position > removed.position);
    assert!(store.get_sealed(id).await.unwrap().is_none());
    assert!(
        store.get_sealed(kept).await.unwrap().is_some(),
        "only its own"
    );
    // Replay folds the new event (and leaves secrets alone).
    let report = calsync::replay::verify(
        &store,
        &calsync::replay::ReplayOptions {
            progress: calsync::replay::ProgressMode::Quiet,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(report.is_clean());
    assert!(store.get_sealed(kept).await.unwrap().is_some());
}
