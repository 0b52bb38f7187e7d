//! Retention: which sealed snapshots may go, decided from their receipts and the vault's time.
//!
//! A snapshot expires when the vault's time (the gate's `max(clock, floor)`) is past its
//! `retain_until` (signed into its receipt at sealing: the vault's clock then plus the pusher's
//! `retain`, which the trust root's `min_retain` bounds from below). Even then it is kept:
//! - while it is one of the newest [`Retention::keep_last`] of its (pusher, dataset), so a
//!   pusher that stopped pushing never costs its last copies;
//! - while a hold covers it or its dataset;
//! - and nothing expires at all unless the vault is sealed with a clock it trusts and a policy
//!   in force ([`may_expire`]): a clock that jumped ahead must not delete years of data, and
//!   nothing is deleted while a pusher could be reading `have` answers.

use std::collections::{BTreeMap, BTreeSet};

use crate::units::{Duration, Timestamp};

/// How many snapshots of each (pusher, dataset) are kept whatever their age, unless a policy
/// says otherwise.
pub const DEFAULT_KEEP_LAST: u32 = 3;
/// The most a policy may ask to keep per dataset (a bound, not a goal).
pub const MAX_KEEP_LAST: u32 = 10_000;

/// The policy's retention settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest this-many snapshots of each (pusher, dataset) never expire. At least 1.
    pub keep_last: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { keep_last: DEFAULT_KEEP_LAST }
    }
}

/// A higher `keep_last` still kept to until a time, after a policy lowered it.
pub type KeepLastFloor = (u32, Timestamp);

/// The floor after a policy with `new` as its `keep_last` is accepted at `now`: when it lowers
/// the `previous` policy's, the higher value stays in force for the root's `purge_delay`
/// (`cooling`), as a purge would wait, so a coerced quorum's lower `keep_last` deletes nothing
/// any one admin could not see coming on the console. A floor still in force is kept (the
/// higher value, the later end). `previous` is `None` before the first policy.
pub fn keep_last_floor(previous: Option<u32>, floor: Option<KeepLastFloor>, new: u32, now: Timestamp, cooling: Duration) -> Option<KeepLastFloor> {
    let still = floor.filter(|(_, until)| now < *until);
    match previous {
        Some(previous) if new < previous => {
            let until = now.saturating_add(cooling);
            Some(still.map_or((previous, until), |(kept, kept_until)| (kept.max(previous), kept_until.max(until))))
        }
        _ => still,
    }
}

/// The `keep_last` expiry keeps to at `now`: the policy's, or a floor still in force if higher.
pub fn effective_keep_last(policy: u32, floor: Option<KeepLastFloor>, now: Timestamp) -> u32 {
    floor.filter(|(_, until)| now < *until).map_or(policy, |(kept, _)| kept.max(policy))
}

/// What the rules need to know of one sealed snapshot (from its signed receipt).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedSnapshot {
    pub id: String,
    pub pusher: String,
    pub dataset: String,
    pub received_at: Timestamp,
    pub retain_until: Timestamp,
    /// Bytes this seal added to the store (for the capacity forecast).
    pub bytes_new: u64,
}

/// Holds in force: a held snapshot, or any snapshot of a held (pusher, dataset) or of a held
/// pusher, never expires.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Holds {
    pub snapshots: BTreeSet<String>,
    pub datasets: BTreeSet<(String, String)>,
    pub pushers: BTreeSet<String>,
}

impl Holds {
    /// Whether a hold on the (pusher, dataset) or the pusher covers its snapshots.
    pub fn covers_dataset(&self, pusher: &str, dataset: &str) -> bool {
        self.pushers.contains(pusher) || self.datasets.contains(&(pusher.to_string(), dataset.to_string()))
    }

    /// Whether any hold covers the snapshot.
    pub fn covers(&self, snapshot: &SealedSnapshot) -> bool {
        self.held(snapshot, self.covers_dataset(&snapshot.pusher, &snapshot.dataset)).is_some()
    }

    /// Which hold keeps the snapshot, if any: one naming it, else one on its dataset or pusher
    /// (`dataset_held`, which callers going dataset by dataset ask once per dataset).
    fn held(&self, snapshot: &SealedSnapshot, dataset_held: bool) -> Option<Held> {
        if self.snapshots.contains(&snapshot.id) {
            Some(Held::Snapshot)
        } else {
            dataset_held.then_some(Held::Dataset)
        }
    }
}

/// Which kind of hold keeps a snapshot, whichever rule would otherwise take it.
enum Held {
    Snapshot,
    Dataset,
}

