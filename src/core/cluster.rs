//! Several `serve` nodes on one PostgreSQL: which node runs which
//! connection. Pure decisions only; the lease task (`crate::cluster`) runs
//! them against the `leases` table.
//!
//! - Connections hash into [`SLICES`] slices with a hash that never changes
//!   ([`slice_of`]): FNV-1a over the connection id's 16 bytes.
//! - A slice is leased to one node (owner, epoch, expiry, all in
//!   PostgreSQL). A node renews what it holds every [`TICK`]; a lease lives
//!   [`LEASE_TTL`]; a node believes it holds a slice for at most
//!   [`BELIEF`] after the start of its last successful renewal, and stops
//!   that slice's actors at the latest then — [`STOP_BOUND`] before anyone
//!   else may claim it. The stream version remains the last word: an actor
//!   that outlives its lease can only conflict, never overwrite.
//! - Each live node aims at its [`fair_share`]: `SLICES / n`, the first
//!   `SLICES % n` nodes by name one more. [`plan`] says what to renew,
//!   claim and release to get there.

use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::time::Duration;
use uuid::Uuid;

/// How many slices connections hash into. Fixed forever: changing it moves
/// every connection.
pub const SLICES: u16 = 1024;

/// A lease's lifetime from its last renewal (database time).
pub const LEASE_TTL: Duration = Duration::from_secs(8);

/// How often a node heartbeats, renews, claims and releases.
pub const TICK: Duration = Duration::from_secs(1);

/// How long before its lease can expire a node has stopped a slice's actors:
/// the margin between "the old owner no longer runs it" and "a new owner
/// may claim it".
pub const STOP_BOUND: Duration = Duration::from_secs(3);

/// How long after the start of its last successful renewal a node acts as
/// the owner of what it renewed.
pub const BELIEF: Duration = Duration::from_secs(LEASE_TTL.as_secs() - STOP_BOUND.as_secs());

/// The slice of a connection: FNV-1a (64-bit) of the id's bytes, modulo
/// [`SLICES`]. Stable across builds, platforms and versions.
pub fn slice_of(id: &Uuid) -> u16 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = id
        .as_bytes()
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME));
    (hash % u64::from(SLICES)) as u16
}

/// How many slices `me` should hold when `live` (names, any order, `me`
/// among them) are the live nodes: an even spread, ±1.
pub fn fair_share(live: &[String], me: &str) -> usize {
    let names: BTreeSet<&str> = live
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(me))
        .collect();
    let n = names.len();
    let base = usize::from(SLICES) / n;
    let extra = usize::from(SLICES) % n;
    let index = names.iter().position(|name| *name == me).unwrap_or(n);
    base + usize::from(index < extra)
}

/// One row of the `leases` table as the planner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub slice: u16,
    /// `None`: never claimed, or released.
    pub owner: Option<String>,
    pub expires_at: DateTime<Utc>,
}

impl Lease {
    /// Whether the lease still binds at `now` (database time).
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.owner.is_some() && self.expires_at > now
    }

    pub fn is_held_by(&self, node: &str, now: DateTime<Utc>) -> bool {
        self.is_live(now) && self.owner.as_deref() == Some(node)
    }
}

/// What one tick does to the lease table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeasePlan {
    /// Slices held now and kept: renewed.
    pub renew: Vec<u16>,
    /// Free or expired slices to claim (one conditional `UPDATE`; some may
    /// be taken by another node first, the next tick tries again).
    pub claim: Vec<u16>,
    /// Slices held beyond the fair share: stop their actors, then release.
    pub release: Vec<u16>,
}

