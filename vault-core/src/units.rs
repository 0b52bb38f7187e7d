//! Time and size values as people write them in policy files, with one canonical spelling
//! each, so that the same value always encodes to the same bytes.

use std::fmt;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

pub const SECS_PER_MINUTE: i64 = 60;
pub const SECS_PER_HOUR: i64 = 3_600;
pub const SECS_PER_DAY: i64 = 86_400;
pub const SECS_PER_WEEK: i64 = 7 * SECS_PER_DAY;

/// The range of instants the vault reasons about. Anything outside is refused at parse
/// time, which keeps every later addition far from overflow.
const MIN_UNIX: i64 = 0; // 1970-01-01T00:00:00Z
const MAX_UNIX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z

/// A UTC instant with one-second resolution (Unix time: no leap seconds, like the kernel).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    pub const EPOCH: Timestamp = Timestamp(0);
    pub const MAX: Timestamp = Timestamp(MAX_UNIX);

    /// Seconds since the Unix epoch; refused outside 1970..=9999.
    pub fn from_unix(secs: i64) -> Option<Timestamp> {
        (MIN_UNIX..=MAX_UNIX).contains(&secs).then_some(Timestamp(secs))
    }

    pub fn unix(self) -> i64 {
        self.0
    }

    /// RFC 3339, any offset accepted on input (normalised to UTC).
    pub fn parse(text: &str) -> Result<Timestamp, String> {
        let parsed = OffsetDateTime::parse(text, &Rfc3339).map_err(|e| format!("`{text}` is not an RFC 3339 time ({e})"))?;
        if parsed.nanosecond() != 0 {
            return Err(format!("`{text}` has fractional seconds; whole seconds only"));
        }
        Timestamp::from_unix(parsed.unix_timestamp()).ok_or_else(|| format!("`{text}` is outside 1970-01-01..9999-12-31"))
    }

    /// Adds a span, saturating at the end of the supported range.
    pub fn saturating_add(self, span: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(span.secs()).min(MAX_UNIX))
    }

    pub fn saturating_sub(self, span: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(span.secs()).max(MIN_UNIX))
    }

    /// Seconds from `earlier` to `self` (negative if `earlier` is later).
    pub fn secs_since(self, earlier: Timestamp) -> i64 {
        self.0 - earlier.0
    }
}

impl fmt::Display for Timestamp {
    /// Canonical form: `YYYY-MM-DDTHH:MM:SSZ`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dt = OffsetDateTime::from_unix_timestamp(self.0).map_err(|_| fmt::Error)?;
        write!(f, "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", dt.year(), u8::from(dt.month()), dt.day(), dt.hour(), dt.minute(), dt.second())
    }
}

/// A non-negative span of whole seconds, written like `45m`, `2h`, `1h30m`, `35d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(i64);

/// Units from largest to smallest: the canonical spelling uses each at most once, in order.
const DURATION_UNITS: [(char, i64); 5] = [('w', SECS_PER_WEEK), ('d', SECS_PER_DAY), ('h', SECS_PER_HOUR), ('m', SECS_PER_MINUTE), ('s', 1)];

/// Longest span accepted anywhere (100 years): far beyond any sane retention, far below overflow.
const MAX_DURATION_SECS: i64 = 100 * 366 * SECS_PER_DAY;

impl Duration {
    pub const ZERO: Duration = Duration(0);

    pub fn from_secs(secs: i64) -> Option<Duration> {
        (0..=MAX_DURATION_SECS).contains(&secs).then_some(Duration(secs))
    }

    pub fn secs(self) -> i64 {
        self.0
    }

