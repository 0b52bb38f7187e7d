//! When the vault may be reachable: a pure function of (policy, time).
//!
//! All arithmetic is on Unix seconds in UTC. A UTC day is exactly 86 400 s and 1970-01-01
//! was a Thursday, so weekdays, midnight, year ends and leap days need no calendar tables.
//! Windows that touch are merged, and nothing is open at or after the policy's expiry.

use crate::policy::{Policy, Window};
use crate::units::{Timestamp, SECS_PER_DAY};

/// A half-open span `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub start: Timestamp,
    pub end: Timestamp,
}

impl Interval {
    pub fn clip(self, from: Timestamp, to: Timestamp) -> Interval {
        let start = self.start.max(from);
        Interval { start, end: self.end.min(to).max(start) }
    }

    pub fn length_secs(self) -> i64 {
        self.end.secs_since(self.start)
    }

    pub fn contains(self, t: Timestamp) -> bool {
        self.start <= t && t < self.end
    }
}

/// What the link should be at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowState {
    /// Inside a window; it closes at `until` (never later than the policy's expiry).
    Open { until: Timestamp },
    /// Outside every window; `next_open` is `None` when no window opens before expiry.
    Closed { next_open: Option<Timestamp> },
}

/// 0 = Monday .. 6 = Sunday, for the UTC day numbered `day` since 1970-01-01 (a Thursday).
pub fn weekday_of_day(day: i64) -> usize {
    usize::try_from((day + 3).rem_euclid(7)).expect("rem_euclid(7) is in 0..7")
}

/// The occurrences of one window that intersect `[from, to)`, in start order.
pub fn window_occurrences(window: &Window, from: Timestamp, to: Timestamp) -> Vec<Interval> {
    let mut out = Vec::new();
    if from >= to {
        return out;
    }
    match window {
        Window::Once { from: start, until } => {
            if *start < to && *until > from {
                out.push(Interval { start: *start, end: *until });
            }
        }
        Window::Weekly { days, start_secs, duration } => {
            // An occurrence starts within its day and lasts at most a day, so one that
            // reaches `from` started no earlier than the day before `from`'s day.
            let first_day = from.unix().div_euclid(SECS_PER_DAY) - 1;
            let last_day = (to.unix() - 1).div_euclid(SECS_PER_DAY);
            for day in first_day..=last_day {
                if !days.contains(weekday_of_day(day)) {
                    continue;
                }
                let Some(start) = Timestamp::from_unix(day * SECS_PER_DAY + start_secs) else { continue };
                let end = start.saturating_add(*duration);
                if start < to && end > from {
                    out.push(Interval { start, end });
                }
            }
        }
    }
    out
}

/// Every window's occurrences that intersect `[from, to)`, touching ones merged, cut at the
/// policy's expiry.
pub fn merged_intervals(policy: &Policy, from: Timestamp, to: Timestamp) -> Vec<Interval> {
    let to = to.min(policy.expires);
    let mut all: Vec<Interval> = policy.windows.iter().flat_map(|w| window_occurrences(w, from, to)).collect();
    all.sort_by_key(|iv| iv.start);
    let mut merged: Vec<Interval> = Vec::with_capacity(all.len());
    for iv in all {
        match merged.last_mut() {
            Some(last) if iv.start <= last.end => last.end = last.end.max(iv.end),
            _ => merged.push(iv),
        }
    }
    for iv in &mut merged {
        iv.end = iv.end.min(policy.expires);
    }
    merged
}

/// The link state the policy asks for at `now`.
pub fn state_at(policy: &Policy, now: Timestamp) -> WindowState {
    if now >= policy.expires {
        return WindowState::Closed { next_open: None };
    }
    // Look ahead a little first, then further: weekly windows recur within 8 days, while a
    // one-shot window or a long merged run may need the horizon pushed out to the expiry.
    let mut lookahead = 8 * SECS_PER_DAY;
    loop {
        // Grows until it reaches the expiry (at the latest Timestamp::MAX), so this ends.
        let horizon = Timestamp::from_unix(now.unix().saturating_add(lookahead)).unwrap_or(Timestamp::MAX).min(policy.expires);
        let at_expiry = horizon == policy.expires;
        match merged_intervals(policy, now, horizon).first() {
            Some(first) if first.start <= now && (first.end < horizon || at_expiry) => {
                return WindowState::Open { until: first.end };
            }
            Some(first) if first.start <= now => {}
            Some(first) => return WindowState::Closed { next_open: Some(first.start) },
            None if at_expiry => return WindowState::Closed { next_open: None },
            None => {}
        }
        lookahead = lookahead.saturating_mul(4);
    }
}

