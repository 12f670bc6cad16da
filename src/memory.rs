//! Handing memory back to the system after actors passivate.
//!
//! A passivation sweep frees what the stopped actors held, but the
//! allocator keeps it: mimalloc frees into per-thread heaps and collects a
//! heap only on its own thread, and the runtime's worker threads that ran
//! the actors allocate little once they are gone. Measured in `bench
//! actors`: 0 of 78.5 MB came back by itself, 7.5 MB after a collection on
//! one thread (BENCHMARKS.md, "actors").
//!
//! So every connection actor that ends opens (or extends) a release
//! window ([`want_release`], called as its state is dropped): for
//! [`WINDOW`] afterwards, each worker thread that parks with nothing to do
//! collects its own heap, at most once per [`EVERY`] ([`on_park`], wired
//! in `main.rs` through tokio's `on_thread_park`). Opened by each end, not
//! by the sweep, because passivated actors end seconds after the sweep
//! (each writes its snapshot first: 8 s for 100,000), and a window opened
//! at the sweep closed before most of the memory was freed (BENCHMARKS.md,
//! "actors": 1.00 of the RSS kept, then 0.06). Outside a window a park
//! costs an atomic load (and a clock read once any window has been opened).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long after a sweep idle workers keep collecting.
pub const WINDOW: Duration = Duration::from_secs(3);
/// A worker collects at most this often inside a window.
pub const EVERY: Duration = Duration::from_millis(100);

/// End of the current window, in milliseconds since [`epoch`]; 0 when none
/// was ever opened.
static UNTIL_MS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// When this thread last collected (milliseconds since [`epoch`] + 1,
    /// 0 for never).
    static LAST_MS: Cell<u64> = const { Cell::new(0) };
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// Asks the worker threads to hand back their free memory while idle over
/// the next [`WINDOW`].
pub fn want_release() {
    UNTIL_MS.fetch_max(now_ms() + WINDOW.as_millis() as u64, Ordering::Relaxed);
}

/// True while a release window is open.
pub fn release_window_open() -> bool {
    let until = UNTIL_MS.load(Ordering::Relaxed);
    until != 0 && now_ms() <= until
}

/// Called by a worker thread about to park: runs `collect` if a release
/// window is open and this thread has not collected in the last [`EVERY`].
pub fn on_park(collect: impl FnOnce()) {
    let until = UNTIL_MS.load(Ordering::Relaxed);
    if until == 0 {
        return;
    }
    let now = now_ms();
    if collect_due(now, until, LAST_MS.with(Cell::get)) {
        LAST_MS.with(|l| l.set(now));
        collect();
    }
}

/// Whether a thread that last collected at `last` (0: never) collects at
/// `now`, with the window open until `until`.
fn collect_due(now: u64, until: u64, last: u64) -> bool {
    now <= until && (last == 0 || now >= last + EVERY.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_collects_inside_a_window_at_most_once_per_interval() {
        let every = EVERY.as_millis() as u64;
        // No window (or a closed one): never.
        assert!(!collect_due(1_000, 0, 0));
        assert!(!collect_due(5_000, 4_999, 0));
        // Open: the first park collects, the next ones wait `EVERY`.
        assert!(collect_due(1_000, 4_000, 0));
        assert!(!collect_due(1_000 + every - 1, 4_000, 1_000));
        assert!(collect_due(1_000 + every, 4_000, 1_000));
        // The window's last instant still counts; after it, nothing.
        assert!(collect_due(4_000, 4_000, 1_000));
        assert!(!collect_due(4_001, 4_000, 1_000));
    }

    #[test]
    fn a_sweep_opens_a_window_in_which_an_idle_worker_collects() {
        std::thread::spawn(|| {
            let collected = Cell::new(0);
            want_release();
            on_park(|| collected.set(collected.get() + 1));
            on_park(|| collected.set(collected.get() + 1));
            assert_eq!(collected.get(), 1, "two parks in a row, one collection");
            std::thread::sleep(EVERY);
            on_park(|| collected.set(collected.get() + 1));
            assert_eq!(
                collected.get(),
                2,
                "a later park in the window collects again"
            );
        })
        .join()
        .unwrap();
    }
}
