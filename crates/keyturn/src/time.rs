//! Times as keyturn writes them for people, databases and IAM: UTC to the second, computed
//! here (no calendar crate), in every feature set so that the CLI prints the API's Unix
//! times the same way the functions write their tags and statements.

use std::time::{SystemTime, UNIX_EPOCH};

/// `at` in UTC to the second, as both database engines read a timestamp:
/// `YYYY-MM-DD HH:MM:SS` (before 1970: the epoch).
pub fn utc_datetime(at: SystemTime) -> String {
    unix_datetime(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// `at` as ISO 8601 in UTC, as IAM's policy conditions and keyturn's tags write a time:
/// `YYYY-MM-DDTHH:MM:SSZ` (before 1970: the epoch).
pub fn iso8601(at: SystemTime) -> String {
    iso8601_unix(at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
}

/// [`iso8601`] of a Unix time in seconds, as the credentials API's answers carry it
/// (`expires_at`). Any `u64` is a date: no addition to a `SystemTime` that could overflow.
pub fn iso8601_unix(secs: u64) -> String {
    unix_datetime(secs).replacen(' ', "T", 1) + "Z"
}

fn unix_datetime(secs: u64) -> String {
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn utc_datetimes_are_utc_to_the_second() {
        let at = |secs: u64| UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(utc_datetime(at(0)), "1970-01-01 00:00:00");
        assert_eq!(utc_datetime(at(951_782_400)), "2000-02-29 00:00:00");
        assert_eq!(utc_datetime(at(1_795_989_906)), "2026-11-29 22:05:06");
        assert_eq!(utc_datetime(at(4_102_444_799)), "2099-12-31 23:59:59");
        assert_eq!(utc_datetime(UNIX_EPOCH - Duration::from_secs(5)), "1970-01-01 00:00:00");
    }

    #[test]
    fn iso8601_is_the_same_instant_with_a_t_and_a_z() {
        assert_eq!(iso8601(UNIX_EPOCH + Duration::from_secs(1_796_691_723)), "2026-12-08T01:02:03Z");
        assert_eq!(iso8601_unix(1_796_691_723), "2026-12-08T01:02:03Z");
        assert_eq!(iso8601_unix(0), "1970-01-01T00:00:00Z");
        // The largest Unix time an answer could carry is still a date, not a panic.
        assert!(iso8601_unix(u64::MAX).ends_with('Z'));
    }
}
