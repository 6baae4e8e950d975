//! Helpers shared by the fuzz targets.
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// Serves `data` in reads of at most `step` bytes, so that every split point of the input gets
/// exercised.
pub struct Trickle {
    pub data: Vec<u8>,
    pub pos: usize,
    pub step: usize,
}

impl Trickle {
    pub fn new(data: Vec<u8>, step: usize) -> Self {
        Self { data, pos: 0, step: step.max(1) }
    }
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
