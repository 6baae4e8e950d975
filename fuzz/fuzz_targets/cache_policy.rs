//! Any bytes as the header values the cache reads (origin `Cache-Control`, `Expires`, `Age`,
//! `Date`; a client's `Range`, `If-None-Match`, `If-Modified-Since`, `If-Range`). Nothing may
//! panic; a range is inside the body; ages and lifetimes stay within delta-seconds; a response
//! marked `no-store` or `private` is never storable, whatever else it says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_edge::cache::policy::{self, Allow, RangeAnswer, ResponseFacts, MAX_DELTA};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.split(|b| *b == 0);
    let mut next = || parts.next().unwrap_or_default();
    let (cc, expires, age, date, range, inm, ims, if_range) = (next(), next(), next(), next(), next(), next(), next(), next());
    let len = u64::from(data.len() as u32 % 5000);

    let directives = policy::cache_control(cc.split(|b| *b == b'\n'));
    for d in [directives.max_age, directives.s_maxage, directives.stale_while_revalidate, directives.stale_if_error] {
        assert!(d.is_none_or(|v| v <= MAX_DELTA));
    }
    let facts = ResponseFacts {
        status: 200,
        directives: directives.clone(),
        date: policy::http_date(date),
        expires: Some(expires),
        age: Some(policy::delta_seconds(age)),
        etag: Some(inm),
        last_modified: Some(ims),
        set_cookie: false,
        vary_star: false,
    };
    let now = 1_800_000_000;
    let heuristic = Allow { heuristic_percent: u64::from(data.first().copied().unwrap_or(0) % 101), ..Allow::default() };
    let stored = policy::storable(&facts, now, &heuristic);
    if directives.no_store || directives.private {
        assert!(stored.is_err());
        let any = Allow { ttl_override: Some(60), set_cookie: true, heuristic_percent: 100 };
        assert!(policy::storable(&facts, now, &any).is_err());
    }
    if facts.directives.max_age.is_none() && facts.directives.s_maxage.is_none() && heuristic.heuristic_percent > 0 {
        assert!(stored.is_err() || stored.is_ok_and(|f| f <= MAX_DELTA.max(policy::MAX_HEURISTIC)));
    }
    assert!(policy::initial_age(&facts, now - 5, now) <= MAX_DELTA);
    match policy::range(range, len) {
        RangeAnswer::Part { start, end } => assert!(start <= end && end < len),
        RangeAnswer::Whole | RangeAnswer::Unsatisfiable => {}
    }
    let _ = policy::none_match(inm, Some(if_range));
    let _ = policy::not_modified_since(ims, Some(expires), Some(now));
    let _ = policy::if_range_holds(if_range, Some(inm), Some(ims));
});
