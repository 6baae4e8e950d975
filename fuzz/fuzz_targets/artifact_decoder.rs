//! Any bytes into every artifact decoder (IP list, feature file, certificate bundle): each must
//! return an artifact or problems, never panic, and what it accepts must be within its limits.
#![no_main]
use libfuzzer_sys::fuzz_target;
use palisade_config::artifact::{decode, limits, Artifact, ArtifactKind};

fuzz_target!(|data: &[u8]| {
    for kind in ArtifactKind::ALL {
        match decode(kind, data) {
            Ok(Artifact::IpList(set)) => {
                assert!(set.entries <= limits::MAX_IP_LIST_ENTRIES);
                // A lookup never panics, listed or not.
                let _ = set.contains(std::net::IpAddr::from([127, 0, 0, 1]));
                let _ = set.contains(std::net::IpAddr::from([0u16, 0, 0, 0, 0, 0xffff, 0x7f00, 1]));
            }
            Ok(Artifact::FeatureFile(f)) => {
                assert!(!f.features.is_empty() && f.features.len() <= limits::MAX_FEATURES);
                assert!(f.features.iter().all(|x| x.weight.is_finite() && x.weight.abs() <= limits::MAX_WEIGHT));
            }
            Ok(Artifact::CertBundle(b)) => assert!(!b.chain.is_empty() && b.chain.len() <= limits::MAX_CHAIN_CERTS),
            Err(problems) => assert!(!problems.is_empty()),
        }
    }
});
