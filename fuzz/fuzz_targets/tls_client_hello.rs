//! Any bytes as the first bytes of a TLS connection: reading the ClientHello for its JA4
//! fingerprint must not panic, and a fingerprint, when there is one, has JA4's shape.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_edge::ja4::{fingerprint, Read};

fuzz_target!(|data: &[u8]| {
    if let Read::Done(Some(fp)) = fingerprint(data) {
        let parts: Vec<&str> = fp.split('_').collect();
        assert_eq!(parts.len(), 3, "{fp}");
        assert_eq!(parts[0].len(), 10, "{fp}");
        assert!(parts[1].len() == 12 && parts[2].len() == 12, "{fp}");
        assert!(fp.starts_with('t'));
    }
});