/// The order in which `me` prefers slices: a per-node permutation, so that
/// nodes claiming at the same moment mostly reach for different slices.
fn preference(me: &str, slice: u16) -> u64 {
    let seed = me.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut x = seed ^ u64::from(slice).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // splitmix64's finaliser: neighbouring slices land far apart.
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// What `me` renews, claims and releases, given the live nodes, the lease
/// table and the database's `now`. Held slices beyond the fair share are
/// released (the highest-numbered first, so a node keeps a stable core);
/// below it, free slices are claimed in `me`'s preference order.
pub fn plan(me: &str, live: &[String], leases: &[Lease], now: DateTime<Utc>) -> LeasePlan {
    let target = fair_share(live, me);
    let mut held: Vec<u16> = leases
        .iter()
        .filter(|l| l.is_held_by(me, now))
        .map(|l| l.slice)
        .collect();
    held.sort_unstable();
    let mut out = LeasePlan::default();
    if held.len() > target {
        out.release = held.split_off(target);
        out.renew = held;
        return out;
    }
    let want = target - held.len();
    out.renew = held;
    let mut free: Vec<u16> = leases
        .iter()
        .filter(|l| !l.is_live(now))
        .map(|l| l.slice)
        .collect();
    free.sort_unstable_by_key(|s| (preference(me, *s), *s));
    free.truncate(want);
    out.claim = free;
    out
}

/// Which node a request for `slice` goes to: the live owner, if any.
pub fn owner_of(leases: &[Lease], slice: u16, now: DateTime<Utc>) -> Option<&str> {
    leases
        .iter()
        .find(|l| l.slice == slice && l.is_live(now))
        .and_then(|l| l.owner.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn empty_table() -> Vec<Lease> {
        (0..SLICES)
            .map(|slice| Lease {
                slice,
                owner: None,
                expires_at: t(0),
            })
            .collect()
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    /// The database's side of a tick: renew and release only what `me`
    /// holds, claim only what is free — the conditions the SQL carries.
    fn apply(table: &mut [Lease], me: &str, p: &LeasePlan, now: DateTime<Utc>) {
        let ttl = chrono::Duration::from_std(LEASE_TTL).unwrap();
        for l in table.iter_mut() {
            if p.renew.contains(&l.slice) && l.is_held_by(me, now) {
                l.expires_at = now + ttl;
            }
            if p.release.contains(&l.slice) && l.is_held_by(me, now) {
                l.owner = None;
                l.expires_at = now;
            }
            if p.claim.contains(&l.slice) && !l.is_live(now) {
                l.owner = Some(me.to_string());
                l.expires_at = now + ttl;
            }
        }
    }

    fn counts(table: &[Lease], now: DateTime<Utc>) -> BTreeMap<String, usize> {
        let mut c = BTreeMap::new();
        for l in table.iter().filter(|l| l.is_live(now)) {
            *c.entry(l.owner.clone().unwrap()).or_insert(0) += 1;
        }
        c
    }

    const PINNED_NIL: u16 = 101;
    const PINNED_ID: u16 = 657;

    #[test]
    fn slices_are_stable_and_in_range() {
        // Pinned: a changed hash would move every connection.
        let id = Uuid::parse_str("6f1c1a3e-0d7b-4e43-9d62-1c2b3a4d5e6f").unwrap();
        assert_eq!(slice_of(&id), slice_of(&id));
        assert_eq!(slice_of(&Uuid::nil()), PINNED_NIL);
        assert_eq!(slice_of(&id), PINNED_ID);
        for _ in 0..1000 {
            assert!(slice_of(&Uuid::new_v4()) < SLICES);
        }
    }

    #[test]
    fn random_ids_spread_over_the_slices() {
        let mut per = vec![0u32; usize::from(SLICES)];
        for _ in 0..102_400 {
            per[usize::from(slice_of(&Uuid::new_v4()))] += 1;
        }
        // 100 per slice expected; a slice with none or triple would be a bad hash.
        assert!(per.iter().all(|n| (30..=300).contains(n)), "{per:?}");
    }

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        for n in 1..=17 {
            let live = names(n);
            let shares: Vec<usize> = live.iter().map(|me| fair_share(&live, me)).collect();
            assert_eq!(shares.iter().sum::<usize>(), usize::from(SLICES));
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(hi - lo <= 1, "{n} nodes: {shares:?}");
        }
        // A node that has not heartbeated yet counts itself.
        assert_eq!(fair_share(&[], "a"), 1024);
        assert_eq!(fair_share(&["b".into()], "a"), 512);
    }

    #[test]
    fn a_lone_node_takes_everything_in_one_tick() {
        let mut table = empty_table();
        let p = plan("a", &["a".into()], &table, t(1));
        assert_eq!(p.claim.len(), 1024);
        apply(&mut table, "a", &p, t(1));
        assert_eq!(counts(&table, t(1))["a"], 1024);
        // The next tick renews all and claims nothing.
        let p = plan("a", &["a".into()], &table, t(2));
        assert_eq!(
            (p.renew.len(), p.claim.len(), p.release.len()),
            (1024, 0, 0)
        );
    }

    #[test]
    fn a_joining_node_makes_the_owner_release_its_excess() {
        let mut table = empty_table();
        let p = plan("a", &["a".into()], &table, t(1));
        apply(&mut table, "a", &p, t(1));
        let live = vec!["a".to_string(), "b".to_string()];
        let p = plan("a", &live, &table, t(2));
        assert_eq!(p.release.len(), 512);
        assert_eq!(p.renew.len(), 512);
        apply(&mut table, "a", &p, t(2));
        let p = plan("b", &live, &table, t(2));
        assert_eq!(p.claim.len(), 512);
        apply(&mut table, "b", &p, t(2));
        assert_eq!(
            counts(&table, t(2)),
            BTreeMap::from([("a".into(), 512), ("b".into(), 512)])
        );
    }

    #[test]
    fn an_expired_lease_is_free_and_a_live_one_is_not() {
        let mut table = empty_table();
        table[7].owner = Some("dead".into());
        table[7].expires_at = t(10);
        table[8].owner = Some("other".into());
        table[8].expires_at = t(30);
        let p = plan("a", &["a".into(), "other".into()], &table, t(20));
        assert_eq!(p.claim.len(), 512);
        assert!(!p.claim.contains(&8));
        // With every other slice held by a live node, the expired one is
        // exactly what is claimed.
        for l in table.iter_mut().filter(|l| l.slice != 7) {
            l.owner = Some("other".into());
            l.expires_at = t(30);
        }
        assert_eq!(
            plan("a", &["a".into(), "other".into()], &table, t(20)).claim,
            vec![7]
        );
        assert_eq!(owner_of(&table, 7, t(20)), None);
        assert_eq!(owner_of(&table, 8, t(20)), Some("other"));
    }

    #[test]
    fn belief_ends_a_stop_bound_before_expiry() {
        assert_eq!(BELIEF + STOP_BOUND, LEASE_TTL);
        assert!(STOP_BOUND >= TICK * 2);
        assert!(STOP_BOUND <= Duration::from_secs(3));
    }

    proptest! {
        /// Nodes tick in any order, some die and some join; at every step
        /// each slice has at most one live owner (the table allows no
        /// other, but the planner must never renew or release another's),
        /// and a few quiet rounds after the last change every live node
        /// holds its fair share and no slice is free.
        #[test]
        fn ticks_converge_to_an_even_spread(
            n in 1usize..7,
            order in proptest::collection::vec(0usize..100, 10..60),
            kill in proptest::option::of(0usize..7),
        ) {
            let all = names(n);
            let mut table = empty_table();
            let mut clock = 0i64;
            let mut live = all.clone();
            for (step, k) in order.iter().enumerate() {
                clock += 1;
                if step == order.len() / 2 {
                    if let Some(dead) = kill.filter(|d| *d < n && n > 1) {
                        live.retain(|x| *x != all[dead]);
                    }
                }
                let me = &live[*k % live.len()];
                let p = plan(me, &live, &table, t(clock));
                prop_assert!(p.release.iter().all(|s| !p.claim.contains(s)));
                apply(&mut table, me, &p, t(clock));
                let c = counts(&table, t(clock));
                prop_assert!(c.values().sum::<usize>() <= usize::from(SLICES));
            }
            // Let the dead node's leases expire, then tick round-robin.
            clock += LEASE_TTL.as_secs() as i64 + 1;
            for _ in 0..3 {
                for me in &live {
                    clock += 1;
                    let p = plan(me, &live, &table, t(clock));
                    apply(&mut table, me, &p, t(clock));
                }
            }
            let c = counts(&table, t(clock));
            prop_assert_eq!(c.values().sum::<usize>(), usize::from(SLICES));
            for me in &live {
                prop_assert_eq!(c.get(me).copied().unwrap_or(0), fair_share(&live, me));
            }
        }
    }
}
