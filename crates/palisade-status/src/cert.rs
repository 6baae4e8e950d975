//! The expiry (`notAfter`) of an X.509 certificate, read straight from its DER: the one field a
//! prober needs, without an X.509 crate. The bytes come from whatever answered the probe, so this
//! is a decoder of untrusted input: it returns `None` on anything it does not expect, never
//! panics, and is fuzzed (`fuzz/fuzz_targets/status_cert.rs`).

/// One DER element: (tag, contents, the bytes after it).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (bytes.iter().fold(0usize, |acc, b| (acc << 8) | usize::from(*b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    Some((tag, contents, after))
}

const SEQUENCE: u8 = 0x30;

/// Unix seconds at which the certificate stops being valid.
pub fn not_after(der: &[u8]) -> Option<u64> {
    let (SEQUENCE, cert, _) = tlv(der)? else { return None };
    let (SEQUENCE, tbs, _) = tlv(cert)? else { return None };
    let (mut tag, mut field, mut rest) = tlv(tbs)?;
    if tag == 0xa0 {
        // [0] EXPLICIT version: skip it, the serial number comes next.
        (tag, field, rest) = tlv(rest)?;
    }
    let _ = field;
    if tag != 0x02 {
        return None;
    }
    let (SEQUENCE, _signature, rest) = tlv(rest)? else { return None };
    let (SEQUENCE, _issuer, rest) = tlv(rest)? else { return None };
    let (SEQUENCE, validity, _) = tlv(rest)? else { return None };
    let (_, _not_before, rest) = tlv(validity)?;
    let (tag, time, _) = tlv(rest)?;
    parse_time(tag, time)
}

/// UTCTime (`YYMMDDHHMMSSZ`, years 1950-2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
pub(crate) fn parse_time(tag: u8, text: &[u8]) -> Option<u64> {
    let digits = text.strip_suffix(b"Z")?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |s: &[u8]| s.iter().fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'));
    let (year, rest) = match (tag, digits.len()) {
        (0x17, 12) => {
            let (yy, rest) = digits.split_at(2);
            let yy = num(yy);
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, rest)
        }
        (0x18, 14) => {
            let (yyyy, rest) = digits.split_at(4);
            (num(yyyy), rest)
        }
        _ => return None,
    };
    let field = |i: usize| rest.get(i..i + 2).map(num);
    let (month, day, h, m, s) = (field(0)?, field(2)?, field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 59 || year < 1970 {
        return None;
    }
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    // 31 February is not a day: the date must come back as it was written.
    let palisade_config::time::Civil(y, mo, d, ..) = palisade_config::time::civil(secs);
    (u64::try_from(y).ok() == Some(year) && mo == month && d == day).then_some(secs)
}

/// `2025-11-18T10:00:00Z` (UTC, to the second) as Unix seconds.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    let shape = b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        });
    if !shape {
        return None;
    }
    let compact: Vec<u8> = b.iter().copied().filter(|c| c.is_ascii_digit() || *c == b'Z').collect();
    parse_time(0x18, &compact)
}

/// Days since 1970-01-01 of a date in 1970 or later (Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time(0x17, b"251118100000Z"), Some(1_763_460_000));
        assert_eq!(parse_time(0x18, b"20251118100000Z"), Some(1_763_460_000));
        assert_eq!(parse_time(0x18, b"20000229000000Z"), Some(951_782_400));
        assert_eq!(parse_time(0x17, b"251318100000Z"), None);
        assert_eq!(parse_time(0x18, b"20250231000000Z"), None);
        assert_eq!(parse_time(0x17, b"2511181000Z"), None);
        assert_eq!(parse_time(0x18, b"2025111810000+Z"), None);
        assert_eq!(parse_rfc3339("2025-11-18T10:00:00Z"), Some(1_763_460_000));
        assert_eq!(parse_rfc3339("2025-11-18 10:00:00Z"), None);
        assert_eq!(parse_rfc3339("2025-11-18T10:00:00+01:00"), None);
    }

    #[test]
    fn a_real_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["site.example".into()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        // rcgen's default expiry: 4096-01-01T00:00:00Z.
        assert_eq!(not_after(&der), parse_time(0x18, b"40960101000000Z"));
        assert!(not_after(&der).is_some());
        for cut in [1, 10, der.len() / 2, der.len() - 1] {
            assert_eq!(not_after(der.get(..cut).unwrap()), None, "cut at {cut}");
        }
    }

    #[test]
    fn truncated_and_odd_input_is_refused() {
        for input in
            [&b""[..], b"\x30", b"\x30\x84\xff\xff\xff\xff", b"\x30\x80", b"\x30\x02\x30\x00", b"\x30\x03\x30\x01"]
        {
            assert_eq!(not_after(input), None);
        }
    }
}
