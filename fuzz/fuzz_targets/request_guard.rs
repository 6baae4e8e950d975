//! Any bytes through the request-head guard, split at a fuzzer-chosen step: it must never panic,
//! and what it hands to hyper is always a prefix of the input, optionally followed by the fixed
//! placeholder request (never bytes it invented or reordered).
#![no_main]
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use palisade_edge::guard::{ConnShared, GuardLimits, Guarded};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

struct Trickle {
    data: Vec<u8>,
    pos: usize,
    step: usize,
}

impl AsyncRead for Trickle {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let n = self.step.min(self.data.len() - self.pos).min(buf.remaining());
        let start = self.pos;
        buf.put_slice(&self.data[start..start + n]);
        self.pos += n;
        Poll::Ready(Ok(()))
    }
}

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
        let io = Trickle { data: input.to_vec(), pos: 0, step: usize::from(step.max(1)) };
        let mut g = Guarded::new(io, shared, limits);
        let mut out = Vec::new();
        let _ = g.read_to_end(&mut out).await;
        let placeholder = palisade_edge::guard::PLACEHOLDER;
        let prefix = out.strip_suffix(placeholder).unwrap_or(&out);
        assert!(input.starts_with(prefix));
    });
});
