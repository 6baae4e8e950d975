//! Calendar time in UTC, for logs, HTTP dates and status pages, without a date crate: seconds
//! since the Unix epoch in, text out.

use std::time::SystemTime;

/// A UTC calendar time: (year, month, day, hour, minute, second, weekday with Sunday = 0).
pub struct Civil(pub i64, pub u64, pub u64, pub u64, pub u64, pub u64, pub u64);

pub fn civil(secs: u64) -> Civil {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u64;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u64;
    let year = yoe + era * 400 + i64::from(month <= 2);
    // 1970-01-01 was a Thursday.
    Civil(year, month, day, h, m, s, (days + 4) % 7)
}

/// RFC 3339 UTC timestamp with milliseconds, without pulling in a date crate.
pub fn humantime_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let Civil(year, month, day, h, m, s, _) = civil(d.as_secs());
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:03}Z", d.subsec_millis())
}

/// An HTTP date (RFC 9110 5.6.7 IMF-fixdate): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let Civil(year, month, day, h, m, s, wd) = civil(secs);
    let wd = DAYS.get(wd as usize).copied().unwrap_or("Thu");
    let mon = MONTHS.get(month.saturating_sub(1) as usize).copied().unwrap_or("Jan");
    format!("{wd}, {day:02} {mon} {year:04} {h:02}:{m:02}:{s:02} GMT")
}

/// RFC 3339 UTC timestamp to the second (`2025-11-18T10:00:00Z`), from Unix seconds.
pub fn rfc3339(secs: u64) -> String {
    let Civil(year, month, day, h, m, s, _) = civil(secs);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
}

/// The calendar day (`2025-11-18`) of Unix seconds.
pub fn day(secs: u64) -> String {
    let Civil(year, month, day, ..) = civil(secs);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339() {
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_763_460_000_123);
        assert_eq!(super::humantime_rfc3339(t), "2025-11-18T10:00:00.123Z");
        assert_eq!(super::http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(super::http_date(1_763_460_000), "Tue, 18 Nov 2025 10:00:00 GMT");
        assert_eq!(super::rfc3339(1_763_460_000), "2025-11-18T10:00:00Z");
        assert_eq!(super::day(1_763_460_000 + 50_399), "2025-11-18");
        assert_eq!(super::day(951_782_400), "2000-02-29");
    }
}
