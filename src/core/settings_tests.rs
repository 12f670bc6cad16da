//! Tests of the settings core (kept beside it to keep `settings.rs` small).

use super::*;
use chrono::TimeZone;
use proptest::prelude::*;
use uuid::Uuid;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 24, 9, 0, 0).unwrap()
}

fn ops() -> Actor {
    Actor::parse("ops:ana").unwrap()
}

fn conn(n: u128) -> ConnectionId {
    ConnectionId::from_uuid(Uuid::from_u128(n))
}

fn set(flag: Flag, enabled: bool) -> SettingsCommand {
    SettingsCommand::SetFlag {
        flag,
        enabled,
        reason: "test".into(),
    }
}

fn production(enabled: bool) -> SettingsCommand {
    SettingsCommand::SetProductionMode {
        enabled,
        reason: String::new(),
    }
}

/// Runs commands the way the shell does: decide, then fold the events.
fn run(commands: &[SettingsCommand]) -> (SettingsState, Vec<SettingsEvent>) {
    let mut state = SettingsState::default();
    let mut log = Vec::new();
    for c in commands {
        if let Ok(events) = decide(&state, c, &ops(), now()) {
            state = state.fold(&events);
            log.extend(events);
        }
    }
    (state, log)
}

#[test]
fn every_flag_defaults_to_off_and_every_gate_refuses() {
    let s = SettingsState::default();
    for flag in Flag::ALL {
        assert!(!s.enabled(flag), "{flag} must default to off");
        assert_eq!(s.flag(flag), Toggle::default());
    }
    assert!(!s.production());
    let (p, c) = (CalendarProvider::Google, conn(1));
    assert_eq!(webhook_gate(&s, p, c), Err(Refusal::WebhooksDisabled));
    assert_eq!(sync_gate(&s, p, c), Err(Refusal::SyncDisabled));
    assert_eq!(jobs_gate(&s, p, c), Err(Refusal::JobsDisabled));
    assert_eq!(flag_gate(&s, Flag::JobsEnabled), Err(Refusal::JobsDisabled));
}

#[test]
fn flags_open_their_own_gate_only() {
    let (s, log) = run(&[set(Flag::WebhooksEnabled, true)]);
    assert_eq!(log.len(), 1);
    let (p, c) = (CalendarProvider::Microsoft, conn(1));
    assert_eq!(webhook_gate(&s, p, c), Ok(()));
    assert_eq!(sync_gate(&s, p, c), Err(Refusal::SyncDisabled));
    assert_eq!(jobs_gate(&s, p, c), Err(Refusal::JobsDisabled));
    let change = s.flag(Flag::WebhooksEnabled).last_change.unwrap();
    assert_eq!(change.by, ops());
    assert_eq!(change.reason, "test");
    assert_eq!(change.at, now());
}

#[test]
fn allowlists_are_enforced_only_in_production_mode() {
    let (p, c) = (CalendarProvider::Google, conn(7));
    let (s, _) = run(&[set(Flag::WebhooksEnabled, true)]);
    assert_eq!(
        webhook_gate(&s, p, c),
        Ok(()),
        "not enforced outside production"
    );

    let (s, _) = run(&[set(Flag::WebhooksEnabled, true), production(true)]);
    assert_eq!(
        webhook_gate(&s, p, c),
        Err(Refusal::ProviderNotAllowlisted(p))
    );

    let allow_p = SettingsCommand::AllowProvider {
        provider: p,
        reason: "pilot".into(),
    };
    let allow_c = SettingsCommand::AllowConnection {
        connection_id: c,
        reason: "pilot".into(),
    };
    let (s, _) = run(&[
        set(Flag::WebhooksEnabled, true),
        production(true),
        allow_p.clone(),
    ]);
    assert_eq!(
        webhook_gate(&s, p, c),
        Err(Refusal::ConnectionNotAllowlisted(c))
    );
    let (s, _) = run(&[
        set(Flag::WebhooksEnabled, true),
        production(true),
        allow_p.clone(),
        allow_c.clone(),
    ]);
    assert_eq!(webhook_gate(&s, p, c), Ok(()));
    assert_eq!(
        webhook_gate(&s, CalendarProvider::Microsoft, c),
        Err(Refusal::ProviderNotAllowlisted(CalendarProvider::Microsoft))
    );

    // A disabled flag wins over allowlists: that is what operators must see.
    let (s, _) = run(&[production(true), allow_p, allow_c]);
    assert_eq!(webhook_gate(&s, p, c), Err(Refusal::WebhooksDisabled));
}

