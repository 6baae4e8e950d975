//! What the status page decodes from outside: a certificate from whatever answered a probe
//! (its expiry), an operator's time, and its config file. None of them panics; an expiry, when
//! found, is a real time; a config that parses is within its limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_status::{cert, config};

fuzz_target!(|data: &[u8]| {
    if let Some(t) = cert::not_after(data) {
        assert!(t < 253_402_300_800, "before the year 10000");
    }
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(t) = cert::parse_rfc3339(text) {
            assert_eq!(palisade_config::time::rfc3339(t), text);
        }
        if let Ok(c) = config::parse(text) {
            assert!(!c.cities.is_empty() && c.cities.len() <= config::MAX_CITIES);
            assert!(c.cities.len() * c.zones.len() <= config::MAX_TARGETS);
        }
    }
});
