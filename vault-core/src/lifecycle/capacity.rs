//! Capacity: how full the store's filesystem is, how fast it fills, and when to warn.
//!
//! The forecast divides the space left above the reserve by the mean daily ingest (new bytes
//! sealed, from the receipts) of the last [`FORECAST_DAYS`] days; no ingest, no forecast.

use crate::units::Timestamp;

/// The window the forecast averages over.
pub const FORECAST_DAYS: i64 = 30;
/// Used share (percent) from which the vault warns, and from which it is critical.
pub const WARN_PERCENT: u64 = 80;
pub const CRITICAL_PERCENT: u64 = 90;

/// How alarming a fill level is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Fine,
    /// At least [`WARN_PERCENT`] used.
    Warn,
    /// At least [`CRITICAL_PERCENT`] used.
    Critical,
}

/// The filesystem's state and the forecast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlook {
    pub used_percent: u64,
    pub level: Level,
    /// New bytes sealed in the last [`FORECAST_DAYS`] days.
    pub ingest_bytes: u64,
    /// Days until the space above the reserve is gone at that rate; `None` without ingest.
    pub days_until_full: Option<u64>,
}

/// `sealed`: (when, new bytes) of each sealed snapshot. `used` and `free` are the
/// filesystem's; `reserve` is what pushes never take.
pub fn outlook(sealed: &[(Timestamp, u64)], now: Timestamp, used: u64, free: u64, reserve: u64) -> Outlook {
    let total = used.saturating_add(free);
    let used_percent = if total == 0 { 100 } else { u64::try_from(u128::from(used) * 100 / u128::from(total)).unwrap_or(100) };
    let level = match used_percent {
        p if p >= CRITICAL_PERCENT => Level::Critical,
        p if p >= WARN_PERCENT => Level::Warn,
        _ => Level::Fine,
    };
    let since = now.unix().saturating_sub(FORECAST_DAYS * 86_400);
    let ingest_bytes = sealed.iter().filter(|(at, _)| at.unix() > since && *at <= now).fold(0u64, |sum, (_, bytes)| sum.saturating_add(*bytes));
    let per_day = ingest_bytes / FORECAST_DAYS as u64;
    let days_until_full = (per_day > 0).then(|| free.saturating_sub(reserve) / per_day);
    Outlook { used_percent, level, ingest_bytes, days_until_full }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn at(day: i64) -> Timestamp {
        Timestamp::from_unix(1_800_000_000 + day * 86_400).unwrap()
    }

    #[test]
    fn the_forecast_is_the_space_left_above_the_reserve_over_the_last_30_days_mean_ingest() {
        // 60 nights of 2 GiB each; only the last 30 count: 60 GiB, 2 GiB a day.
        let sealed: Vec<(Timestamp, u64)> = (0..60).map(|d| (at(d), 2 * GIB)).collect();
        let o = outlook(&sealed, at(59), 700 * GIB, 300 * GIB, 100 * GIB);
        assert_eq!(o.ingest_bytes, 60 * GIB);
        assert_eq!(o.days_until_full, Some(100), "200 GiB above the reserve at 2 GiB a day");
        assert_eq!((o.used_percent, o.level), (70, Level::Fine));
    }

    #[test]
    fn warn_at_80_critical_at_90_and_no_forecast_without_ingest() {
        assert_eq!(outlook(&[], at(0), 80, 20, 0).level, Level::Warn);
        assert_eq!(outlook(&[], at(0), 79, 21, 0).level, Level::Fine);
        assert_eq!(outlook(&[], at(0), 90, 10, 0).level, Level::Critical);
        assert_eq!(outlook(&[], at(0), 0, 0, 0).level, Level::Critical, "no space at all");
        assert_eq!(outlook(&[(at(-40), GIB)], at(0), 10, 90, 0).days_until_full, None, "ingest older than 30 days does not count");
        // Below the reserve already: full now.
        assert_eq!(outlook(&[(at(0), 30 * GIB)], at(0), 99 * GIB, GIB, 2 * GIB).days_until_full, Some(0));
    }
}