#[test]
fn unlisting_removes_and_repeating_changes_nothing() {
    let p = CalendarProvider::Microsoft;
    let allow = SettingsCommand::AllowProvider {
        provider: p,
        reason: String::new(),
    };
    let unlist = SettingsCommand::UnlistProvider {
        provider: p,
        reason: String::new(),
    };
    let (s, log) = run(&[unlist.clone(), allow.clone(), allow, unlist.clone(), unlist]);
    assert_eq!(log.len(), 2);
    assert!(!s.provider_allowlisted(p));
    assert_eq!(s.version, 2);
}

#[test]
fn reasons_are_bounded_and_printable() {
    let s = SettingsState::default();
    let long = SettingsCommand::SetFlag {
        flag: Flag::SyncEnabled,
        enabled: true,
        reason: "x".repeat(MAX_REASON_LEN + 1),
    };
    assert!(decide(&s, &long, &ops(), now()).is_err());
    let control = SettingsCommand::SetFlag {
        flag: Flag::SyncEnabled,
        enabled: true,
        reason: "a\u{7}b".into(),
    };
    assert!(decide(&s, &control, &ops(), now()).is_err());
    assert!(Actor::parse("").is_err());
    assert!(Actor::parse("a\nb").is_err());
    assert!(Actor::parse("a".repeat(201)).is_err());
}

#[test]
fn flags_parse_from_stable_and_short_names() {
    for flag in Flag::ALL {
        assert_eq!(Flag::parse(flag.as_str()).unwrap(), flag);
        assert_eq!(
            serde_json::to_value(flag).unwrap(),
            serde_json::json!(flag.as_str())
        );
    }
    assert_eq!(Flag::parse("Sync").unwrap(), Flag::SyncEnabled);
    assert_eq!(
        Flag::parse("webhooks-enabled").unwrap(),
        Flag::WebhooksEnabled
    );
    assert!(Flag::parse("everything").is_err());
}

#[test]
fn events_have_stable_names_and_reject_unknown_shapes() {
    let (_, log) = run(&[set(Flag::JobsEnabled, true)]);
    let (ty, payload) = log[0].to_parts().unwrap();
    assert_eq!(ty, "flag_set");
    assert_eq!(payload["flag"], "jobs_enabled");
    assert_eq!(payload["actor"], "ops:ana");
    assert_eq!(payload["reason"], "test");
    let mut extra = payload.clone();
    extra["surprise"] = serde_json::json!(1);
    assert!(SettingsEvent::from_parts(ty, 1, extra).is_err());
    assert!(matches!(
        SettingsEvent::from_parts(ty, 2, payload),
        Err(EventDecodeError::FutureVersion { .. })
    ));
    assert!(SettingsEvent::from_parts("flag_unset", 1, serde_json::json!({})).is_err());
}