impl From<Held> for Kept {
    fn from(held: Held) -> Kept {
        match held {
            Held::Snapshot => Kept::HeldSnapshot,
            Held::Dataset => Kept::HeldDataset,
        }
    }
}

impl From<Held> for PurgeKept {
    fn from(held: Held) -> PurgeKept {
        match held {
            Held::Snapshot => PurgeKept::HeldSnapshot,
            Held::Dataset => PurgeKept::HeldDataset,
        }
    }
}

/// Why a snapshot past its `retain_until` stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kept {
    /// One of the newest `keep_last` of its dataset (`rank` 1 is the newest).
    Newest { rank: u32, keep_last: u32 },
    /// A hold covers the snapshot.
    HeldSnapshot,
    /// A hold covers its (pusher, dataset), or its pusher.
    HeldDataset,
}

/// The outcome for every snapshot the rules looked at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExpiryPlan {
    /// Past `retain_until` and not kept: these go, oldest first.
    pub expire: Vec<SealedSnapshot>,
    /// Past `retain_until` but kept, with why.
    pub kept: Vec<(SealedSnapshot, Kept)>,
    /// The earliest `retain_until` still ahead, if any: when to look again.
    pub next_due: Option<Timestamp>,
}

/// Why expiry may not run now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotNow {
    /// A clock fault is latched: the vault's time cannot be trusted to delete by.
    ClockFault,
    /// The gate is not sealed (a window is open, opening or closing).
    NotSealed,
    /// No policy is in force, so no `keep_last` has been decided by the admins.
    NoPolicy,
}

impl std::fmt::Display for NotNow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NotNow::ClockFault => "a clock fault is latched; nothing expires until the clock is trusted again",
            NotNow::NotSealed => "the link is not sealed; expiry runs only while sealed",
            NotNow::NoPolicy => "no policy is in force; nothing expires without one",
        })
    }
}

/// The time expiry judges by: the vault's time, but never past the expiry of the policy in
/// force. A clock that runs fast can then make snapshots go at most as early as the policy's
/// validity (capped by the root's `max_validity`), and once the quorum stops signing new
/// policies, nothing more expires.
pub fn expiry_time(vault_now: Timestamp, policy_expires: Timestamp) -> Timestamp {
    vault_now.min(policy_expires)
}

/// Whether expiry may run at all right now.
pub fn may_expire(sealed: bool, clock_fault: bool, policy_in_force: bool) -> Result<(), NotNow> {
    if clock_fault {
        return Err(NotNow::ClockFault);
    }
    if !sealed {
        return Err(NotNow::NotSealed);
    }
    if !policy_in_force {
        return Err(NotNow::NoPolicy);
    }
    Ok(())
}

/// Decides, at vault time `now`, which snapshots expire. Snapshots are grouped by (pusher,
/// dataset) and ranked newest first by `received_at` (then id, so the order is total).
pub fn plan_expiry(snapshots: &[SealedSnapshot], now: Timestamp, retention: Retention, holds: &Holds) -> ExpiryPlan {
    let keep_last = retention.keep_last.max(1);
    let mut by_dataset: BTreeMap<(&str, &str), Vec<&SealedSnapshot>> = BTreeMap::new();
    for snapshot in snapshots {
        by_dataset.entry((&snapshot.pusher, &snapshot.dataset)).or_default().push(snapshot);
    }
    let mut plan = ExpiryPlan::default();
    for ((pusher, dataset), mut group) in by_dataset {
        group.sort_by(|a, b| (b.received_at, &b.id).cmp(&(a.received_at, &a.id)));
        let dataset_held = holds.covers_dataset(pusher, dataset);
        for (index, snapshot) in group.into_iter().enumerate() {
            if now <= snapshot.retain_until {
                plan.next_due = Some(plan.next_due.map_or(snapshot.retain_until, |due| due.min(snapshot.retain_until)));
                continue;
            }
            let rank = u32::try_from(index + 1).unwrap_or(u32::MAX);
            let kept = if rank <= keep_last { Some(Kept::Newest { rank, keep_last }) } else { holds.held(snapshot, dataset_held).map(Kept::from) };
            match kept {
                Some(why) => plan.kept.push((snapshot.clone(), why)),
                None => plan.expire.push(snapshot.clone()),
            }
        }
    }
    plan.expire.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
    plan
}

/// Why a snapshot a due purge order names stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurgeKept {
    /// Sealed after the order was accepted: the admins who signed it never saw it.
    SealedAfterOrder { accepted_at: Timestamp },
    /// Younger than the trust root's `min_retain`: not even the quorum deletes it sooner.
    MinRetain { until: Timestamp },
    /// A hold covers the snapshot.
    HeldSnapshot,
    /// A hold covers its (pusher, dataset), or its pusher.
    HeldDataset,
}

