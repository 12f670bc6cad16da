//! The deterministic simulation (`calsync simulate`, `src/simulate/`) as
//! the test suite runs it: a whole node — supervisor, actors, front door,
//! settings, outbound, replay — on the in-memory store and the in-process
//! provider simulators, on paused time. CI's `.ci/run` runs many more
//! seeds for a full virtual week each; these keep `cargo test` honest
//! about the harness itself.

use calsync::simulate::{run_seed, Scale};

fn small() -> Scale {
    Scale {
        connections: 6,
        days: 1,
    }
}

#[test]
fn one_seed_run_twice_gives_the_same_log_and_request_trace() {
    let first = run_seed(11, small()).expect("seed 11 runs");
    let second = run_seed(11, small()).expect("seed 11 runs again");
    assert_eq!(
        first.digest, second.digest,
        "the same seed must replay the same run: {:?} vs {:?}",
        first.stats, second.stats
    );
    assert!(first.stats.events > 100, "{:?}", first.stats);
    assert!(first.stats.provider_calls > 100, "{:?}", first.stats);
    let other = run_seed(12, small()).expect("seed 12 runs");
    assert_ne!(first.digest, other.digest, "another seed, another run");
}

#[test]
fn seeds_run_side_by_side_replay_exactly_as_alone() {
    // `calsync simulate --jobs N` runs seeds on several threads of one
    // process: nothing (request ids, clocks, RNGs) may leak between them.
    let alone = run_seed(21, small()).expect("runs").digest;
    let together: Vec<String> = std::thread::scope(|s| {
        let runs: Vec<_> = [21, 22]
            .into_iter()
            .map(|seed| s.spawn(move || run_seed(seed, small()).expect("runs").digest))
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("no panic"))
            .collect()
    });
    assert_eq!(together[0], alone);
}

#[test]
fn a_few_seeds_of_two_virtual_days_keep_every_invariant() {
    let scale = Scale {
        connections: 8,
        days: 2,
    };
    for seed in 1..=3 {
        let outcome = run_seed(seed, scale).expect("the run itself works");
        assert!(
            outcome.passed(),
            "{}: {:#?}\nreplay with: {}",
            seed,
            outcome.violations,
            outcome.replay_command()
        );
        // The run did what a week of a real platform does, in small.
        let s = &outcome.stats;
        assert!(s.bookings > 0 && s.edits > 0, "{s:?}");
        assert!(s.notifications_acked > 0, "{s:?}");
    }
}
