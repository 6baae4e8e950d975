//! RFC 9111 for a shared cache, as pure functions over header values: what may be stored, for how
//! long, how old a stored response is, and what a client's conditional or range request gets
//! from a stored one. Everything here reads untrusted bytes (origin and client headers) and
//! never panics: a value it cannot read makes the conservative choice (not stored, stale,
//! the whole body).

use std::time::SystemTime;

/// Largest delta-seconds value kept (RFC 9111 1.2.2: 2^31 stands for "too large to say").
pub const MAX_DELTA: u64 = 2_147_483_648;

/// The directives of `Cache-Control` header values that a shared cache acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
    pub no_store: bool,
    /// `no-cache` (also with a field list: treated as a whole, the conservative reading).
    pub no_cache: bool,
    /// `private` (also with a field list).
    pub private: bool,
    pub public: bool,
    /// `must-revalidate` or `proxy-revalidate`: never served stale.
    pub must_revalidate: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

/// The directives of every `Cache-Control` value. The first occurrence of a directive counts;
/// a delta-seconds that is not digits reads as 0 (stale), never as "fresh for ever".
pub fn cache_control<'a>(values: impl Iterator<Item = &'a [u8]>) -> Directives {
    let mut d = Directives::default();
    for value in values {
        for item in value.split(|b| *b == b',') {
            let item = item.trim_ascii();
            let (name, arg) = match item.iter().position(|b| *b == b'=') {
                Some(i) => (item.get(..i).unwrap_or_default().trim_ascii(), item.get(i + 1..).map(<[u8]>::trim_ascii)),
                None => (item, None),
            };
            let seconds = || arg.map(delta_seconds).unwrap_or(0);
            let lower = |s: &[u8]| crate::codec::eq_lowercase(name, s);
            if lower(b"max-age") {
                d.max_age = d.max_age.or(Some(seconds()));
            } else if lower(b"s-maxage") {
                d.s_maxage = d.s_maxage.or(Some(seconds()));
            } else if lower(b"no-store") {
                d.no_store = true;
            } else if lower(b"no-cache") {
                d.no_cache = true;
            } else if lower(b"private") {
                d.private = true;
            } else if lower(b"public") {
                d.public = true;
            } else if lower(b"must-revalidate") || lower(b"proxy-revalidate") {
                d.must_revalidate = true;
            } else if lower(b"stale-while-revalidate") {
                d.stale_while_revalidate = d.stale_while_revalidate.or(Some(seconds()));
            } else if lower(b"stale-if-error") {
                d.stale_if_error = d.stale_if_error.or(Some(seconds()));
            }
        }
    }
    d
}

