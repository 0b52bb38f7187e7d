//! When the vault re-reads everything it sealed: every `every` (policy; default 30 days) of
//! vault time after the last scrub that read the whole store, while sealed, at no more than
//! [`RATE_BYTES_PER_SEC`].

use crate::units::{Duration, Timestamp};

pub const DEFAULT_EVERY_DAYS: i64 = 30;
/// The shortest and longest `every` a policy may set.
pub const MIN_EVERY_DAYS: i64 = 1;
pub const MAX_EVERY_DAYS: i64 = 366;
/// A scrub reads at most this fast, so it never starves the disk of a small appliance.
pub const RATE_BYTES_PER_SEC: u64 = 256 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scrub {
    pub every: Duration,
}

impl Default for Scrub {
    fn default() -> Self {
        Scrub { every: Duration::from_secs(DEFAULT_EVERY_DAYS * 86_400).expect("30 days is a duration") }
    }
}

/// When the next scrub is due: at once if none ever finished.
pub fn next_due(last: Option<Timestamp>, scrub: Scrub) -> Option<Timestamp> {
    next_after(last, scrub.every)
}

/// `every` after `last`; `None` (at once) if it never ran. Scrubs and drills share this cadence.
pub fn next_after(last: Option<Timestamp>, every: Duration) -> Option<Timestamp> {
    last.map(|last| last.saturating_add(every))
}

pub fn is_due(last: Option<Timestamp>, scrub: Scrub, now: Timestamp) -> bool {
    next_due(last, scrub).is_none_or(|due| now >= due)
}

/// How long to pause after reading `read` bytes in `elapsed`, to stay at or under `rate`.
pub fn pause_for(read: u64, elapsed: std::time::Duration, rate: u64) -> std::time::Duration {
    if rate == 0 {
        return std::time::Duration::ZERO;
    }
    let should_take = std::time::Duration::from_secs_f64(read as f64 / rate as f64);
    should_take.saturating_sub(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: i64) -> Timestamp {
        Timestamp::from_unix(1_800_000_000 + day * 86_400).unwrap()
    }

    #[test]
    fn a_scrub_is_due_every_thirty_days_and_at_once_if_none_ever_finished() {
        let scrub = Scrub::default();
        assert!(is_due(None, scrub, at(0)));
        assert!(!is_due(Some(at(0)), scrub, at(29)));
        assert!(is_due(Some(at(0)), scrub, at(30)));
        assert_eq!(next_due(Some(at(0)), scrub), Some(at(30)));
    }

    #[test]
    fn the_pace_holds_the_rate() {
        let mib = 1 << 20;
        assert_eq!(pause_for(256 * mib, std::time::Duration::from_millis(250), 256 * mib), std::time::Duration::from_millis(750));
        assert_eq!(pause_for(mib, std::time::Duration::from_secs(1), 256 * mib), std::time::Duration::ZERO);
    }
}
