//! Any bytes as an HTTP/2 client's opening: reading its fingerprint never panics, a fingerprint
//! has Akamai's four parts, and a prefix of the bytes never gives a different answer than more
//! of them would (More, or the same Done).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_edge::h2fp::{fingerprint, Read, PREFACE};

fuzz_target!(|data: &[u8]| {
    // Most inputs get the preface, so the frames behind it are what is explored.
    let mut bytes = PREFACE.to_vec();
    bytes.extend_from_slice(data);
    let whole = fingerprint(&bytes);
    if let Read::Done(Some(fp)) = &whole {
        assert_eq!(fp.split('|').count(), 4, "{fp}");
    }
    let half = fingerprint(&bytes[..bytes.len() / 2 + PREFACE.len() / 2]);
    if let Read::Done(fp) = half {
        assert_eq!(whole, Read::Done(fp), "an answer from fewer bytes stands");
    }
});