/// The openings that intersect `[from, from + days)`, each as a merged interval (the first
/// may have started before `from`). For `vaultctl schedule`.
pub fn openings(policy: &Policy, from: Timestamp, days: u32) -> Vec<Interval> {
    // Not through `Duration`, which stops at 100 years: past it the span came out as 0s.
    let to = Timestamp::from_unix(from.unix().saturating_add(i64::from(days) * SECS_PER_DAY)).unwrap_or(Timestamp::MAX);
    let mut out = merged_intervals(policy, from, to);
    // A run that continues past `to` is reported with its real end.
    if let Some(last) = out.last_mut() {
        if last.end >= to {
            if let WindowState::Open { until } = state_at(policy, last.start.max(from)) {
                last.end = until;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Close, Network, NicSelector, Policy, WeekDays, Window};
    use crate::units::Duration;
    use proptest::prelude::*;
    use time::OffsetDateTime;

    fn t(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    fn policy(windows: Vec<Window>, expires: Timestamp) -> Policy {
        Policy {
            vault_id: "v".into(),
            version: 1,
            issued: None,
            expires,
            network: Network { nic: NicSelector::Name("eth0".into()), address: "192.0.2.10".parse().unwrap(), prefix_len: 24, port: 7400 },
            windows,
            pushers: vec![],
            close: Close { early: false, grace: Duration::ZERO },
            retention: Default::default(),
            scrub: Default::default(),
            drill: Default::default(),
            rotation: None,
            signals: Default::default(),
        }
    }

    fn weekly(days: &[usize], start: &str, minutes: i64) -> Window {
        let (h, m) = start.split_once(':').unwrap();
        Window::Weekly {
            days: WeekDays::from_indices(days.iter().copied()),
            start_secs: h.parse::<i64>().unwrap() * 3600 + m.parse::<i64>().unwrap() * 60,
            duration: Duration::from_secs(minutes * 60).unwrap(),
        }
    }

    const MON: usize = 0;
    const TUE: usize = 1;
    const THU: usize = 3;
    const FRI: usize = 4;
    const SUN: usize = 6;

    #[test]
    fn weekday_arithmetic_matches_the_calendar() {
        assert_eq!(weekday_of_day(0), THU); // 1970-01-01
        assert_eq!(weekday_of_day(t("2028-02-29T12:00:00Z").unix() / SECS_PER_DAY), TUE);
        assert_eq!(weekday_of_day(t("2026-12-31T00:00:00Z").unix() / SECS_PER_DAY), THU);
    }

    #[test]
    fn open_and_closed_around_a_weekday_window() {
        let p = policy(vec![weekly(&[MON, TUE, 2, THU, FRI], "01:00", 45)], t("2027-06-01T00:00:00Z"));
        // 2026-11-30 is a Monday.
        assert_eq!(state_at(&p, t("2026-11-30T01:10:00Z")), WindowState::Open { until: t("2026-11-30T01:45:00Z") });
        assert_eq!(state_at(&p, t("2026-11-30T01:45:00Z")), WindowState::Closed { next_open: Some(t("2026-12-01T01:00:00Z")) });
        // Friday after the window: next is Monday.
        assert_eq!(state_at(&p, t("2026-12-04T02:00:00Z")), WindowState::Closed { next_open: Some(t("2026-12-07T01:00:00Z")) });
    }

    #[test]
    fn windows_across_midnight_year_end_and_leap_day() {
        // Thursday 2026-12-31 23:00 for 2h runs into 2027.
        let p = policy(vec![weekly(&[THU], "23:00", 120)], t("2027-06-01T00:00:00Z"));
        assert_eq!(state_at(&p, t("2027-01-01T00:30:00Z")), WindowState::Open { until: t("2027-01-01T01:00:00Z") });
        // Monday 2028-02-28 23:30 for 1h runs into the leap day.
        let p = policy(vec![weekly(&[MON], "23:30", 60)], t("2029-01-01T00:00:00Z"));
        assert_eq!(state_at(&p, t("2028-02-29T00:15:00Z")), WindowState::Open { until: t("2028-02-29T00:30:00Z") });
        assert_eq!(state_at(&p, t("2028-02-29T00:30:00Z")), WindowState::Closed { next_open: Some(t("2028-03-06T23:30:00Z")) });
    }

    #[test]
    fn touching_windows_merge_across_days() {
        // Sunday 23:00-24:00 then Monday 00:00-01:00: one opening of two hours.
        let p = policy(vec![weekly(&[SUN], "23:00", 60), weekly(&[MON], "00:00", 60)], t("2027-06-01T00:00:00Z"));
        assert_eq!(state_at(&p, t("2026-11-29T23:30:00Z")), WindowState::Open { until: t("2026-11-30T01:00:00Z") });
        let runs = openings(&p, t("2026-11-29T00:00:00Z"), 7);
        assert_eq!(runs, vec![Interval { start: t("2026-11-29T23:00:00Z"), end: t("2026-11-30T01:00:00Z") }]);
    }

    #[test]
    fn a_listing_longer_than_a_duration_still_lists() {
        // 50 000 days is past `Duration`'s 100 years; the listing once came out empty.
        let p = policy(vec![weekly(&[MON], "01:00", 60)], t("2027-01-01T00:00:00Z"));
        assert_eq!(openings(&p, t("2026-11-29T00:00:00Z"), 50_000).len(), 5);
        assert_eq!(openings(&p, t("2026-11-29T00:00:00Z"), u32::MAX).len(), 5);
    }

    #[test]
    fn expiry_cuts_and_ends_the_schedule() {
        let p = policy(vec![weekly(&[MON], "01:00", 60)], t("2026-11-30T01:30:00Z"));
        assert_eq!(state_at(&p, t("2026-11-30T01:10:00Z")), WindowState::Open { until: t("2026-11-30T01:30:00Z") });
        assert_eq!(state_at(&p, t("2026-11-30T01:30:00Z")), WindowState::Closed { next_open: None });
        assert_eq!(state_at(&p, t("2026-11-29T00:00:00Z")), WindowState::Closed { next_open: Some(t("2026-11-30T01:00:00Z")) });
    }

    #[test]
    fn an_always_open_policy_ends_at_a_far_expiry() {
        // Every day, all day, until 9999: the look-ahead must still end.
        let p = policy(vec![weekly(&[0, 1, 2, 3, 4, 5, 6], "00:00", 1440)], Timestamp::MAX);
        assert_eq!(state_at(&p, t("2026-11-25T00:00:00Z")), WindowState::Open { until: Timestamp::MAX });
    }

    #[test]
    fn far_one_shot_is_found() {
        let p = policy(vec![Window::Once { from: t("2027-05-01T02:00:00Z"), until: t("2027-05-01T02:30:00Z") }], t("2027-06-01T00:00:00Z"));
        assert_eq!(state_at(&p, t("2026-11-25T00:00:00Z")), WindowState::Closed { next_open: Some(t("2027-05-01T02:00:00Z")) });
        let p = policy(vec![], t("2027-06-01T00:00:00Z"));
        assert_eq!(state_at(&p, t("2026-11-25T00:00:00Z")), WindowState::Closed { next_open: None });
    }

    // ---- property tests against a brute-force oracle built on the `time` crate's calendar --

    /// Is `at` inside any window? Uses calendar dates, not our day arithmetic.
    fn oracle_open(p: &Policy, at: Timestamp) -> bool {
        if at >= p.expires {
            return false;
        }
        let dt = OffsetDateTime::from_unix_timestamp(at.unix()).unwrap();
        p.windows.iter().any(|w| match w {
            Window::Once { from, until } => *from <= at && at < *until,
            Window::Weekly { days, start_secs, duration } => (0..=1).any(|back| {
                let date = dt.date() - time::Duration::days(back);
                let midnight = date.midnight().assume_utc().unix_timestamp();
                let start = midnight + start_secs;
                days.contains(date.weekday().number_days_from_monday() as usize) && start <= at.unix() && at.unix() < start + duration.secs()
            }),
        })
    }

    // Instants near the awkward places: year ends, leap days, midnights.
    fn interesting_instant() -> impl Strategy<Value = Timestamp> {
        let anchors = prop::sample::select(vec!["2027-12-31T23:00:00Z", "2028-02-28T22:00:00Z", "2028-02-29T23:00:00Z", "2100-02-28T23:00:00Z", "2026-11-29T23:30:00Z", "2030-06-15T12:00:00Z"]);
        (anchors, -3 * SECS_PER_DAY..3 * SECS_PER_DAY).prop_map(|(anchor, offset)| Timestamp::from_unix(t(anchor).unix() + offset).unwrap())
    }

    fn arbitrary_window(around: Timestamp) -> impl Strategy<Value = Window> {
        let weekly = (1u8..128, 0i64..1440, 1i64..=1440).prop_map(|(mask, start_min, minutes)| Window::Weekly {
            days: WeekDays::from_indices((0..7).filter(|d| mask & (1 << d) != 0)),
            start_secs: start_min * 60,
            duration: Duration::from_secs(minutes * 60).unwrap(),
        });
        let once = (-5 * SECS_PER_DAY..5 * SECS_PER_DAY, 60i64..2 * SECS_PER_DAY).prop_map(move |(offset, len)| {
            let from = Timestamp::from_unix(around.unix() + offset).unwrap();
            Window::Once { from, until: Timestamp::from_unix(from.unix() + len).unwrap() }
        });
        prop_oneof![3 => weekly, 1 => once]
    }

    fn scenario() -> impl Strategy<Value = (Policy, Timestamp, Vec<f64>)> {
        interesting_instant().prop_flat_map(|now| {
            (prop::collection::vec(arbitrary_window(now), 0..4), SECS_PER_HOUR_I..40 * SECS_PER_DAY, prop::collection::vec(0.0f64..1.0, 16)).prop_map(move |(windows, expiry_offset, samples)| {
                let expires = Timestamp::from_unix(now.unix() + expiry_offset).unwrap();
                (policy(windows, expires), now, samples)
            })
        })
    }

    const SECS_PER_HOUR_I: i64 = 3600;

    /// The instant a fraction `s` (in `0..1`) of the way into `span` seconds, whole seconds.
    // why: `s` is in [0, 1), so the product lies in [0, span) and fits an i64; dropping the fraction is the intended floor.
    #[allow(clippy::cast_possible_truncation)]
    fn fraction_of(s: f64, span: i64) -> i64 {
        (s * span as f64) as i64
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn state_agrees_with_the_calendar_oracle((p, now, samples) in scenario()) {
            let at = |offset: i64| Timestamp::from_unix(now.unix() + offset).unwrap();
            match state_at(&p, now) {
                WindowState::Open { until } => {
                    prop_assert!(until > now);
                    prop_assert!(oracle_open(&p, now));
                    prop_assert!(oracle_open(&p, at(until.secs_since(now) - 1)));
                    prop_assert!(!oracle_open(&p, until), "still open at until {}", until);
                    for s in &samples {
                        let offset = fraction_of(*s, until.secs_since(now));
                        prop_assert!(oracle_open(&p, at(offset)), "closed at {} inside Open", at(offset));
                    }
                }
                WindowState::Closed { next_open } => {
                    prop_assert!(!oracle_open(&p, now));
                    let gap_end = next_open.unwrap_or(p.expires);
                    if let Some(next) = next_open {
                        prop_assert!(next > now && next < p.expires);
                        prop_assert!(oracle_open(&p, next), "not open at next_open {}", next);
                    }
                    for s in &samples {
                        let offset = fraction_of(*s, gap_end.secs_since(now));
                        prop_assert!(!oracle_open(&p, at(offset)), "open at {} inside Closed", at(offset));
                    }
                }
            }
        }

        #[test]
        fn open_until_is_the_end_of_the_merged_run((p, now, _s) in scenario()) {
            if let WindowState::Open { until } = state_at(&p, now) {
                // One second before `until` the same run is still open and ends at the same time.
                let just_before = Timestamp::from_unix(until.unix() - 1).unwrap();
                prop_assert_eq!(state_at(&p, just_before), WindowState::Open { until });
            }
        }
    }
}