/// A delta-seconds value, quoted or not; anything but digits is 0. Capped at [`MAX_DELTA`].
pub fn delta_seconds(v: &[u8]) -> u64 {
    let v = v.strip_prefix(b"\"").and_then(|v| v.strip_suffix(b"\"")).unwrap_or(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    v.iter()
        .try_fold(0u64, |acc, d| acc.checked_mul(10)?.checked_add(u64::from(d - b'0')))
        .unwrap_or(MAX_DELTA)
        .min(MAX_DELTA)
}

/// An HTTP-date (any of the three forms RFC 9110 5.6.7 accepts), as seconds since the epoch.
pub fn http_date(v: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(v).ok()?;
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    t.duration_since(SystemTime::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// Statuses a shared cache may store when the response says how long it stays fresh
/// (RFC 9110 15.1's heuristically cacheable ones, plus the redirects 302 and 307).
pub fn status_storable(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 302 | 307 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Why a response is not stored (for `Cache-Status` details and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotStored {
    Status,
    NoStore,
    Private,
    SetCookie,
    VaryStar,
    /// No explicit freshness, no validator to revalidate with.
    NoFreshness,
    TooLarge,
    /// The response varies on request headers the lookup did not know of: the names are
    /// stored now, variants from the next request on.
    VaryUnknown,
}

impl NotStored {
    pub fn as_str(self) -> &'static str {
        match self {
            NotStored::Status => "status",
            NotStored::NoStore => "no-store",
            NotStored::Private => "private",
            NotStored::SetCookie => "set-cookie",
            NotStored::VaryStar => "vary-star",
            NotStored::NoFreshness => "no-freshness",
            NotStored::TooLarge => "too-large",
            NotStored::VaryUnknown => "vary-unknown",
        }
    }
}

/// What the response's headers say, read once.
#[derive(Debug, Clone, Default)]
pub struct ResponseFacts<'a> {
    pub status: u16,
    pub directives: Directives,
    /// Seconds since the epoch.
    pub date: Option<u64>,
    /// `Expires` as given: an unreadable one (such as `0`) means already expired.
    pub expires: Option<&'a [u8]>,
    /// The `Age` the response arrived with.
    pub age: Option<u64>,
    pub etag: Option<&'a [u8]>,
    pub last_modified: Option<&'a [u8]>,
    pub set_cookie: bool,
    pub vary_star: bool,
}

/// How long a stored response stays fresh, in seconds, counted from when it was generated
/// (RFC 9111 4.2.1): `s-maxage`, then `max-age`, then `Expires` minus `Date`. None: the response
/// gives none (heuristic freshness is not used).
pub fn freshness_lifetime(f: &ResponseFacts<'_>, response_time: u64) -> Option<u64> {
    if let Some(s) = f.directives.s_maxage {
        return Some(s);
    }
    if let Some(m) = f.directives.max_age {
        return Some(m);
    }
    let expires = f.expires?;
    let Some(expires) = http_date(expires) else { return Some(0) };
    Some(expires.saturating_sub(f.date.unwrap_or(response_time)))
}

/// What a zone lets into its cache beyond the origin's explicit freshness.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allow {
    /// A cache rule's edge TTL: replaces the origin's freshness, but never lets `no-store` or
    /// `private` responses in.
    pub ttl_override: Option<u64>,
    /// Store responses that set cookies (without the cookie).
    pub set_cookie: bool,
    /// Heuristic freshness (RFC 9111 4.2.2) for responses without explicit freshness: this
    /// percent of the time since `Last-Modified`, at most [`MAX_HEURISTIC`]. 0: off.
    pub heuristic_percent: u64,
}

/// Longest heuristic freshness.
pub const MAX_HEURISTIC: u64 = 86_400;

/// Statuses RFC 9110 15.1 lets a cache give heuristic freshness.
fn heuristically_cacheable(status: u16) -> bool {
    matches!(status, 200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501)
}

/// Whether a shared cache may store the response, and for how long it is fresh (seconds).
pub fn storable(f: &ResponseFacts<'_>, response_time: u64, allow: &Allow) -> Result<u64, NotStored> {
    if f.directives.no_store {
        return Err(NotStored::NoStore);
    }
    if f.directives.private {
        return Err(NotStored::Private);
    }
    if f.vary_star {
        return Err(NotStored::VaryStar);
    }
    if f.set_cookie && !allow.set_cookie {
        return Err(NotStored::SetCookie);
    }
    if !status_storable(f.status) {
        return Err(NotStored::Status);
    }
    if let Some(ttl) = allow.ttl_override {
        return Ok(ttl);
    }
    let lifetime = freshness_lifetime(f, response_time).or_else(|| {
        let modified = f.last_modified.and_then(http_date)?;
        let since = f.date.unwrap_or(response_time).saturating_sub(modified);
        (allow.heuristic_percent > 0 && heuristically_cacheable(f.status))
            .then(|| (since.saturating_mul(allow.heuristic_percent) / 100).min(MAX_HEURISTIC))
    });
    let validator = f.etag.is_some() || f.last_modified.is_some();
    // Stored for revalidation only (fresh for 0 s) needs a validator to revalidate with.
    let fresh = if f.directives.no_cache { Some(0) } else { lifetime };
    match fresh {
        Some(0) if validator => Ok(0),
        Some(l) if l > 0 => Ok(l),
        _ => Err(NotStored::NoFreshness),
    }
}

/// The response's age when it was received (RFC 9111 4.2.3's corrected initial age), in
/// seconds. Times are seconds since the epoch.
pub fn initial_age(f: &ResponseFacts<'_>, request_time: u64, response_time: u64) -> u64 {
    let apparent = f.date.map(|d| response_time.saturating_sub(d)).unwrap_or(0);
    let delay = response_time.saturating_sub(request_time);
    let corrected = f.age.unwrap_or(0).saturating_add(delay);
    apparent.max(corrected).min(MAX_DELTA)
}

/// Strong or weak comparison of entity tags (RFC 9110 8.8.3.2): `W/"x"` and `"x"` are equal
/// under the weak comparison `If-None-Match` uses.
fn opaque(tag: &[u8]) -> &[u8] {
    let t = tag.trim_ascii();
    t.strip_prefix(b"W/").unwrap_or(t)
}

/// Whether an `If-None-Match` value matches the stored entity tag (`*` matches any).
pub fn none_match(if_none_match: &[u8], etag: Option<&[u8]>) -> bool {
    let Some(etag) = etag else { return if_none_match.trim_ascii() == b"*" };
    if_none_match.split(|b| *b == b',').any(|t| {
        let t = t.trim_ascii();
        t == b"*" || (!t.is_empty() && opaque(t) == opaque(etag))
    })
}

/// Whether the stored response is unmodified since an `If-Modified-Since` date.
pub fn not_modified_since(if_modified_since: &[u8], last_modified: Option<&[u8]>, date: Option<u64>) -> bool {
    let Some(since) = http_date(if_modified_since) else { return false };
    match last_modified.and_then(http_date).or(date) {
        Some(modified) => modified <= since,
        None => false,
    }
}

/// A client's `Range` against a stored body of `len` bytes (RFC 9110 14.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// Send the whole body (no range, several ranges, or a range we do not read).
    Whole,
    /// 206 with bytes `start..=end`.
    Part { start: u64, end: u64 },
    /// 416: no byte of the range exists.
    Unsatisfiable,
}

/// One `bytes=` range; anything else (other units, several ranges, bad syntax) is the whole
/// body, which RFC 9110 lets a server send instead.
pub fn range(value: &[u8], len: u64) -> RangeAnswer {
    let Some(spec) = value.trim_ascii().strip_prefix(b"bytes=") else { return RangeAnswer::Whole };
    let spec = spec.trim_ascii();
    if spec.contains(&b',') {
        return RangeAnswer::Whole;
    }
    let Some(dash) = spec.iter().position(|b| *b == b'-') else { return RangeAnswer::Whole };
    let (first, last) =
        (spec.get(..dash).unwrap_or_default().trim_ascii(), spec.get(dash + 1..).unwrap_or_default().trim_ascii());
    let number = |s: &[u8]| crate::codec::parse_content_length(s);
    match (first.is_empty(), last.is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match number(last) {
            Some(0) => RangeAnswer::Unsatisfiable,
            Some(n) if len > 0 => RangeAnswer::Part { start: len.saturating_sub(n), end: len - 1 },
            Some(_) => RangeAnswer::Unsatisfiable,
            None => RangeAnswer::Whole,
        },
        (false, _) => {
            let Some(start) = number(first) else { return RangeAnswer::Whole };
            let end = if last.is_empty() {
                None
            } else {
                match number(last) {
                    Some(e) if e >= start => Some(e),
                    _ => return RangeAnswer::Whole,
                }
            };
            if start >= len {
                return RangeAnswer::Unsatisfiable;
            }
            let end = end.map_or(len - 1, |e| e.min(len - 1));
            RangeAnswer::Part { start, end }
        }
        (true, true) => RangeAnswer::Whole,
    }
}

/// Whether an `If-Range` value still names the stored response, so that its `Range` applies:
/// a strong entity tag equal to the stored one, or the stored `Last-Modified` date exactly.
pub fn if_range_holds(if_range: &[u8], etag: Option<&[u8]>, last_modified: Option<&[u8]>) -> bool {
    let v = if_range.trim_ascii();
    if v.starts_with(b"\"") {
        return etag.is_some_and(|e| !e.starts_with(b"W/") && e.trim_ascii() == v);
    }
    match (http_date(v), last_modified.and_then(http_date)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(cc: &str) -> ResponseFacts<'static> {
        ResponseFacts { status: 200, directives: cache_control(std::iter::once(cc.as_bytes())), ..Default::default() }
    }

    #[test]
    fn cache_control_reads_directives_conservatively() {
        let d = cache_control([&b"public, max-age=60"[..], b"S-MaxAge=\"120\", stale-while-revalidate=30"].into_iter());
        assert_eq!((d.max_age, d.s_maxage, d.stale_while_revalidate, d.public), (Some(60), Some(120), Some(30), true));
        // The first of two counts; a bad number is stale, not fresh; huge numbers are capped.
        assert_eq!(cache_control(std::iter::once(&b"max-age=5, max-age=500"[..])).max_age, Some(5));
        assert_eq!(cache_control(std::iter::once(&b"max-age=abc"[..])).max_age, Some(0));
        assert_eq!(cache_control(std::iter::once(&b"max-age=99999999999999999999999"[..])).max_age, Some(MAX_DELTA));
        let d = cache_control(std::iter::once(&b"no-cache=\"set-cookie\", private=\"x\", proxy-revalidate"[..]));
        assert!(d.no_cache && d.private && d.must_revalidate);
    }

    #[test]
    fn what_a_shared_cache_stores() {
        assert_eq!(storable(&facts("max-age=60"), 0, &Allow::default()), Ok(60));
        assert_eq!(storable(&facts("max-age=60, s-maxage=10"), 0, &Allow::default()), Ok(10));
        assert_eq!(storable(&facts("no-store, max-age=60"), 0, &Allow::default()), Err(NotStored::NoStore));
        assert_eq!(storable(&facts("private, max-age=60"), 0, &Allow::default()), Err(NotStored::Private));
        assert_eq!(storable(&facts(""), 0, &Allow::default()), Err(NotStored::NoFreshness));
        // A rule's TTL replaces freshness, never no-store.
        assert_eq!(storable(&facts(""), 0, &Allow { ttl_override: Some(30), ..Allow::default() }), Ok(30));
        assert_eq!(
            storable(&facts("no-store"), 0, &Allow { ttl_override: Some(30), ..Allow::default() }),
            Err(NotStored::NoStore)
        );
        let mut f = facts("max-age=60");
        f.set_cookie = true;
        assert_eq!(storable(&f, 0, &Allow::default()), Err(NotStored::SetCookie));
        assert_eq!(storable(&f, 0, &Allow { set_cookie: true, ..Allow::default() }), Ok(60));
        f.status = 500;
        assert_eq!(storable(&f, 0, &Allow { set_cookie: true, ..Allow::default() }), Err(NotStored::Status));
        // no-cache with a validator: stored, revalidated on every use.
        let mut f = facts("no-cache, max-age=60");
        assert_eq!(storable(&f, 0, &Allow::default()), Err(NotStored::NoFreshness));
        f.etag = Some(b"\"v1\"");
        assert_eq!(storable(&f, 0, &Allow::default()), Ok(0));
        // Expires: from Date; an unreadable one is already stale.
        let mut f = facts("");
        f.date = Some(1_000);
        f.expires = Some(b"Thu, 01 Jan 1970 00:17:40 GMT"); // 1060
        assert_eq!(freshness_lifetime(&f, 2_000), Some(60));
        f.expires = Some(b"0");
        assert_eq!(freshness_lifetime(&f, 2_000), Some(0));
        // Heuristic freshness: off unless asked for; a tenth of the time since Last-Modified.
        let mut f = facts("");
        f.date = Some(1_000_000);
        f.last_modified = Some(b"Sun, 11 Jan 1970 10:00:00 GMT"); // 900_000
        assert_eq!(storable(&f, 1_000_000, &Allow::default()), Err(NotStored::NoFreshness));
        let heuristic = Allow { heuristic_percent: 10, ..Allow::default() };
        assert_eq!(storable(&f, 1_000_000, &heuristic), Ok(10_000));
        f.last_modified = Some(b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(storable(&f, 1_000_000, &heuristic), Ok(MAX_HEURISTIC));
    }

    #[test]
    fn age_is_corrected_for_delay_and_upstream_age() {
        let mut f = facts("max-age=60");
        f.date = Some(100);
        assert_eq!(initial_age(&f, 100, 103), 3);
        f.age = Some(10);
        assert_eq!(initial_age(&f, 101, 103), 12);
        // A Date in the future does not make the age negative.
        f.date = Some(500);
        f.age = None;
        assert_eq!(initial_age(&f, 103, 103), 0);
    }

    #[test]
    fn conditionals_and_ranges() {
        assert!(none_match(b"\"a\", W/\"b\"", Some(b"\"b\"")));
        assert!(!none_match(b"\"a\"", Some(b"\"b\"")));
        assert!(none_match(b"*", None));
        let lm = b"Wed, 21 Oct 2015 07:28:00 GMT";
        assert!(not_modified_since(b"Wed, 21 Oct 2015 07:28:00 GMT", Some(lm), None));
        assert!(!not_modified_since(b"Tue, 20 Oct 2015 07:28:00 GMT", Some(lm), None));
        assert!(!not_modified_since(b"yesterday", Some(lm), None));
        assert_eq!(range(b"bytes=0-9", 100), RangeAnswer::Part { start: 0, end: 9 });
        assert_eq!(range(b"bytes=90-", 100), RangeAnswer::Part { start: 90, end: 99 });
        assert_eq!(range(b"bytes=-10", 100), RangeAnswer::Part { start: 90, end: 99 });
        assert_eq!(range(b"bytes=-1000", 100), RangeAnswer::Part { start: 0, end: 99 });
        assert_eq!(range(b"bytes=50-1000", 100), RangeAnswer::Part { start: 50, end: 99 });
        assert_eq!(range(b"bytes=100-", 100), RangeAnswer::Unsatisfiable);
        assert_eq!(range(b"bytes=0-1,5-6", 100), RangeAnswer::Whole);
        assert_eq!(range(b"bytes=9-1", 100), RangeAnswer::Whole);
        assert_eq!(range(b"items=0-1", 100), RangeAnswer::Whole);
        assert_eq!(range(b"bytes=-", 100), RangeAnswer::Whole);
        assert_eq!(range(b"bytes=0-", 0), RangeAnswer::Unsatisfiable);
        assert!(if_range_holds(b"\"v1\"", Some(b"\"v1\""), None));
        assert!(!if_range_holds(b"\"v1\"", Some(b"W/\"v1\""), None));
        assert!(if_range_holds(lm, None, Some(lm)));
    }
}