impl std::fmt::Display for PurgeKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PurgeKept::SealedAfterOrder { accepted_at } => write!(f, "sealed after the order was accepted ({accepted_at})"),
            PurgeKept::MinRetain { until } => write!(f, "younger than the root's min_retain (kept until {until})"),
            PurgeKept::HeldSnapshot => f.write_str("held"),
            PurgeKept::HeldDataset => f.write_str("its dataset is held"),
        }
    }
}

/// What one due purge order comes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgePlan {
    /// Named by the order and not kept: these go, oldest first.
    pub purge: Vec<SealedSnapshot>,
    /// Named by the order but kept, with the rule that keeps each, oldest first.
    pub kept: Vec<(SealedSnapshot, PurgeKept)>,
}

/// Decides, at vault time `now`, which of the sealed snapshots a purge order takes. It names
/// snapshots or (pusher, dataset)s (`names`); it takes only those sealed before it was
/// accepted (a dataset purge is matched when it runs, days later) and older than the root's
/// `min_retain`, and never a held one. The policy's `keep_last` does not bind it: a purge is
/// the quorum's explicit order, after a cooling-off any one admin can veto, and decommissions
/// a dataset whole; the root's `min_retain`, which no policy can lower, does.
pub fn plan_purge(snapshots: &[SealedSnapshot], names: impl Fn(&SealedSnapshot) -> bool, accepted_at: Timestamp, min_retain: Duration, now: Timestamp, holds: &Holds) -> PurgePlan {
    let mut plan = PurgePlan::default();
    for snapshot in snapshots.iter().filter(|s| names(s)) {
        let until = snapshot.received_at.saturating_add(min_retain);
        let kept = if snapshot.received_at > accepted_at {
            Some(PurgeKept::SealedAfterOrder { accepted_at })
        } else if now < until {
            Some(PurgeKept::MinRetain { until })
        } else {
            holds.held(snapshot, holds.covers_dataset(&snapshot.pusher, &snapshot.dataset)).map(PurgeKept::from)
        };
        match kept {
            Some(why) => plan.kept.push((snapshot.clone(), why)),
            None => plan.purge.push(snapshot.clone()),
        }
    }
    plan.purge.sort_by(|a, b| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
    plan.kept.sort_by(|(a, _), (b, _)| (a.received_at, &a.id).cmp(&(b.received_at, &b.id)));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: i64 = 86_400;

    fn at(day: i64) -> Timestamp {
        Timestamp::from_unix(1_800_000_000 + day * DAY).unwrap()
    }

    /// A nightly snapshot sealed on `day`, kept for `retain_days`.
    fn nightly(pusher: &str, dataset: &str, day: i64, retain_days: i64) -> SealedSnapshot {
        SealedSnapshot { id: format!("{dataset}-{day:05}"), pusher: pusher.into(), dataset: dataset.into(), received_at: at(day), retain_until: at(day + retain_days), bytes_new: 0 }
    }

    fn ids(snapshots: &[SealedSnapshot]) -> Vec<String> {
        snapshots.iter().map(|s| s.id.clone()).collect()
    }

    #[test]
    fn a_year_of_nightly_pushes_keeps_exactly_the_last_35_days() {
        let snapshots: Vec<_> = (0..365).map(|day| nightly("db", "pg", day, 35)).collect();
        // Day 400 (noon): everything sealed before day 365 - 35 = 330 is past retain_until...
        let plan = plan_expiry(&snapshots, at(400), Retention::default(), &Holds::default());
        // ...but the newest 3 of the dataset stay whatever their age: days 362, 363, 364.
        assert_eq!(plan.expire.len(), 362);
        assert_eq!(plan.expire.first().unwrap().id, "pg-00000", "oldest first");
        assert_eq!(plan.expire.last().unwrap().id, "pg-00361");
        assert_eq!(
            plan.kept.iter().map(|(s, why)| (s.id.as_str(), why.clone())).collect::<Vec<_>>(),
            vec![("pg-00364", Kept::Newest { rank: 1, keep_last: 3 }), ("pg-00363", Kept::Newest { rank: 2, keep_last: 3 }), ("pg-00362", Kept::Newest { rank: 3, keep_last: 3 }),]
        );
        assert_eq!(plan.next_due, None);
        // While it still pushes (day 365 + 1): only what is 35 days old goes.
        let plan = plan_expiry(&snapshots, at(300), Retention::default(), &Holds::default());
        assert_eq!(ids(&plan.expire), (0..265).map(|d| format!("pg-{d:05}")).collect::<Vec<_>>());
        assert!(plan.kept.is_empty());
        assert_eq!(plan.next_due, Some(at(265 + 35)), "pg-00265 is due at exactly day 300, so not yet past");
    }

    #[test]
    fn retain_until_is_inclusive_the_snapshot_goes_only_once_the_time_is_past_it() {
        let snapshots = vec![nightly("db", "pg", 0, 10), nightly("db", "pg", 1, 10), nightly("db", "pg", 2, 10), nightly("db", "pg", 3, 10)];
        let exactly = plan_expiry(&snapshots, at(10), Retention::default(), &Holds::default());
        assert!(exactly.expire.is_empty());
        let past = plan_expiry(&snapshots, at(10).saturating_add(crate::units::Duration::from_secs(1).unwrap()), Retention::default(), &Holds::default());
        assert_eq!(ids(&past.expire), vec!["pg-00000"]);
    }

    #[test]
    fn keep_last_counts_per_pusher_and_dataset() {
        let mut snapshots: Vec<_> = (0..10).map(|d| nightly("db", "pg", d, 1)).collect();
        snapshots.extend((0..10).map(|d| nightly("db", "etc", d, 1)));
        // Another pusher using the same dataset name does not share its ranks.
        snapshots.push(SealedSnapshot { id: "other-pg".into(), ..nightly("web", "pg", 0, 1) });
        let plan = plan_expiry(&snapshots, at(100), Retention { keep_last: 2 }, &Holds::default());
        assert_eq!(plan.expire.len(), 16);
        let kept: BTreeSet<&str> = plan.kept.iter().map(|(s, _)| s.id.as_str()).collect();
        assert_eq!(kept, BTreeSet::from(["pg-00009", "pg-00008", "etc-00009", "etc-00008", "other-pg"]));
    }

    #[test]
    fn holds_on_a_snapshot_or_a_dataset_stop_expiry() {
        let mut snapshots: Vec<_> = (0..6).map(|d| nightly("db", "pg", d, 1)).collect();
        snapshots.extend((0..6).map(|d| nightly("db", "etc", d, 1)));
        let holds = Holds { snapshots: BTreeSet::from(["pg-00001".to_string()]), datasets: BTreeSet::from([("db".to_string(), "etc".to_string())]), pushers: BTreeSet::new() };
        let plan = plan_expiry(&snapshots, at(100), Retention::default(), &holds);
        assert_eq!(ids(&plan.expire), vec!["pg-00000", "pg-00002"]);
        assert!(plan.kept.contains(&(nightly("db", "pg", 1, 1), Kept::HeldSnapshot)));
        assert!(plan.kept.contains(&(nightly("db", "etc", 0, 1), Kept::HeldDataset)));
    }

    #[test]
    fn expiry_never_judges_past_the_policy_in_force() {
        assert_eq!(expiry_time(at(10), at(40)), at(10));
        // A clock years ahead (a forward RTC the gate let through): no further than the policy.
        assert_eq!(expiry_time(at(900), at(40)), at(40));
        let snapshots: Vec<_> = (0..10).map(|d| nightly("db", "pg", d, 35)).collect();
        assert!(plan_expiry(&snapshots, expiry_time(at(900), at(40)), Retention::default(), &Holds::default()).expire.len() < 6);
    }

    #[test]
    fn expiry_waits_for_a_sealed_vault_a_trusted_clock_and_a_policy() {
        assert_eq!(may_expire(true, false, true), Ok(()));
        assert_eq!(may_expire(true, true, true), Err(NotNow::ClockFault));
        assert_eq!(may_expire(false, false, true), Err(NotNow::NotSealed));
        assert_eq!(may_expire(true, false, false), Err(NotNow::NoPolicy));
        assert!(NotNow::ClockFault.to_string().contains("clock fault"));
    }

    fn snapshot_strategy() -> impl Strategy<Value = SealedSnapshot> {
        (0..3u8, 0..3u8, 0..400i64, 1..60i64, 0..1000u32).prop_map(|(p, d, day, retain, n)| SealedSnapshot {
            id: format!("s{n:04}-{day}"),
            pusher: format!("p{p}"),
            dataset: format!("d{d}"),
            received_at: at(day),
            retain_until: at(day + retain),
            bytes_new: 0,
        })
    }

    proptest! {
        #[test]
        fn nothing_young_and_never_a_datasets_newest_expire(snapshots in proptest::collection::vec(snapshot_strategy(), 0..80), now in 0..500i64, keep_last in 1..5u32) {
            let plan = plan_expiry(&snapshots, at(now), Retention { keep_last }, &Holds::default());
            for gone in &plan.expire {
                prop_assert!(at(now) > gone.retain_until);
                let newer = snapshots.iter().filter(|s| s.pusher == gone.pusher && s.dataset == gone.dataset && (s.received_at, &s.id) > (gone.received_at, &gone.id)).count();
                prop_assert!(newer >= keep_last as usize, "{} expired with only {newer} newer", gone.id);
            }
            // Every snapshot is accounted for exactly once: expired, kept, or not yet due.
            let due = snapshots.iter().filter(|s| at(now) > s.retain_until).count();
            prop_assert_eq!(plan.expire.len() + plan.kept.len(), due);
        }
    }

    #[test]
    fn a_purge_takes_only_what_was_sealed_before_it_and_older_than_min_retain_and_never_a_held_one() {
        let snapshots: Vec<SealedSnapshot> = (0..10).map(|day| nightly("db", "pg", day, 365)).chain([nightly("db", "etc", 1, 365)]).collect();
        let holds = Holds { snapshots: ["pg-00002".to_string()].into(), ..Holds::default() };
        let accepted_at = at(7);
        let (min_retain, now) = (Duration::from_secs(5 * DAY).unwrap(), at(10));
        let plan = plan_purge(&snapshots, |s| s.dataset == "pg", accepted_at, min_retain, now, &holds);
        assert_eq!(ids(&plan.purge), ["pg-00000", "pg-00001", "pg-00003", "pg-00004", "pg-00005"]);
        let kept: Vec<(String, String)> = plan.kept.iter().map(|(s, why)| (s.id.clone(), why.to_string())).collect();
        assert_eq!(
            kept,
            [
                ("pg-00002".to_string(), "held".to_string()),
                ("pg-00006".into(), format!("younger than the root's min_retain (kept until {})", at(11))),
                ("pg-00007".into(), format!("younger than the root's min_retain (kept until {})", at(12))),
                ("pg-00008".into(), format!("sealed after the order was accepted ({})", at(7))),
                ("pg-00009".into(), format!("sealed after the order was accepted ({})", at(7))),
            ]
        );
        // A dataset's newest may go (a decommission), and what the order does not name stays.
        let plan = plan_purge(&snapshots, |s| s.dataset == "etc", at(9), Duration::ZERO, now, &Holds::default());
        assert_eq!(ids(&plan.purge), ["etc-00001"]);
    }

    proptest! {
        #[test]
        fn a_purge_never_takes_a_held_snapshot_one_sealed_after_it_or_one_younger_than_min_retain(
            snapshots in proptest::collection::vec(snapshot_strategy(), 0..60), accepted in 0..400i64, now in 0..500i64, min_days in 0..100i64,
        ) {
            let holds = Holds { snapshots: snapshots.iter().step_by(3).map(|s| s.id.clone()).collect(), ..Holds::default() };
            let plan = plan_purge(&snapshots, |_| true, at(accepted), Duration::from_secs(min_days * DAY).unwrap(), at(now), &holds);
            prop_assert_eq!(plan.purge.len() + plan.kept.len(), snapshots.len());
            for gone in &plan.purge {
                prop_assert!(gone.received_at <= at(accepted) && gone.received_at.saturating_add(Duration::from_secs(min_days * DAY).unwrap()) <= at(now) && !holds.covers(gone));
            }
        }
    }

    #[test]
    fn a_lowered_keep_last_waits_out_the_cooling_off_and_a_raised_one_counts_at_once() {
        let cooling = Duration::from_secs(3 * DAY).unwrap();
        // Lowered from 30 to 1 on day 10: 30 stays until day 13.
        let floor = keep_last_floor(Some(30), None, 1, at(10), cooling);
        assert_eq!(floor, Some((30, at(13))));
        assert_eq!(effective_keep_last(1, floor, at(12)), 30);
        assert_eq!(effective_keep_last(1, floor, at(13)), 1);
        // Lowered again meanwhile: the higher value, the later end.
        assert_eq!(keep_last_floor(Some(1), floor, 1, at(11), cooling), Some((30, at(13))));
        assert_eq!(keep_last_floor(Some(20), floor, 5, at(12), cooling), Some((30, at(15))));
        // Raised, or the first policy: nothing to wait for; a floor that ended is dropped.
        assert_eq!(keep_last_floor(Some(3), None, 10, at(10), cooling), None);
        assert_eq!(keep_last_floor(None, None, 1, at(10), cooling), None);
        assert_eq!(keep_last_floor(Some(1), floor, 2, at(20), cooling), None);
        // A raised policy above a floor counts at once.
        assert_eq!(effective_keep_last(40, floor, at(12)), 40);
    }
}
