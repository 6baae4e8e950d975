//! Helpers shared by the fuzz targets.
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use palisade_edge::codec::RawHeaders;
use tokio::io::{AsyncRead, ReadBuf};

/// `lines` as the edge writes them for the next hop, parsed back as (name, value) pairs; asserts
/// that what was written is one complete, valid header block.
pub fn written_and_parsed_back(lines: &RawHeaders) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut block = BytesMut::from(&b"HTTP/1.1 200 OK\r\n"[..]);
    lines.write(&mut block);
    block.extend_from_slice(b"\r\n");
    let mut slots = vec![httparse::EMPTY_HEADER; lines.iter().count()];
    let mut again = httparse::Response::new(&mut slots);
    assert!(matches!(again.parse(&block), Ok(httparse::Status::Complete(n)) if n == block.len()));
    again.headers.iter().map(|h| (h.name.as_bytes().to_vec(), h.value.to_vec())).collect()
}

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