    pub fn parse(text: &str) -> Result<Duration, String> {
        let bad = |why: &str| format!("`{text}` is not a duration ({why}); write e.g. 45m, 2h, 1h30m, 35d");
        if text.is_empty() {
            return Err(bad("empty"));
        }
        let mut total: i64 = 0;
        let mut digits = String::new();
        let mut last_unit_rank = None;
        for ch in text.chars() {
            if ch.is_ascii_digit() {
                if digits.len() >= 12 {
                    return Err(bad("number too long"));
                }
                digits.push(ch);
                continue;
            }
            let rank = DURATION_UNITS.iter().position(|(unit, _)| *unit == ch).ok_or_else(|| bad(&format!("unknown unit `{ch}`")))?;
            if digits.is_empty() {
                return Err(bad("unit without a number"));
            }
            if last_unit_rank.is_some_and(|last| rank <= last) {
                return Err(bad("units must go from largest to smallest, each once"));
            }
            last_unit_rank = Some(rank);
            let value: i64 = digits.parse().map_err(|_| bad("number too long"))?;
            total = value.checked_mul(DURATION_UNITS[rank].1).and_then(|secs| total.checked_add(secs)).ok_or_else(|| bad("too long"))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(bad("number without a unit"));
        }
        Duration::from_secs(total).ok_or_else(|| bad("longer than 100 years"))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        // Weeks are accepted on input but printed as days: "90d" reads better than "12w6d".
        let mut rest = self.0;
        for (unit, size) in DURATION_UNITS.into_iter().filter(|(unit, _)| *unit != 'w') {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

/// A byte count, written like `200GiB`, `512MiB`, `10GB` or `4096`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(u64);

/// Canonical output uses binary units; decimal units are accepted on input.
const SIZE_UNITS: [(&str, u64); 9] =
    [("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("TB", 1_000_000_000_000), ("GB", 1_000_000_000), ("MB", 1_000_000), ("KB", 1_000), ("B", 1)];

impl ByteSize {
    pub fn from_bytes(bytes: u64) -> ByteSize {
        ByteSize(bytes)
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    pub fn parse(text: &str) -> Result<ByteSize, String> {
        let bad = |why: &str| format!("`{text}` is not a size ({why}); write e.g. 200GiB, 512MiB, 10GB");
        let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        if number.is_empty() {
            return Err(bad("no number"));
        }
        let value: u64 = number.parse().map_err(|_| bad("number too long"))?;
        let multiplier = if unit.is_empty() { 1 } else { SIZE_UNITS.iter().find(|(name, _)| *name == unit).map(|(_, m)| *m).ok_or_else(|| bad(&format!("unknown unit `{unit}`")))? };
        value.checked_mul(multiplier).map(ByteSize).ok_or_else(|| bad("too large"))
    }
}

impl fmt::Display for ByteSize {
    /// The largest binary unit that divides the value exactly, so parse(display(x)) == x.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, size) in SIZE_UNITS.iter().filter(|(name, _)| name.contains('i')) {
            if self.0 != 0 && self.0 % size == 0 {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}B", self.0)
    }
}

/// Where a part of the vault gets the time (rustls's `TimeProvider`, held by what needs
/// it): the daemon hands one to the session server, so receipts are stamped by the same rule
/// as the gate's decisions.
pub trait TimeProvider: Send + Sync {
    fn now(&self) -> Timestamp;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps_parse_and_print_canonically() {
        let t = Timestamp::parse("2027-01-31T00:00:00Z").unwrap();
        assert_eq!(t.to_string(), "2027-01-31T00:00:00Z");
        let offset = Timestamp::parse("2027-01-31T02:00:00+02:00").unwrap();
        assert_eq!(offset, t);
        assert!(Timestamp::parse("2027-01-31").unwrap_err().contains("RFC 3339"));
        assert!(Timestamp::parse("2027-01-31T00:00:00.5Z").unwrap_err().contains("fractional"));
        assert!(Timestamp::parse("1969-12-31T23:59:59Z").unwrap_err().contains("outside"));
    }

    #[test]
    fn durations_parse_and_refuse() {
        assert_eq!(Duration::parse("45m").unwrap().secs(), 2700);
        assert_eq!(Duration::parse("1h30m").unwrap().secs(), 5400);
        assert_eq!(Duration::parse("5w").unwrap().to_string(), "35d");
        assert_eq!(Duration::parse("0s").unwrap(), Duration::ZERO);
        for bad in ["", "5", "m", "5x", "30m1h", "1h1h", "-5m", "5 m", "99999999999999d"] {
            assert!(Duration::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn sizes_parse_and_refuse() {
        assert_eq!(ByteSize::parse("200GiB").unwrap().bytes(), 200 << 30);
        assert_eq!(ByteSize::parse("10GB").unwrap().bytes(), 10_000_000_000);
        assert_eq!(ByteSize::parse("4096").unwrap().to_string(), "4KiB");
        assert_eq!(ByteSize::parse("1000").unwrap().to_string(), "1000B");
        for bad in ["", "GiB", "5 GiB", "5gib", "-1", "99999999999TiB"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad} should be refused");
        }
    }

    proptest! {
        #[test]
        fn duration_display_round_trips(secs in 0..=MAX_DURATION_SECS) {
            let d = Duration::from_secs(secs).unwrap();
            prop_assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
        }

        #[test]
        fn size_display_round_trips(bytes in any::<u64>()) {
            let s = ByteSize::from_bytes(bytes);
            prop_assert_eq!(ByteSize::parse(&s.to_string()).unwrap(), s);
        }

        #[test]
        fn timestamp_display_round_trips(secs in MIN_UNIX..=MAX_UNIX) {
            let t = Timestamp::from_unix(secs).unwrap();
            prop_assert_eq!(Timestamp::parse(&t.to_string()).unwrap(), t);
        }
    }
}
