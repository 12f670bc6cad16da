//! Group availability: one set of slots for several providers at once.
//!
//! Every provider's slots are cut by [`crate::core::availability`] from the
//! same windows and [`SlotSpec`](crate::core::availability::SlotSpec), so
//! they lie on one grid and a slot is either identical across providers or
//! absent. This module only combines them:
//! - [`GroupMode::All`]: slots where every provider is free (collective);
//! - [`GroupMode::Any`]: slots where at least one is free (round robin),
//!   each listing who is;
//! - [`GroupMode::AtLeast`]`(n)`: slots where at least `n` are free.
//!
//! `All` is `AtLeast(m)` and `Any` is `AtLeast(1)` for `m` providers.

use std::collections::BTreeMap;

use crate::core::interval::Interval;

/// How many of the group must be free for a slot to count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupMode {
    All,
    Any,
    AtLeast(usize),
}

/// A slot of the group and the providers (indices into the input) free in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSlot {
    pub slot: Interval,
    pub free: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    #[error("a group needs at least one provider")]
    NoProviders,
    #[error("at_least must be between 1 and {providers} (the number of providers), got {got}")]
    AtLeastOutOfRange { got: usize, providers: usize },
}

impl GroupMode {
    /// How many free providers a slot needs, for a group of `providers`.
    pub fn required(self, providers: usize) -> Result<usize, GroupError> {
        if providers == 0 {
            return Err(GroupError::NoProviders);
        }
        match self {
            GroupMode::All => Ok(providers),
            GroupMode::Any => Ok(1),
            GroupMode::AtLeast(n) if (1..=providers).contains(&n) => Ok(n),
            GroupMode::AtLeast(got) => Err(GroupError::AtLeastOutOfRange { got, providers }),
        }
    }
}