fn command() -> impl Strategy<Value = SettingsCommand> {
    let flag = prop_oneof![
        Just(Flag::SyncEnabled),
        Just(Flag::JobsEnabled),
        Just(Flag::WebhooksEnabled)
    ];
    let provider = prop_oneof![
        Just(CalendarProvider::Google),
        Just(CalendarProvider::Microsoft)
    ];
    let connection = (0u128..4).prop_map(conn);
    let reason = prop_oneof![Just(String::new()), Just("why".to_string())];
    prop_oneof![
        (flag, any::<bool>(), reason.clone()).prop_map(|(flag, enabled, reason)| {
            SettingsCommand::SetFlag {
                flag,
                enabled,
                reason,
            }
        }),
        (any::<bool>(), reason.clone())
            .prop_map(|(enabled, reason)| SettingsCommand::SetProductionMode { enabled, reason }),
        (provider.clone(), reason.clone())
            .prop_map(|(provider, reason)| SettingsCommand::AllowProvider { provider, reason }),
        (provider, reason.clone())
            .prop_map(|(provider, reason)| SettingsCommand::UnlistProvider { provider, reason }),
        (connection.clone(), reason.clone()).prop_map(|(connection_id, reason)| {
            SettingsCommand::AllowConnection {
                connection_id,
                reason,
            }
        }),
        (connection, reason).prop_map(|(connection_id, reason)| {
            SettingsCommand::UnlistConnection {
                connection_id,
                reason,
            }
        }),
    ]
}

proptest! {
    /// The state every node holds is the fold of the log, and a fold of any
    /// prefix plus the rest (a poll picking up where it left off) equals it.
    #[test]
    fn folding_emitted_events_reproduces_the_decided_state(
        commands in proptest::collection::vec(command(), 0..40),
        split in 0usize..40,
    ) {
        let (state, log) = run(&commands);
        prop_assert_eq!(&SettingsState::default().fold(&log), &state);
        prop_assert_eq!(state.version as usize, log.len());
        let split = split.min(log.len());
        let prefix = SettingsState::default().fold(&log[..split]);
        prop_assert_eq!(prefix.fold(&log[split..]), state);
    }

    /// Repeating any command right after it took effect emits nothing, and
    /// a command emits nothing exactly when it would not change the state.
    #[test]
    fn commands_are_idempotent(
        commands in proptest::collection::vec(command(), 0..20),
        last in command(),
    ) {
        let (state, _) = run(&commands);
        let first = decide(&state, &last, &ops(), now()).unwrap();
        let after = state.clone().fold(&first);
        prop_assert!(decide(&after, &last, &ops(), now()).unwrap().is_empty());
        let mut unchanged = after.clone();
        unchanged.version = state.version;
        // Audit details aside, the emitted event changed something.
        let strip = |s: &SettingsState| (
            Flag::ALL.map(|f| s.enabled(f)),
            s.production(),
            s.providers.keys().copied().collect::<Vec<_>>(),
            s.connections.keys().copied().collect::<Vec<_>>(),
        );
        prop_assert_eq!(first.is_empty(), strip(&unchanged) == strip(&state));
    }

    /// Every emitted event survives the log's type/payload split.
    #[test]
    fn emitted_events_round_trip_through_the_log_format(
        commands in proptest::collection::vec(command(), 0..20),
    ) {
        let (_, log) = run(&commands);
        for e in &log {
            let (ty, payload) = e.to_parts().unwrap();
            let back = SettingsEvent::from_parts(ty, e.schema_version(), payload).unwrap();
            prop_assert_eq!(&back, e);
        }
    }

    /// Gates follow their definition for every reachable state.
    #[test]
    fn gates_follow_flags_and_production_allowlists(
        commands in proptest::collection::vec(command(), 0..30),
        p in prop_oneof![Just(CalendarProvider::Google), Just(CalendarProvider::Microsoft)],
        c in (0u128..4).prop_map(conn),
    ) {
        let (s, _) = run(&commands);
        let open = |flag| s.enabled(flag)
            && (!s.production() || (s.provider_allowlisted(p) && s.connection_allowlisted(c)));
        prop_assert_eq!(webhook_gate(&s, p, c).is_ok(), open(Flag::WebhooksEnabled));
        prop_assert_eq!(sync_gate(&s, p, c).is_ok(), open(Flag::SyncEnabled));
        prop_assert_eq!(jobs_gate(&s, p, c).is_ok(), open(Flag::JobsEnabled));
    }
}
