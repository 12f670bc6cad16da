//! Accounts with realistic calendars in the simulators, and a calsync
//! connection for each, created the way the platform would: credentials
//! into the vault, then a `Create` command through the front door (which
//! opens push channels and runs the first sync).

use super::world::World;
use super::DemoError;
use crate::core::decide::ConnectionCommand;
use crate::core::ids::{
    CalendarId, CalendarProvider, ConnectionId, ExternalAccount, PlatformProviderId,
};
use crate::providers::AuthSession;
use calsim::{Scenario, ScenarioConfig};
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Events generated per account before the run: two weeks of a busy
/// person's calendar.
pub const EVENTS_PER_ACCOUNT: usize = 24;

/// One demo connection.
#[derive(Debug, Clone)]
pub struct Demoed {
    pub id: ConnectionId,
    pub provider: CalendarProvider,
    /// Google email or Microsoft UPN.
    pub account: String,
    /// The platform provider the connection belongs to.
    pub platform_provider_id: String,
}

/// An account created in a simulator, with the grant calsync will use.
pub struct NewAccount {
    pub provider: CalendarProvider,
    pub account: String,
    pub session: AuthSession,
}

/// Creates the scenario's accounts and calendars in the simulators: half
/// Google (the odd one out too), half Microsoft. Returns the scenario (it
/// drives the traffic later), the accounts, and how many events it made.
pub fn populate(
    world: &World,
    seed: u64,
    connections: usize,
    rate: f64,
) -> (Scenario, Vec<NewAccount>, usize) {
    let graph_accounts = connections / 2;
    let scenario = Scenario::new(ScenarioConfig {
        seed,
        google_accounts: connections - graph_accounts,
        graph_accounts,
        events_per_account: EVENTS_PER_ACCOUNT,
        start: None,
        days: 14,
        mutations_per_second: rate,
    });
    let summary = scenario.populate(&world.sim.google(), &world.sim.graph());
    let google = summary.google.into_iter().map(|a| NewAccount {
        provider: CalendarProvider::Google,
        account: a.email,
        session: session(a.client_id, a.client_secret, a.refresh_token),
    });
    let graph = summary.graph.into_iter().map(|a| NewAccount {
        provider: CalendarProvider::Microsoft,
        account: a.upn,
        session: session(a.client_id, a.client_secret, a.refresh_token),
    });
    let accounts = google.chain(graph).collect();
    (scenario, accounts, summary.events_created)
}

/// Saves each account's credentials and creates its connection.
///
/// Platform provider ids are `demo-<account>`; on a shared database
/// (`DATABASE_URL`) a run tag is added, because busy intervals are keyed
/// by platform provider and event id, and the same seed makes the same
/// event ids as an earlier run.
pub async fn connect(world: &World, accounts: Vec<NewAccount>) -> anyhow::Result<Vec<Demoed>> {
    let store = world.store();
    let prefix = match world.db.cluster {
        Some(_) => "demo-".to_string(),
        None => format!("demo-{}-", hex::encode(rand::random::<[u8; 3]>())),
    };
    let primary = CalendarId::parse("primary")?;
    let mut out = Vec::with_capacity(accounts.len());
    for a in accounts {
        let id = ConnectionId::new_random();
        world.vault.save(&store, id, &a.session).await?;
        let platform_provider_id = format!("{prefix}{}", a.account);
        let command = ConnectionCommand::Create {
            platform_provider_id: PlatformProviderId::parse(platform_provider_id.clone())?,
            provider: a.provider,
            account: ExternalAccount::parse(a.account.clone())?,
            calendars: vec![primary.clone()],
            destination_calendar: Some(primary.clone()),
        };
        world
            .connections
            .command(id, command, Uuid::new_v4())
            .await
            .map_err(|e| DemoError::Command(a.account.clone(), e))?;
        out.push(Demoed {
            id,
            provider: a.provider,
            account: a.account,
            platform_provider_id,
        });
    }
    Ok(out)
}

/// Waits until every connection finished its first sync and has an open
/// push channel, so traffic meets a system that is fully up.
pub async fn wait_until_up(
    world: &World,
    demoed: &[Demoed],
    within: Duration,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let ids: Vec<Uuid> = demoed.iter().map(|d| d.id.as_uuid()).collect();
    loop {
        let client = world.db.pool.get().await?;
        let synced: i64 = client
            .query_one(
                "SELECT count(*) FROM connection_calendars \
                 WHERE connection_id = ANY($1) AND last_success_at IS NOT NULL",
                &[&ids],
            )
            .await?
            .get(0);
        let channels: i64 = client
            .query_one(
                "SELECT count(DISTINCT connection_id) FROM channels \
                 WHERE connection_id = ANY($1) AND closed_at IS NULL",
                &[&ids],
            )
            .await?
            .get(0);
        drop(client);
        let n = ids.len() as i64;
        if synced >= n && channels >= n {
            return Ok(started.elapsed());
        }
        if started.elapsed() > within {
            return Err(DemoError::NotUp {
                synced,
                channels,
                total: n,
                waited: within,
            }
            .into());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn session(client_id: String, client_secret: String, refresh_token: String) -> AuthSession {
    AuthSession {
        client_id,
        client_secret,
        refresh_token,
        access_token: None,
        access_expires_at: None,
        refresh_token_rotated: false,
        access_token_refreshed: false,
    }
}