/// Combines each provider's free slots (`per_provider[i]` for provider `i`)
/// into the group's slots under `mode`, sorted by slot, each listing the free
/// providers in ascending index order. A provider listed twice for one slot
/// counts once.
pub fn group_slots(
    per_provider: &[Vec<Interval>],
    mode: GroupMode,
) -> Result<Vec<GroupSlot>, GroupError> {
    let need = mode.required(per_provider.len())?;
    let mut by_slot: BTreeMap<Interval, Vec<usize>> = BTreeMap::new();
    for (i, slots) in per_provider.iter().enumerate() {
        for slot in slots {
            let free = by_slot.entry(*slot).or_default();
            if free.last() != Some(&i) {
                free.push(i);
            }
        }
    }
    Ok(by_slot
        .into_iter()
        .filter(|(_, free)| free.len() >= need)
        .map(|(slot, free)| GroupSlot { slot, free })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::availability::{free_slots, SlotSpec};
    use chrono::{DateTime, TimeDelta, Utc};
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn at(minute: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-07-01T09:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + TimeDelta::minutes(minute)
    }

    fn iv(s: i64, e: i64) -> Interval {
        Interval::new(at(s), at(e)).unwrap()
    }

    /// Three providers, 09:00–12:00 in 30-minute slots; A busy 10:00–10:30,
    /// B busy 10:00–11:00, C busy 11:30–12:00.
    fn three() -> Vec<Vec<Interval>> {
        let window = [iv(0, 180)];
        let spec = SlotSpec::new(TimeDelta::minutes(30));
        [vec![iv(60, 90)], vec![iv(60, 120)], vec![iv(150, 180)]]
            .iter()
            .map(|busy| free_slots(&window, busy, &spec).unwrap())
            .collect()
    }

    fn starts(slots: &[GroupSlot]) -> Vec<i64> {
        slots
            .iter()
            .map(|s| (s.slot.start() - at(0)).num_minutes())
            .collect()
    }

    #[test]
    fn all_any_and_at_least_on_a_small_group() {
        let p = three();
        let all = group_slots(&p, GroupMode::All).unwrap();
        assert_eq!(starts(&all), [0, 30, 120]);
        assert!(all.iter().all(|s| s.free == [0, 1, 2]));

        let any = group_slots(&p, GroupMode::Any).unwrap();
        assert_eq!(starts(&any), [0, 30, 60, 90, 120, 150]);
        assert_eq!(any[2].free, [2]); // 10:00: only C
        assert_eq!(any[3].free, [0, 2]); // 10:30: A and C
        assert_eq!(any[5].free, [0, 1]); // 11:30: A and B

        let two = group_slots(&p, GroupMode::AtLeast(2)).unwrap();
        assert_eq!(starts(&two), [0, 30, 90, 120, 150]);
    }

    #[test]
    fn bad_modes_are_rejected() {
        let p = three();
        assert_eq!(
            group_slots(&p, GroupMode::AtLeast(0)),
            Err(GroupError::AtLeastOutOfRange {
                got: 0,
                providers: 3
            })
        );
        assert_eq!(
            group_slots(&p, GroupMode::AtLeast(4)),
            Err(GroupError::AtLeastOutOfRange {
                got: 4,
                providers: 3
            })
        );
        assert_eq!(
            group_slots(&[], GroupMode::Any),
            Err(GroupError::NoProviders)
        );
    }

    // ---------------------------------------------------- property tests --

    /// Per provider: busy intervals as (start minute, length) over a day of
    /// windows; every provider shares the windows and spec, as the API does.
    fn group() -> impl Strategy<Value = (Vec<Vec<Interval>>, usize)> {
        let windows = prop::collection::vec((0i64..600, 1i64..240), 1..4);
        let busy = prop::collection::vec(prop::collection::vec((0i64..700, 1i64..120), 0..6), 1..7);
        (windows, busy, 5i64..90, prop::option::of(5i64..90)).prop_map(
            |(windows, busy, len, step)| {
                let windows: Vec<Interval> = windows.iter().map(|&(s, l)| iv(s, s + l)).collect();
                let spec = SlotSpec::new(TimeDelta::minutes(len))
                    .with_step(TimeDelta::minutes(step.unwrap_or(len)));
                let per: Vec<Vec<Interval>> = busy
                    .iter()
                    .map(|b| {
                        let b: Vec<Interval> = b.iter().map(|&(s, l)| iv(s, s + l)).collect();
                        free_slots(&windows, &b, &spec).unwrap()
                    })
                    .collect();
                let m = per.len();
                (per, m)
            },
        )
    }

    fn set(slots: &[GroupSlot]) -> BTreeSet<Interval> {
        slots.iter().map(|s| s.slot).collect()
    }

    proptest! {
        #[test]
        fn all_is_inside_every_providers_slots((per, _m) in group()) {
            let all = group_slots(&per, GroupMode::All).unwrap();
            for provider in &per {
                let own: BTreeSet<Interval> = provider.iter().copied().collect();
                prop_assert!(set(&all).is_subset(&own));
            }
            for s in &all {
                prop_assert_eq!(&s.free, &(0..per.len()).collect::<Vec<_>>());
            }
        }

        #[test]
        fn any_is_the_union_listing_exactly_the_free_providers((per, _m) in group()) {
            let any = group_slots(&per, GroupMode::Any).unwrap();
            let union: BTreeSet<Interval> = per.iter().flatten().copied().collect();
            prop_assert_eq!(set(&any), union);
            for s in &any {
                let free: Vec<usize> =
                    (0..per.len()).filter(|&i| per[i].contains(&s.slot)).collect();
                prop_assert_eq!(&s.free, &free);
            }
        }

        #[test]
        fn at_least_spans_any_to_all_and_shrinks_with_n((per, m) in group()) {
            prop_assert_eq!(
                group_slots(&per, GroupMode::AtLeast(1)).unwrap(),
                group_slots(&per, GroupMode::Any).unwrap()
            );
            prop_assert_eq!(
                group_slots(&per, GroupMode::AtLeast(m)).unwrap(),
                group_slots(&per, GroupMode::All).unwrap()
            );
            for n in 1..m {
                let wider = set(&group_slots(&per, GroupMode::AtLeast(n)).unwrap());
                let narrower = set(&group_slots(&per, GroupMode::AtLeast(n + 1)).unwrap());
                prop_assert!(narrower.is_subset(&wider));
            }
            for n in 1..=m {
                for s in group_slots(&per, GroupMode::AtLeast(n)).unwrap() {
                    prop_assert!(s.free.len() >= n);
                }
            }
        }
    }
}
