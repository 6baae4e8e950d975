//! Any bytes through the request-head guard, split at a fuzzer-chosen step: it must never panic,
//! and what it hands to hyper is always a prefix of the input, optionally followed by the fixed
//! placeholder request (never bytes it invented or reordered).
#![no_main]
use std::sync::Arc;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use palisade_edge::guard::{ConnShared, GuardLimits, Guarded};
use palisade_fuzz::Trickle;
use tokio::io::AsyncReadExt;

fuzz_target!(|data: &[u8]| {
    let Some((&step, input)) = data.split_first() else { return };
    let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    rt.block_on(async {
        let limits = GuardLimits {
            max_header_bytes: 512,
            max_headers: 8,
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            body_timeout: Duration::from_secs(1),
            send_timeout: Duration::from_secs(1),
        };
        let shared = Arc::new(ConnShared::default());
        let io = Trickle::new(input.to_vec(), usize::from(step));
        let mut g = Guarded::new(io, shared, limits);
        let mut out = Vec::new();
        let _ = g.read_to_end(&mut out).await;
        let placeholder = palisade_edge::guard::PLACEHOLDER;
        let prefix = out.strip_suffix(placeholder).unwrap_or(&out);
        assert!(input.starts_with(prefix));
    });
});
